//! Status conditions: the `conditions[]` entry type shared by both resources, the condition types
//! and reasons the operator writes, and [`set_condition`], the one way to change a condition.
//!
//! Reasons are CamelCase (they must match the Kubernetes condition reason pattern
//! `^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$`). A session's `Ready` condition carries the reason
//! of its current phase, so `kubectl get as -o yaml` shows why a session is where it is.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Condition types written on an `AgenticSession`.
pub mod types {
    /// The runner is up and serving: True while `Running`; False with the phase's reason
    /// otherwise (for example `InvalidSpec`, `StartTimeout`, `Completed`, `StoppedByUser`).
    pub const READY: &str = "Ready";
    /// The runner's ServiceAccount, Role, RoleBinding and token Secret exist and the token is
    /// fresh.
    pub const RUNNER_IDENTITY_READY: &str = "RunnerIdentityReady";
    /// The workspace is available: the `ambient-workspace-<name>` PVC exists (reason
    /// `Provisioned`), or no PVC is configured (reason `EmptyDir`).
    pub const WORKSPACE_READY: &str = "WorkspaceReady";
    /// The runner Job `<name>-job` exists.
    pub const JOB_CREATED: &str = "JobCreated";
    /// The runner pod exists; False with reason `FailedCreate` and the API server's message
    /// while its Job cannot create it (a quota, a LimitRange, an admission policy).
    pub const POD_CREATED: &str = "PodCreated";
    /// The runner pod was scheduled; False with the scheduler's reason and message while it
    /// cannot be.
    pub const POD_SCHEDULED: &str = "PodScheduled";
    /// The runner container has started running (once True during a run, it stays True until
    /// the next run).
    pub const RUNNER_STARTED: &str = "RunnerStarted";
    /// What the session no longer needs (a finished run's Job, stopped pods) is gone; False
    /// with reason `CleanupFailed` and the API error while deleting it keeps failing.
    pub const CLEANED_UP: &str = "CleanedUp";

    /// The credentials the runner needs exist: `ambient-runner-secrets` in the session's
    /// namespace (Vertex off) or the copied `ambient-vertex` Secret (Vertex on).
    pub const SECRETS_READY: &str = "SecretsReady";
    /// The optional `ambient-non-vertex-integrations` Secret was found (and is passed to the
    /// runner); absent when it was not.
    pub const INTEGRATION_SECRETS_READY: &str = "IntegrationSecretsReady";
    /// Session state persists to S3: True `Configured` with endpoint and bucket, or False
    /// `NotConfigured` (the session still runs; its state is not kept).
    pub const S3_AVAILABLE: &str = "S3Available";

    /// The runner has the session's repositories (`status.reconciledRepos`), or why not.
    pub const REPOS_RECONCILED: &str = "ReposReconciled";
    /// The runner has the session's workflow (`status.reconciledWorkflow`), or why not.
    pub const WORKFLOW_RECONCILED: &str = "WorkflowReconciled";
    /// The runner has the session's current generation (`SpecApplied`), or why not.
    pub const RECONCILED: &str = "Reconciled";

    /// `ProjectSettings`: every `groupAccess` entry has its RoleBinding and stale ones are gone.
    pub const GROUP_BINDINGS_READY: &str = "GroupBindingsReady";
    /// `ProjectSettings`: the `ambient-default-limits` LimitRange exists as specified.
    pub const LIMIT_RANGE_READY: &str = "LimitRangeReady";
    /// `ProjectSettings`: the `ambient-session-trigger` ServiceAccount, Role and RoleBinding
    /// that scheduled sessions run as exist as specified.
    pub const SCHEDULED_SESSION_RBAC_READY: &str = "ScheduledSessionRBACReady";
}

/// Condition reasons written by the operator.
pub mod reasons {
    /// The spec failed [`crate::validate::validate`]; the message names the field. Terminal.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// The runner was not running within the operator's `--start-timeout`. Terminal.
    pub const START_TIMEOUT: &str = "StartTimeout";
    /// The runner exited with code 2: a prerequisite (credentials, repository, ...) was missing.
    pub const PREREQUISITE_FAILED: &str = "PrerequisiteFailed";
    /// The Job hit its deadline (`spec.timeout`).
    pub const TIMEOUT: &str = "Timeout";
    /// The runner failed for another reason; the message has the exit code and reason.
    pub const RUNNER_FAILED: &str = "RunnerFailed";
    /// The runner finished successfully.
    pub const COMPLETED: &str = "Completed";
    /// A user asked the session to stop (`desired-phase=Stopped`).
    pub const STOPPED_BY_USER: &str = "StoppedByUser";
    /// The session was idle longer than its inactivity timeout.
    pub const INACTIVITY_TIMEOUT: &str = "InactivityTimeout";
    /// The runner Job is being deleted.
    pub const STOPPING: &str = "Stopping";
    /// Waiting for the runner container to start.
    pub const CREATING: &str = "Creating";
    /// The runner container is running.
    pub const RUNNING: &str = "Running";
    /// The runner Job disappeared while the session was active; it is being recreated.
    pub const JOB_MISSING: &str = "JobMissing";
    /// An object (Job, identity, PVC, RoleBinding, LimitRange) was created or is up to date.
    pub const PROVISIONED: &str = "Provisioned";
    /// Creating or updating an object failed; the message has the API error.
    pub const PROVISIONING_FAILED: &str = "ProvisioningFailed";
    /// The workspace is an `emptyDir` (no PVC configured).
    pub const EMPTY_DIR: &str = "EmptyDir";
    /// The runner pod cannot be scheduled (the message is the scheduler's).
    pub const UNSCHEDULABLE: &str = "Unschedulable";
    /// The current run's Job lost its owner reference (its session is being deleted with
    /// `--cascade=orphan`, or someone removed it): left alone, never replaced.
    pub const JOB_ORPHANED: &str = "JobOrphaned";
    /// The runner Job's pod was refused by the API server (the Job controller's Event reason;
    /// the message is the API server's). Terminal once the refusal has lasted
    /// `POD_REFUSAL_GRACE`.
    pub const FAILED_CREATE: &str = "FailedCreate";
    /// The runner Job disappeared after its runner started (or could have), before its
    /// outcome was recorded: the run's result is unknown. Terminal; a restart runs it again.
    pub const JOB_LOST: &str = "JobLost";
    /// `ambient-runner-secrets` is missing from the session's namespace (the session waits in
    /// Pending for it, then fails after the start timeout).
    pub const RUNNER_SECRET_MISSING: &str = "RunnerSecretMissing";
    /// The Secret `ambient-vertex` is missing from the backend's namespace (Vertex mode).
    pub const VERTEX_SECRET_MISSING: &str = "VertexSecretMissing";
    /// Every required Secret exists.
    pub const ALL_REQUIRED_SECRETS_FOUND: &str = "AllRequiredSecretsFound";
    /// An optional Secret exists and is used.
    pub const OPTIONAL_SECRET_FOUND: &str = "OptionalSecretFound";
    /// The runner was told, and acknowledged.
    pub const RECONCILED: &str = "Reconciled";
    /// The session lists no repositories.
    pub const NO_REPOS: &str = "NoRepos";
    /// The runner has the session's current generation.
    pub const SPEC_APPLIED: &str = "SpecApplied";
    /// Telling the runner about repositories failed; the message has its answer.
    pub const REPO_RECONCILIATION_FAILED: &str = "RepoReconciliationFailed";
    /// Telling the runner about the workflow failed; the message has its answer.
    pub const WORKFLOW_RECONCILIATION_FAILED: &str = "WorkflowReconciliationFailed";
    /// S3 settings are complete.
    pub const CONFIGURED: &str = "Configured";
    /// S3 settings are incomplete.
    pub const NOT_CONFIGURED: &str = "NotConfigured";
    /// Deleting something the session no longer needs (a finished Job, pods) keeps failing;
    /// the message has the API error.
    pub const CLEANUP_FAILED: &str = "CleanupFailed";
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
    #[serde(rename = "type")]
    #[schemars(length(min = 1, max = 316))]
    pub type_: String,
    /// Whether the condition holds: `True`, `False` or `Unknown`.
    pub status: ConditionStatus,
    /// Machine-readable CamelCase reason, e.g. `InvalidSpec` or `StartTimeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
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
            type_: type_.to_owned(),
            status: status.into(),
            reason: Some(reason.to_owned()),
            message: Some(message.into()),
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
    fn condition_status_serializes_as_capitalised_words() {
        assert_eq!(
            serde_json::to_value(ConditionStatus::Unknown).ok(),
            Some(serde_json::json!("Unknown"))
        );
        assert_eq!(ConditionStatus::from(true).as_str(), "True");
    }

    #[test]
    fn condition_reasons_match_the_kubernetes_reason_pattern() {
        for reason in [
            reasons::INVALID_SPEC,
            reasons::START_TIMEOUT,
            reasons::PREREQUISITE_FAILED,
            reasons::TIMEOUT,
            reasons::RUNNER_FAILED,
            reasons::COMPLETED,
            reasons::STOPPED_BY_USER,
            reasons::INACTIVITY_TIMEOUT,
            reasons::STOPPING,
            reasons::CREATING,
            reasons::RUNNING,
            reasons::JOB_MISSING,
            reasons::PROVISIONED,
            reasons::PROVISIONING_FAILED,
            reasons::EMPTY_DIR,
            reasons::UNSCHEDULABLE,
        ] {
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
