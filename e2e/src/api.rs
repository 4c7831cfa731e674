//! The HTTP side: routes Kubernetes REST paths to discovery, OpenAPI, the store and watches.

use crate::auth::attributes::Attributes;
use crate::auth::authn::Tokens;
use crate::auth::authorizer::Authorizer;
use crate::auth::impersonation::{self, Refusal};
use crate::auth::{User, review};
use crate::discovery;
use crate::faults::Faults;
use crate::gofmt::go_quote;
use crate::metadata;
use crate::protobuf;
use crate::requests::{RequestKey, RequestLog};
use crate::resources::ResourceType;
use crate::selector::{FieldSelector, LabelSelector, SelectorError};
use crate::status::{ApiError, sanitize};
use crate::store::{
    DeleteOptions, FieldValidation, Outcome, PatchType, Propagation, Selection, Store, WriteOptions,
};
use crate::table;
use crate::watch::{self, Presentation, WatchRequest};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Everything a request handler needs.
pub struct App {
    /// The objects.
    pub store: Arc<Store>,
    /// Injected failures.
    pub faults: Arc<Faults>,
    /// Cancelled when the server stops (ends open watches).
    pub shutdown: CancellationToken,
    /// Ends the watches open now (a child of `shutdown`, replaced when cut): what an API
    /// server restart or a broken connection does to clients.
    pub watches: WatchCut,
    /// `host:port` the server listens on (for `/api`'s server address).
    pub address: String,
    /// Requests counted by verb, resource and user.
    pub requests: Arc<RequestLog>,
    /// The bearer tokens accepted, and their users.
    pub tokens: Arc<Tokens>,
    /// Decides what users may do.
    pub authorizer: Authorizer,
}

/// Ends every watch open at a moment, as a restarting API server or a broken connection
/// does: clients see their stream end and watch again from the last version they saw.
#[derive(Debug)]
pub struct WatchCut {
    server: CancellationToken,
    current: std::sync::Mutex<CancellationToken>,
}

impl WatchCut {
    /// Watches ended by `server`'s shutdown, and by [`WatchCut::cut`].
    pub fn new(server: &CancellationToken) -> Self {
        WatchCut {
            server: server.clone(),
            current: std::sync::Mutex::new(server.child_token()),
        }
    }

    /// What a watch starting now ends with.
    pub fn current(&self) -> CancellationToken {
        self.current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Ends every watch open now; later ones run until the next cut.
    pub fn cut(&self) {
        let mut current = self
            .current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        current.cancel();
        *current = self.server.child_token();
    }
}

/// The router: every path goes through [`handle`].
pub fn router(app: Arc<App>) -> Router {
    Router::new().fallback(handle).with_state(app)
}

/// A resource path: `/apis/{group}/{version}[/namespaces/{ns}]/{resource}[/{name}[/{sub}]]`.
#[derive(Debug, PartialEq)]
struct ResourcePath {
    group: String,
    version: String,
    namespace: Option<String>,
    resource: String,
    name: Option<String>,
    subresource: Option<String>,
}

#[derive(Debug, PartialEq)]
enum Route {
    Version,
    Health,
    CoreVersions,
    Groups,
    Group(String),
    ResourceList(String, String),
    OpenApiIndex,
    OpenApiDocument(String, String),
    Resource(ResourcePath),
    DebugRequests,
    Unknown,
}

fn resource_path(group: &str, version: &str, rest: &[&str]) -> Route {
    let owned = |s: &&str| (*s).to_owned();
    let namespace_subresource =
        group.is_empty() && rest.len() == 3 && ["status", "finalize"].contains(&rest[2]);
    let (namespace, rest) = if rest.len() >= 3 && rest[0] == "namespaces" && !namespace_subresource
    {
        (Some(rest[1].to_owned()), &rest[2..])
    } else {
        (None, rest)
    };
    if rest.is_empty() || rest.len() > 3 {
        return Route::Unknown;
    }
    Route::Resource(ResourcePath {
        group: group.to_owned(),
        version: version.to_owned(),
        namespace,
        resource: rest[0].to_owned(),
        name: rest.get(1).map(owned),
        subresource: rest.get(2).map(owned),
    })
}

fn route(path: &str) -> Route {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        ["version"] => Route::Version,
        ["healthz" | "readyz" | "livez"] => Route::Health,
        ["api"] => Route::CoreVersions,
        ["api", version] => Route::ResourceList(String::new(), (*version).to_owned()),
        ["api", version, rest @ ..] => resource_path("", version, rest),
        ["apis"] => Route::Groups,
        ["apis", group] => Route::Group((*group).to_owned()),
        ["apis", group, version] => Route::ResourceList((*group).to_owned(), (*version).to_owned()),
        ["apis", group, version, rest @ ..] => resource_path(group, version, rest),
        ["debug", "requests"] => Route::DebugRequests,
        ["openapi", "v3"] => Route::OpenApiIndex,
        ["openapi", "v3", "api", version] => {
            Route::OpenApiDocument(String::new(), (*version).to_owned())
        }
        ["openapi", "v3", "apis", group, version] => {
            Route::OpenApiDocument((*group).to_owned(), (*version).to_owned())
        }
        _ => Route::Unknown,
    }
}

fn json_response(code: StatusCode, body: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn ok(body: Option<Value>) -> Result<Response, ApiError> {
    body.map(|body| json_response(StatusCode::OK, &body))
        .ok_or_else(ApiError::no_route)
}

/// The largest request body Kubernetes reads (`MaxRequestBodyBytes`, 3 MiB): twice what
/// etcd stores, as JSON is larger than the protobuf it becomes.
pub const MAX_REQUEST_BYTES: usize = 3 * 1024 * 1024;

/// Serves one request.
async fn handle(
    State(app): State<Arc<App>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let Ok(body) = axum::body::to_bytes(body, MAX_REQUEST_BYTES).await else {
        return ApiError::too_large(MAX_REQUEST_BYTES).into_response();
    };
    let route = route(uri.path());
    let query = Query::parse(uri.query());
    let attributes = Attributes::of_request(
        method.as_str(),
        uri.path(),
        query.flag("watch"),
        query.get("fieldSelector"),
    );
    let identity = identify(&app, &headers, &uri);
    if route != Route::DebugRequests {
        let user = match &identity {
            Identity::Acting(user) => user.name.clone(),
            Identity::Refused { requester, .. } => requester.clone(),
        };
        app.requests
            .record(request_key(&attributes, &headers, user));
    }
    let user = match identity {
        Identity::Acting(user) => user,
        Identity::Refused { answer, .. } => return answer,
    };
    if let Err(forbidden) = app.authorizer.check(&user, &attributes) {
        return forbidden.into_response();
    }
    let registry = app.store.registry();
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let result = match &route {
        Route::Version => ok(Some(discovery::version())),
        Route::Health => Ok((StatusCode::OK, "ok").into_response()),
        Route::CoreVersions | Route::Groups if discovery::wants_aggregated(&accept) => {
            let core = route == Route::CoreVersions;
            Ok((
                StatusCode::OK,
                [(header::CONTENT_TYPE, discovery::AGGREGATED)],
                discovery::aggregated(&registry, core).to_string(),
            )
                .into_response())
        }
        Route::CoreVersions => ok(Some(discovery::core_versions(&app.address))),
        Route::Groups => ok(Some(discovery::groups(&registry))),
        Route::Group(group) => ok(discovery::api_group(&registry, group)),
        Route::ResourceList(group, version) => {
            ok(discovery::resource_list(&registry, group, version))
        }
        Route::OpenApiIndex => ok(Some(discovery::openapi_index(&registry))),
        Route::OpenApiDocument(group, version) => {
            if registry.in_group_version(group, version).is_empty() {
                Err(ApiError::no_route())
            } else {
                ok(Some(discovery::openapi_document(&registry, group, version)))
            }
        }
        Route::Resource(path) => {
            let verdict =
                app.faults
                    .check(method.as_str(), Some(&path.resource), path.name.as_deref());
            let held = match &verdict.rendezvous {
                Some(rendezvous) => rendezvous.wait().await.err(),
                None => None,
            };
            if !verdict.delay.is_zero() {
                tokio::time::sleep(verdict.delay).await;
            }
            match held.or(verdict.error) {
                Some(error) => Err(error),
                None => {
                    let request = Request {
                        method: &method,
                        headers: &headers,
                        query: &query,
                        body: &body,
                        user: &user,
                    };
                    resource(&app, path, &request)
                }
            }
        }
        Route::DebugRequests => ok(Some(app.requests.snapshot().to_json())),
        Route::Unknown => Err(ApiError::no_route()),
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

/// Who a request acts as, or why it may not act at all.
enum Identity {
    /// The user the request acts as.
    Acting(User),
    /// Refused: who sent it (nobody, for a token the server does not know), and the answer.
    Refused { requester: String, answer: Response },
}

/// Who a request acts as: its token's user (the admin without one), or the user it
/// impersonates.
fn identify(app: &App, headers: &HeaderMap, uri: &Uri) -> Identity {
    let requester = match app.tokens.authenticate(headers) {
        Ok(requester) => requester,
        Err(error) => {
            return Identity::Refused {
                requester: String::new(),
                answer: error.into_response(),
            };
        }
    };
    let name = requester.name.clone();
    let impersonated = impersonation::impersonate(requester, headers, &app.authorizer);
    impersonated.map_or_else(
        |refusal| {
            let response = match refusal {
                Refusal::Forbidden(error) => error.into_response(),
                // Kubernetes answers this in plain text, as `responsewriters.InternalError`.
                without_user @ Refusal::WithoutUser(_) => {
                    let text = sanitize(&format!(
                        "Internal Server Error: {}: {without_user}",
                        go_quote(&uri.to_string())
                    ));
                    (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        [
                            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                        ],
                        format!("{text}\n"),
                    )
                        .into_response()
                }
            };
            Identity::Refused {
                requester: name,
                answer: response,
            }
        },
        Identity::Acting,
    )
}

/// What a request counts as (see [`crate::requests`]): its attributes' verb (`apply` for a
/// server-side apply) on its resource, or on its path when it is for no resource.
fn request_key(attributes: &Attributes, headers: &HeaderMap, user: String) -> RequestKey {
    if !attributes.resource_request {
        return RequestKey {
            verb: attributes.verb.clone(),
            group: String::new(),
            resource: attributes.path.clone(),
            user,
        };
    }
    let apply = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/apply-patch"));
    let verb = if apply && attributes.verb == "patch" {
        "apply".to_owned()
    } else {
        attributes.verb.clone()
    };
    RequestKey {
        verb,
        group: attributes.api_group.clone(),
        resource: attributes.combined_resource(),
        user,
    }
}

/// Query parameters (kube sends a leading `&`; empty pairs are skipped).
struct Query(HashMap<String, String>);

impl Query {
    fn parse(query: Option<&str>) -> Self {
        Query(
            form_urlencoded::parse(query.unwrap_or_default().as_bytes())
                .filter(|(key, _)| !key.is_empty())
                .map(|(key, value)| (key.into_owned(), value.into_owned()))
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }
}

struct Request<'a> {
    method: &'a Method,
    headers: &'a HeaderMap,
    query: &'a Query,
    body: &'a Bytes,
    /// Who the request acts as.
    user: &'a User,
}

impl Request<'_> {
    fn header(&self, name: header::HeaderName) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    fn content_type(&self) -> String {
        self.header(header::CONTENT_TYPE)
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    }

    /// The body of a create or update as JSON: JSON, YAML, or protobuf for the built-in kinds
    /// whose messages the server knows; any other media type gets 415 with the ones the
    /// resource accepts (as Kubernetes' `NegotiateInputSerializer`).
    fn object(&self, ty: &ResourceType, version: &str) -> Result<Value, ApiError> {
        let protobuf = !ty.is_custom() && protobuf::supports(&ty.gr.group, version, &ty.kind);
        match self.content_type().as_str() {
            "" | "application/json" => serde_json::from_slice(self.body).map_err(|error| {
                ApiError::bad_request(format!(
                    "the object provided is unrecognized (must be of type {}): couldn't get version/kind; json parse error: {error} ({})",
                    ty.kind,
                    protobuf::summarize(self.body)
                ))
            }),
            "application/yaml" => serde_yaml::from_slice(self.body)
                .map_err(|error| ApiError::bad_request(format!("error decoding YAML: {error}"))),
            protobuf::MEDIA_TYPE if protobuf => {
                protobuf::decode(self.body, &ty.gr.group, version, &ty.kind)
            }
            _ => {
                let accepted = if protobuf {
                    "application/json, application/yaml, application/vnd.kubernetes.protobuf"
                } else {
                    "application/json, application/yaml"
                };
                Err(ApiError::unsupported_media_type(format!(
                    "the body of the request was in an unknown format - accepted media types include: {accepted}"
                )))
            }
        }
    }

    /// How the objects of the answer to a `list` (or a get or a watch) are to be
    /// presented, from the `Accept` header.
    fn presentation(&self, list: bool) -> Presentation {
        let accept = self.header(header::ACCEPT);
        if table::wants_table(accept) {
            Presentation::Table
        } else if metadata::wants_metadata(accept, list) {
            Presentation::Metadata
        } else {
            Presentation::Object
        }
    }

    /// The field manager: `fieldManager`, else the client's user agent up to its first `/`
    /// (as Kubernetes derives it).
    fn manager(&self) -> Result<String, ApiError> {
        let manager = match self.query.get("fieldManager") {
            Some(manager) => manager.to_owned(),
            None => {
                let agent = self.header(header::USER_AGENT);
                let prefix = agent.split('/').next().unwrap_or_default();
                if prefix.is_empty() {
                    "unknown".into()
                } else {
                    prefix.to_owned()
                }
            }
        };
        if manager.chars().count() > 128 {
            return Err(ApiError::bad_request(
                "fieldManager: Too long: may not be longer than 128",
            ));
        }
        Ok(manager)
    }

    fn write_options(&self) -> Result<WriteOptions, ApiError> {
        let validation = match self.query.get("fieldValidation") {
            None | Some("Warn") => FieldValidation::Warn,
            Some("Strict") => FieldValidation::Strict,
            Some("Ignore") => FieldValidation::Ignore,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "fieldValidation: Unsupported value: \"{other}\": supported values: \"Ignore\", \"Strict\", \"Warn\""
                )));
            }
        };
        Ok(WriteOptions {
            manager: self.manager()?,
            validation,
            dry_run: self.dry_run()?,
        })
    }

    fn dry_run(&self) -> Result<bool, ApiError> {
        match self.query.get("dryRun") {
            None => Ok(false),
            Some("All") => Ok(true),
            Some(other) => Err(ApiError::bad_request(format!(
                "dryRun: Unsupported value: \"{other}\": supported values: \"All\""
            ))),
        }
    }

    fn selection(&self, ty: &ResourceType, namespace: Option<&str>) -> Result<Selection, ApiError> {
        let bad = |error: SelectorError| ApiError::bad_request(error.to_string());
        let labels = self
            .query
            .get("labelSelector")
            .map(LabelSelector::parse)
            .transpose()
            .map_err(bad)?;
        let fields = self
            .query
            .get("fieldSelector")
            .map(FieldSelector::parse)
            .transpose()
            .map_err(bad)?;
        if let Some(fields) = &fields {
            for field in fields.fields() {
                if !ty.field_selectable(field) {
                    return Err(bad(SelectorError::UnsupportedField(field.to_owned())));
                }
            }
        }
        Ok(Selection {
            namespace: namespace.map(str::to_owned),
            labels,
            fields,
        })
    }
}

/// A response carrying the object of a write and its warnings.
fn written(outcome: Outcome) -> Response {
    let code = if outcome.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut response = json_response(code, &outcome.object);
    for warning in outcome.warnings {
        let escaped = warning.replace('\\', "\\\\").replace('"', "\\\"");
        if let Ok(value) = HeaderValue::from_str(&format!("299 - \"{escaped}\"")) {
            response.headers_mut().append(header::WARNING, value);
        }
    }
    response
}

fn resource(app: &App, path: &ResourcePath, request: &Request) -> Result<Response, ApiError> {
    let registry = app.store.registry();
    let ty = registry
        .lookup(&path.group, &path.version, &path.resource)
        .ok_or_else(ApiError::no_route)?;
    let version = path.version.as_str();
    let all_namespaces = ty.namespaced && path.namespace.is_none();
    if (!ty.namespaced && path.namespace.is_some()) || (all_namespaces && path.name.is_some()) {
        return Err(ApiError::no_route());
    }
    let namespace = path.namespace.as_deref().unwrap_or_default();
    let status = match path.subresource.as_deref() {
        None => false,
        Some("status") if ty.status_subresource => true,
        Some(_) => return Err(ApiError::no_route()),
    };
    let store = &app.store;
    let method = request.method;
    let name = path.name.as_deref();
    let not_allowed = || {
        ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({method} {})",
            path.resource
        ))
    };
    match (method.as_str(), name) {
        ("POST", None) if ty.review => {
            let asked = request.object(&ty, version)?;
            let answered = review::answer(&ty.kind, &asked, request.user, &app.authorizer)?;
            Ok(json_response(StatusCode::CREATED, &answered))
        }
        _ if ty.review => Err(not_allowed()),
        ("GET", None) => {
            let selection = request.selection(&ty, path.namespace.as_deref())?;
            if request.query.flag("watch") {
                return watch(app, ty, version, selection, request);
            }
            list(store, &ty, version, &selection, request)
        }
        ("GET", Some(name)) => {
            let object = store.get(&ty, version, namespace, name)?;
            match request.presentation(false) {
                Presentation::Table => {
                    let rv = object
                        .pointer("/metadata/resourceVersion")
                        .and_then(Value::as_str)
                        .map(str::to_owned);
                    let table = table::table(&ty, &[object], rv, None);
                    Ok(typed_response(table::CONTENT_TYPE, &table))
                }
                Presentation::Metadata => Ok(typed_response(
                    metadata::CONTENT_TYPE,
                    &metadata::partial(&object),
                )),
                Presentation::Object => Ok(json_response(StatusCode::OK, &object)),
            }
        }
        ("POST", None) if !all_namespaces => {
            let options = request.write_options()?;
            let outcome = store.create(
                &ty,
                version,
                namespace,
                request.object(&ty, version)?,
                &options,
            )?;
            Ok(written(outcome))
        }
        ("PUT", Some(name)) => {
            let options = request.write_options()?;
            let outcome = store.update(
                &ty,
                version,
                namespace,
                name,
                request.object(&ty, version)?,
                status,
                &options,
            )?;
            Ok(written(outcome))
        }
        ("PATCH", Some(name)) => {
            let patch_type = match request.content_type().as_str() {
                "application/json-patch+json" => PatchType::Json,
                "application/merge-patch+json" => PatchType::Merge,
                "application/strategic-merge-patch+json" => PatchType::Strategic,
                "application/apply-patch+yaml" | "application/apply-patch+cbor" => {
                    PatchType::Apply {
                        force: request.query.flag("force"),
                    }
                }
                other => {
                    return Err(ApiError::unsupported_media_type(format!(
                        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {other:?})"
                    )));
                }
            };
            if matches!(patch_type, PatchType::Apply { .. }) {
                if request.query.get("fieldManager").is_none() {
                    return Err(ApiError::bad_request(
                        "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
                    ));
                }
            } else if request.query.get("force").is_some() {
                return Err(ApiError::bad_request(
                    "PatchOptions.meta.k8s.io \"\" is invalid: force: Forbidden: may not be specified for non-apply patch",
                ));
            }
            let body = match patch_type {
                // YAML, of which JSON (what clients send) is read by the JSON parser, many
                // times faster; a key given twice keeps the last value, as Kubernetes'
                // decoder does unless asked for strict field validation.
                PatchType::Apply { .. } => match serde_json::from_slice::<Value>(request.body) {
                    Ok(body) => body,
                    Err(_) => serde_yaml::from_slice::<Value>(request.body).map_err(|error| {
                        ApiError::bad_request(format!("error decoding YAML: {error}"))
                    })?,
                },
                _ => serde_json::from_slice(request.body).map_err(|error| {
                    ApiError::bad_request(format!("error decoding patch: {error}"))
                })?,
            };
            let options = request.write_options()?;
            let outcome = store.patch(
                &ty, version, namespace, name, patch_type, body, status, &options,
            )?;
            Ok(written(outcome))
        }
        ("DELETE", Some(name)) if !status => {
            let options = delete_options(request)?;
            let before = store.get(&ty, version, namespace, name)?;
            let after = store.delete(&ty, version, namespace, name, &options)?;
            let gone = store.get(&ty, version, namespace, name).is_err();
            if gone && !ty.is_custom() && !options.dry_run {
                return Ok(json_response(
                    StatusCode::OK,
                    &json!({
                        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                        "details": {"name": name, "group": ty.gr.group, "kind": ty.gr.resource,
                                    "uid": before.pointer("/metadata/uid")}
                    }),
                ));
            }
            Ok(json_response(StatusCode::OK, &after))
        }
        ("DELETE", None) => {
            let options = delete_options(request)?;
            let selection = request.selection(&ty, path.namespace.as_deref())?;
            let items = store.delete_collection(&ty, version, &selection, &options)?;
            Ok(json_response(
                StatusCode::OK,
                &json!({"kind": ty.list_kind, "apiVersion": ty.api_version(version),
                        "metadata": {"resourceVersion": store.resource_version().to_string()},
                        "items": items}),
            ))
        }
        _ => Err(not_allowed()),
    }
}

/// A 200 answer of `body`, of media type `content_type` (a Table, a PartialObjectMetadata).
fn typed_response(content_type: &'static str, body: &Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, content_type)],
        body.to_string(),
    )
        .into_response()
}

fn list(
    store: &Store,
    ty: &ResourceType,
    version: &str,
    selection: &Selection,
    request: &Request,
) -> Result<Response, ApiError> {
    let limit = request
        .query
        .get("limit")
        .map(|limit| {
            limit
                .parse::<usize>()
                .map_err(|_| ApiError::bad_request(format!("limit: Invalid value: \"{limit}\"")))
        })
        .transpose()?;
    let page = store.list(ty, version, selection, limit, request.query.get("continue"))?;
    let presentation = request.presentation(true);
    if presentation == Presentation::Table {
        let table = table::table(
            ty,
            &page.items,
            Some(page.resource_version.to_string()),
            page.continue_token,
        );
        return Ok(typed_response(table::CONTENT_TYPE, &table));
    }
    let mut list_metadata = json!({"resourceVersion": page.resource_version.to_string()});
    if let Some(token) = page.continue_token {
        list_metadata["continue"] = json!(token);
    }
    if let Some(remaining) = page.remaining {
        list_metadata["remainingItemCount"] = json!(remaining);
    }
    if presentation == Presentation::Metadata {
        return Ok(typed_response(
            metadata::LIST_CONTENT_TYPE,
            &metadata::list(&page.items, list_metadata),
        ));
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({"kind": ty.list_kind, "apiVersion": ty.api_version(version),
                "metadata": list_metadata, "items": page.items}),
    ))
}

fn watch(
    app: &App,
    ty: Arc<ResourceType>,
    version: &str,
    selection: Selection,
    request: &Request,
) -> Result<Response, ApiError> {
    let since = match request.query.get("resourceVersion") {
        None | Some("0") => None,
        Some(rv) => Some(rv.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!(
                "resourceVersion: Invalid value: \"{rv}\": must be a number"
            ))
        })?),
    };
    let timeout = request
        .query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs);
    let watch_request = WatchRequest {
        version: version.to_owned(),
        selection,
        since: if request.query.flag("sendInitialEvents") {
            None
        } else {
            since
        },
        bookmarks: request.query.flag("allowWatchBookmarks"),
        initial_events_end: request.query.flag("sendInitialEvents"),
        timeout,
        presentation: request.presentation(false),
    };
    Ok(watch::serve(
        app.store.clone(),
        ty,
        watch_request,
        app.watches.current(),
    ))
}

fn delete_options(request: &Request) -> Result<DeleteOptions, ApiError> {
    let body: Value = if request.body.is_empty() {
        json!({})
    } else if request.content_type() == protobuf::MEDIA_TYPE {
        protobuf::decode(request.body, "meta.k8s.io", "v1", "DeleteOptions")?
    } else {
        serde_json::from_slice(request.body)
            .map_err(|error| ApiError::bad_request(format!("invalid DeleteOptions: {error}")))?
    };
    let policy = body
        .get("propagationPolicy")
        .and_then(Value::as_str)
        .or_else(|| request.query.get("propagationPolicy"));
    let orphan = body.get("orphanDependents").and_then(Value::as_bool) == Some(true)
        || request.query.flag("orphanDependents");
    let propagation = match (policy, orphan) {
        (Some("Foreground"), _) => Propagation::Foreground,
        (Some("Orphan"), _) | (None, true) => Propagation::Orphan,
        (Some("Background") | None, _) => Propagation::Background,
        (Some(other), _) => {
            return Err(ApiError::bad_request(format!(
                "propagationPolicy: Unsupported value: \"{other}\": supported values: \"Foreground\", \"Background\", \"Orphan\""
            )));
        }
    };
    let text = |pointer: &str| {
        body.pointer(pointer)
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let dry_run = request.dry_run()?
        || body
            .get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|d| d.iter().any(|d| d == "All"));
    Ok(DeleteOptions {
        propagation,
        uid: text("/preconditions/uid"),
        resource_version: text("/preconditions/resourceVersion"),
        dry_run,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route("/version"), Route::Version);
        assert_eq!(
            route("/apis/apps/v1"),
            Route::ResourceList("apps".into(), "v1".into())
        );
        let Route::Resource(path) = route("/apis/apps/v1/namespaces/ns/deployments/web/status")
        else {
            panic!("not a resource path");
        };
        assert_eq!(path.namespace.as_deref(), Some("ns"));
        assert_eq!(path.name.as_deref(), Some("web"));
        assert_eq!(path.subresource.as_deref(), Some("status"));
        let Route::Resource(path) = route("/api/v1/namespaces/ns/status") else {
            panic!("not a resource path");
        };
        assert_eq!(
            (path.resource.as_str(), path.name.as_deref()),
            ("namespaces", Some("ns"))
        );
        let Route::Resource(path) = route("/api/v1/namespaces/ns") else {
            panic!("not a resource path");
        };
        assert_eq!(path.namespace, None);
        assert_eq!(
            route("/openapi/v3/apis/apps/v1"),
            Route::OpenApiDocument("apps".into(), "v1".into())
        );
    }

    #[test]
    fn queries_skip_empty_pairs() {
        let query = Query::parse(Some("&watch=true&&labelSelector=a%3Db"));
        assert!(query.flag("watch"));
        assert_eq!(query.get("labelSelector"), Some("a=b"));
    }
}
