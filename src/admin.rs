//! Admin HTTP servers (hyper): `/metrics` on the metrics address; `/healthz` and `/readyz` on the
//! probe address. Readiness starts false and turns true only once every cache has synced.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// Shared readiness flag: false until the engine reports its caches synced.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Marks the operator ready (caches synced) or not.
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }

    /// Whether the operator is ready.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

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
}

/// What an admin endpoint serves.
#[derive(Clone)]
enum Endpoint {
    Metrics(Metrics),
    Probes(Readiness),
}

/// Binds the metrics endpoint; serving runs until `shutdown` is cancelled.
pub async fn serve_metrics(
    address: SocketAddr,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> Result<SocketAddr, AdminError> {
    serve(address, Endpoint::Metrics(metrics), shutdown).await
}

/// Binds the probe endpoint; serving runs until `shutdown` is cancelled.
pub async fn serve_probes(
    address: SocketAddr,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> Result<SocketAddr, AdminError> {
    serve(address, Endpoint::Probes(readiness), shutdown).await
}

/// Binds now (so a bad address fails start-up), then accepts in a background task.
/// Returns the bound address (useful with port 0).
async fn serve(
    address: SocketAddr,
    endpoint: Endpoint,
    shutdown: CancellationToken,
) -> Result<SocketAddr, AdminError> {
    let listener = TcpListener::bind(address)
        .await
        .map_err(|source| AdminError::Bind { address, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| AdminError::Bind { address, source })?;
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let Ok((stream, _)) = accepted else { continue };
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
    });
    Ok(bound)
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
        (Endpoint::Probes(_), "/healthz") => text(StatusCode::OK, "ok\n"),
        (Endpoint::Probes(readiness), "/readyz") if readiness.is_ready() => {
            text(StatusCode::OK, "ok\n")
        }
        (Endpoint::Probes(_), "/readyz") => {
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
