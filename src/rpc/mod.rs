//! Talking to JSON-RPC providers: one [`Provider`] per configured endpoint, grouped into a
//! [`ProviderPool`] per chain.

mod error;
pub mod heads;
pub mod health;
pub mod integrity;
pub mod latency;
pub mod provider;
pub mod retry_after;
pub mod trace_context;
pub mod types;

pub use error::{Retry, RpcError};
pub use provider::Provider;
