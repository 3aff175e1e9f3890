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
//! With the audit MAC key (online verification), a record that is otherwise in place but whose
//! MAC does not verify was written without the key: `Forged(seq)`; a record naming (under its
//! MAC) a checkpoint that is not there: `CheckpointRemoved(cp_seq)`.
//!
//! Checkpoints (checked after the walk): every chain starts with a signed genesis checkpoint
//! at seq 0, else `NoGenesis(0)` (a fabricated or unregistered chain, or all checkpoints
//! removed); a checkpoint whose `prev_seq` names no checkpoint is `CheckpointRemoved(prev_seq)`;
//! a signature that does not verify under the given public key (or names another key id) is
//! `BadSignature(cp.seq)`; a checkpoint naming a seq beyond the last record is
//! `TruncatedAfterCheckpoint(last + 1)`; a validly signed checkpoint whose hash differs from the
//! record at its seq (the chain up to there was rewritten) is `BadCheckpoint(cp.seq)`. A chain
//! that a verified checkpoint lists but that is not there at all is `MissingChain(0)`. The
//! reported damage is the one with the lowest seq.
//!
//! Records after a chain's last verified checkpoint are counted as `unsealed`. Online, their
//! MACs authenticate them; offline (public key only) nothing can: an export can be cut back to
//! any checkpoint, and its unsealed records rewritten, without an offline verifier noticing.

use std::collections::{HashMap, VecDeque};
use std::fmt;

use serde::Serialize;
use sqlx::Row;
use ward_crypto::{AuditMacKey, audit_key_id, parse_ed25519_public_key, verify_ed25519};

use crate::AuditError;
use crate::record::canonical_prefix;
use crate::store::{AuditStore, Checkpoint, PackedPage};
use crate::writer::{AuditSigner, chain_hash};

/// Seqs per page read from the store.
const PAGE: i64 = 4_000;
/// Pages being read while one is hashed: the SQLite reader pool's two connections.
const READ_AHEAD: usize = 2;
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
    /// Not written with the audit MAC key.
    Forged,
    /// No signed genesis checkpoint: a chain Ward never registered (or all its checkpoints
    /// were removed).
    NoGenesis,
    CheckpointRemoved,
    /// A chain listed by a signed checkpoint is not there.
    MissingChain,
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
            Damage::Forged => "not written with the audit key (forged)",
            Damage::NoGenesis => "no signed genesis checkpoint (unregistered chain)",
            Damage::CheckpointRemoved => "signed checkpoint removed",
            Damage::MissingChain => "chain missing",
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
    /// Records after the last verified checkpoint (not yet sealed by a signature).
    pub unsealed: u64,
    pub first_bad: Option<BadRecord>,
    /// Intent records no final record names yet (online verification only): writes that
    /// the node resolves at its next start-up or reconciliation pass.
    pub unresolved_intents: crate::UnresolvedIntents,
    /// The chains that the verified checkpoints list.
    #[serde(skip)]
    pub(crate) listed: Vec<String>,
}

/// The result of a verification.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    pub ok: bool,
    pub records: u64,
    /// Records not yet sealed by a signed checkpoint (see [`ChainReport::unsealed`]).
    pub unsealed: u64,
    pub chains: Vec<ChainReport>,
    /// The first damage of the first damaged chain (chains in node order).
    pub first_bad: Option<BadRecord>,
}

impl VerifyReport {
    /// The report over `chains`, adding every chain a verified checkpoint lists that is not
    /// among them (deleted whole) as `MissingChain`.
    pub(crate) fn from_chains(mut chains: Vec<ChainReport>) -> VerifyReport {
        let mut listed: Vec<String> = chains.iter().flat_map(|c| c.listed.iter().cloned()).collect();
        listed.sort();
        listed.dedup();
        for node in listed {
            if !chains.iter().any(|c| c.node == node) {
                chains.push(ChainReport {
                    records: 0,
                    last_seq: 0,
                    last_hash: hex::encode([0u8; 32]),
                    checkpoints: 0,
                    verified_through: 0,
                    unsealed: 0,
                    first_bad: Some(BadRecord {
                        node: node.clone(),
                        seq: 0,
                        kind: Damage::MissingChain,
                    }),
                    unresolved_intents: crate::UnresolvedIntents::default(),
                    listed: Vec::new(),
                    node,
                });
            }
        }
        chains.sort_by(|a, b| a.node.cmp(&b.node));
        let first_bad = chains.iter().find_map(|c| c.first_bad.clone());
        VerifyReport {
            ok: first_bad.is_none(),
            records: chains.iter().map(|c| c.records).sum(),
            unsealed: chains.iter().map(|c| c.unsealed).sum(),
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
pub(crate) struct Walker<'k> {
    node: String,
    /// Online: the MAC key every record must verify under.
    mac: Option<&'k AuditMacKey>,
    /// The checkpoint the last accepted record was written after.
    cur_cp: i64,
    expected: i64,
    prev: [u8; 32],
    prev2: Option<[u8; 32]>,
    records: u64,
    last_seq: i64,
    cp_seqs: HashMap<i64, Option<[u8; 32]>>,
    state: State,
}

const HEX_INVALID: u8 = 0xff;
const HEX_TABLE: [u8; 256] = {
    let mut t = [HEX_INVALID; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// Decodes 64 hex digits (either case) into 32 bytes.
fn decode_hex32(hex: &[u8], out: &mut [u8; 32]) -> bool {
    if hex.len() != 64 {
        return false;
    }
    let mut bad = 0u8;
    for (i, o) in out.iter_mut().enumerate() {
        let hi = HEX_TABLE[hex[2 * i] as usize];
        let lo = HEX_TABLE[hex[2 * i + 1] as usize];
        bad |= (hi | lo) & 0xf0;
        *o = (hi << 4) | (lo & 0x0f);
    }
    bad == 0
}

fn to32(b: &[u8]) -> Option<[u8; 32]> {
    b.try_into().ok()
}

impl<'k> Walker<'k> {
    pub(crate) fn new(node: &str, checkpoints: &[Checkpoint], mac: Option<&'k AuditMacKey>) -> Walker<'k> {
        Walker {
            node: node.to_owned(),
            mac,
            cur_cp: 0,
            expected: 1,
            prev: [0; 32],
            prev2: None,
            records: 0,
            last_seq: 0,
            cp_seqs: checkpoints.iter().map(|c| (c.seq, None)).collect(),
            state: State::Ok,
        }
    }

    /// Feeds the next stored row: its seq (position), canonical bytes, prev_hash, hash and
    /// seal (cp_seq, mac).
    pub(crate) fn push(
        &mut self,
        seq: i64,
        record: &[u8],
        prev_hash: &[u8],
        hash: &[u8],
        seal: (i64, &[u8]),
    ) {
        self.push_checked(seq, record, prev_hash, hash, Some(seal), true);
    }

    /// [`Walker::push`]; `readable_ok` false marks a row whose readable form (an exported
    /// AuditEvent) does not match its canonical bytes: `Edited` when it is otherwise in place.
    /// `seal` is `None` offline (an export carries no MACs).
    pub(crate) fn push_checked(
        &mut self,
        seq: i64,
        record: &[u8],
        prev_hash: &[u8],
        hash: &[u8],
        seal: Option<(i64, &[u8])>,
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
        if let Some(key) = self.mac {
            let (cp_seq, tag) = seal.unwrap_or((-1, &[]));
            if !key.verify(&hash, cp_seq, tag) {
                self.state = State::Done(seq, Damage::Forged);
                return;
            }
            if !self.seal_ok(seq, cp_seq) {
                self.state = State::Done(cp_seq.max(0), Damage::CheckpointRemoved);
                return;
            }
            self.cur_cp = cp_seq;
        }
        if let Some(slot) = self.cp_seqs.get_mut(&seq) {
            *slot = Some(hash);
        }
        self.prev2 = Some(self.prev);
        self.prev = hash;
        self.expected += 1;
    }

    /// Whether an authentic record `seq` written after checkpoint `cp_seq` fits: that
    /// checkpoint is there, before the record and not before the one of the record before.
    fn seal_ok(&self, seq: i64, cp_seq: i64) -> bool {
        cp_seq >= self.cur_cp && cp_seq < seq && self.cp_seqs.contains_key(&cp_seq)
    }

    /// Whether no anomaly has been seen yet (the packed fast path applies).
    pub(crate) fn is_clean(&self) -> bool {
        matches!(self.state, State::Ok)
    }

    pub(crate) fn is_done(&self) -> bool {
        matches!(self.state, State::Done(..))
    }

    /// Counts rows that are not examined (after the damage was classified).
    pub(crate) fn skip(&mut self, count: u64, max_seq: i64) {
        self.records += count;
        self.last_seq = self.last_seq.max(max_seq);
    }

    /// Fast path over a packed page. Consumes rows while everything is intact; returns the seq
    /// of the first row it did not accept (to be fed through [`Walker::push`]), or `None` when
    /// the whole page verified.
    pub(crate) fn push_packed(&mut self, page: &PackedPage) -> Option<i64> {
        let count = usize::try_from(page.count).unwrap_or(0);
        let shape_ok = page.min_seq == self.expected
            && page.max_seq - page.min_seq + 1 == page.count
            && page.prev_hashes.len() == 64 * count
            && page.hashes.len() == 64 * count
            && (self.mac.is_none() || page.macs.len() == 64 * count);
        if !shape_ok {
            return Some(page.min_seq.min(self.expected));
        }
        let all = page.records.as_bytes();
        let mut lengths = page.lengths.split(',');
        let mut cp_seqs = page.cp_seqs.split(',');
        let macs = page.macs.as_bytes();
        let mut offset = 0usize;
        let node = self.node.as_bytes();
        let (prevs, hashes) = (page.prev_hashes.as_bytes(), page.hashes.as_bytes());
        for i in 0..count {
            let seq = page.min_seq + i as i64;
            let Some(len) = lengths.next().and_then(|l| l.parse::<usize>().ok()) else {
                return Some(seq);
            };
            let Some(record) = all.get(offset..offset + len) else {
                return Some(seq);
            };
            offset += len;
            let mut prev = [0u8; 32];
            let mut hash = [0u8; 32];
            let ok = decode_hex32(&prevs[i * 64..(i + 1) * 64], &mut prev)
                && decode_hex32(&hashes[i * 64..(i + 1) * 64], &mut hash)
                && prev == self.prev
                && chain_hash(&prev, record) == hash
                && canonical_prefix(record) == Some((node, seq));
            if !ok {
                return Some(seq);
            }
            if let Some(key) = self.mac {
                let mut tag = [0u8; 32];
                let cp_seq = cp_seqs.next().and_then(|c| c.parse::<i64>().ok());
                let sealed = cp_seq.is_some_and(|c| {
                    decode_hex32(&macs[i * 64..(i + 1) * 64], &mut tag)
                        && (c == self.cur_cp || self.seal_ok(seq, c))
                        && key.verify(&hash, c, &tag)
                });
                if !sealed {
                    return Some(seq);
                }
                self.cur_cp = cp_seq.unwrap_or(self.cur_cp);
            }
            if let Some(slot) = self.cp_seqs.get_mut(&seq) {
                *slot = Some(hash);
            }
            self.records += 1;
            self.last_seq = self.last_seq.max(seq);
            self.prev2 = Some(self.prev);
            self.prev = hash;
            self.expected += 1;
        }
        None
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
        let mut listed = Vec::new();
        let mut sorted: Vec<&Checkpoint> = checkpoints.iter().collect();
        sorted.sort_by_key(|c| c.seq);
        if sorted.first().is_none_or(|g| g.seq != 0) {
            cp_bad = Some((0, Damage::NoGenesis));
            sorted.clear();
        }
        for cp in sorted {
            if chain_bad.is_some_and(|(b, _)| b <= cp.seq) {
                break;
            }
            if cp.node != self.node
                || cp.key_id != key_id
                || !verify_ed25519(pubkey, &cp.message(), &cp.signature)
            {
                cp_bad = Some((cp.seq, Damage::BadSignature));
                break;
            }
            let genesis = cp.seq == 0;
            if cp.seq < 0
                || cp.hash.len() != 32
                || genesis != (cp.prev_seq == -1)
                || (genesis && cp.hash != [0; 32])
            {
                cp_bad = Some((cp.seq, Damage::BadCheckpoint));
                break;
            }
            if !genesis && (cp.prev_seq >= cp.seq || !checkpoints.iter().any(|p| p.seq == cp.prev_seq)) {
                cp_bad = Some((cp.prev_seq.max(0), Damage::CheckpointRemoved));
                break;
            }
            listed.extend(cp.chain_list().map(str::to_owned));
            if genesis {
                continue;
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
        let unsealed = if first_bad.is_none() {
            u64::try_from(self.last_seq - verified_through).unwrap_or(0)
        } else {
            0
        };
        ChainReport {
            records: self.records,
            last_seq: self.last_seq,
            last_hash: hex::encode(self.prev),
            checkpoints: checkpoints.len() as u64,
            verified_through,
            unsealed,
            first_bad,
            unresolved_intents: crate::UnresolvedIntents::default(),
            listed,
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

/// Verifies every chain in the store (one per node), every record's MAC and every checkpoint
/// against `keys` (their public key and MAC key). Records appended while it runs are left to
/// the next run.
pub async fn verify(store: &AuditStore, keys: &AuditSigner) -> Result<VerifyReport, AuditError> {
    let pk = parse_ed25519_public_key(&keys.public_key_bytes())?;
    let mut chains = Vec::new();
    let nodes = store.nodes().await?;
    // Not one checkpoint signed by this key: the trail is another deployment's (or these keys
    // are), which says more than "every chain is badly signed".
    let mut key_ids = Vec::new();
    for node in &nodes {
        for cp in store.checkpoints(node).await? {
            key_ids.push(cp.key_id);
        }
    }
    let ours = keys.key_id();
    if !key_ids.is_empty() && !key_ids.contains(&ours) {
        key_ids.sort();
        key_ids.dedup();
        return Err(AuditError::OtherKey {
            found: key_ids.join(", "),
            ours,
        });
    }
    for node in nodes {
        let cps = store.checkpoints(&node).await?;
        let mut walker = Walker::new(&node, &cps, Some(keys.mac_key()));
        // Pages are seq ranges: the next ones are read (each on a reader connection of its
        // own) while this one is hashed. Past an empty range (deleted rows, or a forged row far
        // away) reading jumps to the next stored row, so no seq value makes it walk empty
        // ranges; a forged row below seq 1 is read like any other.
        let Some((first, last)) = store.seq_bounds(&node).await? else {
            chains.push(walker.finish(&cps, &pk));
            continue;
        };
        let fetch = |from: i64, to: i64| tokio::spawn(fetch_packed(store.clone(), node.clone(), from, to));
        let mut next_from = Some(first);
        let mut ahead = VecDeque::new();
        loop {
            while ahead.len() <= READ_AHEAD
                && let Some(from) = next_from
            {
                let to = from.saturating_add(PAGE - 1).min(last);
                ahead.push_back((to, fetch(from, to)));
                next_from = (to < last).then(|| to + 1);
            }
            let Some((to, handle)) = ahead.pop_front() else {
                break;
            };
            let page = handle
                .await
                .map_err(|_| AuditError::Corrupt("verification task failed".into()))??;
            if page.count == 0 {
                ahead.clear();
                next_from = store.next_seq(&node, to).await?.filter(|s| *s <= last);
                continue;
            }
            let resume = if walker.is_done() {
                walker.skip(page.count as u64, page.max_seq);
                None
            } else if walker.is_clean() {
                walker.push_packed(&page)
            } else {
                Some(page.min_seq)
            };
            if let Some(from) = resume {
                // Row by row (classification) for the rest of this page.
                let rows = store.chain_range(&node, from, page.max_seq).await?;
                for r in &rows {
                    let seq: i64 = r.try_get(0)?;
                    let record: &str = r.try_get(1)?;
                    let prev_hash: &[u8] = r.try_get(2)?;
                    let hash: &[u8] = r.try_get(3)?;
                    let cp_seq: i64 = r.try_get(4)?;
                    let mac: &[u8] = r.try_get(5)?;
                    walker.push(seq, record.as_bytes(), prev_hash, hash, (cp_seq, mac));
                }
            }
        }
        let mut report = walker.finish(&cps, &pk);
        report.unresolved_intents = store.unresolved_summary(&node).await?;
        chains.push(report);
    }
    Ok(VerifyReport::from_chains(chains))
}

async fn fetch_packed(store: AuditStore, node: String, from: i64, to: i64) -> Result<PackedPage, AuditError> {
    store.chain_page_packed(&node, from, to).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_pages_verify_and_fall_back() {
        let mut rec = crate::record::tests::sample();
        rec.node = "n1".into();
        let mut page = PackedPage {
            count: 300,
            min_seq: 1,
            max_seq: 300,
            records: String::new(),
            lengths: String::new(),
            prev_hashes: String::new(),
            hashes: String::new(),
            cp_seqs: String::new(),
            macs: String::new(),
        };
        let mut prev = [0u8; 32];
        for seq in 1..=300 {
            rec.seq = seq;
            rec.request_id = format!("r{seq}\n");
            let b = rec.canonical_bytes();
            let h = chain_hash(&prev, &b);
            if seq > 1 {
                page.lengths.push(',');
            }
            page.lengths.push_str(&b.len().to_string());
            page.records.push_str(std::str::from_utf8(&b).unwrap());
            page.prev_hashes.push_str(&hex::encode_upper(prev));
            page.hashes.push_str(&hex::encode(h));
            prev = h;
        }
        let mut w = Walker::new("n1", &[], None);
        assert_eq!(w.push_packed(&page), None);
        assert_eq!((w.records, w.expected), (300, 301));
        let t = std::time::Instant::now();
        for _ in 0..20 {
            assert_eq!(Walker::new("n1", &[], None).push_packed(&page), None);
        }
        eprintln!("push_packed: {:.0} records/s", 6000.0 / t.elapsed().as_secs_f64());
        // A damaged hash stops the fast path at its row.
        let mut bad = page.hashes.clone().into_bytes();
        bad[64 * 150] = b'g';
        let page2 = PackedPage {
            hashes: String::from_utf8(bad).unwrap(),
            ..page
        };
        let mut w = Walker::new("n1", &[], None);
        assert_eq!(w.push_packed(&page2), Some(151));
        assert_eq!(w.expected, 151);
        let mut out = [0u8; 32];
        assert!(decode_hex32(
            b"00ff00FF00000000000000000000000000000000000000000000000000000000",
            &mut out
        ));
        assert_eq!(&out[..4], &[0, 255, 0, 255]);
        assert!(!decode_hex32(b"0g", &mut out));
    }
}
