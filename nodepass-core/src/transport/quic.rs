//! The QUIC pool transport (`type=1`): one QUIC connection from the client to the server (the
//! *carrier*), on the tunnel port number over UDP, and one bidirectional QUIC stream per tunnel
//! connection, control and pool alike.
//!
//! [`QuicStream`] is one such stream as a byte stream for the layers above (handshake, pool,
//! relay), which so do not know which transport carries them:
//!
//! - the client opens every stream; the server learns of it with its first bytes (the
//!   handshake's `Hello`), so opening costs no round trip of its own;
//! - a half-close is the stream's FIN (`finish`), read as EOF by the peer; a stream dropped
//!   before both directions ended is reset (`RESET_STREAM` and `STOP_SENDING`), and a reset or
//!   a lost connection reads as `ConnectionReset`, so a cut stream is never mistaken for a
//!   complete one;
//! - streams are independent: a lost packet delays only the streams whose data it carried,
//!   and each stream has its own flow-control window ([`STREAM_WINDOW`]);
//! - TLS 1.3 only, with the certificates and verification modes of `tls=1`/`tls=2` (the
//!   configurations of [`super::tls`]) and the ALPN protocol [`ALPN_QUIC`];
//! - keep-alive every [`KEEP_ALIVE`] (a client behind a NAT keeps its mapping), closed after
//!   [`IDLE_TIMEOUT`] without any packet from the peer; at most `max + slot + margin` streams
//!   open at once (the server's limit, set by the caller);
//! - UDP sessions ride on streams like on the other transports (length-prefixed datagrams):
//!   QUIC datagrams would drop the retransmission but need a second data path above.
//!
//! The handshake's channel binding is the exporter of the carrier's TLS session (the same
//! label as for TLS over TCP), the same for every stream on it; each stream's handshake still
//! has its own nonces. quinn drives each connection in its own tasks; the client's watcher
//! (on the tunnel's task tracker) closes its carrier when the tunnel stops.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{ReadError, RecvStream, SendStream, VarInt, WriteError};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::TunnelStream;
use super::tls::{ClientTls, ServerTls};
use crate::protocol::auth::{BINDING_LEN, EXPORTER_LABEL};

/// The ALPN protocol id of the QUIC pool transport (QUIC requires one).
pub(crate) const ALPN_QUIC: &[u8] = b"nodepass-quic";
/// How often an otherwise idle connection sends a keep-alive (as NodePass does).
pub(crate) const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// A connection without any packet from the peer for this long is closed.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Receive window of each stream: the most a peer may send ahead of our reader (enough for
/// 100 Mbit/s at 160 ms RTT; a stalled stream holds at most this much).
pub(crate) const STREAM_WINDOW: u32 = 2 << 20;
/// Data in flight on a whole connection, all streams together.
const SEND_WINDOW: u64 = 32 << 20;
/// UDP socket buffers asked for (best effort): a burst of a fast connection fits.
const UDP_BUFFER: usize = 4 << 20;
/// Application error code of a stream reset or stop (the peer only needs to know it was cut).
const CODE_CUT: u32 = 1;
/// Application error code when a carrier is closed on purpose (the tunnel stops).
const CODE_CLOSE: u32 = 0;
/// Application error code when the server closes a carrier that never authenticated.
const CODE_UNAUTHENTICATED: u32 = 2;

/// The state streams of one QUIC connection share.
struct Carrier {
    conn: quinn::Connection,
    /// The endpoint's UDP socket (socket options only; shared with every connection on it).
    socket: Arc<socket2::Socket>,
    binding: [u8; BINDING_LEN],
}

impl Carrier {
    fn new(conn: quinn::Connection, socket: Arc<socket2::Socket>) -> io::Result<Self> {
        let mut binding = [0u8; BINDING_LEN];
        conn.export_keying_material(&mut binding, EXPORTER_LABEL, b"")
            .map_err(|_| io::Error::other("quic: the tls exporter is not available"))?;
        Ok(Carrier {
            conn,
            socket,
            binding,
        })
    }

    fn is_open(&self) -> bool {
        self.conn.close_reason().is_none()
    }
}

/// One tunnel connection carried by one bidirectional QUIC stream (see the module doc).
pub struct QuicStream {
    send: SendStream,
    /// Behind a lock only so that [`QuicStream::is_idle_healthy`] (`&self`) can poll it; the
    /// data path takes it through `&mut` without locking.
    recv: Mutex<RecvSide>,
    /// Our FIN was sent.
    shut: bool,
    carrier: Arc<Carrier>,
}

struct RecvSide {
    recv: RecvStream,
    /// The peer's FIN was read.
    eof: bool,
}

impl fmt::Debug for QuicStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuicStream")
            .field("stream", &self.send.id())
            .field("shut", &self.shut)
            .finish()
    }
}

impl RecvSide {
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.eof || buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        ready!(self.recv.poll_read_buf(cx, buf)).map_err(read_err)?;
        if buf.filled().len() == before {
            self.eof = true;
        }
        Poll::Ready(Ok(()))
    }
}

impl QuicStream {
    fn new(send: SendStream, recv: RecvStream, carrier: Arc<Carrier>) -> Self {
        QuicStream {
            send,
            recv: Mutex::new(RecvSide { recv, eof: false }),
            shut: false,
            carrier,
        }
    }

    fn recv_mut(&mut self) -> &mut RecvSide {
        self.recv.get_mut().unwrap_or_else(PoisonError::into_inner)
    }

    /// The endpoint's UDP socket (shared by every stream and connection on it: socket options
    /// only).
    pub fn socket(&self) -> socket2::SockRef<'_> {
        socket2::SockRef::from(&*self.carrier.socket)
    }

    /// The carrier's TLS exporter value.
    pub fn channel_binding(&self) -> [u8; BINDING_LEN] {
        self.carrier.binding
    }

    /// True while the connection is up, the stream open and nothing arrived on it. Never
    /// blocks.
    pub fn is_idle_healthy(&self) -> bool {
        if !self.carrier.is_open() {
            return false;
        }
        let mut side = crate::sync::lock(&self.recv);
        if side.eof {
            return false;
        }
        // Nobody reads an idle stream, so polling it here with a no-op waker takes no wakeup
        // from anyone. Whatever is ready (data, the end, a reset) means it must not be used.
        let mut cx = Context::from_waker(Waker::noop());
        let mut one = [0u8; 1];
        let mut buf = ReadBuf::new(&mut one);
        // A byte read here is lost, but the stream is then discarded anyway.
        side.recv.poll_read_buf(&mut cx, &mut buf).is_pending()
    }
}

impl Drop for QuicStream {
    fn drop(&mut self) {
        let eof = self.recv_mut().eof;
        if !(self.shut && eof) {
            // Not a complete exchange: the peer must read a reset, not an end (quinn would
            // finish a dropped send stream).
            let _ = self.send.reset(VarInt::from_u32(CODE_CUT));
            let _ = self.recv_mut().recv.stop(VarInt::from_u32(CODE_CUT));
        }
    }
}

impl AsyncRead for QuicStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.get_mut().recv_mut().poll_read(cx, buf)
    }
}

impl AsyncWrite for QuicStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(done) = super::write_without_sending(this.shut, buf) {
            return Poll::Ready(done);
        }
        SendStream::poll_write(Pin::new(&mut this.send), cx, buf).map_err(write_err)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // quinn sends whatever was written as soon as congestion control allows.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.shut {
            return Poll::Ready(Ok(()));
        }
        this.send.finish().map_err(|_| abrupt("finished"))?;
        this.shut = true;
        Poll::Ready(Ok(()))
    }
}

fn abrupt(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionReset,
        format!("quic stream {what} before the end of the stream"),
    )
}

/// A reset stream or a lost connection is a reset, never a clean end.
fn read_err(e: ReadError) -> io::Error {
    match e {
        ReadError::Reset(_) => abrupt("reset by the peer"),
        ReadError::ConnectionLost(c) => io::Error::new(
            io::ErrorKind::ConnectionReset,
            format!("quic connection lost: {c}"),
        ),
        other => io::Error::new(io::ErrorKind::ConnectionReset, format!("quic: {other}")),
    }
}

/// The peer stopped reading (it dropped the stream) or the connection is gone: a reset.
fn write_err(e: WriteError) -> io::Error {
    match e {
        WriteError::Stopped(_) => abrupt("stopped by the peer"),
        WriteError::ClosedStream => {
            io::Error::new(io::ErrorKind::BrokenPipe, "quic stream already closed")
        }
        other => io::Error::new(io::ErrorKind::ConnectionReset, format!("quic: {other}")),
    }
}

/// The transport settings of both ends; `max_streams` is how many streams the peer may open
/// at once.
fn transport(max_streams: u32) -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(VarInt::from_u32(max_streams))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .keep_alive_interval(Some(KEEP_ALIVE))
        .max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(IDLE_TIMEOUT).expect("30 s is a valid idle timeout"),
        ))
        .stream_receive_window(VarInt::from_u32(STREAM_WINDOW))
        .send_window(SEND_WINDOW)
        .datagram_receive_buffer_size(None)
        // BBR rather than quinn's default CUBIC: one QUIC connection carries the whole pool, so
        // one loss-driven window would throttle every session at once. Measured on the WAN
        // testbed (docs/benchmarks.md): at 40 ms and 1% loss CUBIC could not finish a bulk
        // run, at 0% loss both fill the link.
        .congestion_controller_factory(Arc::new(quinn::congestion::BbrConfig::default()));
    Arc::new(t)
}

fn tune(sock: &socket2::Socket) {
    let _ = sock.set_recv_buffer_size(UDP_BUFFER);
    let _ = sock.set_send_buffer_size(UDP_BUFFER);
}

/// An endpoint on `socket` (its second handle kept for socket options).
fn endpoint(
    socket: std::net::UdpSocket,
    server: Option<quinn::ServerConfig>,
) -> io::Result<(quinn::Endpoint, Arc<socket2::Socket>)> {
    let handle = socket2::Socket::from(socket.try_clone()?);
    tune(&handle);
    let ep = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        server,
        socket,
        Arc::new(quinn::TokioRuntime),
    )?;
    Ok((ep, Arc::new(handle)))
}

/// The server's QUIC endpoint on the tunnel port (UDP).
pub(crate) struct QuicListener {
    endpoint: quinn::Endpoint,
    socket: Arc<socket2::Socket>,
}

impl fmt::Debug for QuicListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuicListener")
            .field("addr", &self.endpoint.local_addr().ok())
            .finish()
    }
}

impl QuicListener {
    /// Serve QUIC on the bound `socket` with the server's TLS (its certificate, live
    /// reloads included); a client may open at most `max_streams` streams at once.
    pub(crate) fn new(
        socket: std::net::UdpSocket,
        tls: &ServerTls,
        max_streams: u32,
    ) -> crate::error::Result<Self> {
        let rustls = tls.with_alpn(&[ALPN_QUIC])?.config();
        let crypto = QuicServerConfig::try_from(rustls)
            .map_err(|e| crate::error::Error::Tls(format!("quic: {e}")))?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        config.transport_config(transport(max_streams));
        let (endpoint, socket) =
            endpoint(socket, Some(config)).map_err(|source| crate::error::Error::Bind {
                addr: "quic endpoint".into(),
                source,
            })?;
        Ok(QuicListener { endpoint, socket })
    }

    /// The next connection attempt, or `None` once the endpoint is closed. Cancel safe.
    pub(crate) async fn accept(&self) -> Option<quinn::Incoming> {
        self.endpoint.accept().await
    }

    /// Complete the QUIC and TLS handshake of `incoming`. The caller bounds it with a
    /// timeout. Cancel safe (the attempt is abandoned).
    pub(crate) async fn handshake(&self, incoming: quinn::Incoming) -> io::Result<QuicConn> {
        let conn = incoming
            .accept()
            .map_err(|e| io::Error::other(format!("quic: {e}")))?
            .await
            .map_err(|e| io::Error::other(format!("quic handshake: {e}")))?;
        Ok(QuicConn {
            carrier: Arc::new(Carrier::new(conn, self.socket.clone())?),
        })
    }

    /// Close every connection and stop accepting, then wait (at most `grace`) until the peers
    /// were told.
    pub(crate) async fn close(&self, grace: Duration) {
        self.endpoint
            .close(VarInt::from_u32(CODE_CLOSE), b"server stopped");
        let _ = tokio::time::timeout(grace, self.endpoint.wait_idle()).await;
    }
}

/// The server's end of a carrier: yields the streams the client opens.
pub(crate) struct QuicConn {
    carrier: Arc<Carrier>,
}

impl fmt::Debug for QuicConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuicConn")
            .field("peer", &self.carrier.conn.remote_address())
            .finish()
    }
}

impl QuicConn {
    /// The next stream the client opened, or `None` when the connection ended. Cancel safe.
    pub(crate) async fn accept(&mut self) -> Option<io::Result<TunnelStream>> {
        match self.carrier.conn.accept_bi().await {
            Ok((send, recv)) => Some(Ok(TunnelStream::Quic(Box::new(QuicStream::new(
                send,
                recv,
                self.carrier.clone(),
            ))))),
            Err(
                quinn::ConnectionError::ApplicationClosed(_)
                | quinn::ConnectionError::LocallyClosed,
            ) => None,
            Err(e) => Some(Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                format!("quic: {e}"),
            ))),
        }
    }

    /// Close the connection because no stream on it authenticated in time.
    pub(crate) fn close_unauthenticated(&self) {
        self.carrier.conn.close(
            VarInt::from_u32(CODE_UNAUTHENTICATED),
            b"no authenticated stream",
        );
    }
}

/// The client's UDP socket and QUIC endpoint, kept across sessions (one per address family).
pub(crate) struct ClientEndpoint {
    endpoint: quinn::Endpoint,
    socket: Arc<socket2::Socket>,
}

impl fmt::Debug for ClientEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientEndpoint")
            .field("addr", &self.endpoint.local_addr().ok())
            .finish()
    }
}

impl ClientEndpoint {
    /// A client endpoint on an ephemeral port of the family of `server`.
    pub(crate) fn bind(server: SocketAddr) -> io::Result<Self> {
        let any: SocketAddr = if server.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let (endpoint, socket) = endpoint(std::net::UdpSocket::bind(any)?, None)?;
        Ok(ClientEndpoint { endpoint, socket })
    }

    /// True when this endpoint can reach `server` (same address family).
    pub(crate) fn fits(&self, server: SocketAddr) -> bool {
        self.endpoint
            .local_addr()
            .is_ok_and(|a| a.is_ipv4() == server.is_ipv4())
    }

    /// Open a carrier to `server` with the client's TLS (ALPN [`ALPN_QUIC`]). Its watcher runs
    /// on `tracker` and closes it when `stop` is cancelled. The caller bounds it with a timeout.
    /// Cancel safe (the attempt is abandoned).
    pub(crate) async fn connect(
        &self,
        server: SocketAddr,
        tls: &ClientTls,
        tracker: &TaskTracker,
        stop: CancellationToken,
    ) -> io::Result<QuicClient> {
        let (rustls, name) = tls.parts();
        let mut rustls = (*rustls).clone();
        rustls.alpn_protocols = vec![ALPN_QUIC.to_vec()];
        let crypto = QuicClientConfig::try_from(Arc::new(rustls))
            .map_err(|e| io::Error::other(format!("quic: {e}")))?;
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        // The server never opens streams.
        config.transport_config(transport(0));
        let conn = self
            .endpoint
            .connect_with(config, server, &name.to_str())
            .map_err(|e| io::Error::other(format!("quic: {e}")))?
            .await
            .map_err(|e| io::Error::other(format!("quic handshake: {e}")))?;
        let watch = conn.clone();
        tracker.spawn(tracing::Instrument::in_current_span(async move {
            tokio::select! {
                e = watch.closed() => tracing::debug!(error = %e, "quic connection to the server ended"),
                _ = stop.cancelled() => watch.close(VarInt::from_u32(CODE_CLOSE), b"client stopped"),
            }
        }));
        Ok(QuicClient {
            carrier: Arc::new(Carrier::new(conn, self.socket.clone())?),
        })
    }
}

/// The client's end of a carrier: opens streams on it. Dropping the last handle (and the
/// last stream) closes the connection.
#[derive(Clone)]
pub(crate) struct QuicClient {
    carrier: Arc<Carrier>,
}

impl fmt::Debug for QuicClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuicClient")
            .field("server", &self.carrier.conn.remote_address())
            .finish()
    }
}

impl Drop for Carrier {
    fn drop(&mut self) {
        // The watcher task holds a connection handle of its own: close explicitly.
        self.conn.close(VarInt::from_u32(CODE_CLOSE), b"done");
    }
}

impl QuicClient {
    /// False once the connection has ended.
    pub(crate) fn is_open(&self) -> bool {
        self.carrier.is_open()
    }

    /// Open a stream (it reaches the server with its first bytes). Waits while the server's
    /// stream limit is reached. Cancel safe.
    pub(crate) async fn open(&self) -> io::Result<TunnelStream> {
        let (send, recv) =
            self.carrier.conn.open_bi().await.map_err(|e| {
                io::Error::new(io::ErrorKind::ConnectionReset, format!("quic: {e}"))
            })?;
        Ok(TunnelStream::Quic(Box::new(QuicStream::new(
            send,
            recv,
            self.carrier.clone(),
        ))))
    }
}

#[cfg(all(test, feature = "self-signed"))]
mod tests {
    use super::*;
    use crate::transport::tls::ClientVerify;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use crate::transport::stream_checks::{self, T, next};

    /// A loopback server endpoint whose streams come out of the returned channel, and a
    /// client carrier connected to it.
    async fn carrier() -> (
        QuicClient,
        tokio::sync::mpsc::UnboundedReceiver<TunnelStream>,
        Arc<QuicListener>,
    ) {
        let tls = ServerTls::self_signed(&["nodepass".into()]).unwrap();
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let server = Arc::new(QuicListener::new(udp, &tls, 100).unwrap());
        let addr = server.endpoint.local_addr().unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let s = server.clone();
        tokio::spawn(async move {
            let incoming = s.accept().await.unwrap();
            let mut conn = s.handshake(incoming).await.unwrap();
            while let Some(Ok(stream)) = conn.accept().await {
                if tx.send(stream).is_err() {
                    break;
                }
            }
        });
        let client_tls = ClientTls::new(&ClientVerify::SelfSigned, "nodepass").unwrap();
        let ep = ClientEndpoint::bind(addr).unwrap();
        let c = ep
            .connect(
                addr,
                &client_tls,
                &TaskTracker::new(),
                CancellationToken::new(),
            )
            .await
            .unwrap();
        (c, rx, server)
    }

    #[tokio::test]
    async fn half_close_each_way_and_the_binding_is_the_connections() {
        let (c, mut rx, _s) = carrier().await;
        let mut a = c.open().await.unwrap();
        // The server learns of a stream with its first bytes.
        a.write_all(b"x").await.unwrap();
        let b = next(&mut rx).await;
        assert!(a.exclusive_socket().is_none());
        stream_checks::half_close_each_way(a, b).await;
    }

    #[tokio::test]
    async fn a_dropped_stream_is_a_reset_and_an_idle_one_notices() {
        let (c, mut rx, _s) = carrier().await;
        let mut a = c.open().await.unwrap();
        a.write_all(b"partial").await.unwrap();
        let mut b = next(&mut rx).await;
        let mut buf = [0u8; 7];
        b.read_exact(&mut buf).await.unwrap();
        assert!(b.is_idle_healthy());
        drop(a);
        let mut rest = Vec::new();
        let err = tokio::time::timeout(T, b.read_to_end(&mut rest))
            .await
            .expect("the reset is noticed")
            .expect_err("a reset stream is an error, not an EOF");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");
        // A stream the server drops reads as a reset on the client, which then sees it unusable.
        let mut a2 = c.open().await.unwrap();
        a2.write_all(b"y").await.unwrap();
        let b2 = next(&mut rx).await;
        drop(b2);
        let mut one = [0u8; 1];
        let r = tokio::time::timeout(T, a2.read(&mut one)).await.unwrap();
        assert_eq!(r.expect_err("reset").kind(), io::ErrorKind::ConnectionReset);
        assert!(!a2.is_idle_healthy());
    }

    #[tokio::test]
    async fn a_closed_connection_reads_as_a_reset_on_every_stream() {
        let (c, mut rx, server) = carrier().await;
        let mut a = c.open().await.unwrap();
        a.write_all(b"z").await.unwrap();
        let _b = next(&mut rx).await;
        assert!(a.is_idle_healthy() && c.is_open());
        server.close(Duration::from_secs(1)).await;
        let mut one = [0u8; 1];
        let r = tokio::time::timeout(T, a.read(&mut one)).await.unwrap();
        assert_eq!(r.expect_err("reset").kind(), io::ErrorKind::ConnectionReset);
        assert!(!c.is_open() && !a.is_idle_healthy());
        assert!(
            c.open().await.is_err(),
            "no new stream on a closed connection"
        );
    }
}
