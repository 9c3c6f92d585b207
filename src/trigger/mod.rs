//! `agentic-operator session-trigger` (SPEC §5.7): what a scheduled session's CronJob runs.
//!
//! It creates a session from the template, named `<sanitized display or scheduled name>-<unix
//! seconds>` and labelled with the scheduled session's name. With `REUSE_LAST_SESSION=true` it
//! first looks at the newest session of that schedule: Running without a prompt in the
//! template ⇒ nothing to do; Running with one ⇒ the prompt goes to it through the backend;
//! Stopped or Completed ⇒ it is restarted (with the prompt, marked `force-execute-prompt` so
//! that the restarted run executes it); any other phase ⇒ a new session as without reuse.
//!
//! The session is written as plain JSON ([`DynamicObject`]), never through the typed spec: the
//! template is the backend's request, not this CRD's spec (the API server drops the keys the
//! CRD does not know, as for the original), and a restart replaces the stored object with only
//! its annotations (and prompt) changed, whatever else it holds.
//!
//! Exit codes (see [`TriggerError::exit_code`]): 0 done, 64 bad environment, 69 the backend
//! refused the prompt or could not be reached, 1 any other failure.

pub mod backend;
pub mod config;
pub mod name;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::time::Duration;

use agentic_crds::{AgenticSession, Phase, keys};
use k8s_openapi::jiff::Timestamp;
use kube::api::{ApiResource, DynamicObject, ListParams, PostParams};
use kube::config::{AuthInfo, KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, ResourceExt};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

pub use config::{SUBCOMMAND, TriggerConfig, TriggerConfigError};

/// Exit code when the backend refused the prompt or could not be reached (`EX_UNAVAILABLE`).
pub const EXIT_BACKEND: u8 = 69;
/// Exit code of every other failure (credentials, the Kubernetes API).
pub const EXIT_FAILURE: u8 = 1;

/// How often a restart is attempted when the session keeps changing under it (as client-go's
/// `retry.DefaultRetry`).
const RESTART_ATTEMPTS: u32 = 5;
const RESTART_RETRY_DELAY: Duration = Duration::from_millis(10);

/// `--help` of the sub-command.
pub const USAGE: &str = "\
Usage: agentic-operator session-trigger

Creates (or, with REUSE_LAST_SESSION=true, reuses) the AgenticSession of one run of a
scheduled session. Configured by environment only:
  SESSION_TEMPLATE        required: the session template (JSON object)
  PROJECT_NAMESPACE       required: the project namespace
  SCHEDULED_SESSION_NAME  required: the scheduled session (CronJob) name
  REUSE_LAST_SESSION      'true' reuses the newest session of the schedule
  BACKEND_NAMESPACE       the backend's namespace (default ambient-code)
  BACKEND_API_URL         the backend's API base URL
                          (default http://backend-service.<BACKEND_NAMESPACE>.svc.cluster.local:8080/api)
  KUBECONFIG              credentials; in-cluster ServiceAccount credentials when unset
Exit codes: 0 done, 64 bad environment, 69 backend refused or unreachable, 1 other failure.
";

/// What a run of the trigger did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A new session was created.
    Created(String),
    /// The newest session is running and the template has no prompt: nothing to do.
    AlreadyRunning(String),
    /// The prompt went to the running session through the backend.
    Prompted(String),
    /// The stopped or completed session was asked to run again.
    Restarted(String),
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Created(s) => write!(f, "created session {s}"),
            Outcome::AlreadyRunning(s) => {
                write!(f, "session {s} is running and there is no prompt to send")
            }
            Outcome::Prompted(s) => write!(f, "sent the prompt to running session {s}"),
            Outcome::Restarted(s) => write!(f, "restarted session {s}"),
        }
    }
}

/// Why the trigger failed.
#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    /// `KUBECONFIG` could not be used.
    #[error("loading KUBECONFIG: {0}")]
    Kubeconfig(#[source] kube::config::KubeconfigError),
    /// No in-cluster credentials (and no `KUBECONFIG`).
    #[error("loading in-cluster credentials (set KUBECONFIG outside a pod): {0}")]
    InCluster(#[source] kube::config::InClusterError),
    /// The Kubernetes client could not be built.
    #[error("building the Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    /// A Kubernetes API call failed.
    #[error("{action}: {source}")]
    Api {
        /// What was attempted.
        action: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The session kept changing while it was being restarted.
    #[error("restarting session {session}: still conflicting after {RESTART_ATTEMPTS} attempts")]
    Conflict {
        /// The session.
        session: String,
    },
    /// The credentials hold no token to present to the backend.
    #[error("no bearer token to present to the backend: the credentials carry none")]
    NoToken,
    /// The token file could not be read.
    #[error("reading the token file {path}: {source}")]
    TokenFile {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The backend did not take the prompt.
    #[error("sending the prompt to session {session}: {source}")]
    Backend {
        /// The session.
        session: String,
        /// Why.
        #[source]
        source: backend::BackendError,
    },
}

impl TriggerError {
    /// The process exit code: [`EXIT_BACKEND`] when the backend refused the prompt or could
    /// not be reached, [`EXIT_FAILURE`] otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            TriggerError::Backend { .. } => EXIT_BACKEND,
            _ => EXIT_FAILURE,
        }
    }
}

/// What to do with the newest session of the schedule when reuse is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reuse {
    /// Running, no prompt: nothing.
    Nothing,
    /// Running, with a prompt: send it through the backend.
    Prompt,
    /// Stopped or Completed: restart it.
    Restart,
    /// Any other phase (or none yet): create a new session.
    CreateNew,
}

/// The decision for the newest session's `phase` (as written in its status).
pub fn decide(phase: Option<&str>, prompt: Option<&str>) -> Reuse {
    let phase = Phase::ALL.into_iter().find(|p| Some(p.as_str()) == phase);
    match (phase, prompt) {
        (Some(Phase::Running), None) => Reuse::Nothing,
        (Some(Phase::Running), Some(_)) => Reuse::Prompt,
        (Some(Phase::Stopped | Phase::Completed), _) => Reuse::Restart,
        _ => Reuse::CreateNew,
    }
}

/// The newest session: the greatest `creationTimestamp` (whole seconds), ties to the greatest
/// name (names end in the creation's unix seconds).
pub fn newest(sessions: &[DynamicObject]) -> Option<&DynamicObject> {
    sessions.iter().max_by_key(|s| {
        (
            s.metadata.creation_timestamp.as_ref().map(|t| t.0),
            s.name_any(),
        )
    })
}

/// The session a run creates from the template at `now`.
pub fn new_session(config: &TriggerConfig, now: Timestamp) -> DynamicObject {
    let mut spec = config.template.clone();
    let prefix = match config.display_name() {
        Some(display_name) => {
            let prefix = name::sanitize(display_name);
            spec.insert(
                "displayName".into(),
                Value::String(name::stamped_display_name(display_name, now)),
            );
            prefix
        }
        None => name::sanitize(&config.scheduled_session_name),
    };
    let name = name::session_name(&prefix, now.as_second());
    let mut session = DynamicObject::new(&name, &session_resource())
        .within(&config.namespace)
        .data(json!({ "spec": spec }));
    session.metadata.labels = Some(BTreeMap::from([
        (
            keys::SCHEDULED_SESSION_NAME_LABEL.to_string(),
            config.scheduled_session_name.clone(),
        ),
        (keys::SCHEDULED_RUN_LABEL.to_string(), "true".to_string()),
    ]));
    session
}

/// Asks `session` to run again (`desired-phase=Running`, `start-requested-at`); with a prompt
/// also `spec.initialPrompt` and `force-execute-prompt=true`, so the restarted run executes it.
pub fn request_restart(session: &mut DynamicObject, prompt: Option<&str>, now: Timestamp) {
    let annotations = session
        .metadata
        .annotations
        .get_or_insert_with(BTreeMap::new);
    annotations.insert(
        keys::DESIRED_PHASE_ANNOTATION.into(),
        keys::DESIRED_PHASE_RUNNING.into(),
    );
    annotations.insert(
        keys::START_REQUESTED_AT_ANNOTATION.into(),
        now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
    );
    if let Some(prompt) = prompt {
        annotations.insert(keys::FORCE_EXECUTE_PROMPT_ANNOTATION.into(), "true".into());
        if !session.data.is_object() {
            session.data = json!({});
        }
        let spec = session
            .data
            .as_object_mut()
            .map(|data| data.entry("spec").or_insert_with(|| json!({})));
        if let Some(spec) = spec {
            if !spec.is_object() {
                *spec = json!({});
            }
            spec["initialPrompt"] = Value::String(prompt.into());
        }
    }
}

/// AgenticSession as an untyped resource.
fn session_resource() -> ApiResource {
    ApiResource::erase::<AgenticSession>(&())
}

/// Runs the trigger once.
pub async fn run(config: &TriggerConfig) -> Result<Outcome, TriggerError> {
    let kube_config = kube_config(config.kubeconfig.as_deref()).await?;
    let auth = kube_config.auth_info.clone();
    let client = Client::try_from(kube_config).map_err(TriggerError::Client)?;
    let sessions: Api<DynamicObject> =
        Api::namespaced_with(client, &config.namespace, &session_resource());
    if config.reuse_last_session
        && let Some(outcome) = reuse(&sessions, config, &auth).await?
    {
        return Ok(outcome);
    }
    let session = new_session(config, Timestamp::now());
    let name = session.name_any();
    sessions
        .create(&PostParams::default(), &session)
        .await
        .map_err(|source| TriggerError::Api {
            action: format!("creating session {name} in {}", config.namespace),
            source,
        })?;
    Ok(Outcome::Created(name))
}

/// Reuses the newest session of the schedule if its phase allows; `None`: create a new one.
async fn reuse(
    sessions: &Api<DynamicObject>,
    config: &TriggerConfig,
    auth: &AuthInfo,
) -> Result<Option<Outcome>, TriggerError> {
    let selector = format!(
        "{}={}",
        keys::SCHEDULED_SESSION_NAME_LABEL,
        config.scheduled_session_name
    );
    let list = sessions
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|source| TriggerError::Api {
            action: format!("listing the sessions of {}", config.scheduled_session_name),
            source,
        })?;
    let Some(latest) = newest(&list.items) else {
        return Ok(None);
    };
    let name = latest.name_any();
    let phase = latest.data["status"]["phase"].as_str();
    let prompt = config.prompt();
    Ok(match decide(phase, prompt) {
        Reuse::Nothing => Some(Outcome::AlreadyRunning(name)),
        Reuse::Prompt => {
            let token = bearer_token(auth)?;
            let input = backend::run_input(&name, prompt.unwrap_or_default(), Timestamp::now());
            backend::post_json(&config.run_url(&name), &token, &input)
                .await
                .map_err(|source| TriggerError::Backend {
                    session: name.clone(),
                    source,
                })?;
            Some(Outcome::Prompted(name))
        }
        Reuse::Restart => {
            restart(sessions, &name, prompt).await?;
            Some(Outcome::Restarted(name))
        }
        Reuse::CreateNew => None,
    })
}

/// Get, change, replace (guarded by the resourceVersion read), again on a conflict.
async fn restart(
    sessions: &Api<DynamicObject>,
    name: &str,
    prompt: Option<&str>,
) -> Result<(), TriggerError> {
    let failed = |action: &str| {
        let action = format!("{action} session {name}");
        move |source| TriggerError::Api { action, source }
    };
    for attempt in 1..=RESTART_ATTEMPTS {
        let mut session = sessions.get(name).await.map_err(failed("reading"))?;
        request_restart(&mut session, prompt, Timestamp::now());
        match sessions
            .replace(name, &PostParams::default(), &session)
            .await
        {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 && attempt < RESTART_ATTEMPTS => {
                tokio::time::sleep(RESTART_RETRY_DELAY).await;
            }
            Err(kube::Error::Api(status)) if status.code == 409 => break,
            Err(e) => return Err(failed("restarting")(e)),
        }
    }
    Err(TriggerError::Conflict {
        session: name.into(),
    })
}

/// `KUBECONFIG` (a list of files, merged as kubectl does) when set, else in-cluster.
async fn kube_config(kubeconfig: Option<&OsStr>) -> Result<kube::Config, TriggerError> {
    let Some(paths) = kubeconfig else {
        return kube::Config::incluster().map_err(TriggerError::InCluster);
    };
    let mut merged: Option<Kubeconfig> = None;
    for path in std::env::split_paths(paths) {
        let next = Kubeconfig::read_from(&path).map_err(TriggerError::Kubeconfig)?;
        merged = Some(match merged {
            None => next,
            Some(first) => first.merge(next).map_err(TriggerError::Kubeconfig)?,
        });
    }
    let merged = merged.unwrap_or_default();
    kube::Config::from_custom_kubeconfig(merged, &KubeConfigOptions::default())
        .await
        .map_err(TriggerError::Kubeconfig)
}

/// The token the trigger authenticates with, presented to the backend too: the kubeconfig
/// user's `token`, or the file it names (in a pod: the ServiceAccount token, read afresh since
/// the kubelet rotates it).
fn bearer_token(auth: &AuthInfo) -> Result<String, TriggerError> {
    if let Some(token) = &auth.token {
        return Ok(token.expose_secret().trim().to_string());
    }
    let Some(path) = &auth.token_file else {
        return Err(TriggerError::NoToken);
    };
    std::fs::read_to_string(path)
        .map(|t| t.trim().to_string())
        .map_err(|source| TriggerError::TokenFile {
            path: path.clone(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn config(template: Value) -> TriggerConfig {
        let vars: BTreeMap<&str, String> = BTreeMap::from([
            ("SESSION_TEMPLATE", template.to_string()),
            ("PROJECT_NAMESPACE", "team-a".into()),
            ("SCHEDULED_SESSION_NAME", "schedule-4b6f0d52".into()),
        ]);
        TriggerConfig::from_lookup(|name| vars.get(name).map(Into::into)).expect("valid")
    }

    fn at(text: &str) -> Timestamp {
        text.parse().expect("a timestamp")
    }

    #[test]
    fn reuse_follows_the_phase_and_the_prompt() {
        for (phase, prompt, expected) in [
            (Some("Running"), None, Reuse::Nothing),
            (Some("Running"), Some("go"), Reuse::Prompt),
            (Some("Stopped"), None, Reuse::Restart),
            (Some("Stopped"), Some("go"), Reuse::Restart),
            (Some("Completed"), Some("go"), Reuse::Restart),
            (Some("Completed"), None, Reuse::Restart),
            (Some("Failed"), Some("go"), Reuse::CreateNew),
            (Some("Pending"), None, Reuse::CreateNew),
            (Some("Creating"), None, Reuse::CreateNew),
            (Some("Stopping"), None, Reuse::CreateNew),
            (Some("running"), None, Reuse::CreateNew),
            (None, Some("go"), Reuse::CreateNew),
        ] {
            assert_eq!(decide(phase, prompt), expected, "{phase:?} {prompt:?}");
        }
    }

    #[test]
    fn the_newest_session_has_the_greatest_creation_time_then_name() {
        let session = |name: &str, created: Option<&str>| {
            let mut s = DynamicObject::new(name, &session_resource());
            s.metadata.creation_timestamp = created.map(|c| Time(at(c)));
            s
        };
        assert_eq!(newest(&[]), None);
        let sessions = [
            session("b-1767225600", Some("2026-01-01T00:00:00Z")),
            session("c-1767225660", Some("2026-01-01T00:01:00Z")),
            session("a-1767225600", Some("2026-01-01T00:00:00Z")),
            session("z", None),
        ];
        assert_eq!(
            newest(&sessions).map(|s| s.name_any()).as_deref(),
            Some("c-1767225660")
        );
        let tie = [
            session("s-1767225600", Some("2026-01-01T00:00:00Z")),
            session("s-1767225601", Some("2026-01-01T00:00:00Z")),
        ];
        assert_eq!(
            newest(&tie).map(|s| s.name_any()).as_deref(),
            Some("s-1767225601")
        );
    }

    #[test]
    fn a_new_session_is_named_and_labelled_and_has_the_template_as_spec() {
        let now = at("2026-01-02T03:04:05Z");
        let template = json!({"initialPrompt": "Report", "runnerType": "claude-agent-sdk",
                              "labels": {"team": "a"}, "timeout": 600});
        let session = new_session(&config(template.clone()), now);
        assert_eq!(session.name_any(), "schedule-4b6f0d52-1767323045");
        assert_eq!(session.metadata.namespace.as_deref(), Some("team-a"));
        let labels = session.metadata.labels.clone().unwrap();
        assert_eq!(
            labels[keys::SCHEDULED_SESSION_NAME_LABEL],
            "schedule-4b6f0d52"
        );
        assert_eq!(labels[keys::SCHEDULED_RUN_LABEL], "true");
        assert_eq!(labels.len(), 2, "template labels are not the session's");
        assert_eq!(session.data["spec"], template, "passed on as is");
        let types = session.types.unwrap();
        assert_eq!(
            (types.api_version.as_str(), types.kind.as_str()),
            (keys::API_VERSION, keys::AGENTIC_SESSION_KIND)
        );
    }

    #[test]
    fn a_display_name_names_the_session_and_gets_the_time() {
        let now = at("2026-01-02T03:04:05Z");
        let session = new_session(&config(json!({"displayName": "Nightly Report"})), now);
        assert_eq!(session.name_any(), "nightly-report-1767323045");
        assert_eq!(
            session.data["spec"]["displayName"],
            "Nightly Report (Jan 2, 2026 - 03:04:05)"
        );
        let session = new_session(&config(json!({"displayName": ""})), now);
        assert_eq!(session.name_any(), "schedule-4b6f0d52-1767323045");
        assert_eq!(session.data["spec"]["displayName"], "");
    }

    #[test]
    fn a_restart_sets_the_annotations_and_with_a_prompt_forces_it() {
        let now = at("2026-01-02T03:04:05.5Z");
        let mut session = DynamicObject::new("s", &session_resource()).data(json!({
            "spec": {"initialPrompt": "old", "repos": [{"url": "u"}]},
            "status": {"phase": "Completed"},
        }));
        session.metadata.annotations = Some(BTreeMap::from([("keep".into(), "me".into())]));
        let mut without = session.clone();
        request_restart(&mut without, None, now);
        let annotations = without.metadata.annotations.as_ref().unwrap();
        assert_eq!(annotations[keys::DESIRED_PHASE_ANNOTATION], "Running");
        assert_eq!(
            annotations[keys::START_REQUESTED_AT_ANNOTATION],
            "2026-01-02T03:04:05Z"
        );
        assert_eq!(annotations["keep"], "me");
        assert!(!annotations.contains_key(keys::FORCE_EXECUTE_PROMPT_ANNOTATION));
        assert_eq!(
            without.data, session.data,
            "no prompt: the spec is untouched"
        );

        request_restart(&mut session, Some("new"), now);
        let annotations = session.metadata.annotations.as_ref().unwrap();
        assert_eq!(annotations[keys::FORCE_EXECUTE_PROMPT_ANNOTATION], "true");
        assert_eq!(session.data["spec"]["initialPrompt"], "new");
        assert_eq!(session.data["spec"]["repos"], json!([{"url": "u"}]));
        assert_eq!(session.data["status"]["phase"], "Completed");

        let mut bare = DynamicObject::new("s", &session_resource());
        request_restart(&mut bare, Some("new"), now);
        assert_eq!(bare.data, json!({"spec": {"initialPrompt": "new"}}));
    }

    #[test]
    fn only_the_backend_failing_exits_69() {
        let refused = TriggerError::Backend {
            session: "s".into(),
            source: backend::BackendError::Refused {
                url: "u".into(),
                status: 500,
                body: "boom".into(),
            },
        };
        assert_eq!(refused.exit_code(), EXIT_BACKEND);
        assert!(refused.to_string().contains("500: boom"), "{refused}");
        assert_eq!(TriggerError::NoToken.exit_code(), EXIT_FAILURE);
    }

    #[test]
    fn the_backend_sees_the_token_the_credentials_carry() {
        let auth = AuthInfo {
            token: Some("abc\n".to_string().into()),
            ..Default::default()
        };
        assert_eq!(bearer_token(&auth).unwrap(), "abc");
        let file = std::env::temp_dir().join(format!("trigger-token-{}", std::process::id()));
        std::fs::write(&file, "from-file").unwrap();
        let auth = AuthInfo {
            token_file: Some(file.display().to_string()),
            ..Default::default()
        };
        assert_eq!(bearer_token(&auth).unwrap(), "from-file");
        std::fs::remove_file(&file).unwrap();
        assert!(matches!(
            bearer_token(&AuthInfo::default()),
            Err(TriggerError::NoToken)
        ));
    }
}
