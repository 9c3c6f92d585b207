//! `deploy/` against the real control plane: the kustomize trees apply, the Deployment's flags
//! are the operator's, the HA variant elects one leader under the shipped RBAC, and (at the end
//! of `make test`) the shipped RBAC grants exactly what the whole suite needed.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use agentic_crds::{AgenticSession, Phase, keys};
use agentic_operator::config::{Args, BindAddress, Config};
use clap::Parser;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod, Secret};
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::{Value, json};

use support::operator::{annotate, create, install_crds, session, wait_for_phase};
use support::rbac::{self, deploy_dir, kubectl, render};
use support::{ClusterInfo, TestNamespace, wait_until};

const LIMIT: Duration = Duration::from_secs(60);

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

fn operator_container(objects: &[Value]) -> &Value {
    &find(objects, "Deployment", "agentic-operator")["spec"]["template"]["spec"]["containers"][0]
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Namespaced objects can only be dry-run into a namespace that exists.
fn ensure_operator_namespace(cluster: &ClusterInfo) {
    let namespace = json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": rbac::NAMESPACE}});
    kubectl(
        cluster,
        &[
            "apply",
            "--server-side",
            "--field-manager=agentic-tests",
            "-f",
            "-",
        ],
        Some(&namespace.to_string()),
    );
}

#[test]
fn deploy_tree_and_ha_overlay_apply_to_a_real_api_server() {
    let cluster = ClusterInfo::from_env();
    ensure_operator_namespace(&cluster);
    for dir in ["", "overlays/ha", "overlays/sharded"] {
        let path = deploy_dir().join(dir).display().to_string();
        let out = kubectl(&cluster, &["apply", "--dry-run=server", "-k", &path], None);
        for expected in [
            "customresourcedefinition.apiextensions.k8s.io/agenticsessions.vteam.ambient-code",
            "clusterrole.rbac.authorization.k8s.io/agentic-operator",
            "clusterrole.rbac.authorization.k8s.io/ambient-project-edit",
            "role.rbac.authorization.k8s.io/agentic-operator-leader-election",
            "deployment.apps/agentic-operator",
            "service/agentic-operator-metrics",
        ] {
            assert!(
                out.contains(expected),
                "{path}: {expected} missing in\n{out}"
            );
        }
    }
}

/// The platform overlay brings only the operator's Deployment, metrics Service and its own
/// renamed RBAC: nothing a platform installation owns (tests/platform_crd.rs applies it over one).
#[test]
fn platform_overlay_applies_and_brings_nothing_the_platform_owns() {
    let cluster = ClusterInfo::from_env();
    ensure_operator_namespace(&cluster);
    let path = deploy_dir().join("overlays/platform").display().to_string();
    let out = kubectl(&cluster, &["apply", "--dry-run=server", "-k", &path], None);
    for expected in [
        "clusterrole.rbac.authorization.k8s.io/agentic-operator-rust",
        "clusterrolebinding.rbac.authorization.k8s.io/agentic-operator-rust",
        "deployment.apps/agentic-operator",
        "service/agentic-operator-metrics",
    ] {
        assert!(out.contains(expected), "{expected} missing in\n{out}");
    }
    for platforms in [
        "customresourcedefinition",
        "ambient-project-",
        "configmap/",
        "namespace/",
        "serviceaccount/",
        "clusterrole.rbac.authorization.k8s.io/agentic-operator ",
        "clusterrolebinding.rbac.authorization.k8s.io/agentic-operator ",
    ] {
        assert!(!out.contains(platforms), "{platforms} in\n{out}");
    }
}

#[tokio::test]
async fn samples_apply_once_the_crds_are_installed() {
    let cluster = ClusterInfo::from_env();
    install_crds(&cluster);
    let samples = render(&cluster, &deploy_dir().join("samples"));
    let kinds: Vec<&str> = samples.iter().filter_map(|o| o["kind"].as_str()).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "AgenticSession").count(),
        3,
        "{kinds:?}"
    );
    // The scheduled session runs the trigger as the backend's CronJobs do, with an environment
    // the trigger accepts.
    let cron = find(&samples, "CronJob", "schedule-nightly-report");
    assert_eq!(cron["spec"]["concurrencyPolicy"], "Forbid");
    let pod = &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], keys::SESSION_TRIGGER_NAME);
    let trigger = &pod["containers"][0];
    assert_eq!(
        strings(&trigger["command"]),
        ["./operator", agentic_operator::trigger::SUBCOMMAND]
    );
    let env: std::collections::BTreeMap<String, std::ffi::OsString> = trigger["env"]
        .as_array()
        .expect("the trigger's env")
        .iter()
        .map(|e| {
            let name = e["name"].as_str().expect("env name").to_string();
            (name, e["value"].as_str().expect("a plain value").into())
        })
        .collect();
    let config = agentic_operator::trigger::TriggerConfig::from_lookup(|n| env.get(n).cloned())
        .unwrap_or_else(|e| panic!("the sample's trigger environment is refused: {e}"));
    assert_eq!(config.namespace, cron["metadata"]["namespace"]);
    assert_eq!(config.scheduled_session_name, cron["metadata"]["name"]);
    // The sample Namespace (cluster-scoped) as is; the namespaced samples into a throwaway
    // namespace, since a dry run cannot create the sample one.
    let ns = TestNamespace::create(&cluster, "samples").await;
    let items: Vec<Value> = samples
        .into_iter()
        .map(|mut o| {
            if o["kind"] == "Namespace" {
                assert_eq!(o["metadata"]["labels"][support::MANAGED_LABEL], "true");
            } else {
                o["metadata"]["namespace"] = json!(ns.name);
            }
            o
        })
        .collect();
    let expected = items.len();
    let list = json!({"apiVersion": "v1", "kind": "List", "items": items});
    let out = kubectl(
        &cluster,
        &["apply", "--dry-run=server", "-f", "-"],
        Some(&list.to_string()),
    );
    // The ProjectSettings may already exist if an operator watches the cluster: configured.
    assert_eq!(out.matches("(server dry run)").count(), expected, "{out}");
    drop(ns);
}

#[test]
fn monitoring_component_selects_the_metrics_service() {
    let cluster = ClusterInfo::from_env();
    let base = render(&cluster, &deploy_dir().join("base"));
    let service = find(&base, "Service", "agentic-operator-metrics");
    let monitoring = render(&cluster, &deploy_dir().join("monitoring"));
    let monitor = find(&monitoring, "ServiceMonitor", "agentic-operator");
    assert_eq!(monitor["metadata"]["namespace"], rbac::NAMESPACE);
    let selector = monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("matchLabels");
    for (key, value) in selector {
        assert_eq!(
            &service["metadata"]["labels"][key], value,
            "label {key} of the ServiceMonitor's selector"
        );
    }
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(service["spec"]["ports"][0]["name"], "metrics");
    // The Service must reach the operator's pods.
    let pod_labels =
        &find(&base, "Deployment", "agentic-operator")["spec"]["template"]["metadata"]["labels"];
    for (key, value) in service["spec"]["selector"].as_object().expect("selector") {
        assert_eq!(&pod_labels[key], value, "Service selector label {key}");
    }
}

/// The Deployment's args and env parse as the operator's configuration, with the probes and
/// ports where the flags put them; the HA overlay differs only in replicas and leader election,
/// the sharded one in replicas and sharding.
#[test]
fn deployment_flags_are_the_operators_own() {
    let cluster = ClusterInfo::from_env();
    for (dir, replicas, leader_elect, sharding) in [
        ("base", 1, false, false),
        ("overlays/ha", 2, true, false),
        ("overlays/sharded", 3, false, true),
    ] {
        let objects = render(&cluster, &deploy_dir().join(dir));
        let deployment = find(&objects, "Deployment", "agentic-operator");
        assert_eq!(deployment["spec"]["replicas"], replicas, "{dir}");
        let container = operator_container(&objects);
        let args = strings(&container["args"]);
        let config = Config::from_args(
            Args::try_parse_from(std::iter::once("agentic-operator".to_string()).chain(args))
                .unwrap_or_else(|e| panic!("{dir}: the Deployment's args do not parse: {e}")),
        )
        .unwrap_or_else(|e| panic!("{dir}: {e}"));
        assert_eq!(config.args.leader_elect, leader_elect, "{dir}");
        assert_eq!(config.args.sharding, sharding, "{dir}");
        assert_eq!(
            config.args.metrics_bind_address,
            BindAddress::Listen("0.0.0.0:8080".parse().unwrap())
        );
        assert_eq!(
            config.args.health_probe_bind_address,
            BindAddress::Listen("0.0.0.0:8081".parse().unwrap())
        );
        let env: Vec<String> = container["env"]
            .as_array()
            .expect("env")
            .iter()
            .filter_map(|e| e["name"].as_str().map(str::to_string))
            .collect();
        for name in [
            "NAMESPACE",
            "POD_NAME",
            "BACKEND_NAMESPACE",
            "AMBIENT_CODE_RUNNER_IMAGE",
        ] {
            assert!(env.contains(&name.to_string()), "{dir}: env {name} missing");
        }
        let ports: Vec<(String, u64)> = container["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap_or_default().to_string(),
                    p["containerPort"].as_u64().unwrap_or_default(),
                )
            })
            .collect();
        assert!(
            ports.contains(&("metrics".into(), 8080)) && ports.contains(&("probes".into(), 8081))
        );
        assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
        assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
        let security = &container["securityContext"];
        assert_eq!(security["readOnlyRootFilesystem"], true);
        assert_eq!(security["allowPrivilegeEscalation"], false);
        assert_eq!(security["runAsNonRoot"], true);
        assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
        assert_eq!(
            deployment["spec"]["template"]["spec"]["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault"
        );
        assert_eq!(
            deployment["spec"]["template"]["spec"]["serviceAccountName"],
            rbac::SERVICE_ACCOUNT
        );
    }
}

/// One operator replica as a child process, run as the HA Deployment runs it: its args, its
/// ServiceAccount, NAMESPACE and POD_NAME; loopback admin ports. Killed when dropped.
struct Replica {
    name: String,
    child: Child,
    probes: String,
    log: std::path::PathBuf,
}

impl Replica {
    fn start(cluster: &ClusterInfo, name: &str, kubeconfig: &Path, extra: &[&str]) -> Self {
        let objects = render(cluster, &deploy_dir().join("overlays/ha"));
        let container = operator_container(&objects);
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .to_string()
        };
        let (metrics, probes) = (free(), free());
        // The Deployment's flags, with the addresses moved to loopback.
        let args: Vec<String> = strings(&container["args"])
            .into_iter()
            .map(|a| match a.split_once('=') {
                Some(("--metrics-bind-address", _)) => format!("--metrics-bind-address={metrics}"),
                Some(("--health-probe-bind-address", _)) => {
                    format!("--health-probe-bind-address={probes}")
                }
                _ => a,
            })
            .collect();
        let mut command = Command::new(env!("CARGO_BIN_EXE_agentic-operator"));
        for var in container["env"].as_array().expect("env") {
            let key = var["name"].as_str().expect("env name");
            let mounted = rbac::mounted_config_file(key);
            let value = match key {
                "NAMESPACE" => rbac::NAMESPACE.to_string(),
                "POD_NAME" => name.to_string(),
                // The file its ConfigMap is made of.
                _ if mounted.is_some() => mounted.unwrap_or_default().display().to_string(),
                // An optional Secret the test cluster does not have: unset, as in a pod.
                _ if var["valueFrom"]["secretKeyRef"]["optional"] == true => continue,
                _ => var["value"].as_str().expect("plain env value").to_string(),
            };
            command.env(key, value);
        }
        let log = cluster
            .state_dir
            .join("logs")
            .join(format!("deploy-replica-{name}-{}.log", std::process::id()));
        let file = std::fs::File::create(&log).expect("creating the replica's log");
        let child = command
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(&args)
            .args(extra)
            .env("DEV_MODE", "true")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log handle"))
            .stderr(file)
            .spawn()
            .expect("starting the operator binary");
        Replica {
            name: name.into(),
            child,
            probes,
            log,
        }
    }

    async fn wait_ready(&mut self) {
        let probes = self.probes.clone();
        let name = self.name.clone();
        let log = self.log.display().to_string();
        wait_until(&format!("replica {name} ready (log {log})"), LIMIT, || {
            let probes = probes.clone();
            async move { (http_status(&probes, "/readyz") == 200).then_some(()) }
        })
        .await;
        assert!(
            self.child
                .try_wait()
                .expect("polling the replica")
                .is_none(),
            "replica {name} exited; log {log}"
        );
    }

    fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success());
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http_status(address: &str, path: &str) -> u16 {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(address) else {
        return 0;
    };
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return 0;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

async fn lease_holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get_opt(keys::LEADER_LEASE_NAME)
        .await
        .ok()
        .flatten()?
        .spec?
        .holder_identity
        .filter(|h| !h.is_empty())
}

/// The HA Deployment as shipped, under the shipped RBAC: two replicas elect one leader; it
/// runs a session with a workspace volume, refreshes the runner token, hands the Lease over on
/// SIGTERM, and the new leader stops the session, force-deleting a pod stuck terminating.
#[tokio::test]
async fn ha_replicas_under_the_shipped_rbac_elect_a_leader_and_run_sessions() {
    let cluster = ClusterInfo::from_env();
    install_crds(&cluster);
    let kubeconfig = rbac::operator_kubeconfig(&cluster);
    let admin = cluster.admin_client().await;
    let ns = TestNamespace::create(&cluster, "deploy-ha").await;

    // A volume for the workspace claim to bind to (the controller-manager binds it).
    let pv_name = format!("deploy-ha-{}", std::process::id());
    let pv: PersistentVolume = serde_json::from_value(json!({
        "metadata": {"name": pv_name},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "",
            "persistentVolumeReclaimPolicy": "Delete",
            "hostPath": {"path": format!("/tmp/{pv_name}")},
            "claimRef": {"namespace": ns.name, "name": "ambient-workspace-stuck"},
        }
    }))
    .expect("a PersistentVolume");
    let pvs: Api<PersistentVolume> = Api::all(admin.clone());
    pvs.create(&PostParams::default(), &pv)
        .await
        .expect("creating the PersistentVolume");

    let extra = ["--workspace-size=1Gi", "--token-refresh-after=2s"];
    let mut first = Replica::start(&cluster, "replica-a", &kubeconfig, &extra);
    first.wait_ready().await;
    let leases: Api<Lease> = Api::namespaced(admin.clone(), rbac::NAMESPACE);
    let leader = wait_until("a leader", LIMIT, || lease_holder(&leases)).await;
    let mut second = Replica::start(&cluster, "replica-b", &kubeconfig, &extra);
    second.wait_ready().await;
    // A previous run's Lease may name a replica of that run until it expires.
    let leader = if leader == "replica-a" || leader == "replica-b" {
        leader
    } else {
        wait_until("this run's leader", LIMIT, || async {
            lease_holder(&leases)
                .await
                .filter(|h| h == "replica-a" || h == "replica-b")
        })
        .await
    };

    let env = [("SIM_OUTCOME", "hang"), ("SIM_IGNORE_DELETE", "true")];
    create(&ns.client, &ns.name, &session("stuck", &env)).await;
    wait_for_phase(&ns.client, &ns.name, "stuck", Phase::Running, LIMIT).await;
    let claim = ns
        .api::<PersistentVolumeClaim>()
        .get("ambient-workspace-stuck")
        .await
        .expect("the workspace claim");
    assert_eq!(
        claim.spec.and_then(|s| s.volume_name),
        Some(pv_name.clone())
    );

    // The runner token is refreshed (a patch of the Secret) while the session runs.
    let secrets = ns.api::<Secret>();
    let refreshed_at = |s: Secret| {
        s.metadata
            .annotations
            .and_then(|a| a.get(keys::TOKEN_REFRESHED_AT_ANNOTATION).cloned())
    };
    let before = refreshed_at(
        secrets
            .get("ambient-runner-token-stuck")
            .await
            .expect("token Secret"),
    );
    wait_until("a token refresh", LIMIT, || async {
        let now = refreshed_at(secrets.get("ambient-runner-token-stuck").await.ok()?);
        (now != before).then_some(())
    })
    .await;

    // SIGTERM the leader: it releases the Lease and the standby takes over.
    let (leaving, mut staying) = if leader == "replica-a" {
        (first, second)
    } else {
        (second, first)
    };
    leaving.sigterm();
    let new_leader = wait_until("the standby to take over", LIMIT, || async {
        lease_holder(&leases).await.filter(|h| *h == staying.name)
    })
    .await;
    assert_ne!(new_leader, leader);
    drop(leaving);
    staying.wait_ready().await;

    // The new leader stops the session; its pod ignores deletion and is force-deleted after
    // its grace period plus 30s.
    annotate(
        &ns.client,
        &ns.name,
        "stuck",
        keys::DESIRED_PHASE_ANNOTATION,
        Some("Stopped"),
    )
    .await;
    wait_for_phase(
        &ns.client,
        &ns.name,
        "stuck",
        Phase::Stopped,
        Duration::from_secs(150),
    )
    .await;
    let pods = ns
        .api::<Pod>()
        .list(&Default::default())
        .await
        .expect("pods");
    assert!(pods.items.is_empty(), "pods left: {}", pods.items.len());

    ns.api::<AgenticSession>()
        .delete("stuck", &DeleteParams::background())
        .await
        .expect("deleting the session");
    drop(staying);
    drop(ns);
    let _ = pvs.delete(&pv_name, &DeleteParams::default()).await;
}

/// Run by `make test` after the whole suite (`tests/suite.sh`), which has run the operator
/// under its ServiceAccount in every lifecycle scenario of both engines and in the HA test
/// above: every verb the shipped RBAC grants must have been needed, and nothing denied.
/// `AGENTIC_AUDIT_SINCE` (RFC 3339) limits the audit log to that run.
#[test]
#[ignore = "needs the audit log of a whole suite run; `make test` runs it last"]
fn shipped_rbac_grants_exactly_what_the_suite_needed() {
    let cluster = ClusterInfo::from_env();
    let since = std::env::var("AGENTIC_AUDIT_SINCE").ok();
    let audit_log = cluster.state_dir.join("logs").join("audit.log");
    let usage =
        rbac::required_permissions(&audit_log, since.as_deref(), &rbac::crd_plurals(&cluster));
    assert!(
        usage.requests > 0,
        "no request of {} in {} since {since:?}: was the suite run against this cluster?",
        rbac::USER,
        audit_log.display()
    );
    let granted = rbac::granted_permissions(&rbac::rbac_objects(&cluster));
    let problems = rbac::compare(&granted, &usage);
    eprintln!(
        "{} requests of the operator audited; needed (group, resource, verb):",
        usage.requests
    );
    for (permission, why) in &usage.example {
        eprintln!("  {permission:?}: e.g. {why}");
    }
    assert!(
        problems.is_empty(),
        "the shipped RBAC (deploy/base/rbac.yaml) does not match what the operator needed:\n  {}",
        problems.join("\n  ")
    );
}

/// Run by `make test` after the whole suite (`tests/suite.sh`): every list and watch of Secrets
/// the operator made carried a label or field selector, so it only ever received the Secrets it
/// names. RBAC cannot say this (a ClusterRole grants Secrets cluster-wide or not at all); the
/// audit log of the whole run shows it.
#[test]
#[ignore = "needs the audit log of a whole suite run; `make test` runs it last"]
fn the_operator_only_ever_lists_and_watches_secrets_by_selector() {
    let cluster = ClusterInfo::from_env();
    let since = std::env::var("AGENTIC_AUDIT_SINCE")
        .ok()
        .map(|s| s.parse().expect("AGENTIC_AUDIT_SINCE is a timestamp"));
    let requests = support::audit::operator_requests(&support::audit::log_path(&cluster), since);
    let reads: Vec<String> = requests
        .iter()
        .filter(|e| e["objectRef"]["resource"] == "secrets")
        .filter(|e| e["verb"] == "list" || e["verb"] == "watch")
        .map(|e| e["requestURI"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        !reads.is_empty(),
        "the suite never saw the operator read Secrets"
    );
    let unselected: Vec<&String> = reads
        .iter()
        .filter(|uri| !uri.contains("labelSelector=") && !uri.contains("fieldSelector="))
        .collect();
    assert!(
        unselected.is_empty(),
        "Secret lists/watches without a selector: {unselected:?}"
    );
}

/// Run by `make test` after the whole suite (`tests/suite.sh`): no Job the operator created
/// in the whole run carried a credential as a plain value — every token, key and secret
/// reached a pod by reference (`secretKeyRef`, `envFrom`, a Secret volume). The audit log
/// holds each Job create's request body.
#[test]
#[ignore = "needs the audit log of a whole suite run; `make test` runs it last"]
fn no_job_of_the_suite_carries_a_credential_as_a_plain_value() {
    let cluster = ClusterInfo::from_env();
    let since = std::env::var("AGENTIC_AUDIT_SINCE")
        .ok()
        .map(|s| s.parse().expect("AGENTIC_AUDIT_SINCE is a timestamp"));
    let requests = support::audit::operator_requests(&support::audit::log_path(&cluster), since);
    let credential = |name: &str| {
        name.ends_with("_TOKEN")
            || name.ends_with("_KEY")
            || name.ends_with("_KEY_ID")
            || name.contains("SECRET")
            || name.contains("PASSWORD")
            || name == "GOOGLE_OAUTH_CLIENT_ID"
    };
    let mut jobs = 0;
    let mut plain = Vec::new();
    for event in &requests {
        if event["verb"] != "create" || event["objectRef"]["resource"] != "jobs" {
            continue;
        }
        jobs += 1;
        let pod = &event["requestObject"]["spec"]["template"]["spec"];
        for list in ["containers", "initContainers"] {
            for container in pod[list].as_array().into_iter().flatten() {
                for var in container["env"].as_array().into_iter().flatten() {
                    let name = var["name"].as_str().unwrap_or_default();
                    if credential(name) && !var["value"].is_null() {
                        plain.push(format!(
                            "{}/{} {}: {name}",
                            event["objectRef"]["namespace"].as_str().unwrap_or_default(),
                            event["objectRef"]["name"].as_str().unwrap_or_default(),
                            container["name"].as_str().unwrap_or_default()
                        ));
                    }
                }
            }
        }
    }
    assert!(jobs > 0, "the suite created no Job as the operator");
    assert!(
        plain.is_empty(),
        "credentials as plain values in {jobs} Jobs: {plain:?}"
    );
    eprintln!("{jobs} Jobs scanned: every credential by reference");
}

/// The audit readers see the files the API server rotated out (it rotates at 100 MB; a scaled-up
/// fault run writes several), and skip those last written before the time asked for.
#[test]
fn audit_readers_include_rotated_files() {
    let dir = std::env::temp_dir().join(format!("audit-rotation-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let event = |id: &str| {
        json!({"auditID": id, "stage": "ResponseComplete", "verb": "create",
            "user": {"username": rbac::USER},
            "requestReceivedTimestamp": "2030-01-01T00:00:00.000000Z"})
        .to_string()
    };
    std::fs::write(
        dir.join("audit-2030-01-01T00-00-00.000.log"),
        event("rotated"),
    )
    .unwrap();
    std::fs::write(dir.join("audit.log"), event("current")).unwrap();
    std::fs::write(dir.join("kube-apiserver.log"), "not an audit log").unwrap();
    let log = dir.join("audit.log");
    let ids = |since| -> Vec<String> {
        support::audit::operator_requests(&log, since)
            .iter()
            .map(|e| e["auditID"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    assert_eq!(ids(None), ["current", "rotated"]);
    // Both files were written just now: a later `since` skips the rotated one unread (its
    // events could not be that recent), while the current file is always read.
    let later: k8s_openapi::jiff::Timestamp = "2029-01-01T00:00:00Z".parse().unwrap();
    assert_eq!(ids(Some(later)), ["current"]);
    std::fs::remove_dir_all(&dir).ok();
}

/// The check itself catches both kinds of mismatch: a grant nobody needed, and a refusal.
#[test]
fn rbac_check_reports_unused_grants_and_denials() {
    let dir = std::env::temp_dir().join(format!("rbac-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let log = dir.join("audit.log");
    let event = |id: &str, verb: &str, resource: &str, decision: &str, code: u16| {
        json!({"auditID": id, "stage": "ResponseComplete", "verb": verb,
            "user": {"username": rbac::USER}, "requestURI": format!("/api/v1/{resource}"),
            "objectRef": {"resource": resource, "apiGroup": "", "namespace": "x"},
            "responseStatus": {"code": code},
            "annotations": {"authorization.k8s.io/decision": decision},
            "requestReceivedTimestamp": "2030-01-01T00:00:00.000000Z"})
        .to_string()
    };
    let lines = [
        event("1", "list", "pods", "allow", 200),
        event("2", "delete", "secrets", "forbid", 403),
        json!({"auditID": "3", "user": {"username": "someone-else"}}).to_string(),
    ];
    std::fs::write(&log, lines.join("\n")).expect("writing the log");
    let usage = rbac::required_permissions(&log, None, &Default::default());
    let objects = vec![
        json!({"kind": "ClusterRole", "metadata": {"name": "op"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]}]}),
        json!({"kind": "ClusterRoleBinding", "metadata": {"name": "op"},
            "roleRef": {"kind": "ClusterRole", "name": "op"},
            "subjects": [{"kind": "ServiceAccount", "name": rbac::SERVICE_ACCOUNT,
                "namespace": rbac::NAMESPACE}]}),
    ];
    let problems = rbac::compare(&rbac::granted_permissions(&objects), &usage);
    assert_eq!(usage.requests, 2);
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(
        problems
            .iter()
            .any(|p| p.contains("never needed") && p.contains("watch core/pods"))
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains("denied") && p.contains("delete"))
    );
    let _ = std::fs::remove_dir_all(&dir);
}
