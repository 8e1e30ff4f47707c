//! Chunked sessions (issue 17): a TCP session on a reusable pool connection travels in
//! chunks, a big-endian length ([`Chunks::Narrow`]: 2 bytes, on TLS; [`Chunks::Wide`]: 4
//! bytes, on plain TCP) then that many bytes, and a zero length ends one direction (as a TCP
//! half-close would). [`Framed`] reads exactly up to the end of the session, never past it, so
//! once both directions ended the connection can carry the next `Open` instead of being closed
//! and replaced by a new connection and handshake. The layout is in `docs/protocol.md`
//! (reusable sessions). Plain connections normally take the spliced twin of this
//! (`super::splice::relay_chunked`); [`Framed`] carries them under a rate limit.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::protocol::Chunks;

/// Largest narrow chunk: with its 2-byte length, four full TLS records (64 KiB of payload),
/// so the relay's 64 KiB writes stay one write each (one flush to the socket) and a chunk
/// never spills a few bytes into a record of their own.
pub(crate) const CHUNK: usize = 64 * 1024 - 2;

/// Largest chunk of a kind.
fn most(chunks: Chunks) -> usize {
    match chunks {
        Chunks::Wide => u32::MAX as usize,
        _ => CHUNK,
    }
}

/// A chunk's length as it travels: the first [`Chunks::len_bytes`] bytes of the result.
pub(crate) fn length(chunks: Chunks, n: usize) -> [u8; 4] {
    match chunks {
        Chunks::Wide => (n as u32).to_be_bytes(),
        _ => {
            let [a, b] = (n as u16).to_be_bytes();
            [a, b, 0, 0]
        }
    }
}

/// Read a chunk's length from its first [`Chunks::len_bytes`] bytes.
pub(crate) fn parse_length(chunks: Chunks, hdr: [u8; 4]) -> usize {
    match chunks {
        Chunks::Wide => u32::from_be_bytes(hdr) as usize,
        _ => usize::from(u16::from_be_bytes([hdr[0], hdr[1]])),
    }
}

/// Append `data` to `out` as chunks of a kind (nothing when empty).
pub(crate) fn put_chunk(out: &mut BytesMut, chunks: Chunks, data: &[u8]) {
    let len_bytes = chunks.len_bytes();
    for piece in data.chunks(most(chunks)) {
        out.put_slice(&length(chunks, piece.len())[..len_bytes]);
        out.extend_from_slice(piece);
    }
}

#[derive(Debug, Clone, Copy)]
enum ReadState {
    Header { got: usize, hdr: [u8; 4] },
    Body(usize),
    Ended,
}

/// A stream carrying one session in chunks (see the module doc).
#[derive(Debug)]
pub(crate) struct Framed<S> {
    inner: S,
    prefix: BytesMut,
    chunks: Chunks,
    read: ReadState,
    /// The length of the chunk being written and how many of its bytes are out.
    hdr: ([u8; 4], usize),
    /// Bytes of the current chunk still to write after its length.
    owed: usize,
    /// The zero length that ends our direction is (being) written.
    ending: bool,
    /// A read error met after some bytes of a read: returned by the next read (a socket
    /// reports a reset once, so it must not be dropped).
    read_err: Option<io::Error>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Framed<S> {
    /// `prefix`: bytes already read from `inner` after the `Open`; `chunks`: narrow or wide
    /// (not [`Chunks::Off`]).
    pub(crate) fn new(inner: S, prefix: BytesMut, chunks: Chunks) -> Self {
        debug_assert_ne!(chunks, Chunks::Off);
        Framed {
            inner,
            prefix,
            chunks,
            read: ReadState::Header {
                got: 0,
                hdr: [0; 4],
            },
            hdr: ([0; 4], chunks.len_bytes()),
            owed: 0,
            ending: false,
            read_err: None,
        }
    }

    /// The stream underneath.
    pub(crate) fn get_ref(&self) -> &S {
        &self.inner
    }

    /// True when both directions ended cleanly: the connection can carry another session.
    pub(crate) fn reusable(&self) -> bool {
        matches!(self.read, ReadState::Ended) && self.ending && self.hdr_done()
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
        match ready!(Pin::new(&mut self.inner).poll_read(cx, &mut rb)) {
            Ok(()) => Poll::Ready(Ok(rb.filled().len())),
            // TLS says so for a connection that ended without `close_notify`: inside a
            // session, as for any end of the stream, that is a cut.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Poll::Ready(Ok(0)),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn hdr_done(&self) -> bool {
        self.hdr.1 == self.chunks.len_bytes()
    }

    /// Write what is left of the current length, and with it up to `owed` bytes of `data`
    /// (one vectored write: one TLS record for both). Returns the bytes of `data` written.
    fn poll_header(&mut self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let len_bytes = self.chunks.len_bytes();
        while self.hdr.1 < len_bytes {
            let (hdr, off) = self.hdr;
            let body = &data[..data.len().min(self.owed)];
            let bufs = [
                io::IoSlice::new(&hdr[off..len_bytes]),
                io::IoSlice::new(body),
            ];
            let n = ready!(Pin::new(&mut self.inner).poll_write_vectored(cx, &bufs))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            let in_hdr = n.min(len_bytes - off);
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
pub(crate) fn cut() -> io::Error {
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
        if let Some(e) = this.read_err.take() {
            return Poll::Ready(Err(e));
        }
        let start = buf.filled().len();
        loop {
            let got_some = buf.filled().len() > start;
            if got_some && buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            let step = match this.read {
                ReadState::Ended => return Poll::Ready(Ok(())),
                ReadState::Header { mut got, mut hdr } => {
                    let len_bytes = this.chunks.len_bytes();
                    match this.poll_raw(cx, &mut hdr[got..len_bytes]) {
                        Poll::Ready(Ok(0)) => Poll::Ready(Err(cut())),
                        Poll::Ready(Ok(n)) => {
                            got += n;
                            this.read = if got < len_bytes {
                                ReadState::Header { got, hdr }
                            } else {
                                match parse_length(this.chunks, hdr) {
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
                                    hdr: [0; 4],
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
                // What was read so far is returned; the error comes with the next call.
                Poll::Ready(Err(e)) if got_some => {
                    this.read_err = Some(e);
                    return Poll::Ready(Ok(()));
                }
                Poll::Pending if got_some => return Poll::Ready(Ok(())),
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
            let n = data.len().min(most(this.chunks));
            this.hdr = (length(this.chunks, n), 0);
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
            this.hdr = ([0; 4], 0);
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
        let mut fa = Framed::new(a, BytesMut::new(), Chunks::Narrow);
        b.write_all(&[0, 5, b'a', b'b']).await.unwrap();
        drop(b);
        let mut got = Vec::new();
        let err = fa.read_to_end(&mut got).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
        assert_eq!(got, b"ab");
        assert!(!fa.reusable());
    }

    /// A stream that answers reads from a script, then reports EOF (as a socket does after
    /// reporting a reset once); writes go nowhere.
    struct Script(std::collections::VecDeque<io::Result<Vec<u8>>>);

    impl AsyncRead for Script {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            match self.0.pop_front() {
                Some(Ok(mut bytes)) => {
                    // What does not fit comes with the next read.
                    let rest = bytes.split_off(bytes.len().min(buf.remaining()));
                    buf.put_slice(&bytes);
                    if !rest.is_empty() {
                        self.0.push_front(Ok(rest));
                    }
                    Poll::Ready(Ok(()))
                }
                Some(Err(e)) => Poll::Ready(Err(e)),
                None => Poll::Ready(Ok(())),
            }
        }
    }

    impl AsyncWrite for Script {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            b: &[u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Ready(Ok(b.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// A reset reported (once) in the middle of a read reaches the reader after the bytes
    /// before it, not as the end of the stream that the socket reports afterwards.
    #[tokio::test]
    async fn a_reset_after_some_bytes_is_kept_for_the_next_read() {
        let script = Script(
            [
                Ok(vec![0, 4, b'a', b'b']),
                Err(io::ErrorKind::ConnectionReset.into()),
            ]
            .into(),
        );
        let mut f = Framed::new(script, BytesMut::new(), Chunks::Narrow);
        let mut buf = [0u8; 16];
        assert_eq!(f.read(&mut buf).await.unwrap(), 2);
        let err = f.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    }

    /// TLS reports a connection that ended without `close_notify` as `UnexpectedEof`: inside a
    /// session that is a cut like any other end (an abort, passed on as a reset).
    #[tokio::test]
    async fn an_unexpected_eof_inside_a_session_is_a_cut() {
        let eof = io::Error::new(io::ErrorKind::UnexpectedEof, "no close_notify");
        let script = Script([Ok(vec![0, 0, 0, 9, b'x']), Err(eof)].into());
        let mut f = Framed::new(script, BytesMut::new(), Chunks::Wide);
        let mut got = Vec::new();
        let err = f.read_to_end(&mut got).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
        assert_eq!(got, b"x");
    }

    /// Ending a direction inside a chunk whose length is out would leave the peer waiting
    /// for bytes that never come: refused. Nothing may be written after the end.
    #[tokio::test]
    async fn no_end_inside_a_chunk_and_no_write_after_the_end() {
        let (a, mut b) = tokio::io::duplex(8);
        let mut fa = Framed::new(a, BytesMut::new(), Chunks::Narrow);
        // The pipe takes 8 bytes: the length and 6 of the 100 announced.
        assert_eq!(fa.write(&[7u8; 100]).await.unwrap(), 6);
        let err = fa.shutdown().await.unwrap_err();
        assert!(err.to_string().contains("inside a chunk"), "{err}");
        let mut head = [0u8; 8];
        b.read_exact(&mut head).await.unwrap();
        assert_eq!(&head[..2], &[0, 100]);
        // A direction ended cleanly takes no more writes.
        let (c, _d) = tokio::io::duplex(64);
        let mut fc = Framed::new(c, BytesMut::new(), Chunks::Narrow);
        fc.write_all(b"x").await.unwrap();
        fc.shutdown().await.unwrap();
        let err = fc.write(b"y").await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }

    /// Both kinds of chunk: a session larger than a narrow chunk goes through, both ends see
    /// the other's end, and the stream carries on after it unread.
    #[tokio::test]
    async fn both_directions_end_and_the_stream_carries_on() {
        for chunks in [Chunks::Narrow, Chunks::Wide] {
            carry_and_reuse(chunks).await;
        }
    }

    async fn carry_and_reuse(chunks: Chunks) {
        let (a, b) = tokio::io::duplex(64);
        let (mut fa, mut fb) = (
            Framed::new(a, BytesMut::new(), chunks),
            Framed::new(b, BytesMut::new(), chunks),
        );
        let data: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let d2 = data.clone();
        let w = tokio::spawn(async move {
            // One write larger than a narrow chunk.
            let mut left = &d2[..];
            while !left.is_empty() {
                let n = fa.write(left).await.unwrap();
                left = &left[n..];
            }
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
        assert!(got == data, "{chunks:?}: bytes differ");
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

    #[test]
    fn lengths_are_big_endian_of_their_width() {
        let mut out = BytesMut::new();
        put_chunk(&mut out, Chunks::Wide, b"abc");
        put_chunk(&mut out, Chunks::Narrow, b"de");
        assert_eq!(&out[..], b"\0\0\0\x03abc\0\x02de");
        assert_eq!(parse_length(Chunks::Wide, [0, 1, 0, 2]), 65538);
        assert_eq!(parse_length(Chunks::Narrow, [1, 2, 9, 9]), 258);
    }
}
