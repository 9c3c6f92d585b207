//! In-memory views of the cluster that handlers read instead of the API server.
//!
//! Both engines fill the same [`Caches`] through [`CacheWriters`]: the stores of [`store`] (kube's
//! reflector semantics, smaller keys), fed by kube's watchers in whichever watch loop the engine
//! runs, plus a pod-by-session index. What is cached is kept small on purpose (SPEC: RSS ≤ 100
//! MiB at 10 000 sessions): only the operator's own Jobs, Pods and Secrets (label
//! `app=ambient-code-runner`), only managed Namespaces, no managedFields, and of Jobs, Pods and
//! Secrets only what decisions read: they are cached as the projections of
//! [`crate::cache::projections`] (metadata and status; no specs, no data), slimmed further by
//! [`Slim`].

pub mod key;
pub mod projections;
pub mod store;

pub use key::ObjectKey;

use std::collections::HashMap;
use std::sync::Arc;

use agentic_crds::{AgenticSession, ProjectSettings, keys};
use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;
use kube::runtime::watcher::Event;
use parking_lot::RwLock;
pub use store::{Store, Writer};

use crate::cache::projections::{
    CaBundle, NamedSecret, RunnerChild, RunnerJob, RunnerPod, RunnerSecret, RunnerService,
    RunnerWorkload,
};

/// Label selector of the Jobs and pods the operator caches.
pub fn child_selector() -> String {
    format!("{}={}", keys::APP_LABEL, keys::RUNNER_APP)
}

/// Label selector of the Secrets the operator caches: its token Secrets and its copies of
/// shared Secrets (never anything else).
pub fn secret_selector() -> String {
    format!(
        "{} in ({},{})",
        keys::APP_LABEL,
        keys::RUNNER_APP,
        keys::RUNNER_TOKEN_APP
    )
}

/// Label selector of the sessions' Services.
pub fn service_selector() -> String {
    format!(
        "{}={},{}",
        keys::APP_LABEL,
        keys::PLATFORM_APP,
        keys::SESSION_LABEL
    )
}

/// Field selector of one object name.
pub fn name_selector(name: &str) -> String {
    format!("metadata.name={name}")
}

/// Label selector of managed namespaces.
pub fn managed_namespace_selector() -> String {
    format!(
        "{}={}",
        keys::MANAGED_NAMESPACE_LABEL,
        keys::MANAGED_NAMESPACE_VALUE
    )
}

/// Read side of the caches; cheap to clone.
#[derive(Clone)]
pub struct Caches {
    /// AgenticSessions in every namespace (filtered by namespace at reconcile time).
    pub sessions: Store<AgenticSession>,
    /// Jobs labelled `app=ambient-code-runner`, without spec.
    pub jobs: Store<RunnerJob>,
    /// Pods labelled `app=ambient-code-runner`, without spec.
    pub pods: Store<RunnerPod>,
    /// Runner token Secrets, metadata only.
    pub secrets: Store<RunnerSecret>,
    /// Namespaces labelled `ambient-code.io/managed=true`.
    pub namespaces: Store<Namespace>,
    /// ProjectSettings in every namespace.
    pub project_settings: Store<ProjectSettings>,
    /// Pod names by `(namespace, session)`.
    pub pods_by_session: PodIndex,
    /// Unfinished sessions by namespace.
    pub unfinished: UnfinishedIndex,
    /// `ambient-runner-secrets` of every namespace (by name; key names only).
    pub runner_secrets: Store<NamedSecret>,
    /// `ambient-non-vertex-integrations` of every namespace (by name).
    pub integration_secrets: Store<NamedSecret>,
    /// The shared Secrets the operator copies, in the backend's and its own namespace.
    pub sources: SourceStores,
    /// `trusted-ca-bundle` ConfigMaps (by name; whether they have the bundle's key).
    pub ca_bundles: Store<CaBundle>,
    /// The sessions' Services (label-selected, metadata only).
    pub services: Store<RunnerService>,
    /// Kueue's Workloads of queued runner Jobs (watched only with `--kueue`; empty otherwise).
    pub workloads: Store<RunnerWorkload>,
}

/// One store per shared Secret the operator may copy (each a watch on one name in one
/// namespace); a source that is not in use (e.g. Langfuse off) is never watched and reads as
/// absent.
#[derive(Clone, Default)]
pub struct SourceStores {
    /// `(namespace, name)` → its store.
    pub stores: Vec<(String, &'static str, Store<NamedSecret>)>,
}

impl SourceStores {
    /// The source `name`, if watched and present.
    pub fn get(&self, name: &str) -> Option<Arc<NamedSecret>> {
        self.stores
            .iter()
            .find(|(_, n, _)| *n == name)
            .and_then(|(namespace, n, store)| store.get(namespace, n))
    }
}

/// Write side of the caches, owned by the engine that feeds them.
pub struct CacheWriters {
    /// Feeds [`Caches::sessions`].
    pub sessions: Writer<AgenticSession>,
    /// Feeds [`Caches::jobs`].
    pub jobs: Writer<RunnerJob>,
    /// Feeds [`Caches::pods`] (and, through [`PodIndex::apply`], the index).
    pub pods: Writer<RunnerPod>,
    /// Feeds [`Caches::secrets`].
    pub secrets: Writer<RunnerSecret>,
    /// Feeds [`Caches::namespaces`].
    pub namespaces: Writer<Namespace>,
    /// Feeds [`Caches::project_settings`].
    pub project_settings: Writer<ProjectSettings>,
    /// Feeds [`Caches::runner_secrets`].
    pub runner_secrets: Writer<NamedSecret>,
    /// Feeds [`Caches::integration_secrets`].
    pub integration_secrets: Writer<NamedSecret>,
    /// Feed [`Caches::sources`]: `(namespace, name, writer)`.
    pub sources: Vec<(String, &'static str, Writer<NamedSecret>)>,
    /// Feeds [`Caches::ca_bundles`].
    pub ca_bundles: Writer<CaBundle>,
    /// Feeds [`Caches::services`].
    pub services: Writer<RunnerService>,
    /// Feeds [`Caches::workloads`].
    pub workloads: Writer<RunnerWorkload>,
}

/// Makes an empty set of caches and the writers that fill them; `sources` are the shared
/// Secrets `(namespace, name)` to watch.
pub fn new_caches(sources: &[(String, &'static str)]) -> (Caches, CacheWriters) {
    let sessions = Writer::default();
    let runner_secrets = Writer::default();
    let integration_secrets = Writer::default();
    let ca_bundles = Writer::default();
    let services = Writer::default();
    let source_writers: Vec<(String, &'static str, Writer<NamedSecret>)> = sources
        .iter()
        .map(|(namespace, name)| (namespace.clone(), *name, Writer::default()))
        .collect();
    let jobs = Writer::default();
    let pods = Writer::default();
    let secrets = Writer::default();
    let namespaces = Writer::default();
    let project_settings = Writer::default();
    let workloads = Writer::default();
    let caches = Caches {
        sessions: sessions.as_reader(),
        jobs: jobs.as_reader(),
        pods: pods.as_reader(),
        secrets: secrets.as_reader(),
        namespaces: namespaces.as_reader(),
        project_settings: project_settings.as_reader(),
        pods_by_session: PodIndex::default(),
        unfinished: UnfinishedIndex::default(),
        runner_secrets: runner_secrets.as_reader(),
        integration_secrets: integration_secrets.as_reader(),
        sources: SourceStores {
            stores: source_writers
                .iter()
                .map(|(namespace, name, writer)| (namespace.clone(), *name, writer.as_reader()))
                .collect(),
        },
        ca_bundles: ca_bundles.as_reader(),
        services: services.as_reader(),
        workloads: workloads.as_reader(),
    };
    let writers = CacheWriters {
        sessions,
        jobs,
        pods,
        secrets,
        namespaces,
        project_settings,
        runner_secrets,
        integration_secrets,
        sources: source_writers,
        ca_bundles,
        services,
        workloads,
    };
    (caches, writers)
}

impl Caches {
    /// Whether `namespace` carries the managed label.
    pub fn is_managed(&self, namespace: &str) -> bool {
        self.namespaces.get("", namespace).is_some()
    }

    /// The cached Job `name` in `namespace`.
    pub fn job(&self, namespace: &str, name: &str) -> Option<Arc<RunnerJob>> {
        self.jobs.get(namespace, name)
    }

    /// The cached pods of a session.
    pub fn pods_of(&self, namespace: &str, session: &str) -> Vec<Arc<RunnerPod>> {
        self.pods_by_session
            .names(namespace, session)
            .into_iter()
            .filter_map(|name| self.pods.get(namespace, &name))
            .collect()
    }

    /// The cached Secret `name` in `namespace`.
    pub fn secret(&self, namespace: &str, name: &str) -> Option<Arc<RunnerSecret>> {
        self.secrets.get(namespace, name)
    }

    /// The session's Service `session-<session>`, if cached.
    pub fn service(&self, namespace: &str, session: &str) -> Option<Arc<RunnerService>> {
        let name = agentic_crds::names::service_name(session);
        self.services.get(namespace, &name)
    }

    /// Whether `namespace` has `ambient-runner-secrets`.
    pub fn has_runner_secret(&self, namespace: &str) -> bool {
        self.runner_secrets
            .get(namespace, keys::RUNNER_SECRETS)
            .is_some()
    }

    /// The namespace's `ambient-non-vertex-integrations`, if any.
    pub fn integrations(&self, namespace: &str) -> Option<Arc<NamedSecret>> {
        self.integration_secrets
            .get(namespace, keys::INTEGRATIONS_SECRET)
    }

    /// Whether `namespace` has a `trusted-ca-bundle` ConfigMap with the bundle's key.
    pub fn has_ca_bundle(&self, namespace: &str) -> bool {
        self.ca_bundles
            .get(namespace, keys::CA_BUNDLE_CONFIGMAP)
            .is_some_and(|c| c.has_bundle)
    }

    /// Kueue's Workload of the Job `job_uid` in `namespace` (label `kueue.x-k8s.io/job-uid`).
    pub fn workload_of_job(&self, namespace: &str, job_uid: &str) -> Option<Arc<RunnerWorkload>> {
        self.workloads
            .find_in(namespace, |workload| workload.job_uid() == Some(job_uid))
    }

    /// The namespace's ProjectSettings singleton.
    pub fn project_settings_of(&self, namespace: &str) -> Option<Arc<ProjectSettings>> {
        self.project_settings
            .get(namespace, keys::PROJECT_SETTINGS_NAME)
    }
}

/// Strips what the operator never reads before an object enters a cache.
///
/// Invariant: every field a handler or an event filter reads survives (see each impl); the
/// rest is dropped, because at 10 000 sessions each cached byte per object is 10 kB per kind.
pub trait Slim {
    /// Drops bulky fields.
    fn slim(&mut self);
}

/// `kubectl apply`'s copy of the whole object, as large as the object itself.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

impl Slim for AgenticSession {
    /// Keeps spec, status and annotations (the desired-phase and runner-env annotations are
    /// read), minus managedFields and `kubectl apply`'s copy. Of the labels, only
    /// `ambient-code.io/scheduled-run` stays (it picks a queued run's Kueue priority class);
    /// the rest are for users' selectors.
    fn slim(&mut self) {
        self.metadata.managed_fields = None;
        if let Some(labels) = self.metadata.labels.as_mut() {
            labels.retain(|key, _| key == keys::SCHEDULED_RUN_LABEL);
            if labels.is_empty() {
                self.metadata.labels = None;
            }
        }
        self.annotations_mut().remove(LAST_APPLIED);
        if self.annotations().is_empty() {
            // An emptied map still holds its node (half a kilobyte).
            self.metadata.annotations = None;
        }
        if let Some(status) = self.status.as_mut() {
            status.conditions.shrink_to_fit();
        }
    }
}

/// Metadata of a runner child keeps what the caches and handlers use: name, namespace, uid,
/// resourceVersion and creation/deletion timestamps; the session label and the controller
/// owner's UID are moved to fields of their own ([`RunnerChild::compact`]).
fn slim_child_metadata(child: &mut impl RunnerChild) {
    child.compact();
    let metadata = child.meta_mut();
    metadata.managed_fields = None;
    metadata.owner_references = None;
    metadata.generate_name = None;
    metadata.finalizers = None;
}

impl Slim for RunnerJob {
    /// Keeps metadata, the run stamp and status (the Complete/Failed conditions decide the
    /// session's fate).
    fn slim(&mut self) {
        slim_child_metadata(self);
        self.compact_annotations();
        if let Some(conditions) = self.status.as_mut().and_then(|s| s.conditions.as_mut()) {
            conditions.shrink_to_fit();
        }
    }
}

impl Slim for RunnerPod {
    /// Keeps name, creation/deletion timestamps, the session, phase, reason, message, a
    /// PodScheduled=False condition (the scheduler's verdict), each container's name and
    /// state (exit code, reason), and the init containers that are waiting (one that cannot
    /// start keeps the runner from starting).
    fn slim(&mut self) {
        slim_child_metadata(self);
        self.metadata.annotations = None;
        let Some(status) = self.status.as_mut() else {
            return;
        };
        if let Some(conditions) = status.conditions.as_mut() {
            conditions.retain(|c| c.type_ == "PodScheduled" && c.status == "False");
            conditions.shrink_to_fit();
        }
        if status.conditions.as_ref().is_some_and(Vec::is_empty) {
            status.conditions = None;
        }
        if let Some(containers) = status.container_statuses.as_mut() {
            containers.shrink_to_fit();
        }
        if let Some(init) = status.init_container_statuses.as_mut() {
            init.retain(|c| c.state.as_ref().is_some_and(|s| s.waiting.is_some()));
            init.shrink_to_fit();
        }
        if status
            .init_container_statuses
            .as_ref()
            .is_some_and(Vec::is_empty)
        {
            status.init_container_statuses = None;
        }
    }
}

impl Slim for RunnerSecret {
    /// Keeps metadata and the refreshed-at time; the token is never read.
    fn slim(&mut self) {
        slim_child_metadata(self);
        self.compact_annotations();
    }
}

impl Slim for NamedSecret {
    /// Keeps name, namespace, uid and resourceVersion (copies follow the source's version).
    fn slim(&mut self) {
        self.metadata.managed_fields = None;
        self.metadata.labels = None;
        self.metadata.annotations = None;
        self.metadata.owner_references = None;
    }
}

impl Slim for CaBundle {
    fn slim(&mut self) {
        self.metadata.managed_fields = None;
        self.metadata.labels = None;
        self.metadata.annotations = None;
        self.metadata.owner_references = None;
    }
}

impl Slim for RunnerService {
    /// Keeps name, uid and the owner's UID (whose Service it is).
    fn slim(&mut self) {
        slim_child_metadata(self);
        self.metadata.annotations = None;
    }
}

impl Slim for RunnerWorkload {
    /// Keeps name, namespace, the `kueue.x-k8s.io/job-uid` label (whose Workload it is) and
    /// the conditions that say where it stands in the queue.
    fn slim(&mut self) {
        const READ: [&str; 5] = [
            "QuotaReserved",
            "Admitted",
            "Evicted",
            "Preempted",
            "Finished",
        ];
        let metadata = &mut self.metadata;
        metadata.managed_fields = None;
        metadata.annotations = None;
        metadata.owner_references = None;
        metadata.finalizers = None;
        if let Some(labels) = metadata.labels.as_mut() {
            labels.retain(|key, _| key == keys::KUEUE_JOB_UID_LABEL);
        }
        if let Some(status) = self.status.as_mut() {
            status
                .conditions
                .retain(|c| READ.contains(&c.type_.as_str()));
            status.conditions.shrink_to_fit();
        }
    }
}

impl Slim for Namespace {
    fn slim(&mut self) {
        self.metadata.managed_fields = None;
        self.spec = None;
        self.status = None;
    }
}

impl Slim for ProjectSettings {
    fn slim(&mut self) {
        self.metadata.managed_fields = None;
        self.annotations_mut().remove(LAST_APPLIED);
    }
}

/// The sessions of each namespace that are not in a terminal phase, kept in step with the
/// session cache (so "does this namespace still need its Secret copies" costs O(1), not a scan
/// of every session).
#[derive(Clone, Default)]
pub struct UnfinishedIndex {
    inner: Arc<RwLock<UnfinishedState>>,
}

#[derive(Default)]
struct UnfinishedState {
    live: HashMap<String, std::collections::HashSet<String>>,
    relisting: Option<HashMap<String, std::collections::HashSet<String>>>,
}

impl UnfinishedIndex {
    /// Applies one watcher event of the session cache.
    pub fn apply(&self, event: &Event<AgenticSession>) {
        let mut state = self.inner.write();
        let entry = |session: &AgenticSession| {
            Some((
                session.namespace()?,
                session.name_any(),
                session.phase().is_terminal(),
            ))
        };
        let set = |map: &mut HashMap<String, std::collections::HashSet<String>>,
                   (namespace, name, terminal): (String, String, bool)| {
            if terminal {
                if let Some(names) = map.get_mut(&namespace) {
                    names.remove(&name);
                    if names.is_empty() {
                        map.remove(&namespace);
                    }
                }
            } else {
                map.entry(namespace).or_default().insert(name);
            }
        };
        match event {
            Event::Apply(session) => {
                if let Some(e) = entry(session) {
                    set(&mut state.live, e);
                }
            }
            Event::Delete(session) => {
                if let Some((namespace, name, _)) = entry(session) {
                    set(&mut state.live, (namespace, name, true));
                }
            }
            Event::Init => state.relisting = Some(HashMap::new()),
            // Outside a relist: a list of part of the cache (see `engine::scoped_watch`).
            Event::InitApply(session) => {
                if let Some(e) = entry(session) {
                    let state = &mut *state;
                    set(state.relisting.as_mut().unwrap_or(&mut state.live), e);
                }
            }
            Event::InitDone => {
                if let Some(built) = state.relisting.take() {
                    state.live = built;
                }
            }
        }
    }

    /// Whether `namespace` has a session that is not finished.
    pub fn any_in(&self, namespace: &str) -> bool {
        self.inner.read().live.contains_key(namespace)
    }
}

type SessionKey = (String, String);

/// Pod names by `(namespace, agentic-session label)`, kept in step with the pod cache.
#[derive(Clone, Default)]
pub struct PodIndex {
    inner: Arc<RwLock<IndexState>>,
}

#[derive(Default)]
struct IndexState {
    live: HashMap<SessionKey, PodNames>,
    /// Built during a relist, swapped in when it completes (as the reflector store does).
    relisting: Option<HashMap<SessionKey, PodNames>>,
}

fn session_key_of(pod: &RunnerPod) -> Option<(SessionKey, String)> {
    let session = pod.session_name()?.to_string();
    Some(((pod.namespace()?, session), pod.name_any()))
}

impl PodIndex {
    /// Applies one watcher event.
    pub fn apply(&self, event: &Event<RunnerPod>) {
        let mut state = self.inner.write();
        match event {
            Event::Apply(pod) => {
                if let Some((key, name)) = session_key_of(pod) {
                    insert(state.live.entry(key).or_default(), name);
                }
            }
            Event::Delete(pod) => {
                if let Some((key, name)) = session_key_of(pod) {
                    remove(&mut state.live, &key, &name);
                }
            }
            Event::Init => state.relisting = Some(HashMap::new()),
            // Outside a relist: a list of part of the cache (see `engine::scoped_watch`).
            Event::InitApply(pod) => {
                if let Some((key, name)) = session_key_of(pod) {
                    let state = &mut *state;
                    let map = state.relisting.as_mut().unwrap_or(&mut state.live);
                    insert(map.entry(key).or_default(), name);
                }
            }
            Event::InitDone => {
                if let Some(built) = state.relisting.take() {
                    state.live = built;
                }
            }
        }
    }

    /// Names of the pods of `session` in `namespace`.
    pub fn names(&self, namespace: &str, session: &str) -> Vec<String> {
        let state = self.inner.read();
        state
            .live
            .get(&(namespace.to_string(), session.to_string()))
            .map(|names| names.to_vec())
            .unwrap_or_default()
    }
}

/// A session's pod names, sorted and unique. A session has one pod at a time, rarely two: a
/// vector costs a few bytes where a `BTreeSet` allocates a node for eleven.
type PodNames = Vec<String>;

fn insert(names: &mut PodNames, name: String) {
    if let Err(at) = names.binary_search(&name) {
        names.reserve_exact(1);
        names.insert(at, name);
    }
}

fn remove(map: &mut HashMap<SessionKey, PodNames>, key: &SessionKey, name: &str) {
    if let Some(names) = map.get_mut(key) {
        names.retain(|n| n != name);
        if names.is_empty() {
            map.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(name: &str, session: &str) -> RunnerPod {
        RunnerPod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("team".into()),
                labels: Some([(keys::SESSION_LABEL.to_string(), session.to_string())].into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn index_follows_applies_and_deletes() {
        let index = PodIndex::default();
        index.apply(&Event::Apply(pod("a-job-1", "a")));
        index.apply(&Event::Apply(pod("a-job-2", "a")));
        index.apply(&Event::Apply(pod("a-job-1", "a")));
        index.apply(&Event::Apply(pod("b-job-1", "b")));
        assert_eq!(index.names("team", "a"), vec!["a-job-1", "a-job-2"]);
        index.apply(&Event::Delete(pod("a-job-1", "a")));
        assert_eq!(index.names("team", "a"), vec!["a-job-2"]);
        assert!(index.names("other", "a").is_empty());
    }

    #[test]
    fn relist_replaces_the_index_only_when_complete() {
        let index = PodIndex::default();
        index.apply(&Event::Apply(pod("gone", "a")));
        index.apply(&Event::Init);
        index.apply(&Event::InitApply(pod("kept", "a")));
        assert_eq!(
            index.names("team", "a"),
            vec!["gone"],
            "old view until InitDone"
        );
        index.apply(&Event::InitDone);
        assert_eq!(index.names("team", "a"), vec!["kept"]);
    }

    #[test]
    fn a_list_object_outside_a_relist_joins_the_index_at_once() {
        let index = PodIndex::default();
        index.apply(&Event::Apply(pod("held", "a")));
        index.apply(&Event::InitApply(pod("listed", "b")));
        assert_eq!(index.names("team", "a"), vec!["held"]);
        assert_eq!(index.names("team", "b"), vec!["listed"]);
        let unfinished = UnfinishedIndex::default();
        let mut session = AgenticSession::new("s", Default::default());
        session.metadata.namespace = Some("team".into());
        unfinished.apply(&Event::InitApply(session));
        assert!(unfinished.any_in("team"));
    }

    #[test]
    fn slimming_children_keeps_the_session_and_refresh_time_and_drops_the_rest() {
        let labels = Some([(keys::SESSION_LABEL.to_string(), "demo".to_string())].into());
        let mut secret = RunnerSecret::default();
        secret.metadata.managed_fields = Some(vec![Default::default()]);
        secret.metadata.labels = labels.clone();
        secret.metadata.annotations = Some(
            [(
                keys::TOKEN_REFRESHED_AT_ANNOTATION.to_string(),
                "2026-01-02T03:04:05Z".to_string(),
            )]
            .into(),
        );
        secret.slim();
        assert!(secret.metadata.managed_fields.is_none());
        assert!(secret.metadata.annotations.is_none() && secret.metadata.labels.is_none());
        assert_eq!(secret.session_name(), Some("demo"));
        assert_eq!(secret.token_refreshed_at(), Some("2026-01-02T03:04:05Z"));
        let mut job = RunnerJob::default();
        job.metadata.owner_references = Some(vec![Default::default()]);
        job.metadata.labels = labels;
        job.slim();
        assert!(job.metadata.owner_references.is_none() && job.metadata.labels.is_none());
        assert_eq!(
            ObjectKey::owning_session(&job),
            None,
            "no namespace, no key"
        );
        job.metadata.namespace = Some("team".into());
        assert_eq!(
            ObjectKey::owning_session(&job),
            Some(ObjectKey::Session {
                namespace: "team".into(),
                name: "demo".into()
            })
        );
    }

    #[test]
    fn slimming_a_pod_keeps_what_decisions_read() {
        use crate::cache::projections::RunnerPodStatus;
        use k8s_openapi::api::core::v1::PodCondition;
        let condition = |type_: &str| PodCondition {
            type_: type_.into(),
            status: "False".into(),
            message: Some(format!("{type_} message")),
            ..Default::default()
        };
        let mut full = pod("demo-job-1", "demo");
        full.metadata.annotations = Some([("a".to_string(), "b".to_string())].into());
        full.status = Some(RunnerPodStatus {
            phase: Some("Pending".into()),
            conditions: Some(vec![condition("PodScheduled"), condition("Ready")]),
            ..Default::default()
        });
        let mut slim = full.clone();
        slim.slim();

        assert_eq!(slim.metadata.name, full.metadata.name);
        assert!(slim.metadata.annotations.is_none() && slim.metadata.labels.is_none());
        assert_eq!(slim.session_name(), Some("demo"));
        let status = slim.status.expect("a status");
        assert_eq!(status.phase.as_deref(), Some("Pending"));
        assert_eq!(status.conditions, Some(vec![condition("PodScheduled")]));

        // Once scheduled, no condition is worth keeping.
        let mut scheduled = full;
        if let Some(status) = scheduled.status.as_mut() {
            status.conditions = Some(vec![PodCondition {
                status: "True".into(),
                ..condition("PodScheduled")
            }]);
        }
        scheduled.slim();
        assert_eq!(scheduled.status.and_then(|s| s.conditions), None);
    }

    #[test]
    fn slimming_a_session_keeps_its_annotations_but_kubectls_copy_and_one_label() {
        let mut session = AgenticSession::new("demo", Default::default());
        session.metadata.labels = Some([("team".to_string(), "a".to_string())].into());
        session
            .annotations_mut()
            .insert(LAST_APPLIED.into(), "{...}".into());
        session
            .annotations_mut()
            .insert(keys::DESIRED_PHASE_ANNOTATION.into(), "Stopped".into());
        session.slim();
        assert_eq!(
            session.annotations().keys().collect::<Vec<_>>(),
            vec![keys::DESIRED_PHASE_ANNOTATION]
        );
        assert!(session.metadata.labels.is_none());

        let mut scheduled = AgenticSession::new("nightly", Default::default());
        scheduled.metadata.labels = Some(
            [
                ("team".to_string(), "a".to_string()),
                (keys::SCHEDULED_RUN_LABEL.to_string(), "true".to_string()),
            ]
            .into(),
        );
        scheduled.slim();
        assert_eq!(
            scheduled.labels().keys().collect::<Vec<_>>(),
            vec![keys::SCHEDULED_RUN_LABEL],
            "the label that picks a Kueue priority class stays"
        );

        let mut applied = AgenticSession::new("applied", Default::default());
        applied
            .annotations_mut()
            .insert(LAST_APPLIED.into(), "{...}".into());
        applied.slim();
        assert_eq!(applied.metadata.annotations, None, "no empty map kept");
    }
}
