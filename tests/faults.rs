//! Faults on the real control plane (TARGETS "Reliability"): the API server restarted
//! mid-burst, etcd compaction forcing 410 Gone on the operator's watches, status conflicts from
//! a concurrent writer, the operator killed with -9 mid-burst and restarted, handler panics
//! (injected through the `fault-injection` feature's annotation, under both engines), and two
//! replicas racing without leader election.
//!
//! After each: every session ends in the right phase (none lost), and the API server's audit
//! log shows each session's Job created exactly once (no watch of the test's own that a fault
//! could blind).
//!
//! The operator is the real binary as a child process (its own caches, watches and workers).
//! The faults hit the whole cluster, so the tests run one at a time. Each uses
//! `FAULT_SESSIONS` sessions (default 24, a few seconds each; `make test-faults-scale` runs
//! the same tests with 1000).

mod support;

use std::time::Duration;

use agentic_crds::{AgenticSession, Phase};
use kube::Client;
use kube::api::{Patch, PatchParams};
use support::audit::JobLedger;
use support::faults::{Burst, ConcurrentWriter, restart_apiserver};
use support::operator::{create, session};
use support::process::{OperatorProcess, metric_sum};
use support::{ClusterInfo, TestNamespace, etcd_compact_now, wait_until};

/// One test at a time: API server restarts and compactions hit every test.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The session annotation that makes the first `n` reconciles panic
/// (`src/handlers/session/fault_injection.rs`, feature `fault-injection`).
const PANIC_ANNOTATION: &str = "ambient-code.io/test-panic";
/// Makes every reconcile of a session await until the named file exists
/// (`src/engine/fault_injection.rs`).
const HANG_ANNOTATION: &str = "ambient-code.io/test-hang-until";

fn sessions() -> usize {
    std::env::var("FAULT_SESSIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(24)
}

/// Generous: a CI machine with 2 cores runs etcd, the API server and the operator.
fn limit() -> Duration {
    limit_for(sessions())
}

/// The same allowance for waiting on `count` sessions (the restart scenarios wait on 1.5 times
/// `sessions()`: those created before the fault and after it).
fn limit_for(count: usize) -> Duration {
    Duration::from_secs(90) + Duration::from_millis(200) * count as u32
}

/// Waits until every session of `burst` is Completed, allowing [`limit_for`] its size.
async fn wait_all_completed(burst: &Burst, client: &Client) {
    burst
        .wait_all(client, Phase::Completed, limit_for(burst.names.len()))
        .await;
}

/// Runners request next to nothing so a scaled-up run fits on the fake nodes.
const RUNNER_FLAGS: [&str; 4] = [
    "--runner-cpu-request",
    "1m",
    "--runner-memory-request",
    "1Mi",
];

async fn operator(cluster: &ClusterInfo, tag: &str, extra: &[&str]) -> OperatorProcess {
    let name = format!("faults-{tag}-{}", std::process::id());
    let mut args: Vec<&str> = vec!["--shutdown-grace-period", "2s"];
    args.extend_from_slice(&RUNNER_FLAGS);
    args.extend_from_slice(extra);
    let mut op = OperatorProcess::start(cluster, &name, &args, &[]);
    op.wait_ready(Duration::from_secs(60)).await;
    op
}

fn assert_alive(op: &mut OperatorProcess) {
    if let Some(status) = op.try_exit() {
        panic!(
            "operator {} exited with {status}; log: {}",
            op.name,
            op.log_path.display()
        );
    }
}

/// Every session of the burst had its Job created exactly once (from the audit log; a create
/// the API server stored but was killed with -9 before answering names nothing there, and
/// accounts for one Job).
fn assert_jobs_single(ledger: &JobLedger, burst: &Burst) {
    ledger.assert_one_job_per_session(&burst.names);
}

async fn api_server_restart(engine: &[&str], tag: &str) {
    let _serial = SERIAL.lock().await;
    let cluster = ClusterInfo::from_env();
    let ns = TestNamespace::create(&cluster, &format!("fault-restart-{tag}")).await;
    let ledger = JobLedger::start(&cluster, &ns.name);
    let mut op = operator(&cluster, &format!("restart-{tag}"), engine).await;
    let n = sessions();
    let mut burst = Burst::create(&ns.client, &ns.name, "a", 0..n, &[]).await;
    burst.wait_started(&ns.client, n / 4, limit()).await;
    restart_apiserver(&cluster, "KILL");
    // Sessions created after the restart must be picked up by the re-established watches.
    burst.extend(Burst::create(&ns.client, &ns.name, "b", 0..n / 2, &[]).await);
    wait_all_completed(&burst, &ns.client).await;
    assert_alive(&mut op);
    assert_jobs_single(&ledger, &burst);
}

#[tokio::test]
async fn api_server_restarted_mid_burst_loses_no_session_queue_engine() {
    api_server_restart(&[], "queue").await;
}

#[tokio::test]
async fn api_server_restarted_mid_burst_loses_no_session_legacy_engine() {
    api_server_restart(&["--legacy-watch"], "legacy").await;
}

/// Compacting etcd at its current revision and restarting the API server (its watch cache
/// restarts at the current revision, and etcd has no older history to serve) answers the
/// operator's re-established watches with 410 Gone: it must relist and lose nothing.
#[tokio::test]
async fn etcd_compaction_forcing_410_on_watches_loses_no_session() {
    let _serial = SERIAL.lock().await;
    let cluster = ClusterInfo::from_env();
    let ns = TestNamespace::create(&cluster, "fault-compaction").await;
    let ledger = JobLedger::start(&cluster, &ns.name);
    let mut op = operator(&cluster, "compaction", &[]).await;
    let n = sessions();
    let mut burst = Burst::create(&ns.client, &ns.name, "a", 0..n, &[]).await;
    burst.wait_started(&ns.client, n / 4, limit()).await;
    etcd_compact_now(&cluster.etcd_endpoint).await;
    restart_apiserver(&cluster, "KILL");
    burst.extend(Burst::create(&ns.client, &ns.name, "b", 0..n / 2, &[]).await);
    wait_all_completed(&burst, &ns.client).await;
    assert_alive(&mut op);
    assert_jobs_single(&ledger, &burst);
    // 410 Gone arrives as `too old resource version: <asked> (<oldest>): Expired`.
    let gone: Vec<_> = op
        .logged("watch error; retrying")
        .into_iter()
        .filter(|r| {
            r["error"]
                .as_str()
                .is_some_and(|e| e.contains("too old resource version"))
        })
        .collect();
    assert!(
        !gone.is_empty(),
        "expected the operator's watches to be answered 410 Gone; log: {}",
        op.log_path.display()
    );
}

/// Another writer keeps changing every session (labels: no reconcile needed, but each write
/// voids the resourceVersion of the copy the operator reads) while the burst starts: status
/// writes conflict, are retried from fresh state, and every session still ends Completed.
/// (A writer that never stops, faster than a reconcile, would starve any optimistic writer; the
/// operator's retries back off exponentially meanwhile, as client-go's do.)
#[tokio::test]
async fn status_write_conflicts_from_a_concurrent_writer_are_retried() {
    let _serial = SERIAL.lock().await;
    let cluster = ClusterInfo::from_env();
    let ns = TestNamespace::create(&cluster, "fault-conflicts").await;
    let ledger = JobLedger::start(&cluster, &ns.name);
    let mut op = operator(&cluster, "conflicts", &[]).await;
    let n = sessions();
    // Whether a burst write races the writer is a matter of timing, so one race is made
    // certain: the first reconcile of `held` reads the cached copy, then waits (an injected
    // hang) while another writer changes the session; released, it writes status from the copy
    // it read, which the API server refuses (409), and retries from fresh state. `held` comes
    // first, so its reconcile does not wait behind the burst's.
    let release = cluster
        .state_dir
        .join(format!("release-conflicts-{}", std::process::id()));
    let _ = std::fs::remove_file(&release);
    let mut held = session("held", &[("SIM_RUN_FOR", "1s")]);
    held.metadata.annotations = Some(
        [(HANG_ANNOTATION.to_string(), release.display().to_string())]
            .into_iter()
            .collect(),
    );
    create(&ns.client, &ns.name, &held).await;
    wait_until("held's reconcile to hang", limit(), || async {
        (!op.logged("injected fault: reconcile hangs").is_empty()).then_some(())
    })
    .await;
    let mut burst = Burst::create(&ns.client, &ns.name, "a", 0..n, &[]).await;
    let writer = ConcurrentWriter::start(
        &ns.client,
        &ns.name,
        burst.names.clone(),
        Duration::from_millis(200),
    );
    burst.names.push("held".to_string());
    ns.api::<AgenticSession>()
        .patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(
                serde_json::json!({"metadata": {"labels": {"fault-test/held": "moved"}}}),
            ),
        )
        .await
        .expect("changing the held session");
    std::fs::write(&release, b"").expect("releasing the held reconcile");
    // Write until every session has started (or for 15 s), then let the retries finish.
    let _ = tokio::time::timeout(
        Duration::from_secs(15),
        burst.wait_started(&ns.client, n, limit()),
    )
    .await;
    let writes = writer.stop().await;
    wait_all_completed(&burst, &ns.client).await;
    assert_alive(&mut op);
    assert_jobs_single(&ledger, &burst);
    let conflicts = metric_sum(
        &op.metrics(),
        "ambient_session_errors_total",
        &[("error_type", "conflict")],
    );
    eprintln!("{writes} concurrent writes, {conflicts} status conflicts");
    assert!(
        conflicts > 0.0,
        "the concurrent writer ({writes} writes) caused no status conflict: the test proves nothing"
    );
}

/// `kill -9` while sessions are being created and reconciled; a new process takes over from
/// the cluster's state alone.
#[tokio::test]
async fn operator_killed_with_9_mid_burst_and_restarted_loses_no_session() {
    let _serial = SERIAL.lock().await;
    let cluster = ClusterInfo::from_env();
    let ns = TestNamespace::create(&cluster, "fault-kill9").await;
    let ledger = JobLedger::start(&cluster, &ns.name);
    let mut first = operator(&cluster, "kill9-first", &[]).await;
    let n = sessions();
    let mut burst = Burst::create(&ns.client, &ns.name, "a", 0..n, &[]).await;
    burst.wait_started(&ns.client, n / 3, limit()).await;
    first.kill9();
    burst.extend(Burst::create(&ns.client, &ns.name, "b", 0..n / 2, &[]).await);
    let mut second = operator(&cluster, "kill9-second", &[]).await;
    wait_all_completed(&burst, &ns.client).await;
    assert_alive(&mut second);
    assert_jobs_single(&ledger, &burst);
}

/// Half the sessions make their first 3 reconciles panic (the test-only hook): each panic is
/// a failed reconcile, retried; no worker or watch loop dies, so every session completes.
async fn handler_panics(engine: &[&str], tag: &str) {
    let _serial = SERIAL.lock().await;
    let cluster = ClusterInfo::from_env();
    let ns = TestNamespace::create(&cluster, &format!("fault-panic-{tag}")).await;
    let ledger = JobLedger::start(&cluster, &ns.name);
    let mut op = operator(&cluster, &format!("panic-{tag}"), engine).await;
    let n = sessions();
    let mut burst = Burst::create(
        &ns.client,
        &ns.name,
        "panics",
        0..n / 2,
        &[(PANIC_ANNOTATION, "3")],
    )
    .await;
    burst.extend(Burst::create(&ns.client, &ns.name, "fine", 0..n / 2, &[]).await);
    wait_all_completed(&burst, &ns.client).await;
    assert_alive(&mut op);
    assert_jobs_single(&ledger, &burst);
    let log = std::fs::read_to_string(&op.log_path).unwrap_or_default();
    let panics = log.matches("injected panic").count();
    assert!(
        panics >= 3 * (n / 2),
        "expected at least {} injected panics, saw {panics} (was {} built with --features \
         fault-injection? a build without it in the same target directory replaces it); log: {}",
        3 * (n / 2),
        env!("CARGO_BIN_EXE_agentic-operator"),
        op.log_path.display()
    );
}

#[tokio::test]
#[cfg_attr(
    not(feature = "fault-injection"),
    ignore = "needs --features agentic-operator/fault-injection (make test enables it)"
)]
async fn handler_panics_are_failed_reconciles_queue_engine() {
    handler_panics(&[], "queue").await;
}

#[tokio::test]
#[cfg_attr(
    not(feature = "fault-injection"),
    ignore = "needs --features agentic-operator/fault-injection (make test enables it)"
)]
async fn handler_panics_are_failed_reconciles_legacy_engine() {
    handler_panics(&["--legacy-watch"], "legacy").await;
}

/// Two replicas without leader election both reconcile every session: deterministic child
/// names and AlreadyExists keep each Job single, resourceVersion-guarded status writes keep
/// the phases right.
#[tokio::test]
async fn two_replicas_racing_without_leader_election_create_each_job_once() {
    let _serial = SERIAL.lock().await;
    let cluster = ClusterInfo::from_env();
    let ns = TestNamespace::create(&cluster, "fault-race").await;
    let ledger = JobLedger::start(&cluster, &ns.name);
    let mut one = operator(&cluster, "race-one", &[]).await;
    let mut two = operator(&cluster, "race-two", &[]).await;
    let n = sessions();
    let burst = Burst::create(&ns.client, &ns.name, "a", 0..n, &[]).await;
    wait_all_completed(&burst, &ns.client).await;
    assert_alive(&mut one);
    assert_alive(&mut two);
    assert_jobs_single(&ledger, &burst);
    for op in [&one, &two] {
        let transitions = op.logged("phase transition").len();
        eprintln!("replica {} made {transitions} phase transitions", op.name);
    }
}

/// Every node cordoned until dropped (the whole cluster: these tests run one at a time).
struct Cordoned<'a>(&'a ClusterInfo);

impl<'a> Cordoned<'a> {
    fn all_nodes(cluster: &'a ClusterInfo) -> Self {
        support::rbac::kubectl(cluster, &["cordon", "-l", "type=kwok"], None);
        Cordoned(cluster)
    }
}

impl Drop for Cordoned<'_> {
    fn drop(&mut self) {
        support::rbac::kubectl(self.0, &["uncordon", "-l", "type=kwok"], None);
    }
}

/// One agent per session: the operator is stopped (SIGSTOP) while its new run waits to be
/// scheduled, the runner then starts, its Job is deleted with `--cascade=orphan`, and the
/// operator resumes, still seeing the run Creating with no Job. At no moment are two runner
/// pods of the session alive: the lost run ends `JobLost` (its runner had started) and its
/// orphaned pod goes. (Before, the Job was made again beside the orphan: two agents.)
async fn a_lost_run_never_gets_a_second_runner(engine: &[&str], tag: &str) {
    use k8s_openapi::api::batch::v1::Job;
    use k8s_openapi::api::core::v1::Pod;
    use kube::Api;
    use kube::api::{DeleteParams, ListParams, PropagationPolicy};
    let _serial = SERIAL.lock().await;
    let cluster = ClusterInfo::from_env();
    let ns = TestNamespace::create(&cluster, &format!("two-agents-{tag}")).await;
    let op = operator(&cluster, &format!("two-agents-{tag}"), engine).await;
    let pods: Api<Pod> = ns.api();
    let jobs: Api<Job> = ns.api();
    let cordoned = Cordoned::all_nodes(&cluster);
    create(
        &ns.client,
        &ns.name,
        &session("single", &[("SIM_OUTCOME", "hang")]),
    )
    .await;
    wait_until("the run's Job", Duration::from_secs(60), || async {
        jobs.get_opt("single-job").await.ok().flatten()
    })
    .await;
    op.signal("STOP");
    drop(cordoned);
    // Count the session's live runner pods, all along, from here on.
    let most = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counting = {
        let (pods, most) = (pods.clone(), most.clone());
        tokio::spawn(async move {
            let selector = ListParams::default().labels("agentic-session=single");
            loop {
                if let Ok(list) = pods.list(&selector).await {
                    let live = list
                        .items
                        .iter()
                        .filter(|p| {
                            let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
                            !matches!(phase, Some("Succeeded" | "Failed"))
                        })
                        .count();
                    most.fetch_max(live, std::sync::atomic::Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let runner = wait_until("the runner running", Duration::from_secs(60), || async {
        let list = pods
            .list(&ListParams::default().labels("agentic-session=single"))
            .await
            .ok()?;
        list.items
            .into_iter()
            .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
    })
    .await;
    let orphaning = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Orphan),
        ..Default::default()
    };
    jobs.delete("single-job", &orphaning)
        .await
        .expect("deleting the Job, orphaning its pod");
    support::wait_until_gone(&jobs, "single-job").await;
    let seen: AgenticSession = ns.api().get("single").await.expect("the session");
    assert_eq!(
        seen.phase(),
        Phase::Creating,
        "the scenario needs the run unseen"
    );
    op.signal("CONT");
    // Whichever comes first: a second live runner (the failure), or the lost run's end.
    let sessions: Api<AgenticSession> = ns.api();
    let lost = wait_until("the lost run to end", Duration::from_secs(60), || async {
        let most = most.load(std::sync::atomic::Ordering::Relaxed);
        assert!(most <= 1, "{most} live runner pods of one session at once");
        let s = sessions.get("single").await.ok()?;
        (s.phase() == Phase::Failed).then_some(s)
    })
    .await;
    assert_eq!(
        support::operator::ready_reason(&lost).as_deref(),
        Some("JobLost")
    );
    let runner_name = runner.metadata.name.clone().expect("a name");
    support::wait_until_gone(&pods, &runner_name).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    counting.abort();
    let most = most.load(std::sync::atomic::Ordering::Relaxed);
    assert!(most <= 1, "{most} live runner pods of one session at once");
    assert!(
        jobs.get_opt("single-job").await.expect("get").is_none(),
        "no run made again"
    );
}

#[tokio::test]
async fn a_lost_run_never_gets_a_second_runner_queue_engine() {
    a_lost_run_never_gets_a_second_runner(&[], "queue").await;
}

#[tokio::test]
async fn a_lost_run_never_gets_a_second_runner_legacy_engine() {
    a_lost_run_never_gets_a_second_runner(&["--legacy-watch"], "legacy").await;
}
