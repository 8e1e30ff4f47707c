//! The first log lines of each role, read as an operator would: where to connect, what was
//! decided and why, what failed and which address. All traffic stays on loopback.

mod support;

use std::net::TcpStream;
use std::time::Duration;

use support::{Proc, addr_field};

const SECS: Duration = Duration::from_secs(20);

#[test]
fn a_server_logs_where_clients_and_users_connect_and_why() {
    let key = "lOgTeStKeY-0123456789abcdefghij";
    let mut server = Proc::start(
        &format!("server://{key}@127.0.0.1:0/127.0.0.1:0?mode=1"),
        false,
    );
    let line = server.wait_for(&["server listening"], SECS);
    let tunnel = addr_field(&line, "tunnel");
    let users = addr_field(&line, "users");
    assert!(
        line.contains("flow=reverse") && line.contains("reason=mode=1"),
        "{line}"
    );

    // A user before any client: the wording says so, and names no pool internals.
    let _user = TcpStream::connect(("127.0.0.1", users)).unwrap();
    let line = server.wait_for(&["WARN", "no client connected"], SECS);
    assert!(!line.contains("pool connection available"), "{line}");

    // A client with another key: the server's line says the client has a different key.
    let _client = Proc::start(
        &format!("client://another-key-of-32-characters@127.0.0.1:{tunnel}/127.0.0.1:1?mode=2"),
        false,
    );
    let line = server.wait_for(&["WARN", "the client has a different key"], SECS);
    assert!(!line.contains("refused by the peer"), "{line}");
    assert!(!line.contains(key));
    server.assert_no_debug_formatting();
}

#[test]
fn an_auto_client_that_takes_its_tunnel_port_warns_and_says_how_to_choose() {
    let mut client = Proc::start("client://127.0.0.1:0/127.0.0.1:1", false);
    let line = client.wait_for(&["WARN", "single-end"], SECS);
    assert!(line.contains("mode=2") && line.contains("mode=1"), "{line}");
    let line = client.wait_for(&["single-end forwarding"], SECS);
    let port = addr_field(&line, "users");

    // Nothing listens on 127.0.0.1:1: the dial error names the target.
    let _user = TcpStream::connect(("127.0.0.1", port)).unwrap();
    client.wait_for(
        &["WARN", "no target reachable", "targets=127.0.0.1:1"],
        SECS,
    );
    client.assert_no_debug_formatting();

    // mode=1 chooses single-end on purpose: no warning.
    let mut quiet = Proc::start("client://127.0.0.1:0/127.0.0.1:1?mode=1", false);
    quiet.wait_for(&["single-end forwarding"], SECS);
    assert!(
        quiet.seen.iter().all(|l| !l.contains("WARN")),
        "{:?}",
        quiet.seen
    );
}

#[test]
fn json_logs_carry_addresses_as_plain_strings() {
    let mut server = Proc::start(
        "server://jsonkey-0123456789abcdef@127.0.0.1:0/127.0.0.1:1?mode=2",
        true,
    );
    let line = server.wait_for(&["server listening"], SECS);
    assert!(line.starts_with('{'), "{line}");
    assert!(line.contains("\"tunnel\":\"127.0.0.1:"), "{line}");
    assert!(line.contains("\"flow\":\"forward\""), "{line}");
    server.assert_no_debug_formatting();
}
