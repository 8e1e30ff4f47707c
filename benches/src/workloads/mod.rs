//! The workloads: each drives traffic through an [`Endpoint`] and returns its [`Metrics`].
//!
//! Load generators are plain blocking sockets on OS threads (one per stream), so their own
//! overhead is small and the same for every subject.

mod latency;
mod memory;
mod tcp;
mod udp;

use std::time::Duration;

use crate::plan::{Budget, Workload};
use crate::report::Metrics;
use crate::subject::Endpoint;
use crate::target::Target;

/// Upper bound on any single blocking socket call of a workload, so a stuck tunnel fails the
/// run instead of hanging it.
pub const IO_TIMEOUT: Duration = Duration::from_secs(15);

/// How long the tunnel processes' descriptor counts must stay unchanged before `connect`
/// starts (their pools are full).
const POOL_QUIET: Duration = Duration::from_millis(500);
/// Longest wait for that (a pool of 64 TLS connections across a 40 ms link fills in well
/// under a second on an idle machine).
const POOL_FILL_MAX: Duration = Duration::from_secs(10);

/// Run `workload` against `endpoint`; `link_rtt` is the emulated WAN's round trip, if any
/// (latencies are then also given in round trips of the link).
pub fn run(
    workload: Workload,
    endpoint: &Endpoint,
    target: &Target,
    budget: &Budget,
    link_rtt: Option<Duration>,
) -> anyhow::Result<Metrics> {
    match workload {
        Workload::Bulk => tcp::bulk(endpoint.addr, target, 1, budget.bulk),
        Workload::Parallel => tcp::bulk(endpoint.addr, target, budget.streams, budget.bulk),
        Workload::Connect => {
            settle(endpoint);
            let cpu = |procs: &[crate::process::Proc]| -> Duration {
                procs
                    .iter()
                    .filter_map(|p| crate::procfs::cpu_time(p.pid()).ok())
                    .sum()
            };
            let before = cpu(&endpoint.procs);
            let mut m = latency::connect(
                endpoint.addr,
                budget.connects,
                link_rtt,
                budget.connect_pause,
            )?;
            if !endpoint.procs.is_empty() {
                // The tunnel processes' CPU per new connection (user+sys, including the pool
                // refill it triggers): on a shared 2-core machine, what competes with the
                // next connections.
                let used = cpu(&endpoint.procs).saturating_sub(before);
                m.show(
                    "cpu_us_per_conn",
                    used.as_secs_f64() * 1e6 / budget.connects.max(1) as f64,
                );
            }
            Ok(m)
        }
        Workload::Burst => {
            settle(endpoint);
            latency::burst(
                endpoint.addr,
                budget.burst,
                budget.bursts,
                budget.burst_pause,
                link_rtt,
            )
        }
        Workload::Rtt => latency::round_trip(endpoint.addr, budget.round_trips),
        Workload::Udp => udp::run(endpoint.addr, target, budget),
        Workload::Memory => memory::run(endpoint, budget.connections),
        Workload::Cpu => tcp::cpu(endpoint, target, budget.cpu),
    }
}

/// New connections are measured with a warm pool (issue 17): wait until every process's
/// descriptor count has been still for a while (its pool is full).
fn settle(endpoint: &Endpoint) {
    if !endpoint.procs.is_empty() {
        crate::process::settle(&endpoint.procs, POOL_QUIET, POOL_FILL_MAX);
    }
}
