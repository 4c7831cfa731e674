//! Kubernetes `Status` error bodies: every failure the server answers with carries a reason,
//! an HTTP code and a message worded like the real API server's.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// `text` with `&`, `<` and `>` escaped as HTML entities, as Kubernetes' response writers
/// keep the errors they write from reading as HTML.
pub fn sanitize(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// An API failure, answered as a `v1 Status` body.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status code (also `.code` of the body).
    pub code: u16,
    /// `StatusReason` (`NotFound`, `Conflict`, `Invalid`, …).
    pub reason: &'static str,
    /// Human-readable message.
    pub message: String,
    /// `.details` of the body (name, group, kind, causes, retryAfterSeconds), if any.
    pub details: Option<Value>,
}

/// The group and resource an error is about, as Kubernetes names them in messages
/// (`deployments.apps`, `configmaps`).
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// API group (empty for the core group).
    pub group: &'a str,
    /// Plural resource name.
    pub resource: &'a str,
}

impl Subject<'_> {
    /// `deployments.apps`, or just `configmaps` in the core group.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.resource.to_owned()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }

    /// `.details` naming an object of this resource: empty fields left out, as Go's
    /// `omitempty` leaves them.
    fn details(&self, name: &str) -> Value {
        let fields = [
            ("name", name),
            ("group", self.group),
            ("kind", self.resource),
        ];
        Value::Object(
            fields
                .into_iter()
                .filter(|(_, value)| !value.is_empty())
                .map(|(key, value)| (key.to_owned(), json!(value)))
                .collect(),
        )
    }
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// 404: `deployments.apps "web" not found`.
    pub fn not_found(subject: Subject, name: &str) -> Self {
        ApiError::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", subject.qualified()),
        )
        .with_details(subject.details(name))
    }

    /// 404 for a path that serves nothing.
    pub fn no_route() -> Self {
        ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        .with_details(json!({}))
    }

    /// 409: the object already exists.
    pub fn already_exists(subject: Subject, name: &str) -> Self {
        ApiError::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", subject.qualified()),
        )
        .with_details(subject.details(name))
    }

    /// 409: a stale resourceVersion or a failed precondition.
    pub fn conflict(subject: Subject, name: &str, why: &str) -> Self {
        ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                subject.qualified()
            ),
        )
        .with_details(subject.details(name))
    }

    /// 409 for a stale resourceVersion, worded as Kubernetes does.
    pub fn stale(subject: Subject, name: &str) -> Self {
        ApiError::conflict(
            subject,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 422: the object is invalid; `causes` are (field, message) pairs.
    pub fn invalid(kind_group: &str, name: &str, causes: &[(String, String)]) -> Self {
        let listed: Vec<String> = causes
            .iter()
            .map(|(field, message)| format!("{field}: {message}"))
            .collect();
        let message = match listed.as_slice() {
            [one] => format!("{kind_group} \"{name}\" is invalid: {one}"),
            _ => format!(
                "{kind_group} \"{name}\" is invalid: [{}]",
                listed.join(", ")
            ),
        };
        let (kind, group) = kind_group.split_once('.').unwrap_or((kind_group, ""));
        let causes: Vec<Value> = causes
            .iter()
            .map(|(field, message)| {
                json!({"reason": "FieldValueInvalid", "message": message, "field": field})
            })
            .collect();
        ApiError::new(422, "Invalid", message)
            .with_details(json!({"name": name, "group": group, "kind": kind, "causes": causes}))
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(400, "BadRequest", message)
    }

    /// A patch that could not be applied, with the code Kubernetes answers for it.
    pub fn patch_failed(code: u16, message: impl Into<String>) -> Self {
        let reason = match code {
            422 => "Invalid",
            413 => "RequestEntityTooLarge",
            500 => "InternalError",
            _ => "BadRequest",
        };
        ApiError::new(
            if reason == "BadRequest" { 400 } else { code },
            reason,
            message,
        )
    }

    /// 403.
    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::new(403, "Forbidden", message)
    }

    /// 403 about an object (or a collection, when `name` is empty; or nothing, when the
    /// subject is empty), worded as `apierrors.NewForbidden`:
    /// `deployments.apps "web" is forbidden: <why>`.
    pub fn forbidden_on(subject: Subject, name: &str, why: &str) -> Self {
        let message = if subject.group.is_empty() && subject.resource.is_empty() {
            format!("forbidden: {why}")
        } else if name.is_empty() {
            format!("{} is forbidden: {why}", subject.qualified())
        } else {
            format!("{} \"{name}\" is forbidden: {why}", subject.qualified())
        };
        ApiError::forbidden(message).with_details(subject.details(name))
    }

    /// 401, what Kubernetes answers a request whose credentials it cannot verify.
    pub fn unauthorized() -> Self {
        ApiError::new(401, "Unauthorized", "Unauthorized")
    }

    /// 405.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        ApiError::new(405, "MethodNotAllowed", message)
    }

    /// 415.
    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        ApiError::new(415, "UnsupportedMediaType", message)
    }

    /// 410: a resourceVersion older than the server still remembers.
    pub fn expired(message: impl Into<String>) -> Self {
        ApiError::new(410, "Expired", message)
    }

    /// 500 (also what fault injection answers).
    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(500, "InternalError", message)
    }

    /// 413: a request body larger than the server reads.
    pub fn too_large(limit: usize) -> Self {
        ApiError::new(
            413,
            "RequestEntityTooLarge",
            format!("Request entity too large: limit is {limit}"),
        )
    }

    /// 429 with a retry hint.
    pub fn too_many_requests(retry_after_seconds: u64) -> Self {
        ApiError::new(
            429,
            "TooManyRequests",
            "the server has received too many requests and has asked us to try again later",
        )
        .with_details(json!({"retryAfterSeconds": retry_after_seconds}))
    }

    /// 409 for server-side apply field conflicts.
    pub fn apply_conflict(message: String, causes: Vec<Value>) -> Self {
        ApiError::new(409, "Conflict", message).with_details(json!({"causes": causes}))
    }

    /// The `v1 Status` body.
    pub fn body(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (
            code,
            [(header::CONTENT_TYPE, "application/json")],
            self.body().to_string(),
        )
            .into_response();
        if let Some(seconds) = self
            .details
            .as_ref()
            .and_then(|details| details.get("retryAfterSeconds"))
            .and_then(Value::as_u64)
        {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_match_kubernetes() {
        let deployments = Subject {
            group: "apps",
            resource: "deployments",
        };
        assert_eq!(
            ApiError::not_found(deployments, "web").message,
            "deployments.apps \"web\" not found"
        );
        let configmaps = Subject {
            group: "",
            resource: "configmaps",
        };
        assert_eq!(
            ApiError::stale(configmaps, "cfg").message,
            "Operation cannot be fulfilled on configmaps \"cfg\": the object has been modified; please apply your changes to the latest version and try again"
        );
        let invalid = ApiError::invalid(
            "ConfigMap",
            "Bad_Name",
            &[(
                "metadata.name".into(),
                "Invalid value: \"Bad_Name\": x".into(),
            )],
        );
        assert_eq!(
            invalid.message,
            "ConfigMap \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\": x"
        );
        assert_eq!(
            invalid.body()["details"]["causes"][0]["field"],
            "metadata.name"
        );
    }
}
