//! The ResourceGraph controller: one execution pass per reconcile, status written back,
//! and, when the graph is deleted, its objects deleted in reverse dependency order.

use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use serde_json::json;

use super::{Context, Error, measured, retry_action};
use crate::api::{
    API_VERSION, FIELD_MANAGER, FINALIZER, GraphPhase, InventoryEntry, ResourceGraph,
    ResourceGraphStatus, event_reasons,
};
use crate::exec::inventory::{Deletion, delete_entry, deletion_waves};
use crate::exec::{self, NodeEvent};

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
            context.watches.remember_owner(entry.object.key(), graph);
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
        "apiVersion": API_VERSION,
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
            NodeEvent::Applied {
                node,
                write,
                edits_overridden,
            } => (
                EventType::Normal,
                event_reasons::NODE_APPLIED,
                if *edits_overridden {
                    format!("node {node}: {write}, edits by hand overridden")
                } else {
                    format!("node {node}: {write}")
                },
            ),
            NodeEvent::Ready { node } => (
                EventType::Normal,
                event_reasons::NODE_READY,
                format!("node {node} is Ready"),
            ),
            NodeEvent::Failed { node, message } => (
                EventType::Warning,
                event_reasons::NODE_FAILED,
                format!("node {node}: {message}"),
            ),
            NodeEvent::Adopted { node, strategy } => (
                EventType::Normal,
                event_reasons::ADOPTED,
                format!("node {node}: existing object adopted ({strategy:?})"),
            ),
            NodeEvent::Pruned { object } => (
                EventType::Normal,
                event_reasons::PRUNED,
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
            match delete_entry(&context.applier, &context.applies, &entry).await {
                Ok(Deletion::Gone | Deletion::Orphaned) => {}
                Ok(Deletion::Deleted) => pending.push(entry),
                Err(error) => {
                    tracing::warn!(object = %entry.object, %error, "delete failed");
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
        let waiting: Vec<String> = remaining.iter().map(|e| e.object.to_string()).collect();
        let status = exec::status::deleting(graph, &waiting, jiff::Timestamp::now());
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
