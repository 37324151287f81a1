//! Cluster mode: several agents on one PostgreSQL, each chain led by one of them at a time.
//!
//! A lease per chain (holder, epoch, expiry by PostgreSQL's clock) says who leads it; every write a
//! leader makes carries the lease's [`Fence`](crate::store::Fence), checked in the write's own
//! transaction. Locally, a leader also keeps a [`LeaseClock`]: the instant, by its own monotonic
//! clock, until which the lease is surely held (the renewal's send time plus the lease's time to
//! live, less a margin). Once that has passed without a renewal, it emits nothing more.

mod manager;

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

pub use manager::{
    fair_share, ChainRole, LeaseManager, LeaseRow, Leases, LossReason, Role, RoleView,
};

/// Until when, by this process's monotonic clock, a lease is surely held.
#[derive(Debug)]
pub struct LeaseClock {
    /// The clock's origin.
    origin: Instant,
    /// Microseconds after `origin` until which the lease is held (0: not held).
    until_us: AtomicU64,
}

impl Default for LeaseClock {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            until_us: AtomicU64::new(0),
        }
    }
}

impl LeaseClock {
    /// Whether the lease is surely still held now.
    pub fn holds(&self) -> bool {
        self.holds_at(Instant::now())
    }

    /// Whether the lease is surely still held at `now`.
    pub fn holds_at(&self, now: Instant) -> bool {
        let at = now.saturating_duration_since(self.origin).as_micros() as u64;
        at < self.until_us.load(Ordering::Acquire)
    }

    /// The lease is held until `until` (a renewal sent at `until - ttl + margin` succeeded).
    pub fn extend_to(&self, until: Instant) {
        let us = until.saturating_duration_since(self.origin).as_micros() as u64;
        self.until_us.fetch_max(us, Ordering::AcqRel);
    }

    /// The lease is no longer held.
    pub fn end(&self) {
        self.until_us.store(0, Ordering::Release);
    }

    /// How long the lease is surely held after `now` (zero when it is not).
    pub fn left_at(&self, now: Instant) -> Duration {
        let at = now.saturating_duration_since(self.origin).as_micros() as u64;
        Duration::from_micros(self.until_us.load(Ordering::Acquire).saturating_sub(at))
    }
}

/// The shared PostgreSQL store keeps the leases.
impl Leases for crate::store::PgStore {
    fn instance(&self) -> &str {
        crate::store::PgStore::instance(self)
    }
    async fn heartbeat(&self, ttl: Duration) -> Result<Vec<String>, crate::store::StoreError> {
        crate::store::PgStore::heartbeat(self, ttl).await
    }
    async fn acquire(
        &self,
        chain: &str,
        ttl: Duration,
    ) -> Result<Option<u64>, crate::store::StoreError> {
        crate::store::PgStore::acquire(self, chain, ttl).await
    }
    async fn renew(
        &self,
        held: &[(String, u64)],
        ttl: Duration,
    ) -> Result<Vec<String>, crate::store::StoreError> {
        crate::store::PgStore::renew(self, held, ttl).await
    }
    async fn release(&self, chain: &str, epoch: u64) -> Result<(), crate::store::StoreError> {
        crate::store::PgStore::release(self, chain, epoch).await
    }
    async fn leases(&self) -> Result<Vec<LeaseRow>, crate::store::StoreError> {
        crate::store::PgStore::leases(self).await
    }
    async fn leave(&self) -> Result<(), crate::store::StoreError> {
        crate::store::PgStore::leave(self).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_clock_holds_until_its_end_and_never_moves_back() {
        let c = LeaseClock::default();
        let t0 = Instant::now();
        assert!(!c.holds_at(t0), "a new clock holds nothing");
        c.extend_to(t0 + Duration::from_secs(8));
        assert!(c.holds_at(t0 + Duration::from_secs(7)));
        assert!(!c.holds_at(t0 + Duration::from_secs(8)));
        // A late answer to an older renewal does not shorten it.
        c.extend_to(t0 + Duration::from_secs(5));
        assert!(c.holds_at(t0 + Duration::from_secs(7)));
        assert_eq!(
            c.left_at(t0 + Duration::from_secs(6)),
            Duration::from_secs(2)
        );
        c.end();
        assert!(!c.holds_at(t0));
        assert_eq!(c.left_at(t0), Duration::ZERO);
    }
}
