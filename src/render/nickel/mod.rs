//! The embedded Nickel interpreter, as used inside a worker process.
//!
//! A module is registered in a virtual file system (paths under [`VFS_ROOT`], which must not
//! exist on disk), checked for forbidden imports ([`imports`]), then parsed, typechecked and
//! transformed once ("prepared"). Each evaluation clones the prepared cache, adds the input
//! and context as in-memory JSON files plus a generated entry, and evaluates that entry to
//! JSON. Errors become plain data ([`diagnostics`]).
//!
//! Nickel's values and errors are `!Send`: everything here stays on the calling thread and
//! only plain data (JSON values, [`EvalFailure`]) leaves it.

mod diagnostics;
mod imports;
mod inspect;

use std::collections::{BTreeMap, HashSet};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

use lru::LruCache;
use nickel_lang_core::ast::InputFormat;
use nickel_lang_core::cache::{CacheHub, SourcePath};
use nickel_lang_core::error::{Error as NickelError, NullReporter};
use nickel_lang_core::eval::cache::CacheImpl;
use nickel_lang_core::eval::value::NickelValue;
use nickel_lang_core::eval::{VirtualMachine, VmContext};
use nickel_lang_core::files::FileId;
use nickel_lang_core::position::PosTable;
use nickel_lang_core::serialize::{self, ExportFormat};
use serde_json::Value;

use super::error::{EvalFailure, FailureKind};
use super::input_json::SpannedJson;
use super::protocol::{EvalRequest, RenderContext};
use crate::module::LIBRARY_PREFIX;
use diagnostics::failure;

/// Root of the virtual file system. It must not exist on the real file system: Nickel stats
/// the real path before falling back to memory.
pub const VFS_ROOT: &str = "/nickel-vfs";
const MODULE_ROOT: &str = "/nickel-vfs/module";
const LIB_ROOT: &str = "/nickel-vfs/lib";
const EVAL_ROOT: &str = "/nickel-vfs/eval";
const INPUT_FILE: &str = "spec.input.json";
const CONTEXT_FILE: &str = "context.json";
const ENTRY_FILE: &str = "entry.ncl";
const CONTRACT_FILE: &str = "input-contract.ncl";
const CONFIG_FILE: &str = "policy-config.json";
const SUBJECT_FILE: &str = "subject.json";

/// How many prepared modules one worker keeps warm.
const PREPARED_CAPACITY: usize = 16;

/// A module parsed, typechecked and transformed once, cloned for every evaluation.
struct PreparedModule {
    cache: CacheHub,
    pos_table: PosTable,
    entrypoint: PathBuf,
    /// Every file the module may use: its own, the library's and the stdlib's.
    known_files: HashSet<FileId>,
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
        let prepared = self.prepared.get(request.digest.as_ref()).ok_or_else(|| {
            EvalFailure::new(FailureKind::Request, "prepared module left the cache")
        })?;
        match &request.subject {
            Some(subject) => evaluate_policy(prepared, &request.input, subject),
            None => evaluate_prepared(prepared, &request.input, &request.context, request.describe),
        }
    }
}

/// Nickel shared by the entries that run policies: `findings context entry` applies one
/// policy (an entry of a `policies` record) to `context` and labels what it found;
/// `declared policies` lists the policies' names and whether each is overridable.
const POLICY_RUNNER: &str = r#"let findings = fun context entry =>
  let rule = entry.value in
  let level = if std.record.has_field "severity" rule then rule.severity else 'Error in
  let lowerable = if std.record.has_field "overridable" rule then rule.overridable else false in
  std.array.map
    (fun found => {
      path = found.path,
      message = found.message,
      policy = entry.field,
      severity = level,
      overridable = lowerable,
    })
    (rule.check context)
in
let declared = fun policies =>
  std.array.map
    (fun entry => {
      name = entry.field,
      overridable = std.record.has_field "overridable" entry.value && entry.value.overridable,
    })
    (std.record.to_array policies)
in
"#;

/// The generated entry: the module merged with its context, the input checked by the
/// module's `Input` contract (which fills defaults), the rendered graph checked by the
/// library's `Rendered` contract, and the findings of the module's `policies` over both.
/// Arguments are import paths; they are escaped.
pub fn entry_source(graph: &str, main: &str, context: &str, input: &str) -> String {
    let [graph, main, context, input] = [graph, main, context, input].map(nickel_string);
    format!(
        r#"let graph = import {graph} in
let module = (import {main}) & {{ context = import {context}, policies | default = {{}} }} in
let checked_input = (import {input}) | module.Input in
let rendered_graph = (module.render checked_input) | graph.Rendered in
{POLICY_RUNNER}let context = {{ input = checked_input, rendered = rendered_graph }} in
{{
  metadata = module.metadata,
  input = checked_input,
  rendered = rendered_graph,
  violations = std.array.flat_map (findings context) (std.record.to_array module.policies),
  policies = declared module.policies,
}}
"#
    )
}

/// The entry of a policy module (docs/modules.md, "Cluster policy modules"): the module
/// merged with its configuration as `config` (checked by the module's own `config | Input`
/// declaration, when it has one), each policy's `check` applied to `{ transform, input,
/// rendered, config }` (plus `facts`, the module's `facts` of that record, evaluated once
/// for all its policies, when it has them), and the namespaces whose Transforms may lower
/// its overridable policies.
pub fn policy_source(main: &str, config: &str, subject: &str) -> String {
    let [main, config, subject] = [main, config, subject].map(nickel_string);
    format!(
        r#"let module = (import {main}) & {{
  config = import {config},
  policies | default = {{}},
  overridableIn | Array String | default = [],
}} in
let subject = import {subject} in
{POLICY_RUNNER}let checked = {{
  transform = subject.transform,
  input = subject.input,
  rendered = subject.rendered,
  config = module.config,
}} in
let context = {{
  transform = checked.transform,
  input = checked.input,
  rendered = checked.rendered,
  config = checked.config,
  facts = if std.record.has_field "facts" module then module.facts checked else {{}},
}} in
{{
  metadata = module.metadata,
  violations = std.array.flat_map (findings context) (std.record.to_array module.policies),
  policies = declared module.policies,
  overridableIn = module.overridableIn,
}}
"#
    )
}

/// The entry of a describe request: the module's metadata alone.
pub fn describe_source(main: &str, context: &str) -> String {
    let [main, context] = [main, context].map(nickel_string);
    format!(
        r#"let module = (import {main}) & {{ context = import {context} }} in
{{ metadata = module.metadata }}
"#
    )
}

/// The second entry of a describe request: the module's `Input` contract, whose fields
/// [`inspect`] lists.
fn input_contract_source(main: &str, context: &str) -> String {
    let [main, context] = [main, context].map(nickel_string);
    format!("((import {main}) & {{ context = import {context} }}).Input\n")
}

/// A Nickel string literal for `text`.
fn nickel_string(text: &str) -> String {
    let escaped = text
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace("%{", "\\%{");
    format!("\"{escaped}\"")
}

fn library_path(name: &str) -> PathBuf {
    Path::new(LIB_ROOT).join(LIBRARY_PREFIX).join(name)
}

fn prepare(
    library: &BTreeMap<String, String>,
    request: &EvalRequest,
) -> Result<PreparedModule, EvalFailure> {
    let mut cache = CacheHub::new();
    let mut known_files: HashSet<FileId> = cache.sources.file_paths.keys().copied().collect();
    let mut nickel_files = Vec::new();
    let module_files = request
        .files
        .iter()
        .map(|(name, source)| (Path::new(MODULE_ROOT).join(name), source));
    let library_files = library
        .iter()
        .map(|(name, source)| (library_path(name), source));
    for (path, source) in module_files.chain(library_files) {
        let id = add_file(&mut cache, &path, source.clone());
        known_files.insert(id);
        if InputFormat::from_path(&path) == Some(InputFormat::Nickel) {
            nickel_files.push(id);
        }
    }
    cache
        .sources
        .add_import_paths(std::iter::once(PathBuf::from(LIB_ROOT)));
    imports::check(&cache, &nickel_files)?;

    let entrypoint = Path::new(MODULE_ROOT).join(request.entrypoint.as_ref());
    let find = |path: PathBuf| {
        cache
            .sources
            .id_of(&SourcePath::Path(path, InputFormat::Nickel))
    };
    let main = find(entrypoint.clone()).ok_or_else(|| {
        EvalFailure::new(
            FailureKind::Request,
            "the entrypoint is not a Nickel file of the module",
        )
    })?;
    let graph_contract = find(library_path("graph.ncl")).ok_or_else(|| {
        EvalFailure::new(FailureKind::Request, "the pequod library has no graph.ncl")
    })?;

    let mut pos_table = PosTable::new();
    let result = cache
        .prepare_stdlib(&mut pos_table)
        .and_then(|()| cache.prepare(&mut pos_table, main))
        .and_then(|_| cache.prepare(&mut pos_table, graph_contract));
    if let Err(error) = result {
        // A report must not quote a file that should never have been read.
        imports::ensure_only_known(&cache, &known_files)?;
        return Err(failure(cache.sources.files().clone(), error, None));
    }
    // Nickel resolved every import while preparing. Anything it loaded that is not a known
    // file came from the real file system: refuse it before evaluation can expose it.
    imports::ensure_only_known(&cache, &known_files)?;
    Ok(PreparedModule {
        cache,
        pos_table,
        entrypoint,
        known_files,
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
    describe: bool,
) -> Result<Value, EvalFailure> {
    let input_json = SpannedJson::new(input, "input");
    let context_json = serde_json::to_string_pretty(context)
        .map_err(|e| EvalFailure::new(FailureKind::Request, format!("context: {e}")))?;
    let input_path = Path::new(EVAL_ROOT).join(INPUT_FILE);
    let context_path = Path::new(EVAL_ROOT).join(CONTEXT_FILE);
    let main = prepared.entrypoint.display().to_string();
    let context_import = context_path.display().to_string();
    let entry = if describe {
        describe_source(&main, &context_import)
    } else {
        entry_source(
            &library_path("graph.ncl").display().to_string(),
            &main,
            &context_import,
            &input_path.display().to_string(),
        )
    };
    let mut entries = vec![(Path::new(EVAL_ROOT).join(ENTRY_FILE), entry)];
    if describe {
        let source = input_contract_source(&main, &context_import);
        entries.push((Path::new(EVAL_ROOT).join(CONTRACT_FILE), source));
    }
    let data = [
        (input_path, input_json.text().to_string()),
        (context_path, context_json),
    ];
    let (mut vm_context, ids) = load(prepared, data, entries, &input_json)?;
    let mut output = evaluate_entry(&mut vm_context, ids[0], &input_json)?;
    if let Some(&contract_id) = ids.get(1) {
        let files = vm_context.import_resolver.sources.files().clone();
        let contract = loaded_term(&mut vm_context, contract_id)?;
        // Evaluated here first so that a missing or broken `Input` is reported with its location.
        let contract = VirtualMachine::new(&mut vm_context)
            .eval_closure(contract.into())
            .map_err(|error| failure(files, error.into(), None))?;
        if let Some(fields) = inspect::input_fields(&mut vm_context, contract) {
            output["inputFields"] = serde_json::to_value(fields)
                .map_err(|e| EvalFailure::new(FailureKind::Export, e.to_string()))?;
        }
    }
    Ok(output)
}

/// Evaluates a policy module with its configuration `config` over `subject` (a Transform
/// and its rendered graph): `{ metadata, violations, policies, overridableIn }`.
fn evaluate_policy(
    prepared: &PreparedModule,
    config: &Value,
    subject: &Value,
) -> Result<Value, EvalFailure> {
    let config_json = SpannedJson::new(config, "config");
    let subject_json = serde_json::to_string(subject)
        .map_err(|e| EvalFailure::new(FailureKind::Request, format!("subject: {e}")))?;
    let config_path = Path::new(EVAL_ROOT).join(CONFIG_FILE);
    let subject_path = Path::new(EVAL_ROOT).join(SUBJECT_FILE);
    let entry = policy_source(
        &prepared.entrypoint.display().to_string(),
        &config_path.display().to_string(),
        &subject_path.display().to_string(),
    );
    let data = [
        (config_path, config_json.text().to_string()),
        (subject_path, subject_json),
    ];
    let entries = vec![(Path::new(EVAL_ROOT).join(ENTRY_FILE), entry)];
    let (mut vm_context, ids) = load(prepared, data, entries, &config_json)?;
    evaluate_entry(&mut vm_context, ids[0], &config_json)
}

/// A VM over a copy of the prepared module plus the generated `data` files and `entries`
/// (Nickel sources), prepared for evaluation: the VM and the entries' file ids. `located`
/// names the paths of contract errors in the JSON data.
fn load<const N: usize>(
    prepared: &PreparedModule,
    data: [(PathBuf, String); N],
    entries: Vec<(PathBuf, String)>,
    located: &SpannedJson,
) -> Result<(VmContext<CacheHub, CacheImpl>, Vec<FileId>), EvalFailure> {
    let mut cache = prepared.cache.clone_for_eval();
    let mut pos_table = prepared.pos_table.clone();
    let mut known_files = prepared.known_files.clone();
    for (path, text) in data {
        known_files.insert(add_file(&mut cache, &path, text));
    }
    let ids: Vec<FileId> = entries
        .into_iter()
        .map(|(path, source)| add_file(&mut cache, &path, source))
        .collect();
    known_files.extend(ids.iter().copied());
    for &id in &ids {
        if let Err(error) = cache.prepare_eval_only(&mut pos_table, id) {
            imports::ensure_only_known(&cache, &known_files)?;
            return Err(failure(cache.sources.files().clone(), error, Some(located)));
        }
    }
    imports::ensure_only_known(&cache, &known_files)?;
    let vm_context = VmContext::<CacheHub, CacheImpl>::new_with_pos_table(
        cache,
        pos_table,
        std::io::sink(),
        NullReporter {},
    );
    Ok((vm_context, ids))
}

/// Evaluates the generated file `entry` in full to JSON.
fn evaluate_entry(
    vm_context: &mut VmContext<CacheHub, CacheImpl>,
    entry: FileId,
    located: &SpannedJson,
) -> Result<Value, EvalFailure> {
    let files = vm_context.import_resolver.sources.files().clone();
    let term = loaded_term(vm_context, entry)?;
    let value = VirtualMachine::new(vm_context)
        .eval_full_for_export(term)
        .map_err(|error| failure(files.clone(), error.into(), Some(located)))?;
    if let Err(error) = serialize::validate(ExportFormat::Json, &value) {
        let error = NickelError::export_error(vm_context.pos_table.clone(), error);
        return Err(failure(files, error, Some(located)));
    }
    serde_json::to_value(&value).map_err(|e| EvalFailure::new(FailureKind::Export, e.to_string()))
}

/// The term of a generated file, with its imports resolved.
fn loaded_term(
    vm_context: &mut VmContext<CacheHub, CacheImpl>,
    id: FileId,
) -> Result<NickelValue, EvalFailure> {
    if let Err(error) = vm_context
        .import_resolver
        .closurize(&mut vm_context.cache, id)
    {
        return Err(EvalFailure::new(
            FailureKind::Request,
            format!("the generated entry could not be prepared: {error:?}"),
        ));
    }
    vm_context
        .import_resolver
        .terms
        .get_owned(id)
        .ok_or_else(|| EvalFailure::new(FailureKind::Request, "the generated entry has no term"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_paths_are_escaped() {
        let entry = entry_source("/g.ncl", "/m/a\".ncl%{x}\\", "/c.json", "/i.json");
        assert!(entry.contains(r#"(import "/m/a\".ncl\%{x}\\")"#), "{entry}");
    }
}
