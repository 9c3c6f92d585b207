//! Session lifecycle scenarios (SPEC §2.1 rows), written once and run under each engine by
//! [`lifecycle_tests!`](crate::lifecycle_tests). Every scenario asserts the exact final state, so
//! both engines passing means both converge to the same state.

use std::time::Duration;

use agentic_crds::{AgenticSession, Phase, ProjectSettings, StoppedReason, keys};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{DeleteParams, Patch, PatchParams, PropagationPolicy};
use kube::{Api, Client, Resource, ResourceExt};

use super::audit::JobLedger;
use super::operator::{
    annotate, create, ready_message, ready_reason, runner_env, session, started, wait_for_phase,
};
use super::{
    ClusterInfo, CreationBlocked, JobCreationBlocked, JobDeletionRefused, TestNamespace,
    wait_for_event, wait_until, wait_until_gone as gone,
};

const LIMIT: Duration = Duration::from_secs(60);

/// Expands to one `#[tokio::test]` per scenario for the given engine.
#[macro_export]
macro_rules! lifecycle_tests {
    ($engine:expr) => {
        $crate::lifecycle_tests!(@list []
            |cluster: &support::ClusterInfo| {
                support::operator::operator_on(
                    cluster,
                    support::operator::Crds::Ours,
                    $engine,
                    &[],
                );
            });
    };
    // On the platform's own installation (tests/platform_crd.rs, whose `start` picks the
    // engine and flags): ignored by a plain `cargo test`, run by tests/suite.sh on a cluster of
    // their own.
    (@platform $start:expr) => {
        $crate::lifecycle_tests!(@list [#[ignore = "on the platform's CRDs: tests/suite.sh"]]
            $start);
    };
    (@list $attrs:tt $start:expr) => {
        $crate::lifecycle_tests!(@run $attrs $start;
            session_completes_and_its_job_is_deleted,
            runner_exit_1_fails_with_the_exit_code,
            runner_exit_2_is_a_prerequisite_failure,
            a_timeout_is_advisory_by_default,
            runner_dying_while_running_fails_the_session,
            stop_while_running_then_restart_resumes,
            first_run_after_a_transient_error_is_not_a_resume,
            job_deleted_after_the_runner_started_fails_the_session_as_lost,
            orphans_of_an_earlier_session_with_the_same_name_are_never_adopted,
            a_job_its_session_no_longer_owns_is_never_deleted,
            restart_the_moment_a_run_completes_runs_again,
            a_failing_cleanup_keeps_the_transitions_event_and_metric,
            session_inactivity_timeout_beats_the_project_one,
            project_inactivity_timeout_applies_when_the_session_sets_none,
            token_secret_holds_both_tokens,
            deleting_a_session_collects_every_child,
            sessions_in_unmanaged_namespaces_wait_until_the_label_appears,
            group_access_changes_create_and_prune_role_bindings,
            spec_the_schema_cannot_check_fails_as_invalid_spec,
            garbage_desired_phase_is_ignored,
            stop_requested_before_the_start_ends_stopped_without_a_job,
        );
    };
    (@run $attrs:tt $start:expr; $($name:ident),* $(,)?) => {
        $( $crate::lifecycle_tests!(@one $attrs $start, $name); )*
    };
    (@one [$($attr:tt)*] $start:expr, $name:ident) => {
        #[tokio::test]
        $($attr)*
        async fn $name() {
            let cluster = support::ClusterInfo::from_env();
            ($start)(&cluster);
            support::scenarios::$name(&cluster).await;
        }
    };
}

async fn running_job(client: &Client, namespace: &str, session: &str) -> Job {
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    let name = format!("{session}-job");
    wait_until(&format!("Job {name}"), LIMIT, || async {
        jobs.get_opt(&name).await.ok().flatten()
    })
    .await
}

/// Happy path: Pending → Creating → Running → Completed, Job deleted afterwards.
pub async fn session_completes_and_its_job_is_deleted(cluster: &ClusterInfo) {
    let ns = TestNamespace::create(cluster, "completes").await;
    create(
        &ns.client,
        &ns.name,
        &session("ok", &[("SIM_RUN_FOR", "1s")]),
    )
    .await;
    let done = wait_for_phase(&ns.client, &ns.name, "ok", Phase::Completed, LIMIT).await;
    let status = done.status.expect("status");
    assert!(status.start_time.is_some() && status.completion_time.is_some());
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "JobCreated" && c.status == agentic_crds::ConditionStatus::True),
        "{:?}",
        status.conditions
    );
    assert_eq!(ready_reason_of(&status), Some("Completed".into()));
    gone(&ns.api::<Job>(), "ok-job").await;
    let events: Api<k8s_openapi::api::events::v1::Event> = ns.api();
    wait_until("an Event per transition", LIMIT, || async {
        let reasons: Vec<String> = events
            .list(&kube::api::ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("ok"))
            .filter_map(|e| e.reason)
            .collect();
        ["Creating", "Running", "Completed"]
            .iter()
            .all(|r| reasons.iter().any(|x| x == r))
            .then_some(())
    })
    .await;
}

fn ready_reason_of(status: &agentic_crds::AgenticSessionStatus) -> Option<String> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")?
        .reason
        .as_deref()
        .map(str::to_owned)
}

/// Exit 1 → Failed, the exit code in the message.
pub async fn runner_exit_1_fails_with_the_exit_code(cluster: &ClusterInfo) {
    let ns = TestNamespace::create(cluster, "exit1").await;
    let env = [
        ("SIM_OUTCOME", "fail"),
        ("SIM_EXIT_CODE", "1"),
        ("SIM_RUN_FOR", "500ms"),
    ];
    create(&ns.client, &ns.name, &session("bad", &env)).await;
    let failed = wait_for_phase(&ns.client, &ns.name, "bad", Phase::Failed, LIMIT).await;
    let message = ready_message(&failed);
    assert!(message.contains("exited with code 1"), "{message}");
    assert_eq!(ready_reason(&failed).as_deref(), Some("RunnerFailed"));
}

/// Exit 2 → Failed / PrerequisiteFailed.
pub async fn runner_exit_2_is_a_prerequisite_failure(cluster: &ClusterInfo) {
    let ns = TestNamespace::create(cluster, "exit2").await;
    let env = [
        ("SIM_OUTCOME", "fail"),
        ("SIM_EXIT_CODE", "2"),
        ("SIM_RUN_FOR", "500ms"),
    ];
    create(&ns.client, &ns.name, &session("prereq", &env)).await;
    let failed = wait_for_phase(&ns.client, &ns.name, "prereq", Phase::Failed, LIMIT).await;
    assert_eq!(ready_reason(&failed).as_deref(), Some("PrerequisiteFailed"));
}

/// `spec.timeout` is advisory by default (SPEC §7.2): the Job has no deadline and the run
/// goes on past it (every platform client writes `timeout: 300`).
pub async fn a_timeout_is_advisory_by_default(cluster: &ClusterInfo) {
    let ns = TestNamespace::create(cluster, "advisory").await;
    let mut s = session("slow", &[("SIM_OUTCOME", "hang")]);
    s.spec.timeout = 2;
    create(&ns.client, &ns.name, &s).await;
    wait_for_phase(&ns.client, &ns.name, "slow", Phase::Running, LIMIT).await;
    let job = running_job(&ns.client, &ns.name, "slow").await;
    assert_eq!(
        job.spec.as_ref().and_then(|s| s.active_deadline_seconds),
        None,
        "no deadline unless --enforce-session-timeout"
    );
    assert_eq!(
        runner_env(&job, "TIMEOUT").as_deref(),
        Some("2"),
        "passed to the runner"
    );
    tokio::time::sleep(Duration::from_secs(6)).await;
    let still = ns
        .api::<AgenticSession>()
        .get("slow")
        .await
        .expect("session");
    assert_eq!(still.phase(), Phase::Running, "{:?}", still.status);
}

/// The runner dies after it started → Failed (the original missed this).
pub async fn runner_dying_while_running_fails_the_session(cluster: &ClusterInfo) {
    let ns = TestNamespace::create(cluster, "dies").await;
    let env = [
        ("SIM_OUTCOME", "fail"),
        ("SIM_EXIT_CODE", "137"),
        ("SIM_RUN_FOR", "3s"),
    ];
    create(&ns.client, &ns.name, &session("dying", &env)).await;
    wait_for_phase(&ns.client, &ns.name, "dying", Phase::Running, LIMIT).await;
    let failed = wait_for_phase(&ns.client, &ns.name, "dying", Phase::Failed, LIMIT).await;
    let message = ready_message(&failed);
    assert!(message.contains("137"), "{message}");
}

/// Stop while Running → Stopping → Stopped (user); restart → Running with IS_RESUME=true.
pub async fn stop_while_running_then_restart_resumes(cluster: &ClusterInfo) {
    let ns = TestNamespace::create(cluster, "stop-restart").await;
    create(
        &ns.client,
        &ns.name,
        &session("pausable", &[("SIM_OUTCOME", "hang")]),
    )
    .await;
    wait_for_phase(&ns.client, &ns.name, "pausable", Phase::Running, LIMIT).await;
    let first_job = running_job(&ns.client, &ns.name, "pausable").await;
    assert_eq!(
        runner_env(&first_job, "IS_RESUME").as_deref(),
        Some("false")
    );

    annotate(
        &ns.client,
        &ns.name,
        "pausable",
        keys::DESIRED_PHASE_ANNOTATION,
        Some("Stopped"),
    )
    .await;
    let stopped = wait_for_phase(&ns.client, &ns.name, "pausable", Phase::Stopped, LIMIT).await;
    assert_eq!(
        stopped.status.as_ref().and_then(|s| s.stopped_reason),
        Some(StoppedReason::User)
    );
    // The honoured stop request is cleared by a write of its own, after the Stopped status.
    let sessions = ns.api::<AgenticSession>();
    wait_until("the honoured stop request to be cleared", LIMIT, || async {
        let session = sessions.get("pausable").await.ok()?;
        (!session
            .annotations()
            .contains_key(keys::DESIRED_PHASE_ANNOTATION))
        .then_some(())
    })
    .await;
    gone(&ns.api::<Job>(), "pausable-job").await;

    annotate(
        &ns.client,
        &ns.name,
        "pausable",
        keys::DESIRED_PHASE_ANNOTATION,
        Some("Running"),
    )
    .await;
    wait_for_phase(&ns.client, &ns.name, "pausable", Phase::Running, LIMIT).await;
    let second_job = running_job(&ns.client, &ns.name, "pausable").await;
    assert_ne!(first_job.metadata.uid, second_job.metadata.uid);
    assert_eq!(
        runner_env(&second_job, "IS_RESUME").as_deref(),
        Some("true")
    );
}

/// A Job creation that fails for a while (quota) is retried; the eventual first run is not a
/// resume (the original marked it as one).
pub async fn first_run_after_a_transient_error_is_not_a_resume(cluster: &ClusterInfo) {
    let ns = TestNamespace::create(cluster, "transient").await;
    let blocked = JobCreationBlocked::in_namespace(&ns).await;
    create(
        &ns.client,
        &ns.name,
        &session("retried", &[("SIM_OUTCOME", "hang")]),
    )
    .await;
    // A refusal that persists is visible on the session: a condition with the API server's
    // answer and a Warning Event.
    let api = ns.api::<AgenticSession>();
    let message = wait_until("the refusal on the session", LIMIT, || async {
        let status = api.get("retried").await.ok()?.status?;
        let refused = status.conditions.iter().find(|c| {
            c.type_ == "JobCreated"
                && c.status == agentic_crds::ConditionStatus::False
                && c.reason.as_deref() == Some("ProvisioningFailed")
        })?;
        refused.message.clone()
    })
    .await;
    assert!(message.contains("exceeded quota"), "{message:?}");
    let note = wait_for_event(&ns, "retried", "ProvisioningFailed").await;
    assert!(note.contains("exceeded quota"), "{note}");
    assert!(
        ns.api::<Job>()
            .get_opt("retried-job")
            .await
            .unwrap()
            .is_none()
    );

    blocked.lift().await;
    wait_for_phase(&ns.client, &ns.name, "retried", Phase::Running, LIMIT).await;
    let job = running_job(&ns.client, &ns.name, "retried").await;
    assert_eq!(runner_env(&job, "IS_RESUME").as_deref(), Some("false"));
}

/// Someone deletes the Job of a running session: the run is lost (its outcome is unknown), so
/// the session fails with reason JobLost instead of silently running the agent again; a
/// restart then runs it again, as a resume.
pub async fn job_deleted_after_the_runner_started_fails_the_session_as_lost(cluster: &ClusterInfo) {
    let ns = TestNamespace::create(cluster, "job-deleted").await;
    let ledger = JobLedger::start(cluster, &ns.name);
    create(
        &ns.client,
        &ns.name,
        &session("resilient", &[("SIM_OUTCOME", "hang")]),
    )
    .await;
    wait_for_phase(&ns.client, &ns.name, "resilient", Phase::Running, LIMIT).await;
    ns.api::<Job>()
        .delete("resilient-job", &DeleteParams::background())
        .await
        .expect("deleting the Job");
    let failed = wait_for_phase(&ns.client, &ns.name, "resilient", Phase::Failed, LIMIT).await;
    assert_eq!(ready_reason(&failed).as_deref(), Some("JobLost"));
    let message = ready_message(&failed);
    assert!(message.contains("restart"), "{message}");
    assert_eq!(
        ledger.counts().get("resilient-job"),
        Some(&1),
        "never re-run silently"
    );

    annotate(
        &ns.client,
        &ns.name,
        "resilient",
        keys::DESIRED_PHASE_ANNOTATION,
        Some("Running"),
    )
    .await;
    let again = wait_until("the restarted run's Job", LIMIT, || async {
        let job = ns.api::<Job>().get_opt("resilient-job").await.ok()??;
        job.metadata.deletion_timestamp.is_none().then_some(job)
    })
    .await;
    assert_eq!(runner_env(&again, "IS_RESUME").as_deref(), Some("true"));
    wait_for_phase(&ns.client, &ns.name, "resilient", Phase::Running, LIMIT).await;
}

/// The controller ownerReference UID of an object, if any.
fn controller_uid<K: Resource>(object: &K) -> Option<String> {
    object
        .meta()
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.clone())
}

/// Waits until `name` exists owned by `owner` (an object left by someone else must be
/// replaced, never adopted).
async fn owned_by<K>(api: &Api<K>, name: &str, owner: &str) -> K
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    wait_until(&format!("{name} owned by {owner}"), LIMIT, || async {
        let object = api.get_opt(name).await.ok()??;
        (controller_uid(&object).as_deref() == Some(owner)
            && object.meta().deletion_timestamp.is_none())
        .then_some(object)
    })
    .await
}

/// A session deleted with `--cascade=orphan` leaves its Job, pod and identity behind; a new
/// session of the same name never takes them for its own: it runs, as a first run, with
/// children owned by its own UID.
pub async fn orphans_of_an_earlier_session_with_the_same_name_are_never_adopted(
    cluster: &ClusterInfo,
) {
    let ns = TestNamespace::create(cluster, "orphans").await;
    let sessions = ns.api::<AgenticSession>();
    create(
        &ns.client,
        &ns.name,
        &session("reborn", &[("SIM_OUTCOME", "hang")]),
    )
    .await;
    wait_for_phase(&ns.client, &ns.name, "reborn", Phase::Running, LIMIT).await;
    let orphaning = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Orphan),
        ..Default::default()
    };
    sessions
        .delete("reborn", &orphaning)
        .await
        .expect("deleting the session, orphaning its children");
    gone(&sessions, "reborn").await;
    let orphan_job = ns
        .api::<Job>()
        .get("reborn-job")
        .await
        .expect("orphaned Job");
    assert_eq!(
        controller_uid(&orphan_job),
        None,
        "the Job is an orphan now"
    );

    create(
        &ns.client,
        &ns.name,
        &session("reborn", &[("SIM_OUTCOME", "hang")]),
    )
    .await;
    let uid = sessions
        .get("reborn")
        .await
        .expect("the new session")
        .uid()
        .expect("a uid");
    let job = owned_by(&ns.api::<Job>(), "reborn-job", &uid).await;
    assert_ne!(job.metadata.uid, orphan_job.metadata.uid);
    assert_eq!(
        runner_env(&job, "IS_RESUME").as_deref(),
        Some("false"),
        "a first run"
    );
    owned_by(&ns.api::<ServiceAccount>(), "ambient-session-reborn", &uid).await;
    owned_by(&ns.api::<Role>(), "ambient-session-reborn-role", &uid).await;
    owned_by(&ns.api::<RoleBinding>(), "ambient-session-reborn-rb", &uid).await;
    owned_by(&ns.api::<Secret>(), "ambient-runner-token-reborn", &uid).await;
    let running = wait_for_phase(&ns.client, &ns.name, "reborn", Phase::Running, LIMIT).await;
    assert_eq!(running.uid(), Some(uid));
}

/// The current run's Job without its owner reference (what a view of a session being deleted
/// with `--cascade=orphan` sees for a moment, or what a person removing the owner makes) is not
/// the session's to act on: it is never deleted nor replaced, and the session says so
/// (`JobCreated=False`, `JobOrphaned`). Before, it was taken for an earlier session's orphan and
/// deleted, killing the run (a flaky failure of the scenario above: a stale view of the session
/// being deleted).
pub async fn a_job_its_session_no_longer_owns_is_never_deleted(cluster: &ClusterInfo) {
    let ns = TestNamespace::create(cluster, "disowned").await;
    create(
        &ns.client,
        &ns.name,
        &session("kept", &[("SIM_OUTCOME", "hang")]),
    )
    .await;
    wait_for_phase(&ns.client, &ns.name, "kept", Phase::Running, LIMIT).await;
    let jobs = ns.api::<Job>();
    let before = jobs.get("kept-job").await.expect("the Job");
    let disown = serde_json::json!({"metadata": {"ownerReferences": null}});
    jobs.patch("kept-job", &PatchParams::default(), &Patch::Merge(&disown))
        .await
        .expect("removing the Job's owner");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = jobs.get("kept-job").await.expect("the Job is still there");
    assert_eq!(after.metadata.uid, before.metadata.uid, "never replaced");
    assert!(after.metadata.deletion_timestamp.is_none(), "never deleted");
    let sessions = ns.api::<AgenticSession>();
    let said = wait_until("JobCreated=False / JobOrphaned", LIMIT, || async {
        let status = sessions.get("kept").await.ok()?.status?;
        status
            .conditions
            .into_iter()
            .find(|c| c.type_ == "JobCreated" && c.reason.as_deref() == Some("JobOrphaned"))
    })
    .await;
    assert_eq!(said.status, agentic_crds::ConditionStatus::False);
}

/// A restart whose new Job starts while the finished run's pod is still there never takes that
/// pod for the new run's runner: pods count only for the Job that made them. (The finished
/// Job is removed with `--cascade=orphan` so its pod stays; otherwise the garbage collector
/// removes it within moments and the race is rare, as in the field.)
pub async fn restart_the_moment_a_run_completes_runs_again(cluster: &ClusterInfo) {
    let ns = TestNamespace::create(cluster, "instant-restart").await;
    let refusal = JobDeletionRefused::in_namespace(cluster, &ns).await;
    create(
        &ns.client,
        &ns.name,
        &session("again", &[("SIM_RUN_FOR", "1s")]),
    )
    .await;
    let done = wait_for_phase(&ns.client, &ns.name, "again", Phase::Completed, LIMIT).await;
    let first_start = done.status.and_then(|s| s.start_time);
    let orphaning = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Orphan),
        ..Default::default()
    };
    ns.api::<Job>()
        .delete("again-job", &orphaning)
        .await
        .expect("removing the finished Job, keeping its pod");
    gone(&ns.api::<Job>(), "again-job").await;
    refusal.lift().await;
    // The new run's pod comes late (as under load): until the quota goes, the finished run's
    // pod is the only one with the session's labels.
    let no_pods = CreationBlocked::pods_in(&ns).await;
    // The second run hangs: it must be seen Running, never Completed by the first run's pod.
    let patch = serde_json::json!({
        "metadata": {"annotations": {keys::DESIRED_PHASE_ANNOTATION: "Running"}},
        "spec": {"environmentVariables": {"SIM_OUTCOME": "hang"}},
    });
    let api = ns.api::<AgenticSession>();
    api.patch("again", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("restarting");
    wait_for_event(&ns, "again-job", "FailedCreate").await;
    for _ in 0..30 {
        let status = api
            .get("again")
            .await
            .expect("the session")
            .status
            .unwrap_or_default();
        let ended = status.phase.is_terminal() && status.start_time != first_start;
        assert!(
            !ended,
            "the restarted run ended without a pod of its own: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    no_pods.lift().await;
    let second = wait_until("the session to run again", LIMIT, || async {
        let status = api.get("again").await.ok()?.status?;
        let settled = matches!(
            status.phase,
            Phase::Running | Phase::Completed | Phase::Failed
        );
        (status.start_time != first_start && settled).then_some(status)
    })
    .await;
    assert_eq!(second.phase, Phase::Running, "{second:?}");
}

/// When deleting a finished run's Job is refused (an admission policy), the transition to
/// Completed is still announced (Event) and counted (metric); the Job goes once allowed.
pub async fn a_failing_cleanup_keeps_the_transitions_event_and_metric(cluster: &ClusterInfo) {
    let ns = TestNamespace::create(cluster, "cleanup-refused").await;
    let refusal = JobDeletionRefused::in_namespace(cluster, &ns).await;
    create(
        &ns.client,
        &ns.name,
        &session("kept", &[("SIM_RUN_FOR", "1s")]),
    )
    .await;
    wait_for_phase(&ns.client, &ns.name, "kept", Phase::Completed, LIMIT).await;
    wait_for_event(&ns, "kept", "Completed").await;
    let completed = started().metric(
        "ambient_sessions_completed_total",
        &[("namespace", &ns.name), ("final_phase", "Completed")],
    );
    assert_eq!(completed, 1.0);
    assert!(
        ns.api::<Job>().get_opt("kept-job").await.unwrap().is_some(),
        "the refusal held the Job"
    );
    refusal.lift().await;
    gone(&ns.api::<Job>(), "kept-job").await;
}

async fn set_project_inactivity(client: &Client, namespace: &str, seconds: i64) {
    let patch = serde_json::json!({"spec": {"inactivityTimeoutSeconds": seconds}});
    super::operator::patch_project_settings(client, namespace, patch).await;
}

/// Waits until session `name` is Stopped and asserts inactivity stopped it.
/// The stop is written once, without colliding with itself: the Ready condition says
/// InactivityTimeout, an Event says so, and no conflict was counted for the namespace.
async fn assert_stopped_for_inactivity(ns: &TestNamespace, name: &str) {
    let stopped = wait_for_phase(&ns.client, &ns.name, name, Phase::Stopped, LIMIT).await;
    assert_eq!(ready_reason(&stopped).as_deref(), Some("InactivityTimeout"));
    assert_eq!(
        stopped.status.and_then(|s| s.stopped_reason),
        Some(StoppedReason::Inactivity)
    );
    wait_for_event(ns, name, "InactivityTimeout").await;
    let conflicts = started().metric(
        "ambient_session_errors_total",
        &[("namespace", &ns.name), ("error_type", "conflict")],
    );
    assert_eq!(
        conflicts, 0.0,
        "an inactivity stop collided with its own write"
    );
}

/// Session-level inactivity timeout wins over the project's.
pub async fn session_inactivity_timeout_beats_the_project_one(cluster: &ClusterInfo) {
    let ns = TestNamespace::create(cluster, "idle-session").await;
    set_project_inactivity(&ns.client, &ns.name, 3600).await;
    let mut s = session("idle", &[("SIM_OUTCOME", "hang")]);
    s.spec.inactivity_timeout = Some(3);
    create(&ns.client, &ns.name, &s).await;
    assert_stopped_for_inactivity(&ns, "idle").await;
}

/// Without a session value, the project's inactivity timeout applies.
pub async fn project_inactivity_timeout_applies_when_the_session_sets_none(cluster: &ClusterInfo) {
    let ns = TestNamespace::create(cluster, "idle-project").await;
    set_project_inactivity(&ns.client, &ns.name, 3).await;
    create(
        &ns.client,
        &ns.name,
        &session("idle", &[("SIM_OUTCOME", "hang")]),
    )
    .await;
    assert_stopped_for_inactivity(&ns, "idle").await;
}

/// The runner identity exists and the token Secret carries both tokens and the refresh time.
pub async fn token_secret_holds_both_tokens(cluster: &ClusterInfo) {
    let ns = TestNamespace::create(cluster, "identity").await;
    create(
        &ns.client,
        &ns.name,
        &session("who", &[("SIM_OUTCOME", "hang")]),
    )
    .await;
    let running = wait_for_phase(&ns.client, &ns.name, "who", Phase::Running, LIMIT).await;
    let secret = ns
        .api::<Secret>()
        .get("ambient-runner-token-who")
        .await
        .expect("token Secret");
    let data = secret.data.clone().unwrap_or_default();
    assert!(!data["k8s-token"].0.is_empty() && !data["agui-token"].0.is_empty());
    assert!(
        secret
            .metadata
            .annotations
            .unwrap_or_default()
            .contains_key(keys::TOKEN_REFRESHED_AT_ANNOTATION)
    );
    ns.api::<ServiceAccount>()
        .get("ambient-session-who")
        .await
        .expect("ServiceAccount");
    let role = ns
        .api::<Role>()
        .get("ambient-session-who-role")
        .await
        .expect("Role");
    // Its own session's status only; sessions in general as the platform needs (SPEC §2.3,
    // tests/runner_identity.rs proves the verbs with the runner's real token).
    let rules = role.rules.unwrap_or_default();
    let status_rule = rules
        .iter()
        .find(|r| r.resources.as_deref() == Some(&["agenticsessions/status".to_string()][..]))
        .expect("a rule on the session's status");
    assert_eq!(
        status_rule.resource_names.as_deref(),
        Some(&["who".to_string()][..])
    );
    ns.api::<RoleBinding>()
        .get("ambient-session-who-rb")
        .await
        .expect("RoleBinding");
    let annotations = running.metadata.annotations.unwrap_or_default();
    assert_eq!(
        annotations
            .get(keys::RUNNER_TOKEN_SECRET_ANNOTATION)
            .map(String::as_str),
        Some("ambient-runner-token-who")
    );
}

/// Deleting a session removes everything it made (the real garbage collector).
pub async fn deleting_a_session_collects_every_child(cluster: &ClusterInfo) {
    let ns = TestNamespace::create(cluster, "collect").await;
    create(
        &ns.client,
        &ns.name,
        &session("doomed", &[("SIM_OUTCOME", "hang")]),
    )
    .await;
    wait_for_phase(&ns.client, &ns.name, "doomed", Phase::Running, LIMIT).await;
    ns.api::<AgenticSession>()
        .delete("doomed", &DeleteParams::background())
        .await
        .expect("deleting the session");
    gone(&ns.api::<Job>(), "doomed-job").await;
    gone(&ns.api::<Secret>(), "ambient-runner-token-doomed").await;
    gone(&ns.api::<ServiceAccount>(), "ambient-session-doomed").await;
    gone(&ns.api::<Role>(), "ambient-session-doomed-role").await;
    gone(&ns.api::<RoleBinding>(), "ambient-session-doomed-rb").await;
}

/// Sessions in a namespace without the managed label are left alone; once the label appears
/// the namespace gets its ProjectSettings and the session runs.
pub async fn sessions_in_unmanaged_namespaces_wait_until_the_label_appears(cluster: &ClusterInfo) {
    let ns = TestNamespace::create_with_labels(cluster, "unmanaged", &[]).await;
    ns.add_runner_credentials().await;
    create(
        &ns.client,
        &ns.name,
        &session("ignored", &[("SIM_RUN_FOR", "1s")]),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let untouched = ns.api::<AgenticSession>().get("ignored").await.unwrap();
    assert!(untouched.status.is_none(), "{:?}", untouched.status);
    assert!(
        ns.api::<ProjectSettings>()
            .get_opt("projectsettings")
            .await
            .unwrap()
            .is_none()
    );

    let patch =
        serde_json::json!({"metadata": {"labels": {keys::MANAGED_NAMESPACE_LABEL: "true"}}});
    Api::<Namespace>::all(ns.client.clone())
        .patch(&ns.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("labelling the namespace");
    wait_until("ProjectSettings", LIMIT, || async {
        ns.api::<ProjectSettings>()
            .get_opt("projectsettings")
            .await
            .ok()
            .flatten()
    })
    .await;
    wait_for_phase(&ns.client, &ns.name, "ignored", Phase::Completed, LIMIT).await;
}

async fn binding_names(client: &Client, namespace: &str) -> Vec<String> {
    let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), namespace);
    let selector = format!("{}={}", keys::MANAGED_BY_LABEL, keys::MANAGED_BY_VALUE);
    let mut names: Vec<String> = bindings
        .list(&kube::api::ListParams::default().labels(&selector))
        .await
        .expect("listing RoleBindings")
        .items
        .into_iter()
        .filter_map(|b| b.metadata.name)
        .collect();
    names.sort();
    names
}

/// groupAccess entries become RoleBindings; removed entries are pruned.
pub async fn group_access_changes_create_and_prune_role_bindings(cluster: &ClusterInfo) {
    let ns = TestNamespace::create(cluster, "groups").await;
    let settings: Api<ProjectSettings> = ns.api();
    wait_until("ProjectSettings", LIMIT, || async {
        settings
            .get_opt(keys::PROJECT_SETTINGS_NAME)
            .await
            .ok()
            .flatten()
    })
    .await;
    let set = |access: serde_json::Value| {
        let settings = settings.clone();
        async move {
            let patch = serde_json::json!({"spec": {"groupAccess": access}});
            settings
                .patch(
                    keys::PROJECT_SETTINGS_NAME,
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
                .expect("patching groupAccess");
        }
    };
    set(serde_json::json!([
        {"groupName": "devs", "role": "edit"},
        {"groupName": "ops", "role": "view"}
    ]))
    .await;
    wait_until("two bindings", LIMIT, || async {
        (binding_names(&ns.client, &ns.name).await == ["devs-edit", "ops-view"]).then_some(())
    })
    .await;
    set(serde_json::json!([{"groupName": "devs", "role": "admin"}])).await;
    wait_until("the stale bindings pruned", LIMIT, || async {
        (binding_names(&ns.client, &ns.name).await == ["devs-admin"]).then_some(())
    })
    .await;
    let binding = ns.api::<RoleBinding>().get("devs-admin").await.unwrap();
    assert_eq!(binding.role_ref.name, "ambient-project-admin");
    wait_until("status to count one binding", LIMIT, || async {
        let status = settings
            .get(keys::PROJECT_SETTINGS_NAME)
            .await
            .ok()?
            .status?;
        (status.group_bindings_created == Some(1) && status.limit_range_ready == Some(true))
            .then_some(())
    })
    .await;
}

/// What the schema cannot express ends Failed / InvalidSpec, naming the field.
pub async fn spec_the_schema_cannot_check_fails_as_invalid_spec(cluster: &ClusterInfo) {
    let ns = TestNamespace::create(cluster, "invalid").await;
    let mut s = session("bad-repo", &[]);
    s.spec.repos = vec![agentic_crds::session::RepoSpec {
        url: "not a url at all".into(),
        branch: "main".into(),
        auto_push: false,
    }];
    create(&ns.client, &ns.name, &s).await;
    let failed = wait_for_phase(&ns.client, &ns.name, "bad-repo", Phase::Failed, LIMIT).await;
    assert_eq!(ready_reason(&failed).as_deref(), Some("InvalidSpec"));
    let message = ready_message(&failed);
    assert!(message.starts_with("spec.repos[0].url"), "{message}");
    assert!(
        ns.api::<Job>()
            .get_opt("bad-repo-job")
            .await
            .unwrap()
            .is_none()
    );
}

/// A nonsense desired-phase neither crashes nor stalls the operator.
pub async fn garbage_desired_phase_is_ignored(cluster: &ClusterInfo) {
    let ns = TestNamespace::create(cluster, "garbage").await;
    let mut s = session("odd", &[("SIM_RUN_FOR", "1s")]);
    s.metadata.annotations = Some(
        [
            (
                keys::DESIRED_PHASE_ANNOTATION.to_string(),
                "Exploded".to_string(),
            ),
            (
                keys::STOP_REQUESTED_AT_ANNOTATION.to_string(),
                "yesterday-ish".to_string(),
            ),
        ]
        .into(),
    );
    create(&ns.client, &ns.name, &s).await;
    wait_for_phase(&ns.client, &ns.name, "odd", Phase::Completed, LIMIT).await;
}

/// A session created with a stop request never gets a Job and ends Stopped (user).
pub async fn stop_requested_before_the_start_ends_stopped_without_a_job(cluster: &ClusterInfo) {
    let ns = TestNamespace::create(cluster, "stop-pending").await;
    let mut s = session("never", &[]);
    s.metadata.annotations = Some(
        [(
            keys::DESIRED_PHASE_ANNOTATION.to_string(),
            "Stopped".to_string(),
        )]
        .into(),
    );
    create(&ns.client, &ns.name, &s).await;
    let stopped = wait_for_phase(&ns.client, &ns.name, "never", Phase::Stopped, LIMIT).await;
    assert_eq!(
        stopped.status.and_then(|s| s.stopped_reason),
        Some(StoppedReason::User)
    );
    assert!(
        ns.api::<Job>()
            .get_opt("never-job")
            .await
            .unwrap()
            .is_none()
    );
}
