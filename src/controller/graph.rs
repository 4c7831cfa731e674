//! The ResourceGraph controller: one execution pass per reconcile, status written back,
//! and, when the graph is deleted, its objects deleted in reverse dependency order.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use serde_json::json;

use super::watches::object_key;
use super::{Context, Error, measured, retry_action};
use crate::api::{GraphPhase, InventoryEntry, ResourceGraph, ResourceGraphStatus};
use crate::apply::FIELD_MANAGER;
use crate::exec::{self, Deletion, NodeEvent, describe};
use crate::graph::Dag;

/// Finalizer that keeps a ResourceGraph until its objects are deleted.
pub const FINALIZER: &str = "platform.pequod.io/cleanup";

/// Without any event, a graph is looked at again this often (drift the watches missed).
const RESYNC: Duration = Duration::from_secs(300);

const CONTROLLER: &str = "resourcegraph";

/// Reconciles one ResourceGraph.
pub async fn reconcile(graph: Arc<ResourceGraph>, context: Arc<Context>) -> Result<Action, Error> {
    measured(&context, CONTROLLER, reconcile_graph(&graph, &context)).await
}

/// Retries a failed reconcile with backoff.
pub fn error_policy(graph: Arc<ResourceGraph>, error: &Error, _context: Arc<Context>) -> Action {
    tracing::warn!(kind = "ResourceGraph", namespace = graph.namespace().unwrap_or_default(), name = %graph.name_any(), %error, "reconcile failed");
    retry_action(2)
}

fn api(client: &kube::Client, graph: &ResourceGraph) -> Api<ResourceGraph> {
    Api::namespaced(client.clone(), &graph.namespace().unwrap_or_default())
}

fn graph_key(graph: &ResourceGraph) -> String {
    format!(
        "{}/{}",
        graph.namespace().unwrap_or_default(),
        graph.name_any()
    )
}

async fn reconcile_graph(graph: &ResourceGraph, context: &Context) -> Result<Action, Error> {
    let api = api(&context.client, graph);
    let name = graph.name_any();
    if graph.metadata.deletion_timestamp.is_some() {
        return cleanup(graph, context, &api).await;
    }
    if !graph.finalizers().iter().any(|f| f == FINALIZER) {
        let mut finalizers = graph.finalizers().to_vec();
        finalizers.push(FINALIZER.to_string());
        let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": graph.resource_version()}});
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        // The update wakes the controller again.
        return Ok(Action::await_change());
    }

    if graph.spec.suspend {
        // Its Transform is suspended: nothing is applied, pruned or corrected.
        return Ok(Action::await_change());
    }
    let pass = exec::execute(
        &context.applier,
        graph,
        &context.config.exec,
        &context.applies,
    )
    .await;
    for (ok, duration) in &pass.applies {
        let result = if *ok { "success" } else { "error" };
        context
            .metrics
            .apply_total
            .with_label_values(&[result])
            .inc();
        context
            .metrics
            .apply_duration_seconds
            .observe(duration.as_secs_f64());
    }
    let namespace = graph.namespace().unwrap_or_default();
    for entry in &pass.status.inventory {
        if entry.object.namespace.as_deref() != Some(namespace.as_str()) {
            let group = entry
                .object
                .api_version
                .rsplit_once('/')
                .map_or("", |(group, _)| group);
            context.watches.remember_owner(
                object_key(
                    group,
                    &entry.object.kind,
                    entry.object.namespace.as_deref(),
                    &entry.object.name,
                ),
                graph,
            );
        }
    }
    for target in &pass.watch {
        context.watches.ensure(target, graph);
    }
    let was_ready = graph
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .is_some_and(|p| p == GraphPhase::Ready);
    if pass.status.phase == Some(GraphPhase::Ready)
        && !was_ready
        && let Some(rendered) = &graph.spec.metadata.rendered_at
    {
        let elapsed = jiff::Timestamp::now().duration_since(rendered.0);
        context
            .metrics
            .graph_execution_duration_seconds
            .observe(elapsed.as_secs_f64().max(0.0));
    }
    context
        .metrics
        .record_graph(&graph_key(graph), Some(&pass.status));
    if graph.status.as_ref() != Some(&pass.status) {
        write_status(&api, graph, &pass.status).await?;
    }
    publish(graph, context, &pass.events).await;
    Ok(Action::requeue(pass.requeue.unwrap_or(RESYNC).min(RESYNC)))
}

/// Writes the status of the `graph` this pass read: a precondition on its
/// resourceVersion makes a pass that started from a stale copy retry instead of
/// overwriting what a newer pass wrote (an inventory entry, say).
async fn write_status(
    api: &Api<ResourceGraph>,
    graph: &ResourceGraph,
    status: &ResourceGraphStatus,
) -> Result<(), Error> {
    let patch = json!({
        "apiVersion": crate::api::API_VERSION,
        "kind": "ResourceGraph",
        "metadata": {"resourceVersion": graph.resource_version()},
        "status": status,
    });
    api.patch_status(
        &graph.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

async fn publish(graph: &ResourceGraph, context: &Context, events: &[NodeEvent]) {
    for event in events {
        let (type_, reason, note) = match event {
            NodeEvent::Applied { node, why } => (
                EventType::Normal,
                "NodeApplied",
                format!("node {node}: {why}"),
            ),
            NodeEvent::Ready { node } => (
                EventType::Normal,
                "NodeReady",
                format!("node {node} is Ready"),
            ),
            NodeEvent::Failed { node, message } => (
                EventType::Warning,
                "NodeFailed",
                format!("node {node}: {message}"),
            ),
            NodeEvent::Adopted { node, strategy } => (
                EventType::Normal,
                "Adopted",
                format!("node {node}: existing object adopted ({strategy:?})"),
            ),
            NodeEvent::Pruned { object } => (
                EventType::Normal,
                "Pruned",
                format!("{object} left the graph and was deleted"),
            ),
        };
        context.event(graph, type_, reason, note).await;
    }
}

/// Deletes the graph's objects in reverse dependency order, one wave at a time, waiting for
/// each wave to be gone; then lets the graph go.
async fn cleanup(
    graph: &ResourceGraph,
    context: &Context,
    api: &Api<ResourceGraph>,
) -> Result<Action, Error> {
    if !graph.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    let inventory = graph
        .status
        .as_ref()
        .map(|s| s.inventory.clone())
        .unwrap_or_default();
    let waves = deletion_waves(graph, &inventory);
    let mut remaining: Vec<InventoryEntry> = Vec::new();
    for wave in waves {
        let mut pending = Vec::new();
        for entry in wave {
            match exec::delete_entry(&context.applier, &context.applies, &entry).await {
                Ok(Deletion::Gone | Deletion::Orphaned) => {}
                Ok(Deletion::Deleted) => pending.push(entry),
                Err(error) => {
                    tracing::warn!(object = %describe(&entry.object), %error, "delete failed");
                    pending.push(entry);
                }
            }
        }
        if !pending.is_empty() {
            remaining = pending;
            break;
        }
    }
    if !remaining.is_empty() {
        let mut status = graph.status.clone().unwrap_or_default();
        let waiting: Vec<String> = remaining.iter().map(|e| describe(&e.object)).collect();
        status.phase = Some(GraphPhase::Deleting);
        status.conditions = vec![exec::condition(
            "Ready",
            false,
            "Deleting",
            &format!("waiting for {} to be deleted", waiting.join(", ")),
            graph.metadata.generation,
            jiff::Timestamp::now(),
            &status.conditions,
        )];
        if graph.status.as_ref() != Some(&status) {
            write_status(api, graph, &status).await?;
        }
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let finalizers: Vec<String> = graph
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": graph.resource_version()}});
    api.patch(
        &graph.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    context.metrics.record_graph(&graph_key(graph), None);
    Ok(Action::await_change())
}

/// The inventory grouped for deletion: objects whose nodes nothing else depends on first
/// (objects of nodes no longer in the graph before everything), the roots last.
fn deletion_waves(graph: &ResourceGraph, inventory: &[InventoryEntry]) -> Vec<Vec<InventoryEntry>> {
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
