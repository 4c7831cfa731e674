//! Resolving a `moduleRef` to a bundle: embedded, inline and directory modules locally, OCI
//! artifacts from their registry through a cache keyed by manifest digest.

use std::collections::BTreeMap;
use std::path::Path;

use prometheus::IntCounter;

use super::git::GitError;
use super::oci::OciError;
use super::{BundleError, ModuleBundle, embedded_module, embedded_module_names};
use crate::api::condition::reasons;
use crate::api::{ModuleRef, ModuleType};
use crate::metrics::{self, Collectors};

/// Why a module reference could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// `embedded` names no shipped module.
    #[error("unknown embedded module `{name}` (available: {available})")]
    UnknownEmbedded {
        /// The requested name.
        name: String,
        /// The shipped modules.
        available: String,
    },
    /// The source type needs a fetcher this code path does not have.
    #[error(
        "module type `{0}` cannot be resolved here (supported: embedded, inline, oci, git, --module-dir)"
    )]
    Unsupported(ModuleType),
    /// The registry refused, did not have, or damaged the artifact.
    #[error(transparent)]
    Oci(#[from] super::oci::OciError),
    /// A Git URL on the operator's own disk, refused in the cluster.
    #[error(
        "git URL {0} is a local path: only https://, ssh:// and git:// URLs are allowed (the operator runs without --allow-local-git)"
    )]
    LocalGitRefused(String),
    /// The ConfigMap a `configmap` moduleRef names does not exist.
    #[error("ConfigMap {namespace}/{name} not found")]
    ConfigMapNotFound {
        /// Its namespace (the Transform's).
        namespace: String,
        /// Its name.
        name: String,
    },
    /// The Git repository could not be fetched or read.
    #[error(transparent)]
    Git(#[from] super::git::GitError),
    /// A concurrent fetch of the same module failed: its error, shared by every caller.
    #[error("{0}")]
    Shared(std::sync::Arc<SourceError>),
    /// The source could not be read for a reason of Pequod's own (an API call to read a
    /// ConfigMap failed, a fetch task died): worth trying again.
    #[error("{0}")]
    Unavailable(String),
    /// `moduleRef.path` names no directory of the artifact.
    #[error("moduleRef.path `{0}` is not a directory of the module artifact")]
    MissingPath(String),
    /// The files do not form a module.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// The module's origin is not in the operator's `--module-sources`.
    #[error("module source {origin} is not allowed by the operator (--module-sources {allowed})")]
    NotAllowed {
        /// The refused origin (`oci://…`, `git::…`, `inline`, …).
        origin: String,
        /// The allowed patterns, comma-separated.
        allowed: String,
    },
    /// The module's content is not the one `moduleRef.digest` pins.
    #[error("module digest {actual} does not match the pinned digest {expected}")]
    DigestMismatch {
        /// The pinned digest.
        expected: String,
        /// The digest of the content found.
        actual: String,
    },
}

impl SourceError {
    /// The reason of the `ModuleResolved=False` condition this error sets.
    pub fn reason(&self) -> &'static str {
        match self {
            SourceError::DigestMismatch { .. } => reasons::DIGEST_MISMATCH,
            SourceError::NotAllowed { .. } => reasons::SOURCE_NOT_ALLOWED,
            SourceError::Unsupported(_) => reasons::UNSUPPORTED_SOURCE,
            SourceError::UnknownEmbedded { .. }
            | SourceError::ConfigMapNotFound { .. }
            | SourceError::Oci(OciError::NotFound { .. }) => reasons::MODULE_NOT_FOUND,
            SourceError::Bundle(_) | SourceError::Git(GitError::Content { .. }) => {
                reasons::INVALID_MODULE
            }
            SourceError::MissingPath(_) | SourceError::Git(GitError::MissingPath { .. }) => {
                reasons::PATH_NOT_FOUND
            }
            SourceError::Oci(OciError::Reference { .. }) | SourceError::LocalGitRefused(_) => {
                reasons::INVALID_REFERENCE
            }
            SourceError::Oci(OciError::Unauthorized { .. }) => reasons::UNAUTHORIZED,
            SourceError::Oci(OciError::Malformed { .. }) => reasons::INVALID_ARTIFACT,
            SourceError::Oci(OciError::Registry { .. }) => reasons::REGISTRY_UNAVAILABLE,
            SourceError::Shared(error) => error.reason(),
            SourceError::Unavailable(_) => reasons::SOURCE_UNAVAILABLE,
            SourceError::Git(GitError::Fetch { .. } | GitError::Cache { .. }) => {
                reasons::FETCH_FAILED
            }
            SourceError::Git(GitError::UnknownRevision { .. }) => reasons::REVISION_NOT_FOUND,
        }
    }

    /// Whether trying again later may help without a change of the Transform: a registry
    /// or Git server that was down, credentials that were fixed, content fixed upstream. A
    /// missing ConfigMap is not: its creation wakes the Transform.
    pub fn is_retryable(&self) -> bool {
        match self {
            SourceError::Shared(error) => error.is_retryable(),
            SourceError::DigestMismatch { .. }
            | SourceError::NotAllowed { .. }
            | SourceError::Unsupported(_)
            | SourceError::UnknownEmbedded { .. }
            | SourceError::Bundle(_)
            | SourceError::MissingPath(_)
            | SourceError::Oci(OciError::Reference { .. })
            | SourceError::LocalGitRefused(_)
            | SourceError::ConfigMapNotFound { .. } => false,
            SourceError::Oci(_) | SourceError::Git(_) | SourceError::Unavailable(_) => true,
        }
    }
}

/// Resolves embedded and inline references, or loads `module_dir` when given (which then
/// replaces the reference), honouring `entrypoint` and the `digest` pin.
pub fn resolve_local(
    module_ref: &ModuleRef,
    module_dir: Option<&Path>,
) -> Result<ModuleBundle, SourceError> {
    let entrypoint = module_ref.entrypoint.as_deref();
    let bundle = match (module_dir, module_ref.type_) {
        (Some(dir), _) => ModuleBundle::from_dir(dir, entrypoint)?,
        (None, ModuleType::Embedded) => {
            let shipped =
                embedded_module(&module_ref.ref_).ok_or_else(|| SourceError::UnknownEmbedded {
                    name: module_ref.ref_.clone(),
                    available: embedded_module_names().join(", "),
                })?;
            match entrypoint {
                Some(entry) if entry != shipped.entrypoint() => {
                    ModuleBundle::new(shipped.files().clone(), Some(entry))?
                }
                _ => shipped.clone(),
            }
        }
        (None, ModuleType::Inline) => {
            let name = entrypoint.unwrap_or("main.ncl").to_string();
            ModuleBundle::new(
                BTreeMap::from([(name.clone(), module_ref.ref_.clone())]),
                Some(&name),
            )?
        }
        (None, other) => return Err(SourceError::Unsupported(other)),
    };
    check_pin(module_ref, bundle.digest())?;
    Ok(bundle)
}

/// Refuses a resolved `digest` that is not the one `moduleRef.digest` pins, when it pins one.
fn check_pin(module_ref: &ModuleRef, digest: &str) -> Result<(), SourceError> {
    match &module_ref.digest {
        Some(expected) if expected != digest => Err(SourceError::DigestMismatch {
            expected: expected.clone(),
            actual: digest.to_string(),
        }),
        _ => Ok(()),
    }
}

/// A resolved module: its files and the digest that pins it (the manifest digest of an OCI
/// artifact, the content digest of the bundle otherwise).
#[derive(Clone, Debug)]
pub struct Resolved {
    /// The module's files.
    pub bundle: ModuleBundle,
    /// The digest a `moduleRef.digest` pin is compared with, shown in `status.resolvedModule`.
    pub digest: String,
    /// Set when the source could not be reached or failed and a copy of a pinned commit or
    /// digest was served without its word: `served from the mirror: <the fetch error>` (Git),
    /// `served from the module cache: <the registry error>` (OCI).
    pub stale: Option<String>,
}

impl Resolved {
    /// What the `ModuleResolved` condition says of it: the type and digest, and the note of
    /// a copy served without its source (`git 0123…:postgres (served from the mirror: …)`).
    pub fn summary(&self, type_: ModuleType) -> String {
        match &self.stale {
            Some(note) => format!("{type_} {} ({note})", self.digest),
            None => format!("{type_} {}", self.digest),
        }
    }
}

/// Fetched OCI modules by manifest digest (bounded, shared by every Transform), with
/// concurrent fetches of one digest coalesced into one pull.
#[derive(Clone)]
pub struct ModuleCache {
    bundles: moka::future::Cache<String, std::sync::Arc<ModuleBundle>>,
    stats: ModuleCacheStats,
    disk: Option<super::disk::DiskCache>,
}

/// The module cache's metrics, counted where the events happen.
#[derive(Clone, Debug)]
pub struct ModuleCacheStats {
    /// Modules served from the cache (memory or disk), without a pull.
    pub hits: IntCounter,
    /// Modules pulled from their registry.
    pub misses: IntCounter,
    /// Modules evicted from memory to stay within the budget.
    pub evictions: IntCounter,
}

impl Default for ModuleCacheStats {
    fn default() -> Self {
        ModuleCacheStats {
            hits: metrics::counter(
                "module_cache_hits_total",
                "Module bundles served from the module cache",
            ),
            misses: metrics::counter(
                "module_cache_misses_total",
                "Module bundles fetched because the module cache did not have them",
            ),
            evictions: metrics::counter(
                "module_cache_evictions_total",
                "Module bundles evicted from the module cache",
            ),
        }
    }
}

impl ModuleCacheStats {
    /// The counters, for the operator's registry.
    pub fn collectors(&self) -> Collectors {
        vec![
            Box::new(self.hits.clone()),
            Box::new(self.misses.clone()),
            Box::new(self.evictions.clone()),
        ]
    }
}

impl ModuleCache {
    /// A cache of at most about `bytes` of module files.
    pub fn new(bytes: u64) -> ModuleCache {
        let stats = ModuleCacheStats::default();
        let counter = stats.evictions.clone();
        let bundles = moka::future::Cache::builder()
            .weigher(|_: &String, bundle: &std::sync::Arc<ModuleBundle>| {
                let size: usize = bundle.files().iter().map(|(k, v)| k.len() + v.len()).sum();
                u32::try_from(size).unwrap_or(u32::MAX)
            })
            .max_capacity(bytes)
            .eviction_listener(move |_, _, cause| {
                if cause.was_evicted() {
                    counter.inc();
                }
            })
            .build();
        ModuleCache {
            bundles,
            stats,
            disk: None,
        }
    }

    /// The same, backed by a disk cache that outlives the process.
    pub fn with_disk(self, disk: super::disk::DiskCache) -> ModuleCache {
        ModuleCache {
            disk: Some(disk),
            ..self
        }
    }

    /// The cache's metrics.
    pub fn stats(&self) -> &ModuleCacheStats {
        &self.stats
    }

    /// The module under `key` (`repository@digest`), from memory or the disk cache, pulled
    /// from `registry` when neither has it; concurrent calls for one key are one pull.
    async fn get_or_pull(
        &self,
        key: String,
        registry: &super::oci::Registry,
    ) -> Result<std::sync::Arc<ModuleBundle>, SourceError> {
        let fetched = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = fetched.clone();
        let disk = self.disk.clone();
        let bundle = self
            .bundles
            .try_get_with(key.clone(), async move {
                if let Some(bundle) = load(disk.clone(), key.clone()).await {
                    return Ok(std::sync::Arc::new(bundle));
                }
                flag.store(true, std::sync::atomic::Ordering::Relaxed);
                let pulled = registry.pull(&key).await?;
                let bundle = ModuleBundle::new(pulled.files, Some(&pulled.config.entrypoint))?;
                if let Some(disk) = disk {
                    let stored = bundle.clone();
                    let _ = tokio::task::spawn_blocking(move || disk.store(&key, &stored)).await;
                }
                Ok::<_, SourceError>(std::sync::Arc::new(bundle))
            })
            .await
            .map_err(|error| match std::sync::Arc::try_unwrap(error) {
                Ok(error) => error,
                Err(shared) => SourceError::Shared(shared),
            })?;
        let counter = if fetched.load(std::sync::atomic::Ordering::Relaxed) {
            &self.stats.misses
        } else {
            &self.stats.hits
        };
        counter.inc();
        Ok(bundle)
    }

    /// Keeps `bundle` in memory under `key`: a module whose source holds only its current
    /// content (a ConfigMap), for the Transforms a staged rollout keeps on this version.
    pub async fn keep(&self, key: &str, bundle: &ModuleBundle) {
        if !self.bundles.contains_key(key) {
            self.bundles
                .insert(key.to_string(), std::sync::Arc::new(bundle.clone()))
                .await;
        }
    }

    /// The module kept under `key`, while memory holds it.
    pub async fn kept(&self, key: &str) -> Option<std::sync::Arc<ModuleBundle>> {
        self.bundles.get(key).await
    }

    /// The module under `key` when memory or the disk cache has it, without the registry.
    async fn stored(&self, key: &str) -> Option<std::sync::Arc<ModuleBundle>> {
        let bundle = match self.bundles.get(key).await {
            Some(bundle) => bundle,
            None => {
                let bundle = std::sync::Arc::new(load(self.disk.clone(), key.to_string()).await?);
                self.bundles.insert(key.to_string(), bundle.clone()).await;
                bundle
            }
        };
        self.stats.hits.inc();
        Some(bundle)
    }
}

/// The module under `key` in the disk cache, if there is one and it has it.
async fn load(disk: Option<super::disk::DiskCache>, key: String) -> Option<ModuleBundle> {
    let disk = disk?;
    tokio::task::spawn_blocking(move || disk.load(&key))
        .await
        .ok()
        .flatten()
}

/// What resolving remote modules needs: a registry client, the module cache, a directory
/// for Git mirrors, and Git credentials.
pub struct Sources<'a> {
    /// The OCI registry client (with the caller's credentials).
    pub registry: &'a super::oci::Registry,
    /// Fetched modules by digest.
    pub cache: &'a ModuleCache,
    /// Where Git mirrors live.
    pub cache_dir: &'a Path,
    /// Credentials for Git.
    pub git_auth: super::git::GitAuth,
    /// Whether Git URLs may be local paths or `file://` (the CLI; in the operator only with
    /// `--allow-local-git`, since they would read the operator's own disk).
    pub allow_local_git: bool,
}

/// Resolves any `moduleRef`: local sources as [`resolve_local`]; OCI artifacts with the
/// registry (the reference is resolved to its current digest with the caller's
/// credentials every time, so access is checked; the files come from the cache when it has
/// that digest); Git repositories through their mirror (fetched every time, incrementally;
/// the digest is the commit, plus the path). `path` selects a sub-directory; the `digest`
/// pin is compared with the resolved digest. A source that cannot be reached or fails (not
/// one that refuses) does not stop a pinned module the cache or mirror has: a digest or full
/// commit SHA named by the reference or the pin is served from there, with
/// [`Resolved::stale`] saying why; tags and branches are not.
pub async fn resolve(
    module_ref: &ModuleRef,
    module_dir: Option<&Path>,
    sources: &Sources<'_>,
) -> Result<Resolved, SourceError> {
    let resolved = match (module_dir, module_ref.type_) {
        (None, ModuleType::Git) => resolve_git(module_ref, sources).await?,
        (None, ModuleType::Oci) => resolve_oci(module_ref, sources).await?,
        _ => {
            let bundle = resolve_local(module_ref, module_dir)?;
            let digest = bundle.digest().to_string();
            return Ok(Resolved {
                bundle,
                digest,
                stale: None,
            });
        }
    };
    if let Some(note) = &resolved.stale {
        tracing::warn!(digest = %resolved.digest, "{note}");
    }
    Ok(resolved)
}

async fn resolve_oci(
    module_ref: &ModuleRef,
    sources: &Sources<'_>,
) -> Result<Resolved, SourceError> {
    let repository = module_ref
        .ref_
        .split_once('@')
        .map_or_else(|| strip_tag(&module_ref.ref_), |(repo, _)| repo.to_string());
    // Keyed by repository and digest: a copy is served only to a caller that the registry
    // just let see that digest in that repository, or, when the registry could not be
    // reached or failed, for the digest the caller pinned.
    let (digest, stored) = match sources.registry.resolve(&module_ref.ref_).await {
        Ok(digest) => (digest, None),
        Err(error @ OciError::Registry { .. }) => {
            let pinned = module_ref
                .ref_
                .split_once('@')
                .map(|(_, digest)| digest)
                .or(module_ref.digest.as_deref());
            let Some(digest) = pinned else {
                return Err(error.into());
            };
            let Some(bundle) = sources
                .cache
                .stored(&format!("{repository}@{digest}"))
                .await
            else {
                return Err(error.into());
            };
            let note = format!("served from the module cache: {error}");
            (digest.to_string(), Some((bundle, note)))
        }
        Err(error) => return Err(error.into()),
    };
    check_pin(module_ref, &digest)?;
    let (bundle, stale) = match stored {
        Some((bundle, note)) => (bundle, Some(note)),
        None => {
            let key = format!("{repository}@{digest}");
            (
                sources.cache.get_or_pull(key, sources.registry).await?,
                None,
            )
        }
    };
    let bundle = select(
        &bundle,
        module_ref.path.as_deref(),
        module_ref.entrypoint.as_deref(),
    )?;
    Ok(Resolved {
        bundle,
        digest,
        stale,
    })
}

async fn resolve_git(
    module_ref: &ModuleRef,
    sources: &Sources<'_>,
) -> Result<Resolved, SourceError> {
    let reference = super::git::GitRef::parse(&module_ref.ref_, module_ref.path.as_deref());
    if !sources.allow_local_git && reference.is_local() {
        return Err(SourceError::LocalGitRefused(reference.url));
    }
    let (auth, dir) = (sources.git_auth.clone(), sources.cache_dir.to_path_buf());
    let (wanted, pin) = (reference.clone(), module_ref.digest.clone());
    let checkout = tokio::task::spawn_blocking(move || {
        super::git::fetch(&wanted, pin.as_deref(), &auth, &dir)
    })
    .await
    .map_err(|e| SourceError::Unavailable(format!("git fetch task failed: {e}")))??;
    let digest = match &reference.path {
        Some(path) => format!("{}:{path}", checkout.commit),
        None => checkout.commit.clone(),
    };
    check_pin(module_ref, &digest)?;
    // The mirror is the cache: the files were just read from it.
    let bundle = ModuleBundle::new(checkout.files, module_ref.entrypoint.as_deref())?;
    Ok(Resolved {
        bundle,
        digest,
        stale: checkout.stale,
    })
}

/// `registry/repo:tag` → `registry/repo` (a port's colon is not a tag's).
fn strip_tag(reference: &str) -> String {
    match reference.rsplit_once(':') {
        Some((repository, tag)) if !tag.contains('/') => repository.to_string(),
        _ => reference.to_string(),
    }
}

/// The module in `path` of a bundle (its files re-rooted there), with `entrypoint`.
fn select(
    bundle: &ModuleBundle,
    path: Option<&str>,
    entrypoint: Option<&str>,
) -> Result<ModuleBundle, SourceError> {
    let path = path.map(|p| p.trim_matches('/')).filter(|p| !p.is_empty());
    match (path, entrypoint) {
        (None, None) => Ok(bundle.clone()),
        (None, Some(entry)) => Ok(ModuleBundle::new(bundle.files().clone(), Some(entry))?),
        (Some(path), entry) => {
            let prefix = format!("{path}/");
            let files: BTreeMap<String, String> = bundle
                .files()
                .iter()
                .filter_map(|(name, source)| {
                    name.strip_prefix(&prefix)
                        .map(|rest| (rest.to_string(), source.clone()))
                })
                .collect();
            if files.is_empty() {
                return Err(SourceError::MissingPath(path.to_string()));
            }
            Ok(ModuleBundle::new(files, entry)?)
        }
    }
}

/// The module held by a ConfigMap: its `data` keys are the file names. The digest is a
/// sha256 over the sorted keys and values (not the uid: an edit changes it).
pub fn from_config_map(
    data: &BTreeMap<String, String>,
    module_ref: &ModuleRef,
) -> Result<Resolved, SourceError> {
    let parts = data
        .iter()
        .flat_map(|(key, value)| [key.as_str(), value.as_str()]);
    let digest = format!("sha256:{}", crate::digest::framed(parts));
    check_pin(module_ref, &digest)?;
    let bundle = ModuleBundle::new(data.clone(), module_ref.entrypoint.as_deref())?;
    Ok(Resolved {
        bundle,
        digest,
        stale: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_says_when_a_copy_was_served_without_its_source() {
        let files = BTreeMap::from([("main.ncl".to_string(), "{}".to_string())]);
        let digest = format!("{}:postgres", "a".repeat(40));
        let fresh = Resolved {
            bundle: ModuleBundle::new(files, None).expect("a bundle"),
            digest: digest.clone(),
            stale: None,
        };
        assert_eq!(fresh.summary(ModuleType::Git), format!("git {digest}"));
        let note = "served from the mirror: git fetch of git://git.example.com/p.git failed: failed to connect to git.example.com: Connection refused";
        let stale = Resolved {
            stale: Some(note.to_string()),
            ..fresh
        };
        assert_eq!(
            stale.summary(ModuleType::Git),
            format!("git {digest} ({note})")
        );
    }

    #[test]
    fn a_shared_fetch_failure_keeps_its_reason() {
        let refused = || {
            SourceError::Oci(OciError::Unauthorized {
                registry: "registry.example.com".to_string(),
                message: "denied".to_string(),
            })
        };
        let shared = SourceError::Shared(std::sync::Arc::new(refused()));
        assert_eq!(shared.reason(), refused().reason());
        assert_eq!(
            (shared.reason(), shared.is_retryable()),
            (reasons::UNAUTHORIZED, true)
        );
        assert_eq!(shared.to_string(), refused().to_string());
        let unreadable = SourceError::Unavailable("cannot read ConfigMap a/b: timeout".into());
        assert_eq!(
            (unreadable.reason(), unreadable.is_retryable()),
            (reasons::SOURCE_UNAVAILABLE, true)
        );
    }
}
