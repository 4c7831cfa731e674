//! `ResourceGraph`: the rendered, executable graph of one Transform.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::node::{DeletionPolicy, Node, ObjectKey, Violation};
use super::schema::optional_free_form_object;

/// The rendered graph: its source, provenance, nodes and outputs.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "platform.pequod.io",
    version = "v1alpha1",
    kind = "ResourceGraph",
    doc = "The graph of Kubernetes objects rendered from a Transform, executed in dependency order behind readiness gates, with per-node status. Written by Pequod, read by users.",
    namespaced,
    status = "ResourceGraphStatus",
    shortname = "rg",
    category = "pequod",
    printcolumn = r#"{"name": "Phase", "type": "string", "jsonPath": ".status.phase", "description": "Execution phase"}"#,
    printcolumn = r#"{"name": "Ready", "type": "string", "jsonPath": ".status.summary.readyText", "description": "Ready nodes out of all nodes"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ResourceGraphSpec {
    /// The Transform this graph was rendered from.
    pub source_ref: SourceRef,
    /// Which module and input produced this graph.
    pub metadata: GraphMetadata,
    /// The objects, their ordering, readiness rules and policies.
    pub nodes: Vec<Node>,
    /// The module's outputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_free_form_object")]
    pub outputs: Option<Value>,
    /// Policy warnings that did not block the render.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub violations: Vec<Violation>,
    /// Delete objects that left the graph (the Transform's `spec.prune`).
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    pub prune: bool,
    /// The Transform is suspended: the graph is not executed (no apply, no prune, no drift
    /// correction) until it is resumed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,
    /// The ServiceAccount of the graph's namespace whose identity writes, reads and deletes
    /// the objects (the Transform's `spec.serviceAccountName`); unset: the operator's
    /// default service account, if it has one, else the operator itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
}

fn default_true() -> bool {
    true
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}

/// `prune: true` is the default and is left out of the object.
fn is_true(value: &bool) -> bool {
    *value
}

/// A reference to the Transform a graph came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceRef {
    /// apiVersion of the source.
    pub api_version: String,
    /// Kind of the source (Transform).
    pub kind: String,
    /// Name of the source.
    pub name: String,
    /// UID of the source, when rendered in a cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

/// Provenance of a rendered graph.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GraphMetadata {
    /// Module name, from the module's metadata.
    pub module: String,
    /// Module version, from the module's metadata.
    pub version: String,
    /// Digest of the module as `moduleRef.digest` pins it: the OCI manifest digest, the Git
    /// commit (`:path`), the content digest of any other module.
    pub module_digest: String,
    /// Digest of the rendered nodes and outputs: equal hashes mean equal graphs.
    pub render_hash: String,
    /// When the graph was rendered (set by the operator, absent from offline renders).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rendered_at: Option<Time>,
}

/// Execution state of a graph.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceGraphStatus {
    /// Pending, Progressing, Ready, Failed or Deleting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<GraphPhase>,
    /// One entry per node id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub nodes: BTreeMap<String, NodeStatus>,
    /// The objects Pequod owns, for pruning.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inventory: Vec<InventoryEntry>,
    /// Node counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<GraphSummary>,
    /// Applied and Ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Phase of a whole graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum GraphPhase {
    /// Nothing applied yet.
    Pending,
    /// Applying or waiting for readiness.
    Progressing,
    /// Every node is Ready.
    Ready,
    /// At least one node failed.
    Failed,
    /// The graph is being deleted.
    Deleting,
}

/// Phase of one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum NodePhase {
    /// Dependencies are not ready yet.
    Pending,
    /// Being written.
    Applying,
    /// Written; readiness predicates do not hold yet.
    WaitingReady,
    /// Readiness predicates hold.
    Ready,
    /// Apply failed or readiness timed out.
    Failed,
    /// A dependency failed.
    Blocked,
    /// An existing object was taken into management.
    Adopted,
    /// Left in the cluster, no longer managed.
    Orphaned,
}

/// Status of one node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    /// Where the node is in its lifecycle.
    pub phase: NodePhase,
    /// Why, in words a user can act on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Why a node Failed or is Blocked, as one CamelCase word (`Forbidden`,
    /// `OwnedByAnotherGraph`, `NotReady`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// How many times the node was applied.
    #[serde(default)]
    pub attempts: u32,
    /// Hash of the object last applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_hash: Option<String>,
    /// Fingerprint of the fields Pequod owns in the live object, with their values, as its
    /// last write left them (server-side apply's managedFields): when it changes, someone
    /// edited or took over one of them (drift).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owned_hash: Option<String>,
    /// Since when the node has been waiting for this version of its object to become ready
    /// (set when it is applied, or when a ready object stops being ready): its timeout
    /// counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_since: Option<Time>,
    /// Failures in a row; the retry backoff grows with it, a success resets it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failures: u32,
    /// When the phase last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    /// The live object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<ObjectRef>,
}

impl NodeStatus {
    /// The status of a node nothing has been done for yet, in `phase`.
    pub fn new(phase: NodePhase) -> NodeStatus {
        NodeStatus {
            phase,
            message: None,
            reason: None,
            attempts: 0,
            applied_hash: None,
            owned_hash: None,
            waiting_since: None,
            failures: 0,
            last_transition_time: None,
            object: None,
        }
    }
}

/// A reference to a live object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    /// apiVersion.
    pub api_version: String,
    /// Kind.
    pub kind: String,
    /// Namespace, absent for cluster-scoped objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
    /// UID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

/// An object Pequod owns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InventoryEntry {
    /// The object.
    #[serde(flatten)]
    pub object: ObjectRef,
    /// The node that rendered it.
    pub node_id: String,
    /// Orphan: left in the cluster when pruned or when the graph is deleted.
    #[serde(default, skip_serializing_if = "DeletionPolicy::is_delete")]
    pub deletion_policy: DeletionPolicy,
}

/// Node counts of a graph.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GraphSummary {
    /// Number of nodes.
    pub total: u32,
    /// Ready nodes.
    pub ready: u32,
    /// Failed nodes.
    pub failed: u32,
    /// `ready/total`, for `kubectl get`.
    pub ready_text: String,
}

impl ObjectRef {
    /// The object's identity (the version does not change it).
    pub fn key(&self) -> ObjectKey {
        let group = self
            .api_version
            .rsplit_once('/')
            .map_or("", |(group, _)| group);
        ObjectKey {
            group: group.to_string(),
            kind: self.kind.clone(),
            namespace: self.namespace.clone().unwrap_or_default(),
            name: self.name.clone(),
        }
    }
}

impl std::fmt::Display for ObjectRef {
    /// `Kind namespace/name`, or `Kind name` for a cluster-scoped object.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(namespace) => write!(f, "{} {namespace}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}
