//! Issue 15's targets for the pool transports (`type`), checked against nodepass's runs:
//!
//! - on loopback, WebSocket and HTTP/2 (`type=2`, `type=3`) bulk within 15 % of the TCP
//!   pool's bulk at the same TLS mode, measured in the same run (QUIC's target is across a
//!   lossy WAN instead, where it is compared by hand: see docs/benchmarks.md);
//! - on loopback and on the WAN, every transport at least as fast as the Go NodePass with the
//!   same `type` and TLS mode (`go type=N`, or `go` for the TCP pool) when it ran: throughput
//!   (`bulk`, `parallel`) at least Go's, round trip (`rtt`) and, for `type` other than 0,
//!   new-connection time (`connect`, p50) at most Go's. The TCP pool's `connect` against Go is
//!   issue 17's target ([`crate::targets`]).

use crate::report::{Run, WorkloadReport};
use crate::targets::TargetCheck;

/// Smallest bulk throughput of a pool transport, as a share of the TCP pool's (loopback).
pub const BULK_VS_TCP_POOL_PCT: f64 = 85.0;

/// The implementation name of `name` with pool transport `pool_type` (as
/// [`crate::subject::Subject::implementation`] gives it).
fn typed(name: &str, pool_type: u8) -> String {
    if pool_type == 0 {
        name.to_owned()
    } else {
        format!("{name} type={pool_type}")
    }
}

/// The pool transport of a nodepass run, from its implementation name.
fn nodepass_type(run: &Run) -> Option<u8> {
    match run.implementation.as_str() {
        "nodepass" => Some(0),
        other => other.strip_prefix("nodepass type=")?.parse().ok(),
    }
}

/// Check the targets whose runs succeeded (`wan`: the run crossed the emulated WAN, where only
/// the comparison with Go applies).
pub fn evaluate(workloads: &[WorkloadReport], wan: bool) -> Vec<TargetCheck> {
    let mut checks = Vec::new();
    for w in workloads {
        let ours = w.runs.iter().filter(|r| r.error.is_none());
        for np in ours {
            let (Some(pool_type), Some(tls)) = (nodepass_type(np), np.tls) else {
                continue;
            };
            let mut add = |what: String, measured: Option<f64>, op, limit, unit| {
                if let Some(m) = measured {
                    checks.push(TargetCheck::new(w.name, tls, &what, m, op, limit, unit));
                }
            };
            let ratio = |other: Option<&Run>, key: &str| {
                np.get(key)
                    .zip(other.and_then(|o| o.get(key)))
                    .map(|(a, b)| a / b)
            };
            if !wan && w.name == "bulk" && matches!(pool_type, 2 | 3) {
                let tcp = w.run("nodepass", Some(tls));
                add(
                    format!("type={pool_type} throughput vs type=0"),
                    ratio(tcp, "gbit_per_s").map(|r| r * 100.0),
                    ">=",
                    BULK_VS_TCP_POOL_PCT,
                    "%",
                );
            }
            let go_name = typed("go", pool_type);
            let go = w.run(&go_name, Some(tls));
            match w.name {
                "bulk" | "parallel" => add(
                    format!("type={pool_type} throughput vs {go_name}"),
                    ratio(go, "gbit_per_s"),
                    ">=",
                    1.0,
                    "x",
                ),
                "rtt" => add(
                    format!("type={pool_type} p50 vs {go_name}"),
                    ratio(go, "p50_us"),
                    "<=",
                    1.0,
                    "x",
                ),
                "connect" if pool_type != 0 => add(
                    format!("type={pool_type} p50 vs {go_name}"),
                    ratio(go, "p50_us"),
                    "<=",
                    1.0,
                    "x",
                ),
                _ => {}
            }
        }
    }
    checks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Metrics;

    fn run(implementation: &str, tls: Option<u8>, kv: &[(&str, f64)]) -> Run {
        let mut metrics = Metrics::default();
        for (k, v) in kv {
            metrics.show(*k, *v);
        }
        Run {
            subject: implementation.into(),
            implementation: implementation.into(),
            tls,
            metrics,
            ratio_to_direct: Default::default(),
            notes: Vec::new(),
            error: None,
        }
    }

    #[test]
    fn transports_meet_the_tcp_pool_and_go_type_for_type() {
        let bulk = WorkloadReport {
            name: "bulk",
            description: String::new(),
            runs: vec![
                run("direct", None, &[("gbit_per_s", 40.0)]),
                run("nodepass", Some(1), &[("gbit_per_s", 10.0)]),
                run("nodepass type=2", Some(1), &[("gbit_per_s", 9.0)]),
                run("nodepass type=3", Some(1), &[("gbit_per_s", 8.0)]),
                // QUIC has no loopback target against the TCP pool.
                run("nodepass type=1", Some(1), &[("gbit_per_s", 4.0)]),
                run("go", Some(1), &[("gbit_per_s", 5.0)]),
                run("go type=3", Some(1), &[("gbit_per_s", 10.0)]),
            ],
        };
        let connect = WorkloadReport {
            name: "connect",
            description: String::new(),
            runs: vec![
                run("nodepass", Some(1), &[("p50_us", 100.0)]),
                run("nodepass type=2", Some(1), &[("p50_us", 100.0)]),
                run("go", Some(1), &[("p50_us", 200.0)]),
                run("go type=2", Some(1), &[("p50_us", 50.0)]),
            ],
        };
        let verdicts = |checks: Vec<TargetCheck>| -> Vec<(String, f64, bool)> {
            checks
                .into_iter()
                .map(|c| (c.what, c.measured, c.pass))
                .collect()
        };
        let checks = evaluate(&[bulk.clone(), connect.clone()], false);
        assert_eq!(
            verdicts(checks),
            vec![
                ("type=0 throughput vs go".into(), 2.0, true),
                ("type=2 throughput vs type=0".into(), 90.0, true),
                ("type=3 throughput vs type=0".into(), 80.0, false),
                ("type=3 throughput vs go type=3".into(), 0.8, false),
                ("type=2 p50 vs go type=2".into(), 2.0, false),
            ]
        );
        // On the WAN only Go is the measure.
        let checks = evaluate(&[bulk, connect], true);
        assert_eq!(checks.len(), 3);
        assert!(checks.iter().all(|c| c.what.contains("vs go")));
    }
}
