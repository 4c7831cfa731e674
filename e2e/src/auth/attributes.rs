//! What a request asks to do, in the terms authorization decides on: verb, API group,
//! version, namespace, resource, subresource and name for requests on resources, verb and
//! path for the others. Computed from the HTTP request as Kubernetes' `RequestInfoFactory`
//! does (`k8s.io/apiserver/pkg/endpoints/request/requestinfo.go`); impersonation and access
//! reviews build them directly.

use crate::selector::FieldSelector;
use crate::store::path_segment_errors;

/// The attributes of one request or of one action checked on a user's behalf
/// (`authorizer.AttributesRecord` without the user).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    /// Whether the request is for a resource (else for a path: discovery, OpenAPI, …).
    pub resource_request: bool,
    /// The URL path.
    pub path: String,
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`,
    /// `impersonate`, …; the lower-case HTTP method for requests for no resource.
    pub verb: String,
    /// API group (empty for core).
    pub api_group: String,
    /// API version.
    pub api_version: String,
    /// Namespace (empty for cluster-scoped requests).
    pub namespace: String,
    /// Plural resource.
    pub resource: String,
    /// Subresource (`status`).
    pub subresource: String,
    /// Object name (empty for collections, unless a field selector names one object).
    pub name: String,
}

/// Verbs given by a path prefix rather than the method (`/api/v1/watch/pods`, deprecated).
const SPECIAL_VERBS: &[&str] = &["proxy", "watch"];

/// Subresources of namespaces, which the path `/api/v1/namespaces/{name}/{sub}` names
/// instead of a namespaced resource.
const NAMESPACE_SUBRESOURCES: &[&str] = &["status", "finalize"];

impl Attributes {
    /// The attributes of an HTTP request: `method` and `path`, whether it asks to `watch`
    /// (the `watch` parameter), and its `fieldSelector` (a list or watch selecting
    /// `metadata.name=X` is authorized for the object `X`).
    pub fn of_request(method: &str, path: &str, watch: bool, field_selector: Option<&str>) -> Self {
        let mut attributes = Attributes {
            path: path.to_owned(),
            verb: method.to_ascii_lowercase(),
            ..Attributes::default()
        };
        let parts: Vec<&str> = path
            .trim_matches('/')
            .split('/')
            .filter(|part| !part.is_empty())
            .collect();
        let rest = match parts.as_slice() {
            ["api", version, rest @ ..] if !rest.is_empty() => {
                attributes.api_version = (*version).to_owned();
                rest
            }
            ["apis", group, version, rest @ ..] if !rest.is_empty() => {
                attributes.api_group = (*group).to_owned();
                attributes.api_version = (*version).to_owned();
                rest
            }
            _ => return attributes,
        };
        attributes.resource_request = true;
        let mut rest = rest;
        let verb_in_path = SPECIAL_VERBS.contains(&rest[0]);
        if verb_in_path {
            if rest.len() < 2 {
                return attributes;
            }
            attributes.verb = rest[0].to_owned();
            rest = &rest[1..];
        } else {
            attributes.verb = match method {
                "POST" => "create",
                "GET" | "HEAD" => "get",
                "PUT" => "update",
                "PATCH" => "patch",
                "DELETE" => "delete",
                _ => "",
            }
            .to_owned();
        }
        if rest[0] == "namespaces" && rest.len() > 1 {
            attributes.namespace = rest[1].to_owned();
            if rest.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&rest[2]) {
                rest = &rest[2..];
            }
        }
        let part = |index: usize| rest.get(index).map(|p| (*p).to_owned()).unwrap_or_default();
        attributes.resource = part(0);
        attributes.name = part(1);
        if attributes.verb != "proxy" {
            attributes.subresource = part(2);
        }
        if attributes.name.is_empty() && attributes.verb == "get" {
            attributes.verb = if watch { "watch" } else { "list" }.to_owned();
            if let Some(name) = field_selector
                .and_then(|selector| FieldSelector::parse(selector).ok())
                .as_ref()
                .and_then(|selector| selector.requires_exact_match("metadata.name"))
                .filter(|name| path_segment_errors(name).is_empty())
            {
                attributes.name = name.to_owned();
            }
        }
        if attributes.name.is_empty() && attributes.verb == "delete" {
            attributes.verb = "deletecollection".to_owned();
        }
        attributes
    }

    /// The resource with its subresource (`deployments/status`), as rules name it.
    pub fn combined_resource(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(method: &str, path: &str) -> Attributes {
        Attributes::of_request(method, path, false, None)
    }

    #[test]
    fn resource_requests() {
        let patch = of(
            "PATCH",
            "/apis/apps/v1/namespaces/team-a/deployments/web/status",
        );
        assert_eq!(
            patch,
            Attributes {
                resource_request: true,
                path: "/apis/apps/v1/namespaces/team-a/deployments/web/status".into(),
                verb: "patch".into(),
                api_group: "apps".into(),
                api_version: "v1".into(),
                namespace: "team-a".into(),
                resource: "deployments".into(),
                subresource: "status".into(),
                name: "web".into(),
            }
        );
        assert_eq!(patch.combined_resource(), "deployments/status");
        let namespace = of("GET", "/api/v1/namespaces/team-a");
        assert_eq!(
            (namespace.verb.as_str(), namespace.namespace.as_str()),
            ("get", "team-a"),
            "a namespace is read in its own namespace"
        );
        assert_eq!(namespace.resource, "namespaces");
        let status = of("PUT", "/api/v1/namespaces/team-a/status");
        assert_eq!(
            (
                status.resource.as_str(),
                status.name.as_str(),
                status.subresource.as_str()
            ),
            ("namespaces", "team-a", "status")
        );
        assert_eq!(of("GET", "/api/v1/configmaps").verb, "list");
        assert_eq!(
            of("DELETE", "/api/v1/namespaces/a/configmaps").verb,
            "deletecollection"
        );
        let watch = Attributes::of_request("GET", "/api/v1/namespaces/a/configmaps", true, None);
        assert_eq!(watch.verb, "watch");
        let legacy_watch = of("GET", "/api/v1/watch/namespaces/a/pods");
        assert_eq!(
            (legacy_watch.verb.as_str(), legacy_watch.resource.as_str()),
            ("watch", "pods")
        );
    }

    #[test]
    fn a_field_selector_on_the_name_names_the_object() {
        let named = |selector: &str| {
            Attributes::of_request("GET", "/api/v1/namespaces/a/secrets", true, Some(selector)).name
        };
        assert_eq!(named("metadata.name=token"), "token");
        assert_eq!(named("metadata.name!=token"), "");
        assert_eq!(named("metadata.name=a%2Fb"), "");
        assert_eq!(named("metadata.name=.."), "");
        assert_eq!(named("not a selector"), "");
    }

    #[test]
    fn paths_that_are_no_resource() {
        for path in [
            "/api",
            "/api/v1",
            "/apis",
            "/apis/apps",
            "/apis/apps/v1",
            "/version",
            "/openapi/v3/apis/apps/v1",
        ] {
            let attributes = of("GET", path);
            assert!(!attributes.resource_request, "{path}");
            assert_eq!(
                (attributes.verb.as_str(), attributes.path.as_str()),
                ("get", path)
            );
        }
    }
}
