//! The member loop: keeps this replica's member Lease, reads the ring, and drives the
//! [`Handover`] state machine, the [`ShardGate`] and the watches' scope.
//!
//! Each round writes the Lease first (renewal and published buckets in one write, bounded by
//! the time left to the renew deadline, as leader election renews) and then lists the ring
//! (bounded likewise). Rounds run every retry period, when a peer expires in our eyes (so its
//! buckets are taken over then, not up to a retry period later), and at once when the
//! published buckets must change (a claim, an acknowledgement). A replica that cannot write
//! its Lease within the renew deadline, or finds another holder in it, steps down: it stops
//! acting on every bucket and the operator exits (it restarts as a fresh member).

use std::time::Duration;

use agentic_crds::keys;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{DeleteParams, ListParams, Preconditions};
use kube::{Api, Client};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::buckets::{Bucket, BucketSet};
use super::gate::ShardGate;
use super::handover::{Changes, Handover};
use super::members::{self, MemberLease, Members};
use super::selector::server_filters;
use crate::leader::{LeaderElector, LeaseTiming, LostLease};
use crate::observability::events::EventPublisher;
use crate::observability::events::Note;
use crate::observability::metrics::Metrics;

/// Shortest pause between two rounds run back to back.
const MIN_ROUND_GAP: Duration = Duration::from_millis(20);
/// A member Lease unchanged this many lease durations is deleted (its replica is long gone:
/// pods of a Deployment get new names, so their Leases would pile up).
const GC_AFTER_LEASE_DURATIONS: u32 = 4;
/// A ready member whose caches have not held part of its target for this many lease durations
/// publishes itself not ready, so the others take that part over.
const UNCACHED_GRACE_LEASE_DURATIONS: u32 = 4;

/// Who this replica is in which ring.
#[derive(Debug, Clone)]
pub struct Membership {
    /// The operator's namespace (where member Leases live).
    pub namespace: String,
    /// The ring (label value).
    pub ring: String,
    /// This replica's identity (the pod name).
    pub identity: String,
    /// Lease timing (the `--leader-elect-*` flags).
    pub timing: LeaseTiming,
}

/// One replica's membership; see the module docs.
pub struct Coordinator {
    membership: Membership,
    client: Client,
    elector: LeaderElector,
    leases: Api<Lease>,
    members: Members,
    handover: Handover,
    gate: ShardGate,
    metrics: Metrics,
    events: EventPublisher,
    /// What the last successful write published: held buckets, readiness.
    written: Option<(BucketSet, bool)>,
    /// The scope the API server's filtering was last probed with.
    probed: Option<BucketSet>,
    /// When the first live peer expires in our eyes unless it renews (as of the last read).
    next_expiry: Option<Instant>,
}

impl Coordinator {
    /// A member of `membership.ring` that has not joined yet.
    pub fn new(
        membership: Membership,
        client: Client,
        gate: ShardGate,
        metrics: Metrics,
        events: EventPublisher,
    ) -> Self {
        let lease_name = members::lease_name(&membership.identity);
        let elector = LeaderElector::new(
            client.clone(),
            &membership.namespace,
            &lease_name,
            membership.identity.clone(),
            membership.timing,
        )
        .with_labels(
            [(
                keys::OPERATOR_RING_LABEL.to_string(),
                membership.ring.clone(),
            )]
            .into(),
        );
        Coordinator {
            leases: Api::namespaced(client.clone(), &membership.namespace),
            handover: Handover::new(membership.identity.clone())
                .with_grace(membership.timing.lease_duration * UNCACHED_GRACE_LEASE_DURATIONS),
            membership,
            client,
            elector,
            members: Members::default(),
            gate,
            metrics,
            events,
            written: None,
            probed: None,
            next_expiry: None,
        }
    }

    /// Takes the member Lease (holding nothing) and runs rounds until the ring has been read
    /// once, so the scope the caches must hold is known. `false` if `shutdown` came first.
    pub async fn join(&mut self, shutdown: &CancellationToken) -> Result<bool, LostLease> {
        self.elector
            .set_annotation(keys::HELD_BUCKETS_ANNOTATION, BucketSet::EMPTY.encode());
        self.elector
            .set_annotation(keys::CACHES_READY_ANNOTATION, false.to_string());
        tracing::info!(
            identity = self.membership.identity,
            ring = self.membership.ring,
            lease = self.elector.name(),
            "joining the ring"
        );
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(false),
            () = self.elector.acquire() => {}
        }
        self.written = Some((BucketSet::EMPTY, false));
        loop {
            if self.round().await? {
                break;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(false),
                () = tokio::time::sleep(self.membership.timing.retry_period) => {}
            }
        }
        tracing::info!(
            members = self.handover.members(),
            target = %self.handover.target(),
            "joined the ring"
        );
        Ok(true)
    }

    /// Rounds until `resign` (then releases the Lease: every bucket at once) or until the
    /// Lease is lost (then stops acting on everything and returns why).
    pub async fn run(mut self, resign: CancellationToken) -> Result<(), LostLease> {
        let retry = self.membership.timing.retry_period;
        let mut next_round = Instant::now() + retry;
        loop {
            let deadline = self.deadline();
            tokio::select! {
                _ = resign.cancelled() => {
                    self.resign().await;
                    return Ok(());
                }
                () = tokio::time::sleep_until(next_round.min(deadline)) => {}
                () = self.gate.changed() => {
                    self.settle(Instant::now());
                    if self.publish_pending() {
                        next_round = next_round.min(Instant::now() + MIN_ROUND_GAP);
                    }
                    continue;
                }
            }
            let result = self.round().await;
            if let Err(lost) = result {
                self.step_down(lost);
                return Err(lost);
            }
            next_round = if self.publish_pending() {
                Instant::now() + MIN_ROUND_GAP
            } else {
                Instant::now() + retry
            };
            // A peer that stopped renewing is taken over the moment it expires, not up to a
            // retry period later.
            if let Some(expiry) = self.next_expiry.take() {
                next_round = next_round.min(expiry.max(Instant::now() + MIN_ROUND_GAP));
            }
        }
    }

    /// The instant this replica must step down at if no renewal succeeds before it.
    fn deadline(&self) -> Instant {
        self.elector.renewed_at().unwrap_or_else(Instant::now)
            + self.membership.timing.renew_deadline
    }

    /// Whether the Lease must be written again (claims, acknowledgements or a change of
    /// readiness not yet published).
    fn publish_pending(&self) -> bool {
        self.written != Some(self.published())
    }

    /// What the next write publishes.
    fn published(&self) -> (BucketSet, bool) {
        (self.handover.lease_content(), self.handover.ready())
    }

    /// One round: write, then read. `Ok(true)` when the ring was read.
    async fn round(&mut self) -> Result<bool, LostLease> {
        let now = Instant::now();
        let deadline = self.deadline();
        if now >= deadline {
            return Err(LostLease::RenewDeadlinePassed);
        }
        let (content, ready) = self.published();
        self.elector
            .set_annotation(keys::HELD_BUCKETS_ANNOTATION, content.encode());
        self.elector
            .set_annotation(keys::CACHES_READY_ANNOTATION, ready.to_string());
        match self.elector.attempt(deadline - now).await {
            Ok(true) => {
                self.handover.written(content);
                self.written = Some((content, ready));
            }
            Ok(false) => return Err(LostLease::TakenOver),
            Err(error) => {
                tracing::warn!(%error, "could not renew the member Lease");
                return Ok(false);
            }
        }
        let left = self.deadline().saturating_duration_since(Instant::now());
        let listed = tokio::time::timeout(
            left,
            self.leases.list(
                &ListParams::default().labels(&members::ring_selector(&self.membership.ring)),
            ),
        )
        .await;
        let leases = match listed {
            Ok(Ok(list)) => list.items,
            Ok(Err(error)) => {
                tracing::warn!(%error, "could not read the ring's member Leases");
                return Ok(false);
            }
            Err(_) => {
                tracing::warn!(after = ?left, "reading the ring's member Leases timed out");
                return Ok(false);
            }
        };
        let now = Instant::now();
        let seen = self.members.observe(&leases, self.elector.name(), now);
        self.next_expiry = seen
            .iter()
            .filter_map(|m| m.expires_in)
            .min()
            .map(|d| now + d);
        let changes = self.handover.observed(&members::peers(&seen), now);
        self.report(&changes);
        self.settle(now);
        self.collect_garbage(&seen);
        Ok(true)
    }

    /// Local transitions (no request): deactivate releasing buckets, release the idle ones,
    /// activate confirmed ones whose caches are ready; then publish the scope and gauges.
    fn settle(&mut self, now: Instant) {
        self.gate.set_active(self.handover.active());
        let gate = self.gate.clone();
        let released = self.handover.drained(|b| gate.is_idle(b), now);
        let was_ready = self.handover.ready();
        let acquired = self.handover.caches_ready(self.gate.cache_ready(), now);
        self.gate.set_active(self.handover.active());
        let uncached = self.handover.uncached();
        if self.handover.ready() != was_ready {
            if was_ready {
                tracing::warn!(
                    buckets = %uncached,
                    count = uncached.len(),
                    "caches still lack part of this replica's share: not ready, the other members take it over"
                );
            } else {
                tracing::info!("caches hold this replica's share: ready for it");
            }
        }
        self.record("released", &released);
        self.record("acquired", &acquired);
        if !released.is_empty() {
            self.gate
                .released(released.iter().map(|(b, _)| *b).collect());
        }
        if !acquired.is_empty() {
            self.gate
                .acquired(acquired.iter().map(|(b, _)| *b).collect());
        }
        self.gate.set_scope(self.handover.scope());
        let families = self.metrics.families();
        families
            .shard
            .buckets_owned
            .set(self.handover.active().len() as i64);
        families.shard.members.set(self.handover.members() as i64);
        families
            .shard
            .member_ready
            .set(i64::from(self.handover.ready()));
        families.shard.buckets_uncached.set(uncached.len() as i64);
        self.probe_server_filtering();
    }

    /// Logs, counts and announces (an Event on the member Lease) acquisitions and releases.
    fn record(&self, direction: &'static str, buckets: &[(Bucket, Duration)]) {
        if buckets.is_empty() {
            return;
        }
        let families = self.metrics.families();
        for (_, took) in buckets {
            families
                .shard
                .handovers
                .with_label_values(&[direction])
                .inc();
            families
                .shard
                .handover_duration
                .with_label_values(&[direction])
                .observe(took.as_secs_f64());
        }
        let set: BucketSet = buckets.iter().map(|(b, _)| *b).collect();
        let longest = buckets.iter().map(|(_, d)| *d).max().unwrap_or_default();
        let (message, reason) = match direction {
            "acquired" => ("shard buckets acquired", "BucketsAcquired"),
            _ => ("shard buckets released", "BucketsReleased"),
        };
        tracing::info!(
            buckets = %set,
            count = set.len(),
            owned = self.handover.active().len(),
            longest_ms = longest.as_millis() as u64,
            "{message}"
        );
        let note = Note {
            warning: false,
            reason: reason.into(),
            message: format!(
                "{} {direction} {} bucket(s) ({set}); it now reconciles {} of 256",
                self.membership.identity,
                set.len(),
                self.handover.active().len()
            ),
        };
        let regarding = ObjectReference {
            api_version: Some("coordination.k8s.io/v1".into()),
            kind: Some("Lease".into()),
            name: Some(self.elector.name().to_string()),
            namespace: Some(self.membership.namespace.clone()),
            ..Default::default()
        };
        let events = self.events.clone();
        tokio::spawn(async move {
            if let Err(error) = events.publish_about(&regarding, &note).await {
                tracing::debug!(%error, "could not publish a handover Event");
            }
        });
    }

    fn report(&self, changes: &Changes) {
        if !changes.releasing.is_empty() {
            tracing::info!(
                buckets = %changes.releasing,
                count = changes.releasing.len(),
                "shard buckets releasing"
            );
        }
        if !changes.backed_off.is_empty() {
            tracing::warn!(
                buckets = %changes.backed_off,
                "shard claims withdrawn: another member holds or claims them"
            );
        }
    }

    /// Asks (in the background) whether the API server filters by the current scope's
    /// selector, once per scope.
    fn probe_server_filtering(&mut self) {
        let scope = self.handover.scope();
        if self.probed == Some(scope) || scope.is_empty() {
            return;
        }
        self.probed = Some(scope);
        let client = self.client.clone();
        let gauge = self.metrics.families().shard.server_filtering.clone();
        tokio::spawn(async move {
            match server_filters(&client, scope).await {
                Some(filters) => {
                    if i64::from(filters) != gauge.get() {
                        tracing::info!(server_side = filters, "shard selector probed");
                    }
                    gauge.set(i64::from(filters));
                }
                None => tracing::debug!("could not probe the shard selector"),
            }
        });
    }

    /// Deletes member Leases unchanged for [`GC_AFTER_LEASE_DURATIONS`] lease durations (in the
    /// background; guarded by their resourceVersion).
    fn collect_garbage(&self, seen: &[MemberLease]) {
        let limit = self.membership.timing.lease_duration * GC_AFTER_LEASE_DURATIONS;
        for lease in seen.iter().filter(|l| !l.live && l.unchanged_for >= limit) {
            let api = self.leases.clone();
            let name = lease.lease.clone();
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    resource_version: lease.resource_version.clone(),
                    uid: None,
                }),
                ..Default::default()
            };
            tokio::spawn(async move {
                match api.delete(&name, &params).await {
                    Ok(_) => tracing::info!(lease = name, "deleted an expired member Lease"),
                    Err(error) => {
                        tracing::debug!(lease = name, %error, "could not delete an expired member Lease")
                    }
                }
            });
        }
    }

    /// Stops acting on every bucket (the engine is dropped right after).
    fn step_down(&mut self, lost: LostLease) {
        self.gate.set_active(BucketSet::EMPTY);
        tracing::error!(reason = %lost, "lost the member Lease: stopping");
    }

    /// Clean shutdown (the engine has drained): leave the ring by deleting the member Lease
    /// (releasing it if the delete fails), so the other members take this replica's buckets at
    /// their next round.
    async fn resign(&mut self) {
        self.gate.set_active(BucketSet::EMPTY);
        let held = self.handover.active().union(&self.handover.releasing());
        self.record(
            "released",
            &held.iter().map(|b| (b, Duration::ZERO)).collect::<Vec<_>>(),
        );
        let name = self.elector.name().to_string();
        let deleted = tokio::time::timeout(
            Duration::from_secs(5),
            self.leases.delete(&name, &DeleteParams::default()),
        )
        .await;
        match deleted {
            Ok(Ok(_)) => {
                tracing::info!(lease = name, buckets = %held, "left the ring: member Lease deleted");
                return;
            }
            Ok(Err(error)) => tracing::warn!(%error, "could not delete the member Lease"),
            Err(_) => tracing::warn!("timed out deleting the member Lease"),
        }
        self.elector
            .set_annotation(keys::HELD_BUCKETS_ANNOTATION, BucketSet::EMPTY.encode());
        match tokio::time::timeout(Duration::from_secs(5), self.elector.release()).await {
            Ok(Ok(())) => tracing::info!(buckets = %held, "released the member Lease"),
            Ok(Err(error)) => tracing::warn!(%error, "could not release the member Lease"),
            Err(_) => tracing::warn!("timed out releasing the member Lease"),
        }
    }
}
