//! A node's exclusive hold on its chain (OPS-5): one running writer per `audit.node`.
//!
//! Two writers appending to one chain collide on every record (the writer then stops and
//! every request fails closed), so a second process with the same node id must refuse to
//! start instead. The hold is one the operating system or the database lets go of when the
//! process dies (a `kill -9` must not lock the node out until some lease expires):
//!
//! * PostgreSQL: a session advisory lock keyed by the node id, on a connection of its own
//!   held for the writer's lifetime. A task checks that connection; if it is lost (the
//!   database restarted) the lock is taken again, and if another process took it meanwhile the
//!   writer stops appending (fail closed).
//! * SQLite: an exclusive lock on a file beside the audit database (`audit.db.node-<id>.lock`).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::Connection;
use ward_crypto::sha256;

use crate::AuditError;
use crate::record::valid_node_id;
use crate::store::{AuditStore, Backend};

/// How often the PostgreSQL lock's connection is checked.
const CHECK_EVERY: Duration = Duration::from_secs(2);

/// The held lease; dropping it lets the node go.
pub struct NodeLease {
    node: String,
    lost: Arc<AtomicBool>,
    _hold: Hold,
}

enum Hold {
    #[expect(dead_code, reason = "held for its lock, released when dropped")]
    File(std::fs::File),
    /// The task holding the PostgreSQL connection; aborted (connection closed) on drop.
    Postgres(tokio::task::JoinHandle<()>),
    /// An in-memory SQLite database: private to this process.
    None,
}

impl Drop for Hold {
    fn drop(&mut self) {
        if let Hold::Postgres(task) = self {
            task.abort();
        }
    }
}

impl std::fmt::Debug for NodeLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeLease")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl NodeLease {
    pub fn node(&self) -> &str {
        &self.node
    }

    /// True once the hold was lost and could not be taken back: appending must stop.
    pub(crate) fn lost_flag(&self) -> Arc<AtomicBool> {
        self.lost.clone()
    }
}

/// The error a second process with the same node id gets.
fn held_elsewhere(node: &str) -> AuditError {
    AuditError::NodeInUse(node.to_owned())
}

/// Advisory lock key of `node`'s chain.
fn lock_key(node: &str) -> i64 {
    let h = sha256(format!("ward:audit-node\0{node}").as_bytes());
    i64::from_be_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]])
}

impl AuditStore {
    /// Takes `node`'s chain for this process, or fails with [`AuditError::NodeInUse`] when
    /// another running process holds it.
    pub async fn lease_node(&self, node: &str) -> Result<NodeLease, AuditError> {
        if !valid_node_id(node) {
            return Err(AuditError::InvalidNode);
        }
        let lost = Arc::new(AtomicBool::new(false));
        let hold = match self.backend() {
            Backend::Sqlite => match self.lock_file(node) {
                Some(path) => {
                    let file = open_lock_file(&path).map_err(AuditError::Io)?;
                    match file.try_lock() {
                        Ok(()) => Hold::File(file),
                        Err(std::fs::TryLockError::WouldBlock) => return Err(held_elsewhere(node)),
                        Err(std::fs::TryLockError::Error(e)) => return Err(AuditError::Io(e)),
                    }
                }
                None => Hold::None,
            },
            Backend::Postgres => {
                let conn = self.locked_connection(node).await?;
                let store = self.clone();
                let node = node.to_owned();
                let lost = lost.clone();
                Hold::Postgres(tokio::spawn(keep_lock(store, node, conn, lost)))
            }
        };
        Ok(NodeLease {
            node: node.to_owned(),
            lost,
            _hold: hold,
        })
    }

    /// A connection of its own (taken out of the pool) that holds `node`'s advisory lock.
    async fn locked_connection(&self, node: &str) -> Result<sqlx::AnyConnection, AuditError> {
        let mut conn = self.writer.acquire().await?.detach();
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(lock_key(node))
            .fetch_one(&mut conn)
            .await?;
        if got {
            Ok(conn)
        } else {
            let _ = conn.close().await;
            Err(held_elsewhere(node))
        }
    }

    fn lock_file(&self, node: &str) -> Option<PathBuf> {
        let db = self.sqlite_file()?;
        let mut name = db.file_name()?.to_os_string();
        name.push(format!(".node-{node}.lock"));
        Some(db.with_file_name(name))
    }
}

/// The lock file, created private to Ward's user like the databases beside it.
fn open_lock_file(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
}

/// Holds the lock's connection; when it breaks, takes the lock again on a new one, or marks
/// the lease lost when another process has it.
async fn keep_lock(store: AuditStore, node: String, mut conn: sqlx::AnyConnection, lost: Arc<AtomicBool>) {
    loop {
        tokio::time::sleep(CHECK_EVERY).await;
        if conn.ping().await.is_ok() {
            continue;
        }
        // Until the lock is taken again, another process could take it: stop appending.
        lost.store(true, Ordering::Release);
        tracing::warn!(node = %node, "the connection holding this node's audit chain was lost; taking it again");
        loop {
            match store.locked_connection(&node).await {
                Ok(c) => {
                    conn = c;
                    lost.store(false, Ordering::Release);
                    tracing::info!(node = %node, "this node's audit chain is held again");
                    break;
                }
                Err(AuditError::NodeInUse(_)) => {
                    tracing::error!(node = %node, "another process took this node's audit chain; \
                        appending stops (fail closed) until this process is restarted");
                    lost.store(true, Ordering::Release);
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot take this node's audit chain again yet");
                    tokio::time::sleep(CHECK_EVERY).await;
                }
            }
        }
    }
}
