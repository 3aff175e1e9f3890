//! Client secrets: generated with the OS RNG, shown once, stored only as a keyed hash.
//!
//! A secret Ward generates has 256 random bits: guessing it is hopeless whatever the hash,
//! so it needs no slow hash, and a keyed one (HMAC-SHA-256 under a server key the database
//! does not hold) makes a token request cost microseconds instead of argon2id's 19 MiB and
//! tens of milliseconds (the token endpoint was an amplifier). argon2id stays for
//! human-chosen passwords, and to check secrets stored by earlier versions; such a hash is
//! replaced by the keyed one the first time its secret is presented.
//!
//! An unknown client costs what a known one costs, so response times do not tell whether a
//! client id exists: while any argon2id hash is stored, unknown clients run argon2id too.

use std::sync::atomic::{AtomicBool, Ordering};

use argon2::{
    Algorithm, Argon2, Block, Params, Version,
    password_hash::{PasswordHasher, phc::PasswordHash},
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tokio::sync::{OnceCell, Semaphore};
use ward_store::Store;
use zeroize::Zeroizing;

/// The stored form of a keyed hash: this prefix, then the base64url HMAC.
const KEYED_PREFIX: &str = "$ward-hmac-sha256$v1$";

/// A fresh client secret: 32 random bytes, base64url.
pub fn generate_secret() -> Zeroizing<String> {
    Zeroizing::new(ward_crypto::random_token(32))
}

/// The stored form of a secret Ward generated for `client_id`.
pub fn hash_secret(store: &Store, client_id: &str, secret: &str) -> String {
    let tag = store.client_secret_tag(client_id, secret.as_bytes());
    format!("{KEYED_PREFIX}{}", URL_SAFE_NO_PAD.encode(tag))
}

/// argon2id (v19, default parameters) PHC string of a human-chosen password. CPU- and
/// memory-heavy, so it runs on the blocking pool.
pub async fn hash_password(password: Zeroizing<String>) -> Result<String, argon2::password_hash::Error> {
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
    })
    .await
    .unwrap_or(Err(argon2::password_hash::Error::Crypto))
}

fn is_argon2(stored: &str) -> bool {
    stored.starts_with("$argon2")
}

/// A valid argon2id hash of a secret nobody knows, so an unknown client costs the same
/// time as a wrong secret while argon2id hashes are stored.
static DUMMY_ARGON2: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    Argon2::default()
        .hash_password(ward_crypto::random_token(32).as_bytes())
        .map(|h| h.to_string())
        .unwrap_or_default()
});

/// A keyed hash no secret matches (random bytes), checked for unknown clients.
static DUMMY_KEYED: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("{KEYED_PREFIX}{}", ward_crypto::random_token(32)));

/// The answer of [`SecretVerifier::verify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Valid,
    Invalid,
    /// Too many checks are running: refused at once, without waiting.
    Busy,
}

/// Most argon2 working memory one stored hash may ask for (64 MiB; Ward's own use 19 MiB).
const MAX_ARGON2_BLOCKS: usize = 64 * 1024;

/// Checks `secret` against an argon2 PHC string in `memory`, which is reused from check to
/// check: a fresh 19 MiB allocation per check, freed on whichever thread ran it, left the
/// allocator holding hundreds of MiB under a flood.
pub(crate) fn argon2_matches(phc: &str, secret: &[u8], memory: &mut Vec<Block>) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&hash.salt, &hash.hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(hash.algorithm.as_str()) else {
        return false;
    };
    let version = match hash.version.map(Version::try_from).transpose() {
        Ok(v) => v.unwrap_or_default(),
        Err(_) => return false,
    };
    let Ok(params) = Params::try_from(&hash) else {
        return false;
    };
    let blocks = params.block_count();
    if blocks > MAX_ARGON2_BLOCKS {
        return false;
    }
    if memory.len() < blocks {
        memory.resize(blocks, Block::default());
    }
    let mut out = Zeroizing::new(vec![0u8; expected.len()]);
    let Some(work) = memory.get_mut(..blocks) else {
        return false;
    };
    let done = Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(secret, salt, &mut out, &mut *work)
        .is_ok();
    // The blocks are derived from the secret: wipe them before the buffer waits for reuse.
    work.fill(Block::new());
    done && ward_crypto::ct_eq(&out, expected.as_bytes())
}

/// Checks client secrets, at most `max_concurrent` at a time.
pub struct SecretVerifier {
    permits: Semaphore,
    /// argon2 working memory, one buffer per running check at most.
    memory: std::sync::Mutex<Vec<Vec<Block>>>,
    /// Whether any stored hash is argon2id; read from the store on first use.
    legacy: OnceCell<AtomicBool>,
}

impl SecretVerifier {
    pub fn new(max_concurrent: usize) -> SecretVerifier {
        SecretVerifier {
            permits: Semaphore::new(max_concurrent.max(1)),
            memory: std::sync::Mutex::new(Vec::new()),
            legacy: OnceCell::new(),
        }
    }

    async fn any_argon2(store: &Store) -> bool {
        match store.list_clients().await {
            Ok(clients) => clients.iter().any(|c| is_argon2(&c.secret_hash)),
            // Unknown: assume the slow kind, so unknown clients never answer faster.
            Err(e) => {
                tracing::error!(error = %e, "client list failed");
                true
            }
        }
    }

    async fn legacy(&self, store: &Store) -> bool {
        self.legacy
            .get_or_init(|| async { AtomicBool::new(Self::any_argon2(store).await) })
            .await
            .load(Ordering::Relaxed)
    }

    /// Checks `secret` against `stored`, the client's hash, or `None` for no usable client
    /// (which still spends the same work). A valid argon2id hash is replaced by its keyed
    /// form.
    pub async fn verify(
        &self,
        store: &Store,
        client_id: &str,
        secret: Zeroizing<String>,
        stored: Option<&str>,
    ) -> Verdict {
        let Ok(_permit) = self.permits.try_acquire() else {
            return Verdict::Busy;
        };
        let known = stored.is_some();
        let stored = match stored {
            Some(s) => s.to_owned(),
            None if self.legacy(store).await => DUMMY_ARGON2.clone(),
            None => DUMMY_KEYED.clone(),
        };
        let ok = if is_argon2(&stored) {
            let phc = stored.clone();
            let secret = secret.clone();
            let mut memory = self.take_memory();
            let (ok, memory) = tokio::task::spawn_blocking(move || {
                let ok = argon2_matches(&phc, secret.as_bytes(), &mut memory);
                (ok, memory)
            })
            .await
            .unwrap_or_default();
            self.give_back(memory);
            ok
        } else {
            let expected = stored
                .strip_prefix(KEYED_PREFIX)
                .and_then(|b64| URL_SAFE_NO_PAD.decode(b64).ok())
                .unwrap_or_default();
            let tag = store.client_secret_tag(client_id, secret.as_bytes());
            ward_crypto::ct_eq(&tag, &expected)
        };
        if !(ok && known) {
            return Verdict::Invalid;
        }
        if is_argon2(&stored) {
            self.migrate(store, client_id, &secret, &stored).await;
        }
        Verdict::Valid
    }

    fn memory_pool(&self) -> std::sync::MutexGuard<'_, Vec<Vec<Block>>> {
        self.memory.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn take_memory(&self) -> Vec<Block> {
        self.memory_pool().pop().unwrap_or_default()
    }

    fn give_back(&self, memory: Vec<Block>) {
        if !memory.is_empty() {
            self.memory_pool().push(memory);
        }
    }

    /// Replaces a checked argon2id hash by the keyed one; a failure only leaves it slow.
    async fn migrate(&self, store: &Store, client_id: &str, secret: &str, old: &str) {
        let new = hash_secret(store, client_id, secret);
        match store.replace_client_secret_hash(client_id, old, &new).await {
            Ok(_) => {
                if let Some(flag) = self.legacy.get() {
                    flag.store(Self::any_argon2(store).await, Ordering::Relaxed);
                }
            }
            Err(e) => tracing::error!(error = %e, "client secret hash migration failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("s.db").display());
        let store = Store::open(&url, &ward_crypto::Kek::generate().unwrap())
            .await
            .unwrap();
        (dir, store)
    }

    fn client(id: &str, secret_hash: String) -> ward_store::ClientRecord {
        ward_store::ClientRecord {
            client_id: id.into(),
            name: "t".into(),
            secret_hash,
            scopes: "system/*.read".into(),
            disabled: false,
            created_at: time::OffsetDateTime::now_utc(),
            redirect_uris: Vec::new(),
            public: false,
            jwks: None,
            jwks_url: None,
        }
    }

    #[tokio::test]
    async fn keyed_hash_verifies_and_is_bound_to_the_client() {
        let (_dir, store) = store().await;
        let secret = generate_secret();
        let hash = hash_secret(&store, "c1", &secret);
        assert!(hash.starts_with(KEYED_PREFIX));
        assert!(!hash.contains(secret.as_str()));
        let v = SecretVerifier::new(2);
        assert_eq!(
            v.verify(&store, "c1", secret.clone(), Some(&hash)).await,
            Verdict::Valid
        );
        assert_eq!(
            v.verify(&store, "c1", Zeroizing::new("wrong".into()), Some(&hash))
                .await,
            Verdict::Invalid
        );
        // The same row copied to another client is worthless.
        assert_eq!(
            v.verify(&store, "c2", secret.clone(), Some(&hash)).await,
            Verdict::Invalid
        );
        assert_eq!(v.verify(&store, "c1", secret, None).await, Verdict::Invalid);
    }

    #[tokio::test]
    async fn argon2id_hashes_still_verify_and_are_migrated_on_success() {
        let (_dir, store) = store().await;
        let secret = generate_secret();
        let old = hash_password(secret.clone()).await.unwrap();
        assert!(old.starts_with("$argon2id$"));
        store.insert_client(&client("c1", old.clone())).await.unwrap();
        let v = SecretVerifier::new(2);
        assert!(v.legacy(&store).await, "an argon2id hash is stored");
        assert_eq!(
            v.verify(&store, "c1", Zeroizing::new("wrong".into()), Some(&old))
                .await,
            Verdict::Invalid
        );
        assert_eq!(
            v.verify(&store, "c1", secret.clone(), Some(&old)).await,
            Verdict::Valid
        );
        let now = store.get_client("c1").await.unwrap().unwrap().secret_hash;
        assert_eq!(now, hash_secret(&store, "c1", &secret));
        assert!(!v.legacy(&store).await, "no argon2id hash is left");
        assert_eq!(v.verify(&store, "c1", secret, Some(&now)).await, Verdict::Valid);
    }

    #[tokio::test]
    async fn beyond_the_bound_a_check_is_refused_at_once() {
        let (_dir, store) = store().await;
        let v = SecretVerifier::new(1);
        let held = v.permits.try_acquire().unwrap();
        let hash = hash_secret(&store, "c1", "s");
        assert_eq!(
            v.verify(&store, "c1", Zeroizing::new("s".into()), Some(&hash))
                .await,
            Verdict::Busy
        );
        drop(held);
        assert_eq!(
            v.verify(&store, "c1", Zeroizing::new("s".into()), Some(&hash))
                .await,
            Verdict::Valid
        );
    }
}
