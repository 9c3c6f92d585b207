//! The platform contract on the real control plane (SPEC §5.1–5.5): a runner pod the platform
//! can use. The session's Service routes to the runner (its EndpointSlice lists the pod) and
//! lives exactly as long as the Job; missing model credentials hold a session in Pending until
//! they appear; the agent registry and model manifest shape the pod and are re-read when the
//! mounted files change (a broken file keeps the last good one); bad registry values and
//! unknown runtimes fall back to the defaults; the namespace's NetworkPolicy admits only the
//! backend and the operator; the runner pod's Events are republished under `<session>-runner`.

mod support;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use agentic_crds::{AgenticSession, Phase, keys};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Event as CoreEvent, PodSpec, Service, ServiceAccount,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{ListParams, ObjectMeta, PostParams};
use kube::{Api, ResourceExt};
use support::operator::{
    Engine, annotate, create, operator, ready_reason, session, started, wait_for_phase,
};
use support::{ClusterInfo, TestNamespace, wait_for_event, wait_until, wait_until_gone};
use tokio::sync::Mutex;

const LIMIT: Duration = Duration::from_secs(60);
/// Short, so that "never appears" ends within a test.
const START_TIMEOUT: &str = "25s";

/// The registry tests edit the one registry file this binary's operator reads.
static REGISTRY: Mutex<()> = Mutex::const_new(());

/// The registry and model manifest of this binary's operator (a temp directory).
fn config_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("platform-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a config directory");
        publish("agent-registry.json", "[]");
        publish(
            "models.json",
            r#"{"version": 2, "defaultModel": "claude-sonnet-4-6", "providerDefaults": {},
               "models": [{"id": "claude-sonnet-4-6", "label": "Sonnet",
                           "vertexId": "claude-sonnet-4-6@default", "provider": "anthropic",
                           "available": true, "featureGated": false}]}"#,
        );
        dir
    })
}

/// Swaps in a new version of a config file, as the kubelet updates a ConfigMap volume.
fn publish(file: &str, text: &str) {
    let dir = std::env::temp_dir().join(format!("platform-config-{}", std::process::id()));
    let staging = dir.join(format!(".{file}.staging"));
    std::fs::write(&staging, text).expect("writing a config file");
    std::fs::rename(&staging, dir.join(file)).expect("swapping a config file in");
}

fn start(cluster: &ClusterInfo) {
    let dir = config_dir();
    let registry = dir.join("agent-registry.json").display().to_string();
    let models = dir.join("models.json").display().to_string();
    operator(
        cluster,
        Engine::Queue,
        &[
            "--agent-registry-path",
            &registry,
            "--models-manifest-path",
            &models,
            "--start-timeout",
            START_TIMEOUT,
            "--image-pull-policy",
            "IfNotPresent",
        ],
    );
}

async fn running_job(ns: &TestNamespace, session: &str) -> Job {
    let jobs: Api<Job> = ns.api();
    let name = format!("{session}-job");
    wait_until(&format!("Job {name}"), LIMIT, || async {
        jobs.get_opt(&name).await.ok().flatten()
    })
    .await
}

fn pod_spec(job: &Job) -> PodSpec {
    job.spec
        .clone()
        .and_then(|s| s.template.spec)
        .expect("a pod template")
}

fn container<'p>(pod: &'p PodSpec, name: &str) -> Option<&'p Container> {
    pod.containers
        .iter()
        .chain(pod.init_containers.iter().flatten())
        .find(|c| c.name == name)
}

fn env<'c>(container: &'c Container, name: &str) -> Option<&'c str> {
    container
        .env
        .iter()
        .flatten()
        .find(|e| e.name == name)
        .and_then(|e| e.value.as_deref())
}

fn runner(pod: &PodSpec) -> &Container {
    container(pod, "ambient-code-runner").expect("the runner container")
}

#[tokio::test]
async fn the_session_service_routes_to_the_runner_and_lives_as_long_as_the_job() {
    let cluster = ClusterInfo::from_env();
    start(&cluster);
    let ns = TestNamespace::create(&cluster, "service").await;
    create(
        &ns.client,
        &ns.name,
        &session("routed", &[("SIM_OUTCOME", "hang")]),
    )
    .await;
    wait_for_phase(&ns.client, &ns.name, "routed", Phase::Running, LIMIT).await;
    let services: Api<Service> = ns.api();
    let service = services.get("session-routed").await.expect("the Service");
    let spec = service.spec.clone().unwrap();
    assert_eq!(
        spec.ports.as_ref().unwrap()[0].name.as_deref(),
        Some("agui")
    );
    assert_eq!(spec.ports.as_ref().unwrap()[0].port, 8001);
    let uid = ns
        .api::<AgenticSession>()
        .get("routed")
        .await
        .unwrap()
        .uid();
    assert_eq!(
        service.metadata.owner_references.as_ref().unwrap()[0].uid,
        uid.clone().unwrap()
    );

    // The EndpointSlice lists the runner pod's IP on port agui once the pod is Ready.
    let slices: Api<EndpointSlice> = ns.api();
    let pods: Api<k8s_openapi::api::core::v1::Pod> = ns.api();
    let pod_ip = wait_until("the runner pod's IP", LIMIT, || async {
        let list = pods
            .list(&ListParams::default().labels("agentic-session=routed"))
            .await
            .ok()?;
        list.items.into_iter().find_map(|p| p.status?.pod_ip)
    })
    .await;
    wait_until("the EndpointSlice to list the runner", LIMIT, || async {
        let list = slices
            .list(&ListParams::default().labels("kubernetes.io/service-name=session-routed"))
            .await
            .ok()?;
        list.items.iter().find_map(|slice| {
            let port = slice
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some("agui"))?;
            let ready = slice.endpoints.iter().flatten().any(|e| {
                e.addresses.contains(&pod_ip)
                    && e.conditions.as_ref().and_then(|c| c.ready) == Some(true)
            });
            (port.port == Some(8001) && ready).then_some(())
        })
    })
    .await;

    // Stopped: the Service goes with the Job; restarted: a new one.
    annotate(
        &ns.client,
        &ns.name,
        "routed",
        keys::DESIRED_PHASE_ANNOTATION,
        Some("Stopped"),
    )
    .await;
    wait_for_phase(&ns.client, &ns.name, "routed", Phase::Stopped, LIMIT).await;
    wait_until_gone(&services, "session-routed").await;
    annotate(
        &ns.client,
        &ns.name,
        "routed",
        keys::DESIRED_PHASE_ANNOTATION,
        Some("Running"),
    )
    .await;
    wait_for_phase(&ns.client, &ns.name, "routed", Phase::Running, LIMIT).await;
    let again = wait_until("a new Service", LIMIT, || async {
        services.get_opt("session-routed").await.ok().flatten()
    })
    .await;
    assert_ne!(again.uid(), service.uid());

    // Completed: gone too.
    create(
        &ns.client,
        &ns.name,
        &session("brief", &[("SIM_RUN_FOR", "1s")]),
    )
    .await;
    wait_for_phase(&ns.client, &ns.name, "brief", Phase::Completed, LIMIT).await;
    wait_until_gone(&services, "session-brief").await;
}

#[tokio::test]
async fn a_session_waits_for_its_runner_secret_and_starts_once_it_appears() {
    let cluster = ClusterInfo::from_env();
    start(&cluster);
    let ns = TestNamespace::create_without_credentials(&cluster, "no-credentials").await;
    create(
        &ns.client,
        &ns.name,
        &session("patient", &[("SIM_OUTCOME", "hang")]),
    )
    .await;
    let api: Api<AgenticSession> = ns.api();
    let message = wait_until("SecretsReady=False", LIMIT, || async {
        let status = api.get("patient").await.ok()?.status?;
        let secrets = status.conditions.iter().find(|c| {
            c.type_ == "SecretsReady" && c.reason.as_deref() == Some("RunnerSecretMissing")
        })?;
        (status.phase == Phase::Pending).then(|| secrets.message.clone().unwrap_or_default())
    })
    .await;
    assert!(message.contains("ambient-runner-secrets"), "{message}");
    wait_for_event(&ns, "patient", "RunnerSecretMissing").await;
    assert!(
        ns.api::<Job>()
            .get_opt("patient-job")
            .await
            .unwrap()
            .is_none(),
        "no Job while the credentials are missing"
    );

    ns.add_runner_credentials().await;
    let running = wait_for_phase(&ns.client, &ns.name, "patient", Phase::Running, LIMIT).await;
    let ready = running
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "SecretsReady")
        .unwrap();
    assert_eq!(ready.reason.as_deref(), Some("AllRequiredSecretsFound"));
    let pod = pod_spec(&running_job(&ns, "patient").await);
    let from: Vec<_> = runner(&pod)
        .env_from
        .iter()
        .flatten()
        .filter_map(|f| f.secret_ref.as_ref().map(|s| s.name.clone()))
        .collect();
    assert_eq!(from, ["ambient-runner-secrets"]);
}

#[tokio::test]
async fn a_runner_secret_that_never_appears_fails_the_session_after_the_start_timeout() {
    let cluster = ClusterInfo::from_env();
    start(&cluster);
    let ns = TestNamespace::create_without_credentials(&cluster, "never-credentials").await;
    create(&ns.client, &ns.name, &session("forsaken", &[])).await;
    let failed = wait_for_phase(&ns.client, &ns.name, "forsaken", Phase::Failed, LIMIT * 2).await;
    assert_eq!(
        ready_reason(&failed).as_deref(),
        Some("RunnerSecretMissing")
    );
    assert!(
        ns.api::<Job>()
            .get_opt("forsaken-job")
            .await
            .unwrap()
            .is_none()
    );
}

/// A runtime entry of the registry (the shape of the shipped ones).
fn runtime(id: &str, port: i64, memory_request: &str) -> serde_json::Value {
    serde_json::json!({
        "id": id, "displayName": id, "framework": id, "provider": "test",
        "container": {
            "image": format!("runner:{id}"), "port": port,
            "env": {"RUNNER_TYPE": id, "CUSTOM_FLAG": "1"},
            "resources": {"requests": {"cpu": "100m", "memory": memory_request},
                          "limits": {"cpu": "1", "memory": "2Gi"}},
        },
        "sandbox": {"stateDir": ".custom", "stateSyncImage": "state:custom", "persistence": "s3",
                    "workspaceSize": "3Gi", "terminationGracePeriod": 45,
                    "seed": {"cloneRepos": true, "hydrateState": false}},
        "auth": {"requiredSecretKeys": ["X"], "secretKeyLogic": "any", "vertexSupported": false},
        "featureGate": "",
    })
}

/// Creates a session of runtime `runtime` and returns its Job's pod template.
async fn pod_of_runtime(ns: &TestNamespace, name: &str, runtime: &str) -> PodSpec {
    create(
        &ns.client,
        &ns.name,
        &session(name, &[("SIM_OUTCOME", "hang"), ("RUNNER_TYPE", runtime)]),
    )
    .await;
    wait_for_phase(&ns.client, &ns.name, name, Phase::Running, LIMIT).await;
    pod_spec(&running_job(ns, name).await)
}

fn port(pod: &PodSpec) -> i32 {
    runner(pod).ports.as_ref().unwrap()[0].container_port
}

#[tokio::test]
async fn the_registry_shapes_the_runner_pod_and_is_reread_when_it_changes() {
    let _one = REGISTRY.lock().await;
    let cluster = ClusterInfo::from_env();
    start(&cluster);
    let ns = TestNamespace::create(&cluster, "registry").await;
    publish(
        "agent-registry.json",
        &serde_json::json!([runtime("custom-rt", 8123, "lots")]).to_string(),
    );
    tokio::time::sleep(Duration::from_secs(2)).await; // the catalog's recheck interval
    let pod = pod_of_runtime(&ns, "shaped", "custom-rt").await;
    let r = runner(&pod);
    assert_eq!(r.image.as_deref(), Some("runner:custom-rt"));
    assert_eq!(port(&pod), 8123);
    assert_eq!(env(r, "AGUI_PORT"), Some("8123"));
    assert_eq!(env(r, "CUSTOM_FLAG"), Some("1"));
    assert_eq!(
        env(r, "LLM_MODEL_VERTEX_ID"),
        Some("claude-sonnet-4-6@default")
    );
    let requests = r.resources.as_ref().unwrap().requests.as_ref().unwrap();
    assert_eq!(requests["cpu"].0, "100m");
    assert_eq!(
        requests["memory"].0, "512Mi",
        "an invalid quantity keeps the default"
    );
    assert!(
        r.volume_mounts
            .iter()
            .flatten()
            .any(|m| m.mount_path == "/app/.custom")
    );
    assert_eq!(pod.termination_grace_period_seconds, Some(45));
    let workspace = pod
        .volumes
        .iter()
        .flatten()
        .find_map(|v| v.empty_dir.clone())
        .expect("an emptyDir workspace");
    assert_eq!(workspace.size_limit.map(|q| q.0).as_deref(), Some("3Gi"));
    let hydrate = container(&pod, "init-hydrate").expect("cloneRepos: init-hydrate");
    assert_eq!(hydrate.image.as_deref(), Some("state:custom"));
    assert_eq!(env(hydrate, "RUNNER_STATE_DIR"), Some(".custom"));
    let sync = container(&pod, "state-sync").expect("persistence s3: state-sync");
    assert_eq!(
        sync.restart_policy.as_deref(),
        Some("Always"),
        "a native sidecar"
    );
    for c in [r, hydrate, sync] {
        assert_eq!(c.image_pull_policy.as_deref(), Some("IfNotPresent"));
    }

    // Edited: the next session gets the new port.
    publish(
        "agent-registry.json",
        &serde_json::json!([runtime("custom-rt", 8124, "256Mi")]).to_string(),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let edited = pod_of_runtime(&ns, "edited", "custom-rt").await;
    assert_eq!(port(&edited), 8124);

    // Broken: the last good registry stays in use, and the error is counted.
    let errors = |op: &support::operator::Operator| {
        op.metric(
            "ambient_config_reload_errors_total",
            &[("file", "agent-registry")],
        )
    };
    let before = errors(started());
    publish(
        "agent-registry.json",
        "[{\"id\": \"custom-rt\", \"container\": ",
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let kept = pod_of_runtime(&ns, "kept", "custom-rt").await;
    assert_eq!(port(&kept), 8124, "the last good registry");
    assert!(errors(started()) > before, "the broken file is counted");
    publish("agent-registry.json", "[]");
}

#[tokio::test]
async fn bad_registry_values_unknown_runtimes_and_a_bundle_without_its_key_fall_back() {
    let _one = REGISTRY.lock().await;
    let cluster = ClusterInfo::from_env();
    start(&cluster);
    let ns = TestNamespace::create(&cluster, "registry-bad").await;
    publish(
        "agent-registry.json",
        &serde_json::json!([
            runtime("port-zero", 0, "1Gi"),
            runtime("port-huge", 70000, "1Gi")
        ])
        .to_string(),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(port(&pod_of_runtime(&ns, "zero", "port-zero").await), 8001);
    assert_eq!(port(&pod_of_runtime(&ns, "huge", "port-huge").await), 8001);
    let unknown = pod_of_runtime(&ns, "unknown", "no-such-runtime").await;
    assert_eq!(
        runner(&unknown).image.as_deref(),
        Some("quay.io/ambient_code/vteam_claude_runner:latest"),
        "an unknown runtime gets the defaults"
    );
    assert_eq!(port(&unknown), 8001);

    // trusted-ca-bundle without its key: not mounted; with it: mounted.
    let maps: Api<ConfigMap> = ns.api();
    let bundle = |data: &[(&str, &str)]| ConfigMap {
        metadata: ObjectMeta {
            name: Some("trusted-ca-bundle".into()),
            ..Default::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..Default::default()
    };
    maps.create(&PostParams::default(), &bundle(&[("other.crt", "x")]))
        .await
        .expect("a bundle without the key");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let without = pod_of_runtime(&ns, "no-bundle", "no-such-runtime").await;
    let ca = "/etc/pki/tls/certs/ca-bundle.crt";
    assert!(
        !runner(&without)
            .volume_mounts
            .iter()
            .flatten()
            .any(|m| m.mount_path == ca)
    );
    maps.replace(
        "trusted-ca-bundle",
        &PostParams::default(),
        &bundle(&[("ca-bundle.crt", "-----BEGIN CERTIFICATE-----")]),
    )
    .await
    .expect("the bundle with its key");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let with = pod_of_runtime(&ns, "with-bundle", "no-such-runtime").await;
    assert!(
        runner(&with)
            .volume_mounts
            .iter()
            .flatten()
            .any(|m| m.mount_path == ca)
    );
    publish("agent-registry.json", "[]");
}

#[tokio::test]
async fn the_namespace_admits_only_the_backend_and_the_operator_to_runners() {
    let cluster = ClusterInfo::from_env();
    start(&cluster);
    let ns = TestNamespace::create(&cluster, "netpol").await;
    let policies: Api<NetworkPolicy> = ns.api();
    let policy = wait_until("the runner NetworkPolicy", LIMIT, || async {
        policies
            .get_opt("runner-allow-backend-only")
            .await
            .ok()
            .flatten()
    })
    .await;
    let labels = policy.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels["app"], "ambient-code");
    assert_eq!(labels["ambient-code.io/managed-by"], "operator");
    let owner = &policy.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        owner.kind, "ProjectSettings",
        "it goes with the ProjectSettings"
    );
    let rule = &policy.spec.unwrap().ingress.unwrap()[0];
    let port = &rule.ports.as_ref().unwrap()[0];
    assert_eq!(
        port.port,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("agui".into()))
    );
    let from: Vec<String> = rule
        .from
        .iter()
        .flatten()
        .filter_map(|p| {
            p.namespace_selector
                .clone()?
                .match_labels?
                .get("kubernetes.io/metadata.name")
                .cloned()
        })
        .collect();
    assert_eq!(
        from,
        ["default"],
        "backend and operator share the test's namespace"
    );
}

#[tokio::test]
async fn the_runner_pods_events_are_republished_under_session_runner() {
    let cluster = ClusterInfo::from_env();
    start(&cluster);
    let ns = TestNamespace::create(&cluster, "pod-events").await;
    create(
        &ns.client,
        &ns.name,
        &session("noisy", &[("SIM_OUTCOME", "hang")]),
    )
    .await;
    wait_for_phase(&ns.client, &ns.name, "noisy", Phase::Running, LIMIT).await;
    // As the backend's pod-events view lists them (core/v1, by involvedObject.name).
    let events: Api<CoreEvent> = ns.api();
    let reasons = wait_until(
        "the scheduler's Event under noisy-runner",
        LIMIT,
        || async {
            let list = events
                .list(&ListParams::default().fields("involvedObject.name=noisy-runner"))
                .await
                .ok()?;
            let reasons: Vec<String> = list.items.into_iter().filter_map(|e| e.reason).collect();
            reasons.iter().any(|r| r == "Scheduled").then_some(reasons)
        },
    )
    .await;
    assert!(!reasons.is_empty());
}

#[tokio::test]
async fn the_runner_identity_carries_what_the_backend_looks_up() {
    let cluster = ClusterInfo::from_env();
    start(&cluster);
    let ns = TestNamespace::create(&cluster, "identity-labels").await;
    let mut s = session("owned", &[("SIM_OUTCOME", "hang")]);
    s.spec.user_context = Some(agentic_crds::session::UserContext {
        user_id: Some("user-7".into()),
        ..Default::default()
    });
    create(&ns.client, &ns.name, &s).await;
    wait_for_phase(&ns.client, &ns.name, "owned", Phase::Running, LIMIT).await;
    let account = ns
        .api::<ServiceAccount>()
        .get("ambient-session-owned")
        .await
        .expect("the ServiceAccount");
    assert_eq!(account.labels()["app"], "ambient-runner");
    assert_eq!(
        account.annotations()["ambient-code.io/created-by-user-id"],
        "user-7"
    );
    let token = ns
        .api::<k8s_openapi::api::core::v1::Secret>()
        .get("ambient-runner-token-owned")
        .await
        .expect("the token Secret");
    assert_eq!(token.labels()["app"], "ambient-runner-token");
    let session = ns.api::<AgenticSession>().get("owned").await.unwrap();
    assert_eq!(
        session.annotations()[keys::RUNNER_SA_ANNOTATION],
        "ambient-session-owned"
    );
}
