//! What a run measures: the workloads, their budget, the TLS modes and the peers.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Serialize, Serializer};

use crate::subject::{PeerSpec, Subject};
use crate::wan::Profile;

/// One workload of the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// One TCP stream into a sink.
    Bulk,
    /// Several TCP streams into a sink at once.
    Parallel,
    /// Sequential new connections, each with a 1-byte echo.
    Connect,
    /// Bursts of simultaneous new connections, each with a 1-byte echo.
    Burst,
    /// 1-byte ping-pongs on one connection.
    Rtt,
    /// Paced UDP probes into a sink.
    Udp,
    /// RSS of the tunnel processes, idle and with many idle connections.
    Memory,
    /// CPU time of the tunnel processes per GB carried.
    Cpu,
}

impl Workload {
    /// Every workload, in run order.
    pub const ALL: [Workload; 8] = [
        Workload::Bulk,
        Workload::Parallel,
        Workload::Connect,
        Workload::Burst,
        Workload::Rtt,
        Workload::Udp,
        Workload::Memory,
        Workload::Cpu,
    ];

    /// The name used on the command line and as the JSON key.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Bulk => "bulk",
            Workload::Parallel => "parallel",
            Workload::Connect => "connect",
            Workload::Burst => "burst",
            Workload::Rtt => "rtt",
            Workload::Udp => "udp",
            Workload::Memory => "memory",
            Workload::Cpu => "cpu",
        }
    }

    /// A one-line description with the budget's figures.
    pub fn describe(self, b: &Budget) -> String {
        match self {
            Workload::Bulk => format!("TCP, 1 stream into a sink for {:?}", b.bulk),
            Workload::Parallel => {
                format!("TCP, {} streams into a sink for {:?}", b.streams, b.bulk)
            }
            Workload::Connect if b.connect_pause.is_zero() => format!(
                "{} sequential connections: connect, 1-byte echo, close",
                b.connects
            ),
            Workload::Connect => format!(
                "{} sequential connections, {:?} apart: connect, 1-byte echo, close",
                b.connects, b.connect_pause
            ),
            Workload::Burst => format!(
                "{} bursts of {} simultaneous connections, {:?} apart: connect, 1-byte echo, close",
                b.bursts, b.burst, b.burst_pause
            ),
            Workload::Rtt => format!("{} 1-byte ping-pongs on one connection", b.round_trips),
            Workload::Udp => format!(
                "{}-byte datagrams at {} Mbit/s for {:?} into a sink",
                b.udp_size, b.udp_rate_mbit, b.udp
            ),
            Workload::Memory => format!(
                "RSS idle (pool of 64) and with {} idle tunneled connections",
                b.connections
            ),
            Workload::Cpu => format!(
                "user+sys CPU per GB, 1 stream for {:?}: tunnel processes, and whole path \
                 (with the harness's load generator and target)",
                b.cpu
            ),
        }
    }

    /// Whether the workload runs across the emulated WAN (`memory` and `cpu` measure the
    /// processes, which the link does not change).
    pub fn runs_on_wan(self) -> bool {
        !matches!(self, Workload::Memory | Workload::Cpu)
    }

    /// Whether the workload means anything for `subject` (memory needs processes).
    pub fn applies_to(self, subject: &Subject) -> bool {
        match subject {
            Subject::Direct => self != Workload::Memory,
            Subject::Peer { spec, .. } => spec.runs(self),
            Subject::Nodepass { .. } => true,
        }
    }
}

/// Sizes and durations of the workloads.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Budget {
    /// Duration of each bulk transfer (single and parallel).
    #[serde(serialize_with = "secs", rename = "bulk_s")]
    pub bulk: Duration,
    /// Streams of the parallel workload.
    pub streams: usize,
    /// Connections of the connect workload.
    pub connects: usize,
    /// Pause before each new connection of the connect workload (zero: back to back).
    #[serde(serialize_with = "secs", rename = "connect_pause_s")]
    pub connect_pause: Duration,
    /// Simultaneous new connections in each burst of the burst workload.
    pub burst: usize,
    /// Bursts of the burst workload.
    pub bursts: usize,
    /// Pause between two bursts (the pools refill).
    #[serde(serialize_with = "secs", rename = "burst_pause_s")]
    pub burst_pause: Duration,
    /// Ping-pongs of the round-trip workload.
    pub round_trips: usize,
    /// Duration of the UDP workload.
    #[serde(serialize_with = "secs", rename = "udp_s")]
    pub udp: Duration,
    /// Offered UDP rate.
    pub udp_rate_mbit: u64,
    /// Size of each UDP datagram.
    pub udp_size: usize,
    /// Idle connections held open by the memory workload (capped by the descriptor limit).
    pub connections: usize,
    /// Duration of the transfer the CPU workload measures.
    #[serde(serialize_with = "secs", rename = "cpu_s")]
    pub cpu: Duration,
    /// Rounds of each workload: every subject once per round, the subjects interleaved, and
    /// each figure the median of its rounds ([`crate::report::Run::median`]).
    pub rounds: usize,
}

fn secs<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl Budget {
    /// The full benchmark, as issue 7 defines it.
    pub fn full() -> Budget {
        Budget {
            bulk: Duration::from_secs(5),
            streams: 8,
            connects: 2_000,
            connect_pause: Duration::ZERO,
            burst: 48,
            bursts: 40,
            burst_pause: Duration::from_millis(100),
            round_trips: 10_000,
            udp: Duration::from_secs(3),
            udp_rate_mbit: 500,
            udp_size: 1400,
            connections: 10_000,
            cpu: Duration::from_secs(3),
            rounds: 1,
        }
    }

    /// Across the emulated WAN: fewer connections and round trips (each costs link round
    /// trips), UDP offered at half the link's rate (at most 500 Mbit/s), and, with `quick`,
    /// shorter transfers (but long enough to leave TCP's slow start).
    pub fn wan(profile: &Profile, quick: bool) -> Budget {
        let udp_rate_mbit = profile
            .rate_bps
            .map_or(500, |r| (r / 2_000_000).clamp(1, 500));
        Budget {
            bulk: Duration::from_secs(if quick { 3 } else { 5 }),
            connects: if quick { 30 } else { 200 },
            bursts: if quick { 3 } else { 10 },
            burst_pause: Duration::from_millis(500),
            round_trips: if quick { 30 } else { 200 },
            udp: Duration::from_secs(if quick { 2 } else { 3 }),
            udp_rate_mbit,
            ..Budget::full()
        }
    }

    /// `--quick`: every workload, shortened so the whole run stays under a minute.
    pub fn quick() -> Budget {
        Budget {
            bulk: Duration::from_secs(1),
            connects: 200,
            bursts: 5,
            round_trips: 1_000,
            udp: Duration::from_secs(1),
            connections: 1_000,
            cpu: Duration::from_secs(1),
            ..Budget::full()
        }
    }
}

/// Whether pool transport `pool_type` runs inside TLS only (QUIC and HTTP/2).
pub fn needs_tls(pool_type: u8) -> bool {
    matches!(pool_type, 1 | 3)
}

/// Everything one run needs.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Workloads, in run order.
    pub workloads: Vec<Workload>,
    /// nodepass `tls` modes to run.
    pub tls: Vec<u8>,
    /// Pool transports (`type`) to run at each TLS mode, for nodepass and for every peer whose
    /// templates use `{type}`: 0 (TCP), 1 (QUIC), 2 (WebSocket), 3 (HTTP/2), any the peer takes.
    pub pool_types: Vec<u8>,
    /// Sizes and durations.
    pub budget: Budget,
    /// Whether this is a `--quick` run (recorded in the report).
    pub quick: bool,
    /// The nodepass executable.
    pub nodepass: PathBuf,
    /// Other implementations.
    pub peers: Vec<PeerSpec>,
    /// The command line, for the report.
    pub command: String,
    /// How long a tunnel may take to carry its first echo after start.
    pub ready_timeout: Duration,
    /// Run across an emulated WAN with this profile instead of loopback.
    pub wan: Option<Profile>,
}

impl Plan {
    /// The report's columns: direct, nodepass per TLS mode and pool transport, then each peer
    /// (per TLS mode when its templates use `{tls}`, and per pool transport of the run when
    /// they use `{type}`). QUIC and HTTP/2 (`type=1`, `type=3`) run inside TLS only.
    pub fn subjects(&self) -> Vec<Subject> {
        let mut s = vec![Subject::Direct];
        let types_at = |tls: u8| {
            self.pool_types
                .iter()
                .copied()
                .filter(move |&t| tls != 0 || !needs_tls(t))
        };
        for &tls in &self.tls {
            s.extend(types_at(tls).map(|pool_type| Subject::Nodepass { tls, pool_type }));
        }
        for p in &self.peers {
            let spec = std::sync::Arc::new(p.clone());
            let peer = |tls: Option<u8>, pool_type: Option<u8>| Subject::Peer {
                spec: spec.clone(),
                tls,
                pool_type,
            };
            match (p.uses_tls(), p.uses_type()) {
                (true, true) => {
                    for &tls in &self.tls {
                        s.extend(types_at(tls).map(|t| peer(Some(tls), Some(t))));
                    }
                }
                (true, false) => s.extend(self.tls.iter().map(|&tls| peer(Some(tls), None))),
                (false, true) => s.extend(types_at(0).map(|t| peer(None, Some(t)))),
                (false, false) => s.push(peer(None, None)),
            }
        }
        s
    }
}
