//! `Transform`: "instantiate module M with input I".

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::node::Violation;
use super::schema::{free_form_object, optional_free_form_object};

/// Desired state of a Transform: which module to instantiate with which input.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "platform.pequod.io",
    version = "v1alpha1",
    kind = "Transform",
    doc = "Instantiates a platform module (postgres, webservice, ...) with an input. Pequod fetches the module, evaluates it with the input into a ResourceGraph of the same name, and executes that graph.",
    namespaced,
    status = "TransformStatus",
    shortname = "tf",
    category = "pequod",
    printcolumn = r#"{"name": "Module", "type": "string", "jsonPath": ".status.resolvedModule.ref", "description": "The module reference that was resolved (inline modules show (inline))"}"#,
    printcolumn = r#"{"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status", "description": "Whether every object of the graph is ready"}"#,
    printcolumn = r#"{"name": "Pending", "type": "string", "jsonPath": ".status.pendingModule.reason", "description": "A staged rollout holds a new digest of the module back (RolloutWaiting, RolloutHalted)"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct TransformSpec {
    /// Where the platform module comes from.
    pub module_ref: ModuleRef,
    /// The module's input, checked by the module's Input contract.
    #[serde(default = "empty_object")]
    #[schemars(schema_with = "free_form_object")]
    pub input: Value,
    /// Stop reconciling this Transform (the status says so).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,
    /// Delete objects that left the graph (default true).
    #[serde(default = "default_true")]
    pub prune: bool,
    /// Apply the graph's objects as this ServiceAccount (impersonation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Take existing objects into management.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adopt: Option<AdoptSpec>,
    /// Lower the enforcement of module policies that allow it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<PolicyOverride>,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

fn default_true() -> bool {
    true
}

/// A reference to a platform module.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModuleRef {
    /// oci, git, configmap, inline or embedded.
    #[serde(rename = "type")]
    pub type_: ModuleType,
    /// oci: image reference (tag or @sha256 digest); git: clone URL with optional
    /// `?ref=&path=`; configmap: ConfigMap name; inline: the main.ncl source; embedded: the
    /// name of a module shipped in the binary (postgres, webservice).
    #[serde(rename = "ref")]
    pub ref_: String,
    /// Sub-directory of the bundle or repository holding the module.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Entrypoint file of the module (default main.ncl).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<String>,
    /// Credentials: a dockerconfigjson Secret for oci, basic-auth/token/ssh for git.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_secret_ref: Option<LocalObjectReference>,
    /// The fetched content must have this digest (sha256:...), else the Transform fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// Kind of module source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ModuleType {
    /// An OCI artifact in a registry.
    Oci,
    /// A Git repository.
    Git,
    /// A ConfigMap in the Transform's namespace whose keys are file names.
    Configmap,
    /// The `ref` field is the main.ncl source.
    Inline,
    /// A module compiled into the operator binary.
    Embedded,
}

impl std::fmt::Display for ModuleType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ModuleType::Oci => "oci",
            ModuleType::Git => "git",
            ModuleType::Configmap => "configmap",
            ModuleType::Inline => "inline",
            ModuleType::Embedded => "embedded",
        })
    }
}

/// A reference to an object in the same namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LocalObjectReference {
    /// Name of the object.
    pub name: String,
}

/// Existing objects to take into management.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AdoptSpec {
    /// TakeOwnership (manage and prune like rendered objects) or Mirror (observe only).
    pub strategy: AdoptStrategy,
    /// The objects to adopt.
    #[serde(default)]
    pub resources: Vec<AdoptedResource>,
}

/// How adopted objects are treated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum AdoptStrategy {
    /// Manage the object as if Pequod had created it.
    TakeOwnership,
    /// Observe the object; never modify or delete it.
    Mirror,
}

/// One object to adopt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdoptedResource {
    /// apiVersion of the object.
    pub api_version: String,
    /// Kind of the object.
    pub kind: String,
    /// Name of the object (in the Transform's namespace when namespaced).
    pub name: String,
}

/// An override of a module policy's enforcement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PolicyOverride {
    /// The policy name.
    pub name: String,
    /// The new enforcement (e.g. Warn), allowed only where the policy says so.
    pub enforcement: String,
}

/// What the operator observed and did for a Transform.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransformStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The module that was used, pinned to its digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_module: Option<ResolvedModule>,
    /// The ResourceGraph rendered from this Transform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_graph_ref: Option<LocalObjectReference>,
    /// The module's outputs (endpoints, secret names, ...) for other teams to consume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_free_form_object")]
    pub outputs: Option<Value>,
    /// Policy findings of the last render.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub violations: Vec<Violation>,
    /// ModuleResolved, Validated, Rendered and Ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// A new digest of the module reference this Transform is held back from by a staged
    /// rollout (it stays on `resolvedModule`), and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_module: Option<PendingModule>,
}

/// A module digest a Transform waits for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingModule {
    /// The digest the reference moved to.
    pub digest: String,
    /// `RolloutWaiting` (the wave before is not Ready yet) or `RolloutHalted` (a Transform
    /// failed on the digest).
    pub reason: String,
    /// What the rollout waits for, or which Transform failed and how.
    pub message: String,
}

/// The module a render used.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedModule {
    /// Source type.
    #[serde(rename = "type")]
    pub type_: ModuleType,
    /// The reference as written in the Transform.
    #[serde(rename = "ref")]
    pub ref_: String,
    /// Digest of the module as `moduleRef.digest` pins it: the OCI manifest digest, the Git
    /// commit (`:path`), the content digest of any other module.
    pub digest: String,
    /// When the module was fetched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetched_at: Option<Time>,
}
