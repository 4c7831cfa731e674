//! The plan stage: a Transform and its resolved module become the checked ResourceGraph that
//! is written to the cluster. It renders (worker pool, render cache), enforces the module's
//! policies with the Transform's overrides, adds the adopted objects, and records provenance,
//! labels and ownership. `pequod render`, `pequod module check` and the Transform controller
//! all call [`plan`], so the graph printed offline is the graph the operator writes.

mod adopt;
mod policy;

pub use policy::{Applicable, Enforcement, PolicyErrors, Rule, enforce};

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::ResourceExt;
use serde_json::Value;

use crate::api::condition::{reasons, types};
use crate::api::{
    API_VERSION, GraphMetadata, ResourceGraph, ResourceGraphSpec, SourceRef, Transform, Violation,
    labels,
};
use crate::module::Resolved;
use crate::render::{PolicyModule, RenderContext, RenderError, RenderedGraph, Renderer};

/// A planned graph: what to write, and the render it came from.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The ResourceGraph to write: metadata (name, labels, owner), spec; no status, and no
    /// `renderedAt` (the operator stamps the time it writes a new render).
    pub graph: ResourceGraph,
    /// The render behind it: the module's metadata, the input with its defaults filled, the
    /// dependency DAG of the rendered nodes.
    pub rendered: Arc<RenderedGraph>,
}

/// Bounds on what a plan may produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The largest ResourceGraph, serialized as JSON: well under what etcd stores in one
    /// object (1.5 MiB), leaving room for its status.
    pub max_graph_bytes: usize,
}

/// The default largest ResourceGraph: 1 MiB.
pub const DEFAULT_MAX_GRAPH_BYTES: usize = 1 << 20;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_graph_bytes: DEFAULT_MAX_GRAPH_BYTES,
        }
    }
}

/// Why no graph could be planned.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The module did not render (evaluation, input contract, integrity, schemas).
    #[error(transparent)]
    Render(#[from] RenderError),
    /// A policy reported an error that the Transform did not (or may not) lower.
    #[error(transparent)]
    Policy(#[from] PolicyErrors),
    /// A cluster policy module could not check the graph (it does not evaluate, its
    /// configuration breaks its contract, its worker failed).
    #[error("policy module {source_ref}: {error}")]
    PolicyModule {
        /// The policy module, as given to `--policy-module`.
        source_ref: String,
        /// What went wrong.
        error: RenderError,
    },
    /// The graph is larger than the API server would store.
    #[error(
        "the rendered ResourceGraph is {size} bytes, over the limit of {limit} bytes (--max-graph-bytes): render fewer or smaller objects"
    )]
    TooLarge {
        /// Its size as JSON.
        size: usize,
        /// The limit.
        limit: usize,
    },
}

impl PlanError {
    /// The Transform condition this error sets False, and its reason.
    pub fn condition(&self) -> (&'static str, &'static str) {
        match self {
            PlanError::Render(error) => error.condition(),
            PlanError::Policy(_) => (types::VALIDATED, reasons::POLICY_VIOLATION),
            PlanError::PolicyModule { .. } => (types::VALIDATED, reasons::POLICY_MODULE_FAILED),
            PlanError::TooLarge { .. } => (types::RENDERED, reasons::TOO_LARGE),
        }
    }

    /// Whether the error was found in the input before anything was rendered.
    pub fn before_render(&self) -> bool {
        matches!(self, PlanError::Render(error) if error.before_render())
    }

    /// Whether the same Transform and module may plan next time: a failure of the
    /// evaluation sandbox (deadline, memory, worker), not of the module or the input.
    pub fn is_transient(&self) -> bool {
        match self {
            PlanError::Render(error) | PlanError::PolicyModule { error, .. } => {
                !error.is_deterministic()
            }
            PlanError::Policy(_) | PlanError::TooLarge { .. } => false,
        }
    }

    /// The policy violations that refused the graph.
    pub fn violations(&self) -> &[Violation] {
        match self {
            PlanError::Policy(errors) => &errors.0,
            PlanError::Render(_) | PlanError::PolicyModule { .. } | PlanError::TooLarge { .. } => {
                &[]
            }
        }
    }

    /// The multi-line report behind the one-line message, when there is one.
    pub fn detail(&self) -> Option<&str> {
        match self {
            PlanError::Render(error) | PlanError::PolicyModule { error, .. } => error.detail(),
            PlanError::Policy(_) | PlanError::TooLarge { .. } => None,
        }
    }
}

/// Plans the ResourceGraph of `transform` from `module`, rendered by `renderer`, checked by
/// the module's policies and the cluster's `policy_modules`, within `limits`.
pub async fn plan(
    transform: &Transform,
    module: &Resolved,
    renderer: &Renderer,
    policy_modules: &[PolicyModule],
    limits: &Limits,
) -> Result<Plan, PlanError> {
    let context = RenderContext::of(transform);
    let rendered = renderer
        .render(&module.bundle, &transform.spec.input, &context)
        .await?;
    let mut applicable = Applicable::of_module(&rendered.policies, &rendered.findings);
    if !policy_modules.is_empty() {
        let subject = crate::render::subject(&context, transform.labels(), &rendered);
        for policy in policy_modules {
            let report = renderer
                .check_policies(policy, &subject)
                .await
                .map_err(|error| PlanError::PolicyModule {
                    source_ref: policy.source.clone(),
                    error,
                })?;
            applicable.add_cluster(&report, &context.namespace);
        }
    }
    let warnings = enforce(&applicable, &transform.spec.policies).into_result()?;
    let mut nodes = rendered.nodes.clone();
    adopt::adopt(&mut nodes, transform.spec.adopt.as_ref(), &context);
    let outputs = match &rendered.outputs {
        Value::Object(map) if map.is_empty() => None,
        Value::Null => None,
        other => Some(other.clone()),
    };
    let graph = ResourceGraph {
        metadata: graph_metadata(transform),
        spec: ResourceGraphSpec {
            source_ref: SourceRef {
                api_version: API_VERSION.to_string(),
                kind: "Transform".to_string(),
                name: context.name,
                uid: transform.metadata.uid.clone(),
            },
            metadata: GraphMetadata {
                module: rendered.module.name.clone(),
                version: rendered.module.version.clone(),
                module_digest: module.digest.clone(),
                render_hash: rendered.render_hash.clone(),
                rendered_at: None,
            },
            nodes,
            outputs,
            violations: warnings,
            prune: transform.spec.prune,
            suspend: false,
            service_account_name: transform.spec.service_account_name.clone(),
        },
        status: None,
    };
    let size = serde_json::to_vec(&graph).map_or(usize::MAX, |json| json.len());
    if size > limits.max_graph_bytes {
        return Err(PlanError::TooLarge {
            size,
            limit: limits.max_graph_bytes,
        });
    }
    Ok(Plan { graph, rendered })
}

/// The metadata of the ResourceGraph of `transform`: its name and namespace, Pequod's labels
/// and, in a cluster (the Transform has a uid), a controller reference to the Transform.
pub fn graph_metadata(transform: &Transform) -> ObjectMeta {
    let name = transform.metadata.name.clone().unwrap_or_default();
    let owner = transform.metadata.uid.as_ref().map(|uid| {
        vec![OwnerReference {
            api_version: API_VERSION.to_string(),
            kind: "Transform".to_string(),
            name: name.clone(),
            uid: uid.clone(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }]
    });
    let mut graph_labels: BTreeMap<String, String> = [
        (
            labels::MANAGED_BY.to_string(),
            labels::MANAGED_BY_PEQUOD.to_string(),
        ),
        (labels::TRANSFORM.to_string(), name.clone()),
    ]
    .into();
    // The graph goes to the replica of its Transform's shard.
    if let Some(shard) = transform.labels().get(labels::SHARD) {
        graph_labels.insert(labels::SHARD.to_string(), shard.clone());
    }
    ObjectMeta {
        name: Some(name),
        namespace: transform.metadata.namespace.clone(),
        labels: Some(graph_labels),
        owner_references: owner,
        ..ObjectMeta::default()
    }
}
