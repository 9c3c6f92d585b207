//! Leader election on a `coordination.k8s.io/v1` Lease, with client-go's semantics: a holder
//! renews every retry period; a candidate takes over a Lease whose record has not changed for a
//! lease duration (measured on its own clock, so clock skew between replicas does not matter);
//! a leader that cannot renew within the renew deadline steps down; a clean shutdown releases
//! the Lease so a standby takes over at its next retry instead of waiting for expiry.
//!
//! Every attempt is bounded in time: a request that neither answers nor fails (a half-open
//! connection; the client has no read timeout) must not keep a deposed leader working. A renewal
//! may take only the time left until the renew deadline, counted from the start of the last
//! attempt that succeeded (the Lease was written after that instant, so a standby, which waits a
//! whole lease duration from when it saw that write, cannot take over before the leader has
//! stepped down). A campaign attempt may take at most the renew deadline.
//!
//! Written against the Lease API directly (a few dozen lines) rather than through a crate: the
//! maintained options either pull in a second Kubernetes client or lack release-on-shutdown.
//!
//! The same code keeps a sharded replica's member Lease (`crate::shard`): there the Lease is
//! the replica's own, its labels name the ring and an annotation publishes its buckets, written
//! with every renewal ([`LeaderElector::set_annotation`], [`LeaderElector::attempt`]).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};
use tokio::time::Instant;

/// Timing of the election (`--leader-elect-*` flags).
#[derive(Debug, Clone, Copy)]
pub struct LeaseTiming {
    /// How long a Lease is honoured without renewal.
    pub lease_duration: Duration,
    /// How long a leader keeps trying to renew before stepping down.
    pub renew_deadline: Duration,
    /// Interval between attempts.
    pub retry_period: Duration,
}

/// Why an election step failed (transient: the next attempt retries).
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// The attempt had no answer within its time budget.
    #[error("Lease {namespace}/{name}: no answer within {after:?}")]
    TimedOut {
        /// The attempt's budget.
        after: Duration,
        /// Namespace of the Lease.
        namespace: String,
        /// Name of the Lease.
        name: String,
    },
    /// Reading or writing the Lease failed.
    #[error("{action} Lease {namespace}/{name}: {source}")]
    Api {
        /// What was attempted.
        action: &'static str,
        /// Namespace of the Lease.
        namespace: String,
        /// Name of the Lease.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Every write of the attempt met a conflict, yet each read after it showed the Lease
    /// ours or free (writes racing ours, none of them another holder's).
    #[error("Lease {namespace}/{name}: {attempts} writes in a row met a conflict")]
    Contended {
        /// Writes tried.
        attempts: u32,
        /// Namespace of the Lease.
        namespace: String,
        /// Name of the Lease.
        name: String,
    },
}

/// Reads (and writes) of one attempt after conflicts, before it gives up until the next.
const CONFLICT_REREADS: u32 = 3;

/// Why a leader stopped holding the Lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostLease {
    /// Another replica holds it now.
    TakenOver,
    /// No renewal succeeded within the renew deadline.
    RenewDeadlinePassed,
}

impl std::fmt::Display for LostLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LostLease::TakenOver => "another replica holds it",
            LostLease::RenewDeadlinePassed => "no renewal succeeded within the renew deadline",
        })
    }
}

/// One replica's view of the election.
pub struct LeaderElector {
    api: Api<Lease>,
    namespace: String,
    name: String,
    identity: String,
    timing: LeaseTiming,
    /// The last record seen and when (on our clock) it was first seen.
    observed: Option<(LeaseSpec, Instant)>,
    /// When the last attempt that wrote the Lease as ours started.
    renewed_at: Option<Instant>,
    /// Set on the Lease with every write.
    labels: BTreeMap<String, String>,
    /// Set on the Lease with every write.
    annotations: BTreeMap<String, String>,
}

impl LeaderElector {
    /// An elector for Lease `namespace/name`, competing as `identity`.
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: String,
        timing: LeaseTiming,
    ) -> Self {
        LeaderElector {
            api: Api::namespaced(client, namespace),
            namespace: namespace.into(),
            name: name.into(),
            identity,
            timing,
            observed: None,
            renewed_at: None,
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
        }
    }

    /// Labels every write sets on the Lease.
    #[must_use]
    pub fn with_labels(mut self, labels: BTreeMap<String, String>) -> Self {
        self.labels = labels;
        self
    }

    /// An annotation the next writes set on the Lease (a renewal, an acquisition, a release).
    pub fn set_annotation(&mut self, key: &str, value: String) {
        self.annotations.insert(key.to_string(), value);
    }

    /// When the last attempt that wrote the Lease as ours started (after [`acquire`](Self::acquire)
    /// or a successful [`attempt`](Self::attempt)).
    pub fn renewed_at(&self) -> Option<Instant> {
        self.renewed_at
    }

    /// The Lease's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// This replica's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Retries until this replica holds the Lease. Each attempt may take at most the renew
    /// deadline.
    pub async fn acquire(&mut self) {
        loop {
            let started = Instant::now();
            match self.attempt(self.timing.renew_deadline).await {
                Ok(true) => {
                    self.renewed_at = Some(started);
                    return;
                }
                Ok(false) => {}
                Err(error) => tracing::warn!(%error, "leader election attempt failed"),
            }
            tokio::time::sleep(self.timing.retry_period).await;
        }
    }

    /// Renews every retry period; returns when leadership is lost: another replica took the
    /// Lease, or no renewal succeeded by the renew deadline. Returns at that deadline at the
    /// latest, however long the API server takes to answer (or not).
    pub async fn hold(&mut self) -> LostLease {
        let mut renewed_at = self.renewed_at.take().unwrap_or_else(Instant::now);
        loop {
            let deadline = renewed_at + self.timing.renew_deadline;
            tokio::time::sleep_until((Instant::now() + self.timing.retry_period).min(deadline))
                .await;
            let started = Instant::now();
            let left = deadline.saturating_duration_since(started);
            if left.is_zero() {
                return LostLease::RenewDeadlinePassed;
            }
            match self.attempt(left).await {
                Ok(true) => renewed_at = started,
                Ok(false) => return LostLease::TakenOver,
                Err(error) => tracing::warn!(%error, "could not renew the leader Lease"),
            }
        }
    }

    /// One attempt to acquire or renew, bounded by `budget`: abandoned (its requests dropped)
    /// when it runs out. `Ok(true)`: the Lease was written as ours (and [`renewed_at`](Self::renewed_at)
    /// is this attempt's start); `Ok(false)`: another holder has it.
    pub async fn attempt(&mut self, budget: Duration) -> Result<bool, LeaderError> {
        let started = Instant::now();
        match tokio::time::timeout(budget, self.try_acquire_or_renew()).await {
            Ok(Ok(true)) => {
                self.renewed_at = Some(started);
                Ok(true)
            }
            Ok(result) => result,
            Err(_) => Err(LeaderError::TimedOut {
                after: budget,
                namespace: self.namespace.clone(),
                name: self.name.clone(),
            }),
        }
    }

    /// Gives the Lease up (if held) so a standby can take over at once.
    pub async fn release(&mut self) -> Result<(), LeaderError> {
        let Some(mut lease) = self.get().await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(&self.identity) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        self.decorate(&mut lease.metadata);
        self.replace(&lease).await?;
        Ok(())
    }

    async fn get(&self) -> Result<Option<Lease>, LeaderError> {
        self.api
            .get_opt(&self.name)
            .await
            .map_err(|source| LeaderError::Api {
                action: "get",
                namespace: self.namespace.clone(),
                name: self.name.clone(),
                source,
            })
    }

    /// Writes `lease`; `Ok(false)` on a conflict (it changed since it was read).
    async fn replace(&self, lease: &Lease) -> Result<bool, LeaderError> {
        match self
            .api
            .replace(&self.name, &PostParams::default(), lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(source) => Err(LeaderError::Api {
                action: "update",
                namespace: self.namespace.clone(),
                name: self.name.clone(),
                source,
            }),
        }
    }

    /// One attempt; `Ok(true)` when this replica holds the Lease afterwards. A conflict says
    /// only that the Lease changed since it was read, perhaps by our own earlier write that was
    /// abandoned at its time-out and landed late: the Lease is read again and judged afresh,
    /// so only a read showing another live holder makes it `Ok(false)`.
    async fn try_acquire_or_renew(&mut self) -> Result<bool, LeaderError> {
        for _ in 0..CONFLICT_REREADS {
            if let Some(held) = self.try_write().await? {
                return Ok(held);
            }
        }
        Err(LeaderError::Contended {
            attempts: CONFLICT_REREADS,
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        })
    }

    /// Reads the Lease and writes it as ours if it is ours or free: `Some(true)` written,
    /// `Some(false)` held by another live replica, `None` on a conflict.
    async fn try_write(&mut self) -> Result<Option<bool>, LeaderError> {
        let now = MicroTime(Timestamp::now());
        let duration_seconds =
            i32::try_from(self.timing.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let Some(mut lease) = self.get().await? else {
            let mut lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    namespace: Some(self.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(duration_seconds),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            self.decorate(&mut lease.metadata);
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Some(true)),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(None),
                Err(source) => Err(LeaderError::Api {
                    action: "create",
                    namespace: self.namespace.clone(),
                    name: self.name.clone(),
                    source,
                }),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let changed = self.observed.as_ref().is_none_or(|(seen, _)| *seen != spec);
        if changed {
            self.observed = Some((spec.clone(), Instant::now()));
        }
        let holder = spec.holder_identity.as_deref().unwrap_or_default();
        let ours = holder == self.identity;
        let honoured_for = spec
            .lease_duration_seconds
            .map_or(self.timing.lease_duration, |s| {
                Duration::from_secs(u64::try_from(s).unwrap_or(0))
            });
        let expired = self
            .observed
            .as_ref()
            .is_some_and(|(_, seen_at)| seen_at.elapsed() >= honoured_for);
        if !ours && !holder.is_empty() && !expired {
            return Ok(Some(false));
        }
        let mut next = spec.clone();
        if !ours {
            next.acquire_time = Some(now.clone());
            next.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        next.holder_identity = Some(self.identity.clone());
        next.lease_duration_seconds = Some(duration_seconds);
        next.renew_time = Some(now);
        lease.spec = Some(next);
        self.decorate(&mut lease.metadata);
        Ok(self.replace(&lease).await?.then_some(true))
    }

    /// Sets this elector's labels and annotations on a Lease about to be written.
    fn decorate(&self, metadata: &mut ObjectMeta) {
        if !self.labels.is_empty() {
            metadata
                .labels
                .get_or_insert_with(Default::default)
                .extend(self.labels.clone());
        }
        if !self.annotations.is_empty() {
            metadata
                .annotations
                .get_or_insert_with(Default::default)
                .extend(self.annotations.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    const TIMING: LeaseTiming = LeaseTiming {
        lease_duration: Duration::from_secs(15),
        renew_deadline: Duration::from_secs(10),
        retry_period: Duration::from_secs(2),
    };

    /// An API server that accepts connections and never answers (a half-open network), and
    /// how many connections it accepted.
    async fn silent_api_server() -> (Client, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("its address"));
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                held.push(stream);
            }
        });
        let config = kube::Config::new(url.parse().expect("a URL"));
        (Client::try_from(config).expect("a client"), accepted)
    }

    /// An API server holding one Lease, held by "me", that answers the first update with 409
    /// Conflict after applying a write of `late_writer` (when that is "me": our earlier
    /// renewal, abandoned at its time-out, landing late). Counts the updates.
    async fn api_server_where_a_late_write_lands(late_writer: &str) -> (Client, Arc<AtomicUsize>) {
        use http_body_util::BodyExt;
        use hyper::body::Bytes;
        use hyper::service::service_fn;

        let late_writer = late_writer.to_string();
        let lease = move |version: u64| {
            let holder = if version == 1 {
                "me"
            } else {
                late_writer.as_str()
            };
            serde_json::json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": "lease", "namespace": "ns", "resourceVersion": version.to_string()},
                "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
                         "renewTime": "2026-01-01T00:00:00.000000Z"},
            })
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("its address"));
        let state = Arc::new(parking_lot::Mutex::new(1u64));
        let updates = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&updates);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (state, counter, lease) =
                    (Arc::clone(&state), Arc::clone(&counter), lease.clone());
                tokio::spawn(async move {
                    let service = service_fn(
                        move |request: hyper::Request<hyper::body::Incoming>| {
                            let (state, counter, lease) =
                                (Arc::clone(&state), Arc::clone(&counter), lease.clone());
                            async move {
                                let method = request.method().clone();
                                let body = request.into_body().collect().await?.to_bytes();
                                let (status, answer) = if method == hyper::Method::PUT {
                                    let sent: serde_json::Value =
                                        serde_json::from_slice(&body).unwrap_or_default();
                                    let mut version = state.lock();
                                    let first = counter.fetch_add(1, Ordering::SeqCst) == 0;
                                    if first {
                                        *version += 1; // our late write landed first
                                    }
                                    if sent["metadata"]["resourceVersion"] == version.to_string() {
                                        *version += 1;
                                        (200, lease(*version))
                                    } else {
                                        (
                                            409,
                                            serde_json::json!({
                                                "kind": "Status", "apiVersion": "v1", "status": "Failure",
                                                "reason": "Conflict", "code": 409,
                                                "message": "the object has been modified",
                                            }),
                                        )
                                    }
                                } else {
                                    (200, lease(*state.lock()))
                                };
                                Ok::<_, hyper::Error>(
                                    hyper::Response::builder()
                                        .status(status)
                                        .header("content-type", "application/json")
                                        .body(http_body_util::Full::new(Bytes::from(
                                            answer.to_string(),
                                        )))
                                        .expect("a response"),
                                )
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        let config = kube::Config::new(url.parse().expect("a URL"));
        (Client::try_from(config).expect("a client"), updates)
    }

    #[tokio::test]
    async fn a_conflict_with_our_own_late_write_is_no_takeover() {
        let (client, updates) = api_server_where_a_late_write_lands("me").await;
        let mut elector = LeaderElector::new(client, "ns", "lease", "me".into(), TIMING);
        let renewed = elector.attempt(TIMING.renew_deadline).await;
        assert!(
            matches!(renewed, Ok(true)),
            "a 409 while the Lease still names us was read as {renewed:?}"
        );
        assert_eq!(
            updates.load(Ordering::SeqCst),
            2,
            "read again, then renewed"
        );
    }

    #[tokio::test]
    async fn a_conflict_with_another_holders_write_is_a_takeover() {
        let (client, updates) = api_server_where_a_late_write_lands("someone-else").await;
        let mut elector = LeaderElector::new(client, "ns", "lease", "me".into(), TIMING);
        let renewed = elector.attempt(TIMING.renew_deadline).await;
        assert!(matches!(renewed, Ok(false)), "{renewed:?}");
        assert_eq!(
            updates.load(Ordering::SeqCst),
            1,
            "read again: another holder's"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewal_that_never_answers_steps_down_at_the_renew_deadline() {
        let (client, _) = silent_api_server().await;
        let mut elector = LeaderElector::new(client, "ns", "lease", "me".into(), TIMING);
        let renewed_at = Instant::now();
        elector.renewed_at = Some(renewed_at);
        let held = tokio::time::timeout(TIMING.lease_duration, elector.hold()).await;
        assert_eq!(
            held.ok(),
            Some(LostLease::RenewDeadlinePassed),
            "still leading a lease duration after the last renewal"
        );
        assert_eq!(renewed_at.elapsed(), TIMING.renew_deadline);
    }

    #[tokio::test(start_paused = true)]
    async fn a_campaign_attempt_that_never_answers_is_abandoned_and_retried() {
        let (client, accepted) = silent_api_server().await;
        let mut elector = LeaderElector::new(client, "ns", "lease", "me".into(), TIMING);
        let campaign = tokio::time::timeout(
            (TIMING.renew_deadline + TIMING.retry_period) * 3,
            elector.acquire(),
        );
        assert!(campaign.await.is_err(), "nobody answered, yet it leads");
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            3,
            "each attempt gave up its hung request and tried afresh"
        );
    }
}
