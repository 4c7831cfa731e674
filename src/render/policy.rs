//! Cluster policy modules (docs/modules.md, "Cluster policy modules"): a platform team's
//! policies over every rendered graph, whatever module rendered it. A policy module is
//! evaluated in the worker pool like any module, with its own configuration and a subject
//! naming the Transform and its render; its reports are cached like renders.

use std::borrow::Cow;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::protocol::EvalRequest;
use super::{Finding, ModuleMetadata, RenderContext, RenderError, RenderedGraph, Renderer};
use crate::module::ModuleBundle;

/// A policy module as the operator (or `pequod render`) loaded it: its files and its
/// configuration.
#[derive(Clone, Debug)]
pub struct PolicyModule {
    /// Where it came from, as given (`embedded:baseline`, an OCI reference, ...): named in
    /// messages.
    pub source: String,
    /// Its `metadata.name`: the first part of its policies' names (`baseline/no-privileged`)
    /// and the key of its configuration.
    pub name: String,
    /// Its files.
    pub bundle: ModuleBundle,
    /// Its configuration, checked by its own `config | Input` (`{}` when none was given).
    pub config: Value,
}

impl PolicyModule {
    /// What the module's reports depend on: its content and its configuration.
    pub fn digest(&self) -> String {
        let parts = [
            self.bundle.digest(),
            self.bundle.entrypoint(),
            &self.config.to_string(),
        ];
        format!("sha256:{}", crate::digest::framed(parts))
    }
}

/// A policy as declared: its name and whether a Transform may lower it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeclaredPolicy {
    /// The policy's name (a field of `policies`).
    pub name: String,
    /// Its `overridable`.
    #[serde(default)]
    pub overridable: bool,
}

/// What a policy module found in one Transform's render.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyReport {
    /// The policy module's metadata.
    pub metadata: ModuleMetadata,
    /// Its findings, before the Transform's overrides.
    #[serde(rename = "violations")]
    pub findings: Vec<Finding>,
    /// Its policies.
    pub policies: Vec<DeclaredPolicy>,
    /// The namespaces whose Transforms may lower its overridable policies.
    pub overridable_in: Vec<String>,
}

/// Who and what a policy module checks: the Transform (namespace, name, labels, the
/// module that rendered it), its input with defaults, and its rendered graph.
pub fn subject(
    context: &RenderContext,
    labels: &std::collections::BTreeMap<String, String>,
    rendered: &RenderedGraph,
) -> Value {
    json!({
        "transform": {
            "namespace": context.namespace,
            "name": context.name,
            "labels": labels,
            "module": {
                "name": rendered.module.name,
                "version": rendered.module.version,
                "digest": rendered.module_digest,
            },
        },
        "input": rendered.input,
        "rendered": { "nodes": rendered.nodes, "outputs": rendered.outputs },
    })
}

/// Why the policy modules could not be put together; `E` is why a module's files could not
/// be had.
#[derive(Debug, thiserror::Error)]
pub enum PolicyModulesError<E: std::error::Error + 'static> {
    /// The files of `reference` could not be had.
    #[error("policy module {reference}: {error}")]
    Source {
        /// The `--policy-module` reference.
        reference: String,
        /// Why.
        #[source]
        error: E,
    },
    /// `reference` is not a policy module Nickel can read.
    #[error("policy module {reference}: {error}")]
    Module {
        /// The `--policy-module` reference.
        reference: String,
        /// Why.
        #[source]
        error: RenderError,
    },
    /// Two modules share a `metadata.name`: their configurations and reports would mix.
    #[error("policy module {reference}: its name `{name}` is also the name of {other}")]
    SameName {
        /// The second module's reference.
        reference: String,
        /// The name.
        name: String,
        /// The first module's reference.
        other: String,
    },
    /// A configuration names no loaded module.
    #[error("--policy-config {name}: no policy module is named {name} (loaded: {})", if loaded.is_empty() { "none".to_string() } else { loaded.join(", ") })]
    UnusedConfig {
        /// The configuration's name.
        name: String,
        /// The names of the modules loaded.
        loaded: Vec<String>,
    },
}

impl Renderer {
    /// The policy modules `references` name, in order, the files of each had from `files`,
    /// each with the configuration `configs` has under its name. `pequod run` and the
    /// commands that render offline differ only in where the files come from.
    pub async fn policy_modules<E, Found>(
        &self,
        references: &[String],
        configs: &std::collections::BTreeMap<String, Value>,
        mut files: impl FnMut(&str) -> Found,
    ) -> Result<Vec<PolicyModule>, PolicyModulesError<E>>
    where
        E: std::error::Error + 'static,
        Found: std::future::Future<Output = Result<ModuleBundle, E>>,
    {
        let mut modules: Vec<PolicyModule> = Vec::new();
        for reference in references {
            let bundle = files(reference)
                .await
                .map_err(|error| PolicyModulesError::Source {
                    reference: reference.clone(),
                    error,
                })?;
            let module = self
                .policy_module(reference, bundle, configs)
                .await
                .map_err(|error| PolicyModulesError::Module {
                    reference: reference.clone(),
                    error,
                })?;
            if let Some(twin) = modules.iter().find(|m| m.name == module.name) {
                return Err(PolicyModulesError::SameName {
                    reference: reference.clone(),
                    name: module.name,
                    other: twin.source.clone(),
                });
            }
            modules.push(module);
        }
        if let Some(name) = configs
            .keys()
            .find(|n| modules.iter().all(|m| &m.name != *n))
        {
            return Err(PolicyModulesError::UnusedConfig {
                name: name.clone(),
                loaded: modules.iter().map(|m| m.name.clone()).collect(),
            });
        }
        Ok(modules)
    }

    /// The policy module in `bundle` (from `source`), with the configuration `configs` has
    /// under its `metadata.name` (`{}` when none).
    async fn policy_module(
        &self,
        source: &str,
        bundle: ModuleBundle,
        configs: &std::collections::BTreeMap<String, Value>,
    ) -> Result<PolicyModule, RenderError> {
        let name = self.describe(&bundle).await?.metadata.name;
        let config = configs.get(&name).cloned().unwrap_or_else(|| json!({}));
        Ok(PolicyModule {
            source: source.to_string(),
            name,
            bundle,
            config,
        })
    }

    /// The report of `policy` over `subject` (see [`subject`]), evaluated in the worker
    /// pool; reports and deterministic failures are cached by the policy module's content
    /// and configuration and the subject.
    pub async fn check_policies(
        &self,
        policy: &PolicyModule,
        subject: &Value,
    ) -> Result<Arc<PolicyReport>, RenderError> {
        let key = crate::digest::framed([
            self.engine_version.as_str(),
            &policy.digest(),
            &subject.to_string(),
        ]);
        let evaluation = async {
            match self.evaluate_policy(policy, subject).await {
                Ok(report) => Ok(Ok(Arc::new(report))),
                Err(error) if error.is_deterministic() => Ok(Err(Arc::new(error))),
                Err(error) => Err(error),
            }
        };
        let entry = self
            .policy_reports
            .entry(key)
            .or_try_insert_with(evaluation)
            .await
            .map_err(|error| (*error).clone())?;
        entry.into_value().map_err(|error| (*error).clone())
    }

    async fn evaluate_policy(
        &self,
        policy: &PolicyModule,
        subject: &Value,
    ) -> Result<PolicyReport, RenderError> {
        let context = RenderContext {
            name: String::new(),
            namespace: String::new(),
        };
        let request = EvalRequest {
            digest: Cow::Borrowed(policy.bundle.digest()),
            files: Cow::Borrowed(policy.bundle.files()),
            entrypoint: Cow::Borrowed(policy.bundle.entrypoint()),
            input: Cow::Borrowed(&policy.config),
            context: Cow::Owned(context),
            describe: false,
            subject: Some(Cow::Borrowed(subject)),
        };
        let output = self.pool.evaluate(&request).await?;
        serde_json::from_value(output).map_err(|e| {
            RenderError::InvalidOutput(format!(
                "policy module {}: metadata must be {{ name, version }}, overridableIn an array of namespaces, and every policy a {{ description, severity, overridable, check }} whose check returns [{{ path, message }}]: {e}",
                policy.source
            ))
        })
    }
}

/// The reports cache's weight of a report: its findings' text.
pub(super) fn report_weight(report: &Result<Arc<PolicyReport>, Arc<RenderError>>) -> usize {
    match report {
        Ok(report) => {
            256 + report
                .findings
                .iter()
                .map(|f| f.path.len() + f.message.len() + f.policy.len() + 64)
                .sum::<usize>()
        }
        Err(error) => error.to_string().len() + error.detail().map_or(0, str::len),
    }
}
