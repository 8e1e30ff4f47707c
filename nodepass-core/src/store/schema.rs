//! Opening a store file: permissions, the checks made before anything is written, the schema.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags, TransactionBehavior};

use super::{BackendError, Result, StoreError};

/// The schema version this build writes and reads (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 1;

/// Marks the file as a nodepass store (`PRAGMA application_id`): ASCII `NPST`.
const APPLICATION_ID: i64 = 0x4e50_5354;

/// How long a statement waits for a lock held by someone else once the store is open.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Created in one transaction when the file has no schema yet.
const SCHEMA_V1: &str = "
CREATE TABLE instances (
    id TEXT PRIMARY KEY NOT NULL CHECK (length(id) = 8),
    alias TEXT,
    url TEXT NOT NULL,
    restart INTEGER NOT NULL,
    meta TEXT NOT NULL,
    tcp_in INTEGER NOT NULL, tcp_out INTEGER NOT NULL,
    udp_in INTEGER NOT NULL, udp_out INTEGER NOT NULL,
    created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,
    desired TEXT NOT NULL CHECK (desired IN ('running', 'stopped'))
) STRICT;
CREATE TABLE history (
    id TEXT NOT NULL REFERENCES instances(id) ON DELETE CASCADE,
    ts_ms INTEGER NOT NULL,
    tcp_in INTEGER NOT NULL, tcp_out INTEGER NOT NULL,
    udp_in INTEGER NOT NULL, udp_out INTEGER NOT NULL,
    PRIMARY KEY (id, ts_ms)
) STRICT, WITHOUT ROWID;
CREATE INDEX history_by_ts ON history(ts_ms);
CREATE TABLE settings (name TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL) STRICT;
";

/// Open `path` for a [`SqliteStore`](super::SqliteStore): create or tighten the file, check it,
/// set the connection up and create the schema if the file is new.
pub(super) fn open_connection(path: &Path) -> Result<Connection> {
    prepare_file(path)?;
    // No CREATE: the file exists with the right mode; no URI: the path is only a path.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut conn = Connection::open_with_flags(path, flags).map_err(|e| open_error(path, e))?;
    init(&mut conn, path)?;
    Ok(conn)
}

/// Create the file with mode 0600 (and make its directory entry durable), or remove group/other
/// bits from an existing one.
fn prepare_file(path: &Path) -> Result<()> {
    let io_error = |op, source| StoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    };
    let mut options = OpenOptions::new();
    options.read(true).write(true).mode(0o600);
    let file = match options.clone().create_new(true).open(path) {
        Ok(file) => {
            // SQLite syncs the file's content on commit, but not the new name in the directory.
            let dir = match path.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir,
                _ => Path::new("."),
            };
            fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io_error("sync the directory of", e))?;
            file
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => options
            .open(path)
            .map_err(|e| io_error("open store file", e))?,
        Err(e) => return Err(io_error("create store file", e)),
    };
    let mode = file
        .metadata()
        .map_err(|e| io_error("read permissions of", e))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        let tightened = fs::Permissions::from_mode(mode & 0o700);
        match file.set_permissions(tightened) {
            Ok(()) => tracing::warn!(
                path = %path.display(),
                mode = format_args!("{:o}", mode & 0o777),
                "store file was readable by others; removed group and other permissions"
            ),
            Err(e) => tracing::warn!(
                path = %path.display(),
                error = %e,
                "store file is readable by others and its permissions cannot be changed"
            ),
        }
    }
    Ok(())
}

/// An error while opening: busy is [`StoreError::Locked`], a damaged file is
/// [`StoreError::Corrupt`], anything else [`StoreError::Open`].
fn open_error(path: &Path, source: rusqlite::Error) -> StoreError {
    let path = path.to_path_buf();
    match source.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy) => StoreError::Locked { path },
        Some(ErrorCode::DatabaseCorrupt) => StoreError::Corrupt {
            path,
            reason: source.to_string(),
        },
        _ => StoreError::Open {
            path,
            source: BackendError::new(source),
        },
    }
}

/// Check the file before anything is written to it, then set the connection up and create the
/// schema if the file is new.
fn init(conn: &mut Connection, path: &Path) -> Result<()> {
    let open = |e| open_error(path, e);
    let corrupt = |reason: String| StoreError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    // The lock is taken now or never: a second opener fails at once instead of waiting.
    conn.busy_timeout(Duration::ZERO).map_err(open)?;
    // Exclusive: the first read takes the file lock and keeps it while the store is open.
    conn.pragma_update(None, "locking_mode", "EXCLUSIVE")
        .map_err(open)?;
    // The first read of the header: a file that is not a database fails here, untouched.
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(open)?;
    let app_id: i64 = conn
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .map_err(open)?;
    let objects: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
        .map_err(open)?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::UnsupportedVersion {
            path: path.to_path_buf(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    if version == 0 && objects > 0 {
        return Err(corrupt(format!(
            "{objects} schema objects but no schema version: not a nodepass store"
        )));
    }
    if version > 0 && app_id != APPLICATION_ID {
        return Err(corrupt(format!(
            "application id {app_id:#x} is not a nodepass store's"
        )));
    }
    let mut problems = Vec::new();
    conn.pragma_query(None, "quick_check", |r| {
        problems.push(r.get::<_, String>(0)?);
        Ok(())
    })
    .map_err(open)?;
    if problems != ["ok"] {
        problems.truncate(5);
        return Err(corrupt(format!("quick_check: {}", problems.join("; "))));
    }

    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(open)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(corrupt(format!("cannot switch to WAL mode (got {mode})")));
    }
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(open)?;
    conn.pragma_update(None, "foreign_keys", true)
        .map_err(open)?;
    // Create the schema if new; either way this write takes the exclusive lock for good.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Exclusive)
        .map_err(open)?;
    if version == 0 {
        tx.execute_batch(SCHEMA_V1).map_err(open)?;
        tx.pragma_update(None, "application_id", APPLICATION_ID)
            .map_err(open)?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(open)?;
    }
    tx.commit().map_err(open)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(open)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::record;
    use crate::store::{SqliteStore, Store};
    use nodepass_testkit::temp_dir;

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[tokio::test]
    async fn files_are_private() {
        let dir = temp_dir("mode");
        let path = dir.path().join("state.db");
        let store = SqliteStore::open(&path).unwrap();
        store.put(&record(1)).await.unwrap();
        assert_eq!(mode_of(&path), 0o600);
        let wal = dir.path().join("state.db-wal");
        assert_eq!(mode_of(&wal), 0o600, "the WAL holds the same secrets");
        drop(store);

        let loose = dir.path().join("loose.db");
        fs::write(&loose, b"").unwrap();
        fs::set_permissions(&loose, fs::Permissions::from_mode(0o644)).unwrap();
        SqliteStore::open(&loose).unwrap();
        assert_eq!(mode_of(&loose), 0o600, "group and other bits are removed");
    }

    #[test]
    fn a_missing_directory_is_an_io_error_naming_the_path() {
        let dir = temp_dir("missing");
        let path = dir.path().join("no-such-dir").join("state.db");
        let err = SqliteStore::open(&path).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Io {
                    op: "create store file",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains(path.to_str().unwrap()), "{err}");
    }

    #[test]
    fn a_file_that_is_not_a_database_is_refused_and_kept() {
        let dir = temp_dir("garbage");
        let long: Vec<u8> = (0..8192u32).map(|i| (i * 7 % 251) as u8).collect();
        for (name, content) in [("short", b"hello".to_vec()), ("long", long)] {
            let path = dir.path().join(name);
            fs::write(&path, &content).unwrap();
            let err = SqliteStore::open(&path).unwrap_err();
            assert!(matches!(err, StoreError::Open { .. }), "{name}: {err:?}");
            assert!(err.to_string().contains(path.to_str().unwrap()), "{err}");
            assert_eq!(fs::read(&path).unwrap(), content, "{name} was changed");
        }
    }

    #[tokio::test]
    async fn a_newer_schema_is_refused_and_kept() {
        let dir = temp_dir("newer");
        let path = dir.path().join("state.db");
        SqliteStore::open(&path)
            .unwrap()
            .put(&record(1))
            .await
            .unwrap();
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        let before = fs::read(&path).unwrap();
        let err = SqliteStore::open(&path).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::UnsupportedVersion {
                    found: 2,
                    supported: 1,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains(path.to_str().unwrap()), "{err}");
        assert_eq!(fs::read(&path).unwrap(), before);
    }

    #[test]
    fn a_foreign_database_is_refused() {
        let dir = temp_dir("foreign");
        let path = dir.path().join("other.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .unwrap();
        let err = SqliteStore::open(&path).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn damaged_pages_are_reported_as_corrupt() {
        let dir = temp_dir("damaged");
        let path = dir.path().join("state.db");
        {
            let store = SqliteStore::open(&path).unwrap();
            for n in 0..200 {
                store.put(&record(n)).await.unwrap();
            }
        }
        let good = fs::read(&path).unwrap();
        let page = usize::from(u16::from_be_bytes([good[16], good[17]]));
        let pages = good.len() / page;
        assert!(pages > 6, "closing checkpointed the WAL into the file");
        // Whole pages (SQLite fails to read them) and the cells of a page behind an intact page
        // header (only quick_check notices).
        let bytes_of = |pages: std::ops::Range<usize>| pages.start * page..pages.end * page;
        for damaged in [bytes_of(1..3), bytes_of(pages - 3..pages - 1), {
            let last = bytes_of(pages - 2..pages - 1);
            last.start + 12..last.end
        }] {
            let mut bytes = good.clone();
            bytes[damaged.clone()].fill(0x5a);
            fs::write(&path, &bytes).unwrap();
            let err = SqliteStore::open(&path).unwrap_err();
            assert!(
                matches!(err, StoreError::Corrupt { .. }),
                "{damaged:?}: {err:?}"
            );
            assert!(err.to_string().contains(path.to_str().unwrap()), "{err}");
            assert_eq!(
                fs::read(&path).unwrap(),
                bytes,
                "a damaged file is left as it was"
            );
        }
    }

    #[tokio::test]
    async fn a_second_open_is_refused_while_the_first_is_alive() {
        let dir = temp_dir("locked");
        let path = dir.path().join("state.db");
        let first = SqliteStore::open(&path).unwrap();
        let err = SqliteStore::open(&path).unwrap_err();
        assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
        first.put(&record(1)).await.unwrap();
        let err = SqliteStore::open(&path).unwrap_err();
        assert!(
            matches!(err, StoreError::Locked { .. }),
            "still locked after a write: {err:?}"
        );
        drop(first);
        assert_eq!(
            SqliteStore::open(&path)
                .unwrap()
                .load()
                .await
                .unwrap()
                .len(),
            1
        );
    }
}
