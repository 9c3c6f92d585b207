//! Read-only projections of the runner's Jobs, Pods and token Secrets, as the caches hold them.
//!
//! kube's reflector keeps each object in an `Arc<K>`, so the size of `K` itself is paid once per
//! cached object, set or not: a `Job` is about 2.6 kB and a `Pod` 2.4 kB before any field is
//! filled, nearly all of it the spec the operator never reads. These types have the same
//! `metadata` and `status` fields as the full k8s-openapi types and nothing else; they
//! deserialize from the very same list and watch responses (serde skips the other fields
//! without allocating). Writes always go through the full types.

use k8s_openapi::api::batch::v1::{Job, JobStatus};
use k8s_openapi::api::core::v1::{Pod, PodStatus, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;

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

/// A runner Job without its spec.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct RunnerJob {
    /// The Job's metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The Job's status (its conditions decide a session's fate).
    pub status: Option<JobStatus>,
}
projection_of!(RunnerJob, Job);

impl From<Job> for RunnerJob {
    fn from(job: Job) -> Self {
        RunnerJob {
            metadata: job.metadata,
            status: job.status,
        }
    }
}

/// A runner Pod without its spec.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct RunnerPod {
    /// The Pod's metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The Pod's status (phase, scheduling, the runner container's state).
    pub status: Option<PodStatus>,
}
projection_of!(RunnerPod, Pod);

impl From<Pod> for RunnerPod {
    fn from(pod: Pod) -> Self {
        RunnerPod {
            metadata: pod.metadata,
            status: pod.status,
        }
    }
}

/// A runner token Secret's metadata; the token itself is never read into the cache.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct RunnerSecret {
    /// The Secret's metadata (the refreshed-at annotation).
    #[serde(default)]
    pub metadata: ObjectMeta,
}
projection_of!(RunnerSecret, Secret);

#[cfg(test)]
mod tests {
    use super::*;
    use kube::Resource;

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
        assert_eq!(pod.metadata, full.metadata);
        assert_eq!(pod.status, full.status);
        let secret: RunnerSecret = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "t"}, "data": {"token": "c2VjcmV0"}
        }))
        .expect("a secret");
        assert_eq!(secret.metadata.name.as_deref(), Some("t"));
    }
}
