//! Read-only projections of the runner's Jobs, Pods and token Secrets, as the caches hold them.
//!
//! The caches keep each object in an `Arc<K>`, so the size of `K` itself is paid once per
//! cached object, set or not: a `Job` is about 2.6 kB and a `Pod` 2.4 kB before any field is
//! filled, nearly all of it the spec the operator never reads. These types have the same
//! `metadata` and `status` fields as the full k8s-openapi types and nothing else; they
//! deserialize from the very same list and watch responses (serde skips the other fields
//! without allocating). Writes always go through the full types.
//!
//! Cached copies also drop their label and annotation maps (each non-empty `BTreeMap` costs a
//! half-kilobyte node): the one label the operator reads, the owning session's name, and the
//! token Secret's refreshed-at annotation are kept in fields of their own
//! ([`RunnerChild::session_name`], [`RunnerSecret::token_refreshed_at`]).
//!
//! Their metadata is read without its `managedFields` ([`metadata_without_managed_fields`]):
//! the server's record of who set which field is often larger than the rest of the object, and
//! read into k8s-openapi's `ObjectMeta` it is a tree of JSON maps, built for a whole list page
//! before any object of it can be slimmed.

use agentic_crds::keys;
use k8s_openapi::ByteString;
use k8s_openapi::api::batch::v1::{Job, JobStatus};
use k8s_openapi::api::core::v1::{ConfigMap, ContainerState, Pod, PodCondition, Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;

/// Reads an object's metadata as k8s-openapi's `ObjectMeta`, skipping `managedFields` as it is
/// parsed (serde passes over an unknown field without allocating), so it never exists in
/// memory. Every other field is kept.
pub fn metadata_without_managed_fields<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<ObjectMeta, D::Error> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Wire {
        annotations: Option<BTreeMap<String, String>>,
        creation_timestamp: Option<Time>,
        deletion_grace_period_seconds: Option<i64>,
        deletion_timestamp: Option<Time>,
        finalizers: Option<Vec<String>>,
        generate_name: Option<String>,
        generation: Option<i64>,
        labels: Option<BTreeMap<String, String>>,
        name: Option<String>,
        namespace: Option<String>,
        owner_references: Option<Vec<OwnerReference>>,
        resource_version: Option<String>,
        self_link: Option<String>,
        uid: Option<String>,
    }
    let wire = Wire::deserialize(deserializer)?;
    Ok(ObjectMeta {
        annotations: wire.annotations,
        creation_timestamp: wire.creation_timestamp,
        deletion_grace_period_seconds: wire.deletion_grace_period_seconds,
        deletion_timestamp: wire.deletion_timestamp,
        finalizers: wire.finalizers,
        generate_name: wire.generate_name,
        generation: wire.generation,
        labels: wire.labels,
        managed_fields: None,
        name: wire.name,
        namespace: wire.namespace,
        owner_references: wire.owner_references,
        resource_version: wire.resource_version,
        self_link: wire.self_link,
        uid: wire.uid,
    })
}

/// Implements k8s-openapi's `Resource` and `Metadata` for a projection of `$full` (kube's
/// `Resource` follows from them), so `Api`, watchers and reflectors accept it.
macro_rules! projection_of {
    ($projection:ty, $full:ty) => {
        impl k8s_openapi::Resource for $projection {
            const API_VERSION: &'static str = <$full as k8s_openapi::Resource>::API_VERSION;
            const GROUP: &'static str = <$full as k8s_openapi::Resource>::GROUP;
            const KIND: &'static str = <$full as k8s_openapi::Resource>::KIND;
            const VERSION: &'static str = <$full as k8s_openapi::Resource>::VERSION;
            const URL_PATH_SEGMENT: &'static str =
                <$full as k8s_openapi::Resource>::URL_PATH_SEGMENT;
            type Scope = <$full as k8s_openapi::Resource>::Scope;
        }

        impl k8s_openapi::Metadata for $projection {
            type Ty = ObjectMeta;
            fn metadata(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn metadata_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

/// A child of a session: Job, Pod or token Secret.
///
/// Ownership is data: what makes a child the session's is its controller owner's UID (the
/// session's for Jobs and Secrets, the Job's for pods), never its name or labels alone.
pub trait RunnerChild: kube::Resource {
    /// The owning session's name: the `agentic-session` label, or the field it was moved to
    /// by [`RunnerChild::compact`].
    fn session_name(&self) -> Option<&str>;
    /// UID of the controller ownerReference, or of the field it was moved to; `None` for an
    /// orphan.
    fn controller_uid(&self) -> Option<&str>;
    /// Keeps the session's name and the controller's UID aside and drops the label and
    /// ownerReference lists.
    fn compact(&mut self);
}

/// The UID of the controller among `owners`.
fn controller_of(owners: &[OwnerReference]) -> Option<String> {
    owners
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.clone())
}

/// Implements [`RunnerChild`] for a projection with `session` and `controller` fields.
macro_rules! runner_child {
    ($projection:ty) => {
        impl RunnerChild for $projection {
            fn session_name(&self) -> Option<&str> {
                self.session.as_deref().or_else(|| {
                    let labels = self.metadata.labels.as_ref()?;
                    labels.get(keys::SESSION_LABEL).map(String::as_str)
                })
            }
            fn controller_uid(&self) -> Option<&str> {
                self.controller.as_deref().or_else(|| {
                    let owners = self.metadata.owner_references.as_ref()?;
                    owners
                        .iter()
                        .find(|o| o.controller == Some(true))
                        .map(|o| o.uid.as_str())
                })
            }
            fn compact(&mut self) {
                if let Some(mut labels) = self.metadata.labels.take() {
                    self.session = labels.remove(keys::SESSION_LABEL).or(self.session.take());
                }
                if let Some(owners) = self.metadata.owner_references.take() {
                    self.controller = controller_of(&owners).or(self.controller.take());
                }
            }
        }
    };
}

/// A runner Job without its spec.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct RunnerJob {
    /// The Job's metadata.
    #[serde(default, deserialize_with = "metadata_without_managed_fields")]
    pub metadata: ObjectMeta,
    /// The Job's status (its conditions decide a session's fate).
    pub status: Option<JobStatus>,
    /// The owning session, once moved out of the labels.
    #[serde(skip)]
    pub session: Option<String>,
    /// The controller owner's UID, once moved out of the ownerReferences.
    #[serde(skip)]
    pub controller: Option<String>,
    /// The run the Job was made for, once moved out of the annotations.
    #[serde(skip)]
    pub run: Option<String>,
    /// `spec.suspend`: a queued Job waits for Kueue's admission (or was preempted).
    #[serde(default, rename = "spec", deserialize_with = "suspended_of_spec")]
    pub suspended: bool,
}
runner_child!(RunnerJob);

/// Reads a Job's spec as whether it is suspended; every other field is skipped unread.
fn suspended_of_spec<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    struct Spec {
        #[serde(default)]
        suspend: Option<bool>,
    }
    Ok(Spec::deserialize(deserializer)?.suspend.unwrap_or(false))
}
projection_of!(RunnerJob, Job);

impl RunnerJob {
    /// The `status.startTime` of the run the Job was made for (RFC 3339), if stamped.
    pub fn run_started_at(&self) -> Option<&str> {
        self.run.as_deref().or_else(|| {
            let annotations = self.metadata.annotations.as_ref()?;
            annotations
                .get(keys::RUN_STARTED_AT_ANNOTATION)
                .map(String::as_str)
        })
    }

    /// Keeps the run stamp aside and drops the annotation map.
    pub fn compact_annotations(&mut self) {
        if let Some(mut annotations) = self.metadata.annotations.take() {
            self.run = annotations
                .remove(keys::RUN_STARTED_AT_ANNOTATION)
                .or(self.run.take());
        }
    }
}

impl From<Job> for RunnerJob {
    fn from(job: Job) -> Self {
        RunnerJob {
            suspended: job
                .spec
                .as_ref()
                .and_then(|spec| spec.suspend)
                .unwrap_or(false),
            metadata: job.metadata,
            status: job.status,
            session: None,
            controller: None,
            run: None,
        }
    }
}

/// A runner Pod without its spec.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct RunnerPod {
    /// The Pod's metadata.
    #[serde(default, deserialize_with = "metadata_without_managed_fields")]
    pub metadata: ObjectMeta,
    /// The Pod's status (phase, scheduling, the runner container's state).
    pub status: Option<RunnerPodStatus>,
    /// The owning session, once moved out of the labels.
    #[serde(skip)]
    pub session: Option<String>,
    /// The UID of the Job that made the pod, once moved out of the ownerReferences.
    #[serde(skip)]
    pub controller: Option<String>,
}
runner_child!(RunnerPod);
projection_of!(RunnerPod, Pod);

/// What the operator reads of a Pod's status; field names as in `PodStatus`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunnerPodStatus {
    /// Pending, Running, Succeeded, Failed or Unknown.
    pub phase: Option<String>,
    /// Why the pod is in this phase (e.g. Evicted).
    pub reason: Option<String>,
    /// Human-readable detail of `reason`.
    pub message: Option<String>,
    /// Pod conditions (PodScheduled=False carries the scheduler's message).
    pub conditions: Option<Vec<PodCondition>>,
    /// Each container's name and state.
    pub container_statuses: Option<Vec<RunnerContainerStatus>>,
    /// Each init container's (and native sidecar's) name and state: one that cannot start
    /// (a bad image) keeps the runner from starting.
    pub init_container_statuses: Option<Vec<RunnerContainerStatus>>,
}

/// What the operator reads of a container's status: which container, and its state (waiting
/// with a reason, running, or terminated with an exit code and reason).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct RunnerContainerStatus {
    /// The container's name.
    #[serde(default)]
    pub name: String,
    /// Waiting, running or terminated.
    pub state: Option<ContainerState>,
}

impl From<k8s_openapi::api::core::v1::PodStatus> for RunnerPodStatus {
    fn from(status: k8s_openapi::api::core::v1::PodStatus) -> Self {
        let project = |statuses: Vec<k8s_openapi::api::core::v1::ContainerStatus>| {
            statuses
                .into_iter()
                .map(|c| RunnerContainerStatus {
                    name: c.name,
                    state: c.state,
                })
                .collect()
        };
        RunnerPodStatus {
            phase: status.phase,
            reason: status.reason,
            message: status.message,
            conditions: status.conditions,
            container_statuses: status.container_statuses.map(project),
            init_container_statuses: status.init_container_statuses.map(project),
        }
    }
}

impl From<Pod> for RunnerPod {
    fn from(pod: Pod) -> Self {
        RunnerPod {
            metadata: pod.metadata,
            status: pod.status.map(RunnerPodStatus::from),
            session: None,
            controller: None,
        }
    }
}

/// A runner token Secret's metadata; the token itself is never read into the cache.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct RunnerSecret {
    /// The Secret's metadata.
    #[serde(default, deserialize_with = "metadata_without_managed_fields")]
    pub metadata: ObjectMeta,
    /// The owning session, once moved out of the labels.
    #[serde(skip)]
    pub session: Option<String>,
    /// The controller owner's UID, once moved out of the ownerReferences.
    #[serde(skip)]
    pub controller: Option<String>,
    /// The one annotation value a cached Secret keeps, once moved out of the annotations: a
    /// token Secret's refreshed-at time, or a copy's source version (a Secret is never both).
    #[serde(skip)]
    pub kept: Option<String>,
}
projection_of!(RunnerSecret, Secret);
runner_child!(RunnerSecret);

impl RunnerSecret {
    /// When the runner's token was last issued (RFC 3339), if recorded.
    pub fn token_refreshed_at(&self) -> Option<&str> {
        self.kept.as_deref().or_else(|| {
            let annotations = self.metadata.annotations.as_ref()?;
            annotations
                .get(keys::TOKEN_REFRESHED_AT_ANNOTATION)
                .map(String::as_str)
        })
    }

    /// For a copy of a shared Secret: the source version it holds.
    pub fn copied_version(&self) -> Option<&str> {
        self.kept.as_deref().or_else(|| {
            let annotations = self.metadata.annotations.as_ref()?;
            annotations
                .get(keys::COPIED_VERSION_ANNOTATION)
                .map(String::as_str)
        })
    }

    /// Keeps the refreshed-at time and the copied version aside and drops the annotation map.
    pub fn compact_annotations(&mut self) {
        if let Some(mut annotations) = self.metadata.annotations.take() {
            self.kept = annotations
                .remove(keys::TOKEN_REFRESHED_AT_ANNOTATION)
                .or_else(|| annotations.remove(keys::COPIED_VERSION_ANNOTATION))
                .or(self.kept.take());
        }
    }
}

/// The few values of a credentials Secret the operator reads, none of them a credential.
pub const READABLE_SECRET_KEYS: [&str; 4] = [
    "STORAGE_MODE",
    "S3_ENDPOINT",
    "S3_BUCKET",
    "MLFLOW_TRACKING_AUTH",
];

/// A Secret the operator watches by name (the runner's credentials, the project's
/// integrations, the shared sources it copies): its metadata, the names of its keys, and the
/// values of [`READABLE_SECRET_KEYS`] only. Every other value is dropped as the object is read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NamedSecret {
    /// The Secret's metadata.
    pub metadata: ObjectMeta,
    /// The names of its keys, sorted.
    pub keys: Vec<String>,
    /// The values of the [`READABLE_SECRET_KEYS`] it has.
    pub readable: BTreeMap<String, String>,
}
projection_of!(NamedSecret, Secret);

impl<'de> Deserialize<'de> for NamedSecret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Raw {
            #[serde(default, deserialize_with = "metadata_without_managed_fields")]
            metadata: ObjectMeta,
            #[serde(default)]
            data: BTreeMap<String, ByteString>,
        }
        let raw = Raw::deserialize(deserializer)?;
        let readable = raw
            .data
            .iter()
            .filter(|(k, _)| READABLE_SECRET_KEYS.contains(&k.as_str()))
            .filter_map(|(k, v)| Some((k.clone(), String::from_utf8(v.0.clone()).ok()?)))
            .collect();
        Ok(NamedSecret {
            metadata: raw.metadata,
            keys: raw.data.into_keys().collect(),
            readable,
        })
    }
}

impl NamedSecret {
    /// Whether the Secret has `key`.
    pub fn has(&self, key: &str) -> bool {
        self.keys.binary_search_by(|k| k.as_str().cmp(key)).is_ok()
    }

    /// The value of one of the [`READABLE_SECRET_KEYS`], trimmed, if set and not empty.
    pub fn value(&self, key: &str) -> Option<&str> {
        self.readable
            .get(key)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }
}

/// The `trusted-ca-bundle` ConfigMap of a namespace: only whether it has the bundle's key.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CaBundle {
    /// The ConfigMap's metadata.
    pub metadata: ObjectMeta,
    /// It has `ca-bundle.crt` in `data` or `binaryData`.
    pub has_bundle: bool,
}
projection_of!(CaBundle, ConfigMap);

impl<'de> Deserialize<'de> for CaBundle {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Raw {
            #[serde(default, deserialize_with = "metadata_without_managed_fields")]
            metadata: ObjectMeta,
            #[serde(default)]
            data: BTreeMap<String, serde::de::IgnoredAny>,
            #[serde(default)]
            binary_data: BTreeMap<String, serde::de::IgnoredAny>,
        }
        let raw = Raw::deserialize(deserializer)?;
        let has_bundle = raw.data.contains_key(keys::CA_BUNDLE_KEY)
            || raw.binary_data.contains_key(keys::CA_BUNDLE_KEY);
        Ok(CaBundle {
            metadata: raw.metadata,
            has_bundle,
        })
    }
}

/// A session's Service `session-<name>`: metadata only.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct RunnerService {
    /// The Service's metadata.
    #[serde(default, deserialize_with = "metadata_without_managed_fields")]
    pub metadata: ObjectMeta,
    /// The owning session, once moved out of the labels.
    #[serde(skip)]
    pub session: Option<String>,
    /// The controller owner's UID, once moved out of the ownerReferences.
    #[serde(skip)]
    pub controller: Option<String>,
}
runner_child!(RunnerService);
projection_of!(RunnerService, Service);

/// A Kueue Workload (`kueue.x-k8s.io/v1beta2`): the Job it was made for (its
/// `kueue.x-k8s.io/job-uid` label) and Kueue's conditions on it. Kueue's types are not in
/// k8s-openapi; this is the part the operator reads.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct RunnerWorkload {
    /// The Workload's metadata.
    #[serde(default, deserialize_with = "metadata_without_managed_fields")]
    pub metadata: ObjectMeta,
    /// Its conditions (QuotaReserved, Admitted, Evicted, Preempted, Requeued, Finished).
    #[serde(default)]
    pub status: Option<RunnerWorkloadStatus>,
}

/// What the operator reads of a Workload's status.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct RunnerWorkloadStatus {
    /// Kueue's conditions, `metav1.Condition`s.
    #[serde(default)]
    pub conditions: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
}

impl k8s_openapi::Resource for RunnerWorkload {
    const API_VERSION: &'static str = "kueue.x-k8s.io/v1beta2";
    const GROUP: &'static str = "kueue.x-k8s.io";
    const KIND: &'static str = "Workload";
    const VERSION: &'static str = "v1beta2";
    const URL_PATH_SEGMENT: &'static str = "workloads";
    type Scope = k8s_openapi::NamespaceResourceScope;
}

impl k8s_openapi::Metadata for RunnerWorkload {
    type Ty = ObjectMeta;
    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl RunnerWorkload {
    /// The UID of the Job the Workload queues (label `kueue.x-k8s.io/job-uid`).
    pub fn job_uid(&self) -> Option<&str> {
        let labels = self.metadata.labels.as_ref()?;
        labels.get(keys::KUEUE_JOB_UID_LABEL).map(String::as_str)
    }

    /// The condition of type `type_`, if Kueue set it.
    pub fn condition(
        &self,
        type_: &str,
    ) -> Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
        self.status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::Resource;

    #[test]
    fn metadata_is_read_whole_but_for_its_managed_fields() {
        let pod = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "demo-job-x1",
                "namespace": "team",
                "uid": "pod-uid",
                "resourceVersion": "42",
                "generation": 3,
                "generateName": "demo-job-",
                "creationTimestamp": "2026-01-01T00:00:00Z",
                "deletionTimestamp": "2026-01-01T00:05:00Z",
                "deletionGracePeriodSeconds": 30,
                "finalizers": ["f"],
                "labels": {"agentic-session": "demo"},
                "annotations": {"a": "b"},
                "selfLink": "/api/v1/pods/x",
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "demo-job",
                                     "uid": "job-uid", "controller": true}],
                "managedFields": [{"manager": "kubelet", "operation": "Update",
                                   "fieldsType": "FieldsV1",
                                   "fieldsV1": {"f:status": {"f:phase": {}}}}]
            },
            "status": {"phase": "Running"}
        });
        let full: Pod = serde_json::from_value(pod.clone()).unwrap();
        let projected: RunnerPod = serde_json::from_value(pod).unwrap();
        assert!(full.metadata.managed_fields.is_some());
        assert_eq!(
            projected.metadata,
            ObjectMeta {
                managed_fields: None,
                ..full.metadata
            }
        );
        // A list item without metadata still reads.
        let bare: RunnerPod = serde_json::from_value(serde_json::json!({})).unwrap();
        assert_eq!(bare.metadata, ObjectMeta::default());
    }

    #[test]
    fn projections_are_a_fraction_of_the_full_types() {
        use std::mem::size_of;
        assert!(size_of::<RunnerJob>() * 4 < size_of::<Job>());
        assert!(size_of::<RunnerPod>() * 2 < size_of::<Pod>());
        assert!(size_of::<RunnerSecret>() < size_of::<Secret>());
    }

    #[test]
    fn projections_address_the_same_api_resources() {
        assert_eq!(
            RunnerJob::url_path(&(), Some("team")),
            Job::url_path(&(), Some("team"))
        );
        assert_eq!(
            RunnerPod::url_path(&(), Some("team")),
            Pod::url_path(&(), Some("team"))
        );
        assert_eq!(
            RunnerSecret::url_path(&(), Some("team")),
            Secret::url_path(&(), Some("team"))
        );
        assert_eq!(RunnerPod::kind(&()), "Pod");
    }

    #[test]
    fn a_full_pod_reads_as_its_metadata_and_status() {
        let json = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "demo-job-x", "namespace": "team", "labels": {"a": "b"}},
            "spec": {"containers": [{"name": "runner", "image": "runner:latest"}]},
            "status": {"phase": "Running", "containerStatuses": [{
                "name": "runner", "image": "runner:latest", "imageID": "", "ready": true,
                "restartCount": 0, "state": {"running": {}}
            }]}
        });
        let pod: RunnerPod = serde_json::from_value(json.clone()).expect("a pod");
        let full: Pod = serde_json::from_value(json).expect("a pod");
        assert_eq!(pod, RunnerPod::from(full));
        let status = pod.status.expect("a status");
        assert_eq!(status.phase.as_deref(), Some("Running"));
        let runner = &status.container_statuses.expect("container statuses")[0];
        assert_eq!(runner.name, "runner");
        assert!(runner.state.as_ref().is_some_and(|s| s.running.is_some()));
        let secret: RunnerSecret = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "t"}, "data": {"token": "c2VjcmV0"}
        }))
        .expect("a secret");
        assert_eq!(secret.metadata.name.as_deref(), Some("t"));
    }

    #[test]
    fn compacting_keeps_the_session_and_refresh_time_and_drops_the_maps() {
        let mut secret: RunnerSecret = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "ambient-runner-token-demo",
                "labels": {keys::SESSION_LABEL: "demo", keys::APP_LABEL: keys::RUNNER_APP},
                "annotations": {keys::TOKEN_REFRESHED_AT_ANNOTATION: "2026-01-02T03:04:05Z"}
            }
        }))
        .expect("a secret");
        assert_eq!(secret.session_name(), Some("demo"), "read from the labels");
        assert_eq!(secret.token_refreshed_at(), Some("2026-01-02T03:04:05Z"));
        secret.compact();
        secret.compact_annotations();
        assert!(secret.metadata.labels.is_none() && secret.metadata.annotations.is_none());
        assert_eq!(secret.session_name(), Some("demo"), "kept aside");
        assert_eq!(secret.token_refreshed_at(), Some("2026-01-02T03:04:05Z"));
        // Compacting again (a second slim) loses nothing.
        secret.compact();
        secret.compact_annotations();
        assert_eq!(secret.session_name(), Some("demo"));
        assert_eq!(secret.token_refreshed_at(), Some("2026-01-02T03:04:05Z"));

        let mut pod = RunnerPod::default();
        assert_eq!(pod.session_name(), None);
        pod.metadata.labels = Some([("job-name".to_string(), "x".to_string())].into());
        pod.compact();
        assert_eq!(pod.session_name(), None, "no session label, no session");
    }
}
