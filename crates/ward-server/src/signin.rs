//! `/oauth2/authorize` and the sign-in pages (SPEC AC-5, AC-6, UI-1).
//!
//! A checked request ([`authorize::Pending`]) is kept in the browser's session; each page
//! posts back to its own endpoint, which answers with a redirect to
//! `/oauth2/authorize/continue`, where [`next_step`] decides what is still missing:
//! sign-in (again, for `prompt=login` or `max_age`), a new password, TOTP enrollment, the
//! second factor, a patient, consent. Consent issues the code. GETs never change what the
//! session proves; every POST needs the session's CSRF token.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;

use crate::accounts::{self, AccountError, Person};
use crate::audit::{AuditContext, OutcomeCode};
use crate::authorize::{self, ACR_MFA, ACR_PASSWORD, ClientError, Params, Pending, Refusal};
use crate::pages::{self, alert, esc, field, form};
use crate::ratelimit::{Decision, ip_key};
use crate::serve::ClientAddr;
use crate::session::{self, Session};
use crate::state::AppState;

/// An authorization request or a page's form is a few hundred bytes.
const MAX_FORM_BYTES: usize = 16 * 1024;
const CONTINUE: &str = "/oauth2/authorize/continue";

/// The generic answer to every failed sign-in (SPEC AC-1: unknown user, wrong password,
/// locked or disabled account look the same).
const LOGIN_REFUSED: &str = "Sign-in failed. Check your username and password; after repeated failures the account is locked for a while.";

// ----- responses ---------------------------------------------------------------------------

fn with_outcome(mut resp: Response, code: &'static str) -> Response {
    resp.extensions_mut().insert(OutcomeCode(code));
    resp
}

/// A page saying why the request cannot go on; nothing is sent to any application.
fn problem(status: StatusCode, message: &str, code: &'static str) -> Response {
    let body = format!("<p role=\"alert\">{}</p>", esc(message));
    with_outcome(
        pages::render(status, "Sign-in cannot continue", &body, None),
        code,
    )
}

fn session_ended() -> Response {
    problem(
        StatusCode::UNAUTHORIZED,
        "Your sign-in session has ended or was never started. Return to the application and start again.",
        "no-session",
    )
}

fn internal() -> Response {
    problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "Something went wrong. Try again later.",
        "internal",
    )
}

fn see_other(location: &str) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

fn to_client(err: &ClientError) -> Response {
    with_outcome(see_other(&err.location()), err.error)
}

/// Adds the session cookie to a response when the session id is new.
fn with_cookie(mut resp: Response, session: &Session) -> Response {
    if let Some(c) = session.set_cookie() {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    resp
}

// ----- /oauth2/authorize -------------------------------------------------------------------

pub async fn authorize_get(
    State(st): State<AppState>,
    audit: AuditContext,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let query = uri.query().unwrap_or("");
    authorize(&st, &audit, &headers, query.as_bytes()).await
}

/// `authorize-post`: the same parameters as a form.
pub async fn authorize_post(
    State(st): State<AppState>,
    audit: AuditContext,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match read_form_bytes(&headers, body).await {
        Ok(bytes) => authorize(&st, &audit, &headers, &bytes).await,
        Err(resp) => resp,
    }
}

async fn authorize(st: &AppState, audit: &AuditContext, headers: &HeaderMap, raw: &[u8]) -> Response {
    let params = match Params::parse(raw) {
        Ok(p) => p,
        Err(_) => {
            return problem(
                StatusCode::BAD_REQUEST,
                "The request repeats a parameter.",
                "invalid_request",
            );
        }
    };
    if let Some(c) = params.get("client_id") {
        audit.set_claimed_client(c);
    }
    let now = st.clock.now();
    let pending = match authorize::check(st, &params, now).await {
        Ok(p) => p,
        Err(Refusal::Page(message)) => return problem(StatusCode::BAD_REQUEST, message, "invalid_client"),
        Err(Refusal::Redirect(e)) => return to_client(&e),
    };
    let session = match Session::load(st, headers).await {
        Ok(Some(s)) => s,
        Ok(None) => match Session::create(st).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "session not created");
                return internal();
            }
        },
        Err(e) => {
            tracing::error!(error = %e, "session lookup failed");
            return internal();
        }
    };
    proceed(st, audit, session, pending).await
}

/// Stores `pending` in the session and shows what comes next.
async fn proceed(
    st: &AppState,
    audit: &AuditContext,
    mut session: Session,
    mut pending: Pending,
) -> Response {
    if let Some(t) = session.rec.auth_time
        && pending.too_old(t, pending.received)
    {
        pending.reauth = true;
    }
    audit.set_actor(&pending.client_id, session.rec.user_id.as_deref(), &pending.scope);
    match serde_json::to_string(&pending) {
        Ok(json) => session.rec.pending = Some(json),
        Err(_) => return internal(),
    }
    if let Err(e) = session.save(st).await {
        tracing::error!(error = %e, "session not saved");
        return internal();
    }
    let resp = next_step(st, audit, &mut session, pending, None).await;
    with_cookie(resp, &session)
}

/// `GET /oauth2/authorize/continue`: the next page of the request in the session.
pub async fn continue_get(State(st): State<AppState>, audit: AuditContext, headers: HeaderMap) -> Response {
    let (mut session, pending) = match current(&st, &headers).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    audit.set_actor(&pending.client_id, session.rec.user_id.as_deref(), &pending.scope);
    let resp = next_step(&st, &audit, &mut session, pending, None).await;
    with_cookie(resp, &session)
}

/// The live session and its pending request, or the page saying there is none.
async fn current(st: &AppState, headers: &HeaderMap) -> Result<(Session, Pending), Response> {
    let session = match Session::load(st, headers).await {
        Ok(Some(s)) => s,
        Ok(None) => return Err(session_ended()),
        Err(e) => {
            tracing::error!(error = %e, "session lookup failed");
            return Err(internal());
        }
    };
    let pending = session
        .rec
        .pending
        .as_deref()
        .and_then(|p| serde_json::from_str::<Pending>(p).ok());
    match pending {
        Some(p) => Ok((session, p)),
        None => Err(session_ended()),
    }
}

/// Whether the requested scopes need a second factor (`auth.privileged_scopes`).
fn privileged(st: &AppState, pending: &Pending) -> bool {
    let marked = &st.config.auth.privileged_scopes;
    pending.scopes().any(|s| {
        marked.iter().any(|m| match m.strip_suffix('*') {
            Some(prefix) => s.starts_with(prefix),
            None => s == m,
        })
    })
}

/// What the request still needs, as a page, or the end of the flow for the client.
async fn next_step(
    st: &AppState,
    audit: &AuditContext,
    session: &mut Session,
    mut pending: Pending,
    error: Option<&str>,
) -> Response {
    let csrf = session.csrf(st);
    let origin = pending.redirect_origin();
    let origin = origin.as_deref();
    let person = match &session.rec.user_id {
        None => None,
        Some(uid) => match accounts::get(&st.store, uid).await {
            Ok(p) => p,
            Err(_) => return internal(),
        },
    };
    let Some(person) = person.filter(|_| !pending.reauth) else {
        if pending.prompt_none {
            return to_client(&pending.error("login_required", "the user must sign in"));
        }
        return login_page(&csrf, &pending, error, origin, StatusCode::OK);
    };
    audit.set_actor(&pending.client_id, Some(&person.user_id), &pending.scope);
    let interaction = |p: &Pending| to_client(&p.error("interaction_required", "the user must interact"));
    if person.must_change_password {
        if pending.prompt_none {
            return interaction(&pending);
        }
        return password_page(&csrf, error, origin, StatusCode::OK);
    }
    let mfa_needed = person.mfa_required || privileged(st, &pending) || pending.mfa_asked;
    if mfa_needed && !person.mfa_enrolled {
        if pending.prompt_none {
            return interaction(&pending);
        }
        return enroll_page(st, &csrf, &person, error, origin, StatusCode::OK).await;
    }
    if (mfa_needed || person.mfa_enrolled) && !session.rec.amr.iter().any(|m| m == "otp") {
        if pending.prompt_none {
            return interaction(&pending);
        }
        return totp_page(&csrf, error, origin, StatusCode::OK);
    }
    if let Some(launch) = &pending.launch
        && launch.user_id.as_ref().is_some_and(|u| *u != person.user_id)
    {
        return to_client(&pending.error("access_denied", "the launch belongs to another user"));
    }
    // Patient context: the launch's, the person's own record, or a choice.
    let own = person.own_patient().map(str::to_owned);
    if let (Some(own), Some(launch_patient)) =
        (&own, pending.launch.as_ref().and_then(|l| l.patient.as_ref()))
        && own != launch_patient
    {
        return to_client(&pending.error("access_denied", "the launch names another patient"));
    }
    let launch_patient = pending.launch.as_ref().and_then(|l| l.patient.clone());
    if pending.wants("launch/patient") && launch_patient.is_none() && pending.patient.is_none() {
        if let Some(own) = own {
            pending.patient = Some(own);
            if save_pending(st, session, &pending).await.is_err() {
                return internal();
            }
        } else if person.may_pick_patient() {
            if pending.prompt_none {
                return interaction(&pending);
            }
            return patient_page(&csrf, error, origin, StatusCode::OK);
        } else {
            return to_client(&pending.error("access_denied", "no patient can be chosen for this user"));
        }
    }
    if pending.prompt_none {
        return to_client(&pending.error("consent_required", "the user must approve the request"));
    }
    consent_page(&csrf, &pending, &person, origin)
}

async fn save_pending(st: &AppState, session: &mut Session, pending: &Pending) -> Result<(), ()> {
    session.rec.pending = Some(serde_json::to_string(pending).map_err(|_| ())?);
    session
        .save(st)
        .await
        .map_err(|e| tracing::error!(error = %e, "session not saved"))
}

// ----- pages -------------------------------------------------------------------------------

fn login_page(
    csrf: &str,
    pending: &Pending,
    error: Option<&str>,
    origin: Option<&str>,
    status: StatusCode,
) -> Response {
    let body = format!(
        "<p>Sign in to let <strong>{}</strong> use Ward.</p>\n{}{}",
        esc(&pending.client_name),
        alert(error),
        form(
            "/oauth2/login",
            csrf,
            &format!(
                "{}\n{}",
                field("username", "Username", "text", "username", ""),
                field("password", "Password", "password", "current-password", "")
            ),
            "Sign in"
        )
    );
    pages::render(status, "Sign in", &body, origin)
}

fn password_page(csrf: &str, error: Option<&str>, origin: Option<&str>, status: StatusCode) -> Response {
    let body = format!(
        "<p>Your password was set by an administrator or has expired. Choose a new one: at least 12 characters, not a common password.</p>\n{}{}",
        alert(error),
        form(
            "/oauth2/password",
            csrf,
            &format!(
                "{}\n{}\n{}",
                field("current", "Current password", "password", "current-password", ""),
                field(
                    "new",
                    "New password",
                    "password",
                    "new-password",
                    " minlength=\"12\""
                ),
                field(
                    "confirm",
                    "New password again",
                    "password",
                    "new-password",
                    " minlength=\"12\""
                )
            ),
            "Change password"
        )
    );
    pages::render(status, "Change your password", &body, origin)
}

fn totp_page(csrf: &str, error: Option<&str>, origin: Option<&str>, status: StatusCode) -> Response {
    let body = format!(
        "<p>Enter the 6-digit code from your authenticator app, or one of your recovery codes.</p>\n{}{}",
        alert(error),
        form(
            "/oauth2/totp",
            csrf,
            &field("code", "Code", "text", "one-time-code", " inputmode=\"numeric\""),
            "Verify"
        )
    );
    pages::render(status, "Second factor", &body, origin)
}

async fn enroll_page(
    st: &AppState,
    csrf: &str,
    person: &Person,
    error: Option<&str>,
    origin: Option<&str>,
    status: StatusCode,
) -> Response {
    let enrollment = match accounts::start_enrollment(&st.store, &person.user_id).await {
        Ok(e) => e,
        Err(_) => return internal(),
    };
    let qr = base64::engine::general_purpose::STANDARD.encode(enrollment.qr_svg.as_bytes());
    let body = format!(
        "<p>Your account needs a second factor. Scan this code with an authenticator app \
         (or type the key below), then enter the 6-digit code it shows.</p>\n\
         <p><img class=\"qr\" src=\"data:image/svg+xml;base64,{qr}\" alt=\"QR code holding your authenticator key\"></p>\n\
         <p>Key for manual entry: <span class=\"secret\" id=\"totp-secret\">{}</span></p>\n{}{}",
        esc(&enrollment.secret_base32),
        alert(error),
        form(
            "/oauth2/enroll",
            csrf,
            &field(
                "code",
                "Code from the app",
                "text",
                "one-time-code",
                " inputmode=\"numeric\""
            ),
            "Enable"
        )
    );
    pages::render(status, "Set up your authenticator", &body, origin)
}

fn patient_page(csrf: &str, error: Option<&str>, origin: Option<&str>, status: StatusCode) -> Response {
    let body = format!(
        "<p>The application asks which patient to work with. Enter the patient's record id.</p>\n{}{}",
        alert(error),
        form(
            "/oauth2/patient",
            csrf,
            &field("patient", "Patient record id", "text", "off", ""),
            "Choose"
        )
    );
    pages::render(status, "Choose a patient", &body, origin)
}

fn consent_page(csrf: &str, pending: &Pending, person: &Person, origin: Option<&str>) -> Response {
    let items: String = pending
        .scopes()
        .map(|s| {
            format!(
                "<li>{} <small>({})</small></li>\n",
                esc(&pages::describe_scope(s)),
                esc(s)
            )
        })
        .collect();
    let patient = pending
        .patient
        .as_ref()
        .or(pending.launch.as_ref().and_then(|l| l.patient.as_ref()))
        .map(|p| format!("<p>Patient record: <strong>{}</strong></p>\n", esc(p)))
        .unwrap_or_default();
    let approve = form(
        "/oauth2/consent",
        csrf,
        "<input type=\"hidden\" name=\"decision\" value=\"approve\">",
        "Allow",
    );
    let deny = form(
        "/oauth2/consent",
        csrf,
        "<input type=\"hidden\" name=\"decision\" value=\"deny\">",
        "Deny",
    );
    let body = format!(
        "<p>Signed in as <strong>{}</strong>.</p>\n<p><strong>{}</strong> asks to:</p>\n<ul>\n{items}</ul>\n{patient}{approve}\n{deny}",
        esc(&person.username),
        esc(&pending.client_name),
    );
    pages::render(StatusCode::OK, "Allow access?", &body, origin)
}

// ----- form posts --------------------------------------------------------------------------

async fn read_form_bytes(headers: &HeaderMap, body: Body) -> Result<Vec<u8>, Response> {
    let form_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"));
    if !form_type {
        return Err(problem(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "The form was not sent as a form.",
            "invalid_request",
        ));
    }
    match crate::framing::read_body(body, MAX_FORM_BYTES).await {
        Ok(b) => Ok(b.to_vec()),
        Err(_) => Err(problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            "The form is too large.",
            "invalid_request",
        )),
    }
}

/// A page's post: the form, the live session with its request, and the CSRF check.
struct Post {
    form: Params,
    session: Session,
    pending: Pending,
}

async fn post(
    st: &AppState,
    audit: &AuditContext,
    headers: &HeaderMap,
    body: Body,
) -> Result<Post, Response> {
    let bytes = read_form_bytes(headers, body).await?;
    let form = Params::parse(&bytes).map_err(|_| {
        problem(
            StatusCode::BAD_REQUEST,
            "The form repeats a field.",
            "invalid_request",
        )
    })?;
    let (session, pending) = current(st, headers).await?;
    audit.set_actor(&pending.client_id, session.rec.user_id.as_deref(), &pending.scope);
    if !session.csrf_ok(st, form.get("csrf")) {
        tracing::info!("form post without a valid CSRF token refused");
        return Err(problem(
            StatusCode::FORBIDDEN,
            "This form has expired. Go back, reload the page and try again.",
            "csrf",
        ));
    }
    Ok(Post {
        form,
        session,
        pending,
    })
}

fn back_to_continue(session: &Session) -> Response {
    with_cookie(see_other(CONTINUE), session)
}

pub async fn login_post(
    State(st): State<AppState>,
    audit: AuditContext,
    peer: Option<axum::Extension<ClientAddr>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Some(axum::Extension(ClientAddr(addr))) = peer
        && let Decision::Limited { retry_after, .. } = st.login_ip_limits.check(&ip_key(addr.ip()))
    {
        let mut resp = problem(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many sign-in attempts from your network. Wait a minute and try again.",
            "rate-limited",
        );
        resp.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(retry_after.as_secs().max(1)),
        );
        return resp;
    }
    let Post {
        form,
        mut session,
        pending,
    } = match post(&st, &audit, &headers, body).await {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let csrf = session.csrf(&st);
    let origin = pending.redirect_origin();
    let (username, password) = (
        form.get("username").unwrap_or(""),
        form.get("password").unwrap_or(""),
    );
    let now = st.clock.now();
    match accounts::login(&st.store, username, password, now).await {
        Ok(person) => {
            // A new id for the signed-in session: no fixation.
            session.rec.user_id = Some(person.user_id.clone());
            session.rec.auth_time = Some(now.unix_timestamp());
            session.rec.amr = vec!["pwd".into()];
            session.rec.acr = Some(ACR_PASSWORD.into());
            let mut pending = pending;
            pending.reauth = false;
            match serde_json::to_string(&pending) {
                Ok(json) => session.rec.pending = Some(json),
                Err(_) => return internal(),
            }
            if let Err(e) = session.rotate(&st).await {
                tracing::error!(error = %e, "session not rotated");
                return internal();
            }
            audit.set_actor(&pending.client_id, Some(&person.user_id), &pending.scope);
            with_outcome(back_to_continue(&session), "login")
        }
        Err(AccountError::Refused { audit: why, user_id }) => {
            if let Some(uid) = &user_id {
                audit.set_user(uid);
            }
            let page = login_page(
                &csrf,
                &pending,
                Some(LOGIN_REFUSED),
                origin.as_deref(),
                StatusCode::UNAUTHORIZED,
            );
            with_outcome(page, login_outcome(why))
        }
        Err(AccountError::Unacceptable(_)) => internal(),
        Err(AccountError::Internal) => internal(),
    }
}

/// The audit outcome code of a refused sign-in (never shown to the person).
fn login_outcome(why: &str) -> &'static str {
    match why {
        "lockout" => "login-lockout",
        "locked" => "login-locked",
        "disabled-user" => "login-disabled-user",
        "unknown-user" => "login-unknown-user",
        _ => "login-wrong-password",
    }
}

fn mfa_outcome(why: &str) -> &'static str {
    match why {
        "lockout" => "mfa-lockout",
        "locked" => "mfa-locked",
        _ => "mfa-refused",
    }
}

/// The signed-in person of a post, or the login page again.
async fn signed_in(st: &AppState, p: &Post) -> Result<Person, Response> {
    let uid = p
        .session
        .rec
        .user_id
        .as_deref()
        .ok_or_else(|| back_to_continue(&p.session))?;
    match accounts::get(&st.store, uid).await {
        Ok(Some(person)) => Ok(person),
        Ok(None) => Err(session_ended()),
        Err(_) => Err(internal()),
    }
}

pub async fn password_post(
    State(st): State<AppState>,
    audit: AuditContext,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let p = match post(&st, &audit, &headers, body).await {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let person = match signed_in(&st, &p).await {
        Ok(person) => person,
        Err(resp) => return resp,
    };
    let csrf = p.session.csrf(&st);
    let origin = p.pending.redirect_origin();
    let (current, new, confirm) = (
        p.form.get("current").unwrap_or(""),
        p.form.get("new").unwrap_or(""),
        p.form.get("confirm").unwrap_or(""),
    );
    if new != confirm {
        let msg = Some("The new passwords do not match.");
        return with_outcome(
            password_page(&csrf, msg, origin.as_deref(), StatusCode::BAD_REQUEST),
            "password-refused",
        );
    }
    match accounts::change_password(&st.store, &person.user_id, current, new, st.clock.now()).await {
        Ok(()) => with_outcome(back_to_continue(&p.session), "password-changed"),
        Err(AccountError::Unacceptable(msg)) => with_outcome(
            password_page(&csrf, Some(&msg), origin.as_deref(), StatusCode::BAD_REQUEST),
            "password-refused",
        ),
        Err(AccountError::Refused { .. }) => with_outcome(
            password_page(
                &csrf,
                Some("The current password is not correct."),
                origin.as_deref(),
                StatusCode::UNAUTHORIZED,
            ),
            "password-refused",
        ),
        Err(AccountError::Internal) => internal(),
    }
}

/// Records a second factor in the session.
fn add_second_factor(session: &mut Session, method: &str) {
    for m in [method, "otp", "mfa"] {
        if !session.rec.amr.iter().any(|a| a == m) {
            session.rec.amr.push(m.to_owned());
        }
    }
    session.rec.acr = Some(ACR_MFA.into());
}

pub async fn totp_post(
    State(st): State<AppState>,
    audit: AuditContext,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut p = match post(&st, &audit, &headers, body).await {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let person = match signed_in(&st, &p).await {
        Ok(person) => person,
        Err(resp) => return resp,
    };
    let code = p.form.get("code").unwrap_or("").trim().to_owned();
    match accounts::second_factor(&st.store, &person.user_id, &code, st.clock.now()).await {
        Ok(method) => {
            add_second_factor(&mut p.session, method);
            if let Err(e) = p.session.save(&st).await {
                tracing::error!(error = %e, "session not saved");
                return internal();
            }
            with_outcome(back_to_continue(&p.session), "mfa-verified")
        }
        Err(AccountError::Refused { audit: why, .. }) => {
            let csrf = p.session.csrf(&st);
            let msg = Some("The code was not accepted. Wait for a new code and try again.");
            with_outcome(
                totp_page(
                    &csrf,
                    msg,
                    p.pending.redirect_origin().as_deref(),
                    StatusCode::UNAUTHORIZED,
                ),
                mfa_outcome(why),
            )
        }
        Err(_) => internal(),
    }
}

pub async fn enroll_post(
    State(st): State<AppState>,
    audit: AuditContext,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut p = match post(&st, &audit, &headers, body).await {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let person = match signed_in(&st, &p).await {
        Ok(person) => person,
        Err(resp) => return resp,
    };
    let origin = p.pending.redirect_origin();
    let code = p.form.get("code").unwrap_or("").trim().to_owned();
    match accounts::finish_enrollment(&st.store, &person.user_id, &code, st.clock.now()).await {
        Ok(codes) => {
            add_second_factor(&mut p.session, "otp");
            if let Err(e) = p.session.save(&st).await {
                tracing::error!(error = %e, "session not saved");
                return internal();
            }
            let list: String = codes.iter().map(|c| format!("<li>{}</li>\n", esc(c))).collect();
            let body = format!(
                "<p>Your authenticator is set up. These recovery codes each work once if you lose \
                 it. Write them down now: they are not shown again.</p>\n\
                 <ul class=\"codes\" id=\"recovery-codes\">\n{list}</ul>\n\
                 <p><a href=\"{CONTINUE}\">Continue</a></p>"
            );
            with_outcome(
                pages::render(StatusCode::OK, "Recovery codes", &body, origin.as_deref()),
                "mfa-enrolled",
            )
        }
        Err(AccountError::Internal) => internal(),
        Err(_) => {
            let csrf = p.session.csrf(&st);
            let msg = Some("The code was not accepted. Scan the new code below and try again.");
            with_outcome(
                enroll_page(
                    &st,
                    &csrf,
                    &person,
                    msg,
                    origin.as_deref(),
                    StatusCode::UNAUTHORIZED,
                )
                .await,
                "mfa-refused",
            )
        }
    }
}

pub async fn patient_post(
    State(st): State<AppState>,
    audit: AuditContext,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Post {
        form,
        mut session,
        mut pending,
    } = match post(&st, &audit, &headers, body).await {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let person = match session.rec.user_id.as_deref() {
        Some(uid) => match accounts::get(&st.store, uid).await {
            Ok(Some(p)) => p,
            Ok(None) => return session_ended(),
            Err(_) => return internal(),
        },
        None => return back_to_continue(&session),
    };
    if !person.may_pick_patient() || !pending.wants("launch/patient") {
        return problem(
            StatusCode::FORBIDDEN,
            "You cannot choose a patient here.",
            "forbidden",
        );
    }
    let id = form.get("patient").unwrap_or("").trim();
    let exists = ward_fhir::id::is_valid_id(id) && st.store.read_json("Patient", id).await.is_ok();
    if !exists {
        let csrf = session.csrf(&st);
        let msg = Some("There is no patient record with that id.");
        return with_outcome(
            patient_page(
                &csrf,
                msg,
                pending.redirect_origin().as_deref(),
                StatusCode::BAD_REQUEST,
            ),
            "no-such-patient",
        );
    }
    audit.set_resource("Patient", Some(id), None);
    audit.add_patients([id.to_owned()]);
    pending.patient = Some(id.to_owned());
    if save_pending(&st, &mut session, &pending).await.is_err() {
        return internal();
    }
    back_to_continue(&session)
}

pub async fn consent_post(
    State(st): State<AppState>,
    audit: AuditContext,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Post {
        form,
        mut session,
        pending,
    } = match post(&st, &audit, &headers, body).await {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    if form.get("decision") != Some("approve") {
        if clear_pending(&st, &mut session).await.is_err() {
            return internal();
        }
        return to_client(&pending.error("access_denied", "the user denied the request"));
    }
    // Everything the flow asks for must still hold (the post may come from an old page).
    let ready =
        session.rec.user_id.is_some() && is_consent_step(&st, &audit, &mut session, pending.clone()).await;
    // The request is answered either way: a second post finds nothing to approve.
    if clear_pending(&st, &mut session).await.is_err() {
        return internal();
    }
    let Some(user_id) = session.rec.user_id.clone().filter(|_| ready) else {
        return problem(
            StatusCode::FORBIDDEN,
            "Sign-in is not complete. Return to the application and start again.",
            "incomplete",
        );
    };
    let launch = pending.launch.clone().unwrap_or_default();
    let grant = accounts::Grant {
        client_id: pending.client_id.clone(),
        user_id: user_id.clone(),
        redirect_uri: pending.redirect_uri.clone(),
        scope: pending.scope.clone(),
        code_challenge: pending.code_challenge.clone(),
        nonce: pending.nonce.clone(),
        patient: launch.patient.clone().or(pending.patient.clone()),
        encounter: launch.encounter.clone(),
        auth_time: session.rec.auth_time.unwrap_or_default(),
        amr: session.rec.amr.clone(),
        acr: session.rec.acr.clone(),
        // Inside an EHR the EHR shows the patient; a standalone app must.
        need_patient_banner: pending.launch.is_none(),
        smart_style_url: None,
    };
    audit.set_actor(&pending.client_id, Some(&user_id), &pending.scope);
    if let Some(p) = &grant.patient {
        audit.add_patients([p.clone()]);
    }
    match accounts::issue_code(&st.store, grant, st.clock.now()).await {
        Ok(code) => {
            let mut q = form_urlencoded::Serializer::new(String::new());
            q.append_pair("code", &code);
            if let Some(s) = &pending.state {
                q.append_pair("state", s);
            }
            q.append_pair("iss", st.tokens.issuer());
            with_outcome(
                see_other(&authorize::with_query(&pending.redirect_uri, &q.finish())),
                "code-issued",
            )
        }
        Err(_) => to_client(&pending.error("server_error", "the code could not be issued")),
    }
}

async fn clear_pending(st: &AppState, session: &mut Session) -> Result<(), ()> {
    session.rec.pending = None;
    session
        .save(st)
        .await
        .map_err(|e| tracing::error!(error = %e, "session not saved"))
}

/// Whether the flow has reached consent for `pending` (every earlier step done).
async fn is_consent_step(
    st: &AppState,
    audit: &AuditContext,
    session: &mut Session,
    pending: Pending,
) -> bool {
    let mut probe = pending;
    probe.prompt_none = true;
    let resp = next_step(st, audit, session, probe, None).await;
    resp.extensions()
        .get::<OutcomeCode>()
        .is_some_and(|c| c.0 == "consent_required")
}

// ----- logout ------------------------------------------------------------------------------

pub async fn logout_get(State(st): State<AppState>, headers: HeaderMap) -> Response {
    match Session::load(&st, &headers).await {
        Ok(Some(session)) => {
            let body = form("/oauth2/logout", &session.csrf(&st), "", "Sign out");
            pages::render(StatusCode::OK, "Sign out", &body, None)
        }
        Ok(None) => pages::render(StatusCode::OK, "Sign out", "<p>You are not signed in.</p>", None),
        Err(_) => internal(),
    }
}

pub async fn logout_post(
    State(st): State<AppState>,
    audit: AuditContext,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let bytes = match read_form_bytes(&headers, body).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let Ok(form) = Params::parse(&bytes) else {
        return problem(
            StatusCode::BAD_REQUEST,
            "The form repeats a field.",
            "invalid_request",
        );
    };
    let session = match Session::load(&st, &headers).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            return pages::render(
                StatusCode::OK,
                "Signed out",
                "<p>You are not signed in.</p>",
                None,
            );
        }
        Err(_) => return internal(),
    };
    if !session.csrf_ok(&st, form.get("csrf")) {
        return problem(
            StatusCode::FORBIDDEN,
            "This form has expired. Go back, reload the page and try again.",
            "csrf",
        );
    }
    if let Some(uid) = &session.rec.user_id {
        audit.set_user(uid);
    }
    if let Err(e) = session.end(&st).await {
        tracing::error!(error = %e, "session not ended");
        return internal();
    }
    let mut resp = with_outcome(
        pages::render(StatusCode::OK, "Signed out", "<p>You are signed out.</p>", None),
        "logout",
    );
    resp.headers_mut()
        .append(header::SET_COOKIE, session::clear_cookie());
    resp
}
