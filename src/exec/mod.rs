//! Executing a ResourceGraph: one level-triggered pass over its nodes.
//!
//! A pass reads the cluster, applies every node whose dependencies are Ready (independent
//! nodes concurrently, bounded by a semaphore shared by all graphs), evaluates readiness and
//! returns the new status; it never waits for an object to become ready. Nodes that become
//! Ready during the pass release their dependents in the same pass (waves). A failed node
//! blocks only its dependents. After a pass in which every node was applied, objects of the
//! previous inventory that left the graph are pruned, dependents first.
//!
//! The files: [`node`] (one node: scope guards, ownership, write, readiness), [`cluster`]
//! (the API calls and the discovery cache), [`live`] (copies from watch caches that spare
//! a read), [`identity`] (who a graph acts as), [`ownership`] (which graph owns an object), [`drift`], [`readiness`], [`inventory`]
//! (what a graph owns, pruning, deletion), [`status`] (node and graph status), [`error`]
//! (what failed, what was written).

pub mod cluster;
mod drift;
mod error;
mod identity;
pub mod inventory;
mod live;
mod node;
pub mod ownership;
pub mod preview;
pub mod readiness;
pub mod status;

pub use cluster::{ApiError, Applier, Served};
pub use error::{NodeError, Write};
pub use identity::{Appliers, Identity};
pub use live::{Live, LiveObjects};
pub use node::TRANSIENT_FAILURES_TOLERATED;
pub use ownership::GraphId;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::api::{
    AdoptStrategy, ApplyMode, InventoryEntry, Node, NodePhase, NodeStatus, ResourceGraph,
    node_reasons,
};
use crate::backoff::retry_delay;
use crate::graph::Dag;
use node::{PassContext, panicked, run_node};
use status::{carried, is_ready};

/// How graphs are executed, from the operator's flags.
#[derive(Clone, Debug)]
pub struct ExecConfig {
    /// Objects may live in other namespaces than their graph's.
    pub allow_cross_namespace: bool,
    /// Cluster-scoped objects may be written.
    pub allow_cluster_scoped: bool,
}

/// Something that happened during a pass, for events and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeEvent {
    /// The object was written.
    Applied {
        /// The node.
        node: String,
        /// Why.
        write: Write,
        /// Fields edited by hand (an update or a patch, not another manager's apply) were
        /// taken back.
        edits_overridden: bool,
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
    /// An object that left the graph stays in the cluster.
    Orphaned {
        /// `Kind namespace/name`.
        object: String,
        /// Why it stays.
        why: inventory::Orphaning,
    },
}

/// The result of one pass.
#[derive(Debug)]
pub struct Pass {
    /// The graph's new status.
    pub status: crate::api::ResourceGraphStatus,
    /// When to look again without a watch event (failed nodes retry, timeouts expire).
    pub requeue: Option<Duration>,
    /// The kinds (and observed objects) whose changes must wake this graph.
    pub watch: Vec<WatchTarget>,
    /// Kinds nodes need that are not installed (API group, kind): their CRD's arrival
    /// must wake this graph.
    pub missing_kinds: Vec<(String, String)>,
    /// What happened.
    pub events: Vec<NodeEvent>,
    /// The writes made, by result (`true` success) and latency.
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

/// What a pass runs with: the applier of the graph's identity, the operator's guards, and
/// the write permits all graphs share.
pub struct Executor<'a> {
    /// Reads and writes as `identity`.
    pub applier: Applier,
    /// Who the graph acts as (named in refusals).
    pub identity: &'a Identity,
    /// The namespace and scope guards.
    pub config: &'a ExecConfig,
    /// Bounds concurrent writes over all graphs.
    pub applies: &'a Arc<Semaphore>,
    /// Objects as the operator's watches last saw them (None: every read asks the API
    /// server).
    pub live: Option<&'a dyn LiveObjects>,
}

/// The identity of `graph`: its namespace and name.
pub fn graph_id(graph: &ResourceGraph) -> GraphId {
    GraphId {
        namespace: graph.metadata.namespace.clone().unwrap_or_default(),
        name: graph.metadata.name.clone().unwrap_or_default(),
    }
}

/// Runs one pass over `graph`.
pub async fn execute(executor: &Executor<'_>, graph: &ResourceGraph) -> Pass {
    let id = graph_id(graph);
    let previous = graph.status.clone().unwrap_or_default();
    let now = jiff::Timestamp::now();
    let mut pass = Pass {
        status: Default::default(),
        requeue: None,
        watch: Vec::new(),
        missing_kinds: Vec::new(),
        events: Vec::new(),
        applies: Vec::new(),
    };
    let dag = match Dag::build(&graph.spec.nodes) {
        Ok(dag) => dag,
        Err(errors) => {
            pass.status = status::invalid(graph, &previous, &errors, now);
            return pass;
        }
    };
    let context = PassContext {
        executor,
        graph: &id,
        inventory: &previous.inventory,
        now,
    };
    let Waves {
        statuses,
        fresh,
        retry_after,
    } = run_waves(&context, graph, &dag, &previous.nodes, &mut pass).await;

    let applied_all = graph.spec.nodes.iter().all(|node| {
        node.apply_policy.mode == ApplyMode::Observe
            || matches!(
                statuses.get(&node.id).map(|s| s.phase),
                Some(NodePhase::Ready | NodePhase::WaitingReady | NodePhase::Adopted)
            )
    });
    let carried = inventory::carry_over(&previous.inventory, &fresh, &graph.spec.nodes);
    let mut leftovers = carried.leftovers;
    let mut orphaned = Vec::new();
    if !graph.spec.prune {
        orphaned.extend(
            leftovers
                .iter()
                .map(|entry| (entry.clone(), inventory::Orphaning::PruneDisabled)),
        );
    } else if applied_all {
        let pruned = inventory::prune(
            &executor.applier,
            &id,
            executor.applies,
            leftovers,
            &mut pass.events,
        )
        .await;
        leftovers = pruned.kept;
        orphaned = pruned.orphaned;
    }
    let mut owned = fresh;
    owned.extend(carried.kept);
    owned.extend(leftovers);
    inventory::sort(&mut owned, &dag);

    pass.requeue = requeue_after(&graph.spec.nodes, &statuses, &retry_after, now);
    let mut statuses = statuses;
    status::keep_orphans(graph, &previous, &orphaned, &mut statuses, now);
    pass.status = status::summarize(graph, &previous, statuses, owned, now);
    pass
}

/// What the waves of a pass leave behind, beside the events and writes of [`Pass`].
struct Waves {
    /// Every node's new status.
    statuses: BTreeMap<String, NodeStatus>,
    /// The inventory entries of the objects the nodes wrote or own.
    fresh: Vec<InventoryEntry>,
    /// How long the API server asked to wait before nodes are tried again.
    retry_after: HashMap<String, Duration>,
}

/// Runs the nodes in waves: every node whose dependencies are settled runs; a node that is
/// Ready releases its dependents into the next wave of the same pass. Nodes below a failed
/// node are Blocked, nodes below one that is not Ready yet are Pending.
async fn run_waves(
    context: &PassContext<'_>,
    graph: &ResourceGraph,
    dag: &Dag,
    previous: &BTreeMap<String, NodeStatus>,
    pass: &mut Pass,
) -> Waves {
    let mut statuses: BTreeMap<String, NodeStatus> = BTreeMap::new();
    let mut inventory: Vec<InventoryEntry> = Vec::new();
    let mut retry_after: HashMap<String, Duration> = HashMap::new();
    let nodes: HashMap<&str, &Node> = graph
        .spec
        .nodes
        .iter()
        .map(|n| (n.id.as_str(), n))
        .collect();
    let now = context.now;
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
            let prior = previous.get(id);
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
                let reason = Some(node_reasons::DEPENDENCY_FAILED);
                statuses.insert(
                    id.clone(),
                    carried(prior, NodePhase::Blocked, reason, message, now),
                );
                settled.insert(id.clone());
            } else if !waiting.is_empty() {
                let message = format!("waiting for {} to be Ready", quote_list(&waiting));
                statuses.insert(
                    id.clone(),
                    carried(prior, NodePhase::Pending, None, message, now),
                );
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
                let prior = previous.get(&node.id);
                async move {
                    let step = run_node(context, node, prior);
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
            pass.events.extend(run.events);
            pass.applies.extend(run.applies);
            pass.watch.extend(run.watch);
            pass.missing_kinds.extend(run.missing_kind);
            inventory.extend(run.inventory);
            if let Some(wait) = run.retry_after {
                retry_after.insert(id.clone(), wait);
            }
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
                carried(previous.get(id), NodePhase::Pending, None, message, now),
            );
        }
    }
    Waves {
        statuses,
        fresh: inventory,
        retry_after,
    }
}

fn quote_list(ids: &[&str]) -> String {
    ids.iter()
        .map(|id| format!("`{id}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The text of a caught panic.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string())
}

/// `sha256:` of the object as it would be applied.
pub fn object_hash(object: &Value) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(object.to_string())))
}

/// When to run again although no watch event came: nodes that failed (for good, or riding
/// out a transient error) back off exponentially with jitter, at least as long as the API
/// server asked; waiting nodes with a timeout are looked at when it expires.
fn requeue_after(
    nodes: &[Node],
    statuses: &BTreeMap<String, NodeStatus>,
    retry_after: &HashMap<String, Duration>,
    now: jiff::Timestamp,
) -> Option<Duration> {
    let mut soonest: Option<Duration> = None;
    let mut consider = |d: Duration| soonest = Some(soonest.map_or(d, |s| s.min(d)));
    for node in nodes {
        let Some(status) = statuses.get(&node.id) else {
            continue;
        };
        if status.failures > 0 {
            let asked = retry_after.get(&node.id).copied().unwrap_or_default();
            consider(retry_delay(status.failures).max(asked));
        }
        if status.phase == NodePhase::WaitingReady
            && let (Some(timeout), Some(since)) =
                (node.timeout_seconds, status.waiting_since.as_ref())
        {
            let waited = now.duration_since(since.0).as_secs().max(0);
            let left = i64::from(timeout).saturating_sub(waited).max(0);
            consider(Duration::from_secs(u64::try_from(left).unwrap_or(0) + 1));
        }
    }
    soonest
}
