//! Ownership between graphs: a live object carries the identity of the graph that owns it
//! (Pequod's labels: the graph's name and namespace). A graph never writes, adopts or
//! deletes an object another graph owns, and takes an object no graph owns only when
//! `Transform.spec.adopt` names it.

use serde_json::Value;

use crate::api::labels;

/// A graph, by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GraphId {
    /// The graph's namespace.
    pub namespace: String,
    /// The graph's name.
    pub name: String,
}

impl std::fmt::Display for GraphId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ResourceGraph {}/{}", self.namespace, self.name)
    }
}

/// Who owns a live object, as seen by one graph.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Owner {
    /// The graph itself.
    ThisGraph,
    /// Another graph.
    Another(GraphId),
    /// No graph: the object carries none of Pequod's ownership labels.
    Nobody,
}

/// Who owns `live`, as seen by `graph`. An object labelled before the namespace label
/// existed belongs to a graph of its own namespace (a cluster-scoped one, to a graph of
/// that name in any namespace).
pub fn owner(live: &Value, graph: &GraphId) -> Owner {
    let label = |key: &str| {
        live.pointer("/metadata/labels")
            .and_then(|labels| labels.get(key))
            .and_then(Value::as_str)
            .filter(|value| !value.is_empty())
    };
    let Some(name) = label(labels::RESOURCE_GRAPH) else {
        return Owner::Nobody;
    };
    let namespace = label(labels::RESOURCE_GRAPH_NAMESPACE)
        .or_else(|| live.pointer("/metadata/namespace").and_then(Value::as_str))
        .unwrap_or(&graph.namespace);
    if name == graph.name && namespace == graph.namespace {
        Owner::ThisGraph
    } else {
        Owner::Another(GraphId {
            namespace: namespace.to_string(),
            name: name.to_string(),
        })
    }
}

/// The labels that say which graph owns an object, for a graph to release what it leaves
/// behind (an orphan must be adoptable by another graph).
pub const OWNERSHIP_LABELS: [&str; 4] = [
    labels::TRANSFORM,
    labels::RESOURCE_GRAPH,
    labels::RESOURCE_GRAPH_NAMESPACE,
    labels::NODE_ID,
];

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn graph() -> GraphId {
        GraphId {
            namespace: "team-a".into(),
            name: "web".into(),
        }
    }

    #[test]
    fn the_labels_name_the_owner() {
        let labelled =
            |labels: Value| json!({"metadata": {"namespace": "team-a", "labels": labels}});
        let ours = labelled(json!({"platform.pequod.io/resource-graph": "web",
                                   "platform.pequod.io/resource-graph-namespace": "team-a"}));
        assert_eq!(owner(&ours, &graph()), Owner::ThisGraph);
        let theirs = labelled(json!({"platform.pequod.io/resource-graph": "db"}));
        assert_eq!(
            owner(&theirs, &graph()),
            Owner::Another(GraphId {
                namespace: "team-a".into(),
                name: "db".into()
            })
        );
        let same_name_elsewhere = labelled(json!({"platform.pequod.io/resource-graph": "web",
                                                  "platform.pequod.io/resource-graph-namespace": "team-b"}));
        assert_eq!(
            owner(&same_name_elsewhere, &graph()).to_owned(),
            Owner::Another(GraphId {
                namespace: "team-b".into(),
                name: "web".into()
            })
        );
        assert_eq!(
            owner(&labelled(json!({"app": "web"})), &graph()),
            Owner::Nobody
        );
        assert_eq!(owner(&json!({"metadata": {}}), &graph()), Owner::Nobody);
    }
}
