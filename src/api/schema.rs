//! Schema helpers for fields whose content is free-form JSON, so the CRDs stay structural.

use schemars::{Schema, SchemaGenerator, json_schema};

/// An object whose fields are not described: kept as-is by the API server.
pub fn free_form_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// Like [`free_form_object`], for optional fields.
pub fn optional_free_form_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "nullable": true,
        "x-kubernetes-preserve-unknown-fields": true
    })
}
