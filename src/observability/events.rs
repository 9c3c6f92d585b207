//! Kubernetes Events about sessions (`events.k8s.io/v1`), one create per phase transition.
//!
//! Invariant: the publisher holds no per-Event state, so memory does not grow with the number of
//! sessions. kube's `Recorder` keeps every Event it published for six minutes (to turn repeats
//! into a patched series) and scans that cache on each publish; at 10 000 sessions that was tens
//! of MiB and a global lock on the reconcile path. Our Events are announced on transitions,
//! which do not repeat within seconds, so a series would rarely form and is not worth the cache.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::{Client, Resource};

use agentic_crds::AgenticSession;

/// A Kubernetes Event to publish about the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// Normal or Warning.
    pub warning: bool,
    /// CamelCase reason.
    pub reason: String,
    /// Human-readable message.
    pub message: String,
}

/// The action every session Event reports (what the operator was doing).
pub const ACTION: &str = "Reconcile";

/// Who reports: the controller name and this replica's instance name.
#[derive(Debug, Clone)]
pub struct Reporter {
    /// `reportingController`, e.g. `ambient-code-operator`.
    pub controller: String,
    /// `reportingInstance`: the pod name when known, else the controller name.
    pub instance: String,
}

/// Creates Events; cheap to clone.
#[derive(Clone)]
pub struct EventPublisher {
    client: Client,
    reporter: Reporter,
}

impl EventPublisher {
    /// A publisher reporting as `reporter`.
    pub fn new(client: Client, reporter: Reporter) -> Self {
        EventPublisher { client, reporter }
    }

    /// Creates one Event about `session`. A name collision (two Events about one session in
    /// the same nanosecond) is retried once with a fresh timestamp.
    pub async fn publish(&self, session: &AgenticSession, note: &Note) -> kube::Result<()> {
        self.publish_about(&session.object_ref(&()), note).await
    }

    /// Creates one Event about the object `regarding` (e.g. a runner pod under the name the
    /// platform looks it up by).
    pub async fn publish_about(
        &self,
        regarding: &ObjectReference,
        note: &Note,
    ) -> kube::Result<()> {
        let regarding = regarding.clone();
        let namespace = regarding.namespace.clone().unwrap_or_default();
        let events: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        let mut attempts = 0;
        loop {
            let event = build_event(&self.reporter, &regarding, note, Timestamp::now());
            match events.create(&PostParams::default(), &event).await {
                Err(kube::Error::Api(status)) if status.code == 409 && attempts == 0 => {
                    attempts += 1;
                }
                other => return other.map(drop),
            }
        }
    }
}

/// Most bytes the API server takes in an Event's note; a longer one refuses the Event.
pub const NOTE_LIMIT: usize = 1024;

/// `message` cut to [`NOTE_LIMIT`] bytes (at a character boundary, ending in `…` when cut): a
/// long message (a kubelet's, an API server's) still gets its Event.
fn within_note_limit(message: &str) -> String {
    if message.len() <= NOTE_LIMIT {
        return message.to_string();
    }
    const ELLIPSIS: &str = "…";
    let mut end = NOTE_LIMIT - ELLIPSIS.len();
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{ELLIPSIS}", &message[..end])
}

/// The Event announcing `note` about the object `regarding`, observed at `now`. Its name is
/// the object's name and the time in hex nanoseconds (client-go's convention), unique per
/// object in practice.
pub fn build_event(
    reporter: &Reporter,
    regarding: &ObjectReference,
    note: &Note,
    now: Timestamp,
) -> Event {
    let name = format!(
        "{}.{:x}",
        regarding.name.as_deref().unwrap_or(&reporter.controller),
        now.as_nanosecond()
    );
    Event {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: regarding.namespace.clone(),
            ..Default::default()
        },
        action: Some(ACTION.into()),
        reason: Some(note.reason.clone()),
        note: Some(within_note_limit(&note.message)),
        type_: Some(if note.warning { "Warning" } else { "Normal" }.into()),
        event_time: Some(MicroTime(now)),
        regarding: Some(regarding.clone()),
        reporting_controller: Some(reporter.controller.clone()),
        reporting_instance: Some(reporter.instance.clone()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regarding() -> ObjectReference {
        ObjectReference {
            api_version: Some("vteam.ambient-code/v1alpha1".into()),
            kind: Some("AgenticSession".into()),
            name: Some("demo".into()),
            namespace: Some("team-a".into()),
            uid: Some("u-1".into()),
            ..Default::default()
        }
    }

    fn reporter() -> Reporter {
        Reporter {
            controller: "ambient-code-operator".into(),
            instance: "operator-0".into(),
        }
    }

    #[test]
    fn a_long_note_is_cut_to_what_the_api_server_takes() {
        let long = "é".repeat(700); // 1400 bytes
        let note = Note {
            warning: true,
            reason: "FailedCreate".into(),
            message: long.clone(),
        };
        let event = build_event(&reporter(), &regarding(), &note, Timestamp::now());
        let cut = event.note.unwrap();
        assert!(cut.len() <= NOTE_LIMIT, "{}", cut.len());
        assert!(cut.ends_with('…') && long.starts_with(cut.trim_end_matches('…')));
        let short = within_note_limit("fine");
        assert_eq!(short, "fine");
    }

    #[test]
    fn event_names_the_session_and_reporter() {
        let note = Note {
            warning: true,
            reason: "Failed".into(),
            message: "Running -> Failed: exit code 1".into(),
        };
        let now: Timestamp = "2026-01-02T03:04:05.000000006Z".parse().unwrap();
        let event = build_event(&reporter(), &regarding(), &note, now);
        assert_eq!(
            event.metadata.name.as_deref(),
            Some(format!("demo.{:x}", now.as_nanosecond()).as_str())
        );
        assert_eq!(event.metadata.namespace.as_deref(), Some("team-a"));
        assert_eq!(event.type_.as_deref(), Some("Warning"));
        assert_eq!(event.reason.as_deref(), Some("Failed"));
        assert_eq!(
            event.note.as_deref(),
            Some("Running -> Failed: exit code 1")
        );
        assert_eq!(event.action.as_deref(), Some(ACTION));
        assert_eq!(event.regarding, Some(regarding()));
        assert_eq!(
            event.reporting_controller.as_deref(),
            Some("ambient-code-operator")
        );
        assert_eq!(event.reporting_instance.as_deref(), Some("operator-0"));
        assert_eq!(event.event_time, Some(MicroTime(now)));
        assert!(event.series.is_none());
    }

    #[test]
    fn normal_notes_are_normal_events_and_names_differ_over_time() {
        let note = Note {
            warning: false,
            reason: "Running".into(),
            message: "Creating -> Running".into(),
        };
        let t1: Timestamp = "2026-01-02T03:04:05Z".parse().unwrap();
        let t2: Timestamp = "2026-01-02T03:04:05.000000001Z".parse().unwrap();
        let first = build_event(&reporter(), &regarding(), &note, t1);
        let second = build_event(&reporter(), &regarding(), &note, t2);
        assert_eq!(first.type_.as_deref(), Some("Normal"));
        assert_ne!(first.metadata.name, second.metadata.name);
    }
}
