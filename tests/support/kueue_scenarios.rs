//! Queueing with Kueue (#27) on the real control plane with a real Kueue (`CLUSTER_KUEUE=1`,
//! which `make test` starts): a project whose ProjectSettings set `spec.kueue` gets its runner
//! Jobs created suspended in its LocalQueue, and its sessions wait `Queued` with Kueue's own
//! message until admitted. Written once and run under each engine by
//! [`kueue_tests!`](crate::kueue_tests).
//!
//! Each scenario makes its own ClusterQueue (cluster-scoped) selecting only its namespace, so
//! scenarios share nothing but Kueue itself (and its two WorkloadPriorityClasses) and run in
//! parallel.

use std::time::Duration;

use agentic_crds::condition::types;
use agentic_crds::{AgenticSession, ConditionStatus, KueueSettings, Phase, ProjectSettings, keys};
use k8s_openapi::api::batch::v1::Job;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, PostParams,
};
use kube::{Api, Client};

use super::audit::JobLedger;
use super::operator::{
    Engine, annotate, create, operator, patch_project_settings, runner_env, session, started,
    wait_for_phase,
};
use super::{ClusterInfo, TestNamespace, events_about, wait_for_event, wait_until};

const LIMIT: Duration = Duration::from_secs(60);
/// Short, so that a session queued longer than this and then started proves queue time is
/// not start time.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// The WorkloadPriorityClasses of the scenarios (cluster-scoped, made once).
const INTERACTIVE: &str = "test-interactive";
const SCHEDULED: &str = "test-scheduled";

/// Expands to one `#[tokio::test]` per Kueue scenario for the given engine.
#[macro_export]
macro_rules! kueue_tests {
    ($engine:expr) => {
        $crate::kueue_tests!(@tests $engine;
            a_quota_of_two_runs_two_and_queues_the_rest_with_kueues_message,
            an_interactive_session_is_admitted_before_earlier_scheduled_ones,
            a_higher_priority_session_preempts_a_lower_one_which_resumes_later,
            two_projects_in_a_cohort_each_get_their_share,
        );
    };
    (@tests $engine:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let cluster = support::ClusterInfo::from_env();
                support::kueue_scenarios::start(&cluster, $engine);
                support::kueue_scenarios::$name(&cluster).await;
            }
        )*
    };
}

/// Starts the operator of this test binary with `--kueue` and a short start timeout.
pub fn start(cluster: &ClusterInfo, engine: Engine) {
    assert!(
        cluster.kueue,
        "these tests need Kueue on the cluster: `make test` starts it; for a dev cluster, \
         CLUSTER_KUEUE=1 make cluster-up"
    );
    operator(
        cluster,
        engine,
        &[
            "--kueue",
            "--start-timeout",
            &format!("{}s", START_TIMEOUT.as_secs()),
        ],
    );
}

fn kueue_kind(kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("kueue.x-k8s.io", "v1beta2", kind))
}

/// Creates a Kueue object; one that exists already (a cluster-scoped one another scenario
/// made) is left as it is.
async fn ensure(api: &Api<DynamicObject>, object: serde_json::Value) {
    let object: DynamicObject = serde_json::from_value(object).expect("a Kueue object");
    match api.create(&PostParams::default(), &object).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("creating {:?}: {e}", object.metadata.name),
    }
}

/// What a scenario's ClusterQueue looks like.
struct QueueShape<'a> {
    /// Runner pods it admits of its own.
    runners: u32,
    /// Its cohort, if any (quota lent and borrowed between the queues of a cohort).
    cohort: Option<&'a str>,
    /// Priority classes in the ProjectSettings (interactive, scheduled).
    priorities: bool,
}

/// A ClusterQueue named after `ns` admitting `shape.runners` runner pods of `ns` (CPU and
/// memory plentiful; a lower priority is preempted, and a cohort's lent quota reclaimed),
/// its ResourceFlavor, the LocalQueue `runners` in `ns`, and ProjectSettings `spec.kueue`
/// pointing at it; returns once the operator has taken the settings in (their status says so).
async fn queue_for(ns: &TestNamespace, client: &Client, shape: QueueShape<'_>) {
    ensure(
        &Api::all_with(client.clone(), &kueue_kind("ResourceFlavor")),
        serde_json::json!({
            "apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ResourceFlavor",
            "metadata": {"name": "test-default"}
        }),
    )
    .await;
    for (name, value) in [(INTERACTIVE, 1000), (SCHEDULED, 100)] {
        ensure(
            &Api::all_with(client.clone(), &kueue_kind("WorkloadPriorityClass")),
            serde_json::json!({
                "apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "WorkloadPriorityClass",
                "metadata": {"name": name}, "value": value
            }),
        )
        .await;
    }
    let mut spec = serde_json::json!({
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns.name}},
        "preemption": {"withinClusterQueue": "LowerPriority", "reclaimWithinCohort": "Any"},
        "resourceGroups": [{
            "coveredResources": ["pods", "cpu", "memory"],
            "flavors": [{"name": "test-default", "resources": [
                {"name": "pods", "nominalQuota": shape.runners},
                {"name": "cpu", "nominalQuota": "64"},
                {"name": "memory", "nominalQuota": "256Gi"}
            ]}]
        }]
    });
    if let Some(cohort) = shape.cohort {
        spec["cohortName"] = cohort.into();
    }
    ensure(
        &Api::all_with(client.clone(), &kueue_kind("ClusterQueue")),
        serde_json::json!({
            "apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ClusterQueue",
            "metadata": {"name": ns.name}, "spec": spec
        }),
    )
    .await;
    ensure(
        &Api::namespaced_with(client.clone(), &ns.name, &kueue_kind("LocalQueue")),
        serde_json::json!({
            "apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "LocalQueue",
            "metadata": {"name": "runners", "namespace": ns.name},
            "spec": {"clusterQueue": ns.name}
        }),
    )
    .await;
    let kueue = KueueSettings {
        local_queue_name: "runners".into(),
        interactive_priority_class: shape.priorities.then(|| INTERACTIVE.to_string()),
        scheduled_priority_class: shape.priorities.then(|| SCHEDULED.to_string()),
    };
    let patch = serde_json::json!({"spec": {"kueue": kueue}});
    patch_project_settings(client, &ns.name, patch).await;
    let settings = ns.api::<ProjectSettings>();
    wait_until("the operator to take spec.kueue in", LIMIT, || async {
        let current = settings.get(keys::PROJECT_SETTINGS_NAME).await.ok()?;
        (current.status?.kueue.as_ref() == Some(&kueue)).then_some(())
    })
    .await;
}

/// A managed namespace, named after `purpose`, whose runner Jobs queue in a ClusterQueue of
/// its own admitting `runners` (see [`queue_for`]); and an admin client.
async fn queued_namespace(
    cluster: &ClusterInfo,
    purpose: &str,
    runners: u32,
    priorities: bool,
) -> (TestNamespace, Client) {
    let ns = TestNamespace::create(cluster, purpose).await;
    let client = cluster.admin_client().await;
    let shape = QueueShape {
        runners,
        cohort: None,
        priorities,
    };
    queue_for(&ns, &client, shape).await;
    (ns, client)
}

/// A session that runs until stopped; `scheduled`: labelled as a scheduled run.
fn hanging(name: &str, scheduled: bool) -> AgenticSession {
    let mut s = session(name, &[("SIM_OUTCOME", "hang")]);
    if scheduled {
        s.metadata.labels = Some([(keys::SCHEDULED_RUN_LABEL.to_string(), "true".into())].into());
    }
    s
}

/// Creates `count` interactive sessions `<prefix>0`, `<prefix>1`, ... in `ns` that run until
/// stopped.
async fn create_hanging(ns: &TestNamespace, prefix: &str, count: usize) {
    for i in 0..count {
        create(
            &ns.client,
            &ns.name,
            &hanging(&format!("{prefix}{i}"), false),
        )
        .await;
    }
}

/// The session's `Queued` condition, if True: `(reason, message)`.
fn queued(session: &AgenticSession) -> Option<(String, String)> {
    let condition = session
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == types::QUEUED)?;
    (condition.status == ConditionStatus::True).then(|| {
        (
            condition.reason.as_deref().unwrap_or_default().to_string(),
            condition.message.as_deref().unwrap_or_default().to_string(),
        )
    })
}

/// What the namespace's sessions are doing: names Running, names queued (Creating and
/// `Queued` True), and any that failed (with their message).
struct Standing {
    running: Vec<String>,
    queued: Vec<(String, String, String)>,
    failed: Vec<String>,
}

async fn standing(ns: &TestNamespace) -> Option<Standing> {
    let list = ns
        .api::<AgenticSession>()
        .list(&ListParams::default())
        .await
        .ok()?;
    let mut standing = Standing {
        running: Vec::new(),
        queued: Vec::new(),
        failed: Vec::new(),
    };
    for s in &list.items {
        let name = s.metadata.name.clone().unwrap_or_default();
        let phase = s.status.as_ref().map(|st| st.phase).unwrap_or_default();
        match (phase, queued(s)) {
            (Phase::Running, _) => standing.running.push(name),
            (Phase::Creating, Some((reason, message))) => {
                standing.queued.push((name, reason, message))
            }
            (Phase::Failed, _) => standing.failed.push(format!(
                "{name}: {}",
                s.status
                    .as_ref()
                    .and_then(|st| st.message.clone())
                    .unwrap_or_default()
            )),
            _ => {}
        }
    }
    Some(standing)
}

fn queued_names(standing: &Standing) -> Vec<String> {
    standing
        .queued
        .iter()
        .map(|(name, ..)| name.clone())
        .collect()
}

async fn stop(ns: &TestNamespace, name: &str) {
    annotate(
        &ns.client,
        &ns.name,
        name,
        keys::DESIRED_PHASE_ANNOTATION,
        Some("Stopped"),
    )
    .await;
    wait_for_phase(&ns.client, &ns.name, name, Phase::Stopped, LIMIT).await;
}

/// Quota of 2 runners, 5 sessions: 2 Running, 3 Creating with `Queued` True and Kueue's own
/// message, their Jobs suspended in the project's queue; queued past the start timeout without
/// failing; stopping a running one admits a queued one within seconds; deleting a queued
/// session removes its Workload; stopping a queued one ends its wait, and restarting it queues
/// it again.
pub async fn a_quota_of_two_runs_two_and_queues_the_rest_with_kueues_message(
    cluster: &ClusterInfo,
) {
    let (ns, client) = queued_namespace(cluster, "kueue-quota", 2, false).await;
    create_hanging(&ns, "s", 5).await;
    let first = wait_until(
        "2 Running and 3 Queued with Kueue's message",
        LIMIT,
        || async {
            let now = standing(&ns).await?;
            assert!(now.failed.is_empty(), "failed: {:?}", now.failed);
            let by_quota = now.queued.iter().all(|(_, reason, message)| {
                reason == "Pending" && message.contains("insufficient unused quota for pods")
            });
            (now.running.len() == 2 && now.queued.len() == 3 && by_quota).then_some(now)
        },
    )
    .await;

    // Said on each session (an Event on each change: first "waiting for Kueue to queue the
    // runner Job" while no Workload exists, then Kueue's verdict) and counted by namespace.
    for name in queued_names(&first) {
        wait_until("an Event with Kueue's message", LIMIT, || async {
            let events = events_about(&ns, &name).await;
            events
                .iter()
                .any(|(_, reason, note)| {
                    reason == "Queued" && note.contains("insufficient unused quota")
                })
                .then_some(())
        })
        .await;
    }
    let gauge_reads = |expected: f64| {
        let what = format!("ambient_sessions_queued {expected}");
        let ns = &ns.name;
        async move {
            wait_until(&what, Duration::from_secs(10), || async {
                let now = started().metric("ambient_sessions_queued", &[("namespace", ns)]);
                (now == expected).then_some(())
            })
            .await
        }
    };
    gauge_reads(3.0).await;

    let jobs = ns.api::<Job>();
    for name in queued_names(&first) {
        let job = jobs
            .get(&format!("{name}-job"))
            .await
            .expect("a queued Job");
        assert_eq!(job.spec.as_ref().and_then(|s| s.suspend), Some(true));
        let labels = job.metadata.labels.unwrap_or_default();
        assert_eq!(labels[keys::KUEUE_QUEUE_NAME_LABEL], "runners");
    }

    // Longer in the queue than the start timeout: still queued, not failed.
    tokio::time::sleep(START_TIMEOUT + Duration::from_secs(2)).await;
    let later = standing(&ns).await.expect("listing sessions");
    assert!(later.failed.is_empty(), "failed: {:?}", later.failed);
    assert_eq!(queued_names(&later), queued_names(&first));

    stop(&ns, &first.running[0]).await;
    let admitted = wait_until(
        "a queued session admitted and Running",
        Duration::from_secs(20),
        || async {
            let now = standing(&ns).await?;
            now.running
                .iter()
                .find(|name| queued_names(&first).contains(name))
                .cloned()
        },
    )
    .await;
    let session = ns
        .api::<AgenticSession>()
        .get(&admitted)
        .await
        .expect("the admitted session");
    let condition = session
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == types::QUEUED))
        .expect("a Queued condition");
    assert_eq!(condition.status, ConditionStatus::False);
    assert_eq!(condition.reason.as_deref(), Some("Admitted"));
    wait_for_event(&ns, &admitted, "Admitted").await;
    gauge_reads(2.0).await;

    // Deleting a queued session removes its Workload (session → Job → Workload, by owner).
    let still = wait_until("a session still queued", LIMIT, || async {
        standing(&ns)
            .await?
            .queued
            .first()
            .map(|(name, ..)| name.clone())
    })
    .await;
    let job_uid = jobs
        .get(&format!("{still}-job"))
        .await
        .expect("its Job")
        .metadata
        .uid
        .expect("a uid");
    wait_for_workloads(&client, &ns, &job_uid, 1).await;
    ns.api::<AgenticSession>()
        .delete(&still, &DeleteParams::background())
        .await
        .expect("deleting the queued session");
    wait_for_workloads(&client, &ns, &job_uid, 0).await;

    // Stopping the last queued session ends its wait (its suspended Job and its Workload go,
    // the gauge says so); restarting it queues it again behind the two that run.
    let last = wait_until("the last session still queued", LIMIT, || async {
        let now = standing(&ns).await?;
        (now.queued.len() == 1).then(|| now.queued[0].0.clone())
    })
    .await;
    let job_name = format!("{last}-job");
    let job_uid = jobs
        .get(&job_name)
        .await
        .expect("its Job")
        .metadata
        .uid
        .expect("a uid");
    wait_for_workloads(&client, &ns, &job_uid, 1).await;
    stop(&ns, &last).await;
    wait_until("its suspended Job gone", LIMIT, || async {
        let job = jobs.get_opt(&job_name).await.ok()?;
        job.is_none_or(|j| j.metadata.uid.as_deref() != Some(&job_uid))
            .then_some(())
    })
    .await;
    wait_for_workloads(&client, &ns, &job_uid, 0).await;
    gauge_reads(0.0).await;
    annotate(
        &ns.client,
        &ns.name,
        &last,
        keys::DESIRED_PHASE_ANNOTATION,
        Some("Running"),
    )
    .await;
    wait_until("the restarted session queued again", LIMIT, || async {
        let now = standing(&ns).await?;
        assert!(now.failed.is_empty(), "failed: {:?}", now.failed);
        let again = now.queued.iter().any(|(name, reason, message)| {
            name == &last && reason == "Pending" && message.contains("insufficient unused quota")
        });
        (again && now.running.len() == 2).then_some(())
    })
    .await;
    let job = jobs.get(&job_name).await.expect("the restarted run's Job");
    assert_ne!(job.metadata.uid.as_deref(), Some(job_uid.as_str()));
    assert_eq!(job.spec.as_ref().and_then(|s| s.suspend), Some(true));
    gauge_reads(1.0).await;
}

/// Waits until the Workloads of the Job `job_uid` number `expected` (Kueue makes one per Job;
/// it goes with the Job, by owner reference).
async fn wait_for_workloads(client: &Client, ns: &TestNamespace, job_uid: &str, expected: usize) {
    let workloads =
        Api::<DynamicObject>::namespaced_with(client.clone(), &ns.name, &kueue_kind("Workload"));
    let selector = format!("{}={job_uid}", keys::KUEUE_JOB_UID_LABEL);
    let what = format!("{expected} Workload(s) of Job {job_uid}");
    wait_until(&what, LIMIT, || async {
        let list = workloads
            .list(&ListParams::default().labels(&selector))
            .await
            .ok()?;
        (list.items.len() == expected).then_some(())
    })
    .await;
}

/// Quota of 1: while an interactive session runs, three scheduled runs are submitted, then an
/// interactive one; when the first stops, the interactive one is admitted first.
pub async fn an_interactive_session_is_admitted_before_earlier_scheduled_ones(
    cluster: &ClusterInfo,
) {
    let (ns, _) = queued_namespace(cluster, "kueue-priority", 1, true).await;
    create(&ns.client, &ns.name, &hanging("first", false)).await;
    wait_for_phase(&ns.client, &ns.name, "first", Phase::Running, LIMIT).await;
    for i in 0..3 {
        create(&ns.client, &ns.name, &hanging(&format!("nightly{i}"), true)).await;
    }
    wait_until("three scheduled runs queued", LIMIT, || async {
        (standing(&ns).await?.queued.len() == 3).then_some(())
    })
    .await;
    create(&ns.client, &ns.name, &hanging("late", false)).await;
    wait_until("the interactive one queued too", LIMIT, || async {
        queued_names(&standing(&ns).await?)
            .contains(&"late".to_string())
            .then_some(())
    })
    .await;

    stop(&ns, "first").await;
    wait_for_phase(&ns.client, &ns.name, "late", Phase::Running, LIMIT).await;
    let now = standing(&ns).await.expect("listing sessions");
    let mut waiting = queued_names(&now);
    waiting.sort();
    assert_eq!(waiting, ["nightly0", "nightly1", "nightly2"]);
    assert_eq!(now.running, ["late"]);
}

/// Quota of 1: an interactive session preempts a running scheduled one, which says why and
/// waits again; once the interactive one stops, the scheduled one resumes in a new Job with
/// `IS_RESUME=true`. The audit log holds one create per run's Job (two for the preempted
/// session, one for the other), never a duplicate.
pub async fn a_higher_priority_session_preempts_a_lower_one_which_resumes_later(
    cluster: &ClusterInfo,
) {
    let (ns, _) = queued_namespace(cluster, "kueue-preempt", 1, true).await;
    let ledger = JobLedger::start(cluster, &ns.name);
    create(&ns.client, &ns.name, &hanging("nightly", true)).await;
    wait_for_phase(&ns.client, &ns.name, "nightly", Phase::Running, LIMIT).await;
    create(&ns.client, &ns.name, &hanging("urgent", false)).await;
    wait_for_phase(&ns.client, &ns.name, "urgent", Phase::Running, LIMIT).await;
    let preempted = wait_until(
        "the scheduled run preempted and queued again",
        LIMIT,
        || async {
            let now = standing(&ns).await?;
            now.queued
                .into_iter()
                .find(|(name, reason, _)| name == "nightly" && reason == "Preempted")
        },
    )
    .await;
    assert!(!preempted.2.is_empty(), "Kueue's message: {preempted:?}");
    let note = wait_for_event(&ns, "nightly", "Preempted").await;
    assert!(note.contains("preempted by Kueue"), "{note}");

    stop(&ns, "urgent").await;
    // Within seconds: the preempted session's next run was claimed when it was preempted.
    let seconds = Duration::from_secs(20);
    wait_for_phase(&ns.client, &ns.name, "nightly", Phase::Running, seconds).await;
    let job = ns
        .api::<Job>()
        .get("nightly-job")
        .await
        .expect("the resumed run's Job");
    assert_eq!(runner_env(&job, "IS_RESUME").as_deref(), Some("true"));
    let counts = ledger.counts();
    assert_eq!(
        counts.get("nightly-job"),
        Some(&2),
        "one Job per run: {counts:?}"
    );
    assert_eq!(counts.get("urgent-job"), Some(&1), "{counts:?}");
}

/// Two projects, a ClusterQueue of 2 runners each in one cohort: the first submits six
/// sessions and borrows the idle quota of the second (4 Running); when the second submits six,
/// it reclaims its share: 2 Running each, neither starved.
pub async fn two_projects_in_a_cohort_each_get_their_share(cluster: &ClusterInfo) {
    let first = TestNamespace::create(cluster, "kueue-cohort-a").await;
    let second = TestNamespace::create(cluster, "kueue-cohort-b").await;
    let client = cluster.admin_client().await;
    let cohort = format!("cohort-{}", first.name);
    for ns in [&first, &second] {
        let shape = QueueShape {
            runners: 2,
            cohort: Some(&cohort),
            priorities: false,
        };
        queue_for(ns, &client, shape).await;
    }
    create_hanging(&first, "a", 6).await;
    wait_until(
        "the first project borrowing the idle quota",
        LIMIT,
        || async {
            let now = standing(&first).await?;
            (now.running.len() == 4 && now.queued.len() == 2).then_some(())
        },
    )
    .await;
    create_hanging(&second, "b", 6).await;
    wait_until("2 Running in each project", LIMIT, || async {
        let a = standing(&first).await?;
        let b = standing(&second).await?;
        assert!(
            a.failed.is_empty() && b.failed.is_empty(),
            "{:?} {:?}",
            a.failed,
            b.failed
        );
        (a.running.len() == 2 && b.running.len() == 2).then_some(())
    })
    .await;
    // The reclaimed runs wait again, as preempted ones.
    let a = standing(&first).await.expect("listing sessions");
    assert_eq!(a.queued.len(), 4, "{:?}", a.queued);
}
