//! Writes that run to their end (SPEC AU-2, IN-1).
//!
//! A request that can change data is served by a task of its own (see `audit.rs::layer`):
//! when the client goes away, hyper drops the request's future, but not that task, so the
//! intent record, the store commit and the final record always happen together. The tasks
//! are tracked so a shutdown waits for them before it stops the audit writer, and the seqs of
//! the intents they hold are known so reconciliation leaves them alone.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tokio_util::task::TaskTracker;

#[derive(Default)]
pub struct Writes {
    tasks: TaskTracker,
    intents: Mutex<BTreeSet<i64>>,
    /// Held shared from sending an intent record until its seq is noted as in flight, and
    /// exclusively while reconciliation lists the intents to resolve: no intent is ever
    /// committed but not yet known to be in flight when that list is made.
    gate: tokio::sync::RwLock<()>,
    /// Stored changes whose answers wait for their final audit record.
    held: std::sync::atomic::AtomicUsize,
}

/// Counts one held answer while it lives.
pub struct Held<'a>(&'a Writes);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.held.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl Writes {
    /// Runs `fut` detached from the caller: dropping the returned handle does not stop it.
    pub fn spawn<F>(&self, fut: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tasks.spawn(fut)
    }

    fn intents(&self) -> std::sync::MutexGuard<'_, BTreeSet<i64>> {
        self.intents.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes that intent `seq` is being worked on by this process.
    pub fn begin(&self, seq: i64) {
        self.intents().insert(seq);
    }

    pub fn end(&self, seq: i64) {
        self.intents().remove(&seq);
    }

    /// Whether intent `seq` belongs to a write still running here.
    pub fn in_flight(&self, seq: i64) -> bool {
        self.intents().contains(&seq)
    }

    /// Notes an answer held until its final record is durable; ePHI requests fail closed
    /// while any is (see [`Writes::holding`]).
    pub fn hold(&self) -> Held<'_> {
        self.held.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Held(self)
    }

    /// Whether a stored change still waits for its final audit record.
    pub fn holding(&self) -> bool {
        self.held.load(std::sync::atomic::Ordering::Acquire) > 0
    }

    /// Taken while an intent record is committed and noted (see `gate`).
    pub async fn recording(&self) -> tokio::sync::RwLockReadGuard<'_, ()> {
        self.gate.read().await
    }

    /// Taken while reconciliation lists the intents it will resolve.
    pub async fn listing(&self) -> tokio::sync::RwLockWriteGuard<'_, ()> {
        self.gate.write().await
    }

    /// Waits up to `limit` for every write task to finish; false if some did not.
    pub async fn drain(&self, limit: Duration) -> bool {
        self.tasks.close();
        tokio::time::timeout(limit, self.tasks.wait()).await.is_ok()
    }
}
