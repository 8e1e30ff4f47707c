//! Loopback servers for tunnels to reach: each binds `127.0.0.1:0`, serves every connection in
//! its own task, counts what it accepted, and stops (with all its connections) when dropped.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::IO_TIMEOUT;

// The generic server and the echo server live in the leaf crate every crate can use.
pub use nodepass_testkit::server::{Server, echo};

/// The most bytes a collecting server keeps from one connection.
pub const MAX_COLLECT_BYTES: usize = 64 << 20;
/// The longest HTTP request head the tiny HTTP server reads.
const MAX_HTTP_HEAD: usize = 16 << 10;

/// Reads the whole request (to EOF), then writes `answer(request)` and closes: a half-close
/// protocol in which the answer only comes after the client finished sending.
/// Cancel safe.
pub async fn collect_then_answer(answer: fn(&[u8]) -> Vec<u8>) -> Server {
    Server::spawn(move |mut s, _| async move {
        let Some(request) = read_to_eof(&mut s).await else {
            return;
        };
        let _ = s.write_all(&answer(&request)).await;
        let _ = s.shutdown().await;
    })
    .await
}

/// Writes `banner` as soon as a connection opens (the server speaks first, as SSH or SMTP
/// do), then echoes.
/// Cancel safe.
pub async fn greeter(banner: &'static [u8]) -> Server {
    Server::spawn(move |mut s, _| async move {
        if s.write_all(banner).await.is_err() {
            return;
        }
        let (mut r, mut w) = s.split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
        let _ = w.shutdown().await;
    })
    .await
}

/// A tiny HTTP/1.1 server: answers any request with `200 OK` and the body
/// `hello from nodepass test, path <path>\n`, then closes.
/// Cancel safe.
pub async fn http() -> Server {
    Server::spawn(|mut s, _| async move {
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            if head.len() > MAX_HTTP_HEAD {
                return;
            }
            match tokio::time::timeout(IO_TIMEOUT, s.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => head.extend_from_slice(&buf[..n]),
                _ => return,
            }
        }
        let line = String::from_utf8_lossy(&head);
        let path = line.split(' ').nth(1).unwrap_or("?").to_string();
        let body = http_body(&path);
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = s.write_all(response.as_bytes()).await;
        let _ = s.shutdown().await;
    })
    .await
}

/// The body [`http`] answers for `path`.
pub fn http_body(path: &str) -> String {
    format!("hello from nodepass test, path {path}\n")
}

/// One connection a [`Recorder`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// The connecting address (the tunnel's dial source).
    pub peer: SocketAddr,
    /// Every byte received, up to EOF (at most [`MAX_COLLECT_BYTES`]).
    pub bytes: Vec<u8>,
}

/// A server that records each connection's peer and bytes (read to EOF), then answers `ok`
/// and closes.
#[derive(Debug)]
pub struct Recorder {
    server: Server,
    seen: Arc<Mutex<Vec<Recorded>>>,
}

impl Recorder {
    /// Start recording on `127.0.0.1:0`.
    /// Cancel safe.
    pub async fn start() -> Recorder {
        let seen: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let seen2 = seen.clone();
        let server = Server::spawn(move |mut s, peer| {
            let seen = seen2.clone();
            async move {
                let bytes = read_to_eof(&mut s).await.unwrap_or_default();
                // Never held across `.await`.
                seen.lock().unwrap().push(Recorded { peer, bytes });
                let _ = s.write_all(b"ok").await;
                let _ = s.shutdown().await;
            }
        })
        .await;
        Recorder { server, seen }
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Connections accepted so far (finished or not).
    pub fn accepted(&self) -> usize {
        self.server.accepted()
    }

    /// The connections that reached EOF so far.
    pub fn seen(&self) -> Vec<Recorded> {
        self.seen.lock().unwrap().clone()
    }
}

/// Read until EOF, at most [`MAX_COLLECT_BYTES`] and [`IO_TIMEOUT`] of silence; `None` on an
/// error, a timeout or too much data.
async fn read_to_eof(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut data = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match tokio::time::timeout(IO_TIMEOUT, s.read(&mut buf)).await {
            Ok(Ok(0)) => return Some(data),
            Ok(Ok(n)) if data.len() + n <= MAX_COLLECT_BYTES => data.extend_from_slice(&buf[..n]),
            _ => return None,
        }
    }
}

/// What a [`Tap`] saw on one relayed connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TapConn {
    /// Bytes from the client to the server.
    pub up: Vec<u8>,
    /// Bytes from the server to the client.
    pub down: Vec<u8>,
}

/// One relayed connection: its record and the switches that break it.
#[derive(Debug, Default)]
struct TapEntry {
    seen: TapConn,
    /// Close both sockets.
    cut: CancellationToken,
    /// Stop relaying but keep both sockets open (a peer that went silent).
    freeze: CancellationToken,
}

/// A recording TCP relay: put between a tunnel client and its server to see what crosses the
/// wire, connection by connection, and to break single connections ([`Tap::cut`],
/// [`Tap::freeze`]). Keeps at most [`MAX_COLLECT_BYTES`] per direction over all connections.
#[derive(Debug)]
pub struct Tap {
    server: Server,
    conns: Arc<Mutex<Vec<TapEntry>>>,
}

impl Tap {
    /// Relay connections made to the tap to `upstream`.
    /// Cancel safe.
    pub async fn start(upstream: SocketAddr) -> Tap {
        Self::with_latency(upstream, Duration::ZERO).await
    }

    /// Like [`Tap::start`], holding every chunk for `one_way` before passing it on (a link
    /// with a round-trip time of twice `one_way`; throughput suffers, it is for control
    /// traffic).
    /// Cancel safe.
    pub async fn with_latency(upstream: SocketAddr, one_way: Duration) -> Tap {
        let conns: Arc<Mutex<Vec<TapEntry>>> = Arc::default();
        let conns2 = conns.clone();
        let server = Server::spawn(move |client, _| {
            let conns = conns2.clone();
            async move {
                let (index, cut, freeze) = {
                    // Never held across `.await`.
                    let mut c = conns.lock().unwrap();
                    let e = TapEntry::default();
                    let switches = (e.cut.clone(), e.freeze.clone());
                    c.push(e);
                    (c.len() - 1, switches.0, switches.1)
                };
                let Ok(Ok(server)) =
                    tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(upstream)).await
                else {
                    return;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                let relay = async {
                    tokio::join!(
                        copy_recording(cr, sw, &conns, index, true, &freeze, one_way),
                        copy_recording(sr, cw, &conns, index, false, &freeze, one_way)
                    )
                };
                tokio::select! {
                    _ = relay => {}
                    _ = cut.cancelled() => {}
                }
            }
        })
        .await;
        Tap { server, conns }
    }

    /// The address clients should dial instead of the server.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Connections relayed so far.
    pub fn accepted(&self) -> usize {
        self.server.accepted()
    }

    /// Each connection's bytes, in the order the connections were accepted.
    pub fn conns(&self) -> Vec<TapConn> {
        self.conns
            .lock()
            .unwrap()
            .iter()
            .map(|e| e.seen.clone())
            .collect()
    }

    /// Everything the clients sent, all connections concatenated.
    pub fn upstream_bytes(&self) -> Vec<u8> {
        self.conns().into_iter().flat_map(|c| c.up).collect()
    }

    /// Everything the server sent, all connections concatenated.
    pub fn downstream_bytes(&self) -> Vec<u8> {
        self.conns().into_iter().flat_map(|c| c.down).collect()
    }

    /// Close connection `index` (in accept order) on both sides.
    pub fn cut(&self, index: usize) {
        self.conns.lock().unwrap()[index].cut.cancel();
    }

    /// Stop relaying connection `index` in both directions, keeping its sockets open: both
    /// ends see a peer that went silent.
    pub fn freeze(&self, index: usize) {
        self.conns.lock().unwrap()[index].freeze.cancel();
    }
}

async fn copy_recording(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    log: &Mutex<Vec<TapEntry>>,
    index: usize,
    up: bool,
    freeze: &CancellationToken,
    latency: Duration,
) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = tokio::select! {
            // Frozen: hold both sockets, relay nothing, until cut or dropped.
            _ = freeze.cancelled() => std::future::pending().await,
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
        };
        {
            // Never held across `.await`.
            let mut log = log.lock().unwrap();
            let kept: usize = log
                .iter()
                .map(|e| {
                    if up {
                        e.seen.up.len()
                    } else {
                        e.seen.down.len()
                    }
                })
                .sum();
            let room = MAX_COLLECT_BYTES.saturating_sub(kept);
            let seen = &mut log[index].seen;
            let dir = if up { &mut seen.up } else { &mut seen.down };
            dir.extend_from_slice(&buf[..n.min(room)]);
        }
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// True if `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}
