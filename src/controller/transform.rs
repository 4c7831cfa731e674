//! The Transform controller: resolve the module, plan the ResourceGraph (render, validate,
//! policies, adoption), and server-side apply it; the Transform's status says how each step
//! went and mirrors the graph's readiness. A failed step never touches the existing
//! ResourceGraph.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use serde_json::json;

use super::WrittenGraph;
use super::cached::{CachedGraph, Shared};
use super::credentials::{Credentials, credentials, resolve_with};
use super::policies::PoliciesUnavailable;
use super::{Context, Error, measured, retry_later, rollout};
use crate::api::condition::{self, ConditionWriter, Status, reasons, types};
use crate::api::{
    API_VERSION, FIELD_MANAGER, GraphMetadata, LocalObjectReference, ModuleType, PendingModule,
    ResolvedModule, ResourceGraph, ResourceGraphSpec, Transform, TransformStatus, Violation,
    event_reasons,
};
use crate::backoff::retry_delay;
use crate::exec::{ApiError, TRANSIENT_FAILURES_TOLERATED};
use crate::module::{Resolved, SourceError, from_config_map};
use crate::plan::{self, Plan, PlanError};

const CONTROLLER: &str = "transform";

/// Reconciles one Transform.
pub async fn reconcile(
    transform: Arc<Shared<Transform>>,
    context: Arc<Context>,
) -> Result<Action, Error> {
    measured(
        &context,
        CONTROLLER,
        transform.as_ref(),
        reconcile_transform(&transform, &context),
    )
    .await
}

/// Retries a failed reconcile after a backoff that grows with its failures in a row.
pub fn error_policy(
    transform: Arc<Shared<Transform>>,
    error: &Error,
    context: Arc<Context>,
) -> Action {
    retry_later(CONTROLLER, transform.as_ref(), error, &context)
}

/// The steps of a reconcile, in order, each with its condition.
const STEPS: [&str; 3] = [types::MODULE_RESOLVED, types::RENDERED, types::VALIDATED];

/// A step that failed: the condition to set False and why.
struct Failure {
    condition: &'static str,
    reason: &'static str,
    message: String,
    violations: Vec<Violation>,
    /// The input was refused before anything rendered.
    before_render: bool,
    /// A failure that may not recur: the sandbox (deadline, memory, worker), or a source
    /// that was unreachable.
    transient: bool,
}

impl From<SourceError> for Failure {
    fn from(error: SourceError) -> Failure {
        Failure {
            condition: types::MODULE_RESOLVED,
            reason: error.reason(),
            message: error.to_string(),
            violations: Vec::new(),
            before_render: false,
            transient: error.is_retryable(),
        }
    }
}

impl From<PoliciesUnavailable> for Failure {
    fn from(error: PoliciesUnavailable) -> Failure {
        Failure {
            condition: types::VALIDATED,
            reason: reasons::POLICY_MODULE_FAILED,
            message: error.to_string(),
            violations: Vec::new(),
            before_render: false,
            // The policy modules are loaded again at the resync, or when their ConfigMap
            // changes, and every Transform is then planned again.
            transient: true,
        }
    }
}

impl From<PlanError> for Failure {
    fn from(error: PlanError) -> Failure {
        let (condition, reason) = error.condition();
        Failure {
            condition,
            reason,
            before_render: error.before_render(),
            transient: error.is_transient(),
            violations: error.violations().to_vec(),
            message: error.to_string(),
        }
    }
}

async fn reconcile_transform(transform: &Transform, context: &Context) -> Result<Action, Error> {
    if transform.metadata.deletion_timestamp.is_some() {
        // The ResourceGraph is owned by the Transform: garbage collection deletes it, and
        // its finalizer deletes the objects.
        context.render_failures.forget(&render_key(transform));
        return Ok(Action::await_change());
    }
    let namespace = transform.namespace().unwrap_or_default();
    let name = transform.name_any();
    let transforms: Api<Transform> = Api::namespaced(context.client.clone(), &namespace);
    let graphs: Api<ResourceGraph> = Api::namespaced(context.client.clone(), &namespace);
    let previous = transform.status.clone().unwrap_or_default();
    let conditions = ConditionWriter::new(
        transform.metadata.generation,
        jiff::Timestamp::now(),
        &previous.conditions,
    );
    let mut status = previous.clone();
    status.observed_generation = transform.metadata.generation;

    if transform.spec.suspend {
        condition::set(
            &mut status.conditions,
            conditions.condition(
                types::SUSPENDED,
                Status::True,
                reasons::SUSPENDED,
                "spec.suspend is true: the Transform is not reconciled",
            ),
        );
        // The graph stops too: no apply, no prune, no drift correction.
        if let Some(mut spec) = cached_spec(context, &namespace, &name)
            && !spec.suspend
        {
            spec.suspend = true;
            apply_graph(&graphs, &name, &ResourceGraph::new(&name, spec), transform).await?;
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
    status.conditions.retain(|c| c.type_ != types::SUSPENDED);
    let key = render_key(transform);

    let resolved = match resolve_module(transform, context).await {
        Ok(module) => match held_back(transform, &module, context) {
            None => {
                status.pending_module = None;
                Ok(module)
            }
            Some(pending) => {
                // A halted rollout resumes only when the reference moves again.
                let recheck = if pending.reason == rollout::ROLLOUT_HALTED {
                    context.config.module_resync
                } else {
                    ROLLOUT_RECHECK
                };
                note_pending(transform, context, &mut status, pending).await;
                let same_spec = previous.observed_generation == transform.metadata.generation;
                if same_spec && previous.resource_graph_ref.is_some() {
                    // Its graph stays as it is, on the digest it is on.
                    mirror_ready(&mut status, context, (&namespace, &name, None), &conditions);
                    let action = Action::requeue(recheck);
                    return finish(&transforms, &name, transform, status, action).await;
                }
                // A changed input renders with the digest the Transform is on, when that
                // can be fetched again (an OCI digest, a Git commit).
                match held_module(transform, context).await {
                    Some(held) => held,
                    None => Ok(module),
                }
            }
        },
        Err(failure) => Err(failure),
    };
    let attempted = resolved.as_ref().ok().map(|module| module.digest.clone());
    let planned = match resolved {
        Ok(module) => {
            let planned_from = planned_from(transform, &module, context);
            match unchanged_graph(transform, &planned_from, context).await {
                Unchanged::Graph(graph) => Ok((module, *graph, planned_from)),
                // Its watch event wakes the Transform (or this retry does).
                Unchanged::InFlight => return Ok(Action::requeue(IN_FLIGHT_RETRY)),
                Unchanged::No => plan_graph(transform, &module, context)
                    .await
                    .map(|plan| (module, plan.graph, planned_from)),
            }
        }
        Err(failure) => Err(failure),
    };
    let action = match planned {
        Err(failure) => {
            let failures = if failure.transient {
                context.render_failures.failed(&key).0
            } else {
                context.render_failures.forget(&key);
                0
            };
            let persisting = !failure.transient || failures >= TRANSIENT_FAILURES_TOLERATED;
            if !persisting && previous.resource_graph_ref.is_some() {
                // A passing failure (a registry or the API server unavailable, the sandbox)
                // of a Transform whose graph runs changes nothing users see until it
                // persists: try again after the backoff.
                return Ok(Action::requeue(retry_delay(failures)));
            }
            record_failure(&mut status, &failure, &conditions);
            // The digest it failed on is the one it is on: a staged rollout halts on it.
            if let Some(digest) = attempted
                && failure.condition != types::MODULE_RESOLVED
                && failure.reason != reasons::POLICY_MODULE_FAILED
            {
                status.resolved_module = Some(ResolvedModule {
                    type_: transform.spec.module_ref.type_,
                    ref_: short_ref(
                        &transform.spec.module_ref.ref_,
                        transform.spec.module_ref.type_,
                    ),
                    digest,
                    fetched_at: Some(Time(jiff::Timestamp::now())),
                });
            }
            let changed = previous
                .conditions
                .iter()
                .all(|c| c.type_ != failure.condition || c.message != failure.message);
            if persisting && changed {
                let reason = if failure.condition == types::VALIDATED {
                    event_reasons::VALIDATION_FAILED
                } else {
                    event_reasons::RENDER_FAILED
                };
                context
                    .event(
                        transform,
                        EventType::Warning,
                        reason,
                        failure.message.clone(),
                    )
                    .await;
            }
            let remote = matches!(
                transform.spec.module_ref.type_,
                ModuleType::Oci | ModuleType::Git
            );
            if failure.transient {
                Action::requeue(retry_delay(failures))
            } else if remote
                && (failure.condition == types::MODULE_RESOLVED
                    || rollout::moves(&transform.spec.module_ref))
            {
                // A tag or a branch may be fixed upstream (a source that failed, or a
                // version that does not render): look again at the next resync.
                Action::requeue(context.config.module_resync)
            } else {
                // The same input fails the same way: only a change is worth a new try.
                Action::await_change()
            }
        }
        Ok((module, graph, planned_from)) => {
            let rendered = graph.spec.metadata.clone();
            let written = write_graph(
                transform,
                context,
                &graphs,
                (graph, planned_from),
                &module,
                &mut status,
                &conditions,
            )
            .await;
            if let Err(Error::GraphRejected(error)) = &written {
                let failures = context.render_failures.failed(&key).0;
                let persisting = !error.is_transient() || failures >= TRANSIENT_FAILURES_TOLERATED;
                if !persisting && previous.resource_graph_ref.is_some() {
                    return Ok(Action::requeue(retry_delay(failures)));
                }
                for step in STEPS {
                    condition::set(
                        &mut status.conditions,
                        conditions.condition(step, Status::True, reasons::SUCCEEDED, "succeeded"),
                    );
                }
                let message = format!("the API server refused the ResourceGraph: {error}");
                let ready = conditions.condition(
                    types::READY,
                    Status::False,
                    reasons::RESOURCE_GRAPH_REJECTED,
                    &message,
                );
                let changed = condition::find(&previous.conditions, types::READY)
                    .is_none_or(|c| c.message != ready.message);
                condition::set(&mut status.conditions, ready);
                if persisting && changed {
                    context
                        .event(
                            transform,
                            EventType::Warning,
                            event_reasons::RESOURCE_GRAPH_REJECTED,
                            message,
                        )
                        .await;
                }
                let action = Action::requeue(retry_delay(failures));
                return finish(&transforms, &name, transform, status, action).await;
            }
            written?;
            context.render_failures.forget(&key);
            mirror_ready(
                &mut status,
                context,
                (&namespace, &name, Some(&rendered)),
                &conditions,
            );
            if rollout::moves(&transform.spec.module_ref) || module.stale.is_some() {
                // A tag or a branch may move, and a copy served without its source is to be
                // checked with it: look again after --module-resync.
                Action::requeue(context.config.module_resync)
            } else {
                Action::await_change()
            }
        }
    };
    finish(&transforms, &name, transform, status, action).await
}

/// How often a Transform held back by a staged rollout looks at the wave before again.
const ROLLOUT_RECHECK: Duration = Duration::from_secs(2);

/// Whether a staged rollout holds `transform` back from `module`, a new digest of its moving
/// reference: what it waits for, or `None` to move. New Transforms and pins never wait.
fn held_back(transform: &Transform, module: &Resolved, context: &Context) -> Option<PendingModule> {
    let group = rollout::group_of(transform)?;
    let on = transform.status.as_ref()?.resolved_module.as_ref()?;
    if on.digest == module.digest {
        return None;
    }
    let members = context.moves.members(&group, || {
        context
            .transforms
            .state()
            .iter()
            .filter(|t| rollout::group_of(t).as_deref() == Some(group.as_str()))
            .map(|t| {
                let graph =
                    cached_graph(context, &t.namespace().unwrap_or_default(), &t.name_any());
                rollout::member(t, graph.as_ref().and_then(|g| g.module_digest()))
            })
            .collect()
    });
    let limit = context.config.rollout_max_unavailable.of(members.len());
    let key = render_key(transform);
    let decision = context
        .moves
        .admit(&group, &module.digest, &key, &members, limit);
    let behind = members
        .iter()
        .filter(|m| m.digest.as_deref() != Some(module.digest.as_str()))
        .count();
    let gauge = |state: &str| {
        context
            .metrics
            .module_rollouts
            .with_label_values(&[transform.spec.module_ref.ref_.as_str(), state])
    };
    match decision {
        rollout::Decision::Move => {
            if behind <= 1 {
                gauge("waiting").set(0);
                gauge("halted").set(0);
            }
            None
        }
        rollout::Decision::Hold(pending) => {
            let (state, other) = if pending.reason == rollout::ROLLOUT_HALTED {
                ("halted", "waiting")
            } else {
                ("waiting", "halted")
            };
            gauge(state).set(i64::try_from(behind).unwrap_or(i64::MAX));
            gauge(other).set(0);
            Some(pending)
        }
    }
}

/// Records that a rollout holds `transform` back, with an event when that is news.
async fn note_pending(
    transform: &Transform,
    context: &Context,
    status: &mut TransformStatus,
    pending: PendingModule,
) {
    let before = transform
        .status
        .as_ref()
        .and_then(|s| s.pending_module.as_ref());
    if before.is_none_or(|b| b.digest != pending.digest || b.reason != pending.reason) {
        let type_ = if pending.reason == rollout::ROLLOUT_HALTED {
            EventType::Warning
        } else {
            EventType::Normal
        };
        context
            .event(transform, type_, &pending.reason, pending.message.clone())
            .await;
    }
    status.pending_module = Some(pending);
}

/// The module at the digest `transform` is on, fetched again by digest (an OCI manifest
/// digest, a Git commit) or, for a ConfigMap (which holds only its current content), as the
/// module cache kept it; `None` when it cannot be had (evicted from memory).
async fn held_module(
    transform: &Transform,
    context: &Context,
) -> Option<Result<Resolved, Failure>> {
    let digest = &transform.status.as_ref()?.resolved_module.as_ref()?.digest;
    let mut pinned = transform.clone();
    let module_ref = &mut pinned.spec.module_ref;
    module_ref.ref_ = match module_ref.type_ {
        ModuleType::Oci => rollout::oci_at_digest(&module_ref.ref_, digest),
        ModuleType::Git => rollout::git_at_commit(&module_ref.ref_, digest)?,
        ModuleType::Configmap => {
            return kept_config_map_module(transform, context, digest)
                .await
                .map(|kept| kept.map_err(Failure::from));
        }
        _ => return None,
    };
    Some(resolve_module(&pinned, context).await)
}

/// Where the module cache keeps a ConfigMap module's version.
fn config_map_key(transform: &Transform, digest: &str) -> String {
    format!(
        "configmap {}/{}@{digest}",
        transform.namespace().unwrap_or_default(),
        transform.spec.module_ref.ref_
    )
}

/// A Transform's key (`namespace/name`) in the controller's records: its transient render
/// failures, the graph it last wrote.
fn render_key(transform: &Transform) -> String {
    format!(
        "{}/{}",
        transform.namespace().unwrap_or_default(),
        transform.name_any()
    )
}

/// Sets the failed step's condition False, the steps before it True and those after it
/// Unknown (not reached), and Ready False: the Transform's generation is not ready, whatever
/// the old graph says. An invalid input is found before anything renders.
fn record_failure(status: &mut TransformStatus, failure: &Failure, conditions: &ConditionWriter) {
    let failed_at = STEPS
        .iter()
        .position(|s| *s == failure.condition)
        .unwrap_or(0);
    for (i, step) in STEPS.iter().enumerate() {
        let not_reached = i > failed_at || (failure.before_render && *step == types::RENDERED);
        let entry = if i == failed_at {
            conditions.condition(step, Status::False, failure.reason, &failure.message)
        } else if not_reached {
            conditions.condition(
                step,
                Status::Unknown,
                reasons::NOT_REACHED,
                &format!("{} failed", failure.condition),
            )
        } else {
            conditions.condition(step, Status::True, reasons::SUCCEEDED, "succeeded")
        };
        condition::set(&mut status.conditions, entry);
    }
    if !failure.violations.is_empty() {
        status.violations = failure.violations.clone();
    }
    condition::set(
        &mut status.conditions,
        conditions.condition(
            types::READY,
            Status::False,
            failure.reason,
            &format!("{} failed: {}", failure.condition, failure.message),
        ),
    );
}

/// Server-side applies the planned ResourceGraph (and what it was planned from) when its
/// spec changed, and records the successful steps in `status`.
async fn write_graph(
    transform: &Transform,
    context: &Context,
    graphs: &Api<ResourceGraph>,
    (mut graph, planned_from): (ResourceGraph, String),
    module: &Resolved,
    status: &mut TransformStatus,
    conditions: &ConditionWriter<'_>,
) -> Result<(), Error> {
    let name = transform.name_any();
    let previous = transform.status.clone().unwrap_or_default();
    let rendered_hash = graph.spec.metadata.render_hash.clone();
    let namespace = transform.namespace().unwrap_or_default();
    let existing = cached_spec(context, &namespace, &name);
    let now = jiff::Timestamp::now();
    graph.spec.metadata.rendered_at = Some(Time(now));
    // Same render: keep its time, so an unchanged graph is not rewritten. The watch may
    // not have brought a graph written a moment ago yet: this controller's own record of
    // what it wrote answers then, so the write is repeated as it was (a no-op for the
    // API server), not as a new generation that would run the graph again.
    let written_key = render_key(transform);
    let previous_render = match &existing {
        Some(existing) => Some(existing.metadata.clone()),
        None => context
            .written_graphs
            .get(&written_key)
            .await
            .map(|written| written.metadata),
    };
    if let Some(previous) = previous_render
        && same_render(&previous, &graph.spec.metadata)
    {
        graph.spec.metadata.rendered_at = previous.rendered_at;
    }
    if existing.as_ref().is_none_or(|e| *e != graph.spec) {
        apply_graph(graphs, &name, &graph, transform).await?;
        let note = format!(
            "{}@{} rendered {} nodes ({rendered_hash})",
            graph.spec.metadata.module,
            graph.spec.metadata.version,
            graph.spec.nodes.len(),
        );
        context
            .event(transform, EventType::Normal, event_reasons::RENDERED, note)
            .await;
    }
    context
        .written_graphs
        .insert(
            written_key,
            WrittenGraph {
                metadata: graph.spec.metadata.clone(),
                planned_from,
                written_at: Instant::now(),
            },
        )
        .await;
    status.resolved_module = Some(ResolvedModule {
        type_: transform.spec.module_ref.type_,
        ref_: short_ref(
            &transform.spec.module_ref.ref_,
            transform.spec.module_ref.type_,
        ),
        digest: module.digest.clone(),
        fetched_at: previous
            .resolved_module
            .as_ref()
            .filter(|m| m.digest == module.digest)
            .and_then(|m| m.fetched_at.clone())
            .or(Some(Time(now))),
    });
    status.resource_graph_ref = Some(LocalObjectReference { name });
    status.outputs = graph.spec.outputs.clone();
    if !graph.spec.violations.is_empty() && graph.spec.violations != previous.violations {
        let warnings: Vec<String> = graph
            .spec
            .violations
            .iter()
            .map(|v| {
                let policy = v.policy.as_deref().unwrap_or("-");
                format!("{}: {} (policy {policy})", v.path, v.message)
            })
            .collect();
        let note = format!("policy warnings: {}", warnings.join("; "));
        context
            .event(
                transform,
                EventType::Warning,
                event_reasons::POLICY_WARNINGS,
                note,
            )
            .await;
    }
    status.violations = graph.spec.violations.clone();
    for step in STEPS {
        let message = match step {
            types::MODULE_RESOLVED => module.summary(transform.spec.module_ref.type_),
            types::VALIDATED if graph.spec.violations.is_empty() => {
                "input, graph and policies are valid".to_string()
            }
            types::VALIDATED => format!("{} policy warnings", graph.spec.violations.len()),
            _ => format!("{} nodes, {rendered_hash}", graph.spec.nodes.len()),
        };
        condition::set(
            &mut status.conditions,
            conditions.condition(step, Status::True, reasons::SUCCEEDED, &message),
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
    graph.metadata = plan::graph_metadata(transform);
    let mut object = serde_json::to_value(&graph)?;
    object["apiVersion"] = json!(API_VERSION);
    object["kind"] = json!("ResourceGraph");
    graphs
        .patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&object),
        )
        .await
        .map_err(|e| Error::GraphRejected(ApiError::from_kube(e)))?;
    Ok(())
}

/// An inline module's `ref` is its whole source: the status keeps a digest-sized stand-in.
fn short_ref(reference: &str, type_: ModuleType) -> String {
    if type_ == ModuleType::Inline {
        "(inline)".to_string()
    } else {
        reference.to_string()
    }
}

async fn pull_secret(transform: &Transform, context: &Context) -> Result<Credentials, Failure> {
    let Some(reference) = &transform.spec.module_ref.pull_secret_ref else {
        return Ok(Credentials::None);
    };
    let namespace = transform.namespace().unwrap_or_default();
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(context.client.clone(), &namespace);
    let type_ = transform.spec.module_ref.type_;
    credentials(&secrets, (&reference.name, "pullSecretRef"), type_)
        .await
        .map_err(|message| Failure {
            condition: types::MODULE_RESOLVED,
            reason: reasons::PULL_SECRET_UNAVAILABLE,
            message,
            violations: Vec::new(),
            before_render: false,
            transient: true,
        })
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
    let resolved = from_config_map(&found.data.unwrap_or_default(), &transform.spec.module_ref)?;
    if let Some(version) = &found.metadata.resource_version {
        context
            .config_maps
            .read(&namespace, name, version, &resolved.digest);
    }
    Ok(resolved)
}

/// The module in the Transform's ConfigMap without asking the API server, when the
/// ConfigMap watch shows it at the version last read and the module cache still holds
/// that content.
async fn unchanged_config_map_module(
    transform: &Transform,
    context: &Context,
) -> Option<Result<Resolved, SourceError>> {
    let namespace = transform.namespace().unwrap_or_default();
    let digest = context
        .config_maps
        .unchanged(&namespace, &transform.spec.module_ref.ref_)?;
    kept_config_map_module(transform, context, &digest).await
}

/// The content of the Transform's ConfigMap at `digest`, as the module cache kept it (`None`
/// once evicted), built again for this Transform: its entrypoint, its digest pin (two
/// Transforms of one ConfigMap may name different entrypoints).
async fn kept_config_map_module(
    transform: &Transform,
    context: &Context,
    digest: &str,
) -> Option<Result<Resolved, SourceError>> {
    let kept = context
        .modules
        .kept(&config_map_key(transform, digest))
        .await?;
    Some(from_config_map(kept.files(), &transform.spec.module_ref))
}

/// Resolves the Transform's module with its credentials, counting the fetch; a remote
/// module resolved less than `--module-resync` ago with the same reference and
/// credentials is reused without asking its source.
async fn resolve_module(transform: &Transform, context: &Context) -> Result<Resolved, Failure> {
    let module_ref = &transform.spec.module_ref;
    let sources = &context.config.module_sources;
    if let Some(origin) = sources.refused(module_ref) {
        return Err(SourceError::NotAllowed {
            origin,
            allowed: sources.patterns().join(","),
        }
        .into());
    }
    let namespace = transform.namespace().unwrap_or_default();
    let remote = matches!(module_ref.type_, ModuleType::Oci | ModuleType::Git);
    let type_label = module_ref.type_.to_string();
    let recent = if remote {
        context
            .resolutions
            .get(module_ref, &namespace)
            .await
            .map(Ok)
    } else if module_ref.type_ == ModuleType::Configmap {
        unchanged_config_map_module(transform, context).await
    } else {
        None
    };
    if let Some(resolved) = recent {
        // Content had without asking its source may still not fit this Transform (its
        // digest pin, its entrypoint).
        let result = if resolved.is_ok() { "recent" } else { "error" };
        context
            .metrics
            .module_fetch_total
            .with_label_values(&[type_label.as_str(), result])
            .inc();
        return Ok(resolved?);
    }
    let started = Instant::now();
    let credentials = pull_secret(transform, context).await?;
    let resolved = if module_ref.type_ == ModuleType::Configmap {
        let resolved = config_map_module(transform, context).await;
        if let Ok(module) = &resolved {
            let key = config_map_key(transform, &module.digest);
            context.modules.keep(&key, &module.bundle).await;
        }
        resolved
    } else {
        resolve_with(context, module_ref, credentials).await
    };
    if remote && let Ok(resolved) = &resolved {
        context
            .resolutions
            .insert(module_ref, &namespace, resolved)
            .await;
    }
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
    Ok(resolved?)
}

/// What a Transform's plan is made from: its spec (input, policies, adoptions), the
/// module's content, where it renders and the cluster's policy modules (a plan is a
/// function of these).
fn planned_from(transform: &Transform, module: &Resolved, context: &Context) -> String {
    crate::digest::framed([
        &context.policies.digest(),
        module.bundle.digest(),
        module.bundle.entrypoint(),
        &serde_json::to_string(&transform.spec).unwrap_or_default(),
        &transform.namespace().unwrap_or_default(),
        &transform.name_any(),
        transform.uid().as_deref().unwrap_or_default(),
    ])
}

/// Whether two graphs' metadata name the same render of the same module.
fn same_render(a: &GraphMetadata, b: &GraphMetadata) -> bool {
    a.render_hash == b.render_hash
        && a.module_digest == b.module_digest
        && a.module == b.module
        && a.version == b.version
}

/// Whether a Transform's graph needs planning.
enum Unchanged {
    /// Planned from the same spec and module, and the watch shows it as written: planning
    /// again would give the same graph.
    Graph(Box<ResourceGraph>),
    /// Planned from the same spec and module and written a moment ago; the watch has not
    /// brought it yet.
    InFlight,
    /// Something changed, or this controller does not know what the graph came from.
    No,
}

/// How long a graph just written is waited for before it is planned and written again (the
/// watch brings it within moments; a graph deleted meanwhile is written again after this).
const IN_FLIGHT: Duration = Duration::from_secs(5);

/// How soon a Transform whose graph is in flight is looked at again.
const IN_FLIGHT_RETRY: Duration = Duration::from_millis(500);

/// Whether `transform`'s graph needs planning: reconciles that change nothing (a status
/// write, a relist, the graph's readiness) neither render nor validate.
async fn unchanged_graph(
    transform: &Transform,
    planned_from: &str,
    context: &Context,
) -> Unchanged {
    let namespace = transform.namespace().unwrap_or_default();
    let name = transform.name_any();
    let Some(written) = context
        .written_graphs
        .get(&render_key(transform))
        .await
        .filter(|written| written.planned_from == planned_from)
    else {
        return Unchanged::No;
    };
    match cached_spec(context, &namespace, &name) {
        // (The stored render time has whole seconds: the rest is compared.)
        Some(existing) if same_render(&existing.metadata, &written.metadata) => {
            Unchanged::Graph(Box::new(ResourceGraph::new(&name, existing)))
        }
        None if written.written_at.elapsed() < IN_FLIGHT => Unchanged::InFlight,
        _ => Unchanged::No,
    }
}

/// Plans the graph of the Transform from its resolved module.
async fn plan_graph(
    transform: &Transform,
    module: &Resolved,
    context: &Context,
) -> Result<Plan, Failure> {
    let policy_modules = context.policies.current().map_err(Failure::from)?;
    Ok(plan::plan(
        transform,
        module,
        &context.renderer,
        &policy_modules,
        &context.config.limits,
    )
    .await?)
}

/// The ResourceGraph `namespace/name` as the graph controller's watch last saw it.
fn cached_graph(context: &Context, namespace: &str, name: &str) -> Option<Arc<CachedGraph>> {
    context.graphs.get(&ObjectRef::new(name).within(namespace))
}

/// The spec of the cached ResourceGraph `namespace/name`; None also when it cannot be read
/// (the graph is written anew).
fn cached_spec(context: &Context, namespace: &str, name: &str) -> Option<ResourceGraphSpec> {
    match cached_graph(context, namespace, name)?.spec() {
        Ok(spec) => Some(spec),
        Err(error) => {
            tracing::warn!(namespace, name, %error, "the cached ResourceGraph's spec cannot be read");
            None
        }
    }
}

/// `Ready` mirrors the ResourceGraph's, once the graph controller has seen its generation
/// (and, after this reconcile wrote a render, `written`, once the cache shows that render).
fn mirror_ready(
    status: &mut TransformStatus,
    context: &Context,
    (namespace, name, written): (&str, &str, Option<&GraphMetadata>),
    conditions: &ConditionWriter<'_>,
) {
    let graph = cached_graph(context, namespace, name);
    let ready = graph.as_ref().and_then(|g| {
        let status = g.status()?;
        if status.observed_generation != g.metadata.generation {
            return None;
        }
        // A graph written a moment ago that the cache does not show yet: its readiness is
        // not known (the copy's is the render before's).
        if let Some(written) = written
            && g.spec()
                .ok()
                .is_none_or(|spec| !same_render(&spec.metadata, written))
        {
            return None;
        }
        condition::find(&status.conditions, types::READY).cloned()
    });
    let mirrored = match (graph, ready) {
        (None, _) => conditions.condition(
            types::READY,
            Status::False,
            reasons::NO_RESOURCE_GRAPH,
            "no ResourceGraph has been written yet",
        ),
        (Some(_), None) => conditions.condition(
            types::READY,
            Status::False,
            reasons::PROGRESSING,
            "waiting for the ResourceGraph to be executed",
        ),
        (Some(_), Some(ready)) => conditions.condition(
            types::READY,
            Status::from_bool(ready.status == "True"),
            &ready.reason,
            &ready.message,
        ),
    };
    condition::set(&mut status.conditions, mirrored);
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
            "apiVersion": API_VERSION,
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
