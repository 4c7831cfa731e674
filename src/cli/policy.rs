//! `--policy-module` and `--policy-config` of the commands that render offline (`render`,
//! `diff`, `module check`): the cluster's policy modules, applied as the operator applies
//! them (docs/modules.md, "Cluster policy modules").

use std::collections::BTreeMap;
use std::path::Path;

use clap::Args;
use serde_json::Value;

use super::render::resolve_offline;
use super::{CliError, RegistryArgs, exit};
use crate::module::{CommandLineRef, ModuleBundle, shipped_policy_module};
use crate::render::{PolicyModule, PolicyModulesError, Renderer};

/// Flags naming the cluster's policy modules.
#[derive(Debug, Default, Args)]
pub struct PolicyArgs {
    /// A cluster policy module whose policies every graph must pass (repeatable): a
    /// directory, `embedded:NAME` (shipped: baseline), `git+URL` or an OCI artifact.
    #[arg(long = "policy-module", value_name = "REF")]
    pub modules: Vec<String>,
    /// The configuration of the policy module named NAME (its metadata.name): a YAML or
    /// JSON file (repeatable).
    #[arg(long = "policy-config", value_name = "NAME=FILE")]
    pub configs: Vec<String>,
}

impl PolicyArgs {
    /// The policy modules, resolved with the user's registry credentials and cache, with
    /// their configurations.
    pub async fn load(
        &self,
        registry: &RegistryArgs,
        cache_dir: Option<&Path>,
        renderer: &Renderer,
    ) -> Result<Vec<PolicyModule>, CliError> {
        let mut configs = BTreeMap::new();
        for pair in &self.configs {
            let (name, file) = pair.split_once('=').ok_or_else(|| {
                CliError::new(
                    exit::USAGE,
                    format!("--policy-config {pair}: expected NAME=FILE"),
                )
            })?;
            configs.insert(name.to_string(), read_config(Path::new(file))?);
        }
        let files = |reference: &str| {
            let reference = reference.to_string();
            async move { offline_bundle(&reference, registry, cache_dir).await }
        };
        renderer
            .policy_modules(&self.modules, &configs, files)
            .await
            .map_err(|error| match &error {
                PolicyModulesError::UnusedConfig { .. } => {
                    CliError::new(exit::USAGE, error.to_string())
                }
                PolicyModulesError::Module { error: cause, .. } => CliError {
                    // With Nickel's report of where the policy module broke.
                    detail: cause.detail().map(str::to_string),
                    ..CliError::new(exit::MODULE_UNAVAILABLE, error.to_string())
                },
                _ => CliError::new(exit::MODULE_UNAVAILABLE, error.to_string()),
            })
    }
}

/// Why the files of a policy module could not be had offline.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Unavailable(String);

/// The files of the policy module `reference`, as the user can have them: shipped, a
/// directory, or remote (with the user's registry credentials and cache); a ConfigMap only
/// the operator reads.
async fn offline_bundle(
    reference: &str,
    registry: &RegistryArgs,
    cache_dir: Option<&Path>,
) -> Result<ModuleBundle, Unavailable> {
    let failed = |e: &dyn std::fmt::Display| Unavailable(e.to_string());
    match CommandLineRef::parse(reference, None).map_err(|e| failed(&e))? {
        CommandLineRef::Embedded(name) => shipped_policy_module(&name).map_err(|e| failed(&e)),
        CommandLineRef::ConfigMap(_) => Err(failed(
            &"a ConfigMap is read by the operator; offline, name the module's directory",
        )),
        CommandLineRef::Directory(dir) => {
            ModuleBundle::from_dir(&dir, None).map_err(|e| failed(&e))
        }
        CommandLineRef::Remote(module_ref) => {
            resolve_offline(&module_ref, None, registry, cache_dir)
                .await
                .map(|resolved| resolved.bundle)
                .map_err(|e| failed(&e.message))
        }
    }
}

/// A policy module's configuration file (YAML or JSON), read as kubectl reads YAML (the
/// operator reads a ConfigMap's the same way); what a YAML 1.2 reader would read
/// differently is reported on stderr.
fn read_config(path: &Path) -> Result<Value, CliError> {
    let bad = |message: String| CliError::new(exit::BAD_INPUT_FILE, message);
    let text = std::fs::read_to_string(path)
        .map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
    let decoded = crate::api::yaml::from_str(&text)
        .map_err(|e| bad(format!("{}: invalid YAML: {e}", path.display())))?;
    for warning in &decoded.warnings {
        eprintln!("warning: {}: {warning}", path.display());
    }
    Ok(decoded.value)
}
