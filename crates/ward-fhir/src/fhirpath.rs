//! A small FHIRPath evaluator: exactly the subset the R4 search-parameter expressions use.
//!
//! Supported: paths (`Patient.name.family`), polymorphic elements (`Observation.value` reads
//! `valueQuantity`, `valueString`, ...), indexers (`entry[0]`), `|` (union), `as T`, `.as(T)`,
//! `ofType(T)`, `is T`, `where(...)`, `exists()`, `resolve()` (only as `resolve() is T`, which is
//! answered from the reference's type without fetching anything), `=`/`!=` against string and
//! boolean literals, and `and`.
//!
//! Precedence follows the FHIRPath grammar: postfix (`.`/`[]`) > `is`/`as` > `|` > `=`/`!=` >
//! `and`. Anything else is a parse error, so an unexpected expression fails the table test rather
//! than being silently mis-evaluated.

use serde_json::Value;

/// A parsed expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    /// The current item (`$this`, implicit at the start of an expression).
    This,
    /// A child element, or a type name filter when capitalized and applied to a resource.
    Child(Box<Expr>, String),
    Index(Box<Expr>, usize),
    Call(Box<Expr>, String, Vec<Expr>),
    Union(Box<Expr>, Box<Expr>),
    As(Box<Expr>, String),
    Is(Box<Expr>, String),
    Eq(Box<Expr>, Box<Expr>, bool),
    And(Box<Expr>, Box<Expr>),
    Str(String),
    Bool(bool),
}

/// A parse failure, with the byte offset. Expressions are definitions, never user input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("FHIRPath parse error at {at}: {message}")]
pub struct ParseError {
    pub at: usize,
    pub message: String,
}

/// One item of an evaluation result.
#[derive(Clone, Debug, PartialEq)]
pub enum Item<'a> {
    /// A JSON node; `ty` is the type suffix when it came from a polymorphic element
    /// (`valueQuantity` gives `Quantity`).
    Node {
        value: &'a Value,
        ty: Option<String>,
    },
    /// What `resolve()` gives: the target type of a reference (nothing is fetched).
    Resolved(String),
    Bool(bool),
    Str(String),
}

impl<'a> Item<'a> {
    /// The JSON node, if this item is one.
    pub fn node(&self) -> Option<&'a Value> {
        match self {
            Item::Node { value, .. } => Some(value),
            _ => None,
        }
    }

    /// The type suffix of a polymorphic element.
    pub fn choice_type(&self) -> Option<&str> {
        match self {
            Item::Node { ty, .. } => ty.as_deref(),
            _ => None,
        }
    }
}

/// FHIR data type names that may follow a polymorphic element name (`value[x]`).
const CHOICE_TYPES: &[&str] = &[
    "Address",
    "Age",
    "Annotation",
    "Attachment",
    "Base64Binary",
    "Boolean",
    "Canonical",
    "Code",
    "CodeableConcept",
    "Coding",
    "ContactDetail",
    "ContactPoint",
    "Contributor",
    "Count",
    "DataRequirement",
    "Date",
    "DateTime",
    "Decimal",
    "Distance",
    "Dosage",
    "Duration",
    "Expression",
    "HumanName",
    "Id",
    "Identifier",
    "Instant",
    "Integer",
    "Markdown",
    "Meta",
    "Money",
    "Oid",
    "ParameterDefinition",
    "Period",
    "PositiveInt",
    "Quantity",
    "Range",
    "Ratio",
    "Reference",
    "RelatedArtifact",
    "SampledData",
    "Signature",
    "String",
    "Time",
    "Timing",
    "TriggerDefinition",
    "UnsignedInt",
    "Uri",
    "Url",
    "UsageContext",
    "Uuid",
];

/// Parses an expression.
pub fn parse(src: &str) -> Result<Expr, ParseError> {
    let tokens = lex(src)?;
    let mut p = Parser { tokens, pos: 0 };
    let e = p.and()?;
    if p.pos != p.tokens.len() {
        return Err(p.err("unexpected trailing input"));
    }
    Ok(e)
}

/// Evaluates `expr` with `resource` as the focus.
pub fn evaluate<'a>(expr: &Expr, resource: &'a Value) -> Vec<Item<'a>> {
    eval(
        expr,
        &[Item::Node {
            value: resource,
            ty: None,
        }],
        true,
    )
}

// ----- lexer -------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Int(usize),
    Dot,
    Pipe,
    LParen,
    RParen,
    LBracket,
    RBracket,
    Eq,
    Ne,
    Comma,
}

#[allow(
    clippy::arithmetic_side_effects,
    reason = "positions in Ward's vendored expressions (never client input), below their length"
)]
fn lex(src: &str) -> Result<Vec<(usize, Tok)>, ParseError> {
    let mut out = Vec::new();
    let chars: Vec<(usize, char)> = src.char_indices().collect();
    let mut i = 0;
    let err = |at: usize, m: &str| ParseError {
        at,
        message: m.to_owned(),
    };
    while let Some(&(at, c)) = chars.get(i) {
        match c {
            ' ' | '\t' | '\n' | '\r' => i += 1,
            '.' => {
                out.push((at, Tok::Dot));
                i += 1;
            }
            '|' => {
                out.push((at, Tok::Pipe));
                i += 1;
            }
            '(' => {
                out.push((at, Tok::LParen));
                i += 1;
            }
            ')' => {
                out.push((at, Tok::RParen));
                i += 1;
            }
            '[' => {
                out.push((at, Tok::LBracket));
                i += 1;
            }
            ']' => {
                out.push((at, Tok::RBracket));
                i += 1;
            }
            ',' => {
                out.push((at, Tok::Comma));
                i += 1;
            }
            '=' => {
                out.push((at, Tok::Eq));
                i += 1;
            }
            '!' if chars.get(i + 1).map(|c| c.1) == Some('=') => {
                out.push((at, Tok::Ne));
                i += 2;
            }
            '\'' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(err(at, "unterminated string")),
                        Some((_, '\'')) => {
                            i += 1;
                            break;
                        }
                        Some((_, '\\')) => {
                            if let Some((_, e)) = chars.get(i + 1) {
                                s.push(*e);
                            }
                            i += 2;
                        }
                        Some((_, c)) => {
                            s.push(*c);
                            i += 1;
                        }
                    }
                }
                out.push((at, Tok::Str(s)));
            }
            c if c.is_ascii_digit() => {
                let mut n = 0usize;
                while let Some((_, d)) = chars.get(i).filter(|(_, d)| d.is_ascii_digit()) {
                    n = n
                        .checked_mul(10)
                        .and_then(|n| n.checked_add(*d as usize - '0' as usize))
                        .ok_or_else(|| err(at, "number too large"))?;
                    i += 1;
                }
                out.push((at, Tok::Int(n)));
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == '$' => {
                let mut s = String::new();
                while let Some((_, d)) = chars
                    .get(i)
                    .filter(|(_, d)| d.is_ascii_alphanumeric() || *d == '_' || *d == '$')
                {
                    s.push(*d);
                    i += 1;
                }
                out.push((at, Tok::Ident(s)));
            }
            _ => return Err(err(at, "unexpected character")),
        }
    }
    Ok(out)
}

// ----- parser ------------------------------------------------------------------------------------

struct Parser {
    tokens: Vec<(usize, Tok)>,
    pos: usize,
}

#[allow(
    clippy::arithmetic_side_effects,
    reason = "token positions of Ward's vendored expressions (never client input), below their count"
)]
impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.pos).map(|t| &t.1)
    }

    fn err(&self, m: &str) -> ParseError {
        ParseError {
            at: self.tokens.get(self.pos).map_or(usize::MAX, |t| t.0),
            message: m.to_owned(),
        }
    }

    fn expect(&mut self, t: &Tok) -> Result<(), ParseError> {
        if self.peek() == Some(t) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.err(&format!("expected {t:?}")))
        }
    }

    fn keyword(&self, k: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(s)) if s == k)
    }

    fn and(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.equality()?;
        while self.keyword("and") {
            self.pos += 1;
            let right = self.equality()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn equality(&mut self) -> Result<Expr, ParseError> {
        let left = self.union()?;
        let negate = match self.peek() {
            Some(Tok::Eq) => false,
            Some(Tok::Ne) => true,
            _ => return Ok(left),
        };
        self.pos += 1;
        let right = self.union()?;
        Ok(Expr::Eq(Box::new(left), Box::new(right), negate))
    }

    fn union(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.typed()?;
        while self.peek() == Some(&Tok::Pipe) {
            self.pos += 1;
            let right = self.typed()?;
            left = Expr::Union(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn typed(&mut self) -> Result<Expr, ParseError> {
        let mut e = self.postfix()?;
        loop {
            let is = if self.keyword("as") {
                false
            } else if self.keyword("is") {
                true
            } else {
                return Ok(e);
            };
            self.pos += 1;
            let ty = self.type_name()?;
            e = if is {
                Expr::Is(Box::new(e), ty)
            } else {
                Expr::As(Box::new(e), ty)
            };
        }
    }

    fn type_name(&mut self) -> Result<String, ParseError> {
        match self.peek().cloned() {
            Some(Tok::Ident(s)) => {
                self.pos += 1;
                // `FHIR.Patient` / `System.String`
                if (s == "FHIR" || s == "System") && self.peek() == Some(&Tok::Dot) {
                    self.pos += 1;
                    return self.type_name();
                }
                Ok(s)
            }
            _ => Err(self.err("expected a type name")),
        }
    }

    fn postfix(&mut self) -> Result<Expr, ParseError> {
        let mut e = self.primary()?;
        loop {
            match self.peek() {
                Some(Tok::Dot) => {
                    self.pos += 1;
                    e = self.member(e)?;
                }
                Some(Tok::LBracket) => {
                    self.pos += 1;
                    let n = match self.peek() {
                        Some(Tok::Int(n)) => *n,
                        _ => return Err(self.err("expected an index")),
                    };
                    self.pos += 1;
                    self.expect(&Tok::RBracket)?;
                    e = Expr::Index(Box::new(e), n);
                }
                _ => return Ok(e),
            }
        }
    }

    /// An identifier or function call applied to `base`.
    fn member(&mut self, base: Expr) -> Result<Expr, ParseError> {
        let name = match self.peek().cloned() {
            Some(Tok::Ident(s)) => s,
            _ => return Err(self.err("expected a name")),
        };
        self.pos += 1;
        if self.peek() != Some(&Tok::LParen) {
            return Ok(Expr::Child(Box::new(base), name));
        }
        self.pos += 1;
        let mut args = Vec::new();
        if self.peek() != Some(&Tok::RParen) {
            loop {
                // Type arguments (`as(Age)`, `ofType(Quantity)`) parse as a child of `$this`.
                args.push(self.and()?);
                if self.peek() == Some(&Tok::Comma) {
                    self.pos += 1;
                } else {
                    break;
                }
            }
        }
        self.expect(&Tok::RParen)?;
        let arity_ok = match name.as_str() {
            "where" | "as" | "ofType" | "is" => args.len() == 1,
            "exists" | "resolve" | "first" | "empty" | "not" => args.is_empty(),
            _ => return Err(self.err("unsupported function")),
        };
        if !arity_ok {
            return Err(self.err("wrong number of arguments"));
        }
        match name.as_str() {
            "as" | "ofType" | "is" => {
                let ty = match args.first() {
                    Some(Expr::Child(b, t)) if **b == Expr::This => t.clone(),
                    _ => return Err(self.err("expected a type name argument")),
                };
                Ok(if name == "is" {
                    Expr::Is(Box::new(base), ty)
                } else {
                    Expr::As(Box::new(base), ty)
                })
            }
            _ => Ok(Expr::Call(Box::new(base), name, args)),
        }
    }

    fn primary(&mut self) -> Result<Expr, ParseError> {
        match self.peek().cloned() {
            Some(Tok::LParen) => {
                self.pos += 1;
                let e = self.and()?;
                self.expect(&Tok::RParen)?;
                Ok(e)
            }
            Some(Tok::Str(s)) => {
                self.pos += 1;
                Ok(Expr::Str(s))
            }
            Some(Tok::Ident(s)) if s == "true" || s == "false" => {
                self.pos += 1;
                Ok(Expr::Bool(s == "true"))
            }
            Some(Tok::Ident(s)) if s == "$this" => {
                self.pos += 1;
                Ok(Expr::This)
            }
            Some(Tok::Ident(_)) => self.member(Expr::This),
            _ => Err(self.err("expected an expression")),
        }
    }
}

// ----- evaluation --------------------------------------------------------------------------------

fn eval<'a>(expr: &Expr, focus: &[Item<'a>], top: bool) -> Vec<Item<'a>> {
    match expr {
        Expr::This => focus.to_vec(),
        Expr::Child(base, name) => {
            let base_is_this = **base == Expr::This;
            let items = eval(base, focus, top);
            let mut out = Vec::new();
            for item in &items {
                let Some(value) = item.node() else { continue };
                // A capitalized name at the start of an expression names the resource type.
                if base_is_this && top && name.starts_with(|c: char| c.is_ascii_uppercase()) {
                    let rt = value.get("resourceType").and_then(Value::as_str);
                    if rt == Some(name.as_str()) || name == "Resource" || name == "DomainResource" {
                        out.push(item.clone());
                    }
                    continue;
                }
                child(value, name, &mut out);
            }
            out
        }
        Expr::Index(base, n) => eval(base, focus, top).into_iter().nth(*n).into_iter().collect(),
        Expr::Union(a, b) => {
            let mut out = eval(a, focus, top);
            for item in eval(b, focus, top) {
                if !out.contains(&item) {
                    out.push(item);
                }
            }
            out
        }
        Expr::As(base, ty) => eval(base, focus, top)
            .into_iter()
            .filter(|i| i.choice_type().is_none_or(|t| same_type(t, ty)))
            .collect(),
        Expr::Is(base, ty) => eval(base, focus, top)
            .into_iter()
            .map(|i| match &i {
                Item::Resolved(t) => Item::Bool(t == ty),
                Item::Node { ty: Some(t), .. } => Item::Bool(same_type(t, ty)),
                Item::Node { value, ty: None } => {
                    Item::Bool(value.get("resourceType").and_then(Value::as_str) == Some(ty.as_str()))
                }
                _ => Item::Bool(false),
            })
            .collect(),
        Expr::Eq(a, b, negate) => {
            let (a, b) = (eval(a, focus, top), eval(b, focus, top));
            if a.is_empty() || b.is_empty() {
                return Vec::new();
            }
            let equal = a.len() == b.len() && a.iter().zip(&b).all(|(x, y)| item_eq(x, y));
            vec![Item::Bool(equal != *negate)]
        }
        Expr::And(a, b) => {
            let (a, b) = (truth(&eval(a, focus, top)), truth(&eval(b, focus, top)));
            match (a, b) {
                (Some(false), _) | (_, Some(false)) => vec![Item::Bool(false)],
                (Some(true), Some(true)) => vec![Item::Bool(true)],
                _ => Vec::new(),
            }
        }
        Expr::Str(s) => vec![Item::Str(s.clone())],
        Expr::Bool(b) => vec![Item::Bool(*b)],
        Expr::Call(base, name, args) => {
            let items = eval(base, focus, top);
            match name.as_str() {
                "where" => items
                    .into_iter()
                    .filter(|i| {
                        args.first()
                            .is_some_and(|a| truth(&eval(a, std::slice::from_ref(i), false)) == Some(true))
                    })
                    .collect(),
                "exists" => vec![Item::Bool(!items.is_empty())],
                "empty" => vec![Item::Bool(items.is_empty())],
                "not" => match truth(&items) {
                    Some(b) => vec![Item::Bool(!b)],
                    None => Vec::new(),
                },
                "first" => items.into_iter().take(1).collect(),
                "resolve" => items
                    .iter()
                    .filter_map(|i| reference_type(i.node()?).map(Item::Resolved))
                    .collect(),
                _ => Vec::new(),
            }
        }
    }
}

fn truth(items: &[Item<'_>]) -> Option<bool> {
    match items {
        [] => None,
        [Item::Bool(b)] => Some(*b),
        [
            Item::Node {
                value: Value::Bool(b),
                ..
            },
        ] => Some(*b),
        _ => Some(true),
    }
}

fn item_eq(a: &Item<'_>, b: &Item<'_>) -> bool {
    let scalar = |i: &Item<'_>| -> Option<String> {
        match i {
            Item::Str(s) => Some(format!("s:{s}")),
            Item::Bool(b) => Some(format!("b:{b}")),
            Item::Node {
                value: Value::String(s),
                ..
            } => Some(format!("s:{s}")),
            Item::Node {
                value: Value::Bool(b),
                ..
            } => Some(format!("b:{b}")),
            Item::Resolved(t) => Some(format!("t:{t}")),
            _ => None,
        }
    };
    match (scalar(a), scalar(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// `string` matches `String`, `dateTime` matches `DateTime`.
fn same_type(actual: &str, wanted: &str) -> bool {
    let mut a = actual.chars();
    let mut w = wanted.chars();
    match (a.next(), w.next()) {
        (Some(x), Some(y)) => x.eq_ignore_ascii_case(&y) && a.as_str() == w.as_str(),
        _ => false,
    }
}

fn child<'a>(value: &'a Value, name: &str, out: &mut Vec<Item<'a>>) {
    let Value::Object(obj) = value else { return };
    let push = |v: &'a Value, ty: Option<String>, out: &mut Vec<Item<'a>>| match v {
        Value::Array(a) => out.extend(a.iter().filter(|v| !v.is_null()).map(|v| Item::Node {
            value: v,
            ty: ty.clone(),
        })),
        Value::Null => {}
        v => out.push(Item::Node { value: v, ty }),
    };
    if let Some(v) = obj.get(name) {
        push(v, None, out);
        return;
    }
    for (key, v) in obj {
        if let Some(suffix) = key.strip_prefix(name)
            && CHOICE_TYPES.contains(&suffix)
        {
            push(v, Some(suffix.to_owned()), out);
        }
    }
}

/// The type named by a Reference (`{"reference": "Patient/1"}`, an absolute URL ending in
/// `Type/id[/_history/n]`), or by a canonical/uri string of the same shape.
pub fn reference_type(value: &Value) -> Option<String> {
    let s = match value {
        Value::Object(o) => match o.get("reference").and_then(Value::as_str) {
            Some(r) => r,
            None => return o.get("type").and_then(Value::as_str).map(str::to_owned),
        },
        Value::String(s) => s,
        _ => return None,
    };
    parse_reference(s).map(|(t, _)| t.to_owned())
}

/// Splits a literal reference into (type, id): `Patient/1`, `https://x/fhir/Patient/1`,
/// `Patient/1/_history/2`. Contained (`#x`), `urn:` and malformed references give `None`.
pub fn parse_reference(s: &str) -> Option<(&str, &str)> {
    if s.starts_with('#') || s.starts_with("urn:") {
        return None;
    }
    let s = s.split(['?', '#']).next().unwrap_or(s);
    let parts: Vec<&str> = s.split('/').filter(|p| !p.is_empty()).collect();
    let (t, id) = match parts.as_slice() {
        [.., t, id, "_history", _] | [.., t, id] => (*t, *id),
        _ => return None,
    };
    (crate::types::is_resource_type(t) && crate::id::is_valid_id(id)).then_some((t, id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn strings(expr: &str, r: &Value) -> Vec<String> {
        evaluate(&parse(expr).unwrap(), r)
            .into_iter()
            .map(|i| match i {
                Item::Node { value, ty } => {
                    format!("{}{}", ty.map(|t| format!("{t}:")).unwrap_or_default(), value)
                }
                Item::Bool(b) => b.to_string(),
                Item::Str(s) => s,
                Item::Resolved(t) => format!("->{t}"),
            })
            .collect()
    }

    #[test]
    fn paths_unions_and_choices() {
        let p = json!({"resourceType": "Patient", "name": [{"family": "A", "given": ["B", "C"]}, {"family": "D"}],
                       "deceasedBoolean": false});
        assert_eq!(strings("Patient.name.family", &p), vec!["\"A\"", "\"D\""]);
        assert_eq!(strings("Patient.name.given | Patient.name.family", &p).len(), 4);
        assert!(strings("Practitioner.name", &p).is_empty());
        assert_eq!(strings("Resource.name[1].family", &p), vec!["\"D\""]);
        assert_eq!(strings("Patient.deceased", &p), vec!["Boolean:false"]);
        assert_eq!(
            strings("Patient.deceased.exists() and Patient.deceased != false", &p),
            vec!["false"]
        );
        let p2 = json!({"resourceType": "Patient", "deceasedDateTime": "2020-01-01"});
        assert_eq!(
            strings("Patient.deceased.exists() and Patient.deceased != false", &p2),
            vec!["true"]
        );
        assert_eq!(
            strings("(Patient.deceased as dateTime)", &p2),
            vec!["DateTime:\"2020-01-01\""]
        );
        assert!(strings("(Patient.deceased as dateTime)", &p).is_empty());
    }

    #[test]
    fn where_resolve_and_as_function() {
        let o = json!({"resourceType": "Observation", "subject": {"reference": "Patient/p1"},
                       "performer": [{"reference": "Practitioner/x"}, {"reference": "https://h/fhir/Patient/p2/_history/3"}],
                       "valueQuantity": {"value": 5}, "telecom": [{"system": "email", "value": "a@b"}, {"system": "phone", "value": "1"}]});
        assert_eq!(
            strings("Observation.subject.where(resolve() is Patient)", &o).len(),
            1
        );
        assert!(strings("Observation.subject.where(resolve() is Group)", &o).is_empty());
        assert_eq!(
            strings("Observation.performer.where(resolve() is Patient)", &o).len(),
            1
        );
        assert_eq!(strings("Observation.value.as(Quantity)", &o).len(), 1);
        assert_eq!(strings("Observation.value.ofType(Quantity)", &o).len(), 1);
        assert!(strings("Observation.value.as(Range)", &o).is_empty());
        assert_eq!(
            strings("Observation.telecom.where(system='email')", &o),
            vec![r#"{"system":"email","value":"a@b"}"#]
        );
        assert_eq!(parse_reference("Patient/1"), Some(("Patient", "1")));
        assert_eq!(
            parse_reference("http://x/fhir/Patient/1/_history/2"),
            Some(("Patient", "1"))
        );
        assert_eq!(parse_reference("#c1"), None);
        assert_eq!(parse_reference("Nope/1"), None);
        assert_eq!(parse_reference("Patient"), None);
    }

    #[test]
    fn rejects_unsupported() {
        for bad in [
            "Patient.name.count()",
            "Patient.name +",
            "Patient..x",
            "'x",
            "Patient.x(1,2)",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
