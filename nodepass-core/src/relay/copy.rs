//! Bidirectional buffered copy whose buffers are borrowed only while data moves.
//!
//! Like `tokio::io::copy_bidirectional`, but a direction takes its [`RELAY_BUFFER`]-sized buffer
//! from a small per-thread pool when it polls for data and gives it back as soon as the read
//! would block with nothing left to write. Idle sessions (the common case with thousands of
//! tunneled connections) therefore hold no relay buffer, while a busy direction keeps its buffer
//! across consecutive reads and never allocates per chunk. EOF on one side becomes a shutdown of
//! the other side's write half after a flush (half-close).

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::RELAY_BUFFER;

/// Idle buffers kept per thread for reuse (at most 4 MiB).
const BUFFER_CACHE: usize = 16;

thread_local! {
    /// Free relay buffers; only touched by the owning thread, never across `.await`.
    static BUFFERS: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

#[cfg(test)]
thread_local! {
    /// Buffers borrowed and not yet given back on this thread (tests only).
    static OUTSTANDING: std::cell::Cell<isize> = const { std::cell::Cell::new(0) };
}

fn take_buffer() -> Box<[u8]> {
    #[cfg(test)]
    OUTSTANDING.with(|o| o.set(o.get() + 1));
    BUFFERS
        .with(|c| c.borrow_mut().pop())
        .unwrap_or_else(|| vec![0u8; RELAY_BUFFER].into_boxed_slice())
}

fn give_buffer(b: Box<[u8]>) {
    #[cfg(test)]
    OUTSTANDING.with(|o| o.set(o.get() - 1));
    BUFFERS.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() < BUFFER_CACHE {
            c.push(b);
        }
    });
}

/// The state of one direction.
#[derive(Default)]
struct Direction {
    buf: Option<Box<[u8]>>,
    pos: usize,
    cap: usize,
    amt: u64,
    read_done: bool,
    /// A read error met while topping up a buffer that already held data: reported once
    /// that data is written (the bytes before a cut still reach the far side).
    read_err: Option<io::Error>,
    need_flush: bool,
    done: bool,
}

impl Direction {
    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut reader: Pin<&mut R>,
        mut writer: Pin<&mut W>,
    ) -> Poll<io::Result<u64>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        loop {
            if self.pos == self.cap
                && let Some(e) = self.read_err.take()
            {
                return Poll::Ready(Err(e));
            }
            if self.pos == self.cap && !self.read_done {
                let mut buf = self.buf.take().unwrap_or_else(take_buffer);
                let mut rb = ReadBuf::new(&mut buf);
                match reader.as_mut().poll_read(cx, &mut rb) {
                    Poll::Pending => {
                        // Nothing to read and nothing left to write: release the buffer.
                        give_buffer(buf);
                        if self.need_flush {
                            ready!(writer.as_mut().poll_flush(cx))?;
                            self.need_flush = false;
                        }
                        return Poll::Pending;
                    }
                    Poll::Ready(Err(e)) => {
                        give_buffer(buf);
                        return Poll::Ready(Err(e));
                    }
                    Poll::Ready(Ok(())) => {
                        let n = rb.filled().len();
                        if n == 0 {
                            self.read_done = true;
                            give_buffer(buf);
                        } else {
                            self.pos = 0;
                            self.cap = n;
                            self.buf = Some(buf);
                        }
                    }
                }
            }
            // Top the buffer up with whatever is already readable, so writes are as large as
            // possible (fewer, fuller TLS records); a pending read just means "write now".
            if self.pos == 0
                && !self.read_done
                && self.read_err.is_none()
                && let Some(buf) = self.buf.as_mut()
            {
                while self.cap < buf.len() {
                    let mut rb = ReadBuf::new(&mut buf[self.cap..]);
                    match reader.as_mut().poll_read(cx, &mut rb) {
                        Poll::Ready(Ok(())) if rb.filled().is_empty() => {
                            self.read_done = true;
                            break;
                        }
                        Poll::Ready(Ok(())) => self.cap += rb.filled().len(),
                        Poll::Ready(Err(e)) => {
                            self.read_err = Some(e);
                            break;
                        }
                        Poll::Pending => break,
                    }
                }
            }
            while self.pos < self.cap {
                let buf = self.buf.as_ref().expect("data implies a buffer");
                let n = ready!(writer.as_mut().poll_write(cx, &buf[self.pos..self.cap]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "write zero bytes into writer",
                    )));
                }
                self.pos += n;
                self.amt += n as u64;
                self.need_flush = true;
            }
            if self.read_done {
                if self.need_flush {
                    ready!(writer.as_mut().poll_flush(cx))?;
                    self.need_flush = false;
                }
                ready!(writer.as_mut().poll_shutdown(cx))?;
                return Poll::Ready(Ok(self.amt));
            }
        }
    }
}

/// Copy `a` to `b` and `b` to `a` until both reach EOF; returns the bytes (a→b, b→a). An error
/// in either direction ends both. Cancel safe only in the sense that dropping it drops the
/// data in flight (as with tokio's `copy_bidirectional`).
pub(super) async fn copy_bidirectional<A, B>(a: &mut A, b: &mut B) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut ab = Direction::default();
    let mut ba = Direction::default();
    let (mut ab_amt, mut ba_amt) = (0, 0);
    let result = poll_fn(|cx| {
        if !ab.done
            && let Poll::Ready(r) = ab.poll_copy(cx, Pin::new(&mut *a), Pin::new(&mut *b))
        {
            ab_amt = r?;
            ab.done = true;
        }
        if !ba.done
            && let Poll::Ready(r) = ba.poll_copy(cx, Pin::new(&mut *b), Pin::new(&mut *a))
        {
            ba_amt = r?;
            ba.done = true;
        }
        if ab.done && ba.done {
            Poll::Ready(Ok((ab_amt, ba_amt)))
        } else {
            Poll::Pending
        }
    })
    .await;
    // Buffers still holding unsent data (an error ended the copy) go back too.
    for d in [&mut ab, &mut ba] {
        if let Some(b) = d.buf.take() {
            give_buffer(b);
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn outstanding() -> isize {
        OUTSTANDING.with(|o| o.get())
    }

    // Current-thread runtime: the copy runs on this thread, so the per-thread count is exact.
    #[tokio::test]
    async fn idle_directions_hold_no_buffer_and_half_close_works() {
        let (mut a_far, mut a) = tokio::io::duplex(1024);
        let (mut b, mut b_far) = tokio::io::duplex(1024);
        let copy = tokio::spawn(async move { copy_bidirectional(&mut a, &mut b).await });
        a_far.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        b_far.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        b_far.write_all(b"pong!").await.unwrap();
        let mut got = [0u8; 5];
        a_far.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"pong!");
        // Both directions are idle now: no buffer is held.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(outstanding(), 0);
        a_far.shutdown().await.unwrap();
        // b_far sees EOF (half-close) and can still answer.
        let mut rest = Vec::new();
        b_far.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        b_far.write_all(b"late").await.unwrap();
        b_far.shutdown().await.unwrap();
        let mut rest = Vec::new();
        a_far.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"late");
        assert_eq!(copy.await.unwrap().unwrap(), (4, 9));
    }
}
