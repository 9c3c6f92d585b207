//! Checks on an `AgenticSession` spec that the CRD schema cannot express, plus the schema's own
//! bounds again (objects stored under the original CRD, which had none, are still read).
//!
//! The operator runs [`validate`] before creating anything; an error puts the session in
//! `Failed` with reason `InvalidSpec` and the error's message, which names the field.

use crate::env::{is_reserved_env_name, is_valid_env_name};
use crate::session::{
    AgenticSessionSpec, MAX_INACTIVITY_TIMEOUT_SECONDS, MAX_MAX_TOKENS, MAX_REPOS, MAX_TEMPERATURE,
    MAX_TIMEOUT_SECONDS,
};

/// Why a spec is invalid. Every message starts with the JSON path of the offending field,
/// e.g. `spec.repos[1].url: ...`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvalidSpec {
    /// A repository URL that git could not clone.
    #[error(
        "{field}: {url:?} is not a git URL (expected https://, http://, ssh://, git:// or user@host:path)"
    )]
    NotAGitUrl {
        /// Path of the field.
        field: String,
        /// The value.
        url: String,
    },
    /// A branch name git would refuse.
    #[error("{field}: {branch:?} is not a valid branch name")]
    InvalidBranch {
        /// Path of the field.
        field: String,
        /// The value.
        branch: String,
    },
    /// An environment variable name that is not a C identifier.
    #[error(
        "{field}: {name:?} is not a valid environment variable name (use letters, digits and underscores, not starting with a digit)"
    )]
    InvalidEnvName {
        /// Path of the map.
        field: String,
        /// The name.
        name: String,
    },
    /// An environment variable the operator sets itself.
    #[error("{field}: {name:?} is reserved: the operator sets it")]
    ReservedEnvName {
        /// Path of the map.
        field: String,
        /// The name.
        name: String,
    },
    /// A number or string outside its allowed range.
    #[error("{field}: {reason}")]
    OutOfRange {
        /// Path of the field.
        field: String,
        /// What is allowed.
        reason: String,
    },
}

impl InvalidSpec {
    /// JSON path of the offending field, e.g. `spec.repos[1].url`.
    pub fn field(&self) -> &str {
        match self {
            InvalidSpec::NotAGitUrl { field, .. }
            | InvalidSpec::InvalidBranch { field, .. }
            | InvalidSpec::InvalidEnvName { field, .. }
            | InvalidSpec::ReservedEnvName { field, .. }
            | InvalidSpec::OutOfRange { field, .. } => field,
        }
    }
}

/// Checks `spec`; returns the first problem found.
pub fn validate(spec: &AgenticSessionSpec) -> Result<(), InvalidSpec> {
    if spec.repos.len() > MAX_REPOS {
        return Err(out_of_range(
            "spec.repos",
            format!("at most {MAX_REPOS} repositories"),
        ));
    }
    // A URL listed twice is not an error: the platform's backend appends a repository without
    // looking for it first, and the last entry of a URL wins (`AgenticSessionSpec::unique_repos`).
    for (i, repo) in spec.repos.iter().enumerate() {
        check_git_url(&format!("spec.repos[{i}].url"), &repo.url)?;
        check_branch(&format!("spec.repos[{i}].branch"), &repo.branch)?;
    }

    let llm = &spec.llm_settings;
    if llm.model.trim().is_empty() {
        return Err(out_of_range("spec.llmSettings.model", "must not be empty"));
    }
    if !(0.0..=MAX_TEMPERATURE).contains(&llm.temperature) {
        return Err(out_of_range(
            "spec.llmSettings.temperature",
            format!("must be between 0 and {MAX_TEMPERATURE}"),
        ));
    }
    if !(1..=MAX_MAX_TOKENS).contains(&llm.max_tokens) {
        return Err(out_of_range(
            "spec.llmSettings.maxTokens",
            format!("must be between 1 and {MAX_MAX_TOKENS}"),
        ));
    }
    if let Some(t) = spec.inactivity_timeout
        && !(0..=MAX_INACTIVITY_TIMEOUT_SECONDS).contains(&t)
    {
        return Err(out_of_range(
            "spec.inactivityTimeout",
            format!("must be between 0 and {MAX_INACTIVITY_TIMEOUT_SECONDS} seconds"),
        ));
    }

    for name in spec.environment_variables.keys() {
        let field = "spec.environmentVariables".to_owned();
        if !is_valid_env_name(name) {
            return Err(InvalidSpec::InvalidEnvName {
                field,
                name: name.clone(),
            });
        }
        if is_reserved_env_name(name) {
            return Err(InvalidSpec::ReservedEnvName {
                field,
                name: name.clone(),
            });
        }
    }

    if let Some(mcp) = &spec.mcp_servers
        && mcp.custom.keys().any(|k| k.trim().is_empty())
    {
        return Err(out_of_range(
            "spec.mcpServers.custom",
            "server names must not be empty",
        ));
    }

    if let Some(workflow) = &spec.active_workflow {
        if let Some(url) = &workflow.git_url {
            check_git_url("spec.activeWorkflow.gitUrl", url)?;
        }
        check_branch("spec.activeWorkflow.branch", &workflow.branch)?;
        if let Some(path) = &workflow.path
            && (path.starts_with('/') || path.split('/').any(|part| part == ".."))
        {
            return Err(out_of_range(
                "spec.activeWorkflow.path",
                format!("{path:?} must be relative to the repository and must not contain '..'"),
            ));
        }
    }
    Ok(())
}

/// Checks `spec.timeout` where it bounds the run (`--enforce-session-timeout`). Otherwise it
/// is advisory (the runner's `TIMEOUT`) and any value the installed CRD admits is taken, as the
/// original did.
pub fn validate_enforced_timeout(spec: &AgenticSessionSpec) -> Result<(), InvalidSpec> {
    if (1..=MAX_TIMEOUT_SECONDS).contains(&spec.timeout) {
        Ok(())
    } else {
        Err(out_of_range(
            "spec.timeout",
            format!("must be between 1 and {MAX_TIMEOUT_SECONDS} seconds"),
        ))
    }
}

fn out_of_range(field: &str, reason: impl Into<String>) -> InvalidSpec {
    InvalidSpec::OutOfRange {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

/// Whether `url` looks like something git can clone: `scheme://host/...` with an http(s), ssh,
/// git or git+ssh scheme, or scp-like `user@host:path`. No whitespace or control characters.
pub fn is_git_url(url: &str) -> bool {
    if url.is_empty() || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return false;
    }
    if let Some((scheme, rest)) = url.split_once("://") {
        let scheme_ok = matches!(
            scheme.to_ascii_lowercase().as_str(),
            "https" | "http" | "ssh" | "git" | "git+ssh"
        );
        let authority = rest.split('/').next().unwrap_or_default();
        let host = authority.rsplit('@').next().unwrap_or_default();
        return scheme_ok && !host.is_empty() && !host.starts_with(':');
    }
    // scp-like syntax: user@host:path (the user part is required to tell it from a local path).
    match url.split_once(':') {
        Some((user_host, path)) => match user_host.split_once('@') {
            Some((user, host)) => {
                !user.is_empty() && !host.is_empty() && !host.contains('/') && !path.is_empty()
            }
            None => false,
        },
        None => false,
    }
}

fn check_git_url(field: &str, url: &str) -> Result<(), InvalidSpec> {
    if is_git_url(url) {
        Ok(())
    } else {
        Err(InvalidSpec::NotAGitUrl {
            field: field.to_owned(),
            url: url.to_owned(),
        })
    }
}

/// Whether `branch` is a name `git check-ref-format --branch` accepts (the common rules: no
/// spaces, control characters, `~^:?*[\`, `..`, `@{`, leading `-` or `/`, trailing `/`, `.` or
/// `.lock`, empty components).
pub fn is_valid_branch(branch: &str) -> bool {
    !branch.is_empty()
        && branch != "@"
        && !branch.starts_with('-')
        && !branch.starts_with('/')
        && !branch.ends_with('/')
        && !branch.ends_with('.')
        && !branch.ends_with(".lock")
        && !branch.contains("..")
        && !branch.contains("@{")
        && !branch.contains("//")
        && !branch.split('/').any(|part| part.starts_with('.'))
        && !branch.chars().any(|c| {
            c.is_whitespace()
                || c.is_control()
                || matches!(c, '~' | '^' | ':' | '?' | '*' | '[' | '\\')
        })
}

fn check_branch(field: &str, branch: &str) -> Result<(), InvalidSpec> {
    if is_valid_branch(branch) {
        Ok(())
    } else {
        Err(InvalidSpec::InvalidBranch {
            field: field.to_owned(),
            branch: branch.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{ActiveWorkflow, RepoSpec};

    fn repo(url: &str) -> RepoSpec {
        RepoSpec {
            url: url.to_owned(),
            branch: "main".to_owned(),
            auto_push: false,
        }
    }

    fn message(spec: &AgenticSessionSpec) -> String {
        validate(spec)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn the_default_spec_is_valid() {
        assert_eq!(validate(&AgenticSessionSpec::default()), Ok(()));
    }

    #[test]
    fn common_git_url_forms_are_accepted() {
        for url in [
            "https://github.com/org/repo",
            "https://github.com/org/repo.git",
            "http://gitlab.local:8080/a/b",
            "ssh://git@github.com/org/repo.git",
            "git://example.com/repo",
            "git@github.com:org/repo.git",
        ] {
            assert!(is_git_url(url), "{url}");
        }
        for url in [
            "",
            "github.com/org/repo",
            "ftp://x/y",
            "https://",
            "/tmp/repo",
            "a b",
        ] {
            assert!(!is_git_url(url), "{url}");
        }
    }

    #[test]
    fn a_bad_repo_url_is_reported_with_its_index() {
        let spec = AgenticSessionSpec {
            repos: vec![repo("https://github.com/a/b"), repo("not a url")],
            ..Default::default()
        };
        assert!(message(&spec).starts_with("spec.repos[1].url: \"not a url\""));
        assert_eq!(
            validate(&spec)
                .err()
                .map(|e| e.field().to_owned())
                .as_deref(),
            Some("spec.repos[1].url")
        );
    }

    #[test]
    fn a_repository_listed_twice_is_valid() {
        let spec = AgenticSessionSpec {
            repos: vec![
                repo("https://github.com/a/b.git"),
                repo("https://github.com/a/b.git"),
            ],
            ..Default::default()
        };
        assert_eq!(validate(&spec), Ok(()));
    }

    #[test]
    fn a_bad_branch_is_reported_with_its_field() {
        let mut bad = repo("https://github.com/a/b");
        bad.branch = "feature..x".to_owned();
        let spec = AgenticSessionSpec {
            repos: vec![bad],
            ..Default::default()
        };
        assert!(message(&spec).starts_with("spec.repos[0].branch:"));
        for ok in ["main", "feature/x", "release-1.2", "user/fix_3"] {
            assert!(is_valid_branch(ok), "{ok}");
        }
        for bad in [
            "", "-x", "a b", "x.lock", "a/", "a//b", "a~1", ".hidden", "a/.b",
        ] {
            assert!(!is_valid_branch(bad), "{bad}");
        }
    }

    #[test]
    fn reserved_and_malformed_env_names_are_rejected() {
        let mut spec = AgenticSessionSpec::default();
        spec.environment_variables
            .insert("LLM_MODEL".into(), "x".into());
        assert!(message(&spec).starts_with("spec.environmentVariables: \"LLM_MODEL\" is reserved"));
        spec.environment_variables.clear();
        spec.environment_variables
            .insert("MY-VAR".into(), "x".into());
        assert!(message(&spec).starts_with("spec.environmentVariables: \"MY-VAR\""));
        spec.environment_variables.clear();
        spec.environment_variables
            .insert("RUNNER_TYPE".into(), "x".into());
        assert_eq!(validate(&spec), Ok(()));
    }

    #[test]
    fn out_of_range_numbers_name_their_field() {
        let mut spec = AgenticSessionSpec {
            timeout: 0,
            ..Default::default()
        };
        assert_eq!(validate(&spec), Ok(()), "advisory unless enforced");
        assert!(
            validate_enforced_timeout(&spec)
                .unwrap_err()
                .to_string()
                .starts_with("spec.timeout:")
        );
        spec.timeout = 300;
        assert_eq!(validate_enforced_timeout(&spec), Ok(()));
        spec.llm_settings.temperature = f64::NAN;
        assert!(message(&spec).starts_with("spec.llmSettings.temperature:"));
        spec.llm_settings.temperature = 1.0;
        spec.llm_settings.max_tokens = 0;
        assert!(message(&spec).starts_with("spec.llmSettings.maxTokens:"));
        spec.llm_settings.max_tokens = 10;
        spec.inactivity_timeout = Some(-1);
        assert!(message(&spec).starts_with("spec.inactivityTimeout:"));
    }

    #[test]
    fn workflow_url_and_path_are_checked() {
        let mut spec = AgenticSessionSpec {
            active_workflow: Some(ActiveWorkflow {
                git_url: Some("nope".into()),
                branch: "main".into(),
                path: None,
            }),
            ..Default::default()
        };
        assert!(message(&spec).starts_with("spec.activeWorkflow.gitUrl:"));
        spec.active_workflow = Some(ActiveWorkflow {
            git_url: Some("https://github.com/a/w".into()),
            branch: "main".into(),
            path: Some("../etc".into()),
        });
        assert!(message(&spec).starts_with("spec.activeWorkflow.path:"));
    }
}
