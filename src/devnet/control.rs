//! The devnet's control endpoint (JSON-RPC): `devnet_setFault`, `devnet_clearFaults`, `devnet_reorg`,
//! `devnet_skipBlock`, `devnet_mine` and `devnet_status`. Each takes one object, either as named
//! params or as the only positional param; `devnet_setFault`'s `fault` is a [`Fault`] (`down`,
//! `http_error`, `rpc_error`, `latency`, `rate_limit`, `timeout`, `stale`, `malformed`,
//! `wrong_chain`, `bad_hash` or `ws_silent`). It also answers `eth_chainId`, `eth_blockNumber` and
//! `eth_getBlockByNumber` for the canonical chain, untouched by any fault.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use jsonrpsee::{
    server::{Server, ServerHandle},
    types::{ErrorObject, ErrorObjectOwned, Params},
    RpcModule,
};
use serde::{de::DeserializeOwned, Deserialize};
use serde_json::{json, Value};

use super::{fault::Fault, node::Shared, ProviderNode};

/// Most blocks one `devnet_mine` call may mine.
const MAX_MINE: u64 = 100_000;

#[derive(Clone)]
struct Ctx {
    shared: Arc<Shared>,
    nodes: Vec<Arc<ProviderNode>>,
}

/// A provider named by index (`0`) or name (`"p0"`).
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
enum ProviderRef {
    Index(usize),
    Name(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetFault {
    provider: ProviderRef,
    fault: Fault,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClearFaults {
    provider: Option<ProviderRef>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Reorg {
    depth: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SkipBlock {
    provider: ProviderRef,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Mine {
    #[serde(default = "one")]
    blocks: u64,
}

fn one() -> u64 {
    1
}

fn invalid(msg: impl Into<String>) -> ErrorObjectOwned {
    ErrorObject::owned(-32602, msg.into(), None::<()>)
}

/// The single object argument of a control call.
fn arg<T: DeserializeOwned>(params: &Params<'_>) -> Result<T, ErrorObjectOwned> {
    let raw = params.as_str().unwrap_or("{}").trim();
    let parsed = if raw.starts_with('[') {
        serde_json::from_str::<Vec<T>>(raw)
            .map_err(|e| e.to_string())
            .and_then(|mut v| {
                if v.len() == 1 {
                    Ok(v.remove(0))
                } else {
                    Err("expected one object".to_owned())
                }
            })
    } else {
        serde_json::from_str::<T>(raw).map_err(|e| e.to_string())
    };
    parsed.map_err(|e| invalid(format!("invalid params: {e}")))
}

impl Ctx {
    fn node(&self, r: &ProviderRef) -> Result<Arc<ProviderNode>, ErrorObjectOwned> {
        let found = match r {
            ProviderRef::Index(i) => self.nodes.get(*i),
            ProviderRef::Name(n) => self.nodes.iter().find(|p| &p.name == n),
        };
        found.cloned().ok_or_else(|| {
            invalid(format!(
                "no provider {r:?}: there are {} (p0…)",
                self.nodes.len()
            ))
        })
    }
}

/// Mines `blocks` blocks and announces each, each stamped with the time it was made.
pub(super) fn mine(shared: &Shared, blocks: u64) -> u64 {
    let mut head = 0;
    for _ in 0..blocks {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let block = shared
            .chain
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .produce(now);
        head = block.number();
        let _ = shared.heads.send(block);
    }
    head
}

/// Reorganises the last `depth` blocks and announces the new branch.
pub(super) fn reorg(shared: &Shared, depth: u64) -> u64 {
    let branch = shared
        .chain
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .reorg(depth);
    for b in branch {
        let _ = shared.heads.send(b);
    }
    shared.chain().head().number()
}

fn status(ctx: &Ctx) -> Value {
    let head = ctx.shared.chain().head();
    json!({
        "chain_id": ctx.shared.chain().chain_id(),
        "head": { "number": head.number(), "hash": head.hash },
        "providers": ctx.nodes.iter().map(|n| json!({
            "name": n.name,
            "http": n.http_url(),
            "ws": n.ws_url(),
            "head": n.head(),
            "fault": n.fault(),
            "skipped": n.skipped(),
            "requests": n.requests(),
            "last_traceparent": n.last_traceparent(),
        })).collect::<Vec<_>>(),
    })
}

async fn set_fault(node: &ProviderNode, fault: Option<Fault>) -> Result<(), ErrorObjectOwned> {
    node.set_fault(fault).await.map_err(|e| {
        ErrorObject::owned(
            -32000,
            format!("cannot restart {}: {e}", node.name),
            None::<()>,
        )
    })
}

fn module(ctx: Ctx) -> RpcModule<Ctx> {
    let mut m = RpcModule::new(ctx);
    m.register_async_method("devnet_setFault", |params, ctx, _| async move {
        let a: SetFault = arg(&params)?;
        a.fault.validate().map_err(|e| invalid(e.to_string()))?;
        let node = ctx.node(&a.provider)?;
        set_fault(&node, Some(a.fault)).await?;
        Ok::<_, ErrorObjectOwned>(status(&ctx))
    })
    .expect("unique method name");
    m.register_async_method("devnet_clearFaults", |params, ctx, _| async move {
        let a: ClearFaults = arg(&params)?;
        let nodes = match &a.provider {
            Some(r) => vec![ctx.node(r)?],
            None => ctx.nodes.clone(),
        };
        for node in nodes {
            set_fault(&node, None).await?;
        }
        Ok::<_, ErrorObjectOwned>(status(&ctx))
    })
    .expect("unique method name");
    m.register_method("devnet_reorg", |params, ctx, _| {
        let a: Reorg = arg(&params)?;
        if a.depth == 0 {
            return Err(invalid("depth must be at least 1"));
        }
        reorg(&ctx.shared, a.depth);
        Ok::<_, ErrorObjectOwned>(status(ctx))
    })
    .expect("unique method name");
    m.register_method("devnet_skipBlock", |params, ctx, _| {
        let a: SkipBlock = arg(&params)?;
        let node = ctx.node(&a.provider)?;
        let next = ctx.shared.chain().head().number() + 1;
        node.skip(next);
        Ok::<_, ErrorObjectOwned>(json!({ "provider": node.name, "skipped": next }))
    })
    .expect("unique method name");
    // Mining many blocks takes a while: on a blocking thread, so that the providers keep answering.
    m.register_blocking_method("devnet_mine", |params, ctx, _| {
        let a: Mine = arg(&params)?;
        if a.blocks == 0 || a.blocks > MAX_MINE {
            return Err(invalid(format!("blocks must be between 1 and {MAX_MINE}")));
        }
        let head = mine(&ctx.shared, a.blocks);
        Ok::<_, ErrorObjectOwned>(json!({ "head": head }))
    })
    .expect("unique method name");
    m.register_method("devnet_status", |_, ctx, _| {
        Ok::<_, ErrorObjectOwned>(status(ctx))
    })
    .expect("unique method name");
    // The canonical chain itself, fault-free: the reference that tests and users compare against.
    m.register_method("eth_chainId", |_, ctx, _| {
        Ok::<_, ErrorObjectOwned>(alloy_primitives::U64::from(ctx.shared.chain().chain_id()))
    })
    .expect("unique method name");
    m.register_method("eth_blockNumber", |_, ctx, _| {
        Ok::<_, ErrorObjectOwned>(alloy_primitives::U64::from(
            ctx.shared.chain().head().number(),
        ))
    })
    .expect("unique method name");
    m.register_method("eth_getBlockByNumber", |params, ctx, _| {
        let (tag, _full): (Value, Option<bool>) = params.parse()?;
        let chain = ctx.shared.chain();
        let number = super::node::block_number_param(&tag, chain.head().number())?;
        Ok::<_, ErrorObjectOwned>(chain.by_number(number).map(|b| b.to_json(None)))
    })
    .expect("unique method name");
    m
}

/// Starts the control endpoint on `addr`.
pub(super) async fn start(
    addr: SocketAddr,
    shared: Arc<Shared>,
    nodes: Vec<Arc<ProviderNode>>,
) -> std::io::Result<(ServerHandle, SocketAddr)> {
    let server = Server::builder().build(addr).await?;
    let local = server.local_addr()?;
    Ok((server.start(module(Ctx { shared, nodes })), local))
}
