//! The session state machine (SPEC §2.1) as pure functions: an [`Observed`] snapshot in, a
//! [`Plan`] out (the complete new status, side effects, when to look again, what to announce).
//! Nothing here talks to the cluster, so every row of the table is unit-tested below.
//!
//! Invariants:
//! - one function per phase; `plan` only dispatches;
//! - a plan is carried out in the order its shape gives: the status write first (guarded by
//!   the resourceVersion that was read), then the [`ChildEffect`]s, then the
//!   [`SessionEffect`]s. Nothing that changes the session can run before the guarded write,
//!   and a run's Job is only created after the write that claims the run (Pending → Creating):
//!   a stale view fails that write and starts nothing;
//! - only what the session owns is acted on or believed: a Job owned by another UID is waited
//!   out (garbage collection), an orphan carrying the session's name is replaced, never
//!   adopted, a Job made for a newer run than this view knows marks the view stale, and a pod
//!   counts only for the Job that made it;
//! - a phase's plan is idempotent: planning again from the state it produced changes nothing
//!   beyond what time has made due;
//! - `IS_RESUME` is true only when an earlier run reached Running (`RunnerStarted` was True);
//! - `spec.timeout` is advisory (the runner's `TIMEOUT`) unless enforcement is on; then it
//!   bounds the whole run: a recreated Job gets only the time left.

use std::cmp::Ordering;
use std::time::Duration;

use agentic_crds::condition::{is_condition_true, reasons, types};
use agentic_crds::{
    AgenticSession, AgenticSessionStatus, Condition, ConditionStatus, Phase, StatusSchema,
    StoppedReason, keys, set_condition,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;

use super::children::{JOB_TTL_BACKSTOP_SECONDS, RUNNER_CONTAINER};
use super::drift;
use super::platform::{PlatformView, S3Settings};
use super::refusals::PodRefusal;
use crate::cache::projections::{RunnerChild, RunnerJob, RunnerPod};
use crate::observability::events::Note;

/// Extra wait past a terminating pod's grace period before it is force-deleted.
pub const FORCE_DELETE_AFTER_GRACE: Duration = Duration::from_secs(30);
/// How often a session waiting on Kubernetes (Job deletion, pod termination, garbage
/// collection) is looked at again even if no event arrives.
pub const POLL_WHILE_WAITING: Duration = Duration::from_secs(5);
/// How soon a session whose cached copy is behind its own children is looked at again.
pub const STALE_VIEW_RECHECK: Duration = Duration::from_millis(200);
/// How long after a run is claimed only the claiming replica may make its Job: another actor
/// (a replica without leader election, a restarted operator) that finds the Job missing waits
/// this long, so a claimer still provisioning never races it into a second Job.
pub const CLAIM_GRACE: Duration = Duration::from_secs(60);
/// How long a runner pod may wait on its image (`ErrImagePull`, `ImagePullBackOff`) before the
/// session fails: a registry hiccup gets the kubelet's first retries (10 s, 20 s), a wrong
/// image fails well before `--start-timeout`. Other waiting reasons that cannot clear by
/// themselves ([`CANNOT_START_AT_ONCE`]) fail at once, as the original did.
pub const IMAGE_PULL_GRACE: Duration = Duration::from_secs(60);
/// How long the API server may keep refusing a runner Job's pod (`FailedCreate`: a quota, a
/// LimitRange, an admission policy) before the session fails: long enough for a quota freed by
/// a session that is ending, far below `--start-timeout`.
pub const POD_REFUSAL_GRACE: Duration = Duration::from_secs(30);
/// Waiting reasons of the kubelet after which a container never starts by itself.
pub const CANNOT_START_AT_ONCE: [&str; 3] = [
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
];
/// Waiting reasons of an image that cannot be pulled (failing after [`IMAGE_PULL_GRACE`]).
pub const CANNOT_PULL: [&str; 2] = ["ErrImagePull", "ImagePullBackOff"];
/// Exit code by which a runner reports that a prerequisite was missing.
pub const PREREQUISITE_EXIT_CODE: i32 = 2;

/// Everything a decision is made from, read from caches by the caller.
#[derive(Debug, Clone)]
pub struct Observed<'a> {
    /// The session as last seen.
    pub session: &'a AgenticSession,
    /// The Job named `<session>-job`, if one exists (whoever owns it).
    pub job: Option<&'a RunnerJob>,
    /// Pods labelled `agentic-session=<session>` (whichever Job made them).
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
    /// `--enforce-session-timeout`: `spec.timeout` bounds the whole run.
    pub enforce_timeout: bool,
    /// What the installed CRD keeps of a status write.
    pub status_schema: StatusSchema,
    /// The spec failed validation that the schema cannot express: `(field, message)`.
    pub invalid_spec: Option<String>,
    /// What the session's namespace offers its runner (credentials, S3, CA bundle).
    pub platform: PlatformView,
    /// Vertex mode is on.
    pub vertex: bool,
    /// The state containers' S3 settings.
    pub s3: S3Settings,
    /// UID of the session's Service `session-<name>`, if it exists and is the session's.
    pub service_uid: Option<String>,
    /// A Service `session-<name>` exists that is not the session's (the original operator's,
    /// owned by its pod; or an earlier session's, being garbage-collected).
    pub foreign_service: bool,
    /// This replica claimed the session's current run (so it may make its Job at once).
    pub claimed_here: bool,
    /// The API server's refusal to create the pod of the session's current Job, if any.
    pub pod_refusal: Option<PodRefusal>,
    /// How telling the runner about the current generation's spec is going.
    pub sync: SyncView,
}

/// The state of the runner calls for the session's current generation (SPEC §5.6).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SyncView {
    /// None made yet.
    #[default]
    Idle,
    /// Being made (off the worker: a slow runner holds no worker).
    InFlight,
    /// All made successfully.
    Succeeded,
    /// One failed: the runner's answer (or why it gave none).
    Failed {
        /// The failed call was the workflow's (else a repository's).
        workflow: bool,
        /// What the runner answered.
        message: String,
    },
}

/// The run a Job is created for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSpec {
    /// `IS_RESUME` for the runner.
    pub is_resume: bool,
    /// The Job's `activeDeadlineSeconds`: with the timeout enforced, what is left of
    /// `spec.timeout` for this run; otherwise none.
    pub deadline_seconds: Option<i64>,
    /// The run's `status.startTime`, stamped on the Job (`ambient-code.io/run-started-at`).
    pub started_at: Time,
}

/// A change to the session's children (or its token), made after the status write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChildEffect {
    /// Create the workspace claim if the operator is configured with a workspace size.
    EnsureWorkspace,
    /// Create ServiceAccount, Role, RoleBinding and token Secret where missing (replacing
    /// orphans; waiting out leftovers of another owner).
    EnsureIdentity,
    /// Copy the shared Secrets the runner references into the namespace (or refresh them).
    EnsureCopies,
    /// Create the Service `session-<name>` in front of the runner.
    EnsureService,
    /// Delete exactly this Service (UID precondition): the run it served has ended.
    DeleteService {
        /// The Service's UID.
        uid: String,
    },
    /// Create the Job for a run.
    CreateJob(RunSpec),
    /// Delete exactly this Job (a UID precondition: a Job made since under the same name is
    /// never touched), with background propagation.
    DeleteJob {
        /// The Job's UID.
        uid: String,
    },
    /// Delete these pods (normal grace).
    DeletePods(Vec<String>),
    /// Delete these pods with grace period 0.
    ForceDeletePods(Vec<String>),
    /// Issue a new ServiceAccount token into the token Secret.
    RefreshToken,
}

/// A change to the session's own metadata, made last (after the status write and the child
/// effects). Each is guarded: it never erases or overrides a newer request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEffect {
    /// Annotate `desired-phase=Stopped`, `stop-reason=inactivity`, `stop-requested-at=now`,
    /// only if the session has not changed since the status write.
    RequestInactivityStop,
    /// Remove `desired-phase`, `stop-requested-at` and `stop-reason`, if `desired-phase` is
    /// still `Stopped`.
    ClearStopAnnotations,
    /// Remove `desired-phase` if it still says `Running` (a start request that was honoured).
    ClearStartRequest,
    /// Annotate the session with its token Secret and ServiceAccount names (if missing).
    RecordIdentity,
    /// Remove `force-execute-prompt` if it still says `true` (its run's Job now exists).
    ClearForceExecutePrompt,
}

/// A duration to record in a metric.
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    /// Pending (startTime) to Running.
    Startup(Duration),
    /// Job created to runner running.
    PodCreation(Duration),
}

/// What to do for one reconcile, in the order it is done.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The complete new status, written first (only if it differs from the current one).
    pub status: AgenticSessionStatus,
    /// Then these, in order.
    pub children: Vec<ChildEffect>,
    /// Then these, in order.
    pub session: Vec<SessionEffect>,
    /// Look at the session again after this long, even without events.
    pub requeue_after: Option<Duration>,
    /// Events to publish once the status is written.
    pub notes: Vec<Note>,
    /// Durations to record once the status is written.
    pub observations: Vec<Observation>,
    /// Start telling the runner about the spec: these calls, in order.
    pub sync: Option<Vec<drift::RunnerCall>>,
    /// The status records the runner calls' outcome (forget it once written).
    pub sync_recorded: bool,
    /// The runner calls failed: after the status write, fail the reconcile (backoff retry).
    pub sync_failed: Option<String>,
}

/// What the Job says about the run.
#[derive(Debug, Clone, PartialEq, Eq)]
enum JobState {
    Active,
    Deleting,
    Succeeded,
    Failed { reason: String, message: String },
}

/// Whose the Job under the session's name is, and for which run.
#[derive(Debug, Clone, PartialEq, Eq)]
enum JobView {
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
enum RunnerState {
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
enum Runner {
    /// This operator's Job (its UID).
    Job(String),
    /// The original operator's bare pod `<session>-runner` (its name): a session it started
    /// before the switch (SPEC §7.6), followed until it ends, never replaced while it runs.
    OriginalPod(String),
}

/// Computes the plan for the session's current phase.
pub fn plan(observed: &Observed<'_>) -> Plan {
    let status = observed.session.status.clone().unwrap_or_default();
    let mut builder = PlanBuilder::new(observed, status);
    let phase = builder.status.phase;
    if let Some(problem) = &observed.invalid_spec
        && phase == Phase::Pending
    {
        builder.fail(reasons::INVALID_SPEC, problem.clone());
        return builder.finish();
    }
    match phase {
        Phase::Pending => pending(&mut builder),
        Phase::Creating | Phase::Running => active(&mut builder),
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
    if b.start_deadline_passed(b.run_start()) {
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
fn active(b: &mut PlanBuilder<'_, '_>) {
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
    let state = b.runner_state(&job_uid);
    b.follow(Runner::Job(job_uid), state);
}

fn stopping(b: &mut PlanBuilder<'_, '_>) {
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
            StoppedReason::Inactivity => (reasons::INACTIVITY_TIMEOUT, "stopped after inactivity"),
            _ => (reasons::STOPPED_BY_USER, "session stopped"),
        };
        b.condition(types::READY, false, ready_reason, message);
        b.enter(Phase::Stopped, "runner stopped", false);
        return;
    }
    b.requeue(next_check);
}

fn terminal(b: &mut PlanBuilder<'_, '_>) {
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
            "restart requested",
        );
        b.condition(types::READY, false, reasons::CREATING, "restart requested");
        b.enter(Phase::Pending, "restart requested", false);
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
                    "nothing left to delete",
                );
            }
        }
    }
    if b.desired() == Some(keys::DESIRED_PHASE_STOPPED) && b.status.phase == Phase::Stopped {
        b.session(SessionEffect::ClearStopAnnotations);
    }
}

/// Accumulates a plan; the helpers are the verbs of the state machine.
struct PlanBuilder<'o, 'a> {
    observed: &'o Observed<'a>,
    original: AgenticSessionStatus,
    status: AgenticSessionStatus,
    children: Vec<ChildEffect>,
    session: Vec<SessionEffect>,
    requeue_after: Option<Duration>,
    notes: Vec<Note>,
    observations: Vec<Observation>,
    sync: Option<Vec<drift::RunnerCall>>,
    sync_recorded: bool,
    sync_failed: Option<String>,
    /// The runner gets (or has been told) the current spec in this plan: a Job is made from
    /// it, or the live-change calls succeeded.
    spec_applied: bool,
}

impl<'o, 'a> PlanBuilder<'o, 'a> {
    fn new(observed: &'o Observed<'a>, status: AgenticSessionStatus) -> Self {
        PlanBuilder {
            observed,
            original: status.clone(),
            status,
            children: Vec::new(),
            session: Vec::new(),
            requeue_after: None,
            notes: Vec::new(),
            observations: Vec::new(),
            sync: None,
            sync_recorded: false,
            sync_failed: None,
            spec_applied: false,
        }
    }

    /// `observedGeneration` advances with a status change, except while a run is live
    /// (Creating, Running) and its runner has not been given the current spec: then a spec
    /// change is still pending for the runner (SPEC §5.6).
    fn finish(mut self) -> Plan {
        self.observed.status_schema.fit(&mut self.status);
        let live = matches!(self.status.phase, Phase::Creating | Phase::Running);
        if self.status != self.original && (self.spec_applied || !live) {
            self.status.observed_generation = self.observed.session.metadata.generation;
        }
        Plan {
            status: self.status,
            children: self.children,
            session: self.session,
            requeue_after: self.requeue_after,
            notes: self.notes,
            observations: self.observations,
            sync: self.sync,
            sync_recorded: self.sync_recorded,
            sync_failed: self.sync_failed,
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

    fn child(&mut self, effect: ChildEffect) {
        if !self.children.contains(&effect) {
            self.children.push(effect);
        }
    }

    fn session(&mut self, effect: SessionEffect) {
        if !self.session.contains(&effect) {
            self.session.push(effect);
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
        self.set_condition(type_, status, reason, message);
    }

    fn set_condition(&mut self, type_: &str, status: ConditionStatus, reason: &str, message: &str) {
        let generation = self.observed.session.metadata.generation;
        let now = self.now();
        set_condition(
            &mut self.status.conditions,
            Condition::new(type_, status, reason, message).with_observed_generation(generation),
            &now,
        );
    }

    fn condition_is(&self, type_: &str, status: ConditionStatus) -> bool {
        self.status
            .conditions
            .iter()
            .any(|c| c.type_ == type_ && c.status == status)
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

    /// When the current run started: `status.startTime`, else the session's creation.
    fn run_start(&self) -> Timestamp {
        self.status
            .start_time
            .as_ref()
            .or(self.observed.session.metadata.creation_timestamp.as_ref())
            .map(|t| t.0)
            .unwrap_or(self.observed.now)
    }

    fn job_view(&self) -> JobView {
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
    fn pods_of_job(&self, job_uid: &str) -> Vec<&'a RunnerPod> {
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
    fn session_pods(&self) -> Vec<&'a RunnerPod> {
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

    /// Deletes `pods` that are not going yet (when `delete`), force-deletes those still there
    /// [`FORCE_DELETE_AFTER_GRACE`] after their grace period; returns when to look again.
    fn retire_pods(&mut self, pods: &[&RunnerPod], delete: bool) -> Duration {
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

    /// The session's pods that have not terminated (any run's; with no Job of the current run,
    /// every one of them belongs to an earlier or a lost run).
    fn live_pods(&self) -> Vec<&'a RunnerPod> {
        self.session_pods()
            .into_iter()
            .filter(|p| {
                let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
                !matches!(phase, Some("Succeeded" | "Failed"))
            })
            .collect()
    }

    /// One agent per session: a new run starts only once no pod of an earlier (or lost) run is
    /// left running. Retires them and says whether any is left (then the run waits).
    fn earlier_pods_in_the_way(&mut self) -> bool {
        let live = self.live_pods();
        if live.is_empty() {
            return false;
        }
        let next = self.retire_pods(&live, true);
        self.requeue(next);
        true
    }

    /// Whether a pod of the current run (created since the run started) got its runner
    /// going: then the run's outcome is the pod's, not ours to repeat.
    fn current_run_started_a_runner(&self) -> bool {
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

    /// The current run's Job is gone and its runner had started: the run's outcome is unknown.
    /// Failed / `JobLost`; its pods, orphans now, go too (an agent left running unsupervised
    /// would be a second one beside the next run's).
    fn lose_run(&mut self, message: &str) {
        let live = self.live_pods();
        self.retire_pods(&live, true);
        self.fail(reasons::JOB_LOST, message.to_string());
    }

    /// The view of the session is behind its own children: look again shortly.
    fn catch_up(&mut self) {
        self.requeue(STALE_VIEW_RECHECK);
    }

    /// A child under the session's name belongs to another session (of the same name, whose
    /// garbage collection is still running): wait for it to go.
    fn wait_for_garbage_collection(&mut self) {
        self.requeue(POLL_WHILE_WAITING);
    }

    /// A Job of an earlier run is in the way: delete it (unless it is going) and wait.
    fn retire_then_wait(&mut self, uid: String, deleting: bool) {
        if !deleting {
            self.child(ChildEffect::DeleteJob { uid });
        }
        self.requeue(POLL_WHILE_WAITING);
    }

    /// The current run's Job lost its owner: not ours to act on any more, nor to replace (its
    /// runner may be running). Said on the session; nothing else is done until it is gone.
    fn disowned(&mut self) {
        let message = format!(
            "the runner Job {} lost its owner reference; it is left alone (delete it to let \
             the session go on)",
            agentic_crds::names::job_name(&self.name())
        );
        self.condition(types::JOB_CREATED, false, reasons::JOB_ORPHANED, &message);
        self.requeue(POLL_WHILE_WAITING);
    }

    /// An orphan under the session's Job name: delete it; the next reconcile makes ours.
    fn replace_orphan(&mut self, uid: String) {
        self.child(ChildEffect::DeleteJob { uid });
        self.requeue(POLL_WHILE_WAITING);
    }

    /// When the claim of the current run stops being the claimer's alone: the claim's time
    /// (the `JobCreated` condition's transition) plus [`CLAIM_GRACE`].
    fn claim_grace_end(&self) -> Option<Timestamp> {
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
    fn forced_prompt(&self) -> bool {
        self.observed
            .session
            .annotations()
            .get(keys::FORCE_EXECUTE_PROMPT_ANNOTATION)
            .is_some_and(|v| v == "true")
    }

    /// The run's Job, created for the run as the status now records it. A forced prompt is
    /// never a resume (the runner skips `INITIAL_PROMPT` on a resume).
    fn run_spec(&self, deadline_seconds: Option<i64>) -> RunSpec {
        RunSpec {
            is_resume: self.runner_started_before() && !self.forced_prompt(),
            deadline_seconds,
            started_at: self.status.start_time.clone().unwrap_or_else(|| self.now()),
        }
    }

    /// Pending → Creating: the status write claims the run; only then are the identity and
    /// the Job made.
    fn claim_run(&mut self) {
        if self.status.start_time.is_none() {
            self.status.start_time = Some(self.now());
        }
        self.status.job_name = Some(agentic_crds::names::job_name(&self.name()));
        self.condition(
            types::RUNNER_IDENTITY_READY,
            true,
            reasons::PROVISIONED,
            "runner identity provisioned",
        );
        self.condition(
            types::JOB_CREATED,
            true,
            reasons::CREATING,
            "runner Job created",
        );
        self.condition(
            types::READY,
            false,
            reasons::CREATING,
            "waiting for the runner to start",
        );
        self.record_platform();
        self.enter(Phase::Creating, "runner Job created", false);
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
    fn token_is_stale(&self) -> bool {
        self.observed
            .token_refreshed_at
            .is_some_and(|at| self.observed.now >= at + signed(self.observed.token_refresh_after))
    }

    /// Everything a run needs, in order: workspace, identity (a token older than the refresh
    /// age is refreshed), the shared Secrets it references, the Service in front of it, then
    /// its Job.
    fn make_run(&mut self, run: RunSpec) {
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
    fn end_service(&mut self) {
        if let Some(uid) = self.observed.service_uid.clone() {
            self.child(ChildEffect::DeleteService { uid });
        }
    }

    /// What the claim records about the runner's credentials and state storage.
    fn record_platform(&mut self) {
        self.condition(
            types::SECRETS_READY,
            true,
            reasons::ALL_REQUIRED_SECRETS_FOUND,
            "runner secrets available",
        );
        if self.observed.platform.integrations.is_some() {
            self.condition(
                types::INTEGRATION_SECRETS_READY,
                true,
                reasons::OPTIONAL_SECRET_FOUND,
                &format!("Secret {} present", keys::INTEGRATIONS_SECRET),
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
                "S3 storage not configured: session state will not persist across runs; \
                 configure S3 in the project's ambient-non-vertex-integrations Secret \
                 (STORAGE_MODE=custom) or the operator's minio-credentials",
            );
        }
    }

    /// Vertex off and `ambient-runner-secrets` missing: wait in Pending (the Secret's
    /// appearance is an event), say why once, and give up after the start timeout.
    fn wait_for_runner_secret(&mut self) {
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
        let since = self.run_start();
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

    /// Creating or Running with no Job under the session's name (confirmed against the API
    /// server by the caller).
    fn job_missing(&mut self) {
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
        if self.start_deadline_passed(started) {
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

    fn stop(&mut self) {
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
        self.enter(Phase::Stopping, message, false);
        self.requeue(POLL_WHILE_WAITING);
    }

    /// The runner pod of the current Job (`job_uid`), newest first.
    fn runner_state(&self, job_uid: &str) -> RunnerState {
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
        // Whatever failed on the way here (a refused creation) has been overcome.
        self.condition(
            types::RUNNER_IDENTITY_READY,
            true,
            reasons::PROVISIONED,
            "runner identity provisioned",
        );
        self.condition(
            types::JOB_CREATED,
            true,
            reasons::PROVISIONED,
            "runner Job created",
        );
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
        let generation = self.observed.session.metadata.generation;
        if self.status.observed_generation == generation {
            // The runner started with the spec as it is: that is what it was told.
            let started = drift::drift(&self.observed.session.spec, &self.status);
            self.record_synced(&started, false);
        }
        self.schedule_running_timers();
    }

    /// A live run's spec was edited into something invalid: say so (`Reconciled=False`,
    /// `InvalidSpec`, an Event when that is news) and keep the run as it is. The generation is
    /// not recorded as applied, so a corrected spec is applied as any other edit.
    fn refuse_edit(&mut self, problem: &str) {
        let message = format!("spec change not applied: {problem}");
        let news = !self.condition_says(types::RECONCILED, reasons::INVALID_SPEC, &message);
        self.condition(types::RECONCILED, false, reasons::INVALID_SPEC, &message);
        if news {
            self.notes.push(Note {
                warning: true,
                reason: reasons::INVALID_SPEC.into(),
                message,
            });
        }
    }

    /// While Running: tell the runner about a spec that moved past `observedGeneration`, or
    /// record how that went (never an invalid spec's).
    fn apply_live_changes(&mut self) {
        let generation = self.observed.session.metadata.generation;
        if generation.is_none()
            || self.status.observed_generation == generation
            || self.observed.invalid_spec.is_some()
        {
            return;
        }
        let pending = drift::drift(&self.observed.session.spec, &self.status);
        match &self.observed.sync {
            SyncView::Idle if pending.calls.is_empty() => self.record_synced(&pending, true),
            SyncView::Idle => self.sync = Some(pending.calls),
            SyncView::InFlight => {}
            SyncView::Succeeded => {
                self.record_synced(&pending, true);
                self.sync_recorded = true;
            }
            SyncView::Failed { workflow, message } => {
                let (kind, reason) = if *workflow {
                    (
                        types::WORKFLOW_RECONCILED,
                        reasons::WORKFLOW_RECONCILIATION_FAILED,
                    )
                } else {
                    (types::REPOS_RECONCILED, reasons::REPO_RECONCILIATION_FAILED)
                };
                let what = if *workflow {
                    "workflow"
                } else {
                    "repositories"
                };
                let text = format!("Failed to reconcile {what}: {message}");
                self.condition(kind, false, reason, &text);
                self.condition(types::RECONCILED, false, reason, &text);
                self.sync_recorded = true;
                self.sync_failed = Some(text);
            }
        }
    }

    /// The runner has `pending` applied: record `reconciledRepos`, `reconciledWorkflow`, their
    /// conditions and (with `announce`) the generation, all together.
    fn record_synced(&mut self, pending: &drift::Drift, announce: bool) {
        let now = self.now();
        let stamp = super::children::run_stamp(&now);
        self.status.reconciled_repos = drift::reconciled_repos(pending, &stamp);
        self.status.reconciled_workflow = drift::reconciled_workflow(
            &pending.workflow,
            self.status.reconciled_workflow.as_ref(),
            &stamp,
        );
        let (added, changed, removed) = pending.counts;
        if pending.repos.is_empty() {
            self.condition(
                types::REPOS_RECONCILED,
                true,
                reasons::NO_REPOS,
                "No repositories defined",
            );
        } else {
            self.condition(
                types::REPOS_RECONCILED,
                true,
                reasons::RECONCILED,
                &format!(
                    "Reconciled {} repos (added: {added}, removed: {removed}, branch changed: {changed})",
                    pending.repos.len()
                ),
            );
        }
        match &self.status.reconciled_workflow {
            Some(w) => {
                let message = format!(
                    "Workflow {}@{} active",
                    w.git_url.clone().unwrap_or_default(),
                    w.branch.clone().unwrap_or_default()
                );
                self.condition(
                    types::WORKFLOW_RECONCILED,
                    true,
                    reasons::RECONCILED,
                    &message,
                );
            }
            None => self.condition(
                types::WORKFLOW_RECONCILED,
                true,
                reasons::NOT_CONFIGURED,
                "No workflow selected",
            ),
        }
        if announce {
            let generation = self
                .observed
                .session
                .metadata
                .generation
                .unwrap_or_default();
            self.condition(
                types::RECONCILED,
                true,
                reasons::SPEC_APPLIED,
                &format!("Successfully reconciled generation {generation}"),
            );
        }
        self.spec_applied = true;
    }

    /// Creating or Running, the run carried by `runner` whose pod says `state`.
    fn follow(&mut self, runner: Runner, state: RunnerState) {
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
    fn end_run(&mut self, runner: &Runner) {
        match runner {
            Runner::Job(uid) => self.child(ChildEffect::DeleteJob { uid: uid.clone() }),
            Runner::OriginalPod(name) => self.child(ChildEffect::DeletePods(vec![name.clone()])),
        }
    }

    /// The original operator's runner of this session, unless already going: the bare pod
    /// `<session>-runner` controlled by the session (SPEC §7.6).
    fn original_runner(&self) -> Option<&'a RunnerPod> {
        let name = agentic_crds::names::original_runner_pod_name(&self.name());
        let uid = self.observed.session.metadata.uid.as_deref()?;
        self.observed.pods.iter().copied().find(|p| {
            p.metadata.name.as_deref() == Some(name.as_str())
                && p.controller_uid() == Some(uid)
                && p.metadata.deletion_timestamp.is_none()
        })
    }

    /// While Creating: a container of the runner pod cannot start. Said at once (the
    /// `RunnerStarted` condition and an Event); the session fails at `fail_at`.
    fn cannot_start(&mut self, reason: &str, message: String, fail_at: Timestamp) {
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
    fn pod_refused(&mut self, refusal: PodRefusal) {
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
    fn condition_says(&self, type_: &str, reason: &str, message: &str) -> bool {
        self.status.conditions.iter().any(|c| {
            c.type_ == type_
                && c.status == ConditionStatus::False
                && c.reason.as_deref() == Some(reason)
                && c.message.as_deref() == Some(message)
        })
    }

    /// While Creating: fail after the start timeout, counted from the Job's creation (or, with
    /// no Job yet, from the run's start).
    fn wait_for_start(&mut self) {
        let since = self
            .observed
            .job
            .and_then(|j| j.metadata.creation_timestamp.clone())
            .map(|t| t.0)
            .unwrap_or_else(|| self.run_start());
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

    fn start_deadline_passed(&self, since: Timestamp) -> bool {
        self.observed.now >= since + signed(self.observed.start_timeout)
    }

    /// While Running with a live runner: the inactivity stop, else the timers.
    fn keep_running(&mut self, runner: &Runner) {
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

    /// The run finished successfully; its runner goes once that is written.
    fn complete(&mut self, runner: Runner) {
        self.end_run(&runner);
        self.end_service();
        self.status.completion_time = Some(self.now());
        self.condition(
            types::JOB_CREATED,
            true,
            reasons::PROVISIONED,
            "runner Job created",
        );
        self.condition(
            types::READY,
            false,
            reasons::COMPLETED,
            "runner finished successfully",
        );
        self.enter(Phase::Completed, "runner finished successfully", false);
    }

    fn fail_from_job(&mut self, job_uid: &str, job_reason: &str, job_message: &str) {
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

    /// Failed with `reason`; the run's Job (if ours), or the original operator's pod, goes
    /// once that is written.
    fn fail(&mut self, reason: &str, message: String) {
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

/// What a runner pod (this operator's or the original's) says of its run.
fn pod_state(pod: &RunnerPod) -> RunnerState {
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
fn cannot_start(pod: &RunnerPod) -> Option<RunnerState> {
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
fn job_state(job: &RunnerJob) -> JobState {
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

/// `t` without its fraction of a second (`status` times are stored to the second).
fn whole_seconds(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
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
    use crate::handlers::session::fixtures::{
        JOB_UID, at, job, original_pod, running_pod, session, terminated_pod, unschedulable_pod,
        waiting_pod,
    };
    use agentic_crds::condition::{find_condition, types};

    const START_TIMEOUT: Duration = Duration::from_secs(600);
    const REFRESH: Duration = Duration::from_secs(45 * 60);

    /// A session in `phase` whose run started at `at(0)`, optionally with a desired-phase
    /// annotation.
    fn in_phase(phase: Phase, desired: Option<&str>) -> AgenticSession {
        let mut s = session("demo");
        s.status = Some(AgenticSessionStatus {
            phase,
            start_time: Some(Time(at(0))),
            // The claim recorded the generation the run was made from.
            observed_generation: Some(1),
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
            enforce_timeout: false,
            status_schema: StatusSchema::OURS,
            invalid_spec: None,
            platform: PlatformView {
                runner_secret: true,
                ..Default::default()
            },
            vertex: false,
            s3: PlatformView::default().s3("https://s3.amazonaws.com", "ambient-sessions"),
            service_uid: None,
            foreign_service: false,
            claimed_here: true,
            pod_refusal: None,
            sync: SyncView::Idle,
        }
    }

    fn condition<'p>(plan: &'p Plan, type_: &str) -> &'p Condition {
        find_condition(&plan.status.conditions, type_)
            .unwrap_or_else(|| panic!("no {type_} condition in {:?}", plan.status.conditions))
    }

    fn delete_job() -> ChildEffect {
        ChildEffect::DeleteJob {
            uid: JOB_UID.into(),
        }
    }

    fn created_run(plan: &Plan) -> Option<&RunSpec> {
        plan.children.iter().find_map(|e| match e {
            ChildEffect::CreateJob(run) => Some(run),
            _ => None,
        })
    }

    /// The session's Job made for a run started at `at(started)`.
    fn job_of_run(started: i64) -> RunnerJob {
        let mut j = job(0, None);
        j.run = Some(
            k8s_openapi::jiff::Timestamp::from_second(at(started).as_second())
                .unwrap()
                .to_string(),
        );
        j
    }

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
    fn pending_session_asked_to_stop_goes_stopping_without_a_job() {
        let s = in_phase(Phase::Pending, Some("Stopped"));
        let plan = plan(&observe(&s, None, vec![], 5));
        assert_eq!(plan.status.phase, Phase::Stopping);
        assert_eq!(plan.status.stopped_reason, Some(StoppedReason::User));
        assert!(plan.children.is_empty() && plan.session.is_empty());
        assert_eq!(plan.requeue_after, Some(Duration::ZERO));
    }

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
    fn without_enforcement_the_timeout_is_advisory() {
        let s = in_phase(Phase::Creating, None);
        let plan = plan(&observe(&s, None, vec![], 400));
        assert_eq!(plan.status.phase, Phase::Creating, "300 s are not a limit");
        let run = created_run(&plan).expect("the Job is made again");
        assert_eq!(run.deadline_seconds, None, "no activeDeadlineSeconds");
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

    fn plan_at(s: &AgenticSession, j: &RunnerJob, p: &RunnerPod, now: i64) -> Plan {
        let mut observed = observe(s, Some(j), vec![p], now);
        observed.service_uid = Some("svc-uid".into());
        plan(&observed)
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

    /// A Running session whose spec (generation 2) added a repository after its run began.
    fn drifted() -> AgenticSession {
        let mut s = in_phase(Phase::Running, None);
        s.metadata.generation = Some(2);
        s.spec.repos = vec![agentic_crds::session::RepoSpec {
            url: "https://x/app.git".into(),
            branch: "main".into(),
            auto_push: false,
        }];
        s
    }

    fn live(s: &AgenticSession, sync: SyncView) -> Plan {
        let j = job(0, None);
        let p = running_pod(1);
        let mut observed = observe(s, Some(&j), vec![&p], 5);
        observed.service_uid = Some("svc-uid".into());
        observed.sync = sync;
        plan(&observed)
    }

    #[test]
    fn a_spec_that_moved_on_while_running_is_sent_to_the_runner_off_the_worker() {
        let s = drifted();
        let start = live(&s, SyncView::Idle);
        assert_eq!(
            start.sync,
            Some(vec![drift::RunnerCall::AddRepo {
                url: "https://x/app.git".into(),
                branch: "main".into(),
                name: "app".into()
            }])
        );
        assert_eq!(
            start.status,
            s.status.clone().unwrap(),
            "nothing recorded yet"
        );
        let waiting = live(&s, SyncView::InFlight);
        assert!(waiting.sync.is_none() && !waiting.sync_recorded);
    }

    #[test]
    fn success_records_repos_conditions_and_the_generation_together() {
        let plan = live(&drifted(), SyncView::Succeeded);
        assert_eq!(plan.status.observed_generation, Some(2));
        let repos = plan.status.reconciled_repos.clone().expect("recorded");
        assert_eq!(repos[0].name.as_deref(), Some("app"));
        assert_eq!(
            repos[0].status,
            Some(agentic_crds::session::RepoCloneStatus::Ready)
        );
        assert_eq!(
            condition(&plan, types::RECONCILED).reason.as_deref(),
            Some(reasons::SPEC_APPLIED)
        );
        assert!(plan.sync_recorded && plan.sync_failed.is_none());
    }

    #[test]
    fn failure_is_visible_keeps_the_generation_and_fails_the_reconcile() {
        let plan = live(
            &drifted(),
            SyncView::Failed {
                workflow: false,
                message: "runner answered 500: clone failed".into(),
            },
        );
        assert_eq!(plan.status.observed_generation, Some(1), "not applied");
        assert!(plan.status.reconciled_repos.is_none());
        let reconciled = condition(&plan, types::RECONCILED);
        assert_eq!(reconciled.status, ConditionStatus::False);
        assert_eq!(
            reconciled.reason.as_deref(),
            Some(reasons::REPO_RECONCILIATION_FAILED)
        );
        assert!(
            reconciled
                .message
                .as_deref()
                .unwrap()
                .contains("clone failed")
        );
        assert!(plan.sync_failed.is_some(), "retried with the key's backoff");
    }

    #[test]
    fn a_running_status_change_does_not_mark_a_pending_spec_as_applied() {
        // An inactivity stop is a status change while the spec is pending: it may advance the
        // generation (the run ends); a token refresh (no status change) may not.
        let s = drifted();
        let refresh = live(&s, SyncView::InFlight);
        assert_eq!(refresh.status.observed_generation, Some(1));
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

    #[test]
    fn an_invalid_edit_while_running_is_refused_and_the_run_goes_on() {
        let mut s = in_phase(Phase::Running, None);
        s.metadata.generation = Some(2);
        let j = job(2, None);
        let p = running_pod(3);
        let mut observed = observe(&s, Some(&j), vec![&p], 10);
        observed.service_uid = Some("svc-uid".into());
        observed.invalid_spec = Some("spec.repos[1].url: \"x\" is not a git URL".into());
        let plan = plan(&observed);
        assert_eq!(plan.status.phase, Phase::Running);
        assert!(plan.children.is_empty(), "{:?}", plan.children);
        assert!(
            plan.sync.is_none(),
            "the runner is not told about an invalid spec"
        );
        let reconciled = condition(&plan, types::RECONCILED);
        assert_eq!(reconciled.status, ConditionStatus::False);
        assert_eq!(reconciled.reason.as_deref(), Some(reasons::INVALID_SPEC));
        assert!(
            reconciled
                .message
                .as_deref()
                .is_some_and(|m| m.contains("spec.repos[1].url"))
        );
        assert_eq!(plan.notes.len(), 1, "one Warning Event");
        assert_eq!(plan.status.observed_generation, Some(1), "not applied");
        // Announced once: planning again from the result says nothing new.
        let mut after = s.clone();
        after.status = Some(plan.status.clone());
        let mut again = observe(&after, Some(&j), vec![&p], 11);
        again.service_uid = Some("svc-uid".into());
        again.invalid_spec = observed.invalid_spec.clone();
        assert!(super::plan(&again).notes.is_empty());
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
    fn planning_again_from_the_result_changes_nothing() {
        let s = in_phase(Phase::Creating, None);
        let j = job(2, None);
        let p = running_pod(3);
        let first = plan(&observe(&s, Some(&j), vec![&p], 10));
        let mut after = s.clone();
        after.status = Some(first.status.clone());
        let mut again = observe(&after, Some(&j), vec![&p], 11);
        again.service_uid = Some("svc-uid".into());
        let second = plan(&again);
        assert_eq!(second.status, first.status);
        assert!(second.notes.is_empty());
        assert!(second.children.is_empty() && second.session.is_empty());
    }
}
