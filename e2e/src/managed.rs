//! Server-side apply and `metadata.managedFields`, computed the way the Kubernetes apiserver
//! does it with structured-merge-diff (SMD).
//!
//! Every write records who owns which field. A field set is a tree of path elements
//! (`.spec.replicas`, `.spec.template.spec.containers[name="c"]`, `.metadata.finalizers[="x"]`)
//! stored per manager in the FieldsV1 format. [`apply`] merges an applied configuration into
//! the live object, reports conflicts with other managers, removes the fields the applier
//! stopped applying (unless someone else owns them) and records the applier's new set.
//! [`update`] records the fields a create, update or patch changed.
//!
//! Both follow the apiserver's field manager layers: a live object without managedFields
//! gets a `before-first-apply` entry on its first apply; an update of an object whose
//! managedFields are empty (or were reset with `[]` or `[{}]`) stops tracking; a client's
//! managedFields that cannot be decoded are replaced by the live ones; managed fields are
//! sorted like the apiserver sorts them (Apply first, then by time, manager, apiVersion).
//! A custom resource's `metadata` is an ObjectMeta whatever its CRD schema says
//! (finalizers are a set, ownerReferences are keyed by uid), as in the apiserver.
//!
//! Differences from a real API server:
//! - One API version: sets are never converted between versions, and schema changes are not
//!   reconciled with existing sets.
//! - A creation through [`update`] (and the `before-first-apply` entry) compares the object
//!   with an empty object, where Kubernetes compares built-in kinds with the Go zero value:
//!   fields that Go always serializes (`spec`, `spec.template`, `spec.strategy`,
//!   `spec.template.spec.containers`, …) become members (`".": {}`) of the set here, while
//!   Kubernetes lists only what is below them. Custom resources are not affected.
//! - No cap on the number of Update entries (Kubernetes merges the oldest of more than ten
//!   into `ancient-changes`), no interplay with the client-side apply annotation
//!   `kubectl.kubernetes.io/last-applied-configuration`, no unions.
//! - The applied configuration is only checked for what apply itself needs (list keys,
//!   duplicates, set elements), not validated against the schema's types.
//! - Fields an apply sets to `null` and containers a removal leaves empty are dropped from the
//!   object (Kubernetes keeps the nulls until its typed conversion or pruning drops them).
//! - A missing list-map key is defaulted from the schema's `default`, and `protocol` always
//!   defaults to `TCP` (the only defaulted key of the built-in kinds).
//! - FieldsV1 is always re-encoded, so path elements of unknown kinds are dropped even from
//!   unchanged entries (Kubernetes keeps an unchanged entry's original bytes).

use crate::gofmt::go_quote;
use crate::schema::{ListType, Schema};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value, json};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use thiserror::Error;

/// The manager that owns the fields an object had before its first apply.
const BEFORE_FIRST_APPLY: &str = "before-first-apply";

/// The schema of `metadata` when a custom resource's schema does not describe it.
const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";

/// The fields of `metadata` that the server maintains: never owned by anyone.
const SERVER_METADATA: [&str; 11] = [
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
    "managedFields",
    "clusterName",
];

/// One entry of `metadata.managedFields`, serialized exactly like Kubernetes (camelCase,
/// empty fields omitted).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManagedFieldsEntry {
    /// The field manager (`kubectl`, `kube-controller-manager`, …).
    #[serde(
        default,
        deserialize_with = "null_as_empty",
        skip_serializing_if = "String::is_empty"
    )]
    pub manager: String,
    /// `Apply` or `Update`.
    #[serde(
        default,
        deserialize_with = "null_as_empty",
        skip_serializing_if = "String::is_empty"
    )]
    pub operation: String,
    /// The API version the fields were written in (`apps/v1`).
    #[serde(
        default,
        deserialize_with = "null_as_empty",
        skip_serializing_if = "String::is_empty"
    )]
    pub api_version: String,
    /// When the manager last changed the object (RFC 3339, seconds, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// Always `FieldsV1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields_type: Option<String>,
    /// The owned fields in the FieldsV1 format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields_v1: Option<Value>,
    /// `status` for writes through the status subresource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subresource: Option<String>,
}

/// Go decodes `null` into a string as the empty string.
fn null_as_empty<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(deserializer)?.unwrap_or_default())
}

/// Which part of an object a write may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The main resource. With a status subresource, `status` is neither taken from the
    /// request nor tracked.
    Main {
        /// Whether the type has a status subresource.
        status_subresource: bool,
    },
    /// The status subresource: only `status` is taken and tracked, entries carry
    /// `subresource: status`.
    Status,
}

impl Part {
    fn subresource(self) -> &'static str {
        match self {
            Part::Main { .. } => "",
            Part::Status => "status",
        }
    }
}

/// Who writes and how.
#[derive(Debug, Clone, Copy)]
pub struct Writer<'a> {
    /// The field manager.
    pub manager: &'a str,
    /// The API version of the request (`apps/v1`).
    pub api_version: &'a str,
    /// The part of the object written.
    pub part: Part,
    /// The time of the write (RFC 3339), recorded in the writer's entry.
    pub time: &'a str,
    /// The schema of the object.
    pub schema: Schema<'a>,
}

/// One field that another manager owns and an apply would change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The owner as Kubernetes prints it: `"kubectl"`, `"kube-controller" using apps/v1`,
    /// `"ctl" with subresource "status" using v1`.
    pub manager: String,
    /// The field (`.spec.replicas`, `.spec.template.spec.containers[name="c"].image`).
    pub field: String,
}

impl Conflict {
    /// The message of this conflict's `FieldManagerConflict` cause.
    pub fn cause_message(&self) -> String {
        format!("conflict with {}", self.manager)
    }
}

/// The conflicts that stop an apply without `force`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyConflict {
    /// Every conflicting field of every other manager, by manager then field.
    pub conflicts: Vec<Conflict>,
}

impl ApplyConflict {
    /// The message of the 409 status, as Kubernetes words it.
    pub fn message(&self) -> String {
        if let [conflict] = self.conflicts.as_slice() {
            return format!(
                "Apply failed with 1 conflict: conflict with {}: {}",
                conflict.manager, conflict.field
            );
        }
        let mut by_manager: Vec<(&str, Vec<&str>)> = Vec::new();
        for conflict in &self.conflicts {
            match by_manager
                .iter_mut()
                .find(|(manager, _)| *manager == conflict.manager)
            {
                Some((_, fields)) => fields.push(&conflict.field),
                None => by_manager.push((&conflict.manager, vec![&conflict.field])),
            }
        }
        by_manager.sort_by(|a, b| a.0.cmp(b.0));
        let lines: Vec<String> = by_manager
            .iter()
            .flat_map(|(manager, fields)| {
                std::iter::once(format!("conflicts with {manager}:"))
                    .chain(fields.iter().map(|field| format!("- {field}")))
            })
            .collect();
        format!(
            "Apply failed with {} conflicts: {}",
            self.conflicts.len(),
            lines.join("\n")
        )
    }
}

/// Why an apply failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ApplyError {
    /// Other managers own fields the apply would change (HTTP 409).
    #[error("{}", .0.message())]
    Conflict(ApplyConflict),
    /// The applied configuration cannot be applied, or the live managedFields cannot be
    /// read.
    #[error("{0}")]
    Invalid(String),
}

/// Why managedFields cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ManagedFieldsError {
    /// `metadata.managedFields` is not a list of entries (a request body Kubernetes would
    /// not decode).
    #[error("metadata.managedFields: {0}")]
    Malformed(String),
    /// An entry's operation is neither `Apply` nor `Update`.
    #[error("operation must be `Apply` or `Update`")]
    Operation,
    /// An entry has no apiVersion.
    #[error("apiVersion must not be empty")]
    ApiVersion,
    /// An entry has no fieldsType.
    #[error("missing fieldsType in managed fields entry {0}")]
    MissingFieldsType(usize),
    /// An entry's fieldsType is not `FieldsV1`.
    #[error("invalid fieldsType {} in managed fields entry {}", go_quote(.0), .1)]
    FieldsType(String, usize),
    /// An entry's fieldsV1 is not a field set.
    #[error("error decoding set: {0}")]
    FieldsV1(String),
}

/// Applies `applied` (an apply patch) to `live` (`None`: the apply creates the object) as
/// `writer`, taking over conflicting fields when `force` is set. Returns the merged object
/// with its new managedFields; when nothing but managedFields changes, the live object is
/// returned and the writer's entry keeps its old time (none for a new entry), as in
/// Kubernetes.
///
/// Fails with [`ApplyError::Conflict`] when other managers own fields the apply changes,
/// and with [`ApplyError::Invalid`] when the configuration carries managedFields, has list
/// elements without their key or with duplicate keys, or when the live managedFields cannot
/// be decoded.
pub fn apply(
    live: Option<&Value>,
    applied: &Value,
    writer: &Writer,
    force: bool,
) -> Result<Value, ApplyError> {
    if !applied.is_object() {
        return Err(ApplyError::Invalid(
            "the applied configuration must be an object".into(),
        ));
    }
    if applied
        .pointer("/metadata/managedFields")
        .is_some_and(|fields| !fields.is_null())
    {
        return Err(ApplyError::Invalid(
            "metadata.managedFields must be nil".into(),
        ));
    }
    let part = writer.part;
    let root = Position::root(writer.schema);
    let mut live_body = live.cloned().unwrap_or_else(|| json!({}));
    let mut managers = match take_managed_fields(&mut live_body) {
        Some(fields) if !fields.is_null() => parse_entries(&fields)
            .and_then(|entries| decode(&entries))
            .map_err(|error| {
                ApplyError::Invalid(format!("failed to decode managed fields: {error}"))
            })?,
        _ => Managers::new(),
    };
    if managers.is_empty() && live.is_some() {
        // Never tracked so far: what the object has belongs to `before-first-apply`.
        let empty = json!({});
        let before = Manager::new(BEFORE_FIRST_APPLY, "Update", writer.api_version, part);
        let new = restrict(&live_body, &empty, part);
        track_update(&mut managers, &empty, &new, before, writer.time, root);
    }

    let taken = applied_part(applied, part);
    let mut applied_set = FieldSet::default();
    collect(&taken, root, &mut Vec::new(), &mut applied_set, true).map_err(|error| {
        ApplyError::Invalid(format!(
            "failed to create typed patch object ({}): {error}",
            describe(applied)
        ))
    })?;
    let mut me = Manager::new(writer.manager, "Apply", writer.api_version, part);
    let key = me.key();
    let last = match managers.remove(&key) {
        Some(previous) => {
            me.time = previous.time;
            previous.set
        }
        None => FieldSet::default(),
    };
    me.set = applied_set;
    managers.insert(key.clone(), me);

    let merged = merge(Some(&live_body), &taken, root);
    let merged = prune(merged, &managers, &last, root);

    let comparison = compare_objects(&live_body, &merged, root);
    let changed = comparison.added.union(&comparison.modified);
    let conflicts: Vec<Conflict> = managers
        .iter()
        .filter(|(other, _)| **other != key)
        .flat_map(|(_, manager)| {
            let display = manager.display();
            manager
                .set
                .intersection(&changed)
                .paths()
                .into_iter()
                .map(move |path| Conflict {
                    manager: display.clone(),
                    field: path_string(&path),
                })
        })
        .collect();
    if !force && !conflicts.is_empty() {
        return Err(ApplyError::Conflict(ApplyConflict { conflicts }));
    }
    for (other, manager) in managers.iter_mut() {
        if *other != key {
            manager.set = manager
                .set
                .difference(&changed)
                .difference(&comparison.removed);
        }
    }
    strip_all(&mut managers);

    let mut result = merged;
    drop_applied_nulls(&mut result, &taken, root);
    let mut result = if json_eq(&result, &live_body) {
        live_body
    } else {
        if let Some(me) = managers.get_mut(&key) {
            me.time = Some(writer.time.to_owned());
        }
        result
    };
    set_managed_fields(&mut result, &managers);
    Ok(result)
}

/// Records a non-apply write (create, update, patch): `new` is the object about to be
/// stored, `old` the stored one (`None`: `new` is being created). Returns `new` with its
/// managedFields.
///
/// As in Kubernetes, managedFields sent in `new` replace the stored ones (not through the
/// status subresource); `[]` or `[{}]` clear them, and entries that do not decode (unknown
/// operation, missing fieldsType, invalid fieldsV1, …) are ignored in favour of the stored
/// ones. An existing object without managedFields stays untracked until it is applied to.
/// Fails only when the sent managedFields are not a list of entries at all (wrong JSON
/// types, an invalid time), which Kubernetes rejects when decoding the request.
pub fn update(
    old: Option<&Value>,
    mut new: Value,
    writer: &Writer,
) -> Result<Value, ManagedFieldsError> {
    if !new.is_object() {
        return Ok(new);
    }
    let part = writer.part;
    let sent = match take_managed_fields(&mut new) {
        Some(fields) if !fields.is_null() => Some(parse_entries(&fields)?),
        _ => None,
    };
    let mut old_body = old.cloned().unwrap_or_else(|| json!({}));
    let stored = take_managed_fields(&mut old_body);
    let live_managers = || {
        stored
            .as_ref()
            .filter(|fields| !fields.is_null())
            .and_then(|fields| parse_entries(fields).and_then(|e| decode(&e)).ok())
            .unwrap_or_default()
    };
    let mut managers = match (part, sent) {
        (Part::Status, _) | (_, None) => live_managers(),
        (_, Some(entries)) if is_reset(&entries) => Managers::new(),
        (_, Some(entries)) => match decode(&entries) {
            Ok(managers) if !managers.is_empty() => managers,
            _ => live_managers(),
        },
    };
    if managers.is_empty() && old.is_some() {
        // Kubernetes does not start tracking an existing object on update.
        return Ok(new);
    }
    let me = Manager::new(writer.manager, "Update", writer.api_version, part);
    let new_body = restrict(&new, &old_body, part);
    track_update(
        &mut managers,
        &old_body,
        &new_body,
        me,
        writer.time,
        Position::root(writer.schema),
    );
    set_managed_fields(&mut new, &managers);
    Ok(new)
}

/// The object as a write of `part` changes it: `new`, with what the write may not change
/// taken from `old`.
fn restrict(new: &Value, old: &Value, part: Part) -> Value {
    let (mut result, status) = match part {
        Part::Main {
            status_subresource: false,
        } => return new.clone(),
        Part::Main {
            status_subresource: true,
        } => (new.clone(), old.get("status")),
        Part::Status => (old.clone(), new.get("status")),
    };
    if let Some(fields) = result.as_object_mut() {
        match status {
            Some(status) => fields.insert("status".into(), status.clone()),
            None => fields.remove("status"),
        };
    }
    result
}

/// The part of an applied configuration a write of `part` takes.
fn applied_part(applied: &Value, part: Part) -> Value {
    match part {
        Part::Main {
            status_subresource: false,
        } => applied.clone(),
        Part::Main {
            status_subresource: true,
        } => {
            let mut result = applied.clone();
            if let Some(fields) = result.as_object_mut() {
                fields.remove("status");
            }
            result
        }
        Part::Status => match applied.get("status") {
            Some(status) => json!({ "status": status }),
            None => json!({}),
        },
    }
}

/// `apiVersion, Kind=kind` and `namespace/name` of an object, for error messages.
fn describe(object: &Value) -> String {
    let text = |pointer: &str| object.pointer(pointer).and_then(Value::as_str);
    let api_version = text("/apiVersion").unwrap_or_default();
    let group_version = if api_version.contains('/') {
        api_version.to_owned()
    } else {
        format!("/{api_version}")
    };
    format!(
        "{}/{}; {group_version}, Kind={}",
        text("/metadata/namespace").unwrap_or_default(),
        text("/metadata/name").unwrap_or_default(),
        text("/kind").unwrap_or_default()
    )
}

// ---------------------------------------------------------------------------------------
// Managers
// ---------------------------------------------------------------------------------------

/// One decoded entry of managedFields.
#[derive(Debug, Clone)]
struct Manager {
    manager: String,
    operation: String,
    api_version: String,
    subresource: String,
    time: Option<String>,
    set: FieldSet,
}

/// Entries by their identity (see [`Manager::key`]).
type Managers = BTreeMap<String, Manager>;

impl Manager {
    fn new(manager: &str, operation: &str, api_version: &str, part: Part) -> Self {
        Manager {
            manager: manager.to_owned(),
            operation: operation.to_owned(),
            api_version: api_version.to_owned(),
            subresource: part.subresource().to_owned(),
            time: None,
            set: FieldSet::default(),
        }
    }

    /// The identity of the entry, as the apiserver builds it: manager, operation,
    /// subresource and, for Update entries, apiVersion, as JSON.
    fn key(&self) -> String {
        let mut fields = Vec::new();
        if !self.manager.is_empty() {
            fields.push(format!("\"manager\":{}", go_json(&json!(self.manager))));
        }
        if !self.operation.is_empty() {
            fields.push(format!("\"operation\":{}", go_json(&json!(self.operation))));
        }
        if self.operation != "Apply" && !self.api_version.is_empty() {
            fields.push(format!(
                "\"apiVersion\":{}",
                go_json(&json!(self.api_version))
            ));
        }
        if !self.subresource.is_empty() {
            fields.push(format!(
                "\"subresource\":{}",
                go_json(&json!(self.subresource))
            ));
        }
        format!("{{{}}}", fields.join(","))
    }

    /// The manager as conflict messages print it.
    fn display(&self) -> String {
        let mut display = go_quote(&self.manager);
        if !self.subresource.is_empty() {
            display.push_str(&format!(
                " with subresource {}",
                go_quote(&self.subresource)
            ));
        }
        if self.operation == "Update" {
            display.push_str(&format!(" using {}", self.api_version));
        }
        display
    }

    fn to_entry(&self) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: self.manager.clone(),
            operation: self.operation.clone(),
            api_version: self.api_version.clone(),
            time: self.time.clone(),
            fields_type: Some("FieldsV1".into()),
            fields_v1: Some(self.set.to_json()),
            subresource: Some(self.subresource.clone()).filter(|s| !s.is_empty()),
        }
    }
}

impl ManagedFieldsEntry {
    /// The entry as JSON (what `Serialize` produces, without a fallible serializer).
    fn to_json(&self) -> Value {
        let mut entry = Map::new();
        let mut text = |name: &str, value: &str| {
            if !value.is_empty() {
                entry.insert(name.into(), Value::String(value.to_owned()));
            }
        };
        text("manager", &self.manager);
        text("operation", &self.operation);
        text("apiVersion", &self.api_version);
        text("time", self.time.as_deref().unwrap_or_default());
        text(
            "fieldsType",
            self.fields_type.as_deref().unwrap_or_default(),
        );
        if let Some(fields) = &self.fields_v1 {
            entry.insert("fieldsV1".into(), fields.clone());
        }
        if let Some(subresource) = self.subresource.as_deref().filter(|s| !s.is_empty()) {
            entry.insert("subresource".into(), Value::String(subresource.to_owned()));
        }
        Value::Object(entry)
    }
}

/// Reads `metadata.managedFields` as a request body decoder would: entries of the right
/// JSON types with RFC 3339 times.
fn parse_entries(fields: &Value) -> Result<Vec<ManagedFieldsEntry>, ManagedFieldsError> {
    let entries = Vec::<ManagedFieldsEntry>::deserialize(fields)
        .map_err(|error| ManagedFieldsError::Malformed(error.to_string()))?;
    for entry in &entries {
        if let Some(time) = &entry.time
            && parse_time(time).is_none()
        {
            return Err(ManagedFieldsError::Malformed(format!(
                "invalid time {}",
                go_quote(time)
            )));
        }
    }
    Ok(entries)
}

/// `[]` or `[{}]`: a client asking to stop tracking.
fn is_reset(entries: &[ManagedFieldsEntry]) -> bool {
    match entries {
        [] => true,
        [entry] => *entry == ManagedFieldsEntry::default(),
        _ => false,
    }
}

/// Decodes entries; a later entry with the same identity replaces an earlier one.
fn decode(entries: &[ManagedFieldsEntry]) -> Result<Managers, ManagedFieldsError> {
    let mut managers = Managers::new();
    for (index, entry) in entries.iter().enumerate() {
        if entry.operation != "Apply" && entry.operation != "Update" {
            return Err(ManagedFieldsError::Operation);
        }
        if entry.api_version.is_empty() {
            return Err(ManagedFieldsError::ApiVersion);
        }
        match entry.fields_type.as_deref().unwrap_or_default() {
            "FieldsV1" => {}
            "" => return Err(ManagedFieldsError::MissingFieldsType(index)),
            other => return Err(ManagedFieldsError::FieldsType(other.to_owned(), index)),
        }
        let set = match &entry.fields_v1 {
            Some(fields) => FieldSet::from_json(fields).map_err(ManagedFieldsError::FieldsV1)?,
            None => FieldSet::default(),
        };
        let manager = Manager {
            manager: entry.manager.clone(),
            operation: entry.operation.clone(),
            api_version: entry.api_version.clone(),
            subresource: entry.subresource.clone().unwrap_or_default(),
            time: entry
                .time
                .as_deref()
                .map(|time| parse_time(time).map_or_else(|| time.to_owned(), format_time)),
            set,
        };
        managers.insert(manager.key(), manager);
    }
    Ok(managers)
}

/// Writes the entries into `metadata.managedFields` (removed when there are none), in the
/// apiserver's order: Apply before Update, then by time, manager, apiVersion, subresource.
fn set_managed_fields(object: &mut Value, managers: &Managers) {
    let mut entries: Vec<&Manager> = managers.values().collect();
    let seconds = |manager: &Manager| {
        manager
            .time
            .as_deref()
            .and_then(parse_time)
            .map_or(0, jiff::Timestamp::as_second)
    };
    entries.sort_by(|a, b| {
        a.operation
            .cmp(&b.operation)
            .then_with(|| seconds(a).cmp(&seconds(b)))
            .then_with(|| a.manager.cmp(&b.manager))
            .then_with(|| a.api_version.cmp(&b.api_version))
            .then_with(|| a.subresource.cmp(&b.subresource))
    });
    let Some(fields) = object.as_object_mut() else {
        return;
    };
    if entries.is_empty() {
        if let Some(metadata) = fields.get_mut("metadata").and_then(Value::as_object_mut) {
            metadata.remove("managedFields");
        }
        return;
    }
    let metadata = fields
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Some(metadata) = metadata.as_object_mut() {
        let entries = entries
            .iter()
            .map(|manager| manager.to_entry().to_json())
            .collect();
        metadata.insert("managedFields".into(), Value::Array(entries));
    }
}

fn take_managed_fields(object: &mut Value) -> Option<Value> {
    object
        .get_mut("metadata")
        .and_then(Value::as_object_mut)
        .and_then(|metadata| metadata.remove("managedFields"))
}

fn parse_time(time: &str) -> Option<jiff::Timestamp> {
    time.parse().ok()
}

/// A time as `metav1.Time` serializes it: RFC 3339, seconds, UTC.
fn format_time(time: jiff::Timestamp) -> String {
    time.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Removes what no manager may own from every set, then drops the empty entries.
fn strip_all(managers: &mut Managers) {
    for manager in managers.values_mut() {
        manager.set = strip(&manager.set);
    }
    managers.retain(|_, manager| !manager.set.is_empty());
}

/// A set without `apiVersion`, `kind`, the server-maintained metadata and the membership
/// of `metadata` itself.
fn strip(set: &FieldSet) -> FieldSet {
    let mut result = set.clone();
    for field in ["apiVersion", "kind", "metadata"] {
        result.members.remove(&PathElement::Field(field.into()));
    }
    result
        .children
        .remove(&PathElement::Field("apiVersion".into()));
    result.children.remove(&PathElement::Field("kind".into()));
    let metadata = PathElement::Field("metadata".into());
    if let Some(children) = result.children.get_mut(&metadata) {
        for field in SERVER_METADATA {
            let element = PathElement::Field(field.into());
            children.members.remove(&element);
            children.children.remove(&element);
        }
        if children.is_empty() {
            result.children.remove(&metadata);
        }
    }
    result
}

/// The paths of the server-maintained fields present in `object`: owned by the system, so
/// that an apply never prunes them.
fn server_fields(object: &Value) -> FieldSet {
    let mut set = FieldSet::default();
    for field in ["apiVersion", "kind"] {
        if object.get(field).is_some() {
            set.insert(&[PathElement::Field(field.into())]);
        }
    }
    if let Some(metadata) = object.get("metadata").and_then(Value::as_object) {
        for field in SERVER_METADATA {
            if metadata.contains_key(field) {
                set.insert(&[
                    PathElement::Field("metadata".into()),
                    PathElement::Field(field.into()),
                ]);
            }
        }
    }
    set
}

/// Records that `who` changed `old` into `new` (SMD's Update with the apiserver's
/// "current-operation" manager): everyone loses what changed, `who` gains what was added or
/// modified and gets a new time when it gained anything.
fn track_update(
    managers: &mut Managers,
    old: &Value,
    new: &Value,
    who: Manager,
    time: &str,
    root: Position,
) {
    let comparison = compare_objects(old, new, root);
    let changed = comparison.added.union(&comparison.modified);
    for manager in managers.values_mut() {
        manager.set = manager
            .set
            .difference(&changed)
            .difference(&comparison.removed);
    }
    let gained = strip(&changed.difference(&comparison.removed));
    strip_all(managers);
    if gained.is_empty() {
        return;
    }
    let entry = managers.entry(who.key()).or_insert(who);
    entry.set = entry.set.union(&gained);
    entry.time = Some(time.to_owned());
}

// ---------------------------------------------------------------------------------------
// Path elements and field sets
// ---------------------------------------------------------------------------------------

/// One step of a field path.
#[derive(Debug, Clone)]
enum PathElement {
    /// A field of a map or struct: `f:name`, `.name`.
    Field(String),
    /// An element of a map-list, by its key fields sorted by name: `k:{"name":"c"}`,
    /// `[name="c"]`.
    Key(Vec<(String, Value)>),
    /// An element of a set-list: `v:"x"`, `[="x"]`.
    Value(Value),
    /// An element of a list by position: `i:0`, `[0]`.
    Index(usize),
}

impl PathElement {
    fn rank(&self) -> u8 {
        match self {
            PathElement::Field(_) => 0,
            PathElement::Key(_) => 1,
            PathElement::Value(_) => 2,
            PathElement::Index(_) => 3,
        }
    }

    /// The FieldsV1 key.
    fn fields_v1_key(&self) -> String {
        match self {
            PathElement::Field(name) => format!("f:{name}"),
            PathElement::Key(fields) => {
                let object: Map<String, Value> = fields.iter().cloned().collect();
                format!("k:{}", go_json(&Value::Object(object)))
            }
            PathElement::Value(value) => format!("v:{}", go_json(value)),
            PathElement::Index(index) => format!("i:{index}"),
        }
    }

    /// Parses a FieldsV1 key; `None` for kinds of elements this version does not know
    /// (ignored, as SMD does).
    fn parse(key: &str) -> Result<Option<Self>, String> {
        let Some((kind, rest)) = key.split_at_checked(2) else {
            return Ok(None);
        };
        let json = |text: &str| {
            serde_json::from_str::<Value>(text)
                .map_err(|error| format!("parsing {}: {error}", go_quote(key)))
        };
        Ok(Some(match kind {
            "f:" => PathElement::Field(rest.to_owned()),
            "v:" => PathElement::Value(json(rest)?),
            "k:" => match json(rest)? {
                Value::Object(fields) => PathElement::Key(fields.into_iter().collect()),
                _ => return Err(format!("parsing {}: expected an object", go_quote(key))),
            },
            "i:" => PathElement::Index(
                rest.parse()
                    .map_err(|error| format!("parsing {}: {error}", go_quote(key)))?,
            ),
            _ => return Ok(None),
        }))
    }
}

impl Ord for PathElement {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (PathElement::Field(a), PathElement::Field(b)) => a.cmp(b),
            (PathElement::Key(a), PathElement::Key(b)) => a.len().cmp(&b.len()).then_with(|| {
                a.iter()
                    .zip(b)
                    .map(|((an, av), (bn, bv))| an.cmp(bn).then_with(|| json_cmp(av, bv)))
                    .find(|ordering| ordering.is_ne())
                    .unwrap_or(Ordering::Equal)
            }),
            (PathElement::Value(a), PathElement::Value(b)) => json_cmp(a, b),
            (PathElement::Index(a), PathElement::Index(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl PartialOrd for PathElement {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for PathElement {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for PathElement {}

impl std::fmt::Display for PathElement {
    /// The element as SMD prints paths.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PathElement::Field(name) => write!(f, ".{name}"),
            PathElement::Key(fields) => {
                let fields: Vec<String> = fields
                    .iter()
                    .map(|(name, value)| format!("{name}={}", value_string(value)))
                    .collect();
                write!(f, "[{}]", fields.join(","))
            }
            PathElement::Value(value) => write!(f, "[={}]", value_string(value)),
            PathElement::Index(index) => write!(f, "[{index}]"),
        }
    }
}

fn path_string(path: &[PathElement]) -> String {
    path.iter().map(ToString::to_string).collect()
}

/// A value as SMD prints it in paths: strings quoted, everything else bare.
fn value_string(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::String(text) => go_quote(text),
        Value::Bool(_) | Value::Number(_) => value.to_string(),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(value_string).collect();
            format!("[{}]", items.join(","))
        }
        Value::Object(fields) => {
            let mut fields: Vec<String> = fields
                .iter()
                .map(|(name, value)| format!("{name}={}", value_string(value)))
                .collect();
            fields.sort();
            format!("{{{}}}", fields.join(","))
        }
    }
}

/// A set of field paths: the elements that are members here, and the sets below the
/// elements that have members further down. A node can be both.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct FieldSet {
    members: BTreeSet<PathElement>,
    children: BTreeMap<PathElement, FieldSet>,
}

impl FieldSet {
    fn insert(&mut self, path: &[PathElement]) {
        match path {
            [] => {}
            [element] => {
                self.members.insert(element.clone());
            }
            [first, rest @ ..] => self.children.entry(first.clone()).or_default().insert(rest),
        }
    }

    fn is_empty(&self) -> bool {
        self.members.is_empty() && self.children.values().all(FieldSet::is_empty)
    }

    fn child(&self, element: &PathElement) -> Option<&FieldSet> {
        self.children.get(element)
    }

    fn union(&self, other: &FieldSet) -> FieldSet {
        let mut result = self.clone();
        result.members.extend(other.members.iter().cloned());
        for (element, set) in &other.children {
            let merged = match result.children.get(element) {
                Some(mine) => mine.union(set),
                None => set.clone(),
            };
            result.children.insert(element.clone(), merged);
        }
        result
    }

    fn difference(&self, other: &FieldSet) -> FieldSet {
        FieldSet {
            members: self.members.difference(&other.members).cloned().collect(),
            children: self
                .children
                .iter()
                .map(|(element, set)| match other.child(element) {
                    Some(theirs) => (element.clone(), set.difference(theirs)),
                    None => (element.clone(), set.clone()),
                })
                .filter(|(_, set)| !set.is_empty())
                .collect(),
        }
    }

    fn intersection(&self, other: &FieldSet) -> FieldSet {
        FieldSet {
            members: self.members.intersection(&other.members).cloned().collect(),
            children: self
                .children
                .iter()
                .filter_map(|(element, set)| {
                    let common = set.intersection(other.child(element)?);
                    (!common.is_empty()).then(|| (element.clone(), common))
                })
                .collect(),
        }
    }

    /// Every member path: the members of a node first, then those below its children.
    fn paths(&self) -> Vec<Vec<PathElement>> {
        let mut paths = Vec::new();
        self.collect_paths(&mut Vec::new(), &mut paths);
        paths
    }

    fn collect_paths(&self, prefix: &mut Vec<PathElement>, paths: &mut Vec<Vec<PathElement>>) {
        for element in &self.members {
            let mut path = prefix.clone();
            path.push(element.clone());
            paths.push(path);
        }
        for (element, set) in &self.children {
            prefix.push(element.clone());
            set.collect_paths(prefix, paths);
            prefix.pop();
        }
    }

    /// The set in the FieldsV1 format.
    fn to_json(&self) -> Value {
        Value::Object(self.fields_v1(false))
    }

    fn fields_v1(&self, include_self: bool) -> Map<String, Value> {
        let mut out = Map::new();
        if include_self && !self.is_empty() {
            out.insert(".".into(), json!({}));
        }
        let mut members = self.members.iter().peekable();
        let mut children = self.children.iter().peekable();
        loop {
            let ordering = match (members.peek(), children.peek()) {
                (None, None) => break,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some(member), Some((child, _))) => (*member).cmp(*child),
            };
            match ordering {
                Ordering::Less => {
                    if let Some(member) = members.next() {
                        out.insert(member.fields_v1_key(), json!({}));
                    }
                }
                Ordering::Greater => {
                    if let Some((element, set)) = children.next() {
                        out.insert(element.fields_v1_key(), Value::Object(set.fields_v1(false)));
                    }
                }
                Ordering::Equal => {
                    members.next();
                    if let Some((element, set)) = children.next() {
                        out.insert(element.fields_v1_key(), Value::Object(set.fields_v1(true)));
                    }
                }
            }
        }
        out
    }

    /// Parses the FieldsV1 format.
    fn from_json(fields: &Value) -> Result<FieldSet, String> {
        Ok(FieldSet::parse_node(fields)?.0)
    }

    /// A node: its set, and whether the node itself is a member (`"."`, or no children).
    fn parse_node(node: &Value) -> Result<(FieldSet, bool), String> {
        let fields = match node {
            Value::Null => return Ok((FieldSet::default(), true)),
            Value::Object(fields) => fields,
            other => return Err(format!("expected an object, found {other}")),
        };
        let mut set = FieldSet::default();
        let mut member = false;
        for (key, child) in fields {
            if key == "." {
                member = true;
                continue;
            }
            let Some(element) = PathElement::parse(key)? else {
                continue;
            };
            let (below, child_member) = FieldSet::parse_node(child)?;
            if child_member {
                set.members.insert(element.clone());
            }
            if !below.is_empty() {
                set.children.insert(element, below);
            }
        }
        let member = member || set.is_empty();
        Ok((set, member))
    }
}

// ---------------------------------------------------------------------------------------
// Walking values with their schema
// ---------------------------------------------------------------------------------------

/// A position in an object: its schema, and whether it is the root (whose `metadata` is
/// always an ObjectMeta, as the apiserver types custom resources).
#[derive(Debug, Clone, Copy)]
struct Position<'a> {
    schema: Schema<'a>,
    root: bool,
}

impl<'a> Position<'a> {
    fn root(schema: Schema<'a>) -> Self {
        Position { schema, root: true }
    }

    fn field(self, name: &str) -> Self {
        let schema = self.schema.field(name);
        let schema = if self.root && name == "metadata" && !schema.has_properties() {
            Schema::builtin(OBJECT_META)
        } else {
            schema
        };
        Position {
            schema,
            root: false,
        }
    }

    fn items(self) -> Self {
        Position {
            schema: self.schema.items(),
            root: false,
        }
    }

    fn descend(self, element: &PathElement) -> Self {
        match element {
            PathElement::Field(name) => self.field(name),
            _ => self.items(),
        }
    }

    /// Whether `name` is a declared field of this struct (a "named field" for SMD).
    fn declares(self, name: &str) -> bool {
        (self.root && matches!(name, "apiVersion" | "kind" | "metadata"))
            || self
                .schema
                .node()
                .and_then(|node| node.get("properties"))
                .and_then(|properties| properties.get(name))
                .is_some()
    }

    /// The default of the key field `key` of this map-list's elements.
    fn key_default(self, key: &str) -> Option<Value> {
        self.schema
            .items()
            .field(key)
            .node()
            .and_then(|node| node.get("default"))
            .cloned()
            .or_else(|| (key == "protocol").then(|| json!("TCP")))
    }
}

/// How a list's elements are told apart.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ListKind {
    /// Scalars, by value.
    Set,
    /// Objects, by these key fields.
    Keyed(Vec<String>),
}

/// How a position is walked.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Shape {
    /// Compared and replaced as a whole: scalars, atomic lists and maps, mismatched kinds.
    Leaf,
    /// A granular map, field by field.
    Map,
    /// A set or map-list, element by element.
    List(ListKind),
}

/// The shape of a position from the values found there (absent and `null` fit any shape).
fn shape(values: [Option<&Value>; 2], position: Position) -> Shape {
    #[derive(PartialEq)]
    enum Kind {
        Object,
        Array,
        Scalar,
    }
    let mut kind = None;
    for value in values.into_iter().flatten() {
        let this = match value {
            Value::Null => continue,
            Value::Object(_) => Kind::Object,
            Value::Array(_) => Kind::Array,
            _ => Kind::Scalar,
        };
        if kind.as_ref().is_some_and(|kind| *kind != this) {
            return Shape::Leaf;
        }
        kind = Some(this);
    }
    match kind {
        None | Some(Kind::Scalar) => Shape::Leaf,
        Some(Kind::Object) if position.schema.is_atomic_map() => Shape::Leaf,
        Some(Kind::Object) => Shape::Map,
        Some(Kind::Array) => match position.schema.list_type() {
            ListType::Atomic => Shape::Leaf,
            ListType::Set => Shape::List(ListKind::Set),
            ListType::Map(keys) if keys.is_empty() => Shape::List(ListKind::Set),
            ListType::Map(keys) => Shape::List(ListKind::Keyed(keys)),
        },
    }
}

/// `null`, `{}` or `[]`.
fn is_empty_container(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Object(fields) => fields.is_empty(),
        Value::Array(items) => items.is_empty(),
        _ => false,
    }
}

/// The path element of a list element.
fn element_of(item: &Value, kind: &ListKind, list: Position) -> Result<PathElement, String> {
    match kind {
        ListKind::Set => match item {
            Value::Object(_) => {
                Err("associative list without keys has an element that's a map type".into())
            }
            Value::Array(_) => Err("not supported: associative list with lists as elements".into()),
            Value::Null => {
                Err("associative list without keys has an element that's an explicit null".into())
            }
            _ => Ok(PathElement::Value(item.clone())),
        },
        ListKind::Keyed(keys) => {
            let fields = match item {
                Value::Null => {
                    return Err("associative list with keys may not have a null element".into());
                }
                Value::Object(fields) => fields,
                _ => {
                    return Err("associative list with keys may not have non-map elements".into());
                }
            };
            let mut key = Vec::with_capacity(keys.len());
            for name in keys {
                let value = match fields.get(name) {
                    Some(value) => value.clone(),
                    None => list.key_default(name).ok_or_else(|| {
                        format!(
                            "associative list with keys has an element that omits key field {} (and doesn't have default value)",
                            go_quote(name)
                        )
                    })?,
                };
                key.push((name.clone(), value));
            }
            key.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(PathElement::Key(key))
        }
    }
}

/// The path elements of a list's elements (`None` where there is none).
fn elements_of(items: &[Value], kind: &ListKind, list: Position) -> Vec<Option<PathElement>> {
    items
        .iter()
        .map(|item| element_of(item, kind, list).ok())
        .collect()
}

/// Adds the field set of `value` at `path` to `set` (SMD's ToFieldSet): leaves, `null`s and
/// empty maps, list elements as members, recursing into granular maps and list elements.
/// `strict` (applied configurations) rejects elements without a key and duplicates;
/// otherwise they are skipped.
fn collect(
    value: &Value,
    position: Position,
    path: &mut Vec<PathElement>,
    set: &mut FieldSet,
    strict: bool,
) -> Result<(), String> {
    match shape([Some(value), None], position) {
        Shape::Leaf => set.insert(path),
        Shape::Map => {
            for (name, child) in value.as_object().into_iter().flatten() {
                path.push(PathElement::Field(name.clone()));
                if child.is_null() || child.as_object().is_some_and(Map::is_empty) {
                    set.insert(path);
                } else {
                    collect(child, position.field(name), path, set, strict)?;
                }
                path.pop();
            }
        }
        Shape::List(kind) => {
            let mut seen = BTreeSet::new();
            for (index, item) in value.as_array().into_iter().flatten().enumerate() {
                let element = match element_of(item, &kind, position) {
                    Ok(element) => element,
                    Err(error) if strict => {
                        return Err(format!("{}: element {index}: {error}", path_string(path)));
                    }
                    Err(_) => continue,
                };
                if strict && !seen.insert(element.clone()) {
                    return Err(format!(
                        "{}: duplicate entries for key {element}",
                        path_string(path)
                    ));
                }
                path.push(element);
                collect(item, position.items(), path, set, strict)?;
                set.insert(path);
                path.pop();
            }
        }
    }
    Ok(())
}

/// The field set of a stored object (elements without a key are skipped).
fn field_set(value: &Value, position: Position) -> FieldSet {
    let mut set = FieldSet::default();
    // Non-strict collection never fails.
    let _ = collect(value, position, &mut Vec::new(), &mut set, false);
    set
}

/// Merges the applied `rhs` into `lhs` (SMD's Merge): granular maps field by field, lists
/// element by element, everything else replaced.
fn merge(lhs: Option<&Value>, rhs: &Value, position: Position) -> Value {
    let Some(lhs) = lhs else {
        return rhs.clone();
    };
    if is_empty_container(lhs) && is_empty_container(rhs) {
        return rhs.clone();
    }
    match shape([Some(lhs), Some(rhs)], position) {
        Shape::Leaf => rhs.clone(),
        Shape::Map => {
            let mut out = Map::new();
            let rhs = rhs.as_object();
            let lhs = lhs.as_object();
            for (name, left) in lhs.into_iter().flatten() {
                let value = match rhs.and_then(|rhs| rhs.get(name)) {
                    Some(right) => merge(Some(left), right, position.field(name)),
                    None => left.clone(),
                };
                out.insert(name.clone(), value);
            }
            for (name, right) in rhs.into_iter().flatten() {
                if !lhs.is_some_and(|lhs| lhs.contains_key(name)) {
                    out.insert(name.clone(), right.clone());
                }
            }
            Value::Object(out)
        }
        Shape::List(kind) => {
            let lhs = lhs.as_array().map_or(&[][..], Vec::as_slice);
            let rhs = rhs.as_array().map_or(&[][..], Vec::as_slice);
            Value::Array(merge_list(lhs, rhs, &kind, position))
        }
    }
}

/// Merges list elements like SMD: elements only in `lhs` stay where they are, shared
/// elements follow the order of `rhs`, new elements go where `rhs` puts them relative to the
/// shared ones.
fn merge_list(lhs: &[Value], rhs: &[Value], kind: &ListKind, list: Position) -> Vec<Value> {
    let lhs_elements = elements_of(lhs, kind, list);
    let rhs_elements = elements_of(rhs, kind, list);
    // The element of each lhs path element, `None` when it appears more than once.
    let mut observed_lhs: BTreeMap<&PathElement, Option<usize>> = BTreeMap::new();
    for (index, element) in lhs_elements.iter().enumerate() {
        if let Some(element) = element {
            observed_lhs
                .entry(element)
                .and_modify(|seen| *seen = None)
                .or_insert(Some(index));
        }
    }
    let observed_rhs: BTreeSet<&PathElement> = rhs_elements.iter().flatten().collect();
    let mut shared = rhs_elements
        .iter()
        .flatten()
        .filter(|element| observed_lhs.contains_key(element));
    let mut next_shared = shared.next();
    let mut merged_rhs: BTreeSet<&PathElement> = BTreeSet::new();
    let lhs_item = |element: &PathElement| {
        observed_lhs
            .get(element)
            .copied()
            .flatten()
            .and_then(|index| lhs.get(index))
    };
    let mut out = Vec::with_capacity(lhs.len().max(rhs.len()));
    let (mut l, mut r) = (0, 0);
    while l < lhs.len() || r < rhs.len() {
        if let (Some(Some(left)), Some(Some(right))) = (lhs_elements.get(l), rhs_elements.get(r)) {
            if left == right {
                merged_rhs.insert(left);
                out.push(merge(lhs_item(left), &rhs[r], list.items()));
                l += 1;
                r += 1;
                next_shared = shared.next();
                continue;
            }
            if observed_rhs.contains(left) && next_shared.is_some_and(|next| next != left) {
                l += 1;
                continue;
            }
        }
        if l < lhs.len() {
            match &lhs_elements[l] {
                Some(left) if observed_rhs.contains(left) => {
                    if merged_rhs.contains(left) {
                        l += 1;
                        continue;
                    }
                }
                _ => {
                    out.push(lhs[l].clone());
                    l += 1;
                    continue;
                }
            }
        }
        if r < rhs.len() {
            match &rhs_elements[r] {
                Some(right) => {
                    merged_rhs.insert(right);
                    out.push(merge(lhs_item(right), &rhs[r], list.items()));
                    if next_shared == Some(right) {
                        next_shared = shared.next();
                    }
                }
                None => out.push(rhs[r].clone()),
            }
            r += 1;
        }
    }
    out
}

/// What changed between two objects.
#[derive(Debug, Default)]
struct Comparison {
    added: FieldSet,
    modified: FieldSet,
    removed: FieldSet,
}

fn compare_objects(old: &Value, new: &Value, root: Position) -> Comparison {
    let mut comparison = Comparison::default();
    compare(Some(old), Some(new), root, &mut Vec::new(), &mut comparison);
    comparison
}

/// SMD's Compare: leaves added, removed or modified, and granular maps and list elements
/// that appear or disappear.
fn compare(
    lhs: Option<&Value>,
    rhs: Option<&Value>,
    position: Position,
    path: &mut Vec<PathElement>,
    out: &mut Comparison,
) {
    let both_empty = lhs.is_none_or(is_empty_container) && rhs.is_none_or(is_empty_container);
    let shape = shape([lhs, rhs], position);
    match shape {
        _ if both_empty => compare_leaf(lhs, rhs, path, out),
        Shape::Leaf => {
            compare_leaf(lhs, rhs, path, out);
            // A value that changed kind: what was below the old one is gone, what is below
            // the new one is new.
            if let (Some(left), Some(right)) = (lhs, rhs) {
                for (side, set) in [(left, &mut out.removed), (right, &mut out.added)] {
                    if shape_of(side, position) != Shape::Leaf {
                        let _ = collect(side, position, path, set, false);
                    }
                }
            }
        }
        Shape::Map => {
            let lhs_fields = lhs.and_then(Value::as_object);
            let rhs_fields = rhs.and_then(Value::as_object);
            for (name, left) in lhs_fields.into_iter().flatten() {
                path.push(PathElement::Field(name.clone()));
                let right = rhs_fields.and_then(|fields| fields.get(name));
                compare(Some(left), right, position.field(name), path, out);
                path.pop();
            }
            for (name, right) in rhs_fields.into_iter().flatten() {
                if !lhs_fields.is_some_and(|fields| fields.contains_key(name)) {
                    path.push(PathElement::Field(name.clone()));
                    compare(None, Some(right), position.field(name), path, out);
                    path.pop();
                }
            }
            compare_membership(lhs, rhs, path, out);
        }
        Shape::List(kind) => {
            let lhs_items = index_elements(lhs, &kind, position);
            let rhs_items = index_elements(rhs, &kind, position);
            for (element, left) in &lhs_items {
                path.push(element.clone());
                compare(
                    Some(left),
                    rhs_items.get(element).copied(),
                    position.items(),
                    path,
                    out,
                );
                path.pop();
            }
            for (element, right) in &rhs_items {
                if !lhs_items.contains_key(element) {
                    path.push(element.clone());
                    compare(None, Some(right), position.items(), path, out);
                    path.pop();
                }
            }
            compare_membership(lhs, rhs, path, out);
        }
    }
}

/// A list's elements by path element (the first of duplicates; elements without one are
/// skipped).
fn index_elements<'v>(
    list: Option<&'v Value>,
    kind: &ListKind,
    position: Position,
) -> BTreeMap<PathElement, &'v Value> {
    let mut elements = BTreeMap::new();
    for item in list.and_then(Value::as_array).into_iter().flatten() {
        if let Ok(element) = element_of(item, kind, position) {
            elements.entry(element).or_insert(item);
        }
    }
    elements
}

fn shape_of(value: &Value, position: Position) -> Shape {
    shape([Some(value), None], position)
}

fn compare_leaf(
    lhs: Option<&Value>,
    rhs: Option<&Value>,
    path: &[PathElement],
    out: &mut Comparison,
) {
    match (lhs, rhs) {
        (None, Some(_)) => out.added.insert(path),
        (Some(_), None) => out.removed.insert(path),
        (Some(left), Some(right)) if !json_eq(left, right) => out.modified.insert(path),
        _ => {}
    }
}

fn compare_membership(
    lhs: Option<&Value>,
    rhs: Option<&Value>,
    path: &[PathElement],
    out: &mut Comparison,
) {
    match (lhs, rhs) {
        (None, Some(_)) => out.added.insert(path),
        (Some(_), None) => out.removed.insert(path),
        _ => {}
    }
}

/// `value` without the paths of `set` (SMD's RemoveItems). `None` when nothing is left:
/// the field is then dropped from its parent.
fn remove_items(value: &Value, set: &FieldSet, position: Position) -> Option<Value> {
    match shape_of(value, position) {
        // Below an atomic value there is nothing to remove but the value itself.
        Shape::Leaf => match value {
            Value::Object(_) | Value::Array(_) => None,
            _ => Some(value.clone()),
        },
        Shape::Map => {
            let mut out = Map::new();
            for (name, child) in value.as_object().into_iter().flatten() {
                let element = PathElement::Field(name.clone());
                if set.members.contains(&element) {
                    continue;
                }
                let kept = match set.child(&element) {
                    Some(below) => remove_items(child, below, position.field(name)),
                    None => Some(child.clone()),
                };
                if let Some(kept) = kept {
                    out.insert(name.clone(), kept);
                }
            }
            (!out.is_empty()).then_some(Value::Object(out))
        }
        Shape::List(kind) => {
            let mut out = Vec::new();
            for item in value.as_array().into_iter().flatten() {
                let Ok(element) = element_of(item, &kind, position) else {
                    out.push(item.clone());
                    continue;
                };
                if set.members.contains(&element) {
                    continue;
                }
                let kept = match set.child(&element) {
                    Some(below) => remove_items(item, below, position.items()),
                    None => Some(item.clone()),
                };
                out.extend(kept);
            }
            (!out.is_empty()).then_some(Value::Array(out))
        }
    }
}

/// `set` with the named fields (declared fields of structs) that have members below them
/// made members too, so that removing them removes the whole field.
fn ensure_named_fields(set: &FieldSet, position: Position) -> FieldSet {
    let mut result = FieldSet {
        members: set.members.clone(),
        children: BTreeMap::new(),
    };
    for (element, below) in &set.children {
        if let PathElement::Field(name) = element
            && position.declares(name)
        {
            result.members.insert(element.clone());
        }
        result.children.insert(
            element.clone(),
            ensure_named_fields(below, position.descend(element)),
        );
    }
    result
}

/// Removes from `merged` what the applier applied last time (`last`) but not this time,
/// unless another manager owns it (SMD's prune with its add-back steps).
fn prune(merged: Value, managers: &Managers, last: &FieldSet, root: Position) -> Value {
    if last.is_empty() {
        return merged;
    }
    let named = |set: &FieldSet| ensure_named_fields(set, root);
    let remove = |set: &FieldSet| remove_items(&merged, set, root).unwrap_or_else(|| json!({}));
    let last = named(last);
    let merged_set = named(&field_set(&merged, root));

    let pruned = remove(&last);
    let owned = managers
        .values()
        .fold(server_fields(&merged), |owned, manager| {
            owned.union(&manager.set)
        });
    let pruned_set = named(&field_set(&pruned, root));
    let pruned = remove(&merged_set.difference(&pruned_set.union(&named(&owned))));

    let pruned_set = named(&field_set(&pruned, root));
    remove(&merged_set.difference(&pruned_set).intersection(&last))
}

/// Drops from `result` the fields the applied configuration set to `null`.
fn drop_applied_nulls(result: &mut Value, applied: &Value, position: Position) {
    match shape([Some(result), Some(applied)], position) {
        Shape::Map => {
            let (Some(fields), Some(applied)) = (result.as_object_mut(), applied.as_object())
            else {
                return;
            };
            for (name, value) in applied {
                if value.is_null() {
                    if fields.get(name).is_some_and(Value::is_null) {
                        fields.remove(name);
                    }
                } else if let Some(field) = fields.get_mut(name) {
                    drop_applied_nulls(field, value, position.field(name));
                }
            }
        }
        Shape::List(kind @ ListKind::Keyed(_)) => {
            let (Some(items), Some(applied)) = (result.as_array_mut(), applied.as_array()) else {
                return;
            };
            let mut positions: BTreeMap<PathElement, usize> = BTreeMap::new();
            for (index, item) in items.iter().enumerate() {
                if let Ok(element) = element_of(item, &kind, position) {
                    positions.entry(element).or_insert(index);
                }
            }
            for value in applied {
                let Ok(element) = element_of(value, &kind, position) else {
                    continue;
                };
                if let Some(item) = positions.get(&element).and_then(|&i| items.get_mut(i)) {
                    drop_applied_nulls(item, value, position.items());
                }
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------
// JSON helpers
// ---------------------------------------------------------------------------------------

/// SMD's total order of values: numbers (compared numerically), strings, booleans, lists,
/// maps, null.
fn json_cmp(a: &Value, b: &Value) -> Ordering {
    fn rank(value: &Value) -> u8 {
        match value {
            Value::Number(_) => 0,
            Value::String(_) => 1,
            Value::Bool(_) => 2,
            Value::Array(_) => 3,
            Value::Object(_) => 4,
            Value::Null => 5,
        }
    }
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let integer =
                |n: &serde_json::Number| n.as_i64().map(i128::from).or(n.as_u64().map(i128::from));
            match (integer(x), integer(y)) {
                (Some(x), Some(y)) => x.cmp(&y),
                _ => {
                    let float = |n: &serde_json::Number| n.as_f64().unwrap_or_default();
                    float(x).partial_cmp(&float(y)).unwrap_or(Ordering::Equal)
                }
            }
        }
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Array(x), Value::Array(y)) => x
            .iter()
            .zip(y)
            .map(|(x, y)| json_cmp(x, y))
            .find(|ordering| ordering.is_ne())
            .unwrap_or_else(|| x.len().cmp(&y.len())),
        (Value::Object(x), Value::Object(y)) => {
            let mut x: Vec<_> = x.iter().collect();
            let mut y: Vec<_> = y.iter().collect();
            x.sort_by(|a, b| a.0.cmp(b.0));
            y.sort_by(|a, b| a.0.cmp(b.0));
            x.iter()
                .zip(&y)
                .map(|((xk, xv), (yk, yv))| xk.cmp(yk).then_with(|| json_cmp(xv, yv)))
                .find(|ordering| ordering.is_ne())
                .unwrap_or_else(|| x.len().cmp(&y.len()))
        }
        _ => rank(a).cmp(&rank(b)),
    }
}

/// Equality as SMD sees it (`1` equals `1.0`).
fn json_eq(a: &Value, b: &Value) -> bool {
    json_cmp(a, b).is_eq()
}

/// Compact JSON as Go's encoder writes it (`<`, `>`, `&`, U+2028 and U+2029 escaped).
fn go_json(value: &Value) -> String {
    let mut out = String::new();
    for c in value.to_string().chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const T1: &str = "2024-01-01T00:00:00Z";
    const T2: &str = "2024-01-02T00:00:00Z";
    const T3: &str = "2024-01-03T00:00:00Z";
    const T4: &str = "2024-01-04T00:00:00Z";

    fn deployment() -> Schema<'static> {
        Schema::builtin("io.k8s.api.apps.v1.Deployment")
    }

    /// A main-resource writer (Deployments have a status subresource) at T1.
    fn writer(manager: &'static str) -> Writer<'static> {
        Writer {
            manager,
            api_version: "apps/v1",
            part: Part::Main {
                status_subresource: true,
            },
            time: T1,
            schema: deployment(),
        }
    }

    fn at(manager: &'static str, time: &'static str) -> Writer<'static> {
        Writer {
            time,
            ..writer(manager)
        }
    }

    fn config(replicas: Value) -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}
                }
            }
        })
    }

    /// What `config` owns.
    fn config_fields() -> Value {
        json!({
            "f:metadata": {"f:labels": {"f:app": {}}},
            "f:spec": {
                "f:replicas": {},
                "f:selector": {},
                "f:template": {
                    "f:metadata": {"f:labels": {"f:app": {}}},
                    "f:spec": {"f:containers": {
                        "k:{\"name\":\"c\"}": {".": {}, "f:image": {}, "f:name": {}}
                    }}
                }
            }
        })
    }

    /// A partial configuration of the same Deployment.
    fn partial(spec: Value) -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": spec
        })
    }

    fn containers(containers: Value) -> Value {
        partial(json!({"template": {"spec": {"containers": containers}}}))
    }

    fn entry(manager: &str, operation: &str, time: Option<&str>, fields: Value) -> Value {
        let mut entry = json!({
            "manager": manager,
            "operation": operation,
            "apiVersion": "apps/v1",
            "fieldsType": "FieldsV1",
            "fieldsV1": fields
        });
        if let Some(time) = time {
            entry["time"] = json!(time);
        }
        entry
    }

    fn managed(object: &Value) -> &Value {
        &object["metadata"]["managedFields"]
    }

    fn fields<'v>(object: &'v Value, manager: &str) -> &'v Value {
        managed(object)
            .as_array()
            .and_then(|entries| entries.iter().find(|e| e["manager"] == json!(manager)))
            .map_or(&Value::Null, |entry| &entry["fieldsV1"])
    }

    fn conflict(result: Result<Value, ApplyError>) -> ApplyConflict {
        match result {
            Err(ApplyError::Conflict(conflict)) => conflict,
            other => panic!("expected a conflict, got {other:?}"),
        }
    }

    fn applied_by_a() -> Value {
        apply(None, &config(json!(2)), &writer("a"), false).unwrap()
    }

    #[test]
    fn apply_creates_with_the_applied_fields() {
        let created = applied_by_a();
        let mut expected = config(json!(2));
        expected["metadata"]["managedFields"] =
            json!([entry("a", "Apply", Some(T1), config_fields())]);
        assert_eq!(created, expected);
    }

    #[test]
    fn apply_of_a_different_value_conflicts() {
        let live = applied_by_a();
        let result = apply(
            Some(&live),
            &partial(json!({"replicas": 3})),
            &writer("b"),
            false,
        );
        let conflict = conflict(result);
        assert_eq!(
            conflict.conflicts,
            vec![Conflict {
                manager: "\"a\"".into(),
                field: ".spec.replicas".into()
            }]
        );
        assert_eq!(
            conflict.message(),
            "Apply failed with 1 conflict: conflict with \"a\": .spec.replicas"
        );
        assert_eq!(conflict.conflicts[0].cause_message(), "conflict with \"a\"");
        assert_eq!(
            ApplyError::Conflict(conflict.clone()).to_string(),
            conflict.message()
        );
    }

    #[test]
    fn apply_of_the_same_value_shares_ownership() {
        let live = applied_by_a();
        let shared = apply(
            Some(&live),
            &partial(json!({"replicas": 2})),
            &at("b", T2),
            false,
        )
        .unwrap();
        // The object does not change, so (as in Kubernetes) b's new entry gets no time and
        // sorts first.
        let mut expected = config(json!(2));
        expected["metadata"]["managedFields"] = json!([
            entry("b", "Apply", None, json!({"f:spec": {"f:replicas": {}}})),
            entry("a", "Apply", Some(T1), config_fields()),
        ]);
        assert_eq!(shared, expected);
    }

    #[test]
    fn forced_apply_takes_the_field_over() {
        let live = applied_by_a();
        let forced = apply(
            Some(&live),
            &partial(json!({"replicas": 3})),
            &at("b", T2),
            true,
        )
        .unwrap();
        let mut expected = config(json!(3));
        let mut a_fields = config_fields();
        a_fields["f:spec"]
            .as_object_mut()
            .unwrap()
            .remove("f:replicas");
        expected["metadata"]["managedFields"] = json!([
            entry("a", "Apply", Some(T1), a_fields),
            entry(
                "b",
                "Apply",
                Some(T2),
                json!({"f:spec": {"f:replicas": {}}})
            ),
        ]);
        assert_eq!(forced, expected);
    }

    #[test]
    fn reapplying_the_same_configuration_changes_nothing() {
        let live = applied_by_a();
        let again = apply(Some(&live), &config(json!(2)), &at("a", T2), false).unwrap();
        assert_eq!(again, live);
    }

    #[test]
    fn a_label_no_longer_applied_is_removed() {
        let mut two_labels = config(json!(2));
        two_labels["metadata"]["labels"]["tier"] = json!("front");
        let live = apply(None, &two_labels, &writer("a"), false).unwrap();
        let reapplied = apply(Some(&live), &config(json!(2)), &at("a", T2), false).unwrap();
        assert_eq!(reapplied["metadata"]["labels"], json!({"app": "web"}));
        assert_eq!(fields(&reapplied, "a"), &config_fields());
        assert_eq!(managed(&reapplied)[0]["time"], json!(T2));
    }

    #[test]
    fn a_label_no_longer_applied_stays_when_someone_else_owns_it() {
        let mut two_labels = config(json!(2));
        two_labels["metadata"]["labels"]["tier"] = json!("front");
        let live = apply(None, &two_labels, &writer("a"), false).unwrap();
        let b_config = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "labels": {"tier": "front"}}
        });
        let live = apply(Some(&live), &b_config, &at("b", T2), false).unwrap();
        let reapplied = apply(Some(&live), &config(json!(2)), &at("a", T3), false).unwrap();
        assert_eq!(
            reapplied["metadata"]["labels"],
            json!({"app": "web", "tier": "front"})
        );
        assert_eq!(fields(&reapplied, "a"), &config_fields());
        assert_eq!(
            fields(&reapplied, "b"),
            &json!({"f:metadata": {"f:labels": {"f:tier": {}}}})
        );
    }

    #[test]
    fn containers_merge_by_name() {
        let live = applied_by_a();
        let b_config = containers(json!([{"name": "b", "image": "img-b"}]));
        let merged = apply(Some(&live), &b_config, &at("b", T2), false).unwrap();
        assert_eq!(
            merged["spec"]["template"]["spec"]["containers"],
            json!([{"name": "c", "image": "nginx:1"}, {"name": "b", "image": "img-b"}])
        );
        assert_eq!(fields(&merged, "a"), &config_fields());
        assert_eq!(
            fields(&merged, "b"),
            &json!({"f:spec": {"f:template": {"f:spec": {"f:containers": {
                "k:{\"name\":\"b\"}": {".": {}, "f:image": {}, "f:name": {}}
            }}}}})
        );
        // b stops applying its container: it goes, a's stays.
        let removed = apply(Some(&merged), &containers(json!([])), &at("b", T3), false).unwrap();
        assert_eq!(
            removed["spec"]["template"]["spec"]["containers"],
            json!([{"name": "c", "image": "nginx:1"}])
        );
        assert_eq!(
            managed(&removed),
            &json!([entry("a", "Apply", Some(T1), config_fields())])
        );
    }

    #[test]
    fn env_merges_by_name_inside_a_shared_container() {
        let a_config = containers(json!([{"name": "c", "env": [{"name": "A", "value": "1"}]}]));
        let live = apply(None, &a_config, &writer("a"), false).unwrap();
        let b_config = containers(json!([{"name": "c", "env": [{"name": "B", "value": "2"}]}]));
        let merged = apply(Some(&live), &b_config, &at("b", T2), false).unwrap();
        assert_eq!(
            merged["spec"]["template"]["spec"]["containers"],
            json!([{"name": "c", "env": [
                {"name": "A", "value": "1"},
                {"name": "B", "value": "2"}
            ]}])
        );
        assert_eq!(
            fields(&merged, "b"),
            &json!({"f:spec": {"f:template": {"f:spec": {"f:containers": {
                "k:{\"name\":\"c\"}": {
                    ".": {},
                    "f:env": {"k:{\"name\":\"B\"}": {".": {}, "f:name": {}, "f:value": {}}},
                    "f:name": {}
                }
            }}}}})
        );
    }

    #[test]
    fn finalizers_are_a_set() {
        let with = |finalizers: Value| {
            json!({
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "web", "finalizers": finalizers}
            })
        };
        let live = apply(None, &with(json!(["x", "y"])), &writer("a"), false).unwrap();
        let live = apply(Some(&live), &with(json!(["y", "z"])), &at("b", T2), false).unwrap();
        assert_eq!(live["metadata"]["finalizers"], json!(["x", "y", "z"]));
        assert_eq!(
            fields(&live, "b"),
            &json!({"f:metadata": {"f:finalizers": {"v:\"y\"": {}, "v:\"z\"": {}}}})
        );
        // a drops both: x goes, y stays with b.
        let live = apply(Some(&live), &with(json!([])), &at("a", T3), false).unwrap();
        assert_eq!(live["metadata"]["finalizers"], json!(["y", "z"]));
        assert_eq!(
            managed(&live),
            &json!([entry(
                "b",
                "Apply",
                Some(T2),
                json!({"f:metadata": {"f:finalizers": {"v:\"y\"": {}, "v:\"z\"": {}}}})
            )])
        );
    }

    #[test]
    fn ports_are_keyed_by_port_and_defaulted_protocol() {
        let port = |name: &str| {
            containers(json!([{"name": "c", "ports": [{"containerPort": 80, "name": name}]}]))
        };
        let live = apply(None, &port("http"), &writer("a"), false).unwrap();
        assert_eq!(
            fields(&live, "a"),
            &json!({"f:spec": {"f:template": {"f:spec": {"f:containers": {
                "k:{\"name\":\"c\"}": {".": {}, "f:name": {}, "f:ports": {
                    "k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {
                        ".": {}, "f:containerPort": {}, "f:name": {}
                    }
                }}
            }}}}})
        );
        let conflict = conflict(apply(Some(&live), &port("web"), &writer("b"), false));
        assert_eq!(
            conflict.message(),
            "Apply failed with 1 conflict: conflict with \"a\": \
             .spec.template.spec.containers[name=\"c\"].ports[containerPort=80,protocol=\"TCP\"].name"
        );
    }

    #[test]
    fn conflicts_with_several_managers_are_grouped() {
        let live = applied_by_a();
        let mut scaled = live.clone();
        scaled["spec"]["replicas"] = json!(5);
        let live = update(Some(&live), scaled, &at("kube-controller", T2)).unwrap();
        let image = containers(json!([{"name": "c", "image": "nginx:3"}]));
        let live = apply(Some(&live), &image, &at("b", T3), true).unwrap();
        let conflict = conflict(apply(Some(&live), &config(json!(2)), &at("a", T4), false));
        assert_eq!(
            conflict.message(),
            "Apply failed with 2 conflicts: conflicts with \"b\":\n\
             - .spec.template.spec.containers[name=\"c\"].image\n\
             conflicts with \"kube-controller\" using apps/v1:\n\
             - .spec.replicas"
        );
        assert_eq!(
            conflict
                .conflicts
                .iter()
                .map(Conflict::cause_message)
                .collect::<Vec<_>>(),
            vec![
                "conflict with \"b\"",
                "conflict with \"kube-controller\" using apps/v1"
            ]
        );
    }

    #[test]
    fn a_conflict_message_lists_every_field_of_a_manager() {
        let live = applied_by_a();
        let other = containers(json!([{"name": "c", "image": "nginx:2"}]));
        let mut other = other;
        other["spec"]["replicas"] = json!(7);
        let conflict = conflict(apply(Some(&live), &other, &writer("b"), false));
        assert_eq!(
            conflict.message(),
            "Apply failed with 2 conflicts: conflicts with \"a\":\n\
             - .spec.replicas\n\
             - .spec.template.spec.containers[name=\"c\"].image"
        );
    }

    #[test]
    fn applied_null_unsets_the_field() {
        let live = applied_by_a();
        let unset = apply(Some(&live), &config(Value::Null), &at("a", T2), false).unwrap();
        assert_eq!(unset["spec"].get("replicas"), None);
        // a still owns the field it set to null.
        assert_eq!(fields(&unset, "a"), &config_fields());
        assert_eq!(managed(&unset)[0]["time"], json!(T2));
        // Unsetting a field someone else owns is a conflict.
        let conflict = conflict(apply(
            Some(&live),
            &partial(json!({"replicas": null})),
            &writer("b"),
            false,
        ));
        assert_eq!(
            conflict.message(),
            "Apply failed with 1 conflict: conflict with \"a\": .spec.replicas"
        );
    }

    #[test]
    fn the_first_apply_to_an_untracked_object_conflicts_with_before_first_apply() {
        let mut live = config(json!(1));
        live["metadata"]["uid"] = json!("1234");
        let conflict = conflict(apply(Some(&live), &config(json!(3)), &writer("a"), false));
        assert_eq!(
            conflict.message(),
            "Apply failed with 1 conflict: conflict with \"before-first-apply\" using apps/v1: \
             .spec.replicas"
        );
        // Applying what is there shares the fields. The object does not change, so a's
        // entry gets no time.
        let applied = apply(Some(&live), &config(json!(1)), &writer("a"), false).unwrap();
        let containers = json!({
            ".": {},
            "k:{\"name\":\"c\"}": {".": {}, "f:image": {}, "f:name": {}}
        });
        assert_eq!(
            managed(&applied),
            &json!([
                entry("a", "Apply", None, config_fields()),
                entry(
                    "before-first-apply",
                    "Update",
                    Some(T1),
                    json!({
                        "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                        "f:spec": {
                            ".": {},
                            "f:replicas": {},
                            "f:selector": {},
                            "f:template": {
                                ".": {},
                                "f:metadata": {".": {}, "f:labels": {".": {}, "f:app": {}}},
                                "f:spec": {".": {}, "f:containers": containers}
                            }
                        }
                    })
                ),
            ])
        );
    }

    #[test]
    fn an_applied_configuration_is_checked() {
        let mut twice = config(json!(1));
        twice["spec"]["template"]["spec"]["containers"] =
            json!([{"name": "c", "image": "a"}, {"name": "c", "image": "b"}]);
        assert_eq!(
            apply(None, &twice, &writer("a"), false),
            Err(ApplyError::Invalid(
                "failed to create typed patch object (default/web; apps/v1, Kind=Deployment): \
                 .spec.template.spec.containers: duplicate entries for key [name=\"c\"]"
                    .into()
            ))
        );
        let mut nameless = config(json!(1));
        nameless["spec"]["template"]["spec"]["containers"] = json!([{"image": "a"}]);
        assert_eq!(
            apply(None, &nameless, &writer("a"), false),
            Err(ApplyError::Invalid(
                "failed to create typed patch object (default/web; apps/v1, Kind=Deployment): \
                 .spec.template.spec.containers: element 0: associative list with keys has an \
                 element that omits key field \"name\" (and doesn't have default value)"
                    .into()
            ))
        );
        let mut with_managed_fields = config(json!(1));
        with_managed_fields["metadata"]["managedFields"] = json!([]);
        assert_eq!(
            apply(None, &with_managed_fields, &writer("a"), false),
            Err(ApplyError::Invalid(
                "metadata.managedFields must be nil".into()
            ))
        );
        assert_eq!(
            apply(None, &json!([]), &writer("a"), false),
            Err(ApplyError::Invalid(
                "the applied configuration must be an object".into()
            ))
        );
    }

    #[test]
    fn update_after_create_makes_new_maps_members() {
        let object = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"replicas": 1},
            "status": {"replicas": 5}
        });
        let created = update(None, object.clone(), &writer("kubectl-create")).unwrap();
        // The status (reset by the store on creation) is not tracked.
        let mut expected = object;
        // Unlike Kubernetes, which compares with the Go zero value, `spec` is new here too.
        expected["metadata"]["managedFields"] = json!([entry(
            "kubectl-create",
            "Update",
            Some(T1),
            json!({
                "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                "f:spec": {".": {}, "f:replicas": {}}
            })
        )]);
        assert_eq!(created, expected);
    }

    #[test]
    fn update_moves_changed_fields_to_the_writer() {
        let live = applied_by_a();
        let mut changed = live.clone();
        changed["spec"]["replicas"] = json!(4);
        changed["metadata"]["labels"] = json!({"app": "web", "owner": "me"});
        let updated = update(Some(&live), changed, &at("kube-controller", T2)).unwrap();
        let mut a_fields = config_fields();
        a_fields["f:spec"]
            .as_object_mut()
            .unwrap()
            .remove("f:replicas");
        assert_eq!(
            managed(&updated),
            &json!([
                entry("a", "Apply", Some(T1), a_fields.clone()),
                entry(
                    "kube-controller",
                    "Update",
                    Some(T2),
                    json!({
                        "f:metadata": {"f:labels": {"f:owner": {}}},
                        "f:spec": {"f:replicas": {}}
                    })
                ),
            ])
        );
        // Removing a field removes it from every owner; no gain, no new time.
        let mut removed = updated.clone();
        removed["metadata"]["labels"] = json!({"owner": "me"});
        let updated = update(Some(&updated), removed, &at("other", T3)).unwrap();
        a_fields.as_object_mut().unwrap().remove("f:metadata");
        assert_eq!(
            managed(&updated),
            &json!([
                entry("a", "Apply", Some(T1), a_fields),
                entry(
                    "kube-controller",
                    "Update",
                    Some(T2),
                    json!({
                        "f:metadata": {"f:labels": {"f:owner": {}}},
                        "f:spec": {"f:replicas": {}}
                    })
                ),
            ])
        );
    }

    #[test]
    fn an_applier_can_leave_a_field_to_a_controller() {
        let live = applied_by_a();
        let mut scaled = live.clone();
        scaled["spec"]["replicas"] = json!(4);
        let live = update(Some(&live), scaled, &at("hpa", T2)).unwrap();
        let mut without_replicas = config(json!(0));
        without_replicas["spec"]
            .as_object_mut()
            .unwrap()
            .remove("replicas");
        let applied = apply(Some(&live), &without_replicas, &at("a", T3), false).unwrap();
        assert_eq!(applied["spec"]["replicas"], json!(4));
        assert_eq!(
            fields(&applied, "hpa"),
            &json!({"f:spec": {"f:replicas": {}}})
        );
    }

    #[test]
    fn an_applier_removes_its_container_even_when_a_controller_changed_it() {
        let live = applied_by_a();
        let mut edited = live.clone();
        edited["spec"]["template"]["spec"]["containers"][0]["workingDir"] = json!("/tmp");
        let live = update(Some(&live), edited, &at("ctl", T2)).unwrap();
        let mut other = config(json!(2));
        other["spec"]["template"]["spec"]["containers"] = json!([{"name": "d", "image": "x"}]);
        let applied = apply(Some(&live), &other, &at("a", T3), false).unwrap();
        assert_eq!(
            applied["spec"]["template"]["spec"]["containers"],
            json!([{"name": "d", "image": "x"}])
        );
        assert_eq!(
            managed(&applied).as_array().map(Vec::len),
            Some(1),
            "ctl lost its only field: {applied}"
        );
    }

    #[test]
    fn a_main_write_ignores_status_with_a_status_subresource() {
        let mut live = applied_by_a();
        live["status"] = json!({"replicas": 1});
        let mut with_status = config(json!(2));
        with_status["status"] = json!({"replicas": 9});
        let applied = apply(Some(&live), &with_status, &at("a", T2), false).unwrap();
        assert_eq!(applied["status"], json!({"replicas": 1}));
        assert_eq!(applied, live);
        let mut changed = live.clone();
        changed["status"] = json!({"replicas": 9});
        let updated = update(Some(&live), changed, &at("b", T2)).unwrap();
        assert_eq!(managed(&updated), managed(&live));
    }

    #[test]
    fn a_main_write_owns_status_without_a_status_subresource() {
        let no_subresource = Writer {
            part: Part::Main {
                status_subresource: false,
            },
            ..writer("a")
        };
        let mut with_status = config(json!(2));
        with_status["status"] = json!({"replicas": 9});
        let applied = apply(None, &with_status, &no_subresource, false).unwrap();
        assert_eq!(applied["status"], json!({"replicas": 9}));
        assert_eq!(fields(&applied, "a")["f:status"], json!({"f:replicas": {}}));
    }

    #[test]
    fn the_status_subresource_tracks_only_status() {
        let status = |manager: &'static str, time: &'static str| Writer {
            part: Part::Status,
            ..at(manager, time)
        };
        let live = applied_by_a();
        let mut changed = live.clone();
        changed["spec"]["replicas"] = json!(100);
        changed["status"] = json!({"readyReplicas": 2});
        let updated = update(Some(&live), changed, &status("ctl", T2)).unwrap();
        let status_entry = json!({
            "manager": "ctl",
            "operation": "Update",
            "apiVersion": "apps/v1",
            "time": T2,
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:status": {".": {}, "f:readyReplicas": {}}},
            "subresource": "status"
        });
        assert_eq!(
            managed(&updated),
            &json!([entry("a", "Apply", Some(T1), config_fields()), status_entry])
        );

        // As stored: only status changed.
        let mut stored = live.clone();
        stored["status"] = json!({"readyReplicas": 2});
        stored["metadata"]["managedFields"] = managed(&updated).clone();

        // An apply through /status takes only status, and conflicts name the subresource.
        let mut applied_status = config(json!(50));
        applied_status["status"] = json!({"readyReplicas": 3});
        let conflict = conflict(apply(
            Some(&stored),
            &applied_status,
            &status("other", T3),
            false,
        ));
        assert_eq!(
            conflict.message(),
            "Apply failed with 1 conflict: conflict with \"ctl\" with subresource \"status\" \
             using apps/v1: .status.readyReplicas"
        );
        let applied = apply(Some(&stored), &applied_status, &status("other", T3), true).unwrap();
        assert_eq!(applied["spec"]["replicas"], json!(2));
        assert_eq!(applied["status"], json!({"readyReplicas": 3}));
        assert_eq!(
            managed(&applied)[0],
            json!({
                "manager": "a",
                "operation": "Apply",
                "apiVersion": "apps/v1",
                "time": T1,
                "fieldsType": "FieldsV1",
                "fieldsV1": config_fields()
            })
        );
        assert_eq!(
            managed(&applied)[1],
            json!({
                "manager": "other",
                "operation": "Apply",
                "apiVersion": "apps/v1",
                "time": T3,
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:status": {"f:readyReplicas": {}}},
                "subresource": "status"
            })
        );
        // ctl lost its only owned leaf but keeps the membership of status.
        assert_eq!(managed(&applied)[2]["fieldsV1"], json!({"f:status": {}}));
    }

    #[test]
    fn managed_fields_sent_with_an_update_replace_the_stored_ones() {
        let live = applied_by_a();
        let live = apply(
            Some(&live),
            &partial(json!({"replicas": 2})),
            &at("b", T2),
            false,
        )
        .unwrap();
        // The client drops b's entry.
        let mut edited = live.clone();
        edited["metadata"]["managedFields"] = json!([managed(&live)[1].clone()]);
        let updated = update(Some(&live), edited, &at("kubectl-edit", T3)).unwrap();
        assert_eq!(
            managed(&updated),
            &json!([entry("a", "Apply", Some(T1), config_fields())])
        );
    }

    #[test]
    fn reset_managed_fields_stop_tracking() {
        let live = applied_by_a();
        for reset in [json!([{}]), json!([])] {
            let mut cleared = live.clone();
            cleared["metadata"]["managedFields"] = reset;
            let cleared = update(Some(&live), cleared, &at("kubectl", T2)).unwrap();
            assert_eq!(cleared, config(json!(2)));
            let mut changed = cleared.clone();
            changed["spec"]["replicas"] = json!(3);
            let changed = update(Some(&cleared), changed, &at("kubectl", T3)).unwrap();
            assert_eq!(changed["metadata"].get("managedFields"), None);
        }
        // On creation a reset list only means "nothing sent".
        let mut object = partial(json!({"replicas": 1}));
        object["metadata"]["managedFields"] = json!([{}]);
        let created = update(None, object, &writer("kubectl")).unwrap();
        assert_eq!(
            managed(&created),
            &json!([entry(
                "kubectl",
                "Update",
                Some(T1),
                json!({"f:spec": {".": {}, "f:replicas": {}}})
            )])
        );
    }

    #[test]
    fn malformed_managed_fields() {
        let live = applied_by_a();
        // Not a list of entries: the request is rejected.
        let mut wrong_type = live.clone();
        wrong_type["metadata"]["managedFields"] = json!([{"manager": 5}]);
        assert!(matches!(
            update(Some(&live), wrong_type, &writer("x")),
            Err(ManagedFieldsError::Malformed(_))
        ));
        let mut bad_time = live.clone();
        bad_time["metadata"]["managedFields"][0]["time"] = json!("yesterday");
        assert_eq!(
            update(Some(&live), bad_time, &writer("x"))
                .unwrap_err()
                .to_string(),
            "metadata.managedFields: invalid time \"yesterday\""
        );
        // Entries that do not decode are replaced by the stored ones, as Kubernetes does.
        for broken in [
            json!({"f:spec": 5}),
            json!({"k:{\"name\"": {}}),
            json!({"k:[1]": {}}),
            json!({"i:x": {}}),
            json!("f:spec"),
        ] {
            let mut sent = live.clone();
            sent["metadata"]["managedFields"][0]["fieldsV1"] = broken;
            assert_eq!(update(Some(&live), sent, &writer("x")).unwrap(), live);
        }
        let mut no_type = live.clone();
        no_type["metadata"]["managedFields"][0]["fieldsType"] = Value::Null;
        assert_eq!(update(Some(&live), no_type, &writer("x")).unwrap(), live);
        // A stored object whose managedFields do not decode cannot be applied to.
        let mut stored = live.clone();
        stored["metadata"]["managedFields"][0]["fieldsV1"] = json!({"f:spec": 5});
        assert_eq!(
            apply(Some(&stored), &config(json!(2)), &writer("a"), false),
            Err(ApplyError::Invalid(
                "failed to decode managed fields: error decoding set: expected an object, found 5"
                    .into()
            ))
        );
        let mut operation = live.clone();
        operation["metadata"]["managedFields"][0]["operation"] = json!("Patch");
        assert_eq!(
            apply(Some(&operation), &config(json!(2)), &writer("a"), false),
            Err(ApplyError::Invalid(
                "failed to decode managed fields: operation must be `Apply` or `Update`".into()
            ))
        );
        let mut fields_type = live.clone();
        fields_type["metadata"]["managedFields"][0]["fieldsType"] = json!("FieldsV2");
        assert_eq!(
            apply(Some(&fields_type), &config(json!(2)), &writer("a"), false),
            Err(ApplyError::Invalid(
                "failed to decode managed fields: invalid fieldsType \"FieldsV2\" in managed \
                 fields entry 0"
                    .into()
            ))
        );
    }

    #[test]
    fn entries_are_sorted_like_the_apiserver_sorts_them() {
        let live = apply(None, &partial(json!({"replicas": 1})), &at("z", T3), false).unwrap();
        let mut changed = live.clone();
        changed["spec"]["paused"] = json!(true);
        let live = update(Some(&live), changed, &at("early", T1)).unwrap();
        let live = apply(
            Some(&live),
            &partial(json!({"minReadySeconds": 5})),
            &at("y", T2),
            false,
        )
        .unwrap();
        let names: Vec<(&str, &str)> = managed(&live)
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["manager"].as_str().unwrap(),
                    e["operation"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            names,
            vec![("y", "Apply"), ("z", "Apply"), ("early", "Update")]
        );
    }

    #[test]
    fn update_entries_are_per_api_version() {
        let live = applied_by_a();
        let mut scaled = live.clone();
        scaled["spec"]["replicas"] = json!(3);
        let live = update(Some(&live), scaled, &at("ctl", T2)).unwrap();
        let mut paused = live.clone();
        paused["spec"]["paused"] = json!(true);
        let beta = Writer {
            api_version: "apps/v1beta2",
            ..at("ctl", T3)
        };
        let live = update(Some(&live), paused, &beta).unwrap();
        let mut beta_entry = entry(
            "ctl",
            "Update",
            Some(T3),
            json!({"f:spec": {"f:paused": {}}}),
        );
        beta_entry["apiVersion"] = json!("apps/v1beta2");
        assert_eq!(
            managed(&live)[1],
            entry(
                "ctl",
                "Update",
                Some(T2),
                json!({"f:spec": {"f:replicas": {}}})
            )
        );
        assert_eq!(managed(&live)[2], beta_entry);
        // An applier is one entry whatever the version, which it records.
        let live = apply(Some(&live), &config(json!(3)), &at("a", T4), false).unwrap();
        let beta_apply = Writer {
            api_version: "apps/v1beta2",
            ..at("a", T4)
        };
        let mut changed = config(json!(3));
        changed["spec"]["minReadySeconds"] = json!(1);
        let live = apply(Some(&live), &changed, &beta_apply, false).unwrap();
        let appliers: Vec<&Value> = managed(&live)
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["operation"] == json!("Apply"))
            .collect();
        assert_eq!(appliers.len(), 1);
        assert_eq!(appliers[0]["apiVersion"], json!("apps/v1beta2"));
        assert_eq!(managed(&live).as_array().map(Vec::len), Some(3));
    }

    #[test]
    fn odd_shapes_do_not_panic() {
        let odd = [
            json!({"spec": "text"}),
            json!({"spec": {"template": {"spec": {"containers": {"name": "c"}}}}}),
            json!({"spec": {"template": {"spec": {"containers": [null, 1, {"image": "x"}]}}}}),
            json!({"spec": {"template": {"spec": {"containers": [{"name": "c"}, {"name": "c"}]}}}}),
            json!({"metadata": {"finalizers": [null, {}, [1], "x", "x"]}}),
            json!({"metadata": "text", "status": [1]}),
            json!({"spec": {"selector": [1, 2], "replicas": {"a": 1}}}),
            json!({}),
        ];
        for live in &odd {
            for new in &odd {
                for part in [
                    Part::Status,
                    Part::Main {
                        status_subresource: false,
                    },
                ] {
                    let writer = Writer {
                        part,
                        ..writer("a")
                    };
                    let _ = apply(Some(live), new, &writer, false);
                    let _ = apply(Some(live), new, &writer, true);
                    let _ = apply(None, new, &writer, false);
                    let tracked = update(None, live.clone(), &writer).unwrap();
                    let _ = update(Some(&tracked), new.clone(), &writer).unwrap();
                    let _ = apply(Some(&tracked), new, &writer, true);
                }
            }
        }
        assert_eq!(
            update(None, json!([1]), &writer("a")),
            Ok(json!([1])),
            "not an object: left alone"
        );
    }

    #[test]
    fn times_are_normalized_to_utc_seconds() {
        let live = applied_by_a();
        let mut sent = live.clone();
        sent["metadata"]["managedFields"][0]["time"] = json!("2024-01-01T02:00:00.5+02:00");
        let updated = update(Some(&live), sent, &writer("x")).unwrap();
        assert_eq!(updated, live);
    }

    #[test]
    fn custom_resources_without_a_schema() {
        let cr = Writer {
            api_version: "example.com/v1",
            schema: Schema::unknown(),
            ..writer("a")
        };
        let object = |items: Value, finalizers: Value| {
            json!({
                "apiVersion": "example.com/v1",
                "kind": "Thing",
                "metadata": {"name": "t", "finalizers": finalizers},
                "spec": {"items": items, "size": {"cpu": 1}}
            })
        };
        let live = apply(None, &object(json!([1, 2]), json!(["x"])), &cr, false).unwrap();
        assert_eq!(
            managed(&live)[0]["fieldsV1"],
            json!({
                "f:metadata": {"f:finalizers": {"v:\"x\"": {}}},
                "f:spec": {"f:items": {}, "f:size": {"f:cpu": {}}}
            })
        );
        // metadata is an ObjectMeta (finalizers merge as a set), unknown lists are atomic.
        let b = Writer {
            manager: "b",
            time: T2,
            ..cr
        };
        let conflict = conflict(apply(
            Some(&live),
            &object(json!([3]), json!(["y"])),
            &b,
            false,
        ));
        assert_eq!(
            conflict.message(),
            "Apply failed with 1 conflict: conflict with \"a\": .spec.items"
        );
        let merged = apply(Some(&live), &object(json!([1, 2]), json!(["y"])), &b, false).unwrap();
        assert_eq!(merged["metadata"]["finalizers"], json!(["x", "y"]));
    }

    #[test]
    fn list_elements_merge_in_smd_order() {
        let list = Position::root(deployment())
            .field("spec")
            .field("template")
            .field("spec")
            .field("containers");
        let items =
            |names: &[&str]| Value::Array(names.iter().map(|name| json!({"name": name})).collect());
        for (live, applied, expected) in [
            (
                &["a", "x", "b"][..],
                &["a", "n", "b"][..],
                &["a", "x", "n", "b"][..],
            ),
            (&["a", "b"], &["b", "a"], &["b", "a"]),
            (&["a", "b"], &["c"], &["a", "b", "c"]),
            (&["a", "a", "b"], &["a"], &["a", "b"]),
            (&[], &["a"], &["a"]),
        ] {
            assert_eq!(
                merge(Some(&items(live)), &items(applied), list),
                items(expected),
                "{live:?} + {applied:?}"
            );
        }
    }

    #[test]
    fn fields_v1_round_trip_and_paths() {
        let raw = json!({
            "f:a": {".": {}, "f:b": {}},
            "k:{\"port\":80,\"protocol\":\"TCP\"}": {},
            "v:\"x\"": {},
            "i:3": {},
            "f:c": {"f:d": {}, "x:future": {}},
            "x:future": {"f:e": {}}
        });
        let set = FieldSet::from_json(&raw).unwrap();
        assert_eq!(
            set.to_json(),
            json!({
                "f:a": {".": {}, "f:b": {}},
                "f:c": {"f:d": {}},
                "k:{\"port\":80,\"protocol\":\"TCP\"}": {},
                "v:\"x\"": {},
                "i:3": {}
            })
        );
        let paths: Vec<String> = set.paths().iter().map(|path| path_string(path)).collect();
        assert_eq!(
            paths,
            vec![
                ".a",
                "[port=80,protocol=\"TCP\"]",
                "[=\"x\"]",
                "[3]",
                ".a.b",
                ".c.d"
            ]
        );
        assert_eq!(FieldSet::from_json(&Value::Null), Ok(FieldSet::default()));
        assert_eq!(
            FieldSet::from_json(&json!({"k:{\"a\":1,\"b\":\"<&>\"}": {}}))
                .unwrap()
                .to_json(),
            json!({"k:{\"a\":1,\"b\":\"\\u003c\\u0026\\u003e\"}": {}})
        );
    }

    #[test]
    fn fields_v1_errors() {
        for (raw, error) in [
            (json!(5), "expected an object, found 5"),
            (json!({"f:a": []}), "expected an object, found []"),
            (
                json!({"k:{\"a\"": {}}),
                "parsing \"k:{\\\"a\\\"\": EOF while parsing an object at line 1 column 4",
            ),
            (
                json!({"k:[1]": {}}),
                "parsing \"k:[1]\": expected an object",
            ),
            (
                json!({"i:-1": {}}),
                "parsing \"i:-1\": invalid digit found in string",
            ),
            (
                json!({"v:": {}}),
                "parsing \"v:\": EOF while parsing a value at line 1 column 0",
            ),
        ] {
            assert_eq!(FieldSet::from_json(&raw), Err(error.to_owned()), "{raw}");
        }
    }

    #[test]
    fn go_formatting() {
        assert_eq!(
            value_string(&json!({"b": [1, true, null], "a": "x"})),
            "{a=\"x\",b=[1,true,null]}"
        );
        assert!(json_eq(&json!({"n": 1}), &json!({"n": 1.0})));
        assert!(!json_eq(&json!({"n": 1}), &json!({"n": 1, "m": 2})));
        assert_eq!(json_cmp(&json!(2), &json!("1")), Ordering::Less);
        assert_eq!(json_cmp(&json!([1]), &json!([1, 0])), Ordering::Less);
    }

    #[test]
    fn entries_serialize_like_kubernetes() {
        let entry = ManagedFieldsEntry {
            manager: "m".into(),
            operation: "Update".into(),
            api_version: "v1".into(),
            time: Some(T1.into()),
            fields_type: Some("FieldsV1".into()),
            fields_v1: Some(json!({})),
            subresource: None,
        };
        let expected = json!({
            "manager": "m",
            "operation": "Update",
            "apiVersion": "v1",
            "time": T1,
            "fieldsType": "FieldsV1",
            "fieldsV1": {}
        });
        assert_eq!(serde_json::to_value(&entry).unwrap(), expected);
        assert_eq!(entry.to_json(), expected);
        let parsed: ManagedFieldsEntry =
            serde_json::from_value(json!({"manager": null, "extra": 1})).unwrap();
        assert_eq!(parsed, ManagedFieldsEntry::default());
    }
}
