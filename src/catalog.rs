//! The platform's catalog of runtimes (SPEC §5.3): the agent registry (`AGENT_REGISTRY_PATH`, a JSON array of runtimes)
//! and the model manifest (`MODELS_MANIFEST_PATH`), both files mounted from ConfigMaps.
//!
//! Invariants:
//! - a file is re-read when it changes (its modification time, length or inode: a ConfigMap
//!   update swaps the mounted file), checked at most once per [`RECHECK`];
//! - a file that cannot be parsed never stops sessions: the last good content stays in use, the
//!   error is logged and counted in `ambient_config_reload_errors_total{file}`;
//! - a missing file means "nothing configured" (the defaults apply), not an error: both
//!   ConfigMaps are mounted as optional;
//! - fields the operator does not use are accepted (the platform's backend reads the same files
//!   and more of their fields).

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use crate::observability::metrics::Metrics;

/// How often a file is looked at for changes, at most.
pub const RECHECK: Duration = Duration::from_secs(1);

/// The runtime a session picks when it names none (user env `RUNNER_TYPE`).
pub const DEFAULT_RUNTIME: &str = "claude-agent-sdk";

/// One runtime of the agent registry. Only what the operator uses is read; the rest of an
/// entry (display name, auth, feature gate...) is accepted and ignored.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeEntry {
    /// The runtime's id, matched against the session's `RUNNER_TYPE`.
    pub id: String,
    /// The runner container.
    #[serde(default)]
    pub container: RuntimeContainer,
    /// Workspace and state persistence; `None` when the entry has no `sandbox`.
    #[serde(default)]
    pub sandbox: Option<Sandbox>,
}

/// The runner container of a runtime.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeContainer {
    /// Image (else `AMBIENT_CODE_RUNNER_IMAGE`).
    #[serde(default)]
    pub image: Option<String>,
    /// Port of the AG-UI endpoint (else 8001).
    #[serde(default)]
    pub port: Option<i64>,
    /// Extra environment; never overrides anything the operator or the user sets.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Requests and limits (each invalid or missing value falls back to the operator's).
    #[serde(default)]
    pub resources: Option<RuntimeResources>,
}

/// Requests and limits of a runtime's container.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct RuntimeResources {
    /// Requests.
    #[serde(default)]
    pub requests: Option<CpuMemory>,
    /// Limits.
    #[serde(default)]
    pub limits: Option<CpuMemory>,
}

/// A CPU and a memory quantity, as strings (validated where used).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct CpuMemory {
    /// CPU quantity, e.g. `500m`.
    #[serde(default)]
    pub cpu: Option<String>,
    /// Memory quantity, e.g. `512Mi`.
    #[serde(default)]
    pub memory: Option<String>,
}

/// Workspace and state persistence of a runtime.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sandbox {
    /// The runtime's state directory under the workspace (e.g. `.claude`).
    #[serde(default)]
    pub state_dir: Option<String>,
    /// Image of the state containers (else `STATE_SYNC_IMAGE`).
    #[serde(default)]
    pub state_sync_image: Option<String>,
    /// `none` or `s3`.
    #[serde(default)]
    pub persistence: Option<String>,
    /// The workspace emptyDir's `sizeLimit`.
    #[serde(default)]
    pub workspace_size: Option<String>,
    /// The runner pod's `terminationGracePeriodSeconds`.
    #[serde(default)]
    pub termination_grace_period: Option<i64>,
    /// What the init container seeds the workspace with.
    #[serde(default)]
    pub seed: Option<Seed>,
}

/// What `init-hydrate` seeds the workspace with.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Seed {
    /// Clone the session's repositories.
    #[serde(default)]
    pub clone_repos: bool,
    /// Restore the runtime's state from S3.
    #[serde(default)]
    pub hydrate_state: bool,
}

/// The model manifest: which models exist, and their Vertex ids.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelManifest {
    /// The manifest's version.
    #[serde(default)]
    pub version: Option<i64>,
    /// The model sessions get when they name none.
    #[serde(default)]
    pub default_model: Option<String>,
    /// The models.
    #[serde(default)]
    pub models: Vec<ModelEntry>,
}

/// One model of the manifest.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelEntry {
    /// The id sessions use (`spec.llmSettings.model`).
    pub id: String,
    /// Its id on Vertex AI.
    #[serde(default)]
    pub vertex_id: Option<String>,
    /// Its provider.
    #[serde(default)]
    pub provider: Option<String>,
    /// Whether it may be used.
    #[serde(default)]
    pub available: bool,
}

impl ModelManifest {
    /// The Vertex id of the available model `id` (`LLM_MODEL_VERTEX_ID`).
    pub fn vertex_id(&self, id: &str) -> Option<&str> {
        self.models
            .iter()
            .find(|m| m.id == id && m.available)
            .and_then(|m| m.vertex_id.as_deref())
            .filter(|v| !v.is_empty())
    }
}

/// The registry and the manifest, each re-read when its file changes; cheap to clone.
#[derive(Clone)]
pub struct Catalog {
    registry: Arc<WatchedFile<Vec<RuntimeEntry>>>,
    models: Arc<WatchedFile<ModelManifest>>,
}

impl Catalog {
    /// A catalog reading `registry` and `models`; errors are counted in `metrics`.
    pub fn new(registry: &Path, models: &Path, metrics: Metrics) -> Self {
        Catalog {
            registry: Arc::new(WatchedFile::new(
                registry,
                "agent-registry",
                metrics.clone(),
            )),
            models: Arc::new(WatchedFile::new(models, "models", metrics)),
        }
    }

    /// The runtime with `id`, if the registry has it.
    pub fn runtime(&self, id: &str) -> Option<RuntimeEntry> {
        self.registry.current().iter().find(|r| r.id == id).cloned()
    }

    /// Every runtime of the registry.
    pub fn runtimes(&self) -> Arc<Vec<RuntimeEntry>> {
        self.registry.current()
    }

    /// The model manifest.
    pub fn models(&self) -> Arc<ModelManifest> {
        self.models.current()
    }
}

/// What identifies one version of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> std::io::Result<FileStamp> {
    let metadata = std::fs::metadata(path)?;
    Ok(FileStamp {
        modified: metadata.modified().ok(),
        len: metadata.len(),
        inode: metadata.ino(),
    })
}

/// One JSON file and its last good content.
struct WatchedFile<T> {
    path: PathBuf,
    label: &'static str,
    metrics: Metrics,
    state: Mutex<Loaded<T>>,
}

struct Loaded<T> {
    value: Arc<T>,
    /// The file version `value` came from (`None`: no file was ever read).
    stamp: Option<FileStamp>,
    /// The file version last looked at, good or not (a broken version is reported once).
    seen: Option<FileStamp>,
    checked: Option<Instant>,
}

impl<T: DeserializeOwned + Default> WatchedFile<T> {
    fn new(path: &Path, label: &'static str, metrics: Metrics) -> Self {
        WatchedFile {
            path: path.to_path_buf(),
            label,
            metrics,
            state: Mutex::new(Loaded {
                value: Arc::new(T::default()),
                stamp: None,
                seen: None,
                checked: None,
            }),
        }
    }

    /// The content, re-read first if the file changed since it was last looked at.
    fn current(&self) -> Arc<T> {
        let mut state = self.state.lock();
        let due = state.checked.is_none_or(|at| at.elapsed() >= RECHECK);
        if due {
            state.checked = Some(Instant::now());
            self.refresh(&mut state);
        }
        Arc::clone(&state.value)
    }

    fn refresh(&self, state: &mut Loaded<T>) {
        let current = match stamp(&self.path) {
            Ok(current) => current,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                if state.stamp.is_some() {
                    tracing::info!(path = %self.path.display(), "configuration file removed");
                }
                state.value = Arc::new(T::default());
                state.stamp = None;
                state.seen = None;
                return;
            }
            Err(error) => return self.failed(state, None, &error.to_string()),
        };
        if state.seen == Some(current) {
            return;
        }
        let parsed = std::fs::read(&self.path)
            .map_err(|e| e.to_string())
            .and_then(|bytes| serde_json::from_slice::<T>(&bytes).map_err(|e| e.to_string()));
        match parsed {
            Ok(value) => {
                tracing::info!(path = %self.path.display(), "configuration file loaded");
                state.value = Arc::new(value);
                state.stamp = Some(current);
                state.seen = Some(current);
            }
            Err(error) => self.failed(state, Some(current), &error),
        }
    }

    /// A version that cannot be used: keep the last good content, say so once per version.
    fn failed(&self, state: &mut Loaded<T>, version: Option<FileStamp>, error: &str) {
        if version.is_some() && state.seen == version {
            return;
        }
        state.seen = version;
        tracing::error!(
            path = %self.path.display(),
            error,
            kept = if state.stamp.is_some() { "the last good version" } else { "the defaults" },
            "cannot load a configuration file"
        );
        self.metrics
            .families()
            .config_reload_errors
            .with_label_values(&[self.label])
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("runtime-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    /// Writes `text` the way the kubelet updates a ConfigMap volume: a new file swapped in.
    fn publish(path: &Path, text: &str) {
        let staging = path.with_extension("staging");
        std::fs::write(&staging, text).expect("writing");
        std::fs::rename(&staging, path).expect("swapping in");
    }

    fn errors(metrics: &Metrics, file: &str) -> u64 {
        metrics
            .families()
            .config_reload_errors
            .with_label_values(&[file])
            .get()
    }

    #[tokio::test(start_paused = true)]
    async fn a_broken_registry_keeps_the_last_good_one_and_is_counted_once() {
        let dir = temp_dir("broken");
        let path = dir.join("agent-registry.json");
        let metrics = Metrics::new().expect("metrics");
        let catalog = Catalog::new(&path, &dir.join("models.json"), metrics.clone());
        assert!(catalog.runtimes().is_empty(), "no file: the defaults");

        publish(
            &path,
            r#"[{"id": "a", "container": {"port": 9000}, "auth": {"x": 1}}]"#,
        );
        tokio::time::advance(RECHECK).await;
        assert_eq!(
            catalog.runtime("a").and_then(|r| r.container.port),
            Some(9000)
        );

        publish(&path, "[{not json");
        tokio::time::advance(RECHECK).await;
        assert_eq!(
            catalog.runtime("a").and_then(|r| r.container.port),
            Some(9000)
        );
        tokio::time::advance(RECHECK).await;
        assert!(catalog.runtime("a").is_some());
        assert_eq!(errors(&metrics, "agent-registry"), 1, "reported once");

        publish(&path, r#"[{"id": "b"}]"#);
        tokio::time::advance(RECHECK).await;
        assert!(catalog.runtime("a").is_none() && catalog.runtime("b").is_some());
        std::fs::remove_dir_all(dir).ok();
    }

    #[tokio::test(start_paused = true)]
    async fn a_changed_file_is_read_again_only_after_the_recheck_interval() {
        let dir = temp_dir("recheck");
        let path = dir.join("agent-registry.json");
        publish(&path, r#"[{"id": "a"}]"#);
        let catalog = Catalog::new(&path, &dir.join("models.json"), Metrics::new().unwrap());
        assert!(catalog.runtime("a").is_some());
        publish(&path, r#"[{"id": "b"}]"#);
        assert!(catalog.runtime("a").is_some(), "not yet due");
        tokio::time::advance(RECHECK).await;
        assert!(catalog.runtime("b").is_some());
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn the_vertex_id_is_that_of_the_available_model() {
        let manifest: ModelManifest = serde_json::from_value(serde_json::json!({
            "version": 2, "defaultModel": "m1", "providerDefaults": {"anthropic": "m1"},
            "models": [
                {"id": "m1", "vertexId": "m1@2025", "provider": "anthropic", "available": true,
                 "label": "M1", "featureGated": false},
                {"id": "m2", "vertexId": "m2@default", "available": false},
            ],
        }))
        .expect("a manifest");
        assert_eq!(manifest.vertex_id("m1"), Some("m1@2025"));
        assert_eq!(manifest.vertex_id("m2"), None, "not available");
        assert_eq!(manifest.vertex_id("m3"), None);
    }

    #[test]
    fn the_shipped_registry_and_models_read() {
        let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/base/config");
        let registry: Vec<RuntimeEntry> = serde_json::from_slice(
            &std::fs::read(deploy.join("agent-registry.json")).expect("the shipped registry"),
        )
        .expect("it parses");
        let ids: Vec<&str> = registry.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["claude-agent-sdk", "gemini-cli"]);
        let models: ModelManifest = serde_json::from_slice(
            &std::fs::read(deploy.join("models.json")).expect("the shipped manifest"),
        )
        .expect("it parses");
        assert_eq!(
            models.vertex_id("claude-sonnet-4-6"),
            Some("claude-sonnet-4-6@default")
        );
    }
}
