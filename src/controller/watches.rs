//! Watches of the objects graphs apply or observe, so that a readiness change or an edit
//! wakes the graph at once instead of at its next requeue; and a watch of
//! CustomResourceDefinitions, so that a graph waiting for a kind to be installed runs as
//! soon as it is.
//!
//! Applied objects carry the label `platform.pequod.io/resource-graph`; one watch per API
//! resource, selected by that label, serves every graph. Observed objects carry no label of
//! ours: each gets a watch of its own, selected by name. After each pass a graph says what
//! it uses ([`Watches::sync`]); a watch no graph uses any more is stopped, and nothing is
//! kept for a graph that is gone ([`Watches::forget`]).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use dashmap::DashMap;
use futures::StreamExt;
use futures::channel::mpsc::UnboundedSender;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::ResourceExt;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::task::AbortHandle;

use super::cached::{CachedObject, GraphRef, graph_ref};
use crate::api::{ResourceGraph, labels};
use crate::exec::{Live, LiveObjects, Served, WatchTarget};

/// A kind, by API group and kind name.
pub type KindKey = (String, String);

/// The watches started so far and where their events go.
#[derive(Clone)]
pub struct Watches {
    client: kube::Client,
    namespace: Option<String>,
    sender: UnboundedSender<GraphRef>,
    state: Arc<Mutex<State>>,
    /// Graphs waiting for a kind to be installed (read by the CRD watch).
    waiting: Arc<DashMap<KindKey, HashSet<GraphRef>>>,
}

#[derive(Default)]
struct State {
    /// The label-selected watch of each API resource, and the graphs using it.
    labelled: HashMap<String, Shared>,
    /// The name-selected watch of each observed object, and the graphs waiting on it.
    observed: HashMap<String, Observed>,
    /// What each graph uses.
    uses: HashMap<GraphRef, Uses>,
    /// Whether the CRD watch runs.
    crds: bool,
}

struct Shared {
    task: AbortHandle,
    graphs: HashSet<GraphRef>,
    /// What the watch saw, for [`LiveObjects`].
    store: Store<CachedObject>,
    resource: Arc<ApiResource>,
}

struct Observed {
    task: AbortHandle,
    graphs: Arc<Mutex<HashSet<GraphRef>>>,
}

#[derive(Default)]
struct Uses {
    labelled: HashSet<String>,
    observed: HashSet<String>,
    missing: HashSet<KindKey>,
}

/// How many watches run: label-selected ones (one per API resource) and name-selected
/// ones (one per observed object).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WatchCount {
    /// One per API resource graphs apply.
    pub labelled: usize,
    /// One per object graphs observe.
    pub observed: usize,
}

fn resource_key(served: &Served) -> String {
    let resource = &served.resource;
    format!(
        "{}/{}/{}",
        resource.group, resource.version, resource.plural
    )
}

fn observed_key(target: &WatchTarget, namespace: Option<&str>, name: &str) -> String {
    format!(
        "{}/{}/{name}",
        resource_key(&target.served),
        namespace.unwrap_or("")
    )
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
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
            state: Arc::default(),
            waiting: Arc::default(),
        }
    }

    /// Makes sure changes of the objects `graph`'s last pass applied or observed
    /// (`targets`) and of the kinds it waits for (`missing`) wake it; stops what it no
    /// longer needs.
    pub fn sync(&self, graph: &ResourceGraph, targets: &[WatchTarget], missing: &[KindKey]) {
        let graph_ref = graph_ref(graph);
        let mut wanted = Uses {
            missing: missing.iter().cloned().collect(),
            ..Uses::default()
        };
        let mut state = lock(&self.state);
        for target in targets {
            match &target.observed {
                None => {
                    let key = resource_key(&target.served);
                    let shared = state
                        .labelled
                        .entry(key.clone())
                        .or_insert_with(|| self.watch_labelled(&target.served));
                    shared.graphs.insert(graph_ref.clone());
                    wanted.labelled.insert(key);
                }
                Some((namespace, name)) => {
                    let key = observed_key(target, namespace.as_deref(), name);
                    let observed = state.observed.entry(key.clone()).or_insert_with(|| {
                        let graphs = Arc::new(Mutex::new(HashSet::new()));
                        Observed {
                            task: self.watch_observed(
                                target,
                                namespace.as_deref(),
                                name,
                                graphs.clone(),
                            ),
                            graphs,
                        }
                    });
                    lock(&observed.graphs).insert(graph_ref.clone());
                    wanted.observed.insert(key);
                }
            }
        }
        for kind in &wanted.missing {
            self.waiting
                .entry(kind.clone())
                .or_default()
                .insert(graph_ref.clone());
        }
        if !wanted.missing.is_empty() && !state.crds {
            state.crds = true;
            self.watch_crds();
        }
        let before = state.uses.remove(&graph_ref).unwrap_or_default();
        release(&mut state, &self.waiting, &graph_ref, before, Some(&wanted));
        state.uses.insert(graph_ref, wanted);
    }

    /// Forgets a graph that is gone: what only it used is stopped.
    pub fn forget(&self, graph: &ResourceGraph) {
        let graph_ref = graph_ref(graph);
        let mut state = lock(&self.state);
        if let Some(before) = state.uses.remove(&graph_ref) {
            release(&mut state, &self.waiting, &graph_ref, before, None);
        }
    }

    /// How many watches run.
    pub fn count(&self) -> WatchCount {
        let state = lock(&self.state);
        WatchCount {
            labelled: state.labelled.len(),
            observed: state.observed.len(),
        }
    }

    fn watch_labelled(&self, served: &Served) -> Shared {
        let resource = Arc::new(served.resource.clone());
        let api: Api<CachedObject> = match (&self.namespace, served.namespaced) {
            (Some(namespace), true) => {
                Api::namespaced_with(self.client.clone(), namespace, &resource)
            }
            _ => Api::all_with(self.client.clone(), &resource),
        };
        let config = super::watch_config().labels(labels::RESOURCE_GRAPH);
        let sender = self.sender.clone();
        let writer = Writer::new(resource.clone());
        let store = writer.as_reader();
        tracing::debug!(resource = %resource.plural, "watching applied objects");
        // The store is written before the event wakes the graph: a pass it wakes reads a
        // copy at least as new as the event.
        let task = tokio::spawn(
            super::cached::cache(writer, resource.clone(), watcher(api, config))
                .default_backoff()
                .touched_objects()
                .for_each(move |object| {
                    if let Ok(object) = object
                        && let Some(graph) = owner_of(&object)
                    {
                        let _ = sender.unbounded_send(graph);
                    }
                    futures::future::ready(())
                }),
        )
        .abort_handle();
        Shared {
            task,
            graphs: HashSet::new(),
            store,
            resource,
        }
    }

    fn watch_observed(
        &self,
        target: &WatchTarget,
        namespace: Option<&str>,
        name: &str,
        graphs: Arc<Mutex<HashSet<GraphRef>>>,
    ) -> AbortHandle {
        let resource = &target.served.resource;
        let api: Api<DynamicObject> = match namespace {
            Some(namespace) => Api::namespaced_with(self.client.clone(), namespace, resource),
            None => Api::all_with(self.client.clone(), resource),
        };
        let config = super::watch_config().fields(&format!("metadata.name={name}"));
        let sender = self.sender.clone();
        tracing::debug!(resource = %resource.plural, name, "watching an observed object");
        tokio::spawn(
            watcher(api, config)
                .default_backoff()
                .touched_objects()
                .for_each(move |object| {
                    if object.is_ok() {
                        for graph in lock(&graphs).iter() {
                            let _ = sender.unbounded_send(graph.clone());
                        }
                    }
                    futures::future::ready(())
                }),
        )
        .abort_handle()
    }

    /// Watches CustomResourceDefinitions: a kind graphs wait for wakes them when its CRD
    /// is written (created, or established).
    fn watch_crds(&self) {
        let api: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        let sender = self.sender.clone();
        let waiting = self.waiting.clone();
        tracing::debug!("watching CustomResourceDefinitions for kinds graphs wait for");
        tokio::spawn(
            watcher(api, super::watch_config())
                .default_backoff()
                .applied_objects()
                .for_each(move |crd| {
                    if let Ok(crd) = crd {
                        let kind = (crd.spec.group.clone(), crd.spec.names.kind.clone());
                        if let Some((_, graphs)) = waiting.remove(&kind) {
                            for graph in graphs {
                                let _ = sender.unbounded_send(graph);
                            }
                        }
                    }
                    futures::future::ready(())
                }),
        );
    }
}

impl LiveObjects for Watches {
    fn get(&self, served: &Served, namespace: Option<&str>, name: &str) -> Option<Live> {
        let (store, resource) = {
            let state = lock(&self.state);
            let shared = state.labelled.get(&resource_key(served))?;
            (shared.store.clone(), shared.resource.clone())
        };
        let mut reference = ObjectRef::<CachedObject>::new_with(name, Arc::clone(&resource));
        if let Some(namespace) = namespace {
            reference = reference.within(namespace);
        }
        store.get(&reference)?.live(&resource)
    }
}

/// Releases what a graph used before (`before`) and uses no more (`after`): watches no
/// graph uses any more are stopped.
fn release(
    state: &mut State,
    waiting: &DashMap<KindKey, HashSet<GraphRef>>,
    graph: &GraphRef,
    before: Uses,
    after: Option<&Uses>,
) {
    for key in before.labelled {
        if after.is_some_and(|a| a.labelled.contains(&key)) {
            continue;
        }
        if let Some(shared) = state.labelled.get_mut(&key) {
            shared.graphs.remove(graph);
            if shared.graphs.is_empty() {
                shared.task.abort();
                state.labelled.remove(&key);
            }
        }
    }
    for key in before.observed {
        if after.is_some_and(|a| a.observed.contains(&key)) {
            continue;
        }
        if let Some(observed) = state.observed.get(&key) {
            let empty = {
                let mut graphs = lock(&observed.graphs);
                graphs.remove(graph);
                graphs.is_empty()
            };
            if empty {
                observed.task.abort();
                state.observed.remove(&key);
            }
        }
    }
    for kind in before.missing {
        if !after.is_some_and(|a| a.missing.contains(&kind)) {
            if let Some(mut graphs) = waiting.get_mut(&kind) {
                graphs.remove(graph);
            }
            waiting.remove_if(&kind, |_, graphs| graphs.is_empty());
        }
    }
}

/// The graph that owns an object, from its labels.
fn owner_of(object: &CachedObject) -> Option<GraphRef> {
    let graph = object.labels().get(labels::RESOURCE_GRAPH)?;
    let namespace = object
        .labels()
        .get(labels::RESOURCE_GRAPH_NAMESPACE)
        .cloned()
        .or_else(|| object.namespace())?;
    Some(GraphRef::new(graph).within(&namespace))
}
