//! Support for the tests that need a real outside component: the Go NodePass v1.14 master
//! (`../shared/peers/nodepass-go`, the reference for the API contract), the NodePanel build
//! (`../shared/fixtures/nodepanel/site`), Node with `playwright-core` (`tests/browser`) and
//! Debian's Chromium. Each `need_*` returns `None` (after a note) when the thing is missing, and
//! panics instead when `CI` is set, so CI never passes by skipping.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::Method;

use crate::master_support::{DEADLINE, Req, Res, free_port, request, temp_dir};
use nodepass_testkit::TempDir;

/// The repository's root (the parent of the `tests` crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the repository")
        .to_path_buf()
}

/// `what` is missing: fail under CI, otherwise print a note and let the caller skip.
pub fn missing(what: &str) -> Option<PathBuf> {
    let why = format!("{what} is missing");
    if std::env::var_os("CI").is_some() {
        panic!("{why} (required under CI=true)");
    }
    eprintln!("skipped: {why}");
    None
}

/// `../shared/<rel>` seen from the repository (or below `$NODEPASS_SHARED` when set, for
/// checkouts that do not sit beside `shared/`), when present.
pub fn need_shared(rel: &str) -> Option<PathBuf> {
    let shared = std::env::var_os("NODEPASS_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared"));
    let path = shared.join(rel);
    if path.exists() {
        Some(path)
    } else {
        missing(&format!("{} (../shared/{rel})", path.display()))
    }
}

/// `tests/browser` with its `node_modules` installed (`npm ci` there; `.ci/run` does), and a
/// Chromium at `/usr/bin/chromium`.
pub fn need_browser_kit() -> Option<PathBuf> {
    let dir = repo_root().join("tests/browser");
    if !dir.join("node_modules/playwright-core").exists() {
        return missing(
            "tests/browser/node_modules/playwright-core (run `npm ci` in tests/browser)",
        );
    }
    if !Path::new("/usr/bin/chromium").exists() {
        return missing("/usr/bin/chromium (apt-get install chromium)");
    }
    if Command::new("node").arg("--version").output().is_err() {
        return missing("node (apt-get install nodejs npm)");
    }
    Some(dir)
}

/// A running Go NodePass master, from a copy of the executable in its own temp dir (it writes
/// `gob/` beside itself).
pub struct GoMaster {
    child: Child,
    _dir: TempDir,
    pub addr: SocketAddr,
    /// The API key it printed on start.
    pub key: String,
    pub log: Arc<Mutex<Vec<String>>>,
}

/// Spawn an executable that this process has just copied. While another test thread forks, the
/// child can briefly inherit the copy's write descriptor, and exec then fails with "text file
/// busy" (ETXTBSY); that passes within milliseconds, so retry a bounded number of times.
fn spawn_fresh_copy(command: &mut Command) -> std::process::Child {
    let mut attempt = 0;
    loop {
        match command.spawn() {
            Ok(child) => return child,
            Err(e) if e.raw_os_error() == Some(26) && attempt < 50 => {
                attempt += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("start {:?}: {e}", command.get_program()),
        }
    }
}

impl GoMaster {
    /// Start `nodepass-go "master://127.0.0.1:PORT/api?log=LOG"` and wait (bounded) for its key.
    /// `None` when the peer is missing outside CI.
    pub fn start(log_level: &str) -> Option<GoMaster> {
        let peer = need_shared("peers/nodepass-go")?;
        let dir = temp_dir("go-master");
        let exe = dir.path().join("nodepass-go");
        std::fs::copy(&peer, &exe).expect("copy nodepass-go");
        // The Go master cannot bind port 0 and report it; pick a free port (retry on a race).
        for _attempt in 0..5 {
            let port = free_port();
            let mut command = Command::new(&exe);
            command
                .arg(format!("master://127.0.0.1:{port}/api?log={log_level}"))
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null());
            let mut child = spawn_fresh_copy(&mut command);
            let out = child.stdout.take().unwrap();
            let log = Arc::new(Mutex::new(Vec::new()));
            let (tx, rx) = std::sync::mpsc::channel();
            let lines = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if let Some(i) = line.find("API Key created: ") {
                        let key = line[i + "API Key created: ".len()..].trim();
                        let key: String = key.chars().take_while(char::is_ascii_hexdigit).collect();
                        let _ = tx.send(key);
                    }
                    lines.lock().unwrap().push(line);
                }
            });
            match rx.recv_timeout(DEADLINE) {
                Ok(key) => {
                    let addr = SocketAddr::from(([127, 0, 0, 1], port));
                    wait_listening(addr);
                    return Some(GoMaster {
                        child,
                        _dir: dir,
                        addr,
                        key,
                        log,
                    });
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    eprintln!(
                        "nodepass-go did not start on {port}: {:?}",
                        log.lock().unwrap()
                    );
                }
            }
        }
        panic!("nodepass-go did not start in 5 attempts");
    }

    /// `http://127.0.0.1:PORT/api/v1`.
    pub fn api(&self) -> String {
        format!("http://{}/api/v1", self.addr)
    }

    /// A request for `path` below `/api`.
    pub fn req(&self, method: Method, path: &str) -> Req {
        request(self.addr, method, &format!("/api{path}"))
    }

    /// Send `method path` below `/api` with its API key, `json` as the body if given.
    pub async fn send(&self, method: Method, path: String, json: Option<serde_json::Value>) -> Res {
        let mut req = self.req(method, &path).header("x-api-key", &self.key);
        if let Some(json) = json {
            req = req.json(&json.to_string());
        }
        req.send().await
    }
}

impl Drop for GoMaster {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Wait (bounded) until something accepts on `addr`.
fn wait_listening(addr: SocketAddr) {
    let deadline = Instant::now() + DEADLINE;
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err() {
        assert!(Instant::now() < deadline, "{addr} never accepted");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Run `node SCRIPT` in `tests/browser` with `env`, its output passed through; bounded by
/// `limit`. Returns whether it exited with 0, and its stdout.
pub fn run_node(
    dir: &Path,
    script: &str,
    env: &[(&str, String)],
    limit: Duration,
) -> (bool, String) {
    let mut cmd = Command::new("node");
    cmd.arg(script)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start node");
    let out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            println!("{line}");
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = reader.join().unwrap();
    match status {
        Some(s) => (s.success(), out),
        None => (
            false,
            format!("{out}\nnode {script}: killed after {limit:?}"),
        ),
    }
}
