//! The names Pequod writes into the cluster and relies on when it reads them back: its field
//! manager, finalizer, labels and annotations. Changing one breaks every cluster that has
//! objects carrying the old one.

/// The field manager of every write Pequod makes (server-side apply, creates, status).
pub const FIELD_MANAGER: &str = "pequod";

/// Finalizer that keeps a ResourceGraph until its objects are deleted.
pub const FINALIZER: &str = "platform.pequod.io/cleanup";

/// Annotation that keeps an object from being pruned or deleted with its graph when set to
/// [`PRUNE_DISABLED`]: `platform.pequod.io/prune: disabled`.
pub const PRUNE_ANNOTATION: &str = "platform.pequod.io/prune";

/// The value of [`PRUNE_ANNOTATION`] that keeps an object.
pub const PRUNE_DISABLED: &str = "disabled";

/// Labels Pequod puts on every object it writes.
pub mod labels {
    /// `app.kubernetes.io/managed-by`, always [`MANAGED_BY_PEQUOD`].
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    /// The value of [`MANAGED_BY`].
    pub const MANAGED_BY_PEQUOD: &str = "pequod";
    /// The Transform that owns the object.
    pub const TRANSFORM: &str = "platform.pequod.io/transform";
    /// The name of the ResourceGraph that owns the object (watched by the executor).
    pub const RESOURCE_GRAPH: &str = "platform.pequod.io/resource-graph";
    /// The namespace of the ResourceGraph that owns the object: with
    /// [`RESOURCE_GRAPH`], the owner's identity.
    pub const RESOURCE_GRAPH_NAMESPACE: &str = "platform.pequod.io/resource-graph-namespace";
    /// The node id of the object in its graph.
    pub const NODE_ID: &str = "platform.pequod.io/node-id";
    /// The shard whose replica reconciles a Transform (`pequod run --shard KEY`); a
    /// Transform's ResourceGraph carries its Transform's. Set by users, copied by Pequod.
    pub const SHARD: &str = "sharding.pequod.io/key";
}

/// Longest Kubernetes label value; Pequod's labels carry the Transform's name.
pub const MAX_LABEL_VALUE: usize = 63;

/// Reasons of the Kubernetes events Pequod publishes (alerts match on them).
pub mod event_reasons {
    /// Transform: a new graph was rendered and written.
    pub const RENDERED: &str = "Rendered";
    /// Transform: the module could not be resolved or rendered.
    pub const RENDER_FAILED: &str = "RenderFailed";
    /// Transform: the input, the graph or a policy is invalid.
    pub const VALIDATION_FAILED: &str = "ValidationFailed";
    /// Transform: the API server refused to store its ResourceGraph.
    pub const RESOURCE_GRAPH_REJECTED: &str = "ResourceGraphRejected";
    /// ResourceGraph: a node's object was written.
    pub const NODE_APPLIED: &str = "NodeApplied";
    /// ResourceGraph: a node became Ready.
    pub const NODE_READY: &str = "NodeReady";
    /// ResourceGraph: a node failed.
    pub const NODE_FAILED: &str = "NodeFailed";
    /// ResourceGraph: an existing object was adopted.
    pub const ADOPTED: &str = "Adopted";
    /// ResourceGraph: an object that left the graph was deleted.
    pub const PRUNED: &str = "Pruned";
    /// ResourceGraph: an object that left the graph stays in the cluster.
    pub const ORPHANED: &str = "Orphaned";
    /// Transform: a staged rollout holds it back from a new digest until the wave before
    /// is Ready (also `status.pendingModule.reason`).
    pub const ROLLOUT_WAITING: &str = "RolloutWaiting";
    /// Transform: a staged rollout of a new digest stopped because a Transform failed on it
    /// (also `status.pendingModule.reason`).
    pub const ROLLOUT_HALTED: &str = "RolloutHalted";
    /// Transform: policies (the module's or the cluster's) reported warnings, recorded on
    /// the ResourceGraph (sent when they change).
    pub const POLICY_WARNINGS: &str = "PolicyWarnings";
}

/// Why a node failed or is blocked (`status.nodes[id].reason`).
pub mod node_reasons {
    /// A dependency failed.
    pub const DEPENDENCY_FAILED: &str = "DependencyFailed";
    /// The object's kind is not served (its CRD is not installed).
    pub const KIND_NOT_INSTALLED: &str = "KindNotInstalled";
    /// Another field manager owns fields the node applies.
    pub const CONFLICT: &str = "Conflict";
    /// The graph's identity may not do what the node needs.
    pub const FORBIDDEN: &str = "Forbidden";
    /// The API server refused the object (`Invalid`, an admission webhook, ...).
    pub const REFUSED: &str = "Refused";
    /// The API server did not answer, or answered with a server error.
    pub const UNAVAILABLE: &str = "Unavailable";
    /// The object is not a valid Kubernetes object.
    pub const MALFORMED: &str = "Malformed";
    /// The object lives outside the graph's namespace.
    pub const OUTSIDE_NAMESPACE: &str = "OutsideNamespace";
    /// The object is cluster-scoped.
    pub const CLUSTER_SCOPED: &str = "ClusterScoped";
    /// `spec.adopt` names an object that does not exist.
    pub const NOTHING_TO_ADOPT: &str = "NothingToAdopt";
    /// The object was not ready within the node's timeout.
    pub const NOT_READY: &str = "NotReady";
    /// Another ResourceGraph owns the object.
    pub const OWNED_BY_ANOTHER_GRAPH: &str = "OwnedByAnotherGraph";
    /// The object exists, no graph owns it, and `spec.adopt` does not name it.
    pub const ALREADY_EXISTS: &str = "AlreadyExists";
    /// Executing the node hit a bug in Pequod.
    pub const INTERNAL_ERROR: &str = "InternalError";
}
