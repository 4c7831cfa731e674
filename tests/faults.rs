//! The operator under faults: graphs too large to store, an API server that refuses or
//! fails requests for a while. Every failure ends as a condition that says why, and passing
//! failures leave no Warning behind.

#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/net.rs"]
mod net;

use cluster::{Cluster, condition, inline, skip_on_real_cluster};
use pequod_e2e::faults::{Fault, FaultAction};
use serde_json::Value;

/// An inline module rendering `count` ConfigMaps of `bytes` bytes each.
fn config_maps(count: usize, bytes: usize) -> String {
    format!(
        r#"let blob = std.string.join "" (std.array.replicate {bytes} "x") in std.array.generate (fun i => {{ id = "cm-%{{std.to_string i}}", object = {{ apiVersion = "v1", kind = "ConfigMap", metadata.name = "cm-%{{std.to_string i}}", data.blob = blob }} }}) {count}"#
    )
}

/// The Warning events about `name`, as `reason: note`.
async fn warnings_about(cluster: &Cluster, name: &str) -> Vec<String> {
    let events = cluster
        .json(&["get", "events.events.k8s.io"])
        .await
        .unwrap_or(Value::Null);
    events["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter(|e| e["type"] == "Warning" && e["regarding"]["name"] == name)
                .map(|e| format!("{}: {}", e["reason"], e["note"]))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graph_too_large_to_store_is_refused_before_it_is_sent() {
    // (Rendering a thousand objects takes seconds of a test build's worker.)
    let cluster = Cluster::start_with_flags(
        std::time::Duration::from_millis(300),
        &["--eval-timeout", "120s"],
    )
    .await;
    // 1,000 ConfigMaps of 1 KiB: about 1.4 MB of graph.
    cluster
        .ok(
            &["apply", "-f", "-"],
            Some(&inline("huge", &config_maps(1000, 1024))),
        )
        .await;
    let transform = cluster
        .transform_when(cluster.namespace(), "huge", "Rendered=False", |t| {
            condition(t, "Rendered").is_some_and(|c| c["status"] == "False")
        })
        .await;
    let rendered = condition(&transform, "Rendered").expect("Rendered");
    assert_eq!(rendered["reason"], "TooLarge");
    let message = rendered["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("the rendered ResourceGraph is ")
            && message.ends_with(
                " bytes, over the limit of 1048576 bytes (--max-graph-bytes): render fewer or smaller objects"
            ),
        "{message}"
    );
    assert_eq!(
        condition(&transform, "Ready").expect("Ready")["reason"],
        "TooLarge"
    );
    assert!(!cluster.exists(&["get", "resourcegraph", "huge"]).await);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graph_the_api_server_refuses_is_a_condition_with_its_message() {
    // With the operator's own limit lifted, etcd's is the one that refuses the graph.
    let cluster = Cluster::start_with_flags(
        std::time::Duration::from_millis(300),
        &["--max-graph-bytes", "8000000", "--eval-timeout", "120s"],
    )
    .await;
    cluster
        .ok(
            &["apply", "-f", "-"],
            Some(&inline("huge", &config_maps(800, 2048))),
        )
        .await;
    let transform = cluster
        .transform_when(cluster.namespace(), "huge", "Ready=False", |t| {
            condition(t, "Ready").is_some_and(|c| c["reason"] == "ResourceGraphRejected")
        })
        .await;
    assert_eq!(
        condition(&transform, "Ready").expect("Ready")["message"],
        "the API server refused the ResourceGraph: InternalError (500): etcdserver: request is too large"
    );
    for step in ["ModuleResolved", "Rendered", "Validated"] {
        assert_eq!(
            condition(&transform, step).expect(step)["status"],
            "True",
            "{step}"
        );
    }
    let warnings = pequod_e2e::testing::eventually(30, "a Warning event", || async {
        let warnings = warnings_about(&cluster, "huge").await;
        (!warnings.is_empty()).then_some(warnings)
    })
    .await;
    assert_eq!(
        warnings,
        [
            "\"ResourceGraphRejected\": \"the API server refused the ResourceGraph: InternalError (500): etcdserver: request is too large\""
        ]
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passing_api_failures_are_retried_and_leave_no_warning() {
    if skip_on_real_cluster("needs fault injection") {
        return;
    }
    let cluster = Cluster::start().await;
    // The first writes of the graph fail with 500s, its objects' first writes with 500s and
    // 429s: all retried.
    cluster.server().faults().add(
        Fault::new(FaultAction::InternalError)
            .on("resourcegraphs")
            .method("PATCH")
            .times(2),
    );
    cluster.server().faults().add(
        Fault::new(FaultAction::InternalError)
            .on("configmaps")
            .method("PATCH")
            .times(2),
    );
    cluster.server().faults().add(
        Fault::new(FaultAction::Throttle {
            retry_after_seconds: 1,
        })
        .on("configmaps")
        .method("PATCH")
        .times(1),
    );
    let nodes = r#"[{ id = "settings", object = { apiVersion = "v1", kind = "ConfigMap", metadata.name = "settings", data.a = "b" } }]"#;
    cluster
        .ok(&["apply", "-f", "-"], Some(&inline("flaky", nodes)))
        .await;
    cluster
        .transform_when(cluster.namespace(), "flaky", "Ready", |t| {
            condition(t, "Ready").is_some_and(|c| c["status"] == "True")
        })
        .await;
    // Warnings would have been published before the Transform became Ready.
    assert_eq!(
        warnings_about(&cluster, "flaky").await,
        Vec::<String>::new()
    );
    assert!(cluster.server().faults().hits() >= 5);
    cluster.stop().await;
}
