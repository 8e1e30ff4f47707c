//! [`Managed`]: the supervisor's own record of one instance: its stored record, parsed config,
//! status, and the tunnel runs whose counters are not yet folded into the stored totals.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::logs::{LogRing, instance_span};
use super::validate::{Parsed, mask_url, parse_url};
use super::{Core, Event, EventKind, InstanceInfo, InstanceKind, InstanceStatus, now_ms};
use crate::config::LogLevel;
use crate::stats::StatsSnapshot;
use crate::store::{InstanceRecord, TrafficTotals};
use crate::tunnel::{LocalAddrs, Mode, TunnelHandle};

/// One instance under management. Shared by the supervisor's map, [`Instance`](super::Instance)
/// handles and the instance's tasks.
#[derive(Debug)]
pub(crate) struct Managed {
    pub(crate) id: String,
    /// The node that runs it (the supervisor's `node` option), shown in its info.
    pub(crate) node: Option<String>,
    /// The span every task of this instance runs in (see [`super::logs`]).
    pub(crate) span: tracing::Span,
    pub(crate) logs: Arc<LogRing>,
    /// Cancelled when the instance is deleted (or the supervisor shuts down); parent of every
    /// run token.
    pub(crate) token: CancellationToken,
    /// Serializes the lifecycle operations (start, stop, restart, URL change, delete) of this
    /// instance; held across their `.await`s.
    pub(crate) ops: tokio::sync::Mutex<()>,
    pub(crate) deleted: AtomicBool,
    status_tx: watch::Sender<InstanceStatus>,
    /// Never held across `.await`.
    state: Mutex<State>,
}

/// What may change about an instance.
#[derive(Debug)]
pub(crate) struct State {
    /// As stored, except `traffic`, which holds only the folded totals: the live counters of
    /// `live` runs come on top.
    pub(crate) record: InstanceRecord,
    /// `Err` when a stored URL no longer parses (the instance cannot start).
    pub(crate) parsed: Result<Parsed, String>,
    pub(crate) status: InstanceStatus,
    pub(crate) error: Option<String>,
    /// The run loop, while it may still start or hold a tunnel.
    pub(crate) run: Option<Run>,
    /// Tunnels whose counters are not folded into `record.traffic` yet, by attempt number.
    pub(crate) live: Vec<(u64, TunnelHandle)>,
    /// The cumulative traffic the store holds (what the last successful write said).
    pub(crate) written: TrafficTotals,
    /// The last data-flow mode seen.
    pub(crate) mode: Mode,
    /// When the current attempt started.
    pub(crate) started: Option<Instant>,
}

/// A run loop of an instance (see [`super::run`]).
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) token: CancellationToken,
    pub(crate) task: JoinHandle<()>,
}

/// The traffic part of a tunnel's counters.
pub(crate) fn traffic_of(s: &StatsSnapshot) -> TrafficTotals {
    TrafficTotals {
        tcp_in: s.tcp_rx,
        tcp_out: s.tcp_tx,
        udp_in: s.udp_rx,
        udp_out: s.udp_tx,
    }
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Pending => "pending",
        Mode::Reverse => "reverse",
        Mode::Forward => "forward",
        Mode::SingleEnd => "single_end",
    }
}

pub(crate) fn kind_of_url(url: &str) -> InstanceKind {
    if url.to_ascii_lowercase().starts_with("client:") {
        InstanceKind::Client
    } else {
        InstanceKind::Server
    }
}

impl State {
    /// Stored totals plus the live counters.
    pub(crate) fn traffic(&self) -> TrafficTotals {
        self.live
            .iter()
            .fold(self.record.traffic, |t, (_, h)| t + traffic_of(&h.stats()))
    }

    pub(crate) fn kind(&self) -> InstanceKind {
        match &self.parsed {
            Ok(p) => p.kind,
            Err(_) => kind_of_url(&self.record.url),
        }
    }

    /// Whether a run loop is still alive (running, starting, or waiting to restart).
    pub(crate) fn is_active(&self) -> bool {
        self.run.as_ref().is_some_and(|r| !r.task.is_finished())
    }

    /// The newest live tunnel.
    pub(crate) fn tunnel(&self) -> Option<&TunnelHandle> {
        self.live.last().map(|(_, h)| h)
    }
}

impl Managed {
    /// An instance as loaded or created; stopped.
    pub(crate) fn new(
        record: InstanceRecord,
        parent: &CancellationToken,
        log_capacity: usize,
        node: Option<String>,
    ) -> Self {
        let parsed = parse_url(&record.url).map_err(|e| e.to_string());
        let level = parsed
            .as_ref()
            .map_or(LogLevel::Info, |p| p.tunnel.params().log);
        let logs = Arc::new(LogRing::new(log_capacity, level));
        let span = instance_span(&record.id, &logs);
        let error = parsed.as_ref().err().map(|e| format!("stored {e}"));
        let status = if error.is_some() {
            InstanceStatus::Error
        } else {
            InstanceStatus::Stopped
        };
        Managed {
            id: record.id.clone(),
            node,
            span,
            logs,
            token: parent.child_token(),
            ops: tokio::sync::Mutex::new(()),
            deleted: AtomicBool::new(false),
            status_tx: watch::Sender::new(status),
            state: Mutex::new(State {
                written: record.traffic,
                record,
                parsed,
                status,
                error,
                run: None,
                live: Vec::new(),
                mode: Mode::Pending,
                started: None,
            }),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // Every change to `State` is a plain assignment, so a poisoned lock holds whole values.
        crate::sync::lock(&self.state)
    }

    pub(crate) fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    pub(crate) fn mark_deleted(&self) {
        self.deleted.store(true, Ordering::Release);
    }

    pub(crate) fn status(&self) -> InstanceStatus {
        *self.status_tx.borrow()
    }

    pub(crate) fn subscribe_status(&self) -> watch::Receiver<InstanceStatus> {
        self.status_tx.subscribe()
    }

    pub(crate) fn info(&self) -> InstanceInfo {
        self.info_locked(&self.lock())
    }

    pub(crate) fn local_addrs(&self) -> LocalAddrs {
        self.lock()
            .tunnel()
            .map(TunnelHandle::local_addrs)
            .unwrap_or_default()
    }

    pub(crate) fn info_locked(&self, st: &State) -> InstanceInfo {
        let stats = st.tunnel().map(TunnelHandle::stats).unwrap_or_default();
        let mode = st.tunnel().map_or(st.mode, TunnelHandle::mode);
        let active = matches!(
            st.status,
            InstanceStatus::Running | InstanceStatus::Starting
        );
        let uptime = match (active, st.started) {
            (true, Some(t)) => t.elapsed().as_secs(),
            _ => 0,
        };
        InstanceInfo {
            id: self.id.clone(),
            node: self.node.clone(),
            alias: st.record.alias.clone(),
            kind: st.kind(),
            status: st.status,
            error: st.error.clone(),
            url: mask_url(&st.record.url),
            config: st
                .parsed
                .as_ref()
                .map(|p| p.canonical.clone())
                .unwrap_or_default(),
            restart: st.record.restart,
            meta: st.record.meta.clone(),
            mode: mode_name(mode).to_owned(),
            connections: stats.tcp_active + stats.udp_active,
            tcp_connections: stats.tcp_active,
            udp_connections: stats.udp_active,
            pool_size: stats.pool_idle,
            ping_ms: stats.rtt_us as f64 / 1000.0,
            uptime,
            traffic: st.traffic(),
            created_at: st.record.created_at,
            updated_at: st.record.updated_at,
            targets: st
                .tunnel()
                .filter(|_| active)
                .map(TunnelHandle::targets)
                .unwrap_or_default(),
        }
    }

    /// Set the status and error; broadcast an `update` if they changed. `run`: when given and
    /// cancelled, the call is from a run loop being stopped and changes nothing (whoever stopped
    /// it sets the final status).
    pub(crate) fn set_status(
        &self,
        core: &Core,
        status: InstanceStatus,
        error: Option<String>,
        run: Option<&CancellationToken>,
    ) {
        let info = {
            let mut st = self.lock();
            if run.is_some_and(CancellationToken::is_cancelled)
                || (st.status == status && st.error == error)
            {
                return;
            }
            st.status = status;
            st.error = error;
            if matches!(status, InstanceStatus::Stopped | InstanceStatus::Error) {
                st.started = None;
            }
            self.status_tx.send_replace(status);
            self.info_locked(&st)
        };
        core.emit(Event::new(EventKind::Update, Some(info)));
    }

    /// Fold the counters of attempt `attempt` into the stored totals and write them. Whatever
    /// the store says, the counters stay in memory (the tunnel is gone); a failed write is
    /// retried by the next flush.
    pub(crate) async fn fold(&self, core: &Core, attempt: u64) {
        let _writes = core.writes().await;
        let total = {
            let mut st = self.lock();
            let Some(i) = st.live.iter().position(|(n, _)| *n == attempt) else {
                return;
            };
            let (_, handle) = st.live.remove(i);
            st.mode = handle.mode();
            st.record.traffic += traffic_of(&handle.stats());
            st.traffic()
        };
        match core.store.set_traffic(&[(self.id.clone(), total)]).await {
            Ok(()) => self.lock().written = total,
            Err(e) => {
                tracing::warn!(parent: &self.span, error = %super::validate::error_chain(&e), "cannot store traffic totals; retrying at the next flush");
            }
        }
    }

    /// A copy of the record as it should be stored: the given change applied, `updated_at` now
    /// and the cumulative traffic.
    pub(crate) fn record_with(&self, change: impl FnOnce(&mut InstanceRecord)) -> InstanceRecord {
        let st = self.lock();
        let mut record = st.record.clone();
        change(&mut record);
        record.updated_at = now_ms().max(st.record.updated_at);
        record.traffic = st.traffic();
        record
    }

    /// Take a record written by [`record_with`](Self::record_with) as the new state (keeping
    /// the folded traffic) and return the snapshot after it.
    pub(crate) fn apply(&self, mut record: InstanceRecord, parsed: Option<Parsed>) -> InstanceInfo {
        let mut st = self.lock();
        st.written = record.traffic;
        record.traffic = st.record.traffic;
        st.record = record;
        if let Some(p) = parsed {
            self.logs.set_level(p.tunnel.params().log);
            st.parsed = Ok(p);
        }
        self.info_locked(&st)
    }
}
