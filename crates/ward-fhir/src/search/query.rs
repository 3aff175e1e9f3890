//! Parsing a FHIR search query (`name[:modifier]=value[,value...]` pairs plus the result
//! parameters) into a [`SearchQuery`]. Errors name the parameter, never its value (values can be
//! PHI).

use super::date::{self, DateRange, Prefix};
use super::{MAX_PREFIX_CHARS, ParamKind, SearchParam, param};
use crate::index::normalize_text;

/// What a criterion tests.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    /// `_id`: the logical id (a store column).
    Id,
    /// `_lastUpdated`: `meta.lastUpdated` (a store column).
    LastUpdated,
    /// An indexed parameter.
    Param(&'static SearchParam),
}

impl Target {
    pub fn code(&self) -> &str {
        match self {
            Target::Id => "_id",
            Target::LastUpdated => "_lastUpdated",
            Target::Param(p) => &p.code,
        }
    }
}

/// A search modifier Ward supports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Modifier {
    None,
    /// string `:exact`: the whole value, case- and accent-sensitive.
    Exact,
    /// `:missing=true|false` (the values are [`CriterionValue::Missing`]).
    Missing,
    /// reference `:Type`.
    Type(String),
}

/// One alternative (OR) of a criterion.
#[derive(Clone, Debug, PartialEq)]
pub enum CriterionValue {
    /// A string search value as given.
    String(String),
    /// `code` → (None, Some(code)); `system|code` → (Some(system), Some(code)); `|code` →
    /// (Some(""), Some(code)) meaning "no system"; `system|` → (Some(system), None).
    Token {
        system: Option<String>,
        code: Option<String>,
    },
    /// `Type/id`, an absolute URL ending in `Type/id`, or a bare `id` (type from the modifier, the
    /// parameter's only target type, or any).
    Reference {
        rtype: Option<String>,
        id: String,
    },
    Date {
        prefix: Prefix,
        range: DateRange,
    },
    /// A quantity or number; `lo..hi` is the precision range of `value` (`5.4` → 5.35..5.45).
    Quantity {
        prefix: Prefix,
        value: f64,
        lo: f64,
        hi: f64,
        system: Option<String>,
        code: Option<String>,
    },
    Uri(String),
    Id(String),
    Missing(bool),
}

/// One criterion: the resource must match at least one of `values`. Criteria are ANDed.
#[derive(Clone, Debug, PartialEq)]
pub struct Criterion {
    pub target: Target,
    pub modifier: Modifier,
    pub values: Vec<CriterionValue>,
}

impl Criterion {
    /// Whether the index can only narrow the candidates, so matches are confirmed on the
    /// decrypted resource: identifying dates (indexed by year) and string values longer than the
    /// indexed prefixes.
    pub fn needs_post_filter(&self) -> bool {
        let Target::Param(p) = &self.target else {
            return false;
        };
        if self.modifier == Modifier::Missing {
            return false;
        }
        match p.kind {
            ParamKind::Date => p.identifying,
            ParamKind::String => {
                self.modifier == Modifier::None
                    && self.values.iter().any(|v| {
                        matches!(v, CriterionValue::String(s)
                            if normalize_text(s).chars().count() > MAX_PREFIX_CHARS)
                    })
            }
            _ => false,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TotalMode {
    None,
    Accurate,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Summary {
    True,
    Text,
    Data,
    Count,
    False,
}

/// A `_sort` key: a date parameter, `_lastUpdated` or `_id`.
#[derive(Clone, Debug, PartialEq)]
pub struct SortKey {
    pub target: Target,
    pub desc: bool,
}

/// `_include=Source:param[:Target]` / `_revinclude=Source:param[:Target]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Include {
    pub source: String,
    pub param: &'static SearchParam,
    pub target: Option<String>,
}

/// A parsed search.
#[derive(Clone, Debug, PartialEq)]
pub struct SearchQuery {
    pub rtype: String,
    pub criteria: Vec<Criterion>,
    pub count: usize,
    pub total: TotalMode,
    pub sort: Vec<SortKey>,
    pub summary: Option<Summary>,
    pub elements: Vec<String>,
    pub include: Vec<Include>,
    pub revinclude: Vec<Include>,
    /// Restrict to one patient's compartment (a patient id). Set by the caller (compartment
    /// search, or an access scope), never from a query parameter.
    pub compartment: Option<String>,
    /// An opaque paging cursor given with the query.
    pub cursor: Option<String>,
    /// Who may follow this query's paging cursors (the authenticated client). Set by the
    /// caller, never from a query parameter: a cursor handed to anyone else is refused.
    pub cursor_holder: Option<String>,
    /// Parameters ignored under lenient handling (names only).
    pub ignored: Vec<String>,
    /// The parameters as given, without `_cursor`: what a paging cursor has to carry.
    pub params: Vec<(String, String)>,
    /// `total` is counted up to this many (candidate) matches and omitted beyond; also the most
    /// candidates one page examines to confirm post-filtered criteria ([`ParseOptions::max_total`]).
    pub max_total: usize,
}

/// Most `_sort` keys of one search.
const MAX_SORT_KEYS: usize = 8;

/// Options of [`SearchQuery::parse`].
#[derive(Clone, Copy, Debug)]
pub struct ParseOptions {
    /// `Prefer: handling=lenient`: unknown parameters are ignored (and listed) instead of refused.
    pub lenient: bool,
    pub default_count: usize,
    pub max_count: usize,
    /// Most parameters (name=value pairs, `_cursor` aside) one search may have.
    pub max_params: usize,
    /// Most values one search may have: the OR alternatives of all its criteria plus its sort
    /// keys (each a condition of one SQL statement), its distinct `_elements` and its
    /// `_include`/`_revinclude` parameters.
    pub max_values: usize,
    /// See [`SearchQuery::max_total`].
    pub max_total: usize,
}

impl ParseOptions {
    /// Default of [`ParseOptions::max_params`] (`server.max_search_params`).
    pub const MAX_PARAMS: usize = 64;
    /// Default of [`ParseOptions::max_values`] (`server.max_search_values`).
    pub const MAX_VALUES: usize = 256;
    /// Default of [`ParseOptions::max_total`] (`server.max_search_total`).
    pub const MAX_TOTAL: usize = 10_000;
    /// Highest `max_params` the configuration accepts: a search at this bound and at
    /// [`ParseOptions::CEILING_VALUES`] runs on both backends (ward-store's `search_bounds` test).
    pub const CEILING_PARAMS: usize = 256;
    /// Highest `max_values` the configuration accepts.
    pub const CEILING_VALUES: usize = 1024;
}

impl Default for ParseOptions {
    fn default() -> Self {
        ParseOptions {
            lenient: false,
            default_count: 50,
            max_count: 1000,
            max_params: ParseOptions::MAX_PARAMS,
            max_values: ParseOptions::MAX_VALUES,
            max_total: ParseOptions::MAX_TOTAL,
        }
    }
}

/// Why a query was refused. Each names the parameter (as given), never a value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SearchError {
    #[error("unknown search parameter '{0}'")]
    Unknown(String),
    #[error("search parameter '{0}' is not supported: {1}")]
    Unsupported(String, &'static str),
    #[error("invalid value for search parameter '{0}'")]
    Invalid(String),
    #[error(
        "the search has more than {0} parameters: combine or drop criteria, or split it into several searches"
    )]
    TooManyParams(usize),
    #[error(
        "the search has more than {0} values in total (comma-separated alternatives, sort keys, \
         _elements and _include/_revinclude): \
         narrow the value lists, or split it into several searches"
    )]
    TooManyValues(usize),
}

impl SearchError {
    /// The parameter the error is about (empty when it is about the whole search).
    pub fn param(&self) -> &str {
        match self {
            SearchError::Unknown(p) | SearchError::Unsupported(p, _) | SearchError::Invalid(p) => p,
            SearchError::TooManyParams(_) | SearchError::TooManyValues(_) => "",
        }
    }
}

/// Splits on unescaped `sep`, unescaping `\,` `\|` `\$` `\\`.
fn split_escaped(s: &str, sep: char, limit: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut last = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(n) if n == sep || matches!(n, ',' | '|' | '$' | '\\') => last.push(n),
                Some(n) => {
                    last.push('\\');
                    last.push(n);
                }
                None => last.push('\\'),
            }
        } else if c == sep && out.len().saturating_add(1) < limit {
            out.push(std::mem::take(&mut last));
        } else {
            last.push(c);
        }
    }
    out.push(last);
    out
}

/// Splits a comma list but keeps the escapes of `|` for a later token split.
fn split_or(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut last = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(',') => last.push(','),
                Some(n) => {
                    last.push('\\');
                    last.push(n);
                }
                None => last.push('\\'),
            }
        } else if c == ',' {
            out.push(std::mem::take(&mut last));
        } else {
            last.push(c);
        }
    }
    out.push(last);
    out
}

fn unescape(s: &str) -> String {
    split_escaped(s, '\u{0}', 1)
        .into_iter()
        .next()
        .unwrap_or_default()
}

fn parse_number(s: &str) -> Option<(f64, f64, f64)> {
    let s = s.trim();
    if s.is_empty()
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'))
    {
        return None;
    }
    let v: f64 = s.parse().ok()?;
    if !v.is_finite() {
        return None;
    }
    let half = if s.contains(['e', 'E']) {
        0.0
    } else {
        let decimals = s.split_once('.').map_or(0, |(_, f)| f.len());
        0.5 * 10f64.powi(i32::try_from(decimals).ok()?.checked_neg()?)
    };
    Some((v, v - half, v + half))
}

impl SearchQuery {
    /// Parses the query pairs of a search on `rtype`.
    pub fn parse(
        rtype: &str,
        pairs: &[(String, String)],
        opts: &ParseOptions,
    ) -> Result<SearchQuery, SearchError> {
        let mut q = SearchQuery {
            rtype: rtype.to_owned(),
            criteria: Vec::new(),
            count: opts.default_count.min(opts.max_count),
            total: TotalMode::Accurate,
            sort: Vec::new(),
            summary: None,
            elements: Vec::new(),
            include: Vec::new(),
            revinclude: Vec::new(),
            compartment: None,
            cursor: None,
            cursor_holder: None,
            ignored: Vec::new(),
            params: Vec::new(),
            max_total: opts.max_total,
        };
        // Bound the statement before building it: every parameter and value is a condition.
        if pairs.iter().filter(|(k, _)| k != "_cursor").count() > opts.max_params {
            return Err(SearchError::TooManyParams(opts.max_params));
        }
        let mut elements_given = 0usize;
        for (name, value) in pairs {
            if name == "_cursor" {
                q.cursor = Some(value.clone());
                continue;
            }
            q.params.push((name.clone(), value.clone()));
            let invalid = || SearchError::Invalid(name.clone());
            match name.as_str() {
                "_count" => {
                    let n: usize = value.trim().parse().map_err(|_| invalid())?;
                    q.count = n.min(opts.max_count);
                }
                "_total" => {
                    q.total = match value.as_str() {
                        "none" => TotalMode::None,
                        "accurate" | "estimate" => TotalMode::Accurate,
                        _ => return Err(invalid()),
                    }
                }
                "_summary" => {
                    q.summary = Some(match value.as_str() {
                        "true" => Summary::True,
                        "text" => Summary::Text,
                        "data" => Summary::Data,
                        "count" => Summary::Count,
                        "false" => Summary::False,
                        _ => return Err(invalid()),
                    })
                }
                "_elements" => {
                    for e in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
                        if !e.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                            return Err(invalid());
                        }
                        // Each element is matched against every key of every resource: bound
                        // them while parsing, not after a million were collected.
                        elements_given = elements_given.saturating_add(1);
                        if elements_given > opts.max_values {
                            return Err(SearchError::TooManyValues(opts.max_values));
                        }
                        if !q.elements.iter().any(|x| x == e) {
                            q.elements.push(e.to_owned());
                        }
                    }
                }
                "_sort" => {
                    for key in value.split(',').map(str::trim).filter(|k| !k.is_empty()) {
                        let (desc, code) = match key.strip_prefix('-') {
                            Some(c) => (true, c),
                            None => (false, key),
                        };
                        let target = match code {
                            "_id" => Target::Id,
                            "_lastUpdated" => Target::LastUpdated,
                            c => match param(rtype, c) {
                                Some(p) if p.kind == ParamKind::Date && !p.identifying => Target::Param(p),
                                Some(p) if p.identifying => {
                                    return Err(SearchError::Unsupported(
                                        "_sort".into(),
                                        "sorting by an identifying parameter would need plaintext values",
                                    ));
                                }
                                Some(_) => {
                                    return Err(SearchError::Unsupported(
                                        "_sort".into(),
                                        "only date parameters, _lastUpdated and _id can be sorted on",
                                    ));
                                }
                                None => return Err(SearchError::Unknown(format!("_sort:{c}"))),
                            },
                        };
                        q.sort.push(SortKey { target, desc });
                    }
                }
                "_include" | "_revinclude" => {
                    let rev = name == "_revinclude";
                    let parts: Vec<&str> = value.split(':').collect();
                    let (source, code, target) = match parts.as_slice() {
                        [s, c] if value != "*" => (*s, *c, None),
                        [s, c, t] => (*s, *c, Some((*t).to_owned())),
                        _ => {
                            return Err(SearchError::Unsupported(
                                name.clone(),
                                "use Type:parameter[:TargetType]",
                            ));
                        }
                    };
                    if !crate::types::is_resource_type(source) || (!rev && source != rtype) {
                        return Err(invalid());
                    }
                    let p = param(source, code)
                        .filter(|p| p.kind == ParamKind::Reference)
                        .ok_or_else(invalid)?;
                    if let Some(t) = &target
                        && (!crate::types::is_resource_type(t) || (rev && t != rtype))
                    {
                        return Err(invalid());
                    }
                    let inc = Include {
                        source: source.to_owned(),
                        param: p,
                        target,
                    };
                    if rev {
                        q.revinclude.push(inc);
                    } else {
                        q.include.push(inc);
                    }
                }
                "_include:iterate" | "_revinclude:iterate" | "_include:recurse" | "_revinclude:recurse" => {
                    return Err(SearchError::Unsupported(
                        name.clone(),
                        "only one level of _include/_revinclude is supported",
                    ));
                }
                "_format" => {
                    if !matches!(
                        value.as_str(),
                        "json" | "application/json" | "application/fhir+json"
                    ) {
                        return Err(SearchError::Unsupported(name.clone(), "only JSON is offered"));
                    }
                }
                "_pretty" => {}
                _ => match parse_criterion(rtype, name, value) {
                    Ok(Some(c)) => q.criteria.push(c),
                    Ok(None) => {}
                    Err(SearchError::Unknown(n)) if opts.lenient => q.ignored.push(n),
                    Err(e) => return Err(e),
                },
            }
        }
        // The paging keyset grows with the square of the sort keys.
        if q.sort.len() > MAX_SORT_KEYS {
            return Err(SearchError::Unsupported(
                "_sort".into(),
                "at most 8 sort keys are supported",
            ));
        }
        let values = q
            .criteria
            .iter()
            .map(|c| c.values.len())
            .chain([q.elements.len(), q.include.len(), q.revinclude.len()])
            .fold(q.sort.len(), usize::saturating_add);
        if values > opts.max_values {
            return Err(SearchError::TooManyValues(opts.max_values));
        }
        if q.summary.is_some() && !q.elements.is_empty() {
            return Err(SearchError::Unsupported(
                "_elements".into(),
                "_elements and _summary cannot be combined",
            ));
        }
        Ok(q)
    }

    /// Whether any criterion needs confirming on the decrypted resources.
    pub fn needs_post_filter(&self) -> bool {
        self.criteria.iter().any(Criterion::needs_post_filter)
    }
}

/// One `name[:modifier]=value` pair; `Ok(None)` if every value is empty (ignored, as FHIR says).
fn parse_criterion(rtype: &str, name: &str, value: &str) -> Result<Option<Criterion>, SearchError> {
    if name.contains('.') || name.starts_with("_has") {
        return Err(SearchError::Unsupported(
            name.to_owned(),
            "chained and reverse-chained parameters are not supported",
        ));
    }
    let (code, modifier) = match name.split_once(':') {
        Some((c, m)) => (c, Some(m)),
        None => (name, None),
    };
    let target = match code {
        "_id" => Target::Id,
        "_lastUpdated" => Target::LastUpdated,
        c => Target::Param(param(rtype, c).ok_or_else(|| SearchError::Unknown(name.to_owned()))?),
    };
    let kind = match &target {
        Target::Id => ParamKind::Token,
        Target::LastUpdated => ParamKind::Date,
        Target::Param(p) => p.kind,
    };
    let unsupported = |why: &'static str| SearchError::Unsupported(name.to_owned(), why);
    let modifier = match modifier {
        None => Modifier::None,
        Some("missing") => Modifier::Missing,
        Some("exact") if kind == ParamKind::String => Modifier::Exact,
        Some("contains" | "text") if kind == ParamKind::String => {
            return Err(unsupported(
                "string values are kept as blind indexes, which serve exact and starts-with search only",
            ));
        }
        Some(t) if kind == ParamKind::Reference && crate::types::is_resource_type(t) => {
            if let Target::Param(p) = &target
                && !p.targets.is_empty()
                && !p.targets.iter().any(|x| x == t)
            {
                return Err(SearchError::Invalid(name.to_owned()));
            }
            Modifier::Type(t.to_owned())
        }
        Some(_) => return Err(unsupported("this modifier is not supported")),
    };
    let invalid = || SearchError::Invalid(name.to_owned());
    let mut values = Vec::new();
    for raw in split_or(value) {
        if raw.trim().is_empty() {
            continue;
        }
        if modifier == Modifier::Missing {
            values.push(CriterionValue::Missing(match raw.as_str() {
                "true" => true,
                "false" => false,
                _ => return Err(invalid()),
            }));
            continue;
        }
        let v = match (&target, kind) {
            (Target::Id, _) => {
                let id = unescape(&raw);
                if !crate::id::is_valid_id(&id) {
                    return Err(invalid());
                }
                CriterionValue::Id(id)
            }
            (_, ParamKind::String) => CriterionValue::String(unescape(&raw)),
            (_, ParamKind::Uri) => CriterionValue::Uri(unescape(&raw)),
            (_, ParamKind::Token) => {
                let parts = split_escaped(&raw, '|', 2);
                let email = target.code() == "email";
                let norm = |c: &str| {
                    let c = c.trim();
                    if email { c.to_lowercase() } else { c.to_owned() }
                };
                match parts.as_slice() {
                    [code] => CriterionValue::Token {
                        system: None,
                        code: Some(norm(code)),
                    },
                    [system, code] if code.is_empty() && system.is_empty() => return Err(invalid()),
                    [system, code] => CriterionValue::Token {
                        system: Some(system.trim().to_owned()),
                        code: (!code.trim().is_empty()).then(|| norm(code)),
                    },
                    _ => return Err(invalid()),
                }
            }
            (Target::Param(p), ParamKind::Reference) => {
                let raw = unescape(&raw);
                let (rt, id) = if raw.contains('/') {
                    let (t, id) = crate::fhirpath::parse_reference(&raw).ok_or_else(invalid)?;
                    (Some(t.to_owned()), id.to_owned())
                } else {
                    let rt = match &modifier {
                        Modifier::Type(t) => Some(t.clone()),
                        _ => match p.targets.as_slice() {
                            [only] => Some(only.clone()),
                            _ => None,
                        },
                    };
                    (rt, raw.clone())
                };
                if !crate::id::is_valid_id(&id) {
                    return Err(invalid());
                }
                if let (Some(t), Modifier::Type(m)) = (&rt, &modifier)
                    && t != m
                {
                    return Err(invalid());
                }
                if let Some(t) = &rt
                    && !p.targets.is_empty()
                    && !p.targets.contains(t)
                {
                    return Err(invalid());
                }
                CriterionValue::Reference { rtype: rt, id }
            }
            (_, ParamKind::Date) => {
                let (prefix, rest) = Prefix::split(raw.trim());
                let range = date::parse_range(rest).ok_or_else(invalid)?;
                CriterionValue::Date { prefix, range }
            }
            (_, ParamKind::Quantity | ParamKind::Number) => {
                let (prefix, rest) = Prefix::split(raw.trim());
                let parts = split_escaped(rest, '|', 3);
                let (value, lo, hi) = parts.first().and_then(|n| parse_number(n)).ok_or_else(invalid)?;
                if kind == ParamKind::Number && parts.len() > 1 {
                    return Err(invalid());
                }
                let nonempty = |s: Option<&String>| s.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
                CriterionValue::Quantity {
                    prefix,
                    value,
                    lo,
                    hi,
                    system: nonempty(parts.get(1)),
                    code: nonempty(parts.get(2)),
                }
            }
            (_, ParamKind::Reference) => return Err(invalid()),
        };
        values.push(v);
    }
    if values.is_empty() {
        return Ok(None);
    }
    Ok(Some(Criterion {
        target,
        modifier,
        values,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(rtype: &str, pairs: &[(&str, &str)]) -> Result<SearchQuery, SearchError> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        SearchQuery::parse(rtype, &pairs, &ParseOptions::default())
    }

    #[test]
    fn parses_every_kind() {
        let s = q(
            "Observation",
            &[
                ("code", "http://loinc.org|8867-4,|x,sys|,plain"),
                ("subject", "Patient/p1"),
                ("subject:Patient", "p2"),
                ("date", "ge2020-01,lt2021"),
                ("value-quantity", "gt5.4|http://unitsofmeasure.org|mg"),
                ("_id", "a,b"),
                ("_lastUpdated", "gt2020-01-01T00:00:00Z"),
                ("status:missing", "false"),
                ("_count", "5000"),
                ("_sort", "-date,_id"),
                ("_total", "none"),
                ("_include", "Observation:patient"),
                ("_revinclude", "Provenance:target"),
            ],
        )
        .unwrap();
        assert_eq!(s.count, 1000);
        assert_eq!(s.total, TotalMode::None);
        assert_eq!(s.criteria.len(), 8);
        assert_eq!(
            s.criteria[0].values,
            vec![
                CriterionValue::Token {
                    system: Some("http://loinc.org".into()),
                    code: Some("8867-4".into())
                },
                CriterionValue::Token {
                    system: Some(String::new()),
                    code: Some("x".into())
                },
                CriterionValue::Token {
                    system: Some("sys".into()),
                    code: None
                },
                CriterionValue::Token {
                    system: None,
                    code: Some("plain".into())
                },
            ]
        );
        assert_eq!(
            s.criteria[1].values,
            vec![CriterionValue::Reference {
                rtype: Some("Patient".into()),
                id: "p1".into()
            }]
        );
        assert_eq!(s.criteria[2].modifier, Modifier::Type("Patient".into()));
        match &s.criteria[4].values[0] {
            CriterionValue::Quantity {
                prefix, lo, hi, code, ..
            } => {
                assert_eq!(*prefix, Prefix::Gt);
                assert!((lo - 5.35).abs() < 1e-9 && (hi - 5.45).abs() < 1e-9);
                assert_eq!(code.as_deref(), Some("mg"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(s.criteria[7].values, vec![CriterionValue::Missing(false)]);
        assert_eq!(s.sort.len(), 2);
        assert!(s.sort[0].desc);
        assert_eq!(s.include.len(), 1);
        assert_eq!(s.revinclude.len(), 1);
        assert!(!s.needs_post_filter());
    }

    #[test]
    fn refuses_with_the_parameter_name_only() {
        let e = q("Patient", &[("family:contains", "Smith")]).unwrap_err();
        assert!(matches!(&e, SearchError::Unsupported(p, _) if p == "family:contains"));
        assert!(!e.to_string().contains("Smith"));
        assert_eq!(
            q("Patient", &[("bogus", "Smith")]).unwrap_err(),
            SearchError::Unknown("bogus".into())
        );
        assert!(matches!(
            q("Patient", &[("_sort", "family")]).unwrap_err(),
            SearchError::Unsupported(..)
        ));
        assert!(matches!(
            q("Patient", &[("_sort", "birthdate")]).unwrap_err(),
            SearchError::Unsupported(..)
        ));
        assert_eq!(
            q("Patient", &[("birthdate", "1937-13")]).unwrap_err(),
            SearchError::Invalid("birthdate".into())
        );
        assert!(q("Patient", &[("general-practitioner.name", "x")]).is_err());
        assert!(q("Observation", &[("subject:Medication", "x")]).is_err());
        assert!(q("Patient", &[("_summary", "count"), ("_elements", "id")]).is_err());
        // lenient: unknown parameters are listed, not refused
        let pairs = vec![
            ("bogus".to_string(), "1".to_string()),
            ("family".into(), "x".into()),
        ];
        let lenient = SearchQuery::parse(
            "Patient",
            &pairs,
            &ParseOptions {
                lenient: true,
                ..ParseOptions::default()
            },
        )
        .unwrap();
        assert_eq!(lenient.ignored, vec!["bogus"]);
        assert_eq!(lenient.criteria.len(), 1);
    }

    #[test]
    fn post_filter_needs() {
        assert!(
            q("Patient", &[("birthdate", "1937")])
                .unwrap()
                .needs_post_filter()
        );
        assert!(
            !q("Patient", &[("birthdate:missing", "true")])
                .unwrap()
                .needs_post_filter()
        );
        assert!(!q("Patient", &[("family", "Zyx")]).unwrap().needs_post_filter());
        assert!(
            q("Patient", &[("family", "Zyxwarfieldabcdefghij")])
                .unwrap()
                .needs_post_filter()
        );
        assert!(!q("Observation", &[("date", "2020")]).unwrap().needs_post_filter());
    }

    #[test]
    fn bounds_parameters_and_values() {
        let opts = ParseOptions {
            max_params: 3,
            max_values: 4,
            ..ParseOptions::default()
        };
        let parse = |pairs: &[(&str, &str)]| {
            let pairs: Vec<(String, String)> = pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect();
            SearchQuery::parse("Patient", &pairs, &opts)
        };
        assert!(parse(&[("family", "a,b"), ("given", "c"), ("_sort", "_id")]).is_ok());
        assert!(
            parse(&[
                ("family", "a"),
                ("family", "b"),
                ("family", "c"),
                ("_cursor", "x")
            ])
            .is_ok()
        );
        let e = parse(&[("family", "a"), ("family", "b"), ("family", "c"), ("family", "d")]).unwrap_err();
        assert_eq!(e, SearchError::TooManyParams(3));
        assert!(e.to_string().contains("more than 3 parameters"), "{e}");
        let e = parse(&[("family", "a,b,c"), ("given", "d,e")]).unwrap_err();
        assert_eq!(e, SearchError::TooManyValues(4));
        assert!(!e.to_string().contains('a'.to_string().repeat(2).as_str()));
        assert_eq!(
            parse(&[("family", "a,b,c,d"), ("_sort", "_id")]).unwrap_err(),
            SearchError::TooManyValues(4)
        );
        // An ignored empty value counts for nothing.
        assert!(parse(&[("family", "a,,,b,c,d")]).is_ok());
        // _elements, de-duplicated, and _include/_revinclude count too.
        assert!(parse(&[("_elements", "id,id,gender,id"), ("family", "a,b")]).is_ok());
        assert_eq!(parse(&[("_elements", "id,id,id")]).unwrap().elements, ["id"]);
        assert_eq!(
            parse(&[("_elements", &"zz,".repeat(1_300_000))]).unwrap_err(),
            SearchError::TooManyValues(4)
        );
        assert_eq!(
            parse(&[("_elements", "a,b,c,d,e")]).unwrap_err(),
            SearchError::TooManyValues(4)
        );
        assert_eq!(
            parse(&[("_elements", "a,b,c"), ("family", "x,y")]).unwrap_err(),
            SearchError::TooManyValues(4)
        );
        assert_eq!(
            parse(&[("_elements", "a,b,c,d"), ("_revinclude", "Observation:subject")]).unwrap_err(),
            SearchError::TooManyValues(4)
        );
    }

    #[test]
    fn escapes() {
        assert_eq!(split_or(r"a\,b,c"), vec!["a,b", "c"]);
        assert_eq!(split_escaped(r"s\|x|c", '|', 2), vec!["s|x", "c"]);
        assert_eq!(unescape(r"a\$b"), "a$b");
    }
}
