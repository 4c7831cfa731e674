//! Watches of the objects graphs apply or observe, so that a readiness change or an edit
//! wakes the graph at once instead of at its next requeue.
//!
//! Applied objects carry the label `platform.pequod.io/resource-graph`; one watch per API
//! resource, selected by that label, serves every graph. Observed objects carry no label of
//! ours: each gets a watch of its own, selected by name, and remembers the graphs that wait
//! on it.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use dashmap::DashMap;
use futures::StreamExt;
use futures::channel::mpsc::UnboundedSender;
use kube::api::{Api, DynamicObject};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};

use crate::api::{ObjectKey, ResourceGraph, labels};
use crate::exec::WatchTarget;

type GraphRef = ObjectRef<ResourceGraph>;

/// The watches started so far and where their events go.
#[derive(Clone)]
pub struct Watches {
    client: kube::Client,
    namespace: Option<String>,
    sender: UnboundedSender<GraphRef>,
    labelled: Arc<DashMap<String, ()>>,
    observed: Arc<DashMap<String, Arc<Mutex<HashSet<GraphRef>>>>>,
    /// Graphs of objects outside their graph's namespace, by object.
    owners: Arc<DashMap<ObjectKey, GraphRef>>,
}

fn resource_key(target: &WatchTarget) -> String {
    let resource = &target.served.resource;
    format!(
        "{}/{}/{}",
        resource.group, resource.version, resource.plural
    )
}

impl Watches {
    /// No watches yet; events wake graphs through `sender`.
    pub fn new(
        client: kube::Client,
        namespace: Option<String>,
        sender: UnboundedSender<GraphRef>,
    ) -> Watches {
        Watches {
            client,
            namespace,
            sender,
            labelled: Arc::default(),
            observed: Arc::default(),
            owners: Arc::default(),
        }
    }

    /// Makes sure changes of `target` wake `graph`.
    pub fn ensure(&self, target: &WatchTarget, graph: &ResourceGraph) {
        let graph_ref = GraphRef::from_obj(graph);
        let resource = &target.served.resource;
        match &target.observed {
            None => {
                let key = resource_key(target);
                if self.labelled.insert(key, ()).is_some() {
                    return;
                }
                let api: Api<DynamicObject> = match (&self.namespace, target.served.namespaced) {
                    (Some(namespace), true) => {
                        Api::namespaced_with(self.client.clone(), namespace, resource)
                    }
                    _ => Api::all_with(self.client.clone(), resource),
                };
                let config = watcher::Config::default().labels(labels::RESOURCE_GRAPH);
                let sender = self.sender.clone();
                let owners = self.owners.clone();
                tracing::debug!(resource = %resource.plural, "watching applied objects");
                tokio::spawn(
                    watcher(api, config)
                        .default_backoff()
                        .touched_objects()
                        .for_each(move |object| {
                            if let Ok(object) = object
                                && let Some(graph) = owner_of(&object, &owners)
                            {
                                let _ = sender.unbounded_send(graph);
                            }
                            futures::future::ready(())
                        }),
                );
            }
            Some((namespace, name)) => {
                let key = format!(
                    "{}/{}/{}",
                    resource_key(target),
                    namespace.as_deref().unwrap_or(""),
                    name
                );
                let waiting = self.observed.entry(key).or_default().clone();
                let fresh = {
                    let Ok(mut graphs) = waiting.lock() else {
                        return;
                    };
                    let fresh = graphs.is_empty();
                    graphs.insert(graph_ref);
                    fresh
                };
                if !fresh {
                    return;
                }
                let api: Api<DynamicObject> = match namespace {
                    Some(namespace) => {
                        Api::namespaced_with(self.client.clone(), namespace, resource)
                    }
                    None => Api::all_with(self.client.clone(), resource),
                };
                let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
                let sender = self.sender.clone();
                tracing::debug!(resource = %resource.plural, name, "watching an observed object");
                tokio::spawn(
                    watcher(api, config)
                        .default_backoff()
                        .touched_objects()
                        .for_each(move |object| {
                            if object.is_ok()
                                && let Ok(graphs) = waiting.lock()
                            {
                                for graph in graphs.iter() {
                                    let _ = sender.unbounded_send(graph.clone());
                                }
                            }
                            futures::future::ready(())
                        }),
                );
            }
        }
    }

    /// Remembers which graph applied an object that lives outside the graph's namespace.
    pub fn remember_owner(&self, object: ObjectKey, graph: &ResourceGraph) {
        self.owners.insert(object, GraphRef::from_obj(graph));
    }
}

fn owner_of(object: &DynamicObject, owners: &DashMap<ObjectKey, GraphRef>) -> Option<GraphRef> {
    let graph = object.labels().get(labels::RESOURCE_GRAPH)?;
    let (group, kind) = match &object.types {
        Some(types) => (
            types
                .api_version
                .rsplit_once('/')
                .map_or("", |(group, _)| group)
                .to_string(),
            types.kind.clone(),
        ),
        None => (String::new(), String::new()),
    };
    let key = ObjectKey {
        group,
        kind,
        namespace: object.meta().namespace.clone().unwrap_or_default(),
        name: object.name_any(),
    };
    if let Some(owner) = owners.get(&key) {
        return Some(owner.clone());
    }
    let namespace = object.meta().namespace.as_deref()?;
    Some(GraphRef::new(graph).within(namespace))
}
