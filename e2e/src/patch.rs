//! The three PATCH content types of the Kubernetes API: JSON merge patch
//! (`application/merge-patch+json`, RFC 7386), JSON patch (`application/json-patch+json`,
//! RFC 6902) and strategic merge patch (`application/strategic-merge-patch+json`).
//!
//! The strategic merge patch is a port of the server side of
//! `k8s.io/apimachinery/pkg/util/strategicpatch` (`StrategicMergeMapPatch`): the same
//! directives, the same element order in merged lists and the same error messages, with the
//! patch metadata (`x-kubernetes-patch-strategy`, `x-kubernetes-patch-merge-key`) read from the
//! vendored OpenAPI schema instead of Go struct tags.

use crate::schema::Schema;
use serde_json::map::Entry;
use serde_json::{Map, Value};
use std::fmt::Write as _;

type Object = Map<String, Value>;

/// The most operations Kubernetes accepts in one JSON patch.
pub const MAX_JSON_PATCH_OPERATIONS: usize = 10_000;

/// The directive key of a map or list element: `$patch: replace | delete`.
const DIRECTIVE: &str = "$patch";
/// Keeps only the listed fields of the map it is in.
const RETAIN_KEYS: &str = "$retainKeys";
/// Prefix of the parallel list that removes values from a merged list of scalars.
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList";
/// Prefix of the parallel list that gives the order of a merged list.
const SET_ELEMENT_ORDER: &str = "$setElementOrder";

/// Go's name for a JSON object, as Kubernetes prints it in errors.
const GO_MAP: &str = "map[string]interface {}";
/// Go's name for a JSON array, as Kubernetes prints it in errors.
const GO_SLICE: &str = "[]interface {}";

/// Why a patch could not be applied. The Display text is the message Kubernetes puts in the
/// `Status` it answers with; [`PatchError::code`] is that Status' HTTP code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// The body of a merge or strategic merge patch is JSON but not an object (the kind of
    /// JSON value it is: `array`, `string`, `number` or `bool`).
    #[error("json: cannot unmarshal {0} into Go value of type map[string]interface {{}}")]
    NotAnObject(&'static str),
    /// A merge patch whose body is `null`.
    #[error("Invalid JSON Patch")]
    InvalidMergePatch,
    /// The body of a JSON patch is not a list of operations.
    #[error("invalid JSON patch: {0}")]
    InvalidJsonPatch(String),
    /// A JSON patch with more than [`MAX_JSON_PATCH_OPERATIONS`] operations.
    #[error(
        "The allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPERATIONS}, got {0}"
    )]
    TooManyOperations(usize),
    /// A JSON patch `test` operation found another value at its path.
    #[error("testing value {path} failed: test failed")]
    TestFailed {
        /// The JSON pointer of the tested value.
        path: String,
    },
    /// Another JSON patch operation could not be applied.
    #[error("{operation} operation does not apply: {reason}")]
    OperationFailed {
        /// The operation (`add`, `remove`, `replace`, `move`, `copy` or `test`).
        operation: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// A `$patch` directive with a value other than `replace` or `delete` (or `merge` on a map).
    #[error("unknown patch type: {directive} in map: {map}")]
    UnknownPatchType {
        /// The directive's value.
        directive: String,
        /// The map holding the directive.
        map: String,
    },
    /// An element of a merged list of objects lacks the list's merge key.
    #[error("map: {map} does not contain declared merge key: {key}")]
    NoMergeKey {
        /// The element.
        map: String,
        /// The merge key.
        key: String,
    },
    /// `$patch: merge` as an element of a list.
    #[error("merging lists cannot yet be specified in the patch")]
    MergeDirectiveInList,
    /// A list of objects to merge whose schema declares no merge key (the list's field).
    #[error("cannot merge lists without merge key for {0}")]
    NoMergeKeyForList(String),
    /// A merged list whose elements are lists.
    #[error("lists of lists are not supported")]
    ListOfLists,
    /// A merged list whose elements (original and patch together) are of different JSON types.
    #[error("list element types are not identical: {0}")]
    MixedListElements(String),
    /// `$setElementOrder` for a list that is empty in the original and the patch.
    #[error("no elements in any of the given slices")]
    NoElements,
    /// A value of the wrong JSON type where the patch format needs a list or an object.
    #[error("expected a {expected}, but received a {actual}")]
    BadArgType {
        /// Go's name of the type needed.
        expected: &'static str,
        /// Go's name of the type found.
        actual: &'static str,
    },
    /// An element of a `$setElementOrder` list of objects is not an object (its index).
    #[error("value for key {0} is not a map.")]
    NotAMap(usize),
    /// A malformed `$deleteFromPrimitiveList/<field>` key.
    #[error("invalid patch format of primitive list")]
    BadPrimitiveListFormat,
    /// A `$retainKeys` that is not a list, or a patch setting a field it does not list.
    #[error("invalid patch format of retainKeys")]
    BadRetainKeysFormat,
    /// A malformed `$setElementOrder/<field>` key.
    #[error("invalid patch format of setElementOrder list")]
    BadSetElementOrderFormat,
    /// A patch list whose elements are not in the order of its `$setElementOrder` list.
    #[error("The order in patch list:\n{patch}\n doesn't match $setElementOrder list:\n{order}\n")]
    OrderMismatch {
        /// The patch list.
        patch: String,
        /// The `$setElementOrder` list.
        order: String,
    },
}

impl PatchError {
    /// The HTTP status code of the Kubernetes `Status` for this error: 400 for malformed
    /// bodies and patch formats, 413 for too many JSON patch operations, 422 for JSON patch
    /// operations that do not apply (and lists of lists), 500 for the other strategic merge
    /// patch errors, which Kubernetes does not classify.
    pub fn code(&self) -> u16 {
        match self {
            PatchError::NotAnObject(_)
            | PatchError::InvalidMergePatch
            | PatchError::InvalidJsonPatch(_)
            | PatchError::BadPrimitiveListFormat
            | PatchError::BadRetainKeysFormat
            | PatchError::BadSetElementOrderFormat => 400,
            PatchError::TooManyOperations(_) => 413,
            PatchError::TestFailed { .. }
            | PatchError::OperationFailed { .. }
            | PatchError::ListOfLists => 422,
            _ => 500,
        }
    }
}

/// Applies a JSON merge patch (RFC 7386): objects merge recursively, `null` removes a field,
/// anything else (lists included) replaces. The patch must be a JSON object.
pub fn merge_patch(original: &Value, patch: &Value) -> Result<Value, PatchError> {
    match patch {
        Value::Object(_) => {
            let mut document = original.clone();
            ::json_patch::merge(&mut document, patch);
            Ok(document)
        }
        Value::Null => Err(PatchError::InvalidMergePatch),
        other => Err(PatchError::NotAnObject(json_kind(other))),
    }
}

/// Applies a JSON patch (RFC 6902): a list of `add`, `remove`, `replace`, `move`, `copy` and
/// `test` operations, all or nothing.
pub fn json_patch(original: &Value, patch: &Value) -> Result<Value, PatchError> {
    let operations: ::json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|error| PatchError::InvalidJsonPatch(error.to_string()))?;
    if operations.len() > MAX_JSON_PATCH_OPERATIONS {
        return Err(PatchError::TooManyOperations(operations.len()));
    }
    let mut document = original.clone();
    // The document is a copy that is dropped on error, so the undo log of `patch` is not needed.
    ::json_patch::patch_unsafe(&mut document, &operations)
        .map_err(|error| operation_error(&error, &operations))?;
    Ok(document)
}

/// Describes a failed JSON patch operation the way Kubernetes (evanphx/json-patch) does.
fn operation_error(
    error: &::json_patch::PatchError,
    operations: &[::json_patch::PatchOperation],
) -> PatchError {
    use ::json_patch::{PatchErrorKind, PatchOperation};
    let path = error.path.to_string();
    let operation = operations.get(error.operation);
    let name = match operation {
        Some(PatchOperation::Add(_)) => "add",
        Some(PatchOperation::Remove(_)) => "remove",
        Some(PatchOperation::Replace(_)) => "replace",
        Some(PatchOperation::Move(_)) => "move",
        Some(PatchOperation::Copy(_)) => "copy",
        Some(PatchOperation::Test(_)) | None => "test",
    };
    let reason = match &error.kind {
        PatchErrorKind::TestFailed => return PatchError::TestFailed { path },
        PatchErrorKind::InvalidPointer => format!("doc is missing path: \"{path}\": missing value"),
        PatchErrorKind::InvalidFromPointer => {
            let from = match operation {
                Some(PatchOperation::Move(op)) => op.from.to_string(),
                Some(PatchOperation::Copy(op)) => op.from.to_string(),
                _ => path,
            };
            format!("doc is missing from path: \"{from}\": missing value")
        }
        other => other.to_string(),
    };
    PatchError::OperationFailed {
        operation: name,
        reason,
    }
}

/// Applies a strategic merge patch to an object whose schema is `schema` (a built-in kind).
///
/// Maps merge recursively and `null` removes a field. Lists whose patch strategy is `merge`
/// merge element by element: lists of objects on their merge key, lists of scalars as
/// ordered sets; other lists are replaced. The directives `$patch` (`replace`, `delete`),
/// `$retainKeys`, `$deleteFromPrimitiveList/<list>` and `$setElementOrder/<list>` are
/// applied and never remain in the result. Positions without a schema merge maps and replace
/// lists. A `null` patch changes nothing; any other patch must be a JSON object.
pub fn strategic_merge_patch(
    original: &Value,
    patch: &Value,
    schema: Schema,
) -> Result<Value, PatchError> {
    let patch = match patch {
        Value::Object(patch) => patch.clone(),
        Value::Null => return Ok(original.clone()),
        other => return Err(PatchError::NotAnObject(json_kind(other))),
    };
    let original = original.as_object().cloned().unwrap_or_default();
    merge_map(original, patch, schema).map(Value::Object)
}

/// Merges a patch map into an original map (`mergeMap`).
fn merge_map(
    mut original: Object,
    mut patch: Object,
    schema: Schema,
) -> Result<Object, PatchError> {
    if let Some(directive) = patch.get(DIRECTIVE) {
        return match directive.as_str() {
            Some("replace") => {
                patch.remove(DIRECTIVE);
                Ok(literal_object(patch))
            }
            Some("delete") => Ok(Object::new()),
            _ => Err(unknown_patch_type(directive, &patch)),
        };
    }
    apply_retain_keys(&mut original, &mut patch)?;
    merge_element_orders(&mut original, &mut patch, schema)?;
    for (key, value) in patch {
        if key.starts_with(DELETE_FROM_PRIMITIVE_LIST) {
            let field = extract_key(&key, DELETE_FROM_PRIMITIVE_LIST)
                .ok_or(PatchError::BadPrimitiveListFormat)?;
            merge_field(&mut original, field.to_owned(), value, true, schema)?;
        } else {
            merge_field(&mut original, key, value, false, schema)?;
        }
    }
    Ok(original)
}

/// Merges the patch value of one field into `original`. `delete_list` marks the values of a
/// `$deleteFromPrimitiveList/<field>` directive.
fn merge_field(
    original: &mut Object,
    field: String,
    value: Value,
    delete_list: bool,
    schema: Schema,
) -> Result<(), PatchError> {
    if value.is_null() {
        original.remove(&field);
        return Ok(());
    }
    let field_schema = schema.field(&field);
    let strategy = field_strategy(schema, &field);
    let mut slot = match original.entry(field) {
        Entry::Vacant(slot) => {
            if !delete_list && let Some(value) = fresh(value) {
                slot.insert(value);
            }
            return Ok(());
        }
        Entry::Occupied(slot) => slot,
    };
    if GoType::of(slot.get()) != GoType::of(&value) {
        if !delete_list {
            match fresh(value) {
                Some(value) => {
                    slot.insert(value);
                }
                None => {
                    slot.remove();
                }
            }
        }
        return Ok(());
    }
    let merged = match (slot.get_mut().take(), value) {
        (Value::Object(current), Value::Object(patch)) => {
            Value::Object(if strategy == Some("replace") {
                literal_object(patch)
            } else {
                merge_map(current, patch, field_schema)?
            })
        }
        (Value::Array(current), Value::Array(patch)) => Value::Array(merge_list_field(
            current,
            patch,
            ListField {
                name: slot.key(),
                schema: field_schema,
                strategy,
            },
            delete_list,
        )?),
        (_, patch) => patch,
    };
    *slot.get_mut() = merged;
    Ok(())
}

/// What merging a list needs to know about its field.
#[derive(Clone, Copy)]
struct ListField<'a, 's> {
    /// The field's name.
    name: &'a str,
    /// The schema of the list.
    schema: Schema<'s>,
    /// The field's patch strategy without `retainKeys`.
    strategy: Option<&'s str>,
}

impl<'s> ListField<'_, 's> {
    /// The merge key of the list's elements, if it has one.
    fn merge_key(&self) -> Option<&'s str> {
        self.schema.patch_merge_key().filter(|key| !key.is_empty())
    }
}

/// The patch strategy of field `name` of an object with schema `parent`, without
/// `retainKeys` (which only matters to clients building patches). Read from the declared
/// property itself because [`Schema::field`] follows a `$ref` and loses the extensions beside
/// it (`PodDisruptionBudgetSpec.selector` is `replace`).
fn field_strategy<'s>(parent: Schema<'s>, name: &str) -> Option<&'s str> {
    parent
        .node()
        .and_then(|node| node.get("properties"))
        .and_then(|properties| properties.get(name))
        .and_then(|property| property.get("x-kubernetes-patch-strategy"))
        .and_then(Value::as_str)
        .or_else(|| parent.field(name).patch_strategy())?
        .split(',')
        .find(|strategy| *strategy != "retainKeys")
}

/// Merges a patch list into the original list of a field (`mergeSliceHandler`): element by
/// element for `merge` lists and deletion lists, else the patch replaces the list.
fn merge_list_field(
    original: Vec<Value>,
    patch: Vec<Value>,
    field: ListField,
    delete_list: bool,
) -> Result<Vec<Value>, PatchError> {
    if field.strategy == Some("merge") || delete_list {
        merge_list(original, patch, field, delete_list)
    } else {
        Ok(patch.into_iter().map(literal).collect())
    }
}

/// Merges two lists element by element (`mergeSlice`), then orders the result: patch
/// elements in patch order, interleaved with the elements only the original has in their
/// original order.
fn merge_list(
    original: Vec<Value>,
    patch: Vec<Value>,
    field: ListField,
    delete_list: bool,
) -> Result<Vec<Value>, PatchError> {
    if original.is_empty() && patch.is_empty() {
        return Ok(original);
    }
    let kind = element_type(&original, &patch)?;
    let merge_key = field.merge_key();
    let (original, patch, merged) = if kind == GoType::Map {
        let key = merge_key.ok_or_else(|| PatchError::NoMergeKeyForList(field.name.to_owned()))?;
        let (original, patch) = apply_list_directives(original, patch, key)?;
        let merged = merge_elements(original.clone(), &patch, key, field.schema.items())?;
        (original, patch, merged)
    } else {
        if delete_list {
            return Ok(original
                .into_iter()
                .filter(|item| !patch.contains(item))
                .collect());
        }
        let mut merged: Vec<Value> = Vec::with_capacity(original.len() + patch.len());
        for item in original.iter().chain(&patch) {
            if !merged.contains(item) {
                merged.push(item.clone());
            }
        }
        (original, patch, merged)
    };
    let (patch_items, server_only) = partition(merged, &patch, merge_key)?;
    let order = Ordering { merge_key, kind };
    order.normalize(patch_items, server_only, &patch, &original)
}

/// Applies the `$patch` elements of a patch list of objects (`mergeSliceWithSpecialElements`):
/// `delete` removes the original elements with that merge key, `replace` makes the rest of
/// the patch list the new list. Returns the original and patch lists left to merge.
fn apply_list_directives(
    mut original: Vec<Value>,
    patch: Vec<Value>,
    key: &str,
) -> Result<(Vec<Value>, Vec<Value>), PatchError> {
    let mut kept = Vec::with_capacity(patch.len());
    let mut replace = false;
    for element in patch {
        let Value::Object(map) = &element else {
            return Err(bad_arg_type(GO_MAP, &element));
        };
        match map.get(DIRECTIVE) {
            None => kept.push(element),
            Some(directive) => match directive.as_str() {
                Some("delete") => {
                    let Some(value) = map.get(key) else {
                        return Err(no_merge_key(map, key));
                    };
                    original.retain(|item| item.get(key) != Some(value));
                }
                Some("replace") => replace = true,
                Some("merge") => return Err(PatchError::MergeDirectiveInList),
                _ => return Err(unknown_patch_type(directive, map)),
            },
        }
    }
    Ok(if replace {
        (kept.into_iter().map(literal).collect(), Vec::new())
    } else {
        (original, kept)
    })
}

/// Merges each patch element into the original element with the same merge key, or appends
/// it (`mergeSliceWithoutSpecialElements`).
fn merge_elements(
    mut original: Vec<Value>,
    patch: &[Value],
    key: &str,
    items: Schema,
) -> Result<Vec<Value>, PatchError> {
    for element in patch {
        let Value::Object(map) = element else {
            return Err(bad_arg_type(GO_MAP, element));
        };
        let Some(value) = map.get(key) else {
            return Err(no_merge_key(map, key));
        };
        match original
            .iter()
            .position(|item| item.get(key) == Some(value))
        {
            Some(index) => {
                let current = match original[index].take() {
                    Value::Object(current) => current,
                    _ => return Err(PatchError::NotAMap(index)),
                };
                original[index] = Value::Object(merge_map(current, map.clone(), items)?);
            }
            None => original.push(literal(element.clone())),
        }
    }
    Ok(original)
}

/// Splits `merged` into the elements that `by` has (by merge key, or by value for scalars)
/// and the others, each in the order of `merged`.
fn partition(
    merged: Vec<Value>,
    by: &[Value],
    merge_key: Option<&str>,
) -> Result<(Vec<Value>, Vec<Value>), PatchError> {
    let Some(key) = merge_key else {
        return Ok(merged.into_iter().partition(|item| by.contains(item)));
    };
    let mut present = Vec::new();
    let mut absent = Vec::new();
    for item in merged {
        let Value::Object(map) = &item else {
            return Err(bad_arg_type(GO_MAP, &item));
        };
        let Some(value) = map.get(key) else {
            return Err(no_merge_key(map, key));
        };
        if contains_key_value(by, key, value)? {
            present.push(item);
        } else {
            absent.push(item);
        }
    }
    Ok((present, absent))
}

/// Whether a list of objects has one whose `key` is `value` (`findMapInSliceBasedOnKeyValue`).
fn contains_key_value(list: &[Value], key: &str, value: &Value) -> Result<bool, PatchError> {
    for (index, item) in list.iter().enumerate() {
        let Value::Object(map) = item else {
            return Err(PatchError::NotAMap(index));
        };
        if map.get(key) == Some(value) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// How the elements of a merged list are identified when ordering it.
#[derive(Clone, Copy)]
struct Ordering<'k> {
    /// The merge key of lists of objects.
    merge_key: Option<&'k str>,
    /// The type of the elements.
    kind: GoType,
}

impl Ordering<'_> {
    /// What identifies an element: its merge key for objects, else itself.
    fn identity<'v>(&self, item: &'v Value) -> Option<&'v Value> {
        if self.kind == GoType::Map {
            item.get(self.merge_key.unwrap_or_default())
        } else {
            Some(item)
        }
    }

    /// The position of `item` in `list`.
    fn index(&self, list: &[Value], item: &Value) -> Option<usize> {
        let identity = self.identity(item);
        list.iter()
            .position(|other| self.identity(other) == identity)
    }

    /// Orders the patch elements by `patch_order` and the server-only elements by
    /// `server_order`, then interleaves them (`normalizeElementOrder`).
    fn normalize(
        &self,
        patch_items: Vec<Value>,
        server_only: Vec<Value>,
        patch_order: &[Value],
        server_order: &[Value],
    ) -> Result<Vec<Value>, PatchError> {
        let patch_items = self.sort(patch_items, patch_order)?;
        let server_only = self.sort(server_only, server_order)?;
        Ok(self.interleave(server_only, patch_items, server_order))
    }

    /// Sorts `items` by their position in `order`, moving `$patch: delete` elements last
    /// (`normalizeSliceOrder`).
    fn sort(&self, items: Vec<Value>, order: &[Value]) -> Result<Vec<Value>, PatchError> {
        let (mut items, deletions) = if self.kind == GoType::Map {
            let key = self.merge_key.unwrap_or_default();
            validate_merge_key(key, &items)?;
            validate_merge_key(key, order)?;
            split_deletions(items)?
        } else {
            (items, Vec::new())
        };
        items.sort_by_key(|item| self.index(order, item).unwrap_or(usize::MAX));
        items.extend(deletions);
        Ok(items)
    }

    /// Merges two sorted lists, taking a server-only element first only when it comes before
    /// the next patch element in `server_order` (`mergeSortedSlice`). New patch elements so
    /// come before the original ones.
    fn interleave(
        &self,
        server_only: Vec<Value>,
        patch_items: Vec<Value>,
        server_order: &[Value],
    ) -> Vec<Value> {
        let mut merged = Vec::with_capacity(server_only.len() + patch_items.len());
        let mut left = server_only.into_iter().peekable();
        let mut right = patch_items.into_iter().peekable();
        loop {
            let take_left = match (left.peek(), right.peek()) {
                (None, None) => break,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some(l), Some(r)) => matches!(
                    (self.index(server_order, l), self.index(server_order, r)),
                    (Some(li), Some(ri)) if li < ri
                ),
            };
            let next = if take_left { left.next() } else { right.next() };
            merged.extend(next);
        }
        merged
    }
}

/// Checks that every element of `list` is an object with `key` (`validateMergeKeyInLists`).
fn validate_merge_key(key: &str, list: &[Value]) -> Result<(), PatchError> {
    for item in list {
        let Value::Object(map) = item else {
            return Err(bad_arg_type(GO_MAP, item));
        };
        if !map.contains_key(key) {
            return Err(no_merge_key(map, key));
        }
    }
    Ok(())
}

/// Splits a list of objects into the elements without and with `$patch: delete`
/// (`extractToDeleteItems`).
fn split_deletions(list: Vec<Value>) -> Result<(Vec<Value>, Vec<Value>), PatchError> {
    let mut kept = Vec::new();
    let mut deletions = Vec::new();
    for item in list {
        let Value::Object(map) = &item else {
            return Err(bad_arg_type(GO_MAP, &item));
        };
        if map.get(DIRECTIVE).and_then(Value::as_str) == Some("delete") {
            deletions.push(item);
        } else {
            kept.push(item);
        }
    }
    Ok((kept, deletions))
}

/// The type shared by the elements of two lists (`sliceElementType`).
fn element_type(original: &[Value], patch: &[Value]) -> Result<GoType, PatchError> {
    let mut found = None;
    for item in original.iter().chain(patch) {
        let kind = GoType::of(item);
        match found {
            None if kind == GoType::Slice => return Err(PatchError::ListOfLists),
            None => found = Some(kind),
            Some(previous) if previous != kind => {
                let mut lists = String::from("[");
                go_format_list(&mut lists, original, Verb::V);
                lists.push(' ');
                go_format_list(&mut lists, patch, Verb::V);
                lists.push(']');
                return Err(PatchError::MixedListElements(lists));
            }
            Some(_) => {}
        }
    }
    found.ok_or(PatchError::NoElements)
}

/// Applies `$retainKeys`: the patch may only set the listed fields, and the fields of the
/// original it does not list are removed (`applyRetainKeysDirective`).
fn apply_retain_keys(original: &mut Object, patch: &mut Object) -> Result<(), PatchError> {
    let Some(retained) = patch.remove(RETAIN_KEYS) else {
        return Ok(());
    };
    let Value::Array(retained) = retained else {
        return Err(PatchError::BadRetainKeysFormat);
    };
    let is_retained = |key: &str| retained.iter().any(|value| value.as_str() == Some(key));
    let sets_unlisted = patch.iter().any(|(key, value)| {
        !value.is_null()
            && !key.starts_with(DELETE_FROM_PRIMITIVE_LIST)
            && !key.starts_with(SET_ELEMENT_ORDER)
            && !is_retained(key)
    });
    if sets_unlisted {
        return Err(PatchError::BadRetainKeysFormat);
    }
    original.retain(|key, _| is_retained(key));
    Ok(())
}

/// Applies the `$setElementOrder/<list>` directives: merges the list as usual, then orders
/// it by the directive, keeping the elements it does not name where they were relative to
/// the original (`mergePatchIntoOriginal`).
fn merge_element_orders(
    original: &mut Object,
    patch: &mut Object,
    schema: Schema,
) -> Result<(), PatchError> {
    let keys: Vec<String> = patch
        .keys()
        .filter(|key| key.starts_with(SET_ELEMENT_ORDER))
        .cloned()
        .collect();
    for key in keys {
        let order = match patch.remove(&key) {
            Some(Value::Array(order)) => order,
            Some(other) => return Err(bad_arg_type(GO_SLICE, &other)),
            None => continue,
        };
        let name =
            extract_key(&key, SET_ELEMENT_ORDER).ok_or(PatchError::BadSetElementOrderFormat)?;
        let original_list = list_field(original, name)?;
        let patch_list = list_field(patch, name)?;
        let field = ListField {
            name,
            schema: schema.field(name),
            strategy: field_strategy(schema, name),
        };
        let merge_key = field.merge_key();
        validate_order(patch_list.unwrap_or_default(), &order, merge_key)?;
        let merged = match (original_list, patch_list) {
            (Some(original_list), None) => original_list.to_vec(),
            (None, Some(patch_list)) => patch_list.iter().cloned().filter_map(fresh).collect(),
            (Some(original_list), Some(patch_list)) => {
                merge_list_field(original_list.to_vec(), patch_list.to_vec(), field, false)?
            }
            (None, None) => continue,
        };
        let (patch_items, server_only) = partition(merged, &order, merge_key)?;
        let original_list = original_list.unwrap_or_default();
        let ordering = Ordering {
            merge_key,
            kind: element_type(original_list, patch_list.unwrap_or_default())?,
        };
        let ordered = ordering.normalize(patch_items, server_only, &order, original_list)?;
        original.insert(name.to_owned(), Value::Array(ordered));
        patch.remove(name);
    }
    Ok(())
}

/// The list in field `name` of `map`, if the field is there.
fn list_field<'m>(map: &'m Object, name: &str) -> Result<Option<&'m [Value]>, PatchError> {
    match map.get(name) {
        None => Ok(None),
        Some(Value::Array(list)) => Ok(Some(list)),
        Some(other) => Err(bad_arg_type(GO_SLICE, other)),
    }
}

/// Checks that the elements of a patch list appear in the same relative order in its
/// `$setElementOrder` list (`validatePatchWithSetOrderList`).
fn validate_order(
    patch: &[Value],
    order: &[Value],
    merge_key: Option<&str>,
) -> Result<(), PatchError> {
    if order.is_empty() || patch.is_empty() {
        return Ok(());
    }
    let mut items: Vec<&Value> = Vec::with_capacity(patch.len());
    for item in patch {
        if merge_key.is_some() {
            let Value::Object(map) = item else {
                return Err(bad_arg_type(GO_MAP, item));
            };
            if map.get(DIRECTIVE).and_then(Value::as_str) == Some("delete") {
                continue;
            }
        }
        items.push(item);
    }
    let (mut patch_index, mut order_index) = (0, 0);
    while patch_index < items.len() && order_index < order.len() {
        let item = items[patch_index];
        if item.get(DIRECTIVE).is_some() {
            patch_index += 1;
            continue;
        }
        if merge_key_value_equal(item, &order[order_index], merge_key)? {
            patch_index += 1;
        }
        order_index += 1;
    }
    if patch_index < items.len() && order_index >= order.len() {
        let mut patch_text = String::new();
        go_format_list(&mut patch_text, patch, Verb::V);
        let mut order_text = String::new();
        go_format_list(&mut order_text, order, Verb::V);
        return Err(PatchError::OrderMismatch {
            patch: patch_text,
            order: order_text,
        });
    }
    Ok(())
}

/// Whether two list elements are the same: same merge key value for objects, same value for
/// scalars (`mergeKeyValueEqual`).
fn merge_key_value_equal(
    left: &Value,
    right: &Value,
    merge_key: Option<&str>,
) -> Result<bool, PatchError> {
    let Some(key) = merge_key else {
        return Ok(left == right);
    };
    let (Value::Object(left), Value::Object(right)) = (left, right) else {
        let culprit = if left.is_object() { right } else { left };
        return Err(bad_arg_type(GO_MAP, culprit));
    };
    let Some(left_value) = left.get(key) else {
        return Err(no_merge_key(left, key));
    };
    let Some(right_value) = right.get(key) else {
        return Err(no_merge_key(right, key));
    };
    Ok(left_value == right_value)
}

/// The field named by a `<prefix>/<field>` directive key.
fn extract_key<'k>(key: &'k str, prefix: &str) -> Option<&'k str> {
    let (head, field) = key.split_once('/')?;
    (head == prefix).then_some(field)
}

/// Whether a map key is a patch directive rather than a field.
fn is_directive_key(key: &str) -> bool {
    key == DIRECTIVE
        || key == RETAIN_KEYS
        || key.starts_with(SET_ELEMENT_ORDER)
        || key.starts_with(DELETE_FROM_PRIMITIVE_LIST)
}

/// A patch value for a field the original lacks: `null` fields are dropped, and so are maps
/// and list elements carrying a `$patch` directive, and all other directive keys
/// (`discardNullValuesFromPatch` and `removeDirectives`). `None` when the value itself goes.
fn fresh(value: Value) -> Option<Value> {
    match value {
        Value::Object(map) => {
            if map.contains_key(DIRECTIVE) {
                return None;
            }
            Some(Value::Object(
                map.into_iter()
                    .filter(|(key, value)| !value.is_null() && !is_directive_key(key))
                    .filter_map(|(key, value)| Some((key, fresh(value)?)))
                    .collect(),
            ))
        }
        Value::Array(items) => Some(Value::Array(items.into_iter().filter_map(fresh).collect())),
        other => Some(other),
    }
}

/// A patch value taken as it is (a replaced list or map, a new list element): without its
/// directive keys and `null` fields, which Kubernetes drops when decoding the result.
fn literal(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(literal_object(map)),
        Value::Array(items) => Value::Array(items.into_iter().map(literal).collect()),
        other => other,
    }
}

/// [`literal`] for a map.
fn literal_object(map: Object) -> Object {
    map.into_iter()
        .filter(|(key, value)| !value.is_null() && !is_directive_key(key))
        .map(|(key, value)| (key, literal(value)))
        .collect()
}

/// `mergepatch.ErrBadPatchType`.
fn unknown_patch_type(directive: &Value, map: &Object) -> PatchError {
    let mut directive_text = String::new();
    go_format(&mut directive_text, directive, Verb::S);
    let mut map_text = String::new();
    go_format_map(&mut map_text, map, Verb::V);
    PatchError::UnknownPatchType {
        directive: directive_text,
        map: map_text,
    }
}

/// `mergepatch.ErrNoMergeKey`.
fn no_merge_key(map: &Object, key: &str) -> PatchError {
    let mut map_text = String::new();
    go_format_map(&mut map_text, map, Verb::V);
    PatchError::NoMergeKey {
        map: map_text,
        key: key.to_owned(),
    }
}

/// `mergepatch.ErrBadArgType`.
fn bad_arg_type(expected: &'static str, actual: &Value) -> PatchError {
    PatchError::BadArgType {
        expected,
        actual: GoType::of(actual).name(),
    }
}

/// The JSON kind of a value, in the words of Go's JSON decoder.
fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The Go type Kubernetes decodes a JSON value into (integers stay `int64`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GoType {
    Nil,
    Bool,
    Int,
    Float,
    String,
    Slice,
    Map,
}

impl GoType {
    /// The type of a value.
    fn of(value: &Value) -> GoType {
        match value {
            Value::Null => GoType::Nil,
            Value::Bool(_) => GoType::Bool,
            Value::Number(number) if number.is_i64() => GoType::Int,
            Value::Number(_) => GoType::Float,
            Value::String(_) => GoType::String,
            Value::Array(_) => GoType::Slice,
            Value::Object(_) => GoType::Map,
        }
    }

    /// The type's name as `%s` of `reflect.TypeOf` prints it.
    fn name(self) -> &'static str {
        match self {
            GoType::Nil => "%!s(<nil>)",
            GoType::Bool => "bool",
            GoType::Int => "int64",
            GoType::Float => "float64",
            GoType::String => "string",
            GoType::Slice => GO_SLICE,
            GoType::Map => GO_MAP,
        }
    }
}

/// A Go formatting verb.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Verb {
    /// `%v`.
    V,
    /// `%s`.
    S,
}

/// Writes a value the way Go's `fmt` prints the decoded value (`map[a:1 b:[x y]]`).
fn go_format(out: &mut String, value: &Value, verb: Verb) {
    let scalar = match value {
        Value::Null => "<nil>".to_owned(),
        Value::Bool(flag) => flag.to_string(),
        Value::Number(number) => match number.as_i64() {
            Some(integer) => integer.to_string(),
            None => go_float(number.as_f64().unwrap_or_default()),
        },
        Value::String(text) => return out.push_str(text),
        Value::Array(items) => return go_format_list(out, items, verb),
        Value::Object(map) => return go_format_map(out, map, verb),
    };
    match (verb, value) {
        (Verb::V, _) => out.push_str(&scalar),
        (Verb::S, Value::Null) => out.push_str("%!s(<nil>)"),
        (Verb::S, _) => {
            let _ = write!(out, "%!s({}={scalar})", GoType::of(value).name());
        }
    }
}

/// [`go_format`] for a list: `[a b]`.
fn go_format_list(out: &mut String, items: &[Value], verb: Verb) {
    out.push('[');
    for (index, item) in items.iter().enumerate() {
        if index > 0 {
            out.push(' ');
        }
        go_format(out, item, verb);
    }
    out.push(']');
}

/// [`go_format`] for a map: `map[k:v]`, keys sorted.
fn go_format_map(out: &mut String, map: &Object, verb: Verb) {
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_by_key(|(key, _)| *key);
    out.push_str("map[");
    for (index, (key, value)) in entries.into_iter().enumerate() {
        if index > 0 {
            out.push(' ');
        }
        out.push_str(key);
        out.push(':');
        go_format(out, value, verb);
    }
    out.push(']');
}

/// A float as Go's `%v` prints it: the shortest representation, in exponent form below
/// 1e-4 and from 1e+06 on.
fn go_float(value: f64) -> String {
    if value == 0.0 || !value.is_finite() {
        return value.to_string();
    }
    let scientific = format!("{value:e}");
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or_default();
    if (-4..6).contains(&exponent) {
        value.to_string()
    } else {
        let sign = if exponent < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exponent.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment() -> Schema<'static> {
        Schema::builtin("io.k8s.api.apps.v1.Deployment")
    }

    fn smp(original: Value, patch: Value) -> Result<Value, PatchError> {
        strategic_merge_patch(&original, &patch, deployment())
    }

    fn smp_error(original: Value, patch: Value) -> String {
        match smp(original, patch) {
            Ok(result) => panic!("expected an error, got {result}"),
            Err(error) => error.to_string(),
        }
    }

    fn pod_template(containers: Value) -> Value {
        json!({"spec": {"template": {"spec": {"containers": containers}}}})
    }

    fn containers(result: &Value) -> &Value {
        &result["spec"]["template"]["spec"]["containers"]
    }

    fn web_deployment() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web", "tier": "front"},
                         "finalizers": ["a", "b", "c"]},
            "spec": {
                "replicas": 1,
                "strategy": {"type": "RollingUpdate",
                             "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                "template": {"spec": {"containers": [
                    {"name": "app", "image": "app:1",
                     "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
                    {"name": "sidecar", "image": "sidecar:1"}
                ]}}
            }
        })
    }

    #[test]
    fn merge_patch_merges_objects_and_deletes_nulls() {
        let original = json!({"a": {"b": 1, "c": 2}, "list": [1, 2], "gone": true});
        let patch = json!({"a": {"b": null, "d": {"e": null, "f": 3}}, "list": [3], "gone": null});
        assert_eq!(
            merge_patch(&original, &patch),
            Ok(json!({"a": {"c": 2, "d": {"f": 3}}, "list": [3]}))
        );
    }

    #[test]
    fn merge_patch_rejects_non_objects() {
        let original = json!({});
        assert_eq!(
            merge_patch(&original, &json!([1])).map_err(|e| e.to_string()),
            Err(
                "json: cannot unmarshal array into Go value of type map[string]interface {}"
                    .to_owned()
            )
        );
        assert_eq!(
            merge_patch(&original, &json!("x")).map_err(|e| e.to_string()),
            Err(
                "json: cannot unmarshal string into Go value of type map[string]interface {}"
                    .to_owned()
            )
        );
        let error = merge_patch(&original, &Value::Null).unwrap_err();
        assert_eq!(error.to_string(), "Invalid JSON Patch");
        assert_eq!(error.code(), 400);
    }

    #[test]
    fn json_patch_applies_every_operation() {
        let original = json!({"metadata": {"name": "x", "labels": {"a": "1"}}, "list": [1, 2]});
        let patch = json!([
            {"op": "test", "path": "/metadata/name", "value": "x"},
            {"op": "add", "path": "/metadata/labels/b", "value": "2"},
            {"op": "replace", "path": "/metadata/labels/a", "value": "one"},
            {"op": "remove", "path": "/list/0"},
            {"op": "add", "path": "/list/-", "value": 3},
            {"op": "copy", "from": "/metadata/labels/b", "path": "/copied"},
            {"op": "move", "from": "/copied", "path": "/moved"}
        ]);
        assert_eq!(
            json_patch(&original, &patch),
            Ok(
                json!({"metadata": {"name": "x", "labels": {"a": "one", "b": "2"}},
                      "list": [2, 3], "moved": "2"})
            )
        );
    }

    #[test]
    fn json_patch_failing_test_operation() {
        let original = json!({"metadata": {"name": "x"}});
        let patch = json!([
            {"op": "add", "path": "/metadata/labels", "value": {}},
            {"op": "test", "path": "/metadata/name", "value": "y"}
        ]);
        let error = json_patch(&original, &patch).unwrap_err();
        assert_eq!(
            error,
            PatchError::TestFailed {
                path: "/metadata/name".to_owned()
            }
        );
        assert_eq!(
            error.to_string(),
            "testing value /metadata/name failed: test failed"
        );
        assert_eq!(error.code(), 422);
    }

    #[test]
    fn json_patch_operation_errors() {
        let original = json!({"spec": {"a": 1}});
        let message = |patch: Value| json_patch(&original, &patch).unwrap_err().to_string();
        assert_eq!(
            message(json!([{"op": "remove", "path": "/spec/missing"}])),
            "remove operation does not apply: doc is missing path: \"/spec/missing\": missing value"
        );
        assert_eq!(
            message(json!([{"op": "add", "path": "/nope/x", "value": 1}])),
            "add operation does not apply: doc is missing path: \"/nope/x\": missing value"
        );
        assert_eq!(
            message(json!([{"op": "move", "from": "/spec/b", "path": "/c"}])),
            "move operation does not apply: doc is missing from path: \"/spec/b\": missing value"
        );
        assert_eq!(
            message(json!([{"op": "copy", "from": "/x", "path": "/c"}])),
            "copy operation does not apply: doc is missing from path: \"/x\": missing value"
        );
        assert_eq!(
            message(json!([{"op": "move", "from": "/spec", "path": "/spec/inner"}])),
            "move operation does not apply: cannot move the value inside itself"
        );
        assert_eq!(
            message(json!([{"op": "test", "path": "/spec/b", "value": 1}])),
            "test operation does not apply: doc is missing path: \"/spec/b\": missing value"
        );
    }

    #[test]
    fn json_patch_rejects_malformed_bodies() {
        let original = json!({});
        let error = json_patch(&original, &json!({"op": "add"})).unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid JSON patch: invalid type: map, expected a sequence"
        );
        assert_eq!(error.code(), 400);
        assert_eq!(
            json_patch(&original, &json!([{"op": "frobnicate", "path": "/a"}]))
                .unwrap_err()
                .to_string(),
            "invalid JSON patch: unknown variant `frobnicate`, expected one of `add`, `remove`, \
             `replace`, `move`, `copy`, `test`"
        );
        let many = Value::Array(vec![json!({"op": "test", "path": "", "value": {}}); 10_001]);
        let error = json_patch(&original, &many).unwrap_err();
        assert_eq!(
            error.to_string(),
            "The allowed maximum operations in a JSON patch is 10000, got 10001"
        );
        assert_eq!(error.code(), 413);
    }

    #[test]
    fn smp_merges_containers_and_env_by_name() {
        let patch = pod_template(json!([
            {"name": "app", "image": "app:2",
             "env": [{"name": "B", "value": "two"}, {"name": "C", "value": "3"}]}
        ]));
        let result = smp(web_deployment(), patch).unwrap();
        assert_eq!(
            containers(&result),
            &json!([
                {"name": "app", "image": "app:2",
                 "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "two"},
                         {"name": "C", "value": "3"}]},
                {"name": "sidecar", "image": "sidecar:1"}
            ])
        );
        assert_eq!(result["metadata"], web_deployment()["metadata"]);
        assert_eq!(result["spec"]["replicas"], json!(1));
    }

    #[test]
    fn smp_puts_new_elements_first_like_kubernetes() {
        // Without $setElementOrder, elements the original lacks go before the original ones.
        let patch = pod_template(json!([{"name": "new", "image": "new:1"}]));
        let result = smp(web_deployment(), patch).unwrap();
        let names: Vec<&Value> = containers(&result)
            .as_array()
            .unwrap()
            .iter()
            .map(|c| &c["name"])
            .collect();
        assert_eq!(names, [&json!("new"), &json!("app"), &json!("sidecar")]);

        // The patch's own order wins over the original's.
        let original = json!({"metadata": {"finalizers": ["1", "2", "3"]}});
        let result = smp(original, json!({"metadata": {"finalizers": ["3", "1"]}})).unwrap();
        assert_eq!(result, json!({"metadata": {"finalizers": ["2", "3", "1"]}}));
    }

    #[test]
    fn smp_set_element_order() {
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "app"}, {"name": "new"}],
            "containers": [{"name": "new", "image": "new:1"}]
        }}}});
        let result = smp(web_deployment(), patch).unwrap();
        let names: Vec<&str> = containers(&result)
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert_eq!(names, ["sidecar", "app", "new"]);
        assert_eq!(containers(&result)[1]["env"][0]["name"], json!("A"));

        // Only reordering, no list in the patch.
        let patch = json!({"metadata": {"$setElementOrder/finalizers": ["c", "a", "b"]}});
        let result = smp(web_deployment(), patch).unwrap();
        assert_eq!(result["metadata"]["finalizers"], json!(["c", "a", "b"]));
    }

    #[test]
    fn smp_set_element_order_errors() {
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "app"}, {"name": "sidecar"}],
            "containers": [{"name": "sidecar", "image": "s:2"}, {"name": "app", "image": "a:2"}]
        }}}});
        assert_eq!(
            smp_error(web_deployment(), patch),
            "The order in patch list:\n[map[image:s:2 name:sidecar] map[image:a:2 name:app]]\n \
             doesn't match $setElementOrder list:\n[map[name:app] map[name:sidecar]]\n"
        );
        assert_eq!(
            smp_error(
                web_deployment(),
                json!({"metadata": {"$setElementOrder": ["a"]}})
            ),
            "invalid patch format of setElementOrder list"
        );
        assert_eq!(
            smp_error(
                web_deployment(),
                json!({"metadata": {"$setElementOrder/finalizers": "a"}})
            ),
            "expected a []interface {}, but received a string"
        );
        let patch =
            json!({"spec": {"template": {"spec": {"$setElementOrder/containers": ["app"]}}}});
        assert_eq!(
            smp_error(web_deployment(), patch),
            "value for key 0 is not a map."
        );
    }

    #[test]
    fn smp_delete_directive_in_list() {
        let patch = pod_template(json!([{"name": "sidecar", "$patch": "delete"}]));
        let result = smp(web_deployment(), patch).unwrap();
        assert_eq!(containers(&result).as_array().map(Vec::len), Some(1));
        assert_eq!(containers(&result)[0]["name"], json!("app"));

        let patch = pod_template(json!([{"$patch": "delete"}]));
        assert_eq!(
            smp_error(web_deployment(), patch),
            "map: map[$patch:delete] does not contain declared merge key: name"
        );
    }

    #[test]
    fn smp_replace_directives() {
        // On a map: the patch map replaces the whole map.
        let patch = json!({"metadata": {"labels": {"$patch": "replace", "only": "this"}}});
        let result = smp(web_deployment(), patch).unwrap();
        assert_eq!(result["metadata"]["labels"], json!({"only": "this"}));
        assert_eq!(result["metadata"]["name"], json!("web"));

        // As a list element: the rest of the patch list replaces the whole list.
        let patch =
            pod_template(json!([{"$patch": "replace"}, {"name": "solo", "image": "solo:1"}]));
        let result = smp(web_deployment(), patch).unwrap();
        assert_eq!(
            containers(&result),
            &json!([{"name": "solo", "image": "solo:1"}])
        );

        // On the whole object.
        let result = smp(web_deployment(), json!({"$patch": "replace", "kind": "X"})).unwrap();
        assert_eq!(result, json!({"kind": "X"}));
    }

    #[test]
    fn smp_delete_directive_on_map() {
        let patch = json!({"spec": {"strategy": {"$patch": "delete"}}});
        let result = smp(web_deployment(), patch).unwrap();
        assert_eq!(result["spec"]["strategy"], json!({}));
        // On a field the original lacks, the map is not created.
        let patch = json!({"spec": {"selector": {"$patch": "delete"}}});
        let result = smp(web_deployment(), patch).unwrap();
        assert_eq!(result["spec"].get("selector"), None);
    }

    #[test]
    fn smp_unknown_directives() {
        let patch = json!({"metadata": {"labels": {"$patch": "foo", "a": "b"}}});
        let error = smp(web_deployment(), patch).unwrap_err();
        assert_eq!(
            error.to_string(),
            "unknown patch type: foo in map: map[$patch:foo a:b]"
        );
        assert_eq!(error.code(), 500);
        // `merge` is not accepted on a map either.
        assert_eq!(
            smp_error(web_deployment(), json!({"metadata": {"$patch": "merge"}})),
            "unknown patch type: merge in map: map[$patch:merge]"
        );
        assert_eq!(
            smp_error(web_deployment(), json!({"spec": {"$patch": 1}})),
            "unknown patch type: %!s(int64=1) in map: map[$patch:1]"
        );
        let patch = pod_template(json!([{"name": "app", "$patch": "bogus"}]));
        assert_eq!(
            smp_error(web_deployment(), patch),
            "unknown patch type: bogus in map: map[$patch:bogus name:app]"
        );
        let patch = pod_template(json!([{"name": "app", "$patch": "merge"}]));
        assert_eq!(
            smp_error(web_deployment(), patch),
            "merging lists cannot yet be specified in the patch"
        );
    }

    #[test]
    fn smp_missing_merge_key() {
        let patch = pod_template(json!([{"image": "nginx"}]));
        let error = smp(web_deployment(), patch).unwrap_err();
        assert_eq!(
            error,
            PatchError::NoMergeKey {
                map: "map[image:nginx]".to_owned(),
                key: "name".to_owned()
            }
        );
        assert_eq!(
            error.to_string(),
            "map: map[image:nginx] does not contain declared merge key: name"
        );
    }

    #[test]
    fn smp_scalar_merge_lists() {
        // Finalizers are a merge list of scalars: a union, new values first.
        let result = smp(
            web_deployment(),
            json!({"metadata": {"finalizers": ["d", "a"]}}),
        )
        .unwrap();
        assert_eq!(
            result["metadata"]["finalizers"],
            json!(["d", "a", "b", "c"])
        );

        let patch = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a", "c", "zz"]}});
        let result = smp(web_deployment(), patch).unwrap();
        assert_eq!(result["metadata"]["finalizers"], json!(["b"]));

        // Deleting from a list the original lacks creates nothing.
        let original = json!({"metadata": {"name": "x"}});
        let patch = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}});
        assert_eq!(smp(original.clone(), patch), Ok(original));

        assert_eq!(
            smp_error(
                web_deployment(),
                json!({"metadata": {"$deleteFromPrimitiveList": ["a"]}})
            ),
            "invalid patch format of primitive list"
        );
    }

    #[test]
    fn smp_retain_keys() {
        let patch = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}});
        let result = smp(web_deployment(), patch).unwrap();
        assert_eq!(result["spec"]["strategy"], json!({"type": "Recreate"}));

        let patch = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate",
                                                  "rollingUpdate": {"maxSurge": 2}}}});
        let error = smp(web_deployment(), patch).unwrap_err();
        assert_eq!(error.to_string(), "invalid patch format of retainKeys");
        assert_eq!(error.code(), 400);

        // A null for an unlisted field is allowed.
        let patch = json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": null}}});
        let result = smp(web_deployment(), patch).unwrap();
        assert_eq!(result["spec"]["strategy"], json!({"type": "RollingUpdate"}));

        assert_eq!(
            smp_error(
                web_deployment(),
                json!({"spec": {"$retainKeys": "replicas"}})
            ),
            "invalid patch format of retainKeys"
        );
    }

    #[test]
    fn smp_retain_keys_in_merged_list_elements() {
        // PodSpec.volumes has the strategy `merge,retainKeys`: merged by name.
        let original = json!({"spec": {"template": {"spec": {"volumes": [
            {"name": "config", "configMap": {"name": "settings"}},
            {"name": "cache", "emptyDir": {}}
        ]}}}});
        let patch = json!({"spec": {"template": {"spec": {"volumes": [
            {"name": "config", "$retainKeys": ["name", "secret"], "secret": {"secretName": "s"}}
        ]}}}});
        let result = smp(original, patch).unwrap();
        assert_eq!(
            result["spec"]["template"]["spec"]["volumes"],
            json!([{"name": "config", "secret": {"secretName": "s"}},
                   {"name": "cache", "emptyDir": {}}])
        );
    }

    #[test]
    fn smp_null_deletes_fields() {
        let patch = json!({"metadata": {"labels": {"tier": null}}, "spec": {"strategy": null}});
        let result = smp(web_deployment(), patch).unwrap();
        assert_eq!(result["metadata"]["labels"], json!({"app": "web"}));
        assert_eq!(result["spec"].get("strategy"), None);
    }

    #[test]
    fn smp_new_fields_lose_nulls_and_directives() {
        let patch = json!({"spec": {"template": {"metadata": {
            "labels": {"a": "1", "b": null},
            "annotations": {"$patch": "replace", "x": "y"},
            "finalizers": [{"$patch": "delete"}, "kept"]
        }}}});
        let result = smp(web_deployment(), patch).unwrap();
        assert_eq!(
            result["spec"]["template"]["metadata"],
            json!({"labels": {"a": "1"}, "finalizers": ["kept"]})
        );
    }

    #[test]
    fn smp_directives_never_remain() {
        let patch = pod_template(json!([
            {"name": "added", "image": "a:1",
             "env": [{"name": "X", "value": "1"}], "$setElementOrder/env": [{"name": "X"}],
             "resources": {"$retainKeys": ["limits"], "limits": {"cpu": "1", "memory": null}}}
        ]));
        let result = smp(web_deployment(), patch).unwrap();
        assert_eq!(
            containers(&result)[0],
            json!({"name": "added", "image": "a:1", "env": [{"name": "X", "value": "1"}],
                   "resources": {"limits": {"cpu": "1"}}})
        );
    }

    #[test]
    fn smp_replaces_atomic_lists() {
        let original = pod_template(json!([{"name": "app", "args": ["a", "b"]}]));
        let patch = pod_template(json!([{"name": "app", "args": ["c"]}]));
        let result = smp(original, patch).unwrap();
        assert_eq!(
            containers(&result),
            &json!([{"name": "app", "args": ["c"]}])
        );
    }

    #[test]
    fn smp_replace_strategy_read_beside_ref() {
        let pdb = Schema::builtin("io.k8s.api.policy.v1.PodDisruptionBudget");
        let original =
            json!({"spec": {"selector": {"matchLabels": {"a": "1"}}, "minAvailable": 1}});
        let patch = json!({"spec": {"selector": {"matchExpressions": []}}});
        assert_eq!(
            strategic_merge_patch(&original, &patch, pdb),
            Ok(json!({"spec": {"selector": {"matchExpressions": []}, "minAvailable": 1}}))
        );
    }

    #[test]
    fn smp_service_ports_merge_on_port() {
        let service = Schema::builtin("io.k8s.api.core.v1.Service");
        let original =
            json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 443}]}});
        let patch = json!({"spec": {"ports": [{"port": 80, "targetPort": 9090}]}});
        assert_eq!(
            strategic_merge_patch(&original, &patch, service),
            Ok(json!({"spec": {"ports": [{"port": 80, "targetPort": 9090}, {"port": 443}]}}))
        );
    }

    #[test]
    fn smp_without_schema_merges_maps_and_replaces_lists() {
        let config_map = Schema::builtin("io.k8s.api.core.v1.ConfigMap");
        let original =
            json!({"data": {"a": "1", "b": "2"}, "extra": {"list": [1, 2], "m": {"x": 1}}});
        let patch = json!({"data": {"b": null, "c": "3"}, "extra": {"list": [3], "m": {"y": 2}}});
        let expected =
            json!({"data": {"a": "1", "c": "3"}, "extra": {"list": [3], "m": {"x": 1, "y": 2}}});
        assert_eq!(
            strategic_merge_patch(&original, &patch, config_map),
            Ok(expected.clone())
        );
        assert_eq!(
            strategic_merge_patch(&original, &patch, Schema::unknown()),
            Ok(expected)
        );
    }

    #[test]
    fn smp_type_changes_replace() {
        let result = smp(
            web_deployment(),
            json!({"spec": {"replicas": "two", "strategy": "x"}}),
        )
        .unwrap();
        assert_eq!(result["spec"]["replicas"], json!("two"));
        assert_eq!(result["spec"]["strategy"], json!("x"));
    }

    #[test]
    fn smp_list_type_errors() {
        let original = json!({"metadata": {"finalizers": []}});
        let error = smp(original, json!({"metadata": {"finalizers": [["a"]]}})).unwrap_err();
        assert_eq!(error.to_string(), "lists of lists are not supported");
        assert_eq!(error.code(), 422);
        assert_eq!(
            smp_error(
                json!({"metadata": {"finalizers": ["a"]}}),
                json!({"metadata": {"finalizers": [1]}})
            ),
            "list element types are not identical: [[a] [1]]"
        );
        let patch = json!({"spec": {"template": {"spec": {"$setElementOrder/containers": []}}}});
        assert_eq!(
            smp_error(pod_template(json!([])), patch),
            "no elements in any of the given slices"
        );
        let node = Schema::builtin("io.k8s.api.core.v1.Node");
        let original = json!({"spec": {"podCIDRs": [{"a": 1}]}});
        let patch = json!({"spec": {"podCIDRs": [{"b": 1}]}});
        assert_eq!(
            strategic_merge_patch(&original, &patch, node).map_err(|e| e.to_string()),
            Err("cannot merge lists without merge key for podCIDRs".to_owned())
        );
    }

    #[test]
    fn smp_body_must_be_an_object() {
        let error = smp(web_deployment(), json!([1])).unwrap_err();
        assert_eq!(
            error.to_string(),
            "json: cannot unmarshal array into Go value of type map[string]interface {}"
        );
        assert_eq!(error.code(), 400);
        assert_eq!(smp(web_deployment(), Value::Null), Ok(web_deployment()));
    }

    #[test]
    fn go_formatting() {
        let mut out = String::new();
        go_format(
            &mut out,
            &json!({"b": [1, 2.5, null, true], "a": {"c": "d"}}),
            Verb::V,
        );
        assert_eq!(out, "map[a:map[c:d] b:[1 2.5 <nil> true]]");
        let mut out = String::new();
        go_format(&mut out, &json!([null, false, 1.5]), Verb::S);
        assert_eq!(out, "[%!s(<nil>) %!s(bool=false) %!s(float64=1.5)]");
        assert_eq!(go_float(1_000_000.0), "1e+06");
        assert_eq!(go_float(123_456.0), "123456");
        assert_eq!(go_float(1_234_567.0), "1.234567e+06");
        assert_eq!(go_float(0.0001), "0.0001");
        assert_eq!(go_float(0.000_012), "1.2e-05");
        assert_eq!(go_float(-2.5e-100), "-2.5e-100");
        assert_eq!(go_float(0.0), "0");
    }
}
