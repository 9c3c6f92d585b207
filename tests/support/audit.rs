//! The API server's audit log of the operator's ServiceAccount (`cluster/up.sh` writes it in
//! blocking mode, so a request is on file before its response reaches the operator).
//!
//! Tests count what the operator did from here rather than from a watch of their own: a watch
//! misses objects created and deleted while it was down (an API server restart), the audit log
//! does not.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::ClusterInfo;
use super::rbac::USER;

/// Path of the cluster's audit log.
pub fn log_path(cluster: &ClusterInfo) -> PathBuf {
    cluster.state_dir.join("logs").join("audit.log")
}

/// The files of the audit log `audit_log` that may hold requests received at or after `since`,
/// oldest first: the API server rotates its log at 100 MB (`audit.log` becomes
/// `audit-<time>.log`), and a run of the whole suite or of the scaled-up fault tests writes
/// several. A rotated file last written before `since` holds nothing that recent.
fn audit_files(audit_log: &Path, since: Option<Timestamp>) -> Vec<PathBuf> {
    let (Some(dir), Some(stem), Some(ext)) = (
        audit_log.parent(),
        audit_log.file_stem().and_then(|s| s.to_str()),
        audit_log.extension().and_then(|s| s.to_str()),
    ) else {
        return vec![audit_log.to_path_buf()];
    };
    let prefix = format!("{stem}-");
    let suffix = format!(".{ext}");
    let since = since.map(std::time::SystemTime::from);
    let mut rotated: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|entry| {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            name.starts_with(&prefix) && name.ends_with(&suffix)
        })
        .filter(|entry| {
            since.is_none_or(|since| {
                entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|written| written >= since)
            })
        })
        .map(|entry| entry.path())
        .collect();
    // `audit-<time>.log`: the names sort by rotation time.
    rotated.sort();
    rotated.push(audit_log.to_path_buf());
    rotated
}

/// The operator's requests received at or after `since` (all when `None`), one entry per
/// request: its last stage wins (ResponseComplete over ResponseStarted). Reads the rotated
/// files of the log too.
pub fn operator_requests(audit_log: &Path, since: Option<Timestamp>) -> Vec<Value> {
    let mut events: BTreeMap<String, Value> = BTreeMap::new();
    for file in audit_files(audit_log, since) {
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| {
            panic!(
                "reading the audit log {}: {e}; a cluster started before cluster/up.sh enabled \
                 auditing has none: restart it",
                file.display()
            )
        });
        collect_operator_requests(&text, since, &mut events);
    }
    events.into_values().collect()
}

/// Adds the operator's requests in `text` (one audit event a line) to `events`, by audit ID.
fn collect_operator_requests(
    text: &str,
    since: Option<Timestamp>,
    events: &mut BTreeMap<String, Value>,
) {
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let Ok(event) = serde_json::from_str::<Value>(line) else {
            continue; // a line being written as we read
        };
        if event["user"]["username"] != USER {
            continue;
        }
        if let (Some(since), Some(at)) = (since, event["requestReceivedTimestamp"].as_str())
            && at.parse::<Timestamp>().is_ok_and(|at| at < since)
        {
            continue;
        }
        let id = event["auditID"].as_str().unwrap_or_default().to_string();
        let keep = events
            .get(&id)
            .is_none_or(|old| old["stage"] != "ResponseComplete");
        if keep {
            events.insert(id, event);
        }
    }
}

/// Name and namespace of the object a request was about (for creates, from its body).
fn object_name(event: &Value) -> Option<String> {
    event["objectRef"]["name"]
        .as_str()
        .or_else(|| event["requestObject"]["metadata"]["name"].as_str())
        .map(str::to_string)
}

/// How the API server answered one create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateOutcome {
    /// 201: the object was made.
    Created,
    /// A server error or timeout (e.g. 504 "context canceled" when the operator exited with the
    /// request in flight), or no answer at all (the API server was killed while handling it):
    /// the object may or may not have been stored.
    Unknown,
}

/// Creates of `resource` (plural, any group) by the operator in `namespace`, one event each.
fn create_events(
    cluster: &ClusterInfo,
    namespace: &str,
    resource: &str,
    since: Option<Timestamp>,
) -> impl Iterator<Item = Value> {
    operator_requests(&log_path(cluster), since)
        .into_iter()
        .filter(move |event| {
            let object = &event["objectRef"];
            event["verb"] == "create"
                && object["resource"] == resource
                && object["subresource"].is_null()
                && object["namespace"] == namespace
        })
}

/// Creates of `resource` (plural, any group) by the operator in `namespace` that made or may
/// have made an object: object name → the outcome of each (rejections such as 409 or 403 are
/// left out: they made nothing). Creates the API server never answered are left out too when
/// they name nothing (see [`unanswered_unnamed_creates`]).
pub fn creates(
    cluster: &ClusterInfo,
    namespace: &str,
    resource: &str,
    since: Option<Timestamp>,
) -> BTreeMap<String, Vec<CreateOutcome>> {
    let mut created: BTreeMap<String, Vec<CreateOutcome>> = BTreeMap::new();
    for event in create_events(cluster, namespace, resource, since) {
        let outcome = match event["responseStatus"]["code"].as_u64() {
            Some(201) => CreateOutcome::Created,
            Some(code) if code >= 500 => CreateOutcome::Unknown,
            // Only the RequestReceived stage on file: the API server stopped (a test killed
            // it) after the request arrived and before it answered; etcd may hold the object.
            None => CreateOutcome::Unknown,
            Some(_) => continue,
        };
        let Some(name) = object_name(&event) else {
            continue;
        };
        created.entry(name).or_default().push(outcome);
    }
    created
}

/// Creates of `resource` by the operator in `namespace` that the API server received but never
/// answered, and whose object the log does not name: a create's name is in its body, which is
/// logged with the response, so when the API server is killed with -9 after storing the object
/// and before answering, only a nameless RequestReceived stage is on file. Each may have made
/// one object.
pub fn unanswered_unnamed_creates(
    cluster: &ClusterInfo,
    namespace: &str,
    resource: &str,
    since: Option<Timestamp>,
) -> usize {
    create_events(cluster, namespace, resource, since)
        .filter(|event| event["responseStatus"].is_null() && object_name(event).is_none())
        .count()
}

/// The Jobs the operator created in one namespace, counted from the audit log: a duplicate
/// made while some watch was down cannot hide.
pub struct JobLedger {
    cluster: ClusterInfo,
    namespace: String,
    since: Timestamp,
}

impl JobLedger {
    /// Counts Job creates in `namespace` from now on.
    pub fn start(cluster: &ClusterInfo, namespace: &str) -> Self {
        JobLedger {
            cluster: cluster.clone(),
            namespace: namespace.to_string(),
            since: Timestamp::now(),
        }
    }

    /// Job name → how many times the operator created it. Creates whose answer was lost (5xx)
    /// count once together when no create of the name succeeded: only they can have made the
    /// Job. (Beside a successful one they are not counted: had one stored the Job, the
    /// successful create would have been refused as AlreadyExists, unless the Job was deleted
    /// in between.)
    pub fn counts(&self) -> BTreeMap<String, usize> {
        creates(&self.cluster, &self.namespace, "jobs", Some(self.since))
            .into_iter()
            .map(|(name, outcomes)| {
                let created = outcomes
                    .iter()
                    .filter(|o| **o == CreateOutcome::Created)
                    .count();
                (name, created.max(1))
            })
            .collect()
    }

    /// The Job names created so far.
    pub fn names(&self) -> BTreeSet<String> {
        self.counts().into_keys().collect()
    }

    /// Asserts that no Job was created twice (each session ran once).
    pub fn assert_each_job_created_once(&self) {
        let twice: Vec<_> = self.counts().into_iter().filter(|(_, n)| *n > 1).collect();
        assert!(twice.is_empty(), "Jobs created more than once: {twice:?}");
    }

    /// The Jobs of `sessions` whose create is not in the audit log.
    pub fn unaudited(&self, sessions: &[String]) -> Vec<String> {
        let created = self.names();
        sessions
            .iter()
            .map(|s| format!("{s}-job"))
            .filter(|job| !created.contains(job))
            .collect()
    }

    /// Asserts that every one of `sessions` had its Job created exactly once. A Job whose
    /// create is not on file must be accounted for by a create the API server was killed
    /// before answering (it names nothing; see [`unanswered_unnamed_creates`]): one each.
    pub fn assert_one_job_per_session(&self, sessions: &[String]) {
        self.assert_each_job_created_once();
        let missing = self.unaudited(sessions);
        let unanswered =
            unanswered_unnamed_creates(&self.cluster, &self.namespace, "jobs", Some(self.since));
        assert!(
            missing.len() <= unanswered,
            "no Job was ever created for {missing:?} (creates the API server never answered, \
             which name nothing: {unanswered})"
        );
        if !missing.is_empty() {
            eprintln!("Job creates the killed API server stored but never answered: {missing:?}");
        }
    }
}
