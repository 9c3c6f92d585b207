//! The runner pod's Events, republished under `Pod <session>-runner` (SPEC §5.2): the
//! platform's backend shows a session's pod Events by listing those whose `involvedObject.name`
//! is `<session>-runner` (the original ran a bare pod of that name); a Job's pod is named
//! `<session>-job-<suffix>`, so the operator copies each of its Events (type, reason, message)
//! under that name.
//!
//! The Job controller's refusals to create a runner Job's pod (`FailedCreate`: a quota, a
//! LimitRange, an admission policy; SPEC §7.3) are recorded for the session's reconcile
//! ([`super::refusals`]), which wakes, and copied the same way: a Job's pod that was never made
//! has no Events of its own.
//!
//! Invariants: only Events about the operator's own runner pods (found in the pod cache) and
//! runner Jobs are copied, only those that arrive after start-up (no replay of history on a
//! restart; a refusal still standing is recorded from the initial list, though), each distinct
//! `(reason, message)` once per [`REPEAT_WINDOW`] per session, and at most
//! [`PER_SESSION_PER_MINUTE`] per session per minute; nothing is cached but those counters and
//! the refusals.
//!
//! With `--sharding` the watch is scoped like the caches: its requests carry the shard selector
//! of this replica's scope (the API server sends only those namespaces' Events, when it can),
//! Events of namespaces outside the active buckets are dropped, and a scope that gains buckets
//! restarts the watch with the new selector (Events during that restart are not copied: they
//! are history by the time the new watch lists them).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Event as CoreEvent, ObjectReference};
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use parking_lot::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::SessionContext;
use crate::cache::projections::RunnerChild;
use crate::handlers::session::refusals::PodRefusal;
use crate::observability::events::Note;
use crate::shard::{BucketSet, Scope, ShardSelector};

/// A repeated `(reason, message)` of one session is copied again only after this long.
pub const REPEAT_WINDOW: Duration = Duration::from_secs(600);
/// At most this many Events copied per session per minute.
pub const PER_SESSION_PER_MINUTE: u32 = 20;

/// Decides which Events are copied: dedup and a per-session rate limit.
///
/// Both windows are keyed by a hash of what they track (seeded per process), not by copies of
/// its strings: the dedup window is ten minutes long, so during a start-up it holds several
/// Events of nearly every session. Two different Events colliding on 64 bits would only make
/// one of them look repeated.
#[derive(Default)]
pub struct Limiter {
    hasher: RandomState,
    /// Hash of `(namespace, session, reason, message)` → when it was last copied.
    seen: HashMap<u64, Instant>,
    /// Hash of `(namespace, session)` → the current minute's start and count.
    minute: HashMap<u64, (Instant, u32)>,
    swept: Option<Instant>,
}

impl Limiter {
    /// Whether an Event `(reason, message)` about `namespace/session` is copied now.
    pub fn admit(&mut self, namespace: &str, session: &str, reason: &str, message: &str) -> bool {
        let now = Instant::now();
        self.sweep(now);
        let event = self.hasher.hash_one((namespace, session, reason, message));
        if self
            .seen
            .get(&event)
            .is_some_and(|at| now.duration_since(*at) < REPEAT_WINDOW)
        {
            return false;
        }
        let window = self
            .minute
            .entry(self.hasher.hash_one((namespace, session)))
            .or_insert((now, 0));
        if now.duration_since(window.0) >= Duration::from_secs(60) {
            *window = (now, 0);
        }
        if window.1 >= PER_SESSION_PER_MINUTE {
            return false;
        }
        window.1 += 1;
        self.seen.insert(event, now);
        true
    }

    /// Forgets what is out of every window (at most once a minute).
    fn sweep(&mut self, now: Instant) {
        if self
            .swept
            .is_some_and(|at| now.duration_since(at) < Duration::from_secs(60))
        {
            return;
        }
        self.swept = Some(now);
        self.seen
            .retain(|_, at| now.duration_since(*at) < REPEAT_WINDOW);
        self.minute
            .retain(|_, (at, _)| now.duration_since(*at) < Duration::from_secs(60));
    }
}

/// The Job controller's Event reason for a pod it could not create.
const FAILED_CREATE: &str = "FailedCreate";

/// Copies runner pod Events, and records and copies runner Jobs' pod refusals, until
/// `shutdown`.
pub async fn run(ctx: SessionContext, shutdown: CancellationToken) {
    let selector = ShardSelector::default();
    let mut scopes = ctx.shard.as_ref().map(|gate| gate.subscribe());
    let client = match &scopes {
        Some(_) => selector.client(&ctx.client_config, &ctx.client, "runner Events"),
        None => ctx.client.clone(),
    };
    let limiter = Mutex::new(Limiter::default());
    loop {
        // The selector changes only here, while no request of the watch is in flight.
        let mut scope = scopes.as_mut().map(|s| s.borrow_and_update().buckets);
        if let Some(buckets) = scope {
            selector.set(buckets);
        }
        let events: Api<CoreEvent> = Api::all(client.clone());
        let pods = watcher::Config::default().fields("involvedObject.kind=Pod");
        let refusals = watcher::Config::default()
            .fields(&format!("involvedObject.kind=Job,reason={FAILED_CREATE}"));
        let pods = watcher::watcher(events.clone(), pods).default_backoff();
        let refusals = watcher::watcher(events, refusals).default_backoff();
        let stream = futures::stream::select(pods.map(|e| (false, e)), refusals.map(|e| (true, e)));
        let gained =
            copy_until_scope_grows(&ctx, &limiter, stream, &mut scopes, &mut scope, &shutdown)
                .await;
        if !gained {
            return;
        }
    }
}

/// Handles the watch's Events until `shutdown` or the end of the stream (`false`), or until
/// the scope gains buckets (`true`: the watch must restart with the new selector).
async fn copy_until_scope_grows(
    ctx: &SessionContext,
    limiter: &Mutex<Limiter>,
    stream: impl futures::Stream<Item = (bool, Result<Event<CoreEvent>, watcher::Error>)>,
    scopes: &mut Option<tokio::sync::watch::Receiver<Scope>>,
    scope: &mut Option<BucketSet>,
    shutdown: &CancellationToken,
) -> bool {
    let mut stream = std::pin::pin!(stream);
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => return false,
            next = next_scope(scopes) => {
                let grew = scope.is_some_and(|held| !next.is_subset(&held));
                *scope = Some(next);
                if grew {
                    return true;
                }
                continue;
            }
            next = stream.next() => next,
        };
        match next {
            // A refusal still standing is state, not history: recorded from the initial list.
            Some((true, Ok(Event::Apply(event)))) => {
                if let Some(session) = record_refusal(ctx, &event) {
                    republish(ctx, limiter, &event, &session).await;
                }
            }
            Some((true, Ok(Event::InitApply(event)))) => {
                record_refusal(ctx, &event);
            }
            // Only what happens from now on: the initial list is history.
            Some((false, Ok(Event::Apply(event)))) => {
                if let Some(session) = runner_pod_session(ctx, &event) {
                    republish(ctx, limiter, &event, &session).await;
                }
            }
            Some((_, Ok(_))) => {}
            Some((_, Err(error))) => {
                tracing::debug!(%error, "runner event watch error; retrying");
            }
            None => return false,
        }
    }
}

/// The next scope published (never, without sharding or once the coordinator is gone).
async fn next_scope(scopes: &mut Option<tokio::sync::watch::Receiver<Scope>>) -> BucketSet {
    let Some(receiver) = scopes else {
        return std::future::pending().await;
    };
    if receiver.changed().await.is_err() {
        *scopes = None; // shutting down
        return std::future::pending().await;
    }
    receiver.borrow_and_update().buckets
}

/// The session of the runner pod `event` is about, if it is one of ours in this replica's part.
fn runner_pod_session(ctx: &SessionContext, event: &CoreEvent) -> Option<String> {
    let object = &event.involved_object;
    let (namespace, pod) = (object.namespace.as_deref()?, object.name.as_deref()?);
    if ctx.shard.as_ref().is_some_and(|gate| !gate.owns(namespace)) {
        return None; // another replica's part
    }
    ctx.caches
        .pods
        .get(namespace, pod)
        .and_then(|p| p.session_name().map(str::to_string))
}

/// Records a `FailedCreate` of a runner Job (one of this replica's managed namespaces) for its
/// session and wakes the session; returns the session.
fn record_refusal(ctx: &SessionContext, event: &CoreEvent) -> Option<String> {
    let object = &event.involved_object;
    let (namespace, job) = (object.namespace.as_deref()?, object.name.as_deref()?);
    let job_uid = object.uid.clone()?;
    if !ctx.caches.is_managed(namespace) || ctx.shard.as_ref().is_some_and(|g| !g.owns(namespace)) {
        return None;
    }
    // The Job's session from the cache; a Job created moments ago may not be there yet, and its
    // name says it (a refusal is only ever matched against the current Job's UID).
    let session = match ctx.caches.job(namespace, job) {
        Some(cached) => cached.session_name()?.to_string(),
        None => job
            .strip_suffix(agentic_crds::names::JOB_SUFFIX)?
            .to_string(),
    };
    let since = event
        .first_timestamp
        .as_ref()
        .map(|t| t.0)
        .or(event.event_time.as_ref().map(|t| t.0))
        .unwrap_or_else(k8s_openapi::jiff::Timestamp::now);
    let refusal = PodRefusal {
        job_uid,
        message: event.message.clone().unwrap_or_default(),
        since,
    };
    if ctx.state.refusals.record(namespace, &session, refusal) {
        ctx.state.waker.wake(namespace, &session);
    }
    Some(session)
}

async fn republish(
    ctx: &SessionContext,
    limiter: &Mutex<Limiter>,
    event: &CoreEvent,
    session: &str,
) {
    let Some(namespace) = event.involved_object.namespace.as_deref() else {
        return;
    };
    let session = session.to_string();
    let reason = event.reason.clone().unwrap_or_default();
    let message = event.message.clone().unwrap_or_default();
    if !limiter.lock().admit(namespace, &session, &reason, &message) {
        return;
    }
    let regarding = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: Some(agentic_crds::names::original_runner_pod_name(&session)),
        namespace: Some(namespace.to_string()),
        ..Default::default()
    };
    let note = Note {
        warning: event.type_.as_deref() == Some("Warning"),
        reason,
        message,
    };
    if let Err(error) = ctx.events.publish_about(&regarding, &note).await {
        tracing::debug!(%error, namespace, session, "could not republish a runner pod Event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn repeats_are_copied_once_per_window_and_a_session_is_rate_limited() {
        let mut limiter = Limiter::default();
        assert!(limiter.admit("ns", "s", "Pulled", "image pulled"));
        assert!(
            !limiter.admit("ns", "s", "Pulled", "image pulled"),
            "a repeat"
        );
        assert!(
            limiter.admit("ns", "other", "Pulled", "image pulled"),
            "another session"
        );
        assert!(
            limiter.admit("n", "ss", "Pulled", "image pulled"),
            "names that only concatenate alike are another session"
        );
        for i in 1..PER_SESSION_PER_MINUTE {
            assert!(limiter.admit("ns", "s", "BackOff", &format!("try {i}")));
        }
        assert!(!limiter.admit("ns", "s", "BackOff", "one too many"));
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(limiter.admit("ns", "s", "BackOff", "a new minute"));
        assert!(
            !limiter.admit("ns", "s", "Pulled", "image pulled"),
            "still in its window"
        );
        tokio::time::advance(REPEAT_WINDOW).await;
        assert!(limiter.admit("ns", "s", "Pulled", "image pulled"));
    }
}
