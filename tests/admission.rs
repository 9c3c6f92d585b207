//! Bad input (TARGETS "Reliability: bad input"): every invalid object is either rejected by
//! `kubectl apply` with a message naming the problem, or admitted and ended Failed/InvalidSpec
//! naming the field; the operator stays healthy and keeps working afterwards.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use agentic_crds::Phase;
use support::operator::{
    Engine, create, operator, ready_message, ready_reason, session, wait_for_phase,
};
use support::{ClusterInfo, TestNamespace};

/// `kubectl apply -f -` of `manifest` in `namespace`: (succeeded, stderr).
fn kubectl_apply(cluster: &ClusterInfo, namespace: &str, manifest: &str) -> (bool, String) {
    let mut child = Command::new(cluster.bin_dir.join("kubectl"))
        .arg("--kubeconfig")
        .arg(&cluster.kubeconfig)
        .args(["apply", "--namespace", namespace, "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running kubectl");
    child
        .stdin
        .take()
        .expect("kubectl stdin")
        .write_all(manifest.as_bytes())
        .expect("writing the manifest");
    let output = child.wait_with_output().expect("kubectl finished");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn session_yaml(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: vteam.ambient-code/v1alpha1\nkind: AgenticSession\nmetadata:\n  name: {name}\nspec:\n{spec}\n"
    )
}

#[tokio::test]
async fn invalid_sessions_are_rejected_at_admission_with_a_clear_message() {
    let cluster = ClusterInfo::from_env();
    support::operator::install_crds(&cluster);
    let ns = TestNamespace::create(&cluster, "admission").await;
    let long_name = "a".repeat(56);
    let table: Vec<(&str, String, &str)> = vec![
        (
            "name too long for its Service",
            session_yaml(&long_name, "  timeout: 60"),
            "at most 55 characters",
        ),
        ("negative timeout", session_yaml("neg", "  timeout: -5"), "timeout"),
        ("zero timeout", session_yaml("zero", "  timeout: 0"), "timeout"),
        (
            "huge timeout",
            session_yaml("huge", "  timeout: 999999999"),
            "timeout",
        ),
        (
            "timeout of the wrong type",
            session_yaml("typed", "  timeout: soon"),
            "timeout",
        ),
        (
            "negative inactivity timeout",
            session_yaml("idle", "  inactivityTimeout: -1"),
            "inactivityTimeout",
        ),
        (
            "temperature out of range",
            session_yaml("hot", "  llmSettings:\n    temperature: 5"),
            "temperature",
        ),
        (
            "reserved environment variable",
            session_yaml("reserved", "  environmentVariables:\n    LLM_MODEL: other"),
            "LLM_MODEL",
        ),
        (
            "malformed environment variable name",
            session_yaml("badenv", "  environmentVariables:\n    1-BAD: x"),
            "environmentVariables",
        ),
        (
            "repo without url",
            session_yaml("nourl", "  repos:\n  - branch: main"),
            "url",
        ),
        (
            "unknown field",
            session_yaml("unknown", "  timeout: 60\n  bogusField: true"),
            "bogusField",
        ),
        (
            "ProjectSettings with another name",
            "apiVersion: vteam.ambient-code/v1alpha1\nkind: ProjectSettings\nmetadata:\n  name: other\nspec:\n  groupAccess: []\n".into(),
            "projectsettings",
        ),
        (
            "ProjectSettings with an unknown role",
            "apiVersion: vteam.ambient-code/v1alpha1\nkind: ProjectSettings\nmetadata:\n  name: projectsettings\nspec:\n  groupAccess:\n  - groupName: devs\n    role: owner\n".into(),
            "owner",
        ),
    ];
    // What the platform's backend names sessions, and its clones: admitted.
    let backend = "session-0b7e4f8c-2d1a-4c3e-9f6b-5a4d3c2b1a09";
    for name in [backend.to_string(), format!("{backend}-duplicate")] {
        let (succeeded, stderr) =
            kubectl_apply(&cluster, &ns.name, &session_yaml(&name, "  timeout: 300"));
        assert!(
            succeeded,
            "{name} ({} characters) refused: {stderr}",
            name.len()
        );
    }
    let mut admitted = Vec::new();
    for (what, manifest, expected) in &table {
        let (succeeded, stderr) = kubectl_apply(&cluster, &ns.name, manifest);
        if succeeded || !stderr.contains(expected) {
            admitted.push(format!("{what}: succeeded={succeeded}, stderr: {stderr}"));
        }
    }
    assert!(
        admitted.is_empty(),
        "not rejected with a message naming the problem:\n{}",
        admitted.join("\n")
    );
}

#[tokio::test]
async fn what_admission_cannot_check_ends_invalid_spec_and_the_operator_stays_healthy() {
    let cluster = ClusterInfo::from_env();
    let operator = operator(&cluster, Engine::Queue, &[]);
    let ns = TestNamespace::create(&cluster, "invalid-spec").await;
    let cases = [
        (
            "bad-branch",
            "  repos:\n  - url: https://example.com/a.git\n    branch: \"feature..x\"",
            "spec.repos[0].branch",
        ),
        (
            "bad-url",
            "  repos:\n  - url: \"ftp://example.com/a\"",
            "spec.repos[0].url",
        ),
        (
            "escaping-path",
            "  activeWorkflow:\n    gitUrl: https://example.com/w.git\n    path: ../../etc",
            "spec.activeWorkflow.path",
        ),
    ];
    for (name, spec, _) in &cases {
        let (succeeded, stderr) = kubectl_apply(&cluster, &ns.name, &session_yaml(name, spec));
        assert!(succeeded, "{name} should be admitted: {stderr}");
    }
    for (name, _, field) in &cases {
        let failed = wait_for_phase(
            &ns.client,
            &ns.name,
            name,
            Phase::Failed,
            Duration::from_secs(60),
        )
        .await;
        assert_eq!(
            ready_reason(&failed).as_deref(),
            Some("InvalidSpec"),
            "{name}"
        );
        let message = ready_message(&failed);
        assert!(message.starts_with(field), "{name}: {message}");
    }

    assert_eq!(operator.get("/readyz", true).0, 200, "operator still ready");
    create(
        &ns.client,
        &ns.name,
        &session("fine", &[("SIM_RUN_FOR", "500ms")]),
    )
    .await;
    wait_for_phase(
        &ns.client,
        &ns.name,
        "fine",
        Phase::Completed,
        Duration::from_secs(60),
    )
    .await;
}
