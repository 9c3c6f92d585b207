//! The runner pod's Events, republished under `Pod <session>-runner` (SPEC §5.2): the
//! platform's backend shows a session's pod Events by listing those whose `involvedObject.name`
//! is `<session>-runner` (the original ran a bare pod of that name); a Job's pod is named
//! `<session>-job-<suffix>`, so the operator copies each of its Events (type, reason, message)
//! under that name.
//!
//! Invariants: only Events about the operator's own runner pods (found in the pod cache) are
//! copied, only those that arrive after start-up (no replay of history on a restart), each
//! distinct `(reason, message)` once per [`REPEAT_WINDOW`] per session, and at most
//! [`PER_SESSION_PER_MINUTE`] per session per minute; nothing is cached but those counters.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Event as CoreEvent, ObjectReference};
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use parking_lot::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::context::Context;
use crate::projections::RunnerChild;
use crate::session::phases::Note;

/// A repeated `(reason, message)` of one session is copied again only after this long.
pub const REPEAT_WINDOW: Duration = Duration::from_secs(600);
/// At most this many Events copied per session per minute.
pub const PER_SESSION_PER_MINUTE: u32 = 20;

/// Decides which Events are copied: dedup and a per-session rate limit.
#[derive(Default)]
pub struct Limiter {
    seen: HashMap<(String, String, String, String), Instant>,
    minute: HashMap<(String, String), (Instant, u32)>,
    swept: Option<Instant>,
}

impl Limiter {
    /// Whether an Event `(reason, message)` about `namespace/session` is copied now.
    pub fn admit(&mut self, namespace: &str, session: &str, reason: &str, message: &str) -> bool {
        let now = Instant::now();
        self.sweep(now);
        let key = (
            namespace.to_string(),
            session.to_string(),
            reason.to_string(),
            message.to_string(),
        );
        if self
            .seen
            .get(&key)
            .is_some_and(|at| now.duration_since(*at) < REPEAT_WINDOW)
        {
            return false;
        }
        let window = self
            .minute
            .entry((namespace.to_string(), session.to_string()))
            .or_insert((now, 0));
        if now.duration_since(window.0) >= Duration::from_secs(60) {
            *window = (now, 0);
        }
        if window.1 >= PER_SESSION_PER_MINUTE {
            return false;
        }
        window.1 += 1;
        self.seen.insert(key, now);
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

/// Copies runner pod Events until `shutdown`.
pub async fn run(ctx: Context, shutdown: CancellationToken) {
    let events: Api<CoreEvent> = Api::all(ctx.client.clone());
    let config = watcher::Config::default().fields("involvedObject.kind=Pod");
    let stream = watcher::watcher(events, config).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let limiter = Mutex::new(Limiter::default());
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => return,
            next = stream.next() => next,
        };
        match next {
            // Only what happens from now on: the initial list is history.
            Some(Ok(Event::Apply(event))) => republish(&ctx, &limiter, &event).await,
            Some(Ok(_)) => {}
            Some(Err(error)) => tracing::debug!(%error, "runner event watch error; retrying"),
            None => return,
        }
    }
}

async fn republish(ctx: &Context, limiter: &Mutex<Limiter>, event: &CoreEvent) {
    let object = &event.involved_object;
    let (Some(namespace), Some(pod)) = (object.namespace.as_deref(), object.name.as_deref()) else {
        return;
    };
    let Some(session) = ctx
        .caches
        .pods
        .get(&kube::runtime::reflector::ObjectRef::new(pod).within(namespace))
        .and_then(|p| p.session_name().map(str::to_string))
    else {
        return; // not a runner pod of ours
    };
    let reason = event.reason.clone().unwrap_or_default();
    let message = event.message.clone().unwrap_or_default();
    if !limiter.lock().admit(namespace, &session, &reason, &message) {
        return;
    }
    let regarding = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: Some(agentic_crds::names::runner_events_name(&session)),
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
