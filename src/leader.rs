//! Leader election on a `coordination.k8s.io/v1` Lease, with client-go's semantics: a holder
//! renews every retry period; a candidate takes over a Lease whose record has not changed for a
//! lease duration (measured on its own clock, so clock skew between replicas does not matter);
//! a leader that cannot renew within the renew deadline steps down; a clean shutdown releases
//! the Lease so a standby takes over at its next retry instead of waiting for expiry.
//!
//! Written against the Lease API directly (a few dozen lines) rather than through a crate: the
//! maintained options either pull in a second Kubernetes client or lack release-on-shutdown.

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
        }
    }

    /// This replica's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Retries until this replica holds the Lease.
    pub async fn acquire(&mut self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => return,
                Ok(false) => {}
                Err(error) => tracing::warn!(%error, "leader election attempt failed"),
            }
            tokio::time::sleep(self.timing.retry_period).await;
        }
    }

    /// Renews every retry period; returns when renewal has failed for the renew deadline (or
    /// another replica took the Lease): leadership is lost.
    pub async fn hold(&mut self) {
        let mut last_renewed = Instant::now();
        loop {
            tokio::time::sleep(self.timing.retry_period).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_renewed = Instant::now(),
                Ok(false) => return,
                Err(error) => {
                    tracing::warn!(%error, "could not renew the leader Lease");
                    if last_renewed.elapsed() >= self.timing.renew_deadline {
                        return;
                    }
                }
            }
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

    async fn replace(&self, lease: &Lease) -> Result<bool, LeaderError> {
        match self
            .api
            .replace(&self.name, &PostParams::default(), lease)
            .await
        {
            Ok(_) => Ok(true),
            // Someone else wrote first: not ours this round.
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(source) => Err(LeaderError::Api {
                action: "update",
                namespace: self.namespace.clone(),
                name: self.name.clone(),
                source,
            }),
        }
    }

    /// One attempt; `Ok(true)` when this replica holds the Lease afterwards.
    async fn try_acquire_or_renew(&mut self) -> Result<bool, LeaderError> {
        let now = MicroTime(Timestamp::now());
        let duration_seconds =
            i32::try_from(self.timing.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let Some(mut lease) = self.get().await? else {
            let lease = Lease {
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
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
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
            return Ok(false);
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
        self.replace(&lease).await
    }
}
