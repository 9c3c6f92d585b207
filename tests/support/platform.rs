//! A cluster installed as the ambient-code platform installs itself (SPEC §7): its own CRDs and
//! its operator's part (`tests/fixtures/platform-*.yaml`, applied with `kubectl apply` as its
//! manifests are), then `deploy/overlays/platform` on top, as an administrator switching
//! operators does. The operator then runs as the platform's ServiceAccount, under the
//! platform's ClusterRole plus the overlay's.

use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::Value;

use super::ClusterInfo;
use super::rbac::{NAMESPACE, SERVICE_ACCOUNT, deploy_dir, kubectl};

/// The objects the platform owns, which switching operators must leave as they are:
/// `(kind, namespace or "", name)`.
pub const PLATFORM_OWNED: [(&str, &str, &str); 11] = [
    (
        "customresourcedefinition",
        "",
        "agenticsessions.vteam.ambient-code",
    ),
    (
        "customresourcedefinition",
        "",
        "projectsettings.vteam.ambient-code",
    ),
    ("namespace", "", NAMESPACE),
    ("serviceaccount", NAMESPACE, SERVICE_ACCOUNT),
    ("clusterrole", "", "agentic-operator"),
    ("clusterrolebinding", "", "agentic-operator"),
    ("clusterrole", "", "ambient-project-admin"),
    ("clusterrole", "", "ambient-project-edit"),
    ("clusterrole", "", "ambient-project-view"),
    ("configmap", NAMESPACE, "ambient-models"),
    ("configmap", NAMESPACE, "ambient-agent-registry"),
];

/// What the installation left: the platform's objects before and after the overlay (as the API
/// server returned them), and the operator's Deployment after it.
pub struct Installation {
    /// [`PLATFORM_OWNED`] before `deploy/overlays/platform`.
    pub before: Vec<Value>,
    /// [`PLATFORM_OWNED`] after it.
    pub after: Vec<Value>,
    /// The Deployment `agentic-operator` after it.
    pub deployment: Value,
    /// A kubeconfig authenticating as the platform's operator ServiceAccount.
    pub kubeconfig: PathBuf,
}

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn get(cluster: &ClusterInfo, kind: &str, namespace: &str, name: &str) -> Value {
    let mut args = vec!["get", kind, name, "-o", "json"];
    if !namespace.is_empty() {
        args.extend(["-n", namespace]);
    }
    serde_json::from_str(&kubectl(cluster, &args, None)).expect("kubectl prints JSON")
}

fn snapshot(cluster: &ClusterInfo) -> Vec<Value> {
    PLATFORM_OWNED
        .iter()
        .map(|(kind, namespace, name)| get(cluster, kind, namespace, name))
        .collect()
}

/// Installs the platform and switches it to this operator, once per test binary.
pub fn installation(cluster: &ClusterInfo) -> &'static Installation {
    static INSTALLED: OnceLock<Installation> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        kubectl(
            cluster,
            &["apply", "-f", &fixture("platform-crds.yaml")],
            None,
        );
        kubectl(
            cluster,
            &[
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                "crd/agenticsessions.vteam.ambient-code",
                "crd/projectsettings.vteam.ambient-code",
            ],
            None,
        );
        kubectl(
            cluster,
            &["apply", "-f", &fixture("platform-install.yaml")],
            None,
        );
        let before = snapshot(cluster);
        let overlay = deploy_dir().join("overlays/platform").display().to_string();
        kubectl(cluster, &["apply", "-k", &overlay], None);
        let after = snapshot(cluster);
        let deployment = get(cluster, "deployment", NAMESPACE, "agentic-operator");
        // What only the overlay gives the platform's ServiceAccount.
        super::rbac::wait_until_allowed(
            cluster,
            &[
                ["list", "secrets", "-A"],
                ["create", "events.events.k8s.io", "-A"],
                ["patch", "agenticsessions.vteam.ambient-code/status", "-A"],
            ],
        );
        let kubeconfig = cluster.state_dir.join("platform-operator-sa.kubeconfig");
        super::rbac::service_account_kubeconfig(cluster, NAMESPACE, SERVICE_ACCOUNT, &kubeconfig);
        Installation {
            before,
            after,
            deployment,
            kubeconfig,
        }
    })
}
