//! End to end: the real `pequod run` binary against the test API server (`e2e/`), or with
//! `PEQUOD_E2E_CLUSTER=1` the cluster `KUBECONFIG` names (`common/cluster.rs`), driven with
//! the installed `kubectl` as a user would.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/net.rs"]
mod net;
#[path = "common/registry.rs"]
mod registry;
#[path = "common/git.rs"]
mod repo;

use cluster::{
    Cluster, Timeline, condition, http_get, inline, is_change_of, node, shapes,
    skip_on_real_cluster,
};
use pequod_e2e::store::EventType;
use pequod_e2e::testing::eventually;
use serde_json::Value;

/// `promtool check metrics` (Debian package prometheus) accepts the exposition.
async fn promtool_accepts(text: &str) {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (scripts/test-all.sh installs the prometheus package)");
    if let Some(mut input) = child.stdin.take() {
        input
            .write_all(text.as_bytes())
            .await
            .expect("promtool stdin");
    }
    let output = child.wait_with_output().await.expect("promtool ran");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "promtool check metrics: {report}\n{text}"
    );
    assert_eq!(report, "", "promtool has no complaints");
}

const NAMESPACE: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n";

fn metric(text: &str, line_start: &str) -> f64 {
    text.lines()
        .find(|line| line.starts_with(line_start))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webservice_transform_becomes_ready_in_dependency_order() {
    if skip_on_real_cluster(
        "needs the readiness simulator (a Deployment of a placeholder image becomes Available) and the test API server's change log",
    ) {
        return;
    }
    let cluster = Cluster::start().await;
    let mut changes = cluster.server().store().events();
    cluster.ok(&["apply", "-f", "-"], Some(NAMESPACE)).await;
    let transform = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/transforms/webservice.yaml"),
    )
    .expect("test Transform");
    cluster.ok(&["apply", "-f", "-"], Some(&transform)).await;

    let ready = eventually(60, "Transform Ready=True", || async {
        let transform = cluster
            .json(&["-n", "shop", "get", "transform", "shop-api"])
            .await?;
        (condition(&transform, "Ready")?["status"] == "True").then_some(transform)
    })
    .await;
    for step in ["ModuleResolved", "Validated", "Rendered"] {
        assert_eq!(
            condition(&ready, step).expect(step)["status"],
            "True",
            "{step}"
        );
    }
    assert_eq!(
        condition(&ready, "Ready").expect("Ready")["reason"],
        "AllNodesReady"
    );
    assert_eq!(ready["status"]["resourceGraphRef"]["name"], "shop-api");
    assert_eq!(
        ready["status"]["outputs"]["serviceHost"],
        "shop-api.shop.svc.cluster.local"
    );
    assert_eq!(ready["status"]["observedGeneration"], 1);
    assert!(
        ready["status"]["resolvedModule"]["digest"]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:")),
        "{ready}"
    );

    // The graph: owned by the Transform, every node Ready, an inventory of what it wrote.
    let graph = cluster
        .json(&["-n", "shop", "get", "resourcegraph", "shop-api"])
        .await
        .expect("ResourceGraph");
    assert_eq!(graph["metadata"]["ownerReferences"][0]["kind"], "Transform");
    assert_eq!(graph["metadata"]["ownerReferences"][0]["controller"], true);
    assert_eq!(graph["status"]["phase"], "Ready");
    assert_eq!(graph["status"]["summary"]["readyText"], "4/4");
    let nodes = graph["status"]["nodes"].as_object().expect("node statuses");
    let mut ids: Vec<&String> = nodes.keys().collect();
    ids.sort();
    assert_eq!(ids, ["deployment", "pdb", "service", "serviceaccount"]);
    for (id, node) in nodes {
        assert_eq!(node["phase"], "Ready", "{id}: {node}");
        assert_eq!(node["attempts"], 1, "{id}: applied once");
    }
    assert_eq!(
        graph["status"]["inventory"].as_array().map(Vec::len),
        Some(4)
    );

    // The objects, with Pequod's labels, written by field manager pequod.
    for (kind, node) in [
        ("serviceaccount", "serviceaccount"),
        ("deployment", "deployment"),
        ("service", "service"),
        ("poddisruptionbudget", "pdb"),
    ] {
        let object = cluster
            .json(&[
                "-n",
                "shop",
                "get",
                kind,
                "shop-api",
                "--show-managed-fields",
            ])
            .await
            .unwrap_or_else(|| panic!("{kind} shop-api exists"));
        let labels = &object["metadata"]["labels"];
        assert_eq!(labels["app.kubernetes.io/managed-by"], "pequod", "{kind}");
        assert_eq!(labels["platform.pequod.io/transform"], "shop-api", "{kind}");
        assert_eq!(
            labels["platform.pequod.io/resource-graph"], "shop-api",
            "{kind}"
        );
        assert_eq!(labels["platform.pequod.io/node-id"], node, "{kind}");
        assert_eq!(
            object["metadata"]["managedFields"][0]["manager"], "pequod",
            "{kind}"
        );
        assert_eq!(
            object["metadata"]["managedFields"][0]["operation"], "Apply",
            "{kind}"
        );
    }

    // Order: the Deployment was created only after its ServiceAccount existed (Ready).
    let mut created: Vec<(u64, String)> = Vec::new();
    while let Ok(change) = changes.try_recv() {
        if change.kind == EventType::Added && change.namespace == "shop" {
            created.push((change.rv, change.gr.resource.clone()));
        }
    }
    let position = |resource: &str| {
        created
            .iter()
            .position(|(_, r)| r == resource)
            .unwrap_or_else(|| panic!("{resource} created: {created:?}"))
    };
    assert!(
        position("serviceaccounts") < position("deployments"),
        "{created:?}"
    );

    // kubectl shows the printer columns.
    let table = cluster.ok(&["-n", "shop", "get", "tf,rg"], None).await;
    let lines: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        ["NAME", "MODULE", "READY", "PENDING", "AGE"],
        "{table}"
    );
    assert_eq!(
        lines[1][..3],
        [
            "transform.platform.pequod.io/shop-api",
            "webservice",
            "True"
        ],
        "{table}"
    );
    let graph_header = lines
        .iter()
        .position(|l| l.first() == Some(&"NAME") && l.get(1) == Some(&"PHASE"))
        .expect("graph table");
    assert_eq!(
        lines[graph_header],
        ["NAME", "PHASE", "READY", "AGE"],
        "{table}"
    );
    assert_eq!(
        lines[graph_header + 1][..3],
        ["resourcegraph.platform.pequod.io/shop-api", "Ready", "4/4"],
        "{table}"
    );

    // The metrics moved.
    let text = http_get(&cluster.metrics, "/metrics")
        .await
        .expect("/metrics");
    assert!(
        metric(
            &text,
            "pequod_reconcile_total{controller=\"transform\",result=\"success\"}"
        ) >= 1.0,
        "{text}"
    );
    assert!(
        metric(&text, "pequod_apply_total{result=\"success\"}") >= 4.0,
        "{text}"
    );
    assert_eq!(metric(&text, "pequod_resources_managed"), 4.0, "{text}");
    assert_eq!(
        metric(&text, "pequod_graph_nodes{phase=\"Ready\"}"),
        4.0,
        "{text}"
    );
    promtool_accepts(&text).await;

    // pequod status and pequod tree read the same from the cluster.
    let status = cluster.pequod(&["status", "shop-api", "-n", "shop"]).await;
    let lines: Vec<&str> = status.lines().collect();
    assert_eq!(
        lines[0],
        "Transform shop/shop-api  Ready=True AllNodesReady  webservice@0.2.0  4/4 ready"
    );
    assert!(
        lines[1].starts_with("Module:  embedded webservice (sha256:"),
        "{status}"
    );
    assert!(
        status.contains("\nOutputs:\n  serviceHost: shop-api.shop.svc.cluster.local\n"),
        "{status}"
    );
    let deployment_row = lines
        .iter()
        .find(|l| l.trim_start().starts_with("deployment "))
        .expect("a deployment row");
    let cells: Vec<&str> = deployment_row.split_whitespace().collect();
    assert_eq!(
        cells[..5],
        ["deployment", "Deployment", "shop-api", "Ready", cells[4]]
    );
    assert!(
        deployment_row.ends_with("serviceaccount  Ready"),
        "{deployment_row}"
    );
    let tree = cluster.pequod(&["tree", "shop-api", "-n", "shop"]).await;
    let expected = [
        "Transform shop/shop-api  Ready=True",
        "├── serviceaccount  ServiceAccount shop-api  Ready  ",
        "│   └── deployment  Deployment shop-api  Ready  ",
        "├── service  Service shop-api  Ready  ",
        "└── pdb  PodDisruptionBudget shop-api  Ready  ",
    ];
    let lines: Vec<&str> = tree.lines().collect();
    assert_eq!(lines.len(), expected.len(), "{tree}");
    for (line, start) in lines.iter().zip(expected) {
        assert!(line.starts_with(start), "{tree}");
    }
    cluster.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pequod_render_prints_the_graph_the_operator_writes() {
    let cluster = Cluster::start().await;
    let ns = cluster.namespace().to_owned();
    // Adoption, a lowered policy (a warning recorded) and outputs: every part of the plan.
    cluster
        .ok(
            &["apply", "-f", "-"],
            Some("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: legacy-settings}\ndata: {a: b}\n"),
        )
        .await;
    let transform = "apiVersion: platform.pequod.io/v1alpha1
kind: Transform
metadata: {name: same-plan}
spec:
  moduleRef: {type: embedded, ref: webservice}
  input: {name: same-plan, image: ghcr.io/acme/api:1.0.0, probes: {type: none}}
  policies: [{name: probes-set, enforcement: Warn}]
  adopt:
    strategy: TakeOwnership
    resources: [{apiVersion: v1, kind: ConfigMap, name: legacy-settings}]
";
    cluster.ok(&["apply", "-f", "-"], Some(transform)).await;
    let written = cluster
        .graph_when(&ns, "same-plan", "the graph written", |g| {
            g["spec"]["nodes"].is_array()
        })
        .await;
    // The Transform as the cluster stores it (with its uid), rendered offline.
    let stored = cluster
        .ok(&["get", "transform", "same-plan", "-o", "yaml"], None)
        .await;
    let dir = tempfile::tempdir().expect("temporary directory");
    let file = dir.path().join("transform.yaml");
    std::fs::write(&file, stored).expect("written");
    let printed = cluster
        .pequod(&["render", "-f", &file.display().to_string(), "-o", "json"])
        .await;
    let printed: Value = serde_json::from_str(&printed).expect("JSON");
    let mut spec = written["spec"].clone();
    // The operator stamps when it rendered; that is the one difference.
    assert!(spec["metadata"]["renderedAt"].is_string());
    spec["metadata"]
        .as_object_mut()
        .expect("metadata")
        .remove("renderedAt");
    assert_eq!(printed["spec"], spec);
    assert_eq!(
        printed["spec"]["violations"][0]["policy"], "probes-set",
        "the lowered policy is a warning"
    );
    assert!(printed["spec"]["outputs"]["serviceHost"].is_string());
    let adopted = printed["spec"]["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|n| n["adopted"] == "TakeOwnership")
        .expect("the adopted node");
    assert_eq!(adopted["id"], "adopted-configmap-legacy-settings");
    assert_eq!(printed["metadata"], {
        let mut metadata = written["metadata"].clone();
        for transient in [
            "creationTimestamp",
            "generation",
            "managedFields",
            "resourceVersion",
            "uid",
            "finalizers",
        ] {
            metadata
                .as_object_mut()
                .expect("metadata")
                .remove(transient);
        }
        metadata
    });
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_fails_a_node_blocks_its_dependents_and_spares_other_branches() {
    if skip_on_real_cluster(
        "needs the simulator's never_ready (a Deployment that never becomes Available while others do)",
    ) {
        return;
    }
    let cluster = Cluster::start().await;
    cluster
        .server()
        .simulator()
        .never_ready("Deployment", "default", "slow");
    let nodes = serde_json::json!([
        {"id": "base"},
        {"id": "slow", "kind": "Deployment", "dependsOn": ["base"], "timeoutSeconds": 2},
        {"id": "after", "dependsOn": ["slow"]},
        {"id": "other", "dependsOn": ["base"]},
    ]);
    cluster
        .ok(&["apply", "-f", "-"], Some(&shapes("branches", nodes)))
        .await;
    let graph = cluster
        .graph_when("default", "branches", "the slow node Failed", |g| {
            node(g, "slow")["phase"] == "Failed"
        })
        .await;
    assert_eq!(
        node(&graph, "slow")["message"],
        "not ready after 2s: Available=False: MinimumReplicasUnavailable: Deployment does not have minimum availability."
    );
    assert_eq!(node(&graph, "after")["phase"], "Blocked");
    assert_eq!(node(&graph, "after")["message"], "dependency `slow` failed");
    assert_eq!(node(&graph, "other")["phase"], "Ready");
    assert_eq!(node(&graph, "base")["phase"], "Ready");
    assert_eq!(graph["status"]["phase"], "Failed");
    let found = cluster.exists(&["get", "configmap", "after"]).await;
    assert!(!found, "a blocked node is never applied");
    let transform = cluster
        .transform_when("default", "branches", "Transform Ready=False", |t| {
            condition(t, "Ready").is_some_and(|c| c["reason"] == "NodeFailed")
        })
        .await;
    let message = condition(&transform, "Ready").expect("Ready")["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(message.starts_with("slow: not ready after 2s"), "{message}");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_updates_reapply_prune_and_orphan_and_a_broken_update_changes_nothing() {
    let cluster = Cluster::start().await;
    let ns = cluster.namespace().to_owned();
    let nodes = serde_json::json!([
        {"id": "a"},
        {"id": "b", "dependsOn": ["a"]},
        {"id": "keep", "deletionPolicy": "Orphan"},
    ]);
    cluster
        .ok(&["apply", "-f", "-"], Some(&shapes("updates", nodes)))
        .await;
    cluster
        .graph_when(&ns, "updates", "first version Ready", |g| {
            g["status"]["phase"] == "Ready"
        })
        .await;

    let nodes = serde_json::json!([{"id": "a", "value": "v2"}]);
    cluster
        .ok(&["apply", "-f", "-"], Some(&shapes("updates", nodes)))
        .await;
    let graph = cluster
        .graph_when(&ns, "updates", "second version Ready", |g| {
            g["status"]["phase"] == "Ready" && g["status"]["summary"]["total"] == 1
        })
        .await;
    let value = cluster
        .ok(
            &["get", "configmap", "a", "-o", "jsonpath={.data.value}"],
            None,
        )
        .await;
    assert_eq!(value, "v2");
    assert_eq!(node(&graph, "a")["attempts"], 2);
    // Removed nodes leave the status; the object left in the cluster is listed as such.
    let phases: Vec<(&String, &Value)> = graph["status"]["nodes"]
        .as_object()
        .expect("nodes")
        .iter()
        .map(|(id, status)| (id, &status["phase"]))
        .collect();
    assert_eq!(
        phases,
        [
            (&"a".to_string(), &Value::from("Ready")),
            (&"keep".to_string(), &Value::from("Orphaned"))
        ],
        "{graph}"
    );
    assert_eq!(
        node(&graph, "keep")["message"],
        "left the graph; stays in the cluster (deletionPolicy: Orphan)"
    );
    let inventory: Vec<&str> = graph["status"]["inventory"]
        .as_array()
        .expect("inventory")
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert_eq!(inventory, ["a"]);
    eventually(30, "b pruned", || async {
        let found = cluster.exists(&["get", "configmap", "b"]).await;
        (!found).then_some(())
    })
    .await;
    let kept = cluster.exists(&["get", "configmap", "keep"]).await;
    assert!(kept, "deletionPolicy Orphan leaves the object");

    // A broken input: Validated=False, the graph and the objects stay as they were.
    let before = cluster
        .json(&["get", "resourcegraph", "updates"])
        .await
        .expect("graph");
    let broken = shapes("updates", serde_json::json!([{"id": 5}]));
    cluster.ok(&["apply", "-f", "-"], Some(&broken)).await;
    let transform = cluster
        .transform_when(&ns, "updates", "Validated=False", |t| {
            condition(t, "Validated").is_some_and(|c| c["status"] == "False")
        })
        .await;
    let validated = condition(&transform, "Validated").expect("Validated");
    assert_eq!(validated["reason"], "InvalidInput");
    assert!(
        validated["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("contract violation at input.nodes[0].id:")),
        "{validated}"
    );
    assert_eq!(
        condition(&transform, "Rendered").expect("Rendered")["status"],
        "Unknown",
        "nothing rendered from an invalid input"
    );
    assert_eq!(
        condition(&transform, "ModuleResolved").expect("ModuleResolved")["status"],
        "True"
    );
    assert_eq!(transform["status"]["observedGeneration"], 3);
    let ready = condition(&transform, "Ready").expect("Ready");
    assert_eq!(
        (&ready["status"], &ready["reason"]),
        (&Value::from("False"), &Value::from("InvalidInput"))
    );
    eventually(30, "a ValidationFailed event", || async {
        let events = cluster.json(&["get", "events.events.k8s.io"]).await?;
        events["items"]
            .as_array()?
            .iter()
            .any(|e| {
                e["reason"] == "ValidationFailed"
                    && e["type"] == "Warning"
                    && e["regarding"]["name"] == "updates"
            })
            .then_some(())
    })
    .await;
    // The Transform's status is written last in a reconcile: the one that reported the
    // failure would have written the graph before it.
    let after = cluster
        .json(&["get", "resourcegraph", "updates"])
        .await
        .expect("graph");
    assert_eq!(
        after["spec"], before["spec"],
        "a failed render leaves the graph alone"
    );
    let found = cluster.exists(&["get", "configmap", "a"]).await;
    assert!(found, "nothing pruned after a failed render");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_is_corrected_and_conflicts_name_the_other_manager() {
    let cluster = Cluster::start().await;
    let ns = cluster.namespace().to_owned();
    let nodes = serde_json::json!([{"id": "mine"}, {"id": "taken"}]);
    cluster
        .ok(&["apply", "-f", "-"], Some(&shapes("drift", nodes)))
        .await;
    cluster
        .graph_when(&ns, "drift", "Ready", |g| g["status"]["phase"] == "Ready")
        .await;
    // While the Transform is suspended (nothing corrected), another team applies the
    // ConfigMap's value; then the Transform changes that value and resumes.
    let mut suspended: Value = serde_json::from_str(&shapes(
        "drift",
        serde_json::json!([{"id": "mine"}, {"id": "taken"}]),
    ))
    .expect("JSON");
    suspended["spec"]["suspend"] = Value::Bool(true);
    cluster
        .ok(&["apply", "-f", "-"], Some(&suspended.to_string()))
        .await;
    cluster
        .graph_when(&ns, "drift", "the graph suspended", |g| {
            g["spec"]["suspend"] == true
        })
        .await;
    let theirs =
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: taken}\ndata: {value: theirs}\n";
    cluster
        .ok(
            &[
                "apply",
                "--server-side",
                "--force-conflicts",
                "--field-manager",
                "other-team",
                "-f",
                "-",
            ],
            Some(theirs),
        )
        .await;
    let nodes = serde_json::json!([{"id": "mine"}, {"id": "taken", "value": "v2"}]);
    cluster
        .ok(&["apply", "-f", "-"], Some(&shapes("drift", nodes)))
        .await;
    let graph = cluster
        .graph_when(&ns, "drift", "the conflict reported", |g| {
            node(g, "taken")["phase"] == "Failed"
        })
        .await;
    assert_eq!(
        node(&graph, "taken")["message"],
        "Apply failed with 1 conflict: conflict with \"other-team\": .data.value (set applyPolicy.conflictPolicy: Force to take the fields)"
    );
    assert_eq!(node(&graph, "taken")["reason"], "Conflict");
    assert_eq!(node(&graph, "mine")["phase"], "Ready");

    // With Force the fields are taken.
    let nodes = serde_json::json!([{"id": "mine"}, {"id": "taken", "value": "v2", "conflictPolicy": "Force"}]);
    cluster
        .ok(&["apply", "-f", "-"], Some(&shapes("drift", nodes)))
        .await;
    cluster
        .graph_when(&ns, "drift", "taken by force", |g| {
            g["status"]["phase"] == "Ready"
        })
        .await;
    let value = cluster
        .ok(
            &["get", "configmap", "taken", "-o", "jsonpath={.data.value}"],
            None,
        )
        .await;
    assert_eq!(value, "v2");

    // An edit of a managed field is reverted.
    cluster
        .ok(
            &[
                "patch",
                "configmap",
                "mine",
                "--type",
                "merge",
                "-p",
                "{\"data\":{\"value\":\"edited\"}}",
            ],
            None,
        )
        .await;
    eventually(30, "the edit reverted", || async {
        let value = cluster
            .ok(
                &["get", "configmap", "mine", "-o", "jsonpath={.data.value}"],
                None,
            )
            .await;
        (value == "v1").then_some(())
    })
    .await;
    let graph = cluster
        .graph_when(&ns, "drift", "drift reported", |g| {
            node(g, "mine")["message"] == "Ready (drift corrected)"
        })
        .await;
    assert_eq!(node(&graph, "mine")["attempts"], 2);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_transform_deletes_dependents_first_and_keeps_orphans() {
    let cluster = Cluster::start().await;
    let ns = cluster.namespace().to_owned();
    let nodes = serde_json::json!([
        {"id": "root"},
        {"id": "middle", "dependsOn": ["root"]},
        {"id": "leaf", "dependsOn": ["middle"]},
        {"id": "keep", "deletionPolicy": "Orphan"},
    ]);
    cluster
        .ok(&["apply", "-f", "-"], Some(&shapes("chain", nodes)))
        .await;
    cluster
        .graph_when(&ns, "chain", "the chain Ready", |g| {
            g["status"]["phase"] == "Ready"
        })
        .await;
    // Every change of the ConfigMaps from here on, in the order the API server made them.
    let watch = cluster
        .watch("configmaps", &["root", "middle", "leaf", "keep"])
        .await;
    cluster
        .ok(&["delete", "transform", "chain", "--timeout=60s"], None)
        .await;
    eventually(60, "the ResourceGraph gone", || async {
        let found = cluster.exists(&["get", "resourcegraph", "chain"]).await;
        (!found).then_some(())
    })
    .await;
    let (leaf, middle, root) = eventually(30, "the deletions seen by the watch", || async {
        let deleted = |name| watch.first("DELETED", name);
        Some((deleted("leaf")?, deleted("middle")?, deleted("root")?))
    })
    .await;
    assert!(leaf < middle && middle < root, "dependents first");
    let kept = cluster.exists(&["get", "configmap", "keep"]).await;
    assert!(kept, "the orphan stays");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_operator_resumes_and_api_errors_are_retried() {
    if skip_on_real_cluster(
        "needs fault injection (500 and 429 answers) and the simulator's readiness delay",
    ) {
        return;
    }
    use pequod_e2e::faults::{Fault, FaultAction};
    let mut cluster = Cluster::start().await;
    // The first writes of `flaky` fail with 500, then with 429: retried, not fatal.
    cluster.server().faults().add(
        Fault::new(FaultAction::InternalError)
            .on("configmaps")
            .method("PATCH")
            .named("flaky")
            .times(2),
    );
    cluster.server().faults().add(
        Fault::new(FaultAction::Throttle {
            retry_after_seconds: 1,
        })
        .on("configmaps")
        .method("PATCH")
        .named("flaky")
        .times(1),
    );
    // The Deployment takes a while: the operator is restarted while it waits.
    cluster
        .server()
        .simulator()
        .set_delay(Duration::from_secs(4));
    let nodes = serde_json::json!([
        {"id": "steady"},
        {"id": "flaky", "dependsOn": ["steady"]},
        {"id": "web", "kind": "Deployment", "dependsOn": ["flaky"]},
    ]);
    cluster
        .ok(&["apply", "-f", "-"], Some(&shapes("resume", nodes)))
        .await;
    let graph = cluster
        .graph_when(
            "default",
            "resume",
            "the Deployment waiting, despite API errors",
            |g| node(g, "web")["phase"] == "WaitingReady",
        )
        .await;
    assert_eq!(node(&graph, "steady")["attempts"], 1);
    let flaky_attempts = node(&graph, "flaky")["attempts"].as_u64().unwrap_or(0);
    assert!(
        flaky_attempts >= 2,
        "the failed writes were retried: {graph}"
    );
    assert_eq!(node(&graph, "flaky")["phase"], "Ready");
    let (steady_rv, flaky_rv) = (
        cluster.resource_version("configmap", "steady").await,
        cluster.resource_version("configmap", "flaky").await,
    );

    cluster.restart_operator().await;
    let graph = cluster
        .graph_when("default", "resume", "Ready after the restart", |g| {
            g["status"]["phase"] == "Ready"
        })
        .await;
    assert_eq!(
        node(&graph, "steady")["attempts"],
        1,
        "Ready nodes are not re-applied"
    );
    assert_eq!(node(&graph, "flaky")["attempts"], flaky_attempts);
    assert_eq!(
        node(&graph, "web")["attempts"],
        1,
        "the waiting Deployment is not re-applied"
    );
    assert_eq!(
        cluster.resource_version("configmap", "steady").await,
        steady_rv,
        "no write after the restart"
    );
    assert_eq!(
        cluster.resource_version("configmap", "flaky").await,
        flaky_rv,
        "no write after the restart"
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webservice_waits_for_its_database_and_says_why() {
    if skip_on_real_cluster(
        "needs the readiness simulator (a CloudNativePG Cluster without its operator, a Deployment of a placeholder image)",
    ) {
        return;
    }
    let cluster = Cluster::start_with(Duration::from_secs(4)).await;
    cluster.ok(&["apply", "-f", "-"], Some(NAMESPACE)).await;
    let database = "\
apiVersion: platform.pequod.io/v1alpha1
kind: Transform
metadata: { name: orders-db, namespace: shop }
spec:
  moduleRef: { type: embedded, ref: postgres }
  input: { name: orders-db, preset: minimal, storage: { size: 1Gi } }
";
    let webservice = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata/transforms/webservice-database-direct.yaml"),
    )
    .expect("test Transform");
    cluster.ok(&["apply", "-f", "-"], Some(database)).await;
    cluster.ok(&["apply", "-f", "-"], Some(&webservice)).await;
    let graph = cluster
        .graph_when(
            "shop",
            "orders-api",
            "the Deployment waiting for the database",
            |g| {
                node(g, "deployment")["phase"] == "Pending"
                    && node(g, "database")["phase"] == "WaitingReady"
            },
        )
        .await;
    assert_eq!(
        node(&graph, "deployment")["message"],
        "waiting for `database` to be Ready"
    );
    let waiting = node(&graph, "database")["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        waiting == "Ready=False: ClusterIsNotReady: Cluster Is Not Ready"
            || waiting.starts_with("waiting for Cluster shop/orders-db to exist"),
        "{waiting}"
    );
    let found = cluster
        .exists(&["-n", "shop", "get", "deployment", "orders-api"])
        .await;
    assert!(!found, "the Deployment waits");
    cluster
        .transform_when("shop", "orders-api", "the webservice Ready", |t| {
            condition(t, "Ready").is_some_and(|c| c["status"] == "True")
        })
        .await;
    cluster
        .transform_when("shop", "orders-db", "the database Ready", |t| {
            condition(t, "Ready").is_some_and(|c| c["status"] == "True")
        })
        .await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relabelled_transform_moves_to_its_shard_with_its_graph_and_objects_untouched() {
    if skip_on_real_cluster("counts one replica's reconciles from its metrics") {
        return;
    }
    // The cluster's operator is the unsharded replica; a second one serves shard-a.
    let cluster = Cluster::start().await;
    let ns = cluster.namespace().to_owned();
    let shard_metrics = format!("127.0.0.1:{}", net::free_port());
    let mut shard = cluster.spawn_operator(&shard_metrics, &["--shard", "shard-a"]);
    let transform_reconciles = |addr: String| async move {
        let text = http_get(&addr, "/metrics").await?;
        Some(metric(
            &text,
            "pequod_reconcile_total{controller=\"transform\",result=\"success\"}",
        ))
    };
    eventually(30, "the shard replica serves", || async {
        transform_reconciles(shard_metrics.clone())
            .await
            .map(|_| ())
    })
    .await;
    cluster
        .ok(
            &["apply", "-f", "-"],
            Some(&shapes("moving", serde_json::json!([{"id": "one"}]))),
        )
        .await;
    cluster
        .graph_when(&ns, "moving", "the unsharded replica runs it", |g| {
            g["status"]["phase"] == "Ready"
        })
        .await;
    assert_eq!(
        transform_reconciles(shard_metrics.clone()).await,
        Some(0.0),
        "the shard replica never saw an unlabelled Transform"
    );
    let object = cluster
        .json(&["get", "configmap", "one"])
        .await
        .expect("the node's ConfigMap");

    cluster
        .ok(
            &[
                "label",
                "transform",
                "moving",
                "sharding.pequod.io/key=shard-a",
            ],
            None,
        )
        .await;
    let graph = cluster
        .graph_when(&ns, "moving", "the graph follows its Transform", |g| {
            g["metadata"]["labels"]["sharding.pequod.io/key"] == "shard-a"
        })
        .await;
    assert_eq!(graph["status"]["phase"], "Ready");
    // The graph is written in the middle of the shard replica's reconcile; the reconcile is
    // counted when it ends.
    eventually(30, "the shard replica reconciled it", || async {
        transform_reconciles(shard_metrics.clone())
            .await
            .filter(|n| *n >= 1.0)
            .map(|_| ())
    })
    .await;
    let moved = cluster
        .json(&["get", "configmap", "one"])
        .await
        .expect("still there");
    assert_eq!(
        moved["metadata"]["resourceVersion"], object["metadata"]["resourceVersion"],
        "the move wrote nothing to the graph's objects"
    );

    // From now on the shard replica alone carries its changes.
    cluster
        .ok(
            &["apply", "-f", "-"],
            Some(&shapes(
                "moving",
                serde_json::json!([{"id": "one"}, {"id": "two"}]),
            )),
        )
        .await;
    cluster
        .graph_when(
            &ns,
            "moving",
            "the shard replica applies the new node",
            |g| g["status"]["phase"] == "Ready" && g["status"]["nodes"]["two"].is_object(),
        )
        .await;
    let graph = cluster
        .json(&["get", "resourcegraph", "moving"])
        .await
        .expect("the graph");
    assert_eq!(
        graph["metadata"]["labels"]["sharding.pequod.io/key"], "shard-a",
        "a re-render keeps the shard: {graph}"
    );
    let _ = shard.kill().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_at_a_time_and_a_standby_takes_over() {
    let cluster = Cluster::start().await;
    let ns = cluster.namespace().to_owned();
    // The cluster's own operator runs without leader election: stop it, start two that elect.
    let mut cluster = cluster;
    let _ = cluster.operator.kill().await;
    let flags = ["--leader-elect", "--leader-election-lease-duration", "3s"];
    let addrs = [
        format!("127.0.0.1:{}", net::free_port()),
        format!("127.0.0.1:{}", net::free_port()),
    ];
    let mut operators: Vec<tokio::process::Child> = addrs
        .iter()
        .map(|addr| cluster.spawn_operator(addr, &flags))
        .collect();
    let leader_gauge = |addr: String| async move {
        let text = http_get(&addr, "/metrics").await?;
        Some(metric(&text, "pequod_leader "))
    };
    let leader = eventually(30, "one leader", || async {
        let a = leader_gauge(addrs[0].clone()).await?;
        let b = leader_gauge(addrs[1].clone()).await?;
        match (a, b) {
            (x, y) if x == 1.0 && y == 0.0 => Some(0),
            (x, y) if x == 0.0 && y == 1.0 => Some(1),
            _ => None,
        }
    })
    .await;
    let lease = cluster
        .ok(
            &[
                "get",
                "lease",
                "pequod-leader",
                "-o",
                "jsonpath={.spec.holderIdentity}",
            ],
            None,
        )
        .await;
    assert!(!lease.is_empty(), "the Lease names its holder");
    cluster
        .ok(
            &["apply", "-f", "-"],
            Some(&shapes("first", serde_json::json!([{"id": "one"}]))),
        )
        .await;
    cluster
        .graph_when(&ns, "first", "the leader reconciles", |g| {
            g["status"]["phase"] == "Ready"
        })
        .await;

    // The leader goes away; the standby takes the Lease and carries on.
    let _ = operators[leader].kill().await;
    let standby = 1 - leader;
    eventually(30, "the standby leads", || async {
        (leader_gauge(addrs[standby].clone()).await? == 1.0).then_some(())
    })
    .await;
    cluster
        .ok(
            &["apply", "-f", "-"],
            Some(&shapes("second", serde_json::json!([{"id": "two"}]))),
        )
        .await;
    cluster
        .graph_when(&ns, "second", "the new leader reconciles", |g| {
            g["status"]["phase"] == "Ready"
        })
        .await;
    for operator in &mut operators {
        let _ = operator.kill().await;
    }
    cluster.stop().await;
}

/// The CustomResourceDefinition of kind Widget, in group `example.com`.
const WIDGET_CRD: &str = "\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec: {type: object, properties: {size: {type: integer}}}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kind_that_is_not_installed_fails_its_node_until_its_crd_appears() {
    let cluster = Cluster::start().await;
    let ns = cluster.namespace().to_owned();
    // CRDs are cluster-wide: on a real cluster the group is the test's own.
    let group = cluster.cluster_scoped_name("example.com");
    let crd = format!("crd/widgets.{group}");
    cluster.delete_when_done(&crd);
    let nodes = r#"[
      { id = "widget", object = { apiVersion = "example.com/v1", kind = "Widget", metadata = { name = "w" }, spec = { size = 3 } }, readyWhen = [ready.exists] },
      { id = "after", object = { apiVersion = "v1", kind = "ConfigMap", metadata = { name = "after" } }, dependsOn = ["widget"] },
    ]"#
    .replace("example.com", &group);
    cluster
        .ok(&["apply", "-f", "-"], Some(&inline("widgets", &nodes)))
        .await;
    let graph = cluster
        .graph_when(&ns, "widgets", "the widget node Failed", |g| {
            node(g, "widget")["phase"] == "Failed"
        })
        .await;
    assert_eq!(
        node(&graph, "widget")["message"],
        format!("kind Widget of {group}/v1 is not installed in the cluster (no such API resource)")
    );
    assert_eq!(node(&graph, "after")["phase"], "Blocked");
    cluster
        .ok(
            &["apply", "-f", "-"],
            Some(&WIDGET_CRD.replace("example.com", &group)),
        )
        .await;
    cluster
        .graph_when(&ns, "widgets", "Ready once the CRD exists", |g| {
            g["status"]["phase"] == "Ready"
        })
        .await;
    let size = cluster
        .ok(
            &[
                "get",
                &format!("widgets.{group}"),
                "w",
                "-o",
                "jsonpath={.spec.size}",
            ],
            None,
        )
        .await;
    assert_eq!(size, "3");
    // The CRD goes (and its objects with it): deleting the Transform still completes.
    cluster.ok(&["delete", &crd, "--timeout=30s"], None).await;
    cluster
        .ok(&["delete", "transform", "widgets", "--timeout=60s"], None)
        .await;
    eventually(60, "the graph gone", || async {
        let found = cluster.exists(&["get", "resourcegraph", "widgets"]).await;
        (!found).then_some(())
    })
    .await;
    let found = cluster.exists(&["get", "configmap", "after"]).await;
    assert!(!found, "the rest of the graph was deleted");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_outside_the_namespace_or_cluster_scoped_are_refused() {
    let cluster = Cluster::start().await;
    let ns = cluster.namespace().to_owned();
    let team_b = cluster.cluster_scoped_name("team-b");
    let nodes = r#"[
      { id = "elsewhere", object = { apiVersion = "v1", kind = "ConfigMap", metadata = { name = "x", namespace = "kube-system" } } },
      { id = "namespace", object = { apiVersion = "v1", kind = "Namespace", metadata = { name = "team-b" } } },
      { id = "fine", object = { apiVersion = "v1", kind = "ConfigMap", metadata = { name = "fine" } } },
    ]"#
    .replace("team-b", &team_b);
    cluster
        .ok(&["apply", "-f", "-"], Some(&inline("guards", &nodes)))
        .await;
    let graph = cluster
        .graph_when(&ns, "guards", "both refused", |g| {
            node(g, "elsewhere")["phase"] == "Failed" && node(g, "namespace")["phase"] == "Failed"
        })
        .await;
    assert_eq!(
        node(&graph, "elsewhere")["message"],
        format!(
            "ConfigMap kube-system/x is outside the graph's namespace {ns}: refused (the operator runs without --allow-cross-namespace)"
        )
    );
    assert_eq!(
        node(&graph, "namespace")["message"],
        format!(
            "Namespace {team_b} is cluster-scoped: refused (the operator runs without --allow-cluster-scoped)"
        )
    );
    assert_eq!(node(&graph, "fine")["phase"], "Ready");
    let found = cluster.exists(&["get", "namespace", &team_b]).await;
    assert!(!found);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_transform_is_left_alone_and_events_tell_what_happened() {
    let cluster = Cluster::start().await;
    let ns = cluster.namespace().to_owned();
    let nodes = serde_json::json!([{"id": "cfg"}]);
    cluster
        .ok(&["apply", "-f", "-"], Some(&shapes("paused", nodes)))
        .await;
    cluster
        .graph_when(&ns, "paused", "Ready", |g| g["status"]["phase"] == "Ready")
        .await;
    let mut suspended: Value = serde_json::from_str(&shapes(
        "paused",
        serde_json::json!([{"id": "cfg", "value": "v2"}]),
    ))
    .expect("JSON");
    suspended["spec"]["suspend"] = Value::Bool(true);
    cluster
        .ok(&["apply", "-f", "-"], Some(&suspended.to_string()))
        .await;
    let transform = cluster
        .transform_when(&ns, "paused", "Suspended=True", |t| {
            condition(t, "Suspended").is_some_and(|c| c["status"] == "True")
        })
        .await;
    assert_eq!(transform["status"]["observedGeneration"], 2);
    // Nothing runs while suspended: neither the new input nor drift correction.
    eventually(30, "the graph suspended", || async {
        let graph = cluster.json(&["get", "resourcegraph", "paused"]).await?;
        (graph["spec"]["suspend"] == true).then_some(())
    })
    .await;
    let timeline = cluster
        .test_server_or_skip("the order of the changes, read in the test API server's change log")
        .map(Timeline::record);
    cluster
        .ok(
            &[
                "patch",
                "configmap",
                "cfg",
                "--type",
                "merge",
                "-p",
                "{\"data\":{\"value\":\"by-hand\"}}",
            ],
            None,
        )
        .await;
    suspended["spec"]["suspend"] = Value::Bool(false);
    cluster
        .ok(&["apply", "-f", "-"], Some(&suspended.to_string()))
        .await;
    eventually(30, "the update once resumed", || async {
        let value = cluster
            .ok(
                &["get", "configmap", "cfg", "-o", "jsonpath={.data.value}"],
                None,
            )
            .await;
        (value == "v2").then_some(())
    })
    .await;
    if let Some(timeline) = timeline {
        // The hand edit stayed until the Transform was resumed: the next change of the
        // ConfigMap after it is the operator's write of v2, after the resume.
        let changes = timeline.changes();
        let by_hand = changes
            .iter()
            .position(|c| {
                is_change_of(c, "configmaps", "cfg") && c.object["data"]["value"] == "by-hand"
            })
            .expect("the hand edit");
        let resumed = changes
            .iter()
            .position(|c| {
                is_change_of(c, "transforms", "paused") && c.object["spec"]["suspend"] == false
            })
            .expect("the resume");
        let next = by_hand
            + 1
            + changes[by_hand + 1..]
                .iter()
                .position(|c| is_change_of(c, "configmaps", "cfg"))
                .expect("a later change of the ConfigMap");
        assert!(
            resumed > by_hand && next > resumed,
            "a suspended Transform is left alone"
        );
        assert_eq!(changes[next].object["data"]["value"], "v2");
    }
    let transform = cluster
        .transform_when(&ns, "paused", "resumed", |t| {
            condition(t, "Suspended").is_none()
        })
        .await;
    assert_eq!(transform["status"]["observedGeneration"], 3);

    // Events on the Transform and its graph (events.k8s.io).
    let reasons = eventually(30, "the events", || async {
        let events = cluster.json(&["get", "events.events.k8s.io"]).await?;
        let reasons: Vec<String> = events["items"]
            .as_array()?
            .iter()
            .map(|e| {
                format!(
                    "{} {}",
                    e["regarding"]["kind"].as_str().unwrap_or(""),
                    e["reason"].as_str().unwrap_or("")
                )
            })
            .collect();
        [
            "Transform Rendered",
            "ResourceGraph NodeApplied",
            "ResourceGraph NodeReady",
        ]
        .iter()
        .all(|r| reasons.iter().any(|found| found == r))
        .then_some(reasons)
    })
    .await;
    assert!(!reasons.is_empty());
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_objects_are_adopted_or_mirrored() {
    let cluster = Cluster::start().await;
    let ns = cluster.namespace().to_owned();
    for name in ["legacy", "extra", "watched"] {
        let manifest = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}}}\ndata: {{origin: by-hand}}\n"
        );
        cluster.ok(&["create", "-f", "-"], Some(&manifest)).await;
    }
    let mut owner: Value = serde_json::from_str(&shapes(
        "owner",
        serde_json::json!([{"id": "legacy", "value": "mine"}]),
    ))
    .expect("JSON");
    owner["spec"]["adopt"] = serde_json::json!({"strategy": "TakeOwnership", "resources": [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "legacy"},
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "extra"},
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "ghost"},
    ]});
    cluster
        .ok(&["apply", "-f", "-"], Some(&owner.to_string()))
        .await;
    let graph = cluster
        .graph_when(&ns, "owner", "adoption done", |g| {
            node(g, "legacy")["phase"] == "Adopted"
                && node(g, "adopted-configmap-extra")["phase"] == "Adopted"
                && node(g, "adopted-configmap-ghost")["phase"] == "Failed"
        })
        .await;
    assert_eq!(
        node(&graph, "legacy")["message"],
        "adopted: managed by this graph"
    );
    assert_eq!(
        node(&graph, "adopted-configmap-ghost")["message"],
        format!("ConfigMap {ns}/ghost does not exist: nothing to adopt (Transform.spec.adopt)")
    );
    let legacy = cluster
        .json(&["get", "configmap", "legacy"])
        .await
        .expect("legacy");
    assert_eq!(legacy["data"]["value"], "mine");
    assert_eq!(
        legacy["data"]["origin"], "by-hand",
        "fields nobody renders stay"
    );
    let extra = cluster
        .json(&["get", "configmap", "extra"])
        .await
        .expect("extra");
    assert_eq!(
        extra["metadata"]["labels"]["platform.pequod.io/resource-graph"],
        "owner"
    );
    assert_eq!(extra["data"]["origin"], "by-hand");
    let inventory: Vec<&str> = graph["status"]["inventory"]
        .as_array()
        .expect("inventory")
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    let mut inventory = inventory;
    inventory.sort();
    assert_eq!(
        inventory,
        ["extra", "legacy"],
        "the ghost was never adopted"
    );

    let mut mirror: Value =
        serde_json::from_str(&shapes("mirror", serde_json::json!([{"id": "own"}]))).expect("JSON");
    mirror["spec"]["adopt"] = serde_json::json!({"strategy": "Mirror", "resources": [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "watched"},
    ]});
    cluster
        .ok(&["apply", "-f", "-"], Some(&mirror.to_string()))
        .await;
    let graph = cluster
        .graph_when(&ns, "mirror", "mirrored", |g| {
            g["status"]["phase"] == "Ready"
        })
        .await;
    assert_eq!(
        node(&graph, "adopted-configmap-watched")["phase"],
        "Adopted"
    );
    assert_eq!(
        node(&graph, "adopted-configmap-watched")["message"],
        "mirrored: observed, never modified"
    );
    let watched = cluster
        .json(&["get", "configmap", "watched", "--show-managed-fields"])
        .await
        .expect("watched");
    assert!(
        watched["metadata"]["labels"].is_null(),
        "a mirrored object is never written: {watched}"
    );

    // Deleting the Transforms: adopted objects go with their graph, mirrored ones stay.
    cluster
        .ok(
            &["delete", "transform", "owner", "mirror", "--timeout=60s"],
            None,
        )
        .await;
    eventually(60, "both graphs gone", || async {
        let run = cluster
            .kubectl
            .run(&["get", "resourcegraphs", "-o", "name"], None)
            .await;
        (run.success && run.stdout.is_empty()).then_some(())
    })
    .await;
    for (name, expected) in [
        ("legacy", false),
        ("extra", false),
        ("watched", true),
        ("own", false),
    ] {
        let found = cluster.exists(&["get", "configmap", name]).await;
        assert_eq!(found, expected, "{name}");
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_pequod_did_not_create_or_now_only_observes_are_never_deleted() {
    let cluster = Cluster::start().await;
    let ns = cluster.namespace().to_owned();
    // Someone's Secret, matched by a Create node: used, not taken.
    let theirs = "apiVersion: v1\nkind: Secret\nmetadata: {name: db-password}\nstringData: {password: hunter2}\n";
    cluster.ok(&["create", "-f", "-"], Some(theirs)).await;
    let nodes = r#"[
      { id = "password", object = { apiVersion = "v1", kind = "Secret", metadata = { name = "db-password" }, stringData = { password = "generated" } }, applyPolicy = { mode = "Create" } },
      { id = "shared", object = { apiVersion = "v1", kind = "ConfigMap", metadata = { name = "shared" }, data = { a = "1" } } },
    ]"#;
    cluster
        .ok(&["apply", "-f", "-"], Some(&inline("owners", nodes)))
        .await;
    let graph = cluster
        .graph_when(&ns, "owners", "Ready", |g| g["status"]["phase"] == "Ready")
        .await;
    let inventory: Vec<&str> = graph["status"]["inventory"]
        .as_array()
        .expect("inventory")
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert_eq!(
        inventory,
        ["shared"],
        "an object Create found is not inventoried"
    );
    let password = cluster
        .ok(
            &[
                "get",
                "secret",
                "db-password",
                "-o",
                "jsonpath={.data.password}",
            ],
            None,
        )
        .await;
    assert_eq!(password, "aHVudGVyMg==", "Create never updates"); // "hunter2"

    // The module now only observes the ConfigMap: it leaves the inventory, stays in place.
    let nodes = r#"[
      { id = "password", object = { apiVersion = "v1", kind = "Secret", metadata = { name = "db-password" }, stringData = { password = "generated" } }, applyPolicy = { mode = "Create" } },
      { id = "shared", object = { apiVersion = "v1", kind = "ConfigMap", metadata = { name = "shared" } }, applyPolicy = { mode = "Observe" } },
    ]"#;
    cluster
        .ok(&["apply", "-f", "-"], Some(&inline("owners", nodes)))
        .await;
    cluster
        .graph_when(&ns, "owners", "the ConfigMap observed", |g| {
            g["status"]["phase"] == "Ready" && g["status"]["inventory"].is_null()
        })
        .await;
    cluster
        .ok(&["delete", "transform", "owners", "--timeout=60s"], None)
        .await;
    eventually(60, "the graph gone", || async {
        let found = cluster.exists(&["get", "resourcegraph", "owners"]).await;
        (!found).then_some(())
    })
    .await;
    for (kind, name) in [("secret", "db-password"), ("configmap", "shared")] {
        let found = cluster.exists(&["get", kind, name]).await;
        assert!(found, "{kind} {name} is not Pequod's to delete");
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_transforms_of_one_oci_module_pull_it_once_and_a_bad_pin_is_a_condition() {
    if skip_on_real_cluster(
        "needs the readiness simulator (50 Deployments of a placeholder image become Available)",
    ) {
        return;
    }
    let registry = tokio::task::spawn_blocking(registry::TestRegistry::start)
        .await
        .expect("registry starts");
    let reference = format!("{}/platforms/webservice:1", registry.host);
    let digest = registry.publish("platforms/webservice", &reference, &[]);
    let cluster = Cluster::start_with_flags(
        Duration::from_millis(300),
        &["--insecure-registry", &registry.host],
    )
    .await;
    let transforms: Vec<String> = (0..50)
        .map(|i| {
            serde_json::json!({
                "apiVersion": "platform.pequod.io/v1alpha1", "kind": "Transform",
                "metadata": {"name": format!("api-{i}"), "namespace": "default"},
                "spec": {"moduleRef": {"type": "oci", "ref": reference},
                         "input": {"name": format!("api-{i}"), "image": "ghcr.io/acme/api:1.0.0", "replicas": 1}}
            })
            .to_string()
        })
        .collect();
    cluster
        .ok(&["apply", "-f", "-"], Some(&transforms.join("\n")))
        .await;
    eventually(120, "all 50 Transforms Ready", || async {
        let list = cluster.json(&["get", "transforms"]).await?;
        let ready = list["items"]
            .as_array()?
            .iter()
            .filter(|t| condition(t, "Ready").is_some_and(|c| c["status"] == "True"))
            .count();
        (ready == 50).then_some(())
    })
    .await;
    let one = cluster
        .json(&["get", "transform", "api-7"])
        .await
        .expect("api-7");
    assert_eq!(
        one["status"]["resolvedModule"]["digest"],
        Value::from(digest.clone())
    );
    assert_eq!(one["status"]["resolvedModule"]["type"], "oci");
    let text = http_get(&cluster.metrics, "/metrics")
        .await
        .expect("/metrics");
    assert_eq!(
        metric(&text, "pequod_module_cache_misses_total"),
        1.0,
        "one pull: {text}"
    );
    // Every other resolution was served by the module cache (a digest already pulled) or
    // reused from a resolution of the same reference less than --module-resync ago.
    let served = metric(&text, "pequod_module_cache_hits_total")
        + metric(
            &text,
            "pequod_module_fetch_total{result=\"recent\",type=\"oci\"}",
        );
    assert!(served >= 49.0, "{text}");
    // Reconciles within --module-resync ask the registry nothing: an edited input
    // re-renders without a manifest request.
    let manifests = registry.manifest_requests("platforms/webservice");
    assert!(
        manifests <= 50,
        "at most one manifest request per Transform: {}",
        registry.log()
    );
    cluster
        .ok(
            &[
                "patch",
                "transform",
                "api-7",
                "--type=merge",
                "-p",
                r#"{"spec":{"input":{"replicas":2}}}"#,
            ],
            None,
        )
        .await;
    cluster
        .object_when(
            "deployment",
            "default",
            "api-7",
            "api-7 at 2 replicas",
            |d| d["spec"]["replicas"] == 2,
        )
        .await;
    assert_eq!(
        registry.manifest_requests("platforms/webservice"),
        manifests,
        "no registry request within --module-resync: {}",
        registry.log()
    );
    let layer_pulls = registry.blob_pulls("platforms/webservice");
    assert_eq!(
        layer_pulls,
        2,
        "the config and the content layer, fetched once: {}",
        registry.log()
    );
    promtool_accepts(&text).await;

    // A pin the registry's content does not match: ModuleResolved=False, no graph.
    let wrong = format!("sha256:{}", "0".repeat(64));
    let pinned = serde_json::json!({
        "apiVersion": "platform.pequod.io/v1alpha1", "kind": "Transform",
        "metadata": {"name": "pinned", "namespace": "default"},
        "spec": {"moduleRef": {"type": "oci", "ref": reference, "digest": wrong},
                 "input": {"name": "pinned", "image": "ghcr.io/acme/api:1.0.0"}}
    });
    cluster
        .ok(&["apply", "-f", "-"], Some(&pinned.to_string()))
        .await;
    let transform = cluster
        .transform_when("default", "pinned", "ModuleResolved=False", |t| {
            condition(t, "ModuleResolved").is_some_and(|c| c["status"] == "False")
        })
        .await;
    let resolved = condition(&transform, "ModuleResolved").expect("ModuleResolved");
    assert_eq!(resolved["reason"], "DigestMismatch");
    assert_eq!(
        resolved["message"],
        Value::from(format!(
            "module digest {digest} does not match the pinned digest {wrong}"
        ))
    );
    let found = cluster.exists(&["get", "resourcegraph", "pinned"]).await;
    assert!(!found, "nothing rendered");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_commit_on_a_branch_re_renders_after_resync() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let repository = dir.path().join("platforms");
    std::fs::create_dir_all(&repository).expect("repository");
    let git = |args: &[&str]| {
        repo::git(&repository, args);
    };
    git(&["init", "-q"]);
    let module = repository.join("webservice");
    repo::copy(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("platforms/webservice"),
        &module,
    );
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "webservice"]);
    let cache = dir.path().join("cache");
    let cluster = Cluster::start_with_flags(
        Duration::from_millis(300),
        &[
            "--module-resync",
            "1s",
            "--cache-dir",
            cache.to_str().expect("utf-8"),
            "--allow-local-git",
        ],
    )
    .await;
    let ns = cluster.namespace().to_owned();
    let transform = serde_json::json!({
        "apiVersion": "platform.pequod.io/v1alpha1", "kind": "Transform",
        "metadata": {"name": "from-git"},
        "spec": {"moduleRef": {"type": "git", "ref": format!("{}?ref=main&path=webservice", repository.display())},
                 "input": {"name": "from-git", "image": "ghcr.io/acme/api:1.0.0", "replicas": 1}}
    });
    cluster
        .ok(&["apply", "-f", "-"], Some(&transform.to_string()))
        .await;
    let graph = cluster
        .graph_when(&ns, "from-git", "rendered from the branch", |g| {
            g["spec"]["metadata"]["version"] == "0.2.0"
        })
        .await;
    let first_digest = graph["spec"]["metadata"]["moduleDigest"].clone();
    let main = module.join("main.ncl");
    let source = std::fs::read_to_string(&main).expect("main.ncl");
    std::fs::write(
        &main,
        source.replacen("version = \"0.2.0\"", "version = \"0.3.0\"", 1),
    )
    .expect("edited");
    git(&["commit", "-q", "-am", "0.3.0"]);
    let graph = cluster
        .graph_when(&ns, "from-git", "re-rendered from the new commit", |g| {
            g["spec"]["metadata"]["version"] == "0.3.0"
        })
        .await;
    assert_ne!(graph["spec"]["metadata"]["moduleDigest"], first_digest);
    let transform = cluster
        .json(&["get", "transform", "from-git"])
        .await
        .expect("Transform");
    assert_eq!(transform["status"]["resolvedModule"]["type"], "git");
    let commit = transform["status"]["resolvedModule"]["digest"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        commit.ends_with(":webservice") && commit.len() == 40 + ":webservice".len(),
        "{commit}"
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_in_a_config_map_re_renders_when_the_config_map_changes() {
    let cluster = Cluster::start().await;
    let ns = cluster.namespace().to_owned();
    let source = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/modules/shapes/main.ncl"),
    )
    .expect("shapes module");
    let transform = serde_json::json!({
        "apiVersion": "platform.pequod.io/v1alpha1", "kind": "Transform",
        "metadata": {"name": "from-cm"},
        "spec": {"moduleRef": {"type": "configmap", "ref": "shapes-module"},
                 "input": {"nodes": [{"id": "cfg"}]}}
    });
    // The ConfigMap does not exist yet: a condition, then its creation wakes the Transform.
    cluster
        .ok(&["apply", "-f", "-"], Some(&transform.to_string()))
        .await;
    let waiting = cluster
        .transform_when(&ns, "from-cm", "ModuleResolved=False", |t| {
            condition(t, "ModuleResolved").is_some_and(|c| c["status"] == "False")
        })
        .await;
    let resolved = condition(&waiting, "ModuleResolved").expect("ModuleResolved");
    assert_eq!(resolved["reason"], "ModuleNotFound");
    assert_eq!(
        resolved["message"],
        format!("ConfigMap {ns}/shapes-module not found")
    );
    // A second entrypoint in the same ConfigMap, for another Transform.
    let alternative = source.replace(
        "data = { value = content }",
        "data = { value = content, entrypoint = \"alt\" }",
    );
    assert_ne!(alternative, source);
    let config_map = |source: &str| {
        serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                           "metadata": {"name": "shapes-module"},
                           "data": {"main.ncl": source, "alt.ncl": alternative}})
        .to_string()
    };
    cluster
        .ok(&["apply", "-f", "-"], Some(&config_map(&source)))
        .await;
    cluster
        .graph_when(&ns, "from-cm", "rendered from the ConfigMap", |g| {
            g["status"]["phase"] == "Ready"
        })
        .await;
    // Its module content is now known unchanged: the other Transform, of the other
    // entrypoint, renders that entrypoint.
    let other = serde_json::json!({
        "apiVersion": "platform.pequod.io/v1alpha1", "kind": "Transform",
        "metadata": {"name": "from-cm-alt"},
        "spec": {"moduleRef": {"type": "configmap", "ref": "shapes-module", "entrypoint": "alt.ncl"},
                 "input": {"nodes": [{"id": "cfg-alt"}]}}
    });
    cluster
        .ok(&["apply", "-f", "-"], Some(&other.to_string()))
        .await;
    eventually(60, "the other entrypoint rendered", || async {
        let object = cluster.json(&["get", "configmap", "cfg-alt"]).await?;
        (object["data"]["entrypoint"] == "alt").then_some(())
    })
    .await;
    let cfg = cluster
        .json(&["get", "configmap", "cfg"])
        .await
        .expect("the first Transform's object");
    assert!(cfg["data"].get("entrypoint").is_none(), "{cfg}");
    let first = cluster
        .json(&["get", "transform", "from-cm"])
        .await
        .expect("Transform");
    assert_eq!(first["status"]["resolvedModule"]["type"], "configmap");
    let first_digest = first["status"]["resolvedModule"]["digest"].clone();

    // An edit of the module re-renders.
    let edited = source.replace(
        "data = { value = content }",
        "data = { value = content, edited = \"yes\" }",
    );
    assert_ne!(edited, source);
    cluster
        .ok(&["apply", "-f", "-"], Some(&config_map(&edited)))
        .await;
    eventually(60, "the edit applied", || async {
        let object = cluster.json(&["get", "configmap", "cfg"]).await?;
        (object["data"]["edited"] == "yes").then_some(())
    })
    .await;
    let second = cluster
        .json(&["get", "transform", "from-cm"])
        .await
        .expect("Transform");
    assert_ne!(second["status"]["resolvedModule"]["digest"], first_digest);

    // Deleted: the Transform reads it again (its content is not served from memory) and
    // says so; the graph it has keeps running.
    cluster
        .ok(&["delete", "configmap", "shapes-module"], None)
        .await;
    let gone = cluster
        .transform_when(&ns, "from-cm", "the module is gone", |t| {
            condition(t, "ModuleResolved").is_some_and(|c| c["status"] == "False")
        })
        .await;
    assert_eq!(
        condition(&gone, "ModuleResolved").expect("ModuleResolved")["message"],
        format!("ConfigMap {ns}/shapes-module not found")
    );
    assert!(cluster.exists(&["get", "configmap", "cfg"]).await);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_registry_is_read_with_the_transforms_pull_secret() {
    if skip_on_real_cluster(
        "needs the readiness simulator (a Deployment of a placeholder image becomes Available)",
    ) {
        return;
    }
    use base64::Engine;
    let registry = tokio::task::spawn_blocking(registry::TestRegistry::with_auth)
        .await
        .expect("registry starts");
    let dir = tempfile::tempdir().expect("temporary directory");
    let credentials = dir.path().join("config.json");
    registry.docker_config(&credentials);
    let reference = format!("{}/private/webservice:1", registry.host);
    registry.publish(
        "platforms/webservice",
        &reference,
        &["--docker-config".as_ref(), credentials.as_os_str()],
    );
    let cluster = Cluster::start_with_flags(
        Duration::from_millis(300),
        &["--insecure-registry", &registry.host],
    )
    .await;
    let transform = |name: &str, secret: Option<&str>| {
        let mut module_ref = serde_json::json!({"type": "oci", "ref": reference});
        if let Some(secret) = secret {
            module_ref["pullSecretRef"] = serde_json::json!({"name": secret});
        }
        serde_json::json!({
            "apiVersion": "platform.pequod.io/v1alpha1", "kind": "Transform",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"moduleRef": module_ref,
                     "input": {"name": name, "image": "ghcr.io/acme/api:1.0.0", "replicas": 1}}
        })
        .to_string()
    };
    // Without credentials: refused, said so.
    cluster
        .ok(&["apply", "-f", "-"], Some(&transform("anonymous", None)))
        .await;
    let refused = cluster
        .transform_when("default", "anonymous", "ModuleResolved=False", |t| {
            condition(t, "ModuleResolved").is_some_and(|c| c["status"] == "False")
        })
        .await;
    let resolved = condition(&refused, "ModuleResolved").expect("ModuleResolved");
    assert_eq!(resolved["reason"], "Unauthorized");
    // A Secret that is missing, then a dockerconfigjson Secret.
    cluster
        .ok(
            &["apply", "-f", "-"],
            Some(&transform("private", Some("regcred"))),
        )
        .await;
    let missing = cluster
        .transform_when("default", "private", "PullSecretUnavailable", |t| {
            condition(t, "ModuleResolved").is_some_and(|c| c["reason"] == "PullSecretUnavailable")
        })
        .await;
    assert_eq!(
        condition(&missing, "ModuleResolved").expect("ModuleResolved")["message"],
        "pullSecretRef: Secret default/regcred not found"
    );
    let config = std::fs::read(&credentials).expect("docker config");
    let secret = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
        "metadata": {"name": "regcred"},
        "data": {".dockerconfigjson": base64::engine::general_purpose::STANDARD.encode(config)}
    });
    cluster
        .ok(&["apply", "-f", "-"], Some(&secret.to_string()))
        .await;
    let ready = cluster
        .transform_when("default", "private", "Ready with the pull secret", |t| {
            condition(t, "Ready").is_some_and(|c| c["status"] == "True")
        })
        .await;
    assert_eq!(ready["status"]["resolvedModule"]["type"], "oci");
    // The module is cached now, but the anonymous Transform still may not have it.
    let still = cluster
        .json(&["get", "transform", "anonymous"])
        .await
        .expect("Transform");
    assert_eq!(
        condition(&still, "ModuleResolved").expect("ModuleResolved")["status"],
        "False"
    );
    let found = cluster.exists(&["get", "resourcegraph", "anonymous"]).await;
    assert!(!found);
    // Another tenant asks for the same reference right after, without credentials: the
    // resolution the pull secret made (reused for --module-resync) is not reused for it.
    let tenant = cluster.extra_namespace("team-b").await;
    let mut late: serde_json::Value =
        serde_json::from_str(&transform("late", None)).expect("a Transform");
    late["metadata"]["namespace"] = serde_json::json!(tenant);
    cluster
        .ok(&["apply", "-f", "-"], Some(&late.to_string()))
        .await;
    let refused = cluster
        .transform_when(&tenant, "late", "ModuleResolved=False", |t| {
            condition(t, "ModuleResolved").is_some_and(|c| c["status"] == "False")
        })
        .await;
    assert_eq!(
        condition(&refused, "ModuleResolved").expect("ModuleResolved")["reason"],
        "Unauthorized"
    );
    let found = cluster
        .exists(&["-n", &tenant, "get", "resourcegraph", "late"])
        .await;
    assert!(!found);
    cluster.stop().await;
}
