//! [`PostgresStore`]: the [`Store`] in a PostgreSQL database that a fleet of masters shares.
//!
//! Each master is a *node* with a name; its store is scoped to it: [`Store::load`] returns the
//! instances the node owns, [`Store::put`] writes them with `node` set, traffic and history
//! writes touch only the node's rows, and settings (API key hash, master id, alias) are per
//! node. What the fleet shares (every node's instances, the node list, desired-state changes
//! for another node) is in [`fleet`](self#fleet) methods of the same type.
//!
//! # Schema (versioned in `nodepass_migrations`, see [`PG_SCHEMA_VERSION`])
//! `instances` has the SQLite columns plus `node`, a row `version` (bumped by every write),
//! the status the owner last reported (`status`, `error`, `status_ms`) and a pending desired
//! state written by other masters (`spec` as JSON, `spec_version`, `applied_spec`); `history`,
//! `settings (node, name, value)` and `nodes (name, api, version, started_ms, seen_ms)`. Since
//! version 2 a trigger stamps every written instance row with its transaction id
//! (`changed_xid`) and deletions leave tombstones in `instance_deletions`, for the incremental
//! fleet refresh ([`PostgresStore::fleet_since`]).
//! Counters are `u64` stored bit for bit in `BIGINT`, as in SQLite.
//!
//! # Connection and failure
//! One connection per store, used by one call at a time (a tokio mutex, like SQLite's writer
//! thread), every call one transaction. When the database cannot be reached the call fails at
//! once with [`StoreError::Unavailable`] and the connection is dropped; the next call after a
//! back-off delay (100 ms doubling to 5 s) connects again. So a supervisor whose database went
//! away keeps running its tunnels and counting; its periodic flushes fail and are retried with
//! the grown totals (totals, not deltas: a retried write neither loses nor double counts).
//!
//! The password is never part of a URL or an error message; it comes from the caller
//! ([`PostgresConfig::password`]), which reads it from a file or the environment.

mod fleet;
mod schema;

pub use fleet::{
    FleetDelta, FleetInstance, MISSED_HEARTBEATS, NodeInfo, Spec, TOMBSTONE_RETENTION,
    WAKE_CHANNEL, is_down,
};
pub use schema::PG_SCHEMA_VERSION;

use std::time::{Duration, Instant};

use tokio::sync::{Mutex, MutexGuard};
use tokio_postgres::{Client, NoTls, Row};

use super::{
    BackendError, DEFAULT_HISTORY_RETENTION, Desired, InstanceRecord, Meta, Result, Store,
    StoreError, TrafficSample, TrafficTotals, retention_ms,
};

/// Where the database is and who this node is. The `Debug` output masks the password.
#[derive(Clone)]
#[non_exhaustive]
pub struct PostgresConfig {
    /// Host name or IP address of the server.
    pub host: String,
    /// TCP port (5432 by default).
    pub port: u16,
    /// Database user.
    pub user: String,
    /// Database name.
    pub dbname: String,
    /// The password, if the server asks for one.
    pub password: Option<String>,
    /// This node's name (the master's `node=`).
    pub node: String,
    /// Connecting gives up after this long (default 5 s).
    pub connect_timeout: Duration,
    /// A call on a connection that stopped answering fails after this long (default 10 s).
    pub io_timeout: Duration,
}

impl PostgresConfig {
    /// A configuration without a password and with default timeouts.
    pub fn new(
        host: impl Into<String>,
        port: u16,
        user: impl Into<String>,
        dbname: impl Into<String>,
        node: impl Into<String>,
    ) -> Self {
        PostgresConfig {
            host: host.into(),
            port,
            user: user.into(),
            dbname: dbname.into(),
            password: None,
            node: node.into(),
            connect_timeout: Duration::from_secs(5),
            io_timeout: Duration::from_secs(10),
        }
    }

    /// `postgres://USER@HOST:PORT/DB`, without the password: for logs and errors.
    pub fn label(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!(
            "postgres://{}@{host}:{}/{}",
            self.user, self.port, self.dbname
        )
    }
}

impl std::fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &self.label())
            .field(
                "password",
                &self.password.as_ref().map(|_| crate::config::MASK),
            )
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// The connection, or when the next attempt to connect may be made.
pub(super) struct Conn {
    client: Option<Client>,
    retry_at: Option<Instant>,
    backoff: Duration,
}

/// First reconnect delay; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Largest reconnect delay.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A [`Store`] in PostgreSQL, scoped to one node; see the [module docs](self).
pub struct PostgresStore {
    config: tokio_postgres::Config,
    pub(super) label: String,
    node: String,
    retention: Duration,
    conn: Mutex<Conn>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("url", &self.label)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// A database error: [`StoreError::Unavailable`] when the server could not be reached or the
/// connection broke (or the server is shutting down), [`StoreError::Backend`] otherwise.
pub(super) fn pg_error(op: &'static str, e: tokio_postgres::Error) -> StoreError {
    use tokio_postgres::error::SqlState;
    let unreachable = match e.code() {
        Some(code) => {
            *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CANNOT_CONNECT_NOW
                || *code == SqlState::CRASH_SHUTDOWN
        }
        None => e.as_db_error().is_none(),
    };
    let source = BackendError::new(e);
    if unreachable {
        StoreError::Unavailable { op, source }
    } else {
        StoreError::Backend { op, source }
    }
}

fn to_i64(v: u64) -> i64 {
    i64::from_ne_bytes(v.to_ne_bytes())
}

fn to_u64(v: i64) -> u64 {
    u64::from_ne_bytes(v.to_ne_bytes())
}

/// The columns [`decode`](PostgresStore::decode) reads, in order.
const RECORD_COLUMNS: &str = "id, alias, url, restart, meta, tcp_in, tcp_out, udp_in, udp_out, \
                              created_at, updated_at, desired";

impl PostgresStore {
    /// Connect, create or migrate the schema, and return the store for `config.node`.
    /// Errors: the server cannot be reached ([`StoreError::Unavailable`]), refuses the login or
    /// the schema is newer than this build.
    ///
    /// Cancel safety: a dropped future closes its connection; a schema statement already sent
    /// completes or fails on the server as if awaited (as for every [`Store`] call), and the
    /// next `open` checks the schema again.
    pub async fn open(config: &PostgresConfig) -> Result<Self> {
        if config.node.is_empty() {
            return Err(StoreError::Invalid {
                reason: "node name is empty".into(),
            });
        }
        let mut pg = tokio_postgres::Config::new();
        pg.host(&config.host)
            .port(config.port)
            .user(&config.user)
            .dbname(&config.dbname)
            .application_name(format!("nodepass {}", config.node))
            .connect_timeout(config.connect_timeout)
            .tcp_user_timeout(config.io_timeout)
            .keepalives(true)
            .keepalives_idle(config.io_timeout);
        if let Some(password) = &config.password {
            pg.password(password);
        }
        let store = PostgresStore {
            config: pg,
            label: config.label(),
            node: config.node.clone(),
            retention: DEFAULT_HISTORY_RETENTION,
            conn: Mutex::new(Conn {
                client: None,
                retry_at: None,
                backoff: Duration::ZERO,
            }),
        };
        store.migrate().await?;
        tracing::debug!(store = %store.label, node = %store.node, "store opened");
        Ok(store)
    }

    /// Keep history samples for `retention` instead of [`DEFAULT_HISTORY_RETENTION`].
    pub fn with_history_retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// This store's node.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// `postgres://USER@HOST:PORT/DB` (no password).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// A new connection (for `LISTEN`), its driver spawned on the runtime.
    pub(super) async fn connect(
        &self,
    ) -> std::result::Result<
        (
            Client,
            tokio_postgres::Connection<tokio_postgres::Socket, tokio_postgres::tls::NoTlsStream>,
        ),
        tokio_postgres::Error,
    > {
        self.config.connect(NoTls).await
    }

    /// The connection, made now if there is none and the back-off delay has passed.
    pub(super) async fn conn(&self, op: &'static str) -> Result<MutexGuard<'_, Conn>> {
        let mut conn = self.conn.lock().await;
        if conn.client.as_ref().is_some_and(Client::is_closed) {
            conn.client = None;
        }
        if conn.client.is_some() {
            return Ok(conn);
        }
        if let Some(at) = conn.retry_at
            && Instant::now() < at
        {
            return Err(StoreError::Unavailable {
                op,
                source: BackendError::new(std::io::Error::other(
                    "database unreachable; waiting before reconnecting",
                )),
            });
        }
        match self.config.connect(NoTls).await {
            Ok((client, connection)) => {
                let label = self.label.clone();
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(store = %label, error = %e, "database connection ended");
                    }
                });
                if conn.retry_at.is_some() {
                    tracing::info!(store = %self.label, "database reconnected");
                }
                conn.client = Some(client);
                conn.retry_at = None;
                conn.backoff = Duration::ZERO;
                Ok(conn)
            }
            Err(e) => {
                conn.backoff = (conn.backoff * 2).clamp(MIN_BACKOFF, MAX_BACKOFF);
                conn.retry_at = Some(Instant::now() + conn.backoff);
                tracing::warn!(store = %self.label, error = %e, retry_in = ?conn.backoff,
                    "database unreachable");
                Err(pg_error(op, e))
            }
        }
    }

    /// The outcome of a transaction body: a broken connection is dropped (the next call
    /// reconnects at once, then with back-off).
    pub(super) fn finish<T>(
        &self,
        op: &'static str,
        conn: &mut Conn,
        result: std::result::Result<T, TxError>,
    ) -> Result<T> {
        match result {
            Ok(out) => Ok(out),
            Err(TxError::Store(e)) => Err(e),
            Err(TxError::Pg(e)) => {
                let err = pg_error(op, e);
                if matches!(err, StoreError::Unavailable { .. })
                    || conn.client.as_ref().is_some_and(Client::is_closed)
                {
                    conn.client = None;
                    conn.retry_at = Some(Instant::now());
                }
                Err(err)
            }
        }
    }

    fn corrupt(&self, reason: String) -> StoreError {
        StoreError::Corrupt {
            path: self.label.clone().into(),
            reason,
        }
    }

    /// A record from a row of [`RECORD_COLUMNS`] (starting at column 0).
    pub(super) fn decode(&self, row: &Row) -> Result<InstanceRecord> {
        let id: String = row.get(0);
        let meta_text: String = row.get(4);
        let meta: Meta = serde_json::from_str(&meta_text)
            .map_err(|e| self.corrupt(format!("instance {id}: bad meta: {e}")))?;
        let desired_text: String = row.get(11);
        let desired = Desired::from_text(&desired_text)
            .ok_or_else(|| self.corrupt(format!("instance {id}: bad desired {desired_text:?}")))?;
        let record = InstanceRecord {
            alias: row.get(1),
            url: row.get(2),
            restart: row.get(3),
            meta,
            traffic: TrafficTotals {
                tcp_in: to_u64(row.get(5)),
                tcp_out: to_u64(row.get(6)),
                udp_in: to_u64(row.get(7)),
                udp_out: to_u64(row.get(8)),
            },
            created_at: row.get(9),
            updated_at: row.get(10),
            desired,
            id,
        };
        record
            .validate()
            .map_err(|e| self.corrupt(format!("instance {}: {e}", record.id)))?;
        Ok(record)
    }
}

/// Run `$body` in one transaction on the store's connection (`$tx` names the transaction);
/// `?` works on database errors and [`StoreError`]s alike.
macro_rules! in_tx {
    ($store:expr, $op:expr, |$tx:ident| $body:block) => {{
        let store = $store;
        let op: &'static str = $op;
        let mut conn = store.conn(op).await?;
        let result: std::result::Result<_, $crate::store::postgres::TxError> = async {
            let client = conn.client.as_mut().expect("connected");
            let $tx = client.transaction().await?;
            let out = $body;
            $tx.commit().await?;
            Ok(out)
        }
        .await;
        store.finish(op, &mut conn, result)
    }};
}
pub(super) use in_tx;

/// An error inside a transaction body: the database's, or one of ours.
pub(super) enum TxError {
    Pg(tokio_postgres::Error),
    Store(StoreError),
}

impl From<tokio_postgres::Error> for TxError {
    fn from(e: tokio_postgres::Error) -> Self {
        TxError::Pg(e)
    }
}

impl From<StoreError> for TxError {
    fn from(e: StoreError) -> Self {
        TxError::Store(e)
    }
}

#[async_trait::async_trait]
impl Store for PostgresStore {
    async fn load(&self) -> Result<Vec<InstanceRecord>> {
        let sql = format!(
            "SELECT {RECORD_COLUMNS} FROM instances WHERE node = $1 ORDER BY created_at, id"
        );
        let rows = in_tx!(self, "load", |tx| { tx.query(&sql, &[&self.node]).await? })?;
        rows.iter().map(|row| self.decode(row)).collect()
    }

    async fn put(&self, record: &InstanceRecord) -> Result<()> {
        record.validate()?;
        let meta = serde_json::to_string(&record.meta).map_err(|e| StoreError::Invalid {
            reason: format!("meta: {e}"),
        })?;
        let (r, t) = (record, record.traffic);
        let written = in_tx!(self, "put", |tx| {
            // The owner's own change is newer than a pending change from another master.
            self.supersede_pending(&tx, record).await?;
            tx.execute(
                "INSERT INTO instances (id, node, alias, url, restart, meta, tcp_in, \
                 tcp_out, udp_in, udp_out, created_at, updated_at, desired) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
                 ON CONFLICT (id) DO UPDATE SET alias = EXCLUDED.alias, \
                 url = EXCLUDED.url, restart = EXCLUDED.restart, meta = EXCLUDED.meta, \
                 tcp_in = EXCLUDED.tcp_in, tcp_out = EXCLUDED.tcp_out, \
                 udp_in = EXCLUDED.udp_in, udp_out = EXCLUDED.udp_out, \
                 created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at, \
                 desired = EXCLUDED.desired, version = instances.version + 1 \
                 WHERE instances.node = EXCLUDED.node",
                &[
                    &r.id,
                    &self.node,
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
            .await?
        })?;
        if written == 0 {
            return Err(StoreError::Invalid {
                reason: format!("instance {} belongs to another node", record.id),
            });
        }
        Ok(())
    }

    async fn delete(&self, id: &str) -> Result<()> {
        in_tx!(self, "delete", |tx| {
            tx.execute(
                "DELETE FROM instances WHERE id = $1 AND node = $2",
                &[&id, &self.node],
            )
            .await?;
        })
    }

    async fn set_traffic(&self, totals: &[(String, TrafficTotals)]) -> Result<()> {
        if totals.is_empty() {
            return Ok(());
        }
        // One statement for every instance (not one per instance); rows whose totals did not
        // change are not written (nor seen as changed by the fleet refresh).
        let ids: Vec<&str> = totals.iter().map(|(id, _)| id.as_str()).collect();
        let column = |f: fn(&TrafficTotals) -> u64| -> Vec<i64> {
            totals.iter().map(|(_, t)| to_i64(f(t))).collect()
        };
        let (tcp_in, tcp_out) = (column(|t| t.tcp_in), column(|t| t.tcp_out));
        let (udp_in, udp_out) = (column(|t| t.udp_in), column(|t| t.udp_out));
        in_tx!(self, "set_traffic", |tx| {
            tx.execute(
                "UPDATE instances AS i SET tcp_in = u.tcp_in, tcp_out = u.tcp_out, \
                 udp_in = u.udp_in, udp_out = u.udp_out \
                 FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[]) \
                 AS u (id, tcp_in, tcp_out, udp_in, udp_out) \
                 WHERE i.id = u.id AND i.node = $6 AND (i.tcp_in, i.tcp_out, i.udp_in, i.udp_out) \
                 IS DISTINCT FROM (u.tcp_in, u.tcp_out, u.udp_in, u.udp_out)",
                &[&ids, &tcp_in, &tcp_out, &udp_in, &udp_out, &self.node],
            )
            .await?;
        })
    }

    async fn reset_traffic(&self, id: &str) -> Result<()> {
        in_tx!(self, "reset_traffic", |tx| {
            tx.execute(
                "UPDATE instances SET tcp_in = 0, tcp_out = 0, udp_in = 0, udp_out = 0, \
                 version = version + 1 WHERE id = $1 AND node = $2",
                &[&id, &self.node],
            )
            .await?;
        })
    }

    async fn append_history(&self, ts_ms: i64, samples: &[(String, TrafficTotals)]) -> Result<()> {
        let cutoff = ts_ms.saturating_sub(retention_ms(self.retention));
        in_tx!(self, "append_history", |tx| {
            let stmt = tx
                .prepare(
                    "INSERT INTO history (id, ts_ms, tcp_in, tcp_out, udp_in, udp_out) \
                     SELECT $1, $2, $3, $4, $5, $6 \
                     WHERE EXISTS (SELECT 1 FROM instances WHERE id = $1 AND node = $7) \
                     ON CONFLICT (id, ts_ms) DO UPDATE SET tcp_in = EXCLUDED.tcp_in, \
                     tcp_out = EXCLUDED.tcp_out, udp_in = EXCLUDED.udp_in, \
                     udp_out = EXCLUDED.udp_out",
                )
                .await?;
            for (id, t) in samples {
                tx.execute(
                    &stmt,
                    &[
                        id,
                        &ts_ms,
                        &to_i64(t.tcp_in),
                        &to_i64(t.tcp_out),
                        &to_i64(t.udp_in),
                        &to_i64(t.udp_out),
                        &self.node,
                    ],
                )
                .await?;
            }
            prune(&tx, &self.node, cutoff).await?;
        })
    }

    async fn prune_history(&self, older_than_ms: i64) -> Result<u64> {
        in_tx!(self, "prune_history", |tx| {
            prune(&tx, &self.node, older_than_ms).await?
        })
    }

    async fn history(&self, id: &str, since_ms: i64) -> Result<Vec<TrafficSample>> {
        let rows = in_tx!(self, "history", |tx| {
            tx.query(
                "SELECT ts_ms, tcp_in, tcp_out, udp_in, udp_out FROM history \
                 WHERE id = $1 AND ts_ms >= $2 ORDER BY ts_ms",
                &[&id, &since_ms],
            )
            .await?
        })?;
        Ok(rows
            .iter()
            .map(|row| TrafficSample {
                ts_ms: row.get(0),
                traffic: TrafficTotals {
                    tcp_in: to_u64(row.get(1)),
                    tcp_out: to_u64(row.get(2)),
                    udp_in: to_u64(row.get(3)),
                    udp_out: to_u64(row.get(4)),
                },
            })
            .collect())
    }

    async fn setting(&self, name: &str) -> Result<Option<String>> {
        in_tx!(self, "setting", |tx| {
            tx.query_opt(
                "SELECT value FROM settings WHERE node = $1 AND name = $2",
                &[&self.node, &name],
            )
            .await?
            .map(|r| r.get(0))
        })
    }

    async fn set_setting(&self, name: &str, value: &str) -> Result<()> {
        in_tx!(self, "set_setting", |tx| {
            tx.execute(
                "INSERT INTO settings (node, name, value) VALUES ($1, $2, $3) \
                 ON CONFLICT (node, name) DO UPDATE SET value = EXCLUDED.value",
                &[&self.node, &name, &value],
            )
            .await?;
        })
    }
}

/// Drop the node's samples taken before `older_than_ms`.
async fn prune(
    tx: &tokio_postgres::Transaction<'_>,
    node: &str,
    older_than_ms: i64,
) -> std::result::Result<u64, tokio_postgres::Error> {
    tx.execute(
        "DELETE FROM history WHERE ts_ms < $1 \
         AND id IN (SELECT id FROM instances WHERE node = $2)",
        &[&older_than_ms, &node],
    )
    .await
}

#[cfg(test)]
mod tests;
