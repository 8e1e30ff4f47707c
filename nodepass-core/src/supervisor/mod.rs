//! [`Supervisor`]: owns every managed tunnel [`Instance`], runs them in-process, keeps them in a
//! [`Store`] across restarts, and broadcasts [`Event`]s.
//!
//! ```text
//! Supervisor (Clone) ──▶ Core: store, instances, events, shutdown token, task tracker
//!                          └─ Managed (one per instance): record, status, run loop ──▶ Tunnel
//! Instance (Clone) = one Managed + the Core: the same operations for one id
//! ```
//!
//! # Lifecycle
//! `stopped` ─start▶ `starting` ─ready▶ `running`; a tunnel that cannot bind or fails goes to
//! `error` (and, with `restart: true`, back to `starting` after a backoff delay: `restart_min`
//! doubling to `restart_max`, reset once a run lasted `stable_after`). A dual-end client that
//! loses its server stays `running` with `error` set (it reconnects by itself); before it first
//! reached its server it is `starting`. `start` is refused for a running or starting instance,
//! `stop` for a stopped one; `restart` is stop then start from any state.
//!
//! # Durable state
//! Every change is written to the [`Store`] before the call returns; a failed write returns
//! [`SupervisorError::Store`] and changes nothing in memory. Traffic totals (stored totals plus
//! the live tunnel counters) are written every `flush_interval`, when a tunnel ends and at
//! shutdown; a history sample of every running instance every `history_interval`.
//!
//! **Which instances start at [`Supervisor::open`]**: those with `restart: true`, and those the
//! operator left running (the last of `start`/`stop` was a start, [`Desired::Running`]). So an
//! instance with `restart: false` "stays as the operator left it": running if it was started and
//! never stopped (even if it had failed since), stopped if it was stopped. Shutting down is not an
//! operator action and changes no instance's desired state.
//!
//! # Logs
//! Each instance runs in a `tracing` span; the [`LogCapture`] layer, installed once by the
//! program, keeps the instance's recent lines (filtered by its URL's `log=` level) in a ring of
//! `log_capacity` lines, and the supervisor broadcasts new lines as `log` events.
//!
//! # Shutdown
//! [`Supervisor::shutdown`], or cancelling the token given to [`Supervisor::open`], cancels the
//! supervisor's token (every instance's run token is a child of it), waits for the task tracker
//! within `grace`, flushes the traffic totals, broadcasts `shutdown` and closes the event
//! channel. Dropping every handle without shutting down leaves the instances running.

mod conflict;
mod core;
mod event;
mod instance;
mod logs;
mod run;
mod state;
mod validate;

pub use event::{Event, EventKind, Events, LogLine};
pub use instance::{Instance, InstanceInfo, InstanceKind, InstanceStatus};
pub use logs::{INSTANCE_SPAN_TARGET, LogCapture};
pub use validate::{MAX_META_CHARS, MAX_TAGS};

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::{
    Desired, InstanceRecord, Meta, Store, StoreError, TrafficSample, TrafficTotals,
};

use crate::tunnel::TunnelOptions;

use self::core::Core;
use self::state::Managed;

/// Now, in unix milliseconds.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

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
    /// running instance (the message names it and the address), an invalid status transition.
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
    /// Start at once even when `restart` is false (an instance with `restart: true` is always
    /// started at once). Default false.
    pub start: bool,
    /// Answer as soon as the instance is created and launched, without waiting for it to
    /// reach `running` or `error`. Default false (wait as [`Supervisor::start`] does).
    pub no_wait: bool,
    /// Traffic totals to start from (an imported instance keeps its figures). Default zero.
    pub traffic: TrafficTotals,
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
    /// The node this supervisor is, in a fleet (shown as every instance's `node`); `None`
    /// (the default) outside a fleet.
    pub node: Option<String>,
    /// Timings and sizes of every instance's tunnel (default [`TunnelOptions::default`]).
    pub tunnel: TunnelOptions,
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
            node: None,
            tunnel: TunnelOptions::default(),
        }
    }
}

/// Owns all instances. Cheap to clone (`Arc` inside).
#[derive(Clone)]
pub struct Supervisor {
    core: Arc<Core>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("instances", &self.core.all().len())
            .finish_non_exhaustive()
    }
}

impl Supervisor {
    /// Load every instance from `store` and start those with `restart: true` or left running by
    /// the operator (see the [module docs](self)); an instance that cannot start is in `error`.
    /// `shutdown` stops everything (within the grace period) when cancelled. Returns without
    /// waiting for the started instances to run. Errors: the store cannot be read.
    ///
    /// Cancel safety: safe; dropped while the store is read, it has started nothing (past that
    /// it does not wait).
    pub async fn open(
        store: Arc<dyn Store>,
        options: SupervisorOptions,
        shutdown: CancellationToken,
    ) -> Result<Supervisor> {
        let records = store.load().await?;
        let core = Arc::new(Core::new(store, options, &shutdown));
        for record in records {
            let m = Arc::new(Managed::new(
                record,
                &core.token,
                core.options.log_capacity,
                core.options.node.clone(),
            ));
            core.insert(m.clone());
            core.tracker.spawn(core.clone().pump_logs(m));
        }
        core.tracker.spawn(core.clone().ticker());
        // Shut down when the caller's token is cancelled. Not tracked (shutdown waits for the
        // tracker), and it holds the core only while it shuts it down, so that once a shutdown
        // finished and the handles are dropped, the store is released at once.
        let weak = Arc::downgrade(&core);
        let done = core.done.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    if let Some(core) = weak.upgrade() {
                        core.shutdown().await;
                    }
                }
                _ = done.cancelled() => {}
            }
        });
        {
            let _writes = core.writes().await;
            for m in core.all() {
                let (restart, desired) = {
                    let st = m.lock();
                    (st.record.restart, st.record.desired)
                };
                if (restart || desired == Desired::Running)
                    && let Err(e) = core.launch(&m)
                {
                    m.set_status(&core, InstanceStatus::Error, Some(e.to_string()), None);
                }
            }
        }
        tracing::debug!(instances = core.all().len(), "supervisor open");
        Ok(Supervisor { core })
    }

    /// Subscribe to events (see [`Events`] for lag handling).
    pub fn subscribe(&self) -> Events {
        Events::new(self.core.subscribe())
    }

    /// Validate and create an instance (stopped until started, unless `restart` or `start` is
    /// set, then started at once, with the same answer as [`start`](Self::start) unless
    /// `no_wait`; a start failure leaves it created, in `error`). Refuses (`Conflict`) a listen address another running instance
    /// uses.
    ///
    /// Cancel safety: safe; the creation runs as a task of the supervisor, so a dropped future
    /// only loses the answer (the instance is still created, and started if asked).
    pub async fn create(&self, req: CreateInstance) -> Result<InstanceInfo> {
        // As a task of the tracker, so that a dropped future never separates the store write
        // from the memory change after it (see `Instance::detached`).
        let this = self.clone();
        match self
            .core
            .tracker
            .spawn(async move { this.create_now(req).await })
            .await
        {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(SupervisorError::ShuttingDown),
        }
    }

    async fn create_now(&self, req: CreateInstance) -> Result<InstanceInfo> {
        let core = &self.core;
        core.check_open()?;
        let parsed = validate::parse_url(&req.url)?;
        if let Some(alias) = &req.alias {
            validate::alias(alias)?;
        }
        validate::meta(&req.meta)?;
        let launch = req.restart || req.start;
        let instance = {
            let _writes = core.writes().await;
            core.check_open()?;
            core.check_conflict("", &parsed.tunnel)?;
            let mut record = InstanceRecord::new(core.new_id(), req.url, now_ms());
            record.alias = req.alias;
            record.restart = req.restart;
            record.meta = req.meta;
            record.traffic = req.traffic;
            record.desired = if launch {
                Desired::Running
            } else {
                Desired::Stopped
            };
            core.store.put(&record).await?;
            let m = Arc::new(Managed::new(
                record,
                &core.token,
                core.options.log_capacity,
                core.options.node.clone(),
            ));
            core.insert(m.clone());
            core.tracker.spawn(core.clone().pump_logs(m.clone()));
            core.emit(Event::new(EventKind::Create, Some(m.info())));
            tracing::info!(parent: &m.span, "instance created");
            if launch && let Err(e) = core.launch(&m) {
                m.set_status(core, InstanceStatus::Error, Some(e.to_string()), None);
            }
            Instance::new(m, core.clone())
        };
        if launch && !req.no_wait {
            let mut status = instance.status();
            let wait = status.wait_for(|s| *s != InstanceStatus::Starting);
            let _ = tokio::time::timeout(core.options.start_wait, wait).await;
        }
        Ok(instance.info())
    }

    /// Take over an instance whose record another master wrote to the store for this node
    /// (fleet mode): add it with its id as stored, without writing, and start it if it has
    /// `restart: true` or is desired running. Refused (`Conflict`) if the id is already here.
    ///
    /// Cancel safety: safe; dropped while it waits for the supervisor's write lock, it has done
    /// nothing, and after that it does not wait.
    pub async fn adopt(&self, record: InstanceRecord) -> Result<InstanceInfo> {
        let core = &self.core;
        core.check_open()?;
        record.validate()?;
        let _writes = core.writes().await;
        core.check_open()?;
        if core.contains(&record.id) {
            return Err(SupervisorError::Conflict(format!(
                "instance {} exists already",
                record.id
            )));
        }
        let launch = record.restart || record.desired == Desired::Running;
        let m = Arc::new(Managed::new(
            record,
            &core.token,
            core.options.log_capacity,
            core.options.node.clone(),
        ));
        core.insert(m.clone());
        core.tracker.spawn(core.clone().pump_logs(m.clone()));
        core.emit(Event::new(EventKind::Create, Some(m.info())));
        tracing::info!(parent: &m.span, "instance adopted");
        if launch && let Err(e) = core.launch(&m) {
            m.set_status(core, InstanceStatus::Error, Some(e.to_string()), None);
        }
        Ok(m.info())
    }

    /// All instances, oldest first.
    pub fn list(&self) -> Vec<InstanceInfo> {
        self.core.all().iter().map(|m| m.info()).collect()
    }

    /// One instance.
    pub fn get(&self, id: &str) -> Result<InstanceInfo> {
        Ok(self.core.get(id)?.info())
    }

    /// A handle to one instance.
    pub fn instance(&self, id: &str) -> Result<Instance> {
        Ok(Instance::new(self.core.get(id)?, self.core.clone()))
    }

    /// Start a stopped or failed instance; see [`Instance::start`].
    ///
    /// Cancel safety: safe, as [`Instance::start`].
    pub async fn start(&self, id: &str) -> Result<InstanceInfo> {
        self.instance(id)?.start().await
    }

    /// Stop a running, starting or failed-and-retrying instance; see [`Instance::stop`].
    ///
    /// Cancel safety: safe, as [`Instance::stop`].
    pub async fn stop(&self, id: &str) -> Result<InstanceInfo> {
        self.instance(id)?.stop().await
    }

    /// Stop then start; see [`Instance::restart`].
    ///
    /// Cancel safety: safe, as [`Instance::restart`].
    pub async fn restart(&self, id: &str) -> Result<InstanceInfo> {
        self.instance(id)?.restart().await
    }

    /// Zero the instance's traffic counters, durably; see [`Instance::reset`].
    ///
    /// Cancel safety: safe, as [`Instance::reset`].
    pub async fn reset(&self, id: &str) -> Result<InstanceInfo> {
        self.instance(id)?.reset().await
    }

    /// Replace the URL (validated first) and restart if it was running; see
    /// [`Instance::replace_url`].
    ///
    /// Cancel safety: safe, as [`Instance::replace_url`].
    pub async fn replace_url(&self, id: &str, url: &str) -> Result<InstanceInfo> {
        self.instance(id)?.replace_url(url).await
    }

    /// Update alias, policy and metadata; see [`Instance::update`].
    ///
    /// Cancel safety: safe, as [`Instance::update`].
    pub async fn update(&self, id: &str, update: UpdateInstance) -> Result<InstanceInfo> {
        self.instance(id)?.update(update).await
    }

    /// Delete from the store, then stop (within the grace period).
    ///
    /// Cancel safety: safe; the deletion runs as a task of the supervisor, so a dropped future
    /// leaves it to finish in the background.
    pub async fn delete(&self, id: &str) -> Result<()> {
        self.instance(id)?.delete().await
    }

    /// The recent log lines of an instance, oldest first; see [`Instance::logs`].
    pub fn logs(&self, id: &str) -> Result<Vec<LogLine>> {
        Ok(self.instance(id)?.logs())
    }

    /// The stored traffic samples of an instance taken at or after `since_ms` (unix
    /// milliseconds), oldest first.
    ///
    /// Cancel safety: safe (a read).
    pub async fn history(&self, id: &str, since_ms: i64) -> Result<Vec<TrafficSample>> {
        self.core.get(id)?;
        Ok(self.core.store.history(id, since_ms).await?)
    }

    /// The store (the master keeps its API key hash in its settings).
    pub fn store(&self) -> Arc<dyn Store> {
        self.core.store.clone()
    }

    /// Stop every instance within the grace period, flush traffic totals, broadcast `shutdown`
    /// and close the event channel. Later operations fail with `ShuttingDown`. Idempotent;
    /// concurrent calls all return once it is done.
    ///
    /// Cancel safety: partly. The instances stop anyway (their token is cancelled at the first
    /// poll), but the final traffic flush, the `shutdown` event and the closing of the event
    /// channel happen only when a call runs to its end: call it again, or let the cancellation
    /// of the token given to [`open`](Self::open) finish it in the background.
    pub async fn shutdown(&self) {
        self.core.shutdown().await;
    }
}
