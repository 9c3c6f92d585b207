//! Live changes (SPEC §5.6), the effectful part: telling a Running session's runner about
//! repositories and the workflow over its HTTP API, off the reconcile workers.
//!
//! Invariants:
//! - a reconcile only starts the calls (or reads their outcome); the calls run in a task of
//!   their own, at most [`CONCURRENT_SYNCS`] at once, each bounded by [`CALL_TIMEOUT`], so a
//!   slow or silent runner never holds a worker, and a thousand of them never stall the
//!   reconciles of other sessions;
//! - at most one set of calls per session is in flight; an outcome belongs to the generation
//!   it was made for and is ignored once the spec moved on;
//! - when the calls end, the session is reconciled again (the engine's waker) and records the
//!   outcome.

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use tokio::sync::Semaphore;

use super::drift::RunnerCall;
use super::phases::SyncView;
use super::waker::SessionWaker;

/// Each call to a runner gives up after this long.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Sessions whose runners are being called at once, at most.
pub const CONCURRENT_SYNCS: usize = 64;
/// The header carrying the session's AG-UI token.
pub const TOKEN_HEADER: &str = "X-Ambient-Session-Token";

/// One session's calls for one generation.
#[derive(Debug, Clone)]
struct Entry {
    generation: i64,
    view: SyncView,
}

/// The runner calls of every session; cheap to clone.
#[derive(Clone)]
pub struct RunnerSyncs {
    entries: Arc<DashMap<(String, String), Entry>>,
    permits: Arc<Semaphore>,
    http: Client<HttpConnector, Full<Bytes>>,
    /// Base URL template: `{session}`, `{namespace}` and `{port}` are replaced.
    base_url: String,
    waker: SessionWaker,
}

impl RunnerSyncs {
    /// Calls runners at `base_url` (a template, see [`crate::config::Args::runner_base_url`]);
    /// a session whose calls ended is woken through `waker`.
    pub fn new(base_url: &str, waker: SessionWaker) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CALL_TIMEOUT));
        RunnerSyncs {
            entries: Arc::default(),
            permits: Arc::new(Semaphore::new(CONCURRENT_SYNCS)),
            http: Client::builder(TokioExecutor::new()).build(connector),
            base_url: base_url.to_string(),
            waker,
        }
    }

    /// Where the calls for one generation of `namespace/session` stand.
    pub fn view(&self, namespace: &str, session: &str, generation: Option<i64>) -> SyncView {
        let key = (namespace.to_string(), session.to_string());
        match (self.entries.get(&key), generation) {
            (Some(entry), Some(generation)) if entry.generation == generation => entry.view.clone(),
            _ => SyncView::Idle,
        }
    }

    /// Forgets the outcome of `namespace/session` (it has been recorded).
    pub fn forget(&self, namespace: &str, session: &str) {
        self.entries
            .remove(&(namespace.to_string(), session.to_string()));
    }

    /// The runner's base URL for a session.
    pub fn base_url(&self, namespace: &str, session: &str, port: u16) -> String {
        self.base_url
            .replace("{session}", session)
            .replace("{namespace}", namespace)
            .replace("{port}", &port.to_string())
    }

    /// Starts `calls` for `generation` of `namespace/session` in a task of their own (unless
    /// some are in flight already); the session is woken when they end.
    pub fn start(
        &self,
        client: kube::Client,
        namespace: &str,
        session: &str,
        generation: i64,
        port: u16,
        calls: Vec<RunnerCall>,
    ) {
        let key = (namespace.to_string(), session.to_string());
        {
            let mut entry = self.entries.entry(key.clone()).or_insert(Entry {
                generation,
                view: SyncView::Idle,
            });
            if entry.view == SyncView::InFlight {
                return;
            }
            *entry = Entry {
                generation,
                view: SyncView::InFlight,
            };
        }
        let this = self.clone();
        let base = self.base_url(namespace, session, port);
        tokio::spawn(async move {
            let outcome = match this.permits.acquire().await {
                Ok(_permit) => this.call_all(&client, &key.0, &key.1, &base, &calls).await,
                Err(_) => SyncView::Failed {
                    workflow: false,
                    message: "shutting down".into(),
                },
            };
            if let Some(mut entry) = this.entries.get_mut(&key)
                && entry.generation == generation
            {
                entry.view = outcome;
            }
            this.waker.wake(&key.0, &key.1);
        });
    }

    async fn call_all(
        &self,
        client: &kube::Client,
        namespace: &str,
        session: &str,
        base: &str,
        calls: &[RunnerCall],
    ) -> SyncView {
        let token = match agui_token(client, namespace, session).await {
            Ok(token) => token,
            Err(message) => {
                return SyncView::Failed {
                    workflow: calls.iter().all(RunnerCall::is_workflow),
                    message,
                };
            }
        };
        for call in calls {
            if let Err(message) = self.call(base, &token, call).await {
                return SyncView::Failed {
                    workflow: call.is_workflow(),
                    message: format!("POST {}: {message}", call.path()),
                };
            }
        }
        SyncView::Succeeded
    }

    async fn call(&self, base: &str, token: &str, call: &RunnerCall) -> Result<(), String> {
        let uri = format!("{}{}", base.trim_end_matches('/'), call.path());
        let request = hyper::Request::post(&uri)
            .header("content-type", "application/json")
            .header(TOKEN_HEADER, token)
            .body(Full::new(Bytes::from(call.body().to_string())))
            .map_err(|e| format!("bad request to {uri}: {e}"))?;
        let exchange = async {
            let response = self
                .http
                .request(request)
                .await
                .map_err(|e| format!("no answer from {uri}: {e}"))?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            if status.is_success() {
                Ok(())
            } else {
                let text = String::from_utf8_lossy(&body);
                Err(format!("runner answered {status}: {}", text.trim()))
            }
        };
        tokio::time::timeout(CALL_TIMEOUT, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "no answer from {uri} within {}s",
                    CALL_TIMEOUT.as_secs()
                ))
            })
    }
}

/// The session's AG-UI token (`agui-token` of `ambient-runner-token-<session>`), read when
/// needed and never kept.
async fn agui_token(
    client: &kube::Client,
    namespace: &str,
    session: &str,
) -> Result<String, String> {
    let name = agentic_crds::names::token_secret_name(session);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = secrets
        .get(&name)
        .await
        .map_err(|e| format!("reading the runner's token Secret {name}: {e}"))?;
    secret
        .data
        .and_then(|mut data| data.remove(agentic_crds::keys::TOKEN_SECRET_AGUI_TOKEN_KEY))
        .and_then(|token| String::from_utf8(token.0).ok())
        .ok_or_else(|| format!("Secret {name} has no agui-token"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_base_url_template_names_the_sessions_service() {
        let syncs = RunnerSyncs::new(
            "http://session-{session}.{namespace}.svc.cluster.local:{port}",
            SessionWaker::default(),
        );
        assert_eq!(
            syncs.base_url("team", "demo", 8001),
            "http://session-demo.team.svc.cluster.local:8001"
        );
    }

    #[tokio::test]
    async fn an_outcome_belongs_to_its_generation() {
        let syncs = RunnerSyncs::new("http://127.0.0.1:1/{session}", SessionWaker::default());
        syncs.entries.insert(
            ("team".into(), "demo".into()),
            Entry {
                generation: 2,
                view: SyncView::Succeeded,
            },
        );
        assert_eq!(syncs.view("team", "demo", Some(2)), SyncView::Succeeded);
        assert_eq!(
            syncs.view("team", "demo", Some(3)),
            SyncView::Idle,
            "the spec moved on"
        );
        syncs.forget("team", "demo");
        assert_eq!(syncs.view("team", "demo", Some(2)), SyncView::Idle);
    }
}
