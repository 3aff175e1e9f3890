//! The one place errors become HTTP responses: a FHIR `OperationOutcome` with a stable
//! code, a message with no internals or PHI, and the request id (SPEC SEC-3).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ward_fhir::bundle::BundleError;
use ward_fhir::outcome::{Issue, IssueType, operation_outcome};
use ward_fhir::validate::ValidationError;
use ward_store::StoreError;

use crate::request_id;

/// An error answer. `internal` is logged (without PHI) and never sent.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub issue: Issue,
    /// `WWW-Authenticate` value for 401 answers.
    pub challenge: Option<&'static str>,
    internal: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: IssueType, message: impl Into<String>) -> Self {
        ApiError {
            status,
            issue: Issue::error(code, message),
            challenge: None,
            internal: None,
        }
    }

    pub fn at(mut self, path: impl Into<String>) -> Self {
        self.issue = self.issue.at(path);
        self
    }

    /// Missing, malformed or unverifiable credentials.
    pub fn unauthorized(token_present: bool) -> Self {
        let mut e = ApiError::new(
            StatusCode::UNAUTHORIZED,
            IssueType::Login,
            "authentication required",
        );
        e.challenge = Some(if token_present {
            r#"Bearer realm="ward", error="invalid_token""#
        } else {
            r#"Bearer realm="ward""#
        });
        e
    }

    pub fn forbidden() -> Self {
        ApiError::new(
            StatusCode::FORBIDDEN,
            IssueType::Forbidden,
            "the access token's scopes do not allow this interaction",
        )
    }

    /// A write to a type Ward makes itself: the audit trail is read-only through the API.
    pub fn read_only_type() -> Self {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            IssueType::NotSupported,
            "AuditEvent is read-only: the audit trail is written by the server alone",
        )
    }

    pub fn not_found() -> Self {
        ApiError::new(StatusCode::NOT_FOUND, IssueType::NotFound, "resource not found")
    }

    pub fn bad_request(code: IssueType, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// A 500 whose detail goes only to the log.
    pub fn internal(detail: impl Into<String>) -> Self {
        let mut e = ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            IssueType::Exception,
            "internal server error",
        );
        e.internal = Some(detail.into());
        e
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        let mut err = ApiError::bad_request(e.code, e.message);
        if !e.path.is_empty() {
            err = err.at(e.path);
        }
        err
    }
}

impl From<BundleError> for ApiError {
    fn from(e: BundleError) -> Self {
        match e {
            BundleError::Invalid(e) => e.into(),
            BundleError::TooManyEntries { count, max } => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                IssueType::TooCostly,
                format!(
                    "the Bundle has {count} entries; at most {max} are accepted (server.max_bundle_entries)"
                ),
            )
            .at("Bundle.entry"),
            BundleError::ReadOnlyType { path } => ApiError::read_only_type().at(path),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::not_found(),
            StoreError::Gone { .. } => {
                ApiError::new(StatusCode::GONE, IssueType::Deleted, "resource has been deleted")
            }
            StoreError::VersionConflict { .. } => ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                IssueType::Conflict,
                "version conflict: the resource has changed since the given version",
            ),
            StoreError::MultipleMatches => ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                IssueType::Duplicate,
                "the conditional criteria match more than one resource",
            ),
            StoreError::Duplicate => ApiError::new(
                StatusCode::CONFLICT,
                IssueType::Duplicate,
                "resource already exists",
            ),
            StoreError::Search(e) => ApiError::bad_request(IssueType::TooCostly, e.to_string()),
            StoreError::UnsupportedCriteria(param) => ApiError::bad_request(
                IssueType::NotSupported,
                format!("search parameter '{param}' is not supported in this context"),
            ),
            StoreError::NotWritable => ApiError::read_only_type(),
            StoreError::Integrity { rtype, id, version } => {
                let mut err = ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    IssueType::Exception,
                    "stored data failed its integrity check",
                );
                err.internal = Some(format!("integrity failure {rtype}/{id}/_history/{version}"));
                err
            }
            other => ApiError::internal(format!("store: {other}")),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let rid = request_id::current();
        if let Some(detail) = &self.internal {
            tracing::error!(
                request_id = rid.as_deref().unwrap_or("-"),
                status = self.status.as_u16(),
                "{detail}"
            );
        }
        let code = self.issue.code.code();
        let mut resp = outcome_response(self.status, &[self.issue], rid.as_deref());
        resp.extensions_mut().insert(crate::audit::OutcomeCode(code));
        if let Some(challenge) = self.challenge {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        resp
    }
}

/// `application/fhir+json` content type for every FHIR body.
pub const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";

pub fn outcome_response(status: StatusCode, issues: &[Issue], request_id: Option<&str>) -> Response {
    let body = serde_json::to_vec(&operation_outcome(issues, request_id)).unwrap_or_default();
    (status, [(header::CONTENT_TYPE, FHIR_JSON)], body).into_response()
}
