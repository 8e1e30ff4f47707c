//! Sockets: binding listeners, dialing with an optional source address, name resolution with a
//! TTL cache, and the socket options every relayed connection gets.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use socket2::{SockRef, TcpKeepalive};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};

use crate::config::{DialAddr, Endpoint, Host};
use crate::error::{Error, Result};

/// Backlog of every listener.
pub const LISTEN_BACKLOG: u32 = 4096;
/// Idle time before TCP keepalive probes start on tunnel connections.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(15);
/// Interval between keepalive probes.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// Socket buffer requested for UDP sockets (the kernel caps it at `net.core.rmem_max` /
/// `wmem_max`). The default (~200 KiB) overflows within a millisecond at 1 Gbit/s bursts.
pub const UDP_SOCKET_BUFFER: usize = 4 << 20;

/// Timeout of one TCP connect.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The addresses a listen endpoint binds: an empty host means every address (IPv6 dual-stack,
/// or IPv4 when IPv6 is unavailable).
fn listen_addrs(ep: &Endpoint) -> Vec<SocketAddr> {
    match &ep.host {
        Host::Any => vec![
            SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), ep.port),
            SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), ep.port),
        ],
        Host::Ip(ip) => vec![SocketAddr::new(*ip, ep.port)],
        Host::Name(_) => Vec::new(),
    }
}

/// Resolve a listen endpoint (names are resolved once, here).
async fn resolve_listen(ep: &Endpoint) -> Result<Vec<SocketAddr>> {
    match &ep.host {
        Host::Name(name) => lookup(name, ep.port).await,
        _ => Ok(listen_addrs(ep)),
    }
}

async fn lookup(name: &str, port: u16) -> Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name, port))
        .await
        .map_err(|source| Error::Resolve {
            host: name.to_string(),
            source,
        })?
        .collect();
    if addrs.is_empty() {
        return Err(Error::Resolve {
            host: name.to_string(),
            source: io::Error::new(io::ErrorKind::NotFound, "no addresses"),
        });
    }
    Ok(addrs)
}

/// Bind the first address of `ep` that works with `bind`, or report the last failure.
async fn bind_first<T>(ep: &Endpoint, bind: fn(SocketAddr) -> io::Result<T>) -> Result<T> {
    let mut last = None;
    for addr in resolve_listen(ep).await? {
        match bind(addr) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some((addr, e)),
        }
    }
    let (addr, source) = last.unwrap_or_else(|| {
        (
            SocketAddr::from(([0, 0, 0, 0], ep.port)),
            io::Error::new(io::ErrorKind::AddrNotAvailable, "no address to bind"),
        )
    });
    Err(Error::Bind {
        addr: addr.to_string(),
        source,
    })
}

/// Bind a TCP listener on `ep` (SO_REUSEADDR, dual-stack for an empty host).
///
/// Cancel safety: safe; a dropped future leaves nothing bound.
pub async fn bind_tcp(ep: &Endpoint) -> Result<TcpListener> {
    bind_first(ep, bind_tcp_addr).await
}

fn bind_tcp_addr(addr: SocketAddr) -> io::Result<TcpListener> {
    let sock = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        SockRef::from(&sock).set_only_v6(false)?;
    }
    sock.set_reuseaddr(true)?;
    sock.bind(addr)?;
    sock.listen(LISTEN_BACKLOG)
}

/// What a listener's connections are, so it can hand them their socket options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepts {
    /// User connections: no Nagle delay ([`tune_stream`]).
    Users,
    /// Tunnel connections: no Nagle delay and keepalive probes ([`tune_tunnel_stream`]).
    Tunnel,
}

/// [`bind_tcp`], with the options of the connections it will accept set on the listener itself.
/// Linux copies them to every accepted socket, so [`tune_accepted`] has nothing left to do there
/// (two to four `setsockopt` calls fewer for each new connection; issue 17).
///
/// Cancel safety: safe; a dropped future leaves nothing bound.
pub async fn bind_tcp_for(ep: &Endpoint, accepts: Accepts) -> Result<TcpListener> {
    let l = bind_tcp(ep).await?;
    let sock = SockRef::from(&l);
    let tuned = sock.set_tcp_nodelay(true).and_then(|()| match accepts {
        Accepts::Users => Ok(()),
        Accepts::Tunnel => sock.set_tcp_keepalive(&tunnel_keepalive()),
    });
    match tuned {
        Ok(()) => Ok(l),
        Err(source) => Err(Error::Bind {
            addr: l
                .local_addr()
                .map_or_else(|_| ep.to_string(), |a| a.to_string()),
            source,
        }),
    }
}

/// The options of a socket accepted from a listener bound with [`bind_tcp_for`]: inherited on
/// Linux (the test `accepted_sockets_inherit_the_listeners_options` checks it), set here
/// elsewhere.
pub fn tune_accepted(s: &TcpStream, accepts: Accepts) {
    if cfg!(target_os = "linux") {
        return;
    }
    match accepts {
        Accepts::Users => tune_stream(s),
        Accepts::Tunnel => tune_tunnel_stream(s),
    }
}

/// Bind a UDP socket on `ep` (dual-stack for an empty host).
///
/// Cancel safety: safe; a dropped future leaves nothing bound.
pub async fn bind_udp(ep: &Endpoint) -> Result<UdpSocket> {
    bind_first(ep, bind_udp_addr).await
}

fn bind_udp_addr(addr: SocketAddr) -> io::Result<UdpSocket> {
    let domain = if addr.is_ipv4() {
        socket2::Domain::IPV4
    } else {
        socket2::Domain::IPV6
    };
    let sock = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        sock.set_only_v6(false)?;
    }
    sock.set_nonblocking(true)?;
    tune_udp(&sock);
    sock.bind(&addr.into())?;
    UdpSocket::from_std(sock.into())
}

/// Larger UDP socket buffers, best effort (a smaller grant still works).
fn tune_udp(sock: &socket2::Socket) {
    let _ = sock.set_recv_buffer_size(UDP_SOCKET_BUFFER);
    let _ = sock.set_send_buffer_size(UDP_SOCKET_BUFFER);
}

/// Options for every relayed TCP socket: no Nagle delay.
pub fn tune_stream(s: &TcpStream) {
    let _ = s.set_nodelay(true);
}

/// Options for tunnel connections: no Nagle delay and keepalive probes, so a vanished peer
/// is noticed even on an idle pool connection.
pub fn tune_tunnel_stream(s: &TcpStream) {
    tune_stream(s);
    let _ = SockRef::from(s).set_tcp_keepalive(&tunnel_keepalive());
}

fn tunnel_keepalive() -> TcpKeepalive {
    TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
}

/// Cached answers: (name, port) → (addresses, when resolved).
type DnsCache = HashMap<(String, u16), (Vec<SocketAddr>, Instant)>;

/// Name resolution with a TTL cache (`dns`), shared by one tunnel.
#[derive(Debug)]
pub struct Resolver {
    ttl: Duration,
    /// Never held across `.await`.
    cache: Mutex<DnsCache>,
}

impl Resolver {
    /// A resolver caching answers for `ttl` (zero: no cache).
    pub fn new(ttl: Duration) -> Self {
        Resolver {
            ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The socket addresses of `ep`; an empty host means loopback.
    ///
    /// Cancel safety: safe; an abandoned lookup is not cached.
    pub async fn resolve(&self, ep: &Endpoint) -> Result<Vec<SocketAddr>> {
        let name = match &ep.host {
            Host::Any => return Ok(vec![SocketAddr::from(([127, 0, 0, 1], ep.port))]),
            Host::Ip(ip) => return Ok(vec![SocketAddr::new(*ip, ep.port)]),
            Host::Name(n) => n,
        };
        let key = (name.clone(), ep.port);
        if !self.ttl.is_zero() {
            let cache = crate::sync::lock(&self.cache);
            if let Some((addrs, at)) = cache.get(&key)
                && at.elapsed() < self.ttl
            {
                return Ok(addrs.clone());
            }
        }
        let addrs = lookup(name, ep.port).await?;
        if !self.ttl.is_zero() {
            let mut cache = crate::sync::lock(&self.cache);
            cache.insert(key, (addrs.clone(), Instant::now()));
        }
        Ok(addrs)
    }

    /// Forget a name (after a dial to its cached addresses failed).
    pub fn forget(&self, ep: &Endpoint) {
        if let Host::Name(n) = &ep.host {
            let mut cache = crate::sync::lock(&self.cache);
            cache.remove(&(n.clone(), ep.port));
        }
    }
}

/// Dials outbound connections, binding the `dial` source address when set.
#[derive(Debug)]
pub struct Dialer {
    source: DialAddr,
    /// Set once binding the source address failed; later dials use automatic selection.
    source_failed: AtomicBool,
    timeout: Duration,
}

impl Dialer {
    /// A dialer with the given source address policy.
    pub fn new(source: DialAddr) -> Self {
        Dialer {
            source,
            source_failed: AtomicBool::new(false),
            timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }

    /// Connect to one address.
    ///
    /// Cancel safety: safe; a dropped future closes the socket.
    pub async fn connect(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        let sock = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let DialAddr::Ip(ip) = self.source
            && !self.source_failed.load(Ordering::Relaxed)
        {
            let bound = if ip.is_ipv4() == addr.is_ipv4() {
                sock.bind(SocketAddr::new(ip, 0))
            } else {
                Err(io::Error::new(
                    io::ErrorKind::AddrNotAvailable,
                    "source and target address families differ",
                ))
            };
            if let Err(e) = bound {
                // Fall back to automatic source selection, once and loudly.
                if !self.source_failed.swap(true, Ordering::Relaxed) {
                    tracing::warn!(source = %ip, error = %e, "cannot bind dial source address, using automatic selection");
                }
                return self.connect_auto(addr).await;
            }
        }
        let stream = tokio::time::timeout(self.timeout, sock.connect(addr))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        tune_stream(&stream);
        Ok(stream)
    }

    async fn connect_auto(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        let stream = tokio::time::timeout(self.timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        tune_stream(&stream);
        Ok(stream)
    }

    /// Bind a UDP socket for talking to `peer` from the configured source address.
    ///
    /// Cancel safety: safe; a dropped future leaves nothing bound.
    pub async fn udp_socket(&self, peer: SocketAddr) -> io::Result<UdpSocket> {
        let unspecified: IpAddr = if peer.is_ipv4() {
            Ipv4Addr::UNSPECIFIED.into()
        } else {
            Ipv6Addr::UNSPECIFIED.into()
        };
        if let DialAddr::Ip(ip) = self.source
            && !self.source_failed.load(Ordering::Relaxed)
            && ip.is_ipv4() == peer.is_ipv4()
        {
            match bind_udp_addr(SocketAddr::new(ip, 0)) {
                Ok(s) => return Ok(s),
                Err(e) => {
                    if !self.source_failed.swap(true, Ordering::Relaxed) {
                        tracing::warn!(source = %ip, error = %e, "cannot bind dial source address, using automatic selection");
                    }
                }
            }
        }
        bind_udp_addr(SocketAddr::new(unspecified, 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(host: Host, port: u16) -> Endpoint {
        Endpoint { host, port }
    }

    #[tokio::test]
    async fn bind_port_zero_on_loopback_and_report_the_port() {
        let l = bind_tcp(&ep(Host::Ip([127, 0, 0, 1].into()), 0))
            .await
            .unwrap();
        assert_ne!(l.local_addr().unwrap().port(), 0);
        let u = bind_udp(&ep(Host::Ip([127, 0, 0, 1].into()), 0))
            .await
            .unwrap();
        assert_ne!(u.local_addr().unwrap().port(), 0);
    }

    #[tokio::test]
    async fn binding_a_taken_port_names_the_address() {
        let l = bind_tcp(&ep(Host::Ip([127, 0, 0, 1].into()), 0))
            .await
            .unwrap();
        let port = l.local_addr().unwrap().port();
        let err = bind_tcp(&ep(Host::Ip([127, 0, 0, 1].into()), port))
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains(&format!("127.0.0.1:{port}")),
            "{err}"
        );
    }

    /// Accepted sockets carry the options their listener was given, set by the kernel (Linux)
    /// or by `tune_accepted` (elsewhere): user connections no Nagle delay, tunnel connections
    /// also keepalive probes after `KEEPALIVE_IDLE`, every `KEEPALIVE_INTERVAL`.
    #[tokio::test]
    async fn accepted_sockets_inherit_the_listeners_options() {
        for accepts in [Accepts::Users, Accepts::Tunnel] {
            let l = bind_tcp_for(&ep(Host::Ip([127, 0, 0, 1].into()), 0), accepts)
                .await
                .unwrap();
            let (c, a) = tokio::join!(TcpStream::connect(l.local_addr().unwrap()), l.accept());
            let (_c, (a, _)) = (c.unwrap(), a.unwrap());
            tune_accepted(&a, accepts);
            let s = SockRef::from(&a);
            assert!(s.tcp_nodelay().unwrap(), "{accepts:?}: nodelay");
            let tunnel = accepts == Accepts::Tunnel;
            assert_eq!(s.keepalive().unwrap(), tunnel, "{accepts:?}: keepalive");
            if tunnel {
                assert_eq!(s.tcp_keepalive_time().unwrap(), KEEPALIVE_IDLE);
                assert_eq!(s.tcp_keepalive_interval().unwrap(), KEEPALIVE_INTERVAL);
            }
        }
    }

    #[tokio::test]
    async fn resolver_maps_empty_host_to_loopback() {
        let r = Resolver::new(Duration::from_secs(60));
        let addrs = r.resolve(&ep(Host::Any, 80)).await.unwrap();
        assert_eq!(addrs, vec![SocketAddr::from(([127, 0, 0, 1], 80))]);
        let addrs = r
            .resolve(&ep(Host::Name("localhost".into()), 81))
            .await
            .unwrap();
        assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 81));
    }

    #[tokio::test]
    async fn dial_source_address_is_used() {
        let l = bind_tcp(&ep(Host::Ip([127, 0, 0, 1].into()), 0))
            .await
            .unwrap();
        let addr = l.local_addr().unwrap();
        let d = Dialer::new(DialAddr::Ip([127, 0, 0, 2].into()));
        let (c, accepted) = tokio::join!(d.connect(addr), l.accept());
        let c = c.unwrap();
        assert_eq!(c.local_addr().unwrap().ip(), IpAddr::from([127, 0, 0, 2]));
        assert_eq!(accepted.unwrap().1.ip(), IpAddr::from([127, 0, 0, 2]));
    }
}
