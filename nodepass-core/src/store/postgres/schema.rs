//! Versioned migrations of the PostgreSQL schema (see [`super`] for the tables).
//!
//! Each migration runs once, in its own transaction, under a transaction-scoped advisory lock,
//! so that masters starting at the same time against an empty database never race: the first
//! one migrates, the others wait and then find the version recorded. A database whose newest
//! recorded version is above [`PG_SCHEMA_VERSION`] is refused (written by a newer build).

use super::{PostgresStore, TxError, in_tx};
use crate::store::{Result, StoreError};

/// The newest schema version this build writes and reads.
pub const PG_SCHEMA_VERSION: i32 = 3;

/// The advisory lock key held while migrating (`NPST` in ASCII).
const MIGRATION_LOCK: i64 = 0x4e50_5354;

/// Migrations in order; index + 1 is the version.
const MIGRATIONS: &[&str] = &[
    // 1: the store (instances, history, settings) with fleet columns, and the nodes.
    r"
    CREATE TABLE instances (
        id TEXT PRIMARY KEY CHECK (id ~ '^[0-9a-f]{8}$'),
        node TEXT NOT NULL,
        alias TEXT,
        url TEXT NOT NULL,
        restart BOOLEAN NOT NULL,
        meta TEXT NOT NULL,
        tcp_in BIGINT NOT NULL, tcp_out BIGINT NOT NULL,
        udp_in BIGINT NOT NULL, udp_out BIGINT NOT NULL,
        created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL,
        desired TEXT NOT NULL CHECK (desired IN ('running', 'stopped')),
        version BIGINT NOT NULL DEFAULT 1,
        status TEXT NOT NULL DEFAULT 'stopped',
        error TEXT,
        status_ms BIGINT NOT NULL DEFAULT 0,
        spec TEXT,
        spec_version BIGINT NOT NULL DEFAULT 0,
        applied_spec BIGINT NOT NULL DEFAULT 0
    );
    CREATE INDEX instances_by_node ON instances (node);
    CREATE TABLE history (
        id TEXT NOT NULL REFERENCES instances (id) ON DELETE CASCADE,
        ts_ms BIGINT NOT NULL,
        tcp_in BIGINT NOT NULL, tcp_out BIGINT NOT NULL,
        udp_in BIGINT NOT NULL, udp_out BIGINT NOT NULL,
        PRIMARY KEY (id, ts_ms)
    );
    CREATE INDEX history_by_ts ON history (ts_ms);
    CREATE TABLE settings (
        node TEXT NOT NULL,
        name TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (node, name)
    );
    CREATE TABLE nodes (
        name TEXT PRIMARY KEY,
        api TEXT NOT NULL,
        version TEXT NOT NULL,
        started_ms BIGINT NOT NULL,
        seen_ms BIGINT NOT NULL
    );
    ",
    // 2: change tracking for the incremental fleet refresh. Every insert or update of an
    // instance stamps the row with its transaction id (`changed_xid`), every delete leaves a
    // tombstone stamped the same way; a reader that remembers the oldest transaction still
    // running when it last read (its snapshot's `xmin`) reads only rows stamped since.
    r"
    ALTER TABLE instances ADD COLUMN changed_xid BIGINT NOT NULL DEFAULT 0;
    CREATE INDEX instances_by_change ON instances (changed_xid);
    CREATE TABLE instance_deletions (
        id TEXT NOT NULL,
        node TEXT NOT NULL,
        changed_xid BIGINT NOT NULL,
        deleted_ms BIGINT NOT NULL
    );
    CREATE INDEX instance_deletions_by_change ON instance_deletions (changed_xid);
    CREATE FUNCTION nodepass_touch() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        NEW.changed_xid := txid_current();
        RETURN NEW;
    END $$;
    CREATE TRIGGER instances_touch BEFORE INSERT OR UPDATE ON instances
        FOR EACH ROW EXECUTE FUNCTION nodepass_touch();
    CREATE FUNCTION nodepass_tombstone() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO instance_deletions (id, node, changed_xid, deleted_ms)
            VALUES (OLD.id, OLD.node, txid_current(),
                    (extract(epoch from clock_timestamp()) * 1000)::bigint);
        RETURN OLD;
    END $$;
    CREATE TRIGGER instances_tombstone AFTER DELETE ON instances
        FOR EACH ROW EXECUTE FUNCTION nodepass_tombstone();
    ",
    // 3: a change the owner took for applying stays in `taken_spec` until it is applied, so
    // that an owner that dies (or loses the database) in between applies it when it is back.
    r"
    ALTER TABLE instances ADD COLUMN taken_spec TEXT;
    ",
];

impl PostgresStore {
    /// Bring the schema to [`PG_SCHEMA_VERSION`].
    pub(super) async fn migrate(&self) -> Result<()> {
        let label = self.label.clone();
        in_tx!(self, "migrate", |tx| {
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                .await?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS nodepass_migrations (
                     version INTEGER PRIMARY KEY,
                     applied_ms BIGINT NOT NULL
                 )",
            )
            .await?;
            let row = tx
                .query_one(
                    "SELECT COALESCE(MAX(version), 0) FROM nodepass_migrations",
                    &[],
                )
                .await?;
            let found: i32 = row.get(0);
            if found > PG_SCHEMA_VERSION {
                return Err(TxError::Store(StoreError::UnsupportedVersion {
                    path: label.into(),
                    found: i64::from(found),
                    supported: i64::from(PG_SCHEMA_VERSION),
                }));
            }
            for (index, sql) in MIGRATIONS.iter().enumerate() {
                let version = i32::try_from(index + 1).unwrap_or(i32::MAX);
                if version <= found {
                    continue;
                }
                tx.batch_execute(sql).await?;
                tx.execute(
                    "INSERT INTO nodepass_migrations (version, applied_ms) VALUES ($1, $2)",
                    &[&version, &crate::supervisor::now_ms()],
                )
                .await?;
                tracing::info!(version, "store schema migrated");
            }
        })
    }
}
