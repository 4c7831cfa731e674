//! The types of Pequod's API, the bottom layer every other module builds on: the two custom
//! resources of group `platform.pequod.io/v1alpha1` (`Transform`, the one object users
//! write, and `ResourceGraph`, the executable graph the operator renders from it), the graph
//! nodes they carry, their conditions, and the names Pequod writes into the cluster.

pub mod condition;
mod names;
mod node;
mod ready;
mod resource_graph;
pub mod schema;
mod transform;
pub mod yaml;

pub use names::{
    FIELD_MANAGER, FINALIZER, MAX_LABEL_VALUE, PRUNE_ANNOTATION, PRUNE_DISABLED, event_reasons,
    labels, node_reasons,
};
pub use node::{
    ApplyMode, ApplyPolicy, ConflictPolicy, DeletionPolicy, Node, ObjectKey, Severity, Violation,
};
pub use ready::ReadyPredicate;
pub use resource_graph::{
    GraphMetadata, GraphPhase, GraphSummary, InventoryEntry, NodePhase, NodeStatus, ObjectRef,
    ResourceGraph, ResourceGraphSpec, ResourceGraphStatus, SourceRef,
};
pub use transform::{
    AdoptSpec, AdoptStrategy, AdoptedResource, LocalObjectReference, ModuleRef, ModuleType,
    PendingModule, PolicyOverride, ResolvedModule, Transform, TransformSpec, TransformStatus,
};

/// `apiVersion` string of both resources.
pub const API_VERSION: &str = "platform.pequod.io/v1alpha1";

/// Both CustomResourceDefinitions, Transform first.
pub fn crds()
-> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    use kube::CustomResourceExt;
    vec![Transform::crd(), ResourceGraph::crd()]
}
