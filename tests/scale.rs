//! The scale harness (`pequod_e2e::scale`) run small, asserting counts, never times: what
//! a fleet costs the API server and the registry per Transform and per object, that a
//! resync in which nothing changed writes nothing and asks the registry nothing, and that
//! shards split the fleet with no Transform reconciled by two replicas. The times and the
//! memory of large runs are in docs/performance.md.

#[path = "common/net.rs"]
mod net;
#[path = "common/registry.rs"]
mod registry;

use std::path::PathBuf;
use std::time::Duration;

use pequod_e2e::scale::{Scenario, Start, describe, graph_writes, run, writes};

fn pequod() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pequod"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_transforms_of_an_oci_module_cost_bounded_requests_and_a_quiet_resync_nothing() {
    let registry = tokio::task::spawn_blocking(registry::TestRegistry::start)
        .await
        .expect("registry starts");
    let reference = format!("{}/platforms/webservice:1", registry.host);
    registry.publish("platforms/webservice", &reference, &[]);
    let scenario = Scenario {
        operator_args: vec!["--insecure-registry".to_string(), registry.host.clone()],
        readiness_delay: Duration::from_millis(300),
        deadline: Duration::from_secs(300),
        module_ref: serde_json::json!({"type": "oci", "ref": reference}),
        registry_log: Some(registry.log_path()),
        ..Scenario::webservice(pequod(), 50)
    };
    let report = run(&scenario).await.expect("every Transform Ready");
    let shown = describe(&report);
    eprintln!("{shown}");

    // First pass: every object written once, 4 per Transform.
    assert_eq!(report.objects, 200, "{shown}");
    assert_eq!(graph_writes(&report.requests), 200, "{shown}");
    // Every Transform's graph written once, its status a bounded number of times (each
    // step of its readiness), nothing read that a watch cache holds.
    assert!(
        report.requests.count("apply", "resourcegraphs") <= 50 + 10,
        "{shown}"
    );
    let reads = report.requests.count("get", "deployments")
        + report.requests.count("get", "services")
        + report.requests.count("get", "serviceaccounts")
        + report.requests.count("get", "poddisruptionbudgets");
    assert!(reads <= 200, "at most one read per object: {shown}");
    assert_eq!(report.requests.count("get", "resourcegraphs"), 0, "{shown}");
    assert_eq!(report.requests.count("get", "transforms"), 0, "{shown}");
    assert_eq!(report.requests.count("get", "secrets"), 0, "{shown}");
    // Each Transform planned once: its later reconciles (its status written, its graph's
    // readiness) find the graph planned from the same spec and module (a few may render
    // again when a loaded machine's watch takes longer than the wait for it).
    assert!(report.first_pass_renders <= 55, "{shown}");
    let (first, resync) = report.registry_requests.expect("the registry's log");
    assert!(
        first <= 3 * 16,
        "one resolution per concurrent first reconcile, then the module is reused: {shown}\n{}",
        registry.log()
    );

    // A quiet resync: every Transform reconciled again, nothing written, the registry
    // and the objects not asked.
    assert!(report.resync_reconciles >= 50, "{shown}");
    assert_eq!(report.resync_renders, 0, "nothing planned again: {shown}");
    assert_eq!(writes(&report.resync_requests), 0, "{shown}");
    assert_eq!(resync, 0, "{shown}\n{}", registry.log());
    assert_eq!(
        graph_writes(&report.resync_requests) + report.resync_requests.count("get", "deployments"),
        0,
        "{shown}"
    );
}

/// Transforms of a ConfigMap module read their ConfigMap from the API server once, not at
/// every reconcile: the ConfigMap watch says when it changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_transforms_of_a_config_map_module_read_it_once_and_a_quiet_resync_not_at_all() {
    let module = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("platforms/webservice");
    let scenario = Scenario {
        readiness_delay: Duration::from_millis(300),
        deadline: Duration::from_secs(300),
        ..Scenario::webservice(pequod(), 50)
    }
    .with_config_map_module("webservice", &module)
    .expect("the module's files");
    let report = run(&scenario).await.expect("every Transform Ready");
    let shown = describe(&report);
    eprintln!("{shown}");
    assert_eq!(report.objects, 200, "{shown}");
    // At most one read per Transform (its first reconcile, before any read of its
    // namespace's ConfigMap is recorded); its later reconciles (its status, its graph's
    // readiness) read nothing.
    let reads = report.requests.count("get", "configmaps");
    eprintln!("ConfigMap reads: {reads} in the first pass");
    assert!(reads <= 50, "{reads} reads: {shown}");
    assert!(report.resync_reconciles >= 50, "{shown}");
    assert_eq!(
        report.resync_requests.count("get", "configmaps"),
        0,
        "{shown}"
    );
    assert_eq!(writes(&report.resync_requests), 0, "{shown}");
    assert_eq!(report.resync_renders, 0, "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shards_and_an_unsharded_replica_split_three_hundred_transforms() {
    let scenario = Scenario {
        readiness_delay: Duration::from_millis(300),
        deadline: Duration::from_secs(600),
        shards: 2,
        start: Start::TransformsFirst,
        ..Scenario::webservice(pequod(), 300)
    };
    let report = run(&scenario).await.expect("every Transform Ready");
    let shown = describe(&report);
    eprintln!("{shown}");
    assert_eq!(report.objects, 1200, "{shown}");
    assert_eq!(
        report
            .replicas
            .iter()
            .map(|r| (r.name.as_str(), r.transforms))
            .collect::<Vec<_>>(),
        [("unsharded", 100), ("shard-0", 100), ("shard-1", 100)],
        "{shown}"
    );
    // Each replica wrote the 400 objects of its own share (three replicas on two cores may
    // repeat a write of their own now and then; the once-per-object count is asserted
    // above, with one replica).
    for replica in &report.replicas {
        assert!(
            (400..=404).contains(&replica.graph_writes),
            "{}: {shown}",
            replica.name
        );
    }
    // Every Transform was rendered by its shard's replica and by no other.
    assert!(
        report.rendered_elsewhere.is_empty(),
        "{:?}\n{shown}",
        report.rendered_elsewhere
    );
    assert!(report.resync_reconciles >= 300, "{shown}");
    assert_eq!(writes(&report.resync_requests), 0, "{shown}");
}
