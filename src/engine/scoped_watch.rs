//! A watch of one namespaced kind that follows this replica's shard scope (`--sharding`)
//! without stopping for it. It runs one or more *sources*: kube watchers whose requests carry
//! the shard selector of their own buckets. Every bucket of the scope has exactly one source,
//! so a bucket's events stay in order and none is applied twice.
//!
//! - A scope that shrinks: each source keeps what remains of its buckets (its requests still
//!   carry the old selector; events of buckets it lost are dropped), a source left with none
//!   stops, and the cache forgets what left through the watch's event handler.
//! - A scope that grows: a new source lists and watches only the gained buckets, while the
//!   running sources go on delivering, so sessions already held never wait for that list.
//! - Before the first list completed, or when a change would need more than [`MAX_SOURCES`]
//!   sources, the watch restarts instead with one source for the whole scope.
//!
//! The first list goes through the cache's writer as kube's reflector does (swapped in whole
//! at its end). Every later list (a new source's, or a relist after 410 Gone) covers only part
//! of the cache: its objects are applied one by one when it completes, then the objects of its
//! buckets it no longer lists are deleted. The handler sees them as `InitApply` (keys go to the
//! queue's low lane) and `Delete`, never as `Init`/`InitDone`, which would make the indexes
//! replace what the other sources hold.

use std::collections::HashSet;
use std::sync::Arc;

use crate::cache::Writer;
use futures::StreamExt;
use futures::stream::{BoxStream, SelectAll};
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Resource};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{SyncTracker, WatchedKind};
use crate::cache::Slim;
use crate::observability::health::WatchReporter;
use crate::shard::{BucketSet, Scope, ShardSelector, WatchSlot};

/// Most sources one watch runs at once (each is a list-watch connection); a growth beyond
/// restarts the watch with one.
pub const MAX_SOURCES: usize = 4;

/// A watch of `K` that follows the gate's scope; see the module doc.
pub(crate) struct ScopedWatch<K: Resource<DynamicType = ()> + Clone + 'static, A, F> {
    /// The watch's name (logs, health).
    pub(crate) what: &'static str,
    /// Where the watch reports; every source's client reports here too.
    pub(crate) health: WatchReporter,
    /// What each source's client is built from.
    pub(crate) client_config: kube::Config,
    /// The API a source's client reaches.
    pub(crate) api: A,
    /// Selectors and page size of every source.
    pub(crate) config: watcher::Config,
    /// The cache.
    pub(crate) writer: Writer<K>,
    /// Called for every event after the cache applied it.
    pub(crate) on_event: F,
    /// Where the watch reports the scope its cache holds.
    pub(crate) slot: WatchSlot,
    /// The scopes to follow (the coordinator published the first before the engine started).
    pub(crate) scopes: watch::Receiver<Scope>,
    /// Counts the watch's first list towards the start of the workers.
    pub(crate) synced: Arc<SyncTracker>,
    /// Stops the watch.
    pub(crate) shutdown: CancellationToken,
}

/// One source: the buckets it alone delivers, and the list it is in.
struct Source<K> {
    id: u64,
    buckets: BucketSet,
    /// Objects of a list not complete yet (after the watch's first list).
    listing: Vec<K>,
    /// Whether a list of this source completed.
    listed: bool,
    stop: CancellationToken,
}

type SourceEvent<K> = (u64, Result<Event<K>, watcher::Error>);

impl<K, A, F> ScopedWatch<K, A, F>
where
    K: WatchedKind,
    A: Fn(kube::Client) -> Api<K> + Send + 'static,
    F: Fn(&Event<K>) + Send + 'static,
{
    /// Runs until shutdown.
    pub(crate) async fn run(mut self) {
        let Scope {
            buckets: mut scope,
            mut generation,
        } = *self.scopes.borrow_and_update();
        let mut streams: SelectAll<BoxStream<'static, SourceEvent<K>>> = SelectAll::new();
        let mut sources: Vec<Source<K>> = Vec::new();
        let mut next_id = 0;
        let mut first_sync = true;
        let mut following = true;
        self.start_source(&mut streams, &mut sources, &mut next_id, scope);
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => {
                    self.health.stopped();
                    return;
                }
                changed = self.scopes.changed(), if following => {
                    if changed.is_err() {
                        following = false; // the coordinator is gone: shutting down
                        continue;
                    }
                    let Scope { buckets: next, generation: next_generation } =
                        *self.scopes.borrow_and_update();
                    let gained = next.difference(&scope);
                    let restart = first_sync
                        || (!gained.is_empty() && sources.len() >= MAX_SOURCES);
                    if !next.is_subset(&scope) || restart {
                        tracing::debug!(watch = self.what, buckets = %next, restart, "shard scope changed");
                    }
                    if restart {
                        for source in sources.drain(..) {
                            source.stop.cancel();
                        }
                    } else {
                        sources.retain_mut(|source| {
                            source.buckets = source.buckets.intersection(&next);
                            if source.buckets.is_empty() {
                                source.stop.cancel();
                            }
                            !source.buckets.is_empty()
                        });
                    }
                    if !first_sync && !scope.is_subset(&next) {
                        purge(&mut self.writer, &next, &self.on_event);
                    }
                    if restart {
                        self.start_source(&mut streams, &mut sources, &mut next_id, next);
                    } else if !gained.is_empty() {
                        self.start_source(&mut streams, &mut sources, &mut next_id, gained);
                    }
                    scope = next;
                    generation = next_generation;
                    self.report(&sources, first_sync, generation);
                }
                Some((id, next)) = streams.next() => {
                    let Some(source) = sources.iter_mut().find(|source| source.id == id) else {
                        continue; // stopped since
                    };
                    let event = match next {
                        Ok(event) => event,
                        Err(error) => {
                            self.health.failed(&error);
                            tracing::warn!(watch = self.what, %error, "watch error; retrying");
                            continue;
                        }
                    };
                    self.health.succeeded();
                    if first_sync {
                        if !in_buckets(&event, &source.buckets) {
                            continue;
                        }
                        self.writer.apply_watcher_event(&event);
                        (self.on_event)(&event);
                        if matches!(event, Event::InitDone) {
                            self.synced.mark(true);
                            first_sync = false;
                            source.listed = true;
                            self.report(&sources, first_sync, generation);
                        }
                        continue;
                    }
                    match event {
                        Event::Init => source.listing.clear(),
                        // Without the server's filter a list holds every bucket.
                        Event::InitApply(object) => {
                            if is_in(&object, &source.buckets) {
                                source.listing.push(object);
                            }
                        }
                        Event::InitDone => {
                            let listing = std::mem::take(&mut source.listing);
                            let buckets = source.buckets;
                            source.listed = true;
                            apply_list(&mut self.writer, &buckets, listing, &self.on_event);
                            self.synced.mark(false);
                            self.report(&sources, first_sync, generation);
                        }
                        Event::Apply(_) | Event::Delete(_) => {
                            if in_buckets(&event, &source.buckets) {
                                self.writer.apply_watcher_event(&event);
                                (self.on_event)(&event);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Starts a source delivering `buckets` (nothing for the empty set).
    fn start_source(
        &self,
        streams: &mut SelectAll<BoxStream<'static, SourceEvent<K>>>,
        sources: &mut Vec<Source<K>>,
        next_id: &mut u64,
        buckets: BucketSet,
    ) {
        if buckets.is_empty() {
            return;
        }
        let selector = ShardSelector::default();
        selector.set(buckets);
        let client = match kube::client::ClientBuilder::try_from(self.client_config.clone()) {
            Ok(builder) => builder
                .with_layer(&self.health.answers())
                .with_layer(&selector)
                .build(),
            Err(error) => {
                // Built from the config its first client was built from: not expected.
                self.health.failed(&error);
                tracing::error!(watch = self.what, %error, %buckets, "no client for a new shard source");
                return;
            }
        };
        let id = *next_id;
        *next_id += 1;
        let stop = CancellationToken::new();
        let stream = watcher::watcher((self.api)(client), self.config.clone())
            .default_backoff()
            .modify(Slim::slim);
        #[cfg(feature = "fault-injection")]
        let stream = hold_back_list(stream, id, self.what, buckets);
        let stream = stream
            .take_until(stop.clone().cancelled_owned())
            .map(move |event| (id, event))
            .boxed();
        streams.push(stream);
        sources.push(Source {
            id,
            buckets,
            listing: Vec::new(),
            listed: false,
            stop,
        });
    }

    /// Reports, for the scope of `generation`, the buckets the cache holds: those of every
    /// source that has listed. A source's buckets only shrink after it started, so each was
    /// listed after it last joined the scope this watch followed.
    fn report(&self, sources: &[Source<K>], first_sync: bool, generation: u64) {
        if first_sync {
            return;
        }
        let held = sources
            .iter()
            .filter(|source| source.listed)
            .fold(BucketSet::EMPTY, |held, source| held.union(&source.buckets));
        self.slot.synced(generation, held);
    }
}

/// Test-only ([`super::fault_injection::gained_list_hold`]): the first list of a source that
/// is not the watch's first is held back, as a slow list of those buckets would be.
#[cfg(feature = "fault-injection")]
fn hold_back_list<K: Send + 'static>(
    stream: impl futures::Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static,
    id: u64,
    what: &'static str,
    buckets: BucketSet,
) -> BoxStream<'static, Result<Event<K>, watcher::Error>> {
    let Some(hold) = super::fault_injection::gained_list_hold().filter(|_| id > 0) else {
        return stream.boxed();
    };
    let mut held = false;
    stream
        .then(move |event| {
            let first_list_done = !held && matches!(event, Ok(Event::InitDone));
            held |= first_list_done;
            async move {
                if first_list_done {
                    tokio::time::sleep(hold).await;
                    tracing::warn!(watch = what, %buckets, "injected fault: held-back list released");
                }
                event
            }
        })
        .boxed()
}

/// Whether `event` concerns an object of `buckets` (`Init` and `InitDone` always do).
pub fn in_buckets<K: Resource>(event: &Event<K>, buckets: &BucketSet) -> bool {
    match event {
        Event::InitApply(object) | Event::Apply(object) | Event::Delete(object) => {
            is_in(object, buckets)
        }
        Event::Init | Event::InitDone => true,
    }
}

fn is_in<K: Resource>(object: &K, buckets: &BucketSet) -> bool {
    object
        .meta()
        .namespace
        .as_deref()
        .is_some_and(|namespace| buckets.contains_namespace(namespace))
}

/// Applies a completed list of one source's `buckets` to a cache that holds other buckets too:
/// its objects (of those buckets) as applied, then every cached object of those buckets it no
/// longer has as deleted; the handler sees the deletions, then the list's objects as
/// `InitApply`.
fn apply_list<K, F>(writer: &mut Writer<K>, buckets: &BucketSet, listing: Vec<K>, on_event: &F)
where
    K: Resource<DynamicType = ()> + Clone,
    F: Fn(&Event<K>),
{
    let mut listed = HashSet::with_capacity(listing.len());
    let mut applied = Vec::with_capacity(listing.len());
    for object in listing {
        if !is_in(&object, buckets) {
            continue;
        }
        listed.insert(ObjectRef::from_obj(&object));
        let event = Event::Apply(object);
        writer.apply_watcher_event(&event);
        if let Event::Apply(object) = event {
            applied.push(Event::InitApply(object));
        }
    }
    let gone: Vec<_> = writer
        .as_reader()
        .state()
        .into_iter()
        .filter(|object| {
            is_in(&**object, buckets) && !listed.contains(&ObjectRef::from_obj(&**object))
        })
        .collect();
    for object in gone {
        let event = Event::Delete(K::clone(&object));
        writer.apply_watcher_event(&event);
        on_event(&event);
    }
    for event in &applied {
        on_event(event);
    }
}

/// Deletes from a watch's cache every object outside `scope`, through the watch's own event
/// handler (indexes and fingerprints follow).
pub fn purge<K, F>(writer: &mut Writer<K>, scope: &BucketSet, on_event: &F)
where
    K: Resource<DynamicType = ()> + Clone,
    F: Fn(&Event<K>),
{
    let leaving: Vec<_> = writer
        .as_reader()
        .state()
        .into_iter()
        .filter(|object| !is_in(&**object, scope))
        .collect();
    for object in leaving {
        let event = Event::Delete(K::clone(&object));
        writer.apply_watcher_event(&event);
        on_event(&event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;
    use std::sync::Mutex;

    fn map(namespace: &str, name: &str, value: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                namespace: Some(namespace.into()),
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            data: Some([("v".to_string(), value.to_string())].into()),
            ..ConfigMap::default()
        }
    }

    /// Namespaces in two different buckets.
    fn two_namespaces() -> (String, String) {
        let first = "ns-0".to_string();
        let bucket = crate::shard::bucket_of(&first);
        let second = (1..)
            .map(|i| format!("ns-{i}"))
            .find(|name| crate::shard::bucket_of(name) != bucket)
            .unwrap();
        (first, second)
    }

    #[test]
    fn a_partial_list_replaces_only_its_own_buckets() {
        let (mine, theirs) = two_namespaces();
        let mut writer: Writer<ConfigMap> = Writer::default();
        for event in [
            Event::Init,
            Event::InitApply(map(&mine, "kept", "old")),
            Event::InitApply(map(&mine, "gone", "x")),
            Event::InitApply(map(&theirs, "other", "x")),
            Event::InitDone,
        ] {
            writer.apply_watcher_event(&event);
        }
        let buckets: BucketSet = [crate::shard::bucket_of(&mine)].into_iter().collect();
        let seen = Mutex::new(Vec::new());
        let listing = vec![
            map(&mine, "kept", "new"),
            map(&mine, "added", "x"),
            map(&theirs, "stray", "x"), // not this source's: ignored
        ];
        apply_list(&mut writer, &buckets, listing, &|event: &Event<
            ConfigMap,
        >| {
            let (kind, object) = match event {
                Event::InitApply(object) => ("list", object),
                Event::Delete(object) => ("delete", object),
                other => panic!("unexpected {other:?}"),
            };
            seen.lock()
                .unwrap()
                .push(format!("{kind} {}", object.metadata.name.clone().unwrap()));
        });
        assert_eq!(
            seen.into_inner().unwrap(),
            ["delete gone", "list kept", "list added"]
        );
        let mut names: Vec<_> = writer
            .as_reader()
            .state()
            .iter()
            .map(|m| {
                format!(
                    "{}/{}={}",
                    m.metadata.namespace.as_deref().unwrap(),
                    m.metadata.name.as_deref().unwrap(),
                    m.data.as_ref().unwrap()["v"]
                )
            })
            .collect();
        names.sort();
        let mut expected = vec![
            format!("{mine}/added=x"),
            format!("{mine}/kept=new"),
            format!("{theirs}/other=x"),
        ];
        expected.sort();
        assert_eq!(names, expected);
    }

    #[test]
    fn purge_forgets_what_left_the_scope() {
        let (mine, theirs) = two_namespaces();
        let mut writer: Writer<ConfigMap> = Writer::default();
        for object in [map(&mine, "a", "x"), map(&theirs, "b", "x")] {
            writer.apply_watcher_event(&Event::Apply(object));
        }
        let scope: BucketSet = [crate::shard::bucket_of(&mine)].into_iter().collect();
        let deleted = Mutex::new(Vec::new());
        purge(&mut writer, &scope, &|event: &Event<ConfigMap>| {
            if let Event::Delete(object) = event {
                deleted
                    .lock()
                    .unwrap()
                    .push(object.metadata.name.clone().unwrap());
            }
        });
        assert_eq!(deleted.into_inner().unwrap(), ["b"]);
        assert_eq!(writer.as_reader().state().len(), 1);
    }
}
