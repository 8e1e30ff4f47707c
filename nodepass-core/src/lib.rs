//! nodepass-core: the embeddable NodePass TCP/UDP tunnel.
//!
//! # Layout
//! - [`config`]: the NodePass URL language parsed into typed configuration.
//! - [`protocol`]: the pure wire codec (no I/O) and the handshake proofs.
//! - [`error`]: the crate's [`Error`] type.
//! - [`limit`]: per-tunnel limits: concurrent session slots (`slot`) and bandwidth (`rate`).
//! - [`sniff`]: the `block` parameter: refusing SOCKS, HTTP or TLS by their first bytes.
//!
//! # Shutdown
//! Every long-running function takes a `tokio_util::sync::CancellationToken`; cancelling it stops
//! accepting, signals in-flight work, and waits for it within a grace period.

pub mod config;
pub mod error;
pub mod limit;
pub mod protocol;
pub mod sniff;

pub use config::Config;
pub use error::{Error, Result};
pub mod pool;
pub mod relay;
pub mod stats;
pub mod store;
pub mod transport;
pub mod tunnel;

pub use supervisor::Supervisor;
pub use tunnel::{Tunnel, TunnelConfig, TunnelHandle};
pub mod supervisor;
