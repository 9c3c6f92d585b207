//! The caches' object stores: what kube's reflector store does, keyed by `(namespace, name)`.
//!
//! kube's `reflector::Store` keys each object by an `ObjectRef`, which holds four strings of its
//! own (name, namespace, and the object's uid and resourceVersion, copied from the object on
//! every write though lookups ignore them): about 250 bytes a cached object before the object
//! itself, paid for each of the five kinds a Running session has in the caches. This store keys
//! an object by its name within its namespace's map: one short string per object.
//!
//! Semantics are kube's, so either engine feeds it the same watcher events: `Apply` and
//! `Delete` change the readable map at once; `Init` starts a new list, `InitApply` fills it aside,
//! `InitDone` swaps it in whole (readers see the old list until then, never half of the new one).

use std::collections::HashMap;
use std::sync::Arc;

use kube::Resource;
use kube::runtime::watcher::Event;
use parking_lot::RwLock;

/// Objects by namespace (`""` for cluster-scoped kinds), then by name.
type Objects<K> = HashMap<Box<str>, HashMap<Box<str>, Arc<K>>>;

/// Read side of one cache; cheap to clone, always the writer's current view.
pub struct Store<K> {
    objects: Arc<RwLock<Objects<K>>>,
}

impl<K> Clone for Store<K> {
    fn clone(&self) -> Self {
        Store {
            objects: self.objects.clone(),
        }
    }
}

impl<K> Store<K> {
    /// The object `name` in `namespace` (`""` for a cluster-scoped kind).
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        self.objects.read().get(namespace)?.get(name).cloned()
    }

    /// The first object of `namespace` that `matches`, in no particular order.
    pub fn find_in(&self, namespace: &str, matches: impl Fn(&K) -> bool) -> Option<Arc<K>> {
        let objects = self.objects.read();
        objects
            .get(namespace)?
            .values()
            .find(|object| matches(object))
            .cloned()
    }

    /// Every cached object, in no particular order.
    pub fn state(&self) -> Vec<Arc<K>> {
        let objects = self.objects.read();
        objects
            .values()
            .flat_map(|by_name| by_name.values().cloned())
            .collect()
    }

    /// How many objects are cached.
    pub fn len(&self) -> usize {
        self.objects.read().values().map(HashMap::len).sum()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Write side of one cache, owned by the watch loop that feeds it.
pub struct Writer<K> {
    objects: Arc<RwLock<Objects<K>>>,
    /// The list in progress between `Init` and `InitDone`.
    listing: Objects<K>,
}

impl<K> Default for Writer<K> {
    fn default() -> Self {
        Writer {
            objects: Arc::default(),
            listing: HashMap::new(),
        }
    }
}

impl<K: Resource + Clone> Writer<K> {
    /// A reader of this cache.
    pub fn as_reader(&self) -> Store<K> {
        Store {
            objects: self.objects.clone(),
        }
    }

    /// Applies one watcher event (see the module doc for what each does).
    pub fn apply_watcher_event(&mut self, event: &Event<K>) {
        match event {
            Event::Apply(object) => insert(&mut self.objects.write(), object),
            Event::Delete(object) => remove(&mut self.objects.write(), object),
            Event::Init => self.listing = HashMap::new(),
            Event::InitApply(object) => insert(&mut self.listing, object),
            Event::InitDone => {
                let listed = std::mem::take(&mut self.listing);
                // The old map is dropped after the lock is released.
                let _old = std::mem::replace(&mut *self.objects.write(), listed);
            }
        }
    }
}

/// The object's namespace (`""` when cluster-scoped) and name.
fn key_of<K: Resource>(object: &K) -> (&str, &str) {
    let meta = object.meta();
    (
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default(),
    )
}

fn insert<K: Resource + Clone>(objects: &mut Objects<K>, object: &K) {
    let (namespace, name) = key_of(object);
    let object = Arc::new(object.clone());
    match objects.get_mut(namespace) {
        Some(by_name) => match by_name.get_mut(name) {
            Some(slot) => *slot = object,
            None => {
                by_name.insert(name.into(), object);
            }
        },
        None => {
            objects.insert(namespace.into(), HashMap::from([(name.into(), object)]));
        }
    }
}

fn remove<K: Resource>(objects: &mut Objects<K>, object: &K) {
    let (namespace, name) = key_of(object);
    if let Some(by_name) = objects.get_mut(namespace) {
        by_name.remove(name);
        if by_name.is_empty() {
            objects.remove(namespace);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
    use kube::api::ObjectMeta;

    fn config_map(namespace: &str, name: &str, value: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                ..ObjectMeta::default()
            },
            data: Some([("v".to_string(), value.to_string())].into()),
            ..ConfigMap::default()
        }
    }

    fn value(store: &Store<ConfigMap>, namespace: &str, name: &str) -> Option<String> {
        let object = store.get(namespace, name)?;
        object.data.as_ref()?.get("v").cloned()
    }

    #[test]
    fn apply_replaces_and_delete_removes_by_namespace_and_name() {
        let mut writer = Writer::default();
        let store = writer.as_reader();
        writer.apply_watcher_event(&Event::Apply(config_map("a", "x", "1")));
        writer.apply_watcher_event(&Event::Apply(config_map("b", "x", "2")));
        writer.apply_watcher_event(&Event::Apply(config_map("a", "x", "3")));
        assert_eq!(value(&store, "a", "x").as_deref(), Some("3"));
        assert_eq!(value(&store, "b", "x").as_deref(), Some("2"));
        assert_eq!(store.len(), 2);

        writer.apply_watcher_event(&Event::Delete(config_map("a", "x", "3")));
        assert_eq!(store.get("a", "x"), None);
        assert_eq!(value(&store, "b", "x").as_deref(), Some("2"));
        assert_eq!(store.state().len(), 1);
        assert!(
            !store.objects.read().contains_key("a"),
            "an emptied namespace is dropped"
        );

        // Deleting what is not there changes nothing.
        writer.apply_watcher_event(&Event::Delete(config_map("c", "y", "0")));
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn a_list_replaces_the_cache_whole_only_when_it_is_done() {
        let mut writer = Writer::default();
        let store = writer.as_reader();
        writer.apply_watcher_event(&Event::Apply(config_map("a", "old", "1")));
        writer.apply_watcher_event(&Event::Init);
        writer.apply_watcher_event(&Event::InitApply(config_map("a", "new", "2")));
        assert_eq!(value(&store, "a", "old").as_deref(), Some("1"));
        assert_eq!(store.get("a", "new"), None, "readers never see half a list");

        writer.apply_watcher_event(&Event::InitDone);
        assert_eq!(store.get("a", "old"), None, "what the list lacks is gone");
        assert_eq!(value(&store, "a", "new").as_deref(), Some("2"));
        assert_eq!(store.len(), 1);

        // A second list starts from nothing, not from the first one's leftovers.
        writer.apply_watcher_event(&Event::Init);
        writer.apply_watcher_event(&Event::InitDone);
        assert!(store.is_empty());
    }

    #[test]
    fn cluster_scoped_objects_are_read_under_the_empty_namespace() {
        let mut writer = Writer::<Namespace>::default();
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some("project".into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        writer.apply_watcher_event(&Event::Apply(namespace));
        assert!(writer.as_reader().get("", "project").is_some());
        assert!(writer.as_reader().get("project", "project").is_none());
    }
}
