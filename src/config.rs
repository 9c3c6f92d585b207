//! Operator configuration: every flag with its environment fallback, parsed and validated once.
//!
//! Names and defaults of the original operator are kept exactly (`--max-concurrent-reconciles`,
//! `MAX_CONCURRENT_RECONCILES`, `DEV_MODE`, `NAMESPACE`, ...). When a flag and its environment
//! variable are both given, the flag wins. Nothing else in the operator reads the environment.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

/// Exit code for a configuration the operator refuses to run with (BSD `EX_USAGE`).
pub const EXIT_BAD_CONFIG: u8 = 64;

/// Command-line flags, each with its environment fallback.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "agentic-operator",
    version,
    about = "Runs AgenticSession custom resources as Kubernetes Jobs",
    after_help = "Sub-command:\n  session-trigger  create or resume one run of a scheduled session \
                  (configured by environment; `agentic-operator session-trigger --help`)"
)]
pub struct Args {
    /// Kubeconfig file; in-cluster configuration (or ~/.kube/config) when unset.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<std::path::PathBuf>,

    /// Maximum parallel session reconciliations (work-queue workers).
    #[arg(long, env = "MAX_CONCURRENT_RECONCILES", default_value_t = 10,
          value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub max_concurrent_reconciles: u16,

    /// Prometheus metrics endpoint (`host:port`, `:port` for all interfaces, `0` to disable).
    #[arg(long, env = "METRICS_BIND_ADDRESS", default_value = ":8080", value_parser = parse_bind_address)]
    pub metrics_bind_address: BindAddress,

    /// Health and readiness probe endpoint (`host:port`, `:port`, or `0` to disable).
    #[arg(long, env = "HEALTH_PROBE_BIND_ADDRESS", default_value = ":8081", value_parser = parse_bind_address)]
    pub health_probe_bind_address: BindAddress,

    /// Enable leader election so that only one replica reconciles.
    #[arg(long, env = "LEADER_ELECT", default_value_t = false, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true", value_parser = clap::builder::BoolishValueParser::new())]
    pub leader_elect: bool,

    /// Share the sessions among replicas (SPEC §6): every replica reconciles its own part, by
    /// namespace, coordinated through member Leases. Exclusive with `--leader-elect`.
    #[arg(long, env = "SHARDING", default_value_t = false, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true", value_parser = clap::builder::BoolishValueParser::new())]
    pub sharding: bool,

    /// The ring a sharded replica joins (label `ambient-code.io/operator-ring` of its member
    /// Lease): the replicas that share the sessions.
    #[arg(long, env = "SHARDING_RING", default_value = "default", value_parser = parse_label_value)]
    pub sharding_ring: String,

    /// Use the raw-watch engine (events handled inline, no queue) instead of the work queue.
    #[arg(long, env = "LEGACY_WATCH", default_value_t = false, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true", value_parser = clap::builder::BoolishValueParser::new())]
    pub legacy_watch: bool,

    /// Human-readable logs instead of JSON.
    #[arg(long, env = "DEV_MODE", default_value_t = false, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true", value_parser = clap::builder::BoolishValueParser::new())]
    pub dev_mode: bool,

    /// The operator's own namespace (leader-election Lease, Events about the operator).
    #[arg(long, env = "NAMESPACE", default_value = "default", value_parser = parse_dns_label)]
    pub namespace: String,

    /// Namespace of the backend API service; defaults to the operator's namespace.
    #[arg(long, env = "BACKEND_NAMESPACE", value_parser = parse_dns_label)]
    pub backend_namespace: Option<String>,

    /// Container image of the session runner.
    #[arg(long, env = "AMBIENT_CODE_RUNNER_IMAGE",
          default_value = "quay.io/ambient_code/vteam_claude_runner:latest", value_parser = parse_non_empty)]
    pub runner_image: String,

    /// Inactivity timeout in seconds when neither the session nor its ProjectSettings set one (0 disables).
    #[arg(long, env = "DEFAULT_INACTIVITY_TIMEOUT", default_value_t = 86_400)]
    pub default_inactivity_timeout: u64,

    /// A session whose runner is not running this long after its Job was created fails (StartTimeout);
    /// so does one Pending this long after the operator first reached it (never counted from its creation).
    #[arg(long, env = "START_TIMEOUT", default_value = "10m", value_parser = parse_positive_duration)]
    pub start_timeout: Duration,

    /// Enforce `spec.timeout` as a bound on the whole run (the Job's `activeDeadlineSeconds`;
    /// Failed / Timeout). Off by default, as the original: every platform client writes
    /// `timeout: 300`, and its interactive sessions run for hours.
    #[arg(long, env = "ENFORCE_SESSION_TIMEOUT", default_value_t = false, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true", value_parser = clap::builder::BoolishValueParser::new())]
    pub enforce_session_timeout: bool,

    /// Queue runner Jobs with Kueue where ProjectSettings set `spec.kueue` (Kueue and its CRDs
    /// must be installed): their Jobs are created suspended in the named LocalQueue, Workloads
    /// (`kueue.x-k8s.io/v1beta2`) are watched, the sessions say where they stand in the queue,
    /// and a preempted run is queued again. Off: `spec.kueue` is ignored and no Workload is read.
    #[arg(long, env = "KUEUE", default_value_t = false, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true", value_parser = clap::builder::BoolishValueParser::new())]
    pub kueue: bool,

    /// Fail a session (Failed / QueueTimeout) whose runner Job waited this long for Kueue's
    /// admission (counted from when it was queued; a preempted run counts afresh). Unset: a
    /// queued session waits as long as it takes; `--start-timeout` counts from admission.
    #[arg(long, env = "QUEUE_TIMEOUT", value_parser = parse_positive_duration)]
    pub queue_timeout: Option<Duration>,

    /// Refresh the runner's Kubernetes token when it is older than this.
    #[arg(long, env = "TOKEN_REFRESH_AFTER", default_value = "45m", value_parser = parse_positive_duration)]
    pub token_refresh_after: Duration,

    /// Size of each session's workspace PersistentVolumeClaim (e.g. `10Gi`); unset means an emptyDir.
    #[arg(long, env = "WORKSPACE_SIZE", value_parser = parse_quantity)]
    pub workspace_size: Option<String>,

    /// StorageClass of the workspace PersistentVolumeClaim (cluster default when unset).
    #[arg(long, env = "WORKSPACE_STORAGE_CLASS", requires = "workspace_size")]
    pub workspace_storage_class: Option<String>,

    /// Runner container CPU request.
    #[arg(long, env = "RUNNER_CPU_REQUEST", default_value = "500m", value_parser = parse_quantity)]
    pub runner_cpu_request: String,
    /// Runner container CPU limit.
    #[arg(long, env = "RUNNER_CPU_LIMIT", default_value = "2", value_parser = parse_quantity)]
    pub runner_cpu_limit: String,
    /// Runner container memory request.
    #[arg(long, env = "RUNNER_MEMORY_REQUEST", default_value = "512Mi", value_parser = parse_quantity)]
    pub runner_memory_request: String,
    /// Runner container memory limit.
    #[arg(long, env = "RUNNER_MEMORY_LIMIT", default_value = "8Gi", value_parser = parse_quantity)]
    pub runner_memory_limit: String,

    /// This replica's identity in Events and the leader Lease (the pod name via the downward
    /// API); the host name plus a random suffix when unset.
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,

    /// Lease duration of the leader Lease, or of a member Lease with `--sharding`.
    #[arg(long, env = "LEADER_ELECT_LEASE_DURATION", default_value = "15s", value_parser = parse_positive_duration)]
    pub leader_elect_lease_duration: Duration,
    /// How long the leader keeps trying to renew before it gives up leadership.
    #[arg(long, env = "LEADER_ELECT_RENEW_DEADLINE", default_value = "10s", value_parser = parse_positive_duration)]
    pub leader_elect_renew_deadline: Duration,
    /// Interval between leader-election attempts.
    #[arg(long, env = "LEADER_ELECT_RETRY_PERIOD", default_value = "2s", value_parser = parse_positive_duration)]
    pub leader_elect_retry_period: Duration,

    /// How long in-flight reconciles may run after SIGTERM before the process exits.
    #[arg(long, env = "SHUTDOWN_GRACE_PERIOD", default_value = "30s", value_parser = parse_positive_duration)]
    pub shutdown_grace_period: Duration,

    /// The uid the state containers (init-hydrate, state-sync) run as, with `runAsNonRoot`;
    /// unset, none is pinned (their image has no USER; OpenShift's restricted SCC assigns one
    /// from the namespace's range and refuses any other).
    #[arg(long, env = "STATE_CONTAINER_UID", value_parser = clap::value_parser!(i64).range(0..=2_147_483_647))]
    pub state_container_uid: Option<i64>,

    /// Vertex AI mode (`1`, `true` or `yes`, any case; anything else is off, as the original):
    /// the runner uses Vertex credentials copied from the backend's namespace instead of
    /// `ambient-runner-secrets`.
    #[arg(long, env = "USE_VERTEX", value_parser = parse_truthy)]
    pub use_vertex: Option<bool>,
    /// The older name of `--use-vertex`; either turns Vertex mode on.
    #[arg(long, env = "CLAUDE_CODE_USE_VERTEX", value_parser = parse_truthy, hide = true)]
    pub claude_code_use_vertex: Option<bool>,
    /// Vertex: the Google Cloud project (required in Vertex mode).
    #[arg(long, env = "ANTHROPIC_VERTEX_PROJECT_ID")]
    pub vertex_project_id: Option<String>,
    /// Vertex: the region (required in Vertex mode).
    #[arg(long, env = "CLOUD_ML_REGION")]
    pub cloud_ml_region: Option<String>,
    /// Vertex: the path of the credentials file in the runner (under `/app/vertex`; required in
    /// Vertex mode).
    #[arg(long, env = "GOOGLE_APPLICATION_CREDENTIALS")]
    pub google_application_credentials: Option<String>,
    /// Copy `ambient-admin-langfuse-secret` to session namespaces and point runners at it (any
    /// value but empty, `0` and `false` is on, as the original).
    #[arg(long, env = "LANGFUSE_ENABLED", value_parser = parse_enabled)]
    pub langfuse_enabled: Option<bool>,
    /// Copy `ambient-admin-mlflow-observability-secret` to session namespaces and point runners
    /// at it (any value but empty, `0` and `false` is on).
    #[arg(long, env = "MLFLOW_TRACING_ENABLED", value_parser = parse_enabled)]
    pub mlflow_tracing_enabled: Option<bool>,
    /// The agent registry (JSON array of runtimes; re-read when it changes).
    #[arg(
        long,
        env = "AGENT_REGISTRY_PATH",
        default_value = "/config/registry/agent-registry.json"
    )]
    pub agent_registry_path: std::path::PathBuf,
    /// The model manifest (re-read when it changes).
    #[arg(
        long,
        env = "MODELS_MANIFEST_PATH",
        default_value = "/config/models/models.json"
    )]
    pub models_manifest_path: std::path::PathBuf,
    /// Image of the `init-hydrate` and `state-sync` containers (unless the runtime names one).
    #[arg(long, env = "STATE_SYNC_IMAGE",
          default_value = "quay.io/ambient_code/vteam_state_sync:latest", value_parser = parse_non_empty)]
    pub state_sync_image: String,
    /// S3 endpoint for session state, unless the project configures its own.
    #[arg(long, env = "S3_ENDPOINT", default_value = "https://s3.amazonaws.com", value_parser = parse_non_empty)]
    pub s3_endpoint: String,
    /// S3 bucket for session state, unless the project configures its own.
    #[arg(long, env = "S3_BUCKET", default_value = "ambient-sessions", value_parser = parse_non_empty)]
    pub s3_bucket: String,
    /// Group id every runner pod gets as `fsGroup` (with `fsGroupChangePolicy: OnRootMismatch`).
    #[arg(long, env = "POD_FSGROUP", value_parser = clap::value_parser!(i64).range(0..=2_147_483_647))]
    pub pod_fsgroup: Option<i64>,
    /// `imagePullPolicy` of every container the operator makes.
    #[arg(long, env = "IMAGE_PULL_POLICY", default_value = "Always",
          value_parser = ["Always", "IfNotPresent", "Never"])]
    pub image_pull_policy: String,
    /// `MCP_CONFIG_FILE` handed to runners, if set.
    #[arg(long, env = "MCP_CONFIG_FILE")]
    pub mcp_config_file: Option<String>,
    /// The backend's public URL: runners get `GOOGLE_OAUTH_REDIRECT_URI=<url>/oauth2callback`.
    #[arg(long, env = "BACKEND_PUBLIC_URL", value_parser = parse_non_empty)]
    pub backend_public_url: Option<String>,

    /// Where a session's runner is called for live changes: `{session}`, `{namespace}` and
    /// `{port}` are replaced (the session's Service by default; tests point it elsewhere).
    #[arg(long, env = "RUNNER_BASE_URL",
          default_value = "http://session-{session}.{namespace}.svc.cluster.local:{port}",
          value_parser = parse_non_empty)]
    pub runner_base_url: String,

    /// A reconcile still running after this long is cancelled and counts as failed (retried
    /// with backoff).
    #[arg(long, env = "RECONCILE_TIMEOUT", default_value = "2m", value_parser = parse_positive_duration)]
    pub reconcile_timeout: Duration,

    /// `/healthz` fails while every list or watch attempt of a watch has failed for this long.
    #[arg(long, env = "WATCH_FAILURE_THRESHOLD", default_value = "2m", value_parser = parse_positive_duration)]
    pub watch_failure_threshold: Duration,

    /// First retry delay of a failing reconcile (doubles per failure).
    #[arg(long, env = "RETRY_BASE_DELAY", default_value = "5ms", value_parser = parse_positive_duration)]
    pub retry_base_delay: Duration,
    /// Longest a failing reconcile waits before its next retry.
    #[arg(long, env = "RETRY_MAX_DELAY", default_value = "5m", value_parser = parse_positive_duration)]
    pub retry_max_delay: Duration,
    /// Global retry budget: retries per second across all sessions (token bucket).
    #[arg(long, env = "RETRY_QPS", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub retry_qps: u32,
    /// Global retry budget: burst size of the token bucket.
    #[arg(long, env = "RETRY_BURST", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub retry_burst: u32,
}

/// Where an HTTP endpoint listens, or that it is switched off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindAddress {
    /// Serve on this address.
    Listen(SocketAddr),
    /// Do not serve (`0`, as in controller-runtime).
    Disabled,
}

/// Validated configuration, derived once from [`Args`].
#[derive(Debug, Clone)]
pub struct Config {
    /// Everything as parsed; the derived values below take precedence where they exist.
    pub args: Args,
    /// `BACKEND_NAMESPACE`, or the operator's namespace when unset.
    pub backend_namespace: String,
    /// Vertex mode's settings; `None` when Vertex is off.
    pub vertex: Option<VertexSettings>,
}

/// What runners get in Vertex mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VertexSettings {
    /// `ANTHROPIC_VERTEX_PROJECT_ID`.
    pub project_id: String,
    /// `CLOUD_ML_REGION`.
    pub region: String,
    /// `GOOGLE_APPLICATION_CREDENTIALS`.
    pub credentials: String,
}

/// Why the configuration was refused, naming the flag.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Two settings contradict each other.
    #[error("{flag}: {message}")]
    Inconsistent {
        /// The flag at fault.
        flag: &'static str,
        /// What is wrong.
        message: String,
    },
}

impl Config {
    /// Applies the cross-flag rules that a single flag's parser cannot check.
    pub fn from_args(args: Args) -> Result<Self, ConfigError> {
        if args.sharding && args.leader_elect {
            return Err(ConfigError::Inconsistent {
                flag: "--sharding",
                message: "cannot be combined with --leader-elect (every sharded replica works; \
                          choose one)"
                    .into(),
            });
        }
        let lease = args.leader_elect_lease_duration;
        if lease.subsec_nanos() != 0 || lease < Duration::from_secs(1) {
            // A Lease records whole seconds: 1.5s would be written as 1s, and 500ms as 0s, a
            // Lease every other replica reads as expired at once.
            return Err(ConfigError::Inconsistent {
                flag: "--leader-elect-lease-duration",
                message: format!(
                    "must be a whole number of seconds, at least 1s (a Lease records whole \
                     seconds), not {lease:?}"
                ),
            });
        }
        if args.leader_elect_renew_deadline >= args.leader_elect_lease_duration {
            return Err(ConfigError::Inconsistent {
                flag: "--leader-elect-renew-deadline",
                message: format!(
                    "must be shorter than --leader-elect-lease-duration ({:?} >= {:?})",
                    args.leader_elect_renew_deadline, args.leader_elect_lease_duration
                ),
            });
        }
        if args.leader_elect_retry_period >= args.leader_elect_renew_deadline {
            return Err(ConfigError::Inconsistent {
                flag: "--leader-elect-retry-period",
                message: "must be shorter than --leader-elect-renew-deadline".into(),
            });
        }
        if args.retry_base_delay > args.retry_max_delay {
            return Err(ConfigError::Inconsistent {
                flag: "--retry-base-delay",
                message: "must not exceed --retry-max-delay".into(),
            });
        }
        if args.metrics_bind_address != BindAddress::Disabled
            && args.metrics_bind_address == args.health_probe_bind_address
        {
            return Err(ConfigError::Inconsistent {
                flag: "--health-probe-bind-address",
                message: "must differ from --metrics-bind-address".into(),
            });
        }
        let backend_namespace = args
            .backend_namespace
            .clone()
            .unwrap_or_else(|| args.namespace.clone());
        let vertex = if args.use_vertex == Some(true) || args.claude_code_use_vertex == Some(true) {
            let required = |value: &Option<String>, flag: &'static str| {
                value
                    .clone()
                    .filter(|v| !v.trim().is_empty())
                    .ok_or(ConfigError::Inconsistent {
                        flag,
                        message: "must be set when USE_VERTEX is on".into(),
                    })
            };
            Some(VertexSettings {
                project_id: required(&args.vertex_project_id, "ANTHROPIC_VERTEX_PROJECT_ID")?,
                region: required(&args.cloud_ml_region, "CLOUD_ML_REGION")?,
                credentials: required(
                    &args.google_application_credentials,
                    "GOOGLE_APPLICATION_CREDENTIALS",
                )?,
            })
        } else {
            None
        };
        Ok(Config {
            args,
            backend_namespace,
            vertex,
        })
    }

    /// The shared Secrets the operator watches and copies: `(namespace, name)`. Vertex,
    /// Langfuse and MLflow only when on; the Google OAuth client (in the operator's namespace)
    /// and the shared S3 keys always (used when present).
    pub fn shared_secret_sources(&self) -> Vec<(String, &'static str)> {
        use agentic_crds::keys;
        let backend = || self.backend_namespace.clone();
        let mut sources = Vec::new();
        if self.vertex.is_some() {
            sources.push((backend(), keys::VERTEX_SECRET));
        }
        if self.langfuse() {
            sources.push((backend(), keys::LANGFUSE_SECRET));
        }
        if self.mlflow() {
            sources.push((backend(), keys::MLFLOW_SECRET));
        }
        sources.push((self.args.namespace.clone(), keys::GOOGLE_OAUTH_SECRET));
        sources.push((backend(), keys::MINIO_CREDENTIALS_SECRET));
        sources
    }

    /// Whether Langfuse settings are copied to runners.
    pub fn langfuse(&self) -> bool {
        self.args.langfuse_enabled == Some(true)
    }

    /// Whether MLflow settings are copied to runners.
    pub fn mlflow(&self) -> bool {
        self.args.mlflow_tracing_enabled == Some(true)
    }

    /// `BACKEND_API_URL` handed to runners.
    pub fn backend_api_url(&self) -> String {
        format!(
            "http://backend-service.{}.svc.cluster.local:8080/api",
            self.backend_namespace
        )
    }
}

fn parse_bind_address(value: &str) -> Result<BindAddress, String> {
    if value == "0" {
        return Ok(BindAddress::Disabled);
    }
    let full = match value.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => value.to_string(),
    };
    full.parse::<SocketAddr>()
        .map(BindAddress::Listen)
        .map_err(|_| format!("'{value}' is not host:port, :port or 0"))
}

fn parse_positive_duration(value: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(value)
        .map_err(|e| format!("'{value}' is not a duration like 30s, 10m or 1h ({e})"))?;
    if duration.is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(duration)
}

/// `1`, `true` or `yes` (trimmed, any case) is on, anything else off: the original's
/// `isTruthy`, so an odd value in the platform's ConfigMap never stops the operator.
fn parse_truthy(value: &str) -> Result<bool, String> {
    Ok(matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes"
    ))
}

/// Anything but empty, `0` and `false` is on: the original's reading of `LANGFUSE_ENABLED` and
/// `MLFLOW_TRACING_ENABLED` (these come from the platform's admin Secrets).
fn parse_enabled(value: &str) -> Result<bool, String> {
    Ok(!matches!(value, "" | "0" | "false"))
}

fn parse_non_empty(value: &str) -> Result<String, String> {
    if value.trim().is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(value.to_string())
    }
}

/// A DNS-1123 label: what a namespace name must be.
fn parse_dns_label(value: &str) -> Result<String, String> {
    let valid = !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if valid {
        Ok(value.to_string())
    } else {
        Err(format!("'{value}' is not a valid namespace name"))
    }
}

/// A label value: at most 63 characters, alphanumeric at both ends, `-`, `_` and `.` inside.
fn parse_label_value(value: &str) -> Result<String, String> {
    let bytes = value.as_bytes();
    let valid = !value.is_empty()
        && value.len() <= 63
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(b));
    if valid {
        Ok(value.to_string())
    } else {
        Err(format!("'{value}' is not a valid label value"))
    }
}

/// A Kubernetes resource quantity such as `500m`, `2`, `1.5Gi` or `10G`.
fn parse_quantity(value: &str) -> Result<String, String> {
    const SUFFIXES: [&str; 14] = [
        "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "n", "u", "m", "k", "M", "G", "T", "P",
    ];
    let number = SUFFIXES
        .iter()
        .find_map(|s| value.strip_suffix(s))
        .unwrap_or(value);
    let mut parts = number.splitn(2, '.');
    let whole = parts.next().unwrap_or_default();
    let fraction = parts.next();
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let valid = digits(whole) && fraction.is_none_or(digits);
    if valid {
        Ok(value.to_string())
    } else {
        Err(format!(
            "'{value}' is not a Kubernetes quantity like 500m, 2 or 10Gi"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("agentic-operator").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_match_the_original_operator() {
        let args = parse(&[]).expect("defaults parse");
        assert_eq!(args.max_concurrent_reconciles, 10);
        assert_eq!(
            args.metrics_bind_address,
            BindAddress::Listen("0.0.0.0:8080".parse().unwrap())
        );
        assert_eq!(
            args.health_probe_bind_address,
            BindAddress::Listen("0.0.0.0:8081".parse().unwrap())
        );
        assert!(!args.leader_elect && !args.legacy_watch && !args.dev_mode && !args.sharding);
        assert!(
            !args.enforce_session_timeout,
            "spec.timeout is advisory by default"
        );
        assert_eq!(args.sharding_ring, "default");
        assert_eq!(args.namespace, "default");
        assert_eq!(
            args.runner_image,
            "quay.io/ambient_code/vteam_claude_runner:latest"
        );
        assert_eq!(args.default_inactivity_timeout, 86_400);
        assert_eq!(args.start_timeout, Duration::from_secs(600));
        assert_eq!(args.reconcile_timeout, Duration::from_secs(120));
        assert_eq!(args.watch_failure_threshold, Duration::from_secs(120));
    }

    #[test]
    fn backend_namespace_defaults_to_the_operator_namespace() {
        let config = Config::from_args(parse(&["--namespace", "ops"]).unwrap()).unwrap();
        assert_eq!(config.backend_namespace, "ops");
        assert_eq!(
            config.backend_api_url(),
            "http://backend-service.ops.svc.cluster.local:8080/api"
        );
    }

    #[test]
    fn boolean_flags_accept_a_bare_flag_or_a_value() {
        assert!(parse(&["--leader-elect"]).unwrap().leader_elect);
        assert!(parse(&["--legacy-watch=true"]).unwrap().legacy_watch);
        assert!(!parse(&["--leader-elect=false"]).unwrap().leader_elect);
    }

    #[test]
    fn bad_values_are_rejected_with_the_flag_named() {
        for (args, flag) in [
            (
                &["--max-concurrent-reconciles", "0"][..],
                "--max-concurrent-reconciles",
            ),
            (
                &["--metrics-bind-address", "nonsense"][..],
                "--metrics-bind-address",
            ),
            (&["--start-timeout", "soon"][..], "--start-timeout"),
            (&["--start-timeout", "0s"][..], "--start-timeout"),
            (&["--reconcile-timeout", "0s"][..], "--reconcile-timeout"),
            (&["--reconcile-timeout", "never"][..], "--reconcile-timeout"),
            (
                &["--watch-failure-threshold", "0s"][..],
                "--watch-failure-threshold",
            ),
            (&["--namespace", "Not_A_Name"][..], "--namespace"),
            (&["--workspace-size", "lots"][..], "--workspace-size"),
            (&["--sharding-ring", "not a ring"][..], "--sharding-ring"),
            (&["--sharding-ring", "edge-"][..], "--sharding-ring"),
        ] {
            let message = parse(args).expect_err("must be rejected").to_string();
            assert!(message.contains(flag), "{message}");
        }
    }

    #[test]
    fn a_lease_duration_a_lease_cannot_record_is_rejected() {
        for bad in ["500ms", "1500ms"] {
            let args = parse(&[
                "--leader-elect-lease-duration",
                bad,
                "--leader-elect-renew-deadline",
                "400ms",
                "--leader-elect-retry-period",
                "100ms",
            ])
            .unwrap();
            let message = Config::from_args(args).unwrap_err().to_string();
            assert!(
                message.starts_with("--leader-elect-lease-duration"),
                "{message}"
            );
        }
        let whole = parse(&["--leader-elect-lease-duration", "2s"]).unwrap();
        let whole = Args {
            leader_elect_renew_deadline: Duration::from_millis(1500),
            leader_elect_retry_period: Duration::from_millis(500),
            ..whole
        };
        assert!(Config::from_args(whole).is_ok());
    }

    #[test]
    fn contradicting_flags_are_rejected_with_the_flag_named() {
        let args = parse(&["--leader-elect-renew-deadline", "20s"]).unwrap();
        let message = Config::from_args(args).unwrap_err().to_string();
        assert!(
            message.starts_with("--leader-elect-renew-deadline"),
            "{message}"
        );

        let args = parse(&["--sharding", "--leader-elect"]).unwrap();
        let message = Config::from_args(args).unwrap_err().to_string();
        assert!(message.starts_with("--sharding"), "{message}");
        assert!(Config::from_args(parse(&["--sharding=true"]).unwrap()).is_ok());

        let args = parse(&["--health-probe-bind-address", ":8080"]).unwrap();
        let message = Config::from_args(args).unwrap_err().to_string();
        assert!(
            message.starts_with("--health-probe-bind-address"),
            "{message}"
        );
    }

    #[test]
    fn vertex_mode_needs_its_three_settings_and_names_the_missing_one() {
        let off = Config::from_args(parse(&[]).unwrap()).unwrap();
        assert_eq!(off.vertex, None);
        for flag in ["--use-vertex", "--claude-code-use-vertex"] {
            let args = parse(&[
                flag,
                "yes",
                "--vertex-project-id",
                "p",
                "--cloud-ml-region",
                "r",
            ])
            .unwrap();
            let message = Config::from_args(args).unwrap_err().to_string();
            assert!(
                message.starts_with("GOOGLE_APPLICATION_CREDENTIALS"),
                "{message}"
            );
        }
        let on = Config::from_args(
            parse(&[
                "--use-vertex",
                "TRUE",
                "--vertex-project-id",
                "p",
                "--cloud-ml-region",
                "r",
                "--google-application-credentials",
                "/app/vertex/key.json",
            ])
            .unwrap(),
        )
        .unwrap();
        assert_eq!(
            on.vertex,
            Some(VertexSettings {
                project_id: "p".into(),
                region: "r".into(),
                credentials: "/app/vertex/key.json".into(),
            })
        );
        assert_eq!(
            parse(&["--use-vertex", "maybe"]).unwrap().use_vertex,
            Some(false)
        );
    }

    #[test]
    fn platform_settings_default_as_the_original() {
        let args = parse(&[]).unwrap();
        assert_eq!(
            args.agent_registry_path,
            std::path::PathBuf::from("/config/registry/agent-registry.json")
        );
        assert_eq!(
            args.models_manifest_path,
            std::path::PathBuf::from("/config/models/models.json")
        );
        assert_eq!(args.image_pull_policy, "Always");
        assert_eq!(args.s3_endpoint, "https://s3.amazonaws.com");
        assert_eq!(args.s3_bucket, "ambient-sessions");
        assert!(parse(&["--image-pull-policy", "Sometimes"]).is_err());
        assert!(parse(&["--pod-fsgroup", "-1"]).is_err());
        assert_eq!(
            args.runner_memory_limit, "8Gi",
            "the original raised it after OOMs"
        );
        assert_eq!(args.state_container_uid, None, "no pinned uid (OpenShift)");
    }

    #[test]
    fn booleans_from_the_platforms_config_are_read_as_the_original_never_refused() {
        for (value, on) in [
            ("on", true),
            ("1", true),
            ("False", true),
            ("0", false),
            ("false", false),
            ("", false),
        ] {
            let args = parse(&["--langfuse-enabled", value]).expect(value);
            assert_eq!(
                args.langfuse_enabled,
                Some(on),
                "LANGFUSE_ENABLED={value:?}"
            );
            let args = parse(&["--mlflow-tracing-enabled", value]).expect(value);
            assert_eq!(args.mlflow_tracing_enabled, Some(on), "{value:?}");
        }
        for (value, on) in [
            (" YES ", true),
            ("true", true),
            ("1", true),
            ("on", false),
            ("no", false),
            ("", false),
        ] {
            let args = parse(&["--use-vertex", value]).expect(value);
            assert_eq!(args.use_vertex, Some(on), "USE_VERTEX={value:?}");
        }
    }

    #[test]
    fn zero_disables_an_endpoint() {
        let args = parse(&["--metrics-bind-address", "0"]).unwrap();
        assert_eq!(args.metrics_bind_address, BindAddress::Disabled);
    }

    #[test]
    fn quantities_are_checked() {
        for good in ["500m", "2", "1.5Gi", "10G", "128974848"] {
            assert!(parse_quantity(good).is_ok(), "{good}");
        }
        for bad in ["", "Gi", "1.2.3", "ten", "-1"] {
            assert!(parse_quantity(bad).is_err(), "{bad}");
        }
    }
}
