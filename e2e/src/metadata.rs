//! `meta.k8s.io/v1 PartialObjectMetadata` answers: objects reduced to their metadata, what a
//! client asks for with `Accept: application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1`
//! (a watch or a get) or `as=PartialObjectMetadataList` (a list): kube's `metadata_watcher`,
//! client-go's metadata informers.

use serde_json::{Value, json};

/// The `Content-Type` of a PartialObjectMetadata answer (a get, a watch's events).
pub const CONTENT_TYPE: &str = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1";

/// The `Content-Type` of a PartialObjectMetadataList answer.
pub const LIST_CONTENT_TYPE: &str =
    "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1";

/// Whether the `Accept` header asks for metadata only: a PartialObjectMetadataList for a
/// `list`, a PartialObjectMetadata for a get or a watch (the other form is not what
/// Kubernetes answers such a request with).
pub fn wants_metadata(accept: &str, list: bool) -> bool {
    let wanted = if list {
        "as=PartialObjectMetadataList"
    } else {
        "as=PartialObjectMetadata"
    };
    accept.split(',').any(|media| {
        let parameters: Vec<&str> = media.split(';').map(str::trim).collect();
        parameters.contains(&"g=meta.k8s.io") && parameters.contains(&wanted)
    })
}

/// `object` as a PartialObjectMetadata: its metadata, whole.
pub fn partial(object: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

/// A PartialObjectMetadataList of `items` with the list's `metadata`.
pub fn list(items: &[Value], metadata: Value) -> Value {
    json!({
        "kind": "PartialObjectMetadataList",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "items": items.iter().map(partial).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_kube_and_client_go_send_asks_for_metadata() {
        let list = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1";
        assert!(wants_metadata(list, true));
        assert!(!wants_metadata(list, false));
        let one = "application/vnd.kubernetes.protobuf;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json";
        assert!(wants_metadata(one, false));
        assert!(!wants_metadata(one, true));
        assert!(!wants_metadata("application/json", false));
        assert!(!wants_metadata(
            "application/json;as=Table;v=v1;g=meta.k8s.io",
            true
        ));
    }

    #[test]
    fn an_object_keeps_its_metadata_only() {
        let object = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a", "namespace": "team", "resourceVersion": "7"},
            "data": {"secret-ish": "value"}});
        assert_eq!(
            partial(&object),
            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                   "metadata": {"name": "a", "namespace": "team", "resourceVersion": "7"}})
        );
        assert_eq!(
            list(&[object], json!({"resourceVersion": "9"}))["items"][0]["kind"],
            "PartialObjectMetadata"
        );
    }
}
