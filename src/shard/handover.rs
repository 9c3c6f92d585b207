//! The handover protocol of one replica, as a pure state machine (no I/O, time injected).
//!
//! A replica's member Lease publishes the buckets it *holds*: every bucket it acts on, may act
//! on, or is about to claim. The coordinator alternates two steps, strictly in this order:
//! write the Lease with [`Handover::lease_content`] (then [`Handover::written`] if the write
//! succeeded), then read every live member's Lease and call [`Handover::observed`].
//!
//! Per bucket: *claimed* (in our next write) → *written* (a write holding it succeeded) →
//! *confirmed* (a read after that write showed no other live member holding it) → *active*
//! (our caches hold the bucket too: reconciles of its keys may start) → *releasing* (no longer
//! ours: no reconcile of its keys starts, those in flight finish) → gone from the Lease (the
//! acknowledgement).
//!
//! Invariants, which together make one actor per bucket (checked by the model test below):
//! - a claim is made only for a bucket of our target that no live member holds (the previous
//!   holder acknowledged its release, or its Lease expired);
//! - a bucket is acted on only after a write holding it succeeded *and* a read issued after that
//!   write saw no other live member holding it: of two replicas claiming one bucket at once, at
//!   least one sees the other's claim and backs off (both may, then they retry);
//! - a bucket stays in every write from its claim until it has stopped being acted on (the
//!   in-flight reconciles of a releasing bucket have finished).
//!
//! A member whose Lease expired is ignored: it stopped acting at its renew deadline, before any
//! other member could see its Lease expire (the same reasoning as leader election).
//!
//! Readiness, so a sick member never strands its share: a member publishes whether its caches
//! hold its target. Only *ready* members count in the others' assignment, so until a member's
//! lists have succeeded (an RBAC gap, an OOM during the first list, a proxy answering 500) its
//! share stays with the others. A member claims only while ready, and only buckets its caches
//! already hold. A ready member whose target has had a bucket its caches do not hold for longer
//! than its grace publishes itself not ready: the others take over what it has not claimed,
//! and it keeps acting on what it holds (those caches are fine). A Lease without the readiness
//! annotation (an older version) counts as ready.

use std::time::Duration;

use tokio::time::Instant;

use super::buckets::{BUCKETS, Bucket, BucketSet, assigned};

/// Another live member, as its Lease reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Its identity (the pod name).
    pub name: String,
    /// The buckets its Lease holds.
    pub held: BucketSet,
    /// Whether its caches hold its target (it counts in the assignment).
    pub ready: bool,
}

/// What a step changed, for logs, Events and metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Changes {
    /// Buckets now acted on, each with the time since it entered our target.
    pub acquired: Vec<(Bucket, Duration)>,
    /// Buckets no longer acted on (acknowledged in the next write), each with the time since
    /// it left our target.
    pub released: Vec<(Bucket, Duration)>,
    /// Buckets that just left our target: no reconcile of their keys starts any more.
    pub releasing: BucketSet,
    /// Claims withdrawn because another member held or claimed the bucket too.
    pub backed_off: BucketSet,
}

impl Changes {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.acquired.is_empty()
            && self.released.is_empty()
            && self.releasing.is_empty()
            && self.backed_off.is_empty()
    }
}

/// How a replica computes its target from the live members (itself included).
pub type Assignment = fn(&str, &[&str]) -> BucketSet;

/// One replica's buckets; see the module docs.
#[derive(Debug, Clone)]
pub struct Handover {
    me: String,
    assign: Assignment,
    /// Ours by rendezvous over the members seen in the last read.
    target: BucketSet,
    /// Claims not yet in a successful write.
    claims: BucketSet,
    /// Claims in a successful write, awaiting a read.
    written_claims: BucketSet,
    /// Held by nobody else after our write; waiting for our caches.
    confirmed: BucketSet,
    /// Acted on.
    active: BucketSet,
    /// Left our target; in-flight reconciles finishing.
    releasing: BucketSet,
    /// Live members in the last read, ourselves included.
    members: usize,
    /// When each bucket entered (or left) our target, for the handover durations.
    since: [Option<Instant>; BUCKETS],
    /// What our caches held at the last [`caches_ready`](Self::caches_ready).
    cached: BucketSet,
    /// Whether we count ourselves ready (published in the Lease).
    ready: bool,
    /// Since when some bucket of our target has not been in our caches.
    uncached_since: Option<Instant>,
    /// How long a ready member may have target buckets its caches do not hold.
    grace: Duration,
}

/// The grace of a member built without [`Handover::with_grace`].
pub const DEFAULT_GRACE: Duration = Duration::from_secs(60);

impl Handover {
    /// A replica named `me` holding nothing, assigning buckets by rendezvous hashing.
    pub fn new(me: impl Into<String>) -> Self {
        Self::with_assignment(me, assigned)
    }

    /// A replica computing its target with `assign` (members running another version may
    /// disagree on it: the protocol keeps one actor per bucket regardless).
    pub fn with_assignment(me: impl Into<String>, assign: Assignment) -> Self {
        Handover {
            me: me.into(),
            assign,
            target: BucketSet::EMPTY,
            claims: BucketSet::EMPTY,
            written_claims: BucketSet::EMPTY,
            confirmed: BucketSet::EMPTY,
            active: BucketSet::EMPTY,
            releasing: BucketSet::EMPTY,
            members: 1,
            since: [None; BUCKETS],
            cached: BucketSet::EMPTY,
            ready: false,
            uncached_since: None,
            grace: DEFAULT_GRACE,
        }
    }

    /// The same member, allowed `grace` with target buckets its caches do not hold before it
    /// publishes itself not ready.
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// What the next Lease write must hold: every bucket claimed, confirmed, acted on or
    /// still releasing.
    pub fn lease_content(&self) -> BucketSet {
        self.claims
            .union(&self.written_claims)
            .union(&self.confirmed)
            .union(&self.active)
            .union(&self.releasing)
    }

    /// A write of `content` (taken from [`lease_content`](Self::lease_content) before it) has
    /// succeeded.
    pub fn written(&mut self, content: BucketSet) {
        let landed = self.claims.intersection(&content);
        self.claims = self.claims.difference(&landed);
        self.written_claims = self.written_claims.union(&landed);
    }

    /// A read of the live members' Leases, issued after every successful write so far:
    /// `peers` are the other live members (our own Lease excluded). Recomputes the target
    /// (over ourselves and the ready peers), confirms or withdraws written claims, makes new
    /// claims (while ready, of buckets the caches hold) and starts releases.
    pub fn observed(&mut self, peers: &[Peer], now: Instant) -> Changes {
        let mut changes = Changes::default();
        self.members = peers.len() + 1;
        let mut members: Vec<&str> = peers
            .iter()
            .filter(|p| p.ready)
            .map(|p| p.name.as_str())
            .collect();
        members.push(&self.me);
        let target = (self.assign)(&self.me, &members);
        let held_by_others = peers
            .iter()
            .fold(BucketSet::EMPTY, |all, p| all.union(&p.held));

        for bucket in target.difference(&self.target).iter() {
            self.since[bucket.index()] = Some(now);
        }
        // Left the target: claims and confirmations are dropped (nothing acted on them yet);
        // active buckets start releasing.
        let gone = self.target.difference(&target);
        self.target = target;
        let starting_release = self.active.intersection(&gone);
        for bucket in starting_release.iter() {
            self.since[bucket.index()] = Some(now);
        }
        self.active = self.active.difference(&starting_release);
        self.releasing = self.releasing.union(&starting_release);
        changes.releasing = starting_release;
        let not_ours = BucketSet::ALL.difference(&self.target);
        self.claims = self.claims.difference(&not_ours);
        self.written_claims = self.written_claims.difference(&not_ours);
        self.confirmed = self.confirmed.difference(&not_ours);

        // Written claims: confirmed unless another member holds (or claims) the bucket too.
        let contested = self.written_claims.intersection(&held_by_others);
        changes.backed_off = contested.union(&self.claims.intersection(&held_by_others));
        self.confirmed = self
            .confirmed
            .union(&self.written_claims.difference(&held_by_others));
        self.written_claims = BucketSet::EMPTY;
        self.claims = self.claims.difference(&held_by_others);

        // New claims, while ready: ours by target, free, held by our caches, and not in any
        // of our states already (a bucket still releasing is claimed again once its release
        // is acknowledged).
        if self.ready {
            let free = self
                .target
                .difference(&held_by_others)
                .intersection(&self.cached)
                .difference(&self.lease_content());
            self.claims = self.claims.union(&free);
        }
        changes
    }

    /// Our caches hold `ready`: confirmed buckets among them become active (returned with the
    /// time since each entered the target), and our readiness follows (see the module docs).
    pub fn caches_ready(&mut self, ready: BucketSet, now: Instant) -> Vec<(Bucket, Duration)> {
        self.cached = ready;
        if self.target.is_subset(&ready) {
            self.uncached_since = None;
            self.ready = true;
        } else {
            let since = *self.uncached_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= self.grace {
                self.ready = false;
            }
        }
        if !self.ready {
            // Nothing not acted on yet stays held without its caches: the others may take it.
            self.claims = self.claims.intersection(&ready);
            self.written_claims = self.written_claims.intersection(&ready);
            self.confirmed = self.confirmed.intersection(&ready);
        }
        let now_active = self.confirmed.intersection(&ready);
        self.confirmed = self.confirmed.difference(&now_active);
        self.active = self.active.union(&now_active);
        self.durations(now_active, now)
    }

    /// Releasing buckets for which `idle` says no reconcile is in flight are released (gone
    /// from the next write: the acknowledgement); returns them with the time since each left
    /// the target.
    pub fn drained(
        &mut self,
        idle: impl Fn(Bucket) -> bool,
        now: Instant,
    ) -> Vec<(Bucket, Duration)> {
        let done: BucketSet = self.releasing.iter().filter(|b| idle(*b)).collect();
        self.releasing = self.releasing.difference(&done);
        self.durations(done, now)
    }

    /// Buckets acted on.
    pub fn active(&self) -> BucketSet {
        self.active
    }

    /// Buckets releasing (no reconcile starts; those in flight finish).
    pub fn releasing(&self) -> BucketSet {
        self.releasing
    }

    /// Ours by rendezvous in the last read.
    pub fn target(&self) -> BucketSet {
        self.target
    }

    /// Confirmed, waiting for the caches.
    pub fn confirmed(&self) -> BucketSet {
        self.confirmed
    }

    /// Live members in the last read, ourselves included.
    pub fn members(&self) -> usize {
        self.members
    }

    /// Whether we count ourselves ready: our caches hold our target (or did, within the
    /// grace). Published in every Lease write.
    pub fn ready(&self) -> bool {
        self.ready
    }

    /// Buckets of our target our caches do not hold.
    pub fn uncached(&self) -> BucketSet {
        self.target.difference(&self.cached)
    }

    /// What the caches must hold: our target and everything the Lease holds.
    pub fn scope(&self) -> BucketSet {
        self.target.union(&self.lease_content())
    }

    fn durations(&mut self, buckets: BucketSet, now: Instant) -> Vec<(Bucket, Duration)> {
        buckets
            .iter()
            .map(|b| {
                let since = self.since[b.index()].take().unwrap_or(now);
                (b, now.saturating_duration_since(since))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::shard::buckets::owner;

    /// One replica of the model: its state machine, whether its process runs, and which
    /// buckets have a reconcile in flight.
    struct Replica {
        handover: Handover,
        running: bool,
        in_flight: BucketSet,
    }

    /// The API server's view: each member Lease's held buckets, whether it is live, and the
    /// readiness it publishes.
    #[derive(Default)]
    struct Leases(BTreeMap<usize, (BucketSet, bool, bool)>);

    #[derive(Debug, Clone)]
    enum Op {
        /// The replica writes its Lease.
        Write(usize),
        /// The replica reads the live Leases.
        Read(usize),
        /// Its caches catch up with everything confirmed.
        CachesReady(usize),
        /// Its lists fail: its caches hold nothing it did not hold before (a ready member
        /// past its grace publishes itself not ready).
        CachesFail(usize),
        /// Its reconciles start on some active buckets, or finish.
        Work(usize, u8),
        /// In-flight reconciles finish and releasing buckets are released.
        Drain(usize),
        /// The replica starts (or restarts with a fresh state).
        Start(usize),
        /// kill -9: it stops acting at once; its Lease stays live until it expires.
        Kill(usize),
        /// Its Lease expires (only after the process stopped: it steps down before that).
        Expire(usize),
        /// SIGTERM: it stops acting, then releases its Lease.
        Stop(usize),
    }

    const REPLICAS: usize = 4;

    fn op() -> impl Strategy<Value = Op> {
        let r = 0..REPLICAS;
        prop_oneof![
            6 => r.clone().prop_map(Op::Write),
            6 => r.clone().prop_map(Op::Read),
            3 => r.clone().prop_map(Op::CachesReady),
            1 => r.clone().prop_map(Op::CachesFail),
            3 => (r.clone(), any::<u8>()).prop_map(|(i, b)| Op::Work(i, b)),
            3 => r.clone().prop_map(Op::Drain),
            1 => r.clone().prop_map(Op::Start),
            1 => r.clone().prop_map(Op::Kill),
            1 => r.clone().prop_map(Op::Expire),
            1 => r.prop_map(Op::Stop),
        ]
    }

    fn name(i: usize) -> String {
        format!("agentic-operator-{i}")
    }

    struct Model {
        replicas: Vec<Replica>,
        leases: Leases,
        now: Instant,
        /// Replica 3 runs "another version": it wants every bucket.
        greedy: bool,
    }

    fn greedy(_: &str, _: &[&str]) -> BucketSet {
        BucketSet::ALL
    }

    impl Model {
        fn new(greedy: bool) -> Self {
            let mut model = Model {
                replicas: Vec::new(),
                leases: Leases::default(),
                now: Instant::now(),
                greedy,
            };
            model.replicas = (0..REPLICAS)
                .map(|i| Replica {
                    handover: model.fresh(i),
                    running: false,
                    in_flight: BucketSet::EMPTY,
                })
                .collect();
            model
        }

        fn fresh(&self, i: usize) -> Handover {
            let handover = if self.greedy && i == REPLICAS - 1 {
                Handover::with_assignment(name(i), greedy)
            } else {
                Handover::new(name(i))
            };
            handover.with_grace(Duration::from_millis(50))
        }

        fn apply(&mut self, op: &Op) {
            match *op {
                Op::Write(i) if self.replicas[i].running => {
                    let content = self.replicas[i].handover.lease_content();
                    let ready = self.replicas[i].handover.ready();
                    self.leases.0.insert(i, (content, true, ready));
                    self.replicas[i].handover.written(content);
                }
                Op::Read(i) if self.replicas[i].running => {
                    let peers: Vec<Peer> = self
                        .leases
                        .0
                        .iter()
                        .filter(|(j, (_, live, _))| **j != i && *live)
                        .map(|(j, (held, _, ready))| Peer {
                            name: name(*j),
                            held: *held,
                            ready: *ready,
                        })
                        .collect();
                    self.replicas[i].handover.observed(&peers, self.now);
                }
                Op::CachesReady(i) if self.replicas[i].running => {
                    self.replicas[i]
                        .handover
                        .caches_ready(BucketSet::ALL, self.now);
                }
                Op::CachesFail(i) if self.replicas[i].running => {
                    let handover = &mut self.replicas[i].handover;
                    let kept = handover.active().union(&handover.releasing());
                    handover.caches_ready(kept, self.now);
                }
                Op::Work(i, bucket) if self.replicas[i].running => {
                    let replica = &mut self.replicas[i];
                    let bucket = Bucket(bucket);
                    // The gate: a reconcile starts only on an active bucket.
                    if replica.handover.active().contains(bucket) {
                        replica.in_flight.insert(bucket);
                    } else {
                        replica.in_flight.remove(bucket);
                    }
                }
                Op::Drain(i) if self.replicas[i].running => {
                    let replica = &mut self.replicas[i];
                    replica.in_flight = replica.in_flight.intersection(&replica.handover.active());
                    let busy = replica.in_flight;
                    replica.handover.drained(|b| !busy.contains(b), self.now);
                }
                Op::Start(i) if !self.replicas[i].running => {
                    // A fresh process; its Lease is (re)written empty on start.
                    self.replicas[i] = Replica {
                        handover: self.fresh(i),
                        running: true,
                        in_flight: BucketSet::EMPTY,
                    };
                    self.leases.0.insert(i, (BucketSet::EMPTY, true, false));
                }
                Op::Kill(i) => {
                    self.replicas[i].running = false;
                    self.replicas[i].in_flight = BucketSet::EMPTY;
                }
                Op::Expire(i) if !self.replicas[i].running => {
                    if let Some(lease) = self.leases.0.get_mut(&i) {
                        lease.1 = false;
                    }
                }
                Op::Stop(i) if self.replicas[i].running => {
                    self.replicas[i].running = false;
                    self.replicas[i].in_flight = BucketSet::EMPTY;
                    self.leases.0.insert(i, (BucketSet::EMPTY, false, false));
                }
                _ => {}
            }
            self.now += Duration::from_millis(10);
        }

        /// Buckets each running replica may be acting on: active, or releasing with work in
        /// flight (a releasing bucket starts nothing new).
        fn acting(&self) -> Vec<(usize, BucketSet)> {
            self.replicas
                .iter()
                .enumerate()
                .filter(|(_, r)| r.running)
                .map(|(i, r)| (i, r.handover.active().union(&r.handover.releasing())))
                .collect()
        }

        fn assert_one_actor_per_bucket(&self, after: &Op) {
            let acting = self.acting();
            for (a, (i, mine)) in acting.iter().enumerate() {
                for (j, theirs) in &acting[a + 1..] {
                    let both = mine.intersection(theirs);
                    assert!(
                        both.is_empty(),
                        "after {after:?}: replicas {i} and {j} both act on buckets {both}"
                    );
                }
            }
        }

        /// Every running replica does rounds until nothing changes.
        fn settle(&mut self) {
            for _ in 0..12 {
                for i in 0..REPLICAS {
                    for op in [
                        Op::Drain(i),
                        Op::Write(i),
                        Op::Read(i),
                        Op::CachesReady(i),
                        Op::Drain(i),
                        Op::Write(i),
                    ] {
                        self.apply(&op);
                        self.assert_one_actor_per_bucket(&op);
                    }
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Whatever the interleaving of writes, reads, joins, kills, expiries and clean
        /// stops, no bucket ever has two actors; and once the members stop changing, every
        /// bucket is acted on by exactly its rendezvous owner.
        #[test]
        fn no_bucket_ever_has_two_actors_and_ownership_converges(
            ops in proptest::collection::vec(op(), 1..400)
        ) {
            let mut model = Model::new(false);
            model.apply(&Op::Start(0));
            for op in &ops {
                model.apply(op);
                model.assert_one_actor_per_bucket(op);
            }
            // Quiesce: dead Leases expire, the living do rounds.
            for i in 0..REPLICAS {
                model.apply(&Op::Expire(i));
            }
            model.settle();
            let running: Vec<String> = (0..REPLICAS)
                .filter(|i| model.replicas[*i].running)
                .map(name)
                .collect();
            let members: Vec<&str> = running.iter().map(String::as_str).collect();
            for bucket in Bucket::all() {
                let actors: Vec<usize> = model
                    .acting()
                    .into_iter()
                    .filter(|(_, set)| set.contains(bucket))
                    .map(|(i, _)| i)
                    .collect();
                match owner(bucket, &members) {
                    Some(expected) => prop_assert_eq!(
                        actors.iter().map(|i| name(*i)).collect::<Vec<_>>(),
                        vec![expected.to_string()],
                        "bucket {:?}", bucket
                    ),
                    None => prop_assert!(actors.is_empty()),
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// A member that disagrees on the assignment (another version, wanting every bucket)
        /// makes claims collide; the read after each claim still keeps one actor per bucket.
        #[test]
        fn a_member_disagreeing_on_the_assignment_never_makes_two_actors(
            ops in proptest::collection::vec(op(), 1..400)
        ) {
            let mut model = Model::new(true);
            model.apply(&Op::Start(0));
            model.apply(&Op::Start(REPLICAS - 1));
            for op in &ops {
                model.apply(op);
                model.assert_one_actor_per_bucket(op);
            }
            model.settle();
        }
    }

    fn peer(name: &str, held: BucketSet, ready: bool) -> Peer {
        Peer {
            name: name.into(),
            held,
            ready,
        }
    }

    /// A member alone in the ring, acting on every bucket.
    fn alone(name: &str, t: Instant) -> Handover {
        let mut h = Handover::new(name);
        h.observed(&[], t);
        h.caches_ready(BucketSet::ALL, t);
        h.observed(&[], t);
        h.written(h.lease_content());
        h.observed(&[], t);
        h.caches_ready(BucketSet::ALL, t);
        assert_eq!(h.active(), BucketSet::ALL);
        h
    }

    #[test]
    fn a_bucket_is_claimed_once_cached_and_acted_on_only_after_a_write_and_a_read() {
        let t = Instant::now();
        let mut h = Handover::new("a");
        assert_eq!(h.lease_content(), BucketSet::EMPTY);
        h.observed(&[], t);
        assert_eq!(h.target(), BucketSet::ALL, "alone, every bucket is ours");
        assert!(!h.ready());
        assert_eq!(
            h.lease_content(),
            BucketSet::EMPTY,
            "nothing cached: no claim"
        );
        let low: BucketSet = (0..128).map(Bucket).collect();
        h.caches_ready(low, t);
        assert!(
            !h.ready(),
            "not ready before the caches hold the whole share"
        );
        assert_eq!(h.uncached(), BucketSet::ALL.difference(&low));
        h.caches_ready(BucketSet::ALL, t);
        assert!(h.ready());
        h.observed(&[], t);
        assert_eq!(h.lease_content(), BucketSet::ALL, "claimed");
        assert!(h.active().is_empty());
        // Caches ready but nothing written: still nothing acted on.
        assert!(h.caches_ready(BucketSet::ALL, t).is_empty());
        h.written(BucketSet::ALL);
        h.observed(&[], t);
        assert_eq!(h.confirmed(), BucketSet::ALL);
        assert!(
            h.active().is_empty(),
            "not acted on before the caches are checked"
        );
        let acquired = h.caches_ready(BucketSet::ALL, t + Duration::from_secs(1));
        assert_eq!(acquired.len(), BUCKETS);
        assert_eq!(acquired[0].1, Duration::from_secs(1));
        assert_eq!(h.active(), BucketSet::ALL);
    }

    #[test]
    fn a_newcomer_gets_its_share_once_ready_and_the_holder_releases_after_its_work() {
        let t = Instant::now();
        let mut old = alone("old", t);
        let mut new = Handover::new("new");
        new.observed(&[peer("old", BucketSet::ALL, true)], t);
        let moving = new.target();
        assert!(!moving.is_empty());
        assert!(new.lease_content().is_empty(), "everything is held by old");

        // Until the newcomer's caches hold its share, the holder keeps everything.
        let changes = old.observed(&[peer("new", BucketSet::EMPTY, false)], t);
        assert!(changes.releasing.is_empty());
        assert_eq!(old.active(), BucketSet::ALL);

        new.caches_ready(moving, t);
        assert!(new.ready());
        // The holder sees the newcomer ready: its buckets start releasing, one has work in
        // flight.
        let changes = old.observed(&[peer("new", BucketSet::EMPTY, true)], t);
        assert_eq!(changes.releasing, moving);
        assert_eq!(old.active(), BucketSet::ALL.difference(&moving));
        let busy = moving.iter().next().expect("a moving bucket");
        let released = old.drained(|b| b != busy, t);
        assert_eq!(released.len(), moving.len() - 1);
        assert!(
            old.lease_content().contains(busy),
            "not acknowledged while busy"
        );
        new.observed(&[peer("old", old.lease_content(), true)], t);
        assert_eq!(
            new.lease_content(),
            moving.difference(&[busy].into_iter().collect())
        );
        old.drained(|_| true, t);
        assert!(!old.lease_content().contains(busy));
        new.observed(&[peer("old", old.lease_content(), true)], t);
        assert_eq!(new.lease_content(), moving);
    }

    #[test]
    fn a_member_whose_caches_lag_past_its_grace_lets_the_others_take_its_share() {
        let t = Instant::now();
        let grace = Duration::from_secs(60);
        let mut sick = Handover::new("sick").with_grace(grace);
        let mut healthy = alone("healthy", t);
        sick.observed(&[peer("healthy", BucketSet::ALL, true)], t);
        let share = sick.target();
        sick.caches_ready(share, t);
        assert!(sick.ready());
        healthy.observed(&[peer("sick", BucketSet::EMPTY, true)], t);
        healthy.drained(|_| true, t);
        assert_eq!(healthy.active(), BucketSet::ALL.difference(&share));

        // The sick member claimed one bucket of its share, then its lists start failing
        // (another replica's buckets join its target and never reach its caches).
        let kept = share.iter().next().expect("a bucket");
        let kept_set: BucketSet = [kept].into_iter().collect();
        sick.caches_ready(kept_set, t);
        assert!(sick.ready(), "within the grace");
        sick.caches_ready(kept_set, t + grace);
        assert!(!sick.ready(), "past the grace");
        assert_eq!(sick.uncached(), share.difference(&kept_set));
        sick.observed(&[peer("healthy", healthy.lease_content(), true)], t + grace);
        assert!(
            sick.lease_content().is_empty(),
            "a member that is not ready claims nothing"
        );

        // The healthy member takes the whole share but what the sick one holds.
        healthy.observed(&[peer("sick", kept_set, false)], t + grace);
        assert_eq!(healthy.target(), BucketSet::ALL);
        let claims = healthy.lease_content().difference(&healthy.active());
        assert_eq!(claims, share.difference(&kept_set));
    }

    #[test]
    fn a_member_not_ready_gives_back_what_it_confirmed_but_cannot_cache() {
        let t = Instant::now();
        let grace = Duration::from_secs(60);
        let mut h = Handover::new("a").with_grace(grace);
        h.observed(&[], t);
        h.caches_ready(BucketSet::ALL, t);
        h.observed(&[], t);
        h.written(h.lease_content());
        h.observed(&[], t);
        assert_eq!(h.confirmed(), BucketSet::ALL);
        // Before they are acted on, the caches lose the upper half (a watch restarted and its
        // list keeps failing).
        let low: BucketSet = (0..128).map(Bucket).collect();
        h.caches_ready(low, t);
        assert_eq!(h.active(), low);
        assert_eq!(
            h.lease_content(),
            BucketSet::ALL,
            "within the grace: still held"
        );
        h.caches_ready(low, t + grace);
        assert!(!h.ready());
        assert_eq!(
            h.lease_content(),
            low,
            "the upper half given back, unacted on"
        );
        assert_eq!(h.active(), low, "what it acts on it keeps");
    }

    #[test]
    fn two_claimants_that_see_each_other_both_back_off() {
        let t = Instant::now();
        let mut a = Handover::new("a");
        a.observed(&[], t);
        a.caches_ready(BucketSet::ALL, t);
        a.observed(&[], t);
        a.written(a.lease_content());
        let changes = a.observed(&[peer("b", BucketSet::ALL, true)], t);
        assert_eq!(changes.backed_off, a.target());
        assert!(a.confirmed().is_empty() && a.lease_content().is_empty());
    }
}
