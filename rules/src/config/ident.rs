//! SQL identifiers as Postgres reads them, and table names built from them.

use std::fmt;

/// Postgres silently truncates identifiers to NAMEDATALEN-1 bytes; a longer
/// name in the config could never match what the server sees, so we reject it.
const MAX_IDENT_BYTES: usize = 63;

/// A table name or identifier that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NameError(String);

/// A possibly schema-qualified table name, normalised the way Postgres folds
/// identifiers: unquoted parts are lowercased, quoted parts kept verbatim.
///
/// Accepted forms: `name` and `schema.name`. A three-part
/// `database.schema.name` is rejected rather than silently dropping the
/// database: match on the database with `match.database` instead.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableName {
    pub schema: Option<String>,
    pub name: String,
}

impl TableName {
    /// Builds a name from already-normalised parts (no case folding).
    pub fn new(schema: Option<&str>, name: &str) -> Self {
        TableName {
            schema: schema.map(str::to_owned),
            name: name.to_owned(),
        }
    }

    pub fn parse(input: &str) -> Result<TableName, NameError> {
        let mut parts = parse_qualified(input)?;
        match parts.len() {
            1 => Ok(TableName {
                schema: None,
                name: parts.remove(0),
            }),
            2 => {
                let name = parts.remove(1);
                Ok(TableName {
                    schema: Some(parts.remove(0)),
                    name,
                })
            }
            _ => Err(NameError(
                "too many dots: write table or schema.table (match the database with match.database)"
                    .into(),
            )),
        }
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(schema) = &self.schema {
            write!(f, "{}.", quote_ident(schema))?;
        }
        f.write_str(&quote_ident(&self.name))
    }
}

impl std::str::FromStr for TableName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TableName::parse(s)
    }
}

/// Parses a single identifier (`Email`, `"Email"`), normalised.
pub(crate) fn parse_identifier(input: &str) -> Result<String, NameError> {
    let mut parts = parse_qualified(input)?;
    if parts.len() != 1 {
        return Err(NameError(
            "expected a single name; quote it (\"a.b\") if it contains a dot".into(),
        ));
    }
    Ok(parts.remove(0))
}

/// Splits a dotted name into normalised parts. Dots inside double quotes do
/// not separate; `""` inside quotes is a literal quote.
pub(crate) fn parse_qualified(input: &str) -> Result<Vec<String>, NameError> {
    let mut parts = Vec::new();
    let mut chars = input.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let part = match chars.peek() {
            None if parts.is_empty() => return Err(NameError("empty name".into())),
            None => return Err(NameError("name ends with a dot".into())),
            Some('.') => {
                return Err(NameError(
                    "empty name part (two dots, or a leading dot)".into(),
                ))
            }
            Some('"') => {
                chars.next();
                let mut part = String::new();
                loop {
                    match chars.next() {
                        None => return Err(NameError("unterminated quoted identifier".into())),
                        Some('"') if chars.next_if_eq(&'"').is_some() => part.push('"'),
                        Some('"') => break,
                        Some(c) => part.push(c),
                    }
                }
                if part.is_empty() {
                    return Err(NameError("zero-length quoted identifier \"\"".into()));
                }
                part
            }
            Some(_) => {
                let mut part = String::new();
                while let Some(c) = chars.next_if(|c| *c != '.' && *c != '"' && !c.is_whitespace())
                {
                    part.push(c);
                }
                validate_unquoted(&part)?;
                // Postgres folds only ASCII letters in unquoted identifiers.
                part.to_ascii_lowercase()
            }
        };
        if part.len() > MAX_IDENT_BYTES {
            return Err(NameError(format!(
                "identifier longer than {MAX_IDENT_BYTES} bytes (Postgres would truncate it)"
            )));
        }
        parts.push(part);
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        match chars.next() {
            None => return Ok(parts),
            Some('.') => {}
            Some(c) => {
                return Err(NameError(format!(
                    "unexpected character '{c}' (quote names that contain it)"
                )))
            }
        }
    }
}

fn validate_unquoted(part: &str) -> Result<(), NameError> {
    let mut chars = part.chars();
    let first_ok = matches!(chars.next(), Some(c) if c.is_alphabetic() || c == '_');
    if !first_ok {
        return Err(NameError(format!(
            "\"{part}\" is not a valid unquoted identifier: it must start with a letter or _ (quote it otherwise)"
        )));
    }
    if let Some(c) = chars.find(|c| !(c.is_alphanumeric() || *c == '_' || *c == '$')) {
        return Err(NameError(format!(
            "unexpected character '{c}' in \"{part}\" (quote names that contain it)"
        )));
    }
    Ok(())
}

/// Canonical spelling: bare when re-parsing gives the same name, quoted otherwise.
pub(crate) fn quote_ident(name: &str) -> String {
    let mut chars = name.chars();
    let bare = matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$');
    if bare {
        name.to_owned()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> TableName {
        TableName::parse(s).unwrap()
    }

    #[test]
    fn folds_like_postgres() {
        assert_eq!(t("Users"), TableName::new(None, "users"));
        assert_eq!(t("\"Users\""), TableName::new(None, "Users"));
        assert_eq!(t("public.users"), TableName::new(Some("public"), "users"));
        assert_eq!(
            t("Public.\"Users\""),
            TableName::new(Some("public"), "Users")
        );
        assert_eq!(
            t("\"my schema\".\"T\"\"x\""),
            TableName::new(Some("my schema"), "T\"x")
        );
        assert_eq!(
            t("\"My.Schema\".\"T\""),
            TableName::new(Some("My.Schema"), "T")
        );
        assert_eq!(
            t(" public . users "),
            TableName::new(Some("public"), "users")
        );
        assert_eq!(t("_x$1"), TableName::new(None, "_x$1"));
        assert_eq!(t("Ünïcode"), TableName::new(None, "Ünïcode"));
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "  ",
            "a..b",
            ".a",
            "a.",
            "\"unterminated",
            "\"\"",
            "a.b.c",
            "1abc",
            "a-b",
            "a b",
            "$a",
            "a\"b\"",
        ] {
            assert!(TableName::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        let long = "a".repeat(64);
        assert!(TableName::parse(&long)
            .unwrap_err()
            .to_string()
            .contains("63"));
        assert!(TableName::parse(&"a".repeat(63)).is_ok());
    }

    #[test]
    fn displays_canonically_and_round_trips() {
        for (input, shown) in [
            ("Users", "users"),
            ("\"Users\"", "\"Users\""),
            ("public.users", "public.users"),
            ("\"my schema\".\"T\"\"x\"", "\"my schema\".\"T\"\"x\""),
            ("\"My.Schema\".t", "\"My.Schema\".t"),
            ("\"1st\"", "\"1st\""),
        ] {
            let name = t(input);
            assert_eq!(name.to_string(), shown);
            assert_eq!(t(&name.to_string()), name);
        }
    }

    #[test]
    fn single_identifiers() {
        assert_eq!(parse_identifier("Email").unwrap(), "email");
        assert_eq!(parse_identifier("\"E.mail\"").unwrap(), "E.mail");
        assert!(parse_identifier("a.b").is_err());
    }
}
