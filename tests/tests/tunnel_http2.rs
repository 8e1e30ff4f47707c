//! The HTTP/2 pool transport (`type=3`): TCP and UDP in both data flows, byte-exact with
//! half-close, datagram-exact; the whole pool rides on one TCP connection; a wrong key
//! refused; `tls=0` refused with a message that says what to add; a restarted server
//! recovered; the slot limit honoured. Loopback only.

use std::net::SocketAddr;
use std::time::Duration;

use nodepass_core::tunnel::{Mode, TunnelState};
use nodepass_core::{ErrorKind, TunnelHandle};
use nodepass_tests::IO_TIMEOUT;
use nodepass_tests::payload::{random_bytes, sha256};
use nodepass_tests::process::Process;
use nodepass_tests::servers::{self, Server};
use nodepass_tests::tunnel::{
    eventually, read_until_closed, roundtrip, shutdown, start, try_roundtrip, try_start,
    wait_ready, wait_state,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// `nodepass_cli::main` as the `nodepass` binary runs it (see `tests/src/bin`).
const NODEPASS: &str = env!("CARGO_BIN_EXE_nodepass-e2e");
const KEY: &str = "http2-test-key-0123";
/// Bytes of each half-close request (the answer is twice that plus a hash).
const REQUEST_BYTES: usize = 1 << 20;
/// The client's pool size: all of it must ride on one TCP connection.
const POOL: u32 = 8;

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

/// A `type=3` server (plus `server_params`, `tls=1` unless given) and a client that is told
/// nothing about the transport, carrying users to `target`.
struct Pair {
    flow: Flow,
    server: TunnelHandle,
    client: TunnelHandle,
    users: SocketAddr,
}

async fn pair(flow: Flow, target: &str, server_params: &str) -> Pair {
    let (mode, server_target, client_target) = match flow {
        Flow::Reverse => (1, "127.0.0.1:0", target),
        Flow::Forward => (2, target, "127.0.0.1:0"),
    };
    let tls = if server_params.contains("tls=") {
        ""
    } else {
        "&tls=1"
    };
    let server = start(&format!(
        "server://{KEY}@127.0.0.1:0/{server_target}?mode={mode}&type=3{tls}{server_params}"
    ))
    .await;
    let tunnel = server.local_addrs().tunnel.unwrap();
    let client = start(&format!(
        "client://{KEY}@{tunnel}/{client_target}?mode=2&min={POOL}"
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
    }
}

/// Established TCP connections whose local end is 127.0.0.1:`port` (the server's side of
/// every connection to the tunnel port), from /proc/net/tcp.
fn established_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    let local = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // sl local_address rem_address st ...; 01 = ESTABLISHED.
            f.len() > 3 && f[1] == local && f[3] == "01"
        })
        .count()
}

/// The pool is full, and every tunnel connection of it (control included) is a stream on one
/// TCP connection to the tunnel port.
async fn one_tcp_connection(p: &Pair) {
    let idle_on = match p.flow {
        Flow::Reverse => &p.server,
        Flow::Forward => &p.client,
    };
    eventually(IO_TIMEOUT, "pool filled", || {
        let s = idle_on.stats();
        async move { (s.pool_idle >= POOL as u64).then_some(()) }
    })
    .await;
    let port = p.server.local_addrs().tunnel.unwrap().port();
    assert_eq!(
        established_to(port),
        1,
        "control and {POOL} pool connections ride on one TCP connection"
    );
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
async fn tcp_reverse_flow_with_half_close_on_one_tcp_connection() {
    let target = servers::collect_then_answer(answer).await;
    let p = pair(Flow::Reverse, &target.addr().to_string(), "").await;
    one_tcp_connection(&p).await;
    half_close_exchange(&p, 1).await;
    // Then several sessions at once, each its own stream on the same connection.
    let (a, b) = (random_bytes(11, 4096), random_bytes(12, 100));
    let (small, tiny) = tokio::join!(roundtrip(p.users, &a), roundtrip(p.users, &b));
    assert!(small == answer(&a) && tiny == answer(&b), "answers differ");
    shutdown(&[&p.client, &p.server]).await;
}

#[tokio::test]
async fn tcp_forward_flow_with_half_close_on_one_tcp_connection() {
    let target = servers::collect_then_answer(answer).await;
    let p = pair(Flow::Forward, &target.addr().to_string(), "").await;
    one_tcp_connection(&p).await;
    half_close_exchange(&p, 2).await;
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
async fn udp_exact(flow: Flow) {
    let (echo, task) = udp_echo().await;
    let p = pair(flow, &echo.to_string(), "").await;
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
    udp_exact(Flow::Reverse).await;
}

#[tokio::test]
async fn udp_forward_flow_is_datagram_exact() {
    udp_exact(Flow::Forward).await;
}

#[tokio::test]
async fn a_wrong_key_is_refused() {
    let server = start("server://right-key-0123@127.0.0.1:0/127.0.0.1:0?mode=1&type=3&tls=1").await;
    let tunnel = server.local_addrs().tunnel.unwrap();
    let client = start(&format!(
        "client://wrong-key-0123@{tunnel}/127.0.0.1:9?mode=2"
    ))
    .await;
    wait_state(
        &client,
        IO_TIMEOUT,
        "refused",
        |s| matches!(s, TunnelState::Reconnecting { error } if error.kind() == ErrorKind::AuthRefused),
    )
    .await;
    assert_eq!(
        server.stats().pool_idle,
        0,
        "no pool connection was accepted"
    );
    shutdown(&[&client, &server]).await;
}

#[tokio::test]
async fn type3_without_tls_is_refused_saying_what_to_add() {
    let Err(err) = try_start("server://k-0123456789@127.0.0.1:0/127.0.0.1:0?type=3").await else {
        panic!("type=3 with tls=0 is refused");
    };
    let msg = err.to_string();
    assert!(
        msg.contains("type") && msg.contains("tls=1") && msg.contains("tls=2"),
        "{msg}"
    );
}

/// The same as a new user meets it: the executable exits with the message.
#[test]
fn the_executable_refuses_type3_without_tls() {
    let mut p = Process::spawn(
        NODEPASS,
        "server",
        "server://k-0123456789@127.0.0.1:0/127.0.0.1:0?type=3",
    );
    let said = p.wait_for_stderr("add tls=1", IO_TIMEOUT);
    let report = p.report();
    p.kill();
    assert!(said, "the message says what to add:\n{report}");
    assert!(!report.contains("k-0123456789"), "the key is not printed");
}

#[tokio::test]
async fn a_restarted_server_is_found_again() {
    let echo = servers::echo().await;
    let url =
        |port: u16| format!("server://{KEY}@127.0.0.1:{port}/127.0.0.1:0?mode=1&type=3&tls=1");
    let server = start(&url(0)).await;
    let port = server.local_addrs().tunnel.unwrap().port();
    let client = start(&format!(
        "client://{KEY}@127.0.0.1:{port}/{}?mode=2&min=2",
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
    let p = pair(Flow::Reverse, &echo.addr().to_string(), "&slot=1").await;
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
