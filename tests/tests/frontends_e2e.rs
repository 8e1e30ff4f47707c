//! What frontends do, done by the real things. The API reference's integration examples
//! (`tests/browser/api-reference.mjs`: the reference's own JavaScript) against our master in the
//! `api=envelope` dialect. And NodePanel, a real NodePass frontend (static build in `../shared/fixtures/nodepanel/site`),
//! driven in headless Chromium by `tests/browser/nodepanel.mjs` (playwright-core, Debian's
//! chromium): list, master version and system, create a server and a client through its
//! dialogs, see them running, carry traffic on loopback, see traffic figures, stop/start/restart,
//! live logs in the details window, delete.
//!
//! The same script runs against the Go NodePass v1.14 master (which NodePanel is written for:
//! this proves the script, not only our master) and against ours. Screenshots go to
//! `target/nodepanel-screens/`.
//!
//! Needs node with `npm ci` done in `tests/browser`, `/usr/bin/chromium` and `../shared`; fails
//! when one is missing under `CI=true`, skips with a note otherwise.

mod master_support;
mod peer_support;

use std::sync::Mutex;
use std::time::Duration;

use master_support::{MasterProcess, nodepass_exe, temp_dir};
use peer_support::{GoMaster, need_browser_kit, need_shared, repo_root, run_node};

/// One browser at a time (2 cores shared by everything else).
static BROWSER: Mutex<()> = Mutex::new(());

const KEY: &str = "nodepanel-e2e-master-key-0c4f";

fn drive(api: &str, key: &str, label: &str) -> Option<(bool, String)> {
    let kit = need_browser_kit()?;
    let site = need_shared("fixtures/nodepanel/site")?;
    let screens = repo_root().join("target/nodepanel-screens");
    let _guard = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    Some(run_node(
        &kit,
        "nodepanel.mjs",
        &[
            ("NP_API", api.to_string()),
            ("NP_KEY", key.to_string()),
            ("NP_SITE", site.display().to_string()),
            ("NP_SCREENS", screens.display().to_string()),
            ("NP_LABEL", label.to_string()),
        ],
        Duration::from_secs(420),
    ))
}

/// The reference run: the same script against the Go master, which NodePanel is written for.
/// Not in CI: under load the Go pair sometimes does not recover from a client stop/start within
/// the script's waits (its server goes to `error`), which says nothing about ours. Run it by hand
/// when changing the script: `cargo test -p nodepass-tests --test frontends_e2e -- --ignored`.
#[test]
#[ignore = "reference run against the Go master; by hand when changing nodepanel.mjs"]
fn nodepanel_drives_the_go_master() {
    let Some(go) = GoMaster::start("info") else {
        return;
    };
    let Some((ok, out)) = drive(&go.api(), &go.key, "go") else {
        return;
    };
    assert!(ok, "NodePanel against the Go master failed:\n{out}");
}

#[test]
fn nodepanel_drives_our_master() {
    if need_browser_kit().is_none() || need_shared("fixtures/nodepanel/site").is_none() {
        return;
    }
    let dir = temp_dir("nodepanel");
    let master = MasterProcess::start_with(
        &dir.path().join("state.db"),
        "",
        &[("NODEPASS_API_KEY", KEY)],
    );
    let api = format!("{}/v1", master.base);
    let Some((ok, out)) = drive(&api, KEY, "ours") else {
        return;
    };
    assert!(
        ok,
        "NodePanel against our master failed:\n{out}\nmaster log (tail):\n{}",
        master
            .log()
            .iter()
            .rev()
            .take(60)
            .rev()
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    master.stop();
}

#[test]
fn the_api_reference_examples_run_against_the_envelope_dialect() {
    let Some(kit) = need_browser_kit() else {
        return;
    };
    let (ok, out) = run_node(
        &kit,
        "api-reference.mjs",
        &[("NP_EXE", nodepass_exe().display().to_string())],
        Duration::from_secs(300),
    );
    assert!(ok, "the API reference's examples failed:\n{out}");
}
