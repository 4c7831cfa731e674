//! Readiness predicates: the gates a node's live object must pass before its dependents run.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One readiness rule, evaluated against the live object.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ReadyPredicate {
    /// The object exists.
    Exists,
    /// `status.conditions[type=conditionType].status == status` (and `reason`, when given).
    #[serde(rename_all = "camelCase")]
    ConditionMatch {
        /// Condition type, e.g. `Ready`.
        condition_type: String,
        /// Expected status, `True` unless said otherwise.
        #[serde(default = "condition_true")]
        status: String,
        /// Expected reason, when it matters.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// A Deployment has rolled out: Available=True, its controller observed the current
    /// generation and every replica is updated.
    DeploymentAvailable,
    /// The value at a dotted path (e.g. `status.phase`) equals `value`.
    FieldEquals {
        /// Dotted path into the object, e.g. `status.phase`.
        path: String,
        /// The expected JSON value.
        value: Value,
    },
}

fn condition_true() -> String {
    "True".to_string()
}

/// The CRD schema must be structural, which an internally tagged enum's `oneOf` is not: the
/// predicate is described as one object whose `type` selects the fields that apply.
impl JsonSchema for ReadyPredicate {
    fn schema_name() -> Cow<'static, str> {
        "ReadyPredicate".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A readiness rule. `type` is Exists, ConditionMatch (conditionType, status, reason), DeploymentAvailable or FieldEquals (path, value).",
            "type": "object",
            "required": ["type"],
            "properties": {
                "type": {
                    "type": "string",
                    "enum": ["Exists", "ConditionMatch", "DeploymentAvailable", "FieldEquals"],
                    "description": "Which rule this is."
                },
                "conditionType": {"type": "string", "description": "ConditionMatch: the condition type, e.g. Ready."},
                "status": {"type": "string", "description": "ConditionMatch: the expected status (default True)."},
                "reason": {"type": "string", "description": "ConditionMatch: the expected reason, if any."},
                "path": {"type": "string", "description": "FieldEquals: dotted path into the object, e.g. status.phase."},
                "value": {"x-kubernetes-preserve-unknown-fields": true, "description": "FieldEquals: the expected value."}
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn predicates_round_trip_with_type_tag() {
        let parsed: Vec<ReadyPredicate> = serde_json::from_value(json!([
            {"type": "Exists"},
            {"type": "ConditionMatch", "conditionType": "Ready"},
            {"type": "FieldEquals", "path": "status.phase", "value": "active"}
        ]))
        .expect("valid predicates");
        assert_eq!(
            parsed[1],
            ReadyPredicate::ConditionMatch {
                condition_type: "Ready".into(),
                status: "True".into(),
                reason: None
            }
        );
        assert_eq!(
            serde_json::to_value(&parsed[2]).expect("serializable"),
            json!({"type": "FieldEquals", "path": "status.phase", "value": "active"})
        );
    }
}
