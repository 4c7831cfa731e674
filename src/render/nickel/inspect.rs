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
use nickel_lang_core::term::{LabeledType, MergePriority, Term};
use nickel_lang_core::typ::TypeF;

use crate::render::protocol::{InputField, Presence};

/// Where an annotation was written: a field is not expanded again under itself, so a
/// recursive contract (`Tree = { left | Tree | optional }`) is listed once.
type Written = (FileId, u32);

/// The interpreter state of one inspection.
type Context = VmContext<CacheHub, CacheImpl>;

/// The fields of the record `contract` evaluates to, depth first in source order. `None` when it
/// is not a record (a custom contract, a dictionary: valid, but without fields to list).
pub(super) fn input_fields(context: &mut Context, contract: Closure) -> Option<Vec<InputField>> {
    let mut fields = Vec::new();
    if walk(context, contract, "", &[], &mut fields) {
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
    ancestors: &[Written],
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
    // Fields without a position (generated ones) sort first: `None` is the least.
    fields.sort_by_key(|(name, _)| source_offset(name.pos));
    for (name, field) in fields {
        let path = if prefix.is_empty() {
            name.label().to_string()
        } else {
            format!("{prefix}.{}", name.label())
        };
        let index = out.len();
        out.push(describe(context, &path, &field));
        let written: Vec<Written> = annotations(&field)
            .iter()
            .filter_map(|annotation| source_offset(context.pos_table.get(annotation.label.span)))
            .collect();
        if !written.iter().any(|at| ancestors.contains(at)) {
            let lineage = [ancestors, &written].concat();
            sub_fields(context, &field, &evaluated.env, &path, &lineage, out);
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
    let contracts = annotations(field)
        .iter()
        .map(|annotation| annotation_text(context, annotation))
        .collect();
    let optional = metadata.is_some_and(|m| m.opt);
    // `| default` and negative priorities give way to the Transform's value; a neutral,
    // positive or forced one does not.
    let is_default = metadata.is_some_and(|m| m.priority < MergePriority::Neutral);
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
        contracts,
        presence,
        default,
        doc: field.metadata.doc().map(str::to_string),
    }
}

/// Lists what lies under a field: the fields of its record contracts, evaluated alone so that
/// no default is forced, then those of a record literal value that no contract listed, then
/// the fields of the element contracts of its `Array { … }` annotations (as `path[]`).
/// Contract applications (`k8s.Enum "x" […]`) are not evaluated: they are not records, and
/// could force the defaults they are given.
fn sub_fields(
    context: &mut Context,
    field: &Field,
    env: &Environment,
    path: &str,
    ancestors: &[Written],
    out: &mut Vec<InputField>,
) {
    // The scopes the annotations were written in, taken before anything is evaluated (an
    // evaluated thunk holds its result's environment instead).
    let scopes: Vec<Environment> = field
        .pending_contracts
        .iter()
        .map(|contract| {
            contract
                .contract
                .as_thunk()
                .map_or_else(|| env.clone(), |thunk| thunk.borrow().env.clone())
        })
        .collect();
    let start = out.len();
    let contracts = field
        .pending_contracts
        .iter()
        .map(|contract| contract.contract.clone())
        .filter(|contract| !is_application(contract));
    let record_value = field.value.clone().filter(is_record_literal);
    for value in contracts.chain(record_value) {
        let mut found = Vec::new();
        let closure = Closure {
            value,
            env: env.clone(),
        };
        if walk(context, closure, path, ancestors, &mut found) {
            found.retain(|new| !out[start..].iter().any(|old| old.path == new.path));
            out.extend(found);
        }
    }
    for (index, annotation) in annotations(field).iter().enumerate() {
        let TypeF::Array(element) = &annotation.typ.typ else {
            continue;
        };
        let TypeF::Contract(element) = &element.typ else {
            continue;
        };
        let scope = scopes.get(index).or(scopes.first()).unwrap_or(env);
        let closure = Closure {
            value: element.clone(),
            env: scope.clone(),
        };
        let mut found = Vec::new();
        if walk(
            context,
            closure,
            &format!("{path}[]"),
            ancestors,
            &mut found,
        ) {
            out.extend(found);
        }
    }
}

/// A field's type and contract annotations, in the order written.
fn annotations(field: &Field) -> Vec<LabeledType> {
    field
        .metadata
        .0
        .iter()
        .flat_map(|m| m.annotation.typ.iter().chain(&m.annotation.contracts))
        .cloned()
        .collect()
}

/// The term a thunk holds while it is not evaluated yet; `None` for other values.
fn suspended(value: &NickelValue) -> Option<NickelValue> {
    value
        .as_thunk()
        .filter(|thunk| thunk.state() == ThunkState::Suspended)
        .map(|thunk| thunk.borrow().value.clone())
}

/// Whether a value is written as a record (`{}`, `{ size = "1Gi" }`), or evaluated to one.
fn is_record_literal(value: &NickelValue) -> bool {
    let term = match value.as_thunk() {
        Some(thunk) => thunk.borrow().value.clone(),
        None => value.clone(),
    };
    matches!(
        term.content_ref(),
        ValueContentRef::Record(_) | ValueContentRef::Term(Term::RecRecord(_))
    )
}

/// Whether a value is a function application not evaluated yet.
fn is_application(value: &NickelValue) -> bool {
    let term = suspended(value).unwrap_or_else(|| value.clone());
    matches!(term.content_ref(), ValueContentRef::Term(Term::App(_)))
}

/// A value as the author wrote it: the source text of its term, else (Nickel keeps no
/// position for some terms, `if` among them) the term pretty-printed, as long as its thunk
/// was not evaluated (then it would show a value, not what was written).
fn written(context: &Context, value: &NickelValue) -> String {
    if let Some(text) = source_text(context, value.pos_idx()) {
        return text;
    }
    match suspended(value) {
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

/// Where a name was written, for listing fields in source order.
fn source_offset(position: TermPos) -> Option<Written> {
    position.into_opt().map(|span| (span.src_id, span.start.0))
}
