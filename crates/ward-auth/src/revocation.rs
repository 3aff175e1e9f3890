//! What this node knows of revoked subjects, token families and token ids (SPEC AC-6).
//!
//! The store holds the revocations with a growing `seq`; each node keeps them in memory and
//! asks the store every [`POLL_EVERY`] for the rows past the last one it saw (one indexed range
//! query), so a revocation made by any node or by the CLI takes effect everywhere within a
//! second. A node whose list has not been refreshed for [`STALE_AFTER`] refuses every token:
//! it cannot tell which ones were revoked.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use ward_store::{Revocation, RevokedKind, Store, StoreError};

use crate::token::Claims;

/// How often a node polls the store for new revocations.
pub const POLL_EVERY: Duration = Duration::from_millis(250);
/// Without a successful refresh for this long, every token is refused (fail closed).
pub const STALE_AFTER: Duration = Duration::from_secs(5);
/// A revoked subject's tokens are refused if issued up to this long after the revocation
/// row's time: that time is the revoker's clock (the CLI, another node), and a grant that
/// checked the subject just before the disable may sign its token a moment after it.
pub const SUBJECT_MARGIN_SECS: i64 = 60;
/// Rows read per query.
const PAGE: i64 = 1000;

#[derive(Default)]
struct Known {
    last_seq: i64,
    /// Subject -> latest revocation time (unix seconds): tokens issued at or before it fail.
    subjects: HashMap<String, i64>,
    /// Family or jti -> when the entry may be forgotten (unix seconds; `None`: never).
    families: HashMap<String, Option<i64>>,
    token_ids: HashMap<String, Option<i64>>,
    refreshed: Option<Instant>,
}

/// The revocations this node knows of.
#[derive(Default)]
pub struct RevocationList {
    known: RwLock<Known>,
}

impl std::fmt::Debug for RevocationList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevocationList").finish_non_exhaustive()
    }
}

fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

impl RevocationList {
    pub fn new() -> Self {
        RevocationList::default()
    }

    /// Reads the revocations made since the last refresh; returns how many were new.
    pub async fn refresh(&self, store: &Store) -> Result<usize, StoreError> {
        let mut added = 0usize;
        loop {
            let after = self.read().last_seq;
            let rows = store.revocations_since(after, PAGE).await?;
            let full = i64::try_from(rows.len()).is_ok_and(|n| n >= PAGE);
            added = added.saturating_add(rows.len());
            self.apply(&rows);
            if !full {
                break;
            }
        }
        self.write().refreshed = Some(Instant::now());
        Ok(added)
    }

    fn apply(&self, rows: &[Revocation]) {
        let now = now_unix();
        let mut k = self.write();
        for r in rows {
            k.last_seq = k.last_seq.max(r.seq);
            if r.expires_at.is_some_and(|e| e < now) {
                continue;
            }
            match r.kind {
                RevokedKind::Subject => {
                    let at = k.subjects.entry(r.value.clone()).or_insert(r.revoked_at);
                    *at = (*at).max(r.revoked_at);
                }
                RevokedKind::Family => {
                    k.families.insert(r.value.clone(), r.expires_at);
                }
                RevokedKind::TokenId => {
                    k.token_ids.insert(r.value.clone(), r.expires_at);
                }
            }
        }
        if !rows.is_empty() {
            k.families.retain(|_, e| e.is_none_or(|e| e >= now));
            k.token_ids.retain(|_, e| e.is_none_or(|e| e >= now));
        }
    }

    /// Whether a token with `claims` must be refused: its subject or client revoked after it
    /// was issued (or within [`SUBJECT_MARGIN_SECS`] before), its family or its id revoked, or the list too stale to tell.
    pub fn is_revoked(&self, claims: &Claims) -> bool {
        let k = self.read();
        if k.refreshed.is_none_or(|t| t.elapsed() > STALE_AFTER) {
            return true;
        }
        let iat = i64::try_from(claims.iat).unwrap_or(i64::MAX);
        let subject_revoked = |s: &str| {
            k.subjects
                .get(s)
                .is_some_and(|&at| iat <= at.saturating_add(SUBJECT_MARGIN_SECS))
        };
        subject_revoked(&claims.sub)
            || subject_revoked(&claims.client_id)
            || claims.fam.as_deref().is_some_and(|f| k.families.contains_key(f))
            || k.token_ids.contains_key(&claims.jti)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Known> {
        self.known.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Known> {
        self.known.write().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(sub: &str, client: &str, iat: u64, fam: Option<&str>, jti: &str) -> Claims {
        Claims {
            iss: "i".into(),
            sub: sub.into(),
            aud: "a".into(),
            exp: iat + 300,
            iat,
            nbf: iat,
            jti: jti.into(),
            scope: "system/*.rs".into(),
            client_id: client.into(),
            fam: fam.map(str::to_owned),
            ..Claims::default()
        }
    }

    fn row(seq: i64, kind: RevokedKind, value: &str, revoked_at: i64, expires_at: Option<i64>) -> Revocation {
        Revocation {
            seq,
            kind,
            value: value.into(),
            revoked_at,
            expires_at,
        }
    }

    #[test]
    fn matches_subject_client_family_and_jti() {
        let list = RevocationList::new();
        let now = now_unix();
        let t = u64::try_from(now).unwrap();
        // Never refreshed: fail closed.
        assert!(list.is_revoked(&claims("u", "c", t, None, "j")));
        list.apply(&[
            row(1, RevokedKind::Subject, "user-1", now, None),
            row(2, RevokedKind::Subject, "client-1", now, None),
            row(3, RevokedKind::Family, "fam-1", now, Some(now + 60)),
            row(4, RevokedKind::TokenId, "jti-1", now, Some(now + 60)),
            row(5, RevokedKind::TokenId, "jti-old", now - 100, Some(now - 10)),
        ]);
        list.write().refreshed = Some(Instant::now());
        assert!(!list.is_revoked(&claims("u", "c", t, None, "j")));
        assert!(list.is_revoked(&claims("user-1", "c", t, None, "j")), "user");
        assert!(
            list.is_revoked(&claims("c", "client-1", t - 5, None, "j")),
            "client"
        );
        // A token signed a moment after the revocation row (a grant in flight when the
        // subject was disabled, or a node whose clock runs ahead of the revoker's) is refused.
        assert!(
            list.is_revoked(&claims("user-1", "c", t + 1, None, "j")),
            "issued in the second after"
        );
        assert!(
            list.is_revoked(&claims("c", "client-1", t + 5, None, "j")),
            "issued by a node 5 s ahead"
        );
        assert!(
            !list.is_revoked(&claims(
                "user-1",
                "c",
                t + 2 * u64::try_from(SUBJECT_MARGIN_SECS).unwrap() + 1,
                None,
                "j"
            )),
            "issued well after"
        );
        assert!(
            list.is_revoked(&claims("u", "c", t, Some("fam-1"), "j")),
            "family"
        );
        assert!(list.is_revoked(&claims("u", "c", t, None, "jti-1")), "jti");
        assert!(
            !list.is_revoked(&claims("u", "c", t, None, "jti-old")),
            "expired row"
        );
        assert_eq!(list.read().last_seq, 5);
        // Stale: fail closed.
        list.write().refreshed = Some(Instant::now() - STALE_AFTER - Duration::from_secs(1));
        assert!(list.is_revoked(&claims("u", "c", t, None, "j")));
    }
}
