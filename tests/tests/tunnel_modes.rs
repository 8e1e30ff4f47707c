//! Data flows end to end: reverse and forward flow with tls 0, 1 and 2 (a recording tap on the
//! tunnel leg shows what crosses the wire), automatic mode detection on both roles, single-end
//! forwarding, and half-close in every flow (the user's side, and the target's side).

use std::net::SocketAddr;
use std::time::Duration;

use nodepass_core::TunnelHandle;
use nodepass_core::tunnel::Mode;
use nodepass_tests::IO_TIMEOUT;
use nodepass_tests::certs::{Ca, CertFiles};
use nodepass_tests::payload::{exchange, random_bytes, sha256};
use nodepass_tests::servers::{self, Server, Tap, contains};
use nodepass_tests::tunnel::{eventually, roundtrip, shutdown, start, wait_ready};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

const KEY: &str = "modes-test-key";
/// Sent once in plain text through every tunnel; must not be readable on a TLS tunnel leg.
const MARKER: &[u8] = b"plaintext-marker-0123456789-nodepass";
/// Bytes each flow test sends (and gets back) with hashes compared.
const FLOW_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Reverse,
    Forward,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tls {
    Off,
    SelfSigned,
    Files,
}

/// A server and a dual-end client joined through a [`Tap`], carrying users to an echo server.
struct Pair {
    server: TunnelHandle,
    client: TunnelHandle,
    users: SocketAddr,
    tap: Tap,
    _echo: Server,
    _certs: Option<CertFiles>,
}

async fn pair(flow: Flow, tls: Tls) -> Pair {
    let echo = servers::echo().await;
    let (mode, server_target, client_target) = match flow {
        Flow::Reverse => (1, "127.0.0.1:0".to_string(), echo.addr().to_string()),
        Flow::Forward => (2, echo.addr().to_string(), "127.0.0.1:0".to_string()),
    };
    let ca = Ca::new("modes test ca");
    let certs = (tls == Tls::Files).then(|| CertFiles::new(&ca).0);
    let (server_tls, client_tls) = match (&tls, &certs) {
        (Tls::Off, _) => ("tls=0".to_string(), String::new()),
        (Tls::SelfSigned, _) => ("tls=1".to_string(), String::new()),
        (Tls::Files, Some(c)) => (
            format!("tls=2&crt={}&key={}", c.crt.display(), c.key.display()),
            format!("&sni=localhost&ca={}", c.ca.display()),
        ),
        (Tls::Files, None) => unreachable!(),
    };
    let server = start(&format!(
        "server://{KEY}@127.0.0.1:0/{server_target}?mode={mode}&{server_tls}"
    ))
    .await;
    let tap = Tap::start(server.local_addrs().tunnel.unwrap()).await;
    let client = start(&format!(
        "client://{KEY}@{}/{client_target}?mode=2&min=4{client_tls}",
        tap.addr()
    ))
    .await;
    wait_ready(&client).await;
    let expected = match flow {
        Flow::Reverse => Mode::Reverse,
        Flow::Forward => Mode::Forward,
    };
    assert_eq!(server.mode(), expected);
    assert_eq!(client.mode(), expected);
    let users = match flow {
        Flow::Reverse => server.local_addrs().users,
        Flow::Forward => client.local_addrs().users,
    }
    .expect("the accepting side has a user listener");
    Pair {
        server,
        client,
        users,
        tap,
        _echo: echo,
        _certs: certs,
    }
}

/// 1 MiB each way with hashes compared, counters checked on both ends, and the tunnel leg
/// checked for plain text.
async fn carries_traffic(flow: Flow, tls: Tls) {
    let p = pair(flow, tls).await;
    let s = TcpStream::connect(p.users).await.unwrap();
    let x = exchange(s, 42, FLOW_BYTES).await.unwrap();
    assert_eq!(x.received_len, FLOW_BYTES as u64);
    assert_eq!(
        x.received_sha256, x.sent_sha256,
        "bytes out differ from bytes in"
    );
    assert_eq!(roundtrip(p.users, MARKER).await, MARKER);

    // Both ends count their local sockets: user side on the accepting end, target side on
    // the dialing end; each saw every byte once in each direction.
    let total = (FLOW_BYTES + MARKER.len()) as u64;
    for (name, h) in [("server", &p.server), ("client", &p.client)] {
        eventually(
            Duration::from_secs(5),
            &format!("{name} byte counters"),
            || {
                let s = h.stats();
                async move {
                    (s.tcp_rx == total && s.tcp_tx == total && s.tcp_active == 0).then_some(())
                }
            },
        )
        .await;
        assert!(h.stats().tcp_total >= 2, "{name}: {:?}", h.stats());
    }

    let up = p.tap.upstream_bytes();
    let down = p.tap.downstream_bytes();
    match tls {
        Tls::Off => assert!(
            contains(&up, MARKER) || contains(&down, MARKER),
            "the tap sees nothing: is the client really using it?"
        ),
        Tls::SelfSigned | Tls::Files => {
            assert!(!contains(&up, MARKER), "user data in clear on a tls tunnel");
            assert!(
                !contains(&down, MARKER),
                "user data in clear on a tls tunnel"
            );
            assert!(
                !contains(&up, &random_bytes(42, 4096)),
                "payload in clear on a tls tunnel"
            );
        }
    }
    assert!(
        p.tap.accepted() >= 2,
        "control and pool connections go through the tap"
    );
    shutdown(&[&p.client, &p.server]).await;
}

#[tokio::test]
async fn reverse_flow_tls0() {
    carries_traffic(Flow::Reverse, Tls::Off).await;
}

#[tokio::test]
async fn reverse_flow_tls1() {
    carries_traffic(Flow::Reverse, Tls::SelfSigned).await;
}

#[tokio::test]
async fn reverse_flow_tls2() {
    carries_traffic(Flow::Reverse, Tls::Files).await;
}

#[tokio::test]
async fn forward_flow_tls0() {
    carries_traffic(Flow::Forward, Tls::Off).await;
}

#[tokio::test]
async fn forward_flow_tls1() {
    carries_traffic(Flow::Forward, Tls::SelfSigned).await;
}

#[tokio::test]
async fn forward_flow_tls2() {
    carries_traffic(Flow::Forward, Tls::Files).await;
}

#[tokio::test]
async fn server_auto_mode_is_reverse_when_the_target_is_bindable() {
    let echo = servers::echo().await;
    let server = start(&format!("server://{KEY}@127.0.0.1:0/127.0.0.1:0?mode=0")).await;
    assert_eq!(server.mode(), Mode::Reverse);
    let users = server
        .local_addrs()
        .users
        .expect("reverse flow listens on its target");
    let tunnel = server.local_addrs().tunnel.unwrap();
    // Client auto mode with a tunnel address that a server holds: dual-end.
    let client = start(&format!("client://{KEY}@{tunnel}/{}?mode=0", echo.addr())).await;
    wait_ready(&client).await;
    assert_eq!(client.mode(), Mode::Reverse);
    assert_eq!(roundtrip(users, b"auto reverse").await, b"auto reverse");
    shutdown(&[&client, &server]).await;
}

#[tokio::test]
async fn server_auto_mode_is_forward_when_the_target_port_is_taken() {
    // The echo server holds the target port, so the server cannot listen there: it dials it.
    let echo = servers::echo().await;
    let server = start(&format!(
        "server://{KEY}@127.0.0.1:0/{}?mode=0",
        echo.addr()
    ))
    .await;
    assert_eq!(server.mode(), Mode::Forward);
    assert_eq!(server.local_addrs().users, None);
    let tunnel = server.local_addrs().tunnel.unwrap();
    let client = start(&format!("client://{KEY}@{tunnel}/127.0.0.1:0?mode=0")).await;
    wait_ready(&client).await;
    assert_eq!(client.mode(), Mode::Forward);
    let users = client
        .local_addrs()
        .users
        .expect("forward flow: the client listens");
    assert_eq!(roundtrip(users, b"auto forward").await, b"auto forward");
    assert_eq!(echo.accepted(), 1, "the server dialed the taken target");
    shutdown(&[&client, &server]).await;
}

#[tokio::test]
async fn client_auto_mode_is_single_end_when_the_tunnel_address_is_bindable() {
    let echo = servers::echo().await;
    let client = start(&format!("client://127.0.0.1:0/{}?mode=0", echo.addr())).await;
    wait_ready(&client).await;
    assert_eq!(client.mode(), Mode::SingleEnd);
    let listen = client
        .local_addrs()
        .tunnel
        .expect("single-end listens on the tunnel address");
    assert_eq!(roundtrip(listen, b"auto single").await, b"auto single");
    shutdown(&[&client]).await;
}

#[tokio::test]
async fn single_end_mode_forwards_locally() {
    let echo = servers::echo().await;
    let client = start(&format!("client://127.0.0.1:0/{}?mode=1", echo.addr())).await;
    wait_ready(&client).await;
    assert_eq!(client.mode(), Mode::SingleEnd);
    let listen = client.local_addrs().tunnel.unwrap();
    let x = exchange(TcpStream::connect(listen).await.unwrap(), 7, FLOW_BYTES)
        .await
        .unwrap();
    assert_eq!(x.received_len, FLOW_BYTES as u64);
    assert_eq!(x.received_sha256, x.sent_sha256);
    eventually(Duration::from_secs(5), "single-end counters", || {
        let s = client.stats();
        async move {
            (s.tcp_rx == FLOW_BYTES as u64 && s.tcp_tx == FLOW_BYTES as u64).then_some(())
        }
    })
    .await;
    shutdown(&[&client]).await;
}

/// The half-close target's answer: the request's SHA-256, then the request twice. Only sent
/// after the request's EOF, so it proves the user's shutdown reached the target as EOF while
/// the way back stayed open.
fn answer(request: &[u8]) -> Vec<u8> {
    let mut a = sha256(request).to_vec();
    a.extend_from_slice(request);
    a.extend_from_slice(request);
    a
}

async fn half_close(users: SocketAddr) {
    let request = random_bytes(99, 256 << 10);
    let reply = roundtrip(users, &request).await;
    assert_eq!(reply.len(), answer(&request).len());
    assert!(reply == answer(&request), "half-close answer differs");
}

#[tokio::test]
async fn half_close_reverse_flow() {
    let target = servers::collect_then_answer(answer).await;
    let server = start(&format!("server://{KEY}@127.0.0.1:0/127.0.0.1:0?mode=1")).await;
    let tunnel = server.local_addrs().tunnel.unwrap();
    let client = start(&format!("client://{KEY}@{tunnel}/{}?mode=2", target.addr())).await;
    wait_ready(&client).await;
    half_close(server.local_addrs().users.unwrap()).await;
    shutdown(&[&client, &server]).await;
}

#[tokio::test]
async fn half_close_forward_flow_tls1() {
    let target = servers::collect_then_answer(answer).await;
    let server = start(&format!(
        "server://{KEY}@127.0.0.1:0/{}?mode=2&tls=1",
        target.addr()
    ))
    .await;
    let tunnel = server.local_addrs().tunnel.unwrap();
    let client = start(&format!("client://{KEY}@{tunnel}/127.0.0.1:0?mode=2")).await;
    wait_ready(&client).await;
    half_close(client.local_addrs().users.unwrap()).await;
    shutdown(&[&client, &server]).await;
}

#[tokio::test]
async fn half_close_single_end() {
    let target = servers::collect_then_answer(answer).await;
    let client = start(&format!("client://127.0.0.1:0/{}?mode=1", target.addr())).await;
    wait_ready(&client).await;
    half_close(client.local_addrs().tunnel.unwrap()).await;
    shutdown(&[&client]).await;
}

/// A target that speaks first and then stops writing (shuts down its write half), but keeps
/// reading until the user's EOF; it reports what it read on `got`.
async fn says_goodbye_first(got: mpsc::UnboundedSender<Vec<u8>>) -> Server {
    Server::spawn(move |mut s, _| {
        let got = got.clone();
        async move {
            if s.write_all(b"bye from the target\n").await.is_err() || s.shutdown().await.is_err() {
                return;
            }
            let mut all = Vec::new();
            if tokio::time::timeout(IO_TIMEOUT, s.read_to_end(&mut all))
                .await
                .is_ok_and(|r| r.is_ok())
            {
                let _ = got.send(all);
            }
        }
    })
    .await
}

/// The user reads the target's whole message to EOF, then still sends 64 KiB that must all
/// arrive: a half-close from the target's side keeps the other direction open.
async fn target_half_close(users: SocketAddr, got: &mut mpsc::UnboundedReceiver<Vec<u8>>) {
    let mut user = TcpStream::connect(users).await.unwrap();
    let mut hello = Vec::new();
    tokio::time::timeout(IO_TIMEOUT, user.read_to_end(&mut hello))
        .await
        .expect("the target's EOF reaches the user")
        .unwrap();
    assert_eq!(hello, b"bye from the target\n");
    let late = random_bytes(3, 64 << 10);
    user.write_all(&late).await.unwrap();
    user.shutdown().await.unwrap();
    let received = tokio::time::timeout(IO_TIMEOUT, got.recv())
        .await
        .expect("the target reports what it read")
        .unwrap();
    assert!(received == late, "the target read {} bytes", received.len());
}

#[tokio::test]
async fn half_close_from_the_target_side_reverse_flow() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let target = says_goodbye_first(tx).await;
    let server = start(&format!("server://{KEY}@127.0.0.1:0/127.0.0.1:0?mode=1")).await;
    let tunnel = server.local_addrs().tunnel.unwrap();
    let client = start(&format!("client://{KEY}@{tunnel}/{}?mode=2", target.addr())).await;
    wait_ready(&client).await;
    target_half_close(server.local_addrs().users.unwrap(), &mut rx).await;
    shutdown(&[&client, &server]).await;
}

#[tokio::test]
async fn half_close_from_the_target_side_forward_flow() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let target = says_goodbye_first(tx).await;
    let server = start(&format!(
        "server://{KEY}@127.0.0.1:0/{}?mode=2",
        target.addr()
    ))
    .await;
    let tunnel = server.local_addrs().tunnel.unwrap();
    let client = start(&format!("client://{KEY}@{tunnel}/127.0.0.1:0?mode=2")).await;
    wait_ready(&client).await;
    target_half_close(client.local_addrs().users.unwrap(), &mut rx).await;
    shutdown(&[&client, &server]).await;
}
