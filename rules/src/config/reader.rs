//! Schema-driven reading of the YAML tree: typed accessors that record an
//! error (with path and position) and carry on, so one pass finds everything.

use std::time::Duration;

use super::env;
use super::error::ConfigError;
use super::names::unknown_choice;
use super::units;
use super::yaml::{Loc, Node, Value};

/// A location in the config as operators write it: `rules[3].match.sql`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Path(String);

impl Path {
    pub fn key(&self, key: &str) -> Path {
        let plain = key
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        let mut s = self.0.clone();
        if plain {
            if !s.is_empty() {
                s.push('.');
            }
            s.push_str(key);
        } else {
            // Keys such as `users.email` would read as two levels.
            s.push_str(&format!("[{key:?}]"));
        }
        Path(s)
    }

    pub fn index(&self, i: usize) -> Path {
        Path(format!("{}[{i}]", self.0))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A value found in the tree, with where it was found.
#[derive(Clone)]
pub(crate) struct Field<'n> {
    pub node: &'n Node,
    pub path: Path,
}

impl Field<'_> {
    pub fn loc(&self) -> Option<Loc> {
        self.node.loc
    }
}

pub(crate) struct Ctx<'e> {
    env: &'e dyn Fn(&str) -> Option<String>,
    pub errors: Vec<ConfigError>,
}

impl<'e> Ctx<'e> {
    pub fn new(env: &'e dyn Fn(&str) -> Option<String>) -> Self {
        Ctx {
            env,
            errors: Vec::new(),
        }
    }

    pub fn error(&mut self, path: &Path, loc: Option<Loc>, message: impl Into<String>) {
        self.errors
            .push(ConfigError::new(path.as_str(), message, loc));
    }

    pub fn error_at(&mut self, field: &Field<'_>, message: impl Into<String>) {
        self.error(&field.path, field.loc(), message);
    }

    fn wrong_type(&mut self, field: &Field<'_>, expected: &str) {
        let found = field.node.kind_name();
        self.error_at(field, format!("expected {expected}, found {found}"));
    }

    /// A scalar as text; numbers and booleans keep their source spelling.
    pub fn text(&mut self, field: &Field<'_>) -> Option<String> {
        let text = field.node.scalar_text();
        if text.is_none() {
            self.wrong_type(field, "a string");
        }
        text
    }

    /// Like `text`, then `${VAR}` expansion.
    pub fn expanded(&mut self, field: &Field<'_>) -> Option<String> {
        let text = self.text(field)?;
        match env::expand(&text, self.env) {
            Ok(s) => Some(s),
            Err(messages) => {
                for m in messages {
                    self.error_at(field, m);
                }
                None
            }
        }
    }

    /// Expanded text that must not be empty (after expansion: an empty
    /// variable is as wrong as an empty literal).
    pub fn expanded_nonempty(&mut self, field: &Field<'_>) -> Option<String> {
        let s = self.expanded(field)?;
        if s.trim().is_empty() {
            self.error_at(field, "must not be empty");
            return None;
        }
        Some(s)
    }

    pub fn nonempty_text(&mut self, field: &Field<'_>) -> Option<String> {
        let s = self.text(field)?;
        if s.trim().is_empty() {
            self.error_at(field, "must not be empty");
            return None;
        }
        Some(s)
    }

    pub fn boolean(&mut self, field: &Field<'_>) -> Option<bool> {
        match field.node.value {
            Value::Bool(b) => Some(b),
            _ => {
                self.wrong_type(field, "true or false");
                None
            }
        }
    }

    /// An integer within `min..=max`.
    pub fn integer(&mut self, field: &Field<'_>, min: u64, max: u64) -> Option<u64> {
        let range = format!("an integer from {min} to {max}");
        match field.node.value {
            Value::Int(i) => match u64::try_from(i) {
                Ok(n) if (min..=max).contains(&n) => Some(n),
                _ => {
                    self.error_at(field, format!("{i} is out of range: expected {range}"));
                    None
                }
            },
            _ => {
                self.wrong_type(field, &range);
                None
            }
        }
    }

    pub fn number(&mut self, field: &Field<'_>) -> Option<f64> {
        match field.node.value {
            Value::Float(x) => Some(x),
            Value::Int(i) => Some(i as f64),
            _ => {
                self.wrong_type(field, "a number");
                None
            }
        }
    }

    pub fn choice<T: Copy>(&mut self, field: &Field<'_>, choices: &[(&str, T)]) -> Option<T> {
        let names = || choices.iter().map(|(name, _)| *name);
        let Some(text) = field.node.scalar_text() else {
            let expected = format!("one of {}", names().collect::<Vec<_>>().join(", "));
            self.wrong_type(field, &expected);
            return None;
        };
        match choices.iter().find(|(name, _)| *name == text) {
            Some((_, v)) => Some(*v),
            None => {
                self.error_at(field, unknown_choice(&text, names()));
                None
            }
        }
    }

    pub fn duration(&mut self, field: &Field<'_>) -> Option<Duration> {
        let parsed = match &field.node.value {
            Value::Int(_) | Value::Float(_) => Err(units::DURATION_HINT.to_owned()),
            Value::Str(s) => units::parse_duration(s),
            _ => {
                self.wrong_type(field, "a duration such as 10s or 50ms");
                return None;
            }
        };
        parsed.map_err(|e| self.error_at(field, e)).ok()
    }

    pub fn size(&mut self, field: &Field<'_>) -> Option<u64> {
        let parsed = match &field.node.value {
            Value::Int(i) => u64::try_from(*i).map_err(|_| "a size cannot be negative".to_owned()),
            Value::Str(s) => units::parse_size(s),
            _ => {
                self.wrong_type(field, "a size such as 64MiB or 1GiB");
                return None;
            }
        };
        parsed.map_err(|e| self.error_at(field, e)).ok()
    }

    /// A list, or a single scalar standing for a one-element list.
    pub fn list<'n>(&mut self, field: &Field<'n>) -> Vec<Field<'n>> {
        match &field.node.value {
            Value::Seq(items) => items
                .iter()
                .enumerate()
                .map(|(i, node)| Field {
                    node,
                    path: field.path.index(i),
                })
                .collect(),
            Value::Map(_) => {
                self.wrong_type(field, "a list");
                Vec::new()
            }
            _ => vec![field.clone()],
        }
    }

    /// The entries of a mapping whose keys are data (table names, ...).
    pub fn entries<'n>(&mut self, field: &Field<'n>) -> Vec<(String, Field<'n>)> {
        let Value::Map(entries) = &field.node.value else {
            self.wrong_type(field, "a mapping");
            return Vec::new();
        };
        let mut out = Vec::new();
        for (key, node) in entries {
            match &key.text {
                Some(text) => out.push((
                    text.clone(),
                    Field {
                        node,
                        path: field.path.key(text),
                    },
                )),
                None => self.error(&field.path, key.loc, "mapping keys must be strings"),
            }
        }
        out
    }
}

/// The fixed keys of one mapping in the schema.
pub(crate) struct Fields<'n> {
    path: Path,
    loc: Option<Loc>,
    entries: Vec<(&'n str, &'n Node)>,
}

impl<'n> Fields<'n> {
    /// Opens a mapping, reporting keys outside `allowed`. An absent or null
    /// value is an empty mapping, so every key takes its default.
    pub fn open(ctx: &mut Ctx<'_>, node: Option<&'n Node>, path: Path, allowed: &[&str]) -> Self {
        let mut fields = Fields {
            loc: node.and_then(|n| n.loc),
            path,
            entries: Vec::new(),
        };
        let Some(node) = node else {
            return fields;
        };
        match &node.value {
            Value::Null => {}
            Value::Map(entries) => {
                for (key, value) in entries {
                    let Some(text) = key.text.as_deref() else {
                        ctx.error(&fields.path, key.loc, "mapping keys must be strings");
                        continue;
                    };
                    if allowed.contains(&text) {
                        fields.entries.push((text, value));
                    } else {
                        let hint = match closest(text, allowed) {
                            Some(k) => format!("did you mean {k}? "),
                            None => String::new(),
                        };
                        ctx.error(
                            &fields.path.key(text),
                            key.loc,
                            format!("unknown key; {hint}expected one of {}", allowed.join(", ")),
                        );
                    }
                }
            }
            _ => {
                let found = node.kind_name();
                ctx.error(
                    &fields.path,
                    node.loc,
                    format!("expected a mapping, found {found}"),
                );
            }
        }
        fields
    }

    /// Opens the mapping stored under `key` of this one.
    pub fn child(&self, ctx: &mut Ctx<'_>, key: &str, allowed: &[&str]) -> Fields<'n> {
        let node = self.raw(key);
        Fields::open(ctx, node, self.path.key(key), allowed)
    }

    fn raw(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, n)| *n)
    }

    /// The value under `key`; None when absent or null (null means "default").
    pub fn get(&self, key: &str) -> Option<Field<'n>> {
        let node = self.raw(key)?;
        if matches!(node.value, Value::Null) {
            return None;
        }
        Some(Field {
            node,
            path: self.path.key(key),
        })
    }

    pub fn require(&self, ctx: &mut Ctx<'_>, key: &str) -> Option<Field<'n>> {
        let field = self.get(key);
        if field.is_none() {
            ctx.error(&self.path.key(key), self.loc, "required key is missing");
        }
        field
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn loc(&self) -> Option<Loc> {
        self.loc
    }
}

/// The allowed key within two edits of a typo, if exactly one is closest.
fn closest<'a>(typo: &str, allowed: &[&'a str]) -> Option<&'a str> {
    let mut best: Option<(usize, &str)> = None;
    let mut tie = false;
    for &candidate in allowed {
        let d = edit_distance(typo, candidate);
        match best {
            Some((bd, _)) if d > bd => {}
            Some((bd, _)) if d == bd => tie = true,
            _ => {
                best = Some((d, candidate));
                tie = false;
            }
        }
    }
    best.filter(|(d, _)| *d <= 2 && !tie).map(|(_, k)| k)
}

/// Levenshtein distance (two rolling rows; typos in keys are short).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = Vec::with_capacity(b.len() + 1);
        cur.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let at = |row: &Vec<usize>, k: usize| row.get(k).copied().unwrap_or(usize::MAX);
            let substitute = at(&prev, j).saturating_add(usize::from(ca != *cb));
            let delete = at(&prev, j + 1).saturating_add(1);
            let insert = cur.last().copied().unwrap_or(usize::MAX).saturating_add(1);
            cur.push(substitute.min(delete).min(insert));
        }
        prev = cur;
    }
    prev.last().copied().unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::{closest, edit_distance};

    #[test]
    fn suggestions() {
        assert_eq!(edit_distance("lsiten", "listen"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(closest("lsiten", &["listen", "admin"]), Some("listen"));
        assert_eq!(closest("tabels", &["tables", "kind"]), Some("tables"));
        assert_eq!(closest("zzzzzz", &["tables", "kind"]), None);
        assert_eq!(closest("ab", &["ac", "ad"]), None);
    }
}
