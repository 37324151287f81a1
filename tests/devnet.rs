//! The devnet does what docs/devnet.md says at the protocol level: real JSON-RPC over HTTP and WebSocket,
//! batches, verifiable hashes, and every fault as a client would see it.

mod common;

use std::time::Duration;

use blockwatch::rpc::types::RpcBlock;
use common::*;
use jsonrpsee::{
    core::{
        client::{ClientT, SubscriptionClientT},
        params::BatchRequestBuilder,
    },
    http_client::HttpClient,
    rpc_params,
    ws_client::WsClientBuilder,
};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A raw HTTP POST of `body`: the status line, headers and body as text ("" if the connection was
/// refused or nothing came back within `wait`).
async fn raw_post(url: &str, body: &str, wait: Duration) -> String {
    let addr = url.trim_start_matches("http://");
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return String::new();
    };
    let req = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

const BLOCK_NUMBER: &str = r#"{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_real_json_rpc_with_verifiable_blocks() {
    let devnet = DevnetProc::start(2, "0s").await;
    devnet.mine(5).await;
    let p0 = &devnet.info.providers[0];
    let client = HttpClient::builder().build(&p0.http).unwrap();

    // A batch: chain id, net_version, head, a block by number and by hash.
    let mut batch = BatchRequestBuilder::new();
    batch.insert("eth_chainId", rpc_params![]).unwrap();
    batch.insert("net_version", rpc_params![]).unwrap();
    batch.insert("eth_blockNumber", rpc_params![]).unwrap();
    batch
        .insert("eth_getBlockByNumber", rpc_params!["0x5", false])
        .unwrap();
    let answers: Vec<Value> = client
        .batch_request::<Value>(batch)
        .await
        .unwrap()
        .into_ok()
        .unwrap()
        .collect();
    assert_eq!(answers[0], json!("0x539"));
    assert_eq!(answers[1], json!("1337"));
    assert_eq!(answers[2], json!("0x5"));
    let block: RpcBlock = serde_json::from_value(answers[3].clone()).unwrap();
    block
        .verify_hash()
        .expect("a client can recompute the hash from the header");
    let by_hash: Value = client
        .request("eth_getBlockByHash", rpc_params![block.header.hash, false])
        .await
        .unwrap();
    assert_eq!(by_hash, answers[3]);
    let parent: RpcBlock = serde_json::from_value(
        client
            .request::<Value, _>("eth_getBlockByNumber", rpc_params!["0x4", false])
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(block.header.inner.parent_hash, parent.header.hash);
    for field in [
        "stateRoot",
        "receiptsRoot",
        "logsBloom",
        "mixHash",
        "nonce",
        "baseFeePerGas",
        "withdrawalsRoot",
        "blobGasUsed",
        "excessBlobGas",
        "parentBeaconBlockRoot",
        "requestsHash",
        "sha3Uncles",
        "miner",
        "size",
    ] {
        assert!(answers[3].get(field).is_some(), "missing {field}");
    }
    let none: Value = client
        .request("eth_getBlockByNumber", rpc_params!["0x64", false])
        .await
        .unwrap();
    assert!(none.is_null());

    // newHeads over WebSocket, including the new branch of a reorg.
    let ws = WsClientBuilder::default().build(&p0.ws).await.unwrap();
    let mut sub = ws
        .subscribe::<Value, _>("eth_subscribe", rpc_params!["newHeads"], "eth_unsubscribe")
        .await
        .unwrap();
    devnet.mine(1).await;
    let head = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(head["number"], json!("0x6"));
    devnet.reorg(2).await;
    for n in ["0x5", "0x6"] {
        let h = tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(h["number"], json!(n));
    }
    let new5: Value = client
        .request("eth_getBlockByNumber", rpc_params!["0x5", false])
        .await
        .unwrap();
    assert_ne!(
        new5["hash"], answers[3]["hash"],
        "a reorg replaces the blocks"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_is_what_a_client_sees() {
    let devnet = DevnetProc::start(2, "0s").await;
    devnet.mine(3).await;
    let p0 = devnet.info.providers[0].http.clone();
    let p1 = devnet.info.providers[1].http.clone();
    let short = Duration::from_secs(2);

    devnet.set_fault("p0", json!({"kind": "down"})).await;
    assert_eq!(
        raw_post(&p0, BLOCK_NUMBER, short).await,
        "",
        "down: connection refused"
    );
    devnet.clear_faults().await;
    assert!(
        raw_post(&p0, BLOCK_NUMBER, short)
            .await
            .contains("\"result\":\"0x3\""),
        "back on the same port"
    );

    devnet
        .set_fault("p0", json!({"kind": "http_error", "status": 502}))
        .await;
    assert!(raw_post(&p0, BLOCK_NUMBER, short)
        .await
        .starts_with("HTTP/1.1 502"));

    devnet
        .set_fault("p0", json!({"kind": "rate_limit", "retry_after_s": 7}))
        .await;
    let r = raw_post(&p0, BLOCK_NUMBER, short)
        .await
        .to_ascii_lowercase();
    assert!(
        r.starts_with("http/1.1 429") && r.contains("retry-after: 7"),
        "{r}"
    );

    devnet
        .set_fault("p0", json!({"kind": "rpc_error", "code": -32005}))
        .await;
    assert!(raw_post(&p0, BLOCK_NUMBER, short)
        .await
        .contains("\"code\":-32005"));

    devnet.set_fault("p0", json!({"kind": "malformed"})).await;
    let r = raw_post(&p0, BLOCK_NUMBER, short).await;
    let body = r.split("\r\n\r\n").nth(1).unwrap_or_default();
    assert!(
        serde_json::from_str::<Value>(body).is_err(),
        "malformed must not parse: {body}"
    );

    devnet.set_fault("p0", json!({"kind": "timeout"})).await;
    assert_eq!(
        raw_post(&p0, BLOCK_NUMBER, Duration::from_millis(800)).await,
        "",
        "timeout: no answer"
    );

    devnet
        .set_fault("p0", json!({"kind": "latency", "ms": 600}))
        .await;
    let started = std::time::Instant::now();
    assert!(raw_post(&p0, BLOCK_NUMBER, short)
        .await
        .contains("\"result\""));
    assert!(started.elapsed() >= Duration::from_millis(600));

    devnet
        .set_fault("p0", json!({"kind": "wrong_chain", "chain_id": 5}))
        .await;
    assert_eq!(rpc(&p0, "eth_chainId", json!([])).await, json!("0x5"));

    devnet.set_fault("p0", json!({"kind": "bad_hash"})).await;
    let b: RpcBlock =
        serde_json::from_value(rpc(&p0, "eth_getBlockByNumber", json!(["0x2", false])).await)
            .unwrap();
    assert!(b.verify_hash().is_err());

    devnet.set_fault("p0", json!({"kind": "stale"})).await;
    devnet.mine(2).await;
    assert_eq!(
        rpc(&p0, "eth_blockNumber", json!([])).await,
        json!("0x3"),
        "stale: head stops"
    );
    assert!(rpc(&p0, "eth_getBlockByNumber", json!(["0x4", false]))
        .await
        .is_null());
    assert_eq!(rpc(&p1, "eth_blockNumber", json!([])).await, json!("0x5"));
    devnet.clear_faults().await;
    assert_eq!(
        rpc(&p0, "eth_blockNumber", json!([])).await,
        json!("0x5"),
        "cleared: caught up"
    );

    // skipBlock: that provider never serves the next block; the others do.
    devnet
        .control("devnet_skipBlock", json!({"provider": 0}))
        .await;
    devnet.mine(1).await;
    assert!(rpc(&p0, "eth_getBlockByNumber", json!(["0x6", false]))
        .await
        .is_null());
    assert!(rpc(&p1, "eth_getBlockByNumber", json!(["0x6", false]))
        .await
        .is_object());

    // Bad control requests are errors, not crashes.
    let client = HttpClient::builder().build(&devnet.info.control).unwrap();
    let bad: Result<Value, _> = client
        .request(
            "devnet_setFault",
            rpc_params![json!({"provider": 9, "fault": {"kind": "down"}})],
        )
        .await;
    assert!(bad.unwrap_err().to_string().contains("no provider"));
    let bad: Result<Value, _> = client
        .request(
            "devnet_setFault",
            rpc_params![json!({"provider": 0, "fault": {"kind": "gremlins"}})],
        )
        .await;
    assert!(bad.is_err());
    let status = devnet.control("devnet_status", json!({})).await;
    assert_eq!(status["providers"][0]["skipped"], json!([6]));
    assert!(status["providers"][0]["requests"].as_u64().unwrap() > 10);
}
