//! The packaging files: the systemd unit passes `systemd-analyze verify` (and keeps its
//! hardening), and the container's default command is a master URL nodepass accepts.
//!
//! `systemd-analyze` is required under `CI=true`; elsewhere a missing one skips the test.

use std::process::Command;

const NODEPASS: &str = env!("CARGO_BIN_EXE_nodepass");

fn packaging(name: &str) -> String {
    let path = format!("{}/../packaging/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn systemd_unit_verifies_and_is_hardened() {
    let unit = packaging("nodepass@.service");
    for line in [
        "ExecStart=/usr/local/bin/nodepass --url-file ${CREDENTIALS_DIRECTORY}/url",
        "LoadCredential=url:/etc/nodepass/%i.url",
        "DynamicUser=yes",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "RestartPreventExitStatus=64",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
    ] {
        assert!(unit.lines().any(|l| l == line), "unit lacks {line}");
    }
    let found = Command::new("sh")
        .args(["-c", "command -v systemd-analyze"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "systemd-analyze is required under CI=true"
        );
        eprintln!("skipped: systemd-analyze is not installed");
        return;
    }
    // verify checks that ExecStart exists: point it at the executable under test, and give the
    // template an instance name.
    let dir = nodepass_testkit::temp_dir("unit");
    let path = dir.path().join("nodepass@demo.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/nodepass", NODEPASS)).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn container_runs_a_master_as_a_non_root_user() {
    let file = packaging("Containerfile");
    let user = file
        .lines()
        .rfind(|l| l.starts_with("USER "))
        .expect("USER");
    assert!(!user.contains("root") && !user.contains(" 0"), "{user}");
    let cmd = file.lines().rfind(|l| l.starts_with("CMD ")).expect("CMD");
    let url = cmd.split('"').nth(1).expect("CMD [\"URL\"]");
    let out = Command::new(NODEPASS)
        .args(["--check", url])
        .env_remove("NODEPASS_URL")
        .output()
        .unwrap();
    assert!(out.status.success(), "{url}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("master://"));
}
