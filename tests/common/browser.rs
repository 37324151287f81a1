//! A real browser for tests: Debian's headless Chromium (`/usr/bin/chromium`, installed by
//! `scripts/install-chromium.sh`), driven over the DevTools protocol with `chromiumoxide`.
//!
//! [`Browser::start`] runs Chromium on loopback with the network blocked to everything but
//! 127.0.0.1 (see [`blocking_flags`]); [`Browser::open`] loads a URL at a viewport size and returns a
//! [`Page`] that evaluates JavaScript, waits for a condition with a deadline, takes PNG screenshots,
//! and records every console error, uncaught exception and browser-reported error
//! ([`Page::assert_no_errors`]) as well as every request the page made ([`Page::requests`]).
//! Nothing here knows the page under test. Dropping the [`Browser`] kills Chromium and all its
//! processes and removes its profile.

use std::{
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::process::kill_group;
use chromiumoxide::{
    cdp::{
        browser_protocol::{
            emulation::SetDeviceMetricsOverrideParams,
            log::{EventEntryAdded, LogEntryLevel},
            network::EventRequestWillBeSent,
            page::CaptureScreenshotFormat,
        },
        js_protocol::runtime::{
            ConsoleApiCalledType, EvaluateParams, EventConsoleApiCalled, EventExceptionThrown,
            RemoteObject,
        },
    },
    handler::HandlerConfig,
    page::ScreenshotParams,
};
use futures::StreamExt;
use serde_json::Value;
use tokio::task::JoinHandle;

/// Where Debian's chromium package puts its launcher.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// The uid and gid Chromium runs as when the tests run as root: `nobody`.
const NOBODY: u32 = 65534;

/// How long Chromium has to start and open its DevTools endpoint: a bound, not a wait (the endpoint
/// is taken the moment Chromium writes it). Usually 2–5 s; a fresh machine's first start reads
/// Chromium's 250 MB from a disk busy with the build and, under the other tests' load, has taken over
/// 30 s.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// Headless Chromium, killed (with every process it started) when dropped.
pub struct Browser {
    child: Child,
    cdp: chromiumoxide::Browser,
    handler: JoinHandle<()>,
    /// The profile, HOME and Chromium's stderr (`chromium.log`).
    dir: tempfile::TempDir,
    /// A bound, never listening socket: the port of the proxy every request but those to 127.0.0.1
    /// is sent to, which refuses every connection, and which nothing else can take meanwhile.
    _dead_proxy: tokio::net::TcpSocket,
}

impl Browser {
    /// Starts headless Chromium with the network blocked to everything but 127.0.0.1, and connects to
    /// it. Panics (with Chromium's stderr) when it cannot.
    pub async fn start() -> Browser {
        assert!(
            Path::new(CHROMIUM).exists(),
            "{CHROMIUM} missing: run `make tools` (scripts/install-chromium.sh)"
        );
        let dead_proxy = tokio::net::TcpSocket::new_v4().unwrap();
        dead_proxy.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let proxy_port = dead_proxy.local_addr().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        let as_root = is_root();
        if as_root {
            // Chromium runs as nobody (see `command`): its profile and HOME must be its own.
            std::os::unix::fs::chown(dir.path(), Some(NOBODY), Some(NOBODY)).unwrap();
        }
        let mut child = command(dir.path(), proxy_port, as_root, true);
        let mut ws = wait_devtools(&mut child, dir.path()).await;
        if ws.is_err() && chromium_log(dir.path()).contains("No usable sandbox") {
            // Chromium's sandbox needs user namespaces; a machine that forbids them to unprivileged
            // users (some containers do) leaves no sandbox for an unprivileged process. The pages
            // loaded are the tests' own, on loopback, so the tests then go on without it.
            eprintln!("browser: Chromium has no usable sandbox here; running it with --no-sandbox");
            kill_group(&mut child);
            child = command(dir.path(), proxy_port, as_root, false);
            ws = wait_devtools(&mut child, dir.path()).await;
        }
        let ws = match ws {
            Ok(ws) => ws,
            Err(why) => {
                let processes = processes_of(&child);
                kill_group(&mut child);
                panic!(
                    "Chromium did not start: {why}\n--- its processes ---\n{processes}\n\
                     --- chromium.log ---\n{}",
                    chromium_log(dir.path())
                );
            }
        };
        let config = HandlerConfig {
            request_timeout: Duration::from_secs(30),
            ..HandlerConfig::default()
        };
        let (cdp, mut handler) = chromiumoxide::Browser::connect_with_config(ws, config)
            .await
            .expect("connect to Chromium's DevTools endpoint");
        let handler = tokio::spawn(async move {
            // Ends when the connection does (the browser was killed); one bad message is no reason
            // to stop driving the others.
            while handler.next().await.is_some() {}
        });
        Browser {
            child,
            cdp,
            handler,
            dir,
            _dead_proxy: dead_proxy,
        }
    }

    /// Opens `url` in a new tab whose viewport is `width`×`height` CSS pixels (a phone's when
    /// narrower than 600) and waits for its load event. Errors and requests are recorded from before
    /// the navigation on.
    pub async fn open(&self, url: &str, width: u32, height: u32) -> Page {
        let cdp = self.cdp.new_page("about:blank").await.expect("new tab");
        let errors = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();

        let mut console = cdp.event_listener::<EventConsoleApiCalled>().await.unwrap();
        let sink = errors.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(e) = console.next().await {
                if matches!(
                    e.r#type,
                    ConsoleApiCalledType::Error | ConsoleApiCalledType::Assert
                ) {
                    let args: Vec<String> = e.args.iter().map(describe).collect();
                    push(&sink, format!("console.{:?}: {}", e.r#type, args.join(" ")));
                }
            }
        }));
        let mut exceptions = cdp.event_listener::<EventExceptionThrown>().await.unwrap();
        let sink = errors.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(e) = exceptions.next().await {
                let d = &e.exception_details;
                let what = d.exception.as_ref().map(describe).unwrap_or_default();
                push(
                    &sink,
                    format!(
                        "uncaught exception: {} {what} at {}:{}",
                        d.text,
                        d.url.as_deref().unwrap_or("?"),
                        d.line_number + 1
                    ),
                );
            }
        }));
        // What the browser itself reports: resources that failed to load, Content-Security-Policy
        // violations, deprecations turned errors.
        let mut log = cdp.event_listener::<EventEntryAdded>().await.unwrap();
        let sink = errors.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(e) = log.next().await {
                if e.entry.level == LogEntryLevel::Error {
                    push(
                        &sink,
                        format!(
                            "{:?}: {} ({})",
                            e.entry.source,
                            e.entry.text,
                            e.entry.url.as_deref().unwrap_or("")
                        ),
                    );
                }
            }
        }));
        let mut sent = cdp
            .event_listener::<EventRequestWillBeSent>()
            .await
            .unwrap();
        let sink = requests.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(e) = sent.next().await {
                push(&sink, e.request.url.clone());
            }
        }));
        cdp.enable_log().await.expect("Log.enable");

        let page = Page {
            cdp,
            errors,
            requests,
            tasks,
        };
        page.set_viewport(width, height).await;
        page.cdp
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("cannot load {url}: {e}"));
        page.wait_for(
            Duration::from_secs(10),
            &format!("{url} to load"),
            "document.readyState === 'complete'",
        )
        .await;
        page
    }

    /// Chromium's stderr so far.
    pub fn log(&self) -> String {
        chromium_log(self.dir.path())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.handler.abort();
        kill_group(&mut self.child);
    }
}

/// A tab of the [`Browser`].
pub struct Page {
    cdp: chromiumoxide::Page,
    errors: Arc<Mutex<Vec<String>>>,
    requests: Arc<Mutex<Vec<String>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Page {
    /// Resizes the viewport to `width`×`height` CSS pixels at one device pixel per CSS pixel
    /// (screenshots are that many pixels), as a phone (viewport meta tag, touch layout) when
    /// narrower than 600.
    pub async fn set_viewport(&self, width: u32, height: u32) {
        self.cdp
            .execute(SetDeviceMetricsOverrideParams::new(
                width,
                height,
                1.0,
                width < 600,
            ))
            .await
            .expect("Emulation.setDeviceMetricsOverride");
    }

    /// Evaluates a JavaScript expression (promises awaited) and returns its value as JSON
    /// (`undefined` and non-serialisable values as null). Panics when it throws.
    pub async fn eval(&self, js: &str) -> Value {
        self.try_eval(js)
            .await
            .unwrap_or_else(|e| panic!("{js}: {e}"))
    }

    /// [`Page::eval`] that returns what the expression threw instead of panicking.
    pub async fn try_eval(&self, js: &str) -> Result<Value, String> {
        let mut params = EvaluateParams::new(js);
        params.return_by_value = Some(true);
        params.await_promise = Some(true);
        let out = self
            .cdp
            .execute(params)
            .await
            .map_err(|e| format!("Runtime.evaluate failed: {e}"))?;
        if let Some(ex) = &out.result.exception_details {
            let what = ex.exception.as_ref().map(describe).unwrap_or_default();
            return Err(format!("threw: {} {what}", ex.text));
        }
        Ok(out.result.result.value.clone().unwrap_or(Value::Null))
    }

    /// Evaluates `js` every 100 ms until it is truthy (not null, false, 0, "" or undefined) and
    /// returns that value; panics after `timeout` with `what`, the last value or exception, and the
    /// errors recorded so far.
    pub async fn wait_for(&self, timeout: Duration, what: &str, js: &str) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let last = self.try_eval(js).await;
            if let Ok(v) = &last {
                if truthy(v) {
                    return v.clone();
                }
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}\n  {js}\n  last: {last:?}\n  errors: {:#?}",
                self.errors()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A PNG screenshot of the viewport, written to `path` (parent directories created).
    pub async fn screenshot(&self, path: &Path) {
        let png = self
            .cdp
            .screenshot(
                ScreenshotParams::builder()
                    .format(CaptureScreenshotFormat::Png)
                    .build(),
            )
            .await
            .expect("Page.captureScreenshot");
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }

    /// Console errors and assertion failures, uncaught exceptions and errors the browser logged
    /// (failed loads, CSP violations), in order.
    pub fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap().clone()
    }

    /// Panics listing every error recorded so far, if any.
    pub fn assert_no_errors(&self) {
        let errors = self.errors();
        assert!(errors.is_empty(), "errors in the page: {errors:#?}");
    }

    /// The URL of every request the page made, in order.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Width and height of a PNG image, from its header.
pub fn png_size(png: &[u8]) -> (u32, u32) {
    assert!(
        png.len() > 24 && png.starts_with(b"\x89PNG\r\n\x1a\n") && &png[12..16] == b"IHDR",
        "not a PNG"
    );
    let be = |b: &[u8]| u32::from_be_bytes(b.try_into().unwrap());
    (be(&png[16..20]), be(&png[20..24]))
}

/// The Chromium flags that cut it off from everything but 127.0.0.1: every request goes through a
/// proxy at `proxy_port` on loopback that refuses connections, except those to 127.0.0.1 itself
/// (`<-loopback>` withdraws Chromium's implicit bypass of `localhost` and the rest of 127.0.0.0/8,
/// then 127.0.0.1 is bypassed alone); and no host name resolves, so nothing reaches a DNS server
/// either. Background services that would call home are off.
pub fn blocking_flags(proxy_port: u16) -> Vec<String> {
    vec![
        format!("--proxy-server=http://127.0.0.1:{proxy_port}"),
        "--proxy-bypass-list=<-loopback>;127.0.0.1".into(),
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1".into(),
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--disable-domain-reliability".into(),
        "--disable-sync".into(),
        "--no-pings".into(),
        "--dns-prefetch-disable".into(),
    ]
}

fn command(dir: &Path, proxy_port: u16, as_root: bool, sandbox: bool) -> Child {
    let profile: PathBuf = dir.join("profile");
    let log = std::fs::File::create(dir.join("chromium.log")).unwrap();
    let mut cmd = if as_root {
        // Chromium refuses to run as root with its sandbox on, and a browser has no business being
        // root anyway: it runs as nobody, in its own directory.
        let mut c = Command::new("setpriv");
        c.args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
            CHROMIUM,
        ]);
        c
    } else {
        Command::new(CHROMIUM)
    };
    cmd.args([
        "--headless",
        "--remote-debugging-address=127.0.0.1",
        // The port Chromium chose is written to <profile>/DevToolsActivePort.
        "--remote-debugging-port=0",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-default-apps",
        "--disable-crash-reporter",
        "--disable-gpu",
        "--mute-audio",
        "--hide-scrollbars",
        "--password-store=basic",
        "--use-mock-keychain",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(blocking_flags(proxy_port));
    if !sandbox {
        cmd.arg("--no-sandbox");
    }
    cmd.arg("about:blank")
        .env("HOME", dir)
        .env("XDG_CONFIG_HOME", dir.join(".config"))
        .env("XDG_CACHE_HOME", dir.join(".cache"))
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("all_proxy")
        .env_remove("ALL_PROXY")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        // Its own process group, so that the zygote and renderers die with it.
        .process_group(0);
    cmd.spawn().expect("start chromium")
}

/// The browser's DevTools WebSocket URL, from `DevToolsActivePort` in its profile.
async fn wait_devtools(child: &mut Child, dir: &Path) -> Result<String, String> {
    let file = dir.join("profile/DevToolsActivePort");
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(text) = std::fs::read_to_string(&file) {
            let mut lines = text.lines();
            if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                return Ok(format!("ws://127.0.0.1:{port}{path}"));
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            return Err(format!("it exited: {status}"));
        }
        if Instant::now() > deadline {
            return Err(format!("no DevTools endpoint after {START_TIMEOUT:?}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What the processes of `child`'s group are doing (`ps`), to tell a slow start from a hung one.
fn processes_of(child: &Child) -> String {
    let group = child.id().to_string();
    match Command::new("ps")
        .args(["-e", "-o", "pgid=,pid=,stat=,etime=,time=,wchan:24=,args="])
        .output()
    {
        Ok(o) => String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.split_whitespace().next() == Some(group.as_str()))
            .map(|l| l.chars().take(240).collect::<String>() + "\n")
            .collect(),
        Err(e) => format!("ps: {e}"),
    }
}

fn chromium_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("chromium.log")).unwrap_or_default()
}

/// Whether this process runs as root (the owner of its /proc entry).
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn push(sink: &Mutex<Vec<String>>, item: String) {
    sink.lock().unwrap().push(item);
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        _ => true,
    }
}

/// A console argument or thrown value as text.
fn describe(o: &RemoteObject) -> String {
    match (&o.value, &o.description) {
        (Some(Value::String(s)), _) => s.clone(),
        (Some(v), _) => v.to_string(),
        (None, Some(d)) => d.clone(),
        (None, None) => format!("{:?}", o.r#type),
    }
}
