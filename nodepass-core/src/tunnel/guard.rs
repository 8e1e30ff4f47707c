//! The server's gate for unauthenticated tunnel connections: per-source limits, per-source
//! back-off after refused handshakes, and aggregated refusal logs.
//!
//! - **Pre-authentication slots**: at most [`MAX_PENDING_HANDSHAKES`] handshakes in flight in
//!   all, and at most [`MAX_PENDING_PER_SOURCE`] from one source, so one source cannot take the
//!   slots the real client needs. A source is an IPv4 address or an IPv6 /64 (one host usually
//!   owns a whole /64).
//! - **Back-off**: a source whose handshakes were refused [`BACKOFF_AFTER`] times within
//!   [`FAILURE_WINDOW`] has its new connections closed at once for a delay that doubles with
//!   every further refusal (1 s up to [`BACKOFF_MAX`]). A success does not clear it, so an
//!   attacker cannot hide behind the real client's address.
//! - **Logs**: the first [`LOG_PER_SOURCE`] refusals of a source in an interval are logged one
//!   by one (at most [`LOG_LINES_PER_INTERVAL`] lines in all); the rest are counted and reported
//!   as one line per source at the end of the interval ([`Guard::flush`]), for at most
//!   [`LOG_SUMMARY_SOURCES`] sources plus one line for the remainder.
//!
//! State is one map behind a `std::sync::Mutex`, never held across `.await`; it is pruned at
//! every flush and bounded to [`MAX_TRACKED_SOURCES`] entries.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// Tunnel handshakes allowed in flight at once; connections beyond are closed at once.
pub const MAX_PENDING_HANDSHAKES: usize = 512;
/// Tunnel handshakes allowed in flight from one source address.
pub const MAX_PENDING_PER_SOURCE: usize = 32;
/// Refusals within a failure window (60 s) before a source is slowed down.
pub const BACKOFF_AFTER: u32 = 8;
/// Refusals older than this are forgotten.
pub(super) const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Longest back-off of one source.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Interval of the aggregated refusal log.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Refusals of one source logged one by one per interval.
pub const LOG_PER_SOURCE: u32 = 5;
/// Individual refusal lines per interval, all sources together.
pub const LOG_LINES_PER_INTERVAL: u32 = 20;
/// Sources named in the summary of one interval.
pub const LOG_SUMMARY_SOURCES: usize = 16;
/// Sources tracked at once; beyond, new sources are only subject to the global limit.
pub(super) const MAX_TRACKED_SOURCES: usize = 4096;

/// Why a new connection was closed before its handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejected {
    /// All pre-authentication slots are taken.
    Busy,
    /// This source holds its share of the slots.
    SourceBusy,
    /// This source is backing off after refused handshakes.
    Throttled,
}

impl Rejected {
    fn reason(self) -> &'static str {
        match self {
            Rejected::Busy => "too many pending tunnel handshakes",
            Rejected::SourceBusy => "too many pending tunnel handshakes from this source",
            Rejected::Throttled => "source backing off after refused handshakes",
        }
    }
}

/// What the guard knows about one source.
#[derive(Debug, Default)]
struct Source {
    pending: usize,
    failures: u32,
    last_failure: Option<Instant>,
    blocked_until: Option<Instant>,
    /// Refusals logged one by one in this interval.
    logged: u32,
    /// Refusals counted but not logged in this interval, and the last reason.
    suppressed: u64,
    last_reason: String,
}

impl Source {
    fn is_idle(&self, now: Instant) -> bool {
        self.pending == 0
            && self.suppressed == 0
            && self.blocked_until.is_none_or(|t| t <= now)
            && self.last_failure.is_none_or(|t| now - t > FAILURE_WINDOW)
    }
}

#[derive(Debug, Default)]
struct State {
    pending: usize,
    sources: HashMap<IpAddr, Source>,
    /// Individual lines logged in this interval.
    lines: u32,
}

/// The gate; cheap to clone.
#[derive(Debug, Clone, Default)]
pub(crate) struct Guard {
    /// Never held across `.await`.
    state: Arc<Mutex<State>>,
}

/// One pre-authentication slot; released on drop.
#[derive(Debug)]
pub(crate) struct Permit {
    guard: Guard,
    source: IpAddr,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut st = self.guard.lock();
        st.pending -= 1;
        if let Some(s) = st.sources.get_mut(&self.source) {
            s.pending = s.pending.saturating_sub(1);
        }
    }
}

/// The address a limit applies to: the IPv4 address, or the /64 of an IPv6 address.
pub fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl Guard {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        crate::sync::lock(&self.state)
    }

    /// Admit a new connection from `ip` to its handshake, or say why not (the rejection is
    /// counted for the aggregated log).
    pub(crate) fn admit(&self, ip: IpAddr) -> Result<Permit, Rejected> {
        let source = source_of(ip);
        let now = Instant::now();
        let mut st = self.lock();
        let tracked = st.sources.len() < MAX_TRACKED_SOURCES || st.sources.contains_key(&source);
        let verdict = if st.pending >= MAX_PENDING_HANDSHAKES {
            Err(Rejected::Busy)
        } else if !tracked {
            Ok(())
        } else {
            let s = st.sources.entry(source).or_default();
            if s.blocked_until.is_some_and(|t| t > now) {
                Err(Rejected::Throttled)
            } else if s.pending >= MAX_PENDING_PER_SOURCE {
                Err(Rejected::SourceBusy)
            } else {
                s.pending += 1;
                Ok(())
            }
        };
        match verdict {
            Ok(()) => {
                st.pending += 1;
                drop(st);
                Ok(Permit {
                    guard: self.clone(),
                    source,
                })
            }
            Err(r) => {
                Self::note(&mut st, source, ip, r.reason(), false);
                Err(r)
            }
        }
    }

    /// Record a refused handshake from `ip`: log it (or count it for the summary) and, if
    /// `counts_as_failure`, move the source towards back-off.
    pub(crate) fn refused(&self, ip: IpAddr, reason: &str, counts_as_failure: bool) {
        let source = source_of(ip);
        let mut st = self.lock();
        Self::note(&mut st, source, ip, reason, counts_as_failure);
    }

    fn note(st: &mut State, source: IpAddr, ip: IpAddr, reason: &str, failure: bool) {
        let now = Instant::now();
        if st.sources.len() >= MAX_TRACKED_SOURCES && !st.sources.contains_key(&source) {
            return;
        }
        let lines = st.lines;
        let s = st.sources.entry(source).or_default();
        if failure {
            if s.last_failure.is_some_and(|t| now - t > FAILURE_WINDOW) {
                s.failures = 0;
            }
            s.failures = s.failures.saturating_add(1);
            s.last_failure = Some(now);
            if s.failures >= BACKOFF_AFTER {
                let exp = (s.failures - BACKOFF_AFTER).min(16);
                let delay = Duration::from_secs(1u64 << exp).min(BACKOFF_MAX);
                s.blocked_until = Some(now + delay);
            }
        }
        if s.logged < LOG_PER_SOURCE && lines < LOG_LINES_PER_INTERVAL {
            s.logged += 1;
            st.lines += 1;
            tracing::warn!(peer = %ip, reason = %reason, "tunnel connection refused");
        } else {
            s.suppressed += 1;
            if s.last_reason != reason {
                s.last_reason = reason.to_string();
            }
        }
    }

    /// End the log interval: one line per source with refusals not yet logged (at most
    /// [`LOG_SUMMARY_SOURCES`], then one line for the rest), and forget idle sources.
    pub(crate) fn flush(&self) {
        let now = Instant::now();
        let mut st = self.lock();
        st.lines = 0;
        let mut named = 0usize;
        let (mut rest_sources, mut rest_count) = (0usize, 0u64);
        for (ip, s) in st.sources.iter_mut() {
            if s.suppressed > 0 {
                if named < LOG_SUMMARY_SOURCES {
                    named += 1;
                    tracing::warn!(
                        source = %ip,
                        count = s.suppressed,
                        last_reason = %s.last_reason,
                        blocked = s.blocked_until.is_some_and(|t| t > now),
                        "tunnel connections refused since the last report"
                    );
                } else {
                    rest_sources += 1;
                    rest_count += s.suppressed;
                }
            }
            s.suppressed = 0;
            s.logged = 0;
        }
        if rest_sources > 0 {
            tracing::warn!(
                sources = rest_sources,
                count = rest_count,
                "tunnel connections refused from further sources since the last report"
            );
        }
        st.sources.retain(|_, s| !s.is_idle(now));
    }

    /// Whether `ip`'s source is backing off now.
    #[cfg(test)]
    fn is_blocked(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        self.lock()
            .sources
            .get(&source_of(ip))
            .and_then(|s| s.blocked_until)
            .is_some_and(|t| t > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn sources_are_addresses_or_ipv6_prefixes() {
        assert_eq!(source_of(ip("10.1.2.3")), ip("10.1.2.3"));
        assert_eq!(source_of(ip("2001:db8:1:2:3:4:5:6")), ip("2001:db8:1:2::"));
        assert_eq!(source_of(ip("::ffff:10.0.0.1")), ip("10.0.0.1"));
    }

    #[tokio::test]
    async fn one_source_cannot_take_every_slot() {
        let g = Guard::default();
        let held: Vec<_> = (0..MAX_PENDING_PER_SOURCE)
            .map(|_| g.admit(ip("127.0.0.2")).unwrap())
            .collect();
        assert_eq!(g.admit(ip("127.0.0.2")).unwrap_err(), Rejected::SourceBusy);
        // Another source still gets in, and a released slot is free again.
        let other = g.admit(ip("127.0.0.1")).unwrap();
        drop(held);
        assert!(g.admit(ip("127.0.0.2")).is_ok());
        drop(other);
        assert_eq!(g.lock().pending, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn refusals_lead_to_a_growing_back_off_that_expires() {
        let g = Guard::default();
        let bad = ip("127.0.0.2");
        for _ in 0..BACKOFF_AFTER - 1 {
            g.refused(bad, "wrong key", true);
        }
        assert!(!g.is_blocked(bad));
        g.refused(bad, "wrong key", true);
        assert!(g.is_blocked(bad));
        assert_eq!(g.admit(bad).unwrap_err(), Rejected::Throttled);
        assert!(g.admit(ip("127.0.0.1")).is_ok(), "others are not affected");
        tokio::time::advance(Duration::from_millis(1100)).await;
        assert!(!g.is_blocked(bad), "the first back-off is one second");
        g.refused(bad, "wrong key", true);
        tokio::time::advance(Duration::from_millis(1100)).await;
        assert!(g.is_blocked(bad), "the second one is two");
        // Non-failures (a client probing for tls) never block.
        let probe = ip("127.0.0.3");
        for _ in 0..100 {
            g.refused(probe, "tls required", false);
        }
        assert!(!g.is_blocked(probe));
        // Old failures are forgotten.
        tokio::time::advance(FAILURE_WINDOW + BACKOFF_MAX).await;
        g.refused(bad, "wrong key", true);
        assert!(!g.is_blocked(bad));
    }
}
