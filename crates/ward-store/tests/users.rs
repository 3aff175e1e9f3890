//! The user tables (migration 0003), on SQLite and PostgreSQL (WARD_TEST_POSTGRES_URL).

use sqlx::{AnyPool, Row};
use time::OffsetDateTime;
use time::macros::datetime;
use ward_crypto::Kek;
use ward_store::{Backend, Store, StoreError, UserRecord};

struct H {
    store: Store,
    raw: AnyPool,
    sqlite_dir: Option<tempfile::TempDir>,
}

impl H {
    async fn sqlite() -> H {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("ward.db").display());
        H::open(url, Some(dir)).await
    }

    async fn postgres() -> H {
        let url = ward_store::testing::fresh_postgres_url().await;
        H::open(url, None).await
    }

    async fn open(url: String, sqlite_dir: Option<tempfile::TempDir>) -> H {
        let store = Store::open(&url, &Kek::generate().unwrap()).await.unwrap();
        let raw = sqlx::any::AnyPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await
            .unwrap();
        H {
            store,
            raw,
            sqlite_dir,
        }
    }
}

macro_rules! both {
    ($($name:ident),* $(,)?) => {
        $(mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let h = super::H::sqlite().await;
                assert_eq!(h.store.backend(), super::Backend::Sqlite);
                super::$name(&h).await;
                h.store.close().await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let h = super::H::postgres().await;
                assert_eq!(h.store.backend(), super::Backend::Postgres);
                super::$name(&h).await;
                h.store.close().await;
            }
        })*
    };
}

both!(
    insert_get_list_and_duplicates,
    failures_and_locks,
    totp_secrets_are_sealed_and_bound_to_their_user,
    totp_steps_only_move_forward,
    recovery_codes_are_used_once,
    reset_and_disable,
    no_secret_in_plaintext,
);

const T0: OffsetDateTime = datetime!(2026-12-05 12:00:00 UTC);

fn record(id: &str, name: &str) -> UserRecord {
    UserRecord {
        user_id: id.into(),
        username: name.into(),
        role: "clinician".into(),
        fhir_user: Some("Practitioner/p1".into()),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaA".into(),
        must_change_password: true,
        totp_enrolled: false,
        disabled: false,
        failed_logins: 0,
        locked_until: None,
        created_at: T0,
    }
}

async fn insert_get_list_and_duplicates(h: &H) {
    let s = &h.store;
    let a = record("11111111-1111-4111-8111-111111111111", "alice");
    s.insert_user(&a).await.unwrap();
    assert_eq!(s.get_user(&a.user_id).await.unwrap().unwrap(), a);
    assert_eq!(s.get_user_by_name("alice").await.unwrap().unwrap(), a);
    assert!(s.get_user_by_name("bob").await.unwrap().is_none());
    assert!(matches!(
        s.insert_user(&record("22222222-2222-4222-8222-222222222222", "alice"))
            .await,
        Err(StoreError::Duplicate)
    ));
    assert!(matches!(
        s.insert_user(&record(&a.user_id, "other")).await,
        Err(StoreError::Duplicate)
    ));
    let mut b = record("33333333-3333-4333-8333-333333333333", "bob");
    b.fhir_user = None;
    s.insert_user(&b).await.unwrap();
    let names: Vec<String> = s
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.username)
        .collect();
    assert_eq!(names, ["alice", "bob"]);
    assert!(
        s.set_user_password(&b.user_id, "$argon2id$new", false)
            .await
            .unwrap()
    );
    let got = s.get_user(&b.user_id).await.unwrap().unwrap();
    assert_eq!(
        (got.password_hash.as_str(), got.must_change_password),
        ("$argon2id$new", false)
    );
    assert!(!s.set_user_password("nobody", "x", false).await.unwrap());
    assert!(!format!("{got:?}").contains("argon2id"), "Debug redacts the hash");
}

async fn failures_and_locks(h: &H) {
    let s = &h.store;
    let a = record("11111111-1111-4111-8111-111111111111", "alice");
    s.insert_user(&a).await.unwrap();
    for n in 1..=3 {
        assert_eq!(s.record_login_failure(&a.user_id).await.unwrap(), Some(n));
    }
    assert_eq!(s.record_login_failure("nobody").await.unwrap(), None);
    let until = T0 + time::Duration::seconds(60);
    s.lock_user_until(&a.user_id, until).await.unwrap();
    // A lock is never shortened by a later, shorter one.
    s.lock_user_until(&a.user_id, T0).await.unwrap();
    let got = s.get_user(&a.user_id).await.unwrap().unwrap();
    assert_eq!((got.failed_logins, got.locked_until), (3, Some(until)));
    s.clear_login_failures(&a.user_id).await.unwrap();
    let got = s.get_user(&a.user_id).await.unwrap().unwrap();
    assert_eq!((got.failed_logins, got.locked_until), (0, None));
}

async fn totp_secrets_are_sealed_and_bound_to_their_user(h: &H) {
    let s = &h.store;
    let a = record("11111111-1111-4111-8111-111111111111", "alice");
    let b = record("33333333-3333-4333-8333-333333333333", "bob");
    s.insert_user(&a).await.unwrap();
    s.insert_user(&b).await.unwrap();
    assert!(s.pending_totp(&a.user_id).await.unwrap().is_none());
    assert!(
        s.set_pending_totp(&a.user_id, b"alice-secret-0123456")
            .await
            .unwrap()
    );
    assert!(!s.set_pending_totp("nobody", b"x").await.unwrap());
    assert_eq!(
        s.pending_totp(&a.user_id).await.unwrap().unwrap().expose(),
        b"alice-secret-0123456"
    );
    assert!(s.totp_secret(&a.user_id).await.unwrap().is_none());
    assert!(
        s.confirm_totp(&a.user_id, b"alice-secret-0123456", 7, &[])
            .await
            .unwrap()
    );
    // Confirmed once: a second confirmation (no pending secret) changes nothing.
    assert!(!s.confirm_totp(&a.user_id, b"other", 8, &[]).await.unwrap());
    assert!(s.get_user(&a.user_id).await.unwrap().unwrap().totp_enrolled);
    assert!(s.pending_totp(&a.user_id).await.unwrap().is_none());
    assert_eq!(
        s.totp_secret(&a.user_id).await.unwrap().unwrap().expose(),
        b"alice-secret-0123456"
    );
    // Alice's sealed secret copied into Bob's row does not open there.
    let row = sqlx::query("SELECT totp_epoch, totp_secret FROM ward_user WHERE user_id = $1")
        .bind(a.user_id.clone())
        .fetch_one(&h.raw)
        .await
        .unwrap();
    let (epoch, sealed): (i64, Vec<u8>) = (row.try_get(0).unwrap(), row.try_get(1).unwrap());
    sqlx::query("UPDATE ward_user SET totp_epoch = $1, totp_secret = $2 WHERE user_id = $3")
        .bind(epoch)
        .bind(sealed.clone())
        .bind(b.user_id.clone())
        .execute(&h.raw)
        .await
        .unwrap();
    assert!(matches!(
        s.totp_secret(&b.user_id).await,
        Err(StoreError::Corrupt(_))
    ));
    // Nor does it as a pending secret of Alice's (the purpose is bound too).
    sqlx::query("UPDATE ward_user SET pending_epoch = $1, pending_secret = $2 WHERE user_id = $3")
        .bind(epoch)
        .bind(sealed)
        .bind(a.user_id.clone())
        .execute(&h.raw)
        .await
        .unwrap();
    assert!(matches!(
        s.pending_totp(&a.user_id).await,
        Err(StoreError::Corrupt(_))
    ));
}

async fn totp_steps_only_move_forward(h: &H) {
    let s = &h.store;
    let a = record("11111111-1111-4111-8111-111111111111", "alice");
    s.insert_user(&a).await.unwrap();
    // No secret, no step.
    assert!(!s.accept_totp_step(&a.user_id, 1).await.unwrap());
    s.set_pending_totp(&a.user_id, b"k").await.unwrap();
    s.confirm_totp(&a.user_id, b"k", 100, &[]).await.unwrap();
    assert!(!s.accept_totp_step(&a.user_id, 99).await.unwrap());
    assert!(!s.accept_totp_step(&a.user_id, 100).await.unwrap());
    assert!(s.accept_totp_step(&a.user_id, 101).await.unwrap());
    assert!(!s.accept_totp_step(&a.user_id, 101).await.unwrap());
    // Concurrent use of one step: exactly one wins.
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let s = s.clone();
            let id = a.user_id.clone();
            tokio::spawn(async move { s.accept_totp_step(&id, 102).await.unwrap() })
        })
        .collect();
    let mut wins = 0;
    for t in tasks {
        wins += usize::from(t.await.unwrap());
    }
    assert_eq!(wins, 1);
}

async fn recovery_codes_are_used_once(h: &H) {
    let s = &h.store;
    let a = record("11111111-1111-4111-8111-111111111111", "alice");
    let b = record("33333333-3333-4333-8333-333333333333", "bob");
    s.insert_user(&a).await.unwrap();
    s.insert_user(&b).await.unwrap();
    let tags: Vec<[u8; 32]> = ["AAAA", "BBBB", "CCCC"]
        .iter()
        .map(|c| s.recovery_code_tag(&a.user_id, c.as_bytes()))
        .collect();
    // Keyed and bound to the user.
    assert_ne!(tags[0], s.recovery_code_tag(&b.user_id, b"AAAA"));
    s.set_pending_totp(&a.user_id, b"k").await.unwrap();
    assert!(s.confirm_totp(&a.user_id, b"k", 1, &tags).await.unwrap());
    assert_eq!(s.recovery_codes_left(&a.user_id).await.unwrap(), 3);
    assert!(s.use_recovery_code(&a.user_id, &tags[0], T0).await.unwrap());
    assert!(!s.use_recovery_code(&a.user_id, &tags[0], T0).await.unwrap());
    assert!(!s.use_recovery_code(&b.user_id, &tags[1], T0).await.unwrap());
    assert_eq!(s.recovery_codes_left(&a.user_id).await.unwrap(), 2);
}

async fn reset_and_disable(h: &H) {
    let s = &h.store;
    let a = record("11111111-1111-4111-8111-111111111111", "alice");
    s.insert_user(&a).await.unwrap();
    let tag = s.recovery_code_tag(&a.user_id, b"AAAA");
    s.set_pending_totp(&a.user_id, b"k").await.unwrap();
    s.confirm_totp(&a.user_id, b"k", 50, &[tag]).await.unwrap();
    assert_eq!(
        s.reset_user_mfa("alice").await.unwrap().as_deref(),
        Some(a.user_id.as_str())
    );
    assert_eq!(s.reset_user_mfa("nobody").await.unwrap(), None);
    let got = s.get_user(&a.user_id).await.unwrap().unwrap();
    assert!(!got.totp_enrolled);
    assert!(s.totp_secret(&a.user_id).await.unwrap().is_none());
    assert_eq!(s.recovery_codes_left(&a.user_id).await.unwrap(), 0);
    // A new enrollment starts from any step.
    s.set_pending_totp(&a.user_id, b"k2").await.unwrap();
    assert!(s.confirm_totp(&a.user_id, b"k2", 10, &[]).await.unwrap());
    assert_eq!(
        s.disable_user("alice").await.unwrap().as_deref(),
        Some(a.user_id.as_str())
    );
    assert_eq!(s.disable_user("nobody").await.unwrap(), None);
    assert!(s.get_user(&a.user_id).await.unwrap().unwrap().disabled);
}

const TOTP_SECRET: &[u8] = b"TOTPSECRET-Zq81xk4Lm";

async fn no_secret_in_plaintext(h: &H) {
    let s = &h.store;
    let a = record("11111111-1111-4111-8111-111111111111", "alice");
    s.insert_user(&a).await.unwrap();
    s.set_pending_totp(&a.user_id, TOTP_SECRET).await.unwrap();
    s.confirm_totp(
        &a.user_id,
        TOTP_SECRET,
        1,
        &[s.recovery_code_tag(&a.user_id, b"RECOVERYCODE7Q2W")],
    )
    .await
    .unwrap();
    s.set_pending_totp(&a.user_id, TOTP_SECRET).await.unwrap();
    let mut haystack = Vec::new();
    match &h.sqlite_dir {
        Some(dir) => {
            s.close().await;
            for e in std::fs::read_dir(dir.path()).unwrap() {
                haystack.extend(std::fs::read(e.unwrap().path()).unwrap());
            }
        }
        None => {
            for table in ["ward_user", "user_recovery_code"] {
                let sql = format!("SELECT CAST(t AS TEXT) FROM {table} t");
                for row in sqlx::query(sqlx::AssertSqlSafe(sql))
                    .fetch_all(&h.raw)
                    .await
                    .unwrap()
                {
                    haystack.extend(row.try_get::<String, _>(0).unwrap().into_bytes());
                }
            }
            // The rows are there (encoded as hex bytea in the text).
            assert!(haystack.windows(5).any(|w| w == b"alice"));
        }
    }
    for needle in [TOTP_SECRET, b"RECOVERYCODE7Q2W"] {
        let hexed = hex::encode(needle);
        let lower = haystack.to_ascii_lowercase();
        assert!(!haystack.windows(needle.len()).any(|w| w == needle));
        assert!(!lower.windows(hexed.len()).any(|w| w == hexed.as_bytes()));
    }
}
