//! The load generator's Kueue mode (`--kueue-quota N`, issue 27): every managed namespace of the
//! run queues its runners in ClusterQueues admitting `N` runner pods at once in all (one shared
//! queue, or one per namespace in a cohort: `--kueue-layout`), and each Workload's wait is timed
//! from when a watch first saw it to when it first saw it admitted.
//!
//! Kueue's types are not in k8s-openapi: its objects are written as JSON and read as
//! `DynamicObject`s, `kueue.x-k8s.io/v1beta2` (the version the operator reads).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentic_crds::{KueueSettings, ProjectSettings, keys};
use futures::StreamExt;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, ResourceExt};
use parking_lot::Mutex;
use serde_json::json;

/// The shared ClusterQueue, the ResourceFlavor, and the cohort of per-project ClusterQueues.
const CLUSTER_QUEUE: &str = "bench-runners";
/// The LocalQueue of each namespace, named in its ProjectSettings `spec.kueue`.
const LOCAL_QUEUE: &str = "runners";

fn kind(kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("kueue.x-k8s.io", "v1beta2", kind))
}

async fn create(api: &Api<DynamicObject>, object: serde_json::Value) {
    let object: DynamicObject = serde_json::from_value(object).expect("a Kueue object");
    match api.create(&PostParams::default(), &object).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("creating {:?}: {e}", object.metadata.name),
    }
}

/// How the quota is laid out over ClusterQueues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Layout {
    /// One ClusterQueue admitting the whole quota for every managed namespace.
    Shared,
    /// A ClusterQueue per namespace with an equal share of the quota, all in one cohort (a
    /// busy project borrows what the others leave idle). Kueue's scheduler takes one head per
    /// ClusterQueue per cycle, so this admits up to one Workload per project per cycle.
    PerProject,
}

/// A ClusterQueue `name` admitting `pods` runner pods of the namespaces `selector` matches
/// (CPU and memory plentiful, so the pod count is the only limit), in `cohort` if any.
fn cluster_queue(
    name: &str,
    selector: serde_json::Value,
    pods: usize,
    cohort: Option<&str>,
) -> serde_json::Value {
    let mut queue = json!({
        "apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ClusterQueue",
        "metadata": {"name": name},
        "spec": {
            "namespaceSelector": {"matchLabels": selector},
            "queueingStrategy": "BestEffortFIFO",
            "resourceGroups": [{
                "coveredResources": ["pods", "cpu", "memory"],
                "flavors": [{"name": CLUSTER_QUEUE, "resources": [
                    {"name": "pods", "nominalQuota": pods},
                    {"name": "cpu", "nominalQuota": "100000"},
                    {"name": "memory", "nominalQuota": "100000Gi"}
                ]}]
            }]
        }
    });
    if let Some(cohort) = cohort {
        queue["spec"]["cohortName"] = cohort.into();
    }
    queue
}

/// ClusterQueues admitting `quota` runner pods in all laid out as `layout` says, a LocalQueue
/// in each of `namespaces`, and their ProjectSettings pointing at it; returns once the operator
/// has taken every setting in (its status echoes `spec.kueue`), so no session of the burst is
/// created unqueued.
pub async fn queue_every_namespace(
    admin: &Client,
    namespaces: &[String],
    quota: usize,
    layout: Layout,
) {
    create(
        &Api::all_with(admin.clone(), &kind("ResourceFlavor")),
        json!({"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ResourceFlavor",
               "metadata": {"name": CLUSTER_QUEUE}}),
    )
    .await;
    let cluster_queues = Api::all_with(admin.clone(), &kind("ClusterQueue"));
    // The ClusterQueue each namespace's LocalQueue feeds.
    let mut feeds = Vec::new();
    match layout {
        Layout::Shared => {
            let managed = json!({(keys::MANAGED_NAMESPACE_LABEL): keys::MANAGED_NAMESPACE_VALUE});
            create(
                &cluster_queues,
                cluster_queue(CLUSTER_QUEUE, managed, quota, None),
            )
            .await;
            feeds.resize(namespaces.len(), CLUSTER_QUEUE.to_string());
        }
        Layout::PerProject => {
            for (i, namespace) in namespaces.iter().enumerate() {
                // Equal shares; the remainder goes one each to the first namespaces.
                let share = quota / namespaces.len() + usize::from(i < quota % namespaces.len());
                let only = json!({"kubernetes.io/metadata.name": namespace});
                let queue = cluster_queue(namespace, only, share, Some(CLUSTER_QUEUE));
                create(&cluster_queues, queue).await;
                feeds.push(namespace.clone());
            }
        }
    }
    let settings = KueueSettings {
        local_queue_name: LOCAL_QUEUE.into(),
        interactive_priority_class: None,
        scheduled_priority_class: None,
    };
    for (namespace, cluster_queue) in namespaces.iter().zip(&feeds) {
        create(
            &Api::namespaced_with(admin.clone(), namespace, &kind("LocalQueue")),
            json!({"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "LocalQueue",
                   "metadata": {"name": LOCAL_QUEUE, "namespace": namespace},
                   "spec": {"clusterQueue": cluster_queue}}),
        )
        .await;
        let api: Api<ProjectSettings> = Api::namespaced(admin.clone(), namespace);
        api.patch(
            keys::PROJECT_SETTINGS_NAME,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"kueue": settings}})),
        )
        .await
        .unwrap_or_else(|e| panic!("setting spec.kueue in {namespace}: {e}"));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    for namespace in namespaces {
        let api: Api<ProjectSettings> = Api::namespaced(admin.clone(), namespace);
        loop {
            let current = api.get(keys::PROJECT_SETTINGS_NAME).await.ok();
            if current.and_then(|s| s.status?.kueue) == Some(settings.clone()) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the operator did not take spec.kueue in within 120 s (is it run with --kueue?)"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// When a watch first saw a Workload and first saw it admitted (s since the burst began), and
/// whether it was ever evicted.
#[derive(Debug, Default, Clone)]
struct Wait {
    seen: Option<f64>,
    admitted: Option<f64>,
    evicted: bool,
}

/// Every Workload's wait, by `namespace/name`.
#[derive(Clone, Default)]
pub struct Admissions(Arc<Mutex<HashMap<String, Wait>>>);

fn condition_true(workload: &DynamicObject, kind: &str) -> bool {
    workload.data["status"]["conditions"]
        .as_array()
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c["type"] == kind && c["status"] == "True")
        })
}

impl Admissions {
    /// Watches every Workload of the cluster (the run's are its only ones), stamping when each
    /// was first seen and first seen `Admitted=True`.
    pub fn watch(admin: &Client, origin: Instant) -> Self {
        let admissions = Self::default();
        let api: Api<DynamicObject> = Api::all_with(admin.clone(), &kind("Workload"));
        let waits = Arc::clone(&admissions.0);
        tokio::spawn(async move {
            let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                let workload = match event {
                    Ok(Event::Apply(w) | Event::InitApply(w)) => w,
                    Ok(_) => continue,
                    Err(e) => {
                        eprintln!("[loadgen] Workload watch: {e}");
                        continue;
                    }
                };
                let now = origin.elapsed().as_secs_f64();
                let key = format!(
                    "{}/{}",
                    workload.namespace().unwrap_or_default(),
                    workload.name_any()
                );
                let mut waits = waits.lock();
                let wait = waits.entry(key).or_default();
                wait.seen.get_or_insert(now);
                if condition_true(&workload, "Admitted") {
                    wait.admitted.get_or_insert(now);
                }
                wait.evicted |= condition_true(&workload, "Evicted");
            }
        });
        admissions
    }

    /// Workloads seen, admitted and evicted, admissions per second, and the time from seen to
    /// admitted (p50/p90/p99/max).
    pub fn summary(&self, quota: usize, layout: Layout) -> serde_json::Value {
        let waits = self.0.lock();
        let mut latencies: Vec<f64> = waits
            .values()
            .filter_map(|w| Some(w.admitted? - w.seen?))
            .collect();
        latencies.sort_by(f64::total_cmp);
        let pct = |p: f64| -> Option<f64> {
            (!latencies.is_empty())
                .then(|| latencies[((latencies.len() - 1) as f64 * p).round() as usize])
        };
        // Admissions per second over the run: from the first Workload seen to the last admitted.
        let first_seen = waits
            .values()
            .filter_map(|w| w.seen)
            .fold(f64::INFINITY, f64::min);
        let last_admitted = waits
            .values()
            .filter_map(|w| w.admitted)
            .fold(f64::NAN, f64::max);
        json!({
            "quota": quota,
            "layout": format!("{layout:?}"),
            "admitted_per_s": latencies.len() as f64 / (last_admitted - first_seen),
            "workloads": waits.len(),
            "admitted": latencies.len(),
            "evicted": waits.values().filter(|w| w.evicted).count(),
            "admission_s": {"p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99), "max": latencies.last()},
        })
    }
}
