//! [`Instance`]: one managed tunnel (identity, status, live figures, lifecycle operations), and
//! the [`InstanceInfo`] snapshot the API shows.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::watch;

use super::core::Core;
use super::state::Managed;
use super::validate::{self, parse_url};
use super::{Event, EventKind, LogLine, Result, SupervisorError, UpdateInstance};
use crate::store::{Desired, Meta, TrafficTotals};
use crate::tunnel::LocalAddrs;

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

impl InstanceStatus {
    /// The status named `text` (as [`as_str`](Self::as_str) spells it), if it is one.
    pub fn from_text(text: &str) -> Option<Self> {
        [
            InstanceStatus::Stopped,
            InstanceStatus::Starting,
            InstanceStatus::Running,
            InstanceStatus::Error,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }

    /// `stopped`, `starting`, `running` or `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceStatus::Stopped => "stopped",
            InstanceStatus::Starting => "starting",
            InstanceStatus::Running => "running",
            InstanceStatus::Error => "error",
        }
    }
}

impl fmt::Display for InstanceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A snapshot of one instance, as the API shows it. Never contains the tunnel key.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct InstanceInfo {
    /// 8 lower-case hex characters; never changes.
    pub id: String,
    /// The node that runs it, in a fleet; `None` outside a fleet.
    pub node: Option<String>,
    /// Optional alias.
    pub alias: Option<String>,
    /// Server or client.
    #[serde(rename = "type")]
    pub kind: InstanceKind,
    /// Lifecycle status.
    pub status: InstanceStatus,
    /// Why it failed when `status` is `error`; while `starting` or (degraded) `running`, the
    /// last connection error of a client still trying to reach its server. `None` otherwise.
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
    /// Health and counters of each target of the running tunnel, in URL order (empty when
    /// stopped); the counters start again at every start and reset.
    pub targets: Vec<crate::tunnel::TargetSnapshot>,
}

impl InstanceInfo {
    /// A stopped instance with nothing else known: no alias, no restart policy, empty metadata,
    /// mode `pending`, zero figures and timestamps. For tests and mock supervisors; `url` should
    /// already be masked.
    pub fn new(id: impl Into<String>, kind: InstanceKind, url: impl Into<String>) -> Self {
        InstanceInfo {
            id: id.into(),
            node: None,
            alias: None,
            kind,
            status: InstanceStatus::Stopped,
            error: None,
            url: url.into(),
            config: String::new(),
            restart: false,
            meta: Meta::default(),
            mode: "pending".into(),
            connections: 0,
            tcp_connections: 0,
            udp_connections: 0,
            pool_size: 0,
            ping_ms: 0.0,
            uptime: 0,
            traffic: TrafficTotals::ZERO,
            created_at: 0,
            updated_at: 0,
            targets: Vec::new(),
        }
    }
}

impl InstanceInfo {
    /// Check an instance URL as [`Supervisor::create`](super::Supervisor::create) does
    /// (`Invalid` naming `url`), for a master that writes it for another node of a fleet.
    pub fn check_url(url: &str) -> Result<()> {
        super::validate::parse_url(url).map(|_| ())
    }

    /// The snapshot of an instance another node of the fleet runs, from its stored `record`
    /// and the `status` and `error` its node last reported (live figures are zero; traffic is
    /// what the node last wrote). The URL is masked as always.
    pub fn remote(
        record: &crate::store::InstanceRecord,
        node: &str,
        status: InstanceStatus,
        error: Option<String>,
    ) -> Self {
        let parsed = super::validate::parse_url(&record.url).ok();
        let kind = parsed
            .as_ref()
            .map_or_else(|| super::state::kind_of_url(&record.url), |p| p.kind);
        let mut info = InstanceInfo::new(
            record.id.clone(),
            kind,
            super::validate::mask_url(&record.url),
        );
        info.node = Some(node.to_owned());
        info.alias = record.alias.clone();
        info.status = status;
        info.error = error;
        info.config = parsed.map(|p| p.canonical).unwrap_or_default();
        info.restart = record.restart;
        info.meta = record.meta.clone();
        info.traffic = record.traffic;
        info.created_at = record.created_at;
        info.updated_at = record.updated_at;
        info
    }
}

/// A handle to one instance of a [`Supervisor`](super::Supervisor). Cheap to clone.
///
/// Every operation here is the same as the supervisor's operation of the same name on this id:
/// it is written to the store before it returns, and fails with
/// [`SupervisorError::NotFound`] once the instance was deleted.
#[derive(Clone)]
pub struct Instance {
    m: Arc<Managed>,
    core: Arc<Core>,
}

impl fmt::Debug for Instance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Instance")
            .field("id", &self.m.id)
            .field("status", &self.m.status())
            .finish_non_exhaustive()
    }
}

impl Instance {
    pub(crate) fn new(m: Arc<Managed>, core: Arc<Core>) -> Self {
        Instance { m, core }
    }

    /// The id: 8 lower-case hex characters; never changes.
    pub fn id(&self) -> &str {
        &self.m.id
    }

    /// Server or client (follows the URL).
    pub fn kind(&self) -> InstanceKind {
        self.m.lock().kind()
    }

    /// A snapshot: identity, status, live figures, cumulative traffic.
    pub fn info(&self) -> InstanceInfo {
        self.m.info()
    }

    /// The status, as a `watch` receiver (e.g. `wait_for(|s| *s == InstanceStatus::Running)`).
    pub fn status(&self) -> watch::Receiver<InstanceStatus> {
        self.m.subscribe_status()
    }

    /// The addresses the current tunnel has bound (all `None` when it is not running): how to
    /// find the ports of an instance configured with port 0.
    pub fn local_addrs(&self) -> LocalAddrs {
        self.m.local_addrs()
    }

    /// The recent log lines, oldest first (at most
    /// [`log_capacity`](super::SupervisorOptions::log_capacity); empty unless a
    /// [`LogCapture`](super::LogCapture) layer is installed).
    pub fn logs(&self) -> Vec<LogLine> {
        self.m.logs.snapshot()
    }

    /// Fail if the supervisor is shutting down or the instance was deleted.
    fn check(&self) -> Result<()> {
        self.core.check_open()?;
        if self.m.is_deleted() {
            return Err(SupervisorError::NotFound(self.m.id.clone()));
        }
        Ok(())
    }

    /// Start a stopped or failed instance; answers once it runs or fails, or after
    /// [`start_wait`](super::SupervisorOptions::start_wait) with `starting`. Refuses (`Conflict`)
    /// an instance already running or starting, or one whose listen address another running
    /// instance uses. A pending automatic restart is replaced by this start. Records that the
    /// operator wants it running.
    ///
    /// Cancel safety: safe; the start runs as a task of the supervisor, so a dropped future
    /// only loses the answer.
    pub async fn start(&self) -> Result<InstanceInfo> {
        self.detached(|i| async move { i.launch(false).await })
            .await
    }

    /// Stop (if it runs) and start again, with the same answer as [`start`](Self::start). A
    /// stopped instance is simply started.
    ///
    /// Cancel safety: safe; the restart runs as a task of the supervisor, so a dropped future
    /// only loses the answer.
    pub async fn restart(&self) -> Result<InstanceInfo> {
        self.detached(|i| async move { i.launch(true).await }).await
    }

    /// Run one operation as a task of the supervisor's tracker and wait for it. The caller may
    /// drop the returned future (an HTTP client that went away): the operation still runs to
    /// completion, so a store write is never separated from the memory change after it, and
    /// shutdown waits for it. This is what makes the operations below cancel safe.
    async fn detached<T, F>(&self, op: impl FnOnce(Instance) -> F) -> Result<T>
    where
        F: std::future::Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        match self.core.tracker.spawn(op(self.clone())).await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // The runtime is shutting down.
            Err(_) => Err(SupervisorError::ShuttingDown),
        }
    }

    async fn launch(&self, restart: bool) -> Result<InstanceInfo> {
        self.check()?;
        let ops = self.m.ops.lock().await;
        self.check()?;
        let status = self.m.status();
        if !restart && matches!(status, InstanceStatus::Running | InstanceStatus::Starting) {
            return Err(SupervisorError::Conflict(format!(
                "instance {} is already {status}",
                self.m.id
            )));
        }
        {
            let _writes = self.core.writes().await;
            let config = self.config()?;
            self.core.check_conflict(&self.m.id, &config)?;
            let record = self.m.record_with(|r| r.desired = Desired::Running);
            self.core.store.put(&record).await?;
            self.m.apply(record, None);
        }
        // A running tunnel (restart) or a pending automatic restart.
        self.core.halt(&self.m, None).await;
        self.relaunch().await?;
        drop(ops);
        Ok(self.settle().await)
    }

    /// Launch a run loop now (none is alive); a refusal leaves the instance in `error`.
    async fn relaunch(&self) -> Result<()> {
        let _writes = self.core.writes().await;
        self.core.check_open()?;
        self.core.launch(&self.m).inspect_err(|e| {
            self.m
                .set_status(&self.core, InstanceStatus::Error, Some(e.to_string()), None);
        })
    }

    fn config(&self) -> Result<crate::tunnel::TunnelConfig> {
        match &self.m.lock().parsed {
            Ok(p) => Ok(p.tunnel.clone()),
            Err(e) => Err(SupervisorError::Invalid {
                field: "url".into(),
                reason: e.clone(),
            }),
        }
    }

    /// Wait until the instance leaves `starting`, at most `start_wait`; the snapshot then.
    async fn settle(&self) -> InstanceInfo {
        let mut status = self.m.subscribe_status();
        let wait = status.wait_for(|s| *s != InstanceStatus::Starting);
        let _ = tokio::time::timeout(self.core.options.start_wait, wait).await;
        self.m.info()
    }

    /// Stop a running, starting or failed instance (cancelling a pending automatic restart);
    /// answers once its tunnel has stopped (at most the grace period). Refuses (`Conflict`) an
    /// instance already stopped. Records that the operator wants it stopped.
    ///
    /// Cancel safety: safe; the stop runs as a task of the supervisor, so a dropped future
    /// leaves it to finish in the background.
    pub async fn stop(&self) -> Result<InstanceInfo> {
        self.detached(|i| async move { i.stop_now().await }).await
    }

    async fn stop_now(&self) -> Result<InstanceInfo> {
        self.check()?;
        let _ops = self.m.ops.lock().await;
        self.check()?;
        let stopped = {
            let st = self.m.lock();
            st.status == InstanceStatus::Stopped && !st.is_active()
        };
        if stopped {
            return Err(SupervisorError::Conflict(format!(
                "instance {} is already stopped",
                self.m.id
            )));
        }
        {
            let _writes = self.core.writes().await;
            let record = self.m.record_with(|r| r.desired = Desired::Stopped);
            self.core.store.put(&record).await?;
            self.m.apply(record, None);
        }
        self.core.halt(&self.m, Some(InstanceStatus::Stopped)).await;
        Ok(self.m.info())
    }

    /// Zero the cumulative traffic, in the store and in the running tunnel.
    ///
    /// Cancel safety: safe; the reset runs as a task of the supervisor, so a dropped future
    /// leaves it to finish in the background.
    pub async fn reset(&self) -> Result<InstanceInfo> {
        self.detached(|i| async move { i.reset_now().await }).await
    }

    async fn reset_now(&self) -> Result<InstanceInfo> {
        self.check()?;
        let info = {
            let _writes = self.core.writes().await;
            self.check()?;
            self.core.store.reset_traffic(&self.m.id).await?;
            // An all-zero history sample marks the reset, so that readers of the history
            // count from zero here instead of guessing whether a drop was a reset.
            if let Err(e) = self
                .core
                .store
                .append_history(super::now_ms(), &[(self.m.id.clone(), TrafficTotals::ZERO)])
                .await
            {
                tracing::warn!(error = %super::validate::error_chain(&e), "cannot mark the reset in the traffic history");
            }
            let mut st = self.m.lock();
            st.record.traffic = TrafficTotals::ZERO;
            st.written = TrafficTotals::ZERO;
            for (_, tunnel) in &st.live {
                tunnel.reset_traffic();
            }
            self.m.info_locked(&st)
        };
        self.core
            .emit(Event::new(EventKind::Update, Some(info.clone())));
        Ok(info)
    }

    /// Replace the URL (validated first; `Invalid` with field `url`). An instance that is
    /// running, starting or waiting to restart is restarted with the new configuration, with
    /// the same answer as [`start`](Self::start); others keep their status (an `error` from the
    /// old URL becomes `stopped`).
    ///
    /// Cancel safety: safe; a dropped future leaves the change (and the restart) to finish in
    /// the background, as a task of the supervisor.
    pub async fn replace_url(&self, url: &str) -> Result<InstanceInfo> {
        // A URL sent back with the masked key (an edit in a frontend) keeps the stored key.
        let url = validate::unmask_url(url, &self.m.lock().record.url);
        self.detached(|i| async move { i.replace_url_now(&url).await })
            .await
    }

    async fn replace_url_now(&self, url: &str) -> Result<InstanceInfo> {
        let parsed = parse_url(url)?;
        self.check()?;
        let ops = self.m.ops.lock().await;
        self.check()?;
        let active = self.m.lock().is_active();
        let info = {
            let _writes = self.core.writes().await;
            if active {
                self.core.check_conflict(&self.m.id, &parsed.tunnel)?;
            }
            let record = self.m.record_with(|r| r.url = url.to_owned());
            self.core.store.put(&record).await?;
            self.m.apply(record, Some(parsed))
        };
        self.core
            .emit(Event::new(EventKind::Update, Some(info.clone())));
        if !active {
            if info.status == InstanceStatus::Error {
                self.m
                    .set_status(&self.core, InstanceStatus::Stopped, None, None);
            }
            return Ok(self.m.info());
        }
        self.core.halt(&self.m, None).await;
        self.relaunch().await?;
        drop(ops);
        Ok(self.settle().await)
    }

    /// Change alias, restart policy and metadata (validated completely first). A new policy
    /// applies from the next failure on.
    ///
    /// Cancel safety: safe; the update runs as a task of the supervisor, so a dropped future
    /// leaves it to finish in the background.
    pub async fn update(&self, update: UpdateInstance) -> Result<InstanceInfo> {
        self.detached(|i| async move { i.update_now(update).await })
            .await
    }

    async fn update_now(&self, update: UpdateInstance) -> Result<InstanceInfo> {
        if let Some(Some(alias)) = &update.alias {
            validate::alias(alias)?;
        }
        if let Some(meta) = &update.meta {
            validate::meta(meta)?;
        }
        self.check()?;
        let info = {
            let _writes = self.core.writes().await;
            self.check()?;
            let record = self.m.record_with(|r| {
                if let Some(alias) = update.alias {
                    r.alias = alias;
                }
                if let Some(restart) = update.restart {
                    r.restart = restart;
                }
                if let Some(meta) = update.meta {
                    r.meta = meta;
                }
            });
            self.core.store.put(&record).await?;
            self.m.apply(record, None)
        };
        self.core
            .emit(Event::new(EventKind::Update, Some(info.clone())));
        Ok(info)
    }

    /// Remove from the store and the supervisor, then stop. Cancel safe: a dropped future
    /// leaves the deletion to finish in the background.
    pub(crate) async fn delete(&self) -> Result<()> {
        self.detached(|i| async move { i.delete_now().await }).await
    }

    async fn delete_now(&self) -> Result<()> {
        self.check()?;
        let _ops = self.m.ops.lock().await;
        self.check()?;
        {
            let _writes = self.core.writes().await;
            self.core.store.delete(&self.m.id).await?;
            self.core.remove(&self.m.id);
            self.m.mark_deleted();
        }
        self.core.halt(&self.m, Some(InstanceStatus::Stopped)).await;
        // Ends the log pump.
        self.m.token.cancel();
        self.core
            .emit(Event::new(EventKind::Delete, Some(self.m.info())));
        Ok(())
    }
}
