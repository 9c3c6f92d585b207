//! Shared support for integration tests that run against the real local control plane.
//!
//! Tests find the cluster through `AGENTIC_CLUSTER_DIR`, a directory made by `cluster/up.sh`
//! (`make test` sets it). No cluster means a failing test with instructions, never a skip.
#![allow(dead_code)] // each test binary uses a different part of this module

pub mod audit;
pub mod backend;
pub mod fake_runner;
pub mod faults;
pub mod kueue_scenarios;
pub mod monitoring;
pub mod operator;
pub mod platform;
pub mod process;
pub mod proxy;
pub mod rbac;
pub mod scenarios;
pub mod timer_scenarios;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

/// Label every managed namespace carries (SPEC §1.3).
pub const MANAGED_LABEL: &str = "ambient-code.io/managed";

/// The facts `cluster/up.sh` records in `cluster.env`.
#[derive(Debug, Clone)]
pub struct ClusterInfo {
    /// Directory holding the cluster's state, logs and PIDs.
    pub state_dir: PathBuf,
    /// Admin kubeconfig (client certificate of `system:masters`).
    pub kubeconfig: PathBuf,
    /// `http://127.0.0.1:<port>` of etcd.
    pub etcd_endpoint: String,
    /// Directory holding the control-plane binaries.
    pub bin_dir: PathBuf,
    /// Whether Kueue runs on it (`CLUSTER_KUEUE=1 cluster/up.sh`).
    pub kueue: bool,
}

impl ClusterInfo {
    /// Reads `cluster.env` from `AGENTIC_CLUSTER_DIR`; panics with instructions when absent.
    pub fn from_env() -> Self {
        let Some(dir) = std::env::var_os("AGENTIC_CLUSTER_DIR") else {
            panic!(
                "integration tests need a running control plane: run `make test`, or start one \
                 with `make cluster-up` and set AGENTIC_CLUSTER_DIR=$PWD/.cluster"
            );
        };
        let state_dir = PathBuf::from(dir);
        let env_file = state_dir.join("cluster.env");
        let text = std::fs::read_to_string(&env_file).unwrap_or_else(|e| {
            panic!(
                "cannot read {}: {e}; is the cluster running (make cluster-up)?",
                env_file.display()
            )
        });
        let facts: BTreeMap<&str, &str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .collect();
        let fact = |k: &str| {
            facts
                .get(k)
                .unwrap_or_else(|| panic!("{} has no {k}", env_file.display()))
                .to_string()
        };
        ClusterInfo {
            state_dir,
            kubeconfig: PathBuf::from(fact("KUBECONFIG")),
            etcd_endpoint: fact("ETCD_ENDPOINT"),
            bin_dir: PathBuf::from(fact("BIN_DIR")),
            kueue: facts.get("KUEUE") == Some(&"1"),
        }
    }

    /// A client authenticated as the cluster admin.
    pub async fn admin_client(&self) -> Client {
        client_from_kubeconfig(&self.kubeconfig).await
    }
}

/// Builds a client from a kubeconfig file, failing loudly if the API server is unreachable.
pub async fn client_from_kubeconfig(path: &Path) -> Client {
    let kubeconfig = Kubeconfig::read_from(path)
        .unwrap_or_else(|e| panic!("cannot read kubeconfig {}: {e}", path.display()));
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("bad kubeconfig {}: {e}", path.display()));
    let client = Client::try_from(config).expect("building a kube client");
    if let Err(e) = client.apiserver_version().await {
        panic!(
            "the API server in {} is unreachable: {e}; is the cluster running?",
            path.display()
        );
    }
    client
}

/// A fresh namespace labelled `ambient-code.io/managed=true`, deleted when dropped
/// (set `AGENTIC_KEEP_NAMESPACES=1` to keep it for inspection).
pub struct TestNamespace {
    /// The namespace's name.
    pub name: String,
    /// Admin client.
    pub client: Client,
    kubeconfig: PathBuf,
    kubectl: PathBuf,
}

static NAMESPACE_COUNTER: AtomicU32 = AtomicU32::new(0);

impl TestNamespace {
    /// Creates a managed namespace named after `purpose`, as the platform sets one up (with the
    /// runners' model credentials, `ambient-runner-secrets`), and waits for its default
    /// ServiceAccount (pods cannot be created before it exists).
    pub async fn create(cluster: &ClusterInfo, purpose: &str) -> Self {
        let ns = Self::create_without_credentials(cluster, purpose).await;
        ns.add_runner_credentials().await;
        ns
    }

    /// A managed namespace without `ambient-runner-secrets` (its sessions wait for it).
    pub async fn create_without_credentials(cluster: &ClusterInfo, purpose: &str) -> Self {
        Self::create_with_labels(cluster, purpose, &[(MANAGED_LABEL, "true")]).await
    }

    /// Creates `ambient-runner-secrets` (a fake `ANTHROPIC_API_KEY`).
    pub async fn add_runner_credentials(&self) {
        let secret = k8s_openapi::api::core::v1::Secret {
            metadata: ObjectMeta {
                name: Some("ambient-runner-secrets".into()),
                ..Default::default()
            },
            string_data: Some([("ANTHROPIC_API_KEY".to_string(), "sk-test".to_string())].into()),
            ..Default::default()
        };
        self.api::<k8s_openapi::api::core::v1::Secret>()
            .create(&PostParams::default(), &secret)
            .await
            .unwrap_or_else(|e| panic!("creating ambient-runner-secrets in {}: {e}", self.name));
    }

    /// Creates a namespace with exactly the given labels.
    pub async fn create_with_labels(
        cluster: &ClusterInfo,
        purpose: &str,
        labels: &[(&str, &str)],
    ) -> Self {
        let client = cluster.admin_client().await;
        let unique = format!(
            "{}-{}",
            std::process::id(),
            NAMESPACE_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mut prefix: String = purpose
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect();
        prefix.truncate(62 - unique.len());
        let name = format!("{}-{unique}", prefix.trim_end_matches('-'));
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
        let sas = Api::<ServiceAccount>::namespaced(client.clone(), &name);
        wait_until(
            "the default ServiceAccount",
            Duration::from_secs(30),
            || {
                let sas = sas.clone();
                async move { sas.get_opt("default").await.ok().flatten() }
            },
        )
        .await;
        TestNamespace {
            name,
            client,
            kubeconfig: cluster.kubeconfig.clone(),
            kubectl: cluster.bin_dir.join("kubectl"),
        }
    }

    /// A namespaced API handle in this namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if std::env::var_os("AGENTIC_KEEP_NAMESPACES").is_some() {
            eprintln!("keeping namespace {}", self.name);
            return;
        }
        // Synchronous on purpose: Drop may run while a panic unwinds the test's runtime.
        let _ = Command::new(&self.kubectl)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args([
                "delete",
                "namespace",
                &self.name,
                "--wait=false",
                "--ignore-not-found",
            ])
            .output();
    }
}

/// The first `binary` on `PATH`.
pub fn which(binary: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(binary))
            .find(|path| path.is_file())
    })
}

/// Polls `probe` every 100 ms until it yields `Some`, or panics naming `what` after `limit`.
pub async fn wait_until<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (up to 60 s) until `name` no longer exists.
pub async fn wait_until_gone<K>(api: &Api<K>, name: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    wait_until(
        &format!("{name} to be deleted"),
        Duration::from_secs(60),
        || async { api.get_opt(name).await.ok()?.is_none().then_some(()) },
    )
    .await;
}

/// Compacts etcd at its current revision (all history before it is gone) and returns it.
/// Talks to etcd's JSON gateway on loopback.
pub async fn etcd_compact_now(endpoint: &str) -> i64 {
    let header = etcd_post(endpoint, "/v3/kv/range", r#"{"key":"AA==","limit":1}"#).await;
    let revision: i64 = header["header"]["revision"]
        .as_str()
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("etcd range answered without a revision: {header}"));
    let body = format!(r#"{{"revision":"{revision}","physical":true}}"#);
    etcd_post(endpoint, "/v3/kv/compaction", &body).await;
    revision
}

async fn etcd_post(endpoint: &str, path: &str, body: &str) -> serde_json::Value {
    use http_body_util::{BodyExt, Full};
    use hyper::body::Bytes;
    let authority = endpoint.trim_start_matches("http://").to_string();
    let stream = tokio::net::TcpStream::connect(&authority)
        .await
        .unwrap_or_else(|e| panic!("connecting to etcd at {endpoint}: {e}"));
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("HTTP handshake with etcd");
    tokio::spawn(connection);
    let request = hyper::Request::post(path)
        .header("host", authority)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("building an etcd request");
    let response = sender
        .send_request(request)
        .await
        .unwrap_or_else(|e| panic!("POST {path} to etcd: {e}"));
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("reading etcd's answer")
        .to_bytes();
    assert!(
        status.is_success(),
        "etcd {path} answered {status}: {}",
        String::from_utf8_lossy(&bytes)
    );
    serde_json::from_slice(&bytes).expect("etcd answers JSON")
}

/// A ResourceQuota allowing none of one kind of object in the namespace: its creation is
/// refused (403, exceeded quota) until [`CreationBlocked::lift`], a real transient error.
pub struct CreationBlocked {
    quotas: Api<k8s_openapi::api::core::v1::ResourceQuota>,
    name: &'static str,
}

/// The quota blocking Jobs (the operator's creates fail).
pub type JobCreationBlocked = CreationBlocked;

impl CreationBlocked {
    /// No Jobs: the operator's Job creation is refused.
    pub async fn in_namespace(ns: &TestNamespace) -> Self {
        Self::quota(ns, "no-jobs", "count/jobs.batch").await
    }

    /// No (non-terminal) pods: the Job controller cannot start a runner.
    pub async fn pods_in(ns: &TestNamespace) -> Self {
        Self::quota(ns, "no-pods", "pods").await
    }

    /// Creates the quota and waits until the quota controller has counted it (only then does
    /// admission enforce it).
    async fn quota(ns: &TestNamespace, name: &'static str, resource: &str) -> Self {
        use k8s_openapi::api::core::v1::{ResourceQuota, ResourceQuotaSpec};
        use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
        let quotas: Api<ResourceQuota> = ns.api();
        let quota = ResourceQuota {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(ResourceQuotaSpec {
                hard: Some([(resource.to_string(), Quantity("0".into()))].into()),
                ..Default::default()
            }),
            status: None,
        };
        quotas
            .create(&PostParams::default(), &quota)
            .await
            .expect("creating the quota");
        wait_until(
            "the quota to be counted",
            Duration::from_secs(60),
            || async { quotas.get(name).await.ok()?.status?.hard.map(|_| ()) },
        )
        .await;
        CreationBlocked { quotas, name }
    }

    /// Deletes the quota: creation works again.
    pub async fn lift(self) {
        self.quotas
            .delete(self.name, &kube::api::DeleteParams::default())
            .await
            .expect("deleting the quota");
    }
}

/// `(type, reason, note)` of the Events about the object `name` in the namespace.
pub async fn events_about(ns: &TestNamespace, name: &str) -> Vec<(String, String, String)> {
    let events: Api<k8s_openapi::api::events::v1::Event> = ns.api();
    events
        .list(&kube::api::ListParams::default())
        .await
        .map(|list| list.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .map(|e| {
            (
                e.type_.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.note.unwrap_or_default(),
            )
        })
        .collect()
}

/// Waits until an Event about `name` with `reason` exists; returns its note.
pub async fn wait_for_event(ns: &TestNamespace, name: &str, reason: &str) -> String {
    wait_until(
        &format!("an Event {reason} about {name}"),
        Duration::from_secs(60),
        || async {
            events_about(ns, name)
                .await
                .into_iter()
                .find(|(_, r, _)| r == reason)
                .map(|(_, _, note)| note)
        },
    )
    .await
}

/// A ValidatingAdmissionPolicy (and its binding) refusing the operator's ServiceAccount every
/// deletion of a Job in one namespace: a real admission failure for the operator to meet
/// (others, the tests among them, may still delete). Removed by [`JobDeletionRefused::lift`].
pub struct JobDeletionRefused {
    name: String,
    jobs: Api<k8s_openapi::api::batch::v1::Job>,
    /// The same Jobs as the operator's ServiceAccount sees them (to probe the refusal).
    operator_jobs: Api<k8s_openapi::api::batch::v1::Job>,
    kubectl: PathBuf,
    kubeconfig: PathBuf,
}

/// Name of the throwaway Job used to see the policy enforced.
const REFUSAL_PROBE: &str = "deletion-probe";

impl JobDeletionRefused {
    /// Installs the policy and waits until the API server enforces it (a server-side dry-run
    /// delete of a throwaway Job, as the operator, is refused).
    pub async fn in_namespace(cluster: &ClusterInfo, ns: &TestNamespace) -> Self {
        use k8s_openapi::api::batch::v1::{Job, JobSpec};
        use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
        let name = format!("refuse-job-deletion-{}", ns.name);
        let manifest = serde_json::json!({
            "apiVersion": "v1",
            "kind": "List",
            "items": [
                {
                    "apiVersion": "admissionregistration.k8s.io/v1",
                    "kind": "ValidatingAdmissionPolicy",
                    "metadata": {"name": name},
                    "spec": {
                        "failurePolicy": "Fail",
                        "matchConstraints": {"resourceRules": [{
                            "apiGroups": ["batch"], "apiVersions": ["*"],
                            "operations": ["DELETE"], "resources": ["jobs"],
                        }]},
                        "matchConditions": [{
                            "name": "the-operator",
                            "expression": format!("request.userInfo.username == '{}'", rbac::USER),
                        }],
                        "validations": [{
                            "expression": "false",
                            "message": format!("Job deletion refused by test policy {name}"),
                        }],
                    },
                },
                {
                    "apiVersion": "admissionregistration.k8s.io/v1",
                    "kind": "ValidatingAdmissionPolicyBinding",
                    "metadata": {"name": name},
                    "spec": {
                        "policyName": name,
                        "validationActions": ["Deny"],
                        "matchResources": {"namespaceSelector": {"matchLabels": {
                            "kubernetes.io/metadata.name": ns.name,
                        }}},
                    },
                },
            ],
        });
        let as_operator = client_from_kubeconfig(&rbac::operator_kubeconfig(cluster)).await;
        let refusal = JobDeletionRefused {
            name,
            jobs: ns.api(),
            operator_jobs: Api::namespaced(as_operator, &ns.name),
            kubectl: ns.kubectl.clone(),
            kubeconfig: ns.kubeconfig.clone(),
        };
        refusal.kubectl(&["apply", "-f", "-"], Some(&manifest.to_string()));
        let probe = Job {
            metadata: ObjectMeta {
                name: Some(REFUSAL_PROBE.into()),
                ..Default::default()
            },
            spec: Some(JobSpec {
                template: PodTemplateSpec {
                    metadata: None,
                    spec: Some(PodSpec {
                        restart_policy: Some("Never".into()),
                        containers: vec![Container {
                            name: "probe".into(),
                            image: Some("probe".into()),
                            env: Some(vec![k8s_openapi::api::core::v1::EnvVar {
                                name: "SIM_OUTCOME".into(),
                                value: Some("hang".into()),
                                value_from: None,
                            }]),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                },
                ..Default::default()
            }),
            status: None,
        };
        refusal
            .jobs
            .create(&PostParams::default(), &probe)
            .await
            .expect("creating the probe Job");
        let dry_run = kube::api::DeleteParams {
            dry_run: true,
            ..Default::default()
        };
        wait_until(
            "the Job deletion policy to be enforced",
            Duration::from_secs(30),
            || async {
                match refusal.operator_jobs.delete(REFUSAL_PROBE, &dry_run).await {
                    Err(kube::Error::Api(status)) if status.code == 403 || status.code == 422 => {
                        Some(())
                    }
                    _ => None,
                }
            },
        )
        .await;
        refusal
    }

    /// Removes the policy and its binding, then the probe Job.
    pub async fn lift(self) {
        self.kubectl(
            &[
                "delete",
                "validatingadmissionpolicybinding,validatingadmissionpolicy",
                &self.name,
                "--ignore-not-found",
            ],
            None,
        );
        wait_until(
            "Job deletion to work again",
            Duration::from_secs(30),
            || async {
                self.jobs
                    .delete(REFUSAL_PROBE, &kube::api::DeleteParams::background())
                    .await
                    .ok()
                    .map(drop)
            },
        )
        .await;
    }

    fn kubectl(&self, args: &[&str], stdin: Option<&str>) {
        use std::io::Write;
        let mut child = Command::new(&self.kubectl)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("running kubectl");
        let mut input = child.stdin.take().expect("kubectl stdin");
        if let Some(text) = stdin {
            input
                .write_all(text.as_bytes())
                .expect("writing to kubectl");
        }
        drop(input);
        let output = child.wait_with_output().expect("waiting for kubectl");
        assert!(
            output.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
