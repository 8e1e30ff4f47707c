//! Fleet mode (`store=postgres://...&node=NAME`): this master is one node of a fleet sharing
//! one PostgreSQL database (see `docs/fleet.md`).
//!
//! One task per master ([`spawn`]) runs a *pass* every [`Fleet::interval`] and whenever the
//! database notifies this node: heartbeat, reconcile (adopt the instances other masters created
//! for this node, apply their pending changes through the supervisor), report the status of
//! the local instances, and refresh the cached view of the other nodes' instances (only the rows
//! written since the previous pass; all of them every [`FULL_REFRESH_EVERY`]). What the refresh
//! sees change becomes events ([`Fleet::subscribe`]) that every event stream forwards. The
//! handlers read that cache (`list`, `get`, metrics, export) and write changes for another
//! node's instance into the database ([`change_remote`], [`create_remote`]); they never wait
//! for the owner.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nodepass_core::Supervisor;
use nodepass_core::store::postgres::{FleetDelta, FleetInstance, NodeInfo, Spec, is_down};
use nodepass_core::store::{
    Desired, InstanceRecord, PostgresStore, Store, StoreError, TrafficTotals,
};
use nodepass_core::supervisor::{
    CreateInstance, Event, EventKind, InstanceInfo, InstanceStatus, SupervisorError, UpdateInstance,
};
use ring::rand::{SecureRandom, SystemRandom};
use serde::Serialize;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use crate::error::HttpError;
use crate::response;
use crate::router::{Ctx, Reply};
use crate::state::State;
use crate::sync::lock;

/// The environment variable that sets the fleet interval (heartbeat, periodic reconcile and
/// traffic flush), e.g. `500ms`; default [`DEFAULT_INTERVAL`].
pub const FLEET_INTERVAL_ENV: &str = "NODEPASS_FLEET_INTERVAL";

/// The default fleet interval: 5 s.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

/// The refresh reads every instance at least this often (and at the first pass); the passes
/// in between read only the rows written since the previous one. Well under
/// [`nodepass_core::store::postgres::TOMBSTONE_RETENTION`], so that no deletion is missed.
pub(crate) const FULL_REFRESH_EVERY: Duration = Duration::from_secs(600);

/// Events of other nodes' instances buffered per subscriber before it lags (then it gets
/// `resync`, as for the supervisor's events).
const EVENT_CAPACITY: usize = 1024;

/// The cached view of the other nodes' instances.
#[derive(Default)]
struct View {
    /// By id.
    remote: HashMap<String, FleetInstance>,
    /// The watermark of the last refresh, for the next incremental one.
    watermark: Option<i64>,
    /// When the last full refresh was read.
    full_at: Option<Instant>,
}

/// What a fleet master keeps about the fleet.
pub(crate) struct Fleet {
    /// The shared store, scoped to this node.
    pub store: Arc<PostgresStore>,
    /// Heartbeat and periodic reconcile interval.
    pub interval: Duration,
    /// This master's API base URL, as registered.
    pub api: String,
    /// When this master started (unix ms).
    pub started_ms: i64,
    /// The other nodes' instances, as of the last pass. Never held across `.await`.
    view: Mutex<View>,
    /// Events of the other nodes' instances, as the refresh sees them change.
    events: broadcast::Sender<Event>,
}

impl Fleet {
    pub(crate) fn new(store: Arc<PostgresStore>, interval: Duration, started_ms: i64) -> Self {
        Fleet {
            store,
            interval,
            api: String::new(),
            started_ms,
            view: Mutex::new(View::default()),
            events: broadcast::channel(EVENT_CAPACITY).0,
        }
    }

    /// This node's name.
    pub(crate) fn node(&self) -> &str {
        self.store.node()
    }

    fn view(&self) -> std::sync::MutexGuard<'_, View> {
        lock(&self.view)
    }

    fn remote(&self) -> Vec<FleetInstance> {
        self.view().remote.values().cloned().collect()
    }

    fn remote_one(&self, id: &str) -> Option<FleetInstance> {
        self.view().remote.get(id).cloned()
    }

    /// Events of the other nodes' instances: `create`, `update` (status, error, settings),
    /// `stats` (traffic only) and `delete`, as the fleet refresh sees them change.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    fn emit(&self, kind: EventKind, row: &FleetInstance) {
        let _ = self.events.send(Event::new(kind, Some(remote_info(row))));
    }

    /// Put a row this master just wrote into the cache (so that it shows before the next pass);
    /// a deleted one is kept until its owner deletes it. A new one is announced (`create`).
    fn remember(&self, row: FleetInstance) {
        let created = {
            let mut view = self.view();
            view.remote
                .insert(row.record.id.clone(), row.clone())
                .is_none()
        };
        if created {
            self.emit(EventKind::Create, &row);
        }
    }

    /// One pass: heartbeat, reconcile, report, refresh. A database error ends the pass (the
    /// next one tries again); the instances keep running as they are.
    pub(crate) async fn pass(&self, supervisor: &Supervisor) -> Result<(), StoreError> {
        self.store
            .heartbeat(&self.api, env!("CARGO_PKG_VERSION"), self.started_ms)
            .await?;
        self.reconcile(supervisor).await?;
        let statuses: Vec<_> = supervisor
            .list()
            .into_iter()
            .map(|i| (i.id, i.status.as_str().to_owned(), i.error))
            .collect();
        self.store.report_status(&statuses).await?;
        self.refresh().await
    }

    /// Refresh the view of the other nodes' instances: only the rows written since the last
    /// refresh, or every row at the first pass and every [`FULL_REFRESH_EVERY`]; announce what
    /// changed (nothing at the first pass: that is the starting point).
    async fn refresh(&self) -> Result<(), StoreError> {
        let since = {
            let view = self.view();
            view.watermark.filter(|_| {
                view.full_at
                    .is_some_and(|at| at.elapsed() < FULL_REFRESH_EVERY)
            })
        };
        let delta = self.store.fleet_since(since).await?;
        let events = self.absorb(delta);
        for (kind, row) in &events {
            self.emit(*kind, row);
        }
        Ok(())
    }

    /// Apply a refresh to the view; the events it makes, in order.
    fn absorb(&self, delta: FleetDelta) -> Vec<(EventKind, FleetInstance)> {
        let me = self.node().to_owned();
        let mut view = self.view();
        let first = view.full_at.is_none();
        let mut events = Vec::new();
        if delta.full {
            let mut fresh: HashMap<String, FleetInstance> = delta
                .instances
                .into_iter()
                .filter(|f| f.node != me)
                .map(|f| (f.record.id.clone(), f))
                .collect();
            let mut gone: Vec<FleetInstance> = view
                .remote
                .values()
                .filter(|old| !fresh.contains_key(&old.record.id))
                .cloned()
                .collect();
            gone.sort_by(|a, b| a.record.id.cmp(&b.record.id));
            let mut rows: Vec<&FleetInstance> = fresh.values().collect();
            rows.sort_by(|a, b| {
                (a.record.created_at, &a.record.id).cmp(&(b.record.created_at, &b.record.id))
            });
            for row in rows {
                if let Some(kind) = change_kind(view.remote.get(&row.record.id), row) {
                    events.push((kind, row.clone()));
                }
            }
            events.extend(gone.into_iter().map(|row| (EventKind::Delete, row)));
            std::mem::swap(&mut view.remote, &mut fresh);
            view.full_at = Some(Instant::now());
        } else {
            for (id, node) in &delta.deleted {
                if *node != me
                    && let Some(old) = view.remote.remove(id)
                {
                    events.push((EventKind::Delete, old));
                }
            }
            for row in delta.instances.into_iter().filter(|f| f.node != me) {
                if let Some(kind) = change_kind(view.remote.get(&row.record.id), &row) {
                    events.push((kind, row.clone()));
                }
                view.remote.insert(row.record.id.clone(), row);
            }
        }
        view.watermark = Some(delta.watermark);
        if first {
            events.clear();
        }
        events
    }

    /// Adopt this node's new instances and apply pending changes.
    async fn reconcile(&self, supervisor: &Supervisor) -> Result<(), StoreError> {
        for row in self.store.owned().await? {
            let id = row.record.id.clone();
            let deleting = row.pending.as_ref().is_some_and(|s| s.delete);
            if supervisor.get(&id).is_err() {
                if deleting {
                    self.store.delete(&id).await?;
                    continue;
                }
                if let Err(e) = supervisor.adopt(row.record.clone()).await {
                    tracing::warn!(instance = %id, error = %e, "cannot adopt instance");
                    continue;
                }
            }
            let Some(spec) = row.pending else { continue };
            // Taken before it is applied: a change written meanwhile starts a fresh one (the
            // next pass applies it) and a local change from now on is newer than this one. If
            // one was merged in since the read, the next pass (woken by it) reads it again.
            // `row.pending` itself is not applied here: the taken changes are, below.
            let _ = spec;
            self.store.take_spec(&id, row.spec_version).await?;
        }
        // Every taken change, including one an earlier run of this node took and did not
        // finish (it stopped, or lost the database, while applying): applied at least once.
        for (id, spec) in self.store.taken_specs().await? {
            match apply(supervisor, &id, spec).await {
                // Left taken: applied again at the next pass, once the database is back.
                Err(SupervisorError::Store(e @ StoreError::Unavailable { .. })) => return Err(e),
                Err(e) => tracing::warn!(instance = %id, error = %e, "desired state not applied"),
                Ok(()) => {}
            }
            self.store.finish_spec(&id).await?;
        }
        Ok(())
    }
}

/// The event a refresh makes of `new` (`old` as cached before): `create` for a new one,
/// `update` when its status, error or settings changed, `stats` when only its traffic did.
fn change_kind(old: Option<&FleetInstance>, new: &FleetInstance) -> Option<EventKind> {
    let Some(old) = old else {
        return Some(EventKind::Create);
    };
    let settings = |r: &InstanceRecord| InstanceRecord {
        traffic: TrafficTotals::ZERO,
        ..r.clone()
    };
    if old.status != new.status
        || old.error != new.error
        || settings(&old.record) != settings(&new.record)
    {
        Some(EventKind::Update)
    } else if old.record.traffic != new.record.traffic {
        Some(EventKind::Stats)
    } else {
        None
    }
}

/// Apply one pending change through the supervisor (which writes the store as usual).
async fn apply(supervisor: &Supervisor, id: &str, spec: Spec) -> Result<(), SupervisorError> {
    if spec.delete {
        return supervisor.delete(id).await;
    }
    if let Some(url) = &spec.url {
        supervisor.replace_url(id, url).await?;
    }
    let update = UpdateInstance {
        alias: spec.set_alias.then(|| spec.alias.clone()),
        restart: spec.restart,
        meta: spec.meta.clone(),
    };
    if update.alias.is_some() || update.restart.is_some() || update.meta.is_some() {
        supervisor.update(id, update).await?;
    }
    if spec.reset {
        supervisor.reset(id).await?;
    }
    let status = supervisor.get(id)?.status;
    let active = matches!(status, InstanceStatus::Running | InstanceStatus::Starting);
    match spec.desired {
        Some(Desired::Stopped) if status != InstanceStatus::Stopped => {
            supervisor.stop(id).await?;
        }
        Some(Desired::Running) if !active && !spec.restart_now => {
            supervisor.start(id).await?;
        }
        _ => {}
    }
    if spec.restart_now {
        supervisor.restart(id).await?;
    }
    Ok(())
}

/// Run [`Fleet::pass`] every interval and on every wake-up, until `token` is cancelled.
pub(crate) fn spawn(state: Arc<State>, token: CancellationToken) {
    let Some(fleet) = state.fleet.clone() else {
        return;
    };
    tokio::spawn(async move {
        let mut wake = fleet.store.wake_ups(token.child_token());
        let mut tick = tokio::time::interval(fleet.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = token.cancelled() => break,
                _ = tick.tick() => {}
                Some(()) = wake.recv() => {}
            }
            match fleet.pass(&state.supervisor).await {
                Ok(()) if failing => {
                    tracing::info!("fleet database reachable again");
                    failing = false;
                }
                Ok(()) => {}
                Err(e) if !failing => {
                    tracing::warn!(error = %crate::error::error_chain(&e),
                        "fleet pass failed; instances keep running, retrying");
                    failing = true;
                }
                Err(_) => {}
            }
        }
    });
}

/// Every instance: this node's, then the other nodes' as last seen.
pub(crate) fn list(state: &State) -> Vec<InstanceInfo> {
    let mut all = state.supervisor.list();
    if let Some(fleet) = &state.fleet {
        all.extend(fleet.remote().iter().map(remote_info));
        all.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    }
    all
}

/// One instance, here or on another node.
pub(crate) fn get(state: &State, id: &str) -> Result<InstanceInfo, HttpError> {
    match state.supervisor.get(id) {
        Err(SupervisorError::NotFound(_)) => state
            .fleet
            .as_ref()
            .and_then(|f| f.remote_one(id))
            .map(|r| remote_info(&r))
            .ok_or_else(|| SupervisorError::NotFound(id.to_owned()).into()),
        other => Ok(other?),
    }
}

/// The stored traffic history of another node's instance (its owner writes it to the shared
/// database); `None` if `id` is not another node's instance.
pub(crate) async fn remote_history(
    state: &State,
    id: &str,
    since_ms: i64,
) -> Result<Option<Vec<nodepass_core::store::TrafficSample>>, HttpError> {
    match &state.fleet {
        Some(fleet) if is_remote(state, id) => Ok(Some(fleet.store.history(id, since_ms).await?)),
        _ => Ok(None),
    }
}

/// The other nodes' instances as stored (full URLs, for a backup): node, record, and whether
/// it is running or starting as its node last reported. Empty outside fleet mode.
pub(crate) fn remote_records(state: &State) -> Vec<(String, InstanceRecord, bool)> {
    let Some(fleet) = &state.fleet else {
        return Vec::new();
    };
    let mut rows = fleet.remote();
    rows.sort_by(|a, b| {
        (a.record.created_at, &a.record.id).cmp(&(b.record.created_at, &b.record.id))
    });
    rows.into_iter()
        .map(|f| {
            let running = matches!(f.status.as_str(), "running" | "starting");
            (f.node, f.record, running)
        })
        .collect()
}

/// Whether `id` is an instance of another node (as of the last pass).
pub(crate) fn is_remote(state: &State, id: &str) -> bool {
    state.supervisor.get(id).is_err()
        && state
            .fleet
            .as_ref()
            .is_some_and(|f| f.view().remote.contains_key(id))
}

fn remote_info(f: &FleetInstance) -> InstanceInfo {
    let status = InstanceStatus::from_text(&f.status).unwrap_or(InstanceStatus::Error);
    InstanceInfo::remote(&f.record, &f.node, status, f.error.clone())
}

/// Write `change` for another node's instance; the answer shows the instance as stored (its
/// owner applies the change on its next pass).
pub(crate) async fn change_remote(
    state: &State,
    id: &str,
    change: Spec,
) -> Result<InstanceInfo, HttpError> {
    let Some(fleet) = &state.fleet else {
        return Err(SupervisorError::NotFound(id.to_owned()).into());
    };
    let row = fleet
        .store
        .change(id, change)
        .await?
        .ok_or_else(|| SupervisorError::NotFound(id.to_owned()))?;
    let info = remote_info(&row);
    fleet.remember(row);
    Ok(info)
}

/// Create an instance owned by `node` (another node of the fleet), desired running.
pub(crate) async fn create_remote(
    state: &State,
    node: &str,
    req: CreateInstance,
) -> Result<InstanceInfo, HttpError> {
    let Some(fleet) = &state.fleet else {
        return Err(HttpError::invalid(
            "node",
            "this master is not in a fleet (no store=postgres://...)",
        ));
    };
    if !fleet.store.nodes().await?.iter().any(|n| n.name == node) {
        return Err(HttpError::invalid(
            "node",
            format!("no node named {node:?} in the fleet"),
        ));
    }
    nodepass_core::supervisor::InstanceInfo::check_url(&req.url)?;
    let mut bytes = [0u8; 4];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| HttpError::from(SupervisorError::ShuttingDown))?;
    let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let now = now_ms();
    let mut record = InstanceRecord::new(id, req.url, now);
    record.alias = req.alias;
    record.restart = req.restart;
    record.meta = req.meta;
    record.traffic = req.traffic;
    record.desired = if req.restart || req.start {
        Desired::Running
    } else {
        Desired::Stopped
    };
    fleet.store.create_for(node, &record).await?;
    if let Some(row) = fleet.store.fleet_instance(&record.id).await? {
        fleet.remember(row);
    }
    Ok(InstanceInfo::remote(
        &record,
        node,
        InstanceStatus::Stopped,
        None,
    ))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A node of the fleet as `GET /v1/nodes` shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct NodeView {
    /// The node's name (`node=` of its master URL).
    pub name: String,
    /// Its master's API base URL.
    pub api: String,
    /// The version it runs.
    pub version: String,
    /// `up`, or `down` after missed heartbeats.
    pub health: &'static str,
    /// Milliseconds since its last heartbeat (database clock).
    pub last_seen_ms_ago: i64,
    /// Whether this is the node answering.
    pub local: bool,
}

fn node_view(n: &NodeInfo, fleet: &Fleet) -> NodeView {
    NodeView {
        name: n.name.clone(),
        api: n.api.clone(),
        version: n.version.clone(),
        health: if is_down(n.age_ms, fleet.interval) {
            "down"
        } else {
            "up"
        },
        last_seen_ms_ago: n.age_ms,
        local: n.name == fleet.node(),
    }
}

/// The nodes of the fleet with their health.
#[utoipa::path(
    get,
    path = "/v1/nodes",
    operation_id = "listNodes",
    tag = "master",
    responses(
        (status = 200, description = "The nodes (empty outside fleet mode)", body = crate::openapi::Envelope<Vec<NodeView>>),
        (status = 401, description = "Missing or wrong API key", body = crate::openapi::ErrorEnvelope),
        (status = 503, description = "The fleet database is unavailable", body = crate::openapi::ErrorEnvelope),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub(crate) async fn nodes(ctx: Ctx) -> Reply {
    let state = &ctx.state;
    let views: Vec<NodeView> = match &state.fleet {
        None => Vec::new(),
        Some(fleet) => fleet
            .store
            .nodes()
            .await?
            .iter()
            .map(|n| node_view(n, fleet))
            .collect(),
    };
    Ok(match state.dialect {
        nodepass_core::config::ApiDialect::Envelope => response::ok(http::StatusCode::OK, &views),
        _ => response::bare(http::StatusCode::OK, &views),
    })
}

/// `/v1/nodes` in the NodePass dialect's document.
pub(crate) fn np_paths() -> Vec<(&'static str, serde_json::Value)> {
    use serde_json::json;
    let err = |d: &str| json!({ "description": d, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } });
    vec![(
        "/v1/nodes",
        json!({ "get": {
            "operationId": "listNodes", "tags": ["master"],
            "summary": "The nodes of the fleet with their health (an addition; empty outside fleet mode)",
            "security": [{ "ApiKeyAuth": [] }, { "bearer": [] }],
            "responses": {
                "200": { "description": "The nodes", "content": { "application/json": { "schema": {
                    "type": "array", "items": { "$ref": "#/components/schemas/Node" } } } } },
                "401": err("Missing or wrong API key"),
                "403": err("The request's origin is not allowed"),
                "503": err("The fleet database is unavailable"),
            },
        } }),
    )]
}

/// Schemas of [`np_paths`].
pub(crate) fn np_schemas() -> Vec<(&'static str, serde_json::Value)> {
    use serde_json::json;
    vec![(
        "Node",
        json!({ "type": "object",
            "required": ["name", "api", "version", "health", "last_seen_ms_ago", "local"],
            "properties": {
                "name": { "type": "string" }, "api": { "type": "string" },
                "version": { "type": "string" },
                "health": { "type": "string", "enum": ["up", "down"] },
                "last_seen_ms_ago": { "type": "integer" },
                "local": { "type": "boolean" } } }),
    )]
}
