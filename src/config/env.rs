//! `${NAME}`, `${NAME:-default}` and `${file:PATH}` expansion in config string values.
//!
//! Expansion works on parsed TOML values, never on the raw text, so a value holding quotes or newlines
//! cannot change the file's structure, and an expanded value is not expanded again. `$${` stands for
//! a literal `${`.
//!
//! `${file:PATH}` is replaced by the content of the file at PATH (a relative PATH is relative to the
//! config file's directory), less one trailing newline (`\n` or `\r\n`). It takes no default: a
//! missing, unreadable, empty, non-UTF-8 or oversized file is an error naming the key and the path,
//! never the content. Every value read from a file is a secret, whatever the key.

use std::{
    io::Read,
    path::{Path, PathBuf},
};

use super::ConfigError;

/// Largest secret file read: a key, a token or a certificate, not a data file (and `/dev/zero` does
/// not hang the agent).
const MAX_SECRET_FILE: u64 = 64 * 1024;

/// Where expanded values come from.
pub(super) struct Sources<'a> {
    /// Environment variables by name.
    pub lookup: &'a dyn Fn(&str) -> Option<String>,
    /// The config file's directory, which relative `${file:…}` paths start from.
    pub base_dir: &'a Path,
}

/// The values substituted into one string.
#[derive(Debug, Default, PartialEq, Eq)]
struct Used {
    /// From `${NAME}` or its default: secret when the key is secret-bearing.
    env: Vec<String>,
    /// From `${file:…}`: always secret.
    files: Vec<String>,
}

/// Expands every string under `value`; `path` is the dotted key of `value` for messages.
/// Values expanded inside secret-bearing keys (`*url`, `headers.*`, `*password*`, `*token*`) and every
/// value read from a file are pushed to `secrets`.
pub(super) fn expand(
    value: &mut toml::Value,
    path: &str,
    sources: &Sources<'_>,
    secrets: &mut Vec<String>,
) -> Result<(), ConfigError> {
    match value {
        toml::Value::String(s) if s.contains('$') => {
            let (expanded, used) = expand_str(s, path, sources)?;
            if is_secret_key(path) {
                secrets.extend(used.env);
            }
            secrets.extend(used.files);
            *s = expanded;
        }
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand(item, &format!("{path}[{i}]"), sources, secrets)?;
            }
        }
        toml::Value::Table(table) => {
            for (k, v) in table.iter_mut() {
                let child = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                expand(v, &child, sources, secrets)?;
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
fn expand_str(s: &str, path: &str, sources: &Sources<'_>) -> Result<(String, Used), ConfigError> {
    let mut out = String::with_capacity(s.len());
    let mut used = Used::default();
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
                "unterminated `${`: write `${NAME}` or `${file:PATH}`, or `$${` for a literal `${`",
            ));
        };
        let body = &body_start[..end];
        rest = &body_start[end + 1..];
        if let Some(file) = body.strip_prefix("file:") {
            let value = read_secret_file(file, path, sources.base_dir)?;
            out.push_str(&value);
            used.files.push(value);
            continue;
        }
        let (name, default) = match body.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (body, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(ConfigError::invalid(
                path,
                format!("`${{{body}}}` is not a valid reference: write `${{NAME}}` (letters, digits and _), `${{NAME:-default}}` or `${{file:PATH}}`"),
            ));
        }
        let value = match ((sources.lookup)(name), default) {
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
        used.env.push(value);
    }
    out.push_str(rest);
    Ok((out, used))
}

/// The content of the secret file `file` (as written after `${file:`), for the value at `key`: less
/// one trailing newline. Errors name the key and the path, never the content.
fn read_secret_file(file: &str, key: &str, base_dir: &Path) -> Result<String, ConfigError> {
    if file.is_empty() {
        return Err(ConfigError::invalid(
            key,
            "`${file:}` names no file: write `${file:/run/secrets/NAME}`",
        ));
    }
    if file.contains(":-") {
        return Err(ConfigError::invalid(
            key,
            format!("`${{file:{file}}}`: a secret file takes no `:-default` (a missing file is an error)"),
        ));
    }
    let written = Path::new(file);
    let full: PathBuf = if written.is_absolute() {
        written.to_owned()
    } else {
        base_dir.join(written)
    };
    let fail = |why: &str| {
        let whence = if written.is_absolute() {
            String::new()
        } else {
            " (relative to the config file's directory)".to_owned()
        };
        ConfigError::invalid(
            key,
            format!(
                "cannot read secret file {}{whence}, referenced as `${{file:{file}}}`: {why}",
                full.display()
            ),
        )
    };
    let f = std::fs::File::open(&full).map_err(|e| fail(&e.to_string()))?;
    let mut bytes = Vec::new();
    f.take(MAX_SECRET_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(&e.to_string()))?;
    if bytes.len() as u64 > MAX_SECRET_FILE {
        return Err(fail(&format!(
            "larger than {} KiB, which is no secret value",
            MAX_SECRET_FILE / 1024
        )));
    }
    let mut text = String::from_utf8(bytes).map_err(|_| fail("not UTF-8 text"))?;
    if text.ends_with("\r\n") {
        text.truncate(text.len() - 2);
    } else if text.ends_with('\n') {
        text.truncate(text.len() - 1);
    }
    if text.is_empty() {
        return Err(fail("the file is empty"));
    }
    Ok(text)
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

    /// Expands `s` with [`env`] and `dir` as the config file's directory.
    fn expand_in(dir: &Path, s: &str, key: &str) -> Result<(String, Used), ConfigError> {
        let sources = Sources {
            lookup: &env,
            base_dir: dir,
        };
        expand_str(s, key, &sources)
    }

    fn expand_env(s: &str, key: &str) -> Result<(String, Used), ConfigError> {
        expand_in(Path::new("/nonexistent"), s, key)
    }

    #[test]
    fn expands_references_defaults_and_escapes() {
        let (s, used) = expand_env("https://x/${KEY}/${MISSING:-dflt}/$${KEEP}/$5", "k").unwrap();
        assert_eq!(s, "https://x/abc123/dflt/${KEEP}/$5");
        assert_eq!(used.env, vec!["abc123".to_owned(), "dflt".to_owned()]);
        assert!(used.files.is_empty());
        // `$${file:…}` is a literal too.
        let (s, _) = expand_env("$${file:/x}", "k").unwrap();
        assert_eq!(s, "${file:/x}");
    }

    #[test]
    fn missing_variable_names_key_and_variable() {
        let err = expand_env("${NOPE}", "chains[0].providers[0].url").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("chains[0].providers[0].url") && msg.contains("NOPE"),
            "{msg}"
        );
        assert!(expand_env("${KEY", "k").is_err());
        assert!(expand_env("${BAD NAME}", "k").is_err());
    }

    #[test]
    fn secret_keys_are_recognised() {
        assert!(is_secret_key("chains[0].providers[0].url"));
        assert!(is_secret_key("chains[0].providers[0].ws_url"));
        assert!(is_secret_key("chains[0].providers[0].headers.x-api-key"));
        assert!(!is_secret_key("chains[0].name"));
    }

    #[test]
    fn file_references_read_the_file_less_one_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, content: &[u8]| {
            std::fs::write(dir.path().join(name), content).unwrap();
            dir.path().join(name).display().to_string()
        };
        let lf = write("lf", b"k3y-from-file\n");
        let crlf = write("crlf", b"crlf-k3y\r\n");
        let two = write("two", b"two-newlines\n\n");
        let bare = write("bare", b" spaced key ");
        let (s, used) = expand_env(
            &format!("https://x/v2/${{file:{lf}}}?a=${{file:{crlf}}}&b=${{KEY}}"),
            "chains[0].providers[0].url",
        )
        .unwrap();
        assert_eq!(s, "https://x/v2/k3y-from-file?a=crlf-k3y&b=abc123");
        assert_eq!(used.files, ["k3y-from-file", "crlf-k3y"]);
        assert_eq!(used.env, ["abc123"]);
        // Only one newline is trimmed, and no other whitespace.
        assert_eq!(
            expand_env(&format!("${{file:{two}}}"), "k").unwrap().0,
            "two-newlines\n"
        );
        assert_eq!(
            expand_env(&format!("${{file:{bare}}}"), "k").unwrap().0,
            " spaced key "
        );
        // A relative path starts from the config file's directory, not the working directory.
        let (s, _) = expand_in(dir.path(), "${file:lf}", "k").unwrap();
        assert_eq!(s, "k3y-from-file");
        // The content is not expanded again.
        let nested = write("nested", b"${KEY}");
        assert_eq!(
            expand_env(&format!("${{file:{nested}}}"), "k").unwrap().0,
            "${KEY}"
        );
    }

    #[test]
    fn file_values_are_secrets_whatever_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("name");
        std::fs::write(&path, "file-s3cret\n").unwrap();
        let mut value: toml::Value = toml::from_str(&format!(
            "[telemetry]\nservice_name = \"${{file:{p}}}\"\nlog_level = \"${{KEY}}\"\n[[chains]]\nname = \"${{KEY}}\"\n",
            p = path.display()
        ))
        .unwrap();
        let mut secrets = Vec::new();
        let sources = Sources {
            lookup: &env,
            base_dir: dir.path(),
        };
        expand(&mut value, "", &sources, &mut secrets).unwrap();
        assert_eq!(
            value["telemetry"]["service_name"].as_str(),
            Some("file-s3cret")
        );
        // `${KEY}` in keys that carry no secret is not one; a file's content always is.
        assert_eq!(secrets, ["file-s3cret"]);
    }

    #[test]
    fn a_bad_file_reference_names_key_and_path_never_content() {
        let dir = tempfile::tempdir().unwrap();
        let key = "chains[0].providers[0].headers.x-api-key";
        let msg = |s: &str| expand_in(dir.path(), s, key).unwrap_err().to_string();

        let m = msg("${file:/run/secrets/definitely-missing}");
        assert!(
            m.contains(key)
                && m.contains("/run/secrets/definitely-missing")
                && m.contains("No such file"),
            "{m}"
        );
        let m = msg("${file:missing-key}");
        assert!(
            m.contains(key)
                && m.contains(&dir.path().join("missing-key").display().to_string())
                && m.contains("relative to the config file's directory"),
            "{m}"
        );
        // No default: a missing secret must not go unnoticed.
        let m = msg("${file:/run/secrets/x:-fallback}");
        assert!(m.contains(key) && m.contains("no `:-default`"), "{m}");
        assert!(msg("${file:}").contains("names no file"));

        // Unusable files: the message never quotes what was read.
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let m = msg(&format!("${{file:{}}}", empty.display()));
        assert!(m.contains(key) && m.contains("empty"), "{m}");
        let binary = dir.path().join("binary");
        std::fs::write(&binary, b"s3cret\xff\xfe").unwrap();
        let m = msg(&format!("${{file:{}}}", binary.display()));
        assert!(m.contains("not UTF-8") && !m.contains("s3cret"), "{m}");
        let big = dir.path().join("big");
        std::fs::write(&big, "s3cret".repeat(20_000)).unwrap();
        let m = msg(&format!("${{file:{}}}", big.display()));
        assert!(m.contains("larger than") && !m.contains("s3cret"), "{m}");
        let m = msg(&format!("${{file:{}}}", dir.path().display()));
        assert!(m.contains(key) && m.contains("directory"), "{m}");
        // An endless file is cut short, not read forever.
        let m = msg("${file:/dev/zero}");
        assert!(m.contains("larger than"), "{m}");
    }
}
