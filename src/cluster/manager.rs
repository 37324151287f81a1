//! The lease manager: one task per agent that, every `renew_every`, announces the agent, renews the
//! leases it holds, gives up what exceeds its fair share and takes free chains up to it. Each chain's
//! [`ChainRole`] tells the agent whether to lead it (run its follower under the lease's fence) or to
//! stand by (keep its heads warm, emit nothing).
//!
//! Fair shares are decided without talking, from what every replica reads in the store: of `n`
//! chains over `k` live replicas, each leads `n / k`, and `n % k` of them one more — those already
//! leading more than `n / k` first (by name), so that nothing moves without need. 10 chains over 3
//! replicas end 4/3/3 whichever replica counts, and move within a few renewals when one joins or
//! dies.

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use super::LeaseClock;
pub use crate::store::LeaseRow;
use crate::{store::StoreError, telemetry::Metrics};

/// What the lease manager needs of the shared store. Every expiry is by the store's clock.
pub trait Leases: Send + Sync + 'static {
    /// This agent's instance name.
    fn instance(&self) -> &str;
    /// Announces this instance; returns the live instances, sorted, this one included.
    fn heartbeat(
        &self,
        ttl: Duration,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;
    /// Takes `chain`'s lease if it is free: the new epoch, or `None` when it is held.
    fn acquire(
        &self,
        chain: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<Option<u64>, StoreError>> + Send;
    /// Renews the leases held at these epochs; returns the chains renewed.
    fn renew(
        &self,
        held: &[(String, u64)],
        ttl: Duration,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;
    /// Gives a lease up if it is still held at `epoch`.
    fn release(
        &self,
        chain: &str,
        epoch: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Every lease.
    fn leases(&self) -> impl Future<Output = Result<Vec<LeaseRow>, StoreError>> + Send;
    /// Removes this instance from the live ones.
    fn leave(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// How long after a lease's expiry (by the store's answer) a standby asks for it: the store's
/// clock and this process's may tick a little apart.
const EXPIRY_SLACK: Duration = Duration::from_millis(20);

/// This agent's part in a chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Another agent leads it (or nobody, for now): heads are followed, nothing is emitted.
    Standby,
    /// This agent leads it under the lease taken with `epoch`.
    Leader {
        /// The lease's epoch.
        epoch: u64,
    },
}

/// Why a lease was lost (the `reason` of `blockwatch_cluster_lease_losses_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossReason {
    /// It could not be renewed before it may have expired (the store was unreachable or slow).
    Expired,
    /// The store refused the renewal: the lease had expired and another agent may hold it.
    Refused,
    /// A write was refused by its fence.
    Fenced,
    /// The store failed under the follower; the chain is given up until it works again.
    StoreError,
    /// Given up for another replica's fair share.
    Rebalance,
    /// Given up on a clean stop.
    Shutdown,
}

impl LossReason {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            LossReason::Expired => "expired",
            LossReason::Refused => "refused",
            LossReason::Fenced => "fenced",
            LossReason::StoreError => "store_error",
            LossReason::Rebalance => "rebalance",
            LossReason::Shutdown => "shutdown",
        }
    }
}

/// What `/status` shows of a chain's lease.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RoleView {
    /// `leader` or `standby`.
    pub role: &'static str,
    /// The instance leading the chain, as the store last said (`None`: nobody).
    pub leader: Option<String>,
    /// The epoch of its lease.
    pub epoch: Option<u64>,
}

/// One chain's role, shared by the lease manager (which sets it), the chain's follower runner
/// (which leads while it says so) and the API.
#[derive(Debug)]
pub struct ChainRole {
    chain: String,
    role: watch::Sender<Role>,
    clock: Arc<LeaseClock>,
    /// Whether a follower runs for the chain now (set by the runner).
    running: watch::Sender<bool>,
    /// The lease as the store last said: holder and epoch.
    seen: Mutex<(Option<String>, Option<u64>)>,
    /// Why the follower gave the lease up, for the manager to count and release.
    given_up: Mutex<Option<LossReason>>,
    /// Wakes the lease manager (shared by the chains of one agent).
    wake: Arc<Notify>,
}

impl ChainRole {
    /// The chains of one agent, each stood by for to begin with.
    pub fn group<S: AsRef<str>>(chains: &[S]) -> Vec<Arc<Self>> {
        let wake = Arc::new(Notify::new());
        chains
            .iter()
            .map(|chain| {
                Arc::new(Self {
                    chain: chain.as_ref().to_owned(),
                    role: watch::channel(Role::Standby).0,
                    clock: Arc::new(LeaseClock::default()),
                    running: watch::channel(false).0,
                    seen: Mutex::new((None, None)),
                    given_up: Mutex::new(None),
                    wake: wake.clone(),
                })
            })
            .collect()
    }

    /// The chain.
    pub fn chain(&self) -> &str {
        &self.chain
    }

    /// The role now.
    pub fn role(&self) -> Role {
        *self.role.borrow()
    }

    /// Told of every change of role.
    pub fn watch(&self) -> watch::Receiver<Role> {
        self.role.subscribe()
    }

    /// Until when the lease is surely held.
    pub fn clock(&self) -> Arc<LeaseClock> {
        self.clock.clone()
    }

    /// The runner says whether a follower runs now.
    pub fn set_running(&self, running: bool) {
        self.running.send_replace(running);
    }

    /// The follower stopped leading for `reason` (a fenced write, an expired lease, a store
    /// error): the chain stands by, and the manager gives the lease up.
    pub fn give_up(&self, reason: LossReason) {
        *self.given_up.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
        self.clock.end();
        self.role.send_replace(Role::Standby);
        self.wake.notify_one();
    }

    /// What `/status` shows.
    pub fn view(&self) -> RoleView {
        let (leader, epoch) = self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
        RoleView {
            role: match self.role() {
                Role::Leader { .. } => "leader",
                Role::Standby => "standby",
            },
            leader,
            epoch,
        }
    }
}

/// How many of `chains` replica `me` leads, given how many each live replica leads now (`held`,
/// every live replica once, `me` included): `chains / k` each, and one more for `chains % k` of
/// them — those leading more than `chains / k` already first, then by name.
pub fn fair_share(chains: usize, held: &[(&str, usize)], me: &str) -> usize {
    let k = held.len().max(1);
    let (base, extra) = (chains / k, chains % k);
    let mut order: Vec<&(&str, usize)> = held.iter().collect();
    order.sort_by_key(|(name, n)| (*n <= base, *name));
    let rank = order.iter().position(|(name, _)| *name == me).unwrap_or(k);
    base + usize::from(rank < extra)
}

/// The lease manager of one agent.
pub struct LeaseManager<L> {
    store: Arc<L>,
    roles: Vec<Arc<ChainRole>>,
    ttl: Duration,
    every: Duration,
    metrics: Arc<Metrics>,
    /// Leases held: chain index → epoch.
    held: HashMap<usize, u64>,
    /// Leases given up locally but not yet released in the store: chain index → epoch, reason.
    releasing: HashMap<usize, (u64, LossReason)>,
    /// Rounds that failed in a row (the next waits longer, up to the lease's time to live).
    failures: u32,
    /// Chains whose follower gave up (a fenced write, a store error): not taken again by this
    /// agent before then, so that another may, and a failing store is not hammered.
    cooldown: HashMap<usize, Instant>,
    /// When the soonest lease this agent could take (below its share) expires: the next round is
    /// then, not a whole `renew_every` later, so that a dead leader's chain is taken at once.
    next_free: Option<Instant>,
}

impl<L: Leases> LeaseManager<L> {
    /// A manager of `roles`' leases in `store`.
    pub fn new(
        store: Arc<L>,
        roles: Vec<Arc<ChainRole>>,
        ttl: Duration,
        every: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            store,
            roles,
            ttl,
            every,
            metrics,
            held: HashMap::new(),
            releasing: HashMap::new(),
            failures: 0,
            cooldown: HashMap::new(),
            next_free: None,
        }
    }

    /// How long before the store's expiry a leader stops emitting: drift between the two clocks
    /// and the time a batch takes to write.
    fn margin(&self) -> Duration {
        self.ttl / 5
    }

    /// Runs rounds until `cancel`, then gives every lease up and leaves.
    pub async fn run(mut self, cancel: CancellationToken) {
        let wake = self
            .roles
            .first()
            .map_or_else(|| Arc::new(Notify::new()), |r| r.wake.clone());
        loop {
            let ok = self.round(Instant::now()).await;
            self.failures = if ok {
                0
            } else {
                self.failures.saturating_add(1)
            };
            // A store that fails is asked again later and later, up to the lease's time to live,
            // once no lease is held; leadership is given up as the local clocks run out.
            let wait = if ok {
                let now = Instant::now();
                self.next_free
                    .map_or(self.every, |t| t.saturating_duration_since(now))
                    .min(self.every)
            } else if !self.held.is_empty() {
                // Leases still held locally: their renewal is retried every period until they run
                // out, however long the store has been failing.
                self.every
            } else {
                (self.every * 2u32.saturating_pow(self.failures.min(8))).min(self.ttl)
            };
            let until = Instant::now() + wait;
            loop {
                let next_end = self.next_local_expiry().min(until);
                let given_up = tokio::select! {
                    _ = cancel.cancelled() => {
                        self.stop().await;
                        return;
                    }
                    _ = tokio::time::sleep_until(next_end.into()) => false,
                    // A follower gave its lease up: counted and released at once.
                    _ = wake.notified() => true,
                };
                self.take_given_up(Instant::now());
                self.expire_local(Instant::now());
                if given_up || Instant::now() >= until {
                    break;
                }
            }
        }
    }

    /// The soonest instant a held lease's local clock runs out (or far away).
    fn next_local_expiry(&self) -> Instant {
        let now = Instant::now();
        self.held
            .keys()
            .map(|&i| now + self.roles[i].clock.left_at(now))
            .min()
            .unwrap_or(now + self.ttl)
    }

    /// Counts the leases the followers gave up (a fenced write, a store error) for their reason;
    /// they are released at the next round and not taken again for a lease period.
    fn take_given_up(&mut self, now: Instant) {
        for i in 0..self.roles.len() {
            let given = self.roles[i]
                .given_up
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if let Some(reason) = given {
                self.lose(i, reason);
                self.cooldown.insert(i, now + self.ttl);
            }
        }
    }

    /// Steps down from every chain whose lease may have run out by `now`.
    fn expire_local(&mut self, now: Instant) {
        let gone: Vec<usize> = self
            .held
            .keys()
            .copied()
            .filter(|&i| !self.roles[i].clock.holds_at(now))
            .collect();
        for i in gone {
            self.lose(i, LossReason::Expired);
        }
    }

    /// Stops leading chain `i` for `reason`; the store is told on the next round.
    fn lose(&mut self, i: usize, reason: LossReason) {
        let Some(epoch) = self.held.remove(&i) else {
            return;
        };
        let role = &self.roles[i];
        // Given up by choice, the lease still holds until released: the follower commits its
        // batch under it. Lost, it may be another agent's already: nothing more is emitted.
        if !matches!(reason, LossReason::Rebalance | LossReason::Shutdown) {
            role.clock.end();
        }
        role.role.send_replace(Role::Standby);
        self.metrics
            .cluster_lease_lost(&role.chain, reason.as_str());
        self.metrics.set_cluster_leader(&role.chain, false);
        // Every transition is a log line, and an event of a `lease` span of its own (so that it
        // is in the traces too).
        tracing::info_span!("lease", blockwatch.chain = %role.chain, blockwatch.lease.epoch = epoch).in_scope(|| match reason {
            LossReason::Rebalance | LossReason::Shutdown => tracing::info!(
                chain = %role.chain, epoch, reason = reason.as_str(), "giving the chain's lease up"),
            _ => tracing::warn!(
                chain = %role.chain, epoch, reason = reason.as_str(), "lost the chain's lease; standing by"),
        });
        self.releasing.insert(i, (epoch, reason));
    }

    /// One round: heartbeat, renewals, releases, acquisitions. Returns whether the store answered.
    pub async fn round(&mut self, started: Instant) -> bool {
        self.take_given_up(started);
        self.expire_local(started);
        match self.exchange(started).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "cannot reach the shared state store to renew leases; will retry");
                self.expire_local(Instant::now());
                false
            }
        }
    }

    async fn exchange(&mut self, started: Instant) -> Result<(), StoreError> {
        let live = self.store.heartbeat(self.ttl).await?;
        // Renewals first: they are what keeps leading chains alive.
        if !self.held.is_empty() {
            let held: Vec<(String, u64)> = self
                .held
                .iter()
                .map(|(&i, &e)| (self.roles[i].chain.clone(), e))
                .collect();
            let renewed = self.store.renew(&held, self.ttl).await?;
            let until = started + self.ttl.saturating_sub(self.margin());
            let lost: Vec<usize> = self
                .held
                .keys()
                .copied()
                .filter(|&i| !renewed.contains(&self.roles[i].chain))
                .collect();
            for &i in self.held.keys() {
                if renewed.contains(&self.roles[i].chain) {
                    self.roles[i].clock.extend_to(until);
                }
            }
            for i in lost {
                self.lose(i, LossReason::Refused);
            }
        }
        // Leases given up are released once their follower has stopped (its last batch
        // committed), or at once when it is not running.
        let ready: Vec<usize> = self
            .releasing
            .keys()
            .copied()
            .filter(|&i| !*self.roles[i].running.borrow())
            .collect();
        for i in ready {
            if let Some((epoch, _)) = self.releasing.remove(&i) {
                self.roles[i].clock.end();
                self.store.release(&self.roles[i].chain, epoch).await?;
            }
        }
        // The fair share, from the live replicas and what each leads now.
        let me = self.store.instance().to_owned();
        let rows = self.store.leases().await?;
        let mut held: Vec<(&str, usize)> = live
            .iter()
            .filter(|l| **l != me)
            .map(|l| {
                let n = rows
                    .iter()
                    .filter(|r| r.holder.as_deref() == Some(l.as_str()) && !r.left.is_zero())
                    .count();
                (l.as_str(), n)
            })
            .collect();
        held.push((me.as_str(), self.held.len()));
        let share = fair_share(self.roles.len(), &held, &me);
        if self.held.len() > share {
            let mut surplus: Vec<usize> = self.held.keys().copied().collect();
            // Give up the chains whose names sort last: stable, so two rounds agree.
            surplus.sort_by(|a, b| self.roles[*b].chain.cmp(&self.roles[*a].chain));
            surplus.truncate(self.held.len() - share);
            for i in surplus {
                self.lose(i, LossReason::Rebalance);
            }
        }
        let by_chain: HashMap<&str, &LeaseRow> =
            rows.iter().map(|r| (r.chain.as_str(), r)).collect();
        // Chains led by others: the soonest expiry (a leader that died, whose heartbeat ends no
        // later than its leases, and with it the shares) is the next round.
        self.next_free = (0..self.roles.len())
            .filter(|i| !self.held.contains_key(i))
            .filter_map(|i| by_chain.get(self.roles[i].chain.as_str()))
            .filter(|r| r.holder.as_deref().is_some_and(|h| h != me) && !r.left.is_zero())
            .map(|r| Instant::now() + r.left + EXPIRY_SLACK)
            .min();
        if self.held.len() < share {
            // Free chains, taken in an order of this instance's own (so that replicas asking at
            // the same moment mostly ask for different chains).
            let mut free: Vec<usize> = (0..self.roles.len())
                .filter(|i| !self.held.contains_key(i) && !self.releasing.contains_key(i))
                .filter(|i| self.cooldown.get(i).is_none_or(|until| started >= *until))
                .filter(|&i| {
                    by_chain
                        .get(self.roles[i].chain.as_str())
                        .is_none_or(|r| r.holder.is_none() || r.left.is_zero())
                })
                .collect();
            free.sort_by_key(|&i| spread_key(&me, &self.roles[i].chain));
            for i in free {
                if self.held.len() >= share {
                    break;
                }
                let asked = Instant::now();
                if let Some(epoch) = self.store.acquire(&self.roles[i].chain, self.ttl).await? {
                    self.take(i, epoch, asked);
                }
            }
        }
        // What /status shows: the store's view, read once this round, with this agent's own
        // leases (those just taken too) as it knows them.
        for (i, role) in self.roles.iter().enumerate() {
            let seen = match (self.held.get(&i), by_chain.get(role.chain.as_str())) {
                (Some(&epoch), _) => (Some(me.clone()), Some(epoch)),
                (None, Some(r)) if r.holder.is_some() && !r.left.is_zero() => {
                    (r.holder.clone(), Some(r.epoch))
                }
                (None, r) => (None, r.map(|r| r.epoch)),
            };
            *role.seen.lock().unwrap_or_else(|p| p.into_inner()) = seen;
        }
        Ok(())
    }

    /// Chain `i`'s lease was taken with `epoch`, asked for at `asked`.
    fn take(&mut self, i: usize, epoch: u64, asked: Instant) {
        let role = &self.roles[i];
        role.clock.end();
        role.clock
            .extend_to(asked + self.ttl.saturating_sub(self.margin()));
        self.held.insert(i, epoch);
        self.metrics.cluster_lease_acquired(&role.chain);
        self.metrics.set_cluster_leader(&role.chain, true);
        tracing::info_span!("lease", blockwatch.chain = %role.chain, blockwatch.lease.epoch = epoch).in_scope(|| {
            tracing::info!(chain = %role.chain, epoch, "took the chain's lease; leading it")
        });
        role.role.send_replace(Role::Leader { epoch });
    }

    /// A clean stop: every lease given up (the followers have stopped: they stop first), and this
    /// instance leaves, so that the others take the chains at once rather than after expiry.
    async fn stop(&mut self) {
        let held: Vec<usize> = self.held.keys().copied().collect();
        for i in held {
            self.lose(i, LossReason::Shutdown);
        }
        let releasing: Vec<(usize, u64)> =
            self.releasing.drain().map(|(i, (e, _))| (i, e)).collect();
        let store = self.store.clone();
        let chains: Vec<(String, u64)> = releasing
            .into_iter()
            .map(|(i, e)| (self.roles[i].chain.clone(), e))
            .collect();
        let work = async move {
            for (chain, epoch) in chains {
                store.release(&chain, epoch).await?;
            }
            store.leave().await
        };
        match tokio::time::timeout(Duration::from_millis(400), work).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot give the leases up; they expire by themselves")
            }
            Err(_) => {
                tracing::warn!("giving the leases up took too long; they expire by themselves")
            }
        }
    }
}

/// An order of chains of `instance`'s own: a hash of both names.
fn spread_key(instance: &str, chain: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (instance, chain).hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shared store in memory, with a clock the test moves.
    #[derive(Default)]
    struct Db {
        now: Duration,
        leases: HashMap<String, (Option<String>, u64, Duration)>,
        seen: HashMap<String, Duration>,
        down: bool,
    }

    struct Fake {
        db: Arc<Mutex<Db>>,
        me: String,
    }

    impl Fake {
        fn db(&self) -> Result<std::sync::MutexGuard<'_, Db>, StoreError> {
            let db = self.db.lock().unwrap();
            if db.down {
                return Err(StoreError::Query {
                    doing: "testing",
                    source: "down".into(),
                });
            }
            Ok(db)
        }
    }

    impl Leases for Fake {
        fn instance(&self) -> &str {
            &self.me
        }
        async fn heartbeat(&self, ttl: Duration) -> Result<Vec<String>, StoreError> {
            let mut db = self.db()?;
            let now = db.now;
            db.seen.insert(self.me.clone(), now);
            let mut live: Vec<String> = db
                .seen
                .iter()
                .filter(|(_, t)| now < **t + ttl)
                .map(|(i, _)| i.clone())
                .collect();
            live.sort();
            Ok(live)
        }
        async fn acquire(&self, chain: &str, ttl: Duration) -> Result<Option<u64>, StoreError> {
            let mut db = self.db()?;
            let now = db.now;
            let e = db.leases.entry(chain.to_owned()).or_insert((None, 0, now));
            if e.0.is_some() && now < e.2 {
                return Ok(None);
            }
            *e = (Some(self.me.clone()), e.1 + 1, now + ttl);
            Ok(Some(e.1))
        }
        async fn renew(
            &self,
            held: &[(String, u64)],
            ttl: Duration,
        ) -> Result<Vec<String>, StoreError> {
            let mut db = self.db()?;
            let now = db.now;
            let mut out = Vec::new();
            for (chain, epoch) in held {
                if let Some(e) = db.leases.get_mut(chain) {
                    if e.0.as_deref() == Some(&self.me) && e.1 == *epoch && now < e.2 {
                        e.2 = now + ttl;
                        out.push(chain.clone());
                    }
                }
            }
            Ok(out)
        }
        async fn release(&self, chain: &str, epoch: u64) -> Result<(), StoreError> {
            let mut db = self.db()?;
            let now = db.now;
            if let Some(e) = db.leases.get_mut(chain) {
                if e.0.as_deref() == Some(&self.me) && e.1 == epoch {
                    *e = (None, epoch, now);
                }
            }
            Ok(())
        }
        async fn leases(&self) -> Result<Vec<LeaseRow>, StoreError> {
            let db = self.db()?;
            Ok(db
                .leases
                .iter()
                .map(|(c, (h, e, until))| LeaseRow {
                    chain: c.clone(),
                    holder: h.clone().filter(|_| db.now < *until),
                    epoch: *e,
                    left: until.saturating_sub(db.now),
                })
                .collect())
        }
        async fn leave(&self) -> Result<(), StoreError> {
            self.db()?.seen.remove(&self.me);
            Ok(())
        }
    }

    const TTL: Duration = Duration::from_secs(60);

    fn metrics() -> Arc<Metrics> {
        Arc::new(Metrics::new(&opentelemetry::global::meter("test")))
    }

    fn manager(db: &Arc<Mutex<Db>>, me: &str, chains: usize) -> LeaseManager<Fake> {
        let names: Vec<String> = (0..chains).map(|c| format!("c{c:02}")).collect();
        let roles = ChainRole::group(&names);
        let store = Arc::new(Fake {
            db: db.clone(),
            me: me.to_owned(),
        });
        LeaseManager::new(store, roles, TTL, Duration::from_secs(2), metrics())
    }

    fn leading(m: &LeaseManager<Fake>) -> usize {
        m.roles
            .iter()
            .filter(|r| matches!(r.role(), Role::Leader { .. }))
            .count()
    }

    /// Rounds of every manager in turn, as their timers would interleave, moving the store's
    /// clock by `step` each time.
    async fn rounds(db: &Arc<Mutex<Db>>, ms: &mut [&mut LeaseManager<Fake>], n: usize) {
        for _ in 0..n {
            for m in ms.iter_mut() {
                m.round(Instant::now()).await;
            }
            db.lock().unwrap().now += Duration::from_secs(2);
        }
    }

    #[test]
    fn fair_shares_add_up_differ_by_one_at_most_and_keep_what_is_held() {
        let names = ["a", "b", "c", "d", "e", "f"];
        for chains in 0..40 {
            for live in 1..7 {
                // Whatever each holds now (here: all on the last, or none), the shares add up.
                for last_holds in [0, chains] {
                    let held: Vec<(&str, usize)> = (0..live)
                        .map(|i| (names[i], if i == live - 1 { last_holds } else { 0 }))
                        .collect();
                    let shares: Vec<usize> = held
                        .iter()
                        .map(|(n, _)| fair_share(chains, &held, n))
                        .collect();
                    assert_eq!(shares.iter().sum::<usize>(), chains, "{chains} over {live}");
                    let (lo, hi) = (shares.iter().min().unwrap(), shares.iter().max().unwrap());
                    assert!(hi - lo <= 1 && *hi <= chains.div_ceil(live), "{shares:?}");
                }
            }
        }
        let share = |held: &[(&str, usize)]| -> Vec<usize> {
            held.iter().map(|(n, _)| fair_share(10, held, n)).collect()
        };
        assert_eq!(share(&[("a", 0), ("b", 0), ("c", 0)]), [4, 3, 3]);
        // The replica that already leads the extra chain keeps it: nothing moves.
        assert_eq!(share(&[("a", 3), ("b", 3), ("c", 4)]), [3, 3, 4]);
        assert_eq!(fair_share(1, &[("a", 0), ("b", 1)], "b"), 1);
        assert_eq!(fair_share(1, &[("a", 0), ("b", 1)], "a"), 0);
    }

    #[tokio::test]
    async fn ten_chains_spread_4_3_3_and_move_when_a_replica_dies_and_returns() {
        let db = Arc::new(Mutex::new(Db::default()));
        let (mut a, mut b, mut c) = (
            manager(&db, "a", 10),
            manager(&db, "b", 10),
            manager(&db, "c", 10),
        );
        // `a` alone first: it takes everything.
        rounds(&db, &mut [&mut a], 1).await;
        assert_eq!(leading(&a), 10);
        // Two more join: `a` gives up its surplus once its followers stopped (none run here).
        rounds(&db, &mut [&mut a, &mut b, &mut c], 4).await;
        assert_eq!((leading(&a), leading(&b), leading(&c)), (4, 3, 3));
        // Every chain is led by exactly one replica, at the store's epoch.
        for i in 0..10 {
            let leaders: Vec<u64> = [&a, &b, &c]
                .iter()
                .filter_map(|m| match m.roles[i].role() {
                    Role::Leader { epoch } => Some(epoch),
                    Role::Standby => None,
                })
                .collect();
            assert_eq!(leaders.len(), 1, "chain {i}: {leaders:?}");
            let stored = db.lock().unwrap().leases[&format!("c{i:02}")].1;
            assert_eq!(leaders[0], stored);
        }
        // `c` dies (no more rounds): once its heartbeat and leases expire, `a` and `b` split 5/5.
        let rounds_to_expire = (TTL.as_secs() / 2 + 2) as usize;
        rounds(&db, &mut [&mut a, &mut b], rounds_to_expire).await;
        assert_eq!((leading(&a), leading(&b)), (5, 5));
        // It comes back (its local clocks ran out long ago, and its renewals are refused).
        c.expire_local(Instant::now() + TTL);
        assert_eq!(leading(&c), 0);
        rounds(&db, &mut [&mut a, &mut b, &mut c], 4).await;
        assert_eq!((leading(&a), leading(&b), leading(&c)), (4, 3, 3));
    }

    #[tokio::test]
    async fn a_leader_that_cannot_renew_stands_down_before_its_lease_runs_out() {
        let db = Arc::new(Mutex::new(Db::default()));
        let mut a = manager(&db, "a", 2);
        let t0 = Instant::now();
        a.round(t0).await;
        assert_eq!(leading(&a), 2);
        let clock = a.roles[0].clock();
        db.lock().unwrap().down = true;
        assert!(
            !a.round(t0 + Duration::from_secs(2)).await,
            "the store is down"
        );
        assert_eq!(leading(&a), 2, "still within the lease");
        // The local clock ends a margin before the store's expiry (asked + ttl): the lease was
        // asked for between t0 and now.
        let now = Instant::now();
        let end = now + clock.left_at(now);
        assert!(
            end >= t0 + TTL - TTL / 5 && end <= now + TTL - TTL / 5,
            "{:?}",
            end - t0
        );
        assert!(clock.holds_at(end - Duration::from_millis(1)));
        a.expire_local(end);
        assert_eq!(leading(&a), 0);
        assert_eq!(a.roles[0].view().role, "standby");
    }

    #[tokio::test]
    async fn a_lease_taken_over_is_given_up_at_the_next_renewal() {
        let db = Arc::new(Mutex::new(Db::default()));
        let (mut a, mut b) = (manager(&db, "a", 1), manager(&db, "b", 1));
        a.round(Instant::now()).await;
        assert_eq!(a.roles[0].role(), Role::Leader { epoch: 1 });
        // `a` is paused past its lease; `b` takes the chain with the next epoch.
        db.lock().unwrap().now += TTL;
        b.round(Instant::now()).await;
        assert_eq!(b.roles[0].role(), Role::Leader { epoch: 2 });
        a.round(Instant::now()).await;
        assert_eq!(a.roles[0].role(), Role::Standby);
        assert!(!a.roles[0].clock().holds());
        assert_eq!(a.roles[0].view().leader.as_deref(), Some("b"));
        assert_eq!(a.roles[0].view().epoch, Some(2));
    }

    #[tokio::test]
    async fn a_follower_that_gives_up_releases_the_lease_for_another() {
        let db = Arc::new(Mutex::new(Db::default()));
        let (mut a, mut b) = (manager(&db, "a", 1), manager(&db, "b", 1));
        a.round(Instant::now()).await;
        a.roles[0].give_up(LossReason::Fenced);
        assert!(!a.roles[0].clock().holds());
        // Released at once; `a` (rank 0 of two: its share is the chain) waits a lease period
        // before taking it again, with a new epoch: the fenced follower's is never used again.
        rounds(&db, &mut [&mut a, &mut b], 2).await;
        assert_eq!(a.roles[0].role(), Role::Standby);
        assert_eq!(db.lock().unwrap().leases["c00"].0, None, "released");
        let later = Instant::now() + TTL;
        a.round(later).await;
        assert_eq!(a.roles[0].role(), Role::Leader { epoch: 2 });
        assert_eq!(b.roles[0].role(), Role::Standby);
    }
}
