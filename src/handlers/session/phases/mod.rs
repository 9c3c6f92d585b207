//! The session state machine (SPEC §2.1) as pure functions: an [`Observed`] snapshot in, a
//! [`Plan`] out (the complete new status, side effects, when to look again, what to announce).
//! Nothing here talks to the cluster, so every row of the table is unit-tested, beside the part
//! that decides it.
//!
//! The parts, by decision family (each adds the verbs of its family to the plan builder):
//! - `lifecycle.rs`: one function per phase (Pending, Creating/Running, Stopping, terminal);
//! - `claim.rs`: making a run (the claim, the runner's secrets and token, the Job, the Service);
//! - `recovery.rs`: a Job that is gone, foreign or left over, and an earlier run's pods;
//! - `runner.rs`: following the runner (started, cannot start, refused, the original's runner);
//! - `timers.rs`: the start timeout, the enforced timeout and the inactivity stop;
//! - `live_changes.rs`: a spec edited while running, sent to the runner or refused;
//! - `outcome.rs`: how a run ends (Completed, Failed, timed out);
//! - `view.rs`: what the plan believes of the Job and pods; `builder.rs`: the plan's bookkeeping.
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

use agentic_crds::condition::{is_condition_true, messages, reasons, types};
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

mod builder;
mod claim;
mod lifecycle;
mod live_changes;
mod outcome;
pub mod queue;
mod recovery;
mod runner;
#[cfg(test)]
mod test_support;
mod timers;
mod view;

use builder::{signed, until, whole_seconds};
use lifecycle::{active, pending, stopping, terminal};
pub use queue::{Admission, admission};
use view::{JobState, JobView, Runner, RunnerState, pod_state};

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
    /// While the session is Pending: when this replica first reached it in this Pending stint,
    /// the start of its Pending clock (`--start-timeout`). Never its creation: a session that
    /// waited for the operator (an outage, a start-up backlog) has not waited for its run.
    pub pending_since: Option<Timestamp>,
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
    /// Kueue's verdict on the current Job while it is suspended (ProjectSettings
    /// `spec.kueue`); `None`: not queued (no queue configured, or the Job runs).
    pub queue: Option<Admission>,
    /// How long a run may wait for Kueue's admission before it fails (`--queue-timeout`);
    /// `None`: as long as it takes.
    pub queue_timeout: Option<Duration>,
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

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;

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
