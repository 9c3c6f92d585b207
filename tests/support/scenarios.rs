//! Session lifecycle scenarios (SPEC §2.1 rows), written once and run under each engine by
//! [`lifecycle_tests!`](crate::lifecycle_tests). Every scenario asserts the exact final state, so
//! both engines passing means both converge to the same state.

use std::time::Duration;

use agentic_crds::{AgenticSession, Phase, ProjectSettings, StoppedReason, keys};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};

use super::operator::{annotate, create, ready_reason, session, wait_for_phase};
use super::{ClusterInfo, JobCreationBlocked, TestNamespace, wait_until, wait_until_gone as gone};

const LIMIT: Duration = Duration::from_secs(60);

/// Expands to one `#[tokio::test]` per scenario for the given engine.
#[macro_export]
macro_rules! lifecycle_tests {
    ($engine:expr) => {
        $crate::lifecycle_tests!(@tests $engine;
            session_completes_and_its_job_is_deleted,
            runner_exit_1_fails_with_the_exit_code,
            runner_exit_2_is_a_prerequisite_failure,
            runner_past_its_timeout_fails_with_timeout,
            runner_dying_while_running_fails_the_session,
            stop_while_running_then_restart_resumes,
            first_run_after_a_transient_error_is_not_a_resume,
            job_deleted_behind_the_operators_back_is_recreated,
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
    (@tests $engine:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let cluster = support::ClusterInfo::from_env();
                support::operator::operator(&cluster, $engine, &[]);
                support::scenarios::$name(&cluster).await;
            }
        )*
    };
}

fn job_env(job: &Job, name: &str) -> Option<String> {
    job.spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .containers
        .first()?
        .env
        .as_ref()?
        .iter()
        .find(|e| e.name == name)?
        .value
        .clone()
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
    assert_eq!(status.job_name.as_deref(), Some("ok-job"));
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
        .clone()
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
    let message = failed
        .status
        .as_ref()
        .and_then(|s| s.message.clone())
        .unwrap_or_default();
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

/// A runner that outlives `spec.timeout` → Failed / Timeout (the Job's deadline, enforced).
pub async fn runner_past_its_timeout_fails_with_timeout(cluster: &ClusterInfo) {
    let ns = TestNamespace::create(cluster, "timeout").await;
    let mut s = session("slow", &[("SIM_OUTCOME", "hang")]);
    s.spec.timeout = 3;
    create(&ns.client, &ns.name, &s).await;
    let failed = wait_for_phase(&ns.client, &ns.name, "slow", Phase::Failed, LIMIT).await;
    assert_eq!(ready_reason(&failed).as_deref(), Some("Timeout"));
    assert_eq!(
        failed.status.and_then(|s| s.stopped_reason),
        Some(StoppedReason::Timeout)
    );
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
    let message = failed.status.and_then(|s| s.message).unwrap_or_default();
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
    assert_eq!(job_env(&first_job, "IS_RESUME").as_deref(), Some("false"));

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
    assert_eq!(job_env(&second_job, "IS_RESUME").as_deref(), Some("true"));
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
    tokio::time::sleep(Duration::from_secs(2)).await;
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
    assert_eq!(job_env(&job, "IS_RESUME").as_deref(), Some("false"));
}

/// Someone deletes the Job of a running session: it is recreated and the session runs again.
pub async fn job_deleted_behind_the_operators_back_is_recreated(cluster: &ClusterInfo) {
    let ns = TestNamespace::create(cluster, "job-deleted").await;
    create(
        &ns.client,
        &ns.name,
        &session("resilient", &[("SIM_OUTCOME", "hang")]),
    )
    .await;
    wait_for_phase(&ns.client, &ns.name, "resilient", Phase::Running, LIMIT).await;
    let jobs = ns.api::<Job>();
    let original = running_job(&ns.client, &ns.name, "resilient").await;
    jobs.delete("resilient-job", &DeleteParams::background())
        .await
        .expect("deleting the Job");
    let replacement = wait_until("a new Job", LIMIT, || async {
        let job = jobs.get_opt("resilient-job").await.ok()??;
        (job.metadata.uid != original.metadata.uid && job.metadata.deletion_timestamp.is_none())
            .then_some(job)
    })
    .await;
    assert_eq!(job_env(&replacement, "IS_RESUME").as_deref(), Some("true"));
    wait_for_phase(&ns.client, &ns.name, "resilient", Phase::Running, LIMIT).await;
}

async fn set_project_inactivity(client: &Client, namespace: &str, seconds: i64) {
    let settings: Api<ProjectSettings> = Api::namespaced(client.clone(), namespace);
    wait_until("the operator to create ProjectSettings", LIMIT, || async {
        settings
            .get_opt(keys::PROJECT_SETTINGS_NAME)
            .await
            .ok()
            .flatten()
    })
    .await;
    let patch = serde_json::json!({"spec": {"inactivityTimeoutSeconds": seconds}});
    settings
        .patch(
            keys::PROJECT_SETTINGS_NAME,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .expect("patching ProjectSettings");
}

/// Waits until session `name` is Stopped and asserts inactivity stopped it.
async fn assert_stopped_for_inactivity(ns: &TestNamespace, name: &str) {
    let stopped = wait_for_phase(&ns.client, &ns.name, name, Phase::Stopped, LIMIT).await;
    assert_eq!(
        stopped.status.and_then(|s| s.stopped_reason),
        Some(StoppedReason::Inactivity)
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
    let rule = &role.rules.unwrap()[0];
    assert_eq!(
        rule.resource_names.as_deref(),
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
    let message = failed.status.and_then(|s| s.message).unwrap_or_default();
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
