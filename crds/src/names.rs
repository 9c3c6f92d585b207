//! Names of the objects the operator makes for a session or a project, derived from their
//! owner's name. Pure functions: the same input always gives the same name, which is what makes
//! creating a child twice impossible (a second create gets `AlreadyExists`).
//!
//! A session name of at most [`MAX_SESSION_NAME_LEN`] characters (enforced at admission by a CEL
//! rule on `AgenticSession`) keeps every name bound by 63 characters within
//! [`MAX_CHILD_NAME_LEN`]: the Service `session-<name>` (a DNS-1035 label) and the label values
//! `agentic-session=<name>` and the Job controller's `job-name=<name>-job`. Every other child's
//! name is a DNS subdomain (up to 253 characters).

use crate::keys::PROJECT_CLUSTER_ROLE_PREFIX;

/// Longest a DNS-1035 label (a Service's name) or a label value may be.
pub const MAX_CHILD_NAME_LEN: usize = 63;

/// Longest allowed session name: the Service `session-<name>` must be a DNS label, so
/// `63 - 8 = 55`. The platform's backend names sessions `session-<uuid4>` (44 characters) and
/// their clones `<name>-duplicate` (54), so nothing shorter will do.
pub const MAX_SESSION_NAME_LEN: usize = 55;

/// Longest a DNS subdomain (most objects' names) may be.
pub const MAX_SUBDOMAIN_LEN: usize = 253;

const SERVICE_ACCOUNT_PREFIX: &str = "ambient-session-";
const ROLE_SUFFIX: &str = "-role";
const ROLE_BINDING_SUFFIX: &str = "-rb";
const TOKEN_SECRET_PREFIX: &str = "ambient-runner-token-";
const WORKSPACE_PVC_PREFIX: &str = "ambient-workspace-";
/// What a session's name is followed by in its Job's.
pub const JOB_SUFFIX: &str = "-job";
const SERVICE_PREFIX: &str = "session-";
const RUNNER_EVENTS_SUFFIX: &str = "-runner";

/// The runner Job of a session: `<session>-job`.
pub fn job_name(session: &str) -> String {
    format!("{session}{JOB_SUFFIX}")
}

/// The runner's ServiceAccount: `ambient-session-<session>`.
pub fn service_account_name(session: &str) -> String {
    format!("{SERVICE_ACCOUNT_PREFIX}{session}")
}

/// The runner's Role: `ambient-session-<session>-role`.
pub fn role_name(session: &str) -> String {
    format!("{SERVICE_ACCOUNT_PREFIX}{session}{ROLE_SUFFIX}")
}

/// The RoleBinding of the runner's Role to its ServiceAccount: `ambient-session-<session>-rb`.
pub fn role_binding_name(session: &str) -> String {
    format!("{SERVICE_ACCOUNT_PREFIX}{session}{ROLE_BINDING_SUFFIX}")
}

/// The Secret holding the runner's tokens: `ambient-runner-token-<session>`.
pub fn token_secret_name(session: &str) -> String {
    format!("{TOKEN_SECRET_PREFIX}{session}")
}

/// The workspace PersistentVolumeClaim (when a workspace size is configured):
/// `ambient-workspace-<session>`.
pub fn workspace_pvc_name(session: &str) -> String {
    format!("{WORKSPACE_PVC_PREFIX}{session}")
}

/// The Service in front of the runner: `session-<session>`.
pub fn service_name(session: &str) -> String {
    format!("{SERVICE_PREFIX}{session}")
}

/// The original operator's bare runner pod, `<session>-runner`: the backend's pod-events view
/// looks up this name (the runner pod's Events are republished under it), and sessions the
/// original started run in a pod of this name.
pub fn original_runner_pod_name(session: &str) -> String {
    format!("{session}{RUNNER_EVENTS_SUFFIX}")
}

/// Every name derived from a session name, in a fixed order (Job, ServiceAccount, Role,
/// RoleBinding, token Secret, workspace PVC, Service). Handy for tests and for cleanup.
pub fn session_child_names(session: &str) -> [String; 7] {
    [
        job_name(session),
        service_account_name(session),
        role_name(session),
        role_binding_name(session),
        token_secret_name(session),
        workspace_pvc_name(session),
        service_name(session),
    ]
}

/// The ClusterRole a `ProjectSettings` group binding points to: `ambient-project-<role>`.
pub fn project_cluster_role_name(role: &str) -> String {
    format!("{PROJECT_CLUSTER_ROLE_PREFIX}{role}")
}

/// The RoleBinding a `ProjectSettings` makes for one `groupAccess` entry: `<groupName>-<role>`.
pub fn group_role_binding_name(group_name: &str, role: &str) -> String {
    format!("{group_name}-{role}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_names_follow_the_documented_patterns() {
        assert_eq!(job_name("s1"), "s1-job");
        assert_eq!(service_account_name("s1"), "ambient-session-s1");
        assert_eq!(role_name("s1"), "ambient-session-s1-role");
        assert_eq!(role_binding_name("s1"), "ambient-session-s1-rb");
        assert_eq!(token_secret_name("s1"), "ambient-runner-token-s1");
        assert_eq!(workspace_pvc_name("s1"), "ambient-workspace-s1");
        assert_eq!(service_name("s1"), "session-s1");
        assert_eq!(original_runner_pod_name("s1"), "s1-runner");
        assert_eq!(project_cluster_role_name("edit"), "ambient-project-edit");
        assert_eq!(group_role_binding_name("devs", "view"), "devs-view");
    }

    #[test]
    fn names_bound_by_63_fit_for_a_55_char_session_name() {
        let name = "a".repeat(MAX_SESSION_NAME_LEN);
        for bounded in [service_name(&name), job_name(&name), name.clone()] {
            assert!(bounded.len() <= MAX_CHILD_NAME_LEN, "{bounded}");
        }
        for child in session_child_names(&name) {
            assert!(child.len() <= MAX_SUBDOMAIN_LEN, "{child}");
        }
    }

    #[test]
    fn the_55_char_limit_is_the_services() {
        let name = "a".repeat(MAX_SESSION_NAME_LEN + 1);
        assert_eq!(service_name(&name).len(), MAX_CHILD_NAME_LEN + 1);
    }

    #[test]
    fn the_backends_names_and_their_clones_fit() {
        let backend = "session-0b7e4f8c-2d1a-4c3e-9f6b-5a4d3c2b1a09";
        assert_eq!(backend.len(), 44);
        let clone = format!("{backend}-duplicate");
        assert_eq!(clone.len(), 54);
        assert!(clone.len() <= MAX_SESSION_NAME_LEN);
    }
}
