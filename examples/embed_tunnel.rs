//! A server and a client tunnel in one program, carrying bytes to a local echo service.
//!
//! ```text
//! user ──▶ server users port ══ tunnel (pool of TLS-less TCP connections) ══ client ──▶ echo
//! ```
//! Everything listens on 127.0.0.1 with port 0 (free ports, read back from the handles). The
//! program sends a few payloads through, checks they come back unchanged, prints both ends'
//! counters, shuts down with one cancellation token and exits 0.
//!
//! Run: `cargo run --release --example embed_tunnel` (set `RUST_LOG=debug` to see more).

use std::time::Duration;

use nodepass_core::{Tunnel, TunnelConfig};
use nodepass_examples::{echo_service, pattern, round_trip};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing_subscriber::EnvFilter;

/// How long the tunnels may take to stop after the token is cancelled.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let echo = echo_service(shutdown.clone(), &tracker).await?;

    // Server, reverse flow (mode=1): it accepts users on its target address and sends their
    // sessions through the tunnel to the client, which dials the echo service.
    let server: TunnelConfig = "server://example-key@127.0.0.1:0/127.0.0.1:0?mode=1".parse()?;
    let server = Tunnel::bind(server).await?.spawn(shutdown.child_token());
    let addrs = server.local_addrs();
    let (tunnel, users) = (
        addrs.tunnel.ok_or("server has no tunnel address")?,
        addrs.users.ok_or("server has no user address")?,
    );
    println!("server: tunnel {tunnel}, users {users}; echo service {echo}");

    let client: TunnelConfig =
        format!("client://example-key@{tunnel}/{echo}?mode=2&min=4").parse()?;
    let client = Tunnel::bind(client).await?.spawn(shutdown.child_token());
    client.wait_ready(Duration::from_secs(10)).await?;
    println!("client: connected, mode {:?}", client.mode());

    let mut sent = 0;
    for len in [13, 64 * 1024, 4 * 1024 * 1024] {
        let payload = pattern(len);
        let answer = round_trip(users, &payload).await?;
        if answer != payload {
            return Err(format!("{len} bytes sent, {} different bytes back", answer.len()).into());
        }
        sent += len as u64;
        println!("round trip of {len} bytes: ok");
    }

    // The counters are updated as the relays copy; the last bytes may land just after the echo.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while server.stats().tcp_tx < sent && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for (name, handle) in [("server", &server), ("client", &client)] {
        let s = handle.stats();
        println!(
            "{name}: tcp in {} B, out {} B, sessions {} (active {}), pool idle {}, rtt {:.2} ms",
            s.tcp_rx,
            s.tcp_tx,
            s.tcp_total,
            s.tcp_active,
            s.pool_idle,
            s.rtt_us as f64 / 1000.0
        );
    }

    shutdown.cancel();
    tracker.close();
    tokio::time::timeout(STOP_TIMEOUT, async {
        let (s, c) = tokio::join!(server.wait(), client.wait());
        tracker.wait().await;
        s.and(c)
    })
    .await
    .map_err(|_| "tunnels did not stop in time")??;
    println!("stopped cleanly");
    Ok(())
}
