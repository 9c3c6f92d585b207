//! What each phase decides: one function per phase, called by [`plan`](super::plan).

use super::*;

pub(super) fn pending(b: &mut PlanBuilder<'_, '_>) {
    if b.desired() == Some(keys::DESIRED_PHASE_STOPPED) {
        // Through Stopping, like any stop: Stopped is written only once the request is cleared.
        b.status.stopped_reason = Some(StoppedReason::User);
        b.condition(
            types::READY,
            false,
            reasons::STOPPING,
            messages::STOPPED_BEFORE_START,
        );
        b.enter(Phase::Stopping, messages::STOPPED_BEFORE_START, false);
        b.requeue(Duration::ZERO);
        return;
    }
    match b.job_view() {
        JobView::Missing => {
            if b.original_runner().is_some() {
                // The original operator made its pod but not yet the status saying so: that
                // run goes on (a second runner beside it never starts).
                b.enter(
                    Phase::Creating,
                    "following the original operator's runner pod",
                    false,
                );
                b.requeue(Duration::ZERO);
                return;
            }
        }
        JobView::Foreign | JobView::Disowned => return b.wait_for_garbage_collection(),
        JobView::Orphan { uid } => return b.replace_orphan(uid),
        JobView::Newer => return b.catch_up(),
        // Pending never has a Job of its own run (the run is claimed before its Job is made):
        // a stamped Job of the current run means this view is stale.
        JobView::Current {
            stamped: true,
            state,
            ..
        } if state != JobState::Deleting => return b.catch_up(),
        // An earlier run's Job (or an unstamped one of an older operator version) must be
        // gone before this run's is made under the same name.
        JobView::Older { uid, deleting } => return b.retire_then_wait(uid, deleting),
        JobView::Current { uid, state, .. } => {
            return b.retire_then_wait(uid, state == JobState::Deleting);
        }
    }
    if b.observed.vertex && !b.observed.platform.vertex_source {
        let message = format!(
            "Secret {} is missing from the backend's namespace (Vertex mode)",
            keys::VERTEX_SECRET
        );
        b.condition(
            types::SECRETS_READY,
            false,
            reasons::VERTEX_SECRET_MISSING,
            &message,
        );
        return b.fail(reasons::VERTEX_SECRET_MISSING, message);
    }
    if !b.observed.vertex && !b.observed.platform.runner_secret {
        return b.wait_for_runner_secret();
    }
    if b.start_deadline_passed(b.pending_since()) {
        let message = format!("not started within {}s", b.observed.start_timeout.as_secs());
        return b.fail(reasons::START_TIMEOUT, message);
    }
    if b.earlier_pods_in_the_way() {
        return;
    }
    b.claim_run();
}

/// Creating and Running: the run is claimed; follow its Job and runner. A spec edited into
/// something invalid since then is refused as an edit: the run goes on with the spec it has.
pub(super) fn active(b: &mut PlanBuilder<'_, '_>) {
    if b.desired() == Some(keys::DESIRED_PHASE_STOPPED) {
        return b.stop();
    }
    if let Some(problem) = &b.observed.invalid_spec {
        b.refuse_edit(problem);
    }
    if b.status.phase == Phase::Running && b.desired() == Some(keys::DESIRED_PHASE_RUNNING) {
        b.session(SessionEffect::ClearStartRequest);
    }
    let job_uid = match b.job_view() {
        JobView::Missing => match b.original_runner() {
            Some(pod) => return b.follow(Runner::OriginalPod(pod.name_any()), pod_state(pod)),
            None => return b.job_missing(),
        },
        JobView::Foreign => return b.wait_for_garbage_collection(),
        JobView::Disowned => return b.disowned(),
        JobView::Orphan { uid } => return b.replace_orphan(uid),
        JobView::Newer => return b.catch_up(),
        JobView::Older { uid, deleting } => return b.retire_then_wait(uid, deleting),
        JobView::Current { state, uid, .. } => match state {
            JobState::Deleting => {
                // Going: once gone, the missing-Job rules decide.
                b.requeue(POLL_WHILE_WAITING);
                return;
            }
            JobState::Succeeded => return b.complete(Runner::Job(uid)),
            JobState::Failed { reason, message } => {
                return b.fail_from_job(&uid, &reason, &message);
            }
            JobState::Active => uid,
        },
    };
    if let Some(admission) = b.observed.queue.clone() {
        return b.queued(admission);
    }
    b.note_admission();
    let state = b.runner_state(&job_uid);
    b.follow(Runner::Job(job_uid), state);
}

pub(super) fn stopping(b: &mut PlanBuilder<'_, '_>) {
    let ours = match b.job_view() {
        JobView::Newer => return b.catch_up(),
        JobView::Current { uid, state, .. } => {
            if state != JobState::Deleting {
                b.child(ChildEffect::DeleteJob { uid });
            }
            true
        }
        JobView::Older { uid, deleting } => {
            if !deleting {
                b.child(ChildEffect::DeleteJob { uid });
            }
            true
        }
        // Not ours: neither waited for nor touched.
        JobView::Missing | JobView::Foreign | JobView::Orphan { .. } | JobView::Disowned => false,
    };
    let pods = b.session_pods();
    // Pods of our Job go with it; any other is deleted here.
    let next_check = b.retire_pods(&pods, !ours);
    if !ours && pods.is_empty() {
        if b.desired() == Some(keys::DESIRED_PHASE_STOPPED) {
            // The runner is gone: clear the honoured request first, so that a session reads
            // Stopped only once nothing asks for a stop any more. The clearing patch is an
            // event of its own; the reconcile it causes writes Stopped.
            b.session(SessionEffect::ClearStopAnnotations);
            b.requeue(POLL_WHILE_WAITING);
            return;
        }
        let reason = *b.status.stopped_reason.get_or_insert(StoppedReason::User);
        b.status.completion_time = Some(b.now());
        let (ready_reason, message) = match reason {
            StoppedReason::Inactivity => (
                reasons::INACTIVITY_TIMEOUT,
                messages::STOPPED_AFTER_INACTIVITY,
            ),
            _ => (reasons::STOPPED_BY_USER, messages::SESSION_STOPPED),
        };
        b.condition(types::READY, false, ready_reason, message);
        b.enter(Phase::Stopped, messages::RUNNER_STOPPED, false);
        return;
    }
    b.requeue(next_check);
}

pub(super) fn terminal(b: &mut PlanBuilder<'_, '_>) {
    let view = b.job_view();
    let leftover = match &view {
        JobView::Newer => return b.catch_up(),
        JobView::Current { uid, state, .. } => Some((uid.clone(), *state == JobState::Deleting)),
        JobView::Older { uid, deleting } => Some((uid.clone(), *deleting)),
        JobView::Missing | JobView::Foreign | JobView::Orphan { .. } | JobView::Disowned => None,
    };
    // The original operator's pod of an ended run goes, as the original deleted it.
    let original = b.original_runner();
    if let Some(pod) = original {
        b.end_run(&Runner::OriginalPod(pod.name_any()));
    }
    if b.desired() == Some(keys::DESIRED_PHASE_RUNNING) {
        // The finished run's Job must be gone before the next run's is made under its name
        // (its pods need not: they count only for their own Job); so must the original
        // operator's pod, and the Service it owned (garbage-collected after it), whose name
        // the next run's Service takes.
        if let Some((uid, deleting)) = leftover {
            if !deleting {
                b.child(ChildEffect::DeleteJob { uid });
            }
            b.requeue(POLL_WHILE_WAITING);
            return;
        }
        if original.is_some() || b.observed.foreign_service {
            b.requeue(POLL_WHILE_WAITING);
            return;
        }
        b.status.start_time = Some(b.now());
        b.status.completion_time = None;
        b.status.stopped_reason = None;
        b.status.job_name = None;
        b.condition(
            types::JOB_CREATED,
            false,
            reasons::CREATING,
            messages::RESTART_REQUESTED,
        );
        b.condition(
            types::READY,
            false,
            reasons::CREATING,
            messages::RESTART_REQUESTED,
        );
        b.enter(Phase::Pending, messages::RESTART_REQUESTED, false);
        b.session(SessionEffect::ClearStartRequest);
        b.requeue(Duration::ZERO);
        return;
    }
    b.end_service();
    match leftover {
        // The outcome is recorded: a Job left behind (its deletion failed or was lost) goes.
        Some((uid, false)) => b.child(ChildEffect::DeleteJob { uid }),
        Some((_, true)) => {}
        None => {
            if b.condition_is(types::CLEANED_UP, ConditionStatus::False) {
                b.condition(
                    types::CLEANED_UP,
                    true,
                    reasons::PROVISIONED,
                    messages::NOTHING_LEFT_TO_DELETE,
                );
            }
        }
    }
    if b.desired() == Some(keys::DESIRED_PHASE_STOPPED) && b.status.phase == Phase::Stopped {
        b.session(SessionEffect::ClearStopAnnotations);
    }
}

impl<'o, 'a> PlanBuilder<'o, 'a> {
    pub(super) fn stop(&mut self) {
        match self.job_view() {
            JobView::Newer => return self.catch_up(),
            JobView::Current { uid, state, .. } if state != JobState::Deleting => {
                self.child(ChildEffect::DeleteJob { uid });
            }
            JobView::Older {
                uid,
                deleting: false,
            } => self.child(ChildEffect::DeleteJob { uid }),
            JobView::Missing => {
                if let Some(pod) = self.original_runner() {
                    self.end_run(&Runner::OriginalPod(pod.name_any()));
                }
            }
            _ => {}
        }
        self.end_service();
        let reason = self.stop_reason();
        self.status.stopped_reason = Some(reason);
        let message = match reason {
            StoppedReason::Inactivity => "stop requested after inactivity",
            _ => "stop requested",
        };
        self.condition(types::READY, false, reasons::STOPPING, message);
        self.leave_queue(reasons::STOPPING, message);
        self.enter(Phase::Stopping, message, false);
        self.requeue(POLL_WHILE_WAITING);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::session::phases::test_support::*;

    #[test]
    fn pending_session_asked_to_stop_goes_stopping_without_a_job() {
        let s = in_phase(Phase::Pending, Some("Stopped"));
        let plan = plan(&observe(&s, None, vec![], 5));
        assert_eq!(plan.status.phase, Phase::Stopping);
        assert_eq!(plan.status.stopped_reason, Some(StoppedReason::User));
        assert!(plan.children.is_empty() && plan.session.is_empty());
        assert_eq!(plan.requeue_after, Some(Duration::ZERO));
    }

    #[test]
    fn stop_while_creating_or_running_moves_to_stopping_then_deletes_the_job() {
        for phase in [Phase::Creating, Phase::Running] {
            let s = in_phase(phase, Some("Stopped"));
            let j = job(0, None);
            let plan = plan(&observe(&s, Some(&j), vec![], 5));
            assert_eq!(plan.status.phase, Phase::Stopping, "from {phase}");
            assert_eq!(plan.children, vec![delete_job()]);
            assert_eq!(plan.status.stopped_reason, Some(StoppedReason::User));
        }
    }

    #[test]
    fn stopping_session_clears_the_request_once_job_and_pods_are_gone_then_is_stopped() {
        let mut s = in_phase(Phase::Stopping, Some("Stopped"));
        s.status.as_mut().unwrap().stopped_reason = Some(StoppedReason::User);
        let clearing = plan(&observe(&s, None, vec![], 5));
        assert_eq!(
            clearing.status.phase,
            Phase::Stopping,
            "never Stopped while the stop request is still set"
        );
        assert_eq!(clearing.session, vec![SessionEffect::ClearStopAnnotations]);

        s.metadata.annotations = None; // what the clearing patch leaves
        let stopped = plan(&observe(&s, None, vec![], 6));
        assert_eq!(stopped.status.phase, Phase::Stopped);
        assert_eq!(stopped.status.stopped_reason, Some(StoppedReason::User));
        assert_eq!(
            condition(&stopped, types::READY).reason.as_deref(),
            Some(reasons::STOPPED_BY_USER)
        );
        assert!(stopped.children.is_empty() && stopped.session.is_empty());
        assert!(stopped.status.completion_time.is_some());
    }

    #[test]
    fn an_inactivity_stop_ends_stopped_with_its_reason() {
        let mut s = in_phase(Phase::Stopping, None);
        s.status.as_mut().unwrap().stopped_reason = Some(StoppedReason::Inactivity);
        let stopped = plan(&observe(&s, None, vec![], 6));
        assert_eq!(stopped.status.phase, Phase::Stopped);
        assert_eq!(
            condition(&stopped, types::READY).reason.as_deref(),
            Some(reasons::INACTIVITY_TIMEOUT)
        );
    }

    #[test]
    fn stopping_session_whose_request_was_replaced_by_a_restart_still_ends_stopped() {
        let mut s = in_phase(Phase::Stopping, Some("Running"));
        s.status.as_mut().unwrap().stopped_reason = Some(StoppedReason::User);
        let plan = plan(&observe(&s, None, vec![], 5));
        assert_eq!(
            plan.status.phase,
            Phase::Stopped,
            "then restarted from there"
        );
    }

    #[test]
    fn stopping_waits_only_for_its_own_pods() {
        let s = in_phase(Phase::Stopping, None);
        // An orphan pod of an earlier session of the same name, created before this one.
        let mut orphan = running_pod(-10);
        orphan.controller = Some("uid-of-an-orphaned-job".into());
        let plan = plan(&observe(&s, None, vec![&orphan], 5));
        assert_eq!(plan.status.phase, Phase::Stopped);
        assert!(
            plan.children.is_empty(),
            "not ours to delete: {:?}",
            plan.children
        );
    }

    #[test]
    fn pods_stuck_terminating_past_grace_and_30s_are_force_deleted() {
        let s = in_phase(Phase::Stopping, Some("Stopped"));
        let mut p = running_pod(0);
        p.metadata.deletion_timestamp = Some(Time(at(10)));
        let early = plan(&observe(&s, None, vec![&p], 20));
        assert!(early.children.is_empty());
        assert_eq!(early.status.phase, Phase::Stopping);
        assert_eq!(early.requeue_after, Some(Duration::from_secs(5)));
        let late = plan(&observe(&s, None, vec![&p], 40));
        assert_eq!(
            late.children,
            vec![ChildEffect::ForceDeletePods(vec!["demo-job-0".into()])]
        );
    }

    #[test]
    fn restart_of_a_finished_session_waits_for_the_old_job_then_goes_pending() {
        let mut s = in_phase(Phase::Completed, Some("Running"));
        s.status.as_mut().unwrap().completion_time = Some(Time(at(50)));
        let old = job(0, Some(("Complete", "CompletionsReached")));
        let waiting = plan(&observe(&s, Some(&old), vec![], 100));
        assert_eq!(waiting.status.phase, Phase::Completed);
        assert_eq!(waiting.children, vec![delete_job()]);

        let finished_pod = terminated_pod(1, 0);
        let plan = plan(&observe(&s, None, vec![&finished_pod], 100));
        assert_eq!(plan.status.phase, Phase::Pending, "its pod need not wait");
        assert_eq!(plan.status.start_time, Some(Time(at(100))));
        assert_eq!(plan.status.completion_time, None);
        assert_eq!(plan.session, vec![SessionEffect::ClearStartRequest]);
        assert_eq!(plan.requeue_after, Some(Duration::ZERO));
    }

    #[test]
    fn restarted_session_resumes_only_if_an_earlier_run_started() {
        let never_ran = in_phase(Phase::Pending, Some("Running"));
        let first = plan(&observe(&never_ran, None, vec![], 5));
        assert!(!created_run(&first).expect("a Job").is_resume);
        assert!(first.session.contains(&SessionEffect::ClearStartRequest));

        let mut ran = never_ran.clone();
        ran.status.as_mut().unwrap().conditions.push(Condition::new(
            types::RUNNER_STARTED,
            ConditionStatus::True,
            "Running",
            "",
        ));
        let again = plan(&observe(&ran, None, vec![], 5));
        assert!(created_run(&again).expect("a Job").is_resume);
    }

    #[test]
    fn a_forced_prompt_is_never_a_resume_and_is_cleared_after_its_job() {
        let mut s = in_phase(Phase::Pending, Some("Running"));
        s.status.as_mut().unwrap().conditions.push(Condition::new(
            types::RUNNER_STARTED,
            ConditionStatus::True,
            "Running",
            "an earlier run started",
        ));
        s.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(keys::FORCE_EXECUTE_PROMPT_ANNOTATION.into(), "true".into());
        let plan = plan(&observe(&s, None, vec![], 5));
        assert!(!created_run(&plan).expect("a Job").is_resume);
        assert!(
            plan.session
                .contains(&SessionEffect::ClearForceExecutePrompt),
            "cleared after the Job: session effects run after the children"
        );
    }

    #[test]
    fn finished_session_cleans_up_a_leftover_job() {
        let s = in_phase(Phase::Failed, None);
        let j = job(0, None);
        let plan = plan(&observe(&s, Some(&j), vec![], 5));
        assert_eq!(plan.children, vec![delete_job()]);
        assert_eq!(plan.status, s.status.clone().unwrap(), "status untouched");
    }

    #[test]
    fn a_cleanup_failure_is_cleared_once_nothing_is_left() {
        let mut s = in_phase(Phase::Completed, None);
        s.status.as_mut().unwrap().conditions.push(Condition::new(
            types::CLEANED_UP,
            ConditionStatus::False,
            reasons::CLEANUP_FAILED,
            "refused",
        ));
        let plan = plan(&observe(&s, None, vec![], 5));
        assert_eq!(
            condition(&plan, types::CLEANED_UP).status,
            ConditionStatus::True
        );
    }

    #[test]
    fn invalid_spec_fails_with_the_field_named_and_is_final() {
        let s = session("demo");
        let mut observed = observe(&s, None, vec![], 5);
        observed.invalid_spec = Some("spec.repos[0].url: not a git URL".into());
        let plan = plan(&observed);
        assert_eq!(plan.status.phase, Phase::Failed);
        assert_eq!(
            condition(&plan, types::READY).reason.as_deref(),
            Some(reasons::INVALID_SPEC)
        );
        assert!(
            plan.status
                .message
                .unwrap()
                .starts_with("spec.repos[0].url")
        );
        assert!(plan.children.is_empty() && plan.session.is_empty());
        assert!(plan.requeue_after.is_none());
    }
}
