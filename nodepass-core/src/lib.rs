//! nodepass-core: the embeddable NodePass TCP/UDP tunnel.
//!
//! # Layout
//! Public:
//! - [`config`]: the NodePass URL language parsed into typed configuration.
//! - [`tunnel`]: [`Tunnel`]/[`TunnelHandle`]: the server, dual-end client and single-end roles,
//!   TCP and UDP; [`TunnelOptions`] (timings and sizes), [`tunnel::TunnelState`],
//!   [`tunnel::WaitError`].
//! - [`error`]: [`Error`] with its [`ErrorKind`], and [`TunnelError`] (kept in a tunnel's state).
//! - [`StatsSnapshot`]: a read-only copy of a tunnel's counters.
//! - [`transport`]: TLS setup and listeners, shared with the master API crate.
//! - [`store`] (feature `supervisor`): durable state of the supervisor, the [`store::Store`]
//!   trait, [`store::MemoryStore`] and (feature `sqlite`) `store::SqliteStore`.
//! - [`supervisor`] (feature `supervisor`): [`Supervisor`] and [`Instance`]: managed tunnels
//!   with a lifecycle, an auto-restart policy, events, per-instance logs
//!   ([`supervisor::LogCapture`]) and state kept in a store across restarts.
//!
//! Crate-private: `protocol` (the pure wire codec, handshake proofs, UDP datagram framing,
//! PROXY headers), `pool` (pre-authenticated idle tunnel connections), `relay` (buffered copy
//! with half-close, `splice(2)` on Linux), `stats`, `limit` (session slots, bandwidth),
//! `sniff` (the `block` parameter). The cargo feature `fuzzing` makes `protocol` and `sniff`
//! reachable (doc-hidden, no stability promise) for the fuzz targets, property tests, benches
//! and the fake peers of the end-to-end tests.
//!
//! # Shutdown
//! Every long-running function takes a `tokio_util::sync::CancellationToken`; cancelling it stops
//! accepting, signals in-flight work, and waits for it within a grace period.
//!
//! # Example
//! One tunnel, run directly; then the same kind of tunnel managed by a [`Supervisor`]:
//!
//! ```no_run
//! use std::sync::Arc;
//! use nodepass_core::store::MemoryStore;
//! use nodepass_core::supervisor::{CreateInstance, SupervisorOptions};
//! use nodepass_core::{Supervisor, Tunnel, TunnelConfig};
//! use tokio_util::sync::CancellationToken;
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let shutdown = CancellationToken::new();
//!
//! // A server tunnel: clients connect to :10101, users to 127.0.0.1:8080 (reverse flow).
//! let config: TunnelConfig = "server://secret@:10101/127.0.0.1:8080?mode=1".parse()?;
//! let tunnel = Tunnel::bind(config).await?.spawn(shutdown.child_token());
//! println!("bound {:?}, {} bytes in", tunnel.local_addrs(), tunnel.stats().tcp_rx);
//!
//! // A supervisor keeps instances (here in memory) and restarts them as their policy says.
//! let store = Arc::new(MemoryStore::new());
//! let supervisor = Supervisor::open(store, SupervisorOptions::default(), shutdown.clone()).await?;
//! let created = supervisor
//!     .create(CreateInstance {
//!         url: "client://secret@127.0.0.1:10101/127.0.0.1:9000".into(),
//!         restart: true,
//!         ..Default::default()
//!     })
//!     .await?;
//! println!("{} is {}", created.id, created.status);
//! let mut events = supervisor.subscribe();
//! if let Some(event) = events.recv().await {
//!     println!("{:?}", event.kind);
//! }
//!
//! supervisor.shutdown().await;
//! shutdown.cancel();
//! tunnel.wait().await?;
//! # Ok(())
//! # }
//! ```

// What is `pub` is the API: an item public only by accident of a private module is flagged.
#![warn(unreachable_pub)]

pub mod config;
pub mod error;
mod limit;
mod pool;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod protocol;
// Its items are `pub` for the `fuzzing` feature, unreachable without it.
#[cfg(not(feature = "fuzzing"))]
#[allow(unreachable_pub)]
mod protocol;
mod relay;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod sniff;
#[cfg(not(feature = "fuzzing"))]
#[allow(unreachable_pub)]
mod sniff;
mod stats;
#[cfg(feature = "supervisor")]
pub mod store;
#[cfg(feature = "supervisor")]
pub mod supervisor;
mod sync;
pub mod transport;
pub mod tunnel;

pub use config::Config;
pub use error::{Error, ErrorKind, Result, TunnelError};
pub use stats::StatsSnapshot;
#[cfg(feature = "supervisor")]
pub use supervisor::{Instance, Supervisor};
pub use tunnel::{Tunnel, TunnelConfig, TunnelHandle, TunnelOptions};
