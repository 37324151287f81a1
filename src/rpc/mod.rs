//! Talking to one JSON-RPC provider: one [`Provider`] per configured endpoint, with its transport
//! (rate limit, timeout, size limit, `Retry-After`), its typed errors and the one retry predicate
//! on them ([`RpcError::retry`]), its health state, its chain-id and genesis checks against the
//! chain's [`ChainIdentity`], and the single attempt ([`Provider::ask`]) with its span, redaction and
//! health bookkeeping.
//!
//! This is the lowest floor of the provider layer: it imports neither the heads stage nor the pool.
//! What a provider's health needs of its head comes from the head book through [`health::HeadSource`].

mod error;
pub mod health;
pub mod identity;
pub mod integrity;
pub mod latency;
mod lie;
pub mod provider;
pub mod retry_after;
pub mod slow;
pub mod trace_context;
pub mod types;

pub use error::{Retry, RpcError};
pub use identity::ChainIdentity;
pub use lie::LieKind;
pub use provider::{AttemptSpan, Provider};
