//! The shape of a session's runner pod (SPEC §5.3, §5.4): which runtime it runs (user env
//! `RUNNER_TYPE`, default `claude-agent-sdk`), and what that runtime's registry entry — or,
//! without one, the defaults — makes of image, port, resources, state directory, grace period,
//! workspace size and the state containers.
//!
//! Invariants: every value a registry entry gets wrong (an invalid quantity, a port outside
//! 1..=65535, a negative grace period) falls back to its default, so a bad edit never produces
//! a pod the API server refuses; an unknown runtime id gets the defaults; containers that mount
//! the workspace exist only together with it.

use std::collections::BTreeMap;

use agentic_crds::{AgenticSession, keys};

use crate::catalog::{DEFAULT_RUNTIME, RuntimeEntry};

/// User env naming the session's runtime.
pub const RUNNER_TYPE_ENV: &str = "RUNNER_TYPE";
/// User env overriding the runtime's state directory.
pub const RUNNER_STATE_DIR_ENV: &str = "RUNNER_STATE_DIR";
/// State directory without a registry entry.
pub const DEFAULT_STATE_DIR: &str = ".claude";
/// `terminationGracePeriodSeconds` without a registry entry.
pub const DEFAULT_GRACE_SECONDS: i64 = 60;
/// The workspace emptyDir's `sizeLimit` without a registry entry.
pub const DEFAULT_WORKSPACE_SIZE: &str = "10Gi";

/// Requests and limits of the runner container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resources {
    /// CPU request.
    pub cpu_request: String,
    /// Memory request.
    pub memory_request: String,
    /// CPU limit.
    pub cpu_limit: String,
    /// Memory limit.
    pub memory_limit: String,
}

/// The runner pod of one session, as its runtime shapes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerShape {
    /// The runtime id (`RUNNER_TYPE`).
    pub runtime: String,
    /// Runner image.
    pub image: String,
    /// The AG-UI port (container port `agui`, `AGUI_PORT`, the Service's port).
    pub port: u16,
    /// The runtime's extra environment (never overriding anything else).
    pub env: BTreeMap<String, String>,
    /// Runner resources.
    pub resources: Resources,
    /// State directory under the workspace, mounted at `/app/<state_dir>`.
    pub state_dir: String,
    /// `terminationGracePeriodSeconds`.
    pub grace_seconds: i64,
    /// The workspace emptyDir's `sizeLimit`.
    pub workspace_size: String,
    /// Image of `init-hydrate` and `state-sync`.
    pub state_image: String,
    /// The pod has the workspace volume.
    pub workspace: bool,
    /// The pod has the `init-hydrate` init container.
    pub init_hydrate: bool,
    /// The pod has the `state-sync` sidecar.
    pub state_sync: bool,
}

/// The operator's defaults a runtime entry may override.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeDefaults {
    /// `AMBIENT_CODE_RUNNER_IMAGE`.
    pub image: String,
    /// `STATE_SYNC_IMAGE`.
    pub state_image: String,
    /// The `--runner-*` resources.
    pub resources: Resources,
}

/// The runtime id a session asks for (its user env `RUNNER_TYPE`, else the default).
pub fn runtime_of(session: &AgenticSession) -> String {
    session
        .spec
        .environment_variables
        .get(RUNNER_TYPE_ENV)
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
        .unwrap_or(DEFAULT_RUNTIME)
        .to_string()
}

/// The shape of `session`'s runner with `entry` (its runtime's registry entry, if any).
pub fn shape(
    session: &AgenticSession,
    entry: Option<&RuntimeEntry>,
    defaults: &ShapeDefaults,
) -> RunnerShape {
    let runtime = runtime_of(session);
    let container = entry.map(|e| &e.container);
    let sandbox = entry.and_then(|e| e.sandbox.as_ref());
    let port = container
        .and_then(|c| c.port)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0)
        .unwrap_or(keys::DEFAULT_RUNNER_PORT);
    let resources = container.and_then(|c| c.resources.as_ref());
    let pick = |value: Option<&String>, default: &str| {
        value
            .filter(|v| is_quantity(v))
            .cloned()
            .unwrap_or_else(|| default.to_string())
    };
    let requests = resources.and_then(|r| r.requests.as_ref());
    let limits = resources.and_then(|r| r.limits.as_ref());
    let resources = Resources {
        cpu_request: pick(
            requests.and_then(|r| r.cpu.as_ref()),
            &defaults.resources.cpu_request,
        ),
        memory_request: pick(
            requests.and_then(|r| r.memory.as_ref()),
            &defaults.resources.memory_request,
        ),
        cpu_limit: pick(
            limits.and_then(|r| r.cpu.as_ref()),
            &defaults.resources.cpu_limit,
        ),
        memory_limit: pick(
            limits.and_then(|r| r.memory.as_ref()),
            &defaults.resources.memory_limit,
        ),
    };
    let state_dir = session
        .spec
        .environment_variables
        .get(RUNNER_STATE_DIR_ENV)
        .cloned()
        .or_else(|| sandbox.and_then(|s| s.state_dir.clone()))
        .filter(|d| is_state_dir(d))
        .unwrap_or_else(|| DEFAULT_STATE_DIR.to_string());
    // No registry entry (or no sandbox in it): every state container, as the original.
    let (persist, clone_repos, hydrate_state) = match sandbox {
        Some(s) => {
            let seed = s.seed.clone().unwrap_or_default();
            let persist = s.persistence.as_deref().unwrap_or("none") != "none";
            (persist, seed.clone_repos, seed.hydrate_state)
        }
        None => (true, true, true),
    };
    let init_hydrate = clone_repos || hydrate_state;
    RunnerShape {
        runtime,
        image: container
            .and_then(|c| c.image.clone())
            .filter(|i| !i.trim().is_empty())
            .unwrap_or_else(|| defaults.image.clone()),
        port,
        env: container.map(|c| c.env.clone()).unwrap_or_default(),
        resources,
        state_dir,
        grace_seconds: sandbox
            .and_then(|s| s.termination_grace_period)
            .filter(|g| *g > 0)
            .unwrap_or(DEFAULT_GRACE_SECONDS),
        workspace_size: sandbox
            .and_then(|s| s.workspace_size.clone())
            .filter(|q| is_quantity(q))
            .unwrap_or_else(|| DEFAULT_WORKSPACE_SIZE.to_string()),
        state_image: sandbox
            .and_then(|s| s.state_sync_image.clone())
            .filter(|i| !i.trim().is_empty())
            .unwrap_or_else(|| defaults.state_image.clone()),
        // The containers that mount the workspace come only with it (the original could
        // produce an init container mounting a volume the pod did not have).
        workspace: persist || init_hydrate,
        init_hydrate,
        state_sync: persist,
    }
}

/// A state directory must be one relative path segment (it becomes a subPath and a mount
/// under `/app`).
fn is_state_dir(dir: &str) -> bool {
    !dir.is_empty()
        && dir != "."
        && dir != ".."
        && dir.len() <= 253
        && dir
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A Kubernetes resource quantity such as `500m`, `2`, `1.5Gi` or `10G`.
pub fn is_quantity(value: &str) -> bool {
    const SUFFIXES: [&str; 14] = [
        "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "n", "u", "m", "k", "M", "G", "T", "P",
    ];
    let number = SUFFIXES
        .iter()
        .find_map(|s| value.strip_suffix(s))
        .unwrap_or(value);
    let mut parts = number.splitn(2, '.');
    let whole = parts.next().unwrap_or_default();
    let fraction = parts.next();
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(whole) && fraction.is_none_or(digits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{CpuMemory, RuntimeContainer, RuntimeResources, Sandbox, Seed};
    use crate::handlers::session::fixtures::session;

    fn defaults() -> ShapeDefaults {
        ShapeDefaults {
            image: "runner:default".into(),
            state_image: "state:default".into(),
            resources: Resources {
                cpu_request: "500m".into(),
                memory_request: "512Mi".into(),
                cpu_limit: "2".into(),
                memory_limit: "8Gi".into(),
            },
        }
    }

    fn entry() -> RuntimeEntry {
        RuntimeEntry {
            id: "gemini-cli".into(),
            container: RuntimeContainer {
                image: Some("runner:gemini".into()),
                port: Some(8002),
                env: [("RUNNER_TYPE".to_string(), "gemini-cli".to_string())].into(),
                resources: Some(RuntimeResources {
                    requests: Some(CpuMemory {
                        cpu: Some("250m".into()),
                        memory: Some("lots".into()),
                    }),
                    limits: None,
                }),
            },
            sandbox: Some(Sandbox {
                state_dir: Some(".gemini".into()),
                state_sync_image: Some("state:gemini".into()),
                persistence: Some("none".into()),
                workspace_size: Some("5Gi".into()),
                termination_grace_period: Some(30),
                seed: Some(Seed {
                    clone_repos: true,
                    hydrate_state: false,
                }),
            }),
        }
    }

    #[test]
    fn a_runtime_entry_shapes_image_port_env_resources_state_grace_and_size() {
        let mut s = session("demo");
        s.spec
            .environment_variables
            .insert("RUNNER_TYPE".into(), "gemini-cli".into());
        let shape = shape(&s, Some(&entry()), &defaults());
        assert_eq!(shape.runtime, "gemini-cli");
        assert_eq!(shape.image, "runner:gemini");
        assert_eq!(shape.port, 8002);
        assert_eq!(shape.env["RUNNER_TYPE"], "gemini-cli");
        assert_eq!(shape.resources.cpu_request, "250m");
        assert_eq!(shape.resources.memory_request, "512Mi", "invalid ⇒ default");
        assert_eq!(shape.resources.cpu_limit, "2");
        assert_eq!(shape.state_dir, ".gemini");
        assert_eq!(shape.grace_seconds, 30);
        assert_eq!(shape.workspace_size, "5Gi");
        assert_eq!(shape.state_image, "state:gemini");
        assert!(shape.workspace && shape.init_hydrate && !shape.state_sync);
    }

    #[test]
    fn without_an_entry_every_default_and_every_state_container() {
        let shape = shape(&session("demo"), None, &defaults());
        assert_eq!(shape.runtime, "claude-agent-sdk");
        assert_eq!(shape.image, "runner:default");
        assert_eq!(shape.port, 8001);
        assert_eq!(shape.state_dir, ".claude");
        assert_eq!(shape.grace_seconds, 60);
        assert_eq!(shape.workspace_size, "10Gi");
        assert!(shape.workspace && shape.init_hydrate && shape.state_sync);
    }

    #[test]
    fn ports_outside_the_tcp_range_fall_back_to_8001() {
        for bad in [0, -1, 70_000] {
            let mut e = entry();
            e.container.port = Some(bad);
            assert_eq!(
                shape(&session("demo"), Some(&e), &defaults()).port,
                8001,
                "{bad}"
            );
        }
    }

    #[test]
    fn the_users_state_dir_wins_and_a_path_is_refused() {
        let mut s = session("demo");
        s.spec
            .environment_variables
            .insert("RUNNER_STATE_DIR".into(), ".mine".into());
        assert_eq!(shape(&s, Some(&entry()), &defaults()).state_dir, ".mine");
        s.spec
            .environment_variables
            .insert("RUNNER_STATE_DIR".into(), "../etc".into());
        assert_eq!(shape(&s, None, &defaults()).state_dir, ".claude");
    }

    #[test]
    fn no_persistence_and_no_seed_means_no_workspace_and_no_state_containers() {
        let mut e = entry();
        e.sandbox.as_mut().unwrap().seed = None;
        let shape = shape(&session("demo"), Some(&e), &defaults());
        assert!(!shape.workspace && !shape.init_hydrate && !shape.state_sync);
    }

    #[test]
    fn quantities_are_checked() {
        for good in ["500m", "2", "1.5Gi", "10G", "128974848"] {
            assert!(is_quantity(good), "{good}");
        }
        for bad in ["", "Gi", "1.2.3", "ten", "-1"] {
            assert!(!is_quantity(bad), "{bad}");
        }
    }
}
