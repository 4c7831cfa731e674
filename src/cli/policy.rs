//! `--policy-module` and `--policy-config` of the commands that render offline (`render`,
//! `diff`, `module check`): the cluster's policy modules, applied as the operator applies
//! them (docs/modules.md, "Cluster policy modules").

use std::collections::BTreeMap;
use std::path::Path;

use clap::Args;
use serde_json::Value;

use super::render::resolve_offline;
use super::{CliError, RegistryArgs, exit};
use crate::module::{
    CommandLineRef, ModuleBundle, embedded_policy_module, embedded_policy_module_names,
};
use crate::render::{PolicyModule, Renderer};

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
        let bad = |message: String| CliError::new(exit::MODULE_UNAVAILABLE, message);
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
        let mut loaded: Vec<PolicyModule> = Vec::new();
        for reference in &self.modules {
            let failed = |e: &dyn std::fmt::Display| bad(format!("policy module {reference}: {e}"));
            let bundle = match CommandLineRef::parse(reference, None).map_err(|e| failed(&e))? {
                CommandLineRef::Embedded(name) => {
                    embedded_policy_module(&name).cloned().ok_or_else(|| {
                        failed(&format!(
                            "no shipped policy module `{name}` (shipped: {})",
                            embedded_policy_module_names().join(", ")
                        ))
                    })?
                }
                CommandLineRef::ConfigMap(_) => {
                    return Err(failed(
                        &"a ConfigMap is read by the operator; offline, name the module's directory",
                    ));
                }
                CommandLineRef::Directory(dir) => {
                    ModuleBundle::from_dir(&dir, None).map_err(|e| failed(&e))?
                }
                CommandLineRef::Remote(module_ref) => {
                    resolve_offline(&module_ref, None, registry, cache_dir)
                        .await
                        .map_err(|e| failed(&e.message))?
                        .bundle
                }
            };
            let module = renderer
                .policy_module(reference, bundle, &configs)
                .await
                .map_err(|e| CliError {
                    // With Nickel's report of where the policy module broke.
                    detail: e.detail().map(str::to_string),
                    ..failed(&e)
                })?;
            if let Some(twin) = loaded.iter().find(|m| m.name == module.name) {
                return Err(failed(&format!(
                    "its name `{}` is also the name of {}",
                    module.name, twin.source
                )));
            }
            loaded.push(module);
        }
        if let Some(name) = configs
            .keys()
            .find(|n| loaded.iter().all(|m| &m.name != *n))
        {
            let names: Vec<&str> = loaded.iter().map(|m| m.name.as_str()).collect();
            return Err(CliError::new(
                exit::USAGE,
                format!(
                    "--policy-config {name}: no policy module is named {name} (loaded: {})",
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                ),
            ));
        }
        Ok(loaded)
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
