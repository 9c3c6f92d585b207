//! The runner's own identity on the real control plane: the token the operator issues lets
//! the runner do what the platform asks of it (SPEC §2.3) and nothing on Secrets.
//!
//! The backend checks the runner's token for `list` on sessions in the namespace and `get` /
//! `update` on its session; the runner's session tools list, get, create, stop and start
//! sessions (patch/update). The original granted every Secret of the namespace to every
//! runner, other sessions' tokens included; here a runner cannot read any Secret.

mod support;

use std::time::Duration;

use agentic_crds::{AgenticSession, Phase};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use support::operator::{Engine, create, operator, session, wait_for_phase};
use support::{ClusterInfo, TestNamespace};

const LIMIT: Duration = Duration::from_secs(60);

/// A client that authenticates with `token` against the test cluster.
async fn client_with_token(cluster: &ClusterInfo, token: String) -> Client {
    let kubeconfig = Kubeconfig::read_from(&cluster.kubeconfig).expect("the admin kubeconfig");
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("a client configuration");
    config.auth_info = kube::config::AuthInfo {
        token: Some(token.into()),
        ..Default::default()
    };
    Client::try_from(config).expect("a client")
}

/// Whether the caller may `verb` the `resource` (of `group`, optionally named) in `namespace`.
async fn may(
    client: &Client,
    namespace: &str,
    group: &str,
    resource: &str,
    verb: &str,
    name: Option<&str>,
) -> bool {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(namespace.into()),
                group: Some(group.into()),
                resource: Some(resource.into()),
                verb: Some(verb.into()),
                name: name.map(str::to_string),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("a SelfSubjectAccessReview")
        .status
        .is_some_and(|s| s.allowed)
}

#[tokio::test]
async fn the_runner_token_can_do_what_the_platform_needs_and_read_no_secret() {
    let cluster = ClusterInfo::from_env();
    operator(&cluster, Engine::Queue, &[]);
    let ns = TestNamespace::create(&cluster, "runner-access").await;
    for name in ["mine", "other"] {
        create(
            &ns.client,
            &ns.name,
            &session(name, &[("SIM_OUTCOME", "hang")]),
        )
        .await;
    }
    for name in ["mine", "other"] {
        wait_for_phase(&ns.client, &ns.name, name, Phase::Running, LIMIT).await;
    }
    let secret = ns
        .api::<Secret>()
        .get("ambient-runner-token-mine")
        .await
        .expect("the runner's token Secret");
    let token = String::from_utf8(secret.data.expect("data")["k8s-token"].0.clone())
        .expect("a UTF-8 token");
    let runner = client_with_token(&cluster, token).await;
    let group = agentic_crds::keys::GROUP;
    let sessions = agentic_crds::keys::AGENTIC_SESSION_PLURAL;

    // What the backend checks before every project call, and the session tools' verbs.
    for verb in ["get", "list", "watch", "create", "update", "patch"] {
        assert!(
            may(&runner, &ns.name, group, sessions, verb, None).await,
            "the runner may {verb} sessions"
        );
    }
    for verb in ["get", "update", "patch"] {
        assert!(
            may(&runner, &ns.name, group, sessions, verb, Some("mine")).await,
            "the runner may {verb} its own session"
        );
    }
    // Nothing more: no deleting sessions, nothing on Secrets.
    assert!(!may(&runner, &ns.name, group, sessions, "delete", Some("other")).await);
    for verb in ["get", "list", "watch"] {
        assert!(
            !may(&runner, &ns.name, "", "secrets", verb, None).await,
            "the runner may not {verb} Secrets"
        );
    }

    // And real requests, as the runner makes them.
    let as_runner: Api<AgenticSession> = Api::namespaced(runner.clone(), &ns.name);
    let listed = as_runner
        .list(&ListParams::default())
        .await
        .expect("the runner lists sessions");
    assert_eq!(listed.items.len(), 2);
    as_runner
        .patch(
            "other",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"annotations": {
                agentic_crds::keys::DESIRED_PHASE_ANNOTATION: "Stopped"
            }}})),
        )
        .await
        .expect("the runner's session tools stop a session");
    let denied = Api::<Secret>::namespaced(runner, &ns.name)
        .get("ambient-runner-token-other")
        .await
        .expect_err("another session's token is not the runner's to read");
    assert!(
        matches!(&denied, kube::Error::Api(status) if status.code == 403),
        "{denied}"
    );
}
