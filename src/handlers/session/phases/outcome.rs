//! How a run ends: Completed, Failed (from the Job or the runner's exit code) or timed out.

use super::*;

impl<'o, 'a> PlanBuilder<'o, 'a> {
    /// The run finished successfully; its runner goes once that is written.
    pub(super) fn complete(&mut self, runner: Runner) {
        self.end_run(&runner);
        self.end_service();
        self.status.completion_time = Some(self.now());
        self.condition(
            types::JOB_CREATED,
            true,
            reasons::PROVISIONED,
            messages::JOB_CREATED,
        );
        self.condition(
            types::READY,
            false,
            reasons::COMPLETED,
            messages::RUNNER_SUCCEEDED,
        );
        self.enter(Phase::Completed, messages::RUNNER_SUCCEEDED, false);
    }

    pub(super) fn fail_from_job(&mut self, job_uid: &str, job_reason: &str, job_message: &str) {
        if job_reason == "DeadlineExceeded" {
            self.status.stopped_reason = Some(StoppedReason::Timeout);
            let message = format!(
                "session exceeded its timeout of {}s",
                self.observed.session.spec.timeout
            );
            return self.fail(reasons::TIMEOUT, message);
        }
        // Prefer what the runner itself reported.
        if let RunnerState::Died { exit_code, detail } = self.runner_state(job_uid) {
            return self.fail_from_runner(exit_code, &detail);
        }
        let message = format!("runner Job failed: {job_reason}: {job_message}");
        self.fail(reasons::RUNNER_FAILED, message);
    }

    pub(super) fn fail_from_runner(&mut self, exit_code: Option<i32>, detail: &str) {
        let mut message = match exit_code {
            Some(code) => format!("runner exited with code {code}"),
            None => "runner pod failed".to_string(),
        };
        if !detail.is_empty() {
            message = format!("{message}: {detail}");
        }
        let reason = if exit_code == Some(PREREQUISITE_EXIT_CODE) {
            reasons::PREREQUISITE_FAILED
        } else {
            reasons::RUNNER_FAILED
        };
        self.fail(reason, message);
    }

    /// Failed with `reason`; the run's Job (if ours), or the original operator's pod, goes
    /// once that is written.
    pub(super) fn fail(&mut self, reason: &str, message: String) {
        match self.job_view() {
            JobView::Current { uid, state, .. } if state != JobState::Deleting => {
                self.child(ChildEffect::DeleteJob { uid });
            }
            JobView::Missing => {
                if let Some(pod) = self.original_runner() {
                    self.end_run(&Runner::OriginalPod(pod.name_any()));
                }
            }
            _ => {}
        }
        self.end_service();
        self.status.completion_time = Some(self.now());
        self.condition(types::READY, false, reason, &message);
        self.leave_queue(reason, &message);
        if self.status.phase != Phase::Failed {
            self.notes.push(Note {
                warning: true,
                reason: reason.to_string(),
                message: message.clone(),
            });
        }
        self.status.phase = Phase::Failed;
        self.status.message = Some(message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::session::phases::test_support::*;

    #[test]
    fn completed_job_completes_the_session_and_goes_after_the_write() {
        for phase in [Phase::Creating, Phase::Running] {
            let s = in_phase(phase, None);
            let j = job(0, Some(("Complete", "CompletionsReached")));
            let plan = plan(&observe(&s, Some(&j), vec![], 5));
            assert_eq!(plan.status.phase, Phase::Completed);
            assert!(plan.status.completion_time.is_some());
            assert_eq!(plan.children, vec![delete_job()]);
        }
    }

    #[test]
    fn failed_runner_reports_its_exit_code_and_exit_2_is_a_prerequisite_failure() {
        for (code, reason) in [
            (1, reasons::RUNNER_FAILED),
            (2, reasons::PREREQUISITE_FAILED),
        ] {
            let s = in_phase(Phase::Running, None);
            let j = job(0, Some(("Failed", "BackoffLimitExceeded")));
            let p = terminated_pod(1, code);
            let plan = plan(&observe(&s, Some(&j), vec![&p], 5));
            assert_eq!(plan.status.phase, Phase::Failed);
            let message = plan.status.message.clone().unwrap();
            assert!(message.contains(&format!("code {code}")), "{message}");
            assert_eq!(
                condition(&plan, types::READY).reason.as_deref(),
                Some(reason)
            );
            assert_eq!(plan.children, vec![delete_job()]);
        }
    }

    #[test]
    fn job_deadline_means_the_session_timed_out() {
        let s = in_phase(Phase::Running, None);
        let j = job(0, Some(("Failed", "DeadlineExceeded")));
        let plan = plan(&observe(&s, Some(&j), vec![], 301));
        assert_eq!(plan.status.phase, Phase::Failed);
        assert_eq!(
            condition(&plan, types::READY).reason.as_deref(),
            Some(reasons::TIMEOUT)
        );
        assert_eq!(plan.status.stopped_reason, Some(StoppedReason::Timeout));
    }

    #[test]
    fn under_the_platforms_schema_a_timeout_writes_nothing_it_would_refuse_or_prune() {
        let s = in_phase(Phase::Running, None);
        let j = job(0, Some(("Failed", "DeadlineExceeded")));
        let mut observed = observe(&s, Some(&j), vec![], 301);
        observed.status_schema = StatusSchema::COMMON;
        let plan = plan(&observed);
        assert_eq!(plan.status.phase, Phase::Failed);
        assert_eq!(
            condition(&plan, types::READY).reason.as_deref(),
            Some(reasons::TIMEOUT),
            "the reason lives in the Ready condition"
        );
        assert_eq!(plan.status.stopped_reason, None, "not in its enum");
        assert_eq!(plan.status.message, None, "pruned");
        assert_eq!(plan.status.job_name, None, "pruned");
    }
}
