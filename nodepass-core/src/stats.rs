//! Lock-free traffic counters of one tunnel and their snapshot.
//!
//! Byte counters are counted on each tunnel end's *local* sockets (the user connection on the
//! accepting side, the target connection on the dialing side): `rx` is what nodepass read from
//! them (and sent into the tunnel), `tx` what it wrote to them.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;

/// The live counters of one tunnel. Shared by every connection task of that tunnel.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) tcp_rx: AtomicU64,
    pub(crate) tcp_tx: AtomicU64,
    pub(crate) udp_rx: AtomicU64,
    pub(crate) udp_tx: AtomicU64,
    pub(crate) tcp_active: AtomicU64,
    pub(crate) udp_active: AtomicU64,
    pub(crate) tcp_total: AtomicU64,
    pub(crate) udp_total: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) udp_dropped: AtomicU64,
    pub(crate) rtt_us: AtomicU64,
    pub(crate) pool_idle: AtomicU64,
    pub(crate) pool_capacity: AtomicU64,
}

/// A point-in-time copy of a tunnel's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    /// TCP bytes read from local sockets.
    pub tcp_rx: u64,
    /// TCP bytes written to local sockets.
    pub tcp_tx: u64,
    /// UDP bytes read from local sockets.
    pub udp_rx: u64,
    /// UDP bytes written to local sockets.
    pub udp_tx: u64,
    /// TCP sessions open now.
    pub tcp_active: u64,
    /// UDP sessions open now.
    pub udp_active: u64,
    /// TCP sessions carried since start.
    pub tcp_total: u64,
    /// UDP sessions carried since start.
    pub udp_total: u64,
    /// Sessions refused (slot limit, block rule, no pool connection).
    pub refused: u64,
    /// UDP datagrams dropped (oversize, no session capacity).
    pub udp_dropped: u64,
    /// Last control round-trip time in microseconds (0 before the first heartbeat).
    pub rtt_us: u64,
    /// Idle pool connections.
    pub pool_idle: u64,
    /// Current pool capacity target.
    pub pool_capacity: u64,
}

impl Stats {
    /// Copy the counters.
    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            tcp_rx: self.tcp_rx.load(Relaxed),
            tcp_tx: self.tcp_tx.load(Relaxed),
            udp_rx: self.udp_rx.load(Relaxed),
            udp_tx: self.udp_tx.load(Relaxed),
            tcp_active: self.tcp_active.load(Relaxed),
            udp_active: self.udp_active.load(Relaxed),
            tcp_total: self.tcp_total.load(Relaxed),
            udp_total: self.udp_total.load(Relaxed),
            refused: self.refused.load(Relaxed),
            udp_dropped: self.udp_dropped.load(Relaxed),
            rtt_us: self.rtt_us.load(Relaxed),
            pool_idle: self.pool_idle.load(Relaxed),
            pool_capacity: self.pool_capacity.load(Relaxed),
        }
    }

    /// Zero the traffic counters (bytes and totals); gauges are left alone.
    pub(crate) fn reset_traffic(&self) {
        for c in [
            &self.tcp_rx,
            &self.tcp_tx,
            &self.udp_rx,
            &self.udp_tx,
            &self.tcp_total,
            &self.udp_total,
            &self.refused,
            &self.udp_dropped,
        ] {
            c.store(0, Relaxed);
        }
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    /// Count one active session until the guard drops.
    pub(crate) fn session(&self, udp: bool) -> ActiveGuard<'_> {
        let (active, total) = if udp {
            (&self.udp_active, &self.udp_total)
        } else {
            (&self.tcp_active, &self.tcp_total)
        };
        active.fetch_add(1, Relaxed);
        total.fetch_add(1, Relaxed);
        ActiveGuard(active)
    }
}

/// Decrements an active-session gauge on drop.
#[derive(Debug)]
pub(crate) struct ActiveGuard<'a>(&'a AtomicU64);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_guard_counts_and_reset_keeps_gauges() {
        let s = Stats::default();
        {
            let _a = s.session(false);
            let _b = s.session(true);
            Stats::add(&s.tcp_rx, 10);
            let snap = s.snapshot();
            assert_eq!((snap.tcp_active, snap.udp_active, snap.tcp_rx), (1, 1, 10));
            s.reset_traffic();
            let snap = s.snapshot();
            assert_eq!((snap.tcp_active, snap.tcp_rx, snap.tcp_total), (1, 0, 0));
        }
        assert_eq!(s.snapshot().tcp_active, 0);
        assert_eq!(s.snapshot().udp_active, 0);
    }
}
