//! Namespace reconcile (SPEC §2.6): a managed namespace always has `ProjectSettings/projectsettings`.

use std::time::Duration;

use agentic_crds::{ProjectSettings, ProjectSettingsSpec, keys};
use kube::Api;
use kube::api::{ObjectMeta, PostParams};

use crate::context::{Context, FIELD_MANAGER};

/// Why a namespace reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    /// Creating the ProjectSettings failed.
    #[error("create ProjectSettings in namespace {namespace}: {source}")]
    CreateProjectSettings {
        /// The namespace.
        namespace: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

/// The ProjectSettings a newly managed namespace receives: no group access, default timeouts.
pub fn default_project_settings(namespace: &str) -> ProjectSettings {
    let mut settings =
        ProjectSettings::new(keys::PROJECT_SETTINGS_NAME, ProjectSettingsSpec::empty());
    settings.metadata = ObjectMeta {
        name: Some(keys::PROJECT_SETTINGS_NAME.into()),
        namespace: Some(namespace.into()),
        ..Default::default()
    };
    settings
}

/// Ensures the namespace's ProjectSettings exists if the namespace is managed.
pub async fn reconcile(namespace: &str, ctx: &Context) -> Result<Option<Duration>, NamespaceError> {
    if !ctx.caches.is_managed(namespace) || ctx.caches.project_settings_of(namespace).is_some() {
        return Ok(None);
    }
    let api: Api<ProjectSettings> = Api::namespaced(ctx.client.clone(), namespace);
    let params = PostParams {
        dry_run: false,
        field_manager: Some(FIELD_MANAGER.into()),
    };
    match api
        .create(&params, &default_project_settings(namespace))
        .await
    {
        Ok(_) => {
            tracing::info!(namespace, "created ProjectSettings for a managed namespace");
            Ok(None)
        }
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(None),
        Err(source) => Err(NamespaceError::CreateProjectSettings {
            namespace: namespace.into(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_project_settings_grant_no_group_access() {
        let settings = default_project_settings("team");
        assert_eq!(settings.metadata.name.as_deref(), Some("projectsettings"));
        assert_eq!(settings.metadata.namespace.as_deref(), Some("team"));
        assert!(settings.spec.group_access.is_empty());
    }
}
