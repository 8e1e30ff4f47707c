//! Tunnel transports: one stream type over plain TCP, TLS 1.3, a WebSocket, an HTTP/2 stream
//! or a QUIC stream, plus socket helpers.
//!
//! [`TunnelStream`] is what the handshake, the pool and the relay work with, whatever carries it.
//! [`tls`] builds the server and client TLS configurations (self-signed, certificate files with
//! live reload, verification modes). `ws` carries a tunnel connection in a WebSocket
//! (`type=2`) over either of them; `http2` carries many in one TLS connection, one HTTP/2
//! stream each (`type=3`); `quic` carries many in one QUIC connection over UDP, one
//! bidirectional stream each (`type=1`). Under TLS the TCP stream is a [`BufferedTcp`] (larger
//! socket reads than rustls asks for).

mod buffered;
mod gather;
pub(crate) mod http2;
pub mod net;
pub(crate) mod quic;
pub mod tls;
mod tls_hint;
pub(crate) mod ws;

pub use buffered::BufferedTcp;
pub(crate) use tls_hint::Explained;

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::protocol::Chunks;
use crate::protocol::auth::{BINDING_LEN, EXPORTER_LABEL};

/// A tunnel connection: plain TCP, TLS over TCP, or a WebSocket over either, on either side.
#[derive(Debug)]
pub enum TunnelStream {
    /// Plain TCP (`tls=0`).
    Plain(TcpStream),
    /// TLS, client side.
    ClientTls(Box<tokio_rustls::client::TlsStream<BufferedTcp>>),
    /// TLS, server side.
    ServerTls(Box<tokio_rustls::server::TlsStream<BufferedTcp>>),
    /// A WebSocket (`type=2`) over one of the above, either side.
    Ws(Box<ws::WsStream>),
    /// An HTTP/2 stream (`type=3`) in a TLS connection shared with other streams, either side.
    H2(Box<http2::H2Stream>),
    /// A QUIC stream (`type=1`) in a QUIC connection shared with other streams, either side.
    Quic(Box<quic::QuicStream>),
}

impl TunnelStream {
    /// The socket underneath (for socket options; shared with other streams for
    /// [`TunnelStream::H2`]; the endpoint's UDP socket for [`TunnelStream::Quic`]).
    pub fn socket(&self) -> socket2::SockRef<'_> {
        match self {
            TunnelStream::Plain(s) => socket2::SockRef::from(s),
            TunnelStream::ClientTls(s) => socket2::SockRef::from(s.get_ref().0.get_ref()),
            TunnelStream::ServerTls(s) => socket2::SockRef::from(s.get_ref().0.get_ref()),
            TunnelStream::Ws(s) => s.socket(),
            TunnelStream::H2(s) => s.socket(),
            TunnelStream::Quic(s) => s.socket(),
        }
    }

    /// The TCP socket underneath when this stream alone uses it (`None` for an HTTP/2 or QUIC
    /// stream, whose socket carries other streams).
    pub fn exclusive_socket(&self) -> Option<socket2::SockRef<'_>> {
        match self {
            TunnelStream::H2(_) | TunnelStream::Quic(_) => None,
            _ => Some(self.socket()),
        }
    }

    /// Make the coming close a reset (`SO_LINGER` 0) rather than an orderly FIN, so the peer
    /// learns that the stream was cut, not completed. Best effort. An HTTP/2 or QUIC stream
    /// needs nothing: dropped before both directions ended, it is reset (`RST_STREAM`,
    /// `RESET_STREAM`).
    pub fn abort_on_close(&self) {
        if let Some(s) = self.exclusive_socket() {
            let _ = s.set_linger(Some(std::time::Duration::ZERO));
        }
    }

    /// How this connection would carry chunked sessions one after another
    /// (`docs/protocol.md`, reusable sessions): a TLS or WebSocket one of its own in narrow
    /// chunks, a plain TCP one in wide chunks (spliced), a stream sharing its connection
    /// (HTTP/2, QUIC: a new stream costs no handshake) not at all.
    pub fn chunks(&self) -> Chunks {
        match self {
            TunnelStream::Plain(_) => Chunks::Wide,
            TunnelStream::ClientTls(_) | TunnelStream::ServerTls(_) | TunnelStream::Ws(_) => {
                Chunks::Narrow
            }
            TunnelStream::H2(_) | TunnelStream::Quic(_) => Chunks::Off,
        }
    }

    /// True when the stream runs inside TLS.
    pub fn is_tls(&self) -> bool {
        match self {
            TunnelStream::Plain(_) => false,
            TunnelStream::Ws(s) => s.is_tls(),
            TunnelStream::ClientTls(_)
            | TunnelStream::ServerTls(_)
            | TunnelStream::H2(_)
            | TunnelStream::Quic(_) => true,
        }
    }

    /// The channel binding for the handshake proofs: the TLS exporter value of this TLS
    /// session (under the WebSocket for `type=2`, of the carrier for `type=1` and `type=3`), or
    /// zeros on plain TCP.
    pub fn channel_binding(&self) -> io::Result<[u8; BINDING_LEN]> {
        let out = [0u8; BINDING_LEN];
        let res = match self {
            TunnelStream::Plain(_) => return Ok(out),
            TunnelStream::Ws(s) => return Ok(s.channel_binding()),
            TunnelStream::H2(s) => return Ok(s.channel_binding()),
            TunnelStream::Quic(s) => return Ok(s.channel_binding()),
            TunnelStream::ClientTls(s) => {
                s.get_ref()
                    .1
                    .export_keying_material(out, EXPORTER_LABEL, None)
            }
            TunnelStream::ServerTls(s) => {
                s.get_ref()
                    .1
                    .export_keying_material(out, EXPORTER_LABEL, None)
            }
        };
        res.map_err(io::Error::other)
    }

    /// Register the socket with the current runtime: for a TCP or TLS stream made on another
    /// runtime (the pool maintenance thread's, `tunnel::background`). Other transports are
    /// never made there and are returned as they are.
    pub(crate) fn rebind(self) -> io::Result<Self> {
        Ok(match self {
            TunnelStream::Plain(s) => TunnelStream::Plain(TcpStream::from_std(s.into_std()?)?),
            TunnelStream::ClientTls(mut s) => {
                s.get_mut().0.rebind()?;
                TunnelStream::ClientTls(s)
            }
            TunnelStream::ServerTls(mut s) => {
                s.get_mut().0.rebind()?;
                TunnelStream::ServerTls(s)
            }
            other => other,
        })
    }

    /// True when the idle connection looks usable: the peer has neither closed it nor sent
    /// anything unexpected. Never blocks (a non-blocking `MSG_PEEK` on the socket).
    pub fn is_idle_healthy(&self) -> bool {
        match self {
            TunnelStream::Ws(s) => return s.is_idle_healthy(),
            TunnelStream::H2(s) => return s.is_idle_healthy(),
            // Bytes already read below TLS count as data on the idle connection too.
            TunnelStream::ClientTls(s) if s.get_ref().0.buffered() > 0 => return false,
            TunnelStream::ServerTls(s) if s.get_ref().0.buffered() > 0 => return false,
            TunnelStream::Quic(s) => return s.is_idle_healthy(),
            _ => {}
        }
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 1];
        match self.socket().peek(&mut buf) {
            // Data on an idle pool connection (a TLS close_notify, a stray byte) or EOF both
            // mean it must not carry a new session.
            Ok(_) => false,
            Err(e) => e.kind() == io::ErrorKind::WouldBlock,
        }
    }
}

impl AsyncRead for TunnelStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            TunnelStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            TunnelStream::ClientTls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            TunnelStream::ServerTls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            TunnelStream::Ws(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            TunnelStream::H2(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            TunnelStream::Quic(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for TunnelStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            TunnelStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            TunnelStream::ClientTls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            TunnelStream::ServerTls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            TunnelStream::Ws(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            TunnelStream::H2(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            TunnelStream::Quic(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            TunnelStream::Plain(s) => Pin::new(s).poll_flush(cx),
            TunnelStream::ClientTls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            TunnelStream::ServerTls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            TunnelStream::Ws(s) => Pin::new(s.as_mut()).poll_flush(cx),
            TunnelStream::H2(s) => Pin::new(s.as_mut()).poll_flush(cx),
            TunnelStream::Quic(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            TunnelStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            TunnelStream::ClientTls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            TunnelStream::ServerTls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            TunnelStream::Ws(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            TunnelStream::H2(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            TunnelStream::Quic(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            TunnelStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            TunnelStream::ClientTls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            TunnelStream::ServerTls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            TunnelStream::Ws(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            TunnelStream::H2(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            TunnelStream::Quic(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            TunnelStream::Plain(s) => s.is_write_vectored(),
            TunnelStream::ClientTls(s) => s.is_write_vectored(),
            TunnelStream::ServerTls(s) => s.is_write_vectored(),
            TunnelStream::Ws(s) => s.is_write_vectored(),
            TunnelStream::H2(s) => s.is_write_vectored(),
            TunnelStream::Quic(s) => s.is_write_vectored(),
        }
    }
}

/// What a message-based stream's (WebSocket, HTTP/2) `poll_write` answers without sending
/// anything: an error once the stream was shut down, 0 for an empty buffer; `None` when the
/// write must go through.
fn write_without_sending(shut: bool, buf: &[u8]) -> Option<io::Result<usize>> {
    if shut {
        Some(Err(io::Error::new(
            io::ErrorKind::BrokenPipe,
            "write after shutdown",
        )))
    } else if buf.is_empty() {
        Some(Ok(0))
    } else {
        None
    }
}

/// Checks every multiplexed stream transport (HTTP/2, QUIC) must pass, shared by their unit
/// tests.
#[cfg(test)]
pub(crate) mod stream_checks {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::TunnelStream;
    use crate::protocol::auth::BINDING_LEN;

    /// How long any one step may take.
    pub(crate) const T: Duration = Duration::from_secs(10);

    /// The next stream the server side accepted.
    pub(crate) async fn next(
        rx: &mut tokio::sync::mpsc::UnboundedReceiver<TunnelStream>,
    ) -> TunnelStream {
        tokio::time::timeout(T, rx.recv()).await.unwrap().unwrap()
    }

    /// `a` (which has sent `b"x"`, how the far side learned of the stream) and its far end `b`:
    /// both inside TLS with one binding; 5 MiB then a half-close from `a` arrive byte-exact,
    /// `b` answers and half-closes, and `a` can no longer write after its shutdown.
    pub(crate) async fn half_close_each_way(mut a: TunnelStream, mut b: TunnelStream) {
        assert!(a.is_tls() && b.is_tls());
        assert_eq!(a.channel_binding().unwrap(), b.channel_binding().unwrap());
        assert_ne!(a.channel_binding().unwrap(), [0u8; BINDING_LEN]);
        let big: Vec<u8> = (0..(5 << 20) as u32).map(|i| (i % 251) as u8).collect();
        let expect = big.clone();
        let writer = tokio::spawn(async move {
            a.write_all(&big).await.unwrap();
            a.shutdown().await.unwrap();
            a
        });
        let mut got = Vec::new();
        tokio::time::timeout(T, b.read_to_end(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got[0], b'x');
        assert!(got[1..] == expect[..], "bytes differ ({} read)", got.len());
        b.write_all(b"answer").await.unwrap();
        b.shutdown().await.unwrap();
        let mut a = writer.await.unwrap();
        let mut back = Vec::new();
        tokio::time::timeout(T, a.read_to_end(&mut back))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(back, b"answer");
        assert!(
            a.write_all(b"late").await.is_err(),
            "no writes after shutdown"
        );
    }
}
