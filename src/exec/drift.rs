//! Drift: whether a live object still holds what Pequod applied to it.
//!
//! Comparing the rendered object with the live one cannot work: the API server normalizes
//! what it stores (`cpu: 0.5` becomes `500m`, defaults are filled in, lists are merged by
//! their keys), so the two never match and every pass would apply again. Instead Pequod
//! looks at what server-side apply records: the fields its field manager owns
//! (`metadata.managedFields`, FieldsV1) and the values the live object has there. Right
//! after a write that is a fingerprint of exactly what Pequod set, as the server stored it;
//! a later fingerprint that differs means someone changed one of those values, or took a
//! field over (it left Pequod's set). Fields Pequod does not set, defaults the server
//! filled in, and the spelling of values are not part of it.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::api::FIELD_MANAGER;

/// The fingerprint of the fields Pequod owns by server-side apply in `live`, with their
/// values; `None` when Pequod has applied none of them (no managedFields entry).
pub fn fingerprint(live: &Value) -> Option<String> {
    let fields = applied_fields(live)?;
    let owned = project(live, fields);
    let canonical = serde_json::json!({"fields": fields, "values": owned}).to_string();
    Some(format!(
        "sha256:{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    ))
}

/// The FieldsV1 set of the fields Pequod owns by server-side apply in `live`.
pub fn applied_fields(live: &Value) -> Option<&Value> {
    let entries = live.pointer("/metadata/managedFields")?.as_array()?;
    let entry = entries.iter().find(|entry| {
        entry.get("manager").and_then(Value::as_str) == Some(FIELD_MANAGER)
            && entry.get("operation").and_then(Value::as_str) == Some("Apply")
            && entry
                .get("subresource")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
    })?;
    entry.get("fieldsV1")
}

/// The union of two FieldsV1 sets.
pub fn union_of_fields(a: &Value, b: &Value) -> Value {
    match (a.as_object(), b.as_object()) {
        (Some(a), Some(b)) => {
            let mut union = a.clone();
            for (path, children) in b {
                let merged = match union.get(path) {
                    Some(existing) => union_of_fields(existing, children),
                    None => children.clone(),
                };
                union.insert(path.clone(), merged);
            }
            Value::Object(union)
        }
        (Some(_), None) => a.clone(),
        _ => b.clone(),
    }
}

/// `object` cut down to the fields of a FieldsV1 set, in the object's own shape: maps keep
/// the owned keys, lists the owned elements in their order, an owned leaf its whole value.
/// What a reader compares to see what an apply of those fields changes.
pub fn restrict(object: &Value, fields: &Value) -> Value {
    let Some(fields) = fields.as_object().filter(|fields| !fields.is_empty()) else {
        return object.clone();
    };
    match object {
        Value::Object(map) => Value::Object(
            fields
                .iter()
                .filter_map(|(path, children)| {
                    let name = path.strip_prefix("f:")?;
                    Some((name.to_string(), restrict(map.get(name)?, children)))
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .filter_map(|(index, item)| {
                    let children = fields
                        .iter()
                        .find(|(path, _)| owns_element(path, index, item))?
                        .1;
                    Some(restrict(item, children))
                })
                .collect(),
        ),
        leaf => leaf.clone(),
    }
}

/// Whether the FieldsV1 path `path` names the list element `item` at `index`.
fn owns_element(path: &str, index: usize, item: &Value) -> bool {
    if let Some(key) = path.strip_prefix("k:") {
        serde_json::from_str::<Map<String, Value>>(key).is_ok_and(|key| {
            key.iter()
                .all(|(field, value)| item.get(field) == Some(value))
        })
    } else if let Some(value) = path.strip_prefix("v:") {
        serde_json::from_str::<Value>(value).is_ok_and(|value| &value == item)
    } else if let Some(wanted) = path.strip_prefix("i:") {
        wanted.parse::<usize>() == Ok(index)
    } else {
        false
    }
}

/// The values of `live` at the fields of a FieldsV1 set: `f:<name>` a field of a map,
/// `k:<json>` the element of a list with those key fields, `v:<json>` an element of a set,
/// `i:<n>` a list index, `.` the element itself. Missing values project to null, so a
/// field that disappeared changes the projection.
fn project(live: &Value, fields: &Value) -> Value {
    let Some(fields) = fields.as_object() else {
        return Value::Null;
    };
    if fields.is_empty() {
        // A leaf: the whole value is owned.
        return live.clone();
    }
    let mut projected = Map::new();
    for (path, children) in fields {
        let found = if let Some(name) = path.strip_prefix("f:") {
            live.get(name)
        } else if let Some(key) = path.strip_prefix("k:") {
            serde_json::from_str::<Map<String, Value>>(key)
                .ok()
                .and_then(|key| element_with(live, &key))
        } else if let Some(value) = path.strip_prefix("v:") {
            let wanted: Option<Value> = serde_json::from_str(value).ok();
            live.as_array()
                .and_then(|items| items.iter().find(|item| Some(*item) == wanted.as_ref()))
        } else if let Some(index) = path.strip_prefix("i:") {
            index
                .parse::<usize>()
                .ok()
                .and_then(|i| live.as_array()?.get(i))
        } else {
            // `.`: the element itself is owned; its fields are listed beside it.
            continue;
        };
        let value = found.map_or(Value::Null, |found| project(found, children));
        projected.insert(path.clone(), value);
    }
    Value::Object(projected)
}

/// The element of the list `live` whose fields have the values of `key`.
fn element_with<'a>(live: &'a Value, key: &Map<String, Value>) -> Option<&'a Value> {
    live.as_array()?.iter().find(|item| {
        key.iter()
            .all(|(field, value)| item.get(field) == Some(value))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn applied(spec: Value, fields: Value) -> Value {
        json!({
            "metadata": {"managedFields": [
                {"manager": "kubectl-edit", "operation": "Update", "fieldsV1": {"f:spec": {"f:paused": {}}}},
                {"manager": "pequod", "operation": "Apply", "fieldsV1": fields},
            ]},
            "spec": spec,
        })
    }

    fn deployment_fields() -> Value {
        json!({"f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {
            "k:{\"name\":\"web\"}": {".": {}, "f:image": {}, "f:name": {},
                "f:resources": {"f:requests": {"f:cpu": {}}}}}}}}})
    }

    fn deployment(replicas: i64, image: &str, extra: Value) -> Value {
        let mut spec = json!({"replicas": replicas, "strategy": {"type": "RollingUpdate"},
            "template": {"spec": {"containers": [
                {"name": "sidecar", "image": "envoy:1"},
                {"name": "web", "image": image, "imagePullPolicy": "IfNotPresent",
                 "resources": {"requests": {"cpu": "500m"}}}]}}});
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        applied(spec, deployment_fields())
    }

    #[test]
    fn defaults_and_fields_of_others_are_not_drift() {
        let before = fingerprint(&deployment(2, "web:1", json!({}))).expect("applied");
        // Another manager's field and a default the server filled in: still the same.
        let after = fingerprint(&deployment(
            2,
            "web:1",
            json!({"paused": true, "progressDeadlineSeconds": 600}),
        ));
        assert_eq!(Some(before), after);
    }

    #[test]
    fn a_changed_value_or_a_field_taken_over_is_drift() {
        let before = fingerprint(&deployment(2, "web:1", json!({})));
        assert_ne!(before, fingerprint(&deployment(5, "web:1", json!({}))));
        assert_ne!(before, fingerprint(&deployment(2, "web:2", json!({}))));
        let mut taken = deployment(2, "web:1", json!({}));
        taken["metadata"]["managedFields"][1]["fieldsV1"]["f:spec"]
            .as_object_mut()
            .expect("spec fields")
            .remove("f:replicas");
        assert_ne!(before, fingerprint(&taken));
    }

    #[test]
    fn list_elements_are_found_by_their_keys_and_sets_by_value() {
        let fields = json!({"f:spec": {"f:ports": {"k:{\"port\":80,\"protocol\":\"TCP\"}": {".": {}, "f:port": {}}},
                                       "f:finalizers": {"v:\"a\"": {}}}});
        let one = applied(
            json!({"ports": [{"port": 443, "protocol": "TCP"}, {"port": 80, "protocol": "TCP", "name": "http"}],
                                 "finalizers": ["b", "a"]}),
            fields.clone(),
        );
        let reordered = applied(
            json!({"ports": [{"port": 80, "protocol": "TCP", "name": "web"}, {"port": 443, "protocol": "TCP"}],
                                       "finalizers": ["a", "b"]}),
            fields.clone(),
        );
        assert_eq!(fingerprint(&one), fingerprint(&reordered));
        let gone = applied(
            json!({"ports": [{"port": 443, "protocol": "TCP"}], "finalizers": ["b"]}),
            fields,
        );
        assert_ne!(fingerprint(&one), fingerprint(&gone));
    }

    #[test]
    fn nothing_applied_has_no_fingerprint() {
        assert_eq!(fingerprint(&json!({"metadata": {}})), None);
        let updated_only = json!({"metadata": {"managedFields": [
            {"manager": "pequod", "operation": "Update", "fieldsV1": {"f:data": {}}}]}});
        assert_eq!(fingerprint(&updated_only), None);
    }

    #[test]
    fn an_object_restricted_to_its_applied_fields_keeps_its_shape() {
        let live = applied(
            json!({"replicas": 2, "paused": true, "template": {"spec": {"containers": [
                {"name": "sidecar", "image": "envoy"},
                {"name": "web", "image": "web:2", "ports": [{"containerPort": 80}]},
            ]}}}),
            json!({"f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {
                "k:{\"name\":\"web\"}": {".": {}, "f:name": {}, "f:image": {}},
            }}}}}),
        );
        let fields = applied_fields(&live).expect("pequod's entry");
        assert_eq!(
            restrict(&live, fields),
            json!({"spec": {"replicas": 2, "template": {"spec": {"containers": [
                {"name": "web", "image": "web:2"},
            ]}}}})
        );
        let more = json!({"f:spec": {"f:paused": {}}});
        let union = union_of_fields(fields, &more);
        assert_eq!(restrict(&live, &union)["spec"]["paused"], json!(true));
        assert_eq!(restrict(&live, &union)["spec"]["replicas"], json!(2));
    }
}
