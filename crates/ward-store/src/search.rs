//! FHIR search over the typed index (SPEC F-2, F-3, MN-1, EN-4, AC-8).
//!
//! A [`SearchQuery`] (parsed by ward-fhir) becomes one SQL statement over `resource_current`,
//! with one `EXISTS` sub-query per criterion (AND) whose alternatives are ORed, the optional
//! patient compartment as one more `EXISTS` (so a restricted search can never return anything
//! outside it), and keyset paging on the sort keys plus the id. Search values only ever reach the
//! database as bound parameters: blind hashes for strings, tokens and uris and identifying dates;
//! plaintext only for clinical dates, quantities and reference targets.
//!
//! Criteria the index can only narrow (identifying dates by year, strings longer than the
//! indexed prefixes) are confirmed on the decrypted resources with
//! `ward_fhir::search::matches`; paging then fetches in batches until a page is full.
//!
//! Cursors are opaque: the query parameters and the keyset position, sealed with AES-256-GCM
//! under the data key with AAD binding the tenant and resource type. They hold no readable PHI and
//! cannot be forged or moved to another type.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::AnyConnection;
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};
use ward_crypto::Aad;
use ward_fhir::search::date::{DateRange, Prefix, widen};
use ward_fhir::search::{
    Criterion, CriterionValue, Modifier, ParamKind, SearchError, SearchQuery, SortKey, Target, TotalMode,
};

use crate::index::{self, Arg};
use crate::{StoreError, StoredJson, VersionRow};

/// One page of search results.
#[derive(Debug, Clone)]
pub struct SearchPage {
    /// The matches of this page, in sort order, as their verified JSON (unparsed: a page of
    /// large resources costs its bytes, not a parsed tree of each).
    pub matches: Vec<StoredJson>,
    /// The number of matches of the whole search (`_total=accurate`); `None` when not asked
    /// for, or when counting would examine more than [`SearchQuery::max_total`] candidates.
    pub total: Option<u64>,
    /// Cursor of the next page, if there are more matches.
    pub next: Option<String>,
    /// Cursor of the previous page, if this page is not the first.
    pub prev: Option<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(crate) struct CursorState {
    pub(crate) v: u8,
    pub(crate) rtype: String,
    pub(crate) compartment: Option<String>,
    pub(crate) params: Vec<(String, String)>,
    /// Sort key values of the boundary row (the last row for `next`, the first for `prev`).
    pub(crate) keys: Vec<Value>,
    pub(crate) id: String,
    /// true: the rows after the boundary; false: the rows before it.
    pub(crate) forward: bool,
    /// Unix seconds after which the cursor is refused: a leaked next-page URL stops working.
    pub(crate) exp: u64,
    /// The client the cursor was issued to ([`SearchQuery::cursor_holder`]).
    pub(crate) holder: Option<String>,
}

/// How long a paging cursor stays usable.
pub(crate) const CURSOR_LIFETIME_SECS: u64 = 3600;

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

const CURSOR_AAD_TYPE: &str = "search-cursor";

/// Ciphertexts up to this size come with their search row; a larger one is read on its own,
/// and only once it is known to fit the page. One statement of a search therefore holds at most
/// `CHUNK_ROWS * INLINE_MAX` bytes of ciphertext, whatever the size of the resources.
pub(crate) const INLINE_MAX: usize = 32 * 1024;
/// Most bytes of resources one page of [`Store::find_matching`] holds.
const FIND_PAGE_BYTES: usize = 4 * 1024 * 1024;
/// Most rows one statement of a search reads.
pub(crate) const CHUNK_ROWS: usize = 128;

/// A search row: its sort key values, the version (its ciphertext only if small) and the
/// ciphertext's size.
struct Candidate {
    keys: Vec<Value>,
    row: VersionRow,
    size: usize,
}

/// SQL under construction; values are always bound.
pub(crate) struct Sql {
    pub(crate) text: String,
    pub(crate) args: Vec<Arg>,
}

impl Sql {
    pub(crate) fn new() -> Sql {
        Sql {
            text: String::new(),
            args: Vec::new(),
        }
    }

    pub(crate) fn arg(&mut self, a: Arg) -> String {
        self.args.push(a);
        format!("${}", self.args.len())
    }

    pub(crate) fn s(&mut self, s: &str) -> String {
        self.arg(Arg::Str(s.to_owned()))
    }

    pub(crate) fn i(&mut self, v: i64) -> String {
        self.arg(Arg::I64(Some(v)))
    }

    fn f(&mut self, v: f64) -> String {
        self.arg(Arg::F64(Some(v)))
    }
}

pub(crate) fn bind<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    args: &[Arg],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    for a in args {
        q = match a {
            Arg::Str(s) => q.bind(s.clone()),
            Arg::OptStr(s) => q.bind(s.clone()),
            Arg::I64(v) => q.bind(*v),
            Arg::F64(v) => q.bind(*v),
            Arg::Bytes(b) => q.bind(b.clone()),
        };
    }
    q
}

/// `items` joined with `op` as a balanced tree of parentheses (`neutral` if there are none):
/// SQLite limits the depth of an expression tree (1000), and a flat `a OR b OR ...` chain is as
/// deep as it is long.
fn balanced(items: &[String], op: &str, neutral: &str) -> String {
    match items {
        [] => neutral.to_owned(),
        [one] => one.clone(),
        _ => {
            let (l, r) = items.split_at(items.len() / 2);
            format!("({} {op} {})", balanced(l, op, neutral), balanced(r, op, neutral))
        }
    }
}

/// Sub-query criteria joined one by one before the rest are grouped (see `search_base`).
const JOINED_CRITERIA: usize = 4;

/// The SQL of one criterion: a condition on the row, or the ids it selects (`c.id IN`) or
/// excludes (`c.id NOT IN`).
enum Cond {
    Plain(String),
    In(String),
    NotIn(String),
}

fn owner(alias: &str) -> String {
    format!("{alias}.tenant = c.tenant AND {alias}.rtype = c.rtype AND {alias}.id = c.id")
}

/// The SQL condition on date columns `lo`/`hi` for `prefix q`.
fn date_cond(sql: &mut Sql, lo: &str, hi: &str, prefix: Prefix, q: DateRange) -> String {
    match prefix {
        Prefix::Eq => format!("({lo} >= {} AND {hi} <= {})", sql.i(q.lo), sql.i(q.hi)),
        Prefix::Ne => format!("NOT ({lo} >= {} AND {hi} <= {})", sql.i(q.lo), sql.i(q.hi)),
        Prefix::Lt => format!("{lo} < {}", sql.i(q.lo)),
        Prefix::Gt => format!("{hi} > {}", sql.i(q.hi)),
        Prefix::Le => format!("{lo} <= {}", sql.i(q.hi)),
        Prefix::Ge => format!("{hi} >= {}", sql.i(q.lo)),
        Prefix::Sa => format!("{lo} > {}", sql.i(q.hi)),
        Prefix::Eb => format!("{hi} < {}", sql.i(q.lo)),
        Prefix::Ap => {
            let w = widen(q);
            format!("({lo} <= {} AND {hi} >= {})", sql.i(w.hi), sql.i(w.lo))
        }
    }
}

/// The candidate years of an identifying date for `prefix q` (confirmed after decryption).
fn year_cond(sql: &mut Sql, prefix: Prefix, q: DateRange) -> String {
    let (ylo, yhi) = q.years();
    let (ylo, yhi) = (i64::from(ylo), i64::from(yhi));
    match prefix {
        Prefix::Eq => format!("d.year BETWEEN {} AND {}", sql.i(ylo), sql.i(yhi)),
        Prefix::Ne => "d.year IS NOT NULL".to_owned(),
        Prefix::Lt | Prefix::Eb => format!("d.year <= {}", sql.i(ylo)),
        Prefix::Le => format!("d.year <= {}", sql.i(yhi)),
        Prefix::Gt | Prefix::Sa => format!("d.year >= {}", sql.i(yhi)),
        Prefix::Ge => format!("d.year >= {}", sql.i(ylo)),
        Prefix::Ap => {
            let (wlo, whi) = widen(q).years();
            format!(
                "d.year BETWEEN {} AND {}",
                sql.i(i64::from(wlo)),
                sql.i(i64::from(whi))
            )
        }
    }
}

fn quantity_cond(sql: &mut Sql, prefix: Prefix, value: f64, lo: f64, hi: f64) -> String {
    match prefix {
        Prefix::Eq => format!(
            "(q.lo IS NOT NULL AND q.lo >= {} AND q.hi IS NOT NULL AND q.hi < {})",
            sql.f(lo),
            sql.f(hi)
        ),
        Prefix::Ne => format!(
            "NOT (q.lo IS NOT NULL AND q.lo >= {} AND q.hi IS NOT NULL AND q.hi < {})",
            sql.f(lo),
            sql.f(hi)
        ),
        Prefix::Lt | Prefix::Eb => format!("(q.lo IS NULL OR q.lo < {})", sql.f(value)),
        Prefix::Gt | Prefix::Sa => format!("(q.hi IS NULL OR q.hi > {})", sql.f(value)),
        Prefix::Le => format!("(q.lo IS NULL OR q.lo <= {})", sql.f(value)),
        Prefix::Ge => format!("(q.hi IS NULL OR q.hi >= {})", sql.f(value)),
        Prefix::Ap => {
            let m = (value.abs() * 0.1).max(hi - lo);
            format!(
                "((q.lo IS NULL OR q.lo <= {}) AND (q.hi IS NULL OR q.hi >= {}))",
                sql.f(value + m),
                sql.f(value - m)
            )
        }
    }
}

impl crate::Store {
    /// The blind hash of `form` under `label`.
    fn blind(&self, label: &str, form: &str) -> Arg {
        Arg::Bytes(Some(self.inner.indexer.blind(label, form).to_vec()))
    }

    /// The SQL condition for one criterion.
    /// `alias.tenant = .. AND alias.rtype = ..` with fresh bound values. Criteria are
    /// uncorrelated `c.id IN (SELECT ..)` sub-queries, so both planners can drive the search
    /// from the index instead of probing every resource of the type.
    fn scope(&self, sql: &mut Sql, alias: &str, rtype: &str) -> String {
        let t = sql.s(self.tenant());
        let r = sql.s(rtype);
        format!("{alias}.tenant = {t} AND {alias}.rtype = {r}")
    }

    fn criterion_sql(&self, sql: &mut Sql, rtype: &str, c: &Criterion) -> Result<Cond, StoreError> {
        let missing: Vec<bool> = c
            .values
            .iter()
            .filter_map(|v| match v {
                CriterionValue::Missing(m) => Some(*m),
                _ => None,
            })
            .collect();
        let p = match &c.target {
            Target::Id => {
                if !missing.is_empty() {
                    return Ok(Cond::Plain(
                        if missing.contains(&false) {
                            "1 = 1"
                        } else {
                            "1 = 0"
                        }
                        .to_owned(),
                    ));
                }
                let ids: Vec<String> = c
                    .values
                    .iter()
                    .filter_map(|v| match v {
                        CriterionValue::Id(id) => Some(sql.s(id)),
                        _ => None,
                    })
                    .collect();
                return Ok(Cond::Plain(format!("c.id IN ({})", ids.join(", "))));
            }
            Target::LastUpdated => {
                if !missing.is_empty() {
                    return Ok(Cond::Plain(
                        if missing.contains(&false) {
                            "1 = 1"
                        } else {
                            "1 = 0"
                        }
                        .to_owned(),
                    ));
                }
                let conds: Vec<String> = c
                    .values
                    .iter()
                    .filter_map(|v| match v {
                        CriterionValue::Date { prefix, range } => Some(date_cond(
                            sql,
                            "v.last_updated_ms",
                            "v.last_updated_ms",
                            *prefix,
                            *range,
                        )),
                        _ => None,
                    })
                    .collect();
                return Ok(Cond::Plain(balanced(&conds, "OR", "1 = 0")));
            }
            Target::Param(p) => *p,
        };
        let code = p.code.as_str();
        let (table, alias) = match p.kind {
            ParamKind::String | ParamKind::Token | ParamKind::Uri => ("search_blind", "b"),
            ParamKind::Date => ("search_date", "d"),
            ParamKind::Reference => ("search_reference", "r"),
            ParamKind::Quantity | ParamKind::Number => ("search_quantity", "q"),
        };
        if !missing.is_empty() {
            // `:missing=true` and `:missing=false` together match everything.
            if missing.contains(&true) && missing.contains(&false) {
                return Ok(Cond::Plain("1 = 1".to_owned()));
            }
            let label = if p.kind == ParamKind::String {
                index::exact_label(code)
            } else {
                code.to_owned()
            };
            let l = sql.s(&label);
            let scope = self.scope(sql, alias, rtype);
            let select =
                format!("SELECT {alias}.id FROM {table} {alias} WHERE {scope} AND {alias}.param = {l}");
            return Ok(if missing.contains(&true) {
                Cond::NotIn(select)
            } else {
                Cond::In(select)
            });
        }
        let mut alternatives = Vec::new();
        let label = match (p.kind, &c.modifier) {
            (ParamKind::String, Modifier::Exact) => index::exact_label(code),
            (ParamKind::String, _) => index::prefix_label(code),
            _ => code.to_owned(),
        };
        let l = sql.s(&label);
        for v in &c.values {
            let cond = match v {
                CriterionValue::String(s) => {
                    let form = match c.modifier {
                        Modifier::Exact => s.clone(),
                        _ => index::lookup_prefix(&ward_fhir::index::normalize_text(s)),
                    };
                    if form.is_empty() {
                        continue;
                    }
                    let h = self.blind(&label, &form);
                    format!("b.hash = {}", sql.arg(h))
                }
                CriterionValue::Token { system, code: tc } => {
                    let form = match (system.as_deref(), tc.as_deref()) {
                        (None, Some(tc)) => index::token_any(tc),
                        (Some(""), Some(tc)) => index::token_no_system(tc),
                        (Some(s), Some(tc)) => index::token_system_code(s, tc),
                        (Some(s), None) => index::token_system(s),
                        (None, None) => continue,
                    };
                    let h = self.blind(&label, &form);
                    format!("b.hash = {}", sql.arg(h))
                }
                CriterionValue::Uri(u) => {
                    let h = self.blind(&label, &index::uri_form(u));
                    format!("b.hash = {}", sql.arg(h))
                }
                CriterionValue::Reference { rtype, id } => {
                    let rtype = match &c.modifier {
                        Modifier::Type(t) => Some(t),
                        _ => rtype.as_ref(),
                    };
                    match rtype {
                        Some(t) => format!("(r.target_id = {} AND r.target_type = {})", sql.s(id), sql.s(t)),
                        None => format!("r.target_id = {}", sql.s(id)),
                    }
                }
                CriterionValue::Date { prefix, range } => {
                    if p.identifying {
                        year_cond(sql, *prefix, *range)
                    } else {
                        date_cond(sql, "d.lo_ms", "d.hi_ms", *prefix, *range)
                    }
                }
                CriterionValue::Quantity {
                    prefix,
                    value,
                    lo,
                    hi,
                    system,
                    code: qc,
                } => {
                    let mut cond = quantity_cond(sql, *prefix, *value, *lo, *hi);
                    match (system, qc) {
                        (Some(s), Some(qc)) => {
                            cond = format!("{cond} AND q.system = {} AND q.code = {}", sql.s(s), sql.s(qc));
                        }
                        (Some(s), None) => cond = format!("{cond} AND q.system = {}", sql.s(s)),
                        (None, Some(qc)) => {
                            cond = format!("{cond} AND (q.code = {} OR q.unit = {})", sql.s(qc), sql.s(qc));
                        }
                        (None, None) => {}
                    }
                    format!("({cond})")
                }
                CriterionValue::Id(_) | CriterionValue::Missing(_) => continue,
            };
            alternatives.push(cond);
        }
        if alternatives.is_empty() {
            return Ok(Cond::Plain("1 = 0".to_owned()));
        }
        let scope = self.scope(sql, alias, rtype);
        Ok(Cond::In(format!(
            "SELECT {alias}.id FROM {table} {alias} WHERE {scope} AND {alias}.param = {l} AND {}",
            balanced(&alternatives, "OR", "1 = 0")
        )))
    }

    /// `FROM ... WHERE ...` of a search (criteria and compartment), with the sort key columns.
    fn search_base(
        &self,
        sql: &mut Sql,
        q: &SearchQuery,
        sort: &[SortKey],
    ) -> Result<(String, String), StoreError> {
        let tenant = sql.s(self.tenant());
        let rtype = sql.s(&q.rtype);
        let mut conds = vec![
            format!("c.tenant = {tenant}"),
            format!("c.rtype = {rtype}"),
            "c.deleted = 0".to_owned(),
        ];
        if let Some(patient) = &q.compartment {
            let p = sql.s(patient);
            let scope = self.scope(sql, "k", &q.rtype);
            conds.push(format!(
                "c.id IN (SELECT k.id FROM compartment k WHERE k.patient_id = {p} AND {scope})"
            ));
        }
        let (mut ins, mut not_ins) = (Vec::new(), Vec::new());
        for c in &q.criteria {
            match self.criterion_sql(sql, &q.rtype, c)? {
                Cond::Plain(s) => conds.push(s),
                Cond::In(s) => ins.push(s),
                Cond::NotIn(s) => not_ins.push(s),
            }
        }
        // Each sub-query is a semi-join (anti-join) that the planner may order freely, but
        // PostgreSQL's planning time grows steeply with their number (64: about 0.4 s, 256:
        // minutes). Past the first few, the rest become one intersection (union), planned
        // in linear time.
        let split = ins.len().min(JOINED_CRITERIA);
        let (joined, grouped) = ins.split_at(split);
        conds.extend(joined.iter().map(|s| format!("c.id IN ({s})")));
        if !grouped.is_empty() {
            conds.push(format!("c.id IN ({})", grouped.join(" INTERSECT ")));
        }
        let split = not_ins.len().min(JOINED_CRITERIA);
        let (joined, grouped) = not_ins.split_at(split);
        conds.extend(joined.iter().map(|s| format!("c.id NOT IN ({s})")));
        if !grouped.is_empty() {
            conds.push(format!("c.id NOT IN ({})", grouped.join(" UNION ")));
        }
        let mut keys = Vec::new();
        for (i, k) in sort.iter().enumerate() {
            let expr = match &k.target {
                Target::Id => "c.id".to_owned(),
                Target::LastUpdated => "v.last_updated_ms".to_owned(),
                Target::Param(p) => {
                    let l = sql.s(&p.code);
                    // Missing values sort last in both directions.
                    if k.desc {
                        let floor = sql.i(i64::MIN);
                        format!(
                            "COALESCE((SELECT MAX(d.hi_ms) FROM search_date d WHERE {} AND d.param = {l}), {floor})",
                            owner("d")
                        )
                    } else {
                        let ceiling = sql.i(i64::MAX);
                        format!(
                            "COALESCE((SELECT MIN(d.lo_ms) FROM search_date d WHERE {} AND d.param = {l}), {ceiling})",
                            owner("d")
                        )
                    }
                }
            };
            keys.push(format!("{expr} AS s{i}"));
        }
        let from = "FROM resource_current c JOIN resource_version v \
             ON v.tenant = c.tenant AND v.rtype = c.rtype AND v.id = c.id AND v.version = c.version"
            .to_owned();
        let select = if keys.is_empty() {
            String::new()
        } else {
            format!(", {}", keys.join(", "))
        };
        Ok((
            select,
            format!("{from} WHERE {}", balanced(&conds, "AND", "1 = 1")),
        ))
    }

    /// Runs a search. `q.cursor`, if set, must be a cursor this store issued for the same
    /// type, compartment and parameters. A page ends after `q.count` matches or before the
    /// match that would take its stored bytes past `max_bytes`, whichever comes first; it
    /// always holds at least one match when there is one, so paging always makes progress.
    pub async fn search(&self, q: &SearchQuery, max_bytes: usize) -> Result<SearchPage, StoreError> {
        let mut conn = CloseIfDropped(Some(self.inner.reader.acquire().await?));
        let page = match conn.0.as_mut() {
            Some(c) => self.search_on(c, q, max_bytes).await,
            None => Err(StoreError::Corrupt("connection".into())),
        };
        // Finished (or failed on its own): the connection goes back to the pool.
        if let Some(c) = conn.0.take() {
            drop(c);
        }
        page
    }

    /// [`Store::search`] on `conn` (a reader, or a write transaction's connection).
    async fn search_on(
        &self,
        conn: &mut AnyConnection,
        q: &SearchQuery,
        max_bytes: usize,
    ) -> Result<SearchPage, StoreError> {
        let position = match &q.cursor {
            Some(c) => {
                let state = self.open_cursor_state(&q.rtype, q.cursor_holder.as_deref(), c)?;
                if state.params != q.params || state.compartment != q.compartment {
                    return Err(StoreError::InvalidCursor);
                }
                Some(state)
            }
            None => None,
        };
        // Sort keys: as requested (default newest first), then the id as the tie-breaker.
        let mut sort = if q.sort.is_empty() {
            vec![SortKey {
                target: Target::LastUpdated,
                desc: true,
            }]
        } else {
            q.sort.clone()
        };
        if !sort.iter().any(|k| k.target == Target::Id) {
            sort.push(SortKey {
                target: Target::Id,
                desc: false,
            });
        }
        let post: Vec<&Criterion> = q.criteria.iter().filter(|c| c.needs_post_filter()).collect();

        let total = if q.total == TotalMode::Accurate {
            self.count(conn, q, &post).await?
        } else {
            None
        };
        if q.count == 0 {
            return Ok(SearchPage {
                matches: Vec::new(),
                total,
                next: None,
                prev: None,
            });
        }

        let forward = position.as_ref().is_none_or(|p| p.forward);
        let mut boundary: Option<(Vec<Value>, String)> =
            position.as_ref().map(|p| (p.keys.clone(), p.id.clone()));
        let mut found: Vec<(StoredJson, Vec<Value>)> = Vec::new();
        let mut bytes = 0usize;
        let mut more = false;
        // Candidates one page may examine (post-filtered ones are decrypted): beyond, the page
        // ends early with a cursor at the last one examined, so no request decrypts the whole
        // population.
        let mut budget = q.max_total.max(q.count.saturating_add(1));
        let mut stopped = false;
        'scan: loop {
            // Without a post-filter, one row past the page says whether there is a next one.
            let limit = if post.is_empty() {
                (q.count + 1).saturating_sub(found.len()).min(CHUNK_ROWS)
            } else {
                CHUNK_ROWS
            }
            .min(budget);
            let candidates = self
                .fetch(conn, q, &sort, boundary.as_ref(), forward, limit)
                .await?;
            let n = candidates.len();
            budget = budget.saturating_sub(n);
            for c in candidates {
                boundary = Some((c.keys.clone(), c.row.id.clone()));
                let full =
                    found.len() >= q.count || (!found.is_empty() && bytes.saturating_add(c.size) > max_bytes);
                if full && post.is_empty() {
                    more = true;
                    break 'scan;
                }
                let json = self.open_candidate(conn, c.row).await?;
                if !post.is_empty() {
                    let r = json.value()?;
                    if !post.iter().all(|p| ward_fhir::search::matches(&r, p)) {
                        continue;
                    }
                }
                if full {
                    more = true;
                    break 'scan;
                }
                bytes = bytes.saturating_add(c.size);
                found.push((json, c.keys));
            }
            if n < limit {
                break;
            }
            if budget == 0 {
                stopped = true;
                break;
            }
        }
        if !forward {
            found.reverse();
        }
        let cursor = |keys: &[Value], id: &str, forward: bool| {
            self.seal_cursor(&CursorState {
                v: 1,
                rtype: q.rtype.clone(),
                compartment: q.compartment.clone(),
                params: q.params.clone(),
                keys: keys.to_vec(),
                id: id.to_owned(),
                forward,
                exp: unix_now() + CURSOR_LIFETIME_SECS,
                holder: q.cursor_holder.clone(),
            })
        };
        let (has_next, has_prev) = if forward {
            (more, position.is_some())
        } else {
            (position.is_some(), more)
        };
        // A page that stopped at its budget continues (in its direction) after the last
        // candidate examined, matching or not.
        let resume = match (stopped, &boundary) {
            (true, Some((k, id))) => Some(cursor(k, id, forward)?),
            _ => None,
        };
        let next = match (has_next, found.last()) {
            _ if forward && resume.is_some() => resume.clone(),
            (true, Some((s, k))) => Some(cursor(k, &s.id, true)?),
            _ => None,
        };
        let prev = match (has_prev, found.first()) {
            _ if !forward && resume.is_some() => resume,
            (true, Some((s, k))) => Some(cursor(k, &s.id, false)?),
            _ => None,
        };
        Ok(SearchPage {
            matches: found.into_iter().map(|(s, _)| s).collect(),
            total,
            next,
            prev,
        })
    }

    /// Rows after (or before) `boundary` in sort order, at most `limit`.
    async fn fetch(
        &self,
        conn: &mut AnyConnection,
        q: &SearchQuery,
        sort: &[SortKey],
        boundary: Option<&(Vec<Value>, String)>,
        forward: bool,
        limit: usize,
    ) -> Result<Vec<Candidate>, StoreError> {
        let mut sql = Sql::new();
        let (keys, from_where) = self.search_base(&mut sql, q, sort)?;
        let mut outer = Vec::new();
        if let Some((values, id)) = boundary {
            // Lexicographic keyset: (s0 > K0) OR (s0 = K0 AND s1 > K1) OR ...
            let mut ors = Vec::new();
            for i in 0..sort.len() {
                let mut ands = Vec::new();
                for (j, key) in sort.iter().enumerate().take(i + 1) {
                    let value = if key.target == Target::Id {
                        Arg::Str(id.clone())
                    } else {
                        match values.get(j) {
                            Some(Value::Number(n)) => Arg::I64(n.as_i64()),
                            Some(Value::String(s)) => Arg::Str(s.clone()),
                            _ => return Err(StoreError::InvalidCursor),
                        }
                    };
                    let ph = sql.arg(value);
                    let op = if j < i {
                        "="
                    } else if key.desc == forward {
                        "<"
                    } else {
                        ">"
                    };
                    ands.push(format!("t.s{j} {op} {ph}"));
                }
                ors.push(format!("({})", ands.join(" AND ")));
            }
            outer.push(format!("({})", ors.join(" OR ")));
        }
        let order: Vec<String> = sort
            .iter()
            .enumerate()
            .map(|(i, k)| format!("t.s{i} {}", if k.desc == forward { "DESC" } else { "ASC" }))
            .collect();
        let limit = sql.i(i64::try_from(limit).unwrap_or(i64::MAX));
        let columns = sized_columns();
        let text = format!(
            "SELECT t.* FROM (SELECT {columns}{keys} {from_where}) t {} ORDER BY {} LIMIT {limit}",
            if outer.is_empty() {
                String::new()
            } else {
                format!("WHERE {}", outer.join(" AND "))
            },
            order.join(", ")
        );
        sql.text = text;
        // Only generated SQL and placeholders are interpolated; every value is bound.
        let query = bind(sqlx::query(AssertSqlSafe(sql.text)), &sql.args);
        let rows = query.fetch_all(&mut *conn).await?;
        rows.iter()
            .map(|row| {
                Ok(Candidate {
                    keys: (0..sort.len())
                        .map(|i| key_value(row, i, &sort[i]))
                        .collect::<Result<_, _>>()?,
                    row: VersionRow::from_any(row)?,
                    size: row_size(row)?,
                })
            })
            .collect()
    }

    /// The verified JSON of a search row.
    async fn open_candidate(
        &self,
        conn: &mut AnyConnection,
        row: VersionRow,
    ) -> Result<StoredJson, StoreError> {
        let row = self.with_ciphertext(conn, row).await?;
        self.live_json(row)
    }

    /// `row` with its ciphertext, read on its own if it was too large to come with the row
    /// (see [`sized_columns`]); `None` if the version is gone.
    pub(crate) async fn with_ciphertext(
        &self,
        conn: &mut AnyConnection,
        row: VersionRow,
    ) -> Result<Option<VersionRow>, StoreError> {
        if row.ciphertext.is_some() || row.deleted {
            return Ok(Some(row));
        }
        let full = self
            .point_query(&row.rtype, &row.id, Some(row.version))
            .fetch_optional(&mut *conn)
            .await?;
        Ok(full.map(|r| VersionRow::from_any(&r)).transpose()?)
    }

    /// The number of matches, or `None` if there are more than `q.max_total` candidates: the
    /// count stops there (SQL `LIMIT`), and post-filtered candidates are decrypted up to there.
    async fn count(
        &self,
        conn: &mut AnyConnection,
        q: &SearchQuery,
        post: &[&Criterion],
    ) -> Result<Option<u64>, StoreError> {
        let mut sql = Sql::new();
        let (_, from_where) = self.search_base(&mut sql, q, &[])?;
        let cap = u64::try_from(q.max_total).unwrap_or(u64::MAX);
        let limit = sql.i(i64::try_from(q.max_total.saturating_add(1)).unwrap_or(i64::MAX));
        if post.is_empty() {
            let text = format!("SELECT COUNT(*) AS n FROM (SELECT 1 AS one {from_where} LIMIT {limit}) t");
            let row = bind(sqlx::query(AssertSqlSafe(text)), &sql.args)
                .fetch_one(&mut *conn)
                .await?;
            let n = u64::try_from(row.try_get::<i64, _>("n")?).unwrap_or(0);
            return Ok((n <= cap).then_some(n));
        }
        // Confirming needs the resources: scan at most `cap + 1` candidates in chunks by id, one
        // decrypted at a time.
        let by_id = [SortKey {
            target: Target::Id,
            desc: false,
        }];
        let mut boundary: Option<(Vec<Value>, String)> = None;
        let mut examined = 0usize;
        let mut n = 0;
        loop {
            let candidates = self
                .fetch(conn, q, &by_id, boundary.as_ref(), true, CHUNK_ROWS)
                .await?;
            let got = candidates.len();
            examined = examined.saturating_add(got);
            if u64::try_from(examined).unwrap_or(u64::MAX) > cap {
                return Ok(None);
            }
            for c in candidates {
                boundary = Some((c.keys, c.row.id.clone()));
                let r = self.open_candidate(conn, c.row).await?.value()?;
                if post.iter().all(|p| ward_fhir::search::matches(&r, p)) {
                    n += 1;
                }
            }
            if got < CHUNK_ROWS {
                return Ok(Some(n));
            }
        }
    }

    pub(crate) fn seal_cursor(&self, state: &CursorState) -> Result<String, StoreError> {
        let plain = serde_json::to_vec(state).map_err(|_| StoreError::Corrupt("cursor".into()))?;
        let aad = Aad {
            tenant: self.tenant(),
            rtype: CURSOR_AAD_TYPE,
            id: &state.rtype,
            version: 0,
        };
        let (epoch, sealed) = self.inner.envelope.seal(&aad, &plain)?;
        let mut bytes = epoch.to_be_bytes().to_vec();
        bytes.extend(sealed);
        Ok(hex::encode(bytes))
    }

    pub(crate) fn open_cursor_state(
        &self,
        rtype: &str,
        holder: Option<&str>,
        cursor: &str,
    ) -> Result<CursorState, StoreError> {
        let bytes = hex::decode(cursor).map_err(|_| StoreError::InvalidCursor)?;
        if bytes.len() < 4 {
            return Err(StoreError::InvalidCursor);
        }
        let epoch = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let aad = Aad {
            tenant: self.tenant(),
            rtype: CURSOR_AAD_TYPE,
            id: rtype,
            version: 0,
        };
        let plain = self
            .inner
            .envelope
            .open(epoch, &aad, &bytes[4..])
            .map_err(|_| StoreError::InvalidCursor)?;
        let state: CursorState = serde_json::from_slice(&plain).map_err(|_| StoreError::InvalidCursor)?;
        if state.v != 1 || state.rtype != rtype || state.exp < unix_now() || state.holder.as_deref() != holder
        {
            return Err(StoreError::InvalidCursor);
        }
        Ok(state)
    }

    /// The query parameters a paging cursor carries (so a next-page URL needs nothing but the
    /// cursor, and PHI sent in a POST body stays out of URLs). `holder`: who presents it.
    pub fn cursor_params(
        &self,
        rtype: &str,
        holder: Option<&str>,
        cursor: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        Ok(self.open_cursor_state(rtype, holder, cursor)?.params)
    }

    /// Ids of the live resources of `rtype` matching all criteria (FHIR search semantics), sorted.
    /// Used by conditional interactions (`If-None-Exist`).
    pub async fn find_matching(
        &self,
        rtype: &str,
        criteria: &[(String, String)],
    ) -> Result<Vec<String>, StoreError> {
        let mut conn = self.inner.reader.acquire().await?;
        self.find_matching_on(&mut conn, rtype, criteria).await
    }

    /// [`Store::find_matching`] on `conn` (a write transaction evaluates conditional creates
    /// on its own connection, so waiting transactions never need a second one).
    pub(crate) async fn find_matching_on(
        &self,
        conn: &mut AnyConnection,
        rtype: &str,
        criteria: &[(String, String)],
    ) -> Result<Vec<String>, StoreError> {
        if criteria.is_empty() {
            return Err(StoreError::UnsupportedCriteria(String::new()));
        }
        let mut q = SearchQuery::parse(
            rtype,
            criteria,
            &ward_fhir::search::query::ParseOptions::default(),
        )
        .map_err(|e: SearchError| match e {
            SearchError::TooManyParams(_) | SearchError::TooManyValues(_) => StoreError::Search(e),
            e => StoreError::UnsupportedCriteria(e.param().to_owned()),
        })?;
        if q.criteria.is_empty() {
            return Err(StoreError::UnsupportedCriteria(String::new()));
        }
        const MOST: usize = 1000;
        q.count = MOST;
        q.total = TotalMode::None;
        q.sort = vec![SortKey {
            target: Target::Id,
            desc: false,
        }];
        // Only the ids are kept: pages of at most FIND_PAGE_BYTES of resources, followed until
        // the answer is complete.
        let mut ids = Vec::new();
        loop {
            let page = self.search_on(conn, &q, FIND_PAGE_BYTES).await?;
            ids.extend(page.matches.into_iter().map(|s| s.id));
            match page.next {
                Some(next) if ids.len() < MOST => {
                    q.cursor = Some(next);
                    q.count = MOST - ids.len();
                }
                _ => return Ok(ids),
            }
        }
    }

    /// A keyed hash of a search parameter value for the audit trail (AU-1: search values are
    /// recorded hashed, never in plaintext). Same key as the blind index, separate domain.
    pub fn audit_hash(&self, name: &str, value: &str) -> String {
        hex::encode(self.inner.indexer.blind(&format!("audit-query:{name}"), value))
    }

    /// Ids of the patients whose compartment holds `rtype/id`.
    pub async fn compartments_of(&self, rtype: &str, id: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT patient_id FROM compartment WHERE tenant = $1 AND rtype = $2 AND id = $3 ORDER BY patient_id",
        )
        .bind(self.tenant())
        .bind(rtype)
        .bind(id)
        .fetch_all(&self.inner.reader)
        .await?;
        rows.iter()
            .map(|r| r.try_get::<String, _>("patient_id").map_err(StoreError::from))
            .collect()
    }
}

/// A pooled connection that is closed, not returned, when the future using it is dropped
/// mid-query (the request timed out or its client went away). Returned to the pool, it would
/// first wait for the abandoned statement to finish; closed, PostgreSQL stops the statement
/// (`client_connection_check_interval`, and `statement_timeout` in any case).
struct CloseIfDropped(Option<sqlx::pool::PoolConnection<sqlx::Any>>);

impl Drop for CloseIfDropped {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            c.close_on_drop();
        }
    }
}

/// The version columns of `v`, with the ciphertext only when it is small (see [`INLINE_MAX`])
/// and its size as `size`.
pub(crate) fn sized_columns() -> String {
    format!(
        "v.rtype, v.id, v.version, v.last_updated_ms, v.deleted, v.key_epoch, v.content_hash, \
         CAST(COALESCE(length(v.ciphertext), 0) AS BIGINT) AS size, \
         CASE WHEN length(v.ciphertext) <= {INLINE_MAX} THEN v.ciphertext END AS ciphertext"
    )
}

/// The `size` column of a row selected with [`sized_columns`].
pub(crate) fn row_size(row: &AnyRow) -> Result<usize, StoreError> {
    Ok(usize::try_from(row.try_get::<i64, _>("size")?).unwrap_or(usize::MAX))
}

fn key_value(row: &AnyRow, i: usize, key: &SortKey) -> Result<Value, StoreError> {
    let col = format!("s{i}");
    Ok(match key.target {
        Target::Id => Value::String(row.try_get::<String, _>(col.as_str())?),
        _ => Value::from(row.try_get::<i64, _>(col.as_str())?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 15 item 3: on PostgreSQL every pooled session has the statement timeout, and a
    /// search dropped mid-query (timed-out request, client gone) stops its statement instead
    /// of leaving it running. The sleep stands in for a slow search on the same guard.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_statements_end_with_their_request() {
        let url = crate::testing::fresh_postgres_url().await;
        let opts = crate::StoreOptions {
            statement_timeout: Some(std::time::Duration::from_secs(35)),
            lock_timeout: Some(std::time::Duration::from_secs(7)),
            max_connections: Some(5),
        };
        let store = crate::Store::open_with(&url, &ward_crypto::Kek::generate().unwrap(), &opts)
            .await
            .unwrap();
        let pool = &store.inner.reader;
        assert_eq!(pool.options().get_max_connections(), 5);
        for _ in 0..3 {
            let row = sqlx::query(
                "SELECT current_setting('statement_timeout') AS t, \
                 current_setting('client_connection_check_interval') AS c, \
                 current_setting('lock_timeout') AS l, current_setting('client_min_messages') AS m",
            )
            .fetch_one(pool)
            .await
            .unwrap();
            assert_eq!(row.try_get::<String, _>("t").unwrap(), "35s");
            assert_eq!(row.try_get::<String, _>("c").unwrap(), "1s");
            assert_eq!(row.try_get::<String, _>("l").unwrap(), "7s");
            assert_eq!(row.try_get::<String, _>("m").unwrap(), "error");
        }
        let running = || async {
            sqlx::query("SELECT count(*) AS n FROM pg_stat_activity WHERE state = 'active' AND query LIKE 'SELECT pg_sleep(31)%'")
                .fetch_one(pool)
                .await
                .unwrap()
                .try_get::<i64, _>("n")
                .unwrap()
        };
        let slow = async {
            let mut conn = CloseIfDropped(Some(pool.acquire().await.unwrap()));
            let c = conn.0.as_mut().unwrap();
            sqlx::query("SELECT pg_sleep(31)").execute(&mut **c).await
        };
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(500), slow)
                .await
                .is_err()
        );
        let mut waited = 0;
        while running().await > 0 {
            waited += 1;
            assert!(waited < 50, "the abandoned statement is still running after 5 s");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        store.close().await;
    }

    #[tokio::test]
    async fn cursors_expire_and_stay_with_their_type_and_holder() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("c.db").display());
        let store = crate::Store::open(&url, &ward_crypto::Kek::generate().unwrap())
            .await
            .unwrap();
        let state = |exp| CursorState {
            v: 1,
            rtype: "Patient".into(),
            compartment: None,
            params: vec![("family".into(), "x".into())],
            keys: Vec::new(),
            id: "a".into(),
            forward: true,
            exp,
            holder: Some("client-a".into()),
        };
        let live = store.seal_cursor(&state(unix_now() + 60)).unwrap();
        let a = Some("client-a");
        assert!(store.cursor_params("Patient", a, &live).is_ok());
        assert!(
            store.cursor_params("Observation", a, &live).is_err(),
            "bound to its type"
        );
        assert!(
            store.cursor_params("Patient", Some("client-b"), &live).is_err(),
            "bound to its holder"
        );
        assert!(store.cursor_params("Patient", None, &live).is_err());
        let stale = store.seal_cursor(&state(unix_now() - 1)).unwrap();
        assert!(
            store.cursor_params("Patient", a, &stale).is_err(),
            "expired cursors are refused"
        );
        store.close().await;
    }
}
