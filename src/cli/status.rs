//! `pequod status NAME` and `pequod tree NAME`: a Transform and its ResourceGraph as read
//! from the cluster, for a terminal.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;

use clap::Args;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::Api;

use super::{CliError, exit, write_stdout};
use crate::api::condition::{self, types};
use crate::api::{NodeStatus, ResourceGraph, Transform};

/// Flags of `pequod status` and `pequod tree`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The Transform's name.
    pub name: String,
    /// Its namespace (default: the kubeconfig context's).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
}

/// Which view to print.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    /// The Transform's status, then the nodes as a table.
    Status,
    /// The nodes as a dependency tree.
    Tree,
}

/// Runs `pequod status` or `pequod tree`.
pub async fn run(args: StatusArgs, view: View) -> Result<(), CliError> {
    let client = kube::Client::try_default().await.map_err(|e| {
        CliError::new(
            exit::INTERNAL,
            format!("cannot connect to the Kubernetes API: {e}"),
        )
    })?;
    let namespace = args
        .namespace
        .unwrap_or_else(|| client.default_namespace().to_string());
    let failed = |e: kube::Error| CliError::new(exit::INTERNAL, format!("API request failed: {e}"));
    let transforms: Api<Transform> = Api::namespaced(client.clone(), &namespace);
    let transform = transforms
        .get_opt(&args.name)
        .await
        .map_err(failed)?
        .ok_or_else(|| {
            CliError::new(
                exit::NOT_FOUND,
                format!("Transform {namespace}/{} not found", args.name),
            )
        })?;
    let graph_name = transform
        .status
        .as_ref()
        .and_then(|s| s.resource_graph_ref.as_ref())
        .map_or(args.name.clone(), |r| r.name.clone());
    let graphs: Api<ResourceGraph> = Api::namespaced(client, &namespace);
    let graph = graphs.get_opt(&graph_name).await.map_err(failed)?;
    let now = jiff::Timestamp::now();
    let text = match view {
        View::Status => status_text(&transform, graph.as_ref(), now),
        View::Tree => {
            let mut text = headline(&transform, graph.as_ref());
            if let Some(graph) = &graph {
                text.push_str(&tree_text(graph, now));
            }
            text
        }
    };
    write_stdout(&text)
}

/// `5s`, `3m`, `2h`, `4d`, as kubectl shows ages.
pub fn age(since: Option<&Time>, now: jiff::Timestamp) -> String {
    let Some(since) = since else {
        return "-".to_string();
    };
    let seconds = now.duration_since(since.0).as_secs().max(0);
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn ready_condition(conditions: &[Condition]) -> String {
    condition::find(conditions, types::READY).map_or("Ready=Unknown".to_string(), |c| {
        format!("Ready={} {}", c.status, c.reason)
    })
}

fn headline(transform: &Transform, graph: Option<&ResourceGraph>) -> String {
    let name = transform.metadata.name.as_deref().unwrap_or("");
    let namespace = transform.metadata.namespace.as_deref().unwrap_or("");
    let conditions = transform
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let mut line = format!(
        "Transform {namespace}/{name}  {}",
        ready_condition(conditions)
    );
    if let Some(graph) = graph {
        let _ = write!(
            line,
            "  {}@{}",
            graph.spec.metadata.module, graph.spec.metadata.version
        );
        if let Some(summary) = graph.status.as_ref().and_then(|s| s.summary.as_ref()) {
            let _ = write!(line, "  {} ready", summary.ready_text);
        }
    }
    line.push('\n');
    if let Some(pending) = transform
        .status
        .as_ref()
        .and_then(|s| s.pending_module.as_ref())
    {
        let _ = writeln!(
            line,
            "Pending module: {} ({}): {}",
            pending.digest, pending.reason, pending.message
        );
    }
    line
}

/// The Transform's conditions, module, outputs and violations, then the graph's nodes.
pub fn status_text(
    transform: &Transform,
    graph: Option<&ResourceGraph>,
    now: jiff::Timestamp,
) -> String {
    let mut out = headline(transform, graph);
    let status = transform.status.clone().unwrap_or_default();
    if let Some(module) = &status.resolved_module {
        let _ = writeln!(
            out,
            "Module:  {} {} ({})",
            module.type_, module.ref_, module.digest
        );
    }
    if transform.spec.suspend {
        out.push_str("Suspended: reconciliation is stopped (spec.suspend)\n");
    }
    out.push_str("Conditions:\n");
    let rows: Vec<Vec<String>> = status
        .conditions
        .iter()
        .map(|c| {
            vec![
                c.type_.clone(),
                c.status.clone(),
                c.reason.clone(),
                age(Some(&c.last_transition_time), now),
                c.message.clone(),
            ]
        })
        .collect();
    out.push_str(&table(
        &["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"],
        &rows,
    ));
    if let Some(outputs) = status.outputs.as_ref().and_then(|o| o.as_object()) {
        out.push_str("Outputs:\n");
        for (key, value) in outputs {
            let shown = value
                .as_str()
                .map_or_else(|| value.to_string(), str::to_string);
            let _ = writeln!(out, "  {key}: {shown}");
        }
    }
    if !status.violations.is_empty() {
        out.push_str("Violations:\n");
        for violation in &status.violations {
            let _ = writeln!(
                out,
                "  {:?} {}: {}",
                violation.severity, violation.path, violation.message
            );
        }
    }
    match graph {
        None => out.push_str("No ResourceGraph yet.\n"),
        Some(graph) => {
            let nodes = graph
                .status
                .as_ref()
                .map(|s| s.nodes.clone())
                .unwrap_or_default();
            out.push_str("Nodes:\n");
            let rows: Vec<Vec<String>> = graph
                .spec
                .nodes
                .iter()
                .map(|node| {
                    let status = nodes.get(&node.id);
                    vec![
                        node.id.clone(),
                        node.describe(),
                        phase(status),
                        age(status.and_then(|s| s.last_transition_time.as_ref()), now),
                        node.depends_on.join(","),
                        status.and_then(|s| s.message.clone()).unwrap_or_default(),
                    ]
                })
                .collect();
            out.push_str(&table(
                &["ID", "OBJECT", "PHASE", "AGE", "DEPENDS ON", "MESSAGE"],
                &rows,
            ));
        }
    }
    out
}

fn phase(status: Option<&NodeStatus>) -> String {
    status.map_or("Unknown".to_string(), |s| format!("{:?}", s.phase))
}

/// Left-aligned columns, two spaces apart, indented by two.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut text = String::from(" ");
        for (i, cell) in cells.iter().enumerate() {
            text.push(' ');
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                let _ = write!(text, "{cell:<width$} ", width = widths[i]);
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// The graph as a tree: roots first, each node under the nodes it depends on; a node with
/// several dependencies is shown in full under the first and referred to under the others.
pub fn tree_text(graph: &ResourceGraph, now: jiff::Timestamp) -> String {
    let statuses: BTreeMap<String, NodeStatus> = graph
        .status
        .as_ref()
        .map(|s| s.nodes.clone())
        .unwrap_or_default();
    let nodes = &graph.spec.nodes;
    let children = |id: &str| -> Vec<usize> {
        (0..nodes.len())
            .filter(|&i| nodes[i].depends_on.iter().any(|d| d == id))
            .collect()
    };
    let roots: Vec<usize> = (0..nodes.len())
        .filter(|&i| nodes[i].depends_on.is_empty())
        .collect();
    let mut out = String::new();
    let mut shown: HashSet<usize> = HashSet::new();
    // (node, prefix of its line, prefix of its children, is it the full entry?)
    let mut stack: Vec<(usize, String, String)> = Vec::new();
    for (position, &root) in roots.iter().enumerate().rev() {
        let last = position + 1 == roots.len();
        let (branch, rest) = if last {
            ("└── ", "    ")
        } else {
            ("├── ", "│   ")
        };
        stack.push((root, branch.to_string(), rest.to_string()));
    }
    while let Some((index, prefix, child_prefix)) = stack.pop() {
        let node = &nodes[index];
        if !shown.insert(index) {
            let _ = writeln!(out, "{prefix}{} (see above)", node.id);
            continue;
        }
        let status = statuses.get(&node.id);
        let message = status.and_then(|s| s.message.as_deref()).unwrap_or("");
        let _ = writeln!(
            out,
            "{prefix}{}  {}  {}  {}{}",
            node.id,
            node.describe(),
            phase(status),
            age(status.and_then(|s| s.last_transition_time.as_ref()), now),
            if message.is_empty() {
                String::new()
            } else {
                format!("  {message}")
            }
        );
        let below = children(&node.id);
        for (position, &child) in below.iter().enumerate().rev() {
            let last = position + 1 == below.len();
            let (branch, rest) = if last {
                ("└── ", "    ")
            } else {
                ("├── ", "│   ")
            };
            stack.push((
                child,
                format!("{child_prefix}{branch}"),
                format!("{child_prefix}{rest}"),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn diamond() -> ResourceGraph {
        let node = |id: &str, deps: &[&str]| {
            json!({"id": id, "object": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": id}},
                   "dependsOn": deps})
        };
        serde_json::from_value(json!({
            "apiVersion": "platform.pequod.io/v1alpha1", "kind": "ResourceGraph",
            "metadata": {"name": "diamond", "namespace": "default"},
            "spec": {
                "sourceRef": {"apiVersion": "platform.pequod.io/v1alpha1", "kind": "Transform", "name": "diamond"},
                "metadata": {"module": "shapes", "version": "0.1.0", "moduleDigest": "sha256:1", "renderHash": "sha256:2"},
                "nodes": [node("a", &[]), node("b", &["a"]), node("c", &["a"]), node("d", &["b", "c"])]
            },
            "status": {"nodes": {
                "a": {"phase": "Ready", "message": "Ready", "attempts": 1, "lastTransitionTime": "2026-01-01T00:00:00Z"},
                "b": {"phase": "Ready", "message": "Ready", "attempts": 1, "lastTransitionTime": "2026-01-01T00:00:50Z"},
                "c": {"phase": "WaitingReady", "message": "no Ready condition yet", "attempts": 1, "lastTransitionTime": "2026-01-01T00:01:00Z"},
                "d": {"phase": "Pending", "message": "waiting for `c` to be Ready", "attempts": 0}
            }}
        }))
        .expect("a valid graph")
    }

    #[test]
    fn a_held_back_module_version_is_shown_under_the_headline() {
        let transform: Transform = serde_json::from_value(json!({
            "apiVersion": "platform.pequod.io/v1alpha1", "kind": "Transform",
            "metadata": {"name": "diamond", "namespace": "default"},
            "spec": {"moduleRef": {"type": "oci", "ref": "r/shapes:stable"}},
            "status": {
                "conditions": [{"type": "Ready", "status": "True", "reason": "AllNodesReady", "message": "",
                                "lastTransitionTime": "2026-01-01T00:00:00Z"}],
                "pendingModule": {"digest": "sha256:9", "reason": "RolloutHalted",
                                  "message": "the rollout of sha256:9 is halted: default/x failed on it: boom"}
            }
        }))
        .expect("a Transform");
        assert_eq!(
            headline(&transform, Some(&diamond())),
            "Transform default/diamond  Ready=True AllNodesReady  shapes@0.1.0\n\
             Pending module: sha256:9 (RolloutHalted): the rollout of sha256:9 is halted: default/x failed on it: boom\n"
        );
    }

    #[test]
    fn tree_shows_each_node_under_its_dependencies() {
        let now: jiff::Timestamp = "2026-01-01T00:03:00Z".parse().expect("timestamp");
        assert_eq!(
            tree_text(&diamond(), now),
            "\
└── a  ConfigMap a  Ready  3m  Ready
    ├── b  ConfigMap b  Ready  2m  Ready
    │   └── d  ConfigMap d  Pending  -  waiting for `c` to be Ready
    └── c  ConfigMap c  WaitingReady  2m  no Ready condition yet
        └── d (see above)
"
        );
    }

    #[test]
    fn ages_read_like_kubectl() {
        let now: jiff::Timestamp = "2026-01-03T00:00:00Z".parse().expect("timestamp");
        let at = |s: &str| Time(s.parse().expect("timestamp"));
        assert_eq!(age(Some(&at("2026-01-02T23:59:55Z")), now), "5s");
        assert_eq!(age(Some(&at("2026-01-02T23:50:00Z")), now), "10m");
        assert_eq!(age(Some(&at("2026-01-02T20:00:00Z")), now), "4h");
        assert_eq!(age(Some(&at("2026-01-01T00:00:00Z")), now), "2d");
        assert_eq!(age(None, now), "-");
    }
}
