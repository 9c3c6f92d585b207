//! The `AgenticSession` custom resource (`agenticsessions.vteam.ambient-code/v1alpha1`).
//!
//! The schema accepts every field of the original ambient-code CRD (so clients written for it
//! keep working under strict field validation) and adds admission-time validation: minimums,
//! upper bounds, enums and CEL rules (see [`session_name_rule`] and the
//! `spec.environmentVariables` rules). What the schema cannot express is checked by
//! [`crate::validate::validate`].

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{
    CustomResource,
    core::{Message, Rule},
};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::condition::Condition;
use crate::env::{ENV_NAME_PATTERN, MAX_USER_ENV_VARS, RESERVED_ENV_NAMES};
use crate::names::MAX_SESSION_NAME_LEN;

/// Default `repos[].branch` and `activeWorkflow.branch`.
pub const DEFAULT_BRANCH: &str = "main";
/// Default `llmSettings.model`.
pub const DEFAULT_MODEL: &str = "claude-sonnet-4-6";
/// Default `llmSettings.temperature`.
pub const DEFAULT_TEMPERATURE: f64 = 0.7;
/// Default `llmSettings.maxTokens`.
pub const DEFAULT_MAX_TOKENS: i64 = 4000;
/// Default `spec.timeout` in seconds.
pub const DEFAULT_TIMEOUT_SECONDS: i64 = 300;
/// Largest `spec.timeout`: 7 days. A longer hard limit on one agent run is a mistake, not a plan.
pub const MAX_TIMEOUT_SECONDS: i64 = 604_800;
/// Largest `spec.inactivityTimeout`: 365 days (it can never fire after `spec.timeout` anyway).
pub const MAX_INACTIVITY_TIMEOUT_SECONDS: i64 = 31_536_000;
/// Largest `llmSettings.temperature` (the range models accept is 0..=2).
pub const MAX_TEMPERATURE: f64 = 2.0;
/// Largest `llmSettings.maxTokens`: one million, above any model's output limit.
pub const MAX_MAX_TOKENS: i64 = 1_000_000;
/// Most entries in `spec.repos`.
pub const MAX_REPOS: usize = 50;

/// Desired state of an agentic session: what the runner should work on and how.
///
/// All fields are optional; defaults are in the schema, so the API server fills them in.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "vteam.ambient-code",
    version = "v1alpha1",
    kind = "AgenticSession",
    singular = "agenticsession",
    plural = "agenticsessions",
    namespaced,
    shortname = "as",
    status = "AgenticSessionStatus",
    derive = "PartialEq",
    doc = "An AI coding agent session, run by the operator as a Kubernetes Job.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Job", type_ = "string", json_path = ".status.jobName"),
    printcolumn(name = "Started", type_ = "date", json_path = ".status.startTime"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = session_name_rule()
)]
#[serde(rename_all = "camelCase")]
pub struct AgenticSessionSpec {
    /// Initial prompt, used only on the first SDK invocation of a brand-new session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_prompt: Option<String>,
    /// Human-readable name of the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Git repositories to clone into the workspace (at most 50).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    pub repos: Vec<RepoSpec>,
    /// Identity of the user who created the session (set by the backend).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_context: Option<UserContext>,
    /// Model settings passed to the runner.
    #[serde(default)]
    pub llm_settings: LlmSettings,
    /// Seconds the run is expected to take (1 to 604800 = 7 days), passed to the runner as
    /// `TIMEOUT`. Advisory: a bound on the whole run only when the operator runs with
    /// `--enforce-session-timeout`.
    #[serde(default = "default_timeout")]
    #[schemars(range(min = 1, max = 604_800))]
    pub timeout: i64,
    /// Seconds without activity before the session is stopped; 0 disables auto-stop. When
    /// absent, the namespace's `ProjectSettings.spec.inactivityTimeoutSeconds` applies, then the
    /// operator's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 31_536_000))]
    pub inactivity_timeout: Option<i64>,
    /// When true, the session stops when the agent finishes its run (a runner-side feature; the
    /// operator passes it through).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_on_run_finished: Option<bool>,
    /// Extra environment variables for the runner (at most 128). Names must be C identifiers
    /// and may not be any the operator sets itself (see the validation rules).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "environment_variables_schema")]
    pub environment_variables: BTreeMap<String, String>,
    /// MCP servers for this session, merged with the platform defaults by the runner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp_servers: Option<McpServers>,
    /// Workflow repository the runner activates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_workflow: Option<ActiveWorkflow>,
}

impl Default for AgenticSessionSpec {
    fn default() -> Self {
        Self {
            initial_prompt: None,
            display_name: None,
            repos: Vec::new(),
            user_context: None,
            llm_settings: LlmSettings::default(),
            timeout: DEFAULT_TIMEOUT_SECONDS,
            inactivity_timeout: None,
            stop_on_run_finished: None,
            environment_variables: BTreeMap::new(),
            mcp_servers: None,
            active_workflow: None,
        }
    }
}

impl AgenticSessionSpec {
    /// `repos` with each URL once (compared after trimming whitespace): the last entry of a URL
    /// wins, at the place of its first; an empty branch reads as [`DEFAULT_BRANCH`]. The
    /// platform's backend appends a repository without looking for it first, and the original
    /// treated a repeated URL the same way.
    pub fn unique_repos(&self) -> Vec<RepoSpec> {
        let mut unique: Vec<RepoSpec> = Vec::with_capacity(self.repos.len());
        for repo in &self.repos {
            let url = repo.url.trim();
            if url.is_empty() {
                continue;
            }
            let branch = match repo.branch.trim() {
                "" => DEFAULT_BRANCH.to_string(),
                _ => repo.branch.clone(),
            };
            let entry = RepoSpec {
                url: url.to_string(),
                branch,
                auto_push: repo.auto_push,
            };
            match unique.iter_mut().find(|r| r.url == url) {
                Some(first) => *first = entry,
                None => unique.push(entry),
            }
        }
        unique
    }
}

/// A git repository to clone.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RepoSpec {
    /// Repository URL (`https://`, `http://`, `ssh://`, `git://` or `user@host:path`).
    #[schemars(length(min = 1, max = 2048))]
    pub url: String,
    /// Branch to check out.
    #[serde(default = "default_branch")]
    #[schemars(length(min = 1, max = 255))]
    pub branch: String,
    /// Commit and push changes to this repository when the session completes.
    #[serde(default)]
    pub auto_push: bool,
}

/// Who created the session.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserContext {
    /// Stable user identifier (from SSO).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Human-readable user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Groups the user belongs to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

/// Model settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LlmSettings {
    /// Model name.
    #[serde(default = "default_model")]
    #[schemars(length(min = 1, max = 256))]
    pub model: String,
    /// Sampling temperature, 0 to 2.
    #[serde(default = "default_temperature")]
    #[schemars(range(min = 0.0, max = 2.0))]
    pub temperature: f64,
    /// Most tokens per response, 1 to 1000000.
    #[serde(default = "default_max_tokens")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub max_tokens: i64,
}

impl Default for LlmSettings {
    fn default() -> Self {
        Self {
            model: default_model(),
            temperature: DEFAULT_TEMPERATURE,
            max_tokens: DEFAULT_MAX_TOKENS,
        }
    }
}

/// MCP server configuration of a session.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct McpServers {
    /// Server name to free-form server configuration (stdio, http or sse servers); at most 64.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "custom_mcp_servers_schema")]
    pub custom: BTreeMap<String, Map<String, Value>>,
    /// Names of platform-default MCP servers to disable for this session; at most 64.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 253)))]
    pub disabled: Vec<String>,
}

/// Workflow repository the runner activates.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActiveWorkflow {
    /// Workflow repository URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub git_url: Option<String>,
    /// Branch to clone.
    #[serde(default = "default_branch")]
    #[schemars(length(min = 1, max = 255))]
    pub branch: String,
    /// Path of the workflow inside the repository (for repositories holding several).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub path: Option<String>,
}

/// Observed state of a session. Written by the operator, except `reconciledRepos`,
/// `reconciledWorkflow`, `sdkSessionId` and `sdkRestartCount` (written by other components and
/// carried for compatibility).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgenticSessionStatus {
    /// Lifecycle phase; missing or empty reads as `Pending`.
    #[serde(default)]
    pub phase: Phase,
    /// The `metadata.generation` the operator last fully reconciled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the current run started (reset on restart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the session reached a terminal phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Last recorded runner activity (drives inactivity auto-stop).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activity_time: Option<Time>,
    /// Why the session stopped, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_reason: Option<StoppedReason>,
    /// Name of the current (or last) runner Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// Human-readable explanation of the phase (for `Failed`, what failed and where).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Detailed conditions; at most one per type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Per-repository clone state (written by the runner side).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconciled_repos: Option<Vec<ReconciledRepo>>,
    /// Active-workflow clone state (written by the runner side).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconciled_workflow: Option<ReconciledWorkflow>,
    /// SDK session identifier captured for resume support.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdk_session_id: Option<String>,
    /// How many times the SDK restarted during this session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdk_restart_count: Option<i64>,
}

/// Lifecycle phase of a session.
///
/// `Pending → Creating → Running → Completed | Failed`, and `Stopping → Stopped` on request.
/// Terminal phases: `Completed`, `Failed`, `Stopped`. An empty or missing phase reads as
/// `Pending`.
#[derive(Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum Phase {
    /// Accepted, nothing created yet.
    #[default]
    Pending,
    /// Runner identity and Job created; waiting for the runner container.
    Creating,
    /// The runner container is running.
    Running,
    /// A stop was requested; the Job and its pods are going away.
    Stopping,
    /// Stopped on request; may be restarted.
    Stopped,
    /// The runner finished successfully.
    Completed,
    /// The run failed (see `status.message` and the `Ready` condition's reason).
    Failed,
}

impl Phase {
    /// Every phase, in lifecycle order.
    pub const ALL: [Phase; 7] = [
        Phase::Pending,
        Phase::Creating,
        Phase::Running,
        Phase::Stopping,
        Phase::Stopped,
        Phase::Completed,
        Phase::Failed,
    ];

    /// Whether nothing more happens without a restart request: `Completed`, `Failed`, `Stopped`.
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Completed | Phase::Failed | Phase::Stopped)
    }

    /// The wire form, e.g. `"Running"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Creating => "Creating",
            Phase::Running => "Running",
            Phase::Stopping => "Stopping",
            Phase::Stopped => "Stopped",
            Phase::Completed => "Completed",
            Phase::Failed => "Failed",
        }
    }

    /// Parses the wire form; the empty string is `Pending`.
    pub fn parse(value: &str) -> Option<Phase> {
        if value.is_empty() {
            return Some(Phase::Pending);
        }
        Phase::ALL.into_iter().find(|p| p.as_str() == value)
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Phase {
    /// Accepts the seven phase names, and `""` / `null` as `Pending`.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Option::<String>::deserialize(deserializer)?.unwrap_or_default();
        const NAMES: &[&str] = &[
            "Pending",
            "Creating",
            "Running",
            "Stopping",
            "Stopped",
            "Completed",
            "Failed",
        ];
        Phase::parse(&value).ok_or_else(|| serde::de::Error::unknown_variant(&value, NAMES))
    }
}

/// Why a session stopped.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StoppedReason {
    /// A user asked (`desired-phase=Stopped` without a stop reason).
    User,
    /// Idle longer than the inactivity timeout.
    Inactivity,
    /// The run hit `spec.timeout`.
    Timeout,
}

impl StoppedReason {
    /// The wire form: `user`, `inactivity` or `timeout` (also the value of the
    /// `ambient-code.io/stop-reason` annotation).
    pub fn as_str(self) -> &'static str {
        match self {
            StoppedReason::User => "user",
            StoppedReason::Inactivity => "inactivity",
            StoppedReason::Timeout => "timeout",
        }
    }
}

/// Clone state of one repository (written by the runner side).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReconciledRepo {
    /// Repository URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Deprecated in the original CRD: use `currentActiveBranch`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Local branches of the clone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branches: Option<Vec<String>>,
    /// Branch currently checked out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_active_branch: Option<String>,
    /// Default branch of the remote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_branch: Option<String>,
    /// Directory name of the clone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Clone state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<RepoCloneStatus>,
    /// When the clone finished (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub cloned_at: Option<String>,
}

/// Clone state of a repository.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum RepoCloneStatus {
    /// Being cloned.
    Cloning,
    /// Cloned.
    Ready,
    /// Clone failed.
    Failed,
}

/// Clone state of the active workflow (written by the runner side).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReconciledWorkflow {
    /// Workflow repository URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_url: Option<String>,
    /// Branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Path within the workflow repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Workflow state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<WorkflowStatus>,
    /// When the workflow was applied (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub applied_at: Option<String>,
}

/// State of the active workflow.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum WorkflowStatus {
    /// Being cloned.
    Cloning,
    /// Active.
    Active,
    /// Failed.
    Failed,
}

impl AgenticSession {
    /// The session's phase; `Pending` when it has no status yet.
    pub fn phase(&self) -> Phase {
        self.status.as_ref().map(|s| s.phase).unwrap_or_default()
    }
}

/// The CEL rule on the whole object limiting `metadata.name` to [`MAX_SESSION_NAME_LEN`]
/// characters, so every name bound by 63 characters fits (see [`crate::names`]).
pub fn session_name_rule() -> Rule {
    Rule::new(format!(
        "size(self.metadata.name) <= {MAX_SESSION_NAME_LEN}"
    ))
    .message(Message::Message(format!(
        "metadata.name must be at most {MAX_SESSION_NAME_LEN} characters: the session's Service \
         session-<name> must be a DNS label of at most 63"
    )))
}

/// The CEL rule rejecting reserved names in `spec.environmentVariables`, generated from
/// [`RESERVED_ENV_NAMES`]. Map membership (`in`) is constant-cost, so the rule's estimated cost
/// stays tiny.
pub fn reserved_env_rule() -> String {
    format!("!{}.exists(n, n in self)", reserved_env_list())
}

/// The CEL rule requiring every `spec.environmentVariables` name to match [`ENV_NAME_PATTERN`].
pub fn env_name_rule() -> String {
    format!("self.all(k, k.matches('{ENV_NAME_PATTERN}'))")
}

fn reserved_env_list() -> String {
    let quoted: Vec<String> = RESERVED_ENV_NAMES
        .iter()
        .map(|n| format!("'{n}'"))
        .collect();
    format!("[{}]", quoted.join(", "))
}

fn environment_variables_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "additionalProperties": { "type": "string", "maxLength": 32768 },
        "maxProperties": MAX_USER_ENV_VARS,
        "x-kubernetes-validations": [
            {
                "rule": env_name_rule(),
                "message": "environmentVariables names must be C identifiers \
                            (letters, digits and underscores, not starting with a digit)",
            },
            {
                "rule": reserved_env_rule(),
                "message": format!(
                    "environmentVariables may not set names the operator sets itself: {}",
                    RESERVED_ENV_NAMES.join(", ")
                ),
            },
        ],
    })
}

fn custom_mcp_servers_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "maxProperties": 64,
        "additionalProperties": {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": true,
        },
    })
}

fn default_branch() -> String {
    DEFAULT_BRANCH.to_owned()
}

fn default_model() -> String {
    DEFAULT_MODEL.to_owned()
}

fn default_temperature() -> f64 {
    DEFAULT_TEMPERATURE
}

fn default_max_tokens() -> i64 {
    DEFAULT_MAX_TOKENS
}

fn default_timeout() -> i64 {
    DEFAULT_TIMEOUT_SECONDS
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::{CustomResourceExt, Resource};
    use serde_json::json;

    fn spec_from(value: Value) -> AgenticSessionSpec {
        serde_json::from_value(value).expect("valid spec")
    }

    #[test]
    fn an_empty_spec_reads_with_all_defaults() {
        let spec = spec_from(json!({}));
        assert_eq!(spec, AgenticSessionSpec::default());
        assert_eq!(spec.llm_settings.model, "claude-sonnet-4-6");
        assert_eq!(spec.llm_settings.temperature, 0.7);
        assert_eq!(spec.llm_settings.max_tokens, 4000);
        assert_eq!(spec.timeout, 300);
        assert_eq!(spec.inactivity_timeout, None);
    }

    #[test]
    fn repo_and_workflow_defaults_apply_when_fields_are_missing() {
        let spec = spec_from(json!({
            "repos": [{"url": "https://github.com/a/b"}],
            "activeWorkflow": {"gitUrl": "https://github.com/a/w"},
        }));
        assert_eq!(spec.repos[0].branch, "main");
        assert!(!spec.repos[0].auto_push);
        assert_eq!(
            spec.active_workflow.map(|w| w.branch).as_deref(),
            Some("main")
        );
    }

    #[test]
    fn a_full_spec_of_the_original_crd_round_trips() {
        let original = json!({
            "initialPrompt": "fix the bug",
            "displayName": "Bug fix",
            "repos": [{"url": "https://github.com/a/b", "branch": "dev", "autoPush": true}],
            "userContext": {"userId": "u1", "displayName": "U One", "groups": ["g1"]},
            "llmSettings": {"model": "m", "temperature": 0.2, "maxTokens": 100},
            "timeout": 600,
            "inactivityTimeout": 0,
            "stopOnRunFinished": true,
            "environmentVariables": {"RUNNER_TYPE": "claude-agent-sdk"},
            "mcpServers": {"custom": {"s": {"type": "http", "url": "http://x"}}, "disabled": ["d"]},
            "activeWorkflow": {"gitUrl": "https://github.com/a/w", "branch": "b", "path": "p"},
        });
        let spec = spec_from(original.clone());
        assert_eq!(serde_json::to_value(&spec).ok(), Some(original));
    }

    #[test]
    fn an_empty_or_missing_status_phase_reads_as_pending() {
        for status in [json!({}), json!({"phase": ""}), json!({"phase": null})] {
            let status: AgenticSessionStatus =
                serde_json::from_value(status).expect("valid status");
            assert_eq!(status.phase, Phase::Pending);
        }
        let session = AgenticSession::new("s", AgenticSessionSpec::default());
        assert_eq!(session.phase(), Phase::Pending);
    }

    #[test]
    fn an_unknown_phase_is_an_error() {
        let result = serde_json::from_value::<AgenticSessionStatus>(json!({"phase": "Bogus"}));
        assert!(result.is_err());
    }

    #[test]
    fn phases_serialize_as_their_names_and_three_are_terminal() {
        for phase in Phase::ALL {
            assert_eq!(
                serde_json::to_value(phase).ok(),
                Some(json!(phase.as_str()))
            );
            assert_eq!(Phase::parse(phase.as_str()), Some(phase));
        }
        let terminal: Vec<Phase> = Phase::ALL.into_iter().filter(|p| p.is_terminal()).collect();
        assert_eq!(terminal, [Phase::Stopped, Phase::Completed, Phase::Failed]);
    }

    #[test]
    fn stopped_reason_serializes_lowercase() {
        assert_eq!(
            serde_json::to_value(StoppedReason::Inactivity).ok(),
            Some(json!("inactivity"))
        );
        assert_eq!(StoppedReason::Timeout.as_str(), "timeout");
    }

    #[test]
    fn status_with_original_fields_round_trips() {
        let status = json!({
            "phase": "Running",
            "observedGeneration": 2,
            "startTime": "2026-01-01T00:00:00Z",
            "stoppedReason": "user",
            "jobName": "s-job",
            "conditions": [{"type": "Ready", "status": "True", "reason": "Running",
                            "lastTransitionTime": "2026-01-01T00:00:01Z"}],
            "reconciledRepos": [{"url": "u", "status": "Ready", "clonedAt": "2026-01-01T00:00:00Z"}],
            "reconciledWorkflow": {"gitUrl": "g", "status": "Active"},
            "sdkSessionId": "abc",
            "sdkRestartCount": 1,
        });
        let parsed: AgenticSessionStatus =
            serde_json::from_value(status.clone()).expect("valid status");
        assert_eq!(serde_json::to_value(&parsed).ok(), Some(status));
    }

    fn openapi_schema() -> Value {
        let crd = AgenticSession::crd();
        let schema = crd.spec.versions[0]
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref());
        serde_json::to_value(schema).expect("schema serializes")
    }

    /// Runs the CRD's CEL rules (client-side, as the API server would) on a session object.
    fn admit(name: &str, spec: Value) -> Result<(), Vec<String>> {
        let object = json!({
            "apiVersion": "vteam.ambient-code/v1alpha1",
            "kind": "AgenticSession",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": spec,
        });
        kube::core::cel::Validator::new()
            .validate(&openapi_schema(), &object, None)
            .map_err(|errors| errors.iter().map(|e| e.to_string()).collect())
    }

    #[test]
    fn every_cel_rule_of_the_schema_compiles() {
        let compiled = kube::core::cel::compile_schema(&openapi_schema());
        assert!(
            !compiled.has_errors(),
            "{:?}",
            compiled.compilation_errors()
        );
    }

    #[test]
    fn the_schema_carries_defaults_minimums_and_cel_rules() {
        let schema = openapi_schema();
        let spec = &schema["properties"]["spec"]["properties"];
        assert_eq!(spec["timeout"]["default"], json!(300));
        assert_eq!(spec["timeout"]["minimum"], json!(1.0));
        assert_eq!(spec["timeout"]["maximum"], json!(604_800.0));
        assert_eq!(spec["inactivityTimeout"]["minimum"], json!(0.0));
        let llm = &spec["llmSettings"]["properties"];
        assert_eq!(llm["model"]["default"], json!("claude-sonnet-4-6"));
        assert_eq!(llm["temperature"]["default"], json!(0.7));
        assert_eq!(llm["maxTokens"]["default"], json!(4000));
        let repo = &spec["repos"]["items"]["properties"];
        assert_eq!(repo["branch"]["default"], json!("main"));
        assert_eq!(repo["autoPush"]["default"], json!(false));
        assert_eq!(
            spec["activeWorkflow"]["properties"]["branch"]["default"],
            json!("main")
        );
        assert_eq!(
            schema["x-kubernetes-validations"][0]["rule"],
            json!("size(self.metadata.name) <= 55")
        );
        let env_rules = &spec["environmentVariables"]["x-kubernetes-validations"];
        assert_eq!(env_rules[0]["rule"], json!(env_name_rule()));
        assert_eq!(env_rules[1]["rule"], json!(reserved_env_rule()));
        assert_eq!(spec["environmentVariables"]["maxProperties"], json!(128));
        let phase = &schema["properties"]["status"]["properties"]["phase"];
        assert_eq!(phase["enum"].as_array().map(Vec::len), Some(7));
    }

    #[test]
    fn the_schema_is_structural() {
        fn walk(value: &Value, path: &str) {
            match value {
                Value::Object(map) => {
                    for key in ["anyOf", "oneOf", "allOf", "not", "$ref"] {
                        assert!(!map.contains_key(key), "{key} at {path}");
                    }
                    if let Some(props) = map.get("properties").and_then(Value::as_object) {
                        for (name, prop) in props {
                            assert!(prop.get("type").is_some(), "no type at {path}.{name}");
                        }
                    }
                    for (key, child) in map {
                        walk(child, &format!("{path}.{key}"));
                    }
                }
                Value::Array(items) => items.iter().for_each(|i| walk(i, path)),
                _ => {}
            }
        }
        walk(&openapi_schema(), "");
    }

    #[test]
    fn a_55_char_name_is_admitted_and_a_56_char_name_is_rejected() {
        assert_eq!(admit(&"a".repeat(55), json!({})), Ok(()));
        let errors = admit(&"a".repeat(56), json!({})).expect_err("rejected");
        assert!(errors[0].contains("at most 55 characters"), "{errors:?}");
    }

    #[test]
    fn reserved_environment_variables_are_rejected_by_name() {
        let errors = admit(
            "s",
            json!({"environmentVariables": {"LLM_MODEL": "x", "OK": "y"}}),
        )
        .expect_err("rejected");
        assert!(
            errors
                .iter()
                .any(|e| e.contains("may not set names the operator sets itself")
                    && e.contains("LLM_MODEL")),
            "{errors:?}"
        );
        assert_eq!(
            admit(
                "s",
                json!({"environmentVariables": {"RUNNER_TYPE": "claude"}})
            ),
            Ok(())
        );
    }

    #[test]
    fn environment_variable_names_must_be_c_identifiers() {
        for bad in ["1X", "MY-VAR", "A B", ""] {
            let errors =
                admit("s", json!({"environmentVariables": {bad: "v"}})).expect_err("rejected");
            assert!(
                errors.iter().any(|e| e.contains("C identifiers")),
                "{bad}: {errors:?}"
            );
        }
    }

    #[test]
    fn resource_names_match_the_keys_module() {
        use crate::keys;
        assert_eq!(AgenticSession::group(&()), keys::GROUP);
        assert_eq!(AgenticSession::version(&()), keys::VERSION);
        assert_eq!(AgenticSession::api_version(&()), keys::API_VERSION);
        assert_eq!(AgenticSession::kind(&()), keys::AGENTIC_SESSION_KIND);
        assert_eq!(AgenticSession::plural(&()), keys::AGENTIC_SESSION_PLURAL);
        assert_eq!(
            AgenticSession::crd_name(),
            "agenticsessions.vteam.ambient-code"
        );
    }
}
