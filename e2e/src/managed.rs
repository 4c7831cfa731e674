//! STUB (replaced by the real module)
use crate::schema::Schema;
use serde_json::Value;
pub enum Part {
    Main { status_subresource: bool },
    Status,
}
pub struct Writer<'a> {
    pub manager: &'a str,
    pub api_version: &'a str,
    pub part: Part,
    pub time: &'a str,
    pub schema: Schema<'a>,
}
pub struct Conflict {
    pub manager: String,
    pub field: String,
}
impl Conflict {
    pub fn cause_message(&self) -> String {
        String::new()
    }
}
pub struct ApplyConflict {
    pub conflicts: Vec<Conflict>,
}
impl ApplyConflict {
    pub fn message(&self) -> String {
        String::new()
    }
}
#[derive(Debug, thiserror::Error)]
#[error("x")]
pub struct ManagedFieldsError;
pub enum ApplyError {
    Conflict(ApplyConflict),
    Invalid(ManagedFieldsError),
}
pub fn apply(
    _live: Option<&Value>,
    applied: &Value,
    _w: &Writer,
    _force: bool,
) -> Result<Value, ApplyError> {
    Ok(applied.clone())
}
pub fn update(_old: Option<&Value>, new: Value, _w: &Writer) -> Result<Value, ManagedFieldsError> {
    Ok(new)
}
