//! ward-sqlite: how Ward connects to a SQLite file, in one place for the resource store and the
//! audit store.
//!
//! Two kinds of connection reach the same file:
//! * sqlx pools ([`pool`]) for everything async: migrations, writes, searches. sqlx runs each
//!   SQLite connection on a worker thread of its own, so every statement is a hand-off to that
//!   thread and back.
//! * direct connections ([`connect`], [`ReadPool`]) for the two hot paths where those
//!   hand-offs cost more than the statement: point reads by id, run on the calling thread, and
//!   the audit writer's batch inserts, run on one blocking thread per batch (SPEC P-1).
//!
//! Every connection gets the same settings ([`Settings`]): WAL, `synchronous=FULL`, a busy
//! timeout, and `query_only` for readers.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension};
use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;

/// Per-connection settings.
///
/// `synchronous=FULL`: in WAL mode `NORMAL` survives an application crash but may lose the last
/// commits on power loss or OS crash; an acknowledged FHIR write or audit record must be durable,
/// so every commit syncs the WAL. With one writer connection the cost is one fsync per write
/// transaction.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// How long a statement waits for a lock before failing with BUSY.
    pub busy_timeout: Duration,
    /// `PRAGMA foreign_keys = ON`.
    pub foreign_keys: bool,
    /// `PRAGMA query_only = ON`: the connection refuses to write.
    pub read_only: bool,
    /// A [`Checkpointer`] looks after this file's WAL: the connection checkpoints inside its
    /// own commits only past [`Checkpointer::FALLBACK_PAGES`].
    pub background_checkpoints: bool,
}

impl Settings {
    /// A read-write connection that waits up to `busy_timeout` for a lock, with nothing else
    /// turned on.
    pub const fn new(busy_timeout: Duration) -> Settings {
        Settings {
            busy_timeout,
            foreign_keys: false,
            read_only: false,
            background_checkpoints: false,
        }
    }

    fn pragmas(&self) -> Vec<String> {
        let mut p = vec![
            format!("PRAGMA busy_timeout = {}", self.busy_timeout.as_millis()),
            "PRAGMA journal_mode = WAL".to_owned(),
            "PRAGMA synchronous = FULL".to_owned(),
            // Statement journals (multi-row inserts inside a transaction) and temporary
            // indexes stay in memory instead of temporary files: they only serve rollback
            // within a transaction, never durability.
            "PRAGMA temp_store = MEMORY".to_owned(),
        ];
        if self.foreign_keys {
            p.push("PRAGMA foreign_keys = ON".to_owned());
        }
        if self.read_only {
            p.push("PRAGMA query_only = ON".to_owned());
        }
        if self.background_checkpoints {
            p.push(format!(
                "PRAGMA wal_autocheckpoint = {}",
                Checkpointer::FALLBACK_PAGES
            ));
        }
        p
    }
}

/// The file of a `sqlite:` URL (`sqlite://PATH?mode=rwc`, `sqlite:PATH`), or `None` for a URL
/// of another scheme or an in-memory database, which a second connection could not see.
pub fn file_of_url(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite:")?;
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let path = rest.split('?').next().unwrap_or(rest);
    if path.is_empty() || path == ":memory:" || url.contains("mode=memory") {
        return None;
    }
    Some(PathBuf::from(path))
}

/// A sqlx pool of at most `max` connections with `settings` applied to each.
pub async fn pool(
    url: &str,
    max: u32,
    acquire_timeout: Duration,
    settings: Settings,
) -> Result<AnyPool, sqlx::Error> {
    // Only where sqlx itself would create the file.
    if !settings.read_only
        && url.contains("mode=rwc")
        && let Some(path) = file_of_url(url)
    {
        create_private(&path).map_err(sqlx::Error::Io)?;
    }
    let pragmas = settings.pragmas();
    AnyPoolOptions::new()
        .max_connections(max)
        .min_connections(0)
        .acquire_timeout(acquire_timeout)
        // A local file cannot drop the connection: a ping before each use would only add a
        // round trip to the connection's worker thread.
        .test_before_acquire(false)
        .after_connect(move |conn, _meta| {
            let pragmas = pragmas.clone();
            Box::pin(async move {
                for pragma in pragmas {
                    sqlx::query(sqlx::AssertSqlSafe(pragma))
                        .execute(&mut *conn)
                        .await?;
                }
                Ok(())
            })
        })
        .connect(url)
        .await
}

/// Creates `path` empty with mode 0600 if it does not exist, before SQLite would create it
/// with 0644: its `-wal` and `-shm` files take the database file's mode, so the data stays
/// private to Ward's user (`ward serve` refuses group- or other-readable files).
fn create_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// A direct connection to an existing database file with `settings` applied.
pub fn connect(path: &Path, settings: Settings) -> rusqlite::Result<Connection> {
    let access = if settings.read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
    };
    // NO_MUTEX: a connection is used by one thread at a time (it is moved, never shared).
    let conn = Connection::open_with_flags(path, access | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    for pragma in settings.pragmas() {
        // Some pragmas answer with a row (`journal_mode`, `busy_timeout`), others are silent.
        conn.query_row(&pragma, [], |_| Ok(())).optional()?;
    }
    Ok(conn)
}

/// Idle read-only direct connections, used on the calling thread. A statement run here must be
/// short (a lookup by key): it holds that thread for its whole duration.
pub struct ReadPool {
    path: PathBuf,
    settings: Settings,
    idle: Mutex<Vec<Connection>>,
}

/// Idle connections kept; more are opened under a burst and closed after it.
const MAX_IDLE: usize = 8;

impl ReadPool {
    /// Opens one connection up front, so a bad path fails at start rather than on first use.
    pub fn open(path: &Path, busy_timeout: Duration) -> rusqlite::Result<ReadPool> {
        let settings = Settings {
            read_only: true,
            ..Settings::new(busy_timeout)
        };
        let first = connect(path, settings)?;
        Ok(ReadPool {
            path: path.to_owned(),
            settings,
            idle: Mutex::new(vec![first]),
        })
    }

    /// Runs `f` on an idle connection (or a new one).
    pub fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> rusqlite::Result<T> {
        let conn = match self.idle.lock().map(|mut v| v.pop()) {
            Ok(Some(c)) => c,
            _ => connect(&self.path, self.settings)?,
        };
        let out = f(&conn);
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < MAX_IDLE
        {
            idle.push(conn);
        }
        out
    }
}

impl std::fmt::Debug for ReadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadPool").finish_non_exhaustive()
    }
}

/// Moves the WAL into the database file from a thread of its own.
///
/// By default the connection whose commit crosses 1000 WAL pages copies them back and syncs the
/// database file inside that commit: for the audit writer, a stall of every waiting request
/// (the read benchmark's p99). With a checkpointer the committing connection only checkpoints
/// itself past [`Checkpointer::FALLBACK_PAGES`], should this thread fall behind.
pub struct Checkpointer {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// `wal_autocheckpoint` for a connection whose WAL a checkpointer looks after (about 40 MB).
    pub const FALLBACK_PAGES: u32 = 10_000;

    /// Runs `PRAGMA wal_checkpoint(PASSIVE)` on `path` every `every` until dropped. PASSIVE
    /// never blocks writers or readers: it copies what it can and leaves the rest for the
    /// next round.
    pub fn start(path: &Path, every: Duration, busy_timeout: Duration) -> std::io::Result<Self> {
        let conn = connect(path, Settings::new(busy_timeout)).map_err(std::io::Error::other)?;
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                let (lock, cvar) = &*flag;
                let Ok(mut stopped) = lock.lock() else { return };
                while !*stopped {
                    match cvar.wait_timeout(stopped, every) {
                        Ok((guard, _)) => stopped = guard,
                        Err(_) => return,
                    }
                    if !*stopped
                        && let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        tracing::warn!(error = %e, "WAL checkpoint failed; will retry");
                    }
                }
            })?;
        Ok(Checkpointer {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        let (lock, cvar) = &*self.stop;
        if let Ok(mut stopped) = lock.lock() {
            *stopped = true;
        }
        cvar.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl std::fmt::Debug for Checkpointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpointer").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_of_url_takes_the_path_and_refuses_memory() {
        assert_eq!(
            file_of_url("sqlite:///d/ward.db?mode=rwc"),
            Some(PathBuf::from("/d/ward.db"))
        );
        assert_eq!(file_of_url("sqlite:ward.db"), Some(PathBuf::from("ward.db")));
        assert_eq!(file_of_url("sqlite::memory:"), None);
        assert_eq!(file_of_url("sqlite://x.db?mode=memory"), None);
        assert_eq!(file_of_url("postgres://h/db"), None);
    }

    #[test]
    fn read_pool_connections_refuse_writes_and_see_commits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let settings = Settings {
            foreign_keys: true,
            ..Settings::new(Duration::from_secs(1))
        };
        let w = connect_new(&path, settings);
        w.execute_batch("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1);")
            .unwrap();
        let pool = ReadPool::open(&path, Duration::from_secs(1)).unwrap();
        let n: i64 = pool
            .with(|c| c.query_row("SELECT count(*) FROM t", [], |r| r.get(0)))
            .unwrap();
        assert_eq!(n, 1);
        w.execute("INSERT INTO t VALUES (2)", []).unwrap();
        let n: i64 = pool
            .with(|c| c.query_row("SELECT count(*) FROM t", [], |r| r.get(0)))
            .unwrap();
        assert_eq!(n, 2, "a reader sees what was committed after it was opened");
        assert!(pool.with(|c| c.execute("INSERT INTO t VALUES (3)", [])).is_err());
        let query_only: i64 = pool
            .with(|c| c.query_row("PRAGMA query_only", [], |r| r.get(0)))
            .unwrap();
        assert_eq!(query_only, 1);
        let mode: String = w.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = w.query_row("PRAGMA synchronous", [], |r| r.get(0)).unwrap();
        assert_eq!(sync, 2, "synchronous=FULL");
        let temp: i64 = w.query_row("PRAGMA temp_store", [], |r| r.get(0)).unwrap();
        assert_eq!(temp, 2, "temp_store=MEMORY");
    }

    #[test]
    fn checkpointer_empties_the_wal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let settings = Settings {
            background_checkpoints: true,
            ..Settings::new(Duration::from_secs(1))
        };
        let w = connect_new(&path, settings);
        let pages: i64 = w
            .query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))
            .unwrap();
        assert_eq!(pages, i64::from(Checkpointer::FALLBACK_PAGES));
        w.execute_batch("CREATE TABLE t (x BLOB)").unwrap();
        for _ in 0..50 {
            w.execute("INSERT INTO t VALUES (zeroblob(4000))", []).unwrap();
        }
        let db_len = || std::fs::metadata(&path).unwrap().len();
        let before = db_len();
        let cp = Checkpointer::start(&path, Duration::from_millis(20), Duration::from_secs(1)).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while db_len() == before && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(cp);
        assert!(
            db_len() > before + 50 * 4000,
            "the checkpointer copied the WAL into the db"
        );
    }

    fn connect_new(path: &Path, settings: Settings) -> Connection {
        Connection::open(path).unwrap();
        connect(path, settings).unwrap()
    }
}
