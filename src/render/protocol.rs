//! The messages between the operator and its evaluation workers: one JSON document per
//! line on the worker's stdin and stdout.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::EvalFailure;
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
    /// Evaluate only the module's `metadata` (input and context unused): for publishing
    /// and inspecting a module.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub describe: bool,
}

/// The worker's answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalResponse {
    /// `{ metadata, input, rendered }`, or what went wrong.
    pub result: Result<Value, EvalFailure>,
    /// The worker's address-space size after the evaluation, for recycling decisions.
    pub vm_bytes: u64,
}
