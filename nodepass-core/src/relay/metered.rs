//! Stream wrappers used by the relay: [`Metered`] (counting, activity, rate limit) and
//! [`Prefixed`] (replays bytes that were read ahead during framing).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::limit::RateLimiter;
use crate::stats::Stats;

/// When a session last moved a byte, shared by both directions.
#[derive(Debug, Clone)]
pub(crate) struct Activity {
    base: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}

impl Activity {
    /// Start counting now.
    pub(crate) fn new() -> Self {
        Activity {
            base: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Record activity now.
    pub(crate) fn touch(&self) {
        self.last_ms
            .store(self.base.elapsed().as_millis() as u64, Relaxed);
    }

    /// Resolves once nothing moved for `timeout` (never, for `None`). Cancel safe.
    pub(crate) async fn idle_for(&self, timeout: Option<Duration>) {
        let Some(timeout) = timeout else {
            return std::future::pending().await;
        };
        loop {
            let last = self.base + Duration::from_millis(self.last_ms.load(Relaxed));
            let deadline = last + timeout;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// A local TCP socket whose reads and writes are counted, recorded as activity and rate limited.
#[derive(Debug)]
pub(crate) struct Metered<S> {
    inner: S,
    stats: Arc<Stats>,
    rate: Option<RateLimiter>,
    activity: Activity,
    tap: Option<Arc<dyn super::Tap>>,
    read_delay: Option<Pin<Box<Sleep>>>,
    write_delay: Option<Pin<Box<Sleep>>>,
}

impl<S> Metered<S> {
    /// Meter a TCP stream.
    pub(crate) fn tcp(
        inner: S,
        stats: Arc<Stats>,
        rate: Option<RateLimiter>,
        activity: Activity,
    ) -> Self {
        Metered {
            inner,
            stats,
            rate,
            activity,
            tap: None,
            read_delay: None,
            write_delay: None,
        }
    }

    /// Also count reads and writes into `tap`.
    pub(crate) fn with_tap(mut self, tap: Option<Arc<dyn super::Tap>>) -> Self {
        self.tap = tap;
        self
    }

    fn count(&self, rx: bool, n: usize) {
        let s = &self.stats;
        let c = if rx { &s.tcp_rx } else { &s.tcp_tx };
        c.fetch_add(n as u64, Relaxed);
        if let Some(t) = &self.tap {
            if rx {
                t.read(n as u64)
            } else {
                t.written(n as u64)
            }
        }
        self.activity.touch();
    }

    fn delay_after(&self, n: usize) -> Option<Pin<Box<Sleep>>> {
        let wait = self.rate.as_ref()?.reserve(n);
        (!wait.is_zero()).then(|| Box::pin(tokio::time::sleep(wait)))
    }
}

fn poll_delay(delay: &mut Option<Pin<Box<Sleep>>>, cx: &mut Context<'_>) -> Poll<()> {
    if let Some(d) = delay {
        ready!(d.as_mut().poll(cx));
        *delay = None;
    }
    Poll::Ready(())
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(poll_delay(&mut this.read_delay, cx));
        let n = match this.rate.as_ref().map(RateLimiter::burst_bytes) {
            // Under a rate limit, at most a bucketful per read.
            Some(most) if buf.remaining() > most => {
                let mut part = ReadBuf::new(buf.initialize_unfilled_to(most));
                ready!(Pin::new(&mut this.inner).poll_read(cx, &mut part))?;
                let n = part.filled().len();
                buf.advance(n);
                n
            }
            _ => {
                let before = buf.filled().len();
                ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
                buf.filled().len() - before
            }
        };
        if n > 0 {
            this.count(true, n);
            this.read_delay = this.delay_after(n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(poll_delay(&mut this.write_delay, cx));
        // Under a rate limit, at most a bucketful per write.
        let most = this
            .rate
            .as_ref()
            .map_or(buf.len(), RateLimiter::burst_bytes);
        let buf = &buf[..buf.len().min(most)];
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        if n > 0 {
            this.count(false, n);
            this.write_delay = this.delay_after(n);
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A stream that first yields `prefix`, then reads from `inner`; writes go to `inner`.
#[derive(Debug)]
pub(crate) struct Prefixed<S> {
    prefix: BytesMut,
    inner: S,
}

impl<S> Prefixed<S> {
    /// Wrap `inner`, replaying `prefix` first.
    pub(crate) fn new(prefix: BytesMut, inner: S) -> Self {
        Prefixed { prefix, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Under a rate limit a read or write moves at most a bucketful (here the 64 KiB floor of
    /// a 1 Mbit/s bucket), whatever the relay's buffer: no long burst then long pause. Without
    /// one, the whole buffer.
    #[tokio::test]
    async fn a_rate_limited_read_or_write_moves_at_most_a_bucketful() {
        for (rate, most) in [(Some(1), 64 * 1024), (None, 200_000)] {
            let (a, mut far) = tokio::io::duplex(1 << 20);
            let rate = rate.map(|m| RateLimiter::new(NonZeroU32::new(m).unwrap()));
            let stats = Arc::new(Stats::default());
            let mut m = Metered::tcp(a, stats, rate, Activity::new());
            far.write_all(&[1u8; 200_000]).await.unwrap();
            let mut buf = vec![0u8; 256 * 1024];
            assert_eq!(m.read(&mut buf).await.unwrap(), most);
            assert_eq!(m.write(&buf[..200_000]).await.unwrap(), most);
        }
    }
}
