//! Status conditions: the `conditions[]` entry type shared by both resources, the condition
//! types, reasons and fixed messages the operator writes, and [`set_condition`], the one way to
//! change a condition. A condition's texts are [`ConditionText`]s: one of these constants is
//! borrowed, never copied, even in a condition read back from the API server.
//!
//! Reasons are CamelCase (they must match the Kubernetes condition reason pattern
//! `^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$`). A session's `Ready` condition carries the reason
//! of its current phase, so `kubectl get as -o yaml` shows why a session is where it is.

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

/// Declares string constants and `ALL`, the list of them: the texts a condition read from the
/// API server borrows instead of owning (see [`ConditionText`]).
macro_rules! texts {
    ($($(#[$doc:meta])* $name:ident = $value:expr;)*) => {
        $($(#[$doc])* pub const $name: &str = $value;)*
        /// Every text of this module, in declaration order.
        pub const ALL: &[&str] = &[$($name),*];
    };
}

/// Condition types written on an `AgenticSession`.
pub mod types {
    texts! {
        /// The runner is up and serving: True while `Running`; False with the phase's reason
        /// otherwise (for example `InvalidSpec`, `StartTimeout`, `Completed`, `StoppedByUser`).
        READY = "Ready";
        /// The runner's ServiceAccount, Role, RoleBinding and token Secret exist and the token is
        /// fresh.
        RUNNER_IDENTITY_READY = "RunnerIdentityReady";
        /// The workspace is available: the `ambient-workspace-<name>` PVC exists (reason
        /// `Provisioned`), or no PVC is configured (reason `EmptyDir`).
        WORKSPACE_READY = "WorkspaceReady";
        /// The runner Job `<name>-job` exists.
        JOB_CREATED = "JobCreated";
        /// The runner pod exists; False with reason `FailedCreate` and the API server's message
        /// while its Job cannot create it (a quota, a LimitRange, an admission policy).
        POD_CREATED = "PodCreated";
        /// The runner pod was scheduled; False with the scheduler's reason and message while it
        /// cannot be.
        POD_SCHEDULED = "PodScheduled";
        /// The runner container has started running (once True during a run, it stays True until
        /// the next run).
        RUNNER_STARTED = "RunnerStarted";
        /// The runner Job waits for Kueue's admission (ProjectSettings `spec.kueue`): True with
        /// Kueue's reason and message (`Pending`: no quota yet; `Preempted`: the run was ended
        /// for a higher-priority session and waits again); False `Admitted` once admitted.
        QUEUED = "Queued";
        /// What the session no longer needs (a finished run's Job, stopped pods) is gone; False
        /// with reason `CleanupFailed` and the API error while deleting it keeps failing.
        CLEANED_UP = "CleanedUp";

        /// The credentials the runner needs exist: `ambient-runner-secrets` in the session's
        /// namespace (Vertex off) or the copied `ambient-vertex` Secret (Vertex on).
        SECRETS_READY = "SecretsReady";
        /// The optional `ambient-non-vertex-integrations` Secret was found (and is passed to the
        /// runner); absent when it was not.
        INTEGRATION_SECRETS_READY = "IntegrationSecretsReady";
        /// Session state persists to S3: True `Configured` with endpoint and bucket, or False
        /// `NotConfigured` (the session still runs; its state is not kept).
        S3_AVAILABLE = "S3Available";

        /// The runner has the session's repositories (`status.reconciledRepos`), or why not.
        REPOS_RECONCILED = "ReposReconciled";
        /// The runner has the session's workflow (`status.reconciledWorkflow`), or why not.
        WORKFLOW_RECONCILED = "WorkflowReconciled";
        /// The runner has the session's current generation (`SpecApplied`), or why not.
        RECONCILED = "Reconciled";

        /// `ProjectSettings`: every `groupAccess` entry has its RoleBinding and stale ones are gone.
        GROUP_BINDINGS_READY = "GroupBindingsReady";
        /// `ProjectSettings`: the `ambient-default-limits` LimitRange exists as specified.
        LIMIT_RANGE_READY = "LimitRangeReady";
        /// `ProjectSettings`: the `ambient-session-trigger` ServiceAccount, Role and RoleBinding
        /// that scheduled sessions run as exist as specified.
        SCHEDULED_SESSION_RBAC_READY = "ScheduledSessionRBACReady";
    }
}

/// Condition reasons written by the operator.
pub mod reasons {
    texts! {
        /// The spec failed [`crate::validate::validate`]; the message names the field. Terminal.
        INVALID_SPEC = "InvalidSpec";
        /// The runner was not running within the operator's `--start-timeout`. Terminal.
        START_TIMEOUT = "StartTimeout";
        /// The runner exited with code 2: a prerequisite (credentials, repository, ...) was missing.
        PREREQUISITE_FAILED = "PrerequisiteFailed";
        /// The Job hit its deadline (`spec.timeout`).
        TIMEOUT = "Timeout";
        /// The runner failed for another reason; the message has the exit code and reason.
        RUNNER_FAILED = "RunnerFailed";
        /// The runner finished successfully.
        COMPLETED = "Completed";
        /// A user asked the session to stop (`desired-phase=Stopped`).
        STOPPED_BY_USER = "StoppedByUser";
        /// The session was idle longer than its inactivity timeout.
        INACTIVITY_TIMEOUT = "InactivityTimeout";
        /// The runner Job is being deleted.
        STOPPING = "Stopping";
        /// Waiting for the runner container to start.
        CREATING = "Creating";
        /// The runner container is running.
        RUNNING = "Running";
        /// Kueue admitted the runner Job (condition `Queued` False).
        ADMITTED = "Admitted";
        /// Kueue preempted the run for a higher-priority session; it waits in the queue again.
        PREEMPTED = "Preempted";
        /// The runner Job waited in Kueue's queue longer than `--queue-timeout`. Terminal.
        QUEUE_TIMEOUT = "QueueTimeout";
        /// The runner Job disappeared while the session was active; it is being recreated.
        JOB_MISSING = "JobMissing";
        /// An object (Job, identity, PVC, RoleBinding, LimitRange) was created or is up to date.
        PROVISIONED = "Provisioned";
        /// Creating or updating an object failed; the message has the API error.
        PROVISIONING_FAILED = "ProvisioningFailed";
        /// The workspace is an `emptyDir` (no PVC configured).
        EMPTY_DIR = "EmptyDir";
        /// The runner pod cannot be scheduled (the message is the scheduler's).
        UNSCHEDULABLE = "Unschedulable";
        /// The current run's Job lost its owner reference (its session is being deleted with
        /// `--cascade=orphan`, or someone removed it): left alone, never replaced.
        JOB_ORPHANED = "JobOrphaned";
        /// The runner Job's pod was refused by the API server (the Job controller's Event reason;
        /// the message is the API server's). Terminal once the refusal has lasted
        /// `POD_REFUSAL_GRACE`.
        FAILED_CREATE = "FailedCreate";
        /// The runner Job disappeared after its runner started (or could have), before its
        /// outcome was recorded: the run's result is unknown. Terminal; a restart runs it again.
        JOB_LOST = "JobLost";
        /// `ambient-runner-secrets` is missing from the session's namespace (the session waits in
        /// Pending for it, then fails after the start timeout).
        RUNNER_SECRET_MISSING = "RunnerSecretMissing";
        /// The Secret `ambient-vertex` is missing from the backend's namespace (Vertex mode).
        VERTEX_SECRET_MISSING = "VertexSecretMissing";
        /// Every required Secret exists.
        ALL_REQUIRED_SECRETS_FOUND = "AllRequiredSecretsFound";
        /// An optional Secret exists and is used.
        OPTIONAL_SECRET_FOUND = "OptionalSecretFound";
        /// The runner was told, and acknowledged.
        RECONCILED = "Reconciled";
        /// The session lists no repositories.
        NO_REPOS = "NoRepos";
        /// The runner has the session's current generation.
        SPEC_APPLIED = "SpecApplied";
        /// Telling the runner about repositories failed; the message has its answer.
        REPO_RECONCILIATION_FAILED = "RepoReconciliationFailed";
        /// Telling the runner about the workflow failed; the message has its answer.
        WORKFLOW_RECONCILIATION_FAILED = "WorkflowReconciliationFailed";
        /// S3 settings are complete.
        CONFIGURED = "Configured";
        /// S3 settings are incomplete.
        NOT_CONFIGURED = "NotConfigured";
        /// Deleting something the session no longer needs (a finished Job, pods) keeps failing;
        /// the message has the API error.
        CLEANUP_FAILED = "CleanupFailed";
    }
}

/// Messages the operator writes that name nothing of a particular session: the steady states
/// of every session (running, finished, stopped) say the same words, and a cached session
/// borrows them from here rather than holding its own copy.
pub mod messages {
    texts! {
        /// `RunnerIdentityReady=True`.
        IDENTITY_PROVISIONED = "runner identity provisioned";
        /// `JobCreated=True`, and the phase message of `Creating`.
        JOB_CREATED = "runner Job created";
        /// `Ready=False` while the runner starts.
        WAITING_FOR_RUNNER = "waiting for the runner to start";
        /// `SecretsReady=True`.
        SECRETS_AVAILABLE = "runner secrets available";
        /// `IntegrationSecretsReady=True` (the Secret is `ambient-non-vertex-integrations`).
        INTEGRATIONS_PRESENT = "Secret ambient-non-vertex-integrations present";
        /// `S3Available=False`.
        S3_NOT_CONFIGURED = "S3 storage not configured: session state will not persist \
            across runs; configure S3 in the project's ambient-non-vertex-integrations Secret \
            (STORAGE_MODE=custom) or the operator's minio-credentials";
        /// `Queued=False` once Kueue admitted the runner Job.
        ADMITTED = "admitted by Kueue";
        /// `PodScheduled=True`.
        POD_SCHEDULED = "runner pod scheduled";
        /// `RunnerStarted=True`.
        CONTAINER_RUNNING = "runner container running";
        /// `Ready=True`.
        SESSION_RUNNING = "session is running";
        /// The phase message of `Running`.
        RUNNER_RUNNING = "runner is running";
        /// `Ready=False` and the phase message of `Completed`.
        RUNNER_SUCCEEDED = "runner finished successfully";
        /// The phase message of `Stopped`.
        RUNNER_STOPPED = "runner stopped";
        /// `Ready=False` of a session stopped by its user.
        SESSION_STOPPED = "session stopped";
        /// `Ready=False` of a session stopped for inactivity.
        STOPPED_AFTER_INACTIVITY = "stopped after inactivity";
        /// A stop asked of a session whose runner never started.
        STOPPED_BEFORE_START = "stopped before it started";
        /// A restart's `JobCreated`, `Ready` and phase message.
        RESTART_REQUESTED = "restart requested";
        /// `CleanedUp=True`.
        NOTHING_LEFT_TO_DELETE = "nothing left to delete";
        /// `ReposReconciled=True` of a session without repositories.
        NO_REPOS = "No repositories defined";
        /// `WorkflowReconciled=True` of a session without a workflow.
        NO_WORKFLOW = "No workflow selected";
    }
}

/// Text of a condition's type, reason or message: borrowed when it is one of the operator's
/// own constants ([`types`], [`reasons`], [`messages`]), owned otherwise. At 10 000 cached
/// sessions of ten conditions each, the borrowed texts are 300 000 allocations never made.
pub type ConditionText = Cow<'static, str>;

/// The operator's own constant equal to `text`, if there is one.
pub fn known_text(text: &str) -> Option<&'static str> {
    [types::ALL, reasons::ALL, messages::ALL]
        .into_iter()
        .flatten()
        .find(|known| **known == text)
        .copied()
}

/// `text` as a [`ConditionText`]: borrowed if it is a known constant, copied otherwise.
pub fn condition_text(text: &str) -> ConditionText {
    known_text(text).map_or_else(|| Cow::Owned(text.to_owned()), Cow::Borrowed)
}

/// Like [`condition_text`], keeping `text`'s allocation when it is not a known constant.
pub fn owned_condition_text(text: String) -> ConditionText {
    known_text(&text).map_or(Cow::Owned(text), Cow::Borrowed)
}

/// Reads a [`ConditionText`] without allocating when it is a known constant.
fn deserialize_text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<ConditionText, D::Error> {
    struct Text;
    impl serde::de::Visitor<'_> for Text {
        type Value = ConditionText;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<ConditionText, E> {
            Ok(condition_text(text))
        }
        fn visit_string<E: serde::de::Error>(self, text: String) -> Result<ConditionText, E> {
            Ok(owned_condition_text(text))
        }
    }
    deserializer.deserialize_str(Text)
}

/// [`deserialize_text`] of an optional field.
fn deserialize_optional_text<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<ConditionText>, D::Error> {
    #[derive(Deserialize)]
    struct Wrapped(#[serde(deserialize_with = "deserialize_text")] ConditionText);
    Option::<Wrapped>::deserialize(deserializer).map(|text| text.map(|Wrapped(text)| text))
}

/// Status of a condition.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// Not known (yet).
    #[default]
    Unknown,
}

impl ConditionStatus {
    /// The wire form: `True`, `False` or `Unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        }
    }
}

impl From<bool> for ConditionStatus {
    fn from(value: bool) -> Self {
        if value { Self::True } else { Self::False }
    }
}

/// One entry of `status.conditions`: the shape of `metav1.Condition`, with optional reason,
/// message and times so conditions written by the original operator still read.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type, e.g. `Ready` or `RunnerStarted` (unique within the list).
    #[serde(rename = "type", deserialize_with = "deserialize_text")]
    #[schemars(length(min = 1, max = 316))]
    pub type_: ConditionText,
    /// Whether the condition holds: `True`, `False` or `Unknown`.
    pub status: ConditionStatus,
    /// Machine-readable CamelCase reason, e.g. `InvalidSpec` or `StartTimeout`.
    #[serde(
        default,
        deserialize_with = "deserialize_optional_text",
        skip_serializing_if = "Option::is_none"
    )]
    pub reason: Option<ConditionText>,
    /// Human-readable detail.
    #[serde(
        default,
        deserialize_with = "deserialize_optional_text",
        skip_serializing_if = "Option::is_none"
    )]
    pub message: Option<ConditionText>,
    /// When `status` last changed (not when the condition was last written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    /// The `metadata.generation` the condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub observed_generation: Option<i64>,
}

impl Condition {
    /// A condition of `type_` with `status`, `reason` and `message`; no transition time or
    /// generation yet ([`set_condition`] fills the time in).
    pub fn new(
        type_: &str,
        status: impl Into<ConditionStatus>,
        reason: &str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_: condition_text(type_),
            status: status.into(),
            reason: Some(condition_text(reason)),
            message: Some(owned_condition_text(message.into())),
            last_transition_time: None,
            observed_generation: None,
        }
    }

    /// The same condition, recording the generation it was computed from.
    pub fn with_observed_generation(mut self, generation: Option<i64>) -> Self {
        self.observed_generation = generation;
        self
    }
}

/// Inserts or updates the condition of `new.type_` in `conditions`.
///
/// `lastTransitionTime` becomes `now` only when the condition is new or its status changes;
/// otherwise the existing time is kept (and reason, message and observedGeneration are updated).
/// Whatever `new.last_transition_time` holds is ignored. Returns whether `conditions` changed, so
/// a caller can skip a status write that would change nothing.
pub fn set_condition(conditions: &mut Vec<Condition>, new: Condition, now: &Time) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        None => {
            conditions.push(Condition {
                last_transition_time: Some(now.clone()),
                ..new
            });
            true
        }
        Some(existing) => {
            let last_transition_time = if existing.status != new.status {
                Some(now.clone())
            } else {
                existing
                    .last_transition_time
                    .clone()
                    .or_else(|| Some(now.clone()))
            };
            let updated = Condition {
                last_transition_time,
                ..new
            };
            if *existing == updated {
                false
            } else {
                *existing = updated;
                true
            }
        }
    }
}

/// The condition of type `type_`, if present.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of type `type_` is present and `True`.
pub fn is_condition_true(conditions: &[Condition], type_: &str) -> bool {
    find_condition(conditions, type_).is_some_and(|c| c.status == ConditionStatus::True)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).expect("valid timestamp"))
    }

    #[test]
    fn set_condition_adds_a_new_condition_with_now_as_transition_time() {
        let mut conditions = vec![];
        let changed = set_condition(
            &mut conditions,
            Condition::new(types::READY, false, reasons::CREATING, "waiting"),
            &at(10),
        );
        assert!(changed);
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].last_transition_time, Some(at(10)));
    }

    #[test]
    fn set_condition_keeps_last_transition_time_when_status_is_unchanged() {
        let mut conditions = vec![];
        set_condition(
            &mut conditions,
            Condition::new(types::READY, false, reasons::CREATING, "waiting"),
            &at(10),
        );
        let changed = set_condition(
            &mut conditions,
            Condition::new(types::READY, false, reasons::UNSCHEDULABLE, "no nodes"),
            &at(20),
        );
        assert!(changed, "reason and message changed");
        assert_eq!(conditions[0].last_transition_time, Some(at(10)));
        assert_eq!(
            conditions[0].reason.as_deref(),
            Some(reasons::UNSCHEDULABLE)
        );
        assert_eq!(conditions[0].message.as_deref(), Some("no nodes"));
    }

    #[test]
    fn set_condition_moves_last_transition_time_when_status_changes() {
        let mut conditions = vec![];
        set_condition(
            &mut conditions,
            Condition::new(types::READY, false, reasons::CREATING, "waiting"),
            &at(10),
        );
        set_condition(
            &mut conditions,
            Condition::new(types::READY, true, reasons::RUNNING, "up"),
            &at(30),
        );
        assert_eq!(conditions[0].status, ConditionStatus::True);
        assert_eq!(conditions[0].last_transition_time, Some(at(30)));
    }

    #[test]
    fn set_condition_reports_no_change_for_an_identical_condition() {
        let mut conditions = vec![];
        let cond = Condition::new(types::JOB_CREATED, true, reasons::PROVISIONED, "job")
            .with_observed_generation(Some(3));
        set_condition(&mut conditions, cond.clone(), &at(10));
        assert!(!set_condition(&mut conditions, cond, &at(50)));
        assert_eq!(conditions[0].last_transition_time, Some(at(10)));
    }

    #[test]
    fn set_condition_leaves_other_types_alone() {
        let mut conditions = vec![];
        set_condition(
            &mut conditions,
            Condition::new(types::READY, false, reasons::CREATING, ""),
            &at(1),
        );
        set_condition(
            &mut conditions,
            Condition::new(types::JOB_CREATED, true, reasons::PROVISIONED, ""),
            &at(2),
        );
        assert_eq!(conditions.len(), 2);
        assert!(is_condition_true(&conditions, types::JOB_CREATED));
        assert!(!is_condition_true(&conditions, types::READY));
        assert!(!is_condition_true(&conditions, types::POD_SCHEDULED));
    }

    #[test]
    fn a_condition_read_from_the_api_borrows_the_operators_texts_and_owns_the_rest() {
        let json = serde_json::json!({"type": "Ready", "status": "False",
            "reason": "Unschedulable", "message": "0/3 nodes are available"});
        let read: Condition = serde_json::from_value(json.clone()).expect("a condition");
        assert!(matches!(read.type_, Cow::Borrowed(types::READY)));
        assert!(matches!(
            read.reason,
            Some(Cow::Borrowed(reasons::UNSCHEDULABLE))
        ));
        assert!(matches!(read.message, Some(Cow::Owned(_))));
        assert_eq!(
            serde_json::to_value(&read).ok(),
            Some(json),
            "written back unchanged"
        );

        let from_bytes: Condition = serde_json::from_slice(
            br#"{"type":"S3Available","status":"False","message":"S3 storage not configured: session state will not persist across runs; configure S3 in the project's ambient-non-vertex-integrations Secret (STORAGE_MODE=custom) or the operator's minio-credentials"}"#,
        )
        .expect("a condition");
        assert!(matches!(
            from_bytes.message,
            Some(Cow::Borrowed(messages::S3_NOT_CONFIGURED))
        ));
        assert_eq!(from_bytes.reason, None);
    }

    #[test]
    fn messages_that_name_a_secret_name_the_one_in_keys() {
        assert_eq!(
            messages::INTEGRATIONS_PRESENT,
            format!("Secret {} present", crate::keys::INTEGRATIONS_SECRET)
        );
    }

    #[test]
    fn condition_status_serializes_as_capitalised_words() {
        assert_eq!(
            serde_json::to_value(ConditionStatus::Unknown).ok(),
            Some(serde_json::json!("Unknown"))
        );
        assert_eq!(ConditionStatus::from(true).as_str(), "True");
    }

    #[test]
    fn condition_reasons_match_the_kubernetes_reason_pattern() {
        for reason in reasons::ALL {
            assert!(
                reason
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic())
            );
            assert!(
                reason.chars().all(|c| c.is_ascii_alphanumeric()),
                "{reason}"
            );
        }
    }
}
