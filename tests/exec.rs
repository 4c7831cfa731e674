//! The executor in-process, against the test API server: one pass at a time, asserting on
//! the pass result (phases, writes, events, inventory) and on the order the server saw the
//! writes in (resourceVersions), never on how long anything took.

use std::sync::Arc;

use kube::config::{KubeConfigOptions, Kubeconfig};
use pequod::api::{
    API_VERSION, GraphMetadata, InventoryEntry, Node, NodePhase, ResourceGraph, ResourceGraphSpec,
    SourceRef,
};
use pequod::exec::inventory::{Deletion, Orphaning, delete_entry, deletion_waves};
use pequod::exec::{
    Applier, Appliers, ExecConfig, Executor, GraphId, Identity, Live, LiveObjects, NodeEvent, Pass,
    Served, Write, execute,
};
use pequod_e2e::faults::{Fault, FaultAction, Rendezvous};
use pequod_e2e::store::EventType;
use pequod_e2e::testing::eventually;
use pequod_e2e::{Config, TestApiServer};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

/// A test API server and an executor talking to it.
struct Harness {
    server: TestApiServer,
    applier: Applier,
    applies: Arc<Semaphore>,
    config: ExecConfig,
}

impl Harness {
    async fn start() -> Harness {
        Harness::start_with(false).await
    }

    /// A harness whose server enforces RBAC (`authorize`) or not; the executor speaks as
    /// the server's admin, who may impersonate anyone.
    async fn start_with(authorize: bool) -> Harness {
        let server = TestApiServer::start(Config {
            readiness_delay: std::time::Duration::from_millis(200),
            authorize,
            ..Config::default()
        })
        .await
        .expect("test API server starts");
        let appliers = Appliers::new(Harness::kube_config(&server).await).expect("appliers");
        Harness {
            server,
            applier: appliers.operator().clone(),
            applies: Arc::new(Semaphore::new(8)),
            config: ExecConfig {
                allow_cross_namespace: false,
                allow_cluster_scoped: false,
            },
        }
    }

    async fn kube_config(server: &TestApiServer) -> kube::Config {
        let kubeconfig = Kubeconfig::read_from(server.kubeconfig()).expect("kubeconfig");
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("kubeconfig accepted")
    }

    /// One pass over `graph` as the operator; the graph keeps the status it produced, for
    /// the next pass.
    async fn pass(&self, graph: &mut ResourceGraph) -> Pass {
        self.pass_as(graph, &self.applier, &Identity::Operator)
            .await
    }

    /// One pass over `graph` as `identity`, through `applier`.
    async fn pass_as(
        &self,
        graph: &mut ResourceGraph,
        applier: &Applier,
        identity: &Identity,
    ) -> Pass {
        self.pass_reading(graph, applier, identity, None).await
    }

    /// One pass as the operator that finds copies of objects in `live` (a watch cache).
    async fn pass_with_copies(&self, graph: &mut ResourceGraph, live: &dyn LiveObjects) -> Pass {
        self.pass_reading(graph, &self.applier, &Identity::Operator, Some(live))
            .await
    }

    async fn pass_reading(
        &self,
        graph: &mut ResourceGraph,
        applier: &Applier,
        identity: &Identity,
        live: Option<&dyn LiveObjects>,
    ) -> Pass {
        let executor = Executor {
            applier: applier.clone(),
            identity,
            config: &self.config,
            applies: &self.applies,
            live,
        };
        let pass = execute(&executor, graph).await;
        graph.status = Some(pass.status.clone());
        pass
    }

    /// The stored object of core `resource` in `default`, if any.
    fn stored(&self, resource: &str, name: &str) -> Option<Value> {
        let registry = self.server.store().registry();
        let ty = registry
            .lookup("", "v1", resource)
            .expect("a served resource");
        self.server.store().get(&ty, "v1", "default", name).ok()
    }

    /// The resourceVersion the server gave the object.
    fn version(&self, resource: &str, name: &str) -> u64 {
        self.stored(resource, name)
            .and_then(|o| o["metadata"]["resourceVersion"].as_str()?.parse().ok())
            .unwrap_or_else(|| panic!("{resource} {name} stored"))
    }
}

/// A graph named `name` in `default` with these nodes.
fn graph(name: &str, nodes: Value) -> ResourceGraph {
    let nodes: Vec<Node> = serde_json::from_value(nodes).expect("valid nodes");
    let mut graph = ResourceGraph::new(
        name,
        ResourceGraphSpec {
            source_ref: SourceRef {
                api_version: API_VERSION.to_string(),
                kind: "Transform".to_string(),
                name: name.to_string(),
                uid: None,
            },
            metadata: GraphMetadata {
                module: "test".to_string(),
                version: "0.0.0".to_string(),
                module_digest: "sha256:0".to_string(),
                render_hash: "sha256:0".to_string(),
                rendered_at: None,
            },
            nodes,
            outputs: None,
            violations: Vec::new(),
            prune: true,
            suspend: false,
            service_account_name: None,
        },
    );
    graph.metadata.namespace = Some("default".to_string());
    graph.metadata.generation = Some(1);
    graph
}

/// The graph of these tests.
fn owner() -> GraphId {
    GraphId {
        namespace: "default".to_string(),
        name: "g".to_string(),
    }
}

/// A node for ConfigMap `id` (ready once it exists).
fn config_map(id: &str, depends_on: &[&str]) -> Value {
    json!({
        "id": id,
        "dependsOn": depends_on,
        "object": {"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": id, "namespace": "default",
                                "labels": {"platform.pequod.io/resource-graph": "g",
                                           "platform.pequod.io/resource-graph-namespace": "default"}},
                   "data": {"value": id}},
    })
}

/// A graph named `name` whose one node is ConfigMap `shared` with `value`, labelled as
/// Pequod labels what `name` renders.
fn sharing(name: &str, value: &str) -> ResourceGraph {
    graph(
        name,
        json!([{"id": "shared", "object": {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "shared", "namespace": "default",
                         "labels": {"platform.pequod.io/resource-graph": name,
                                    "platform.pequod.io/resource-graph-namespace": "default"}},
            "data": {"value": value}}}]),
    )
}

/// A ConfigMap node with `deletionPolicy: Orphan`.
fn orphan(id: &str, depends_on: &[&str]) -> Value {
    let mut node = config_map(id, depends_on);
    node["deletionPolicy"] = json!("Orphan");
    node
}

/// The names of the objects deleted so far, in the order the server deleted them.
fn deleted(
    changes: &mut tokio::sync::broadcast::Receiver<Arc<pequod_e2e::store::Event>>,
) -> Vec<String> {
    let mut names = Vec::new();
    while let Ok(change) = changes.try_recv() {
        if change.kind == EventType::Deleted {
            names.push(
                change.object["metadata"]["name"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            );
        }
    }
    names
}

fn phase(pass: &Pass, id: &str) -> NodePhase {
    pass.status.nodes[id].phase
}

fn message<'a>(pass: &'a Pass, id: &str) -> &'a str {
    pass.status.nodes[id].message.as_deref().unwrap_or("")
}

fn inventory_names(pass: &Pass) -> Vec<&str> {
    pass.status
        .inventory
        .iter()
        .map(|e| e.object.name.as_str())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_diamond_runs_in_dependency_order_with_its_branches_concurrently() {
    let harness = Harness::start().await;
    // b and c are each held until both are under way: a pass that wrote them one after the
    // other would never get past b.
    let rendezvous = Rendezvous::new(2);
    for branch in ["b", "c"] {
        let fault = Fault::new(FaultAction::Rendezvous(rendezvous.clone()));
        harness.server.faults().add(
            fault
                .on("configmaps")
                .method("PATCH")
                .named(branch)
                .times(1),
        );
    }
    let mut diamond = graph(
        "g",
        json!([
            config_map("a", &[]),
            config_map("b", &["a"]),
            config_map("c", &["a"]),
            config_map("d", &["b", "c"]),
        ]),
    );
    let pass = harness.pass(&mut diamond).await;
    for id in ["a", "b", "c", "d"] {
        assert_eq!(
            phase(&pass, id),
            NodePhase::Ready,
            "{id}: {}",
            message(&pass, id)
        );
    }
    assert_eq!(
        pass.status.summary.as_ref().map(|s| s.ready_text.as_str()),
        Some("4/4")
    );
    let created = |id| harness.version("configmaps", id);
    assert!(created("a") < created("b") && created("a") < created("c"));
    assert!(created("d") > created("b") && created("d") > created("c"));
    assert_eq!(pass.applies.len(), 4);
    assert!(pass.applies.iter().all(|(ok, _)| *ok));
    let writes: Vec<(&str, Write)> = pass
        .events
        .iter()
        .filter_map(|e| match e {
            NodeEvent::Applied { node, write, .. } => Some((node.as_str(), *write)),
            _ => None,
        })
        .collect();
    assert_eq!(writes.len(), 4);
    assert!(writes.iter().all(|(_, write)| *write == Write::Created));
    let mut owned = inventory_names(&pass);
    assert_eq!(owned.first(), Some(&"a"), "in dependency order");
    assert_eq!(owned.last(), Some(&"d"), "in dependency order");
    owned.sort();
    assert_eq!(owned, ["a", "b", "c", "d"]);

    // Nothing changed: the next pass writes nothing.
    let again = harness.pass(&mut diamond).await;
    assert!(again.applies.is_empty(), "{:?}", again.events);
    assert_eq!(again.status.nodes, pass.status.nodes);
    harness.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_node_blocks_its_dependents_and_spares_other_branches() {
    let harness = Harness::start().await;
    let mut branches = graph(
        "g",
        json!([
            config_map("base", &[]),
            {"id": "broken", "dependsOn": ["base"],
             "object": {"apiVersion": "example.com/v1", "kind": "Widget",
                        "metadata": {"name": "w", "namespace": "default"}}},
            config_map("after", &["broken"]),
            config_map("later", &["after"]),
            config_map("other", &["base"]),
        ]),
    );
    let pass = harness.pass(&mut branches).await;
    assert_eq!(phase(&pass, "broken"), NodePhase::Failed);
    assert_eq!(
        message(&pass, "broken"),
        "kind Widget of example.com/v1 is not installed in the cluster (no such API resource)"
    );
    assert_eq!(phase(&pass, "after"), NodePhase::Blocked);
    assert_eq!(message(&pass, "after"), "dependency `broken` failed");
    assert_eq!(phase(&pass, "later"), NodePhase::Blocked);
    assert_eq!(message(&pass, "later"), "dependency `after` failed");
    assert_eq!(phase(&pass, "other"), NodePhase::Ready);
    assert_eq!(phase(&pass, "base"), NodePhase::Ready);
    assert!(
        harness.stored("configmaps", "after").is_none(),
        "a blocked node is never applied"
    );
    assert_eq!(pass.status.nodes["broken"].failures, 1);
    assert!(pass.requeue.is_some(), "a failed node is retried");
    assert!(pass.events.contains(&NodeEvent::Failed {
        node: "broken".to_string(),
        message: message(&pass, "broken").to_string(),
    }));
    let again = harness.pass(&mut branches).await;
    assert_eq!(
        again.status.nodes["broken"].failures, 2,
        "failures in a row"
    );
    assert!(
        !again
            .events
            .iter()
            .any(|e| matches!(e, NodeEvent::Failed { .. })),
        "the same failure is not reported twice"
    );
    harness.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_not_ready_within_its_timeout_fails() {
    let harness = Harness::start().await;
    harness
        .server
        .simulator()
        .never_ready("Deployment", "default", "slow");
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "slow", "namespace": "default"},
        "spec": {"selector": {"matchLabels": {"app": "slow"}},
                 "template": {"metadata": {"labels": {"app": "slow"}},
                              "spec": {"containers": [{"name": "app", "image": "app:1"}]}}}
    });
    let mut timed = graph(
        "g",
        json!([
            {"id": "slow", "object": deployment, "timeoutSeconds": 30},
            config_map("after", &["slow"]),
        ]),
    );
    let pass = harness.pass(&mut timed).await;
    assert_eq!(phase(&pass, "slow"), NodePhase::WaitingReady);
    assert_eq!(phase(&pass, "after"), NodePhase::Pending);
    assert_eq!(message(&pass, "after"), "waiting for `slow` to be Ready");
    let waiting_since = pass.status.nodes["slow"]
        .waiting_since
        .clone()
        .expect("the wait started");
    let requeue = pass
        .requeue
        .expect("looked at again when the timeout expires");
    assert!(requeue.as_secs() <= 31, "{requeue:?}");
    // The simulated controller reports on the Deployment (it reacts to the create).
    eventually(10, "the Deployment's status", || async {
        stored_deployment(&harness, "slow")
            .pointer("/status/conditions")
            .map(|_| ())
    })
    .await;

    // Thirty-one seconds later, as far as the graph's status knows.
    let earlier = waiting_since.0 - jiff::SignedDuration::from_secs(31);
    if let Some(status) = timed.status.as_mut() {
        status.nodes.get_mut("slow").expect("slow").waiting_since = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(earlier),
        );
    }
    let pass = harness.pass(&mut timed).await;
    assert_eq!(phase(&pass, "slow"), NodePhase::Failed);
    assert_eq!(
        message(&pass, "slow"),
        "not ready after 30s: Available=False: MinimumReplicasUnavailable: Deployment does not have minimum availability."
    );
    assert_eq!(phase(&pass, "after"), NodePhase::Blocked);
    assert!(pass.applies.is_empty(), "the object was not written again");
    harness.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_that_leave_the_graph_are_pruned_unless_orphaned_or_kept() {
    let harness = Harness::start().await;
    let mut kept_by_annotation = config_map("annotated", &[]);
    kept_by_annotation["object"]["metadata"]["annotations"] =
        json!({"platform.pequod.io/prune": "disabled"});
    let mut first = graph(
        "g",
        json!([
            config_map("a", &[]),
            config_map("b", &["a"]),
            config_map("c", &["b"]),
            orphan("orphan", &["a"]),
            kept_by_annotation,
        ]),
    );
    let pass = harness.pass(&mut first).await;
    assert_eq!(inventory_names(&pass).len(), 5);

    let mut second = graph("g", json!([config_map("a", &[])]));
    second.status = first.status.clone();
    let mut changes = harness.server.store().events();
    let pass = harness.pass(&mut second).await;
    assert_eq!(inventory_names(&pass), ["a"]);
    let pruned: Vec<&str> = pass
        .events
        .iter()
        .filter_map(|e| match e {
            NodeEvent::Pruned { object } => Some(object.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        pruned,
        ["ConfigMap default/c", "ConfigMap default/b"],
        "dependents first"
    );
    assert!(harness.stored("configmaps", "b").is_none());
    assert!(harness.stored("configmaps", "c").is_none());
    assert!(
        harness.stored("configmaps", "orphan").is_some(),
        "deletionPolicy Orphan"
    );
    assert!(
        harness.stored("configmaps", "annotated").is_some(),
        "the prune annotation"
    );
    let order = deleted(&mut changes);
    assert_eq!(order, ["c", "b"]);
    // What stays is listed as Orphaned, not counted, and said in an event.
    let orphans = |pass: &Pass| -> Vec<(String, String)> {
        pass.status
            .nodes
            .iter()
            .filter(|(_, s)| s.phase == NodePhase::Orphaned)
            .map(|(id, s)| (id.clone(), s.message.clone().unwrap_or_default()))
            .collect()
    };
    let expected = vec![
        (
            "annotated".to_string(),
            "left the graph; stays in the cluster (the annotation platform.pequod.io/prune: disabled)".to_string(),
        ),
        (
            "orphan".to_string(),
            "left the graph; stays in the cluster (deletionPolicy: Orphan)".to_string(),
        ),
    ];
    assert_eq!(orphans(&pass), expected);
    assert_eq!(
        pass.status.summary.as_ref().map(|s| s.ready_text.as_str()),
        Some("1/1")
    );
    assert!(pass.events.contains(&NodeEvent::Orphaned {
        object: "ConfigMap default/orphan".to_string(),
        why: Orphaning::Policy
    }));
    // They stay listed for the rest of the generation.
    let again = harness.pass(&mut second).await;
    assert_eq!(orphans(&again), expected);
    assert!(again.events.is_empty(), "{:?}", again.events);

    // With `prune: false` nothing is deleted, and the objects stay in the inventory; the
    // next generation lists only what it leaves.
    let mut third = graph("g", json!([]));
    third.spec.prune = false;
    third.metadata.generation = Some(2);
    third.status = second.status.clone();
    let pass = harness.pass(&mut third).await;
    assert_eq!(inventory_names(&pass), ["a"]);
    assert!(harness.stored("configmaps", "a").is_some());
    assert_eq!(
        orphans(&pass),
        [(
            "a".to_string(),
            "left the graph; stays in the cluster (the Transform's prune: false)".to_string()
        )]
    );
    harness.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_graph_goes_in_waves_dependents_first() {
    let harness = Harness::start().await;
    let mut diamond = graph(
        "g",
        json!([
            config_map("a", &[]),
            config_map("b", &["a"]),
            config_map("c", &["a"]),
            config_map("d", &["b", "c"]),
            orphan("orphan", &["a"]),
        ]),
    );
    let pass = harness.pass(&mut diamond).await;
    // Leaves first (nothing depends on them), the root last.
    let waves: Vec<Vec<String>> = deletion_waves(&diamond, &pass.status.inventory)
        .iter()
        .map(|wave| {
            let mut ids: Vec<String> = wave.iter().map(|e| e.node_id.clone()).collect();
            ids.sort();
            ids
        })
        .collect();
    assert_eq!(waves, [vec!["d", "orphan"], vec!["b", "c"], vec!["a"]]);

    let mut changes = harness.server.store().events();
    let mut outcomes = Vec::new();
    for wave in deletion_waves(&diamond, &pass.status.inventory) {
        for entry in &wave {
            let deletion = delete_entry(&harness.applier, &owner(), &harness.applies, entry)
                .await
                .expect("deleted");
            outcomes.push((entry.node_id.clone(), deletion));
        }
    }
    outcomes.sort_by(|a, b| a.0.cmp(&b.0));
    let expected = [
        ("a", Deletion::Deleted),
        ("b", Deletion::Deleted),
        ("c", Deletion::Deleted),
        ("d", Deletion::Deleted),
        ("orphan", Deletion::Orphaned(Orphaning::Policy)),
    ];
    let outcomes: Vec<(&str, &Deletion)> =
        outcomes.iter().map(|(id, d)| (id.as_str(), d)).collect();
    assert_eq!(
        outcomes,
        expected.iter().map(|(id, d)| (*id, d)).collect::<Vec<_>>()
    );
    let orphan = harness
        .stored("configmaps", "orphan")
        .expect("the orphan stays");
    assert!(
        orphan["metadata"]["labels"]["platform.pequod.io/resource-graph"].is_null(),
        "released, no graph owns it any more: {orphan}"
    );
    let order = deleted(&mut changes);
    assert_eq!(order.first().map(String::as_str), Some("d"));
    assert_eq!(order.last().map(String::as_str), Some("a"));
    assert_eq!(order.len(), 4);

    // An entry whose name now belongs to another object (another uid) is not deleted.
    harness
        .applier
        .apply(
            &harness
                .applier
                .served("v1", "ConfigMap")
                .await
                .expect("served"),
            &json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "a", "namespace": "default"}}),
            false,
        )
        .await
        .expect("recreated by someone else");
    let stale: &InventoryEntry = pass
        .status
        .inventory
        .iter()
        .find(|e| e.node_id == "a")
        .expect("a");
    let deletion = delete_entry(&harness.applier, &owner(), &harness.applies, stale)
        .await
        .expect("looked at");
    assert_eq!(deletion, Deletion::NotOwned);
    assert!(harness.stored("configmaps", "a").is_some());
    harness.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graph_never_takes_or_deletes_another_graphs_object() {
    let harness = Harness::start().await;
    let mut first = sharing("owner-one", "one");
    let pass = harness.pass(&mut first).await;
    assert_eq!(phase(&pass, "shared"), NodePhase::Ready);

    let mut second = sharing("owner-two", "two");
    let pass = harness.pass(&mut second).await;
    assert_eq!(phase(&pass, "shared"), NodePhase::Failed);
    assert_eq!(
        pass.status.nodes["shared"].reason.as_deref(),
        Some("OwnedByAnotherGraph")
    );
    assert_eq!(
        message(&pass, "shared"),
        "ConfigMap default/shared is owned by ResourceGraph default/owner-one: refused (a graph never writes, adopts or deletes another graph's objects)"
    );
    assert!(pass.applies.is_empty(), "nothing written");
    assert!(pass.status.inventory.is_empty(), "nothing owned");
    let stored = harness.stored("configmaps", "shared").expect("stored");
    assert_eq!(stored["data"]["value"], "one");

    // Even an inventory that claims it (a status written by hand) deletes nothing: the
    // object's labels name its owner.
    let mut claims = graph("owner-two", json!([]));
    let mut status = pass.status.clone();
    status.inventory = first.status.as_ref().expect("status").inventory.clone();
    claims.status = Some(status);
    let pass = harness.pass(&mut claims).await;
    assert!(pass.events.is_empty(), "{:?}", pass.events);
    let stored = harness.stored("configmaps", "shared").expect("still there");
    assert_eq!(stored["data"]["value"], "one");
    harness.server.stop().await;
}

/// A watch cache that is always up to date: the server's stored objects.
struct StoredCopies<'a>(&'a TestApiServer);

impl LiveObjects for StoredCopies<'_> {
    fn get(&self, served: &Served, namespace: Option<&str>, name: &str) -> Option<Live> {
        let resource = &served.resource;
        let registry = self.0.store().registry();
        let ty = registry.lookup(&resource.group, &resource.version, &resource.plural)?;
        let mut object = self
            .0
            .store()
            .get(&ty, &resource.version, namespace.unwrap_or(""), name)
            .ok()?;
        object["apiVersion"] = Value::String(resource.api_version.clone());
        object["kind"] = Value::String(resource.kind.clone());
        Some(Live::new(object))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settled_object_is_read_from_the_watch_cache_and_anything_else_from_the_server() {
    let harness = Harness::start().await;
    let copies = StoredCopies(&harness.server);
    let mut first = sharing("owner-one", "one");
    let pass = harness.pass_with_copies(&mut first, &copies).await;
    assert_eq!(phase(&pass, "shared"), NodePhase::Ready);
    assert_eq!(pass.applies.len(), 1);

    // The object as the last write left it: no read, no write.
    let before = harness.server.requests();
    let quiet = harness.pass_with_copies(&mut first, &copies).await;
    assert_eq!(phase(&quiet, "shared"), NodePhase::Ready);
    assert!(quiet.applies.is_empty(), "{:?}", quiet.events);
    let since = harness.server.requests().since(&before);
    assert_eq!(since.total(), 0, "{since:?}");

    // A hand edit moves the owned fields' fingerprint: the copy is not trusted, the
    // object is read and the edit taken back.
    let kubectl = pequod_e2e::testing::Kubectl::new(&harness.server);
    kubectl
        .ok(
            &[
                "patch",
                "configmap",
                "shared",
                "--type",
                "merge",
                "-p",
                r#"{"data":{"value":"edited"}}"#,
            ],
            None,
        )
        .await;
    let before = harness.server.requests();
    let corrected = harness.pass_with_copies(&mut first, &copies).await;
    assert_eq!(
        corrected.events.first(),
        Some(&NodeEvent::Applied {
            node: "shared".to_string(),
            write: Write::DriftCorrected,
            edits_overridden: true
        })
    );
    let since = harness.server.requests().since(&before);
    assert_eq!(since.count("get", "configmaps"), 1, "{since:?}");
    assert_eq!(
        harness.stored("configmaps", "shared").expect("stored")["data"]["value"],
        "one"
    );

    // Another graph whose status claims the same object as settled (a forged status) is
    // not served the copy: the object is read, its labels name its owner, nothing is
    // written.
    let mut second = sharing("owner-two", "one");
    second.status = first.status.clone();
    let before = harness.server.requests();
    let refused = harness.pass_with_copies(&mut second, &copies).await;
    assert_eq!(phase(&refused, "shared"), NodePhase::Failed);
    assert_eq!(
        refused.status.nodes["shared"].reason.as_deref(),
        Some("OwnedByAnotherGraph")
    );
    assert!(refused.applies.is_empty(), "nothing written");
    let since = harness.server.requests().since(&before);
    assert_eq!(since.count("get", "configmaps"), 1, "{since:?}");

    // A changed desired object is always read first.
    let mut changed = sharing("owner-one", "two");
    changed.status = first.status.clone();
    let before = harness.server.requests();
    let updated = harness.pass_with_copies(&mut changed, &copies).await;
    assert_eq!(updated.applies.len(), 1);
    let since = harness.server.requests().since(&before);
    assert_eq!(since.count("get", "configmaps"), 1, "{since:?}");
    harness.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_object_is_taken_only_when_adopted() {
    let harness = Harness::start().await;
    let served = harness
        .applier
        .served("v1", "ConfigMap")
        .await
        .expect("served");
    let theirs = json!({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": "shared", "namespace": "default"},
                        "data": {"value": "theirs"}});
    harness
        .applier
        .create(&served, &theirs)
        .await
        .expect("created by someone else");
    let mut graph = sharing("g", "mine");
    let pass = harness.pass(&mut graph).await;
    assert_eq!(phase(&pass, "shared"), NodePhase::Failed);
    assert_eq!(
        pass.status.nodes["shared"].reason.as_deref(),
        Some("AlreadyExists")
    );
    assert_eq!(
        message(&pass, "shared"),
        "ConfigMap default/shared already exists and no graph owns it: refused (name it in the Transform's spec.adopt to take it over)"
    );
    assert_eq!(
        harness.stored("configmaps", "shared").expect("kept")["data"]["value"],
        "theirs"
    );

    let mut adopting = sharing("g", "mine");
    adopting.spec.nodes[0].adopted = Some(pequod::api::AdoptStrategy::TakeOwnership);
    adopting.spec.nodes[0].apply_policy.conflict_policy = pequod::api::ConflictPolicy::Force;
    adopting.status = graph.status.clone();
    let pass = harness.pass(&mut adopting).await;
    assert_eq!(phase(&pass, "shared"), NodePhase::Adopted);
    let stored = harness.stored("configmaps", "shared").expect("adopted");
    assert_eq!(stored["data"]["value"], "mine");
    assert_eq!(
        stored["metadata"]["labels"]["platform.pequod.io/resource-graph"],
        "g"
    );
    assert_eq!(inventory_names(&pass), ["shared"]);
    harness.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observed_objects_obey_the_namespace_and_scope_guards() {
    let harness = Harness::start().await;
    let mut observing = graph(
        "g",
        json!([
            {"id": "elsewhere", "applyPolicy": {"mode": "Observe"},
             "object": {"apiVersion": "v1", "kind": "Secret",
                        "metadata": {"name": "admin-token", "namespace": "kube-system"}}},
            {"id": "cluster", "applyPolicy": {"mode": "Observe"},
             "object": {"apiVersion": "v1", "kind": "Namespace",
                        "metadata": {"name": "kube-system"}}},
        ]),
    );
    let pass = harness.pass(&mut observing).await;
    assert_eq!(phase(&pass, "elsewhere"), NodePhase::Failed);
    assert_eq!(
        message(&pass, "elsewhere"),
        "Secret kube-system/admin-token is outside the graph's namespace default: refused (the operator runs without --allow-cross-namespace)"
    );
    assert_eq!(
        pass.status.nodes["elsewhere"].reason.as_deref(),
        Some("OutsideNamespace")
    );
    assert_eq!(
        message(&pass, "cluster"),
        "Namespace kube-system is cluster-scoped: refused (the operator runs without --allow-cluster-scoped)"
    );
    harness.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graph_acting_as_a_service_account_gets_no_more_than_its_role() {
    let harness = Harness::start_with(true).await;
    // The service account may do anything with ConfigMaps, and only read Deployments.
    let rbac = [
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": "app", "namespace": "default"},
         "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["*"]},
                   {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": "app", "namespace": "default"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "app"},
         "subjects": [{"kind": "ServiceAccount", "name": "app", "namespace": "default"}]}),
    ]
    .map(|object| object.to_string())
    .join("\n---\n");
    pequod_e2e::testing::Kubectl::new(&harness.server)
        .ok(&["apply", "-f", "-"], Some(&rbac))
        .await;
    let appliers = Appliers::new(Harness::kube_config(&harness.server).await).expect("appliers");
    let identity = Identity::of_graph("default", Some("app"), None);
    let applier = appliers.of(&identity).expect("an impersonating client");
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "app", "image": "app:1"}]}}}
    });
    let mut mixed = graph(
        "g",
        json!([config_map("settings", &[]), {"id": "web", "object": deployment}]),
    );
    let before = harness.server.requests();
    let pass = harness.pass_as(&mut mixed, &applier, &identity).await;
    assert_eq!(phase(&pass, "settings"), NodePhase::Ready);
    assert_eq!(phase(&pass, "web"), NodePhase::Failed);
    assert_eq!(
        pass.status.nodes["web"].reason.as_deref(),
        Some("Forbidden")
    );
    assert_eq!(
        message(&pass, "web"),
        "service account default/app may not patch deployments.apps in namespace default: deployments.apps \"web\" is forbidden: User \"system:serviceaccount:default:app\" cannot patch resource \"deployments\" in API group \"apps\" in the namespace \"default\""
    );
    // The writes were the service account's, not the operator's.
    let writes = harness.server.requests().since(&before);
    let by = |user: &str| {
        writes
            .counts
            .iter()
            .filter(|(key, _)| key.verb == "apply" && key.user == user)
            .map(|(_, n)| *n)
            .sum::<u64>()
    };
    assert_eq!(by("system:serviceaccount:default:app"), 2);
    assert_eq!(by("admin"), 0);
    assert!(harness.stored("configmaps", "settings").is_some());
    harness.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_converges_against_a_server_that_normalizes_and_defaults() {
    let harness = Harness::start().await;
    // The server stores 500m and 1Gi, and fills in the Deployment's defaults.
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default",
                     "labels": {"platform.pequod.io/resource-graph": "g",
                                "platform.pequod.io/resource-graph-namespace": "default"}},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": "web:1",
                                  "resources": {"requests": {"cpu": "0.5", "memory": "1024Mi"}}}]}}}
    });
    let mut web = graph("g", json!([{"id": "web", "object": deployment}]));
    let pass = harness.pass(&mut web).await;
    assert_eq!(pass.applies.len(), 1);
    let stored = || stored_deployment(&harness, "web");
    let live = stored();
    assert_eq!(
        live["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"],
        json!({"cpu": "500m", "memory": "1Gi"}),
        "the server normalized the quantities"
    );
    assert!(
        live["spec"]["strategy"].is_object(),
        "and filled in defaults"
    );
    let generation = live["metadata"]["generation"].clone();
    let requests = harness.server.requests();
    for _ in 0..3 {
        let quiet = harness.pass(&mut web).await;
        assert!(quiet.applies.is_empty(), "no re-apply: {:?}", quiet.events);
    }
    // (The simulator writes the status meanwhile; the spec stays as it was.)
    assert_eq!(stored()["metadata"]["generation"], generation);
    let since = harness.server.requests().since(&requests);
    assert_eq!(since.count("apply", "deployments"), 0, "{since:?}");

    // A hand edit (a patch) of a field Pequod applies is taken back, once.
    let kubectl = pequod_e2e::testing::Kubectl::new(&harness.server);
    kubectl
        .ok(
            &[
                "patch",
                "deployment",
                "web",
                "--type",
                "merge",
                "-p",
                r#"{"spec":{"replicas":5}}"#,
            ],
            None,
        )
        .await;
    let corrected = harness.pass(&mut web).await;
    assert_eq!(
        corrected.events.first(),
        Some(&NodeEvent::Applied {
            node: "web".to_string(),
            write: Write::DriftCorrected,
            edits_overridden: true
        })
    );
    assert_eq!(stored()["spec"]["replicas"], 2);
    assert!(
        harness.pass(&mut web).await.applies.is_empty(),
        "quiet again"
    );

    // A field of Pequod's taken over by another manager's apply is a conflict, not taken
    // back, unless the node says Force.
    kubectl
        .ok(
            &["apply", "--server-side", "--force-conflicts", "--field-manager", "hpa-like", "-f", "-"],
            Some(r#"{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "default"}, "spec": {"replicas": 7}}"#),
        )
        .await;
    let conflict = harness.pass(&mut web).await;
    assert_eq!(phase(&conflict, "web"), NodePhase::Failed);
    assert_eq!(
        conflict.status.nodes["web"].reason.as_deref(),
        Some("Conflict")
    );
    assert!(
        message(&conflict, "web").contains("conflict with \"hpa-like\""),
        "{}",
        message(&conflict, "web")
    );
    assert_eq!(stored()["spec"]["replicas"], 7);
    web.spec.nodes[0].apply_policy.conflict_policy = pequod::api::ConflictPolicy::Force;
    let forced = harness.pass(&mut web).await;
    assert_eq!(forced.applies.len(), 1);
    assert_eq!(stored()["spec"]["replicas"], 2);
    harness.server.stop().await;
}

/// Deployment `default/NAME` as the server stores it.
fn stored_deployment(harness: &Harness, name: &str) -> Value {
    let registry = harness.server.store().registry();
    let ty = registry
        .lookup("apps", "v1", "deployments")
        .expect("served");
    harness
        .server
        .store()
        .get(&ty, "v1", "default", name)
        .expect("stored")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_errors_are_ridden_out_and_fail_the_node_only_when_they_persist() {
    let harness = Harness::start().await;
    let mut settings = graph("g", json!([config_map("a", &[])]));
    harness.pass(&mut settings).await;
    let mut changed = config_map("a", &[]);
    changed["object"]["data"]["value"] = json!("v2");
    settings.spec.nodes = serde_json::from_value(json!([changed])).expect("nodes");

    // Three 500s: the node stays Ready, retries with a growing backoff, reports nothing.
    harness.server.faults().add(
        Fault::new(FaultAction::InternalError)
            .on("configmaps")
            .method("PATCH")
            .times(3),
    );
    for failures in 1..=3 {
        let pass = harness.pass(&mut settings).await;
        assert_eq!(
            phase(&pass, "a"),
            NodePhase::Ready,
            "{}",
            message(&pass, "a")
        );
        assert_eq!(pass.status.nodes["a"].failures, failures);
        assert_eq!(
            message(&pass, "a"),
            format!(
                "retrying after a transient error ({failures} in a row): InternalError (500): injected fault: internal error"
            )
        );
        assert!(
            pass.events.is_empty(),
            "no event for a transient error: {:?}",
            pass.events
        );
        assert_eq!(pass.status.phase, Some(pequod::api::GraphPhase::Ready));
        assert!(
            pass.requeue
                .is_some_and(|d| d >= std::time::Duration::from_secs(1))
        );
    }
    let pass = harness.pass(&mut settings).await;
    assert_eq!(phase(&pass, "a"), NodePhase::Ready);
    assert_eq!(pass.status.nodes["a"].failures, 0);
    assert_eq!(
        harness.stored("configmaps", "a").expect("a")["data"]["value"],
        "v2"
    );

    // Throttled: the next try waits at least as long as the server asked.
    settings.spec.nodes[0].object["data"]["value"] = json!("v3");
    harness.server.faults().add(
        Fault::new(FaultAction::Throttle {
            retry_after_seconds: 40,
        })
        .on("configmaps")
        .method("PATCH")
        .times(1),
    );
    let pass = harness.pass(&mut settings).await;
    assert!(
        pass.requeue
            .is_some_and(|d| d >= std::time::Duration::from_secs(40)),
        "{:?}",
        pass.requeue
    );

    // Errors that persist fail the node, once, with a Warning-worthy event.
    harness.server.faults().add(
        Fault::new(FaultAction::InternalError)
            .on("configmaps")
            .method("PATCH"),
    );
    let mut failed = None;
    for _ in 0..5 {
        let pass = harness.pass(&mut settings).await;
        if phase(&pass, "a") == NodePhase::Failed {
            failed = Some(pass);
            break;
        }
    }
    let pass = failed.expect("failed after the errors persisted");
    assert_eq!(pass.status.nodes["a"].failures, 5);
    assert_eq!(
        pass.status.nodes["a"].reason.as_deref(),
        Some("Unavailable")
    );
    assert!(matches!(pass.events.as_slice(), [NodeEvent::Failed { node, .. }] if node == "a"));
    harness.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_job_fails_its_node_at_once() {
    let harness = Harness::start().await;
    let job = json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "migrate", "namespace": "default"},
        "spec": {"template": {"spec": {"restartPolicy": "Never",
                                       "containers": [{"name": "migrate", "image": "migrate:1"}]}}}
    });
    let mut migration = graph(
        "g",
        json!([{"id": "migrate", "object": job, "timeoutSeconds": 3600},
               config_map("after", &["migrate"])]),
    );
    let pass = harness.pass(&mut migration).await;
    assert_eq!(phase(&pass, "migrate"), NodePhase::WaitingReady);
    // The Job controller gives up.
    pequod_e2e::testing::Kubectl::new(&harness.server)
        .ok(
            &["patch", "job", "migrate", "--subresource=status", "--type", "merge", "-p",
              r#"{"status": {"failed": 7, "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]}}"#],
            None,
        )
        .await;
    let pass = harness.pass(&mut migration).await;
    assert_eq!(
        phase(&pass, "migrate"),
        NodePhase::Failed,
        "long before its timeout"
    );
    assert_eq!(
        pass.status.nodes["migrate"].reason.as_deref(),
        Some("BackoffLimitExceeded")
    );
    assert_eq!(
        message(&pass, "migrate"),
        "Failed=True: BackoffLimitExceeded: Job has reached the specified backoff limit"
    );
    assert_eq!(phase(&pass, "after"), NodePhase::Blocked);
    assert!(pass.applies.is_empty());
    assert!(
        matches!(pass.events.as_slice(), [NodeEvent::Failed { node, .. }] if node == "migrate")
    );
    harness.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_follow_what_graphs_use_and_a_new_kind_wakes_its_graphs() {
    use futures::StreamExt;
    let harness = Harness::start().await;
    let (sender, mut woken) = futures::channel::mpsc::unbounded();
    let watches = pequod::controller::Watches::new(harness.applier.client().clone(), None, sender);
    let mut settings = graph("g", json!([config_map("a", &[])]));
    let pass = harness.pass(&mut settings).await;
    watches.sync(&settings, &pass.watch, &pass.missing_kinds);
    assert_eq!(watches.count().labelled, 1, "one watch for ConfigMaps");

    // A node whose kind is not installed: the CRD's arrival wakes the graph.
    let mut waiting = graph(
        "w",
        json!([{"id": "widget", "object": {"apiVersion": "example.com/v1", "kind": "Widget",
                                            "metadata": {"name": "w", "namespace": "default"}}}]),
    );
    let pass = harness.pass(&mut waiting).await;
    assert_eq!(
        pass.missing_kinds,
        [("example.com".to_string(), "Widget".to_string())]
    );
    watches.sync(&waiting, &pass.watch, &pass.missing_kinds);
    pequod_e2e::testing::Kubectl::new(&harness.server)
        .ok(
            &["apply", "-f", "-"],
            Some(
                "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: widgets.example.com}\nspec:\n  group: example.com\n  scope: Namespaced\n  names: {plural: widgets, singular: widget, kind: Widget}\n  versions:\n  - {name: v1, served: true, storage: true, schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}}\n",
            ),
        )
        .await;
    let graph_woken = loop {
        let next = woken.next().await.expect("the channel stays open");
        if next.name == "w" {
            break next;
        }
    };
    assert_eq!(graph_woken.namespace.as_deref(), Some("default"));

    // A graph that stops using a resource releases its watch; a gone graph everything.
    watches.sync(&settings, &[], &[]);
    assert_eq!(
        watches.count().labelled,
        0,
        "no graph uses ConfigMaps any more"
    );
    watches.forget(&waiting);
    assert_eq!(watches.count(), pequod::controller::WatchCount::default());
    harness.server.stop().await;
}
