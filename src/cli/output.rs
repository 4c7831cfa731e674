//! Printing a rendered graph: as a ResourceGraph (YAML/JSON), as plain manifests, or as a
//! Graphviz / Mermaid diagram of its dependencies.

use std::fmt::Write as _;

use super::yaml;
use crate::api::{ApplyMode, Node, ResourceGraph};

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

/// Prints a planned `graph` in `format`.
pub fn print_graph(graph: &ResourceGraph, format: OutputFormat) -> Result<String, PrintError> {
    let nodes = &graph.spec.nodes;
    Ok(match format {
        OutputFormat::Yaml => yaml::to_string(graph)?,
        OutputFormat::Json => {
            let mut text = serde_json::to_string_pretty(graph)?;
            text.push('\n');
            text
        }
        OutputFormat::Manifests => manifests(nodes)?,
        OutputFormat::Dot => dot(graph.metadata.name.as_deref().unwrap_or("graph"), nodes),
        OutputFormat::Mermaid => mermaid(nodes),
    })
}

/// The objects Pequod would write (observed nodes excluded), one YAML document each.
fn manifests(nodes: &[Node]) -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for node in nodes {
        if node.apply_policy.mode == ApplyMode::Observe {
            continue;
        }
        out.push_str("---\n");
        let _ = writeln!(out, "# node: {}", node.id);
        out.push_str(&yaml::to_string(&node.object)?);
    }
    Ok(out)
}

fn dot(name: &str, nodes: &[Node]) -> String {
    let escape = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let quote = |s: &str| format!("\"{}\"", escape(s));
    let mut out = format!(
        "digraph {} {{\n  rankdir=LR;\n  node [shape=box];\n",
        quote(name)
    );
    for node in nodes {
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
    for node in nodes {
        for dep in &node.depends_on {
            let _ = writeln!(out, "  {} -> {};", quote(dep), quote(&node.id));
        }
    }
    out.push_str("}\n");
    out
}

fn mermaid(nodes: &[Node]) -> String {
    let index = |id: &str| nodes.iter().position(|n| n.id == id).unwrap_or(0);
    let mut out = String::from("flowchart LR\n");
    for (i, node) in nodes.iter().enumerate() {
        let label = format!("{}<br/>{}", node.id, node.describe()).replace('"', "#quot;");
        let _ = writeln!(out, "  n{i}[\"{label}\"]");
    }
    for (i, node) in nodes.iter().enumerate() {
        for dep in &node.depends_on {
            let _ = writeln!(out, "  n{} --> n{i}", index(dep));
        }
    }
    out
}
