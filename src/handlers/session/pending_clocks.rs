//! The Pending clocks of sessions: since when each Pending session has waited for its run, as
//! this replica counts it. The start timeout bounds a Pending session from there.
//!
//! Invariants: a clock starts when this replica first reconciles a session in Pending, never at
//! the session's creation (time spent waiting for the operator, in an outage or behind a
//! start-up backlog, is not the session's); it belongs to one session object (its UID) and
//! one Pending stint, and stops as soon as the session is seen in any other phase. Per
//! replica: a replica that takes a session over starts its clock afresh (generous, never early).

use agentic_crds::Phase;
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use k8s_openapi::jiff::Timestamp;

/// One running clock.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PendingClock {
    uid: String,
    since: Timestamp,
}

/// The Pending clocks, by `(namespace, session)`; cheap to clone.
#[derive(Clone, Default)]
pub struct PendingClocks {
    entries: std::sync::Arc<DashMap<(String, String), PendingClock>>,
}

impl PendingClocks {
    /// Reads the clock of `namespace/session` (UID `uid`) seen in `phase` at `now`: started
    /// now if it was not running, `None` (and stopped) outside Pending.
    pub fn read(
        &self,
        namespace: &str,
        session: &str,
        uid: &str,
        phase: Phase,
        now: Timestamp,
    ) -> Option<Timestamp> {
        let key = (namespace.to_string(), session.to_string());
        if phase != Phase::Pending {
            self.entries.remove(&key);
            return None;
        }
        let started = PendingClock {
            uid: uid.to_string(),
            since: now,
        };
        match self.entries.entry(key) {
            Entry::Vacant(vacant) => Some(vacant.insert(started).since),
            Entry::Occupied(mut occupied) => {
                if occupied.get().uid != uid {
                    occupied.insert(started);
                }
                Some(occupied.get().since)
            }
        }
    }

    /// Forgets every session of a namespace `leaving` says this replica no longer holds.
    pub fn forget_namespaces(&self, leaving: impl Fn(&str) -> bool) {
        self.entries.retain(|(namespace, _), _| !leaving(namespace));
    }

    /// Forgets `namespace/session` (it was deleted).
    pub fn forget(&self, namespace: &str, session: &str) {
        self.entries
            .remove(&(namespace.to_string(), session.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_767_225_600 + second).unwrap()
    }

    #[test]
    fn a_clock_starts_at_first_sight_in_pending_and_keeps_its_start() {
        let clocks = PendingClocks::default();
        assert_eq!(
            clocks.read("ns", "s", "u1", Phase::Pending, at(700)),
            Some(at(700))
        );
        assert_eq!(
            clocks.read("ns", "s", "u1", Phase::Pending, at(900)),
            Some(at(700))
        );
    }

    #[test]
    fn any_other_phase_stops_it_and_the_next_pending_stint_starts_afresh() {
        let clocks = PendingClocks::default();
        clocks.read("ns", "s", "u1", Phase::Pending, at(10));
        assert_eq!(clocks.read("ns", "s", "u1", Phase::Creating, at(20)), None);
        assert!(clocks.entries.is_empty());
        assert_eq!(
            clocks.read("ns", "s", "u1", Phase::Pending, at(500)),
            Some(at(500)),
            "a restart's Pending"
        );
    }

    #[test]
    fn a_session_recreated_under_the_same_name_gets_its_own_clock() {
        let clocks = PendingClocks::default();
        clocks.read("ns", "s", "u1", Phase::Pending, at(10));
        assert_eq!(
            clocks.read("ns", "s", "u2", Phase::Pending, at(400)),
            Some(at(400))
        );
    }

    #[test]
    fn forgetting_stops_the_clocks_of_a_session_or_of_leaving_namespaces() {
        let clocks = PendingClocks::default();
        clocks.read("a", "s", "u1", Phase::Pending, at(10));
        clocks.read("b", "s", "u2", Phase::Pending, at(10));
        clocks.read("c", "s", "u3", Phase::Pending, at(10));
        clocks.forget("a", "s");
        clocks.forget_namespaces(|namespace| namespace == "b");
        assert_eq!(clocks.entries.len(), 1);
        assert_eq!(
            clocks.read("c", "s", "u3", Phase::Pending, at(99)),
            Some(at(10))
        );
    }
}
