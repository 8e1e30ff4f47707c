//! nodepass-benches: the end-to-end benchmark of nodepass against a direct loopback baseline,
//! measured in one run (issue 7). Run it with
//! `cargo run --release -p nodepass-benches -- all`; `docs/benchmarks.md` explains the
//! workloads, the JSON format and `--peer`.
//!
//! # Layout
//! - [`plan`]: workloads, budgets (full and `--quick`) and the subjects of a run.
//! - [`subject`]: direct, nodepass (server and client processes) and `--peer` templates.
//! - [`process`]: child processes, readiness and settling, finding the `nodepass` binary.
//! - [`procfs`]: RSS, CPU time and descriptors of a process, listening sockets.
//! - [`reference`]: the Go NodePass and rathole as built-in peers (`--reference-peers`).
//! - [`target`]: the in-process TCP echo/sink and UDP sink every subject talks to.
//! - [`probe`]: the self-checking UDP datagram.
//! - [`workloads`]: bulk, parallel, connect, rtt, udp, memory and cpu.
//! - [`stats`]: percentiles, throughput, jitter.
//! - [`runner`]: runs a plan and builds the [`report::Report`].
//! - [`report`], [`targets`], [`table`]: the results, the issue's targets, the text table.
//! - [`transport_targets`]: issue 15's targets for the pool transports (against the TCP pool
//!   and against the Go NodePass with the same `type`).
//! - [`wan`]: the emulated WAN testbed (`--wan`, and the `nodepass-wan` check).
//!
//! # Shutdown
//! Tunnel processes belong to an [`subject::Endpoint`] and are killed when it is dropped,
//! after each workload; the target stops when dropped at the end of the run.
//!
//! # Example
//! ```no_run
//! use nodepass_benches::plan::{Budget, Plan, Workload};
//!
//! let plan = Plan {
//!     workloads: vec![Workload::Rtt],
//!     tls: vec![0],
//!     pool_types: vec![0],
//!     budget: Budget::quick(),
//!     quick: true,
//!     nodepass: nodepass_benches::process::locate_nodepass(None, nodepass_benches::process::Build::Always)?,
//!     peers: Vec::new(),
//!     command: "example".into(),
//!     ready_timeout: std::time::Duration::from_secs(20),
//!     wan: None,
//! };
//! let report = nodepass_benches::runner::run(&plan)?;
//! println!("{}", nodepass_benches::table::render(&report));
//! # Ok::<(), anyhow::Error>(())
//! ```

pub mod plan;
pub mod probe;
pub mod process;
pub mod procfs;
pub mod reference;
pub mod report;
pub mod runner;
pub mod stats;
pub mod subject;
pub mod table;
pub mod target;
pub mod targets;
pub mod transport_targets;
pub mod wan;
pub mod workloads;
