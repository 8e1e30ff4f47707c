//! A [`Supervisor`] driven from code: create, start, watch events, restart, reopen, delete.
//!
//! The state lives in a SQLite file in a temporary directory. The program creates a server and
//! a client instance in front of a local echo service, sends bytes through, restarts the server
//! (the client reconnects by itself), shuts down, reopens the store to show that the instances
//! and their traffic totals came back (and started again), then deletes them and exits 0.
//! Everything listens on 127.0.0.1; the ports come from the OS.
//!
//! Run: `cargo run --release --example supervisor` (set `RUST_LOG=debug` to see more).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nodepass_core::store::SqliteStore;
use nodepass_core::supervisor::{
    CreateInstance, EventKind, InstanceStatus, LogCapture, SupervisorOptions,
};
use nodepass_core::{Instance, Supervisor};
use nodepass_examples::{echo_service, pattern, round_trip};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

type BoxError = Box<dyn std::error::Error>;

/// Bound on waiting for an instance to reach a status.
const STATUS_TIMEOUT: Duration = Duration::from_secs(15);

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // Console output with its own filter, and the capture of per-instance log lines (which
    // sees every nodepass level down to debug, so that an instance's `log=` parameter decides).
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let nodepass = Targets::new().with_target("nodepass", LevelFilter::DEBUG);
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_filter(filter))
        .with(LogCapture::new().with_filter(nodepass))
        .init();

    let dir = TempDir::new()?;
    let path = dir.0.join("state.db");
    let stop_echo = CancellationToken::new();
    let tracker = TaskTracker::new();
    let echo = echo_service(stop_echo.clone(), &tracker).await?;

    let (sup, printer) = open(&path).await?;
    let server = create(
        &sup,
        "server://example-key@127.0.0.1:0/127.0.0.1:0?mode=1",
        "server",
    )
    .await?;
    // Pin the ports the OS chose, so that restarts keep them and the client finds its server.
    let addrs = server.local_addrs();
    let (tunnel, users) = (
        addrs.tunnel.ok_or("no tunnel address")?,
        addrs.users.ok_or("no user address")?,
    );
    let pinned = format!("server://example-key@{tunnel}/{users}?mode=1");
    sup.replace_url(server.id(), &pinned).await?;
    wait_for(&server, InstanceStatus::Running).await?;

    let client_url = format!("client://example-key@{tunnel}/{echo}?mode=2&min=4&log=debug");
    let client = create(&sup, &client_url, "client").await?;
    wait_connected(&client).await?;
    check_round_trip(users, 256 * 1024).await?;

    println!("== restarting the server; the client reconnects by itself");
    sup.restart(server.id()).await?;
    wait_for(&server, InstanceStatus::Running).await?;
    wait_connected(&client).await?;
    check_round_trip(users, 64 * 1024).await?;
    let (server_id, client_id) = (server.id().to_owned(), client.id().to_owned());
    show(&sup);
    println!("== recent log lines of the client:");
    for line in client.logs().iter().rev().take(5).rev() {
        println!("   [{}] {}", line.level, line.message);
    }

    println!("== shutting down, reopening the store");
    // Instance handles share the supervisor's state (and its store): drop them first.
    drop((server, client));
    close(sup, printer).await?;
    let (sup, printer) = open(&path).await?;
    show(&sup);
    let server = sup.instance(&server_id)?;
    let client = sup.instance(&client_id)?;
    wait_for(&server, InstanceStatus::Running).await?;
    wait_connected(&client).await?;
    check_round_trip(users, 1024).await?;

    println!("== deleting both instances");
    sup.delete(&client_id).await?;
    sup.delete(&server_id).await?;
    if !sup.list().is_empty() {
        return Err("instances left after delete".into());
    }
    drop((server, client));
    close(sup, printer).await?;
    stop_echo.cancel();
    tracker.close();
    tracker.wait().await;
    println!("done");
    Ok(())
}

/// Open the supervisor on the SQLite file, with a task printing its events.
async fn open(path: &std::path::Path) -> Result<(Supervisor, JoinHandle<()>), BoxError> {
    let store = Arc::new(SqliteStore::open(path)?);
    let mut options = SupervisorOptions::default();
    options.stats_interval = Duration::from_secs(1);
    options.flush_interval = Duration::from_secs(1);
    let sup = Supervisor::open(store, options, CancellationToken::new()).await?;
    let mut events = sup.subscribe();
    let printer = tokio::spawn(async move {
        while let Some(e) = events.recv().await {
            let Some(i) = &e.instance else {
                println!("   event {:?}", e.kind);
                continue;
            };
            let name = i.alias.as_deref().unwrap_or(&i.id);
            match e.kind {
                // Stats and logs are frequent: show them briefly.
                EventKind::Stats => println!(
                    "   event stats  {name}: {} B in, {} B out, pool {}",
                    i.traffic.tcp_in, i.traffic.tcp_out, i.pool_size
                ),
                EventKind::Log => {}
                kind => println!(
                    "   event {kind:?} {name}: {}{}",
                    i.status,
                    i.error
                        .as_deref()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default()
                ),
            }
        }
    });
    Ok((sup, printer))
}

/// Shut down and wait for the event printer to see the end of the stream.
async fn close(sup: Supervisor, printer: JoinHandle<()>) -> Result<(), BoxError> {
    sup.shutdown().await;
    drop(sup);
    tokio::time::timeout(Duration::from_secs(5), printer).await??;
    Ok(())
}

async fn create(sup: &Supervisor, url: &str, alias: &str) -> Result<Instance, BoxError> {
    let info = sup
        .create(CreateInstance {
            url: url.into(),
            alias: Some(alias.into()),
            restart: true,
            ..Default::default()
        })
        .await?;
    println!(
        "== created {alias} {} ({}): {}",
        info.id, info.url, info.status
    );
    Ok(sup.instance(&info.id)?)
}

async fn wait_for(i: &Instance, want: InstanceStatus) -> Result<(), BoxError> {
    let mut status = i.status();
    tokio::time::timeout(STATUS_TIMEOUT, status.wait_for(|s| *s == want))
        .await
        .map_err(|_| format!("{} is not {want}: {:?}", i.id(), i.info().error))??;
    Ok(())
}

/// Running and connected to its server (no connection error).
async fn wait_connected(client: &Instance) -> Result<(), BoxError> {
    let deadline = tokio::time::Instant::now() + STATUS_TIMEOUT;
    loop {
        let info = client.info();
        if info.status == InstanceStatus::Running && info.error.is_none() {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("client not connected: {:?}", info.error).into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn check_round_trip(users: std::net::SocketAddr, len: usize) -> Result<(), BoxError> {
    let payload = pattern(len);
    if round_trip(users, &payload).await? != payload {
        return Err("the echo came back different".into());
    }
    println!("== round trip of {len} bytes through the tunnel: ok");
    Ok(())
}

fn show(sup: &Supervisor) {
    for i in sup.list() {
        println!(
            "   {} {:<7} {:<8} mode {:<8} tcp {} B in / {} B out  {}",
            i.id,
            i.alias.as_deref().unwrap_or("-"),
            i.status.as_str(),
            i.mode,
            i.traffic.tcp_in,
            i.traffic.tcp_out,
            i.config
        );
    }
}

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> std::io::Result<Self> {
        let dir = std::env::temp_dir().join(format!("nodepass-example-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
