//! Rendering: a module bundle plus a Transform's input become a checked graph.
//!
//! Evaluation happens in worker processes ([`pool`]); this side caches rendered graphs by
//! (module digest, input, context, engine version), parses the result into the graph model,
//! defaults namespaces, adds Pequod's labels, and runs the integrity checks.

mod error;
mod input_json;
pub mod nickel;
mod policy;
mod pool;
mod protocol;
mod sandbox;
mod schema;
pub mod worker;

pub use error::{EvalFailure, FailureKind, RenderError};
pub use policy::{DeclaredPolicy, PolicyModule, PolicyModulesError, PolicyReport, subject};
pub use pool::{DEFAULT_RECYCLE_RESIDENT_MIB, MIN_MEMORY_MIB, PoolConfig, PoolStats, WorkerPool};
pub use protocol::{InputField, Presence, RenderContext};
pub use sandbox::{SandboxLevel, SandboxProbe, SandboxReport, SandboxStatus};
pub use schema::SchemaViolation;

use std::borrow::Cow;
use std::sync::Arc;

use prometheus::{Histogram, IntCounter};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::api::{ApplyMode, MAX_LABEL_VALUE, Node, Severity, labels};
use crate::graph::{Dag, json_type_name};
use crate::metrics::{self, Collectors};
use crate::module::{ModuleBundle, library_files};
use protocol::EvalRequest;

/// Kinds that are cluster-scoped; every other kind is namespaced. Used offline, where there
/// is no discovery to ask.
const CLUSTER_SCOPED_KINDS: &[&str] = &[
    "APIService",
    "CertificateSigningRequest",
    "ClusterImageCatalog",
    "ClusterIssuer",
    "ClusterRole",
    "ClusterRoleBinding",
    "ClusterSecretStore",
    "ClusterTrustBundle",
    "CSIDriver",
    "CSINode",
    "CustomResourceDefinition",
    "DeviceClass",
    "FlowSchema",
    "IngressClass",
    "IPAddress",
    "MutatingAdmissionPolicy",
    "MutatingAdmissionPolicyBinding",
    "MutatingWebhookConfiguration",
    "Namespace",
    "Node",
    "PersistentVolume",
    "PriorityClass",
    "PriorityLevelConfiguration",
    "ResourceSlice",
    "RuntimeClass",
    "ServiceCIDR",
    "StorageClass",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "ValidatingWebhookConfiguration",
    "VolumeAttachment",
    "VolumeAttributesClass",
    "VolumeSnapshotClass",
];

/// Module metadata, as the module declares it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct ModuleMetadata {
    /// Module name.
    pub name: String,
    /// Module version.
    pub version: String,
    /// One-line description.
    #[serde(default)]
    pub description: String,
}

/// What a module offers, evaluated without an input: what `pequod module inspect` shows.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ModuleDescription {
    /// The module's `metadata`.
    pub metadata: ModuleMetadata,
    /// The fields of its `Input` contract, depth first in source order; `None` when the
    /// contract is not a record (a custom contract: valid, but without fields to list).
    pub input_fields: Option<Vec<InputField>>,
}

/// A rendered, checked graph.
#[derive(Clone, Debug)]
pub struct RenderedGraph {
    /// The module's metadata.
    pub module: ModuleMetadata,
    /// Content digest of the module bundle.
    pub module_digest: String,
    /// The input after the module's contract filled its defaults.
    pub input: Value,
    /// The nodes, namespaced and labelled, in the module's order.
    pub nodes: Vec<Node>,
    /// The module's outputs.
    pub outputs: Value,
    /// `sha256:` over nodes and outputs.
    pub render_hash: String,
    /// What the module's policies found, before the Transform's overrides.
    pub findings: Vec<Finding>,
    /// The module's policies (an override must name one of them).
    pub policies: Vec<DeclaredPolicy>,
    /// The dependency DAG of the nodes.
    pub dag: Dag,
}

/// One finding of a module policy, as evaluated, before the Transform's overrides
/// (enforced by the plan stage).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// Where the problem is, e.g. `input.backup.schedule`.
    pub path: String,
    /// What is wrong and how to fix it.
    pub message: String,
    /// The policy's name.
    pub policy: String,
    /// The policy's severity.
    pub severity: Severity,
    /// Whether a Transform may lower the policy to a warning.
    #[serde(default)]
    pub overridable: bool,
}

/// The raw shape the engine's entry evaluates to.
#[derive(Deserialize)]
struct RawOutput {
    metadata: ModuleMetadata,
    input: Value,
    rendered: RawRendered,
    #[serde(default)]
    violations: Vec<Finding>,
    #[serde(default)]
    policies: Vec<DeclaredPolicy>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRendered {
    nodes: Vec<Node>,
    #[serde(default)]
    outputs: Value,
}

/// The renderer's metrics, counted where the events happen.
#[derive(Clone, Debug)]
pub struct RenderStats {
    /// Renders answered from the cache (graphs and deterministic failures), including
    /// renders that waited for an identical one under way.
    pub cache_hits: IntCounter,
    /// Renders that needed an evaluation.
    pub cache_misses: IntCounter,
    /// Latency of renders (an evaluation, or a cache hit).
    pub duration: Histogram,
}

impl Default for RenderStats {
    fn default() -> Self {
        RenderStats {
            cache_hits: metrics::counter(
                "render_cache_hits_total",
                "Renders answered from the render cache",
            ),
            cache_misses: metrics::counter(
                "render_cache_misses_total",
                "Renders that needed a Nickel evaluation",
            ),
            duration: metrics::histogram(
                "render_duration_seconds",
                "Render latency (Nickel evaluation or render-cache hit)",
                metrics::fast_buckets(),
            ),
        }
    }
}

impl RenderStats {
    /// The metrics, for the operator's registry.
    pub fn collectors(&self) -> Collectors {
        vec![
            Box::new(self.cache_hits.clone()),
            Box::new(self.cache_misses.clone()),
            Box::new(self.duration.clone()),
        ]
    }
}

/// A cached render: the graph, or a failure that the same input will always produce.
type CachedOutcome = Result<Arc<RenderedGraph>, Arc<RenderError>>;

/// A cached policy report, or a failure the same policy module and subject always produce.
type CachedReport = Result<Arc<PolicyReport>, Arc<RenderError>>;

/// Renders modules with a worker pool and a cache of rendered graphs.
pub struct Renderer {
    pool: WorkerPool,
    cache: moka::future::Cache<String, CachedOutcome>,
    /// Reports of cluster policy modules, by policy module and subject.
    policy_reports: moka::future::Cache<String, CachedReport>,
    engine_version: String,
    stats: RenderStats,
}

/// Default budget of the render cache, in estimated MiB: a few hundred typical graphs, and
/// little enough that the operator's memory stays flat however many inputs it renders.
pub const DEFAULT_CACHE_MIB: u64 = 8;

impl Renderer {
    /// A renderer over a new worker pool, caching up to about `cache_bytes` of renders.
    pub fn new(config: PoolConfig, cache_bytes: u64) -> Renderer {
        let cache = moka::future::Cache::builder()
            .weigher(|key: &String, outcome: &CachedOutcome| {
                let weight = key.len() + outcome_weight(outcome);
                u32::try_from(weight).unwrap_or(u32::MAX)
            })
            .max_capacity(cache_bytes)
            .build();
        let policy_reports = moka::future::Cache::builder()
            .weigher(|key: &String, report: &CachedReport| {
                let weight = key.len() + policy::report_weight(report);
                u32::try_from(weight).unwrap_or(u32::MAX)
            })
            .max_capacity(cache_bytes / 4)
            .build();
        Renderer {
            pool: WorkerPool::new(config),
            cache,
            policy_reports,
            engine_version: engine_version(),
            stats: RenderStats::default(),
        }
    }

    /// Renders `bundle` with `input` for the Transform named in `context`. The same render
    /// asked for concurrently is evaluated once; graphs and deterministic failures are
    /// cached, failures of the sandbox (deadline, memory, crash) are not.
    pub async fn render(
        &self,
        bundle: &ModuleBundle,
        input: &Value,
        context: &RenderContext,
    ) -> Result<Arc<RenderedGraph>, RenderError> {
        if !input.is_object() {
            return Err(RenderError::InputNotAnObject(json_type_name(input)));
        }
        if context.name.len() > MAX_LABEL_VALUE {
            return Err(RenderError::NameTooLong(context.name.clone()));
        }
        let _timer = self.stats.duration.start_timer();
        let key = self.cache_key(bundle, input, context);
        let evaluation = async {
            match self.evaluate(bundle, input, context).await {
                Ok(graph) => Ok(Ok(Arc::new(graph))),
                Err(error) if error.is_deterministic() => Ok(Err(Arc::new(error))),
                Err(error) => Err(error),
            }
        };
        let entry = self.cache.entry(key).or_try_insert_with(evaluation).await;
        let entry = entry.map_err(|error| (*error).clone())?;
        let counter = if entry.is_fresh() {
            &self.stats.cache_misses
        } else {
            &self.stats.cache_hits
        };
        counter.inc();
        entry.into_value().map_err(|error| (*error).clone())
    }

    async fn evaluate(
        &self,
        bundle: &ModuleBundle,
        input: &Value,
        context: &RenderContext,
    ) -> Result<RenderedGraph, RenderError> {
        let request = EvalRequest {
            digest: Cow::Borrowed(bundle.digest()),
            files: Cow::Borrowed(bundle.files()),
            entrypoint: Cow::Borrowed(bundle.entrypoint()),
            input: Cow::Borrowed(input),
            context: Cow::Borrowed(context),
            describe: false,
            subject: None,
        };
        let output = self.pool.evaluate(&request).await?;
        // Schema validation compiles large validators on first use: keep it off the
        // async runtime's threads.
        let (digest, context) = (bundle.digest().to_string(), context.clone());
        tokio::task::spawn_blocking(move || graph_from_output(output, &digest, &context))
            .await
            .map_err(|e| RenderError::Worker(format!("graph check failed: {e}")))?
    }

    /// The module's `metadata` (name, version, description) and the fields of its `Input`
    /// contract, evaluated without an input: what `pequod module publish` records and
    /// `pequod module inspect` shows. Not cached.
    pub async fn describe(&self, bundle: &ModuleBundle) -> Result<ModuleDescription, RenderError> {
        let context = RenderContext {
            name: "describe".to_string(),
            namespace: "default".to_string(),
        };
        let request = EvalRequest {
            digest: Cow::Borrowed(bundle.digest()),
            files: Cow::Borrowed(bundle.files()),
            entrypoint: Cow::Borrowed(bundle.entrypoint()),
            input: Cow::Owned(json!({})),
            context: Cow::Owned(context),
            describe: true,
            subject: None,
        };
        let mut output = self.pool.evaluate(&request).await?;
        let metadata = serde_json::from_value(output["metadata"].take()).map_err(|e| {
            RenderError::InvalidOutput(format!(
                "metadata must be {{ name, version, description? }} strings: {e}"
            ))
        })?;
        let input_fields = serde_json::from_value(output["inputFields"].take())
            .map_err(|e| RenderError::Worker(format!("bad input field list: {e}")))?;
        Ok(ModuleDescription {
            metadata,
            input_fields,
        })
    }

    /// Renderer counters.
    pub fn stats(&self) -> &RenderStats {
        &self.stats
    }

    /// Every metric of the renderer and its worker pool, for the operator's registry.
    pub fn collectors(&self) -> Collectors {
        let mut all = self.stats.collectors();
        all.extend(self.pool.stats().collectors());
        all
    }

    /// The worker pool.
    pub fn pool(&self) -> &WorkerPool {
        &self.pool
    }

    fn cache_key(&self, bundle: &ModuleBundle, input: &Value, context: &RenderContext) -> String {
        crate::digest::framed([
            self.engine_version.as_str(),
            bundle.digest(),
            bundle.entrypoint(),
            &input.to_string(),
            &context.namespace,
            &context.name,
        ])
    }
}

/// Estimated memory of a cached outcome. A rendered graph (parsed JSON values, nodes, DAG)
/// was measured at about 15 bytes of memory per byte of its JSON text (`pequod bench`).
fn outcome_weight(outcome: &CachedOutcome) -> usize {
    const MEMORY_PER_JSON_BYTE: usize = 16;
    match outcome {
        Ok(graph) => {
            let nodes: usize = graph.nodes.iter().map(|n| n.object.to_string().len()).sum();
            let json = nodes + graph.outputs.to_string().len() + graph.input.to_string().len();
            MEMORY_PER_JSON_BYTE * json
        }
        Err(error) => error.to_string().len() + error.detail().map_or(0, str::len),
    }
}

/// The crate version plus a digest of the embedded Nickel library: a change to either
/// invalidates cached renders.
pub fn engine_version() -> String {
    let mut hasher = Sha256::new();
    for (name, source) in library_files() {
        hasher.update(name.as_bytes());
        hasher.update([0]);
        hasher.update(source.as_bytes());
        hasher.update([0]);
    }
    format!(
        "{}+{}",
        env!("CARGO_PKG_VERSION"),
        &hex::encode(hasher.finalize())[..12]
    )
}

/// Parses an evaluation result into a checked graph.
fn graph_from_output(
    output: Value,
    module_digest: &str,
    context: &RenderContext,
) -> Result<RenderedGraph, RenderError> {
    let raw: RawOutput =
        serde_json::from_value(output).map_err(|e| RenderError::InvalidOutput(e.to_string()))?;
    // `MODULE/POLICY` names a cluster policy: a module's own policy named so could stand in
    // for one in a Transform's overrides.
    if let Some(policy) = raw.policies.iter().find(|p| p.name.contains('/')) {
        return Err(RenderError::InvalidOutput(format!(
            "policy `{}`: a module's policy names may not contain `/` (`module/policy` names a cluster policy)",
            policy.name
        )));
    }
    let mut nodes = raw.rendered.nodes;
    for node in &mut nodes {
        place_and_label(node, context);
    }
    let dag = Dag::build(&nodes)?;
    let schema_violations = schema::validate_nodes(&nodes);
    if !schema_violations.is_empty() {
        return Err(RenderError::Schema(schema_violations));
    }
    let outputs = raw.rendered.outputs;
    let render_hash = {
        let canonical = json!({"nodes": nodes, "outputs": outputs}).to_string();
        format!(
            "sha256:{}",
            hex::encode(Sha256::digest(canonical.as_bytes()))
        )
    };
    Ok(RenderedGraph {
        module: raw.metadata,
        module_digest: module_digest.to_string(),
        input: raw.input,
        nodes,
        outputs,
        render_hash,
        findings: raw.violations,
        policies: raw.policies,
        dag,
    })
}

/// Defaults the namespace of namespaced objects to the Transform's, and adds Pequod's
/// labels to the objects it will write (not to observed ones).
pub fn place_and_label(node: &mut Node, context: &RenderContext) {
    let namespaced = node
        .kind()
        .is_some_and(|kind| !CLUSTER_SCOPED_KINDS.contains(&kind));
    let observed = node.apply_policy.mode == ApplyMode::Observe;
    let id = node.id.clone();
    let Some(object) = node.object.as_object_mut() else {
        return;
    };
    let metadata = object
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(metadata) = metadata.as_object_mut() else {
        return;
    };
    if namespaced && !metadata.contains_key("namespace") {
        metadata.insert("namespace".into(), Value::String(context.namespace.clone()));
    }
    if observed {
        return;
    }
    let labels = metadata
        .entry("labels")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Some(labels) = labels.as_object_mut() {
        for (key, value) in [
            (labels::MANAGED_BY, labels::MANAGED_BY_PEQUOD),
            (labels::TRANSFORM, context.name.as_str()),
            (labels::RESOURCE_GRAPH, context.name.as_str()),
            (labels::RESOURCE_GRAPH_NAMESPACE, context.namespace.as_str()),
            (labels::NODE_ID, id.as_str()),
        ] {
            labels.insert(key.to_string(), Value::String(value.to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> RenderContext {
        RenderContext {
            name: "shop-api".into(),
            namespace: "shop".into(),
        }
    }

    fn node(value: Value) -> Node {
        serde_json::from_value(value).expect("valid node")
    }

    #[test]
    fn namespaced_objects_get_the_transform_namespace_and_labels() {
        let mut n = node(json!({"id": "svc", "object": {
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "labels": {"team": "a"}}}}));
        place_and_label(&mut n, &context());
        assert_eq!(
            n.object["metadata"],
            json!({"name": "web", "namespace": "shop", "labels": {
                "team": "a",
                "app.kubernetes.io/managed-by": "pequod",
                "platform.pequod.io/transform": "shop-api",
                "platform.pequod.io/resource-graph": "shop-api",
                "platform.pequod.io/resource-graph-namespace": "shop",
                "platform.pequod.io/node-id": "svc"}})
        );
    }

    #[test]
    fn explicit_namespace_cluster_scope_and_observe_are_respected() {
        let mut elsewhere = node(json!({"id": "a", "object": {
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "other"}}}));
        place_and_label(&mut elsewhere, &context());
        assert_eq!(elsewhere.object["metadata"]["namespace"], "other");

        let mut cluster = node(json!({"id": "b", "object": {
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}}}));
        place_and_label(&mut cluster, &context());
        assert!(cluster.object["metadata"].get("namespace").is_none());

        let mut observed = node(
            json!({"id": "c", "applyPolicy": {"mode": "Observe"}, "object": {
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db-app"}}}),
        );
        place_and_label(&mut observed, &context());
        assert_eq!(
            observed.object["metadata"],
            json!({"name": "db-app", "namespace": "shop"})
        );
    }
}
