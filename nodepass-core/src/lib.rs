//! nodepass-core: the embeddable NodePass TCP/UDP tunnel.
//!
//! # Layout
//! - [`config`]: the NodePass URL language parsed into typed configuration.
//! - [`protocol`]: the pure wire codec (no I/O), the handshake proofs, UDP datagram framing and
//!   PROXY protocol headers.
//! - [`transport`]: tunnel connections over TCP or TLS 1.3, certificates, sockets, DNS cache.
//! - [`tunnel`]: [`Tunnel`]: the server, dual-end client and single-end roles, TCP and UDP.
//! - [`pool`]: [`pool::Pool`], pre-authenticated idle tunnel connections, refilled on demand.
//! - [`relay`]: moving bytes: buffered copy with half-close, and `splice(2)` on Linux.
//! - [`stats`]: lock-free counters of a tunnel.
//! - [`limit`]: per-tunnel limits: concurrent session slots (`slot`) and bandwidth (`rate`).
//! - [`sniff`]: the `block` parameter: refusing SOCKS, HTTP or TLS by their first bytes.
//! - [`error`]: the crate's [`Error`] type.
//! - [`store`]: durable state of the supervisor ([`store::SqliteStore`], [`store::MemoryStore`]).
//! - [`supervisor`]: [`Supervisor`] and [`Instance`]: managed tunnels with a lifecycle, an
//!   auto-restart policy, events, per-instance logs ([`supervisor::LogCapture`]) and state kept
//!   in a store across restarts.
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

pub mod config;
pub mod error;
pub mod limit;
pub mod pool;
pub mod protocol;
pub mod relay;
pub mod sniff;
pub mod stats;
#[cfg(feature = "supervisor")]
pub mod store;
#[cfg(feature = "supervisor")]
pub mod supervisor;
mod sync;
pub mod transport;
pub mod tunnel;

pub use config::Config;
pub use error::{Error, ErrorKind, Result, TunnelError};
#[cfg(feature = "supervisor")]
pub use supervisor::{Instance, Supervisor};
pub use tunnel::{Tunnel, TunnelConfig, TunnelHandle, TunnelOptions};
