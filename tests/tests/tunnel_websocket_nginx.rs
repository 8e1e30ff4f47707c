//! The WebSocket pool transport through a real reverse proxy: Debian's `nginx`, started here
//! with a generated configuration in a temporary directory (loopback only), proxies the
//! WebSocket path to the server with `proxy_read_timeout 3s`. The tunnel carries TCP and UDP
//! through it, and still does after an idle period of twice nginx's read timeout, on the same
//! pooled connections (the pings keep them alive).
//!
//! nginx also terminates the client's TLS (a certificate of a CA made here) and speaks https
//! to a `tls=1` server or plain http to a `tls=0` one: with `wsbind=0` on each end whose TLS
//! ends at nginx the tunnel works, a wrong key is still refused, and without the opt-in the
//! client is refused with a message naming `wsbind=0`. Through nginx's `stream` module (TLS
//! passed through at the TCP level) the default binding holds and is still checked.
//!
//! Needs `nginx` (and for the passthrough Debian's `libnginx-mod-stream`): under `CI=true` a
//! missing one fails the test; elsewhere it is skipped with a message.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nodepass_core::ErrorKind;
use nodepass_core::TunnelHandle;
use nodepass_core::tunnel::TunnelState;
use nodepass_tests::IO_TIMEOUT;
use nodepass_tests::certs::{Ca, CertFiles};
use nodepass_tests::payload::random_bytes;
use nodepass_tests::servers::{self, Tap};
use nodepass_tests::tunnel::{roundtrip, shutdown, start, wait_ready, wait_state};
use tokio::net::{TcpStream, UdpSocket};

const KEY: &str = "websocket-nginx-test-key";
/// nginx's `proxy_read_timeout` in the test (its default is 60 s).
const NGINX_READ_TIMEOUT: Duration = Duration::from_secs(3);
/// The idle period: longer than the read timeout, twice over.
const IDLE: Duration = Duration::from_secs(7);

fn nginx_binary() -> Option<PathBuf> {
    let candidates = ["/usr/sbin/nginx", "/usr/bin/nginx"];
    if let Some(p) = candidates.iter().map(PathBuf::from).find(|p| p.exists()) {
        return Some(p);
    }
    Command::new("nginx")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .ok()
        .filter(|s| s.success())
        .map(|_| PathBuf::from("nginx"))
}

/// nginx, or `None` after printing why the test skips (panics under `CI`).
fn nginx_or_skip(test: &str) -> Option<PathBuf> {
    if let Some(p) = nginx_binary() {
        return Some(p);
    }
    if std::env::var_os("CI").is_some() {
        panic!("{test}: nginx is required in CI but was not found (.ci/run installs it)");
    }
    eprintln!("{test}: SKIPPED: nginx not found (install Debian's nginx to run this test)");
    None
}

/// A running nginx, stopped (and its directory removed) on drop.
struct Nginx {
    child: Child,
    dir: tempfile::TempDir,
    addr: SocketAddr,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Nginx {
    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// What nginx speaks to each side.
#[derive(Clone, Copy)]
enum Front<'a> {
    /// Plain HTTP on both legs.
    Plain,
    /// TLS to the client with these certificate files, and https (`true`) or plain http to
    /// the server.
    Tls { certs: &'a CertFiles, https: bool },
    /// No HTTP at all: TCP passed through by the `stream` module (Debian's
    /// `libnginx-mod-stream`), so the client's TLS session is the server's.
    Stream,
}

/// Debian's dynamic `stream` module.
const STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";

fn config(dir: &Path, port: u16, upstream: SocketAddr, path: &str, front: Front<'_>) -> String {
    let d = dir.display();
    // nodepass speaks TLS 1.3 only, which nginx before 1.23.4 (Debian 12) leaves out unless
    // asked, on both legs.
    let (listen, scheme) = match front {
        Front::Plain | Front::Stream => (String::new(), "http"),
        Front::Tls { certs, https } => (
            format!(
                " ssl;\n        ssl_protocols TLSv1.3;\n        proxy_ssl_protocols TLSv1.3;\n        \
                 ssl_certificate {};\n        ssl_certificate_key {}",
                certs.crt.display(),
                certs.key.display()
            ),
            if https { "https" } else { "http" },
        ),
    };
    // As root, nginx would switch its worker to an unprivileged user that cannot reach the
    // temporary directory; keep it root (CI runs as root, on a throwaway machine).
    let user = if is_root() { "user root;" } else { "" };
    if let Front::Stream = front {
        return format!(
            "{user}
load_module {STREAM_MODULE};
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 256; }}
stream {{
    server {{
        listen 127.0.0.1:{port};
        proxy_pass {upstream};
    }}
}}
"
        );
    }
    format!(
        "{user}
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{port}{listen};
        location = {path} {{
            proxy_pass {scheme}://{upstream};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection \"upgrade\";
            proxy_read_timeout {}s;
            proxy_send_timeout {}s;
        }}
    }}
}}
",
        NGINX_READ_TIMEOUT.as_secs(),
        NGINX_READ_TIMEOUT.as_secs()
    )
}

/// Start nginx on a free loopback port, proxying `path` to `upstream`; waits (bounded) until
/// it accepts connections. nginx cannot report a port it picked, so a free one is found first
/// and the start retried on the rare collision.
async fn start_nginx(bin: &Path, upstream: SocketAddr, path: &str, front: Front<'_>) -> Nginx {
    let mut last = String::new();
    for _ in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, config(dir.path(), port, upstream, path, front)).unwrap();
        let child = Command::new(bin)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run nginx");
        let mut nginx = Nginx {
            child,
            dir,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        let deadline = Instant::now() + IO_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = nginx.child.try_wait() {
                break;
            }
            if TcpStream::connect(nginx.addr).await.is_ok() {
                return nginx;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        last = nginx.error_log();
    }
    panic!("nginx did not start: {last}");
}

#[tokio::test]
async fn websocket_tunnel_through_nginx_survives_idle_periods() {
    let Some(bin) = nginx_or_skip("websocket_tunnel_through_nginx_survives_idle_periods") else {
        return;
    };
    // TCP and UDP echo on the same port number: the client's one target.
    let echo = servers::echo().await;
    let udp_task = udp_echo(echo.addr()).await;

    let server = start(&format!(
        "server://{KEY}@127.0.0.1:0/127.0.0.1:0?mode=1&type=2&wspath=/np/ws&wsping=1s"
    ))
    .await;
    let nginx = start_nginx(
        &bin,
        server.local_addrs().tunnel.unwrap(),
        "/np/ws",
        Front::Plain,
    )
    .await;
    // A tap in front of nginx counts the client's connections.
    let tap = Tap::start(nginx.addr).await;
    let client = start(&format!(
        "client://{KEY}@{}/{}?mode=2&min=2&type=2&wspath=/np/ws&wsping=1s",
        tap.addr(),
        echo.addr()
    ))
    .await;
    wait_ready(&client).await;
    let users = server.local_addrs().users.unwrap();

    let payload = random_bytes(5, 256 << 10);
    assert!(
        roundtrip(users, &payload).await == payload,
        "tcp through nginx"
    );
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.connect(users).await.unwrap();
    let datagram = random_bytes(6, 1200);
    let mut buf = vec![0u8; 65536];
    let mut echoed = None;
    for _ in 0..5 {
        sock.send(&datagram).await.unwrap();
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(2), sock.recv(&mut buf)).await {
            echoed = Some(buf[..n].to_vec());
            break;
        }
    }
    assert_eq!(echoed.as_deref(), Some(&datagram[..]), "udp through nginx");

    // Idle for twice nginx's read timeout: without pings nginx would close every pooled
    // connection (and the control connection) and the client would have to dial new ones.
    // Wait until the pool is refilled after the sessions above, then count.
    let settle = Instant::now() + IO_TIMEOUT;
    while client.stats().pool_idle < 2 && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = tap.accepted();
    let mut states = client.state();
    states.mark_unchanged();
    tokio::time::sleep(IDLE).await;
    let now = states.borrow().clone();
    assert!(
        !states.has_changed().unwrap_or(true) && now == TunnelState::Ready,
        "the client stayed connected through the idle period (its state changed; now {now:?})"
    );
    assert_eq!(
        tap.accepted(),
        before,
        "no connection through nginx had to be replaced during the idle period\n{}",
        nginx.error_log()
    );
    let payload = random_bytes(7, 256 << 10);
    assert!(
        roundtrip(users, &payload).await == payload,
        "tcp after the idle period"
    );
    sock.send(&datagram).await.unwrap();
    let n = tokio::time::timeout(IO_TIMEOUT, sock.recv(&mut buf))
        .await
        .expect("udp after the idle period")
        .unwrap();
    assert_eq!(&buf[..n], &datagram[..]);

    shutdown(&[&client, &server]).await;
    udp_task.abort();
    drop(nginx);
}

/// A UDP echo on `addr` (the TCP echo's port, so the client's one target serves both).
async fn udp_echo(addr: SocketAddr) -> tokio::task::JoinHandle<()> {
    let udp = UdpSocket::bind(addr).await.expect("udp echo port");
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, peer)) = udp.recv_from(&mut buf).await {
            let _ = udp.send_to(&buf[..n], peer).await;
        }
    })
}

/// One datagram through `users` comes back unchanged (a few tries, each bounded: UDP may drop).
async fn udp_roundtrip(users: SocketAddr, datagram: &[u8]) {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.connect(users).await.unwrap();
    let mut buf = vec![0u8; 65536];
    for _ in 0..5 {
        sock.send(datagram).await.unwrap();
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(2), sock.recv(&mut buf)).await {
            assert_eq!(&buf[..n], datagram, "udp through nginx");
            return;
        }
    }
    panic!("no udp echo through nginx");
}

/// A reverse-flow server (`tls`, with `extra` parameters) and nginx terminating the client's
/// TLS with `certs` in front of it (https to the server when it has TLS, else plain http).
async fn server_behind_tls_proxy(
    bin: &Path,
    certs: &CertFiles,
    tls: u8,
    extra: &str,
) -> (TunnelHandle, Nginx) {
    let server = start(&format!(
        "server://{KEY}@127.0.0.1:0/127.0.0.1:0?mode=1&tls={tls}&type=2&wspath=/np/ws{extra}"
    ))
    .await;
    let front = Front::Tls {
        certs,
        https: tls > 0,
    };
    let upstream = server.local_addrs().tunnel.unwrap();
    let nginx = start_nginx(bin, upstream, "/np/ws", front).await;
    (server, nginx)
}

/// A dual-end client of nginx at `proxy` serving `target`, trusting `certs`' CA.
fn client_url(
    key: &str,
    proxy: SocketAddr,
    target: SocketAddr,
    certs: &CertFiles,
    extra: &str,
) -> String {
    format!(
        "client://{key}@{proxy}/{target}?mode=2&min=2&type=2&wspath=/np/ws&sni=localhost&ca={}{extra}",
        certs.ca.display()
    )
}

/// The client's connection error once it gives up on an attempt (bounded wait).
async fn refusal(client: &TunnelHandle, what: &str) -> nodepass_core::TunnelError {
    match wait_state(client, IO_TIMEOUT, what, |s| {
        matches!(s, TunnelState::Reconnecting { .. })
    })
    .await
    {
        TunnelState::Reconnecting { error } => error,
        other => panic!("{what}: {other:?}"),
    }
}

/// nginx terminates the client's TLS and speaks https to a `tls=1` server or plain http to a
/// `tls=0` one. With `wsbind=0` on each end whose TLS ends at nginx (the client; the server
/// too when it has TLS) the tunnel carries TCP and UDP byte-exact, and a wrong key is still
/// refused.
#[tokio::test]
async fn websocket_through_nginx_terminating_tls_with_wsbind_0() {
    let Some(bin) = nginx_or_skip("websocket_through_nginx_terminating_tls_with_wsbind_0") else {
        return;
    };
    let ca = Ca::new("nginx test ca");
    let (certs, _leaf) = CertFiles::new(&ca);
    let echo = servers::echo().await;
    let udp_task = udp_echo(echo.addr()).await;
    for (tls, server_extra) in [(1u8, "&wsbind=0"), (0, "")] {
        let (server, nginx) = server_behind_tls_proxy(&bin, &certs, tls, server_extra).await;
        let client = start(&client_url(
            KEY,
            nginx.addr,
            echo.addr(),
            &certs,
            "&wsbind=0",
        ))
        .await;
        if let Err(e) = client.wait_ready(IO_TIMEOUT).await {
            panic!(
                "tls={tls}: client not ready through nginx: {e}; last {:?}\n{}",
                e.last(),
                nginx.error_log()
            );
        }
        let users = server.local_addrs().users.unwrap();
        let payload = random_bytes(10 + u64::from(tls), 256 << 10);
        assert!(
            roundtrip(users, &payload).await == payload,
            "tls={tls}: tcp through nginx terminating tls"
        );
        udp_roundtrip(users, &random_bytes(20 + u64::from(tls), 1200)).await;

        // The same set-up with a wrong key on the client: SPAKE2 still refuses it.
        let wrong = start(&client_url(
            "another-key-entirely",
            nginx.addr,
            echo.addr(),
            &certs,
            "&wsbind=0",
        ))
        .await;
        let err = refusal(&wrong, "a wrong key through nginx").await;
        assert_eq!(err.kind(), ErrorKind::AuthRefused, "tls={tls}: {err}");
        shutdown(&[&wrong, &client, &server]).await;
        drop(nginx);
    }
    udp_task.abort();
}

/// The same proxy without the opt-in is refused, and the message names `wsbind=0`: a client
/// without it speaks plain http to nginx's TLS port (400), and a client with it but a `tls=1`
/// server without it bind different TLS sessions (the proofs fail).
#[tokio::test]
async fn websocket_through_nginx_terminating_tls_without_wsbind_0_is_refused_clearly() {
    let test = "websocket_through_nginx_terminating_tls_without_wsbind_0_is_refused_clearly";
    let Some(bin) = nginx_or_skip(test) else {
        return;
    };
    let ca = Ca::new("nginx test ca");
    let (certs, _leaf) = CertFiles::new(&ca);
    let echo = servers::echo().await;
    let (server, nginx) = server_behind_tls_proxy(&bin, &certs, 1, "").await;

    let plain = start(&client_url(KEY, nginx.addr, echo.addr(), &certs, "")).await;
    let err = refusal(&plain, "a plain client at nginx's tls port").await;
    assert!(
        err.message().contains("HTTP 400") && err.message().contains("wsbind=0"),
        "the refusal names the option: {err}"
    );

    let one_sided = start(&client_url(
        KEY,
        nginx.addr,
        echo.addr(),
        &certs,
        "&wsbind=0",
    ))
    .await;
    let err = refusal(&one_sided, "wsbind=0 on the client only").await;
    assert_eq!(err.kind(), ErrorKind::AuthRefused, "{err}");
    assert!(
        err.message().contains("proxy terminates tls") && err.message().contains("wsbind=0"),
        "the refusal names the likely cause and the option: {err}"
    );
    shutdown(&[&plain, &one_sided, &server]).await;
    drop(nginx);
}

/// TLS passed through at the TCP level (nginx `stream`): the client's TLS session is the
/// server's, so the default binding holds and the tunnel carries TCP and UDP; a client that
/// drops the binding (`wsbind=0`) is refused, which shows the binding is still checked.
/// Needs Debian's `libnginx-mod-stream` (fails under `CI=true` without it).
#[tokio::test]
async fn websocket_through_nginx_passing_tls_through_keeps_the_binding() {
    let test = "websocket_through_nginx_passing_tls_through_keeps_the_binding";
    let Some(bin) = nginx_or_skip(test) else {
        return;
    };
    if !Path::new(STREAM_MODULE).exists() {
        if std::env::var_os("CI").is_some() {
            panic!(
                "{test}: {STREAM_MODULE} is required in CI (.ci/run installs libnginx-mod-stream)"
            );
        }
        eprintln!("{test}: SKIPPED: {STREAM_MODULE} not found (install libnginx-mod-stream)");
        return;
    }
    let ca = Ca::new("nginx stream test ca");
    let (certs, _leaf) = CertFiles::new(&ca);
    let echo = servers::echo().await;
    let udp_task = udp_echo(echo.addr()).await;
    // tls=2 with the test CA's certificate, so a client that verifies it (as wsbind=0 does)
    // gets as far as the proofs.
    let server = start(&format!(
        "server://{KEY}@127.0.0.1:0/127.0.0.1:0?mode=1&tls=2&crt={}&key={}&type=2&wspath=/np/ws",
        certs.crt.display(),
        certs.key.display()
    ))
    .await;
    let upstream = server.local_addrs().tunnel.unwrap();
    let nginx = start_nginx(&bin, upstream, "/np/ws", Front::Stream).await;
    // A client told nothing about tls: it learns tls=2 from the server, through nginx.
    let client = start(&client_url(KEY, nginx.addr, echo.addr(), &certs, "")).await;
    if let Err(e) = client.wait_ready(IO_TIMEOUT).await {
        panic!(
            "client not ready through nginx stream: {e}\n{}",
            nginx.error_log()
        );
    }
    let users = server.local_addrs().users.unwrap();
    let payload = random_bytes(50, 256 << 10);
    assert!(
        roundtrip(users, &payload).await == payload,
        "tcp through nginx passing tls through"
    );
    udp_roundtrip(users, &random_bytes(51, 1200)).await;

    let unbound = start(&client_url(
        KEY,
        nginx.addr,
        echo.addr(),
        &certs,
        "&wsbind=0",
    ))
    .await;
    let err = refusal(
        &unbound,
        "wsbind=0 against a bound server through a passthrough",
    )
    .await;
    assert_eq!(err.kind(), ErrorKind::AuthRefused, "{err}");
    shutdown(&[&unbound, &client, &server]).await;
    drop(nginx);
    udp_task.abort();
}
