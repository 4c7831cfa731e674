//! Resolving a `moduleRef` to a bundle for the sources that need no network or cluster.

use std::collections::BTreeMap;
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
    /// The module's content is not the one `moduleRef.digest` pins.
    #[error("module digest {actual} does not match the pinned digest {expected}")]
    DigestMismatch {
        /// The pinned digest.
        expected: String,
        /// The digest of the content found.
        actual: String,
    },
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
    match &module_ref.digest {
        Some(expected) if expected != bundle.digest() => Err(SourceError::DigestMismatch {
            expected: expected.clone(),
            actual: bundle.digest().to_string(),
        }),
        _ => Ok(bundle),
    }
}
