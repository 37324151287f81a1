//! The pool against small scripted JSON-RPC servers on loopback: faults a devnet provider does not
//! play (one provider failing at once while another is slow, a lagging provider that takes its time
//! to answer `null`).

use std::{
    collections::HashMap,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{extract::State, routing::post, Json, Router};
use blockwatch::{config::Config, pool::ProviderPool, telemetry::Metrics};
use serde_json::{json, Value};

/// How a scripted server answers a method with its params: an optional delay, and the body.
type Behave = Arc<dyn Fn(&str, &Value) -> (Option<Duration>, Value) + Send + Sync>;

#[derive(Clone)]
struct Srv {
    behave: Behave,
    calls: Arc<Mutex<HashMap<String, u64>>>,
}

async fn handle(State(s): State<Srv>, Json(req): Json<Value>) -> Json<Value> {
    let one = |r: &Value| {
        let m = r["method"].as_str().unwrap_or("").to_owned();
        *s.calls.lock().unwrap().entry(m.clone()).or_default() += 1;
        let (delay, mut body) = (s.behave)(&m, &r["params"]);
        body["jsonrpc"] = json!("2.0");
        body["id"] = r["id"].clone();
        (delay, body)
    };
    if let Some(arr) = req.as_array() {
        let mut out = vec![];
        let mut d = Duration::ZERO;
        for r in arr {
            let (delay, b) = one(r);
            d = d.max(delay.unwrap_or_default());
            out.push(b);
        }
        tokio::time::sleep(d).await;
        return Json(Value::Array(out));
    }
    let (delay, b) = one(&req);
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    Json(b)
}

async fn serve(behave: Behave) -> (String, Arc<Mutex<HashMap<String, u64>>>) {
    let calls = Arc::new(Mutex::new(HashMap::new()));
    let app = Router::new().route("/", post(handle)).with_state(Srv {
        behave,
        calls: calls.clone(),
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (format!("http://127.0.0.1:{port}/"), calls)
}

fn common(m: &str) -> Option<Value> {
    match m {
        "eth_chainId" => Some(json!({"result": "0x1"})),
        "eth_getBlockByNumber" => Some(json!({"result": null})),
        _ => None,
    }
}

async fn pool(urls: &[&str], extra_pool: &str) -> ProviderPool {
    connect(urls, extra_pool, "").await.unwrap()
}

/// p0 fails at once; p1 is slow: p1's attempt is not hedged back to p0, which just failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hedge_never_goes_to_a_provider_that_just_failed() {
    let (a, a_calls) = serve(Arc::new(|m, _| match common(m) {
        Some(v) => (None, v),
        None => (None, json!({"error": {"code": -32000, "message": "boom"}})),
    }))
    .await;
    let (b, _b_calls) = serve(Arc::new(|m, _| match common(m) {
        Some(v) => (None, v),
        None => (Some(Duration::from_millis(1500)), json!({"result": "0x10"})),
    }))
    .await;
    let pool = pool(&[&a, &b], "").await;
    let ans = pool.block_number().await.unwrap();
    let n = a_calls.lock().unwrap()["eth_blockNumber"];
    assert_eq!(ans.provider.name, "p1");
    assert_eq!(n, 1, "p0 failed, yet the hedge was sent to it again");
}

/// Every usable provider answers null: that is the answer, without waiting for a lagging provider.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn null_from_every_usable_provider_does_not_wait_for_a_lagging_one() {
    let fast: Behave = Arc::new(|m, _| match common(m) {
        Some(v) => (None, v),
        None => (None, json!({"result": "0x3e8"})),
    });
    let (a, _) = serve(fast.clone()).await;
    let (b, _) = serve(fast).await;
    let (c, c_calls) = serve(Arc::new(|m, p| {
        if m == "eth_getBlockByNumber" && p[0] == json!("0x64") {
            return (Some(Duration::from_millis(1800)), json!({"result": null}));
        }
        match common(m) {
            Some(v) => (None, v),
            None => (None, json!({"result": "0x384"})),
        }
    }))
    .await;
    let pool = pool(&[&a, &b, &c], "").await;
    let ps = pool.providers();
    pool.heads().record(&ps[0], 1000, None, false);
    pool.heads().record(&ps[1], 1000, None, false);
    pool.heads().record(&ps[2], 900, None, false);
    for p in ps {
        p.evaluate(Instant::now());
    }
    assert_eq!(
        ps.iter().map(|p| p.state().as_str()).collect::<Vec<_>>(),
        ["alive", "alive", "lagging"]
    );
    let ans = pool.block_by_number(100).await.unwrap();
    let n = c_calls
        .lock()
        .unwrap()
        .get("eth_getBlockByNumber")
        .copied()
        .unwrap_or(0);
    assert_eq!(
        n, 1,
        "the lagging provider was asked for block 100 (its 1 call: genesis)"
    );
    assert!(ans.value.is_none());
}

/// A server on chain 1 whose block 0 is `genesis` (a devnet block, so its hash checks out).
async fn serve_genesis(genesis: Value) -> (String, Arc<Mutex<HashMap<String, u64>>>) {
    serve(Arc::new(move |m, p| match m {
        "eth_chainId" => (None, json!({"result": "0x1"})),
        "eth_getBlockByNumber" if p[0] == json!("0x0") => (None, json!({"result": genesis})),
        "eth_getBlockByNumber" => (None, json!({"result": null})),
        _ => (None, json!({"result": "0x1"})),
    }))
    .await
}

fn genesis_of(seed: u64) -> Value {
    blockwatch::devnet::DevChain::new(1, 1_700_000_000, seed, 16)
        .genesis()
        .to_json(None)
}

/// A pool of one chain (id 1) over `urls`, priority in that order.
async fn connect(
    urls: &[&str],
    extra_pool: &str,
    extra_chain: &str,
) -> Result<ProviderPool, String> {
    let provs: String = urls
        .iter()
        .enumerate()
        .map(|(i, u)| {
            format!("[[chains.providers]]\nname = \"p{i}\"\nurl = \"{u}\"\npriority = {i}\ntimeout = \"2s\"\n")
        })
        .collect();
    let text = format!(
        r#"[pool]
retry_initial_backoff = "100ms"
retry_max_backoff = "500ms"
{extra_pool}
[[chains]]
name = "c"
chain_id = 1
expected_block_time = "1s"
selection = "priority"
{extra_chain}
{provs}"#
    );
    let cfg = Config::from_toml_str(&text, Path::new("x.toml"), &|_| None).unwrap();
    let meter = opentelemetry::global::meter("t");
    ProviderPool::connect(
        &cfg.chains[0],
        &cfg.pool,
        Arc::new(cfg.redactor()),
        Arc::new(Metrics::new(&meter)),
    )
    .await
    .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_serving_another_genesis_block_is_refused() {
    let (a, _) = serve_genesis(genesis_of(1)).await;
    let (b, _) = serve_genesis(genesis_of(1)).await;
    let (c, _) = serve_genesis(genesis_of(2)).await;
    // The majority wins; the odd one out is never used.
    let pool = connect(&[&c, &a, &b], "", "").await.unwrap();
    let states: Vec<_> = pool
        .providers()
        .iter()
        .map(|p| {
            p.evaluate(Instant::now());
            (p.name.as_str(), p.state().as_str(), p.is_refused())
        })
        .collect();
    assert_eq!(
        states,
        [
            ("p0", "wrong_chain", true),
            ("p1", "alive", false),
            ("p2", "alive", false)
        ]
    );
    let n = pool.block_number().await.unwrap();
    assert_eq!(n.provider.name, "p1", "the refused provider is skipped");

    // Two providers, two genesis blocks, no majority: refuse to start.
    let err = connect(&[&a, &c], "", "").await.unwrap_err();
    assert!(err.contains("disagree on the genesis block"), "{err}");

    // A configured genesis hash is the reference.
    let hash = genesis_of(2)["hash"].as_str().unwrap().to_owned();
    let err = connect(&[&a], "", &format!("genesis_hash = \"{hash}\""))
        .await
        .unwrap_err();
    assert!(err.contains("chains[].genesis_hash"), "{err}");
    assert!(connect(&[&c], "", &format!("genesis_hash = \"{hash}\""))
        .await
        .is_ok());
}
