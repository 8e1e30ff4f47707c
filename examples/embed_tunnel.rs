//! A server and a client tunnel in one program, carrying bytes to a local echo service, built
//! from typed configuration (no URL string).
//!
//! ```text
//! user ──▶ server users port ══ tunnel (pool of TLS-less TCP connections) ══ client ──▶ echo
//! ```
//! Everything listens on 127.0.0.1 with port 0 (free ports, read back from the handles). The
//! program sends 4 MiB through, stops both tunnels with one cancellation token, reads their
//! final counters (typed: `StatsSnapshot`), checks the echo and the counters, and exits 0
//! (non-zero on any failure: an error or a failed assertion).
//!
//! Run: `cargo run --release --example embed_tunnel` (set `RUST_LOG=debug` to see more).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use nodepass_core::Tunnel;
use nodepass_core::config::{ClientConfig, ClientMode, ServerConfig, ServerMode};
use nodepass_examples::{echo_service, init_logging, pattern, round_trip};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const KEY: &str = "example-key-4f9c2e7a";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    init_logging();
    let (stop, tracker) = (CancellationToken::new(), TaskTracker::new());
    let echo = echo_service(stop.clone(), &tracker).await?;
    let any_port = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));

    // Reverse flow: the server accepts users on its target address and sends their sessions
    // through the tunnel to the client, which dials the echo service.
    let server = ServerConfig::builder(any_port, any_port)
        .key(KEY)
        .mode(ServerMode::Reverse)
        .build()?;
    let server = Tunnel::bind(server).await?.spawn(stop.child_token());
    let addrs = server.local_addrs();
    let client = ClientConfig::builder(addrs.tunnel.ok_or("no tunnel address")?, echo)
        .key(KEY)
        .mode(ClientMode::DualEnd)
        .build()?;
    let client = Tunnel::bind(client).await?.spawn(stop.child_token());
    client.wait_ready(Duration::from_secs(10)).await?;

    let payload = pattern(4 << 20);
    let echoed = round_trip(addrs.users.ok_or("no user address")?, &payload).await?;
    stop.cancel();
    tokio::try_join!(server.wait(), client.wait())?;
    // After `wait` every relay has ended, so the counters are final.
    let (s, c) = (server.stats(), client.stats());
    println!("{} B to the user, {} B from echo", s.tcp_tx, c.tcp_rx);
    assert!(echoed == payload && s.tcp_tx == payload.len() as u64 && s.tcp_total == 1);
    tracker.close();
    tracker.wait().await;
    Ok(())
}
