//! Live changes (SPEC §5.6), the effectful part: telling a Running session's runner about
//! repositories and the workflow over its HTTP API, off the reconcile workers.
//!
//! Invariants:
//! - a reconcile only starts the calls (or reads their outcome); the calls run in a task of
//!   their own, at most [`CONCURRENT_SYNCS`] at once, each bounded by [`CALL_TIMEOUT`], so a
//!   slow or silent runner never holds a worker, and a thousand of them never stall the
//!   reconciles of other sessions;
//! - at most one set of calls per session is in flight; an outcome belongs to the session (by
//!   UID: one deleted and made again under its name is another) and the generation it was made
//!   for, and is ignored once the spec moved on;
//! - with sharding, the calls count as work in flight in the session's bucket until they end:
//!   a replica releasing the bucket waits for them, so two replicas never call one runner;
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
    uid: String,
    generation: i64,
    view: SyncView,
}

/// One generation of one session.
#[derive(Debug, Clone, Copy)]
pub struct SessionGeneration<'a> {
    /// The session's namespace.
    pub namespace: &'a str,
    /// Its name.
    pub name: &'a str,
    /// Its UID.
    pub uid: &'a str,
    /// `metadata.generation`.
    pub generation: i64,
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

    /// Where the calls for `of` stand.
    pub fn view(&self, of: SessionGeneration<'_>) -> SyncView {
        let key = (of.namespace.to_string(), of.name.to_string());
        match self.entries.get(&key) {
            Some(entry) if entry.uid == of.uid && entry.generation == of.generation => {
                entry.view.clone()
            }
            _ => SyncView::Idle,
        }
    }

    /// Forgets the outcome of `namespace/session` (it has been recorded).
    pub fn forget(&self, namespace: &str, session: &str) {
        self.entries
            .remove(&(namespace.to_string(), session.to_string()));
    }

    /// Forgets the outcomes of every session in a namespace `leaving` says this replica no
    /// longer holds (a released bucket: no call of those sessions is in flight then).
    pub fn forget_namespaces(&self, leaving: impl Fn(&str) -> bool) {
        self.entries.retain(|(namespace, _), _| !leaving(namespace));
    }

    /// The runner's base URL for a session.
    pub fn base_url(&self, namespace: &str, session: &str, port: u16) -> String {
        self.base_url
            .replace("{session}", session)
            .replace("{namespace}", namespace)
            .replace("{port}", &port.to_string())
    }

    /// Starts `calls` for `of` in a task of their own (unless some are in flight already); the
    /// session is woken when they end. `hold` (the session's bucket, with sharding) is held
    /// until then.
    pub fn start<H: Send + 'static>(
        &self,
        client: kube::Client,
        of: SessionGeneration<'_>,
        port: u16,
        calls: Vec<RunnerCall>,
        hold: H,
    ) {
        let key = (of.namespace.to_string(), of.name.to_string());
        let generation = of.generation;
        {
            let mut entry = self.entries.entry(key.clone()).or_insert(Entry {
                uid: of.uid.to_string(),
                generation,
                view: SyncView::Idle,
            });
            if entry.uid == of.uid && entry.view == SyncView::InFlight {
                return;
            }
            *entry = Entry {
                uid: of.uid.to_string(),
                generation,
                view: SyncView::InFlight,
            };
        }
        let this = self.clone();
        let base = self.base_url(of.namespace, of.name, port);
        let uid = of.uid.to_string();
        tokio::spawn(async move {
            let _hold = hold;
            let outcome = match this.permits.acquire().await {
                Ok(_permit) => this.call_all(&client, &key.0, &key.1, &base, &calls).await,
                Err(_) => SyncView::Failed {
                    workflow: false,
                    message: "shutting down".into(),
                },
            };
            if let Some(mut entry) = this.entries.get_mut(&key)
                && entry.uid == uid
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
                uid: "uid-1".into(),
                generation: 2,
                view: SyncView::Succeeded,
            },
        );
        let of = |uid, generation| SessionGeneration {
            namespace: "team",
            name: "demo",
            uid,
            generation,
        };
        assert_eq!(syncs.view(of("uid-1", 2)), SyncView::Succeeded);
        assert_eq!(
            syncs.view(of("uid-1", 3)),
            SyncView::Idle,
            "the spec moved on"
        );
        assert_eq!(
            syncs.view(of("uid-2", 2)),
            SyncView::Idle,
            "another session of that name"
        );
        syncs.forget("team", "demo");
        assert_eq!(syncs.view(of("uid-1", 2)), SyncView::Idle);
    }

    #[tokio::test]
    async fn outcomes_of_a_released_namespace_are_forgotten() {
        let syncs = RunnerSyncs::new("http://{session}:{port}", SessionWaker::default());
        for namespace in ["kept", "released"] {
            syncs.entries.insert(
                (namespace.into(), "demo".into()),
                Entry {
                    uid: "uid".into(),
                    generation: 1,
                    view: SyncView::Succeeded,
                },
            );
        }
        syncs.forget_namespaces(|namespace| namespace == "released");
        let left: Vec<String> = syncs.entries.iter().map(|e| e.key().0.clone()).collect();
        assert_eq!(left, ["kept"]);
    }
}
