//! Shared Secrets on the real control plane (SPEC §5.1): in Vertex mode, with Langfuse and
//! MLflow on, the operator copies `ambient-vertex`, `ambient-admin-langfuse-secret` and
//! `ambient-admin-mlflow-observability-secret` from the backend's namespace into a session's
//! namespace, mounts and references them (never as plain values), follows rotations of the
//! sources, removes the copies once no unfinished session needs them, and fails a session
//! whose Vertex source is missing. MLflow's Kubernetes auth mounts the runner's own token and
//! grants it the MLflow rules.

mod support;

use std::time::Duration;

use agentic_crds::{Phase, keys};
use k8s_openapi::ByteString;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, PodSpec, Secret};
use k8s_openapi::api::rbac::v1::Role;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::{Api, Client};
use support::operator::{
    Engine, annotate, create, operator, ready_reason, session, wait_for_phase,
};
use support::{ClusterInfo, TestNamespace, wait_until, wait_until_gone};
use tokio::sync::Mutex;

const LIMIT: Duration = Duration::from_secs(60);
/// The backend's namespace of this binary's operator, holding the shared Secrets.
const BACKEND: &str = "vertex-backend";

/// One test at a time: they share the sources in the backend's namespace.
static SERIAL: Mutex<()> = Mutex::const_new(());

fn start(cluster: &ClusterInfo) {
    operator(
        cluster,
        Engine::Queue,
        &[
            "--backend-namespace",
            BACKEND,
            "--use-vertex",
            "true",
            "--vertex-project-id",
            "test-project",
            "--cloud-ml-region",
            "us-east5",
            "--google-application-credentials",
            "/app/vertex/key.json",
            "--langfuse-enabled",
            "true",
            "--mlflow-tracing-enabled",
            "true",
        ],
    );
}

fn secret(name: &str, data: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Default::default()
    }
}

/// The backend's namespace with the three sources (replacing them if present).
async fn sources(client: &Client, vertex_key: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let backend = Namespace {
        metadata: ObjectMeta {
            name: Some(BACKEND.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let _ = namespaces.create(&PostParams::default(), &backend).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), BACKEND);
    for wanted in [
        secret(keys::VERTEX_SECRET, &[("key.json", vertex_key)]),
        secret(
            keys::LANGFUSE_SECRET,
            &[
                ("LANGFUSE_HOST", "http://langfuse"),
                ("LANGFUSE_SECRET_KEY", "lf-secret"),
            ],
        ),
        secret(
            keys::MLFLOW_SECRET,
            &[
                ("MLFLOW_TRACKING_URI", "http://mlflow"),
                ("MLFLOW_TRACKING_AUTH", "kubernetes"),
            ],
        ),
    ] {
        let name = wanted.metadata.name.clone().unwrap();
        match secrets.get_opt(&name).await.expect("reading a source") {
            Some(existing) => {
                let mut next = wanted;
                next.metadata.resource_version = existing.metadata.resource_version;
                secrets
                    .replace(&name, &PostParams::default(), &next)
                    .await
                    .expect("replacing a source");
            }
            None => {
                secrets
                    .create(&PostParams::default(), &wanted)
                    .await
                    .expect("creating a source");
            }
        }
    }
}

async fn pod_of(ns: &TestNamespace, session: &str) -> PodSpec {
    let jobs: Api<Job> = ns.api();
    let job = wait_until("the Job", LIMIT, || async {
        jobs.get_opt(&format!("{session}-job")).await.ok().flatten()
    })
    .await;
    job.spec
        .and_then(|s| s.template.spec)
        .expect("a pod template")
}

fn copy_data(secret: &Secret, key: &str) -> Option<String> {
    let value = secret.data.as_ref()?.get(key)?;
    String::from_utf8(value.0.clone()).ok()
}

#[tokio::test]
async fn shared_secrets_are_copied_referenced_rotated_and_removed_when_unused() {
    let _serial = SERIAL.lock().await;
    let cluster = ClusterInfo::from_env();
    let admin = cluster.admin_client().await;
    sources(&admin, "{\"v\": 1}").await;
    start(&cluster);
    let ns = TestNamespace::create_without_credentials(&cluster, "vertex").await;
    create(
        &ns.client,
        &ns.name,
        &session("on-vertex", &[("SIM_OUTCOME", "hang")]),
    )
    .await;
    wait_for_phase(&ns.client, &ns.name, "on-vertex", Phase::Running, LIMIT).await;

    // Copied, with their origin and source version recorded.
    let secrets: Api<Secret> = ns.api();
    for name in [
        keys::VERTEX_SECRET,
        keys::LANGFUSE_SECRET,
        keys::MLFLOW_SECRET,
    ] {
        let copy = secrets
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("{name} copied: {e}"));
        let annotations = copy.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(
            annotations[keys::COPIED_FROM_ANNOTATION],
            format!("{BACKEND}/{name}")
        );
    }
    // Mounted and referenced: no ambient-runner-secrets needed in Vertex mode.
    let pod = pod_of(&ns, "on-vertex").await;
    let runner = &pod.containers[0];
    let vertex = runner
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path == "/app/vertex")
        .expect("the Vertex mount");
    assert_eq!(vertex.read_only, Some(true));
    let var = |name: &str| {
        runner
            .env
            .iter()
            .flatten()
            .find(|e| e.name == name)
            .cloned()
    };
    assert_eq!(
        var("USE_VERTEX").and_then(|e| e.value).as_deref(),
        Some("1")
    );
    assert_eq!(
        var("CLOUD_ML_REGION").and_then(|e| e.value).as_deref(),
        Some("us-east5")
    );
    let langfuse = var("LANGFUSE_SECRET_KEY").expect("a Langfuse reference");
    assert!(langfuse.value.is_none());
    assert_eq!(
        langfuse.value_from.unwrap().secret_key_ref.unwrap().name,
        keys::LANGFUSE_SECRET
    );
    assert!(
        runner.env_from.iter().flatten().all(|f| {
            f.secret_ref.as_ref().map(|s| s.name.as_str()) != Some(keys::RUNNER_SECRETS)
        })
    );
    // MLflow's Kubernetes auth: the runner's own token, and the MLflow rules.
    assert_eq!(pod.automount_service_account_token, Some(true));
    let role = ns
        .api::<Role>()
        .get("ambient-session-on-vertex-role")
        .await
        .expect("the Role");
    assert!(
        role.rules
            .unwrap_or_default()
            .iter()
            .any(|r| { r.api_groups.as_deref() == Some(&["mlflow.kubeflow.org".to_string()][..]) })
    );

    // A rotation of the source reaches the copy.
    sources(&admin, "{\"v\": 2}").await;
    wait_until("the copy to follow the rotation", LIMIT, || async {
        let copy = secrets.get(keys::VERTEX_SECRET).await.ok()?;
        (copy_data(&copy, "key.json").as_deref() == Some("{\"v\": 2}")).then_some(())
    })
    .await;

    // Once no unfinished session needs them, the copies go.
    annotate(
        &ns.client,
        &ns.name,
        "on-vertex",
        keys::DESIRED_PHASE_ANNOTATION,
        Some("Stopped"),
    )
    .await;
    wait_for_phase(&ns.client, &ns.name, "on-vertex", Phase::Stopped, LIMIT).await;
    for name in [
        keys::VERTEX_SECRET,
        keys::LANGFUSE_SECRET,
        keys::MLFLOW_SECRET,
    ] {
        wait_until_gone(&secrets, name).await;
    }
}

#[tokio::test]
async fn a_missing_vertex_source_fails_the_session() {
    let _serial = SERIAL.lock().await;
    let cluster = ClusterInfo::from_env();
    let admin = cluster.admin_client().await;
    sources(&admin, "{\"v\": 1}").await;
    start(&cluster);
    Api::<Secret>::namespaced(admin.clone(), BACKEND)
        .delete(keys::VERTEX_SECRET, &DeleteParams::default())
        .await
        .expect("removing the Vertex source");
    // Let the operator's source watch see it go.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ns = TestNamespace::create_without_credentials(&cluster, "vertex-missing").await;
    create(&ns.client, &ns.name, &session("no-vertex", &[])).await;
    let failed = wait_for_phase(&ns.client, &ns.name, "no-vertex", Phase::Failed, LIMIT).await;
    assert_eq!(
        ready_reason(&failed).as_deref(),
        Some("VertexSecretMissing")
    );
    let secrets_ready = failed
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "SecretsReady")
        .expect("SecretsReady");
    assert_eq!(secrets_ready.reason.as_deref(), Some("VertexSecretMissing"));
    sources(&admin, "{\"v\": 1}").await;
}
