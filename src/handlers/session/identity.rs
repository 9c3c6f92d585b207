//! Runner identity (SPEC §2.3): a ServiceAccount, a Role for what the platform asks of the
//! runner in its namespace, its RoleBinding, and the token Secret holding a TokenRequest-issued ServiceAccount token
//! (`k8s-token`, refreshed while the session runs) and a random `agui-token`.

use std::time::Instant;

use agentic_crds::{AgenticSession, keys, names};
use k8s_openapi::ByteString;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Resource, ResourceExt};

use super::SessionContext;
use super::SessionError;
use super::api::{api_error, create_owned, is_status};
use super::children::{build_role, build_role_binding, build_service_account, build_token_secret};
use crate::cache::projections::RunnerChild;

/// Lifetime asked for each runner token; refreshed well before it ends.
const TOKEN_LIFETIME_SECONDS: i64 = 3600;

/// Creates whatever part of the identity is missing; records the time in
/// `ambient_token_provision_duration_seconds`.
pub async fn ensure(
    session: &AgenticSession,
    namespace: &str,
    mlflow_kubernetes_auth: bool,
    ctx: &SessionContext,
) -> Result<(), SessionError> {
    let started = Instant::now();
    let client = ctx.client.clone();
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    create_owned(
        &accounts,
        &build_service_account(session),
        namespace,
        "ServiceAccount",
    )
    .await?;
    let roles: Api<Role> = Api::namespaced(client.clone(), namespace);
    create_owned(
        &roles,
        &build_role(session, mlflow_kubernetes_auth),
        namespace,
        "Role",
    )
    .await?;
    let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), namespace);
    create_owned(
        &bindings,
        &build_role_binding(session),
        namespace,
        "RoleBinding",
    )
    .await?;

    let name = session.name_any();
    let secret_name = names::token_secret_name(&name);
    // A cached Secret of another owner (an earlier session of the same name) is not ours:
    // create_owned replaces it if orphaned, or waits for its garbage collection.
    let ours = ctx
        .caches
        .secret(namespace, &secret_name)
        .is_some_and(|secret| secret.controller_uid() == session.meta().uid.as_deref());
    if !ours {
        let token = request_token(session, namespace, ctx).await?;
        let secret = build_token_secret(session, &token, &random_token(), Timestamp::now());
        let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
        create_owned(&secrets, &secret, namespace, "Secret").await?;
    }

    ctx.metrics
        .families()
        .token_provision_duration
        .with_label_values(&[namespace])
        .observe(started.elapsed().as_secs_f64());
    Ok(())
}

/// Records the identity's names on the session (`runner-token-secret`, `runner-sa`) if missing.
/// Runs after the status write: changing the session earlier would void that write's
/// resourceVersion guard.
pub async fn record(
    session: &AgenticSession,
    namespace: &str,
    ctx: &SessionContext,
) -> Result<(), SessionError> {
    let annotations = session.annotations();
    if annotations.contains_key(keys::RUNNER_TOKEN_SECRET_ANNOTATION)
        && annotations.contains_key(keys::RUNNER_SA_ANNOTATION)
    {
        return Ok(());
    }
    let name = session.name_any();
    let patch = serde_json::json!({"metadata": {"annotations": {
        keys::RUNNER_TOKEN_SECRET_ANNOTATION: names::token_secret_name(&name),
        keys::RUNNER_SA_ANNOTATION: names::service_account_name(&name),
    }}});
    super::patch_session(session, namespace, &Patch::Merge(&patch), ctx).await
}

/// Puts a fresh ServiceAccount token into the token Secret and stamps the refresh time.
pub async fn refresh(
    session: &AgenticSession,
    namespace: &str,
    ctx: &SessionContext,
) -> Result<(), SessionError> {
    let token = request_token(session, namespace, ctx).await?;
    let secret_name = names::token_secret_name(&session.name_any());
    let patch = serde_json::json!({
        "metadata": {"annotations": {keys::TOKEN_REFRESHED_AT_ANNOTATION: Timestamp::now().to_string()}},
        "data": {keys::TOKEN_SECRET_K8S_TOKEN_KEY: ByteString(token.into_bytes())},
    });
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    match secrets
        .patch(&secret_name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        // Gone: the next reconcile provisions the identity again.
        Err(e) if is_status(&e, 404) => Ok(()),
        Err(e) => Err(api_error("refresh", "Secret", namespace, &secret_name)(e)),
    }
}

async fn request_token(
    session: &AgenticSession,
    namespace: &str,
    ctx: &SessionContext,
) -> Result<String, SessionError> {
    let account = names::service_account_name(&session.name_any());
    let accounts: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), namespace);
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: None,
            expiration_seconds: Some(TOKEN_LIFETIME_SECONDS),
            bound_object_ref: None,
        }),
        ..Default::default()
    };
    let issued = accounts
        .create_token_request(&account, &PostParams::default(), &request)
        .await
        .map_err(api_error(
            "request token for",
            "TokenRequest",
            namespace,
            &account,
        ))?;
    issued
        .status
        .and_then(|s| s.token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| SessionError::EmptyToken {
            namespace: namespace.to_string(),
            service_account: account,
        })
}

/// 32 random bytes, hex encoded.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    // The OS random source failing is not recoverable in any useful way.
    getrandom::fill(&mut bytes).expect("the OS random number generator is available");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_tokens_are_long_and_distinct() {
        let (a, b) = (random_token(), random_token());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
    }
}
