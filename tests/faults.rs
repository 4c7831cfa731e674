//! The operator under faults: graphs too large to store, an API server that refuses or
//! fails requests for a while. Every failure ends as a condition that says why, and passing
//! failures leave no Warning behind.

#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/net.rs"]
mod net;

use cluster::{Cluster, Timeline, condition, inline, shapes, skip_on_real_cluster};
use pequod_e2e::faults::{Fault, FaultAction};
use pequod_e2e::store::EventType;
use pequod_e2e::testing::eventually;
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
    let warnings = eventually(30, "a Warning event", || async {
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

/// How many of the Transforms are `Ready=True`.
async fn ready_transforms(cluster: &Cluster) -> usize {
    let list = cluster
        .json(&["get", "transforms"])
        .await
        .unwrap_or(Value::Null);
    list["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter(|t| condition(t, "Ready").is_some_and(|c| c["status"] == "True"))
                .count()
        })
        .unwrap_or(0)
}

/// Whether the operator with `/metrics` on `addr` leads.
async fn leads(addr: &str) -> Option<bool> {
    let text = cluster::http_get(addr, "/metrics").await?;
    Some(text.lines().any(|line| line == "pequod_leader 1"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_transforms_ride_out_chaos_and_lose_nothing() {
    if skip_on_real_cluster("needs fault injection and the server's change log") {
        return;
    }
    let mut cluster = Cluster::start().await;
    // The cluster's operator runs without leader election: two that elect take over.
    let _ = cluster.operator.kill().await;
    let server = cluster.server();
    let timeline = Timeline::record(server);
    let faults = server.faults();
    // Faults come and go, every n-th request of a kind, but each hits one object at most
    // twice: a node tolerates four transient failures in a row before it fails (and
    // publishes a Warning), and how the hits of a global count line up between concurrent
    // graphs, and between the faults on one object (a GET's, a PATCH's), is chance.
    let every = |n: u32, action: FaultAction, resource: &str, method: &str| {
        faults.add(
            Fault::new(action)
                .on(resource)
                .method(method)
                .every(n)
                .at_most_per_object(2),
        );
    };
    every(7, FaultAction::InternalError, "configmaps", "PATCH");
    every(
        5,
        FaultAction::Throttle {
            retry_after_seconds: 1,
        },
        "deployments",
        "PATCH",
    );
    every(11, FaultAction::InternalError, "configmaps", "GET");
    every(13, FaultAction::InternalError, "resourcegraphs", "PATCH");
    every(
        17,
        FaultAction::Throttle {
            retry_after_seconds: 1,
        },
        "transforms",
        "PATCH",
    );
    every(
        9,
        FaultAction::Latency(std::time::Duration::from_millis(300)),
        "deployments",
        "GET",
    );
    let flags = ["--leader-elect", "--leader-election-lease-duration", "3s"];
    let addrs = [
        format!("127.0.0.1:{}", net::free_port()),
        format!("127.0.0.1:{}", net::free_port()),
    ];
    let mut operators: Vec<tokio::process::Child> = addrs
        .iter()
        .map(|addr| cluster.spawn_operator(addr, &flags))
        .collect();
    let leader = eventually(60, "one leader", || async {
        match (leads(&addrs[0]).await?, leads(&addrs[1]).await?) {
            (true, false) => Some(0),
            (false, true) => Some(1),
            _ => None,
        }
    })
    .await;

    let transforms: Vec<String> = (0..200)
        .map(|i| {
            shapes(
                &format!("t{i:03}"),
                serde_json::json!([
                    {"id": format!("config-{i:03}")},
                    {"id": format!("app-{i:03}"), "kind": "Deployment", "dependsOn": [format!("config-{i:03}")]},
                ]),
            )
        })
        .collect();
    cluster
        .ok(&["apply", "-f", "-"], Some(&transforms.join("\n---\n")))
        .await;

    // Mid-run the watches drop and the leader is killed (SIGKILL): the standby takes over.
    eventually(300, "a quarter of the Transforms Ready", || async {
        (ready_transforms(&cluster).await >= 50).then_some(())
    })
    .await;
    server.drop_watches();
    let _ = operators[leader].kill().await;
    eventually(60, "the standby leads", || async {
        leads(&addrs[1 - leader]).await?.then_some(())
    })
    .await;
    server.drop_watches();
    eventually(600, "all 200 Transforms Ready", || async {
        (ready_transforms(&cluster).await == 200).then_some(())
    })
    .await;

    // No object that should exist was ever deleted, and none was created twice.
    let mut created: std::collections::BTreeMap<String, usize> = Default::default();
    for change in timeline.changes() {
        let resource = change.gr.resource.as_str();
        if resource != "configmaps" && resource != "deployments" {
            continue;
        }
        let name = format!(
            "{resource}/{}",
            change.object["metadata"]["name"].as_str().unwrap_or("")
        );
        assert_ne!(change.kind, EventType::Deleted, "{name} was deleted");
        if change.kind == EventType::Added {
            *created.entry(name).or_default() += 1;
        }
    }
    assert_eq!(created.len(), 400, "every object created");
    assert!(created.values().all(|n| *n == 1), "{created:?}");
    let requests = server.requests();
    assert_eq!(requests.count("delete", "configmaps"), 0);
    assert_eq!(requests.count("delete", "deployments"), 0);
    assert!(faults.hits() > 100, "the faults hit: {}", faults.hits());
    // Passing failures published no Warning.
    let events = cluster
        .json(&["get", "events.events.k8s.io"])
        .await
        .unwrap_or(Value::Null);
    let warnings: Vec<&Value> = events["items"]
        .as_array()
        .map(|items| items.iter().filter(|e| e["type"] == "Warning").collect())
        .unwrap_or_default();
    assert!(warnings.is_empty(), "{warnings:?}");
    for operator in &mut operators {
        let _ = operator.kill().await;
    }
    cluster.stop().await;
}
