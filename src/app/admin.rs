//! Admin HTTP servers (hyper): `/metrics` on the metrics address; `/healthz` and `/readyz` on the
//! probe address. Readiness starts false and turns true only once every cache has synced.
//! `/healthz` answers 503, one reason a line, while [`Health`] reports a dead watch or a
//! wedged worker.
//!
//! They serve until the process exits, on a thread and runtime of their own: a shutdown drain
//! (SIGTERM) keeps them answering, and so does a runtime whose workers are all stuck.

use std::convert::Infallible;
use std::net::SocketAddr;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::observability::health::Health;
use crate::observability::metrics::Metrics;
use crate::observability::readiness::Readiness;

/// Failure to bring up an admin endpoint.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The address could not be bound (in use, not permitted, ...).
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address asked for.
        address: SocketAddr,
        /// Why binding failed.
        #[source]
        source: std::io::Error,
    },
    /// The servers' thread or runtime could not be started.
    #[error("cannot start the admin servers: {0}")]
    Start(#[source] std::io::Error),
}

/// What the admin servers serve, and where (`None`: that endpoint is disabled).
pub struct AdminConfig {
    /// Address of `/metrics`.
    pub metrics_address: Option<SocketAddr>,
    /// Address of `/healthz` and `/readyz`.
    pub probe_address: Option<SocketAddr>,
    /// The metrics served.
    pub metrics: Metrics,
    /// Whether the caches have synced.
    pub readiness: Readiness,
    /// Whether watches and workers are alive.
    pub health: Health,
}

/// The addresses the admin servers are bound to (useful with port 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound {
    /// Where `/metrics` is served.
    pub metrics: Option<SocketAddr>,
    /// Where `/healthz` and `/readyz` are served.
    pub probes: Option<SocketAddr>,
}

/// What an admin endpoint serves.
#[derive(Clone)]
enum Endpoint {
    Metrics(Metrics),
    Probes(Readiness, Health),
}

/// Binds every enabled endpoint now (so a bad address fails start-up), then serves them on a
/// thread of their own until the process exits.
pub fn spawn(config: AdminConfig) -> Result<Bound, AdminError> {
    let mut listeners = Vec::new();
    let mut bound = Bound {
        metrics: None,
        probes: None,
    };
    if let Some(address) = config.metrics_address {
        let listener = bind(address)?;
        bound.metrics = Some(local_address(&listener, address)?);
        listeners.push((listener, Endpoint::Metrics(config.metrics)));
    }
    if let Some(address) = config.probe_address {
        let listener = bind(address)?;
        bound.probes = Some(local_address(&listener, address)?);
        listeners.push((listener, Endpoint::Probes(config.readiness, config.health)));
    }
    if listeners.is_empty() {
        return Ok(bound);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(AdminError::Start)?;
    std::thread::Builder::new()
        .name("admin".into())
        .spawn(move || {
            runtime.block_on(async move {
                let mut servers = tokio::task::JoinSet::new();
                for (listener, endpoint) in listeners {
                    match TcpListener::from_std(listener) {
                        Ok(listener) => {
                            servers.spawn(serve(listener, endpoint));
                        }
                        Err(error) => tracing::error!(%error, "cannot serve an admin endpoint"),
                    }
                }
                while servers.join_next().await.is_some() {}
            });
        })
        .map_err(AdminError::Start)?;
    Ok(bound)
}

fn bind(address: SocketAddr) -> Result<std::net::TcpListener, AdminError> {
    let listener = std::net::TcpListener::bind(address)
        .map_err(|source| AdminError::Bind { address, source })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| AdminError::Bind { address, source })?;
    Ok(listener)
}

fn local_address(
    listener: &std::net::TcpListener,
    address: SocketAddr,
) -> Result<SocketAddr, AdminError> {
    listener
        .local_addr()
        .map_err(|source| AdminError::Bind { address, source })
}

/// Accepts connections on `listener` forever.
async fn serve(listener: TcpListener, endpoint: Endpoint) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of file descriptors, say: try again shortly instead of spinning.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let endpoint = endpoint.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let endpoint = endpoint.clone();
                async move { Ok::<_, Infallible>(respond(&endpoint, &request)) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn respond(endpoint: &Endpoint, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    match (endpoint, request.uri().path()) {
        (Endpoint::Metrics(metrics), "/metrics") => match metrics.encode() {
            Ok(body) => Response::builder()
                .header("content-type", "text/plain; version=0.0.4")
                .body(Full::new(Bytes::from(body)))
                .unwrap_or_default(),
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
        },
        (Endpoint::Probes(_, health), "/healthz") => {
            let problems = health.problems();
            if problems.is_empty() {
                text(StatusCode::OK, "ok\n")
            } else {
                let reasons: String = problems.iter().map(|p| format!("{p}\n")).collect();
                text(StatusCode::SERVICE_UNAVAILABLE, &reasons)
            }
        }
        (Endpoint::Probes(readiness, _), "/readyz") if readiness.is_ready() => {
            text(StatusCode::OK, "ok\n")
        }
        (Endpoint::Probes(..), "/readyz") => {
            text(StatusCode::SERVICE_UNAVAILABLE, "caches not synced\n")
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
}
