//! Rows of SPEC §2.1 that need an operator with short timers or a cluster with no room:
//! unschedulable runner → PodScheduled=False then StartTimeout; stop while Creating; token
//! refresh while Running; a pod stuck terminating force-deleted. Written once and run under each
//! engine by [`timer_tests!`](crate::timer_tests): both must fire the same timers. Cordoning
//! nodes affects every test of a binary, so they run one at a time.

use std::process::Command;
use std::time::Duration;

use agentic_crds::{Phase, StoppedReason, keys};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use tokio::sync::Mutex;

use super::operator::{Engine, annotate, create, operator, ready_reason, session, wait_for_phase};
use super::{ClusterInfo, MANAGED_LABEL, TestNamespace, wait_until, wait_until_gone};

const START_TIMEOUT: Duration = Duration::from_secs(8);
const REFRESH_AFTER: &str = "3s";
const LIMIT: Duration = Duration::from_secs(60);

/// Expands to one `#[tokio::test]` per timer scenario for the given engine, one at a time.
#[macro_export]
macro_rules! timer_tests {
    ($engine:expr) => {
        $crate::timer_tests!(@tests $engine;
            unschedulable_runner_is_reported_then_fails_with_start_timeout,
            stop_while_creating_stops_the_session,
            job_deleted_before_the_runner_started_is_recreated_with_the_time_left,
            runner_past_its_timeout_fails_with_timeout,
            runner_token_is_refreshed_while_running,
            a_restart_hands_its_run_a_fresh_token,
            pod_stuck_terminating_is_force_deleted_after_its_grace_period_and_30s,
            a_session_older_than_the_start_timeout_when_first_reached_still_starts,
        );
    };
    (@tests $engine:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let _serial = support::timer_scenarios::SERIAL.lock().await;
                let cluster = support::ClusterInfo::from_env();
                support::timer_scenarios::start(&cluster, $engine);
                support::timer_scenarios::$name(&cluster).await;
            }
        )*
    };
}

/// One test at a time: cordoning is cluster-wide.
pub static SERIAL: Mutex<()> = Mutex::const_new(());

/// Starts the operator of this test binary with short timers, `spec.timeout` enforced.
pub fn start(cluster: &ClusterInfo, engine: Engine) {
    operator(
        cluster,
        engine,
        &[
            "--start-timeout",
            &format!("{}s", START_TIMEOUT.as_secs()),
            "--token-refresh-after",
            REFRESH_AFTER,
            "--enforce-session-timeout",
        ],
    );
}

/// With `--enforce-session-timeout`, `spec.timeout` bounds the run: Failed / Timeout.
pub async fn runner_past_its_timeout_fails_with_timeout(cluster: &ClusterInfo) {
    let ns = TestNamespace::create(cluster, "timeout").await;
    let mut s = session("slow", &[("SIM_OUTCOME", "hang")]);
    s.spec.timeout = 3;
    create(&ns.client, &ns.name, &s).await;
    let failed = wait_for_phase(&ns.client, &ns.name, "slow", Phase::Failed, LIMIT).await;
    assert_eq!(ready_reason(&failed).as_deref(), Some("Timeout"));
    assert_eq!(
        failed.status.and_then(|s| s.stopped_reason),
        Some(StoppedReason::Timeout)
    );
}

/// Marks every node unschedulable until dropped.
struct Cordoned<'a>(&'a ClusterInfo);

impl<'a> Cordoned<'a> {
    fn all_nodes(cluster: &'a ClusterInfo) -> Self {
        kubectl(cluster, &["cordon", "-l", "type=kwok"]);
        Cordoned(cluster)
    }
}

impl Drop for Cordoned<'_> {
    fn drop(&mut self) {
        kubectl(self.0, &["uncordon", "-l", "type=kwok"]);
    }
}

fn kubectl(cluster: &ClusterInfo, args: &[&str]) {
    let output = Command::new(cluster.bin_dir.join("kubectl"))
        .arg("--kubeconfig")
        .arg(&cluster.kubeconfig)
        .args(args)
        .output()
        .expect("running kubectl");
    assert!(
        output.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

pub async fn unschedulable_runner_is_reported_then_fails_with_start_timeout(cluster: &ClusterInfo) {
    let ns = TestNamespace::create(cluster, "unschedulable").await;
    let _cordoned = Cordoned::all_nodes(cluster);
    create(&ns.client, &ns.name, &session("stuck", &[])).await;
    let api = ns.api::<agentic_crds::AgenticSession>();
    let scheduled = wait_until("PodScheduled=False", LIMIT, || async {
        let status = api.get("stuck").await.ok()?.status?;
        status
            .conditions
            .into_iter()
            .find(|c| c.type_ == "PodScheduled" && c.status == agentic_crds::ConditionStatus::False)
    })
    .await;
    assert_eq!(scheduled.reason.as_deref(), Some("Unschedulable"));
    let message = scheduled.message.unwrap_or_default();
    assert!(
        message.contains("unschedulable"),
        "the scheduler's message: {message}"
    );

    let failed = wait_for_phase(&ns.client, &ns.name, "stuck", Phase::Failed, LIMIT).await;
    assert_eq!(ready_reason(&failed).as_deref(), Some("StartTimeout"));
    wait_until_gone(&ns.api::<Job>(), "stuck-job").await;
}

pub async fn stop_while_creating_stops_the_session(cluster: &ClusterInfo) {
    let ns = TestNamespace::create(cluster, "stop-creating").await;
    let _cordoned = Cordoned::all_nodes(cluster);
    create(&ns.client, &ns.name, &session("early", &[])).await;
    wait_for_phase(&ns.client, &ns.name, "early", Phase::Creating, LIMIT).await;
    annotate(
        &ns.client,
        &ns.name,
        "early",
        keys::DESIRED_PHASE_ANNOTATION,
        Some("Stopped"),
    )
    .await;
    let stopped = wait_for_phase(&ns.client, &ns.name, "early", Phase::Stopped, LIMIT).await;
    assert_eq!(
        stopped.status.and_then(|s| s.stopped_reason),
        Some(StoppedReason::User)
    );
    assert!(
        ns.api::<Job>()
            .get_opt("early-job")
            .await
            .unwrap()
            .is_none()
    );
}

/// A Job deleted before its runner ever started is recreated (the agent never ran), and the
/// new Job gets only what is left of `spec.timeout`: the timeout bounds the run, not each Job.
pub async fn job_deleted_before_the_runner_started_is_recreated_with_the_time_left(
    cluster: &ClusterInfo,
) {
    let ns = TestNamespace::create(cluster, "recreate-left").await;
    let _cordoned = Cordoned::all_nodes(cluster);
    let mut s = session("waiting", &[]);
    s.spec.timeout = 120;
    create(&ns.client, &ns.name, &s).await;
    wait_for_phase(&ns.client, &ns.name, "waiting", Phase::Creating, LIMIT).await;
    let jobs: Api<Job> = ns.api();
    let first = wait_until("the first Job", LIMIT, || async {
        jobs.get_opt("waiting-job").await.ok().flatten()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    jobs.delete("waiting-job", &kube::api::DeleteParams::background())
        .await
        .expect("deleting the Job");
    let second = wait_until("a recreated Job", LIMIT, || async {
        let job = jobs.get_opt("waiting-job").await.ok()??;
        (job.metadata.uid != first.metadata.uid).then_some(job)
    })
    .await;
    let deadline = |job: &Job| job.spec.as_ref().and_then(|s| s.active_deadline_seconds);
    assert_eq!(deadline(&first), Some(120));
    let left = deadline(&second).expect("a deadline");
    assert!(
        left <= 117,
        "the recreated Job got {left}s of a 120s run already 3s old"
    );
}

pub async fn runner_token_is_refreshed_while_running(cluster: &ClusterInfo) {
    let ns = TestNamespace::create(cluster, "refresh").await;
    let mut s = session("long", &[("SIM_OUTCOME", "hang")]);
    s.spec.inactivity_timeout = Some(0);
    create(&ns.client, &ns.name, &s).await;
    wait_for_phase(&ns.client, &ns.name, "long", Phase::Running, LIMIT).await;
    let secrets: Api<Secret> = ns.api();
    let refreshed_at = |secret: &Secret| {
        secret
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(keys::TOKEN_REFRESHED_AT_ANNOTATION).cloned())
    };
    let first = secrets
        .get("ambient-runner-token-long")
        .await
        .expect("token Secret");
    let first_time = refreshed_at(&first).expect("refresh time recorded");
    let first_token = first.data.clone().unwrap_or_default()["k8s-token"].clone();
    let refreshed = wait_until("the token to be refreshed", LIMIT, || async {
        let secret = secrets.get("ambient-runner-token-long").await.ok()?;
        (refreshed_at(&secret)? != first_time).then_some(secret)
    })
    .await;
    let data = refreshed.data.unwrap_or_default();
    assert_ne!(data["k8s-token"], first_token, "a new token was issued");
    assert_eq!(
        data["agui-token"],
        first.data.unwrap_or_default()["agui-token"],
        "the AG-UI token is kept"
    );
}

/// A run never starts on an old token: a session restarted after its token aged past the
/// refresh age gets a fresh one before its Job is made (`init-hydrate` reads it once, as an
/// env var), and the API server authenticates it. The nodes are cordoned so the new run stays
/// Creating: only the claim can have refreshed it. (Before, tokens were refreshed only while
/// Running, so a restart an hour later handed the new pod an expired one.)
pub async fn a_restart_hands_its_run_a_fresh_token(cluster: &ClusterInfo) {
    use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
    let ns = TestNamespace::create(cluster, "fresh-token").await;
    create(
        &ns.client,
        &ns.name,
        &session("again", &[("SIM_RUN_FOR", "1s")]),
    )
    .await;
    wait_for_phase(&ns.client, &ns.name, "again", Phase::Completed, LIMIT).await;
    let secrets: Api<Secret> = ns.api();
    let token_of = |secret: Secret| {
        let data = secret.data.unwrap_or_default();
        String::from_utf8(data[keys::TOKEN_SECRET_K8S_TOKEN_KEY].0.clone()).expect("UTF-8")
    };
    let old = token_of(
        secrets
            .get("ambient-runner-token-again")
            .await
            .expect("the token Secret"),
    );
    tokio::time::sleep(Duration::from_secs(4)).await; // past REFRESH_AFTER
    let _cordoned = Cordoned::all_nodes(cluster);
    annotate(
        &ns.client,
        &ns.name,
        "again",
        keys::DESIRED_PHASE_ANNOTATION,
        Some(keys::DESIRED_PHASE_RUNNING),
    )
    .await;
    let jobs: Api<Job> = ns.api();
    wait_until("the new run's Job", LIMIT, || async {
        jobs.get_opt("again-job").await.ok().flatten()
    })
    .await;
    let fresh = token_of(
        secrets
            .get("ambient-runner-token-again")
            .await
            .expect("the token Secret"),
    );
    assert_ne!(fresh, old, "refreshed before the Job was made");
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: fresh,
            ..Default::default()
        },
        ..Default::default()
    };
    let reviewed = Api::<TokenReview>::all(ns.client.clone())
        .create(&kube::api::PostParams::default(), &review)
        .await
        .expect("a TokenReview");
    let status = reviewed.status.expect("a review status");
    assert_eq!(status.authenticated, Some(true), "{status:?}");
    assert_eq!(
        status.user.and_then(|u| u.username).as_deref(),
        Some(format!("system:serviceaccount:{}:ambient-session-again", ns.name).as_str())
    );
}

pub async fn pod_stuck_terminating_is_force_deleted_after_its_grace_period_and_30s(
    cluster: &ClusterInfo,
) {
    let ns = TestNamespace::create(cluster, "stuck-pod").await;
    let env = [("SIM_OUTCOME", "hang"), ("SIM_IGNORE_DELETE", "true")];
    create(&ns.client, &ns.name, &session("sticky", &env)).await;
    wait_for_phase(&ns.client, &ns.name, "sticky", Phase::Running, LIMIT).await;
    annotate(
        &ns.client,
        &ns.name,
        "sticky",
        keys::DESIRED_PHASE_ANNOTATION,
        Some("Stopped"),
    )
    .await;
    let pods: Api<k8s_openapi::api::core::v1::Pod> = ns.api();
    wait_until("the pod to be terminating", LIMIT, || async {
        let list = pods.list(&kube::api::ListParams::default()).await.ok()?;
        list.items
            .iter()
            .any(|p| p.metadata.deletion_timestamp.is_some())
            .then_some(())
    })
    .await;
    // kwok never finishes this pod's termination: only the operator's force delete (30 s grace
    // period + 30 s) lets the session reach Stopped.
    wait_for_phase(
        &ns.client,
        &ns.name,
        "sticky",
        Phase::Stopped,
        Duration::from_secs(120),
    )
    .await;
    let left = pods
        .list(&kube::api::ListParams::default())
        .await
        .expect("listing pods");
    assert!(
        left.items.is_empty(),
        "{:?}",
        left.items
            .iter()
            .map(|p| &p.metadata.name)
            .collect::<Vec<_>>()
    );
}

/// The start timeout counts from when the operator first reaches a session, never from the
/// session's creation: a session that waited for the operator longer than the timeout (an
/// outage, a long start-up backlog; here its namespace became managed late) still waits the
/// whole timeout for its runner Secret (SPEC §5.1), and starts once the Secret is there.
pub async fn a_session_older_than_the_start_timeout_when_first_reached_still_starts(
    cluster: &ClusterInfo,
) {
    let ns = TestNamespace::create_with_labels(cluster, "late", &[]).await;
    create(
        &ns.client,
        &ns.name,
        &session("late", &[("SIM_OUTCOME", "hang")]),
    )
    .await;
    tokio::time::sleep(START_TIMEOUT + Duration::from_secs(2)).await;
    let api = ns.api::<agentic_crds::AgenticSession>();
    let untouched = api.get("late").await.expect("reading the session");
    assert_eq!(
        untouched.status.map(|s| s.phase).unwrap_or_default(),
        Phase::Pending,
        "not the operator's until its namespace is managed"
    );

    let managed = format!("{MANAGED_LABEL}=true");
    kubectl(cluster, &["label", "namespace", &ns.name, &managed]);
    let waiting = wait_until("SecretsReady=False", LIMIT, || async {
        let status = api.get("late").await.ok()?.status?;
        assert_ne!(
            status.phase,
            Phase::Failed,
            "failed on first sight: {status:?}"
        );
        status
            .conditions
            .into_iter()
            .find(|c| c.type_ == "SecretsReady" && c.status == agentic_crds::ConditionStatus::False)
    })
    .await;
    assert_eq!(waiting.reason.as_deref(), Some("RunnerSecretMissing"));

    ns.add_runner_credentials().await;
    let running = wait_until("Running", LIMIT, || async {
        let status = api.get("late").await.ok()?.status?;
        assert_ne!(status.phase, Phase::Failed, "failed: {status:?}");
        (status.phase == Phase::Running).then_some(status)
    })
    .await;
    assert!(running.start_time.is_some());
}
