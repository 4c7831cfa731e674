//! The ResourceGraph controller: one execution pass per reconcile, as the graph's identity,
//! status written back, and, when the graph is deleted, its objects deleted in reverse
//! dependency order. Only graphs controlled by an existing Transform are executed (unless
//! the operator runs with `--allow-standalone-graphs`): a graph written by hand would
//! bypass rendering, schemas and policies.

use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use serde_json::json;

use super::cached::{CachedGraph, graph_ref};
use super::{Context, Error, measured, retry_later};
use crate::api::condition::{ConditionWriter, Status, reasons, types};
use crate::api::{
    API_VERSION, FIELD_MANAGER, FINALIZER, GraphPhase, ResourceGraph, ResourceGraphStatus,
    Transform, event_reasons,
};
use crate::exec::inventory::{Deletion, delete_entry, deletion_waves};
use crate::exec::{self, Applier, Executor, Identity, NodeEvent, graph_id};

/// Without any event, a graph is looked at again this often (drift the watches missed).
const RESYNC: Duration = Duration::from_secs(300);

const CONTROLLER: &str = "resourcegraph";

/// How soon a graph whose cached copy predates this replica's last status write is looked
/// at again (the watch brings the write within moments).
const STALE_COPY_RETRY: Duration = Duration::from_millis(250);

/// Reconciles one ResourceGraph.
pub async fn reconcile(graph: Arc<CachedGraph>, context: Arc<Context>) -> Result<Action, Error> {
    let pass = async {
        let graph = graph.graph().map_err(Error::UnreadableGraph)?;
        reconcile_graph(&graph, &context).await
    };
    measured(&context, CONTROLLER, graph.as_ref(), pass).await
}

/// Retries a failed reconcile after a backoff that grows with its failures in a row.
pub fn error_policy(graph: Arc<CachedGraph>, error: &Error, context: Arc<Context>) -> Action {
    retry_later(CONTROLLER, graph.as_ref(), error, &context)
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

/// Who `graph` acts as.
fn identity(graph: &ResourceGraph, context: &Context) -> Identity {
    Identity::of_graph(
        &graph.namespace().unwrap_or_default(),
        graph.spec.service_account_name.as_deref(),
        context.config.default_service_account.as_deref(),
    )
}

/// The applier of `identity`.
fn applier(context: &Context, identity: &Identity) -> Result<Applier, Error> {
    context
        .appliers
        .of(identity)
        .map_err(|e| Error::Identity(e.to_string()))
}

/// Why a graph is not executed: no Transform controls it. `None` when one does (or the
/// operator executes standalone graphs).
async fn untrusted(graph: &ResourceGraph, context: &Context) -> Result<Option<String>, Error> {
    if context.config.allow_standalone_graphs {
        return Ok(None);
    }
    let namespace = graph.namespace().unwrap_or_default();
    let refused = |why: String| {
        Ok(Some(format!(
            "{why}: the graph is not executed (only graphs controlled by a Transform are; the operator runs without --allow-standalone-graphs)"
        )))
    };
    let Some(owner) = graph
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true))
    else {
        return refused("no Transform controls this ResourceGraph".to_string());
    };
    if owner.kind != "Transform" || owner.api_version != API_VERSION {
        return refused(format!(
            "it is controlled by {} {}, not by a Transform",
            owner.kind, owner.name
        ));
    }
    // The cache may not have a Transform created a moment ago: ask the API server then.
    let cached = context
        .transforms
        .get(&ObjectRef::new(&owner.name).within(&namespace));
    let uid = match cached {
        Some(transform) => transform.metadata.uid.clone(),
        None => Api::<Transform>::namespaced(context.client.clone(), &namespace)
            .get_opt(&owner.name)
            .await?
            .and_then(|t| t.metadata.uid),
    };
    match uid {
        Some(uid) if uid == owner.uid => Ok(None),
        Some(_) => refused(format!(
            "Transform {namespace}/{} is not the one that controls this ResourceGraph (another uid)",
            owner.name
        )),
        None => refused(format!(
            "Transform {namespace}/{} that controls this ResourceGraph does not exist",
            owner.name
        )),
    }
}

/// Marks a graph that is not executed, and why.
async fn refuse(
    graph: &ResourceGraph,
    api: &Api<ResourceGraph>,
    why: &str,
    context: &Context,
) -> Result<Action, Error> {
    let previous = graph.status.clone().unwrap_or_default();
    let conditions = ConditionWriter::new(
        graph.metadata.generation,
        jiff::Timestamp::now(),
        &previous.conditions,
    );
    let status = ResourceGraphStatus {
        phase: Some(GraphPhase::Failed),
        conditions: vec![conditions.condition(
            types::READY,
            Status::False,
            reasons::NOT_CONTROLLED_BY_TRANSFORM,
            why,
        )],
        observed_generation: graph.metadata.generation,
        ..ResourceGraphStatus::default()
    };
    if graph.status.as_ref() != Some(&status) {
        write_status(api, graph, &status, context).await?;
    }
    Ok(Action::await_change())
}

async fn reconcile_graph(graph: &ResourceGraph, context: &Context) -> Result<Action, Error> {
    let api = api(&context.client, graph);
    let name = graph.name_any();
    let key = graph_ref(graph);
    if let Some(superseded) = context.superseded.get(&key).map(|v| v.clone()) {
        if graph.resource_version() == Some(superseded) {
            // The cache has not brought this replica's last status write yet.
            return Ok(Action::requeue(STALE_COPY_RETRY));
        }
        context.superseded.remove(&key);
    }
    if graph.metadata.deletion_timestamp.is_some() {
        return cleanup(graph, context, &api).await;
    }
    if let Some(why) = untrusted(graph, context).await? {
        tracing::warn!(kind = "ResourceGraph", namespace = graph.namespace().unwrap_or_default(), name = %name, %why, "not executed");
        return refuse(graph, &api, &why, context).await;
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
    let identity = identity(graph, context);
    let executor = Executor {
        applier: applier(context, &identity)?,
        identity: &identity,
        config: &context.config.exec,
        applies: &context.applies,
        live: Some(&context.watches),
    };
    let pass = exec::execute(&executor, graph).await;
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
    context
        .watches
        .sync(graph, &pass.watch, &pass.missing_kinds);
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
        write_status(&api, graph, &pass.status, context).await?;
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
    context: &Context,
) -> Result<(), Error> {
    let patch = json!({
        "apiVersion": API_VERSION,
        "kind": "ResourceGraph",
        "metadata": {"resourceVersion": graph.resource_version()},
        "status": status,
    });
    let written = api
        .patch_status(
            &graph.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    if let Some(read) = graph.resource_version()
        && written.resource_version().as_ref() != Some(&read)
    {
        context.superseded.insert(graph_ref(graph), read);
    }
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
            NodeEvent::Orphaned { object, why } => (
                EventType::Normal,
                event_reasons::ORPHANED,
                format!("{object} left the graph and stays in the cluster ({why})"),
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
    let applier = applier(context, &identity(graph, context))?;
    let id = graph_id(graph);
    let mut remaining: Vec<String> = Vec::new();
    for wave in waves {
        let mut pending = Vec::new();
        for entry in wave {
            match delete_entry(&applier, &id, &context.applies, &entry).await {
                Ok(Deletion::Gone | Deletion::Orphaned(_) | Deletion::NotOwned) => {}
                Ok(Deletion::Deleted) => pending.push(entry.object.to_string()),
                Err(error) => {
                    tracing::warn!(object = %entry.object, %error, "delete failed");
                    pending.push(format!("{} ({error})", entry.object));
                }
            }
        }
        if !pending.is_empty() {
            remaining = pending;
            break;
        }
    }
    if !remaining.is_empty() {
        let waiting = remaining;
        let status = exec::status::deleting(graph, &waiting, jiff::Timestamp::now());
        if graph.status.as_ref() != Some(&status) {
            write_status(api, graph, &status, context).await?;
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
    context.watches.forget(graph);
    context.superseded.remove(&graph_ref(graph));
    Ok(Action::await_change())
}
