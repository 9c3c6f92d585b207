//! Pure builders for everything a session owns: the Job ([`job`]), the runner identity
//! ([`identity`]), the Service in front of the runner ([`service`]), the workspace claim, and
//! the copies of shared Secrets its namespace needs ([`copies`]).
//!
//! Invariants: every object is named by [`agentic_crds::names`], lives in the session's
//! namespace, carries `agentic-session=<name>` and a controller ownerReference to the session
//! (copies: to the namespace's ProjectSettings, as they serve every session there), so deleting
//! the owner deletes it. The same inputs always produce the same object (environment lists are
//! sorted), so a Job spec is stable across reconciles.

pub mod copies;
pub mod identity;
pub mod job;
pub mod service;

use std::collections::BTreeMap;

use agentic_crds::{AgenticSession, keys};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};

pub use identity::{build_role, build_role_binding, build_service_account, build_token_secret};
pub use job::{
    JOB_TTL_BACKSTOP_SECONDS, JobInputs, JobQueue, RUNNER_CONTAINER, RunnerSettings, build_job,
    build_workspace_pvc, run_stamp,
};
pub use service::build_service;

/// Metadata every child of `session` carries: name, namespace, labels (`app` = `app`),
/// controller owner.
fn child_meta_with_app(session: &AgenticSession, name: String, app: &str) -> ObjectMeta {
    let mut labels = child_labels(&session.name_any());
    labels.insert(keys::APP_LABEL.to_string(), app.to_string());
    ObjectMeta {
        name: Some(name),
        namespace: session.namespace(),
        labels: Some(labels),
        owner_references: session.controller_owner_ref(&()).map(|owner| vec![owner]),
        ..Default::default()
    }
}

/// Metadata of a runner child: labels `agentic-session=<name>`, `app=ambient-code-runner`.
fn child_meta(session: &AgenticSession, name: String) -> ObjectMeta {
    child_meta_with_app(session, name, keys::RUNNER_APP)
}

/// The labels that tie a child to its session (and let caches select only our objects).
pub fn child_labels(session_name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (keys::SESSION_LABEL.to_string(), session_name.to_string()),
        (keys::APP_LABEL.to_string(), keys::RUNNER_APP.to_string()),
    ])
}
