//! One benchmark run: for each workload, each subject in turn (so direct and tunneled figures
//! of one workload are measured close together in time), each on freshly started processes;
//! with several rounds, all subjects once per round and each figure the median of its rounds.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};

use crate::plan::{Plan, Workload};
use crate::report::{
    FORMAT, FORMAT_VERSION, Machine, Metrics, Report, Run, WanReport, WorkloadReport,
};
use crate::subject::{Ctx, Subject};
use crate::target::Target;
use crate::wan::Testbed;
use crate::wan::testbed::ADDR_B;
use crate::{targets, transport_targets, workloads};

/// Descriptor limit the harness asks for (its children inherit it); the hard limit caps it.
const WANTED_NOFILE: u64 = 65_536;

/// Run the plan. Failures of single runs are recorded in the report, not returned.
///
/// With a WAN profile, the whole run happens on a thread in the testbed's namespace A (load
/// generator, servers); the target and the clients are in namespace B.
pub fn run(plan: &Plan) -> anyhow::Result<Report> {
    raise_nofile_limit();
    match &plan.wan {
        None => run_here(plan, None),
        Some(profile) => {
            let tb = Arc::new(Testbed::start(profile).context("set up the WAN testbed")?);
            let report = tb.a().run(|| run_here(plan, Some(tb.clone())))??;
            Ok(report)
        }
    }
}

fn run_here(plan: &Plan, wan: Option<Arc<Testbed>>) -> anyhow::Result<Report> {
    let date = rfc3339_utc(SystemTime::now());
    let machine = machine();
    let target = match &wan {
        None => Target::start(),
        Some(tb) => tb.b().run(|| Target::start_on(ADDR_B.into()))?,
    }
    .context("start the target")?;
    let link_before = wan.as_ref().map(|tb| (tb.a_to_b(), tb.b_to_a()));
    // One directory per run: runs in one process (tests on parallel threads) must not share
    // one, since a finished run removes its own.
    static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let work_dir =
        std::env::temp_dir().join(format!("nodepass-bench-{}-{run}", std::process::id()));
    std::fs::create_dir_all(&work_dir).with_context(|| format!("create {}", work_dir.display()))?;
    let ctx = Ctx {
        nodepass: plan.nodepass.clone(),
        target: target.addr(),
        work_dir: work_dir.clone(),
        key: random_key()?,
        ready_timeout: plan.ready_timeout,
        wan: wan.clone(),
    };
    let link_rtt = plan.wan.as_ref().map(|p| p.rtt);

    let subjects = plan.subjects();
    let rounds = plan.budget.rounds.max(1);
    let steps = rounds
        * plan
            .workloads
            .iter()
            .map(|w| subjects.iter().filter(|s| w.applies_to(s)).count())
            .sum::<usize>();
    let bar = progress_bar(steps as u64);
    let mut reports = Vec::new();
    for &workload in &plan.workloads {
        let measured: Vec<&Subject> = subjects.iter().filter(|s| workload.applies_to(s)).collect();
        let mut each: Vec<Vec<Run>> = vec![Vec::with_capacity(rounds); measured.len()];
        for round in 1..=rounds {
            for (subject, runs) in measured.iter().zip(&mut each) {
                let mut step = format!("{}: {}", workload.name(), subject.label());
                if rounds > 1 {
                    step.push_str(&format!(" (round {round} of {rounds})"));
                }
                if bar.is_hidden() {
                    eprintln!("[{}/{steps}] {step}", bar.position() + 1);
                }
                bar.set_message(step);
                runs.push(measure(workload, subject, &ctx, &target, plan, link_rtt));
                bar.inc(1);
            }
        }
        let mut report = WorkloadReport {
            name: workload.name(),
            description: workload.describe(&plan.budget),
            runs: each.into_iter().filter_map(Run::median).collect(),
        };
        report.compute_ratios();
        reports.push(report);
    }
    bar.finish_and_clear();
    if reports
        .iter()
        .flat_map(|r| &r.runs)
        .any(|r| r.error.is_some())
    {
        eprintln!("process logs kept in {}", work_dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&work_dir);
    }

    let wan = wan.zip(link_before).map(|(tb, (ab0, ba0))| WanReport {
        profile: tb.profile().clone(),
        congestion_control: tb.congestion_control(),
        realtime: tb.realtime(),
        a_to_b: tb.a_to_b().since(&ab0),
        b_to_a: tb.b_to_a().since(&ba0),
    });
    Ok(Report {
        format: FORMAT,
        version: FORMAT_VERSION,
        date,
        command: plan.command.clone(),
        quick: plan.quick,
        machine,
        nodepass: plan.nodepass.display().to_string(),
        budget: plan.budget.clone(),
        targets: {
            let mut t = match plan.wan {
                None => targets::evaluate(&reports, &plan.tls),
                Some(_) => targets::evaluate_wan(&reports, &plan.tls),
            };
            t.extend(transport_targets::evaluate(&reports, plan.wan.is_some()));
            t
        },
        workloads: reports,
        wan,
    })
}

fn measure(
    workload: Workload,
    subject: &Subject,
    ctx: &Ctx,
    target: &Target,
    plan: &Plan,
    link_rtt: Option<Duration>,
) -> Run {
    let result = subject
        .start(ctx)
        .with_context(|| format!("start {}", subject.label()))
        .and_then(|endpoint| workloads::run(workload, &endpoint, target, &plan.budget, link_rtt));
    let (metrics, error) = match result {
        Ok(m) => (m, None),
        Err(e) => (Metrics::default(), Some(format!("{e:#}"))),
    };
    Run {
        subject: subject.label(),
        implementation: subject.implementation(),
        tls: subject.tls(),
        notes: metrics.notes().to_vec(),
        metrics,
        ratio_to_direct: BTreeMap::new(),
        error,
    }
}

fn progress_bar(len: u64) -> ProgressBar {
    let bar = ProgressBar::new(len);
    let style = ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
        .expect("valid template")
        .progress_chars("=> ");
    bar.set_style(style);
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Raise the descriptor limit as far as allowed: the memory workload holds thousands of
/// sockets here and in the tunnel processes, which inherit the limit.
fn raise_nofile_limit() {
    let nofile = rlimit::Resource::NOFILE;
    if let Ok((_, hard)) = nofile.get()
        && hard < WANTED_NOFILE
    {
        // Raising the hard limit needs privilege; without it, keep the hard limit.
        let _ = nofile.set(WANTED_NOFILE, WANTED_NOFILE);
    }
    let _ = rlimit::increase_nofile_limit(WANTED_NOFILE);
}

/// 128 random bits as hex, from the kernel.
fn random_key() -> anyhow::Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("read /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn machine() -> Machine {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default();
    Machine {
        nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu,
        kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
        load_avg_1m: read("/proc/loadavg")
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0),
    }
}

/// `t` as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339_utc(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_dates() {
        let at = |s| rfc3339_utc(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_767_225_599), "2025-12-31T23:59:59Z");
    }

    #[test]
    fn keys_are_hex_and_fresh() {
        let (a, b) = (random_key().unwrap(), random_key().unwrap());
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
