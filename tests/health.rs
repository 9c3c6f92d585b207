//! Liveness on the real control plane, with the real binary as a child process: a reconcile
//! that hangs is cancelled at `--reconcile-timeout`, counted as a failure and retried (under
//! both engines).
//!
//! Stalls are injected through the `fault-injection` feature's annotations
//! (`src/engine/fault_injection.rs`), each released by a file the test creates.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use agentic_crds::{AgenticSession, Phase};
use support::operator::{create, session, wait_for_phase};
use support::process::{OperatorProcess, metric_sum};
use support::{ClusterInfo, TestNamespace, wait_until};

/// One test at a time: every operator reconciles every managed namespace.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const READY: Duration = Duration::from_secs(60);
const LIMIT: Duration = Duration::from_secs(60);
/// Every reconcile of the session awaits until the named file exists.
const HANG_ANNOTATION: &str = "ambient-code.io/test-hang-until";

async fn operator(
    cluster: &ClusterInfo,
    tag: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> OperatorProcess {
    let name = format!("health-{tag}-{}", std::process::id());
    let mut args = args.to_vec();
    args.extend(["--shutdown-grace-period", "2s"]);
    let mut operator = OperatorProcess::start(cluster, &name, &args, env);
    operator.wait_ready(READY).await;
    operator
}

/// A path in the cluster's state directory that does not exist yet; creating it releases a
/// stall.
fn release_file(cluster: &ClusterInfo, tag: &str) -> PathBuf {
    let path = cluster
        .state_dir
        .join(format!("release-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

/// A one-second session carrying `annotation: path`.
fn stalled_session(name: &str, annotation: &str, path: &std::path::Path) -> AgenticSession {
    let mut session = session(name, &[("SIM_RUN_FOR", "1s")]);
    session.metadata.annotations = Some(
        [(annotation.to_string(), path.display().to_string())]
            .into_iter()
            .collect(),
    );
    session
}

/// A session whose reconciles hang: each attempt is cancelled at the timeout (the flag comes
/// from its environment fallback, `RECONCILE_TIMEOUT`), counted under
/// `ambient_session_errors_total{error_type="timeout"}` and as a failed reconcile, and tried
/// again; once the hang is released the session runs to completion.
async fn a_hung_reconcile_is_cancelled_counted_and_retried(tag: &str, engine: &[&str]) {
    let _serial = SERIAL.lock().await;
    let cluster = ClusterInfo::from_env();
    let ns = TestNamespace::create(&cluster, &format!("health-timeout-{tag}")).await;
    let release = release_file(&cluster, &format!("timeout-{tag}"));
    let mut operator = operator(
        &cluster,
        &format!("timeout-{tag}"),
        engine,
        &[("RECONCILE_TIMEOUT", "1s")],
    )
    .await;
    create(
        &ns.client,
        &ns.name,
        &stalled_session("hung", HANG_ANNOTATION, &release),
    )
    .await;

    let timeouts = || {
        metric_sum(
            &operator.metrics(),
            "ambient_session_errors_total",
            &[("namespace", &ns.name), ("error_type", "timeout")],
        )
    };
    wait_until("two reconciles to time out", LIMIT, || async {
        (timeouts() >= 2.0).then_some(())
    })
    .await;
    let attempts = operator.logged("injected fault: reconcile hangs").len();
    assert!(
        attempts >= 2,
        "the timed-out reconcile was not retried ({attempts} attempts); log: {}",
        operator.log_path.display()
    );
    let failed = metric_sum(
        &operator.metrics(),
        "ambient_reconcile_duration_seconds_count",
        &[("phase", "Pending"), ("success", "false")],
    );
    assert!(
        failed >= 2.0,
        "timed-out reconciles are failed reconciles: {failed}"
    );
    assert!(
        operator
            .logged("injected fault: reconcile released")
            .is_empty(),
        "a hang ended without being released"
    );

    std::fs::write(&release, b"").expect("releasing the hang");
    wait_for_phase(&ns.client, &ns.name, "hung", Phase::Completed, LIMIT).await;
    operator.sigterm();
    let status = operator.wait_exit(Duration::from_secs(20)).await;
    assert!(status.success(), "the operator exited with {status}");
}

#[tokio::test]
async fn a_hung_reconcile_is_cancelled_at_the_timeout_counted_and_retried() {
    a_hung_reconcile_is_cancelled_counted_and_retried("queue", &[]).await;
}

#[tokio::test]
async fn a_hung_legacy_reconcile_is_cancelled_at_the_timeout_counted_and_retried() {
    a_hung_reconcile_is_cancelled_counted_and_retried("legacy", &["--legacy-watch"]).await;
}
