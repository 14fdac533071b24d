//! Loads YAML into a small span-carrying tree.
//!
//! Why not deserialize straight into `#[serde(deny_unknown_fields)]` structs:
//! serde stops at the first unknown key or wrong type, and serde-saphyr's
//! errors carry a line/column but not the key path. Walking our own tree lets
//! validation report every problem at once, each with its path and position.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{Location, Spanned};

use super::error::ConfigError;

/// 1-based position of a node in the YAML text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Loc {
    pub line: usize,
    pub column: usize,
}

impl Loc {
    fn from_location(l: &Location) -> Option<Loc> {
        let line = usize::try_from(l.line()).ok()?;
        let column = usize::try_from(l.column()).ok()?;
        (line > 0).then_some(Loc { line, column })
    }
}

#[derive(Debug)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Key, Node)>),
}

#[derive(Debug)]
pub(crate) struct Node {
    pub value: Value,
    pub loc: Option<Loc>,
    /// Source text of a plain scalar the YAML schema resolved to a bool or a
    /// number. Where the config wants a string we use this, so `name: no`
    /// stays "no" and `password: 0123` keeps its leading zero.
    pub raw: Option<String>,
}

#[derive(Debug)]
pub(crate) struct Key {
    /// None when the key is not a scalar (YAML allows `[a, b]: 1`).
    pub text: Option<String>,
    pub loc: Option<Loc>,
}

impl Node {
    pub fn kind_name(&self) -> &'static str {
        match self.value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    /// The scalar as text, as the operator wrote it.
    pub fn scalar_text(&self) -> Option<String> {
        match &self.value {
            Value::Str(s) => Some(s.clone()),
            Value::Bool(b) => Some(self.raw.clone().unwrap_or_else(|| b.to_string())),
            Value::Int(i) => Some(self.raw.clone().unwrap_or_else(|| i.to_string())),
            Value::Float(x) => Some(self.raw.clone().unwrap_or_else(|| x.to_string())),
            Value::Null | Value::Seq(_) | Value::Map(_) => None,
        }
    }
}

const MAX_DEPTH: usize = 16;

/// Parses one YAML document. Syntax errors stop here with their position.
pub(crate) fn load(text: &str) -> Result<Node, ConfigError> {
    let options = serde_saphyr::options! {
        // The deepest real config is about 7 levels. serde-saphyr's
        // span-tracking recursion needs ~35KiB of stack per level in debug
        // builds, so its default limit (64) overflows a 2MiB thread stack on
        // hostile input; 16 leaves headroom everywhere.
        budget: serde_saphyr::budget! { max_depth: MAX_DEPTH },
        with_snippet: false,
        // Let `.nan` through as a float so validation can say which key is
        // wrong instead of failing the whole document.
        non_finite_float_policy: serde_saphyr::NonFiniteFloatPolicy::PassThrough,
    };
    // The depth budget also bounds the recursion in `convert` and in
    // dropping the tree.
    match serde_saphyr::from_str_with_options::<Spanned<Raw>>(text, options) {
        Ok(root) => Ok(convert(root, text)),
        Err(err) => {
            let loc = err.location().as_ref().and_then(Loc::from_location);
            let message = syntax_message(err.without_snippet());
            Err(ConfigError::new(
                "",
                format!("invalid YAML: {message}"),
                loc,
            ))
        }
    }
}

/// serde-saphyr's user-facing wording, minus hints aimed at Rust callers
/// ("set DuplicateKeyPolicy in Options") and internal debug formatting.
fn syntax_message(err: &serde_saphyr::Error) -> String {
    use serde_saphyr::budget::BudgetBreach;
    use serde_saphyr::{Error, MessageFormatter, UserMessageFormatter};
    match err {
        Error::Budget {
            breach: BudgetBreach::Depth { .. },
            ..
        } => format!("nested more than {MAX_DEPTH} levels deep"),
        Error::Budget { .. } => "the document is too large or expands too many aliases".to_owned(),
        Error::DuplicateMappingKey { key: Some(key), .. } => format!("duplicate key \"{key}\""),
        Error::DuplicateMappingKey { key: None, .. } => "duplicate key".to_owned(),
        Error::MultipleDocuments { .. } => {
            "more than one YAML document (---): the config is a single document".to_owned()
        }
        other => UserMessageFormatter.format_message(other).into_owned(),
    }
}

fn source_text(text: &str, l: &Location) -> Option<String> {
    let span = l.span();
    let start = usize::try_from(span.byte_offset()?).ok()?;
    let len = usize::try_from(span.byte_len()?).ok()?;
    let end = start.checked_add(len)?;
    let s = text.get(start..end)?;
    (!s.is_empty()).then(|| s.to_owned())
}

fn convert(node: Spanned<Raw>, text: &str) -> Node {
    let loc = Loc::from_location(&node.referenced);
    let mut raw = None;
    let value = match node.value {
        Raw::Null => Value::Null,
        Raw::Bool(b) => {
            raw = source_text(text, &node.defined);
            Value::Bool(b)
        }
        Raw::Int(i) => {
            raw = source_text(text, &node.defined);
            Value::Int(i)
        }
        Raw::Float(x) => {
            raw = source_text(text, &node.defined);
            Value::Float(x)
        }
        Raw::Str(s) => Value::Str(s),
        Raw::Seq(items) => Value::Seq(items.into_iter().map(|n| convert(n, text)).collect()),
        Raw::Map(entries) => Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| {
                    let key = convert(k, text);
                    let key = Key {
                        text: key.scalar_text(),
                        loc: key.loc,
                    };
                    (key, convert(v, text))
                })
                .collect(),
        ),
    };
    Node { value, loc, raw }
}

/// What serde-saphyr hands us; `Spanned` needs a `Deserialize` type to wrap.
enum Raw {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Raw>>),
    Map(Vec<(Spanned<Raw>, Spanned<Raw>)>),
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }
    fn visit_none<E>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Raw, D::Error> {
        Raw::deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Raw, E> {
        Ok(Raw::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Raw, E> {
        Ok(Raw::Int(i128::from(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Raw, E> {
        Ok(Raw::Int(i128::from(v)))
    }
    fn visit_i128<E>(self, v: i128) -> Result<Raw, E> {
        Ok(Raw::Int(v))
    }
    fn visit_u128<E>(self, v: u128) -> Result<Raw, E> {
        Ok(match i128::try_from(v) {
            Ok(i) => Raw::Int(i),
            // Out of any range we accept; keep it as a number so the
            // validator reports "too large" with the right key.
            Err(_) => Raw::Float(v as f64),
        })
    }
    fn visit_f64<E>(self, v: f64) -> Result<Raw, E> {
        Ok(Raw::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Raw, E> {
        Ok(Raw::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Raw, E> {
        Ok(Raw::Str(v))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Raw, E> {
        Ok(Raw::Str(String::from_utf8_lossy(v).into_owned()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Raw::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Raw::Map(entries))
    }
}
