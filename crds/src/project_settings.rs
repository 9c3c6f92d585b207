//! The `ProjectSettings` custom resource (`projectsettings.vteam.ambient-code/v1alpha1`): one per
//! managed namespace, named `projectsettings` (enforced by CEL), holding group access and
//! session defaults for the namespace.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{
    CustomResource,
    core::{Message, Rule},
};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::condition::Condition;
use crate::keys::PROJECT_SETTINGS_NAME;

/// Default `spec.inactivityTimeoutSeconds`: 24 hours.
pub const DEFAULT_INACTIVITY_TIMEOUT_SECONDS: i64 = 86_400;

/// Per-namespace settings: who may use the project, and defaults for its sessions.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "vteam.ambient-code",
    version = "v1alpha1",
    kind = "ProjectSettings",
    singular = "projectsetting",
    plural = "projectsettings",
    namespaced,
    shortname = "ps",
    status = "ProjectSettingsStatus",
    derive = "PartialEq",
    doc = "Settings of one project namespace; a singleton named `projectsettings`.",
    printcolumn(
        name = "Bindings",
        type_ = "integer",
        json_path = ".status.groupBindingsCreated"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = project_settings_name_rule()
)]
#[serde(rename_all = "camelCase")]
pub struct ProjectSettingsSpec {
    /// Groups granted access to the namespace; one RoleBinding `<groupName>-<role>` to
    /// ClusterRole `ambient-project-<role>` per entry (at most 256, unique by group and role).
    #[schemars(length(max = 256))]
    #[schemars(extend(
        "x-kubernetes-list-type" = "map",
        "x-kubernetes-list-map-keys" = ["groupName", "role"]
    ))]
    pub group_access: Vec<GroupAccess>,
    /// Default inactivity timeout of the namespace's sessions, in seconds; 0 disables
    /// auto-stop. A session's `spec.inactivityTimeout` overrides it.
    #[serde(default = "default_inactivity_timeout")]
    #[schemars(range(min = 0, max = 31_536_000))]
    pub inactivity_timeout_seconds: i64,
    /// Free-form MCP server configuration for the project (passed through, not interpreted by
    /// the operator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object_schema")]
    pub mcp_servers: Option<Value>,
    /// Name of the Secret in this namespace holding runner configuration (original CRD field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner_secrets_name: Option<String>,
    /// Git repositories configured for the project (original CRD field).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repositories: Vec<ProjectRepository>,
    /// Skills, commands, agents and workflows installed from external sources (original CRD
    /// field).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub installed_items: Vec<InstalledItem>,
    /// Kueue queueing of the project's runner Jobs. Absent: a Job starts as soon as it is
    /// made, as the original's did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kueue: Option<KueueSettings>,
}

/// Where the project's runner Jobs wait for admission, and at which priority.
///
/// With it, every runner Job is created suspended and labelled for Kueue
/// (`kueue.x-k8s.io/queue-name`, and `kueue.x-k8s.io/priority-class` when a class applies);
/// Kueue unsuspends it once the queue's quota admits it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KueueSettings {
    /// Name of the LocalQueue in this namespace (a DNS subdomain).
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub local_queue_name: String,
    /// WorkloadPriorityClass of interactive sessions (all but scheduled runs); none: the
    /// queue's default priority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub interactive_priority_class: Option<String>,
    /// WorkloadPriorityClass of scheduled runs (sessions labelled
    /// `ambient-code.io/scheduled-run=true`); none: the queue's default priority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub scheduled_priority_class: Option<String>,
}

impl KueueSettings {
    /// The priority class of a session: the scheduled class for a scheduled run, the
    /// interactive one otherwise.
    pub fn priority_class(&self, scheduled: bool) -> Option<&str> {
        match scheduled {
            true => self.scheduled_priority_class.as_deref(),
            false => self.interactive_priority_class.as_deref(),
        }
    }
}

impl ProjectSettingsSpec {
    /// The settings the operator creates in a newly managed namespace: no group access,
    /// default inactivity timeout.
    pub fn empty() -> Self {
        Self {
            group_access: Vec::new(),
            inactivity_timeout_seconds: DEFAULT_INACTIVITY_TIMEOUT_SECONDS,
            mcp_servers: None,
            runner_secrets_name: None,
            repositories: Vec::new(),
            installed_items: Vec::new(),
            kueue: None,
        }
    }
}

/// Access for one group.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupAccess {
    /// Group name (the RoleBinding subject); no `/` or `%`, since it becomes part of a name.
    #[schemars(length(min = 1, max = 240), regex(pattern = r"^[^/%]+$"))]
    pub group_name: String,
    /// Role granted to the group.
    pub role: GroupRole,
}

/// Role of a group in a project.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum GroupRole {
    /// Full control of the project.
    Admin,
    /// Create and manage sessions.
    Edit,
    /// Read only.
    View,
}

impl GroupRole {
    /// The wire form: `admin`, `edit` or `view`.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupRole::Admin => "admin",
            GroupRole::Edit => "edit",
            GroupRole::View => "view",
        }
    }
}

/// A repository configured for the project (original CRD field).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProjectRepository {
    /// Repository URL (HTTPS or SSH).
    pub url: String,
    /// Branch override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Hosting provider (detected from the URL when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<GitProvider>,
}

/// Git hosting provider.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum GitProvider {
    /// GitHub.
    Github,
    /// GitLab.
    Gitlab,
}

/// An item installed from an external source (original CRD field).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstalledItem {
    /// Git URL of the source repository.
    pub source_url: String,
    /// Branch of the source repository.
    #[serde(default = "default_source_branch")]
    pub source_branch: String,
    /// Base path within the repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_path: Option<String>,
    /// Item identifier.
    pub item_id: String,
    /// Kind of item.
    pub item_type: InstalledItemType,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_name: Option<String>,
    /// Path of the item file or directory within the repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_path: Option<String>,
}

/// Kind of installed item.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum InstalledItemType {
    /// A skill.
    Skill,
    /// A command.
    Command,
    /// An agent.
    Agent,
    /// A workflow.
    Workflow,
}

/// Observed state of the project settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProjectSettingsStatus {
    /// Number of group RoleBindings in place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub group_bindings_created: Option<i64>,
    /// Whether the `ambient-default-limits` LimitRange is in place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_range_ready: Option<bool>,
    /// Whether RBAC for scheduled-session triggers is provisioned (original CRD field, written
    /// by other components).
    #[serde(
        rename = "scheduledSessionRBACReady",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub scheduled_session_rbac_ready: Option<bool>,
    /// The Kueue settings in effect: `spec.kueue` as last reconciled (absent: runner Jobs are
    /// not queued).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kueue: Option<KueueSettings>,
    /// The `metadata.generation` last reconciled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the settings were last reconciled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reconciled_time: Option<Time>,
    /// Detailed conditions; at most one per type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// The CEL rule making `ProjectSettings` a singleton named `projectsettings`.
pub fn project_settings_name_rule() -> Rule {
    Rule::new(format!("self.metadata.name == '{PROJECT_SETTINGS_NAME}'")).message(Message::Message(
        format!("metadata.name must be '{PROJECT_SETTINGS_NAME}' (singleton per namespace)"),
    ))
}

fn free_form_object_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

fn default_inactivity_timeout() -> i64 {
    DEFAULT_INACTIVITY_TIMEOUT_SECONDS
}

fn default_source_branch() -> String {
    crate::session::DEFAULT_BRANCH.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::{CustomResourceExt, Resource};
    use serde_json::json;

    #[test]
    fn inactivity_timeout_defaults_to_a_day() {
        let spec: ProjectSettingsSpec =
            serde_json::from_value(json!({"groupAccess": []})).expect("valid spec");
        assert_eq!(spec, ProjectSettingsSpec::empty());
        assert_eq!(spec.inactivity_timeout_seconds, 86_400);
    }

    #[test]
    fn group_access_is_required() {
        assert!(serde_json::from_value::<ProjectSettingsSpec>(json!({})).is_err());
    }

    #[test]
    fn roles_serialize_lowercase() {
        let access: GroupAccess =
            serde_json::from_value(json!({"groupName": "devs", "role": "edit"}))
                .expect("valid entry");
        assert_eq!(access.role, GroupRole::Edit);
        assert_eq!(access.role.as_str(), "edit");
        assert!(
            serde_json::from_value::<GroupAccess>(json!({"groupName": "d", "role": "owner"}))
                .is_err()
        );
    }

    #[test]
    fn free_form_mcp_servers_and_original_fields_round_trip() {
        let spec = json!({
            "groupAccess": [{"groupName": "devs", "role": "admin"}],
            "inactivityTimeoutSeconds": 0,
            "mcpServers": {"anything": {"nested": [1, 2]}},
            "runnerSecretsName": "runner-secrets",
            "repositories": [{"url": "https://github.com/a/b", "provider": "github"}],
            "installedItems": [{"sourceUrl": "https://github.com/a/s", "sourceBranch": "main",
                                "itemId": "x", "itemType": "skill"}],
        });
        let parsed: ProjectSettingsSpec = serde_json::from_value(spec.clone()).expect("valid");
        assert_eq!(serde_json::to_value(&parsed).ok(), Some(spec));
    }

    #[test]
    fn status_keeps_the_original_rbac_field_name() {
        let status = ProjectSettingsStatus {
            scheduled_session_rbac_ready: Some(true),
            group_bindings_created: Some(2),
            limit_range_ready: Some(true),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&status).ok(),
            Some(json!({"groupBindingsCreated": 2, "limitRangeReady": true,
                        "scheduledSessionRBACReady": true}))
        );
    }

    fn admit(name: &str, spec: serde_json::Value) -> Result<(), Vec<String>> {
        let crd = ProjectSettings::crd();
        let schema = crd.spec.versions[0]
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref());
        let schema = serde_json::to_value(schema).expect("schema serializes");
        let object = json!({
            "apiVersion": "vteam.ambient-code/v1alpha1",
            "kind": "ProjectSettings",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": spec,
        });
        kube::core::cel::Validator::new()
            .validate(&schema, &object, None)
            .map_err(|errors| errors.iter().map(|e| e.to_string()).collect())
    }

    #[test]
    fn only_the_name_projectsettings_is_admitted() {
        assert_eq!(admit("projectsettings", json!({"groupAccess": []})), Ok(()));
        let errors = admit("other", json!({"groupAccess": []})).expect_err("rejected");
        assert!(
            errors[0].contains("must be 'projectsettings'"),
            "{errors:?}"
        );
    }

    #[test]
    fn the_schema_has_the_role_enum_and_timeout_default() {
        let crd = serde_json::to_value(ProjectSettings::crd()).expect("serializes");
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        assert_eq!(spec["required"], json!(["groupAccess"]));
        let props = &spec["properties"];
        assert_eq!(
            props["groupAccess"]["items"]["properties"]["role"]["enum"],
            json!(["admin", "edit", "view"])
        );
        assert_eq!(props["inactivityTimeoutSeconds"]["default"], json!(86_400));
        assert_eq!(props["inactivityTimeoutSeconds"]["minimum"], json!(0.0));
        assert_eq!(
            props["mcpServers"]["x-kubernetes-preserve-unknown-fields"],
            json!(true)
        );
    }

    #[test]
    fn resource_names_match_the_keys_module() {
        use crate::keys;
        assert_eq!(ProjectSettings::kind(&()), keys::PROJECT_SETTINGS_KIND);
        assert_eq!(ProjectSettings::plural(&()), keys::PROJECT_SETTINGS_PLURAL);
        assert_eq!(ProjectSettings::api_version(&()), keys::API_VERSION);
        assert_eq!(
            ProjectSettings::crd_name(),
            "projectsettings.vteam.ambient-code"
        );
    }
}
