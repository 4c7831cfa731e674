//! Integrity checks and the dependency DAG of a graph (petgraph), with the orderings the
//! executor needs: a topological order and the nodes runnable once a set of nodes is ready.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;

use petgraph::algo::{tarjan_scc, toposort};
use petgraph::graph::{DiGraph, NodeIndex};

use super::json_type_name;
use crate::api::{Node, ObjectKey};

/// One reason a graph cannot be executed. Every variant names the node ids involved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntegrityError {
    /// Two nodes share an id.
    #[error("duplicate node id `{id}`")]
    DuplicateId {
        /// The repeated id.
        id: String,
    },
    /// A `dependsOn` entry names no node of the graph.
    #[error("node `{node}` depends on unknown node `{target}`")]
    UnknownDependency {
        /// The node declaring the dependency.
        node: String,
        /// The missing target.
        target: String,
    },
    /// The dependencies form a cycle.
    #[error("dependency cycle: {} (each node depends on the next)", .path.join(" -> "))]
    Cycle {
        /// The cycle, each node depending on the next, the first repeated at the end.
        path: Vec<String>,
    },
    /// A required field of the object is missing or empty.
    #[error("node `{node}`: object has no {field}")]
    MissingField {
        /// The node.
        node: String,
        /// `apiVersion`, `kind` or `metadata.name`.
        field: &'static str,
    },
    /// The node's object is not a JSON object.
    #[error("node `{node}`: object must be a mapping, found {found}")]
    NotAnObject {
        /// The node.
        node: String,
        /// What was found instead.
        found: &'static str,
    },
    /// A metadata field has the wrong shape.
    #[error("node `{node}`: {field} must be {expected}")]
    InvalidMetadata {
        /// The node.
        node: String,
        /// `metadata`, `metadata.labels` or `metadata.annotations`.
        field: &'static str,
        /// What it must be.
        expected: &'static str,
    },
    /// Two nodes target the same Kubernetes object.
    #[error("nodes `{first}` and `{second}` both target {object}")]
    DuplicateObject {
        /// The first node.
        first: String,
        /// The second node.
        second: String,
        /// The contested object.
        object: String,
    },
}

/// All the integrity errors of a graph, in a stable order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntegrityErrors(pub Vec<IntegrityError>);

impl fmt::Display for IntegrityErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let messages: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&messages.join("; "))
    }
}

impl std::error::Error for IntegrityErrors {}

/// A checked dependency graph over node ids. Edges run from a dependency to its dependent.
#[derive(Debug, Clone)]
pub struct Dag {
    graph: DiGraph<String, ()>,
    index: HashMap<String, NodeIndex>,
    order: Vec<String>,
}

impl Dag {
    /// Checks the integrity of `nodes` and builds their DAG. All problems are reported at once.
    pub fn build(nodes: &[Node]) -> Result<Dag, IntegrityErrors> {
        let mut errors = Vec::new();
        let mut graph = DiGraph::new();
        let mut index = HashMap::new();
        for node in nodes {
            if index.contains_key(&node.id) {
                errors.push(IntegrityError::DuplicateId {
                    id: node.id.clone(),
                });
            } else {
                index.insert(node.id.clone(), graph.add_node(node.id.clone()));
            }
        }
        errors.extend(object_errors(nodes));
        let mut seen_edges = HashSet::new();
        for node in nodes {
            let to = index[&node.id];
            for target in &node.depends_on {
                match index.get(target) {
                    Some(&from) => {
                        if seen_edges.insert((from, to)) {
                            graph.add_edge(from, to, ());
                        }
                    }
                    None => errors.push(IntegrityError::UnknownDependency {
                        node: node.id.clone(),
                        target: target.clone(),
                    }),
                }
            }
        }
        let order = match toposort(&graph, None) {
            Ok(order) => order.into_iter().map(|i| graph[i].clone()).collect(),
            Err(_) => {
                errors.push(IntegrityError::Cycle {
                    path: find_cycle(&graph),
                });
                Vec::new()
            }
        };
        if errors.is_empty() {
            Ok(Dag {
                graph,
                index,
                order,
            })
        } else {
            Err(IntegrityErrors(errors))
        }
    }

    /// Node ids in an order where every node comes after its dependencies.
    pub fn topological_order(&self) -> &[String] {
        &self.order
    }

    /// Nodes not yet ready whose dependencies are all in `ready`, in topological order.
    pub fn runnable(&self, ready: &HashSet<String>) -> Vec<String> {
        self.order
            .iter()
            .filter(|id| !ready.contains(*id))
            .filter(|id| self.dependencies(id).all(|dep| ready.contains(dep)))
            .cloned()
            .collect()
    }

    /// The direct dependencies of `id`.
    pub fn dependencies<'a>(&'a self, id: &str) -> impl Iterator<Item = &'a String> + 'a {
        self.neighbors(id, petgraph::Direction::Incoming)
    }

    /// The direct dependents of `id`.
    pub fn dependents<'a>(&'a self, id: &str) -> impl Iterator<Item = &'a String> + 'a {
        self.neighbors(id, petgraph::Direction::Outgoing)
    }

    fn neighbors<'a>(
        &'a self,
        id: &str,
        direction: petgraph::Direction,
    ) -> impl Iterator<Item = &'a String> + 'a {
        self.index
            .get(id)
            .into_iter()
            .flat_map(move |&i| self.graph.neighbors_directed(i, direction))
            .map(|i| &self.graph[i])
    }
}

/// Checks each object's required fields and that no two nodes target the same object.
fn object_errors(nodes: &[Node]) -> Vec<IntegrityError> {
    let mut errors = Vec::new();
    let mut owners: HashMap<ObjectKey, &str> = HashMap::new();
    for node in nodes {
        if !node.object.is_object() {
            errors.push(IntegrityError::NotAnObject {
                node: node.id.clone(),
                found: json_type_name(&node.object),
            });
            continue;
        }
        let missing = [
            ("apiVersion", node.api_version().is_none()),
            ("kind", node.kind().is_none()),
            ("metadata.name", node.name().is_none()),
        ];
        for (field, absent) in missing {
            if absent {
                errors.push(IntegrityError::MissingField {
                    node: node.id.clone(),
                    field,
                });
            }
        }
        errors.extend(metadata_errors(node));
        if let Some(key) = node.object_key() {
            if let Some(first) = owners.get(&key) {
                errors.push(IntegrityError::DuplicateObject {
                    first: first.to_string(),
                    second: node.id.clone(),
                    object: key.to_string(),
                });
            } else {
                owners.insert(key, &node.id);
            }
        }
    }
    errors
}

/// `metadata` must be a mapping, and its labels and annotations mappings of strings.
fn metadata_errors(node: &Node) -> Vec<IntegrityError> {
    let invalid = |field, expected| IntegrityError::InvalidMetadata {
        node: node.id.clone(),
        field,
        expected,
    };
    let Some(metadata) = node.object.get("metadata") else {
        return Vec::new();
    };
    let Some(metadata) = metadata.as_object() else {
        return vec![invalid("metadata", "a mapping")];
    };
    let mut errors = Vec::new();
    for field in ["labels", "annotations"] {
        let string_map = metadata.get(field).is_none_or(|value| {
            value
                .as_object()
                .is_some_and(|map| map.values().all(serde_json::Value::is_string))
        });
        if !string_map {
            let name = if field == "labels" {
                "metadata.labels"
            } else {
                "metadata.annotations"
            };
            errors.push(invalid(name, "a mapping of strings to strings"));
        }
    }
    errors
}

/// Finds one concrete cycle, returned as ids with the first repeated at the end. The cycle
/// starts at its smallest id so the message is stable.
fn find_cycle(graph: &DiGraph<String, ()>) -> Vec<String> {
    for scc in tarjan_scc(graph) {
        let members: BTreeSet<NodeIndex> = scc.iter().copied().collect();
        let self_loop = scc.len() == 1 && graph.contains_edge(scc[0], scc[0]);
        if scc.len() < 2 && !self_loop {
            continue;
        }
        let Some(&start) = scc.iter().min_by_key(|i| &graph[**i]) else {
            continue;
        };
        if let Some(path) = path_back_to(graph, start, &members) {
            return path.into_iter().map(|i| graph[i].clone()).collect();
        }
    }
    Vec::new()
}

/// Depth-first search inside one strongly connected component from `start` back to itself
/// along "depends on" edges, visiting dependencies in id order.
fn path_back_to(
    graph: &DiGraph<String, ()>,
    start: NodeIndex,
    members: &BTreeSet<NodeIndex>,
) -> Option<Vec<NodeIndex>> {
    let sorted_neighbors = |node: NodeIndex| {
        let mut next: Vec<NodeIndex> = graph
            .neighbors_directed(node, petgraph::Direction::Incoming)
            .filter(|n| members.contains(n))
            .collect();
        next.sort_by(|a, b| graph[*a].cmp(&graph[*b]));
        next
    };
    let mut path = vec![start];
    let mut visited = HashSet::from([start]);
    let mut stack = vec![sorted_neighbors(start).into_iter()];
    while let Some(frontier) = stack.last_mut() {
        match frontier.next() {
            Some(next) if next == start => {
                path.push(start);
                return Some(path);
            }
            Some(next) if visited.insert(next) => {
                path.push(next);
                stack.push(sorted_neighbors(next).into_iter());
            }
            Some(_) => {}
            None => {
                stack.pop();
                path.pop();
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(id: &str, deps: &[&str]) -> Node {
        serde_json::from_value(json!({
            "id": id,
            "object": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": id}},
            "dependsOn": deps,
        }))
        .expect("valid node")
    }

    fn errors(nodes: &[Node]) -> Vec<String> {
        match Dag::build(nodes) {
            Ok(_) => Vec::new(),
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn diamond_orders_and_runs_in_waves() {
        let nodes = [
            node("d", &["b", "c"]),
            node("b", &["a"]),
            node("c", &["a"]),
            node("a", &[]),
        ];
        let dag = Dag::build(&nodes).expect("valid graph");
        let order = dag.topological_order();
        let pos = |id: &str| order.iter().position(|x| x == id).expect("present");
        assert!(pos("a") < pos("b") && pos("a") < pos("c"));
        assert!(pos("b") < pos("d") && pos("c") < pos("d"));

        let mut ready = HashSet::new();
        assert_eq!(dag.runnable(&ready), vec!["a"]);
        ready.insert("a".to_string());
        let mut wave = dag.runnable(&ready);
        wave.sort();
        assert_eq!(wave, vec!["b", "c"]);
        ready.insert("b".to_string());
        assert_eq!(dag.runnable(&ready), vec!["c"]);
        ready.insert("c".to_string());
        assert_eq!(dag.runnable(&ready), vec!["d"]);
        let mut deps: Vec<_> = dag.dependencies("d").cloned().collect();
        deps.sort();
        assert_eq!(deps, vec!["b", "c"]);
        assert_eq!(dag.dependents("b").cloned().collect::<Vec<_>>(), vec!["d"]);
    }

    #[test]
    fn cycle_is_named_from_its_smallest_id() {
        let nodes = [
            node("web", &["db"]),
            node("db", &["cache"]),
            node("cache", &["web"]),
            node("free", &[]),
        ];
        assert_eq!(
            errors(&nodes),
            vec!["dependency cycle: cache -> web -> db -> cache (each node depends on the next)"]
        );
    }

    #[test]
    fn self_dependency_is_a_cycle() {
        assert_eq!(
            errors(&[node("a", &["a"])]),
            vec!["dependency cycle: a -> a (each node depends on the next)"]
        );
    }

    #[test]
    fn duplicate_ids_and_unknown_dependencies_are_named() {
        let mut twin = node("a", &[]);
        twin.object["metadata"]["name"] = json!("other");
        let nodes = [node("a", &[]), twin, node("b", &["missing"])];
        assert_eq!(
            errors(&nodes),
            vec![
                "duplicate node id `a`",
                "node `b` depends on unknown node `missing`"
            ]
        );
    }

    #[test]
    fn missing_object_fields_are_named_per_node() {
        let mut bad = node("cfg", &[]);
        bad.object = json!({"kind": "ConfigMap", "metadata": {}});
        let mut scalar = node("s", &[]);
        scalar.object = json!("text");
        let mut labelled = node("l", &[]);
        labelled.object["metadata"]["labels"] = json!({"tier": 3});
        assert_eq!(
            errors(&[bad, scalar, labelled]),
            vec![
                "node `cfg`: object has no apiVersion",
                "node `cfg`: object has no metadata.name",
                "node `s`: object must be a mapping, found a string",
                "node `l`: metadata.labels must be a mapping of strings to strings",
            ]
        );
    }

    #[test]
    fn two_nodes_for_one_object_are_refused() {
        let mut first = node("one", &[]);
        first.object["metadata"]["name"] = json!("shared");
        let mut second = node("two", &[]);
        second.object["metadata"]["name"] = json!("shared");
        assert_eq!(
            errors(&[first, second]),
            vec!["nodes `one` and `two` both target ConfigMap shared"]
        );
    }
}
