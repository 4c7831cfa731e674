//! The graph model's integrity checks and its dependency DAG (petgraph): what every
//! rendered graph passes before it is written anywhere, and the orderings the executor and
//! the deletion of a graph follow.

mod dag;

pub use dag::{Dag, IntegrityError, IntegrityErrors};

use serde_json::Value;

/// How a JSON value is named in messages: "a mapping", "a list", "a string", ...
pub fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}
