//! `OperationOutcome` construction.

use serde_json::{Map, Value, json};

/// Issue severity (FHIR `issue-severity`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Fatal,
    Error,
    Warning,
    Information,
}

impl Severity {
    /// The FHIR code, e.g. `"error"`.
    pub fn code(self) -> &'static str {
        match self {
            Severity::Fatal => "fatal",
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Information => "information",
        }
    }
}

/// FHIR `issue-type` codes used by Ward.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IssueType {
    Invalid,
    Structure,
    Required,
    Value,
    Invariant,
    TooLong,
    Security,
    Login,
    Unknown,
    Expired,
    Forbidden,
    Suppressed,
    Processing,
    NotSupported,
    Duplicate,
    MultipleMatches,
    NotFound,
    Deleted,
    CodeInvalid,
    Extension,
    TooCostly,
    BusinessRule,
    Conflict,
    Transient,
    LockError,
    NoStore,
    Exception,
    Timeout,
    Incomplete,
    Throttled,
    Informational,
}

impl IssueType {
    /// The FHIR code, e.g. `"not-found"`.
    pub fn code(self) -> &'static str {
        match self {
            IssueType::Invalid => "invalid",
            IssueType::Structure => "structure",
            IssueType::Required => "required",
            IssueType::Value => "value",
            IssueType::Invariant => "invariant",
            IssueType::TooLong => "too-long",
            IssueType::Security => "security",
            IssueType::Login => "login",
            IssueType::Unknown => "unknown",
            IssueType::Expired => "expired",
            IssueType::Forbidden => "forbidden",
            IssueType::Suppressed => "suppressed",
            IssueType::Processing => "processing",
            IssueType::NotSupported => "not-supported",
            IssueType::Duplicate => "duplicate",
            IssueType::MultipleMatches => "multiple-matches",
            IssueType::NotFound => "not-found",
            IssueType::Deleted => "deleted",
            IssueType::CodeInvalid => "code-invalid",
            IssueType::Extension => "extension",
            IssueType::TooCostly => "too-costly",
            IssueType::BusinessRule => "business-rule",
            IssueType::Conflict => "conflict",
            IssueType::Transient => "transient",
            IssueType::LockError => "lock-error",
            IssueType::NoStore => "no-store",
            IssueType::Exception => "exception",
            IssueType::Timeout => "timeout",
            IssueType::Incomplete => "incomplete",
            IssueType::Throttled => "throttled",
            IssueType::Informational => "informational",
        }
    }
}

/// One `OperationOutcome.issue`.
#[derive(Clone, Debug)]
pub struct Issue {
    pub severity: Severity,
    pub code: IssueType,
    pub diagnostics: String,
    pub expression: Option<String>,
}

impl Issue {
    /// An issue with severity `error`.
    pub fn error(code: IssueType, diagnostics: impl Into<String>) -> Self {
        Issue {
            severity: Severity::Error,
            code,
            diagnostics: diagnostics.into(),
            expression: None,
        }
    }

    /// An issue with the given severity.
    pub fn new(severity: Severity, code: IssueType, diagnostics: impl Into<String>) -> Self {
        Issue {
            severity,
            code,
            diagnostics: diagnostics.into(),
            expression: None,
        }
    }

    /// Sets the FHIRPath expression of the element the issue is about.
    pub fn at(self, expression: impl Into<String>) -> Self {
        Issue {
            expression: Some(expression.into()),
            ..self
        }
    }

    fn to_json(&self) -> Value {
        let mut issue = Map::new();
        issue.insert("severity".into(), self.severity.code().into());
        issue.insert("code".into(), self.code.code().into());
        if !self.diagnostics.trim().is_empty() {
            issue.insert("diagnostics".into(), self.diagnostics.clone().into());
        }
        if let Some(expression) = self.expression.as_deref().filter(|e| !e.trim().is_empty()) {
            issue.insert("expression".into(), json!([expression]));
        }
        Value::Object(issue)
    }
}

/// Builds an `OperationOutcome` resource.
///
/// The request id (if any) goes in an extension `{"url":"urn:ward:request-id","valueString": id}`;
/// each issue has severity, code, diagnostics, and `expression: [path]` when set. An empty
/// `issues` slice yields one informational issue, since FHIR requires at least one.
pub fn operation_outcome(issues: &[Issue], request_id: Option<&str>) -> Value {
    let mut outcome = Map::new();
    outcome.insert("resourceType".into(), "OperationOutcome".into());
    if let Some(id) = request_id.filter(|id| !id.trim().is_empty()) {
        outcome.insert(
            "extension".into(),
            json!([{ "url": "urn:ward:request-id", "valueString": id }]),
        );
    }
    let issues: Vec<Value> = if issues.is_empty() {
        vec![Issue::new(Severity::Information, IssueType::Informational, "no issues").to_json()]
    } else {
        issues.iter().map(Issue::to_json).collect()
    };
    outcome.insert("issue".into(), Value::Array(issues));
    Value::Object(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::Validator;

    #[test]
    fn codes() {
        assert_eq!(IssueType::NotFound.code(), "not-found");
        assert_eq!(IssueType::TooCostly.code(), "too-costly");
        assert_eq!(IssueType::LockError.code(), "lock-error");
        assert_eq!(IssueType::BusinessRule.code(), "business-rule");
        assert_eq!(Severity::Information.code(), "information");
    }

    #[test]
    fn builds_outcome() {
        let oo = operation_outcome(
            &[Issue::error(IssueType::Structure, "unknown element").at("Patient.foo")],
            Some("req-1"),
        );
        assert_eq!(
            oo,
            json!({
                "resourceType": "OperationOutcome",
                "extension": [{"url": "urn:ward:request-id", "valueString": "req-1"}],
                "issue": [{
                    "severity": "error",
                    "code": "structure",
                    "diagnostics": "unknown element",
                    "expression": ["Patient.foo"]
                }]
            })
        );
        Validator::new()
            .validate(&oo, "OperationOutcome")
            .expect("outcome is valid FHIR");
    }

    #[test]
    fn empty_outcome_is_valid() {
        let oo = operation_outcome(&[], None);
        assert!(oo.get("extension").is_none());
        assert_eq!(oo["issue"][0]["code"], "informational");
        Validator::new()
            .validate(&oo, "OperationOutcome")
            .expect("outcome is valid FHIR");
        let oo = operation_outcome(&[Issue::error(IssueType::Exception, "")], Some(""));
        Validator::new()
            .validate(&oo, "OperationOutcome")
            .expect("outcome is valid FHIR");
    }
}
