//! The list/watch state machine of one kind.
//!
//! States: [`WatchState::Empty`] (nothing listed yet, or history lost) → list every page, hand
//! over every new or changed object and, for objects known before but absent now, a synthesised
//! deletion → [`WatchState::Watching`] from the list's resourceVersion, advancing with every event
//! and bookmark. A watch that ends (server timeout, disconnect) resumes from the last version
//! seen; 410 Gone (history compacted) sends the loop back to `Empty`; other errors are retried
//! after an exponential delay. Cancellation is checked at every wait.
//!
//! The caller may narrow what the loop holds with a filter ([`WatchLoop::with_filter`]): an
//! object the filter refuses counts as absent, so one that leaves the filter is reported
//! deleted by the next list. A new value on the relist channel ([`WatchLoop::with_relist`])
//! sends the loop back to `Empty` at once, e.g. after the caller changed the filter.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

use futures::TryStreamExt;
use kube::api::{ListParams, WatchEvent, WatchParams};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::retry::RetryDelays;

/// Page size of a list.
const PAGE_SIZE: u32 = 500;
/// Server-side timeout of one watch request (the loop resumes after it).
const WATCH_TIMEOUT_SECONDS: u32 = 290;

/// What the handler is told.
#[derive(Debug, Clone, PartialEq)]
pub enum Change<K> {
    /// The object was added or modified (or is new or changed in a relist).
    Applied(K),
    /// The object is gone (a watch event, or missing from a relist).
    Deleted(K),
    /// A list completed; `first` is true for the first one. The handler has now seen everything.
    Listed {
        /// Whether this was the loop's first complete list.
        first: bool,
        /// The relist channel's value when the list started (0 without a channel).
        generation: u64,
    },
}

/// Where the loop stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchState {
    /// Needs a full list.
    Empty,
    /// Watching from this resourceVersion.
    Watching {
        /// The last version seen.
        resource_version: String,
    },
}

/// Why a list or watch step failed.
#[derive(Debug, thiserror::Error)]
pub enum LegacyError {
    /// Listing failed.
    #[error("list: {0}")]
    List(#[source] kube::Error),
    /// Starting or reading the watch failed.
    #[error("watch: {0}")]
    Watch(#[source] kube::Error),
    /// The server ended the watch with an error status.
    #[error("watch ended by the server: {} ({})", .0.message, .0.code)]
    WatchStatus(Box<kube::core::Status>),
}

impl LegacyError {
    /// Whether the server said the requested history is gone (410): relist.
    pub fn is_gone(&self) -> bool {
        match self {
            LegacyError::List(kube::Error::Api(s)) | LegacyError::Watch(kube::Error::Api(s)) => {
                s.code == 410
            }
            LegacyError::WatchStatus(s) => s.code == 410,
            _ => false,
        }
    }
}

type Key = (Option<String>, String);

/// Which objects the loop holds (see [`WatchLoop::with_filter`]).
pub type Filter<K> = Box<dyn Fn(&K) -> bool + Send + Sync>;

fn key_of<K: Resource>(object: &K) -> Key {
    (object.namespace(), object.name_any())
}

/// One kind's list/watch loop. See the module docs for the states.
pub struct WatchLoop<K> {
    api: Api<K>,
    label_selector: Option<String>,
    field_selector: Option<String>,
    modify: fn(&mut K),
    filter: Option<Filter<K>>,
    relist: Option<tokio::sync::watch::Receiver<u64>>,
    known: BTreeMap<Key, K>,
    state: WatchState,
    delays: RetryDelays,
    listed_once: bool,
}

impl<K> WatchLoop<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    /// A loop over `api`, optionally restricted by a label selector.
    pub fn new(api: Api<K>, label_selector: Option<String>) -> Self {
        WatchLoop {
            api,
            label_selector,
            field_selector: None,
            modify: |_| {},
            filter: None,
            relist: None,
            known: BTreeMap::new(),
            state: WatchState::Empty,
            delays: RetryDelays::new(Duration::from_millis(200), Duration::from_secs(30)),
            listed_once: false,
        }
    }

    /// Restricts the loop to objects matching a field selector too (e.g. `metadata.name=x`).
    #[must_use]
    pub fn with_field_selector(mut self, selector: String) -> Self {
        self.field_selector = Some(selector);
        self
    }

    /// Applies `modify` to every object before it is remembered or handed over (e.g. to drop
    /// fields the handler never reads).
    #[must_use]
    pub fn with_modifier(mut self, modify: fn(&mut K)) -> Self {
        self.modify = modify;
        self
    }

    /// Holds only objects `filter` accepts; the others count as absent (an object the filter
    /// stops accepting is reported deleted by the next list).
    #[must_use]
    pub fn with_filter(mut self, filter: Filter<K>) -> Self {
        self.filter = Some(filter);
        self
    }

    /// Relists (from `Empty`) whenever `relist` receives a new value; the value is reported in
    /// the next [`Change::Listed`].
    #[must_use]
    pub fn with_relist(mut self, relist: tokio::sync::watch::Receiver<u64>) -> Self {
        self.relist = Some(relist);
        self
    }

    fn accepts(&self, object: &K) -> bool {
        self.filter.as_ref().is_none_or(|filter| filter(object))
    }

    /// The current state.
    pub fn state(&self) -> &WatchState {
        &self.state
    }

    /// Runs until `cancel` fires, awaiting `handler` for every change before reading the next.
    pub async fn run<H, Fut>(mut self, mut handler: H, cancel: CancellationToken)
    where
        H: FnMut(Change<K>) -> Fut,
        Fut: Future<Output = ()>,
    {
        while !cancel.is_cancelled() {
            let step = match self.state.clone() {
                WatchState::Empty => self.relist(&mut handler, &cancel).await,
                WatchState::Watching { resource_version } => {
                    self.watch(resource_version, &mut handler, &cancel).await
                }
            };
            match step {
                Ok(()) => self.delays.reset(),
                Err(error) if error.is_gone() => {
                    tracing::info!(%error, "watch history is gone; relisting");
                    self.state = WatchState::Empty;
                }
                Err(error) => {
                    let delay = self.delays.next_delay();
                    tracing::warn!(%error, ?delay, "watch failed; retrying");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    async fn relist<H, Fut>(
        &mut self,
        handler: &mut H,
        cancel: &CancellationToken,
    ) -> Result<(), LegacyError>
    where
        H: FnMut(Change<K>) -> Fut,
        Fut: Future<Output = ()>,
    {
        let generation = self
            .relist
            .as_mut()
            .map_or(0, |relist| *relist.borrow_and_update());
        let mut params = ListParams::default().limit(PAGE_SIZE);
        if let Some(selector) = &self.label_selector {
            params = params.labels(selector);
        }
        if let Some(selector) = &self.field_selector {
            params = params.fields(selector);
        }
        let mut listed = Vec::new();
        let mut resource_version = String::new();
        loop {
            let page = self.api.list(&params).await.map_err(LegacyError::List)?;
            resource_version = page
                .metadata
                .resource_version
                .clone()
                .unwrap_or(resource_version);
            for mut item in page.items {
                if self.accepts(&item) {
                    (self.modify)(&mut item);
                    listed.push(item);
                }
            }
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => break,
            }
        }
        let (changed, deleted) = diff_relist(&self.known, listed);
        for object in deleted {
            self.known.remove(&key_of(&object));
            handler(Change::Deleted(object)).await;
        }
        for object in changed {
            self.known.insert(key_of(&object), object.clone());
            handler(Change::Applied(object)).await;
            if cancel.is_cancelled() {
                return Ok(());
            }
        }
        handler(Change::Listed {
            first: !self.listed_once,
            generation,
        })
        .await;
        self.listed_once = true;
        self.state = WatchState::Watching { resource_version };
        Ok(())
    }

    async fn watch<H, Fut>(
        &mut self,
        from: String,
        handler: &mut H,
        cancel: &CancellationToken,
    ) -> Result<(), LegacyError>
    where
        H: FnMut(Change<K>) -> Fut,
        Fut: Future<Output = ()>,
    {
        let mut params = WatchParams::default().timeout(WATCH_TIMEOUT_SECONDS);
        if let Some(selector) = &self.label_selector {
            params = params.labels(selector);
        }
        if let Some(selector) = &self.field_selector {
            params = params.fields(selector);
        }
        let stream = self
            .api
            .watch(&params, &from)
            .await
            .map_err(LegacyError::Watch)?;
        let mut stream = std::pin::pin!(stream);
        let mut relist = self.relist.clone();
        loop {
            let next = tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                Some(()) = relist_requested(&mut relist) => {
                    self.state = WatchState::Empty;
                    return Ok(());
                }
                next = stream.try_next() => next.map_err(LegacyError::Watch)?,
            };
            let Some(event) = next else {
                return Ok(()); // server timeout: resume from the last version seen
            };
            match event {
                WatchEvent::Added(mut object) | WatchEvent::Modified(mut object) => {
                    (self.modify)(&mut object);
                    self.advance(object.resource_version());
                    if self.accepts(&object) {
                        self.known.insert(key_of(&object), object.clone());
                        handler(Change::Applied(object)).await;
                    } else if let Some(known) = self.known.remove(&key_of(&object)) {
                        handler(Change::Deleted(known)).await;
                    }
                }
                WatchEvent::Deleted(mut object) => {
                    (self.modify)(&mut object);
                    self.advance(object.resource_version());
                    if self.known.remove(&key_of(&object)).is_some() || self.accepts(&object) {
                        handler(Change::Deleted(object)).await;
                    }
                }
                WatchEvent::Bookmark(bookmark) => {
                    self.advance(Some(bookmark.metadata.resource_version));
                }
                WatchEvent::Error(status) => return Err(LegacyError::WatchStatus(status)),
            }
        }
    }

    fn advance(&mut self, resource_version: Option<String>) {
        if let Some(resource_version) = resource_version {
            self.state = WatchState::Watching { resource_version };
        }
    }
}

/// Resolves when the relist channel has a new value (never without a channel, or once its
/// sender is gone).
async fn relist_requested(relist: &mut Option<tokio::sync::watch::Receiver<u64>>) -> Option<()> {
    if let Some(relist) = relist
        && relist.changed().await.is_ok()
    {
        return Some(());
    }
    std::future::pending().await
}

/// Compares a fresh list with what was known: objects new or changed (by resourceVersion), and
/// known objects missing from the list (deleted while the loop was away).
pub fn diff_relist<K: Resource + Clone>(
    known: &BTreeMap<Key, K>,
    listed: Vec<K>,
) -> (Vec<K>, Vec<K>) {
    let present: BTreeSet<Key> = listed.iter().map(key_of).collect();
    let deleted = known
        .iter()
        .filter(|(key, _)| !present.contains(*key))
        .map(|(_, object)| object.clone())
        .collect();
    let changed = listed
        .into_iter()
        .filter(|object| {
            known
                .get(&key_of(object))
                .is_none_or(|old| old.resource_version() != object.resource_version())
        })
        .collect();
    (changed, deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;

    fn object(name: &str, version: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                resource_version: Some(version.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn names(objects: &[ConfigMap]) -> Vec<String> {
        objects.iter().map(|o| o.name_any()).collect()
    }

    #[test]
    fn relist_reports_new_changed_and_vanished_objects() {
        let known: BTreeMap<Key, ConfigMap> = [
            object("same", "1"),
            object("edited", "1"),
            object("gone", "1"),
        ]
        .into_iter()
        .map(|o| (key_of(&o), o))
        .collect();
        let listed = vec![
            object("same", "1"),
            object("edited", "2"),
            object("new", "3"),
        ];
        let (changed, deleted) = diff_relist(&known, listed);
        assert_eq!(names(&changed), vec!["edited", "new"]);
        assert_eq!(names(&deleted), vec!["gone"]);
    }

    #[test]
    fn first_list_reports_everything_as_new() {
        let (changed, deleted) = diff_relist(&BTreeMap::new(), vec![object("a", "1")]);
        assert_eq!(names(&changed), vec!["a"]);
        assert!(deleted.is_empty());
    }

    #[test]
    fn only_410_means_history_is_gone() {
        let gone = kube::core::Status {
            code: 410,
            ..Default::default()
        };
        assert!(LegacyError::WatchStatus(Box::new(gone)).is_gone());
        let other = kube::core::Status {
            code: 500,
            ..Default::default()
        };
        assert!(!LegacyError::WatchStatus(Box::new(other)).is_gone());
    }
}
