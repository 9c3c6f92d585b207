// The drop-in scenarios that depend on the engine (SPEC §7.3, §7.4, §7.6), included by
// tests/dropin.rs (work-queue engine) and tests/dropin_legacy.rs (`--legacy-watch`), which define
// `ENGINE` and `start`: each test binary runs one operator, so each engine needs a binary of
// its own.

use std::time::{Duration, Instant};

use agentic_crds::{AgenticSession, ConditionStatus, Phase, keys};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Resource, ResourceExt};
use serde_json::{Value, json};

use support::fake_runner::FakeRunner;
use support::operator::{
    annotate, create, operator, ready_message, ready_reason, session, wait_for_phase,
};
use support::rbac::kubectl;
use support::{
    ClusterInfo, CreationBlocked, TestNamespace, events_about, wait_for_event, wait_until,
    wait_until_gone,
};

const LIMIT: Duration = Duration::from_secs(60);

fn fake() -> &'static FakeRunner {
    FakeRunner::shared()
}

/// The binary's operator: `ENGINE`, live changes sent to the fake runner.
fn start(cluster: &ClusterInfo) {
    let base = fake().base_url();
    operator(cluster, ENGINE, &["--runner-base-url", &base]);
}

/// How long a failure may take to end the session, far below `--start-timeout` (10 minutes):
/// the image-pull grace (60 s) and the refusal grace (30 s) plus room for a busy machine.
const FAILS_WITHIN: Duration = Duration::from_secs(150);

/// Creates `name` with `env`, waits until it is Failed; returns it and how long that took.
async fn fails(ns: &TestNamespace, name: &str, env: &[(&str, &str)]) -> (AgenticSession, Duration) {
    let started = Instant::now();
    create(&ns.client, &ns.name, &session(name, env)).await;
    let failed = wait_for_phase(&ns.client, &ns.name, name, Phase::Failed, FAILS_WITHIN).await;
    (failed, started.elapsed())
}

/// A runner image that cannot be pulled: said at once (`RunnerStarted=False`, an Event), Failed
/// with the kubelet's reason and message after a short grace; before, the session waited in
/// Creating for the whole start timeout.
#[tokio::test]
async fn an_image_that_cannot_be_pulled_fails_with_the_kubelets_reason() {
    let cluster = ClusterInfo::from_env();
    start(&cluster);
    let ns = TestNamespace::create(&cluster, "pull").await;
    let message = "Failed to pull image \"registry.invalid/runner:x\": not found";
    let env = [
        ("SIM_WAITING_REASON", "ErrImagePull"),
        ("SIM_WAITING_MESSAGE", message),
    ];
    let started = Instant::now();
    create(&ns.client, &ns.name, &session("unpullable", &env)).await;
    let note = wait_for_event(&ns, "unpullable", "ErrImagePull").await;
    assert!(note.contains(message), "{note}");
    assert!(started.elapsed() < Duration::from_secs(30), "said at once");
    let failed = wait_for_phase(
        &ns.client,
        &ns.name,
        "unpullable",
        Phase::Failed,
        FAILS_WITHIN,
    )
    .await;
    assert_eq!(ready_reason(&failed).as_deref(), Some("ErrImagePull"));
    assert!(
        ready_message(&failed).contains(message),
        "{}",
        ready_message(&failed)
    );
}

/// A configuration key the runner's pod references but nobody made: Failed at once with the
/// kubelet's reason (`CreateContainerConfigError`) and message.
#[tokio::test]
async fn a_missing_configuration_key_fails_the_session_at_once() {
    let cluster = ClusterInfo::from_env();
    start(&cluster);
    let ns = TestNamespace::create(&cluster, "config-key").await;
    let message = "couldn't find key models.json in ConfigMap team/ambient-models";
    let (failed, took) = fails(
        &ns,
        "no-key",
        &[
            ("SIM_WAITING_REASON", "CreateContainerConfigError"),
            ("SIM_WAITING_MESSAGE", message),
        ],
    )
    .await;
    assert_eq!(
        ready_reason(&failed).as_deref(),
        Some("CreateContainerConfigError")
    );
    assert!(ready_message(&failed).contains(message));
    assert!(
        took < Duration::from_secs(30),
        "at once, not after {took:?}"
    );
    wait_for_event(&ns, "no-key", "CreateContainerConfigError").await;
}

/// `PodCreated=False` with the API server's message while the refusal lasts (and `FailedCreate`
/// Events on the session and under `<session>-runner`, where the backend's pod-events view
/// looks), then Failed / FailedCreate.
async fn refused_pod_fails_the_session(ns: &TestNamespace, name: &str, expected: &str) {
    let started = Instant::now();
    create(&ns.client, &ns.name, &session(name, &[])).await;
    let api: Api<AgenticSession> = ns.api();
    let condition = wait_until("PodCreated=False", LIMIT, || async {
        let status = api.get(name).await.ok()?.status?;
        status
            .conditions
            .into_iter()
            .find(|c| c.type_ == "PodCreated" && c.status == ConditionStatus::False)
    })
    .await;
    assert_eq!(condition.reason.as_deref(), Some("FailedCreate"));
    let said = condition.message.unwrap_or_default();
    assert!(said.contains(expected), "{said}");
    assert!(started.elapsed() < Duration::from_secs(30), "said at once");
    let note = wait_for_event(ns, name, "FailedCreate").await;
    assert!(note.contains(expected), "{note}");
    let republished = wait_for_event(ns, &format!("{name}-runner"), "FailedCreate").await;
    assert!(republished.contains(expected), "{republished}");
    let failed = wait_for_phase(&ns.client, &ns.name, name, Phase::Failed, FAILS_WITHIN).await;
    assert_eq!(ready_reason(&failed).as_deref(), Some("FailedCreate"));
    assert!(ready_message(&failed).contains(expected));
}

/// A quota that refuses the runner pod.
#[tokio::test]
async fn a_quota_that_refuses_the_pod_fails_the_session_with_its_message() {
    let cluster = ClusterInfo::from_env();
    start(&cluster);
    let ns = TestNamespace::create(&cluster, "pod-quota").await;
    let _quota = CreationBlocked::pods_in(&ns).await;
    refused_pod_fails_the_session(&ns, "over-quota", "exceeded quota").await;
}

/// An admission policy of the namespace that refuses runner pods.
#[tokio::test]
async fn an_admission_policy_that_refuses_the_pod_fails_the_session_with_its_message() {
    let cluster = ClusterInfo::from_env();
    start(&cluster);
    let ns = TestNamespace::create(&cluster, "pod-policy").await;
    let policy = format!("refuse-runner-pods-{}", ns.name);
    let message = format!("runner pods are not admitted in {} (test policy)", ns.name);
    let manifest = json!({"apiVersion": "v1", "kind": "List", "items": [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": policy},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {"resourceRules": [{
                    "apiGroups": [""], "apiVersions": ["v1"],
                    "operations": ["CREATE"], "resources": ["pods"],
                }]},
                "validations": [{
                    "expression": "!has(object.metadata.labels) || !('app' in object.metadata.labels) || object.metadata.labels['app'] != 'ambient-code-runner'",
                    "message": message,
                }],
            },
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": policy},
            "spec": {
                "policyName": policy,
                "validationActions": ["Deny"],
                "matchResources": {"namespaceSelector": {"matchLabels": {
                    "kubernetes.io/metadata.name": ns.name,
                }}},
            },
        },
    ]});
    kubectl(&cluster, &["apply", "-f", "-"], Some(&manifest.to_string()));
    let probe = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "probe", "namespace": ns.name, "labels": {"app": "ambient-code-runner"}},
        "spec": {"containers": [{"name": "c", "image": "probe"}]}});
    let pods: Api<Pod> = ns.api();
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let probe: Pod = serde_json::from_value(probe).expect("a pod");
    wait_until("the policy to be enforced", LIMIT, || async {
        pods.create(&dry_run, &probe).await.err().map(drop)
    })
    .await;
    refused_pod_fails_the_session(&ns, "refused", &message).await;
    kubectl(
        &cluster,
        &[
            "delete",
            "validatingadmissionpolicybinding,validatingadmissionpolicy",
            &policy,
            "--ignore-not-found",
        ],
        None,
    );
}

/// A namespace under OpenShift's restricted-v2 SCC (the local cluster's policy, opted in with
/// the namespace's uid-range annotation): runner pods are admitted and run, and so is the
/// operator's own pod as `deploy/` shapes it, while a pod pinning a uid outside the range is
/// refused (the policy is in force). Before SPEC §7.4 the state containers pinned uid 1001 and
/// no runner pod was admitted.
#[tokio::test]
async fn runner_pods_and_the_operators_pod_are_admitted_under_restricted_v2() {
    let cluster = ClusterInfo::from_env();
    start(&cluster);
    let ns = TestNamespace::create(&cluster, "restricted-v2").await;
    let range = "1000660000/10000";
    let patch = json!({"metadata": {"annotations": {
        "openshift.io/sa.scc.uid-range": range,
        "openshift.io/sa.scc.supplemental-groups": range,
    }}});
    Api::<Namespace>::all(ns.client.clone())
        .patch(&ns.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("annotating the namespace");
    let pods: Api<Pod> = ns.api();
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let pinned: Pod = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "pinned"},
        "spec": {"containers": [{"name": "c", "image": "x",
            "securityContext": {"runAsUser": 1001, "allowPrivilegeEscalation": false}}]}}))
    .expect("a pod");
    let refusal = wait_until("the SCC policy to refuse uid 1001", LIMIT, || async {
        pods.create(&dry_run, &pinned).await.err()
    })
    .await;
    assert!(
        refusal.to_string().contains("must be in the ranges"),
        "{refusal}"
    );

    create(
        &ns.client,
        &ns.name,
        &session("admitted", &[("SIM_OUTCOME", "hang")]),
    )
    .await;
    wait_for_phase(&ns.client, &ns.name, "admitted", Phase::Running, LIMIT).await;

    let deployment: Value = serde_yaml::from_str(
        &std::fs::read_to_string(support::rbac::deploy_dir().join("base/operator/deployment.yaml"))
            .expect("reading the Deployment"),
    )
    .expect("the Deployment is YAML");
    let template = &deployment["spec"]["template"];
    let mut spec = template["spec"].clone();
    // Its ServiceAccount lives in the operator's namespace; the SCC does not look at it.
    spec["serviceAccountName"] = json!("default");
    let operator_pod: Pod = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "operator", "labels": template["metadata"]["labels"]},
        "spec": spec}))
    .expect("the operator's pod");
    pods.create(&dry_run, &operator_pod)
        .await
        .expect("the operator's own pod is admitted under restricted-v2");
}

/// Makes, as admin and exactly as the original operator made them, a Running session whose
/// runner is the bare pod `<name>-runner` (controlled by the session) behind the Service
/// `session-<name>` (controlled by that pod).
async fn original_running_session(ns: &TestNamespace, name: &str) {
    let sessions: Api<AgenticSession> = ns.api();
    let created = sessions
        .create(&PostParams::default(), &session(name, &[]))
        .await
        .expect("creating the session");
    let now = Timestamp::now().to_string();
    let status = json!({"status": {
        "phase": "Running",
        "startTime": now,
        "observedGeneration": 1,
        "conditions": [
            {"type": "PodCreated", "status": "True", "reason": "PodCreated", "message": "Runner pod created", "lastTransitionTime": now},
            {"type": "RunnerStarted", "status": "True", "reason": "ContainerRunning", "message": "Runner container is executing", "lastTransitionTime": now},
            {"type": "Ready", "status": "True", "reason": "Running", "message": "Session is running", "lastTransitionTime": now},
        ],
    }});
    sessions
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("writing the original's status");
    let owner = |kind: &str, api_version: &str, name: &str, uid: &str| json!([{"apiVersion": api_version, "kind": kind, "name": name, "uid": uid, "controller": true}]);
    let pod_name = format!("{name}-runner");
    let pod: Pod = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": pod_name,
            "labels": {keys::SESSION_LABEL: name, keys::APP_LABEL: keys::RUNNER_APP},
            "ownerReferences": owner(
                "AgenticSession",
                "vteam.ambient-code/v1alpha1",
                name,
                created.uid().as_deref().expect("a uid"),
            ),
        },
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 60,
            "automountServiceAccountToken": false,
            "containers": [{
                "name": "ambient-code-runner",
                "image": "quay.io/ambient_code/vteam_claude_runner:latest",
                "ports": [{"name": "agui", "containerPort": 8001, "protocol": "TCP"}],
                "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}},
            }],
        },
    }))
    .expect("the original's pod");
    let pod = ns
        .api::<Pod>()
        .create(&PostParams::default(), &pod)
        .await
        .expect("creating the original's pod");
    let service: Service = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {
            "name": format!("session-{name}"),
            "labels": {keys::APP_LABEL: "ambient-code", keys::SESSION_LABEL: name},
            "ownerReferences": owner("Pod", "v1", &pod_name, pod.uid().as_deref().expect("a uid")),
        },
        "spec": {
            "type": "ClusterIP",
            "selector": {keys::SESSION_LABEL: name, keys::APP_LABEL: keys::RUNNER_APP},
            "ports": [{"name": "agui", "protocol": "TCP", "port": 8001, "targetPort": 8001}],
        },
    }))
    .expect("the original's Service");
    ns.api::<Service>()
        .create(&PostParams::default(), &service)
        .await
        .expect("creating the original's Service");
    let pods: Api<Pod> = ns.api();
    wait_until(&format!("{pod_name} running"), LIMIT, || async {
        let pod = pods.get(&pod_name).await.ok()?;
        (pod.status?.phase.as_deref() == Some("Running")).then_some(())
    })
    .await;
}

/// Sessions the original operator started (SPEC §7.6), met by this operator at the switch: they
/// stay Running while their pods run (no Job is made beside them), end by their pod's outcome,
/// stop on request (their pod deleted), and a restart brings this operator's Job once the
/// original's Service has gone with its pod. Before, they turned Failed (JobLost) at once while
/// their agents still answered.
#[tokio::test]
async fn sessions_the_original_started_keep_working_through_the_switch() {
    let cluster = ClusterInfo::from_env();
    start(&cluster);
    // Not yet managed: the objects are made as the original made them, then the switch.
    let ns = TestNamespace::create_with_labels(&cluster, "cutover", &[]).await;
    ns.add_runner_credentials().await;
    original_running_session(&ns, "finishing").await;
    original_running_session(&ns, "stopped").await;
    let patch = json!({"metadata": {"labels": {keys::MANAGED_NAMESPACE_LABEL: "true"}}});
    Api::<Namespace>::all(ns.client.clone())
        .patch(&ns.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("managing the namespace");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let sessions: Api<AgenticSession> = ns.api();
    let jobs: Api<Job> = ns.api();
    let pods: Api<Pod> = ns.api();
    for name in ["finishing", "stopped"] {
        let s = sessions.get(name).await.expect("the session");
        assert_eq!(s.phase(), Phase::Running, "{name}: {:?}", s.status);
        assert!(
            jobs.get_opt(&format!("{name}-job"))
                .await
                .expect("get")
                .is_none(),
            "no Job beside the original's pod"
        );
        let pod = pods.get(&format!("{name}-runner")).await.expect("its pod");
        assert!(
            pod.metadata.deletion_timestamp.is_none(),
            "{name}'s pod kept"
        );
    }

    // The runner finishes: the session records it, and the pod goes.
    let now = Timestamp::now().to_string();
    let finished = json!({"status": {
        "phase": "Succeeded",
        "containerStatuses": [{
            "name": "ambient-code-runner", "image": "quay.io/ambient_code/vteam_claude_runner:latest",
            "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": now, "finishedAt": now}},
        }],
    }});
    pods.patch_status(
        "finishing-runner",
        &PatchParams::default(),
        &Patch::Merge(&finished),
    )
    .await
    .expect("finishing the original's runner");
    wait_for_phase(&ns.client, &ns.name, "finishing", Phase::Completed, LIMIT).await;
    wait_until_gone(&pods, "finishing-runner").await;

    // A stop deletes the original's pod; a restart runs this operator's Job.
    annotate(
        &ns.client,
        &ns.name,
        "stopped",
        keys::DESIRED_PHASE_ANNOTATION,
        Some(keys::DESIRED_PHASE_STOPPED),
    )
    .await;
    wait_for_phase(&ns.client, &ns.name, "stopped", Phase::Stopped, LIMIT).await;
    wait_until_gone(&pods, "stopped-runner").await;
    annotate(
        &ns.client,
        &ns.name,
        "stopped",
        keys::DESIRED_PHASE_ANNOTATION,
        Some(keys::DESIRED_PHASE_RUNNING),
    )
    .await;
    let restarted = wait_for_phase(&ns.client, &ns.name, "stopped", Phase::Running, LIMIT).await;
    jobs.get("stopped-job").await.expect("this operator's Job");
    let service = ns
        .api::<Service>()
        .get("session-stopped")
        .await
        .expect("the session's Service");
    let controller = service
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.clone());
    assert_eq!(
        controller,
        restarted.meta().uid,
        "the Service is the session's now"
    );
    let events = events_about(&ns, "stopped").await;
    assert!(
        !events.iter().any(|(_, reason, _)| reason == "JobLost"),
        "{events:?}"
    );
}

/// A spec edited into something invalid while Running (SPEC §7.1) is refused as an edit:
/// `Reconciled=False` / `InvalidSpec` naming the field, a Warning Event, the run goes on; once
/// corrected, the edit is applied. Before, the session was failed (InvalidSpec) and its Job
/// deleted.
#[tokio::test]
async fn an_invalid_edit_while_running_is_refused_and_the_session_keeps_running() {
    let cluster = ClusterInfo::from_env();
    start(&cluster);
    let ns = TestNamespace::create(&cluster, "bad-edit").await;
    create(&ns.client, &ns.name, &session("edited", &[("SIM_OUTCOME", "hang")])).await;
    wait_for_phase(&ns.client, &ns.name, "edited", Phase::Running, LIMIT).await;
    let sessions: Api<AgenticSession> = ns.api();
    let edit = |url: &'static str| {
        json!({"spec": {"repos": [{"url": url, "branch": "main"}]}})
    };
    sessions
        .patch("edited", &PatchParams::default(), &Patch::Merge(edit("not a git url")))
        .await
        .expect("editing the spec");
    let refused = wait_until("Reconciled=False", LIMIT, || async {
        let status = sessions.get("edited").await.ok()?.status?;
        status.conditions.into_iter().find(|c| {
            c.type_ == "Reconciled"
                && c.status == ConditionStatus::False
                && c.reason.as_deref() == Some("InvalidSpec")
        })
    })
    .await;
    let said = refused.message.unwrap_or_default();
    assert!(said.contains("spec.repos[0].url"), "{said}");
    let note = wait_for_event(&ns, "edited", "InvalidSpec").await;
    assert!(note.contains("spec.repos[0].url"), "{note}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let still = sessions.get("edited").await.expect("the session");
    assert_eq!(still.phase(), Phase::Running, "{:?}", still.status);
    ns.api::<Job>().get("edited-job").await.expect("its Job is kept");

    sessions
        .patch(
            "edited",
            &PatchParams::default(),
            &Patch::Merge(edit("https://github.com/ambient-code/docs")),
        )
        .await
        .expect("correcting the spec");
    support::operator::wait_until_applied(&ns.client, &ns.name, "edited").await;
    let calls: Vec<String> = fake()
        .calls(&ns.name, "edited")
        .into_iter()
        .map(|c| c.path)
        .collect();
    assert_eq!(calls, ["/repos/add"], "only the corrected edit reached the runner");
}
