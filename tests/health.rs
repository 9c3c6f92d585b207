//! Liveness on the real control plane, with the real binary as a child process: a reconcile
//! that hangs is cancelled at `--reconcile-timeout`, counted as a failure and retried (under
//! both engines); `/healthz` fails (503, saying why) while a watch has been failing for longer
//! than `--watch-failure-threshold` (the operator behind a proxy that drops its connections)
//! or while a reconcile blocks its worker past the timeout, and recovers with them; `/readyz`
//! keeps meaning "caches synced".
//!
//! Stalls are injected through the `fault-injection` feature's annotations
//! (`src/engine/fault_injection.rs`), each released by a file the test creates.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use agentic_crds::{AgenticSession, Phase};
use support::operator::{create, session, wait_for_phase};
use support::process::{OperatorProcess, http_get, metric_sum};
use support::proxy::{ApiProxy, Mode};
use support::{ClusterInfo, TestNamespace, wait_until};

/// One test at a time: every operator reconciles every managed namespace.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const READY: Duration = Duration::from_secs(60);
const LIMIT: Duration = Duration::from_secs(60);
/// Every reconcile of the session awaits until the named file exists.
const HANG_ANNOTATION: &str = "ambient-code.io/test-hang-until";
/// A reconcile of the session blocks its worker thread until the named file exists.
const BLOCK_ANNOTATION: &str = "ambient-code.io/test-block-until";

async fn operator(
    cluster: &ClusterInfo,
    tag: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> OperatorProcess {
    let kubeconfig = support::rbac::operator_kubeconfig(cluster);
    operator_via(cluster, &kubeconfig, tag, args, env).await
}

/// [`operator`], talking to the API server through `kubeconfig`.
async fn operator_via(
    cluster: &ClusterInfo,
    kubeconfig: &std::path::Path,
    tag: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> OperatorProcess {
    let name = format!("health-{tag}-{}", std::process::id());
    let mut args = args.to_vec();
    args.extend(["--shutdown-grace-period", "2s"]);
    let mut operator =
        OperatorProcess::start_with_kubeconfig(cluster, kubeconfig, &name, &args, env);
    operator.wait_ready(READY).await;
    operator
}

/// Waits until `/healthz` answers `status`; returns the body.
async fn healthz_becomes(operator: &OperatorProcess, status: u16, limit: Duration) -> String {
    wait_until(&format!("/healthz to answer {status}"), limit, || async {
        let (got, body) = http_get(&operator.probe_address, "/healthz");
        (got == status).then_some(body)
    })
    .await
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

/// Every watch attempt fails (the proxy drops every connection): once that has lasted the
/// threshold (`WATCH_FAILURE_THRESHOLD`, 3 s here), `/healthz` answers 503 naming the watches,
/// while `/readyz` stays 200 (the caches did sync). When the API server is reachable again the
/// watches resume and `/healthz` answers 200; the operator reconciles as before.
#[tokio::test]
async fn healthz_fails_while_every_watch_attempt_fails_and_recovers_with_them() {
    let _serial = SERIAL.lock().await;
    let cluster = ClusterInfo::from_env();
    let ns = TestNamespace::create(&cluster, "health-watch").await;
    let proxy = ApiProxy::start(&cluster);
    let kubeconfig = proxy.kubeconfig(&cluster, "health-watch");
    let mut operator = operator_via(
        &cluster,
        &kubeconfig,
        "watch",
        &[],
        &[("WATCH_FAILURE_THRESHOLD", "3s")],
    )
    .await;
    assert_eq!(http_get(&operator.probe_address, "/healthz").0, 200);

    proxy.set(Mode::Refuse);
    let body = healthz_becomes(&operator, 503, LIMIT).await;
    println!("/healthz with every watch attempt failing: 503\n{body}");
    assert!(body.contains("watch"), "/healthz: {body}");
    assert_eq!(
        http_get(&operator.probe_address, "/readyz").0,
        200,
        "/readyz means caches synced, and they did"
    );
    assert!(operator.try_exit().is_none(), "the operator exited");

    proxy.set(Mode::Forward);
    // A watch retries with a backoff of up to about a minute.
    healthz_becomes(&operator, 200, Duration::from_secs(120)).await;
    create(
        &ns.client,
        &ns.name,
        &session("after", &[("SIM_RUN_FOR", "1s")]),
    )
    .await;
    wait_for_phase(&ns.client, &ns.name, "after", Phase::Completed, LIMIT).await;
    operator.sigterm();
    let status = operator.wait_exit(Duration::from_secs(20)).await;
    assert!(status.success(), "the operator exited with {status}");
}

/// A reconcile that blocks its worker thread cannot be cancelled: once it has run for longer
/// than the timeout (2 s here) plus the margin, `/healthz` answers 503 naming it; when it
/// returns, 200 again, and the session goes on.
#[tokio::test]
async fn healthz_fails_while_a_reconcile_blocks_its_worker_and_recovers_when_it_returns() {
    let _serial = SERIAL.lock().await;
    let cluster = ClusterInfo::from_env();
    let ns = TestNamespace::create(&cluster, "health-wedged").await;
    let release = release_file(&cluster, "wedged");
    let mut operator = operator(&cluster, "wedged", &[], &[("RECONCILE_TIMEOUT", "2s")]).await;
    create(
        &ns.client,
        &ns.name,
        &stalled_session("wedged", BLOCK_ANNOTATION, &release),
    )
    .await;
    wait_until("the worker to be blocked", LIMIT, || async {
        (!operator
            .logged("injected fault: blocking the worker thread")
            .is_empty())
        .then_some(())
    })
    .await;

    let body = healthz_becomes(&operator, 503, LIMIT).await;
    println!("/healthz with a blocked worker: 503\n{body}");
    assert!(body.contains("wedged"), "/healthz: {body}");
    assert_eq!(http_get(&operator.probe_address, "/readyz").0, 200);

    std::fs::write(&release, b"").expect("releasing the worker");
    healthz_becomes(&operator, 200, LIMIT).await;
    wait_for_phase(&ns.client, &ns.name, "wedged", Phase::Completed, LIMIT).await;
    operator.sigterm();
    let status = operator.wait_exit(Duration::from_secs(20)).await;
    assert!(status.success(), "the operator exited with {status}");
}
