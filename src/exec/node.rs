//! One node in a pass: where its object goes (the namespace and scope guards), whether the
//! graph may touch it (ownership), how it is written (apply, create once, or only
//! observed), and whether it is ready.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::Value;

use super::cluster::{ApiError, Served, type_of};
use super::error::{NodeError, Write};
use super::live::Live;
use super::ownership::{GraphId, Owner, owner};
use super::readiness::{self, Readiness};
use super::status::{carried, settle};
use super::{Executor, NodeEvent, WatchTarget, object_hash};
use crate::api::{
    AdoptStrategy, ApplyMode, ConflictPolicy, InventoryEntry, Node, NodePhase, NodeStatus,
    ObjectRef, node_reasons,
};

/// What every node of one pass shares.
pub(super) struct PassContext<'a> {
    pub executor: &'a Executor<'a>,
    /// The graph.
    pub graph: &'a GraphId,
    /// What the graph owned before this pass.
    pub inventory: &'a [InventoryEntry],
    /// The pass's clock: every time it writes is this one.
    pub now: jiff::Timestamp,
}

/// Outcome of running one node.
pub(super) struct NodeRun {
    pub status: NodeStatus,
    pub events: Vec<NodeEvent>,
    pub applies: Vec<(bool, std::time::Duration)>,
    pub watch: Option<WatchTarget>,
    pub inventory: Option<InventoryEntry>,
    /// The API server asked to wait this long before the node is tried again.
    pub retry_after: Option<std::time::Duration>,
    /// The node's kind is not installed: (API group, kind).
    pub missing_kind: Option<(String, String)>,
}

impl NodeRun {
    fn new(status: NodeStatus) -> NodeRun {
        NodeRun {
            status,
            events: Vec::new(),
            applies: Vec::new(),
            watch: None,
            inventory: None,
            retry_after: None,
            missing_kind: None,
        }
    }
}

/// Transient errors in a row a node rides out, keeping its phase and reporting nothing
/// but its message, before it fails (and a Warning event says so): with the backoff
/// between tries, about half a minute of an unavailable or throttling API server.
pub const TRANSIENT_FAILURES_TOLERATED: u32 = 5;

/// Where a node's object lives in the cluster.
pub(super) struct Target {
    /// How the API server serves its kind.
    pub served: Served,
    /// Its apiVersion.
    pub api_version: String,
    /// Its kind.
    pub kind: String,
    /// `None` for a cluster-scoped object.
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
    /// The object to write: the node's, with its namespace settled.
    pub object: Value,
}

impl Target {
    /// `namespace/name`, or the name of a cluster-scoped object.
    fn shown(&self) -> String {
        shown(self.namespace.as_deref(), &self.name)
    }

    /// `Kind namespace/name`.
    pub(super) fn describe(&self) -> String {
        format!("{} {}", self.kind, self.shown())
    }

    /// The error of a request the API server answered with `error`: a refusal names the
    /// identity, the verb and the resource.
    pub(super) fn refused(
        &self,
        pass: &PassContext<'_>,
        verb: &'static str,
        error: ApiError,
    ) -> NodeError {
        match error {
            ApiError::Refused {
                code: 403, message, ..
            } => {
                let resource = &self.served.resource;
                NodeError::Forbidden {
                    identity: pass.executor.identity.to_string(),
                    verb,
                    resource: if resource.group.is_empty() {
                        resource.plural.clone()
                    } else {
                        format!("{}.{}", resource.plural, resource.group)
                    },
                    namespace: self.namespace.clone(),
                    message,
                }
            }
            other => NodeError::Api(other),
        }
    }

    pub(super) fn reference(&self, live: &Value) -> ObjectRef {
        ObjectRef {
            api_version: self.api_version.clone(),
            kind: self.kind.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            uid: live
                .pointer("/metadata/uid")
                .and_then(Value::as_str)
                .map(str::to_string),
        }
    }
}

/// `namespace/name`, or `name` without a namespace.
pub(super) fn shown(namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(namespace) => format!("{namespace}/{name}"),
        None => name.to_string(),
    }
}

/// Runs one node: its status, events, writes, watch and inventory entry.
pub(super) async fn run_node(
    pass: &PassContext<'_>,
    node: &Node,
    prior: Option<&NodeStatus>,
) -> NodeRun {
    let mut run = NodeRun::new(carried(
        prior,
        NodePhase::Applying,
        None,
        String::new(),
        pass.now,
    ));
    match step(pass, node, prior, &mut run).await {
        Ok(()) => run.status.failures = 0,
        Err(error)
            if error.is_transient()
                && prior.map_or(0, |p| p.failures) + 1 < TRANSIENT_FAILURES_TOLERATED =>
        {
            ride_out(&mut run, prior, &error);
        }
        Err(error) => {
            if let NodeError::Api(ApiError::KindNotInstalled { api_version, kind }) = &error {
                let group = api_version.rsplit_once('/').map_or("", |(group, _)| group);
                run.missing_kind = Some((group.to_string(), kind.clone()));
            }
            let message = error.to_string();
            if prior.map(|p| (p.phase, p.message.as_deref()))
                != Some((NodePhase::Failed, Some(&message)))
            {
                tracing::warn!(node = %node.id, kind = node.kind().unwrap_or_default(), namespace = node.namespace().unwrap_or(&pass.graph.namespace), name = node.name().unwrap_or_default(), %message, "node failed");
                run.events.push(NodeEvent::Failed {
                    node: node.id.clone(),
                    message: message.clone(),
                });
            }
            fail(&mut run.status, prior, error.reason(), message, pass.now);
        }
    }
    run
}

/// A transient error: the node keeps its phase (what it was last seen to be), counts one
/// more failure in a row for the backoff, and says it is retrying; no Warning event.
fn ride_out(run: &mut NodeRun, prior: Option<&NodeStatus>, error: &NodeError) {
    let attempts = run.status.attempts;
    if let Some(prior) = prior {
        run.status = prior.clone();
    }
    run.status.attempts = attempts;
    run.status.failures = prior.map_or(0, |p| p.failures).saturating_add(1);
    run.status.message = Some(format!(
        "retrying after a transient error ({} in a row): {error}",
        run.status.failures
    ));
    run.retry_after = error.retry_after();
    // What was not written this time is not the graph's more than before.
    run.inventory = None;
    run.events
        .retain(|event| !matches!(event, NodeEvent::Applied { .. }));
}

/// A node that failed for `reason`: `message`, one more failure in a row.
fn fail(
    status: &mut NodeStatus,
    prior: Option<&NodeStatus>,
    reason: &str,
    message: String,
    now: jiff::Timestamp,
) {
    status.failures = prior.map_or(0, |p| p.failures).saturating_add(1);
    settle(status, prior, NodePhase::Failed, Some(reason), message, now);
}

/// A node whose run panicked: failed with the panic's message, the operator carries on.
pub(super) fn panicked(
    node: &Node,
    prior: Option<&NodeStatus>,
    message: &str,
    now: jiff::Timestamp,
) -> NodeRun {
    let message = format!("internal error while executing the node: {message}");
    tracing::error!(node = %node.id, kind = node.kind().unwrap_or_default(), namespace = node.namespace().unwrap_or_default(), name = node.name().unwrap_or_default(), %message);
    let mut run = NodeRun::new(carried(
        prior,
        NodePhase::Failed,
        None,
        message.clone(),
        now,
    ));
    fail(
        &mut run.status,
        prior,
        node_reasons::INTERNAL_ERROR,
        message.clone(),
        now,
    );
    run.events.push(NodeEvent::Failed {
        node: node.id.clone(),
        message,
    });
    run
}

async fn step(
    pass: &PassContext<'_>,
    node: &Node,
    prior: Option<&NodeStatus>,
    run: &mut NodeRun,
) -> Result<(), NodeError> {
    let target = place(pass, node).await?;
    let mode = node.apply_policy.mode;
    run.watch = Some(WatchTarget {
        served: target.served.clone(),
        observed: (mode == ApplyMode::Observe)
            .then(|| (target.namespace.clone(), target.name.clone())),
    });
    let hash = object_hash(&target.object);
    let same_hash = prior.and_then(|p| p.applied_hash.as_deref()) == Some(hash.as_str());
    let live = match settled_copy(pass, node, prior, &target, same_hash) {
        Some(copy) => Some(copy),
        None => pass
            .executor
            .applier
            .get(&target.served, target.namespace.as_deref(), &target.name)
            .await
            .map_err(|e| target.refused(pass, "get", e))?
            .map(Live::new),
    };
    let adopted_before = prior.is_some_and(|p| p.applied_hash.is_some());
    if node.adopted == Some(AdoptStrategy::TakeOwnership) && live.is_none() && !adopted_before {
        return Err(NodeError::NothingToAdopt {
            kind: target.kind.clone(),
            object: target.shown(),
        });
    }
    let (live, owned) = write(pass, node, prior, &target, live, same_hash, run).await?;
    if mode != ApplyMode::Observe {
        run.status.applied_hash = Some(hash);
    }
    if let Some(live) = &live {
        run.status.object = Some(target.reference(&live.object));
        if owned {
            run.inventory = Some(InventoryEntry {
                object: target.reference(&live.object),
                node_id: node.id.clone(),
                deletion_policy: node.deletion_policy,
            });
        }
    }
    let live = live.as_ref().map(|live| &live.object);
    observe(pass, node, prior, &target, live, same_hash, run)
}

/// The watch's copy of the node's object, when it shows the object as this graph's last
/// write of the same desired object left it (this graph's labels, the owned fields'
/// fingerprint unchanged): then nothing is to be written and the copy is as good as a read.
fn settled_copy(
    pass: &PassContext<'_>,
    node: &Node,
    prior: Option<&NodeStatus>,
    target: &Target,
    same_hash: bool,
) -> Option<Live> {
    if !same_hash || node.apply_policy.mode == ApplyMode::Observe {
        return None;
    }
    let baseline = prior?.owned_hash.as_deref()?;
    let copy =
        pass.executor
            .live?
            .get(&target.served, target.namespace.as_deref(), &target.name)?;
    let settled = owner(&copy.object, pass.graph) == Owner::ThisGraph
        && copy.owned_hash.as_deref() == Some(baseline);
    settled.then_some(copy)
}

/// Resolves the node's kind and settles its namespace, refusing what the operator's scope
/// guards do not allow.
pub(super) async fn place(pass: &PassContext<'_>, node: &Node) -> Result<Target, NodeError> {
    let (api_version, kind) = type_of(&node.object)?;
    let served = pass.executor.applier.served(&api_version, &kind).await?;
    let name = node.name().unwrap_or_default().to_string();
    let mut object = node.object.clone();
    let config = pass.executor.config;
    // Observed objects obey the guards too: their values reach the graph's status.
    let namespace = if served.namespaced {
        let namespace = node
            .namespace()
            .unwrap_or(&pass.graph.namespace)
            .to_string();
        if namespace != pass.graph.namespace && !config.allow_cross_namespace {
            return Err(NodeError::OutsideNamespace {
                kind,
                namespace,
                name,
                graph_namespace: pass.graph.namespace.clone(),
            });
        }
        object["metadata"]["namespace"] = Value::String(namespace.clone());
        Some(namespace)
    } else {
        if !config.allow_cluster_scoped {
            return Err(NodeError::ClusterScoped { kind, name });
        }
        if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            metadata.remove("namespace");
        }
        None
    };
    Ok(Target {
        served,
        api_version,
        kind,
        namespace,
        name,
        object,
    })
}

/// Writes the object as its mode says; the live object afterwards, and whether this graph
/// owns it (it goes into the inventory). An object another graph owns is never written; an
/// object no graph owns only when the Transform adopts it, or when it is the one this graph
/// owned before (same uid: someone removed its labels).
async fn write(
    pass: &PassContext<'_>,
    node: &Node,
    prior: Option<&NodeStatus>,
    target: &Target,
    live: Option<Live>,
    same_hash: bool,
    run: &mut NodeRun,
) -> Result<(Option<Live>, bool), NodeError> {
    let applier = &pass.executor.applier;
    let mode = node.apply_policy.mode;
    if mode == ApplyMode::Observe {
        return Ok((live, false));
    }
    if let Some(live) = &live
        && may_write(pass, node, target, &live.object)? == MayWrite::LeaveAlone
    {
        return Ok((Some(live.clone()), false));
    }
    match (mode, live) {
        (ApplyMode::Create, Some(live)) => Ok((Some(live), true)),
        (ApplyMode::Create, None) => {
            let _permit = pass.executor.applies.acquire().await;
            let started = std::time::Instant::now();
            let created = applier.create(&target.served, &target.object).await;
            run.applies.push((created.is_ok(), started.elapsed()));
            run.status.attempts += 1;
            let live = match created.map_err(|e| target.refused(pass, "create", e))? {
                Some(created) => Live::new(created),
                // Created a moment ago by someone else: this graph's only if it says so.
                None => {
                    let live = applier
                        .get(&target.served, target.namespace.as_deref(), &target.name)
                        .await
                        .map_err(|e| target.refused(pass, "get", e))?
                        .map(Live::new);
                    let owned = live
                        .as_ref()
                        .is_some_and(|l| owner(&l.object, pass.graph) == Owner::ThisGraph);
                    return Ok((live, owned));
                }
            };
            run.events.push(NodeEvent::Applied {
                node: node.id.clone(),
                write: Write::Created,
                edits_overridden: false,
            });
            Ok((Some(live), true))
        }
        (_, live) => {
            // Drift: the fields Pequod owns no longer have the values its last write left
            // (an object without a recorded fingerprint takes the current one as it).
            let baseline = prior.and_then(|p| p.owned_hash.as_deref());
            let edited = match (&live, baseline) {
                (Some(live), Some(baseline)) => live.owned_hash.as_deref() != Some(baseline),
                _ => false,
            };
            if same_hash
                && !edited
                && let Some(live) = live
            {
                run.status.owned_hash = live.owned_hash.clone();
                return Ok((Some(live), true));
            }
            let write = match (&live, same_hash) {
                (None, _) => Write::Created,
                (Some(_), true) => Write::DriftCorrected,
                (Some(_), false) => Write::Changed,
            };
            let force = node.apply_policy.conflict_policy == ConflictPolicy::Force;
            let _permit = pass.executor.applies.acquire().await;
            let started = std::time::Instant::now();
            let mut applied = applier.apply(&target.served, &target.object, force).await;
            // Fields of an object this graph applied before, since edited by hand (an
            // update or a patch, not another manager's apply), are Pequod's to take back;
            // fields another manager applied are taken only when the node says Force.
            let edits_overridden = matches!(
                &applied,
                Err(ApiError::Conflict {
                    edits_only: true,
                    ..
                })
            ) && prior.is_some_and(|p| p.applied_hash.is_some());
            if edits_overridden {
                applied = applier.apply(&target.served, &target.object, true).await;
            }
            run.applies.push((applied.is_ok(), started.elapsed()));
            run.status.attempts += 1;
            let applied = Live::new(applied.map_err(|e| target.refused(pass, "patch", e))?);
            run.status.owned_hash = applied.owned_hash.clone();
            run.events.push(NodeEvent::Applied {
                node: node.id.clone(),
                write,
                edits_overridden,
            });
            Ok((Some(applied), true))
        }
    }
}

/// What a node may do with the object it found live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum MayWrite {
    /// Write it: this graph's, adopted, or the one it owned before.
    Write,
    /// Leave it as it is: mode Create found an object no graph owns (Create never
    /// updates, and an object it did not create is not its to delete).
    LeaveAlone,
}

/// Whether the node may write the object found live: never one another graph owns, one no
/// graph owns only when the Transform adopts it or it is the one this graph owned before.
pub(super) fn may_write(
    pass: &PassContext<'_>,
    node: &Node,
    target: &Target,
    live: &Value,
) -> Result<MayWrite, NodeError> {
    match owner(live, pass.graph) {
        Owner::ThisGraph => Ok(MayWrite::Write),
        Owner::Another(graph) => Err(NodeError::OwnedByAnotherGraph {
            object: target.describe(),
            owner: graph,
        }),
        Owner::Nobody if node.apply_policy.mode == ApplyMode::Create => Ok(MayWrite::LeaveAlone),
        Owner::Nobody
            if node.adopted == Some(AdoptStrategy::TakeOwnership)
                || owned_before(pass, target, live) =>
        {
            Ok(MayWrite::Write)
        }
        Owner::Nobody => Err(NodeError::AlreadyExists {
            object: target.describe(),
        }),
    }
}

/// Whether `live` is the very object (same uid) this graph owned before the pass.
fn owned_before(pass: &PassContext<'_>, target: &Target, live: &Value) -> bool {
    let uid = live.pointer("/metadata/uid").and_then(Value::as_str);
    pass.inventory.iter().any(|entry| {
        entry.object.kind == target.kind
            && entry.object.name == target.name
            && entry.object.namespace == target.namespace
            && entry.object.uid.as_deref() == uid
            && uid.is_some()
    })
}

/// Evaluates readiness on the live object and sets the node's phase: Ready (or Adopted),
/// WaitingReady, or Failed once its timeout passed.
fn observe(
    pass: &PassContext<'_>,
    node: &Node,
    prior: Option<&NodeStatus>,
    target: &Target,
    live: Option<&Value>,
    same_hash: bool,
    run: &mut NodeRun,
) -> Result<(), NodeError> {
    let readiness = match live {
        Some(live) => readiness::evaluate(&node.ready_when, &node.fail_when, live),
        None => Readiness::Waiting(format!(
            "waiting for {} {} to exist (observed, not managed by this graph)",
            target.kind,
            target.shown()
        )),
    };
    let drift_corrected = run.events.iter().any(|e| {
        matches!(
            e,
            NodeEvent::Applied {
                write: Write::DriftCorrected,
                ..
            }
        )
    });
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
                    _ if drift_corrected => {
                        (NodePhase::Ready, "Ready (drift corrected)".to_string())
                    }
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
            settle(&mut run.status, prior, phase, None, message, pass.now);
        }
        Readiness::Failed { reason, message } => {
            run.status.waiting_since = None;
            return Err(NodeError::ObjectFailed { reason, message });
        }
        Readiness::Waiting(message) => {
            // One clock per wait: it starts when this version is applied, or when the
            // object stops being ready, and a timeout counts from it.
            let still_waiting =
                same_hash && matches!(was, Some(NodePhase::WaitingReady | NodePhase::Failed));
            let since = match (&run.status.waiting_since, still_waiting) {
                (Some(since), true) => since.0,
                _ => pass.now,
            };
            run.status.waiting_since = Some(Time(since));
            let waited = pass.now.duration_since(since).as_secs();
            if let Some(timeout_seconds) = node.timeout_seconds
                && waited >= i64::from(timeout_seconds)
            {
                return Err(NodeError::NotReady {
                    timeout_seconds,
                    waiting: message,
                });
            }
            settle(
                &mut run.status,
                prior,
                NodePhase::WaitingReady,
                None,
                message,
                pass.now,
            );
        }
    }
    Ok(())
}
