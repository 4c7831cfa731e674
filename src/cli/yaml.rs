//! YAML output that YAML 1.1 readers (kubectl, go-yaml v2) read back as the same strings.
//!
//! serde_yaml writes YAML 1.2, where `on`, `off`, `yes`, `no`, `y` and `n` are plain
//! strings and so are left unquoted. kubectl parses YAML 1.1, where they are booleans: a
//! PostgreSQL parameter `wal_compression: on` would reach the API server as `true`. Such
//! scalars are quoted here, and so are the other plain scalars YAML 1.1 resolves to
//! non-strings: timestamps (`2026-05-01T10:00:00Z`) and base-60 numbers (`12:30`).

use serde::Serialize;

/// Scalars that YAML 1.1 resolves to booleans.
const YAML11_BOOLEANS: &[&str] = &[
    "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "on", "On", "ON", "off", "Off",
    "OFF",
];

/// Serializes `value` as YAML, quoting the scalars YAML 1.1 would read as booleans.
pub fn to_string<T: Serialize>(value: &T) -> Result<String, serde_yaml::Error> {
    Ok(quote_yaml11_booleans(&serde_yaml::to_string(value)?))
}

fn quote(token: &str) -> String {
    format!("'{}'", token.replace('\'', "''"))
}

fn is_ambiguous(token: &str) -> bool {
    YAML11_BOOLEANS.contains(&token) || is_yaml11_timestamp(token) || is_yaml11_number(token)
}

/// `YYYY-M-D`, optionally followed by a time: YAML 1.1's timestamp.
fn is_yaml11_timestamp(token: &str) -> bool {
    let date = token.split(['T', 't', ' ']).next().unwrap_or("");
    let parts: Vec<&str> = date.split('-').collect();
    let digits = |s: &str, min: usize, max: usize| {
        (min..=max).contains(&s.len()) && s.chars().all(|c| c.is_ascii_digit())
    };
    parts.len() == 3 && digits(parts[0], 4, 4) && digits(parts[1], 1, 2) && digits(parts[2], 1, 2)
}

/// `1_000`, `+0_7`, `1:20`, `10:00:00`: YAML 1.1 numbers may contain underscores, and
/// base-60 integers and floats use colons.
fn is_yaml11_number(token: &str) -> bool {
    let body = token.strip_prefix(['-', '+']).unwrap_or(token);
    body.starts_with(|c: char| c.is_ascii_digit())
        && body.contains([':', '_'])
        && body
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, ':' | '_' | '.'))
}

/// Rewrites plain scalars in key and value positions of serde_yaml's block output. Lines
/// inside block scalars (`|`, `>`) are content and left alone.
fn quote_yaml11_booleans(yaml: &str) -> String {
    let mut out = String::with_capacity(yaml.len());
    let mut block_indent: Option<usize> = None;
    for line in yaml.split_inclusive('\n') {
        let body = line.trim_end_matches('\n');
        let indent = body.len() - body.trim_start().len();
        if let Some(parent) = block_indent {
            if body.trim().is_empty() || indent > parent {
                out.push_str(line);
                continue;
            }
            block_indent = None;
        }
        let rewritten = rewrite_line(body);
        if value_token(&rewritten).is_some_and(is_block_header) {
            block_indent = Some(header_column(body));
        }
        out.push_str(&rewritten);
        if line.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

/// The column that owns a block scalar started on `line`: its key's column, past any `- `
/// item markers (`- script: |` owns lines indented deeper than `script`), or the last dash
/// for a bare `- |`. Content lines are indented deeper than this column.
fn header_column(line: &str) -> usize {
    let indent = line.len() - line.trim_start().len();
    let mut column = indent;
    let mut rest = &line[indent..];
    while let Some(item) = rest.strip_prefix("- ") {
        if !item.contains(": ") && !item.ends_with(':') {
            return column;
        }
        column += 2;
        rest = item;
    }
    column
}

/// The scalar a line ends with: after `key: ` or the last `- `.
fn value_token(line: &str) -> Option<&str> {
    let mut rest = line.trim_start();
    while let Some(item) = rest.strip_prefix("- ") {
        rest = item;
    }
    match rest.split_once(": ") {
        Some((_, value)) => Some(value),
        None if rest.ends_with(':') => None,
        None => Some(rest),
    }
}

/// A block scalar header: `|` or `>`, an optional indentation digit, an optional chomping
/// indicator (`|`, `|-`, `|2+`, `>-`, ...).
fn is_block_header(token: &str) -> bool {
    let mut chars = token.chars();
    if !matches!(chars.next(), Some('|' | '>')) {
        return false;
    }
    let rest: Vec<char> = chars.collect();
    match rest.as_slice() {
        [] => true,
        [c] => c.is_ascii_digit() && *c != '0' || matches!(c, '-' | '+'),
        [d, c] => d.is_ascii_digit() && *d != '0' && matches!(c, '-' | '+'),
        _ => false,
    }
}

/// Splits `key: value` (or `key:`), skipping over a quoted key that may contain `: `.
fn split_key(rest: &str) -> (&str, Option<&str>) {
    let search_from = match rest.chars().next() {
        Some(quote @ ('\'' | '"')) => rest[1..].find(quote).map_or(0, |end| end + 2),
        _ => 0,
    };
    match rest[search_from..].find(": ") {
        Some(at) => {
            let at = search_from + at;
            (&rest[..at], Some(&rest[at + 2..]))
        }
        None => (rest.strip_suffix(':').unwrap_or(rest), None),
    }
}

fn rewrite_line(body: &str) -> String {
    let indent = body.len() - body.trim_start().len();
    let (prefix, mut rest) = body.split_at(indent);
    let mut out = prefix.to_string();
    while let Some(item) = rest.strip_prefix("- ") {
        out.push_str("- ");
        rest = item;
    }
    if is_ambiguous(rest) {
        out.push_str(&quote(rest));
        return out;
    }
    let (key, value) = split_key(rest);
    let key_is_plain = !key.starts_with(['\'', '"']);
    if key_is_plain && is_ambiguous(key) {
        out.push_str(&quote(key));
    } else {
        out.push_str(key);
    }
    match value {
        Some(value) => {
            out.push_str(": ");
            if is_ambiguous(value) {
                out.push_str(&quote(value));
            } else {
                out.push_str(value);
            }
        }
        None if rest.ends_with(':') => out.push(':'),
        None => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn yaml11_booleans_are_quoted_everywhere_but_block_content() {
        let value = json!({
            "parameters": {"wal_compression": "on", "fsync": "off", "shared_buffers": "128MB"},
            "on": "trigger",
            "list": ["yes", "n", "maybe", "true"],
            "nested": [{"value": "Y"}],
            "script": "line one\n  on\nno\n",
            "indented": "  on\nno",
            "pipe": "a |",
            "when": "2026-05-01T10:00:00Z",
            "at": "12:30",
            "version": "1.2.3",
            "items": [{"script": "a\nb", "value": "on"}, "x"],
            "a: b": "off",
            "note": "2026-05-01 it's done",
            "thousand": "1_000",
            "after": "no",
        });
        let yaml = to_string(&value).expect("serializable");
        assert_eq!(
            yaml,
            "'a: b': 'off'\nafter: 'no'\nat: '12:30'\nindented: |2-\n    on\n  no\nitems:\n- script: |-\n    a\n    b\n  value: 'on'\n- x\nlist:\n- 'yes'\n- 'n'\n- maybe\n- 'true'\nnested:\n- value: 'Y'\nnote: '2026-05-01 it''s done'\n'on': trigger\nparameters:\n  fsync: 'off'\n  shared_buffers: 128MB\n  wal_compression: 'on'\npipe: a |\nscript: |\n  line one\n    on\n  no\nthousand: '1_000'\nversion: 1.2.3\nwhen: '2026-05-01T10:00:00Z'\n"
        );
        let back: serde_json::Value = serde_yaml::from_str(&yaml).expect("valid YAML");
        assert_eq!(back, value);
    }
}
