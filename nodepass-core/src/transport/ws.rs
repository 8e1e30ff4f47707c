//! The WebSocket pool transport (`type=2`): one WebSocket per tunnel connection, binary
//! messages, over plain TCP or TLS, so the tunnel passes HTTP reverse proxies and CDNs.
//!
//! [`WsStream`] turns a WebSocket back into a byte stream for the layers above (handshake,
//! pool, relay), which so do not know which transport carries them:
//!
//! - writes are gathered into binary messages of up to [`SEND_CHUNK`] bytes, sent when full,
//!   on `flush` and on `shutdown` (the relay flushes whenever its source has nothing more to
//!   read); an **empty** binary message marks the end of the stream in that direction (our
//!   half-close: `shutdown` sends it, the reader returns EOF);
//! - two small tasks own the socket: a writer (our data, plus a ping every `wsping`, so an idle
//!   pooled connection keeps a proxy's read timeout from firing) and a reader (the peer's
//!   data; tungstenite answers pings by itself). Each direction has its own bounded queue, so a
//!   stalled reader never blocks the writer. They run on the tunnel's task tracker ([`Tasks`])
//!   and end with its stop token, so a stopped tunnel waits for them;
//! - a connection from which nothing (not even a pong) arrived for three ping intervals is dead;
//! - dropping a stream that ended normally (both directions half-closed) sends a WebSocket
//!   close; dropping it otherwise just closes the socket, and the peer reads that abrupt end as
//!   a reset, never as a complete stream.
//!
//! The handshake's channel binding is taken from the TLS session *under* the WebSocket before
//! the upgrade (see docs/protocol.md, "WebSocket").

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{self, HeaderValue, StatusCode, header};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::{CancellationToken, PollSender};
use tokio_util::task::TaskTracker;

use crate::config::{WebSocketOptions, WsBinding};
use crate::protocol::auth::BINDING_LEN;

use super::TunnelStream;
use super::gather::{self, Gather};

/// Largest WebSocket message (and frame) accepted from the peer. Our writes are at most the
/// relay's buffer (well under this).
pub(crate) const MAX_WS_MESSAGE: usize = 1 << 20;
/// Writes are gathered into messages of up to this many bytes: with the relay's 64 KiB writes,
/// four times fewer messages, queue hand-overs and frames than one message per write (the
/// profile of issue 15). Well under [`MAX_WS_MESSAGE`].
const SEND_CHUNK: usize = gather::AREA;
/// Messages queued per direction between a [`WsStream`] and its tasks. With the message the
/// writer task is copying into the WebSocket, fewer than [`gather::RING`] chunks are in
/// flight, as [`Gather`] needs to reuse their memory.
const QUEUE: usize = 2;
/// How long a normal close waits for the close frame to be written.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// A peer silent for this many ping intervals is dead.
const DEAD_AFTER_PINGS: u32 = 3;

/// Most bytes tungstenite reads from the connection per call, and its read buffer's first
/// size. Its default (128 KiB) is zero-filled before every read and allocated per WebSocket:
/// in the connect profile of issue 15 that `memset` took 9 % of the tunnel processes' CPU
/// (a 1-byte echo zero-filled 128 KiB on each of its reads), and it was most of a pooled
/// WebSocket's memory. 32 KiB still reads two TLS records' plaintext per call.
const READ_CHUNK: usize = 32 << 10;

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_WS_MESSAGE))
        .max_frame_size(Some(MAX_WS_MESSAGE))
        .read_buffer_size(READ_CHUNK)
}

/// Where a WebSocket's reader and writer tasks run: the tunnel's tracker; the tunnel's stop
/// token ends them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tasks<'a> {
    /// The tunnel's task tracker.
    pub(crate) tracker: &'a TaskTracker,
    /// The tunnel's stop token.
    pub(crate) stop: &'a CancellationToken,
}

/// A tunnel connection carried by one WebSocket (see the module doc).
#[derive(Debug)]
pub struct WsStream {
    incoming: mpsc::Receiver<io::Result<Bytes>>,
    /// Part of the last message not yet read.
    pending: Bytes,
    /// The peer's end-of-stream marker arrived.
    eof: bool,
    outgoing: PollSender<Bytes>,
    /// Written bytes not yet queued as a message (see [`SEND_CHUNK`]).
    out: Gather,
    /// Our end-of-stream marker was queued.
    shut: bool,
    shared: Arc<Shared>,
    /// A second handle on the TCP socket underneath (socket options, idle check).
    socket: socket2::Socket,
    binding: [u8; BINDING_LEN],
    tls: bool,
}

#[derive(Debug, Default)]
struct Shared {
    /// The WebSocket ended (close, error, dead peer).
    closed: AtomicBool,
    peer_eof: AtomicBool,
    our_eof: AtomicBool,
}

impl WsStream {
    /// Run the WebSocket protocol over `inner` (already upgraded), starting the reader and
    /// writer tasks on `tasks`. Must be called inside a tokio runtime.
    fn spawn(
        ws: WebSocketStream<TunnelStream>,
        socket: socket2::Socket,
        binding: [u8; BINDING_LEN],
        tls: bool,
        ping: Duration,
        tasks: Tasks<'_>,
    ) -> Self {
        let (sink, stream) = ws.split();
        let (in_tx, incoming) = mpsc::channel(QUEUE);
        let (out_tx, out_rx) = mpsc::channel(QUEUE);
        let shared = Arc::new(Shared::default());
        // Cancelled by either task when the WebSocket ends, or by the tunnel's stop.
        let done = tasks.stop.child_token();
        tasks
            .tracker
            .spawn(write_loop(sink, out_rx, ping, shared.clone(), done.clone()));
        tasks
            .tracker
            .spawn(read_loop(stream, in_tx, ping, shared.clone(), done));
        WsStream {
            incoming,
            pending: Bytes::new(),
            eof: false,
            outgoing: PollSender::new(out_tx),
            out: Gather::default(),
            shut: false,
            shared,
            socket,
            binding,
            tls,
        }
    }

    /// The TCP socket underneath.
    pub fn socket(&self) -> socket2::SockRef<'_> {
        socket2::SockRef::from(&self.socket)
    }

    /// The channel binding of the connection under the WebSocket (TLS exporter or zeros).
    pub fn channel_binding(&self) -> [u8; BINDING_LEN] {
        self.binding
    }

    /// True when the connection under the WebSocket is TLS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// Queue the held bytes as one message (nothing when none are held).
    fn poll_send_held(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.out.is_empty() {
            return Poll::Ready(Ok(()));
        }
        ready!(self.outgoing.poll_reserve(cx)).map_err(|_| closed())?;
        let msg = self.out.take();
        self.outgoing.send_item(msg).map_err(|_| closed())?;
        Poll::Ready(Ok(()))
    }

    /// True while the WebSocket is open and nothing unexpected arrived on the idle connection.
    pub fn is_idle_healthy(&self) -> bool {
        !self.shared.closed.load(Relaxed) && self.pending.is_empty() && self.incoming.is_empty()
    }
}

impl AsyncRead for WsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while this.pending.is_empty() {
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            match ready!(this.incoming.poll_recv(cx)) {
                Some(Ok(b)) if b.is_empty() => this.eof = true,
                Some(Ok(b)) => this.pending = b,
                Some(Err(e)) => return Poll::Ready(Err(e)),
                // The reader ended without an error or marker: treated as an abrupt end.
                None => return Poll::Ready(Err(abrupt())),
            }
        }
        let n = this.pending.len().min(buf.remaining());
        buf.put_slice(&this.pending.split_to(n));
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for WsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(done) = super::write_without_sending(this.shut, buf) {
            return Poll::Ready(done);
        }
        // Bounded: after queueing what is held, the next push has room.
        loop {
            if this.out.len() >= SEND_CHUNK {
                ready!(this.poll_send_held(cx))?;
            }
            let n = this.out.push(buf, SEND_CHUNK);
            if n > 0 {
                return Poll::Ready(Ok(n));
            }
            // The area is full short of a chunk (after earlier flushes): queue it.
            ready!(this.poll_send_held(cx))?;
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Queue what is held; the writer task flushes whenever its queue runs empty.
        self.get_mut().poll_send_held(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.shut {
            return Poll::Ready(Ok(()));
        }
        ready!(this.poll_send_held(cx))?;
        ready!(this.outgoing.poll_reserve(cx)).map_err(|_| closed())?;
        this.outgoing
            .send_item(Bytes::new())
            .map_err(|_| closed())?;
        this.shut = true;
        Poll::Ready(Ok(()))
    }
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "websocket closed")
}

fn abrupt() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionReset,
        "websocket closed before the end of the stream",
    )
}

/// Map a WebSocket error to an I/O error; an end without our end-of-stream marker is a reset.
fn to_io(e: tungstenite::Error) -> io::Error {
    use tungstenite::Error as E;
    match e {
        E::Io(e) => e,
        E::ConnectionClosed | E::AlreadyClosed => abrupt(),
        E::Protocol(tungstenite::error::ProtocolError::ResetWithoutClosingHandshake) => abrupt(),
        other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
    }
}

type Sink = futures_util::stream::SplitSink<WebSocketStream<TunnelStream>, Message>;
type Stream = futures_util::stream::SplitStream<WebSocketStream<TunnelStream>>;

async fn write_loop(
    mut sink: Sink,
    mut out: mpsc::Receiver<Bytes>,
    ping: Duration,
    shared: Arc<Shared>,
    done: CancellationToken,
) {
    let mut tick = tokio::time::interval(ping);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let res: Result<(), tungstenite::Error> = async {
        loop {
            tokio::select! {
                msg = out.recv() => {
                    let Some(mut msg) = msg else { break };
                    // Batch what is queued, then flush once.
                    loop {
                        if msg.is_empty() {
                            shared.our_eof.store(true, Relaxed);
                        }
                        sink.feed(Message::Binary(msg)).await?;
                        match out.try_recv() {
                            Ok(m) => msg = m,
                            Err(_) => break,
                        }
                    }
                    sink.flush().await?;
                    tick.reset();
                }
                _ = tick.tick() => sink.send(Message::Ping(Bytes::new())).await?,
                _ = done.cancelled() => return Ok(()),
            }
        }
        // The stream was dropped: a normal end closes the WebSocket politely.
        if shared.our_eof.load(Relaxed) && shared.peer_eof.load(Relaxed) {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.close()).await;
        }
        Ok(())
    }
    .await;
    if let Err(e) = res {
        tracing::debug!(error = %e, "websocket write ended");
    }
    shared.closed.store(true, Relaxed);
    done.cancel();
}

async fn read_loop(
    mut stream: Stream,
    incoming: mpsc::Sender<io::Result<Bytes>>,
    ping: Duration,
    shared: Arc<Shared>,
    done: CancellationToken,
) {
    let dead_after = ping * DEAD_AFTER_PINGS;
    let end = loop {
        let next = tokio::select! {
            _ = done.cancelled() => break None,
            r = tokio::time::timeout(dead_after, stream.next()) => r,
        };
        let item = match next {
            Err(_) => {
                break Some(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "websocket peer silent for three ping intervals",
                ));
            }
            Ok(None) => break Some(abrupt()),
            Ok(Some(Err(e))) => break Some(to_io(e)),
            Ok(Some(Ok(m))) => m,
        };
        match item {
            Message::Binary(b) => {
                if shared.peer_eof.load(Relaxed) {
                    if b.is_empty() {
                        continue;
                    }
                    break Some(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "websocket data after the end of the stream",
                    ));
                }
                if b.is_empty() {
                    shared.peer_eof.store(true, Relaxed);
                }
                // The stream may be gone already; keep reading for pings and the close.
                let _ = incoming.send(Ok(b)).await;
            }
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            Message::Close(_) => {
                if shared.peer_eof.load(Relaxed) {
                    break None;
                }
                break Some(abrupt());
            }
            Message::Text(_) => {
                break Some(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "text message on a websocket tunnel connection",
                ));
            }
        }
    };
    shared.closed.store(true, Relaxed);
    if let Some(e) = end {
        let _ = incoming.try_send(Err(e));
    }
    // Wait for the writer (a polite close needs the socket a moment longer).
    done.cancelled().await;
}

/// The Host header and path a client requests (`wshost`, `wspath`), for a tunnel address
/// `authority` (`host:port`).
fn client_request(authority: &str, opts: &WebSocketOptions) -> io::Result<Request> {
    let uri = format!("ws://{authority}{}", opts.path);
    let mut req = tungstenite::client::IntoClientRequest::into_client_request(uri.as_str())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    if let Some(host) = &opts.host {
        let v = HeaderValue::from_str(host)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        req.headers_mut().insert(header::HOST, v);
    }
    Ok(req)
}

/// The channel binding of a WebSocket over `stream`: the TLS exporter (zeros without TLS), or
/// zeros with `wsbind=0` (a proxy terminates the TLS; docs/protocol.md).
fn binding_for(stream: &TunnelStream, opts: &WebSocketOptions) -> io::Result<[u8; BINDING_LEN]> {
    match opts.binding {
        WsBinding::Tls => stream.channel_binding(),
        WsBinding::Off => Ok([0; BINDING_LEN]),
    }
}

/// Why an upgrade was refused, with what to check. A proxy that terminates TLS answers a plain
/// request with 400 (nginx: "The plain HTTP request was sent to HTTPS port").
fn upgrade_refused(status: StatusCode, tls: bool) -> io::Error {
    let hint = if status == StatusCode::BAD_REQUEST && !tls {
        "check wspath and wshost; if the proxy in front of the server expects https, add \
         wsbind=0 so this client speaks tls to it (docs/protocol.md, proxies that terminate tls)"
    } else {
        "check wspath and wshost"
    };
    io::Error::other(format!(
        "websocket upgrade refused with HTTP {status} ({hint})"
    ))
}

/// Client side: upgrade an established TCP or TLS stream to a WebSocket (`authority` is the
/// tunnel address as `host:port`, used when `wshost` is not set). The caller bounds it with a
/// timeout.
///
/// Cancel safety: safe; a dropped future drops the connection.
pub(crate) async fn connect(
    stream: TunnelStream,
    authority: &str,
    opts: &WebSocketOptions,
    tasks: Tasks<'_>,
) -> io::Result<TunnelStream> {
    let binding = binding_for(&stream, opts)?;
    let tls = stream.is_tls();
    let socket = stream.socket().try_clone()?;
    let req = client_request(authority, opts)?;
    let (ws, _resp) = tokio_tungstenite::client_async_with_config(req, stream, Some(ws_config()))
        .await
        .map_err(|e| match e {
            tungstenite::Error::Http(resp) => upgrade_refused(resp.status(), tls),
            other => to_io(other),
        })?;
    Ok(TunnelStream::Ws(Box::new(WsStream::spawn(
        ws, socket, binding, tls, opts.ping, tasks,
    ))))
}

/// Server side: answer the client's upgrade request on an accepted TCP or TLS stream. A
/// request for another path than `wspath` gets 404. The caller bounds it with a timeout.
///
/// Cancel safety: safe; a dropped future drops the connection.
pub(crate) async fn accept(
    stream: TunnelStream,
    opts: &WebSocketOptions,
    tasks: Tasks<'_>,
) -> io::Result<TunnelStream> {
    let binding = binding_for(&stream, opts)?;
    let tls = stream.is_tls();
    let socket = stream.socket().try_clone()?;
    let path = opts.path.clone();
    // The callback's signature is tungstenite's (its error is the HTTP response to send).
    #[allow(clippy::result_large_err)]
    let check = move |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        if req.uri().path() == path {
            return Ok(resp);
        }
        let mut err = http::Response::new(Some("not found".to_string()));
        *err.status_mut() = StatusCode::NOT_FOUND;
        Err(err)
    };
    let ws = tokio_tungstenite::accept_hdr_async_with_config(stream, check, Some(ws_config()))
        .await
        .map_err(to_io)?;
    Ok(TunnelStream::Ws(Box::new(WsStream::spawn(
        ws, socket, binding, tls, opts.ping, tasks,
    ))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    fn opts(path: &str) -> WebSocketOptions {
        WebSocketOptions {
            path: path.into(),
            ..WebSocketOptions::default()
        }
    }

    /// A client and a server WebSocket over loopback TCP; the client asks for `path`. Their
    /// tasks run on `tracker` until `stop`.
    async fn pair_on(
        path: &str,
        tracker: &TaskTracker,
        stop: &CancellationToken,
    ) -> (io::Result<TunnelStream>, io::Result<TunnelStream>) {
        let tasks = Tasks { tracker, stop };
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let server = async {
            let (tcp, _) = l.accept().await.unwrap();
            accept(TunnelStream::Plain(tcp), &opts("/tunnel"), tasks).await
        };
        let client = async {
            let tcp = TcpStream::connect(addr).await.unwrap();
            connect(
                TunnelStream::Plain(tcp),
                &addr.to_string(),
                &opts(path),
                tasks,
            )
            .await
        };
        let (c, s) = tokio::time::timeout(Duration::from_secs(10), async {
            tokio::join!(client, server)
        })
        .await
        .expect("handshake within 10 s");
        (c, s)
    }

    async fn pair(path: &str) -> (io::Result<TunnelStream>, io::Result<TunnelStream>) {
        pair_on(path, &TaskTracker::new(), &CancellationToken::new()).await
    }

    /// The reader and writer tasks are the tunnel's: its stop ends them (the tracker drains)
    /// and the streams read an abrupt end.
    #[tokio::test]
    async fn the_tunnels_stop_ends_the_tasks() {
        let (tracker, stop) = (TaskTracker::new(), CancellationToken::new());
        let (c, s) = pair_on("/tunnel", &tracker, &stop).await;
        let (mut c, _s) = (c.unwrap(), s.unwrap());
        assert_eq!(tracker.len(), 4, "two tasks per side");
        stop.cancel();
        tracker.close();
        tokio::time::timeout(Duration::from_secs(10), tracker.wait())
            .await
            .expect("the tasks end with the stop");
        let mut buf = [0u8; 1];
        let err = c.read(&mut buf).await.expect_err("no clean end");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");
        assert!(!c.is_idle_healthy());
    }

    #[tokio::test]
    async fn half_close_each_way_then_a_clean_end() {
        let (c, s) = pair("/tunnel").await;
        let (mut c, mut s) = (c.unwrap(), s.unwrap());
        assert!(c.is_idle_healthy() && s.is_idle_healthy());
        assert!(!c.is_tls());
        assert_eq!(c.channel_binding().unwrap(), [0u8; BINDING_LEN]);
        let big: Vec<u8> = (0..(3 << 20) as u32).map(|i| (i % 251) as u8).collect();
        let (big2, expect) = (big.clone(), big.clone());
        let writer = tokio::spawn(async move {
            c.write_all(&big2).await.unwrap();
            c.shutdown().await.unwrap();
            c
        });
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        assert!(got == expect, "bytes differ ({} read)", got.len());
        // The other direction is still open after the client's half-close.
        s.write_all(b"answer").await.unwrap();
        s.shutdown().await.unwrap();
        let mut c = writer.await.unwrap();
        let mut back = Vec::new();
        c.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"answer");
        assert!(
            c.write_all(b"late").await.is_err(),
            "no writes after shutdown"
        );
    }

    #[tokio::test]
    async fn an_end_without_the_marker_is_a_reset() {
        let (c, s) = pair("/tunnel").await;
        let (mut c, mut s) = (c.unwrap(), s.unwrap());
        c.write_all(b"partial").await.unwrap();
        c.flush().await.unwrap();
        // Give the writer task the message before the stream goes (bounded wait).
        let mut buf = [0u8; 7];
        s.read_exact(&mut buf).await.unwrap();
        drop(c);
        let mut rest = Vec::new();
        let err = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest))
            .await
            .expect("the end is noticed")
            .expect_err("a cut stream is an error, not an EOF");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");
        assert!(!s.is_idle_healthy());
    }

    #[tokio::test]
    async fn another_path_is_refused_with_404() {
        let (c, s) = pair("/other").await;
        let e = c.expect_err("refused");
        assert!(e.to_string().contains("404"), "{e}");
        assert!(s.is_err());
    }
}
