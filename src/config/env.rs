//! `${NAME}` and `${NAME:-default}` expansion in config string values.
//!
//! Expansion works on parsed TOML values, never on the raw text, so a value holding quotes or newlines
//! cannot change the file's structure. `$${` stands for a literal `${`.

use super::ConfigError;

/// Expands every string under `value`; `path` is the dotted key of `value` for messages.
/// Values expanded inside secret-bearing keys (`*url`, `headers.*`) are pushed to `secrets`.
pub(super) fn expand(
    value: &mut toml::Value,
    path: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    secrets: &mut Vec<String>,
) -> Result<(), ConfigError> {
    match value {
        toml::Value::String(s) if s.contains('$') => {
            let (expanded, used) = expand_str(s, path, lookup)?;
            if is_secret_key(path) {
                secrets.extend(used);
            }
            *s = expanded;
        }
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand(item, &format!("{path}[{i}]"), lookup, secrets)?;
            }
        }
        toml::Value::Table(table) => {
            for (k, v) in table.iter_mut() {
                let child = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                expand(v, &child, lookup, secrets)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn is_secret_key(path: &str) -> bool {
    let last = path.rsplit('.').next().unwrap_or(path);
    last.ends_with("url")
        || path.contains(".headers.")
        || last.contains("password")
        || last.contains("token")
}

/// Expands one string, returning it and the substituted values.
fn expand_str(
    s: &str,
    path: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(String, Vec<String>), ConfigError> {
    let mut out = String::with_capacity(s.len());
    let mut used = Vec::new();
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix("${") {
            out.push_str("${");
            rest = tail;
            continue;
        }
        let Some(body_start) = after.strip_prefix('{') else {
            out.push('$');
            rest = after;
            continue;
        };
        let Some(end) = body_start.find('}') else {
            return Err(ConfigError::invalid(
                path,
                "unterminated `${`: write `${NAME}`, or `$${` for a literal `${`",
            ));
        };
        let body = &body_start[..end];
        let (name, default) = match body.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (body, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(ConfigError::invalid(
                path,
                format!("`${{{body}}}` is not a valid environment reference: names are letters, digits and _"),
            ));
        }
        let value = match (lookup(name), default) {
            (Some(v), _) => v,
            (None, Some(d)) => d.to_owned(),
            (None, None) => {
                return Err(ConfigError::invalid(
                    path,
                    format!("environment variable {name} is not set (referenced as `${{{name}}}`; use `${{{name}:-default}}` for a fallback)"),
                ))
            }
        };
        out.push_str(&value);
        used.push(value);
        rest = &body_start[end + 1..];
    }
    out.push_str(rest);
    Ok((out, used))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "KEY" => Some("abc123".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_references_defaults_and_escapes() {
        let (s, used) =
            expand_str("https://x/${KEY}/${MISSING:-dflt}/$${KEEP}/$5", "k", &env).unwrap();
        assert_eq!(s, "https://x/abc123/dflt/${KEEP}/$5");
        assert_eq!(used, vec!["abc123".to_owned(), "dflt".to_owned()]);
    }

    #[test]
    fn missing_variable_names_key_and_variable() {
        let err = expand_str("${NOPE}", "chains[0].providers[0].url", &env).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("chains[0].providers[0].url") && msg.contains("NOPE"),
            "{msg}"
        );
        assert!(expand_str("${KEY", "k", &env).is_err());
        assert!(expand_str("${BAD NAME}", "k", &env).is_err());
    }

    #[test]
    fn secret_keys_are_recognised() {
        assert!(is_secret_key("chains[0].providers[0].url"));
        assert!(is_secret_key("chains[0].providers[0].ws_url"));
        assert!(is_secret_key("chains[0].providers[0].headers.x-api-key"));
        assert!(!is_secret_key("chains[0].name"));
    }
}
