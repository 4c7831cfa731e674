//! Preview: what a pass over a planned graph would do to the cluster, found without changing
//! anything. Every node the graph writes goes through the same placement, guards and
//! ownership rules as a pass, then a server-side apply with `dryRun=All` as the graph's
//! identity: the API server defaults, validates, admits and authorizes it as it would the
//! real write, and answers with the object it would store. The fields Pequod applies are
//! compared before and after. Objects of the previous inventory that no node renders any
//! more are sorted out as a pass would prune them.

use futures::StreamExt;
use serde_json::Value;

use super::drift::{applied_fields, restrict, union_of_fields};
use super::inventory::{self, Deletion, Orphaning};
use super::node::{MayWrite, PassContext, may_write, place};
use super::{Executor, NodeError, graph_id};
use crate::api::{ApplyMode, ConflictPolicy, InventoryEntry, Node, ObjectRef, ResourceGraph};

/// Nodes previewed at once.
const CONCURRENT_NODES: usize = 8;

/// What a pass would do.
#[derive(Clone, Debug, PartialEq)]
pub struct Preview {
    /// Each node of the graph, in the graph's order.
    pub nodes: Vec<NodePreview>,
    /// Objects of the previous inventory no node renders any more.
    pub leaving: Vec<Leaving>,
}

/// What a pass would do with one node's object.
#[derive(Clone, Debug, PartialEq)]
pub struct NodePreview {
    /// The node.
    pub id: String,
    /// Its object, where the pass would place it (namespace settled).
    pub object: ObjectRef,
    /// What would happen to it.
    pub change: Change,
}

/// What a pass would do with one object.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// It does not exist: it would be created as `after` (the fields Pequod applies, as
    /// the API server would store them).
    Create {
        /// The fields Pequod applies, after.
        after: Value,
    },
    /// Fields Pequod applies would change from `before` to `after`.
    Update {
        /// The fields Pequod applies (or applied), as they are.
        before: Value,
        /// The same fields after the apply.
        after: Value,
    },
    /// Nothing would change.
    Unchanged,
    /// The node only reads the object (`mode: Observe`).
    Observed,
    /// The pass would fail on this node: the reason and message its status would show.
    Refused {
        /// The node's reason (Forbidden, Conflict, OwnedByAnotherGraph, ...).
        reason: String,
        /// The message.
        message: String,
    },
}

impl Change {
    /// Whether the cluster would change.
    pub fn changes(&self) -> bool {
        matches!(self, Change::Create { .. } | Change::Update { .. })
    }
}

/// An object that left the graph, and what a pass would do with it.
#[derive(Clone, Debug, PartialEq)]
pub struct Leaving {
    /// The inventory's entry.
    pub object: ObjectRef,
    /// The node that rendered it.
    pub node_id: String,
    /// What would happen to it.
    pub fate: Fate,
}

/// What would happen to an object that left the graph.
#[derive(Clone, Debug, PartialEq)]
pub enum Fate {
    /// Deleted.
    Pruned,
    /// Released and left in the cluster.
    Orphaned(Orphaning),
    /// Nothing: it is gone already, or not the graph's any more.
    Nothing,
    /// It could not be read: the error.
    Unknown(String),
}

/// Previews a pass of `executor` over `graph` (planned, not yet written), whose previous
/// pass left `inventory`. Reads only, as the executor's identity.
pub async fn preview(
    executor: &Executor<'_>,
    graph: &ResourceGraph,
    inventory: &[InventoryEntry],
) -> Preview {
    let id = graph_id(graph);
    let pass = PassContext {
        executor,
        graph: &id,
        inventory,
        now: jiff::Timestamp::now(),
    };
    let nodes: Vec<NodePreview> = futures::stream::iter(&graph.spec.nodes)
        .map(|node| preview_node(&pass, node))
        .buffered(CONCURRENT_NODES)
        .collect()
        .await;
    let written: Vec<InventoryEntry> = nodes
        .iter()
        .filter(|node| !matches!(node.change, Change::Observed))
        .map(|node| InventoryEntry {
            object: node.object.clone(),
            node_id: node.id.clone(),
            deletion_policy: Default::default(),
        })
        .collect();
    let leftovers = inventory::carry_over(inventory, &written, &graph.spec.nodes).leftovers;
    let mut leaving = Vec::with_capacity(leftovers.len());
    for entry in leftovers {
        let fate = if graph.spec.prune {
            fate_of(&pass, &entry).await
        } else {
            Fate::Orphaned(Orphaning::PruneDisabled)
        };
        leaving.push(Leaving {
            object: entry.object,
            node_id: entry.node_id,
            fate,
        });
    }
    Preview { nodes, leaving }
}

async fn preview_node(pass: &PassContext<'_>, node: &Node) -> NodePreview {
    let target = match place(pass, node).await {
        Ok(target) => target,
        Err(error) => {
            return NodePreview {
                id: node.id.clone(),
                object: node.object_ref(),
                change: refused(&error),
            };
        }
    };
    let object = ObjectRef {
        api_version: target.api_version.clone(),
        kind: target.kind.clone(),
        namespace: target.namespace.clone(),
        name: target.name.clone(),
        uid: None,
    };
    let change = match change_of(pass, node, &target).await {
        Ok(change) => change,
        Err(error) => refused(&error),
    };
    NodePreview {
        id: node.id.clone(),
        object,
        change,
    }
}

async fn change_of(
    pass: &PassContext<'_>,
    node: &Node,
    target: &super::node::Target,
) -> Result<Change, NodeError> {
    let mode = node.apply_policy.mode;
    if mode == ApplyMode::Observe {
        return Ok(Change::Observed);
    }
    let applier = &pass.executor.applier;
    let live = applier
        .get(&target.served, target.namespace.as_deref(), &target.name)
        .await
        .map_err(|e| target.refused(pass, "get", e))?;
    if let Some(live) = &live
        && (may_write(pass, node, target, live)? == MayWrite::LeaveAlone
            || mode == ApplyMode::Create)
    {
        return Ok(Change::Unchanged);
    }
    if mode == ApplyMode::Create {
        let created = applier
            .create_dry_run(&target.served, &target.object)
            .await
            .map_err(|e| target.refused(pass, "create", e))?;
        return Ok(match created {
            Some(created) => Change::Create {
                after: applied_part(&created, None),
            },
            None => Change::Unchanged,
        });
    }
    let force = node.apply_policy.conflict_policy == ConflictPolicy::Force;
    let mut applied = applier
        .apply_dry_run(&target.served, &target.object, force)
        .await;
    // As a pass does: fields of an object this graph owned, since edited by hand, are
    // taken back.
    if let Err(super::ApiError::Conflict {
        edits_only: true, ..
    }) = &applied
        && live.is_some()
    {
        applied = applier
            .apply_dry_run(&target.served, &target.object, true)
            .await;
    }
    let after = applied.map_err(|e| target.refused(pass, "patch", e))?;
    Ok(match live {
        None => Change::Create {
            after: applied_part(&after, None),
        },
        Some(live) => {
            let before = applied_part(&live, applied_fields(&after));
            let after = applied_part(&after, applied_fields(&live));
            if before == after {
                Change::Unchanged
            } else {
                Change::Update { before, after }
            }
        }
    })
}

/// The fields of `object` Pequod applies, with those of `more` (the fields of the other
/// side of a comparison: a field Pequod stops applying shows as removed).
fn applied_part(object: &Value, more: Option<&Value>) -> Value {
    let fields = match (applied_fields(object), more) {
        (Some(fields), Some(more)) => union_of_fields(fields, more),
        (Some(fields), None) => fields.clone(),
        (None, Some(more)) => more.clone(),
        (None, None) => return Value::Object(Default::default()),
    };
    let mut part = restrict(object, &fields);
    // Identity of the object, as the rendered object names it.
    for key in ["apiVersion", "kind"] {
        if let Some(value) = object.get(key) {
            part[key] = value.clone();
        }
    }
    part
}

fn refused(error: &NodeError) -> Change {
    Change::Refused {
        reason: error.reason().to_string(),
        message: error.to_string(),
    }
}

/// What pruning `entry` would do, read as the executor's identity.
async fn fate_of(pass: &PassContext<'_>, entry: &InventoryEntry) -> Fate {
    let applier = &pass.executor.applier;
    let object = &entry.object;
    let served = match applier.served(&object.api_version, &object.kind).await {
        Ok(served) => served,
        Err(super::ApiError::KindNotInstalled { .. }) => return Fate::Nothing,
        Err(error) => return Fate::Unknown(error.to_string()),
    };
    match applier
        .get(&served, object.namespace.as_deref(), &object.name)
        .await
    {
        Ok(None) => Fate::Nothing,
        Ok(Some(live)) => match inventory::fate(entry, &live, pass.graph) {
            Deletion::Deleted => Fate::Pruned,
            Deletion::Orphaned(why) => Fate::Orphaned(why),
            Deletion::Gone | Deletion::NotOwned => Fate::Nothing,
        },
        Err(error) => Fate::Unknown(error.to_string()),
    }
}
