//! Printing a rendered graph: as a ResourceGraph (YAML/JSON), as plain manifests, or as a
//! Graphviz / Mermaid diagram of its dependencies.

use std::fmt::Write as _;

use super::yaml;
use crate::api::{ResourceGraph, Transform};
use crate::graph::{ApplyMode, Violation};
use crate::render::RenderedGraph;

/// Output formats of `pequod render`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// The ResourceGraph as YAML.
    Yaml,
    /// The ResourceGraph as JSON.
    Json,
    /// The objects to apply, as multi-document YAML.
    Manifests,
    /// The dependency graph in Graphviz dot.
    Dot,
    /// The dependency graph as a Mermaid flowchart.
    Mermaid,
}

/// Why a graph could not be printed.
#[derive(Debug, thiserror::Error)]
pub enum PrintError {
    /// YAML serialization failed.
    #[error(transparent)]
    Yaml(#[from] serde_yaml::Error),
    /// JSON serialization failed.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

/// Prints `graph`, rendered from `transform` with the module resolved to `module_digest` and
/// with policy `warnings`, in `format`.
pub fn print_graph(
    transform: &Transform,
    module_digest: &str,
    graph: &RenderedGraph,
    warnings: &[Violation],
    format: OutputFormat,
) -> Result<String, PrintError> {
    let resource_graph = || ResourceGraph::rendered(transform, module_digest, graph, warnings);
    Ok(match format {
        OutputFormat::Yaml => yaml::to_string(&resource_graph())?,
        OutputFormat::Json => {
            let mut text = serde_json::to_string_pretty(&resource_graph())?;
            text.push('\n');
            text
        }
        OutputFormat::Manifests => manifests(graph)?,
        OutputFormat::Dot => dot(transform, graph),
        OutputFormat::Mermaid => mermaid(graph),
    })
}

/// The objects Pequod would write (observed nodes excluded), one YAML document each.
fn manifests(graph: &RenderedGraph) -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for node in &graph.nodes {
        if node.apply_policy.mode == ApplyMode::Observe {
            continue;
        }
        out.push_str("---\n");
        let _ = writeln!(out, "# node: {}", node.id);
        out.push_str(&yaml::to_string(&node.object)?);
    }
    Ok(out)
}

fn dot(transform: &Transform, graph: &RenderedGraph) -> String {
    let escape = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let quote = |s: &str| format!("\"{}\"", escape(s));
    let name = transform.metadata.name.as_deref().unwrap_or("graph");
    let mut out = format!(
        "digraph {} {{\n  rankdir=LR;\n  node [shape=box];\n",
        quote(name)
    );
    for node in &graph.nodes {
        let style = if node.apply_policy.mode == ApplyMode::Observe {
            ", style=dashed"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  {} [label=\"{}\\n{}\"{style}];",
            quote(&node.id),
            escape(&node.id),
            escape(&node.describe())
        );
    }
    for node in &graph.nodes {
        for dep in &node.depends_on {
            let _ = writeln!(out, "  {} -> {};", quote(dep), quote(&node.id));
        }
    }
    out.push_str("}\n");
    out
}

fn mermaid(graph: &RenderedGraph) -> String {
    let index = |id: &str| graph.nodes.iter().position(|n| n.id == id).unwrap_or(0);
    let mut out = String::from("flowchart LR\n");
    for (i, node) in graph.nodes.iter().enumerate() {
        let label = format!("{}<br/>{}", node.id, node.describe()).replace('"', "#quot;");
        let _ = writeln!(out, "  n{i}[\"{label}\"]");
    }
    for (i, node) in graph.nodes.iter().enumerate() {
        for dep in &node.depends_on {
            let _ = writeln!(out, "  n{} --> n{i}", index(dep));
        }
    }
    out
}
