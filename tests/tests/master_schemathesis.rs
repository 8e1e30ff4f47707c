//! schemathesis (PyPI) against our master's OpenAPI document, in both dialects
//! (`api=nodepass`, the default, and `api=envelope`), with all its checks and a bounded number
//! of examples: the document must describe what the server does. The few per-operation
//! exceptions, each with its reason, are in `tests/schemathesis/schemathesis.toml`.
//!
//! The master and schemathesis run inside their own network namespace with only loopback
//! (`unshare -n`, see `tests/schemathesis/run.sh`): generated instance URLs and tcping targets
//! name arbitrary hosts, and nothing may leave this machine. JUnit reports go to
//! `target/schemathesis/`.
//!
//! Needs root (for the namespace), `unshare`, `ip` and `st` (`pip install schemathesis`;
//! `.ci/run` does): fails when one is missing under `CI=true`, skips with a note otherwise.

mod master_support;
mod peer_support;

use std::process::{Command, Stdio};

use master_support::nodepass_exe;
use peer_support::{missing, repo_root};

/// Examples per operation and phase: enough to find the known failures, small enough for CI.
const MAX_EXAMPLES: &str = "8";

fn available() -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n");
    if root.ok() != Some(true) {
        return missing("root (a network namespace needs it)").is_some();
    }
    for tool in ["unshare", "ip", "st"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return missing(&format!(
                "{tool} (pip install schemathesis; util-linux; iproute2)"
            ))
            .is_some();
        }
    }
    true
}

fn run(dialect: &str) {
    if !available() {
        return;
    }
    let root = repo_root();
    let reports = root.join("target/schemathesis");
    // Bounded by schemathesis's own request timeout and example count; `timeout` caps the whole.
    let out = Command::new("timeout")
        .arg("900")
        .args(["unshare", "-n", "bash"])
        .arg(root.join("tests/schemathesis/run.sh"))
        .arg(nodepass_exe())
        .arg(dialect)
        .arg(MAX_EXAMPLES)
        .arg(&reports)
        .stdin(Stdio::null())
        .output()
        .expect("run schemathesis");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(
        out.status.success(),
        "schemathesis found failures in the {dialect} dialect ({}):\n{text}",
        out.status
    );
}

#[test]
fn the_nodepass_dialect_matches_its_openapi_document() {
    run("nodepass");
}

#[test]
fn the_envelope_dialect_matches_its_openapi_document() {
    run("envelope");
}
