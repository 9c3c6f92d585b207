//! A real Prometheus scrapes the real operator binary during a run of sessions, and every
//! "Example PromQL Queries" entry of the seed README returns data (SPEC §4). Prometheus is
//! Debian's `prometheus` package (`cluster/install-deps.sh` installs it); its binary is run here
//! as a child process, never as a system service.

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use agentic_crds::{AgenticSession, Phase};
use futures::future::join_all;
use support::operator::{create, session, wait_for_phase};
use support::process::{OperatorProcess, free_port, http_get, metric_sum, url_encode};
use support::{ClusterInfo, JobCreationBlocked, TestNamespace, wait_until};

const LIMIT: Duration = Duration::from_secs(90);
const SCRAPE_INTERVAL: Duration = Duration::from_secs(1);

/// The seed README's "Example PromQL Queries", verbatim.
const README_QUERIES: [(&str, &str); 6] = [
    (
        "95th percentile startup time",
        "histogram_quantile(0.95, sum(rate(ambient_session_startup_duration_seconds_bucket[5m])) by (le, namespace))",
    ),
    (
        "Average startup time",
        "sum(rate(ambient_session_startup_duration_seconds_sum[5m])) / sum(rate(ambient_session_startup_duration_seconds_count[5m]))",
    ),
    (
        "Sessions started per hour",
        "sum(increase(ambient_sessions_total[1h])) by (namespace)",
    ),
    (
        "Phase transitions per minute",
        "sum(rate(ambient_session_phase_transitions_total[1m])) by (from_phase, to_phase)",
    ),
    (
        "Error rate",
        "sum(rate(ambient_session_errors_total[5m])) by (phase, error_type)",
    ),
    (
        "Reconcile success rate",
        "sum(rate(ambient_reconcile_duration_seconds_count{success=\"true\"}[5m])) / sum(rate(ambient_reconcile_duration_seconds_count[5m]))",
    ),
];

/// A Prometheus server scraping one target, killed when dropped.
struct Prometheus {
    address: String,
    dir: PathBuf,
    child: Child,
}

impl Prometheus {
    fn start(cluster: &ClusterInfo, target: &str) -> Self {
        let binary = which("prometheus").unwrap_or_else(|| {
            panic!(
                "the prometheus binary is not on PATH: run cluster/install-deps.sh (it installs \
                 Debian's prometheus package)"
            )
        });
        let dir = cluster
            .state_dir
            .join(format!("prometheus-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data")).expect("creating the Prometheus directory");
        let config = format!(
            "global:\n  scrape_interval: {s}s\n  evaluation_interval: {s}s\n\
             scrape_configs:\n  - job_name: agentic-operator\n    static_configs:\n      \
             - targets: ['{target}']\n",
            s = SCRAPE_INTERVAL.as_secs()
        );
        std::fs::write(dir.join("prometheus.yml"), config).expect("writing prometheus.yml");
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("creating its log");
        let address = format!("127.0.0.1:{}", free_port());
        let child = Command::new(binary)
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={address}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("duplicating the log handle"))
            .stderr(log)
            .spawn()
            .expect("starting prometheus");
        Prometheus {
            address,
            dir,
            child,
        }
    }

    /// Runs an instant query; the `data.result` array.
    fn query(&self, promql: &str) -> Vec<serde_json::Value> {
        let (status, body) = http_get(
            &self.address,
            &format!("/api/v1/query?query={}", url_encode(promql)),
        );
        assert_eq!(status, 200, "query {promql}: {body}");
        let answer: serde_json::Value = serde_json::from_str(&body).expect("Prometheus JSON");
        answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// How many scrapes of the operator Prometheus holds from the last minute.
    fn scrapes(&self) -> f64 {
        self.query("count_over_time(up{job=\"agentic-operator\"}[1m])")
            .first()
            .and_then(|r| r["value"][1].as_str()?.parse().ok())
            .unwrap_or(0.0)
    }

    /// Waits until at least `more` further scrapes have happened.
    async fn wait_scrapes(&self, more: f64) {
        let target = self.scrapes() + more;
        wait_until(&format!("{more} more scrapes"), LIMIT, || async {
            (self.scrapes() >= target).then_some(())
        })
        .await;
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "Prometheus logged to {}",
                self.dir.join("prometheus.log").display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn which(binary: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(binary))
            .find(|path| path.is_file())
    })
}

/// Every result of `promql` has a numeric (not NaN) value.
fn has_data(result: &[serde_json::Value]) -> bool {
    !result.is_empty()
        && result.iter().all(|r| {
            r["value"][1]
                .as_str()
                .and_then(|v| v.parse::<f64>().ok())
                .is_some_and(|v| !v.is_nan())
        })
}

async fn run_to(client: &kube::Client, namespace: &str, sessions: &[(AgenticSession, Phase)]) {
    join_all(sessions.iter().map(|(s, _)| create(client, namespace, s))).await;
    join_all(sessions.iter().map(|(s, phase)| {
        let name = s.metadata.name.as_deref().unwrap_or_default();
        wait_for_phase(client, namespace, name, *phase, LIMIT)
    }))
    .await;
}

#[tokio::test]
async fn every_promql_example_of_the_readme_returns_data_from_a_real_prometheus() {
    let cluster = ClusterInfo::from_env();
    let ns = TestNamespace::create(&cluster, "prometheus").await;
    let client = &ns.client;
    let name = format!("prometheus-{}", std::process::id());
    let mut operator = OperatorProcess::start(&cluster, &name, &[], &[]);
    operator.wait_ready(LIMIT).await;
    let prometheus = Prometheus::start(&cluster, &operator.metrics_address);
    wait_until("Prometheus to be ready", LIMIT, || async {
        (http_get(&prometheus.address, "/-/ready").0 == 200).then_some(())
    })
    .await;
    prometheus.wait_scrapes(2.0).await;

    // First wave: every series exists. rate() and increase() need a series to change between
    // two scrapes, so the second wave runs after a few more.
    let succeed = |name: &str| (session(name, &[("SIM_RUN_FOR", "1s")]), Phase::Completed);
    run_to(client, &ns.name, &[succeed("first-0"), succeed("first-1")]).await;
    prometheus.wait_scrapes(2.0).await;

    // Second wave, with Job creation refused by a quota for a while: reconcile errors.
    let blocked = JobCreationBlocked::in_namespace(&ns).await;
    let second = [
        succeed("second-0"),
        succeed("second-1"),
        succeed("second-2"),
        (
            session("second-fails", &[("SIM_OUTCOME", "fail")]),
            Phase::Failed,
        ),
    ];
    join_all(second.iter().map(|(s, _)| create(client, &ns.name, s))).await;
    wait_until("reconcile errors from the quota", LIMIT, || async {
        let errors = metric_sum(&operator.metrics(), "ambient_session_errors_total", &[]);
        (errors >= 3.0).then_some(())
    })
    .await;
    prometheus.wait_scrapes(2.0).await;
    blocked.lift().await;
    join_all(second.iter().map(|(s, phase)| {
        let name = s.metadata.name.as_deref().unwrap_or_default();
        wait_for_phase(client, &ns.name, name, *phase, LIMIT)
    }))
    .await;
    prometheus.wait_scrapes(2.0).await;

    let mut missing = Vec::new();
    for (title, promql) in README_QUERIES {
        let result = prometheus.query(promql);
        let values: Vec<String> = result
            .iter()
            .map(|r| format!("{} = {}", r["metric"], r["value"][1]))
            .collect();
        println!("{title}: {promql}\n    {values:?}");
        if !has_data(&result) {
            missing.push(format!("{title}: {promql} -> {result:?}"));
        }
    }
    assert!(
        missing.is_empty(),
        "README queries without data: {missing:#?}"
    );
    operator.sigterm();
    assert!(operator.wait_exit(Duration::from_secs(40)).await.success());
}
