//! Protobuf request bodies (`application/vnd.kubernetes.protobuf`), as typed clients send
//! them for built-in kinds (kubectl's generators: `kubectl create configmap|secret|…`).
//!
//! A body is the Kubernetes protobuf serializer's envelope
//! (`k8s.io/apimachinery/pkg/runtime/serializer/protobuf/protobuf.go`): the 4-byte prefix
//! `k8s\0`, then a `runtime.Unknown {typeMeta, raw, contentEncoding, contentType}` whose `raw`
//! is the object's message without its type meta. The message is read through the
//! descriptors of the vendored upstream `generated.proto` files (`e2e/proto`, compiled by
//! `build.rs`) and turned into the object's JSON form the way the Go types marshal it:
//! field names as sent (go-to-protobuf names fields by their JSON names), zero scalars
//! omitted (`omitempty`), present messages kept (`strategy: {}`, `emptyDir: {}`), and the
//! apimachinery types in their JSON spelling (`Time`, `MicroTime`, `Quantity`,
//! `IntOrString`, `RawExtension`, `FieldsV1`). Answers stay JSON.
//!
//! Go marshals a zero-valued non-pointer field that has `omitempty`, and any set pointer
//! field, the same way on the wire, so a pointer field explicitly set to its zero value
//! (`replicas: 0`, `automountServiceAccountToken: false`) reads as unset here.

use crate::status::ApiError;
use base64::Engine;
use prost_reflect::{
    DescriptorPool, DynamicMessage, MapKey, MessageDescriptor, ReflectMessage, Value as Field,
};
use serde_json::{Map, Value, json};
use std::sync::LazyLock;

/// The media type of Kubernetes protobuf bodies.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// The serializer's prefix ahead of every envelope.
const PREFIX: &[u8] = b"k8s\0";

/// The messages of the vendored `generated.proto` files.
static DESCRIPTORS: LazyLock<DescriptorPool> = LazyLock::new(|| {
    DescriptorPool::decode(&include_bytes!(concat!(env!("OUT_DIR"), "/kubernetes.bin"))[..])
        .expect("build.rs writes a valid descriptor set")
});

const META: &str = "k8s.io.apimachinery.pkg.apis.meta.v1";

/// The message of `kind` in `group/version`, if the vendored protos have it: group `apps`
/// is package `k8s.io.api.apps.v1`, `rbac.authorization.k8s.io` is `k8s.io.api.rbac.v1`,
/// the core group `k8s.io.api.core.v1` (go-to-protobuf names packages by the Go package).
fn message(group: &str, version: &str, kind: &str) -> Option<MessageDescriptor> {
    let package = match group {
        "" => format!("k8s.io.api.core.{version}"),
        "meta.k8s.io" => META.to_owned(),
        _ => {
            let name = group.split('.').next().unwrap_or_default();
            format!("k8s.io.api.{name}.{version}")
        }
    };
    DESCRIPTORS.get_message_by_name(&format!("{package}.{kind}"))
}

/// Whether protobuf bodies of `kind` in `group/version` can be read.
pub fn supports(group: &str, version: &str, kind: &str) -> bool {
    message(group, version, kind).is_some()
}

/// Reads a protobuf body sent to an endpoint of `kind` in `group/version` into the object's
/// JSON form (with `apiVersion` and `kind` from the envelope, defaulted from the endpoint
/// as Kubernetes does). Fails with 400 and Kubernetes' wording
/// (`k8s.io/apiserver/pkg/endpoints/handlers/rest.go transformDecodeError`) when the
/// prefix, the envelope or the message cannot be read.
pub fn decode(body: &[u8], group: &str, version: &str, kind: &str) -> Result<Value, ApiError> {
    let unrecognized = |error: &str| {
        ApiError::bad_request(format!(
            "the object provided is unrecognized (must be of type {kind}): {error} ({})",
            summarize(body)
        ))
    };
    if body.is_empty() {
        return Err(unrecognized("empty data"));
    }
    let Some(envelope) = body.strip_prefix(PREFIX) else {
        return Err(unrecognized(
            "provided data does not appear to be a protobuf message, expected prefix [107 56 115 0]",
        ));
    };
    let unknown = DESCRIPTORS
        .get_message_by_name("k8s.io.apimachinery.pkg.runtime.Unknown")
        .ok_or_else(|| unrecognized("no runtime.Unknown message"))?;
    let unknown = DynamicMessage::decode(unknown, envelope)
        .map_err(|error| unrecognized(&error.to_string()))?;
    let text = |message: &DynamicMessage, field: &str| match message.get_field_by_name(field) {
        Some(value) => value.as_str().unwrap_or_default().to_owned(),
        None => String::new(),
    };
    let type_meta = match unknown.get_field_by_name("typeMeta") {
        Some(value) => value.as_message().cloned(),
        None => None,
    };
    let (mut api_version, mut sent_kind) = type_meta
        .map(|meta| (text(&meta, "apiVersion"), text(&meta, "kind")))
        .unwrap_or_default();
    if api_version.is_empty() {
        api_version = if group.is_empty() {
            version.to_owned()
        } else {
            format!("{group}/{version}")
        };
    }
    if sent_kind.is_empty() {
        sent_kind = kind.to_owned();
    }
    let (sent_group, sent_version) = api_version.rsplit_once('/').unwrap_or(("", &api_version));
    let cannot = |error: &str| {
        ApiError::bad_request(format!(
            "{sent_kind} in version \"{sent_version}\" cannot be handled as a {kind}: {error}"
        ))
    };
    let descriptor = message(sent_group, sent_version, &sent_kind).ok_or_else(|| {
        cannot(&format!(
            "no kind \"{sent_kind}\" is registered for version \"{api_version}\""
        ))
    })?;
    let raw = unknown
        .get_field_by_name("raw")
        .and_then(|raw| raw.as_bytes().cloned())
        .unwrap_or_default();
    let object = DynamicMessage::decode(descriptor, raw).map_err(|e| cannot(&e.to_string()))?;
    let mut json = object_json(&object).map_err(|error| cannot(&error))?;
    if let Some(fields) = json.as_object_mut() {
        fields.insert("apiVersion".into(), json!(api_version));
        fields.insert("kind".into(), json!(sent_kind));
    }
    Ok(json)
}

/// How Kubernetes quotes a body it could not read: JSON as text, anything else in hex, both
/// cut after 30 bytes (`rest.go summarizeData`).
pub fn summarize(body: &[u8]) -> String {
    const MAX: usize = 30;
    let cut = &body[..body.len().min(MAX)];
    let more = if body.len() > MAX { " ..." } else { "" };
    if body.first() == Some(&b'{') {
        format!("{}{more}", String::from_utf8_lossy(cut))
    } else {
        let hex: String = cut.iter().map(|b| format!("{b:02x}")).collect();
        format!("{hex}{more}")
    }
}

/// A message in its JSON form: the apimachinery types by their own rules, any other message
/// as an object of its set fields (zero scalars left out, as `omitempty` does).
fn object_json(message: &DynamicMessage) -> Result<Value, String> {
    let text = |field: &str| {
        message
            .get_field_by_name(field)
            .and_then(|value| value.as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    let int = |field: &str| {
        message
            .get_field_by_name(field)
            .and_then(|value| value.as_i64().or(value.as_i32().map(i64::from)))
            .unwrap_or(0)
    };
    let raw = |field: &str| -> Result<Value, String> {
        let bytes = message
            .get_field_by_name(field)
            .and_then(|value| value.as_bytes().cloned())
            .unwrap_or_default();
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|error| format!("raw JSON: {error}"))
    };
    let name = message.descriptor().full_name().to_owned();
    match name.strip_prefix("k8s.io.apimachinery.pkg.") {
        Some("apis.meta.v1.Time") => Ok(time(int("seconds"), int("nanos"), false)),
        Some("apis.meta.v1.MicroTime") => Ok(time(int("seconds"), int("nanos"), true)),
        Some("api.resource.Quantity") => Ok(json!(text("string"))),
        Some("util.intstr.IntOrString") => Ok(match int("type") {
            0 => json!(int("intVal")),
            _ => json!(text("strVal")),
        }),
        Some("runtime.RawExtension" | "apis.meta.v1.FieldsV1") => raw("raw"),
        _ => {
            let mut fields = Map::new();
            for (field, value) in message.fields() {
                if is_zero(value) {
                    continue;
                }
                let json = field_json(value)?;
                if !json.is_null() {
                    fields.insert(field.name().to_owned(), json);
                }
            }
            Ok(Value::Object(fields))
        }
    }
}

/// A `Time` (RFC 3339 in seconds) or `MicroTime` (microseconds); the zero time is `null`.
fn time(seconds: i64, nanos: i64, micro: bool) -> Value {
    if seconds == 0 && nanos == 0 {
        return Value::Null;
    }
    let Ok(at) = jiff::Timestamp::new(seconds, i32::try_from(nanos).unwrap_or(0)) else {
        return Value::Null;
    };
    let format = if micro {
        "%Y-%m-%dT%H:%M:%S%.6fZ"
    } else {
        "%Y-%m-%dT%H:%M:%SZ"
    };
    json!(at.strftime(format).to_string())
}

fn is_zero(value: &Field) -> bool {
    match value {
        Field::Bool(b) => !b,
        Field::I32(n) | Field::EnumNumber(n) => *n == 0,
        Field::I64(n) => *n == 0,
        Field::U32(n) => *n == 0,
        Field::U64(n) => *n == 0,
        Field::F32(n) => *n == 0.0,
        Field::F64(n) => *n == 0.0,
        Field::String(s) => s.is_empty(),
        Field::Bytes(b) => b.is_empty(),
        Field::List(items) => items.is_empty(),
        Field::Map(entries) => entries.is_empty(),
        Field::Message(_) => false,
    }
}

/// One value (a field, a list item or a map value) in its JSON form; bytes in base64, as Go
/// marshals `[]byte`.
fn field_json(value: &Field) -> Result<Value, String> {
    Ok(match value {
        Field::Bool(b) => json!(b),
        Field::I32(n) | Field::EnumNumber(n) => json!(n),
        Field::I64(n) => json!(n),
        Field::U32(n) => json!(n),
        Field::U64(n) => json!(n),
        Field::F32(n) => json!(n),
        Field::F64(n) => json!(n),
        Field::String(s) => json!(s),
        Field::Bytes(b) => json!(base64::engine::general_purpose::STANDARD.encode(b)),
        Field::Message(message) => object_json(message)?,
        Field::List(items) => Value::Array(items.iter().map(field_json).collect::<Result<_, _>>()?),
        Field::Map(entries) => {
            let mut object = Map::new();
            for (key, value) in entries {
                let key = match key {
                    MapKey::String(s) => s.clone(),
                    MapKey::Bool(b) => b.to_string(),
                    MapKey::I32(n) => n.to_string(),
                    MapKey::I64(n) => n.to_string(),
                    MapKey::U32(n) => n.to_string(),
                    MapKey::U64(n) => n.to_string(),
                };
                object.insert(key, field_json(value)?);
            }
            Value::Object(object)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_reflect::prost::Message;

    fn message(name: &str, fields: &[(&str, Field)]) -> DynamicMessage {
        let descriptor = DESCRIPTORS
            .get_message_by_name(name)
            .expect("a vendored message");
        let mut message = DynamicMessage::new(descriptor);
        for (field, value) in fields {
            message.set_field_by_name(field, value.clone());
        }
        message
    }

    fn wrapped(api_version: &str, kind: &str, object: &DynamicMessage) -> Vec<u8> {
        let type_meta = message(
            "k8s.io.apimachinery.pkg.runtime.TypeMeta",
            &[
                ("apiVersion", Field::String(api_version.into())),
                ("kind", Field::String(kind.into())),
            ],
        );
        let unknown = message(
            "k8s.io.apimachinery.pkg.runtime.Unknown",
            &[
                ("typeMeta", Field::Message(type_meta)),
                ("raw", Field::Bytes(object.encode_to_vec().into())),
            ],
        );
        [PREFIX, &unknown.encode_to_vec()].concat()
    }

    #[test]
    fn apimachinery_types_and_omitted_zero_values() {
        const META: &str = "k8s.io.apimachinery.pkg.apis.meta.v1";
        let time = |seconds: i64| {
            Field::Message(message(
                &format!("{META}.Time"),
                &[("seconds", Field::I64(seconds))],
            ))
        };
        let metadata = message(
            &format!("{META}.ObjectMeta"),
            &[
                ("name", Field::String("web".into())),
                // Written by Go although empty: not part of the JSON.
                ("generateName", Field::String(String::new())),
                ("generation", Field::I64(0)),
                ("creationTimestamp", time(0)),
                ("deletionTimestamp", time(1_700_000_000)),
            ],
        );
        let int_or_string = |value: Field| {
            let (kind, field) = match value {
                Field::I32(_) => (0, "intVal"),
                _ => (1, "strVal"),
            };
            Field::Message(message(
                "k8s.io.apimachinery.pkg.util.intstr.IntOrString",
                &[("type", Field::I64(kind)), (field, value)],
            ))
        };
        let port = message(
            "k8s.io.api.core.v1.ServicePort",
            &[
                ("port", Field::I32(80)),
                ("targetPort", int_or_string(Field::String("http".into()))),
                ("nodePort", Field::I32(0)),
            ],
        );
        let spec = message(
            "k8s.io.api.core.v1.ServiceSpec",
            &[("ports", Field::List(vec![Field::Message(port)]))],
        );
        let service = message(
            "k8s.io.api.core.v1.Service",
            &[
                ("metadata", Field::Message(metadata)),
                ("spec", Field::Message(spec)),
                (
                    "status",
                    Field::Message(message("k8s.io.api.core.v1.ServiceStatus", &[])),
                ),
            ],
        );
        let decoded = decode(&wrapped("v1", "Service", &service), "", "v1", "Service");
        assert_eq!(
            decoded,
            Ok(json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "web", "deletionTimestamp": "2023-11-14T22:13:20Z"},
                "spec": {"ports": [{"port": 80, "targetPort": "http"}]},
                "status": {}
            }))
        );
        let lease = message(
            "k8s.io.api.coordination.v1.Lease",
            &[(
                "spec",
                Field::Message(message(
                    "k8s.io.api.coordination.v1.LeaseSpec",
                    &[(
                        "renewTime",
                        Field::Message(message(
                            &format!("{META}.MicroTime"),
                            &[("seconds", Field::I64(1)), ("nanos", Field::I32(2_000))],
                        )),
                    )],
                )),
            )],
        );
        assert_eq!(
            decode(
                &wrapped("coordination.k8s.io/v1", "Lease", &lease),
                "coordination.k8s.io",
                "v1",
                "Lease"
            ),
            Ok(
                json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                      "spec": {"renewTime": "1970-01-01T00:00:01.000002Z"}})
            )
        );
    }

    #[test]
    fn summaries_quote_json_and_hex() {
        assert_eq!(summarize(b"{\"a\":1}"), "{\"a\":1}");
        assert_eq!(summarize(&[0x6b, 0x38]), "6b38");
        assert_eq!(summarize(&[b'{'; 31]), format!("{} ...", "{".repeat(30)));
    }
}
