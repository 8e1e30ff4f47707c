//! Per-tunnel limits: concurrent sessions (`slot`) and bandwidth (`rate`).
//!
//! Both are cheap `Clone` handles; one of each is made per tunnel instance and shared by all its
//! connection tasks.
//!
//! - [`Slots`] caps the number of concurrent TCP and UDP sessions. The accept loop calls
//!   [`Slots::try_acquire`] before starting a session; over the limit it closes the new
//!   connection at once instead of queueing it. The [`SlotPermit`] is moved into the
//!   per-connection task and frees the slot when dropped.
//! - [`RateLimiter`] is one token bucket, in Mbit/s, shared by both directions of every session
//!   of the instance. A relay calls [`RateLimiter::consume`] with the number of bytes it just
//!   moved (or [`RateLimiter::reserve`] and sleeps by itself) before doing more I/O.
//!
//! ```ignore
//! // crate-internal module: an illustration, not compiled as a doctest
//! use std::num::NonZeroU32;
//! use nodepass_core::limit::{RateLimiter, Slots};
//!
//! # async fn relay_chunk() -> usize { 0 }
//! # async fn demo() {
//! let slots = Slots::new(NonZeroU32::new(100));
//! let rate = RateLimiter::new(NonZeroU32::new(8).unwrap()); // 8 Mbit/s = 1 MB/s
//! let Some(permit) = slots.try_acquire() else {
//!     return; // over the limit: close the user connection
//! };
//! tokio::spawn(async move {
//!     let _permit = permit; // released when the task ends
//!     let n = relay_chunk().await;
//!     rate.consume(n).await;
//! });
//! # }
//! ```

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Bytes per second in one Mbit/s.
pub(crate) const BYTES_PER_SEC_PER_MBPS: u64 = 125_000;
/// Smallest burst a [`RateLimiter`] allows, whatever its rate.
pub(crate) const MIN_BURST_BYTES: u64 = 64 * 1024;

/// The `slot` limit: how many TCP and UDP sessions may run at once.
///
/// Cheap to clone; clones share the same count.
#[derive(Debug, Clone)]
pub(crate) struct Slots {
    inner: Arc<SlotsInner>,
}

#[derive(Debug)]
struct SlotsInner {
    /// `None` when unlimited.
    semaphore: Option<Arc<Semaphore>>,
    #[cfg(test)]
    limit: Option<u32>,
    in_use: AtomicUsize,
}

/// One occupied slot; the slot is freed when this is dropped.
#[derive(Debug)]
#[must_use = "the slot is freed as soon as the permit is dropped"]
pub(crate) struct SlotPermit {
    slots: Arc<SlotsInner>,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Slots {
    /// A new limit of `limit` concurrent sessions; `None` means unlimited.
    pub(crate) fn new(limit: Option<NonZeroU32>) -> Self {
        let limit = limit.map(NonZeroU32::get);
        Slots {
            inner: Arc::new(SlotsInner {
                semaphore: limit.map(|n| Arc::new(Semaphore::new(n as usize))),
                #[cfg(test)]
                limit,
                in_use: AtomicUsize::new(0),
            }),
        }
    }

    /// Take a slot if one is free. Never waits: `None` means the limit is reached and the caller
    /// should close the new connection at once.
    pub(crate) fn try_acquire(&self) -> Option<SlotPermit> {
        let permit = match &self.inner.semaphore {
            Some(semaphore) => Some(Arc::clone(semaphore).try_acquire_owned().ok()?),
            None => None,
        };
        self.inner.in_use.fetch_add(1, Ordering::Relaxed);
        Some(SlotPermit {
            slots: Arc::clone(&self.inner),
            _permit: permit,
        })
    }

    /// The number of slots currently held.
    #[cfg(test)]
    pub(crate) fn in_use(&self) -> usize {
        self.inner.in_use.load(Ordering::Relaxed)
    }

    /// The limit, or `None` when unlimited.
    #[cfg(test)]
    pub(crate) fn limit(&self) -> Option<u32> {
        self.inner.limit
    }
}

impl Drop for SlotPermit {
    fn drop(&mut self) {
        // The semaphore permit (if any) is released right after this, by its own drop.
        self.slots.in_use.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The `rate` limit: one token bucket shared by both directions of all sessions of a tunnel.
///
/// The bucket refills at `mbps` × 125 000 bytes per second and holds at most
/// max(one tenth of a second of traffic, 64 KiB), so an idle tunnel may burst that much at once
/// and is then held to the rate. Taking more than the bucket holds is allowed: the bucket goes
/// into debt and the caller is told how long to wait, so large writes are never split here.
///
/// Cheap to clone; clones share the same bucket.
#[derive(Debug, Clone)]
pub(crate) struct RateLimiter {
    inner: Arc<RateInner>,
}

#[derive(Debug)]
struct RateInner {
    bytes_per_sec: u64,
    /// What a full bucket holds.
    burst_bytes: u64,
    /// How far the theoretical arrival time may run ahead of now before callers must wait:
    /// the burst capacity expressed as time.
    burst: Duration,
    /// The bucket, held as the instant at which it would be completely full again ("theoretical
    /// arrival time" of the generic cell rate algorithm). Empty-bucket debt is `tat - now - burst`.
    ///
    /// A `std::sync::Mutex` is fine: it is held only for a few arithmetic operations inside
    /// [`RateLimiter::reserve`] and never across an `.await`.
    tat: Mutex<Instant>,
}

impl RateLimiter {
    /// A bucket limited to `mbps` Mbit/s (1 Mbit/s = 125 000 bytes/s), starting full.
    pub(crate) fn new(mbps: NonZeroU32) -> Self {
        let bytes_per_sec = u64::from(mbps.get()) * BYTES_PER_SEC_PER_MBPS;
        let burst_bytes = (bytes_per_sec / 10).max(MIN_BURST_BYTES);
        let inner = RateInner {
            bytes_per_sec,
            burst_bytes,
            burst: duration_for(burst_bytes, bytes_per_sec),
            tat: Mutex::new(Instant::now()),
        };
        RateLimiter {
            inner: Arc::new(inner),
        }
    }

    /// What a full bucket holds: the relay moves at most this much per read or write under
    /// the limit, so a large relay buffer does not turn into long bursts and long pauses.
    pub(crate) fn burst_bytes(&self) -> usize {
        usize::try_from(self.inner.burst_bytes).unwrap_or(usize::MAX)
    }

    /// The rate in bytes per second.
    #[cfg(test)]
    pub(crate) fn bytes_per_sec(&self) -> u64 {
        self.inner.bytes_per_sec
    }

    /// Take `n` bytes from the bucket and return how long the caller must wait before doing more
    /// I/O: zero when the bucket had the tokens, otherwise the time needed to pay back the debt.
    ///
    /// Never blocks (beyond a brief uncontended lock) and never refuses: the bytes are charged
    /// even when the bucket is empty. Zero bytes are free.
    pub(crate) fn reserve(&self, n: usize) -> Duration {
        if n == 0 {
            return Duration::ZERO;
        }
        let cost = duration_for(n as u64, self.inner.bytes_per_sec);
        let now = Instant::now();
        // Held for a few arithmetic operations only; never across an `.await`. The state is a
        // plain instant that is valid whatever a panicking holder did, so poisoning is ignored.
        let mut tat = crate::sync::lock(&self.inner.tat);
        // A bucket that has been idle long enough is full: it never holds more than `burst`.
        let start = (*tat).max(now);
        *tat = start + cost;
        tat.saturating_duration_since(now + self.inner.burst)
    }

    #[cfg(test)]
    /// Take `n` bytes from the bucket and sleep until the caller may do more I/O.
    ///
    /// Cancel safe in the sense that dropping the future leaves the limiter consistent; the
    /// bytes stay charged (they were already moved).
    pub(crate) async fn consume(&self, n: usize) {
        let wait = self.reserve(n);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// How long `bytes` take at `bytes_per_sec` (rounded down to the nanosecond).
fn duration_for(bytes: u64, bytes_per_sec: u64) -> Duration {
    let nanos = u128::from(bytes) * 1_000_000_000 / u128::from(bytes_per_sec);
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    #[test]
    fn slots_refuse_over_the_limit_and_free_on_drop() {
        let slots = Slots::new(Some(nz(2)));
        assert_eq!(slots.limit(), Some(2));
        let a = slots.try_acquire().expect("first slot");
        let b = slots
            .clone()
            .try_acquire()
            .expect("second slot (clone shares the count)");
        assert_eq!(slots.in_use(), 2);
        assert!(slots.try_acquire().is_none(), "third slot must be refused");
        assert_eq!(slots.in_use(), 2, "a refused acquire takes nothing");
        drop(a);
        assert_eq!(slots.in_use(), 1);
        let c = slots.try_acquire().expect("a freed slot is reusable");
        assert_eq!(slots.in_use(), 2);
        drop((b, c));
        assert_eq!(slots.in_use(), 0);
    }

    #[test]
    fn unlimited_slots_still_count() {
        let slots = Slots::new(None);
        assert_eq!(slots.limit(), None);
        let permits: Vec<_> = (0..1000).map(|_| slots.try_acquire().unwrap()).collect();
        assert_eq!(slots.in_use(), 1000);
        drop(permits);
        assert_eq!(slots.in_use(), 0);
    }

    #[tokio::test]
    async fn permit_moves_into_a_task() {
        let slots = Slots::new(Some(nz(1)));
        let permit = slots.try_acquire().unwrap();
        let task = tokio::spawn(async move {
            let _permit = permit;
        });
        task.await.unwrap();
        assert_eq!(slots.in_use(), 0);
        assert!(slots.try_acquire().is_some());
    }

    #[test]
    fn burst_is_a_tenth_of_a_second_but_at_least_64_kib() {
        // 1 Mbit/s: a tenth of a second is 12 500 bytes, so the 64 KiB floor applies.
        let slow = RateLimiter::new(nz(1));
        assert_eq!(slow.inner.burst, duration_for(MIN_BURST_BYTES, 125_000));
        // 100 Mbit/s: a tenth of a second is 1.25 MB.
        let fast = RateLimiter::new(nz(100));
        assert_eq!(fast.bytes_per_sec(), 12_500_000);
        assert_eq!(fast.inner.burst, Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn burst_is_free_then_debt_costs_time() {
        let rate = RateLimiter::new(nz(8)); // 1 000 000 bytes/s, burst 100 000 bytes
        assert_eq!(rate.reserve(100_000), Duration::ZERO);
        // The bucket is empty: 50 000 more bytes are 50 ms of debt.
        assert_eq!(rate.reserve(50_000), Duration::from_millis(50));
        // Idle for a second refills the bucket, but never beyond the burst.
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(rate.reserve(100_000), Duration::ZERO);
        assert_eq!(rate.reserve(1), Duration::from_micros(1));
    }

    #[tokio::test(start_paused = true)]
    async fn ten_megabytes_at_8_mbps_take_about_ten_seconds() {
        let rate = RateLimiter::new(nz(8)); // 1 MB/s
        const TOTAL: usize = 10_000_000;
        const CHUNK: usize = 16 * 1024;
        let start = Instant::now();
        let mut sent = 0;
        while sent < TOTAL {
            let n = CHUNK.min(TOTAL - sent);
            rate.consume(n).await;
            sent += n;
        }
        let elapsed = start.elapsed();
        // Everything beyond the 100 000-byte burst is paid for at 1 MB/s.
        assert!(
            elapsed >= Duration::from_millis(9_900),
            "too fast: {elapsed:?}"
        );
        assert!(
            elapsed <= Duration::from_millis(10_500),
            "too slow: {elapsed:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn two_tasks_share_one_rate() {
        let rate = RateLimiter::new(nz(8)); // 1 MB/s for both together
        const EACH: usize = 5_000_000;
        const CHUNK: usize = 16 * 1024;
        let start = Instant::now();
        let send = |rate: RateLimiter| async move {
            let mut sent = 0;
            while sent < EACH {
                let n = CHUNK.min(EACH - sent);
                rate.consume(n).await;
                sent += n;
            }
            start.elapsed()
        };
        let a = tokio::spawn(send(rate.clone()));
        let b = tokio::spawn(send(rate.clone()));
        let (a, b) = (a.await.unwrap(), b.await.unwrap());
        let (fast, slow) = (a.min(b), a.max(b));
        // Alone, each would take 5 s; sharing the bucket, 10 MB in total take ~10 s and the
        // tasks take turns, so neither finishes much before the other.
        assert!(slow >= Duration::from_millis(9_900), "too fast: {slow:?}");
        assert!(slow <= Duration::from_millis(10_500), "too slow: {slow:?}");
        assert!(
            fast >= Duration::from_secs(9),
            "not shared fairly: {fast:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn zero_bytes_are_free_even_in_debt() {
        let rate = RateLimiter::new(nz(1));
        assert!(rate.reserve(1_000_000) > Duration::ZERO);
        assert_eq!(rate.reserve(0), Duration::ZERO);
        let start = Instant::now();
        rate.consume(0).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[test]
    fn huge_reservations_do_not_overflow() {
        let rate = RateLimiter::new(nz(1));
        assert!(rate.reserve(usize::MAX) > Duration::from_secs(1_000_000));
    }
}
