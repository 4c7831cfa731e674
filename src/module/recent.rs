//! Modules resolved from a registry or a Git server in the last `--module-resync`.
//!
//! A Transform is reconciled for many reasons that say nothing about its module: a relist
//! of the watch, an edit of its input, its graph becoming Ready. Asking the registry (and
//! reading the pull secret) on each would make a fleet's resync a storm of manifest
//! requests. A resolution is therefore reused for `--module-resync`, the time after which
//! a tag or a branch is looked at again anyway. The key holds everything that decides the
//! answer, the credentials included (the pull secret's namespace and name), so a Transform
//! is only ever served what its own credentials resolved.

use std::time::Duration;

use moka::future::Cache;

use super::Resolved;
use crate::api::ModuleRef;

/// Resolutions this many Transforms' module references can be kept for (each is one
/// module's files, shared by every Transform with the same reference and credentials).
const MAX_ENTRIES: u64 = 4096;

/// Recent resolutions of remote modules, by reference and credentials.
#[derive(Clone)]
pub struct RecentResolutions {
    cache: Cache<String, Resolved>,
}

impl RecentResolutions {
    /// Resolutions kept for `ttl` (`--module-resync`).
    pub fn new(ttl: Duration) -> RecentResolutions {
        RecentResolutions {
            cache: Cache::builder()
                .max_capacity(MAX_ENTRIES)
                .time_to_live(ttl)
                .build(),
        }
    }

    /// What `module_ref`, referenced from `namespace` (where its pull secret is), resolved
    /// to less than `--module-resync` ago.
    pub async fn get(&self, module_ref: &ModuleRef, namespace: &str) -> Option<Resolved> {
        self.cache.get(&key(module_ref, namespace)).await
    }

    /// Remembers a resolution. A copy served without its source's word (`stale`) is not
    /// remembered: the source is asked again at the next reconcile.
    pub async fn insert(&self, module_ref: &ModuleRef, namespace: &str, resolved: &Resolved) {
        if resolved.stale.is_none() {
            self.cache
                .insert(key(module_ref, namespace), resolved.clone())
                .await;
        }
    }
}

/// Everything that decides a resolution: the reference and, with a pull secret, whose
/// credentials (anonymous resolutions are the same for every namespace).
fn key(module_ref: &ModuleRef, namespace: &str) -> String {
    let credentials = module_ref
        .pull_secret_ref
        .as_ref()
        .map(|secret| format!("{namespace}/{}", secret.name))
        .unwrap_or_default();
    // Fields are separated by a byte none of them may hold.
    [
        module_ref.type_.to_string().as_str(),
        module_ref.ref_.as_str(),
        module_ref.path.as_deref().unwrap_or(""),
        module_ref.entrypoint.as_deref().unwrap_or(""),
        module_ref.digest.as_deref().unwrap_or(""),
        credentials.as_str(),
    ]
    .join("\0")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{LocalObjectReference, ModuleType};
    use crate::module::resolve_local;

    fn oci(reference: &str, secret: Option<&str>) -> ModuleRef {
        ModuleRef {
            type_: ModuleType::Oci,
            ref_: reference.to_string(),
            path: None,
            entrypoint: None,
            pull_secret_ref: secret.map(|name| LocalObjectReference {
                name: name.to_string(),
            }),
            digest: None,
        }
    }

    fn resolved(stale: Option<&str>) -> Resolved {
        let module_ref = ModuleRef {
            type_: ModuleType::Embedded,
            ..oci("webservice", None)
        };
        let bundle = resolve_local(&module_ref, None).expect("embedded module");
        Resolved {
            digest: "sha256:abc".to_string(),
            bundle,
            stale: stale.map(str::to_string),
        }
    }

    const TAG: &str = "registry.example/platform/webservice:1.0";

    #[tokio::test]
    async fn a_resolution_is_served_only_for_the_same_reference_and_credentials() {
        let recent = RecentResolutions::new(Duration::from_secs(300));
        let with_secret = oci(TAG, Some("pull"));
        recent.insert(&with_secret, "team-a", &resolved(None)).await;
        assert!(recent.get(&with_secret, "team-a").await.is_some());
        // The same secret name in another namespace is another tenant's credentials.
        assert!(recent.get(&with_secret, "team-b").await.is_none());
        assert!(recent.get(&oci(TAG, None), "team-a").await.is_none());
        assert!(
            recent
                .get(&oci(TAG, Some("other")), "team-a")
                .await
                .is_none()
        );
        let other_tag = oci("registry.example/platform/webservice:1.1", Some("pull"));
        assert!(recent.get(&other_tag, "team-a").await.is_none());
        let mut pinned = with_secret.clone();
        pinned.digest = Some("sha256:abc".to_string());
        assert!(recent.get(&pinned, "team-a").await.is_none());
        let mut elsewhere = with_secret.clone();
        elsewhere.path = Some("modules/web".to_string());
        assert!(recent.get(&elsewhere, "team-a").await.is_none());
    }

    #[tokio::test]
    async fn an_anonymous_resolution_serves_every_namespace() {
        let recent = RecentResolutions::new(Duration::from_secs(300));
        let anonymous = oci(TAG, None);
        recent.insert(&anonymous, "team-a", &resolved(None)).await;
        assert!(recent.get(&anonymous, "team-b").await.is_some());
    }

    #[tokio::test]
    async fn a_copy_served_without_its_source_is_not_remembered() {
        let recent = RecentResolutions::new(Duration::from_secs(300));
        let reference = oci("registry.example/platform/webservice@sha256:abc", None);
        let stale = resolved(Some("served from the module cache: connection refused"));
        recent.insert(&reference, "team-a", &stale).await;
        assert!(recent.get(&reference, "team-a").await.is_none());
    }
}
