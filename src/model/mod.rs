//! The ground floor: the types every stage of the block's path shares — a block and its identity
//! ([`Block`], [`BlockRef`]), the stream's events ([`StreamEvent`] and its lines, and the [`StreamObserver`] seam every observer of it implements) and the
//! missed-block record ([`MissedBlock`], [`Reason`], [`Severity`]). This module imports no other
//! module of the crate; everything else may import it.

mod block;
mod missed;
mod stream;

pub use block::{Block, BlockRef};
pub use missed::{MissedBlock, Reason, Severity};
pub use stream::{BlockLine, ErrorLine, HeadRef, ReorgLine, StreamEvent, StreamObserver};

#[cfg(test)]
pub(crate) use missed::tests::readme_example;
