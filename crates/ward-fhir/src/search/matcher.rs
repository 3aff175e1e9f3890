//! In-memory evaluation of a criterion against a (decrypted) resource, with the same semantics
//! as the store's SQL. The store uses it to confirm candidates that the blind index can only
//! narrow down (identifying dates by year, string values longer than the indexed prefixes).

use serde_json::Value;

use super::date::{self, Prefix, range_matches};
use super::query::{Criterion, CriterionValue, Modifier, Target};
use super::{IndexValue, param_values};
use crate::index::normalize_text;

/// Whether `resource` satisfies `c` (any of its values).
pub fn matches(resource: &Value, c: &Criterion) -> bool {
    match &c.target {
        Target::Id => {
            let id = resource.get("id").and_then(Value::as_str);
            c.values.iter().any(|v| match v {
                CriterionValue::Id(x) => Some(x.as_str()) == id,
                CriterionValue::Missing(m) => *m == id.is_none(),
                _ => false,
            })
        }
        Target::LastUpdated => {
            let lu = resource
                .pointer("/meta/lastUpdated")
                .and_then(Value::as_str)
                .and_then(date::parse_range);
            c.values.iter().any(|v| match (v, lu) {
                (CriterionValue::Date { prefix, range }, Some(r)) => range_matches(*prefix, *range, r),
                (CriterionValue::Missing(m), _) => *m == lu.is_none(),
                _ => false,
            })
        }
        Target::Param(p) => {
            let values = param_values(p, resource);
            c.values.iter().any(|q| match q {
                CriterionValue::Missing(m) => *m == values.is_empty(),
                q => values.iter().any(|v| value_matches(&c.modifier, q, v)),
            })
        }
    }
}

fn value_matches(modifier: &Modifier, q: &CriterionValue, v: &IndexValue) -> bool {
    match (q, v) {
        (CriterionValue::String(s), IndexValue::String { normalized, exact }) => match modifier {
            Modifier::Exact => exact == s,
            _ => normalized.starts_with(&normalize_text(s)),
        },
        (CriterionValue::Token { system, code }, IndexValue::Token { system: vs, code: vc }) => {
            let code_ok = code.as_ref().is_none_or(|c| c == vc);
            let system_ok = match system.as_deref() {
                None => true,
                Some("") => vs.is_none(),
                Some(s) => vs.as_deref() == Some(s),
            };
            code_ok && system_ok
        }
        (CriterionValue::Uri(u), IndexValue::Uri(x)) => u == x,
        (CriterionValue::Reference { rtype, id }, IndexValue::Reference { rtype: vt, id: vid }) => {
            id == vid
                && rtype.as_ref().is_none_or(|t| t == vt)
                && match modifier {
                    Modifier::Type(t) => t == vt,
                    _ => true,
                }
        }
        (CriterionValue::Date { prefix, range }, IndexValue::Date(r)) => range_matches(*prefix, *range, *r),
        (CriterionValue::Date { prefix, range }, IndexValue::BlindDate { value, .. }) => {
            date::parse_range(value).is_some_and(|r| range_matches(*prefix, *range, r))
        }
        (
            CriterionValue::Quantity {
                prefix,
                value,
                lo,
                hi,
                system,
                code,
            },
            IndexValue::Quantity {
                lo: vlo,
                hi: vhi,
                system: vs,
                code: vc,
                unit,
            },
        ) => {
            let unit_ok = match (system, code) {
                (Some(s), Some(c)) => vs.as_ref() == Some(s) && vc.as_ref() == Some(c),
                (Some(s), None) => vs.as_ref() == Some(s),
                (None, Some(c)) => vc.as_ref() == Some(c) || unit.as_ref() == Some(c),
                (None, None) => true,
            };
            unit_ok && quantity_matches(*prefix, *value, *lo, *hi, *vlo, *vhi)
        }
        _ => false,
    }
}

/// Number/quantity comparison: the resource value `vlo..vhi` (open ends = unbounded) against the
/// query value `value` with precision range `lo..hi`.
pub fn quantity_matches(
    prefix: Prefix,
    value: f64,
    lo: f64,
    hi: f64,
    vlo: Option<f64>,
    vhi: Option<f64>,
) -> bool {
    let vlo = vlo.unwrap_or(f64::NEG_INFINITY);
    let vhi = vhi.unwrap_or(f64::INFINITY);
    let eq = vlo >= lo && vhi < hi;
    match prefix {
        Prefix::Eq => eq,
        Prefix::Ne => !eq,
        Prefix::Lt | Prefix::Eb => vlo < value,
        Prefix::Gt | Prefix::Sa => vhi > value,
        Prefix::Le => vlo <= value,
        Prefix::Ge => vhi >= value,
        Prefix::Ap => {
            let m = (value.abs() * 0.1).max(hi - lo);
            vlo <= value + m && vhi >= value - m
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::query::{ParseOptions, SearchQuery};
    use serde_json::json;

    fn crit(rtype: &str, name: &str, value: &str) -> Criterion {
        SearchQuery::parse(rtype, &[(name.into(), value.into())], &ParseOptions::default())
            .unwrap()
            .criteria
            .remove(0)
    }

    #[test]
    fn matches_like_the_index() {
        let p = json!({"resourceType": "Patient", "id": "x", "name": [{"family": "Zyxwarfieldington-Smythe"}],
                       "birthDate": "1937-04-19", "identifier": [{"system": "s", "value": "1"}],
                       "meta": {"lastUpdated": "2026-01-01T00:00:00.000Z"}});
        assert!(matches(&p, &crit("Patient", "family", "zyxwarfieldington-sm")));
        assert!(!matches(&p, &crit("Patient", "family", "zyxwarfieldington-x")));
        assert!(matches(
            &p,
            &crit("Patient", "family:exact", "Zyxwarfieldington-Smythe")
        ));
        assert!(!matches(
            &p,
            &crit("Patient", "family:exact", "zyxwarfieldington-smythe")
        ));
        assert!(matches(&p, &crit("Patient", "birthdate", "1937")));
        assert!(matches(&p, &crit("Patient", "birthdate", "1937-04-19")));
        assert!(!matches(&p, &crit("Patient", "birthdate", "1937-04-20")));
        assert!(matches(&p, &crit("Patient", "birthdate", "lt1937-04-20")));
        assert!(matches(&p, &crit("Patient", "birthdate", "gt1937-04-18")));
        assert!(!matches(&p, &crit("Patient", "birthdate", "gt1937-04-19")));
        assert!(matches(&p, &crit("Patient", "identifier", "s|1")));
        assert!(matches(&p, &crit("Patient", "identifier", "s|")));
        assert!(!matches(&p, &crit("Patient", "identifier", "|1")));
        assert!(matches(&p, &crit("Patient", "gender:missing", "true")));
        assert!(matches(&p, &crit("Patient", "_id", "y,x")));
        assert!(matches(&p, &crit("Patient", "_lastUpdated", "2026-01")));
        let o = json!({"resourceType": "Observation", "valueQuantity": {"value": 5.4, "code": "mg", "system": "u"}});
        assert!(matches(&o, &crit("Observation", "value-quantity", "5.4")));
        assert!(matches(&o, &crit("Observation", "value-quantity", "5.4|u|mg")));
        assert!(matches(&o, &crit("Observation", "value-quantity", "gt5|u|mg")));
        assert!(!matches(&o, &crit("Observation", "value-quantity", "lt5")));
        assert!(!matches(&o, &crit("Observation", "value-quantity", "5.4|u|g")));
        assert!(matches(&o, &crit("Observation", "value-quantity", "ap5")));
    }
}
