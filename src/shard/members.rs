//! The ring as this replica reads it: which member Leases are live and what each holds.
//!
//! Liveness is judged as leader election judges a leader: a Lease is live while it has a
//! holder and its record (resourceVersion) has changed within its `leaseDurationSeconds`,
//! measured on *our* clock from when we first saw that record (so clock skew between replicas
//! does not matter, and a Lease seen for the first time counts as freshly renewed). A member
//! steps down at its renew deadline, shorter than the lease duration, so a Lease that expired
//! in our eyes belongs to a member that no longer acts.

use std::collections::HashMap;
use std::time::Duration;

use agentic_crds::keys;
use k8s_openapi::api::coordination::v1::Lease;
use kube::ResourceExt;
use tokio::time::Instant;

use super::buckets::BucketSet;
use super::handover::Peer;

/// A member Lease read from the API server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberLease {
    /// The Lease's name.
    pub lease: String,
    /// Its resourceVersion (precondition of a delete).
    pub resource_version: Option<String>,
    /// The member's identity (the holder), if held.
    pub identity: Option<String>,
    /// What it holds (everything, when the annotation is unreadable: never assume less).
    pub held: BucketSet,
    /// Whether its caches hold its share (absent annotation: an older version, ready).
    pub ready: bool,
    /// Whether it counts as a live member.
    pub live: bool,
    /// How long its current record has been unchanged, in our eyes.
    pub unchanged_for: Duration,
    /// While live: how long until it expires in our eyes unless its record changes.
    pub expires_in: Option<Duration>,
}

/// The member Lease name of replica `identity`.
pub fn lease_name(identity: &str) -> String {
    format!("{}{identity}", keys::MEMBER_LEASE_PREFIX)
}

/// The label selector of a ring's member Leases.
pub fn ring_selector(ring: &str) -> String {
    format!("{}={ring}", keys::OPERATOR_RING_LABEL)
}

/// Remembers when each Lease record was first seen.
#[derive(Debug, Default)]
pub struct Members {
    /// Lease name → (resourceVersion, when we first saw it).
    seen: HashMap<String, (String, Instant)>,
}

impl Members {
    /// Reads a list of the ring's Leases taken at `now` (ours, `own`, excluded).
    pub fn observe(&mut self, leases: &[Lease], own: &str, now: Instant) -> Vec<MemberLease> {
        let mut current = HashMap::new();
        let mut members = Vec::new();
        for lease in leases {
            let name = lease.name_any();
            if name == own {
                continue;
            }
            let version = lease.resource_version().unwrap_or_default();
            let first_seen = match self.seen.get(&name) {
                Some((seen, at)) if *seen == version => *at,
                _ => now,
            };
            current.insert(name.clone(), (version.clone(), first_seen));
            let spec = lease.spec.clone().unwrap_or_default();
            let identity = spec.holder_identity.filter(|h| !h.is_empty());
            let honoured_for = Duration::from_secs(
                u64::try_from(spec.lease_duration_seconds.unwrap_or(0)).unwrap_or(0),
            );
            let unchanged_for = now.saturating_duration_since(first_seen);
            let held = lease
                .annotations()
                .get(keys::HELD_BUCKETS_ANNOTATION)
                .map_or(Ok(BucketSet::EMPTY), |text| BucketSet::decode(text))
                .unwrap_or_else(|error| {
                    tracing::warn!(lease = name, %error, "unreadable member Lease: taken as holding every bucket");
                    BucketSet::ALL
                });
            let ready = lease
                .annotations()
                .get(keys::CACHES_READY_ANNOTATION)
                .is_none_or(|value| value != "false");
            let live = identity.is_some() && unchanged_for < honoured_for;
            members.push(MemberLease {
                lease: name,
                resource_version: lease.resource_version(),
                live,
                expires_in: live.then(|| honoured_for - unchanged_for),
                identity,
                held,
                ready,
                unchanged_for,
            });
        }
        self.seen = current;
        members
    }
}

/// The live members among `leases`, as the handover protocol takes them.
pub fn peers(leases: &[MemberLease]) -> Vec<Peer> {
    leases
        .iter()
        .filter(|l| l.live)
        .filter_map(|l| {
            Some(Peer {
                name: l.identity.clone()?,
                held: l.held,
                ready: l.ready,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use kube::api::ObjectMeta;

    use super::*;
    use crate::shard::buckets::Bucket;

    fn lease(name: &str, version: &str, holder: Option<&str>, held: Option<&str>) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(lease_name(name)),
                resource_version: Some(version.into()),
                annotations: held
                    .map(|h| [(keys::HELD_BUCKETS_ANNOTATION.to_string(), h.to_string())].into()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_string),
                lease_duration_seconds: Some(15),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn a_lease_is_live_until_unchanged_for_its_duration_in_our_eyes() {
        let mut members = Members::default();
        let t0 = Instant::now();
        let held: BucketSet = [Bucket(1)].into_iter().collect();
        let a = lease("a", "1", Some("a"), Some(&held.encode()));
        let seen = members.observe(std::slice::from_ref(&a), "own", t0);
        assert!(seen[0].live, "first seen: as if just renewed");
        assert_eq!(seen[0].held, held);
        let seen = members.observe(
            std::slice::from_ref(&a),
            "own",
            t0 + Duration::from_secs(14),
        );
        assert!(seen[0].live);
        assert_eq!(seen[0].expires_in, Some(Duration::from_secs(1)));
        let seen = members.observe(
            std::slice::from_ref(&a),
            "own",
            t0 + Duration::from_secs(15),
        );
        assert!(!seen[0].live, "unchanged for its lease duration");
        assert_eq!(seen[0].expires_in, None);
        assert!(peers(&seen).is_empty());
        // Renewed: live again, from when we saw the new record.
        let renewed = lease("a", "2", Some("a"), Some(&held.encode()));
        let seen = members.observe(&[renewed], "own", t0 + Duration::from_secs(16));
        assert!(seen[0].live);
        assert_eq!(
            peers(&seen),
            vec![Peer {
                name: "a".into(),
                held,
                ready: true,
            }]
        );
    }

    #[test]
    fn a_member_is_ready_unless_its_lease_says_otherwise() {
        let mut members = Members::default();
        let now = Instant::now();
        let mut not_ready = lease("warming", "1", Some("warming"), None);
        not_ready.metadata.annotations = Some(
            [(
                keys::CACHES_READY_ANNOTATION.to_string(),
                "false".to_string(),
            )]
            .into(),
        );
        let older_version = lease("older", "1", Some("older"), None);
        let readiness: Vec<(String, bool)> =
            peers(&members.observe(&[not_ready, older_version], "own", now))
                .into_iter()
                .map(|p| (p.name, p.ready))
                .collect();
        assert_eq!(
            readiness,
            [("warming".to_string(), false), ("older".to_string(), true)]
        );
    }

    #[test]
    fn released_leases_and_our_own_are_no_peers_and_garbage_holds_everything() {
        let mut members = Members::default();
        let now = Instant::now();
        let seen = members.observe(
            &[
                lease("gone", "1", None, None),
                lease("own", "1", Some("own"), None),
                lease("odd", "1", Some("odd"), Some("not hex")),
                lease("new", "1", Some("new"), None),
            ],
            &lease_name("own"),
            now,
        );
        assert_eq!(seen.len(), 3);
        assert!(!seen[0].live, "released on shutdown");
        assert_eq!(seen[1].held, BucketSet::ALL);
        assert_eq!(seen[2].held, BucketSet::EMPTY);
        assert_eq!(
            peers(&seen).into_iter().map(|p| p.name).collect::<Vec<_>>(),
            vec!["odd", "new"]
        );
    }
}
