//! The Transform controller: resolve the module, render it with the input, validate, and
//! server-side apply the ResourceGraph; the Transform's status says how each step went and
//! mirrors the graph's readiness. A failed step never touches the existing ResourceGraph.

use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use serde_json::json;

use super::{Context, Error, measured, retry_action};
use crate::api::ModuleType;
use crate::api::{LocalObjectReference, ResolvedModule, ResourceGraph, Transform, TransformStatus};
use crate::apply::FIELD_MANAGER;
use crate::exec::{condition, condition_with_status};
use crate::graph::Violation;
use crate::module::git::{GitAuth, GitError};
use crate::module::oci::Registry;
use crate::module::{Resolved, SourceError, Sources, from_config_map, resolve};
use crate::policy;
use crate::render::{FailureKind, RenderContext, RenderError};

const CONTROLLER: &str = "transform";

/// Reconciles one Transform.
pub async fn reconcile(transform: Arc<Transform>, context: Arc<Context>) -> Result<Action, Error> {
    measured(
        &context,
        CONTROLLER,
        reconcile_transform(&transform, &context),
    )
    .await
}

/// Retries a failed reconcile with backoff.
pub fn error_policy(transform: Arc<Transform>, error: &Error, _context: Arc<Context>) -> Action {
    tracing::warn!(kind = "Transform", namespace = transform.namespace().unwrap_or_default(), name = %transform.name_any(), %error, "reconcile failed");
    retry_action(2)
}

/// A step that failed: the condition to set False and why.
struct Failure {
    condition: &'static str,
    reason: &'static str,
    message: String,
    violations: Vec<Violation>,
    /// The input was refused before anything rendered.
    before_render: bool,
    /// A failure of the sandbox (deadline, memory, worker) that may not recur.
    transient: bool,
}

async fn reconcile_transform(transform: &Transform, context: &Context) -> Result<Action, Error> {
    if transform.metadata.deletion_timestamp.is_some() {
        // The ResourceGraph is owned by the Transform: garbage collection deletes it, and
        // its finalizer deletes the objects.
        return Ok(Action::await_change());
    }
    let namespace = transform.namespace().unwrap_or_default();
    let name = transform.name_any();
    let transforms: Api<Transform> = Api::namespaced(context.client.clone(), &namespace);
    let graphs: Api<ResourceGraph> = Api::namespaced(context.client.clone(), &namespace);
    let previous = transform.status.clone().unwrap_or_default();
    let now = jiff::Timestamp::now();
    let generation = transform.metadata.generation;
    let mut status = previous.clone();
    status.observed_generation = generation;

    if transform.spec.suspend {
        set(
            &mut status,
            condition(
                "Suspended",
                true,
                "Suspended",
                "spec.suspend is true: the Transform is not reconciled",
                generation,
                now,
                &previous.conditions,
            ),
        );
        // The graph stops too: no apply, no prune, no drift correction.
        if let Some(mut existing) = graphs.get_opt(&name).await?
            && !existing.spec.suspend
        {
            existing.spec.suspend = true;
            apply_graph(
                &graphs,
                &name,
                &ResourceGraph::new(&name, existing.spec),
                transform,
            )
            .await?;
        }
        return finish(
            &transforms,
            &name,
            transform,
            status,
            Action::await_change(),
        )
        .await;
    }
    status.conditions.retain(|c| c.type_ != "Suspended");
    let key = format!("{namespace}/{name}");

    let action = match render(transform, context).await {
        Err(failure) => {
            record_failure(&mut status, &failure, generation, now, &previous.conditions);
            let reason = if failure.condition == "Validated" {
                "ValidationFailed"
            } else {
                "RenderFailed"
            };
            if previous
                .conditions
                .iter()
                .all(|c| c.type_ != failure.condition || c.message != failure.message)
            {
                context
                    .event(
                        transform,
                        EventType::Warning,
                        reason,
                        failure.message.clone(),
                    )
                    .await;
            }
            // The Transform's generation is not ready, whatever the old graph says.
            set(
                &mut status,
                condition(
                    "Ready",
                    false,
                    failure.reason,
                    &format!("{} failed: {}", failure.condition, failure.message),
                    generation,
                    now,
                    &previous.conditions,
                ),
            );
            let remote = matches!(
                transform.spec.module_ref.type_,
                ModuleType::Oci | ModuleType::Git
            );
            if failure.transient {
                let mut failures = context.transform_failures.entry(key).or_insert(0);
                *failures = failures.saturating_add(1);
                Action::requeue(crate::exec::retry_delay(*failures))
            } else if remote && failure.condition == "ModuleResolved" {
                // A tag or a branch may be fixed upstream: look again at the next resync.
                Action::requeue(context.config.module_resync)
            } else {
                // The same input fails the same way: only a change is worth a new try.
                Action::await_change()
            }
        }
        Ok((resolved, graph)) => {
            context.transform_failures.remove(&key);
            write_graph(
                transform,
                context,
                &graphs,
                graph,
                &resolved,
                &mut status,
                now,
            )
            .await?;
            mirror_ready(
                &mut status,
                &graphs,
                &name,
                generation,
                now,
                &previous.conditions,
            )
            .await?;
            let module_ref = &transform.spec.module_ref;
            let mutable = match module_ref.type_ {
                ModuleType::Oci => !module_ref.ref_.contains('@'),
                ModuleType::Git => true,
                _ => false,
            };
            if mutable {
                // A tag or a branch may move: look again after --module-resync.
                Action::requeue(context.config.module_resync)
            } else {
                Action::await_change()
            }
        }
    };
    finish(&transforms, &name, transform, status, action).await
}

/// The steps of a reconcile, in order, each with its condition.
const STEPS: [&str; 3] = ["ModuleResolved", "Rendered", "Validated"];

/// Sets the failed step's condition False, the steps before it True and those after it
/// Unknown (not reached). An invalid input is found before anything renders.
fn record_failure(
    status: &mut TransformStatus,
    failure: &Failure,
    generation: Option<i64>,
    now: jiff::Timestamp,
    previous: &[Condition],
) {
    let failed_at = STEPS
        .iter()
        .position(|s| *s == failure.condition)
        .unwrap_or(0);
    for (i, step) in STEPS.iter().enumerate() {
        let not_reached = i > failed_at || (failure.before_render && *step == "Rendered");
        let entry = if i == failed_at {
            condition(
                step,
                false,
                failure.reason,
                &failure.message,
                generation,
                now,
                previous,
            )
        } else if not_reached {
            condition_with_status(
                step,
                "Unknown",
                "NotReached",
                &format!("{} failed", failure.condition),
                generation,
                now,
                previous,
            )
        } else {
            condition(
                step,
                true,
                "Succeeded",
                "succeeded",
                generation,
                now,
                previous,
            )
        };
        set(status, entry);
    }
    if !failure.violations.is_empty() {
        status.violations = failure.violations.clone();
    }
}

/// Server-side applies the rendered ResourceGraph when its spec changed, and records the
/// successful steps in `status`.
async fn write_graph(
    transform: &Transform,
    context: &Context,
    graphs: &Api<ResourceGraph>,
    mut graph: ResourceGraph,
    resolved: &Resolved,
    status: &mut TransformStatus,
    now: jiff::Timestamp,
) -> Result<(), Error> {
    let name = transform.name_any();
    let generation = transform.metadata.generation;
    let previous = transform.status.clone().unwrap_or_default();
    let rendered_hash = graph.spec.metadata.render_hash.clone();
    let existing = graphs.get_opt(&name).await?;
    graph.spec.metadata.rendered_at = Some(Time(now));
    if let Some(existing) = &existing
        && existing.spec.metadata.render_hash == rendered_hash
        && existing.spec.metadata.module_digest == graph.spec.metadata.module_digest
    {
        // Same render: keep its time, so an unchanged graph is not rewritten.
        graph.spec.metadata.rendered_at = existing.spec.metadata.rendered_at.clone();
    }
    if existing.as_ref().is_none_or(|e| e.spec != graph.spec) {
        apply_graph(graphs, &name, &graph, transform).await?;
        let note = format!(
            "{}@{} rendered {} nodes ({rendered_hash})",
            graph.spec.metadata.module,
            graph.spec.metadata.version,
            graph.spec.nodes.len(),
        );
        context
            .event(transform, EventType::Normal, "Rendered", note)
            .await;
    }
    status.resolved_module = Some(ResolvedModule {
        type_: transform.spec.module_ref.type_,
        ref_: short_ref(
            &transform.spec.module_ref.ref_,
            transform.spec.module_ref.type_,
        ),
        digest: resolved.digest.clone(),
        fetched_at: previous
            .resolved_module
            .as_ref()
            .filter(|m| m.digest == resolved.digest)
            .and_then(|m| m.fetched_at.clone())
            .or(Some(Time(now))),
    });
    status.resource_graph_ref = Some(LocalObjectReference { name });
    status.outputs = graph.spec.outputs.clone();
    status.violations = graph.spec.violations.clone();
    for step in STEPS {
        let message = match step {
            "ModuleResolved" => format!("{} {}", transform.spec.module_ref.type_, resolved.digest),
            "Validated" if graph.spec.violations.is_empty() => {
                "input, graph and policies are valid".to_string()
            }
            "Validated" => format!("{} policy warnings", graph.spec.violations.len()),
            _ => format!("{} nodes, {rendered_hash}", graph.spec.nodes.len()),
        };
        set(
            status,
            condition(
                step,
                true,
                "Succeeded",
                &message,
                generation,
                now,
                &previous.conditions,
            ),
        );
    }
    Ok(())
}

/// Server-side applies a whole ResourceGraph as the Transform's, owned by it.
async fn apply_graph(
    graphs: &Api<ResourceGraph>,
    name: &str,
    graph: &ResourceGraph,
    transform: &Transform,
) -> Result<(), Error> {
    let mut graph = graph.clone();
    graph.metadata = ResourceGraph::rendered_metadata(transform);
    let mut object = serde_json::to_value(&graph)?;
    object["apiVersion"] = json!(crate::api::API_VERSION);
    object["kind"] = json!("ResourceGraph");
    graphs
        .patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&object),
        )
        .await?;
    Ok(())
}

/// An inline module's `ref` is its whole source: the status keeps a digest-sized stand-in.
fn short_ref(reference: &str, type_: crate::api::ModuleType) -> String {
    if type_ == crate::api::ModuleType::Inline {
        "(inline)".to_string()
    } else {
        reference.to_string()
    }
}

/// Why a module could not be resolved, as a condition reason; and whether trying again
/// later may help (a registry that was down, credentials that were fixed).
fn source_failure(error: &SourceError) -> (&'static str, bool) {
    use crate::module::oci::OciError;
    match error {
        SourceError::DigestMismatch { .. } => ("DigestMismatch", false),
        SourceError::Unsupported(_) => ("UnsupportedSource", false),
        SourceError::UnknownEmbedded { .. } => ("ModuleNotFound", false),
        SourceError::Bundle(_) => ("InvalidModule", false),
        SourceError::MissingPath(_) => ("PathNotFound", false),
        SourceError::Oci(OciError::Reference { .. }) => ("InvalidReference", false),
        SourceError::Oci(OciError::Unauthorized { .. }) => ("Unauthorized", true),
        SourceError::Oci(OciError::NotFound { .. }) => ("ModuleNotFound", true),
        SourceError::Oci(OciError::Malformed { .. }) => ("InvalidArtifact", true),
        SourceError::Oci(OciError::Registry { .. }) => ("RegistryUnavailable", true),
        SourceError::Shared(error) => source_failure(error),
        SourceError::Unavailable(_) => ("SourceUnavailable", true),
        SourceError::Git(GitError::Fetch { .. } | GitError::Cache { .. }) => ("FetchFailed", true),
        SourceError::Git(GitError::UnknownRevision { .. }) => ("RevisionNotFound", true),
        SourceError::Git(GitError::MissingPath { .. }) => ("PathNotFound", true),
        SourceError::Git(GitError::Content { .. }) => ("InvalidModule", true),
        SourceError::LocalGitRefused(_) => ("InvalidReference", false),
        // Its creation wakes the Transform (the ConfigMap watch).
        SourceError::ConfigMapNotFound { .. } => ("ModuleNotFound", false),
    }
}

/// Credentials from the Transform's `pullSecretRef`, a Secret in its namespace.
enum Credentials {
    /// None given.
    None,
    /// A docker config (`kubernetes.io/dockerconfigjson`), for OCI.
    DockerConfig(serde_json::Value),
    /// Basic auth, a token or an SSH key, for Git.
    Git(GitAuth),
}

async fn pull_secret(transform: &Transform, context: &Context) -> Result<Credentials, Failure> {
    let Some(reference) = &transform.spec.module_ref.pull_secret_ref else {
        return Ok(Credentials::None);
    };
    let namespace = transform.namespace().unwrap_or_default();
    let shown = format!("Secret {namespace}/{}", reference.name);
    let failed = |message: String| Failure {
        condition: "ModuleResolved",
        reason: "PullSecretUnavailable",
        message,
        violations: Vec::new(),
        before_render: false,
        transient: true,
    };
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(context.client.clone(), &namespace);
    let secret = secrets
        .get_opt(&reference.name)
        .await
        .map_err(|e| failed(format!("cannot read {shown}: {e}")))?
        .ok_or_else(|| failed(format!("pullSecretRef: {shown} not found")))?;
    let data = secret.data.unwrap_or_default();
    let text = |key: &str| {
        data.get(key)
            .map(|bytes| String::from_utf8_lossy(&bytes.0).into_owned())
    };
    if transform.spec.module_ref.type_ == ModuleType::Git {
        let auth =
            GitAuth::from_secret_data(text).map_err(|lack| failed(format!("{shown} {lack}")))?;
        return Ok(Credentials::Git(auth));
    }
    let config = text(".dockerconfigjson").ok_or_else(|| {
        failed(format!(
            "{shown} has no .dockerconfigjson (type kubernetes.io/dockerconfigjson)"
        ))
    })?;
    serde_json::from_str(&config)
        .map(Credentials::DockerConfig)
        .map_err(|e| failed(format!("{shown}: .dockerconfigjson is not JSON: {e}")))
}

/// The module in the ConfigMap `moduleRef.ref` of the Transform's namespace.
async fn config_map_module(
    transform: &Transform,
    context: &Context,
) -> Result<Resolved, SourceError> {
    let namespace = transform.namespace().unwrap_or_default();
    let name = &transform.spec.module_ref.ref_;
    let config_maps: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(context.client.clone(), &namespace);
    let found = config_maps
        .get_opt(name)
        .await
        .map_err(|e| {
            SourceError::Unavailable(format!("cannot read ConfigMap {namespace}/{name}: {e}"))
        })?
        .ok_or_else(|| SourceError::ConfigMapNotFound {
            namespace: namespace.clone(),
            name: name.clone(),
        })?;
    from_config_map(&found.data.unwrap_or_default(), &transform.spec.module_ref)
}

/// Resolves and renders; the ResourceGraph to write, or the step that failed.
async fn render(
    transform: &Transform,
    context: &Context,
) -> Result<(Resolved, ResourceGraph), Failure> {
    let module_ref = &transform.spec.module_ref;
    let type_label = module_ref.type_.to_string();
    let started = Instant::now();
    let credentials = pull_secret(transform, context).await?;
    let with_secret;
    let (registry, git_auth) = match credentials {
        Credentials::DockerConfig(config) => {
            with_secret = Registry::new(&context.config.insecure_registries, Some(config));
            (&with_secret, GitAuth::Anonymous)
        }
        Credentials::Git(auth) => (&context.registry, auth),
        Credentials::None => (&context.registry, GitAuth::Anonymous),
    };
    let sources = Sources {
        registry,
        cache: &context.modules,
        cache_dir: &context.config.cache_dir,
        git_auth,
        allow_local_git: context.config.allow_local_git,
    };
    let resolved = if module_ref.type_ == ModuleType::Configmap {
        config_map_module(transform, context).await
    } else {
        resolve(module_ref, None, &sources).await
    };
    let result = if resolved.is_ok() { "success" } else { "error" };
    context
        .metrics
        .module_fetch_total
        .with_label_values(&[type_label.as_str(), result])
        .inc();
    context
        .metrics
        .module_fetch_duration_seconds
        .with_label_values(&[type_label.as_str()])
        .observe(started.elapsed().as_secs_f64());
    let resolved = resolved.map_err(|error| {
        let (reason, transient) = source_failure(&error);
        Failure {
            condition: "ModuleResolved",
            reason,
            message: error.to_string(),
            violations: Vec::new(),
            before_render: false,
            transient,
        }
    })?;
    if module_ref.type_ == ModuleType::Oci {
        let counter = if resolved.cached {
            &context.metrics.module_cache_hits_total
        } else {
            &context.metrics.module_cache_misses_total
        };
        counter.inc();
        let evicted = context.modules.evictions();
        let counted = context.metrics.module_cache_evictions_total.get();
        context
            .metrics
            .module_cache_evictions_total
            .inc_by(evicted.saturating_sub(counted));
    }
    let bundle = &resolved.bundle;
    let hits_before = context
        .renderer
        .stats()
        .cache_hits
        .load(std::sync::atomic::Ordering::Relaxed);
    let started = Instant::now();
    let rendered = context
        .renderer
        .render(bundle, &transform.spec.input, &RenderContext::of(transform))
        .await;
    context
        .metrics
        .render_duration_seconds
        .observe(started.elapsed().as_secs_f64());
    let hits_after = context
        .renderer
        .stats()
        .cache_hits
        .load(std::sync::atomic::Ordering::Relaxed);
    context
        .metrics
        .render_cache_hits_total
        .inc_by(hits_after.saturating_sub(hits_before));
    let graph = rendered.map_err(render_failure)?;
    let warnings = policy::enforce(&graph.findings, &transform.spec.policies)
        .into_result()
        .map_err(|errors| Failure {
            condition: "Validated",
            reason: "PolicyViolation",
            message: errors.to_string(),
            violations: errors.0.clone(),
            before_render: false,
            transient: false,
        })?;
    let mut resource_graph =
        ResourceGraph::rendered(transform, &resolved.digest, &graph, &warnings);
    super::adopt::adopt(
        &mut resource_graph.spec.nodes,
        transform.spec.adopt.as_ref(),
        &RenderContext::of(transform),
    );
    Ok((resolved, resource_graph))
}

fn render_failure(error: RenderError) -> Failure {
    let (condition, reason) = match &error {
        RenderError::InputNotAnObject(_) => ("Validated", "InvalidInput"),
        RenderError::Evaluation(failure)
            if failure.kind == FailureKind::Contract && failure.path.is_some() =>
        {
            ("Validated", "InvalidInput")
        }
        RenderError::Integrity(_) => ("Validated", "InvalidGraph"),
        RenderError::Schema(_) => ("Validated", "SchemaViolation"),
        RenderError::NameTooLong(_) => ("Validated", "NameTooLong"),
        RenderError::Timeout(_) | RenderError::MemoryLimit(_) | RenderError::StackOverflow => {
            ("Rendered", "EvaluationLimit")
        }
        RenderError::WorkerCrashed { .. } | RenderError::Worker(_) => ("Rendered", "WorkerFailed"),
        _ => ("Rendered", "RenderFailed"),
    };
    Failure {
        condition,
        reason,
        before_render: matches!(reason, "InvalidInput" | "NameTooLong"),
        transient: matches!(reason, "EvaluationLimit" | "WorkerFailed"),
        message: error.to_string(),
        violations: Vec::new(),
    }
}

/// Replaces (or adds) the condition of the same type.
fn set(status: &mut TransformStatus, condition: Condition) {
    match status
        .conditions
        .iter_mut()
        .find(|c| c.type_ == condition.type_)
    {
        Some(existing) => *existing = condition,
        None => status.conditions.push(condition),
    }
}

/// `Ready` mirrors the ResourceGraph's, once the graph controller has seen its generation.
async fn mirror_ready(
    status: &mut TransformStatus,
    graphs: &Api<ResourceGraph>,
    name: &str,
    generation: Option<i64>,
    now: jiff::Timestamp,
    previous: &[Condition],
) -> Result<(), Error> {
    let graph = graphs.get_opt(name).await?;
    let ready = graph.as_ref().and_then(|g| {
        let status = g.status.as_ref()?;
        if status.observed_generation != g.metadata.generation {
            return None;
        }
        status
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .cloned()
    });
    let mirrored = match (graph, ready) {
        (None, _) => condition(
            "Ready",
            false,
            "NoResourceGraph",
            "no ResourceGraph has been written yet",
            generation,
            now,
            previous,
        ),
        (Some(_), None) => condition(
            "Ready",
            false,
            "Progressing",
            "waiting for the ResourceGraph to be executed",
            generation,
            now,
            previous,
        ),
        (Some(_), Some(ready)) => condition(
            "Ready",
            ready.status == "True",
            &ready.reason,
            &ready.message,
            generation,
            now,
            previous,
        ),
    };
    set(status, mirrored);
    Ok(())
}

async fn finish(
    transforms: &Api<Transform>,
    name: &str,
    transform: &Transform,
    status: TransformStatus,
    action: Action,
) -> Result<Action, Error> {
    if transform.status.as_ref() != Some(&status) {
        let patch = json!({
            "apiVersion": crate::api::API_VERSION,
            "kind": "Transform",
            "status": status,
        });
        transforms
            .patch_status(
                name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await?;
    }
    Ok(action)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::oci::OciError;

    #[test]
    fn a_shared_fetch_failure_keeps_its_reason() {
        let refused = || {
            SourceError::Oci(OciError::Unauthorized {
                registry: "registry.example.com".to_string(),
                message: "denied".to_string(),
            })
        };
        let shared = SourceError::Shared(std::sync::Arc::new(refused()));
        assert_eq!(source_failure(&shared), source_failure(&refused()));
        assert_eq!(source_failure(&shared), ("Unauthorized", true));
        assert_eq!(shared.to_string(), refused().to_string());
        let unreadable = SourceError::Unavailable("cannot read ConfigMap a/b: timeout".into());
        assert_eq!(source_failure(&unreadable), ("SourceUnavailable", true));
    }
}
