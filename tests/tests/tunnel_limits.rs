//! Per-tunnel parameters end to end: `slot`, `rate`, `read`, `proxy=1|2`, `block`, several
//! targets with fail-over, and `dial`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use nodepass_core::TunnelHandle;
use nodepass_tests::IO_TIMEOUT;
use nodepass_tests::certs;
use nodepass_tests::logs::Logs;
use nodepass_tests::servers::{self, Recorder};
use nodepass_tests::tunnel::{
    closed_port, eventually, read_until_closed, roundtrip, shutdown, start, try_roundtrip,
    wait_ready,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const KEY: &str = "limits-test-key";
/// "At once" for a refused user connection.
const AT_ONCE: Duration = Duration::from_secs(1);

/// A reverse-flow tunnel to `target`: `server_params` on the server (which accepts users),
/// `client_params` on the client (which dials the target). Returns (server, client, users).
async fn reverse(
    target: &str,
    server_params: &str,
    client_params: &str,
) -> (TunnelHandle, TunnelHandle, SocketAddr) {
    let server = start(&format!(
        "server://{KEY}@127.0.0.1:0/127.0.0.1:0?mode=1{server_params}"
    ))
    .await;
    let tunnel = server.local_addrs().tunnel.unwrap();
    let client = start(&format!(
        "client://{KEY}@{tunnel}/{target}?mode=2{client_params}"
    ))
    .await;
    wait_ready(&client).await;
    let users = server.local_addrs().users.unwrap();
    (server, client, users)
}

/// A forward-flow tunnel to `target` (the client accepts users, the server dials).
async fn forward(
    target: &str,
    server_params: &str,
    client_params: &str,
) -> (TunnelHandle, TunnelHandle, SocketAddr) {
    let server = start(&format!(
        "server://{KEY}@127.0.0.1:0/{target}?mode=2{server_params}"
    ))
    .await;
    let tunnel = server.local_addrs().tunnel.unwrap();
    let client = start(&format!(
        "client://{KEY}@{tunnel}/127.0.0.1:0?mode=2{client_params}"
    ))
    .await;
    wait_ready(&client).await;
    let users = client.local_addrs().users.unwrap();
    (server, client, users)
}

/// Write `msg` and read the same number of bytes back (through an echo target).
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
async fn slot_limit_closes_the_third_user_at_once_and_counts_it() {
    let echo = servers::echo().await;
    let (server, client, users) = reverse(&echo.addr().to_string(), "&slot=2", "").await;
    let mut first = TcpStream::connect(users).await.unwrap();
    let mut second = TcpStream::connect(users).await.unwrap();
    echo_once(&mut first, b"one").await;
    echo_once(&mut second, b"two").await;
    assert_eq!(server.stats().tcp_active, 2);

    let mut third = TcpStream::connect(users).await.unwrap();
    let _ = third.write_all(b"three").await;
    let closed = read_until_closed(&mut third, AT_ONCE)
        .await
        .expect("the third user is closed at once");
    assert!(closed.bytes.is_empty());
    assert_eq!(server.stats().refused, 1);
    assert_eq!(
        echo.accepted(),
        2,
        "the refused user never reached the target"
    );

    // The first two still work; once one leaves, a new user gets its slot.
    echo_once(&mut first, b"still here").await;
    drop(second);
    eventually(IO_TIMEOUT, "a freed slot is reused", || async move {
        try_roundtrip(users, b"four")
            .await
            .ok()
            .filter(|r| r == b"four")
    })
    .await;
    drop(first);
    shutdown(&[&client, &server]).await;
}

#[tokio::test]
async fn rate_limit_slows_a_transfer_down() {
    // rate=8 Mbit/s = 1 000 000 bytes/s with a burst of 100 000 bytes: 1 MB takes 0.9 s, less
    // at most one unpaid 64 KiB chunk (>= 0.83 s).
    const BYTES: usize = 1_000_000;
    let target = servers::collect_then_answer(|req| req.len().to_string().into_bytes()).await;
    let (server, client, users) = reverse(&target.addr().to_string(), "&rate=8", "").await;
    let start = Instant::now();
    let reply = roundtrip(users, &vec![0x42; BYTES]).await;
    let elapsed = start.elapsed();
    assert_eq!(reply, BYTES.to_string().as_bytes());
    eprintln!("rate=8: 1 MB in {:.2} s", elapsed.as_secs_f64());
    assert!(
        elapsed >= Duration::from_millis(800),
        "1 MB at 8 Mbit/s took only {elapsed:?}"
    );
    shutdown(&[&client, &server]).await;
}

#[tokio::test]
async fn rate_limit_is_one_bucket_for_both_directions() {
    // 500 kB echoed = 1 MB through the server's bucket at 8 Mbit/s: 0.9 s minus the last
    // unpaid chunk of each direction (>= 0.77 s) if both directions share one bucket; a bucket
    // per direction would allow about 0.33 s.
    const BYTES: usize = 500_000;
    let echo = servers::echo().await;
    let (server, client, users) = reverse(&echo.addr().to_string(), "&rate=8", "").await;
    let start = Instant::now();
    let reply = roundtrip(users, &vec![0x24; BYTES]).await;
    let elapsed = start.elapsed();
    assert_eq!(reply.len(), BYTES);
    eprintln!("rate=8: 500 kB echoed in {:.2} s", elapsed.as_secs_f64());
    assert!(
        elapsed >= Duration::from_millis(700),
        "1 MB (both directions) at 8 Mbit/s took only {elapsed:?}"
    );
    shutdown(&[&client, &server]).await;
}

#[tokio::test]
async fn read_timeout_closes_idle_sessions_only() {
    let echo = servers::echo().await;
    let (server, client, users) = reverse(&echo.addr().to_string(), "&read=1s", "").await;

    // Busy for twice the timeout: never cut.
    let mut busy = TcpStream::connect(users).await.unwrap();
    for i in 0..7u8 {
        echo_once(&mut busy, &[b'a' + i]).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    echo_once(&mut busy, b"still open").await;

    // Idle: closed about a second after its last byte.
    let mut idle = TcpStream::connect(users).await.unwrap();
    echo_once(&mut idle, b"x").await;
    let closed = read_until_closed(&mut idle, Duration::from_secs(5))
        .await
        .expect("an idle session is closed");
    eprintln!(
        "read=1s: idle session closed after {:.2} s",
        closed.after.as_secs_f64()
    );
    assert!(closed.bytes.is_empty());
    assert!(
        closed.after >= Duration::from_millis(800),
        "{:?}",
        closed.after
    );
    shutdown(&[&client, &server]).await;
}

/// The PROXY v1 header for a TCP user `src` that connected to `dst` (both IPv4).
fn proxy_v1(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    format!(
        "PROXY TCP4 {} {} {} {}\r\n",
        src.ip(),
        dst.ip(),
        src.port(),
        dst.port()
    )
    .into_bytes()
}

/// The PROXY v2 header (command PROXY, TCP over IPv4), written out byte by byte.
fn proxy_v2(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let (SocketAddr::V4(src), SocketAddr::V4(dst)) = (src, dst) else {
        panic!("ipv4 only");
    };
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(0x21); // version 2, PROXY
    h.push(0x11); // AF_INET, STREAM
    h.extend_from_slice(&12u16.to_be_bytes());
    h.extend_from_slice(&src.ip().octets());
    h.extend_from_slice(&dst.ip().octets());
    h.extend_from_slice(&src.port().to_be_bytes());
    h.extend_from_slice(&dst.port().to_be_bytes());
    h
}

/// Send a payload as a user and check the target got exactly `header(user, listener)` then
/// the payload.
async fn check_proxy_header(
    users: SocketAddr,
    target: &Recorder,
    header: fn(SocketAddr, SocketAddr) -> Vec<u8>,
) {
    const PAYLOAD: &[u8] = b"user bytes after the header";
    let mut user = TcpStream::connect(users).await.unwrap();
    let me = user.local_addr().unwrap();
    user.write_all(PAYLOAD).await.unwrap();
    user.shutdown().await.unwrap();
    let reply = read_until_closed(&mut user, IO_TIMEOUT)
        .await
        .expect("closed");
    assert_eq!(reply.bytes, b"ok");
    let seen = target.seen();
    assert_eq!(seen.len(), 1);
    let mut expected = header(me, users);
    expected.extend_from_slice(PAYLOAD);
    assert_eq!(
        seen[0].bytes,
        expected,
        "got {:?}",
        String::from_utf8_lossy(&seen[0].bytes)
    );
}

#[tokio::test]
async fn proxy_v1_header_reverse_flow() {
    let target = Recorder::start().await;
    let (server, client, users) = reverse(&target.addr().to_string(), "", "&proxy=1").await;
    check_proxy_header(users, &target, proxy_v1).await;
    shutdown(&[&client, &server]).await;
}

#[tokio::test]
async fn proxy_v2_header_reverse_flow() {
    let target = Recorder::start().await;
    let (server, client, users) = reverse(&target.addr().to_string(), "", "&proxy=2").await;
    check_proxy_header(users, &target, proxy_v2).await;
    shutdown(&[&client, &server]).await;
}

#[tokio::test]
async fn proxy_v1_header_forward_flow() {
    let target = Recorder::start().await;
    let (server, client, users) = forward(&target.addr().to_string(), "&proxy=1", "").await;
    check_proxy_header(users, &target, proxy_v1).await;
    shutdown(&[&client, &server]).await;
}

#[tokio::test]
async fn proxy_v2_header_forward_flow() {
    let target = Recorder::start().await;
    let (server, client, users) = forward(&target.addr().to_string(), "&proxy=2", "").await;
    check_proxy_header(users, &target, proxy_v2).await;
    shutdown(&[&client, &server]).await;
}

#[tokio::test]
async fn proxy_v2_header_single_end() {
    let target = Recorder::start().await;
    let client = start(&format!(
        "client://127.0.0.1:0/{}?mode=1&proxy=2",
        target.addr()
    ))
    .await;
    wait_ready(&client).await;
    check_proxy_header(client.local_addrs().tunnel.unwrap(), &target, proxy_v2).await;
    shutdown(&[&client]).await;
}

/// Send `first` as a user and expect to be closed at once with nothing reaching the target.
async fn expect_blocked(users: SocketAddr, first: &[u8], target: &Recorder, what: &str) {
    let mut user = TcpStream::connect(users).await.unwrap();
    user.write_all(first).await.unwrap();
    let closed = read_until_closed(&mut user, AT_ONCE)
        .await
        .unwrap_or_else(|| panic!("{what}: not closed at once"));
    assert!(closed.bytes.is_empty(), "{what}: {:?}", closed.bytes);
    assert_eq!(target.accepted(), 0, "{what} reached the target");
}

#[tokio::test]
async fn block_http_and_socks_but_let_other_traffic_through() {
    let target = Recorder::start().await;
    let (server, client, users) = reverse(&target.addr().to_string(), "&block=12", "").await;
    expect_blocked(users, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", &target, "http").await;
    expect_blocked(users, b"POST /x HTTP/1.1\r\n\r\n", &target, "http post").await;
    expect_blocked(users, &[0x05, 0x01, 0x00], &target, "socks5 hello").await;
    assert_eq!(server.stats().refused, 3);
    // Not blocked: a line protocol, and TLS (digit 3 not set).
    assert_eq!(roundtrip(users, b"HELO example\r\n").await, b"ok");
    assert_eq!(
        roundtrip(users, &[0x16, 0x03, 0x01, 0x00, 0x01, 0x01]).await,
        b"ok"
    );
    assert_eq!(target.accepted(), 2);
    shutdown(&[&client, &server]).await;
}

#[tokio::test]
async fn block_tls_client_hello_forward_flow() {
    let target = Recorder::start().await;
    let (server, client, users) = forward(&target.addr().to_string(), "", "&block=3").await;
    // A real TLS client: its ClientHello is refused and the handshake fails.
    let connector = tokio_rustls::TlsConnector::from(certs::any_cert_client_config());
    let tcp = TcpStream::connect(users).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let res = tokio::time::timeout(AT_ONCE, connector.connect(name, tcp))
        .await
        .expect("the tls handshake ends at once");
    assert!(res.is_err(), "the tls handshake went through");
    assert_eq!(target.accepted(), 0);
    assert_eq!(client.stats().refused, 1);
    assert_eq!(roundtrip(users, b"not tls").await, b"ok");
    shutdown(&[&client, &server]).await;
}

#[tokio::test]
async fn block_all_still_carries_a_server_speaks_first_protocol() {
    const BANNER: &[u8] = b"SSH-2.0-nodepass_test\r\n";
    let greeter = servers::greeter(BANNER).await;
    let (server, client, users) = reverse(&greeter.addr().to_string(), "&block=123", "").await;
    let mut user = TcpStream::connect(users).await.unwrap();
    // The user says nothing until greeted.
    let mut banner = vec![0u8; BANNER.len()];
    let started = Instant::now();
    tokio::time::timeout(IO_TIMEOUT, user.read_exact(&mut banner))
        .await
        .expect("the banner arrives")
        .unwrap();
    eprintln!(
        "block=123: banner after {:.0} ms",
        started.elapsed().as_secs_f64() * 1000.0
    );
    assert_eq!(banner, BANNER);
    echo_once(&mut user, b"SSH-2.0-client\r\n").await;
    assert_eq!(server.stats().refused, 0);
    drop(user);
    shutdown(&[&client, &server]).await;
}

#[tokio::test]
async fn failover_to_the_next_target_reverse_flow() {
    let echo = servers::echo().await;
    let targets = format!("127.0.0.1:{},{}", closed_port(), echo.addr());
    let (server, client, users) = reverse(&targets, "", "").await;
    for i in 0..4u8 {
        let msg = [b'f', b'0' + i];
        assert_eq!(roundtrip(users, &msg).await, msg);
    }
    assert_eq!(echo.accepted(), 4);
    shutdown(&[&client, &server]).await;
}

#[tokio::test]
async fn failover_to_the_next_target_forward_flow() {
    let echo = servers::echo().await;
    let targets = format!("127.0.0.1:{},{}", closed_port(), echo.addr());
    let (server, client, users) = forward(&targets, "", "").await;
    for i in 0..4u8 {
        let msg = [b'g', b'0' + i];
        assert_eq!(roundtrip(users, &msg).await, msg);
    }
    assert_eq!(echo.accepted(), 4);
    shutdown(&[&client, &server]).await;
}

#[tokio::test]
async fn dial_sets_the_source_address_of_target_connections() {
    let target = Recorder::start().await;
    let (server, client, users) = reverse(&target.addr().to_string(), "", "&dial=127.0.0.2").await;
    assert_eq!(roundtrip(users, b"from where?").await, b"ok");
    let seen = target.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].peer.ip().to_string(), "127.0.0.2");
    shutdown(&[&client, &server]).await;
}

#[tokio::test]
async fn dial_falls_back_to_automatic_with_a_warning() {
    let (logs, _guard) = Logs::capture();
    let target = Recorder::start().await;
    // An IPv6 source cannot dial an IPv4 target: the dialer must fall back (loopback only).
    let (server, client, users) = forward(&target.addr().to_string(), "&dial=::1", "").await;
    assert_eq!(roundtrip(users, b"still delivered").await, b"ok");
    assert_eq!(target.seen()[0].peer.ip().to_string(), "127.0.0.1");
    assert!(
        !logs
            .lines_with(&["WARN", "cannot bind dial source address"])
            .is_empty(),
        "{}",
        logs.text()
    );
    shutdown(&[&client, &server]).await;
}
