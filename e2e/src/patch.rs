//! STUB
use crate::schema::Schema;
use serde_json::Value;
#[derive(Debug, thiserror::Error)]
#[error("x")]
pub struct PatchError;
pub fn merge_patch(o: &Value, _p: &Value) -> Result<Value, PatchError> {
    Ok(o.clone())
}
pub fn json_patch(o: &Value, _p: &Value) -> Result<Value, PatchError> {
    Ok(o.clone())
}
pub fn strategic_merge_patch(o: &Value, _p: &Value, _s: Schema) -> Result<Value, PatchError> {
    Ok(o.clone())
}
