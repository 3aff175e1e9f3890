//! Blind-index rows for a resource version (EN-4).
//!
//! Values come from `ward_fhir::index::extract`; this module only turns them into keyed HMACs:
//! * Text: HMAC of the normalized value under the parameter name, and HMACs of its normalized
//!   prefixes (1..=16 characters) under `"<param>:prefix"` for case-insensitive starts-with search.
//! * Token: `extract` gives `system|code` (when there is a system) and `code`; both are stored,
//!   plus `system|` (any code in the system). A query `|code` ("no system") cannot be answered
//!   from these forms and is rejected as unsupported.
//! * Date: HMAC of the full value, plus the plaintext year only (separate integer column), so
//!   range searches can narrow by year and filter after decryption.

use std::collections::HashSet;

use serde_json::Value;
use ward_crypto::BlindIndexer;

use crate::fhir_index::IndexKind;

/// Maximum prefix length (in characters) stored for Text parameters.
pub const MAX_PREFIX_CHARS: usize = 16;

/// One row of `blind_index`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct IndexRow {
    pub param: String,
    pub hash: [u8; 32],
    pub year: Option<i64>,
}

/// The parameter label under which the prefixes of a Text parameter are stored.
pub fn prefix_label(param: &str) -> String {
    format!("{param}:prefix")
}

pub(crate) fn rows_for(indexer: &BlindIndexer, resource: &Value) -> Vec<IndexRow> {
    let mut seen = HashSet::new();
    let mut rows = Vec::new();
    let mut push = |param: &str, value: &str, year: Option<i64>| {
        let row = IndexRow {
            param: param.to_owned(),
            hash: indexer.blind(param, value),
            year,
        };
        if seen.insert((row.param.clone(), row.hash)) {
            rows.push(row);
        }
    };
    for iv in crate::fhir_index::extract(resource) {
        match iv.kind {
            IndexKind::Text => {
                // `extract` already returns Text values in `normalize_text` form.
                let v = iv.value;
                if v.is_empty() {
                    continue;
                }
                push(iv.param, &v, None);
                let label = prefix_label(iv.param);
                let mut prefix = String::new();
                for c in v.chars().take(MAX_PREFIX_CHARS) {
                    prefix.push(c);
                    push(&label, &prefix, None);
                }
            }
            IndexKind::Token => {
                for form in token_forms(&iv.value) {
                    push(iv.param, &form, None);
                }
            }
            IndexKind::Date => {
                push(iv.param, &iv.value, date_year(&iv.value));
            }
        }
    }
    rows
}

/// The stored forms of a token value given as `system|code`, `|code` or `code`.
fn token_forms(value: &str) -> Vec<String> {
    match value.split_once('|') {
        Some((system, code)) => {
            let mut forms = Vec::with_capacity(3);
            if !code.is_empty() {
                forms.push(format!("{system}|{code}"));
                forms.push(code.to_owned());
            }
            if !system.is_empty() {
                forms.push(format!("{system}|"));
            }
            forms
        }
        None if value.is_empty() => Vec::new(),
        None => vec![value.to_owned()],
    }
}

/// The year of an ISO date or dateTime (`YYYY`, `YYYY-MM`, `YYYY-MM-DD...`).
fn date_year(value: &str) -> Option<i64> {
    let y = value.get(..4)?;
    if y.bytes().all(|b| b.is_ascii_digit()) {
        y.parse().ok()
    } else {
        None
    }
}

/// The (label, hash) to look up for an exact-match criterion on a blind-indexed parameter, or
/// `None` if the parameter is not indexed for this type.
pub(crate) fn criterion_hash(
    indexer: &BlindIndexer,
    rtype: &str,
    param: &str,
    value: &str,
) -> Option<(String, [u8; 32])> {
    let kind = crate::fhir_index::param_kind(rtype, param)?;
    let value = value.trim();
    let v = match kind {
        IndexKind::Text => crate::fhir_index::normalize_text(value),
        // Email addresses are indexed lowercased.
        IndexKind::Token if param == "email" || value.contains('@') => value.to_lowercase(),
        IndexKind::Token if value.starts_with('|') => return None,
        IndexKind::Token => value.to_owned(),
        IndexKind::Date => value.strip_prefix("eq").unwrap_or(value).to_owned(),
    };
    Some((param.to_owned(), indexer.blind(param, &v)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_forms_cover_fhir_token_search() {
        assert_eq!(
            token_forms("http://x|123"),
            vec!["http://x|123", "123", "http://x|"]
        );
        assert_eq!(token_forms("|123"), vec!["|123", "123"]);
        assert_eq!(token_forms("123"), vec!["123"]);
        assert!(token_forms("").is_empty());
    }

    #[test]
    fn years() {
        assert_eq!(date_year("1987-03-14"), Some(1987));
        assert_eq!(date_year("1987"), Some(1987));
        assert_eq!(date_year("87"), None);
        assert_eq!(date_year("abcd-01"), None);
    }
}
