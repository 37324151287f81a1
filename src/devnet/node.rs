//! One devnet provider: a jsonrpsee server (HTTP and WebSocket on one port) that serves the shared
//! chain through its own view, which its faults distort.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex, RwLock},
};

use alloy_primitives::{B256, U64};
use jsonrpsee::{
    server::{PendingSubscriptionSink, Server, ServerHandle, SubscriptionMessage},
    types::{ErrorObject, ErrorObjectOwned, Params},
    RpcModule,
};
use serde_json::{json, Value};
use tokio::sync::broadcast;

use super::{
    chain::{DevBlock, DevChain},
    fault::Fault,
    layer::FaultLayer,
    state::ProviderState,
};

/// What the devnet's providers share: the chain and the stream of new canonical heads.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) chain: RwLock<DevChain>,
    pub(crate) heads: broadcast::Sender<Arc<DevBlock>>,
}

impl Shared {
    pub(crate) fn chain(&self) -> std::sync::RwLockReadGuard<'_, DevChain> {
        self.chain.read().unwrap_or_else(|p| p.into_inner())
    }
}

/// One provider node.
#[derive(Debug)]
pub struct ProviderNode {
    /// `p0`, `p1`, …
    pub name: String,
    /// Where it listens (kept across restarts).
    pub addr: SocketAddr,
    pub(crate) state: Arc<Mutex<ProviderState>>,
    shared: Arc<Shared>,
    handle: tokio::sync::Mutex<Option<ServerHandle>>,
}

#[derive(Clone)]
struct Ctx {
    shared: Arc<Shared>,
    state: Arc<Mutex<ProviderState>>,
}

impl Ctx {
    fn state(&self) -> std::sync::MutexGuard<'_, ProviderState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The JSON-RPC error of an `rpc_error` fault, if set.
    fn rpc_fault(&self) -> Result<(), ErrorObjectOwned> {
        match self.state().fault {
            Some(Fault::RpcError { code }) => Err(ErrorObject::owned(
                code,
                "devnet: injected error",
                None::<()>,
            )),
            _ => Ok(()),
        }
    }

    fn chain_id(&self) -> u64 {
        match self.state().fault {
            Some(Fault::WrongChain { chain_id }) => chain_id,
            _ => self.shared.chain().chain_id(),
        }
    }

    fn block_json(&self, block: Option<Arc<DevBlock>>) -> Option<Value> {
        let block = block?;
        let head = self.shared.chain().head().number();
        let st = self.state();
        if !st.serves(block.number(), head) {
            return None;
        }
        Some(block.to_json((st.fault == Some(Fault::BadHash)).then_some(st.salt)))
    }
}

fn invalid(msg: impl Into<String>) -> ErrorObjectOwned {
    ErrorObject::owned(-32602, msg.into(), None::<()>)
}

pub(crate) fn block_number_param(v: &Value, head: u64) -> Result<u64, ErrorObjectOwned> {
    match v.as_str() {
        Some("latest" | "pending" | "safe" | "finalized") => Ok(head),
        Some("earliest") => Ok(0),
        Some(s) => s
            .parse::<U64>()
            .map(|n| n.to::<u64>())
            .map_err(|_| invalid(format!("invalid block number {s:?}"))),
        None => Err(invalid("block number must be a hex string or a tag")),
    }
}

fn build_module(ctx: Ctx) -> RpcModule<Ctx> {
    let mut m = RpcModule::new(ctx);
    m.register_method("eth_chainId", |_, ctx, _| {
        ctx.rpc_fault()?;
        Ok::<_, ErrorObjectOwned>(U64::from(ctx.chain_id()))
    })
    .expect("unique method name");
    m.register_method("net_version", |_, ctx, _| {
        ctx.rpc_fault()?;
        Ok::<_, ErrorObjectOwned>(ctx.chain_id().to_string())
    })
    .expect("unique method name");
    m.register_method("eth_blockNumber", |_, ctx, _| {
        ctx.rpc_fault()?;
        let head = ctx.shared.chain().head().number();
        Ok::<_, ErrorObjectOwned>(U64::from(ctx.state().claimed_head(head)))
    })
    .expect("unique method name");
    m.register_method("eth_syncing", |_, ctx, _| {
        ctx.rpc_fault()?;
        let head = ctx.shared.chain().head().number();
        Ok::<_, ErrorObjectOwned>(ctx.state().syncing(head))
    })
    .expect("unique method name");
    m.register_method("eth_getBlockByNumber", |params: Params<'_>, ctx, _| {
        ctx.rpc_fault()?;
        let (tag, _full): (Value, Option<bool>) = params.parse()?;
        let head = ctx.shared.chain().head().number();
        let (claimed, wrong) = {
            let st = ctx.state();
            (st.claimed_head(head), st.fault == Some(Fault::WrongBlock))
        };
        let mut number = block_number_param(&tag, claimed)?;
        if wrong {
            // Another block than asked: its predecessor, with its own right hash.
            number = number.saturating_sub(1);
        }
        let block = ctx.shared.chain().by_number(number);
        Ok::<_, ErrorObjectOwned>(ctx.block_json(block))
    })
    .expect("unique method name");
    m.register_method("eth_getBlockByHash", |params: Params<'_>, ctx, _| {
        ctx.rpc_fault()?;
        let (hash, _full): (B256, Option<bool>) = params.parse()?;
        let block = ctx.shared.chain().by_hash(&hash);
        Ok::<_, ErrorObjectOwned>(ctx.block_json(block))
    })
    .expect("unique method name");
    m.register_subscription(
        "eth_subscribe",
        "eth_subscription",
        "eth_unsubscribe",
        |params: Params<'static>, pending: PendingSubscriptionSink, ctx, _| async move {
            if let Err(e) = ctx.rpc_fault() {
                pending.reject(e).await;
                return Ok(());
            }
            let kind: String = params.one().unwrap_or_default();
            if kind != "newHeads" {
                pending
                    .reject(invalid(format!(
                        "unsupported subscription {kind:?}: only newHeads"
                    )))
                    .await;
                return Ok(());
            }
            let mut heads = ctx.shared.heads.subscribe();
            let sink = pending.accept().await?;
            loop {
                let block = tokio::select! {
                    _ = sink.closed() => return Ok(()),
                    b = heads.recv() => match b {
                        Ok(b) => b,
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => return Ok(()),
                    },
                };
                let (announce, bad_hash, offset) = {
                    let st = ctx.state();
                    (
                        st.stale_head.is_none()
                            && !st.skipped.contains(&block.number())
                            && !matches!(st.fault, Some(Fault::Down | Fault::WsSilent)),
                        matches!(st.fault, Some(Fault::BadHash)).then_some(st.salt),
                        match st.fault {
                            Some(Fault::HeadOffset { blocks }) => blocks,
                            _ => 0,
                        },
                    )
                };
                if !announce || !ctx.shared.chain().is_canonical(&block) {
                    continue;
                }
                let mut head = block.head_json(bad_hash);
                if offset != 0 {
                    // A lie about the head: the same header, announced at another height.
                    head["number"] = json!(U64::from(block.number().saturating_add_signed(offset)));
                }
                let raw = serde_json::value::to_raw_value(&head)?;
                sink.send(SubscriptionMessage::from(raw)).await?;
            }
        },
    )
    .expect("unique method name");
    m
}

impl ProviderNode {
    /// Binds `addr` and starts serving.
    pub(crate) async fn start(
        name: String,
        addr: SocketAddr,
        shared: Arc<Shared>,
    ) -> std::io::Result<Self> {
        let state = Arc::new(Mutex::new(ProviderState {
            salt: name
                .bytes()
                .fold(1u8, |a, b| a.wrapping_mul(31).wrapping_add(b)),
            ..ProviderState::default()
        }));
        let (handle, addr) = Self::serve(addr, shared.clone(), state.clone()).await?;
        Ok(Self {
            name,
            addr,
            state,
            shared,
            handle: tokio::sync::Mutex::new(Some(handle)),
        })
    }

    async fn serve(
        addr: SocketAddr,
        shared: Arc<Shared>,
        state: Arc<Mutex<ProviderState>>,
    ) -> std::io::Result<(ServerHandle, SocketAddr)> {
        let server = Server::builder()
            .set_http_middleware(tower::ServiceBuilder::new().layer(FaultLayer {
                state: state.clone(),
            }))
            .build(addr)
            .await?;
        let addr = server.local_addr()?;
        let module = build_module(Ctx { shared, state });
        Ok((server.start(module), addr))
    }

    /// The HTTP URL.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The WebSocket URL.
    pub fn ws_url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Sets (or with `None` clears) the provider's fault. `down` closes the listener and every
    /// connection; clearing it listens again on the same port.
    pub async fn set_fault(&self, fault: Option<Fault>) -> std::io::Result<()> {
        {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let head = self.shared.chain().head().number();
            st.stale_head = match &fault {
                Some(Fault::Stale) => Some(st.stale_head.unwrap_or(head)),
                _ => None,
            };
            st.fault = fault.clone();
        }
        let mut handle = self.handle.lock().await;
        match (fault, handle.is_some()) {
            (Some(Fault::Down), true) => {
                if let Some(h) = handle.take() {
                    let _ = h.stop();
                    h.stopped().await;
                }
            }
            (Some(Fault::Down), false) => {}
            (_, false) => {
                let (h, _) =
                    Self::serve(self.addr, self.shared.clone(), self.state.clone()).await?;
                *handle = Some(h);
            }
            (_, true) => {}
        }
        Ok(())
    }

    /// The provider will never serve nor announce `number`.
    pub fn skip(&self, number: u64) {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .skip(number);
    }

    /// The current fault.
    pub fn fault(&self) -> Option<Fault> {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .fault
            .clone()
    }

    /// The provider's head as it answers `eth_blockNumber`.
    pub fn head(&self) -> u64 {
        let head = self.shared.chain().head().number();
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .claimed_head(head)
    }

    /// Requests received so far.
    pub fn requests(&self) -> u64 {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.requests.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The `traceparent` of the latest HTTP request that carried one.
    pub fn last_traceparent(&self) -> Option<String> {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last_traceparent
            .clone()
    }

    /// Block numbers this provider skips.
    pub fn skipped(&self) -> Vec<u64> {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .skipped
            .iter()
            .copied()
            .collect()
    }

    /// Stops serving for good.
    pub async fn shutdown(&self) {
        if let Some(h) = self.handle.lock().await.take() {
            let _ = h.stop();
            h.stopped().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use jsonrpsee::{
        core::client::{ClientT, Error as ClientError, Subscription, SubscriptionClientT},
        http_client::HttpClient,
        rpc_params,
        ws_client::WsClientBuilder,
    };
    use serde_json::{json, Value};

    use super::super::{Devnet, DevnetConfig, Fault};

    async fn devnet(providers: usize) -> std::sync::Arc<Devnet> {
        Devnet::start(DevnetConfig {
            providers,
            block_time: Duration::ZERO,
            ..DevnetConfig::default()
        })
        .await
        .unwrap()
    }

    fn http(devnet: &Devnet, provider: usize) -> HttpClient {
        HttpClient::builder()
            .request_timeout(Duration::from_secs(5))
            .build(devnet.providers()[provider].http_url())
            .unwrap()
    }

    /// The number of the next `newHeads` notification, or `None` if none comes within `wait_ms`.
    async fn next(sub: &mut Subscription<Value>, wait_ms: u64) -> Option<Value> {
        tokio::time::timeout(Duration::from_millis(wait_ms), sub.next())
            .await
            .ok()
            .flatten()
            .map(|r| r.unwrap()["number"].clone())
    }

    async fn syncing(client: &HttpClient) -> Result<Value, ClientError> {
        client.request("eth_syncing", rpc_params![]).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn eth_syncing_is_false_unless_the_provider_is_stale() {
        let d = devnet(2).await;
        d.mine(3);
        let (p0, p1) = (http(&d, 0), http(&d, 1));
        assert_eq!(syncing(&p0).await.unwrap(), json!(false));

        d.set_fault(0, Some(Fault::Stale)).await.unwrap();
        d.mine(4);
        assert_eq!(
            syncing(&p0).await.unwrap(),
            json!({"startingBlock": "0x3", "currentBlock": "0x3", "highestBlock": "0x7"})
        );
        let head: Value = p0.request("eth_blockNumber", rpc_params![]).await.unwrap();
        assert_eq!(head, json!("0x3"), "currentBlock is the head it answers");
        assert_eq!(syncing(&p1).await.unwrap(), json!(false), "p1 is healthy");

        // Every other fault applies to it as to any method.
        d.set_fault(0, Some(Fault::RpcError { code: -32005 }))
            .await
            .unwrap();
        match syncing(&p0).await {
            Err(ClientError::Call(e)) => assert_eq!(e.code(), -32005),
            other => panic!("expected the injected error, got {other:?}"),
        }
        d.set_fault(0, Some(Fault::HttpError { status: 503 }))
            .await
            .unwrap();
        assert!(syncing(&p0).await.is_err(), "HTTP 503");
        d.set_fault(0, Some(Fault::Malformed)).await.unwrap();
        assert!(syncing(&p0).await.is_err(), "not JSON");

        d.set_fault(0, None).await.unwrap();
        assert_eq!(syncing(&p0).await.unwrap(), json!(false));
        d.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ws_silent_keeps_subscriptions_open_but_quiet() {
        let d = devnet(2).await;
        let ws = WsClientBuilder::default()
            .request_timeout(Duration::from_secs(5))
            .build(d.providers()[0].ws_url())
            .await
            .unwrap();
        let subscribe = || {
            ws.subscribe::<Value, _>("eth_subscribe", rpc_params!["newHeads"], "eth_unsubscribe")
        };
        let mut sub = subscribe().await.unwrap();
        let ws1 = WsClientBuilder::default()
            .build(d.providers()[1].ws_url())
            .await
            .unwrap();
        let mut sub1 = ws1
            .subscribe::<Value, _>("eth_subscribe", rpc_params!["newHeads"], "eth_unsubscribe")
            .await
            .unwrap();
        d.mine(1);
        assert_eq!(next(&mut sub, 5_000).await, Some(json!("0x1")));
        assert_eq!(next(&mut sub1, 5_000).await, Some(json!("0x1")));

        d.set_fault(0, Some(Fault::WsSilent)).await.unwrap();
        let mut late = subscribe().await.expect("new subscriptions are accepted");
        d.mine(2);
        assert_eq!(next(&mut sub1, 5_000).await, Some(json!("0x2")));
        assert_eq!(next(&mut sub1, 5_000).await, Some(json!("0x3")));
        assert_eq!(next(&mut sub, 300).await, None, "p0 announced a head");
        assert_eq!(next(&mut late, 100).await, None, "p0 announced a head");
        assert!(ws.is_connected());
        let head: Value = ws.request("eth_blockNumber", rpc_params![]).await.unwrap();
        assert_eq!(head, json!("0x3"), "requests over the socket are answered");
        let p0 = http(&d, 0);
        let head: Value = p0.request("eth_blockNumber", rpc_params![]).await.unwrap();
        assert_eq!(head, json!("0x3"), "the head advances over HTTP");
        let block: Value = p0
            .request("eth_getBlockByNumber", rpc_params!["0x3", false])
            .await
            .unwrap();
        assert_eq!(block["number"], json!("0x3"));
        let synced: Value = p0.request("eth_syncing", rpc_params![]).await.unwrap();
        assert_eq!(synced, json!(false));

        d.set_fault(0, None).await.unwrap();
        d.mine(1);
        assert_eq!(
            next(&mut sub, 5_000).await,
            Some(json!("0x4")),
            "resumes with the next new block, without replaying the silent ones"
        );
        assert_eq!(next(&mut late, 5_000).await, Some(json!("0x4")));
        d.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn genesis_is_served_by_number_after_the_chain_is_pruned() {
        use std::sync::{Arc, RwLock};

        use super::super::{control, DevChain};
        use super::{ProviderNode, Shared};

        let (heads, _) = tokio::sync::broadcast::channel(16);
        let shared = Arc::new(Shared {
            chain: RwLock::new(DevChain::new(1337, 1_700_000_000, 1, 10)),
            heads,
        });
        let genesis = shared.chain().genesis();
        let node = ProviderNode::start(
            "p0".into(),
            std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            shared.clone(),
        )
        .await
        .unwrap();
        control::mine(&shared, 50);
        let client = HttpClient::builder().build(node.http_url()).unwrap();
        let get = |n: &'static str| {
            let c = client.clone();
            async move {
                c.request::<Value, _>("eth_getBlockByNumber", rpc_params![n, false])
                    .await
                    .unwrap()
            }
        };
        assert!(get("0x1").await.is_null(), "block 1 is pruned");
        for tag in ["0x0", "earliest"] {
            let block = get(tag).await;
            assert_eq!(block["number"], json!("0x0"));
            assert_eq!(block["hash"], json!(genesis.hash), "{tag}");
        }
        let by_hash: Value = client
            .request("eth_getBlockByHash", rpc_params![genesis.hash, false])
            .await
            .unwrap();
        assert_eq!(by_hash["hash"], json!(genesis.hash));
        node.shutdown().await;
    }
}
