//! The operator on the platform's own installation (SPEC §7: swap the image, apply
//! `deploy/overlays/platform`), work-queue engine: the platform's objects unchanged by the
//! overlay; the same scenarios as `lifecycle_queue` under the platform's CRDs and RBAC plus the
//! overlay's; the backend's journey (its exact bodies and edits, a session still Running 330 s
//! into its `timeout: 300`); then a count, from the API server's audit log, of the operator's
//! status writes the platform's schema refused.
//!
//! CRDs and ClusterRoles are cluster-wide, so these are ignored by a plain `cargo test` and run
//! by `tests/suite.sh` on a cluster of their own (`AGENTIC_CLUSTER_DIR` pointing at it),
//! scenarios first and the audit count after them.

mod support;

use std::time::{Duration, Instant};

use agentic_crds::{AgenticSession, Phase, keys};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use support::audit::operator_requests;
use support::fake_runner::FakeRunner;
use support::operator::{Crds, Engine, operator_on, wait_for_phase};
use support::{ClusterInfo, TestNamespace};

const LIMIT: Duration = Duration::from_secs(60);

fn fake() -> &'static FakeRunner {
    FakeRunner::shared()
}

/// The binary's operator: work-queue engine, on the platform's installation, live changes sent
/// to the fake runner.
fn start(cluster: &ClusterInfo) {
    let base = fake().base_url();
    operator_on(
        cluster,
        Crds::Platform,
        Engine::Queue,
        &["--runner-base-url", &base],
    );
}

lifecycle_tests!(@platform start);

/// Every status write of the scenarios above was accepted: none refused for a field or value
/// the platform's schema does not declare (`stoppedReason: timeout`), none for anything else.
/// Conflicts (409) and writes to sessions deleted meanwhile (404) are the guarded write doing
/// its job.
#[test]
#[ignore = "after the platform-CRD scenarios: tests/suite.sh"]
fn no_status_write_was_refused_by_the_platforms_schema() {
    let cluster = ClusterInfo::from_env();
    let requests = operator_requests(&support::audit::log_path(&cluster), None);
    let writes: Vec<_> = requests
        .iter()
        .filter(|r| {
            r["objectRef"]["resource"] == "agenticsessions"
                && r["objectRef"]["subresource"] == "status"
                && matches!(r["verb"].as_str(), Some("update" | "patch"))
        })
        .collect();
    assert!(
        writes.len() > 40,
        "the scenarios wrote {} statuses: did they run on this cluster?",
        writes.len()
    );
    let refused: Vec<String> = writes
        .iter()
        .filter(|r| {
            let code = r["responseStatus"]["code"].as_i64().unwrap_or(0);
            code >= 400 && code != 404 && code != 409
        })
        .map(|r| {
            format!(
                "{}/{}: {} {}",
                r["objectRef"]["namespace"].as_str().unwrap_or_default(),
                r["objectRef"]["name"].as_str().unwrap_or_default(),
                r["responseStatus"]["code"],
                r["responseStatus"]["message"].as_str().unwrap_or_default()
            )
        })
        .collect();
    assert!(
        refused.is_empty(),
        "status writes refused by the platform's schema:\n{}",
        refused.join("\n")
    );
}

/// `deploy/overlays/platform` over a platform installation (SPEC §7.6): every object the platform
/// owns is as it was (same resourceVersion: not even rewritten), and the one Deployment is this
/// operator, updated in place under the platform's selector.
#[test]
#[ignore = "on a platform installation: tests/suite.sh"]
fn the_platform_overlay_changes_nothing_the_platform_owns_but_the_deployment() {
    let cluster = ClusterInfo::from_env();
    let installed = support::platform::installation(&cluster);
    let changed: Vec<String> = support::platform::PLATFORM_OWNED
        .iter()
        .zip(installed.before.iter().zip(&installed.after))
        .filter(|(_, (before, after))| {
            before["metadata"]["resourceVersion"] != after["metadata"]["resourceVersion"]
        })
        .map(|((kind, namespace, name), _)| format!("{kind} {namespace}/{name}"))
        .collect();
    assert!(
        changed.is_empty(),
        "the overlay changed the platform's {changed:?}"
    );
    let spec = &installed.deployment["spec"];
    assert_eq!(
        spec["selector"]["matchLabels"],
        serde_json::json!({"app": "agentic-operator"}),
        "the platform's (immutable) selector"
    );
    let containers = spec["template"]["spec"]["containers"]
        .as_array()
        .expect("containers");
    assert_eq!(containers.len(), 1, "updated in place: {containers:?}");
    assert_eq!(containers[0]["name"], "agentic-operator");
    assert!(
        containers[0]["image"]
            .as_str()
            .is_some_and(|i| i.starts_with("quay.io/ambient_code/agentic-operator:")),
        "{}",
        containers[0]["image"]
    );
}

/// The platform's default `spec.timeout`, which every one of its clients writes.
const PLATFORM_TIMEOUT: i64 = 300;

/// A random UUID v4, as the backend names sessions `session-<uuid>`.
fn uuid4() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("random bytes");
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

fn sessions_dynamic(ns: &TestNamespace) -> Api<DynamicObject> {
    Api::namespaced_with(
        ns.client.clone(),
        &ns.name,
        &ApiResource::erase::<AgenticSession>(&()),
    )
}

/// Creates a session from a body exactly as the backend's `CreateSession` builds it
/// (`spec.project`, which no CRD declares, and a `status` the API server drops, included).
async fn backend_create(ns: &TestNamespace, body: Value) {
    let object: DynamicObject = serde_json::from_value(body).expect("a session body");
    sessions_dynamic(ns)
        .create(&PostParams::default(), &object)
        .await
        .unwrap_or_else(|e| panic!("the backend's create of {:?}: {e}", object.metadata.name));
}

/// The body of the backend's `CreateSession` for a session in `ns` (its defaults: timeout 300,
/// temperature 0.7, 4000 tokens; the runtime's env from the agent registry).
fn backend_body(ns: &TestNamespace, name: &str, annotations: Value, extra_env: Value) -> Value {
    let mut env = json!({
        "RUNNER_TYPE": "claude-agent-sdk",
        "RUNNER_STATE_DIR": ".claude",
        // How the local cluster's simulated kubelet keeps the runner running.
        "SIM_OUTCOME": "hang",
    });
    if let (Some(env), Some(extra)) = (env.as_object_mut(), extra_env.as_object()) {
        env.extend(extra.clone());
    }
    json!({
        "apiVersion": "vteam.ambient-code/v1alpha1",
        "kind": "AgenticSession",
        "metadata": {"name": name, "namespace": ns.name, "annotations": annotations},
        "spec": {
            "displayName": "Fix the flaky integration test",
            "project": ns.name,
            "llmSettings": {"model": "claude-sonnet-4-6", "temperature": 0.7, "maxTokens": 4000},
            "timeout": PLATFORM_TIMEOUT,
            "initialPrompt": "Find out why the integration test is flaky and fix it.",
            "environmentVariables": env,
            "repos": [{"url": "https://github.com/ambient-code/platform", "branch": "main"}],
            "userContext": {"userId": "jdoe", "displayName": "Jane Doe", "groups": ["devs"]},
        },
        "status": {"phase": "Pending"},
    })
}

/// What the backend's handlers do to `spec` (GET, change, full Update).
async fn backend_update(ns: &TestNamespace, name: &str, change: impl Fn(&mut Value)) {
    let api = sessions_dynamic(ns);
    let mut object = api.get(name).await.expect("the session");
    let mut spec = object.data["spec"].clone();
    change(&mut spec);
    object.data["spec"] = spec;
    api.replace(name, &PostParams::default(), &object)
        .await
        .unwrap_or_else(|e| panic!("the backend's update of {name}: {e}"));
}

/// The backend's add-repo: appends `{url, branch}` to `spec.repos`, without looking for it first.
async fn backend_add_repo(ns: &TestNamespace, name: &str, url: &str) {
    backend_update(ns, name, |spec| {
        spec["repos"]
            .as_array_mut()
            .expect("repos")
            .push(json!({"url": url, "branch": "main"}));
    })
    .await;
}

/// The backend's stop or start: `desired-phase` and `stop-requested-at` / `start-requested-at`.
async fn backend_request(ns: &TestNamespace, name: &str, desired: &str) {
    let at = match desired {
        keys::DESIRED_PHASE_STOPPED => keys::STOP_REQUESTED_AT_ANNOTATION,
        _ => keys::START_REQUESTED_AT_ANNOTATION,
    };
    let now = Timestamp::now().to_string();
    let patch = json!({"metadata": {"annotations": {
        keys::DESIRED_PHASE_ANNOTATION: desired,
        at: now,
    }}});
    ns.api::<AgenticSession>()
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|e| panic!("the backend's request {desired} of {name}: {e}"));
}

/// Waits until the runner has been told about the session's current generation.
async fn applied(ns: &TestNamespace, name: &str) -> AgenticSession {
    support::operator::wait_until_applied(&ns.client, &ns.name, name).await
}

fn repo_urls(session: &AgenticSession) -> Vec<String> {
    session
        .status
        .iter()
        .flat_map(|s| s.reconciled_repos.iter().flatten())
        .filter_map(|r| r.url.clone())
        .collect()
}

/// Sessions the backend creates (`session-<uuid>`, 44 characters), its clones
/// (`<name>-duplicate`, 54) and continuations (parent annotation, `PARENT_SESSION_ID`), with
/// `timeout: 300`, reach Running and are still Running 330 s later; while Running they take the
/// backend's add-repo (twice the same: it appends without looking), remove-repo, stop and start.
/// Before SPEC §7 the names were refused (42 at most), the Job died at 300 s, and the second
/// add of a repository failed the session as InvalidSpec.
#[tokio::test]
#[ignore = "on the platform's installation: tests/suite.sh"]
async fn backend_sessions_outlive_their_timeout_and_take_every_change_while_running() {
    let cluster = ClusterInfo::from_env();
    start(&cluster);
    let ns = TestNamespace::create(&cluster, "backend").await;
    let first = format!("session-{}", uuid4());
    assert_eq!(first.len(), 44);
    backend_create(&ns, backend_body(&ns, &first, json!({}), json!({}))).await;
    let clone = format!("{first}-duplicate");
    assert_eq!(clone.len(), 54);
    let mut clone_body = backend_body(&ns, &clone, json!({}), json!({}));
    clone_body["spec"]["displayName"] = json!("Fix the flaky integration test (Duplicate)");
    backend_create(&ns, clone_body).await;
    let continuation = format!("session-{}", uuid4());
    backend_create(
        &ns,
        backend_body(
            &ns,
            &continuation,
            json!({ keys::PARENT_SESSION_ID_ANNOTATION: first }),
            json!({ "PARENT_SESSION_ID": first }),
        ),
    )
    .await;
    let names = [first.clone(), clone, continuation];
    for name in &names {
        wait_for_phase(&ns.client, &ns.name, name, Phase::Running, LIMIT).await;
    }
    let running_since = Instant::now();
    let job = ns
        .api::<Job>()
        .get(&format!("{first}-job"))
        .await
        .expect("the Job");
    assert_eq!(
        job.spec.and_then(|s| s.active_deadline_seconds),
        None,
        "timeout: 300 is advisory"
    );

    let added = "https://github.com/ambient-code/docs";
    backend_add_repo(&ns, &first, added).await;
    let after_add = applied(&ns, &first).await;
    assert!(repo_urls(&after_add).contains(&added.to_string()));
    // The backend adds a repository again without looking: the last entry wins.
    backend_add_repo(&ns, &first, added).await;
    let again = applied(&ns, &first).await;
    assert_eq!(again.phase(), Phase::Running, "{:?}", again.status);
    assert_eq!(repo_urls(&again).len(), 2, "{:?}", repo_urls(&again));
    // Remove-repo drops every entry of that folder.
    backend_update(&ns, &first, |spec| {
        let repos = spec["repos"].as_array_mut().expect("repos");
        repos.retain(|r| r["url"] != added);
    })
    .await;
    let removed = applied(&ns, &first).await;
    assert_eq!(removed.phase(), Phase::Running);
    assert!(!repo_urls(&removed).contains(&added.to_string()));
    let calls: Vec<String> = fake()
        .calls(&ns.name, &first)
        .into_iter()
        .map(|c| c.path)
        .collect();
    assert_eq!(
        calls,
        ["/repos/add", "/repos/remove"],
        "the runner was told"
    );

    let past_timeout = Duration::from_secs(330);
    tokio::time::sleep(past_timeout.saturating_sub(running_since.elapsed())).await;
    let api: Api<AgenticSession> = ns.api();
    for name in &names {
        let s = api.get(name).await.expect("the session");
        assert_eq!(
            s.phase(),
            Phase::Running,
            "{name} after 330 s: {:?}",
            s.status
        );
    }

    backend_request(&ns, &first, keys::DESIRED_PHASE_STOPPED).await;
    wait_for_phase(&ns.client, &ns.name, &first, Phase::Stopped, LIMIT).await;
    backend_request(&ns, &first, keys::DESIRED_PHASE_RUNNING).await;
    wait_for_phase(&ns.client, &ns.name, &first, Phase::Running, LIMIT).await;
}
