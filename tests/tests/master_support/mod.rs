//! Support for the master end-to-end tests: the `nodepass` executable started as a master on
//! 127.0.0.1:0 (its URL read back from its log), the HTTP/1.1 client and SSE reader of
//! `nodepass-testkit`, an echo server.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Every wait is bounded by this.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The `nodepass` executable next to this test's directory (`target/<profile>/nodepass`).
/// `cargo test --workspace --all-targets` builds it; a lone `cargo test -p nodepass-tests`
/// needs `cargo build -p nodepass-cli` first.
pub fn nodepass_exe() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("tests run from target/<profile>/deps");
    let path = profile_dir.join(format!("nodepass{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build -p nodepass-cli` (cargo test --workspace \
         --all-targets does)",
        path.display()
    );
    path
}

// The HTTP client and the SSE reader are the workspace's one (shared with nodepass-api's
// tests); `request` works on any HTTP server (e.g. the Go master).
#[allow(unused_imports)]
pub use nodepass_testkit::http::{Req, Res, Sse, request};

/// A fresh directory, removed on drop: the workspace's one helper for it.
pub use nodepass_testkit::temp_dir;

/// A running `nodepass master://...` process.
pub struct MasterProcess {
    child: Child,
    /// `http://127.0.0.1:PORT/api`.
    pub base: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Every stderr line so far.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl MasterProcess {
    /// Start `nodepass "master://127.0.0.1:0/api?log=info&api=envelope&state=STATE"` with `env` and wait (at
    /// most [`DEADLINE`]) for its "listening on URL" line.
    pub fn start(state: &Path, env: &[(&str, &str)]) -> MasterProcess {
        MasterProcess::start_with(state, "&api=envelope", env)
    }

    /// Like [`MasterProcess::start`], with `extra` appended to the URL's query instead of
    /// `&api=envelope` (`""`: the default dialect, `api=nodepass`).
    pub fn start_with(state: &Path, extra: &str, env: &[(&str, &str)]) -> MasterProcess {
        let url = format!(
            "master://127.0.0.1:0/api?log=info&state={}{extra}",
            state.display()
        );
        MasterProcess::start_url(&url, env)
    }

    /// Start `nodepass URL` with `env` and wait as [`MasterProcess::start`] does.
    pub fn start_url(url: &str, env: &[(&str, &str)]) -> MasterProcess {
        let mut cmd = Command::new(nodepass_exe());
        cmd.arg(url)
            .env_remove("NODEPASS_URL")
            .env_remove("NODEPASS_LOG_FORMAT")
            .env_remove("NODEPASS_API_KEY")
            .env_remove("NODEPASS_CORS_ORIGINS")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start nodepass");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(i) = line.find("listening on ") {
                    let url = line[i + "listening on ".len()..].trim().to_string();
                    let _ = tx.send(url);
                }
                lines.lock().unwrap().push(line);
            }
        });
        let base = match rx.recv_timeout(DEADLINE) {
            Ok(base) => base,
            Err(_) => {
                let _ = child.kill();
                panic!("no 'listening on' line: {:?}", log.lock().unwrap());
            }
        };
        let authority = base
            .strip_prefix("http://")
            .and_then(|r| r.split('/').next())
            .unwrap_or_else(|| panic!("unexpected base {base}"));
        let addr = authority.parse().unwrap();
        MasterProcess {
            child,
            base,
            addr,
            log,
        }
    }

    /// SIGTERM, then wait (bounded) for exit status 0.
    pub fn stop(mut self) -> Vec<String> {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(status.success());
        let deadline = std::time::Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "master exited with {status}: {:?}",
                    self.log()
                );
                break;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("master did not stop: {:?}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.log()
    }

    /// A copy of the stderr lines so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// A request for `path` below the prefix.
    pub fn req(&self, method: Method, path: &str) -> Req {
        request(self.addr, method, &format!("/api{path}"))
    }
}

impl Drop for MasterProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A TCP echo server on 127.0.0.1:0 ([`nodepass_testkit::server::echo`]); runs until the
/// runtime ends.
pub async fn echo_server() -> SocketAddr {
    nodepass_testkit::server::echo().await.detach()
}

/// Ports that were free a moment ago on 127.0.0.1 (all different within one `free_ports`
/// call). Racy by nature: used only where an instance URL must name its port before the
/// instance exists (a client must know its server's tunnel port, and the same ports must come
/// back after a master restart).
#[allow(unused_imports)]
pub use nodepass_testkit::{free_port, free_ports};

/// Send `payload` to `addr` and read back as many bytes; `None` on any failure (e.g. the tunnel
/// is not ready yet).
pub async fn echo_through(addr: SocketAddr, payload: &[u8]) -> Option<Vec<u8>> {
    let attempt = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        let (mut r, mut w) = s.split();
        let write = async {
            w.write_all(payload).await.ok()?;
            w.shutdown().await.ok()
        };
        let read = async {
            let mut back = Vec::with_capacity(payload.len());
            r.read_to_end(&mut back).await.ok()?;
            Some(back)
        };
        let (written, back) = tokio::join!(write, read);
        written?;
        back
    };
    tokio::time::timeout(Duration::from_secs(10), attempt)
        .await
        .ok()
        .flatten()
}

/// Deterministic pseudo-random bytes.
pub fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
