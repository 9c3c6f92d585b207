//! Graceful shutdown of the real binary on the real control plane: SIGTERM during a burst ends
//! the process with status 0 within `--shutdown-grace-period`, and nothing is lost (a successor
//! finishes every session, each with one Job); a second SIGTERM exits at once.

mod support;

use std::time::Duration;

use agentic_crds::{AgenticSession, Phase};
use futures::future::join_all;
use support::audit::JobLedger;
use support::operator::{create, session, wait_for_phase};
use support::process::{OperatorProcess, metric_sum};
use support::{ClusterInfo, TestNamespace, wait_until};
use tokio::time::Instant;

/// One test at a time: every operator reconciles every managed namespace, so two running side
/// by side would work on each other's sessions.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const READY: Duration = Duration::from_secs(60);
const LIMIT: Duration = Duration::from_secs(90);
const GRACE: Duration = Duration::from_secs(10);

fn burst(count: usize) -> Vec<AgenticSession> {
    (0..count)
        .map(|i| session(&format!("burst-{i}"), &[("SIM_RUN_FOR", "1s")]))
        .collect()
}

async fn start(cluster: &ClusterInfo, name: &str, extra: &[&str]) -> OperatorProcess {
    let grace = humantime::format_duration(GRACE).to_string();
    let mut args = vec!["--shutdown-grace-period", grace.as_str()];
    args.extend(extra);
    let name = format!("{name}-{}", std::process::id());
    let mut operator = OperatorProcess::start(cluster, &name, &args, &[]);
    operator.wait_ready(READY).await;
    operator
}

async fn wait_started(operator: &OperatorProcess) {
    wait_until("the operator to start on the burst", LIMIT, || async {
        let reconciles = metric_sum(
            &operator.metrics(),
            "ambient_reconcile_duration_seconds_count",
            &[],
        );
        (reconciles > 0.0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn sigterm_during_a_burst_exits_cleanly_and_a_successor_finishes_every_session() {
    let _serial = SERIAL.lock().await;
    let cluster = ClusterInfo::from_env();
    let ns = TestNamespace::create(&cluster, "shutdown-burst").await;
    let client = &ns.client;
    let jobs = JobLedger::start(&cluster, &ns.name);
    let mut first = start(&cluster, "shutdown-first", &[]).await;

    let sessions = burst(30);
    join_all(sessions.iter().map(|s| create(client, &ns.name, s))).await;
    wait_started(&first).await;
    let asked = Instant::now();
    first.sigterm();
    let status = first.wait_exit(GRACE + Duration::from_secs(5)).await;
    let took = asked.elapsed();
    println!("SIGTERM mid-burst: exited with {status} after {took:?} (grace {GRACE:?})");
    assert_eq!(status.code(), Some(0), "a graceful shutdown exits 0");
    assert!(
        took <= GRACE + Duration::from_secs(1),
        "exited {took:?} after SIGTERM; --shutdown-grace-period is {GRACE:?}"
    );
    assert!(
        !first.logged("work queue drained").is_empty(),
        "no drain report in {}",
        first.log_path.display()
    );

    let mut second = start(&cluster, "shutdown-second", &[]).await;
    join_all(sessions.iter().map(|s| {
        let name = s.metadata.name.as_deref().unwrap_or_default();
        wait_for_phase(client, &ns.name, name, Phase::Completed, LIMIT)
    }))
    .await;
    jobs.assert_each_job_created_once();
    assert_eq!(jobs.names().len(), sessions.len(), "one Job per session");
    second.sigterm();
    assert_eq!(second.wait_exit(GRACE * 2).await.code(), Some(0));
}

#[tokio::test]
async fn a_second_sigterm_exits_at_once() {
    let _serial = SERIAL.lock().await;
    let cluster = ClusterInfo::from_env();
    let ns = TestNamespace::create(&cluster, "shutdown-twice").await;
    // One worker: the drain of the burst lasts seconds, so the second signal lands during it.
    let mut operator = start(
        &cluster,
        "shutdown-twice",
        &["--max-concurrent-reconciles", "1"],
    )
    .await;
    let sessions = burst(30);
    join_all(sessions.iter().map(|s| create(&ns.client, &ns.name, s))).await;
    wait_started(&operator).await;
    operator.sigterm();
    tokio::time::sleep(Duration::from_millis(100)).await;
    operator.sigterm();
    let status = operator.wait_exit(GRACE).await;
    assert_eq!(
        status.code(),
        Some(130),
        "the second signal exits at once with 130 (0 means the drain finished first); log: {}",
        operator.log_path.display()
    );
    assert!(!operator.logged("second signal: exiting now").is_empty());
}
