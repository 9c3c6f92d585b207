//! The monitoring artefacts of `deploy/monitoring/` as kustomize renders them: the
//! PrometheusRule's alerts and the Grafana dashboard's queries (from its ConfigMap), plus the
//! small PromQL text helpers the tests need (threshold stripping, metric selectors, template
//! labels).

use std::collections::BTreeMap;

use serde_json::Value;

use super::ClusterInfo;
use super::rbac::{deploy_dir, render};

/// Prefixes of every metric the operator exports (README "Metrics").
const METRIC_PREFIXES: [&str; 3] = ["ambient_", "workqueue_", "process_"];

/// The objects of `deploy/monitoring`.
pub fn monitoring_objects(cluster: &ClusterInfo) -> Vec<Value> {
    render(cluster, &deploy_dir().join("monitoring"))
}

/// The rendered PrometheusRule `agentic-operator`.
pub fn prometheus_rule(objects: &[Value]) -> &Value {
    objects
        .iter()
        .find(|o| o["kind"] == "PrometheusRule" && o["metadata"]["name"] == "agentic-operator")
        .expect("deploy/monitoring renders PrometheusRule agentic-operator")
}

/// One alerting rule.
#[derive(Debug, Clone)]
pub struct Alert {
    /// `alert:`.
    pub name: String,
    /// `expr:`, as written.
    pub expr: String,
    /// `annotations:`.
    pub annotations: BTreeMap<String, String>,
}

/// Every alerting rule of the PrometheusRule, in file order.
pub fn alerts(rule: &Value) -> Vec<Alert> {
    let groups = rule["spec"]["groups"].as_array().expect("spec.groups");
    groups
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules").iter())
        .filter_map(|r| {
            Some(Alert {
                name: r["alert"].as_str()?.to_string(),
                expr: r["expr"]
                    .as_str()
                    .expect("every rule has an expr")
                    .to_string(),
                annotations: r["annotations"]
                    .as_object()
                    .map(|a| {
                        a.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// One query of a dashboard panel.
#[derive(Debug, Clone)]
pub struct PanelQuery {
    /// The panel's title.
    pub panel: String,
    /// The PromQL, with Grafana variables unexpanded.
    pub expr: String,
    /// The legend format (`{{label}}` placeholders).
    pub legend: String,
}

/// The dashboard JSON shipped in the ConfigMap `agentic-operator-dashboard`.
pub fn dashboard(objects: &[Value]) -> Value {
    let config_map = objects
        .iter()
        .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == "agentic-operator-dashboard")
        .expect("deploy/monitoring renders ConfigMap agentic-operator-dashboard");
    let text = config_map["data"]["dashboard.json"]
        .as_str()
        .expect("the ConfigMap holds dashboard.json");
    serde_json::from_str(text).expect("dashboard.json is JSON")
}

/// Every query of every panel (rows included), in panel order.
pub fn dashboard_queries(dashboard: &Value) -> Vec<PanelQuery> {
    fn walk(panels: &Value, out: &mut Vec<PanelQuery>) {
        for panel in panels.as_array().into_iter().flatten() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                out.push(PanelQuery {
                    panel: panel["title"].as_str().unwrap_or_default().to_string(),
                    expr: target["expr"]
                        .as_str()
                        .expect("every target has an expr")
                        .to_string(),
                    legend: target["legendFormat"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                });
            }
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// `expr` without its final threshold comparison (`… > 0.1`, `… < 1`, `… == bool 0`), or
/// `None` when it does not end with one.
pub fn without_final_threshold(expr: &str) -> Option<&str> {
    let trimmed = expr.trim_end();
    let number_start = trimmed
        .rfind(|c: char| !(c.is_ascii_digit() || ".eE+-".contains(c)))
        .map_or(0, |i| i + 1);
    if number_start == trimmed.len() || trimmed[number_start..].parse::<f64>().is_err() {
        return None;
    }
    let mut rest = trimmed[..number_start].trim_end();
    rest = rest.strip_suffix("bool").map_or(rest, str::trim_end);
    for operator in [">=", "<=", "==", "!=", ">", "<"] {
        if let Some(left) = rest.strip_suffix(operator) {
            return Some(left.trim_end());
        }
    }
    None
}

/// The metric selectors of `expr` (name and `{…}` matchers, no range) for the operator's
/// metrics, deduplicated in order of appearance.
pub fn metric_selectors(expr: &str) -> Vec<String> {
    let bytes = expr.as_bytes();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
    let mut selectors: Vec<String> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if !is_ident(bytes[i]) || (i > 0 && is_ident(bytes[i - 1])) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && is_ident(bytes[i]) {
            i += 1;
        }
        let name = &expr[start..i];
        if !METRIC_PREFIXES.iter().any(|p| name.starts_with(p)) {
            continue;
        }
        let mut selector = name.to_string();
        if bytes.get(i) == Some(&b'{') {
            let end = expr[i..]
                .find('}')
                .map(|e| i + e + 1)
                .expect("closed matcher");
            selector.push_str(&expr[i..end]);
            i = end;
        }
        if !selectors.contains(&selector) {
            selectors.push(selector);
        }
    }
    selectors
}

/// Label names a template refers to: `{{name}}` (Grafana legends) and `$labels.name`
/// (Prometheus annotations).
pub fn template_labels(template: &str) -> Vec<String> {
    let mut labels = Vec::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for (i, _) in template.match_indices("$labels.") {
        labels.push(ident(&template[i + "$labels.".len()..]));
    }
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else { break };
        let inner = after[..close].trim();
        if !inner.starts_with('$') && !inner.is_empty() && ident(inner) == inner {
            labels.push(inner.to_string());
        }
        rest = &after[close + 2..];
    }
    labels.sort();
    labels.dedup();
    labels
}
