//! The session state machine (SPEC §2.1) as pure functions: an [`Observed`] snapshot in, a
//! [`Plan`] out (side effects, the complete new status, when to look again, what to announce).
//! Nothing here talks to the cluster, so every row of the table is unit-tested below.
//!
//! Invariants:
//! - one function per phase; `plan` only dispatches;
//! - a phase's plan is idempotent: planning again from the state it produced changes nothing
//!   beyond what time has made due;
//! - a Job is only created when none exists under the session's Job name;
//! - `IS_RESUME` is true only when an earlier run reached Running (`RunnerStarted` was True).

use std::time::Duration;

use agentic_crds::condition::{is_condition_true, reasons, types};
use agentic_crds::{
    AgenticSession, AgenticSessionStatus, Condition, ConditionStatus, Phase, StoppedReason, keys,
    set_condition,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;

use super::children::RUNNER_CONTAINER;
use crate::projections::{RunnerJob, RunnerPod};

/// Extra wait past a terminating pod's grace period before it is force-deleted.
pub const FORCE_DELETE_AFTER_GRACE: Duration = Duration::from_secs(30);
/// How often a session waiting on Kubernetes (Job deletion, pod termination) is looked at again
/// even if no event arrives.
pub const POLL_WHILE_WAITING: Duration = Duration::from_secs(5);
/// Exit code by which a runner reports that a prerequisite was missing.
pub const PREREQUISITE_EXIT_CODE: i32 = 2;

/// Everything a decision is made from, read from caches by the caller.
#[derive(Debug, Clone)]
pub struct Observed<'a> {
    /// The session as last seen.
    pub session: &'a AgenticSession,
    /// The Job named `<session>-job`, if it exists.
    pub job: Option<&'a RunnerJob>,
    /// Pods labelled `agentic-session=<session>`.
    pub pods: Vec<&'a RunnerPod>,
    /// `ambient-code.io/token-refreshed-at` of the token Secret, if the Secret exists.
    pub token_refreshed_at: Option<Timestamp>,
    /// The current time.
    pub now: Timestamp,
    /// Resolved inactivity timeout (session > ProjectSettings > default); `None` = disabled.
    pub inactivity_timeout: Option<Duration>,
    /// `--start-timeout`.
    pub start_timeout: Duration,
    /// `--token-refresh-after`.
    pub token_refresh_after: Duration,
    /// The spec failed validation that the schema cannot express: `(field, message)`.
    pub invalid_spec: Option<String>,
}

/// A side effect, executed in the listed order. Those marked "after" run after the status write
/// succeeded, so a lost status write never loses a user's request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Create the workspace claim if the operator is configured with a workspace size.
    EnsureWorkspace,
    /// Create ServiceAccount, Role, RoleBinding and token Secret if missing.
    EnsureIdentity,
    /// Create the Job (AlreadyExists counts as success).
    CreateJob {
        /// `IS_RESUME` for the runner.
        is_resume: bool,
    },
    /// Delete the Job with background propagation (NotFound counts as success).
    DeleteJob,
    /// After: delete the Job of a run whose outcome the status now records. Never before the
    /// write: a Job gone while the session still reads Running looks deleted behind our back
    /// and would be made again (a second run).
    RetireJob,
    /// Delete these pods (normal grace).
    DeletePods(Vec<String>),
    /// Delete these pods with grace period 0.
    ForceDeletePods(Vec<String>),
    /// Issue a new ServiceAccount token into the token Secret.
    RefreshToken,
    /// Annotate `desired-phase=Stopped`, `stop-reason=inactivity`, `stop-requested-at=now`.
    RequestInactivityStop,
    /// After: remove `desired-phase`, `stop-requested-at` and `stop-reason`.
    ClearStopAnnotations,
    /// After: remove `desired-phase` (a start request that has been honoured).
    ClearStartRequest,
    /// After: annotate the session with its token Secret and ServiceAccount names (if missing).
    RecordIdentity,
}

impl Effect {
    /// Whether the effect runs after the status write.
    pub fn runs_after_status(&self) -> bool {
        matches!(
            self,
            Effect::ClearStopAnnotations
                | Effect::ClearStartRequest
                | Effect::RecordIdentity
                | Effect::RetireJob
        )
    }
}

/// A duration to record in a metric.
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    /// Pending (startTime) to Running.
    Startup(Duration),
    /// Job created to runner running.
    PodCreation(Duration),
}

/// A Kubernetes Event to publish about the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// Normal or Warning.
    pub warning: bool,
    /// CamelCase reason.
    pub reason: String,
    /// Human-readable message.
    pub message: String,
}

/// What to do for one reconcile.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Side effects in order.
    pub effects: Vec<Effect>,
    /// The complete new status (written only if it differs from the current one).
    pub status: AgenticSessionStatus,
    /// Look at the session again after this long, even without events.
    pub requeue_after: Option<Duration>,
    /// Events to publish.
    pub notes: Vec<Note>,
    /// Durations to record.
    pub observations: Vec<Observation>,
}

/// What the Job says about the run.
#[derive(Debug, Clone, PartialEq, Eq)]
enum JobState {
    Active,
    Deleting,
    Succeeded,
    Failed { reason: String, message: String },
}

/// What the runner pod says.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RunnerState {
    /// No pod yet, or pending without a verdict from the scheduler.
    Waiting,
    /// The scheduler cannot place the pod.
    Unschedulable { reason: String, message: String },
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

/// Computes the plan for the session's current phase.
pub fn plan(observed: &Observed<'_>) -> Plan {
    let status = observed.session.status.clone().unwrap_or_default();
    let mut builder = PlanBuilder::new(observed, status);
    let phase = builder.status.phase;
    if let Some(problem) = &observed.invalid_spec
        && !phase.is_terminal()
    {
        builder.fail(reasons::INVALID_SPEC, problem.clone());
        return builder.finish();
    }
    match phase {
        Phase::Pending => pending(&mut builder),
        Phase::Creating => creating(&mut builder),
        Phase::Running => running(&mut builder),
        Phase::Stopping => stopping(&mut builder),
        Phase::Stopped | Phase::Completed | Phase::Failed => terminal(&mut builder),
    }
    builder.finish()
}

fn pending(b: &mut PlanBuilder<'_, '_>) {
    if b.desired() == Some(keys::DESIRED_PHASE_STOPPED) {
        // Through Stopping, like any stop: Stopped is written only once the request is cleared.
        b.status.stopped_reason = Some(StoppedReason::User);
        b.condition(
            types::READY,
            false,
            reasons::STOPPING,
            "stopped before it started",
        );
        b.enter(Phase::Stopping, "stopped before it started", false);
        b.requeue(Duration::ZERO);
        return;
    }
    match b.job_state() {
        // Finished, but made by this very run: an earlier attempt created it and its status
        // write was lost (a crash, a lost Lease, a conflict). No startTime means no run was
        // ever recorded, so no earlier run could have made it: adopt it below (Creating then
        // records its outcome) instead of running the session a second time.
        Some(JobState::Succeeded | JobState::Failed { .. }) if b.status.start_time.is_none() => {}
        // A finished or dying Job from an earlier run must be gone before a new one is made
        // under the same name.
        Some(JobState::Succeeded | JobState::Failed { .. }) => {
            b.effect(Effect::DeleteJob);
            b.requeue(POLL_WHILE_WAITING);
            return;
        }
        Some(JobState::Deleting) => {
            b.requeue(POLL_WHILE_WAITING);
            return;
        }
        // Active: made by an earlier attempt whose status write was lost; adopt it below.
        Some(JobState::Active) | None => {}
    }
    b.effect(Effect::EnsureWorkspace);
    b.effect(Effect::EnsureIdentity);
    b.effect(Effect::CreateJob {
        is_resume: b.runner_started_before(),
    });
    b.effect(Effect::RecordIdentity);
    if b.desired() == Some(keys::DESIRED_PHASE_RUNNING) {
        b.effect(Effect::ClearStartRequest);
    }
    if b.status.start_time.is_none() {
        b.status.start_time = Some(b.now());
    }
    b.status.job_name = Some(agentic_crds::names::job_name(&b.name()));
    b.condition(
        types::RUNNER_IDENTITY_READY,
        true,
        reasons::PROVISIONED,
        "runner identity provisioned",
    );
    b.condition(
        types::JOB_CREATED,
        true,
        reasons::CREATING,
        "runner Job created",
    );
    b.condition(
        types::READY,
        false,
        reasons::CREATING,
        "waiting for the runner to start",
    );
    b.enter(Phase::Creating, "runner Job created", false);
    b.requeue(b.observed.start_timeout);
}

fn creating(b: &mut PlanBuilder<'_, '_>) {
    if b.desired() == Some(keys::DESIRED_PHASE_STOPPED) {
        return b.stop();
    }
    if b.settled_by_job() {
        return;
    }
    match b.runner_state() {
        RunnerState::Running => b.runner_started(),
        RunnerState::Died { exit_code, detail } => b.fail_from_runner(exit_code, &detail),
        RunnerState::Finished => b.complete(),
        RunnerState::Unschedulable { reason, message } => {
            b.condition(types::POD_SCHEDULED, false, &reason, &message);
            b.wait_for_start();
        }
        RunnerState::Waiting => b.wait_for_start(),
    }
}

fn running(b: &mut PlanBuilder<'_, '_>) {
    if b.desired() == Some(keys::DESIRED_PHASE_STOPPED) {
        return b.stop();
    }
    if b.desired() == Some(keys::DESIRED_PHASE_RUNNING) {
        b.effect(Effect::ClearStartRequest);
    }
    if b.settled_by_job() {
        return;
    }
    match b.runner_state() {
        RunnerState::Died { exit_code, detail } => return b.fail_from_runner(exit_code, &detail),
        RunnerState::Finished => return b.complete(),
        _ => {}
    }
    if let Some(idle_for) = b.inactivity_deadline_passed() {
        b.effect(Effect::RequestInactivityStop);
        b.status.stopped_reason = Some(StoppedReason::Inactivity);
        b.effect(Effect::DeleteJob);
        let message = format!("stopped after {}s without activity", idle_for.as_secs());
        b.condition(types::READY, false, reasons::INACTIVITY_TIMEOUT, &message);
        b.enter(Phase::Stopping, &message, false);
        b.requeue(POLL_WHILE_WAITING);
        return;
    }
    b.schedule_running_timers();
}

fn stopping(b: &mut PlanBuilder<'_, '_>) {
    let job_state = b.job_state();
    if matches!(
        job_state,
        Some(JobState::Active | JobState::Succeeded | JobState::Failed { .. })
    ) {
        b.effect(Effect::DeleteJob);
    }
    let now = b.observed.now;
    let mut force = Vec::new();
    let mut delete = Vec::new();
    let mut next_check = POLL_WHILE_WAITING;
    for pod in &b.observed.pods {
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
            None if job_state.is_none() => delete.push(pod.name_any()),
            None => {}
        }
    }
    if !delete.is_empty() {
        b.effect(Effect::DeletePods(delete));
    }
    if !force.is_empty() {
        b.effect(Effect::ForceDeletePods(force));
    }
    if job_state.is_none() && b.observed.pods.is_empty() {
        if b.desired() == Some(keys::DESIRED_PHASE_STOPPED) {
            // The runner is gone: clear the honoured request first, so that a session reads
            // Stopped only once nothing asks for a stop any more. The clearing patch is an
            // event of its own; the reconcile it causes writes Stopped.
            b.effect(Effect::ClearStopAnnotations);
            b.requeue(POLL_WHILE_WAITING);
            return;
        }
        if b.status.stopped_reason.is_none() {
            b.status.stopped_reason = Some(b.stop_reason());
        }
        b.status.completion_time = Some(b.now());
        b.condition(
            types::READY,
            false,
            reasons::STOPPED_BY_USER,
            "session stopped",
        );
        b.enter(Phase::Stopped, "runner stopped", false);
        return;
    }
    b.requeue(next_check);
}

fn terminal(b: &mut PlanBuilder<'_, '_>) {
    let job_state = b.job_state();
    if b.desired() == Some(keys::DESIRED_PHASE_RUNNING) {
        if matches!(
            job_state,
            Some(JobState::Active | JobState::Succeeded | JobState::Failed { .. })
        ) {
            b.effect(Effect::DeleteJob);
        }
        if job_state.is_some() {
            b.requeue(POLL_WHILE_WAITING);
            return;
        }
        b.status.start_time = Some(b.now());
        b.status.completion_time = None;
        b.status.stopped_reason = None;
        b.status.job_name = None;
        b.condition(types::READY, false, reasons::CREATING, "restart requested");
        b.enter(Phase::Pending, "restart requested", false);
        b.effect(Effect::ClearStartRequest);
        b.requeue(Duration::ZERO);
        return;
    }
    // The outcome is recorded: a Job left behind (or made by a stale retry) is cleaned up.
    if matches!(
        job_state,
        Some(JobState::Active | JobState::Succeeded | JobState::Failed { .. })
    ) {
        b.effect(Effect::DeleteJob);
    }
    if b.desired() == Some(keys::DESIRED_PHASE_STOPPED) && b.status.phase == Phase::Stopped {
        b.effect(Effect::ClearStopAnnotations);
    }
}

/// Accumulates a plan; the helpers are the verbs of the state machine.
struct PlanBuilder<'o, 'a> {
    observed: &'o Observed<'a>,
    original: AgenticSessionStatus,
    status: AgenticSessionStatus,
    effects: Vec<Effect>,
    requeue_after: Option<Duration>,
    notes: Vec<Note>,
    observations: Vec<Observation>,
}

impl<'o, 'a> PlanBuilder<'o, 'a> {
    fn new(observed: &'o Observed<'a>, status: AgenticSessionStatus) -> Self {
        PlanBuilder {
            observed,
            original: status.clone(),
            status,
            effects: Vec::new(),
            requeue_after: None,
            notes: Vec::new(),
            observations: Vec::new(),
        }
    }

    fn finish(mut self) -> Plan {
        if self.status != self.original {
            self.status.observed_generation = self.observed.session.metadata.generation;
        }
        Plan {
            effects: self.effects,
            status: self.status,
            requeue_after: self.requeue_after,
            notes: self.notes,
            observations: self.observations,
        }
    }

    fn name(&self) -> String {
        self.observed.session.name_any()
    }

    fn now(&self) -> Time {
        Time(self.observed.now)
    }

    fn desired(&self) -> Option<&'a str> {
        self.observed
            .session
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(keys::DESIRED_PHASE_ANNOTATION))
            .map(String::as_str)
    }

    fn stop_reason(&self) -> StoppedReason {
        let annotations = self.observed.session.metadata.annotations.as_ref();
        match annotations.and_then(|a| a.get(keys::STOP_REASON_ANNOTATION)) {
            Some(reason) if reason == StoppedReason::Inactivity.as_str() => {
                StoppedReason::Inactivity
            }
            _ => StoppedReason::User,
        }
    }

    fn effect(&mut self, effect: Effect) {
        if !self.effects.contains(&effect) {
            self.effects.push(effect);
        }
    }

    fn requeue(&mut self, after: Duration) {
        self.requeue_after = Some(self.requeue_after.map_or(after, |r| r.min(after)));
    }

    fn condition(&mut self, type_: &str, holds: bool, reason: &str, message: &str) {
        let status = if holds {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        };
        let generation = self.observed.session.metadata.generation;
        let now = self.now();
        set_condition(
            &mut self.status.conditions,
            Condition::new(type_, status, reason, message).with_observed_generation(generation),
            &now,
        );
    }

    /// Moves to `phase` with `message`, announcing the transition.
    fn enter(&mut self, phase: Phase, message: &str, warning: bool) {
        if self.status.phase != phase {
            self.notes.push(Note {
                warning,
                reason: phase.as_str().to_string(),
                message: format!("{} -> {}: {message}", self.status.phase, phase),
            });
        }
        self.status.phase = phase;
        self.status.message = Some(message.to_string());
    }

    fn runner_started_before(&self) -> bool {
        is_condition_true(&self.status.conditions, types::RUNNER_STARTED)
    }

    fn job_state(&self) -> Option<JobState> {
        let job = self.observed.job?;
        if job.metadata.deletion_timestamp.is_some() {
            return Some(JobState::Deleting);
        }
        let conditions = job.status.as_ref().and_then(|s| s.conditions.as_ref());
        for condition in conditions.into_iter().flatten() {
            if condition.status != "True" {
                continue;
            }
            match condition.type_.as_str() {
                "Complete" | "SuccessCriteriaMet" => return Some(JobState::Succeeded),
                "Failed" | "FailureTarget" => {
                    return Some(JobState::Failed {
                        reason: condition.reason.clone().unwrap_or_default(),
                        message: condition.message.clone().unwrap_or_default(),
                    });
                }
                _ => {}
            }
        }
        Some(JobState::Active)
    }

    /// The newest pod's view of the runner.
    fn runner_state(&self) -> RunnerState {
        let Some(pod) = self
            .observed
            .pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .max_by_key(|p| p.metadata.creation_timestamp.clone().map(|t| t.0))
        else {
            return RunnerState::Waiting;
        };
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

    /// Acts on the Job's verdict: gone or going → recreate; succeeded → complete; failed →
    /// fail. Returns false (doing nothing) while the Job is active.
    fn settled_by_job(&mut self) -> bool {
        match self.job_state() {
            None | Some(JobState::Deleting) => self.recreate_job(),
            Some(JobState::Succeeded) => self.complete(),
            Some(JobState::Failed { reason, message }) => self.fail_from_job(&reason, &message),
            Some(JobState::Active) => return false,
        }
        true
    }

    fn stop(&mut self) {
        self.effect(Effect::DeleteJob);
        let reason = self.stop_reason();
        self.status.stopped_reason = Some(reason);
        let message = match reason {
            StoppedReason::Inactivity => "stop requested after inactivity",
            _ => "stop requested",
        };
        self.condition(types::READY, false, reasons::STOPPING, message);
        self.enter(Phase::Stopping, message, false);
        self.requeue(POLL_WHILE_WAITING);
    }

    fn recreate_job(&mut self) {
        self.effect(Effect::EnsureWorkspace);
        self.effect(Effect::EnsureIdentity);
        self.effect(Effect::CreateJob {
            is_resume: self.runner_started_before(),
        });
        self.condition(
            types::JOB_CREATED,
            true,
            reasons::JOB_MISSING,
            "runner Job was missing and has been recreated",
        );
        self.condition(
            types::READY,
            false,
            reasons::JOB_MISSING,
            "runner Job recreated",
        );
        if self.status.phase != Phase::Creating {
            self.notes.push(Note {
                warning: true,
                reason: reasons::JOB_MISSING.into(),
                message: "runner Job was missing and has been recreated".into(),
            });
        }
        self.enter(Phase::Creating, "runner Job recreated", true);
        self.requeue(self.observed.start_timeout);
    }

    fn runner_started(&mut self) {
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
        self.condition(
            types::POD_SCHEDULED,
            true,
            reasons::RUNNING,
            "runner pod scheduled",
        );
        self.condition(
            types::RUNNER_STARTED,
            true,
            reasons::RUNNING,
            "runner container running",
        );
        self.condition(types::READY, true, reasons::RUNNING, "session is running");
        self.enter(Phase::Running, "runner is running", false);
        self.schedule_running_timers();
    }

    /// While Creating: fail after the start timeout, counted from the Job's creation.
    fn wait_for_start(&mut self) {
        let created = self
            .observed
            .job
            .and_then(|j| j.metadata.creation_timestamp.clone())
            .map(|t| t.0)
            .unwrap_or(self.observed.now);
        let deadline = created + signed(self.observed.start_timeout);
        if self.observed.now >= deadline {
            let message = format!(
                "runner did not start within {}s",
                self.observed.start_timeout.as_secs()
            );
            self.fail(reasons::START_TIMEOUT, message);
        } else {
            self.requeue(until(self.observed.now, deadline));
        }
    }

    /// While Running: look again when the inactivity timeout or the token refresh falls due.
    fn schedule_running_timers(&mut self) {
        let now = self.observed.now;
        if let Some(timeout) = self.observed.inactivity_timeout {
            let due = self.last_activity() + signed(timeout);
            self.requeue(until(now, due));
        }
        match self.observed.token_refreshed_at {
            Some(at) => {
                let due = at + signed(self.observed.token_refresh_after);
                if now >= due {
                    self.effect(Effect::RefreshToken);
                    self.requeue(self.observed.token_refresh_after);
                } else {
                    self.requeue(until(now, due));
                }
            }
            // The Secret is missing (deleted behind our back): provision it again.
            None => self.effect(Effect::EnsureIdentity),
        }
    }

    fn last_activity(&self) -> Timestamp {
        let status = &self.status;
        status
            .last_activity_time
            .as_ref()
            .or(status.start_time.as_ref())
            .or(self.observed.session.metadata.creation_timestamp.as_ref())
            .map(|t| t.0)
            .unwrap_or(self.observed.now)
    }

    /// `Some(idle time)` when the session has been idle at least its inactivity timeout.
    fn inactivity_deadline_passed(&self) -> Option<Duration> {
        let timeout = self.observed.inactivity_timeout?;
        let idle = until(self.last_activity(), self.observed.now);
        (idle >= timeout).then_some(idle)
    }

    fn complete(&mut self) {
        self.effect(Effect::RetireJob);
        self.status.completion_time = Some(self.now());
        self.condition(
            types::READY,
            false,
            reasons::COMPLETED,
            "runner finished successfully",
        );
        self.enter(Phase::Completed, "runner finished successfully", false);
    }

    fn fail_from_job(&mut self, job_reason: &str, job_message: &str) {
        if job_reason == "DeadlineExceeded" {
            self.status.stopped_reason = Some(StoppedReason::Timeout);
            let message = format!(
                "session exceeded its timeout of {}s",
                self.observed.session.spec.timeout
            );
            return self.fail(reasons::TIMEOUT, message);
        }
        // Prefer what the runner itself reported.
        if let RunnerState::Died { exit_code, detail } = self.runner_state() {
            return self.fail_from_runner(exit_code, &detail);
        }
        let message = format!("runner Job failed: {job_reason}: {job_message}");
        self.fail(reasons::RUNNER_FAILED, message);
    }

    fn fail_from_runner(&mut self, exit_code: Option<i32>, detail: &str) {
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

    fn fail(&mut self, reason: &str, message: String) {
        if self.observed.job.is_some() {
            self.effect(Effect::RetireJob);
        }
        self.status.completion_time = Some(self.now());
        self.condition(types::READY, false, reason, &message);
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

fn signed(duration: Duration) -> SignedDuration {
    SignedDuration::try_from(duration).unwrap_or(SignedDuration::MAX)
}

/// Non-negative time from `from` to `to`.
fn until(from: Timestamp, to: Timestamp) -> Duration {
    Duration::try_from(to.duration_since(from)).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::fixtures::{
        at, job, running_pod, session, terminated_pod, unschedulable_pod,
    };
    use agentic_crds::condition::{find_condition, types};

    const START_TIMEOUT: Duration = Duration::from_secs(600);
    const REFRESH: Duration = Duration::from_secs(45 * 60);

    /// A session in `phase`, optionally with a desired-phase annotation.
    fn in_phase(phase: Phase, desired: Option<&str>) -> AgenticSession {
        let mut s = session("demo");
        s.status = Some(AgenticSessionStatus {
            phase,
            start_time: Some(Time(at(0))),
            ..Default::default()
        });
        if let Some(d) = desired {
            s.metadata.annotations =
                Some([(keys::DESIRED_PHASE_ANNOTATION.to_string(), d.to_string())].into());
        }
        s
    }

    fn observe<'a>(
        session: &'a AgenticSession,
        job: Option<&'a RunnerJob>,
        pods: Vec<&'a RunnerPod>,
        now: i64,
    ) -> Observed<'a> {
        Observed {
            session,
            job,
            pods,
            token_refreshed_at: Some(at(0)),
            now: at(now),
            inactivity_timeout: None,
            start_timeout: START_TIMEOUT,
            token_refresh_after: REFRESH,
            invalid_spec: None,
        }
    }

    fn condition<'p>(plan: &'p Plan, type_: &str) -> &'p Condition {
        find_condition(&plan.status.conditions, type_)
            .unwrap_or_else(|| panic!("no {type_} condition in {:?}", plan.status.conditions))
    }

    #[test]
    fn pending_session_gets_identity_and_job_and_moves_to_creating() {
        let s = session("demo");
        let plan = plan(&observe(&s, None, vec![], 5));
        assert_eq!(
            plan.effects,
            vec![
                Effect::EnsureWorkspace,
                Effect::EnsureIdentity,
                Effect::CreateJob { is_resume: false },
                Effect::RecordIdentity,
            ]
        );
        assert_eq!(plan.status.phase, Phase::Creating);
        assert_eq!(plan.status.job_name.as_deref(), Some("demo-job"));
        assert_eq!(plan.status.start_time, Some(Time(at(5))));
        assert_eq!(plan.status.observed_generation, Some(1));
        assert_eq!(plan.requeue_after, Some(START_TIMEOUT));
        assert_eq!(plan.notes.len(), 1, "the transition is announced");
    }

    #[test]
    fn pending_first_run_adopts_its_own_finished_job_instead_of_running_again() {
        let s = session("demo"); // no status: no run was ever recorded
        let done = job(1, Some(("Complete", "Completed")));
        let plan = plan(&observe(&s, Some(&done), vec![], 5));
        assert!(
            !plan.effects.contains(&Effect::DeleteJob),
            "{:?}",
            plan.effects
        );
        assert_eq!(plan.status.phase, Phase::Creating);
    }

    #[test]
    fn pending_restart_replaces_the_finished_job_of_the_earlier_run() {
        let s = in_phase(Phase::Pending, None); // startTime set by the restart
        let done = job(1, Some(("Complete", "Completed")));
        let plan = plan(&observe(&s, Some(&done), vec![], 5));
        assert_eq!(plan.effects, vec![Effect::DeleteJob]);
        assert_eq!(plan.status.phase, Phase::Pending);
    }

    #[test]
    fn a_finished_runs_job_is_deleted_only_after_its_outcome_is_written() {
        assert!(Effect::RetireJob.runs_after_status());
        assert!(!Effect::DeleteJob.runs_after_status());
    }

    #[test]
    fn identity_is_recorded_on_the_session_after_the_status_write() {
        // Patching the session first would change its resourceVersion and void the guarded
        // status write (a conflict on every session's first reconcile).
        assert!(Effect::RecordIdentity.runs_after_status());
        assert!(!Effect::CreateJob { is_resume: false }.runs_after_status());
    }

    #[test]
    fn pending_session_asked_to_stop_goes_stopping_without_a_job() {
        let s = in_phase(Phase::Pending, Some("Stopped"));
        let plan = plan(&observe(&s, None, vec![], 5));
        assert_eq!(plan.status.phase, Phase::Stopping);
        assert_eq!(plan.status.stopped_reason, Some(StoppedReason::User));
        assert!(plan.effects.is_empty(), "{:?}", plan.effects);
        assert_eq!(plan.requeue_after, Some(Duration::ZERO));
    }

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
    fn runner_not_started_within_start_timeout_fails_and_deletes_the_job() {
        let s = in_phase(Phase::Creating, None);
        let j = job(0, None);
        let p = unschedulable_pod(1);
        let plan = plan(&observe(&s, Some(&j), vec![&p], 600));
        assert_eq!(plan.status.phase, Phase::Failed);
        assert_eq!(
            condition(&plan, types::READY).reason.as_deref(),
            Some(reasons::START_TIMEOUT)
        );
        assert!(plan.effects.contains(&Effect::RetireJob));
    }

    #[test]
    fn stop_while_creating_or_running_deletes_the_job_and_moves_to_stopping() {
        for phase in [Phase::Creating, Phase::Running] {
            let s = in_phase(phase, Some("Stopped"));
            let j = job(0, None);
            let plan = plan(&observe(&s, Some(&j), vec![], 5));
            assert_eq!(plan.status.phase, Phase::Stopping, "from {phase}");
            assert_eq!(plan.effects, vec![Effect::DeleteJob]);
            assert_eq!(plan.status.stopped_reason, Some(StoppedReason::User));
        }
    }

    #[test]
    fn completed_job_completes_the_session_and_is_deleted() {
        for phase in [Phase::Creating, Phase::Running] {
            let s = in_phase(phase, None);
            let j = job(0, Some(("Complete", "CompletionsReached")));
            let plan = plan(&observe(&s, Some(&j), vec![], 5));
            assert_eq!(plan.status.phase, Phase::Completed);
            assert!(plan.status.completion_time.is_some());
            assert_eq!(plan.effects, vec![Effect::RetireJob]);
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
            assert!(plan.effects.contains(&Effect::RetireJob));
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
    fn runner_dying_while_running_fails_the_session_before_the_job_notices() {
        let s = in_phase(Phase::Running, None);
        let j = job(0, None);
        let p = terminated_pod(1, 137);
        let plan = plan(&observe(&s, Some(&j), vec![&p], 5));
        assert_eq!(plan.status.phase, Phase::Failed);
        assert!(plan.status.message.unwrap().contains("137"));
    }

    #[test]
    fn job_deleted_behind_our_back_is_recreated() {
        for phase in [Phase::Creating, Phase::Running] {
            let mut s = in_phase(phase, None);
            if phase == Phase::Running {
                let status = s.status.as_mut().unwrap();
                status.conditions.push(Condition::new(
                    types::RUNNER_STARTED,
                    ConditionStatus::True,
                    "Running",
                    "",
                ));
            }
            let plan = plan(&observe(&s, None, vec![], 5));
            assert_eq!(plan.status.phase, Phase::Creating);
            assert!(plan.effects.contains(&Effect::CreateJob {
                is_resume: phase == Phase::Running
            }));
        }
    }

    #[test]
    fn idle_running_session_is_stopped_for_inactivity() {
        let s = in_phase(Phase::Running, None);
        let j = job(0, None);
        let p = running_pod(1);
        let mut observed = observe(&s, Some(&j), vec![&p], 100);
        observed.inactivity_timeout = Some(Duration::from_secs(60));
        let plan = plan(&observed);
        assert_eq!(plan.status.phase, Phase::Stopping);
        assert_eq!(plan.status.stopped_reason, Some(StoppedReason::Inactivity));
        assert_eq!(
            plan.effects,
            vec![Effect::RequestInactivityStop, Effect::DeleteJob]
        );
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
    fn old_token_is_refreshed_while_running() {
        let s = in_phase(Phase::Running, None);
        let j = job(0, None);
        let p = running_pod(1);
        let plan = plan(&observe(&s, Some(&j), vec![&p], 45 * 60 + 1));
        assert_eq!(plan.effects, vec![Effect::RefreshToken]);
        let fresh = plan_at(&s, &j, &p, 60);
        assert!(fresh.effects.is_empty());
        assert_eq!(fresh.requeue_after, Some(REFRESH - Duration::from_secs(60)));
    }

    fn plan_at(s: &AgenticSession, j: &RunnerJob, p: &RunnerPod, now: i64) -> Plan {
        plan(&observe(s, Some(j), vec![p], now))
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
        assert_eq!(clearing.effects, vec![Effect::ClearStopAnnotations]);

        s.metadata.annotations = None; // what the clearing patch leaves
        let stopped = plan(&observe(&s, None, vec![], 6));
        assert_eq!(stopped.status.phase, Phase::Stopped);
        assert_eq!(stopped.status.stopped_reason, Some(StoppedReason::User));
        assert!(stopped.effects.is_empty(), "{:?}", stopped.effects);
        assert!(stopped.status.completion_time.is_some());
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
    fn pods_stuck_terminating_past_grace_and_30s_are_force_deleted() {
        let s = in_phase(Phase::Stopping, Some("Stopped"));
        let mut p = running_pod(0);
        p.metadata.deletion_timestamp = Some(Time(at(10)));
        let early = plan(&observe(&s, None, vec![&p], 20));
        assert!(early.effects.is_empty());
        assert_eq!(early.status.phase, Phase::Stopping);
        assert_eq!(early.requeue_after, Some(Duration::from_secs(5)));
        let late = plan(&observe(&s, None, vec![&p], 40));
        assert_eq!(
            late.effects,
            vec![Effect::ForceDeletePods(vec!["demo-job-0".into()])]
        );
    }

    #[test]
    fn restart_of_a_finished_session_waits_for_the_old_job_then_goes_pending() {
        let mut s = in_phase(Phase::Completed, Some("Running"));
        s.status.as_mut().unwrap().completion_time = Some(Time(at(50)));
        let old = job(0, Some(("Complete", "CompletionsReached")));
        let waiting = plan(&observe(&s, Some(&old), vec![], 100));
        assert_eq!(waiting.status.phase, Phase::Completed);
        assert_eq!(waiting.effects, vec![Effect::DeleteJob]);

        let plan = plan(&observe(&s, None, vec![], 100));
        assert_eq!(plan.status.phase, Phase::Pending);
        assert_eq!(plan.status.start_time, Some(Time(at(100))));
        assert_eq!(plan.status.completion_time, None);
        assert_eq!(plan.effects, vec![Effect::ClearStartRequest]);
        assert_eq!(plan.requeue_after, Some(Duration::ZERO));
    }

    #[test]
    fn restarted_session_resumes_only_if_an_earlier_run_started() {
        let mut never_ran = in_phase(Phase::Pending, Some("Running"));
        never_ran
            .status
            .as_mut()
            .unwrap()
            .conditions
            .push(Condition::new(
                types::JOB_CREATED,
                ConditionStatus::True,
                "Creating",
                "",
            ));
        let plan_first = plan(&observe(&never_ran, None, vec![], 5));
        assert!(
            plan_first
                .effects
                .contains(&Effect::CreateJob { is_resume: false })
        );

        let mut ran = never_ran.clone();
        ran.status.as_mut().unwrap().conditions.push(Condition::new(
            types::RUNNER_STARTED,
            ConditionStatus::True,
            "Running",
            "",
        ));
        let plan_again = plan(&observe(&ran, None, vec![], 5));
        assert!(
            plan_again
                .effects
                .contains(&Effect::CreateJob { is_resume: true })
        );
    }

    #[test]
    fn finished_session_cleans_up_a_leftover_job() {
        let s = in_phase(Phase::Failed, None);
        let j = job(0, None);
        let plan = plan(&observe(&s, Some(&j), vec![], 5));
        assert_eq!(plan.effects, vec![Effect::DeleteJob]);
        assert_eq!(plan.status, s.status.clone().unwrap(), "status untouched");
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
        assert!(plan.effects.is_empty());
        assert!(plan.requeue_after.is_none());
    }

    #[test]
    fn planning_again_from_the_result_changes_nothing() {
        let s = in_phase(Phase::Creating, None);
        let j = job(2, None);
        let p = running_pod(3);
        let first = plan(&observe(&s, Some(&j), vec![&p], 10));
        let mut after = s.clone();
        after.status = Some(first.status.clone());
        let second = plan(&observe(&after, Some(&j), vec![&p], 11));
        assert_eq!(second.status, first.status);
        assert!(second.notes.is_empty());
        assert!(second.effects.is_empty());
    }
}
