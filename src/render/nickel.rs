//! The embedded Nickel interpreter, as used inside a worker process.
//!
//! A module is registered in a virtual file system (paths under [`VFS_ROOT`], which must not
//! exist on disk), checked for forbidden imports, then parsed, typechecked and transformed
//! once ("prepared"). Each evaluation clones the prepared cache, adds the input and context
//! as in-memory JSON files plus a generated entry, and evaluates that entry to JSON.
//!
//! Nickel's values and errors are `!Send`: everything here stays on the calling thread and
//! only plain data (JSON values, [`EvalFailure`]) leaves it.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

use codespan_reporting::diagnostic::{Diagnostic, LabelStyle};
use lru::LruCache;
use nickel_lang_core::ast::{AstAlloc, Import, InputFormat, Node};
use nickel_lang_core::cache::{CacheHub, SourcePath};
use nickel_lang_core::error::report::{ColorOpt, report_as_str};
use nickel_lang_core::error::{Error as NickelError, IntoDiagnostics, NullReporter};
use nickel_lang_core::eval::cache::CacheImpl;
use nickel_lang_core::eval::{VirtualMachine, VmContext};
use nickel_lang_core::files::{FileId, Files};
use nickel_lang_core::position::PosTable;
use nickel_lang_core::serialize::{self, ExportFormat};
use nickel_lang_core::traverse::{TraverseAlloc, TraverseControl};
use serde_json::Value;

use super::error::{EvalFailure, FailureKind};
use super::input_json::SpannedJson;
use super::protocol::{EvalRequest, RenderContext};

/// Root of the virtual file system. It must not exist on the real file system: Nickel stats
/// the real path before falling back to memory.
pub const VFS_ROOT: &str = "/nickel-vfs";
const MODULE_ROOT: &str = "/nickel-vfs/module";
const LIB_ROOT: &str = "/nickel-vfs/lib";
const LIB_PREFIX: &str = "pequod";
const EVAL_ROOT: &str = "/nickel-vfs/eval";
const INPUT_FILE: &str = "spec.input.json";
const CONTEXT_FILE: &str = "context.json";
const ENTRY_FILE: &str = "entry.ncl";

/// How many prepared modules one worker keeps warm.
const PREPARED_CAPACITY: usize = 16;

/// A module parsed, typechecked and transformed once, cloned for every evaluation.
struct PreparedModule {
    cache: CacheHub,
    pos_table: PosTable,
    entrypoint: PathBuf,
}

/// Evaluates modules, keeping the most recently used ones prepared.
pub struct Evaluator {
    library: BTreeMap<String, String>,
    prepared: LruCache<String, PreparedModule>,
}

impl Evaluator {
    /// An evaluator whose modules may import `library` files as `"pequod/<name>"`.
    pub fn new(library: BTreeMap<String, String>) -> Evaluator {
        Evaluator {
            library,
            prepared: LruCache::new(
                NonZeroUsize::new(PREPARED_CAPACITY).unwrap_or(NonZeroUsize::MIN),
            ),
        }
    }

    /// Evaluates the request's module with its input: `{ metadata, input, rendered }` as JSON.
    pub fn evaluate(&mut self, request: &EvalRequest) -> Result<Value, EvalFailure> {
        if !self.prepared.contains(request.digest.as_ref()) {
            let prepared = prepare(&self.library, request)?;
            self.prepared.put(request.digest.to_string(), prepared);
        }
        let prepared = self
            .prepared
            .get(request.digest.as_ref())
            .ok_or_else(|| request_failure("prepared module vanished from the cache"))?;
        evaluate_prepared(prepared, &request.input, &request.context)
    }
}

fn request_failure(message: &str) -> EvalFailure {
    EvalFailure {
        kind: FailureKind::Request,
        message: message.to_string(),
        path: None,
        location: None,
        detail: String::new(),
    }
}

fn prepare(
    library: &BTreeMap<String, String>,
    request: &EvalRequest,
) -> Result<PreparedModule, EvalFailure> {
    let mut cache = CacheHub::new();
    let mut nickel_files = Vec::new();
    for (name, source) in request.files.iter() {
        let path = Path::new(MODULE_ROOT).join(name);
        let id = add_file(&mut cache, &path, source.clone());
        if InputFormat::from_path(&path) == Some(InputFormat::Nickel) {
            nickel_files.push(id);
        }
    }
    for (name, source) in library {
        let path = Path::new(LIB_ROOT).join(LIB_PREFIX).join(name);
        let id = add_file(&mut cache, &path, source.clone());
        if InputFormat::from_path(&path) == Some(InputFormat::Nickel) {
            nickel_files.push(id);
        }
    }
    cache
        .sources
        .add_import_paths(std::iter::once(PathBuf::from(LIB_ROOT)));
    check_imports(&cache, &nickel_files)?;

    let entrypoint = Path::new(MODULE_ROOT).join(request.entrypoint.as_ref());
    let main = cache
        .sources
        .id_of(&SourcePath::Path(entrypoint.clone(), InputFormat::Nickel))
        .ok_or_else(|| request_failure("the entrypoint is not a Nickel file of the module"))?;
    let graph_contract = cache
        .sources
        .id_of(&SourcePath::Path(
            Path::new(LIB_ROOT).join(LIB_PREFIX).join("graph.ncl"),
            InputFormat::Nickel,
        ))
        .ok_or_else(|| request_failure("the pequod library has no graph.ncl"))?;

    let mut pos_table = PosTable::new();
    let result = cache
        .prepare_stdlib(&mut pos_table)
        .and_then(|()| cache.prepare(&mut pos_table, main))
        .and_then(|_| cache.prepare(&mut pos_table, graph_contract));
    if let Err(error) = result {
        return Err(failure(cache.sources.files().clone(), error, None));
    }
    Ok(PreparedModule {
        cache,
        pos_table,
        entrypoint,
    })
}

fn add_file(cache: &mut CacheHub, path: &Path, source: String) -> FileId {
    let format = InputFormat::from_path(path).unwrap_or(InputFormat::Text);
    cache
        .sources
        .add_string(SourcePath::Path(path.to_path_buf(), format), source)
}

fn evaluate_prepared(
    prepared: &PreparedModule,
    input: &Value,
    context: &RenderContext,
) -> Result<Value, EvalFailure> {
    let input_json = SpannedJson::new(input, "input");
    let context_json = serde_json::to_string_pretty(context)
        .map_err(|e| request_failure(&format!("context: {e}")))?;
    let entry = entry_source(
        &format!("{LIB_ROOT}/{LIB_PREFIX}/graph.ncl"),
        &prepared.entrypoint.display().to_string(),
        &format!("{EVAL_ROOT}/{CONTEXT_FILE}"),
        &format!("{EVAL_ROOT}/{INPUT_FILE}"),
    );

    let mut cache = prepared.cache.clone_for_eval();
    let mut pos_table = prepared.pos_table.clone();
    add_file(
        &mut cache,
        &Path::new(EVAL_ROOT).join(INPUT_FILE),
        input_json.text().to_string(),
    );
    add_file(
        &mut cache,
        &Path::new(EVAL_ROOT).join(CONTEXT_FILE),
        context_json,
    );
    let entry_id = add_file(&mut cache, &Path::new(EVAL_ROOT).join(ENTRY_FILE), entry);
    if let Err(error) = cache.prepare_eval_only(&mut pos_table, entry_id) {
        return Err(failure(
            cache.sources.files().clone(),
            error,
            Some(&input_json),
        ));
    }

    let mut vm_context = VmContext::<CacheHub, CacheImpl>::new_with_pos_table(
        cache,
        pos_table,
        std::io::sink(),
        NullReporter {},
    );
    let files = vm_context.import_resolver.sources.files().clone();
    if vm_context
        .import_resolver
        .closurize(&mut vm_context.cache, entry_id)
        .is_err()
    {
        return Err(request_failure(
            "the generated entry could not be closurized",
        ));
    }
    let term = vm_context
        .import_resolver
        .terms
        .get_owned(entry_id)
        .ok_or_else(|| request_failure("the generated entry has no term"))?;
    let evaluated = VirtualMachine::new(&mut vm_context).eval_full_for_export(term);
    let value = match evaluated {
        Ok(value) => value,
        Err(error) => return Err(failure(files, error.into(), Some(&input_json))),
    };
    if let Err(error) = serialize::validate(ExportFormat::Json, &value) {
        let error = NickelError::export_error(vm_context.pos_table.clone(), error);
        return Err(failure(files, error, Some(&input_json)));
    }
    serde_json::to_value(&value).map_err(|e| EvalFailure {
        kind: FailureKind::Export,
        message: e.to_string(),
        path: None,
        location: None,
        detail: String::new(),
    })
}

/// The generated entry: the module merged with its context, the input checked by the
/// module's `Input` contract (which fills defaults), and the rendered graph checked by the
/// library's `Rendered` contract. Arguments are import paths.
pub fn entry_source(graph: &str, main: &str, context: &str, input: &str) -> String {
    format!(
        r#"let graph = import "{graph}" in
let module = (import "{main}") & {{ context = import "{context}" }} in
let checked_input = (import "{input}") | module.Input in
{{
  metadata = module.metadata,
  input = checked_input,
  rendered = (module.render checked_input) | graph.Rendered,
}}
"#
    )
}

/// Refuses every import that is not a file of the module (relative to the importing file) or
/// of the library (`pequod/<file>`): no absolute paths, no `..` escapes, no packages.
fn check_imports(cache: &CacheHub, nickel_files: &[FileId]) -> Result<(), EvalFailure> {
    for &file in nickel_files {
        let alloc = AstAlloc::new();
        let ast = match cache.sources.parse_nickel(&alloc, file) {
            Ok(ast) => ast,
            Err(errors) => {
                return Err(failure(
                    cache.sources.files().clone(),
                    NickelError::ParseErrors(errors),
                    None,
                ));
            }
        };
        let importer = PathBuf::from(cache.sources.name(file));
        let mut refused: Option<(String, Option<usize>)> = None;
        ast.traverse_ref(
            &mut |node: &nickel_lang_core::ast::Ast, _: &()| {
                if refused.is_some() {
                    return TraverseControl::<(), ()>::SkipBranch;
                }
                if let Node::Import(import) = &node.node {
                    let reason = match import {
                        Import::Package { id } => {
                            Some(format!("package import `{}` is not allowed", id.label()))
                        }
                        Import::Path { path, .. } => import_refusal(cache, &importer, path),
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
                kind: FailureKind::Import,
                message: reason,
                path: None,
                location: offset.map(|o| location(files, file, o)),
                detail: String::new(),
            });
        }
    }
    Ok(())
}

fn import_refusal(cache: &CacheHub, importer: &Path, target: &std::ffi::OsStr) -> Option<String> {
    let target = Path::new(target);
    let shown = target.display();
    if target.is_absolute() {
        return Some(format!("absolute import `{shown}` is not allowed"));
    }
    let dir = importer.parent().unwrap_or(Path::new(MODULE_ROOT));
    let candidates = [
        normalize(&dir.join(target)),
        normalize(&Path::new(LIB_ROOT).join(target)),
    ];
    let root = if importer.starts_with(LIB_ROOT) {
        Path::new(LIB_ROOT)
    } else {
        Path::new(MODULE_ROOT)
    };
    let known = candidates.iter().flatten().any(|candidate| {
        (candidate.starts_with(root) || candidate.starts_with(LIB_ROOT))
            && is_registered(cache, candidate)
    });
    if known {
        None
    } else {
        Some(format!(
            "import `{shown}` does not refer to a file of the module or of the pequod library"
        ))
    }
}

fn is_registered(cache: &CacheHub, path: &Path) -> bool {
    [
        InputFormat::Nickel,
        InputFormat::Json,
        InputFormat::Yaml,
        InputFormat::Toml,
        InputFormat::Text,
    ]
    .into_iter()
    .any(|format| {
        cache
            .sources
            .id_of(&SourcePath::Path(path.to_path_buf(), format))
            .is_some()
    })
}

/// Lexical normalization; `None` when `..` climbs above the root.
fn normalize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            std::path::Component::ParentDir => {
                if !out.pop() || out.as_os_str().is_empty() {
                    return None;
                }
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    Some(out)
}

/// Turns a Nickel error into an [`EvalFailure`]: a one-line message from the first
/// diagnostic, its location, the input path when the location is in the input, and the
/// full report with virtual paths shortened.
fn failure(files: Files, error: NickelError, input: Option<&SpannedJson>) -> EvalFailure {
    let kind = match &error {
        NickelError::ParseErrors(_) => FailureKind::Syntax,
        NickelError::TypecheckError(_) => FailureKind::Type,
        NickelError::ImportError(_) => FailureKind::Import,
        NickelError::ExportError(_) => FailureKind::Export,
        _ => FailureKind::Evaluation,
    };
    let mut report_files = files.clone();
    let detail = shorten_paths(&report_as_str(
        &mut report_files,
        error.clone(),
        ColorOpt::Never,
    ));
    let mut diagnostic_files = files;
    let diagnostics = error.into_diagnostics(&mut diagnostic_files);
    let Some(first) = diagnostics.first() else {
        return EvalFailure {
            kind,
            message: detail.lines().next().unwrap_or("unknown error").to_string(),
            path: None,
            location: None,
            detail,
        };
    };
    let kind = if kind == FailureKind::Evaluation && first.message.contains("contract broken") {
        FailureKind::Contract
    } else {
        kind
    };
    let anchor = anchor_label(first, &diagnostic_files);
    let location = anchor.map(|l| location(&diagnostic_files, l.file_id, l.range.start));
    let path = anchor.and_then(|label| {
        let in_input = diagnostic_files.name(label.file_id) == input_file_name().as_os_str();
        input
            .filter(|_| in_input)
            .and_then(|json| json.path_at(label.range.start))
            .map(str::to_string)
    });
    EvalFailure {
        kind,
        message: one_line(first, &diagnostic_files),
        path,
        location,
        detail,
    }
}

fn input_file_name() -> PathBuf {
    Path::new(EVAL_ROOT).join(INPUT_FILE)
}

fn is_generated(files: &Files, file: FileId) -> bool {
    files.name(file) == Path::new(EVAL_ROOT).join(ENTRY_FILE).as_os_str()
}

/// The label a user should look at: the primary one unless it points into the generated
/// entry, then one in the input, then any other outside the entry.
fn anchor_label<'d>(
    diagnostic: &'d Diagnostic<FileId>,
    files: &Files,
) -> Option<&'d codespan_reporting::diagnostic::Label<FileId>> {
    let labels = &diagnostic.labels;
    let input = input_file_name();
    labels
        .iter()
        .find(|l| l.style == LabelStyle::Primary && !is_generated(files, l.file_id))
        .or_else(|| {
            labels
                .iter()
                .find(|l| files.name(l.file_id) == input.as_os_str())
        })
        .or_else(|| labels.iter().find(|l| !is_generated(files, l.file_id)))
}

/// The diagnostic's message, the contract that was expected (when a label points at it),
/// and its notes, on one line.
fn one_line(diagnostic: &Diagnostic<FileId>, files: &Files) -> String {
    let message: Vec<&str> = diagnostic
        .message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let mut parts = vec![message.join(": ")];
    for label in &diagnostic.labels {
        if label.style == LabelStyle::Secondary && label.message.contains("expected type") {
            let source = files.source(label.file_id);
            if let Some(contract) = source.get(label.range.clone()) {
                let contract = contract.trim();
                parts.push(if is_generated(files, label.file_id) {
                    format!("expected `{contract}`")
                } else {
                    let at = location(files, label.file_id, label.range.start);
                    format!("expected `{contract}` ({at})")
                });
            }
        }
    }
    // The first note is the hint ("Have you misspelled a field?"); later ones are advice
    // for module authors that the full report keeps.
    parts.extend(
        diagnostic
            .notes
            .iter()
            .map(|n| n.trim().replace('\n', " "))
            .find(|n| !n.is_empty()),
    );
    shorten_paths(&parts.join("; "))
}

fn location(files: &Files, file: FileId, offset: usize) -> String {
    let name = shorten_paths(&files.name(file).to_string_lossy());
    match <Files as codespan_reporting::files::Files>::location(files, file, offset) {
        Ok(loc) => format!("{name}:{}:{}", loc.line_number, loc.column_number),
        Err(_) => name,
    }
}

/// Virtual paths shown the way a module author sees them: `main.ncl`, `pequod/graph.ncl`,
/// `spec.input.json`.
fn shorten_paths(text: &str) -> String {
    text.replace(&format!("{MODULE_ROOT}/"), "")
        .replace(&format!("{LIB_ROOT}/"), "")
        .replace(&format!("{EVAL_ROOT}/"), "")
}
