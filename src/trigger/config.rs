//! The configuration of `session-trigger`: read once from the environment (the platform's
//! backend sets it on the CronJob), validated, and never read again.
//!
//! | variable | |
//! |---|---|
//! | `SESSION_TEMPLATE` | required: a JSON object, the backend's `CreateAgenticSessionRequest` |
//! | `PROJECT_NAMESPACE` | required: the project (a namespace name) |
//! | `SCHEDULED_SESSION_NAME` | required: the scheduled session (the CronJob's name; a label value) |
//! | `REUSE_LAST_SESSION` | `true` (any case, surrounding blanks ignored) turns reuse on; anything else is off |
//! | `BACKEND_NAMESPACE` | the backend's namespace, default `ambient-code` |
//! | `BACKEND_API_URL` | the backend's API base URL, default `http://backend-service.<BACKEND_NAMESPACE>.svc.cluster.local:8080/api` |
//! | `KUBECONFIG` | credentials for people and tests; in-cluster ServiceAccount credentials when unset |

use std::ffi::OsString;

use hyper::Uri;
use serde_json::{Map, Value};

/// The sub-command's name: `agentic-operator session-trigger`.
pub const SUBCOMMAND: &str = "session-trigger";

/// Backend namespace when `BACKEND_NAMESPACE` is unset (the backend's CronJob never sets it).
pub const DEFAULT_BACKEND_NAMESPACE: &str = "ambient-code";

const SESSION_TEMPLATE: &str = "SESSION_TEMPLATE";
const PROJECT_NAMESPACE: &str = "PROJECT_NAMESPACE";
const SCHEDULED_SESSION_NAME: &str = "SCHEDULED_SESSION_NAME";
const REUSE_LAST_SESSION: &str = "REUSE_LAST_SESSION";
const BACKEND_NAMESPACE: &str = "BACKEND_NAMESPACE";
const BACKEND_API_URL: &str = "BACKEND_API_URL";
const KUBECONFIG: &str = "KUBECONFIG";

/// Validated `session-trigger` configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct TriggerConfig {
    /// `SESSION_TEMPLATE`: becomes the spec of a new session (keys the CRD does not know are
    /// dropped by the API server, as for the original).
    pub template: Map<String, Value>,
    /// `PROJECT_NAMESPACE`.
    pub namespace: String,
    /// `SCHEDULED_SESSION_NAME`: the value of the sessions' `scheduled-session-name` label.
    pub scheduled_session_name: String,
    /// `REUSE_LAST_SESSION`.
    pub reuse_last_session: bool,
    /// The backend's API base URL (`BACKEND_API_URL`, or derived from `BACKEND_NAMESPACE`).
    pub backend_url: Uri,
    /// `KUBECONFIG` (one path or a list); `None` means in-cluster credentials.
    pub kubeconfig: Option<OsString>,
}

/// Why the environment was refused; always names the variable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TriggerConfigError {
    /// A required variable is unset or empty.
    #[error("{variable} must be set")]
    Missing {
        /// The variable.
        variable: &'static str,
    },
    /// A variable's value is unusable.
    #[error("{variable}: {message}")]
    Malformed {
        /// The variable.
        variable: &'static str,
        /// What is wrong with it.
        message: String,
    },
}

impl TriggerConfig {
    /// Reads and validates the process environment.
    pub fn from_env() -> Result<Self, TriggerConfigError> {
        Self::from_lookup(|name| std::env::var_os(name))
    }

    /// Reads and validates the variables `lookup` returns (tests pass a map).
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<OsString>,
    ) -> Result<Self, TriggerConfigError> {
        let text = |variable: &'static str| -> Result<Option<String>, TriggerConfigError> {
            match lookup(variable) {
                None => Ok(None),
                Some(value) if value.is_empty() => Ok(None),
                Some(value) => value
                    .into_string()
                    .map(Some)
                    .map_err(|_| malformed(variable, "is not valid UTF-8".into())),
            }
        };
        let required = |variable: &'static str| {
            text(variable)?.ok_or(TriggerConfigError::Missing { variable })
        };

        let template = parse_template(&required(SESSION_TEMPLATE)?)?;
        let namespace = required(PROJECT_NAMESPACE)?;
        if !is_dns_label(&namespace) {
            return Err(malformed(
                PROJECT_NAMESPACE,
                format!("'{namespace}' is not a namespace name"),
            ));
        }
        let scheduled_session_name = required(SCHEDULED_SESSION_NAME)?;
        if !is_label_value(&scheduled_session_name) {
            return Err(malformed(
                SCHEDULED_SESSION_NAME,
                format!(
                    "'{scheduled_session_name}' cannot be a label value (at most 63 letters, \
                     digits, '-', '_' or '.', starting and ending with a letter or digit)"
                ),
            ));
        }
        let reuse_last_session =
            text(REUSE_LAST_SESSION)?.is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        let backend_namespace =
            text(BACKEND_NAMESPACE)?.unwrap_or_else(|| DEFAULT_BACKEND_NAMESPACE.into());
        if !is_dns_label(&backend_namespace) {
            return Err(malformed(
                BACKEND_NAMESPACE,
                format!("'{backend_namespace}' is not a namespace name"),
            ));
        }
        let backend_url = match text(BACKEND_API_URL)? {
            Some(url) => parse_backend_url(&url)?,
            None => parse_backend_url(&format!(
                "http://backend-service.{backend_namespace}.svc.cluster.local:8080/api"
            ))?,
        };
        Ok(TriggerConfig {
            template,
            namespace,
            scheduled_session_name,
            reuse_last_session,
            backend_url,
            kubeconfig: lookup(KUBECONFIG).filter(|v| !v.is_empty()),
        })
    }

    /// The template's `initialPrompt`, unless empty.
    pub fn prompt(&self) -> Option<&str> {
        self.template_string("initialPrompt")
    }

    /// The template's `displayName`, unless empty.
    pub fn display_name(&self) -> Option<&str> {
        self.template_string("displayName")
    }

    fn template_string(&self, key: &str) -> Option<&str> {
        self.template
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    }

    /// Where a follow-up prompt for a running session is posted:
    /// `<backend>/projects/<namespace>/agentic-sessions/<session>/agui/run`.
    pub fn run_url(&self, session: &str) -> String {
        format!(
            "{}/projects/{}/agentic-sessions/{session}/agui/run",
            self.backend_url.to_string().trim_end_matches('/'),
            self.namespace
        )
    }
}

fn malformed(variable: &'static str, message: String) -> TriggerConfigError {
    TriggerConfigError::Malformed { variable, message }
}

/// A JSON object whose `displayName` and `initialPrompt`, the keys the trigger reads, are
/// strings when present. Other keys are passed on untouched.
fn parse_template(text: &str) -> Result<Map<String, Value>, TriggerConfigError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| malformed(SESSION_TEMPLATE, format!("is not JSON: {e}")))?;
    let Value::Object(template) = value else {
        return Err(malformed(
            SESSION_TEMPLATE,
            "must be a JSON object (a session spec)".into(),
        ));
    };
    for key in ["displayName", "initialPrompt"] {
        if template
            .get(key)
            .is_some_and(|v| !(v.is_string() || v.is_null()))
        {
            return Err(malformed(
                SESSION_TEMPLATE,
                format!("{key} must be a string"),
            ));
        }
    }
    Ok(template)
}

/// An `http://host[:port][/path]` base URL. Plain HTTP only: the backend's in-cluster Service
/// speaks nothing else, and the trigger carries no TLS client of its own.
fn parse_backend_url(text: &str) -> Result<Uri, TriggerConfigError> {
    let uri: Uri = text
        .parse()
        .map_err(|e| malformed(BACKEND_API_URL, format!("'{text}' is not a URL: {e}")))?;
    if uri.scheme_str() != Some("http") {
        return Err(malformed(
            BACKEND_API_URL,
            format!("'{text}' must be an http:// URL"),
        ));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(malformed(BACKEND_API_URL, format!("'{text}' has no host")));
    }
    if uri.query().is_some() {
        return Err(malformed(
            BACKEND_API_URL,
            format!("'{text}' must not have a query"),
        ));
    }
    Ok(uri)
}

/// A DNS-1123 label: what a namespace name must be.
fn is_dns_label(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-')
}

/// A label value (and so safe in a label selector).
fn is_label_value(value: &str) -> bool {
    let edge = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_alphanumeric());
    value.len() <= 63
        && edge(value.bytes().next())
        && edge(value.bytes().last())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn parse(vars: &[(&str, &str)]) -> Result<TriggerConfig, TriggerConfigError> {
        let vars: BTreeMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        TriggerConfig::from_lookup(|name| vars.get(name).cloned())
    }

    const REQUIRED: [(&str, &str); 3] = [
        ("SESSION_TEMPLATE", r#"{"initialPrompt": "hi"}"#),
        ("PROJECT_NAMESPACE", "team-a"),
        ("SCHEDULED_SESSION_NAME", "schedule-1f2e"),
    ];

    fn with(overrides: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        let mut vars: Vec<_> = REQUIRED
            .iter()
            .filter(|(k, _)| !overrides.iter().any(|(o, _)| o == k))
            .copied()
            .collect();
        vars.extend(overrides.iter().copied());
        vars
    }

    #[test]
    fn the_three_required_variables_suffice_and_the_rest_default() {
        let config = parse(&REQUIRED).expect("valid");
        assert_eq!(config.namespace, "team-a");
        assert_eq!(config.scheduled_session_name, "schedule-1f2e");
        assert_eq!(config.prompt(), Some("hi"));
        assert_eq!(config.display_name(), None);
        assert!(!config.reuse_last_session);
        assert_eq!(config.kubeconfig, None);
        assert_eq!(
            config.run_url("s-1"),
            "http://backend-service.ambient-code.svc.cluster.local:8080/api/projects/team-a/\
             agentic-sessions/s-1/agui/run"
        );
    }

    #[test]
    fn each_missing_or_empty_required_variable_is_named() {
        for variable in [
            "SESSION_TEMPLATE",
            "PROJECT_NAMESPACE",
            "SCHEDULED_SESSION_NAME",
        ] {
            let mut unset = with(&[]);
            unset.retain(|(k, _)| *k != variable);
            for vars in [with(&[(variable, "")]), unset] {
                assert_eq!(
                    parse(&vars),
                    Err(TriggerConfigError::Missing { variable }),
                    "{vars:?}"
                );
            }
        }
    }

    #[test]
    fn malformed_values_are_refused_naming_the_variable() {
        for (overrides, variable) in [
            (&[("SESSION_TEMPLATE", "{not json")][..], "SESSION_TEMPLATE"),
            (&[("SESSION_TEMPLATE", "[1, 2]")][..], "SESSION_TEMPLATE"),
            (
                &[("SESSION_TEMPLATE", r#"{"displayName": 7}"#)][..],
                "SESSION_TEMPLATE",
            ),
            (
                &[("SESSION_TEMPLATE", r#"{"initialPrompt": ["a"]}"#)][..],
                "SESSION_TEMPLATE",
            ),
            (&[("PROJECT_NAMESPACE", "Team_A")][..], "PROJECT_NAMESPACE"),
            (
                &[("SCHEDULED_SESSION_NAME", "has space")][..],
                "SCHEDULED_SESSION_NAME",
            ),
            (
                &[("SCHEDULED_SESSION_NAME", "-edge")][..],
                "SCHEDULED_SESSION_NAME",
            ),
            (&[("BACKEND_NAMESPACE", "not/ns")][..], "BACKEND_NAMESPACE"),
            (
                &[("BACKEND_API_URL", "https://backend/api")][..],
                "BACKEND_API_URL",
            ),
            (&[("BACKEND_API_URL", "not a url")][..], "BACKEND_API_URL"),
            (
                &[("BACKEND_API_URL", "http://backend/api?x=1")][..],
                "BACKEND_API_URL",
            ),
        ] {
            match parse(&with(overrides)) {
                Err(TriggerConfigError::Malformed {
                    variable: named,
                    message,
                }) => {
                    assert_eq!(named, variable, "{overrides:?}: {message}")
                }
                other => panic!("{overrides:?} must be refused, got {other:?}"),
            }
        }
        let message = parse(&with(&[("PROJECT_NAMESPACE", "Team_A")]))
            .unwrap_err()
            .to_string();
        assert!(message.starts_with("PROJECT_NAMESPACE: "), "{message}");
    }

    #[test]
    fn reuse_is_on_only_for_true_in_any_case_with_blanks_around() {
        for (value, on) in [
            ("true", true),
            ("TRUE", true),
            (" True\n", true),
            ("false", false),
            ("yes", false),
            ("1", false),
            ("", false),
            ("truee", false),
        ] {
            let config = parse(&with(&[("REUSE_LAST_SESSION", value)])).expect("never refused");
            assert_eq!(config.reuse_last_session, on, "{value:?}");
        }
    }

    #[test]
    fn the_backend_url_follows_the_backend_namespace_unless_given() {
        let config = parse(&with(&[("BACKEND_NAMESPACE", "platform")])).unwrap();
        assert_eq!(
            config.run_url("s"),
            "http://backend-service.platform.svc.cluster.local:8080/api/projects/team-a/\
             agentic-sessions/s/agui/run"
        );
        let config = parse(&with(&[
            ("BACKEND_NAMESPACE", "platform"),
            ("BACKEND_API_URL", "http://127.0.0.1:4000/api/"),
        ]))
        .unwrap();
        assert_eq!(
            config.run_url("s"),
            "http://127.0.0.1:4000/api/projects/team-a/agentic-sessions/s/agui/run"
        );
    }

    #[test]
    fn template_keys_the_crd_does_not_know_are_kept_for_the_api_server_to_drop() {
        let config = parse(&with(&[(
            "SESSION_TEMPLATE",
            r#"{"runnerType": "claude", "sdkOptions": {"a": 1}, "displayName": "",
                "initialPrompt": null}"#,
        )]))
        .expect("unknown keys are no error");
        assert_eq!(config.template["runnerType"], "claude");
        assert_eq!(config.display_name(), None, "empty is absent");
        assert_eq!(config.prompt(), None, "null is absent");
    }
}
