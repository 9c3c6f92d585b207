//! The runner Job (SPEC §2.2, §5.2–§5.5): one pod with the runner container, and as the
//! runtime's sandbox says, the `init-hydrate` init container and the `state-sync` sidecar; the
//! workspace (an emptyDir, or the session's claim with `--workspace-size`); and the workspace
//! claim itself.
//!
//! Invariants: no credential is ever a plain value (references only); every container runs
//! without privilege escalation, with ALL capabilities dropped and the runtime default seccomp
//! profile; no uid is pinned unless configured (OpenShift's restricted SCC assigns one from the
//! namespace's range and refuses any other, SPEC §7.4); `runAsNonRoot` only where the image is
//! known to have a non-root USER (the runner's: uid 1001) or a uid is configured (the state
//! image has no USER); `state-sync` is a native sidecar (an init container with
//! `restartPolicy: Always`), because it never exits by itself and the Job must complete when
//! the runner does.

use std::collections::BTreeMap;

use agentic_crds::{AgenticSession, keys, names};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvFromSource, EnvVar, HTTPGetAction, KeyToPath, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, SecretVolumeSource,
    SecurityContext, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::super::phases::RunSpec;
use super::super::platform::PlatformView;
use super::super::runner_env::{
    ContainerEnv, RunnerEnvInputs, StateContainer, runner_env, state_env,
};
use super::super::shape::{Resources, RunnerShape, ShapeDefaults};
use super::{child_labels, child_meta};
use crate::config::VertexSettings;

/// Name of the runner container in the Job's pod.
pub const RUNNER_CONTAINER: &str = "ambient-code-runner";
/// Name of the init container that prepares the workspace.
pub const HYDRATE_CONTAINER: &str = "init-hydrate";
/// Name of the sidecar that keeps the runner's state in S3.
pub const STATE_SYNC_CONTAINER: &str = "state-sync";
/// Seconds a finished Job is kept by Kubernetes if the operator has not deleted it already.
pub const JOB_TTL_BACKSTOP_SECONDS: i32 = 3600;
const TOKEN_VOLUME: &str = "runner-token";
const WORKSPACE_VOLUME: &str = "workspace";
const VERTEX_VOLUME: &str = "vertex";
const CA_VOLUME: &str = "trusted-ca-bundle";

/// Operator-wide settings that shape a runner (from flags and env).
#[derive(Debug, Clone, PartialEq)]
pub struct RunnerSettings {
    /// Runner image (unless the runtime names one).
    pub image: String,
    /// `BACKEND_API_URL` handed to the runner.
    pub backend_api_url: String,
    /// CPU request of the runner container (unless the runtime sets one).
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
    /// Image of the state containers (unless the runtime names one).
    pub state_sync_image: String,
    /// S3 endpoint unless the project brings its own.
    pub s3_endpoint: String,
    /// S3 bucket unless the project brings its own.
    pub s3_bucket: String,
    /// The pod's `fsGroup`, if configured.
    pub pod_fsgroup: Option<i64>,
    /// The uid of the state containers, if configured (their image has no USER).
    pub state_uid: Option<i64>,
    /// `imagePullPolicy` of every container.
    pub image_pull_policy: String,
    /// Vertex mode's settings, when on.
    pub vertex: Option<VertexSettings>,
    /// `MCP_CONFIG_FILE`, when configured.
    pub mcp_config_file: Option<String>,
    /// The backend's public URL, when configured.
    pub backend_public_url: Option<String>,
}

impl RunnerSettings {
    /// What a runtime entry may override.
    pub fn shape_defaults(&self) -> ShapeDefaults {
        ShapeDefaults {
            image: self.image.clone(),
            state_image: self.state_sync_image.clone(),
            resources: Resources {
                cpu_request: self.cpu_request.clone(),
                memory_request: self.memory_request.clone(),
                cpu_limit: self.cpu_limit.clone(),
                memory_limit: self.memory_limit.clone(),
            },
        }
    }
}

/// What a session's runner gets besides its spec, resolved from the caches and the catalog.
#[derive(Debug, Clone, PartialEq)]
pub struct JobInputs {
    /// Its runtime's shape.
    pub shape: RunnerShape,
    /// What its namespace offers it.
    pub platform: PlatformView,
    /// `LLM_MODEL_VERTEX_ID`.
    pub vertex_model_id: Option<String>,
    /// The namespace's ProjectSettings `spec.mcpServers`.
    pub project_mcp_servers: Option<serde_json::Value>,
    /// The Kueue queue the Job waits in (the namespace's ProjectSettings `spec.kueue`); none:
    /// the Job starts at once.
    pub queue: Option<JobQueue>,
}

/// Where a runner Job waits for Kueue's admission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobQueue {
    /// The LocalQueue (`kueue.x-k8s.io/queue-name`).
    pub local_queue: String,
    /// The WorkloadPriorityClass (`kueue.x-k8s.io/priority-class`), if one applies.
    pub priority_class: Option<String>,
}

impl JobQueue {
    /// The queue of `session` under its namespace's Kueue settings: scheduled runs (label
    /// `ambient-code.io/scheduled-run=true`) take the scheduled priority class, every other
    /// session the interactive one.
    pub fn of(session: &AgenticSession, settings: &agentic_crds::KueueSettings) -> Self {
        let scheduled = session
            .labels()
            .get(keys::SCHEDULED_RUN_LABEL)
            .is_some_and(|v| v == "true");
        JobQueue {
            local_queue: settings.local_queue_name.clone(),
            priority_class: settings.priority_class(scheduled).map(str::to_string),
        }
    }
}

/// A run's start time as stamped on its Job: the same text `status.startTime` holds.
pub fn run_stamp(started_at: &Time) -> String {
    serde_json::to_value(started_at)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The secure defaults of every container: non-root when the image is known to run as a
/// non-root user (`non_root_image`) or `user` (a non-zero uid) is given, which it then runs as.
fn container_security(non_root_image: bool, user: Option<i64>) -> SecurityContext {
    let non_root = non_root_image || user.is_some_and(|uid| uid != 0);
    SecurityContext {
        run_as_non_root: non_root.then_some(true),
        run_as_user: user,
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
    }
}

fn mount(volume: &str, path: &str, sub_path: Option<&str>, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: volume.into(),
        mount_path: path.into(),
        sub_path: sub_path.map(str::to_string),
        read_only: read_only.then_some(true),
        ..Default::default()
    }
}

fn http_probe(delay: i32, period: i32, timeout: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/health".into()),
            port: IntOrString::String(keys::AGUI_PORT_NAME.into()),
            ..Default::default()
        }),
        initial_delay_seconds: Some(delay),
        period_seconds: Some(period),
        timeout_seconds: Some(timeout),
        failure_threshold: Some(failures),
        ..Default::default()
    }
}

fn resources(requests: [(&str, &str); 2], limits: [(&str, &str); 2]) -> ResourceRequirements {
    let map = |pairs: [(&str, &str); 2]| {
        pairs
            .into_iter()
            .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
            .collect::<BTreeMap<_, _>>()
    };
    ResourceRequirements {
        requests: Some(map(requests)),
        limits: Some(map(limits)),
        ..Default::default()
    }
}

fn with_env(container: Container, env: ContainerEnv) -> Container {
    let env_from: Option<Vec<EnvFromSource>> = (!env.env_from.is_empty()).then_some(env.env_from);
    let vars: Option<Vec<EnvVar>> = (!env.env.is_empty()).then_some(env.env);
    Container {
        env: vars,
        env_from,
        ..container
    }
}

/// The runner Job for one run: `IS_RESUME` and `activeDeadlineSeconds` come from `run`, and
/// the Job carries the run's start time (`ambient-code.io/run-started-at`).
pub fn build_job(
    session: &AgenticSession,
    settings: &RunnerSettings,
    inputs: &JobInputs,
    run: &RunSpec,
) -> Job {
    let name = session.name_any();
    let shape = &inputs.shape;
    let platform = &inputs.platform;
    let env_inputs = RunnerEnvInputs {
        session,
        backend_api_url: &settings.backend_api_url,
        is_resume: run.is_resume,
        shape,
        platform,
        vertex: settings.vertex.as_ref(),
        vertex_model_id: inputs.vertex_model_id.as_deref(),
        project_mcp_servers: inputs.project_mcp_servers.as_ref(),
        mcp_config_file: settings.mcp_config_file.as_deref(),
        backend_public_url: settings.backend_public_url.as_deref(),
    };
    let pvc = settings.workspace_size.is_some();
    let workspace = shape.workspace || pvc;
    let state_mount = format!("/app/{}", shape.state_dir);
    let workspace_mounts = || {
        vec![
            mount(WORKSPACE_VOLUME, keys::WORKSPACE_MOUNT_PATH, None, false),
            mount(
                WORKSPACE_VOLUME,
                &state_mount,
                Some(&shape.state_dir),
                false,
            ),
        ]
    };
    let pull = Some(settings.image_pull_policy.clone());

    let mut runner_mounts = if workspace {
        workspace_mounts()
    } else {
        Vec::new()
    };
    runner_mounts.push(mount(
        TOKEN_VOLUME,
        keys::RUNNER_TOKEN_MOUNT_DIR,
        None,
        true,
    ));
    if settings.vertex.is_some() {
        runner_mounts.push(mount(VERTEX_VOLUME, keys::VERTEX_MOUNT_PATH, None, true));
    }
    if platform.ca_bundle {
        runner_mounts.push(mount(
            CA_VOLUME,
            keys::CA_BUNDLE_MOUNT_PATH,
            Some(keys::CA_BUNDLE_KEY),
            true,
        ));
    }
    let r = &shape.resources;
    let runner = with_env(
        Container {
            name: RUNNER_CONTAINER.into(),
            image: Some(shape.image.clone()),
            image_pull_policy: pull.clone(),
            ports: Some(vec![ContainerPort {
                name: Some(keys::AGUI_PORT_NAME.into()),
                container_port: i32::from(shape.port),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            readiness_probe: Some(http_probe(3, 5, 2, 3)),
            liveness_probe: Some(http_probe(20, 30, 5, 3)),
            resources: Some(resources(
                [("cpu", &r.cpu_request), ("memory", &r.memory_request)],
                [("cpu", &r.cpu_limit), ("memory", &r.memory_limit)],
            )),
            // The runner image runs as uid 1001 (its USER).
            security_context: Some(container_security(true, None)),
            volume_mounts: Some(runner_mounts),
            ..Default::default()
        },
        runner_env(&env_inputs),
    );

    let s3 = platform.s3(&settings.s3_endpoint, &settings.s3_bucket);
    let mut init_containers = Vec::new();
    if workspace && shape.init_hydrate {
        init_containers.push(with_env(
            Container {
                name: HYDRATE_CONTAINER.into(),
                image: Some(shape.state_image.clone()),
                image_pull_policy: pull.clone(),
                command: Some(vec!["/usr/local/bin/hydrate.sh".into()]),
                security_context: Some(container_security(false, settings.state_uid)),
                volume_mounts: Some(workspace_mounts()),
                ..Default::default()
            },
            state_env(StateContainer::Hydrate, &env_inputs, &s3),
        ));
    }
    if workspace && shape.state_sync {
        init_containers.push(with_env(
            Container {
                name: STATE_SYNC_CONTAINER.into(),
                image: Some(shape.state_image.clone()),
                image_pull_policy: pull,
                command: Some(vec!["/usr/local/bin/sync.sh".into()]),
                // A native sidecar: it runs beside the runner and stops after it.
                restart_policy: Some("Always".into()),
                resources: Some(resources(
                    [("cpu", "100m"), ("memory", "128Mi")],
                    [("cpu", "1"), ("memory", "1Gi")],
                )),
                security_context: Some(container_security(false, settings.state_uid)),
                volume_mounts: Some(workspace_mounts()),
                ..Default::default()
            },
            state_env(StateContainer::Sync, &env_inputs, &s3),
        ));
    }

    let mut volumes = Vec::new();
    if workspace {
        volumes.push(match settings.workspace_size {
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
                empty_dir: Some(EmptyDirVolumeSource {
                    size_limit: Some(Quantity(shape.workspace_size.clone())),
                    ..Default::default()
                }),
                ..Default::default()
            },
        });
    }
    // Only the k8s token is mounted as a file: a Secret volume is refreshed in place by the
    // kubelet, so a running pod sees a refreshed token without a restart.
    volumes.push(Volume {
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
    });
    if settings.vertex.is_some() {
        volumes.push(Volume {
            name: VERTEX_VOLUME.into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(keys::VERTEX_SECRET.into()),
                optional: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    if platform.ca_bundle {
        volumes.push(Volume {
            name: CA_VOLUME.into(),
            config_map: Some(ConfigMapVolumeSource {
                name: keys::CA_BUNDLE_CONFIGMAP.into(),
                optional: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        });
    }

    let mut metadata = child_meta(session, names::job_name(&name));
    metadata.annotations = Some(BTreeMap::from([(
        keys::RUN_STARTED_AT_ANNOTATION.to_string(),
        run_stamp(&run.started_at),
    )]));
    if let Some(queue) = &inputs.queue {
        let labels = metadata.labels.get_or_insert_with(BTreeMap::new);
        labels.insert(
            keys::KUEUE_QUEUE_NAME_LABEL.to_string(),
            queue.local_queue.clone(),
        );
        if let Some(class) = &queue.priority_class {
            labels.insert(keys::KUEUE_PRIORITY_CLASS_LABEL.to_string(), class.clone());
        }
    }
    Job {
        metadata,
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: run.deadline_seconds.map(|seconds| seconds.max(1)),
            ttl_seconds_after_finished: Some(JOB_TTL_BACKSTOP_SECONDS),
            // Queued: Kueue unsuspends the Job once its queue admits it.
            suspend: inputs.queue.is_some().then_some(true),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(child_labels(&name)),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    service_account_name: Some(names::service_account_name(&name)),
                    // The runner's token comes from its Secret; the ServiceAccount's own is
                    // mounted only for MLflow's Kubernetes authentication.
                    automount_service_account_token: Some(platform.mlflow_kubernetes_auth()),
                    termination_grace_period_seconds: Some(shape.grace_seconds),
                    security_context: Some(PodSecurityContext {
                        fs_group: settings.pod_fsgroup,
                        fs_group_change_policy: settings
                            .pod_fsgroup
                            .map(|_| "OnRootMismatch".to_string()),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            localhost_profile: None,
                        }),
                        ..Default::default()
                    }),
                    init_containers: (!init_containers.is_empty()).then_some(init_containers),
                    containers: vec![runner],
                    volumes: Some(volumes),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
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
    use crate::handlers::session::fixtures::{at, session, settings, shape};
    use crate::handlers::session::platform::ProjectStorage;
    use k8s_openapi::api::core::v1::PodSpec;

    fn run(is_resume: bool) -> RunSpec {
        RunSpec {
            is_resume,
            deadline_seconds: None,
            started_at: Time(at(0)),
        }
    }

    fn inputs() -> JobInputs {
        JobInputs {
            shape: shape(),
            platform: PlatformView {
                runner_secret: true,
                minio_source: true,
                ..Default::default()
            },
            vertex_model_id: None,
            project_mcp_servers: None,
            queue: None,
        }
    }

    fn pod_of(job: Job) -> PodSpec {
        job.spec.unwrap().template.spec.unwrap()
    }

    fn container<'p>(pod: &'p PodSpec, name: &str) -> &'p Container {
        pod.containers
            .iter()
            .chain(pod.init_containers.iter().flatten())
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no container {name}"))
    }

    #[test]
    fn job_follows_the_contract() {
        let job = build_job(&session("demo"), &settings(), &inputs(), &run(false));
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
        assert_eq!(
            spec.active_deadline_seconds, None,
            "the timeout is advisory"
        );
        assert!(spec.ttl_seconds_after_finished.is_some());
        let pod = spec.template.spec.as_ref().unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        assert_eq!(pod.termination_grace_period_seconds, Some(60));
        assert_eq!(
            spec.template.metadata.as_ref().unwrap().labels.as_ref(),
            Some(labels),
            "pods carry the session labels so caches and the Service select them"
        );
        assert!(
            container(pod, RUNNER_CONTAINER)
                .resources
                .as_ref()
                .unwrap()
                .limits
                .is_some()
        );
    }

    #[test]
    fn every_container_keeps_the_secure_defaults_and_the_pull_policy() {
        let pod = pod_of(build_job(
            &session("demo"),
            &settings(),
            &inputs(),
            &run(false),
        ));
        for name in [RUNNER_CONTAINER, HYDRATE_CONTAINER, STATE_SYNC_CONTAINER] {
            let c = container(&pod, name);
            let security = c.security_context.as_ref().unwrap();
            assert_eq!(security.allow_privilege_escalation, Some(false), "{name}");
            assert_eq!(
                security.capabilities.as_ref().unwrap().drop.as_deref(),
                Some(&["ALL".to_string()][..])
            );
            assert_eq!(
                security.seccomp_profile.as_ref().unwrap().type_,
                "RuntimeDefault"
            );
            assert_eq!(c.image_pull_policy.as_deref(), Some("Always"), "{name}");
        }
        let runner = container(&pod, RUNNER_CONTAINER).security_context.clone();
        assert_eq!(
            runner.as_ref().unwrap().run_as_non_root,
            Some(true),
            "USER 1001"
        );
        assert_eq!(runner.unwrap().run_as_user, None);
        for name in [HYDRATE_CONTAINER, STATE_SYNC_CONTAINER] {
            let security = container(&pod, name).security_context.clone().unwrap();
            assert_eq!(
                security.run_as_user, None,
                "{name}: no pinned uid (OpenShift)"
            );
            assert_eq!(
                security.run_as_non_root, None,
                "{name}: the image has no USER"
            );
        }
        let pod_security = pod.security_context.as_ref().unwrap();
        assert_eq!(pod_security.run_as_user, None);
        assert_eq!(pod_security.run_as_non_root, None);
    }

    #[test]
    fn a_configured_state_uid_is_run_as_non_root() {
        let mut with = settings();
        with.state_uid = Some(1001);
        let pod = pod_of(build_job(&session("demo"), &with, &inputs(), &run(false)));
        for name in [HYDRATE_CONTAINER, STATE_SYNC_CONTAINER] {
            let security = container(&pod, name).security_context.clone().unwrap();
            assert_eq!(security.run_as_user, Some(1001), "{name}");
            assert_eq!(security.run_as_non_root, Some(true), "{name}");
        }
    }

    #[test]
    fn the_runner_serves_agui_with_its_probes() {
        let pod = pod_of(build_job(
            &session("demo"),
            &settings(),
            &inputs(),
            &run(false),
        ));
        let runner = container(&pod, RUNNER_CONTAINER);
        let port = &runner.ports.as_ref().unwrap()[0];
        assert_eq!(
            (port.name.as_deref(), port.container_port),
            (Some("agui"), 8001)
        );
        let probe = |p: &Option<Probe>| {
            let p = p.clone().unwrap();
            let get = p.http_get.unwrap();
            assert_eq!(get.path.as_deref(), Some("/health"));
            assert_eq!(get.port, IntOrString::String("agui".into()));
            (
                p.initial_delay_seconds,
                p.period_seconds,
                p.timeout_seconds,
                p.failure_threshold,
            )
        };
        assert_eq!(
            probe(&runner.readiness_probe),
            (Some(3), Some(5), Some(2), Some(3))
        );
        assert_eq!(
            probe(&runner.liveness_probe),
            (Some(20), Some(30), Some(5), Some(3))
        );
    }

    #[test]
    fn state_sync_is_a_native_sidecar_after_init_hydrate() {
        let pod = pod_of(build_job(
            &session("demo"),
            &settings(),
            &inputs(),
            &run(false),
        ));
        let init: Vec<_> = pod
            .init_containers
            .iter()
            .flatten()
            .map(|c| (c.name.as_str(), c.restart_policy.as_deref()))
            .collect();
        assert_eq!(
            init,
            [
                (HYDRATE_CONTAINER, None),
                (STATE_SYNC_CONTAINER, Some("Always"))
            ]
        );
        assert_eq!(
            container(&pod, STATE_SYNC_CONTAINER).command.as_deref(),
            Some(&["/usr/local/bin/sync.sh".to_string()][..])
        );
        for name in [RUNNER_CONTAINER, HYDRATE_CONTAINER, STATE_SYNC_CONTAINER] {
            let mounts = container(&pod, name).volume_mounts.clone().unwrap();
            let state = mounts
                .iter()
                .find(|m| m.mount_path == "/app/.claude")
                .expect(name);
            assert_eq!(state.sub_path.as_deref(), Some(".claude"));
        }
    }

    #[test]
    fn without_persistence_or_seed_there_is_no_state_container_and_no_workspace() {
        let mut i = inputs();
        i.shape.workspace = false;
        i.shape.init_hydrate = false;
        i.shape.state_sync = false;
        let pod = pod_of(build_job(&session("demo"), &settings(), &i, &run(false)));
        assert!(pod.init_containers.is_none());
        assert!(
            !pod.volumes
                .unwrap()
                .iter()
                .any(|v| v.name == WORKSPACE_VOLUME)
        );
    }

    #[test]
    fn token_is_mounted_as_a_file_and_workspace_is_a_sized_empty_dir() {
        let pod = pod_of(build_job(
            &session("demo"),
            &settings(),
            &inputs(),
            &run(false),
        ));
        let mounts = container(&pod, RUNNER_CONTAINER)
            .volume_mounts
            .clone()
            .unwrap();
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
        let workspace = volumes.iter().find_map(|v| v.empty_dir.as_ref()).unwrap();
        assert_eq!(workspace.size_limit, Some(Quantity("10Gi".into())));
    }

    #[test]
    fn vertex_ca_bundle_fsgroup_and_mlflow_auth_shape_the_pod() {
        let mut with = settings();
        with.vertex = Some(VertexSettings {
            project_id: "p".into(),
            region: "r".into(),
            credentials: "/app/vertex/key.json".into(),
        });
        with.pod_fsgroup = Some(1001);
        let mut i = inputs();
        i.platform.ca_bundle = true;
        i.platform.mlflow_source = Some(true);
        let pod = pod_of(build_job(&session("demo"), &with, &i, &run(false)));
        let mounts = container(&pod, RUNNER_CONTAINER)
            .volume_mounts
            .clone()
            .unwrap();
        let vertex = mounts
            .iter()
            .find(|m| m.mount_path == "/app/vertex")
            .unwrap();
        assert_eq!(vertex.read_only, Some(true));
        let ca = mounts
            .iter()
            .find(|m| m.mount_path == "/etc/pki/tls/certs/ca-bundle.crt")
            .unwrap();
        assert_eq!(ca.sub_path.as_deref(), Some("ca-bundle.crt"));
        let security = pod.security_context.as_ref().unwrap();
        assert_eq!(security.fs_group, Some(1001));
        assert_eq!(
            security.fs_group_change_policy.as_deref(),
            Some("OnRootMismatch")
        );
        assert_eq!(pod.automount_service_account_token, Some(true));
        let plain = pod_of(build_job(
            &session("demo"),
            &settings(),
            &inputs(),
            &run(false),
        ));
        assert_eq!(plain.automount_service_account_token, Some(false));
        assert!(plain.security_context.unwrap().fs_group.is_none());
    }

    #[test]
    fn no_credential_is_ever_a_plain_value() {
        let mut i = inputs();
        i.platform = PlatformView {
            runner_secret: true,
            integrations: Some(ProjectStorage {
                custom: true,
                has_keys: true,
                ..Default::default()
            }),
            langfuse_source: true,
            mlflow_source: Some(false),
            google_source: true,
            minio_source: true,
            ..Default::default()
        };
        let pod = pod_of(build_job(&session("demo"), &settings(), &i, &run(false)));
        for c in pod
            .containers
            .iter()
            .chain(pod.init_containers.iter().flatten())
        {
            for var in c.env.iter().flatten() {
                let name = var.name.as_str();
                let secretish = name.ends_with("_TOKEN")
                    || name.ends_with("_KEY")
                    || name.ends_with("_KEY_ID")
                    || name.contains("SECRET")
                    || name.contains("PASSWORD")
                    || name == "GOOGLE_OAUTH_CLIENT_ID"
                    || name == "MLFLOW_TRACKING_AUTH";
                if secretish {
                    assert!(
                        var.value.is_none(),
                        "{} of {} is a plain value",
                        var.name,
                        c.name
                    );
                }
            }
        }
    }

    #[test]
    fn a_configured_workspace_size_gives_a_claim_and_mounts_it() {
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
        let mut i = inputs();
        i.shape.workspace = false; // the claim is mounted whatever the runtime says
        let claim = pod_of(build_job(&s, &with_size, &i, &run(false)))
            .volumes
            .unwrap()
            .into_iter()
            .find_map(|v| v.persistent_volume_claim)
            .unwrap();
        assert_eq!(claim.claim_name, "ambient-workspace-demo");
        assert!(
            build_workspace_pvc(&s, &settings()).is_none(),
            "no size, no claim"
        );
    }

    #[test]
    fn same_inputs_build_the_same_job() {
        let s = session("demo");
        assert_eq!(
            build_job(&s, &settings(), &inputs(), &run(true)),
            build_job(&s, &settings(), &inputs(), &run(true))
        );
    }

    #[test]
    fn job_is_stamped_with_its_run_and_gets_the_runs_deadline() {
        let run = RunSpec {
            is_resume: false,
            deadline_seconds: Some(117),
            started_at: Time(at(5)),
        };
        let job = build_job(&session("demo"), &settings(), &inputs(), &run);
        assert_eq!(
            job.metadata.annotations.unwrap()["ambient-code.io/run-started-at"],
            "2026-01-01T00:00:05Z"
        );
        assert_eq!(job.spec.unwrap().active_deadline_seconds, Some(117));
    }

    #[test]
    fn a_queued_job_is_created_suspended_with_kueues_labels() {
        let kueue = agentic_crds::KueueSettings {
            local_queue_name: "runners".into(),
            interactive_priority_class: Some("interactive".into()),
            scheduled_priority_class: None,
        };
        let interactive = session("demo");
        let mut scheduled = session("nightly");
        scheduled
            .labels_mut()
            .insert(keys::SCHEDULED_RUN_LABEL.into(), "true".into());
        let queue = JobQueue::of(&interactive, &kueue);
        assert_eq!(
            queue,
            JobQueue {
                local_queue: "runners".into(),
                priority_class: Some("interactive".into())
            }
        );
        let job = build_job(
            &interactive,
            &settings(),
            &JobInputs {
                queue: Some(queue),
                ..inputs()
            },
            &run(false),
        );
        let labels = job.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[keys::KUEUE_QUEUE_NAME_LABEL], "runners");
        assert_eq!(labels[keys::KUEUE_PRIORITY_CLASS_LABEL], "interactive");
        assert_eq!(job.spec.as_ref().unwrap().suspend, Some(true));

        // A scheduled run without a scheduled class: queued, at the queue's default priority.
        let queue = JobQueue::of(&scheduled, &kueue);
        assert_eq!(queue.priority_class, None);
        let job = build_job(
            &scheduled,
            &settings(),
            &JobInputs {
                queue: Some(queue),
                ..inputs()
            },
            &run(false),
        );
        let labels = job.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[keys::KUEUE_QUEUE_NAME_LABEL], "runners");
        assert!(!labels.contains_key(keys::KUEUE_PRIORITY_CLASS_LABEL));

        // Without a queue nothing changes: no labels, not suspended.
        let job = build_job(&interactive, &settings(), &inputs(), &run(false));
        assert!(
            !job.metadata
                .labels
                .unwrap()
                .contains_key(keys::KUEUE_QUEUE_NAME_LABEL)
        );
        assert_eq!(job.spec.unwrap().suspend, None);
    }
}
