//! The object store: every object of every type, one global resourceVersion counter, the
//! event log watches resume from, and the apiserver-side machinery that runs on each write
//! (CRD registration, finalizers, namespace and CRD termination, garbage collection).

use crate::auth::{aggregation, bootstrap, rbac};
use crate::managed::{self, Part, Writer};
use crate::patch;
use crate::resources::{self, GroupResource, Registry, ResourceType};
use crate::schema::{self, Schema};
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::ApiError;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::broadcast;

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Created.
    Added,
    /// Changed.
    Modified,
    /// Removed from the store.
    Deleted,
}

impl EventType {
    /// `ADDED`, `MODIFIED`, `DELETED` as watch events spell them.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as stored in the event log and sent to watchers.
#[derive(Debug)]
pub struct Event {
    /// The resourceVersion of the change.
    pub rv: u64,
    /// The type of the object.
    pub gr: GroupResource,
    /// Its namespace (empty when cluster-scoped).
    pub namespace: String,
    /// What happened.
    pub kind: EventType,
    /// The object after the change (before it, for deletions).
    pub object: Value,
    /// The object before a modification (so filtered watches can tell entering from
    /// leaving their selection).
    pub old: Option<Value>,
}

/// How unknown fields in a request are treated (`fieldValidation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    /// Reject the request.
    Strict,
    /// Drop the fields and warn.
    Warn,
    /// Drop the fields silently.
    Ignore,
}

/// Options common to writes.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    /// The field manager recorded in managedFields.
    pub manager: String,
    /// Unknown-field handling.
    pub validation: FieldValidation,
    /// `dryRun=All`: everything but the commit.
    pub dry_run: bool,
}

/// The result of a write: the object and any warnings for the `Warning` header.
#[derive(Debug)]
pub struct Outcome {
    /// The object as stored (or as it would be, in a dry run).
    pub object: Value,
    /// `true` when the write created the object (HTTP 201).
    pub created: bool,
    /// Warnings (unknown fields dropped under `fieldValidation=Warn`).
    pub warnings: Vec<String>,
}

/// The body of a PATCH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// RFC 6902.
    Json,
    /// RFC 7386.
    Merge,
    /// Strategic merge patch (built-in kinds only).
    Strategic,
    /// Server-side apply.
    Apply {
        /// Take over conflicting fields.
        force: bool,
    },
}

/// How dependents are treated when their owner is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    /// Owner goes first, the garbage collector deletes dependents afterwards.
    Background,
    /// Dependents go first; the owner waits with the `foregroundDeletion` finalizer.
    Foreground,
    /// Dependents stay, their ownerReferences to the owner removed.
    Orphan,
}

/// Options of a DELETE.
#[derive(Debug, Clone)]
pub struct DeleteOptions {
    /// Dependents policy.
    pub propagation: Propagation,
    /// `preconditions.uid`.
    pub uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub resource_version: Option<String>,
    /// `dryRun=All`.
    pub dry_run: bool,
}

/// A page of a list.
#[derive(Debug)]
pub struct ListPage {
    /// The objects, in the requested version.
    pub items: Vec<Value>,
    /// The resourceVersion the list was read at.
    pub resource_version: u64,
    /// Token for the next page, when `limit` cut the list.
    pub continue_token: Option<String>,
    /// Objects after this page.
    pub remaining: Option<usize>,
}

/// Filters of a list or watch.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Only this namespace (None = all namespaces).
    pub namespace: Option<String>,
    /// `labelSelector`.
    pub labels: Option<LabelSelector>,
    /// `fieldSelector`.
    pub fields: Option<FieldSelector>,
}

impl Selection {
    /// Whether `object` (in namespace `namespace`) is selected.
    pub fn matches(&self, namespace: &str, object: &Value) -> bool {
        self.namespace.as_deref().is_none_or(|ns| ns == namespace)
            && self
                .labels
                .as_ref()
                .is_none_or(|l| l.matches_object(object))
            && self.fields.as_ref().is_none_or(|f| f.matches(object))
    }
}

/// The key of an object within its type.
type ObjectKey = (String, String);

/// The finalizer a foreground deletion adds to the owner.
const FOREGROUND: &str = "foregroundDeletion";
/// The finalizer a deleted namespace waits on.
const NAMESPACE_FINALIZER: &str = "kubernetes";
/// The finalizer a deleted CRD waits on until its objects are gone.
const CRD_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

struct State {
    rv: u64,
    registry: Registry,
    objects: HashMap<GroupResource, BTreeMap<ObjectKey, Value>>,
    /// The stored objects with a deletionTimestamp: what settling looks at after every
    /// write (scanning every object instead made each write cost the whole store).
    terminating: BTreeSet<(GroupResource, ObjectKey)>,
    /// The cluster IPs and node ports the stored Services hold (looked up by every
    /// Service write: walking every Service made each write cost them all).
    service_addresses: ServiceAddresses,
    log: VecDeque<Arc<Event>>,
    log_capacity: usize,
    /// Events up to this resourceVersion are no longer in the log.
    compacted: u64,
    events: broadcast::Sender<Arc<Event>>,
    /// ClusterRole aggregation is running (the writes it makes do not start it again).
    aggregating: bool,
}

/// The store, shared by every request handler.
pub struct Store {
    state: Mutex<State>,
}

/// A live subscription: the events after the requested version that are still in the log,
/// then the channel that carries later ones.
pub struct Subscription {
    /// Logged events newer than the requested resourceVersion.
    pub backlog: Vec<Arc<Event>>,
    /// Events to come.
    pub receiver: broadcast::Receiver<Arc<Event>>,
    /// Objects that exist now (for watches that start with their initial state).
    pub initial: Vec<(String, Value)>,
    /// The current resourceVersion.
    pub resource_version: u64,
}

/// Now, as Kubernetes writes timestamps (RFC 3339, seconds).
pub fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn meta(object: &Value, field: &str) -> Option<String> {
    object
        .get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

fn metadata_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = json!({});
    }
    match object.get_mut("metadata") {
        Some(Value::Object(metadata)) => metadata,
        _ => unreachable!("metadata was just made an object"),
    }
}

fn finalizers(object: &Value) -> Vec<String> {
    object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|f| {
            f.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn set_finalizers(object: &mut Value, finalizers: &[String]) {
    let metadata = metadata_mut(object);
    if finalizers.is_empty() {
        metadata.remove("finalizers");
    } else {
        metadata.insert("finalizers".into(), json!(finalizers));
    }
}

/// The finalizers of a namespace's `spec` (the namespace controller's `kubernetes`).
fn spec_finalizers(ty: &ResourceType, object: &Value) -> Vec<String> {
    if ty.gr.resource != "namespaces" || !ty.gr.group.is_empty() {
        return Vec::new();
    }
    object
        .pointer("/spec/finalizers")
        .and_then(Value::as_array)
        .map(|f| {
            f.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn is_cluster_roles(ty: &ResourceType) -> bool {
    ty.gr.group == rbac::GROUP && ty.gr.resource == "clusterroles"
}

fn is_terminating(object: &Value) -> bool {
    object.pointer("/metadata/deletionTimestamp").is_some()
}

/// The parts of an object that count as its spec for `generation` (all but metadata and,
/// with a status subresource, status).
fn spec_part(ty: &ResourceType, object: &Value) -> Value {
    let mut copy = object.clone();
    if let Some(fields) = copy.as_object_mut() {
        for key in ["metadata", "apiVersion", "kind"] {
            fields.remove(key);
        }
        if ty.status_subresource {
            fields.remove("status");
        }
    }
    copy
}

/// An object without its resourceVersion, to detect writes that change nothing (a change of
/// managedFields alone is a change).
fn comparable(object: &Value) -> Value {
    let mut copy = object.clone();
    if let Some(metadata) = copy.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.remove("resourceVersion");
    }
    if let Some(fields) = copy.as_object_mut() {
        fields.remove("apiVersion");
    }
    copy
}

const NAME_CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn random_suffix() -> String {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    bytes
        .iter()
        .take(5)
        .map(|b| NAME_CHARS[usize::from(*b) % NAME_CHARS.len()] as char)
        .collect()
}

/// Whether `name` is a DNS label (RFC 1123): what namespace names must be.
pub(crate) fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// Whether `name` is a DNS subdomain (RFC 1123): what most object names must be.
pub(crate) fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(is_dns_label)
}

/// Why `name` cannot be a path segment (`path.IsValidPathSegmentName`): what RBAC object
/// names must be; empty when it can.
pub(crate) fn path_segment_errors(name: &str) -> Vec<String> {
    if name == "." || name == ".." {
        return vec![format!("may not be '{name}'")];
    }
    ["/", "%"]
        .iter()
        .filter(|illegal| name.contains(*illegal))
        .map(|illegal| format!("may not contain '{illegal}'"))
        .collect()
}

/// Checks `metadata.name` as Kubernetes does (DNS label for namespaces, path segment for
/// the RBAC kinds, DNS subdomain otherwise).
fn validate_name(ty: &ResourceType, name: &str) -> Result<(), ApiError> {
    let errors = if ty.gr.resource == "namespaces" && ty.gr.group.is_empty() {
        (!is_dns_label(name)).then(|| vec![
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')".to_owned(),
        ])
    } else if ty.gr.group == rbac::GROUP {
        Some(path_segment_errors(name)).filter(|errors| !errors.is_empty())
    } else {
        (!is_dns_subdomain(name)).then(|| vec![
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".to_owned(),
        ])
    };
    let Some(errors) = errors else {
        return Ok(());
    };
    let causes: Vec<(String, String)> = errors
        .iter()
        .map(|error| {
            (
                "metadata.name".to_owned(),
                format!("Invalid value: \"{name}\": {error}"),
            )
        })
        .collect();
    Err(ApiError::invalid(&ty.kind_group(), name, &causes))
}

impl Default for Store {
    fn default() -> Self {
        Store::new(10_000)
    }
}

impl Store {
    /// A store with the built-in types, the four standard namespaces, the default RBAC
    /// roles and bindings, and an event log that remembers `log_capacity` changes for
    /// watches to resume from.
    pub fn new(log_capacity: usize) -> Self {
        let (events, _) = broadcast::channel(4096);
        let store = Store {
            state: Mutex::new(State {
                rv: 1,
                registry: Registry::builtin(),
                objects: HashMap::new(),
                terminating: BTreeSet::new(),
                service_addresses: ServiceAddresses::default(),
                log: VecDeque::new(),
                log_capacity: log_capacity.max(1),
                compacted: 0,
                events,
                aggregating: false,
            }),
        };
        let namespaces = ["default", "kube-system", "kube-public", "kube-node-lease"].map(|name| {
            let namespace =
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
            (String::new(), "namespaces", namespace)
        });
        let policy = bootstrap::objects()
            .into_iter()
            .map(|(resource, object)| (rbac::GROUP.to_owned(), resource, object));
        let options = WriteOptions {
            manager: "kube-apiserver".into(),
            validation: FieldValidation::Ignore,
            dry_run: false,
        };
        for (group, resource, object) in namespaces.into_iter().chain(policy) {
            let gr = GroupResource {
                group,
                resource: resource.to_owned(),
            };
            // The standard objects are well-formed; a failure here would be a bug that
            // every test would show at once.
            let created = store
                .registry()
                .get(&gr)
                .ok_or_else(ApiError::no_route)
                .and_then(|ty| store.create(&ty, "v1", "", object, &options));
            if let Err(error) = created {
                tracing::error!(%error, "creating the standard {}", gr.resource);
            }
        }
        store
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A snapshot of the served types.
    pub fn registry(&self) -> Registry {
        self.lock().registry.clone()
    }

    /// Every change from now on, of every type.
    pub fn events(&self) -> broadcast::Receiver<Arc<Event>> {
        self.lock().events.subscribe()
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    /// Forgets the event log (as etcd compaction does): watches from any older version
    /// get `410 Expired`.
    pub fn compact(&self) {
        let mut state = self.lock();
        state.compacted = state.rv;
        state.log.clear();
    }

    /// Compacts past every watcher's position: the revision moves on by one without an
    /// event (as writes to other keys move etcd's), then the log is forgotten up to it. A
    /// watch resumed from any version it was sent gets `410 Expired` and lists again.
    pub fn expire_history(&self) {
        let mut state = self.lock();
        state.rv += 1;
        state.compacted = state.rv;
        state.log.clear();
    }

    /// One object, in `version`.
    pub fn get(
        &self,
        ty: &ResourceType,
        version: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Value, ApiError> {
        let state = self.lock();
        state
            .object(&ty.gr, namespace, name)
            .map(|object| in_version(ty, version, object.clone()))
            .ok_or_else(|| ApiError::not_found(ty.gr.subject(), name))
    }

    /// A page of objects of `ty` matching `selection`, after the `continue` token.
    pub fn list(
        &self,
        ty: &ResourceType,
        version: &str,
        selection: &Selection,
        limit: Option<usize>,
        continue_token: Option<&str>,
    ) -> Result<ListPage, ApiError> {
        let state = self.lock();
        let after = continue_token.map(decode_continue).transpose()?;
        if let Some((rv, _)) = &after
            && *rv < state.compacted
        {
            return Err(ApiError::expired(
                "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
            ));
        }
        let empty = BTreeMap::new();
        let objects = state.objects.get(&ty.gr).unwrap_or(&empty);
        let mut selected = objects
            .iter()
            .filter(|(key, _)| after.as_ref().is_none_or(|(_, last)| *key > last))
            .filter(|((namespace, _), object)| selection.matches(namespace, object));
        let mut items = Vec::new();
        let mut last = None;
        for (key, object) in selected.by_ref() {
            if limit.is_some_and(|limit| limit > 0 && items.len() >= limit) {
                // Put nothing back: the next page starts after `last`.
                let remaining = 1 + selected.count();
                let rv = after.as_ref().map_or(state.rv, |(rv, _)| *rv);
                return Ok(ListPage {
                    items,
                    resource_version: state.rv,
                    continue_token: last.map(|last: &ObjectKey| encode_continue(rv, last)),
                    remaining: Some(remaining),
                });
            }
            items.push(in_version(ty, version, object.clone()));
            last = Some(key);
        }
        Ok(ListPage {
            items,
            resource_version: state.rv,
            continue_token: None,
            remaining: None,
        })
    }

    /// Subscribes to changes after `since` (None: from now, with the current objects as
    /// `initial`). Fails with `410 Expired` when the log no longer reaches back that far.
    pub fn subscribe(
        &self,
        ty: &ResourceType,
        since: Option<u64>,
        selection: &Selection,
    ) -> Result<Subscription, ApiError> {
        let state = self.lock();
        let receiver = state.events.subscribe();
        match since {
            Some(rv) if rv < state.compacted => Err(ApiError::expired(format!(
                "too old resource version: {rv} ({})",
                state.compacted + 1
            ))),
            Some(rv) => Ok(Subscription {
                backlog: state
                    .log
                    .iter()
                    .filter(|event| event.rv > rv && event.gr == ty.gr)
                    .cloned()
                    .collect(),
                receiver,
                initial: Vec::new(),
                resource_version: state.rv,
            }),
            None => {
                let initial = state
                    .objects
                    .get(&ty.gr)
                    .map(|objects| {
                        objects
                            .iter()
                            .filter(|((ns, _), object)| selection.matches(ns, object))
                            .map(|((ns, _), object)| (ns.clone(), object.clone()))
                            .collect()
                    })
                    .unwrap_or_default();
                Ok(Subscription {
                    backlog: Vec::new(),
                    receiver,
                    initial,
                    resource_version: state.rv,
                })
            }
        }
    }

    /// Creates an object (POST).
    pub fn create(
        &self,
        ty: &ResourceType,
        version: &str,
        namespace: &str,
        body: Value,
        options: &WriteOptions,
    ) -> Result<Outcome, ApiError> {
        let mut state = self.lock();
        state.create(ty, version, namespace, body, options)
    }

    /// Replaces an object or its status (PUT).
    #[allow(clippy::too_many_arguments)]
    pub fn update(
        &self,
        ty: &ResourceType,
        version: &str,
        namespace: &str,
        name: &str,
        body: Value,
        status: bool,
        options: &WriteOptions,
    ) -> Result<Outcome, ApiError> {
        let mut state = self.lock();
        let old = state
            .object(&ty.gr, namespace, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(ty.gr.subject(), name))?;
        check_identity(ty, namespace, name, &body)?;
        if let Some(rv) = meta(&body, "resourceVersion").filter(|rv| !rv.is_empty())
            && Some(rv) != meta(&old, "resourceVersion")
        {
            return Err(ApiError::stale(ty.gr.subject(), name));
        }
        let (body, warnings) = state.decode(ty, version, body, options.validation)?;
        let part = part(ty, status);
        let new = managed_update(ty, version, Some(&old), body, part, options)?;
        state.commit_update(
            ty, version, namespace, name, old, new, status, options, warnings,
        )
    }

    /// Patches an object or its status; an apply patch creates a missing object.
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &self,
        ty: &ResourceType,
        version: &str,
        namespace: &str,
        name: &str,
        patch_type: PatchType,
        body: Value,
        status: bool,
        options: &WriteOptions,
    ) -> Result<Outcome, ApiError> {
        let mut state = self.lock();
        let PatchType::Apply { force } = patch_type else {
            let old = state
                .object(&ty.gr, namespace, name)
                .cloned()
                .ok_or_else(|| ApiError::not_found(ty.gr.subject(), name))?;
            let part = part(ty, status);
            let schema = ty.schema(version);
            let current = in_version(ty, version, old.clone());
            let patched = match patch_type {
                PatchType::Json => patch::json_patch(&current, &body),
                PatchType::Merge => patch::merge_patch(&current, &body),
                _ if ty.is_custom() => {
                    return Err(ApiError::unsupported_media_type(
                        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
                    ));
                }
                _ => patch::strategic_merge_patch(&current, &body, schema),
            }
            .map_err(|error| ApiError::patch_failed(error.code(), error.to_string()))?;
            check_identity(ty, namespace, name, &patched)?;
            if let Some(rv) = meta(&patched, "resourceVersion").filter(|rv| !rv.is_empty())
                && Some(rv) != meta(&old, "resourceVersion")
            {
                return Err(ApiError::stale(ty.gr.subject(), name));
            }
            let (patched, warnings) = state.decode(ty, version, patched, options.validation)?;
            let new = managed_update(ty, version, Some(&old), patched, part, options)?;
            return state.commit_update(
                ty, version, namespace, name, old, new, status, options, warnings,
            );
        };
        state.apply(ty, version, namespace, name, body, force, status, options)
    }

    /// Deletes an object: removed at once without finalizers, otherwise marked with a
    /// deletionTimestamp until they are gone. Returns the object as it is afterwards.
    pub fn delete(
        &self,
        ty: &ResourceType,
        version: &str,
        namespace: &str,
        name: &str,
        options: &DeleteOptions,
    ) -> Result<Value, ApiError> {
        let mut state = self.lock();
        let object = state
            .object(&ty.gr, namespace, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(ty.gr.subject(), name))?;
        if options
            .uid
            .as_ref()
            .is_some_and(|uid| Some(uid) != meta(&object, "uid").as_ref())
        {
            return Err(ApiError::conflict(
                ty.gr.subject(),
                name,
                &format!(
                    "Precondition failed: UID in precondition: {}, UID in object meta: {}",
                    options.uid.as_deref().unwrap_or_default(),
                    meta(&object, "uid").unwrap_or_default()
                ),
            ));
        }
        if options
            .resource_version
            .as_ref()
            .is_some_and(|rv| Some(rv) != meta(&object, "resourceVersion").as_ref())
        {
            return Err(ApiError::conflict(
                ty.gr.subject(),
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {}, ResourceVersion in object meta: {}",
                    options.resource_version.as_deref().unwrap_or_default(),
                    meta(&object, "resourceVersion").unwrap_or_default()
                ),
            ));
        }
        if options.dry_run {
            return Ok(in_version(ty, version, object));
        }
        let result = state.delete_object(ty, namespace, name, options.propagation);
        state.settle();
        Ok(in_version(ty, version, result))
    }

    /// Deletes every object of `ty` selected by `selection`.
    pub fn delete_collection(
        &self,
        ty: &ResourceType,
        version: &str,
        selection: &Selection,
        options: &DeleteOptions,
    ) -> Result<Vec<Value>, ApiError> {
        let mut state = self.lock();
        let keys: Vec<ObjectKey> = state
            .objects
            .get(&ty.gr)
            .map(|objects| {
                objects
                    .iter()
                    .filter(|((ns, _), object)| selection.matches(ns, object))
                    .map(|(key, _)| key.clone())
                    .collect()
            })
            .unwrap_or_default();
        let mut deleted = Vec::new();
        for (namespace, name) in keys {
            if options.dry_run {
                if let Some(object) = state.object(&ty.gr, &namespace, &name) {
                    deleted.push(in_version(ty, version, object.clone()));
                }
                continue;
            }
            let object = state.delete_object(ty, &namespace, &name, options.propagation);
            deleted.push(in_version(ty, version, object));
        }
        state.settle();
        Ok(deleted)
    }
}

/// The object as served in `version` (storage keeps one version; conversion is `None`).
fn in_version(ty: &ResourceType, version: &str, mut object: Value) -> Value {
    object["apiVersion"] = json!(ty.api_version(version));
    object
}

fn part(ty: &ResourceType, status: bool) -> Part {
    if status {
        Part::Status
    } else {
        Part::Main {
            status_subresource: ty.status_subresource,
        }
    }
}

fn apply_error(error: managed::ApplyError) -> ApiError {
    match error {
        managed::ApplyError::Conflict(conflict) => {
            let causes = conflict
                .conflicts
                .iter()
                .map(|c| {
                    json!({"reason": "FieldManagerConflict", "message": c.cause_message(), "field": c.field})
                })
                .collect();
            ApiError::apply_conflict(conflict.message(), causes)
        }
        managed::ApplyError::Invalid(error) => ApiError::bad_request(error.to_string()),
    }
}

fn managed_update(
    ty: &ResourceType,
    version: &str,
    old: Option<&Value>,
    new: Value,
    part: Part,
    options: &WriteOptions,
) -> Result<Value, ApiError> {
    let time = now();
    let api_version = ty.api_version(version);
    let writer = Writer {
        manager: &options.manager,
        api_version: &api_version,
        part,
        time: &time,
        schema: ty.schema(version),
    };
    let old = old.map(|old| in_version(ty, version, old.clone()));
    managed::update(old.as_ref(), new, &writer)
        .map_err(|error| ApiError::bad_request(error.to_string()))
}

/// Rejects a body whose name or namespace contradicts the URL.
fn check_identity(
    ty: &ResourceType,
    namespace: &str,
    name: &str,
    body: &Value,
) -> Result<(), ApiError> {
    if let Some(body_name) = meta(body, "name").filter(|n| !n.is_empty())
        && body_name != name
    {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    if ty.namespaced
        && let Some(body_namespace) = meta(body, "namespace").filter(|n| !n.is_empty())
        && body_namespace != namespace
    {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    Ok(())
}

fn encode_continue(rv: u64, last: &ObjectKey) -> String {
    use base64::Engine;
    let token = json!({"rv": rv, "namespace": last.0, "name": last.1});
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token.to_string())
}

fn decode_continue(token: &str) -> Result<(u64, ObjectKey), ApiError> {
    use base64::Engine;
    let invalid = || {
        ApiError::bad_request(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        )
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| invalid())?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    let rv = value
        .get("rv")
        .and_then(Value::as_u64)
        .ok_or_else(invalid)?;
    let text = |key: &str| {
        value
            .get(key)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(invalid)
    };
    Ok((rv, (text("namespace")?, text("name")?)))
}

impl State {
    fn object(&self, gr: &GroupResource, namespace: &str, name: &str) -> Option<&Value> {
        self.objects
            .get(gr)
            .and_then(|objects| objects.get(&(namespace.to_owned(), name.to_owned())))
    }

    /// Prunes unknown fields (rejecting them under Strict) and applies the defaults the
    /// server would.
    fn decode(
        &self,
        ty: &ResourceType,
        version: &str,
        body: Value,
        validation: FieldValidation,
    ) -> Result<(Value, Vec<String>), ApiError> {
        let (mut body, warnings) = self.prune(ty, version, body, validation)?;
        crate::defaults::apply(ty, &mut body);
        Ok((body, warnings))
    }

    /// Prunes unknown fields (rejecting them under Strict), without defaults: an applied
    /// configuration is merged as sent and the merged object defaulted, so that defaulted
    /// fields belong to nobody (as in Kubernetes' field manager).
    fn prune(
        &self,
        ty: &ResourceType,
        version: &str,
        mut body: Value,
        validation: FieldValidation,
    ) -> Result<(Value, Vec<String>), ApiError> {
        if !body.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request must be a JSON object",
            ));
        }
        let mut unknown = Vec::new();
        // The envelope is checked against ObjectMeta whatever the type's schema declares.
        let envelope: Vec<(String, Value)> = ["apiVersion", "kind", "metadata"]
            .iter()
            .filter_map(|key| {
                let fields = body.as_object_mut()?;
                fields.remove(*key).map(|value| ((*key).to_owned(), value))
            })
            .collect();
        schema::prune(&mut body, ty.schema(version), "", &mut unknown);
        for (key, mut value) in envelope {
            if key == "metadata" {
                let object_meta =
                    Schema::builtin("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta");
                schema::prune(&mut value, object_meta, ".metadata", &mut unknown);
            }
            body[key] = value;
        }
        let unknown: Vec<String> = unknown
            .into_iter()
            .map(|path| path.trim_start_matches('.').to_owned())
            .collect();
        match validation {
            FieldValidation::Strict if !unknown.is_empty() => {
                let listed: Vec<String> = unknown
                    .iter()
                    .map(|path| format!("unknown field \"{path}\""))
                    .collect();
                Err(ApiError::bad_request(format!(
                    "strict decoding error: {}",
                    listed.join(", ")
                )))
            }
            FieldValidation::Warn => Ok((
                body,
                unknown
                    .iter()
                    .map(|path| format!("unknown field \"{path}\""))
                    .collect(),
            )),
            _ => Ok((body, Vec::new())),
        }
    }

    /// Applies a configuration (server-side apply), creating the object when it is missing.
    #[allow(clippy::too_many_arguments)]
    fn apply(
        &mut self,
        ty: &ResourceType,
        version: &str,
        namespace: &str,
        name: &str,
        body: Value,
        force: bool,
        status: bool,
        options: &WriteOptions,
    ) -> Result<Outcome, ApiError> {
        let old = self.object(&ty.gr, namespace, name).cloned();
        let part = part(ty, status);
        let schema = ty.schema(version);
        check_identity(ty, namespace, name, &body)?;
        if body.get("apiVersion").and_then(Value::as_str) != Some(&ty.api_version(version))
            || body.get("kind").and_then(Value::as_str) != Some(&ty.kind)
        {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({}) does not match the expected API version ({}) or the kind ({}) does not match {}",
                body.get("apiVersion")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
                ty.api_version(version),
                body.get("kind").and_then(Value::as_str).unwrap_or_default(),
                ty.kind
            )));
        }
        // An applied configuration that names a resourceVersion applies only to that
        // version (optimistic concurrency, as for updates).
        if let (Some(rv), Some(old)) = (
            meta(&body, "resourceVersion").filter(|rv| !rv.is_empty()),
            old.as_ref(),
        ) && Some(rv) != meta(old, "resourceVersion")
        {
            return Err(ApiError::stale(ty.gr.subject(), name));
        }
        let (applied, warnings) = self.prune(ty, version, body, options.validation)?;
        let time = now();
        let writer = Writer {
            manager: &options.manager,
            api_version: &ty.api_version(version),
            part,
            time: &time,
            schema,
        };
        let live = old.clone().map(|old| in_version(ty, version, old));
        let mut merged =
            managed::apply(live.as_ref(), &applied, &writer, force).map_err(apply_error)?;
        crate::defaults::apply(ty, &mut merged);
        match old {
            None => {
                if status {
                    return Err(ApiError::not_found(ty.gr.subject(), name));
                }
                let metadata = metadata_mut(&mut merged);
                metadata.insert("name".into(), json!(name));
                let mut outcome = self.insert_new(ty, version, namespace, merged, options)?;
                outcome.warnings = warnings;
                Ok(outcome)
            }
            Some(old) => self.commit_update(
                ty, version, namespace, name, old, merged, status, options, warnings,
            ),
        }
    }

    fn create(
        &mut self,
        ty: &ResourceType,
        version: &str,
        namespace: &str,
        body: Value,
        options: &WriteOptions,
    ) -> Result<Outcome, ApiError> {
        if body.get("kind").and_then(Value::as_str) != Some(&ty.kind) {
            return Err(ApiError::bad_request(format!(
                "the kind of the object ({}) does not match the kind of the request ({})",
                body.get("kind").and_then(Value::as_str).unwrap_or_default(),
                ty.kind
            )));
        }
        let (mut body, warnings) = self.decode(ty, version, body, options.validation)?;
        if ty.namespaced
            && let Some(body_namespace) = meta(&body, "namespace").filter(|n| !n.is_empty())
            && body_namespace != namespace
        {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let name = match meta(&body, "name").filter(|n| !n.is_empty()) {
            Some(name) => name,
            None => match meta(&body, "generateName").filter(|n| !n.is_empty()) {
                Some(prefix) => format!("{prefix}{}", random_suffix()),
                None => {
                    return Err(ApiError::invalid(
                        &ty.kind_group(),
                        "",
                        &[(
                            "metadata.name".into(),
                            "Required value: name or generateName is required".into(),
                        )],
                    ));
                }
            },
        };
        metadata_mut(&mut body).insert("name".into(), json!(name));
        if ty.status_subresource
            && let Some(fields) = body.as_object_mut()
        {
            fields.remove("status");
        }
        let new = managed_update(ty, version, None, body, part(ty, false), options)?;
        let mut outcome = self.insert_new(ty, version, namespace, new, options)?;
        outcome.warnings = warnings;
        Ok(outcome)
    }

    /// Stores a new object: checks name and namespace, fills server-owned metadata.
    fn insert_new(
        &mut self,
        ty: &ResourceType,
        version: &str,
        namespace: &str,
        mut object: Value,
        options: &WriteOptions,
    ) -> Result<Outcome, ApiError> {
        let name = meta(&object, "name").unwrap_or_default();
        validate_name(ty, &name)?;
        if self.object(&ty.gr, namespace, &name).is_some() {
            return Err(ApiError::already_exists(ty.gr.subject(), &name));
        }
        if ty.namespaced {
            let namespaces = GroupResource {
                group: String::new(),
                resource: "namespaces".into(),
            };
            match self.object(&namespaces, "", namespace) {
                None => {
                    return Err(ApiError::not_found(namespaces.subject(), namespace));
                }
                Some(ns) if is_terminating(ns) => {
                    return Err(ApiError::forbidden(format!(
                        "{} \"{name}\" is forbidden: unable to create new content in namespace {namespace} because it is being terminated",
                        ty.gr.subject().qualified()
                    )));
                }
                Some(_) => {}
            }
        }
        if ty.gr.resource == "customresourcedefinitions" && ty.gr.group == "apiextensions.k8s.io" {
            resources::from_crd(&object)?;
        }
        self.allocate(ty, namespace, &name, None, &mut object);
        let metadata = metadata_mut(&mut object);
        if ty.namespaced {
            metadata.insert("namespace".into(), json!(namespace));
        } else {
            metadata.remove("namespace");
        }
        metadata.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        metadata.insert("creationTimestamp".into(), json!(now()));
        metadata.remove("deletionTimestamp");
        metadata.remove("deletionGracePeriodSeconds");
        if ty.generation {
            metadata.insert("generation".into(), json!(1));
        } else {
            metadata.remove("generation");
        }
        let object = in_version(ty, ty.storage_version(), object);
        if options.dry_run {
            return Ok(Outcome {
                object: in_version(ty, version, object),
                created: true,
                warnings: Vec::new(),
            });
        }
        fits_in_etcd(&object)?;
        let stored = self.put(ty, namespace, &name, object, None);
        self.after_write(ty, namespace, &name);
        let object = self
            .object(&ty.gr, namespace, &name)
            .cloned()
            .unwrap_or(stored);
        Ok(Outcome {
            object: in_version(ty, version, object),
            created: true,
            warnings: Vec::new(),
        })
    }

    /// Stores a changed object, keeping what clients may not change and bumping generation
    /// on spec changes. A write that changes nothing returns the object untouched.
    #[allow(clippy::too_many_arguments)]
    fn commit_update(
        &mut self,
        ty: &ResourceType,
        version: &str,
        namespace: &str,
        name: &str,
        old: Value,
        mut new: Value,
        status: bool,
        options: &WriteOptions,
        warnings: Vec<String>,
    ) -> Result<Outcome, ApiError> {
        {
            let old_metadata = old.get("metadata").cloned().unwrap_or(json!({}));
            let metadata = metadata_mut(&mut new);
            for key in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "namespace",
                "name",
            ] {
                match old_metadata.get(key) {
                    Some(value) => metadata.insert(key.into(), value.clone()),
                    None => metadata.remove(key),
                };
            }
            metadata.remove("resourceVersion");
        }
        if status {
            // Only the status changes through /status.
            let mut merged = old.clone();
            merged["status"] = new.get("status").cloned().unwrap_or(Value::Null);
            if merged["status"].is_null()
                && let Some(fields) = merged.as_object_mut()
            {
                fields.remove("status");
            }
            if let Some(managed) = new.pointer("/metadata/managedFields") {
                metadata_mut(&mut merged).insert("managedFields".into(), managed.clone());
            }
            new = merged;
        } else if ty.status_subresource {
            match old.get("status") {
                Some(old_status) => new["status"] = old_status.clone(),
                None => {
                    if let Some(fields) = new.as_object_mut() {
                        fields.remove("status");
                    }
                }
            }
        }
        if is_terminating(&old) {
            let before = finalizers(&old);
            if let Some(added) = finalizers(&new).iter().find(|f| !before.contains(f)) {
                return Err(ApiError::invalid(
                    &ty.kind_group(),
                    name,
                    &[(
                        "metadata.finalizers".into(),
                        format!(
                            "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{{\"{added}\"}}"
                        ),
                    )],
                ));
            }
        }
        if ty.generation && spec_part(ty, &old) != spec_part(ty, &new) {
            let generation = old
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            metadata_mut(&mut new).insert("generation".into(), json!(generation + 1));
        }
        if ty.gr.resource == "customresourcedefinitions" && ty.gr.group == "apiextensions.k8s.io" {
            let accepted = resources::from_crd(&new)?;
            let current = resources::from_crd(&old)?;
            if accepted.gr != current.gr || accepted.namespaced != current.namespaced {
                return Err(ApiError::invalid(
                    &ty.kind_group(),
                    name,
                    &[(
                        "spec".into(),
                        "Invalid value: group, plural and scope are immutable".into(),
                    )],
                ));
            }
        }
        self.allocate(ty, namespace, name, Some(&old), &mut new);
        let new = in_version(ty, ty.storage_version(), new);
        if comparable(&new) == comparable(&old) {
            return Ok(Outcome {
                object: in_version(ty, version, old),
                created: false,
                warnings,
            });
        }
        if options.dry_run {
            return Ok(Outcome {
                object: in_version(ty, version, new),
                created: false,
                warnings,
            });
        }
        fits_in_etcd(&new)?;
        self.put(ty, namespace, name, new, Some(old));
        self.after_write(ty, namespace, name);
        let object = match self.object(&ty.gr, namespace, name) {
            Some(object) => object.clone(),
            // Removed by the write itself (last finalizer gone).
            None => self
                .log
                .back()
                .map(|event| event.object.clone())
                .unwrap_or(Value::Null),
        };
        Ok(Outcome {
            object: in_version(ty, version, object),
            created: false,
            warnings,
        })
    }

    /// Gives a Service (other than `namespace/name`'s stored self) the cluster IP and node
    /// ports the API server allocates, or keeps those it had.
    fn allocate(
        &self,
        ty: &ResourceType,
        namespace: &str,
        name: &str,
        old: Option<&Value>,
        object: &mut Value,
    ) {
        if !is_core_services(ty) {
            return;
        }
        let key = (namespace.to_owned(), name.to_owned());
        let addresses = &self.service_addresses;
        crate::defaults::core::allocate_service(
            object,
            old,
            &|ip| addresses.ip_held_by_another(&key, ip),
            &|port| addresses.port_held_by_another(&key, port),
        );
    }

    /// Writes an object under a new resourceVersion and records the event.
    fn put(
        &mut self,
        ty: &ResourceType,
        namespace: &str,
        name: &str,
        mut object: Value,
        old: Option<Value>,
    ) -> Value {
        self.rv += 1;
        metadata_mut(&mut object).insert("resourceVersion".into(), json!(self.rv.to_string()));
        let kind = if old.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        let key = (namespace.to_owned(), name.to_owned());
        if is_core_services(ty) {
            self.service_addresses.set(&key, Some(&object));
        }
        if is_terminating(&object) {
            self.terminating.insert((ty.gr.clone(), key.clone()));
        } else {
            self.terminating.remove(&(ty.gr.clone(), key.clone()));
        }
        self.objects
            .entry(ty.gr.clone())
            .or_default()
            .insert(key, object.clone());
        self.record(ty, namespace, kind, object.clone(), old);
        object
    }

    fn record(
        &mut self,
        ty: &ResourceType,
        namespace: &str,
        kind: EventType,
        object: Value,
        old: Option<Value>,
    ) {
        let event = Arc::new(Event {
            rv: self.rv,
            gr: ty.gr.clone(),
            namespace: namespace.to_owned(),
            kind,
            object,
            old,
        });
        self.log.push_back(event.clone());
        while self.log.len() > self.log_capacity {
            if let Some(dropped) = self.log.pop_front() {
                self.compacted = dropped.rv;
            }
        }
        // No receivers is fine: nobody watches.
        let _ = self.events.send(event);
    }

    /// Removes an object from the store (its finalizers are all gone).
    fn remove(&mut self, ty: &ResourceType, namespace: &str, name: &str) -> Option<Value> {
        let key = (namespace.to_owned(), name.to_owned());
        let mut object = self
            .objects
            .get_mut(&ty.gr)
            .and_then(|objects| objects.remove(&key))?;
        if is_core_services(ty) {
            self.service_addresses.set(&key, None);
        }
        self.terminating.remove(&(ty.gr.clone(), key));
        self.rv += 1;
        metadata_mut(&mut object).insert("resourceVersion".into(), json!(self.rv.to_string()));
        self.record(ty, namespace, EventType::Deleted, object.clone(), None);
        if ty.gr.resource == "customresourcedefinitions"
            && ty.gr.group == "apiextensions.k8s.io"
            && let Ok(served) = resources::from_crd(&object)
        {
            self.registry.unregister(&served.gr);
            self.objects.remove(&served.gr);
            self.terminating.retain(|(gr, _)| *gr != served.gr);
        }
        self.collect_garbage(&object);
        if is_cluster_roles(ty) {
            self.aggregate_cluster_roles();
        }
        Some(object)
    }

    /// The server-side reactions to a committed write.
    fn after_write(&mut self, ty: &ResourceType, namespace: &str, name: &str) {
        let Some(object) = self.object(&ty.gr, namespace, name).cloned() else {
            return;
        };
        if is_terminating(&object)
            && finalizers(&object).is_empty()
            && spec_finalizers(ty, &object).is_empty()
        {
            self.remove(ty, namespace, name);
        } else if ty.gr.resource == "customresourcedefinitions"
            && ty.gr.group == "apiextensions.k8s.io"
            && !is_terminating(&object)
        {
            self.establish(ty, name, object);
        } else if ty.gr.resource == "namespaces" && ty.gr.group.is_empty() {
            let phase = if is_terminating(&object) {
                "Terminating"
            } else {
                "Active"
            };
            if object.pointer("/status/phase").and_then(Value::as_str) != Some(phase) {
                let mut updated = object.clone();
                updated["status"] = json!({"phase": phase});
                if !is_terminating(&object) {
                    updated["spec"] = json!({"finalizers": [NAMESPACE_FINALIZER]});
                }
                self.put(ty, "", name, updated, Some(object));
            }
        }
        self.settle();
        if is_cluster_roles(ty) {
            self.aggregate_cluster_roles();
        }
    }

    /// Gives every aggregated ClusterRole the rules its selectors pick, as the
    /// clusterrole-aggregation controller does, until none changes.
    fn aggregate_cluster_roles(&mut self) {
        let gr = GroupResource {
            group: rbac::GROUP.to_owned(),
            resource: "clusterroles".to_owned(),
        };
        let Some(ty) = self.registry.get(&gr).filter(|_| !self.aggregating) else {
            return;
        };
        self.aggregating = true;
        let options = WriteOptions {
            manager: aggregation::MANAGER.to_owned(),
            validation: FieldValidation::Ignore,
            dry_run: false,
        };
        // Each round settles one level of roles aggregating roles (view into edit into
        // admin); a cycle of aggregations stops after a bounded number of rounds.
        for _ in 0..16 {
            let roles: Vec<Value> = self
                .objects
                .get(&gr)
                .map(|roles| roles.values().cloned().collect())
                .unwrap_or_default();
            let stale = aggregation::stale(&roles);
            if stale.is_empty() {
                break;
            }
            for (name, rules) in stale {
                let applied = aggregation::applied(&name, &rules);
                if let Err(error) = self.apply(&ty, "v1", "", &name, applied, true, false, &options)
                {
                    tracing::warn!(%error, "aggregating ClusterRole {name}");
                }
            }
        }
        self.aggregating = false;
    }

    /// Registers a CRD's type and reports it accepted and established.
    fn establish(&mut self, ty: &ResourceType, name: &str, object: Value) {
        let Ok(served) = resources::from_crd(&object) else {
            return;
        };
        let names = object.pointer("/spec/names").cloned().unwrap_or(json!({}));
        let storage = served.storage_version().to_owned();
        self.registry.register(served);
        let time = now();
        let condition = |type_: &str, reason: &str, message: &str| {
            json!({"type": type_, "status": "True", "lastTransitionTime": time,
                   "reason": reason, "message": message})
        };
        let mut status = json!({
            "conditions": [
                condition("NamesAccepted", "NoConflicts", "no conflicts found"),
                condition("Established", "InitialNamesAccepted", "the initial names have been accepted"),
            ],
            "acceptedNames": names,
            "storedVersions": [storage],
        });
        if let Some(old_conditions) = object.pointer("/status/conditions") {
            // Keep transition times when nothing changed.
            if old_conditions.as_array().map(Vec::len) == Some(2) {
                status["conditions"] = old_conditions.clone();
            }
        }
        if object.get("status") != Some(&status) {
            let mut updated = object.clone();
            updated["status"] = status;
            if finalizers(&updated).iter().all(|f| f != CRD_FINALIZER) {
                let mut list = finalizers(&updated);
                list.push(CRD_FINALIZER.into());
                set_finalizers(&mut updated, &list);
            }
            self.put(ty, "", name, updated, Some(object));
        }
    }

    /// Starts the deletion of one object (see [`Store::delete`]).
    fn delete_object(
        &mut self,
        ty: &ResourceType,
        namespace: &str,
        name: &str,
        propagation: Propagation,
    ) -> Value {
        let Some(object) = self.object(&ty.gr, namespace, name).cloned() else {
            return Value::Null;
        };
        let uid = meta(&object, "uid").unwrap_or_default();
        if propagation == Propagation::Orphan {
            self.orphan_dependents(&uid);
        }
        let mut list = finalizers(&object);
        if propagation == Propagation::Foreground
            && self.has_dependents(&uid)
            && !list.iter().any(|f| f == FOREGROUND)
        {
            list.push(FOREGROUND.into());
        }
        if list.is_empty() && spec_finalizers(ty, &object).is_empty() {
            return self.remove(ty, namespace, name).unwrap_or(object);
        }
        if is_terminating(&object) && list == finalizers(&object) {
            return object;
        }
        let mut updated = object.clone();
        set_finalizers(&mut updated, &list);
        let metadata = metadata_mut(&mut updated);
        metadata
            .entry("deletionTimestamp")
            .or_insert_with(|| json!(now()));
        metadata.insert("deletionGracePeriodSeconds".into(), json!(0));
        if ty.generation {
            let generation = metadata
                .get("generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            metadata.insert("generation".into(), json!(generation + 1));
        }
        if ty.gr.resource == "namespaces" && ty.gr.group.is_empty() {
            updated["status"] = json!({"phase": "Terminating"});
        }
        let stored = self.put(ty, namespace, name, updated, Some(object));
        if propagation == Propagation::Foreground {
            self.delete_dependents(&uid);
        }
        stored
    }

    /// Every object (type, namespace, name) with an ownerReference to `uid`.
    fn dependents(&self, uid: &str) -> Vec<(Arc<ResourceType>, ObjectKey, Value)> {
        let mut found = Vec::new();
        for (gr, objects) in &self.objects {
            let Some(ty) = self.registry.get(gr) else {
                continue;
            };
            for (key, object) in objects {
                let owned = object
                    .pointer("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                    .is_some_and(|refs| {
                        refs.iter()
                            .any(|r| r.get("uid").and_then(Value::as_str) == Some(uid))
                    });
                if owned {
                    found.push((ty.clone(), key.clone(), object.clone()));
                }
            }
        }
        found
    }

    fn has_dependents(&self, uid: &str) -> bool {
        !self.dependents(uid).is_empty()
    }

    fn owner_exists(&self, uid: &str) -> bool {
        self.objects.values().any(|objects| {
            objects
                .values()
                .any(|o| o.pointer("/metadata/uid").and_then(Value::as_str) == Some(uid))
        })
    }

    fn without_owner(object: &Value, uid: &str) -> Value {
        let mut updated = object.clone();
        let refs: Vec<Value> = object
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .map(|refs| {
                refs.iter()
                    .filter(|r| r.get("uid").and_then(Value::as_str) != Some(uid))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let metadata = metadata_mut(&mut updated);
        if refs.is_empty() {
            metadata.remove("ownerReferences");
        } else {
            metadata.insert("ownerReferences".into(), json!(refs));
        }
        updated
    }

    fn orphan_dependents(&mut self, uid: &str) {
        for (ty, (namespace, name), object) in self.dependents(uid) {
            let updated = State::without_owner(&object, uid);
            self.put(&ty, &namespace, &name, updated, Some(object));
        }
    }

    fn delete_dependents(&mut self, uid: &str) {
        for (ty, (namespace, name), object) in self.dependents(uid) {
            if !is_terminating(&object) {
                self.delete_object(&ty, &namespace, &name, Propagation::Background);
            }
        }
    }

    /// The garbage collector's work after `owner` left the store: dependents whose owners
    /// are all gone are deleted (in the background), the others lose the dangling reference.
    fn collect_garbage(&mut self, owner: &Value) {
        let Some(uid) = meta(owner, "uid") else {
            return;
        };
        for (ty, (namespace, name), object) in self.dependents(&uid) {
            let others_alive = object
                .pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .is_some_and(|refs| {
                    refs.iter()
                        .filter_map(|r| r.get("uid").and_then(Value::as_str))
                        .any(|other| other != uid && self.owner_exists(other))
                });
            if others_alive {
                let updated = State::without_owner(&object, &uid);
                self.put(&ty, &namespace, &name, updated, Some(object));
            } else if !is_terminating(&object) {
                self.delete_object(&ty, &namespace, &name, Propagation::Background);
            }
        }
    }

    /// Drives terminating namespaces, CRDs and foreground deletions to completion as far as
    /// finalizers allow.
    fn settle(&mut self) {
        for _ in 0..64 {
            if !self.settle_once() {
                return;
            }
        }
    }

    fn settle_once(&mut self) -> bool {
        let mut progressed = false;
        let terminating: Vec<(Arc<ResourceType>, ObjectKey, Value)> = self
            .terminating
            .iter()
            .filter_map(|(gr, key)| {
                let ty = self.registry.get(gr)?;
                let object = self.objects.get(gr)?.get(key)?;
                Some((ty, key.clone(), object.clone()))
            })
            .collect();
        for (ty, (namespace, name), object) in terminating {
            let mut list = finalizers(&object);
            let before = list.len();
            let uid = meta(&object, "uid").unwrap_or_default();
            if list.iter().any(|f| f == FOREGROUND) {
                let blocking = self.dependents(&uid).iter().any(|(_, _, dependent)| {
                    dependent
                        .pointer("/metadata/ownerReferences")
                        .and_then(Value::as_array)
                        .is_some_and(|refs| {
                            refs.iter().any(|r| {
                                r.get("uid").and_then(Value::as_str) == Some(uid.as_str())
                                    && r.get("blockOwnerDeletion").and_then(Value::as_bool)
                                        == Some(true)
                            })
                        })
                });
                if !blocking {
                    list.retain(|f| f != FOREGROUND);
                }
            }
            if !spec_finalizers(&ty, &object).is_empty() && self.empty_namespace(&name) {
                progressed = true;
                if list.is_empty() {
                    self.remove(&ty, &namespace, &name);
                } else {
                    let mut updated = object.clone();
                    updated["spec"]["finalizers"] = json!([]);
                    set_finalizers(&mut updated, &list);
                    self.put(&ty, &namespace, &name, updated, Some(object));
                }
                continue;
            }
            if ty.gr.resource == "customresourcedefinitions"
                && list.iter().any(|f| f == CRD_FINALIZER)
            {
                if let Ok(served) = resources::from_crd(&object) {
                    if self.empty_type(&served.gr) {
                        list.retain(|f| f != CRD_FINALIZER);
                    }
                } else {
                    list.retain(|f| f != CRD_FINALIZER);
                }
            }
            if list.len() != before {
                progressed = true;
                if list.is_empty() {
                    self.remove(&ty, &namespace, &name);
                } else {
                    let mut updated = object.clone();
                    set_finalizers(&mut updated, &list);
                    self.put(&ty, &namespace, &name, updated, Some(object));
                }
            }
        }
        progressed
    }

    /// Starts deleting everything in a terminating namespace; true once it is empty.
    fn empty_namespace(&mut self, namespace: &str) -> bool {
        let contained: Vec<(Arc<ResourceType>, String, Value)> = self
            .objects
            .iter()
            .filter_map(|(gr, objects)| self.registry.get(gr).map(|ty| (ty, objects)))
            .filter(|(ty, _)| ty.namespaced)
            .flat_map(|(ty, objects)| {
                objects
                    .iter()
                    .filter(|((ns, _), _)| ns == namespace)
                    .map(move |((_, name), o)| (ty.clone(), name.clone(), o.clone()))
            })
            .collect();
        let empty = contained.is_empty();
        for (ty, name, object) in contained {
            if !is_terminating(&object) {
                self.delete_object(&ty, namespace, &name, Propagation::Background);
            }
        }
        empty
    }

    /// Starts deleting every object of a CRD being deleted; true once none is left.
    fn empty_type(&mut self, gr: &GroupResource) -> bool {
        let Some(ty) = self.registry.get(gr) else {
            return true;
        };
        let keys: Vec<(ObjectKey, bool)> = self
            .objects
            .get(gr)
            .map(|objects| {
                objects
                    .iter()
                    .map(|(key, o)| (key.clone(), is_terminating(o)))
                    .collect()
            })
            .unwrap_or_default();
        let empty = keys.is_empty();
        for ((namespace, name), terminating) in keys {
            if !terminating {
                self.delete_object(&ty, &namespace, &name, Propagation::Background);
            }
        }
        empty
    }
}
/// The largest value etcd stores (its default `--max-request-bytes`, 1.5 MiB).
pub const MAX_STORED_BYTES: usize = 1_572_864;

/// etcd refuses a value over [`MAX_STORED_BYTES`]; the API server passes its error on as
/// a 500, as Kubernetes does (kubernetes/kubernetes#112152).
fn fits_in_etcd(object: &Value) -> Result<(), ApiError> {
    if object.to_string().len() > MAX_STORED_BYTES {
        Err(ApiError::internal("etcdserver: request is too large"))
    } else {
        Ok(())
    }
}

fn is_core_services(ty: &ResourceType) -> bool {
    ty.gr.group.is_empty() && ty.gr.resource == "services"
}

/// The cluster IPs and node ports each stored Service holds, and how many hold each.
#[derive(Default)]
struct ServiceAddresses {
    by_service: HashMap<ObjectKey, (Vec<String>, Vec<i64>)>,
    ips: HashMap<String, usize>,
    ports: HashMap<i64, usize>,
}

impl ServiceAddresses {
    /// Records what Service `key` holds now (`None`: it is gone).
    fn set(&mut self, key: &ObjectKey, service: Option<&Value>) {
        if let Some((ips, ports)) = self.by_service.remove(key) {
            for ip in ips {
                release(&mut self.ips, ip);
            }
            for port in ports {
                release(&mut self.ports, port);
            }
        }
        let Some(service) = service else {
            return;
        };
        let (ips, ports) = crate::defaults::core::allocations(service);
        for ip in &ips {
            *self.ips.entry(ip.clone()).or_default() += 1;
        }
        for port in &ports {
            *self.ports.entry(*port).or_default() += 1;
        }
        self.by_service.insert(key.clone(), (ips, ports));
    }

    /// Whether a Service other than `key` holds `ip`.
    fn ip_held_by_another(&self, key: &ObjectKey, ip: &str) -> bool {
        let own = self
            .by_service
            .get(key)
            .is_some_and(|(ips, _)| ips.iter().any(|held| held == ip));
        self.ips.get(ip).copied().unwrap_or(0) > usize::from(own)
    }

    /// Whether a Service other than `key` holds node port `port`.
    fn port_held_by_another(&self, key: &ObjectKey, port: i64) -> bool {
        let own = self
            .by_service
            .get(key)
            .is_some_and(|(_, ports)| ports.contains(&port));
        self.ports.get(&port).copied().unwrap_or(0) > usize::from(own)
    }
}

/// One holder fewer of `value`.
fn release<T: std::hash::Hash + Eq>(counts: &mut HashMap<T, usize>, value: T) {
    if let Some(count) = counts.get_mut(&value) {
        *count -= 1;
        if *count == 0 {
            counts.remove(&value);
        }
    }
}
