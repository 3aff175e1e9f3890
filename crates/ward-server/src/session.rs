//! Browser sessions (SPEC AC-6): the `__Host-ward_session` cookie, idle and absolute expiry
//! by the injected clock, rotation at sign-in, and the CSRF token bound to the session.
//!
//! The cookie holds 256 random bits; the store keeps only their HMAC. A session exists from
//! the first authorization request on (a pre-session, no user), so the login form has a
//! CSRF binding too; signing in moves it to a new id (no fixation).

use std::sync::atomic::{AtomicI64, Ordering};

use axum::http::{HeaderMap, HeaderValue, header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ward_store::SessionRecord;

use crate::state::AppState;

pub const COOKIE: &str = "__Host-ward_session";
/// Characters of a session id (32 random bytes, base64url).
const ID_CHARS: usize = 43;
/// Expired sessions are purged at most once per this many seconds (per process).
const PURGE_EVERY_SECS: i64 = 60;
static LAST_PURGE: AtomicI64 = AtomicI64::new(0);

/// A live session: its id (the cookie value, a secret), its store key and what it holds.
pub struct Session {
    id: zeroize::Zeroizing<String>,
    key: String,
    pub rec: SessionRecord,
    /// The id changed (new or rotated): the response must set the cookie.
    fresh: bool,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("user_id", &self.rec.user_id)
            .finish_non_exhaustive()
    }
}

/// The session id named by the request's cookie, if well-formed.
fn cookie_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
        .filter(|v| {
            v.len() == ID_CHARS
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Whether a session is past its idle or absolute limit at `now`.
pub fn expired(st: &AppState, rec: &SessionRecord, now: i64) -> bool {
    let auth = &st.config.auth;
    let idle = i64::try_from(auth.session_idle_secs).unwrap_or(i64::MAX);
    let max = i64::try_from(auth.session_max_secs).unwrap_or(i64::MAX);
    now.saturating_sub(rec.last_seen) > idle || now.saturating_sub(rec.created_at) > max
}

impl Session {
    /// The request's live session, its `last_seen` moved to now. An expired one is deleted.
    pub async fn load(st: &AppState, headers: &HeaderMap) -> Result<Option<Session>, ward_store::StoreError> {
        let Some(id) = cookie_id(headers) else {
            return Ok(None);
        };
        let id = zeroize::Zeroizing::new(id);
        let key = st.store.session_key(&id);
        let Some(mut rec) = st.store.get_session(&key).await? else {
            return Ok(None);
        };
        let now = st.clock.unix();
        if expired(st, &rec, now) {
            st.store.delete_session(&key).await?;
            return Ok(None);
        }
        rec.last_seen = now;
        if !st.store.update_session(&key, &rec).await? {
            return Ok(None);
        }
        Ok(Some(Session {
            id,
            key,
            rec,
            fresh: false,
        }))
    }

    /// A new pre-session (no user). At most once a minute, sessions past their limits that
    /// nobody came back to are deleted too, so abandoned ones do not pile up.
    pub async fn create(st: &AppState) -> Result<Session, ward_store::StoreError> {
        let now = st.clock.unix();
        let window = |t: i64| t.checked_div(PURGE_EVERY_SECS).unwrap_or(0);
        if window(LAST_PURGE.swap(now, Ordering::Relaxed)) != window(now) {
            let auth = &st.config.auth;
            let idle = i64::try_from(auth.session_idle_secs).unwrap_or(i64::MAX);
            let max = i64::try_from(auth.session_max_secs).unwrap_or(i64::MAX);
            st.store
                .purge_sessions(now.saturating_sub(idle), now.saturating_sub(max))
                .await?;
        }
        let rec = SessionRecord {
            created_at: now,
            last_seen: now,
            ..SessionRecord::default()
        };
        let id = zeroize::Zeroizing::new(ward_crypto::random_token(32));
        let key = st.store.session_key(&id);
        st.store.insert_session(&key, &rec).await?;
        Ok(Session {
            id,
            key,
            rec,
            fresh: true,
        })
    }

    /// Moves the session to a new id, restarting its lifetime (at sign-in): an id that
    /// someone planted or saw before is worth nothing afterwards.
    pub async fn rotate(&mut self, st: &AppState) -> Result<(), ward_store::StoreError> {
        let now = st.clock.unix();
        self.rec.created_at = now;
        self.rec.last_seen = now;
        let id = zeroize::Zeroizing::new(ward_crypto::random_token(32));
        let key = st.store.session_key(&id);
        st.store.rotate_session(&self.key, &key, &self.rec).await?;
        self.id = id;
        self.key = key;
        self.fresh = true;
        Ok(())
    }

    pub async fn save(&self, st: &AppState) -> Result<(), ward_store::StoreError> {
        st.store.update_session(&self.key, &self.rec).await.map(|_| ())
    }

    pub async fn end(self, st: &AppState) -> Result<(), ward_store::StoreError> {
        st.store.delete_session(&self.key).await
    }

    /// The CSRF token of this session's forms: an HMAC of the session id, so it changes
    /// with the id and cannot be made without it.
    pub fn csrf(&self, st: &AppState) -> String {
        URL_SAFE_NO_PAD.encode(st.store.session_tag("session-csrf-v1", &self.id))
    }

    pub fn csrf_ok(&self, st: &AppState, given: Option<&str>) -> bool {
        given.is_some_and(|g| ward_crypto::ct_eq(g.as_bytes(), self.csrf(st).as_bytes()))
    }

    /// The `Set-Cookie` value the response needs, if the id is new.
    pub fn set_cookie(&self) -> Option<HeaderValue> {
        if !self.fresh {
            return None;
        }
        HeaderValue::from_str(&format!(
            "{COOKIE}={}; Secure; HttpOnly; SameSite=Strict; Path=/",
            self.id.as_str()
        ))
        .ok()
    }
}

/// Tells the browser to forget the session cookie.
pub fn clear_cookie() -> HeaderValue {
    HeaderValue::from_static("__Host-ward_session=; Secure; HttpOnly; SameSite=Strict; Path=/; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_well_formed_session_cookie_is_read() {
        let id = "a".repeat(ID_CHARS);
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("x=1; {COOKIE}={id}")).unwrap(),
        );
        assert_eq!(cookie_id(&h).as_deref(), Some(id.as_str()));
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("{COOKIE}={id}%00")).unwrap(),
        );
        assert_eq!(cookie_id(&h), None);
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("ward_session=abc"));
        assert_eq!(cookie_id(&h), None);
    }
}
