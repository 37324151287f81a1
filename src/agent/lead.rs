//! Cluster mode's side of a chain's follower: it runs only while this agent leads the chain, under
//! the lease's fence, and stops (finishing its batch) when the lease manager says the chain is
//! another's. A write refused by its fence, a lease that ran out or a store that failed ends the
//! term: the chain stands by, and the manager decides who leads it next.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::{
    cluster::{ChainRole, LossReason, Role},
    follower::{ChainFollower, FollowError, Term},
    store::{Fence, StoreError},
    telemetry::Metrics,
};

/// Builds a chain's follower for a term (a new one each time the chain is led).
pub(super) type MakeFollower = Box<dyn Fn(Option<Term>) -> ChainFollower + Send + Sync>;

/// Leads `role`'s chain whenever the lease manager says so, as `instance`, until `cancel`.
pub(super) async fn lead(
    make: MakeFollower,
    role: Arc<ChainRole>,
    instance: String,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) -> Result<(), FollowError> {
    let chain = role.chain().to_owned();
    let mut roles = role.watch();
    loop {
        let epoch = loop {
            if let Role::Leader { epoch } = *roles.borrow_and_update() {
                break epoch;
            }
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                changed = roles.changed() => if changed.is_err() { return Ok(()) },
            }
        };
        let term = Term {
            fence: Fence {
                holder: instance.clone(),
                epoch,
            },
            valid: role.clock(),
        };
        let stop = cancel.child_token();
        role.set_running(true);
        let span = tracing::info_span!("lead_chain", blockwatch.chain = %chain, blockwatch.lease.epoch = epoch);
        span.in_scope(
            || tracing::info!(chain = %chain, epoch, "leading the chain from its committed cursor"),
        );
        let run = make(Some(term)).run(stop.clone());
        tokio::pin!(run);
        let result = tokio::select! {
            r = &mut run => r,
            _ = async {
                // Until the role changes away from this term.
                while roles.changed().await.is_ok() {
                    if *roles.borrow_and_update() != (Role::Leader { epoch }) {
                        return;
                    }
                }
            } => {
                stop.cancel();
                run.await
            }
        };
        role.set_running(false);
        let (reason, error) = match result {
            Ok(()) if cancel.is_cancelled() => return Ok(()),
            Ok(()) => {
                span.in_scope(|| tracing::info!(chain = %chain, epoch, "stopped leading the chain; standing by"));
                continue;
            }
            // The stored cursor is another chain's: a configuration problem, as for one agent.
            Err(e @ FollowError::Store(StoreError::ChainIdMismatch { .. })) => return Err(e),
            Err(e @ FollowError::Store(StoreError::Fenced { .. })) => {
                metrics.cluster_write_fenced(&chain);
                (LossReason::Fenced, e)
            }
            // Refused before it reached the store: the lease's local clock had run out.
            Err(e @ FollowError::LeaseExpired) => {
                metrics.cluster_write_fenced(&chain);
                (LossReason::Expired, e)
            }
            Err(e @ FollowError::Store(_)) => (LossReason::StoreError, e),
            Err(e) => return Err(e),
        };
        span.in_scope(|| {
            tracing::warn!(chain = %chain, epoch, reason = reason.as_str(), error = %error,
                "stopped leading the chain: nothing more is committed under this lease; standing by")
        });
        role.give_up(reason);
    }
}
