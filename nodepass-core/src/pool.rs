//! [`Pool`]: idle, authenticated tunnel connections ready to carry a user session at once.
//!
//! The client dials pool connections ahead of demand, so a new user connection costs no TCP or
//! TLS handshake on the tunnel leg. Whichever side accepts users *takes* connections from its
//! pool; the other side *parks* a task on each connection, waiting for the `Open`. Both count
//! into one idle figure: queued connections plus parked ones ([`Pool::park`]).
//!
//! Refill is driven by demand, never by a timer: every take (or end of a parked wait) wakes
//! [`Pool::demand`], and the client's filler dials a replacement immediately. Capacity starts at
//! `min`, doubles (up to `max`) whenever a taker finds the pool empty, and halves back towards
//! `min` after a quiet period in which the pool never ran below half its capacity (or was not
//! used at all). Shrinking closes the connections beyond the new capacity: queued ones at once,
//! parked ones through [`Parked::retired`], so the peer sees them close and drops its end too.
//!
//! A pool connection of its own (TCP or TLS) can carry one session after another (issue 17;
//! `docs/protocol.md`, reusable sessions). The parked side then *lends* it to a session ([`Parked::lend`]): it no
//! longer counts as idle, but the filler does not replace it either, since it is expected
//! back. A session that outlives [`LOAN`] (or starts while the pool is short) has its
//! connection written off ([`Parked::write_off`]) and replaced at once; one that ends cleanly
//! gives its connection back ([`Parked::repay`]), and a pool then over its capacity closes
//! the excess as when it shrinks.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::protocol::Chunks;
use crate::stats::Stats;
use crate::transport::TunnelStream;

/// A pool of idle tunnel connections. Cheap to clone (`Arc` inside).
#[derive(Debug, Clone)]
pub(crate) struct Pool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Never held across `.await`.
    queue: Mutex<VecDeque<TunnelStream>>,
    parked: AtomicUsize,
    /// Parked connections lent to a session and expected back (not idle, not replaced).
    lent: AtomicUsize,
    /// Both ends agreed to reuse TLS pool connections (see the module doc).
    reuse: AtomicBool,
    /// Both ends agreed to reuse plain TCP pool connections.
    reuse_plain: AtomicBool,
    available: Notify,
    demand: Notify,
    min: usize,
    max: AtomicUsize,
    capacity: AtomicUsize,
    /// Lowest idle count seen since the last [`Pool::adapt`], for shrinking.
    low_water: AtomicUsize,
    /// Highest idle count seen since the last [`Pool::adapt`] (or ever, on the server, whose
    /// capacity only grows when a taker misses): what [`Pool::is_short`] measures against.
    peak: AtomicUsize,
    /// Parked connections asked to close (claimed by [`Parked::retired`]).
    retire: AtomicUsize,
    retired: Notify,
    stats: Arc<Stats>,
}

impl Pool {
    /// An empty pool that aims for `min` connections and may grow to `max`. `max` wins when
    /// the two disagree (the server's limit is binding on the client).
    pub(crate) fn new(min: usize, max: usize, stats: Arc<Stats>) -> Self {
        let max = max.max(1);
        let min = min.clamp(1, max);
        let pool = Pool {
            inner: Arc::new(Inner {
                queue: Mutex::new(VecDeque::new()),
                parked: AtomicUsize::new(0),
                lent: AtomicUsize::new(0),
                reuse: AtomicBool::new(false),
                reuse_plain: AtomicBool::new(false),
                available: Notify::new(),
                demand: Notify::new(),
                min,
                max: AtomicUsize::new(max),
                capacity: AtomicUsize::new(min),
                low_water: AtomicUsize::new(usize::MAX),
                peak: AtomicUsize::new(0),
                retire: AtomicUsize::new(0),
                retired: Notify::new(),
                stats,
            }),
        };
        pool.publish();
        pool
    }

    /// Idle connections: queued plus parked.
    pub(crate) fn idle(&self) -> usize {
        self.queued() + self.inner.parked.load(Relaxed)
    }

    fn queued(&self) -> usize {
        crate::sync::lock(&self.inner.queue).len()
    }

    /// The number of idle connections the filler currently aims for.
    pub(crate) fn capacity(&self) -> usize {
        self.inner.capacity.load(Relaxed)
    }

    /// The lower bound of the capacity.
    #[cfg(test)]
    pub(crate) fn min(&self) -> usize {
        self.inner.min
    }

    /// The upper bound of the capacity.
    pub(crate) fn max(&self) -> usize {
        self.inner.max.load(Relaxed)
    }

    /// Set the upper bound (the server announces it in the handshake).
    #[cfg(test)]
    pub(crate) fn set_max(&self, max: usize) {
        let max = max.max(1);
        self.inner.max.store(max, Relaxed);
        let cap = self.capacity().min(max).max(self.inner.min.min(max));
        self.inner.capacity.store(cap, Relaxed);
        self.publish();
    }

    /// True when the pool runs short: no idle connection, or fewer than a quarter of the
    /// capacity (or of the most it held lately, for the server). Refills then run at normal
    /// priority; otherwise on the low-priority maintenance thread (`tunnel::background`), so
    /// they give way to user connections.
    pub(crate) fn is_short(&self) -> bool {
        let idle = self.idle();
        let full = self.capacity().max(self.inner.peak.load(Relaxed));
        idle == 0 || idle * 4 < full
    }

    /// Whether a connection just lent must be replaced at once: no idle one left, or fewer than
    /// a quarter of the capacity (unlike [`Pool::is_short`], not against the most the pool
    /// held: connections given back would raise that mark and feed more replacements).
    fn short_for_loan(&self) -> bool {
        let idle = self.idle();
        idle == 0 || idle * 4 < self.capacity()
    }

    /// How many connections the filler should add now to reach the capacity (connections lent
    /// to sessions are expected back).
    pub(crate) fn deficit(&self) -> usize {
        self.capacity()
            .saturating_sub(self.idle() + self.inner.lent.load(Relaxed))
    }

    /// How a TCP session on `conn` travels: in chunks when `conn` can carry them and both ends
    /// agreed to reuse connections of its kind (TLS, or plain TCP).
    pub(crate) fn chunks_for(&self, conn: &TunnelStream) -> Chunks {
        let chunks = conn.chunks();
        let agreed = match chunks {
            Chunks::Off => false,
            Chunks::Narrow => self.inner.reuse.load(Relaxed),
            Chunks::Wide => self.inner.reuse_plain.load(Relaxed),
        };
        if agreed { chunks } else { Chunks::Off }
    }

    /// Record that both ends agreed to reuse pool connections of one kind: TLS and WebSocket
    /// ones ([`Chunks::Narrow`]) or plain TCP ones ([`Chunks::Wide`]).
    pub(crate) fn set_reuse(&self, chunks: Chunks) {
        match chunks {
            Chunks::Off => {}
            Chunks::Narrow => self.inner.reuse.store(true, Relaxed),
            Chunks::Wide => self.inner.reuse_plain.store(true, Relaxed),
        }
    }

    /// Add an idle connection and wake one waiting taker.
    pub(crate) fn put(&self, conn: TunnelStream) {
        crate::sync::lock(&self.inner.queue).push_back(conn);
        self.inner.available.notify_one();
        self.publish();
    }

    /// Take an idle connection now, skipping (and dropping) ones the peer has closed.
    #[cfg(test)]
    pub(crate) fn try_take(&self) -> Option<TunnelStream> {
        self.try_take_for(false).map(|(c, _)| c)
    }

    /// [`Pool::try_take`]; with `lend`, a connection that can carry chunked sessions
    /// ([`Pool::chunks_for`]) is lent rather than consumed: not replaced while its session may
    /// give it back ([`Lent`]).
    fn try_take_for(&self, lend: bool) -> Option<(TunnelStream, Option<Lent>)> {
        loop {
            let conn = crate::sync::lock(&self.inner.queue).pop_front();
            match conn {
                Some(c) if c.is_idle_healthy() => {
                    let chunks = self.chunks_for(&c);
                    if lend && chunks != Chunks::Off {
                        let lent = self.lent(chunks);
                        return Some((c, Some(lent)));
                    }
                    self.consumed();
                    return Some((c, None));
                }
                Some(_) => {
                    tracing::debug!("dropping a pool connection the peer closed");
                    self.inner.demand.notify_one();
                }
                None => {
                    // Ran dry: this interval gives no reason to shrink.
                    self.inner.low_water.store(0, Relaxed);
                    self.grow();
                    self.publish();
                    return None;
                }
            }
        }
    }

    /// Take an idle connection, waiting up to `wait` for one. Cancel safe.
    #[cfg(test)]
    pub(crate) async fn take(&self, wait: Duration) -> Option<TunnelStream> {
        self.take_for(wait, false).await.map(|(c, _)| c)
    }

    /// [`Pool::take`] for a TCP session: the connection comes lent when it can carry the
    /// session in chunks. Cancel safe.
    pub(crate) async fn take_for(
        &self,
        wait: Duration,
        lend: bool,
    ) -> Option<(TunnelStream, Option<Lent>)> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.inner.available.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(c) = self.try_take_for(lend) {
                return Some(c);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }

    /// Count a taken connection as lent (see [`Lent`]); a pool already short replaces it at
    /// once.
    fn lent(&self, chunks: Chunks) -> Lent {
        let mut lent = Lent {
            pool: self.clone(),
            chunks,
            written_off: false,
        };
        if self.count_lent() {
            lent.write_off();
        }
        lent
    }

    /// Count one more connection as lent (taken off the idle ones by the caller); true when
    /// the pool is now short, so the loan must be written off at once.
    fn count_lent(&self) -> bool {
        self.inner.lent.fetch_add(1, Relaxed);
        self.inner.low_water.fetch_min(self.idle(), Relaxed);
        self.publish();
        self.short_for_loan()
    }

    /// A lent connection whose session ended cleanly: idle again, at the back of the queue
    /// (over the capacity until the next [`Pool::adapt`] if it was replaced meanwhile).
    pub(crate) fn give_back(&self, mut lent: Lent, conn: TunnelStream) {
        if !lent.written_off {
            self.inner.lent.fetch_sub(1, Relaxed);
        }
        lent.written_off = true;
        self.put(conn);
    }

    /// Count a connection whose waiting task is parked on it (it is idle but not queued here).
    /// Dropping the guard ends the count and asks the filler for a replacement.
    pub(crate) fn park(&self) -> Parked {
        self.inner.parked.fetch_add(1, Relaxed);
        self.publish();
        Parked {
            pool: self.clone(),
            retired: false,
            state: Loan::Idle,
        }
    }

    /// Drop queued connections the peer has closed (the side that keeps the queue calls it
    /// now and then, so connections the other side gave up do not linger).
    pub(crate) fn sweep(&self) {
        let dead: VecDeque<_> = {
            let mut q = crate::sync::lock(&self.inner.queue);
            let (live, dead): (VecDeque<_>, VecDeque<_>) =
                q.drain(..).partition(|c| c.is_idle_healthy());
            *q = live;
            dead
        };
        if !dead.is_empty() {
            tracing::debug!(
                closed = dead.len(),
                "dropped pool connections the peer closed"
            );
        }
        drop(dead);
        self.publish();
    }

    /// Drop every queued connection (the session they belong to ended).
    pub(crate) fn clear(&self) {
        let drained: Vec<_> = crate::sync::lock(&self.inner.queue).drain(..).collect();
        drop(drained);
        self.publish();
    }

    /// Resolves when a connection was taken or lost, so the filler can replace it.
    /// Cancel safe.
    pub(crate) async fn demand(&self) {
        self.inner.demand.notified().await
    }

    /// Note a connection attempt that failed, so the filler tries again.
    pub(crate) fn nudge(&self) {
        self.inner.demand.notify_one();
    }

    /// Periodic capacity adjustment (the filler calls it every minute or so): halve the capacity
    /// towards `min` when the pool was not used, or never ran below half of it, since the last
    /// call; then close the idle connections beyond the capacity.
    pub(crate) fn adapt(&self) {
        let low = self.inner.low_water.swap(usize::MAX, Relaxed);
        self.inner.peak.store(self.idle(), Relaxed);
        let cap = self.capacity();
        if low > cap / 2 && cap > self.inner.min {
            self.inner
                .capacity
                .store((cap / 2).max(self.inner.min), Relaxed);
        }
        self.trim();
        self.publish();
    }

    /// Close idle connections beyond the capacity: queued ones now, parked ones by asking their
    /// tasks to let go.
    fn trim(&self) {
        let cap = self.capacity();
        let mut excess = self.idle().saturating_sub(cap);
        let dropped: Vec<_> = {
            let mut q = crate::sync::lock(&self.inner.queue);
            let n = excess.min(q.len());
            let keep = q.len() - n;
            q.drain(keep..).collect()
        };
        excess -= dropped.len();
        drop(dropped);
        let pending = self.inner.retire.load(Relaxed);
        if excess > pending {
            self.inner.retire.store(excess, Relaxed);
            self.inner.retired.notify_waiters();
        }
    }

    fn consumed(&self) {
        let idle = self.idle();
        self.inner.low_water.fetch_min(idle, Relaxed);
        if idle == 0 {
            self.grow();
        }
        self.inner.demand.notify_one();
        self.publish();
    }

    fn grow(&self) {
        let max = self.max();
        let _ = self
            .inner
            .capacity
            .fetch_update(Relaxed, Relaxed, |c| Some((c * 2).min(max).max(c.min(max))));
        self.inner.demand.notify_one();
    }

    fn publish(&self) {
        let s = &self.inner.stats;
        let idle = self.idle();
        self.inner.peak.fetch_max(idle, Relaxed);
        s.pool_idle.store(idle as u64, Relaxed);
        s.pool_capacity.store(self.capacity() as u64, Relaxed);
    }
}

/// A connection taken for a chunked session and expected back (the taking side's
/// counterpart of [`Parked::lend`]): counted as lent until given back
/// ([`Pool::give_back`]), written off ([`Lent::write_off`]) or dropped (the session failed),
/// the last two asking the filler for a replacement.
#[derive(Debug)]
pub(crate) struct Lent {
    pool: Pool,
    chunks: Chunks,
    written_off: bool,
}

impl Lent {
    /// How the session travels on the lent connection.
    pub(crate) fn chunks(&self) -> Chunks {
        self.chunks
    }

    /// The session outlived its loan: replace the connection now (it may still come back).
    pub(crate) fn write_off(&mut self) {
        if !self.written_off {
            self.written_off = true;
            self.pool.inner.lent.fetch_sub(1, Relaxed);
            self.pool.consumed();
        }
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        self.write_off();
    }
}

/// How long a session may keep a lent connection before the filler replaces it.
pub(crate) const LOAN: Duration = Duration::from_millis(250);

/// Counts one parked connection as idle until dropped (see [`Pool::park`]).
#[derive(Debug)]
pub(crate) struct Parked {
    pool: Pool,
    retired: bool,
    state: Loan,
}

/// Where a parked connection stands with the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Loan {
    /// Waiting for an `Open`: counted as idle.
    Idle,
    /// Carrying a session it may come back from: counted as lent.
    Lent,
    /// Carrying a session, already replaced: counted nowhere.
    WrittenOff,
}

impl Parked {
    /// The connection carries a session that may give it back: it stops counting as idle and
    /// is not replaced yet. A pool already short replaces it at once.
    pub(crate) fn lend(&mut self) {
        debug_assert_eq!(self.state, Loan::Idle);
        self.pool.inner.parked.fetch_sub(1, Relaxed);
        self.state = Loan::Lent;
        if self.pool.count_lent() {
            self.write_off();
        }
    }

    /// The session outlived its loan: replace the connection now (it may still come back).
    pub(crate) fn write_off(&mut self) {
        if self.state == Loan::Lent {
            self.pool.inner.lent.fetch_sub(1, Relaxed);
            self.state = Loan::WrittenOff;
            self.pool.consumed();
        }
    }

    /// The session ended cleanly: the connection is idle again. One replaced meanwhile leaves
    /// the pool over its capacity until the filler's next [`Pool::adapt`] (only the client
    /// knows the capacity; the server's pool follows it).
    pub(crate) fn repay(&mut self) {
        let inner = &self.pool.inner;
        match self.state {
            Loan::Idle => return,
            Loan::Lent => {
                inner.lent.fetch_sub(1, Relaxed);
            }
            Loan::WrittenOff => {}
        }
        inner.parked.fetch_add(1, Relaxed);
        self.state = Loan::Idle;
        self.pool.publish();
    }

    /// Resolves when the pool shrank and this connection should be closed. Cancel safe.
    pub(crate) async fn retired(&mut self) {
        let inner = &self.pool.inner;
        loop {
            let notified = inner.retired.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let claimed = inner
                .retire
                .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1))
                .is_ok();
            if claimed {
                self.retired = true;
                return;
            }
            notified.await;
        }
    }
}

impl Drop for Parked {
    fn drop(&mut self) {
        match self.state {
            Loan::Idle => {
                self.pool.inner.parked.fetch_sub(1, Relaxed);
            }
            Loan::Lent => {
                self.pool.inner.lent.fetch_sub(1, Relaxed);
            }
            // Replaced already.
            Loan::WrittenOff => {
                self.pool.publish();
                return;
            }
        }
        if self.retired {
            // Given back, not used: no demand, no growth.
            self.pool.publish();
        } else {
            self.pool.consumed();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::{TcpListener, TcpStream};

    async fn pair() -> (TunnelStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (a, b) = tokio::join!(TcpStream::connect(l.local_addr().unwrap()), l.accept());
        (TunnelStream::Plain(a.unwrap()), b.unwrap().0)
    }

    fn pool(min: usize, max: usize) -> Pool {
        Pool::new(min, max, Arc::new(Stats::default()))
    }

    #[tokio::test]
    async fn put_take_and_counts() {
        let p = pool(2, 8);
        assert_eq!((p.idle(), p.capacity(), p.deficit()), (0, 2, 2));
        let (a, _pa) = pair().await;
        let (b, _pb) = pair().await;
        p.put(a);
        p.put(b);
        assert_eq!((p.idle(), p.deficit()), (2, 0));
        assert!(p.try_take().is_some());
        assert!(p.try_take().is_some());
        assert_eq!(p.idle(), 0);
        assert!(p.take(Duration::from_millis(10)).await.is_none());
    }

    /// Issue 17: a parked connection lent to a chunked session is not replaced while it may
    /// come back; written off (or dropped, the session failed) it is; a pool left without
    /// idle connections replaces at once.
    #[test]
    fn lent_connections_are_replaced_only_when_written_off() {
        let p = pool(4, 8);
        let mut parked: Vec<_> = (0..4).map(|_| p.park()).collect();
        assert_eq!((p.idle(), p.deficit()), (4, 0));
        parked[0].lend();
        assert_eq!((p.idle(), p.deficit()), (3, 0));
        parked[0].repay();
        assert_eq!((p.idle(), p.deficit()), (4, 0));
        parked[0].lend();
        parked[0].write_off();
        assert_eq!((p.idle(), p.deficit()), (3, 1));
        // Back after its replacement was asked for: counted again (the filler's adapt trims).
        parked[0].repay();
        assert_eq!((p.idle(), p.deficit()), (4, 0));
        parked[1].lend();
        drop(parked.remove(1));
        assert_eq!((p.idle(), p.deficit()), (3, 1));
        drop(parked);
        let mut last = p.park();
        last.lend();
        // Replaced at once, and the pool grows as when a take empties it.
        assert_eq!((p.idle(), p.capacity(), p.deficit()), (0, 8, 8));
    }

    /// A connection is lent to a taker only once both ends agreed to reuse, and only for a
    /// session that can be chunked (a TCP one, `lend`); otherwise it is consumed.
    #[tokio::test]
    async fn connections_are_lent_only_after_the_agreement() {
        let p = pool(2, 8);
        let (a, _pa) = pair().await;
        p.put(a);
        let (_, lent) = p.take_for(Duration::from_millis(10), true).await.unwrap();
        assert!(lent.is_none());
        // Consumed: the whole capacity is to be dialed (nothing counted as lent).
        assert_eq!(p.deficit(), p.capacity());
        p.set_reuse(Chunks::Narrow);
        let (b, _pb) = pair().await;
        p.put(b);
        let (_, lent) = p.take_for(Duration::from_millis(10), true).await.unwrap();
        assert!(lent.is_none(), "plain TCP needs its own agreement");
        p.set_reuse(Chunks::Wide);
        let (b, _pb) = pair().await;
        p.put(b);
        let (_, lent) = p.take_for(Duration::from_millis(10), false).await.unwrap();
        assert!(lent.is_none(), "not for a session that cannot be chunked");
        let (c, _pc) = pair().await;
        let (d, _pd) = pair().await;
        p.put(c);
        p.put(d);
        let (_, lent) = p.take_for(Duration::from_millis(10), true).await.unwrap();
        let lent = lent.expect("a TCP connection of its own, after the agreement");
        assert_eq!(lent.chunks(), Chunks::Wide);
    }

    #[tokio::test]
    async fn closed_connections_are_skipped() {
        let p = pool(2, 8);
        let (dead, peer) = pair().await;
        drop(peer);
        let (live, _peer2) = pair().await;
        p.put(dead);
        p.put(live);
        // Give the FIN a moment to arrive (bounded).
        for _ in 0..100 {
            if !crate::sync::lock(&p.inner.queue)[0].is_idle_healthy() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let got = p.try_take().expect("the live one");
        assert!(got.is_idle_healthy());
        assert_eq!(p.idle(), 0);
    }

    #[tokio::test]
    async fn capacity_grows_on_miss_and_shrinks_when_quiet() {
        let p = pool(2, 8);
        assert!(p.try_take().is_none());
        assert_eq!(p.capacity(), 4);
        assert!(p.try_take().is_none());
        assert!(p.try_take().is_none());
        assert_eq!(p.capacity(), 8, "capped at max");
        // Quiet period: nothing taken, low water untouched -> no change (no data).
        p.adapt();
        assert_eq!(p.capacity(), 8);
        // Idle stayed high through a take -> shrink.
        let mut keep = Vec::new();
        for _ in 0..7 {
            let (c, peer) = pair().await;
            keep.push(peer);
            p.put(c);
        }
        let _taken = p.try_take().unwrap();
        p.adapt();
        assert_eq!(p.capacity(), 4);
        p.set_max(3);
        assert_eq!((p.max(), p.capacity()), (3, 3));
    }

    /// Issue 11: after a burst the pool returns to `min` once nothing uses it, closing what it
    /// no longer needs (queued connections at once, parked ones through their tasks).
    #[tokio::test(start_paused = true)]
    async fn an_unused_pool_returns_to_min_and_closes_the_rest() {
        use tokio::io::AsyncReadExt;
        let p = pool(2, 64);
        for _ in 0..5 {
            assert!(p.try_take().is_none());
        }
        assert_eq!(p.capacity(), 64);
        let mut peers = Vec::new();
        for _ in 0..48 {
            let (c, peer) = pair().await;
            peers.push(peer);
            p.put(c);
        }
        // 16 parked connections, each with a task that lets go when retired.
        let mut parked = Vec::new();
        for _ in 0..16 {
            let mut g = p.park();
            parked.push(tokio::spawn(async move {
                g.retired().await;
            }));
        }
        assert_eq!(p.idle(), 64);
        // Minutes of idleness: the filler calls adapt once a minute.
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        tick.tick().await;
        for _ in 0..6 {
            tick.tick().await;
            p.adapt();
            tokio::task::yield_now().await;
        }
        assert_eq!(p.capacity(), 2);
        assert_eq!((p.idle(), p.queued()), (2, 0), "queued ones go first");
        let retired = parked.iter().filter(|t| t.is_finished()).count();
        assert_eq!(
            retired, 14,
            "parked connections beyond min were asked to close"
        );
        // The peers of the dropped queued connections see them closed.
        let mut closed = 0;
        for peer in &mut peers {
            let mut b = [0u8; 1];
            if let Ok(Ok(0)) =
                tokio::time::timeout(Duration::from_millis(10), peer.read(&mut b)).await
            {
                closed += 1;
            }
        }
        assert_eq!(closed, 48);
        assert_eq!(p.deficit(), 0, "no refill of what was given back");
    }

    #[tokio::test]
    async fn sweep_drops_what_the_peer_closed() {
        let p = pool(1, 8);
        let (dead, peer) = pair().await;
        let (live, _keep) = pair().await;
        p.put(dead);
        p.put(live);
        drop(peer);
        for _ in 0..200 {
            p.sweep();
            if p.idle() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(p.idle(), 1);
    }

    #[tokio::test]
    async fn short_below_a_quarter_of_the_capacity() {
        let p = pool(8, 8);
        assert!(p.is_short(), "empty");
        let mut peers = Vec::new();
        for _ in 0..2 {
            let (c, peer) = pair().await;
            peers.push(peer);
            p.put(c);
        }
        assert!(!p.is_short(), "2 of 8 is a quarter");
        assert!(p.try_take().is_some());
        assert!(p.is_short(), "1 of 8");
        let _parked = p.park();
        assert!(!p.is_short(), "parked connections count as idle");
        // The server's pool keeps capacity 1 unless a taker misses: measured against the most
        // it held.
        let server = pool(1, 64);
        for _ in 0..8 {
            let (c, peer) = pair().await;
            peers.push(peer);
            server.put(c);
        }
        for _ in 0..6 {
            assert!(!server.is_short());
            assert!(server.try_take().is_some());
        }
        assert_eq!(server.idle(), 2);
        assert!(!server.is_short(), "2 of a peak of 8");
        assert!(server.try_take().is_some());
        assert!(server.is_short(), "1 of a peak of 8");
    }

    #[test]
    fn the_servers_max_bounds_the_clients_min() {
        let p = pool(64, 10);
        assert_eq!((p.min(), p.max(), p.capacity()), (10, 10, 10));
    }

    #[tokio::test]
    async fn a_waiting_taker_gets_a_later_put() {
        let p = pool(1, 4);
        let p2 = p.clone();
        let waiter = tokio::spawn(async move { p2.take(Duration::from_secs(5)).await.is_some() });
        tokio::task::yield_now().await;
        let (c, _peer) = pair().await;
        p.put(c);
        assert!(waiter.await.unwrap());
    }

    #[tokio::test]
    async fn parked_connections_count_as_idle_and_signal_demand() {
        let p = pool(2, 4);
        let g = p.park();
        assert_eq!(p.idle(), 1);
        let p2 = p.clone();
        let demand = tokio::spawn(async move { p2.demand().await });
        tokio::task::yield_now().await;
        drop(g);
        tokio::time::timeout(Duration::from_secs(5), demand)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(p.idle(), 0);
    }
}
