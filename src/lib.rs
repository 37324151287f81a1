//! blockwatch: follows the head of EVM chains through a pool of JSON-RPC providers and delivers every
//! canonical block exactly once, in order, telling its operators through OpenTelemetry how the
//! providers and the chain behave.
//!
//! # Layout
//! The crate is built in floors. A module imports only from floors below it, never from a stage that
//! comes later on a block's path; the ground floor, [`model`], imports nothing of the crate.
//!
//! Ground and service floors:
//! - [`model`]: the shared types — `Block`, `BlockRef`, the stream's lines (`StreamEvent`) and the
//!   `StreamObserver` seam, the missed-block record with its `Reason` and `Severity`.
//! - [`config`]: the TOML configuration, `${NAME}`/`${file:PATH}` expansion, defaults, validation.
//! - [`redact`]: keeping API keys out of everything shown.
//! - [`telemetry`]: traces, metrics and logs set up for OTLP; the instruments; histograms with
//!   exemplars and `/metrics` in OpenMetrics; the stream's log and metrics observers.
//! - [`store`]: the state-store seam (`StateStore`: cursor, canonical window, missed-block records,
//!   alert state; writes fenced by a lease) and its implementations, SQLite and PostgreSQL.
//! - [`cluster`]: several agents on one PostgreSQL — each chain's role, the lease's local clock, and
//!   the lease manager that renews, shares and takes the chains over.
//! - [`output`]: the block-sink seam (`BlockSink`) and its sinks: stdout, file, none.
//!
//! The stages, in the order a block travels:
//! 1. [`rpc`]: one provider — transport, rate limit, timeouts, typed errors, health state; one
//!    attempt with its span and health bookkeeping; its slowest and failed calls (`/slow`).
//! 2. [`heads`]: what each provider says the head is (`newHeads` or polling), the head book that
//!    corroborates them and catches lies and skips, and the chain head the follower follows.
//! 3. [`pool`]: who is asked — selection, then the call engine's retry, hedging and failover within
//!    the retry budget; the typed eth methods; probes of idle providers.
//! 4. [`fetch`]: the blocks up to the head, in order, in batches kept in flight while catching up.
//! 5. [`canonical`]: which blocks join the stream — the window, the reorg walk, restore and adoption
//!    on start; each change with the commit that records it.
//! 6. [`monitor`]: missed and late blocks among those that joined, the recovery schedule,
//!    statistics, the rotated missed-block log and exports.
//! 7. [`follower`]: the short loop that wires stages 4–6 for one chain, and its commit point — the
//!    sink writes a batch, the store commits it, then the observers are told.
//!
//! Above the stream:
//! - [`health`]: one verdict on each chain, read by every health surface.
//! - [`alerts`]: rules over the verdicts and statistics, throttled, delivered to the channels.
//! - [`api`]: the HTTP API and its hardened server.
//! - [`agent`]: wires every chain's stages, supervises their tasks and stops them in stages.
//! - [`cli`], [`demo`]: the command line, and the demo on the simulated chain, [`devnet`] (a JSON-RPC
//!   node simulator that stands apart: no stage of the agent imports it).

pub mod agent;
pub mod alerts;
pub mod api;
pub mod canonical;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod devnet;
pub mod fetch;
pub mod follower;
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
