//! Adoption (`Transform.spec.adopt`): existing objects brought into a graph.
//!
//! An adopted object the module also renders keeps its node, marked adopted: with
//! TakeOwnership the first apply takes the fields from their current managers (Force); with
//! Mirror the node only observes. An adopted object the module does not render gets a node
//! of its own: TakeOwnership labels it and puts it in the inventory (pruned and deleted with
//! the graph from then on); Mirror watches it and gates nothing but itself.

use serde_json::{Value, json};

use crate::api::{
    AdoptSpec, AdoptStrategy, AdoptedResource, ApplyMode, ApplyPolicy, ConflictPolicy,
    DeletionPolicy, Node,
};
use crate::render::{RenderContext, place_and_label};

/// The longest node id.
const MAX_ID: usize = 63;

/// Marks or adds the nodes of the adopted objects.
pub fn adopt(nodes: &mut Vec<Node>, adopt: Option<&AdoptSpec>, context: &RenderContext) {
    let Some(adopt) = adopt else {
        return;
    };
    for resource in &adopt.resources {
        let group = group_of(&resource.api_version);
        let rendered = nodes.iter_mut().find(|node| {
            node.name() == Some(resource.name.as_str())
                && node.kind() == Some(resource.kind.as_str())
                && node.api_version().map(group_of) == Some(group)
        });
        match rendered {
            Some(node) => mark(node, adopt.strategy),
            None => {
                let id = unique_id(nodes, resource);
                let mut node = Node {
                    id,
                    object: json!({
                        "apiVersion": resource.api_version,
                        "kind": resource.kind,
                        "metadata": {"name": resource.name},
                    }),
                    depends_on: Vec::new(),
                    ready_when: Vec::new(),
                    fail_when: Vec::new(),
                    timeout_seconds: None,
                    apply_policy: ApplyPolicy::default(),
                    deletion_policy: DeletionPolicy::Delete,
                    adopted: None,
                };
                mark(&mut node, adopt.strategy);
                place_and_label(&mut node, context);
                nodes.push(node);
            }
        }
    }
}

fn mark(node: &mut Node, strategy: AdoptStrategy) {
    node.adopted = Some(strategy);
    match strategy {
        AdoptStrategy::TakeOwnership => {
            node.apply_policy.conflict_policy = ConflictPolicy::Force;
        }
        AdoptStrategy::Mirror => {
            node.apply_policy.mode = ApplyMode::Observe;
            node.deletion_policy = DeletionPolicy::Orphan;
            if let Some(labels) = node
                .object
                .pointer_mut("/metadata/labels")
                .and_then(Value::as_object_mut)
            {
                labels.retain(|key, _| !key.starts_with("platform.pequod.io/"));
            }
        }
    }
}

fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(group, _)| group)
}

/// `adopted-<kind>-<name>`, made a valid node id and unique in the graph.
fn unique_id(nodes: &[Node], resource: &AdoptedResource) -> String {
    let raw = format!("adopted-{}-{}", resource.kind, resource.name).to_lowercase();
    let mut base: String = raw
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    base.truncate(MAX_ID - 3);
    let mut id = base.clone();
    let mut n = 2;
    while nodes.iter().any(|node| node.id == id) {
        id = format!("{base}-{n}");
        n += 1;
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> RenderContext {
        RenderContext {
            name: "shop".into(),
            namespace: "apps".into(),
        }
    }

    fn node(id: &str, kind: &str, name: &str) -> Node {
        serde_json::from_value(json!({"id": id, "object": {"apiVersion": "apps/v1", "kind": kind,
            "metadata": {"name": name, "namespace": "apps", "labels": {"platform.pequod.io/node-id": id}}}}))
        .expect("a node")
    }

    fn spec(strategy: AdoptStrategy, kind: &str, name: &str) -> AdoptSpec {
        AdoptSpec {
            strategy,
            resources: vec![AdoptedResource {
                api_version: "apps/v1".into(),
                kind: kind.into(),
                name: name.into(),
            }],
        }
    }

    #[test]
    fn rendered_objects_are_marked_and_others_get_a_node() {
        let mut nodes = vec![node("web", "Deployment", "web")];
        adopt(
            &mut nodes,
            Some(&spec(AdoptStrategy::TakeOwnership, "Deployment", "web")),
            &context(),
        );
        assert_eq!(nodes.len(), 1);
        assert_eq!(nodes[0].adopted, Some(AdoptStrategy::TakeOwnership));
        assert_eq!(nodes[0].apply_policy.conflict_policy, ConflictPolicy::Force);

        adopt(
            &mut nodes,
            Some(&spec(
                AdoptStrategy::TakeOwnership,
                "Deployment",
                "legacy_api",
            )),
            &context(),
        );
        let added = &nodes[1];
        assert_eq!(added.id, "adopted-deployment-legacy-api");
        assert_eq!(added.namespace(), Some("apps"));
        assert_eq!(
            added.object["metadata"]["labels"]["platform.pequod.io/node-id"],
            "adopted-deployment-legacy-api"
        );
        assert_eq!(added.apply_policy.mode, ApplyMode::Apply);
    }

    #[test]
    fn mirrored_objects_are_only_observed() {
        let mut nodes = vec![node("web", "Deployment", "web")];
        adopt(
            &mut nodes,
            Some(&spec(AdoptStrategy::Mirror, "Deployment", "web")),
            &context(),
        );
        assert_eq!(nodes[0].apply_policy.mode, ApplyMode::Observe);
        assert_eq!(nodes[0].deletion_policy, DeletionPolicy::Orphan);
        assert_eq!(nodes[0].object["metadata"]["labels"], json!({}));
        adopt(
            &mut nodes,
            Some(&spec(AdoptStrategy::Mirror, "Deployment", "web2")),
            &context(),
        );
        assert_eq!(nodes[1].apply_policy.mode, ApplyMode::Observe);
        assert!(nodes[1].object["metadata"].get("labels").is_none());
    }
}
