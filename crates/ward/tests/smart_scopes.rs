//! SMART scopes at the token endpoint and at the FHIR API (SPEC AC-4): unknown and malformed
//! scopes are `invalid_scope` (RFC 6749 §5.2); non-resource scopes are granted when registered
//! and reach no data; a granular scope is granted as asked but opens nothing until its
//! restrictions are enforced; a registered granular scope never grants the unrestricted form.

mod common;

use common::{Backend, TestServer};
use serde_json::Value;

async fn ask(s: &TestServer, id: &str, secret: &str, scope: &str) -> (u16, Value) {
    let resp = s
        .client
        .post(format!("{}/oauth2/token", s.url))
        .basic_auth(id, Some(secret))
        .form(&[("grant_type", "client_credentials"), ("scope", scope)])
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

async fn scopes_at_the_token_endpoint(backend: Backend) {
    let s = TestServer::start(backend).await;
    let (id, secret) = s
        .new_client("system/*.cruds system/Observation.rs?category=laboratory openid fhirUser")
        .await;
    for bad in [
        "email",
        "system/Patient.rc",
        "system/Patient.rr",
        "system/Patient.read?category=x",
        "system/Patient.rs?category=<b>",
        "launch/location",
        "offline-access",
        "system/Patient.rs email",
    ] {
        let (status, body) = ask(&s, &id, &secret, bad).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_scope")),
            "{bad}"
        );
    }
    // Non-resource scopes: granted when registered, reach nothing.
    let (status, body) = ask(&s, &id, &secret, "openid fhirUser offline_access").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scope"], "openid fhirUser");
    let t = body["access_token"].as_str().unwrap();
    assert_eq!(s.status_of(&format!("{}/Patient", s.fhir), Some(t)).await, 403);

    // A granular request is granted as asked, and opens nothing yet.
    let (status, body) = ask(&s, &id, &secret, "system/Patient.rs?_tag=a|b").await;
    assert_eq!(
        (status, body["scope"].as_str()),
        (200, Some("system/Patient.rs?_tag=a|b"))
    );
    let t = body["access_token"].as_str().unwrap();
    assert_eq!(s.status_of(&format!("{}/Patient", s.fhir), Some(t)).await, 403);
    assert_eq!(
        s.status_of(&format!("{}/Patient/nope", s.fhir), Some(t)).await,
        403
    );

    // A client registered only for a granular scope never gets the unrestricted one.
    let (gid, gsecret) = s.new_client("system/Observation.rs?category=laboratory").await;
    let (status, body) = ask(&s, &gid, &gsecret, "system/Observation.rs").await;
    assert_eq!(status, 200);
    assert_eq!(body["scope"], "system/Observation.rs?category=laboratory");
    let t = body["access_token"].as_str().unwrap();
    assert_eq!(
        s.status_of(&format!("{}/Observation", s.fhir), Some(t)).await,
        403
    );
    let (status, body) = ask(&s, &gid, &gsecret, "system/Patient.rs").await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_scope")));

    // Registration holds to the grammar too.
    let err = ward::clients::create(
        &s.config,
        ward::clients::NewClient {
            name: "typo".into(),
            scopes: "system/*.rs offline-access".into(),
            ..Default::default()
        },
    )
    .await;
    assert!(err.is_err());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes_at_the_token_endpoint_sqlite() {
    scopes_at_the_token_endpoint(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes_at_the_token_endpoint_postgres() {
    scopes_at_the_token_endpoint(Backend::Postgres).await;
}
