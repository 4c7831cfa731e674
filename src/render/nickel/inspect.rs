//! The fields of a module's `Input` contract, read off the evaluated contract: what
//! `pequod module inspect` lists. Nickel keeps `| doc`, `| optional`, `| default` and the
//! contract annotations as field metadata, which no Nickel expression can read, so the walk
//! is done here on the interpreter's values.
//!
//! The contract record is evaluated to its weak head normal form only: field values are never
//! forced, so a default computed from other fields (`| default = preset_instances`) is shown as
//! written, not as the value it would take with an empty input. Sub-fields come from record
//! contracts (`storage | { size | default = "10Gi" } | default = {}`), from record values, and
//! from the element contract of `Array { … }` (listed as `roles[].name`).

use nickel_lang_core::cache::CacheHub;
use nickel_lang_core::eval::cache::CacheImpl;
use nickel_lang_core::eval::cache::lazy::ThunkState;
use nickel_lang_core::eval::value::{Container, NickelValue, ValueContentRef};
use nickel_lang_core::eval::{Closure, Environment, VirtualMachine, VmContext};
use nickel_lang_core::files::FileId;
use nickel_lang_core::position::{PosIdx, TermPos};
use nickel_lang_core::term::record::Field;
use nickel_lang_core::term::{LabeledType, MergePriority};
use nickel_lang_core::typ::TypeF;

use crate::render::protocol::{InputField, Presence};

/// How deep sub-fields are listed: a recursive contract (`Tree = { left | Tree | optional }`)
/// stops here.
const MAX_DEPTH: usize = 8;

/// The interpreter state of one inspection.
type Context = VmContext<CacheHub, CacheImpl>;

/// The fields of the record `contract` evaluates to, depth first in source order. `None` when it
/// is not a record.
pub(super) fn input_fields(context: &mut Context, contract: Closure) -> Option<Vec<InputField>> {
    let mut fields = Vec::new();
    if walk(context, contract, "", 0, &mut fields) {
        Some(fields)
    } else {
        None
    }
}

/// Lists the fields of the record `closure` evaluates to under `prefix`; false when it does not
/// evaluate to a record.
fn walk(
    context: &mut Context,
    closure: Closure,
    prefix: &str,
    depth: usize,
    out: &mut Vec<InputField>,
) -> bool {
    let Ok(evaluated) = VirtualMachine::new(context).eval_closure(closure) else {
        return false;
    };
    let record = match evaluated.value.content_ref() {
        ValueContentRef::Record(Container::Alloc(record)) => record.clone(),
        ValueContentRef::Record(Container::Empty) => return true,
        _ => return false,
    };
    let mut fields: Vec<_> = record.fields.into_iter().collect();
    // `None` (no position) sorts first; generated fields have none.
    fields.sort_by_key(|(name, _)| source_offset(name.pos));
    for (name, field) in fields {
        let path = if prefix.is_empty() {
            name.label().to_string()
        } else {
            format!("{prefix}.{}", name.label())
        };
        let index = out.len();
        out.push(describe(context, &path, &field));
        if depth < MAX_DEPTH {
            sub_fields(context, &field, &evaluated.env, &path, depth + 1, out);
            if out.len() > index + 1 {
                // The record contract's fields are listed: its text would repeat them.
                for contract in &mut out[index].contracts {
                    if contract.starts_with('{') {
                        *contract = "{ … }".to_string();
                    } else if contract.starts_with("Array {") {
                        *contract = "Array { … }".to_string();
                    }
                }
            }
        }
    }
    true
}

/// One field as shown: its annotations as written, whether it must be given, its default as
/// written and its documentation.
fn describe(context: &Context, path: &str, field: &Field) -> InputField {
    let metadata = field.metadata.0.as_deref();
    let annotations = metadata
        .map(|m| m.annotation.typ.iter().chain(&m.annotation.contracts))
        .into_iter()
        .flatten()
        .map(|annotation| annotation_text(context, annotation))
        .collect();
    let optional = metadata.is_some_and(|m| m.opt);
    let is_default = metadata.is_some_and(|m| m.priority == MergePriority::Bottom);
    let (presence, default) = match &field.value {
        None if optional => (Presence::Optional, None),
        None => (Presence::Required, None),
        Some(value) => (
            if is_default {
                Presence::Default
            } else {
                Presence::Fixed
            },
            Some(written(context, value)),
        ),
    };
    InputField {
        path: path.to_string(),
        contracts: annotations,
        presence,
        default,
        doc: field.metadata.doc().map(str::to_string),
    }
}

/// Lists what lies under a field: the fields of its record contracts, evaluated alone so that
/// no default is forced, then those of its value that no contract listed, then the fields of
/// the element contracts of its `Array { … }` annotations (as `path[]`).
fn sub_fields(
    context: &mut Context,
    field: &Field,
    env: &Environment,
    path: &str,
    depth: usize,
    out: &mut Vec<InputField>,
) {
    let start = out.len();
    let contracts = field.pending_contracts.iter().map(|c| c.contract.clone());
    for value in contracts.chain(field.value.clone()) {
        let mut found = Vec::new();
        let closure = Closure {
            value,
            env: env.clone(),
        };
        if walk(context, closure, path, depth, &mut found) {
            found.retain(|new| !out[start..].iter().any(|old| old.path == new.path));
            out.extend(found);
        }
    }
    // The element contract of an `Array C` annotation is a term of the field's scope, which
    // the field's closurized contracts (or its value) carry.
    let scope = field
        .pending_contracts
        .iter()
        .map(|contract| &contract.contract)
        .chain(&field.value)
        .find_map(|value| value.as_thunk().map(|thunk| thunk.borrow().env.clone()))
        .unwrap_or_else(|| env.clone());
    let annotations: Vec<LabeledType> = field
        .metadata
        .0
        .iter()
        .flat_map(|m| m.annotation.typ.iter().chain(&m.annotation.contracts))
        .cloned()
        .collect();
    for annotation in annotations {
        let TypeF::Array(element) = &annotation.typ.typ else {
            continue;
        };
        let TypeF::Contract(element) = &element.typ else {
            continue;
        };
        let closure = Closure {
            value: element.clone(),
            env: scope.clone(),
        };
        let mut found = Vec::new();
        if walk(context, closure, &format!("{path}[]"), depth, &mut found) {
            out.extend(found);
        }
    }
}

/// A value as the author wrote it: the source text of its term, else (Nickel keeps no
/// position for some terms, `if` among them) the term pretty-printed, as long as its thunk
/// was not evaluated (then it would show a value, not what was written).
fn written(context: &Context, value: &NickelValue) -> String {
    if let Some(text) = source_text(context, value.pos_idx()) {
        return text;
    }
    let unevaluated = value
        .as_thunk()
        .filter(|thunk| thunk.state() == ThunkState::Suspended)
        .map(|thunk| thunk.borrow().value.clone());
    match unevaluated {
        Some(term) => {
            source_text(context, term.pos_idx()).unwrap_or_else(|| one_line(&term.to_string()))
        }
        None => "(computed)".to_string(),
    }
}

/// `text` with its whitespace collapsed to single spaces.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// An annotation as the author wrote it, on one line.
fn annotation_text(context: &Context, annotation: &LabeledType) -> String {
    source_text(context, annotation.label.span).unwrap_or_else(|| annotation.label.typ.to_string())
}

/// The source text at `position`, whitespace collapsed to single spaces.
fn source_text(context: &Context, position: PosIdx) -> Option<String> {
    let span = context.pos_table.get(position).into_opt()?;
    Some(one_line(
        context.import_resolver.sources.files().source_slice(span),
    ))
}

/// Where a name was written, for listing fields in source order (unpositioned ones last).
fn source_offset(position: TermPos) -> Option<(FileId, u32)> {
    position.into_opt().map(|span| (span.src_id, span.start.0))
}
