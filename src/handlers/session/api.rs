//! API helpers shared by the session handler: create a child the session owns (never adopting
//! someone else's), delete exactly one object, and classify API errors.
//!
//! Ownership is decided by the controller ownerReference's UID, never by name: a child left by
//! an earlier session of the same name is either still owned by that session (its garbage
//! collection is running: wait) or an orphan (deleted with `--cascade=orphan`: replace it).

use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::{Api, Resource, ResourceExt};

use super::SessionError;
use crate::context::FIELD_MANAGER;

/// A closure that wraps a kube error with what was being done.
pub(crate) fn api_error<'a>(
    action: &'static str,
    kind: &'static str,
    namespace: &'a str,
    name: &'a str,
) -> impl FnOnce(kube::Error) -> SessionError + 'a {
    move |source| SessionError::Api {
        action,
        kind,
        namespace: namespace.to_string(),
        name: name.to_string(),
        source,
    }
}

/// Whether an API error is the given HTTP status.
pub(crate) fn is_status(error: &kube::Error, code: u16) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == code)
}

/// Whether the API server refused the request for a reason that retrying will not change by
/// itself (bad request, forbidden, quota, too large, invalid): worth showing on the session.
/// Conflicts, throttling, missing objects, server errors and broken connections are not.
pub(crate) fn is_persisting(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if matches!(status.code, 400 | 403 | 413 | 422))
}

/// The UID of `object`'s controller ownerReference.
fn controller_uid<K: Resource>(object: &K) -> Option<&str> {
    object
        .meta()
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.as_str())
}

/// Creates `object`, whose controller owner must be `owner_uid`. If an object of that name
/// exists already: ours — success; another owner's — [`SessionError::NotOurs`] (retried until
/// garbage collection removes it); an orphan — deleted (exactly that one, by UID) and ours
/// created in its place.
pub(crate) async fn create_owned<K>(
    api: &Api<K>,
    object: &K,
    namespace: &str,
    kind: &'static str,
) -> Result<(), SessionError>
where
    K: Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let name = object.name_any();
    let owner = controller_uid(object).unwrap_or_default().to_string();
    let params = PostParams {
        dry_run: false,
        field_manager: Some(FIELD_MANAGER.into()),
    };
    let mut replaced_orphan = false;
    loop {
        // Only after replacing an orphan is a second create tried.
        match api.create(&params, object).await {
            Ok(_) => return Ok(()),
            Err(e) if is_status(&e, 409) => {}
            Err(e) => return Err(api_error("create", kind, namespace, &name)(e)),
        }
        let existing = api
            .get_metadata_opt(&name)
            .await
            .map_err(api_error("get", kind, namespace, &name))?;
        let Some(existing) = existing else {
            // Gone between the create and the read: the world moved on since this reconcile
            // planned (e.g. the run it was creating a Job for finished and its Job was
            // retired). Never create again on that plan: the next reconcile decides afresh.
            return Err(SessionError::ChangedMeanwhile {
                kind,
                namespace: namespace.to_string(),
                name,
            });
        };
        match controller_uid(&existing) {
            Some(uid) if uid == owner => return Ok(()),
            Some(_) => {
                return Err(SessionError::NotOurs {
                    kind,
                    namespace: namespace.to_string(),
                    name,
                });
            }
            None if replaced_orphan || existing.meta().deletion_timestamp.is_some() => {
                return Err(SessionError::NotOurs {
                    kind,
                    namespace: namespace.to_string(),
                    name,
                });
            }
            None => {
                tracing::warn!(
                    kind,
                    namespace,
                    name,
                    "replacing an orphan left under this session's name"
                );
                let uid = existing.uid().unwrap_or_default();
                delete_exactly(
                    api,
                    &name,
                    &uid,
                    &DeleteParams::background(),
                    namespace,
                    kind,
                )
                .await?;
                replaced_orphan = true;
            }
        }
    }
}

/// Deletes `name` only if it is still the object with `uid` (a UID precondition: an object
/// made since under the same name is never touched). Gone, or replaced, counts as success.
pub(crate) async fn delete_exactly<K>(
    api: &Api<K>,
    name: &str,
    uid: &str,
    params: &DeleteParams,
    namespace: &str,
    kind: &'static str,
) -> Result<(), SessionError>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(uid.to_string()),
            resource_version: None,
        }),
        ..params.clone()
    };
    delete_if_present(api, name, &params, namespace, kind).await
}

/// Deletes `name`; an object already gone (or, with a precondition, replaced) counts as
/// success.
pub(crate) async fn delete_if_present<K>(
    api: &Api<K>,
    name: &str,
    params: &DeleteParams,
    namespace: &str,
    kind: &'static str,
) -> Result<(), SessionError>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, params).await {
        Ok(_) => Ok(()),
        Err(e) if is_status(&e, 404) => Ok(()),
        Err(e) if is_status(&e, 409) && params.preconditions.is_some() => Ok(()),
        Err(e) => Err(api_error("delete", kind, namespace, name)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure("refused", "Reason")
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn refusals_that_retrying_cannot_fix_are_persisting_and_the_rest_transient() {
        for code in [400, 403, 413, 422] {
            assert!(is_persisting(&api_error(code)), "{code}");
        }
        for code in [404, 409, 429, 500, 503] {
            assert!(!is_persisting(&api_error(code)), "{code}");
        }
    }
}
