//! The resource types the server serves: the built-in kinds the product touches, and the
//! kinds CustomResourceDefinitions register while the server runs.

use crate::schema::Schema;
use crate::status::{ApiError, Subject};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A group and plural resource name: the key objects are stored under (all versions of a
/// resource share one store, as in Kubernetes).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupResource {
    /// API group, empty for core.
    pub group: String,
    /// Plural resource name.
    pub resource: String,
}

impl GroupResource {
    /// `deployments.apps`.
    pub fn subject(&self) -> Subject<'_> {
        Subject {
            group: &self.group,
            resource: &self.resource,
        }
    }
}

/// Where a type's schema comes from.
#[derive(Debug, Clone)]
pub enum TypeSchema {
    /// A definition of the vendored Kubernetes OpenAPI (`io.k8s.api.apps.v1.Deployment`).
    Builtin(&'static str),
    /// A CRD's `openAPIV3Schema` per version.
    Crd(Arc<BTreeMap<String, Value>>),
}

/// An additional printer column (`kubectl get` columns) of a CRD.
#[derive(Debug, Clone, PartialEq)]
pub struct PrinterColumn {
    /// Column header.
    pub name: String,
    /// `string`, `integer`, `number`, `boolean` or `date`.
    pub type_: String,
    /// Optional format (`name`, …).
    pub format: String,
    /// Description shown by `kubectl get -o wide` help.
    pub description: String,
    /// 0 = always shown, >0 = only with `-o wide`.
    pub priority: i64,
    /// Simple JSONPath (`.status.phase`, `.status.conditions[?(@.type=="Ready")].status`).
    pub json_path: String,
}

/// One served resource type.
#[derive(Debug, Clone)]
pub struct ResourceType {
    /// Group and plural name.
    pub gr: GroupResource,
    /// Served versions, the storage (preferred) version first.
    pub versions: Vec<String>,
    /// Singular name.
    pub singular: String,
    /// Kind.
    pub kind: String,
    /// Kind of lists (`DeploymentList`).
    pub list_kind: String,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Short names (`deploy`).
    pub short_names: Vec<String>,
    /// Categories (`all`).
    pub categories: Vec<String>,
    /// Whether `status` is a subresource (main writes ignore it, `/status` writes only it).
    pub status_subresource: bool,
    /// Whether `metadata.generation` is maintained (bumped on spec changes).
    pub generation: bool,
    /// Field selectors accepted beyond `metadata.name` and `metadata.namespace`.
    pub selectable_fields: Vec<String>,
    /// Schema for merging, pruning and OpenAPI.
    pub schema: TypeSchema,
    /// CRD printer columns (built-ins have their own in `table.rs`).
    pub columns: Vec<PrinterColumn>,
    /// The CRD that registered this type, if any.
    pub crd: Option<String>,
    /// An access review: only created, answered at once, never stored.
    pub review: bool,
}

/// The verbs of stored resources.
const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

impl ResourceType {
    /// `apps/v1` or `v1` for the given version.
    pub fn api_version(&self, version: &str) -> String {
        if self.gr.group.is_empty() {
            version.to_owned()
        } else {
            format!("{}/{version}", self.gr.group)
        }
    }

    /// The storage version.
    pub fn storage_version(&self) -> &str {
        self.versions.first().map_or("v1", String::as_str)
    }

    /// Whether objects of this type are custom resources.
    pub fn is_custom(&self) -> bool {
        self.crd.is_some()
    }

    /// `Deployment.apps` as used in Invalid messages.
    pub fn kind_group(&self) -> String {
        if self.gr.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.gr.group)
        }
    }

    /// The schema of objects of this type at `version`.
    pub fn schema(&self, version: &str) -> Schema<'_> {
        match &self.schema {
            TypeSchema::Builtin(definition) => Schema::builtin(definition),
            TypeSchema::Crd(versions) => versions
                .get(version)
                .map_or(Schema::unknown(), |node| Schema::new(node, None)),
        }
    }

    /// The verbs the resource supports (discovery lists them).
    pub fn verbs(&self) -> &'static [&'static str] {
        if self.review { &["create"] } else { VERBS }
    }

    /// Whether the field label may be used in a field selector.
    pub fn field_selectable(&self, field: &str) -> bool {
        field == "metadata.name"
            || (field == "metadata.namespace" && self.namespaced)
            || self.selectable_fields.iter().any(|f| f == field)
    }
}

/// Describes a built-in type in one line of the table below.
struct Builtin {
    group: &'static str,
    version: &'static str,
    resource: &'static str,
    kind: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
    status: bool,
    generation: bool,
    definition: &'static str,
    fields: &'static [&'static str],
}

const ALL: &[&str] = &["all"];

/// The built-in resources in the `all` category (`kubectl get all`).
const IN_ALL: &[&str] = &[
    "pods",
    "services",
    "deployments",
    "statefulsets",
    "jobs",
    "cronjobs",
    "horizontalpodautoscalers",
];

/// The built-in kinds: those the product renders, reads or writes.
const BUILTINS: &[Builtin] = &[
    Builtin {
        group: "",
        version: "v1",
        resource: "namespaces",
        kind: "Namespace",
        namespaced: false,
        short_names: &["ns"],
        status: true,
        generation: false,
        definition: "io.k8s.api.core.v1.Namespace",
        fields: &["status.phase"],
    },
    Builtin {
        group: "",
        version: "v1",
        resource: "configmaps",
        kind: "ConfigMap",
        namespaced: true,
        short_names: &["cm"],
        status: false,
        generation: false,
        definition: "io.k8s.api.core.v1.ConfigMap",
        fields: &[],
    },
    Builtin {
        group: "",
        version: "v1",
        resource: "secrets",
        kind: "Secret",
        namespaced: true,
        short_names: &[],
        status: false,
        generation: false,
        definition: "io.k8s.api.core.v1.Secret",
        fields: &["type"],
    },
    Builtin {
        group: "",
        version: "v1",
        resource: "serviceaccounts",
        kind: "ServiceAccount",
        namespaced: true,
        short_names: &["sa"],
        status: false,
        generation: false,
        definition: "io.k8s.api.core.v1.ServiceAccount",
        fields: &[],
    },
    Builtin {
        group: "",
        version: "v1",
        resource: "services",
        kind: "Service",
        namespaced: true,
        short_names: &["svc"],
        status: true,
        generation: false,
        definition: "io.k8s.api.core.v1.Service",
        fields: &["spec.clusterIP", "spec.type"],
    },
    Builtin {
        group: "",
        version: "v1",
        resource: "pods",
        kind: "Pod",
        namespaced: true,
        short_names: &["po"],
        status: true,
        generation: false,
        definition: "io.k8s.api.core.v1.Pod",
        fields: &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
    },
    Builtin {
        group: "",
        version: "v1",
        resource: "resourcequotas",
        kind: "ResourceQuota",
        namespaced: true,
        short_names: &["quota"],
        status: true,
        generation: false,
        definition: "io.k8s.api.core.v1.ResourceQuota",
        fields: &[],
    },
    Builtin {
        group: "",
        version: "v1",
        resource: "persistentvolumeclaims",
        kind: "PersistentVolumeClaim",
        namespaced: true,
        short_names: &["pvc"],
        status: true,
        generation: false,
        definition: "io.k8s.api.core.v1.PersistentVolumeClaim",
        fields: &[],
    },
    Builtin {
        group: "",
        version: "v1",
        resource: "events",
        kind: "Event",
        namespaced: true,
        short_names: &["ev"],
        status: false,
        generation: false,
        definition: "io.k8s.api.core.v1.Event",
        fields: &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
    },
    Builtin {
        group: "events.k8s.io",
        version: "v1",
        resource: "events",
        kind: "Event",
        namespaced: true,
        short_names: &["ev"],
        status: false,
        generation: false,
        definition: "io.k8s.api.events.v1.Event",
        fields: &[],
    },
    Builtin {
        group: "coordination.k8s.io",
        version: "v1",
        resource: "leases",
        kind: "Lease",
        namespaced: true,
        short_names: &[],
        status: false,
        generation: false,
        definition: "io.k8s.api.coordination.v1.Lease",
        fields: &[],
    },
    Builtin {
        group: "apps",
        version: "v1",
        resource: "deployments",
        kind: "Deployment",
        namespaced: true,
        short_names: &["deploy"],
        status: true,
        generation: true,
        definition: "io.k8s.api.apps.v1.Deployment",
        fields: &[],
    },
    Builtin {
        group: "apps",
        version: "v1",
        resource: "statefulsets",
        kind: "StatefulSet",
        namespaced: true,
        short_names: &["sts"],
        status: true,
        generation: true,
        definition: "io.k8s.api.apps.v1.StatefulSet",
        fields: &[],
    },
    Builtin {
        group: "batch",
        version: "v1",
        resource: "jobs",
        kind: "Job",
        namespaced: true,
        short_names: &[],
        status: true,
        generation: true,
        definition: "io.k8s.api.batch.v1.Job",
        fields: &[],
    },
    Builtin {
        group: "batch",
        version: "v1",
        resource: "cronjobs",
        kind: "CronJob",
        namespaced: true,
        short_names: &["cj"],
        status: true,
        generation: true,
        definition: "io.k8s.api.batch.v1.CronJob",
        fields: &[],
    },
    Builtin {
        group: "policy",
        version: "v1",
        resource: "poddisruptionbudgets",
        kind: "PodDisruptionBudget",
        namespaced: true,
        short_names: &["pdb"],
        status: true,
        generation: true,
        definition: "io.k8s.api.policy.v1.PodDisruptionBudget",
        fields: &[],
    },
    Builtin {
        group: "autoscaling",
        version: "v2",
        resource: "horizontalpodautoscalers",
        kind: "HorizontalPodAutoscaler",
        namespaced: true,
        short_names: &["hpa"],
        status: true,
        generation: false,
        definition: "io.k8s.api.autoscaling.v2.HorizontalPodAutoscaler",
        fields: &[],
    },
    Builtin {
        group: "networking.k8s.io",
        version: "v1",
        resource: "ingresses",
        kind: "Ingress",
        namespaced: true,
        short_names: &["ing"],
        status: true,
        generation: true,
        definition: "io.k8s.api.networking.v1.Ingress",
        fields: &[],
    },
    Builtin {
        group: "networking.k8s.io",
        version: "v1",
        resource: "networkpolicies",
        kind: "NetworkPolicy",
        namespaced: true,
        short_names: &["netpol"],
        status: false,
        generation: true,
        definition: "io.k8s.api.networking.v1.NetworkPolicy",
        fields: &[],
    },
    Builtin {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        resource: "roles",
        kind: "Role",
        namespaced: true,
        short_names: &[],
        status: false,
        generation: false,
        definition: "io.k8s.api.rbac.v1.Role",
        fields: &[],
    },
    Builtin {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        resource: "rolebindings",
        kind: "RoleBinding",
        namespaced: true,
        short_names: &[],
        status: false,
        generation: false,
        definition: "io.k8s.api.rbac.v1.RoleBinding",
        fields: &[],
    },
    Builtin {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        resource: "clusterroles",
        kind: "ClusterRole",
        namespaced: false,
        short_names: &[],
        status: false,
        generation: false,
        definition: "io.k8s.api.rbac.v1.ClusterRole",
        fields: &[],
    },
    Builtin {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        resource: "clusterrolebindings",
        kind: "ClusterRoleBinding",
        namespaced: false,
        short_names: &[],
        status: false,
        generation: false,
        definition: "io.k8s.api.rbac.v1.ClusterRoleBinding",
        fields: &[],
    },
    Builtin {
        group: "apiextensions.k8s.io",
        version: "v1",
        resource: "customresourcedefinitions",
        kind: "CustomResourceDefinition",
        namespaced: false,
        short_names: &["crd", "crds"],
        status: true,
        generation: true,
        definition: "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinition",
        fields: &[],
    },
];

/// The access reviews (`kubectl auth can-i`).
const REVIEWS: &[Builtin] = &[
    Builtin {
        group: "authorization.k8s.io",
        version: "v1",
        resource: "selfsubjectaccessreviews",
        kind: "SelfSubjectAccessReview",
        namespaced: false,
        short_names: &[],
        status: false,
        generation: false,
        definition: "io.k8s.api.authorization.v1.SelfSubjectAccessReview",
        fields: &[],
    },
    Builtin {
        group: "authorization.k8s.io",
        version: "v1",
        resource: "subjectaccessreviews",
        kind: "SubjectAccessReview",
        namespaced: false,
        short_names: &[],
        status: false,
        generation: false,
        definition: "io.k8s.api.authorization.v1.SubjectAccessReview",
        fields: &[],
    },
];

/// The served types, by group/resource.
#[derive(Debug, Clone)]
pub struct Registry {
    types: BTreeMap<GroupResource, Arc<ResourceType>>,
}

/// Where a group/version/resource was found.
pub type Found = Arc<ResourceType>;

impl Registry {
    /// The built-in types.
    pub fn builtin() -> Self {
        let types = BUILTINS
            .iter()
            .map(|b| (b, false))
            .chain(REVIEWS.iter().map(|b| (b, true)))
            .map(|(b, review)| {
                let gr = GroupResource {
                    group: b.group.to_owned(),
                    resource: b.resource.to_owned(),
                };
                let categories = if IN_ALL.contains(&b.resource) {
                    ALL.iter().map(|s| (*s).to_owned()).collect()
                } else {
                    Vec::new()
                };
                let ty = ResourceType {
                    gr: gr.clone(),
                    versions: vec![b.version.to_owned()],
                    singular: b.kind.to_lowercase(),
                    kind: b.kind.to_owned(),
                    list_kind: format!("{}List", b.kind),
                    namespaced: b.namespaced,
                    short_names: b.short_names.iter().map(|s| (*s).to_owned()).collect(),
                    categories,
                    status_subresource: b.status,
                    generation: b.generation,
                    selectable_fields: b.fields.iter().map(|s| (*s).to_owned()).collect(),
                    schema: TypeSchema::Builtin(b.definition),
                    columns: Vec::new(),
                    crd: None,
                    review,
                };
                (gr, Arc::new(ty))
            })
            .collect();
        Registry { types }
    }

    /// The type serving `resource` in `group` at `version`.
    pub fn lookup(&self, group: &str, version: &str, resource: &str) -> Option<Found> {
        let gr = GroupResource {
            group: group.to_owned(),
            resource: resource.to_owned(),
        };
        self.types
            .get(&gr)
            .filter(|ty| ty.versions.iter().any(|v| v == version))
            .cloned()
    }

    /// The type stored under `gr`, whatever the version.
    pub fn get(&self, gr: &GroupResource) -> Option<Found> {
        self.types.get(gr).cloned()
    }

    /// Every served type.
    pub fn all(&self) -> impl Iterator<Item = &Found> {
        self.types.values()
    }

    /// The groups with their versions (preferred first), core group excluded, sorted as
    /// Kubernetes lists them (by name here).
    pub fn groups(&self) -> BTreeMap<String, Vec<String>> {
        let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for ty in self.types.values().filter(|ty| !ty.gr.group.is_empty()) {
            let versions = groups.entry(ty.gr.group.clone()).or_default();
            for version in &ty.versions {
                if !versions.contains(version) {
                    versions.push(version.clone());
                }
            }
        }
        groups
    }

    /// The types served at `group/version`.
    pub fn in_group_version(&self, group: &str, version: &str) -> Vec<Found> {
        self.types
            .values()
            .filter(|ty| ty.gr.group == group && ty.versions.iter().any(|v| v == version))
            .cloned()
            .collect()
    }

    /// Registers (or replaces) the types of an accepted CRD.
    pub fn register(&mut self, ty: ResourceType) {
        self.types.insert(ty.gr.clone(), Arc::new(ty));
    }

    /// Removes the type a CRD registered.
    pub fn unregister(&mut self, gr: &GroupResource) {
        self.types.remove(gr);
    }
}

/// Reads a CRD object into the type it registers, or says why it cannot be served.
pub fn from_crd(crd: &Value) -> Result<ResourceType, ApiError> {
    let name = crd
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let invalid = |field: &str, message: &str| {
        ApiError::invalid(
            "CustomResourceDefinition.apiextensions.k8s.io",
            name,
            &[(field.to_owned(), message.to_owned())],
        )
    };
    let spec = crd
        .get("spec")
        .ok_or_else(|| invalid("spec", "Required value"))?;
    let text = |pointer: &str| {
        spec.pointer(pointer)
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let group = text("/group").ok_or_else(|| invalid("spec.group", "Required value"))?;
    let plural =
        text("/names/plural").ok_or_else(|| invalid("spec.names.plural", "Required value"))?;
    let kind = text("/names/kind").ok_or_else(|| invalid("spec.names.kind", "Required value"))?;
    if name != format!("{plural}.{group}") {
        return Err(invalid(
            "metadata.name",
            &format!("Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    let namespaced = match text("/scope").as_deref() {
        Some("Namespaced") => true,
        Some("Cluster") => false,
        _ => {
            return Err(invalid(
                "spec.scope",
                "Unsupported value: must be \"Cluster\" or \"Namespaced\"",
            ));
        }
    };
    let strings = |pointer: &str| -> Vec<String> {
        spec.pointer(pointer)
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let versions = spec
        .get("versions")
        .and_then(Value::as_array)
        .filter(|versions| !versions.is_empty())
        .ok_or_else(|| {
            invalid(
                "spec.versions",
                "Required value: must have at least one version",
            )
        })?;
    let served: Vec<&Value> = versions
        .iter()
        .filter(|v| v.get("served").and_then(Value::as_bool) == Some(true))
        .collect();
    let storage: Vec<&Value> = versions
        .iter()
        .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .collect();
    if storage.len() != 1 {
        return Err(invalid(
            "spec.versions",
            "Invalid value: must have exactly one version marked as storage version",
        ));
    }
    let version_name = |v: &Value| {
        v.get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let storage_version = version_name(storage[0]);
    let mut names = vec![storage_version.clone()];
    names.extend(
        served
            .iter()
            .map(|v| version_name(v))
            .filter(|v| *v != storage_version),
    );
    if !served.iter().any(|v| version_name(v) == storage_version) {
        names.remove(0);
    }
    let mut schemas = BTreeMap::new();
    for version in versions {
        if let Some(schema) = version.pointer("/schema/openAPIV3Schema") {
            schemas.insert(version_name(version), schema.clone());
        }
    }
    let preferred = storage[0];
    let status_subresource = preferred.pointer("/subresources/status").is_some();
    let columns = preferred
        .get("additionalPrinterColumns")
        .and_then(Value::as_array)
        .map(|columns| {
            columns
                .iter()
                .map(|c| {
                    let text = |key: &str| {
                        c.get(key)
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned()
                    };
                    PrinterColumn {
                        name: text("name"),
                        type_: text("type"),
                        format: text("format"),
                        description: text("description"),
                        priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
                        json_path: text("jsonPath"),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let selectable_fields = preferred
        .get("selectableFields")
        .and_then(Value::as_array)
        .map(|fields| {
            fields
                .iter()
                .filter_map(|f| f.get("jsonPath").and_then(Value::as_str))
                .map(|path| path.trim_start_matches('.').to_owned())
                .collect()
        })
        .unwrap_or_default();
    Ok(ResourceType {
        gr: GroupResource {
            group,
            resource: plural,
        },
        versions: names,
        singular: text("/names/singular").unwrap_or_else(|| kind.to_lowercase()),
        list_kind: text("/names/listKind").unwrap_or_else(|| format!("{kind}List")),
        kind,
        namespaced,
        short_names: strings("/names/shortNames"),
        categories: strings("/names/categories"),
        status_subresource,
        generation: true,
        selectable_fields,
        schema: TypeSchema::Crd(Arc::new(schemas)),
        columns,
        crd: Some(name.to_owned()),
        review: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn builtins_resolve_by_group_version() {
        let registry = Registry::builtin();
        let deployments = registry.lookup("apps", "v1", "deployments");
        assert!(deployments.is_some_and(|ty| ty.kind == "Deployment" && ty.status_subresource));
        assert!(registry.lookup("apps", "v2", "deployments").is_none());
        assert!(registry.groups().contains_key("coordination.k8s.io"));
    }

    #[test]
    fn crd_registers_its_type() {
        let crd = json!({
            "metadata": {"name": "widgets.example.com"},
            "spec": {
                "group": "example.com", "scope": "Namespaced",
                "names": {"plural": "widgets", "kind": "Widget", "shortNames": ["wd"]},
                "versions": [
                    {"name": "v1beta1", "served": true, "storage": false},
                    {"name": "v1", "served": true, "storage": true,
                     "subresources": {"status": {}},
                     "schema": {"openAPIV3Schema": {"type": "object"}}}
                ]
            }
        });
        let ty = from_crd(&crd).expect("valid CRD");
        assert_eq!(ty.versions, ["v1", "v1beta1"]);
        assert_eq!(ty.list_kind, "WidgetList");
        assert_eq!(ty.singular, "widget");
        assert!(ty.namespaced && ty.is_custom());
        let wrong = json!({"metadata": {"name": "x"}, "spec": crd["spec"].clone()});
        assert_eq!(
            from_crd(&wrong).map(|_| ()).map_err(|e| e.message),
            Err("CustomResourceDefinition.apiextensions.k8s.io \"x\" is invalid: metadata.name: Invalid value: \"x\": must be spec.names.plural+\".\"+spec.group".to_owned())
        );
    }
}
