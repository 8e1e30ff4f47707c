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
        Workload::Bulk => tcp::bulk(endpoint.addr, 1, budget.bulk),
        Workload::Parallel => tcp::bulk(endpoint.addr, budget.streams, budget.bulk),
        Workload::Connect => latency::connect(endpoint.addr, budget.connects, link_rtt),
        Workload::Rtt => latency::round_trip(endpoint.addr, budget.round_trips),
        Workload::Udp => udp::run(endpoint.addr, target, budget),
        Workload::Memory => memory::run(endpoint, budget.connections),
        Workload::Cpu => tcp::cpu(endpoint, budget.cpu),
    }
}
