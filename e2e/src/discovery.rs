//! Discovery (`/version`, `/api`, `/apis`, resource lists) and the OpenAPI v3 documents
//! kubectl reads before `apply` and `explain`.

use crate::resources::{Registry, ResourceType, TypeSchema};
use crate::schema::builtin_definitions;
use serde_json::{Map, Value, json};
use std::collections::BTreeSet;
use std::hash::{DefaultHasher, Hash, Hasher};

/// The Kubernetes version the server claims (kubectl picks its matching release from it).
pub const MINOR: &str = "33";

/// `GET /version`.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": MINOR,
        "gitVersion": format!("v1.{MINOR}.0-pequod-e2e"),
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64"
    })
}

/// `GET /api`.
pub fn core_versions(address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}]
    })
}

fn group(name: &str, versions: &[String]) -> Value {
    let listed: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    json!({
        "name": name,
        "versions": listed,
        "preferredVersion": listed.first().cloned().unwrap_or(json!({})),
    })
}

/// `GET /apis`.
pub fn groups(registry: &Registry) -> Value {
    let groups: Vec<Value> = registry
        .groups()
        .iter()
        .map(|(name, versions)| group(name, versions))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `GET /apis/{group}`.
pub fn api_group(registry: &Registry, name: &str) -> Option<Value> {
    registry.groups().get(name).map(|versions| {
        let mut body = group(name, versions);
        body["kind"] = json!("APIGroup");
        body["apiVersion"] = json!("v1");
        body
    })
}

/// `GET /api/v1` or `/apis/{group}/{version}`; None when nothing is served there.
pub fn resource_list(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    let types = registry.in_group_version(group, version);
    if types.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for ty in types {
        let mut resource = json!({
            "name": ty.gr.resource,
            "singularName": ty.singular,
            "namespaced": ty.namespaced,
            "kind": ty.kind,
            "verbs": ty.verbs(),
        });
        if !ty.short_names.is_empty() {
            resource["shortNames"] = json!(ty.short_names);
        }
        if !ty.categories.is_empty() {
            resource["categories"] = json!(ty.categories);
        }
        resources.push(resource);
        if ty.status_subresource {
            resources.push(json!({
                "name": format!("{}/status", ty.gr.resource),
                "singularName": "",
                "namespaced": ty.namespaced,
                "kind": ty.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    let group_version = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }))
}

/// The `Content-Type` (and `Accept` entry) of aggregated discovery documents.
pub const AGGREGATED: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Whether the `Accept` header asks for aggregated discovery (kubectl does, first).
pub fn wants_aggregated(accept: &str) -> bool {
    accept.split(',').any(|media| {
        let parameters: Vec<&str> = media.split(';').map(str::trim).collect();
        parameters.contains(&"g=apidiscovery.k8s.io")
            && parameters.contains(&"v=v2")
            && parameters.contains(&"as=APIGroupDiscoveryList")
    })
}

/// `GET /api` or `/apis` as an `apidiscovery.k8s.io/v2 APIGroupDiscoveryList`: every group
/// (the core group alone for `/api`) with its versions and resources.
pub fn aggregated(registry: &Registry, core: bool) -> Value {
    let mut groups: Vec<(String, Vec<String>)> = if core {
        vec![(String::new(), vec!["v1".to_owned()])]
    } else {
        registry.groups().into_iter().collect()
    };
    groups.retain(|(name, _)| name.is_empty() == core);
    let items: Vec<Value> = groups
        .iter()
        .map(|(group, versions)| {
            let versions: Vec<Value> = versions
                .iter()
                .map(|version| {
                    let resources: Vec<Value> = registry
                        .in_group_version(group, version)
                        .iter()
                        .map(|ty| {
                            let kind = json!({"group": group, "version": version, "kind": ty.kind});
                            let mut resource = json!({
                                "resource": ty.gr.resource,
                                "responseKind": kind,
                                "scope": if ty.namespaced { "Namespaced" } else { "Cluster" },
                                "singularResource": ty.singular,
                                "verbs": ty.verbs(),
                            });
                            if !ty.short_names.is_empty() {
                                resource["shortNames"] = json!(ty.short_names);
                            }
                            if !ty.categories.is_empty() {
                                resource["categories"] = json!(ty.categories);
                            }
                            if ty.status_subresource {
                                resource["subresources"] = json!([{
                                    "subresource": "status",
                                    "responseKind": kind,
                                    "verbs": ["get", "patch", "update"],
                                }]);
                            }
                            resource
                        })
                        .collect();
                    json!({"version": version, "resources": resources, "freshness": "Current"})
                })
                .collect();
            json!({"metadata": {"name": group}, "versions": versions})
        })
        .collect();
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    })
}

/// The OpenAPI path prefix of a group/version (`api/v1`, `apis/apps/v1`).
fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `GET /openapi/v3`: one entry per group/version, its URL carrying a hash of the document
/// so that kubectl's cache notices changes (a CRD update).
pub fn openapi_index(registry: &Registry) -> Value {
    let mut paths = Map::new();
    let mut gvs: BTreeSet<(String, String)> = BTreeSet::new();
    for ty in registry.all() {
        for version in &ty.versions {
            gvs.insert((ty.gr.group.clone(), version.clone()));
        }
    }
    for (group, version) in gvs {
        let document = openapi_document(registry, &group, &version);
        let mut hasher = DefaultHasher::new();
        document.to_string().hash(&mut hasher);
        let path = gv_path(&group, &version);
        paths.insert(
            path.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={:016X}", hasher.finish())}),
        );
    }
    json!({"paths": paths})
}

/// The component name of a type's schema.
fn component_name(ty: &ResourceType, version: &str) -> String {
    match &ty.schema {
        TypeSchema::Builtin(definition) => (*definition).to_owned(),
        TypeSchema::Crd(_) => {
            let reversed: Vec<&str> = ty.gr.group.split('.').rev().collect();
            format!("{}.{version}.{}", reversed.join("."), ty.kind)
        }
    }
}

/// Rewrites JSON Schema `$defs` references into OpenAPI component references and collects
/// the names referenced.
fn rewrite_refs(value: &mut Value, referenced: &mut BTreeSet<String>) {
    match value {
        Value::Object(fields) => {
            if let Some(Value::String(reference)) = fields.get_mut("$ref")
                && let Some(name) = reference.strip_prefix("#/$defs/")
            {
                referenced.insert(name.to_owned());
                *reference = format!("#/components/schemas/{name}");
            }
            for child in fields.values_mut() {
                rewrite_refs(child, referenced);
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|item| rewrite_refs(item, referenced)),
        _ => {}
    }
}

/// Adds a built-in definition and everything it references to `components`.
fn add_builtin(components: &mut Map<String, Value>, name: &str) {
    let mut pending = vec![name.to_owned()];
    while let Some(name) = pending.pop() {
        if components.contains_key(&name) {
            continue;
        }
        let Some(mut definition) = builtin_definitions().get(&name).cloned() else {
            continue;
        };
        let mut referenced = BTreeSet::new();
        rewrite_refs(&mut definition, &mut referenced);
        components.insert(name, definition);
        pending.extend(referenced);
    }
}

/// The OpenAPI v3 document of one group/version: a path per resource with the operations
/// (PATCH carries `x-kubernetes-group-version-kind` and the `fieldValidation` parameter that
/// kubectl looks for), and the schemas of its kinds.
pub fn openapi_document(registry: &Registry, group: &str, version: &str) -> Value {
    let mut paths = Map::new();
    let mut components = Map::new();
    add_builtin(
        &mut components,
        "io.k8s.apimachinery.pkg.apis.meta.v1.Patch",
    );
    add_builtin(
        &mut components,
        "io.k8s.apimachinery.pkg.apis.meta.v1.Status",
    );
    for ty in registry.in_group_version(group, version) {
        let component = component_name(&ty, version);
        match &ty.schema {
            TypeSchema::Builtin(definition) => add_builtin(&mut components, definition),
            TypeSchema::Crd(schemas) => {
                let mut schema = schemas
                    .get(version)
                    .cloned()
                    .unwrap_or(json!({"type": "object"}));
                if let Some(properties) =
                    schema.get_mut("properties").and_then(Value::as_object_mut)
                {
                    properties.insert(
                        "metadata".into(),
                        json!({"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}),
                    );
                }
                schema["x-kubernetes-group-version-kind"] =
                    json!([{"group": group, "version": version, "kind": ty.kind}]);
                components.insert(component.clone(), schema);
                add_builtin(
                    &mut components,
                    "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
                );
            }
        }
        let gvk = json!({"group": group, "version": version, "kind": ty.kind});
        let object_ref = json!({"$ref": format!("#/components/schemas/{component}")});
        let response = json!({"200": {"description": "OK", "content": {"application/json": {"schema": object_ref}}}});
        let query = |name: &str| json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}});
        let write_parameters = json!([
            query("dryRun"),
            query("fieldManager"),
            query("fieldValidation")
        ]);
        let mut patch_parameters = write_parameters.clone();
        if let Some(list) = patch_parameters.as_array_mut() {
            list.push(json!({"name": "force", "in": "query", "schema": {"type": "boolean", "uniqueItems": true}}));
        }
        // Custom resources take no strategic merge patch: kubectl reads this list to choose
        // between a strategic and a JSON merge patch for client-side apply.
        let mut patch_types = vec![
            "application/apply-patch+yaml",
            "application/json-patch+json",
            "application/merge-patch+json",
        ];
        if !ty.is_custom() {
            patch_types.push("application/strategic-merge-patch+json");
        }
        let patch_content: serde_json::Map<String, Value> = patch_types
            .into_iter()
            .map(|media| {
                (
                    media.to_owned(),
                    json!({"schema": {"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.Patch"}}),
                )
            })
            .collect();
        let patch_body = json!({"content": patch_content, "required": true});
        let operation = |action: &str, extra: Value| {
            let mut op = json!({
                "operationId": format!("{action}{}", ty.kind),
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk,
                "responses": response,
            });
            if let (Some(op), Some(extra)) = (op.as_object_mut(), extra.as_object()) {
                op.extend(extra.clone());
            }
            op
        };
        let prefix = format!("/{}", gv_path(group, version));
        let (collection, item) = if ty.namespaced {
            (
                format!("{prefix}/namespaces/{{namespace}}/{}", ty.gr.resource),
                format!(
                    "{prefix}/namespaces/{{namespace}}/{}/{{name}}",
                    ty.gr.resource
                ),
            )
        } else {
            (
                format!("{prefix}/{}", ty.gr.resource),
                format!("{prefix}/{}/{{name}}", ty.gr.resource),
            )
        };
        let post = operation(
            "post",
            json!({"parameters": write_parameters, "requestBody": {"content": {"application/json": {"schema": object_ref}}, "required": true}}),
        );
        if ty.review {
            paths.insert(collection, json!({"post": post}));
            continue;
        }
        paths.insert(
            collection,
            json!({
                "get": operation("list", json!({})),
                "post": post,
                "delete": operation("deletecollection", json!({})),
            }),
        );
        paths.insert(
            item.clone(),
            json!({
                "get": operation("get", json!({})),
                "put": operation("put", json!({"parameters": write_parameters, "requestBody": {"content": {"application/json": {"schema": object_ref}}, "required": true}})),
                "patch": operation("patch", json!({"parameters": patch_parameters, "requestBody": patch_body})),
                "delete": operation("delete", json!({})),
            }),
        );
        if ty.status_subresource {
            paths.insert(
                format!("{item}/status"),
                json!({
                    "get": operation("get", json!({})),
                    "put": operation("put", json!({"parameters": write_parameters, "requestBody": {"content": {"application/json": {"schema": object_ref}}, "required": true}})),
                    "patch": operation("patch", json!({"parameters": patch_parameters, "requestBody": patch_body})),
                }),
            );
        }
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": format!("v1.{MINOR}.0")},
        "paths": paths,
        "components": {"schemas": components},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_lists_carry_status_subresources() {
        let registry = Registry::builtin();
        let list = resource_list(&registry, "apps", "v1").expect("apps/v1 is served");
        let names: Vec<&str> = list["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["name"].as_str())
            .collect();
        assert!(names.contains(&"deployments") && names.contains(&"deployments/status"));
        assert!(resource_list(&registry, "apps", "v9").is_none());
    }

    #[test]
    fn aggregated_discovery_lists_groups_and_resources() {
        let registry = Registry::builtin();
        assert!(wants_aggregated(
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
        ));
        assert!(!wants_aggregated("application/json"));
        let core = aggregated(&registry, true);
        assert_eq!(core["items"].as_array().map(Vec::len), Some(1));
        assert_eq!(core["items"][0]["metadata"]["name"], "");
        let groups = aggregated(&registry, false);
        let apps = groups["items"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|g| g["metadata"]["name"] == "apps")
            .expect("apps group");
        let deployments = apps["versions"][0]["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["resource"] == "deployments")
            .expect("deployments");
        assert_eq!(deployments["scope"], "Namespaced");
        assert_eq!(deployments["subresources"][0]["subresource"], "status");
    }

    #[test]
    fn openapi_patch_operations_name_their_kind() {
        let registry = Registry::builtin();
        let document = openapi_document(&registry, "apps", "v1");
        let patch =
            &document["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(
            patch["x-kubernetes-group-version-kind"]["kind"],
            "Deployment"
        );
        assert!(
            patch["parameters"]
                .as_array()
                .is_some_and(|p| p.iter().any(|p| p["name"] == "fieldValidation"))
        );
        let schemas = &document["components"]["schemas"];
        assert!(schemas.get("io.k8s.api.apps.v1.Deployment").is_some());
        assert!(schemas.get("io.k8s.api.core.v1.Container").is_some());
        assert_eq!(
            schemas["io.k8s.api.apps.v1.Deployment"]["properties"]["spec"]["$ref"],
            "#/components/schemas/io.k8s.api.apps.v1.DeploymentSpec"
        );
        let index = openapi_index(&registry);
        assert!(
            index["paths"]["apis/apps/v1"]["serverRelativeURL"]
                .as_str()
                .is_some_and(|url| url.starts_with("/openapi/v3/apis/apps/v1?hash="))
        );
    }
}
