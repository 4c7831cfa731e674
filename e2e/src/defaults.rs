//! The few defaults the API server fills in that clients (and server-side apply keys)
//! depend on: port protocols, Service ports and types, and a Secret's write-only
//! `stringData` merged into `data`.

use crate::resources::ResourceType;
use serde_json::{Value, json};

/// Fills the defaults of `object` (of type `ty`) that are not already set.
pub fn apply(ty: &ResourceType, object: &mut Value) {
    match (ty.gr.group.as_str(), ty.gr.resource.as_str()) {
        ("", "services") => service(object),
        ("", "secrets") => secret(object),
        ("apps", "deployments" | "statefulsets") | ("batch", "jobs") => {
            if let Some(pod) = object.pointer_mut("/spec/template/spec") {
                pod_spec(pod);
            }
        }
        ("batch", "cronjobs") => {
            if let Some(pod) = object.pointer_mut("/spec/jobTemplate/spec/template/spec") {
                pod_spec(pod);
            }
        }
        _ => {}
    }
}

fn pod_spec(pod: &mut Value) {
    for list in ["containers", "initContainers"] {
        let Some(containers) = pod.get_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        for container in containers {
            let Some(ports) = container.get_mut("ports").and_then(Value::as_array_mut) else {
                continue;
            };
            for port in ports.iter_mut().filter(|p| p.is_object()) {
                if port.get("protocol").is_none() {
                    port["protocol"] = json!("TCP");
                }
            }
        }
    }
}

fn service(object: &mut Value) {
    let Some(spec) = object.get_mut("spec").filter(|s| s.is_object()) else {
        return;
    };
    if spec.get("type").is_none() {
        spec["type"] = json!("ClusterIP");
    }
    let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) else {
        return;
    };
    for port in ports.iter_mut().filter(|p| p.is_object()) {
        if port.get("protocol").is_none() {
            port["protocol"] = json!("TCP");
        }
        if port.get("targetPort").is_none()
            && let Some(number) = port.get("port").cloned()
        {
            port["targetPort"] = number;
        }
    }
}

/// `stringData` is write-only: its entries replace those of `data`, base64-encoded, and it
/// is not stored.
fn secret(object: &mut Value) {
    use base64::Engine;
    let Some(fields) = object.as_object_mut() else {
        return;
    };
    let Some(Value::Object(strings)) = fields.remove("stringData") else {
        return;
    };
    let data = fields
        .entry("data")
        .or_insert_with(|| Value::Object(Default::default()));
    if !data.is_object() {
        *data = Value::Object(Default::default());
    }
    if let Some(data) = data.as_object_mut() {
        for (key, value) in strings {
            if let Some(text) = value.as_str() {
                let encoded = base64::engine::general_purpose::STANDARD.encode(text);
                data.insert(key, Value::String(encoded));
            }
        }
    }
}
