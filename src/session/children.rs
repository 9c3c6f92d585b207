//! Pure builders for everything a session owns: the Job, the runner identity (ServiceAccount,
//! Role, RoleBinding, token Secret) and the workspace PersistentVolumeClaim.
//!
//! Invariants: every object is named by [`agentic_crds::names`], lives in the session's
//! namespace, carries the labels `agentic-session=<name>` and `app=ambient-code-runner`, and a
//! controller ownerReference to the session, so deleting the session deletes it. The same
//! session and settings always produce the same object (the env list is sorted), so a Job spec is
//! stable across reconciles.

use std::collections::BTreeMap;

use agentic_crds::{AgenticSession, keys, names};
use k8s_openapi::ByteString;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, KeyToPath, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec,
    PodTemplateSpec, ResourceRequirements, SeccompProfile, Secret, SecretVolumeSource,
    SecurityContext, ServiceAccount, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::{Resource, ResourceExt};

use super::phases::RunSpec;
use super::runner_env::{RunnerEnvInputs, runner_env};

/// Name of the runner container in the Job's pod.
pub const RUNNER_CONTAINER: &str = "ambient-code-runner";
/// Seconds a finished Job is kept by Kubernetes if the operator has not deleted it already.
pub const JOB_TTL_BACKSTOP_SECONDS: i32 = 3600;
const TOKEN_VOLUME: &str = "runner-token";
const WORKSPACE_VOLUME: &str = "workspace";

/// Operator-wide settings that shape a runner (from flags and env).
#[derive(Debug, Clone, PartialEq)]
pub struct RunnerSettings {
    /// Runner image.
    pub image: String,
    /// `BACKEND_API_URL` handed to the runner.
    pub backend_api_url: String,
    /// CPU request / limit and memory request / limit of the runner container.
    pub cpu_request: String,
    /// CPU limit.
    pub cpu_limit: String,
    /// Memory request.
    pub memory_request: String,
    /// Memory limit.
    pub memory_limit: String,
    /// Workspace PVC size; `None` means an emptyDir workspace.
    pub workspace_size: Option<String>,
    /// StorageClass for the workspace PVC (cluster default when `None`).
    pub workspace_storage_class: Option<String>,
}

/// Metadata every child of `session` carries: name, namespace, labels, controller owner.
fn child_meta(session: &AgenticSession, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: session.namespace(),
        labels: Some(child_labels(&session.name_any())),
        owner_references: session.controller_owner_ref(&()).map(|owner| vec![owner]),
        ..Default::default()
    }
}

/// The labels that tie a child to its session (and let caches select only our objects).
pub fn child_labels(session_name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (keys::SESSION_LABEL.to_string(), session_name.to_string()),
        (keys::APP_LABEL.to_string(), keys::RUNNER_APP.to_string()),
    ])
}

/// The runner Job for one run: `IS_RESUME` and `activeDeadlineSeconds` come from `run`, and
/// the Job carries the run's start time (`ambient-code.io/run-started-at`).
pub fn build_job(session: &AgenticSession, settings: &RunnerSettings, run: &RunSpec) -> Job {
    let name = session.name_any();
    let inputs = RunnerEnvInputs {
        session,
        backend_api_url: &settings.backend_api_url,
        is_resume: run.is_resume,
    };
    let quantity = |q: &str| Quantity(q.to_string());
    let container = Container {
        name: RUNNER_CONTAINER.into(),
        image: Some(settings.image.clone()),
        env: Some(runner_env(&inputs)),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".into(), quantity(&settings.cpu_request)),
                ("memory".into(), quantity(&settings.memory_request)),
            ])),
            limits: Some(BTreeMap::from([
                ("cpu".into(), quantity(&settings.cpu_limit)),
                ("memory".into(), quantity(&settings.memory_limit)),
            ])),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: None,
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                localhost_profile: None,
            }),
            ..Default::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: WORKSPACE_VOLUME.into(),
                mount_path: keys::WORKSPACE_MOUNT_PATH.into(),
                ..Default::default()
            },
            VolumeMount {
                name: TOKEN_VOLUME.into(),
                mount_path: keys::RUNNER_TOKEN_MOUNT_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            },
        ]),
        ..Default::default()
    };
    let workspace = match settings.workspace_size {
        Some(_) => Volume {
            name: WORKSPACE_VOLUME.into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: names::workspace_pvc_name(&name),
                read_only: Some(false),
            }),
            ..Default::default()
        },
        None => Volume {
            name: WORKSPACE_VOLUME.into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        },
    };
    // Only the k8s token is mounted as a file: a Secret volume is refreshed in place by the
    // kubelet, so a running pod sees a refreshed token without a restart.
    let token = Volume {
        name: TOKEN_VOLUME.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(names::token_secret_name(&name)),
            items: Some(vec![KeyToPath {
                key: keys::TOKEN_SECRET_K8S_TOKEN_KEY.into(),
                path: keys::RUNNER_TOKEN_FILE.into(),
                mode: None,
            }]),
            default_mode: Some(0o440),
            optional: Some(false),
        }),
        ..Default::default()
    };
    let labels = child_labels(&name);
    let mut metadata = child_meta(session, names::job_name(&name));
    metadata.annotations = Some(BTreeMap::from([(
        keys::RUN_STARTED_AT_ANNOTATION.to_string(),
        run_stamp(&run.started_at),
    )]));
    Job {
        metadata,
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: Some(run.deadline_seconds.max(1)),
            ttl_seconds_after_finished: Some(JOB_TTL_BACKSTOP_SECONDS),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    service_account_name: Some(names::service_account_name(&name)),
                    automount_service_account_token: Some(false),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            localhost_profile: None,
                        }),
                        ..Default::default()
                    }),
                    containers: vec![container],
                    volumes: Some(vec![workspace, token]),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

/// A run's start time as stamped on its Job: the same text `status.startTime` holds.
pub fn run_stamp(started_at: &Time) -> String {
    serde_json::to_value(started_at)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The runner's ServiceAccount (no auto-mounted token: the Job mounts its own).
pub fn build_service_account(session: &AgenticSession) -> ServiceAccount {
    ServiceAccount {
        metadata: child_meta(session, names::service_account_name(&session.name_any())),
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
/// - `selfsubjectaccessreviews` create: the runner asks what its token may do.
///
/// Nothing on Secrets: the original let every runner read every Secret of the namespace,
/// other sessions' tokens included.
pub fn build_role(session: &AgenticSession) -> Role {
    let rule =
        |groups: &str, resources: &[&str], names: Option<Vec<String>>, verbs: &[&str]| PolicyRule {
            api_groups: Some(vec![groups.into()]),
            resources: Some(resources.iter().map(|r| r.to_string()).collect()),
            resource_names: names,
            verbs: verbs.iter().map(|v| v.to_string()).collect(),
            ..Default::default()
        };
    Role {
        metadata: child_meta(session, names::role_name(&session.name_any())),
        rules: Some(vec![
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
        ]),
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
/// k8s token was issued in `ambient-code.io/token-refreshed-at` (RFC 3339).
pub fn build_token_secret(
    session: &AgenticSession,
    k8s_token: &str,
    agui_token: &str,
    refreshed_at: k8s_openapi::jiff::Timestamp,
) -> Secret {
    let mut metadata = child_meta(session, names::token_secret_name(&session.name_any()));
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

/// The workspace claim, when a workspace size is configured.
pub fn build_workspace_pvc(
    session: &AgenticSession,
    settings: &RunnerSettings,
) -> Option<PersistentVolumeClaim> {
    let size = settings.workspace_size.as_ref()?;
    Some(PersistentVolumeClaim {
        metadata: child_meta(session, names::workspace_pvc_name(&session.name_any())),
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: settings.workspace_storage_class.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(size.clone()),
                )])),
                limits: None,
            }),
            ..Default::default()
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::fixtures::{at, session, settings};

    fn run(is_resume: bool) -> RunSpec {
        RunSpec {
            is_resume,
            deadline_seconds: 300,
            started_at: Time(at(0)),
        }
    }

    #[test]
    fn job_follows_the_contract() {
        let job = build_job(&session("demo"), &settings(), &run(false));
        assert_eq!(job.metadata.name.as_deref(), Some("demo-job"));
        assert_eq!(job.metadata.namespace.as_deref(), Some("team"));
        let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("AgenticSession", Some(true))
        );
        let labels = job.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["agentic-session"], "demo");
        assert_eq!(labels["app"], "ambient-code-runner");
        let spec = job.spec.as_ref().unwrap();
        assert_eq!(spec.backoff_limit, Some(0));
        assert_eq!(spec.active_deadline_seconds, Some(300));
        assert!(spec.ttl_seconds_after_finished.is_some());
        let pod = spec.template.spec.as_ref().unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        assert_eq!(
            spec.template.metadata.as_ref().unwrap().labels.as_ref(),
            Some(labels),
            "pods carry the session labels so caches can select them"
        );
        let container = &pod.containers[0];
        let security = container.security_context.as_ref().unwrap();
        assert_eq!(security.run_as_non_root, Some(true));
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert_eq!(
            security.capabilities.as_ref().unwrap().drop.as_deref(),
            Some(&["ALL".to_string()][..])
        );
        assert_eq!(
            security.seccomp_profile.as_ref().unwrap().type_,
            "RuntimeDefault"
        );
        assert!(container.resources.as_ref().unwrap().limits.is_some());
    }

    #[test]
    fn token_is_mounted_as_a_file_and_workspace_defaults_to_empty_dir() {
        let job = build_job(&session("demo"), &settings(), &run(false));
        let pod = job.spec.unwrap().template.spec.unwrap();
        let mounts = pod.containers[0].volume_mounts.clone().unwrap();
        assert!(mounts.iter().any(|m| m.mount_path == "/workspace"));
        assert!(
            mounts
                .iter()
                .any(|m| m.mount_path == "/var/run/secrets/ambient")
        );
        let volumes = pod.volumes.unwrap();
        let token = volumes.iter().find_map(|v| v.secret.as_ref()).unwrap();
        assert_eq!(
            token.secret_name.as_deref(),
            Some("ambient-runner-token-demo")
        );
        assert_eq!(token.items.as_ref().unwrap()[0].path, "bot-token");
        assert!(volumes.iter().any(|v| v.empty_dir.is_some()));
    }

    #[test]
    fn configured_workspace_size_gives_a_claim_and_mounts_it() {
        let mut with_size = settings();
        with_size.workspace_size = Some("5Gi".into());
        with_size.workspace_storage_class = Some("fast".into());
        let s = session("demo");
        let pvc = build_workspace_pvc(&s, &with_size).expect("a claim");
        assert_eq!(pvc.metadata.name.as_deref(), Some("ambient-workspace-demo"));
        assert_eq!(
            pvc.spec.as_ref().unwrap().storage_class_name.as_deref(),
            Some("fast")
        );
        let pod = build_job(&s, &with_size, &run(false))
            .spec
            .unwrap()
            .template
            .spec
            .unwrap();
        let claim = pod
            .volumes
            .unwrap()
            .into_iter()
            .find_map(|v| v.persistent_volume_claim)
            .unwrap();
        assert_eq!(claim.claim_name, "ambient-workspace-demo");
        assert!(
            build_workspace_pvc(&s, &settings()).is_none(),
            "no size configured, no claim"
        );
    }

    #[test]
    fn same_inputs_build_the_same_job() {
        let s = session("demo");
        assert_eq!(
            build_job(&s, &settings(), &run(true)),
            build_job(&s, &settings(), &run(true))
        );
    }

    #[test]
    fn role_grants_the_platforms_session_verbs_and_nothing_on_secrets() {
        let role = build_role(&session("demo"));
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
        for rule in &rules {
            let resources = rule.resources.clone().unwrap_or_default();
            assert!(
                !resources.iter().any(|r| r == "secrets" || r == "*"),
                "{rule:?}"
            );
            assert!(
                !rule.verbs.iter().any(|v| v == "delete" || v == "*"),
                "{rule:?}"
            );
        }
        let binding = build_role_binding(&session("demo"));
        assert_eq!(binding.role_ref.name, "ambient-session-demo-role");
        assert_eq!(binding.subjects.unwrap()[0].name, "ambient-session-demo");
    }

    #[test]
    fn job_is_stamped_with_its_run_and_gets_the_runs_deadline() {
        let run = RunSpec {
            is_resume: false,
            deadline_seconds: 117,
            started_at: Time(at(5)),
        };
        let job = build_job(&session("demo"), &settings(), &run);
        assert_eq!(
            job.metadata.annotations.unwrap()["ambient-code.io/run-started-at"],
            "2026-01-01T00:00:05Z"
        );
        assert_eq!(job.spec.unwrap().active_deadline_seconds, Some(117));
    }

    #[test]
    fn token_secret_carries_both_tokens_and_the_refresh_time() {
        let at: k8s_openapi::jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let secret = build_token_secret(&session("demo"), "k8s", "agui", at);
        let data = secret.data.unwrap();
        assert_eq!(data["k8s-token"].0, b"k8s");
        assert_eq!(data["agui-token"].0, b"agui");
        assert_eq!(
            secret.metadata.annotations.unwrap()["ambient-code.io/token-refreshed-at"],
            "2026-01-01T00:00:00Z"
        );
    }
}
