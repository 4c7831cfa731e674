//! The schemas that drive merging: the built-in Kubernetes definitions (vendored from the
//! OpenAPI of Kubernetes 1.34) and the structural schemas of registered CRDs.
//!
//! Server-side apply, strategic merge patch and managedFields all need to know, at every
//! position of an object, whether a list is atomic, a set or a map keyed by some fields, and
//! whether a map is granular or atomic. [`Schema`] answers those questions while walking.

use serde_json::{Map, Value};
use std::sync::LazyLock;

/// The vendored OpenAPI definitions of the built-in kinds (JSON Schema `$defs`).
static BUILTIN: LazyLock<Value> = LazyLock::new(|| {
    serde_json::from_str(include_str!("../../schemas/json/k8s/_definitions.json"))
        .expect("the vendored Kubernetes definitions are valid JSON")
});

/// All built-in definitions by their OpenAPI name (`io.k8s.api.apps.v1.Deployment`).
pub fn builtin_definitions() -> &'static Map<String, Value> {
    static EMPTY: LazyLock<Map<String, Value>> = LazyLock::new(Map::new);
    BUILTIN
        .get("$defs")
        .and_then(Value::as_object)
        .unwrap_or(&EMPTY)
}

/// How the elements of a list are told apart when two lists are merged
/// (`x-kubernetes-list-type`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListType {
    /// The list is replaced as a whole (the default).
    Atomic,
    /// A list of scalars merged as a set.
    Set,
    /// A list of objects merged by the values of these key fields.
    Map(Vec<String>),
}

/// A position in a schema. `Schema::unknown()` stands for "no schema here" (unknown or
/// preserved fields): maps are then granular and lists atomic, as in Kubernetes.
#[derive(Debug, Clone, Copy)]
pub struct Schema<'a> {
    node: Option<&'a Value>,
    /// The node that held the `$ref`, whose own extensions (`x-kubernetes-patch-strategy`
    /// next to a `$ref`) take precedence over the referenced definition's.
    outer: Option<&'a Value>,
    defs: Option<&'a Map<String, Value>>,
}

impl<'a> Schema<'a> {
    /// No schema: everything is deduced from the values.
    pub fn unknown() -> Schema<'static> {
        Schema {
            node: None,
            outer: None,
            defs: None,
        }
    }

    /// A schema node whose `$ref`s (if any) point into `defs`.
    pub fn new(node: &'a Value, defs: Option<&'a Map<String, Value>>) -> Self {
        Schema {
            node: Some(node),
            outer: None,
            defs,
        }
        .resolved()
    }

    /// The built-in definition with this OpenAPI name, or unknown when there is none.
    pub fn builtin(definition: &str) -> Schema<'static> {
        let defs = builtin_definitions();
        match defs.get(definition) {
            Some(node) => Schema::new(node, Some(defs)),
            None => Schema::unknown(),
        }
    }

    /// Whether this position is the built-in definition `name`
    /// (`io.k8s.apimachinery.pkg.api.resource.Quantity`).
    pub fn is_definition(&self, name: &str) -> bool {
        match (self.node, builtin_definitions().get(name)) {
            (Some(node), Some(definition)) => std::ptr::eq(node, definition),
            _ => false,
        }
    }

    /// Whether there is a schema at this position.
    pub fn is_known(&self) -> bool {
        self.node.is_some()
    }

    /// The raw schema node, after `$ref` resolution.
    pub fn node(&self) -> Option<&'a Value> {
        self.node
    }

    /// Follows `$ref` (directly or as the single member of `allOf`).
    fn resolved(self) -> Self {
        let mut current = self;
        for _ in 0..8 {
            let Some(node) = current.node else {
                return current;
            };
            let reference = node.get("$ref").and_then(Value::as_str).or_else(|| {
                node.get("allOf")
                    .and_then(Value::as_array)
                    .filter(|all| all.len() == 1)
                    .and_then(|all| all[0].get("$ref"))
                    .and_then(Value::as_str)
            });
            let Some(reference) = reference else {
                return current;
            };
            current.outer = current.outer.or(Some(node));
            let name = reference
                .rsplit_once('/')
                .map_or(reference, |(_, name)| name);
            current.node = current.defs.and_then(|defs| defs.get(name));
        }
        current
    }

    fn extension(&self, name: &str) -> Option<&'a Value> {
        let own = |node: &'a Value| node.get(name);
        self.outer
            .and_then(own)
            .filter(|_| name.starts_with("x-kubernetes-"))
            .or_else(|| self.node.and_then(own))
    }

    fn child(&self, node: Option<&'a Value>) -> Schema<'a> {
        match node {
            Some(node) if node.is_object() => Schema::new(node, self.defs),
            _ => Schema {
                node: None,
                outer: None,
                defs: self.defs,
            },
        }
    }

    /// The schema of field `name` of this object (a declared property, else the schema of
    /// `additionalProperties`, else unknown).
    pub fn field(&self, name: &str) -> Schema<'a> {
        let declared = self
            .extension("properties")
            .and_then(|properties| properties.get(name));
        match declared {
            Some(node) => self.child(Some(node)),
            None => self.child(self.extension("additionalProperties")),
        }
    }

    /// The schema of the elements of this list.
    pub fn items(&self) -> Schema<'a> {
        self.child(self.extension("items"))
    }

    /// Whether this object has declared properties (a struct) rather than being a free map.
    pub fn has_properties(&self) -> bool {
        self.extension("properties")
            .and_then(Value::as_object)
            .is_some_and(|properties| !properties.is_empty())
    }

    /// How this list merges: `x-kubernetes-list-type`, else a `merge` patch strategy with a
    /// merge key (older built-in lists), else atomic.
    pub fn list_type(&self) -> ListType {
        match self
            .extension("x-kubernetes-list-type")
            .and_then(Value::as_str)
        {
            Some("set") => ListType::Set,
            Some("map") => ListType::Map(
                self.extension("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .map(|keys| {
                        keys.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default(),
            ),
            Some(_) => ListType::Atomic,
            None => match (self.patch_strategy(), self.patch_merge_key()) {
                (Some(strategy), Some(key)) if strategy.split(',').any(|s| s == "merge") => {
                    ListType::Map(vec![key.to_owned()])
                }
                _ => ListType::Atomic,
            },
        }
    }

    /// Whether this map is replaced as a whole (`x-kubernetes-map-type: atomic`).
    pub fn is_atomic_map(&self) -> bool {
        self.extension("x-kubernetes-map-type")
            .and_then(Value::as_str)
            == Some("atomic")
    }

    /// `x-kubernetes-patch-strategy` (`merge`, `replace`, `retainKeys`, `merge,retainKeys`).
    pub fn patch_strategy(&self) -> Option<&'a str> {
        self.extension("x-kubernetes-patch-strategy")
            .and_then(Value::as_str)
    }

    /// `x-kubernetes-patch-merge-key`: the field that identifies list elements in a
    /// strategic merge patch.
    pub fn patch_merge_key(&self) -> Option<&'a str> {
        self.extension("x-kubernetes-patch-merge-key")
            .and_then(Value::as_str)
    }
}

/// Drops the fields `schema` does not declare, as the API server does when it decodes a
/// request, and returns their paths (`.spec.replicaz`) so that `fieldValidation=Strict` can
/// reject them. Objects whose schema declares no properties and does not forbid others keep
/// whatever they hold, as do `x-kubernetes-preserve-unknown-fields` subtrees.
pub fn prune(value: &mut Value, schema: Schema, path: &str, unknown: &mut Vec<String>) {
    let Some(node) = schema.node else {
        return;
    };
    if node.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
        return;
    }
    match value {
        Value::Object(fields) => {
            let embedded = node.get("x-kubernetes-embedded-resource") == Some(&Value::Bool(true));
            let closed = schema.has_properties()
                || node.get("additionalProperties") == Some(&Value::Bool(false));
            let open_values = node.get("additionalProperties").filter(|v| v.is_object());
            let mut dropped = Vec::new();
            for (name, child) in fields.iter_mut() {
                let child_path = format!("{path}.{name}");
                let declared = node
                    .get("properties")
                    .and_then(|properties| properties.get(name.as_str()));
                if embedded && ["apiVersion", "kind", "metadata"].contains(&name.as_str()) {
                    continue;
                }
                match (declared, open_values) {
                    (Some(_), _) | (None, Some(_)) => {
                        prune(child, schema.field(name), &child_path, unknown)
                    }
                    (None, None) if closed => {
                        unknown.push(child_path);
                        dropped.push(name.clone());
                    }
                    (None, None) => {}
                }
            }
            for name in dropped {
                fields.remove(&name);
            }
        }
        Value::Array(items) => {
            for (index, item) in items.iter_mut().enumerate() {
                prune(item, schema.items(), &format!("{path}[{index}]"), unknown);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_lists_and_maps() {
        let deployment = Schema::builtin("io.k8s.api.apps.v1.Deployment");
        let pod = deployment.field("spec").field("template").field("spec");
        assert_eq!(
            pod.field("containers").list_type(),
            ListType::Map(vec!["name".into()])
        );
        let container = pod.field("containers").items();
        assert_eq!(
            container.field("ports").list_type(),
            ListType::Map(vec!["containerPort".into(), "protocol".into()])
        );
        assert_eq!(container.field("args").list_type(), ListType::Atomic);
        assert!(deployment.field("spec").field("selector").is_atomic_map());
        let metadata = deployment.field("metadata");
        assert_eq!(metadata.field("finalizers").list_type(), ListType::Set);
        assert!(!metadata.field("labels").has_properties());
        assert!(metadata.field("labels").field("app").is_known());
        assert!(!deployment.field("nonsense").is_known());
        let pdb = Schema::builtin("io.k8s.api.policy.v1.PodDisruptionBudget");
        assert_eq!(
            pdb.field("spec").field("selector").patch_strategy(),
            Some("replace")
        );
    }

    #[test]
    fn crd_schema_without_definitions() {
        let node = serde_json::json!({
            "type": "object",
            "properties": {"spec": {"type": "object", "properties": {
                "items": {"type": "array", "x-kubernetes-list-type": "map",
                          "x-kubernetes-list-map-keys": ["id"], "items": {"type": "object"}}
            }}}
        });
        let schema = Schema::new(&node, None);
        assert_eq!(
            schema.field("spec").field("items").list_type(),
            ListType::Map(vec!["id".into()])
        );
        assert!(!schema.field("spec").field("other").is_known());
    }

    #[test]
    fn prune_reports_undeclared_fields() {
        let mut deployment = serde_json::json!({
            "spec": {"replicaz": 2, "template": {"spec": {"containers": [
                {"name": "c", "imagee": "x", "env": [{"name": "A", "value": "1"}]}
            ]}}},
            "metadata": {"labels": {"any": "thing"}}
        });
        let mut unknown = Vec::new();
        prune(
            &mut deployment,
            Schema::builtin("io.k8s.api.apps.v1.Deployment"),
            "",
            &mut unknown,
        );
        assert_eq!(
            unknown,
            [".spec.replicaz", ".spec.template.spec.containers[0].imagee"]
        );
        assert_eq!(
            deployment["spec"]["template"]["spec"]["containers"][0],
            serde_json::json!({"name": "c", "env": [{"name": "A", "value": "1"}]})
        );
        assert_eq!(deployment["metadata"]["labels"]["any"], "thing");
    }
}
