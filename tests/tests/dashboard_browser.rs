//! The web dashboard end to end: `tests/browser/dashboard.mjs` (playwright-core with Debian's
//! Chromium) signs in, creates a server and a client through the form (one invalid value
//! first), pushes bytes through them, watches the graphs, totals and log, stops, starts,
//! deletes and signs out, saving screenshots of every page in both themes under
//! `target/dashboard-screens/`. (The session, CSRF and history endpoints are tested without a
//! browser in `nodepass-api/tests/dashboard.rs`.)
//!
//! Needs `node`, `/usr/bin/chromium` and `tests/browser/node_modules` (`npm ci` there; `.ci/run`
//! does it). Without them the test fails when `CI` is set and is skipped, with a note, otherwise.

mod master_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use master_support::{MasterProcess, free_ports, temp_dir};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// What is missing to run the browser, if anything.
fn missing_tools() -> Option<String> {
    let dir = repo().join("tests/browser/node_modules/playwright-core");
    if !Path::new("/usr/bin/chromium").exists() {
        return Some("/usr/bin/chromium".into());
    }
    if Command::new("node").arg("--version").output().is_err() {
        return Some("node".into());
    }
    if !dir.exists() {
        return Some(format!("{} (run npm ci in tests/browser)", dir.display()));
    }
    None
}

/// The key the master printed at its first start (bounded wait for the line).
fn generated_key(master: &MasterProcess) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(line) = master.log().iter().find(|l| l.contains("new API key")) {
            return line.split_whitespace().last().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "no key line: {:?}", master.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_works_in_a_browser() {
    if let Some(what) = missing_tools() {
        if std::env::var_os("CI").is_some() {
            panic!("{what} is missing (CI is set)");
        }
        eprintln!("skipped: {what} is missing");
        return;
    }
    let dir = temp_dir("dashboard");
    // A generated key (printed once on stderr), so that the page can rotate it.
    let master = MasterProcess::start(&dir.path().join("state.db"), &[]);
    let key = generated_key(&master);
    let origin = master.base.trim_end_matches("/api").to_string();
    let shots = repo().join("target/dashboard-screens");
    let [a, b] = free_ports();
    let ports = format!("{a},{b}");

    let mut child = Command::new("node")
        .arg(repo().join("tests/browser/dashboard.mjs"))
        .current_dir(repo().join("tests/browser"))
        .env("NP_URL", &origin)
        .env("NP_KEY", &key)
        .env("NP_PORTS", &ports)
        .env("NP_SHOTS", &shots)
        .stdin(Stdio::null())
        .spawn()
        .expect("start node");
    let deadline = Instant::now() + Duration::from_secs(240);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the browser test did not finish within 240 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        status.success(),
        "the browser test failed ({status}); screenshots in {}; master log: {:?}",
        shots.display(),
        master.log()
    );
    for name in ["signin", "overview", "instances", "form-error", "detail"] {
        for theme in ["light", "dark"] {
            let file = shots.join(format!("{name}-{theme}.png"));
            assert!(file.exists(), "{} was not saved", file.display());
        }
    }

    drop(master);
}
