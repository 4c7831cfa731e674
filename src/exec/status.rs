//! Node and graph status: a node's phase and message with its transition time, and the
//! graph's phase, summary and conditions summed up from its nodes.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::condition::{ConditionWriter, Status, reasons, types};
use crate::api::{
    GraphPhase, GraphSummary, InventoryEntry, NodePhase, NodeStatus, ResourceGraph,
    ResourceGraphStatus,
};
use crate::graph::IntegrityErrors;

use super::inventory::Orphaning;

/// Whether a node in this phase releases its dependents.
pub fn is_ready(phase: NodePhase) -> bool {
    matches!(phase, NodePhase::Ready | NodePhase::Adopted)
}

/// A status with `phase`, `reason` and `message`, keeping the previous attempts, hash and
/// object.
pub(super) fn carried(
    prior: Option<&NodeStatus>,
    phase: NodePhase,
    reason: Option<&str>,
    message: String,
    now: jiff::Timestamp,
) -> NodeStatus {
    let mut status = prior.cloned().unwrap_or_else(|| NodeStatus::new(phase));
    settle(&mut status, prior, phase, reason, message, now);
    status
}

/// Sets the outcome of a node's step: its phase, reason and message, the transition time
/// kept when the phase is the one it had.
pub(super) fn settle(
    status: &mut NodeStatus,
    prior: Option<&NodeStatus>,
    phase: NodePhase,
    reason: Option<&str>,
    message: String,
    now: jiff::Timestamp,
) {
    status.reason = reason.map(str::to_string);
    status.last_transition_time = match prior {
        Some(p) if p.phase == phase && p.last_transition_time.is_some() => {
            p.last_transition_time.clone()
        }
        _ => Some(Time(now)),
    };
    status.phase = phase;
    status.message = Some(message);
}

/// The status of a graph that cannot be executed: Failed, its inventory kept.
pub(super) fn invalid(
    graph: &ResourceGraph,
    previous: &ResourceGraphStatus,
    errors: &IntegrityErrors,
    now: jiff::Timestamp,
) -> ResourceGraphStatus {
    let conditions = ConditionWriter::new(graph.metadata.generation, now, &previous.conditions);
    ResourceGraphStatus {
        phase: Some(GraphPhase::Failed),
        conditions: vec![conditions.condition(
            types::READY,
            Status::False,
            reasons::INVALID_GRAPH,
            &errors.to_string(),
        )],
        inventory: previous.inventory.clone(),
        observed_generation: graph.metadata.generation,
        ..ResourceGraphStatus::default()
    }
}

/// The status of a graph being deleted, still waiting for `waiting` (`Kind namespace/name`)
/// to be gone.
pub fn deleting(
    graph: &ResourceGraph,
    waiting: &[String],
    now: jiff::Timestamp,
) -> ResourceGraphStatus {
    let mut status = graph.status.clone().unwrap_or_default();
    let conditions = ConditionWriter::new(graph.metadata.generation, now, &status.conditions);
    let ready = conditions.condition(
        types::READY,
        Status::False,
        reasons::DELETING,
        &format!("waiting for {} to be deleted", waiting.join(", ")),
    );
    status.phase = Some(GraphPhase::Deleting);
    status.conditions = vec![ready];
    status
}

/// Lists the objects left behind as `Orphaned` nodes: those this pass left (`orphaned`),
/// and those an earlier pass of this generation left, until the next generation.
pub(super) fn keep_orphans(
    graph: &ResourceGraph,
    previous: &ResourceGraphStatus,
    orphaned: &[(InventoryEntry, Orphaning)],
    statuses: &mut BTreeMap<String, NodeStatus>,
    now: jiff::Timestamp,
) {
    let in_graph = |id: &str| graph.spec.nodes.iter().any(|node| node.id == id);
    if previous.observed_generation == graph.metadata.generation {
        for (id, status) in &previous.nodes {
            if status.phase == NodePhase::Orphaned && !in_graph(id) {
                statuses.insert(id.clone(), status.clone());
            }
        }
    }
    for (entry, why) in orphaned {
        if in_graph(&entry.node_id) {
            continue;
        }
        let prior = previous.nodes.get(&entry.node_id);
        let message = format!("left the graph; stays in the cluster ({why})");
        let mut status = carried(prior, NodePhase::Orphaned, None, message, now);
        status.object = Some(entry.object.clone());
        status.failures = 0;
        status.waiting_since = None;
        status.applied_hash = None;
        status.owned_hash = None;
        statuses.insert(entry.node_id.clone(), status);
    }
}

/// The graph's status after a pass: its phase, summary and conditions from its nodes.
pub(super) fn summarize(
    graph: &ResourceGraph,
    previous: &ResourceGraphStatus,
    nodes: BTreeMap<String, NodeStatus>,
    inventory: Vec<InventoryEntry>,
    now: jiff::Timestamp,
) -> ResourceGraphStatus {
    let count = |phase: NodePhase| nodes.values().filter(|s| s.phase == phase).count();
    // Objects left behind are listed, not counted: they are no longer the graph's.
    let total = nodes.len() - count(NodePhase::Orphaned);
    let ready = count(NodePhase::Ready) + count(NodePhase::Adopted);
    let failed = count(NodePhase::Failed);
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
    let named = |phases: &[NodePhase]| -> String {
        nodes
            .iter()
            .filter(|(_, s)| phases.contains(&s.phase))
            .map(|(id, s)| format!("{id}: {}", s.message.as_deref().unwrap_or("")))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let conditions = ConditionWriter::new(graph.metadata.generation, now, &previous.conditions);
    let apply_failed = nodes
        .values()
        .any(|s| s.phase == NodePhase::Failed && s.applied_hash.is_none());
    let applied = if apply_failed {
        conditions.condition(
            types::APPLIED,
            Status::False,
            reasons::APPLY_FAILED,
            &named(&[NodePhase::Failed]),
        )
    } else {
        conditions.condition(
            types::APPLIED,
            Status::True,
            reasons::APPLY_SUCCEEDED,
            "every runnable node is applied",
        )
    };
    let ready_condition = match phase {
        GraphPhase::Ready => conditions.condition(
            types::READY,
            Status::True,
            reasons::ALL_NODES_READY,
            &format!("{ready}/{total} nodes ready"),
        ),
        GraphPhase::Failed => conditions.condition(
            types::READY,
            Status::False,
            reasons::NODE_FAILED,
            &named(&[NodePhase::Failed]),
        ),
        _ => conditions.condition(
            types::READY,
            Status::False,
            reasons::PROGRESSING,
            &format!(
                "{ready}/{total} nodes ready; {}",
                named(&[
                    NodePhase::WaitingReady,
                    NodePhase::Applying,
                    NodePhase::Pending
                ])
            ),
        ),
    };
    let counted = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    ResourceGraphStatus {
        phase: Some(phase),
        summary: Some(GraphSummary {
            total: counted(total),
            ready: counted(ready),
            failed: counted(failed),
            ready_text: format!("{ready}/{total}"),
        }),
        nodes,
        inventory,
        conditions: vec![applied, ready_condition],
        observed_generation: graph.metadata.generation,
    }
}
