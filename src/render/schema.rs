//! Validation of rendered objects against the strict JSON Schema of their kind, bundled from
//! `schemas/json/` (built-in kinds and the CRDs the shipped platforms use). Each validator is
//! compiled on first use and kept for the life of the process.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use include_dir::{Dir, include_dir};
use jsonschema::error::ValidationErrorKind;
use jsonschema::{Registry, Validator};
use serde_json::Value;

use crate::api::{ApplyMode, Node};

static SCHEMAS: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/schemas/json");

/// Where `_definitions.json` is registered; the per-kind schemas refer to it as
/// `/api/_definitions.json`, resolved against [`KIND_BASE_URI`].
const DEFINITIONS_URI: &str = "https://kubernetes.io/api/_definitions.json";
const KIND_BASE_URI: &str = "https://kubernetes.io/api/kind.json";

static DEFINITIONS: LazyLock<Result<Registry<'static>, String>> = LazyLock::new(|| {
    let defs = parse(&SCHEMAS, "k8s/_definitions.json")?;
    Registry::new()
        .add(DEFINITIONS_URI, defs)
        .and_then(|builder| builder.prepare())
        .map_err(|e| format!("schema definitions: {e}"))
});

static VALIDATORS: LazyLock<Mutex<HashMap<String, Arc<Validator>>>> = LazyLock::new(Mutex::default);

/// A bundled schema, without its descriptions.
fn parse(dir: &Dir<'static>, path: &str) -> Result<Value, String> {
    let file = dir
        .get_file(path)
        .ok_or_else(|| format!("no bundled schema {path}"))?;
    let mut schema =
        serde_json::from_slice(file.contents()).map_err(|e| format!("schema {path}: {e}"))?;
    drop_descriptions(&mut schema);
    Ok(schema)
}

/// Removes the `description` of every (sub)schema: no validation reads them, and they are
/// most of the Kubernetes definitions (0.86 of their 1.2 MB of JSON, held parsed for the
/// life of the process). A field named `description` is a schema (an object) under
/// `properties`, never a string, and stays; values (`enum`, `const`, `default`, `examples`)
/// are left as they are.
fn drop_descriptions(schema: &mut Value) {
    match schema {
        Value::Object(fields) => {
            if fields.get("description").is_some_and(Value::is_string) {
                fields.remove("description");
            }
            for (keyword, value) in fields.iter_mut() {
                if !matches!(keyword.as_str(), "enum" | "const" | "default" | "examples") {
                    drop_descriptions(value);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(drop_descriptions),
        _ => {}
    }
}

/// API groups with bundled schemas, and the file-name prefix of each (`<kind>-<prefix>-<version>`).
/// Built-in groups live in `k8s/`, custom resources in `crd/`; the full group must match, so
/// an unrelated `postgresql.example.com` Cluster is never checked against CloudNativePG's.
const SCHEMA_GROUPS: &[(&str, &str, &str)] = &[
    ("", "k8s", ""),
    ("apps", "k8s", "apps"),
    ("autoscaling", "k8s", "autoscaling"),
    ("batch", "k8s", "batch"),
    ("policy", "k8s", "policy"),
    ("networking.k8s.io", "k8s", "networking"),
    ("postgresql.cnpg.io", "crd", "postgresql"),
    ("barmancloud.cnpg.io", "crd", "barmancloud"),
    ("external-secrets.io", "crd", "external-secrets"),
    ("monitoring.coreos.com", "crd", "monitoring"),
];

/// The bundled schema file for an object's apiVersion and kind, if there is one.
fn schema_path(api_version: &str, kind: &str) -> Option<String> {
    let kind = kind.to_lowercase();
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let (_, folder, prefix) = SCHEMA_GROUPS.iter().find(|(g, _, _)| *g == group)?;
    let path = if prefix.is_empty() {
        format!("{folder}/{kind}-{version}.json")
    } else {
        format!("{folder}/{kind}-{prefix}-{version}.json")
    };
    SCHEMAS.get_file(&path).map(|_| path)
}

fn validator(path: &str) -> Result<Arc<Validator>, String> {
    if let Ok(cache) = VALIDATORS.lock()
        && let Some(validator) = cache.get(path)
    {
        return Ok(Arc::clone(validator));
    }
    let registry = DEFINITIONS.as_ref().map_err(Clone::clone)?;
    let schema = parse(&SCHEMAS, path)?;
    let validator = jsonschema::options()
        .offline()
        .with_registry(registry)
        .with_base_uri(KIND_BASE_URI)
        .build(&schema)
        .map_err(|e| format!("schema {path}: {e}"))?;
    let validator = Arc::new(validator);
    if let Ok(mut cache) = VALIDATORS.lock() {
        cache.insert(path.to_string(), Arc::clone(&validator));
    }
    Ok(validator)
}

/// One schema error of one node, e.g.
/// `node cluster (Cluster ledger-db): spec.storage.sise: unknown field`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchemaViolation {
    /// The node.
    pub node: String,
    /// `Kind name` of the object.
    pub object: String,
    /// Dotted path of the field, empty for the object itself.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for SchemaViolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = if self.path.is_empty() {
            "(object)"
        } else {
            &self.path
        };
        write!(
            f,
            "node {} ({}): {path}: {}",
            self.node, self.object, self.message
        )
    }
}

/// Validates every written node's object whose kind has a bundled schema. Kinds without one
/// (a CRD this build does not know) are left to the API server; observed nodes name an
/// object someone else writes, and are not checked.
pub fn validate_nodes(nodes: &[Node]) -> Vec<SchemaViolation> {
    let mut violations = Vec::new();
    for node in nodes {
        if node.apply_policy.mode == ApplyMode::Observe {
            continue;
        }
        let (Some(api_version), Some(kind)) = (node.api_version(), node.kind()) else {
            continue;
        };
        let Some(path) = schema_path(api_version, kind) else {
            continue;
        };
        let violation = |path: String, message: String| SchemaViolation {
            node: node.id.clone(),
            object: node.describe(),
            path,
            message,
        };
        let validator = match validator(&path) {
            Ok(validator) => validator,
            Err(message) => {
                violations.push(violation(String::new(), message));
                continue;
            }
        };
        for error in validator.iter_errors(&node.object) {
            let at = dotted(&error.instance_path().to_string());
            match error.kind() {
                ValidationErrorKind::AdditionalProperties { unexpected } => {
                    for field in unexpected {
                        let path = if at.is_empty() {
                            field.clone()
                        } else {
                            format!("{at}.{field}")
                        };
                        violations.push(violation(path, "unknown field".into()));
                    }
                }
                _ => violations.push(violation(at, error.to_string())),
            }
        }
    }
    violations
}

/// `/spec/containers/0/image` → `spec.containers[0].image`.
fn dotted(pointer: &str) -> String {
    let mut out = String::new();
    for segment in pointer.split('/').skip(1) {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        if !segment.is_empty() && segment.chars().all(|c| c.is_ascii_digit()) {
            out.push_str(&format!("[{segment}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&segment);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(id: &str, object: Value) -> Node {
        serde_json::from_value(json!({"id": id, "object": object})).expect("valid node")
    }

    #[test]
    fn schema_files_are_found_by_group_version_kind() {
        let found = |api: &str, kind: &str| schema_path(api, kind);
        assert_eq!(
            found("apps/v1", "Deployment").as_deref(),
            Some("k8s/deployment-apps-v1.json")
        );
        assert_eq!(
            found("v1", "Service").as_deref(),
            Some("k8s/service-v1.json")
        );
        assert_eq!(
            found("networking.k8s.io/v1", "Ingress").as_deref(),
            Some("k8s/ingress-networking-v1.json")
        );
        assert_eq!(
            found("postgresql.cnpg.io/v1", "Cluster").as_deref(),
            Some("crd/cluster-postgresql-v1.json")
        );
        assert_eq!(
            found("external-secrets.io/v1", "ExternalSecret").as_deref(),
            Some("crd/externalsecret-external-secrets-v1.json")
        );
        assert_eq!(found("example.com/v1", "Widget"), None);
        assert_eq!(found("postgresql.example.com/v1", "Cluster"), None);
    }

    #[test]
    fn typos_and_wrong_types_are_named_by_node_kind_and_path() {
        let nodes = [
            node(
                "cluster",
                json!({
                "apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster",
                "metadata": {"name": "ledger-db"},
                "spec": {"instances": 1, "storage": {"sise": "1Gi"}}}),
            ),
            node(
                "web",
                json!({
                "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                "spec": {"selector": {}, "template": {"spec": {"containers": [
                    {"name": "web", "image": "x:1", "ports": [{"containerPort": "80"}]}]}}}}),
            ),
            node(
                "widget",
                json!({"apiVersion": "example.com/v1", "kind": "Widget",
                "metadata": {"name": "w"}, "anything": true}),
            ),
        ];
        let messages: Vec<String> = validate_nodes(&nodes)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            messages,
            vec![
                "node cluster (Cluster ledger-db): spec.storage.sise: unknown field",
                "node web (Deployment web): spec.template.spec.containers[0].ports[0].containerPort: \"80\" is not of type \"integer\"",
            ]
        );
    }

    #[test]
    fn descriptions_are_dropped_but_a_field_named_description_is_still_checked() {
        let mut schema = json!({
            "description": "A thing.",
            "properties": {
                "description": {"description": "What it is for.", "type": "string"},
                "items": {"type": "array", "items": [{"description": "One.", "type": "integer"}]},
                "kind": {"enum": [{"description": "a value"}], "default": {"description": "d"}},
            },
        });
        drop_descriptions(&mut schema);
        assert_eq!(
            schema,
            json!({"properties": {
                "description": {"type": "string"},
                "items": {"type": "array", "items": [{"type": "integer"}]},
                "kind": {"enum": [{"description": "a value"}], "default": {"description": "d"}},
            }})
        );

        // CloudNativePG's Cluster has a `spec.description`.
        let cluster = |description: Value| {
            node(
                "db",
                json!({"apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster",
                "metadata": {"name": "db"},
                "spec": {"instances": 1, "storage": {"size": "1Gi"}, "description": description}}),
            )
        };
        assert_eq!(validate_nodes(&[cluster(json!("ledger"))]), []);
        let messages: Vec<String> = validate_nodes(&[cluster(json!(5))])
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            messages,
            ["node db (Cluster db): spec.description: 5 is not of type \"string\""]
        );
    }
}
