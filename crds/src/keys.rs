//! Every label, annotation, API group and well-known object name shared by the operator, its
//! runner and the tools written for the original operator. Each string is defined here once.
//!
//! Condition types and reasons live in [`crate::condition`]; runner environment variable names in
//! [`crate::env`]; names derived from a session name in [`crate::names`].

/// API group of both custom resources.
pub const GROUP: &str = "vteam.ambient-code";
/// API version of both custom resources.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` of both custom resources (`<GROUP>/<VERSION>`).
pub const API_VERSION: &str = "vteam.ambient-code/v1alpha1";
/// Kind of the session resource.
pub const AGENTIC_SESSION_KIND: &str = "AgenticSession";
/// Plural (resource) name of the session resource.
pub const AGENTIC_SESSION_PLURAL: &str = "agenticsessions";
/// Kind of the per-namespace settings resource.
pub const PROJECT_SETTINGS_KIND: &str = "ProjectSettings";
/// Plural (resource) name of the per-namespace settings resource.
pub const PROJECT_SETTINGS_PLURAL: &str = "projectsettings";
/// The only allowed name of a `ProjectSettings` object (a singleton per namespace, enforced by CEL).
pub const PROJECT_SETTINGS_NAME: &str = "projectsettings";

/// Namespace label: only sessions in namespaces labelled `ambient-code.io/managed=true` are
/// reconciled, and such namespaces get a default `ProjectSettings`.
pub const MANAGED_NAMESPACE_LABEL: &str = "ambient-code.io/managed";
/// The value of [`MANAGED_NAMESPACE_LABEL`] that marks a namespace as managed.
pub const MANAGED_NAMESPACE_VALUE: &str = "true";

/// Session annotation carrying the phase a user (or the inactivity stopper) asks for:
/// [`DESIRED_PHASE_RUNNING`] or [`DESIRED_PHASE_STOPPED`].
pub const DESIRED_PHASE_ANNOTATION: &str = "ambient-code.io/desired-phase";
/// Value of [`DESIRED_PHASE_ANNOTATION`] requesting a (re)start.
pub const DESIRED_PHASE_RUNNING: &str = "Running";
/// Value of [`DESIRED_PHASE_ANNOTATION`] requesting a stop.
pub const DESIRED_PHASE_STOPPED: &str = "Stopped";
/// Session annotation: RFC 3339 time at which a stop was requested.
pub const STOP_REQUESTED_AT_ANNOTATION: &str = "ambient-code.io/stop-requested-at";
/// Session annotation: RFC 3339 time at which a (re)start was requested.
pub const START_REQUESTED_AT_ANNOTATION: &str = "ambient-code.io/start-requested-at";
/// Session annotation: why a stop was requested (the operator writes `inactivity`, see
/// [`crate::session::StoppedReason`]); absent means the user asked.
pub const STOP_REASON_ANNOTATION: &str = "ambient-code.io/stop-reason";
/// Session annotation set by `session-trigger` when it restarts a finished session with a
/// prompt: that run executes its prompt (`IS_RESUME=false`, since the runner skips
/// `INITIAL_PROMPT` on a resume); cleared once the run's Job exists.
pub const FORCE_EXECUTE_PROMPT_ANNOTATION: &str = "ambient-code.io/force-execute-prompt";
/// Session label set by `session-trigger`: the scheduled session (CronJob) that made it.
pub const SCHEDULED_SESSION_NAME_LABEL: &str = "ambient-code.io/scheduled-session-name";
/// Session label set by `session-trigger` on every session it creates (`true`).
pub const SCHEDULED_RUN_LABEL: &str = "ambient-code.io/scheduled-run";
/// Runner Job label read by Kueue: the LocalQueue (in the Job's namespace) it waits in.
pub const KUEUE_QUEUE_NAME_LABEL: &str = "kueue.x-k8s.io/queue-name";
/// Runner Job label read by Kueue: the WorkloadPriorityClass of its Workload.
pub const KUEUE_PRIORITY_CLASS_LABEL: &str = "kueue.x-k8s.io/priority-class";
/// Workload label set by Kueue: the UID of the Job it was made for.
pub const KUEUE_JOB_UID_LABEL: &str = "kueue.x-k8s.io/job-uid";
/// ServiceAccount, Role and RoleBinding a `ProjectSettings` gives its namespace for
/// `session-trigger` (the scheduled sessions' CronJobs run as this ServiceAccount).
pub const SESSION_TRIGGER_NAME: &str = "ambient-session-trigger";
/// Session annotation: name of the Secret holding the runner's tokens.
pub const RUNNER_TOKEN_SECRET_ANNOTATION: &str = "ambient-code.io/runner-token-secret";
/// Session annotation: name of the runner's ServiceAccount.
pub const RUNNER_SA_ANNOTATION: &str = "ambient-code.io/runner-sa";
/// Session annotation: the session this one continues (passed to the runner as
/// `PARENT_SESSION_ID`).
pub const PARENT_SESSION_ID_ANNOTATION: &str = "vteam.ambient-code/parent-session-id";
/// Job annotation: the `status.startTime` of the run the Job was made for (RFC 3339). Ties a
/// Job to one run, so a Job of a newer run than the operator's view of the session reveals
/// that view as stale (and a Job of an older run is never taken for the current one).
pub const RUN_STARTED_AT_ANNOTATION: &str = "ambient-code.io/run-started-at";
/// Token Secret annotation: RFC 3339 time at which `k8s-token` was last (re)issued.
pub const TOKEN_REFRESHED_AT_ANNOTATION: &str = "ambient-code.io/token-refreshed-at";

/// Child label: `agentic-session=<session name>` on every object made for a session.
pub const SESSION_LABEL: &str = "agentic-session";
/// Child label key `app` (value [`RUNNER_APP`]).
pub const APP_LABEL: &str = "app";
/// Value of [`APP_LABEL`] on every object made for a session.
pub const RUNNER_APP: &str = "ambient-code-runner";
/// Standard label marking objects this operator created and may prune (for example the group
/// RoleBindings of a `ProjectSettings`); value [`MANAGED_BY_VALUE`].
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY_VALUE: &str = "ambient-code-operator";

/// Key in the runner token Secret holding the Kubernetes ServiceAccount token.
pub const TOKEN_SECRET_K8S_TOKEN_KEY: &str = "k8s-token";
/// Key in the runner token Secret holding the AG-UI token (exposed as `AGUI_TOKEN`).
pub const TOKEN_SECRET_AGUI_TOKEN_KEY: &str = "agui-token";
/// Directory in the runner container where the token Secret is mounted.
pub const RUNNER_TOKEN_MOUNT_DIR: &str = "/var/run/secrets/ambient";
/// File name, inside [`RUNNER_TOKEN_MOUNT_DIR`], of the Kubernetes token (from
/// [`TOKEN_SECRET_K8S_TOKEN_KEY`]); mounted as a file so refreshes reach a running pod.
pub const RUNNER_TOKEN_FILE: &str = "bot-token";
/// Mount path of the runner's workspace (also its `WORKSPACE_PATH`).
pub const WORKSPACE_MOUNT_PATH: &str = "/workspace";

/// Secret in a session's namespace holding the runner's model credentials (e.g.
/// `ANTHROPIC_API_KEY`); required unless Vertex mode is on, passed with `envFrom`.
pub const RUNNER_SECRETS: &str = "ambient-runner-secrets";
/// Optional Secret in a session's namespace with integration credentials (`GIT_*`, `JIRA_*`,
/// custom keys) and per-project S3 settings; passed with `envFrom` when present.
pub const INTEGRATIONS_SECRET: &str = "ambient-non-vertex-integrations";
/// Vertex credentials, copied from the backend's namespace and mounted at [`VERTEX_MOUNT_PATH`].
pub const VERTEX_SECRET: &str = "ambient-vertex";
/// Langfuse settings, copied from the backend's namespace when `LANGFUSE_ENABLED`.
pub const LANGFUSE_SECRET: &str = "ambient-admin-langfuse-secret";
/// MLflow settings, copied from the backend's namespace when `MLFLOW_TRACING_ENABLED`.
pub const MLFLOW_SECRET: &str = "ambient-admin-mlflow-observability-secret";
/// The runner's Google OAuth client, copied from the operator's namespace.
pub const GOOGLE_OAUTH_SECRET: &str = "google-workflow-app-secret";
/// Shared S3 credentials (`access-key`, `secret-key`), copied from the backend's namespace.
pub const MINIO_CREDENTIALS_SECRET: &str = "minio-credentials";
/// Annotation on a copied Secret: `<namespace>/<name>` of its source.
pub const COPIED_FROM_ANNOTATION: &str = "vteam.ambient-code/copied-from";
/// Annotation on a copied Secret: the source's resourceVersion the copy holds.
pub const COPIED_VERSION_ANNOTATION: &str = "vteam.ambient-code/copied-from-version";
/// Label on the operator's Secret copies (selected by its cache, with [`APP_LABEL`]).
pub const COPY_LABEL: &str = "ambient-code.io/secret-copy";
/// ConfigMap in a session's namespace whose key [`CA_BUNDLE_KEY`] is mounted as the runner's
/// trusted CA bundle.
pub const CA_BUNDLE_CONFIGMAP: &str = "trusted-ca-bundle";
/// Key of [`CA_BUNDLE_CONFIGMAP`] holding the PEM bundle.
pub const CA_BUNDLE_KEY: &str = "ca-bundle.crt";
/// Where the trusted CA bundle is mounted in the runner.
pub const CA_BUNDLE_MOUNT_PATH: &str = "/etc/pki/tls/certs/ca-bundle.crt";
/// Where the Vertex Secret is mounted in the runner (read-only).
pub const VERTEX_MOUNT_PATH: &str = "/app/vertex";
/// Name of the runner container port the Service targets.
pub const AGUI_PORT_NAME: &str = "agui";
/// The runner's default port (the platform's backend and the runner image assume it).
pub const DEFAULT_RUNNER_PORT: u16 = 8001;
/// Label `app` value of the session Service and the runner NetworkPolicy.
pub const PLATFORM_APP: &str = "ambient-code";
/// Label on the NetworkPolicy the operator keeps per managed namespace.
pub const MANAGED_BY_OPERATOR_LABEL: &str = "ambient-code.io/managed-by";
/// Value of [`MANAGED_BY_OPERATOR_LABEL`].
pub const MANAGED_BY_OPERATOR_VALUE: &str = "operator";
/// The NetworkPolicy admitting only the backend and the operator to runner pods.
pub const RUNNER_NETWORK_POLICY: &str = "runner-allow-backend-only";
/// Label on the runner's ServiceAccount (`app=ambient-runner`).
pub const RUNNER_SA_APP: &str = "ambient-runner";
/// Label on the runner's token Secret (`app=ambient-runner-token`).
pub const RUNNER_TOKEN_APP: &str = "ambient-runner-token";
/// ServiceAccount annotation: the user the runner acts for (`spec.userContext.userId`).
pub const CREATED_BY_USER_ID_ANNOTATION: &str = "ambient-code.io/created-by-user-id";

/// Name of the leader-election Lease in the operator's namespace.
pub const LEADER_LEASE_NAME: &str = "ambient-code-operator.ambient-code.io";
/// Label of a sharded replica's member Lease: `ambient-code.io/operator-ring=<ring>`. The live
/// members of a ring are the unexpired Leases with that label (SPEC §6).
pub const OPERATOR_RING_LABEL: &str = "ambient-code.io/operator-ring";
/// Member Lease name prefix; the replica's pod name follows.
pub const MEMBER_LEASE_PREFIX: &str = "ambient-code-operator-member-";
/// Member Lease annotation: the buckets the replica holds (acts on, is claiming or is still
/// releasing), 64 hex digits of a 256-bit set, bucket 0 the lowest bit. A bucket leaving it is
/// the replica's acknowledgement that it stopped acting on it.
pub const HELD_BUCKETS_ANNOTATION: &str = "ambient-code.io/held-buckets";
/// Member Lease annotation: `"true"` once the replica's caches hold its share, `"false"` before
/// (or when its lists have kept failing): only ready members are given buckets. A Lease without
/// it (an older version) counts as ready.
pub const CACHES_READY_ANNOTATION: &str = "ambient-code.io/caches-ready";
/// Name of the LimitRange a `ProjectSettings` reconcile keeps in its namespace.
pub const LIMIT_RANGE_NAME: &str = "ambient-default-limits";
/// Prefix of the ClusterRoles group RoleBindings point to: `ambient-project-<role>`.
pub const PROJECT_CLUSTER_ROLE_PREFIX: &str = "ambient-project-";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_version_is_group_slash_version() {
        assert_eq!(API_VERSION, format!("{GROUP}/{VERSION}"));
    }

    #[test]
    fn annotation_keys_are_qualified_names() {
        for key in [
            MANAGED_NAMESPACE_LABEL,
            DESIRED_PHASE_ANNOTATION,
            STOP_REQUESTED_AT_ANNOTATION,
            START_REQUESTED_AT_ANNOTATION,
            STOP_REASON_ANNOTATION,
            RUNNER_TOKEN_SECRET_ANNOTATION,
            RUNNER_SA_ANNOTATION,
            PARENT_SESSION_ID_ANNOTATION,
            TOKEN_REFRESHED_AT_ANNOTATION,
            RUN_STARTED_AT_ANNOTATION,
            FORCE_EXECUTE_PROMPT_ANNOTATION,
            SCHEDULED_SESSION_NAME_LABEL,
            SCHEDULED_RUN_LABEL,
            MANAGED_BY_LABEL,
            KUEUE_QUEUE_NAME_LABEL,
            KUEUE_PRIORITY_CLASS_LABEL,
            KUEUE_JOB_UID_LABEL,
        ] {
            let (prefix, name) = key.split_once('/').expect("prefixed key");
            assert!(!prefix.is_empty() && prefix.len() <= 253, "{key}");
            assert!(!name.is_empty() && name.len() <= 63, "{key}");
        }
    }
}
