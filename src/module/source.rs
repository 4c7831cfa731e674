//! Resolving a `moduleRef` to a bundle for the sources that need no network or cluster.

use std::path::Path;

use super::{BundleError, ModuleBundle, embedded_module, embedded_module_names};
use crate::api::{ModuleRef, ModuleType};

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
        "module type `{0}` cannot be resolved here (supported: embedded, inline, --module-dir)"
    )]
    Unsupported(ModuleType),
    /// The files do not form a module.
    #[error(transparent)]
    Bundle(#[from] BundleError),
}

/// Resolves embedded and inline references, or loads `module_dir` when given (which then
/// replaces the reference).
pub fn resolve_local(
    module_ref: &ModuleRef,
    module_dir: Option<&Path>,
) -> Result<ModuleBundle, SourceError> {
    let entrypoint = module_ref.entrypoint.as_deref();
    if let Some(dir) = module_dir {
        return Ok(ModuleBundle::from_dir(dir, entrypoint)?);
    }
    match module_ref.type_ {
        ModuleType::Embedded => {
            embedded_module(&module_ref.ref_)
                .cloned()
                .ok_or_else(|| SourceError::UnknownEmbedded {
                    name: module_ref.ref_.clone(),
                    available: embedded_module_names().join(", "),
                })
        }
        ModuleType::Inline => Ok(ModuleBundle::inline(&module_ref.ref_)?),
        other => Err(SourceError::Unsupported(other)),
    }
}
