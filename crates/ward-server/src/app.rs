//! The router and the request pipeline (SPEC §2), built the same way for the binary and
//! the tests.

use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower_http::catch_panic::CatchPanicLayer;

use crate::state::AppState;
use crate::{audit, fhir, framing, middleware, oauth, oauth_people, request_id, signin};

/// Longest time a request may take end to end.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub fn router(state: AppState) -> Router {
    let fhir = fhir::routes().merge(crate::audit_api::routes()).route(
        "/.well-known/smart-configuration",
        get(oauth::smart_configuration),
    );
    let routes = Router::new()
        .nest("/fhir", fhir)
        .route("/oauth2/token", post(oauth::token))
        .route("/oauth2/jwks", get(oauth::jwks))
        .merge(signin_routes())
        .route("/oauth2/introspect", post(oauth_people::introspect))
        .route("/oauth2/revoke", post(oauth_people::revoke))
        .route(
            "/oauth2/userinfo",
            get(oauth_people::userinfo).post(oauth_people::userinfo),
        )
        .route("/oauth2/smart-style.json", get(oauth_people::smart_style))
        .route(
            "/.well-known/openid-configuration",
            get(oauth::openid_configuration),
        )
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(middleware::not_found_fallback)
        .method_not_allowed_fallback(middleware::method_not_allowed)
        .with_state(state.clone());
    let server = &state.config.server;
    let pending = crate::response::Pending::new(
        Duration::from_secs(server.response_stall_secs),
        server.max_pending_response_bytes,
    );
    // Inside the audit layer, so their refusals are recorded like any other answer: framing
    // (400) and a large response refused for want of buffer (503).
    let audited = guarded(routes)
        .layer(axum::middleware::from_fn_with_state(
            pending,
            crate::response::chunked,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            framing::layer,
        ))
        .layer(axum::middleware::from_fn_with_state(state, audit::layer));
    outer(audited)
}

/// `/oauth2/authorize` and the sign-in pages, each with its audit action.
fn signin_routes() -> Router<AppState> {
    use audit::declare;
    Router::new()
        .route(
            "/oauth2/authorize",
            declare(
                "authorize",
                get(signin::authorize_get).post(signin::authorize_post),
            ),
        )
        .route(
            "/oauth2/authorize/continue",
            declare("authorize", get(signin::continue_get)),
        )
        .route("/oauth2/login", declare("login", post(signin::login_post)))
        .route(
            "/oauth2/password",
            declare("password-change", post(signin::password_post)),
        )
        .route("/oauth2/totp", declare("mfa-verify", post(signin::totp_post)))
        .route("/oauth2/enroll", declare("mfa-enroll", post(signin::enroll_post)))
        .route(
            "/oauth2/patient",
            declare("patient-select", post(signin::patient_post)),
        )
        .route("/oauth2/consent", declare("consent", post(signin::consent_post)))
        .route(
            "/oauth2/logout",
            declare("logout", get(signin::logout_get).post(signin::logout_post)),
        )
}

/// The innermost steps around the handlers: the request deadline and the panic guard, so a
/// timed-out or panicking request still gets an answer, which the audit layer records.
pub fn guarded(routes: Router) -> Router {
    routes
        .layer(axum::middleware::from_fn(deadline))
        .layer(CatchPanicLayer::custom(middleware::panic_response))
}

/// 408 after [`REQUEST_TIMEOUT`], except for a request whose write has started (its audit
/// intent is committed): cutting it off could leave a stored change answered as failed, so it
/// runs to its end, bounded by the database's own timeouts.
async fn deadline(req: Request, next: Next) -> Response {
    let audit = req.extensions().get::<audit::AuditContext>().cloned();
    let run = next.run(req);
    tokio::pin!(run);
    match tokio::time::timeout(REQUEST_TIMEOUT, &mut run).await {
        Ok(resp) => resp,
        Err(_) if audit.as_ref().is_some_and(audit::AuditContext::writing) => run.await,
        Err(_) => StatusCode::REQUEST_TIMEOUT.into_response(),
    }
}

/// The outermost steps: request id first, then security headers, then the access log.
/// (Layers run outside-in from the last one added.)
pub fn outer(routes: Router) -> Router {
    routes
        .layer(axum::middleware::from_fn(middleware::access_log))
        .layer(axum::middleware::from_fn(middleware::security_headers))
        .layer(axum::middleware::from_fn(request_id::layer))
}

async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

/// Ready when the store answers and the audit trail can commit.
async fn readyz(axum::extract::State(st): axum::extract::State<AppState>) -> impl IntoResponse {
    let store_ok = match st.store.ping().await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "store not reachable");
            false
        }
    };
    let audit_ok = audit::audit_ready(&st);
    let status = if store_ok && audit_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({
        "status": if status == StatusCode::OK { "ready" } else { "not ready" },
        "store": store_ok,
        "audit": audit_ok,
    });
    (status, axum::Json(body))
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn a_panicking_handler_gives_a_generic_500_and_the_service_goes_on() {
        let app = outer(guarded(
            Router::new()
                .route(
                    "/boom",
                    get(|| async {
                        if true {
                            panic!("secret patient Zyxwarfield");
                        }
                        "unreachable"
                    }),
                )
                .route("/ok", get(|| async { "fine" })),
        ));
        let resp = app
            .clone()
            .oneshot(Request::get("/boom").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(resp.headers().contains_key("x-request-id"));
        assert_eq!(resp.headers()["cache-control"], "no-store");
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("OperationOutcome"), "{text}");
        assert!(
            !text.contains("Zyxwarfield") && !text.contains("panicked at"),
            "{text}"
        );
        let resp = app
            .oneshot(Request::get("/ok").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }
}
