//! Target selection and health (`lbs`, `fallback`, `probe`): which target a new session tries
//! first, which targets are down, and the per-target counters behind [`TargetSnapshot`].
//!
//! - A failed dial marks a target down for a back-off ([`BACKOFF_MIN`] doubling up to
//!   [`BACKOFF_MAX`]); the session goes on with the next target. Down targets are tried last, so a
//!   session fails only when every target fails. A successful dial or probe marks it up again.
//! - Round-robin (`lbs=0`) rotates over the targets that are up.
//! - Optimal latency (`lbs=1`) prefers the target with the lowest score: the smoothed TCP connect
//!   time of probes and dials plus the smoothed time to the first response byte of the sessions it
//!   carried (zero until it carried one). The preferred target changes when it goes down, or when
//!   another one is better by [`HYSTERESIS_MIN`] and [`HYSTERESIS_FRACTION`] of the current score
//!   and the preference is at least [`MIN_HOLD`] old.
//! - Primary-backup (`lbs=2`) uses the first target in order that is up and stays on a backup until
//!   the `fallback` interval has passed; then the next session tries the earlier targets (the
//!   primary first) again.
//!
//! All times are `tokio::time::Instant`, so tests can pause and advance the clock. The state is
//! behind one `std::sync::Mutex`, never held across `.await`.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::config::{Balance, Endpoint, LoadBalance};

/// First back-off after a failed dial or probe.
pub(super) const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest back-off (reached after repeated failures).
pub(super) const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Smallest score gain (in absolute time) that makes the latency strategy switch.
/// (Scheduling noise on a busy host moves single samples by a few milliseconds.)
pub(super) const HYSTERESIS_MIN: Duration = Duration::from_millis(5);
/// Smallest score gain (as a fraction of the current target's score) that makes it switch.
pub(super) const HYSTERESIS_FRACTION: f64 = 0.25;
/// After the latency strategy moved its preference, it keeps it at least this long (unless the
/// target goes down), so noisy samples cannot make it go back and forth.
pub(super) const MIN_HOLD: Duration = Duration::from_secs(10);
/// Weight of a new sample in the smoothed latencies.
const EWMA_WEIGHT: f64 = 0.3;

/// A read-only view of one target's health and counters.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetSnapshot {
    /// The target as written in the URL (`host:port`).
    pub address: String,
    /// False while the target is in its back-off after a failed dial or probe.
    pub up: bool,
    /// True for the target new sessions try first now (the preferred one of `lbs=1`, the one in
    /// use of `lbs=2`; with `lbs=0` every target that is up).
    pub selected: bool,
    /// Duration of the last successful probe (TCP connect), in microseconds.
    pub probe_latency_us: Option<u64>,
    /// The latency strategy's score (smoothed connect plus first-response time), in microseconds.
    pub score_us: Option<u64>,
    /// Sessions open to this target now.
    pub active: u64,
    /// Sessions carried to this target since start.
    pub total: u64,
    /// Dials and probes to this target that failed.
    pub failed_dials: u64,
    /// Bytes received from this target.
    pub bytes_in: u64,
    /// Bytes sent to this target.
    pub bytes_out: u64,
}

/// Lock-free counters of one target.
#[derive(Debug, Default)]
pub(crate) struct TargetCounters {
    pub(crate) active: AtomicU64,
    pub(crate) total: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
}

/// What the balancer knows about one target's health.
#[derive(Debug, Default, Clone)]
struct Health {
    down_until: Option<Instant>,
    failures: u32,
    probe_latency: Option<Duration>,
    /// Smoothed connect time, microseconds.
    connect_us: Option<f64>,
    /// Smoothed time to the first response byte, microseconds.
    response_us: Option<f64>,
}

impl Health {
    fn is_up(&self, now: Instant) -> bool {
        self.down_until.is_none_or(|t| now >= t)
    }

    fn score(&self) -> Option<f64> {
        match (self.connect_us, self.response_us) {
            (None, None) => None,
            (c, r) => Some(c.unwrap_or(0.0) + r.unwrap_or(0.0)),
        }
    }
}

fn smooth(old: Option<f64>, sample: Duration) -> Option<f64> {
    let x = sample.as_secs_f64() * 1e6;
    Some(old.map_or(x, |o| o + EWMA_WEIGHT * (x - o)))
}

#[derive(Debug)]
struct State {
    health: Vec<Health>,
    /// `lbs=1`: the preferred target; `lbs=2`: the target in use.
    selected: usize,
    /// `lbs=2`: when a backup in use lets the earlier targets be tried again.
    fallback_at: Option<Instant>,
    /// `lbs=1`: when the preference last moved on measurements.
    held_since: Option<Instant>,
}

/// The targets of one tunnel with their health and counters.
#[derive(Debug)]
pub(crate) struct Balancer {
    endpoints: Vec<Endpoint>,
    counters: Vec<Arc<TargetCounters>>,
    balance: Balance,
    next: AtomicUsize,
    /// Never held across `.await`.
    state: Mutex<State>,
}

impl Balancer {
    pub(crate) fn new(endpoints: Vec<Endpoint>, balance: Balance) -> Self {
        let n = endpoints.len();
        Balancer {
            counters: (0..n).map(|_| Arc::default()).collect(),
            endpoints,
            balance,
            next: AtomicUsize::new(0),
            state: Mutex::new(State {
                health: vec![Health::default(); n],
                selected: 0,
                fallback_at: None,
                held_since: None,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state stays consistent between statements; a panic elsewhere cannot corrupt it.
        crate::sync::lock(&self.state)
    }

    pub(crate) fn endpoint(&self, i: usize) -> &Endpoint {
        &self.endpoints[i]
    }

    pub(crate) fn len(&self) -> usize {
        self.endpoints.len()
    }

    pub(crate) fn counters(&self, i: usize) -> &Arc<TargetCounters> {
        &self.counters[i]
    }

    /// The target indices in the order one new session tries them: the strategy's choice
    /// first, the other targets that are up next, the down ones last.
    pub(crate) fn order(&self, now: Instant) -> Vec<usize> {
        let n = self.endpoints.len();
        let mut st = self.state();
        let mut up: Vec<usize> = Vec::with_capacity(n);
        let mut down: Vec<usize> = Vec::new();
        match self.balance.strategy {
            LoadBalance::RoundRobin => {
                let start = self.next.fetch_add(1, Relaxed) % n.max(1);
                for i in (0..n).map(|k| (start + k) % n) {
                    if st.health[i].is_up(now) {
                        up.push(i)
                    } else {
                        down.push(i)
                    }
                }
            }
            LoadBalance::Latency => {
                reselect(&mut st, now);
                let mut rest: Vec<usize> = (0..n).filter(|&i| i != st.selected).collect();
                rest.sort_by(|&a, &b| {
                    let key = |i: usize| st.health[i].score().unwrap_or(f64::MAX);
                    key(a).total_cmp(&key(b))
                });
                for i in std::iter::once(st.selected).chain(rest) {
                    if st.health[i].is_up(now) {
                        up.push(i)
                    } else {
                        down.push(i)
                    }
                }
            }
            LoadBalance::PrimaryBackup => {
                if st.fallback_at.is_some_and(|t| now >= t) {
                    // Time to look at the earlier targets again, the primary first.
                    st.fallback_at = None;
                    st.selected = 0;
                }
                let held = st.selected;
                for i in 0..n {
                    // Before the fallback time, targets earlier than the backup in use wait.
                    if i >= held && st.health[i].is_up(now) {
                        up.push(i)
                    } else {
                        down.push(i)
                    }
                }
            }
        }
        up.extend(down);
        up
    }

    /// A dial to target `i` succeeded after `connect` time.
    pub(crate) fn dial_succeeded(&self, i: usize, connect: Duration, now: Instant) {
        let mut st = self.state();
        let h = &mut st.health[i];
        h.down_until = None;
        h.failures = 0;
        h.connect_us = smooth(h.connect_us, connect);
        if self.balance.strategy == LoadBalance::PrimaryBackup && i != st.selected {
            st.selected = i;
            st.fallback_at = (i > 0).then(|| now + self.balance.fallback);
        }
    }

    /// A dial (or probe) to target `i` failed: down for the back-off.
    pub(crate) fn dial_failed(&self, i: usize, now: Instant) {
        self.counters[i].failed.fetch_add(1, Relaxed);
        let mut st = self.state();
        let h = &mut st.health[i];
        h.failures = h.failures.saturating_add(1);
        let backoff = BACKOFF_MIN
            .saturating_mul(1 << (h.failures - 1).min(5))
            .min(BACKOFF_MAX);
        h.down_until = Some(now + backoff);
        if self.balance.strategy == LoadBalance::Latency {
            reselect(&mut st, now);
        }
    }

    /// A probe of target `i` finished.
    pub(crate) fn probed(&self, i: usize, result: Option<Duration>, now: Instant) {
        let Some(latency) = result else {
            self.dial_failed(i, now);
            return;
        };
        let mut st = self.state();
        let h = &mut st.health[i];
        h.down_until = None;
        h.failures = 0;
        h.probe_latency = Some(latency);
        h.connect_us = smooth(h.connect_us, latency);
        if self.balance.strategy == LoadBalance::Latency {
            reselect(&mut st, now);
        }
    }

    /// A session to target `i` saw its first response byte `after` its first request byte.
    pub(crate) fn responded(&self, i: usize, after: Duration) {
        if self.balance.strategy != LoadBalance::Latency {
            return;
        }
        let mut st = self.state();
        let h = &mut st.health[i];
        h.response_us = smooth(h.response_us, after);
        reselect(&mut st, Instant::now());
    }

    /// Zero the sessions, failed dials and bytes counted so far (active sessions stay).
    pub(crate) fn reset_traffic(&self) {
        for c in &self.counters {
            for n in [&c.total, &c.failed, &c.bytes_in, &c.bytes_out] {
                n.store(0, Relaxed);
            }
        }
    }

    /// Snapshots of every target, in URL order.
    pub(crate) fn snapshot(&self, now: Instant) -> Vec<TargetSnapshot> {
        let st = self.state();
        (0..self.endpoints.len())
            .map(|i| {
                let h = &st.health[i];
                let c = &self.counters[i];
                let up = h.is_up(now);
                let selected = match self.balance.strategy {
                    LoadBalance::RoundRobin => up,
                    _ => i == st.selected,
                };
                TargetSnapshot {
                    address: self.endpoints[i].to_string(),
                    up,
                    selected,
                    probe_latency_us: h.probe_latency.map(|d| d.as_micros() as u64),
                    score_us: h.score().map(|s| s as u64),
                    active: c.active.load(Relaxed),
                    total: c.total.load(Relaxed),
                    failed_dials: c.failed.load(Relaxed),
                    bytes_in: c.bytes_in.load(Relaxed),
                    bytes_out: c.bytes_out.load(Relaxed),
                }
            })
            .collect()
    }
}

/// `lbs=1`: move the preference when the preferred target is down or clearly beaten.
fn reselect(st: &mut State, now: Instant) {
    let best = (0..st.health.len())
        .filter(|&i| st.health[i].is_up(now))
        .filter_map(|i| st.health[i].score().map(|s| (i, s)))
        .min_by(|a, b| a.1.total_cmp(&b.1));
    let Some((best, best_score)) = best else {
        // Nothing measured yet: keep the preference unless it is down.
        if !st.health[st.selected].is_up(now)
            && let Some(i) = (0..st.health.len()).find(|&i| st.health[i].is_up(now))
        {
            st.selected = i;
        }
        return;
    };
    let current = &st.health[st.selected];
    let switch = match (current.is_up(now), current.score()) {
        (false, _) | (true, None) => true,
        (true, Some(_)) if st.held_since.is_some_and(|t| now < t + MIN_HOLD) => false,
        (true, Some(cur)) => {
            let margin = (cur * HYSTERESIS_FRACTION).max(HYSTERESIS_MIN.as_secs_f64() * 1e6);
            best_score + margin < cur
        }
    };
    if switch && best != st.selected {
        st.selected = best;
        st.held_since = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Host;

    fn balancer(n: usize, strategy: LoadBalance) -> Balancer {
        let eps = (0..n)
            .map(|i| Endpoint {
                host: Host::Ip([127, 0, 0, 1].into()),
                port: 1000 + i as u16,
            })
            .collect();
        Balancer::new(
            eps,
            Balance {
                strategy,
                fallback: Duration::from_secs(300),
                probe: None,
            },
        )
    }

    const MS: Duration = Duration::from_millis(1);

    #[tokio::test(start_paused = true)]
    async fn round_robin_skips_down_targets_until_their_backoff_ends() {
        let b = balancer(3, LoadBalance::RoundRobin);
        let now = Instant::now();
        let firsts: Vec<usize> = (0..6).map(|_| b.order(now)[0]).collect();
        assert_eq!(firsts, [0, 1, 2, 0, 1, 2]);
        b.dial_failed(1, now);
        let firsts: Vec<usize> = (0..6).map(|_| b.order(now)[0]).collect();
        assert!(!firsts.contains(&1), "{firsts:?}");
        assert_eq!(b.order(now).last(), Some(&1), "a down target is tried last");
        tokio::time::advance(BACKOFF_MIN).await;
        let firsts: Vec<usize> = (0..3).map(|_| b.order(Instant::now())[0]).collect();
        assert!(firsts.contains(&1), "{firsts:?}");
        // A second failure doubles the back-off.
        b.dial_failed(1, Instant::now());
        b.dial_failed(1, Instant::now());
        tokio::time::advance(BACKOFF_MIN * 3).await;
        assert!(!b.snapshot(Instant::now())[1].up);
        tokio::time::advance(BACKOFF_MIN).await;
        assert!(b.snapshot(Instant::now())[1].up);
        assert_eq!(b.snapshot(Instant::now())[1].failed_dials, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn latency_prefers_the_best_and_does_not_flap() {
        let b = balancer(3, LoadBalance::Latency);
        let now = Instant::now();
        b.probed(0, Some(MS * 100), now);
        b.probed(1, Some(Duration::from_micros(300)), now);
        b.probed(2, Some(Duration::from_micros(310)), now);
        assert_eq!(b.order(now)[0], 1);
        tokio::time::advance(MIN_HOLD).await;
        let now = Instant::now();
        // Small changes between the two fast ones never move the preference.
        for k in 0..50u64 {
            b.probed(1, Some(Duration::from_micros(300 + (k % 7) * 40)), now);
            b.probed(2, Some(Duration::from_micros(250 + (k % 5) * 30)), now);
            assert_eq!(b.order(now)[0], 1, "round {k}");
        }
        // A slow response moves it.
        b.responded(1, MS * 40);
        assert_eq!(b.order(now)[0], 2);
        // Right after the move a slow sample of the new choice cannot move it back...
        b.responded(2, MS * 80);
        assert_eq!(b.order(now)[0], 2);
        // ...until the preference is MIN_HOLD old.
        tokio::time::advance(MIN_HOLD).await;
        let now = Instant::now();
        assert_eq!(b.order(now)[0], 1);
        // The slow target is used only when the others are down.
        b.dial_failed(2, now);
        b.dial_failed(1, now);
        assert_eq!(b.order(now)[0], 0);
    }

    #[tokio::test(start_paused = true)]
    async fn primary_backup_returns_to_the_primary_after_the_interval() {
        let b = balancer(3, LoadBalance::PrimaryBackup);
        let now = Instant::now();
        assert_eq!(b.order(now), [0, 1, 2]);
        b.dial_failed(0, now);
        b.dial_succeeded(1, MS, now);
        // Recovered (back-off over) but the interval has not passed: stay on the backup.
        tokio::time::advance(BACKOFF_MAX).await;
        assert_eq!(b.order(Instant::now())[0], 1);
        tokio::time::advance(Duration::from_secs(300) - BACKOFF_MAX).await;
        assert_eq!(b.order(Instant::now())[0], 0);
        b.dial_succeeded(0, MS, Instant::now());
        assert!(b.snapshot(Instant::now())[0].selected);
    }
}
