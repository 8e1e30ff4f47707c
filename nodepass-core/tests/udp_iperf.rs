//! A real UDP peer: iperf3 through the tunnel (reverse flow), next to a direct run.
//!
//! Needs `iperf3` on PATH (`.ci/run` installs it). Without it the test fails when `CI` is set
//! and is skipped (with a message) otherwise.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nodepass_core::tunnel::TunnelState;
use nodepass_core::{Tunnel, TunnelConfig};
use tokio_util::sync::CancellationToken;

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn have_iperf3() -> bool {
    let ok = Command::new("iperf3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok && std::env::var_os("CI").is_some() {
        panic!("iperf3 is not installed; .ci/run must install it");
    }
    ok
}

/// A port free on 127.0.0.1 for both TCP and UDP right now (iperf3 takes a port number).
fn free_port() -> u16 {
    for _ in 0..50 {
        let t = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = t.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port");
}

#[derive(Debug)]
struct Report {
    packets: i64,
    lost: i64,
    jitter_ms: f64,
    mbps: f64,
}

/// Find `"key": number` after `section` in iperf3's JSON (avoids a JSON dependency here).
fn number_after(json: &str, section: &str, key: &str) -> f64 {
    let start = json
        .rfind(section)
        .unwrap_or_else(|| panic!("no {section} in {json}"));
    let rest = &json[start..];
    let k = rest
        .find(&format!("\"{key}\""))
        .unwrap_or_else(|| panic!("no {key} after {section}"));
    let after = &rest[k + key.len() + 2..];
    let after = after.trim_start_matches([':', ' ', '\t']);
    let end = after
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == 'e' || c == '+'))
        .unwrap_or(after.len());
    after[..end]
        .parse()
        .unwrap_or_else(|_| panic!("bad {key}: {after:.40}"))
}

/// The offered rate: well within what a debug build relays on a busy 2-core machine, so the
/// check below is about the datagram path working, not about speed (that is `benches/`'s job;
/// at 200 Mbit/s even the direct run lost 13 % on a loaded machine).
const RATE: &str = "20M";

fn iperf_udp(to: SocketAddr) -> Report {
    let out = Command::new("iperf3")
        .args(["-c", &to.ip().to_string(), "-p", &to.port().to_string()])
        .args(["-u", "-b", RATE, "-l", "1400", "-t", "3", "--json"])
        .output()
        .expect("run iperf3 client");
    let json = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "iperf3 failed: {json}");
    Report {
        packets: number_after(&json, "\"sum\"", "packets") as i64,
        lost: number_after(&json, "\"sum\"", "lost_packets") as i64,
        jitter_ms: number_after(&json, "\"sum\"", "jitter_ms"),
        mbps: number_after(&json, "\"sum\"", "bits_per_second") / 1e6,
    }
}

fn iperf_server(port: u16) -> Kill {
    Kill(
        Command::new("iperf3")
            .args(["-s", "-B", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start iperf3 server"),
    )
}

/// Wait until something listens on 127.0.0.1:`port` (TCP), without connecting: iperf3 takes
/// a probe connection for a client's control connection and then resets the real client.
async fn wait_listening(port: u16) {
    // /proc/net/tcp: "sl local_address rem_address st ...", addresses as hex IP:port (the IPv4
    // address in host byte order), state 0A = LISTEN.
    let local = format!("0100007F:{port:04X}");
    for _ in 0..100 {
        let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
        let listening = table.lines().skip(1).any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1] == local && f[3] == "0A"
        });
        if listening {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("iperf3 server did not start");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iperf3_udp_through_the_tunnel_is_sane() {
    if !have_iperf3() {
        eprintln!("skipped: iperf3 not installed");
        return;
    }
    let port = free_port();
    let _server = iperf_server(port);
    wait_listening(port).await;

    let direct = iperf_udp(SocketAddr::from(([127, 0, 0, 1], port)));

    let stop = CancellationToken::new();
    let cfg: TunnelConfig = "server://k@127.0.0.1:0/127.0.0.1:0?mode=1".parse().unwrap();
    let server = Tunnel::bind(cfg).await.unwrap().spawn(stop.child_token());
    let t = server.local_addrs().tunnel.unwrap();
    let cfg: TunnelConfig = format!("client://k@{t}/127.0.0.1:{port}?mode=2")
        .parse()
        .unwrap();
    let client = Tunnel::bind(cfg).await.unwrap().spawn(stop.child_token());
    client
        .wait_for(Duration::from_secs(10), |s| *s == TunnelState::Ready)
        .await
        .unwrap();
    let users = server.local_addrs().users.unwrap();
    assert_eq!(
        Some(users.port()),
        server.local_addrs().users_udp.map(|a| a.port())
    );
    let tunneled = tokio::task::spawn_blocking(move || iperf_udp(users))
        .await
        .unwrap();
    eprintln!("iperf3 -u -b {RATE} -l 1400 -t 3: direct {direct:?}");
    eprintln!("iperf3 -u -b {RATE} -l 1400 -t 3: tunnel {tunneled:?}");
    for r in [&direct, &tunneled] {
        assert!(r.lost >= 0 && r.packets > 0 && r.mbps > 0.0, "{r:?}");
        assert!(r.jitter_ms >= 0.0 && r.jitter_ms < 1000.0, "{r:?}");
    }
    let delivered = (tunneled.packets - tunneled.lost) as f64 / tunneled.packets as f64;
    assert!(
        delivered >= 0.90,
        "only {:.1}% delivered: {tunneled:?}",
        delivered * 100.0
    );
    let s = server.stats();
    assert!(s.udp_rx > 0, "{s:?}");
    stop.cancel();
    let _ = server.wait().await;
    let _ = client.wait().await;
}
