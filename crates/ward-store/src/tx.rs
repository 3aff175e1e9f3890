//! Several writes in one database transaction (SPEC IN-5): all of them or none.
//!
//! [`Store::transaction`] is the only write path: `create_with_id`, `update` and `delete` are
//! one-operation transactions, so a bundle and a single interaction share the same code (the
//! version row, the current pointer, the search index and the compartment rows of every
//! resource, in the caller's transaction).
//!
//! Order of work inside the transaction:
//! 1. PostgreSQL only: a transaction of reads only runs at REPEATABLE READ (one snapshot).
//!    Locks are taken in a fixed order so concurrent transactions queue instead of
//!    deadlocking: a transaction-scoped advisory lock per distinct conditional-create criteria
//!    (type and search values, keyed by the blind-index key), then the current rows of every
//!    resource that is updated or deleted, sorted.
//! 2. Conditional creates (`if_none_exist`) are evaluated on the transaction's connection
//!    before any of its writes (so against the state before the transaction, never its own
//!    writes). The advisory lock serializes conditional creates with the same criteria across
//!    transactions and nodes (creates with other criteria run in parallel; the same condition
//!    spelled differently, e.g. other letter case, gets another lock); on SQLite the single
//!    writer connection serializes all writes.
//! 3. The operations, in the given order. A failing operation rolls everything back.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use serde_json::Value;
use sqlx::Row;

use crate::{Backend, Put, Store, StoreError, Stored, StoredJson, UPDATE_ATTEMPTS};

/// One operation of [`Store::transaction`].
#[derive(Clone)]
pub enum TxOp {
    /// Creates version 1 of `rtype/id` ([`StoreError::Duplicate`] if the id is taken, live or
    /// deleted). With `if_none_exist` (search parameters, as for `If-None-Exist`): when they
    /// match exactly one live resource nothing is written, the outcome is
    /// [`TxOutcome::Matched`], and every `reference` equal to `rtype/id` in the resources of the
    /// transaction's other operations is redirected to the matched resource; more than one
    /// match is [`StoreError::MultipleMatches`].
    Create {
        rtype: String,
        id: String,
        resource: Value,
        if_none_exist: Option<Vec<(String, String)>>,
    },
    /// As [`Store::update`]: a new version (with `if_match`, of exactly that version), or the
    /// creation of `rtype/id`. Without `may_create` it only updates a live resource: a new id
    /// is [`StoreError::NotFound`] and a deleted one (even with `if_match` naming its
    /// tombstone) [`StoreError::Gone`], decided inside the transaction (a revive is a create).
    Update {
        rtype: String,
        id: String,
        resource: Value,
        if_match: Option<i64>,
        may_create: bool,
    },
    /// As [`Store::delete`]: a tombstone version.
    Delete {
        rtype: String,
        id: String,
        if_match: Option<i64>,
    },
    /// Reads the current version (or `version`) inside the transaction, seeing its earlier
    /// writes. Not found or deleted fails the transaction like any other operation.
    Read {
        rtype: String,
        id: String,
        version: Option<i64>,
    },
}

impl TxOp {
    /// The resource type and id the operation targets.
    pub fn target(&self) -> (&str, &str) {
        match self {
            TxOp::Create { rtype, id, .. }
            | TxOp::Update { rtype, id, .. }
            | TxOp::Delete { rtype, id, .. }
            | TxOp::Read { rtype, id, .. } => (rtype, id),
        }
    }

    /// An update or delete without `if_match` that lost a race is retried (as a whole
    /// transaction): the caller asked for "the latest version", whatever it is.
    fn retry_on_conflict(&self) -> bool {
        matches!(
            self,
            TxOp::Update { if_match: None, .. } | TxOp::Delete { if_match: None, .. }
        )
    }
}

/// Prints no resource content and no search values (they can be PHI).
impl fmt::Debug for TxOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TxOp::Create {
                rtype,
                id,
                if_none_exist,
                ..
            } => f
                .debug_struct("Create")
                .field("rtype", rtype)
                .field("id", id)
                .field("conditional", &if_none_exist.is_some())
                .finish_non_exhaustive(),
            TxOp::Update {
                rtype, id, if_match, ..
            } => f
                .debug_struct("Update")
                .field("rtype", rtype)
                .field("id", id)
                .field("if_match", if_match)
                .finish_non_exhaustive(),
            TxOp::Delete { rtype, id, if_match } => f
                .debug_struct("Delete")
                .field("rtype", rtype)
                .field("id", id)
                .field("if_match", if_match)
                .finish(),
            TxOp::Read { rtype, id, version } => f
                .debug_struct("Read")
                .field("rtype", rtype)
                .field("id", id)
                .field("version", version)
                .finish(),
        }
    }
}

/// The result of one [`TxOp`], in the order of the operations.
#[derive(Debug, Clone)]
pub enum TxOutcome {
    /// A created resource (version 1).
    Created(Stored),
    /// A conditional create whose criteria matched this existing resource; nothing written.
    Matched(Stored),
    /// A new version; `created` when the update created (or revived) the resource.
    Updated { stored: Stored, created: bool },
    /// The tombstone, or `None` if the resource never existed.
    Deleted(Option<Stored>),
    /// A version read inside the transaction, as its verified JSON bytes (unparsed).
    Read(StoredJson),
    /// A version read inside the transaction whose bytes did not fit the transaction's read
    /// budget ([`Store::transaction_within`]): left out, not disclosed.
    ReadWithheld { rtype: String, id: String, version: i64 },
}

/// The audit intent record a write transaction runs under: the node's chain and the intent's
/// seq. Each version the transaction writes is tagged with it (table `write_intent`, in the
/// same transaction), so whether an intent's change was stored can be asked later
/// ([`Store::intent_versions`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IntentRef {
    pub node: String,
    pub seq: i64,
}

/// Why a transaction was rolled back: the failing operation (`None`: the transaction itself,
/// e.g. the commit) and the error.
#[derive(Debug, thiserror::Error)]
#[error("transaction rolled back: {error}")]
pub struct TxError {
    pub index: Option<usize>,
    #[source]
    pub error: StoreError,
}

/// A failed write inside a transaction.
pub(crate) enum WriteFail {
    Error(StoreError),
    /// A concurrent writer moved the current pointer or took the id first. The transaction
    /// must be rolled back (on PostgreSQL it is already aborted) before the error is resolved.
    Lost {
        create_only: bool,
    },
}

impl From<StoreError> for WriteFail {
    fn from(e: StoreError) -> Self {
        WriteFail::Error(e)
    }
}

impl From<sqlx::Error> for WriteFail {
    fn from(e: sqlx::Error) -> Self {
        WriteFail::Error(e.into())
    }
}

impl From<ward_crypto::Error> for WriteFail {
    fn from(e: ward_crypto::Error) -> Self {
        WriteFail::Error(e.into())
    }
}

impl Store {
    /// Key of the PostgreSQL advisory lock that serializes conditional creates with the same
    /// criteria (of one type): two such creates produce one resource, while creates with other
    /// criteria do not wait for each other. Keyed by the blind-index key, so the number seen in
    /// `pg_locks` says nothing about the (identifying) search values.
    pub(crate) fn conditional_lock_key(&self, rtype: &str, criteria: &[(String, String)]) -> i64 {
        let mut pairs: Vec<&(String, String)> = criteria.iter().collect();
        pairs.sort();
        pairs.dedup();
        let mut msg = Vec::new();
        for part in [self.tenant(), rtype]
            .into_iter()
            .chain(pairs.iter().flat_map(|(k, v)| [k.as_str(), v.as_str()]))
        {
            msg.extend_from_slice(&(part.len() as u64).to_be_bytes());
            msg.extend_from_slice(part.as_bytes());
        }
        let h = self.inner.indexer.mac("if-none-exist-lock-v1", &msg);
        i64::from_be_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]])
    }
}

/// Replaces every `reference` string that is a key of `map` (anywhere in `v`).
fn redirect_references(v: &mut Value, map: &HashMap<String, String>) {
    match v {
        Value::Object(o) => {
            for (k, child) in o.iter_mut() {
                if k == "reference"
                    && let Value::String(s) = child
                {
                    if let Some(to) = map.get(s.as_str()) {
                        *s = to.clone();
                    }
                } else {
                    redirect_references(child, map);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|c| redirect_references(c, map)),
        _ => {}
    }
}

impl Store {
    /// Applies `ops` in one database transaction: all or none. On failure nothing is written
    /// and [`TxError::index`] names the failing operation. Updates and deletes without
    /// `if_match` that lose a race to a concurrent writer retry the whole transaction.
    pub async fn transaction(&self, ops: &[TxOp]) -> Result<Vec<TxOutcome>, TxError> {
        self.transaction_within(ops, usize::MAX).await
    }

    /// [`Store::transaction`] holding at most `max_read_bytes` of JSON read by its
    /// [`TxOp::Read`]s (in order): a read past it is [`TxOutcome::ReadWithheld`].
    pub async fn transaction_within(
        &self,
        ops: &[TxOp],
        max_read_bytes: usize,
    ) -> Result<Vec<TxOutcome>, TxError> {
        self.transaction_under(ops, max_read_bytes, None).await
    }

    /// [`Store::transaction_within`] under the audit intent `intent`: every version written is
    /// tagged with it in the same transaction.
    pub async fn transaction_under(
        &self,
        ops: &[TxOp],
        max_read_bytes: usize,
        intent: Option<&IntentRef>,
    ) -> Result<Vec<TxOutcome>, TxError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.try_transaction(ops, max_read_bytes, intent).await {
                Err(TxError {
                    index: Some(i),
                    error: StoreError::VersionConflict { .. },
                }) if attempt < UPDATE_ATTEMPTS && ops[i].retry_on_conflict() => continue,
                other => return other,
            }
        }
    }

    /// A transaction of one operation.
    pub(crate) async fn single(&self, op: TxOp) -> Result<TxOutcome, StoreError> {
        let mut out = self
            .transaction(std::slice::from_ref(&op))
            .await
            .map_err(|e| e.error)?;
        out.pop()
            .ok_or_else(|| StoreError::Corrupt("a transaction returned no outcome".into()))
    }

    async fn try_transaction(
        &self,
        ops: &[TxOp],
        max_read_bytes: usize,
        intent: Option<&IntentRef>,
    ) -> Result<Vec<TxOutcome>, TxError> {
        let mut read_left = max_read_bytes;
        let whole = |error: StoreError| TxError { index: None, error };
        let at = |i: usize| {
            move |error: StoreError| TxError {
                index: Some(i),
                error,
            }
        };
        // The last line behind the API's routing: no AuditEvent (or other type Ward makes
        // itself) is ever written here, under any spelling that reached this far.
        if let Some(i) = ops.iter().position(|op| {
            matches!(
                op,
                TxOp::Create { .. } | TxOp::Update { .. } | TxOp::Delete { .. }
            ) && ward_fhir::types::is_server_made(op.target().0)
        }) {
            return Err(at(i)(StoreError::NotWritable));
        }
        let mut tx = self.inner.writer.begin().await.map_err(|e| whole(e.into()))?;

        // Reads only: one snapshot for all of them (READ COMMITTED would give each statement
        // its own, so a writer committing between two reads would be half seen). A transaction
        // that writes keeps READ COMMITTED: its row locks and retries handle races, where
        // REPEATABLE READ would fail them with serialization errors. SQLite: the transaction's
        // first read fixes its snapshot.
        if self.inner.backend == Backend::Postgres && ops.iter().all(|op| matches!(op, TxOp::Read { .. })) {
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .execute(&mut *tx)
                .await
                .map_err(|e| whole(e.into()))?;
        }

        if self.inner.backend == Backend::Postgres {
            let mut keys: Vec<i64> = ops
                .iter()
                .filter_map(|op| match op {
                    TxOp::Create {
                        rtype,
                        if_none_exist: Some(criteria),
                        ..
                    } => Some(self.conditional_lock_key(rtype, criteria)),
                    _ => None,
                })
                .collect();
            keys.sort_unstable();
            keys.dedup();
            for key in keys {
                sqlx::query("SELECT 1 AS locked FROM pg_advisory_xact_lock($1)")
                    .bind(key)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| whole(e.into()))?;
            }
            let mut targets: Vec<(&str, &str)> = ops
                .iter()
                .filter(|op| matches!(op, TxOp::Update { .. } | TxOp::Delete { .. }))
                .map(TxOp::target)
                .collect();
            targets.sort_unstable();
            targets.dedup();
            if targets.len() > 1 {
                for (rtype, id) in targets {
                    self.current_for_write(&mut tx, rtype, id).await.map_err(whole)?;
                }
            }
        }

        // Conditional creates, against the committed state.
        let mut matched: Vec<Option<String>> = vec![None; ops.len()];
        let mut redirect: HashMap<String, String> = HashMap::new();
        for (i, op) in ops.iter().enumerate() {
            if let TxOp::Create {
                rtype,
                id,
                if_none_exist: Some(criteria),
                ..
            } = op
            {
                let ids = self
                    .find_matching_on(&mut tx, rtype, criteria)
                    .await
                    .map_err(at(i))?;
                match ids.as_slice() {
                    [] => {}
                    [found] => {
                        redirect.insert(format!("{rtype}/{id}"), format!("{rtype}/{found}"));
                        matched[i] = Some(found.clone());
                    }
                    _ => return Err(at(i)(StoreError::MultipleMatches)),
                }
            }
        }
        let resource_of = |r: &'_ Value| -> Value {
            let mut r = Cow::Borrowed(r);
            if !redirect.is_empty() {
                redirect_references(r.to_mut(), &redirect);
            }
            r.into_owned()
        };

        let mut out = Vec::with_capacity(ops.len());
        for (i, op) in ops.iter().enumerate() {
            let result: Result<TxOutcome, WriteFail> = match op {
                TxOp::Create {
                    rtype, id, resource, ..
                } => match &matched[i] {
                    Some(found) => self
                        .read_in(&mut tx, rtype, found, None)
                        .await
                        .and_then(StoredJson::parse)
                        .map(TxOutcome::Matched)
                        .map_err(WriteFail::from),
                    None => self
                        .put_in(&mut tx, rtype, id, &resource_of(resource), None, Put::Create)
                        .await
                        .map(|(s, _)| TxOutcome::Created(s)),
                },
                TxOp::Update {
                    rtype,
                    id,
                    resource,
                    if_match,
                    may_create,
                } => self
                    .put_in(
                        &mut tx,
                        rtype,
                        id,
                        &resource_of(resource),
                        *if_match,
                        if *may_create { Put::Upsert } else { Put::Update },
                    )
                    .await
                    .map(|(stored, created)| TxOutcome::Updated { stored, created }),
                TxOp::Delete { rtype, id, if_match } => self
                    .delete_in(&mut tx, rtype, id, *if_match)
                    .await
                    .map(TxOutcome::Deleted),
                TxOp::Read { rtype, id, version } => self
                    .read_in(&mut tx, rtype, id, *version)
                    .await
                    .map(|s| match read_left.checked_sub(s.json.len()) {
                        Some(left) => {
                            read_left = left;
                            TxOutcome::Read(s)
                        }
                        None => TxOutcome::ReadWithheld {
                            rtype: s.rtype.clone(),
                            id: s.id.clone(),
                            version: s.version,
                        },
                    })
                    .map_err(WriteFail::from),
            };
            match result {
                Ok(o) => out.push(o),
                Err(fail) => {
                    // Roll back before looking at what the winner of a race committed.
                    drop(tx);
                    let error = match fail {
                        WriteFail::Error(e) => e,
                        WriteFail::Lost { create_only: true } => StoreError::Duplicate,
                        WriteFail::Lost { create_only: false } => {
                            let (rtype, id) = op.target();
                            self.conflict(rtype, id).await
                        }
                    };
                    return Err(at(i)(error));
                }
            }
        }
        if let Some(intent) = intent {
            for written in out.iter().filter_map(TxOutcome::written) {
                // A delete of a deleted resource returns the tombstone another intent wrote:
                // that row stays as it is.
                sqlx::query(
                    "INSERT INTO write_intent (tenant, rtype, id, version, node, intent_seq) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                )
                .bind(self.tenant())
                .bind(written.rtype.as_str())
                .bind(written.id.as_str())
                .bind(written.version)
                .bind(intent.node.as_str())
                .bind(intent.seq)
                .execute(&mut *tx)
                .await
                .map_err(|e| whole(e.into()))?;
            }
        }
        tx.commit().await.map_err(|e| whole(e.into()))?;
        Ok(out)
    }

    /// The versions (type, id, version) written under the audit intent `intent`: empty when
    /// its change was not stored.
    pub async fn intent_versions(
        &self,
        intent: &IntentRef,
    ) -> Result<Vec<(String, String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT rtype, id, version FROM write_intent WHERE node = $1 AND intent_seq = $2 \
             AND tenant = $3 ORDER BY rtype, id, version",
        )
        .bind(intent.node.as_str())
        .bind(intent.seq)
        .bind(self.tenant())
        .fetch_all(&self.inner.writer)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect()
    }
}

impl TxOutcome {
    /// The version this outcome wrote, if it is a write.
    fn written(&self) -> Option<&Stored> {
        match self {
            TxOutcome::Created(s) | TxOutcome::Updated { stored: s, .. } => Some(s),
            TxOutcome::Deleted(t) => t.as_ref(),
            TxOutcome::Matched(_) | TxOutcome::Read(_) | TxOutcome::ReadWithheld { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn redirects_nested_references_only() {
        let map = HashMap::from([("Patient/planned".to_owned(), "Patient/real".to_owned())]);
        let mut v = json!({
            "subject": {"reference": "Patient/planned"},
            "performer": [{"reference": "Patient/planned"}, {"reference": "Patient/other"}],
            "identifier": [{"value": "Patient/planned"}],
            "contained": [{"resourceType": "Provenance", "target": [{"reference": "Patient/planned"}]}]
        });
        redirect_references(&mut v, &map);
        assert_eq!(v["subject"]["reference"], "Patient/real");
        assert_eq!(v["performer"][0]["reference"], "Patient/real");
        assert_eq!(v["performer"][1]["reference"], "Patient/other");
        assert_eq!(v["identifier"][0]["value"], "Patient/planned");
        assert_eq!(v["contained"][0]["target"][0]["reference"], "Patient/real");
    }

    fn criteria(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn patient(mrn: &str) -> Value {
        json!({"resourceType": "Patient", "identifier": [{"system": "urn:sys", "value": mrn}]})
    }

    async fn conditional_create(store: &Store, mrn: &str) -> Result<Vec<TxOutcome>, TxError> {
        let op = TxOp::Create {
            rtype: "Patient".into(),
            id: uuid::Uuid::new_v4().to_string(),
            resource: patient(mrn),
            if_none_exist: Some(criteria(&[("identifier", &format!("urn:sys|{mrn}"))])),
        };
        store.transaction(std::slice::from_ref(&op)).await
    }

    /// Issue 16 item 4: conditional creates wait only for those with the same criteria.
    /// Before, one lock per type made every conditional create of Patients wait for any other.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn conditional_creates_serialize_per_criteria() {
        use sqlx::Connection;
        let url = crate::testing::fresh_postgres_url().await;
        let store = Store::open(&url, &ward_crypto::Kek::generate().unwrap())
            .await
            .unwrap();
        let a = store.conditional_lock_key(
            "Patient",
            &criteria(&[("identifier", "urn:sys|A"), ("family", "X")]),
        );
        let a_reordered = store.conditional_lock_key(
            "Patient",
            &criteria(&[("family", "X"), ("identifier", "urn:sys|A")]),
        );
        assert_eq!(a, a_reordered);
        assert_ne!(
            a,
            store.conditional_lock_key("Patient", &criteria(&[("identifier", "urn:sys|B")]))
        );
        assert_ne!(
            a,
            store.conditional_lock_key(
                "Group",
                &criteria(&[("identifier", "urn:sys|A"), ("family", "X")])
            )
        );

        // Someone holds the lock of criteria "A": a create with those waits, one with "B" not.
        let mut holder = sqlx::AnyConnection::connect(&url).await.unwrap();
        let key_a = store.conditional_lock_key("Patient", &criteria(&[("identifier", "urn:sys|A")]));
        sqlx::query("SELECT 1 AS locked FROM pg_advisory_lock($1)")
            .bind(key_a)
            .execute(&mut holder)
            .await
            .unwrap();
        let waiting = tokio::spawn({
            let store = store.clone();
            async move { conditional_create(&store, "A").await }
        });
        let other = tokio::time::timeout(
            std::time::Duration::from_secs(20),
            conditional_create(&store, "B"),
        )
        .await
        .expect("a create with other criteria does not wait");
        assert!(matches!(other.unwrap().as_slice(), [TxOutcome::Created(_)]));
        assert!(!waiting.is_finished(), "a create with the held criteria waits");
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(key_a)
            .execute(&mut holder)
            .await
            .unwrap();
        assert!(matches!(
            waiting.await.unwrap().unwrap().as_slice(),
            [TxOutcome::Created(_)]
        ));

        // Racing creates with the same criteria still make one resource.
        let racers: Vec<_> = (0..8)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move { conditional_create(&store, "C").await })
            })
            .collect();
        let mut created = 0;
        for r in racers {
            if matches!(r.await.unwrap().unwrap().as_slice(), [TxOutcome::Created(_)]) {
                created += 1;
            }
        }
        assert_eq!(created, 1);
        let _ = holder.close().await;
        store.close().await;
    }
}
