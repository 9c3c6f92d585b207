//! The local control plane has real Kubernetes semantics: the Job controller, kwok's simulated
//! runner outcomes, garbage collection, watch expiry after compaction, optimistic concurrency.

mod support;

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, EnvVar, Pod, PodSpec, PodTemplate, PodTemplateSpec, Secret,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{
    DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams, WatchParams,
};
use kube::core::WatchEvent;
use kube::{Api, Resource, ResourceExt};
use support::{ClusterInfo, TestNamespace, etcd_compact_now, wait_until, wait_until_gone};

/// A one-container Job whose simulated outcome is chosen by `SIM_*` environment variables.
fn simulated_job(name: &str, env: &[(&str, &str)], deadline_seconds: Option<i64>) -> Job {
    Job {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: deadline_seconds,
            template: PodTemplateSpec {
                metadata: None,
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    containers: vec![Container {
                        name: "runner".into(),
                        image: Some("registry.invalid/simulated-runner:1".into()),
                        env: Some(
                            env.iter()
                                .map(|(n, v)| EnvVar {
                                    name: n.to_string(),
                                    value: Some(v.to_string()),
                                    ..Default::default()
                                })
                                .collect(),
                        ),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Waits until the Job has a terminal condition (Complete or Failed) and returns it.
async fn terminal_condition(jobs: &Api<Job>, name: &str) -> JobCondition {
    wait_until(
        &format!("Job {name} to finish"),
        Duration::from_secs(90),
        || async {
            let job = jobs.get(name).await.ok()?;
            job.status?
                .conditions?
                .into_iter()
                .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        },
    )
    .await
}

#[tokio::test]
async fn job_without_sim_outcome_completes() {
    let cluster = ClusterInfo::from_env();
    let ns = TestNamespace::create(&cluster, "job-completes").await;
    let jobs: Api<Job> = ns.api();
    jobs.create(
        &PostParams::default(),
        &simulated_job("ok", &[("SIM_RUN_FOR", "300ms")], None),
    )
    .await
    .expect("creating the Job");
    let done = terminal_condition(&jobs, "ok").await;
    assert_eq!(done.type_, "Complete", "{done:?}");
}

#[tokio::test]
async fn failing_job_reports_the_chosen_exit_code_in_its_pod() {
    let cluster = ClusterInfo::from_env();
    let ns = TestNamespace::create(&cluster, "job-fails").await;
    let jobs: Api<Job> = ns.api();
    let env = [
        ("SIM_OUTCOME", "fail"),
        ("SIM_EXIT_CODE", "3"),
        ("SIM_RUN_FOR", "200ms"),
    ];
    jobs.create(&PostParams::default(), &simulated_job("bad", &env, None))
        .await
        .expect("creating the Job");
    let done = terminal_condition(&jobs, "bad").await;
    assert_eq!(done.type_, "Failed", "{done:?}");

    let pods: Api<Pod> = ns.api();
    let list = pods
        .list(&ListParams::default().labels("batch.kubernetes.io/job-name=bad"))
        .await
        .expect("listing the Job's pods");
    let pod = list.items.first().expect("the failed pod is kept");
    let terminated = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.first())
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.terminated.as_ref())
        .unwrap_or_else(|| panic!("pod {} has no terminated state", pod.name_any()));
    assert_eq!(terminated.exit_code, 3);
}

#[tokio::test]
async fn hanging_job_fails_with_deadline_exceeded() {
    let cluster = ClusterInfo::from_env();
    let ns = TestNamespace::create(&cluster, "job-hangs").await;
    let jobs: Api<Job> = ns.api();
    jobs.create(
        &PostParams::default(),
        &simulated_job("stuck", &[("SIM_OUTCOME", "hang")], Some(2)),
    )
    .await
    .expect("creating the Job");
    let done = terminal_condition(&jobs, "stuck").await;
    assert_eq!(done.type_, "Failed", "{done:?}");
    assert_eq!(done.reason.as_deref(), Some("DeadlineExceeded"), "{done:?}");
}

#[tokio::test]
async fn deleting_an_owner_garbage_collects_its_dependents() {
    let cluster = ClusterInfo::from_env();
    let ns = TestNamespace::create(&cluster, "gc").await;
    let owners: Api<ConfigMap> = ns.api();
    let owner = owners
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: ObjectMeta {
                    name: Some("owner".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .expect("creating the owner");
    let owner_ref = OwnerReference {
        api_version: ConfigMap::api_version(&()).into(),
        kind: ConfigMap::kind(&()).into(),
        name: owner.name_any(),
        uid: owner.uid().expect("created objects have a uid"),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    let secrets: Api<Secret> = ns.api();
    secrets
        .create(
            &PostParams::default(),
            &Secret {
                metadata: ObjectMeta {
                    name: Some("dependent".into()),
                    owner_references: Some(vec![owner_ref]),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .expect("creating the dependent");

    owners
        .delete("owner", &DeleteParams::background())
        .await
        .expect("deleting the owner");
    // The garbage collector deletes the dependent.
    wait_until_gone(&secrets, "dependent").await;
}

#[tokio::test]
async fn watch_from_a_compacted_revision_is_answered_with_410_gone() {
    let cluster = ClusterInfo::from_env();
    let ns = TestNamespace::create(&cluster, "compaction").await;
    // PodTemplates bypass the API server's watch cache in this cluster (see cluster/up.sh),
    // so the watch is served by etcd itself.
    let templates: Api<PodTemplate> = ns.api();
    let created = templates
        .create(
            &PostParams::default(),
            &PodTemplate {
                metadata: ObjectMeta {
                    name: Some("history".into()),
                    ..Default::default()
                },
                template: simulated_job("unused", &[], None)
                    .spec
                    .map(|spec| spec.template),
            },
        )
        .await
        .expect("creating the object");
    let old_version = created.resource_version().expect("has a resourceVersion");
    for i in 0..3 {
        let patch = serde_json::json!({"metadata": {"labels": {"step": i.to_string()}}});
        templates
            .patch("history", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("updating the object");
    }
    etcd_compact_now(&cluster.etcd_endpoint).await;

    let gone = match templates.watch(&WatchParams::default(), &old_version).await {
        Err(kube::Error::Api(status)) => *status,
        Err(other) => panic!("watch failed with something other than an API status: {other}"),
        Ok(stream) => {
            let mut stream = stream.boxed();
            let first = tokio::time::timeout(Duration::from_secs(30), stream.try_next())
                .await
                .expect("the watch answers within 30s")
                .expect("the watch stream is readable");
            match first {
                Some(WatchEvent::Error(status)) => *status,
                other => panic!("expected a 410 error event, got {other:?}"),
            }
        }
    };
    assert_eq!(gone.code, 410, "{gone:?}");
}

#[tokio::test]
async fn status_update_with_a_stale_resource_version_conflicts() {
    let cluster = ClusterInfo::from_env();
    let ns = TestNamespace::create(&cluster, "conflict").await;
    let jobs: Api<Job> = ns.api();
    let mut job = simulated_job("paused", &[], None);
    job.spec.as_mut().expect("has a spec").suspend = Some(true);
    jobs.create(&PostParams::default(), &job)
        .await
        .expect("creating the Job");
    let stale = jobs.get("paused").await.expect("reading the Job");
    let patch = serde_json::json!({"metadata": {"labels": {"touched": "yes"}}});
    jobs.patch("paused", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("a concurrent writer updates the Job");

    match jobs
        .replace_status("paused", &PostParams::default(), &stale)
        .await
    {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 409, "{status:?}"),
        other => panic!("expected 409 Conflict, got {other:?}"),
    }
}
