//! The AgenticSession handler: observe (from the caches), plan (pure, [`phases`]), execute
//! (this file). Both engines call [`reconcile`]; it is level-triggered and idempotent.
//!
//! Status is written once per reconcile, with the resourceVersion that was read, so a decision
//! made from a stale view fails with a conflict and is retried instead of overwriting newer state.

mod api;
pub mod children;
pub mod drift;
#[cfg(feature = "fault-injection")]
pub mod fault_injection;
mod identity;
pub mod pending_clocks;
pub mod phases;
pub mod platform;
pub mod refusals;
pub mod runner_env;
pub mod runner_events;
pub mod runner_sync;
pub mod secret_copies;
pub mod shape;
mod state;
pub mod waker;

#[cfg(test)]
pub(crate) mod fixtures;

use std::sync::Arc;
use std::time::{Duration, Instant};

use agentic_crds::{AgenticSession, Phase, ProjectSettings, keys, names};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Service};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Resource, ResourceExt};

use agentic_crds::condition::{reasons, types};
use agentic_crds::{AgenticSessionStatus, Condition, ConditionStatus, set_condition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::cache::Slim;
use crate::cache::projections::{RunnerChild, RunnerJob, RunnerPod};
use crate::context::FIELD_MANAGER;
use crate::observability::events::Note;
use api::{api_error, is_status};
use children::{JobInputs, JobQueue};
use phases::{ChildEffect, Observation, Observed, Plan, SessionEffect};
use runner_sync::SessionGeneration;
pub use state::{SessionContext, SessionState};

/// Why a session reconcile failed (it is retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// An API call failed.
    #[error("{action} {kind} {namespace}/{name}: {source}")]
    Api {
        /// What was attempted (create, delete, ...).
        action: &'static str,
        /// The kind of object.
        kind: &'static str,
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The session changed after it was read; the reconcile is retried from fresh state.
    #[error("session {namespace}/{name} changed while being reconciled")]
    Conflict {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// A child of that name belongs to another owner (an earlier session of the same name
    /// whose garbage collection is still running); retried until it is gone.
    #[error("{kind} {namespace}/{name} belongs to another owner; waiting for it to be collected")]
    NotOurs {
        /// The kind of object.
        kind: &'static str,
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// An object appeared and vanished while this reconcile was acting on it: the plan is
    /// stale; the reconcile is retried from fresh state.
    #[error("{kind} {namespace}/{name} changed while being reconciled")]
    ChangedMeanwhile {
        /// The kind of object.
        kind: &'static str,
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// Telling the runner about a live change failed (recorded on the session).
    #[error("session {namespace}/{name}: {message}")]
    RunnerSync {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// What failed.
        message: String,
    },
    /// A copy of a shared Secret could not be made.
    #[error(transparent)]
    Copies(#[from] crate::handlers::session::secret_copies::CopyError),
    /// The API server answered a TokenRequest without a token.
    #[error("TokenRequest for {namespace}/{service_account} returned no token")]
    EmptyToken {
        /// Namespace.
        namespace: String,
        /// ServiceAccount.
        service_account: String,
    },
}

impl SessionError {
    /// Whether retrying will not fix it by itself: an API refusal (quota, invalid, too large),
    /// or a Secret of the user's standing where a shared one is to be copied.
    pub fn is_persisting(&self) -> bool {
        match self {
            SessionError::Api { source, .. } => api::is_persisting(source),
            SessionError::Copies(
                crate::handlers::session::secret_copies::CopyError::Occupied { .. },
            ) => true,
            SessionError::Copies(crate::handlers::session::secret_copies::CopyError::Api {
                source,
                ..
            }) => api::is_persisting(source),
            _ => false,
        }
    }

    /// Value of the `error_type` label of `ambient_session_errors_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            SessionError::Api { kind, .. } => match *kind {
                "Job" => "job",
                "Pod" => "pod",
                "ServiceAccount" | "Role" | "RoleBinding" | "Secret" | "TokenRequest" => "identity",
                "PersistentVolumeClaim" => "workspace",
                _ => "api",
            },
            SessionError::Conflict { .. }
            | SessionError::NotOurs { .. }
            | SessionError::ChangedMeanwhile { .. } => "conflict",
            SessionError::EmptyToken { .. } => "identity",
            SessionError::Copies(error) => error.metric_label(),
            SessionError::RunnerSync { .. } => "runner",
        }
    }
}

/// Reconciles one session; returns when to look at it again (`None`: on the next event only).
pub async fn reconcile(
    session: Arc<AgenticSession>,
    ctx: &SessionContext,
) -> Result<Option<Duration>, SessionError> {
    let namespace = session.namespace().unwrap_or_default();
    if !ctx.caches.is_managed(&namespace) || session.meta().deletion_timestamp.is_some() {
        return Ok(None);
    }
    if cache_behind_own_write(&session, &namespace, ctx) {
        // The copy our last write replaced: deciding from it would repeat or contradict that
        // write (and its guarded status write would conflict). Look again once the cache has
        // our write; it usually arrives within milliseconds.
        return Ok(Some(CACHE_CATCH_UP));
    }
    #[cfg(feature = "fault-injection")]
    fault_injection::maybe_panic(&session);
    let phase = session.status.as_ref().map(|s| s.phase).unwrap_or_default();
    let started = Instant::now();
    let result = reconcile_session(&session, &namespace, phase, ctx).await;
    let families = ctx.metrics.families();
    families.record_reconcile(phase.as_str(), result.is_ok(), started.elapsed());
    if let Err(error) = &result {
        families
            .session_errors
            .with_label_values(&[&namespace, phase.as_str(), error.metric_label()])
            .inc();
    }
    result
}

async fn reconcile_session(
    session: &AgenticSession,
    namespace: &str,
    phase: Phase,
    ctx: &SessionContext,
) -> Result<Option<Duration>, SessionError> {
    let name = session.name_any();
    let job_name = names::job_name(&name);
    let jobs: Api<RunnerJob> = Api::namespaced(ctx.client.clone(), namespace);
    let mut job = ctx.caches.job(namespace, &job_name);
    if job.is_none() && matches!(phase, Phase::Creating | Phase::Running) {
        // Before concluding the Job was deleted behind our back, make sure the cache is not
        // merely behind a Job created moments ago.
        job = jobs
            .get_opt(&job_name)
            .await
            .map_err(api_error("get", "Job", namespace, &job_name))?
            .map(|mut fresh| {
                fresh.slim();
                Arc::new(fresh)
            });
        if job.is_none() && session_is_stale(session, namespace, ctx).await? {
            // The Job may be gone because this session finished (the Job is deleted before the
            // Completed status is written) and the cache has not seen that write yet:
            // recreating it now would run the session twice. Look again once the cache caught up.
            return Ok(Some(CACHE_CATCH_UP));
        }
    }
    let mut pods = ctx.caches.pods_of(namespace, &name);
    let mut pods_are_fresh = false;
    let job_confirmed_missing = job.is_none() && matches!(phase, Phase::Creating | Phase::Running);
    if job_confirmed_missing
        || (job.as_deref().is_some_and(job_failed) && !pods.iter().any(|p| runner_terminated(p)))
    {
        // The Job's verdict can overtake the pod's in the caches; the pod says why it failed.
        // And with the run's Job gone, whether its runner had started decides between losing
        // the run and making it again: a cache behind the pod (a replica that was paused, or
        // whose pod events lag) must not make a started agent's run again.
        pods = fresh_pods(namespace, &name, ctx).await?;
        pods_are_fresh = true;
    }
    let token_refreshed_at = ctx
        .caches
        .secret(namespace, &names::token_secret_name(&name))
        .and_then(|secret| {
            secret
                .token_refreshed_at()
                .and_then(|at| at.parse::<Timestamp>().ok())
                .or(Some(Timestamp::UNIX_EPOCH))
        });
    let project_settings = ctx.caches.project_settings_of(namespace);
    let platform = crate::handlers::session::secret_copies::platform_view(namespace, ctx);
    let service = ctx.caches.service(namespace, &name);
    let now = Timestamp::now();
    let pending_since = ctx.state.pending_clocks.read(
        namespace,
        &name,
        session.meta().uid.as_deref().unwrap_or_default(),
        phase,
        now,
    );
    let observed = Observed {
        session,
        job: job.as_deref(),
        pods: pods.iter().map(Arc::as_ref).collect(),
        token_refreshed_at,
        now,
        inactivity_timeout: inactivity_timeout(
            session,
            project_settings.as_deref(),
            ctx.config.args.default_inactivity_timeout,
        ),
        start_timeout: ctx.config.args.start_timeout,
        queue_timeout: ctx.config.args.queue_timeout,
        pending_since,
        token_refresh_after: ctx.config.args.token_refresh_after,
        enforce_timeout: ctx.config.args.enforce_session_timeout,
        status_schema: ctx.status_schema,
        invalid_spec: agentic_crds::validate(&session.spec)
            .and_then(|()| match ctx.config.args.enforce_session_timeout {
                true => agentic_crds::validate::validate_enforced_timeout(&session.spec),
                false => Ok(()),
            })
            .err()
            .map(|e| e.to_string()),
        s3: platform.s3(&ctx.config.args.s3_endpoint, &ctx.config.args.s3_bucket),
        platform,
        vertex: ctx.config.vertex.is_some(),
        service_uid: service
            .as_ref()
            .filter(|service| service.controller_uid() == session.meta().uid.as_deref())
            .and_then(|service| service.metadata.uid.clone()),
        foreign_service: service
            .as_ref()
            .is_some_and(|service| service.controller_uid() != session.meta().uid.as_deref()),
        claimed_here: ctx.state.claims.contains(&claim_key(session, namespace)),
        pod_refusal: job
            .as_ref()
            .and_then(|j| j.metadata.uid.as_deref())
            .and_then(|uid| ctx.state.refusals.of(namespace, &name, uid)),
        sync: session_generation(session, namespace)
            .map(|of| ctx.state.syncs.view(of))
            .unwrap_or_default(),
        queue: queued_job_admission(session, job.as_deref(), project_settings.as_deref(), ctx),
    };
    let mut plan = phases::plan(&observed);
    if !pods_are_fresh && decides_on_absent_pods(phase, &plan) {
        // These decisions are final and rest on what the pods are not doing (not started; all
        // gone): make them on the pods as the API server has them, not on a cache that may lag
        // behind a pod created moments ago (the legacy engine's does under load).
        let fresh = fresh_pods(namespace, &name, ctx).await?;
        plan = phases::plan(&Observed {
            pods: fresh.iter().map(Arc::as_ref).collect(),
            ..observed
        });
    }
    execute(session, namespace, phase, plan, ctx).await
}

/// Whether the plan makes a final decision from the absence of pods: failing the session with
/// StartTimeout (no runner started), or calling a stopping session Stopped (no pod left).
fn decides_on_absent_pods(phase: Phase, plan: &Plan) -> bool {
    let stopped = phase == Phase::Stopping && plan.status.phase == Phase::Stopped;
    let gave_up = plan.status.phase == Phase::Failed
        && plan.status.conditions.iter().any(|c| {
            c.type_ == agentic_crds::condition::types::READY
                && c.reason.as_deref() == Some(agentic_crds::condition::reasons::START_TIMEOUT)
        });
    stopped || gave_up
}

/// The session's pods read from the API server (slimmed like the cache's).
async fn fresh_pods(
    namespace: &str,
    name: &str,
    ctx: &SessionContext,
) -> Result<Vec<Arc<RunnerPod>>, SessionError> {
    let api: Api<RunnerPod> = Api::namespaced(ctx.client.clone(), namespace);
    let selector = format!("{}={name}", keys::SESSION_LABEL);
    Ok(api
        .list(&kube::api::ListParams::default().labels(&selector))
        .await
        .map_err(api_error("list pods of", "Pod", namespace, name))?
        .items
        .into_iter()
        .map(|mut pod| {
            pod.slim();
            Arc::new(pod)
        })
        .collect())
}

/// How soon to look again at a session whose cached copy is behind the API server.
const CACHE_CATCH_UP: Duration = Duration::from_millis(100);

/// The resourceVersions one reconcile's writes of a session went through: the cached copy it
/// started from, then each version it wrote. Every one but the last was replaced by our own
/// write; a cache still showing one of them is behind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnWrites {
    replaced: Vec<String>,
    latest: String,
}

impl OwnWrites {
    /// Starts from the copy a reconcile read.
    fn starting_at(version: &str) -> Self {
        OwnWrites {
            replaced: Vec::new(),
            latest: version.to_string(),
        }
    }

    /// A write produced `written`. One that changed nothing keeps the version (the cache
    /// already holds its result) and replaces nothing.
    fn wrote(&mut self, written: &str) {
        if written != self.latest {
            let replaced = std::mem::replace(&mut self.latest, written.to_string());
            self.replaced.push(replaced);
        }
    }

    /// Whether a copy at `version` predates our writes.
    fn is_behind(&self, version: &str) -> bool {
        self.replaced.iter().any(|replaced| replaced == version)
    }
}

/// Whether `session` is a cached copy that this replica's own writes of it replaced. Forgets
/// the writes once the cache has moved past them.
fn cache_behind_own_write(session: &AgenticSession, namespace: &str, ctx: &SessionContext) -> bool {
    let key = (namespace.to_string(), session.name_any());
    let Some(writes) = ctx.state.own_writes.get(&key) else {
        return false;
    };
    let behind = writes.is_behind(&session.resource_version().unwrap_or_default());
    drop(writes);
    if !behind {
        ctx.state.own_writes.remove(&key);
    }
    behind
}

/// Forgets what is kept about a session that was deleted: its own writes (a finished session is
/// often never reconciled again, so its last writes are remembered until then), its pod
/// refusals, its runner calls' outcome and its claims.
pub fn forget_deleted(namespace: &str, name: &str, state: &SessionState) {
    state
        .own_writes
        .remove(&(namespace.to_string(), name.to_string()));
    state.refusals.forget(namespace, name);
    state.pending_clocks.forget(namespace, name);
    state.syncs.forget(namespace, name);
    // Claims go when a run ends; a session deleted while running never says so.
    state
        .claims
        .retain(|(n, s, _)| !(n.as_str() == namespace && s.as_str() == name));
}

/// Forgets what is kept about the sessions of namespaces in `buckets`, which this replica just
/// released (`--sharding`): another replica acts on them now, and if they come back their
/// state is read afresh, never taken from before they left (its writes, refusals, runner calls'
/// outcomes, claims).
pub fn forget_released(buckets: &crate::shard::BucketSet, state: &SessionState) {
    let leaving = |namespace: &str| buckets.contains_namespace(namespace);
    state
        .own_writes
        .retain(|(namespace, _), _| !leaving(namespace));
    state.refusals.forget_namespaces(leaving);
    state.pending_clocks.forget_namespaces(leaving);
    state.syncs.forget_namespaces(leaving);
    state.claims.retain(|(namespace, _, _)| !leaving(namespace));
}

/// Notes that a write of `session` (the copy its reconcile started from) produced `written`.
fn note_own_write(
    session: &AgenticSession,
    namespace: &str,
    written: Option<&str>,
    ctx: &SessionContext,
) {
    let (Some(read), Some(written)) = (session.resource_version(), written) else {
        return;
    };
    ctx.state
        .own_writes
        .entry((namespace.to_string(), session.name_any()))
        .or_insert_with(|| OwnWrites::starting_at(&read))
        .wrote(written);
}

/// Whether the API server holds a newer version of `session` than the cache handed us.
async fn session_is_stale(
    session: &AgenticSession,
    namespace: &str,
    ctx: &SessionContext,
) -> Result<bool, SessionError> {
    let name = session.name_any();
    let api: Api<AgenticSession> = Api::namespaced(ctx.client.clone(), namespace);
    let fresh =
        api.get_opt(&name)
            .await
            .map_err(api_error("get", "AgenticSession", namespace, &name))?;
    Ok(fresh.is_some_and(|fresh| fresh.resource_version() != session.resource_version()))
}

fn job_failed(job: &RunnerJob) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| (c.type_ == "Failed" || c.type_ == "FailureTarget") && c.status == "True")
        })
}

fn runner_terminated(pod: &RunnerPod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .is_some_and(|statuses| {
            statuses
                .iter()
                .any(|c| c.state.as_ref().is_some_and(|s| s.terminated.is_some()))
        })
}

/// The inactivity timeout in force: the session's, else its ProjectSettings', else the
/// operator default; `None` when it is 0 (disabled).
pub fn inactivity_timeout(
    session: &AgenticSession,
    project_settings: Option<&ProjectSettings>,
    default_seconds: u64,
) -> Option<Duration> {
    let seconds = session
        .spec
        .inactivity_timeout
        .or(project_settings.map(|p| p.spec.inactivity_timeout_seconds))
        .map_or(default_seconds, |s| u64::try_from(s).unwrap_or(0));
    (seconds > 0).then(|| Duration::from_secs(seconds))
}

/// Kueue's verdict on `job` when it is the session's, suspended, and its namespace queues
/// runner Jobs (ProjectSettings `spec.kueue`, honoured with `--kueue`); `None` otherwise.
fn queued_job_admission(
    session: &AgenticSession,
    job: Option<&RunnerJob>,
    settings: Option<&ProjectSettings>,
    ctx: &SessionContext,
) -> Option<phases::Admission> {
    if !ctx.config.args.kueue {
        return None;
    }
    settings?.spec.kueue.as_ref()?;
    let job = job.filter(|j| j.suspended && j.controller_uid() == session.meta().uid.as_deref())?;
    let job_uid = job.metadata.uid.as_deref()?;
    let namespace = job.metadata.namespace.as_deref()?;
    let workload = ctx.caches.workload_of_job(namespace, job_uid);
    Some(phases::admission(workload.as_deref()))
}

/// What `session`'s runner gets besides its spec: its runtime's shape (from the agent
/// registry), what its namespace offers, its model's Vertex id and the project's MCP servers.
pub fn job_inputs(session: &AgenticSession, namespace: &str, ctx: &SessionContext) -> JobInputs {
    let runtime = shape::runtime_of(session);
    let entry = ctx.catalog.runtime(&runtime);
    let settings = ctx.caches.project_settings_of(namespace);
    JobInputs {
        shape: shape::shape(session, entry.as_ref(), &ctx.state.runner.shape_defaults()),
        platform: crate::handlers::session::secret_copies::platform_view(namespace, ctx),
        vertex_model_id: ctx
            .catalog
            .models()
            .vertex_id(&session.spec.llm_settings.model)
            .map(str::to_string),
        project_mcp_servers: settings
            .as_ref()
            .and_then(|s| s.spec.mcp_servers.clone())
            .filter(|servers| !servers.is_null()),
        queue: settings
            .as_ref()
            .filter(|_| ctx.config.args.kueue)
            .and_then(|s| s.spec.kueue.as_ref())
            .map(|kueue| JobQueue::of(session, kueue)),
    }
}

/// Identifies the session's current run among this replica's claims.
fn claim_key(session: &AgenticSession, namespace: &str) -> (String, String, String) {
    let run = session
        .status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .map(children::run_stamp)
        .unwrap_or_default();
    (namespace.to_string(), session.name_any(), run)
}

/// The session's current generation, for its runner calls.
fn session_generation<'a>(
    session: &'a AgenticSession,
    namespace: &'a str,
) -> Option<SessionGeneration<'a>> {
    Some(SessionGeneration {
        namespace,
        name: session.metadata.name.as_deref()?,
        uid: session.metadata.uid.as_deref()?,
        generation: session.metadata.generation?,
    })
}

/// Carries out `plan` in the order its shape gives: the status write (guarded by the
/// resourceVersion that was read), what the transition announces, the child effects, then the
/// session effects (guarded by the resourceVersion the status write returned).
async fn execute(
    session: &AgenticSession,
    namespace: &str,
    phase: Phase,
    plan: Plan,
    ctx: &SessionContext,
) -> Result<Option<Duration>, SessionError> {
    let mut version = session.resource_version();
    if session.status.as_ref() != Some(&plan.status) {
        match write_status(session, namespace, &plan.status, version.as_deref(), ctx).await? {
            Some(written) => version = Some(written),
            None => return Ok(None), // deleted meanwhile: nothing left to do
        }
        // Recorded as soon as the status says so: a later failing effect must not lose them.
        announce(session, namespace, phase, &plan, ctx).await;
        let mut claimed = session.clone();
        claimed.status = Some(plan.status.clone());
        let key = claim_key(&claimed, namespace);
        // A claim: Pending → Creating, or a new run claimed over the current one (a run
        // preempted by Kueue: a new start time, back to Creating).
        let new_run = session.status.as_ref().and_then(|s| s.start_time.as_ref())
            != plan.status.start_time.as_ref();
        if plan.status.phase == Phase::Creating && (phase == Phase::Pending || new_run) {
            if phase != Phase::Pending {
                ctx.state.claims.remove(&claim_key(session, namespace));
            }
            ctx.state.claims.insert(key);
        } else if plan.status.phase.is_terminal() {
            ctx.state.claims.remove(&key);
            ctx.state.refusals.forget(namespace, &session.name_any());
        }
    }
    for effect in &plan.children {
        if let Err(error) = apply_child(session, namespace, effect, ctx).await {
            record_failure(
                session,
                namespace,
                &plan.status,
                effect,
                &error,
                version,
                ctx,
            )
            .await;
            return Err(error);
        }
    }
    for effect in &plan.session {
        apply_session_effect(session, namespace, effect, version.as_deref(), ctx).await?;
    }
    let name = session.name_any();
    if plan.sync_recorded {
        ctx.state.syncs.forget(namespace, &name);
    }
    if let (Some(calls), Some(of)) = (plan.sync, session_generation(session, namespace)) {
        // With sharding the calls hold the session's bucket until they end: its release waits
        // for them. A bucket released meanwhile starts none.
        let hold = match &ctx.shard {
            Some(gate) => match gate.admit(namespace) {
                Some(held) => Some(held),
                None => return Ok(None),
            },
            None => None,
        };
        let port = job_inputs(session, namespace, ctx).shape.port;
        ctx.state
            .syncs
            .start(ctx.client.clone(), of, port, calls, hold);
    }
    if let Some(message) = plan.sync_failed {
        // Recorded on the session; retried with the key's backoff.
        return Err(SessionError::RunnerSync {
            namespace: namespace.to_string(),
            name,
            message,
        });
    }
    Ok(plan.requeue_after)
}

/// Metrics, Events and the log line of what the status write just recorded.
async fn announce(
    session: &AgenticSession,
    namespace: &str,
    phase: Phase,
    plan: &Plan,
    ctx: &SessionContext,
) {
    let families = ctx.metrics.families();
    if session.status.is_none() {
        families
            .sessions_total
            .with_label_values(&[namespace])
            .inc();
    }
    if plan.status.phase != phase {
        families.record_transition(
            namespace,
            phase.as_str(),
            plan.status.phase.as_str(),
            plan.status.phase.is_terminal(),
        );
        tracing::info!(
            namespace,
            session = %session.name_any(),
            from = %phase,
            to = %plan.status.phase,
            detail = plan.status.message.as_deref().unwrap_or_default(),
            "phase transition"
        );
    }
    for observation in &plan.observations {
        match observation {
            Observation::Startup(took) => families
                .session_startup_duration
                .with_label_values(&[namespace])
                .observe(took.as_secs_f64()),
            Observation::PodCreation(took) => families
                .pod_creation_duration
                .with_label_values(&[namespace])
                .observe(took.as_secs_f64()),
        }
    }
    for note in &plan.notes {
        publish(session, note, ctx).await;
    }
}

async fn publish(session: &AgenticSession, note: &Note, ctx: &SessionContext) {
    if let Err(error) = ctx.events.publish(session, note).await {
        tracing::warn!(%error, session = %session.name_any(), "could not publish an Event");
    }
}

/// A child effect failed with a refusal that retrying will not fix by itself: say so on the
/// session (the effect's condition, the status message) and in a Warning Event. Only a
/// change is written and announced, so a refusal repeated on every retry is reported once.
async fn record_failure(
    session: &AgenticSession,
    namespace: &str,
    written: &AgenticSessionStatus,
    effect: &ChildEffect,
    error: &SessionError,
    version: Option<String>,
    ctx: &SessionContext,
) {
    if !error.is_persisting() {
        return;
    }
    let (condition, reason) = match effect {
        ChildEffect::CreateJob(_) => (types::JOB_CREATED, reasons::PROVISIONING_FAILED),
        ChildEffect::EnsureIdentity | ChildEffect::RefreshToken => {
            (types::RUNNER_IDENTITY_READY, reasons::PROVISIONING_FAILED)
        }
        ChildEffect::EnsureWorkspace => (types::WORKSPACE_READY, reasons::PROVISIONING_FAILED),
        ChildEffect::EnsureCopies => (types::SECRETS_READY, reasons::PROVISIONING_FAILED),
        ChildEffect::EnsureService => (types::JOB_CREATED, reasons::PROVISIONING_FAILED),
        ChildEffect::DeleteJob { .. }
        | ChildEffect::DeleteService { .. }
        | ChildEffect::DeletePods(_)
        | ChildEffect::ForceDeletePods(_) => (types::CLEANED_UP, reasons::CLEANUP_FAILED),
    };
    let message = error.to_string();
    let mut status = written.clone();
    set_condition(
        &mut status.conditions,
        Condition::new(condition, ConditionStatus::False, reason, &message)
            .with_observed_generation(session.metadata.generation),
        &Time(Timestamp::now()),
    );
    status.message = Some(message.clone());
    ctx.status_schema.fit(&mut status);
    if &status == written {
        return;
    }
    match write_status(session, namespace, &status, version.as_deref(), ctx).await {
        Ok(Some(_)) => {
            let note = Note {
                warning: true,
                reason: reason.to_string(),
                message,
            };
            publish(session, &note, ctx).await;
        }
        Ok(None) => {}
        Err(error) => tracing::debug!(%error, "could not record a failure on the session"),
    }
}

/// Replaces the session's status, guarded by `version`; returns the new resourceVersion, or
/// `None` when the session is gone.
async fn write_status(
    session: &AgenticSession,
    namespace: &str,
    status: &AgenticSessionStatus,
    version: Option<&str>,
    ctx: &SessionContext,
) -> Result<Option<String>, SessionError> {
    let name = session.name_any();
    let api: Api<AgenticSession> = Api::namespaced(ctx.client.clone(), namespace);
    let mut update = AgenticSession::new(&name, session.spec.clone());
    update.metadata = ObjectMeta {
        name: Some(name.clone()),
        namespace: Some(namespace.to_string()),
        resource_version: version.map(str::to_string),
        ..Default::default()
    };
    update.status = Some(status.clone());
    let params = PostParams {
        dry_run: false,
        field_manager: Some(FIELD_MANAGER.into()),
    };
    match api.replace_status(&name, &params, &update).await {
        Ok(written) => {
            let version = written.resource_version().unwrap_or_default();
            note_own_write(session, namespace, Some(&version), ctx);
            Ok(Some(version))
        }
        Err(e) if is_status(&e, 409) => Err(SessionError::Conflict {
            namespace: namespace.to_string(),
            name,
        }),
        Err(e) if is_status(&e, 404) => Ok(None),
        Err(e) => Err(api_error(
            "update status of",
            "AgenticSession",
            namespace,
            &name,
        )(e)),
    }
}

async fn apply_child(
    session: &AgenticSession,
    namespace: &str,
    effect: &ChildEffect,
    ctx: &SessionContext,
) -> Result<(), SessionError> {
    let name = session.name_any();
    let client = ctx.client.clone();
    match effect {
        ChildEffect::EnsureWorkspace => {
            if let Some(pvc) = children::build_workspace_pvc(session, &ctx.state.runner) {
                let api: Api<PersistentVolumeClaim> = Api::namespaced(client, namespace);
                api::create_owned(&api, &pvc, namespace, "PersistentVolumeClaim").await?;
            }
        }
        ChildEffect::EnsureIdentity => {
            let mlflow = crate::handlers::session::secret_copies::platform_view(namespace, ctx)
                .mlflow_kubernetes_auth();
            identity::ensure(session, namespace, mlflow, ctx).await?
        }
        ChildEffect::RefreshToken => identity::refresh(session, namespace, ctx).await?,
        ChildEffect::EnsureCopies => {
            let view = crate::handlers::session::secret_copies::platform_view(namespace, ctx);
            let s3 = view.s3(&ctx.config.args.s3_endpoint, &ctx.config.args.s3_bucket);
            let names = view.copies(ctx.config.vertex.is_some(), &s3);
            crate::handlers::session::secret_copies::ensure(namespace, &names, ctx).await?;
        }
        ChildEffect::EnsureService => {
            let inputs = job_inputs(session, namespace, ctx);
            let service = children::build_service(session, inputs.shape.port);
            let api: Api<Service> = Api::namespaced(client, namespace);
            api::create_owned(&api, &service, namespace, "Service").await?;
        }
        ChildEffect::DeleteService { uid } => {
            let api: Api<Service> = Api::namespaced(client, namespace);
            let service_name = names::service_name(&name);
            let params = DeleteParams::background();
            api::delete_exactly(&api, &service_name, uid, &params, namespace, "Service").await?;
        }
        ChildEffect::CreateJob(run) => {
            let inputs = job_inputs(session, namespace, ctx);
            let job = children::build_job(session, &ctx.state.runner, &inputs, run);
            let api: Api<Job> = Api::namespaced(client, namespace);
            api::create_owned(&api, &job, namespace, "Job").await?;
        }
        ChildEffect::DeleteJob { uid } => {
            let api: Api<Job> = Api::namespaced(client, namespace);
            let job_name = names::job_name(&name);
            let params = DeleteParams::background();
            api::delete_exactly(&api, &job_name, uid, &params, namespace, "Job").await?;
        }
        ChildEffect::DeletePods(pods) | ChildEffect::ForceDeletePods(pods) => {
            let api: Api<Pod> = Api::namespaced(client, namespace);
            let params = match effect {
                ChildEffect::ForceDeletePods(_) => DeleteParams {
                    grace_period_seconds: Some(0),
                    ..DeleteParams::background()
                },
                _ => DeleteParams::background(),
            };
            for pod in pods {
                api::delete_if_present(&api, pod, &params, namespace, "Pod").await?;
            }
        }
    }
    Ok(())
}

async fn apply_session_effect(
    session: &AgenticSession,
    namespace: &str,
    effect: &SessionEffect,
    version: Option<&str>,
    ctx: &SessionContext,
) -> Result<(), SessionError> {
    match effect {
        SessionEffect::RequestInactivityStop => {
            // Only on the session as the status write left it: a request made since (a
            // restart) is never overridden.
            let patch = serde_json::json!({"metadata": {
                "resourceVersion": version,
                "annotations": {
                    keys::DESIRED_PHASE_ANNOTATION: keys::DESIRED_PHASE_STOPPED,
                    keys::STOP_REASON_ANNOTATION: agentic_crds::StoppedReason::Inactivity.as_str(),
                    keys::STOP_REQUESTED_AT_ANNOTATION: Timestamp::now().to_string(),
                },
            }});
            match patch_session(session, namespace, &Patch::Merge(&patch), ctx).await {
                // Changed since: the status records the stop already; the next reconcile
                // sees whatever was asked meanwhile.
                Err(SessionError::Api { source, .. }) if is_status(&source, 409) => Ok(()),
                other => other,
            }
        }
        SessionEffect::ClearStopAnnotations => {
            clear_annotations(
                session,
                namespace,
                keys::DESIRED_PHASE_STOPPED,
                &[
                    keys::DESIRED_PHASE_ANNOTATION,
                    keys::STOP_REQUESTED_AT_ANNOTATION,
                    keys::STOP_REASON_ANNOTATION,
                ],
                ctx,
            )
            .await
        }
        SessionEffect::ClearStartRequest => {
            clear_annotations(
                session,
                namespace,
                keys::DESIRED_PHASE_RUNNING,
                &[keys::DESIRED_PHASE_ANNOTATION],
                ctx,
            )
            .await
        }
        SessionEffect::RecordIdentity => identity::record(session, namespace, ctx).await,
        SessionEffect::ClearForceExecutePrompt => {
            clear_annotation_if(
                session,
                namespace,
                keys::FORCE_EXECUTE_PROMPT_ANNOTATION,
                "true",
                ctx,
            )
            .await
        }
    }
}

/// Removes `keys` from the session's annotations, but only while `desired-phase` still says
/// `expected`: a request made after the one being honoured is never erased.
async fn clear_annotations(
    session: &AgenticSession,
    namespace: &str,
    expected: &str,
    keys_to_remove: &[&str],
    ctx: &SessionContext,
) -> Result<(), SessionError> {
    let annotations = session.annotations();
    let present: Vec<&&str> = keys_to_remove
        .iter()
        .filter(|k| annotations.contains_key(**k))
        .collect();
    if present.is_empty() {
        return Ok(());
    }
    let pointer = |key: &str| {
        format!(
            "/metadata/annotations/{}",
            key.replace('~', "~0").replace('/', "~1")
        )
    };
    let mut operations = vec![serde_json::json!({
        "op": "test",
        "path": pointer(keys::DESIRED_PHASE_ANNOTATION),
        "value": expected,
    })];
    if !annotations.contains_key(keys::DESIRED_PHASE_ANNOTATION) {
        operations.clear();
    }
    for key in present {
        operations.push(serde_json::json!({"op": "remove", "path": pointer(key)}));
    }
    let patch: json_patch::Patch = serde_json::from_value(serde_json::Value::Array(operations))
        .expect("operations built above are valid JSON patch");
    match patch_session(session, namespace, &Patch::Json::<()>(patch), ctx).await {
        // The test failed: the request changed meanwhile; the next reconcile sees the new one.
        Err(SessionError::Api { source, .. }) if is_status(&source, 422) => Ok(()),
        other => other,
    }
}

/// Removes the annotation `key` while it still says `expected`.
async fn clear_annotation_if(
    session: &AgenticSession,
    namespace: &str,
    key: &str,
    expected: &str,
    ctx: &SessionContext,
) -> Result<(), SessionError> {
    if !session.annotations().contains_key(key) {
        return Ok(());
    }
    let pointer = format!(
        "/metadata/annotations/{}",
        key.replace('~', "~0").replace('/', "~1")
    );
    let operations = serde_json::json!([
        {"op": "test", "path": pointer, "value": expected},
        {"op": "remove", "path": pointer},
    ]);
    let patch: json_patch::Patch =
        serde_json::from_value(operations).expect("operations built above are valid JSON patch");
    match patch_session(session, namespace, &Patch::Json::<()>(patch), ctx).await {
        Err(SessionError::Api { source, .. }) if is_status(&source, 422) => Ok(()),
        other => other,
    }
}

async fn patch_session<P: serde::Serialize + std::fmt::Debug>(
    session: &AgenticSession,
    namespace: &str,
    patch: &Patch<P>,
    ctx: &SessionContext,
) -> Result<(), SessionError> {
    let name = session.name_any();
    let api: Api<AgenticSession> = Api::namespaced(ctx.client.clone(), namespace);
    match api.patch(&name, &PatchParams::default(), patch).await {
        Ok(written) => {
            note_own_write(
                session,
                namespace,
                written.resource_version().as_deref(),
                ctx,
            );
            Ok(())
        }
        Err(e) if is_status(&e, 404) => Ok(()),
        Err(e) => Err(api_error("annotate", "AgenticSession", namespace, &name)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::session::fixtures::session;
    use agentic_crds::ProjectSettingsSpec;

    #[test]
    fn a_users_secret_in_the_way_of_a_copy_is_shown_as_an_api_refusal_is() {
        let occupied = SessionError::Copies(
            crate::handlers::session::secret_copies::CopyError::Occupied {
                namespace: "team".into(),
                name: "ambient-vertex".into(),
            },
        );
        assert!(occupied.is_persisting());
        let conflict = SessionError::Conflict {
            namespace: "team".into(),
            name: "demo".into(),
        };
        assert!(!conflict.is_persisting(), "retried, not reported");
    }

    #[test]
    fn a_cache_showing_any_version_our_writes_replaced_is_behind() {
        // Read at 10; the status write made 12; the annotation patch made 15.
        let mut writes = OwnWrites::starting_at("10");
        writes.wrote("12");
        writes.wrote("15");
        assert!(writes.is_behind("10"));
        assert!(
            writes.is_behind("12"),
            "the cache caught up with the first write only"
        );
        assert!(!writes.is_behind("15"), "the cache has our last write");
        assert!(
            !writes.is_behind("17"),
            "someone wrote after us: the cache is past us"
        );
    }

    #[test]
    fn a_write_that_changed_nothing_replaces_nothing() {
        let mut writes = OwnWrites::starting_at("10");
        writes.wrote("10");
        assert!(!writes.is_behind("10"));
    }

    fn project_settings(seconds: i64) -> ProjectSettings {
        let mut spec = ProjectSettingsSpec::empty();
        spec.inactivity_timeout_seconds = seconds;
        ProjectSettings::new("projectsettings", spec)
    }

    #[test]
    fn inactivity_timeout_prefers_session_then_project_then_default() {
        let mut s = session("demo");
        assert_eq!(
            inactivity_timeout(&s, None, 100),
            Some(Duration::from_secs(100))
        );
        assert_eq!(
            inactivity_timeout(&s, Some(&project_settings(50)), 100),
            Some(Duration::from_secs(50))
        );
        s.spec.inactivity_timeout = Some(10);
        assert_eq!(
            inactivity_timeout(&s, Some(&project_settings(50)), 100),
            Some(Duration::from_secs(10))
        );
    }

    #[test]
    fn zero_disables_inactivity_at_any_level() {
        let mut s = session("demo");
        assert_eq!(inactivity_timeout(&s, None, 0), None);
        assert_eq!(
            inactivity_timeout(&s, Some(&project_settings(0)), 100),
            None
        );
        s.spec.inactivity_timeout = Some(0);
        assert_eq!(
            inactivity_timeout(&s, Some(&project_settings(50)), 100),
            None
        );
    }

    #[test]
    fn errors_are_labelled_by_what_failed() {
        let conflict = SessionError::Conflict {
            namespace: "a".into(),
            name: "b".into(),
        };
        assert_eq!(conflict.metric_label(), "conflict");
    }
}
