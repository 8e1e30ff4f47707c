//! `nodepass-benches WORKLOAD...`: measure nodepass against direct loopback and print the table.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use nodepass_benches::plan::{Budget, Plan, Workload};
use nodepass_benches::process::{self, Build};
use nodepass_benches::subject::{PeerFlag, PeerSpec};
use nodepass_benches::wan::{self, Profile};
use nodepass_benches::{runner, table};

/// Benchmark nodepass (server and client processes) against direct loopback, in one run.
#[derive(Debug, Parser)]
#[command(name = "nodepass-benches", version)]
struct Args {
    /// Workloads to run (`all` for every one).
    #[arg(value_enum, required = true)]
    workloads: Vec<Which>,
    /// A short version of every workload (under a minute in all).
    #[arg(long)]
    quick: bool,
    /// Also write the results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Compare another implementation: repeat with the same NAME for each of its processes
    /// (see docs/benchmarks.md for the placeholders).
    #[arg(long = "peer", value_name = "NAME=[server:|client:]TEMPLATE")]
    peers: Vec<PeerFlag>,
    /// Add the Go NodePass and rathole (from --reference-dir) as subjects of the latency
    /// workloads (connect, rtt); see docs/benchmarks.md.
    #[arg(long)]
    reference_peers: bool,
    /// Where --reference-peers finds `nodepass-go` and `rathole`.
    #[arg(long, value_name = "DIR", default_value = nodepass_benches::reference::DEFAULT_DIR)]
    reference_dir: PathBuf,
    /// nodepass TLS modes to measure.
    #[arg(long, value_enum, default_value = "both")]
    tls: Tls,
    /// nodepass pool transports (`type`) to measure at each TLS mode, comma separated:
    /// 0 (TCP), 1 (QUIC), 2 (WebSocket), 3 (HTTP/2); QUIC and HTTP/2 run inside TLS only and
    /// are skipped at tls=0.
    #[arg(long = "type", value_name = "TYPES", default_value = "0", value_delimiter = ',',
          value_parser = ["0", "1", "2", "3"])]
    pool_types: Vec<String>,
    /// The nodepass executable (default: the one beside this program, built if needed).
    #[arg(long, value_name = "PATH")]
    nodepass: Option<PathBuf>,
    /// Run across an emulated WAN (needs root): RTT,LOSS,RATE[,jitter=D][,queue=BYTES]
    /// [,cc=NAME][,reorder], e.g. 40ms,1%,100mbit. Servers and the load generator on one
    /// side, clients and the target on the other.
    #[arg(long, value_name = "PROFILE")]
    wan: Option<Profile>,
    /// Pause before each new connection of the connect workload, in microseconds (default:
    /// none, back to back). Longer than a connection's teardown and pool refill, it shows each
    /// connection's own path, without that work competing for the cores.
    #[arg(long, value_name = "MICROSECONDS", default_value_t = 0)]
    connect_pause: u64,
    /// Simultaneous new connections in each burst of the burst workload (the pools hold 64).
    #[arg(long, value_name = "CONNECTIONS", default_value_t = 48,
          value_parser = clap::value_parser!(u16).range(1..=1000))]
    burst: u16,
    /// Measure each workload N times, the subjects interleaved (direct, nodepass, peers,
    /// direct, ...), and report each figure as the median of its N rounds: steadier ratios on
    /// a noisy machine.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u8).range(1..=20))]
    rounds: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Which {
    All,
    Bulk,
    Parallel,
    Connect,
    Burst,
    Rtt,
    Udp,
    Memory,
    Cpu,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Tls {
    #[value(name = "0")]
    Off,
    #[value(name = "1")]
    On,
    Both,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(clean) => ExitCode::from(if clean { 0 } else { 1 }),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Returns whether every run succeeded (missed targets are not failures).
fn run(args: Args) -> anyhow::Result<bool> {
    let named = |w: &Workload| {
        args.workloads
            .iter()
            .any(|&x| x.to_possible_value().unwrap().get_name() == w.name())
    };
    let all = args.workloads.contains(&Which::All);
    if args.wan.is_some() {
        if let Some(w) = Workload::ALL.iter().find(|w| named(w) && !w.runs_on_wan()) {
            anyhow::bail!(
                "--wan: the {} workload measures the processes, not the link; run it without --wan",
                w.name()
            );
        }
        if let Some(why) = wan::netns::unavailable() {
            anyhow::bail!("--wan: {why}");
        }
    }
    let workloads: Vec<Workload> = Workload::ALL
        .into_iter()
        .filter(|w| named(w) || (all && (args.wan.is_none() || w.runs_on_wan())))
        .collect();
    // Started by cargo (`cargo run`): make sure nodepass is built and fresh.
    let build = if std::env::var_os("CARGO").is_some() {
        Build::Always
    } else {
        Build::IfMissing
    };
    let plan = Plan {
        workloads,
        tls: match args.tls {
            Tls::Off => vec![0],
            Tls::On => vec![1],
            Tls::Both => vec![0, 1],
        },
        pool_types: args
            .pool_types
            .iter()
            .map(|t| t.parse().expect("checked by clap"))
            .collect(),
        budget: Budget {
            connect_pause: Duration::from_micros(args.connect_pause),
            burst: usize::from(args.burst),
            rounds: usize::from(args.rounds),
            ..match &args.wan {
                Some(p) => Budget::wan(p, args.quick),
                None if args.quick => Budget::quick(),
                None => Budget::full(),
            }
        },
        quick: args.quick,
        nodepass: process::locate_nodepass(args.nodepass.as_deref(), build)?,
        peers: {
            let mut peers = PeerSpec::merge(&args.peers)?;
            if args.reference_peers {
                for r in nodepass_benches::reference::peers(&args.reference_dir)? {
                    anyhow::ensure!(
                        peers.iter().all(|p| p.name != r.name),
                        "--peer {}: the name is taken by --reference-peers",
                        r.name
                    );
                    peers.push(r);
                }
            }
            peers
        },
        command: std::env::args().collect::<Vec<_>>().join(" "),
        ready_timeout: Duration::from_secs(20),
        wan: args.wan,
    };
    let report = runner::run(&plan)?;
    print!("{}", table::render(&report));
    if let Some(path) = &args.json {
        std::fs::write(path, report.to_json())
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(report.errors().is_empty())
}
