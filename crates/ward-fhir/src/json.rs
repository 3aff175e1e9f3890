//! Strict parsing of request bodies.
//!
//! `serde_json` silently keeps the last of duplicate object keys, which lets two readers of the
//! same body disagree about its content (one sees the first `id`, another the second). Request
//! bodies are therefore parsed with a custom [`DeserializeSeed`] that builds the
//! [`serde_json::Value`] itself, refuses duplicate keys and over-deep nesting, and keeps number
//! text exactly (`arbitrary_precision`) and key order (`preserve_order`).

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use crate::outcome::IssueType;
use crate::validate::ValidationError;

/// The key `serde_json` uses (with `arbitrary_precision`) to hand a number over as a map.
const NUMBER_TOKEN: &str = "$serde_json::private::Number";

/// Limits for [`parse_strict`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Maximum nesting depth of arrays and objects (the root object is depth 1).
    pub max_depth: usize,
    /// Maximum body size in bytes.
    pub max_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 64,
            max_bytes: 4 * 1024 * 1024,
        }
    }
}

/// Strict parse of a request body.
///
/// Requires valid UTF-8, exactly one JSON value (no trailing data), no duplicate object keys at
/// any level (the error names the path, e.g. `Patient.name[0].family`), nesting depth at most
/// `max_depth` and size at most `max_bytes`. Number text and key order are kept exactly.
/// Error messages never quote the body's content.
pub fn parse_strict(bytes: &[u8], limits: &Limits) -> Result<Value, ValidationError> {
    if bytes.len() > limits.max_bytes {
        return Err(ValidationError::new(
            IssueType::TooLong,
            "",
            format!("body exceeds the limit of {} bytes", limits.max_bytes),
        ));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        ValidationError::new(
            IssueType::Structure,
            "",
            format!("body is not valid UTF-8 (at byte {})", e.valid_up_to()),
        )
    })?;
    let ctx = Ctx {
        limits,
        failure: RefCell::new(None),
        root_type: RefCell::new(None),
    };
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let seed = ValueSeed {
        ctx: &ctx,
        path: &Path::Root,
        depth: 0,
    };
    let value = match seed.deserialize(&mut deserializer) {
        Ok(value) => value,
        Err(e) => return Err(ctx.failure.into_inner().unwrap_or_else(|| syntax_error(&e))),
    };
    deserializer.end().map_err(|e| {
        ValidationError::new(
            IssueType::Structure,
            "",
            format!(
                "unexpected data after the JSON value at line {} column {}",
                e.line(),
                e.column()
            ),
        )
    })?;
    Ok(value)
}

fn syntax_error(e: &serde_json::Error) -> ValidationError {
    use serde_json::error::Category;
    let message = match e.classify() {
        // serde_json's syntax messages are fixed texts plus a position, never input content.
        Category::Syntax | Category::Eof => format!("malformed JSON: {e}"),
        Category::Data | Category::Io => {
            format!("malformed JSON value at line {} column {}", e.line(), e.column())
        }
    };
    ValidationError::new(IssueType::Structure, "", message)
}

struct Ctx<'l> {
    limits: &'l Limits,
    failure: RefCell<Option<ValidationError>>,
    /// The root object's `resourceType`, once seen, to prefix error paths with it.
    root_type: RefCell<Option<String>>,
}

impl Ctx<'_> {
    /// Records the first structured failure and returns a serde error to unwind with.
    fn fail<E: de::Error>(&self, code: IssueType, path: &Path<'_>, message: String) -> E {
        let mut failure = self.failure.borrow_mut();
        if failure.is_none() {
            let root = self.root_type.borrow();
            *failure = Some(ValidationError::new(code, path.render(root.as_deref()), message));
        }
        E::custom("invalid request body")
    }
}

/// A path from the root, built on the stack and rendered only on error.
enum Path<'a> {
    Root,
    Key(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl Path<'_> {
    fn render(&self, root: Option<&str>) -> String {
        let mut out = String::new();
        self.write(&mut out, root);
        out
    }

    fn write(&self, out: &mut String, root: Option<&str>) {
        match self {
            Path::Root => out.push_str(root.unwrap_or("")),
            Path::Key(parent, key) => {
                parent.write(out, root);
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Path::Index(parent, index) => {
                parent.write(out, root);
                out.push('[');
                out.push_str(&index.to_string());
                out.push(']');
            }
        }
    }
}

struct ValueSeed<'c, 'p> {
    ctx: &'c Ctx<'c>,
    path: &'p Path<'p>,
    depth: usize,
}

impl ValueSeed<'_, '_> {
    fn enter<E: de::Error>(&self) -> Result<usize, E> {
        let depth = self.depth.saturating_add(1);
        if depth > self.ctx.limits.max_depth {
            return Err(self.ctx.fail(
                IssueType::Structure,
                self.path,
                format!(
                    "JSON nesting exceeds the limit of {} levels",
                    self.ctx.limits.max_depth
                ),
            ));
        }
        Ok(depth)
    }
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_, '_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_, '_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("non-finite number"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let depth = self.enter()?;
        let mut items = Vec::new();
        loop {
            let path = Path::Index(self.path, items.len());
            let seed = ValueSeed {
                ctx: self.ctx,
                path: &path,
                depth,
            };
            match seq.next_element_seed(seed)? {
                Some(item) => items.push(item),
                None => break,
            }
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let Some(first) = map.next_key::<String>()? else {
            self.enter::<A::Error>()?;
            return Ok(Value::Object(Map::new()));
        };
        if first == NUMBER_TOKEN {
            // `arbitrary_precision` hands numbers over as a one-entry map holding the exact text.
            let text: String = map.next_value()?;
            let number: Number = text.parse().map_err(|_| de::Error::custom("invalid number"))?;
            return Ok(Value::Number(number));
        }
        let depth = self.enter()?;
        let mut object = Map::new();
        let mut key = first;
        loop {
            if object.contains_key(&key) {
                return Err(self.ctx.fail(
                    IssueType::Structure,
                    &Path::Key(self.path, &key),
                    "duplicate object key".to_string(),
                ));
            }
            let path = Path::Key(self.path, &key);
            let value = map.next_value_seed(ValueSeed {
                ctx: self.ctx,
                path: &path,
                depth,
            })?;
            if self.depth == 0
                && key == "resourceType"
                && let Value::String(name) = &value
                && crate::types::is_resource_type(name)
            {
                *self.ctx.root_type.borrow_mut() = Some(name.clone());
            }
            object.insert(key, value);
            match map.next_key::<String>()? {
                Some(next) => key = next,
                None => break,
            }
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Value, ValidationError> {
        parse_strict(text.as_bytes(), &Limits::default())
    }

    #[test]
    fn keeps_number_text_and_key_order() {
        let text = r#"{"b":1.50,"a":[1e+2,-0,0.000,12345678901234567890123,1.0e-7],"c":-7}"#;
        let v = parse(text).unwrap();
        assert_eq!(serde_json::to_string(&v).unwrap(), text);
        // serde_json spells exponents canonically (same value, same digits).
        let exponent = parse("[1E2]").unwrap();
        assert_eq!(serde_json::to_string(&exponent).unwrap(), "[1e+2]");
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["b", "a", "c"]);
    }

    #[test]
    fn parses_all_value_kinds() {
        let v = parse(r#" {"s":"x\u00e9\n","t":true,"f":false,"n":null,"e":{},"a":[]} "#).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"s":"xé\n","t":true,"f":false,"n":null,"e":{},"a":[]})
        );
        assert_eq!(parse("3").unwrap(), serde_json::json!(3));
    }

    #[test]
    fn duplicate_key_nested_is_rejected_with_path() {
        let e = parse(
            r#"{"resourceType":"Patient","name":[{"family":"Chalmers","given":["Peter"],"family":"Other"}]}"#,
        )
        .unwrap_err();
        assert_eq!(e.path, "Patient.name[0].family");
        assert_eq!(e.code, IssueType::Structure);
        assert!(!e.message.contains("Chalmers") && !e.message.contains("Other"));

        let e = parse(r#"{"id":"a","id":"b"}"#).unwrap_err();
        assert_eq!(e.path, "id");
        let e = parse(r#"{"resourceType":"Patient","resourceType":"Patient"}"#).unwrap_err();
        assert_eq!(e.path, "Patient.resourceType");
        // The same key in different objects is fine.
        parse(r#"{"a":{"x":1},"b":{"x":1},"c":[{"x":1},{"x":2}]}"#).unwrap();
    }

    #[test]
    fn depth_limit() {
        let limits = Limits {
            max_depth: 3,
            max_bytes: 1024,
        };
        parse_strict(br#"{"a":[{"b":1}]}"#, &limits).unwrap();
        let e = parse_strict(br#"{"a":[{"b":[1]}]}"#, &limits).unwrap_err();
        assert_eq!(e.code, IssueType::Structure);
        assert_eq!(e.path, "a[0].b");
        let e = parse_strict(br#"{"a":[{"b":{}}]}"#, &limits).unwrap_err();
        assert_eq!(e.path, "a[0].b");

        let deep = format!("{}{}", "[".repeat(65), "]".repeat(65));
        assert!(parse(&deep).is_err());
        let ok = format!("{}{}", "[".repeat(64), "]".repeat(64));
        assert!(parse(&ok).is_ok());
        // Far deeper than serde_json's own recursion limit: still a clean error.
        let deeper = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(parse_strict(deeper.as_bytes(), &Limits::default()).is_err());
    }

    #[test]
    fn size_limit() {
        let limits = Limits {
            max_depth: 64,
            max_bytes: 10,
        };
        assert!(parse_strict(b"[1,2,3,4]", &limits).is_ok());
        let e = parse_strict(b"[1,2,3,4,5]", &limits).unwrap_err();
        assert_eq!(e.code, IssueType::TooLong);
    }

    #[test]
    fn trailing_data_and_syntax() {
        for bad in [
            r#"{"a":1} x"#,
            r#"{"a":1}{"a":1}"#,
            r#"{"a":1},"#,
            "",
            "   ",
            r#"{"a":1"#,
            r#"{"a":01}"#,
            r#"{'a':1}"#,
            r#"{"a":NaN}"#,
            r#"{"a":1,}"#,
            "\u{feff}{}",
        ] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.code, IssueType::Structure, "{bad:?}");
        }
        assert!(parse("{\"a\":1}  \n").is_ok());
    }

    #[test]
    fn invalid_utf8() {
        let e = parse_strict(b"{\"a\":\"\xff\"}", &Limits::default()).unwrap_err();
        assert_eq!(e.code, IssueType::Structure);
        assert!(e.message.contains("UTF-8"));
    }

    #[test]
    fn messages_do_not_echo_content() {
        let e = parse(r#"{"ssn":"123-45-6789" "x":1}"#).unwrap_err();
        assert!(!e.message.contains("123-45-6789"));
        assert!(!e.to_string().contains("123-45-6789"));
    }
}
