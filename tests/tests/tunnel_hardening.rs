//! Issue 11, end to end: the SPAKE2 handshake gives no offline test of a key (recorded at tls 0,
//! played as a fake client at tls 0 and 1, played as a fake server), a stranger on another
//! loopback address (`127.0.0.2`) can neither starve the real client's pool nor brute-force the
//! key at speed nor flood the log, and a reset by a target reaches the user as a reset.
//!
//! These tests capture logs per thread (every one of them, see the note in each), so they run
//! on the default current-thread runtime.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use nodepass_core::TunnelHandle;
use nodepass_core::protocol::auth::{EXPORTER_LABEL, Pake, Transcript};
use nodepass_core::protocol::{
    self, ConnKind, Message, NONCE_LEN, PROTOCOL_VERSION, PakeMsg, RefuseCode,
};
use nodepass_core::tunnel::{
    BACKOFF_AFTER, LOG_INTERVAL, LOG_PER_SOURCE, MAX_PENDING_PER_SOURCE, TunnelState,
};
use nodepass_tests::IO_TIMEOUT;
use nodepass_tests::certs;
use nodepass_tests::logs::Logs;
use nodepass_tests::servers::{self, Server, Tap};
use nodepass_tests::tunnel::{eventually, roundtrip, shutdown, start, wait_ready, wait_state};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const KEY: &str = "a-long-and-varied-test-key-1";
const ATTACKER: &str = "127.0.0.2";

/// A TCP connection from the attacker's address.
async fn connect_from(src: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = TcpSocket::new_v4()?;
    sock.bind(format!("{src}:0").parse().unwrap())?;
    tokio::time::timeout(IO_TIMEOUT, sock.connect(to))
        .await
        .map_err(|_| std::io::Error::other("connect timed out"))?
}

async fn send<S: AsyncWrite + Unpin>(s: &mut S, msg: &Message) -> std::io::Result<()> {
    let mut out = BytesMut::new();
    protocol::encode(msg, &mut out);
    s.write_all(&out).await
}

/// The next frame, or `None` at EOF, on an error or after [`IO_TIMEOUT`].
async fn recv<S: AsyncRead + Unpin>(s: &mut S, buf: &mut BytesMut) -> Option<Message> {
    loop {
        if let Ok(Some(m)) = protocol::decode(buf) {
            return Some(m);
        }
        let mut chunk = [0u8; 2048];
        match tokio::time::timeout(IO_TIMEOUT, s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return None,
        }
    }
}

fn control_hello(nonce: [u8; NONCE_LEN], pake: PakeMsg) -> Message {
    Message::Hello {
        version: PROTOCOL_VERSION,
        kind: ConnKind::Control,
        nonce,
        session: [0; 16],
        pake: Some(pake),
    }
}

/// What an offline attacker can check for `candidate` with a recorded control handshake: a
/// fresh SPAKE2 state of either role finished against the recorded peer message, tested
/// against the recorded proofs. (The ephemeral secrets behind the recorded messages are gone.)
fn offline_consistent(
    candidate: &str,
    t: &Transcript,
    proof_s: &[u8; 32],
    proof_c: Option<&[u8; 32]>,
) -> bool {
    let (mc, ms) = t.pake.expect("a control transcript");
    let (a, _) = Pake::client(candidate);
    let as_client = a.finish(&ms, t).is_ok_and(|c| c.verify_server(proof_s));
    let (b, _) = Pake::server(candidate);
    let as_server = proof_c.is_some_and(|p| b.finish(&mc, t).is_ok_and(|c| c.verify_client(p)));
    as_client || as_server
}

#[tokio::test]
async fn a_recorded_tls0_handshake_gives_no_offline_test() {
    // Every test thread logs somewhere: a callsite first hit on a thread without a
    // subscriber could otherwise be cached as disabled for the capturing test too.
    let (_logs, _log_guard) = Logs::capture();
    let echo = servers::echo().await;
    let server = start(&format!("server://{KEY}@127.0.0.1:0/127.0.0.1:0?mode=1")).await;
    let tap = Tap::start(server.local_addrs().tunnel.unwrap()).await;
    let client = start(&format!(
        "client://{KEY}@{}/{}?mode=2&min=1",
        tap.addr(),
        echo.addr()
    ))
    .await;
    wait_ready(&client).await;
    let conn = tap.conns()[0].clone();
    let (mut up, mut down) = (BytesMut::from(&conn.up[..]), BytesMut::from(&conn.down[..]));
    let hello = protocol::decode(&mut up).unwrap().unwrap();
    let proof = protocol::decode(&mut up).unwrap().unwrap();
    let challenge = protocol::decode(&mut down).unwrap().unwrap();
    let (
        Message::Hello {
            nonce: nc,
            pake: Some(mc),
            ..
        },
        Message::Challenge {
            nonce: ns,
            pake: Some(ms),
            proof: proof_s,
            ..
        },
        Message::Proof { proof: proof_c },
    ) = (hello, challenge, proof)
    else {
        panic!("not a v2 control handshake on the wire");
    };
    let t = Transcript {
        kind: ConnKind::Control,
        client_nonce: nc,
        server_nonce: ns,
        session: [0; 16],
        binding: [0; 32],
        pake: Some((mc, ms)),
    };
    // The true key and a wrong one are equally (in)consistent with what was recorded.
    let right = offline_consistent(KEY, &t, &proof_s, Some(&proof_c));
    let wrong = offline_consistent("a-long-and-varied-test-key-2", &t, &proof_s, Some(&proof_c));
    assert_eq!(right, wrong);
    assert!(!right);
    shutdown(&[&client, &server]).await;
}

/// Play the client against a real server with `guess`: the one online guess. Returns whether
/// the live exchange confirmed the guess, and whether the true key and a wrong one are
/// consistent with the recorded answer offline.
async fn fake_client(tunnel: SocketAddr, tls: bool, guess: &str) -> (bool, bool, bool) {
    let tcp = connect_from(ATTACKER, tunnel).await.unwrap();
    let (state, mc) = Pake::client(guess);
    let nc = [5u8; NONCE_LEN];
    let mut buf = BytesMut::new();
    let (challenge, binding) = if tls {
        let connector = tokio_rustls::TlsConnector::from(certs::any_cert_client_config());
        let name = rustls_pki_types::ServerName::try_from("nodepass").unwrap();
        let mut s = connector.connect(name, tcp).await.unwrap();
        let binding = s
            .get_ref()
            .1
            .export_keying_material([0u8; 32], EXPORTER_LABEL, None)
            .unwrap();
        send(&mut s, &control_hello(nc, mc)).await.unwrap();
        (recv(&mut s, &mut buf).await, binding)
    } else {
        let mut s = tcp;
        send(&mut s, &control_hello(nc, mc)).await.unwrap();
        (recv(&mut s, &mut buf).await, [0u8; 32])
    };
    let Some(Message::Challenge {
        nonce: ns,
        pake: Some(ms),
        proof: proof_s,
        ..
    }) = challenge
    else {
        panic!("no challenge: {challenge:?}");
    };
    let t = Transcript {
        kind: ConnKind::Control,
        client_nonce: nc,
        server_nonce: ns,
        session: [0; 16],
        binding,
        pake: Some((mc, ms)),
    };
    let live = state.finish(&ms, &t).unwrap().verify_server(&proof_s);
    let right = offline_consistent(KEY, &t, &proof_s, None);
    let wrong = offline_consistent("a-long-and-varied-test-key-2", &t, &proof_s, None);
    (live, right, wrong)
}

#[tokio::test]
async fn a_fake_client_gets_one_online_guess_and_no_offline_test() {
    // Every test thread logs somewhere: a callsite first hit on a thread without a
    // subscriber could otherwise be cached as disabled for the capturing test too.
    let (_logs, _log_guard) = Logs::capture();
    for tls in [false, true] {
        let url = format!(
            "server://{KEY}@127.0.0.1:0/127.0.0.1:0?mode=1&tls={}",
            u8::from(tls)
        );
        let server = start(&url).await;
        let tunnel = server.local_addrs().tunnel.unwrap();
        // A wrong guess: the server's answer does not confirm it, and offline neither the true
        // key nor another wrong key can be told apart.
        let (live, right, wrong) = fake_client(tunnel, tls, "not-the-key-at-all").await;
        assert!(!live, "tls={tls}");
        assert_eq!(right, wrong, "tls={tls}: the transcript ranks candidates");
        assert!(!right, "tls={tls}");
        // The right guess is confirmed online: the check above is not vacuous.
        let (live, _, _) = fake_client(tunnel, tls, KEY).await;
        assert!(
            live,
            "tls={tls}: a correct guess is confirmed by the live exchange"
        );
        shutdown(&[&server]).await;
    }
}

#[tokio::test]
async fn a_fake_server_learns_nothing_keyed() {
    // Every test thread logs somewhere: a callsite first hit on a thread without a
    // subscriber could otherwise be cached as disabled for the capturing test too.
    let (_logs, _log_guard) = Logs::capture();
    // Answers with a well-formed challenge made with a guessed key, then records the rest.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let fake = Server::spawn(move |mut s, _| {
        let tx = tx.clone();
        async move {
            let mut buf = BytesMut::new();
            let Some(Message::Hello {
                nonce,
                pake: Some(mc),
                ..
            }) = recv(&mut s, &mut buf).await
            else {
                return;
            };
            let (state, ms) = Pake::server("a guessed key");
            let t = Transcript {
                kind: ConnKind::Control,
                client_nonce: nonce,
                server_nonce: [1; NONCE_LEN],
                session: [0; 16],
                binding: [0; 32],
                pake: Some((mc, ms)),
            };
            let proof = state.finish(&mc, &t).unwrap().server_proof();
            let challenge = Message::Challenge {
                version: PROTOCOL_VERSION,
                nonce: [1; NONCE_LEN],
                pake: Some(ms),
                proof,
            };
            if send(&mut s, &challenge).await.is_err() {
                return;
            }
            let mut after = Vec::new();
            while let Some(m) = recv(&mut s, &mut buf).await {
                after.push(m);
            }
            let _ = tx.send(after);
        }
    })
    .await;
    let client = start(&format!(
        "client://{KEY}@{}/127.0.0.1:9?mode=2",
        fake.addr()
    ))
    .await;
    let state = wait_state(&client, IO_TIMEOUT, "client refuses the fake", |s| {
        matches!(s, TunnelState::Reconnecting { .. })
    })
    .await;
    assert!(
        format!("{state:?}").contains("could not prove"),
        "{state:?}"
    );
    let after = tokio::time::timeout(IO_TIMEOUT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    // The client's only message after the challenge is a refusal: no proof, nothing keyed.
    assert!(
        matches!(
            &after[..],
            [Message::Refuse {
                code: RefuseCode::BadKey,
                ..
            }]
        ),
        "{after:?}"
    );
    shutdown(&[&client]).await;
}

/// A reverse-flow server and its client (from 127.0.0.1) in front of an echo server.
async fn live(min: u32) -> (TunnelHandle, TunnelHandle, Server) {
    let echo = servers::echo().await;
    let server = start(&format!("server://{KEY}@127.0.0.1:0/127.0.0.1:0?mode=1")).await;
    let tunnel = server.local_addrs().tunnel.unwrap();
    let client = start(&format!(
        "client://{KEY}@{tunnel}/{}?mode=2&min={min}",
        echo.addr()
    ))
    .await;
    wait_ready(&client).await;
    (server, client, echo)
}

async fn pool_full(client: &TunnelHandle, min: usize) {
    eventually(IO_TIMEOUT, "the client's pool is full", || {
        let idle = client.stats().pool_idle as usize;
        async move { (idle >= min).then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn idle_and_churning_strangers_do_not_starve_the_real_client() {
    // Every test thread logs somewhere: a callsite first hit on a thread without a
    // subscriber could otherwise be cached as disabled for the capturing test too.
    let (_logs, _log_guard) = Logs::capture();
    let (server, client, _echo) = live(8).await;
    let tunnel = server.local_addrs().tunnel.unwrap();
    let users = server.local_addrs().users.unwrap();
    pool_full(&client, 8).await;
    // 600 idle connections from another address: only its share of slots is held.
    let mut idle = Vec::new();
    for _ in 0..600 {
        if let Ok(s) = connect_from(ATTACKER, tunnel).await {
            idle.push(s);
        }
    }
    assert!(
        idle.len() >= 500,
        "only {} attacker connections",
        idle.len()
    );
    // Plus a churn of 512 connect-and-close.
    for _ in 0..512 {
        drop(connect_from(ATTACKER, tunnel).await);
    }
    // Users are served meanwhile; each one uses up a pool connection, so the client must
    // complete new pool handshakes while the stranger's connections are open.
    for i in 0..30u32 {
        let msg = format!("user {i}");
        assert_eq!(roundtrip(users, msg.as_bytes()).await, msg.as_bytes());
    }
    pool_full(&client, 8).await;
    assert_eq!(*client.state().borrow(), TunnelState::Ready);
    // At most MAX_PENDING_PER_SOURCE of the idle ones were ever let into a handshake; the
    // rest were closed at once.
    let mut closed = 0;
    for s in &mut idle {
        let mut b = [0u8; 1];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(20), s.read(&mut b)).await
        {
            closed += 1;
        }
    }
    assert!(
        closed >= idle.len() - MAX_PENDING_PER_SOURCE,
        "{closed} of {} closed",
        idle.len()
    );
    drop(idle);
    shutdown(&[&client, &server]).await;
}

#[tokio::test]
async fn wrong_keys_from_one_source_are_slowed_and_logged_in_aggregate() {
    let (logs, _log_guard) = Logs::capture();
    let (server, client, _echo) = live(2).await;
    let tunnel = server.local_addrs().tunnel.unwrap();
    let users = server.local_addrs().users.unwrap();
    let attempts = 200;
    let started = std::time::Instant::now();
    let (mut answered, mut closed_at_once) = (0u32, 0u32);
    let mut next = Pake::client("guess");
    for _ in 0..attempts {
        let Ok(mut s) = connect_from(ATTACKER, tunnel).await else {
            closed_at_once += 1;
            continue;
        };
        // A fresh SPAKE2 state only when the last one was used (it is slow in debug builds).
        let mc = next.1;
        let mut buf = BytesMut::new();
        if send(&mut s, &control_hello([3; NONCE_LEN], mc))
            .await
            .is_err()
        {
            closed_at_once += 1;
            continue;
        }
        match recv(&mut s, &mut buf).await {
            Some(Message::Challenge {
                nonce,
                pake: Some(ms),
                ..
            }) => {
                answered += 1;
                let (state, _) = std::mem::replace(&mut next, Pake::client("guess"));
                let t = Transcript {
                    kind: ConnKind::Control,
                    client_nonce: [3; NONCE_LEN],
                    server_nonce: nonce,
                    session: [0; 16],
                    binding: [0; 32],
                    pake: Some((mc, ms)),
                };
                let proof = state.finish(&ms, &t).unwrap().client_proof();
                let _ = send(&mut s, &Message::Proof { proof }).await;
                let _ = recv(&mut s, &mut buf).await;
            }
            _ => closed_at_once += 1,
        }
    }
    let elapsed = started.elapsed();
    eprintln!("{answered} attempts answered, {closed_at_once} closed at once in {elapsed:?}");
    // After BACKOFF_AFTER refusals the source backs off for 1 s, then 2 s, 4 s, ...: within
    // `elapsed` at most one more attempt per expired back-off gets through.
    let expiries = (elapsed.as_secs() as u32 + 1).ilog2() + 2;
    assert!(answered >= BACKOFF_AFTER, "{answered}");
    assert!(
        answered <= BACKOFF_AFTER + expiries,
        "{answered} wrong-key attempts answered in {elapsed:?}"
    );
    // The real client, from another address, is not slowed.
    assert_eq!(roundtrip(users, b"still here").await, b"still here");
    // The summary comes at the end of the log interval.
    let deadline = std::time::Instant::now() + LOG_INTERVAL + IO_TIMEOUT;
    while logs
        .lines_with(&["refused since the last report", ATTACKER])
        .is_empty()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no aggregated line: {:?}",
            logs.lines_with(&["guard"])
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown(&[&client, &server]).await;
    // Lines about the attacker per log interval: a few individual ones, then one line with
    // the count of the rest.
    let intervals = (started.elapsed().as_secs() / LOG_INTERVAL.as_secs()) as u32 + 1;
    let single = logs.lines_with(&["tunnel connection refused", ATTACKER]);
    let summary = logs.lines_with(&["refused since the last report", ATTACKER]);
    assert!(
        single.len() as u32 <= LOG_PER_SOURCE * intervals,
        "{}",
        logs.text()
    );
    assert!(
        !summary.is_empty() && summary.len() as u32 <= intervals,
        "{}",
        logs.text()
    );
    let summed: u32 = summary
        .iter()
        .map(|l| {
            let n = l.split("count=").nth(1).expect("a count");
            n.split_whitespace().next().unwrap().parse::<u32>().unwrap()
        })
        .sum();
    assert_eq!(
        summed + single.len() as u32,
        attempts,
        "every refusal is counted once"
    );
}

/// A target that answers `hello` and then resets the connection.
async fn resetting_target() -> Server {
    Server::spawn(|mut s, _| async move {
        let mut b = [0u8; 5];
        if s.read_exact(&mut b).await.is_ok() {
            let _ = s.write_all(b"hello").await;
            let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
        }
        drop(s);
    })
    .await
}

/// Connect to `users`, exchange a greeting, and read to the end: true when the end is a reset.
async fn user_sees_reset(users: SocketAddr) -> bool {
    let mut s = TcpStream::connect(users).await.unwrap();
    s.write_all(b"hi!!!").await.unwrap();
    let mut buf = [0u8; 64];
    for _ in 0..100 {
        match tokio::time::timeout(IO_TIMEOUT, s.read(&mut buf)).await {
            Ok(Ok(0)) => return false,
            Ok(Ok(_)) => continue,
            Ok(Err(e)) => return e.kind() == std::io::ErrorKind::ConnectionReset,
            Err(_) => panic!("no end within {IO_TIMEOUT:?}"),
        }
    }
    false
}

#[tokio::test]
async fn a_target_reset_reaches_the_user_as_a_reset() {
    // Every test thread logs somewhere: a callsite first hit on a thread without a
    // subscriber could otherwise be cached as disabled for the capturing test too.
    let (_logs, _log_guard) = Logs::capture();
    let target = resetting_target().await;
    // Reverse flow, plain: the client dials the target.
    let server = start(&format!("server://{KEY}@127.0.0.1:0/127.0.0.1:0?mode=1")).await;
    let tunnel = server.local_addrs().tunnel.unwrap();
    let client = start(&format!(
        "client://{KEY}@{tunnel}/{}?mode=2&min=2",
        target.addr()
    ))
    .await;
    wait_ready(&client).await;
    assert!(
        user_sees_reset(server.local_addrs().users.unwrap()).await,
        "reverse flow, tls=0"
    );
    shutdown(&[&client, &server]).await;

    // Forward flow inside TLS: the server dials the target.
    let server = start(&format!(
        "server://{KEY}@127.0.0.1:0/{}?mode=2&tls=1",
        target.addr()
    ))
    .await;
    let tunnel = server.local_addrs().tunnel.unwrap();
    let client = start(&format!("client://{KEY}@{tunnel}/127.0.0.1:0?mode=2&min=2")).await;
    wait_ready(&client).await;
    eventually(IO_TIMEOUT, "forward listener", || {
        let a = client.local_addrs().users;
        async move { a }
    })
    .await;
    assert!(
        user_sees_reset(client.local_addrs().users.unwrap()).await,
        "forward flow, tls=1"
    );
    // The user's bytes were counted as usual.
    let s = client.stats();
    assert!(s.tcp_rx >= 5, "{s:?}");
    shutdown(&[&client, &server]).await;
}
