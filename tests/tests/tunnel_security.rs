//! Who may use a tunnel: a wrong key, garbage, a stalled handshake, unauthenticated or replayed
//! pool and control connections, a man in the middle on `tls=1`, and untrusted or misnamed
//! certificates on `tls=2` are all refused, logged, and never receive user traffic.
//!
//! These tests capture logs per thread, so they run on the default current-thread runtime.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use nodepass_core::TunnelHandle;
use nodepass_core::protocol::auth::Pake;
use nodepass_core::protocol::{
    self, ConnKind, Message, NONCE_LEN, PROTOCOL_VERSION, RefuseCode, SessionId,
};
use nodepass_core::tunnel::TunnelState;
use nodepass_core::{ErrorKind, TunnelOptions};
use nodepass_tests::IO_TIMEOUT;
use nodepass_tests::certs::{self, Ca, CertFiles};
use nodepass_tests::logs::Logs;
use nodepass_tests::payload::random_bytes;
use nodepass_tests::servers::{self, Recorder, Server, Tap};
use nodepass_tests::tunnel::{
    eventually, read_until_closed, roundtrip, shutdown, start, wait_ready, wait_state,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const KEY: &str = "the-right-key";
/// How soon a peer that broke the protocol must be closed.
const PROMPT_CLOSE: Duration = Duration::from_secs(2);
/// Slack on top of the handshake timeout for a stalled peer to be closed.
const TIMEOUT_MARGIN: Duration = Duration::from_secs(3);

/// A raw tunnel connection speaking the wire protocol by hand.
struct Raw {
    s: TcpStream,
    buf: BytesMut,
}

impl Raw {
    async fn connect(addr: SocketAddr) -> Raw {
        Raw {
            s: TcpStream::connect(addr)
                .await
                .expect("connect to the tunnel port"),
            buf: BytesMut::new(),
        }
    }

    async fn send(&mut self, msg: &Message) {
        let mut out = BytesMut::new();
        protocol::encode(msg, &mut out);
        self.s.write_all(&out).await.expect("send a frame");
    }

    async fn send_bytes(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).await.expect("send bytes");
    }

    /// The next message, or `None` at EOF, on a reset or after [`IO_TIMEOUT`].
    async fn recv(&mut self) -> Option<Message> {
        loop {
            if let Some(m) = protocol::decode(&mut self.buf).expect("a valid frame from the server")
            {
                return Some(m);
            }
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout(IO_TIMEOUT, self.s.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => self.buf.extend_from_slice(&chunk[..n]),
                _ => return None,
            }
        }
    }

    /// Read to the end: the messages received before the server closed within `within`.
    async fn until_closed(&mut self, within: Duration) -> Vec<Message> {
        let closed = read_until_closed(&mut self.s, within)
            .await
            .unwrap_or_else(|| panic!("the server kept the connection open past {within:?}"));
        self.buf.extend_from_slice(&closed.bytes);
        let mut msgs = Vec::new();
        while let Ok(Some(m)) = protocol::decode(&mut self.buf) {
            msgs.push(m);
        }
        assert!(
            self.buf.is_empty(),
            "undecodable bytes from the server: {:?}",
            self.buf
        );
        msgs
    }
}

/// A hello as an attacker without the key sends it: a control hello carries a SPAKE2 message
/// made with a guessed key.
fn hello(kind: ConnKind, session: SessionId) -> Message {
    Message::Hello {
        version: PROTOCOL_VERSION,
        kind,
        nonce: [7; NONCE_LEN],
        session,
        pake: (kind == ConnKind::Control).then(|| Pake::client("a guess").1),
    }
}

fn is_refuse(m: &Message, want: RefuseCode) -> bool {
    matches!(m, Message::Refuse { code, .. } if *code == want)
}

fn assert_no_open(msgs: &[Message]) {
    assert!(
        !msgs.iter().any(|m| matches!(m, Message::Open { .. })),
        "user traffic reached an unauthenticated connection: {msgs:?}"
    );
}

/// A reverse-flow server with a legitimate client, so user traffic is flowing while the
/// attacks run: it must keep reaching the legitimate client's target only.
struct Live {
    server: TunnelHandle,
    client: TunnelHandle,
    echo: Server,
    tunnel: SocketAddr,
    users: SocketAddr,
}

async fn live(tap: bool) -> (Live, Option<Tap>) {
    let echo = servers::echo().await;
    let server = start(&format!("server://{KEY}@127.0.0.1:0/127.0.0.1:0?mode=1")).await;
    let tunnel = server.local_addrs().tunnel.unwrap();
    let tap = if tap {
        Some(Tap::start(tunnel).await)
    } else {
        None
    };
    let dial = tap.as_ref().map_or(tunnel, |t| t.addr());
    let client = start(&format!(
        "client://{KEY}@{dial}/{}?mode=2&min=2",
        echo.addr()
    ))
    .await;
    wait_ready(&client).await;
    let users = server.local_addrs().users.unwrap();
    assert_eq!(roundtrip(users, b"before").await, b"before");
    let l = Live {
        server,
        client,
        echo,
        tunnel,
        users,
    };
    (l, tap)
}

impl Live {
    /// User traffic still flows, through the legitimate client only.
    async fn still_serves_users(&self) {
        let before = self.echo.accepted();
        assert_eq!(roundtrip(self.users, b"after").await, b"after");
        assert_eq!(self.echo.accepted(), before + 1);
    }

    async fn stop(self) {
        shutdown(&[&self.client, &self.server]).await;
    }
}

#[tokio::test]
async fn wrong_key_is_refused_on_both_sides_and_no_user_traffic_leaks() {
    let (logs, _guard) = Logs::capture();
    let target = Recorder::start().await;
    let server = start(&format!("server://{KEY}@127.0.0.1:0/127.0.0.1:0?mode=1")).await;
    let tunnel = server.local_addrs().tunnel.unwrap();
    let client = start(&format!(
        "client://a-wrong-key@{tunnel}/{}?mode=2",
        target.addr()
    ))
    .await;
    let state = wait_state(&client, IO_TIMEOUT, "client refused", |s| {
        matches!(s, TunnelState::Reconnecting { .. })
    })
    .await;
    let TunnelState::Reconnecting { error } = state else {
        unreachable!()
    };
    assert!(
        error
            .message()
            .contains("could not prove it knows the tunnel key"),
        "client error: {error}"
    );
    assert_eq!(error.kind(), ErrorKind::AuthRefused, "{error}");
    eventually(IO_TIMEOUT, "the server logs the refusal", || {
        let found = !logs
            .lines_with(&[
                "tunnel connection refused",
                "the client has a different key",
            ])
            .is_empty();
        async move { found.then_some(()) }
    })
    .await;

    // A user of the server's target address gets nothing through and is closed once no
    // pool connection turned up.
    let mut user = TcpStream::connect(server.local_addrs().users.unwrap())
        .await
        .unwrap();
    user.write_all(b"user secret").await.unwrap();
    let closed = read_until_closed(
        &mut user,
        TunnelOptions::default().pool_wait + TIMEOUT_MARGIN,
    )
    .await
    .expect("the user is closed when no authenticated pool connection exists");
    assert!(closed.bytes.is_empty());
    assert_eq!(
        target.accepted(),
        0,
        "traffic reached the target through a wrong-key client"
    );
    assert!(server.stats().refused >= 1);
    assert!(matches!(
        *client.state().borrow(),
        TunnelState::Reconnecting { .. }
    ));
    shutdown(&[&client, &server]).await;
}

#[tokio::test]
async fn a_wrong_proof_is_refused_with_bad_key() {
    let (logs, _guard) = Logs::capture();
    let (l, _) = live(false).await;
    let mut raw = Raw::connect(l.tunnel).await;
    raw.send(&hello(ConnKind::Control, [0; 16])).await;
    let challenge = raw.recv().await.expect("a challenge");
    assert!(
        matches!(
            challenge,
            Message::Challenge {
                version: PROTOCOL_VERSION,
                ..
            }
        ),
        "{challenge:?}"
    );
    raw.send(&Message::Proof { proof: [0x5a; 32] }).await;
    let msgs = raw.until_closed(PROMPT_CLOSE).await;
    assert!(
        msgs.len() == 1 && is_refuse(&msgs[0], RefuseCode::BadKey),
        "{msgs:?}"
    );
    assert!(
        !logs
            .lines_with(&["tunnel connection refused", "wrong key"])
            .is_empty(),
        "{}",
        logs.text()
    );
    l.still_serves_users().await;
    l.stop().await;
}

#[tokio::test]
async fn garbage_on_the_tunnel_port_is_closed_at_once() {
    let (logs, _guard) = Logs::capture();
    let (l, _) = live(false).await;
    let mut bad_magic = vec![protocol::HELLO_TYPE, 0, 61];
    bad_magic.extend_from_slice(&[b'X'; 61]);
    let cases: [(&str, Vec<u8>); 4] = [
        (
            "http request",
            b"GET / HTTP/1.1\r\nHost: nodepass\r\n\r\n".to_vec(),
        ),
        ("random bytes", random_bytes(5, 3000)),
        ("bad magic", bad_magic),
        ("unknown frame type", vec![0x7f, 0, 1, 0]),
    ];
    for (name, bytes) in cases {
        let mut raw = Raw::connect(l.tunnel).await;
        raw.send_bytes(&bytes).await;
        let closed = read_until_closed(&mut raw.s, PROMPT_CLOSE).await;
        let closed = closed.unwrap_or_else(|| panic!("{name}: still open after {PROMPT_CLOSE:?}"));
        assert!(
            closed.bytes.is_empty(),
            "{name}: the server answered {:?}",
            closed.bytes
        );
    }
    let refusals = logs.lines_with(&["tunnel connection refused"]);
    assert!(refusals.len() >= 4, "{}", logs.text());
    assert!(
        !logs
            .lines_with(&["tunnel connection refused", "bad magic"])
            .is_empty()
    );
    l.still_serves_users().await;
    l.stop().await;
}

#[tokio::test]
async fn stalled_handshakes_are_closed_within_the_handshake_timeout() {
    let (logs, _guard) = Logs::capture();
    let (l, _) = live(false).await;
    // One peer connects and says nothing; another stops after the server's challenge.
    let mut silent = Raw::connect(l.tunnel).await;
    let mut stalled = Raw::connect(l.tunnel).await;
    stalled.send(&hello(ConnKind::Control, [0; 16])).await;
    assert!(matches!(
        stalled.recv().await,
        Some(Message::Challenge { .. })
    ));
    // A third sends half a hello.
    let mut half = Raw::connect(l.tunnel).await;
    let mut frame = BytesMut::new();
    protocol::encode(&hello(ConnKind::Control, [0; 16]), &mut frame);
    half.send_bytes(&frame[..frame.len() / 2]).await;

    let limit = TunnelOptions::default().handshake_timeout + TIMEOUT_MARGIN;
    let (a, b, c) = tokio::join!(
        read_until_closed(&mut silent.s, limit),
        read_until_closed(&mut stalled.s, limit),
        read_until_closed(&mut half.s, limit),
    );
    for (name, closed) in [("silent", a), ("after challenge", b), ("half hello", c)] {
        let closed = closed.unwrap_or_else(|| panic!("{name}: still open after {limit:?}"));
        eprintln!("{name}: closed after {:.1} s", closed.after.as_secs_f64());
        assert!(closed.bytes.is_empty(), "{name}: {:?}", closed.bytes);
    }
    assert!(
        logs.lines_with(&["tunnel handshake timed out"]).len() >= 3,
        "{}",
        logs.text()
    );
    // The legitimate session survived (its heartbeats kept it up meanwhile).
    assert_eq!(*l.client.state().borrow(), TunnelState::Ready);
    l.still_serves_users().await;
    l.stop().await;
}

#[tokio::test]
async fn unauthenticated_and_replayed_pool_connections_are_refused() {
    let (logs, _guard) = Logs::capture();
    // tls=0 and a tap: an eavesdropper learns the session id and every handshake byte.
    let (l, tap) = live(true).await;
    let tap = tap.unwrap();
    eventually(IO_TIMEOUT, "pool connections through the tap", || {
        let n = tap.conns().len();
        async move { (n >= 3).then_some(()) }
    })
    .await;
    let conns = tap.conns();

    // A made-up session: refused before any challenge.
    let mut made_up = Raw::connect(l.tunnel).await;
    made_up.send(&hello(ConnKind::Pool, [0xab; 16])).await;
    let msgs = made_up.until_closed(PROMPT_CLOSE).await;
    assert!(
        msgs.len() == 1 && is_refuse(&msgs[0], RefuseCode::StaleSession),
        "{msgs:?}"
    );
    assert!(
        !logs
            .lines_with(&["tunnel connection closed during handshake", "not current"])
            .is_empty()
    );

    // The real session id, read off the wire from the control connection's Welcome.
    let mut control_down = BytesMut::from(&conns[0].down[..]);
    let mut session = None;
    while let Ok(Some(m)) = protocol::decode(&mut control_down) {
        if let Message::Welcome { session: s, .. } = m {
            session = Some(s);
        }
    }
    let session = session.expect("the welcome crossed the tap in clear (tls=0)");
    let mut guessed = Raw::connect(l.tunnel).await;
    guessed.send(&hello(ConnKind::Pool, session)).await;
    assert!(matches!(
        guessed.recv().await,
        Some(Message::Challenge { .. })
    ));
    guessed.send(&Message::Proof { proof: [1; 32] }).await;
    let msgs = guessed.until_closed(PROMPT_CLOSE).await;
    assert!(
        msgs.len() == 1 && is_refuse(&msgs[0], RefuseCode::BadKey),
        "{msgs:?}"
    );
    assert_no_open(&msgs);

    // Replays of a recorded pool handshake and of the control handshake: the server's fresh
    // nonce makes the recorded proof worthless.
    for (name, recorded) in [("pool", &conns[1].up), ("control", &conns[0].up)] {
        let mut handshake = BytesMut::from(&recorded[..]);
        let mut frames = BytesMut::new();
        for _ in 0..2 {
            let m = protocol::decode(&mut handshake)
                .unwrap()
                .expect("recorded frame");
            protocol::encode(&m, &mut frames);
        }
        let mut replay = Raw::connect(l.tunnel).await;
        replay.send_bytes(&frames).await;
        let msgs = replay.until_closed(PROMPT_CLOSE).await;
        assert!(
            msgs.len() == 2
                && matches!(msgs[0], Message::Challenge { .. })
                && is_refuse(&msgs[1], RefuseCode::BadKey),
            "{name} replay: {msgs:?}"
        );
    }
    l.still_serves_users().await;
    // The legitimate client was never displaced by the replayed control handshake.
    assert_eq!(*l.client.state().borrow(), TunnelState::Ready);
    l.still_serves_users().await;
    l.stop().await;
}

#[tokio::test]
async fn version_mismatch_and_missing_tls_are_refused_with_a_reason() {
    let server = start(&format!(
        "server://{KEY}@127.0.0.1:0/127.0.0.1:0?mode=1&tls=1"
    ))
    .await;
    let tunnel = server.local_addrs().tunnel.unwrap();
    let mut plain = Raw::connect(tunnel).await;
    plain.send(&hello(ConnKind::Control, [0; 16])).await;
    let msgs = plain.until_closed(PROMPT_CLOSE).await;
    assert!(
        matches!(
            msgs[..],
            [Message::Refuse {
                code: RefuseCode::TlsRequired,
                arg: 1,
                ..
            }]
        ),
        "{msgs:?}"
    );
    shutdown(&[&server]).await;

    let server = start(&format!("server://{KEY}@127.0.0.1:0/127.0.0.1:0?mode=1")).await;
    let mut future = Raw::connect(server.local_addrs().tunnel.unwrap()).await;
    future
        .send(&Message::Hello {
            version: PROTOCOL_VERSION + 1,
            kind: ConnKind::Control,
            nonce: [3; NONCE_LEN],
            session: [0; 16],
            pake: None,
        })
        .await;
    let msgs = future.until_closed(PROMPT_CLOSE).await;
    assert!(
        matches!(&msgs[..], [Message::Refuse { code: RefuseCode::Version, arg, .. }] if *arg == PROTOCOL_VERSION),
        "{msgs:?}"
    );
    shutdown(&[&server]).await;
}

/// A TLS-terminating relay: presents its own certificate to the client and opens its own TLS
/// session to the server, relaying the bytes in between (plain connections are relayed as is).
async fn man_in_the_middle(server: SocketAddr) -> Server {
    let leaf = Ca::new("mitm").leaf(&certs::LEAF_NAMES);
    let acceptor = tokio_rustls::TlsAcceptor::from(certs::server_config(&leaf));
    let connector = tokio_rustls::TlsConnector::from(certs::any_cert_client_config());
    let (acceptor, connector) = (Arc::new(acceptor), Arc::new(connector));
    Server::spawn(move |client, _| {
        let (acceptor, connector) = (acceptor.clone(), connector.clone());
        async move {
            let mut first = [0u8; 1];
            if !matches!(client.peek(&mut first).await, Ok(1)) {
                return;
            }
            let Ok(upstream) = TcpStream::connect(server).await else {
                return;
            };
            if first[0] != 0x16 {
                let (mut c, mut u) = (client, upstream);
                let _ = tokio::io::copy_bidirectional(&mut c, &mut u).await;
                return;
            }
            let Ok(mut c) = acceptor.accept(client).await else {
                return;
            };
            let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
            let Ok(mut u) = connector.connect(name, upstream).await else {
                return;
            };
            let _ = tokio::io::copy_bidirectional(&mut c, &mut u).await;
        }
    })
    .await
}

#[tokio::test]
async fn a_man_in_the_middle_on_tls1_is_detected() {
    let (logs, _guard) = Logs::capture();
    let target = Recorder::start().await;
    let server = start(&format!(
        "server://{KEY}@127.0.0.1:0/127.0.0.1:0?mode=1&tls=1"
    ))
    .await;
    let mitm = man_in_the_middle(server.local_addrs().tunnel.unwrap()).await;
    let client = start(&format!(
        "client://{KEY}@{}/{}?mode=2",
        mitm.addr(),
        target.addr()
    ))
    .await;
    let state = wait_state(
        &client,
        IO_TIMEOUT,
        "client detects the relay",
        |s| matches!(s, TunnelState::Reconnecting { error } if error.message().contains("man in the middle")),
    )
    .await;
    eprintln!("client state: {state:?}");
    assert!(
        mitm.accepted() >= 2,
        "the client went through the relay (plain probe, then tls)"
    );
    eventually(IO_TIMEOUT, "the server logs the refused handshake", || {
        let found = !logs.lines_with(&["tunnel connection refused"]).is_empty();
        async move { found.then_some(()) }
    })
    .await;
    // No session, so a user of the server gets no pool connection, and the target nothing.
    let mut user = TcpStream::connect(server.local_addrs().users.unwrap())
        .await
        .unwrap();
    user.write_all(b"for the real client only").await.unwrap();
    assert!(
        read_until_closed(
            &mut user,
            TunnelOptions::default().pool_wait + TIMEOUT_MARGIN
        )
        .await
        .is_some()
    );
    assert_eq!(target.accepted(), 0);
    shutdown(&[&client, &server]).await;
}

#[tokio::test]
async fn tls2_clients_refuse_untrusted_or_misnamed_certificates() {
    let ca = Ca::new("trusted ca");
    let (files, _) = CertFiles::new(&ca);
    let other_ca = files.write_ca("other-ca.pem", &Ca::new("another ca"));
    let target = Recorder::start().await;
    let server = start(&format!(
        "server://{KEY}@127.0.0.1:0/127.0.0.1:0?mode=1&tls=2&crt={}&key={}",
        files.crt.display(),
        files.key.display()
    ))
    .await;
    let tunnel = server.local_addrs().tunnel.unwrap();
    let t = target.addr();
    let bad = [
        (
            "no ca (web roots only)",
            format!("client://{KEY}@{tunnel}/{t}?mode=2&sni=localhost"),
        ),
        (
            "another ca",
            format!(
                "client://{KEY}@{tunnel}/{t}?mode=2&sni=localhost&ca={}",
                other_ca.display()
            ),
        ),
        (
            "wrong name",
            format!(
                "client://{KEY}@{tunnel}/{t}?mode=2&sni=not-the-server.example&ca={}",
                files.ca.display()
            ),
        ),
    ];
    let mut clients = Vec::new();
    for (name, url) in &bad {
        clients.push((name, start(url).await));
    }
    for (name, c) in &clients {
        let state = wait_state(c, IO_TIMEOUT, name, |s| {
            matches!(s, TunnelState::Reconnecting { .. })
        })
        .await;
        let TunnelState::Reconnecting { error } = state else {
            unreachable!()
        };
        assert!(
            error.message().contains("tls") || error.message().contains("certificate"),
            "{name}: {error}"
        );
        assert_eq!(error.kind(), ErrorKind::Tls, "{name}: {error}");
    }
    // The right CA and name work.
    let good = start(&format!(
        "client://{KEY}@{tunnel}/{t}?mode=2&sni=localhost&ca={}",
        files.ca.display()
    ))
    .await;
    wait_ready(&good).await;
    for (name, c) in &clients {
        assert_ne!(*c.state().borrow(), TunnelState::Ready, "{name}");
    }
    let reply = roundtrip(
        server.local_addrs().users.unwrap(),
        b"to the verified client",
    )
    .await;
    assert_eq!(reply, b"ok");
    assert_eq!(target.accepted(), 1);
    let mut all: Vec<&TunnelHandle> = clients.iter().map(|(_, c)| c).collect();
    all.push(&good);
    all.push(&server);
    shutdown(&all).await;
}

#[tokio::test]
async fn a_client_reports_a_server_of_another_protocol_version() {
    // A fake server from the future: answers every hello with a challenge of version + 1.
    let fake = Server::spawn(|s, _| async move {
        let mut raw = Raw {
            s,
            buf: BytesMut::new(),
        };
        if let Some(Message::Hello { .. }) = raw.recv().await {
            raw.send(&Message::Challenge {
                version: PROTOCOL_VERSION + 1,
                nonce: [9; NONCE_LEN],
                pake: None,
                proof: [9; 32],
            })
            .await;
            let _ = raw.s.read(&mut [0u8; 64]).await;
        }
    })
    .await;
    let client = start(&format!(
        "client://{KEY}@{}/127.0.0.1:9?mode=2",
        fake.addr()
    ))
    .await;
    let state = wait_state(&client, IO_TIMEOUT, "version refused", |s| {
        matches!(s, TunnelState::Reconnecting { .. })
    })
    .await;
    let TunnelState::Reconnecting { error } = state else {
        unreachable!()
    };
    assert!(error.message().contains("version"), "{error}");
    assert_eq!(error.kind(), ErrorKind::Protocol, "{error}");
    shutdown(&[&client]).await;
}
