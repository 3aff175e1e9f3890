//! The store test suite, run against SQLite and PostgreSQL (WARD_TEST_POSTGRES_URL).

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::{AnyPool, AssertSqlSafe, Row};
use time::OffsetDateTime;
use ward_crypto::Kek;
use ward_store::{Backend, ClientRecord, Store, StoreError, Stored, TxOp, TxOutcome};

struct H {
    store: Store,
    url: String,
    kek: Kek,
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
        let kek = Kek::generate().unwrap();
        let store = Store::open(&url, &kek).await.unwrap();
        let raw = sqlx::any::AnyPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await
            .unwrap();
        H {
            store,
            url,
            kek,
            raw,
            sqlite_dir,
        }
    }

    fn db_files(&self) -> Vec<PathBuf> {
        let dir = self.sqlite_dir.as_ref().unwrap().path();
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    }

    /// Raw ciphertext of a version, straight from the database.
    async fn ciphertext(&self, rtype: &str, id: &str, version: i64) -> (Vec<u8>, Vec<u8>) {
        let row = sqlx::query(
            "SELECT ciphertext, content_hash FROM resource_version \
             WHERE rtype = $1 AND id = $2 AND version = $3",
        )
        .bind(rtype.to_owned())
        .bind(id.to_owned())
        .bind(version)
        .fetch_one(&self.raw)
        .await
        .unwrap();
        (
            row.try_get("ciphertext").unwrap(),
            row.try_get("content_hash").unwrap(),
        )
    }

    async fn set_ciphertext(&self, rtype: &str, id: &str, version: i64, ct: Vec<u8>, hash: Vec<u8>) {
        let n = sqlx::query(
            "UPDATE resource_version SET ciphertext = $1, content_hash = $2 \
             WHERE rtype = $3 AND id = $4 AND version = $5",
        )
        .bind(ct)
        .bind(hash)
        .bind(rtype.to_owned())
        .bind(id.to_owned())
        .bind(version)
        .execute(&self.raw)
        .await
        .unwrap()
        .rows_affected();
        assert_eq!(n, 1);
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
    create_read_vread_update,
    if_match_conflicts,
    delete_and_gone,
    history_order_since_count,
    find_matching_criteria,
    update_as_create_and_duplicates,
    round_trip_exactness,
    tamper_detection,
    no_plaintext_phi_in_database,
    concurrent_updates,
    oauth_clients,
    reopen_and_wrong_kek,
    transaction_all_or_nothing,
    transaction_conditional_create_and_reads,
    transaction_concurrent_conditional_creates,
    refuses_server_made_types_and_revives_without_create,
);

fn patient(family: &str) -> Value {
    json!({
        "resourceType": "Patient",
        "identifier": [{"system": "urn:mrn", "value": format!("MRN-{family}")}],
        "name": [{"family": family, "given": ["Ann"]}],
        "birthDate": "1970-01-02"
    })
}

fn resource(s: &Stored) -> &Value {
    s.resource.as_ref().expect("live resource")
}

async fn create_read_vread_update(h: &H) {
    let s = &h.store;
    s.ping().await.unwrap();
    let c = s.create("Patient", patient("Alpha")).await.unwrap();
    assert_eq!(c.version, 1);
    assert!(!c.deleted);
    assert_eq!(uuid::Uuid::parse_str(&c.id).unwrap().get_version_num(), 4);
    let r = resource(&c);
    assert_eq!(r["id"], c.id.as_str());
    assert_eq!(r["meta"]["versionId"], "1");
    let lu = r["meta"]["lastUpdated"].as_str().unwrap();
    assert_eq!(lu, ward_store::format_instant(c.last_updated));
    assert_eq!(lu.len(), "2026-11-23T12:00:00.123Z".len());
    assert!(lu.ends_with('Z'));

    let read = s.read("Patient", &c.id).await.unwrap();
    assert_eq!(read, c);
    assert_eq!(s.vread("Patient", &c.id, 1).await.unwrap(), c);
    assert!(matches!(
        s.read("Patient", "no-such-id").await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        s.read("Observation", &c.id).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        s.vread("Patient", &c.id, 2).await,
        Err(StoreError::NotFound)
    ));

    let mut changed = resource(&c).clone();
    changed["name"][0]["family"] = json!("Beta");
    let (u, created) = s.update("Patient", &c.id, changed, None).await.unwrap();
    assert!(!created);
    assert_eq!(u.version, 2);
    assert_eq!(resource(&u)["meta"]["versionId"], "2");
    assert!(u.last_updated >= c.last_updated);
    assert_eq!(s.read("Patient", &c.id).await.unwrap(), u);
    let v1 = s.vread("Patient", &c.id, 1).await.unwrap();
    assert_eq!(resource(&v1)["name"][0]["family"], "Alpha");
    let v2 = s.vread("Patient", &c.id, 2).await.unwrap();
    assert_eq!(resource(&v2)["name"][0]["family"], "Beta");
    // Debug never prints content.
    assert!(!format!("{v2:?}").contains("Beta"));
}

async fn if_match_conflicts(h: &H) {
    let s = &h.store;
    let c = s.create("Patient", patient("Gamma")).await.unwrap();
    let (u, _) = s
        .update("Patient", &c.id, patient("Gamma2"), Some(1))
        .await
        .unwrap();
    assert_eq!(u.version, 2);
    match s.update("Patient", &c.id, patient("Gamma3"), Some(1)).await {
        Err(StoreError::VersionConflict { current }) => assert_eq!(current, 2),
        other => panic!("expected conflict, got {other:?}"),
    }
    assert_eq!(s.read("Patient", &c.id).await.unwrap().version, 2);
    assert!(matches!(
        s.update("Patient", "missing-id", patient("X"), Some(1)).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        s.read("Patient", "missing-id").await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        s.delete("Patient", &c.id, Some(1)).await,
        Err(StoreError::VersionConflict { current: 2 })
    ));
    let d = s.delete("Patient", &c.id, Some(2)).await.unwrap().unwrap();
    assert_eq!(d.version, 3);
}

async fn delete_and_gone(h: &H) {
    let s = &h.store;
    let c = s.create("Patient", patient("Delta")).await.unwrap();
    assert_eq!(
        s.find_matching("Patient", &[("family".into(), "Delta".into())])
            .await
            .unwrap(),
        vec![c.id.clone()]
    );
    let d = s.delete("Patient", &c.id, None).await.unwrap().unwrap();
    assert!(d.deleted && d.resource.is_none());
    assert_eq!(d.version, 2);
    match s.read("Patient", &c.id).await {
        Err(StoreError::Gone {
            version,
            last_updated,
        }) => {
            assert_eq!(version, 2);
            assert_eq!(last_updated, d.last_updated);
        }
        other => panic!("expected Gone, got {other:?}"),
    }
    assert!(matches!(
        s.vread("Patient", &c.id, 2).await,
        Err(StoreError::Gone { version: 2, .. })
    ));
    assert_eq!(s.vread("Patient", &c.id, 1).await.unwrap(), c);
    // Deleting again is a no-op returning the tombstone.
    let again = s.delete("Patient", &c.id, None).await.unwrap().unwrap();
    assert_eq!(again, d);
    assert_eq!(
        s.history(Some("Patient"), Some(&c.id), None, 10)
            .await
            .unwrap()
            .len(),
        2
    );
    // Never existed.
    assert!(
        s.delete("Patient", "never-existed", None)
            .await
            .unwrap()
            .is_none()
    );
    // Index rows are gone with the tombstone.
    assert!(
        s.find_matching("Patient", &[("family".into(), "Delta".into())])
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        s.find_matching("Patient", &[("_id".into(), c.id.clone())])
            .await
            .unwrap()
            .is_empty()
    );
    let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM search_blind WHERE id = $1")
        .bind(c.id.clone())
        .fetch_one(&h.raw)
        .await
        .unwrap()
        .try_get("n")
        .unwrap();
    assert_eq!(n, 0);
    // Update after delete revives the resource as a new version.
    let (r, created) = s.update("Patient", &c.id, patient("Delta"), None).await.unwrap();
    assert!(created);
    assert_eq!(r.version, 3);
    assert_eq!(s.read("Patient", &c.id).await.unwrap().version, 3);
    assert_eq!(
        s.find_matching("Patient", &[("family".into(), "delta".into())])
            .await
            .unwrap(),
        vec![c.id.clone()]
    );
}

async fn history_order_since_count(h: &H) {
    let s = &h.store;
    let a = s.create("Patient", patient("Hist")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(3)).await;
    let (a2, _) = s.update("Patient", &a.id, patient("Hist2"), None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(3)).await;
    let b = s.create("Patient", patient("Other")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(3)).await;
    let o = s
        .create(
            "Observation",
            json!({"resourceType": "Observation", "status": "final"}),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(3)).await;
    let a3 = s.delete("Patient", &a.id, None).await.unwrap().unwrap();

    let inst = s.history(Some("Patient"), Some(&a.id), None, 100).await.unwrap();
    assert_eq!(inst.iter().map(|x| x.version).collect::<Vec<_>>(), vec![3, 2, 1]);
    assert!(inst[0].deleted && inst[0].resource.is_none());
    assert_eq!(resource(&inst[1])["name"][0]["family"], "Hist2");
    assert_eq!(inst[1], a2);

    let ty = s.history(Some("Patient"), None, None, 100).await.unwrap();
    let keys: Vec<_> = ty.iter().map(|x| (x.id.clone(), x.version)).collect();
    assert_eq!(
        keys,
        vec![
            (a.id.clone(), 3),
            (b.id.clone(), 1),
            (a.id.clone(), 2),
            (a.id.clone(), 1)
        ]
    );
    for w in ty.windows(2) {
        assert!(w[0].last_updated >= w[1].last_updated);
    }

    let all = s.history(None, None, None, 100).await.unwrap();
    assert_eq!(all.len(), 5);
    assert_eq!(all[1].rtype, "Observation");
    assert_eq!(all[1].id, o.id);

    // since is inclusive.
    let since = s.history(None, None, Some(b.last_updated), 100).await.unwrap();
    let keys: Vec<_> = since.iter().map(|x| (x.rtype.as_str(), x.version)).collect();
    assert_eq!(keys, vec![("Patient", 3), ("Observation", 1), ("Patient", 1)]);
    assert_eq!(since[2].id, b.id);
    let after = s
        .history(
            None,
            None,
            Some(b.last_updated + time::Duration::microseconds(1)),
            100,
        )
        .await
        .unwrap();
    assert_eq!(after.len(), 2);
    let later = s
        .history(
            None,
            None,
            Some(a3.last_updated + time::Duration::seconds(1)),
            100,
        )
        .await
        .unwrap();
    assert!(later.is_empty());

    // count limits, newest first.
    let two = s.history(None, None, None, 2).await.unwrap();
    assert_eq!(two.len(), 2);
    assert_eq!(two[0].id, a.id);
    assert!(s.history(None, None, None, 0).await.unwrap().is_empty());
    assert!(matches!(
        s.history(None, Some(&a.id), None, 10).await,
        Err(StoreError::UnsupportedCriteria(_))
    ));
}

fn crit(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

async fn find_matching_criteria(h: &H) {
    let s = &h.store;
    let p1 = s
        .create(
            "Patient",
            json!({
                "resourceType": "Patient",
                "identifier": [{"system": "urn:oid:1.2.3", "value": "A-100"}, {"value": "NOSYS-1"}],
                "name": [{"family": "Van Der Berg", "given": ["Maria", "José"]}],
                "telecom": [{"system": "phone", "value": "555-1234"}],
                "birthDate": "1980-05-06"
            }),
        )
        .await
        .unwrap();
    let p2 = s
        .create(
            "Patient",
            json!({
                "resourceType": "Patient",
                "identifier": [{"system": "urn:oid:9.9", "value": "A-100"}],
                "name": [{"family": "Smith"}],
                "birthDate": "1980-05-06"
            }),
        )
        .await
        .unwrap();
    let mut both = vec![p1.id.clone(), p2.id.clone()];
    both.sort();

    let f = |c: Vec<(String, String)>| async move { s.find_matching("Patient", &c).await.unwrap() };
    assert_eq!(
        f(crit(&[("identifier", "urn:oid:1.2.3|A-100")])).await,
        vec![p1.id.clone()]
    );
    assert_eq!(
        f(crit(&[("identifier", "urn:oid:9.9|A-100")])).await,
        vec![p2.id.clone()]
    );
    assert_eq!(f(crit(&[("identifier", "A-100")])).await, both);
    assert_eq!(
        f(crit(&[("identifier", "urn:oid:1.2.3|")])).await,
        vec![p1.id.clone()]
    );
    // `|code`: the code without a system.
    assert_eq!(f(crit(&[("identifier", "|NOSYS-1")])).await, vec![p1.id.clone()]);
    assert!(f(crit(&[("identifier", "|A-100")])).await.is_empty());
    assert_eq!(f(crit(&[("identifier", "NOSYS-1")])).await, vec![p1.id.clone()]);
    assert!(f(crit(&[("identifier", "urn:oid:1.2.3|A-1")])).await.is_empty());
    assert_eq!(f(crit(&[("family", "van der berg")])).await, vec![p1.id.clone()]);
    assert_eq!(f(crit(&[("birthdate", "1980-05-06")])).await, both);
    assert_eq!(
        f(crit(&[("birthdate", "1980-05-06"), ("family", "SMITH")])).await,
        vec![p2.id.clone()]
    );
    assert!(
        f(crit(&[("birthdate", "1980-05-07"), ("family", "SMITH")]))
            .await
            .is_empty()
    );
    assert_eq!(f(crit(&[("_id", &p1.id)])).await, vec![p1.id.clone()]);
    assert_eq!(
        f(crit(&[("_id", &p1.id), ("identifier", "A-100")])).await,
        vec![p1.id.clone()]
    );
    assert!(f(crit(&[("_id", &p1.id), ("family", "smith")])).await.is_empty());
    assert!(f(crit(&[("_id", "nope")])).await.is_empty());
    // Type is part of the match.
    assert!(
        s.find_matching("Observation", &crit(&[("_id", &p1.id)]))
            .await
            .unwrap()
            .is_empty()
    );

    match s
        .find_matching("Patient", &crit(&[("identifier", "A-100"), ("shoe-size", "9")]))
        .await
    {
        Err(StoreError::UnsupportedCriteria(p)) => assert_eq!(p, "shoe-size"),
        other => panic!("expected UnsupportedCriteria, got {other:?}"),
    }
    assert!(matches!(
        s.find_matching("Patient", &[]).await,
        Err(StoreError::UnsupportedCriteria(_))
    ));

    // Index follows the current version only.
    let mut changed = resource(&p2).clone();
    changed["identifier"][0]["value"] = json!("B-200");
    s.update("Patient", &p2.id, changed, None).await.unwrap();
    assert_eq!(f(crit(&[("identifier", "A-100")])).await, vec![p1.id.clone()]);
    assert_eq!(
        f(crit(&[("identifier", "urn:oid:9.9|B-200")])).await,
        vec![p2.id.clone()]
    );

    // Text prefixes are stored under "<param>:prefix".
    let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM search_blind WHERE id = $1 AND param = $2")
        .bind(p2.id.clone())
        .bind("family:prefix")
        .fetch_one(&h.raw)
        .await
        .unwrap()
        .try_get("n")
        .unwrap();
    assert_eq!(n, 5); // s, sm, smi, smit, smith
}

async fn update_as_create_and_duplicates(h: &H) {
    let s = &h.store;
    let (c, created) = s
        .update("Patient", "client-chosen-1", patient("Upsert"), None)
        .await
        .unwrap();
    assert!(created);
    assert_eq!(c.version, 1);
    assert_eq!(resource(&c)["id"], "client-chosen-1");
    let (u, created) = s
        .update("Patient", "client-chosen-1", patient("Upsert2"), None)
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(u.version, 2);
    assert!(matches!(
        s.create_with_id("Patient", "client-chosen-1", patient("X")).await,
        Err(StoreError::Duplicate)
    ));
    let w = s
        .create_with_id("Patient", "loader-1", patient("Loader"))
        .await
        .unwrap();
    assert_eq!(w.version, 1);
    assert_eq!(s.read("Patient", "loader-1").await.unwrap(), w);
    // The id in the body is replaced by the stored id; resourceType must match.
    let mut body = patient("Body");
    body["id"] = json!("something-else");
    let (b, _) = s.update("Patient", "body-id", body, None).await.unwrap();
    assert_eq!(resource(&b)["id"], "body-id");
    assert!(matches!(
        s.create("Patient", json!({"resourceType": "Observation"})).await,
        Err(StoreError::Corrupt(_))
    ));
}

async fn round_trip_exactness(h: &H) {
    let s = &h.store;
    let text = r#"{"resourceType":"Observation","status":"final","code":{"text":"weight"},"valueQuantity":{"value":1.50,"unit":"kg"},"component":[{"valueQuantity":{"value":0.000000000000000000000123456789012345678901234567890}},{"valueInteger":12345678901234567890123}],"meta":{"profile":["http://example.org/p"],"tag":[{"code":"t"}]},"zzz":"last","aaa":"after"}"#;
    let v: Value = serde_json::from_str(text).unwrap();
    let c = s.create("Observation", v).await.unwrap();
    let back = s.read("Observation", &c.id).await.unwrap();
    let out = String::from_utf8(serde_json::to_vec(resource(&back)).unwrap()).unwrap();
    assert!(out.contains(r#""value":1.50,"#), "{out}");
    assert!(
        out.contains("0.000000000000000000000123456789012345678901234567890"),
        "{out}"
    );
    assert!(out.contains("12345678901234567890123"), "{out}");
    let expected = text
        .replacen(
            r#""resourceType":"Observation","#,
            &format!(r#""resourceType":"Observation","id":"{}","#, c.id),
            1,
        )
        .replacen(
            r#""tag":[{"code":"t"}]}"#,
            &format!(
                r#""tag":[{{"code":"t"}}],"versionId":"1","lastUpdated":"{}"}}"#,
                ward_store::format_instant(c.last_updated)
            ),
            1,
        );
    assert_eq!(out, expected);

    let p = json!({
        "resourceType": "Patient",
        "birthDate": "1990-02-03",
        "_birthDate": {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime",
                                      "valueDateTime": "1990-02-03T04:05:06+01:00"}]},
        "multipleBirthInteger": 2,
        "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">ü &amp; 😀</div>"}
    });
    let c = s.create("Patient", p.clone()).await.unwrap();
    let back = s.read("Patient", &c.id).await.unwrap();
    let r = resource(&back);
    assert_eq!(r["_birthDate"], p["_birthDate"]);
    assert_eq!(r["text"], p["text"]);
    assert_eq!(r, resource(&c));
}

async fn tamper_detection(h: &H) {
    let s = &h.store;
    let c = s.create("Patient", patient("Tamper")).await.unwrap();
    let (u, _) = s
        .update("Patient", &c.id, patient("Tamper2"), None)
        .await
        .unwrap();
    assert_eq!(u.version, 2);

    // Flip one byte of the current ciphertext.
    let (ct, hash) = h.ciphertext("Patient", &c.id, 2).await;
    let mut bad = ct.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x40;
    h.set_ciphertext("Patient", &c.id, 2, bad, hash.clone()).await;
    match s.read("Patient", &c.id).await {
        Err(StoreError::Integrity { rtype, id, version }) => {
            assert_eq!(
                (rtype.as_str(), id.as_str(), version),
                ("Patient", c.id.as_str(), 2)
            );
        }
        other => panic!("expected Integrity, got {other:?}"),
    }
    assert!(matches!(
        s.vread("Patient", &c.id, 2).await,
        Err(StoreError::Integrity { .. })
    ));
    assert!(matches!(
        s.history(Some("Patient"), Some(&c.id), None, 10).await,
        Err(StoreError::Integrity { .. })
    ));
    // The error text carries no content.
    let msg = s.read("Patient", &c.id).await.unwrap_err().to_string();
    assert!(!msg.contains("Tamper") && !msg.contains(&c.id), "{msg}");

    // Restore, then corrupt only the content hash.
    let mut bad_hash = hash.clone();
    bad_hash[0] ^= 1;
    h.set_ciphertext("Patient", &c.id, 2, ct.clone(), bad_hash).await;
    assert!(matches!(
        s.read("Patient", &c.id).await,
        Err(StoreError::Integrity { .. })
    ));
    h.set_ciphertext("Patient", &c.id, 2, ct.clone(), hash.clone())
        .await;
    assert_eq!(s.read("Patient", &c.id).await.unwrap(), u);

    // Swap ciphertexts (with their hashes) between versions 1 and 2: the AAD binds the version.
    let (ct1, hash1) = h.ciphertext("Patient", &c.id, 1).await;
    h.set_ciphertext("Patient", &c.id, 2, ct1.clone(), hash1.clone())
        .await;
    h.set_ciphertext("Patient", &c.id, 1, ct.clone(), hash.clone())
        .await;
    assert!(matches!(
        s.read("Patient", &c.id).await,
        Err(StoreError::Integrity { .. })
    ));
    assert!(matches!(
        s.vread("Patient", &c.id, 1).await,
        Err(StoreError::Integrity { .. })
    ));

    // Moving a ciphertext to another resource fails as well (the AAD binds the id).
    let other = s.create("Patient", patient("Other")).await.unwrap();
    h.set_ciphertext("Patient", &other.id, 1, ct1, hash1).await;
    assert!(matches!(
        s.read("Patient", &other.id).await,
        Err(StoreError::Integrity { .. })
    ));

    // Marking a live version deleted behind Ward's back is detected: tombstones carry a MAC.
    let victim = s.create("Patient", patient("Victim")).await.unwrap();
    sqlx::query("UPDATE resource_version SET deleted = 1 WHERE id = $1 AND version = 1")
        .bind(victim.id.clone())
        .execute(&h.raw)
        .await
        .unwrap();
    assert!(matches!(
        s.vread("Patient", &victim.id, 1).await,
        Err(StoreError::Integrity { .. })
    ));
    // ...and so is an edited tombstone (moved in time).
    let gone = s.create("Patient", patient("Gone")).await.unwrap();
    s.delete("Patient", &gone.id, None).await.unwrap();
    assert!(matches!(
        s.read("Patient", &gone.id).await,
        Err(StoreError::Gone { .. })
    ));
    sqlx::query(
        "UPDATE resource_version SET last_updated_ms = last_updated_ms - 1000 WHERE id = $1 AND version = 2",
    )
    .bind(gone.id.clone())
    .execute(&h.raw)
    .await
    .unwrap();
    assert!(matches!(
        s.read("Patient", &gone.id).await,
        Err(StoreError::Integrity { .. })
    ));

    // A live row without ciphertext is an integrity failure too, never an empty resource.
    sqlx::query("UPDATE resource_version SET ciphertext = NULL WHERE id = $1 AND version = 1")
        .bind(other.id.clone())
        .execute(&h.raw)
        .await
        .unwrap();
    assert!(matches!(
        s.read("Patient", &other.id).await,
        Err(StoreError::Integrity { .. })
    ));
}

const PHI: &[&str] = &[
    "Quixotewhistle",
    "Zebediahna",
    "MRN-58304-QX",
    "555-0199-8812",
    "1987-03-14",
    "19870314",
    "xqzzy.patient@example.org",
    "742 Evergreen Terrace",
];

fn phi_patient() -> Value {
    json!({
        "resourceType": "Patient",
        "identifier": [{"system": "urn:hospital:mrn", "value": "MRN-58304-QX"}],
        "name": [{"family": "Quixotewhistle", "given": ["Zebediahna"]}],
        "telecom": [{"system": "phone", "value": "555-0199-8812"},
                    {"system": "email", "value": "xqzzy.patient@example.org"}],
        "address": [{"line": ["742 Evergreen Terrace"]}],
        "birthDate": "1987-03-14"
    })
}

fn assert_no_phi(haystack: &[u8], what: &str) {
    let lower = haystack.to_ascii_lowercase();
    for needle in PHI {
        let n = needle.to_ascii_lowercase();
        assert!(
            !lower.windows(n.len()).any(|w| w == n.as_bytes()),
            "plaintext {needle:?} found in {what}"
        );
        let hexed = hex::encode(needle.as_bytes());
        assert!(
            !lower.windows(hexed.len()).any(|w| w == hexed.as_bytes()),
            "hex of {needle:?} found in {what}"
        );
    }
}

async fn no_plaintext_phi_in_database(h: &H) {
    let s = &h.store;
    let c = s.create("Patient", phi_patient()).await.unwrap();
    let (u, _) = s.update("Patient", &c.id, phi_patient(), None).await.unwrap();
    let again = s.create("Patient", phi_patient()).await.unwrap();
    s.delete("Patient", &again.id, None).await.unwrap();
    // The data is really there and searchable.
    assert_eq!(s.read("Patient", &c.id).await.unwrap(), u);
    assert_eq!(
        s.find_matching(
            "Patient",
            &crit(&[("identifier", "urn:hospital:mrn|MRN-58304-QX")])
        )
        .await
        .unwrap(),
        vec![c.id.clone()]
    );
    assert_eq!(
        s.find_matching(
            "Patient",
            &crit(&[("family", "QUIXOTEWHISTLE"), ("birthdate", "1987-03-14")])
        )
        .await
        .unwrap(),
        vec![c.id.clone()]
    );

    // Year-only rule: the plaintext year is stored for the date, nothing finer.
    let years: Vec<Option<i64>> = sqlx::query("SELECT year FROM search_date WHERE id = $1 AND param = $2")
        .bind(c.id.clone())
        .bind("birthdate")
        .fetch_all(&h.raw)
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get("year").unwrap())
        .collect();
    assert_eq!(years, vec![Some(1987)]);
    let non_date_years: i64 = sqlx::query(
        "SELECT COUNT(*) AS n FROM search_date WHERE (year IS NOT NULL OR hash IS NOT NULL) AND param <> $1",
    )
    .bind("birthdate")
    .fetch_one(&h.raw)
    .await
    .unwrap()
    .try_get("n")
    .unwrap();
    assert_eq!(non_date_years, 0);

    match h.store.backend() {
        Backend::Sqlite => {
            let files = h.db_files();
            let names: Vec<String> = files
                .iter()
                .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
                .collect();
            assert!(names.iter().any(|n| n.ends_with("-wal")), "{names:?}");
            for f in &files {
                assert_no_phi(&std::fs::read(f).unwrap(), &f.display().to_string());
            }
            // And after a checkpoint/close.
            h.store.close().await;
            h.raw.close().await;
            for f in h.db_files() {
                assert_no_phi(&std::fs::read(&f).unwrap(), &f.display().to_string());
            }
        }
        Backend::Postgres => {
            let tables: Vec<String> = sqlx::query(
                "SELECT table_name::text AS t FROM information_schema.tables WHERE table_schema = 'public'",
            )
            .fetch_all(&h.raw)
            .await
            .unwrap()
            .iter()
            .map(|r| r.try_get("t").unwrap())
            .collect();
            for t in [
                "resource_version",
                "resource_current",
                "search_blind",
                "search_date",
                "search_reference",
                "compartment",
                "wrapped_key",
                "oauth_client",
            ] {
                assert!(tables.iter().any(|x| x == t), "{t} missing from {tables:?}");
            }
            let mut dump = Vec::new();
            for t in &tables {
                assert!(t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
                let rows = sqlx::query(AssertSqlSafe(format!("SELECT x::text AS row FROM {t} x")))
                    .fetch_all(&h.raw)
                    .await
                    .unwrap();
                for r in rows {
                    let line: String = r.try_get("row").unwrap();
                    dump.extend_from_slice(line.as_bytes());
                    dump.push(b'\n');
                }
            }
            assert!(dump.len() > 1000, "dump unexpectedly small");
            assert_no_phi(&dump, "PostgreSQL table dump");
        }
    }
}

async fn concurrent_updates(h: &H) {
    let s = &h.store;
    let c = s.create("Patient", patient("Race")).await.unwrap();
    // Same If-Match: exactly one wins.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = s.clone();
        let id = c.id.clone();
        tasks.push(tokio::spawn(async move {
            s.update("Patient", &id, patient(&format!("Race{i}")), Some(1))
                .await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok((st, _)) => {
                ok += 1;
                assert_eq!(st.version, 2);
            }
            Err(StoreError::VersionConflict { current }) => assert_eq!(current, 2),
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(ok, 1);
    // Without If-Match every update lands as its own version.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = s.clone();
        let id = c.id.clone();
        tasks.push(tokio::spawn(async move {
            s.update("Patient", &id, patient(&format!("Free{i}")), None).await
        }));
    }
    let mut versions = Vec::new();
    for t in tasks {
        versions.push(t.await.unwrap().unwrap().0.version);
    }
    versions.sort();
    assert_eq!(versions, (3..=10).collect::<Vec<_>>());
    let hist = s.history(Some("Patient"), Some(&c.id), None, 100).await.unwrap();
    assert_eq!(hist.len(), 10);
    assert_eq!(s.read("Patient", &c.id).await.unwrap().version, 10);
    // Index reflects only the current version.
    let current_family = resource(&s.read("Patient", &c.id).await.unwrap())["name"][0]["family"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        s.find_matching("Patient", &crit(&[("family", &current_family)]))
            .await
            .unwrap(),
        vec![c.id.clone()]
    );
    let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM search_blind WHERE id = $1 AND param = $2")
        .bind(c.id.clone())
        .bind("family:exact")
        .fetch_one(&h.raw)
        .await
        .unwrap()
        .try_get("n")
        .unwrap();
    assert_eq!(n, 1);

    // Racing update-as-create on a new id: one creates version 1, the others follow in order.
    let mut tasks = Vec::new();
    for i in 0..6 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.update("Patient", "race-new", patient(&format!("New{i}")), None)
                .await
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        let (st, created) = t.await.unwrap().unwrap();
        results.push((st.version, created));
    }
    results.sort();
    assert_eq!(results[0], (1, true));
    assert!(results[1..].iter().all(|(_, created)| !created));
    assert_eq!(
        results.iter().map(|r| r.0).collect::<Vec<_>>(),
        (1..=6).collect::<Vec<_>>()
    );

    // Racing create_with_id: exactly one wins, the rest are duplicates.
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.create_with_id("Patient", "race-dup", patient("Dup")).await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(StoreError::Duplicate) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(ok, 1);
}

async fn oauth_clients(h: &H) {
    let s = &h.store;
    let now = OffsetDateTime::now_utc().replace_nanosecond(123_000_000).unwrap();
    let c = ClientRecord {
        client_id: "svc-b".into(),
        name: "Billing".into(),
        secret_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        scopes: "system/Patient.read".into(),
        disabled: false,
        created_at: now,
        redirect_uris: Vec::new(),
        public: false,
        jwks: None,
        jwks_url: None,
    };
    assert!(!format!("{c:?}").contains("argon2"));
    s.insert_client(&c).await.unwrap();
    assert!(matches!(s.insert_client(&c).await, Err(StoreError::Duplicate)));
    let mut a = c.clone();
    a.client_id = "svc-a".into();
    s.insert_client(&a).await.unwrap();
    assert_eq!(s.get_client("svc-b").await.unwrap(), Some(c.clone()));
    assert_eq!(s.get_client("nope").await.unwrap(), None);
    let list = s.list_clients().await.unwrap();
    assert_eq!(
        list.iter().map(|x| x.client_id.as_str()).collect::<Vec<_>>(),
        vec!["svc-a", "svc-b"]
    );
    assert!(s.disable_client("svc-b").await.unwrap());
    assert!(!s.disable_client("nope").await.unwrap());
    assert!(s.get_client("svc-b").await.unwrap().unwrap().disabled);
    assert!(!s.get_client("svc-a").await.unwrap().unwrap().disabled);
}

async fn reopen_and_wrong_kek(h: &H) {
    let c = h.store.create("Patient", patient("Reopen")).await.unwrap();
    // Another node (or a restart) with the same KEK agrees on the keys.
    let second = Store::open(&h.url, &h.kek).await.unwrap();
    assert_eq!(second.read("Patient", &c.id).await.unwrap(), c);
    let d = second.create("Patient", patient("Second")).await.unwrap();
    assert_eq!(h.store.read("Patient", &d.id).await.unwrap(), d);
    assert_eq!(
        h.store
            .find_matching("Patient", &crit(&[("family", "second")]))
            .await
            .unwrap(),
        vec![d.id.clone()]
    );
    second.close().await;
    let count: i64 = sqlx::query("SELECT COUNT(*) AS n FROM wrapped_key")
        .fetch_one(&h.raw)
        .await
        .unwrap()
        .try_get("n")
        .unwrap();
    assert_eq!(count, 2);
    // A wrong KEK cannot open the store, and the error says what is wrong.
    let wrong = Kek::generate().unwrap();
    match Store::open(&h.url, &wrong).await {
        Err(e @ StoreError::OtherKek) => assert!(e.to_string().contains("another key-encryption key")),
        other => panic!("expected OtherKek, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_nodes_agree_on_keys_postgres() {
    let url = ward_store::testing::fresh_postgres_url().await;
    let kek = Kek::generate().unwrap();
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            let kek = kek.clone();
            tokio::spawn(async move { Store::open(&url, &kek).await })
        })
        .collect();
    let mut stores = Vec::new();
    for o in opens {
        stores.push(o.await.unwrap().unwrap());
    }
    let c = stores[0].create("Patient", patient("Racer")).await.unwrap();
    for s in &stores {
        assert_eq!(s.read("Patient", &c.id).await.unwrap(), c);
        assert_eq!(
            s.find_matching("Patient", &crit(&[("family", "racer")]))
                .await
                .unwrap(),
            vec![c.id.clone()]
        );
        s.close().await;
    }
}

#[tokio::test]
async fn unsupported_url_scheme() {
    let kek = Kek::generate().unwrap();
    let err = Store::open("mysql://localhost/x", &kek).await.unwrap_err();
    assert!(matches!(err, StoreError::Database(_)));
    assert_eq!(err.to_string(), "database error");
}

/// Number of stored versions of `rtype` (all ids, tombstones included).
async fn version_count(h: &H, rtype: &str) -> usize {
    h.store
        .history(Some(rtype), None, None, 10_000)
        .await
        .unwrap()
        .len()
}

async fn transaction_all_or_nothing(h: &H) {
    let s = &h.store;
    let existing = s.create("Patient", patient("Tx-Existing")).await.unwrap();
    let other = s.create("Patient", patient("Tx-Other")).await.unwrap();
    let obs = |pid: &str| {
        json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
               "subject": {"reference": format!("Patient/{pid}")}})
    };
    let before = (
        version_count(h, "Patient").await,
        version_count(h, "Observation").await,
    );

    // The 3rd of 4 operations fails (stale if_match): nothing of the first two remains.
    let ops = vec![
        TxOp::Create {
            rtype: "Patient".into(),
            id: "tx-new-patient".into(),
            resource: patient("Tx-New"),
            if_none_exist: None,
        },
        TxOp::Delete {
            rtype: "Patient".into(),
            id: other.id.clone(),
            if_match: None,
        },
        TxOp::Update {
            rtype: "Patient".into(),
            id: existing.id.clone(),
            resource: resource(&existing).clone(),
            if_match: Some(7),
            may_create: true,
        },
        TxOp::Create {
            rtype: "Observation".into(),
            id: "tx-new-obs".into(),
            resource: obs("tx-new-patient"),
            if_none_exist: None,
        },
    ];
    let err = s.transaction(&ops).await.unwrap_err();
    assert_eq!(err.index, Some(2));
    assert!(
        matches!(err.error, StoreError::VersionConflict { current: 1 }),
        "{err:?}"
    );
    assert_eq!(
        (
            version_count(h, "Patient").await,
            version_count(h, "Observation").await
        ),
        before
    );
    assert!(matches!(
        s.read("Patient", "tx-new-patient").await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(s.read("Patient", &other.id).await.unwrap().version, 1);
    assert!(
        s.compartments_of("Observation", "tx-new-obs")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        s.find_matching("Patient", &crit(&[("family", "Tx-New")]))
            .await
            .unwrap()
            .is_empty(),
        "no index rows of the rolled-back create"
    );
    // A duplicate id fails the same way.
    let dup = vec![
        TxOp::Create {
            rtype: "Observation".into(),
            id: "tx-new-obs".into(),
            resource: obs(&existing.id),
            if_none_exist: None,
        },
        TxOp::Create {
            rtype: "Patient".into(),
            id: existing.id.clone(),
            resource: patient("Tx-Dup"),
            if_none_exist: None,
        },
    ];
    let err = s.transaction(&dup).await.unwrap_err();
    assert_eq!(err.index, Some(1));
    assert!(matches!(err.error, StoreError::Duplicate));
    assert!(matches!(
        s.read("Observation", "tx-new-obs").await,
        Err(StoreError::NotFound)
    ));

    // With the right version, everything is written, index and compartments included.
    let mut ok = ops;
    if let TxOp::Update { if_match, .. } = &mut ok[2] {
        *if_match = Some(1);
    }
    let out = s.transaction(&ok).await.unwrap();
    assert_eq!(out.len(), 4);
    assert!(matches!(&out[0], TxOutcome::Created(c) if c.id == "tx-new-patient" && c.version == 1));
    assert!(matches!(&out[1], TxOutcome::Deleted(Some(t)) if t.deleted && t.version == 2));
    assert!(matches!(&out[2], TxOutcome::Updated { stored, created: false } if stored.version == 2));
    assert!(matches!(&out[3], TxOutcome::Created(c) if c.id == "tx-new-obs"));
    assert_eq!(
        s.compartments_of("Observation", "tx-new-obs").await.unwrap(),
        vec!["tx-new-patient".to_owned()]
    );
    assert_eq!(
        s.find_matching("Patient", &crit(&[("family", "Tx-New")]))
            .await
            .unwrap(),
        vec!["tx-new-patient".to_owned()]
    );
    assert!(matches!(
        s.read("Patient", &other.id).await,
        Err(StoreError::Gone { .. })
    ));
}

async fn transaction_conditional_create_and_reads(h: &H) {
    let s = &h.store;
    let existing = s.create("Patient", patient("Cond-Existing")).await.unwrap();
    let ops = vec![
        // matches the existing patient: nothing written, references redirected
        TxOp::Create {
            rtype: "Patient".into(),
            id: "planned-1".into(),
            resource: patient("Cond-Existing"),
            if_none_exist: Some(crit(&[("identifier", "urn:mrn|MRN-Cond-Existing")])),
        },
        // matches nothing: created
        TxOp::Create {
            rtype: "Patient".into(),
            id: "planned-2".into(),
            resource: patient("Cond-New"),
            if_none_exist: Some(crit(&[("identifier", "urn:mrn|MRN-Cond-New")])),
        },
        TxOp::Create {
            rtype: "Observation".into(),
            id: "cond-obs".into(),
            resource: json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                "subject": {"reference": "Patient/planned-1"},
                "performer": [{"reference": "Patient/planned-2"}]}),
            if_none_exist: None,
        },
        // reads see the transaction's own writes
        TxOp::Read {
            rtype: "Observation".into(),
            id: "cond-obs".into(),
            version: None,
        },
    ];
    let out = s.transaction(&ops).await.unwrap();
    match &out[0] {
        TxOutcome::Matched(m) => assert_eq!(m.id, existing.id),
        other => panic!("{other:?}"),
    }
    assert!(matches!(&out[1], TxOutcome::Created(c) if c.id == "planned-2"));
    let read = match &out[3] {
        TxOutcome::Read(r) => r.clone().parse().unwrap(),
        other => panic!("{other:?}"),
    };
    // A read past the transaction's read budget is withheld, not held in memory.
    let again = TxOp::Read {
        rtype: "Observation".into(),
        id: "cond-obs".into(),
        version: None,
    };
    let len = match &s.transaction(std::slice::from_ref(&again)).await.unwrap()[0] {
        TxOutcome::Read(r) => r.json.len(),
        other => panic!("{other:?}"),
    };
    let within = s
        .transaction_within(&[again.clone(), again], len + len / 2)
        .await
        .unwrap();
    assert!(matches!(&within[0], TxOutcome::Read(r) if r.id == "cond-obs"));
    assert!(
        matches!(&within[1], TxOutcome::ReadWithheld { id, version: 1, .. } if id == "cond-obs"),
        "{:?}",
        within[1]
    );
    assert_eq!(
        resource(&read)["subject"]["reference"],
        format!("Patient/{}", existing.id)
    );
    assert_eq!(resource(&read)["performer"][0]["reference"], "Patient/planned-2");
    assert!(matches!(
        s.read("Patient", "planned-1").await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(version_count(h, "Patient").await, 2);
    let mut comp = s.compartments_of("Observation", "cond-obs").await.unwrap();
    comp.sort();
    let mut want = vec![existing.id.clone(), "planned-2".to_owned()];
    want.sort();
    assert_eq!(comp, want);

    // Two matches: the transaction fails as a whole.
    s.create("Patient", patient("Cond-New")).await.unwrap();
    let ops = vec![
        TxOp::Create {
            rtype: "Basic".into(),
            id: "never".into(),
            resource: json!({"resourceType": "Basic", "code": {"text": "x"}}),
            if_none_exist: None,
        },
        TxOp::Create {
            rtype: "Patient".into(),
            id: "planned-3".into(),
            resource: patient("Cond-New"),
            if_none_exist: Some(crit(&[("identifier", "urn:mrn|MRN-Cond-New")])),
        },
    ];
    let err = s.transaction(&ops).await.unwrap_err();
    assert_eq!(err.index, Some(1));
    assert!(matches!(err.error, StoreError::MultipleMatches));
    assert!(matches!(
        s.read("Basic", "never").await,
        Err(StoreError::NotFound)
    ));
    // A failing read fails the transaction too.
    let ops = vec![
        TxOp::Create {
            rtype: "Basic".into(),
            id: "never".into(),
            resource: json!({"resourceType": "Basic", "code": {"text": "x"}}),
            if_none_exist: None,
        },
        TxOp::Read {
            rtype: "Basic".into(),
            id: "missing".into(),
            version: None,
        },
    ];
    let err = s.transaction(&ops).await.unwrap_err();
    assert_eq!(err.index, Some(1));
    assert!(matches!(err.error, StoreError::NotFound));
    assert!(matches!(
        s.read("Basic", "never").await,
        Err(StoreError::NotFound)
    ));
}

/// Concurrent conditional creates with the same criteria create exactly one resource.
async fn transaction_concurrent_conditional_creates(h: &H) {
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = h.store.clone();
        tasks.push(tokio::spawn(async move {
            let op = TxOp::Create {
                rtype: "Patient".into(),
                id: format!("racer-{i}"),
                resource: patient("Racer"),
                if_none_exist: Some(crit(&[("identifier", "urn:mrn|MRN-Racer")])),
            };
            s.transaction(&[op]).await.unwrap().pop().unwrap()
        }));
    }
    let mut created = 0;
    for t in tasks {
        if matches!(t.await.unwrap(), TxOutcome::Created(_)) {
            created += 1;
        }
    }
    assert_eq!(created, 1);
    assert_eq!(
        h.store
            .find_matching("Patient", &crit(&[("identifier", "urn:mrn|MRN-Racer")]))
            .await
            .unwrap()
            .len(),
        1
    );
}

/// The store's own last line: no AuditEvent is ever written, whatever the caller; an update
/// that may not create neither creates nor revives (also with `if_match` naming a tombstone).
async fn refuses_server_made_types_and_revives_without_create(h: &H) {
    let s = &h.store;
    let event = json!({"resourceType": "AuditEvent", "recorded": "2026-01-01T00:00:00Z"});
    assert!(matches!(
        s.create("AuditEvent", event.clone()).await,
        Err(StoreError::NotWritable)
    ));
    assert!(matches!(
        s.update("AuditEvent", "forged", event.clone(), None).await,
        Err(StoreError::NotWritable)
    ));
    let mixed = [
        TxOp::Create {
            rtype: "Patient".into(),
            id: "with-forgery".into(),
            resource: patient("Forge"),
            if_none_exist: None,
        },
        TxOp::Create {
            rtype: "AuditEvent".into(),
            id: "forged".into(),
            resource: event,
            if_none_exist: None,
        },
    ];
    let err = s.transaction(&mixed).await.expect_err("refused");
    assert_eq!(err.index, Some(1));
    assert!(matches!(err.error, StoreError::NotWritable));
    assert_eq!(version_count(h, "AuditEvent").await, 0);
    assert!(matches!(
        s.read("Patient", "with-forgery").await,
        Err(StoreError::NotFound)
    ));

    let c = s.create("Patient", patient("Revive")).await.unwrap();
    let d = s.delete("Patient", &c.id, None).await.unwrap().unwrap();
    let update = |id: &str, if_match: Option<i64>| TxOp::Update {
        rtype: "Patient".into(),
        id: id.to_owned(),
        resource: json!({"resourceType": "Patient", "id": id}),
        if_match,
        may_create: false,
    };
    for if_match in [None, Some(d.version)] {
        let err = s
            .transaction(&[update(&c.id, if_match)])
            .await
            .expect_err("no revive");
        assert!(matches!(err.error, StoreError::Gone { .. }), "{if_match:?}");
    }
    let err = s
        .transaction(&[update("never-was", None)])
        .await
        .expect_err("no create");
    assert!(matches!(err.error, StoreError::NotFound));
    assert!(matches!(
        s.read("Patient", &c.id).await,
        Err(StoreError::Gone { .. })
    ));
    // With create permission, the same update revives.
    let mut revive = update(&c.id, Some(d.version));
    if let TxOp::Update { may_create, .. } = &mut revive {
        *may_create = true;
    }
    let out = s.transaction(&[revive]).await.unwrap();
    assert!(matches!(&out[0], TxOutcome::Updated { created: true, .. }));
}
