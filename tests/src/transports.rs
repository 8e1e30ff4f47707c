//! Scenarios every pool transport passes, run by each transport's test file with its own
//! parameters (`type=1` in `tunnel_quic.rs`, `type=2` in `tunnel_websocket.rs`, `type=3` in
//! `tunnel_http2.rs`): a server and a client in either data flow, a 1 MiB half-close exchange
//! checked byte for byte and against both ends' counters, datagram-exact UDP, a wrong key, a
//! restarted server, the slot limit; for the transports that run inside TLS (`type=1`,
//! `type=3`), `tls=0` refused by the library and the executable. Loopback only.

use std::net::SocketAddr;
use std::time::Duration;

use nodepass_core::tunnel::{Mode, TunnelState};
use nodepass_core::{ErrorKind, TunnelHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::IO_TIMEOUT;
use crate::payload::{random_bytes, sha256};
use crate::servers::{self, Tap};
use crate::tunnel::{
    eventually, read_until_closed, roundtrip, shutdown, start, try_roundtrip, wait_ready,
    wait_state,
};

/// The tunnel key of these scenarios.
pub const KEY: &str = "transport-test-key-0123";
/// Bytes of each half-close request (the answer is twice that plus a hash).
pub const REQUEST_BYTES: usize = 1 << 20;

/// Which end accepts the users.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// The server accepts users, the client dials the target (`mode=1` on the server).
    Reverse,
    /// The client accepts users, the server dials the target (`mode=2` on the server).
    Forward,
}

/// The half-close target's answer: the request's SHA-256, then the request twice, sent only
/// after the request's EOF (serve it with [`servers::collect_then_answer`]).
pub fn answer(request: &[u8]) -> Vec<u8> {
    let mut a = sha256(request).to_vec();
    a.extend_from_slice(request);
    a.extend_from_slice(request);
    a
}

/// A running server and client carrying users to a target.
pub struct Pair {
    /// The data flow.
    pub flow: Flow,
    /// The server's handle.
    pub server: TunnelHandle,
    /// The client's handle.
    pub client: TunnelHandle,
    /// Where users connect.
    pub users: SocketAddr,
    /// The recording tap between client and server, if asked for.
    pub tap: Option<Tap>,
}

/// Start a server (`server_params` appended to its query, e.g. `&type=3&tls=1`) and a client
/// (`client_params`; `&min=2` unless it sets `min=`) carrying users to `target`, and wait until
/// the client is ready in the expected mode; with `tap`, the client dials through a [`Tap`].
pub async fn pair(
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
        "server://{KEY}@127.0.0.1:0/{server_target}?mode={mode}{server_params}"
    ))
    .await;
    let tunnel = server.local_addrs().tunnel.unwrap();
    let tap = if tap {
        Some(Tap::start(tunnel).await)
    } else {
        None
    };
    let dial = tap.as_ref().map_or(tunnel, |t| t.addr());
    let min = if client_params.contains("min=") {
        ""
    } else {
        "&min=2"
    };
    let client = start(&format!(
        "client://{KEY}@{dial}/{client_target}?mode=2{min}{client_params}"
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
/// The target must answer with [`answer`].
pub async fn half_close_exchange(p: &Pair, seed: u64) {
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

/// Datagrams of many sizes (1 byte to 60000) each come back exactly, one at a time, through a
/// [`pair`] made with these parameters.
pub async fn udp_exact(flow: Flow, server_params: &str, client_params: &str) {
    let (echo, task) = udp_echo().await;
    let p = pair(flow, &echo.to_string(), server_params, client_params, false).await;
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

/// A client with the wrong key is refused as `AuthRefused` and no pool connection is accepted.
pub async fn wrong_key_refused(server_params: &str, client_params: &str) {
    let server = start(&format!(
        "server://right-key-0123@127.0.0.1:0/127.0.0.1:0?mode=1{server_params}"
    ))
    .await;
    let tunnel = server.local_addrs().tunnel.unwrap();
    let client = start(&format!(
        "client://wrong-key-0123@{tunnel}/127.0.0.1:9?mode=2{client_params}"
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

/// A server stopped and started again on the same port is found again by its client, and
/// traffic flows.
pub async fn restart_recovers(server_params: &str, client_params: &str) {
    let echo = servers::echo().await;
    let url =
        |port: u16| format!("server://{KEY}@127.0.0.1:{port}/127.0.0.1:0?mode=1{server_params}");
    let server = start(&url(0)).await;
    let port = server.local_addrs().tunnel.unwrap().port();
    let client = start(&format!(
        "client://{KEY}@127.0.0.1:{port}/{}?mode=2&min=2{client_params}",
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

/// With `slot=1` a second user is closed at once (and counted as refused) while the first
/// keeps working.
pub async fn slot_limit_honoured(server_params: &str, client_params: &str) {
    let echo = servers::echo().await;
    let p = pair(
        Flow::Reverse,
        &echo.addr().to_string(),
        &format!("{server_params}&slot=1"),
        client_params,
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

/// Forward flow over the transport of `server_params` (client `client_params`): the target
/// answers after reading to the end; `check` looks at the ready pair first (what carries it),
/// then the half-close exchange runs and both ends stop.
pub async fn forward_half_close(
    server_params: &str,
    client_params: &str,
    check: impl AsyncFnOnce(&Pair),
) {
    let target = servers::collect_then_answer(answer).await;
    let p = pair(
        Flow::Forward,
        &target.addr().to_string(),
        server_params,
        client_params,
        false,
    )
    .await;
    check(&p).await;
    half_close_exchange(&p, 2).await;
    shutdown(&[&p.client, &p.server]).await;
}

/// The URL of a server with pool transport `pool_type` and no `tls`.
fn without_tls(pool_type: u8) -> String {
    format!("server://k-0123456789@127.0.0.1:0/127.0.0.1:0?type={pool_type}")
}

/// A transport that runs inside TLS (`type=1` QUIC, `type=3` HTTP/2) is refused at start
/// with `tls=0`, by a message that names `type` and both TLS modes to add, never the key.
pub async fn tls0_refused_by_the_library(pool_type: u8) {
    let Err(err) = crate::tunnel::try_start(&without_tls(pool_type)).await else {
        panic!("type={pool_type} with tls=0 is refused");
    };
    let msg = err.to_string();
    assert!(
        msg.contains("type") && msg.contains("tls=1") && msg.contains("tls=2"),
        "{msg}"
    );
    assert!(!msg.contains("k-0123456789"), "the key is not in the error");
}

/// [`tls0_refused_by_the_library`] as a new user meets it: the executable `exe` (`nodepass`)
/// exits with the message, without printing the key. Blocks (bounded by [`IO_TIMEOUT`]).
pub fn tls0_refused_by_the_executable(exe: &str, pool_type: u8) {
    let mut p = crate::process::Process::spawn(exe, "server", &without_tls(pool_type));
    let said = p.wait_for_stderr("add tls=1", IO_TIMEOUT);
    let report = p.report();
    p.kill();
    assert!(said, "the message says what to add:\n{report}");
    assert!(!report.contains("k-0123456789"), "the key is not printed");
}
