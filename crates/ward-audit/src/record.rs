//! The audit record model and its canonical encoding.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Who made the request. Never contains secrets (no tokens, no passwords).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub client_id: Option<String>,
    pub user_id: Option<String>,
    pub roles_or_scopes: Vec<String>,
}

/// Where the request came from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    pub ip: Option<String>,
    pub port: Option<u16>,
    pub user_agent: Option<String>,
}

/// What kind of record this is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordKind {
    /// The record of a completed request (or of a write's outcome).
    #[default]
    Request,
    /// Written before a change to ePHI is committed; its outcome record names it in `intent_seq`.
    Intent,
    /// An administrative action (CLI, key operation, configuration loaded).
    Admin,
}

impl RecordKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Request => "request",
            RecordKind::Intent => "intent",
            RecordKind::Admin => "admin",
        }
    }
}

/// The result of the action.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// HTTP status (or the equivalent for admin actions: 200 success, 400/403/500 failures).
    pub status: u16,
    /// OperationOutcome issue code or OAuth error code; never free text.
    pub code: Option<String>,
}

/// One audit record (AU-1).
///
/// The field order of this struct (and of the nested structs) **is** the canonical order: see
/// the crate documentation for the canonical encoding. Do not reorder, rename or add fields
/// without bumping the canonical encoding version.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// UTC RFC 3339 with milliseconds, e.g. `2026-11-23T12:00:00.123Z`. Set by the writer when
    /// empty; otherwise normalized by the writer to that form.
    pub at: String,
    /// Node id; set by the writer.
    pub node: String,
    /// Sequence number within the node's chain (1, 2, ...); set by the writer.
    pub seq: i64,
    /// The request id echoed to the client (its own `X-Request-ID` when well-formed).
    pub request_id: String,
    pub actor: Actor,
    pub source: Source,
    /// FHIR interaction (`read`, `vread`, `search-type`, ...), OAuth or admin action.
    pub action: String,
    pub kind: RecordKind,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    pub resource_version: Option<i64>,
    /// Ids of the patients whose compartment was touched.
    pub patients: Vec<String>,
    pub purpose_of_use: Option<String>,
    pub break_glass: bool,
    pub outcome: Outcome,
    /// Number of resources returned.
    pub returned: u32,
    /// Keyed hashes of search parameter values (computed by the caller); never plaintext.
    pub query_hashes: Vec<String>,
    /// For the outcome record of a write: the seq of its intent record.
    pub intent_seq: Option<i64>,
    /// The id the server made for the request (a fresh UUID): unique even when clients reuse
    /// an `X-Request-ID` (which is `request_id`).
    #[serde(default)]
    pub server_request_id: String,
    /// Versioned references (`Type/id/_history/N`) each standing for every patient in that
    /// version's compartment: how a record names the patients of a resource with too many to
    /// list (a large Group). `ward audit disclosures` resolves them.
    #[serde(default)]
    pub patients_via: Vec<String>,
}

impl AuditRecord {
    /// The canonical bytes (see the crate documentation).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        // Serializing plain structs of strings, integers, booleans and vectors cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses canonical bytes back into a record.
    pub fn from_canonical(bytes: &[u8]) -> Result<AuditRecord, crate::AuditError> {
        serde_json::from_slice(bytes)
            .map_err(|_| crate::AuditError::Corrupt("audit record does not parse".into()))
    }

    /// `at` as an instant, if it parses.
    pub fn at_instant(&self) -> Option<OffsetDateTime> {
        OffsetDateTime::parse(&self.at, &Rfc3339).ok()
    }
}

/// Formats an instant as RFC 3339 UTC with milliseconds, e.g. `2026-11-23T12:00:00.123Z`.
pub fn format_instant(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// Milliseconds since the Unix epoch.
pub(crate) fn unix_ms(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos().div_euclid(1_000_000)).unwrap_or(i64::MAX)
}

/// Normalizes a caller-provided `at` (or empty) to the canonical form; returns it with its
/// milliseconds since the epoch. Unparseable values are replaced by `now`.
pub(crate) fn normalize_at(at: &str, now: OffsetDateTime) -> (String, i64) {
    let t = if at.is_empty() {
        now
    } else {
        OffsetDateTime::parse(at, &Rfc3339).unwrap_or(now)
    };
    // Truncate to whole milliseconds so `at` and `at_ms` agree exactly.
    let ms = unix_ms(t);
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap_or(now);
    (format_instant(t), ms)
}

/// Node ids: 1 to 48 characters of `A-Z a-z 0-9 . -` (they appear in AuditEvent ids and in the
/// signed checkpoint message).
pub fn valid_node_id(node: &str) -> bool {
    !node.is_empty()
        && node.len() <= 48
        && node
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}

/// Reads `node` and `seq` from the fixed prefix of canonical bytes
/// (`{"at":"…","node":"…","seq":N,`) without parsing the whole record.
pub(crate) fn canonical_prefix(bytes: &[u8]) -> Option<(&[u8], i64)> {
    let rest = bytes.strip_prefix(b"{\"at\":\"")?;
    let q = rest.iter().position(|&b| b == b'"')?;
    let rest = rest[q..].strip_prefix(b"\",\"node\":\"")?;
    let q = rest.iter().position(|&b| b == b'"')?;
    let node = &rest[..q];
    let rest = rest[q..].strip_prefix(b"\",\"seq\":")?;
    let end = rest.iter().position(|&b| b == b',')?;
    let seq = std::str::from_utf8(&rest[..end]).ok()?.parse().ok()?;
    Some((node, seq))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> AuditRecord {
        AuditRecord {
            at: "2026-11-23T12:00:00.123Z".into(),
            node: "n1".into(),
            seq: 7,
            request_id: "req-1".into(),
            actor: Actor {
                client_id: Some("c1".into()),
                user_id: None,
                roles_or_scopes: vec!["system/Patient.rs".into()],
            },
            source: Source {
                ip: Some("127.0.0.1".into()),
                port: Some(5555),
                user_agent: Some("ua/1 \"é\"".into()),
            },
            action: "read".into(),
            kind: RecordKind::Request,
            resource_type: Some("Patient".into()),
            resource_id: Some("p1".into()),
            resource_version: Some(2),
            patients: vec!["p1".into()],
            purpose_of_use: None,
            break_glass: false,
            outcome: Outcome {
                status: 200,
                code: None,
            },
            returned: 1,
            query_hashes: vec![],
            intent_seq: None,
            server_request_id: "s-1".into(),
            patients_via: vec![],
        }
    }

    #[test]
    fn canonical_encoding_is_fixed() {
        let r = sample();
        let s = String::from_utf8(r.canonical_bytes()).unwrap();
        assert_eq!(
            s,
            "{\"at\":\"2026-11-23T12:00:00.123Z\",\"node\":\"n1\",\"seq\":7,\"request_id\":\"req-1\",\
             \"actor\":{\"client_id\":\"c1\",\"user_id\":null,\"roles_or_scopes\":[\"system/Patient.rs\"]},\
             \"source\":{\"ip\":\"127.0.0.1\",\"port\":5555,\"user_agent\":\"ua/1 \\\"é\\\"\"},\
             \"action\":\"read\",\"kind\":\"request\",\"resource_type\":\"Patient\",\"resource_id\":\"p1\",\
             \"resource_version\":2,\"patients\":[\"p1\"],\"purpose_of_use\":null,\"break_glass\":false,\
             \"outcome\":{\"status\":200,\"code\":null},\"returned\":1,\"query_hashes\":[],\"intent_seq\":null,\
             \"server_request_id\":\"s-1\",\"patients_via\":[]}"
        );
        assert_eq!(AuditRecord::from_canonical(s.as_bytes()).unwrap(), r);
        assert_eq!(canonical_prefix(s.as_bytes()), Some((&b"n1"[..], 7)));
        assert_eq!(canonical_prefix(b"{\"at\":\"x\"}"), None);
    }

    #[test]
    fn at_normalization() {
        let now = time::macros::datetime!(2026-01-01 00:00:00 UTC);
        assert_eq!(normalize_at("", now).0, "2026-01-01T00:00:00.000Z");
        assert_eq!(
            normalize_at("2026-11-23T13:00:00.1234+01:00", now).0,
            "2026-11-23T12:00:00.123Z"
        );
        assert_eq!(normalize_at("garbage", now).0, "2026-01-01T00:00:00.000Z");
        let (s, ms) = normalize_at("1970-01-01T00:00:01.5Z", now);
        assert_eq!((s.as_str(), ms), ("1970-01-01T00:00:01.500Z", 1500));
        assert!(valid_node_id("node-1.a"));
        assert!(!valid_node_id("a|b") && !valid_node_id("") && !valid_node_id("a_b"));
    }
}
