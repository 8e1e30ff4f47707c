//! The HTTP/2 pool transport (`type=3`): one TLS connection with ALPN `h2` from the client to
//! the server (the *carrier*), and one long-lived HTTP/2 stream per tunnel connection, control
//! and pool alike.
//!
//! [`H2Stream`] turns one HTTP/2 stream back into a byte stream for the layers above
//! (handshake, pool, relay), which so do not know which transport carries them:
//!
//! - the client opens every stream (`POST` [`REQUEST_PATH`]); the server answers `200` at once
//!   and both sides then exchange DATA frames; the client does not wait for the answer before
//!   it writes (the response is read with the first bytes);
//! - a half-close is `END_STREAM` (`shutdown`), read as EOF by the peer; a stream dropped
//!   before both directions ended is reset (`RST_STREAM CANCEL`), and a reset is read as
//!   `ConnectionReset`, so a cut stream is never mistaken for a complete one;
//! - flow control: received data is released (a `WINDOW_UPDATE` follows) only as the reader
//!   consumes it, so a stalled user stalls its own stream and no other: each stream has a
//!   [`STREAM_WINDOW`] window, the connection the largest window HTTP/2 allows. Writes take
//!   only the send capacity the peer granted;
//! - no task per stream: h2's streams are polled directly. One task per carrier drives the
//!   connection (the client's, spawned on the tunnel's task tracker; the server's is the
//!   accepting task). When the carrier dies, every stream on it fails with `ConnectionReset`,
//!   and the client opens a new carrier with its next control connection;
//! - both ends ping the carrier ([`keepalive`]): a peer that leaves a `PING` unanswered for
//!   three intervals is dead, so a carrier cut without a FIN or RST (a NAT that forgot it, a
//!   peer that froze) does not hold its streams forever.
//!
//! The handshake's channel binding is the exporter of the carrier's TLS session, the same for
//! every stream on it (each stream's handshake still has its own nonces).

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker, ready};

use bytes::Bytes;
use h2::{Reason, RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::TunnelStream;
use super::gather::{self, Gather};
use crate::protocol::auth::BINDING_LEN;

mod keepalive;

/// The ALPN protocol id of HTTP/2.
pub(crate) const ALPN_H2: &[u8] = b"h2";
/// The path of every stream's request.
pub(crate) const REQUEST_PATH: &str = "/nodepass";
/// Receive window of each stream: the most a peer may send ahead of our reader. Large enough
/// for a fast stream on a long link, small enough that stalled streams hold little memory.
pub(crate) const STREAM_WINDOW: u32 = 2 << 20;
/// Receive window of a whole carrier: the HTTP/2 maximum, so the connection window never
/// throttles a stream while other streams' readers are slow (each stream keeps its own).
pub(crate) const CONNECTION_WINDOW: u32 = (1 << 31) - 1;
/// Largest DATA frame we accept (and so the peer sends): one [`SEND_CHUNK`].
const MAX_FRAME: u32 = SEND_CHUNK as u32;
/// Writes are gathered up to this many bytes before they go to h2 as one DATA frame (sooner
/// on `flush` and `shutdown`): with the relay's 64 KiB writes, four times fewer frames, h2
/// lock rounds and wake-ups of the carrier's task than one frame per write (the profile of
/// issue 15).
const SEND_CHUNK: usize = gather::AREA;
/// Data h2 may hold per stream before a writer waits (h2's default is 400 KiB): two chunks, so
/// the carrier's task has a next frame ready; with the frame h2 is writing, fewer than
/// [`gather::RING`] areas are in flight, as [`Gather`] needs to reuse them.
const SEND_BUFFER: usize = 2 * SEND_CHUNK;
/// Streams the peer may reset before we accept them, before h2 calls it an attack.
const PENDING_RESETS: usize = 1024;
/// Locally reset streams whose state is kept a moment (h2 default 50; pools reset many).
const RESET_STREAMS: usize = 4096;

/// A handle on a carrier's TCP socket and session, shared by its streams.
#[derive(Debug)]
struct Carrier {
    socket: socket2::Socket,
    binding: [u8; BINDING_LEN],
    closed: AtomicBool,
}

/// One tunnel connection carried by one HTTP/2 stream (see the module doc).
pub struct H2Stream {
    send: SendStream<Bytes>,
    /// Behind a lock only so that [`H2Stream::is_idle_healthy`] (`&self`) can poll it; the
    /// data path takes it through `&mut` without locking.
    recv: Mutex<RecvSide>,
    /// Written bytes not yet handed to h2 (see [`SEND_CHUNK`]); always within the send
    /// capacity h2 granted.
    out: Gather,
    /// Our `END_STREAM` was sent.
    shut: bool,
    carrier: Arc<Carrier>,
}

impl fmt::Debug for H2Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("H2Stream")
            .field("stream", &self.send.stream_id().as_u32())
            .field("shut", &self.shut)
            .finish()
    }
}

struct RecvSide {
    state: RecvState,
    /// Part of the last DATA frame not yet read (its flow-control capacity not yet released).
    pending: Bytes,
    /// The peer's `END_STREAM` arrived.
    eof: bool,
}

enum RecvState {
    /// Client side: the server's response has not been read yet.
    Waiting(h2::client::ResponseFuture),
    Open(RecvStream),
    Failed,
}

impl RecvSide {
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<&mut RecvStream>> {
        if let RecvState::Waiting(resp) = &mut self.state {
            let res = ready!(Pin::new(resp).poll(cx));
            self.state = RecvState::Failed;
            let resp = res.map_err(to_io)?;
            if resp.status() != http::StatusCode::OK {
                return Poll::Ready(Err(io::Error::other(format!(
                    "http2 stream refused with HTTP {}",
                    resp.status()
                ))));
            }
            self.state = RecvState::Open(resp.into_body());
        }
        match &mut self.state {
            RecvState::Open(r) => Poll::Ready(Ok(r)),
            _ => Poll::Ready(Err(abrupt())),
        }
    }

    /// Fill `pending` (or `eof`) from the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.pending.is_empty() && !self.eof {
            let recv = ready!(self.poll_recv(cx))?;
            match ready!(recv.poll_data(cx)) {
                Some(Ok(b)) => self.pending = b,
                Some(Err(e)) => {
                    self.state = RecvState::Failed;
                    return Poll::Ready(Err(to_io(e)));
                }
                None => self.eof = true,
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Hand `n` bytes of `pending` to the reader and give their window back to the peer.
    fn consume(&mut self, n: usize) -> io::Result<Bytes> {
        let out = self.pending.split_to(n);
        if let RecvState::Open(r) = &mut self.state {
            r.flow_control().release_capacity(n).map_err(to_io)?;
        }
        Ok(out)
    }
}

impl H2Stream {
    fn new(send: SendStream<Bytes>, state: RecvState, carrier: Arc<Carrier>) -> Self {
        H2Stream {
            send,
            recv: Mutex::new(RecvSide {
                state,
                pending: Bytes::new(),
                eof: false,
            }),
            out: Gather::default(),
            shut: false,
            carrier,
        }
    }

    /// Hand the held bytes to h2 as one DATA frame (with `END_STREAM` when `end`).
    fn send_held(&mut self, end: bool) -> io::Result<()> {
        self.send.send_data(self.out.take(), end).map_err(to_io)
    }

    fn recv_mut(&mut self) -> &mut RecvSide {
        self.recv.get_mut().unwrap_or_else(PoisonError::into_inner)
    }

    /// The carrier's TCP socket (shared by every stream on it: socket options only).
    pub fn socket(&self) -> socket2::SockRef<'_> {
        socket2::SockRef::from(&self.carrier.socket)
    }

    /// The carrier's TLS exporter value.
    pub fn channel_binding(&self) -> [u8; BINDING_LEN] {
        self.carrier.binding
    }

    /// True while the carrier is up, the stream open and nothing arrived on it. Never blocks.
    pub fn is_idle_healthy(&self) -> bool {
        if self.carrier.closed.load(Relaxed) {
            return false;
        }
        let mut side = crate::sync::lock(&self.recv);
        if !side.pending.is_empty() || side.eof {
            return false;
        }
        // Nobody reads an idle stream, so polling it here with a no-op waker takes no wakeup
        // from anyone. Whatever is ready (data, the end, a reset) means it must not be used.
        let mut cx = Context::from_waker(Waker::noop());
        side.poll_fill(&mut cx).is_pending()
    }
}

impl Drop for H2Stream {
    fn drop(&mut self) {
        let eof = self.recv_mut().eof;
        if !(self.shut && eof) {
            // Not a complete exchange: the peer must read a reset, not an end (h2 would send
            // CANCEL by itself; being explicit keeps the rule visible).
            self.send.send_reset(Reason::CANCEL);
        }
    }
}

impl AsyncRead for H2Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let side = self.get_mut().recv_mut();
        ready!(side.poll_fill(cx))?;
        let n = side.pending.len().min(buf.remaining());
        if n > 0 {
            buf.put_slice(&side.consume(n)?);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for H2Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(done) = super::write_without_sending(this.shut, buf) {
            return Poll::Ready(done);
        }
        let want = buf.len().min(SEND_CHUNK);
        // Bounded: each pass returns, hands the held bytes to h2 (once: then nothing is held),
        // or waits for capacity (h2 answers Ready only with capacity to spare).
        loop {
            let held = this.out.len();
            // h2 counts the capacity asked for beyond what it buffers already; ours is not
            // there yet.
            this.send.reserve_capacity(held + want);
            let cap = this.send.capacity();
            if cap > held {
                let n = this.out.push(&buf[..want], held + (cap - held).min(want));
                if this.out.len() >= SEND_CHUNK || n == 0 {
                    this.send_held(false)?;
                }
                if n > 0 {
                    return Poll::Ready(Ok(n));
                }
                continue;
            }
            if held > 0 {
                this.send_held(false)?;
                continue;
            }
            match ready!(this.send.poll_capacity(cx)) {
                Some(Ok(_)) => {}
                Some(Err(e)) => return Poll::Ready(Err(to_io(e))),
                // The stream can no longer send: reset by the peer or the carrier gone.
                None => return Poll::Ready(Err(abrupt())),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Hand the held bytes to h2; the carrier's task writes and flushes them.
        let this = self.get_mut();
        if !this.out.is_empty() {
            this.send_held(false)?;
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.shut {
            return Poll::Ready(Ok(()));
        }
        this.send_held(true)?;
        this.shut = true;
        Poll::Ready(Ok(()))
    }
}

fn abrupt() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionReset,
        "http2 stream reset before the end of the stream",
    )
}

/// Map an h2 error to an I/O error: a reset stream or a lost carrier is a reset.
fn to_io(e: h2::Error) -> io::Error {
    if e.is_io() {
        let e = e
            .into_io()
            .unwrap_or_else(|| io::Error::other("http2 i/o error"));
        // h2's word for "the connection under this stream is gone" (its driver was dropped:
        // the carrier ended or was declared dead).
        if e.kind() == io::ErrorKind::BrokenPipe {
            return io::Error::new(
                io::ErrorKind::ConnectionReset,
                "http2 carrier lost before the end of the stream",
            );
        }
        return e;
    }
    if e.is_reset() || e.is_go_away() {
        return io::Error::new(io::ErrorKind::ConnectionReset, format!("http2: {e}"));
    }
    io::Error::new(io::ErrorKind::InvalidData, format!("http2: {e}"))
}

/// The TLS stream under a carrier: its socket, binding, and whether ALPN chose `h2`.
fn carrier_of(stream: &TunnelStream) -> io::Result<(Carrier, bool)> {
    let alpn = match stream {
        TunnelStream::ClientTls(s) => s.get_ref().1.alpn_protocol() == Some(ALPN_H2),
        TunnelStream::ServerTls(s) => s.get_ref().1.alpn_protocol() == Some(ALPN_H2),
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "http2 (type=3) runs inside tls only",
            ));
        }
    };
    Ok((
        Carrier {
            socket: stream.socket().try_clone()?,
            binding: stream.channel_binding()?,
            closed: AtomicBool::new(false),
        },
        alpn,
    ))
}

/// The client's end of a carrier: opens streams on it.
#[derive(Clone)]
pub(crate) struct H2Client {
    send: h2::client::SendRequest<Bytes>,
    carrier: Arc<Carrier>,
    uri: http::Uri,
}

impl fmt::Debug for H2Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("H2Client").field("uri", &self.uri).finish()
    }
}

impl H2Client {
    /// Start HTTP/2 on an established client TLS stream that negotiated ALPN `h2`
    /// (`authority` is the tunnel address as `host:port`). The connection task runs on
    /// `tracker` until the carrier ends or `stop` is cancelled. The caller bounds it with a
    /// timeout. Cancel safe (dropping it drops the connection).
    pub(crate) async fn handshake(
        stream: TunnelStream,
        authority: &str,
        tracker: &TaskTracker,
        stop: CancellationToken,
    ) -> io::Result<H2Client> {
        let (carrier, alpn) = carrier_of(&stream)?;
        if !alpn {
            return Err(io::Error::other(
                "the server did not agree to http2 (no ALPN h2): its type is no longer 3",
            ));
        }
        let uri = http::Uri::builder()
            .scheme("https")
            .authority(authority)
            .path_and_query(REQUEST_PATH)
            .build()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let (send, mut conn) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_frame_size(MAX_FRAME)
            .max_send_buffer_size(SEND_BUFFER)
            .max_concurrent_reset_streams(RESET_STREAMS)
            .enable_push(false)
            .handshake::<_, Bytes>(stream)
            .await
            .map_err(to_io)?;
        let carrier = Arc::new(carrier);
        let watch = carrier.clone();
        let pong = conn
            .ping_pong()
            .ok_or_else(|| io::Error::other("http2 ping handle already taken"))?;
        tracker.spawn(tracing::Instrument::in_current_span(async move {
            tokio::select! {
                r = conn => if let Err(e) = r {
                    tracing::debug!(error = %e, "http2 connection to the server ended");
                },
                e = keepalive::watch(pong, keepalive::INTERVAL, keepalive::DEAD_AFTER) => {
                    tracing::debug!(error = %e, "http2 connection to the server is dead");
                }
                _ = stop.cancelled() => {}
            }
            // Marked before the connection is dropped, so no new stream picks this carrier.
            watch.closed.store(true, Relaxed);
        }));
        Ok(H2Client { send, carrier, uri })
    }

    /// False once the carrier has ended.
    pub(crate) fn is_open(&self) -> bool {
        !self.carrier.closed.load(Relaxed)
    }

    /// Open a stream: the request goes out at once, the answer is read with the first bytes.
    pub(crate) async fn open(&self) -> io::Result<TunnelStream> {
        let mut send = self.send.clone().ready().await.map_err(to_io)?;
        let req = http::Request::builder()
            .method(http::Method::POST)
            .uri(self.uri.clone())
            .body(())
            .map_err(|e| io::Error::other(e.to_string()))?;
        let (resp, stream) = send.send_request(req, false).map_err(to_io)?;
        Ok(TunnelStream::H2(Box::new(H2Stream::new(
            stream,
            RecvState::Waiting(resp),
            self.carrier.clone(),
        ))))
    }
}

/// The server's end of a carrier: yields the streams the client opens.
pub(crate) struct H2Server {
    conn: h2::server::Connection<TunnelStream, Bytes>,
    /// The keep-alive ([`keepalive::watch`]); ends with the reason the carrier is dead.
    alive: Pin<Box<dyn Future<Output = io::Error> + Send>>,
    carrier: Arc<Carrier>,
}

impl fmt::Debug for H2Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("H2Server").finish_non_exhaustive()
    }
}

/// Whether an accepted server TLS stream negotiated ALPN `h2`.
pub(crate) fn is_h2(stream: &TunnelStream) -> bool {
    matches!(stream, TunnelStream::ServerTls(s) if s.get_ref().1.alpn_protocol() == Some(ALPN_H2))
}

impl H2Server {
    /// Start HTTP/2 on an accepted TLS stream that negotiated ALPN `h2`; at most
    /// `max_streams` streams open at once. The caller bounds it with a timeout.
    pub(crate) async fn handshake(stream: TunnelStream, max_streams: u32) -> io::Result<H2Server> {
        let (carrier, _) = carrier_of(&stream)?;
        let mut conn = h2::server::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_frame_size(MAX_FRAME)
            .max_send_buffer_size(SEND_BUFFER)
            .max_concurrent_streams(max_streams)
            .max_pending_accept_reset_streams(PENDING_RESETS)
            .max_concurrent_reset_streams(RESET_STREAMS)
            .handshake::<_, Bytes>(stream)
            .await
            .map_err(to_io)?;
        let pong = conn
            .ping_pong()
            .ok_or_else(|| io::Error::other("http2 ping handle already taken"))?;
        let alive = Box::pin(keepalive::watch(
            pong,
            keepalive::INTERVAL,
            keepalive::DEAD_AFTER,
        ));
        Ok(H2Server {
            conn,
            alive,
            carrier: Arc::new(carrier),
        })
    }

    /// The next stream the client opened (answered `200`), or `None` when the carrier ended.
    /// Drives the whole connection and its keep-alive: keep calling it; a dead carrier is an
    /// error (drop the server then: its streams read a reset). Cancel safe.
    pub(crate) async fn accept(&mut self) -> Option<io::Result<TunnelStream>> {
        loop {
            if self.carrier.closed.load(Relaxed) {
                // Ended or declared dead before: the keep-alive is spent.
                return None;
            }
            let next = tokio::select! {
                next = self.conn.accept() => next,
                e = &mut self.alive => {
                    self.carrier.closed.store(true, Relaxed);
                    return Some(Err(e));
                }
            };
            let (req, mut respond) = match next {
                None => {
                    self.carrier.closed.store(true, Relaxed);
                    return None;
                }
                Some(Err(e)) => {
                    self.carrier.closed.store(true, Relaxed);
                    return Some(Err(to_io(e)));
                }
                Some(Ok(r)) => r,
            };
            if req.method() != http::Method::POST || req.uri().path() != REQUEST_PATH {
                let mut resp = http::Response::new(());
                *resp.status_mut() = http::StatusCode::NOT_FOUND;
                let _ = respond.send_response(resp, true);
                continue;
            }
            let send = match respond.send_response(http::Response::new(()), false) {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(error = %e, "http2 stream ended before it was answered");
                    continue;
                }
            };
            let stream =
                H2Stream::new(send, RecvState::Open(req.into_body()), self.carrier.clone());
            return Some(Ok(TunnelStream::H2(Box::new(stream))));
        }
    }
}

impl Drop for H2Server {
    fn drop(&mut self) {
        self.carrier.closed.store(true, Relaxed);
    }
}

#[cfg(all(test, feature = "self-signed"))]
mod tests {
    use super::*;
    use crate::transport::tls::{ClientTls, ClientVerify, ServerTls};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use crate::transport::stream_checks::{self, T, next};

    /// A client carrier and the server's stream acceptor over loopback TLS with ALPN h2; the
    /// server's streams come out of the returned channel.
    async fn carrier() -> (
        H2Client,
        tokio::sync::mpsc::UnboundedReceiver<TunnelStream>,
        TaskTracker,
    ) {
        let server = ServerTls::self_signed(&["nodepass".into()])
            .unwrap()
            .with_alpn(&[ALPN_H2])
            .unwrap();
        let client = ClientTls::new(&ClientVerify::SelfSigned, "nodepass").unwrap();
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let (tcp, _) = l.accept().await.unwrap();
            let tls = server
                .acceptor()
                .accept(crate::transport::BufferedTcp::new(tcp))
                .await
                .unwrap();
            let stream = TunnelStream::ServerTls(Box::new(tls));
            assert!(is_h2(&stream));
            let mut conn = H2Server::handshake(stream, 100).await.unwrap();
            while let Some(Ok(s)) = conn.accept().await {
                if tx.send(s).is_err() {
                    break;
                }
            }
        });
        let tcp = TcpStream::connect(addr).await.unwrap();
        let tls = client.connect_alpn(tcp, ALPN_H2).await.unwrap();
        let tracker = TaskTracker::new();
        let c = H2Client::handshake(
            TunnelStream::ClientTls(Box::new(tls)),
            &addr.to_string(),
            &tracker,
            CancellationToken::new(),
        )
        .await
        .unwrap();
        (c, rx, tracker)
    }

    #[tokio::test]
    async fn half_close_each_way_and_the_binding_is_the_carriers() {
        let (c, mut rx, _t) = carrier().await;
        let mut a = c.open().await.unwrap();
        // The server learns of a stream with its first frame.
        a.write_all(b"x").await.unwrap();
        let b = next(&mut rx).await;
        stream_checks::half_close_each_way(a, b).await;
    }

    #[tokio::test]
    async fn a_dropped_stream_is_a_reset_and_an_idle_one_notices() {
        let (c, mut rx, _t) = carrier().await;
        let mut a = c.open().await.unwrap();
        a.write_all(b"partial").await.unwrap();
        a.flush().await.unwrap();
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
        // An idle stream whose peer went away is seen as unusable without reading it.
        let mut a2 = c.open().await.unwrap();
        a2.write_all(b"y").await.unwrap();
        a2.flush().await.unwrap();
        let b2 = next(&mut rx).await;
        let mut one = [0u8; 1];
        a2.flush().await.unwrap();
        drop(b2);
        // The client side reads the reset (bounded wait), then reports it unhealthy.
        let r = tokio::time::timeout(T, a2.read(&mut one)).await.unwrap();
        assert!(r.is_err(), "{r:?}");
        assert!(!a2.is_idle_healthy());
    }

    /// A reader that stops reading stalls its own stream only: the window keeps the other
    /// streams of the carrier moving.
    #[tokio::test]
    async fn a_stalled_reader_does_not_stall_other_streams() {
        let (c, mut rx, _t) = carrier().await;
        let mut slow = c.open().await.unwrap();
        slow.write_all(b"s").await.unwrap();
        let _slow_server = next(&mut rx).await; // never read
        // Fill the stalled stream's window and more: the writer blocks, nothing else does.
        let filler = tokio::spawn(async move {
            let chunk = vec![7u8; 64 << 10];
            loop {
                if slow.write_all(&chunk).await.is_err() {
                    break;
                }
            }
        });
        let mut fast = c.open().await.unwrap();
        fast.write_all(b"f").await.unwrap();
        let mut fast_server = next(&mut rx).await;
        let payload = vec![3u8; 16 << 20];
        let p2 = payload.clone();
        let w = tokio::spawn(async move {
            fast.write_all(&p2).await.unwrap();
            fast.shutdown().await.unwrap();
            fast
        });
        let mut got = Vec::new();
        tokio::time::timeout(T, fast_server.read_to_end(&mut got))
            .await
            .expect("the other stream is not stalled")
            .unwrap();
        assert_eq!(got.len(), payload.len() + 1);
        let _fast = w.await.unwrap();
        assert!(!filler.is_finished(), "the stalled stream's writer waits");
        filler.abort();
    }
}
