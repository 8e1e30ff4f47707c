//! Per-source connection limits of the master API, so one client address cannot take every
//! connection slot (the global cap is [`MasterOptions::max_connections`](crate::MasterOptions)).
//!
//! A source is an IPv4 address or an IPv6 /64, as for the tunnel port
//! ([`nodepass_core::tunnel::source_of`]). [`first_byte`] bounds the wait for the first byte of
//! a plain connection: hyper's protocol detection (HTTP/1 or HTTP/2) has no timeout of its own,
//! so a client that connects and says nothing would otherwise hold its slot for ever.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpStream;

/// Concurrent connections allowed from one source.
pub const MAX_CONNECTIONS_PER_SOURCE: usize = 64;

/// Open connections per source. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub(crate) struct SourceLimits {
    /// Never held across `.await`.
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One connection slot of a source; released on drop.
#[derive(Debug)]
pub(crate) struct SourcePermit {
    limits: SourceLimits,
    source: IpAddr,
}

impl SourceLimits {
    /// Take a slot for a connection from `ip`, or `None` when its source holds
    /// [`MAX_CONNECTIONS_PER_SOURCE`] already.
    pub(crate) fn try_acquire(&self, ip: IpAddr) -> Option<SourcePermit> {
        let source = nodepass_core::tunnel::source_of(ip);
        let mut open = crate::sync::lock(&self.open);
        let n = open.entry(source).or_default();
        if *n >= MAX_CONNECTIONS_PER_SOURCE {
            return None;
        }
        *n += 1;
        Some(SourcePermit {
            limits: self.clone(),
            source,
        })
    }
}

impl Drop for SourcePermit {
    fn drop(&mut self) {
        let mut open = crate::sync::lock(&self.limits.open);
        if let Some(n) = open.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.source);
            }
        }
    }
}

/// Wait at most `within` for the first byte of a connection (without consuming it); false
/// when none came or the peer closed. Cancel safe.
pub(crate) async fn first_byte(stream: &TcpStream, within: Duration) -> bool {
    let mut b = [0u8; 1];
    matches!(
        tokio::time::timeout(within, stream.peek(&mut b)).await,
        Ok(Ok(1..))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_source_is_capped_and_others_are_not() {
        let l = SourceLimits::default();
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let held: Vec<_> = (0..MAX_CONNECTIONS_PER_SOURCE)
            .map(|_| l.try_acquire(a).unwrap())
            .collect();
        assert!(l.try_acquire(a).is_none());
        assert!(l.try_acquire("127.0.0.1".parse().unwrap()).is_some());
        drop(held);
        assert!(l.try_acquire(a).is_some());
        assert!(
            l.open.lock().unwrap().is_empty(),
            "released entries are removed"
        );
    }

    #[tokio::test]
    async fn a_silent_connection_is_given_up_after_the_timeout() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (mut client, (server_side, _)) = (client.unwrap(), accepted.unwrap());
        assert!(!first_byte(&server_side, Duration::from_millis(50)).await);
        client.write_all(b"G").await.unwrap();
        assert!(first_byte(&server_side, Duration::from_secs(10)).await);
    }
}
