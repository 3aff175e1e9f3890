//! Writes that run to their end (SPEC AU-2, IN-1).
//!
//! A request that can change data is served by a task of its own (see `audit.rs::layer`):
//! when the client goes away, hyper drops the request's future, but not that task, so the
//! intent record, the store commit and the final record always happen together. The tasks
//! are tracked so a shutdown waits for them before it stops the audit writer, and the seqs of
//! the intents they hold are known so reconciliation leaves them alone.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::task::TaskTracker;

pub struct Writes {
    tasks: TaskTracker,
    /// One permit per running write task. A task outlives its connection, so the connection
    /// caps alone do not bound them: a client could send writes, disconnect and repeat.
    slots: Arc<Semaphore>,
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

/// A place for one detached write task (see [`Writes::slot`]).
pub struct Slot {
    /// Given back when dropped.
    _permit: OwnedSemaphorePermit,
}

impl Default for Writes {
    fn default() -> Self {
        Writes::new(512)
    }
}

impl Writes {
    /// At most `max_tasks` write tasks run at once (`server.max_connections`).
    pub fn new(max_tasks: usize) -> Self {
        Writes {
            tasks: TaskTracker::new(),
            slots: Arc::new(Semaphore::new(max_tasks.clamp(1, Semaphore::MAX_PERMITS))),
            intents: Mutex::default(),
            gate: tokio::sync::RwLock::default(),
            held: std::sync::atomic::AtomicUsize::default(),
        }
    }

    /// A free place for a write task, or None when all are taken (the request is refused
    /// with 503 before anything happens).
    pub fn slot(&self) -> Option<Slot> {
        Arc::clone(&self.slots)
            .try_acquire_owned()
            .ok()
            .map(|p| Slot { _permit: p })
    }

    /// Runs `fut` detached from the caller: dropping the returned handle does not stop it.
    /// The slot is given back when the task ends.
    pub fn spawn<F>(&self, slot: Slot, fut: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tasks.spawn(async move {
            let out = fut.await;
            drop(slot);
            out
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn write_tasks_are_bounded_and_give_their_slot_back() {
        let writes = Writes::new(2);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let a = writes.slot().unwrap();
        let b = writes.slot().unwrap();
        assert!(writes.slot().is_none(), "a third write task must be refused");
        let blocked = writes.spawn(a, async move {
            let _ = rx.await;
        });
        drop(writes.spawn(b, async {}));
        // The finished task gave its slot back; the blocked one still holds its own.
        tokio::time::timeout(Duration::from_secs(5), async {
            while writes.slot().is_none() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
        let c = writes.slot().unwrap();
        assert!(writes.slot().is_none());
        drop(c);
        tx.send(()).unwrap();
        blocked.await.unwrap();
        assert!(writes.slot().is_some());
    }
}
