//! Making a run: the claim written before anything is created (Pending → Creating), the runner's
//! secrets and token, the Job and its Service.

use super::*;

impl<'o, 'a> PlanBuilder<'o, 'a> {
    /// When the claim of the current run stops being the claimer's alone: the claim's time
    /// (the `JobCreated` condition's transition) plus [`CLAIM_GRACE`].
    pub(super) fn claim_grace_end(&self) -> Option<Timestamp> {
        let claimed = self
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == types::JOB_CREATED && c.status == ConditionStatus::True)?
            .last_transition_time
            .as_ref()?
            .0;
        Some(claimed + signed(CLAIM_GRACE))
    }

    /// Whether this run must execute its prompt (`force-execute-prompt=true`).
    pub(super) fn forced_prompt(&self) -> bool {
        self.observed
            .session
            .annotations()
            .get(keys::FORCE_EXECUTE_PROMPT_ANNOTATION)
            .is_some_and(|v| v == "true")
    }

    /// The run's Job, created for the run as the status now records it. A forced prompt is
    /// never a resume (the runner skips `INITIAL_PROMPT` on a resume).
    pub(super) fn run_spec(&self, deadline_seconds: Option<i64>) -> RunSpec {
        RunSpec {
            is_resume: self.runner_started_before() && !self.forced_prompt(),
            deadline_seconds,
            started_at: self.status.start_time.clone().unwrap_or_else(|| self.now()),
        }
    }

    /// Pending → Creating: the status write claims the run; only then are the identity and
    /// the Job made.
    pub(super) fn claim_run(&mut self) {
        if self.status.start_time.is_none() {
            self.status.start_time = Some(self.now());
        }
        self.status.job_name = Some(agentic_crds::names::job_name(&self.name()));
        self.condition(
            types::RUNNER_IDENTITY_READY,
            true,
            reasons::PROVISIONED,
            messages::IDENTITY_PROVISIONED,
        );
        self.condition(
            types::JOB_CREATED,
            true,
            reasons::CREATING,
            messages::JOB_CREATED,
        );
        self.condition(
            types::READY,
            false,
            reasons::CREATING,
            messages::WAITING_FOR_RUNNER,
        );
        self.record_platform();
        self.enter(Phase::Creating, messages::JOB_CREATED, false);
        let deadline = self
            .observed
            .enforce_timeout
            .then_some(self.observed.session.spec.timeout);
        let run = self.run_spec(deadline);
        self.make_run(run);
        self.session(SessionEffect::RecordIdentity);
        if self.desired() == Some(keys::DESIRED_PHASE_RUNNING) {
            self.session(SessionEffect::ClearStartRequest);
        }
        self.requeue(self.observed.start_timeout);
    }

    /// Whether the token Secret exists and its token is older than the refresh age.
    pub(super) fn token_is_stale(&self) -> bool {
        self.observed
            .token_refreshed_at
            .is_some_and(|at| self.observed.now >= at + signed(self.observed.token_refresh_after))
    }

    /// Everything a run needs, in order: workspace, identity (a token older than the refresh
    /// age is refreshed), the shared Secrets it references, the Service in front of it, then
    /// its Job.
    pub(super) fn make_run(&mut self, run: RunSpec) {
        self.spec_applied = true;
        self.child(ChildEffect::EnsureWorkspace);
        self.child(ChildEffect::EnsureIdentity);
        if self.token_is_stale() {
            // A run never starts on an old token: init-hydrate reads it once, as an env var.
            self.child(ChildEffect::RefreshToken);
        }
        self.child(ChildEffect::EnsureCopies);
        self.child(ChildEffect::EnsureService);
        self.child(ChildEffect::CreateJob(run));
        if self.forced_prompt() {
            // Consumed exactly once: after the Job that executes it exists.
            self.session(SessionEffect::ClearForceExecutePrompt);
        }
    }

    /// The run has ended: its Service goes with its Job.
    pub(super) fn end_service(&mut self) {
        if let Some(uid) = self.observed.service_uid.clone() {
            self.child(ChildEffect::DeleteService { uid });
        }
    }

    /// What the claim records about the runner's credentials and state storage.
    pub(super) fn record_platform(&mut self) {
        self.condition(
            types::SECRETS_READY,
            true,
            reasons::ALL_REQUIRED_SECRETS_FOUND,
            messages::SECRETS_AVAILABLE,
        );
        if self.observed.platform.integrations.is_some() {
            self.condition(
                types::INTEGRATION_SECRETS_READY,
                true,
                reasons::OPTIONAL_SECRET_FOUND,
                messages::INTEGRATIONS_PRESENT,
            );
        }
        let s3 = &self.observed.s3;
        if s3.keys.is_some() {
            let message = format!("S3 storage configured: {}/{}", s3.endpoint, s3.bucket);
            self.condition(types::S3_AVAILABLE, true, reasons::CONFIGURED, &message);
        } else {
            self.condition(
                types::S3_AVAILABLE,
                false,
                reasons::NOT_CONFIGURED,
                messages::S3_NOT_CONFIGURED,
            );
        }
    }

    /// Vertex off and `ambient-runner-secrets` missing: wait in Pending (the Secret's
    /// appearance is an event), say why once, and give up after the start timeout.
    pub(super) fn wait_for_runner_secret(&mut self) {
        let namespace = self.observed.session.namespace().unwrap_or_default();
        let message = format!(
            "Secret {} not found in namespace {namespace}: the session starts as soon as it exists",
            keys::RUNNER_SECRETS
        );
        let already = self.status.conditions.iter().any(|c| {
            c.type_ == types::SECRETS_READY
                && c.reason.as_deref() == Some(reasons::RUNNER_SECRET_MISSING)
        });
        self.condition(
            types::SECRETS_READY,
            false,
            reasons::RUNNER_SECRET_MISSING,
            &message,
        );
        let since = self.pending_since();
        if self.start_deadline_passed(since) {
            let message = format!(
                "Secret {} not found in namespace {namespace} within {}s",
                keys::RUNNER_SECRETS,
                self.observed.start_timeout.as_secs()
            );
            return self.fail(reasons::RUNNER_SECRET_MISSING, message);
        }
        if !already {
            self.status.message = Some(message.clone());
            self.notes.push(Note {
                warning: true,
                reason: reasons::RUNNER_SECRET_MISSING.into(),
                message,
            });
        }
        let deadline = since + signed(self.observed.start_timeout);
        self.requeue(until(self.observed.now, deadline));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::session::phases::test_support::*;

    #[test]
    fn pending_session_claims_its_run_in_status_before_anything_is_made() {
        let s = session("demo");
        let plan = plan(&observe(&s, None, vec![], 5));
        assert_eq!(
            plan.status.phase,
            Phase::Creating,
            "the claim is the status write"
        );
        assert_eq!(plan.status.job_name.as_deref(), Some("demo-job"));
        assert_eq!(plan.status.start_time, Some(Time(at(5))));
        assert_eq!(plan.status.observed_generation, Some(1));
        assert_eq!(
            plan.children,
            vec![
                ChildEffect::EnsureWorkspace,
                ChildEffect::EnsureIdentity,
                ChildEffect::EnsureCopies,
                ChildEffect::EnsureService,
                ChildEffect::CreateJob(RunSpec {
                    is_resume: false,
                    deadline_seconds: None,
                    started_at: Time(at(5)),
                }),
            ]
        );
        assert_eq!(plan.session, vec![SessionEffect::RecordIdentity]);
        assert_eq!(plan.requeue_after, Some(START_TIMEOUT));
        assert_eq!(plan.notes.len(), 1, "the transition is announced");
    }

    #[test]
    fn the_claim_records_the_runners_secrets_and_storage() {
        let s = session("demo");
        let plan = plan(&observe(&s, None, vec![], 5));
        assert_eq!(
            condition(&plan, types::SECRETS_READY).reason.as_deref(),
            Some(reasons::ALL_REQUIRED_SECRETS_FOUND)
        );
        let s3 = condition(&plan, types::S3_AVAILABLE);
        assert_eq!(s3.status, ConditionStatus::False);
        assert_eq!(s3.reason.as_deref(), Some(reasons::NOT_CONFIGURED));
        assert!(
            find_condition(&plan.status.conditions, types::INTEGRATION_SECRETS_READY).is_none()
        );
    }

    #[test]
    fn a_missing_runner_secret_keeps_the_session_pending_says_why_once_then_fails() {
        let s = session("demo");
        let mut observed = observe(&s, None, vec![], 5);
        observed.platform.runner_secret = false;
        let waiting = plan(&observed);
        assert_eq!(waiting.status.phase, Phase::Pending);
        assert!(waiting.children.is_empty(), "no Job while it is missing");
        let secrets = condition(&waiting, types::SECRETS_READY);
        assert_eq!(secrets.status, ConditionStatus::False);
        assert_eq!(
            secrets.reason.as_deref(),
            Some(reasons::RUNNER_SECRET_MISSING)
        );
        assert!(
            secrets
                .message
                .as_deref()
                .unwrap()
                .contains("ambient-runner-secrets")
        );
        assert_eq!(waiting.notes.len(), 1, "an Event");
        assert_eq!(
            waiting.requeue_after,
            Some(START_TIMEOUT - Duration::from_secs(5))
        );

        let mut later = s.clone();
        later.status = Some(waiting.status.clone());
        let mut again = observe(&later, None, vec![], 60);
        again.platform.runner_secret = false;
        let still = plan(&again);
        assert!(still.notes.is_empty(), "said once");
        assert_eq!(still.status, waiting.status, "nothing new to write");

        let mut late = observe(&later, None, vec![], 600);
        late.platform.runner_secret = false;
        let failed = plan(&late);
        assert_eq!(failed.status.phase, Phase::Failed);
        assert_eq!(
            condition(&failed, types::READY).reason.as_deref(),
            Some(reasons::RUNNER_SECRET_MISSING)
        );

        let mut found = observe(&later, None, vec![], 60);
        found.platform.runner_secret = true;
        let claimed = plan(&found);
        assert_eq!(claimed.status.phase, Phase::Creating);
        assert_eq!(
            condition(&claimed, types::SECRETS_READY).reason.as_deref(),
            Some(reasons::ALL_REQUIRED_SECRETS_FOUND)
        );
    }

    #[test]
    fn vertex_mode_without_its_secret_fails_at_once() {
        let s = session("demo");
        let mut observed = observe(&s, None, vec![], 5);
        observed.vertex = true;
        observed.platform.vertex_source = false;
        let plan = plan(&observed);
        assert_eq!(plan.status.phase, Phase::Failed);
        assert_eq!(
            condition(&plan, types::SECRETS_READY).reason.as_deref(),
            Some(reasons::VERTEX_SECRET_MISSING)
        );
    }

    #[test]
    fn the_service_lives_as_long_as_the_job() {
        let s = in_phase(Phase::Running, None);
        let j = job(0, Some(("Complete", "CompletionsReached")));
        let mut observed = observe(&s, Some(&j), vec![], 5);
        observed.service_uid = Some("svc-uid".into());
        let done = plan(&observed);
        assert_eq!(
            done.children,
            vec![
                delete_job(),
                ChildEffect::DeleteService {
                    uid: "svc-uid".into()
                }
            ]
        );
        // Running without its Service (deleted behind our back): made again.
        let live = job(0, None);
        let p = running_pod(1);
        let running = plan(&observe(&s, Some(&live), vec![&p], 5));
        assert_eq!(running.children, vec![ChildEffect::EnsureService]);
    }

    #[test]
    fn a_run_is_claimed_with_a_fresh_token() {
        let s = session("demo");
        let mut observed = observe(&s, None, vec![], 5);
        observed.token_refreshed_at = Some(at(0));
        observed.now = at(0) + signed(REFRESH);
        observed.start_timeout = REFRESH * 2;
        let plan = plan(&observed);
        let position = |effect: &ChildEffect| plan.children.iter().position(|c| c == effect);
        let refresh = position(&ChildEffect::RefreshToken).expect("a refresh");
        assert!(refresh > position(&ChildEffect::EnsureIdentity).unwrap());
        assert!(created_run(&plan).is_some());
        let job_at = plan
            .children
            .iter()
            .position(|c| matches!(c, ChildEffect::CreateJob(_)))
            .unwrap();
        assert!(
            refresh < job_at,
            "before the Job: init-hydrate reads it once"
        );
        let young = super::plan(&observe(&s, None, vec![], 5));
        assert!(!young.children.contains(&ChildEffect::RefreshToken));
    }

    #[test]
    fn old_token_is_refreshed_while_running() {
        let s = in_phase(Phase::Running, None);
        let j = job(0, None);
        let p = running_pod(1);
        let mut observed = observe(&s, Some(&j), vec![&p], 45 * 60 + 1);
        observed.service_uid = Some("svc-uid".into());
        let plan = plan(&observed);
        assert_eq!(plan.children, vec![ChildEffect::RefreshToken]);
        let fresh = plan_at(&s, &j, &p, 60);
        assert!(fresh.children.is_empty());
        assert_eq!(fresh.requeue_after, Some(REFRESH - Duration::from_secs(60)));
    }
}
