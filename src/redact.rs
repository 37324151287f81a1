//! Keeping secrets out of everything the agent prints.
//!
//! Provider URLs often carry an API key in a path segment or a query value, and configured headers
//! carry keys outright. Two nets catch them: [`redact_url`] strips what looks like a credential from a
//! URL by shape (user-info, key-like path segments, every query value), and a [`Redactor`] replaces
//! every value that came from a `${ENV}` expansion in a secret-bearing key or from a header, wherever it
//! appears in a piece of text (an error message from a transport, say).

use std::collections::BTreeSet;

/// What replaces a secret.
pub const REDACTED: &str = "<redacted>";

/// Secrets shorter than this are not searched for in free text: they would match ordinary words.
const MIN_SECRET_LEN: usize = 4;

/// Replaces known secret values in free text.
#[derive(Clone, Debug, Default)]
pub struct Redactor {
    /// Longest first, so that a secret containing another is replaced whole.
    secrets: Vec<String>,
}

impl Redactor {
    /// A redactor for the given secret values.
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        let set: BTreeSet<String> = secrets
            .into_iter()
            .filter(|s| s.len() >= MIN_SECRET_LEN)
            .collect();
        let mut secrets: Vec<String> = set.into_iter().collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Self { secrets }
    }

    /// `text` with every known secret replaced by [`REDACTED`].
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), REDACTED);
            }
        }
        out
    }

    /// A URL fit to show: known secrets replaced, then credential-shaped parts stripped.
    pub fn url(&self, url: &str) -> String {
        // The URL parser percent-encodes the marker's angle brackets; put them back.
        redact_url(&self.redact(url)).replace("%3Credacted%3E", REDACTED)
    }
}

/// Whether a path segment looks like an API key rather than a route (`v2`, `rpc`, `eth-mainnet`).
fn looks_like_key(segment: &str) -> bool {
    let charset_ok = segment
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    let has_digit = segment.chars().any(|c| c.is_ascii_digit());
    let has_alpha = segment.chars().any(|c| c.is_ascii_alphabetic());
    charset_ok && ((segment.len() >= 16 && has_digit && has_alpha) || segment.len() >= 32)
}

/// `url` with user-info, key-like path segments and all query values replaced by [`REDACTED`].
///
/// A string that does not parse as a URL is not shown at all.
pub fn redact_url(url: &str) -> String {
    let Ok(parsed) = url::Url::parse(url) else {
        return "<invalid url>".to_owned();
    };
    let mut out = format!("{}://", parsed.scheme());
    if !parsed.username().is_empty() || parsed.password().is_some() {
        out.push_str(REDACTED);
        out.push('@');
    }
    if let Some(host) = parsed.host_str() {
        out.push_str(host);
    }
    if let Some(port) = parsed.port() {
        out.push_str(&format!(":{port}"));
    }
    let path: Vec<String> = parsed
        .path()
        .split('/')
        .map(|seg| {
            if looks_like_key(seg) {
                REDACTED.to_owned()
            } else {
                seg.to_owned()
            }
        })
        .collect();
    out.push_str(&path.join("/"));
    if parsed.query().is_some() {
        let pairs: Vec<String> = parsed
            .query_pairs()
            .map(|(k, _)| format!("{k}={REDACTED}"))
            .collect();
        out.push('?');
        out.push_str(&pairs.join("&"));
    }
    out
}

/// The parts of `url` that [`redact_url`] would hide (user-info, key-like path segments, query
/// values) and that are long enough to be credentials rather than words (8 characters or more), so
/// that they can also be found in free text.
pub fn url_secrets(url: &str) -> Vec<String> {
    let Ok(parsed) = url::Url::parse(url) else {
        return Vec::new();
    };
    let mut out: Vec<String> = Vec::new();
    if !parsed.username().is_empty() {
        out.push(parsed.username().to_owned());
    }
    if let Some(p) = parsed.password() {
        out.push(p.to_owned());
    }
    out.extend(
        parsed
            .path()
            .split('/')
            .filter(|s| looks_like_key(s))
            .map(str::to_owned),
    );
    out.extend(parsed.query_pairs().map(|(_, v)| v.into_owned()));
    out.retain(|s| s.len() >= 8);
    out
}

/// The secrets in a header value: the whole value, and each word of it long enough to be a
/// credential (`Bearer <token>`: the token alone is found too).
pub fn header_secrets(value: &str) -> Vec<String> {
    let mut out = vec![value.to_owned()];
    out.extend(
        value
            .split_whitespace()
            .filter(|w| w.len() >= 8 && *w != value)
            .map(str::to_owned),
    );
    out
}

/// `text` with every `http(s)://` or `ws(s)://` URL in it passed through [`redact_url`] (for messages
/// from libraries that quote the URL they were given).
pub fn redact_urls_in(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = ["http://", "https://", "ws://", "wss://"]
        .iter()
        .filter_map(|p| rest.find(p))
        .min()
    {
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, '\'' | '"' | '`' | '>' | ')' | ','))
            .unwrap_or(tail.len());
        out.push_str(&redact_url(&tail[..end]));
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_in_paths_queries_and_userinfo_are_removed() {
        assert_eq!(
            redact_url("https://eth-mainnet.g.alchemy.com/v2/AbCdEf0123456789xyzQ"),
            "https://eth-mainnet.g.alchemy.com/v2/<redacted>"
        );
        assert_eq!(
            redact_url("https://mainnet.infura.io/v3/9aa3d95b3bc440fa88ea12eaa4456161"),
            "https://mainnet.infura.io/v3/<redacted>"
        );
        assert_eq!(
            redact_url("https://user:pass@rpc.example.com:8545/rpc?apikey=s3cr3t"),
            "https://<redacted>@rpc.example.com:8545/rpc?apikey=<redacted>"
        );
        assert_eq!(
            redact_url("http://127.0.0.1:8545"),
            "http://127.0.0.1:8545/"
        );
        assert_eq!(redact_url("not a url"), "<invalid url>");
    }

    #[test]
    fn secrets_of_a_url_are_listed() {
        let mut s = url_secrets(
            "https://mememememe:pw@x.io/v2/AbCdEf0123456789xyzQ?key=k1k1k1k1k1&format=json",
        );
        s.sort();
        assert_eq!(s, vec!["AbCdEf0123456789xyzQ", "k1k1k1k1k1", "mememememe"]);
    }

    #[test]
    fn urls_inside_messages_are_redacted() {
        assert_eq!(
            redact_urls_in("invalid endpoint 'https://u:tok@h.io:4317/v1?key=abc': oops"),
            "invalid endpoint 'https://<redacted>@h.io:4317/v1?key=<redacted>': oops"
        );
        assert_eq!(redact_urls_in("no url here"), "no url here");
    }

    #[test]
    fn known_secrets_are_replaced_in_free_text() {
        let r = Redactor::new(["tiny".to_owned(), "abc".to_owned(), "sekrit-key".to_owned()]);
        assert_eq!(
            r.redact("failed to reach https://x.io/sekrit-key: tiny abc"),
            "failed to reach https://x.io/<redacted>: <redacted> abc"
        );
        assert_eq!(
            r.url("https://x.io/rpc/sekrit-key"),
            "https://x.io/rpc/<redacted>"
        );
    }
}
