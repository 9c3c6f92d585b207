//! What the platform offers a session's runner (SPEC §5.1, §5.4, §5.5), as the caches see it:
//! the credentials Secrets of its namespace, the shared Secrets the operator copies into it,
//! the trusted CA bundle, and from those the S3 settings of the state containers.
//!
//! Pure: the caller fills a [`PlatformView`]; the planner turns it into conditions and the Job
//! builder into environment and volumes. Credentials only ever reach a pod by reference
//! (`secretKeyRef`, `envFrom`, a Secret volume): a [`PlatformView`] holds no Secret data, only
//! whether Secrets and keys exist and the few non-secret settings the operator must read
//! (`STORAGE_MODE`, the S3 endpoint and bucket, MLflow's auth mode).

use agentic_crds::keys;

/// The per-project S3 settings read from `ambient-non-vertex-integrations`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProjectStorage {
    /// `STORAGE_MODE=custom`: the project brings its own S3.
    pub custom: bool,
    /// `S3_ENDPOINT`, if set.
    pub endpoint: Option<String>,
    /// `S3_BUCKET`, if set.
    pub bucket: Option<String>,
    /// Both `S3_ACCESS_KEY` and `S3_SECRET_KEY` are present.
    pub has_keys: bool,
}

/// What the session's namespace and the operator's own namespaces hold for its runner.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlatformView {
    /// `ambient-runner-secrets` exists in the session's namespace.
    pub runner_secret: bool,
    /// `ambient-non-vertex-integrations` exists in the session's namespace (and what it says
    /// about S3).
    pub integrations: Option<ProjectStorage>,
    /// ConfigMap `trusted-ca-bundle` with key `ca-bundle.crt` exists in the session's
    /// namespace.
    pub ca_bundle: bool,
    /// `ambient-vertex` exists in the backend's namespace (looked for in Vertex mode only).
    pub vertex_source: bool,
    /// `ambient-admin-langfuse-secret` exists in the backend's namespace (Langfuse on).
    pub langfuse_source: bool,
    /// `ambient-admin-mlflow-observability-secret` exists in the backend's namespace (MLflow
    /// on); `Some(true)` when its `MLFLOW_TRACKING_AUTH` is `kubernetes` or
    /// `kubernetes-namespaced` (the runner authenticates with its own ServiceAccount token).
    pub mlflow_source: Option<bool>,
    /// `google-workflow-app-secret` exists in the operator's namespace.
    pub google_source: bool,
    /// `minio-credentials` exists in the backend's namespace.
    pub minio_source: bool,
}

/// Where the state containers' S3 access keys come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S3Keys {
    /// `S3_ACCESS_KEY` / `S3_SECRET_KEY` of the project's `ambient-non-vertex-integrations`.
    Project,
    /// `access-key` / `secret-key` of the copied `minio-credentials`.
    Shared,
}

/// The S3 settings of a session's state containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Settings {
    /// Endpoint URL.
    pub endpoint: String,
    /// Bucket.
    pub bucket: String,
    /// Where the keys come from; `None`: S3 is not configured (the containers still run, the
    /// scripts prepare the workspace and skip S3).
    pub keys: Option<S3Keys>,
}

impl PlatformView {
    /// The S3 settings: the project's own when its integrations Secret says
    /// `STORAGE_MODE=custom` (missing endpoint or bucket: the operator's), keys from that
    /// Secret, else — only against the operator's own endpoint and bucket — the shared
    /// `minio-credentials`.
    pub fn s3(&self, default_endpoint: &str, default_bucket: &str) -> S3Settings {
        let custom = self.integrations.as_ref().filter(|p| p.custom);
        let endpoint = custom
            .and_then(|p| p.endpoint.clone())
            .unwrap_or_else(|| default_endpoint.to_string());
        let bucket = custom
            .and_then(|p| p.bucket.clone())
            .unwrap_or_else(|| default_bucket.to_string());
        let operators_own = endpoint == default_endpoint && bucket == default_bucket;
        let keys = if custom.is_some_and(|p| p.has_keys) {
            Some(S3Keys::Project)
        } else if operators_own && self.minio_source {
            Some(S3Keys::Shared)
        } else {
            None
        };
        S3Settings {
            endpoint,
            bucket,
            keys,
        }
    }

    /// The shared Secrets the runner of a session references, to be copied into its
    /// namespace: Vertex (in Vertex mode), Langfuse and MLflow (when on and present), the
    /// Google OAuth client (when present) and `minio-credentials` (when S3 uses it).
    pub fn copies(&self, vertex: bool, s3: &S3Settings) -> Vec<&'static str> {
        let mut copies = Vec::new();
        if vertex && self.vertex_source {
            copies.push(keys::VERTEX_SECRET);
        }
        if self.langfuse_source {
            copies.push(keys::LANGFUSE_SECRET);
        }
        if self.mlflow_source.is_some() {
            copies.push(keys::MLFLOW_SECRET);
        }
        if self.google_source {
            copies.push(keys::GOOGLE_OAUTH_SECRET);
        }
        if s3.keys == Some(S3Keys::Shared) {
            copies.push(keys::MINIO_CREDENTIALS_SECRET);
        }
        copies
    }

    /// Whether the runner authenticates to MLflow with its own ServiceAccount token.
    pub fn mlflow_kubernetes_auth(&self) -> bool {
        self.mlflow_source == Some(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENDPOINT: &str = "https://s3.amazonaws.com";
    const BUCKET: &str = "ambient-sessions";

    #[test]
    fn shared_storage_uses_the_copied_minio_keys_only_on_the_operators_own_bucket() {
        let mut view = PlatformView {
            minio_source: true,
            ..Default::default()
        };
        let s3 = view.s3(ENDPOINT, BUCKET);
        assert_eq!(s3.keys, Some(S3Keys::Shared));
        assert_eq!(view.copies(false, &s3), [keys::MINIO_CREDENTIALS_SECRET]);
        view.minio_source = false;
        assert_eq!(view.s3(ENDPOINT, BUCKET).keys, None, "not configured");
    }

    #[test]
    fn a_project_with_custom_storage_brings_its_endpoint_bucket_and_keys() {
        let view = PlatformView {
            integrations: Some(ProjectStorage {
                custom: true,
                endpoint: Some("http://minio.team:9000".into()),
                bucket: Some("team".into()),
                has_keys: true,
            }),
            minio_source: true,
            ..Default::default()
        };
        let s3 = view.s3(ENDPOINT, BUCKET);
        assert_eq!(s3.endpoint, "http://minio.team:9000");
        assert_eq!(s3.bucket, "team");
        assert_eq!(s3.keys, Some(S3Keys::Project));
        assert!(view.copies(false, &s3).is_empty(), "no shared keys copied");
    }

    #[test]
    fn custom_storage_without_keys_elsewhere_is_not_configured() {
        let view = PlatformView {
            integrations: Some(ProjectStorage {
                custom: true,
                endpoint: Some("http://minio.team:9000".into()),
                ..Default::default()
            }),
            minio_source: true,
            ..Default::default()
        };
        assert_eq!(view.s3(ENDPOINT, BUCKET).keys, None);
    }

    #[test]
    fn copies_follow_what_is_on_and_present() {
        let view = PlatformView {
            vertex_source: true,
            langfuse_source: true,
            mlflow_source: Some(false),
            google_source: true,
            ..Default::default()
        };
        let s3 = view.s3(ENDPOINT, BUCKET);
        assert_eq!(
            view.copies(true, &s3),
            [
                keys::VERTEX_SECRET,
                keys::LANGFUSE_SECRET,
                keys::MLFLOW_SECRET,
                keys::GOOGLE_OAUTH_SECRET
            ]
        );
        assert!(!view.copies(false, &s3).contains(&keys::VERTEX_SECRET));
    }
}
