//! The live status page at `GET /`: one HTML page with its stylesheet and script, embedded in the
//! binary (nothing fetched from anywhere else: it works with no network), which polls `/status`
//! once a second and draws it.
//!
//! The page only reads: its script sends `GET /status` and nothing else, and every route of the
//! API is `GET`/`HEAD` anyway. A strict `Content-Security-Policy` lets the page load its own
//! script and stylesheet and talk to its own origin only: no inline script or style, no other
//! origin, no frames, no forms. It is served by the same listener, with the same limits, as the
//! rest of the API.

use axum::{
    http::{header, HeaderName, HeaderValue},
    response::IntoResponse,
};

/// The page.
pub(super) const INDEX_HTML: &str = include_str!("page/index.html");
/// Its stylesheet, at `/ui/app.css`.
pub(super) const APP_CSS: &str = include_str!("page/app.css");
/// Its script, at `/ui/app.js`.
pub(super) const APP_JS: &str = include_str!("page/app.js");

/// What the page may load and connect to: itself only.
pub(super) const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// `body` as `content_type`, with the page's security headers.
fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONTENT_SECURITY_POLICY),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
            (
                HeaderName::from_static("cross-origin-resource-policy"),
                HeaderValue::from_static("same-origin"),
            ),
            // A new binary serves a new page: the browser asks again rather than keep an old one.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
}

/// `GET /`.
pub(super) async fn index() -> impl IntoResponse {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

/// `GET /ui/app.css`.
pub(super) async fn css() -> impl IntoResponse {
    asset("text/css; charset=utf-8", APP_CSS)
}

/// `GET /ui/app.js`.
pub(super) async fn js() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", APP_JS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_references_nothing_outside_the_agent() {
        for (name, text) in [
            ("index.html", INDEX_HTML),
            ("app.css", APP_CSS),
            ("app.js", APP_JS),
        ] {
            let lower = text.to_ascii_lowercase();
            for forbidden in [
                "http:",
                "https:",
                "ws:",
                "wss:",
                "ftp:",
                "//cdn",
                "@import",
                "url(",
                "src=\"//",
                "href=\"//",
                "eval(",
                "new function",
            ] {
                assert!(
                    !lower.contains(forbidden),
                    "{name} contains {forbidden:?}: the page must be self-contained"
                );
            }
        }
        // Every resource the page loads is one of the agent's own routes.
        for reference in ["/ui/app.css", "/ui/app.js"] {
            assert!(INDEX_HTML.contains(reference), "{reference}");
        }
        // No inline script or style for the policy to refuse.
        assert!(!INDEX_HTML.contains("<script>") && !INDEX_HTML.contains("style="));
        assert!(!APP_JS.contains("innerHTML") && !APP_JS.contains("setAttribute(\"style"));
    }

    #[test]
    fn the_policy_allows_the_agent_alone() {
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
            "form-action 'none'",
        ] {
            assert!(CONTENT_SECURITY_POLICY.contains(directive), "{directive}");
        }
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe"));
    }
}
