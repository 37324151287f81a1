//! blockwatch: follows the head of EVM chains through a pool of JSON-RPC providers and delivers every
//! canonical block exactly once, in order.
//!
//! # Layout
//! A block travels in one direction: provider → pool → head tracker → canonical chain → outputs.
//!
//! - [`config`]: the TOML configuration, `${ENV}` expansion, defaults and validation.
//! - [`redact`]: keeping API keys out of everything shown.
//! - [`rpc`]: JSON-RPC providers (rate limit, timeout, size limit) and the pool that retries and fails
//!   over between them.
//! - [`chain`]: block types, the head tracker (`newHeads` or polling), the canonical window with reorg
//!   detection, and the follower that drives one chain.
//! - [`store`]: SQLite state: per chain the cursor and the recent canonical hashes.
//! - [`output`]: the block-line sink (stdout, file, none) and its reconciliation with the cursor.
//! - [`agent`]: wires every chain's tasks together and shuts them down in order.
//! - [`telemetry`]: logging set-up.
//! - [`cli`]: the command line.

pub mod agent;
pub mod alerts;
pub mod api;
pub mod chain;
pub mod cli;
pub mod config;
pub mod demo;
pub mod devnet;
pub mod heads;
pub mod health;
pub mod model;
pub mod monitor;
pub mod output;
pub mod pool;
pub mod redact;
pub mod rpc;
pub mod store;
pub mod telemetry;
