//! Names of the environment variables the operator sets on the runner container (SPEC §2.4).
//!
//! [`RESERVED_ENV_NAMES`] is the single list both sides use: the Job builder sets exactly these
//! (and a session's `spec.environmentVariables` may never override them), and the
//! `AgenticSession` schema rejects them at admission with a CEL rule generated from this list.
//! A Job builder that starts setting a new variable adds it here, and the CRD is regenerated.

/// Name of the session.
pub const AGENTIC_SESSION_NAME: &str = "AGENTIC_SESSION_NAME";
/// Namespace of the session.
pub const AGENTIC_SESSION_NAMESPACE: &str = "AGENTIC_SESSION_NAMESPACE";
/// Session identifier (the session name).
pub const SESSION_ID: &str = "SESSION_ID";
/// Project (namespace) the session belongs to.
pub const PROJECT_NAME: &str = "PROJECT_NAME";
/// Workspace directory, always [`crate::keys::WORKSPACE_MOUNT_PATH`].
pub const WORKSPACE_PATH: &str = "WORKSPACE_PATH";
/// `spec.initialPrompt`.
pub const INITIAL_PROMPT: &str = "INITIAL_PROMPT";
/// `spec.llmSettings.model`.
pub const LLM_MODEL: &str = "LLM_MODEL";
/// `spec.llmSettings.temperature`.
pub const LLM_TEMPERATURE: &str = "LLM_TEMPERATURE";
/// `spec.llmSettings.maxTokens`.
pub const LLM_MAX_TOKENS: &str = "LLM_MAX_TOKENS";
/// `spec.timeout` in seconds.
pub const TIMEOUT: &str = "TIMEOUT";
/// `spec.repos` as JSON.
pub const REPOS_JSON: &str = "REPOS_JSON";
/// `spec.userContext.userId`.
pub const USER_ID: &str = "USER_ID";
/// `spec.userContext.displayName`.
pub const USER_NAME: &str = "USER_NAME";
/// `true` only when an earlier run of this session actually started.
pub const IS_RESUME: &str = "IS_RESUME";
/// The `vteam.ambient-code/parent-session-id` annotation, else the session's own
/// `spec.environmentVariables.PARENT_SESSION_ID` (the backend sets it there for continuations,
/// so it is not reserved).
pub const PARENT_SESSION_ID: &str = "PARENT_SESSION_ID";
/// `spec.mcpServers` as JSON.
pub const CUSTOM_MCP_SERVERS: &str = "CUSTOM_MCP_SERVERS";
/// URL of the backend API (`http://backend-service.<ns>.svc.cluster.local:8080/api`).
pub const BACKEND_API_URL: &str = "BACKEND_API_URL";
/// AG-UI token, from the runner token Secret (secret-backed).
pub const AGUI_TOKEN: &str = "AGUI_TOKEN";
/// `spec.activeWorkflow.gitUrl`.
pub const ACTIVE_WORKFLOW_GIT_URL: &str = "ACTIVE_WORKFLOW_GIT_URL";
/// `spec.activeWorkflow.branch`.
pub const ACTIVE_WORKFLOW_BRANCH: &str = "ACTIVE_WORKFLOW_BRANCH";
/// `spec.activeWorkflow.path`.
pub const ACTIVE_WORKFLOW_PATH: &str = "ACTIVE_WORKFLOW_PATH";
/// `1` in Vertex mode, else `0`.
pub const USE_VERTEX: &str = "USE_VERTEX";
/// The older name of [`USE_VERTEX`], set alike.
pub const CLAUDE_CODE_USE_VERTEX: &str = "CLAUDE_CODE_USE_VERTEX";

/// Every variable the operator sets on the runner; `spec.environmentVariables` may set none of
/// them. Sorted, without duplicates.
pub const RESERVED_ENV_NAMES: &[&str] = &[
    ACTIVE_WORKFLOW_BRANCH,
    ACTIVE_WORKFLOW_GIT_URL,
    ACTIVE_WORKFLOW_PATH,
    AGENTIC_SESSION_NAME,
    AGENTIC_SESSION_NAMESPACE,
    AGUI_TOKEN,
    BACKEND_API_URL,
    CLAUDE_CODE_USE_VERTEX,
    CUSTOM_MCP_SERVERS,
    INITIAL_PROMPT,
    IS_RESUME,
    LLM_MAX_TOKENS,
    LLM_MODEL,
    LLM_TEMPERATURE,
    PROJECT_NAME,
    REPOS_JSON,
    SESSION_ID,
    TIMEOUT,
    USER_ID,
    USER_NAME,
    USE_VERTEX,
    WORKSPACE_PATH,
];

/// Pattern every user-supplied variable name must match (a C identifier). The same pattern is
/// in the CRD's CEL rule and in [`is_valid_env_name`].
pub const ENV_NAME_PATTERN: &str = "^[A-Za-z_][A-Za-z0-9_]*$";

/// Most variables `spec.environmentVariables` may hold (bounds the CEL rules' cost).
pub const MAX_USER_ENV_VARS: usize = 128;

/// Whether `name` is one the operator sets itself.
pub fn is_reserved_env_name(name: &str) -> bool {
    RESERVED_ENV_NAMES.binary_search(&name).is_ok()
}

/// Whether `name` matches [`ENV_NAME_PATTERN`].
pub fn is_valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {
            chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_names_are_sorted_and_unique() {
        assert!(RESERVED_ENV_NAMES.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn reserved_names_include_every_runner_variable_of_the_spec() {
        for name in [
            "AGENTIC_SESSION_NAME",
            "AGENTIC_SESSION_NAMESPACE",
            "SESSION_ID",
            "PROJECT_NAME",
            "WORKSPACE_PATH",
            "INITIAL_PROMPT",
            "LLM_MODEL",
            "LLM_TEMPERATURE",
            "LLM_MAX_TOKENS",
            "TIMEOUT",
            "REPOS_JSON",
            "USER_ID",
            "USER_NAME",
            "IS_RESUME",
            "CUSTOM_MCP_SERVERS",
            "BACKEND_API_URL",
            "AGUI_TOKEN",
            "ACTIVE_WORKFLOW_GIT_URL",
            "ACTIVE_WORKFLOW_BRANCH",
            "ACTIVE_WORKFLOW_PATH",
            "USE_VERTEX",
            "CLAUDE_CODE_USE_VERTEX",
        ] {
            assert!(is_reserved_env_name(name), "{name}");
        }
        assert!(!is_reserved_env_name("MY_VAR"));
        assert!(
            !is_reserved_env_name("PARENT_SESSION_ID"),
            "the backend sets it for continuations"
        );
    }

    #[test]
    fn reserved_names_are_valid_env_names() {
        assert!(RESERVED_ENV_NAMES.iter().all(|n| is_valid_env_name(n)));
    }

    #[test]
    fn env_names_must_be_c_identifiers() {
        for ok in ["A", "_x", "MY_VAR_2", "lower"] {
            assert!(is_valid_env_name(ok), "{ok}");
        }
        for bad in ["", "2X", "MY-VAR", "A B", "A=B", "É"] {
            assert!(!is_valid_env_name(bad), "{bad}");
        }
    }
}
