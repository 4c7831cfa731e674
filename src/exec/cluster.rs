//! The cluster side of a node: a discovery cache from kinds to API resources, and reads,
//! server-side applies (field manager `pequod`), creates and deletes of single objects,
//! with the API server's answers as [`ApiError`]s.

use std::sync::Arc;

use dashmap::DashMap;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams, Preconditions};
use kube::core::{ApiResource, GroupVersionKind};
use kube::discovery::{self, Scope};
use serde_json::Value;

use crate::api::{FIELD_MANAGER, node_reasons};

/// A kind as the API server serves it.
#[derive(Clone, Debug)]
pub struct Served {
    /// The resource (plural name, group, version).
    pub resource: ApiResource,
    /// Whether objects of the kind live in namespaces.
    pub namespaced: bool,
}

/// Why reading or writing one object failed: the API server's answer, worded for a node's
/// status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The kind is not served (its CRD is not installed).
    #[error("kind {kind} of {api_version} is not installed in the cluster (no such API resource)")]
    KindNotInstalled {
        /// The object's apiVersion.
        api_version: String,
        /// The object's kind.
        kind: String,
    },
    /// Server-side apply found fields owned by another manager.
    #[error("{message} (set applyPolicy.conflictPolicy: Force to take the fields)")]
    Conflict {
        /// The API server's message, naming the managers and fields.
        message: String,
        /// Every conflicting manager made its change with an update or patch (`kubectl
        /// edit`, `kubectl patch`: the API server says `using <apiVersion>` of those), none
        /// with an apply of its own.
        edits_only: bool,
    },
    /// The API server refused the object.
    #[error("{reason} ({code}): {message}")]
    Refused {
        /// HTTP status code.
        code: u16,
        /// The Status reason (Invalid, Forbidden, ...).
        reason: String,
        /// The API server's message.
        message: String,
        /// How long the server asked the client to wait (`Retry-After`, 429), in seconds.
        retry_after_seconds: u32,
    },
    /// The request did not get an answer from the API server: retried.
    #[error("API request failed: {0}")]
    Transport(String),
    /// The object is malformed in a way the render should have caught.
    #[error("{0}")]
    Malformed(String),
}

impl ApiError {
    /// The node's `reason` for this error.
    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::KindNotInstalled { .. } => node_reasons::KIND_NOT_INSTALLED,
            ApiError::Conflict { .. } => node_reasons::CONFLICT,
            ApiError::Refused { code: 403, .. } => node_reasons::FORBIDDEN,
            error if error.is_transient() => node_reasons::UNAVAILABLE,
            ApiError::Refused { .. } => node_reasons::REFUSED,
            ApiError::Transport(_) => node_reasons::UNAVAILABLE,
            ApiError::Malformed(_) => node_reasons::MALFORMED,
        }
    }

    /// Whether retrying soon may succeed without any change (server errors, throttling,
    /// network), as opposed to errors that need a change of the graph or the cluster. An
    /// object etcd refuses as too large comes as a 500, and is not transient.
    pub fn is_transient(&self) -> bool {
        match self {
            ApiError::Transport(_) => true,
            ApiError::Refused { code, message, .. } => {
                *code == 429 || (*code >= 500 && !message.contains(TOO_LARGE_FOR_ETCD))
            }
            _ => false,
        }
    }

    /// How long the API server asked to wait before the next try, if it said.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            ApiError::Refused {
                retry_after_seconds,
                ..
            } if *retry_after_seconds > 0 => Some(std::time::Duration::from_secs(u64::from(
                *retry_after_seconds,
            ))),
            _ => None,
        }
    }

    /// The error of a request that `kube` failed.
    pub fn from_kube(error: kube::Error) -> ApiError {
        match error {
            kube::Error::Api(status) if status.code == 409 && status.reason == "Conflict" => {
                if status.message.starts_with("Apply failed") {
                    let causes = status
                        .details
                        .as_ref()
                        .map(|d| d.causes.as_slice())
                        .unwrap_or_default();
                    let edits_only = !causes.is_empty()
                        && causes
                            .iter()
                            .all(|cause| cause.message.contains("\" using "));
                    ApiError::Conflict {
                        message: status.message,
                        edits_only,
                    }
                } else {
                    refused(*status)
                }
            }
            kube::Error::Api(status) => refused(*status),
            other => ApiError::Transport(other.to_string()),
        }
    }
}

/// What etcd says of a value over its size limit (the API server passes it on as a 500).
const TOO_LARGE_FOR_ETCD: &str = "etcdserver: request is too large";

fn refused(status: kube::core::Status) -> ApiError {
    ApiError::Refused {
        code: status.code,
        retry_after_seconds: status.details.as_ref().map_or(0, |d| d.retry_after_seconds),
        reason: status.reason,
        message: status.message,
    }
}

/// Whether the error is a 404 for the object itself.
fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

/// Reads and writes graph objects of any kind, resolving kinds through a discovery cache.
#[derive(Clone)]
pub struct Applier {
    client: kube::Client,
    served: Arc<DashMap<(String, String), Served>>,
}

/// `group/version` and kind of an object.
pub fn type_of(object: &Value) -> Result<(String, String), ApiError> {
    let text = |key: &str| {
        object
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .ok_or_else(|| ApiError::Malformed(format!("object has no {key}")))
    };
    Ok((text("apiVersion")?, text("kind")?))
}

impl Applier {
    /// An applier using `client`.
    pub fn new(client: kube::Client) -> Applier {
        Applier {
            client,
            served: Arc::new(DashMap::new()),
        }
    }

    /// The client (its identity).
    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    /// The same applier speaking through `client` (another identity), sharing the
    /// discovery cache.
    pub fn with_client(&self, client: kube::Client) -> Applier {
        Applier {
            client,
            served: self.served.clone(),
        }
    }

    /// How the API server serves `kind` of `api_version`. Only found kinds are cached, so
    /// a kind whose CRD is installed later is found on the next call.
    pub async fn served(&self, api_version: &str, kind: &str) -> Result<Served, ApiError> {
        let key = (api_version.to_string(), kind.to_string());
        if let Some(found) = self.served.get(&key) {
            return Ok(found.clone());
        }
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let not_installed = || ApiError::KindNotInstalled {
            api_version: api_version.to_string(),
            kind: kind.to_string(),
        };
        let (resource, capabilities) = match discovery::pinned_kind(&self.client, &gvk).await {
            Ok(found) => found,
            Err(kube::Error::Api(status)) if status.code == 404 => return Err(not_installed()),
            Err(kube::Error::Discovery(_)) => return Err(not_installed()),
            Err(other) => return Err(ApiError::from_kube(other)),
        };
        let served = Served {
            resource,
            namespaced: capabilities.scope == Scope::Namespaced,
        };
        self.served.insert(key, served.clone());
        Ok(served)
    }

    /// Forgets a kind (after a 404 that says its resource is gone).
    pub fn forget(&self, api_version: &str, kind: &str) {
        self.served
            .remove(&(api_version.to_string(), kind.to_string()));
    }

    fn api(&self, served: &Served, namespace: Option<&str>) -> Api<DynamicObject> {
        match namespace.filter(|_| served.namespaced) {
            Some(namespace) => {
                Api::namespaced_with(self.client.clone(), namespace, &served.resource)
            }
            None => Api::all_with(self.client.clone(), &served.resource),
        }
    }

    /// Reads an object; `None` when it does not exist.
    pub async fn get(
        &self,
        served: &Served,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<Value>, ApiError> {
        match self.api(served, namespace).get(name).await {
            Ok(object) => Ok(Some(to_value(&object)?)),
            Err(error) if is_not_found(&error) => Ok(None),
            Err(error) => Err(ApiError::from_kube(error)),
        }
    }

    /// Server-side applies `object`, taking conflicting fields when `force`.
    pub async fn apply(
        &self,
        served: &Served,
        object: &Value,
        force: bool,
    ) -> Result<Value, ApiError> {
        self.apply_with(served, object, force, false).await
    }

    /// What server-side applying `object` would leave, without changing anything
    /// (`dryRun=All`: admission, defaulting and validation run, nothing is stored).
    pub async fn apply_dry_run(
        &self,
        served: &Served,
        object: &Value,
        force: bool,
    ) -> Result<Value, ApiError> {
        self.apply_with(served, object, force, true).await
    }

    async fn apply_with(
        &self,
        served: &Served,
        object: &Value,
        force: bool,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let (namespace, name) = identity(object)?;
        let mut params = PatchParams::apply(FIELD_MANAGER);
        params.force = force;
        params.dry_run = dry_run;
        let applied = self
            .api(served, namespace.as_deref())
            .patch(&name, &params, &Patch::Apply(object))
            .await
            .map_err(ApiError::from_kube)?;
        to_value(&applied)
    }

    /// Creates `object`; `None` when it already exists (mode Create never updates).
    pub async fn create(&self, served: &Served, object: &Value) -> Result<Option<Value>, ApiError> {
        self.create_with(served, object, false).await
    }

    /// What creating `object` would store, without creating it (`dryRun=All`); `None`
    /// when it already exists.
    pub async fn create_dry_run(
        &self,
        served: &Served,
        object: &Value,
    ) -> Result<Option<Value>, ApiError> {
        self.create_with(served, object, true).await
    }

    async fn create_with(
        &self,
        served: &Served,
        object: &Value,
        dry_run: bool,
    ) -> Result<Option<Value>, ApiError> {
        let (namespace, _) = identity(object)?;
        let typed: DynamicObject = serde_json::from_value(object.clone())
            .map_err(|e| ApiError::Malformed(format!("not a Kubernetes object: {e}")))?;
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            dry_run,
        };
        match self
            .api(served, namespace.as_deref())
            .create(&params, &typed)
            .await
        {
            Ok(created) => Ok(Some(to_value(&created)?)),
            Err(kube::Error::Api(status))
                if status.code == 409 && status.reason == "AlreadyExists" =>
            {
                Ok(None)
            }
            Err(error) => Err(ApiError::from_kube(error)),
        }
    }

    /// Deletes an object in the background, only if it still has `uid` when one is given
    /// (a precondition: an object recreated under the name is left alone); `false` when
    /// it was already gone.
    pub async fn delete(
        &self,
        served: &Served,
        namespace: Option<&str>,
        name: &str,
        uid: Option<&str>,
    ) -> Result<bool, ApiError> {
        let mut params = DeleteParams::background();
        params.preconditions = uid.map(|uid| Preconditions {
            uid: Some(uid.to_string()),
            resource_version: None,
        });
        match self.api(served, namespace).delete(name, &params).await {
            Ok(_) => Ok(true),
            Err(error) if is_not_found(&error) => Ok(false),
            Err(error) => Err(ApiError::from_kube(error)),
        }
    }

    /// Removes `keys` from the object's labels (a JSON merge patch, so nothing else
    /// changes); `false` when the object is gone.
    pub async fn remove_labels(
        &self,
        served: &Served,
        namespace: Option<&str>,
        name: &str,
        keys: &[&str],
    ) -> Result<bool, ApiError> {
        let labels: serde_json::Map<String, Value> = keys
            .iter()
            .map(|key| (key.to_string(), Value::Null))
            .collect();
        let patch = serde_json::json!({"metadata": {"labels": labels}});
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PatchParams::default()
        };
        match self
            .api(served, namespace)
            .patch(name, &params, &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(true),
            Err(error) if is_not_found(&error) => Ok(false),
            Err(error) => Err(ApiError::from_kube(error)),
        }
    }
}

/// Namespace and name of an object.
fn identity(object: &Value) -> Result<(Option<String>, String), ApiError> {
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::Malformed("object has no metadata.name".to_string()))?;
    let namespace = object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    Ok((namespace, name.to_string()))
}

fn to_value(object: &DynamicObject) -> Result<Value, ApiError> {
    serde_json::to_value(object)
        .map_err(|e| ApiError::Malformed(format!("cannot read the object back: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_errors_are_server_side_or_throttling() {
        let refused = |code| ApiError::Refused {
            code,
            reason: String::new(),
            message: String::new(),
            retry_after_seconds: 0,
        };
        assert!(refused(500).is_transient());
        let too_large = ApiError::Refused {
            code: 500,
            reason: "InternalError".into(),
            message: "etcdserver: request is too large".into(),
            retry_after_seconds: 0,
        };
        assert!(!too_large.is_transient(), "etcd's size limit does not pass");
        assert!(refused(429).is_transient());
        assert!(!refused(422).is_transient());
        assert!(ApiError::Transport("connection refused".into()).is_transient());
    }
}
