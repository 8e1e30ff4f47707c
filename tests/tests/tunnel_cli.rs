//! The executables end to end: a `nodepass` server and a `nodepass` client, each a child
//! process with its URL in `NODEPASS_URL`, carry a `curl` request to a local HTTP server in
//! reverse and forward flow, and recover from the server being killed (SIGKILL) and started
//! again.
//!
//! The executables must be told their ports up front, so these tests pick free ports (bind
//! port 0, read it, close) and retry with new ports if another process took one in between.
//! Children are killed when their guard drops, also when a test fails.

use std::time::{Duration, Instant};

use nodepass_tests::process::{Process, curl, curl_or_skip};
use nodepass_tests::servers::{self, Server};
use nodepass_tests::tunnel::free_ports;

/// `nodepass_cli::main` as the `nodepass` binary runs it (see `tests/src/bin`).
const NODEPASS: &str = env!("CARGO_BIN_EXE_nodepass-e2e");
const KEY: &str = "cli-test-key";
/// Bound on a child getting ready (listening, or connected to its server).
const STARTUP: Duration = Duration::from_secs(10);
const CURL_MAX_TIME: Duration = Duration::from_secs(10);
/// Attempts with fresh ports when a chosen port was taken by someone else meanwhile.
const PORT_ATTEMPTS: usize = 3;
/// Logged by a server once it listens, and by a client each time it has a session.
const SERVER_READY: &str = "server listening";
const CLIENT_CONNECTED: &str = "connected to the server";

#[derive(Debug, Clone, Copy)]
enum Flow {
    Reverse,
    Forward,
}

/// A server and a client process joined on `tunnel`, users served on `users`.
struct Pair {
    server: Process,
    client: Process,
    tunnel: u16,
    users: u16,
    http: u16,
    flow: Flow,
}

fn server_url(flow: Flow, tunnel: u16, users: u16, http: u16) -> String {
    match flow {
        Flow::Reverse => format!("server://{KEY}@127.0.0.1:{tunnel}/127.0.0.1:{users}?mode=1"),
        Flow::Forward => format!("server://{KEY}@127.0.0.1:{tunnel}/127.0.0.1:{http}?mode=2"),
    }
}

fn client_url(flow: Flow, tunnel: u16, users: u16, http: u16) -> String {
    let target = match flow {
        Flow::Reverse => http,
        Flow::Forward => users,
    };
    format!("client://{KEY}@127.0.0.1:{tunnel}/127.0.0.1:{target}?mode=2&min=4")
}

/// True if a child failed because a port it was given is in use (the free-port race).
fn lost_a_port_race(p: &mut Process) -> bool {
    p.exited().is_some() && p.stderr().contains("in use")
}

/// Start both processes on fresh ports; retry on a port race; panic with their stderr
/// otherwise.
fn start_pair(flow: Flow, http: &Server) -> Pair {
    let http = http.addr().port();
    for attempt in 1..=PORT_ATTEMPTS {
        let [tunnel, users] = free_ports();
        let mut server = Process::spawn(NODEPASS, "server", &server_url(flow, tunnel, users, http));
        if !server.wait_for_stderr(SERVER_READY, STARTUP) {
            if lost_a_port_race(&mut server) && attempt < PORT_ATTEMPTS {
                continue;
            }
            panic!("server did not start\n{}", server.report());
        }
        let mut client = Process::spawn(NODEPASS, "client", &client_url(flow, tunnel, users, http));
        if !client.wait_for_stderr(CLIENT_CONNECTED, STARTUP) {
            if lost_a_port_race(&mut client) && attempt < PORT_ATTEMPTS {
                continue;
            }
            panic!(
                "client did not connect\n{}\n{}",
                client.report(),
                server.report()
            );
        }
        return Pair {
            server,
            client,
            tunnel,
            users,
            http,
            flow,
        };
    }
    panic!("no free ports after {PORT_ATTEMPTS} attempts");
}

impl Pair {
    /// `curl` through the tunnel's user port; returns the body.
    fn curl(&mut self, path: &str) -> String {
        let url = format!("http://127.0.0.1:{}{path}", self.users);
        let (status, body, err) = curl(&url, CURL_MAX_TIME);
        assert!(
            status.success(),
            "curl {url}: {status} {err}\n{}\n{}",
            self.client.report(),
            self.server.report()
        );
        body
    }
}

/// A runtime for the in-process HTTP server (the tests themselves block on processes).
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn curl_through(flow: Flow, test: &str) {
    if !curl_or_skip(test) {
        return;
    }
    let rt = runtime();
    let http = rt.block_on(servers::http());
    let mut pair = start_pair(flow, &http);
    let path = format!("/{test}");
    assert_eq!(pair.curl(&path), servers::http_body(&path));
    assert_eq!(http.accepted(), 1);
}

#[test]
fn curl_through_reverse_flow() {
    curl_through(Flow::Reverse, "curl_through_reverse_flow");
}

#[test]
fn curl_through_forward_flow() {
    curl_through(Flow::Forward, "curl_through_forward_flow");
}

#[test]
fn client_recovers_when_the_server_process_is_killed_and_restarted() {
    let test = "client_recovers_when_the_server_process_is_killed_and_restarted";
    if !curl_or_skip(test) {
        return;
    }
    let rt = runtime();
    let http = rt.block_on(servers::http());
    let mut pair = start_pair(Flow::Reverse, &http);
    assert_eq!(pair.curl("/before"), servers::http_body("/before"));

    pair.server.kill(); // SIGKILL: no goodbye, the sockets just close
    let restarted = Instant::now();
    pair.server = Process::spawn(
        NODEPASS,
        "restarted server",
        &server_url(pair.flow, pair.tunnel, pair.users, pair.http),
    );
    assert!(
        pair.server.wait_for_stderr(SERVER_READY, STARTUP),
        "restarted server did not start\n{}",
        pair.server.report()
    );
    // The client logs a second session once it reconnected by itself.
    let max_polls = 500;
    for _ in 0..max_polls {
        if pair.client.stderr().matches(CLIENT_CONNECTED).count() >= 2
            || restarted.elapsed() > Duration::from_secs(10)
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        pair.client.stderr().matches(CLIENT_CONNECTED).count() >= 2,
        "the client did not reconnect within 10 s\n{}",
        pair.client.report()
    );
    assert_eq!(pair.curl("/after"), servers::http_body("/after"));
    let took = restarted.elapsed();
    eprintln!(
        "killed server restarted: curl answered {:.2} s after the restart",
        took.as_secs_f64()
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
}
