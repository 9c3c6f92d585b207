//! The operator under test, run in-process (its own runtime on its own thread, so it lives as
//! long as the test binary and dies with it), plus helpers to drive and observe sessions.

use std::net::TcpListener;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use agentic_crds::{AgenticSession, AgenticSessionSpec, Phase};
use agentic_operator::config::{Args, Config};
use clap::Parser;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};

use super::ClusterInfo;

/// Which engine the operator runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// The default work-queue engine.
    Queue,
    /// `--legacy-watch`.
    Legacy,
}

/// A running in-process operator.
pub struct Operator {
    /// Where `/metrics` is served.
    pub metrics_address: String,
    /// Where `/healthz` and `/readyz` are served.
    pub probe_address: String,
}

static OPERATOR: OnceLock<Operator> = OnceLock::new();
/// The CRDs (and installation) this test binary's cluster has: one kind per binary.
static INSTALLED: OnceLock<Crds> = OnceLock::new();

/// The installation this test binary chose ([`operator_on`]), if any.
pub fn installed() -> Option<Crds> {
    INSTALLED.get().copied()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Which CRDs the cluster serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crds {
    /// This project's (generated, `deploy/crds`).
    Ours,
    /// The platform's own, with its operator's RBAC and deploy/overlays/platform on top
    /// ([`super::platform`]): swap only the image.
    Platform,
}

/// Installs the CRDs (idempotent) and starts the operator once per test binary with `engine`
/// and `extra_args`; waits until it reports ready.
pub fn operator(cluster: &ClusterInfo, engine: Engine, extra_args: &[&str]) -> &'static Operator {
    operator_on(cluster, Crds::Ours, engine, extra_args)
}

/// [`operator`] on the given CRDs.
pub fn operator_on(
    cluster: &ClusterInfo,
    crds: Crds,
    engine: Engine,
    extra_args: &[&str],
) -> &'static Operator {
    let chosen = *INSTALLED.get_or_init(|| crds);
    assert_eq!(chosen, crds, "one installation per test binary");
    OPERATOR.get_or_init(|| {
        let metrics_address = format!("127.0.0.1:{}", free_port());
        let probe_address = format!("127.0.0.1:{}", free_port());
        // As its own ServiceAccount under the shipped RBAC (deploy/, or the platform's plus
        // deploy/overlays/platform), not as admin.
        let kubeconfig = super::rbac::operator_kubeconfig(cluster)
            .display()
            .to_string();
        let mut argv = vec![
            "agentic-operator",
            "--kubeconfig",
            &kubeconfig,
            "--metrics-bind-address",
            &metrics_address,
            "--health-probe-bind-address",
            &probe_address,
            "--namespace",
            "default",
            "--shutdown-grace-period",
            "2s",
        ];
        if engine == Engine::Legacy {
            argv.push("--legacy-watch");
        }
        argv.extend_from_slice(extra_args);
        let args = Args::try_parse_from(argv).expect("valid operator arguments");
        let config = Config::from_args(args).expect("consistent operator arguments");
        // The in-process operator's log, human-readable on the test's output (with
        // `-- --nocapture`; RUST_LOG filters), for a test being debugged.
        if std::env::var_os("AGENTIC_TEST_OPERATOR_LOG").is_some() {
            agentic_operator::observability::logging::init_logging(true);
        }
        std::thread::Builder::new()
            .name("operator".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("operator runtime");
                if let Err(error) = runtime.block_on(agentic_operator::app::run(config)) {
                    panic!("the operator stopped: {error}");
                }
            })
            .expect("spawning the operator thread");
        let operator = Operator {
            metrics_address,
            probe_address,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while operator.get("/readyz", true).0 != 200 {
            assert!(Instant::now() < deadline, "operator not ready after 60s");
            std::thread::sleep(Duration::from_millis(100));
        }
        operator
    })
}

/// The operator this test binary started with [`operator`].
pub fn started() -> &'static Operator {
    OPERATOR
        .get()
        .expect("the test binary starts its operator first")
}

impl Operator {
    /// The value of `metric` summed over the series whose labels include `labels`.
    pub fn metric(&self, metric: &str, labels: &[(&str, &str)]) -> f64 {
        let (status, body) = self.get("/metrics", false);
        assert_eq!(status, 200, "GET /metrics");
        super::process::metric_sum(&body, metric, labels)
    }

    /// `GET path` on the probe (`probes = true`) or metrics address: (status, body).
    pub fn get(&self, path: &str, probes: bool) -> (u16, String) {
        let address = if probes {
            &self.probe_address
        } else {
            &self.metrics_address
        };
        super::process::http_get(address, path)
    }
}

/// Applies the generated CRDs with the cluster's kubectl and waits until they are served.
pub fn install_crds(cluster: &ClusterInfo) {
    let crds = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/crds");
    apply_crds(
        cluster,
        &[
            &format!("{crds}/agenticsessions.vteam.ambient-code.yaml"),
            &format!("{crds}/projectsettings.vteam.ambient-code.yaml"),
        ],
    );
}

fn apply_crds(cluster: &ClusterInfo, files: &[&str]) {
    let kubectl = cluster.bin_dir.join("kubectl");
    let mut command = Command::new(&kubectl);
    command.arg("--kubeconfig").arg(&cluster.kubeconfig).args([
        "apply",
        "--server-side",
        "--force-conflicts",
    ]);
    for file in files {
        command.args(["-f", file]);
    }
    let output = command.output().expect("running kubectl");
    assert!(
        output.status.success(),
        "applying the CRDs failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let output = Command::new(&kubectl)
        .arg("--kubeconfig")
        .arg(&cluster.kubeconfig)
        .args([
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/agenticsessions.vteam.ambient-code",
            "crd/projectsettings.vteam.ambient-code",
        ])
        .output()
        .expect("running kubectl");
    assert!(output.status.success(), "CRDs not established");
}

/// A session named `name` whose runner gets `env` (e.g. `SIM_OUTCOME=hang`).
pub fn session(name: &str, env: &[(&str, &str)]) -> AgenticSession {
    let mut spec = AgenticSessionSpec {
        initial_prompt: Some("test prompt".into()),
        ..Default::default()
    };
    spec.environment_variables = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut session = AgenticSession::new(name, spec);
    session.metadata = ObjectMeta {
        name: Some(name.into()),
        ..Default::default()
    };
    session
}

/// Creates `session` in `namespace`.
pub async fn create(client: &Client, namespace: &str, session: &AgenticSession) {
    Api::<AgenticSession>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), session)
        .await
        .unwrap_or_else(|e| panic!("creating session {:?}: {e}", session.metadata.name));
}

/// Waits until the session reaches `phase`; fails early if it ends in another final phase
/// while a final phase is expected, and on timeout reports the last status seen.
pub async fn wait_for_phase(
    client: &Client,
    namespace: &str,
    name: &str,
    phase: Phase,
    limit: Duration,
) -> AgenticSession {
    let api = Api::<AgenticSession>::namespaced(client.clone(), namespace);
    let deadline = tokio::time::Instant::now() + limit;
    let mut last = None;
    loop {
        if let Ok(session) = api.get(name).await {
            let current = session.status.as_ref().map(|s| s.phase).unwrap_or_default();
            if current == phase {
                return session;
            }
            if current.is_terminal() && phase.is_terminal() {
                panic!(
                    "session {name} ended {current}, expected {phase}: {:?}",
                    session.status
                );
            }
            last = session.status;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("session {name} not {phase} after {limit:?}; last status: {last:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sets (or with `None` removes) an annotation on the session.
pub async fn annotate(
    client: &Client,
    namespace: &str,
    name: &str,
    key: &str,
    value: Option<&str>,
) {
    let patch = serde_json::json!({"metadata": {"annotations": {key: value}}});
    Api::<AgenticSession>::namespaced(client.clone(), namespace)
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|e| panic!("annotating session {name}: {e}"));
}

/// The Ready condition's reason.
pub fn ready_reason(session: &AgenticSession) -> Option<String> {
    session
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")?
        .reason
        .as_deref()
        .map(str::to_owned)
}

/// The Ready condition's message: what a failure says (the platform's CRD prunes
/// `status.message`, so nothing the platform shows lives only there).
pub fn ready_message(session: &AgenticSession) -> String {
    session
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .and_then(|c| c.message.as_deref())
        .unwrap_or_default()
        .to_owned()
}

/// Waits until the runner has been told about the session's current generation
/// (`Reconciled=True` and `observedGeneration` caught up); returns the session then.
pub async fn wait_until_applied(client: &Client, namespace: &str, name: &str) -> AgenticSession {
    let api = Api::<AgenticSession>::namespaced(client.clone(), namespace);
    super::wait_until(
        &format!("{name}'s spec applied"),
        Duration::from_secs(60),
        || async {
            let s = api.get(name).await.ok()?;
            let status = s.status.as_ref()?;
            let reconciled = status.conditions.iter().any(|c| {
                c.type_ == "Reconciled" && c.status == agentic_crds::ConditionStatus::True
            });
            (status.observed_generation == s.metadata.generation && reconciled).then_some(s)
        },
    )
    .await
}

/// Merges `patch` into the namespace's ProjectSettings once the operator has made them.
pub async fn patch_project_settings(client: &Client, namespace: &str, patch: serde_json::Value) {
    let settings: Api<agentic_crds::ProjectSettings> = Api::namespaced(client.clone(), namespace);
    let name = agentic_crds::keys::PROJECT_SETTINGS_NAME;
    super::wait_until(
        "the operator to create ProjectSettings",
        Duration::from_secs(60),
        || async { settings.get_opt(name).await.ok().flatten() },
    )
    .await;
    settings
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patching ProjectSettings");
}

/// The value of the runner container's environment variable `name` in `job`.
pub fn runner_env(job: &k8s_openapi::api::batch::v1::Job, name: &str) -> Option<String> {
    job.spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == "ambient-code-runner")?
        .env
        .as_ref()?
        .iter()
        .find(|e| e.name == name)?
        .value
        .clone()
}
