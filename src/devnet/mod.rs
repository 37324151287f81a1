//! The devnet: one simulated chain served by several providers over real JSON-RPC (HTTP and
//! WebSocket, jsonrpsee's server), each of which can be told to fail in many ways (and with
//! `ws_silent`, a quiet `newHeads` subscription) at runtime, through a control JSON-RPC endpoint or,
//! in-process, through [`Devnet`]'s methods.

pub mod chain;
mod control;
pub mod fault;
mod layer;
pub mod node;
mod state;

use std::{
    net::SocketAddr,
    sync::{Arc, RwLock},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::Serialize;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

pub use chain::{DevBlock, DevChain};
pub use fault::Fault;
pub use node::ProviderNode;
use node::Shared;

/// Default devnet chain id.
pub const DEFAULT_CHAIN_ID: u64 = 1337;
/// Default number of providers.
pub const DEFAULT_PROVIDERS: usize = 3;
/// Default block time.
pub const DEFAULT_BLOCK_TIME: Duration = Duration::from_secs(1);
/// Most providers a devnet runs.
pub const MAX_PROVIDERS: usize = 64;

/// How to run a devnet.
#[derive(Clone, Debug)]
pub struct DevnetConfig {
    /// The control endpoint's address. With a fixed port P, provider i listens on P + 1 + i; with
    /// port 0 every port is chosen by the system.
    pub listen: SocketAddr,
    /// Number of providers.
    pub providers: usize,
    /// Time between blocks; zero mines only on `devnet_mine`.
    pub block_time: Duration,
    /// The chain id.
    pub chain_id: u64,
    /// Seed for block contents.
    pub seed: u64,
    /// How blocks are hashed (`rollup`: not the header's keccak, like zkSync Era).
    pub hashing: chain::Hashing,
}

impl Default for DevnetConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            providers: DEFAULT_PROVIDERS,
            block_time: DEFAULT_BLOCK_TIME,
            chain_id: DEFAULT_CHAIN_ID,
            seed: 1,
            hashing: chain::Hashing::Header,
        }
    }
}

/// Why a devnet could not start or act.
#[derive(Debug, thiserror::Error)]
pub enum DevnetError {
    /// A port could not be bound.
    #[error("cannot listen on {addr}: {source} (choose another address with --listen)")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A bad request to the control API.
    #[error("{0}")]
    Invalid(String),
}

/// The first line `blockwatch devnet` prints: where everything is.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct DevnetInfo {
    /// The chain id.
    pub chain_id: u64,
    /// The control endpoint URL.
    pub control: String,
    /// The providers.
    pub providers: Vec<ProviderInfo>,
}

/// A provider's endpoints.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct ProviderInfo {
    /// `p0`, `p1`, …
    pub name: String,
    /// HTTP JSON-RPC URL.
    pub http: String,
    /// WebSocket URL (same port).
    pub ws: String,
}

/// A running devnet.
#[derive(Debug)]
pub struct Devnet {
    shared: Arc<Shared>,
    nodes: Vec<Arc<ProviderNode>>,
    control_addr: SocketAddr,
    control: jsonrpsee::server::ServerHandle,
    cancel: CancellationToken,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Devnet {
    /// Starts the chain, its providers, the control endpoint and (with a block time) the miner.
    pub async fn start(cfg: DevnetConfig) -> Result<Arc<Devnet>, DevnetError> {
        if cfg.providers == 0 || cfg.providers > MAX_PROVIDERS {
            return Err(DevnetError::Invalid(format!(
                "providers must be between 1 and {MAX_PROVIDERS}"
            )));
        }
        let chain = DevChain::with_hashing(
            cfg.chain_id,
            now_secs(),
            cfg.seed,
            chain::DEFAULT_RETAIN,
            cfg.hashing,
        );
        let (heads, _) = broadcast::channel(1024);
        let shared = Arc::new(Shared {
            chain: RwLock::new(chain),
            heads,
        });
        let mut nodes = Vec::with_capacity(cfg.providers);
        for i in 0..cfg.providers {
            let port = if cfg.listen.port() == 0 {
                0
            } else {
                cfg.listen.port().saturating_add(1 + i as u16)
            };
            let addr = SocketAddr::new(cfg.listen.ip(), port);
            let node = ProviderNode::start(format!("p{i}"), addr, shared.clone())
                .await
                .map_err(|source| DevnetError::Bind { addr, source })?;
            nodes.push(Arc::new(node));
        }
        let cancel = CancellationToken::new();
        let (control, control_addr) = control::start(cfg.listen, shared.clone(), nodes.clone())
            .await
            .map_err(|source| DevnetError::Bind {
                addr: cfg.listen,
                source,
            })?;
        let devnet = Arc::new(Devnet {
            shared,
            nodes,
            control_addr,
            control,
            cancel,
        });
        if !cfg.block_time.is_zero() {
            let d = devnet.clone();
            let interval = cfg.block_time;
            tokio::spawn(async move {
                let mut ticker = tokio::time::interval(interval);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                ticker.tick().await;
                loop {
                    tokio::select! {
                        _ = d.cancel.cancelled() => return,
                        _ = ticker.tick() => { d.mine(1); }
                    }
                }
            });
        }
        Ok(devnet)
    }

    /// Where everything is.
    pub fn info(&self) -> DevnetInfo {
        DevnetInfo {
            chain_id: self.shared.chain().chain_id(),
            control: format!("http://{}", self.control_addr),
            providers: self
                .nodes
                .iter()
                .map(|n| ProviderInfo {
                    name: n.name.clone(),
                    http: n.http_url(),
                    ws: n.ws_url(),
                })
                .collect(),
        }
    }

    /// The providers.
    pub fn providers(&self) -> &[Arc<ProviderNode>] {
        &self.nodes
    }

    /// Mines `blocks` blocks now and announces them.
    pub fn mine(&self, blocks: u64) -> u64 {
        control::mine(&self.shared, blocks)
    }

    /// Replaces the last `depth` blocks with a competing branch; returns the new head number.
    pub fn reorg(&self, depth: u64) -> u64 {
        control::reorg(&self.shared, depth)
    }

    /// The canonical head.
    pub fn head(&self) -> Arc<DevBlock> {
        self.shared.chain().head()
    }

    /// The canonical block at `number`.
    pub fn canonical_block(&self, number: u64) -> Option<Arc<DevBlock>> {
        self.shared.chain().by_number(number)
    }

    /// Sets (or clears) a provider's fault.
    pub async fn set_fault(
        &self,
        provider: usize,
        fault: Option<Fault>,
    ) -> Result<(), DevnetError> {
        let node = self
            .nodes
            .get(provider)
            .ok_or_else(|| DevnetError::Invalid(format!("no provider {provider}")))?;
        node.set_fault(fault)
            .await
            .map_err(|source| DevnetError::Bind {
                addr: node.addr,
                source,
            })
    }

    /// The next block will never be served nor announced by `provider`; returns its number.
    pub fn skip_next_block(&self, provider: usize) -> Result<u64, DevnetError> {
        let node = self
            .nodes
            .get(provider)
            .ok_or_else(|| DevnetError::Invalid(format!("no provider {provider}")))?;
        let next = self.head().number() + 1;
        node.skip(next);
        Ok(next)
    }

    /// Stops mining and serving.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        let _ = self.control.stop();
        for n in &self.nodes {
            n.shutdown().await;
        }
    }
}
