//! `meta.k8s.io/v1 Table` responses: what `kubectl get` prints. The server decides the
//! columns (CRD printer columns, or the built-in ones below) and humanises ages itself.

use crate::resources::{PrinterColumn, ResourceType};
use serde_json::{Value, json};
use serde_json_path::JsonPath;

/// Whether the `Accept` header asks for a Table.
pub fn wants_table(accept: &str) -> bool {
    accept
        .split(',')
        .any(|media| media.contains("as=Table") && media.contains("g=meta.k8s.io"))
}

/// The `Content-Type` of a Table response.
pub const CONTENT_TYPE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";

fn column(
    name: &str,
    type_: &str,
    format: &str,
    description: &str,
    priority: i64,
    path: &str,
) -> PrinterColumn {
    PrinterColumn {
        name: name.into(),
        type_: type_.into(),
        format: format.into(),
        description: description.into(),
        priority,
        json_path: path.into(),
    }
}

/// The columns of `ty`: Name, then the CRD's printer columns (or the built-in ones), then Age
/// unless a CRD declares its own.
fn columns(ty: &ResourceType) -> Vec<PrinterColumn> {
    let name = column(
        "Name",
        "string",
        "name",
        "Name must be unique within a namespace.",
        0,
        ".metadata.name",
    );
    let age = column(
        "Age",
        "date",
        "",
        "CreationTimestamp is a timestamp representing the server time when this object was created.",
        0,
        ".metadata.creationTimestamp",
    );
    let mut all = vec![name];
    if ty.is_custom() {
        all.extend(ty.columns.iter().cloned());
        if ty.columns.is_empty() {
            all.push(age);
        }
        return all;
    }
    match (ty.gr.group.as_str(), ty.gr.resource.as_str()) {
        ("apps", "deployments") => {
            all.push(column(
                "Ready",
                "string",
                "",
                "Number of the pod with ready state",
                0,
                "READY",
            ));
            all.push(column("Up-to-date", "string", "", "Total number of non-terminated pods targeted by this deployment that have the desired template spec.", 0, ".status.updatedReplicas"));
            all.push(column("Available", "string", "", "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.", 0, ".status.availableReplicas"));
        }
        ("apps", "statefulsets") => {
            all.push(column(
                "Ready",
                "string",
                "",
                "Number of the pod with ready state",
                0,
                "READY",
            ));
        }
        ("", "namespaces") => {
            all.push(column(
                "Status",
                "string",
                "",
                "The status of the namespace",
                0,
                ".status.phase",
            ));
        }
        ("", "services") => {
            all.push(column(
                "Type",
                "string",
                "",
                "The type of the service",
                0,
                ".spec.type",
            ));
            all.push(column(
                "Cluster-IP",
                "string",
                "",
                "The cluster IP of the service",
                0,
                ".spec.clusterIP",
            ));
        }
        ("", "secrets") => {
            all.push(column(
                "Type",
                "string",
                "",
                "The type of the secret",
                0,
                ".type",
            ));
        }
        _ => {}
    }
    all.push(age);
    all
}

/// The value of one cell.
fn cell(column: &PrinterColumn, object: &Value) -> Value {
    if column.json_path == "READY" {
        let count = |field: &str| {
            object
                .pointer(&format!("/status/{field}"))
                .and_then(Value::as_i64)
                .unwrap_or(0)
        };
        let desired = object
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        return json!(format!("{}/{desired}", count("readyReplicas")));
    }
    let value = JsonPath::parse(&format!("${}", column.json_path))
        .ok()
        .and_then(|path| path.query(object).all().first().map(|v| (*v).clone()));
    match (column.type_.as_str(), value) {
        ("date", Some(Value::String(time))) => json!(age(&time)),
        ("string", None) if column.json_path.ends_with("Replicas") => json!(0),
        (_, Some(value)) => value,
        (_, None) => Value::Null,
    }
}

/// How long ago `timestamp` was, as Kubernetes prints it (`5s`, `3m20s`, `4h`, `2d3h`).
pub fn age(timestamp: &str) -> String {
    let Ok(then) = timestamp.parse::<jiff::Timestamp>() else {
        return "<unknown>".into();
    };
    let seconds = jiff::Timestamp::now().as_second() - then.as_second();
    human_duration(seconds)
}

/// Kubernetes' `duration.HumanDuration` on a number of seconds.
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let days = (hours / 24) % 365;
        return if days == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{days}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// The Table of `objects` (already in the requested version).
pub fn table(
    ty: &ResourceType,
    objects: &[Value],
    resource_version: Option<String>,
    continue_token: Option<String>,
) -> Value {
    let columns = columns(ty);
    let definitions: Vec<Value> = columns
        .iter()
        .map(|c| {
            json!({"name": c.name, "type": c.type_, "format": c.format,
                   "description": c.description, "priority": c.priority})
        })
        .collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|object| {
            let cells: Vec<Value> = columns.iter().map(|c| cell(c, object)).collect();
            let mut metadata = object.get("metadata").cloned().unwrap_or(json!({}));
            if let Some(fields) = metadata.as_object_mut() {
                fields.remove("managedFields");
            }
            json!({
                "cells": cells,
                "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": metadata}
            })
        })
        .collect();
    let mut metadata = json!({});
    if let Some(rv) = resource_version {
        metadata["resourceVersion"] = json!(rv);
    }
    if let Some(token) = continue_token {
        metadata["continue"] = json!(token);
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": definitions,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Registry;

    #[test]
    fn human_durations() {
        let cases = [
            (-5, "<invalid>"),
            (-1, "0s"),
            (5, "5s"),
            (119, "119s"),
            (200, "3m20s"),
            (600, "10m"),
            (4 * 3600 + 60 * 7, "4h7m"),
            (30 * 3600, "30h"),
            (3 * 86400 + 3600 * 5, "3d5h"),
            (40 * 86400, "40d"),
            (3 * 365 * 86400 + 86400, "3y1d"),
        ];
        for (seconds, expected) in cases {
            assert_eq!(human_duration(seconds), expected, "{seconds}s");
        }
    }

    #[test]
    fn deployment_rows() {
        let registry = Registry::builtin();
        let ty = registry
            .lookup("apps", "v1", "deployments")
            .expect("built-in type");
        let deployment = json!({
            "metadata": {"name": "web", "creationTimestamp": "2020-01-01T00:00:00Z", "managedFields": []},
            "spec": {"replicas": 3},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}
        });
        let table = table(&ty, &[deployment], Some("7".into()), None);
        let names: Vec<&str> = table["columnDefinitions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert_eq!(names, ["Name", "Ready", "Up-to-date", "Available", "Age"]);
        let cells = &table["rows"][0]["cells"];
        assert_eq!(cells[0], "web");
        assert_eq!(cells[1], "2/3");
        assert_eq!(cells[2], 3);
        assert!(
            table["rows"][0]["object"]["metadata"]
                .get("managedFields")
                .is_none()
        );
    }

    #[test]
    fn crd_columns_use_json_path() {
        let column = column(
            "Ready",
            "string",
            "",
            "",
            0,
            ".status.conditions[?(@.type==\"Ready\")].status",
        );
        let object = json!({"status": {"conditions": [
            {"type": "Rendered", "status": "True"}, {"type": "Ready", "status": "False"}
        ]}});
        assert_eq!(cell(&column, &object), "False");
        assert_eq!(cell(&column, &json!({})), Value::Null);
    }
}
