//! Credentials for remote modules, read from a Secret: a Transform's `pullSecretRef` (in its
//! namespace) or the operator's `--policy-pull-secret` (in the operator's).

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;

use super::Context;
use crate::api::{ModuleRef, ModuleType};
use crate::module::git::GitAuth;
use crate::module::oci::Registry;
use crate::module::{Resolved, SourceError, Sources, resolve};

/// Credentials for one module source.
pub enum Credentials {
    /// None given.
    None,
    /// A docker config (`kubernetes.io/dockerconfigjson`), for OCI.
    DockerConfig(serde_json::Value),
    /// Basic auth, a token or an SSH key, for Git.
    Git(GitAuth),
}

/// The credentials in Secret `name` of `secrets`' namespace for a module of `type_`: Git
/// auth for Git, a docker config for OCI; what is wrong with it, otherwise (`named_by`: the
/// field or flag that named the Secret, for the message).
pub async fn credentials(
    secrets: &Api<Secret>,
    (name, named_by): (&str, &str),
    type_: ModuleType,
) -> Result<Credentials, String> {
    let shown = format!("Secret {}/{name}", secrets.namespace().unwrap_or_default());
    let secret = secrets
        .get_opt(name)
        .await
        .map_err(|e| format!("cannot read {shown}: {e}"))?
        .ok_or_else(|| format!("{named_by}: {shown} not found"))?;
    let data = secret.data.unwrap_or_default();
    let text = |key: &str| {
        data.get(key)
            .map(|bytes| String::from_utf8_lossy(&bytes.0).into_owned())
    };
    if type_ == ModuleType::Git {
        let auth = GitAuth::from_secret_data(text).map_err(|lack| format!("{shown} {lack}"))?;
        return Ok(Credentials::Git(auth));
    }
    let config = text(".dockerconfigjson").ok_or_else(|| {
        format!("{shown} has no .dockerconfigjson (type kubernetes.io/dockerconfigjson)")
    })?;
    serde_json::from_str(&config)
        .map(Credentials::DockerConfig)
        .map_err(|e| format!("{shown}: .dockerconfigjson is not JSON: {e}"))
}

/// Resolves the OCI or Git `module_ref` with `credentials`: a registry client with their
/// docker config, or their Git auth (else the operator's anonymous client).
pub async fn resolve_with(
    context: &Context,
    module_ref: &ModuleRef,
    credentials: Credentials,
) -> Result<Resolved, SourceError> {
    let with_secret;
    let (registry, git_auth) = match credentials {
        Credentials::DockerConfig(config) => {
            with_secret = Registry::new(&context.config.insecure_registries, Some(config));
            (&with_secret, GitAuth::Anonymous)
        }
        Credentials::Git(auth) => (&context.registry, auth),
        Credentials::None => (&context.registry, GitAuth::Anonymous),
    };
    let sources = Sources {
        registry,
        cache: &context.modules,
        cache_dir: &context.config.cache_dir,
        git_auth,
        allow_local_git: context.config.allow_local_git,
    };
    resolve(module_ref, None, &sources).await
}
