//! Things that change under a running tunnel: the server stops and starts again on the same
//! port, the control connection is cut or goes silent, the `tls=2` certificate files are
//! replaced on disk, and a graceful stop (sessions in flight finish, or are cut after the
//! grace period).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use nodepass_core::TunnelHandle;
use nodepass_core::TunnelOptions;
use nodepass_core::tunnel::TunnelState;
use nodepass_tests::IO_TIMEOUT;
use nodepass_tests::certs::{Ca, CertFiles, LEAF_NAMES, presented_certificate};
use nodepass_tests::logs::Logs;
use nodepass_tests::servers::{self, Tap};
use nodepass_tests::tunnel::{
    eventually, read_until_closed, roundtrip, shutdown, start, start_with, try_roundtrip,
    wait_ready, wait_state,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const KEY: &str = "restart-test-key";
/// The bound: after the server is back, new user connections work within this.
const RECOVERY: Duration = Duration::from_secs(10);

/// Wait until a user round trip through `users` succeeds (within [`RECOVERY`]); returns how
/// long it took.
async fn recovers(users: SocketAddr, what: &str) -> Duration {
    let start = Instant::now();
    eventually(RECOVERY, what, || async move {
        try_roundtrip(users, b"back again")
            .await
            .ok()
            .filter(|r| r == b"back again")
    })
    .await;
    start.elapsed()
}

/// Stop `server` and check the client notices.
async fn stop_server(server: &TunnelHandle, client: &TunnelHandle) {
    shutdown(&[server]).await;
    wait_state(client, IO_TIMEOUT, "client notices the server left", |s| {
        matches!(s, TunnelState::Reconnecting { .. })
    })
    .await;
}

#[tokio::test]
async fn server_restart_on_the_same_port_reverse_flow() {
    let echo = servers::echo().await;
    let first = start(&format!("server://{KEY}@127.0.0.1:0/127.0.0.1:0?mode=1")).await;
    let port = first.local_addrs().tunnel.unwrap().port();
    let client = start(&format!(
        "client://{KEY}@127.0.0.1:{port}/{}?mode=2&min=2",
        echo.addr()
    ))
    .await;
    wait_ready(&client).await;
    let users = first.local_addrs().users.unwrap();
    assert_eq!(roundtrip(users, b"first").await, b"first");
    stop_server(&first, &client).await;

    let second = start(&format!("server://{KEY}@127.0.0.1:{port}/{users}?mode=1")).await;
    assert_eq!(second.local_addrs().tunnel.unwrap().port(), port);
    let took = recovers(
        users,
        "reverse flow works again through the restarted server",
    )
    .await;
    eprintln!(
        "reverse flow: users served again {:.2} s after the restart",
        took.as_secs_f64()
    );
    assert_eq!(*client.state().borrow(), TunnelState::Ready);
    shutdown(&[&client, &second]).await;
}

#[tokio::test]
async fn server_restart_on_the_same_port_forward_flow_tls1() {
    let echo = servers::echo().await;
    let url = |port: u16| {
        format!(
            "server://{KEY}@127.0.0.1:{port}/{}?mode=2&tls=1",
            echo.addr()
        )
    };
    let first = start(&url(0)).await;
    let port = first.local_addrs().tunnel.unwrap().port();
    let client = start(&format!(
        "client://{KEY}@127.0.0.1:{port}/127.0.0.1:0?mode=2&min=2"
    ))
    .await;
    wait_ready(&client).await;
    let users = client.local_addrs().users.unwrap();
    assert_eq!(roundtrip(users, b"first").await, b"first");
    stop_server(&first, &client).await;

    // A new server makes a new self-signed certificate; the client takes it.
    let second = start(&url(port)).await;
    let took = recovers(
        users,
        "forward flow works again through the restarted server",
    )
    .await;
    eprintln!(
        "forward flow, tls=1: users served again {:.2} s after the restart",
        took.as_secs_f64()
    );
    assert_eq!(
        client.local_addrs().users,
        Some(users),
        "the client kept its user listener"
    );
    shutdown(&[&client, &second]).await;
}

/// A reverse-flow server, and a client reaching it through a tap (tunnel connection 0 is the
/// control connection).
async fn through_tap(
    echo: SocketAddr,
    one_way: Duration,
    client_options: TunnelOptions,
) -> (TunnelHandle, TunnelHandle, Tap, SocketAddr) {
    let server = start(&format!("server://{KEY}@127.0.0.1:0/127.0.0.1:0?mode=1")).await;
    let tap = Tap::with_latency(server.local_addrs().tunnel.unwrap(), one_way).await;
    let client = start_with(
        &format!("client://{KEY}@{}/{echo}?mode=2&min=2", tap.addr()),
        client_options,
    )
    .await;
    wait_ready(&client).await;
    let users = server.local_addrs().users.unwrap();
    (server, client, tap, users)
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
async fn losing_the_control_connection_does_not_cut_flowing_sessions() {
    let (logs, _guard) = Logs::capture();
    let echo = servers::echo().await;
    let (server, client, tap, users) =
        through_tap(echo.addr(), Duration::ZERO, TunnelOptions::default()).await;
    let mut flowing = TcpStream::connect(users).await.unwrap();
    echo_once(&mut flowing, b"before the cut").await;

    tap.cut(0);
    eventually(IO_TIMEOUT, "the client reconnects", || {
        let n = logs.lines_with(&["connected to the server"]).len();
        async move { (n >= 2).then_some(()) }
    })
    .await;
    wait_ready(&client).await;
    echo_once(
        &mut flowing,
        b"after the cut: same session, own pool connection",
    )
    .await;
    recovers(users, "new sessions after the reconnect").await;
    flowing.shutdown().await.unwrap();
    drop(flowing);
    shutdown(&[&client, &server]).await;
}

#[tokio::test]

async fn a_silent_server_is_detected_within_the_heartbeat_deadline() {
    let echo = servers::echo().await;
    // A link with 100 ms of round-trip time, frozen right after the first heartbeat answer:
    // the server's last message is then a pong that arrived 100 ms after one of the client's
    // pings (on loopback without latency timer rounding hides the problem).
    // Shortened heartbeat timings (the defaults are 5 s and 15 s): the same detection, sooner.
    let mut options = TunnelOptions::default();
    options.heartbeat_interval = Duration::from_millis(500);
    options.heartbeat_dead_after = Duration::from_secs(2);
    let dead_after = options.heartbeat_dead_after;
    let (server, client, tap, users) =
        through_tap(echo.addr(), Duration::from_millis(50), options).await;
    eventually(IO_TIMEOUT, "a first heartbeat round trip", || {
        let rtt = client.stats().rtt_us;
        async move { (rtt > 0).then_some(()) }
    })
    .await;
    tap.freeze(0);
    let frozen = Instant::now();
    let state = wait_state(
        &client,
        dead_after + Duration::from_secs(10),
        "the client gives up on a silent server",
        |s| matches!(s, TunnelState::Reconnecting { .. }),
    )
    .await;
    let detected = frozen.elapsed();
    eprintln!(
        "silent server detected after {:.1} s: {state:?}",
        detected.as_secs_f64()
    );
    recovers(users, "users served after the reconnect").await;
    assert!(
        detected <= dead_after + Duration::from_secs(1),
        "detected after {detected:?}"
    );
    shutdown(&[&client, &server]).await;
}

#[tokio::test]
async fn replaced_certificate_files_are_presented_to_new_connections() {
    let (logs, _guard) = Logs::capture();
    let ca = Ca::new("first ca");
    let (files, first_leaf) = CertFiles::new(&ca);
    let echo = servers::echo().await;
    let server = start(&format!(
        "server://{KEY}@127.0.0.1:0/127.0.0.1:0?mode=1&tls=2&crt={}&key={}",
        files.crt.display(),
        files.key.display()
    ))
    .await;
    let tunnel = server.local_addrs().tunnel.unwrap();
    let users = server.local_addrs().users.unwrap();
    assert_eq!(presented_certificate(tunnel).await.unwrap(), first_leaf.der);
    let client_url = |ca_file: &std::path::Path| {
        format!(
            "client://{KEY}@{tunnel}/{}?mode=2&min=2&sni=localhost&ca={}",
            echo.addr(),
            ca_file.display()
        )
    };
    let client = start(&client_url(&files.ca)).await;
    wait_ready(&client).await;
    assert_eq!(roundtrip(users, b"first cert").await, b"first cert");

    // A renewed leaf from the same CA: presented to new connections; the running client keeps
    // its session and keeps opening pool connections.
    let renewed = ca.leaf(&LEAF_NAMES);
    files.replace(&renewed);
    eventually(
        IO_TIMEOUT,
        "the renewed certificate is presented",
        || async {
            let now = presented_certificate(tunnel).await.ok()?;
            (now == renewed.der).then_some(())
        },
    )
    .await;
    for i in 0..5u8 {
        assert_eq!(roundtrip(users, &[b'r', i]).await, [b'r', i]);
    }
    assert_eq!(*client.state().borrow(), TunnelState::Ready);
    assert_eq!(
        logs.lines_with(&["connected to the server"]).len(),
        1,
        "the client's session was dropped by the reload"
    );
    shutdown(&[&client]).await;

    // A leaf from another CA: only clients trusting that CA get in.
    let other_ca = Ca::new("second ca");
    let other_ca_file = files.write_ca("second-ca.pem", &other_ca);
    let moved = other_ca.leaf(&LEAF_NAMES);
    files.replace(&moved);
    eventually(
        IO_TIMEOUT,
        "the new CA's certificate is presented",
        || async {
            let now = presented_certificate(tunnel).await.ok()?;
            (now == moved.der).then_some(())
        },
    )
    .await;
    let stale = start(&client_url(&files.ca)).await;
    let state = wait_state(&stale, IO_TIMEOUT, "old CA refused", |s| {
        matches!(s, TunnelState::Reconnecting { .. })
    })
    .await;
    eprintln!("client trusting the old CA: {state:?}");
    let fresh = start(&client_url(&other_ca_file)).await;
    wait_ready(&fresh).await;
    assert_eq!(roundtrip(users, b"new ca").await, b"new ca");
    assert_ne!(*stale.state().borrow(), TunnelState::Ready);
    shutdown(&[&stale, &fresh, &server]).await;
}

#[tokio::test]
async fn stopping_stops_accepting_and_lets_flowing_sessions_finish() {
    let echo = servers::echo().await;
    let server = start(&format!("server://{KEY}@127.0.0.1:0/127.0.0.1:0?mode=1")).await;
    let tunnel = server.local_addrs().tunnel.unwrap();
    let client = start(&format!("client://{KEY}@{tunnel}/{}?mode=2", echo.addr())).await;
    wait_ready(&client).await;
    let users = server.local_addrs().users.unwrap();
    let mut flowing = TcpStream::connect(users).await.unwrap();
    echo_once(&mut flowing, b"before stop").await;

    server.stop();
    // No new users...
    eventually(IO_TIMEOUT, "the user listener closes", || async move {
        TcpStream::connect(users).await.is_err().then_some(())
    })
    .await;
    // ...but the session in flight keeps working within the grace period, and the server
    // ends as soon as it is done.
    echo_once(&mut flowing, b"after stop, within the grace period").await;
    let done = Instant::now();
    flowing.shutdown().await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(IO_TIMEOUT, flowing.read_to_end(&mut rest))
        .await
        .expect("the session closes")
        .unwrap();
    assert!(rest.is_empty());
    tokio::time::timeout(IO_TIMEOUT, server.wait())
        .await
        .expect("the server stops")
        .unwrap();
    assert!(
        done.elapsed() < TunnelOptions::default().shutdown_grace,
        "the server waited for the whole grace period: {:?}",
        done.elapsed()
    );
    shutdown(&[&client]).await;
}

#[tokio::test]
async fn sessions_still_open_after_the_grace_period_are_cut() {
    let echo = servers::echo().await;
    // A 1 s grace period instead of the default 5 s: the same cut, sooner.
    let mut options = TunnelOptions::default();
    options.shutdown_grace = Duration::from_secs(1);
    let grace = options.shutdown_grace;
    let server = start_with(
        &format!("server://{KEY}@127.0.0.1:0/127.0.0.1:0?mode=1"),
        options,
    )
    .await;
    let tunnel = server.local_addrs().tunnel.unwrap();
    let client = start(&format!("client://{KEY}@{tunnel}/{}?mode=2", echo.addr())).await;
    wait_ready(&client).await;
    let mut idle = TcpStream::connect(server.local_addrs().users.unwrap())
        .await
        .unwrap();
    echo_once(&mut idle, b"then silence").await;
    let stopped = Instant::now();
    server.stop();
    let closed = read_until_closed(&mut idle, grace + Duration::from_secs(3))
        .await
        .expect("the session is cut after the grace period");
    tokio::time::timeout(IO_TIMEOUT, server.wait())
        .await
        .expect("the server stops")
        .unwrap();
    let took = stopped.elapsed();
    eprintln!(
        "idle session cut {:.2} s after stop",
        closed.after.as_secs_f64()
    );
    assert!(took >= grace - Duration::from_millis(100));
    shutdown(&[&client]).await;
}

/// Cut every idle pool connection on the wire; the next users must still be served at the
/// first attempt (dead connections skipped, replacements dialed on demand).
async fn idle_pool_connections_cut(forward: bool, tls: u8) {
    let echo = servers::echo().await;
    let (mode, server_target, client_target) = if forward {
        (2, echo.addr().to_string(), "127.0.0.1:0".to_string())
    } else {
        (1, "127.0.0.1:0".to_string(), echo.addr().to_string())
    };
    let server = start(&format!(
        "server://{KEY}@127.0.0.1:0/{server_target}?mode={mode}&tls={tls}"
    ))
    .await;
    let tap = Tap::start(server.local_addrs().tunnel.unwrap()).await;
    let client = start(&format!(
        "client://{KEY}@{}/{client_target}?mode=2&min=3",
        tap.addr()
    ))
    .await;
    wait_ready(&client).await;
    // Both ends count idle pool connections (queued on one side, parked on the other).
    eventually(IO_TIMEOUT, "full pools", || {
        let (s, c) = (server.stats().pool_idle, client.stats().pool_idle);
        async move { (s >= 3 && c >= 3).then_some(()) }
    })
    .await;
    let conns = tap.accepted();
    // The last three are the pool (before them: the control connection, and with tls the
    // plain probe that learned tls is required).
    for i in conns - 3..conns {
        tap.cut(i);
    }
    // Wait until the parking side saw its connections close: the queuing side now holds
    // three dead connections (the tap closed both sides at once).
    let parking = if forward { &server } else { &client };
    eventually(IO_TIMEOUT, "the parked connections end", || {
        let grown = tap.accepted() > conns;
        let parked = parking.stats().pool_idle;
        async move { (grown || parked == 0).then_some(()) }
    })
    .await;
    let users = if forward {
        client.local_addrs().users.unwrap()
    } else {
        server.local_addrs().users.unwrap()
    };
    for i in 0..3u8 {
        let msg = [b'p', i];
        let reply = try_roundtrip(users, &msg).await;
        assert_eq!(
            reply.as_deref().ok(),
            Some(&msg[..]),
            "user {i} after the pool was cut: {reply:?}"
        );
    }
    assert_eq!(*client.state().borrow(), TunnelState::Ready);
    shutdown(&[&client, &server]).await;
}

#[tokio::test]
async fn dead_idle_pool_connections_are_skipped_reverse_flow() {
    idle_pool_connections_cut(false, 0).await;
}

#[tokio::test]
async fn dead_idle_pool_connections_are_skipped_reverse_flow_tls1() {
    idle_pool_connections_cut(false, 1).await;
}

#[tokio::test]
async fn dead_idle_pool_connections_are_skipped_forward_flow() {
    idle_pool_connections_cut(true, 0).await;
}

#[tokio::test]
async fn dead_idle_pool_connections_are_skipped_forward_flow_tls1() {
    idle_pool_connections_cut(true, 1).await;
}
