//! Pods and pod templates (`pkg/apis/core/v1/defaults.go`).

use super::{default, each, existing, object_at, unset};
use serde_json::{Map, Value, json};

/// A Pod: `SetDefaults_Pod` (requests default to limits, `enableServiceLinks: true`) and
/// its spec.
pub fn pod(object: &mut Value) {
    let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    for list in ["containers", "initContainers"] {
        for container in each(spec, list) {
            requests_from_limits(container);
        }
    }
    default(spec, "enableServiceLinks", json!(true));
    pod_spec_fields(spec);
}

/// `SetDefaults_Pod`: a resource with a limit and no request is requested at its limit.
fn requests_from_limits(container: &mut Map<String, Value>) {
    let Some(resources) = existing(container, "resources") else {
        return;
    };
    let Some(limits) = resources.get("limits").and_then(Value::as_object).cloned() else {
        return;
    };
    if let Some(requests) = object_at(resources, "requests") {
        for (name, limit) in limits {
            requests.entry(name).or_insert(limit);
        }
    }
}

/// A PodSpec, wherever it is (a Pod or a template): `SetDefaults_PodSpec` and the defaults
/// of its containers and volumes.
pub fn pod_spec(spec: &mut Value) {
    if let Some(spec) = spec.as_object_mut() {
        pod_spec_fields(spec);
    }
}

fn pod_spec_fields(spec: &mut Map<String, Value>) {
    default(spec, "dnsPolicy", json!("ClusterFirst"));
    default(spec, "restartPolicy", json!("Always"));
    default(spec, "securityContext", json!({}));
    default(spec, "terminationGracePeriodSeconds", json!(30));
    default(spec, "schedulerName", json!("default-scheduler"));
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        for c in each(spec, list) {
            container(c);
        }
    }
    for v in each(spec, "volumes") {
        volume(v);
    }
}

/// `SetDefaults_Container`, its ports' protocol, probes, lifecycle handlers and field refs.
fn container(container: &mut Map<String, Value>) {
    if unset(container, "imagePullPolicy") {
        let image = container.get("image").and_then(Value::as_str).unwrap_or("");
        let policy = if image_tag(image) == "latest" {
            "Always"
        } else {
            "IfNotPresent"
        };
        container.insert("imagePullPolicy".into(), json!(policy));
    }
    default(
        container,
        "terminationMessagePath",
        json!("/dev/termination-log"),
    );
    default(container, "terminationMessagePolicy", json!("File"));
    for port in each(container, "ports") {
        default(port, "protocol", json!("TCP"));
    }
    for name in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(probe) = existing(container, name) {
            default(probe, "timeoutSeconds", json!(1));
            default(probe, "periodSeconds", json!(10));
            default(probe, "successThreshold", json!(1));
            default(probe, "failureThreshold", json!(3));
            http_get(probe);
        }
    }
    if let Some(lifecycle) = existing(container, "lifecycle") {
        for name in ["postStart", "preStop"] {
            if let Some(handler) = existing(lifecycle, name) {
                http_get(handler);
            }
        }
    }
    for env in each(container, "env") {
        if let Some(field_ref) = existing(env, "valueFrom").and_then(|v| existing(v, "fieldRef")) {
            default(field_ref, "apiVersion", json!("v1"));
        }
    }
}

/// `SetDefaults_HTTPGetAction` of a probe's or handler's `httpGet`.
fn http_get(handler: &mut Map<String, Value>) {
    if let Some(action) = existing(handler, "httpGet") {
        default(action, "path", json!("/"));
        default(action, "scheme", json!("HTTP"));
    }
}

/// The tag `parsers.ParseImageName` reads: after the last `:` of the last path segment;
/// `latest` when neither tag nor digest is given.
fn image_tag(image: &str) -> &str {
    let (name, digest) = match image.split_once('@') {
        Some((name, _)) => (name, true),
        None => (image, false),
    };
    let last = name.rsplit('/').next().unwrap_or(name);
    match last.split_once(':') {
        Some((_, tag)) => tag,
        None if digest => "",
        None => "latest",
    }
}

/// File mode 0644, the default of Secret, ConfigMap, downward API and projected volumes.
const DEFAULT_MODE: i64 = 0o644;

/// `SetDefaults_Volume` (no source: an `emptyDir`) and the defaults of its source.
fn volume(volume: &mut Map<String, Value>) {
    if volume.keys().all(|key| key == "name") {
        volume.insert("emptyDir".into(), json!({}));
    }
    for source in ["secret", "configMap", "downwardAPI", "projected"] {
        if let Some(source) = existing(volume, source) {
            default(source, "defaultMode", json!(DEFAULT_MODE));
        }
    }
    if let Some(downward) = existing(volume, "downwardAPI") {
        for item in each(downward, "items") {
            if let Some(field_ref) = existing(item, "fieldRef") {
                default(field_ref, "apiVersion", json!("v1"));
            }
        }
    }
    if let Some(projected) = existing(volume, "projected") {
        for source in each(projected, "sources") {
            if let Some(token) = existing(source, "serviceAccountToken") {
                default(token, "expirationSeconds", json!(3600));
            }
        }
    }
    if let Some(host_path) = existing(volume, "hostPath") {
        default(host_path, "type", json!(""));
    }
    if let Some(spec) = existing(volume, "ephemeral")
        .and_then(|e| existing(e, "volumeClaimTemplate"))
        .and_then(|t| existing(t, "spec"))
    {
        super::core::claim_spec(spec);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_tags_as_kubernetes_parses_them() {
        assert_eq!(image_tag("nginx"), "latest");
        assert_eq!(image_tag("nginx:1.27"), "1.27");
        assert_eq!(image_tag("localhost:5000/nginx"), "latest");
        assert_eq!(image_tag("localhost:5000/nginx:latest"), "latest");
        assert_eq!(image_tag("nginx@sha256:abc"), "");
        assert_eq!(image_tag("nginx:1.27@sha256:abc"), "1.27");
    }
}
