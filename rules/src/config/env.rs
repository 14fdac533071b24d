//! `${VAR}` expansion for the string values that may hold secrets or
//! deployment-specific paths. Regexes and SQL are never expanded: `$` is
//! meaningful there.

/// Expands `${NAME}` from `env`; `$$` is a literal `$`, and a `$` not followed
/// by `{` is kept as is. Returns every problem found (not only the first), as
/// messages that name the variable but never its value.
pub(crate) fn expand(
    input: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, Vec<String>> {
    let mut out = String::with_capacity(input.len());
    let mut errors = Vec::new();
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(end) = body.find('}') else {
                errors.push("unterminated \"${\": expected ${NAME}".to_owned());
                rest = "";
                break;
            };
            let name = &body[..end];
            if !is_var_name(name) {
                errors.push(format!(
                    "invalid environment variable reference \"${{{}}}\": names are letters, digits and _ (write $$ for a literal $)",
                    truncate(name, 40)
                ));
            } else {
                match env(name) {
                    Some(value) => out.push_str(&value),
                    None => errors.push(format!("environment variable {name} is not set")),
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "A" => Some("alpha".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_and_escapes() {
        assert_eq!(expand("x${A}y", &env).unwrap(), "xalphay");
        assert_eq!(expand("$${A}", &env).unwrap(), "${A}");
        assert_eq!(expand("a$b $ c$", &env).unwrap(), "a$b $ c$");
        assert_eq!(expand("${EMPTY}", &env).unwrap(), "");
        assert_eq!(expand("$$$$", &env).unwrap(), "$$");
    }

    #[test]
    fn reports_every_missing_variable() {
        let errs = expand("${NOPE}:${ALSO_NOPE}", &env).unwrap_err();
        assert_eq!(errs.len(), 2);
        assert!(errs[0].contains("NOPE is not set"));
        assert!(errs[1].contains("ALSO_NOPE is not set"));
    }

    #[test]
    fn rejects_bad_references() {
        assert!(expand("${", &env).unwrap_err()[0].contains("unterminated"));
        assert!(expand("${}", &env).unwrap_err()[0].contains("invalid"));
        assert!(expand("${A-B}", &env).unwrap_err()[0].contains("invalid"));
        assert!(expand("${1A}", &env).unwrap_err()[0].contains("invalid"));
    }
}
