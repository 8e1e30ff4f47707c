//! Starting tunnels in-process and talking through them, with every wait bounded.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use nodepass_core::tunnel::TunnelState;
use nodepass_core::{Tunnel, TunnelConfig, TunnelHandle, TunnelOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::IO_TIMEOUT;

// The bounded wait lives in the leaf crate every crate can use.
pub use nodepass_testkit::wait::{POLL_INTERVAL, eventually};
/// The most bytes [`read_until_closed`] accepts before giving up on a peer that keeps
/// sending.
pub const MAX_READ_UNTIL_CLOSED: usize = 1 << 20;
/// How long [`shutdown`] gives a tunnel to stop (its grace period is 5 s).
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Parse `url`, bind and spawn the tunnel. Panics with the URL and the error on failure.
/// Cancel safe.
pub async fn start(url: &str) -> TunnelHandle {
    match try_start(url).await {
        Ok(h) => h,
        Err(e) => panic!("cannot start {url}: {e}"),
    }
}

/// [`start`] with `options` instead of the defaults (tests shorten timings with them).
/// Cancel safe.
pub async fn start_with(url: &str, options: TunnelOptions) -> TunnelHandle {
    let cfg: TunnelConfig = url
        .parse()
        .unwrap_or_else(|e| panic!("cannot parse {url}: {e}"));
    match Tunnel::bind_with(cfg, options).await {
        Ok(t) => t.spawn(CancellationToken::new()),
        Err(e) => panic!("cannot start {url}: {e}"),
    }
}

/// Parse `url`, bind and spawn the tunnel with its own shutdown token.
/// Cancel safe.
pub async fn try_start(url: &str) -> nodepass_core::Result<TunnelHandle> {
    let cfg: TunnelConfig = url.parse()?;
    Ok(Tunnel::bind(cfg).await?.spawn(CancellationToken::new()))
}

/// Wait until `h` is [`TunnelState::Ready`] (at most [`IO_TIMEOUT`]).
/// Cancel safe.
pub async fn wait_ready(h: &TunnelHandle) {
    if let Err(e) = h.wait_ready(IO_TIMEOUT).await {
        panic!("tunnel not ready: {e}; last state {:?}", e.last());
    }
}

/// Wait until `h`'s state satisfies `pred` (at most `within`); returns that state.
/// Cancel safe.
pub async fn wait_state(
    h: &TunnelHandle,
    within: Duration,
    what: &str,
    pred: impl Fn(&TunnelState) -> bool,
) -> TunnelState {
    match h.wait_for(within, pred).await {
        Ok(s) => s,
        Err(e) => panic!("{what}: not reached ({e}); last state {:?}", e.last()),
    }
}

/// Stop every tunnel and check that each ends cleanly within [`STOP_TIMEOUT`].
/// Cancel safe.
pub async fn shutdown(handles: &[&TunnelHandle]) {
    for h in handles {
        h.stop();
    }
    for h in handles {
        match tokio::time::timeout(STOP_TIMEOUT, h.wait()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("tunnel ended with an error: {e}"),
            Err(_) => panic!("tunnel did not stop within {STOP_TIMEOUT:?}"),
        }
    }
}

/// Connect to `addr`, send `payload`, shut down writing, and read the answer to EOF.
/// Cancel safe.
pub async fn roundtrip(addr: SocketAddr, payload: &[u8]) -> Vec<u8> {
    match try_roundtrip(addr, payload).await {
        Ok(v) => v,
        Err(e) => panic!("round trip through {addr}: {e}"),
    }
}

/// [`roundtrip`] that reports failures instead of panicking.
/// Cancel safe.
pub async fn try_roundtrip(addr: SocketAddr, payload: &[u8]) -> std::io::Result<Vec<u8>> {
    let fut = async {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(payload).await?;
        s.shutdown().await?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await?;
        Ok(out)
    };
    tokio::time::timeout(IO_TIMEOUT, fut)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "round trip timed out"))?
}

/// How a connection ended when read until it closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    /// The bytes read before the end.
    pub bytes: Vec<u8>,
    /// How long it took to close.
    pub after: Duration,
    /// True for a reset (an error) rather than a clean EOF.
    pub reset: bool,
}

/// Read `s` until EOF or an error, for at most `within` and [`MAX_READ_UNTIL_CLOSED`] bytes;
/// `None` if it is still open then.
/// Cancel safe.
pub async fn read_until_closed(s: &mut TcpStream, within: Duration) -> Option<Closed> {
    let start = Instant::now();
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    let end = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(end, s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) => {
                return Some(Closed {
                    bytes,
                    after: start.elapsed(),
                    reset: false,
                });
            }
            Ok(Err(_)) => {
                return Some(Closed {
                    bytes,
                    after: start.elapsed(),
                    reset: true,
                });
            }
            Ok(Ok(n)) if bytes.len() + n > MAX_READ_UNTIL_CLOSED => return None,
            Ok(Ok(n)) => bytes.extend_from_slice(&buf[..n]),
        }
    }
}

/// Ports that were free a moment ago on 127.0.0.1, all different within one call to
/// [`free_ports`]. Only for executables that must be told their ports up front; callers retry
/// if a port was taken in between.
pub use nodepass_testkit::{free_port, free_ports};

/// A port on 127.0.0.1 with nothing listening (see [`free_port`]): connections are refused.
pub fn closed_port() -> u16 {
    free_port()
}
