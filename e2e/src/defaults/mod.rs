//! The defaults the API server fills into built-in objects on every write (create, update,
//! patch, and after an apply merged its configuration), and the normalization of their
//! resource quantities. Each default follows the upstream defaulting function named in its
//! module:
//!
//! | kind | upstream | module |
//! |---|---|---|
//! | Pod, PodSpec (templates too), Container, Probe, HTTPGetAction, Volume and its sources, ObjectFieldSelector, ServiceAccountTokenProjection | `pkg/apis/core/v1/defaults.go` `SetDefaults_Pod`, `SetDefaults_PodSpec`, `SetDefaults_Container`, `SetDefaults_Probe`, `SetDefaults_HTTPGetAction`, `SetDefaults_Volume`, `SetDefaults_{Secret,ConfigMap,DownwardAPI,Projected,HostPath}VolumeSource`, `SetDefaults_ObjectFieldSelector`, `SetDefaults_ServiceAccountTokenProjection`; `ContainerPort.protocol` `+default="TCP"` (`k8s.io/api/core/v1/types.go`) | [`pod`] |
//! | Service, Secret, Namespace, PersistentVolumeClaim (and claim templates) | `pkg/apis/core/v1/defaults.go` `SetDefaults_Service`, `SetDefaults_Secret`, `SetDefaults_Namespace`, `SetDefaults_PersistentVolumeClaim`, `SetDefaults_PersistentVolumeClaimSpec`; a Secret's `stringData` merged into `data` by `Convert_v1_Secret_To_core_Secret` (`pkg/apis/core/v1/conversion.go`) | [`core`] |
//! | RoleBinding, ClusterRoleBinding | `pkg/apis/rbac/v1/defaults.go` `SetDefaults_Subject`, `SetDefaults_RoleBinding`, `SetDefaults_ClusterRoleBinding` | [`core`] |
//! | Deployment, StatefulSet | `pkg/apis/apps/v1/defaults.go` `SetDefaults_Deployment`, `SetDefaults_StatefulSet` | [`workloads`] |
//! | Job, CronJob | `pkg/apis/batch/v1/defaults.go` `SetDefaults_Job`, `SetDefaults_CronJob` | [`workloads`] |
//! | HorizontalPodAutoscaler | `pkg/apis/autoscaling/v2/defaults.go` `SetDefaults_HorizontalPodAutoscaler`, `SetDefaults_HorizontalPodAutoscalerBehavior` | [`workloads`] |
//! | every `resource.Quantity` and `ResourceList` | `k8s.io/apimachinery/pkg/api/resource/quantity.go` (canonical form), `pkg/apis/core/v1/defaults.go` `SetDefaults_ResourceList` (milli rounding) | [`quantity`] |
//!
//! Only defaults of fields the server's Kubernetes version (the vendored 1.34 definitions)
//! has, and of features enabled by default, are filled. Values the API server allocates
//! rather than defaults (a Service's cluster IP, node ports) are not here but in the store.

pub mod core;
pub mod pod;
pub mod quantity;
pub mod workloads;

use crate::resources::ResourceType;
use crate::schema::Schema;
use serde_json::{Map, Value};

/// Fills the defaults of `object` (of built-in type `ty`) that are not already set and
/// writes its quantities in canonical form. Custom resources are left alone.
pub fn apply(ty: &ResourceType, object: &mut Value) {
    if ty.is_custom() {
        return;
    }
    match (ty.gr.group.as_str(), ty.gr.resource.as_str()) {
        ("", "pods") => pod::pod(object),
        ("", "services") => core::service(object),
        ("", "secrets") => core::secret(object),
        ("", "namespaces") => core::namespace(object),
        ("", "persistentvolumeclaims") => core::claim(object),
        ("apps", "deployments") => workloads::deployment(object),
        ("apps", "statefulsets") => workloads::stateful_set(object),
        ("batch", "jobs") => workloads::job(object),
        ("batch", "cronjobs") => workloads::cron_job(object),
        ("autoscaling", "horizontalpodautoscalers") => workloads::autoscaler(object),
        ("rbac.authorization.k8s.io", "rolebindings" | "clusterrolebindings") => {
            core::binding(object)
        }
        _ => {}
    }
    canonical_quantities(object, ty.schema(ty.storage_version()));
}

/// Writes every quantity of `value` (found through its schema) in canonical form.
pub fn canonical_quantities(value: &mut Value, schema: Schema) {
    const QUANTITY: &str = "io.k8s.apimachinery.pkg.api.resource.Quantity";
    if schema.is_definition(QUANTITY) {
        if let Some(canonical) = quantity::canonical(value) {
            *value = Value::String(canonical);
        }
        return;
    }
    match value {
        Value::Object(fields) => {
            let resource_list =
                !schema.has_properties() && schema.field("").is_definition(QUANTITY);
            for (name, child) in fields.iter_mut() {
                if resource_list {
                    if let Some(canonical) = quantity::canonical_in_resource_list(child) {
                        *child = Value::String(canonical);
                    }
                } else {
                    canonical_quantities(child, schema.field(name));
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                canonical_quantities(item, schema.items());
            }
        }
        _ => {}
    }
}

/// Whether a field counts as unset for a defaulting function: absent, `null`, or the empty
/// string (Go's zero value of a string field).
fn unset(fields: &Map<String, Value>, key: &str) -> bool {
    match fields.get(key) {
        None | Some(Value::Null) => true,
        Some(Value::String(text)) => text.is_empty(),
        _ => false,
    }
}

/// Sets `key` to `value` when it is unset.
fn default(fields: &mut Map<String, Value>, key: &str, value: Value) {
    if unset(fields, key) {
        fields.insert(key.to_owned(), value);
    }
}

/// The object at `key` (created empty when unset), if it is an object.
fn object_at<'a>(
    fields: &'a mut Map<String, Value>,
    key: &str,
) -> Option<&'a mut Map<String, Value>> {
    if unset(fields, key) {
        fields.insert(key.to_owned(), Value::Object(Map::new()));
    }
    fields.get_mut(key).and_then(Value::as_object_mut)
}

/// Each object of the list at `key`, if any.
fn each<'a>(
    fields: &'a mut Map<String, Value>,
    key: &str,
) -> impl Iterator<Item = &'a mut Map<String, Value>> {
    fields
        .get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object_mut)
}

/// The object at `key`, if it is set.
fn existing<'a>(
    fields: &'a mut Map<String, Value>,
    key: &str,
) -> Option<&'a mut Map<String, Value>> {
    fields.get_mut(key).and_then(Value::as_object_mut)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Registry;
    use serde_json::json;

    fn defaulted(group: &str, resource: &str, mut object: Value) -> Value {
        let registry = Registry::builtin();
        let ty = registry
            .lookup(group, "v1", resource)
            .expect("a built-in type");
        apply(&ty, &mut object);
        object
    }

    #[test]
    fn pod_containers_probes_and_volumes() {
        let pod = defaulted(
            "",
            "pods",
            json!({"spec": {
                "containers": [{
                    "name": "app", "image": "registry:5000/app",
                    "resources": {"limits": {"cpu": "0.25", "memory": "128974848"}},
                    "readinessProbe": {"httpGet": {"port": 8080}},
                    "env": [{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]
                }],
                "volumes": [{"name": "scratch"}, {"name": "conf", "configMap": {"name": "c"}}]
            }}),
        );
        assert_eq!(
            pod["spec"],
            json!({
                "containers": [{
                    "name": "app", "image": "registry:5000/app", "imagePullPolicy": "Always",
                    "terminationMessagePath": "/dev/termination-log",
                    "terminationMessagePolicy": "File",
                    "resources": {"limits": {"cpu": "250m", "memory": "128974848"},
                                  "requests": {"cpu": "250m", "memory": "128974848"}},
                    "readinessProbe": {"httpGet": {"port": 8080, "path": "/", "scheme": "HTTP"},
                                       "timeoutSeconds": 1, "periodSeconds": 10,
                                       "successThreshold": 1, "failureThreshold": 3},
                    "env": [{"name": "NODE", "valueFrom": {"fieldRef": {
                        "fieldPath": "spec.nodeName", "apiVersion": "v1"}}}]
                }],
                "volumes": [{"name": "scratch", "emptyDir": {}},
                            {"name": "conf", "configMap": {"name": "c", "defaultMode": 420}}],
                "dnsPolicy": "ClusterFirst", "restartPolicy": "Always",
                "schedulerName": "default-scheduler", "securityContext": {},
                "terminationGracePeriodSeconds": 30, "enableServiceLinks": true
            })
        );
    }

    #[test]
    fn services_default_and_get_addresses() {
        let mut service = defaulted(
            "",
            "services",
            json!({"spec": {"type": "NodePort", "sessionAffinity": "ClientIP",
                            "ports": [{"port": 80, "targetPort": 0}]}}),
        );
        core::allocate_service(&mut service, None, &|ip| ip == "10.96.0.1", &|port| {
            port == 30000
        });
        assert_eq!(
            service["spec"],
            json!({
                "type": "NodePort", "sessionAffinity": "ClientIP",
                "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 10800}},
                "ports": [{"port": 80, "targetPort": 80, "protocol": "TCP", "nodePort": 30001}],
                "externalTrafficPolicy": "Cluster", "internalTrafficPolicy": "Cluster",
                "clusterIP": "10.96.0.2", "clusterIPs": ["10.96.0.2"],
                "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack"
            })
        );
        // An update that leaves the allocations out keeps them.
        let mut update =
            json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP"}]}});
        core::allocate_service(&mut update, Some(&service), &|_| false, &|_| false);
        assert_eq!(
            (
                &update["spec"]["clusterIP"],
                &update["spec"]["ports"][0]["nodePort"]
            ),
            (&json!("10.96.0.2"), &json!(30001))
        );
    }
}
