//! The executables end to end: `--check`, URL sources, scheme handling and exit codes.

use std::process::{Command, Output};

const NODEPASS: &str = env!("CARGO_BIN_EXE_nodepass");
const SERVER: &str = env!("CARGO_BIN_EXE_nodepass-server");
const CLIENT: &str = env!("CARGO_BIN_EXE_nodepass-client");
const MASTER: &str = env!("CARGO_BIN_EXE_nodepass-master");

const KEY: &str = "s3cr3t-Key";

/// Run `exe` with `args`, without inheriting NODEPASS_* from the test environment.
fn run(exe: &str, args: &[&str], env_url: Option<&str>) -> Output {
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .env_remove("NODEPASS_URL")
        .env_remove("NODEPASS_LOG_FORMAT");
    if let Some(url) = env_url {
        cmd.env("NODEPASS_URL", url);
    }
    cmd.output().expect("run the executable")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_no_key(out: &Output) {
    assert!(
        !stdout(out).contains(KEY) && !stderr(out).contains(KEY),
        "{out:?}"
    );
}

#[test]
fn check_prints_the_masked_canonical_url() {
    let url = format!("server://{KEY}@:10101/127.0.0.1:8080?max=8");
    let out = run(NODEPASS, &["--check", &url], None);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).trim(),
        "server://****@:10101/127.0.0.1:8080?log=info&tls=0&dns=5m&max=8&mode=0&type=0\
         &dial=auto&read=0&rate=0&slot=65536&proxy=0&block=0&notcp=0&noudp=0"
    );
    assert_no_key(&out);
}

#[test]
fn check_refuses_invalid_urls_with_64() {
    for url in [
        format!("server://{KEY}@:10101/127.0.0.1:8080?max=0"),
        format!("client://{KEY}@:10101/127.0.0.1:8080?tls=1"),
        format!("server://{KEY}:pw@:10101/127.0.0.1:8080"),
        format!("server://{KEY}@:10101"),
        "bogus://x:1/y:2".to_owned(),
    ] {
        let out = run(NODEPASS, &["--check", &url], None);
        assert_eq!(out.status.code(), Some(64), "{url}: {}", stderr(&out));
        assert!(stdout(&out).is_empty());
        assert!(!stderr(&out).is_empty());
        assert_no_key(&out);
    }
}

#[test]
fn derived_key_warning_on_stderr() {
    let out = run(
        NODEPASS,
        &["--check", "server://:10101/127.0.0.1:8080"],
        None,
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("warning"), "{}", stderr(&out));
    let out = run(
        NODEPASS,
        &["--check", "client://127.0.0.1:10101/127.0.0.1:8080"],
        None,
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
}

#[test]
fn url_from_environment_and_file() {
    let url = format!("client://{KEY}@127.0.0.1:10101/127.0.0.1:8080");
    let out = run(NODEPASS, &["--check"], Some(&url));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("client://****@127.0.0.1:10101/"));
    assert_no_key(&out);

    let path = std::env::temp_dir().join(format!("nodepass-url-{}", std::process::id()));
    std::fs::write(&path, format!("  {url}\n")).unwrap();
    let out = run(
        NODEPASS,
        &["--check", "--url-file", path.to_str().unwrap()],
        None,
    );
    std::fs::remove_file(&path).unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("client://****@127.0.0.1:10101/"));
    assert_no_key(&out);

    let out = run(NODEPASS, &["--check"], None);
    assert_eq!(out.status.code(), Some(64));
    assert!(stderr(&out).contains("NODEPASS_URL"), "{}", stderr(&out));
}

#[test]
fn single_role_executables_take_the_scheme_as_optional() {
    let out = run(SERVER, &["--check", ":10101/127.0.0.1:8080"], None);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("server://:10101/127.0.0.1:8080?"));
    let out = run(
        CLIENT,
        &["--check", "client://127.0.0.1:1/127.0.0.1:2"],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = run(MASTER, &["--check", ":9090"], None);
    assert_eq!(
        stdout(&out).trim(),
        "master://:9090/api?log=info&tls=0&api=nodepass"
    );
    let out = run(
        SERVER,
        &["--check", "client://127.0.0.1:1/127.0.0.1:2"],
        None,
    );
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn usage_errors_help_and_version() {
    let out = run(NODEPASS, &["--no-such-flag"], None);
    assert_eq!(out.status.code(), Some(64));
    let out = run(NODEPASS, &["a://b", "--url-file", "/x"], None);
    assert_eq!(out.status.code(), Some(64));
    let out = run(NODEPASS, &["--help"], None);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("--url-file"));
    let out = run(SERVER, &["--version"], None);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        stdout(&out).trim(),
        format!("nodepass-server {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn a_runtime_failure_exits_1_and_names_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let url = format!("server://{KEY}@127.0.0.1:{port}/127.0.0.1:1?log=error");
    let out = run(NODEPASS, &[&url], None);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("127.0.0.1:{port}")),
        "{}",
        stderr(&out)
    );
    assert_no_key(&out);
}

#[test]
fn sigterm_stops_a_running_server_cleanly() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let url = format!("server://{KEY}@127.0.0.1:0/127.0.0.1:0?log=info&mode=1");
    let mut child = Command::new(NODEPASS)
        .arg(&url)
        .env_remove("NODEPASS_URL")
        .env_remove("NODEPASS_LOG_FORMAT")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("server listening") => break,
            Ok(line) => seen.push(line),
            Err(_) => {
                let _ = child.kill();
                panic!("server never reported listening: {seen:?}");
            }
        }
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let code = child.wait().unwrap().code();
    assert_eq!(code, Some(0));
    let rest: Vec<String> = rx.try_iter().collect();
    assert!(
        rest.iter().chain(&seen).all(|l| !l.contains(KEY)),
        "{rest:?}"
    );
}

#[test]
fn no_derived_key_warning_for_a_single_end_client() {
    let out = run(
        NODEPASS,
        &["--check", "client://:10101/127.0.0.1:8080?mode=1"],
        None,
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
}
