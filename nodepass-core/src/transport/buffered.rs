//! [`BufferedTcp`]: the TCP stream under TLS, with a read buffer borrowed only while it holds
//! data.
//!
//! rustls reads at most 4 KiB per call into its record deframer (a fixed `READ_SIZE` in
//! rustls 0.23), so below TLS every full 16 KiB record took four or five `recv(2)` calls, each a
//! trip through tokio's readiness check. Here one `recv` of up to [`READ_BUFFER`] bytes fills a
//! buffer the following small reads are served from. The buffer comes from a small per-thread
//! cache when a read finds the socket with data and goes back as soon as it is drained, so an
//! idle connection holds none (a pool of thousands of idle TLS connections costs no more
//! memory than before). Writes go straight to the socket (rustls already writes whole records,
//! vectored).

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Size of the read buffer: up to sixteen full TLS records per `recv` (against 64 KiB, part of
/// the 13-25 % more TLS bulk measured with the relay's 256 KiB buffers, docs/benchmarks.md).
pub(crate) const READ_BUFFER: usize = 256 * 1024;

/// Idle read buffers kept per thread for reuse (at most 2 MiB).
const BUFFER_CACHE: usize = 8;

thread_local! {
    /// Free read buffers; only touched by the owning thread, never across `.await`.
    static BUFFERS: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

fn take_buffer() -> Box<[u8]> {
    BUFFERS
        .with(|c| c.borrow_mut().pop())
        .unwrap_or_else(|| vec![0u8; READ_BUFFER].into_boxed_slice())
}

fn give_buffer(b: Box<[u8]>) {
    BUFFERS.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() < BUFFER_CACHE {
            c.push(b);
        }
    });
}

/// A TCP stream whose reads go through a lazily borrowed buffer (see the module doc).
#[derive(Debug)]
pub struct BufferedTcp {
    tcp: TcpStream,
    /// Received and not yet handed out: `buf[pos..cap]`. `None` when empty.
    buf: Option<Box<[u8]>>,
    pos: usize,
    cap: usize,
}

impl BufferedTcp {
    /// Wrap a connected stream.
    pub fn new(tcp: TcpStream) -> Self {
        BufferedTcp {
            tcp,
            buf: None,
            pos: 0,
            cap: 0,
        }
    }

    /// The TCP stream (for socket options and peeks; bytes already buffered are not seen there).
    pub fn get_ref(&self) -> &TcpStream {
        &self.tcp
    }

    /// Register the socket with the current runtime (it was made on another one, the pool
    /// maintenance thread's): a duplicate descriptor is registered here and the old one is
    /// deregistered from its runtime and closed. Buffered bytes stay.
    pub(crate) fn rebind(&mut self) -> io::Result<()> {
        #[cfg(unix)]
        {
            let fd = std::os::fd::AsFd::as_fd(&self.tcp).try_clone_to_owned()?;
            let here = TcpStream::from_std(std::net::TcpStream::from(fd))?;
            // The old stream is dropped: deregistered from its runtime, its descriptor closed.
            self.tcp = here;
            Ok(())
        }
        #[cfg(not(unix))]
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }

    /// Bytes received and not yet read.
    pub fn buffered(&self) -> usize {
        self.cap - self.pos
    }

    fn release(&mut self) {
        if let Some(b) = self.buf.take() {
            give_buffer(b);
        }
        self.pos = 0;
        self.cap = 0;
    }
}

impl Drop for BufferedTcp {
    fn drop(&mut self) {
        self.release();
    }
}

impl AsyncRead for BufferedTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.buf.is_none() {
            if out.remaining() >= READ_BUFFER {
                // As large as the buffer: no gain in copying through it.
                return Pin::new(&mut this.tcp).poll_read(cx, out);
            }
            let mut buf = take_buffer();
            let mut rb = ReadBuf::new(&mut buf);
            match Pin::new(&mut this.tcp).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) if !rb.filled().is_empty() => {
                    this.cap = rb.filled().len();
                    this.pos = 0;
                    this.buf = Some(buf);
                }
                other => {
                    // Pending, EOF or an error: nothing kept.
                    give_buffer(buf);
                    return other;
                }
            }
        }
        let Some(buf) = this.buf.as_ref() else {
            return Poll::Ready(Ok(()));
        };
        let n = out.remaining().min(this.cap - this.pos);
        out.put_slice(&buf[this.pos..this.pos + n]);
        this.pos += n;
        if this.pos == this.cap {
            this.release();
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for BufferedTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn pair() -> (BufferedTcp, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (a, b) = tokio::join!(TcpStream::connect(l.local_addr().unwrap()), l.accept());
        (BufferedTcp::new(a.unwrap()), b.unwrap().0)
    }

    /// Small reads get every byte in order, from fewer socket reads; the buffer is given back
    /// once drained, and EOF comes through.
    #[tokio::test]
    async fn small_reads_are_byte_exact_and_the_buffer_is_released() {
        let (mut r, mut w) = pair().await;
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            w.write_all(&sent).await.unwrap();
            w.shutdown().await.unwrap();
        });
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        let mut held_data = false;
        for _ in 0..1_000_000 {
            let n = r.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            held_data |= r.buffered() > 0;
            got.extend_from_slice(&chunk[..n]);
        }
        writer.await.unwrap();
        assert_eq!(got.len(), data.len());
        assert!(got == data, "bytes differ");
        assert!(
            held_data,
            "reads smaller than a socket read were served from the buffer"
        );
        assert_eq!(r.buffered(), 0);
        assert!(r.buf.is_none(), "a drained buffer is given back");
    }

    /// Writes and a reader's view in the other direction pass through unchanged.
    #[tokio::test]
    async fn writes_pass_through() {
        let (mut b, mut plain) = pair().await;
        b.write_all(b"hello").await.unwrap();
        b.shutdown().await.unwrap();
        let mut got = Vec::new();
        plain.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hello");
        // A read with room for the whole buffer goes straight to the socket.
        plain.write_all(b"abc").await.unwrap();
        drop(plain);
        let mut big = vec![0u8; READ_BUFFER];
        let mut n = 0;
        for _ in 0..100 {
            match b.read(&mut big[n..]).await.unwrap() {
                0 => break,
                k => n += k,
            }
            assert!(b.buf.is_none(), "read straight into the caller's buffer");
        }
        assert_eq!(&big[..n], b"abc");
    }
}
