//! Refusals to create a runner Job's pod (SPEC §7.3): the Job controller's `FailedCreate`
//! Events (a quota, a LimitRange, an admission policy or an SCC said no), kept by session until
//! its reconcile has decided on them.
//!
//! Invariants: a refusal belongs to one Job (its UID); one of another Job never stands for the
//! current one's. For one Job the first refusal's time is kept (the bound on waiting counts
//! from it) and the latest message (what the API server says now).

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use k8s_openapi::jiff::Timestamp;

/// The API server refused to create the pod of a session's Job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRefusal {
    /// UID of the Job whose pod was refused.
    pub job_uid: String,
    /// What the API server said (the Event's message).
    pub message: String,
    /// When the first refusal of that Job was seen.
    pub since: Timestamp,
}

/// The pod refusals of sessions, by `(namespace, session)`; cheap to clone.
#[derive(Clone, Default)]
pub struct PodRefusals {
    entries: std::sync::Arc<DashMap<(String, String), PodRefusal>>,
}

impl PodRefusals {
    /// Records `refusal` of `namespace/session`'s Job; returns whether it tells something new
    /// (another Job, or another message).
    pub fn record(&self, namespace: &str, session: &str, refusal: PodRefusal) -> bool {
        let key = (namespace.to_string(), session.to_string());
        match self.entries.entry(key) {
            Entry::Vacant(vacant) => {
                vacant.insert(refusal);
                true
            }
            Entry::Occupied(mut occupied) => {
                let known = occupied.get_mut();
                if known.job_uid != refusal.job_uid {
                    *known = refusal;
                    return true;
                }
                known.since = known.since.min(refusal.since);
                if known.message == refusal.message {
                    return false;
                }
                known.message = refusal.message;
                true
            }
        }
    }

    /// The refusal recorded for `namespace/session`'s Job with `job_uid`, if any.
    pub fn of(&self, namespace: &str, session: &str, job_uid: &str) -> Option<PodRefusal> {
        self.entries
            .get(&(namespace.to_string(), session.to_string()))
            .filter(|r| r.job_uid == job_uid)
            .map(|r| r.clone())
    }

    /// Forgets every session of a namespace `leaving` says this replica no longer holds.
    pub fn forget_namespaces(&self, leaving: impl Fn(&str) -> bool) {
        self.entries.retain(|(namespace, _), _| !leaving(namespace));
    }

    /// Forgets `namespace/session` (its run ended, or it was deleted).
    pub fn forget(&self, namespace: &str, session: &str) {
        self.entries
            .remove(&(namespace.to_string(), session.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(job: &str, message: &str, second: i64) -> PodRefusal {
        PodRefusal {
            job_uid: job.into(),
            message: message.into(),
            since: Timestamp::from_second(1_767_225_600 + second).unwrap(),
        }
    }

    #[test]
    fn the_first_time_and_the_latest_message_of_one_job_are_kept() {
        let refusals = PodRefusals::default();
        assert!(refusals.record("ns", "s", refusal("j1", "quota", 10)));
        assert!(
            !refusals.record("ns", "s", refusal("j1", "quota", 20)),
            "a repeat"
        );
        assert!(refusals.record("ns", "s", refusal("j1", "quota, again", 30)));
        assert_eq!(
            refusals.of("ns", "s", "j1"),
            Some(refusal("j1", "quota, again", 10))
        );
    }

    #[test]
    fn another_jobs_refusal_replaces_and_never_stands_for_the_current_one() {
        let refusals = PodRefusals::default();
        refusals.record("ns", "s", refusal("j1", "quota", 10));
        assert_eq!(refusals.of("ns", "s", "j2"), None);
        assert!(refusals.record("ns", "s", refusal("j2", "policy", 50)));
        assert_eq!(
            refusals.of("ns", "s", "j2"),
            Some(refusal("j2", "policy", 50))
        );
        assert_eq!(refusals.of("ns", "s", "j1"), None);
        refusals.forget("ns", "s");
        assert_eq!(refusals.of("ns", "s", "j2"), None);
    }
}
