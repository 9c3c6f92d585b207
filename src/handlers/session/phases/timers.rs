//! Deadlines: the start timeout, the enforced session timeout and the inactivity stop, and when to
//! look again for each.

use super::*;

impl<'o, 'a> PlanBuilder<'o, 'a> {
    /// While Creating: fail after the start timeout, counted from the Job's creation (or, with
    /// no Job yet, from the run's start), or from Kueue's admission when the Job was queued.
    pub(super) fn wait_for_start(&mut self) {
        let since = self
            .observed
            .job
            .and_then(|j| j.metadata.creation_timestamp.clone())
            .map(|t| t.0)
            .unwrap_or_else(|| self.run_start());
        let since = self.admitted_at().map_or(since, |at| at.max(since));
        if self.start_deadline_passed(since) {
            let message = format!(
                "runner did not start within {}s",
                self.observed.start_timeout.as_secs()
            );
            self.fail(reasons::START_TIMEOUT, message);
        } else {
            let deadline = since + signed(self.observed.start_timeout);
            self.requeue(until(self.observed.now, deadline));
        }
    }

    pub(super) fn start_deadline_passed(&self, since: Timestamp) -> bool {
        self.observed.now >= since + signed(self.observed.start_timeout)
    }

    /// While Running with a live runner: the inactivity stop, else the timers.
    pub(super) fn keep_running(&mut self, runner: &Runner) {
        let Some(idle_for) = self.inactivity_deadline_passed() else {
            if self.observed.service_uid.is_none() && matches!(runner, Runner::Job(_)) {
                // Deleted behind our back: the platform reaches the agent only through it.
                // (The original operator's pod has a Service of its own, owned by the pod.)
                self.child(ChildEffect::EnsureService);
            }
            self.apply_live_changes();
            return self.schedule_running_timers();
        };
        let message = format!("stopped after {}s without activity", idle_for.as_secs());
        self.status.stopped_reason = Some(StoppedReason::Inactivity);
        self.condition(types::READY, false, reasons::INACTIVITY_TIMEOUT, &message);
        self.notes.push(Note {
            warning: false,
            reason: reasons::INACTIVITY_TIMEOUT.into(),
            message: message.clone(),
        });
        self.enter(Phase::Stopping, &message, false);
        self.end_run(runner);
        self.end_service();
        self.session(SessionEffect::RequestInactivityStop);
        self.requeue(POLL_WHILE_WAITING);
    }

    /// While Running: look again when the inactivity timeout or the token refresh falls due.
    pub(super) fn schedule_running_timers(&mut self) {
        let now = self.observed.now;
        if let Some(timeout) = self.observed.inactivity_timeout {
            let due = self.last_activity() + signed(timeout);
            self.requeue(until(now, due));
        }
        match self.observed.token_refreshed_at {
            Some(at) => {
                let due = at + signed(self.observed.token_refresh_after);
                if now >= due {
                    self.child(ChildEffect::RefreshToken);
                    self.requeue(self.observed.token_refresh_after);
                } else {
                    self.requeue(until(now, due));
                }
            }
            // The Secret is missing (deleted behind our back): provision it again.
            None => self.child(ChildEffect::EnsureIdentity),
        }
    }

    /// The runner's last activity; a run that waited in Kueue's queue counts as active when
    /// admitted (time in the queue is not idle time).
    pub(super) fn last_activity(&self) -> Timestamp {
        let status = &self.status;
        let last = status
            .last_activity_time
            .as_ref()
            .or(status.start_time.as_ref())
            .or(self.observed.session.metadata.creation_timestamp.as_ref())
            .map(|t| t.0)
            .unwrap_or(self.observed.now);
        self.admitted_at().map_or(last, |at| at.max(last))
    }

    /// `Some(idle time)` when the session has been idle at least its inactivity timeout.
    pub(super) fn inactivity_deadline_passed(&self) -> Option<Duration> {
        let timeout = self.observed.inactivity_timeout?;
        let idle = until(self.last_activity(), self.observed.now);
        (idle >= timeout).then_some(idle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::session::phases::test_support::*;

    #[test]
    fn pending_that_cannot_start_within_the_start_timeout_fails() {
        let mut s = in_phase(Phase::Pending, None);
        s.status.as_mut().unwrap().start_time = Some(Time(at(0)));
        let foreign = {
            let mut j = job(0, None);
            j.controller = Some("uid-of-an-earlier-session".into());
            j
        };
        let waiting = plan(&observe(&s, Some(&foreign), vec![], 599));
        assert_eq!(waiting.status.phase, Phase::Pending);
        let late = plan(&observe(&s, None, vec![], 600));
        assert_eq!(late.status.phase, Phase::Failed);
        assert_eq!(
            condition(&late, types::READY).reason.as_deref(),
            Some(reasons::START_TIMEOUT)
        );
    }

    #[test]
    fn a_session_first_reached_long_after_its_creation_has_the_whole_start_timeout() {
        let s = session("demo");
        let mut observed = observe(&s, None, vec![], 700);
        observed.pending_since = Some(at(700));
        let claimed = plan(&observed);
        assert_eq!(claimed.status.phase, Phase::Creating, "started, not failed");

        observed.platform.runner_secret = false;
        let waiting = plan(&observed);
        assert_eq!(waiting.status.phase, Phase::Pending);
        assert_eq!(waiting.requeue_after, Some(START_TIMEOUT));
        let mut late = observe(&s, None, vec![], 1300);
        late.pending_since = Some(at(700));
        late.platform.runner_secret = false;
        assert_eq!(plan(&late).status.phase, Phase::Failed);
    }

    #[test]
    fn runner_not_started_within_start_timeout_fails_and_its_job_goes_after_the_write() {
        let s = in_phase(Phase::Creating, None);
        let j = job(0, None);
        let p = unschedulable_pod(1);
        let plan = plan(&observe(&s, Some(&j), vec![&p], 600));
        assert_eq!(plan.status.phase, Phase::Failed);
        assert_eq!(
            condition(&plan, types::READY).reason.as_deref(),
            Some(reasons::START_TIMEOUT)
        );
        assert_eq!(plan.children, vec![delete_job()]);
    }

    #[test]
    fn idle_running_session_writes_its_stop_then_deletes_the_job_then_annotates() {
        let s = in_phase(Phase::Running, None);
        let j = job(0, None);
        let p = running_pod(1);
        let mut observed = observe(&s, Some(&j), vec![&p], 100);
        observed.inactivity_timeout = Some(Duration::from_secs(60));
        let plan = plan(&observed);
        assert_eq!(plan.status.phase, Phase::Stopping);
        assert_eq!(plan.status.stopped_reason, Some(StoppedReason::Inactivity));
        assert_eq!(
            condition(&plan, types::READY).reason.as_deref(),
            Some(reasons::INACTIVITY_TIMEOUT)
        );
        assert!(
            plan.notes
                .iter()
                .any(|n| n.reason == reasons::INACTIVITY_TIMEOUT)
        );
        assert_eq!(plan.children, vec![delete_job()]);
        assert_eq!(plan.session, vec![SessionEffect::RequestInactivityStop]);
    }

    #[test]
    fn recent_activity_postpones_the_inactivity_stop() {
        let mut s = in_phase(Phase::Running, None);
        s.status.as_mut().unwrap().last_activity_time = Some(Time(at(80)));
        let j = job(0, None);
        let p = running_pod(1);
        let mut observed = observe(&s, Some(&j), vec![&p], 100);
        observed.inactivity_timeout = Some(Duration::from_secs(60));
        let plan = plan(&observed);
        assert_eq!(plan.status.phase, Phase::Running);
        assert_eq!(plan.requeue_after, Some(Duration::from_secs(40)));
    }

    #[test]
    fn creating_with_no_job_is_bounded_by_the_start_timeout() {
        let s = in_phase(Phase::Creating, None);
        let plan = plan(&observe(
            &s,
            None,
            vec![],
            START_TIMEOUT.as_secs() as i64 + 1,
        ));
        assert_eq!(plan.status.phase, Phase::Failed);
        assert_eq!(
            condition(&plan, types::READY).reason.as_deref(),
            Some(reasons::START_TIMEOUT)
        );
    }

    #[test]
    fn without_enforcement_the_timeout_is_advisory() {
        let s = in_phase(Phase::Creating, None);
        let plan = plan(&observe(&s, None, vec![], 400));
        assert_eq!(plan.status.phase, Phase::Creating, "300 s are not a limit");
        let run = created_run(&plan).expect("the Job is made again");
        assert_eq!(run.deadline_seconds, None, "no activeDeadlineSeconds");
    }
}
