//! Inventory: the objects a graph owns. After a pass the inventory is what the nodes that
//! ran own, plus what the other nodes owned before; objects that left the graph are pruned,
//! dependents first; when the graph is deleted, everything goes in reverse dependency
//! order, one wave at a time.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::Value;
use tokio::sync::Semaphore;

use super::NodeEvent;
use super::cluster::{ApiError, Applier, Served};
use super::ownership::{GraphId, OWNERSHIP_LABELS, Owner, owner};
use crate::api::{
    ApplyMode, DeletionPolicy, InventoryEntry, Node, ObjectKey, PRUNE_ANNOTATION, PRUNE_DISABLED,
    ResourceGraph,
};
use crate::graph::Dag;

/// The previous inventory sorted out against this pass: entries of nodes that did not run
/// in it are kept (`kept`); objects whose node now only observes them (Observe, Mirror)
/// leave the inventory without being deleted; the rest left the graph (`leftovers`).
pub(super) struct CarriedOver {
    pub kept: Vec<InventoryEntry>,
    pub leftovers: Vec<InventoryEntry>,
}

/// Sorts `previous` against the entries the nodes of this pass wrote (`fresh`).
pub(super) fn carry_over(
    previous: &[InventoryEntry],
    fresh: &[InventoryEntry],
    nodes: &[Node],
) -> CarriedOver {
    let fresh: HashSet<ObjectKey> = fresh.iter().map(|entry| entry.object.key()).collect();
    let mut carried = CarriedOver {
        kept: Vec::new(),
        leftovers: Vec::new(),
    };
    for entry in previous {
        let key = entry.object.key();
        if fresh.contains(&key) {
            continue;
        }
        match nodes.iter().find(|node| targets(node, &key)) {
            Some(node) if node.apply_policy.mode == ApplyMode::Observe => {}
            Some(_) => carried.kept.push(entry.clone()),
            None => carried.leftovers.push(entry.clone()),
        }
    }
    carried
}

/// Whether `node` renders the object `key` names (namespaces compared only when both are
/// known: offline defaulting may have namespaced a cluster-scoped kind).
fn targets(node: &Node, key: &ObjectKey) -> bool {
    let Some(rendered) = node.object_key() else {
        return false;
    };
    rendered.group == key.group
        && rendered.kind == key.kind
        && rendered.name == key.name
        && (rendered.namespace.is_empty()
            || key.namespace.is_empty()
            || rendered.namespace == key.namespace)
}

/// Sorts `inventory` in dependency order, entries of nodes no longer in the graph last:
/// pruning and deletion go in reverse.
pub(super) fn sort(inventory: &mut [InventoryEntry], dag: &Dag) {
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
}

/// What pruning left behind.
pub(super) struct Pruned {
    /// Entries still to go (their delete failed): they stay in the inventory.
    pub kept: Vec<InventoryEntry>,
    /// Objects released and left in the cluster, and why.
    pub orphaned: Vec<(InventoryEntry, Orphaning)>,
}

/// Deletes the objects that left the graph, last first.
pub(super) async fn prune(
    applier: &Applier,
    graph: &GraphId,
    applies: &Semaphore,
    leftovers: Vec<InventoryEntry>,
    events: &mut Vec<NodeEvent>,
) -> Pruned {
    let mut pruned = Pruned {
        kept: Vec::new(),
        orphaned: Vec::new(),
    };
    for entry in leftovers.into_iter().rev() {
        match delete_entry(applier, graph, applies, &entry).await {
            Ok(Deletion::Gone | Deletion::NotOwned) => {}
            Ok(Deletion::Orphaned(why)) => {
                events.push(NodeEvent::Orphaned {
                    object: entry.object.to_string(),
                    why,
                });
                pruned.orphaned.push((entry, why));
            }
            Ok(Deletion::Deleted) => events.push(NodeEvent::Pruned {
                object: entry.object.to_string(),
            }),
            Err(error) => {
                tracing::warn!(object = %entry.object, %error, "prune failed");
                pruned.kept.push(entry);
            }
        }
    }
    pruned.kept.reverse();
    pruned
}

/// Why an object that left its graph stays in the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Orphaning {
    /// Its node said `deletionPolicy: Orphan`.
    Policy,
    /// The object carries `platform.pequod.io/prune: disabled`.
    Annotation,
    /// The Transform says `prune: false` (the object stays in the inventory).
    PruneDisabled,
}

impl std::fmt::Display for Orphaning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Orphaning::Policy => "deletionPolicy: Orphan",
            Orphaning::Annotation => "the annotation platform.pequod.io/prune: disabled",
            Orphaning::PruneDisabled => "the Transform's prune: false",
        })
    }
}

/// What deleting an inventory entry did.
#[derive(Debug, PartialEq, Eq)]
pub enum Deletion {
    /// A delete request was accepted (or the object is already being deleted).
    Deleted,
    /// The object was already gone.
    Gone,
    /// The object stays, released by the graph (its ownership labels removed, so another
    /// graph may adopt it): deletionPolicy Orphan or the prune annotation.
    Orphaned(Orphaning),
    /// The object is not this graph's any more: another graph owns it, or the name now
    /// belongs to another object (another uid). Left alone.
    NotOwned,
}

/// Deletes one object of `graph`'s inventory, unless it is to be orphaned (then it is
/// released) or is no longer the graph's. Only an object that carries the graph's
/// ownership labels and the uid the inventory recorded is deleted (the uid is a
/// precondition of the delete). Writes take one of the `applies` permits.
pub async fn delete_entry(
    applier: &Applier,
    graph: &GraphId,
    applies: &Semaphore,
    entry: &InventoryEntry,
) -> Result<Deletion, ApiError> {
    let object = &entry.object;
    let served = match applier.served(&object.api_version, &object.kind).await {
        Ok(served) => served,
        // Its CRD is gone, and every object of the kind with it.
        Err(ApiError::KindNotInstalled { .. }) => return Ok(Deletion::Gone),
        Err(error) => return Err(error),
    };
    let namespace = object.namespace.as_deref();
    let Some(live) = applier.get(&served, namespace, &object.name).await? else {
        return Ok(Deletion::Gone);
    };
    match fate(entry, &live, graph) {
        Deletion::Deleted if live.pointer("/metadata/deletionTimestamp").is_none() => {}
        Deletion::Orphaned(why) => {
            let _permit = applies.acquire().await;
            return release(applier, &served, entry, why).await;
        }
        settled => return Ok(settled),
    }
    let _permit = applies.acquire().await;
    match applier
        .delete(&served, namespace, &object.name, object.uid.as_deref())
        .await
    {
        Ok(true) => Ok(Deletion::Deleted),
        Ok(false) => Ok(Deletion::Gone),
        // The uid precondition failed: the name belongs to another object now.
        Err(ApiError::Refused { code: 409, .. }) => Ok(Deletion::NotOwned),
        Err(error) => Err(error),
    }
}

/// What deleting the inventory entry of the object found `live` comes to: `NotOwned` when
/// it is not the graph's (another owner, or another object under the name), `Orphaned`
/// when its node or the object itself says it stays, `Deleted` otherwise.
pub fn fate(entry: &InventoryEntry, live: &Value, graph: &GraphId) -> Deletion {
    let object = &entry.object;
    let uid = live.pointer("/metadata/uid").and_then(Value::as_str);
    if (object.uid.is_some() && uid != object.uid.as_deref())
        || owner(live, graph) != Owner::ThisGraph
    {
        return Deletion::NotOwned;
    }
    let annotation = live
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(PRUNE_ANNOTATION))
        .and_then(Value::as_str);
    if entry.deletion_policy == DeletionPolicy::Orphan {
        Deletion::Orphaned(Orphaning::Policy)
    } else if annotation == Some(PRUNE_DISABLED) {
        Deletion::Orphaned(Orphaning::Annotation)
    } else {
        Deletion::Deleted
    }
}

/// Removes the graph's ownership labels from an object it leaves behind.
async fn release(
    applier: &Applier,
    served: &Served,
    entry: &InventoryEntry,
    why: Orphaning,
) -> Result<Deletion, ApiError> {
    let object = &entry.object;
    let found = applier
        .remove_labels(
            served,
            object.namespace.as_deref(),
            &object.name,
            &OWNERSHIP_LABELS,
        )
        .await?;
    Ok(if found {
        Deletion::Orphaned(why)
    } else {
        Deletion::Gone
    })
}

/// The inventory grouped for deletion: objects whose nodes nothing else depends on first
/// (objects of nodes no longer in the graph before everything), the roots last.
pub fn deletion_waves(
    graph: &ResourceGraph,
    inventory: &[InventoryEntry],
) -> Vec<Vec<InventoryEntry>> {
    let Ok(dag) = Dag::build(&graph.spec.nodes) else {
        return inventory.iter().rev().map(|e| vec![e.clone()]).collect();
    };
    // Height of a node: 0 for leaves, 1 + the highest dependent otherwise.
    let mut height: HashMap<&str, usize> = HashMap::new();
    for id in dag.topological_order().iter().rev() {
        let h = dag
            .dependents(id)
            .filter_map(|d| height.get(d.as_str()))
            .map(|h| h + 1)
            .max()
            .unwrap_or(0);
        height.insert(id.as_str(), h);
    }
    let mut waves: BTreeMap<usize, Vec<InventoryEntry>> = BTreeMap::new();
    for entry in inventory {
        let wave = height.get(entry.node_id.as_str()).map_or(0, |h| h + 1);
        waves.entry(wave).or_default().push(entry.clone());
    }
    waves.into_values().collect()
}
