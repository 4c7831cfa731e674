//! The import policy: a module reads its own files and the `pequod/` library, nothing else.
//!
//! Every file a module may import is registered in Nickel's cache from memory under its
//! virtual path (see [`super::VFS_ROOT`]). Nickel itself would read any other path an import
//! names from disk, and has no hook to stop it, so no such import may ever reach it: before
//! anything is resolved, a static walk of every module and library file refuses, with its
//! location, any import that is not a file registered in memory. The walk covers the syntax
//! Nickel's own traversal skips (let-binding patterns, record `include`s), and a lexical check
//! proves it complete: every `import` keyword of a file must lie in an import the walk saw.
//! A forbidden path and a missing one are refused alike, and neither is ever opened or even
//! looked up on disk (Nickel still looks up allowed library imports in the importing file's
//! directory first: a path under `VFS_ROOT`, which does not exist). After Nickel resolved the
//! imports, a last check refuses any file it loaded that is not a registered one.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::path::{Component, Path, PathBuf};

use nickel_lang_core::ast::pattern::Pattern;
use nickel_lang_core::ast::{Annotation, Ast, AstAlloc, Import, InputFormat, Node};
use nickel_lang_core::cache::{CacheHub, SourcePath};
use nickel_lang_core::error::Error as NickelError;
use nickel_lang_core::files::FileId;
use nickel_lang_core::parser::lexer::{Lexer, NormalToken, Token};
use nickel_lang_core::position::TermPos;
use nickel_lang_core::traverse::{TraverseAlloc, TraverseControl};

use super::diagnostics::{failure, location, shorten_paths};
use super::{LIB_ROOT, MODULE_ROOT};
use crate::render::error::{EvalFailure, FailureKind};

/// The one message for an import path that is not a file of the module or of the library:
/// absolute, escaping with `..`, missing, or in another format than the file's.
pub(super) fn not_a_module_file(import: &str) -> String {
    format!("import `{import}` does not refer to a file of the module or of the pequod library")
}

/// Refuses, with its location, the first import of `nickel_files` that is not a file of the
/// module (relative to the importing file) or of the library, in the format it is imported
/// as: absolute paths, `..` escapes, package imports and unknown files. Looks nothing up on
/// disk.
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
        let imports = imports_of(&ast);
        let refused = imports.iter().find_map(|(import, pos)| {
            let reason = match import {
                Import::Package { id } => {
                    Some(format!("package import `{}` is not allowed", id.label()))
                }
                Import::Path { path, format } => refusal(cache, &importer, path, *format),
            };
            reason.map(|reason| (reason, start(pos)))
        });
        let unseen = || {
            unseen_import(cache.sources.source(file), &imports).map(|offset| {
                (
                    "this import is in syntax the import check does not cover".to_string(),
                    Some(offset),
                )
            })
        };
        if let Some((reason, offset)) = refused.or_else(unseen) {
            let files = cache.sources.files();
            return Err(EvalFailure {
                location: offset.map(|o| location(files, file, o)),
                ..EvalFailure::new(FailureKind::ForbiddenImport, reason)
            });
        }
    }
    Ok(())
}

/// Refuses evaluation when Nickel loaded a file that is not one of `known`. The static check
/// leaves no import for Nickel to read from disk; this one would catch a syntax it missed.
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
            not_a_module_file(path),
        )),
    }
}

/// Where imports may still hide: subtrees that Nickel's `traverse_ref` does not enter.
enum Root<'ast> {
    Ast(&'ast Ast<'ast>),
    /// A let-binding's pattern (its field defaults and contracts).
    Pattern(&'ast Pattern<'ast>),
    /// The contracts of a record `include`.
    Annotation(&'ast Annotation<'ast>),
}

/// Every import node of `ast`, with its position, in source order.
fn imports_of<'ast>(ast: &'ast Ast<'ast>) -> Vec<(&'ast Import<'ast>, TermPos)> {
    let mut found = Vec::new();
    let mut roots = vec![Root::Ast(ast)];
    while let Some(root) = roots.pop() {
        let mut visit = |node: &'ast Ast<'ast>, _: &()| {
            match &node.node {
                Node::Import(import) => found.push((import, node.pos)),
                Node::Let { bindings, .. } => {
                    roots.extend(bindings.iter().map(|b| Root::Pattern(&b.pattern)));
                }
                Node::Record(record) => {
                    roots.extend(
                        record
                            .includes
                            .iter()
                            .map(|include| Root::Annotation(&include.metadata.annotation)),
                    );
                }
                _ => {}
            }
            TraverseControl::<(), ()>::Continue
        };
        match root {
            Root::Ast(ast) => ast.traverse_ref(&mut visit, &()),
            Root::Pattern(pattern) => pattern.traverse_ref(&mut visit, &()),
            Root::Annotation(annotation) => annotation.traverse_ref(&mut visit, &()),
        };
    }
    found.sort_by_key(|(_, pos)| start(pos).unwrap_or(usize::MAX));
    found
}

fn start(pos: &TermPos) -> Option<usize> {
    pos.as_opt_ref().map(|span| span.start.to_usize())
}

/// The offset of the first `import` keyword of `source` that lies in none of `imports`: an
/// import the walk did not see.
fn unseen_import(source: &str, imports: &[(&Import, TermPos)]) -> Option<usize> {
    let spans: Vec<(usize, usize)> = imports
        .iter()
        .filter_map(|(_, pos)| pos.as_opt_ref())
        .map(|span| (span.start.to_usize(), span.end.to_usize()))
        .collect();
    // The file parsed, so it lexes without errors.
    Lexer::new(source)
        .flatten()
        .filter(|(_, token, _)| matches!(token, Token::Normal(NormalToken::Import)))
        .map(|(offset, _, _)| offset)
        .find(|&offset| !spans.iter().any(|&(s, e)| (s..e).contains(&offset)))
}

fn refusal(
    cache: &CacheHub,
    importer: &Path,
    target: &OsStr,
    format: InputFormat,
) -> Option<String> {
    let target = Path::new(target);
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
    let known = !target.is_absolute()
        && candidates.into_iter().flatten().any(|candidate| {
            cache
                .sources
                .file_ids
                .contains_key(&SourcePath::Path(candidate, format))
        });
    (!known).then(|| not_a_module_file(&target.display().to_string()))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The paths of the imports the walk finds in `source`, and the offset of an `import`
    /// keyword it did not see.
    fn walk(source: &str) -> (Vec<String>, Option<usize>) {
        let mut cache = CacheHub::new();
        let path = Path::new(MODULE_ROOT).join("main.ncl");
        let file = cache.sources.add_string(
            SourcePath::Path(path, InputFormat::Nickel),
            source.to_string(),
        );
        let alloc = AstAlloc::new();
        let ast = cache
            .sources
            .parse_nickel(&alloc, file)
            .expect("the source parses");
        let imports = imports_of(&ast);
        let paths = imports
            .iter()
            .map(|(import, _)| match import {
                Import::Path { path, .. } => path.to_string_lossy().into_owned(),
                Import::Package { id } => id.label().to_string(),
            })
            .collect();
        (paths, unseen_import(source, &imports))
    }

    #[test]
    fn the_walk_finds_imports_where_nickel_traversal_does_not_look() {
        let source = r#"
let { a ? import "let-default.ncl", b | (import "let-contract.ncl"), .. } = {} in
let [c, d] = [import "array.ncl", 2] in
let y = 1 in
{
  include y | std.contract.from_predicate (fun v => (import "include.ncl") == v),
  f = fun { x ? import "fun-default.ncl" } => x,
  g = match { { k ? import "match-default.ncl" } => k },
  h = "%{import "interpolated.txt" as 'Text}",
  i = m%"multi %{import "multiline.txt" as 'Text}"%,
  j | Array (import "type-contract.ncl") = [],
  "%{import "field-name.txt" as 'Text}" = 1,
  k = import somepkg,
  # import "in-a-comment.ncl"
  l = "import \"in-a-string.ncl\"",
}
"#;
        let (paths, unseen) = walk(source);
        assert_eq!(
            paths,
            [
                "let-default.ncl",
                "let-contract.ncl",
                "array.ncl",
                "include.ncl",
                "fun-default.ncl",
                "match-default.ncl",
                "interpolated.txt",
                "multiline.txt",
                "type-contract.ncl",
                "field-name.txt",
                "somepkg",
            ]
        );
        assert_eq!(unseen, None);
    }

    #[test]
    fn an_import_keyword_the_walk_did_not_see_is_found_by_the_lexer() {
        let source = r#"{ a = "import", b = (import "x.ncl") }"#;
        assert_eq!(unseen_import(source, &[]), source.find("import \""));
    }
}
