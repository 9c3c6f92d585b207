//! `deploy/monitoring/` checked by promtool (Debian's prometheus package ships it;
//! `cluster/install-deps.sh` installs it): the PrometheusRule's groups, exactly as kustomize
//! renders them, pass `promtool check rules`, and the unit tests in `alerts_test.yaml` pass
//! `promtool test rules`, with every alert both firing and staying silent there. Every alert
//! has its runbook paragraph in `deploy/README.md`. That every expression of the rules and the
//! dashboard returns data from a real Prometheus is tests/prometheus.rs.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::monitoring::{
    alerts, metric_selectors, monitoring_objects, prometheus_rule, template_labels,
    without_final_threshold,
};
use support::rbac::deploy_dir;
use support::{ClusterInfo, which};

/// The rule file name `alerts_test.yaml` refers to.
const RULE_FILE: &str = "agentic-operator.rules.yaml";

/// A directory holding the rendered rule groups and a copy of `alerts_test.yaml`; removed when
/// dropped unless the test failed.
struct RuleWorkspace {
    dir: PathBuf,
}

impl RuleWorkspace {
    fn new(cluster: &ClusterInfo) -> Self {
        let objects = monitoring_objects(cluster);
        let rule = prometheus_rule(&objects);
        let groups = serde_json::json!({ "groups": rule["spec"]["groups"] });
        let dir = cluster
            .state_dir
            .join(format!("promtool-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("creating the promtool directory");
        std::fs::write(
            dir.join(RULE_FILE),
            serde_yaml::to_string(&groups).expect("rule groups as YAML"),
        )
        .expect("writing the rule file");
        std::fs::copy(
            deploy_dir().join("monitoring/alerts_test.yaml"),
            dir.join("alerts_test.yaml"),
        )
        .expect("copying alerts_test.yaml");
        RuleWorkspace { dir }
    }
}

impl Drop for RuleWorkspace {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("promtool inputs kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Runs promtool in `dir`; panics with its output unless it succeeds.
fn promtool(dir: &Path, args: &[&str]) -> String {
    let binary = which("promtool").unwrap_or_else(|| {
        panic!("promtool is not on PATH: run cluster/install-deps.sh (Debian's prometheus package)")
    });
    let output = Command::new(binary)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "promtool {} failed:\n{text}",
        args.join(" ")
    );
    text
}

#[test]
fn the_rendered_rules_pass_promtool_check_and_their_unit_tests() {
    let cluster = ClusterInfo::from_env();
    let workspace = RuleWorkspace::new(&cluster);
    let checked = promtool(&workspace.dir, &["check", "rules", RULE_FILE]);
    let count = alerts(prometheus_rule(&monitoring_objects(&cluster))).len();
    assert!(
        checked.contains(&format!("SUCCESS: {count} rules found")),
        "{checked}"
    );
    let tested = promtool(&workspace.dir, &["test", "rules", "alerts_test.yaml"]);
    println!("{tested}");
}

#[test]
fn every_alert_fires_and_stays_silent_in_the_unit_tests() {
    let cluster = ClusterInfo::from_env();
    let names: BTreeSet<String> = alerts(prometheus_rule(&monitoring_objects(&cluster)))
        .into_iter()
        .map(|a| a.name)
        .collect();
    let text = std::fs::read_to_string(deploy_dir().join("monitoring/alerts_test.yaml"))
        .expect("reading alerts_test.yaml");
    let tests: serde_yaml::Value = serde_yaml::from_str(&text).expect("alerts_test.yaml is YAML");
    let mut fires = BTreeSet::new();
    let mut silent = BTreeSet::new();
    for case in tests["tests"]
        .as_sequence()
        .expect("tests")
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_sequence().into_iter().flatten())
    {
        let name = case["alertname"].as_str().expect("alertname").to_string();
        let expected = case["exp_alerts"].as_sequence().map_or(0, Vec::len);
        if expected > 0 {
            fires.insert(name);
        } else {
            silent.insert(name);
        }
    }
    let never_fired: Vec<_> = names.difference(&fires).collect();
    let never_silent: Vec<_> = names.difference(&silent).collect();
    assert!(
        never_fired.is_empty() && never_silent.is_empty(),
        "alerts without a firing case: {never_fired:?}; without a silent case: {never_silent:?}"
    );
    let unknown: Vec<_> = fires
        .union(&silent)
        .filter(|n| !names.contains(*n))
        .collect();
    assert!(
        unknown.is_empty(),
        "unit tests of unknown alerts: {unknown:?}"
    );
}

/// GitHub's anchor of a Markdown heading: lower case, spaces to `-`, punctuation dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn every_alert_links_to_its_runbook_paragraph_in_deploy_readme() {
    let cluster = ClusterInfo::from_env();
    let readme =
        std::fs::read_to_string(deploy_dir().join("README.md")).expect("reading deploy/README.md");
    let anchors: BTreeSet<String> = readme
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .map(|l| anchor(l.trim_start_matches('#')))
        .collect();
    for alert in alerts(prometheus_rule(&monitoring_objects(&cluster))) {
        let runbook = alert
            .annotations
            .get("runbook")
            .unwrap_or_else(|| panic!("{} has no runbook annotation", alert.name));
        let target = runbook
            .strip_prefix("deploy/README.md#")
            .unwrap_or_else(|| {
                panic!(
                    "{}: runbook {runbook} is not in deploy/README.md",
                    alert.name
                )
            });
        assert_eq!(
            target,
            anchor(&alert.name),
            "{}: runbook anchor",
            alert.name
        );
        assert!(
            anchors.contains(target),
            "{}: deploy/README.md has no heading for #{target}",
            alert.name
        );
    }
}

/// The ambient_* metrics' `namespace` is the session's: the scrape must not overwrite it with the
/// target's, or every per-namespace query of the README, the alerts and the dashboard breaks.
#[test]
fn the_service_monitor_keeps_the_session_namespace_label() {
    let cluster = ClusterInfo::from_env();
    let objects = monitoring_objects(&cluster);
    let monitor = objects
        .iter()
        .find(|o| o["kind"] == "ServiceMonitor")
        .expect("a ServiceMonitor");
    for endpoint in monitor["spec"]["endpoints"].as_array().expect("endpoints") {
        assert_eq!(endpoint["honorLabels"], true, "{endpoint}");
    }
}

#[test]
fn the_threshold_is_stripped_only_at_the_end() {
    assert_eq!(without_final_threshold("sum(x) > 0.1"), Some("sum(x)"));
    assert_eq!(
        without_final_threshold("(max(a) or vector(0)) < 1\n"),
        Some("(max(a) or vector(0))")
    );
    assert_eq!(without_final_threshold("a == bool 0"), Some("a"));
    assert_eq!(
        without_final_threshold("a * on (n) (b == bool 0 or c) > 0"),
        Some("a * on (n) (b == bool 0 or c)")
    );
    assert_eq!(without_final_threshold("rate(x[5m])"), None);
    assert_eq!(without_final_threshold("histogram_quantile(0.95, y)"), None);
}

#[test]
fn selectors_and_template_labels_are_found() {
    assert_eq!(
        metric_selectors(
            "max by (namespace) (ambient_sessions_in_phase{phase=\"Pending\"}) * \
             changes(process_start_time_seconds[30m]) and workqueue_depth{name=\"agenticsession\"} \
             and ambient_sessions_in_phase{phase=\"Pending\"} and rate(foo_total[1m])"
        ),
        [
            "ambient_sessions_in_phase{phase=\"Pending\"}",
            "process_start_time_seconds",
            "workqueue_depth{name=\"agenticsession\"}",
        ]
    );
    assert_eq!(
        template_labels("{{ $value }} in {{ $labels.namespace }} on {{$labels.instance}}"),
        ["instance", "namespace"]
    );
    assert_eq!(
        template_labels("{{from_phase}} → {{to_phase}} p95"),
        ["from_phase", "to_phase"]
    );
}
