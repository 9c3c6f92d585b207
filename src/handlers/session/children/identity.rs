//! The runner's identity (SPEC §2.3): its ServiceAccount, its Role and RoleBinding, and the
//! token Secret (`k8s-token`, `agui-token`).

use std::collections::BTreeMap;

use agentic_crds::{AgenticSession, keys, names};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::ResourceExt;

use super::{child_meta, child_meta_with_app};

/// The runner's ServiceAccount: label `app=ambient-runner`, and the user it acts for in
/// `ambient-code.io/created-by-user-id` (the backend resolves a runner's token to that user).
/// No auto-mounted token: the Job mounts its own (except in MLflow Kubernetes-auth mode).
pub fn build_service_account(session: &AgenticSession) -> ServiceAccount {
    let name = names::service_account_name(&session.name_any());
    let mut metadata = child_meta_with_app(session, name, keys::RUNNER_SA_APP);
    let user = session
        .spec
        .user_context
        .as_ref()
        .and_then(|u| u.user_id.as_deref())
        .map(str::trim)
        .filter(|u| !u.is_empty());
    if let Some(user) = user {
        metadata.annotations = Some(BTreeMap::from([(
            keys::CREATED_BY_USER_ID_ANNOTATION.to_string(),
            user.to_string(),
        )]));
    }
    ServiceAccount {
        metadata,
        automount_service_account_token: Some(false),
        ..Default::default()
    }
}

/// What the platform asks of the runner in its namespace (SPEC §2.3), and nothing more:
/// - `agenticsessions` get, list, watch, create, update, patch: the backend checks the
///   runner's token for `list` in the namespace before every project call and for `get` /
///   `update` on its session; the runner's session tools list, read, create, stop and start
///   (patch/update) sessions;
/// - the status of its own session: get, patch, update (it reports progress there);
/// - `selfsubjectaccessreviews` create: the runner asks what its token may do;
/// - `get` on the one Secret `ambient-runner-secrets`: the backend reads it with the caller's
///   token when the runner's tools create a session (its validation of the model credentials);
///   the runner holds those credentials already (`envFrom`). Nothing else on Secrets: the
///   original let every runner read every Secret of the namespace, other sessions' tokens
///   included;
/// - with `mlflow_kubernetes_auth`: MLflow `experiments` get, list, update.
pub fn build_role(session: &AgenticSession, mlflow_kubernetes_auth: bool) -> Role {
    let rule =
        |group: &str, resources: &[&str], names: Option<Vec<String>>, verbs: &[&str]| PolicyRule {
            api_groups: Some(vec![group.into()]),
            resources: Some(resources.iter().map(|r| r.to_string()).collect()),
            resource_names: names,
            verbs: verbs.iter().map(|v| v.to_string()).collect(),
            ..Default::default()
        };
    let mut rules = vec![
        rule(
            keys::GROUP,
            &[keys::AGENTIC_SESSION_PLURAL],
            None,
            &["get", "list", "watch", "create", "update", "patch"],
        ),
        rule(
            keys::GROUP,
            &[&format!("{}/status", keys::AGENTIC_SESSION_PLURAL)],
            Some(vec![session.name_any()]),
            &["get", "patch", "update"],
        ),
        rule(
            "authorization.k8s.io",
            &["selfsubjectaccessreviews"],
            None,
            &["create"],
        ),
        rule(
            "",
            &["secrets"],
            Some(vec![keys::RUNNER_SECRETS.into()]),
            &["get"],
        ),
    ];
    if mlflow_kubernetes_auth {
        rules.push(rule(
            "mlflow.kubeflow.org",
            &["experiments"],
            None,
            &["get", "list", "update"],
        ));
    }
    Role {
        metadata: child_meta(session, names::role_name(&session.name_any())),
        rules: Some(rules),
    }
}

/// Binds the session's Role to its ServiceAccount.
pub fn build_role_binding(session: &AgenticSession) -> RoleBinding {
    let name = session.name_any();
    RoleBinding {
        metadata: child_meta(session, names::role_binding_name(&name)),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: names::role_name(&name),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: names::service_account_name(&name),
            namespace: session.namespace(),
            api_group: None,
        }]),
    }
}

/// The token Secret: `k8s-token` (a ServiceAccount token) and `agui-token`, with the time the
/// k8s token was issued in `ambient-code.io/token-refreshed-at` (RFC 3339); label
/// `app=ambient-runner-token`.
pub fn build_token_secret(
    session: &AgenticSession,
    k8s_token: &str,
    agui_token: &str,
    refreshed_at: k8s_openapi::jiff::Timestamp,
) -> Secret {
    let name = names::token_secret_name(&session.name_any());
    let mut metadata = child_meta_with_app(session, name, keys::RUNNER_TOKEN_APP);
    metadata.annotations = Some(BTreeMap::from([(
        keys::TOKEN_REFRESHED_AT_ANNOTATION.to_string(),
        refreshed_at.to_string(),
    )]));
    Secret {
        metadata,
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([
            (
                keys::TOKEN_SECRET_K8S_TOKEN_KEY.to_string(),
                ByteString(k8s_token.as_bytes().to_vec()),
            ),
            (
                keys::TOKEN_SECRET_AGUI_TOKEN_KEY.to_string(),
                ByteString(agui_token.as_bytes().to_vec()),
            ),
        ])),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::session::fixtures::session;

    #[test]
    fn role_grants_the_platforms_session_verbs_and_only_the_runner_secret() {
        let role = build_role(&session("demo"), false);
        let rules = role.rules.unwrap();
        let sessions = rules
            .iter()
            .find(|r| r.resources.as_deref() == Some(&["agenticsessions".to_string()][..]))
            .expect("a rule on sessions");
        assert_eq!(
            sessions.verbs,
            ["get", "list", "watch", "create", "update", "patch"]
        );
        assert!(sessions.resource_names.is_none(), "namespace-wide");
        let status = rules
            .iter()
            .find(|r| r.resources.as_deref() == Some(&["agenticsessions/status".to_string()][..]))
            .expect("a rule on its status");
        assert_eq!(
            status.resource_names.as_deref(),
            Some(&["demo".to_string()][..]),
            "only its own session's status"
        );
        let secrets: Vec<_> = rules
            .iter()
            .filter(|r| {
                r.resources
                    .as_ref()
                    .is_some_and(|rs| rs.iter().any(|x| x == "secrets"))
            })
            .collect();
        assert_eq!(secrets.len(), 1);
        assert_eq!(secrets[0].verbs, ["get"]);
        assert_eq!(
            secrets[0].resource_names.as_deref(),
            Some(&["ambient-runner-secrets".to_string()][..]),
            "never another session's token"
        );
        for rule in &rules {
            assert!(
                !rule.verbs.iter().any(|v| v == "delete" || v == "*"),
                "{rule:?}"
            );
        }
        assert!(
            !rules
                .iter()
                .any(|r| r.api_groups.as_deref() == Some(&["mlflow.kubeflow.org".to_string()][..]))
        );
        let mlflow = build_role(&session("demo"), true).rules.unwrap();
        assert!(
            mlflow
                .iter()
                .any(|r| r.api_groups.as_deref() == Some(&["mlflow.kubeflow.org".to_string()][..]))
        );
        let binding = build_role_binding(&session("demo"));
        assert_eq!(binding.role_ref.name, "ambient-session-demo-role");
        assert_eq!(binding.subjects.unwrap()[0].name, "ambient-session-demo");
    }

    #[test]
    fn service_account_says_whom_the_runner_acts_for() {
        let mut s = session("demo");
        s.spec.user_context = Some(agentic_crds::session::UserContext {
            user_id: Some("u-1".into()),
            ..Default::default()
        });
        let account = build_service_account(&s);
        assert_eq!(
            account.metadata.annotations.unwrap()["ambient-code.io/created-by-user-id"],
            "u-1"
        );
        let labels = account.metadata.labels.unwrap();
        assert_eq!(labels["app"], "ambient-runner");
        assert_eq!(labels["agentic-session"], "demo");
        assert!(
            build_service_account(&session("demo"))
                .metadata
                .annotations
                .is_none()
        );
    }

    #[test]
    fn token_secret_carries_both_tokens_the_refresh_time_and_its_label() {
        let at: k8s_openapi::jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let secret = build_token_secret(&session("demo"), "k8s", "agui", at);
        assert_eq!(
            secret.metadata.labels.as_ref().unwrap()["app"],
            "ambient-runner-token"
        );
        let data = secret.data.unwrap();
        assert_eq!(data["k8s-token"].0, b"k8s");
        assert_eq!(data["agui-token"].0, b"agui");
        assert_eq!(
            secret.metadata.annotations.unwrap()["ambient-code.io/token-refreshed-at"],
            "2026-01-01T00:00:00Z"
        );
    }
}
