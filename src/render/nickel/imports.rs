//! The import policy: a module reads its own files and the `pequod/` library, nothing else.
//!
//! Nickel would read any file an import names. Two checks enforce the policy: a static walk of
//! every module and library file before anything is resolved (precise, with locations), and
//! after Nickel resolved the imports, a check that every file it loaded is a known one, which
//! also covers syntax the walk cannot see.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::path::{Component, Path, PathBuf};

use nickel_lang_core::ast::{Ast, AstAlloc, Import, InputFormat, Node};
use nickel_lang_core::cache::{CacheHub, SourcePath};
use nickel_lang_core::error::Error as NickelError;
use nickel_lang_core::files::FileId;
use nickel_lang_core::traverse::{TraverseAlloc, TraverseControl};

use super::diagnostics::{failure, location, shorten_paths};
use super::{LIB_ROOT, MODULE_ROOT};
use crate::render::error::{EvalFailure, FailureKind};

/// Refuses, with its location, the first import of `nickel_files` that is not a file of the
/// module (relative to the importing file) or of the library, in the format it is imported
/// as: absolute paths, `..` escapes, package imports and unknown files.
pub(super) fn check(cache: &CacheHub, nickel_files: &[FileId]) -> Result<(), EvalFailure> {
    for &file in nickel_files {
        let alloc = AstAlloc::new();
        let ast = cache.sources.parse_nickel(&alloc, file).map_err(|errors| {
            failure(
                cache.sources.files().clone(),
                NickelError::ParseErrors(errors),
                None,
            )
        })?;
        let importer = PathBuf::from(cache.sources.name(file));
        let mut refused: Option<(String, Option<usize>)> = None;
        ast.traverse_ref(
            &mut |node: &Ast, _: &()| {
                if refused.is_some() {
                    return TraverseControl::<(), ()>::SkipBranch;
                }
                if let Node::Import(import) = &node.node {
                    let reason = match import {
                        Import::Package { id } => {
                            Some(format!("package import `{}` is not allowed", id.label()))
                        }
                        Import::Path { path, format } => refusal(cache, &importer, path, *format),
                    };
                    if let Some(reason) = reason {
                        let offset = node.pos.as_opt_ref().map(|span| span.start.to_usize());
                        refused = Some((reason, offset));
                    }
                }
                TraverseControl::Continue
            },
            &(),
        );
        if let Some((reason, offset)) = refused {
            let files = cache.sources.files();
            return Err(EvalFailure {
                location: offset.map(|o| location(files, file, o)),
                ..EvalFailure::new(FailureKind::ForbiddenImport, reason)
            });
        }
    }
    Ok(())
}

/// Refuses evaluation when Nickel loaded a file that is not one of `known`: an import the
/// static walk could not see reached the real file system.
pub(super) fn ensure_only_known(
    cache: &CacheHub,
    known: &HashSet<FileId>,
) -> Result<(), EvalFailure> {
    let mut outside: Vec<String> = cache
        .sources
        .file_paths
        .iter()
        .filter(|(id, _)| !known.contains(id))
        .filter_map(|(_, path)| match path {
            SourcePath::Path(path, _) => Some(shorten_paths(&path.display().to_string())),
            _ => None,
        })
        .collect();
    outside.sort();
    match outside.first() {
        None => Ok(()),
        Some(path) => Err(EvalFailure::new(
            FailureKind::ForbiddenImport,
            format!(
                "import `{path}` does not refer to a file of the module or of the pequod library"
            ),
        )),
    }
}

fn refusal(
    cache: &CacheHub,
    importer: &Path,
    target: &OsStr,
    format: InputFormat,
) -> Option<String> {
    let target = Path::new(target);
    let shown = target.display();
    if target.is_absolute() {
        return Some(format!("absolute import `{shown}` is not allowed"));
    }
    let dir = importer.parent().unwrap_or(Path::new(MODULE_ROOT));
    let root = if importer.starts_with(LIB_ROOT) {
        LIB_ROOT
    } else {
        MODULE_ROOT
    };
    let candidates = [
        normalize(&dir.join(target)).filter(|c| c.starts_with(root)),
        normalize(&Path::new(LIB_ROOT).join(target)).filter(|c| c.starts_with(LIB_ROOT)),
    ];
    let known = candidates.iter().flatten().any(|candidate| {
        cache
            .sources
            .id_of(&SourcePath::Path(candidate.clone(), format))
            .is_some()
    });
    if known {
        None
    } else {
        Some(format!(
            "import `{shown}` does not refer to a file of the module or of the pequod library"
        ))
    }
}

/// Lexical normalization; `None` when `..` climbs above the root.
fn normalize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                if !out.pop() || out.as_os_str().is_empty() {
                    return None;
                }
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    Some(out)
}
