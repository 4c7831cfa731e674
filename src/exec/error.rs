//! What can happen to a node: the errors that fail it, and the writes it made.

use super::cluster::ApiError;
use super::ownership::GraphId;
use crate::api::node_reasons;

/// Why a node failed in a pass.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The API server refused or did not answer a read or a write.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The object lives in another namespace than its graph, and the operator does not
    /// allow that.
    #[error(
        "{kind} {namespace}/{name} is outside the graph's namespace {graph_namespace}: refused (the operator runs without --allow-cross-namespace)"
    )]
    OutsideNamespace {
        /// The object's kind.
        kind: String,
        /// The object's namespace.
        namespace: String,
        /// The object's name.
        name: String,
        /// The graph's namespace.
        graph_namespace: String,
    },
    /// The object is cluster-scoped, and the operator does not allow that.
    #[error(
        "{kind} {name} is cluster-scoped: refused (the operator runs without --allow-cluster-scoped)"
    )]
    ClusterScoped {
        /// The object's kind.
        kind: String,
        /// The object's name.
        name: String,
    },
    /// `Transform.spec.adopt` names an object that does not exist.
    #[error("{kind} {object} does not exist: nothing to adopt (Transform.spec.adopt)")]
    NothingToAdopt {
        /// The object's kind.
        kind: String,
        /// `namespace/name`, or the name of a cluster-scoped object.
        object: String,
    },
    /// The object was not ready within the node's `timeoutSeconds`.
    #[error("not ready after {timeout_seconds}s: {waiting}")]
    NotReady {
        /// The node's timeout.
        timeout_seconds: u32,
        /// What it was still waiting for.
        waiting: String,
    },
    /// The object's controller says it failed for good (or a `failWhen` rule holds).
    #[error("{message}")]
    ObjectFailed {
        /// The object's reason.
        reason: String,
        /// What it said.
        message: String,
    },
    /// Another graph owns the object.
    #[error(
        "{object} is owned by {owner}: refused (a graph never writes, adopts or deletes another graph's objects)"
    )]
    OwnedByAnotherGraph {
        /// `Kind namespace/name`.
        object: String,
        /// The graph that owns it.
        owner: GraphId,
    },
    /// The object exists, no graph owns it, and the Transform does not adopt it.
    #[error(
        "{object} already exists and no graph owns it: refused (name it in the Transform's spec.adopt to take it over)"
    )]
    AlreadyExists {
        /// `Kind namespace/name`.
        object: String,
    },
    /// The graph's identity may not do what the node needs.
    #[error("{identity} may not {verb} {resource}{}: {message}", .namespace.as_ref().map(|n| format!(" in namespace {n}")).unwrap_or_default())]
    Forbidden {
        /// Who asked: `service account team-a/app`, or `the operator`.
        identity: String,
        /// The verb refused (get, patch, create, delete).
        verb: &'static str,
        /// The resource, `plural.group` (`deployments.apps`, `configmaps`).
        resource: String,
        /// The namespace of the object, if namespaced.
        namespace: Option<String>,
        /// The API server's message.
        message: String,
    },
}

impl NodeError {
    /// Whether trying again soon may succeed without any change (the API server was
    /// unavailable or throttling).
    pub fn is_transient(&self) -> bool {
        matches!(self, NodeError::Api(error) if error.is_transient())
    }

    /// How long the API server asked to wait, if it said.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            NodeError::Api(error) => error.retry_after(),
            _ => None,
        }
    }

    /// The node's `reason` for this error.
    pub fn reason(&self) -> &str {
        match self {
            NodeError::Api(error) => error.reason(),
            NodeError::ObjectFailed { reason, .. } => reason,
            NodeError::OutsideNamespace { .. } => node_reasons::OUTSIDE_NAMESPACE,
            NodeError::ClusterScoped { .. } => node_reasons::CLUSTER_SCOPED,
            NodeError::NothingToAdopt { .. } => node_reasons::NOTHING_TO_ADOPT,
            NodeError::NotReady { .. } => node_reasons::NOT_READY,
            NodeError::OwnedByAnotherGraph { .. } => node_reasons::OWNED_BY_ANOTHER_GRAPH,
            NodeError::AlreadyExists { .. } => node_reasons::ALREADY_EXISTS,
            NodeError::Forbidden { .. } => node_reasons::FORBIDDEN,
        }
    }
}

/// Why a node's object was written in a pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Write {
    /// It did not exist: created (mode Create) or applied for the first time.
    Created,
    /// The rendered object changed: the new version applied.
    Changed,
    /// The live object no longer held what was applied: applied again.
    DriftCorrected,
}

impl std::fmt::Display for Write {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Write::Created => "created",
            Write::Changed => "changed",
            Write::DriftCorrected => "drift corrected",
        })
    }
}
