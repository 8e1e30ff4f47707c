//! The human-readable report: a Markdown table (readable as is in a terminal, pasteable into
//! docs), then the targets with pass/miss marks, then any errors.

use std::fmt::Write;

use crate::report::{Metric, Num, Report, Run, WorkloadReport};

/// Render the whole report.
pub fn render(report: &Report) -> String {
    let mut rows: Vec<Vec<String>> = Vec::new();
    let subjects = subjects(report);
    let ratios = |s: &String| s != "direct" && subjects.iter().any(|x| x == "direct");
    let mut header = vec!["workload".to_owned(), "metric".to_owned()];
    for s in &subjects {
        header.push(s.clone());
        if ratios(s) {
            header.push("vs direct".to_owned());
        }
    }
    for w in &report.workloads {
        for key in shown_keys(w) {
            let mut row = vec![w.name.to_owned(), label(&key)];
            for s in &subjects {
                let run = w.runs.iter().find(|r| &r.subject == s);
                row.push(cell(run, &key));
                if ratios(s) {
                    let ratio = run.and_then(|r| r.ratio_to_direct.get(&key));
                    row.push(ratio.map_or(String::new(), |&r| ratio_text(&key, r)));
                }
            }
            rows.push(row);
        }
    }
    let mut out = String::new();
    if let Some(w) = &report.wan {
        let _ = writeln!(
            out,
            "Emulated WAN: {} (TCP {}{}); link A>B {} packets, {} lost, {} queue drops; B>A {} \
             packets, {} lost, {} queue drops\n",
            w.profile,
            w.congestion_control,
            if w.realtime {
                ""
            } else {
                "; link threads NOT real-time"
            },
            w.a_to_b.received,
            w.a_to_b.lost,
            w.a_to_b.queue_drops,
            w.b_to_a.received,
            w.b_to_a.lost,
            w.b_to_a.queue_drops
        );
    }
    if report.budget.rounds > 1 {
        let _ = writeln!(
            out,
            "Each figure: the median of {} rounds (the subjects measured in turn in each).\n",
            report.budget.rounds
        );
    }
    out.push_str(&markdown(&header, &rows));

    if !report.targets.is_empty() {
        out.push_str(match report.wan {
            None => "\nTargets (issues 7, 15 and 17), nodepass:\n",
            Some(_) => "\nTargets (issues 15 and 17, WAN), nodepass:\n",
        });
        for t in &report.targets {
            let _ = writeln!(
                out,
                "- [{}] {} tls={} {}: {} {} (target {} {} {})",
                if t.pass { "pass" } else { "MISS" },
                t.workload,
                t.tls,
                t.what,
                number(t.measured),
                t.unit,
                t.op,
                number(t.limit),
                t.unit,
            );
        }
    }
    let notes = report.notes();
    if !notes.is_empty() {
        out.push_str("\nNotes:\n");
        for (workload, subject, n) in notes {
            let _ = writeln!(out, "- {workload} / {subject}: {n}");
        }
    }
    let errors = report.errors();
    if !errors.is_empty() {
        out.push_str("\nErrors:\n");
        for (workload, subject, e) in errors {
            let _ = writeln!(out, "- {workload} / {subject}: {e}");
        }
    }
    out
}

/// Column labels in first-seen order.
fn subjects(report: &Report) -> Vec<String> {
    let mut s: Vec<String> = Vec::new();
    for r in report.workloads.iter().flat_map(|w| &w.runs) {
        if !s.contains(&r.subject) {
            s.push(r.subject.clone());
        }
    }
    s
}

/// The shown metric keys of a workload, in first-seen order over its runs.
fn shown_keys(w: &WorkloadReport) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    for m in w.runs.iter().flat_map(|r| r.metrics.iter()) {
        if m.shown && !keys.contains(&m.key) {
            keys.push(m.key.clone());
        }
    }
    keys
}

fn cell(run: Option<&Run>, key: &str) -> String {
    match run {
        None => "-".to_owned(),
        Some(r) if r.error.is_some() => "error".to_owned(),
        Some(r) => r
            .metrics
            .iter()
            .find(|m: &&Metric| m.key == key)
            .map_or("-".to_owned(), |m| match m.value {
                Num::Int(i) => i.to_string(),
                Num::Float(f) => number(f),
            }),
    }
}

/// A readable label from a metric key: units become suffixes.
fn label(key: &str) -> String {
    if key == "gbit_per_s" {
        return "Gbit/s".to_owned();
    }
    let mut s = key.to_owned();
    for (from, to) in [
        ("_kib_per_conn", " KiB/conn"),
        ("_fds_per_conn", " fds/conn"),
        ("_us_per_conn", " µs/conn"),
        ("kib_per_conn", "KiB/conn (all)"),
        ("_s_per_gb", " s/GB"),
        ("_idle_kib", " idle KiB"),
        ("_pct", " %"),
        ("_rtts", " RTTs"),
        ("_us", " µs"),
    ] {
        if let Some(stem) = s.strip_suffix(from) {
            s = format!("{stem}{to}");
        }
    }
    s.replace('_', " ")
}

fn ratio_text(key: &str, r: f64) -> String {
    if key == "gbit_per_s" {
        format!("{:.0}%", r * 100.0)
    } else {
        format!("{r:.2}x")
    }
}

/// Three significant figures or so, never scientific.
fn number(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".to_owned()
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn markdown(header: &[String], rows: &[Vec<String>]) -> String {
    let width = |i: usize| {
        std::iter::once(&header[i])
            .chain(rows.iter().map(|r| &r[i]))
            .map(|c| c.chars().count())
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..header.len()).map(width).collect();
    let line = |cells: &[String]| {
        let mut l = String::from("|");
        for (i, c) in cells.iter().enumerate() {
            let pad = widths[i] - c.chars().count();
            // Text columns left-aligned, figures right-aligned.
            if i < 2 {
                let _ = write!(l, " {c}{} |", " ".repeat(pad));
            } else {
                let _ = write!(l, " {}{c} |", " ".repeat(pad));
            }
        }
        l.push('\n');
        l
    };
    let mut out = line(header);
    out.push('|');
    for (i, w) in widths.iter().enumerate() {
        let dashes = "-".repeat((*w).max(3));
        if i < 2 {
            let _ = write!(out, " {dashes} |");
        } else {
            let _ = write!(out, " {}: |", &dashes[1..]);
        }
    }
    out.push('\n');
    for r in rows {
        out.push_str(&line(r));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_numbers() {
        assert_eq!(label("p50_us"), "p50 µs");
        assert_eq!(label("server_idle_kib"), "server idle KiB");
        assert_eq!(label("client_kib_per_conn"), "client KiB/conn");
        assert_eq!(label("kib_per_conn"), "KiB/conn (all)");
        assert_eq!(label("delivered_pct"), "delivered %");
        assert_eq!(label("cpu_s_per_gb"), "cpu s/GB");
        assert_eq!(label("path_cpu_s_per_gb"), "path cpu s/GB");
        assert_eq!(number(1234.5), "1234");
        assert_eq!(number(12.345), "12.3");
        assert_eq!(number(0.1234), "0.12");
        assert_eq!(ratio_text("gbit_per_s", 0.456), "46%");
        assert_eq!(ratio_text("p50_us", 2.5), "2.50x");
    }

    #[test]
    fn markdown_is_aligned() {
        let t = markdown(
            &["workload".into(), "metric".into(), "direct".into()],
            &[vec!["bulk".into(), "Gbit/s".into(), "40.1".into()]],
        );
        assert_eq!(
            t,
            "| workload | metric | direct |\n\
             | -------- | ------ | -----: |\n\
             | bulk     | Gbit/s |   40.1 |\n"
        );
    }
}
