//! Reading YAML the way kubectl reads it, so that the JSON Pequod sees offline is the JSON
//! the API server stores.
//!
//! kubectl decodes YAML with sigs.k8s.io/yaml over go-yaml v2, which resolves plain (unquoted)
//! scalars by YAML 1.1 rules: `y`, `n`, `yes`, `no`, `on`, `off` (in three spellings each) are
//! booleans, `0777` is octal, `1_000` is a number, `0b101` is binary, `08` is the float 8; a
//! float without a fraction is written to JSON as an integer; map keys become strings
//! (`n:` is the key `"false"`, `0777:` the key `"511"`), a later duplicate key replaces an
//! earlier one, and merge keys (`<<`) apply in document order. Timestamps and base-60
//! numbers stay strings (go-yaml v2 keeps them as written when decoding into untyped
//! values). This module implements exactly that resolution over the events of a YAML
//! parser (which keeps each scalar's style), and reports every plain scalar whose meaning
//! under YAML 1.1 differs from YAML 1.2, so that an author learns why before the cluster
//! says so.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, ScanError, Span, Tag};
use serde_json::{Map, Number, Value};

/// A document read as kubectl reads it, and what a YAML 1.2 reader would have read
/// differently.
#[derive(Clone, Debug, PartialEq)]
pub struct Decoded {
    /// The document as JSON.
    pub value: Value,
    /// One line per key or value read differently under YAML 1.1 (kubectl) and YAML 1.2,
    /// and per key that replaced an earlier one.
    pub warnings: Vec<String>,
}

/// Why a document cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum YamlError {
    /// Not well-formed YAML.
    #[error("{0}")]
    Syntax(#[from] ScanError),
    /// Well-formed, but not something kubectl reads as one JSON object.
    #[error("line {line}: {message}")]
    Unsupported {
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// The deepest nesting read (a deeper document would exhaust the stack; serde_yaml stops
/// at the same depth).
const MAX_DEPTH: usize = 128;

/// The most values a document may expand to, aliases included (an alias of an alias of
/// ... is a "billion laughs").
const MAX_VALUES: usize = 1_000_000;

/// Reads the one YAML document in `text` as kubectl would.
pub fn from_str(text: &str) -> Result<Decoded, YamlError> {
    from_str_at(text, "")
}

/// Reads the one YAML document in `text` as kubectl would, as the value at `path` of a
/// larger document (warnings name their place from there).
pub fn from_str_at(text: &str, path: &str) -> Result<Decoded, YamlError> {
    let mut reader = Reader {
        events: Parser::new_from_str(text),
        anchors: HashMap::new(),
        warnings: Vec::new(),
        depth: 0,
        values: 0,
    };
    let mut value = None;
    loop {
        let (event, span) = reader.next()?;
        match event {
            Event::StreamEnd => break,
            Event::StreamStart | Event::DocumentStart(_) | Event::DocumentEnd | Event::Nothing => {}
            event => {
                if value.is_some() {
                    return Err(unsupported(
                        span,
                        "a second document: give one object per file",
                    ));
                }
                value = Some(reader.value(event, span, path)?);
            }
        }
    }
    Ok(Decoded {
        value: value.unwrap_or(Value::Null),
        warnings: reader.warnings,
    })
}

fn unsupported(span: Span, message: impl Into<String>) -> YamlError {
    YamlError::Unsupported {
        line: span.start.line(),
        message: message.into(),
    }
}

struct Reader<'a> {
    events: Parser<'a, saphyr_parser::StrInput<'a>>,
    /// Anchored values, with how many values each holds.
    anchors: HashMap<usize, (Value, usize)>,
    warnings: Vec<String>,
    /// How deep the value being read is.
    depth: usize,
    /// How many values were read so far, aliases expanded.
    values: usize,
}

impl<'a> Reader<'a> {
    fn next(&mut self) -> Result<(Event<'a>, Span), YamlError> {
        match self.events.next() {
            Some(Ok(next)) => Ok(next),
            Some(Err(error)) => Err(error.into()),
            None => Ok((Event::StreamEnd, Span::default())),
        }
    }

    /// Counts `count` more values; an error past [`MAX_VALUES`].
    fn count(&mut self, count: usize, span: Span) -> Result<(), YamlError> {
        self.values = self.values.saturating_add(count);
        if self.values > MAX_VALUES {
            return Err(unsupported(
                span,
                format!(
                    "the document expands to more than {MAX_VALUES} values (aliases and anchored copies included)"
                ),
            ));
        }
        Ok(())
    }

    /// The value that starts with `event`, at `path` (`spec.input.n`).
    fn value(&mut self, event: Event<'a>, span: Span, path: &str) -> Result<Value, YamlError> {
        if self.depth >= MAX_DEPTH {
            return Err(unsupported(
                span,
                format!("{}: nested deeper than {MAX_DEPTH} levels", shown(path)),
            ));
        }
        self.depth += 1;
        let value = self.nested(event, span, path);
        self.depth -= 1;
        value
    }

    fn nested(&mut self, event: Event<'a>, span: Span, path: &str) -> Result<Value, YamlError> {
        let before = self.values;
        self.count(1, span)?;
        let (value, anchor) = match event {
            Event::Scalar(text, style, anchor, tag) => {
                let scalar = scalar(&text, style, tag.as_deref(), span)?;
                if style == ScalarStyle::Plain && tag.is_none() {
                    self.warn_value(&text, &scalar, path);
                }
                (scalar.into_json(span)?, anchor)
            }
            Event::SequenceStart(anchor, _) => {
                let mut items = Vec::new();
                loop {
                    let (event, span) = self.next()?;
                    if matches!(event, Event::SequenceEnd) {
                        break;
                    }
                    let at = format!("{path}[{}]", items.len());
                    items.push(self.value(event, span, &at)?);
                }
                (Value::Array(items), anchor)
            }
            Event::MappingStart(anchor, _) => (Value::Object(self.mapping(path)?), anchor),
            Event::Alias(id) => {
                let (value, count) = self.anchors.get(&id).cloned().ok_or_else(|| {
                    unsupported(span, "an alias to an anchor that is not defined before it")
                })?;
                self.count(count, span)?;
                return Ok(value);
            }
            other => return Err(unsupported(span, format!("unexpected {other:?}"))),
        };
        if anchor != 0 {
            // The anchor keeps a copy: it counts too.
            let count = self.values - before;
            self.count(count, span)?;
            self.anchors.insert(anchor, (value.clone(), count));
        }
        Ok(value)
    }

    /// The entries of a mapping whose start was just read; keys become strings as kubectl
    /// makes them, a later key replaces an earlier one, merge keys apply in order.
    fn mapping(&mut self, path: &str) -> Result<Map<String, Value>, YamlError> {
        let mut map = Map::new();
        let mut written: HashMap<String, String> = HashMap::new();
        loop {
            let (event, span) = self.next()?;
            let (text, style, tag) = match event {
                Event::MappingEnd => return Ok(map),
                Event::Scalar(text, style, _, tag) => (text, style, tag),
                _ => {
                    return Err(unsupported(
                        span,
                        format!("{}: a key that is not a scalar", shown(path)),
                    ));
                }
            };
            let (event, value_span) = self.next()?;
            if style == ScalarStyle::Plain && tag.is_none() && text == "<<" {
                let merged = self.value(event, value_span, path)?;
                let maps = match merged {
                    Value::Object(one) => vec![one],
                    Value::Array(many) => many
                        .into_iter()
                        .rev()
                        .map(|item| match item {
                            Value::Object(one) => Ok(one),
                            _ => Err(unsupported(
                                value_span,
                                format!("{}: a merge key (<<) takes mappings", shown(path)),
                            )),
                        })
                        .collect::<Result<_, _>>()?,
                    _ => {
                        return Err(unsupported(
                            value_span,
                            format!(
                                "{}: a merge key (<<) takes a mapping or a list of mappings",
                                shown(path)
                            ),
                        ));
                    }
                };
                for one in maps {
                    map.extend(one);
                }
                continue;
            }
            let key = scalar(&text, style, tag.as_deref(), span)?;
            let name = key.key(span, path)?;
            if style == ScalarStyle::Plain && tag.is_none() {
                self.warn_key(&text, &name, path);
            }
            if let Some(earlier) = written.insert(name.clone(), text.to_string()) {
                self.warnings.push(format!(
                    "{}: the key {name:?} is given twice ({earlier} and {text}); kubectl keeps the last",
                    shown(path)
                ));
            }
            let at = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}.{name}")
            };
            let value = self.value(event, value_span, &at)?;
            map.insert(name, value);
        }
    }

    fn warn_value(&mut self, text: &str, read: &Scalar, path: &str) {
        if read.same_as(&Scalar::core_schema(text)) {
            return;
        }
        self.warnings.push(format!(
            "{}: read as {}, as kubectl will; quote it (\"{text}\") if you meant a string",
            shown(path),
            read.describe()
        ));
    }

    fn warn_key(&mut self, text: &str, name: &str, path: &str) {
        if name == text {
            return;
        }
        self.warnings.push(format!(
            "{}: the key {text} is read as {name:?}, as kubectl will; quote it (\"{text}\") if you meant the key {text:?}",
            shown(path)
        ));
    }
}

fn shown(path: &str) -> &str {
    if path.is_empty() {
        "the document"
    } else {
        path
    }
}

/// A scalar as resolved.
#[derive(Clone, Debug, PartialEq)]
enum Scalar {
    Null,
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
    Str(String),
}

/// The scalar `text` of `style` with `tag`, as go-yaml v2 resolves it.
fn scalar(
    text: &str,
    style: ScalarStyle,
    tag: Option<&Tag>,
    span: Span,
) -> Result<Scalar, YamlError> {
    let plain = style == ScalarStyle::Plain;
    let Some(tag) = tag else {
        return Ok(if plain {
            Scalar::yaml11(text)
        } else {
            Scalar::Str(text.to_string())
        });
    };
    if !tag.is_yaml_core_schema() {
        return Err(unsupported(span, format!("the tag {tag} is not supported")));
    }
    let resolved = Scalar::yaml11(text);
    let fits = match (tag.suffix.as_str(), &resolved) {
        ("str", _) => return Ok(Scalar::Str(text.to_string())),
        ("null", Scalar::Null) | ("bool", Scalar::Bool(_)) => true,
        ("int", Scalar::Int(_) | Scalar::Uint(_)) | ("float", Scalar::Float(_)) => true,
        ("float", Scalar::Int(i)) => return Ok(Scalar::Float(*i as f64)),
        ("float", Scalar::Uint(u)) => return Ok(Scalar::Float(*u as f64)),
        _ => false,
    };
    if fits {
        Ok(resolved)
    } else {
        Err(unsupported(
            span,
            format!("cannot read `{text}` as a !!{}", tag.suffix),
        ))
    }
}

impl Scalar {
    /// A plain scalar by go-yaml v2's rules (YAML 1.1 with kubectl's exceptions).
    fn yaml11(text: &str) -> Scalar {
        match text {
            "" | "~" | "null" | "Null" | "NULL" => return Scalar::Null,
            "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
                return Scalar::Bool(true);
            }
            "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off"
            | "OFF" => return Scalar::Bool(false),
            ".nan" | ".NaN" | ".NAN" => return Scalar::Float(f64::NAN),
            ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
                return Scalar::Float(f64::INFINITY);
            }
            "-.inf" | "-.Inf" | "-.INF" => return Scalar::Float(f64::NEG_INFINITY),
            _ => {}
        }
        let first = text.as_bytes()[0];
        if first == b'.' {
            return text
                .parse::<f64>()
                .map_or_else(|_| Scalar::Str(text.to_string()), Scalar::Float);
        }
        if !(first.is_ascii_digit() || first == b'+' || first == b'-') {
            return Scalar::Str(text.to_string());
        }
        let digits = text.replace('_', "");
        if let Some(number) = go_integer(&digits) {
            return number;
        }
        if is_float_syntax(&digits)
            && let Ok(float) = digits.parse::<f64>()
        {
            return Scalar::Float(float);
        }
        if let Some(binary) = digits.strip_prefix("-0b")
            && !binary.is_empty()
            && binary.bytes().all(|b| b == b'0' || b == b'1')
            && let Ok(magnitude) = u64::from_str_radix(binary, 2)
            && let Some(value) = negated(magnitude)
        {
            return Scalar::Int(value);
        }
        Scalar::Str(text.to_string())
    }

    /// A plain scalar by the YAML 1.2 core schema (what serde_yaml and most other readers
    /// use), for the warnings.
    fn core_schema(text: &str) -> Scalar {
        match text {
            "" | "~" | "null" | "Null" | "NULL" => return Scalar::Null,
            "true" | "True" | "TRUE" => return Scalar::Bool(true),
            "false" | "False" | "FALSE" => return Scalar::Bool(false),
            ".nan" | ".NaN" | ".NAN" => return Scalar::Float(f64::NAN),
            ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
                return Scalar::Float(f64::INFINITY);
            }
            "-.inf" | "-.Inf" | "-.INF" => return Scalar::Float(f64::NEG_INFINITY),
            _ => {}
        }
        let body = text.strip_prefix(['-', '+']).unwrap_or(text);
        if !body.is_empty()
            && body.bytes().all(|b| b.is_ascii_digit())
            && let Ok(value) = text.parse::<i64>()
        {
            return Scalar::Int(value);
        }
        let radix = |prefix: &str, radix: u32| {
            text.strip_prefix(prefix)
                .and_then(|digits| i64::from_str_radix(digits, radix).ok())
        };
        if let Some(value) = radix("0o", 8).or_else(|| radix("0x", 16)) {
            return Scalar::Int(value);
        }
        if is_float_syntax(text)
            && let Ok(value) = text.parse::<f64>()
        {
            return Scalar::Float(value);
        }
        Scalar::Str(text.to_string())
    }

    /// Whether two readings give the same JSON (numbers compared by value).
    fn same_as(&self, other: &Scalar) -> bool {
        match (self.number(), other.number()) {
            (Some(a), Some(b)) => a == b || (a.is_nan() && b.is_nan()),
            _ => self == other,
        }
    }

    fn number(&self) -> Option<f64> {
        match self {
            Scalar::Int(i) => Some(*i as f64),
            Scalar::Uint(u) => Some(*u as f64),
            Scalar::Float(f) => Some(*f),
            Scalar::Null | Scalar::Bool(_) | Scalar::Str(_) => None,
        }
    }

    fn describe(&self) -> String {
        match self {
            Scalar::Null => "null".to_string(),
            Scalar::Bool(b) => format!("the boolean {b}"),
            Scalar::Int(i) => format!("the number {i}"),
            Scalar::Uint(u) => format!("the number {u}"),
            Scalar::Float(f) => format!("the number {}", go_float(*f)),
            Scalar::Str(s) => format!("the string {s:?}"),
        }
    }

    /// The JSON value: a float without a fraction is an integer (Go's JSON writes `1000`
    /// for 1e3 and the API server reads it back as one); NaN and infinities have none.
    fn into_json(self, span: Span) -> Result<Value, YamlError> {
        Ok(match self {
            Scalar::Null => Value::Null,
            Scalar::Bool(b) => Value::Bool(b),
            Scalar::Int(i) => Value::from(i),
            Scalar::Uint(u) => Value::from(u),
            Scalar::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Value::from(f as i64),
            Scalar::Float(f) => {
                Value::Number(Number::from_f64(f).ok_or_else(|| {
                    unsupported(span, format!("{} has no JSON form", go_float(f)))
                })?)
            }
            Scalar::Str(s) => Value::String(s),
        })
    }

    /// The JSON key kubectl makes of this scalar.
    fn key(self, span: Span, path: &str) -> Result<String, YamlError> {
        Ok(match self {
            Scalar::Null => {
                return Err(unsupported(
                    span,
                    format!(
                        "{}: a null key (`~`, `null` or nothing) has no JSON form",
                        shown(path)
                    ),
                ));
            }
            Scalar::Bool(b) => b.to_string(),
            Scalar::Int(i) => i.to_string(),
            Scalar::Uint(u) => {
                return Err(unsupported(
                    span,
                    format!(
                        "{}: the key {u} is larger than kubectl takes as a key",
                        shown(path)
                    ),
                ));
            }
            Scalar::Float(f) => float_key(f),
            Scalar::Str(s) => s,
        })
    }
}

/// Go's `strconv.ParseInt(s, 0, 64)`, then `ParseUint`: a sign, then `0x`, `0o`, `0b` or a
/// leading `0` (octal) prefix, or decimal digits.
fn go_integer(text: &str) -> Option<Scalar> {
    let (negative, body) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let (digits, radix) =
        if let Some(rest) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
            (rest, 16)
        } else if let Some(rest) = body.strip_prefix("0o").or_else(|| body.strip_prefix("0O")) {
            (rest, 8)
        } else if let Some(rest) = body.strip_prefix("0b").or_else(|| body.strip_prefix("0B")) {
            (rest, 2)
        } else if body.len() > 1 && body.starts_with('0') {
            (&body[1..], 8)
        } else {
            (body, 10)
        };
    if digits.is_empty() || digits.starts_with(['+', '-']) {
        return None;
    }
    let magnitude = u64::from_str_radix(digits, radix).ok()?;
    if negative {
        negated(magnitude).map(Scalar::Int)
    } else {
        Some(i64::try_from(magnitude).map_or(Scalar::Uint(magnitude), Scalar::Int))
    }
}

/// `-magnitude`, when an i64 holds it.
fn negated(magnitude: u64) -> Option<i64> {
    if magnitude == 1 << 63 {
        Some(i64::MIN)
    } else {
        i64::try_from(magnitude).ok().map(|m| -m)
    }
}

/// `[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`: the float syntax go-yaml accepts.
fn is_float_syntax(text: &str) -> bool {
    let body = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(at) => (&body[..at], Some(&body[at + 1..])),
        None => (body, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match mantissa.split_once('.') {
        Some(("", fraction)) => digits(fraction),
        Some((whole, fraction)) => digits(whole) && (fraction.is_empty() || digits(fraction)),
        None => digits(mantissa),
    };
    let exponent_ok = exponent.is_none_or(|e| digits(e.strip_prefix(['-', '+']).unwrap_or(e)));
    mantissa_ok && exponent_ok
}

/// A float key as sigs.k8s.io/yaml writes it: `.inf`, `-.inf`, `.nan`, else Go's
/// `strconv.FormatFloat(f, 'g', -1, 32)`: the shortest form of the 32-bit float, with an
/// exponent (`1e+06`) below 1e-4 or from 1e6 on.
fn float_key(f: f64) -> String {
    if f.is_nan() {
        return ".nan".to_string();
    }
    if f.is_infinite() {
        return if f > 0.0 { ".inf" } else { "-.inf" }.to_string();
    }
    let single = f as f32;
    let exponent = format!("{single:e}");
    let power = exponent
        .split_once('e')
        .and_then(|(_, power)| power.parse::<i32>().ok())
        .unwrap_or(0);
    if single != 0.0 && !(-4..6).contains(&power) {
        let (mantissa, _) = exponent.split_once('e').unwrap_or((&exponent, ""));
        let sign = if power < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", power.abs());
    }
    format!("{single}")
}

/// A float as Go's `strconv.FormatFloat(f, 'g', -1, 64)` writes it: the shortest
/// representation, with an exponent (`1e+21`) below 1e-4 or from 1e21 on.
fn go_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".to_string();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.to_string();
    }
    let magnitude = f.abs();
    if magnitude != 0.0 && !(1e-4..1e21).contains(&magnitude) {
        let text = format!("{f:e}");
        return match text.split_once('e') {
            Some((mantissa, exponent)) => match exponent.strip_prefix('-') {
                Some(negative) => format!("{mantissa}e-{negative:0>2}"),
                None => format!("{mantissa}e+{exponent:0>2}"),
            },
            None => text,
        };
    }
    format!("{f}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(text: &str) -> Decoded {
        from_str(text).expect("readable")
    }

    #[test]
    fn plain_scalars_resolve_as_go_yaml_v2_does() {
        let decoded = read(
            "a: y\nb: NO\nc: on\nd: 0777\ne: 1_000\nf: 12:30\ng: 2024-01-02\nh: 0x1F\ni: 0o17\nj: 1e3\nk: .5\nl: +12\nm: 0b101\nnothing: ~\no:\np: 08\nq: -0777\nr: 3.\ns: 1_000.5\nt: -0b101\nu: '0777'\nv: \"yes\"\nw: 1.0\n",
        );
        assert_eq!(
            decoded.value,
            json!({"a": true, "b": false, "c": true, "d": 511, "e": 1000, "f": "12:30",
                   "g": "2024-01-02", "h": 31, "i": 15, "j": 1000, "k": 0.5, "l": 12, "m": 5,
                   "nothing": null, "o": null, "p": 8, "q": -511, "r": 3, "s": 1000.5, "t": -5,
                   "u": "0777", "v": "yes", "w": 1})
        );
    }

    #[test]
    fn keys_become_the_strings_kubectl_makes_and_the_last_duplicate_wins() {
        let decoded = read("y: 1\n0777: 2\n1_000: 3\n1.5: 4\non: 5\n\"n\": 6\n");
        assert_eq!(
            decoded.value,
            json!({"true": 5, "511": 2, "1000": 3, "1.5": 4, "n": 6})
        );
        assert_eq!(
            read("3.14159265358979: a\n1e6: b\n1e3: c\n0.00001: d\n.inf: e\n").value,
            json!({"3.1415927": "a", "1e+06": "b", "1000": "c", "1e-05": "d", ".inf": "e"})
        );
        assert_eq!(
            decoded.warnings,
            vec![
                "the document: the key y is read as \"true\", as kubectl will; quote it (\"y\") if you meant the key \"y\"",
                "the document: the key 0777 is read as \"511\", as kubectl will; quote it (\"0777\") if you meant the key \"0777\"",
                "the document: the key 1_000 is read as \"1000\", as kubectl will; quote it (\"1_000\") if you meant the key \"1_000\"",
                "the document: the key on is read as \"true\", as kubectl will; quote it (\"on\") if you meant the key \"on\"",
                "the document: the key \"true\" is given twice (y and on); kubectl keeps the last",
            ]
        );
    }

    #[test]
    fn values_read_differently_by_yaml_1_2_are_reported_with_their_path() {
        let decoded =
            read("spec:\n  input:\n    toggle: n\n    mode: 0644\n    list: [on, 1.0, 08, x]\n");
        assert_eq!(
            decoded.warnings,
            vec![
                "spec.input.toggle: read as the boolean false, as kubectl will; quote it (\"n\") if you meant a string",
                "spec.input.mode: read as the number 420, as kubectl will; quote it (\"0644\") if you meant a string",
                "spec.input.list[0]: read as the boolean true, as kubectl will; quote it (\"on\") if you meant a string",
            ]
        );
    }

    #[test]
    fn anchors_aliases_and_merge_keys_apply_in_document_order() {
        let decoded = read(
            "base: &b {a: 1, b: 2}\nm1: {a: 0, <<: *b}\nm2: {<<: *b, a: 0}\nm3: {<<: [*b, {c: 3}], b: 9}\ncopy: *b\n",
        );
        assert_eq!(
            decoded.value,
            json!({"base": {"a": 1, "b": 2}, "m1": {"a": 1, "b": 2}, "m2": {"a": 0, "b": 2},
                   "m3": {"a": 1, "b": 9, "c": 3}, "copy": {"a": 1, "b": 2}})
        );
    }

    #[test]
    fn tags_and_what_json_cannot_hold() {
        assert_eq!(
            read("a: !!str 123\nb: !!int \"12\"\nc: !!float 1\n").value,
            json!({"a": "123", "b": 12, "c": 1})
        );
        let error = |text: &str| from_str(text).expect_err("refused").to_string();
        assert_eq!(error("a: !!int x\n"), "line 1: cannot read `x` as a !!int");
        assert_eq!(
            error("a: !custom x\n"),
            "line 1: the tag !custom is not supported"
        );
        assert_eq!(error("a: .inf\n"), "line 1: +Inf has no JSON form");
        assert_eq!(
            error("~: 1\n"),
            "line 1: the document: a null key (`~`, `null` or nothing) has no JSON form"
        );
        assert_eq!(
            error("a: 1\n---\nb: 2\n"),
            "line 3: a second document: give one object per file"
        );
        assert!(error("a: [1\n").contains("line 2"), "{}", error("a: [1\n"));
    }

    #[test]
    fn deep_nesting_and_alias_bombs_are_refused() {
        let flow = format!("{}{}", "[".repeat(300), "]".repeat(300));
        assert_eq!(
            from_str(&flow).expect_err("too deep").to_string(),
            "recursion limit exceeded at byte 255 line 1 column 256"
        );
        let block: String = (0..2000)
            .map(|level| format!("{}k:\n", " ".repeat(level)))
            .collect();
        let error = from_str(&block).expect_err("too deep").to_string();
        assert!(
            error.ends_with("nested deeper than 128 levels")
                || error.starts_with("recursion limit exceeded"),
            "{error}"
        );
        let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for level in 1..9 {
            let previous = (b'a' + level - 1) as char;
            let name = (b'a' + level) as char;
            bomb.push_str(&format!(
                "{name}: &{name} [*{previous}, *{previous}, *{previous}, *{previous}, *{previous}, *{previous}, *{previous}, *{previous}, *{previous}, *{previous}]\n"
            ));
        }
        // Nested anchors each keep a copy of what they hold: the copies count.
        let mut nested = String::new();
        for level in 0..100 {
            nested.push_str(&format!("{}- &a{level}\n", "  ".repeat(level)));
        }
        nested.push_str(&format!(
            "{}- [{}]\n",
            "  ".repeat(100),
            vec!["x"; 20_000].join(", ")
        ));
        assert!(
            from_str(&nested)
                .expect_err("too many copies")
                .to_string()
                .ends_with(
                    "the document expands to more than 1000000 values (aliases and anchored copies included)"
                ),
        );
        assert_eq!(
            read("a: -0b101\nb: -0b-1\nc: -0b+101\n").value,
            json!({"a": -5, "b": "-0b-1", "c": "-0b+101"})
        );
        assert!(
            from_str(&bomb)
                .expect_err("a billion laughs")
                .to_string()
                .ends_with(
                    "the document expands to more than 1000000 values (aliases and anchored copies included)"
                ),
        );
    }

    #[test]
    fn floats_are_written_as_go_writes_them() {
        for (value, text) in [
            (1.5, "1.5"),
            (1e21, "1e+21"),
            (1e-7, "1e-07"),
            (0.0001, "0.0001"),
        ] {
            assert_eq!(go_float(value), text);
        }
    }
}
