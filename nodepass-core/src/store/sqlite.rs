//! [`SqliteStore`]: the [`Store`] in one SQLite file (schema and guarantees in the
//! [module docs](super)).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior};

use super::schema::open_connection;
use super::{
    DEFAULT_HISTORY_RETENTION, Desired, InstanceRecord, Meta, Result, Store, StoreError,
    TrafficSample, TrafficTotals, retention_ms,
};

/// A [`Store`] in one SQLite file, opened with [`SqliteStore::open`].
pub struct SqliteStore {
    path: PathBuf,
    retention: Duration,
    /// One connection; every method locks it for one short synchronous call, so the lock is never
    /// held across an `.await`.
    conn: Mutex<Connection>,
}

impl SqliteStore {
    /// Open the store at `path`, creating the file (mode `0600`) and the schema if needed.
    ///
    /// Refuses, without changing the file, anything it cannot use safely: see the
    /// [module docs](super#durability). The parent directory must exist.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let conn = open_connection(&path)?;
        tracing::debug!(path = %path.display(), "store opened");
        Ok(SqliteStore {
            path,
            retention: DEFAULT_HISTORY_RETENTION,
            conn: Mutex::new(conn),
        })
    }

    /// Keep history samples for `retention` instead of [`DEFAULT_HISTORY_RETENTION`].
    pub fn with_history_retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The connection. A panic while it was held rolled its transaction back, so a poisoned lock
    /// still guards a consistent connection.
    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Run `f` in one immediate transaction: committed if it succeeds, rolled back otherwise.
    fn write<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T> {
        let sql_error = |source| StoreError::Sqlite { op, source };
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql_error)?;
        let out = f(&tx).map_err(sql_error)?;
        tx.commit().map_err(sql_error)?;
        Ok(out)
    }

    fn corrupt(&self, reason: String) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            reason,
        }
    }

    fn decode_instance(&self, row: &RawInstance) -> Result<InstanceRecord> {
        let meta: Meta = serde_json::from_str(&row.meta)
            .map_err(|e| self.corrupt(format!("instance {}: bad meta: {e}", row.id)))?;
        let desired = Desired::from_text(&row.desired).ok_or_else(|| {
            self.corrupt(format!(
                "instance {}: bad desired {:?}",
                row.id, row.desired
            ))
        })?;
        let record = InstanceRecord {
            id: row.id.clone(),
            alias: row.alias.clone(),
            url: row.url.clone(),
            restart: row.restart != 0,
            meta,
            traffic: row.traffic,
            created_at: row.created_at,
            updated_at: row.updated_at,
            desired,
        };
        record
            .validate()
            .map_err(|e| self.corrupt(format!("instance {}: {e}", row.id)))?;
        Ok(record)
    }
}

/// An `instances` row as stored, before decoding.
struct RawInstance {
    id: String,
    alias: Option<String>,
    url: String,
    restart: i64,
    meta: String,
    traffic: TrafficTotals,
    created_at: i64,
    updated_at: i64,
    desired: String,
}

/// Counters are stored bit for bit: `u64` as `i64` and back (see the module docs).
fn to_sql_counter(v: u64) -> i64 {
    v as i64
}

fn traffic_from_row(row: &Row<'_>, first: usize) -> rusqlite::Result<TrafficTotals> {
    let counter = |i: usize| row.get::<_, i64>(first + i).map(|v| v as u64);
    Ok(TrafficTotals {
        tcp_in: counter(0)?,
        tcp_out: counter(1)?,
        udp_in: counter(2)?,
        udp_out: counter(3)?,
    })
}

fn set_traffic_row(conn: &Connection, id: &str, t: &TrafficTotals) -> rusqlite::Result<usize> {
    conn.prepare_cached(
        "UPDATE instances SET tcp_in = ?2, tcp_out = ?3, udp_in = ?4, udp_out = ?5 WHERE id = ?1",
    )?
    .execute((
        id,
        to_sql_counter(t.tcp_in),
        to_sql_counter(t.tcp_out),
        to_sql_counter(t.udp_in),
        to_sql_counter(t.udp_out),
    ))
}

impl Store for SqliteStore {
    fn load(&self) -> Result<Vec<InstanceRecord>> {
        let sql_error = |source| StoreError::Sqlite { op: "load", source };
        let raw = {
            let conn = self.conn();
            let mut stmt = conn
                .prepare_cached(
                    "SELECT id, alias, url, restart, meta, tcp_in, tcp_out, udp_in, udp_out, \
                     created_at, updated_at, desired FROM instances ORDER BY created_at, id",
                )
                .map_err(sql_error)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(RawInstance {
                        id: r.get(0)?,
                        alias: r.get(1)?,
                        url: r.get(2)?,
                        restart: r.get(3)?,
                        meta: r.get(4)?,
                        traffic: traffic_from_row(r, 5)?,
                        created_at: r.get(9)?,
                        updated_at: r.get(10)?,
                        desired: r.get(11)?,
                    })
                })
                .map_err(sql_error)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
                .map_err(sql_error)?
        };
        raw.iter().map(|r| self.decode_instance(r)).collect()
    }

    fn put(&self, record: &InstanceRecord) -> Result<()> {
        record.validate()?;
        let meta = serde_json::to_string(&record.meta).map_err(|e| StoreError::Invalid {
            reason: format!("meta of {} does not serialize: {e}", record.id),
        })?;
        let t = &record.traffic;
        self.write("put", |conn| {
            conn.prepare_cached(
                "INSERT INTO instances (id, alias, url, restart, meta, tcp_in, tcp_out, udp_in, \
                 udp_out, created_at, updated_at, desired) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) \
                 ON CONFLICT (id) DO UPDATE SET alias = excluded.alias, url = excluded.url, \
                 restart = excluded.restart, meta = excluded.meta, tcp_in = excluded.tcp_in, \
                 tcp_out = excluded.tcp_out, udp_in = excluded.udp_in, \
                 udp_out = excluded.udp_out, created_at = excluded.created_at, \
                 updated_at = excluded.updated_at, desired = excluded.desired",
            )?
            .execute(rusqlite::params![
                record.id,
                record.alias,
                record.url,
                record.restart,
                meta,
                to_sql_counter(t.tcp_in),
                to_sql_counter(t.tcp_out),
                to_sql_counter(t.udp_in),
                to_sql_counter(t.udp_out),
                record.created_at,
                record.updated_at,
                record.desired.as_str(),
            ])?;
            Ok(())
        })
    }

    fn delete(&self, id: &str) -> Result<()> {
        // `ON DELETE CASCADE` removes the history in the same statement.
        self.write("delete", |conn| {
            conn.prepare_cached("DELETE FROM instances WHERE id = ?1")?
                .execute([id])
                .map(drop)
        })
    }

    fn set_traffic(&self, totals: &[(String, TrafficTotals)]) -> Result<()> {
        self.write("set traffic", |conn| {
            for (id, t) in totals {
                set_traffic_row(conn, id, t)?;
            }
            Ok(())
        })
    }

    fn reset_traffic(&self, id: &str) -> Result<()> {
        self.write("reset traffic", |conn| {
            set_traffic_row(conn, id, &TrafficTotals::ZERO).map(drop)
        })
    }

    fn append_history(&self, ts_ms: i64, samples: &[(String, TrafficTotals)]) -> Result<()> {
        let cutoff = ts_ms.saturating_sub(retention_ms(self.retention));
        self.write("append history", |conn| {
            let mut insert = conn.prepare_cached(
                "INSERT INTO history (id, ts_ms, tcp_in, tcp_out, udp_in, udp_out) \
                 SELECT ?1, ?2, ?3, ?4, ?5, ?6 WHERE EXISTS (SELECT 1 FROM instances WHERE id = ?1) \
                 ON CONFLICT (id, ts_ms) DO UPDATE SET tcp_in = excluded.tcp_in, \
                 tcp_out = excluded.tcp_out, udp_in = excluded.udp_in, udp_out = excluded.udp_out",
            )?;
            for (id, t) in samples {
                insert.execute((
                    id,
                    ts_ms,
                    to_sql_counter(t.tcp_in),
                    to_sql_counter(t.tcp_out),
                    to_sql_counter(t.udp_in),
                    to_sql_counter(t.udp_out),
                ))?;
            }
            conn.prepare_cached("DELETE FROM history WHERE ts_ms < ?1")?
                .execute([cutoff])
                .map(drop)
        })
    }

    fn prune_history(&self, older_than_ms: i64) -> Result<u64> {
        self.write("prune history", |conn| {
            conn.prepare_cached("DELETE FROM history WHERE ts_ms < ?1")?
                .execute([older_than_ms])
                .map(|n| n as u64)
        })
    }

    fn history(&self, id: &str, since_ms: i64) -> Result<Vec<TrafficSample>> {
        let sql_error = |source| StoreError::Sqlite {
            op: "read history",
            source,
        };
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT ts_ms, tcp_in, tcp_out, udp_in, udp_out FROM history \
                 WHERE id = ?1 AND ts_ms >= ?2 ORDER BY ts_ms",
            )
            .map_err(sql_error)?;
        let rows = stmt
            .query_map((id, since_ms), |r| {
                Ok(TrafficSample {
                    ts_ms: r.get(0)?,
                    traffic: traffic_from_row(r, 1)?,
                })
            })
            .map_err(sql_error)?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(sql_error)
    }

    fn setting(&self, name: &str) -> Result<Option<String>> {
        self.conn()
            .prepare_cached("SELECT value FROM settings WHERE name = ?1")
            .and_then(|mut stmt| stmt.query_row([name], |r| r.get(0)).optional())
            .map_err(|source| StoreError::Sqlite {
                op: "read setting",
                source,
            })
    }

    fn set_setting(&self, name: &str, value: &str) -> Result<()> {
        self.write("set setting", |conn| {
            conn.prepare_cached(
                "INSERT INTO settings (name, value) VALUES (?1, ?2) \
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            )?
            .execute((name, value))
            .map(drop)
        })
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .field("retention", &self.retention)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::{TempDir, exercise_store, record};

    #[test]
    fn sqlite_store_passes_the_shared_behaviour() {
        let dir = TempDir::new("shared");
        exercise_store(&SqliteStore::open(dir.path().join("state.db")).unwrap());
    }

    #[test]
    fn reopen_keeps_everything() {
        let dir = TempDir::new("reopen");
        let path = dir.path().join("state.db");
        let records: Vec<_> = (1..=20).map(record).collect();
        {
            let store = SqliteStore::open(&path).unwrap();
            for r in &records {
                store.put(r).unwrap();
            }
            store.delete(&records[5].id).unwrap();
            let totals = vec![(
                records[0].id.clone(),
                TrafficTotals::ZERO + records[1].traffic,
            )];
            store.set_traffic(&totals).unwrap();
            store.append_history(10, &totals).unwrap();
            store.append_history(20, &totals).unwrap();
            store.set_setting("api_key", "$hash$").unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let mut expected = records.clone();
        expected.remove(5);
        expected[0].traffic = records[1].traffic;
        assert_eq!(store.load().unwrap(), expected);
        let hist = store.history(&records[0].id, 0).unwrap();
        assert_eq!(hist.len(), 2);
        assert!(hist.iter().all(|s| s.traffic == records[1].traffic));
        assert_eq!(store.setting("api_key").unwrap().as_deref(), Some("$hash$"));
    }

    #[test]
    fn a_failed_write_keeps_the_previous_state() {
        let dir = TempDir::new("atomic");
        let store = SqliteStore::open(dir.path().join("state.db")).unwrap();
        let (a, b) = (record(1), record(2));
        store.put(&a).unwrap();
        store.put(&b).unwrap();
        store
            .conn()
            .execute_batch(&format!(
                "CREATE TEMP TRIGGER fail BEFORE UPDATE ON main.instances WHEN NEW.id = '{}' \
                 BEGIN SELECT RAISE(ABORT, 'injected'); END;",
                b.id
            ))
            .unwrap();
        let batch = [
            (a.id.clone(), TrafficTotals::ZERO),
            (b.id.clone(), TrafficTotals::ZERO),
        ];
        let err = store.set_traffic(&batch).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Sqlite {
                    op: "set traffic",
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            store.load().unwrap(),
            [a.clone(), b.clone()],
            "nothing of the batch applied"
        );
        let mut b2 = b.clone();
        b2.url = "changed".into();
        assert!(store.put(&b2).is_err());
        assert_eq!(store.load().unwrap(), [a, b]);
    }

    /// Not a pass/fail test: `cargo test -p nodepass-core put_latency -- --ignored --nocapture`.
    #[test]
    #[ignore = "timing report"]
    fn put_latency() {
        let dir = TempDir::new("latency");
        let store = SqliteStore::open(dir.path().join("state.db")).unwrap();
        let n = 500u32;
        let started = std::time::Instant::now();
        for i in 0..n {
            store.put(&record(i)).unwrap();
        }
        let per_put = started.elapsed() / n;
        let batch: Vec<_> = (0..n)
            .map(|i| (record(i).id, TrafficTotals::ZERO))
            .collect();
        let started = std::time::Instant::now();
        store.set_traffic(&batch).unwrap();
        let flush = started.elapsed();
        let started = std::time::Instant::now();
        store.append_history(1, &batch).unwrap();
        let hist = started.elapsed();
        let started = std::time::Instant::now();
        let loaded = store.load().unwrap().len();
        println!(
            "put {per_put:?} each; set_traffic({n}) {flush:?}; append_history({n}) {hist:?}; \
             load({loaded}) {:?}",
            started.elapsed()
        );
    }
}
