// The live-change scenarios, included by tests/live_changes.rs (work-queue engine) and
// tests/live_changes_legacy.rs (`--legacy-watch`), which define `ENGINE`: each test binary runs
// one operator, so each engine needs a binary of its own.

use std::time::{Duration, Instant};

use agentic_crds::{AgenticSession, Phase};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use support::fake_runner::{Behaviour, FakeRunner};
use support::operator::{create, operator, session, wait_for_phase, wait_until_applied};
use support::{ClusterInfo, TestNamespace, wait_until};

const LIMIT: Duration = Duration::from_secs(60);

fn fake() -> &'static FakeRunner {
    FakeRunner::shared()
}

fn start(cluster: &ClusterInfo) {
    let base = fake().base_url();
    operator(cluster, ENGINE, &["--runner-base-url", &base]);
}

async fn patch_spec(ns: &TestNamespace, name: &str, spec: serde_json::Value) {
    ns.api::<AgenticSession>()
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": spec })),
        )
        .await
        .unwrap_or_else(|e| panic!("patching {name}: {e}"));
}

/// Waits until the runner has been told about the session's current generation.
async fn applied(ns: &TestNamespace, name: &str) -> AgenticSession {
    wait_until_applied(&ns.client, &ns.name, name).await
}

async fn agui_token(ns: &TestNamespace, name: &str) -> String {
    let secret = ns
        .api::<Secret>()
        .get(&format!("ambient-runner-token-{name}"))
        .await
        .expect("the token Secret");
    String::from_utf8(secret.data.unwrap()["agui-token"].0.clone()).unwrap()
}

#[tokio::test]
async fn live_changes_reach_the_runner_in_order_and_are_recorded() {
    let cluster = ClusterInfo::from_env();
    start(&cluster);
    let ns = TestNamespace::create(&cluster, "live").await;
    create(
        &ns.client,
        &ns.name,
        &session("live", &[("SIM_OUTCOME", "hang")]),
    )
    .await;
    wait_for_phase(&ns.client, &ns.name, "live", Phase::Running, LIMIT).await;
    let token = agui_token(&ns, "live").await;

    patch_spec(
        &ns,
        "live",
        json!({"repos": [{"url": "https://git.example/app.git"}]}),
    )
    .await;
    let s = applied(&ns, "live").await;
    let repos = s.status.unwrap().reconciled_repos.expect("recorded");
    assert_eq!(repos[0].name.as_deref(), Some("app"));
    assert_eq!(repos[0].branch.as_deref(), Some("main"));

    patch_spec(
        &ns,
        "live",
        json!({"repos": [{"url": "https://git.example/app.git", "branch": "dev"}]}),
    )
    .await;
    applied(&ns, "live").await;
    patch_spec(&ns, "live", json!({"repos": []})).await;
    let s = applied(&ns, "live").await;
    assert!(s.status.unwrap().reconciled_repos.is_none());
    patch_spec(
        &ns,
        "live",
        json!({"activeWorkflow": {"gitUrl": "https://git.example/flows.git", "path": "spec"}}),
    )
    .await;
    let s = applied(&ns, "live").await;
    let workflow = s.status.unwrap().reconciled_workflow.expect("recorded");
    assert_eq!(
        workflow.git_url.as_deref(),
        Some("https://git.example/flows.git")
    );
    patch_spec(&ns, "live", json!({"activeWorkflow": null})).await;
    let s = applied(&ns, "live").await;
    let status = s.status.unwrap();
    assert!(
        status.reconciled_workflow.is_none(),
        "cleared, without a call"
    );
    let workflow_condition = status
        .conditions
        .iter()
        .find(|c| c.type_ == "WorkflowReconciled")
        .unwrap();
    assert_eq!(workflow_condition.reason.as_deref(), Some("NotConfigured"));

    let calls = fake().calls(&ns.name, "live");
    let seen: Vec<(String, serde_json::Value)> = calls
        .iter()
        .map(|c| (c.path.clone(), c.body.clone()))
        .collect();
    assert_eq!(
        seen,
        vec![
            (
                "/repos/add".into(),
                json!({"url": "https://git.example/app.git", "branch": "main", "name": "app"})
            ),
            (
                "/repos/add".into(),
                json!({"url": "https://git.example/app.git", "branch": "dev", "name": "app"})
            ),
            ("/repos/remove".into(), json!({"name": "app"})),
            (
                "/workflow".into(),
                json!({"gitUrl": "https://git.example/flows.git", "branch": "main", "path": "spec"})
            ),
        ]
    );
    assert!(
        calls
            .iter()
            .all(|c| c.token.as_deref() == Some(token.as_str())),
        "every call carries the session's AG-UI token"
    );
}

#[tokio::test]
async fn a_failing_runner_is_visible_and_the_change_applies_once_it_recovers() {
    let cluster = ClusterInfo::from_env();
    start(&cluster);
    let ns = TestNamespace::create(&cluster, "live-fail").await;
    create(
        &ns.client,
        &ns.name,
        &session("flaky", &[("SIM_OUTCOME", "hang")]),
    )
    .await;
    wait_for_phase(&ns.client, &ns.name, "flaky", Phase::Running, LIMIT).await;
    fake().behave(
        &ns.name,
        "flaky",
        Behaviour::Fail(500, "git clone failed: repository not found".into()),
    );
    patch_spec(
        &ns,
        "flaky",
        json!({"repos": [{"url": "https://git.example/missing.git"}]}),
    )
    .await;
    let api: Api<AgenticSession> = ns.api();
    let message = wait_until(
        "Reconciled=False with the runner's answer",
        LIMIT,
        || async {
            let s = api.get("flaky").await.ok()?;
            let status = s.status?;
            let failed = status.conditions.iter().find(|c| {
                c.type_ == "Reconciled" && c.reason.as_deref() == Some("RepoReconciliationFailed")
            })?;
            (status.observed_generation != s.metadata.generation).then(|| failed.message.clone())?
        },
    )
    .await;
    assert!(message.contains("repository not found"), "{message}");

    fake().behave(&ns.name, "flaky", Behaviour::Answer);
    let s = applied(&ns, "flaky").await;
    assert!(s.status.unwrap().reconciled_repos.is_some());
}

#[tokio::test]
async fn runners_that_never_answer_do_not_delay_other_sessions() {
    let cluster = ClusterInfo::from_env();
    start(&cluster);
    let ns = TestNamespace::create(&cluster, "live-hang").await;
    // Enough silent runners that, were each call to hold one of the 10 workers for its 10 s
    // timeout, the fresh sessions below would wait minutes.
    let hanging: usize = std::env::var("LIVE_HANGING_SESSIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100);
    let names: Vec<String> = (0..hanging).map(|i| format!("silent-{i}")).collect();
    for name in &names {
        fake().behave(&ns.name, name, Behaviour::Hang);
        create(
            &ns.client,
            &ns.name,
            &session(name, &[("SIM_OUTCOME", "hang")]),
        )
        .await;
    }
    for name in &names {
        wait_for_phase(&ns.client, &ns.name, name, Phase::Running, LIMIT * 3).await;
    }
    for name in &names {
        patch_spec(
            &ns,
            name,
            json!({"repos": [{"url": "https://git.example/a.git"}]}),
        )
        .await;
    }
    wait_until("every silent runner to be called", LIMIT, || async {
        names
            .iter()
            .all(|n| !fake().calls(&ns.name, n).is_empty())
            .then_some(())
    })
    .await;
    // Meanwhile, fresh sessions start as usual.
    let started = Instant::now();
    for i in 0..5 {
        create(
            &ns.client,
            &ns.name,
            &session(&format!("fresh-{i}"), &[("SIM_OUTCOME", "hang")]),
        )
        .await;
    }
    for i in 0..5 {
        wait_for_phase(
            &ns.client,
            &ns.name,
            &format!("fresh-{i}"),
            Phase::Running,
            LIMIT,
        )
        .await;
    }
    eprintln!(
        "{hanging} runners never answering: 5 fresh sessions Running after {:?}",
        started.elapsed()
    );
    // And the silent ones are on record as failing, not forgotten.
    let api: Api<AgenticSession> = ns.api();
    wait_until("a silent runner's failure on record", LIMIT, || async {
        let s = api.get(&names[0]).await.ok()?;
        s.status?
            .conditions
            .iter()
            .any(|c| c.type_ == "Reconciled" && c.status == agentic_crds::ConditionStatus::False)
            .then_some(())
    })
    .await;
}
