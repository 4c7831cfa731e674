//! Label and field selectors, the `labelSelector` and `fieldSelector` parameters of list and
//! watch requests, parsed and matched as `k8s.io/apimachinery/pkg/labels` (`Parse`) and
//! `k8s.io/apimachinery/pkg/fields` (`ParseSelector`) do, with the same error messages.

use crate::gofmt::go_quote;
use serde_json::{Map, Value};
use std::borrow::Cow;

/// Why a selector was rejected. The Display text is the message Kubernetes reports.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// A requirement of a label selector is malformed, or its key or values are invalid.
    #[error("unable to parse requirement: {0}")]
    Requirement(String),
    /// A label selector has a token where another was expected between requirements.
    #[error("found '{found}', expected: {expected}")]
    Unexpected {
        /// The token found (empty at the end of the selector).
        found: String,
        /// What the parser expected instead.
        expected: &'static str,
    },
    /// A term of a field selector without `=`, `==` or `!=`.
    #[error("invalid selector: '{selector}'; can't understand '{term}'")]
    InvalidFieldTerm {
        /// The whole selector.
        selector: String,
        /// The term.
        term: String,
    },
    /// A backslash in a field selector value not followed by `\`, `,` or `=`.
    #[error("invalid field selector: invalid escape sequence: {0}")]
    InvalidEscape(String),
    /// An unescaped `,` or `=` in a field selector value (Kubernetes prints its code point).
    #[error("invalid field selector: unescaped character in value: {}", u32::from(*.0))]
    UnescapedCharacter(char),
    /// A field selector on a field the resource does not support.
    #[error("field label not supported: {0}")]
    UnsupportedField(String),
}

/// A parsed label selector: requirements that must all hold.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelSelector {
    /// Sorted by key, as Kubernetes does.
    requirements: Vec<Requirement>,
}

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Requirement {
    key: String,
    operator: Operator,
    /// Sorted and without duplicates.
    values: Vec<String>,
}

/// The operator of a label requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operator {
    /// `in (a,b)`, `=a`, `==a`.
    In,
    /// `notin (a,b)`, `!=a`.
    NotIn,
    /// `key`.
    Exists,
    /// `!key`.
    DoesNotExist,
    /// `key>5`.
    GreaterThan,
    /// `key<5`.
    LessThan,
}

impl LabelSelector {
    /// Parses a label selector: comma-separated requirements `key`, `!key`, `key=value`,
    /// `key==value`, `key!=value`, `key in (a,b)`, `key notin (a,b)`, `key>5`, `key<5`.
    /// The empty selector selects everything.
    pub fn parse(selector: &str) -> Result<Self, SelectorError> {
        let mut parser = Parser {
            tokens: Lexer::new(selector).tokens(),
            position: 0,
        };
        let mut requirements = parser.parse()?;
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector { requirements })
    }

    /// Whether the selector has no requirements (and so selects everything).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// A structured selector (`matchLabels` and `matchExpressions` with `In`, `NotIn`,
    /// `Exists` and `DoesNotExist`), as `metav1.LabelSelectorAsSelector` converts it: the
    /// empty one selects everything.
    pub fn from_object(selector: &Value) -> Result<Self, SelectorError> {
        let invalid = |message: String| SelectorError::Requirement(message);
        let mut requirements = Vec::new();
        let labels = selector.get("matchLabels").and_then(Value::as_object);
        for (key, value) in labels.into_iter().flatten() {
            let values = vec![render(value).into_owned()];
            requirements.push(Requirement::new(key, Operator::In, values).map_err(invalid)?);
        }
        let expressions = selector.get("matchExpressions").and_then(Value::as_array);
        for expression in expressions.into_iter().flatten() {
            let text = |field: &str| {
                expression
                    .get(field)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
            };
            let operator = match text("operator") {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => {
                    return Err(invalid(format!(
                        "{} is not a valid label selector operator",
                        go_quote(other)
                    )));
                }
            };
            let mut values: Vec<String> = expression
                .get("values")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|value| render(value).into_owned())
                .collect();
            values.sort();
            values.dedup();
            requirements.push(Requirement::new(text("key"), operator, values).map_err(invalid)?);
        }
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector { requirements })
    }

    /// Whether a set of labels satisfies every requirement.
    pub fn matches(&self, labels: &Map<String, Value>) -> bool {
        self.requirements.iter().all(|requirement| {
            requirement.matches(labels.get(&requirement.key).map(render).as_deref())
        })
    }

    /// Whether an object's `metadata.labels` satisfy every requirement.
    pub fn matches_object(&self, object: &Value) -> bool {
        let labels = object
            .get("metadata")
            .and_then(|metadata| metadata.get("labels"))
            .and_then(Value::as_object);
        match labels {
            Some(labels) => self.matches(labels),
            None => self.matches(&Map::new()),
        }
    }
}

impl Requirement {
    /// A requirement checked as `labels.NewRequirement` checks it: a valid key, values for
    /// `in` and `notin` and none for `exists` and `!`, valid values.
    fn new(key: &str, operator: Operator, values: Vec<String>) -> Result<Self, String> {
        let errors = label_key_errors(key);
        if !errors.is_empty() {
            return Err(invalid_value("key", key, &errors));
        }
        match operator {
            Operator::In | Operator::NotIn if values.is_empty() => {
                return Err("for 'in', 'notin' operators, values set can't be empty".into());
            }
            Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                return Err("values set must be empty for exists and does not exist".into());
            }
            _ => {}
        }
        validate_values(key, operator, &values)?;
        Ok(Requirement {
            key: key.to_owned(),
            operator,
            values,
        })
    }

    /// Whether a label value (`None` when the label is missing) satisfies the requirement.
    fn matches(&self, value: Option<&str>) -> bool {
        let has_value = |value: &str| self.values.iter().any(|v| v == value);
        match (self.operator, value) {
            (Operator::In, Some(value)) => has_value(value),
            (Operator::NotIn, Some(value)) => !has_value(value),
            (Operator::NotIn, None)
            | (Operator::Exists, Some(_))
            | (Operator::DoesNotExist, None) => true,
            (Operator::GreaterThan | Operator::LessThan, Some(value)) => {
                let (Ok(actual), Some(Ok(bound))) = (
                    value.parse::<i64>(),
                    self.values.first().map(|bound| bound.parse::<i64>()),
                ) else {
                    return false;
                };
                if self.operator == Operator::GreaterThan {
                    actual > bound
                } else {
                    actual < bound
                }
            }
            _ => false,
        }
    }
}

/// A token of the label selector language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    EndOfString,
    ClosedPar,
    Comma,
    DoesNotExist,
    DoubleEquals,
    Equals,
    GreaterThan,
    Identifier,
    In,
    LessThan,
    NotEquals,
    NotIn,
    OpenPar,
}

/// The token of a special character, or `None` for characters that make up identifiers.
fn special_token(byte: u8) -> Option<Token> {
    match byte {
        b'=' => Some(Token::Equals),
        b'!' => Some(Token::DoesNotExist),
        b'(' => Some(Token::OpenPar),
        b')' => Some(Token::ClosedPar),
        b',' => Some(Token::Comma),
        b'>' => Some(Token::GreaterThan),
        b'<' => Some(Token::LessThan),
        _ => None,
    }
}

/// Whether a byte separates tokens.
fn is_whitespace(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\r' | b'\n')
}

/// Splits a label selector into tokens, byte by byte like Kubernetes' lexer (a NUL byte ends
/// the selector where a token would start).
struct Lexer<'a> {
    input: &'a [u8],
    position: usize,
}

impl<'a> Lexer<'a> {
    fn new(input: &'a str) -> Self {
        Lexer {
            input: input.as_bytes(),
            position: 0,
        }
    }

    /// The next byte, 0 at the end.
    fn read(&mut self) -> u8 {
        match self.input.get(self.position) {
            Some(&byte) => {
                self.position += 1;
                byte
            }
            None => 0,
        }
    }

    /// All tokens, ending with [`Token::EndOfString`].
    fn tokens(mut self) -> Vec<(Token, String)> {
        let mut tokens = Vec::new();
        loop {
            let (token, literal) = self.lex();
            tokens.push((token, literal));
            if token == Token::EndOfString {
                return tokens;
            }
        }
    }

    /// The next token and its text.
    fn lex(&mut self) -> (Token, String) {
        let mut byte = self.read();
        while is_whitespace(byte) {
            byte = self.read();
        }
        if byte == 0 {
            return (Token::EndOfString, String::new());
        }
        if let Some(token) = special_token(byte) {
            // `==` and `!=` are the only operators of two special characters.
            if matches!(byte, b'=' | b'!') && self.input.get(self.position) == Some(&b'=') {
                self.position += 1;
                let token = if byte == b'=' {
                    Token::DoubleEquals
                } else {
                    Token::NotEquals
                };
                return (token, format!("{}=", char::from(byte)));
            }
            return (token, char::from(byte).to_string());
        }
        let mut buffer = vec![byte];
        loop {
            match self.read() {
                0 => break,
                byte if special_token(byte).is_some() || is_whitespace(byte) => {
                    self.position -= 1;
                    break;
                }
                byte => buffer.push(byte),
            }
        }
        let literal = String::from_utf8_lossy(&buffer).into_owned();
        let token = match literal.as_str() {
            "in" => Token::In,
            "notin" => Token::NotIn,
            _ => Token::Identifier,
        };
        (token, literal)
    }
}

/// Whether `in` and `notin` are operators or plain identifiers at this point.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Context {
    KeyAndOperator,
    Values,
}

/// The recursive descent parser of Kubernetes' label selectors.
struct Parser {
    tokens: Vec<(Token, String)>,
    position: usize,
}

impl Parser {
    /// The current token, without consuming it.
    fn lookahead(&self, context: Context) -> (Token, String) {
        let (token, literal) = self
            .tokens
            .get(self.position)
            .cloned()
            .unwrap_or((Token::EndOfString, String::new()));
        let token = match (context, token) {
            (Context::Values, Token::In | Token::NotIn) => Token::Identifier,
            (_, token) => token,
        };
        (token, literal)
    }

    /// The current token, consumed.
    fn consume(&mut self, context: Context) -> (Token, String) {
        let item = self.lookahead(context);
        self.position += 1;
        item
    }

    /// The requirements of the whole selector.
    fn parse(&mut self) -> Result<Vec<Requirement>, SelectorError> {
        let mut requirements = Vec::new();
        loop {
            let (token, literal) = self.lookahead(Context::Values);
            match token {
                Token::Identifier | Token::DoesNotExist => {
                    requirements.push(
                        self.parse_requirement()
                            .map_err(SelectorError::Requirement)?,
                    );
                    let (token, literal) = self.consume(Context::Values);
                    match token {
                        Token::EndOfString => return Ok(requirements),
                        Token::Comma => {
                            let (next, literal) = self.lookahead(Context::Values);
                            if next != Token::Identifier && next != Token::DoesNotExist {
                                return Err(SelectorError::Unexpected {
                                    found: literal,
                                    expected: "identifier after ','",
                                });
                            }
                        }
                        _ => {
                            return Err(SelectorError::Unexpected {
                                found: literal,
                                expected: "',' or 'end of string'",
                            });
                        }
                    }
                }
                Token::EndOfString => return Ok(requirements),
                _ => {
                    return Err(SelectorError::Unexpected {
                        found: literal,
                        expected: "!, identifier, or 'end of string'",
                    });
                }
            }
        }
    }

    /// One requirement; the error is the message after `unable to parse requirement: `.
    fn parse_requirement(&mut self) -> Result<Requirement, String> {
        let (key, unary) = self.parse_key_and_infer_operator()?;
        let (operator, values) = match unary {
            Some(operator) => (operator, Vec::new()),
            None => {
                let (token, literal) = self.consume(Context::KeyAndOperator);
                match token {
                    Token::In => (Operator::In, self.parse_values()?),
                    Token::NotIn => (Operator::NotIn, self.parse_values()?),
                    Token::Equals | Token::DoubleEquals => {
                        (Operator::In, self.parse_exact_value()?)
                    }
                    Token::NotEquals => (Operator::NotIn, self.parse_exact_value()?),
                    Token::GreaterThan => (Operator::GreaterThan, self.parse_exact_value()?),
                    Token::LessThan => (Operator::LessThan, self.parse_exact_value()?),
                    _ => {
                        return Err(format!(
                            "found '{literal}', expected: in, notin, =, ==, !=, gt, lt"
                        ));
                    }
                }
            }
        };
        validate_values(&key, operator, &values)?;
        Ok(Requirement {
            key,
            operator,
            values,
        })
    }

    /// The key, and the operator when it is unary (`!key`, or a key alone).
    fn parse_key_and_infer_operator(&mut self) -> Result<(String, Option<Operator>), String> {
        let (mut token, mut literal) = self.consume(Context::Values);
        let negated = token == Token::DoesNotExist;
        if negated {
            (token, literal) = self.consume(Context::Values);
        }
        if token != Token::Identifier {
            return Err(format!("found '{literal}', expected: identifier"));
        }
        let errors = label_key_errors(&literal);
        if !errors.is_empty() {
            return Err(invalid_value("<nil>", &literal, &errors));
        }
        if negated {
            return Ok((literal, Some(Operator::DoesNotExist)));
        }
        let (next, _) = self.lookahead(Context::Values);
        let exists = next == Token::EndOfString || next == Token::Comma;
        Ok((literal, exists.then_some(Operator::Exists)))
    }

    /// The values of `in (...)` and `notin (...)`, sorted and deduplicated.
    fn parse_values(&mut self) -> Result<Vec<String>, String> {
        let (token, literal) = self.consume(Context::Values);
        if token != Token::OpenPar {
            return Err(format!("found '{literal}' expected: '('"));
        }
        let (token, literal) = self.lookahead(Context::Values);
        match token {
            Token::Identifier | Token::Comma => self.parse_identifiers_list(),
            Token::ClosedPar => {
                self.consume(Context::Values);
                Ok(vec![String::new()])
            }
            _ => Err(format!(
                "found '{literal}', expected: ',', ')' or identifier"
            )),
        }
    }

    /// A comma-separated list of possibly empty values up to and including `)`.
    fn parse_identifiers_list(&mut self) -> Result<Vec<String>, String> {
        let mut values = Vec::new();
        loop {
            let (token, literal) = self.consume(Context::Values);
            match token {
                Token::Identifier => {
                    values.push(literal);
                    let (next, literal) = self.lookahead(Context::Values);
                    match next {
                        Token::Comma => {}
                        Token::ClosedPar => {
                            self.consume(Context::Values);
                            break;
                        }
                        _ => return Err(format!("found '{literal}', expected: ',' or ')'")),
                    }
                }
                Token::Comma => {
                    // `(,`, `,,` and `,)` stand for empty values.
                    if values.is_empty() {
                        values.push(String::new());
                    }
                    match self.lookahead(Context::Values).0 {
                        Token::ClosedPar => {
                            values.push(String::new());
                            self.consume(Context::Values);
                            break;
                        }
                        Token::Comma => {
                            self.consume(Context::Values);
                            values.push(String::new());
                        }
                        _ => {}
                    }
                }
                _ => return Err(format!("found '{literal}', expected: ',', or identifier")),
            }
        }
        values.sort();
        values.dedup();
        Ok(values)
    }

    /// The single value after `=`, `==`, `!=`, `>` or `<` (empty when there is none).
    fn parse_exact_value(&mut self) -> Result<Vec<String>, String> {
        let (token, _) = self.lookahead(Context::Values);
        if token == Token::EndOfString || token == Token::Comma {
            return Ok(vec![String::new()]);
        }
        match self.consume(Context::Values) {
            (Token::Identifier, literal) => Ok(vec![literal]),
            (_, literal) => Err(format!("found '{literal}', expected: identifier")),
        }
    }
}

/// Validates the values of a requirement (`NewRequirement`): integers for `>` and `<`, and
/// valid label values.
fn validate_values(key: &str, operator: Operator, values: &[String]) -> Result<(), String> {
    let mut errors = Vec::new();
    if matches!(operator, Operator::GreaterThan | Operator::LessThan) {
        for (index, value) in values.iter().enumerate() {
            if value.parse::<i64>().is_err() {
                errors.push(invalid_value(
                    &format!("values[{index}]"),
                    value,
                    &["for 'Gt', 'Lt' operators, the value must be an integer".to_owned()],
                ));
            }
        }
    }
    for (index, value) in values.iter().enumerate() {
        let value_errors = label_value_errors(value);
        if !value_errors.is_empty() {
            errors.push(invalid_value(
                &format!("values[{index}][{key}]"),
                value,
                &value_errors,
            ));
        }
    }
    errors.dedup();
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => Err(format!("[{}]", errors.join(", "))),
    }
}

/// A `field.Invalid` error as Kubernetes prints it.
fn invalid_value(path: &str, value: &str, details: &[String]) -> String {
    format!(
        "{path}: Invalid value: {}: {}",
        go_quote(value),
        details.join("; ")
    )
}

/// The regular expression of label keys' name part and of label values.
const LABEL_FORMAT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
/// The error message of a bad label key name part.
const LABEL_KEY_MESSAGE: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";

/// Whether `text` matches [`LABEL_FORMAT`] (non-empty).
fn is_label_name(text: &str) -> bool {
    let bytes = text.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// Why a label key is invalid (`IsQualifiedName`); empty when it is valid.
fn label_key_errors(key: &str) -> Vec<String> {
    let mut errors = Vec::new();
    let parts: Vec<&str> = key.split('/').collect();
    let name = match parts.as_slice() {
        [name] => name,
        [prefix, name] => {
            if prefix.is_empty() {
                errors.push("prefix part must be non-empty".to_owned());
            } else {
                errors.extend(
                    dns_subdomain_errors(prefix)
                        .into_iter()
                        .map(|error| format!("prefix part {error}")),
                );
            }
            name
        }
        _ => {
            return vec![format!(
                "a qualified name {LABEL_KEY_MESSAGE} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
            )];
        }
    };
    if name.is_empty() {
        errors.push("name part must be non-empty".to_owned());
    } else if name.len() > 63 {
        errors.push("name part must be no more than 63 characters".to_owned());
    }
    if !is_label_name(name) {
        errors.push(format!("name part {LABEL_KEY_MESSAGE}"));
    }
    errors
}

/// Why a label value is invalid (`IsValidLabelValue`); empty when it is valid.
fn label_value_errors(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > 63 {
        errors.push("must be no more than 63 characters".to_owned());
    }
    if !value.is_empty() && !is_label_name(value) {
        errors.push(format!(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '({LABEL_FORMAT})?')"
        ));
    }
    errors
}

/// Why a label key prefix is not a DNS subdomain (`IsDNS1123Subdomain`).
fn dns_subdomain_errors(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > 253 {
        errors.push("must be no more than 253 characters".to_owned());
    }
    let is_dns_label = |label: &str| {
        let bytes = label.as_bytes();
        let edge = |byte: &u8| byte.is_ascii_lowercase() || byte.is_ascii_digit();
        bytes.first().is_some_and(edge)
            && bytes.last().is_some_and(edge)
            && bytes.iter().all(|byte| edge(byte) || *byte == b'-')
    };
    if !value.split('.').all(is_dns_label) {
        errors.push("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".to_owned());
    }
    errors
}

/// A parsed field selector: terms that must all hold.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldSelector {
    /// In the order of their sorted source terms, as Kubernetes checks them.
    terms: Vec<FieldTerm>,
}

/// One term of a field selector.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FieldTerm {
    /// The dotted path of the field (`metadata.name`).
    field: String,
    /// The value, unescaped.
    value: String,
    /// `!=` rather than `=` or `==`.
    negated: bool,
}

impl FieldSelector {
    /// Parses a field selector: comma-separated `path=value`, `path==value` or
    /// `path!=value`, where values escape `\`, `,` and `=` with a backslash. Nothing is
    /// trimmed. The empty selector selects everything.
    pub fn parse(selector: &str) -> Result<Self, SelectorError> {
        let mut parts = split_terms(selector);
        parts.sort_unstable();
        let mut terms = Vec::with_capacity(parts.len());
        for part in parts.into_iter().filter(|part| !part.is_empty()) {
            let Some((field, operator, value)) = split_term(part) else {
                return Err(SelectorError::InvalidFieldTerm {
                    selector: selector.to_owned(),
                    term: part.to_owned(),
                });
            };
            let value = unescape(value)?;
            // Kubernetes turns a term with neither field nor value into "everything".
            if field.is_empty() && value.is_empty() {
                continue;
            }
            terms.push(FieldTerm {
                field: field.to_owned(),
                value,
                negated: operator == "!=",
            });
        }
        Ok(FieldSelector { terms })
    }

    /// Whether the selector has no terms (and so selects everything).
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The field paths the selector tests, in the order Kubernetes checks them.
    pub fn fields(&self) -> impl Iterator<Item = &str> + '_ {
        self.terms.iter().map(|term| term.field.as_str())
    }

    /// The value `field` must equal for an object to be selected, if a term says so
    /// (`field=value` or `field==value`): the first such term in Kubernetes' order
    /// (`fields.Selector.RequiresExactMatch`).
    pub fn requires_exact_match(&self, field: &str) -> Option<&str> {
        self.terms
            .iter()
            .find(|term| term.field == field && !term.negated)
            .map(|term| term.value.as_str())
    }

    /// Fails with [`SelectorError::UnsupportedField`] for the first field not in `supported`
    /// (the field labels the resource can be selected by).
    pub fn check_supported(&self, supported: &[&str]) -> Result<(), SelectorError> {
        match self.fields().find(|field| !supported.contains(field)) {
            Some(field) => Err(SelectorError::UnsupportedField(field.to_owned())),
            None => Ok(()),
        }
    }

    /// Whether an object satisfies every term. A field is read along its dotted path and
    /// compared as text: strings as they are, numbers and booleans as JSON, a missing field
    /// as the empty string.
    pub fn matches(&self, object: &Value) -> bool {
        self.terms.iter().all(|term| {
            let actual = field_value(object, &term.field);
            (actual == term.value.as_str()) != term.negated
        })
    }
}

/// The terms of a field selector: split on commas not escaped by a backslash.
fn split_terms(selector: &str) -> Vec<&str> {
    if selector.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (index, c) in selector.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == ',' {
            terms.push(&selector[start..index]);
            start = index + 1;
        }
    }
    terms.push(&selector[start..]);
    terms
}

/// A term split at its first operator: field, operator and raw value.
fn split_term(term: &str) -> Option<(&str, &'static str, &str)> {
    term.char_indices().find_map(|(index, _)| {
        let rest = &term[index..];
        ["!=", "==", "="]
            .into_iter()
            .find_map(|operator| Some((&term[..index], operator, rest.strip_prefix(operator)?)))
    })
}

/// Unescapes a field selector value.
fn unescape(value: &str) -> Result<String, SelectorError> {
    let mut unescaped = String::with_capacity(value.len());
    let mut escaped = false;
    for c in value.chars() {
        if escaped {
            match c {
                '\\' | ',' | '=' => unescaped.push(c),
                _ => return Err(SelectorError::InvalidEscape(format!("\\{c}"))),
            }
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            ',' | '=' => return Err(SelectorError::UnescapedCharacter(c)),
            _ => unescaped.push(c),
        }
    }
    if escaped {
        return Err(SelectorError::InvalidEscape("\\".to_owned()));
    }
    Ok(unescaped)
}

/// The value at a dotted path of an object as text; empty when missing.
fn field_value<'v>(object: &'v Value, path: &str) -> Cow<'v, str> {
    let mut current = object;
    for segment in path.split('.') {
        match current.get(segment) {
            Some(next) => current = next,
            None => return Cow::Borrowed(""),
        }
    }
    render(current)
}

/// A JSON value as selector text: strings unquoted, `null` empty, anything else as JSON.
fn render(value: &Value) -> Cow<'_, str> {
    match value {
        Value::String(text) => Cow::Borrowed(text),
        Value::Null => Cow::Borrowed(""),
        other => Cow::Owned(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    fn selects(selector: &str, value: Value) -> bool {
        match LabelSelector::parse(selector) {
            Ok(parsed) => parsed.matches(&labels(value)),
            Err(error) => panic!("{selector:?}: {error}"),
        }
    }

    fn label_error(selector: &str) -> String {
        match LabelSelector::parse(selector) {
            Ok(parsed) => panic!("{selector:?} parsed as {parsed:?}"),
            Err(error) => error.to_string(),
        }
    }

    fn field_error(selector: &str) -> String {
        match FieldSelector::parse(selector) {
            Ok(parsed) => panic!("{selector:?} parsed as {parsed:?}"),
            Err(error) => error.to_string(),
        }
    }

    const NAME_PART: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
    const LABEL_VALUE: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

    #[test]
    fn empty_label_selector_selects_everything() {
        let selector = LabelSelector::parse("").unwrap();
        assert!(selector.is_empty());
        assert!(selector.matches(&Map::new()));
        assert!(LabelSelector::parse("  \t ").unwrap().is_empty());
        assert!(selects("", json!({"a": "b"})));
    }

    #[test]
    fn equality_operators() {
        for selector in ["app=web", "app==web", " app = web ", "app\t==\tweb"] {
            assert!(selects(selector, json!({"app": "web"})), "{selector}");
            assert!(!selects(selector, json!({"app": "db"})), "{selector}");
            assert!(!selects(selector, json!({})), "{selector}");
        }
        assert!(selects("app!=web", json!({"app": "db"})));
        assert!(!selects("app!=web", json!({"app": "web"})));
        assert!(
            selects("app!=web", json!({})),
            "!= matches objects without the label"
        );
        assert!(selects("app=", json!({"app": ""})));
        assert!(!selects("app=", json!({})));
        assert!(
            selects("app=in", json!({"app": "in"})),
            "in is a value after ="
        );
    }

    #[test]
    fn set_operators() {
        assert!(selects("env in (prod,dev)", json!({"env": "dev"})));
        assert!(!selects("env in (prod, dev)", json!({"env": "qa"})));
        assert!(!selects("env in (prod)", json!({})));
        assert!(selects("env notin (prod,dev)", json!({"env": "qa"})));
        assert!(!selects("env notin(prod,dev)", json!({"env": "prod"})));
        assert!(
            selects("env notin (prod)", json!({})),
            "notin matches objects without the label"
        );
        assert!(selects("env in ()", json!({"env": ""})));
        assert!(selects("env in (a,,b)", json!({"env": ""})));
        assert!(selects("env in (,a)", json!({"env": ""})));
        assert!(selects("env in (a,)", json!({"env": ""})));
        assert!(selects("x in (in,notin)", json!({"x": "notin"})));
    }

    #[test]
    fn existence_operators() {
        assert!(selects("app", json!({"app": "anything"})));
        assert!(!selects("app", json!({})));
        assert!(selects("!app", json!({"other": "x"})));
        assert!(!selects("!app", json!({"app": "x"})));
        assert!(selects(" ! app ", json!({})));
        assert!(
            selects("in", json!({"in": "x"})),
            "in is a key at the start"
        );
    }

    #[test]
    fn numeric_operators() {
        assert!(selects("replicas>2", json!({"replicas": "3"})));
        assert!(!selects("replicas>2", json!({"replicas": "2"})));
        assert!(!selects("replicas>2", json!({"replicas": "many"})));
        assert!(!selects("replicas>2", json!({})));
        assert!(selects("replicas<10", json!({"replicas": "-3"})));
        assert!(!selects("replicas < 10", json!({"replicas": "10"})));
    }

    #[test]
    fn requirements_are_anded() {
        let selector = "app=web, tier in (front,back),!canary,version";
        assert!(selects(
            selector,
            json!({"app": "web", "tier": "front", "version": "1"})
        ));
        assert!(!selects(
            selector,
            json!({"app": "web", "tier": "front", "version": "1", "canary": "yes"})
        ));
        assert!(!selects(selector, json!({"app": "web", "tier": "front"})));
        let parsed = LabelSelector::parse(selector).unwrap();
        let keys: Vec<&str> = parsed.requirements.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(keys, ["app", "canary", "tier", "version"]);
    }

    #[test]
    fn structured_selectors() {
        let structured = |selector: Value| LabelSelector::from_object(&selector);
        let selector = structured(json!({
            "matchLabels": {"rbac.example.com/aggregate": "true"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["back", "front"]},
                {"key": "canary", "operator": "DoesNotExist"}
            ]
        }))
        .expect("a valid selector");
        let labels = |labels: Value| json!({"metadata": {"labels": labels}});
        assert!(selector.matches_object(&labels(
            json!({"rbac.example.com/aggregate": "true", "tier": "back"})
        )));
        assert!(!selector.matches_object(&labels(
            json!({"rbac.example.com/aggregate": "true", "tier": "mid"})
        )));
        assert!(!selector.matches_object(&labels(
            json!({"rbac.example.com/aggregate": "true", "tier": "back", "canary": "1"})
        )));
        assert!(
            structured(json!({}))
                .expect("empty")
                .matches_object(&json!({}))
        );
        assert!(
            structured(
                json!({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]})
            )
            .is_err()
        );
        assert!(
            structured(json!({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]}))
                .is_err()
        );
        assert!(structured(json!({"matchLabels": {"a b": "c"}})).is_err());
    }

    #[test]
    fn prefixed_keys_and_object_labels() {
        let object = json!({"metadata": {"labels": {"app.kubernetes.io/name": "web"}}});
        let selector = LabelSelector::parse("app.kubernetes.io/name=web").unwrap();
        assert!(selector.matches_object(&object));
        assert!(!selector.matches_object(&json!({"metadata": {}})));
        assert!(
            LabelSelector::parse("!app")
                .unwrap()
                .matches_object(&json!({}))
        );
    }

    #[test]
    fn label_syntax_errors() {
        assert_eq!(
            label_error("app web"),
            "unable to parse requirement: found 'web', expected: in, notin, =, ==, !=, gt, lt"
        );
        assert_eq!(
            label_error("app=web,"),
            "found '', expected: identifier after ','"
        );
        assert_eq!(
            label_error("app=web,,b"),
            "found ',', expected: identifier after ','"
        );
        assert_eq!(
            label_error("=web"),
            "found '=', expected: !, identifier, or 'end of string'"
        );
        assert_eq!(
            label_error(",a"),
            "found ',', expected: !, identifier, or 'end of string'"
        );
        assert_eq!(
            label_error("a=b c"),
            "found 'c', expected: ',' or 'end of string'"
        );
        assert_eq!(
            label_error("!a=b"),
            "found '=', expected: ',' or 'end of string'"
        );
        assert_eq!(
            label_error("!"),
            "unable to parse requirement: found '', expected: identifier"
        );
        assert_eq!(
            label_error("!!a"),
            "unable to parse requirement: found '!', expected: identifier"
        );
        assert_eq!(
            label_error("a in b"),
            "unable to parse requirement: found 'b' expected: '('"
        );
        assert_eq!(
            label_error("a in ("),
            "unable to parse requirement: found '', expected: ',', ')' or identifier"
        );
        assert_eq!(
            label_error("a in (b"),
            "unable to parse requirement: found '', expected: ',' or ')'"
        );
        assert_eq!(
            label_error("a in (b c)"),
            "unable to parse requirement: found 'c', expected: ',' or ')'"
        );
        assert_eq!(
            label_error("a in (,"),
            "unable to parse requirement: found '', expected: ',', or identifier"
        );
        assert_eq!(
            label_error("a in (=)"),
            "unable to parse requirement: found '=', expected: ',', ')' or identifier"
        );
        assert_eq!(
            label_error("a=(b)"),
            "unable to parse requirement: found '(', expected: identifier"
        );
        assert_eq!(
            label_error("a=b)"),
            "found ')', expected: ',' or 'end of string'"
        );
        assert_eq!(
            label_error("a>=1"),
            "unable to parse requirement: found '=', expected: identifier"
        );
    }

    #[test]
    fn label_key_and_value_errors() {
        assert_eq!(
            label_error("-app=web"),
            format!(
                "unable to parse requirement: <nil>: Invalid value: \"-app\": name part {NAME_PART}"
            )
        );
        let long = "k".repeat(64);
        assert_eq!(
            label_error(&long),
            format!(
                "unable to parse requirement: <nil>: Invalid value: \"{long}\": name part must be no more than 63 characters"
            )
        );
        assert_eq!(
            label_error("Example.com/app"),
            "unable to parse requirement: <nil>: Invalid value: \"Example.com/app\": prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        );
        assert_eq!(
            label_error("/app"),
            "unable to parse requirement: <nil>: Invalid value: \"/app\": prefix part must be non-empty"
        );
        assert_eq!(
            label_error("example.com/"),
            format!(
                "unable to parse requirement: <nil>: Invalid value: \"example.com/\": name part must be non-empty; name part {NAME_PART}"
            )
        );
        assert_eq!(
            label_error("a/b/c"),
            format!(
                "unable to parse requirement: <nil>: Invalid value: \"a/b/c\": a qualified name {NAME_PART} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
            )
        );
        assert_eq!(
            label_error("app=web-"),
            format!(
                "unable to parse requirement: values[0][app]: Invalid value: \"web-\": {LABEL_VALUE}"
            )
        );
        assert_eq!(
            label_error("app in (ok,-b,c\")"),
            format!(
                "unable to parse requirement: [values[0][app]: Invalid value: \"-b\": {LABEL_VALUE}, values[1][app]: Invalid value: \"c\\\"\": {LABEL_VALUE}]"
            )
        );
        let long = "v".repeat(64);
        assert_eq!(
            label_error(&format!("app={long}")),
            format!(
                "unable to parse requirement: values[0][app]: Invalid value: \"{long}\": must be no more than 63 characters"
            )
        );
        assert_eq!(
            label_error("n>abc"),
            "unable to parse requirement: values[0]: Invalid value: \"abc\": for 'Gt', 'Lt' operators, the value must be an integer"
        );
        assert_eq!(
            label_error("n<x-"),
            format!(
                "unable to parse requirement: [values[0]: Invalid value: \"x-\": for 'Gt', 'Lt' operators, the value must be an integer, values[0][n]: Invalid value: \"x-\": {LABEL_VALUE}]"
            )
        );
    }

    #[test]
    fn field_selector_operators() {
        let pod = json!({
            "metadata": {"name": "web-1", "namespace": "prod"},
            "spec": {"nodeName": "node-a", "hostNetwork": true, "priority": 7},
            "status": {"phase": "Running"}
        });
        let selects = |selector: &str| FieldSelector::parse(selector).unwrap().matches(&pod);
        assert!(selects("metadata.name=web-1"));
        assert!(selects("metadata.name==web-1"));
        assert!(!selects("metadata.name!=web-1"));
        assert!(selects("status.phase!=Pending,metadata.namespace=prod"));
        assert!(!selects("status.phase=Running,metadata.namespace=dev"));
        assert!(selects("spec.hostNetwork=true"));
        assert!(selects("spec.priority=7"));
        assert!(
            selects("spec.schedulerName="),
            "a missing field is the empty string"
        );
        assert!(selects("spec.schedulerName!=default"));
        assert!(!selects("metadata.name= web-1"), "values are not trimmed");
        assert!(selects(""));
        assert!(selects(","));
        assert!(selects("="), "an empty term selects everything");
        let exact = |selector: &str| {
            FieldSelector::parse(selector)
                .unwrap()
                .requires_exact_match("metadata.name")
                .map(str::to_owned)
        };
        assert_eq!(
            exact("metadata.name==web-1,status.phase=Running"),
            Some("web-1".into())
        );
        assert_eq!(exact("metadata.name!=web-1"), None);
        assert_eq!(exact("status.phase=Running"), None);
    }

    #[test]
    fn field_selector_escaping() {
        let event = json!({"involvedObject": {"name": "a,b=c\\d"}, "type": "Warning"});
        let selector =
            FieldSelector::parse(r"involvedObject.name=a\,b\=c\\d,type=Warning").unwrap();
        assert!(selector.matches(&event));
        assert_eq!(
            selector.fields().collect::<Vec<_>>(),
            ["involvedObject.name", "type"]
        );
        assert_eq!(
            field_error(r"a=b\x"),
            r"invalid field selector: invalid escape sequence: \x"
        );
        assert_eq!(
            field_error(r"a=b\"),
            r"invalid field selector: invalid escape sequence: \"
        );
        assert_eq!(
            field_error("a=b=c"),
            "invalid field selector: unescaped character in value: 61"
        );
        assert_eq!(
            field_error("a"),
            "invalid selector: 'a'; can't understand 'a'"
        );
        assert_eq!(
            field_error("x=1,b"),
            "invalid selector: 'x=1,b'; can't understand 'b'"
        );
    }

    #[test]
    fn field_selector_support() {
        let selector = FieldSelector::parse("spec.nodeName=n,metadata.name=x").unwrap();
        assert_eq!(
            selector.fields().collect::<Vec<_>>(),
            ["metadata.name", "spec.nodeName"]
        );
        assert_eq!(
            selector.check_supported(&["metadata.name", "spec.nodeName"]),
            Ok(())
        );
        let error = selector.check_supported(&["metadata.name"]).unwrap_err();
        assert_eq!(
            error,
            SelectorError::UnsupportedField("spec.nodeName".to_owned())
        );
        assert_eq!(
            error.to_string(),
            "field label not supported: spec.nodeName"
        );
        assert!(FieldSelector::parse("").unwrap().is_empty());
        assert!(
            FieldSelector::parse("")
                .unwrap()
                .check_supported(&[])
                .is_ok()
        );
    }
}
