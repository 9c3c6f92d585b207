//! Test fixtures: sessions, Jobs and pods in the shapes the cluster produces.

use agentic_crds::{AgenticSession, AgenticSessionSpec};
use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    PodCondition,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;

use super::children::{RUNNER_CONTAINER, RunnerSettings};
use super::shape::RunnerShape;

use crate::cache::projections::{RunnerContainerStatus, RunnerJob, RunnerPod, RunnerPodStatus};

/// `2026-01-01T00:00:00Z` plus `seconds`.
pub fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_767_225_600 + seconds).expect("valid timestamp")
}

/// A session `name` in namespace `team`, created at `at(0)`, with default spec and no status.
pub fn session(name: &str) -> AgenticSession {
    let mut session = AgenticSession::new(name, AgenticSessionSpec::default());
    session.metadata = ObjectMeta {
        name: Some(name.into()),
        namespace: Some("team".into()),
        uid: Some(format!("uid-{name}")),
        generation: Some(1),
        creation_timestamp: Some(Time(at(0))),
        ..Default::default()
    };
    session
}

/// Operator settings as the defaults give them.
pub fn settings() -> RunnerSettings {
    RunnerSettings {
        image: "quay.io/ambient_code/vteam_claude_runner:latest".into(),
        backend_api_url: "http://backend-service.default.svc.cluster.local:8080/api".into(),
        cpu_request: "500m".into(),
        cpu_limit: "2".into(),
        memory_request: "512Mi".into(),
        memory_limit: "8Gi".into(),
        workspace_size: None,
        workspace_storage_class: None,
        state_sync_image: "quay.io/ambient_code/vteam_state_sync:latest".into(),
        s3_endpoint: "https://s3.amazonaws.com".into(),
        s3_bucket: "ambient-sessions".into(),
        pod_fsgroup: None,
        state_uid: None,
        image_pull_policy: "Always".into(),
        vertex: None,
        mcp_config_file: None,
        backend_public_url: None,
    }
}

/// The shape of a session with no registry entry.
pub fn shape() -> RunnerShape {
    super::shape::shape(&session("demo"), None, &settings().shape_defaults())
}

/// UID of the Job [`job`] makes; the pods of the fixtures are its pods.
pub const JOB_UID: &str = "uid-demo-job";

/// Session `demo`'s Job for the run started at `at(0)`, created at `created`, with the given
/// True condition (`Complete`, `Failed`) if any.
pub fn job(created: i64, condition: Option<(&str, &str)>) -> RunnerJob {
    RunnerJob {
        metadata: ObjectMeta {
            name: Some("demo-job".into()),
            namespace: Some("team".into()),
            uid: Some(JOB_UID.into()),
            creation_timestamp: Some(Time(at(created))),
            ..Default::default()
        },
        status: Some(JobStatus {
            conditions: condition.map(|(type_, reason)| {
                vec![JobCondition {
                    type_: type_.into(),
                    status: "True".into(),
                    reason: Some(reason.into()),
                    message: Some(format!("job {type_}")),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        }),
        session: None,
        controller: Some("uid-demo".into()),
        run: Some("2026-01-01T00:00:00Z".into()),
        suspended: false,
    }
}

/// A runner pod created at `created` whose container is running.
pub fn running_pod(created: i64) -> RunnerPod {
    pod_with(created, "Running", running_state(), None)
}

/// A runner pod whose container terminated with `exit_code`.
pub fn terminated_pod(created: i64, exit_code: i32) -> RunnerPod {
    let state = ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code,
            reason: Some(if exit_code == 0 { "Completed" } else { "Error" }.into()),
            message: Some("simulated".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let phase = if exit_code == 0 {
        "Succeeded"
    } else {
        "Failed"
    };
    pod_with(created, phase, state, None)
}

/// A pending pod the scheduler could not place.
pub fn unschedulable_pod(created: i64) -> RunnerPod {
    let condition = PodCondition {
        type_: "PodScheduled".into(),
        status: "False".into(),
        reason: Some("Unschedulable".into()),
        message: Some("0/3 nodes are available: 3 Insufficient cpu.".into()),
        ..Default::default()
    };
    let mut pod = pod_with(
        created,
        "Pending",
        ContainerState::default(),
        Some(condition),
    );
    if let Some(status) = pod.status.as_mut() {
        status.container_statuses = None;
    }
    pod
}

/// A pending pod whose container `container` waits with the kubelet's `reason`.
pub fn waiting_pod(created: i64, container: &str, reason: &str) -> RunnerPod {
    let state = ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.into()),
            message: Some(format!("simulated {reason}")),
        }),
        ..Default::default()
    };
    let mut pod = pod_with(created, "Pending", state, None);
    if let Some(status) = pod.status.as_mut() {
        status.container_statuses = Some(vec![RunnerContainerStatus {
            name: container.into(),
            state: status
                .container_statuses
                .take()
                .and_then(|mut c| c.pop())
                .and_then(|c| c.state),
        }]);
    }
    pod
}

/// The original operator's bare runner pod of session `demo` (`demo-runner`, controlled by the
/// session), made from `pod`.
pub fn original_pod(mut pod: RunnerPod) -> RunnerPod {
    pod.metadata.name = Some("demo-runner".into());
    pod.controller = Some("uid-demo".into());
    pod
}

fn running_state() -> ContainerState {
    ContainerState {
        running: Some(ContainerStateRunning {
            started_at: Some(Time(at(1))),
        }),
        ..Default::default()
    }
}

fn pod_with(
    created: i64,
    phase: &str,
    state: ContainerState,
    condition: Option<PodCondition>,
) -> RunnerPod {
    RunnerPod {
        metadata: ObjectMeta {
            name: Some(format!("demo-job-{created}")),
            namespace: Some("team".into()),
            creation_timestamp: Some(Time(at(created))),
            ..Default::default()
        },
        status: Some(RunnerPodStatus {
            phase: Some(phase.into()),
            conditions: condition.map(|c| vec![c]),
            container_statuses: Some(vec![RunnerContainerStatus {
                name: RUNNER_CONTAINER.into(),
                state: Some(state),
            }]),
            ..Default::default()
        }),
        session: None,
        controller: Some(JOB_UID.into()),
    }
}
