//! The HTTP/2 pool transport (`type=3`): TCP and UDP in both data flows, byte-exact with
//! half-close, datagram-exact; the whole pool rides on one TCP connection; a wrong key
//! refused; `tls=0` refused with a message that says what to add; a restarted server
//! recovered; the slot limit honoured. Loopback only.

use nodepass_tests::IO_TIMEOUT;
use nodepass_tests::payload::random_bytes;
use nodepass_tests::servers;
use nodepass_tests::transports::{self, Flow, Pair, answer, half_close_exchange};
use nodepass_tests::tunnel::{eventually, roundtrip, shutdown};

/// `nodepass_cli::main` as the `nodepass` binary runs it (see `tests/src/bin`).
const NODEPASS: &str = env!("CARGO_BIN_EXE_nodepass-e2e");
/// The client's pool size: all of it must ride on one TCP connection.
const POOL: u32 = 8;

/// A `type=3` server (plus `server_params`, `tls=1` unless given) and a client that is told
/// nothing about the transport, with a pool of [`POOL`].
async fn pair(flow: Flow, target: &str, server_params: &str) -> Pair {
    let tls = if server_params.contains("tls=") {
        ""
    } else {
        "&tls=1"
    };
    let server_params = format!("&type=3{tls}{server_params}");
    transports::pair(flow, target, &server_params, &format!("&min={POOL}"), false).await
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
    transports::forward_half_close("&type=3&tls=1", &format!("&min={POOL}"), one_tcp_connection)
        .await;
}

#[tokio::test]
async fn udp_reverse_flow_is_datagram_exact() {
    transports::udp_exact(Flow::Reverse, "&type=3&tls=1", "").await;
}

#[tokio::test]
async fn udp_forward_flow_is_datagram_exact() {
    transports::udp_exact(Flow::Forward, "&type=3&tls=1", "").await;
}

#[tokio::test]
async fn a_wrong_key_is_refused() {
    transports::wrong_key_refused("&type=3&tls=1", "").await;
}

#[tokio::test]
async fn type3_without_tls_is_refused_saying_what_to_add() {
    transports::tls0_refused_by_the_library(3).await;
}

/// The same as a new user meets it: the executable exits with the message.
#[test]
fn the_executable_refuses_type3_without_tls() {
    transports::tls0_refused_by_the_executable(NODEPASS, 3);
}

#[tokio::test]
async fn a_restarted_server_is_found_again() {
    transports::restart_recovers("&type=3&tls=1", "").await;
}

#[tokio::test]
async fn the_slot_limit_is_honoured() {
    transports::slot_limit_honoured("&type=3&tls=1", "").await;
}
