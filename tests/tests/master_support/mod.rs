//! Support for the master end-to-end tests: the `nodepass` executable started as a master on
//! 127.0.0.1:0 (its URL read back from its log), a small HTTP/1.1 client, SSE parsing, an echo
//! server.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;
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

/// A request for the absolute `path` on any HTTP server at `addr` (e.g. the Go master).
pub fn request(addr: SocketAddr, method: Method, path: &str) -> Req {
    Req {
        addr,
        method,
        path: path.to_string(),
        headers: vec![("host".into(), addr.to_string())],
        body: Bytes::new(),
    }
}

/// One HTTP/1.1 request.
pub struct Req {
    addr: SocketAddr,
    method: Method,
    path: String,
    headers: Vec<(String, String)>,
    body: Bytes,
}

impl Req {
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn json(mut self, body: &str) -> Self {
        self.headers
            .push(("content-type".into(), "application/json".into()));
        self.body = Bytes::from(body.to_string());
        self
    }

    /// Send; the response head (body left to the caller).
    pub async fn open(self) -> hyper::Response<Incoming> {
        let mut b = Request::builder().method(self.method).uri(self.path);
        for (n, v) in &self.headers {
            b = b.header(n, v);
        }
        let req = b.body(Full::new(self.body)).unwrap();
        let addr = self.addr;
        tokio::time::timeout(DEADLINE, async move {
            let stream = TcpStream::connect(addr).await.unwrap();
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(conn);
            sender.send_request(req).await.unwrap()
        })
        .await
        .expect("a response within the deadline")
    }

    /// Send; the whole response.
    pub async fn send(self) -> Res {
        let res = self.open().await;
        let status = res.status();
        let headers = res.headers().clone();
        let body = tokio::time::timeout(DEADLINE, res.into_body().collect())
            .await
            .expect("a body within the deadline")
            .unwrap()
            .to_bytes();
        Res {
            status,
            headers,
            body,
        }
    }
}

/// A whole response.
#[derive(Debug)]
pub struct Res {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Res {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.text()))
    }

    /// `data` of a success envelope with `status`.
    pub fn data(&self, status: StatusCode) -> Value {
        assert_eq!(self.status, status, "{}", self.text());
        let v = self.json();
        assert_eq!(v["success"], true, "{v}");
        v["data"].clone()
    }
}

/// Server-sent events from a response body.
pub struct Sse {
    body: Incoming,
    buf: String,
}

impl Sse {
    pub fn new(res: hyper::Response<Incoming>) -> Sse {
        Sse {
            body: res.into_body(),
            buf: String::new(),
        }
    }

    /// The next `(event, data)`, skipping comments and `retry:`; `None` at the end.
    pub async fn next_event(&mut self) -> Option<(String, Value)> {
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut event = None;
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(e) = line.strip_prefix("event: ") {
                        event = Some(e.to_string());
                    } else if let Some(d) = line.strip_prefix("data: ") {
                        data.push_str(d);
                    }
                }
                if let Some(event) = event {
                    return Some((event, serde_json::from_str(&data).unwrap()));
                }
            }
            let frame = tokio::time::timeout(DEADLINE, self.body.frame())
                .await
                .expect("an event within the deadline")?;
            if let Ok(data) = frame.unwrap().into_data() {
                self.buf.push_str(std::str::from_utf8(&data).unwrap());
            }
        }
    }
}

/// A TCP echo server on 127.0.0.1:0 ([`nodepass_testkit::server::echo`]); runs until the
/// runtime ends.
pub async fn echo_server() -> SocketAddr {
    nodepass_testkit::server::echo().await.detach()
}

/// A port that was free a moment ago on 127.0.0.1. Racy by nature: used only where an instance
/// URL must name its port before the instance exists (a client must know its server's tunnel
/// port, and the same ports must come back after a master restart).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

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
