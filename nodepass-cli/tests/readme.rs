//! The README's runnable blocks, run as written: the quick start (a local web server, nodepass,
//! curl) and the private-CA commands (openssl), followed by a server and clients using the
//! certificates, including the hints for a missing `ca=`, a wrong `sni=` and a CA certificate
//! used as the server's.
//!
//! They need python3, curl and openssl: under `CI=true` a missing tool fails the test,
//! elsewhere the test is skipped with a message.

mod support;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{Proc, addr_field};

const NODEPASS: &str = env!("CARGO_BIN_EXE_nodepass");
const SECS: Duration = Duration::from_secs(20);

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap()
}

/// The first ```sh block after the line containing `marker`.
fn block(marker: &str) -> String {
    let text = readme();
    let start = text
        .find(marker)
        .unwrap_or_else(|| panic!("README lacks {marker}"));
    let rest = &text[start..];
    let open = rest.find("```sh\n").expect("a sh block") + "```sh\n".len();
    let close = rest[open..].find("```").expect("closed block");
    rest[open..open + close].to_owned()
}

/// True when `tool` runs; false (test skipped) when it is missing outside CI.
fn have(tool: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{tool} is required under CI=true"
        );
        eprintln!("skipped: {tool} is not installed");
    }
    found
}

fn temp_dir(name: &str) -> nodepass_testkit::TempDir {
    nodepass_testkit::temp_dir(&format!("readme-{name}"))
}

#[test]
fn quick_start_fetches_a_page_through_nodepass() {
    if !(have("python3") && have("curl") && have("bash")) {
        return;
    }
    let [web, local] = nodepass_testkit::free_ports();
    let script: String = block("quick-start:")
        .lines()
        .filter(|l| !l.starts_with("cargo build"))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("target/release/nodepass", NODEPASS)
        .replace("8080", &web.to_string())
        .replace("10101", &local.to_string());
    let dir = temp_dir("quick");
    let child = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(dir.path())
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pgid = child.id();
    let out = child.wait_with_output().unwrap();
    // Whatever the script did, nothing it started outlives the test.
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("Directory listing"),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stderr.contains(&format!("users=127.0.0.1:{local}")),
        "{stderr}"
    );
}

fn run_sh(script: &str, dir: &Path) {
    let out = Command::new("sh")
        .arg("-e")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn start_server(dir: &Path, crt: &str, key: &str) -> (Proc, u16) {
    let url = format!(
        "server://readme-tls-key-0123456789abcdef@127.0.0.1:0/127.0.0.1:0?mode=1&tls=2&crt={crt}&key={key}"
    );
    let mut server = Proc::start_in(&url, false, Some(dir));
    let line = server.wait_for(&["server listening"], SECS);
    let port = addr_field(&line, "tunnel");
    (server, port)
}

fn client(dir: &Path, port: u16, params: &str) -> Proc {
    let url = format!(
        "client://readme-tls-key-0123456789abcdef@127.0.0.1:{port}/127.0.0.1:1?mode=2{params}"
    );
    Proc::start_in(&url, false, Some(dir))
}

#[test]
fn private_ca_steps_make_certificates_that_work_and_errors_say_what_to_add() {
    if !have("openssl") {
        return;
    }
    let dir = temp_dir("tls");
    run_sh(&block("tls-private-ca:"), dir.path());
    let text = readme();
    assert!(text.contains("tls=2&crt=server.crt&key=server.key") && text.contains("ca=ca.crt"));

    let (mut server, port) = start_server(dir.path(), "server.crt", "server.key");
    client(dir.path(), port, "&ca=ca.crt").wait_for(&["connected to the server"], SECS);
    client(dir.path(), port, "").wait_for(&["UnknownIssuer", "add ca=PATH"], SECS);
    server.wait_for(&["UnknownCA", "give the client ca=PATH"], SECS);
    client(dir.path(), port, "&ca=ca.crt&sni=wrong.example").wait_for(&["add sni=NAME"], SECS);
    drop(server);

    // What a newcomer tries first: one self-signed certificate, used as its own CA.
    run_sh(
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
         -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 -keyout self.key -out self.crt",
        dir.path(),
    );
    let (_server, port) = start_server(dir.path(), "self.crt", "self.key");
    client(dir.path(), port, "&ca=self.crt")
        .wait_for(&["CaUsedAsEndEntity", "sign a separate"], SECS);
}
