//! The results of a run: what the table shows and `--json` writes (schema in
//! `docs/benchmarks.md`).

use std::collections::BTreeMap;

use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

use crate::plan::Budget;
use crate::targets::TargetCheck;

/// Format name in the JSON document.
pub const FORMAT: &str = "nodepass-bench";
/// Version of the JSON schema; bumped on incompatible changes.
pub const FORMAT_VERSION: u32 = 1;

/// A metric value: counts stay integers in the JSON.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Num {
    /// A count.
    Int(u64),
    /// A measurement.
    Float(f64),
}

impl Num {
    /// The value as a float.
    pub fn as_f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }
}

impl From<u64> for Num {
    fn from(v: u64) -> Num {
        Num::Int(v)
    }
}

impl From<usize> for Num {
    fn from(v: usize) -> Num {
        Num::Int(v as u64)
    }
}

impl From<f64> for Num {
    fn from(v: f64) -> Num {
        Num::Float(v)
    }
}

/// One named value of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    /// Key, with its unit as suffix (`p50_us`, `gbit_per_s`).
    pub key: String,
    /// The value.
    pub value: Num,
    /// Whether the table shows it (the JSON has every metric).
    pub shown: bool,
}

/// The metrics of one run, in the order the workload produced them, and notes about how the
/// run went. Serialised as an object of the metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    values: Vec<Metric>,
    notes: Vec<String>,
}

impl Metrics {
    /// Add a metric the table shows.
    pub fn show(&mut self, key: impl Into<String>, value: impl Into<Num>) {
        self.push(key.into(), value.into(), true);
    }

    /// Add a metric only the JSON carries.
    pub fn add(&mut self, key: impl Into<String>, value: impl Into<Num>) {
        self.push(key.into(), value.into(), false);
    }

    fn push(&mut self, key: String, value: Num, shown: bool) {
        debug_assert!(self.get(&key).is_none(), "metric {key} twice");
        self.values.push(Metric { key, value, shown });
    }

    /// Record something a reader of the figures must know (e.g. fewer connections than asked).
    pub fn note(&mut self, text: impl Into<String>) {
        self.notes.push(text.into());
    }

    /// The notes, in order.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<f64> {
        self.values
            .iter()
            .find(|m| m.key == key)
            .map(|m| m.value.as_f64())
    }

    /// Every metric, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Metric> {
        self.values.iter()
    }
}

impl Serialize for Metrics {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.values.len()))?;
        for m in &self.values {
            map.serialize_entry(&m.key, &m.value)?;
        }
        map.end()
    }
}

/// One workload measured on one subject.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// The column label (`direct`, `nodepass tls=1`, `gost`).
    pub subject: String,
    /// `direct`, `nodepass` or the peer's name.
    pub implementation: String,
    /// The TLS mode, when the subject has one.
    pub tls: Option<u8>,
    /// What was measured (empty after an error).
    pub metrics: Metrics,
    /// This run's shown metrics divided by the direct run's (when both exist, direct non-zero).
    pub ratio_to_direct: BTreeMap<String, f64>,
    /// What a reader of the figures must know (the run still counts).
    pub notes: Vec<String>,
    /// Why the run failed, if it did.
    pub error: Option<String>,
}

impl Run {
    /// The value of `key`, if the run succeeded and has it.
    pub fn get(&self, key: &str) -> Option<f64> {
        self.metrics.get(key)
    }

    /// One run from the rounds of one subject (`None` for no rounds): each metric the median
    /// of the rounds that succeeded (of an even number, the mean of the middle two; a count
    /// takes the lower of them, a value one round had), every note once, and a note saying
    /// how many rounds failed and the first one's error. All rounds failed: the first one.
    pub fn median(rounds: Vec<Run>) -> Option<Run> {
        let total = rounds.len();
        let (ok, failed): (Vec<Run>, Vec<Run>) =
            rounds.into_iter().partition(|r| r.error.is_none());
        let Some(first) = ok.first() else {
            return failed.into_iter().next();
        };
        if total == 1 {
            return ok.into_iter().next();
        }
        let mut metrics = Metrics::default();
        for m in first.metrics.iter() {
            let values: Vec<Num> = ok
                .iter()
                .filter_map(|r| r.metrics.values.iter().find(|x| x.key == m.key))
                .map(|x| x.value)
                .collect();
            metrics.push(m.key.clone(), median_of(values), m.shown);
        }
        let mut notes: Vec<String> = Vec::new();
        for n in ok.iter().flat_map(|r| &r.notes) {
            if !notes.contains(n) {
                notes.push(n.clone());
            }
        }
        if let Some(f) = failed.first() {
            notes.push(format!(
                "{} of {total} rounds failed, not counted (first: {})",
                failed.len(),
                f.error.as_deref().unwrap_or_default()
            ));
        }
        Some(Run {
            subject: first.subject.clone(),
            implementation: first.implementation.clone(),
            tls: first.tls,
            metrics,
            ratio_to_direct: BTreeMap::new(),
            notes,
            error: None,
        })
    }
}

/// The median of `values` (not empty): counts give the lower middle one, measurements the
/// middle one or the mean of the middle two.
fn median_of(mut values: Vec<Num>) -> Num {
    if values.iter().all(|v| matches!(v, Num::Int(_))) {
        values.sort_by_key(|v| v.as_f64() as u64);
        return values[(values.len() - 1) / 2];
    }
    let mut f: Vec<f64> = values.iter().map(|v| v.as_f64()).collect();
    f.sort_by(f64::total_cmp);
    let n = f.len();
    Num::Float(if n % 2 == 1 {
        f[n / 2]
    } else {
        (f[n / 2 - 1] + f[n / 2]) / 2.0
    })
}

/// Every run of one workload.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadReport {
    /// The workload's name.
    #[serde(skip)]
    pub name: &'static str,
    /// What it does, with this run's budget.
    pub description: String,
    /// One run per subject it applies to.
    pub runs: Vec<Run>,
}

impl WorkloadReport {
    /// The run of `implementation` at `tls` (`None`: without a TLS mode, e.g. direct).
    pub fn run(&self, implementation: &str, tls: Option<u8>) -> Option<&Run> {
        self.runs
            .iter()
            .find(|r| r.implementation == implementation && r.tls == tls && r.error.is_none())
    }

    /// Fill in every run's `ratio_to_direct`.
    pub fn compute_ratios(&mut self) {
        let Some(direct) = self.run("direct", None).cloned() else {
            return;
        };
        for run in self
            .runs
            .iter_mut()
            .filter(|r| r.implementation != "direct")
        {
            for m in run.metrics.iter().filter(|m| m.shown) {
                if let Some(base) = direct.get(&m.key).filter(|&b| b != 0.0) {
                    run.ratio_to_direct
                        .insert(m.key.clone(), m.value.as_f64() / base);
                }
            }
        }
    }
}

/// The machine the run happened on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Logical CPUs available to the harness.
    pub nproc: usize,
    /// CPU model name from `/proc/cpuinfo`.
    pub cpu: String,
    /// Kernel release.
    pub kernel: String,
    /// 1-minute load average when the run started (other work on the machine).
    pub load_avg_1m: f64,
}

/// A whole run: what `--json` writes.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Always [`FORMAT`].
    pub format: &'static str,
    /// Always [`FORMAT_VERSION`].
    pub version: u32,
    /// Start of the run, RFC 3339 UTC.
    pub date: String,
    /// The command line.
    pub command: String,
    /// Whether `--quick` was given.
    pub quick: bool,
    /// The machine.
    pub machine: Machine,
    /// The nodepass executable measured.
    pub nodepass: String,
    /// Sizes and durations used.
    pub budget: Budget,
    /// Results by workload name, in run order.
    #[serde(serialize_with = "by_name")]
    pub workloads: Vec<WorkloadReport>,
    /// The targets, checked against nodepass's runs.
    pub targets: Vec<TargetCheck>,
    /// The emulated WAN the run crossed (absent on loopback).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wan: Option<WanReport>,
}

/// The emulated WAN of a run: its settings and what the link did during the run.
#[derive(Debug, Clone, Serialize)]
pub struct WanReport {
    /// The link's settings.
    pub profile: crate::wan::Profile,
    /// TCP congestion control in the namespaces.
    pub congestion_control: String,
    /// Whether the link's threads ran with the real-time policy.
    pub realtime: bool,
    /// Packets from the users' side (A) to the target's side (B).
    pub a_to_b: crate::wan::link::DirStats,
    /// Packets from B to A.
    pub b_to_a: crate::wan::link::DirStats,
}

fn by_name<S: Serializer>(w: &[WorkloadReport], s: S) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(w.len()))?;
    for wl in w {
        map.serialize_entry(wl.name, wl)?;
    }
    map.end()
}

impl Report {
    /// Every note of a run, as `(workload, subject, note)`.
    pub fn notes(&self) -> Vec<(&str, &str, &str)> {
        self.workloads
            .iter()
            .flat_map(|w| {
                w.runs.iter().flat_map(move |r| {
                    r.notes
                        .iter()
                        .map(move |n| (w.name, r.subject.as_str(), n.as_str()))
                })
            })
            .collect()
    }

    /// Every failed run, as `(workload, subject, error)`.
    pub fn errors(&self) -> Vec<(&str, &str, &str)> {
        self.workloads
            .iter()
            .flat_map(|w| {
                w.runs.iter().filter_map(move |r| {
                    r.error.as_deref().map(|e| (w.name, r.subject.as_str(), e))
                })
            })
            .collect()
    }

    /// The report as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report always serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(implementation: &str, tls: Option<u8>, gbps: f64) -> Run {
        let mut metrics = Metrics::default();
        metrics.show("gbit_per_s", gbps);
        metrics.add("bytes", 10u64);
        Run {
            subject: implementation.into(),
            implementation: implementation.into(),
            tls,
            metrics,
            ratio_to_direct: BTreeMap::new(),
            notes: Vec::new(),
            error: None,
        }
    }

    #[test]
    fn ratios_cover_shown_metrics_against_direct() {
        let mut w = WorkloadReport {
            name: "bulk",
            description: String::new(),
            runs: vec![run("direct", None, 40.0), run("nodepass", Some(0), 10.0)],
        };
        w.compute_ratios();
        let np = w.run("nodepass", Some(0)).unwrap();
        assert_eq!(np.ratio_to_direct.get("gbit_per_s"), Some(&0.25));
        assert!(!np.ratio_to_direct.contains_key("bytes"));
        assert!(w.run("direct", None).unwrap().ratio_to_direct.is_empty());
    }

    #[test]
    fn metrics_serialise_as_an_object_with_integer_counts() {
        let json = serde_json::to_value(run("direct", None, 1.5).metrics).unwrap();
        assert_eq!(json, serde_json::json!({"gbit_per_s": 1.5, "bytes": 10}));
    }

    /// Rounds combine metric by metric: the median of the rounds that succeeded (the mean of
    /// the middle two for an even count of measurements, the lower middle one for counts),
    /// shown/hidden kept, notes once each, failed rounds left out and said; all failed: the
    /// first failure; one round: unchanged.
    #[test]
    fn rounds_combine_into_medians() {
        let with = |gbps: f64, bytes: u64, note: &str| {
            let mut r = run("nodepass", Some(1), gbps);
            r.metrics.values[1].value = Num::Int(bytes);
            r.notes.push(note.into());
            r
        };
        let failed = |why: &str| Run {
            metrics: Metrics::default(),
            error: Some(why.into()),
            ..run("nodepass", Some(1), 0.0)
        };
        let m = Run::median(vec![
            with(30.0, 7, "a"),
            failed("start failed"),
            with(10.0, 5, "b"),
            with(20.0, 9, "a"),
        ])
        .unwrap();
        assert_eq!(m.get("gbit_per_s"), Some(20.0));
        assert_eq!(m.metrics.values[1].value, Num::Int(7));
        assert!(m.metrics.values[0].shown && !m.metrics.values[1].shown);
        assert_eq!(m.error, None);
        assert_eq!(m.notes[..2], ["a".to_owned(), "b".to_owned()]);
        assert_eq!(
            m.notes[2],
            "1 of 4 rounds failed, not counted (first: start failed)"
        );
        let even = Run::median(vec![with(10.0, 4, "x"), with(40.0, 8, "x")]).unwrap();
        assert_eq!(even.get("gbit_per_s"), Some(25.0));
        assert_eq!(even.metrics.values[1].value, Num::Int(4));
        assert_eq!(even.notes, ["x".to_owned()]);
        let all_failed = Run::median(vec![failed("first"), failed("second")]).unwrap();
        assert_eq!(all_failed.error.as_deref(), Some("first"));
        let one = with(3.0, 1, "n");
        assert_eq!(Run::median(vec![one.clone()]).unwrap().metrics, one.metrics);
        assert!(Run::median(Vec::new()).is_none());
    }
}
