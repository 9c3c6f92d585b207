//! The operator under its shipped RBAC: the ServiceAccount, ClusterRoles and bindings of
//! `deploy/` applied to the test cluster, a kubeconfig authenticating as that ServiceAccount
//! (TokenRequest-issued token), and the audit-log analysis that proves the RBAC is minimal.
//!
//! `cluster/up.sh` audits every request of the operator's ServiceAccount (Metadata level,
//! plus request bodies of writes) into `<state>/logs/audit.log`. [`required_permissions`] turns
//! that log into what the operator needed: each (group, resource, verb) it was allowed to use,
//! plus what RBAC and admission checked without a request of their own (the rules of each Role
//! it created, `bind` on the ClusterRole of each RoleBinding, `update` on the finalizers of each
//! owner it referenced with `blockOwnerDeletion`).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde::Deserialize as _;
use serde_json::Value;

use super::ClusterInfo;

/// The operator's namespace in `deploy/`.
pub const NAMESPACE: &str = "ambient-code";
/// The operator's ServiceAccount in `deploy/`.
pub const SERVICE_ACCOUNT: &str = "agentic-operator";
/// The user name the API server gives that ServiceAccount.
pub const USER: &str = "system:serviceaccount:ambient-code:agentic-operator";
/// Kinds of `deploy/base` that make up the operator's identity and permissions.
pub const RBAC_KINDS: [&str; 6] = [
    "Namespace",
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
];

/// `deploy/` in this repository.
pub fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

/// The file the Deployment's environment variable `name` points at, for the variables that
/// name a file mounted from a ConfigMap made of `deploy/base/config` (the agent registry and
/// the model manifest).
pub fn mounted_config_file(name: &str) -> Option<PathBuf> {
    let file = match name {
        "AGENT_REGISTRY_PATH" => "agent-registry.json",
        "MODELS_MANIFEST_PATH" => "models.json",
        _ => return None,
    };
    Some(deploy_dir().join("base/config").join(file))
}

/// Runs the cluster's kubectl as admin with `args` (and `stdin`); panics on failure.
pub fn kubectl(cluster: &ClusterInfo, args: &[&str], stdin: Option<&str>) -> String {
    let mut child = Command::new(cluster.bin_dir.join("kubectl"))
        .arg("--kubeconfig")
        .arg(&cluster.kubeconfig)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running kubectl");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("kubectl's stdin")
            .write_all(input.as_bytes())
            .expect("writing to kubectl");
    }
    let output = child.wait_with_output().expect("waiting for kubectl");
    assert!(
        output.status.success(),
        "kubectl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("kubectl prints UTF-8")
}

/// The documents `kubectl kustomize <dir>` renders, as JSON values.
pub fn render(cluster: &ClusterInfo, dir: &Path) -> Vec<Value> {
    let yaml = kubectl(cluster, &["kustomize", &dir.display().to_string()], None);
    serde_yaml::Deserializer::from_str(&yaml)
        .map(|doc| {
            let value = serde_yaml::Value::deserialize(doc).expect("kustomize renders YAML");
            serde_json::to_value(value).expect("rendered YAML is JSON-compatible")
        })
        .filter(|v: &Value| !v.is_null())
        .collect()
}

/// The RBAC objects the operator may run under: `deploy/base`'s (namespace, ServiceAccount,
/// roles, bindings) plus the member-Lease Role of `deploy/overlays/sharded` (which includes
/// base), since the suite runs sharded replicas too.
pub fn rbac_objects(cluster: &ClusterInfo) -> Vec<Value> {
    render(cluster, &deploy_dir().join("overlays/sharded"))
        .into_iter()
        .filter(|o| RBAC_KINDS.contains(&o["kind"].as_str().unwrap_or_default()))
        .collect()
}

/// Applies the shipped RBAC objects (server-side, idempotent) and waits until the authorizer
/// honours them, so the operator's first requests are not denied by a lagging cache. The CRDs
/// come first: the authorizer check asks about agenticsessions, which a cluster without them
/// does not serve (a test binary run on its own, on a fresh cluster).
pub fn apply_rbac(cluster: &ClusterInfo) {
    super::operator::install_crds(cluster);
    apply_objects(cluster, rbac_objects(cluster));
    wait_until_allowed(
        cluster,
        &[
            ["list", "agenticsessions.vteam.ambient-code", "-A"],
            ["create", "leases.coordination.k8s.io", "-n=ambient-code"],
            ["list", "leases.coordination.k8s.io", "-n=ambient-code"],
        ],
    );
}

/// Applies `objects` server-side as this suite's field manager (idempotent).
fn apply_objects(cluster: &ClusterInfo, objects: Vec<Value>) {
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": objects});
    kubectl(
        cluster,
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=agentic-tests",
            "-f",
            "-",
        ],
        Some(&list.to_string()),
    );
}

/// Waits (30 s at most) until the authorizer allows the operator's ServiceAccount each
/// `[verb, resource, scope]` (as `kubectl auth can-i` asks it): RBAC objects just applied take a
/// moment to be honoured.
pub fn wait_until_allowed(cluster: &ClusterInfo, checks: &[[&str; 3]]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    for check in checks {
        loop {
            let answer = Command::new(cluster.bin_dir.join("kubectl"))
                .arg("--kubeconfig")
                .arg(&cluster.kubeconfig)
                .args(["auth", "can-i", check[0], check[1], check[2]])
                .arg(format!("--as={USER}"))
                .output()
                .expect("running kubectl auth can-i");
            if String::from_utf8_lossy(&answer.stdout).trim() == "yes" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the operator's RBAC is not in force after 30s: can-i {check:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Applies the shipped RBAC once per test binary and returns a kubeconfig, in the cluster's
/// state directory, that authenticates as the operator's ServiceAccount with a token from a
/// TokenRequest (`kubectl create token`). On a platform installation
/// ([`super::platform`]): the platform's ServiceAccount, under the RBAC installed there.
pub fn operator_kubeconfig(cluster: &ClusterInfo) -> PathBuf {
    if super::operator::installed() == Some(super::operator::Crds::Platform) {
        return super::platform::installation(cluster).kubeconfig.clone();
    }
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        apply_rbac(cluster);
        let path = cluster.state_dir.join("operator-sa.kubeconfig");
        service_account_kubeconfig(cluster, NAMESPACE, SERVICE_ACCOUNT, &path);
        path
    })
    .clone()
}

/// A kubeconfig (in the cluster's state directory) for ServiceAccount `name` of the operator's
/// namespace, bound to copies of the operator's shipped roles from which `verbs` on `resource`
/// of API `group` were taken away: the operator's identity with one gap, as in a rollout whose
/// RBAC lags behind its code. Idempotent.
pub fn operator_kubeconfig_without(
    cluster: &ClusterInfo,
    name: &str,
    (group, resource): (&str, &str),
    verbs: &[&str],
) -> PathBuf {
    let objects = rbac_objects(cluster);
    let is_operator = |subject: &Value| {
        subject["kind"] == "ServiceAccount"
            && subject["name"] == SERVICE_ACCOUNT
            && subject["namespace"] == NAMESPACE
    };
    let mut copies = vec![serde_json::json!({
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": name, "namespace": NAMESPACE},
    })];
    for binding in objects.iter().filter(|o| {
        matches!(
            o["kind"].as_str(),
            Some("ClusterRoleBinding" | "RoleBinding")
        ) && o["subjects"]
            .as_array()
            .is_some_and(|subjects| subjects.iter().any(is_operator))
    }) {
        let role_kind = binding["roleRef"]["kind"].as_str().expect("a roleRef kind");
        let role_name = binding["roleRef"]["name"].as_str().expect("a roleRef name");
        let role_namespace = binding["metadata"]["namespace"].clone();
        let role = objects
            .iter()
            .find(|o| {
                o["kind"] == role_kind
                    && o["metadata"]["name"] == role_name
                    && (role_kind == "ClusterRole" || o["metadata"]["namespace"] == role_namespace)
            })
            .unwrap_or_else(|| panic!("{role_kind} {role_name} is not in deploy/"));
        let copy_name = format!("{role_name}-{name}");
        let mut role = role.clone();
        role["metadata"] = serde_json::json!({"name": copy_name});
        if role_kind == "Role" {
            role["metadata"]["namespace"] = role_namespace.clone();
        }
        let rules = role["rules"].as_array().cloned().unwrap_or_default();
        role["rules"] = Value::Array(
            rules
                .into_iter()
                .flat_map(|rule| without_verbs(rule, group, resource, verbs))
                .collect(),
        );
        let mut binding = binding.clone();
        binding["metadata"] = serde_json::json!({"name": format!("{}-{name}", binding["metadata"]["name"].as_str().unwrap_or_default())});
        if !role_namespace.is_null() {
            binding["metadata"]["namespace"] = role_namespace;
        }
        binding["roleRef"]["name"] = Value::String(copy_name);
        binding["subjects"] = serde_json::json!([
            {"kind": "ServiceAccount", "name": name, "namespace": NAMESPACE}
        ]);
        copies.push(role);
        copies.push(binding);
    }
    apply_objects(cluster, copies);
    let user = format!("--as=system:serviceaccount:{NAMESPACE}:{name}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while kubectl_can(
        cluster,
        &["create", "leases.coordination.k8s.io", "-n=ambient-code"],
        &user,
    ) != "yes"
    {
        assert!(
            Instant::now() < deadline,
            "the RBAC of {name} is not in force after 30s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let plural = if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    };
    for verb in verbs {
        assert_eq!(
            kubectl_can(cluster, &[verb, &plural, "-A"], &user),
            "no",
            "{name} may still {verb} {plural}"
        );
    }
    let path = cluster.state_dir.join(format!("{name}.kubeconfig"));
    service_account_kubeconfig(cluster, NAMESPACE, name, &path);
    path
}

/// `rule` without `verbs` on `resource` of `group` (split in two when it covers more).
fn without_verbs(rule: Value, group: &str, resource: &str, verbs: &[&str]) -> Vec<Value> {
    let listed = |key: &str, value: &str| {
        rule[key]
            .as_array()
            .is_some_and(|items| items.iter().any(|item| item == value))
    };
    if !listed("apiGroups", group) || !listed("resources", resource) {
        return vec![rule];
    }
    let mut others = rule.clone();
    others["resources"] = Value::Array(
        rule["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| *r != resource)
            .cloned()
            .collect(),
    );
    let mut narrowed = rule.clone();
    narrowed["apiGroups"] = serde_json::json!([group]);
    narrowed["resources"] = serde_json::json!([resource]);
    narrowed["verbs"] = Value::Array(
        rule["verbs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|v| !verbs.iter().any(|gone| *v == *gone))
            .cloned()
            .collect(),
    );
    [others, narrowed]
        .into_iter()
        .filter(|r| {
            r["resources"].as_array().is_some_and(|a| !a.is_empty())
                && r["verbs"].as_array().is_some_and(|a| !a.is_empty())
        })
        .collect()
}

/// What `kubectl auth can-i <args> <as>` answers (`yes` / `no`).
fn kubectl_can(cluster: &ClusterInfo, args: &[&str], as_user: &str) -> String {
    let answer = Command::new(cluster.bin_dir.join("kubectl"))
        .arg("--kubeconfig")
        .arg(&cluster.kubeconfig)
        .args(["auth", "can-i"])
        .args(args)
        .arg(as_user)
        .output()
        .expect("running kubectl auth can-i");
    String::from_utf8_lossy(&answer.stdout).trim().to_string()
}

/// Writes to `path` (atomically) a kubeconfig that authenticates as ServiceAccount
/// `namespace/name` with a token from a TokenRequest (`kubectl create token`, valid 6 hours),
/// and nothing else: no client certificate. Returns the token.
pub fn service_account_kubeconfig(
    cluster: &ClusterInfo,
    namespace: &str,
    name: &str,
    path: &Path,
) -> String {
    let token = kubectl(
        cluster,
        &[
            "create",
            "token",
            name,
            "--namespace",
            namespace,
            "--duration=6h",
        ],
        None,
    )
    .trim()
    .to_string();
    let admin: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(&cluster.kubeconfig).expect("reading the admin kubeconfig"),
    )
    .expect("the admin kubeconfig is YAML");
    let server = &admin["clusters"][0]["cluster"]["server"];
    let ca = &admin["clusters"][0]["cluster"]["certificate-authority-data"];
    let kubeconfig = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": {
            "server": server.as_str().expect("admin kubeconfig has a server"),
            "certificate-authority-data": ca.as_str().expect("admin kubeconfig has a CA"),
        }}],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": "local", "user": name}}],
        "current-context": name,
    });
    let mut staging = path.as_os_str().to_owned();
    staging.push(format!(".{}", std::process::id()));
    let staging = PathBuf::from(staging);
    std::fs::write(&staging, kubeconfig.to_string())
        .unwrap_or_else(|e| panic!("writing {}: {e}", staging.display()));
    std::fs::rename(&staging, path)
        .unwrap_or_else(|e| panic!("renaming to {}: {e}", path.display()));
    token
}

/// One permission: API group, resource (with `/subresource`), verb.
pub type Permission = (String, String, String);

/// Where a permission applies: cluster-wide (a ClusterRole) or in one namespace (a Role).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Every namespace and cluster-scoped objects.
    Cluster,
    /// One namespace.
    Namespace(String),
}

/// What the shipped roles bound to the operator grant, by scope. `resourceNames` are ignored:
/// the comparison is per (group, resource, verb).
pub fn granted_permissions(objects: &[Value]) -> BTreeMap<Scope, BTreeSet<Permission>> {
    let bound: BTreeSet<(String, String, Scope)> = objects
        .iter()
        .filter(|o| {
            matches!(
                o["kind"].as_str(),
                Some("ClusterRoleBinding" | "RoleBinding")
            )
        })
        .filter(|o| {
            o["subjects"].as_array().is_some_and(|subjects| {
                subjects.iter().any(|s| {
                    s["kind"] == "ServiceAccount"
                        && s["name"] == SERVICE_ACCOUNT
                        && s["namespace"] == NAMESPACE
                })
            })
        })
        .map(|o| {
            let scope = match o["metadata"]["namespace"].as_str() {
                Some(ns) if o["kind"] == "RoleBinding" => Scope::Namespace(ns.to_string()),
                _ => Scope::Cluster,
            };
            let role_ref = &o["roleRef"];
            (
                role_ref["kind"].as_str().unwrap_or_default().to_string(),
                role_ref["name"].as_str().unwrap_or_default().to_string(),
                scope,
            )
        })
        .collect();
    let mut granted: BTreeMap<Scope, BTreeSet<Permission>> = BTreeMap::new();
    for (kind, name, scope) in bound {
        let role = objects
            .iter()
            .find(|o| o["kind"] == kind.as_str() && o["metadata"]["name"] == name.as_str())
            .unwrap_or_else(|| panic!("{kind} {name} is bound to the operator but not shipped"));
        granted
            .entry(scope)
            .or_default()
            .extend(expand_rules(&role["rules"]));
    }
    granted
}

/// Every (group, resource, verb) a list of PolicyRules names.
fn expand_rules(rules: &Value) -> Vec<Permission> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    for rule in rules.as_array().into_iter().flatten() {
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                for verb in strings(&rule["verbs"]) {
                    out.push((group.clone(), resource.clone(), verb));
                }
            }
        }
    }
    out
}

/// What the audit log shows the operator needed, and what it was refused.
#[derive(Debug, Default)]
pub struct Usage {
    /// Permissions needed, by scope (a namespaced request is attributed to its namespace).
    pub needed: BTreeSet<(Permission, Option<String>)>,
    /// Why each permission was needed: one example request.
    pub example: BTreeMap<Permission, String>,
    /// Requests the authorizer (or the ownerReference admission check) refused.
    pub denied: Vec<String>,
    /// How many of the operator's requests were read.
    pub requests: usize,
}

/// Reads the audit log, keeping requests received at or after `since` (RFC 3339, optional).
pub fn required_permissions(audit_log: &Path, since: Option<&str>, plurals: &Plurals) -> Usage {
    let since = since.map(|s| {
        s.parse::<k8s_openapi::jiff::Timestamp>()
            .unwrap_or_else(|e| panic!("AGENTIC_AUDIT_SINCE={s} is not a timestamp: {e}"))
    });
    let events = super::audit::operator_requests(audit_log, since);
    let mut usage = Usage {
        requests: events.len(),
        ..Default::default()
    };
    // Authorizer denials, kept aside: one of a request that was allowed in the same namespace
    // is the authorizer warming up after an API server restart (the fault tests restart it, and
    // RBAC is served from an informer cache that starts empty), not a gap in the shipped RBAC.
    let mut forbidden: Vec<(Permission, Option<String>, String)> = Vec::new();
    for event in &events {
        let object = &event["objectRef"];
        let verb = event["verb"].as_str().unwrap_or_default();
        let code = event["responseStatus"]["code"].as_u64().unwrap_or(0);
        let uri = event["requestURI"].as_str().unwrap_or_default();
        let namespace = object["namespace"].as_str().map(str::to_string);
        let group = object["apiGroup"].as_str().unwrap_or_default().to_string();
        let mut resource = object["resource"].as_str().unwrap_or_default().to_string();
        if let Some(sub) = object["subresource"].as_str() {
            resource = format!("{resource}/{sub}");
        }
        let decision = event["annotations"]["authorization.k8s.io/decision"]
            .as_str()
            .unwrap_or_default();
        let message = event["responseStatus"]["message"]
            .as_str()
            .unwrap_or_default();
        if decision == "forbid" {
            forbidden.push((
                (group.clone(), resource.clone(), verb.to_string()),
                namespace.clone(),
                format!("{verb} {uri} ({code}): {message}"),
            ));
            continue;
        }
        if code == 403 && message.contains("blockOwnerDeletion") {
            usage
                .denied
                .push(format!("{verb} {uri} ({code}): {message}"));
            continue;
        }
        if decision != "allow" {
            continue;
        }
        // Discovery and version paths: the default system:discovery and
        // system:public-info-viewer roles grant them to every authenticated user.
        let path = uri.split('?').next().unwrap_or_default();
        if object.is_null()
            && (path == "/version"
                || path == "/api"
                || path == "/apis"
                || path.starts_with("/openapi"))
        {
            continue;
        }
        let mut need = |group: &str, resource: &str, verb: &str, why: String| {
            let permission = (group.to_string(), resource.to_string(), verb.to_string());
            usage.example.entry(permission.clone()).or_insert(why);
            usage.needed.insert((permission, namespace.clone()));
        };
        need(&group, &resource, verb, format!("{verb} {uri}"));
        // Server-side apply that creates the object is authorized as create too.
        if verb == "patch" && code == 201 {
            need(
                &group,
                &resource,
                "create",
                format!("apply (created) {uri}"),
            );
        }
        let body = &event["requestObject"];
        if !(200..300).contains(&code) || body.is_null() {
            continue;
        }
        // Creating a Role: RBAC lets nobody grant what it does not hold.
        if group == "rbac.authorization.k8s.io" && resource == "roles" {
            for (g, r, v) in expand_rules(&body["rules"]) {
                need(&g, &r, &v, format!("granted by the Role created at {uri}"));
            }
        }
        // Binding a ClusterRole: `bind` on it.
        if group == "rbac.authorization.k8s.io"
            && resource == "rolebindings"
            && body["roleRef"]["kind"] == "ClusterRole"
        {
            let role = body["roleRef"]["name"].as_str().unwrap_or_default();
            need(
                "rbac.authorization.k8s.io",
                "clusterroles",
                "bind",
                format!("RoleBinding to ClusterRole {role} at {uri}"),
            );
        }
        // blockOwnerDeletion: update on the owner's finalizers (OwnerReferencesPermissionEnforcement).
        for owner in body["metadata"]["ownerReferences"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if owner["blockOwnerDeletion"] != true {
                continue;
            }
            let api_version = owner["apiVersion"].as_str().unwrap_or_default();
            let owner_group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
            let kind = owner["kind"].as_str().unwrap_or_default();
            let plural = plurals
                .get(&(owner_group.to_string(), kind.to_string()))
                .unwrap_or_else(|| panic!("no plural known for owner kind {kind}"));
            need(
                owner_group,
                &format!("{plural}/finalizers"),
                "update",
                format!("{kind} owner with blockOwnerDeletion at {uri}"),
            );
        }
    }
    for (permission, namespace, denial) in forbidden {
        if !usage.needed.contains(&(permission, namespace)) {
            usage.denied.push(denial);
        }
    }
    usage
}

/// Resource plural by (group, kind), for the kinds the operator's objects are owned by.
pub type Plurals = BTreeMap<(String, String), String>;

/// Plurals of the project's CRDs (from `deploy/crds`).
pub fn crd_plurals(cluster: &ClusterInfo) -> Plurals {
    render(cluster, &deploy_dir().join("crds"))
        .iter()
        .map(|crd| {
            let spec = &crd["spec"];
            (
                (
                    spec["group"].as_str().unwrap_or_default().to_string(),
                    spec["names"]["kind"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                ),
                spec["names"]["plural"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect()
}

/// Compares grants with needs; returns the human-readable problems (empty: exact match).
pub fn compare(granted: &BTreeMap<Scope, BTreeSet<Permission>>, usage: &Usage) -> Vec<String> {
    let mut problems = Vec::new();
    for (scope, permissions) in granted {
        for permission in permissions {
            let used = usage.needed.iter().any(|(p, ns)| {
                p == permission
                    && match scope {
                        Scope::Cluster => true,
                        Scope::Namespace(granted_ns) => ns.as_deref() == Some(granted_ns),
                    }
            });
            if !used {
                let (g, r, v) = permission;
                let group = if g.is_empty() { "core" } else { g };
                problems.push(format!(
                    "granted but never needed during the suite: {v} {group}/{r} ({scope:?})"
                ));
            }
        }
    }
    let all_granted: BTreeSet<&Permission> = granted.values().flatten().collect();
    for (permission, _) in &usage.needed {
        if !all_granted.contains(permission) {
            let (g, r, v) = permission;
            problems.push(format!(
                "needed but not granted: {v} {g}/{r} (e.g. {})",
                usage.example.get(permission).map_or("", String::as_str)
            ));
        }
    }
    problems.extend(
        usage
            .denied
            .iter()
            .map(|d| format!("denied to the operator: {d}")),
    );
    problems.sort();
    problems.dedup();
    problems
}
