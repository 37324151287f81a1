//! Keeping secrets out of everything the agent prints.
//!
//! Provider URLs often carry an API key in a path segment or a query value, and configured headers
//! carry keys outright. Two nets catch them:
//!
//! - [`redact_url`] shows a URL by its structure: user-info and every query value are hidden, and so
//!   is every path segment that is not a known public route word (see [`is_public_segment`]) — an
//!   unknown segment is taken for a key, whatever its length. A provider marked `public_url = true`
//!   keeps its path ([`redact_url_with`]).
//! - a [`Redactor`] replaces known secret values wherever they appear in a piece of text (an error
//!   message from a transport, a log line): values from `${NAME}` in secret-bearing keys, every
//!   `${file:…}` value, header values, and the parts of URLs that [`url_secrets`] lists.

use std::collections::BTreeSet;

/// What replaces a secret.
pub const REDACTED: &str = "<redacted>";

/// Declared secrets (from `${…}` in a secret-bearing key, `${file:…}`, header values) shorter than
/// this are not searched for in free text: they would match ordinary words and numbers.
const MIN_SECRET_LEN: usize = 4;

/// Parts of a URL that are hidden because of their shape (an unknown path segment, a query value,
/// user-info) are searched for in free text from this length on. They are hidden in the URL itself
/// whatever their length; below it they are too likely to be a route or a number (`/node1`,
/// `?page=2`) to be replaced in every log line, and real API keys are much longer.
pub const MIN_URL_SECRET_LEN: usize = 8;

/// Path segments (compared ignoring ASCII case) that are routes, API versions, networks or chains,
/// never credentials. A hyphenated segment is public when each of its parts is in this list
/// (`eth-mainnet`, `polygon-amoy`, `arb-sepolia`); `v` followed by one or two digits is a version.
/// Anything else in a path is taken for a key.
#[rustfmt::skip]
pub const PUBLIC_SEGMENTS: &[&str] = &[
    // Routes and transports.
    "api", "rpc", "jsonrpc", "json", "http", "https", "ws", "wss", "websocket", "ext", "bc", "evm",
    "node", "nodes", "archive", "full", "public",
    // Networks.
    "mainnet", "testnet", "devnet", "main", "test", "net", "network",
    // Chains, their short names and their test networks.
    "eth", "ethereum", "sepolia", "holesky", "hoodi", "goerli", "ropsten", "rinkeby", "kovan",
    "polygon", "matic", "pos", "zkevm", "amoy", "mumbai", "cardona",
    "arbitrum", "arb", "one", "nova",
    "optimism", "op", "opt", "base",
    "bsc", "bnb", "binance", "smart", "chain",
    "avalanche", "avax", "c", "p", "x", "fuji",
    "gnosis", "xdai", "chiado",
    "linea", "scroll", "zksync", "era", "fantom", "ftm", "opera", "sonic",
    "celo", "alfajores", "moonbeam", "moonriver", "moonbase", "alpha",
    "cronos", "aurora", "harmony", "klaytn", "kaia", "metis", "andromeda", "mantle", "blast",
    "zora", "mode", "fraxtal", "taiko", "manta", "pacific", "berachain", "bera", "unichain",
    "ink", "soneium", "worldchain", "world", "apechain", "abstract", "sei", "hyperevm",
];

/// Whether one word of a path segment is a known public word (see [`PUBLIC_SEGMENTS`]).
fn is_public_word(word: &str) -> bool {
    let w = word.to_ascii_lowercase();
    let version = w.len() >= 2
        && w.len() <= 3
        && w.starts_with('v')
        && w[1..].bytes().all(|b| b.is_ascii_digit());
    version || PUBLIC_SEGMENTS.contains(&w.as_str())
}

/// Whether a URL path segment (as it is written, percent-encoding included) is a public route rather
/// than a possible credential: it is empty, a word of [`PUBLIC_SEGMENTS`] or a version (`v2`), or
/// made of such words joined by `-`. Everything else — numbers included — is treated as secret.
pub fn is_public_segment(segment: &str) -> bool {
    segment.is_empty()
        || is_public_word(segment)
        || segment
            .split('-')
            .all(|part| !part.is_empty() && is_public_word(part))
}

/// Replaces known secret values in free text.
#[derive(Clone, Debug, Default)]
pub struct Redactor {
    /// Longest first, so that a secret containing another is replaced whole.
    secrets: Vec<String>,
}

impl Redactor {
    /// A redactor for the given secret values (those shorter than 4 characters are left out).
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

    /// A URL fit to show: credential-shaped parts stripped ([`redact_url`]), then known secrets
    /// replaced in what is left (a key in the host name, say).
    pub fn url(&self, url: &str) -> String {
        self.url_with(url, false)
    }

    /// Like [`Redactor::url`]; with `public_path` the path is shown as it is (`public_url = true`),
    /// user-info and query values are still hidden, and so are known secrets.
    pub fn url_with(&self, url: &str, public_path: bool) -> String {
        self.redact(&redact_url_with(url, public_path))
    }
}

/// `url` with user-info, every path segment that is not public ([`is_public_segment`]) and every
/// query value replaced by [`REDACTED`]. A string that does not parse as a URL is not shown at all.
pub fn redact_url(url: &str) -> String {
    redact_url_with(url, false)
}

/// Like [`redact_url`]; with `public_path` every path segment is shown (the operator marked the
/// URL public), while user-info and query values are still hidden.
pub fn redact_url_with(url: &str, public_path: bool) -> String {
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
    let path: Vec<&str> = parsed
        .path()
        .split('/')
        .map(|seg| {
            if public_path || is_public_segment(seg) {
                seg
            } else {
                REDACTED
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

/// The parts of `url` that [`redact_url_with`] hides — user-info, path segments that are not public
/// (none with `public_path`), query values — as written and percent-decoded, so that they can also
/// be found in free text. Only those of [`MIN_URL_SECRET_LEN`] characters or more that are not
/// public words themselves are listed: shorter ones are hidden in the URL but would match ordinary
/// words and numbers in a log line.
pub fn url_secrets(url: &str, public_path: bool) -> Vec<String> {
    let Ok(parsed) = url::Url::parse(url) else {
        return Vec::new();
    };
    let mut raw: Vec<&str> = Vec::new();
    if !parsed.username().is_empty() {
        raw.push(parsed.username());
    }
    if let Some(p) = parsed.password() {
        raw.push(p);
    }
    if !public_path {
        raw.extend(parsed.path().split('/').filter(|s| !is_public_segment(s)));
    }
    raw.extend(
        parsed
            .query()
            .unwrap_or_default()
            .split('&')
            .filter_map(|pair| pair.split_once('=').map(|(_, v)| v)),
    );
    let mut out: Vec<String> = Vec::new();
    for r in raw {
        out.push(r.to_owned());
        let decoded = percent_decode(r);
        if decoded != r {
            out.push(decoded);
        }
    }
    out.extend(parsed.query_pairs().map(|(_, v)| v.into_owned()));
    out.retain(|s| s.len() >= MIN_URL_SECRET_LEN && !is_public_segment(s));
    out.sort();
    out.dedup();
    out
}

/// `s` with its `%XX` escapes decoded (lossily: invalid UTF-8 becomes U+FFFD).
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// The secrets in a header value: the whole value, and each word of it long enough to be a
/// credential (`Bearer <token>`: the token alone is found too).
pub fn header_secrets(value: &str) -> Vec<String> {
    let mut out = vec![value.to_owned()];
    out.extend(
        value
            .split_whitespace()
            .filter(|w| w.len() >= MIN_URL_SECRET_LEN && *w != value)
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

    /// A 32-character hex key, as Infura issues them.
    const HEX32: &str = "9aa3d95b3bc440fa88ea12eaa4456161";

    #[test]
    fn real_world_provider_urls_show_routes_and_hide_keys() {
        for (url, shown) in [
            // Alchemy: the key is the segment after /v2.
            (
                "https://eth-mainnet.g.alchemy.com/v2/AbCdEf0123456789xyzQ",
                "https://eth-mainnet.g.alchemy.com/v2/<redacted>",
            ),
            (
                "wss://polygon-amoy.g.alchemy.com/v2/AbCdEf0123456789xyzQ",
                "wss://polygon-amoy.g.alchemy.com/v2/<redacted>",
            ),
            // Infura: a 32-hex project id after /v3, or /ws/v3 for WebSocket.
            (
                &format!("https://mainnet.infura.io/v3/{HEX32}"),
                "https://mainnet.infura.io/v3/<redacted>",
            ),
            (
                &format!("wss://mainnet.infura.io/ws/v3/{HEX32}"),
                "wss://mainnet.infura.io/ws/v3/<redacted>",
            ),
            // QuickNode: the token is the whole path, with a trailing slash.
            (
                "https://black-sly-dawn.quiknode.pro/0f2c4e6a8b1d3f5e7a9c0b2d4f6e8a1c3b5d7f9e/",
                "https://black-sly-dawn.quiknode.pro/<redacted>/",
            ),
            // Ankr: chain name, then the key; without a key it is the public endpoint.
            (
                "https://rpc.ankr.com/eth/5c1f0e9d8b7a6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d",
                "https://rpc.ankr.com/eth/<redacted>",
            ),
            ("https://rpc.ankr.com/arbitrum", "https://rpc.ankr.com/arbitrum"),
            // Chainstack: the node is in the host name, the key is the path.
            (
                "https://nd-123-456-789.p2pify.com/3c6e0b8a9c15224a8228b9a98ca1531d",
                "https://nd-123-456-789.p2pify.com/<redacted>",
            ),
            // Blast: a UUID.
            (
                "https://eth-mainnet.blastapi.io/5f3e8c2a-1b4d-4e6f-9a7b-0c1d2e3f4a5b",
                "https://eth-mainnet.blastapi.io/<redacted>",
            ),
            // Short keys are keys too: length is no criterion.
            ("http://host/v2/SECRET123abc", "http://host/v2/<redacted>"),
            ("http://host/rpc/abc", "http://host/rpc/<redacted>"),
            // A number is not a known word either.
            ("http://10.0.0.5/8545", "http://10.0.0.5/<redacted>"),
            // Public routes stay readable: Avalanche's C-Chain, hyphenated chain names, any case.
            (
                "https://api.avax.network/ext/bc/C/rpc",
                "https://api.avax.network/ext/bc/C/rpc",
            ),
            (
                "https://x.io/arb-sepolia/V2/eth-mainnet/json-rpc",
                "https://x.io/arb-sepolia/V2/eth-mainnet/json-rpc",
            ),
            // A hyphenated segment with one unknown part, or an empty part, is a key.
            ("https://x.io/eth-k3y9", "https://x.io/<redacted>"),
            ("https://x.io/eth--mainnet/-", "https://x.io/<redacted>/<redacted>"),
            // Keys in the query, in user-info.
            (
                "https://api.example.com/rpc?apikey=Zx81&chain=eth",
                "https://api.example.com/rpc?apikey=<redacted>&chain=<redacted>",
            ),
            (
                "https://user:pass@rpc.example.com:8545/rpc?apikey=s3cr3t",
                "https://<redacted>@rpc.example.com:8545/rpc?apikey=<redacted>",
            ),
            ("http://127.0.0.1:8545", "http://127.0.0.1:8545/"),
            ("not a url", "<invalid url>"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn a_public_url_keeps_its_path_but_not_its_credentials() {
        assert_eq!(
            redact_url_with("http://10.0.0.5:8545/some/route", true),
            "http://10.0.0.5:8545/some/route"
        );
        assert_eq!(
            redact_url_with("http://10.0.0.5:8545/some/route", false),
            "http://10.0.0.5:8545/<redacted>/<redacted>"
        );
        assert_eq!(
            redact_url_with("https://u:pw@node.lan/some/route?token=abcdefgh", true),
            "https://<redacted>@node.lan/some/route?token=<redacted>"
        );
        let mut s = url_secrets(
            "https://nodeuser:n0de-pa55@node.lan/some/long-route-name?token=t0k3n-t0k3n",
            true,
        );
        s.sort();
        assert_eq!(s, ["n0de-pa55", "nodeuser", "t0k3n-t0k3n"]);
    }

    #[test]
    fn secrets_of_a_url_are_listed_for_free_text() {
        let s = url_secrets(
            "https://mememememe:pw@x.io/v2/AbCdEf0123456789xyzQ/abc?key=k1k1k1k1k1&format=json&chain=ethereum",
            false,
        );
        // "pw", "abc" and "json" are hidden in the URL but too short to search for in text;
        // "ethereum" is a public word.
        assert_eq!(s, ["AbCdEf0123456789xyzQ", "k1k1k1k1k1", "mememememe"]);
        // The short key of the adversarial review is long enough to be searched for.
        assert_eq!(
            url_secrets("http://host/v2/SECRET123abc", false),
            ["SECRET123abc"]
        );
        // Percent-encoded values are listed as written and decoded.
        assert_eq!(
            url_secrets("https://x.io/rpc?key=a%2Bb%2Fc%3Dd1234", false),
            ["a%2Bb%2Fc%3Dd1234", "a+b/c=d1234"]
        );
        // Every shape of the real-world test, found in free text.
        for (url, key) in [
            (
                "https://eth-mainnet.g.alchemy.com/v2/AbCdEf0123456789xyzQ",
                "AbCdEf0123456789xyzQ",
            ),
            (&format!("wss://mainnet.infura.io/ws/v3/{HEX32}"), HEX32),
            (
                "https://name.quiknode.pro/0f2c4e6a8b1d3f5e7a9c/",
                "0f2c4e6a8b1d3f5e7a9c",
            ),
            (
                "https://rpc.ankr.com/eth/5c1f0e9d8b7a6c5d4e3f",
                "5c1f0e9d8b7a6c5d4e3f",
            ),
            (
                "https://nd-123-456-789.p2pify.com/3c6e0b8a9c15224a",
                "3c6e0b8a9c15224a",
            ),
            (
                "https://eth-mainnet.blastapi.io/5f3e8c2a-1b4d-4e6f-9a7b-0c1d2e3f4a5b",
                "5f3e8c2a-1b4d-4e6f-9a7b-0c1d2e3f4a5b",
            ),
            ("http://host/v2/SECRET123abc", "SECRET123abc"),
            ("https://x.io/rpc?apikey=Qw3rTy-uI0p", "Qw3rTy-uI0p"),
            ("https://alice-account:Pa55w0rd!@x.io/", "Pa55w0rd!"),
        ] {
            let r = Redactor::new(url_secrets(url, false));
            let text =
                format!("error sending request for url ({url}): connection refused by {key}");
            let shown = r.redact(&text);
            assert!(!shown.contains(key), "{key} of {url} left in {shown}");
        }
    }

    #[test]
    fn header_values_and_their_tokens_are_secrets() {
        let r = Redactor::new(
            header_secrets("Bearer eyJhbGciOiJIUzI1NiJ9.c2VjcmV0")
                .into_iter()
                .chain(header_secrets("xk-5Ff0a7c1e")),
        );
        assert_eq!(
            r.redact("401 for token eyJhbGciOiJIUzI1NiJ9.c2VjcmV0 (header: Bearer eyJhbGciOiJIUzI1NiJ9.c2VjcmV0)"),
            "401 for token <redacted> (header: <redacted>)"
        );
        assert_eq!(r.redact("x-api-key: xk-5Ff0a7c1e"), "x-api-key: <redacted>");
    }

    #[test]
    fn urls_inside_messages_are_redacted() {
        assert_eq!(
            redact_urls_in("invalid endpoint 'https://u:tok@h.io:4317/v1?key=abc': oops"),
            "invalid endpoint 'https://<redacted>@h.io:4317/v1?key=<redacted>': oops"
        );
        assert_eq!(
            redact_urls_in("cannot reach http://host/v2/SECRET123abc, retrying"),
            "cannot reach http://host/v2/<redacted>, retrying"
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
        // A known secret is replaced even where the URL's shape would show it.
        assert_eq!(
            r.url_with("https://sekrit-key.example.com/route", true),
            "https://<redacted>.example.com/route"
        );
    }
}
