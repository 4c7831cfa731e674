//! The versions of the ConfigMaps that hold modules, so that a Transform of a ConfigMap
//! module reads its ConfigMap from the API server only when it changed: the controller's
//! ConfigMap watch (which wakes the Transforms of an edited ConfigMap, and asks for the
//! ConfigMaps' metadata only: their data is read by the Transforms that use them) records
//! every ConfigMap's resourceVersion here before any Transform is woken, and each read records
//! the version its content came from. A reconcile whose ConfigMap is still at the version
//! read takes the content from the module cache: a fleet of Transforms on one ConfigMap
//! module, reconciled again and again (their graphs' readiness, a relist), sends no GET.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroUsize;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher::Event;

/// What the watch sends of a ConfigMap: its metadata, not its data.
pub type ConfigMapMeta = PartialObjectMeta<ConfigMap>;

/// A ConfigMap: namespace and name.
type Key = (String, String);

/// How many reads are remembered: far more ConfigMap modules than a cluster has.
const READS: NonZeroUsize = NonZeroUsize::new(4096).expect("non-zero");

/// What the watch shows of ConfigMaps, and what was read of them.
#[derive(Debug)]
pub struct ConfigMapVersions {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Every ConfigMap the watch shows, at its resourceVersion.
    current: HashMap<Key, String>,
    /// The ConfigMaps a relist has shown so far (None: no relist under way).
    relisted: Option<HashSet<Key>>,
    /// The version each ConfigMap module was last read at, and its content's digest.
    read: lru::LruCache<Key, (String, String)>,
}

impl Default for ConfigMapVersions {
    fn default() -> Self {
        ConfigMapVersions {
            state: Mutex::new(State {
                current: HashMap::new(),
                relisted: None,
                read: lru::LruCache::new(READS),
            }),
        }
    }
}

fn key(config_map: &ConfigMapMeta) -> Key {
    (
        config_map.namespace().unwrap_or_default(),
        config_map.name_any(),
    )
}

impl ConfigMapVersions {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records what a watch event says: a ConfigMap's version, its deletion, or a relist
    /// (whose end forgets the ConfigMaps it did not show).
    pub fn observe(&self, event: &Event<ConfigMapMeta>) {
        let mut state = self.lock();
        match event {
            Event::Init => state.relisted = Some(HashSet::new()),
            Event::InitApply(config_map) => {
                let key = key(config_map);
                if let Some(relisted) = &mut state.relisted {
                    relisted.insert(key.clone());
                }
                let version = config_map.resource_version().unwrap_or_default();
                state.current.insert(key, version);
            }
            Event::InitDone => {
                if let Some(relisted) = state.relisted.take() {
                    state.current.retain(|key, _| relisted.contains(key));
                }
            }
            Event::Apply(config_map) => {
                let version = config_map.resource_version().unwrap_or_default();
                state.current.insert(key(config_map), version);
            }
            Event::Delete(config_map) => {
                state.current.remove(&key(config_map));
            }
        }
    }

    /// Records that ConfigMap `namespace/name` was read at `version`, its content's digest
    /// `digest`.
    pub fn read(&self, namespace: &str, name: &str, version: &str, digest: &str) {
        self.lock().read.put(
            (namespace.to_string(), name.to_string()),
            (version.to_string(), digest.to_string()),
        );
    }

    /// The digest of ConfigMap `namespace/name`'s content when the watch shows it at the
    /// version it was last read at; `None` when it changed, is gone, was never read, or
    /// the watch has not shown it yet (read it).
    pub fn unchanged(&self, namespace: &str, name: &str) -> Option<String> {
        let mut state = self.lock();
        let key = (namespace.to_string(), name.to_string());
        let current = state.current.get(&key)?.clone();
        match state.read.get(&key) {
            Some((version, digest)) if *version == current => Some(digest.clone()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_map(name: &str, version: &str) -> ConfigMapMeta {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
            "metadata": {"name": name, "namespace": "team", "resourceVersion": version},
        }))
        .expect("a ConfigMap's metadata")
    }

    #[test]
    fn a_config_map_read_at_the_version_the_watch_shows_is_unchanged() {
        let versions = ConfigMapVersions::default();
        // Read before the watch showed it: read it again.
        versions.read("team", "web", "1", "sha256:a");
        assert_eq!(versions.unchanged("team", "web"), None);
        versions.observe(&Event::Apply(config_map("web", "1")));
        assert_eq!(versions.unchanged("team", "web"), Some("sha256:a".into()));
        // Edited: the watch shows the new version before the Transforms are woken.
        versions.observe(&Event::Apply(config_map("web", "2")));
        assert_eq!(versions.unchanged("team", "web"), None);
        versions.read("team", "web", "2", "sha256:b");
        assert_eq!(versions.unchanged("team", "web"), Some("sha256:b".into()));
        // Another ConfigMap, or another namespace, is not this one.
        assert_eq!(versions.unchanged("team", "db"), None);
        assert_eq!(versions.unchanged("other", "web"), None);
        // Deleted.
        versions.observe(&Event::Delete(config_map("web", "2")));
        assert_eq!(versions.unchanged("team", "web"), None);
    }

    #[test]
    fn a_relist_forgets_what_it_does_not_show() {
        let versions = ConfigMapVersions::default();
        for name in ["web", "db"] {
            versions.observe(&Event::Apply(config_map(name, "1")));
            versions.read("team", name, "1", "sha256:a");
        }
        versions.observe(&Event::Init);
        versions.observe(&Event::InitApply(config_map("web", "1")));
        // Until the relist ends, what it has not shown yet stays.
        assert_eq!(versions.unchanged("team", "db"), Some("sha256:a".into()));
        versions.observe(&Event::InitDone);
        assert_eq!(versions.unchanged("team", "web"), Some("sha256:a".into()));
        assert_eq!(
            versions.unchanged("team", "db"),
            None,
            "deleted while disconnected"
        );
    }
}
