//! Following the runner: started, cannot start (image, container, refused pod), the original
//! operator's runner.

use super::*;

impl<'o, 'a> PlanBuilder<'o, 'a> {
    pub(super) fn runner_started(&mut self) {
        let now = self.observed.now;
        if let Some(Time(started)) = self.status.start_time {
            self.observations
                .push(Observation::Startup(until(started, now)));
        }
        if let Some(Time(created)) = self
            .observed
            .job
            .and_then(|j| j.metadata.creation_timestamp.clone())
        {
            self.observations
                .push(Observation::PodCreation(until(created, now)));
        }
        // Whatever failed on the way here (a refused creation) has been overcome.
        self.condition(
            types::RUNNER_IDENTITY_READY,
            true,
            reasons::PROVISIONED,
            messages::IDENTITY_PROVISIONED,
        );
        self.condition(
            types::JOB_CREATED,
            true,
            reasons::PROVISIONED,
            messages::JOB_CREATED,
        );
        self.condition(
            types::POD_SCHEDULED,
            true,
            reasons::RUNNING,
            messages::POD_SCHEDULED,
        );
        self.condition(
            types::RUNNER_STARTED,
            true,
            reasons::RUNNING,
            messages::CONTAINER_RUNNING,
        );
        self.condition(
            types::READY,
            true,
            reasons::RUNNING,
            messages::SESSION_RUNNING,
        );
        self.enter(Phase::Running, messages::RUNNER_RUNNING, false);
        let generation = self.observed.session.metadata.generation;
        if self.status.observed_generation == generation {
            // The runner started with the spec as it is: that is what it was told.
            let started = drift::drift(&self.observed.session.spec, &self.status);
            self.record_synced(&started, false);
        }
        self.schedule_running_timers();
    }

    /// Creating or Running, the run carried by `runner` whose pod says `state`.
    pub(super) fn follow(&mut self, runner: Runner, state: RunnerState) {
        let creating = self.status.phase == Phase::Creating;
        match state {
            RunnerState::Died { exit_code, detail } => self.fail_from_runner(exit_code, &detail),
            RunnerState::Finished => self.complete(runner),
            RunnerState::Running if creating => self.runner_started(),
            RunnerState::Unschedulable { reason, message } if creating => {
                self.condition(types::POD_SCHEDULED, false, &reason, &message);
                self.wait_for_start();
            }
            RunnerState::CannotStart {
                reason,
                message,
                fail_at,
            } if creating => self.cannot_start(&reason, message, fail_at),
            RunnerState::Waiting if creating => {
                match (&runner, self.observed.pod_refusal.clone()) {
                    (Runner::Job(uid), Some(refusal))
                        if refusal.job_uid == *uid && self.pods_of_job(uid).is_empty() =>
                    {
                        self.pod_refused(refusal)
                    }
                    _ => self.wait_for_start(),
                }
            }
            _ if creating => self.wait_for_start(),
            _ => self.keep_running(&runner),
        }
    }

    /// Ends the run carried by `runner`: its Job, or the original operator's pod, goes.
    pub(super) fn end_run(&mut self, runner: &Runner) {
        match runner {
            Runner::Job(uid) => self.child(ChildEffect::DeleteJob { uid: uid.clone() }),
            Runner::OriginalPod(name) => self.child(ChildEffect::DeletePods(vec![name.clone()])),
        }
    }

    /// While Creating: a container of the runner pod cannot start. Said at once (the
    /// `RunnerStarted` condition and an Event); the session fails at `fail_at`.
    pub(super) fn cannot_start(&mut self, reason: &str, message: String, fail_at: Timestamp) {
        if self.observed.now >= fail_at {
            return self.fail(reason, message);
        }
        let news = !self.condition_says(types::RUNNER_STARTED, reason, &message);
        self.condition(types::RUNNER_STARTED, false, reason, &message);
        if news {
            self.notes.push(Note {
                warning: true,
                reason: reason.to_string(),
                message,
            });
        }
        self.requeue(until(self.observed.now, fail_at));
    }

    /// While Creating: the API server refuses the Job's pod. Said at once (`PodCreated=False`
    /// with its message, an Event); the session fails once the refusal has lasted
    /// [`POD_REFUSAL_GRACE`].
    pub(super) fn pod_refused(&mut self, refusal: PodRefusal) {
        let message = format!("the runner pod cannot be created: {}", refusal.message);
        let fail_at = refusal.since + signed(POD_REFUSAL_GRACE);
        if self.observed.now >= fail_at {
            self.condition(types::POD_CREATED, false, reasons::FAILED_CREATE, &message);
            return self.fail(reasons::FAILED_CREATE, message);
        }
        let news = !self.condition_says(types::POD_CREATED, reasons::FAILED_CREATE, &message);
        self.condition(types::POD_CREATED, false, reasons::FAILED_CREATE, &message);
        if news {
            self.notes.push(Note {
                warning: true,
                reason: reasons::FAILED_CREATE.into(),
                message,
            });
        }
        self.requeue(until(self.observed.now, fail_at));
    }

    /// Whether condition `type_` is already False with `reason` and `message`.
    pub(super) fn condition_says(&self, type_: &str, reason: &str, message: &str) -> bool {
        self.status.conditions.iter().any(|c| {
            c.type_ == type_
                && c.status == ConditionStatus::False
                && c.reason.as_deref() == Some(reason)
                && c.message.as_deref() == Some(message)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::session::phases::test_support::*;

    #[test]
    fn creating_session_whose_runner_runs_becomes_running_and_records_startup() {
        let s = in_phase(Phase::Creating, None);
        let j = job(2, None);
        let p = running_pod(3);
        let plan = plan(&observe(&s, Some(&j), vec![&p], 10));
        assert_eq!(plan.status.phase, Phase::Running);
        assert_eq!(
            condition(&plan, types::RUNNER_STARTED).status,
            ConditionStatus::True
        );
        assert_eq!(condition(&plan, types::READY).status, ConditionStatus::True);
        assert!(
            plan.observations
                .contains(&Observation::Startup(Duration::from_secs(10)))
        );
        assert!(
            plan.observations
                .contains(&Observation::PodCreation(Duration::from_secs(8)))
        );
    }

    #[test]
    fn a_running_sessions_conditions_are_all_the_operators_own_texts() {
        // Claimed in Pending, then running: the steady state most cached sessions are in, whose
        // conditions then borrow every text instead of holding copies.
        let mut s = session("demo");
        let claimed = plan(&observe(&s, None, vec![], 0));
        assert_eq!(claimed.status.phase, Phase::Creating);
        s.status = Some(claimed.status);
        let running = plan(&observe(&s, Some(&job(2, None)), vec![&running_pod(3)], 10));
        assert_eq!(running.status.phase, Phase::Running);
        assert!(running.status.conditions.len() >= 8);
        for c in &running.status.conditions {
            let texts = [Some(&c.type_), c.reason.as_ref(), c.message.as_ref()];
            for text in texts.into_iter().flatten() {
                assert!(
                    agentic_crds::condition::known_text(text).is_some(),
                    "{text:?} of {} is not one of the operator's texts",
                    c.type_
                );
            }
        }
        let message = running.status.message.as_deref();
        assert_eq!(message, Some(messages::RUNNER_RUNNING));
    }

    #[test]
    fn unschedulable_runner_is_reported_with_the_schedulers_message() {
        let s = in_phase(Phase::Creating, None);
        let j = job(2, None);
        let p = unschedulable_pod(3);
        let plan = plan(&observe(&s, Some(&j), vec![&p], 10));
        assert_eq!(plan.status.phase, Phase::Creating);
        let scheduled = condition(&plan, types::POD_SCHEDULED);
        assert_eq!(scheduled.status, ConditionStatus::False);
        assert_eq!(scheduled.reason.as_deref(), Some("Unschedulable"));
        assert!(
            scheduled
                .message
                .as_deref()
                .unwrap()
                .contains("Insufficient cpu")
        );
        assert_eq!(
            plan.requeue_after,
            Some(START_TIMEOUT - Duration::from_secs(8))
        );
    }

    #[test]
    fn an_image_that_cannot_be_pulled_is_said_at_once_and_fails_after_the_grace() {
        let s = in_phase(Phase::Creating, None);
        let j = job(2, None);
        let p = waiting_pod(3, RUNNER_CONTAINER, "ErrImagePull");
        let early = plan(&observe(&s, Some(&j), vec![&p], 10));
        assert_eq!(early.status.phase, Phase::Creating);
        let started = condition(&early, types::RUNNER_STARTED);
        assert_eq!(started.reason.as_deref(), Some("ErrImagePull"));
        assert!(
            started
                .message
                .as_deref()
                .is_some_and(|m| m.starts_with("ambient-code-runner waiting: ErrImagePull - "))
        );
        assert_eq!(early.notes.len(), 1, "a Warning Event");
        assert_eq!(
            early.requeue_after,
            Some(IMAGE_PULL_GRACE - Duration::from_secs(7))
        );
        let late = plan(&observe(&s, Some(&j), vec![&p], 63));
        assert_eq!(late.status.phase, Phase::Failed);
        assert_eq!(
            condition(&late, types::READY).reason.as_deref(),
            Some("ErrImagePull")
        );
        assert_eq!(late.children, vec![delete_job()]);
    }

    #[test]
    fn a_container_that_can_never_start_fails_at_once_even_an_init_container() {
        let s = in_phase(Phase::Creating, None);
        let j = job(2, None);
        for (container, reason) in [
            (RUNNER_CONTAINER, "CreateContainerConfigError"),
            ("init-hydrate", "InvalidImageName"),
        ] {
            let mut p = waiting_pod(3, container, reason);
            if container != RUNNER_CONTAINER {
                let status = p.status.as_mut().unwrap();
                status.init_container_statuses = status.container_statuses.take();
            }
            let plan = plan(&observe(&s, Some(&j), vec![&p], 4));
            assert_eq!(plan.status.phase, Phase::Failed, "{reason}");
            let ready = condition(&plan, types::READY);
            assert_eq!(ready.reason.as_deref(), Some(reason));
            assert!(ready.message.as_deref().unwrap().starts_with(container));
        }
    }

    #[test]
    fn a_refused_pod_is_said_at_once_and_fails_once_the_refusal_lasts() {
        let s = in_phase(Phase::Creating, None);
        let j = job(2, None);
        let refusal = PodRefusal {
            job_uid: JOB_UID.into(),
            message: "pods \"demo-job-x\" is forbidden: exceeded quota: none".into(),
            since: at(5),
        };
        let mut observed = observe(&s, Some(&j), vec![], 10);
        observed.pod_refusal = Some(refusal.clone());
        let early = plan(&observed);
        assert_eq!(early.status.phase, Phase::Creating);
        let created = condition(&early, types::POD_CREATED);
        assert_eq!(created.status, ConditionStatus::False);
        assert_eq!(created.reason.as_deref(), Some(reasons::FAILED_CREATE));
        assert!(
            created
                .message
                .as_deref()
                .unwrap()
                .contains("exceeded quota")
        );
        assert_eq!(early.notes.len(), 1);
        assert_eq!(
            early.requeue_after,
            Some(POD_REFUSAL_GRACE - Duration::from_secs(5))
        );
        let mut late = observe(&s, Some(&j), vec![], 35);
        late.pod_refusal = Some(refusal.clone());
        let late = plan(&late);
        assert_eq!(late.status.phase, Phase::Failed);
        assert_eq!(
            condition(&late, types::READY).reason.as_deref(),
            Some(reasons::FAILED_CREATE)
        );
        // Another Job's refusal never stands for this one's.
        let mut other = observe(&s, Some(&j), vec![], 35);
        other.pod_refusal = Some(PodRefusal {
            job_uid: "another".into(),
            ..refusal
        });
        assert_eq!(plan(&other).status.phase, Phase::Creating);
    }

    #[test]
    fn the_original_operators_runner_is_followed_not_replaced() {
        let s = in_phase(Phase::Running, None);
        let running = original_pod(running_pod(1));
        let plan_running = plan(&observe(&s, None, vec![&running], 5));
        assert_eq!(plan_running.status.phase, Phase::Running, "not JobLost");
        assert!(
            plan_running.children.is_empty(),
            "no Job, no Service of ours beside its own: {:?}",
            plan_running.children
        );
        let finished = original_pod(terminated_pod(1, 0));
        let done = plan(&observe(&s, None, vec![&finished], 9));
        assert_eq!(done.status.phase, Phase::Completed);
        assert_eq!(
            done.children,
            vec![ChildEffect::DeletePods(vec!["demo-runner".into()])]
        );
        let died = original_pod(terminated_pod(1, 3));
        assert_eq!(
            plan(&observe(&s, None, vec![&died], 9)).status.phase,
            Phase::Failed
        );
        let stop = in_phase(Phase::Running, Some(keys::DESIRED_PHASE_STOPPED));
        let stopping = plan(&observe(&stop, None, vec![&running], 9));
        assert_eq!(stopping.status.phase, Phase::Stopping);
        assert_eq!(
            stopping.children,
            vec![ChildEffect::DeletePods(vec!["demo-runner".into()])]
        );
    }

    #[test]
    fn a_restart_waits_for_the_original_operators_pod_and_service() {
        let s = in_phase(Phase::Completed, Some(keys::DESIRED_PHASE_RUNNING));
        let lingering = original_pod(terminated_pod(1, 0));
        let waiting = plan(&observe(&s, None, vec![&lingering], 20));
        assert_eq!(waiting.status.phase, Phase::Completed);
        assert_eq!(
            waiting.children,
            vec![ChildEffect::DeletePods(vec!["demo-runner".into()])]
        );
        let mut observed = observe(&s, None, vec![], 25);
        observed.foreign_service = true;
        let service_left = plan(&observed);
        assert_eq!(
            service_left.status.phase,
            Phase::Completed,
            "its Service goes first"
        );
        assert_eq!(service_left.requeue_after, Some(POLL_WHILE_WAITING));
        assert_eq!(
            plan(&observe(&s, None, vec![], 30)).status.phase,
            Phase::Pending
        );
    }

    #[test]
    fn runner_dying_while_running_fails_the_session_before_the_job_notices() {
        let s = in_phase(Phase::Running, None);
        let j = job(0, None);
        let p = terminated_pod(1, 137);
        let plan = plan(&observe(&s, Some(&j), vec![&p], 5));
        assert_eq!(plan.status.phase, Phase::Failed);
        assert!(plan.status.message.unwrap().contains("137"));
    }
}
