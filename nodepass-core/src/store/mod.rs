//! Durable state of the supervisor: instances, their traffic, a traffic history and settings.
//!
//! A [`Store`] keeps what must survive a restart of the program: every [`InstanceRecord`]
//! (URL with its secret key, alias, restart policy, metadata, cumulative traffic and whether the
//! operator left it running or stopped), periodic [`TrafficSample`]s per instance, and a small
//! key/value table of settings (the master API keeps its hashed API key there).
//!
//! Three implementations:
//! - [`SqliteStore`]: one SQLite file, for the supervisor.
//! - [`PostgresStore`]: a PostgreSQL database shared by a fleet of masters, one node each
//!   (feature `postgres`; see [`postgres`]).
//! - [`MemoryStore`]: nothing on disk, for tests and embedders that want no file.
//!
//! The trait is small and async; each call is one short transaction. [`SqliteStore`] does the
//! SQLite work on a dedicated writer thread, so callers never block the async runtime.
//!
//! # Schema (version 1 in `PRAGMA user_version`, `PRAGMA application_id` = `NPST`)
//! ```sql
//! CREATE TABLE instances (
//!     id TEXT PRIMARY KEY NOT NULL CHECK (length(id) = 8),  -- lower-case hex
//!     alias TEXT,
//!     url TEXT NOT NULL,                -- includes the tunnel key
//!     restart INTEGER NOT NULL,         -- 0 or 1
//!     meta TEXT NOT NULL,               -- Meta as JSON
//!     tcp_in INTEGER NOT NULL, tcp_out INTEGER NOT NULL,
//!     udp_in INTEGER NOT NULL, udp_out INTEGER NOT NULL,
//!     created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,  -- unix ms
//!     desired TEXT NOT NULL CHECK (desired IN ('running', 'stopped'))
//! ) STRICT;
//! CREATE TABLE history (
//!     id TEXT NOT NULL REFERENCES instances(id) ON DELETE CASCADE,
//!     ts_ms INTEGER NOT NULL,
//!     tcp_in INTEGER NOT NULL, tcp_out INTEGER NOT NULL,
//!     udp_in INTEGER NOT NULL, udp_out INTEGER NOT NULL,
//!     PRIMARY KEY (id, ts_ms)
//! ) STRICT, WITHOUT ROWID;
//! CREATE INDEX history_by_ts ON history(ts_ms);
//! CREATE TABLE settings (name TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL) STRICT;
//! ```
//! Counters are `u64` in Rust and `INTEGER` (i64) in SQLite: they are stored bit for bit, so a
//! value above `i64::MAX` reads back exactly but looks negative to other SQLite tools.
//!
//! # Durability
//! - Every write is one transaction: when a call returns `Ok` the change is on disk (WAL mode,
//!   `synchronous=FULL`); when it returns `Err` the previously committed state is intact.
//! - [`SqliteStore::open`] never resets a file it cannot use: an unreadable file or one that is not
//!   a database is [`StoreError::Open`], a failed `quick_check` or an undecodable row is
//!   [`StoreError::Corrupt`], a newer schema is [`StoreError::UnsupportedVersion`]; the file is
//!   left as it was.
//! - The file holds secrets: it is created with mode `0600` (SQLite gives its `-wal` file the same
//!   mode), and group or other permission bits on an existing file are removed at open.
//! - One process at a time: the file is locked exclusively while a `SqliteStore` is open; a second
//!   opener gets [`StoreError::Locked`].
//!
//! History is capped by age: [`Store::append_history`] drops samples older than the store's
//! retention ([`DEFAULT_HISTORY_RETENTION`], 7 days, unless set otherwise) before the new sample.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;
mod record;
#[cfg(feature = "sqlite")]
mod schema;
#[cfg(feature = "sqlite")]
mod sqlite;

/// The attribute for implementing [`Store`] (`#[nodepass_core::store::async_trait]` on the
/// `impl`), re-exported so that an implementation needs no dependency of its own.
pub use async_trait::async_trait;
pub use memory::MemoryStore;
#[cfg(feature = "postgres")]
pub use postgres::{PostgresConfig, PostgresStore};
pub use record::{
    Desired, InstanceRecord, MAX_ALIAS_CHARS, Meta, Peer, TrafficSample, TrafficTotals, is_valid_id,
};
#[cfg(feature = "sqlite")]
pub use schema::SCHEMA_VERSION;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;

/// How long [`Store::append_history`] keeps samples unless a store is told otherwise: 7 days.
pub const DEFAULT_HISTORY_RETENTION: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// An error of the database behind a store (SQLite here, another database in another
/// implementation), kept opaque so that the public API depends on no database crate. Read it
/// through `Display` and [`std::error::Error::source`].
#[derive(Debug)]
pub struct BackendError(Box<dyn std::error::Error + Send + Sync + 'static>);

impl BackendError {
    /// Wrap a database error.
    pub fn new(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        BackendError(Box::new(error))
    }
}

impl std::fmt::Display for BackendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for BackendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// `Result` with [`StoreError`] as the default error.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Everything that can go wrong in a [`Store`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The file could not be opened as a SQLite database: unreadable, not a database, or SQLite
    /// refused it. The file is left untouched.
    #[error("cannot open store {}", path.display())]
    Open {
        /// The store file.
        path: PathBuf,
        /// Why.
        #[source]
        source: BackendError,
    },
    /// A file-system operation on the store file failed.
    #[error("cannot {op} {}", path.display())]
    Io {
        /// What was being done, e.g. `create store file`.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A read or write failed; a failed write left the previously committed state.
    #[error("store {op} failed")]
    Backend {
        /// The operation, e.g. `put`.
        op: &'static str,
        /// Why.
        #[source]
        source: BackendError,
    },
    /// The file is a database but its content is damaged or not what this store wrote.
    #[error("store {} is corrupt: {reason}", path.display())]
    Corrupt {
        /// The store file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The file was written by a newer version of this program.
    #[error("store {} has schema version {found}, this build supports up to {supported}", path.display())]
    UnsupportedVersion {
        /// The store file.
        path: PathBuf,
        /// The version in the file.
        found: i64,
        /// The newest version this build reads.
        supported: i64,
    },
    /// Another process (or another `SqliteStore` in this one) has the file open.
    #[error("store {} is in use by another process", path.display())]
    Locked {
        /// The store file.
        path: PathBuf,
    },
    /// The database cannot be reached (down, restarting, network); nothing was written. A
    /// later call tries again (the PostgreSQL store reconnects with back-off).
    #[error("store {op} failed: database unavailable")]
    Unavailable {
        /// The operation, e.g. `put`.
        op: &'static str,
        /// Why.
        #[source]
        source: BackendError,
    },
    /// A record was refused before anything was written.
    #[error("invalid instance record: {reason}")]
    Invalid {
        /// What is wrong with it.
        reason: String,
    },
}

/// Durable state of the supervisor. Every method is one short, atomic operation.
///
/// The trait is async (through `async_trait`, so that `Arc<dyn Store>` works) and is the one a
/// database-backed store implements. Implementations must not block the async runtime:
/// [`SqliteStore`] runs SQLite on its own writer thread, a network database would use its async
/// client. **Cancel safety**: dropping a call's future does not undo it; a write that was
/// already handed to the database completes or fails atomically as if it had been awaited, so a
/// caller that cancels must treat the outcome as unknown (the supervisor never cancels them).
///
/// Ids name instances by [`InstanceRecord::id`]. Operations on an id that is not stored
/// ([`delete`](Store::delete), [`reset_traffic`](Store::reset_traffic), entries of
/// [`set_traffic`](Store::set_traffic) and [`append_history`](Store::append_history)) do nothing
/// and succeed, so a periodic flush racing with a delete is harmless.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Every stored instance, ordered by `created_at` then `id`.
    async fn load(&self) -> Result<Vec<InstanceRecord>>;

    /// Insert `record`, or replace the whole stored record with the same id.
    /// Fails with [`StoreError::Invalid`] if [`InstanceRecord::validate`] does.
    async fn put(&self, record: &InstanceRecord) -> Result<()>;

    /// Remove an instance and its history.
    async fn delete(&self, id: &str) -> Result<()>;

    /// Overwrite the cumulative traffic of several instances in one transaction.
    async fn set_traffic(&self, totals: &[(String, TrafficTotals)]) -> Result<()>;

    /// Set an instance's traffic to zero. Its history is kept: a reader of the history sees the
    /// counters drop, which it should treat as a reset (as with any cumulative counter).
    async fn reset_traffic(&self, id: &str) -> Result<()>;

    /// Record one sample per listed instance at `ts_ms` (a sample with the same instance and time
    /// is replaced), then drop every sample older than `ts_ms` minus the store's retention.
    async fn append_history(&self, ts_ms: i64, samples: &[(String, TrafficTotals)]) -> Result<()>;

    /// Drop every sample taken before `older_than_ms`; returns how many were dropped.
    async fn prune_history(&self, older_than_ms: i64) -> Result<u64>;

    /// The samples of an instance taken at or after `since_ms`, oldest first.
    async fn history(&self, id: &str, since_ms: i64) -> Result<Vec<TrafficSample>>;

    /// The value of a setting, if set.
    async fn setting(&self, name: &str) -> Result<Option<String>>;

    /// Set (or replace) a setting.
    async fn set_setting(&self, name: &str, value: &str) -> Result<()>;
}

/// Retention as whole milliseconds, saturating.
fn retention_ms(retention: Duration) -> i64 {
    i64::try_from(retention.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
pub(crate) mod tests {
    //! The behaviour every [`Store`] shares, run against each implementation, and fixtures.

    use super::*;

    /// A record with every field set, distinct for each `n`.
    pub(crate) fn record(n: u32) -> InstanceRecord {
        let meta = Meta {
            peer: Peer {
                sid: format!("sid-{n}"),
                kind: "client".into(),
                alias: format!("peer {n}"),
            },
            tags: [("n", n.to_string()), ("zone", "eu-1".into())]
                .map(|(k, v)| (k.to_owned(), v))
                .into(),
        };
        InstanceRecord {
            id: format!("{n:08x}"),
            alias: n.is_multiple_of(2).then(|| format!("tunnel \"{n}\" ✓")),
            url: format!(
                "server://secret{n}@0.0.0.0:{}/127.0.0.1:80?tls=1",
                10_000 + n
            ),
            restart: n.is_multiple_of(3),
            meta,
            traffic: TrafficTotals {
                tcp_in: u64::from(n) * 1000,
                tcp_out: u64::from(n) * 2000,
                udp_in: u64::from(n),
                udp_out: u64::MAX - u64::from(n),
            },
            created_at: 1_700_000_000_000 + i64::from(n),
            updated_at: 1_700_000_000_500 + i64::from(n),
            desired: if n.is_multiple_of(2) {
                Desired::Running
            } else {
                Desired::Stopped
            },
        }
    }

    fn traffic(n: u64) -> TrafficTotals {
        TrafficTotals {
            tcp_in: n,
            tcp_out: n + 1,
            udp_in: n + 2,
            udp_out: n + 3,
        }
    }

    fn times(samples: &[TrafficSample]) -> Vec<i64> {
        samples.iter().map(|s| s.ts_ms).collect()
    }

    /// Everything the [`Store`] docs promise, against an empty store with default retention.
    pub(crate) async fn exercise_store(store: &dyn Store) {
        assert!(store.load().await.unwrap().is_empty());

        // Insert out of order; load sorts by created_at, then id.
        let (a, b, mut c) = (record(7), record(2), record(4));
        c.created_at = b.created_at; // tie on created_at: id decides
        for r in [&a, &b, &c] {
            store.put(r).await.unwrap();
        }
        assert_eq!(
            store.load().await.unwrap(),
            [b.clone(), c.clone(), a.clone()]
        );

        // Update replaces the whole record.
        let mut a2 = a.clone();
        a2.alias = None;
        a2.url = "client://other@example.com:1/127.0.0.1:2".into();
        a2.restart = !a.restart;
        a2.meta = Meta::default();
        a2.desired = Desired::Running;
        a2.updated_at += 1;
        store.put(&a2).await.unwrap();
        assert_eq!(
            store.load().await.unwrap(),
            [b.clone(), c.clone(), a2.clone()]
        );

        // Invalid records are refused and change nothing.
        let mut bad = record(9);
        bad.id = "NOT-HEX!".into();
        assert!(matches!(
            store.put(&bad).await,
            Err(StoreError::Invalid { .. })
        ));
        assert_eq!(store.load().await.unwrap().len(), 3);

        // Traffic: one batch, unknown ids ignored, totals accumulate from what was stored.
        let base = store.load().await.unwrap()[0].traffic;
        let grown = base + traffic(10);
        store
            .set_traffic(&[
                (b.id.clone(), grown),
                ("ffffffff".into(), traffic(1)),
                (c.id.clone(), traffic(5)),
            ])
            .await
            .unwrap();
        let loaded = store.load().await.unwrap();
        assert_eq!(loaded[0].traffic, grown);
        assert_eq!(loaded[0].traffic.tcp_in, b.traffic.tcp_in + 10);
        assert_eq!(loaded[1].traffic, traffic(5));
        assert_eq!(loaded[2].traffic, a2.traffic, "untouched");
        store.reset_traffic(&b.id).await.unwrap();
        store.reset_traffic("ffffffff").await.unwrap();
        assert!(store.load().await.unwrap()[0].traffic.is_zero());
        assert_eq!(
            store.load().await.unwrap()[1..],
            loaded[1..],
            "only the named instance"
        );

        // History: ordered, filtered by time, same time replaces, unknown ids ignored.
        for ts in [3000, 1000, 2000] {
            let batch = [
                (b.id.clone(), traffic(ts as u64)),
                (c.id.clone(), traffic(1)),
                ("ffffffff".into(), traffic(1)),
            ];
            store.append_history(ts, &batch).await.unwrap();
        }
        store
            .append_history(2000, &[(b.id.clone(), traffic(42))])
            .await
            .unwrap();
        let hist = store.history(&b.id, 0).await.unwrap();
        assert_eq!(times(&hist), [1000, 2000, 3000]);
        assert_eq!(hist[1].traffic, traffic(42));
        assert_eq!(hist[2].traffic, traffic(3000));
        assert_eq!(
            times(&store.history(&b.id, 2000).await.unwrap()),
            [2000, 3000]
        );
        assert!(store.history("ffffffff", 0).await.unwrap().is_empty());
        assert!(store.history(&a.id, 0).await.unwrap().is_empty());

        // Explicit prune counts what it removed; append prunes past the retention itself.
        assert_eq!(store.prune_history(2000).await.unwrap(), 2);
        assert_eq!(times(&store.history(&b.id, 0).await.unwrap()), [2000, 3000]);
        let later = retention_ms(DEFAULT_HISTORY_RETENTION) + 2500;
        store
            .append_history(later, &[(b.id.clone(), traffic(9))])
            .await
            .unwrap();
        assert_eq!(
            times(&store.history(&b.id, 0).await.unwrap()),
            [3000, later]
        );
        assert_eq!(times(&store.history(&c.id, 0).await.unwrap()), [3000]);

        // Delete takes the history with it; unknown ids are fine.
        store.delete(&c.id).await.unwrap();
        store.delete("ffffffff").await.unwrap();
        assert_eq!(store.load().await.unwrap().len(), 2);
        store.put(&c).await.unwrap();
        assert!(store.history(&c.id, 0).await.unwrap().is_empty());

        // Settings.
        assert_eq!(store.setting("api_key").await.unwrap(), None);
        store.set_setting("api_key", "hash-1").await.unwrap();
        store.set_setting("other", "").await.unwrap();
        store.set_setting("api_key", "hash-2").await.unwrap();
        assert_eq!(
            store.setting("api_key").await.unwrap().as_deref(),
            Some("hash-2")
        );
        assert_eq!(store.setting("other").await.unwrap().as_deref(), Some(""));
    }

    #[test]
    fn errors_name_the_path_and_do_not_repeat_the_source() {
        let err = StoreError::Corrupt {
            path: "/var/lib/np/state.db".into(),
            reason: "quick_check: bad page".into(),
        };
        assert_eq!(
            err.to_string(),
            "store /var/lib/np/state.db is corrupt: quick_check: bad page"
        );
        let err = StoreError::Io {
            op: "open store file",
            path: "/x".into(),
            source: io::Error::other("denied"),
        };
        assert_eq!(err.to_string(), "cannot open store file /x");
    }
}
