//! Module bundles: the files of one platform module held in memory with a content digest,
//! and the sources they come from (embedded in the binary, inline, a directory on disk).
//! Remote sources (OCI, Git, ConfigMap) resolve to the same [`ModuleBundle`].

mod allowlist;
mod bounded;
mod bundle;
pub mod disk;
mod embedded;
pub mod git;
pub mod oci;
mod recent;
mod reference;
mod source;
mod token;

pub use allowlist::{BadPattern, ModuleSources};
pub use bundle::{BundleError, MAX_BUNDLE_BYTES, ModuleBundle};
pub use embedded::{
    LIBRARY_PREFIX, UnknownPolicyModule, embedded_module, embedded_module_names,
    embedded_policy_module_names, library_files, shipped_policy_module,
};
pub use recent::RecentResolutions;
pub use reference::{CommandLineRef, CommandLineRefError};
pub use source::{
    ModuleCache, Resolved, SourceError, Sources, from_config_map, resolve, resolve_local,
};
