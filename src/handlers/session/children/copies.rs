//! Copies of shared Secrets in a session's namespace (SPEC §5.1): the Vertex credentials,
//! Langfuse and MLflow settings, the Google OAuth client and the shared S3 keys live in the
//! backend's (or the operator's) namespace; a pod can only reference Secrets of its own.

use std::collections::BTreeMap;

use agentic_crds::{ProjectSettings, keys};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};

/// The copy of `source` for `namespace`: same name, type and data; labels
/// `app=ambient-code-runner` and `ambient-code.io/secret-copy=true` (so the operator's Secret
/// cache sees it and nothing else); annotations with the source and the source version it
/// holds; owned by the namespace's ProjectSettings when there is one (a copy serves every
/// session of the namespace, and goes with the project).
pub fn build_copy(source: &Secret, namespace: &str, owner: Option<&ProjectSettings>) -> Secret {
    let origin = format!(
        "{}/{}",
        source.namespace().unwrap_or_default(),
        source.name_any()
    );
    Secret {
        metadata: ObjectMeta {
            name: Some(source.name_any()),
            namespace: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([
                (keys::APP_LABEL.to_string(), keys::RUNNER_APP.to_string()),
                (keys::COPY_LABEL.to_string(), "true".to_string()),
            ])),
            annotations: Some(BTreeMap::from([
                (keys::COPIED_FROM_ANNOTATION.to_string(), origin),
                (
                    keys::COPIED_VERSION_ANNOTATION.to_string(),
                    source.resource_version().unwrap_or_default(),
                ),
            ])),
            owner_references: owner
                .and_then(|o| o.controller_owner_ref(&()))
                .map(|o| vec![o]),
            ..Default::default()
        },
        type_: source.type_.clone(),
        data: source.data.clone(),
        string_data: None,
        immutable: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    #[test]
    fn a_copy_keeps_the_data_and_says_where_and_which_version_it_came_from() {
        let source = Secret {
            metadata: ObjectMeta {
                name: Some("ambient-vertex".into()),
                namespace: Some("ambient-code".into()),
                resource_version: Some("42".into()),
                labels: Some([("team".to_string(), "x".to_string())].into()),
                ..Default::default()
            },
            type_: Some("Opaque".into()),
            data: Some([("key.json".to_string(), ByteString(b"{}".to_vec()))].into()),
            ..Default::default()
        };
        let mut settings = ProjectSettings::new(
            "projectsettings",
            agentic_crds::ProjectSettingsSpec::empty(),
        );
        settings.metadata.uid = Some("ps-uid".into());
        let copy = build_copy(&source, "team-a", Some(&settings));
        assert_eq!(copy.metadata.namespace.as_deref(), Some("team-a"));
        assert_eq!(copy.metadata.name.as_deref(), Some("ambient-vertex"));
        let annotations = copy.metadata.annotations.unwrap();
        assert_eq!(
            annotations["vteam.ambient-code/copied-from"],
            "ambient-code/ambient-vertex"
        );
        assert_eq!(annotations["vteam.ambient-code/copied-from-version"], "42");
        assert_eq!(
            copy.metadata.labels.unwrap()["ambient-code.io/secret-copy"],
            "true"
        );
        assert_eq!(copy.metadata.owner_references.unwrap()[0].uid, "ps-uid");
        assert_eq!(copy.data, source.data);
    }
}
