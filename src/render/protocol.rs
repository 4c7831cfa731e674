//! The messages between the operator and its evaluation workers: one JSON document per
//! line on the worker's stdin and stdout. A worker first writes a [`WorkerHello`], then
//! answers each [`WorkerRequest`] with an [`EvalResponse`].

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::EvalFailure;
use super::sandbox::{SandboxProbe, SandboxStatus};
use crate::api::Transform;

/// Who a render is for: merged into the module as `context`, so modules can name their
/// namespace in outputs.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RenderContext {
    /// The Transform's name.
    pub name: String,
    /// The Transform's namespace.
    pub namespace: String,
}

impl RenderContext {
    /// The context of a Transform: its name, and its namespace (`default` when unset).
    pub fn of(transform: &Transform) -> RenderContext {
        RenderContext {
            name: transform.metadata.name.clone().unwrap_or_default(),
            namespace: transform
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".to_string()),
        }
    }
}

/// The first line a worker writes: once it is sealed, before it reads any request.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkerHello {
    /// How far the worker is sealed.
    pub sandbox: SandboxStatus,
}

/// One line on a worker's stdin.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum WorkerRequest<'a> {
    /// Evaluate a module; the answer's result is the evaluation's.
    Evaluate(Cow<'a, EvalRequest<'a>>),
    /// Answer questions about the worker's own sandbox (tests only); the answer's result is a
    /// [`super::SandboxReport`].
    Probe(SandboxProbe),
}

/// Evaluate a module with an input. The files travel with every request; a worker that
/// already prepared `digest` ignores them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalRequest<'a> {
    /// Content digest of the module: the key of the worker's prepared-module cache.
    pub digest: Cow<'a, str>,
    /// The module's files.
    pub files: Cow<'a, BTreeMap<String, String>>,
    /// The entrypoint file.
    pub entrypoint: Cow<'a, str>,
    /// The Transform's input.
    pub input: Cow<'a, Value>,
    /// The Transform's identity.
    pub context: Cow<'a, RenderContext>,
    /// Evaluate only the module's `metadata` and list its `Input` fields (input unused):
    /// for publishing and inspecting a module.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub describe: bool,
    /// Evaluate a policy module over this subject (`{ transform, input, rendered }`, a
    /// Transform and its rendered graph); `input` is then the policy module's own
    /// configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Cow<'a, Value>>,
}

/// One field of a module's `Input` contract, as the module's author wrote it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputField {
    /// Dotted path from the input's root; `[]` marks the elements of an array
    /// (`roles[].name`).
    pub path: String,
    /// The field's type and contract annotations, as written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contracts: Vec<String>,
    /// Whether a Transform must give it.
    pub presence: Presence,
    /// The default (or fixed value) as written: an expression, not its value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// The field's `| doc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doc: Option<String>,
}

/// Whether an input field must be given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Presence {
    /// No value and not optional: the Transform must set it.
    Required,
    /// May be left out.
    Optional,
    /// Has a default (`| default = …`) the Transform may override.
    Default,
    /// Has a value the Transform cannot change (only to the same value).
    Fixed,
}

/// The worker's answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalResponse {
    /// `{ metadata, input, rendered, violations, policies }` (a describe request: `{ metadata,
    /// inputFields? }`, the fields absent when `Input` is not a record; a policy request:
    /// `{ metadata, violations, policies, overridableIn }`), or what went wrong.
    pub result: Result<Value, EvalFailure>,
}
