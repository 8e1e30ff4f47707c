//! The WebSocket pool transport (`type=2`): TCP and UDP in both data flows, byte-exact with
//! half-close, datagram-exact; what crosses the wire is WebSocket; wrong key and wrong path
//! refused; a restarted server recovered; the slot limit honoured. Loopback only.
//! (Through nginx: `tunnel_websocket_nginx.rs`.)

use std::net::SocketAddr;
use std::time::Duration;

use nodepass_core::tunnel::{Mode, TunnelState};
use nodepass_core::{ErrorKind, TunnelHandle};
use nodepass_tests::IO_TIMEOUT;
use nodepass_tests::payload::{random_bytes, sha256};
use nodepass_tests::servers::{self, Server, Tap, contains};
use nodepass_tests::tunnel::{
    eventually, read_until_closed, roundtrip, shutdown, start, try_roundtrip, wait_ready,
    wait_state,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

const KEY: &str = "websocket-test-key";
/// Bytes of each half-close request (the answer is twice that plus a hash).
const REQUEST_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Reverse,
    Forward,
}

/// The half-close target's answer: the request's SHA-256, then the request twice, sent only
/// after the request's EOF.
fn answer(request: &[u8]) -> Vec<u8> {
    let mut a = sha256(request).to_vec();
    a.extend_from_slice(request);
    a.extend_from_slice(request);
    a
}

/// A server (`type=2` plus `server_params`) and a client (`client_params`) carrying users to
/// `target`; with `tap`, the client reaches the server through a recording tap.
struct Pair {
    flow: Flow,
    server: TunnelHandle,
    client: TunnelHandle,
    users: SocketAddr,
    tap: Option<Tap>,
}

async fn pair(
    flow: Flow,
    target: &str,
    server_params: &str,
    client_params: &str,
    tap: bool,
) -> Pair {
    let (mode, server_target, client_target) = match flow {
        Flow::Reverse => (1, "127.0.0.1:0", target),
        Flow::Forward => (2, target, "127.0.0.1:0"),
    };
    let server = start(&format!(
        "server://{KEY}@127.0.0.1:0/{server_target}?mode={mode}&type=2{server_params}"
    ))
    .await;
    let tunnel = server.local_addrs().tunnel.unwrap();
    let tap = if tap {
        Some(Tap::start(tunnel).await)
    } else {
        None
    };
    let dial = tap.as_ref().map_or(tunnel, |t| t.addr());
    let client = start(&format!(
        "client://{KEY}@{dial}/{client_target}?mode=2&min=2{client_params}"
    ))
    .await;
    wait_ready(&client).await;
    let expected = match flow {
        Flow::Reverse => Mode::Reverse,
        Flow::Forward => Mode::Forward,
    };
    assert_eq!(client.mode(), expected);
    let users = match flow {
        Flow::Reverse => server.local_addrs().users,
        Flow::Forward => client.local_addrs().users,
    }
    .expect("the accepting side has a user listener");
    Pair {
        flow,
        server,
        client,
        users,
        tap,
    }
}

/// 1 MiB up, the user's half-close, 2 MiB + hash back: byte-exact, and the counters agree.
async fn half_close_exchange(p: &Pair, seed: u64) {
    let request = random_bytes(seed, REQUEST_BYTES);
    let reply = roundtrip(p.users, &request).await;
    assert_eq!(reply.len(), answer(&request).len(), "answer length");
    assert!(
        reply == answer(&request),
        "answer differs from the expected bytes"
    );
    // Each end counts its local socket: the user's on the accepting end (request in, answer
    // out), the target's on the dialing end (answer in, request out).
    let (req, ans) = (REQUEST_BYTES as u64, (2 * REQUEST_BYTES + 32) as u64);
    let (server_side, client_side) = match p.flow {
        Flow::Reverse => ((req, ans), (ans, req)),
        Flow::Forward => ((ans, req), (req, ans)),
    };
    for (name, h, (rx, tx)) in [
        ("server", &p.server, server_side),
        ("client", &p.client, client_side),
    ] {
        eventually(IO_TIMEOUT, &format!("{name} byte counters"), || {
            let s = h.stats();
            async move { (s.tcp_rx == rx && s.tcp_tx == tx && s.tcp_active == 0).then_some(()) }
        })
        .await;
    }
}

#[tokio::test]
async fn tcp_reverse_flow_with_half_close_is_websocket_on_the_wire() {
    let target = servers::collect_then_answer(answer).await;
    let p = pair(
        Flow::Reverse,
        &target.addr().to_string(),
        "&wspath=/np/tunnel",
        "&type=2&wspath=/np/tunnel&wshost=cdn.example.test",
        true,
    )
    .await;
    half_close_exchange(&p, 1).await;
    let tap = p.tap.as_ref().unwrap();
    // The tap keeps a bounded record: check the connections it recorded.
    let recorded: Vec<_> = tap
        .conns()
        .into_iter()
        .filter(|c| !c.up.is_empty())
        .collect();
    assert!(recorded.len() >= 2, "control and pool connections recorded");
    for conn in recorded {
        let up = &conn.up;
        assert!(
            up.starts_with(b"GET /np/tunnel HTTP/1.1\r\n"),
            "every tunnel connection opens with the upgrade request: {:?}",
            String::from_utf8_lossy(&up[..up.len().min(80)])
        );
        let head = String::from_utf8_lossy(&up[..up.len().min(1024)]).to_ascii_lowercase();
        assert!(
            head.contains("\r\nhost: cdn.example.test\r\n"),
            "the Host header is wshost: {head:?}"
        );
        assert!(
            conn.down
                .starts_with(b"HTTP/1.1 101 Switching Protocols\r\n")
        );
    }
    assert!(tap.accepted() >= 3, "control and pool connections");
    shutdown(&[&p.client, &p.server]).await;
}

#[tokio::test]
async fn tcp_forward_flow_tls1_learned_from_the_server() {
    // The client is not told: its plain hello is refused with "websocket, tls=1".
    let target = servers::collect_then_answer(answer).await;
    let p = pair(
        Flow::Forward,
        &target.addr().to_string(),
        "&tls=1",
        "",
        true,
    )
    .await;
    half_close_exchange(&p, 2).await;
    let tap = p.tap.as_ref().unwrap();
    let marker = random_bytes(2, 4096);
    assert!(
        !contains(&tap.upstream_bytes(), &marker),
        "payload in clear on a tls tunnel"
    );
    shutdown(&[&p.client, &p.server]).await;
}

/// A UDP echo server on 127.0.0.1:0.
async fn udp_echo() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = s.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, peer)) = s.recv_from(&mut buf).await {
            let _ = s.send_to(&buf[..n], peer).await;
        }
    });
    (addr, task)
}

/// Datagrams of many sizes (1 byte to 60000) each come back exactly, one at a time.
async fn udp_exact(flow: Flow, server_params: &str) {
    let (echo, task) = udp_echo().await;
    let p = pair(flow, &echo.to_string(), server_params, "", false).await;
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.connect(p.users).await.unwrap();
    let mut buf = vec![0u8; 65536];
    let sizes = [1usize, 2, 100, 1400, 1500, 9000, 32768, 60000, 17, 4096];
    for (i, &len) in sizes.iter().enumerate() {
        let d = random_bytes(100 + i as u64, len);
        // UDP may drop on a busy host: a few bounded retries per datagram.
        let mut got = None;
        for _ in 0..5 {
            sock.send(&d).await.unwrap();
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_secs(2), sock.recv(&mut buf)).await
            {
                got = Some(buf[..n].to_vec());
                break;
            }
        }
        let got = got.unwrap_or_else(|| panic!("no echo for the {len}-byte datagram"));
        assert_eq!(got.len(), len, "datagram {i} merged or split");
        assert!(got == d, "datagram {i} ({len} bytes) corrupted");
    }
    assert!(p.server.stats().udp_rx > 0 && p.client.stats().udp_rx > 0);
    shutdown(&[&p.client, &p.server]).await;
    task.abort();
}

#[tokio::test]
async fn udp_reverse_flow_is_datagram_exact() {
    udp_exact(Flow::Reverse, "").await;
}

#[tokio::test]
async fn udp_forward_flow_tls1_is_datagram_exact() {
    udp_exact(Flow::Forward, "&tls=1").await;
}

#[tokio::test]
async fn a_wrong_key_is_refused() {
    let server = start("server://right-key-0123@127.0.0.1:0/127.0.0.1:0?mode=1&type=2&tls=1").await;
    let tunnel = server.local_addrs().tunnel.unwrap();
    let client = start(&format!(
        "client://wrong-key-0123@{tunnel}/127.0.0.1:9?mode=2&type=2"
    ))
    .await;
    let state = wait_state(
        &client,
        IO_TIMEOUT,
        "refused",
        |s| matches!(s, TunnelState::Reconnecting { error } if error.kind() == ErrorKind::AuthRefused),
    )
    .await;
    assert!(matches!(state, TunnelState::Reconnecting { .. }));
    assert_eq!(
        server.stats().pool_idle,
        0,
        "no pool connection was accepted"
    );
    shutdown(&[&client, &server]).await;
}

#[tokio::test]
async fn a_wrong_path_is_refused_with_404() {
    let server =
        start("server://k-0123456789@127.0.0.1:0/127.0.0.1:0?mode=1&type=2&wspath=/right").await;
    let tunnel = server.local_addrs().tunnel.unwrap();
    let client = start(&format!(
        "client://k-0123456789@{tunnel}/127.0.0.1:9?mode=2&type=2&wspath=/wrong"
    ))
    .await;
    wait_state(&client, IO_TIMEOUT, "refused with 404", |s| {
        matches!(s, TunnelState::Reconnecting { error }
                if error.kind() == ErrorKind::Unreachable && error.message().contains("404"))
    })
    .await;
    shutdown(&[&client, &server]).await;
}

#[tokio::test]
async fn a_restarted_server_is_found_again() {
    let echo = servers::echo().await;
    let url = |port: u16| format!("server://{KEY}@127.0.0.1:{port}/127.0.0.1:0?mode=1&type=2");
    let server = start(&url(0)).await;
    let port = server.local_addrs().tunnel.unwrap().port();
    let client = start(&format!(
        "client://{KEY}@127.0.0.1:{port}/{}?mode=2&min=2&wsping=1s",
        echo.addr()
    ))
    .await;
    wait_ready(&client).await;
    let users = server.local_addrs().users.unwrap();
    assert_eq!(roundtrip(users, b"before").await, b"before");
    shutdown(&[&server]).await;
    wait_state(&client, IO_TIMEOUT, "client notices", |s| {
        matches!(s, TunnelState::Reconnecting { .. })
    })
    .await;
    let server = start(&url(port)).await;
    wait_ready(&client).await;
    let users = server.local_addrs().users.unwrap();
    eventually(IO_TIMEOUT, "traffic after the restart", || async move {
        try_roundtrip(users, b"after")
            .await
            .ok()
            .filter(|r| r == b"after")
    })
    .await;
    shutdown(&[&client, &server]).await;
}

async fn echo_once(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).await.unwrap();
    let mut back = vec![0u8; msg.len()];
    tokio::time::timeout(IO_TIMEOUT, s.read_exact(&mut back))
        .await
        .expect("echo within IO_TIMEOUT")
        .unwrap();
    assert_eq!(back, msg);
}

#[tokio::test]
async fn the_slot_limit_is_honoured() {
    let echo: Server = servers::echo().await;
    let p = pair(
        Flow::Reverse,
        &echo.addr().to_string(),
        "&slot=1",
        "",
        false,
    )
    .await;
    let mut first = TcpStream::connect(p.users).await.unwrap();
    echo_once(&mut first, b"one").await;
    let mut second = TcpStream::connect(p.users).await.unwrap();
    let _ = second.write_all(b"two").await;
    let closed = read_until_closed(&mut second, Duration::from_secs(2))
        .await
        .expect("the second user is closed at once");
    assert!(closed.bytes.is_empty());
    assert_eq!(p.server.stats().refused, 1);
    echo_once(&mut first, b"still here").await;
    drop(first);
    shutdown(&[&p.client, &p.server]).await;
}
