//! The status page at `GET /` in a real browser: headless Chromium (tests/common/browser.rs) with
//! the network blocked to everything but the agent, loading the page from `blockwatch demo` and from
//! an agent catching up; the page must show the chain and its providers, follow the demo's outage
//! without a reload, draw a catch-up's progress and drop it when done, log no error, and be
//! photographed at a laptop's and a phone's size (`target/screenshots/`). First, the harness itself
//! on pages served here: the network is blocked, console errors and exceptions are caught,
//! screenshots have the viewport's size.

mod common;

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::response::IntoResponse;
use common::{
    browser::{png_size, Browser, Page},
    free_port, wait_for, DevnetProc, Scenario,
};
use serde::Deserialize;
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

/// Where the screenshots go: `target/screenshots/` (of `CARGO_TARGET_DIR` when set).
fn screenshots() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), |t| root.join(t))
        .join("screenshots")
}

/// `blockwatch demo` with its API on a port of its own, killed when dropped.
struct Demo {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Demo {
    fn start(duration: &str) -> Demo {
        let dir = tempfile::tempdir().unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_blockwatch"))
            .args(["demo", "--duration", duration, "--http", &addr])
            .current_dir(dir.path())
            .env("TMPDIR", dir.path())
            .env_remove("BLOCKWATCH_CONFIG")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        Demo {
            child,
            url: format!("http://{addr}"),
            _dir: dir,
        }
    }

    /// Waits until the API answers `/status`.
    async fn ready(&self) {
        let addr = self.url.trim_start_matches("http://").to_owned();
        wait_for(Duration::from_secs(20), "the demo's HTTP API", || {
            let addr = addr.clone();
            async move { tokio::net::TcpStream::connect(addr).await.ok() }
        })
        .await;
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the page shows of a chain, read from its DOM (the page's contract with its tests).
#[derive(Debug, Deserialize)]
struct Shown {
    ready: bool,
    updates: u64,
    status: String,
    current: String,
    head: String,
    last_block: String,
    providers: Vec<ShownProvider>,
    switches: Vec<ShownSwitch>,
    progress: Option<ShownProgress>,
    /// A value set in the page's window by the test: gone if the page was reloaded.
    marker: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ShownProvider {
    name: String,
    leader: bool,
    state: String,
    score: String,
}

#[derive(Debug, Deserialize, PartialEq)]
struct ShownSwitch {
    from: String,
    to: String,
    reason: String,
}

#[derive(Debug, Deserialize)]
struct ShownProgress {
    value: f64,
    max: f64,
    eta: String,
}

/// Reads chain `chain`'s section of the page; `None` until it has one. The progress bar counts only
/// while it is shown (present, not hidden, and rendered).
async fn shown(page: &Page, chain: &str) -> Option<Shown> {
    let js = format!(
        r#"(() => {{
  const s = document.querySelector('[data-chain={chain}]');
  if (!s) return null;
  const text = (root, name) => {{
    const e = root.querySelector(`[data-field="${{name}}"]`);
    return e ? e.textContent.trim() : "";
  }};
  const p = s.querySelector('[data-field="progress"]');
  const bar = p && p.querySelector("progress");
  const showing = p && bar && !p.hidden && p.checkVisibility();
  return {{
    ready: document.body.dataset.ready === "true",
    updates: Number(document.body.dataset.updates),
    status: text(s, "status"),
    current: text(s, "current-provider"),
    head: text(s, "head"),
    last_block: text(s, "last-block"),
    providers: [...s.querySelectorAll("tr[data-provider]")].map((r) => ({{
      name: r.dataset.provider,
      leader: r.dataset.leader === "true",
      state: text(r, "state"),
      score: text(r, "score"),
    }})),
    switches: [...s.querySelectorAll('[data-field="switches"] li')].map((li) => ({{
      from: li.dataset.from, to: li.dataset.to, reason: li.dataset.reason,
    }})),
    progress: showing
      ? {{ value: bar.value, max: bar.max, eta: text(p, "eta") }}
      : null,
    marker: window.blockwatchTestMarker ?? null,
  }};
}})()"#,
        chain = json!(chain)
    );
    let v = page.eval(&js).await;
    (!v.is_null()).then(|| serde_json::from_value(v).expect("the page's DOM as the test reads it"))
}

/// Polls [`shown`] every 100 ms until `pred` holds; panics after `timeout` with the last reading.
async fn wait_shown(
    page: &Page,
    chain: &str,
    timeout: Duration,
    what: &str,
    mut pred: impl FnMut(&Shown) -> bool,
) -> Shown {
    let deadline = Instant::now() + timeout;
    loop {
        let s = shown(page, chain).await;
        if let Some(s) = s {
            if pred(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for the page to show {what}; it shows {s:#?}\nerrors: {:#?}",
                page.errors()
            );
        } else {
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for the page to show {what}; no chain {chain}\nerrors: {:#?}",
                page.errors()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Chain, head, last block, current provider and the three providers with a state and a score;
/// exactly one leader, the provider in use.
fn shows_the_chain(s: &Shown) -> bool {
    const STATUSES: [&str; 4] = ["healthy", "degraded", "catching up", "unhealthy"];
    let names: Vec<&str> = s.providers.iter().map(|p| p.name.as_str()).collect();
    let leaders: Vec<&str> = s
        .providers
        .iter()
        .filter(|p| p.leader)
        .map(|p| p.name.as_str())
        .collect();
    s.ready
        && STATUSES.contains(&s.status.as_str())
        && s.head.parse::<u64>().is_ok()
        && !s.last_block.is_empty()
        && names == ["p0", "p1", "p2"]
        && s.providers
            .iter()
            .all(|p| !p.state.is_empty() && p.score.parse::<f64>().is_ok())
        && leaders == [s.current.as_str()]
}

fn state_of<'a>(s: &'a Shown, provider: &str) -> &'a str {
    s.providers
        .iter()
        .find(|p| p.name == provider)
        .map_or("", |p| p.state.as_str())
}

fn switches_from<'a>(s: &'a Shown, provider: &str) -> Vec<&'a ShownSwitch> {
    s.switches.iter().filter(|w| w.from == provider).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_the_demo_live_and_follows_its_outage() {
    let demo = Demo::start("180s");
    let (browser, ()) = tokio::join!(Browser::start(), demo.ready());
    let page = browser.open(&format!("{}/", demo.url), 1280, 800).await;

    // (a) Within a few seconds: the chain and its three providers, each with a state and a score.
    let first = wait_shown(
        &page,
        "devnet",
        Duration::from_secs(10),
        "chain devnet and providers p0, p1, p2 with a state, a score and one leader",
        shows_the_chain,
    )
    .await;
    page.eval("window.blockwatchTestMarker = 'loaded once'")
        .await;

    // (b) The demo's scripted outage of p0 (4 s in, for 6 s; again each time the scenario loops),
    // followed live: p0 seen alive, then in another state, and a new switch away from p0.
    let alive = wait_shown(&page, "devnet", Duration::from_secs(60), "p0 alive", |s| {
        state_of(s, "p0") == "alive"
    })
    .await;
    let before = switches_from(&alive, "p0").len();
    let mut states = vec!["alive".to_owned()];
    let after = wait_shown(
        &page,
        "devnet",
        Duration::from_secs(75),
        "p0's state change and a switch away from p0",
        |s| {
            let state = state_of(s, "p0");
            if states.last().map(String::as_str) != Some(state) {
                states.push(state.to_owned());
            }
            states.iter().any(|st| st != "alive") && switches_from(s, "p0").len() > before
        },
    )
    .await;
    let switch = switches_from(&after, "p0")[0];
    assert!(
        ["p1", "p2"].contains(&switch.to.as_str()) && !switch.reason.is_empty(),
        "{switch:?}"
    );
    assert!(shows_the_chain(&after), "{after:#?}");
    assert_eq!(
        after.marker.as_deref(),
        Some("loaded once"),
        "the page was reloaded"
    );
    assert!(
        after.updates > first.updates,
        "{} renders, then {}",
        first.updates,
        after.updates
    );

    // (d) Screenshots at a laptop's and a phone's size, once there is something to see.
    let dir = screenshots();
    let laptop = dir.join("status-page-1280x800.png");
    page.screenshot(&laptop).await;
    assert_eq!(png_size(&std::fs::read(&laptop).unwrap()), (1280, 800));
    page.set_viewport(390, 844).await;
    let phone = dir.join("status-page-390x844.png");
    let renders = after.updates;
    wait_shown(
        &page,
        "devnet",
        Duration::from_secs(10),
        "a render at the phone's size",
        |s| s.updates > renders,
    )
    .await;
    assert_eq!(
        page.eval("document.documentElement.scrollWidth").await,
        390,
        "the page is wider than the phone"
    );
    page.screenshot(&phone).await;
    assert_eq!(png_size(&std::fs::read(&phone).unwrap()), (390, 844));

    // (e) The page asked nothing of anyone but the agent (and the browser let nothing else through).
    let requests = page.requests();
    let origin = format!("{}/", demo.url);
    assert!(
        requests.iter().any(|u| u.ends_with("/status")),
        "{requests:?}"
    );
    let elsewhere: Vec<&String> = requests
        .iter()
        .filter(|u| !u.starts_with(&origin) && !u.starts_with("data:"))
        .collect();
    assert!(elsewhere.is_empty(), "requests elsewhere: {elsewhere:?}");

    // (c) Not one console error, exception or failed load in all that time.
    page.assert_no_errors();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_draws_a_catch_up_that_advances_then_goes_away() {
    const BLOCKS: u64 = 3000;
    let (devnet, browser) = tokio::join!(
        async {
            let devnet = DevnetProc::start(3, "0s").await;
            devnet.mine(BLOCKS).await;
            devnet
        },
        Browser::start()
    );
    // From block 1, through providers rate-limited to 120 calls a second each (the agent spreads
    // its batches over them): a catch-up of 10 to 20 s.
    let scenario = Scenario::on(devnet)
        .config(|d| {
            d.agent_config("start = 1")
                .replace("name = \"anvil\"", "name = \"devnet\"")
                .replace(
                    "timeout = \"500ms\"\n",
                    "timeout = \"500ms\"\nrate_limit = { requests_per_second = 120, burst = 32 }\n",
                )
        })
        .start()
        .await;
    let api = scenario.agent.api_url().await;
    let started = Instant::now();
    let page = browser.open(&format!("{api}/"), 1280, 800).await;

    let first = wait_shown(
        &page,
        "devnet",
        Duration::from_secs(10),
        "the catch-up's progress bar",
        |s| s.progress.is_some(),
    )
    .await;
    let bar = first.progress.as_ref().unwrap();
    eprintln!("progress at {:?}: {bar:?}", started.elapsed());
    assert!(
        bar.max >= (BLOCKS - 100) as f64 && bar.value < bar.max,
        "{bar:?}"
    );
    assert!(!bar.eta.is_empty(), "{bar:?}");
    assert_eq!(first.status, "catching up", "{first:#?}");
    let value = bar.value;
    let later = wait_shown(
        &page,
        "devnet",
        Duration::from_secs(20),
        "the progress bar advancing",
        |s| s.progress.as_ref().is_some_and(|p| p.value > value),
    )
    .await;
    eprintln!("progress at {:?}: {:?}", started.elapsed(), later.progress);
    let done = wait_shown(
        &page,
        "devnet",
        Duration::from_secs(60),
        "the progress bar gone once caught up",
        |s| s.progress.is_none(),
    )
    .await;
    eprintln!("caught up at {:?}: {}", started.elapsed(), done.last_block);
    assert!(
        done.last_block.starts_with(&BLOCKS.to_string()),
        "{done:#?}"
    );
    assert_ne!(done.status, "catching up", "{done:#?}");
    page.assert_no_errors();
    drop(page);
    drop(browser);
    scenario.finish();
}
