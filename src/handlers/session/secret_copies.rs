//! Copies of shared Secrets in managed namespaces (SPEC §5.1): the runner of a session can only
//! reference Secrets of its own namespace, so the operator copies the Vertex credentials, the
//! Langfuse and MLflow settings, the Google OAuth client and the shared S3 keys from the
//! backend's (or its own) namespace into each namespace whose sessions need them. The session
//! handler ensures them before it makes a run; the engines also reconcile them per namespace
//! (`ObjectKey::SecretCopies`) when a session finishes or starts again and when a source or a
//! copy changes.
//!
//! Invariants:
//! - a copy holds its source's data as of the source version recorded in its annotation; when
//!   the source changes (a rotation), every copy is replaced with the new data;
//! - a copy exists only while an unfinished session of its namespace needs it: once none does,
//!   it is deleted;
//! - only the operator's own copies are ever touched (label `ambient-code.io/secret-copy`, and
//!   on a name collision the `copied-from` annotation): a Secret of that name someone else made
//!   is left alone, and reported;
//! - with nothing to change, a reconcile makes no API call (it reads only caches).

use std::time::Duration;

use agentic_crds::keys;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, ResourceExt};

use crate::context::{Context, FIELD_MANAGER};
use crate::handlers::session::children::copies::build_copy;
use crate::handlers::session::platform::PlatformView;

/// Why a copy could not be made, refreshed or removed (retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// An API call failed.
    #[error("{action} Secret {namespace}/{name}: {source}")]
    Api {
        /// What was attempted.
        action: &'static str,
        /// Namespace of the Secret.
        namespace: String,
        /// Its name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// A Secret of that name exists in the namespace and is not the operator's copy.
    #[error(
        "Secret {namespace}/{name} exists and is not a copy made by the operator; \
         remove or rename it so the shared one can be copied"
    )]
    Occupied {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
}

impl CopyError {
    /// Value of the `error_type` label of `ambient_session_errors_total`.
    pub fn metric_label(&self) -> &'static str {
        "secrets"
    }
}

fn api_error<'a>(
    action: &'static str,
    namespace: &'a str,
    name: &'a str,
) -> impl FnOnce(kube::Error) -> CopyError + 'a {
    move |source| CopyError::Api {
        action,
        namespace: namespace.to_string(),
        name: name.to_string(),
        source,
    }
}

/// Where the source of a shared Secret lives.
pub fn source_namespace<'c>(ctx: &'c Context, name: &str) -> &'c str {
    if name == keys::GOOGLE_OAUTH_SECRET {
        &ctx.config.args.namespace
    } else {
        &ctx.config.backend_namespace
    }
}

/// What `namespace` offers runners, as the caches say.
pub fn platform_view(namespace: &str, ctx: &Context) -> PlatformView {
    let caches = &ctx.caches;
    let integrations = caches.integrations(namespace).map(|secret| {
        crate::handlers::session::platform::ProjectStorage {
            custom: secret.value("STORAGE_MODE") == Some("custom"),
            endpoint: secret.value("S3_ENDPOINT").map(str::to_string),
            bucket: secret.value("S3_BUCKET").map(str::to_string),
            has_keys: secret.has("S3_ACCESS_KEY") && secret.has("S3_SECRET_KEY"),
        }
    });
    let source = |name: &str| caches.sources.get(name);
    PlatformView {
        runner_secret: caches.has_runner_secret(namespace),
        integrations,
        ca_bundle: caches.has_ca_bundle(namespace),
        vertex_source: ctx.config.vertex.is_some() && source(keys::VERTEX_SECRET).is_some(),
        langfuse_source: ctx.config.langfuse() && source(keys::LANGFUSE_SECRET).is_some(),
        mlflow_source: source(keys::MLFLOW_SECRET)
            .filter(|_| ctx.config.mlflow())
            .map(|secret| {
                matches!(
                    secret.value("MLFLOW_TRACKING_AUTH"),
                    Some("kubernetes" | "kubernetes-namespaced")
                )
            }),
        google_source: source(keys::GOOGLE_OAUTH_SECRET).is_some(),
        minio_source: source(keys::MINIO_CREDENTIALS_SECRET).is_some(),
    }
}

/// The copies `namespace` needs: those its runners reference, while one of its sessions is
/// unfinished; none otherwise.
pub fn needed(namespace: &str, ctx: &Context) -> Vec<&'static str> {
    if !ctx.caches.unfinished.any_in(namespace) {
        return Vec::new();
    }
    let view = platform_view(namespace, ctx);
    let s3 = view.s3(&ctx.config.args.s3_endpoint, &ctx.config.args.s3_bucket);
    view.copies(ctx.config.vertex.is_some(), &s3)
}

/// Makes (or refreshes) the copies of `names` in `namespace`.
pub async fn ensure(namespace: &str, names: &[&str], ctx: &Context) -> Result<(), CopyError> {
    for name in names {
        ensure_one(namespace, name, ctx).await?;
    }
    Ok(())
}

async fn ensure_one(namespace: &str, name: &str, ctx: &Context) -> Result<(), CopyError> {
    let Some(cached_source) = ctx.caches.sources.get(name) else {
        return Ok(()); // nothing to copy
    };
    let source_version = cached_source.metadata.resource_version.clone();
    let copy = ctx.caches.secret(namespace, name);
    if copy
        .as_ref()
        .is_some_and(|c| c.copied_version().map(str::to_string) == source_version)
    {
        return Ok(()); // up to date
    }
    let from = source_namespace(ctx, name);
    let sources: Api<Secret> = Api::namespaced(ctx.client.clone(), from);
    let Some(source) = sources
        .get_opt(name)
        .await
        .map_err(api_error("read", from, name))?
    else {
        return Ok(());
    };
    let owner = ctx.caches.project_settings_of(namespace);
    let mut desired = build_copy(&source, namespace, owner.as_deref());
    let copies: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let params = PostParams {
        dry_run: false,
        field_manager: Some(FIELD_MANAGER.into()),
    };
    match copies.create(&params, &desired).await {
        Ok(_) => {
            tracing::info!(namespace, secret = name, from, "copied a shared Secret");
            return Ok(());
        }
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(error) => return Err(api_error("create", namespace, name)(error)),
    }
    // It exists: replace it if it is our copy (a rotation of its source), never otherwise.
    let existing = copies
        .get_metadata_opt(name)
        .await
        .map_err(api_error("read", namespace, name))?;
    let Some(existing) = existing else {
        return Ok(()); // gone meanwhile: the next reconcile makes it
    };
    let ours = existing
        .annotations()
        .get(keys::COPIED_FROM_ANNOTATION)
        .is_some_and(|origin| origin == &format!("{from}/{name}"));
    if !ours {
        return Err(CopyError::Occupied {
            namespace: namespace.to_string(),
            name: name.to_string(),
        });
    }
    desired.metadata.resource_version = existing.resource_version();
    copies
        .replace(name, &params, &desired)
        .await
        .map_err(api_error("refresh", namespace, name))?;
    tracing::info!(
        namespace,
        secret = name,
        from,
        "refreshed a copied Secret after its source changed"
    );
    Ok(())
}

/// Keeps `namespace`'s copies to what its sessions need: missing or stale ones are made,
/// unneeded ones deleted. Returns when to look again (never: events drive it).
pub async fn reconcile(namespace: &str, ctx: &Context) -> Result<Option<Duration>, CopyError> {
    let needed = needed(namespace, ctx);
    ensure(namespace, &needed, ctx).await?;
    let copies: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    for name in [
        keys::VERTEX_SECRET,
        keys::LANGFUSE_SECRET,
        keys::MLFLOW_SECRET,
        keys::GOOGLE_OAUTH_SECRET,
        keys::MINIO_CREDENTIALS_SECRET,
    ] {
        if needed.contains(&name) {
            continue;
        }
        let Some(copy) = ctx.caches.secret(namespace, name) else {
            continue;
        };
        // The cache holds only Secrets labelled as the operator's; a token Secret cannot have
        // these names.
        let uid = copy.metadata.uid.clone().unwrap_or_default();
        let params = DeleteParams {
            preconditions: Some(kube::api::Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match copies.delete(name, &params).await {
            Ok(_) => tracing::info!(namespace, secret = name, "removed a copy no session needs"),
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
            Err(error) => return Err(api_error("delete", namespace, name)(error)),
        }
    }
    Ok(None)
}
