//! `/oauth2/authorize` and the sign-in pages over real TLS (SPEC AC-5, AC-6, UI-1): request
//! checks, CSRF, the session cookie, idle and absolute expiry by the injected clock, logout,
//! fixation, lockout, step-up, privileged scopes, the patient context, EHR launches.

#[path = "common/browser.rs"]
mod browser;
mod common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use browser::{Page, Web};
use common::{Backend, TestServer};
use serde_json::Value;

const REDIRECT: &str = "https://app.example/cb";
const PASSWORD: &str = "Correct-Horse-Battery-42";
const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";
const APP_SCOPES: &str =
    "patient/*.rs user/*.rs openid fhirUser profile launch launch/patient offline_access";

/// Registers a public app with `REDIRECT` as its redirect URI.
async fn app(s: &TestServer) -> String {
    let store = ward::clients::open_store(&s.config).await.unwrap();
    let client_id = uuid::Uuid::new_v4().to_string();
    store
        .insert_client(&ward_store::ClientRecord {
            client_id: client_id.clone(),
            name: "Chart <App>".into(),
            secret_hash: String::new(),
            scopes: APP_SCOPES.into(),
            disabled: false,
            created_at: time::OffsetDateTime::now_utc(),
            redirect_uris: vec![REDIRECT.into()],
            public: true,
            jwks: None,
            jwks_url: None,
        })
        .await
        .unwrap();
    store.close().await;
    client_id
}

/// Creates a user with a known password (no forced change); returns the user id.
async fn user(s: &TestServer, username: &str, role: &str, fhir_user: Option<&str>) -> String {
    let store = ward::clients::open_store(&s.config).await.unwrap();
    let created = ward_auth::users::create_user(
        &store,
        ward_auth::users::NewUser {
            username: username.into(),
            role: role.parse().unwrap(),
            fhir_user: fhir_user.map(str::to_owned),
            password: Some(ward_auth::SecretString::new(PASSWORD.into())),
        },
        time::OffsetDateTime::now_utc(),
    )
    .await
    .unwrap();
    store.close().await;
    created.user_id
}

fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(ward_crypto::sha256(verifier.as_bytes()))
}

const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk-verifier";

/// An authorize query with sensible defaults, `changes` replacing (or with an empty value
/// removing) parameters.
fn authorize_query(s: &TestServer, client_id: &str, changes: &[(&str, &str)]) -> String {
    let ch = challenge(VERIFIER);
    let mut params: Vec<(String, String)> = [
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", REDIRECT),
        ("scope", "user/Observation.rs openid fhirUser"),
        ("state", "st-&-1"),
        ("aud", s.fhir.as_str()),
        ("code_challenge", ch.as_str()),
        ("code_challenge_method", "S256"),
        ("nonce", "n-1"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    for (k, v) in changes {
        params.retain(|(pk, _)| pk != k);
        if !v.is_empty() {
            params.push(((*k).to_owned(), (*v).to_owned()));
        }
    }
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in &params {
        q.append_pair(k, v);
    }
    q.finish()
}

fn authorize_url(s: &TestServer, client_id: &str, changes: &[(&str, &str)]) -> String {
    format!("/oauth2/authorize?{}", authorize_query(s, client_id, changes))
}

/// The query parameters of a redirect to the application.
fn redirect_params(page: &Page) -> Vec<(String, String)> {
    let loc = page.location().expect("a redirect");
    assert!(loc.starts_with(REDIRECT), "{loc}");
    let query = loc.split_once('?').map(|(_, q)| q).unwrap_or("");
    form_urlencoded::parse(query.as_bytes()).into_owned().collect()
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn assert_client_error(page: &Page, error: &str) {
    assert_eq!(page.status, 303, "{}", page.body);
    let p = redirect_params(page);
    assert_eq!(param(&p, "error"), Some(error), "{p:?}");
    assert_eq!(param(&p, "state"), Some("st-&-1"), "state echoed");
    assert!(param(&p, "code").is_none());
}

/// Shown on a page, never sent to the (claimed) redirect URI.
fn assert_shown_not_redirected(page: &Page) {
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(page.location().is_none());
    assert!(page.body.contains("role=\"alert\""));
}

/// Signs in with `PASSWORD` from the login page; returns the next page.
async fn sign_in(web: &mut Web, login: &Page, username: &str) -> Page {
    assert!(login.has_form("/oauth2/login"), "{}", login.body);
    web.submit(
        login,
        "/oauth2/login",
        &[("username", username), ("password", PASSWORD)],
    )
    .await
}

/// The TOTP code the server's clock expects for `secret_b32`.
fn totp(s: &TestServer, secret_b32: &str) -> String {
    let secret = data_encoding::BASE32_NOPAD.decode(secret_b32.as_bytes()).unwrap();
    let step = ward_auth::totp::step_at(s.config.clock.now());
    ward_auth::totp::code(&secret, step).unwrap().expose().to_owned()
}

fn enrollment_secret(page: &Page) -> String {
    let marker = "id=\"totp-secret\">";
    let start = page.body.find(marker).expect("the manual key") + marker.len();
    let end = page.body[start..].find('<').unwrap();
    page.body[start..start + end].to_owned()
}

// ----- the tests ---------------------------------------------------------------------------

async fn authorize_request_checks(backend: Backend) {
    let s = TestServer::start(backend).await;
    let client_id = app(&s).await;
    let mut web = Web::new(&s);

    // Client and redirect URI problems: a page, never a redirect.
    let p = web.get(&authorize_url(&s, "no-such-client", &[])).await;
    assert_shown_not_redirected(&p);
    for bad in [
        "https://evil.example/cb",
        "https://app.example/cb/",
        "https://app.example/cb?x=1",
        "https://app.example/cbx",
        "http://app.example/cb",
    ] {
        let p = web
            .get(&authorize_url(&s, &client_id, &[("redirect_uri", bad)]))
            .await;
        assert_shown_not_redirected(&p);
    }
    let p = web
        .get(&authorize_url(&s, &client_id, &[("redirect_uri", "")]))
        .await;
    assert_shown_not_redirected(&p);
    // A repeated parameter could mean two different clients or redirect URIs.
    let dup = format!(
        "{}&redirect_uri={}",
        authorize_url(&s, &client_id, &[]),
        "https%3A%2F%2Fevil.example%2Fcb"
    );
    assert_shown_not_redirected(&web.get(&dup).await);

    // Everything else goes back to the client with its state.
    let cases: [(&[(&str, &str)], &str); 10] = [
        (&[("code_challenge", "")], "invalid_request"),
        (&[("code_challenge_method", "")], "invalid_request"),
        (&[("code_challenge_method", "plain")], "invalid_request"),
        (
            &[("code_challenge_method", "plain"), ("code_challenge", VERIFIER)],
            "invalid_request",
        ),
        (&[("code_challenge", "not-a-sha256")], "invalid_request"),
        (&[("aud", "https://evil.example/fhir")], "invalid_request"),
        (&[("aud", "")], "invalid_request"),
        (&[("response_type", "token")], "unsupported_response_type"),
        (&[("scope", "system/*.cruds")], "invalid_scope"),
        (&[("launch", "no-such-launch")], "invalid_request"),
    ];
    for (changes, error) in cases {
        let p = web.get(&authorize_url(&s, &client_id, changes)).await;
        assert_client_error(&p, error);
    }
    assert!(web.cookie.is_none(), "no session for a refused request");

    // A good request: the login page, its own CSP, the session cookie with every attribute.
    let p = web.get(&authorize_url(&s, &client_id, &[])).await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert!(p.has_form("/oauth2/login"));
    assert!(p.body.contains("<label for=\"username\">") && p.body.contains("<label for=\"password\">"));
    assert!(p.body.contains("Chart &lt;App&gt;"), "client name escaped");
    let csp = p.csp();
    assert!(csp.starts_with("default-src 'none'; style-src 'sha256-"), "{csp}");
    assert!(csp.contains("form-action 'self' https://app.example;"), "{csp}");
    assert!(
        csp.contains("frame-ancestors 'none'") && !csp.contains("script"),
        "{csp}"
    );
    assert_eq!(p.headers["x-frame-options"], "DENY");
    assert_eq!(p.headers["cache-control"], "no-store");
    let cookie = p.set_cookie().expect("session cookie");
    let attrs: Vec<&str> = cookie.split(';').map(str::trim).collect();
    assert!(
        attrs[0].starts_with("__Host-ward_session=") && attrs[0].len() > 40,
        "{cookie}"
    );
    for a in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(attrs.contains(&a), "{cookie} lacks {a}");
    }
    assert!(!attrs.iter().any(|a| a.starts_with("Domain")), "{cookie}");

    // authorize-post: the same request as a form.
    let mut other = Web::new(&s);
    let form: Vec<(String, String)> = form_urlencoded::parse(authorize_query(&s, &client_id, &[]).as_bytes())
        .into_owned()
        .collect();
    let fields: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let p = other.post("/oauth2/authorize", &fields).await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert!(p.has_form("/oauth2/login"));

    // The API keeps its own policy, which forbids forms.
    let resp = s.client.get(format!("{}/metadata", s.fhir)).send().await.unwrap();
    assert_eq!(resp.headers()["content-security-policy"], API_CSP);
    s.stop().await;
}

async fn csrf_and_session_fixation(backend: Backend) {
    let s = TestServer::start(backend).await;
    let client_id = app(&s).await;
    user(&s, "carla", "clinician", Some("Practitioner/p1")).await;
    let mut web = Web::new(&s);
    let login = web.get(&authorize_url(&s, &client_id, &[])).await;
    let before = web.cookie.clone().unwrap();

    // Missing, wrong, or another session's token: refused, nothing signed in.
    let creds = [("username", "carla"), ("password", PASSWORD)];
    let p = web.post("/oauth2/login", &creds).await;
    assert_eq!(p.status, 403, "{}", p.body);
    let p = web
        .post(
            "/oauth2/login",
            &[("csrf", "AAAA"), ("username", "carla"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(p.status, 403);
    let mut attacker = Web::new(&s);
    let theirs = attacker.get(&authorize_url(&s, &client_id, &[])).await.csrf();
    let p = web
        .post(
            "/oauth2/login",
            &[("csrf", &theirs), ("username", "carla"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(p.status, 403);
    assert_eq!(web.cookie.as_deref(), Some(before.as_str()));

    // Fixation: signing in moves the session to a new id; the old id is worth nothing.
    let consent = sign_in(&mut web, &login, "carla").await;
    assert!(consent.has_form("/oauth2/consent"), "{}", consent.body);
    let after = web.cookie.clone().unwrap();
    assert_ne!(before, after);
    let mut fixated = Web::new(&s);
    fixated.cookie = Some(before);
    let p = fixated.get("/oauth2/authorize/continue").await;
    assert_eq!(p.status, 401, "{}", p.body);
    assert!(!p.has_form("/oauth2/consent"));

    // Consent without its token is refused; with it, a code comes back with the state.
    let p = web.post("/oauth2/consent", &[("decision", "approve")]).await;
    assert_eq!(p.status, 403);
    let p = web
        .submit(&consent, "/oauth2/consent", &[("decision", "approve")])
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    let params = redirect_params(&p);
    assert_eq!(param(&params, "state"), Some("st-&-1"));
    assert!(param(&params, "code").is_some_and(|c| c.len() >= 32));
    // The request is answered: approving again gives nothing.
    let p = web
        .submit(&consent, "/oauth2/consent", &[("decision", "approve")])
        .await;
    assert_eq!(p.status, 401);
    s.stop().await;
}

async fn sessions_expire_and_end_at_logout(backend: Backend) {
    let s = TestServer::start_with(backend, |c| {
        c.auth.session_idle_secs = 600;
        c.auth.session_max_secs = 1500;
    })
    .await;
    let client_id = app(&s).await;
    user(&s, "nina", "nurse", Some("Practitioner/n1")).await;
    let clock = s.config.clock.clone();

    // Idle: 601 s without a request ends the session.
    let mut web = Web::new(&s);
    let login = web.get(&authorize_url(&s, &client_id, &[])).await;
    sign_in(&mut web, &login, "nina").await;
    clock.advance(599);
    assert_eq!(web.get("/oauth2/authorize/continue").await.status, 200);
    clock.advance(601);
    let p = web.get("/oauth2/authorize/continue").await;
    assert_eq!(p.status, 401, "idle timeout");

    // Absolute: used every 500 s, it still ends 1500 s after sign-in.
    let mut web = Web::new(&s);
    let login = web.get(&authorize_url(&s, &client_id, &[])).await;
    sign_in(&mut web, &login, "nina").await;
    for _ in 0..3 {
        clock.advance(490);
        assert_eq!(web.get("/oauth2/authorize/continue").await.status, 200);
    }
    clock.advance(40);
    assert_eq!(
        web.get("/oauth2/authorize/continue").await.status,
        401,
        "absolute lifetime"
    );

    // Logout: needs the CSRF token, then the session is gone and the cookie cleared.
    let mut web = Web::new(&s);
    let login = web.get(&authorize_url(&s, &client_id, &[])).await;
    sign_in(&mut web, &login, "nina").await;
    assert_eq!(web.post("/oauth2/logout", &[]).await.status, 403);
    let page = web.get("/oauth2/logout").await;
    let p = web.submit(&page, "/oauth2/logout", &[]).await;
    assert_eq!(p.status, 200);
    assert!(p.set_cookie().unwrap().contains("Max-Age=0"));
    assert!(web.cookie.is_none());
    s.stop().await;
}

async fn login_lockout_is_generic_and_audited(backend: Backend) {
    let s = TestServer::start_with(backend, |c| {
        c.auth.login_burst = 8;
        c.auth.login_requests_per_minute_per_ip = 1;
    })
    .await;
    let client_id = app(&s).await;
    user(&s, "lena", "clinician", Some("Practitioner/l1")).await;
    let mut web = Web::new(&s);
    let login = web.get(&authorize_url(&s, &client_id, &[])).await;
    let wrong = [("username", "lena"), ("password", "Wrong-password-123")];
    let refused = web.submit(&login, "/oauth2/login", &wrong).await;
    assert_eq!(refused.status, 401);
    let message = |p: &Page| {
        let start = p.body.find("role=\"alert\"").unwrap();
        p.body[start..start + 120].to_owned()
    };
    let generic = message(&refused);
    for _ in 0..4 {
        let p = web.submit(&login, "/oauth2/login", &wrong).await;
        assert_eq!((p.status, message(&p)), (401, generic.clone()));
    }
    // Locked: even the right password gets the same answer; so does an unknown user.
    let p = web
        .submit(
            &login,
            "/oauth2/login",
            &[("username", "lena"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!((p.status, message(&p)), (401, generic.clone()));
    let p = web
        .submit(
            &login,
            "/oauth2/login",
            &[("username", "nobody"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!((p.status, message(&p)), (401, generic.clone()));
    // The per-IP limit of the form, apart from the account lock.
    let p = web.submit(&login, "/oauth2/login", &wrong).await;
    assert_eq!(p.status, 401);
    let p = web.submit(&login, "/oauth2/login", &wrong).await;
    assert_eq!(p.status, 429, "{}", p.body);
    assert!(p.headers.contains_key("retry-after"));

    // Each failure is in the audit trail, with why (which the person never saw).
    let t = s.admin_token().await;
    let bundle: Value = s
        .get("AuditEvent?action=login", &t)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let descs: Vec<String> = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["outcomeDesc"].as_str().unwrap_or("").to_owned())
        .collect();
    for code in [
        "login-wrong-password",
        "login-lockout",
        "login-locked",
        "login-unknown-user",
        "rate-limited",
    ] {
        assert!(descs.iter().any(|d| d.contains(code)), "{code} not in {descs:?}");
    }
    s.stop().await;
}

async fn step_up_and_privileged_scopes(backend: Backend) {
    let s = TestServer::start_with(backend, |c| {
        c.auth.privileged_scopes = vec!["user/*".into()];
    })
    .await;
    let client_id = app(&s).await;
    user(&s, "pia", "clinician", Some("Practitioner/p2")).await;
    let clock = s.config.clock.clone();
    let mut web = Web::new(&s);

    // Without a privileged scope a password is enough.
    let login = web
        .get(&authorize_url(&s, &client_id, &[("scope", "openid fhirUser")]))
        .await;
    let p = sign_in(&mut web, &login, "pia").await;
    assert!(p.has_form("/oauth2/consent"), "{}", p.body);

    // acr_values asking for MFA needs one too (here: enrollment first).
    let p = web
        .get(&authorize_url(
            &s,
            &client_id,
            &[("scope", "openid fhirUser"), ("acr_values", "urn:ward:acr:mfa")],
        ))
        .await;
    assert!(p.has_form("/oauth2/enroll"), "{}", p.body);

    // A privileged scope needs a second factor: enrollment first.
    let p = web.get(&authorize_url(&s, &client_id, &[])).await;
    assert!(p.has_form("/oauth2/enroll"), "{}", p.body);
    assert!(p.body.contains("data:image/svg+xml;base64,"));
    let secret = enrollment_secret(&p);
    let wrong = web.submit(&p, "/oauth2/enroll", &[("code", "000000")]).await;
    assert_eq!(wrong.status, 401);
    let secret_now = enrollment_secret(&wrong);
    assert_ne!(secret, secret_now);
    let codes = web
        .submit(&wrong, "/oauth2/enroll", &[("code", &totp(&s, &secret_now))])
        .await;
    assert_eq!(codes.status, 200, "{}", codes.body);
    assert_eq!(codes.body.matches("<li>").count(), 10, "ten recovery codes");
    let p = web.get("/oauth2/authorize/continue").await;
    assert!(p.has_form("/oauth2/consent"), "{}", p.body);

    // prompt=login: sign in again, and (enrolled) the second factor again.
    let p = web
        .get(&authorize_url(&s, &client_id, &[("prompt", "login")]))
        .await;
    assert!(p.has_form("/oauth2/login"), "{}", p.body);
    let p = sign_in(&mut web, &p, "pia").await;
    assert!(p.has_form("/oauth2/totp"), "{}", p.body);
    // The step used at enrollment is never accepted twice: the next one.
    clock.advance(31);
    let p = web
        .submit(&p, "/oauth2/totp", &[("code", &totp(&s, &secret_now))])
        .await;
    assert!(p.has_form("/oauth2/consent"), "{}", p.body);

    // max_age: a sign-in older than that is repeated; a recent one is not.
    let p = web
        .get(&authorize_url(&s, &client_id, &[("max_age", "3600")]))
        .await;
    assert!(p.has_form("/oauth2/consent"), "{}", p.body);
    clock.advance(120);
    let p = web
        .get(&authorize_url(&s, &client_id, &[("max_age", "60")]))
        .await;
    assert!(p.has_form("/oauth2/login"), "{}", p.body);
    // prompt=none cannot show that page.
    let p = web
        .get(&authorize_url(
            &s,
            &client_id,
            &[("max_age", "60"), ("prompt", "none")],
        ))
        .await;
    assert_client_error(&p, "login_required");
    s.stop().await;
}

async fn patient_context(backend: Backend) {
    let s = TestServer::start(backend).await;
    let client_id = app(&s).await;
    let t = s.admin_token().await;
    let pat = s.create(&t, &common::distinctive_patient("PC")).await;
    let pid = pat["id"].as_str().unwrap().to_owned();
    user(&s, "pat", "patient", Some(&format!("Patient/{pid}"))).await;
    let carl_id = user(&s, "carl", "clinician", Some("Practitioner/c1")).await;
    let scope = [("scope", "launch/patient patient/*.rs openid")];

    // A patient gets their own record, without a picker.
    let mut web = Web::new(&s);
    let login = web.get(&authorize_url(&s, &client_id, &scope)).await;
    let p = sign_in(&mut web, &login, "pat").await;
    assert!(p.has_form("/oauth2/consent"), "{}", p.body);
    assert!(!p.has_form("/oauth2/patient"));
    assert!(p.body.contains(&pid));
    assert!(!p.body.contains("Zyxwarfield"), "no PHI on the page");

    // A clinician chooses; an unknown id is refused.
    let mut web = Web::new(&s);
    let login = web.get(&authorize_url(&s, &client_id, &scope)).await;
    let p = sign_in(&mut web, &login, "carl").await;
    assert!(p.has_form("/oauth2/patient"), "{}", p.body);
    let bad = web
        .submit(&p, "/oauth2/patient", &[("patient", "no-such-patient")])
        .await;
    assert_eq!(bad.status, 400);
    let p = web.submit(&bad, "/oauth2/patient", &[("patient", &pid)]).await;
    assert!(p.has_form("/oauth2/consent"), "{}", p.body);
    assert!(p.body.contains(&pid));

    // EHR launch: single use, and only for the user it names.
    let launch = ward::launch::create(
        &s.config,
        ward::launch::NewLaunch {
            user: carl_id.clone(),
            patient: pid.clone(),
            encounter: None,
            client_id: None,
        },
    )
    .await
    .unwrap()
    .launch;
    let with_launch = [
        ("scope", "launch patient/*.rs openid"),
        ("launch", launch.as_str()),
    ];
    let mut web = Web::new(&s);
    let login = web.get(&authorize_url(&s, &client_id, &with_launch)).await;
    assert_eq!(login.status, 200, "{}", login.body);
    let p = sign_in(&mut web, &login, "carl").await;
    assert!(p.has_form("/oauth2/consent"), "{}", p.body);
    let again = Web::new(&s)
        .get(&authorize_url(&s, &client_id, &with_launch))
        .await;
    assert_client_error(&again, "invalid_request");
    s.stop().await;
}

on_both_backends!(
    authorize_request_checks,
    csrf_and_session_fixation,
    sessions_expire_and_end_at_logout,
    login_lockout_is_generic_and_audited,
    step_up_and_privileged_scopes,
    patient_context,
);
