//! Which object a reconcile is for: the key the engines queue, the caches index by and the
//! session handler wakes.

use agentic_crds::AgenticSession;
use kube::ResourceExt;

use super::projections::RunnerChild;

/// What a handler is asked to reconcile. One variant per kind the operator reconciles.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKey {
    /// An AgenticSession.
    Session {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// A Namespace (by name).
    Namespace(String),
    /// The ProjectSettings singleton of a namespace.
    ProjectSettings(String),
    /// The copies of shared Secrets in a namespace.
    SecretCopies(String),
}

impl ObjectKey {
    /// The namespace the key belongs to (the fairness tenant).
    pub fn namespace(&self) -> &str {
        match self {
            ObjectKey::Session { namespace, .. } => namespace,
            ObjectKey::Namespace(name)
            | ObjectKey::ProjectSettings(name)
            | ObjectKey::SecretCopies(name) => name,
        }
    }

    /// A span that puts the key on every log line of its reconcile.
    pub fn span(&self) -> tracing::Span {
        match self {
            ObjectKey::Session { namespace, name } => {
                tracing::info_span!(
                    "reconcile",
                    kind = "AgenticSession",
                    namespace,
                    session = name
                )
            }
            ObjectKey::Namespace(name) => {
                tracing::info_span!("reconcile", kind = "Namespace", namespace = name)
            }
            ObjectKey::ProjectSettings(namespace) => {
                tracing::info_span!("reconcile", kind = "ProjectSettings", namespace)
            }
            ObjectKey::SecretCopies(namespace) => {
                tracing::info_span!("reconcile", kind = "SecretCopies", namespace)
            }
        }
    }

    /// The key of a session (none without a namespace).
    pub fn of_session(session: &AgenticSession) -> Option<ObjectKey> {
        Some(ObjectKey::Session {
            namespace: session.namespace()?,
            name: session.name_any(),
        })
    }

    /// The session owning a child object (its `agentic-session` label).
    pub fn owning_session<K: RunnerChild>(child: &K) -> Option<ObjectKey> {
        Some(ObjectKey::Session {
            namespace: child.namespace()?,
            name: child.session_name()?.to_string(),
        })
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ObjectKey::Session { namespace, name } => {
                write!(f, "AgenticSession {namespace}/{name}")
            }
            ObjectKey::Namespace(name) => write!(f, "Namespace {name}"),
            ObjectKey::ProjectSettings(namespace) => write!(f, "ProjectSettings of {namespace}"),
            ObjectKey::SecretCopies(namespace) => write!(f, "Secret copies in {namespace}"),
        }
    }
}
