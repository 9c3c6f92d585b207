//! `agentic-operator session-trigger` (SPEC §5.7) on the real control plane: the real binary
//! run as a process the way a scheduled session's CronJob runs it, authenticated only as its
//! namespace's `ambient-session-trigger` ServiceAccount (the RBAC the namespace's
//! ProjectSettings gives it, nothing more), next to the in-process operator that runs the
//! sessions, with a fake backend that records the prompts it is sent.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use agentic_crds::condition::types;
use agentic_crds::{AgenticSession, ConditionStatus, Phase, ProjectSettings, keys};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::jiff::Timestamp;
use kube::api::{ApiResource, DeleteParams, DynamicObject, ListParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

use support::backend::FakeBackend;
use support::operator::{Engine, operator, runner_env, wait_for_phase};
use support::{ClusterInfo, TestNamespace, client_from_kubeconfig, rbac, wait_until};

const LIMIT: Duration = Duration::from_secs(60);

/// What a run of the trigger ended with.
#[derive(Debug)]
struct Exit {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Exit {
    fn succeeded(&self) -> &Self {
        assert_eq!(self.code, Some(0), "session-trigger failed: {self:?}");
        self
    }
}

/// Runs `agentic-operator session-trigger` with exactly `env` (nothing inherited).
async fn run_trigger(env: &[(&str, String)]) -> Exit {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_agentic-operator"))
        .arg("session-trigger")
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .await
        .expect("running session-trigger");
    Exit {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A managed namespace with the trigger's RBAC in force, a kubeconfig holding a token of its
/// `ambient-session-trigger` ServiceAccount, and a fake backend.
struct Project {
    ns: TestNamespace,
    kubeconfig: PathBuf,
    token: String,
    backend: FakeBackend,
}

impl Project {
    async fn create(cluster: &ClusterInfo, purpose: &str) -> Self {
        operator(cluster, Engine::Queue, &[]);
        let ns = TestNamespace::create(cluster, purpose).await;
        let settings: Api<ProjectSettings> = ns.api();
        wait_until("scheduledSessionRBACReady", LIMIT, || async {
            settings
                .get_opt(keys::PROJECT_SETTINGS_NAME)
                .await
                .ok()??
                .status?
                .scheduled_session_rbac_ready
                .filter(|ready| *ready)
        })
        .await;
        let kubeconfig = cluster
            .state_dir
            .join(format!("session-trigger-{}.kubeconfig", ns.name));
        let token = rbac::service_account_kubeconfig(
            cluster,
            &ns.name,
            keys::SESSION_TRIGGER_NAME,
            &kubeconfig,
        );
        // The authorizer honours a new RoleBinding a moment after it exists.
        let as_trigger: Api<AgenticSession> =
            Api::namespaced(client_from_kubeconfig(&kubeconfig).await, &ns.name);
        wait_until("the trigger's RBAC in force", LIMIT, || async {
            as_trigger.list(&ListParams::default()).await.ok().map(drop)
        })
        .await;
        Project {
            ns,
            kubeconfig,
            token,
            backend: FakeBackend::start(),
        }
    }

    /// Runs the trigger as the CronJob would for `schedule`, as the trigger's ServiceAccount.
    async fn trigger(&self, schedule: &str, template: Value, reuse: bool) -> Exit {
        run_trigger(&[
            ("SESSION_TEMPLATE", template.to_string()),
            ("PROJECT_NAMESPACE", self.ns.name.clone()),
            ("SCHEDULED_SESSION_NAME", schedule.into()),
            ("REUSE_LAST_SESSION", reuse.to_string()),
            ("BACKEND_API_URL", self.backend.base_url()),
            ("KUBECONFIG", self.kubeconfig.display().to_string()),
        ])
        .await
    }

    /// The sessions labelled with `schedule`, as stored (JSON, unknown keys would show), by
    /// name.
    async fn sessions_of(&self, schedule: &str) -> Vec<DynamicObject> {
        let api: Api<DynamicObject> = Api::namespaced_with(
            self.ns.client.clone(),
            &self.ns.name,
            &ApiResource::erase::<AgenticSession>(&()),
        );
        let selector = format!("{}={schedule}", keys::SCHEDULED_SESSION_NAME_LABEL);
        let mut sessions = api
            .list(&ListParams::default().labels(&selector))
            .await
            .expect("listing sessions")
            .items;
        sessions.sort_by_key(|s| s.name_any());
        sessions
    }

    /// The one session of `schedule`.
    async fn only_session_of(&self, schedule: &str) -> DynamicObject {
        let mut sessions = self.sessions_of(schedule).await;
        assert_eq!(sessions.len(), 1, "{sessions:#?}");
        sessions.remove(0)
    }

    async fn wait_for(&self, session: &str, phase: Phase) -> AgenticSession {
        wait_for_phase(&self.ns.client, &self.ns.name, session, phase, LIMIT).await
    }
}

/// `<prefix>-<unix seconds>` with the seconds within `[from, to]`: the seconds.
fn seconds_after_prefix(name: &str, prefix: &str, from: i64, to: i64) -> i64 {
    let seconds: i64 = name
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('-'))
        .filter(|digits| digits.len() == 10 && digits.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|digits| digits.parse().ok())
        .unwrap_or_else(|| panic!("{name} is not {prefix}-<unix seconds>"));
    assert!(
        (from..=to).contains(&seconds),
        "{name}: not created in [{from}, {to}]"
    );
    seconds
}

#[tokio::test]
async fn a_new_session_is_created_from_the_template_with_its_unknown_keys_dropped() {
    let cluster = ClusterInfo::from_env();
    let project = Project::create(&cluster, "trigger-create").await;
    let schedule = "Sched.Nightly_Run";
    // The backend's CreateAgenticSessionRequest: keys the CRD does not know, with its own.
    let template = json!({
        "displayName": "Nightly Report: ünïcode!",
        "initialPrompt": "Summarise yesterday's commits",
        "runnerType": "claude-agent-sdk",
        "sdkOptions": {"max_turns": 3},
        "labels": {"team": "a"},
        "annotations": {"note": "x"},
        "parent_session_id": "",
        "timeout": 600,
        "environmentVariables": {"SIM_OUTCOME": "hang"},
        "repos": [{"url": "https://github.com/ambient-code/platform"}],
        "userContext": {"userId": "u-1", "displayName": "Ada", "groups": ["devs"]},
    });
    let before = Timestamp::now().as_second();
    let exit = project.trigger(schedule, template, false).await;
    let after = Timestamp::now().as_second();
    exit.succeeded();

    let session = project.only_session_of(schedule).await;
    let name = session.name_any();
    assert!(
        exit.stdout.contains(&format!("created session {name}")),
        "{exit:?}"
    );
    let seconds = seconds_after_prefix(&name, "nightly-report-n-code", before, after);
    let labels = session.labels();
    assert_eq!(labels[keys::SCHEDULED_SESSION_NAME_LABEL], schedule);
    assert_eq!(labels[keys::SCHEDULED_RUN_LABEL], "true");
    assert_eq!(
        labels.len(),
        2,
        "the template's labels are not the session's: {labels:?}"
    );
    assert!(!session.annotations().contains_key("note"));

    let spec = session.data["spec"].as_object().expect("a spec");
    let stamp = Timestamp::from_second(seconds)
        .unwrap()
        .strftime("%b %-d, %Y - %H:%M:%S")
        .to_string();
    assert_eq!(
        spec["displayName"],
        format!("Nightly Report: ünïcode! ({stamp})"),
        "the display name gets the run's UTC time"
    );
    assert_eq!(spec["initialPrompt"], "Summarise yesterday's commits");
    assert_eq!(spec["timeout"], 600);
    assert_eq!(
        spec["repos"][0]["url"],
        "https://github.com/ambient-code/platform"
    );
    assert_eq!(spec["userContext"]["userId"], "u-1");
    for unknown in [
        "runnerType",
        "sdkOptions",
        "labels",
        "annotations",
        "parent_session_id",
    ] {
        assert!(
            !spec.contains_key(unknown),
            "{unknown} was not dropped: {spec:?}"
        );
    }
    // A session the operator runs like any other.
    project.wait_for(&name, Phase::Running).await;

    // Without a display name the scheduled session's name is the prefix.
    let before = Timestamp::now().as_second();
    let exit = project
        .trigger(schedule, json!({"initialPrompt": "again"}), false)
        .await;
    let after = Timestamp::now().as_second();
    exit.succeeded();
    let sessions = project.sessions_of(schedule).await;
    assert_eq!(sessions.len(), 2, "reuse is off: a new session every run");
    let second = sessions
        .iter()
        .find(|s| s.name_any() != name)
        .expect("the second session");
    seconds_after_prefix(&second.name_any(), "sched-nightly-run", before, after);
    assert!(second.data["spec"].get("displayName").is_none());
}

#[tokio::test]
async fn reusing_a_running_session_without_a_prompt_does_nothing() {
    let cluster = ClusterInfo::from_env();
    let project = Project::create(&cluster, "trigger-idle").await;
    let schedule = "schedule-idle";
    let template = json!({"environmentVariables": {"SIM_OUTCOME": "hang"}});
    // Nothing to reuse yet: created.
    project
        .trigger(schedule, template.clone(), true)
        .await
        .succeeded();
    let name = project.only_session_of(schedule).await.name_any();
    project.wait_for(&name, Phase::Running).await;

    let exit = project.trigger(schedule, template, true).await;
    exit.succeeded();
    assert!(
        exit.stdout
            .contains(&format!("session {name} is running and there is no prompt")),
        "{exit:?}"
    );
    assert_eq!(project.only_session_of(schedule).await.name_any(), name);
    assert!(project.backend.requests().is_empty());
}

#[tokio::test]
async fn a_prompt_for_a_running_session_goes_through_the_backend_as_the_service_account() {
    let cluster = ClusterInfo::from_env();
    let project = Project::create(&cluster, "trigger-prompt").await;
    let schedule = "schedule-prompt";
    project
        .trigger(
            schedule,
            json!({"environmentVariables": {"SIM_OUTCOME": "hang"}}),
            true,
        )
        .await
        .succeeded();
    let name = project.only_session_of(schedule).await.name_any();
    project.wait_for(&name, Phase::Running).await;

    let prompt = json!({"initialPrompt": "Follow up on the report"});
    let before = Timestamp::now().as_second();
    let exit = project.trigger(schedule, prompt.clone(), true).await;
    let after = Timestamp::now().as_second();
    exit.succeeded();
    assert!(exit.stdout.contains("sent the prompt"), "{exit:?}");
    let requests = project.backend.requests();
    assert_eq!(requests.len(), 1, "{requests:#?}");
    let request = &requests[0];
    assert_eq!(request.method, "POST");
    assert_eq!(
        request.path,
        format!(
            "/api/projects/{}/agentic-sessions/{name}/agui/run",
            project.ns.name
        )
    );
    assert_eq!(
        request.headers["authorization"],
        format!("Bearer {}", project.token),
        "the trigger's own ServiceAccount token"
    );
    assert_eq!(request.headers["content-type"], "application/json");
    let body = request.json();
    assert_eq!(body["threadId"], name.as_str());
    seconds_after_prefix(
        body["runId"].as_str().expect("a runId"),
        "scheduled",
        before,
        after,
    );
    let messages = body["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 1, "{body}");
    assert_eq!(messages[0]["role"], "user");
    assert_eq!(messages[0]["content"], "Follow up on the report");
    assert!(
        messages[0]["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("scheduled-msg-")),
        "{body}"
    );
    assert_eq!(body.as_object().map(|b| b.len()), Some(3), "{body}");
    let session = project.only_session_of(schedule).await;
    assert_eq!(session.name_any(), name, "no new session");
    assert!(
        session.data["spec"].get("initialPrompt").is_none(),
        "not restarted"
    );

    // The backend refusing is a failure with its answer in the message.
    project.backend.answer_with(500, "backend exploded");
    let exit = project.trigger(schedule, prompt, true).await;
    assert_eq!(exit.code, Some(69), "{exit:?}");
    assert!(
        exit.stderr.contains("500") && exit.stderr.contains("backend exploded"),
        "{exit:?}"
    );
    assert_eq!(project.backend.requests().len(), 2);
    assert_eq!(project.sessions_of(schedule).await.len(), 1);
}

#[tokio::test]
async fn reusing_a_completed_session_restarts_it_and_its_run_executes_the_prompt() {
    let cluster = ClusterInfo::from_env();
    let project = Project::create(&cluster, "trigger-resume").await;
    let schedule = "schedule-resume";
    // Long enough for the run to be seen Running, and for its Job to be read once restarted.
    let template = json!({
        "initialPrompt": "First prompt",
        "environmentVariables": {"SIM_RUN_FOR": "8s"},
    });
    project.trigger(schedule, template, true).await.succeeded();
    let name = project.only_session_of(schedule).await.name_any();
    let completed = project.wait_for(&name, Phase::Completed).await;
    // The first run started, so restarting it plainly would be a resume (IS_RESUME=true), whose
    // runner skips INITIAL_PROMPT.
    let started = completed
        .status
        .as_ref()
        .expect("a status")
        .conditions
        .iter()
        .find(|c| c.type_ == types::RUNNER_STARTED)
        .map(|c| c.status);
    assert_eq!(
        started,
        Some(ConditionStatus::True),
        "{:?}",
        completed.status
    );
    let jobs: Api<Job> = project.ns.api();
    let job_name = format!("{name}-job");
    support::wait_until_gone(&jobs, &job_name).await;

    let exit = project
        .trigger(schedule, json!({"initialPrompt": "Second prompt"}), true)
        .await;
    exit.succeeded();
    assert!(
        exit.stdout.contains(&format!("restarted session {name}")),
        "{exit:?}"
    );
    let session = project.only_session_of(schedule).await;
    assert_eq!(session.data["spec"]["initialPrompt"], "Second prompt");

    let job = wait_until("the restarted run's Job", LIMIT, || async {
        jobs.get_opt(&job_name).await.ok().flatten()
    })
    .await;
    assert_eq!(
        runner_env(&job, "INITIAL_PROMPT").as_deref(),
        Some("Second prompt")
    );
    assert_eq!(
        runner_env(&job, "IS_RESUME").as_deref(),
        Some("false"),
        "the restarted run executes its prompt"
    );
    let sessions: Api<AgenticSession> = project.ns.api();
    wait_until("force-execute-prompt consumed", LIMIT, || async {
        let session = sessions.get(&name).await.ok()?;
        (!session
            .annotations()
            .contains_key(keys::FORCE_EXECUTE_PROMPT_ANNOTATION))
        .then_some(())
    })
    .await;
    assert_eq!(project.sessions_of(schedule).await.len(), 1);
}

#[tokio::test]
async fn project_settings_give_the_trigger_its_rbac_and_nothing_more() {
    let cluster = ClusterInfo::from_env();
    let project = Project::create(&cluster, "trigger-rbac").await;
    let ns = &project.ns;
    let settings = ns
        .api::<ProjectSettings>()
        .get(keys::PROJECT_SETTINGS_NAME)
        .await
        .expect("the namespace's ProjectSettings");
    let condition = settings
        .status
        .as_ref()
        .and_then(|s| {
            s.conditions
                .iter()
                .find(|c| c.type_ == types::SCHEDULED_SESSION_RBAC_READY)
        })
        .map(|c| c.status);
    assert_eq!(condition, Some(ConditionStatus::True));
    let name = keys::SESSION_TRIGGER_NAME;
    let account = ns
        .api::<ServiceAccount>()
        .get(name)
        .await
        .expect("the ServiceAccount");
    let role = ns.api::<Role>().get(name).await.expect("the Role");
    let binding = ns
        .api::<RoleBinding>()
        .get(name)
        .await
        .expect("the RoleBinding");
    for metadata in [&account.metadata, &role.metadata, &binding.metadata] {
        assert_eq!(
            metadata
                .labels
                .as_ref()
                .map(|l| l[keys::MANAGED_NAMESPACE_LABEL].as_str()),
            Some("true")
        );
        let owner = &metadata.owner_references.as_ref().expect("an owner")[0];
        assert_eq!(Some(&owner.uid), settings.metadata.uid.as_ref());
        assert_eq!(owner.controller, Some(true));
    }
    let rules = role.rules.expect("rules");
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].verbs, ["create", "get", "list", "update"]);

    // The trigger's token reads and writes sessions of its namespace only.
    let client = client_from_kubeconfig(&project.kubeconfig).await;
    let forbidden = |result: Result<(), kube::Error>| matches!(result, Err(kube::Error::Api(ref s)) if s.code == 403);
    let sessions: Api<AgenticSession> = Api::namespaced(client.clone(), &ns.name);
    assert!(sessions.list(&ListParams::default()).await.is_ok());
    assert!(forbidden(
        sessions
            .delete("anything", &DeleteParams::default())
            .await
            .map(drop)
    ));
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    assert!(forbidden(
        secrets.list(&ListParams::default()).await.map(drop)
    ));
    let elsewhere: Api<AgenticSession> = Api::namespaced(client, "default");
    assert!(forbidden(
        elsewhere.list(&ListParams::default()).await.map(drop)
    ));
}

#[tokio::test]
async fn missing_or_malformed_environment_exits_64_naming_the_variable() {
    let valid = [
        ("SESSION_TEMPLATE", r#"{"initialPrompt": "hi"}"#.to_string()),
        ("PROJECT_NAMESPACE", "team-a".to_string()),
        ("SCHEDULED_SESSION_NAME", "schedule-1".to_string()),
    ];
    let without = |name: &str| -> Vec<(&'static str, String)> {
        valid.iter().filter(|(k, _)| *k != name).cloned().collect()
    };
    let replacing = |name: &'static str, value: &str| {
        let mut env = without(name);
        env.push((name, value.to_string()));
        env
    };
    for (env, variable) in [
        (Vec::new(), "SESSION_TEMPLATE"),
        (without("SESSION_TEMPLATE"), "SESSION_TEMPLATE"),
        (without("PROJECT_NAMESPACE"), "PROJECT_NAMESPACE"),
        (without("SCHEDULED_SESSION_NAME"), "SCHEDULED_SESSION_NAME"),
        (
            replacing("SCHEDULED_SESSION_NAME", ""),
            "SCHEDULED_SESSION_NAME",
        ),
        (
            replacing("SESSION_TEMPLATE", "{not json"),
            "SESSION_TEMPLATE",
        ),
        (
            replacing("SESSION_TEMPLATE", r#""a string""#),
            "SESSION_TEMPLATE",
        ),
        (
            replacing("PROJECT_NAMESPACE", "Team_A"),
            "PROJECT_NAMESPACE",
        ),
        (
            replacing("SCHEDULED_SESSION_NAME", "not a label"),
            "SCHEDULED_SESSION_NAME",
        ),
        (
            replacing("BACKEND_NAMESPACE", "Not/A/Namespace"),
            "BACKEND_NAMESPACE",
        ),
        (
            replacing("BACKEND_API_URL", "https://backend/api"),
            "BACKEND_API_URL",
        ),
    ] {
        let exit = run_trigger(&env).await;
        assert_eq!(exit.code, Some(64), "{env:?}: {exit:?}");
        assert!(exit.stderr.contains(variable), "{env:?}: {exit:?}");
    }
    // Arguments are refused too: its configuration is the environment only.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_agentic-operator"))
        .args(["session-trigger", "--namespace", "x"])
        .env_clear()
        .output()
        .await
        .expect("running session-trigger");
    assert_eq!(output.status.code(), Some(64));
}
