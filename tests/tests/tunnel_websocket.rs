//! The WebSocket pool transport (`type=2`): TCP and UDP in both data flows, byte-exact with
//! half-close, datagram-exact; what crosses the wire is WebSocket; wrong key and wrong path
//! refused; a restarted server recovered; the slot limit honoured. Loopback only.
//! (Through nginx: `tunnel_websocket_nginx.rs`.)

use nodepass_core::ErrorKind;
use nodepass_core::tunnel::TunnelState;
use nodepass_tests::IO_TIMEOUT;
use nodepass_tests::payload::random_bytes;
use nodepass_tests::servers::{self, contains};
use nodepass_tests::transports::{self, Flow, Pair, answer, half_close_exchange};
use nodepass_tests::tunnel::{shutdown, start, wait_state};

/// A `type=2` server (plus `server_params`) and a client (`client_params`).
async fn pair(
    flow: Flow,
    target: &str,
    server_params: &str,
    client_params: &str,
    tap: bool,
) -> Pair {
    let server_params = format!("&type=2{server_params}");
    transports::pair(flow, target, &server_params, client_params, tap).await
}

#[tokio::test]
async fn tcp_reverse_flow_with_half_close_is_websocket_on_the_wire() {
    let target = servers::collect_then_answer(answer).await;
    let p = pair(
        Flow::Reverse,
        &target.addr().to_string(),
        "&wspath=/np/tunnel",
        "&type=2&wspath=/np/tunnel&wshost=cdn.example.test",
        true,
    )
    .await;
    half_close_exchange(&p, 1).await;
    let tap = p.tap.as_ref().unwrap();
    // The tap keeps a bounded record: check the connections it recorded.
    let recorded: Vec<_> = tap
        .conns()
        .into_iter()
        .filter(|c| !c.up.is_empty())
        .collect();
    assert!(recorded.len() >= 2, "control and pool connections recorded");
    for conn in recorded {
        let up = &conn.up;
        assert!(
            up.starts_with(b"GET /np/tunnel HTTP/1.1\r\n"),
            "every tunnel connection opens with the upgrade request: {:?}",
            String::from_utf8_lossy(&up[..up.len().min(80)])
        );
        let head = String::from_utf8_lossy(&up[..up.len().min(1024)]).to_ascii_lowercase();
        assert!(
            head.contains("\r\nhost: cdn.example.test\r\n"),
            "the Host header is wshost: {head:?}"
        );
        assert!(
            conn.down
                .starts_with(b"HTTP/1.1 101 Switching Protocols\r\n")
        );
    }
    assert!(tap.accepted() >= 3, "control and pool connections");
    shutdown(&[&p.client, &p.server]).await;
}

#[tokio::test]
async fn tcp_forward_flow_tls1_learned_from_the_server() {
    // The client is not told: its plain hello is refused with "websocket, tls=1".
    let target = servers::collect_then_answer(answer).await;
    let p = pair(
        Flow::Forward,
        &target.addr().to_string(),
        "&tls=1",
        "",
        true,
    )
    .await;
    half_close_exchange(&p, 2).await;
    let tap = p.tap.as_ref().unwrap();
    let marker = random_bytes(2, 4096);
    assert!(
        !contains(&tap.upstream_bytes(), &marker),
        "payload in clear on a tls tunnel"
    );
    shutdown(&[&p.client, &p.server]).await;
}

#[tokio::test]
async fn udp_reverse_flow_is_datagram_exact() {
    transports::udp_exact(Flow::Reverse, "&type=2", "").await;
}

#[tokio::test]
async fn udp_forward_flow_tls1_is_datagram_exact() {
    transports::udp_exact(Flow::Forward, "&type=2&tls=1", "").await;
}

#[tokio::test]
async fn a_wrong_key_is_refused() {
    transports::wrong_key_refused("&type=2&tls=1", "&type=2").await;
}

#[tokio::test]
async fn a_wrong_path_is_refused_with_404() {
    let server =
        start("server://k-0123456789@127.0.0.1:0/127.0.0.1:0?mode=1&type=2&wspath=/right").await;
    let tunnel = server.local_addrs().tunnel.unwrap();
    let client = start(&format!(
        "client://k-0123456789@{tunnel}/127.0.0.1:9?mode=2&type=2&wspath=/wrong"
    ))
    .await;
    wait_state(&client, IO_TIMEOUT, "refused with 404", |s| {
        matches!(s, TunnelState::Reconnecting { error }
                if error.kind() == ErrorKind::Unreachable && error.message().contains("404"))
    })
    .await;
    shutdown(&[&client, &server]).await;
}

#[tokio::test]
async fn a_restarted_server_is_found_again() {
    transports::restart_recovers("&type=2", "&wsping=1s").await;
}

#[tokio::test]
async fn the_slot_limit_is_honoured() {
    transports::slot_limit_honoured("&type=2", "").await;
}
