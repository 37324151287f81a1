//! The kinds of claim a provider can be caught in that the other providers do not back. Catching it
//! makes the provider `inconsistent` for a while; the kind names the reason in metrics and logs.

/// What kind of claim a provider was caught in. The names are the `reason` attribute of
/// `blockwatch_provider_inconsistencies_total` (a bounded set).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LieKind {
    /// A head far ahead of every other provider's that it could not serve.
    HeadAhead,
    /// A head that went back by more than the reorg window.
    HeadBackwards,
    /// `null` for a block at or below the head it reported itself, twice.
    NullBelowHead,
    /// Another block than the one asked for (another number, or another hash for a hash lookup).
    WrongBlock,
}

impl LieKind {
    /// The `reason` attribute and log field.
    pub fn as_str(self) -> &'static str {
        match self {
            LieKind::HeadAhead => "head_ahead",
            LieKind::HeadBackwards => "head_backwards",
            LieKind::NullBelowHead => "null_below_head",
            LieKind::WrongBlock => "wrong_block",
        }
    }

    /// The reason shown with the `inconsistent` state.
    pub fn state_reason(self) -> &'static str {
        match self {
            LieKind::HeadAhead => "head ahead of every other provider, not served",
            LieKind::HeadBackwards => "head went backwards",
            LieKind::NullBelowHead => "no block at or below its own head",
            LieKind::WrongBlock => "served another block than asked",
        }
    }
}
