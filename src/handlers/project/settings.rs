//! ProjectSettings reconcile (SPEC §2.6): one RoleBinding `<groupName>-<role>` per `groupAccess`
//! entry, bound to ClusterRole `ambient-project-<role>`; bindings this operator made that are no
//! longer listed are pruned (the original never pruned: stale access); LimitRange
//! `ambient-default-limits`; the NetworkPolicy `runner-allow-backend-only` (SPEC §5.2); the
//! `ambient-session-trigger` ServiceAccount, Role and RoleBinding scheduled sessions run as
//! (SPEC §5.7); status fields and conditions. Everything made here is owned by the ProjectSettings, so it goes with
//! it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use agentic_crds::condition::{reasons, types};
use agentic_crds::{Condition, ConditionStatus, ProjectSettings, keys, names, set_condition};
use k8s_openapi::api::core::v1::{LimitRange, LimitRangeItem, LimitRangeSpec, ServiceAccount};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};

use crate::context::{Context, FIELD_MANAGER};

/// Why a ProjectSettings reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum ProjectSettingsError {
    /// An API call failed.
    #[error("{action} in namespace {namespace}: {source}")]
    Api {
        /// What was attempted.
        action: String,
        /// The namespace.
        namespace: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

fn managed_labels() -> BTreeMap<String, String> {
    BTreeMap::from([(
        keys::MANAGED_BY_LABEL.to_string(),
        keys::MANAGED_BY_VALUE.to_string(),
    )])
}

/// The RoleBindings the settings ask for, by name.
pub fn desired_role_bindings(settings: &ProjectSettings) -> BTreeMap<String, RoleBinding> {
    let namespace = settings.namespace();
    settings
        .spec
        .group_access
        .iter()
        .map(|access| {
            let role = access.role.as_str();
            let name = names::group_role_binding_name(&access.group_name, role);
            let binding = RoleBinding {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: namespace.clone(),
                    labels: Some(managed_labels()),
                    owner_references: settings.controller_owner_ref(&()).map(|o| vec![o]),
                    ..Default::default()
                },
                role_ref: RoleRef {
                    api_group: Some("rbac.authorization.k8s.io".into()),
                    kind: "ClusterRole".into(),
                    name: names::project_cluster_role_name(role),
                },
                subjects: Some(vec![Subject {
                    kind: "Group".into(),
                    name: access.group_name.clone(),
                    api_group: Some("rbac.authorization.k8s.io".into()),
                    namespace: None,
                }]),
            };
            (name, binding)
        })
        .collect()
}

/// The namespace's default container limits.
pub fn default_limit_range(settings: &ProjectSettings) -> LimitRange {
    let quantities = |cpu: &str, memory: &str| {
        BTreeMap::from([
            ("cpu".to_string(), Quantity(cpu.into())),
            ("memory".to_string(), Quantity(memory.into())),
        ])
    };
    LimitRange {
        metadata: ObjectMeta {
            name: Some(keys::LIMIT_RANGE_NAME.into()),
            namespace: settings.namespace(),
            labels: Some(managed_labels()),
            owner_references: settings.controller_owner_ref(&()).map(|o| vec![o]),
            ..Default::default()
        },
        spec: Some(LimitRangeSpec {
            limits: vec![LimitRangeItem {
                type_: "Container".into(),
                default_request: Some(quantities("250m", "256Mi")),
                default: Some(quantities("2", "4Gi")),
                ..Default::default()
            }],
        }),
    }
}

/// The NetworkPolicy of a managed namespace: runner pods (`app=ambient-code-runner`) accept
/// ingress only from the backend's namespace and the operator's, on their `agui` port — by
/// name, so whatever port a runtime uses is the one admitted (the original hard-coded 8001).
pub fn runner_network_policy(
    settings: &ProjectSettings,
    backend_namespace: &str,
    operator_namespace: &str,
) -> NetworkPolicy {
    let mut labels = BTreeMap::from([
        (keys::APP_LABEL.to_string(), keys::PLATFORM_APP.to_string()),
        (
            keys::MANAGED_BY_OPERATOR_LABEL.to_string(),
            keys::MANAGED_BY_OPERATOR_VALUE.to_string(),
        ),
    ]);
    labels.extend(managed_labels());
    let from_namespace = |name: &str| NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                "kubernetes.io/metadata.name".to_string(),
                name.to_string(),
            )])),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut peers = vec![from_namespace(backend_namespace)];
    if operator_namespace != backend_namespace {
        peers.push(from_namespace(operator_namespace));
    }
    NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(keys::RUNNER_NETWORK_POLICY.into()),
            namespace: settings.namespace(),
            labels: Some(labels),
            owner_references: settings.controller_owner_ref(&()).map(|o| vec![o]),
            ..Default::default()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    keys::APP_LABEL.to_string(),
                    keys::RUNNER_APP.to_string(),
                )])),
                ..Default::default()
            }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(peers),
                ports: Some(vec![NetworkPolicyPort {
                    protocol: Some("TCP".into()),
                    port: Some(IntOrString::String(keys::AGUI_PORT_NAME.into())),
                    end_port: None,
                }]),
            }]),
            egress: None,
        }),
    }
}

/// What `session-trigger` runs as in the namespace: ServiceAccount, Role and RoleBinding, all
/// named `ambient-session-trigger`, labelled `ambient-code.io/managed=true` (not the group
/// bindings' managed-by label: the group binding pruning must never see this one) and owned by
/// the settings. The Role allows what the trigger does with sessions and nothing else: list
/// them, create one, get and update one to restart it (the backend's check on a prompt for a
/// running session is `update` on it too).
pub fn session_trigger_rbac(settings: &ProjectSettings) -> (ServiceAccount, Role, RoleBinding) {
    let metadata = ObjectMeta {
        name: Some(keys::SESSION_TRIGGER_NAME.into()),
        namespace: settings.namespace(),
        labels: Some(BTreeMap::from([(
            keys::MANAGED_NAMESPACE_LABEL.to_string(),
            keys::MANAGED_NAMESPACE_VALUE.to_string(),
        )])),
        owner_references: settings.controller_owner_ref(&()).map(|o| vec![o]),
        ..Default::default()
    };
    let account = ServiceAccount {
        metadata: metadata.clone(),
        ..Default::default()
    };
    let role = Role {
        metadata: metadata.clone(),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![keys::GROUP.into()]),
            resources: Some(vec![keys::AGENTIC_SESSION_PLURAL.into()]),
            verbs: ["create", "get", "list", "update"]
                .map(String::from)
                .to_vec(),
            ..Default::default()
        }]),
    };
    let binding = RoleBinding {
        metadata,
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: keys::SESSION_TRIGGER_NAME.into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: keys::SESSION_TRIGGER_NAME.into(),
            namespace: settings.namespace(),
            api_group: None,
        }]),
    };
    (account, role, binding)
}

/// Brings RoleBindings, LimitRange, the runner NetworkPolicy, the session trigger's RBAC and
/// status in line with the namespace's ProjectSettings.
pub async fn reconcile(
    namespace: &str,
    ctx: &Context,
) -> Result<Option<Duration>, ProjectSettingsError> {
    if !ctx.caches.is_managed(namespace) {
        return Ok(None);
    }
    let Some(settings) = ctx.caches.project_settings_of(namespace) else {
        return Ok(None);
    };
    let fail = |action: String| {
        move |source| ProjectSettingsError::Api {
            action,
            namespace: namespace.to_string(),
            source,
        }
    };
    let apply = PatchParams::apply(FIELD_MANAGER).force();

    let bindings: Api<RoleBinding> = Api::namespaced(ctx.client.clone(), namespace);
    let desired = desired_role_bindings(&settings);
    for (name, binding) in &desired {
        bindings
            .patch(name, &apply, &Patch::Apply(binding))
            .await
            .map_err(fail(format!("apply RoleBinding {name}")))?;
    }
    let selector = format!("{}={}", keys::MANAGED_BY_LABEL, keys::MANAGED_BY_VALUE);
    let existing = bindings
        .list_metadata(&ListParams::default().labels(&selector))
        .await
        .map_err(fail("list RoleBindings".into()))?;
    let keep: BTreeSet<&String> = desired.keys().collect();
    for stale in existing.items.iter().map(|b| b.name_any()) {
        if !keep.contains(&stale) {
            match bindings.delete(&stale, &DeleteParams::default()).await {
                Ok(_) => tracing::info!(
                    namespace,
                    binding = stale,
                    "pruned a stale group RoleBinding"
                ),
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(fail(format!("delete RoleBinding {stale}"))(e)),
            }
        }
    }

    let limits: Api<LimitRange> = Api::namespaced(ctx.client.clone(), namespace);
    limits
        .patch(
            keys::LIMIT_RANGE_NAME,
            &apply,
            &Patch::Apply(&default_limit_range(&settings)),
        )
        .await
        .map_err(fail("apply LimitRange".into()))?;

    let policies: Api<NetworkPolicy> = Api::namespaced(ctx.client.clone(), namespace);
    let policy = runner_network_policy(
        &settings,
        &ctx.config.backend_namespace,
        &ctx.config.args.namespace,
    );
    policies
        .patch(keys::RUNNER_NETWORK_POLICY, &apply, &Patch::Apply(&policy))
        .await
        .map_err(fail("apply NetworkPolicy".into()))?;

    let (account, role, binding) = session_trigger_rbac(&settings);
    let name = keys::SESSION_TRIGGER_NAME;
    Api::<ServiceAccount>::namespaced(ctx.client.clone(), namespace)
        .patch(name, &apply, &Patch::Apply(&account))
        .await
        .map_err(fail(format!("apply ServiceAccount {name}")))?;
    Api::<Role>::namespaced(ctx.client.clone(), namespace)
        .patch(name, &apply, &Patch::Apply(&role))
        .await
        .map_err(fail(format!("apply Role {name}")))?;
    bindings
        .patch(name, &apply, &Patch::Apply(&binding))
        .await
        .map_err(fail(format!("apply RoleBinding {name}")))?;

    let mut status = settings.status.clone().unwrap_or_default();
    let before = status.clone();
    let now = Time(Timestamp::now());
    let generation = settings.meta().generation;
    status.group_bindings_created = Some(i64::try_from(desired.len()).unwrap_or(i64::MAX));
    status.limit_range_ready = Some(true);
    status.scheduled_session_rbac_ready = Some(true);
    // In effect only when the operator watches Workloads (`--kueue`); otherwise Jobs start at once.
    status.kueue = settings
        .spec
        .kueue
        .clone()
        .filter(|_| ctx.config.args.kueue);
    set_condition(
        &mut status.conditions,
        Condition::new(
            types::GROUP_BINDINGS_READY,
            ConditionStatus::True,
            reasons::PROVISIONED,
            format!("{} group RoleBindings in place", desired.len()),
        )
        .with_observed_generation(generation),
        &now,
    );
    set_condition(
        &mut status.conditions,
        Condition::new(
            types::LIMIT_RANGE_READY,
            ConditionStatus::True,
            reasons::PROVISIONED,
            format!("LimitRange {} in place", keys::LIMIT_RANGE_NAME),
        )
        .with_observed_generation(generation),
        &now,
    );
    set_condition(
        &mut status.conditions,
        Condition::new(
            types::SCHEDULED_SESSION_RBAC_READY,
            ConditionStatus::True,
            reasons::PROVISIONED,
            format!("ServiceAccount, Role and RoleBinding {name} in place"),
        )
        .with_observed_generation(generation),
        &now,
    );
    status.observed_generation = generation;
    if status != before {
        let api: Api<ProjectSettings> = Api::namespaced(ctx.client.clone(), namespace);
        let patch = serde_json::json!({ "status": {
            "groupBindingsCreated": status.group_bindings_created,
            "limitRangeReady": status.limit_range_ready,
            "scheduledSessionRBACReady": status.scheduled_session_rbac_ready,
            "kueue": status.kueue, // null removes it once spec.kueue is gone
            "observedGeneration": status.observed_generation,
            "conditions": status.conditions,
        }});
        match api
            .patch_status(
                keys::PROJECT_SETTINGS_NAME,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(fail("update ProjectSettings status".into())(e)),
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentic_crds::{GroupAccess, GroupRole, ProjectSettingsSpec};

    fn settings(access: &[(&str, GroupRole)]) -> ProjectSettings {
        let mut spec = ProjectSettingsSpec::empty();
        spec.group_access = access
            .iter()
            .map(|(group, role)| GroupAccess {
                group_name: group.to_string(),
                role: *role,
            })
            .collect();
        let mut settings = ProjectSettings::new("projectsettings", spec);
        settings.metadata.namespace = Some("team".into());
        settings.metadata.uid = Some("uid-ps".into());
        settings
    }

    #[test]
    fn one_binding_per_group_access_entry_to_the_project_cluster_role() {
        let bindings = desired_role_bindings(&settings(&[
            ("devs", GroupRole::Edit),
            ("leads", GroupRole::Admin),
        ]));
        assert_eq!(
            bindings.keys().collect::<Vec<_>>(),
            vec!["devs-edit", "leads-admin"]
        );
        let devs = &bindings["devs-edit"];
        assert_eq!(devs.role_ref.kind, "ClusterRole");
        assert_eq!(devs.role_ref.name, "ambient-project-edit");
        let subject = &devs.subjects.as_ref().unwrap()[0];
        assert_eq!(
            (subject.kind.as_str(), subject.name.as_str()),
            ("Group", "devs")
        );
        assert_eq!(
            devs.metadata.labels.as_ref().unwrap()[keys::MANAGED_BY_LABEL],
            keys::MANAGED_BY_VALUE,
            "marked so that pruning finds only what the operator made"
        );
        assert!(devs.metadata.owner_references.is_some());
    }

    #[test]
    fn runners_admit_only_the_backend_and_the_operator_on_their_agui_port() {
        let policy = runner_network_policy(&settings(&[]), "ambient-code", "operators");
        assert_eq!(
            policy.metadata.name.as_deref(),
            Some("runner-allow-backend-only")
        );
        let labels = policy.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["app"], "ambient-code");
        assert_eq!(labels["ambient-code.io/managed-by"], "operator");
        assert!(
            policy.metadata.owner_references.is_some(),
            "goes with the ProjectSettings"
        );
        let spec = policy.spec.unwrap();
        assert_eq!(
            spec.pod_selector.unwrap().match_labels.unwrap()["app"],
            "ambient-code-runner"
        );
        let rule = &spec.ingress.unwrap()[0];
        let namespaces: Vec<_> = rule
            .from
            .iter()
            .flatten()
            .map(|p| {
                p.namespace_selector.clone().unwrap().match_labels.unwrap()
                    ["kubernetes.io/metadata.name"]
                    .clone()
            })
            .collect();
        assert_eq!(namespaces, ["ambient-code", "operators"]);
        let port = &rule.ports.as_ref().unwrap()[0];
        assert_eq!(port.port, Some(IntOrString::String("agui".into())));
        let same = runner_network_policy(&settings(&[]), "ambient-code", "ambient-code");
        assert_eq!(
            same.spec.unwrap().ingress.unwrap()[0]
                .from
                .as_ref()
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn the_session_trigger_may_only_list_create_get_and_update_sessions() {
        let (account, role, binding) = session_trigger_rbac(&settings(&[]));
        for metadata in [&account.metadata, &role.metadata, &binding.metadata] {
            assert_eq!(metadata.name.as_deref(), Some("ambient-session-trigger"));
            assert_eq!(metadata.namespace.as_deref(), Some("team"));
            let labels = metadata.labels.as_ref().unwrap();
            assert_eq!(labels["ambient-code.io/managed"], "true");
            assert!(
                !labels.contains_key(keys::MANAGED_BY_LABEL),
                "the group binding pruning lists that label: it would delete this binding"
            );
            let owner = &metadata.owner_references.as_ref().unwrap()[0];
            assert_eq!(
                (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
                ("ProjectSettings", "uid-ps", Some(true))
            );
        }
        let rules = role.rules.unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].api_groups, Some(vec!["vteam.ambient-code".into()]));
        assert_eq!(rules[0].resources, Some(vec!["agenticsessions".into()]));
        assert_eq!(rules[0].verbs, ["create", "get", "list", "update"]);
        assert_eq!(rules[0].resource_names, None);
        assert_eq!(
            (
                binding.role_ref.kind.as_str(),
                binding.role_ref.name.as_str()
            ),
            ("Role", "ambient-session-trigger")
        );
        let subject = &binding.subjects.unwrap()[0];
        assert_eq!(
            (
                subject.kind.as_str(),
                subject.name.as_str(),
                subject.namespace.as_deref()
            ),
            ("ServiceAccount", "ambient-session-trigger", Some("team"))
        );
    }

    #[test]
    fn limit_range_has_the_contract_defaults() {
        let range = default_limit_range(&settings(&[]));
        let item = &range.spec.unwrap().limits[0];
        assert_eq!(item.type_, "Container");
        let request = item.default_request.as_ref().unwrap();
        assert_eq!(request["cpu"].0, "250m");
        assert_eq!(request["memory"].0, "256Mi");
        let limit = item.default.as_ref().unwrap();
        assert_eq!(limit["cpu"].0, "2");
        assert_eq!(limit["memory"].0, "4Gi");
    }
}
