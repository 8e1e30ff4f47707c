//! [`Core`]: what a [`Supervisor`](super::Supervisor) and its [`Instance`](super::Instance)
//! handles share: the store, the instance map, the event channel, the shutdown token and the
//! task tracker; and the work that spans instances (conflicts, flushes, stats, shutdown).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use ring::rand::{SecureRandom, SystemRandom};
use tokio::sync::broadcast;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::state::{Managed, Run};
use super::validate::error_chain;
use super::{
    Event, EventKind, InstanceStatus, Result, SupervisorError, SupervisorOptions, now_ms, run,
};
use crate::store::{Store, TrafficTotals};
use crate::tunnel::TunnelConfig;

/// State shared by every handle of one supervisor.
pub(crate) struct Core {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) options: SupervisorOptions,
    /// Held while a store write and the in-memory change that follows it happen, so that writes
    /// (and the checks before them, such as listen conflicts) are one step each. A tokio mutex:
    /// it is held across the store call's `.await`, and across nothing else that waits. Lock
    /// order: `writes`, then `instances`, then one instance's state.
    writes: tokio::sync::Mutex<()>,
    /// Never held across `.await`.
    instances: Mutex<BTreeMap<String, Arc<Managed>>>,
    /// `None` once the supervisor has shut down. Never held across `.await`.
    events: Mutex<Option<broadcast::Sender<Event>>>,
    /// Cancelled by `shutdown` or by the caller's token (its parent).
    pub(crate) token: CancellationToken,
    /// Every task of the supervisor and its instances.
    pub(crate) tracker: TaskTracker,
    stopping: AtomicBool,
    shutdown_done: tokio::sync::OnceCell<()>,
    /// Cancelled once shutdown has finished.
    pub(crate) done: CancellationToken,
    next_attempt: AtomicU64,
    rng: SystemRandom,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("instances", &self.lock_instances().len())
            .field("stopping", &self.stopping.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Core {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        options: SupervisorOptions,
        shutdown: &CancellationToken,
    ) -> Self {
        let (tx, _) = broadcast::channel(options.event_capacity.max(1));
        Core {
            store,
            options,
            writes: tokio::sync::Mutex::new(()),
            instances: Mutex::new(BTreeMap::new()),
            events: Mutex::new(Some(tx)),
            token: shutdown.child_token(),
            tracker: TaskTracker::new(),
            stopping: AtomicBool::new(false),
            shutdown_done: tokio::sync::OnceCell::new(),
            done: CancellationToken::new(),
            next_attempt: AtomicU64::new(1),
            rng: SystemRandom::new(),
        }
    }

    pub(crate) async fn writes(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.writes.lock().await
    }

    fn lock_instances(&self) -> MutexGuard<'_, BTreeMap<String, Arc<Managed>>> {
        crate::sync::lock(&self.instances)
    }

    pub(crate) fn insert(&self, m: Arc<Managed>) {
        self.lock_instances().insert(m.id.clone(), m);
    }

    pub(crate) fn remove(&self, id: &str) {
        self.lock_instances().remove(id);
    }

    pub(crate) fn contains(&self, id: &str) -> bool {
        self.lock_instances().contains_key(id)
    }

    pub(crate) fn get(&self, id: &str) -> Result<Arc<Managed>> {
        self.lock_instances()
            .get(id)
            .cloned()
            .ok_or_else(|| SupervisorError::NotFound(id.to_owned()))
    }

    /// Every instance, oldest first.
    pub(crate) fn all(&self) -> Vec<Arc<Managed>> {
        let mut all: Vec<_> = self.lock_instances().values().cloned().collect();
        all.sort_by_cached_key(|m| (m.lock().record.created_at, m.id.clone()));
        all
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Refuse new work once shutdown has begun.
    pub(crate) fn check_open(&self) -> Result<()> {
        if self.is_stopping() {
            Err(SupervisorError::ShuttingDown)
        } else {
            Ok(())
        }
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Event> {
        match &*crate::sync::lock(&self.events) {
            Some(tx) => tx.subscribe(),
            // Shut down: a receiver whose sender is already gone.
            None => broadcast::channel(1).1,
        }
    }

    pub(crate) fn emit(&self, event: Event) {
        if let Some(tx) = &*crate::sync::lock(&self.events) {
            // No subscriber is not an error.
            let _ = tx.send(event);
        }
    }

    /// A fresh id: 8 random lower-case hex characters, not in use.
    pub(crate) fn new_id(&self) -> String {
        loop {
            let mut bytes = [0u8; 4];
            self.rng
                .fill(&mut bytes)
                .expect("the system random source failed");
            let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            if !self.contains(&id) {
                return id;
            }
        }
    }

    /// Refuse `config` for instance `me` when another running or starting instance listens on
    /// an overlapping endpoint (see [`super::conflict`]). Call with [`writes`](Self::writes) held.
    pub(crate) fn check_conflict(&self, me: &str, config: &TunnelConfig) -> Result<()> {
        let others: Vec<_> = self
            .lock_instances()
            .values()
            .filter(|m| m.id != me)
            .cloned()
            .collect();
        for other in others {
            let st = other.lock();
            if !matches!(
                st.status,
                InstanceStatus::Running | InstanceStatus::Starting
            ) {
                continue;
            }
            let Ok(theirs) = &st.parsed else { continue };
            if let Some((mine, used)) = super::conflict::first_conflict(config, &theirs.tunnel) {
                return Err(SupervisorError::Conflict(format!(
                    "listen address {mine} overlaps {used} of running instance {}",
                    other.id
                )));
            }
        }
        Ok(())
    }

    /// Check conflicts, mark `m` starting and spawn its run loop. Call with
    /// [`writes`](Self::writes) held and no run loop alive.
    pub(crate) fn launch(self: &Arc<Self>, m: &Arc<Managed>) -> Result<()> {
        let config = match &m.lock().parsed {
            Ok(p) => p.tunnel.clone(),
            Err(e) => {
                return Err(SupervisorError::Invalid {
                    field: "url".into(),
                    reason: e.clone(),
                });
            }
        };
        self.check_conflict(&m.id, &config)?;
        m.set_status(self, InstanceStatus::Starting, None, None);
        let token = m.token.child_token();
        let task = self
            .tracker
            .spawn(run::run(self.clone(), m.clone(), token.clone()).instrument(m.span.clone()));
        m.lock().run = Some(Run { token, task });
        Ok(())
    }

    /// A number for one tunnel attempt, unique in this supervisor.
    pub(crate) fn next_attempt(&self) -> u64 {
        self.next_attempt.fetch_add(1, Ordering::Relaxed)
    }

    /// Stop `m`'s run loop, if any, and wait for it within the grace period; then set `status`
    /// (if given). A run loop that outlives the grace keeps winding down in the background (the
    /// tunnel cuts its sessions after its own grace) and folds its counters when it ends.
    pub(crate) async fn halt(&self, m: &Managed, status: Option<InstanceStatus>) {
        let run = m.lock().run.take();
        if let Some(run) = run {
            run.token.cancel();
            if tokio::time::timeout(self.options.grace, run.task)
                .await
                .is_err()
            {
                tracing::warn!(parent: &m.span, grace = ?self.options.grace, "instance did not stop within the grace period");
            }
        }
        if let Some(status) = status {
            m.set_status(self, status, None, None);
        }
    }

    /// Write the cumulative totals of every instance whose totals differ from what the store
    /// holds (running ones, and any whose last write failed).
    pub(crate) async fn flush(&self) {
        let _writes = self.writes().await;
        let changed: Vec<_> = self
            .all()
            .into_iter()
            .filter_map(|m| {
                let total = {
                    let st = m.lock();
                    let total = st.traffic();
                    (total != st.written).then_some(total)?
                };
                Some((m, total))
            })
            .collect();
        if changed.is_empty() {
            return;
        }
        let totals: Vec<_> = changed.iter().map(|(m, t)| (m.id.clone(), *t)).collect();
        match self.store.set_traffic(&totals).await {
            Ok(()) => {
                for (m, total) in changed {
                    m.lock().written = total;
                }
            }
            Err(e) => tracing::warn!(error = %error_chain(&e), "cannot flush traffic totals"),
        }
    }

    /// The cumulative totals of every instance with a live tunnel.
    fn live_totals(&self) -> Vec<(String, TrafficTotals)> {
        self.all()
            .into_iter()
            .filter_map(|m| {
                let st = m.lock();
                (!st.live.is_empty()).then(|| (m.id.clone(), st.traffic()))
            })
            .collect()
    }

    /// Append a history sample for every instance with a live tunnel.
    async fn sample_history(&self) {
        let samples = self.live_totals();
        if samples.is_empty() {
            return;
        }
        let _writes = self.writes().await;
        if let Err(e) = self.store.append_history(now_ms(), &samples).await {
            tracing::warn!(error = %error_chain(&e), "cannot store traffic history");
        }
    }

    /// A `stats` event for every running instance.
    fn emit_stats(&self) {
        for m in self.all() {
            if m.status() == InstanceStatus::Running {
                self.emit(Event::new(EventKind::Stats, Some(m.info())));
            }
        }
    }

    /// Flush, sample and broadcast stats on their intervals until shutdown.
    pub(crate) async fn ticker(self: Arc<Self>) {
        let interval = |period| {
            let mut i = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            i.set_missed_tick_behavior(MissedTickBehavior::Delay);
            i
        };
        let mut flush = interval(self.options.flush_interval);
        let mut stats = interval(self.options.stats_interval);
        let mut history = interval(self.options.history_interval);
        loop {
            tokio::select! {
                _ = self.token.cancelled() => return,
                _ = flush.tick() => self.flush().await,
                _ = stats.tick() => self.emit_stats(),
                _ = history.tick() => self.sample_history().await,
            }
        }
    }

    /// Forward log lines of `m` as `log` events until it is deleted or shut down.
    pub(crate) async fn pump_logs(self: Arc<Self>, m: Arc<Managed>) {
        let mut seq = m.logs.since(0).1;
        loop {
            tokio::select! {
                _ = m.token.cancelled() => return,
                _ = m.logs.notify.notified() => {}
            }
            let (lines, next) = m.logs.since(seq);
            seq = next;
            if !lines.is_empty() {
                let mut event = Event::new(EventKind::Log, Some(m.info()));
                event.logs = Some(lines);
                self.emit(event);
            }
        }
    }

    /// Stop every instance within the grace period, flush the totals, broadcast `Shutdown` and
    /// close the event channel. Runs once; later calls wait for the first.
    pub(crate) async fn shutdown(self: &Arc<Self>) {
        self.shutdown_done
            .get_or_init(|| async {
                self.stopping.store(true, Ordering::Release);
                self.token.cancel();
                self.tracker.close();
                let grace = self.options.grace;
                if tokio::time::timeout(grace, self.tracker.wait())
                    .await
                    .is_err()
                {
                    tracing::warn!(
                        tasks = self.tracker.len(),
                        ?grace,
                        "supervisor tasks still running after the grace period"
                    );
                }
                for m in self.all() {
                    let was_active = m.lock().run.take().is_some();
                    if was_active || m.status() != InstanceStatus::Error {
                        m.set_status(self, InstanceStatus::Stopped, None, None);
                    }
                }
                self.flush().await;
                self.emit(Event::new(EventKind::Shutdown, None));
                crate::sync::lock(&self.events).take();
                self.done.cancel();
                tracing::debug!("supervisor shut down");
            })
            .await;
    }
}
