//! STUB
use serde_json::Value;
#[derive(Debug, thiserror::Error)]
pub enum SelectorError {
    #[error("field label not supported: {0}")]
    UnsupportedField(String),
}
#[derive(Debug, Clone)]
pub struct LabelSelector;
impl LabelSelector {
    pub fn parse(_s: &str) -> Result<Self, SelectorError> {
        Ok(LabelSelector)
    }
    pub fn matches_object(&self, _o: &Value) -> bool {
        true
    }
}
#[derive(Debug, Clone)]
pub struct FieldSelector(Vec<String>);
impl FieldSelector {
    pub fn parse(_s: &str) -> Result<Self, SelectorError> {
        Ok(FieldSelector(vec![]))
    }
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|s| s.as_str())
    }
    pub fn matches(&self, _o: &Value) -> bool {
        true
    }
}
