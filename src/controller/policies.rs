//! The cluster's policy modules (`--policy-module`), as the operator holds them: loaded
//! before the controllers start, loaded again at every `--module-resync` and whenever a
//! ConfigMap they come from changes. When what they are changes, every Transform is planned
//! again; one whose graph now breaks a policy keeps its graph and shows `Validated=False`.
//! While they cannot be loaded, no graph is planned (the policies are never skipped).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use serde_json::Value;

use crate::api::{ModuleRef, ModuleType};
use crate::module::{CommandLineRef, ModuleBundle, from_config_map, shipped_policy_module};
use crate::render::{PolicyModule, PolicyModulesError};

use super::Context;
use super::credentials::{Credentials, credentials, resolve_with};

/// The key of a policy module's configuration in a ConfigMap named by `--policy-config`.
pub const CONFIG_KEY: &str = "config.yaml";

/// What `pequod run` was told about policy modules.
#[derive(Clone, Debug, Default)]
pub struct PolicyFlags {
    /// `--policy-module` references, in order.
    pub modules: Vec<String>,
    /// `--policy-config NAME=SOURCE`: a file, or `configmap:NAME`.
    pub configs: Vec<(String, String)>,
    /// Where `configmap:` sources live: the operator's namespace.
    pub namespace: String,
    /// `--policy-pull-secret`: the Secret (in `namespace`) with the credentials of remote
    /// policy modules.
    pub pull_secret: Option<String>,
}

impl PolicyFlags {
    /// Whether a policy module or its configuration is read from a ConfigMap.
    pub fn reads_config_maps(&self) -> bool {
        self.modules
            .iter()
            .chain(self.configs.iter().map(|(_, source)| source))
            .any(|source| source.starts_with("configmap:"))
    }

    /// Whether a change of ConfigMap `namespace/name` changes the policy modules.
    pub fn reads_config_map(&self, namespace: &str, name: &str) -> bool {
        let named = |source: &str| source.strip_prefix("configmap:") == Some(name);
        namespace == self.namespace
            && (self.modules.iter().any(|m| named(m))
                || self.configs.iter().any(|(_, source)| named(source)))
    }
}

/// The policy modules could not be loaded: nothing is planned until they are.
#[derive(Clone, Debug, thiserror::Error)]
#[error("the cluster's policy modules cannot be loaded: {0}")]
pub struct PoliciesUnavailable(pub String);

/// The loaded policy modules, or why they are not.
#[derive(Clone, Debug)]
struct Loaded {
    modules: Result<Arc<Vec<PolicyModule>>, PoliciesUnavailable>,
    /// What plans depend on: every module's content and configuration.
    digest: String,
}

/// The cluster's policy modules, shared by every reconcile.
#[derive(Debug)]
pub struct ClusterPolicies {
    flags: PolicyFlags,
    loaded: RwLock<Loaded>,
}

impl ClusterPolicies {
    /// Policy modules of `flags`, not loaded yet.
    pub fn new(flags: PolicyFlags) -> ClusterPolicies {
        let pending = PoliciesUnavailable("not loaded yet".to_string());
        let loaded = if flags.modules.is_empty() {
            Loaded {
                modules: Ok(Arc::new(Vec::new())),
                digest: String::new(),
            }
        } else {
            Loaded {
                modules: Err(pending),
                digest: "unloaded".to_string(),
            }
        };
        ClusterPolicies {
            flags,
            loaded: RwLock::new(loaded),
        }
    }

    /// The policy modules as last loaded.
    pub fn current(&self) -> Result<Arc<Vec<PolicyModule>>, PoliciesUnavailable> {
        match self.loaded.read() {
            Ok(loaded) => loaded.modules.clone(),
            Err(poisoned) => poisoned.into_inner().modules.clone(),
        }
    }

    /// What the policy modules are: part of what every plan is made from.
    pub fn digest(&self) -> String {
        match self.loaded.read() {
            Ok(loaded) => loaded.digest.clone(),
            Err(poisoned) => poisoned.into_inner().digest.clone(),
        }
    }

    /// Loads the policy modules again; whether what they are changed. A failure replaces
    /// modules that loaded before only when it is not worth trying again (the source
    /// refused, the module is broken): a registry that is down keeps the last ones.
    pub async fn reload(&self, context: &Context) -> bool {
        if self.flags.modules.is_empty() {
            return false;
        }
        let loaded = match load(&self.flags, context).await {
            Ok(modules) => {
                let digest = digest_of(&modules);
                Loaded {
                    modules: Ok(Arc::new(modules)),
                    digest,
                }
            }
            Err(Failure { message, retryable }) => {
                tracing::warn!(%message, "cannot load the policy modules");
                if retryable && self.current().is_ok() {
                    return false;
                }
                Loaded {
                    digest: format!("failed: {message}"),
                    modules: Err(PoliciesUnavailable(message)),
                }
            }
        };
        let mut slot = match self.loaded.write() {
            Ok(slot) => slot,
            Err(poisoned) => poisoned.into_inner(),
        };
        let changed = slot.digest != loaded.digest;
        if changed && let Ok(modules) = &loaded.modules {
            let names: Vec<String> = modules
                .iter()
                .map(|m| format!("{} ({})", m.name, m.source))
                .collect();
            tracing::info!(modules = %names.join(", "), digest = %loaded.digest, "policy modules loaded");
        }
        *slot = loaded;
        changed
    }
}

/// Why loading (or having one module's files) failed, and whether trying again later may
/// help.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
struct Failure {
    message: String,
    retryable: bool,
}

fn digest_of(modules: &[PolicyModule]) -> String {
    let digests: Vec<String> = modules.iter().map(PolicyModule::digest).collect();
    digests.join(",")
}

async fn load(flags: &PolicyFlags, context: &Context) -> Result<Vec<PolicyModule>, Failure> {
    let config_maps: Api<ConfigMap> = Api::namespaced(context.client.clone(), &flags.namespace);
    let mut configs = BTreeMap::new();
    for (name, source) in &flags.configs {
        let config = read_config(source, &config_maps)
            .await
            .map_err(|(message, retryable)| Failure {
                message: format!("--policy-config {name}={source}: {message}"),
                retryable,
            })?;
        configs.insert(name.clone(), config);
    }
    let files = |reference: &str| {
        let reference = reference.to_string();
        let config_maps = &config_maps;
        async move {
            bundle(&reference, flags, config_maps, context)
                .await
                .map_err(|(message, retryable)| Failure { message, retryable })
        }
    };
    context
        .renderer
        .policy_modules(&flags.modules, &configs, files)
        .await
        .map_err(|error| Failure {
            retryable: match &error {
                PolicyModulesError::Source { error, .. } => error.retryable,
                PolicyModulesError::Module { error, .. } => !error.is_deterministic(),
                PolicyModulesError::SameName { .. } | PolicyModulesError::UnusedConfig { .. } => {
                    false
                }
            },
            message: error.to_string(),
        })
}

/// The files of the policy module `reference`, and on failure whether to try again.
async fn bundle(
    reference: &str,
    flags: &PolicyFlags,
    config_maps: &Api<ConfigMap>,
    context: &Context,
) -> Result<ModuleBundle, (String, bool)> {
    let parsed = CommandLineRef::parse(reference, None).map_err(|e| (e.to_string(), false))?;
    match parsed {
        CommandLineRef::Embedded(name) => {
            shipped_policy_module(&name).map_err(|e| (e.to_string(), false))
        }
        CommandLineRef::Directory(dir) => {
            ModuleBundle::from_dir(&dir, None).map_err(|e| (e.to_string(), false))
        }
        CommandLineRef::ConfigMap(name) => {
            let data = config_map(config_maps, &name, &flags.namespace).await?;
            let module_ref = ModuleRef {
                type_: ModuleType::Configmap,
                ref_: name,
                path: None,
                entrypoint: None,
                pull_secret_ref: None,
                digest: None,
            };
            from_config_map(&data, &module_ref)
                .map(|resolved| resolved.bundle)
                .map_err(|e| (e.to_string(), false))
        }
        CommandLineRef::Remote(module_ref) => {
            let found = match &flags.pull_secret {
                None => Credentials::None,
                Some(name) => {
                    let secrets = Api::namespaced(context.client.clone(), &flags.namespace);
                    credentials(&secrets, (name, "--policy-pull-secret"), module_ref.type_)
                        .await
                        .map_err(|message| (message, true))?
                }
            };
            resolve_with(context, &module_ref, found)
                .await
                .map(|resolved| resolved.bundle)
                .map_err(|e| (e.to_string(), e.is_retryable()))
        }
    }
}

/// The data of ConfigMap `name`; a missing one is not worth waiting for (its creation
/// reloads the policy modules).
async fn config_map(
    config_maps: &Api<ConfigMap>,
    name: &str,
    namespace: &str,
) -> Result<BTreeMap<String, String>, (String, bool)> {
    match config_maps.get_opt(name).await {
        Ok(Some(found)) => Ok(found.data.unwrap_or_default()),
        Ok(None) => Err((format!("ConfigMap {namespace}/{name} not found"), false)),
        Err(error) => Err((
            format!("cannot read ConfigMap {namespace}/{name}: {error}"),
            true,
        )),
    }
}

/// A policy module's configuration: the YAML (or JSON) of a file or of a ConfigMap's
/// `config.yaml`, read as kubectl reads YAML (as `pequod render --policy-config` does).
async fn read_config(source: &str, config_maps: &Api<ConfigMap>) -> Result<Value, (String, bool)> {
    let text = match source.strip_prefix("configmap:") {
        Some(name) => {
            let namespace = config_maps.namespace().unwrap_or_default().to_string();
            let mut data = config_map(config_maps, name, &namespace).await?;
            data.remove(CONFIG_KEY).ok_or_else(|| {
                (
                    format!("ConfigMap {namespace}/{name} has no key {CONFIG_KEY}"),
                    false,
                )
            })?
        }
        None => std::fs::read_to_string(source)
            .map_err(|e| (format!("cannot read {source}: {e}"), false))?,
    };
    let decoded =
        crate::api::yaml::from_str(&text).map_err(|e| (format!("invalid YAML: {e}"), false))?;
    for warning in &decoded.warnings {
        tracing::warn!(%source, "policy configuration: {warning}");
    }
    Ok(decoded.value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_config_maps_named_by_the_flags_reload_the_policies() {
        let flags = PolicyFlags {
            modules: vec!["configmap:house-rules".into(), "embedded:baseline".into()],
            configs: vec![("baseline".into(), "configmap:baseline-config".into())],
            namespace: "pequod-system".into(),
            pull_secret: None,
        };
        assert!(flags.reads_config_maps());
        assert!(
            !PolicyFlags {
                modules: vec!["embedded:baseline".into()],
                configs: vec![("baseline".into(), "/etc/baseline.yaml".into())],
                ..flags.clone()
            }
            .reads_config_maps()
        );
        assert!(flags.reads_config_map("pequod-system", "house-rules"));
        assert!(flags.reads_config_map("pequod-system", "baseline-config"));
        assert!(!flags.reads_config_map("team-a", "house-rules"));
        assert!(!flags.reads_config_map("pequod-system", "baseline"));
    }
}
