//! What Kueue says of a run's Job (ProjectSettings `spec.kueue`): waiting for admission (and
//! why), admitted, or evicted (preempted) after admission. Read from the Job's Workload.

use super::*;
use crate::cache::projections::RunnerWorkload;

/// Kueue's verdict on a Job, from its Workload's conditions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Not admitted: `reason` and `message` are Kueue's (`Pending` with "couldn't assign
    /// flavors ...", `Inadmissible` when the queue is missing or stopped), or the operator's
    /// own while no Workload exists yet.
    Waiting {
        /// Kueue's reason (`Pending`, `Inadmissible`), or [`NO_WORKLOAD_YET`].
        reason: String,
        /// Kueue's message, or [`NO_WORKLOAD_YET_MESSAGE`].
        message: String,
    },
    /// Admitted: Kueue unsuspends the Job.
    Admitted,
    /// Admitted once, then evicted (`Preempted`, or another of Kueue's eviction reasons); the
    /// Job is suspended again.
    Evicted {
        /// Kueue's eviction reason (`Preempted`, ...).
        reason: String,
        /// Kueue's message.
        message: String,
    },
}

/// Reason while a queued Job has no Workload yet.
pub const NO_WORKLOAD_YET: &str = "Queued";
/// Message while a queued Job has no Workload yet.
pub const NO_WORKLOAD_YET_MESSAGE: &str = "waiting for Kueue to queue the runner Job";

/// The verdict of `workload` (`None`: Kueue has not made the Job's Workload yet).
pub fn admission(workload: Option<&RunnerWorkload>) -> Admission {
    let waiting = |reason: &str, message: &str| Admission::Waiting {
        reason: reason.to_string(),
        message: message.to_string(),
    };
    let Some(workload) = workload else {
        return waiting(NO_WORKLOAD_YET, NO_WORKLOAD_YET_MESSAGE);
    };
    let is_true = |type_: &str| {
        workload
            .condition(type_)
            .is_some_and(|c| c.status == "True")
    };
    if let Some(evicted) = workload.condition("Evicted").filter(|c| c.status == "True") {
        return Admission::Evicted {
            reason: evicted.reason.clone(),
            message: evicted.message.clone(),
        };
    }
    if is_true("Admitted") {
        return Admission::Admitted;
    }
    // Not admitted: the reservation's verdict first (why there is no quota), then the
    // admission's (quota reserved, checks pending).
    let verdict = workload
        .condition("QuotaReserved")
        .filter(|c| c.status != "True")
        .or_else(|| workload.condition("Admitted"));
    match verdict {
        Some(c) => waiting(&c.reason, &c.message),
        None => waiting(NO_WORKLOAD_YET, NO_WORKLOAD_YET_MESSAGE),
    }
}

impl<'o, 'a> PlanBuilder<'o, 'a> {
    /// Creating or Running, the current Job `job_uid` suspended by Kueue: waiting for
    /// admission, about to be unsuspended, or preempted.
    pub(super) fn queued(&mut self, admission: Admission) {
        match admission {
            // Kueue would re-admit the same Job, but cannot restore its template on 1.36
            // ("spec.template: field is immutable", seen on the local control plane); a new
            // run's Job sidesteps that, and IS_RESUME follows from whether a runner started.
            Admission::Evicted { reason, message } => self.preempted(&reason, &message),
            Admission::Waiting { reason, message } => self.wait_in_queue(&reason, &message),
            // Kueue unsuspends the Job next; its update brings the session back.
            Admission::Admitted => self.requeue(POLL_WHILE_WAITING),
        }
    }

    /// Creating, the Job not admitted yet: says so (condition, an Event on each change). The
    /// start timeout does not run while queued; `--queue-timeout`, when set, does.
    fn wait_in_queue(&mut self, reason: &str, message: &str) {
        // A preempted run says so until admitted again (why it waits matters more than
        // Kueue's routine "no quota" for its next Job).
        let preempted = self.condition_holds_with_reason(types::QUEUED, reasons::PREEMPTED);
        let news = !preempted && !self.condition_holds_with(types::QUEUED, reason, message);
        if !preempted {
            self.condition(types::QUEUED, true, reason, message);
        }
        if let Some(limit) = self.observed.queue_timeout {
            let deadline = self.queued_since() + signed(limit);
            if self.observed.now >= deadline {
                let message = format!(
                    "not admitted by Kueue within {}s ({reason}: {message})",
                    limit.as_secs()
                );
                return self.fail(reasons::QUEUE_TIMEOUT, message);
            }
            self.requeue(until(self.observed.now, deadline));
        }
        if news {
            self.notes.push(Note {
                warning: false,
                reason: types::QUEUED.into(),
                message: format!("waiting for Kueue: {reason}: {message}"),
            });
        }
        // Kueue's verdict arrives as a Workload event; this is only a safety net.
        self.requeue(Duration::from_secs(60));
    }

    /// Since when the current run waits: the `Queued` condition's turn to True, or the Job's
    /// creation when that is later (a condition left by an earlier run).
    fn queued_since(&self) -> Timestamp {
        let job_created = self
            .observed
            .job
            .and_then(|j| j.metadata.creation_timestamp.as_ref())
            .map(|t| t.0)
            .unwrap_or_else(|| self.run_start());
        self.condition_turned(types::QUEUED, ConditionStatus::True)
            .map_or(job_created, |at| at.max(job_created))
    }

    /// The current run's Job left the queue (Kueue unsuspended it): `Queued` False `Admitted`,
    /// once. Its time is where the start timeout and the inactivity stop count from.
    pub(super) fn note_admission(&mut self) {
        if !self.condition_is(types::QUEUED, ConditionStatus::True) {
            return;
        }
        self.condition(types::QUEUED, false, reasons::ADMITTED, messages::ADMITTED);
        self.notes.push(Note {
            warning: false,
            reason: reasons::ADMITTED.into(),
            message: messages::ADMITTED.into(),
        });
    }

    /// The run ends while its Job waits in the queue (stopped, or failed): `Queued` False
    /// with why, so neither the condition nor `ambient_sessions_queued` counts a wait that is
    /// over. (Its turn to False predates any next run, whose start the timers take instead.)
    pub(super) fn leave_queue(&mut self, reason: &str, message: &str) {
        if self.condition_is(types::QUEUED, ConditionStatus::True) {
            self.condition(types::QUEUED, false, reason, message);
        }
    }

    /// When Kueue admitted the current run's Job: the `Queued` condition's turn to False.
    /// (A condition of an earlier run is older than this run's Job, which the callers take
    /// the later of.)
    pub(super) fn admitted_at(&self) -> Option<Timestamp> {
        self.condition_turned(types::QUEUED, ConditionStatus::False)
    }

    /// When condition `type_` last turned to `status`, if that is its status now.
    fn condition_turned(&self, type_: &str, status: ConditionStatus) -> Option<Timestamp> {
        self.status
            .conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)?
            .last_transition_time
            .as_ref()
            .map(|t| t.0)
    }

    /// Kueue ended the run for a higher-priority session (its Job is suspended, its pods go
    /// with the grace period, so the state sidecar syncs as on a stop). The next run is claimed
    /// in the same guarded write (a new start time: the old Job is then an earlier run's and is
    /// retired once its pods are gone), and is made suspended again, as a resume
    /// (`IS_RESUME=true`).
    fn preempted(&mut self, reason: &str, message: &str) {
        self.condition(types::QUEUED, true, reasons::PREEMPTED, message);
        self.notes.push(Note {
            warning: true,
            reason: reasons::PREEMPTED.into(),
            message: format!("preempted by Kueue ({reason}): {message}"),
        });
        self.condition(types::READY, false, reasons::PREEMPTED, message);
        self.status.start_time = Some(self.now());
        self.enter(Phase::Creating, messages::JOB_CREATED, false);
        self.requeue(POLL_WHILE_WAITING);
    }

    /// Whether condition `type_` is True with this reason.
    fn condition_holds_with_reason(&self, type_: &str, reason: &str) -> bool {
        self.status.conditions.iter().any(|c| {
            c.type_ == type_
                && c.status == ConditionStatus::True
                && c.reason.as_deref() == Some(reason)
        })
    }

    /// Whether condition `type_` is True with exactly this reason and message.
    fn condition_holds_with(&self, type_: &str, reason: &str, message: &str) -> bool {
        self.status.conditions.iter().any(|c| {
            c.type_ == type_
                && c.status == ConditionStatus::True
                && c.reason.as_deref() == Some(reason)
                && c.message.as_deref() == Some(message)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::session::phases::test_support::*;

    const QUOTA: &str = "couldn't assign flavors to pod set main: insufficient unused quota for \
                         pods in flavor default, 1 more needed";

    fn waiting() -> Admission {
        Admission::Waiting {
            reason: "Pending".into(),
            message: QUOTA.into(),
        }
    }

    fn suspended_job() -> RunnerJob {
        let mut j = job(0, None);
        j.suspended = true;
        j
    }

    /// Sets condition `type_` of `s` as if it had turned `holds` at `at(when)`.
    fn set(s: &mut AgenticSession, type_: &str, holds: bool, reason: &str, when: i64) {
        let status = if holds {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        };
        set_condition(
            &mut s.status.as_mut().expect("a status").conditions,
            Condition::new(type_, status, reason, "set by the test"),
            &Time(at(when)),
        );
    }

    #[test]
    fn a_queued_run_says_kueues_reason_and_outlives_the_start_timeout() {
        let s = in_phase(Phase::Creating, None);
        let j = suspended_job();
        let mut observed = observe(&s, Some(&j), vec![], 700);
        observed.queue = Some(waiting());
        let plan = plan(&observed);
        assert_eq!(
            plan.status.phase,
            Phase::Creating,
            "not failed: queue time is not start time"
        );
        let queued = condition(&plan, types::QUEUED);
        assert_eq!(queued.status, ConditionStatus::True);
        assert_eq!(queued.reason.as_deref(), Some("Pending"));
        assert_eq!(queued.message.as_deref(), Some(QUOTA));
        assert!(plan.children.is_empty(), "{:?}", plan.children);
        assert!(
            plan.notes
                .iter()
                .any(|n| n.reason == types::QUEUED && !n.warning)
        );

        // The same verdict again: no second Event.
        let mut again = s.clone();
        again.status = Some(plan.status.clone());
        let mut observed = observe(&again, Some(&j), vec![], 710);
        observed.queue = Some(waiting());
        assert!(super::super::plan(&observed).notes.is_empty());
    }

    #[test]
    fn the_queue_timeout_fails_a_run_kueue_never_admits() {
        let mut s = in_phase(Phase::Creating, None);
        set(&mut s, types::QUEUED, true, "Pending", 100);
        let j = suspended_job();
        let mut observed = observe(&s, Some(&j), vec![], 399);
        observed.queue = Some(waiting());
        observed.queue_timeout = Some(Duration::from_secs(300));
        let waiting_plan = plan(&observed);
        assert_eq!(waiting_plan.status.phase, Phase::Creating);
        assert_eq!(waiting_plan.requeue_after, Some(Duration::from_secs(1)));
        observed.now = at(400);
        let late = plan(&observed);
        assert_eq!(late.status.phase, Phase::Failed);
        assert_eq!(
            condition(&late, types::READY).reason.as_deref(),
            Some(reasons::QUEUE_TIMEOUT)
        );
        assert_eq!(late.children, vec![delete_job()]);
        let queued = condition(&late, types::QUEUED);
        assert_eq!(queued.status, ConditionStatus::False, "the wait is over");
        assert_eq!(queued.reason.as_deref(), Some(reasons::QUEUE_TIMEOUT));
    }

    #[test]
    fn stopping_a_queued_run_ends_its_wait() {
        let mut s = in_phase(Phase::Creating, Some("Stopped"));
        set(&mut s, types::QUEUED, true, "Pending", 100);
        let j = suspended_job();
        let mut observed = observe(&s, Some(&j), vec![], 200);
        observed.queue = Some(waiting());
        let plan = plan(&observed);
        assert_eq!(plan.status.phase, Phase::Stopping);
        assert_eq!(plan.children, vec![delete_job()]);
        let queued = condition(&plan, types::QUEUED);
        assert_eq!(
            queued.status,
            ConditionStatus::False,
            "no longer counted as queued"
        );
        assert_eq!(queued.reason.as_deref(), Some(reasons::STOPPING));
    }

    #[test]
    fn admission_is_said_once_and_starts_the_start_timeout() {
        let mut s = in_phase(Phase::Creating, None);
        set(&mut s, types::QUEUED, true, "Pending", 50);
        let j = job(0, None); // unsuspended by Kueue
        let p = unschedulable_pod(700);
        let plan = plan(&observe(&s, Some(&j), vec![&p], 700));
        assert_eq!(
            plan.status.phase,
            Phase::Creating,
            "the start timeout counts from now"
        );
        let queued = condition(&plan, types::QUEUED);
        assert_eq!(queued.status, ConditionStatus::False);
        assert_eq!(queued.reason.as_deref(), Some(reasons::ADMITTED));
        assert!(plan.notes.iter().any(|n| n.reason == reasons::ADMITTED));
        let late = {
            let mut admitted = s.clone();
            admitted.status = Some(plan.status.clone());
            super::super::plan(&observe(&admitted, Some(&j), vec![&p], 1300))
        };
        assert_eq!(
            late.status.phase,
            Phase::Failed,
            "start timeout from admission (700)"
        );
    }

    #[test]
    fn time_in_the_queue_is_not_idle_time() {
        let mut s = in_phase(Phase::Running, None);
        set(&mut s, types::QUEUED, false, reasons::ADMITTED, 1000);
        let j = job(0, None);
        let p = running_pod(1001);
        let mut observed = observe(&s, Some(&j), vec![&p], 1300);
        observed.inactivity_timeout = Some(Duration::from_secs(600));
        let plan = plan(&observed);
        assert_eq!(
            plan.status.phase,
            Phase::Running,
            "idle since admission (1000), not 0"
        );
        assert_eq!(plan.requeue_after, Some(Duration::from_secs(300)));
    }

    #[test]
    fn a_preempted_run_claims_the_next_which_resumes_in_a_new_job() {
        let mut s = in_phase(Phase::Running, None);
        set(&mut s, types::RUNNER_STARTED, true, reasons::RUNNING, 10);
        let j = suspended_job();
        let mut observed = observe(&s, Some(&j), vec![], 500);
        observed.queue = Some(Admission::Evicted {
            reason: "Preempted".into(),
            message: "Preempted to accommodate a workload of higher priority".into(),
        });
        let preempted = plan(&observed);
        assert_eq!(preempted.status.phase, Phase::Creating);
        assert_eq!(
            preempted.status.start_time,
            Some(Time(at(500))),
            "the next run, claimed"
        );
        assert_eq!(
            condition(&preempted, types::QUEUED).reason.as_deref(),
            Some(reasons::PREEMPTED)
        );
        assert!(preempted.children.is_empty(), "{:?}", preempted.children);
        assert!(
            preempted
                .notes
                .iter()
                .any(|n| n.reason == reasons::PREEMPTED && n.warning)
        );

        // The old Job is an earlier run's now: retired, then the next run is made, as a
        // resume (its runner had started).
        let mut next = s.clone();
        next.status = Some(preempted.status.clone());
        let mut old = job_of_run(0);
        old.suspended = true;
        let retiring = plan(&observe(&next, Some(&old), vec![], 501));
        assert_eq!(retiring.status.phase, Phase::Creating);
        assert_eq!(retiring.children, vec![delete_job()]);
        assert!(created_run(&retiring).is_none());
        let made = plan(&observe(&next, None, vec![], 502));
        let run = created_run(&made).expect("the next run's Job");
        assert!(run.is_resume, "IS_RESUME=true after a preemption");
        assert_eq!(run.started_at, Time(at(500)));
    }

    fn workload(conditions: serde_json::Value) -> RunnerWorkload {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "job-demo-job-ce737", "namespace": "team",
                         "labels": {"kueue.x-k8s.io/job-uid": "job-uid"}},
            "status": {"conditions": conditions}
        }))
        .expect("a workload")
    }

    fn workload_condition(
        type_: &str,
        status: &str,
        reason: &str,
        message: &str,
    ) -> serde_json::Value {
        serde_json::json!({"type": type_, "status": status, "reason": reason, "message": message,
                           "lastTransitionTime": "2026-01-01T00:00:00Z"})
    }

    #[test]
    fn a_workload_is_read_as_waiting_admitted_or_evicted() {
        assert_eq!(
            admission(None),
            Admission::Waiting {
                reason: NO_WORKLOAD_YET.into(),
                message: NO_WORKLOAD_YET_MESSAGE.into()
            }
        );
        let pending = workload(serde_json::json!([workload_condition(
            "QuotaReserved",
            "False",
            "Pending",
            "couldn't assign flavors to pod set main: insufficient quota for pods"
        )]));
        assert_eq!(pending.job_uid(), Some("job-uid"));
        assert_eq!(
            admission(Some(&pending)),
            Admission::Waiting {
                reason: "Pending".into(),
                message: "couldn't assign flavors to pod set main: insufficient quota for pods"
                    .into()
            }
        );
        let admitted = workload(serde_json::json!([
            workload_condition("QuotaReserved", "True", "QuotaReserved", "Quota reserved"),
            workload_condition("Admitted", "True", "Admitted", "The workload is admitted"),
        ]));
        assert_eq!(admission(Some(&admitted)), Admission::Admitted);
        let reserved_only = workload(serde_json::json!([
            workload_condition("QuotaReserved", "True", "QuotaReserved", "Quota reserved"),
            workload_condition("Admitted", "False", "UnsatisfiedChecks", "checks pending"),
        ]));
        assert_eq!(
            admission(Some(&reserved_only)),
            Admission::Waiting {
                reason: "UnsatisfiedChecks".into(),
                message: "checks pending".into()
            }
        );
        // Preempted: evicted stays true while it is queued again, until a new reservation.
        let preempted = workload(serde_json::json!([
            workload_condition(
                "QuotaReserved",
                "False",
                "Pending",
                "Preempted to accommodate ..."
            ),
            workload_condition(
                "Evicted",
                "True",
                "Preempted",
                "Preempted to accommodate ..."
            ),
            workload_condition("Admitted", "False", "NoReservation", "no reservation"),
        ]));
        assert_eq!(
            admission(Some(&preempted)),
            Admission::Evicted {
                reason: "Preempted".into(),
                message: "Preempted to accommodate ...".into()
            }
        );
    }
}
