//! Reconciliation (SPEC AU-2): every intent record of this node's chain that no final record
//! names is resolved against the store and given one.
//!
//! An intent is left alone only when the process stopped between a write's intent and its
//! final record (`kill -9`, power loss) or when the final record of a failed write could not
//! be committed. Each stored version carries the intent it was written under (`write_intent`,
//! in the write's own transaction), so the store says exactly whether the change went in:
//! the final record then reads `committed-not-acknowledged` (with the versions' patients
//! already named by the intent) or `not-committed`.
//!
//! Runs at start-up over the whole chain before the listener opens, then every
//! `audit.reconcile_secs` from a watermark, skipping intents of writes still running here
//! (listed under `Writes::listing`, so none is between its intent and being noted). Only the
//! node that holds the chain (its lease) writes to it, so no other process can be finishing
//! these writes.

use std::time::Duration;

use ward_audit::{AuditRecord, Outcome, RecordKind};
use ward_store::IntentRef;

use crate::state::AppState;

/// Outcome codes of a final record written by reconciliation.
pub const COMMITTED: &str = "committed-not-acknowledged";
pub const NOT_COMMITTED: &str = "not-committed";

/// Intents resolved per query.
const PAGE: i64 = 500;

/// What one pass did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Pass {
    pub committed: u64,
    pub not_committed: u64,
    /// The seq below which every intent is resolved (where the next pass starts).
    pub watermark: i64,
}

/// Resolves the unresolved intents of this node's chain above `after`, except those of writes
/// still running here. `startup`: rows from before the `intents` audit migration are read too.
pub async fn pass(st: &AppState, after: i64, startup: bool) -> Result<Pass, String> {
    let node = st.audit.node().to_owned();
    let mut done = Pass {
        watermark: after,
        ..Pass::default()
    };
    let mut from = after;
    let mut held_back: Option<i64> = None;
    loop {
        let listing = st.writes.listing().await;
        let intents = st
            .audit_store
            .unresolved_intents(&node, from, PAGE, startup)
            .await
            .map_err(|e| e.to_string())?;
        let Some(last) = intents.last().map(|r| r.seq) else {
            break;
        };
        let (running, intents): (Vec<AuditRecord>, Vec<AuditRecord>) =
            intents.into_iter().partition(|i| st.writes.in_flight(i.seq));
        drop(listing);
        if let Some(first) = running.first() {
            held_back.get_or_insert(first.seq);
        }
        for intent in intents {
            if resolve(st, &node, intent).await? {
                done.committed = done.committed.saturating_add(1);
            } else {
                done.not_committed = done.not_committed.saturating_add(1);
            }
        }
        from = last;
    }
    done.watermark = held_back.map_or(from, |s| s.saturating_sub(1)).max(after);
    Ok(done)
}

/// Writes the final record of `intent`; true if its change was stored.
async fn resolve(st: &AppState, node: &str, intent: AuditRecord) -> Result<bool, String> {
    let key = IntentRef {
        node: node.to_owned(),
        seq: intent.seq,
    };
    let versions = st.store.intent_versions(&key).await.map_err(|e| e.to_string())?;
    let stored = !versions.is_empty();
    let mut last = intent;
    last.intent_seq = Some(last.seq);
    last.kind = RecordKind::Request;
    last.at = String::new();
    last.node = String::new();
    last.seq = 0;
    if let [(rtype, id, version)] = versions.as_slice() {
        last.resource_type = Some(rtype.clone());
        last.resource_id = Some(id.clone());
        last.resource_version = Some(*version);
    }
    last.outcome = if stored {
        Outcome {
            status: 200,
            code: Some(COMMITTED.into()),
        }
    } else {
        Outcome {
            status: 500,
            code: Some(NOT_COMMITTED.into()),
        }
    };
    st.audit.record(last).await.map_err(|e| e.to_string())?;
    Ok(stored)
}

/// Start-up reconciliation: logs what it resolved; returns where periodic passes start.
pub async fn at_startup(st: &AppState) -> i64 {
    match pass(st, 0, true).await {
        Ok(p) => {
            if p.committed > 0 || p.not_committed > 0 {
                tracing::warn!(
                    committed_not_acknowledged = p.committed,
                    not_committed = p.not_committed,
                    "resolved writes left without a final audit record"
                );
            }
            p.watermark
        }
        Err(e) => {
            tracing::error!(error = %e, "start-up reconciliation failed; retried periodically");
            0
        }
    }
}

/// Runs a pass every `every` until the task is aborted.
pub async fn periodically(st: AppState, mut watermark: i64, every: Duration) {
    let every = every.max(Duration::from_secs(1));
    loop {
        tokio::time::sleep(every).await;
        match pass(&st, watermark, false).await {
            Ok(p) => {
                if p.committed > 0 || p.not_committed > 0 {
                    tracing::warn!(
                        committed_not_acknowledged = p.committed,
                        not_committed = p.not_committed,
                        "resolved writes left without a final audit record"
                    );
                }
                watermark = p.watermark;
            }
            Err(e) => tracing::warn!(error = %e, "reconciliation failed; will retry"),
        }
    }
}
