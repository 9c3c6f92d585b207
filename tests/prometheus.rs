//! A real Prometheus scrapes the real operator binary during a run of sessions, and every
//! "Example PromQL Queries" entry of the seed README returns data (SPEC §4), as does every query
//! of the Grafana dashboard and every alert expression of the PrometheusRule in
//! `deploy/monitoring/`. Alerts are silent on a healthy operator, so each is queried without its
//! final threshold comparison (`… > 300` becomes `…`): that proves every series and label it
//! reads exists and is spelled right. On top, every metric selector of both must match series,
//! and every label a legend or an annotation names must be on the results. Prometheus is
//! Debian's `prometheus` package (`cluster/install-deps.sh` installs it); its binary is run here
//! as a child process, never as a system service.

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use agentic_crds::{AgenticSession, Phase};
use futures::future::join_all;
use support::monitoring::{
    alerts, dashboard, dashboard_queries, metric_selectors, monitoring_objects, prometheus_rule,
    template_labels, without_final_threshold,
};
use support::operator::{create, session, wait_for_phase};
use support::process::{OperatorProcess, free_port, http_get, metric_sum, url_encode};
use support::{ClusterInfo, JobCreationBlocked, TestNamespace, wait_until, which};

/// The scrape job's name, what the dashboard's `$job` variable selects.
const JOB: &str = "agentic-operator";

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
             scrape_configs:\n  - job_name: {JOB}\n    honor_labels: true\n    \
             static_configs:\n      - targets: ['{target}']\n",
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
        self.query(&format!("count_over_time(up{{job=\"{JOB}\"}}[1m])"))
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

/// Grafana's variables as the dashboard is used here: `$job` the scrape job, every session
/// namespace, and a 5-minute rate window.
fn expand_grafana_variables(expr: &str) -> String {
    let expanded = expr
        .replace("$__rate_interval", "5m")
        .replace("$namespace", ".*")
        .replace("$job", JOB);
    assert!(!expanded.contains('$'), "unknown variable in {expr}");
    expanded
}

/// Why `promql` does not prove its series: no data, or results lacking a label in `labels`.
fn problem(prometheus: &Prometheus, what: &str, promql: &str, labels: &[String]) -> Option<String> {
    let result = prometheus.query(promql);
    if !has_data(&result) {
        return Some(format!("{what}: {promql} -> {result:?}"));
    }
    let unlabelled: Vec<_> = labels
        .iter()
        .filter(|label| {
            result.iter().any(|r| {
                r["metric"][label.as_str()]
                    .as_str()
                    .is_none_or(str::is_empty)
            })
        })
        .collect();
    (!unlabelled.is_empty())
        .then(|| format!("{what}: {promql} -> results without labels {unlabelled:?}: {result:?}"))
}

/// Every selector of every expression matches series.
fn selector_problems(prometheus: &Prometheus, expressions: &[String]) -> Vec<String> {
    let mut selectors: Vec<String> = expressions
        .iter()
        .flat_map(|e| metric_selectors(e))
        .collect();
    selectors.sort();
    selectors.dedup();
    selectors
        .iter()
        .filter_map(|s| problem(prometheus, "selector", &format!("count({s})"), &[]))
        .collect()
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
async fn every_query_of_the_readme_dashboard_and_alerts_returns_data_from_a_real_prometheus() {
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

    // The series the operator exports in every state, not only those this run produced.
    let monitoring = monitoring_objects(&cluster);
    let mut problems = Vec::new();
    let mut expressions = Vec::new();
    for query in dashboard_queries(&dashboard(&monitoring)) {
        let promql = expand_grafana_variables(&query.expr);
        let what = format!("dashboard panel {:?}", query.panel);
        problems.extend(problem(
            &prometheus,
            &what,
            &promql,
            &template_labels(&query.legend),
        ));
        expressions.push(promql);
    }
    for alert in alerts(prometheus_rule(&monitoring)) {
        let data = without_final_threshold(&alert.expr).unwrap_or_else(|| {
            panic!(
                "alert {} does not end with a threshold comparison",
                alert.name
            )
        });
        let labels: Vec<String> = alert
            .annotations
            .values()
            .flat_map(|text| template_labels(text))
            .collect();
        problems.extend(problem(
            &prometheus,
            &format!("alert {}", alert.name),
            data,
            &labels,
        ));
        expressions.push(alert.expr.clone());
    }
    problems.extend(selector_problems(&prometheus, &expressions));
    assert!(
        problems.is_empty(),
        "dashboard or alert queries without data: {problems:#?}"
    );
    operator.sigterm();
    assert!(operator.wait_exit(Duration::from_secs(40)).await.success());
}
