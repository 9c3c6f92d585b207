//! The runner container's environment (SPEC §2.4).
//!
//! Merge rules: the operator's reserved variables (`agentic_crds::RESERVED_ENV_NAMES`) always win,
//! and `AGUI_TOKEN` always comes from the token Secret; `spec.environmentVariables` may add
//! variables and override the operator's plain, non-reserved defaults. Admission already rejects
//! reserved or malformed names; they are dropped here too, so a session written before a rule
//! existed cannot smuggle one in. The result is sorted by name: the same session always yields
//! the same list.

use std::collections::BTreeMap;

use agentic_crds::env as names;
use agentic_crds::{AgenticSession, keys};
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, SecretKeySelector};
use kube::ResourceExt;

/// What the environment is computed from.
pub struct RunnerEnvInputs<'a> {
    /// The session being run.
    pub session: &'a AgenticSession,
    /// `BACKEND_API_URL`.
    pub backend_api_url: &'a str,
    /// Whether an earlier run of this session actually started (`IS_RESUME`).
    pub is_resume: bool,
}

/// Plain defaults the user may override through `spec.environmentVariables`.
const STOP_ON_RUN_FINISHED: &str = "STOP_ON_RUN_FINISHED";

/// The sorted environment of the runner container.
pub fn runner_env(inputs: &RunnerEnvInputs<'_>) -> Vec<EnvVar> {
    let session = inputs.session;
    let spec = &session.spec;
    let name = session.name_any();
    let namespace = session.namespace().unwrap_or_default();

    let mut plain: BTreeMap<String, String> = BTreeMap::new();
    plain.insert(
        STOP_ON_RUN_FINISHED.into(),
        spec.stop_on_run_finished.unwrap_or(false).to_string(),
    );
    for (key, value) in &spec.environment_variables {
        if names::is_valid_env_name(key) && !names::is_reserved_env_name(key) {
            plain.insert(key.clone(), value.clone());
        }
    }

    let user = spec.user_context.clone().unwrap_or_default();
    let json = |value: serde_json::Result<String>| value.unwrap_or_else(|_| "null".into());
    let reserved: [(&str, String); 20] = [
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
        (names::REPOS_JSON, json(serde_json::to_string(&spec.repos))),
        (names::USER_ID, user.user_id.unwrap_or_default()),
        (names::USER_NAME, user.display_name.unwrap_or_default()),
        (names::IS_RESUME, inputs.is_resume.to_string()),
        (
            names::PARENT_SESSION_ID,
            session
                .annotations()
                .get(keys::PARENT_SESSION_ID_ANNOTATION)
                .cloned()
                .unwrap_or_default(),
        ),
        (
            names::CUSTOM_MCP_SERVERS,
            json(serde_json::to_string(
                &spec.mcp_servers.clone().unwrap_or_default(),
            )),
        ),
        (names::BACKEND_API_URL, inputs.backend_api_url.to_string()),
        (
            names::ACTIVE_WORKFLOW_GIT_URL,
            spec.active_workflow
                .as_ref()
                .and_then(|w| w.git_url.clone())
                .unwrap_or_default(),
        ),
        (
            names::ACTIVE_WORKFLOW_BRANCH,
            spec.active_workflow
                .as_ref()
                .map(|w| w.branch.clone())
                .unwrap_or_default(),
        ),
        (
            names::ACTIVE_WORKFLOW_PATH,
            spec.active_workflow
                .as_ref()
                .and_then(|w| w.path.clone())
                .unwrap_or_default(),
        ),
    ];
    for (key, value) in reserved {
        plain.insert(key.to_string(), value);
    }

    let mut env: Vec<EnvVar> = plain
        .into_iter()
        .map(|(name, value)| EnvVar {
            name,
            value: Some(value),
            value_from: None,
        })
        .collect();
    env.push(EnvVar {
        name: names::AGUI_TOKEN.into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: agentic_crds::names::token_secret_name(&name),
                key: keys::TOKEN_SECRET_AGUI_TOKEN_KEY.into(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
    });
    env.sort_by(|a, b| a.name.cmp(&b.name));
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::fixtures::session;

    fn env_of(session: &AgenticSession, is_resume: bool) -> Vec<EnvVar> {
        runner_env(&RunnerEnvInputs {
            session,
            backend_api_url: "http://backend-service.ops.svc.cluster.local:8080/api",
            is_resume,
        })
    }

    fn value<'a>(env: &'a [EnvVar], name: &str) -> Option<&'a str> {
        env.iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value.as_deref())
    }

    #[test]
    fn every_reserved_variable_is_set() {
        let env = env_of(&session("demo"), false);
        for name in agentic_crds::RESERVED_ENV_NAMES.iter().copied() {
            assert!(env.iter().any(|e| e.name == name), "{name} missing");
        }
        assert_eq!(value(&env, "WORKSPACE_PATH"), Some("/workspace"));
        assert_eq!(value(&env, "PROJECT_NAME"), Some("team"));
        assert_eq!(value(&env, "LLM_MODEL"), Some("claude-sonnet-4-6"));
        assert_eq!(value(&env, "TIMEOUT"), Some("300"));
        assert_eq!(value(&env, "IS_RESUME"), Some("false"));
    }

    #[test]
    fn agui_token_comes_from_the_secret_and_cannot_be_overridden() {
        let mut s = session("demo");
        s.spec
            .environment_variables
            .insert("AGUI_TOKEN".into(), "stolen".into());
        let env = env_of(&s, false);
        let agui: Vec<_> = env.iter().filter(|e| e.name == "AGUI_TOKEN").collect();
        assert_eq!(agui.len(), 1);
        assert!(agui[0].value.is_none());
        let secret = agui[0]
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        assert_eq!(secret.name, "ambient-runner-token-demo");
        assert_eq!(secret.key, "agui-token");
    }

    #[test]
    fn user_variables_add_and_override_plain_defaults_but_never_reserved_ones() {
        let mut s = session("demo");
        let vars = &mut s.spec.environment_variables;
        vars.insert("EXTRA".into(), "1".into());
        vars.insert("STOP_ON_RUN_FINISHED".into(), "true".into());
        vars.insert("LLM_MODEL".into(), "other".into());
        vars.insert("bad-name".into(), "x".into());
        let env = env_of(&s, false);
        assert_eq!(value(&env, "EXTRA"), Some("1"));
        assert_eq!(value(&env, "STOP_ON_RUN_FINISHED"), Some("true"));
        assert_eq!(value(&env, "LLM_MODEL"), Some("claude-sonnet-4-6"));
        assert!(!env.iter().any(|e| e.name == "bad-name"));
    }

    #[test]
    fn environment_is_sorted_and_unique() {
        let mut s = session("demo");
        s.spec
            .environment_variables
            .insert("AAA_FIRST".into(), "x".into());
        let env = env_of(&s, true);
        let names: Vec<_> = env.iter().map(|e| e.name.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(names, sorted);
        assert_eq!(value(&env, "IS_RESUME"), Some("true"));
    }

    #[test]
    fn parent_session_comes_from_its_annotation() {
        let mut s = session("demo");
        s.metadata.annotations = Some(
            [(
                "vteam.ambient-code/parent-session-id".to_string(),
                "parent-1".to_string(),
            )]
            .into(),
        );
        assert_eq!(
            value(&env_of(&s, false), "PARENT_SESSION_ID"),
            Some("parent-1")
        );
    }
}
