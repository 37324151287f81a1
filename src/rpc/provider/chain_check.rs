//! Whether a provider serves the configured chain: its chain id, checked before first use and again
//! every `pool.chain_check_interval` (another chain id refuses it until a later check finds it on
//! the right chain), and its genesis block (another one refuses it for good).

use super::*;

/// The outcome of the last `eth_chainId` check.
#[derive(Clone, Copy, Debug, Default)]
pub(super) enum ChainCheck {
    /// Not checked yet.
    #[default]
    Unchecked,
    /// Answered the configured chain id then.
    Verified(Instant),
    /// Answered another chain id then.
    Wrong(Instant, u64),
}

impl Provider {
    /// Asks the provider's chain id and compares it with `expected`. A mismatch refuses the provider
    /// until a later check (after `chain_check_interval`) finds it on the right chain again.
    pub async fn verify_chain_id(&self, expected: u64) -> Result<(), RpcError> {
        // Its own attempt span and measurement: the check is a call of its own, not part of the
        // call it precedes.
        let span = self.attempt_span("eth_chainId", 1, false);
        let (result, took) = self
            .request_timed::<alloy_primitives::U64>("eth_chainId", rpc_params![], None)
            .instrument(span.span.clone())
            .await;
        let checked = result.and_then(|id| {
            let actual = id.to::<u64>();
            let mut check = self.chain_check.lock().unwrap_or_else(|p| p.into_inner());
            if actual != expected {
                *check = ChainCheck::Wrong(Instant::now(), actual);
                return Err(RpcError::WrongChain { expected, actual });
            }
            *check = ChainCheck::Verified(Instant::now());
            Ok(())
        });
        self.finish_attempt(&span, took, checked.as_ref().err());
        checked
    }

    /// The hash of block 0 as this provider serves it (checked against its header); `None` if it
    /// does not serve block 0.
    pub async fn genesis_hash(&self) -> Result<Option<alloy_primitives::B256>, RpcError> {
        let span = self.attempt_span("eth_getBlockByNumber", 1, false);
        let (result, took) = self
            .request_timed::<Option<RpcBlock>>(
                "eth_getBlockByNumber",
                rpc_params![alloy_primitives::U64::ZERO, false],
                None,
            )
            .instrument(span.span.clone())
            .await;
        let result = result.and_then(|b| match b {
            Some(b) if b.number() != 0 => Err(RpcError::InvalidBlock(format!(
                "asked for block 0, got block {}",
                b.number()
            ))),
            Some(b) => b.check_hash(self.hash_check).map(|()| Some(b.header.hash)),
            None => Ok(None),
        });
        let result = result.map_err(|e| self.judge(e));
        self.finish_attempt(&span, took, result.as_ref().err());
        result
    }

    /// Refuses the provider for good: it serves another chain's genesis block.
    pub fn refuse_genesis(&self) {
        self.wrong_genesis.store(true, Ordering::Relaxed);
        self.heads.forget(self.index);
        self.evaluate(Instant::now());
    }

    /// Makes sure it serves the configured chain before it is used: its chain id when a check is
    /// due (another one is logged, and refuses it), then its genesis block if that could not be
    /// checked yet. Errors are redacted.
    pub async fn ensure_verified(&self) -> Result<(), RpcError> {
        if !self.needs_chain_check() {
            return Ok(());
        }
        let result = self.verify_chain_id(self.identity.chain_id).await;
        if let Err(RpcError::WrongChain { expected, actual }) = &result {
            tracing::error!(
                chain = %self.chain, provider = %self.name, url = %self.display_url,
                expected, actual, "provider serves another chain; it will not be used"
            );
        }
        if result.is_ok() && !self.genesis_checked() {
            self.check_genesis_later().await;
        }
        result.map_err(|e| e.redact(&self.redactor))
    }

    /// Checks the genesis block of a provider that could not be checked at start-up.
    async fn check_genesis_later(&self) {
        let expected = self.identity.genesis();
        match self.genesis_hash().await {
            Ok(Some(hash)) => match expected {
                Some(expected) => {
                    self.judge_genesis(hash, expected);
                }
                None => {
                    // The first provider to answer sets it for those that come later.
                    self.identity.set_genesis(hash);
                    self.mark_genesis_checked();
                }
            },
            Ok(None) | Err(RpcError::HashScheme(_)) => self.mark_genesis_checked(),
            Err(_) => {}
        }
    }

    /// It serves genesis block `hash` where the chain's is `expected`: another one refuses it for
    /// good. Returns whether it serves the chain's.
    pub fn judge_genesis(
        &self,
        hash: alloy_primitives::B256,
        expected: alloy_primitives::B256,
    ) -> bool {
        self.mark_genesis_checked();
        if hash == expected {
            return true;
        }
        tracing::error!(chain = %self.chain, provider = %self.name, url = %self.display_url,
            served = %hash, expected = %expected,
            "provider serves another genesis block than the other providers; it will not be used");
        self.refuse_genesis();
        false
    }

    /// Its genesis block has been checked (or cannot be: it does not serve block 0, or its hash
    /// cannot be verified).
    pub fn mark_genesis_checked(&self) {
        self.genesis_checked.store(true, Ordering::Relaxed);
    }

    /// Whether its genesis block has been checked.
    pub fn genesis_checked(&self) -> bool {
        self.genesis_checked.load(Ordering::Relaxed)
    }

    /// Whether the chain id must be (re)checked before the next use: never checked, or checked
    /// longer than `chain_check_interval` ago, so that a provider that moves to another chain at
    /// runtime is caught.
    pub fn needs_chain_check(&self) -> bool {
        match *self.chain_check.lock().unwrap_or_else(|p| p.into_inner()) {
            ChainCheck::Verified(at) | ChainCheck::Wrong(at, _) => {
                at.elapsed() >= self.chain_check_interval
            }
            ChainCheck::Unchecked => true,
        }
    }

    /// The other chain id the provider answered at its last check, if it did.
    pub fn wrong_chain(&self) -> Option<u64> {
        match *self.chain_check.lock().unwrap_or_else(|p| p.into_inner()) {
            ChainCheck::Wrong(_, id) => Some(id),
            _ => None,
        }
    }

    /// Whether the provider may not be used: it served another genesis block, or answered another
    /// chain id at its last check and the next check is not due yet.
    pub fn is_refused(&self) -> bool {
        self.wrong_genesis.load(Ordering::Relaxed)
            || (self.wrong_chain().is_some() && !self.needs_chain_check())
    }
}
