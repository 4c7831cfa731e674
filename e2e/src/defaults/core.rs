//! Services, Secrets, Namespaces, PersistentVolumeClaims (`pkg/apis/core/v1/defaults.go`)
//! and RBAC bindings (`pkg/apis/rbac/v1/defaults.go`).

use std::collections::HashSet;

use super::{default, each, existing, object_at, unset};
use serde_json::{Map, Value, json};

/// `SetDefaults_Service`.
pub fn service(object: &mut Value) {
    let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    default(spec, "sessionAffinity", json!("None"));
    match spec.get("sessionAffinity").and_then(Value::as_str) {
        Some("None") => {
            spec.remove("sessionAffinityConfig");
        }
        Some("ClientIP") => {
            let timeout = spec
                .get("sessionAffinityConfig")
                .and_then(|config| config.pointer("/clientIP/timeoutSeconds"))
                .filter(|t| !t.is_null());
            if timeout.is_none() {
                spec.insert(
                    "sessionAffinityConfig".into(),
                    json!({"clientIP": {"timeoutSeconds": 10800}}),
                );
            }
        }
        _ => {}
    }
    default(spec, "type", json!("ClusterIP"));
    for port in each(spec, "ports") {
        default(port, "protocol", json!("TCP"));
        let no_target = matches!(port.get("targetPort"), None | Some(Value::Null))
            || port.get("targetPort") == Some(&json!(0))
            || port.get("targetPort") == Some(&json!(""));
        if no_target && let Some(number) = port.get("port").cloned() {
            port.insert("targetPort".into(), number);
        }
    }
    let service_type = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let external_ips = spec
        .get("externalIPs")
        .and_then(Value::as_array)
        .is_some_and(|ips| !ips.is_empty());
    if service_type == "NodePort" || service_type == "LoadBalancer" || external_ips {
        default(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if ["NodePort", "LoadBalancer", "ClusterIP"].contains(&service_type.as_str()) {
        default(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    if service_type == "LoadBalancer" {
        default(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
}

/// `SetDefaults_Secret` (`type: Opaque`), and `stringData`, which is write-only: its
/// entries replace those of `data`, base64-encoded, and it is not stored
/// (`Convert_v1_Secret_To_core_Secret`).
pub fn secret(object: &mut Value) {
    use base64::Engine;
    let Some(fields) = object.as_object_mut() else {
        return;
    };
    default(fields, "type", json!("Opaque"));
    let Some(Value::Object(strings)) = fields.remove("stringData") else {
        return;
    };
    if let Some(data) = object_at(fields, "data") {
        for (key, value) in strings {
            if let Some(text) = value.as_str() {
                let encoded = base64::engine::general_purpose::STANDARD.encode(text);
                data.insert(key, Value::String(encoded));
            }
        }
    }
}

/// `SetDefaults_Namespace`: the `kubernetes.io/metadata.name` label.
pub fn namespace(object: &mut Value) {
    let Some(name) = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
    else {
        return;
    };
    if let Some(labels) = object
        .get_mut("metadata")
        .and_then(Value::as_object_mut)
        .and_then(|metadata| object_at(metadata, "labels"))
    {
        labels.insert("kubernetes.io/metadata.name".into(), json!(name));
    }
}

/// A PersistentVolumeClaim: the defaults of its spec.
pub fn claim(object: &mut Value) {
    if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
        claim_spec(spec);
    }
}

/// `SetDefaults_PersistentVolumeClaim` for a claim template (`status.phase: Pending`) and
/// its spec. A claim's own status is the status subresource's (cleared on create).
pub fn claim_template(template: &mut Map<String, Value>) {
    if let Some(spec) = existing(template, "spec") {
        claim_spec(spec);
    }
    if let Some(status) = object_at(template, "status") {
        default(status, "phase", json!("Pending"));
    }
}

/// `SetDefaults_PersistentVolumeClaimSpec`: `volumeMode: Filesystem`.
pub fn claim_spec(spec: &mut Map<String, Value>) {
    default(spec, "volumeMode", json!("Filesystem"));
}

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// `SetDefaults_RoleBinding`/`SetDefaults_ClusterRoleBinding` (`roleRef.apiGroup`) and
/// `SetDefaults_Subject` (users and groups are in the RBAC group).
pub fn binding(object: &mut Value) {
    let Some(fields) = object.as_object_mut() else {
        return;
    };
    if let Some(role_ref) = existing(fields, "roleRef") {
        default(role_ref, "apiGroup", json!(RBAC_GROUP));
    }
    for subject in each(fields, "subjects") {
        let kind = subject
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if unset(subject, "apiGroup") && (kind == "User" || kind == "Group") {
            subject.insert("apiGroup".into(), json!(RBAC_GROUP));
        }
    }
}

/// What the API server allocates to a Service rather than defaults
/// (`pkg/registry/core/service/storage/storage.go`): a cluster IP from `10.96.0.0/12` (the
/// lowest free one here, where Kubernetes picks at random) with `clusterIPs`, `ipFamilies:
/// [IPv4]` and `ipFamilyPolicy: SingleStack`, and node ports from 30000–32767 for
/// `NodePort` and `LoadBalancer` Services. An update that leaves them out keeps the
/// allocated ones (`patchAllocatedValues`).
pub fn allocate_service(
    object: &mut Value,
    old: Option<&Value>,
    ip_in_use: &dyn Fn(&str) -> bool,
    port_in_use: &dyn Fn(i64) -> bool,
) {
    let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let old_spec = old
        .and_then(|old| old.get("spec"))
        .and_then(Value::as_object);
    if let Some(old_spec) = old_spec {
        for key in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
            if unset(spec, key)
                && let Some(value) = old_spec.get(key)
            {
                spec.insert(key.to_owned(), value.clone());
            }
        }
    }
    let service_type = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if service_type == "ExternalName" {
        return;
    }
    if unset(spec, "clusterIP") {
        let free = (1..=u32::from(u16::MAX))
            .map(|n| format!("10.96.{}.{}", n / 256, n % 256))
            .find(|ip| !ip_in_use(ip) && !ip.ends_with(".0"));
        if let Some(ip) = free {
            spec.insert("clusterIP".into(), json!(ip));
        }
    }
    if let Some(ip) = spec.get("clusterIP").cloned() {
        default(spec, "clusterIPs", json!([ip]));
    }
    default(spec, "ipFamilies", json!(["IPv4"]));
    default(spec, "ipFamilyPolicy", json!("SingleStack"));
    if service_type != "NodePort" && service_type != "LoadBalancer" {
        return;
    }
    let old_ports: Vec<&Value> = old_spec
        .and_then(|spec| spec.get("ports"))
        .and_then(Value::as_array)
        .map(|ports| ports.iter().collect())
        .unwrap_or_default();
    let mut taken = HashSet::new();
    for port in each(spec, "ports") {
        if !unset(port, "nodePort") && port.get("nodePort") != Some(&json!(0)) {
            continue;
        }
        let kept = old_ports
            .iter()
            .find(|old| {
                old.get("port") == port.get("port") && old.get("protocol") == port.get("protocol")
            })
            .and_then(|old| old.get("nodePort"))
            .and_then(Value::as_i64);
        let node_port =
            kept.or_else(|| (30000..=32767).find(|p| !taken.contains(p) && !port_in_use(*p)));
        if let Some(node_port) = node_port {
            taken.insert(node_port);
            port.insert("nodePort".into(), json!(node_port));
        }
    }
}

/// The cluster IPs and node ports `service` holds.
pub fn allocations(service: &Value) -> (Vec<String>, Vec<i64>) {
    let ips = service
        .pointer("/spec/clusterIPs")
        .and_then(Value::as_array)
        .map(|ips| {
            ips.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let ports = service
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .map(|ports| {
            ports
                .iter()
                .filter_map(|p| p.get("nodePort")?.as_i64())
                .collect()
        })
        .unwrap_or_default();
    (ips, ports)
}
