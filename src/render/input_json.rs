//! The input handed to Nickel as pretty-printed JSON, with a map from byte ranges back to
//! input paths, so that a contract error located in that file can name `input.backup.schedule`
//! instead of only the last field.

use serde_json::Value;

/// Pretty JSON text plus the byte span of every value in it.
#[derive(Debug, Clone)]
pub struct SpannedJson {
    text: String,
    spans: Vec<(usize, usize, String)>,
}

impl SpannedJson {
    /// Renders `value` (object keys in sorted order), recording spans under the path `root`.
    pub fn new(value: &Value, root: &str) -> SpannedJson {
        let mut out = SpannedJson {
            text: String::new(),
            spans: Vec::new(),
        };
        out.write(value, root.to_string(), 0);
        out.text.push('\n');
        out
    }

    /// The JSON text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The path of the innermost value whose text contains byte `offset`.
    pub fn path_at(&self, offset: usize) -> Option<&str> {
        self.spans
            .iter()
            .filter(|(start, end, _)| *start <= offset && offset < *end)
            .min_by_key(|(start, end, _)| end - start)
            .map(|(_, _, path)| path.as_str())
    }

    fn write(&mut self, value: &Value, path: String, indent: usize) {
        let start = self.text.len();
        match value {
            Value::Object(map) if !map.is_empty() => {
                self.text.push_str("{\n");
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                for (i, key) in keys.iter().enumerate() {
                    self.pad(indent + 1);
                    self.text.push_str(&quote(key));
                    self.text.push_str(": ");
                    self.write(&map[key.as_str()], child_path(&path, key), indent + 1);
                    if i + 1 < keys.len() {
                        self.text.push(',');
                    }
                    self.text.push('\n');
                }
                self.pad(indent);
                self.text.push('}');
            }
            Value::Array(items) if !items.is_empty() => {
                self.text.push_str("[\n");
                for (i, item) in items.iter().enumerate() {
                    self.pad(indent + 1);
                    self.write(item, format!("{path}[{i}]"), indent + 1);
                    if i + 1 < items.len() {
                        self.text.push(',');
                    }
                    self.text.push('\n');
                }
                self.pad(indent);
                self.text.push(']');
            }
            scalar => self.text.push_str(&scalar.to_string()),
        }
        self.spans.push((start, self.text.len(), path));
    }

    fn pad(&mut self, indent: usize) {
        for _ in 0..indent {
            self.text.push_str("  ");
        }
    }
}

fn quote(key: &str) -> String {
    Value::String(key.to_string()).to_string()
}

/// `a.b` for identifier-like keys, `a["x.y/z"]` otherwise.
fn child_path(parent: &str, key: &str) -> String {
    let simple = key
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if simple {
        format!("{parent}.{key}")
    } else {
        format!("{parent}[{}]", quote(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn maps_offsets_to_nested_paths() {
        let value = json!({"name": "db", "backup": {"schedule": "bad", "tags": ["a", "b"]},
                           "labels": {"app.kubernetes.io/name": "x"}});
        let spanned = SpannedJson::new(&value, "input");
        let parsed: Value = serde_json::from_str(spanned.text()).expect("valid JSON");
        assert_eq!(parsed, value);
        let at = |needle: &str| {
            let offset = spanned.text().find(needle).expect("present");
            spanned.path_at(offset).map(str::to_string)
        };
        assert_eq!(at("\"bad\"").as_deref(), Some("input.backup.schedule"));
        assert_eq!(at("\"b\"").as_deref(), Some("input.backup.tags[1]"));
        assert_eq!(
            at("\"x\"").as_deref(),
            Some("input.labels[\"app.kubernetes.io/name\"]")
        );
        assert_eq!(at("{").as_deref(), Some("input"));
    }
}
