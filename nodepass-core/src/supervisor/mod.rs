//! [`Supervisor`]: owns every managed tunnel [`instance`], runs them in-process, keeps them in a
//! [`Store`](crate::store::Store) across restarts, and broadcasts [`Event`]s.
//!
//! API CONTRACT (written by the lead; the implementation fills in the bodies). Signatures and
//! public types here are what nodepass-api and embedders code against: change them only with
//! the lead's agreement.

mod event;
mod instance;

pub use event::{Event, EventKind, Events, LogLine};
pub use instance::{InstanceInfo, InstanceKind, InstanceStatus};

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::{Meta, Store, StoreError};

/// Supervisor errors. The API maps each variant to one HTTP status, in one place.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SupervisorError {
    /// No instance with this id (404).
    #[error("instance {0} not found")]
    NotFound(String),
    /// A field of the request is invalid (400); `field` names it.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field (`url`, `alias`, `meta.tags`, `action`...).
        field: String,
        /// Why.
        reason: String,
    },
    /// The request conflicts with the current state (409): a listen address used by another
    /// running instance, an invalid status transition.
    #[error("{0}")]
    Conflict(String),
    /// The store failed; nothing was changed (500).
    #[error("state store")]
    Store(#[from] StoreError),
    /// The supervisor is shutting down (503).
    #[error("supervisor is shutting down")]
    ShuttingDown,
}

/// `Result` with [`SupervisorError`].
pub type Result<T, E = SupervisorError> = std::result::Result<T, E>;

/// A request to create an instance.
#[derive(Debug, Clone, Default)]
pub struct CreateInstance {
    /// The instance URL (`server://...` or `client://...`), key included.
    pub url: String,
    /// Optional alias (at most 256 characters).
    pub alias: Option<String>,
    /// Auto-restart policy (default false).
    pub restart: bool,
    /// Metadata.
    pub meta: Meta,
}

/// A partial update; `None` fields are left unchanged. Validated completely before anything
/// is applied.
#[derive(Debug, Clone, Default)]
pub struct UpdateInstance {
    /// New alias; `Some(None)` clears it.
    pub alias: Option<Option<String>>,
    /// New auto-restart policy.
    pub restart: Option<bool>,
    /// New metadata (replaces the old).
    pub meta: Option<Meta>,
}

/// Tunable timings, with production defaults (tests shrink them).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SupervisorOptions {
    /// How often traffic totals are flushed to the store (default 5 s).
    pub flush_interval: Duration,
    /// How often a `stats` event is broadcast (default 5 s).
    pub stats_interval: Duration,
    /// How often a history sample is written (default 60 s).
    pub history_interval: Duration,
    /// Wait for `start`/`restart` to reach running or error before answering `starting`
    /// (default 5 s).
    pub start_wait: Duration,
    /// Grace period of `shutdown` and `stop` (default 5 s).
    pub grace: Duration,
    /// First auto-restart delay (default 1 s), doubling to `restart_max` (default 60 s), reset
    /// after `stable_after` of uninterrupted running (default 60 s).
    pub restart_min: Duration,
    /// Largest auto-restart delay.
    pub restart_max: Duration,
    /// Running this long resets the restart delay.
    pub stable_after: Duration,
    /// Events buffered per subscriber before it is told to resync (default 1024).
    pub event_capacity: usize,
    /// Log lines kept per instance (default 200).
    pub log_capacity: usize,
}

impl Default for SupervisorOptions {
    fn default() -> Self {
        SupervisorOptions {
            flush_interval: Duration::from_secs(5),
            stats_interval: Duration::from_secs(5),
            history_interval: Duration::from_secs(60),
            start_wait: Duration::from_secs(5),
            grace: Duration::from_secs(5),
            restart_min: Duration::from_secs(1),
            restart_max: Duration::from_secs(60),
            stable_after: Duration::from_secs(60),
            event_capacity: 1024,
            log_capacity: 200,
        }
    }
}

/// Owns all instances. Cheap to clone (`Arc` inside).
#[derive(Clone)]
pub struct Supervisor {
    #[allow(dead_code)]
    inner: Arc<()>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor").finish_non_exhaustive()
    }
}

#[allow(unused_variables)]
impl Supervisor {
    /// Load every instance from `store` and start those whose policy or last operator action
    /// says so. `shutdown` stops everything (within the grace period) when cancelled.
    pub async fn open(
        store: Arc<dyn Store>,
        options: SupervisorOptions,
        shutdown: CancellationToken,
    ) -> Result<Supervisor> {
        todo!()
    }

    /// Subscribe to events (see [`Events`] for lag handling).
    pub fn subscribe(&self) -> Events {
        todo!()
    }

    /// Validate and create an instance (stopped until started, unless `restart` is set, then
    /// started at once). Refuses a listen address another running instance uses.
    pub async fn create(&self, req: CreateInstance) -> Result<InstanceInfo> {
        todo!()
    }

    /// All instances, oldest first.
    pub fn list(&self) -> Vec<InstanceInfo> {
        todo!()
    }

    /// One instance.
    pub fn get(&self, id: &str) -> Result<InstanceInfo> {
        todo!()
    }

    /// Start a stopped or failed instance; answers once it runs or fails (or after
    /// `start_wait`, still `starting`).
    pub async fn start(&self, id: &str) -> Result<InstanceInfo> {
        todo!()
    }

    /// Stop a running, starting or failed-and-retrying instance; answers once it stopped.
    pub async fn stop(&self, id: &str) -> Result<InstanceInfo> {
        todo!()
    }

    /// Stop then start.
    pub async fn restart(&self, id: &str) -> Result<InstanceInfo> {
        todo!()
    }

    /// Zero the instance's traffic counters, durably.
    pub async fn reset(&self, id: &str) -> Result<InstanceInfo> {
        todo!()
    }

    /// Replace the URL (validated first) and restart if it was running.
    pub async fn replace_url(&self, id: &str, url: &str) -> Result<InstanceInfo> {
        todo!()
    }

    /// Update alias, policy and metadata.
    pub async fn update(&self, id: &str, update: UpdateInstance) -> Result<InstanceInfo> {
        todo!()
    }

    /// Stop (if needed) and delete.
    pub async fn delete(&self, id: &str) -> Result<()> {
        todo!()
    }

    /// The store (the master keeps its API key hash in its settings).
    pub fn store(&self) -> Arc<dyn Store> {
        todo!()
    }

    /// Stop every instance within the grace period and flush traffic totals.
    pub async fn shutdown(&self) {
        todo!()
    }
}
