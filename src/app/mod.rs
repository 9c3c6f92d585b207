//! Wires the operator together: client, metrics, admin servers, leader election or sharding
//! membership, the chosen engine, and signal-driven shutdown.

pub mod admin;

use std::sync::Arc;
use std::time::Duration;

use agentic_crds::{AgenticSession, StatusSchema, keys};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, CustomResourceExt, Resource};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::cache::new_caches;
use crate::config::{BindAddress, Config};
use crate::context::{Connection, Context};
use crate::engine::queued;
use crate::handlers::session::{SessionContext, SessionState};
use crate::leader::{LeaderElector, LeaseTiming};
use crate::observability::health::Health;
use crate::observability::metrics::Metrics;
use crate::observability::readiness::Readiness;
use crate::shard::{Coordinator, Membership, ShardGate};
use admin::AdminConfig;

/// Why the operator could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// No usable cluster configuration.
    #[error("cannot configure the Kubernetes client: {0}")]
    ClientConfig(String),
    /// Metrics could not be set up.
    #[error(transparent)]
    Metrics(#[from] crate::observability::metrics::MetricsError),
    /// An admin endpoint could not be bound.
    #[error(transparent)]
    Admin(#[from] admin::AdminError),
    /// The engine could not start.
    #[error(transparent)]
    Engine(#[from] queued::EngineError),
    /// Leadership was lost; the process exits so it restarts as a standby.
    #[error("lost the leader Lease")]
    LostLeadership,
    /// The member Lease was lost (renewals stalled); the process exits so it rejoins afresh.
    #[error("lost the member Lease")]
    LostMembership,
}

/// The client configuration from `--kubeconfig`, or in-cluster / default kubeconfig discovery.
pub async fn client_config(config: &Config) -> Result<kube::Config, AppError> {
    match &config.args.kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path)
                .map_err(|e| AppError::ClientConfig(format!("{}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(|e| AppError::ClientConfig(format!("{}: {e}", path.display())))
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| AppError::ClientConfig(e.to_string())),
    }
}

/// What the installed `AgenticSession` CRD keeps of a status write (this project's CRD or the
/// platform's, SPEC §7.1). Unreadable, it is taken to keep only what both do, so no status write
/// is ever refused for a field or value it does not declare.
async fn installed_status_schema(client: &Client) -> StatusSchema {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = AgenticSession::crd_name();
    let version = AgenticSession::version(&());
    match crds.get(name).await {
        Ok(crd) => match StatusSchema::of_crd(&crd, &version) {
            Some(schema) => {
                tracing::info!(crd = name, ?schema, "status fields the installed CRD keeps");
                schema
            }
            None => {
                tracing::warn!(crd = name, %version, "the installed CRD has no schema for this version; writing only the fields every known schema keeps");
                StatusSchema::COMMON
            }
        },
        Err(error) => {
            tracing::warn!(crd = name, %error, "cannot read the installed CRD (RBAC: get customresourcedefinitions); writing only the status fields every known schema keeps");
            StatusSchema::COMMON
        }
    }
}

/// Runs the operator until a shutdown signal (or lost leadership).
pub async fn run(config: Config) -> Result<(), AppError> {
    let identity = identity(&config);
    let mut client_config = client_config(&config).await?;
    // Every request names the replica (audit logs tell replicas of one ServiceAccount apart).
    if let Ok(agent) = http::HeaderValue::from_str(&user_agent(&identity)) {
        client_config
            .headers
            .push((http::header::USER_AGENT, agent));
    }
    let client = Client::try_from(client_config.clone())
        .map_err(|e| AppError::ClientConfig(e.to_string()))?;
    let metrics = Metrics::new()?;
    let readiness = Readiness::default();
    let health = Health::new(
        config.args.watch_failure_threshold,
        config.args.reconcile_timeout,
    );
    let shutdown = CancellationToken::new();
    spawn_signal_handler(shutdown.clone());

    let listen = |address| match address {
        BindAddress::Listen(address) => Some(address),
        BindAddress::Disabled => None,
    };
    // Served until the process exits, through the shutdown drain.
    let bound = admin::spawn(AdminConfig {
        metrics_address: listen(config.args.metrics_bind_address),
        probe_address: listen(config.args.health_probe_bind_address),
        metrics: metrics.clone(),
        readiness: readiness.clone(),
        health: health.clone(),
    })?;
    if let Some(bound) = bound.metrics {
        tracing::info!(%bound, "serving /metrics");
    }
    if let Some(bound) = bound.probes {
        tracing::info!(%bound, "serving /healthz and /readyz");
    }

    let (caches, writers) = new_caches(&config.shared_secret_sources());
    let gate = config
        .args
        .sharding
        .then(|| ShardGate::new(metrics.families().shard.keys_dropped.clone()));
    metrics.register_operator_state(readiness.clone(), caches.sessions.clone())?;
    let leader_gauge = metrics.families().leader.clone();
    let status_schema = installed_status_schema(&client).await;
    let connection = Connection {
        client: client.clone(),
        client_config,
        status_schema,
    };
    let ctx = Context::new(
        connection,
        config.clone(),
        metrics.clone(),
        caches,
        health,
        gate.clone(),
    );
    let sessions = SessionState::new(&config);
    if let Some(gate) = &gate {
        let sessions = sessions.clone();
        gate.on_released(Box::new(move |buckets| {
            crate::handlers::session::forget_released(&buckets, &sessions);
        }));
    }
    let ctx = SessionContext::new(ctx, sessions);
    let leading = Arc::new(Notify::new());
    let lost_leadership = CancellationToken::new();
    let resign = CancellationToken::new();
    let elector = if let Some(gate) = gate {
        // The ring is read before the engine starts: the watches need the scope.
        let membership = Membership {
            namespace: config.args.namespace.clone(),
            ring: config.args.sharding_ring.clone(),
            identity: identity.clone(),
            timing: lease_timing(&config),
        };
        let mut coordinator =
            Coordinator::new(membership, client, gate, metrics, ctx.events.clone());
        match coordinator.join(&shutdown).await {
            Ok(true) => {}
            Ok(false) => return Ok(()),
            Err(lost) => {
                tracing::error!(reason = %lost, "lost the member Lease while joining");
                return Err(AppError::LostMembership);
            }
        }
        leader_gauge.set(1); // a member reconciles its share
        leading.notify_one();
        let (lost, shutdown, resign) = (lost_leadership.clone(), shutdown.clone(), resign.clone());
        Some(tokio::spawn(async move {
            if coordinator.run(resign).await.is_err() {
                lost.cancel();
                shutdown.cancel();
            }
        }))
    } else if config.args.leader_elect {
        Some(spawn_election(
            &config,
            identity,
            client,
            Arc::clone(&leading),
            Election {
                shutdown: shutdown.clone(),
                resign: resign.clone(),
                lost: lost_leadership.clone(),
                leader_gauge,
            },
        ))
    } else {
        leader_gauge.set(1);
        leading.notify_one();
        None
    };

    let engine = async {
        if config.args.legacy_watch {
            crate::engine::legacy::run(ctx, writers, readiness, leading, shutdown.clone()).await;
        } else {
            let report = queued::run(ctx, writers, readiness, leading, shutdown.clone()).await?;
            tracing::info!(
                completed = report.completed,
                dropped = report.dropped.len(),
                "work queue drained"
            );
        }
        Ok::<_, AppError>(())
    };
    // A replica that lost the Lease must not finish its queue: another one is reconciling now.
    // Dropping the engine aborts its workers at their next await. Losing the Lease cancels
    // `lost_leadership` first and `shutdown` right after (which lets an idle engine return at
    // once), so both branches can be ready at the same poll: the loss is looked at first
    // (`biased`), or a random pick could let the engine return as if shut down gracefully.
    let lease_kind = if config.args.sharding {
        "member"
    } else {
        "leader"
    };
    tokio::select! {
        biased;
        _ = lost_leadership.cancelled() => {
            tracing::error!("stopped reconciling: lost the {lease_kind} Lease");
        }
        result = engine => result?,
    }
    shutdown.cancel();
    // The Lease is given up only now that the engine has drained, so the next leader never
    // reconciles alongside this one.
    resign.cancel();
    if let Some(elector) = elector {
        let _ = elector.await;
    }
    if lost_leadership.is_cancelled() {
        return Err(if config.args.sharding {
            AppError::LostMembership
        } else {
            AppError::LostLeadership
        });
    }
    Ok(())
}

/// First SIGTERM/SIGINT: graceful shutdown. Second: exit at once.
fn spawn_signal_handler(shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(error) => {
                    tracing::error!(%error, "cannot listen for SIGTERM");
                    return;
                }
            };
        for round in 0..2 {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            if round == 0 {
                tracing::info!("shutdown requested: finishing in-flight work");
                shutdown.cancel();
            } else {
                tracing::warn!("second signal: exiting now");
                std::process::exit(130);
            }
        }
    });
}

/// How the election task and the rest of the operator signal each other.
struct Election {
    /// Shutdown requested: stop campaigning (a replica that never led has nothing to release).
    shutdown: CancellationToken,
    /// The engine has drained: release the Lease. Until then a leader keeps renewing it, even
    /// while shutting down, so no other replica reconciles during the drain.
    resign: CancellationToken,
    /// Set by the election task when the Lease was lost (it also cancels `shutdown`).
    lost: CancellationToken,
    /// `ambient_operator_leader`: 1 while the Lease is held.
    leader_gauge: prometheus::IntGauge,
}

/// Campaigns for the Lease; notifies `leading` once held and keeps renewing it until told to
/// resign (then releases it) or until it is lost (then cancels `lost` and `shutdown`).
fn spawn_election(
    config: &Config,
    identity: String,
    client: Client,
    leading: Arc<Notify>,
    election: Election,
) -> tokio::task::JoinHandle<()> {
    let mut elector = LeaderElector::new(
        client,
        &config.args.namespace,
        keys::LEADER_LEASE_NAME,
        identity,
        lease_timing(config),
    );
    tokio::spawn(async move {
        tracing::info!(identity = elector.identity(), "waiting to become leader");
        tokio::select! {
            _ = election.shutdown.cancelled() => return,
            () = elector.acquire() => {}
        }
        tracing::info!(identity = elector.identity(), "became leader");
        election.leader_gauge.set(1);
        leading.notify_one();
        tokio::select! {
            _ = election.resign.cancelled() => {
                election.leader_gauge.set(0);
                match tokio::time::timeout(Duration::from_secs(5), elector.release()).await {
                    Ok(Ok(())) => tracing::info!("released the leader Lease"),
                    Ok(Err(error)) => tracing::warn!(%error, "could not release the leader Lease"),
                    Err(_) => tracing::warn!("timed out releasing the leader Lease"),
                }
            }
            lost = elector.hold() => {
                election.leader_gauge.set(0);
                tracing::error!(reason = %lost, "lost the leader Lease: stopping");
                election.lost.cancel();
                election.shutdown.cancel();
            }
        }
    })
}

/// This replica's identity: `--pod-name`, else [`default_identity`].
fn identity(config: &Config) -> String {
    config
        .args
        .pod_name
        .clone()
        .unwrap_or_else(default_identity)
}

/// `agentic-operator/<version> (<identity>)`: the User-Agent of every request.
pub fn user_agent(identity: &str) -> String {
    format!(
        "agentic-operator/{} ({identity})",
        env!("CARGO_PKG_VERSION")
    )
}

/// Lease timing from the `--leader-elect-*` flags (leader and member Leases alike).
fn lease_timing(config: &Config) -> LeaseTiming {
    LeaseTiming {
        lease_duration: config.args.leader_elect_lease_duration,
        renew_deadline: config.args.leader_elect_renew_deadline,
        retry_period: config.args.leader_elect_retry_period,
    }
}

/// `<hostname>-<random>` when no `POD_NAME` is given.
fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "agentic-operator".into());
    let mut suffix = [0u8; 4];
    let _ = getrandom::fill(&mut suffix);
    format!(
        "{host}-{}",
        suffix
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}
