//! A Job that is gone, foreign or left over: a run is lost rather than run twice, a foreign Job is
//! waited out, an orphan is replaced, an earlier run's pods are retired first.

use super::*;

impl<'o, 'a> PlanBuilder<'o, 'a> {
    /// Deletes `pods` that are not going yet (when `delete`), force-deletes those still there
    /// [`FORCE_DELETE_AFTER_GRACE`] after their grace period; returns when to look again.
    pub(super) fn retire_pods(&mut self, pods: &[&RunnerPod], delete: bool) -> Duration {
        let now = self.observed.now;
        let mut force = Vec::new();
        let mut going = Vec::new();
        let mut next_check = POLL_WHILE_WAITING;
        for pod in pods {
            match pod.metadata.deletion_timestamp.as_ref() {
                // deletionTimestamp already includes the grace period.
                Some(Time(deadline)) => {
                    let force_at = *deadline + signed(FORCE_DELETE_AFTER_GRACE);
                    if now >= force_at {
                        force.push(pod.name_any());
                    } else {
                        next_check = next_check.min(until(now, force_at));
                    }
                }
                None if delete => going.push(pod.name_any()),
                None => {}
            }
        }
        if !going.is_empty() {
            self.child(ChildEffect::DeletePods(going));
        }
        if !force.is_empty() {
            self.child(ChildEffect::ForceDeletePods(force));
        }
        next_check
    }

    /// One agent per session: a new run starts only once no pod of an earlier (or lost) run is
    /// left running. Retires them and says whether any is left (then the run waits).
    pub(super) fn earlier_pods_in_the_way(&mut self) -> bool {
        let live = self.live_pods();
        if live.is_empty() {
            return false;
        }
        let next = self.retire_pods(&live, true);
        self.requeue(next);
        true
    }

    /// The current run's Job is gone and its runner had started: the run's outcome is unknown.
    /// Failed / `JobLost`; its pods, orphans now, go too (an agent left running unsupervised
    /// would be a second one beside the next run's).
    pub(super) fn lose_run(&mut self, message: &str) {
        let live = self.live_pods();
        self.retire_pods(&live, true);
        self.fail(reasons::JOB_LOST, message.to_string());
    }

    /// The view of the session is behind its own children: look again shortly.
    pub(super) fn catch_up(&mut self) {
        self.requeue(STALE_VIEW_RECHECK);
    }

    /// A child under the session's name belongs to another session (of the same name, whose
    /// garbage collection is still running): wait for it to go.
    pub(super) fn wait_for_garbage_collection(&mut self) {
        self.requeue(POLL_WHILE_WAITING);
    }

    /// A Job of an earlier run is in the way: delete it (unless it is going) and wait.
    pub(super) fn retire_then_wait(&mut self, uid: String, deleting: bool) {
        if !deleting {
            self.child(ChildEffect::DeleteJob { uid });
        }
        self.requeue(POLL_WHILE_WAITING);
    }

    /// The current run's Job lost its owner: not ours to act on any more, nor to replace (its
    /// runner may be running). Said on the session; nothing else is done until it is gone.
    pub(super) fn disowned(&mut self) {
        let message = format!(
            "the runner Job {} lost its owner reference; it is left alone (delete it to let \
             the session go on)",
            agentic_crds::names::job_name(&self.name())
        );
        self.condition(types::JOB_CREATED, false, reasons::JOB_ORPHANED, &message);
        self.requeue(POLL_WHILE_WAITING);
    }

    /// An orphan under the session's Job name: delete it; the next reconcile makes ours.
    pub(super) fn replace_orphan(&mut self, uid: String) {
        self.child(ChildEffect::DeleteJob { uid });
        self.requeue(POLL_WHILE_WAITING);
    }

    /// Creating or Running with no Job under the session's name (confirmed against the API
    /// server by the caller).
    pub(super) fn job_missing(&mut self) {
        if self.status.phase == Phase::Running || self.current_run_started_a_runner() {
            return self.lose_run(
                "the runner Job disappeared after its runner started, so the run's outcome is \
                 unknown; restart the session to run it again",
            );
        }
        let started = self.run_start();
        let now = self.observed.now;
        let ttl = Duration::from_secs(u64::try_from(JOB_TTL_BACKSTOP_SECONDS).unwrap_or(0));
        if now >= started + signed(ttl) {
            // Kubernetes may have collected a finished Job (its TTL) while nobody recorded its
            // outcome: running the agent again could repeat finished work.
            return self.lose_run(
                "the runner Job is gone and its run may have finished unrecorded; restart the \
                 session to run it again",
            );
        }
        if !self.observed.claimed_here
            && let Some(open) = self.claim_grace_end()
            && now < open
        {
            // Another replica claimed this run moments ago and may still be making its Job.
            self.requeue(until(now, open));
            return;
        }
        let mut deadline = None;
        if self.observed.enforce_timeout {
            let elapsed = until(started, now).as_secs();
            let left = self
                .observed
                .session
                .spec
                .timeout
                .saturating_sub(i64::try_from(elapsed).unwrap_or(i64::MAX));
            if left <= 0 {
                self.status.stopped_reason = Some(StoppedReason::Timeout);
                let message = format!(
                    "session exceeded its timeout of {}s before its runner started",
                    self.observed.session.spec.timeout
                );
                return self.fail(reasons::TIMEOUT, message);
            }
            deadline = Some(left);
        }
        // A preempted run waits for Kueue (and first for its predecessor's pods, which sync
        // state in their grace period): its start timeout counts from admission.
        let queued = self.condition_is(types::QUEUED, ConditionStatus::True);
        if !queued && self.start_deadline_passed(started) {
            // Its Job could never be made (or kept): the start timeout bounds this too.
            let message = format!(
                "no runner Job could be made within {}s",
                self.observed.start_timeout.as_secs()
            );
            return self.fail(reasons::START_TIMEOUT, message);
        }
        if self.earlier_pods_in_the_way() {
            return;
        }
        // Claimed but not made (its creation failed), or deleted before the runner started:
        // the agent never ran, so this run goes on, with the time it has left.
        let run = self.run_spec(deadline);
        self.make_run(run);
        self.requeue(self.observed.start_timeout);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::session::phases::test_support::*;

    #[test]
    fn pending_restart_retires_the_earlier_runs_job_before_making_its_own() {
        let mut s = in_phase(Phase::Pending, None);
        s.status.as_mut().unwrap().start_time = Some(Time(at(50))); // set by the restart
        let done = job_of_run(0);
        let plan = plan(&observe(&s, Some(&done), vec![], 60));
        assert_eq!(plan.children, vec![delete_job()]);
        assert_eq!(plan.status.phase, Phase::Pending);
    }

    #[test]
    fn a_job_of_another_owner_is_waited_out_and_never_touched() {
        for phase in [Phase::Pending, Phase::Creating, Phase::Running] {
            let s = in_phase(phase, None);
            let mut foreign = job(0, Some(("Complete", "CompletionsReached")));
            foreign.controller = Some("uid-of-an-earlier-session".into());
            let plan = plan(&observe(&s, Some(&foreign), vec![], 5));
            assert!(plan.children.is_empty(), "{phase}: {:?}", plan.children);
            assert_eq!(
                plan.status.phase, phase,
                "not completed by someone else's Job"
            );
            assert_eq!(plan.requeue_after, Some(POLL_WHILE_WAITING));
        }
    }

    #[test]
    fn an_orphan_under_the_sessions_job_name_is_replaced_never_adopted() {
        for phase in [Phase::Pending, Phase::Creating, Phase::Running] {
            let s = in_phase(phase, None);
            let mut orphan = job(0, None);
            orphan.controller = None;
            // Made for a run of an earlier session of the same name.
            orphan.run = Some("2025-12-31T23:00:00Z".into());
            let p = running_pod(1);
            let plan = plan(&observe(&s, Some(&orphan), vec![&p], 5));
            assert_eq!(plan.children, vec![delete_job()], "{phase}");
            assert_eq!(plan.status.phase, phase);
        }
    }

    #[test]
    fn job_gone_after_the_runner_started_is_a_lost_run_never_a_silent_rerun() {
        let s = in_phase(Phase::Running, None);
        let plan = plan(&observe(&s, None, vec![], 5));
        assert_eq!(plan.status.phase, Phase::Failed);
        assert_eq!(
            condition(&plan, types::READY).reason.as_deref(),
            Some(reasons::JOB_LOST)
        );
        assert!(plan.children.is_empty(), "{:?}", plan.children);
        assert!(plan.status.message.unwrap().contains("restart"));
    }

    #[test]
    fn job_gone_before_the_runner_started_is_made_again_with_the_time_left() {
        let mut s = in_phase(Phase::Creating, None);
        s.status.as_mut().unwrap().conditions.push(Condition::new(
            types::RUNNER_STARTED,
            ConditionStatus::True,
            "Running",
            "an earlier run started",
        ));
        let mut observed = observe(&s, None, vec![], 40);
        observed.enforce_timeout = true;
        let plan = plan(&observed);
        assert_eq!(plan.status.phase, Phase::Creating);
        let run = created_run(&plan).expect("the Job is made again");
        assert_eq!(
            run.deadline_seconds,
            Some(260),
            "300 s minus the 40 s already gone"
        );
        assert_eq!(run.started_at, Time(at(0)), "the same run");
        assert!(run.is_resume, "an earlier run started");
    }

    #[test]
    fn a_run_claimed_elsewhere_moments_ago_is_left_to_its_claimer() {
        let mut s = in_phase(Phase::Creating, None);
        s.status.as_mut().unwrap().conditions.push(Condition {
            last_transition_time: Some(Time(at(10))),
            ..Condition::new(types::JOB_CREATED, ConditionStatus::True, "Creating", "")
        });
        let mut observed = observe(&s, None, vec![], 20);
        observed.claimed_here = false;
        let waiting = plan(&observed);
        assert!(created_run(&waiting).is_none(), "the claimer makes it");
        assert_eq!(
            waiting.requeue_after,
            Some(CLAIM_GRACE - Duration::from_secs(10))
        );
        let mut late = observe(&s, None, vec![], 70);
        late.claimed_here = false;
        assert!(
            created_run(&plan(&late)).is_some(),
            "the claimer failed: anyone makes it"
        );
        assert!(
            created_run(&plan(&observe(&s, None, vec![], 20))).is_some(),
            "the claimer itself retries at once"
        );
    }

    #[test]
    fn job_gone_before_the_start_with_no_time_left_times_out() {
        let s = in_phase(Phase::Creating, None);
        let mut observed = observe(&s, None, vec![], 300);
        observed.enforce_timeout = true;
        let plan = plan(&observed);
        assert_eq!(plan.status.phase, Phase::Failed);
        assert_eq!(
            condition(&plan, types::READY).reason.as_deref(),
            Some(reasons::TIMEOUT)
        );
        assert!(created_run(&plan).is_none());
    }

    #[test]
    fn job_gone_longer_than_its_ttl_after_the_run_began_may_have_finished_so_it_is_lost() {
        let mut s = in_phase(Phase::Creating, None);
        s.spec.timeout = 86_400;
        let ttl = i64::from(JOB_TTL_BACKSTOP_SECONDS);
        let plan = plan(&observe(&s, None, vec![], ttl));
        assert_eq!(
            condition(&plan, types::READY).reason.as_deref(),
            Some(reasons::JOB_LOST)
        );
        assert!(created_run(&plan).is_none());
    }

    #[test]
    fn a_lost_job_whose_runner_had_started_is_lost_and_its_pod_retired_never_run_twice() {
        // Creating: the operator never saw Running, but the orphaned pod's runner runs.
        let s = in_phase(Phase::Creating, None);
        let orphan = running_pod(2);
        let plan = plan(&observe(&s, None, vec![&orphan], 10));
        assert_eq!(plan.status.phase, Phase::Failed);
        assert_eq!(
            condition(&plan, types::READY).reason.as_deref(),
            Some(reasons::JOB_LOST)
        );
        assert!(created_run(&plan).is_none(), "no second runner");
        assert!(
            plan.children
                .contains(&ChildEffect::DeletePods(vec!["demo-job-2".into()])),
            "{:?}",
            plan.children
        );
    }

    #[test]
    fn a_new_run_waits_for_every_pod_of_an_earlier_run_to_go() {
        // Creating, Job gone before its runner started: its pod is still there.
        let s = in_phase(Phase::Creating, None);
        let pending = unschedulable_pod(2);
        let plan_creating = plan(&observe(&s, None, vec![&pending], 10));
        assert!(created_run(&plan_creating).is_none(), "waits for the pod");
        assert_eq!(
            plan_creating.children,
            vec![ChildEffect::DeletePods(vec!["demo-job-2".into()])]
        );
        // A restart (Pending) while the finished run's pod is still terminating.
        let mut restarted = in_phase(Phase::Pending, None);
        restarted.status.as_mut().unwrap().start_time = Some(Time(at(100)));
        let mut going = running_pod(2);
        going.metadata.deletion_timestamp = Some(Time(at(95)));
        let waiting = plan(&observe(&restarted, None, vec![&going], 101));
        assert_eq!(waiting.status.phase, Phase::Pending, "no claim yet");
        assert!(created_run(&waiting).is_none());
        // Once it is gone, or has terminated, the run is claimed.
        let done = terminated_pod(2, 0);
        let claimed = plan(&observe(&restarted, None, vec![&done], 101));
        assert!(created_run(&claimed).is_some());
    }

    #[test]
    fn this_runs_own_job_without_its_owner_is_never_replaced() {
        let s = in_phase(Phase::Running, None);
        let mut disowned = job(0, None);
        disowned.controller = None;
        let p = running_pod(1);
        let plan = plan(&observe(&s, Some(&disowned), vec![&p], 10));
        assert!(plan.children.is_empty(), "{:?}", plan.children);
        assert_eq!(plan.status.phase, Phase::Running);
        assert_eq!(
            condition(&plan, types::JOB_CREATED).reason.as_deref(),
            Some(reasons::JOB_ORPHANED)
        );
        // One made for another run (an earlier session of the same name) is replaced.
        let mut fresh = session("demo");
        fresh.status = None;
        let replaced = super::plan(&observe(&fresh, Some(&disowned), vec![], 10));
        assert_eq!(replaced.children, vec![delete_job()]);
    }
}
