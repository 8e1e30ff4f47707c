//! What the nodes of a fleet share through the database: the node list with heartbeats,
//! every node's instances with the status their owner reported, and desired-state changes
//! ([`Spec`]) that any master writes for an instance another node owns.
//!
//! # Desired state
//! A master that changes an instance it does not own merges the change into the row's pending
//! [`Spec`] (a fresh one once the owner applied the previous), bumps `spec_version` and the
//! row `version` in one transaction holding the row lock (`SELECT ... FOR UPDATE`), and sends
//! `NOTIFY nodepass_wake, 'NODE'`. The owner, woken by that or by its periodic pass, applies
//! the spec through its supervisor and records `applied_spec`. A new instance for another node
//! is inserted with that node as its owner; the owner adopts it.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;
use tokio_util::sync::CancellationToken;

use super::{
    MAX_BACKOFF, MIN_BACKOFF, PostgresStore, RECORD_COLUMNS, StoreError, TxError, in_tx, to_i64,
};
use crate::store::{Desired, InstanceRecord, Meta, Result};

/// The `LISTEN`/`NOTIFY` channel; the payload is the name of the node to wake.
pub const WAKE_CHANNEL: &str = "nodepass_wake";

/// The database's clock in unix milliseconds (one clock for every node's heartbeat).
const DB_NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// A node of the fleet as registered in the database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct NodeInfo {
    /// The node's name (`node=`).
    pub name: String,
    /// The node's API base URL.
    pub api: String,
    /// The program version the node runs.
    pub version: String,
    /// When the node's master started (unix ms, database clock).
    pub started_ms: i64,
    /// Its last heartbeat (unix ms, database clock).
    pub seen_ms: i64,
    /// Milliseconds since its last heartbeat, by the database clock.
    pub age_ms: i64,
}

/// A change to an instance, written by a master that does not own it; `None`/`false` fields
/// change nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Spec {
    /// A new URL (key included).
    pub url: Option<String>,
    /// Whether `alias` replaces the alias (`alias: None` then clears it).
    pub set_alias: bool,
    /// The new alias.
    pub alias: Option<String>,
    /// A new auto-restart policy.
    pub restart: Option<bool>,
    /// New metadata.
    pub meta: Option<Meta>,
    /// Start or stop.
    pub desired: Option<Desired>,
    /// Restart it (after the other changes).
    pub restart_now: bool,
    /// Zero its traffic counters.
    pub reset: bool,
    /// Delete it.
    pub delete: bool,
}

impl Spec {
    /// Drop what a local write of the owner supersedes: the fields of this pending change that
    /// the owner has just changed itself from `stored` to `written` (the newer write wins); a
    /// change of the running state also drops a pending restart. The `reset` and `delete`
    /// actions are kept. Returns whether anything was dropped.
    pub fn supersede(&mut self, stored: &InstanceRecord, written: &InstanceRecord) -> bool {
        let before = self.clone();
        if stored.url != written.url {
            self.url = None;
        }
        if stored.alias != written.alias {
            self.set_alias = false;
            self.alias = None;
        }
        if stored.restart != written.restart {
            self.restart = None;
        }
        if stored.meta != written.meta {
            self.meta = None;
        }
        if stored.desired != written.desired {
            self.desired = None;
            self.restart_now = false;
        }
        *self != before
    }

    /// Whether this change changes nothing.
    pub fn is_empty(&self) -> bool {
        *self == Spec::default()
    }

    /// Merge a later change into this one: later fields win; actions accumulate.
    pub fn merge(&mut self, later: Spec) {
        if later.url.is_some() {
            self.url = later.url;
        }
        if later.set_alias {
            self.set_alias = true;
            self.alias = later.alias;
        }
        if later.restart.is_some() {
            self.restart = later.restart;
        }
        if later.meta.is_some() {
            self.meta = later.meta;
        }
        if later.desired.is_some() {
            self.desired = later.desired;
        }
        self.restart_now |= later.restart_now;
        self.reset |= later.reset;
        self.delete |= later.delete;
    }
}

/// One instance of the fleet as the database has it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct FleetInstance {
    /// The record (settings, desired running/stopped, totals the owner last wrote).
    pub record: InstanceRecord,
    /// The owning node.
    pub node: String,
    /// The status the owner last reported (`stopped`, `starting`, `running`, `error`).
    pub status: String,
    /// The error the owner last reported.
    pub error: Option<String>,
    /// The row version (bumped by every write).
    pub version: i64,
    /// The change waiting for the owner, if any.
    pub pending: Option<Spec>,
    /// The version of the latest change.
    pub spec_version: i64,
}

/// What [`PostgresStore::fleet_since`] read.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct FleetDelta {
    /// Whether this is every instance (`since` was `None`) rather than the changed ones.
    pub full: bool,
    /// The instances written since (every instance when `full`), by `created_at` then `id`.
    pub instances: Vec<FleetInstance>,
    /// `(id, node)` of the instances deleted since (empty when `full`); an id may also be in
    /// `instances` if it was created again.
    pub deleted: Vec<(String, String)>,
    /// Give this as `since` to the next call.
    pub watermark: i64,
}

/// How long deletions are remembered for incremental readers (see
/// [`PostgresStore::fleet_since`]): 1 hour.
pub const TOMBSTONE_RETENTION: Duration = Duration::from_secs(3600);

const FLEET_COLUMNS: &str = "node, status, error, version, spec, spec_version, applied_spec";

impl PostgresStore {
    fn decode_fleet(&self, row: &tokio_postgres::Row) -> Result<FleetInstance> {
        let record = self.decode(row)?;
        let base = 12;
        let spec_text: Option<String> = row.get(base + 4);
        let spec_version: i64 = row.get(base + 5);
        let applied: i64 = row.get(base + 6);
        let pending = match spec_text {
            Some(text) if spec_version > applied => Some(serde_json::from_str(&text).map_err(
                |e| StoreError::Corrupt {
                    path: self.label.clone().into(),
                    reason: format!("instance {}: bad spec: {e}", record.id),
                },
            )?),
            _ => None,
        };
        Ok(FleetInstance {
            record,
            node: row.get(base),
            status: row.get(base + 1),
            error: row.get(base + 2),
            version: row.get(base + 3),
            pending,
            spec_version,
        })
    }

    /// In the transaction of a local write of `written` by the owner: drop from the row's
    /// pending change what this write supersedes ([`Spec::supersede`]). A change left with
    /// something to do gets a new `spec_version` (a reconcile that read the old one will not
    /// take it) and the owner is woken to apply it; an emptied one is cleared.
    pub(super) async fn supersede_pending(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        written: &InstanceRecord,
    ) -> std::result::Result<(), TxError> {
        let select = format!(
            "SELECT {RECORD_COLUMNS}, {FLEET_COLUMNS} FROM instances \
             WHERE id = $1 AND node = $2 FOR UPDATE"
        );
        let Some(row) = tx.query_opt(&select, &[&written.id, &self.node]).await? else {
            return Ok(());
        };
        let current = self.decode_fleet(&row)?;
        let Some(mut spec) = current.pending else {
            return Ok(());
        };
        if !spec.supersede(&current.record, written) {
            return Ok(());
        }
        if spec.is_empty() {
            tx.execute(
                "UPDATE instances SET spec = NULL, applied_spec = spec_version WHERE id = $1",
                &[&written.id],
            )
            .await?;
            return Ok(());
        }
        let text = serde_json::to_string(&spec).map_err(|e| StoreError::Invalid {
            reason: format!("spec: {e}"),
        })?;
        tx.execute(
            "UPDATE instances SET spec = $2, spec_version = spec_version + 1 WHERE id = $1",
            &[&written.id, &text],
        )
        .await?;
        tx.execute("SELECT pg_notify($1, $2)", &[&WAKE_CHANNEL, &self.node])
            .await?;
        Ok(())
    }

    /// Register this node (or refresh it): its API URL, version and start time, and a
    /// heartbeat now.
    ///
    /// Cancel safety: as for a [`Store`](crate::store::Store) call, a dropped future does not
    /// undo a statement already sent; treat the outcome as unknown.
    pub async fn heartbeat(&self, api: &str, version: &str, started_ms: i64) -> Result<()> {
        let sql = format!(
            "INSERT INTO nodes (name, api, version, started_ms, seen_ms) \
             VALUES ($1, $2, $3, $4, {DB_NOW_MS}) ON CONFLICT (name) DO UPDATE SET \
             api = EXCLUDED.api, version = EXCLUDED.version, started_ms = EXCLUDED.started_ms, \
             seen_ms = EXCLUDED.seen_ms"
        );
        in_tx!(self, "heartbeat", |tx| {
            tx.execute(&sql, &[&self.node, &api, &version, &started_ms])
                .await?;
        })
    }

    /// Every registered node, by name.
    ///
    /// Cancel safety: safe (a read).
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>> {
        let sql = format!(
            "SELECT name, api, version, started_ms, seen_ms, {DB_NOW_MS} - seen_ms \
             FROM nodes ORDER BY name"
        );
        let rows = in_tx!(self, "nodes", |tx| { tx.query(&sql, &[]).await? })?;
        Ok(rows
            .iter()
            .map(|r| NodeInfo {
                name: r.get(0),
                api: r.get(1),
                version: r.get(2),
                started_ms: r.get(3),
                seen_ms: r.get(4),
                age_ms: r.get(5),
            })
            .collect())
    }

    /// Every instance of the fleet, ordered by `created_at` then `id`.
    ///
    /// Cancel safety: safe (a read).
    pub async fn fleet(&self) -> Result<Vec<FleetInstance>> {
        let sql = format!(
            "SELECT {RECORD_COLUMNS}, {FLEET_COLUMNS} FROM instances ORDER BY created_at, id"
        );
        let rows = in_tx!(self, "fleet", |tx| { tx.query(&sql, &[]).await? })?;
        rows.iter().map(|r| self.decode_fleet(r)).collect()
    }

    /// What changed in the fleet since the read that returned `since` as its
    /// [`FleetDelta::watermark`]; every instance when `since` is `None` (a full read, which also
    /// drops tombstones older than [`TOMBSTONE_RETENTION`]). A caller that keeps its watermark
    /// longer than that must read in full again (deletions would be missed).
    ///
    /// Rows are stamped with the id of the transaction that last wrote them (and deletions
    /// leave a tombstone stamped the same way); the watermark is the oldest transaction still
    /// running when this read took its snapshot, so a write that commits after the read is
    /// stamped at or above it and is returned by the next read (some rows may come twice).
    pub async fn fleet_since(&self, since: Option<i64>) -> Result<FleetDelta> {
        let all = format!(
            "SELECT {RECORD_COLUMNS}, {FLEET_COLUMNS} FROM instances ORDER BY created_at, id"
        );
        let changed = format!(
            "SELECT {RECORD_COLUMNS}, {FLEET_COLUMNS} FROM instances WHERE changed_xid >= $1 \
             ORDER BY created_at, id"
        );
        let retention = i64::try_from(TOMBSTONE_RETENTION.as_millis()).unwrap_or(i64::MAX);
        let prune = format!("DELETE FROM instance_deletions WHERE deleted_ms < {DB_NOW_MS} - $1");
        let (watermark, rows, deleted) = in_tx!(self, "fleet_since", |tx| {
            // One snapshot for the watermark and the reads.
            tx.batch_execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                .await?;
            let watermark: i64 = tx
                .query_one("SELECT txid_snapshot_xmin(txid_current_snapshot())", &[])
                .await?
                .get(0);
            match since {
                None => {
                    tx.execute(&prune, &[&retention]).await?;
                    (watermark, tx.query(&all, &[]).await?, Vec::new())
                }
                Some(since) => {
                    let rows = tx.query(&changed, &[&since]).await?;
                    let deleted: Vec<(String, String)> = tx
                        .query(
                            "SELECT DISTINCT id, node FROM instance_deletions \
                             WHERE changed_xid >= $1",
                            &[&since],
                        )
                        .await?
                        .iter()
                        .map(|r| (r.get(0), r.get(1)))
                        .collect();
                    (watermark, rows, deleted)
                }
            }
        })?;
        Ok(FleetDelta {
            full: since.is_none(),
            instances: rows
                .iter()
                .map(|r| self.decode_fleet(r))
                .collect::<Result<_>>()?,
            deleted,
            watermark,
        })
    }

    /// One instance of the fleet.
    ///
    /// Cancel safety: safe (a read).
    pub async fn fleet_instance(&self, id: &str) -> Result<Option<FleetInstance>> {
        let sql = format!("SELECT {RECORD_COLUMNS}, {FLEET_COLUMNS} FROM instances WHERE id = $1");
        let row = in_tx!(self, "fleet_instance", |tx| {
            tx.query_opt(&sql, &[&id]).await?
        })?;
        row.map(|r| self.decode_fleet(&r)).transpose()
    }

    /// Create `record` owned by `node` (another node), and wake that node. Fails with
    /// [`StoreError::Invalid`] if the id is taken.
    ///
    /// Cancel safety: as for a [`Store`](crate::store::Store) call, a dropped future does not
    /// undo a statement already sent; treat the outcome as unknown.
    pub async fn create_for(&self, node: &str, record: &InstanceRecord) -> Result<()> {
        record.validate()?;
        let meta = serde_json::to_string(&record.meta).map_err(|e| StoreError::Invalid {
            reason: format!("meta: {e}"),
        })?;
        let (r, t) = (record, record.traffic);
        let n = in_tx!(self, "create_for", |tx| {
            let n = tx
                .execute(
                    "INSERT INTO instances (id, node, alias, url, restart, meta, tcp_in, \
                     tcp_out, udp_in, udp_out, created_at, updated_at, desired) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
                     ON CONFLICT (id) DO NOTHING",
                    &[
                        &r.id,
                        &node,
                        &r.alias,
                        &r.url,
                        &r.restart,
                        &meta,
                        &to_i64(t.tcp_in),
                        &to_i64(t.tcp_out),
                        &to_i64(t.udp_in),
                        &to_i64(t.udp_out),
                        &r.created_at,
                        &r.updated_at,
                        &r.desired.as_str(),
                    ],
                )
                .await?;
            tx.execute("SELECT pg_notify($1, $2)", &[&WAKE_CHANNEL, &node])
                .await?;
            n
        })?;
        if n == 0 {
            return Err(StoreError::Invalid {
                reason: format!("instance id {} is taken", record.id),
            });
        }
        Ok(())
    }

    /// Merge `change` into the pending desired state of instance `id` (owned by another node),
    /// bump its versions and wake its owner, in one transaction. `None` if there is no such
    /// instance.
    ///
    /// Cancel safety: as for a [`Store`](crate::store::Store) call, a dropped future does not
    /// undo a statement already sent; treat the outcome as unknown.
    pub async fn change(&self, id: &str, change: Spec) -> Result<Option<FleetInstance>> {
        let select = format!(
            "SELECT {RECORD_COLUMNS}, {FLEET_COLUMNS} FROM instances WHERE id = $1 FOR UPDATE"
        );
        let updated = in_tx!(self, "change", |tx| {
            match tx.query_opt(&select, &[&id]).await? {
                None => None,
                Some(row) => {
                    let current = self.decode_fleet(&row).map_err(TxError::Store)?;
                    let mut spec = current.pending.clone().unwrap_or_default();
                    spec.merge(change);
                    let text = serde_json::to_string(&spec).map_err(|e| {
                        TxError::Store(StoreError::Invalid {
                            reason: format!("spec: {e}"),
                        })
                    })?;
                    tx.execute(
                        "UPDATE instances SET spec = $2, spec_version = spec_version + 1, \
                         version = version + 1 WHERE id = $1",
                        &[&id, &text],
                    )
                    .await?;
                    tx.execute("SELECT pg_notify($1, $2)", &[&WAKE_CHANNEL, &current.node])
                        .await?;
                    Some(FleetInstance {
                        pending: Some(spec),
                        spec_version: current.spec_version + 1,
                        version: current.version + 1,
                        ..current
                    })
                }
            }
        })?;
        Ok(updated)
    }

    /// This node's instances as the database has them (for the reconciler).
    ///
    /// Cancel safety: safe (a read).
    pub async fn owned(&self) -> Result<Vec<FleetInstance>> {
        let sql = format!(
            "SELECT {RECORD_COLUMNS}, {FLEET_COLUMNS} FROM instances WHERE node = $1 \
             ORDER BY created_at, id"
        );
        let rows = in_tx!(self, "owned", |tx| { tx.query(&sql, &[&self.node]).await? })?;
        rows.iter().map(|r| self.decode_fleet(r)).collect()
    }

    /// Record that this node applied the change with version `spec_version`.
    ///
    /// Cancel safety: as for a [`Store`](crate::store::Store) call, a dropped future does not
    /// undo a statement already sent; treat the outcome as unknown.
    pub async fn mark_applied(&self, id: &str, spec_version: i64) -> Result<()> {
        in_tx!(self, "mark_applied", |tx| {
            tx.execute(
                "UPDATE instances SET applied_spec = GREATEST(applied_spec, $2) \
                 WHERE id = $1 AND node = $3",
                &[&id, &spec_version, &self.node],
            )
            .await?;
        })
    }

    /// Take the pending change of version `spec_version` for applying: it moves to the row's
    /// taken change and is recorded as applied, so that a change written from now on starts a
    /// fresh one (applied at the next pass) and a local change of the owner no longer competes
    /// with it. `false` (nothing taken) if another change was merged in since it was read: read
    /// it again. Once applied, [`PostgresStore::finish_spec`] clears the taken change; until
    /// then [`PostgresStore::taken_specs`] lists it (an owner that died in between applies it
    /// again when it is back: at least once, never lost).
    ///
    /// Cancel safety: as for a [`Store`](crate::store::Store) call, a dropped future does not
    /// undo a statement already sent; treat the outcome as unknown.
    pub async fn take_spec(&self, id: &str, spec_version: i64) -> Result<bool> {
        let n = in_tx!(self, "take_spec", |tx| {
            tx.execute(
                "UPDATE instances SET taken_spec = spec, spec = NULL, \
                 applied_spec = spec_version \
                 WHERE id = $1 AND node = $3 AND spec_version = $2",
                &[&id, &spec_version, &self.node],
            )
            .await?
        })?;
        Ok(n == 1)
    }

    /// The changes this node took ([`PostgresStore::take_spec`]) and has not finished: left
    /// by a master that stopped, or lost the database, while applying them.
    ///
    /// Cancel safety: safe (a read).
    pub async fn taken_specs(&self) -> Result<Vec<(String, Spec)>> {
        let rows = in_tx!(self, "taken_specs", |tx| {
            tx.query(
                "SELECT id, taken_spec FROM instances \
                 WHERE node = $1 AND taken_spec IS NOT NULL ORDER BY created_at, id",
                &[&self.node],
            )
            .await?
        })?;
        rows.iter()
            .map(|row| {
                let id: String = row.get(0);
                let text: String = row.get(1);
                let spec = serde_json::from_str(&text).map_err(|e| StoreError::Corrupt {
                    path: self.label.clone().into(),
                    reason: format!("instance {id}: bad taken spec: {e}"),
                })?;
                Ok((id, spec))
            })
            .collect()
    }

    /// The taken change of instance `id` is applied: forget it.
    ///
    /// Cancel safety: as for a [`Store`](crate::store::Store) call, a dropped future does not
    /// undo a statement already sent; treat the outcome as unknown.
    pub async fn finish_spec(&self, id: &str) -> Result<()> {
        in_tx!(self, "finish_spec", |tx| {
            tx.execute(
                "UPDATE instances SET taken_spec = NULL WHERE id = $1 AND node = $2",
                &[&id, &self.node],
            )
            .await?;
        })
    }

    /// Report the status of several of this node's instances (what other masters show).
    ///
    /// Cancel safety: as for a [`Store`](crate::store::Store) call, a dropped future does not
    /// undo a statement already sent; treat the outcome as unknown.
    pub async fn report_status(&self, statuses: &[(String, String, Option<String>)]) -> Result<()> {
        if statuses.is_empty() {
            return Ok(());
        }
        // One statement for every instance; unchanged ones are not written.
        let sql = format!(
            "UPDATE instances AS i SET status = u.status, error = u.error, status_ms = {DB_NOW_MS} \
             FROM unnest($1::text[], $2::text[], $3::text[]) AS u (id, status, error) \
             WHERE i.id = u.id AND i.node = $4 \
             AND (i.status IS DISTINCT FROM u.status OR i.error IS DISTINCT FROM u.error)"
        );
        let ids: Vec<&str> = statuses.iter().map(|(id, _, _)| id.as_str()).collect();
        let states: Vec<&str> = statuses.iter().map(|(_, s, _)| s.as_str()).collect();
        let errors: Vec<Option<&str>> = statuses.iter().map(|(_, _, e)| e.as_deref()).collect();
        in_tx!(self, "report_status", |tx| {
            tx.execute(&sql, &[&ids, &states, &errors, &self.node])
                .await?;
        })
    }

    /// Wake-ups for this node: one message per `NOTIFY` naming it, and one after every
    /// (re)connection of the listening connection (notifications sent while it was down are
    /// lost). The connection reconnects with back-off until `token` is cancelled.
    pub fn wake_ups(self: &Arc<Self>, token: CancellationToken) -> mpsc::Receiver<()> {
        let (wake, rx) = mpsc::channel(1);
        let store = self.clone();
        tokio::spawn(async move {
            let mut backoff = MIN_BACKOFF;
            while !token.is_cancelled() {
                if let Ok((client, mut connection)) = store.connect().await {
                    let (ntx, mut nrx) = mpsc::unbounded_channel::<String>();
                    let driver = tokio::spawn(async move {
                        while let Some(Ok(message)) =
                            std::future::poll_fn(|cx| connection.poll_message(cx)).await
                        {
                            if let AsyncMessage::Notification(n) = message {
                                let _ = ntx.send(n.payload().to_owned());
                            }
                        }
                    });
                    if client
                        .batch_execute(&format!("LISTEN {WAKE_CHANNEL}"))
                        .await
                        .is_ok()
                    {
                        backoff = MIN_BACKOFF;
                        let _ = wake.try_send(());
                        loop {
                            tokio::select! {
                                _ = token.cancelled() => break,
                                payload = nrx.recv() => match payload {
                                    Some(p) if p == store.node => { let _ = wake.try_send(()); }
                                    Some(_) => {}
                                    None => break,
                                },
                            }
                        }
                    }
                    driver.abort();
                    drop(client);
                }
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        });
        rx
    }
}

/// A node is shown as down after this many missed heartbeats.
pub const MISSED_HEARTBEATS: u32 = 3;

/// Whether a node whose last heartbeat is `age_ms` old, with heartbeats every `interval`, is
/// down (more than [`MISSED_HEARTBEATS`] intervals missed).
pub fn is_down(age_ms: i64, interval: Duration) -> bool {
    let limit = interval.saturating_mul(MISSED_HEARTBEATS).as_millis();
    i128::from(age_ms) > i128::try_from(limit).unwrap_or(i128::MAX)
}
