//! `pequod crds`: valid CustomResourceDefinitions with structural schemas, status
//! subresources, short names and printer columns.

mod common;

use serde_json::Value;

fn crds() -> Vec<Value> {
    common::yaml_documents(&common::pequod_ok(&["crds"]))
}

#[test]
fn crds_validate_against_the_customresourcedefinition_schema() {
    let crds = crds();
    assert_eq!(crds.len(), 2);
    for crd in &crds {
        assert_eq!(
            common::schema_errors(crd),
            Vec::<String>::new(),
            "{}",
            crd["metadata"]["name"]
        );
    }
    // The validator is strict: a misspelt field is reported with its path.
    let mut typo = crds[0].clone();
    typo["spec"]["scopee"] = Value::String("Namespaced".into());
    let errors = common::schema_errors(&typo);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with("/spec: "), "{errors:?}");
    assert!(errors[0].contains("scopee"), "{errors:?}");
}

#[test]
fn crds_declare_names_status_and_printer_columns() {
    let crds = crds();
    let summary: Vec<(String, String, String, Value, Vec<String>)> = crds
        .iter()
        .map(|crd| {
            let version = &crd["spec"]["versions"][0];
            let columns = version["additionalPrinterColumns"]
                .as_array()
                .expect("printer columns")
                .iter()
                .map(|c| {
                    format!(
                        "{}={}",
                        c["name"].as_str().unwrap_or(""),
                        c["jsonPath"].as_str().unwrap_or("")
                    )
                })
                .collect();
            (
                crd["metadata"]["name"].as_str().unwrap_or("").to_string(),
                crd["spec"]["scope"].as_str().unwrap_or("").to_string(),
                crd["spec"]["names"]["shortNames"][0]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                version["subresources"].clone(),
                columns,
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                "transforms.platform.pequod.io".to_string(),
                "Namespaced".to_string(),
                "tf".to_string(),
                serde_json::json!({"status": {}}),
                vec![
                    "Module=.status.resolvedModule.ref".to_string(),
                    "Ready=.status.conditions[?(@.type==\"Ready\")].status".to_string(),
                    "Pending=.status.pendingModule.reason".to_string(),
                    "Age=.metadata.creationTimestamp".to_string(),
                ],
            ),
            (
                "resourcegraphs.platform.pequod.io".to_string(),
                "Namespaced".to_string(),
                "rg".to_string(),
                serde_json::json!({"status": {}}),
                vec![
                    "Phase=.status.phase".to_string(),
                    "Ready=.status.summary.readyText".to_string(),
                    "Age=.metadata.creationTimestamp".to_string(),
                ],
            ),
        ]
    );
}

/// The rules of a structural schema (Kubernetes "Specifying a structural schema"): every node
/// has a type unless it preserves unknown fields or is int-or-string; no `$ref`; no logical
/// junctors (our schemas need none); `nullable` only beside a type.
fn structural_errors(schema: &Value, path: &str, errors: &mut Vec<String>) {
    let Some(node) = schema.as_object() else {
        errors.push(format!("{path}: schema is not an object"));
        return;
    };
    let free = node.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true))
        || node.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    if !free && !node.contains_key("type") {
        errors.push(format!("{path}: no type"));
    }
    for forbidden in [
        "$ref",
        "$schema",
        "definitions",
        "$defs",
        "anyOf",
        "oneOf",
        "allOf",
        "not",
    ] {
        if node.contains_key(forbidden) {
            errors.push(format!("{path}: uses {forbidden}"));
        }
    }
    if let Some(properties) = node.get("properties").and_then(Value::as_object) {
        for (name, child) in properties {
            structural_errors(child, &format!("{path}.{name}"), errors);
        }
    }
    if let Some(items) = node.get("items") {
        structural_errors(items, &format!("{path}[]"), errors);
    }
    if let Some(extra) = node.get("additionalProperties").filter(|v| v.is_object()) {
        structural_errors(extra, &format!("{path}{{}}"), errors);
    }
}

#[test]
fn crd_schemas_are_structural_and_documented() {
    for crd in crds() {
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        let mut errors = Vec::new();
        structural_errors(schema, "", &mut errors);
        assert_eq!(errors, Vec::<String>::new(), "{}", crd["metadata"]["name"]);
        assert!(
            schema["description"].as_str().is_some_and(|d| d.len() > 40),
            "root description for kubectl explain"
        );
        for field in ["spec", "status"] {
            assert!(
                schema["properties"][field]["description"].is_string(),
                "{field} documented"
            );
        }
    }
}
