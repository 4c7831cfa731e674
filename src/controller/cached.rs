//! What the operator's watch caches keep of an object: less than the API server sends.
//!
//! Every applied object of every graph sits in a watch cache, and every Transform and
//! ResourceGraph in another: at fleet scale they are most of the operator's memory. Parsed
//! into `serde_json` values an object takes about ten times its JSON size, and most of it is
//! what the operator never reads from a copy: every field manager's record of the fields it
//! set (`metadata.managedFields`, a second tree as large as the object) and kubectl's
//! last-applied configuration (a second copy of the object as text).

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;

use futures::{Stream, TryStreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::ApiResource;
use kube::core::{DynamicResourceScope, NamespaceResourceScope};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use crate::api::{ResourceGraph, ResourceGraphSpec, ResourceGraphStatus};
use crate::exec::Live;

/// kubectl's annotation holding the whole object it last applied.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops from a cached object's metadata what no reader of the cache uses: the managed
/// fields and kubectl's last-applied copy.
pub fn slim_metadata(metadata: &mut ObjectMeta) {
    metadata.managed_fields = None;
    if let Some(annotations) = metadata.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
}

/// The events of a watch, kept in `writer`'s cache without what no reader of the cache uses.
///
/// Like kube's `reflector`, except for a relist of a cache that is already filled: kube's
/// builds a new cache beside the old one (a new key and entry for every object, the old ones
/// dropped once it is complete), which leaves the long-lived allocations of the new cache
/// scattered among the pages of the copies the relist parsed, and the process larger after
/// every relist. Here a relist changes the cache only where the list differs from it: an
/// object sent again at the same uid and resourceVersion keeps its entry (and the event
/// carries a clone of the cached copy, which for the kinds of this module
/// ([`CachedObject`], [`CachedGraph`], [`Shared`]) shares its allocations), a changed or new
/// one is written at once, and the entries the list no longer holds are removed when it is
/// complete (kube's swaps the whole cache then: here a reader may see a changed object
/// before the relist is complete, as it would from a watch event). A quiet relist then
/// leaves nothing new that lives, and the pages of what it parsed are handed back once it
/// is complete. Every event is passed on as the watch sent it, slimmed.
pub fn cache<K>(
    mut writer: Writer<K>,
    dyntype: K::DynamicType,
    events: impl Stream<Item = watcher::Result<watcher::Event<K>>>,
) -> impl Stream<Item = watcher::Result<watcher::Event<K>>>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    let cached = writer.as_reader();
    // The entries a relist of the filled cache has sent so far; None outside one.
    let mut relisted: Option<HashSet<ObjectRef<K>>> = None;
    let mut filled = false;
    events.map_ok(move |mut event| {
        match &mut event {
            watcher::Event::Apply(object)
            | watcher::Event::InitApply(object)
            | watcher::Event::Delete(object) => slim_metadata(object.meta_mut()),
            watcher::Event::Init | watcher::Event::InitDone => {}
        }
        if !filled {
            // The first list fills the cache as kube's reflector does: its InitDone marks
            // the store ready for the readers that wait for it.
            writer.apply_watcher_event(&event);
            filled = matches!(event, watcher::Event::InitDone);
        } else {
            match &mut event {
                watcher::Event::Init => relisted = Some(HashSet::new()),
                watcher::Event::InitApply(object) | watcher::Event::Apply(object) => {
                    let key = ObjectRef::from_obj_with(object, dyntype.clone());
                    match cached.get(&key) {
                        Some(same) if unchanged(same.meta(), object.meta()) => {
                            *object = K::clone(&same)
                        }
                        _ => writer.apply_watcher_event(&watcher::Event::Apply(object.clone())),
                    }
                    if let Some(relisted) = relisted.as_mut() {
                        relisted.insert(key);
                    }
                }
                watcher::Event::Delete(_) => writer.apply_watcher_event(&event),
                // (A watch always starts a relist with Init: without one, nothing was
                // relisted and nothing is removed.)
                watcher::Event::InitDone => {
                    if let Some(relisted) = relisted.take() {
                        for gone in cached.state() {
                            let key = ObjectRef::from_obj_with(&*gone, dyntype.clone());
                            if !relisted.contains(&key) {
                                let gone = watcher::Event::Delete(K::clone(&gone));
                                writer.apply_watcher_event(&gone);
                            }
                        }
                    }
                }
            }
        }
        if matches!(event, watcher::Event::InitDone) {
            super::memory::release_freed_memory();
        }
        event
    })
}

/// Whether an object sent again is the one cached: same uid, same resourceVersion.
fn unchanged(cached: &ObjectMeta, sent: &ObjectMeta) -> bool {
    cached.resource_version.is_some()
        && cached.resource_version == sent.resource_version
        && cached.uid == sent.uid
}

/// An applied object as the watch of its kind keeps it: the whole object (without managed
/// fields or kubectl's copy) as JSON text, beside the few fields of its metadata the cache
/// indexes and graph wakeups read (name, namespace, uid, resourceVersion, labels), and the
/// fingerprint of the fields Pequod owns in it, taken from the whole object as it arrived.
/// A pass that reads the copy parses the text again: a Deployment kept this way takes a
/// tenth of the memory of its parsed form, in a few allocations instead of hundreds.
#[derive(Clone, Debug)]
pub struct CachedObject {
    /// Shared by the clones a relist takes of an unchanged copy.
    metadata: Arc<ObjectMeta>,
    /// The object without `apiVersion` and `kind`, as JSON.
    body: Arc<str>,
    owned_hash: Option<String>,
}

impl CachedObject {
    /// The compact copy of `object`, as the API server sent it.
    fn compact(object: Value) -> Result<CachedObject, serde_json::Error> {
        let Live {
            mut object,
            owned_hash,
        } = Live::new(object);
        let Some(fields) = object.as_object_mut() else {
            return Err(serde::de::Error::custom("expected an object"));
        };
        fields.remove("apiVersion");
        fields.remove("kind");
        if let Some(metadata) = fields.get_mut("metadata").and_then(Value::as_object_mut) {
            metadata.remove("managedFields");
            if let Some(annotations) = metadata
                .get_mut("annotations")
                .and_then(Value::as_object_mut)
            {
                annotations.remove(LAST_APPLIED);
            }
        }
        let sent = fields
            .get("metadata")
            .map(ObjectMeta::deserialize)
            .transpose()?
            .unwrap_or_default();
        Ok(CachedObject {
            metadata: Arc::new(ObjectMeta {
                name: sent.name,
                namespace: sent.namespace,
                uid: sent.uid,
                resource_version: sent.resource_version,
                labels: sent.labels,
                ..ObjectMeta::default()
            }),
            body: serde_json::to_string(&object)?.into(),
            owned_hash,
        })
    }

    /// The object again, with the `apiVersion` and `kind` of `resource` (items of a list
    /// carry none of their own), and the fingerprint taken when it was whole.
    pub fn live(&self, resource: &ApiResource) -> Option<Live> {
        let mut object: Map<String, Value> = serde_json::from_str(&self.body).ok()?;
        object.insert("apiVersion".into(), resource.api_version.clone().into());
        object.insert("kind".into(), resource.kind.clone().into());
        Some(Live {
            object: Value::Object(object),
            owned_hash: self.owned_hash.clone(),
        })
    }
}

impl<'de> Deserialize<'de> for CachedObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        CachedObject::compact(Value::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

/// A cached object is of the kind its watch was started for, like a
/// [`kube::api::DynamicObject`]; the kind is shared by every key of the cache (the reflector
/// keeps one in each), not copied into it.
impl Resource for CachedObject {
    type DynamicType = Arc<ApiResource>;
    type Scope = DynamicResourceScope;

    fn group(resource: &Arc<ApiResource>) -> Cow<'_, str> {
        resource.group.as_str().into()
    }

    fn version(resource: &Arc<ApiResource>) -> Cow<'_, str> {
        resource.version.as_str().into()
    }

    fn kind(resource: &Arc<ApiResource>) -> Cow<'_, str> {
        resource.kind.as_str().into()
    }

    fn api_version(resource: &Arc<ApiResource>) -> Cow<'_, str> {
        resource.api_version.as_str().into()
    }

    fn plural(resource: &Arc<ApiResource>) -> Cow<'_, str> {
        resource.plural.as_str().into()
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        Arc::make_mut(&mut self.metadata)
    }
}

/// A typed object kept whole in a cache, behind one allocation its clones share: the copy
/// a relist takes of an unchanged object is the cached one, not a second parse of it.
/// Reads see the object through `Deref`; a change (only the cache's slimming of a new
/// object) copies it first.
#[derive(Debug)]
pub struct Shared<K>(Arc<K>);

impl<K> Clone for Shared<K> {
    fn clone(&self) -> Self {
        Shared(Arc::clone(&self.0))
    }
}

impl<K> std::ops::Deref for Shared<K> {
    type Target = K;

    fn deref(&self) -> &K {
        &self.0
    }
}

impl<'de, K: Deserialize<'de>> Deserialize<'de> for Shared<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        K::deserialize(deserializer).map(|object| Shared(Arc::new(object)))
    }
}

impl<K: Resource + Clone> Resource for Shared<K> {
    type DynamicType = K::DynamicType;
    type Scope = K::Scope;

    fn group(dyntype: &K::DynamicType) -> Cow<'_, str> {
        K::group(dyntype)
    }

    fn version(dyntype: &K::DynamicType) -> Cow<'_, str> {
        K::version(dyntype)
    }

    fn kind(dyntype: &K::DynamicType) -> Cow<'_, str> {
        K::kind(dyntype)
    }

    fn api_version(dyntype: &K::DynamicType) -> Cow<'_, str> {
        K::api_version(dyntype)
    }

    fn plural(dyntype: &K::DynamicType) -> Cow<'_, str> {
        K::plural(dyntype)
    }

    fn meta(&self) -> &ObjectMeta {
        self.0.meta()
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        Arc::make_mut(&mut self.0).meta_mut()
    }
}

/// A ResourceGraph as the operator's cache keeps it: its metadata (slimmed) parsed, its
/// spec (every node's whole object: most of a graph's size) and its status as JSON text.
/// The pass that runs the graph, or the Transform controller comparing it, parses them.
#[derive(Clone, Debug)]
pub struct CachedGraph {
    /// The graph's metadata, shared by the clones a relist takes of an unchanged copy.
    pub metadata: Arc<ObjectMeta>,
    /// The spec, as JSON.
    spec: Arc<str>,
    /// The status, as JSON.
    status: Option<Arc<str>>,
    /// `spec.metadata.moduleDigest`: the module version the graph was rendered from.
    module_digest: Option<Arc<str>>,
}

/// A graph in the cache, and what wakes the graph controller.
pub type GraphRef = ObjectRef<CachedGraph>;

/// The reference of `graph` in the cache.
pub fn graph_ref(graph: &ResourceGraph) -> GraphRef {
    GraphRef::new(&graph.name_any()).within(&graph.namespace().unwrap_or_default())
}

impl CachedGraph {
    /// The whole graph: its spec and status parsed.
    pub fn graph(&self) -> Result<ResourceGraph, serde_json::Error> {
        Ok(ResourceGraph {
            metadata: ObjectMeta::clone(&self.metadata),
            spec: self.spec()?,
            status: self
                .status
                .as_deref()
                .map(serde_json::from_str)
                .transpose()?,
        })
    }

    /// The graph's spec, parsed.
    pub fn spec(&self) -> Result<ResourceGraphSpec, serde_json::Error> {
        serde_json::from_str(&self.spec)
    }

    /// The digest of the module the graph was rendered from.
    pub fn module_digest(&self) -> Option<&str> {
        self.module_digest.as_deref()
    }

    /// The graph's status; None also when it cannot be read.
    pub fn status(&self) -> Option<ResourceGraphStatus> {
        serde_json::from_str(self.status.as_deref()?).ok()
    }
}

impl<'de> Deserialize<'de> for CachedGraph {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// A graph as the API server sends it, its spec and status left unparsed.
        #[derive(Deserialize)]
        struct Sent {
            metadata: ObjectMeta,
            #[serde(default)]
            spec: Value,
            #[serde(default)]
            status: Option<Value>,
        }
        let Sent {
            metadata,
            spec,
            status,
        } = Sent::deserialize(deserializer)?;
        let module_digest = spec
            .pointer("/metadata/moduleDigest")
            .and_then(Value::as_str)
            .map(Arc::from);
        Ok(CachedGraph {
            metadata: Arc::new(metadata),
            module_digest,
            spec: spec.to_string().into(),
            status: status.map(|status| status.to_string().into()),
        })
    }
}

impl Resource for CachedGraph {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn group(_: &()) -> Cow<'_, str> {
        ResourceGraph::group(&())
    }

    fn version(_: &()) -> Cow<'_, str> {
        ResourceGraph::version(&())
    }

    fn kind(_: &()) -> Cow<'_, str> {
        ResourceGraph::kind(&())
    }

    fn api_version(_: &()) -> Cow<'_, str> {
        ResourceGraph::api_version(&())
    }

    fn plural(_: &()) -> Cow<'_, str> {
        ResourceGraph::plural(&())
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        Arc::make_mut(&mut self.metadata)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployments() -> Arc<ApiResource> {
        Arc::new(ApiResource {
            group: "apps".into(),
            version: "v1".into(),
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            plural: "deployments".into(),
        })
    }

    /// A Deployment as a list sends it: no type of its own, three field managers, kubectl's
    /// copy.
    fn sent() -> Value {
        json!({
            "metadata": {
                "name": "web", "namespace": "shop", "uid": "u-1", "resourceVersion": "7",
                "labels": {"platform.pequod.io/resource-graph": "shop-api"},
                "annotations": {LAST_APPLIED: "{\"a whole\": \"copy\"}", "team": "shop"},
                "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "o", "uid": "u-0"}],
                "managedFields": [
                    {"manager": "pequod", "operation": "Apply", "fieldsV1": {"f:spec": {"f:replicas": {}}}},
                    {"manager": "kubectl", "operation": "Update", "fieldsV1": {"f:spec": {"f:paused": {}}}},
                ],
            },
            "spec": {"replicas": 2, "paused": false},
            "status": {"availableReplicas": 2},
        })
    }

    #[test]
    fn a_cached_object_keeps_the_object_and_the_fingerprint_of_the_whole() {
        let cached: CachedObject = serde_json::from_value(sent()).expect("deserializes");
        let mut whole = sent();
        whole["apiVersion"] = json!("apps/v1");
        whole["kind"] = json!("Deployment");
        let expected_hash = Live::new(whole.clone()).owned_hash;
        assert!(expected_hash.is_some());

        let live = cached.live(&deployments()).expect("parses");
        assert_eq!(live.owned_hash, expected_hash);
        let metadata = whole["metadata"].as_object_mut().expect("metadata");
        metadata.remove("managedFields");
        metadata["annotations"] = json!({"team": "shop"});
        assert_eq!(live.object, whole);
        // The index and the wakeups read only these.
        assert_eq!(
            *cached.metadata,
            ObjectMeta {
                name: Some("web".into()),
                namespace: Some("shop".into()),
                uid: Some("u-1".into()),
                resource_version: Some("7".into()),
                labels: Some(
                    [(
                        "platform.pequod.io/resource-graph".to_string(),
                        "shop-api".to_string()
                    )]
                    .into()
                ),
                ..ObjectMeta::default()
            }
        );
    }

    #[tokio::test]
    async fn a_relist_of_a_filled_cache_changes_only_what_differs() {
        use futures::StreamExt;
        use watcher::Event;

        let object = |name: &str, version: &str| -> CachedObject {
            let mut object = sent();
            object["metadata"]["name"] = json!(name);
            object["metadata"]["uid"] = json!(format!("u-{name}"));
            object["metadata"]["resourceVersion"] = json!(version);
            serde_json::from_value(object).expect("parses")
        };
        let writer = Writer::new(deployments());
        let store = writer.as_reader();
        let list = vec![
            Event::Init,
            Event::InitApply(object("web", "1")),
            Event::InitApply(object("api", "2")),
            Event::InitApply(object("old", "3")),
            Event::InitDone,
        ];
        // A relist that fails after two objects, and starts again.
        let relist = vec![
            Event::Init,
            Event::InitApply(object("web", "1")),
            Event::InitApply(object("api", "9")),
            Event::Init,
            Event::InitApply(object("web", "1")),
            Event::InitApply(object("api", "9")),
            Event::InitApply(object("new", "10")),
            Event::InitDone,
        ];
        let (sender, receiver) = futures::channel::mpsc::unbounded();
        let mut events = Box::pin(cache(writer, deployments(), receiver));
        for event in list {
            sender.unbounded_send(Ok(event)).expect("sent");
        }
        for _ in 0..5 {
            events.next().await.expect("an event").expect("no error");
        }
        let key = |name: &str| ObjectRef::new_with(name, deployments()).within("shop");
        let web = store.get(&key("web")).expect("cached");
        for event in relist {
            sender.unbounded_send(Ok(event)).expect("sent");
        }
        let mut passed_on = Vec::new();
        for _ in 0..8 {
            match events.next().await.expect("an event").expect("no error") {
                Event::InitApply(object) => passed_on.push(object.name_any()),
                Event::Init | Event::InitDone => {}
                other => panic!("not passed on as sent: {other:?}"),
            }
            if passed_on.len() < 5 {
                assert!(
                    store.get(&key("old")).is_some(),
                    "nothing is removed before the relist is complete"
                );
            }
        }
        assert_eq!(passed_on, ["web", "api", "web", "api", "new"]);

        assert!(
            Arc::ptr_eq(&web, &store.get(&key("web")).expect("still cached")),
            "an unchanged object keeps its very entry"
        );
        let version = |name: &str| {
            store
                .get(&key(name))
                .and_then(|object| object.metadata.resource_version.clone())
        };
        assert_eq!(
            version("api").as_deref(),
            Some("9"),
            "a changed one is written"
        );
        assert_eq!(version("new").as_deref(), Some("10"), "a new one is added");
        assert_eq!(
            version("old"),
            None,
            "one the list no longer holds is removed"
        );
        assert_eq!(store.state().len(), 3);

        // Watch events after it are applied as they come.
        sender
            .unbounded_send(Ok(Event::Apply(object("api", "11"))))
            .expect("sent");
        sender
            .unbounded_send(Ok(Event::Delete(object("new", "10"))))
            .expect("sent");
        events.next().await.expect("an event").expect("no error");
        events.next().await.expect("an event").expect("no error");
        assert_eq!(version("api").as_deref(), Some("11"));
        assert_eq!(version("new"), None);
    }

    #[tokio::test]
    async fn a_relist_shares_a_typed_object_that_did_not_change() {
        use futures::StreamExt;
        use k8s_openapi::api::core::v1::ConfigMap;
        use watcher::Event;

        let sent = |version: &str| -> Shared<ConfigMap> {
            serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "m", "namespace": "shop", "uid": "u-1", "resourceVersion": version,
                    "managedFields": [{"manager": "kubectl", "operation": "Update"}]},
                "data": {"main.ncl": "{}"},
            }))
            .expect("a ConfigMap")
        };
        let writer = Writer::<Shared<ConfigMap>>::default();
        let store = writer.as_reader();
        let list = |version: &str| {
            vec![
                Event::Init,
                Event::InitApply(sent(version)),
                Event::InitDone,
            ]
        };
        let key = ObjectRef::new("m").within("shop");
        let all = [list("1"), list("1"), list("2")].concat();
        let mut events = Box::pin(cache(
            writer,
            (),
            futures::stream::iter(all.into_iter().map(Ok)),
        ));
        let mut copies = Vec::new();
        while let Some(event) = events.next().await {
            if matches!(event, Ok(Event::InitDone)) {
                copies.push(store.get(&key).expect("cached"));
            }
        }
        assert_eq!(copies[0].metadata.managed_fields, None, "slimmed");
        assert!(
            Arc::ptr_eq(&copies[0].0, &copies[1].0),
            "the same object is shared"
        );
        assert!(
            !Arc::ptr_eq(&copies[1].0, &copies[2].0),
            "a new version is not"
        );
        assert_eq!(copies[2].metadata.resource_version.as_deref(), Some("2"));
    }

    #[test]
    fn a_cached_object_that_is_not_an_object_is_refused() {
        let error = serde_json::from_value::<CachedObject>(json!(["a"])).expect_err("refused");
        assert_eq!(error.to_string(), "expected an object");
    }

    fn graph() -> Value {
        json!({
            "apiVersion": "platform.pequod.io/v1alpha1", "kind": "ResourceGraph",
            "metadata": {"name": "shop-api", "namespace": "shop", "generation": 2,
                "managedFields": [{"manager": "pequod", "operation": "Apply", "fieldsV1": {"f:spec": {}}}]},
            "spec": {
                "sourceRef": {"apiVersion": "platform.pequod.io/v1alpha1", "kind": "Transform", "name": "shop-api"},
                "metadata": {"module": "webservice", "version": "1.0.0", "moduleDigest": "sha256:00", "renderHash": "sha256:11"},
                "nodes": [{"id": "sa", "object": {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "shop-api"}}}],
            },
            "status": {"phase": "Ready", "observedGeneration": 2},
        })
    }

    #[test]
    fn a_cached_graph_parses_to_the_graph_the_api_server_sent() {
        let cached: CachedGraph = serde_json::from_value(graph()).expect("deserializes");
        let sent: ResourceGraph = serde_json::from_value(graph()).expect("a graph");
        let parsed = cached.graph().expect("parses");
        assert_eq!(
            serde_json::to_value(&parsed).expect("serializes"),
            serde_json::to_value(&sent).expect("serializes")
        );
        assert_eq!(cached.status(), sent.status);
        assert_eq!(cached.metadata.generation, Some(2));
        assert_eq!(cached.module_digest(), Some("sha256:00"));
    }

    #[test]
    fn a_cached_graph_whose_spec_does_not_parse_fails_when_read() {
        let mut broken = graph();
        broken["spec"]["nodes"] = json!("not a list");
        let cached: CachedGraph = serde_json::from_value(broken).expect("kept as text");
        let error = cached.graph().expect_err("unreadable");
        assert!(
            error.to_string().contains("invalid type: string"),
            "{error}"
        );
    }
}
