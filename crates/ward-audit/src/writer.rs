//! The group-commit writer (AU-2) and the checkpoint signer (AU-3).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use aws_lc_rs::digest;
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use ward_crypto::{AuditKey, AuditMacKey};

use crate::lease::NodeLease;
use crate::record::{format_instant, normalize_at, valid_node_id};
use crate::store::{AuditStore, Checkpoint, Head, PreparedRow};
use crate::{AuditError, AuditRecord};

/// Capacity of the request channel; callers beyond it wait (back-pressure).
const CHANNEL_CAPACITY: usize = 16_384;

/// The audit keys: the Ed25519 key that signs checkpoints (`DIR/keys/audit-ed25519.p8`) and
/// the key that authenticates every record (`DIR/keys/audit-mac.key`).
#[derive(Debug)]
pub struct AuditSigner {
    key: AuditKey,
    mac: AuditMacKey,
}

impl AuditSigner {
    pub fn new(key: AuditKey, mac: AuditMacKey) -> AuditSigner {
        AuditSigner { key, mac }
    }

    /// Loads both keys from the key directory (permissions checked).
    pub fn load(keys_dir: &Path) -> Result<AuditSigner, AuditError> {
        Ok(AuditSigner {
            key: ward_crypto::keyfiles::load_audit_key(keys_dir)?,
            mac: ward_crypto::keyfiles::load_audit_mac_key(keys_dir)?,
        })
    }

    /// [`AuditSigner::load`] for a writer: a key directory made before the MAC key existed
    /// gets one, but only while `store` holds no record. Records written without the key can
    /// never verify, so with records present a missing key is refused, with what to do.
    pub async fn load_for_writer(keys_dir: &Path, store: &AuditStore) -> Result<AuditSigner, AuditError> {
        let file = keys_dir.join(ward_crypto::keyfiles::AUDIT_MAC_KEY_FILE);
        if std::fs::symlink_metadata(&file).is_err() {
            if store.has_records().await? {
                return Err(AuditError::Corrupt(
                    "keys/audit-mac.key is missing but the audit trail already holds records written \
                     without it (an older Ward): export that trail, then start with an empty audit \
                     database"
                        .into(),
                ));
            }
            if ward_crypto::keyfiles::ensure_audit_mac_key(keys_dir)? {
                tracing::info!("created keys/audit-mac.key (the audit record MAC key)");
            }
        }
        AuditSigner::load(keys_dir)
    }

    /// A second handle on the same keys (a writer takes its signer; a verifier needs one too).
    pub fn try_clone(&self) -> Result<AuditSigner, AuditError> {
        Ok(AuditSigner {
            key: AuditKey::from_pkcs8_der(self.key.pkcs8_der())?,
            mac: self.mac.clone(),
        })
    }

    /// Fresh random keys (tests, benchmarks).
    pub fn generate() -> Result<AuditSigner, AuditError> {
        Ok(AuditSigner {
            key: AuditKey::generate()?,
            mac: AuditMacKey::generate()?,
        })
    }

    /// The record MAC key (verification).
    pub fn mac_key(&self) -> &AuditMacKey {
        &self.mac
    }

    /// Whether `cp` carries a valid signature by this key.
    pub(crate) fn signed(&self, cp: &Checkpoint) -> bool {
        cp.key_id == self.key_id()
            && ward_crypto::verify_ed25519(self.key.public_key(), &cp.message(), &cp.signature)
    }

    /// `base64url(sha256(public key))[..16]`.
    pub fn key_id(&self) -> String {
        self.key.key_id()
    }

    /// The raw 32-byte public key.
    pub fn public_key_bytes(&self) -> [u8; 32] {
        *self.key.public_key()
    }

    /// The public key as PEM (`-----BEGIN PUBLIC KEY-----`, SubjectPublicKeyInfo).
    pub fn public_key_pem(&self) -> String {
        self.key.public_key_pem()
    }

    /// A signed checkpoint of `head`, after the chain's checkpoint at `prev_seq`.
    pub(crate) fn checkpoint(
        &self,
        node: &str,
        head: Head,
        prev_seq: i64,
        chains: String,
        now: OffsetDateTime,
    ) -> Checkpoint {
        let mut cp = Checkpoint {
            node: node.to_owned(),
            seq: head.seq,
            hash: head.hash.to_vec(),
            key_id: self.key_id(),
            signature: Vec::new(),
            at: format_instant(now),
            prev_seq,
            chains,
        };
        cp.signature = self.key.sign(&cp.message());
        cp
    }
}

/// The chains registered in `store` by a genesis checkpoint this key signed, plus `node`:
/// sorted, comma-separated (what a checkpoint lists).
async fn known_chains(store: &AuditStore, signer: &AuditSigner, node: &str) -> Result<String, AuditError> {
    let mut nodes: Vec<String> = store
        .genesis_checkpoints()
        .await?
        .into_iter()
        .filter(|g| g.prev_seq == -1 && g.hash == [0; 32] && valid_node_id(&g.node) && signer.signed(g))
        .map(|g| g.node)
        .collect();
    nodes.push(node.to_owned());
    nodes.sort();
    nodes.dedup();
    Ok(nodes.join(","))
}

/// Takes over `node`'s chain: returns its head and the seq of its last checkpoint. A new chain
/// is registered by a signed genesis checkpoint (seq 0). An existing chain must end in a record
/// this deployment wrote (its MAC verifies) and reach its last checkpoint, which this key
/// signed; otherwise `AuditError::Corrupt`: appending would hide (and later sign) the damage.
async fn open_chain(store: &AuditStore, node: &str, signer: &AuditSigner) -> Result<(Head, i64), AuditError> {
    if !valid_node_id(node) {
        return Err(AuditError::InvalidNode);
    }
    let head = store.head(node).await?;
    let refuse = |why: &str| {
        tracing::error!(node = %node, head_seq = head.seq, "audit chain {why}; refusing to append");
        Err(AuditError::Corrupt(format!(
            "audit chain of node {node} {why}; run `ward audit verify`"
        )))
    };
    let Some(cp) = store.last_checkpoint(node).await? else {
        if head.seq > 0 {
            return refuse("has records but no signed checkpoint");
        }
        let chains = known_chains(store, signer, node).await?;
        let genesis = signer.checkpoint(node, Head::EMPTY, -1, chains, OffsetDateTime::now_utc());
        store.insert_checkpoint(&genesis).await?;
        return Ok((head, 0));
    };
    if !signer.signed(&cp) {
        if cp.key_id != signer.key_id()
            && store
                .genesis_checkpoints()
                .await?
                .iter()
                .all(|g| !signer.signed(g))
        {
            // Not one chain registered under this key: the keys are another deployment's.
            return Err(AuditError::OtherKey {
                found: cp.key_id,
                ours: signer.key_id(),
            });
        }
        return refuse("ends in a checkpoint not signed by this deployment's audit key");
    }
    let reaches = match cp.seq {
        0 => cp.hash == [0; 32],
        s if s <= head.seq => store.hash_at(node, s).await?.as_deref() == Some(cp.hash.as_slice()),
        _ => false,
    };
    if !reaches {
        return refuse(&format!("does not reach its last checkpoint (seq {})", cp.seq));
    }
    if head.seq > 0 {
        let authentic = match store.seal_at(node, head.seq).await? {
            Some((cp_seq, mac)) => signer.mac.verify(&head.hash, cp_seq, &mac),
            None => false,
        };
        if !authentic {
            return refuse("ends in a record not written with this deployment's audit key");
        }
    }
    Ok((head, cp.seq))
}

/// Writer settings.
#[derive(Clone, Debug)]
pub struct AuditConfig {
    /// Most records committed in one transaction.
    pub batch_max: usize,
    /// How long the writer waits for more records after the first of a batch arrived (zero: take
    /// only what is already queued).
    pub batch_wait: Duration,
    /// Write a signed checkpoint after this many records ...
    pub checkpoint_every: u64,
    /// ... or after this much time with new records.
    pub checkpoint_interval: Duration,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            batch_max: 256,
            batch_wait: Duration::from_millis(2),
            checkpoint_every: 10_000,
            checkpoint_interval: Duration::from_secs(60),
        }
    }
}

enum Msg {
    Record(Box<AuditRecord>, oneshot::Sender<Result<i64, AuditError>>),
    Shutdown(oneshot::Sender<()>),
}

struct Shared {
    healthy: AtomicBool,
    records: AtomicU64,
    batches: AtomicU64,
}

/// Sends records to the node's writer task. Cheap to clone.
#[derive(Clone)]
pub struct AuditHandle {
    tx: mpsc::Sender<Msg>,
    shared: Arc<Shared>,
    node: Arc<str>,
}

impl std::fmt::Debug for AuditHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditHandle")
            .field("healthy", &self.healthy())
            .finish_non_exhaustive()
    }
}

impl AuditHandle {
    /// Appends `rec` to the chain. Returns its seq only after the transaction holding it has
    /// committed (durable). `Err(Unavailable)` if the store could not commit (fail closed);
    /// `Err(Closed)` after shutdown.
    pub async fn record(&self, rec: AuditRecord) -> Result<i64, AuditError> {
        let (ack, rx) = oneshot::channel();
        self.tx
            .send(Msg::Record(Box::new(rec), ack))
            .await
            .map_err(|_| AuditError::Closed)?;
        rx.await.map_err(|_| AuditError::Closed)?
    }

    /// The node id of the chain this handle appends to.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// False after a failed commit, until the next successful one. Records are still attempted
    /// while unhealthy, so service resumes by itself when the store recovers.
    pub fn healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::Acquire)
    }

    /// (records committed, batches committed) since start.
    pub fn stats(&self) -> (u64, u64) {
        (
            self.shared.records.load(Ordering::Relaxed),
            self.shared.batches.load(Ordering::Relaxed),
        )
    }

    /// Flushes every record queued before this call, writes a final checkpoint and stops the
    /// writer. Other clones then get `Err(Closed)`.
    pub async fn shutdown(self) {
        let (ack, rx) = oneshot::channel();
        if self.tx.send(Msg::Shutdown(ack)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// Starts the writer task of `node`'s chain. Registers a new chain (signed genesis
/// checkpoint); refuses (`AuditError::Corrupt`) a chain that does not end in a record this
/// deployment wrote or no longer reaches its last signed checkpoint (the tail was truncated,
/// rewritten or added to without the key): appending would hide the damage.
pub async fn start_writer(
    store: AuditStore,
    node: String,
    signer: AuditSigner,
    config: AuditConfig,
) -> Result<(AuditHandle, tokio::task::JoinHandle<()>), AuditError> {
    start(store, node, None, signer, config).await
}

/// [`start_writer`] for the chain `lease` holds ([`AuditStore::lease_node`]): the writer keeps
/// the lease until it stops, and stops appending (fail closed) if the lease is lost.
pub async fn start_leased_writer(
    store: AuditStore,
    lease: NodeLease,
    signer: AuditSigner,
    config: AuditConfig,
) -> Result<(AuditHandle, tokio::task::JoinHandle<()>), AuditError> {
    let node = lease.node().to_owned();
    start(store, node, Some(lease), signer, config).await
}

async fn start(
    store: AuditStore,
    node: String,
    lease: Option<NodeLease>,
    signer: AuditSigner,
    config: AuditConfig,
) -> Result<(AuditHandle, tokio::task::JoinHandle<()>), AuditError> {
    let (head, cp_seq) = open_chain(&store, &node, &signer).await?;
    let since_cp = u64::try_from(head.seq - cp_seq).unwrap_or(0);
    let shared = Arc::new(Shared {
        healthy: AtomicBool::new(true),
        records: AtomicU64::new(0),
        batches: AtomicU64::new(0),
    });
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    let handle_node: Arc<str> = Arc::from(node.as_str());
    let writer = Writer {
        store,
        node,
        lease_lost: lease.as_ref().map(NodeLease::lost_flag),
        _lease: lease,
        signer,
        config,
        head,
        uncertain: None,
        stopped: false,
        shared: shared.clone(),
        since_cp,
        cp_seq,
        last_cp_at: Instant::now(),
    };
    let join = if writer.store.is_direct() {
        // SQLite: the writer blocks its thread on each commit, so it gets a thread of its own
        // with a small runtime for its timers. On the shared runtime it would also wait its
        // turn behind every busy request task, and every waiting request with it.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()?;
        tokio::task::spawn_blocking(move || rt.block_on(writer.run(rx)))
    } else {
        tokio::spawn(writer.run(rx))
    };
    Ok((
        AuditHandle {
            tx,
            shared,
            node: handle_node,
        },
        join,
    ))
}

struct Writer {
    store: AuditStore,
    node: String,
    /// Set when the node's lease was lost: another process may append now.
    lease_lost: Option<Arc<AtomicBool>>,
    _lease: Option<NodeLease>,
    signer: AuditSigner,
    config: AuditConfig,
    /// The chain head this writer committed. Never taken from the database: a head someone
    /// else wrote must not be adopted (and later signed).
    head: Head,
    /// After a failed commit: the head that batch would have made (it may have committed
    /// after all). The database head is compared before the next batch.
    uncertain: Option<Head>,
    /// The database head was neither: someone else wrote to this chain. Every record fails
    /// closed until a restart (which refuses the foreign head).
    stopped: bool,
    shared: Arc<Shared>,
    /// Records committed since the last checkpoint.
    since_cp: u64,
    /// Seq of the chain's last checkpoint (0: the genesis).
    cp_seq: i64,
    last_cp_at: Instant,
}

type Pending = (Box<AuditRecord>, oneshot::Sender<Result<i64, AuditError>>);

fn take(m: Msg, batch: &mut Vec<Pending>, shutdown: &mut Option<oneshot::Sender<()>>) {
    match m {
        Msg::Record(r, ack) => batch.push((r, ack)),
        Msg::Shutdown(ack) => *shutdown = Some(ack),
    }
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        let batch_max = self.config.batch_max.max(1);
        loop {
            let first = if self.since_cp > 0 {
                let deadline = self.last_cp_at + self.config.checkpoint_interval;
                tokio::select! {
                    m = rx.recv() => m,
                    () = tokio::time::sleep_until(deadline) => {
                        self.checkpoint().await;
                        continue;
                    }
                }
            } else {
                rx.recv().await
            };
            let Some(first) = first else { break };
            let mut batch: Vec<Pending> = Vec::new();
            let mut shutdown = None;
            take(first, &mut batch, &mut shutdown);
            while batch.len() < batch_max && shutdown.is_none() {
                match rx.try_recv() {
                    Ok(m) => take(m, &mut batch, &mut shutdown),
                    Err(_) => break,
                }
            }
            if !batch.is_empty()
                && batch.len() < batch_max
                && shutdown.is_none()
                && !self.config.batch_wait.is_zero()
            {
                if self.store.is_direct() {
                    // On its own thread the writer has nothing else to do while it waits, so
                    // it sleeps the wait exactly: tokio's timer would round it up to a whole
                    // millisecond, and every request in the batch would wait that long.
                    std::thread::sleep(self.config.batch_wait);
                    while batch.len() < batch_max && shutdown.is_none() {
                        match rx.try_recv() {
                            Ok(m) => take(m, &mut batch, &mut shutdown),
                            Err(_) => break,
                        }
                    }
                } else {
                    let deadline = Instant::now() + self.config.batch_wait;
                    while batch.len() < batch_max && shutdown.is_none() {
                        match tokio::time::timeout_at(deadline, rx.recv()).await {
                            Ok(Some(m)) => take(m, &mut batch, &mut shutdown),
                            Ok(None) | Err(_) => break,
                        }
                    }
                }
            }
            if !batch.is_empty() {
                self.commit(batch).await;
            }
            if self.since_cp >= self.config.checkpoint_every.max(1) {
                self.checkpoint().await;
            }
            if let Some(ack) = shutdown {
                self.checkpoint().await;
                let _ = ack.send(());
                return;
            }
        }
        // Every handle was dropped: final checkpoint.
        self.checkpoint().await;
    }

    /// After a failed commit, whether the database head is still this writer's (or the one
    /// the failed batch would have made, had it committed after all). Anything else means
    /// someone else wrote to the chain: the writer stops.
    async fn head_confirmed(&mut self) -> bool {
        let Some(would_be) = self.uncertain else {
            return true;
        };
        match self.store.head(&self.node).await {
            Ok(h) if h == self.head => {}
            Ok(h) if h == would_be => {
                self.head = h;
                self.since_cp += 1;
            }
            Ok(h) => {
                tracing::error!(node = %self.node, own_seq = self.head.seq, database_seq = h.seq,
                    "audit chain head in the database is not this writer's: someone else wrote to \
                     the chain; failing closed until restarted (run `ward audit verify`)");
                self.stopped = true;
            }
            Err(e) => {
                tracing::warn!(error = %e, source = ?std::error::Error::source(&e).map(ToString::to_string),
                    "audit store unavailable (reading the chain head)");
                return false;
            }
        }
        self.uncertain = None;
        !self.stopped
    }

    async fn commit(&mut self, mut batch: Vec<Pending>) {
        if self
            .lease_lost
            .as_ref()
            .is_some_and(|l| l.load(Ordering::Acquire))
        {
            tracing::error!(node = %self.node, "this node no longer holds its audit chain; failing closed");
            self.fail(batch, None);
            return;
        }
        if self.stopped || !self.head_confirmed().await {
            self.fail(batch, None);
            return;
        }
        let head = self.head;
        let now = OffsetDateTime::now_utc();
        let mut rows = Vec::with_capacity(batch.len());
        let mut prev = head;
        for (rec, _) in &mut batch {
            let (row, next) = self.sequence(rec, now, prev);
            rows.push(row);
            prev = next;
        }
        match self.store.insert_batch(rows).await {
            Ok(_) => {
                self.committed(prev, batch.len() as u64, 1);
                for (rec, ack) in batch {
                    let _ = ack.send(Ok(rec.seq));
                }
            }
            // One record the database refuses must not take its batch-mates down with it.
            Err(e) if e.is_refused_data() => self.commit_singly(batch, head).await,
            Err(e) => {
                tracing::warn!(error = %e, source = ?std::error::Error::source(&e).map(ToString::to_string),
                    records = batch.len(), "audit batch could not be committed; failing closed");
                self.fail(batch, Some(prev));
            }
        }
    }

    /// Commits each record of a refused batch on its own, re-chained onto the last one that
    /// went in. A refused record is answered `Unavailable` (its request fails closed); a
    /// failure to commit at all fails the rest, and so does a batch of which nothing went in
    /// (the store is reported unhealthy until the next commit).
    async fn commit_singly(&mut self, batch: Vec<Pending>, head: Head) {
        let mut prev = head;
        let mut batch = batch.into_iter();
        while let Some((mut rec, ack)) = batch.next() {
            let (row, next) = self.sequence(&mut rec, OffsetDateTime::now_utc(), prev);
            match self.store.insert_batch(vec![row]).await {
                Ok(_) => {
                    self.committed(next, 1, 0);
                    prev = next;
                    let _ = ack.send(Ok(rec.seq));
                }
                Err(e) if e.is_refused_data() => {
                    tracing::warn!(error = %e, request_id = %rec.request_id,
                        "audit record refused by the store; its request fails closed");
                    let _ = ack.send(Err(AuditError::Unavailable));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "audit store unavailable; failing closed");
                    let _ = ack.send(Err(AuditError::Unavailable));
                    self.fail(batch.collect(), Some(next));
                    return;
                }
            }
        }
        if prev == head {
            // Nothing went in: a store that refuses everything is down, not picky.
            tracing::warn!("audit store refused every record of the batch; failing closed");
            self.shared.healthy.store(false, Ordering::Release);
        } else {
            self.shared.batches.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Stamps `rec` as the record after `prev` on this node, hashes it onto the chain and tags
    /// it.
    fn sequence(&self, rec: &mut AuditRecord, now: OffsetDateTime, prev: Head) -> (PreparedRow, Head) {
        let (at, at_ms) = normalize_at(&rec.at, now);
        rec.at = at;
        rec.node.clone_from(&self.node);
        rec.seq = prev.seq + 1;
        prepare(rec, at_ms, prev, self.cp_seq, &self.signer.mac)
    }

    /// Notes a commit of `records` records (counted as `batches` group commits) that moved the
    /// head to `head`.
    fn committed(&mut self, head: Head, records: u64, batches: u64) {
        self.head = head;
        self.since_cp += records;
        self.shared.records.fetch_add(records, Ordering::Relaxed);
        self.shared.batches.fetch_add(batches, Ordering::Relaxed);
        if !self.shared.healthy.swap(true, Ordering::AcqRel) {
            tracing::info!("audit store recovered");
        }
    }

    /// Fails `batch` closed; `would_be` is the head it would have made (a failed commit).
    fn fail(&mut self, batch: Vec<Pending>, would_be: Option<Head>) {
        if would_be.is_some() {
            self.uncertain = would_be;
        }
        self.shared.healthy.store(false, Ordering::Release);
        for (_, ack) in batch {
            let _ = ack.send(Err(AuditError::Unavailable));
        }
    }

    /// Writes a signed checkpoint of the committed head if records were added since the last.
    async fn checkpoint(&mut self) {
        self.last_cp_at = Instant::now();
        if self.since_cp == 0 {
            return;
        }
        // The head signed is always this writer's own, never one read from the database.
        let chains = match known_chains(&self.store, &self.signer, &self.node).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "audit checkpoint could not be written; will retry");
                return;
            }
        };
        let cp = self.signer.checkpoint(
            &self.node,
            self.head,
            self.cp_seq,
            chains,
            OffsetDateTime::now_utc(),
        );
        match self.store.insert_checkpoint(&cp).await {
            Ok(()) => {
                self.since_cp = 0;
                self.cp_seq = cp.seq;
            }
            Err(e) => tracing::warn!(error = %e, "audit checkpoint could not be written; will retry"),
        }
    }
}

/// Hashes one sequenced record onto `prev` and tags it (written after checkpoint `cp_seq`):
/// returns the row and the new head.
pub(crate) fn prepare(
    rec: &AuditRecord,
    at_ms: i64,
    prev: Head,
    cp_seq: i64,
    mac: &AuditMacKey,
) -> (PreparedRow, Head) {
    let record = rec.canonical_bytes();
    let hash = chain_hash(&prev.hash, &record);
    let row = PreparedRow {
        node: rec.node.clone(),
        seq: rec.seq,
        at_ms,
        action: rec.action.clone(),
        status: i64::from(rec.outcome.status),
        client_id: rec.actor.client_id.clone(),
        user_id: rec.actor.user_id.clone(),
        resource_type: rec.resource_type.clone(),
        resource_id: rec.resource_id.clone(),
        // serde_json output is UTF-8.
        record: String::from_utf8(record).unwrap_or_default(),
        prev_hash: prev.hash,
        hash,
        cp_seq,
        mac: mac.tag(&hash, cp_seq),
        patients: rec.patients.clone(),
        patients_via: rec.patients_via.clone(),
        kind: rec.kind.as_str(),
        intent_seq: rec.intent_seq,
    };
    (row, Head { seq: rec.seq, hash })
}

/// `SHA-256(prev_hash || canonical_bytes)`.
pub fn chain_hash(prev: &[u8; 32], canonical: &[u8]) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(prev);
    ctx.update(canonical);
    let d = ctx.finish();
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Appends `records` to `node`'s chain directly (no writer task), in transactions of
/// `per_tx` records, then writes one signed checkpoint. For benchmarks and tests that need a
/// large log quickly; do not run it while a writer for the same node is running.
pub async fn bulk_append(
    store: &AuditStore,
    node: &str,
    signer: &AuditSigner,
    records: impl IntoIterator<Item = AuditRecord>,
    per_tx: usize,
) -> Result<u64, AuditError> {
    let (mut head, cp_seq) = open_chain(store, node, signer).await?;
    let now = OffsetDateTime::now_utc();
    let mut rows = Vec::with_capacity(per_tx.max(1));
    let mut n = 0u64;
    for mut rec in records {
        let (at, at_ms) = normalize_at(&rec.at, now);
        rec.at = at;
        rec.node = node.to_owned();
        rec.seq = head.seq + 1;
        let (row, next) = prepare(&rec, at_ms, head, cp_seq, &signer.mac);
        rows.push(row);
        head = next;
        n += 1;
        if rows.len() >= per_tx.max(1) {
            rows = store.insert_batch(rows).await?;
            rows.clear();
        }
    }
    if !rows.is_empty() {
        store.insert_batch(rows).await?;
    }
    if n > 0 {
        let chains = known_chains(store, signer, node).await?;
        store
            .insert_checkpoint(&signer.checkpoint(node, head, cp_seq, chains, OffsetDateTime::now_utc()))
            .await?;
    }
    Ok(n)
}
