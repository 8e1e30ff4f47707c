//! The QUIC pool transport (`type=1`): TCP and UDP in both data flows, byte-exact with
//! half-close, datagram-exact; the control connection and the whole pool ride on one QUIC
//! connection from one client UDP socket; a wrong key refused; `tls=0` refused with a message
//! that says what to add; a restarted server recovered; the slot limit honoured; a QUIC
//! connection that never authenticates is closed; a client with `type=1` in its own URL speaks
//! QUIC from its first connection (tls=1, and tls=2 verified with `ca=`). Loopback only.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use nodepass_core::TunnelOptions;
use nodepass_tests::IO_TIMEOUT;
use nodepass_tests::certs::{Ca, CertFiles};
use nodepass_tests::payload::random_bytes;
use nodepass_tests::servers;
use nodepass_tests::transports::{self, Flow, Pair, answer, half_close_exchange};
use nodepass_tests::tunnel::{eventually, roundtrip, shutdown, start, start_with, wait_ready};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// `nodepass_cli::main` as the `nodepass` binary runs it (see `tests/src/bin`).
const NODEPASS: &str = env!("CARGO_BIN_EXE_nodepass-e2e");
/// The client's pool size: all of it must ride on one QUIC connection.
const POOL: u32 = 8;
/// How many relay connections or client sockets the relay serves at most.
const RELAY_MAX: usize = 64;

/// A relay on one port number of 127.0.0.1 that forwards TCP and UDP to the server's tunnel
/// port, counts the TCP connections, and records the source address of every UDP datagram
/// from the client.
struct Relay {
    addr: SocketAddr,
    sources: Arc<Mutex<HashSet<SocketAddr>>>,
    tcp_accepted: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Relay {
    async fn start(server: SocketAddr) -> Relay {
        // The same port number for both protocols: a few tries with fresh ephemeral ports.
        let mut bound = None;
        for _ in 0..10 {
            let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let addr = udp.local_addr().unwrap();
            if let Ok(tcp) = TcpListener::bind(addr).await {
                bound = Some((udp, tcp, addr));
                break;
            }
        }
        let (udp, tcp, addr) = bound.expect("a port number free for both udp and tcp");
        let tcp_accepted = Arc::new(AtomicUsize::new(0));
        let accepted = tcp_accepted.clone();
        let tcp_task = tokio::spawn(async move {
            for _ in 0..RELAY_MAX {
                let Ok((mut down, _)) = tcp.accept().await else {
                    return;
                };
                accepted.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    if let Ok(mut up) = TcpStream::connect(server).await {
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                });
            }
        });
        let sources = Arc::new(Mutex::new(HashSet::new()));
        let seen = sources.clone();
        let udp = Arc::new(udp);
        let udp_task = tokio::spawn(async move {
            // One upstream socket per client source address, as a NAT would.
            let mut upstream: std::collections::HashMap<SocketAddr, Arc<UdpSocket>> =
                Default::default();
            let mut buf = vec![0u8; 65536];
            while let Ok((n, src)) = udp.recv_from(&mut buf).await {
                seen.lock().unwrap().insert(src);
                if !upstream.contains_key(&src) {
                    if upstream.len() >= RELAY_MAX {
                        continue;
                    }
                    let up = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
                    up.connect(server).await.unwrap();
                    let (back, up2) = (udp.clone(), up.clone());
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 65536];
                        while let Ok(n) = up2.recv(&mut buf).await {
                            let _ = back.send_to(&buf[..n], src).await;
                        }
                    });
                    upstream.insert(src, up);
                }
                let _ = upstream[&src].send(&buf[..n]).await;
            }
        });
        Relay {
            addr,
            sources,
            tcp_accepted,
            tasks: vec![tcp_task, udp_task],
        }
    }
}

#[tokio::test]
async fn tcp_reverse_flow_with_half_close_on_one_client_udp_socket() {
    let target = servers::collect_then_answer(answer).await;
    let target = target.addr().to_string();
    let server = start(&format!(
        "server://{}@127.0.0.1:0/127.0.0.1:0?mode=1&type=1&tls=1",
        transports::KEY
    ))
    .await;
    let relay = Relay::start(server.local_addrs().tunnel.unwrap()).await;
    let client = start(&format!(
        "client://{}@{}/{target}?mode=2&min={POOL}",
        transports::KEY,
        relay.addr
    ))
    .await;
    wait_ready(&client).await;
    eventually(IO_TIMEOUT, "pool filled", || {
        let s = server.stats();
        async move { (s.pool_idle >= POOL as u64).then_some(()) }
    })
    .await;
    let sources = relay.sources.lock().unwrap().clone();
    assert_eq!(
        sources.len(),
        1,
        "control and {POOL} pool connections come from one client UDP socket: {sources:?}"
    );
    let p = Pair {
        flow: Flow::Reverse,
        users: server.local_addrs().users.unwrap(),
        server,
        client,
        tap: None,
    };
    half_close_exchange(&p, 1).await;
    // Then several sessions at once, each its own stream on the same connection.
    let (a, b) = (random_bytes(11, 4096), random_bytes(12, 100));
    let (small, tiny) = tokio::join!(roundtrip(p.users, &a), roundtrip(p.users, &b));
    assert!(small == answer(&a) && tiny == answer(&b), "answers differ");
    assert_eq!(relay.sources.lock().unwrap().len(), 1, "still one socket");
    shutdown(&[&p.client, &p.server]).await;
}

#[tokio::test]
async fn tcp_forward_flow_with_half_close() {
    transports::forward_half_close("&type=1&tls=1", &format!("&min={POOL}"), async |_| {}).await;
}

#[tokio::test]
async fn udp_reverse_flow_is_datagram_exact() {
    transports::udp_exact(Flow::Reverse, "&type=1&tls=1", "").await;
}

#[tokio::test]
async fn udp_forward_flow_is_datagram_exact() {
    transports::udp_exact(Flow::Forward, "&type=1&tls=1", "").await;
}

#[tokio::test]
async fn a_wrong_key_is_refused() {
    transports::wrong_key_refused("&type=1&tls=1", "").await;
}

#[tokio::test]
async fn type1_without_tls_is_refused_saying_what_to_add() {
    transports::tls0_refused_by_the_library(1).await;
}

/// The same as a new user meets it: the executable exits with the message.
#[test]
fn the_executable_refuses_type1_without_tls() {
    transports::tls0_refused_by_the_executable(NODEPASS, 1);
}

#[tokio::test]
async fn a_restarted_server_is_found_again() {
    transports::restart_recovers("&type=1&tls=1", "").await;
}

#[tokio::test]
async fn the_slot_limit_is_honoured() {
    transports::slot_limit_honoured("&type=1&tls=1", "").await;
}

/// A QUIC connection on which no stream authenticates within the pre-authentication timeout
/// is closed by the server (application code 2), even though it is otherwise alive.
#[tokio::test]
async fn a_connection_without_an_authenticated_stream_is_closed() {
    let mut opts = TunnelOptions::default();
    opts.preauth_timeout = std::time::Duration::from_millis(500);
    let server = start_with(
        "server://k-0123456789@127.0.0.1:0/127.0.0.1:0?mode=1&type=1&tls=1",
        opts,
    )
    .await;
    let addr = server.local_addrs().tunnel.unwrap();
    let mut tls = (*nodepass_tests::certs::any_cert_client_config()).clone();
    tls.alpn_protocols = vec![b"nodepass-quic".to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(tls)).unwrap();
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let conn = tokio::time::timeout(IO_TIMEOUT, ep.connect(addr, "nodepass").unwrap())
        .await
        .expect("handshake in time")
        .expect("the quic handshake itself succeeds");
    // A stream that starts but never completes its hello does not count either.
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    send.write_all(&[1]).await.unwrap();
    let why = tokio::time::timeout(IO_TIMEOUT, conn.closed())
        .await
        .expect("the server closes the connection");
    match why {
        quinn::ConnectionError::ApplicationClosed(c) => {
            assert_eq!(c.error_code, quinn::VarInt::from_u32(2), "{c:?}")
        }
        other => panic!("closed for another reason: {other}"),
    }
    shutdown(&[&server]).await;
}

/// A client with `type=1` in its own URL speaks QUIC from its first connection: through the
/// relay it opens no TCP connection at all, from one UDP socket, and the tunnel carries TCP
/// byte-exact; against a `tls=1` server (any certificate) and a `tls=2` one (verified with
/// `ca=` and `sni=`).
#[tokio::test]
async fn a_client_with_type1_speaks_quic_from_its_first_connection() {
    let ca = Ca::new("quic client type=1");
    let (certs, _leaf) = CertFiles::new(&ca);
    let tls2 = format!(
        "tls=2&crt={}&key={}",
        certs.crt.display(),
        certs.key.display()
    );
    let verify = format!("&sni=localhost&ca={}", certs.ca.display());
    let echo = servers::echo().await;
    for (server_tls, client_extra) in [("tls=1".to_string(), String::new()), (tls2, verify)] {
        let server = start(&format!(
            "server://k-0123456789@127.0.0.1:0/127.0.0.1:0?mode=1&type=1&{server_tls}"
        ))
        .await;
        let relay = Relay::start(server.local_addrs().tunnel.unwrap()).await;
        let client = start(&format!(
            "client://k-0123456789@{}/{}?mode=2&min=2&type=1{client_extra}",
            relay.addr,
            echo.addr()
        ))
        .await;
        wait_ready(&client).await;
        let users = server.local_addrs().users.unwrap();
        let payload = random_bytes(40, 128 << 10);
        assert!(
            roundtrip(users, &payload).await == payload,
            "{server_tls}: tcp over quic"
        );
        assert_eq!(
            relay.tcp_accepted.load(Ordering::Relaxed),
            0,
            "{server_tls}: no tcp connection from a type=1 client"
        );
        assert_eq!(
            relay.sources.lock().unwrap().len(),
            1,
            "{server_tls}: one udp socket"
        );
        shutdown(&[&client, &server]).await;
    }
}
