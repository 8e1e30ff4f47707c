//! UDP through the tunnel: datagram-exact in every data-flow mode, per-user isolation, idle
//! expiry, UDP-only and TCP-only tunnels. Loopback only, port 0, bounded loops.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use nodepass_core::tunnel::{Mode, TunnelState};
use nodepass_core::{Tunnel, TunnelConfig, TunnelHandle, TunnelOptions};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

/// A UDP echo server on 127.0.0.1:0.
async fn udp_echo() -> SocketAddr {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = s.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, peer)) = s.recv_from(&mut buf).await {
            let _ = s.send_to(&buf[..n], peer).await;
        }
    });
    addr
}

async fn start(url: &str, stop: &CancellationToken) -> TunnelHandle {
    let cfg: TunnelConfig = url.parse().unwrap();
    let h = Tunnel::bind(cfg).await.unwrap().spawn(stop.child_token());
    h.wait_for(Duration::from_secs(10), |s| *s == TunnelState::Ready)
        .await
        .expect("tunnel ready");
    h
}

/// FNV-1a 64 of the payload: a checksum strong enough to catch corruption, merging, splitting.
fn fnv(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in data {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// Datagram layout: seq u32 | len u32 | fnv u64 of the rest | filler.
fn make(seq: u32, len: usize) -> Vec<u8> {
    let len = len.max(16);
    let mut d = vec![0u8; len];
    d[0..4].copy_from_slice(&seq.to_be_bytes());
    d[4..8].copy_from_slice(&(len as u32).to_be_bytes());
    let mut x = seq.wrapping_mul(2654435761) | 1;
    for b in d[16..].iter_mut() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    let sum = fnv(&d[16..]);
    d[8..16].copy_from_slice(&sum.to_be_bytes());
    d
}

/// Check a datagram; returns its sequence number.
fn check(d: &[u8]) -> Result<u32, String> {
    if d.len() < 16 {
        return Err(format!("short datagram of {} bytes", d.len()));
    }
    let seq = u32::from_be_bytes(d[0..4].try_into().unwrap());
    let len = u32::from_be_bytes(d[4..8].try_into().unwrap()) as usize;
    if len != d.len() {
        return Err(format!(
            "seq {seq}: length {} != announced {len} (merged or split)",
            d.len()
        ));
    }
    let sum = u64::from_be_bytes(d[8..16].try_into().unwrap());
    if fnv(&d[16..]) != sum {
        return Err(format!("seq {seq}: corrupted"));
    }
    Ok(seq)
}

/// Check one echoed datagram: count its sequence number, or note what is wrong with it.
fn record(d: &[u8], seen: &mut HashSet<u32>, bad: &mut Vec<String>) {
    match check(d) {
        Ok(s) => {
            if !seen.insert(s) {
                bad.push(format!("seq {s} duplicated"));
            }
        }
        Err(e) => bad.push(e),
    }
}

struct Outcome {
    sent: usize,
    received: usize,
    bad: Vec<String>,
}

/// Send `count` datagrams (sizes 16..=1400 plus some 8 KiB and `max`-sized) to `to`, with at
/// most `window` in flight, and check every echo.
async fn blast(to: SocketAddr, count: u32, window: usize, max: usize) -> Outcome {
    let sock = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    sock.connect(to).await.unwrap();
    let mut rng: u64 = 0x9e3779b97f4a7c15;
    let mut seen = HashSet::new();
    let mut bad = Vec::new();
    let mut buf = vec![0u8; 65536];
    let mut in_flight = 0usize;
    let mut sent = 0usize;
    for seq in 0..count {
        rng ^= rng << 7;
        rng ^= rng >> 9;
        let len = match seq % 1000 {
            0 => max,
            1 | 2 => 8192,
            _ => 16 + (rng % 1385) as usize,
        };
        sock.send(&make(seq, len)).await.unwrap();
        sent += 1;
        in_flight += 1;
        // Drain whatever came back; wait (bounded) when the window is full.
        while in_flight > 0 {
            let wait = if in_flight >= window {
                Duration::from_millis(500)
            } else {
                Duration::ZERO
            };
            let r = if wait.is_zero() {
                sock.try_recv(&mut buf).ok()
            } else {
                tokio::time::timeout(wait, sock.recv(&mut buf))
                    .await
                    .ok()
                    .and_then(|r| r.ok())
            };
            match r {
                Some(n) => {
                    in_flight -= 1;
                    record(&buf[..n], &mut seen, &mut bad);
                }
                None if in_flight >= window => {
                    // Window stalled: count the rest as lost and move on.
                    in_flight = 0;
                }
                None => break,
            }
        }
    }
    // Final drain, bounded.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while in_flight > 0 {
        match tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
            Ok(Ok(n)) => {
                in_flight -= 1;
                record(&buf[..n], &mut seen, &mut bad);
            }
            _ => break,
        }
    }
    Outcome {
        sent,
        received: seen.len(),
        bad,
    }
}

async fn integrity(server_q: &str, client_mode_reverse: bool) {
    let stop = CancellationToken::new();
    let echo = udp_echo().await;
    let (users, server, client);
    if client_mode_reverse {
        server = start(
            &format!("server://k@127.0.0.1:0/127.0.0.1:0?mode=1&{server_q}"),
            &stop,
        )
        .await;
        let t = server.local_addrs().tunnel.unwrap();
        client = start(&format!("client://k@{t}/{echo}?mode=2"), &stop).await;
        users = server.local_addrs().users_udp.unwrap();
        assert_eq!(client.mode(), Mode::Reverse);
    } else {
        server = start(
            &format!("server://k@127.0.0.1:0/{echo}?mode=2&{server_q}"),
            &stop,
        )
        .await;
        let t = server.local_addrs().tunnel.unwrap();
        client = start(&format!("client://k@{t}/127.0.0.1:0?mode=2"), &stop).await;
        assert_eq!(client.mode(), Mode::Forward);
        users = client.local_addrs().users_udp.unwrap();
    }
    let out = blast(users, 20_000, 64, 65507).await;
    assert!(
        out.bad.is_empty(),
        "{:?}",
        &out.bad[..out.bad.len().min(10)]
    );
    assert!(
        out.received * 100 >= out.sent * 90,
        "delivered {} of {}",
        out.received,
        out.sent
    );
    eprintln!(
        "{server_q} reverse={client_mode_reverse}: {}/{} delivered",
        out.received, out.sent
    );
    let s = server.stats();
    assert!(s.udp_rx > 0 && s.udp_tx > 0, "{s:?}");
    stop.cancel();
    let _ = server.wait().await;
    let _ = client.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reverse_flow_plain_is_datagram_exact() {
    integrity("tls=0", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reverse_flow_tls_is_datagram_exact() {
    integrity("tls=1", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_flow_plain_is_datagram_exact() {
    integrity("tls=0", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_flow_tls_is_datagram_exact() {
    integrity("tls=1", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_end_is_datagram_exact() {
    let stop = CancellationToken::new();
    let echo = udp_echo().await;
    let client = start(&format!("client://127.0.0.1:0/{echo}?mode=1"), &stop).await;
    let to = client.local_addrs().users_udp.unwrap();
    let out = blast(to, 20_000, 64, 65507).await;
    assert!(
        out.bad.is_empty(),
        "{:?}",
        &out.bad[..out.bad.len().min(10)]
    );
    assert!(
        out.received * 100 >= out.sent * 90,
        "{} of {}",
        out.received,
        out.sent
    );
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_users_each_get_only_their_own_replies() {
    let stop = CancellationToken::new();
    let echo = udp_echo().await;
    let server = start("server://k@127.0.0.1:0/127.0.0.1:0?mode=1", &stop).await;
    let t = server.local_addrs().tunnel.unwrap();
    let _client = start(&format!("client://k@{t}/{echo}?mode=2&min=8"), &stop).await;
    let to = server.local_addrs().users_udp.unwrap();
    let mut tasks = Vec::new();
    for user in 0..50u32 {
        tasks.push(tokio::spawn(async move {
            let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            s.connect(to).await.unwrap();
            let mut buf = vec![0u8; 2048];
            let mut got = 0;
            for i in 0..20u32 {
                let msg = format!("user {user} message {i}");
                s.send(msg.as_bytes()).await.unwrap();
                if let Ok(Ok(n)) =
                    tokio::time::timeout(Duration::from_secs(5), s.recv(&mut buf)).await
                {
                    assert_eq!(&buf[..n], msg.as_bytes(), "user {user} got a foreign reply");
                    got += 1;
                }
            }
            got
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    assert!(total >= 50 * 20 * 95 / 100, "only {total} replies");
    assert_eq!(server.stats().udp_total, 50);
    stop.cancel();
}

#[tokio::test]
async fn idle_sessions_expire_and_a_new_datagram_opens_a_new_one() {
    let stop = CancellationToken::new();
    let echo = udp_echo().await;
    let client = start(
        &format!("client://127.0.0.1:0/{echo}?mode=1&read=300ms"),
        &stop,
    )
    .await;
    let to = client.local_addrs().users_udp.unwrap();
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    s.connect(to).await.unwrap();
    let mut buf = [0u8; 64];
    s.send(b"one").await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), s.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"one");
    assert_eq!(client.stats().udp_active, 1);
    // Bounded wait for the idle expiry.
    let mut expired = false;
    for _ in 0..100 {
        if client.stats().udp_active == 0 {
            expired = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(expired, "session did not expire");
    s.send(b"two").await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), s.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"two");
    assert_eq!(client.stats().udp_total, 2);
    stop.cancel();
}

#[tokio::test]
async fn oversize_datagrams_are_dropped_and_counted_never_truncated() {
    let stop = CancellationToken::new();
    let echo = udp_echo().await;
    let cfg: TunnelConfig = format!("client://127.0.0.1:0/{echo}?mode=1")
        .parse()
        .unwrap();
    let mut options = TunnelOptions::default();
    for bad in [0, 65508] {
        options.udp_max_datagram = bad;
        let err = Tunnel::bind_with(cfg.clone(), options.clone())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("udp_max_datagram"), "{err}");
    }
    options.udp_max_datagram = 1000;
    let tunnel = Tunnel::bind_with(cfg, options).await.unwrap();
    let client = tunnel.spawn(stop.child_token());
    let to = client.local_addrs().users_udp.unwrap();
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    s.connect(to).await.unwrap();
    let mut buf = vec![0u8; 65536];
    // Over the limit: dropped, counted, nothing comes back.
    s.send(&make(1, 1200)).await.unwrap();
    // At the limit: carried whole.
    s.send(&make(2, 1000)).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), s.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((check(&buf[..n]).unwrap(), n), (2, 1000));
    assert_eq!(client.stats().udp_dropped, 1);
    // The real maximum passes with the default limit.
    let big = make(3, 65507);
    let stop2 = CancellationToken::new();
    let other = start(&format!("client://127.0.0.1:0/{echo}?mode=1"), &stop2).await;
    let s2 = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    s2.connect(other.local_addrs().users_udp.unwrap())
        .await
        .unwrap();
    s2.send(&big).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), s2.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((check(&buf[..n]).unwrap(), n), (3, 65507));
    stop.cancel();
    stop2.cancel();
}

#[tokio::test]
async fn udp_only_tunnel_never_binds_the_tcp_target_port() {
    let stop = CancellationToken::new();
    let echo = udp_echo().await;
    // Hold the TCP port ourselves: a UDP-only tunnel on the same port number must still start,
    // which it could not if it tried to bind TCP there.
    let held = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = held.local_addr().unwrap().port();
    let server = start(
        &format!("server://k@127.0.0.1:0/127.0.0.1:{port}?mode=1&notcp=1"),
        &stop,
    )
    .await;
    assert!(server.local_addrs().users.is_none());
    let udp = server.local_addrs().users_udp.unwrap();
    assert_eq!(udp.port(), port);
    let t = server.local_addrs().tunnel.unwrap();
    let _client = start(&format!("client://k@{t}/{echo}?mode=2&notcp=1"), &stop).await;
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    s.connect(udp).await.unwrap();
    s.send(b"udp only").await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), s.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"udp only");
    stop.cancel();
}

#[tokio::test]
async fn tcp_only_tunnel_has_no_udp_socket() {
    let stop = CancellationToken::new();
    let server = start("server://k@127.0.0.1:0/127.0.0.1:0?mode=1&noudp=1", &stop).await;
    assert!(server.local_addrs().users.is_some());
    assert!(server.local_addrs().users_udp.is_none());
    stop.cancel();
}
