//! `pequod module impact REF`: what a module version would do to the Transforms in the
//! cluster that use the same module, found by rendering each one's input with it on the
//! worker pool and comparing with its current ResourceGraph. Nothing is written.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::IsTerminal;

use clap::Args;
use futures::StreamExt;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use serde_json::{Value, json};

use super::diff::{DiffFormat, colour_wanted, coloured, unified};
use super::{CliError, exit, write_stdout};
use crate::api::{ModuleRef, ModuleType, Node, ObjectRef, ResourceGraph, Transform};
use crate::module::{CommandLineRef, Resolved};
use crate::plan::{Limits, plan};
use crate::render::{PolicyModule, Renderer};

/// Flags of `pequod module impact`.
#[derive(Debug, Args)]
pub struct ImpactArgs {
    /// The module version: a directory (a path that exists), `git+URL` (a clone URL with
    /// optional `?ref=&path=`, as a Transform's moduleRef), or an OCI artifact
    /// (`registry/repository:tag` or `@sha256:…`).
    pub reference: String,
    /// Only the Transforms of this namespace (default: every namespace).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Show each modified node's diff.
    #[arg(long)]
    pub details: bool,
    /// Output: text or json.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = DiffFormat::Text)]
    pub output: DiffFormat,
    /// Entrypoint file of the module.
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Registries, cache, evaluation limits (`--eval-workers` renders that many Transforms
    /// at once) and policy modules (a Transform whose graph would break one fails).
    #[command(flatten)]
    pub offline: super::render::OfflineArgs,
}

/// What the module version would do to one Transform.
#[derive(Debug)]
enum Outcome {
    /// Its graph would be the same.
    Unchanged,
    /// Its graph would change: node ids added, removed, modified (with their objects'
    /// current and new forms).
    Changed {
        added: Vec<String>,
        removed: Vec<String>,
        modified: Vec<(String, ObjectRef, Value, Value)>,
    },
    /// It would not render: the located error.
    Fails(String),
}

/// Runs `pequod module impact`: exit 0 when no Transform fails with the module version,
/// 1 when some would.
pub async fn run(args: ImpactArgs) -> Result<(), CliError> {
    let resolved = resolve_reference(&args).await?;
    let renderer = args.offline.eval.renderer()?;
    let module = renderer
        .describe(&resolved.bundle)
        .await
        .map_err(|e| CliError::evaluation("cannot read the module's metadata", e))?
        .metadata;
    let client = kube::Client::try_default().await.map_err(|e| {
        CliError::new(
            exit::INTERNAL,
            format!("cannot connect to the Kubernetes API: {e}"),
        )
    })?;
    let failed = |e: kube::Error| CliError::new(exit::INTERNAL, format!("API request failed: {e}"));
    let (transforms, graphs): (Api<Transform>, Api<ResourceGraph>) = match &args.namespace {
        Some(namespace) => (
            Api::namespaced(client.clone(), namespace),
            Api::namespaced(client.clone(), namespace),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    let mut graphs: HashMap<(String, String), ResourceGraph> = graphs
        .list(&ListParams::default())
        .await
        .map_err(failed)?
        .items
        .into_iter()
        .filter(|graph| graph.spec.metadata.module == module.name)
        .map(|graph| {
            (
                (graph.namespace().unwrap_or_default(), graph.name_any()),
                graph,
            )
        })
        .collect();
    // The Transforms whose current graph the same module rendered, each with its graph.
    let mut using: Vec<(Transform, ResourceGraph)> = transforms
        .list(&ListParams::default())
        .await
        .map_err(failed)?
        .items
        .into_iter()
        .filter_map(|transform| {
            let graph_name = transform
                .status
                .as_ref()
                .and_then(|s| s.resource_graph_ref.as_ref())
                .map_or_else(|| transform.name_any(), |r| r.name.clone());
            let graph = graphs.remove(&(transform.namespace().unwrap_or_default(), graph_name))?;
            Some((transform, graph))
        })
        .collect();
    using.sort_by_key(|(transform, _)| (transform.namespace(), transform.name_any()));

    let policy_modules = args.offline.policy_modules(&renderer).await?;
    let checks = (&policy_modules[..], &args.offline.eval.limits());
    let concurrency = usize::try_from(args.offline.eval.eval_workers)
        .unwrap_or(1)
        .max(1)
        * 2;
    let outcomes: Vec<Outcome> = futures::stream::iter(&using)
        .map(|(transform, graph)| outcome(transform, graph, &resolved, &renderer, checks))
        .buffered(concurrency)
        .collect()
        .await;

    let named: Vec<(String, &Outcome)> = using
        .iter()
        .map(|(transform, _)| {
            format!(
                "{}/{}",
                transform.namespace().unwrap_or_default(),
                transform.name_any()
            )
        })
        .zip(&outcomes)
        .collect();
    let about = format!(
        "module {} {} ({})",
        module.name, module.version, resolved.digest
    );
    let text = match args.output {
        DiffFormat::Text => text(
            &about,
            &named,
            args.details,
            std::io::stdout().is_terminal() && colour_wanted(),
        ),
        DiffFormat::Json => json_report(
            &module.name,
            &module.version,
            &resolved.digest,
            &named,
            args.details,
        ),
    };
    write_stdout(&text)?;
    let failing = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Fails(_)))
        .count();
    if failing > 0 {
        return Err(CliError::new(
            exit::RENDER_FAILED,
            format!(
                "{failing} of {} Transforms would fail with {} {}",
                outcomes.len(),
                module.name,
                module.version
            ),
        ));
    }
    Ok(())
}

/// The module `args.reference` names: a directory, `git+URL` or an OCI artifact.
async fn resolve_reference(args: &ImpactArgs) -> Result<Resolved, CliError> {
    let unavailable = |message: String| CliError::new(exit::MODULE_UNAVAILABLE, message);
    let reference = CommandLineRef::parse(&args.reference, args.entrypoint.as_deref())
        .map_err(|e| unavailable(format!("module: {e}")))?;
    let (module_ref, module_dir) = match reference {
        CommandLineRef::Remote(module_ref) => (module_ref, None),
        CommandLineRef::Directory(dir) => {
            let module_ref = ModuleRef {
                type_: ModuleType::Inline,
                ref_: String::new(),
                path: None,
                entrypoint: args.entrypoint.clone(),
                pull_secret_ref: None,
                digest: None,
            };
            (module_ref, Some(dir))
        }
        CommandLineRef::Embedded(_) | CommandLineRef::ConfigMap(_) => {
            return Err(unavailable(format!(
                "module: {} is not a directory, a git+URL or an OCI reference",
                args.reference
            )));
        }
    };
    args.offline
        .resolve(&module_ref, module_dir.as_deref())
        .await
}

/// Plans `transform` with `module` and compares the nodes with those of its graph.
async fn outcome(
    transform: &Transform,
    graph: &ResourceGraph,
    module: &Resolved,
    renderer: &Renderer,
    (policy_modules, limits): (&[PolicyModule], &Limits),
) -> Outcome {
    let planned = match plan(transform, module, renderer, policy_modules, limits).await {
        Ok(planned) => planned,
        Err(error) => return Outcome::Fails(error.to_string()),
    };
    let current: BTreeMap<&str, &Node> = graph
        .spec
        .nodes
        .iter()
        .map(|node| (node.id.as_str(), node))
        .collect();
    let new: BTreeMap<&str, &Node> = planned
        .graph
        .spec
        .nodes
        .iter()
        .map(|node| (node.id.as_str(), node))
        .collect();
    let added: Vec<String> = planned
        .graph
        .spec
        .nodes
        .iter()
        .filter(|node| !current.contains_key(node.id.as_str()))
        .map(|node| node.id.clone())
        .collect();
    let removed: Vec<String> = graph
        .spec
        .nodes
        .iter()
        .filter(|node| !new.contains_key(node.id.as_str()))
        .map(|node| node.id.clone())
        .collect();
    let modified: Vec<(String, ObjectRef, Value, Value)> = planned
        .graph
        .spec
        .nodes
        .iter()
        .filter_map(|node| {
            let before = serde_json::to_value(current.get(node.id.as_str())?).ok()?;
            let after = serde_json::to_value(node).ok()?;
            (before != after).then(|| (node.id.clone(), node.object_ref(), before, after))
        })
        .collect();
    if added.is_empty() && removed.is_empty() && modified.is_empty() {
        Outcome::Unchanged
    } else {
        Outcome::Changed {
            added,
            removed,
            modified,
        }
    }
}

/// The headers of a node's diff: the current graph's node and the module version's.
const RENDER: (&str, &str) = ("current graph", "with the module version");

fn word(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Unchanged => "unchanged",
        Outcome::Changed { .. } => "changed",
        Outcome::Fails(_) => "fails",
    }
}

/// `a, b` or `none`.
fn listed(ids: &[String]) -> String {
    if ids.is_empty() {
        "none".into()
    } else {
        ids.join(", ")
    }
}

fn text(about: &str, named: &[(String, &Outcome)], details: bool, colour: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{about} against {} Transform{} using it",
        named.len(),
        if named.len() == 1 { "" } else { "s" }
    );
    for (name, outcome) in named {
        let _ = write!(out, "{:<10} {name}", word(outcome));
        match outcome {
            Outcome::Unchanged => {
                let _ = writeln!(out);
            }
            Outcome::Fails(message) => {
                let _ = writeln!(out, ": {message}");
            }
            Outcome::Changed {
                added,
                removed,
                modified,
            } => {
                let ids: Vec<String> = modified.iter().map(|(id, ..)| id.clone()).collect();
                let _ = writeln!(
                    out,
                    ": nodes added: {}; removed: {}; modified: {}",
                    listed(added),
                    listed(removed),
                    listed(&ids)
                );
                if details {
                    for (id, object, before, after) in modified {
                        let _ = writeln!(out, "  node {id}:");
                        out.push_str(&coloured(
                            &unified(object, Some(before), Some(after), RENDER),
                            colour,
                        ));
                    }
                }
            }
        }
    }
    let count = |w: &str| named.iter().filter(|(_, o)| word(o) == w).count();
    let _ = writeln!(
        out,
        "{} unchanged, {} changed, {} fails",
        count("unchanged"),
        count("changed"),
        count("fails")
    );
    out
}

fn json_report(
    module: &str,
    version: &str,
    digest: &str,
    named: &[(String, &Outcome)],
    details: bool,
) -> String {
    let transforms: Vec<Value> = named
        .iter()
        .map(|(name, outcome)| {
            let (namespace, name) = name.split_once('/').unwrap_or(("", name));
            let mut entry = json!({"namespace": namespace, "name": name, "result": word(outcome)});
            match outcome {
                Outcome::Unchanged => {}
                Outcome::Fails(message) => entry["message"] = message.clone().into(),
                Outcome::Changed {
                    added,
                    removed,
                    modified,
                } => {
                    entry["added"] = json!(added);
                    entry["removed"] = json!(removed);
                    entry["modified"] =
                        json!(modified.iter().map(|(id, ..)| id).collect::<Vec<_>>());
                    if details {
                        let diffs: serde_json::Map<String, Value> = modified
                            .iter()
                            .map(|(id, object, before, after)| {
                                (
                                    id.clone(),
                                    unified(object, Some(before), Some(after), RENDER).into(),
                                )
                            })
                            .collect();
                        entry["diffs"] = Value::Object(diffs);
                    }
                }
            }
            entry
        })
        .collect();
    let count = |w: &str| named.iter().filter(|(_, o)| word(o) == w).count();
    let report = json!({
        "module": {"name": module, "version": version, "digest": digest},
        "transforms": transforms,
        "summary": {"unchanged": count("unchanged"), "changed": count("changed"), "fails": count("fails")},
    });
    format!(
        "{}\n",
        serde_json::to_string_pretty(&report).unwrap_or_default()
    )
}
