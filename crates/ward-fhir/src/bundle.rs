//! Transaction and batch Bundles as requests (SPEC F-1): everything the server's Bundle
//! processor checks before authorization, validation and the store. The kind, the entry cap,
//! each entry's shape and its `request` (method, URL relative to the server's base, `ifMatch`,
//! `ifNoneExist`, a resource of the URL's type). The `bundle_entry` fuzz target runs
//! [`parse_bundle`]; the server runs its steps with its own work between them.

use serde_json::Value;

use crate::json::{Limits, parse_strict};
use crate::outcome::IssueType;
use crate::validate::ValidationError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Transaction,
    Batch,
}

/// What one entry asks for. A create's id is assigned by the caller.
#[derive(Debug, PartialEq)]
pub enum EntryRequest {
    Create {
        rtype: String,
        resource: Value,
        if_none_exist: Option<Vec<(String, String)>>,
    },
    Update {
        rtype: String,
        id: String,
        resource: Value,
        if_match: Option<i64>,
    },
    Delete {
        rtype: String,
        id: String,
        if_match: Option<i64>,
    },
    Read {
        rtype: String,
        id: String,
        version: Option<i64>,
    },
}

/// One entry: its `fullUrl` and its request, or why the request is refused (in a batch, that
/// entry alone fails).
#[derive(Debug)]
pub struct Entry {
    pub full_url: Option<String>,
    pub request: Result<EntryRequest, BundleError>,
}

#[derive(Debug)]
pub struct ParsedBundle {
    pub kind: Kind,
    /// The Bundle without its entries' resources, for its own schema check.
    pub shell: Value,
    pub entries: Vec<Entry>,
}

/// Why a Bundle or an entry is refused.
#[derive(Debug, Clone, PartialEq)]
pub enum BundleError {
    /// Malformed: a 400 with the element's path.
    Invalid(ValidationError),
    /// More entries than the server accepts (a 413).
    TooManyEntries { count: usize, max: usize },
    /// A write to a type the server makes itself (the audit trail), at `path` (a 405).
    ReadOnlyType { path: String },
}

impl From<ValidationError> for BundleError {
    fn from(e: ValidationError) -> Self {
        BundleError::Invalid(e)
    }
}

fn invalid(code: IssueType, path: impl Into<String>, message: &str) -> BundleError {
    BundleError::Invalid(ValidationError::new(code, path, message))
}

/// A request body as the Bundle processor sees it: [`parse_strict`], [`bundle_kind`], then
/// [`parse_entries`].
pub fn parse_bundle(
    body: &[u8],
    limits: &Limits,
    max_entries: usize,
    base: &str,
) -> Result<ParsedBundle, BundleError> {
    let bundle = parse_strict(body, limits)?;
    let kind = bundle_kind(&bundle)?;
    parse_entries(bundle, kind, max_entries, base)
}

/// A Bundle of type transaction or batch.
pub fn bundle_kind(bundle: &Value) -> Result<Kind, BundleError> {
    if bundle.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return Err(invalid(
            IssueType::Invalid,
            "resourceType",
            "POST to the base URL takes a Bundle",
        ));
    }
    match bundle.get("type").and_then(Value::as_str) {
        Some("transaction") => Ok(Kind::Transaction),
        Some("batch") => Ok(Kind::Batch),
        _ => Err(invalid(
            IssueType::NotSupported,
            "Bundle.type",
            "Bundle.type must be transaction or batch",
        )),
    }
}

/// At most `max_entries` entries, each an object with a `request`; each entry's resource is
/// taken out of the Bundle (so the Bundle's schema check covers its own structure only, and
/// each resource is checked on its own with an entry-specific path) and its request parsed.
/// `base` is the server's FHIR base URL (entry URLs may start with it).
pub fn parse_entries(
    mut bundle: Value,
    kind: Kind,
    max_entries: usize,
    base: &str,
) -> Result<ParsedBundle, BundleError> {
    let count = bundle.get("entry").and_then(Value::as_array).map_or(0, Vec::len);
    if count > max_entries {
        return Err(BundleError::TooManyEntries {
            count,
            max: max_entries,
        });
    }
    let mut entries = Vec::with_capacity(count);
    if let Some(Value::Array(list)) = bundle.get_mut("entry") {
        for (i, e) in list.iter_mut().enumerate() {
            let Value::Object(o) = e else {
                return Err(invalid(
                    IssueType::Structure,
                    format!("Bundle.entry[{i}]"),
                    "a Bundle entry must be an object",
                ));
            };
            let Some(request) = o.get("request").filter(|r| r.is_object()) else {
                return Err(invalid(
                    IssueType::Required,
                    format!("Bundle.entry[{i}].request"),
                    "every entry of a transaction or batch needs a request",
                ));
            };
            let request = request.clone();
            let resource = o.remove("resource");
            let full_url = o.get("fullUrl").and_then(Value::as_str).map(str::to_owned);
            let at = format!("Bundle.entry[{i}].request");
            let request = parse_request(base, &request, resource).map_err(|e| match e {
                BundleError::Invalid(v) => invalid(v.code, at, &v.message),
                BundleError::ReadOnlyType { .. } => BundleError::ReadOnlyType { path: at },
                other => other,
            });
            entries.push(Entry { full_url, request });
        }
    }
    Ok(ParsedBundle {
        kind,
        shell: bundle,
        entries,
    })
}

/// `entry.request` as an [`EntryRequest`]. `resource` is the entry's resource, if any.
fn parse_request(base: &str, request: &Value, resource: Option<Value>) -> Result<EntryRequest, BundleError> {
    let method = request.get("method").and_then(Value::as_str).unwrap_or("");
    let url = request.get("url").and_then(Value::as_str).unwrap_or("");
    let base = format!("{base}/");
    let url = url.strip_prefix(&base).unwrap_or(url);
    let bad = |msg: &str| invalid(IssueType::NotSupported, "", msg);
    if url.contains("://") {
        return Err(bad("entry URLs must be relative to this server's base"));
    }
    let (path, query) = match url.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (url, None),
    };
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let rtype = segments.first().copied().unwrap_or("");
    if !crate::types::is_resource_type(rtype) {
        return Err(bad("the entry URL names no FHIR R4 resource type"));
    }
    // The audit trail is not in the resource store and is never written through the API.
    if crate::types::is_server_made(rtype) {
        return Err(BundleError::ReadOnlyType { path: String::new() });
    }
    let id = |i: usize| -> Result<String, BundleError> {
        match segments.get(i) {
            Some(id) if crate::id::is_valid_id(id) => Ok((*id).to_owned()),
            _ => Err(invalid(
                IssueType::Value,
                "",
                "malformed resource id in the entry URL",
            )),
        }
    };
    let if_match = || -> Result<Option<i64>, BundleError> {
        let Some(v) = request.get("ifMatch").and_then(Value::as_str) else {
            return Ok(None);
        };
        let v = header_text(v).map_err(|e| {
            invalid(
                IssueType::Value,
                "",
                match e {
                    HeaderText::Invalid => "ifMatch must be an ETag like W/\"3\"",
                    HeaderText::NotVisibleAscii => "If-Match must be an ETag like W/\"3\"",
                },
            )
        })?;
        match etag_version(v) {
            Some(n) => Ok(Some(n)),
            None => Err(invalid(
                IssueType::Value,
                "",
                "If-Match must be an ETag like W/\"3\"",
            )),
        }
    };
    let with_resource = |resource: Option<Value>| -> Result<Value, BundleError> {
        let resource = resource
            .ok_or_else(|| invalid(IssueType::Required, "", "POST and PUT entries need a resource"))?;
        if resource.get("resourceType").and_then(Value::as_str) != Some(rtype) {
            return Err(invalid(
                IssueType::Invalid,
                "",
                "the entry resource's type does not match the entry URL",
            ));
        }
        Ok(resource)
    };
    if query.is_some() && method != "POST" {
        return Err(bad(if method == "GET" {
            "search entries are not supported in bundles; use GET or POST [type]/_search"
        } else {
            "conditional update and delete are not supported"
        }));
    }
    match method {
        "POST" => {
            if segments.len() != 1 || query.is_some() {
                return Err(bad("a POST entry's URL must be the resource type"));
            }
            let if_none_exist = match request.get("ifNoneExist").and_then(Value::as_str) {
                Some(q) => {
                    let q = header_text(q).map_err(|e| {
                        invalid(
                            IssueType::Value,
                            "",
                            match e {
                                HeaderText::Invalid => "ifNoneExist must be a search query",
                                HeaderText::NotVisibleAscii => "If-None-Exist must be a search query",
                            },
                        )
                    })?;
                    Some(if_none_exist(q)?)
                }
                None => None,
            };
            Ok(EntryRequest::Create {
                rtype: rtype.to_owned(),
                resource: with_resource(resource)?,
                if_none_exist,
            })
        }
        "PUT" => {
            if segments.len() != 2 {
                return Err(bad("a PUT entry's URL must be [type]/[id]"));
            }
            let id = id(1)?;
            let resource = with_resource(resource)?;
            if resource.get("id").and_then(Value::as_str) != Some(id.as_str()) {
                return Err(invalid(
                    IssueType::Value,
                    "",
                    "the entry resource's id must equal the id in the entry URL",
                ));
            }
            Ok(EntryRequest::Update {
                rtype: rtype.to_owned(),
                id,
                resource,
                if_match: if_match()?,
            })
        }
        "DELETE" => {
            if segments.len() != 2 {
                return Err(bad("a DELETE entry's URL must be [type]/[id]"));
            }
            Ok(EntryRequest::Delete {
                rtype: rtype.to_owned(),
                id: id(1)?,
                if_match: if_match()?,
            })
        }
        "GET" => {
            let version = match (segments.len(), segments.get(2), segments.get(3)) {
                (2, _, _) => None,
                (4, Some(&"_history"), Some(v)) => {
                    Some(v.parse::<i64>().ok().filter(|v| *v >= 1).ok_or_else(|| {
                        invalid(IssueType::Value, "", "version id must be a positive integer")
                    })?)
                }
                _ => {
                    return Err(bad(
                        "GET entries support read ([type]/[id]) and vread ([type]/[id]/_history/[vid]) only",
                    ));
                }
            };
            Ok(EntryRequest::Read {
                rtype: rtype.to_owned(),
                id: id(1)?,
                version,
            })
        }
        _ => Err(bad("entry methods are GET, POST, PUT and DELETE")),
    }
}

/// Why a string cannot be an HTTP header value as the single interactions receive it.
enum HeaderText {
    /// Not a header value at all (control characters).
    Invalid,
    /// A header value, but not visible ASCII.
    NotVisibleAscii,
}

/// `s` as the text of a header value: what `http::HeaderValue::from_str` then `to_str` accept.
fn header_text(s: &str) -> Result<&str, HeaderText> {
    if s.bytes().any(|b| (b < 32 && b != b'\t') || b == 127) {
        return Err(HeaderText::Invalid);
    }
    if !s.is_ascii() {
        return Err(HeaderText::NotVisibleAscii);
    }
    Ok(s)
}

/// The version of an `If-Match` ETag (`W/"3"` or `"3"`), a positive integer.
pub fn etag_version(s: &str) -> Option<i64> {
    let s = s.trim();
    let s = s.strip_prefix("W/").unwrap_or(s);
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .and_then(|s| s.parse::<i64>().ok())
        .filter(|n| *n >= 1)
}

/// `If-None-Exist: identifier=sys|123&family=x` (a leading `?` allowed) as (param, value)
/// pairs: at least one, none with an empty name or value.
pub fn if_none_exist(s: &str) -> Result<Vec<(String, String)>, BundleError> {
    let s = s.trim_start_matches('?');
    let criteria: Vec<(String, String)> = form_urlencoded::parse(s.as_bytes()).into_owned().collect();
    if criteria.is_empty() || criteria.iter().any(|(k, v)| k.is_empty() || v.is_empty()) {
        return Err(invalid(
            IssueType::Value,
            "",
            "If-None-Exist must be a non-empty search query",
        ));
    }
    Ok(criteria)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "https://ward.example/fhir";

    fn entries(body: &str) -> Vec<Entry> {
        parse_bundle(body.as_bytes(), &Limits::default(), 10, BASE)
            .unwrap()
            .entries
    }

    #[test]
    fn entry_requests_and_their_refusals() {
        let e = entries(
            r#"{"resourceType":"Bundle","type":"batch","entry":[
            {"fullUrl":"urn:uuid:1","resource":{"resourceType":"Patient"},"request":{"method":"POST","url":"Patient","ifNoneExist":"?identifier=a|b"}},
            {"request":{"method":"GET","url":"https://ward.example/fhir/Patient/p/_history/2"}},
            {"request":{"method":"DELETE","url":"Patient/p","ifMatch":"W/\"0\""}},
            {"request":{"method":"DELETE","url":"Patient/p","ifMatch":"W/\"\u0001\""}},
            {"request":{"method":"DELETE","url":"Patient/p","ifMatch":"W/\"\u00e9\""}},
            {"request":{"method":"POST","url":"AuditEvent"},"resource":{"resourceType":"AuditEvent"}}]}"#,
        );
        assert_eq!(e[0].full_url.as_deref(), Some("urn:uuid:1"));
        assert!(
            matches!(&e[0].request, Ok(EntryRequest::Create { if_none_exist: Some(c), .. }) if c.len() == 1)
        );
        assert!(matches!(
            e[1].request,
            Ok(EntryRequest::Read { version: Some(2), .. })
        ));
        let message = |i: usize| match &e[i].request {
            Err(BundleError::Invalid(v)) => (v.path.clone(), v.message.clone()),
            other => panic!("{other:?}"),
        };
        assert_eq!(message(2).0, "Bundle.entry[2].request");
        assert!(message(3).1.starts_with("ifMatch"), "control characters");
        assert!(message(4).1.starts_with("If-Match"), "not visible ASCII");
        assert!(
            matches!(&e[5].request, Err(BundleError::ReadOnlyType { path }) if path == "Bundle.entry[5].request")
        );
    }

    #[test]
    fn bundle_refusals() {
        let parse = |body: &str| parse_bundle(body.as_bytes(), &Limits::default(), 1, BASE).unwrap_err();
        assert!(
            matches!(parse(r#"{"resourceType":"Patient"}"#), BundleError::Invalid(v) if v.path == "resourceType")
        );
        assert!(
            matches!(parse(r#"{"resourceType":"Bundle","type":"searchset"}"#), BundleError::Invalid(v) if v.path == "Bundle.type")
        );
        assert_eq!(
            parse(r#"{"resourceType":"Bundle","type":"batch","entry":[1,2]}"#),
            BundleError::TooManyEntries { count: 2, max: 1 }
        );
        assert!(
            matches!(parse(r#"{"resourceType":"Bundle","type":"batch","entry":[1]}"#), BundleError::Invalid(v) if v.path == "Bundle.entry[0]")
        );
        assert!(
            matches!(parse(r#"{"resourceType":"Bundle","type":"batch","entry":[{}]}"#), BundleError::Invalid(v) if v.path == "Bundle.entry[0].request")
        );
    }
}
