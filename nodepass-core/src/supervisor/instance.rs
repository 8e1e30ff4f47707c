//! One managed tunnel: identity, status, live figures (API CONTRACT, see `mod.rs`).

use serde::Serialize;

use crate::store::{Meta, TrafficTotals};

/// Server or client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceKind {
    /// `server://`
    Server,
    /// `client://`
    Client,
}

/// Lifecycle status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceStatus {
    /// Not running.
    Stopped,
    /// Started, not yet serving.
    Starting,
    /// Serving (a dual-end client: connected to its server).
    Running,
    /// Failed; `error` says why (auto-restart may be pending).
    Error,
}

/// A snapshot of one instance, as the API shows it. Never contains the tunnel key.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct InstanceInfo {
    /// 8 lower-case hex characters; never changes.
    pub id: String,
    /// Optional alias.
    pub alias: Option<String>,
    /// Server or client.
    #[serde(rename = "type")]
    pub kind: InstanceKind,
    /// Lifecycle status.
    pub status: InstanceStatus,
    /// Last error, when `status` is `error`.
    pub error: Option<String>,
    /// The URL as created, key masked.
    pub url: String,
    /// The canonical URL with every default, key masked.
    pub config: String,
    /// Auto-restart policy.
    pub restart: bool,
    /// Metadata.
    pub meta: Meta,
    /// `reverse`, `forward`, `single_end`, or `pending`.
    pub mode: String,
    /// Active TCP + UDP sessions.
    pub connections: u64,
    /// Active TCP sessions.
    pub tcp_connections: u64,
    /// Active UDP sessions.
    pub udp_connections: u64,
    /// Idle pool connections.
    pub pool_size: u64,
    /// Control round-trip time in milliseconds (0 if unknown).
    pub ping_ms: f64,
    /// Seconds since the last start (0 when stopped).
    pub uptime: u64,
    /// Cumulative traffic, kept across restarts (`tcp_in` = bytes read from local sockets).
    #[serde(flatten)]
    pub traffic: TrafficTotals,
    /// Creation time, unix milliseconds.
    pub created_at: i64,
    /// Last change, unix milliseconds.
    pub updated_at: i64,
}
