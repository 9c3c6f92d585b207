//! What `/healthz` says about the engine, whichever it is. The operator is unhealthy (and the
//! kubelet should restart it) while
//!
//! - a watch is dead: its task ended other than by shutdown, or every attempt to list or watch
//!   has failed for longer than `--watch-failure-threshold`; or
//! - a worker is wedged: a reconcile has been running for longer than `--reconcile-timeout`
//!   plus [`WEDGED_MARGIN`]. The timeout cancels a reconcile at its next `.await`, so one still
//!   running past it holds its thread without yielding.
//!
//! An engine registers each watch ([`Health::watch`]) and lists and watches through the client
//! the returned [`WatchReporter`] builds: every answer of the API server to that client is
//! reported, so a watch that resumed after errors is seen healthy again even when no event has
//! arrived since (kube's watcher resumes silently). [`crate::engine::handle`] registers every reconcile
//! ([`Health::reconciling`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use kube::Client;
use kube::client::ClientBuilder;
use parking_lot::Mutex;
use tokio::time::Instant;

use crate::cache::ObjectKey;

/// How much longer than `--reconcile-timeout` a reconcile may run before its worker counts as
/// wedged (the timeout fires only at the reconcile's next `.await`; a busy runtime may take a
/// moment to get there).
pub const WEDGED_MARGIN: Duration = Duration::from_secs(10);

/// Shared view of the watches and in-flight reconciles; cheap to clone.
#[derive(Clone)]
pub struct Health {
    inner: Arc<Inner>,
}

struct Inner {
    watch_failure_threshold: Duration,
    wedged_after: Duration,
    watches: Mutex<Vec<Arc<WatchSlot>>>,
    /// In-flight reconciles by start order (the first is the oldest).
    reconciling: Mutex<BTreeMap<u64, (ObjectKey, Instant)>>,
    next_reconcile: AtomicU64,
}

/// One reason `/healthz` fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A watch task ended other than by shutdown.
    WatchEnded {
        /// The watch.
        watch: &'static str,
    },
    /// Every list or watch attempt has failed for this long.
    WatchFailing {
        /// The watch.
        watch: &'static str,
        /// Since the first failure after the last success.
        for_: Duration,
        /// The latest failure.
        error: String,
    },
    /// A reconcile has run past the timeout and its margin.
    Wedged {
        /// What it reconciles.
        key: ObjectKey,
        /// How long it has been running.
        for_: Duration,
    },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::WatchEnded { watch } => write!(f, "watch {watch} has ended"),
            Problem::WatchFailing { watch, for_, error } => write!(
                f,
                "watch {watch} has been failing for {}s: {error}",
                for_.as_secs()
            ),
            Problem::Wedged { key, for_ } => write!(
                f,
                "worker wedged: the reconcile of {key} has been running for {}s",
                for_.as_secs()
            ),
        }
    }
}

impl Health {
    /// A view that fails on watches failing for `watch_failure_threshold` and on reconciles
    /// running for `reconcile_timeout` plus [`WEDGED_MARGIN`].
    pub fn new(watch_failure_threshold: Duration, reconcile_timeout: Duration) -> Self {
        Health {
            inner: Arc::new(Inner {
                watch_failure_threshold,
                wedged_after: reconcile_timeout + WEDGED_MARGIN,
                watches: Mutex::default(),
                reconciling: Mutex::default(),
                next_reconcile: AtomicU64::new(0),
            }),
        }
    }

    /// Registers a watch named `watch`; it counts as running until its reporter is dropped
    /// (ended) or [`stopped`](WatchReporter::stopped).
    pub fn watch(&self, watch: &'static str) -> WatchReporter {
        let slot = Arc::new(WatchSlot {
            name: watch,
            failing: AtomicBool::new(false),
            state: Mutex::new(WatchState::Running {
                failing_since: None,
                error: String::new(),
            }),
        });
        self.inner.watches.lock().push(Arc::clone(&slot));
        WatchReporter { slot }
    }

    /// Registers a reconcile of `key` until the returned guard is dropped.
    pub fn reconciling(&self, key: &ObjectKey) -> Reconciling {
        let id = self.inner.next_reconcile.fetch_add(1, Ordering::Relaxed);
        self.inner
            .reconciling
            .lock()
            .insert(id, (key.clone(), Instant::now()));
        Reconciling {
            inner: Arc::clone(&self.inner),
            id,
        }
    }

    /// Everything that makes the operator unhealthy now (empty: healthy).
    pub fn problems(&self) -> Vec<Problem> {
        let now = Instant::now();
        let mut problems = Vec::new();
        for slot in self.inner.watches.lock().iter() {
            match &*slot.state.lock() {
                WatchState::Ended => problems.push(Problem::WatchEnded { watch: slot.name }),
                WatchState::Running {
                    failing_since: Some(since),
                    error,
                } if now.saturating_duration_since(*since)
                    >= self.inner.watch_failure_threshold =>
                {
                    problems.push(Problem::WatchFailing {
                        watch: slot.name,
                        for_: now.saturating_duration_since(*since),
                        error: error.clone(),
                    });
                }
                WatchState::Running { .. } | WatchState::Stopped => {}
            }
        }
        // Start order: if the oldest is not wedged, none is.
        if let Some((key, since)) = self.inner.reconciling.lock().values().next()
            && now.saturating_duration_since(*since) >= self.inner.wedged_after
        {
            problems.push(Problem::Wedged {
                key: key.clone(),
                for_: now.saturating_duration_since(*since),
            });
        }
        problems
    }
}

/// A registered reconcile; dropping it (finished, cancelled or unwound) unregisters it.
pub struct Reconciling {
    inner: Arc<Inner>,
    id: u64,
}

impl Drop for Reconciling {
    fn drop(&mut self) {
        self.inner.reconciling.lock().remove(&self.id);
    }
}

struct WatchSlot {
    name: &'static str,
    /// Mirrors `failing_since.is_some()`, so a success is one atomic load when nothing failed.
    failing: AtomicBool,
    state: Mutex<WatchState>,
}

enum WatchState {
    Running {
        /// The first failure after the last success.
        failing_since: Option<Instant>,
        /// The latest failure.
        error: String,
    },
    /// Stopped by shutdown.
    Stopped,
    /// Ended otherwise: dead.
    Ended,
}

impl WatchSlot {
    fn succeeded(&self) {
        if !self.failing.load(Ordering::Acquire) {
            return;
        }
        if let WatchState::Running { failing_since, .. } = &mut *self.state.lock() {
            *failing_since = None;
        }
        self.failing.store(false, Ordering::Release);
    }

    fn failed(&self, cause: &dyn std::fmt::Display) {
        if let WatchState::Running {
            failing_since,
            error,
        } = &mut *self.state.lock()
        {
            failing_since.get_or_insert_with(Instant::now);
            *error = cause.to_string();
            self.failing.store(true, Ordering::Release);
        }
    }
}

/// A watch's line to [`Health`]. Dropping it marks the watch ended (dead) unless it was
/// [`stopped`](Self::stopped).
pub struct WatchReporter {
    slot: Arc<WatchSlot>,
}

impl WatchReporter {
    /// The watch delivered something: it works.
    pub fn succeeded(&self) {
        self.slot.succeeded();
    }

    /// A list or watch attempt failed with `error`.
    pub fn failed(&self, error: &dyn std::fmt::Display) {
        self.slot.failed(error);
    }

    /// The watch stopped because the operator is shutting down: not a failure.
    pub fn stopped(self) {
        *self.slot.state.lock() = WatchState::Stopped;
    }

    /// A client built from `config` that reports every answer to this watch: a success
    /// status is a success, an error status or a failed request a failure. Give it to this
    /// watch alone.
    pub fn client(&self, config: &kube::Config) -> Result<Client, kube::Error> {
        Ok(ClientBuilder::try_from(config.clone())?
            .with_layer(&self.answers())
            .build())
    }

    /// The layer [`Self::client`] adds, for a caller that stacks more layers on the same client
    /// (a shard selector): the first layer of its stack.
    pub fn answers(&self) -> ReportAnswers {
        ReportAnswers {
            slot: Arc::clone(&self.slot),
        }
    }
}

impl Drop for WatchReporter {
    fn drop(&mut self) {
        let mut state = self.slot.state.lock();
        if !matches!(*state, WatchState::Stopped) {
            *state = WatchState::Ended;
        }
    }
}

/// Tower layer behind [`WatchReporter::client`]: reports each answer to the watch's slot.
pub struct ReportAnswers {
    slot: Arc<WatchSlot>,
}

impl<S> tower::Layer<S> for ReportAnswers {
    type Service = Reporting<S>;

    fn layer(&self, inner: S) -> Reporting<S> {
        Reporting {
            inner,
            slot: Arc::clone(&self.slot),
        }
    }
}

/// The service [`ReportAnswers`] wraps a client's stack in.
pub struct Reporting<S> {
    inner: S,
    slot: Arc<WatchSlot>,
}

impl<S, Request, Body> tower::Service<Request> for Reporting<S>
where
    S: tower::Service<Request, Response = hyper::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: std::fmt::Display,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let answer = self.inner.call(request);
        let slot = Arc::clone(&self.slot);
        Box::pin(async move {
            let answer = answer.await;
            match &answer {
                Ok(response) if response.status().is_success() => slot.succeeded(),
                Ok(response) => slot.failed(&format_args!("HTTP {}", response.status())),
                Err(error) => slot.failed(error),
            }
            answer
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const THRESHOLD: Duration = Duration::from_secs(120);
    const TIMEOUT: Duration = Duration::from_secs(120);

    fn key() -> ObjectKey {
        ObjectKey::Session {
            namespace: "ns".into(),
            name: "s".into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_watch_is_dead_once_it_has_failed_continuously_for_the_threshold() {
        let health = Health::new(THRESHOLD, TIMEOUT);
        let watch = health.watch("sessions");
        watch.failed(&"connection refused");
        tokio::time::sleep(THRESHOLD - Duration::from_secs(1)).await;
        watch.failed(&"connection refused again");
        assert_eq!(health.problems(), vec![]);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            health.problems(),
            vec![Problem::WatchFailing {
                watch: "sessions",
                for_: THRESHOLD,
                error: "connection refused again".into()
            }]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_ends_a_streak_of_failures() {
        let health = Health::new(THRESHOLD, TIMEOUT);
        let watch = health.watch("jobs");
        watch.failed(&"refused");
        tokio::time::sleep(THRESHOLD / 2).await;
        watch.succeeded();
        watch.failed(&"refused");
        tokio::time::sleep(THRESHOLD / 2).await;
        assert_eq!(health.problems(), vec![], "the streak restarted");
        tokio::time::sleep(THRESHOLD).await;
        watch.succeeded();
        assert_eq!(health.problems(), vec![]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_watch_that_ended_is_dead_unless_it_stopped_for_shutdown() {
        let health = Health::new(THRESHOLD, TIMEOUT);
        let ended = health.watch("pods");
        let stopped = health.watch("secrets");
        drop(ended);
        stopped.stopped();
        assert_eq!(
            health.problems(),
            vec![Problem::WatchEnded { watch: "pods" }]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_reconcile_running_past_the_timeout_and_margin_is_a_wedged_worker() {
        let health = Health::new(THRESHOLD, TIMEOUT);
        let oldest = health.reconciling(&key());
        tokio::time::sleep(TIMEOUT).await;
        let _younger = health.reconciling(&ObjectKey::Namespace("ns".into()));
        tokio::time::sleep(WEDGED_MARGIN - Duration::from_millis(1)).await;
        assert_eq!(health.problems(), vec![]);
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(
            health.problems(),
            vec![Problem::Wedged {
                key: key(),
                for_: TIMEOUT + WEDGED_MARGIN
            }]
        );
        drop(oldest);
        assert_eq!(
            health.problems(),
            vec![],
            "the younger one is within bounds"
        );
    }

    #[tokio::test]
    async fn every_answer_to_a_watch_client_is_reported() {
        // A real HTTP server on loopback that answers 500 to the first request, 200 after.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding a loopback port");
        let address = listener.local_addr().expect("its address");
        tokio::spawn(async move {
            let mut answered = 0;
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                answered += 1;
                let status = if answered == 1 { 500 } else { 200 };
                let service = hyper::service::service_fn(move |_| async move {
                    let mut response = hyper::Response::new(http_body_util::Full::new(
                        hyper::body::Bytes::from(
                            r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"no","reason":"InternalError","code":500}"#,
                        ),
                    ));
                    *response.status_mut() = hyper::StatusCode::from_u16(status).expect("a status");
                    Ok::<_, std::convert::Infallible>(response)
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .keep_alive(false)
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                );
            }
        });
        let health = Health::new(Duration::ZERO, TIMEOUT);
        let watch = health.watch("namespaces");
        let config = kube::Config::new(format!("http://{address}").parse().expect("a URL"));
        let client = watch.client(&config).expect("a client");
        let request = || {
            hyper::Request::get("/version")
                .body(Vec::new())
                .expect("a request")
        };
        let _ = client.request_text(request()).await;
        assert!(
            matches!(&health.problems()[..], [Problem::WatchFailing { error, .. }] if error.contains("500")),
            "{:?}",
            health.problems()
        );
        let _ = client.request_text(request()).await;
        assert_eq!(health.problems(), vec![]);
    }
}
