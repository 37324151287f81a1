//! Shared test helpers: a real anvil node, the real blockwatch binary, TCP proxies that can be cut,
//! and checks of an emitted stream against the node's canonical chain. Everything is on loopback and
//! every process is killed when its handle drops.
//!
//! Most tests are a [`Scenario`]: a devnet, the agent following it with the config made from it, and
//! the temporary directory they run in; built, driven, then stopped with [`Scenario::finish`] (the
//! agent must exit 0 on SIGTERM). A test that needs something else (anvil, a proxy, two agents) uses
//! [`Anvil`], [`DevnetProc`], [`Proxy`] and [`Agent`] directly, and [`Agent::stop`] to end.
#![allow(dead_code, unreachable_pub)]

use std::{
    net::TcpListener as StdListener,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

pub mod browser;
pub mod postgres;
pub mod process;
pub mod prometheus;
pub mod webhook;

use blockwatch::model::{BlockLine, StreamEvent};
use jsonrpsee::{core::client::ClientT, core::params::ArrayParams, http_client::HttpClient};
use serde_json::Value;

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `f` every 50 ms until it returns `Some`, or panics with `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A JSON-RPC call with positional params given as a JSON array.
pub async fn rpc(url: &str, method: &str, params: Value) -> Value {
    let client = HttpClient::builder().build(url).unwrap();
    let mut p = ArrayParams::new();
    for v in params.as_array().cloned().unwrap_or_default() {
        p.insert(v).unwrap();
    }
    client
        .request::<Value, _>(method, p)
        .await
        .unwrap_or_else(|e| panic!("{method} on {url}: {e}"))
}

fn hex_u64(v: &Value) -> u64 {
    u64::from_str_radix(v.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
}

/// A real anvil node on a loopback port.
pub struct Anvil {
    child: Child,
    pub port: u16,
}

impl Anvil {
    /// Starts anvil mining a block every `block_time` seconds (0: only on demand).
    pub async fn start(block_time: u64) -> Anvil {
        let bin = std::env::var("ANVIL_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/bin/anvil"));
        assert!(
            bin.exists(),
            "anvil not found at {}: run scripts/install-anvil.sh (make test does)",
            bin.display()
        );
        let port = free_port();
        let mut cmd = Command::new(bin);
        cmd.args([
            "--port",
            &port.to_string(),
            "--host",
            "127.0.0.1",
            "--silent",
            // Old states stay in memory only: none written under ~/.foundry/anvil/tmp, which a
            // killed anvil would leave behind.
            "--max-persisted-states",
            "0",
        ]);
        if block_time > 0 {
            cmd.args(["--block-time", &block_time.to_string()]);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start anvil");
        let anvil = Anvil { child, port };
        let url = anvil.url();
        wait_for(Duration::from_secs(20), "anvil to answer", || {
            let url = url.clone();
            async move {
                let client = HttpClient::builder().build(&url).ok()?;
                client
                    .request::<Value, _>("eth_chainId", ArrayParams::new())
                    .await
                    .ok()
            }
        })
        .await;
        anvil
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    pub async fn head(&self) -> u64 {
        hex_u64(&rpc(&self.url(), "eth_blockNumber", serde_json::json!([])).await)
    }

    pub async fn hash_at(&self, n: u64) -> String {
        let b = rpc(
            &self.url(),
            "eth_getBlockByNumber",
            serde_json::json!([format!("0x{n:x}"), false]),
        )
        .await;
        b["hash"]
            .as_str()
            .unwrap_or_else(|| panic!("anvil has no block {n}"))
            .to_owned()
    }

    pub async fn mine(&self, blocks: u64) {
        rpc(
            &self.url(),
            "anvil_mine",
            serde_json::json!([format!("0x{blocks:x}")]),
        )
        .await;
    }

    pub async fn reorg(&self, depth: u64) {
        rpc(&self.url(), "anvil_reorg", serde_json::json!([depth, []])).await;
    }

    /// Turns interval mining off (0) or on (seconds).
    pub async fn set_interval_mining(&self, secs: u64) {
        rpc(
            &self.url(),
            "evm_setIntervalMining",
            serde_json::json!([secs]),
        )
        .await;
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How long a SIGTERM may take to stop the agent.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// The blockwatch binary running with a config in a temporary directory.
pub struct Agent {
    child: Option<Child>,
    pub dir: PathBuf,
    pub config: PathBuf,
    /// Environment variables given to the agent process (never set in the test process itself).
    env: Vec<(String, String)>,
}

impl Agent {
    /// Writes `config` to `dir/blockwatch.toml` and runs `blockwatch run` there.
    pub fn start(dir: &Path, config: &str) -> Agent {
        Self::start_with_env(dir, config, &[])
    }

    /// Like [`Agent::start`], with extra environment variables for the agent process.
    pub fn start_with_env(dir: &Path, config: &str, env: &[(&str, &str)]) -> Agent {
        let path = dir.join("blockwatch.toml");
        std::fs::write(&path, config).unwrap();
        let mut agent = Agent {
            child: None,
            dir: dir.to_owned(),
            config: path,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        agent.restart();
        agent
    }

    /// Starts (again) with the same config; stderr is appended to `dir/agent.log`.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "agent already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("agent.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_blockwatch"))
            .args(["run", "--config"])
            .arg(&self.config)
            .current_dir(&self.dir)
            .env_remove("RUST_LOG")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start blockwatch");
        self.child = Some(child);
    }

    pub fn blocks_path(&self) -> PathBuf {
        self.dir.join("blocks.jsonl")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    /// The HTTP API's base URL, from the agent's "HTTP API listening" log line (of its latest start).
    pub async fn api_url(&self) -> String {
        wait_for(
            Duration::from_secs(15),
            "the HTTP API address in the log",
            || {
                let log = self.log();
                async move {
                    log.lines()
                        .rev()
                        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                        .find(|v| v["message"] == "HTTP API listening")
                        .and_then(|v| v["address"].as_str().map(|a| format!("http://{a}")))
                }
            },
        )
        .await
    }

    /// Sends `signal` (e.g. "KILL", "TERM") and waits for the exit.
    pub fn signal_and_wait(&mut self, signal: &str, timeout: Duration) -> ExitStatus {
        let pid = self.child.as_ref().expect("agent not running").id();
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        self.wait_exit(timeout)
    }

    /// Stops the agent as an operator would: SIGTERM, then a wait of at most [`STOP_TIMEOUT`];
    /// asserts that it exited 0. The agent can be [restarted](Agent::restart) after.
    pub fn stop(&mut self) {
        let status = self.signal_and_wait("TERM", STOP_TIMEOUT);
        assert!(
            status.success(),
            "SIGTERM should exit 0, got {status:?}; log:\n{}",
            self.log()
        );
    }

    /// Waits for the agent to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("agent not running");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "agent did not exit within {timeout:?}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The running agent's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("agent not running").id()
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// The stream emitted so far.
    pub fn stream(&self) -> Vec<StreamEvent> {
        read_stream(&self.blocks_path())
    }

    /// The lines of one chain.
    pub fn chain_stream(&self, chain: &str) -> Vec<StreamEvent> {
        self.stream()
            .into_iter()
            .filter(|e| e.chain() == chain)
            .collect()
    }

    /// Waits until the canonical tip of the chain named "anvil" reaches `number`.
    pub async fn wait_for_block(&mut self, number: u64, timeout: Duration) {
        self.wait_for_chain_block("anvil", number, timeout).await
    }

    /// Waits until `chain`'s canonical tip reaches `number`.
    pub async fn wait_for_chain_block(&mut self, chain: &str, number: u64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let tip = canonical(&self.chain_stream(chain))
                .last()
                .map(|b| b.block_number);
            if tip.is_some_and(|t| t >= number) {
                return;
            }
            if !self.is_running() || Instant::now() > deadline {
                panic!(
                    "agent did not reach block {number} (tip {tip:?}); log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Agent {
    /// Kills the agent (SIGKILL) if it runs, and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Every complete line of a block output file (a last line still being written is left out).
pub fn read_stream(path: &Path) -> Vec<StreamEvent> {
    let mut text = std::fs::read_to_string(path).unwrap_or_default();
    text.truncate(text.rfind('\n').map_or(0, |i| i + 1));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
        .collect()
}

/// Replays a stream by the stream's rules and returns the canonical chain it describes. Panics if a block
/// does not link to the one before it, if a (number, hash) is emitted twice, or if a reorg line is
/// not followed by the new branch from `common_ancestor + 1`.
pub fn canonical(events: &[StreamEvent]) -> Vec<BlockLine> {
    let mut chain: Vec<BlockLine> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for e in events {
        match e {
            StreamEvent::Block(b) => {
                if let Some(prev) = chain.last() {
                    assert_eq!(
                        b.block_number,
                        prev.block_number + 1,
                        "gap or repeat at {}",
                        b.block_number
                    );
                    assert_eq!(
                        b.parent_hash, prev.hash,
                        "block {} does not link to its predecessor",
                        b.block_number
                    );
                }
                assert!(
                    seen.insert((b.block_number, b.hash)),
                    "block {} {} emitted twice",
                    b.block_number,
                    b.hash
                );
                chain.push(b.clone());
            }
            StreamEvent::Reorg(r) => {
                let tip = chain.last().expect("reorg before any block");
                assert_eq!(
                    r.old_head.number, tip.block_number,
                    "reorg old_head is not the tip"
                );
                assert_eq!(r.old_head.hash, tip.hash);
                assert_eq!(r.depth, r.old_head.number - r.common_ancestor);
                chain.retain(|b| b.block_number <= r.common_ancestor);
                assert_eq!(
                    chain.last().map(|b| b.block_number),
                    Some(r.common_ancestor),
                    "ancestor not in stream"
                );
            }
            StreamEvent::Error(x) => panic!("unexpected error line: {x:?}"),
        }
    }
    chain
}

/// The reorg lines of a stream.
pub fn reorgs(events: &[StreamEvent]) -> Vec<blockwatch::model::ReorgLine> {
    events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Reorg(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

/// Asserts that `chain` is anvil's canonical chain, block for block.
pub async fn assert_is_canonical(chain: &[BlockLine], anvil: &Anvil) {
    assert_matches_node(chain, &anvil.url()).await
}

/// Asserts that `chain` is, block for block, the canonical chain of the node at `url`.
pub async fn assert_matches_node(chain: &[BlockLine], url: &str) {
    assert!(!chain.is_empty(), "empty stream");
    for b in chain {
        let block = rpc(
            url,
            "eth_getBlockByNumber",
            serde_json::json!([format!("0x{:x}", b.block_number), false]),
        )
        .await;
        let expected = block["hash"]
            .as_str()
            .unwrap_or_else(|| panic!("node has no block {}", b.block_number));
        assert_eq!(
            format!("{}", b.hash),
            expected,
            "block {} differs from the node's canonical block",
            b.block_number
        );
    }
}

/// `blockwatch devnet` running as a process, with its control API.
pub struct DevnetProc {
    child: Child,
    pub info: blockwatch::devnet::DevnetInfo,
}

impl DevnetProc {
    /// Starts a devnet of `providers` providers mining every `block_time` ("0s": on demand only).
    pub async fn start(providers: usize, block_time: &str) -> DevnetProc {
        Self::start_with(providers, block_time, &[]).await
    }

    /// [`DevnetProc::start`] with more `blockwatch devnet` arguments (e.g. `--hashing rollup`).
    pub async fn start_with(providers: usize, block_time: &str, extra: &[&str]) -> DevnetProc {
        use std::io::BufRead;
        let mut child = Command::new(env!("CARGO_BIN_EXE_blockwatch"))
            .args([
                "devnet",
                "--listen",
                "127.0.0.1:0",
                "--providers",
                &providers.to_string(),
                "--block-time",
                block_time,
            ])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start blockwatch devnet");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("devnet printed no first line");
        let info =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad devnet line {line:?}: {e}"));
        DevnetProc { child, info }
    }

    /// A control call with one object argument.
    pub async fn control(&self, method: &str, arg: Value) -> Value {
        rpc(&self.info.control, method, serde_json::json!([arg])).await
    }

    /// HTTP requests all of devnet's providers have received.
    pub async fn all_requests(&self) -> u64 {
        let status = self.control("devnet_status", serde_json::json!({})).await;
        status["providers"]
            .as_array()
            .expect("providers in devnet_status")
            .iter()
            .map(|p| p["requests"].as_u64().unwrap_or(0))
            .sum()
    }

    pub async fn set_fault(&self, provider: &str, fault: Value) {
        self.control(
            "devnet_setFault",
            serde_json::json!({"provider": provider, "fault": fault}),
        )
        .await;
    }

    pub async fn clear_faults(&self) {
        self.control("devnet_clearFaults", serde_json::json!({}))
            .await;
    }

    pub async fn reorg(&self, depth: u64) {
        self.control("devnet_reorg", serde_json::json!({"depth": depth}))
            .await;
    }

    pub async fn mine(&self, blocks: u64) -> u64 {
        self.control("devnet_mine", serde_json::json!({"blocks": blocks}))
            .await["head"]
            .as_u64()
            .unwrap()
    }

    pub async fn head(&self) -> u64 {
        hex_u64(&rpc(&self.info.control, "eth_blockNumber", serde_json::json!([])).await)
    }

    /// The agent config for this devnet: every provider with HTTP and WebSocket, in priority order,
    /// short timeouts and cooldowns so that faults are seen and left quickly.
    pub fn agent_config(&self, extra_chain: &str) -> String {
        let providers: String = self
            .info
            .providers
            .iter()
            .enumerate()
            .map(|(i, p)| {
                provider(&p.name, &p.http, Some(&p.ws), i as u32)
                    .replace("timeout = \"2s\"", "timeout = \"500ms\"")
            })
            .collect();
        config(
            &providers,
            &format!("selection = \"priority\"\n{extra_chain}"),
        )
        .replace(
            "chain_id = 31337\nexpected_block_time = \"1s\"",
            "chain_id = 1337\nexpected_block_time = \"200ms\"",
        )
        .replace(
            "failover_cooldown = \"2s\"",
            "failover_cooldown = \"1s\"\nchain_check_interval = \"1s\"",
        )
    }
}

impl Drop for DevnetProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A devnet, the agent following it, and the temporary directory both run in.
///
/// Built with [`Scenario::devnet`] (or [`Scenario::on`] for a devnet prepared beforehand). The test
/// drives it through its public fields, usually taken apart once:
/// `let Scenario { devnet, agent, dir } = &mut s;`. [`Scenario::finish`] ends it cleanly (SIGTERM,
/// exit 0 asserted); dropped without that (a failed assertion), the agent and then devnet are
/// killed, never waited on for more than their exit, and the directory removed.
pub struct Scenario {
    /// The simulated chain.
    pub devnet: DevnetProc,
    /// The agent, started in `dir`.
    pub agent: Agent,
    /// Where the agent's config, state, output and log are.
    pub dir: tempfile::TempDir,
}

/// How a [`Scenario`] is set up; [`ScenarioBuilder::start`] starts it.
pub struct ScenarioBuilder {
    devnet: Option<DevnetProc>,
    providers: usize,
    block_time: String,
    devnet_args: Vec<String>,
    config: Box<dyn FnOnce(&DevnetProc) -> String>,
    env: Vec<(String, String)>,
    files: Vec<(PathBuf, Vec<u8>)>,
}

impl Scenario {
    /// A devnet of `providers` providers mining every `block_time` ("0s": on demand only), and the
    /// agent with [`DevnetProc::agent_config`].
    pub fn devnet(providers: usize, block_time: &str) -> ScenarioBuilder {
        ScenarioBuilder {
            devnet: None,
            providers,
            block_time: block_time.to_owned(),
            devnet_args: Vec::new(),
            config: Box::new(|d| d.agent_config("")),
            env: Vec::new(),
            files: Vec::new(),
        }
    }

    /// Like [`Scenario::devnet`], on a devnet the test has already started (and mined, or given
    /// faults) before the agent starts.
    pub fn on(devnet: DevnetProc) -> ScenarioBuilder {
        ScenarioBuilder {
            devnet: Some(devnet),
            ..Self::devnet(0, "")
        }
    }

    /// Ends the scenario: stops the agent with SIGTERM, asserting exit 0 ([`Agent::stop`]); then
    /// devnet is killed and the directory removed.
    pub fn finish(mut self) {
        self.agent.stop();
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        // The agent before its devnet, so that it does not spend its last moments failing over.
        // Each kill is a SIGKILL followed by a wait for the exit: nothing here can hang.
        self.agent.kill();
    }
}

impl ScenarioBuilder {
    /// More `blockwatch devnet` arguments (e.g. `--hashing rollup`).
    pub fn devnet_args(mut self, args: &[&str]) -> Self {
        self.devnet_args = args.iter().map(|a| a.to_string()).collect();
        self
    }

    /// The agent config is [`DevnetProc::agent_config`] with `extra_chain` in the chain's table.
    pub fn chain(self, extra_chain: &str) -> Self {
        let extra = extra_chain.to_owned();
        self.config(move |d| d.agent_config(&extra))
    }

    /// The agent config is what `make` writes from the started devnet.
    pub fn config(mut self, make: impl FnOnce(&DevnetProc) -> String + 'static) -> Self {
        self.config = Box::new(make);
        self
    }

    /// Environment variables for the agent process.
    pub fn env(mut self, env: &[(&str, &str)]) -> Self {
        self.env
            .extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self
    }

    /// A file written at `path` (relative to the scenario's directory, parents created) before the
    /// agent starts.
    pub fn file(mut self, path: &str, contents: impl Into<Vec<u8>>) -> Self {
        self.files.push((PathBuf::from(path), contents.into()));
        self
    }

    /// Starts devnet (unless given), writes the files and the config, and starts the agent.
    pub async fn start(self) -> Scenario {
        let devnet = match self.devnet {
            Some(d) => d,
            None => {
                let args: Vec<&str> = self.devnet_args.iter().map(String::as_str).collect();
                DevnetProc::start_with(self.providers, &self.block_time, &args).await
            }
        };
        let dir = tempfile::tempdir().unwrap();
        for (path, contents) in &self.files {
            let path = dir.path().join(path);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).unwrap();
            }
            std::fs::write(path, contents).unwrap();
        }
        let config = (self.config)(&devnet);
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let agent = Agent::start_with_env(dir.path(), &config, &env);
        Scenario { devnet, agent, dir }
    }
}

/// A config for one chain with the given provider tables.
pub fn config(providers: &str, extra_chain: &str) -> String {
    format!(
        r#"[agent]
state_path = "state.db"
block_output = "blocks.jsonl"
http_listen = "127.0.0.1:0"

[telemetry]
otlp_endpoint = ""
log_format = "json"
log_level = "info"

[pool]
retry_initial_backoff = "50ms"
retry_max_backoff = "500ms"
failover_cooldown = "2s"

[[chains]]
name = "anvil"
chain_id = 31337
expected_block_time = "1s"
reorg_window = 16
{extra_chain}
{providers}
"#
    )
}

/// A provider table.
pub fn provider(name: &str, url: &str, ws_url: Option<&str>, priority: u32) -> String {
    let ws = ws_url
        .map(|u| format!("ws_url = \"{u}\"\n"))
        .unwrap_or_default();
    format!("[[chains.providers]]\nname = \"{name}\"\nurl = \"{url}\"\n{ws}priority = {priority}\ntimeout = \"2s\"\n")
}

/// A TCP proxy in front of `target` that can be cut (new connections refused and open ones dropped),
/// and that counts the HTTP requests going through it.
pub struct Proxy {
    pub port: u16,
    requests: std::sync::Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: u16) -> Proxy {
        use std::sync::{atomic::Ordering, Arc};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = requests.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    return;
                };
                let counter = counter.clone();
                conns.spawn(async move {
                    let Ok(outbound) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                    else {
                        return;
                    };
                    let (mut in_read, mut in_write) = inbound.into_split();
                    let (mut out_read, mut out_write) = outbound.into_split();
                    let upstream = async move {
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            let n = match in_read.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            let posts = buf[..n].windows(5).filter(|w| w == b"POST ").count();
                            counter.fetch_add(posts as u64, Ordering::Relaxed);
                            if out_write.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    };
                    let downstream = async move {
                        let _ = tokio::io::copy(&mut out_read, &mut in_write).await;
                    };
                    tokio::select! {
                        _ = upstream => {}
                        _ = downstream => {}
                    }
                });
            }
        });
        Proxy {
            port,
            requests,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// HTTP requests forwarded so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stops the proxy: the listener closes and every open connection is dropped.
    pub fn cut(&self) {
        self.task.abort();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A plain HTTP GET: the status code and the body.
pub async fn http_get(url: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.trim_start_matches("http://");
    let (addr, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("GET timed out")
        .unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    // Chunked bodies: drop the chunk-size lines.
    let body = if text
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body.split("\r\n")
            .enumerate()
            .filter(|(i, _)| i % 2 == 1)
            .map(|(_, c)| c)
            .collect()
    } else {
        body
    };
    (status, body)
}

/// The agent's `/status`.
pub async fn status_json(agent: &Agent) -> Value {
    let (code, body) = http_get(&format!("{}/status", agent.api_url().await)).await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("/status is JSON")
}

/// The first chain of a `/status`.
pub fn first_chain(status: &Value) -> &Value {
    &status["chains"][0]
}

/// Provider `name` of the first chain of a `/status`.
pub fn provider_of<'a>(status: &'a Value, name: &str) -> &'a Value {
    first_chain(status)["providers"]
        .as_array()
        .expect("providers")
        .iter()
        .find(|p| p["name"] == name)
        .expect("provider in /status")
}

/// Waits (up to a minute) until `/status` satisfies `pred`; returns that status.
pub async fn wait_status(agent: &Agent, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let timeout = Duration::from_secs(60);
    let deadline = Instant::now() + timeout;
    loop {
        let s = status_json(agent).await;
        if pred(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}; /status last said {s:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The sum of the `/metrics` samples of `name` whose labels include every `labels` pair.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits until the agent has emitted devnet's head, then checks the whole stream against devnet's
/// canonical chain (no gap, no repeat, parents linked).
pub async fn settle_and_check(agent: &mut Agent, devnet: &DevnetProc) {
    let head = devnet.head().await;
    agent.wait_for_block(head, Duration::from_secs(30)).await;
    assert!(agent.is_running(), "agent died; log:\n{}", agent.log());
    let chain = canonical(&agent.stream());
    assert_matches_node(&chain, &devnet.info.control).await;
}
