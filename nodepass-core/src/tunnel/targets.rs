//! The dialing side: target addresses tried round-robin with fail-over, and the PROXY header.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::config::{Endpoint, ProxyProtocol, TunnelParams};
use crate::protocol::{StreamKind, proxy};
use crate::transport::net::{Dialer, Resolver};

/// The target list of one tunnel.
#[derive(Debug)]
pub(crate) struct Targets {
    list: Vec<Endpoint>,
    next: AtomicUsize,
    pub(crate) resolver: Resolver,
    pub(crate) dialer: Dialer,
    proxy: ProxyProtocol,
}

impl Targets {
    pub(crate) fn new(params: &TunnelParams) -> Self {
        Targets {
            list: params.targets.clone(),
            next: AtomicUsize::new(0),
            resolver: Resolver::new(params.dns_ttl),
            dialer: Dialer::new(params.dial),
            proxy: params.proxy,
        }
    }

    /// The targets in the order to try for the next session: round-robin start, then the rest
    /// (fail-over).
    pub(crate) fn order(&self) -> impl Iterator<Item = &Endpoint> {
        let n = self.list.len();
        let start = self.next.fetch_add(1, Relaxed) % n.max(1);
        (0..n).map(move |i| &self.list[(start + i) % n])
    }

    /// Connect to the next target, failing over to the others; then send the PROXY header
    /// (if configured) describing the user `src` and the address it connected to, `dst`.
    pub(crate) async fn connect_tcp(
        &self,
        src: SocketAddr,
        dst: SocketAddr,
    ) -> io::Result<(TcpStream, SocketAddr)> {
        let mut last = None;
        for ep in self.order() {
            let addrs = match self.resolver.resolve(ep).await {
                Ok(a) => a,
                Err(e) => {
                    last = Some(io::Error::other(e.to_string()));
                    continue;
                }
            };
            for addr in addrs {
                match self.dialer.connect(addr).await {
                    Ok(mut s) => {
                        self.send_proxy_header(&mut s, src, dst).await?;
                        return Ok((s, addr));
                    }
                    Err(e) => {
                        tracing::debug!(target = %addr, error = %e, "target dial failed, trying the next");
                        last = Some(e);
                    }
                }
            }
            self.resolver.forget(ep);
        }
        Err(last.unwrap_or_else(|| io::Error::other("no target configured")))
    }

    async fn send_proxy_header(
        &self,
        s: &mut TcpStream,
        src: SocketAddr,
        dst: SocketAddr,
    ) -> io::Result<()> {
        if self.proxy == ProxyProtocol::Off {
            return Ok(());
        }
        let mut header = BytesMut::new();
        proxy::encode(self.proxy, src, dst, StreamKind::Tcp, &mut header);
        s.write_all(&header).await
    }
}
