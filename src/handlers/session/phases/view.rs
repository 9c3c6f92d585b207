//! What the plan believes of the session's Job and pods: only what the session owns, only the pods
//! of the Job that made them.

use super::*;

/// What the Job says about the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum JobState {
    Active,
    Deleting,
    Succeeded,
    Failed { reason: String, message: String },
}

/// Whose the Job under the session's name is, and for which run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum JobView {
    /// No Job under the session's Job name.
    Missing,
    /// Owned by another UID (an earlier session of the same name, garbage collection still
    /// running): not ours to touch; wait.
    Foreign,
    /// No controller owner (left by a session deleted with `--cascade=orphan`): replaced,
    /// never adopted.
    Orphan { uid: String },
    /// No controller owner, but made for the run this view knows (its stamp is the view's
    /// start time): this session's own Job, orphaned since (the session is being deleted with
    /// `--cascade=orphan` and this view predates that, or someone removed the owner). Never
    /// touched, never replaced: only an orphan of another run is.
    Disowned,
    /// Ours, but made for a newer run than this view of the session knows: the view is stale.
    Newer,
    /// Ours, made for an earlier run.
    Older { uid: String, deleting: bool },
    /// Ours, made for the current run (`stamped`: it carries the run stamp; Jobs of operator
    /// versions before the stamp carry none and count as the current run's).
    Current {
        uid: String,
        state: JobState,
        stamped: bool,
    },
}

/// What the runner pod says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum RunnerState {
    /// No pod yet, or pending without a verdict from the scheduler.
    Waiting,
    /// The scheduler cannot place the pod.
    Unschedulable { reason: String, message: String },
    /// A container of the pod waits for something that will not come by itself: an image
    /// that cannot be pulled, a configuration key that does not exist.
    CannotStart {
        /// The kubelet's waiting reason (e.g. `ErrImagePull`).
        reason: String,
        /// `<container> waiting: <reason> - <kubelet's message>`.
        message: String,
        /// Fail only once this time has passed (a pull gets [`IMAGE_PULL_GRACE`]).
        fail_at: Timestamp,
    },
    /// The runner container is running.
    Running,
    /// The runner container (or pod) ended unsuccessfully.
    Died {
        exit_code: Option<i32>,
        detail: String,
    },
    /// The runner container ended successfully.
    Finished,
}

/// What carries the current run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Runner {
    /// This operator's Job (its UID).
    Job(String),
    /// The original operator's bare pod `<session>-runner` (its name): a session it started
    /// before the switch (SPEC §7.6), followed until it ends, never replaced while it runs.
    OriginalPod(String),
}

/// What a runner pod (this operator's or the original's) says of its run.
pub(super) fn pod_state(pod: &RunnerPod) -> RunnerState {
    let Some(status) = pod.status.as_ref() else {
        return RunnerState::Waiting;
    };
    let runner = status
        .container_statuses
        .iter()
        .flatten()
        .find(|c| c.name == RUNNER_CONTAINER);
    let state = runner.and_then(|c| c.state.as_ref());
    if let Some(terminated) = state.and_then(|s| s.terminated.as_ref()) {
        if terminated.exit_code == 0 {
            return RunnerState::Finished;
        }
        let detail = [terminated.reason.as_deref(), terminated.message.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(": ");
        return RunnerState::Died {
            exit_code: Some(terminated.exit_code),
            detail,
        };
    }
    if state.is_some_and(|s| s.running.is_some()) {
        return RunnerState::Running;
    }
    match status.phase.as_deref() {
        Some("Failed") => {
            return RunnerState::Died {
                exit_code: None,
                detail: status
                    .message
                    .clone()
                    .or_else(|| status.reason.clone())
                    .unwrap_or_else(|| "pod failed".into()),
            };
        }
        Some("Succeeded") => return RunnerState::Finished,
        _ => {}
    }
    if let Some(stuck) = cannot_start(pod) {
        return stuck;
    }
    let unscheduled = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False");
    match unscheduled {
        Some(c) => RunnerState::Unschedulable {
            reason: c
                .reason
                .clone()
                .unwrap_or_else(|| reasons::UNSCHEDULABLE.into()),
            message: c.message.clone().unwrap_or_default(),
        },
        None => RunnerState::Waiting,
    }
}

/// A container of `pod` (init containers first) waiting for something that will not come by
/// itself, with the time the session fails of it.
pub(super) fn cannot_start(pod: &RunnerPod) -> Option<RunnerState> {
    let status = pod.status.as_ref()?;
    let containers = status
        .init_container_statuses
        .iter()
        .chain(status.container_statuses.iter())
        .flatten();
    for container in containers {
        let Some(waiting) = container.state.as_ref().and_then(|s| s.waiting.as_ref()) else {
            continue;
        };
        let reason = waiting.reason.as_deref().unwrap_or_default();
        let grace = if CANNOT_START_AT_ONCE.contains(&reason) {
            Duration::ZERO
        } else if CANNOT_PULL.contains(&reason) {
            IMAGE_PULL_GRACE
        } else {
            continue;
        };
        let created = pod.metadata.creation_timestamp.as_ref()?.0;
        return Some(RunnerState::CannotStart {
            reason: reason.to_string(),
            message: format!(
                "{} waiting: {reason} - {}",
                container.name,
                waiting.message.as_deref().unwrap_or_default()
            ),
            fail_at: created + signed(grace),
        });
    }
    None
}

/// What a Job's conditions (and deletion) say.
pub(super) fn job_state(job: &RunnerJob) -> JobState {
    if job.metadata.deletion_timestamp.is_some() {
        return JobState::Deleting;
    }
    let conditions = job.status.as_ref().and_then(|s| s.conditions.as_ref());
    for condition in conditions.into_iter().flatten() {
        if condition.status != "True" {
            continue;
        }
        match condition.type_.as_str() {
            "Complete" | "SuccessCriteriaMet" => return JobState::Succeeded,
            "Failed" | "FailureTarget" => {
                return JobState::Failed {
                    reason: condition.reason.clone().unwrap_or_default(),
                    message: condition.message.clone().unwrap_or_default(),
                };
            }
            _ => {}
        }
    }
    JobState::Active
}

impl<'o, 'a> PlanBuilder<'o, 'a> {
    pub(super) fn job_view(&self) -> JobView {
        let Some(job) = self.observed.job else {
            return JobView::Missing;
        };
        let uid = job.metadata.uid.clone().unwrap_or_default();
        let deleting = job.metadata.deletion_timestamp.is_some();
        let Some(owner) = job.controller_uid() else {
            let this_run = job
                .run_started_at()
                .and_then(|stamp| stamp.parse::<Timestamp>().ok())
                .zip(self.status.start_time.as_ref())
                .is_some_and(|(job_run, view_run)| {
                    whole_seconds(job_run) == whole_seconds(view_run.0)
                });
            return if deleting {
                JobView::Foreign // an orphan on its way out: wait for it
            } else if this_run {
                JobView::Disowned
            } else {
                JobView::Orphan { uid }
            };
        };
        if Some(owner) != self.observed.session.metadata.uid.as_deref() {
            return JobView::Foreign;
        }
        let state = job_state(job);
        let Some(stamp) = job.run_started_at() else {
            return JobView::Current {
                uid,
                state,
                stamped: false,
            };
        };
        let job_run = stamp.parse::<Timestamp>().ok().map(whole_seconds);
        let view_run = self.status.start_time.as_ref().map(|t| whole_seconds(t.0));
        match (job_run, view_run) {
            (Some(job_run), Some(view_run)) => match job_run.cmp(&view_run) {
                Ordering::Greater => JobView::Newer,
                Ordering::Equal => JobView::Current {
                    uid,
                    state,
                    stamped: true,
                },
                Ordering::Less => JobView::Older { uid, deleting },
            },
            // A stamped Job while this view knows of no run yet: made for a run it has not seen.
            (Some(_), None) => JobView::Newer,
            // An unreadable stamp is nobody's run: treat the Job as an earlier one.
            (None, _) => JobView::Older { uid, deleting },
        }
    }

    /// Pods of the session's runs: made by the Job with `job_uid`.
    pub(super) fn pods_of_job(&self, job_uid: &str) -> Vec<&'a RunnerPod> {
        self.observed
            .pods
            .iter()
            .copied()
            .filter(|p| p.controller_uid() == Some(job_uid))
            .collect()
    }

    /// Pods that can only be the session's: made by its current Job, or created after the
    /// session itself (the API server stamps both times) — never an orphan pod left by an
    /// earlier session of the same name.
    pub(super) fn session_pods(&self) -> Vec<&'a RunnerPod> {
        let created = self
            .observed
            .session
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0);
        let current = match self.job_view() {
            JobView::Current { uid, .. } | JobView::Older { uid, .. } => Some(uid),
            _ => None,
        };
        self.observed
            .pods
            .iter()
            .copied()
            .filter(|p| {
                let ours = current.is_some() && p.controller_uid() == current.as_deref();
                let since = match (&p.metadata.creation_timestamp, created) {
                    (Some(Time(pod)), Some(session)) => *pod >= session,
                    _ => false,
                };
                ours || since
            })
            .collect()
    }

    /// The session's pods that have not terminated (any run's; with no Job of the current run,
    /// every one of them belongs to an earlier or a lost run).
    pub(super) fn live_pods(&self) -> Vec<&'a RunnerPod> {
        self.session_pods()
            .into_iter()
            .filter(|p| {
                let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
                !matches!(phase, Some("Succeeded" | "Failed"))
            })
            .collect()
    }

    /// Whether a pod of the current run (created since the run started) got its runner
    /// going: then the run's outcome is the pod's, not ours to repeat.
    pub(super) fn current_run_started_a_runner(&self) -> bool {
        let run = whole_seconds(self.run_start());
        self.session_pods().into_iter().any(|p| {
            let created = p
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| whole_seconds(t.0));
            created.is_some_and(|c| c >= run)
                && matches!(
                    pod_state(p),
                    RunnerState::Running | RunnerState::Finished | RunnerState::Died { .. }
                )
        })
    }

    /// The runner pod of the current Job (`job_uid`), newest first.
    pub(super) fn runner_state(&self, job_uid: &str) -> RunnerState {
        match self
            .pods_of_job(job_uid)
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .max_by_key(|p| p.metadata.creation_timestamp.clone().map(|t| t.0))
        {
            Some(pod) => pod_state(pod),
            None => RunnerState::Waiting,
        }
    }

    /// The original operator's runner of this session, unless already going: the bare pod
    /// `<session>-runner` controlled by the session (SPEC §7.6).
    pub(super) fn original_runner(&self) -> Option<&'a RunnerPod> {
        let name = agentic_crds::names::original_runner_pod_name(&self.name());
        let uid = self.observed.session.metadata.uid.as_deref()?;
        self.observed.pods.iter().copied().find(|p| {
            p.metadata.name.as_deref() == Some(name.as_str())
                && p.controller_uid() == Some(uid)
                && p.metadata.deletion_timestamp.is_none()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::session::phases::test_support::*;

    #[test]
    fn pods_count_only_for_the_job_that_made_them() {
        // A restart's new Job has no pod yet; the finished run's pod (made by another Job) is
        // still there: the new run is waiting, not finished.
        let s = in_phase(Phase::Creating, None);
        let j = job(2, None);
        let mut earlier = terminated_pod(1, 0);
        earlier.controller = Some("uid-of-the-earlier-runs-job".into());
        let plan = plan(&observe(&s, Some(&j), vec![&earlier], 10));
        assert_eq!(plan.status.phase, Phase::Creating);
        assert!(plan.children.is_empty(), "{:?}", plan.children);
    }

    #[test]
    fn a_job_of_a_newer_run_than_the_view_knows_marks_the_view_stale() {
        for phase in [Phase::Creating, Phase::Stopping, Phase::Completed] {
            let s = in_phase(phase, None);
            let newer = job_of_run(30);
            let plan = plan(&observe(&s, Some(&newer), vec![], 40));
            assert!(plan.children.is_empty(), "{phase}: {:?}", plan.children);
            assert_eq!(plan.status, s.status.clone().unwrap(), "{phase}");
            assert_eq!(plan.requeue_after, Some(STALE_VIEW_RECHECK));
        }
    }

    #[test]
    fn pending_view_that_meets_its_own_runs_job_is_stale_and_makes_nothing() {
        // First run: a stamped Job of ours while this view knows of no run yet.
        let s = session("demo");
        let ours = job(1, None);
        let first = plan(&observe(&s, Some(&ours), vec![], 5));
        assert_eq!(first.status, AgenticSessionStatus::default());
        assert!(first.children.is_empty() && first.session.is_empty());
        assert_eq!(first.requeue_after, Some(STALE_VIEW_RECHECK));
        // A restart: the Job of the run this view is about to claim exists already.
        let restarted = in_phase(Phase::Pending, None);
        let again = plan(&observe(&restarted, Some(&job_of_run(0)), vec![], 5));
        assert!(again.children.is_empty(), "{:?}", again.children);
        assert_eq!(again.status.phase, Phase::Pending);
    }
}
