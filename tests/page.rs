//! The browser harness (tests/common/browser.rs) in a real headless Chromium, on pages served here:
//! the network is blocked to everything but 127.0.0.1, console errors and exceptions are caught,
//! screenshots have the viewport's size.

mod common;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::response::IntoResponse;
use common::browser::{png_size, Browser};
use serde_json::json;

/// A loopback HTTP server that answers every path with `page`'s HTML for "/" and "ok" for the rest,
/// and records each path asked.
struct Site {
    addr: SocketAddr,
    paths: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Site {
    async fn start(ip: &str, page: &'static str) -> Site {
        let paths: Arc<Mutex<Vec<String>>> = Arc::default();
        let seen = paths.clone();
        let app = axum::Router::new().fallback(move |uri: http::Uri| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(uri.path().to_owned());
                if uri.path() == "/" {
                    axum::response::Html(page).into_response()
                } else {
                    "ok".into_response()
                }
            }
        });
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Site { addr, paths, task }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn paths(&self) -> Vec<String> {
        self.paths.lock().unwrap().clone()
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `probe(url)` says whether a request to `url` got an answer.
const PROBE_PAGE: &str = r#"<!doctype html><title>probe</title><script>
window.probe = async (url) => {
  try { await fetch(url, { mode: "no-cors", cache: "no-store" }); return "answered"; }
  catch (e) { return "no answer"; }
};
</script><p>probe</p>"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_reaches_nothing_but_127_0_0_1() {
    let agent = Site::start("127.0.0.1", PROBE_PAGE).await;
    // A server elsewhere: on another loopback address, which Chromium would reach as it reaches any
    // address (and as it reaches 127.0.0.0/8 unproxied, but for the blocking flags).
    let outside = Site::start("127.0.0.2", PROBE_PAGE).await;
    let browser = Browser::start().await;
    let page = browser.open(&agent.url("/"), 1280, 800).await;
    let probe = |url: String| {
        let page = &page;
        async move { page.eval(&format!("probe({})", json!(url))).await }
    };
    // The page's own origin answers: the probe can tell.
    assert_eq!(probe(agent.url("/here")).await, "answered");
    for url in [
        outside.url("/leak"),
        format!("http://localhost:{}/leak", agent.addr.port()),
        "http://example.com/".to_owned(),
        "https://203.0.113.7/".to_owned(),
    ] {
        assert_eq!(probe(url.clone()).await, "no answer", "{url}");
    }
    assert_eq!(
        outside.paths(),
        Vec::<String>::new(),
        "reached from the page"
    );
    let paths = agent.paths();
    assert!(paths.contains(&"/here".to_owned()), "{paths:?}");
    assert!(
        !paths.contains(&"/leak".to_owned()),
        "reached by another name: {paths:?}"
    );
    assert!(
        page.requests().iter().any(|u| u.contains("example.com")),
        "the requests are recorded: {:?}",
        page.requests()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_reports_console_errors_and_exceptions_and_takes_screenshots() {
    const PAGE: &str = r#"<!doctype html><meta name="viewport" content="width=device-width">
<title>errors</title><body style="margin:0;background:#123456">
<p id="p">hello</p><script>
document.body.dataset.ready = "true";
setTimeout(() => console.error("something went wrong", 42), 50);
setTimeout(() => { throw new Error("nobody catches this"); }, 100);
setTimeout(() => Promise.reject(new Error("nor this rejection")), 150);
</script>"#;
    let site = Site::start("127.0.0.1", PAGE).await;
    let browser = Browser::start().await;
    let page = browser.open(&site.url("/"), 390, 844).await;
    assert_eq!(
        page.eval("document.getElementById('p').textContent").await,
        "hello"
    );
    assert_eq!(
        page.eval("[innerWidth, innerHeight]").await,
        json!([390, 844])
    );
    page.wait_for(
        Duration::from_secs(5),
        "the page's script",
        "document.body.dataset.ready === 'true'",
    )
    .await;
    let errors = common::wait_for(Duration::from_secs(5), "three errors", || {
        let errors = page.errors();
        async move { (errors.len() >= 3).then_some(errors) }
    })
    .await;
    let all = errors.join("\n");
    assert!(all.contains("something went wrong 42"), "{all}");
    assert!(all.contains("nobody catches this"), "{all}");
    assert!(all.contains("nor this rejection"), "{all}");
    let failed = std::panic::AssertUnwindSafe(|| page.assert_no_errors());
    assert!(std::panic::catch_unwind(failed).is_err());
    assert!(
        page.try_eval("undefinedFunction()")
            .await
            .unwrap_err()
            .contains("undefinedFunction"),
        "an exception in an evaluation is an error"
    );

    let dir = tempfile::tempdir().unwrap();
    let shot = dir.path().join("shots/phone.png");
    page.screenshot(&shot).await;
    assert_eq!(png_size(&std::fs::read(&shot).unwrap()), (390, 844));
    page.set_viewport(1280, 800).await;
    assert_eq!(page.eval("innerWidth").await, 1280);
    page.screenshot(&shot).await;
    assert_eq!(png_size(&std::fs::read(&shot).unwrap()), (1280, 800));
}
