//! Drift: whether a live object still holds what Pequod applied to it.

use serde_json::Value;

/// Whether the live object has drifted from what was applied: some field `desired` sets
/// has another value in `live`. Fields the server or other managers added are ignored, and
/// so are values the server drops when they are empty (`null`, `{}`, `[]`) and a Secret's
/// write-only `stringData`.
pub fn drifted(live: &Value, desired: &Value) -> bool {
    let secret = desired.get("kind").and_then(Value::as_str) == Some("Secret")
        && desired.get("apiVersion").and_then(Value::as_str) == Some("v1");
    if secret && desired.get("stringData").is_some() {
        let mut desired = desired.clone();
        if let Some(fields) = desired.as_object_mut() {
            fields.remove("stringData");
        }
        return !contains(live, &desired);
    }
    !contains(live, desired)
}

/// Whether `value` sets nothing the server keeps: null, `[]`, or a map of such values.
fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Object(fields) => fields.values().all(is_empty),
        Value::Array(items) => items.is_empty(),
        _ => false,
    }
}

fn contains(live: &Value, desired: &Value) -> bool {
    match (live, desired) {
        // An applied null sets nothing.
        (_, Value::Null) => true,
        (Value::Object(live), Value::Object(desired)) => {
            desired.iter().all(|(key, value)| match live.get(key) {
                Some(found) => contains(found, value),
                None => is_empty(value),
            })
        }
        (Value::Array(live), Value::Array(desired)) => {
            live.len() == desired.len() && live.iter().zip(desired).all(|(l, d)| contains(l, d))
        }
        (Value::Number(live), Value::Number(desired)) => live.as_f64() == desired.as_f64(),
        (Value::Null, desired) => is_empty(desired),
        (live, desired) => live == desired,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn drift_ignores_added_fields_but_not_changed_ones() {
        let desired = json!({"spec": {"replicas": 2, "ports": [{"port": 80}]}});
        let live = json!({"spec": {"replicas": 2, "ports": [{"port": 80, "protocol": "TCP"}]},
                          "status": {}});
        assert!(!drifted(&live, &desired));
        let edited = json!({"spec": {"replicas": 5, "ports": [{"port": 80}]}});
        assert!(drifted(&edited, &desired));
        let fewer = json!({"spec": {"replicas": 2, "ports": []}});
        assert!(drifted(&fewer, &desired));
    }

    #[test]
    fn values_the_server_drops_are_no_drift() {
        let desired = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"annotations": {}},
                             "stringData": {"password": "x"}, "data": null, "spec": {"list": []}});
        let live = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {},
                          "data": {"password": "eA=="}});
        assert!(!drifted(&live, &desired));
    }
}
