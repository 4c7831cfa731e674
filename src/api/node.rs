//! The nodes of a graph: one Kubernetes object each, with its ordering, readiness and
//! lifecycle rules, and the policy findings recorded on a graph.
//!
//! The same types are the `spec.nodes` of a `ResourceGraph` and the output of the Nickel
//! engine, so what a module renders is exactly what the operator executes.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::AdoptStrategy;
use super::ready::ReadyPredicate;
use super::schema::free_form_object;

/// One Kubernetes object of a graph, with its ordering, readiness and lifecycle rules.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    /// Unique id of the node inside its graph; `dependsOn` refers to it.
    pub id: String,
    /// The full Kubernetes object to apply (apiVersion, kind, metadata.name required).
    #[schemars(schema_with = "free_form_object")]
    pub object: Value,
    /// Ids of the nodes that must be Ready before this one is applied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// Predicates that must all hold for the node to count as Ready. Empty means the
    /// built-in readiness rules of the object's kind.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ready_when: Vec<ReadyPredicate>,
    /// Terminal failures: the node fails at once, with the object's reason, when one of
    /// these predicates holds (the failures of Deployments, Jobs and CloudNativePG
    /// clusters are known without them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fail_when: Vec<ReadyPredicate>,
    /// The node fails when it is not Ready this many seconds after it was applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u32>,
    /// How the object is written.
    #[serde(default)]
    pub apply_policy: ApplyPolicy,
    /// What happens to the object when it leaves the graph or the graph is deleted.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// Set on nodes for objects listed in `Transform.spec.adopt`: the object must already
    /// exist; TakeOwnership manages it from then on, Mirror only observes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adopted: Option<AdoptStrategy>,
}

/// How a node's object is written to the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplyPolicy {
    /// Apply (server-side apply on every change), Create (create once, never update) or
    /// Observe (never written: only watched and readiness-gated).
    #[serde(default)]
    pub mode: ApplyMode,
    /// What to do when another field manager owns a field Pequod applies.
    #[serde(default)]
    pub conflict_policy: ConflictPolicy,
}

/// Write mode of a node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ApplyMode {
    /// Server-side apply whenever the rendered object changes or drifts.
    #[default]
    Apply,
    /// Create the object once; never update it afterwards.
    Create,
    /// Never write the object; wait for it to exist and be ready.
    Observe,
}

/// Reaction to a server-side apply conflict.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConflictPolicy {
    /// Report the conflict (who owns which field) and fail the node.
    #[default]
    Error,
    /// Take ownership of the conflicting fields.
    Force,
}

/// What happens to an object that leaves the graph.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DeletionPolicy {
    /// Delete the object when it is pruned or the graph is deleted.
    #[default]
    Delete,
    /// Leave the object in the cluster.
    Orphan,
}

impl DeletionPolicy {
    /// Whether this is the default, `Delete`.
    pub fn is_delete(&self) -> bool {
        *self == DeletionPolicy::Delete
    }
}

/// A policy finding on a rendered graph.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Violation {
    /// Where the problem is, e.g. `input.backup.schedule`.
    pub path: String,
    /// What is wrong and how to fix it.
    pub message: String,
    /// Error blocks the render; Warning is recorded only.
    pub severity: Severity,
    /// The policy that reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
}

/// Severity of a violation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Severity {
    /// Blocks the render.
    Error,
    /// Recorded, does not block.
    Warning,
}

/// Identity of a Kubernetes object as far as a graph is concerned: two nodes with the same
/// key would fight over one object.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// API group (empty for the core group); the version does not change identity.
    pub group: String,
    /// Kind.
    pub kind: String,
    /// Namespace, empty for cluster-scoped objects.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let group = if self.group.is_empty() {
            String::new()
        } else {
            format!(".{}", self.group)
        };
        if self.namespace.is_empty() {
            write!(f, "{}{group} {}", self.kind, self.name)
        } else {
            write!(f, "{}{group} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

impl Node {
    /// `apiVersion` of the object, if it is a non-empty string.
    pub fn api_version(&self) -> Option<&str> {
        non_empty_str(self.object.get("apiVersion"))
    }

    /// `kind` of the object, if it is a non-empty string.
    pub fn kind(&self) -> Option<&str> {
        non_empty_str(self.object.get("kind"))
    }

    /// `metadata.name` of the object, if it is a non-empty string.
    pub fn name(&self) -> Option<&str> {
        non_empty_str(self.object.pointer("/metadata/name"))
    }

    /// `metadata.namespace` of the object, if set.
    pub fn namespace(&self) -> Option<&str> {
        non_empty_str(self.object.pointer("/metadata/namespace"))
    }

    /// The identity of the object, once apiVersion, kind and name are known.
    pub fn object_key(&self) -> Option<ObjectKey> {
        let api_version = self.api_version()?;
        let group = api_version
            .rsplit_once('/')
            .map(|(group, _)| group)
            .unwrap_or("");
        Some(ObjectKey {
            group: group.to_string(),
            kind: self.kind()?.to_string(),
            namespace: self.namespace().unwrap_or("").to_string(),
            name: self.name()?.to_string(),
        })
    }

    /// The object as the node renders it (its namespace as written, no uid): what reports
    /// name before the object is placed in the cluster.
    pub fn object_ref(&self) -> super::ObjectRef {
        super::ObjectRef {
            api_version: self.api_version().unwrap_or_default().to_string(),
            kind: self.kind().unwrap_or_default().to_string(),
            namespace: self.namespace().map(str::to_string),
            name: self.name().unwrap_or_default().to_string(),
            uid: None,
        }
    }

    /// A short human label: `Kind name`.
    pub fn describe(&self) -> String {
        format!(
            "{} {}",
            self.kind().unwrap_or("<no kind>"),
            self.name().unwrap_or("<no name>")
        )
    }
}

fn non_empty_str(value: Option<&Value>) -> Option<&str> {
    value.and_then(Value::as_str).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn node_defaults_fill_policies() {
        let node: Node = serde_json::from_value(json!({
            "id": "sa",
            "object": {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "x"}}
        }))
        .expect("valid node");
        assert_eq!(node.apply_policy.mode, ApplyMode::Apply);
        assert_eq!(node.apply_policy.conflict_policy, ConflictPolicy::Error);
        assert_eq!(node.deletion_policy, DeletionPolicy::Delete);
        assert!(node.depends_on.is_empty());
    }

    #[test]
    fn object_key_ignores_version_and_names_group() {
        let node: Node = serde_json::from_value(json!({
            "id": "d",
            "object": {"apiVersion": "apps/v1", "kind": "Deployment",
                       "metadata": {"name": "web", "namespace": "shop"}}
        }))
        .expect("valid node");
        let key = node.object_key().expect("complete object");
        assert_eq!(key.group, "apps");
        assert_eq!(key.to_string(), "Deployment.apps shop/web");
    }
}
