//! Chunked sessions (issue 17): a TCP session on a reusable TLS pool connection travels in
//! chunks, `u16` big-endian length then that many bytes, and a zero length ends one
//! direction (as a TCP half-close would). [`Framed`] reads exactly up to the end of the
//! session, never past it, so once both directions ended the connection can carry the next
//! `Open` instead of being closed and replaced by a new TLS handshake. The layout is in
//! `docs/protocol.md` (reusable sessions).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Largest chunk: with its 2-byte length, four full TLS records (64 KiB of payload), so the
/// relay's 64 KiB writes stay one write each (one flush to the socket) and a chunk never
/// spills a few bytes into a record of their own.
const CHUNK: usize = 64 * 1024 - 2;

/// Append `data` to `out` as chunks of at most [`CHUNK`] bytes (nothing when empty).
pub(crate) fn put_chunk(out: &mut BytesMut, data: &[u8]) {
    for piece in data.chunks(CHUNK) {
        out.put_u16(piece.len() as u16);
        out.extend_from_slice(piece);
    }
}

#[derive(Debug, Clone, Copy)]
enum ReadState {
    Header { got: usize, hdr: [u8; 2] },
    Body(usize),
    Ended,
}

/// A stream carrying one session in chunks (see the module doc).
#[derive(Debug)]
pub(crate) struct Framed<S> {
    inner: S,
    prefix: BytesMut,
    read: ReadState,
    /// The length of the chunk being written and how many of its two bytes are out.
    hdr: ([u8; 2], usize),
    /// Bytes of the current chunk still to write after its length.
    owed: usize,
    /// The zero length that ends our direction is (being) written.
    ending: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Framed<S> {
    /// `prefix`: bytes already read from `inner` after the `Open`.
    pub(crate) fn new(inner: S, prefix: BytesMut) -> Self {
        Framed {
            inner,
            prefix,
            read: ReadState::Header {
                got: 0,
                hdr: [0; 2],
            },
            hdr: ([0; 2], 2),
            owed: 0,
            ending: false,
        }
    }

    /// The stream underneath.
    pub(crate) fn get_ref(&self) -> &S {
        &self.inner
    }

    /// True when both directions ended cleanly: the connection can carry another session.
    pub(crate) fn reusable(&self) -> bool {
        matches!(self.read, ReadState::Ended) && self.ending && self.hdr.1 == 2
    }

    /// The stream and the bytes read past the session's end (none unless the peer misbehaved).
    pub(crate) fn into_parts(self) -> (S, BytesMut) {
        (self.inner, self.prefix)
    }

    /// Read into `dst` from the prefix first, then from the stream.
    fn poll_raw(&mut self, cx: &mut Context<'_>, dst: &mut [u8]) -> Poll<io::Result<usize>> {
        if !self.prefix.is_empty() {
            let n = dst.len().min(self.prefix.len());
            dst[..n].copy_from_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(n));
        }
        let mut rb = ReadBuf::new(dst);
        ready!(Pin::new(&mut self.inner).poll_read(cx, &mut rb))?;
        Poll::Ready(Ok(rb.filled().len()))
    }

    /// Write what is left of the current length, and with it up to `owed` bytes of `data`
    /// (one vectored write: one TLS record for both). Returns the bytes of `data` written.
    fn poll_header(&mut self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        while self.hdr.1 < 2 {
            let (hdr, off) = self.hdr;
            let body = &data[..data.len().min(self.owed)];
            let bufs = [io::IoSlice::new(&hdr[off..]), io::IoSlice::new(body)];
            let n = ready!(Pin::new(&mut self.inner).poll_write_vectored(cx, &bufs))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            let in_hdr = n.min(2 - off);
            self.hdr.1 += in_hdr;
            let in_body = n - in_hdr;
            self.owed -= in_body;
            if in_body > 0 {
                return Poll::Ready(Ok(in_body));
            }
        }
        Poll::Ready(Ok(0))
    }
}
/// The connection ended without the session's end: the session was cut, and the relay passes
/// that on as a reset (an abort), never as a complete stream.
fn cut() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "the tunnel connection ended before the session's end",
    )
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Framed<S> {
    /// Fills `buf` across as many chunks as are ready (the relay's reads stay as large as on a
    /// raw stream), stopping at the session's end.
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let start = buf.filled().len();
        loop {
            let got_some = buf.filled().len() > start;
            if got_some && buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            let step = match this.read {
                ReadState::Ended => return Poll::Ready(Ok(())),
                ReadState::Header { mut got, mut hdr } => {
                    match this.poll_raw(cx, &mut hdr[got..]) {
                        Poll::Ready(Ok(0)) => Poll::Ready(Err(cut())),
                        Poll::Ready(Ok(n)) => {
                            got += n;
                            this.read = if got < 2 {
                                ReadState::Header { got, hdr }
                            } else {
                                match u16::from_be_bytes(hdr) as usize {
                                    0 => ReadState::Ended,
                                    len => ReadState::Body(len),
                                }
                            };
                            Poll::Ready(Ok(()))
                        }
                        other => other.map_ok(|_| ()),
                    }
                }
                ReadState::Body(rem) => {
                    let want = rem.min(buf.remaining());
                    let dst = buf.initialize_unfilled_to(want);
                    match this.poll_raw(cx, dst) {
                        Poll::Ready(Ok(0)) => Poll::Ready(Err(cut())),
                        Poll::Ready(Ok(n)) => {
                            buf.advance(n);
                            this.read = if rem == n {
                                ReadState::Header {
                                    got: 0,
                                    hdr: [0; 2],
                                }
                            } else {
                                ReadState::Body(rem - n)
                            };
                            Poll::Ready(Ok(()))
                        }
                        other => other.map_ok(|_| ()),
                    }
                }
            };
            match step {
                Poll::Ready(Ok(())) => {}
                // What was read so far is returned; the error or the wait comes next call.
                _ if got_some => return Poll::Ready(Ok(())),
                other => return other,
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Framed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.ending {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if this.owed == 0 {
            // A new chunk: its length travels with its bytes.
            let n = data.len().min(CHUNK);
            this.hdr = ((n as u16).to_be_bytes(), 0);
            this.owed = n;
        }
        let n = ready!(this.poll_header(cx, data))?;
        if n > 0 {
            return Poll::Ready(Ok(n));
        }
        // The length is out: the rest of the chunk's bytes.
        let want = data.len().min(this.owed);
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, &data[..want]))?;
        this.owed -= n;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    /// Ends our direction with a zero length (the stream underneath stays open).
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.owed > 0 {
            return Poll::Ready(Err(io::Error::other(
                "session ended inside a chunk it announced",
            )));
        }
        if !this.ending {
            this.ending = true;
            this.hdr = ([0; 2], 0);
        }
        ready!(this.poll_header(cx, &[]))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A connection that closes before the session's end is an abort, not an end of data.
    #[tokio::test]
    async fn a_cut_session_is_an_abort() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut fa = Framed::new(a, BytesMut::new());
        b.write_all(&[0, 5, b'a', b'b']).await.unwrap();
        drop(b);
        let mut got = Vec::new();
        let err = fa.read_to_end(&mut got).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
        assert_eq!(got, b"ab");
        assert!(!fa.reusable());
    }

    #[tokio::test]
    async fn both_directions_end_and_the_stream_carries_on() {
        let (a, b) = tokio::io::duplex(64);
        let (mut fa, mut fb) = (
            Framed::new(a, BytesMut::new()),
            Framed::new(b, BytesMut::new()),
        );
        let data: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let d2 = data.clone();
        let w = tokio::spawn(async move {
            fa.write_all(&d2).await.unwrap();
            fa.shutdown().await.unwrap();
            let mut got = Vec::new();
            fa.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"back");
            assert!(fa.reusable());
            let (mut s, _) = fa.into_parts();
            s.write_all(b"next").await.unwrap();
        });
        let mut got = Vec::new();
        fb.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, data);
        fb.write_all(b"back").await.unwrap();
        fb.shutdown().await.unwrap();
        assert!(fb.reusable());
        w.await.unwrap();
        let (mut s, rest) = fb.into_parts();
        assert!(rest.is_empty());
        let mut next = [0u8; 4];
        s.read_exact(&mut next).await.unwrap();
        assert_eq!(&next, b"next");
    }
}
