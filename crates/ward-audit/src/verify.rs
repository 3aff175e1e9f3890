//! Chain verification (AU-3): walks every node's chain in seq order, recomputes each hash over
//! the stored canonical bytes, checks the links and the signed checkpoints, and names the first
//! bad sequence number and the kind of damage.
//!
//! Classification of the first anomaly of a chain (seq `e` expected next, `H(e-1)` the hash of
//! the previous record):
//! * a gap (the next stored seq is beyond `e`): `Deleted(e)`, or `Reordered(e)` when record `e`
//!   turns up later (an export whose lines were swapped);
//! * a record whose own hash does not recompute: `Edited` when it still links to `H(e-1)`,
//!   otherwise `Inserted` (a forged row);
//! * a record that hashes correctly but does not link to `H(e-1)`:
//!   - it links to `H(e-2)`: record `e-1` was slipped in: `Inserted(e-1)`;
//!   - its canonical seq is not `e` (the row was moved): `Reordered(e)` when record `e` turns up
//!     later, `Deleted(e)` when records were removed and the rest renumbered, `Inserted(e)` when
//!     it duplicates an earlier record;
//!   - otherwise, when the next record links to `H(e-1)` the chain skips this row:
//!     `Inserted(e)`; when nothing follows: `Inserted(e)`; else record `e-1` was rewritten with a
//!     recomputed hash: `Edited(e-1)`.
//!
//! Checkpoints (checked after the walk): a signature that does not verify under the given
//! public key (or names another key id) is `BadSignature(cp.seq)`; a checkpoint naming a seq
//! beyond the last record is `TruncatedAfterCheckpoint(last + 1)`; a validly signed checkpoint
//! whose hash differs from the record at its seq (the chain up to there was rewritten) is
//! `BadCheckpoint(cp.seq)`. The reported damage is the one with the lowest seq.
//!
//! What no verifier can see: records appended after the last checkpoint by someone who can
//! recompute hashes, or removed from after it. Checkpoints every N records / T seconds and at
//! shutdown bound that window.

use std::collections::HashMap;
use std::fmt;

use serde::Serialize;
use sqlx::Row;
use ward_crypto::{audit_key_id, parse_ed25519_public_key, verify_ed25519};

use crate::AuditError;
use crate::record::canonical_prefix;
use crate::store::{AuditStore, Checkpoint};
use crate::writer::chain_hash;

/// Rows per page read from the store.
const PAGE: i64 = 20_000;
/// Most rows looked at after an anomaly to classify it.
const LOOKAHEAD: usize = 100_000;

/// The kind of damage found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Damage {
    Edited,
    Deleted,
    Inserted,
    Reordered,
    TruncatedAfterCheckpoint,
    BadSignature,
    BadCheckpoint,
}

impl Damage {
    pub fn as_str(self) -> &'static str {
        match self {
            Damage::Edited => "edited",
            Damage::Deleted => "deleted",
            Damage::Inserted => "inserted",
            Damage::Reordered => "reordered",
            Damage::TruncatedAfterCheckpoint => "truncated after the last checkpoint",
            Damage::BadSignature => "bad checkpoint signature",
            Damage::BadCheckpoint => "checkpoint does not match the chain",
        }
    }
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The first bad record of a chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BadRecord {
    pub node: String,
    pub seq: i64,
    pub kind: Damage,
}

/// The result for one node's chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChainReport {
    pub node: String,
    /// Records read.
    pub records: u64,
    /// Highest seq present.
    pub last_seq: i64,
    /// Hash (hex) of the last record that verified.
    pub last_hash: String,
    pub checkpoints: u64,
    /// Seq of the last checkpoint that verified (0 if none).
    pub verified_through: i64,
    pub first_bad: Option<BadRecord>,
}

/// The result of a verification.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    pub ok: bool,
    pub records: u64,
    pub chains: Vec<ChainReport>,
    /// The first damage of the first damaged chain (chains in node order).
    pub first_bad: Option<BadRecord>,
}

impl VerifyReport {
    pub(crate) fn from_chains(chains: Vec<ChainReport>) -> VerifyReport {
        let first_bad = chains.iter().find_map(|c| c.first_bad.clone());
        VerifyReport {
            ok: first_bad.is_none(),
            records: chains.iter().map(|c| c.records).sum(),
            chains,
            first_bad,
        }
    }
}

#[derive(Clone, Copy)]
struct Info {
    seq: i64,
    emb: Option<i64>,
    node_ok: bool,
    prev_hash: [u8; 32],
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum AnomalyKind {
    Gap,
    Link,
}

struct Anomaly {
    kind: AnomalyKind,
    row: Info,
    expected: i64,
    h_prev: [u8; 32],
    h_prev2: Option<[u8; 32]>,
}

enum State {
    Ok,
    Classifying(Box<Anomaly>, Vec<Info>),
    Done(i64, Damage),
}

/// Walks one chain row by row (rows in storage order).
pub(crate) struct Walker {
    node: String,
    expected: i64,
    prev: [u8; 32],
    prev2: Option<[u8; 32]>,
    records: u64,
    last_seq: i64,
    cp_seqs: HashMap<i64, Option<[u8; 32]>>,
    state: State,
}

fn to32(b: &[u8]) -> Option<[u8; 32]> {
    b.try_into().ok()
}

impl Walker {
    pub(crate) fn new(node: &str, checkpoints: &[Checkpoint]) -> Walker {
        Walker {
            node: node.to_owned(),
            expected: 1,
            prev: [0; 32],
            prev2: None,
            records: 0,
            last_seq: 0,
            cp_seqs: checkpoints.iter().map(|c| (c.seq, None)).collect(),
            state: State::Ok,
        }
    }

    /// Feeds the next stored row: its seq (position), canonical bytes, prev_hash and hash.
    pub(crate) fn push(&mut self, seq: i64, record: &[u8], prev_hash: &[u8], hash: &[u8]) {
        self.push_checked(seq, record, prev_hash, hash, true);
    }

    /// [`Walker::push`]; `readable_ok` false marks a row whose readable form (an exported
    /// AuditEvent) does not match its canonical bytes: `Edited` when it is otherwise in place.
    pub(crate) fn push_checked(
        &mut self,
        seq: i64,
        record: &[u8],
        prev_hash: &[u8],
        hash: &[u8],
        readable_ok: bool,
    ) {
        self.records += 1;
        self.last_seq = self.last_seq.max(seq);
        if matches!(self.state, State::Done(..)) {
            return;
        }
        let emb = canonical_prefix(record);
        let info = Info {
            seq,
            emb: emb.map(|(_, s)| s),
            node_ok: emb.is_some_and(|(n, _)| n == self.node.as_bytes()),
            prev_hash: to32(prev_hash).unwrap_or([0xff; 32]),
        };
        if let State::Classifying(a, following) = &mut self.state {
            following.push(info);
            let complete = following.len() >= LOOKAHEAD;
            if let Some((s, d)) = decide(a, following, complete) {
                self.state = State::Done(s, d);
            }
            return;
        }
        let e = self.expected;
        if seq > e {
            return self.anomaly(AnomalyKind::Gap, info);
        }
        if seq < e {
            // A second record claiming an already seen position (only possible in an export).
            self.state = State::Done(e, Damage::Inserted);
            return;
        }
        let (Some(prev_hash), Some(hash)) = (to32(prev_hash), to32(hash)) else {
            self.state = State::Done(seq, Damage::Edited);
            return;
        };
        if !readable_ok && prev_hash == self.prev {
            self.state = State::Done(seq, Damage::Edited);
            return;
        }
        if chain_hash(&prev_hash, record) != hash {
            let kind = if prev_hash == self.prev {
                Damage::Edited
            } else {
                Damage::Inserted
            };
            self.state = State::Done(seq, kind);
            return;
        }
        if prev_hash != self.prev {
            return self.anomaly(AnomalyKind::Link, info);
        }
        if info.emb != Some(seq) || !info.node_ok {
            // Hashes and links hold, yet the record names another position.
            self.state = State::Done(seq, Damage::Reordered);
            return;
        }
        if let Some(slot) = self.cp_seqs.get_mut(&seq) {
            *slot = Some(hash);
        }
        self.prev2 = Some(self.prev);
        self.prev = hash;
        self.expected += 1;
    }

    fn anomaly(&mut self, kind: AnomalyKind, row: Info) {
        let a = Box::new(Anomaly {
            kind,
            row,
            expected: self.expected,
            h_prev: self.prev,
            h_prev2: self.prev2,
        });
        self.state = match decide(&a, &[], false) {
            Some((s, d)) => State::Done(s, d),
            None => State::Classifying(a, Vec::new()),
        };
    }

    /// Ends the walk and checks the checkpoints.
    pub(crate) fn finish(mut self, checkpoints: &[Checkpoint], pubkey: &[u8; 32]) -> ChainReport {
        if let State::Classifying(a, following) = &self.state {
            let (s, d) = decide(a, following, true).unwrap_or((a.expected, Damage::Inserted));
            self.state = State::Done(s, d);
        }
        let chain_bad = match self.state {
            State::Done(s, d) => Some((s, d)),
            _ => None,
        };
        let key_id = audit_key_id(pubkey);
        let mut verified_through = 0;
        let mut cp_bad = None;
        let mut sorted: Vec<&Checkpoint> = checkpoints.iter().collect();
        sorted.sort_by_key(|c| c.seq);
        for cp in sorted {
            if chain_bad.is_some_and(|(b, _)| b <= cp.seq) {
                break;
            }
            let msg = Checkpoint::message(&self.node, cp.seq, &cp.hash, &cp.at);
            if cp.key_id != key_id || !verify_ed25519(pubkey, &msg, &cp.signature) {
                cp_bad = Some((cp.seq, Damage::BadSignature));
                break;
            }
            if cp.seq < 1 || cp.hash.len() != 32 {
                cp_bad = Some((cp.seq, Damage::BadCheckpoint));
                break;
            }
            if cp.seq > self.last_seq {
                cp_bad = Some((self.last_seq + 1, Damage::TruncatedAfterCheckpoint));
                break;
            }
            match self.cp_seqs.get(&cp.seq) {
                Some(Some(h)) if h[..] == cp.hash[..] => verified_through = cp.seq,
                _ => {
                    cp_bad = Some((cp.seq, Damage::BadCheckpoint));
                    break;
                }
            }
        }
        let first_bad = match (chain_bad, cp_bad) {
            (Some(c), Some(p)) => Some(if p.0 < c.0 { p } else { c }),
            (c, p) => c.or(p),
        }
        .map(|(seq, kind)| BadRecord {
            node: self.node.clone(),
            seq,
            kind,
        });
        ChainReport {
            records: self.records,
            last_seq: self.last_seq,
            last_hash: hex::encode(self.prev),
            checkpoints: checkpoints.len() as u64,
            verified_through,
            first_bad,
            node: self.node,
        }
    }
}

/// Classifies an anomaly from the rows after it; `None` while more rows could change the answer.
fn decide(a: &Anomaly, following: &[Info], complete: bool) -> Option<(i64, Damage)> {
    let e = a.expected;
    let turns_up_later = |s: i64| following.iter().any(|r| r.seq == s || r.emb == Some(s));
    match a.kind {
        AnomalyKind::Gap => {
            if a.row.emb == Some(e) || turns_up_later(e) {
                Some((e, Damage::Reordered))
            } else if complete {
                Some((e, Damage::Deleted))
            } else {
                None
            }
        }
        AnomalyKind::Link => {
            if Some(a.row.prev_hash) == a.h_prev2 {
                return Some((e - 1, Damage::Inserted));
            }
            if !a.row.node_ok {
                return Some((e, Damage::Inserted));
            }
            match a.row.emb {
                Some(m) if m < e => Some((e, Damage::Inserted)),
                Some(m) if m == e => match following.first() {
                    Some(next) if next.prev_hash == a.h_prev => Some((e, Damage::Inserted)),
                    Some(_) if e > 1 => Some((e - 1, Damage::Edited)),
                    Some(_) => Some((e, Damage::Edited)),
                    None if complete => Some((e, Damage::Inserted)),
                    None => None,
                },
                _ => {
                    if following.iter().any(|r| r.emb == Some(e)) {
                        Some((e, Damage::Reordered))
                    } else if complete {
                        Some((e, Damage::Deleted))
                    } else {
                        None
                    }
                }
            }
        }
    }
}

/// Verifies every chain in the store (one per node) and every checkpoint against `pubkey`
/// (raw 32 bytes, SubjectPublicKeyInfo DER or PEM).
pub async fn verify(store: &AuditStore, pubkey: &[u8]) -> Result<VerifyReport, AuditError> {
    let pk = parse_ed25519_public_key(pubkey)?;
    let mut chains = Vec::new();
    for node in store.nodes().await? {
        let cps = store.checkpoints(&node).await?;
        let mut walker = Walker::new(&node, &cps);
        let mut after = 0i64;
        let mut next = Some(tokio::spawn(fetch_page(store.clone(), node.clone(), after)));
        while let Some(handle) = next.take() {
            let rows = handle
                .await
                .map_err(|_| AuditError::Corrupt("verification task failed".into()))??;
            if rows.is_empty() {
                break;
            }
            let full = rows.len() as i64 == PAGE;
            if full {
                after = rows
                    .last()
                    .map(|r| r.try_get::<i64, _>(0))
                    .transpose()?
                    .unwrap_or(after);
                // Read the next page while this one is hashed.
                next = Some(tokio::spawn(fetch_page(store.clone(), node.clone(), after)));
            }
            for r in &rows {
                let seq: i64 = r.try_get(0)?;
                let record: &str = r.try_get(1)?;
                let prev_hash: &[u8] = r.try_get(2)?;
                let hash: &[u8] = r.try_get(3)?;
                walker.push(seq, record.as_bytes(), prev_hash, hash);
            }
        }
        chains.push(walker.finish(&cps, &pk));
    }
    Ok(VerifyReport::from_chains(chains))
}

async fn fetch_page(
    store: AuditStore,
    node: String,
    after: i64,
) -> Result<Vec<sqlx::any::AnyRow>, AuditError> {
    store.chain_page(&node, after, PAGE).await
}
