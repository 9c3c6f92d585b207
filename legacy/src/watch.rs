//! The list/watch state machine of one kind, and the loop that hands its changes over.
//!
//! [`WatchLoop::run`] reads and handles at once, in one task: every change is shown to the
//! caller's `observe` as soon as it is read (to keep the caller's cache current), and the work
//! `observe` names is handed to `handle` one item at a time, in the order it was read, each
//! awaited before the next ([`crate::backlog`] holds what is read but not yet handled). Reading
//! never waits for handling, so a slow handler never leaves the cache behind the stream, nor
//! the API server holding a watch the loop does not read.
//!
//! States: [`WatchState::Empty`] (nothing listed yet, or history lost) → list page by page,
//! handing over each page's new or changed objects before the next page is requested, then, for
//! objects known before but absent from every page, a synthesised deletion
//! ([`Change::Vanished`]) → [`WatchState::Watching`] from the list's resourceVersion,
//! advancing with every event and bookmark. To tell what changed across a relist the loop keeps
//! each object's name and resourceVersion, never the object: the caller's cache has those. A
//! watch that ends (server timeout, disconnect) resumes from the last version seen; 410 Gone (history compacted) sends the loop back to `Empty`; other errors are retried
//! after an exponential delay. Cancellation is checked at every wait.
//!
//! The caller may narrow what the loop holds with a filter ([`WatchLoop::with_filter`]): an
//! object the filter refuses counts as absent, so one that leaves the filter is reported
//! deleted (by its next event, or vanished from the next list). A new value on the relist
//! channel ([`WatchLoop::with_relist`]) sends the loop back to `Empty` at once, e.g. after the
//! caller changed the filter.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

use futures::TryStreamExt;
use kube::api::{ListParams, WatchEvent, WatchParams};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::backlog::Backlog;
use crate::retry::RetryDelays;

/// Page size of a list unless [`WatchLoop::with_page_size`] says otherwise.
const PAGE_SIZE: u32 = 500;
/// Server-side timeout of one watch request (the loop resumes after it).
const WATCH_TIMEOUT_SECONDS: u32 = 290;

/// What the handler is told.
#[derive(Debug, Clone, PartialEq)]
pub enum Change<K> {
    /// The object was added or modified (or is new or changed in a relist).
    Applied(K),
    /// The object was deleted (a watch event).
    Deleted(K),
    /// An object known before a relist is missing from it: it was deleted while the loop was
    /// away. Only its name is known here; the caller's cache holds the last state seen.
    Vanished(ObjectName),
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

/// Namespace (none for cluster-scoped kinds) and name of an object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectName {
    /// Namespace, `None` for a cluster-scoped object.
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
}

impl ObjectName {
    /// The name of `object`.
    pub fn of<K: Resource>(object: &K) -> Self {
        ObjectName {
            namespace: object.namespace(),
            name: object.name_any(),
        }
    }
}

/// The resourceVersion of every object the loop has handed over, by name.
type Known = BTreeMap<ObjectName, String>;

/// Which objects the loop holds (see [`WatchLoop::with_filter`]).
pub type Filter<K> = Box<dyn Fn(&K) -> bool + Send + Sync>;

/// One kind's list/watch loop. See the module docs for the states.
pub struct WatchLoop<K> {
    api: Api<K>,
    label_selector: Option<String>,
    field_selector: Option<String>,
    page_size: u32,
    modify: fn(&mut K),
    filter: Option<Filter<K>>,
    relist: Option<tokio::sync::watch::Receiver<u64>>,
    known: Known,
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
            page_size: PAGE_SIZE,
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

    /// Lists `size` objects a page (a page is held whole while it is parsed).
    #[must_use]
    pub fn with_page_size(mut self, size: u32) -> Self {
        self.page_size = size;
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
    /// stops accepting is reported deleted by its next event or vanished from the next list).
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

    /// Runs until `cancel` fires: each change goes to `observe` as soon as it is read; the work
    /// items `observe` returns go to `handle`, one at a time, in the order they were read. On
    /// cancellation the item being handled finishes; items not started are dropped.
    pub async fn run<W, O, H, Fut>(
        mut self,
        mut observe: O,
        mut handle: H,
        cancel: CancellationToken,
    ) where
        O: FnMut(Change<K>) -> Vec<W>,
        H: FnMut(W) -> Fut,
        Fut: Future<Output = ()>,
    {
        let backlog = Backlog::default();
        let reading = async {
            let mut hand_over = |change| backlog.extend(observe(change));
            self.read(&mut hand_over, &cancel).await;
        };
        let handling = async {
            loop {
                let item = tokio::select! {
                    biased;
                    _ = cancel.cancelled() => break,
                    item = backlog.next() => item,
                };
                handle(item).await;
            }
            if backlog.len() > 0 {
                tracing::info!(dropped = backlog.len(), "stopping with changes not handled");
            }
        };
        tokio::join!(reading, handling);
    }

    /// The state machine: list, watch, resume, relist, back off, until `cancel` fires.
    async fn read(&mut self, hand_over: &mut impl FnMut(Change<K>), cancel: &CancellationToken) {
        while !cancel.is_cancelled() {
            let step = match self.state.clone() {
                WatchState::Empty => self.relist(hand_over).await,
                WatchState::Watching { resource_version } => {
                    self.watch(resource_version, hand_over, cancel).await
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

    async fn relist(&mut self, hand_over: &mut impl FnMut(Change<K>)) -> Result<(), LegacyError> {
        let generation = self
            .relist
            .as_mut()
            .map_or(0, |relist| *relist.borrow_and_update());
        let mut params = ListParams::default().limit(self.page_size);
        if let Some(selector) = &self.label_selector {
            params = params.labels(selector);
        }
        if let Some(selector) = &self.field_selector {
            params = params.fields(selector);
        }
        let mut relist = RelistDiff::default();
        let mut resource_version = String::new();
        loop {
            let page = self.api.list(&params).await.map_err(LegacyError::List)?;
            resource_version = page
                .metadata
                .resource_version
                .clone()
                .unwrap_or(resource_version);
            let next = page.metadata.continue_.filter(|c| !c.is_empty());
            // Each page is handed over before the next is requested: the caller's cache takes
            // its objects while the page is the only copy of them held here.
            for mut item in page.items {
                if self.accepts(&item) {
                    (self.modify)(&mut item);
                    if let Some(name) = relist.listed(&self.known, &item) {
                        self.known
                            .insert(name, item.resource_version().unwrap_or_default());
                        hand_over(Change::Applied(item));
                    }
                }
            }
            match next {
                Some(token) => params = params.continue_token(&token),
                None => break,
            }
        }
        for name in relist.vanished(&self.known) {
            self.known.remove(&name);
            hand_over(Change::Vanished(name));
        }
        hand_over(Change::Listed {
            first: !self.listed_once,
            generation,
        });
        self.listed_once = true;
        self.state = WatchState::Watching { resource_version };
        Ok(())
    }

    async fn watch(
        &mut self,
        from: String,
        hand_over: &mut impl FnMut(Change<K>),
        cancel: &CancellationToken,
    ) -> Result<(), LegacyError> {
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
                biased;
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
                        self.remember(&object);
                        hand_over(Change::Applied(object));
                    } else if self.known.remove(&ObjectName::of(&object)).is_some() {
                        hand_over(Change::Deleted(object)); // it left the filter
                    }
                }
                WatchEvent::Deleted(mut object) => {
                    (self.modify)(&mut object);
                    self.advance(object.resource_version());
                    let known = self.known.remove(&ObjectName::of(&object)).is_some();
                    if known || self.accepts(&object) {
                        hand_over(Change::Deleted(object));
                    }
                }
                WatchEvent::Bookmark(bookmark) => {
                    self.advance(Some(bookmark.metadata.resource_version));
                }
                WatchEvent::Error(status) => return Err(LegacyError::WatchStatus(status)),
            }
        }
    }

    fn remember(&mut self, object: &K) {
        self.known.insert(
            ObjectName::of(object),
            object.resource_version().unwrap_or_default(),
        );
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

/// What a relist has read so far: the names of the objects it listed, page by page.
#[derive(Default)]
struct RelistDiff {
    present: BTreeSet<ObjectName>,
}

impl RelistDiff {
    /// Notes that `object` is in the list; returns its name when it is new or changed (by
    /// resourceVersion) against what was `known` before.
    fn listed<K: Resource>(&mut self, known: &Known, object: &K) -> Option<ObjectName> {
        let name = ObjectName::of(object);
        let changed = known
            .get(&name)
            .is_none_or(|version| object.resource_version().as_deref() != Some(version.as_str()));
        self.present.insert(name.clone());
        changed.then_some(name)
    }

    /// Once every page is read: the known objects no page listed (deleted while the loop was
    /// away).
    fn vanished(self, known: &Known) -> Vec<ObjectName> {
        known
            .keys()
            .filter(|name| !self.present.contains(*name))
            .cloned()
            .collect()
    }
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

    /// Lists `pages` against `known` the way the loop does: the changed objects of each page
    /// right after it, then what vanished.
    fn relist(known: &Known, pages: &[Vec<ConfigMap>]) -> (Vec<Vec<String>>, Vec<ObjectName>) {
        let mut diff = RelistDiff::default();
        let changed = pages
            .iter()
            .map(|page| {
                page.iter()
                    .filter(|object| diff.listed(known, *object).is_some())
                    .map(|object| object.name_any())
                    .collect()
            })
            .collect();
        (changed, diff.vanished(known))
    }

    #[test]
    fn relist_reports_new_and_changed_objects_page_by_page_then_what_vanished() {
        let known: Known = [
            ("same", "1"),
            ("edited", "1"),
            ("gone", "1"),
            ("later", "1"),
        ]
        .into_iter()
        .map(|(name, version)| (ObjectName::of(&object(name, "")), version.to_string()))
        .collect();
        let pages = [
            vec![object("same", "1"), object("edited", "2")],
            vec![object("new", "3"), object("later", "1")],
        ];
        let (changed, vanished) = relist(&known, &pages);
        assert_eq!(changed, vec![vec!["edited"], vec!["new"]]);
        assert_eq!(
            vanished,
            vec![ObjectName {
                namespace: Some("ns".into()),
                name: "gone".into()
            }]
        );
    }

    #[test]
    fn first_list_reports_everything_as_new() {
        let (changed, vanished) = relist(&Known::new(), &[vec![object("a", "1")]]);
        assert_eq!(changed, vec![vec!["a"]]);
        assert!(vanished.is_empty());
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
