//! Executing a ResourceGraph: one level-triggered pass over its nodes.
//!
//! A pass reads the cluster, applies every node whose dependencies are Ready (independent
//! nodes concurrently, bounded by a semaphore shared by all graphs), evaluates readiness and
//! returns the new status; it never waits for an object to become ready. Nodes that become
//! Ready during the pass release their dependents in the same pass. A failed node blocks
//! only its dependents. After a pass in which every node was applied, objects of the
//! previous inventory that left the graph are pruned, dependents first.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use backon::BackoffBuilder;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::api::{
    AdoptStrategy, GraphPhase, GraphSummary, InventoryEntry, NodePhase, NodeStatus, ObjectRef,
    ResourceGraph, ResourceGraphStatus,
};
use crate::apply::{Applier, ApplyError, Served, drifted, type_of};
use crate::graph::{ApplyMode, ConflictPolicy, Dag, DeletionPolicy, Node};
use crate::readiness::{self, Readiness};
use crate::render::labels;

/// Annotation that keeps an object from being pruned: `platform.pequod.io/prune: disabled`.
pub const PRUNE_ANNOTATION: &str = "platform.pequod.io/prune";

/// How graphs are executed, from the operator's flags.
#[derive(Clone, Debug)]
pub struct ExecConfig {
    /// Objects may live in other namespaces than their graph's.
    pub allow_cross_namespace: bool,
    /// Cluster-scoped objects may be written.
    pub allow_cluster_scoped: bool,
}

/// Something that happened to a node during a pass, for events and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeEvent {
    /// The object was written (created, updated or corrected).
    Applied {
        /// The node.
        node: String,
        /// Why: created, changed, drift corrected.
        why: String,
    },
    /// The node became Ready.
    Ready {
        /// The node.
        node: String,
    },
    /// The node failed.
    Failed {
        /// The node.
        node: String,
        /// The error.
        message: String,
    },
    /// An existing object was adopted (`Transform.spec.adopt`).
    Adopted {
        /// The node.
        node: String,
        /// TakeOwnership or Mirror.
        strategy: AdoptStrategy,
    },
    /// An object that left the graph was deleted.
    Pruned {
        /// `Kind namespace/name`.
        object: String,
    },
}

/// The result of one pass.
#[derive(Debug)]
pub struct Pass {
    /// The graph's new status.
    pub status: ResourceGraphStatus,
    /// When to look again without a watch event (failed nodes retry, timeouts expire).
    pub requeue: Option<Duration>,
    /// The kinds (and observed objects) whose changes must wake this graph.
    pub watch: Vec<WatchTarget>,
    /// What happened.
    pub events: Vec<NodeEvent>,
    /// How many applies were made, by result (`true` success).
    pub applies: Vec<(bool, Duration)>,
}

/// An API resource to watch for one graph.
#[derive(Clone, Debug)]
pub struct WatchTarget {
    /// The resource.
    pub served: Served,
    /// `Some((namespace, name))` for an observed object Pequod does not label.
    pub observed: Option<(Option<String>, String)>,
}

/// Outcome of running one node.
struct NodeRun {
    status: NodeStatus,
    events: Vec<NodeEvent>,
    applies: Vec<(bool, Duration)>,
    watch: Option<WatchTarget>,
    inventory: Option<InventoryEntry>,
}

/// Runs one pass over `graph`.
pub async fn execute(
    applier: &Applier,
    graph: &ResourceGraph,
    config: &ExecConfig,
    applies: &Arc<Semaphore>,
) -> Pass {
    let namespace = graph.metadata.namespace.clone().unwrap_or_default();
    let graph_name = graph.metadata.name.clone().unwrap_or_default();
    let previous = graph.status.clone().unwrap_or_default();
    let nodes: HashMap<&str, &Node> = graph
        .spec
        .nodes
        .iter()
        .map(|n| (n.id.as_str(), n))
        .collect();
    let now = jiff::Timestamp::now();
    let mut statuses: BTreeMap<String, NodeStatus> = BTreeMap::new();
    let mut events = Vec::new();
    let mut apply_results = Vec::new();
    let mut watch = Vec::new();
    let mut inventory: Vec<InventoryEntry> = Vec::new();

    let dag = match Dag::build(&graph.spec.nodes) {
        Ok(dag) => dag,
        Err(errors) => {
            let status = ResourceGraphStatus {
                phase: Some(GraphPhase::Failed),
                conditions: vec![condition(
                    "Ready",
                    false,
                    "InvalidGraph",
                    &errors.to_string(),
                    graph.metadata.generation,
                    now,
                    &previous.conditions,
                )],
                inventory: previous.inventory.clone(),
                observed_generation: graph.metadata.generation,
                ..ResourceGraphStatus::default()
            };
            return Pass {
                status,
                requeue: None,
                watch,
                events,
                applies: apply_results,
            };
        }
    };

    // Waves: every node whose dependencies are settled runs; a node that is Ready releases
    // its dependents into the next wave of the same pass.
    let mut settled: HashSet<String> = HashSet::new();
    let mut ready: HashSet<String> = HashSet::new();
    loop {
        let mut wave = Vec::new();
        for id in dag.topological_order() {
            if settled.contains(id) {
                continue;
            }
            let dependencies: Vec<&String> = dag.dependencies(id).collect();
            if !dependencies.iter().all(|d| settled.contains(*d)) {
                continue;
            }
            let prior = previous.nodes.get(id);
            let blocked: Vec<&str> = dependencies
                .iter()
                .filter(|d| {
                    matches!(
                        statuses.get(d.as_str()).map(|s| s.phase),
                        Some(NodePhase::Failed | NodePhase::Blocked)
                    )
                })
                .map(|d| d.as_str())
                .collect();
            let waiting: Vec<&str> = dependencies
                .iter()
                .filter(|d| !ready.contains(d.as_str()))
                .map(|d| d.as_str())
                .collect();
            if !blocked.is_empty() {
                let message = format!("dependency {} failed", quote_list(&blocked));
                statuses.insert(id.clone(), carried(prior, NodePhase::Blocked, message, now));
                settled.insert(id.clone());
            } else if !waiting.is_empty() {
                let message = format!("waiting for {} to be Ready", quote_list(&waiting));
                statuses.insert(id.clone(), carried(prior, NodePhase::Pending, message, now));
                settled.insert(id.clone());
            } else if let Some(node) = nodes.get(id.as_str()) {
                wave.push(*node);
            }
        }
        if wave.is_empty() {
            break;
        }
        let mut running: FuturesUnordered<_> = wave
            .into_iter()
            .map(|node| {
                let prior = previous.nodes.get(&node.id);
                let pass = PassContext {
                    applier,
                    graph: graph_name.as_str(),
                    namespace: namespace.as_str(),
                    config,
                    applies,
                    now,
                };
                async move {
                    let step = run_node(&pass, node, prior);
                    // A bug must fail its node, not the operator.
                    let run = match AssertUnwindSafe(step).catch_unwind().await {
                        Ok(run) => run,
                        Err(panic) => panicked(node, prior, &panic_message(panic.as_ref()), now),
                    };
                    (node.id.clone(), run)
                }
            })
            .collect();
        while let Some((id, run)) = running.next().await {
            if is_ready(run.status.phase) {
                ready.insert(id.clone());
            }
            events.extend(run.events);
            apply_results.extend(run.applies);
            watch.extend(run.watch);
            inventory.extend(run.inventory);
            statuses.insert(id.clone(), run.status);
            settled.insert(id);
        }
    }

    // Nodes below a Pending node are Pending too.
    for id in dag.topological_order() {
        if !statuses.contains_key(id) {
            let message = "waiting for its dependencies".to_string();
            statuses.insert(
                id.clone(),
                carried(previous.nodes.get(id), NodePhase::Pending, message, now),
            );
        }
    }

    let applied_all = graph.spec.nodes.iter().all(|node| {
        node.apply_policy.mode == ApplyMode::Observe
            || matches!(
                statuses.get(&node.id).map(|s| s.phase),
                Some(NodePhase::Ready | NodePhase::WaitingReady | NodePhase::Adopted)
            )
    });
    // Entries of the nodes that ran replace theirs; nodes of the graph that did not run in
    // this pass keep theirs; an object that is now only observed (Observe, Mirror) leaves
    // the inventory without being deleted; the rest left the graph and may be pruned.
    let fresh: HashSet<ObjectIdentity> = inventory.iter().map(identity).collect();
    let mut leftovers = Vec::new();
    for entry in &previous.inventory {
        if fresh.contains(&identity(entry)) {
            continue;
        }
        match graph.spec.nodes.iter().find(|node| targets(node, entry)) {
            Some(node) if node.apply_policy.mode == ApplyMode::Observe => {}
            Some(_) => inventory.push(entry.clone()),
            None => leftovers.push(entry.clone()),
        }
    }
    if applied_all && graph.spec.prune {
        leftovers = prune(applier, applies, leftovers, &mut events).await;
    }
    inventory.extend(leftovers);
    // Dependency order, objects still to be pruned last: pruning and deletion go in reverse.
    let order: HashMap<&str, usize> = dag
        .topological_order()
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    inventory.sort_by_key(|entry| {
        order
            .get(entry.node_id.as_str())
            .copied()
            .unwrap_or(usize::MAX)
    });

    let requeue = requeue_after(&graph.spec.nodes, &statuses, now);
    let status = summarize(graph, &previous, statuses, inventory, now);
    Pass {
        status,
        requeue,
        watch,
        events,
        applies: apply_results,
    }
}

/// Whether a node in this phase releases its dependents.
fn is_ready(phase: NodePhase) -> bool {
    matches!(phase, NodePhase::Ready | NodePhase::Adopted)
}

type ObjectIdentity = (String, String, Option<String>, String);

/// Whether `node` renders the object of an inventory entry (namespaces compared only when
/// both are known: offline defaulting may have namespaced a cluster-scoped kind).
fn targets(node: &Node, entry: &InventoryEntry) -> bool {
    let Some(key) = node.object_key() else {
        return false;
    };
    let (group, kind, namespace, name) = identity(entry);
    key.group == group
        && key.kind == kind
        && key.name == name
        && (key.namespace.is_empty() || namespace.is_none_or(|n| n == key.namespace))
}

fn identity(entry: &InventoryEntry) -> ObjectIdentity {
    let group = entry
        .object
        .api_version
        .rsplit_once('/')
        .map_or("", |(group, _)| group);
    (
        group.to_string(),
        entry.object.kind.clone(),
        entry.object.namespace.clone(),
        entry.object.name.clone(),
    )
}

fn quote_list(ids: &[&str]) -> String {
    ids.iter()
        .map(|id| format!("`{id}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A status with `phase` and `message`, keeping the previous attempts, hash and object.
fn carried(
    prior: Option<&NodeStatus>,
    phase: NodePhase,
    message: String,
    now: jiff::Timestamp,
) -> NodeStatus {
    let mut status = prior.cloned().unwrap_or_else(|| NodeStatus::new(phase));
    settle(&mut status, prior, phase, message, now);
    status
}

/// The text of a caught panic.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string())
}

fn panicked(
    node: &Node,
    prior: Option<&NodeStatus>,
    message: &str,
    now: jiff::Timestamp,
) -> NodeRun {
    let message = format!("internal error while executing the node: {message}");
    tracing::error!(node = %node.id, kind = node.kind().unwrap_or_default(), namespace = node.namespace().unwrap_or_default(), name = node.name().unwrap_or_default(), %message);
    let mut status = carried(prior, NodePhase::Failed, message.clone(), now);
    status.failures = prior.map_or(0, |p| p.failures).saturating_add(1);
    NodeRun {
        status,
        events: vec![NodeEvent::Failed {
            node: node.id.clone(),
            message,
        }],
        applies: Vec::new(),
        watch: None,
        inventory: None,
    }
}

/// Sets the outcome of a node's step: its phase and message, the transition time kept when
/// the phase is the one it had.
fn settle(
    status: &mut NodeStatus,
    prior: Option<&NodeStatus>,
    phase: NodePhase,
    message: String,
    now: jiff::Timestamp,
) {
    status.last_transition_time = match prior {
        Some(p) if p.phase == phase && p.last_transition_time.is_some() => {
            p.last_transition_time.clone()
        }
        _ => Some(Time(now)),
    };
    status.phase = phase;
    status.message = Some(message);
}

/// `sha256:` of the object as it would be applied.
pub fn object_hash(object: &Value) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(object.to_string())))
}

/// What every node of one pass shares.
struct PassContext<'a> {
    applier: &'a Applier,
    /// The graph's name (the value of Pequod's resource-graph label).
    graph: &'a str,
    /// The graph's namespace.
    namespace: &'a str,
    config: &'a ExecConfig,
    applies: &'a Arc<Semaphore>,
    /// The pass's clock: every time it writes is this one.
    now: jiff::Timestamp,
}

async fn run_node(pass: &PassContext<'_>, node: &Node, prior: Option<&NodeStatus>) -> NodeRun {
    let now = pass.now;
    let mut run = NodeRun {
        status: carried(prior, NodePhase::Applying, String::new(), now),
        events: Vec::new(),
        applies: Vec::new(),
        watch: None,
        inventory: None,
    };
    match step(pass, node, prior, &mut run).await {
        Ok(()) => run.status.failures = 0,
        Err(error) => {
            let message = error.to_string();
            if prior.map(|p| (p.phase, p.message.as_deref()))
                != Some((NodePhase::Failed, Some(&message)))
            {
                tracing::warn!(node = %node.id, kind = node.kind().unwrap_or_default(), namespace = node.namespace().unwrap_or(pass.namespace), name = node.name().unwrap_or_default(), %message, "node failed");
                run.events.push(NodeEvent::Failed {
                    node: node.id.clone(),
                    message: message.clone(),
                });
            }
            run.status.failures = prior.map_or(0, |p| p.failures).saturating_add(1);
            settle(&mut run.status, prior, NodePhase::Failed, message, now);
        }
    }
    run
}

async fn step(
    pass: &PassContext<'_>,
    node: &Node,
    prior: Option<&NodeStatus>,
    run: &mut NodeRun,
) -> Result<(), ApplyError> {
    let PassContext {
        applier,
        graph: _,
        namespace: graph_namespace,
        config,
        applies,
        now,
    } = *pass;
    let (api_version, kind) = type_of(&node.object)?;
    let served = applier.served(&api_version, &kind).await?;
    let mut object = node.object.clone();
    let mode = node.apply_policy.mode;
    let namespace = if served.namespaced {
        let namespace = node.namespace().unwrap_or(graph_namespace).to_string();
        if namespace != graph_namespace
            && !config.allow_cross_namespace
            && mode != ApplyMode::Observe
        {
            return Err(ApplyError::Malformed(format!(
                "{kind} {namespace}/{} is outside the graph's namespace {graph_namespace}: refused (the operator runs without --allow-cross-namespace)",
                node.name().unwrap_or_default()
            )));
        }
        object["metadata"]["namespace"] = Value::String(namespace.clone());
        Some(namespace)
    } else {
        if !config.allow_cluster_scoped && mode != ApplyMode::Observe {
            return Err(ApplyError::Malformed(format!(
                "{kind} {} is cluster-scoped: refused (the operator runs without --allow-cluster-scoped)",
                node.name().unwrap_or_default()
            )));
        }
        if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            metadata.remove("namespace");
        }
        None
    };
    let name = node.name().unwrap_or_default().to_string();
    run.watch = Some(WatchTarget {
        served: served.clone(),
        observed: (mode == ApplyMode::Observe).then(|| (namespace.clone(), name.clone())),
    });
    let hash = object_hash(&object);
    let live = applier.get(&served, namespace.as_deref(), &name).await?;
    let same_hash = prior.and_then(|p| p.applied_hash.as_deref()) == Some(hash.as_str());
    let adopted_before = prior.is_some_and(|p| p.applied_hash.is_some());
    if node.adopted == Some(AdoptStrategy::TakeOwnership) && live.is_none() && !adopted_before {
        return Err(ApplyError::Malformed(format!(
            "{kind} {} does not exist: nothing to adopt (Transform.spec.adopt)",
            shown(namespace.as_deref(), &name)
        )));
    }
    let mine = |object: &Value| {
        object
            .pointer("/metadata/labels")
            .and_then(|labels| labels.get(labels::RESOURCE_GRAPH))
            .and_then(Value::as_str)
            == Some(pass.graph)
    };
    let (live, owned) = match (mode, live) {
        (ApplyMode::Observe, None) => (None, false),
        (ApplyMode::Observe, Some(live)) => (Some(live), false),
        // Create never updates, and an object it did not create is not its to delete.
        (ApplyMode::Create, Some(live)) => {
            let owned = mine(&live);
            (Some(live), owned)
        }
        (ApplyMode::Create, None) => {
            let _permit = applies.acquire().await;
            let started = std::time::Instant::now();
            let created = applier.create(&served, &object).await;
            run.applies.push((created.is_ok(), started.elapsed()));
            run.status.attempts += 1;
            let live = match created? {
                Some(created) => created,
                None => applier
                    .get(&served, namespace.as_deref(), &name)
                    .await?
                    .unwrap_or_default(),
            };
            run.events.push(NodeEvent::Applied {
                node: node.id.clone(),
                why: "created".into(),
            });
            let owned = mine(&live);
            (Some(live), owned)
        }
        (ApplyMode::Apply, live) => {
            let edited = live.as_ref().is_some_and(|l| drifted(l, &object));
            if same_hash
                && !edited
                && let Some(live) = live
            {
                (Some(live), true)
            } else {
                let why = match (&live, same_hash) {
                    (None, _) => "created",
                    (Some(_), true) => "drift corrected",
                    (Some(_), false) => "changed",
                };
                // Restoring what was applied before takes the fields back from whoever
                // edited them; a new version of the object obeys the conflict policy.
                let force = node.apply_policy.conflict_policy == ConflictPolicy::Force
                    || (same_hash && edited);
                let _permit = applies.acquire().await;
                let started = std::time::Instant::now();
                let mut applied = applier.apply(&served, &object, force).await;
                let mut why = why.to_string();
                // Fields of an object this graph applied before, since edited by hand (an
                // update, not another manager's apply), are Pequod's to take back.
                if let Err(ApplyError::Conflict {
                    edits_only: true, ..
                }) = &applied
                    && prior.is_some_and(|p| p.applied_hash.is_some())
                {
                    applied = applier.apply(&served, &object, true).await;
                    why.push_str(", edits by hand overridden");
                }
                run.applies.push((applied.is_ok(), started.elapsed()));
                run.status.attempts += 1;
                let applied = applied?;
                run.events.push(NodeEvent::Applied {
                    node: node.id.clone(),
                    why,
                });
                (Some(applied), true)
            }
        }
    };
    if mode != ApplyMode::Observe {
        run.status.applied_hash = Some(hash);
    }
    let reference =
        |live: &Value| object_ref(&api_version, &kind, namespace.as_deref(), &name, live);
    if let Some(live) = &live {
        run.status.object = Some(reference(live));
        if owned {
            run.inventory = Some(InventoryEntry {
                object: reference(live),
                node_id: node.id.clone(),
                deletion_policy: node.deletion_policy,
            });
        }
    }
    let readiness = match &live {
        Some(live) => readiness::evaluate(&node.ready_when, live),
        None => Readiness::Waiting(format!(
            "waiting for {kind} {} to exist (observed, not managed by this graph)",
            shown(namespace.as_deref(), &name)
        )),
    };
    let drift_note = run
        .events
        .iter()
        .any(|e| matches!(e, NodeEvent::Applied { why, .. } if why == "drift corrected"));
    let was = prior.map(|p| p.phase);
    match readiness {
        Readiness::Ready => {
            run.status.waiting_since = None;
            let (phase, message) = match node.adopted {
                Some(AdoptStrategy::TakeOwnership) => (
                    NodePhase::Adopted,
                    "adopted: managed by this graph".to_string(),
                ),
                Some(AdoptStrategy::Mirror) => (
                    NodePhase::Adopted,
                    "mirrored: observed, never modified".to_string(),
                ),
                // A correction stays in the message until the object changes again.
                None => match prior {
                    _ if drift_note => (NodePhase::Ready, "Ready (drift corrected)".to_string()),
                    Some(p) if p.phase == NodePhase::Ready && run.applies.is_empty() => (
                        NodePhase::Ready,
                        p.message.clone().unwrap_or_else(|| "Ready".to_string()),
                    ),
                    _ => (NodePhase::Ready, "Ready".to_string()),
                },
            };
            if was != Some(phase) {
                run.events.push(match node.adopted {
                    Some(strategy) => NodeEvent::Adopted {
                        node: node.id.clone(),
                        strategy,
                    },
                    None => NodeEvent::Ready {
                        node: node.id.clone(),
                    },
                });
            }
            settle(&mut run.status, prior, phase, message, now);
        }
        Readiness::Waiting(message) => {
            // One clock per wait: it starts when this version is applied, or when the
            // object stops being ready, and a timeout counts from it.
            let still_waiting =
                same_hash && matches!(was, Some(NodePhase::WaitingReady | NodePhase::Failed));
            let since = match (&run.status.waiting_since, still_waiting) {
                (Some(since), true) => since.0,
                _ => now,
            };
            run.status.waiting_since = Some(Time(since));
            let waited = now.duration_since(since).as_secs();
            if let Some(timeout) = node.timeout_seconds
                && waited >= i64::from(timeout)
            {
                return Err(ApplyError::Malformed(format!(
                    "not ready after {timeout}s: {message}"
                )));
            }
            settle(
                &mut run.status,
                prior,
                NodePhase::WaitingReady,
                message,
                now,
            );
        }
    }
    Ok(())
}

fn shown(namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(namespace) => format!("{namespace}/{name}"),
        None => name.to_string(),
    }
}

fn object_ref(
    api_version: &str,
    kind: &str,
    namespace: Option<&str>,
    name: &str,
    live: &Value,
) -> ObjectRef {
    ObjectRef {
        api_version: api_version.to_string(),
        kind: kind.to_string(),
        namespace: namespace.map(str::to_string),
        name: name.to_string(),
        uid: live
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .map(str::to_string),
    }
}

/// Deletes the objects that left the graph, last first; returns those still to go.
async fn prune(
    applier: &Applier,
    applies: &Semaphore,
    leftovers: Vec<InventoryEntry>,
    events: &mut Vec<NodeEvent>,
) -> Vec<InventoryEntry> {
    let mut kept = Vec::new();
    for entry in leftovers.into_iter().rev() {
        match delete_entry(applier, applies, &entry).await {
            Ok(Deletion::Gone | Deletion::Orphaned) => {}
            Ok(Deletion::Deleted) => events.push(NodeEvent::Pruned {
                object: describe(&entry.object),
            }),
            Err(error) => {
                tracing::warn!(object = %describe(&entry.object), %error, "prune failed");
                kept.push(entry);
            }
        }
    }
    kept.reverse();
    kept
}

/// `Kind namespace/name`.
pub fn describe(object: &ObjectRef) -> String {
    format!(
        "{} {}",
        object.kind,
        shown(object.namespace.as_deref(), &object.name)
    )
}

/// What deleting an inventory entry did.
#[derive(Debug, PartialEq, Eq)]
pub enum Deletion {
    /// A delete request was accepted.
    Deleted,
    /// The object was already gone.
    Gone,
    /// The object stays: deletionPolicy Orphan or the prune annotation.
    Orphaned,
}

/// Deletes one managed object unless it is to be orphaned; the delete takes one of the
/// `applies` permits, like every write.
pub async fn delete_entry(
    applier: &Applier,
    applies: &Semaphore,
    entry: &InventoryEntry,
) -> Result<Deletion, ApplyError> {
    if entry.deletion_policy == DeletionPolicy::Orphan {
        return Ok(Deletion::Orphaned);
    }
    let object = &entry.object;
    let served = match applier.served(&object.api_version, &object.kind).await {
        Ok(served) => served,
        // Its CRD is gone, and every object of the kind with it.
        Err(ApplyError::KindNotInstalled { .. }) => return Ok(Deletion::Gone),
        Err(error) => return Err(error),
    };
    let namespace = object.namespace.as_deref();
    let Some(live) = applier.get(&served, namespace, &object.name).await? else {
        return Ok(Deletion::Gone);
    };
    let uid = live.pointer("/metadata/uid").and_then(Value::as_str);
    if object.uid.is_some() && uid != object.uid.as_deref() {
        // Someone else's object now has that name.
        return Ok(Deletion::Orphaned);
    }
    let annotation = live
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(PRUNE_ANNOTATION))
        .and_then(Value::as_str);
    if annotation == Some("disabled") {
        return Ok(Deletion::Orphaned);
    }
    if live.pointer("/metadata/deletionTimestamp").is_some() {
        return Ok(Deletion::Deleted);
    }
    let _permit = applies.acquire().await;
    if applier.delete(&served, namespace, &object.name).await? {
        Ok(Deletion::Deleted)
    } else {
        Ok(Deletion::Gone)
    }
}

/// When to run again although no watch event came: failed nodes back off (exponentially,
/// with jitter), waiting nodes with a timeout are looked at when it expires.
fn requeue_after(
    nodes: &[Node],
    statuses: &BTreeMap<String, NodeStatus>,
    now: jiff::Timestamp,
) -> Option<Duration> {
    let mut soonest: Option<Duration> = None;
    let mut consider = |d: Duration| soonest = Some(soonest.map_or(d, |s| s.min(d)));
    for node in nodes {
        let Some(status) = statuses.get(&node.id) else {
            continue;
        };
        match status.phase {
            NodePhase::Failed => consider(retry_delay(status.failures)),
            NodePhase::WaitingReady => {
                if let (Some(timeout), Some(since)) =
                    (node.timeout_seconds, status.waiting_since.as_ref())
                {
                    let waited = now.duration_since(since.0).as_secs().max(0);
                    let left = i64::from(timeout).saturating_sub(waited).max(0);
                    consider(Duration::from_secs(u64::try_from(left).unwrap_or(0) + 1));
                }
            }
            _ => {}
        }
    }
    soonest
}

/// Exponential backoff with jitter after `failures` failures in a row: about 1 s, 2 s,
/// 4 s, ... up to 5 min.
pub fn retry_delay(failures: u32) -> Duration {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(Duration::from_secs(300))
        .with_jitter()
        .without_max_times()
        .build()
        .nth(usize::try_from(failures.saturating_sub(1)).unwrap_or(0))
        .unwrap_or(Duration::from_secs(300))
}

/// Longest condition message Kubernetes accepts.
const MAX_CONDITION_MESSAGE: usize = 32768;

/// A metav1.Condition, keeping the previous transition time when the status is unchanged.
pub fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: jiff::Timestamp,
    previous: &[Condition],
) -> Condition {
    let status = if status { "True" } else { "False" };
    condition_with_status(type_, status, reason, message, generation, now, previous)
}

/// [`condition`] with any status: `True`, `False` or `Unknown`.
pub fn condition_with_status(
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: jiff::Timestamp,
    previous: &[Condition],
) -> Condition {
    let status = status.to_string();
    // metav1.Condition allows 32768 bytes of message.
    let mut message = message.to_string();
    if message.len() > MAX_CONDITION_MESSAGE {
        let mut end = MAX_CONDITION_MESSAGE - 3;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push_str("...");
    }
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or(Time(now), |c| c.last_transition_time.clone());
    Condition {
        type_: type_.to_string(),
        status,
        reason: reason.to_string(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

fn summarize(
    graph: &ResourceGraph,
    previous: &ResourceGraphStatus,
    nodes: BTreeMap<String, NodeStatus>,
    inventory: Vec<InventoryEntry>,
    now: jiff::Timestamp,
) -> ResourceGraphStatus {
    let count = |phase: NodePhase| nodes.values().filter(|s| s.phase == phase).count();
    let total = nodes.len();
    let ready = count(NodePhase::Ready) + count(NodePhase::Adopted);
    let failed = count(NodePhase::Failed);
    let blocked = count(NodePhase::Blocked);
    let applied_any = nodes
        .values()
        .any(|s| s.applied_hash.is_some() || is_ready(s.phase));
    let phase = if ready == total {
        GraphPhase::Ready
    } else if failed > 0 {
        GraphPhase::Failed
    } else if applied_any {
        GraphPhase::Progressing
    } else {
        GraphPhase::Pending
    };
    let generation = graph.metadata.generation;
    let named = |phases: &[NodePhase]| -> String {
        nodes
            .iter()
            .filter(|(_, s)| phases.contains(&s.phase))
            .map(|(id, s)| format!("{id}: {}", s.message.as_deref().unwrap_or("")))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let apply_failures: Vec<&String> = nodes
        .iter()
        .filter(|(_, s)| s.phase == NodePhase::Failed && s.applied_hash.is_none())
        .map(|(id, _)| id)
        .collect();
    let applied = if apply_failures.is_empty() {
        condition(
            "Applied",
            true,
            "ApplySucceeded",
            "every runnable node is applied",
            generation,
            now,
            &previous.conditions,
        )
    } else {
        condition(
            "Applied",
            false,
            "ApplyFailed",
            &named(&[NodePhase::Failed]),
            generation,
            now,
            &previous.conditions,
        )
    };
    let ready_condition = match phase {
        GraphPhase::Ready => condition(
            "Ready",
            true,
            "AllNodesReady",
            &format!("{ready}/{total} nodes ready"),
            generation,
            now,
            &previous.conditions,
        ),
        GraphPhase::Failed => condition(
            "Ready",
            false,
            "NodeFailed",
            &named(&[NodePhase::Failed]),
            generation,
            now,
            &previous.conditions,
        ),
        _ => condition(
            "Ready",
            false,
            "Progressing",
            &format!(
                "{ready}/{total} nodes ready; {}",
                named(&[
                    NodePhase::WaitingReady,
                    NodePhase::Applying,
                    NodePhase::Pending
                ])
            ),
            generation,
            now,
            &previous.conditions,
        ),
    };
    let _ = blocked;
    ResourceGraphStatus {
        phase: Some(phase),
        summary: Some(GraphSummary {
            total: u32::try_from(total).unwrap_or(u32::MAX),
            ready: u32::try_from(ready).unwrap_or(u32::MAX),
            failed: u32::try_from(failed).unwrap_or(u32::MAX),
            ready_text: format!("{ready}/{total}"),
        }),
        nodes,
        inventory,
        conditions: vec![applied, ready_condition],
        observed_generation: generation,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_grow_and_stay_bounded() {
        let first = retry_delay(1);
        assert!(
            first >= Duration::from_secs(1) && first <= Duration::from_secs(2),
            "{first:?}"
        );
        let fifth = retry_delay(5);
        assert!(
            fifth >= Duration::from_secs(16) && fifth <= Duration::from_secs(32),
            "{fifth:?}"
        );
        assert!(retry_delay(40) <= Duration::from_secs(600));
    }

    #[test]
    fn conditions_keep_their_transition_time_while_unchanged() {
        let earlier = jiff::Timestamp::from_second(1_000).expect("valid");
        let later = jiff::Timestamp::from_second(2_000).expect("valid");
        let first = condition("Ready", false, "Progressing", "a", Some(1), earlier, &[]);
        let same = condition(
            "Ready",
            false,
            "Progressing",
            "b",
            Some(2),
            later,
            std::slice::from_ref(&first),
        );
        assert_eq!(same.last_transition_time, Time(earlier));
        let flipped = condition("Ready", true, "AllNodesReady", "c", Some(2), later, &[same]);
        assert_eq!(flipped.last_transition_time, Time(later));
    }
}
