//! Raw HTTP against the test API server: protobuf request bodies and the Status answers to
//! bodies it cannot read, and the `/debug/requests` accounting endpoint.

mod common;

use common::{send, server};
use pequod_e2e::TestApiServer;
use serde_json::{Value, json};

/// A length-delimited protobuf field (lengths below 128).
fn field(number: u8, bytes: &[u8]) -> Vec<u8> {
    let length = u8::try_from(bytes.len())
        .ok()
        .filter(|l| *l < 128)
        .expect("short field");
    let mut encoded = vec![(number << 3) | 2, length];
    encoded.extend_from_slice(bytes);
    encoded
}

/// The Kubernetes envelope: `k8s\0` and a runtime.Unknown of `kind` in `v1` around `raw`.
fn envelope(kind: &str, raw: &[u8]) -> Vec<u8> {
    let type_meta = [field(1, b"v1"), field(2, kind.as_bytes())].concat();
    let unknown = [field(1, &type_meta), field(2, raw)].concat();
    [b"k8s\0".to_vec(), unknown].concat()
}

const PROTOBUF: (&str, &str) = ("Content-Type", "application/vnd.kubernetes.protobuf");
const CONFIGMAPS: &str = "/api/v1/namespaces/default/configmaps";

/// The failure Status with `code`, `reason` and `message`, as the server answers it.
fn status(code: u16, reason: &str, message: &str) -> (u16, Value) {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                      "message": message, "reason": reason, "code": code});
    (code, body)
}

/// POSTs a protobuf body to `path`.
async fn post_protobuf(server: &TestApiServer, path: &str, body: &[u8]) -> (u16, Value) {
    send(server, "POST", path, &[PROTOBUF], body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_bodies_and_their_errors() {
    let server = server().await;
    // ConfigMap{metadata{name: pb, labels{a: b}}, data{key: value}}, binaryData{bin: 0x00ff}.
    let metadata = [
        field(1, b"pb"),
        field(11, &[field(1, b"a"), field(2, b"b")].concat()),
    ];
    let raw = [
        field(1, &metadata.concat()),
        field(2, &[field(1, b"key"), field(2, b"value")].concat()),
        field(3, &[field(1, b"bin"), field(2, &[0, 255])].concat()),
    ]
    .concat();
    let (code, created) = post_protobuf(&server, CONFIGMAPS, &envelope("ConfigMap", &raw)).await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(
        (&created["metadata"]["name"], &created["metadata"]["labels"]),
        (&json!("pb"), &json!({"a": "b"}))
    );
    assert_eq!(
        (&created["data"], &created["binaryData"]),
        (&json!({"key": "value"}), &json!({"bin": "AP8="}))
    );

    let unrecognized = "the object provided is unrecognized (must be of type ConfigMap)";
    assert_eq!(
        post_protobuf(&server, CONFIGMAPS, b"not protobuf").await,
        status(
            400,
            "BadRequest",
            &format!(
                "{unrecognized}: provided data does not appear to be a protobuf message, expected prefix [107 56 115 0] (6e6f742070726f746f627566)"
            )
        )
    );
    assert_eq!(
        post_protobuf(&server, CONFIGMAPS, b"k8s\0\x0a\x05\x01").await,
        status(
            400,
            "BadRequest",
            &format!(
                "{unrecognized}: failed to decode Protobuf message: buffer underflow (6b3873000a0501)"
            )
        )
    );
    assert_eq!(
        post_protobuf(
            &server,
            CONFIGMAPS,
            &envelope("ConfigMap", &[0x0a, 0x05, 0x01])
        )
        .await,
        status(
            400,
            "BadRequest",
            "ConfigMap in version \"v1\" cannot be handled as a ConfigMap: failed to decode Protobuf message: buffer underflow"
        )
    );
    assert_eq!(
        post_protobuf(&server, CONFIGMAPS, &envelope("Gadget", &[])).await,
        status(
            400,
            "BadRequest",
            "Gadget in version \"v1\" cannot be handled as a ConfigMap: no kind \"Gadget\" is registered for version \"v1\""
        )
    );
    // Media types a resource does not read: 415 with the ones it does.
    let unknown_format = "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml";
    assert_eq!(
        send(
            &server,
            "POST",
            CONFIGMAPS,
            &[("Content-Type", "text/plain")],
            b"{}"
        )
        .await,
        status(
            415,
            "UnsupportedMediaType",
            &format!("{unknown_format}, application/vnd.kubernetes.protobuf")
        )
    );
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
                 "names": {"plural": "widgets", "kind": "Widget"},
                 "versions": [{"name": "v1", "served": true, "storage": true,
                               "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}
    });
    let crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";
    let json_type = ("Content-Type", "application/json");
    let (code, _) = send(
        &server,
        "POST",
        crds,
        &[json_type],
        crd.to_string().as_bytes(),
    )
    .await;
    assert_eq!(code, 201);
    let widgets = "/apis/example.com/v1/namespaces/default/widgets";
    assert_eq!(
        post_protobuf(&server, widgets, &envelope("Widget", &[])).await,
        status(415, "UnsupportedMediaType", unknown_format)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_counted_by_verb_resource_and_user() {
    let server = server().await;
    let json_type = ("Content-Type", "application/json");
    let configmap =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}).to_string();
    send(
        &server,
        "POST",
        CONFIGMAPS,
        &[json_type],
        configmap.as_bytes(),
    )
    .await;
    send(
        &server,
        "GET",
        "/api/v1/namespaces/default/configmaps/c",
        &[],
        b"",
    )
    .await;
    send(
        &server,
        "GET",
        CONFIGMAPS,
        &[("Impersonate-User", "pequod")],
        b"",
    )
    .await;
    let apply = ("Content-Type", "application/apply-patch+yaml");
    let path = "/api/v1/namespaces/default/configmaps/c?fieldManager=pequod";
    send(
        &server,
        "PATCH",
        path,
        &[apply, ("Impersonate-User", "pequod")],
        configmap.as_bytes(),
    )
    .await;
    let merge = ("Content-Type", "application/merge-patch+json");
    send(
        &server,
        "PATCH",
        "/api/v1/namespaces/default/configmaps/c",
        &[merge],
        b"{\"data\":{\"a\":\"b\"}}",
    )
    .await;
    send(&server, "GET", "/apis/apps/v1", &[], b"").await;
    send(
        &server,
        "DELETE",
        "/api/v1/namespaces/default/configmaps/c",
        &[],
        b"",
    )
    .await;
    send(&server, "DELETE", CONFIGMAPS, &[], b"").await;
    let (code, counted) = send(&server, "GET", "/debug/requests", &[], b"").await;
    assert_eq!(code, 200);
    let item = |verb: &str, group: &str, resource: &str, user: &str| json!({"verb": verb, "group": group, "resource": resource, "user": user, "count": 1});
    assert_eq!(
        counted,
        json!({"items": [
            item("apply", "", "configmaps", "pequod"),
            item("create", "", "configmaps", "admin"),
            item("delete", "", "configmaps", "admin"),
            item("deletecollection", "", "configmaps", "admin"),
            item("get", "", "/apis/apps/v1", "admin"),
            item("get", "", "configmaps", "admin"),
            item("list", "", "configmaps", "pequod"),
            item("patch", "", "configmaps", "admin"),
        ]})
    );
    let requests = server.requests();
    assert_eq!(requests.total(), 8);
    assert_eq!(requests.count("apply", "configmaps"), 1);
}
