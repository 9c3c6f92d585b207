//! Graceful shutdown of the real binary on the real control plane: SIGTERM during a burst ends
//! the process with status 0 within `--shutdown-grace-period`, `/healthz` and `/metrics` answer
//! until it exits, and nothing is lost (a successor finishes every session, each with one Job);
//! a second SIGTERM exits at once.

mod support;

use std::time::Duration;

use agentic_crds::{AgenticSession, Phase};
use futures::future::join_all;
use support::audit::JobLedger;
use support::operator::{create, session, wait_for_phase};
use support::process::{OperatorProcess, http_get, metric_sum};
use support::{ClusterInfo, TestNamespace, wait_until};
use tokio::time::Instant;

/// One test at a time: every operator reconciles every managed namespace, so two running side
/// by side would work on each other's sessions.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const READY: Duration = Duration::from_secs(60);
const LIMIT: Duration = Duration::from_secs(90);
const GRACE: Duration = Duration::from_secs(10);
/// The session annotation that makes every reconcile of it await until the named file exists
/// (`src/engine/fault_injection.rs`, feature `fault-injection`).
const HANG_ANNOTATION: &str = "ambient-code.io/test-hang-until";

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

    // One more session whose reconcile hangs until the test releases it: the drain lasts until
    // then, however quick the rest of the burst is.
    let release = cluster
        .state_dir
        .join(format!("release-shutdown-{}", std::process::id()));
    let _ = std::fs::remove_file(&release);
    let mut slow = session("slow", &[("SIM_RUN_FOR", "1s")]);
    slow.metadata.annotations = Some(
        [(HANG_ANNOTATION.to_string(), release.display().to_string())]
            .into_iter()
            .collect(),
    );
    let mut sessions = burst(30);
    sessions.push(slow);
    join_all(sessions.iter().map(|s| create(client, &ns.name, s))).await;
    wait_started(&first).await;
    wait_until("the slow session's reconcile to hang", LIMIT, || async {
        (!first.logged("injected fault: reconcile hangs").is_empty()).then_some(())
    })
    .await;
    let asked = Instant::now();
    first.sigterm();
    wait_until("the operator to handle SIGTERM", LIMIT, || async {
        (!first
            .logged("shutdown requested: finishing in-flight work")
            .is_empty())
        .then_some(())
    })
    .await;
    // Draining (the slow reconcile is in flight): the admin endpoints still answer.
    let healthz = http_get(&first.probe_address, "/healthz");
    let metrics = http_get(&first.metrics_address, "/metrics");
    assert!(
        first.try_exit().is_none(),
        "the operator exited before the slow reconcile was released; log: {}",
        first.log_path.display()
    );
    assert_eq!(healthz.0, 200, "/healthz while draining: {healthz:?}");
    assert_eq!(metrics.0, 200, "/metrics while draining");
    assert!(
        metrics.1.contains("workqueue_depth"),
        "/metrics while draining: {}",
        metrics.1
    );
    std::fs::write(&release, b"").expect("releasing the slow reconcile");
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
        // A run claimed by the first operator without a Job yet waits out the claim grace.
        let limit = LIMIT + agentic_operator::handlers::session::phases::CLAIM_GRACE;
        wait_for_phase(client, &ns.name, name, Phase::Completed, limit)
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
    let mut operator = start(&cluster, "shutdown-twice", &[]).await;
    // A reconcile that hangs until released (never, here) holds the drain open, so the second
    // signal lands during it however quick the rest of the work is (the drain finishes only
    // the reconciles in flight, which can take milliseconds).
    let never = cluster
        .state_dir
        .join(format!("release-shutdown-twice-{}", std::process::id()));
    let _ = std::fs::remove_file(&never);
    let mut slow = session("slow", &[("SIM_RUN_FOR", "1s")]);
    slow.metadata.annotations = Some(
        [(HANG_ANNOTATION.to_string(), never.display().to_string())]
            .into_iter()
            .collect(),
    );
    create(&ns.client, &ns.name, &slow).await;
    wait_until("the slow session's reconcile to hang", LIMIT, || async {
        (!operator
            .logged("injected fault: reconcile hangs")
            .is_empty())
        .then_some(())
    })
    .await;
    operator.sigterm();
    wait_until("the operator to handle SIGTERM", LIMIT, || async {
        (!operator
            .logged("shutdown requested: finishing in-flight work")
            .is_empty())
        .then_some(())
    })
    .await;
    let asked = Instant::now();
    operator.sigterm();
    let status = operator.wait_exit(GRACE).await;
    let took = asked.elapsed();
    assert_eq!(
        status.code(),
        Some(130),
        "the second signal exits at once with 130; log: {}",
        operator.log_path.display()
    );
    assert!(
        took < GRACE / 2,
        "exited {took:?} after the second signal, not at once (grace {GRACE:?})"
    );
    assert!(!operator.logged("second signal: exiting now").is_empty());
}
