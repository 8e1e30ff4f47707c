//! [`SqliteStore`]: the [`Store`] in one SQLite file (schema and guarantees in the
//! [module docs](super)).

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior};

use super::schema::open_connection;
use super::{
    BackendError, DEFAULT_HISTORY_RETENTION, Desired, InstanceRecord, Meta, Result, Store,
    StoreError, TrafficSample, TrafficTotals, retention_ms,
};

/// A [`Store`] in one SQLite file, opened with [`SqliteStore::open`].
///
/// The connection lives on a dedicated writer thread (`nodepass-store`): every call of the
/// [`Store`] trait is queued to it and awaited, so no SQLite work (and no `fsync`) runs on the
/// async runtime's threads. Calls run one at a time, in the order they were made. Dropping the
/// store waits for the queued calls, closes the connection and releases the file's lock before
/// it returns, so the file can be opened again at once.
pub struct SqliteStore {
    path: PathBuf,
    jobs: Option<mpsc::Sender<Job>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

/// One call, run on the writer thread.
type Job = Box<dyn FnOnce(&mut Db) + Send>;

impl SqliteStore {
    /// Open the store at `path`, creating the file (mode `0600`) and the schema if needed, and
    /// start its writer thread.
    ///
    /// Refuses, without changing the file, anything it cannot use safely: see the
    /// [module docs](super#durability). The parent directory must exist. This opens and checks
    /// the file on the calling thread (it may take a while on a large file): from async code,
    /// call it inside `tokio::task::spawn_blocking`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let conn = open_connection(&path)?;
        tracing::debug!(path = %path.display(), "store opened");
        let mut db = Db {
            path: path.clone(),
            retention: DEFAULT_HISTORY_RETENTION,
            conn,
        };
        let (jobs, queue) = mpsc::channel::<Job>();
        let writer = std::thread::Builder::new()
            .name("nodepass-store".into())
            .spawn(move || {
                for job in queue {
                    // A panicking call rolled its transaction back (the `Transaction` guard)
                    // and its caller sees the writer gone for that call only; keep serving.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&mut db)));
                }
            })
            .map_err(|source| StoreError::Io {
                op: "start the writer thread of",
                path: path.clone(),
                source,
            })?;
        Ok(SqliteStore {
            path,
            jobs: Some(jobs),
            writer: Some(writer),
        })
    }

    /// Keep history samples for `retention` instead of [`DEFAULT_HISTORY_RETENTION`].
    pub fn with_history_retention(self, retention: Duration) -> Self {
        // Queued before any call made on the returned store, so it applies to all of them.
        self.enqueue(Box::new(move |db| db.retention = retention));
        self
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn enqueue(&self, job: Job) -> bool {
        self.jobs
            .as_ref()
            .is_some_and(|jobs| jobs.send(job).is_ok())
    }

    /// Run `f` on the writer thread and wait for its result. Cancelling the returned future
    /// does not cancel `f`: once queued it runs to completion, committed or rolled back.
    pub(crate) async fn call<T: Send + 'static>(
        &self,
        op: &'static str,
        f: impl FnOnce(&mut Db) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let gone = || StoreError::Backend {
            op,
            source: BackendError::new(std::io::Error::other("the store's writer thread stopped")),
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        if !self.enqueue(Box::new(move |db| {
            let _ = tx.send(f(db));
        })) {
            return Err(gone());
        }
        rx.await.map_err(|_| gone())?
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Closing the queue ends the writer after the calls already queued; joining it means
        // the connection (and the file lock) is closed when `drop` returns.
        self.jobs.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// The connection and what the calls need, owned by the writer thread.
pub(crate) struct Db {
    path: PathBuf,
    retention: Duration,
    conn: Connection,
}

impl Db {
    /// The connection (tests use it to inject failures).
    #[cfg(test)]
    pub(crate) fn conn(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// Run `f` in one immediate transaction: committed if it succeeds, rolled back otherwise.
    fn write<T>(
        &mut self,
        op: &'static str,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T> {
        let sql_error = |source| StoreError::Backend {
            op,
            source: BackendError::new(source),
        };
        let tx = self
            .conn
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

impl Db {
    fn load(&self) -> Result<Vec<InstanceRecord>> {
        let sql_error = |source| StoreError::Backend {
            op: "load",
            source: BackendError::new(source),
        };
        let raw = {
            let conn = &self.conn;
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

    fn put(&mut self, record: &InstanceRecord) -> Result<()> {
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

    fn delete(&mut self, id: &str) -> Result<()> {
        // `ON DELETE CASCADE` removes the history in the same statement.
        self.write("delete", |conn| {
            conn.prepare_cached("DELETE FROM instances WHERE id = ?1")?
                .execute([id])
                .map(drop)
        })
    }

    fn set_traffic(&mut self, totals: &[(String, TrafficTotals)]) -> Result<()> {
        self.write("set traffic", |conn| {
            for (id, t) in totals {
                set_traffic_row(conn, id, t)?;
            }
            Ok(())
        })
    }

    fn reset_traffic(&mut self, id: &str) -> Result<()> {
        self.write("reset traffic", |conn| {
            set_traffic_row(conn, id, &TrafficTotals::ZERO).map(drop)
        })
    }

    fn append_history(&mut self, ts_ms: i64, samples: &[(String, TrafficTotals)]) -> Result<()> {
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

    fn prune_history(&mut self, older_than_ms: i64) -> Result<u64> {
        self.write("prune history", |conn| {
            conn.prepare_cached("DELETE FROM history WHERE ts_ms < ?1")?
                .execute([older_than_ms])
                .map(|n| n as u64)
        })
    }

    fn history(&self, id: &str, since_ms: i64) -> Result<Vec<TrafficSample>> {
        let sql_error = |source| StoreError::Backend {
            op: "read history",
            source: BackendError::new(source),
        };
        let conn = &self.conn;
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
        self.conn
            .prepare_cached("SELECT value FROM settings WHERE name = ?1")
            .and_then(|mut stmt| stmt.query_row([name], |r| r.get(0)).optional())
            .map_err(|source| StoreError::Backend {
                op: "read setting",
                source: BackendError::new(source),
            })
    }

    fn set_setting(&mut self, name: &str, value: &str) -> Result<()> {
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

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn load(&self) -> Result<Vec<InstanceRecord>> {
        self.call("load", |db| db.load()).await
    }

    async fn put(&self, record: &InstanceRecord) -> Result<()> {
        // Refused records never reach the queue.
        record.validate()?;
        let record = record.clone();
        self.call("put", move |db| db.put(&record)).await
    }

    async fn delete(&self, id: &str) -> Result<()> {
        let id = id.to_owned();
        self.call("delete", move |db| db.delete(&id)).await
    }

    async fn set_traffic(&self, totals: &[(String, TrafficTotals)]) -> Result<()> {
        let totals = totals.to_vec();
        self.call("set traffic", move |db| db.set_traffic(&totals))
            .await
    }

    async fn reset_traffic(&self, id: &str) -> Result<()> {
        let id = id.to_owned();
        self.call("reset traffic", move |db| db.reset_traffic(&id))
            .await
    }

    async fn append_history(&self, ts_ms: i64, samples: &[(String, TrafficTotals)]) -> Result<()> {
        let samples = samples.to_vec();
        self.call("append history", move |db| {
            db.append_history(ts_ms, &samples)
        })
        .await
    }

    async fn prune_history(&self, older_than_ms: i64) -> Result<u64> {
        self.call("prune history", move |db| db.prune_history(older_than_ms))
            .await
    }

    async fn history(&self, id: &str, since_ms: i64) -> Result<Vec<TrafficSample>> {
        let id = id.to_owned();
        self.call("read history", move |db| db.history(&id, since_ms))
            .await
    }

    async fn setting(&self, name: &str) -> Result<Option<String>> {
        let name = name.to_owned();
        self.call("read setting", move |db| db.setting(&name)).await
    }

    async fn set_setting(&self, name: &str, value: &str) -> Result<()> {
        let (name, value) = (name.to_owned(), value.to_owned());
        self.call("write setting", move |db| db.set_setting(&name, &value))
            .await
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::{exercise_store, record};
    use nodepass_testkit::temp_dir;

    #[tokio::test]
    async fn sqlite_store_passes_the_shared_behaviour() {
        let dir = temp_dir("shared");
        exercise_store(&SqliteStore::open(dir.path().join("state.db")).unwrap()).await;
    }

    #[tokio::test]
    async fn reopen_keeps_everything() {
        let dir = temp_dir("reopen");
        let path = dir.path().join("state.db");
        let records: Vec<_> = (1..=20).map(record).collect();
        {
            let store = SqliteStore::open(&path).unwrap();
            for r in &records {
                store.put(r).await.unwrap();
            }
            store.delete(&records[5].id).await.unwrap();
            let totals = vec![(
                records[0].id.clone(),
                TrafficTotals::ZERO + records[1].traffic,
            )];
            store.set_traffic(&totals).await.unwrap();
            store.append_history(10, &totals).await.unwrap();
            store.append_history(20, &totals).await.unwrap();
            store.set_setting("api_key", "$hash$").await.unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let mut expected = records.clone();
        expected.remove(5);
        expected[0].traffic = records[1].traffic;
        assert_eq!(store.load().await.unwrap(), expected);
        let hist = store.history(&records[0].id, 0).await.unwrap();
        assert_eq!(hist.len(), 2);
        assert!(hist.iter().all(|s| s.traffic == records[1].traffic));
        assert_eq!(
            store.setting("api_key").await.unwrap().as_deref(),
            Some("$hash$")
        );
    }

    #[tokio::test]
    async fn a_failed_write_keeps_the_previous_state() {
        let dir = temp_dir("atomic");
        let store = SqliteStore::open(dir.path().join("state.db")).unwrap();
        let (a, b) = (record(1), record(2));
        store.put(&a).await.unwrap();
        store.put(&b).await.unwrap();
        let trigger = format!(
            "CREATE TEMP TRIGGER fail BEFORE UPDATE ON main.instances WHEN NEW.id = '{}' \
             BEGIN SELECT RAISE(ABORT, 'injected'); END;",
            b.id
        );
        store
            .call("inject", move |db| {
                db.conn()
                    .execute_batch(&trigger)
                    .map_err(|e| StoreError::Backend {
                        op: "inject",
                        source: BackendError::new(e),
                    })
            })
            .await
            .unwrap();
        let batch = [
            (a.id.clone(), TrafficTotals::ZERO),
            (b.id.clone(), TrafficTotals::ZERO),
        ];
        let err = store.set_traffic(&batch).await.unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Backend {
                    op: "set traffic",
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            store.load().await.unwrap(),
            [a.clone(), b.clone()],
            "nothing of the batch applied"
        );
        let mut b2 = b.clone();
        b2.url = "changed".into();
        assert!(store.put(&b2).await.is_err());
        assert_eq!(store.load().await.unwrap(), [a, b]);
    }

    /// Not a pass/fail test: `cargo test -p nodepass-core put_latency -- --ignored --nocapture`.
    #[tokio::test]
    #[ignore = "timing report"]
    async fn put_latency() {
        let dir = temp_dir("latency");
        let store = SqliteStore::open(dir.path().join("state.db")).unwrap();
        let n = 500u32;
        let started = std::time::Instant::now();
        for i in 0..n {
            store.put(&record(i)).await.unwrap();
        }
        let per_put = started.elapsed() / n;
        let batch: Vec<_> = (0..n)
            .map(|i| (record(i).id, TrafficTotals::ZERO))
            .collect();
        let started = std::time::Instant::now();
        store.set_traffic(&batch).await.unwrap();
        let flush = started.elapsed();
        let started = std::time::Instant::now();
        store.append_history(1, &batch).await.unwrap();
        let hist = started.elapsed();
        let started = std::time::Instant::now();
        let loaded = store.load().await.unwrap().len();
        println!(
            "put {per_put:?} each; set_traffic({n}) {flush:?}; append_history({n}) {hist:?}; \
             load({loaded}) {:?}",
            started.elapsed()
        );
    }
}
