//! End to end: cluster policy modules (`--policy-module`) with the operator and the test
//! API server: the shipped baseline configured from a ConfigMap, a policy module from a real
//! private registry (Debian's docker-registry, read with `--policy-pull-secret`) and one held by a ConfigMap; refusals with their
//! messages, and tightened and loosened policies re-validating every Transform without
//! touching what runs.

use std::time::Duration;

#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/net.rs"]
mod net;
#[path = "common/registry.rs"]
mod registry;

use cluster::{Cluster, condition, skip_on_real_cluster};
use serde_json::{Value, json};

/// A policy module named `house` in a new directory of `dir`: with `tight`, every object a
/// graph writes needs a `cost-center` label; without, it finds nothing.
fn house(dir: &std::path::Path, tight: bool) -> String {
    let check = if tight {
        r#"std.array.flat_map (fun n =>
        if std.record.has_field "cost-center" n.object.metadata.labels then []
        else [{ path = "rendered.nodes.%{n.id}.object.metadata.labels", message = "%{n.object.kind} %{n.object.metadata.name} has no cost-center label" }])
        ctx.rendered.nodes"#
    } else {
        "[]"
    };
    let path = dir.join(if tight { "house-tight" } else { "house" });
    std::fs::create_dir_all(&path).expect("module directory");
    let source = format!(
        r#"{{
  metadata = {{ name = "house", version = "{}" }},
  Input = {{}},
  policies = {{
    "cost-center" = {{
      description = "Every object names its cost center.",
      check = fun ctx => {check},
    }},
  }},
}}
"#,
        if tight { "2.0.0" } else { "1.0.0" }
    );
    std::fs::write(path.join("main.ncl"), source).expect("main.ncl");
    path.display().to_string()
}

/// A ConfigMap named `name` whose data is `data`.
fn config_map(name: &str, data: Value) -> String {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data})
        .to_string()
}

/// The baseline's configuration: images from `registries` only; Transforms of
/// `namespace` may lower its overridable policies.
fn baseline_config(registries: &[&str], namespace: &str) -> String {
    let config = json!({"allowedRegistries": registries, "overridableIn": [namespace]}).to_string();
    config_map("baseline-config", json!({ "config.yaml": config }))
}

/// A Transform of the workload module (held by the ConfigMap `workload`) named `name`.
fn workload(name: &str, input: Value, policies: Value) -> String {
    let mut input = input;
    input["name"] = name.into();
    json!({
        "apiVersion": "platform.pequod.io/v1alpha1", "kind": "Transform",
        "metadata": {"name": name},
        "spec": {"moduleRef": {"type": "configmap", "ref": "workload"},
                 "input": input, "policies": policies}
    })
    .to_string()
}

fn is(transform: &Value, type_: &str, status: &str) -> bool {
    transform["status"]["observedGeneration"] == transform["metadata"]["generation"]
        && condition(transform, type_).is_some_and(|c| c["status"] == status)
}

fn message(transform: &Value, type_: &str) -> String {
    condition(transform, type_).map_or_else(String::new, |c| {
        c["message"].as_str().unwrap_or_default().to_string()
    })
}

/// The Transform `name` once it is refused by policy with a message containing `wanted`.
async fn refused(cluster: &Cluster, name: &str, wanted: &str) -> Value {
    let namespace = cluster.namespace().to_string();
    cluster
        .transform_when(
            &namespace,
            name,
            &format!("{name} refused: {wanted}"),
            |t| is(t, "Validated", "False") && message(t, "Validated").contains(wanted),
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_policies_refuse_what_they_forbid_and_tightening_them_keeps_what_runs() {
    if skip_on_real_cluster("runs the operator with policy modules of its own") {
        return;
    }
    // A private registry: the operator reads it with --policy-pull-secret.
    let registry = tokio::task::spawn_blocking(registry::TestRegistry::with_auth)
        .await
        .expect("registry starts");
    let dir = tempfile::tempdir().expect("temporary directory");
    let docker_config = dir.path().join("docker-config.json");
    registry.docker_config(&docker_config);
    let login = [
        std::ffi::OsStr::new("--docker-config"),
        docker_config.as_os_str(),
    ];
    let reference = format!("{}/policies/house:stable", registry.host);
    registry.publish(&house(dir.path(), false), &reference, &login);
    let cluster = Cluster::start_with_flags(
        Duration::from_millis(300),
        &[
            "--insecure-registry",
            &registry.host,
            "--module-resync",
            "1s",
            "--policy-module",
            "embedded:baseline",
            "--policy-config",
            "baseline=configmap:baseline-config",
            "--policy-module",
            &reference,
            "--policy-module",
            "configmap:naming-rules",
            "--policy-pull-secret",
            "policy-registry",
        ],
    )
    .await;
    let workload_module = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/modules/workload/main.ncl"
    ))
    .expect("the workload module");
    let naming_rules = r#"{
  metadata = { name = "naming-rules", version = "1.0.0" },
  Input = {},
  policies = {
    "no-temporary-names" = {
      description = "Transforms are not named tmp-*.",
      check = fun ctx =>
        if std.string.is_match "^tmp-" ctx.transform.name then
          [{ path = "metadata.name", message = "%{ctx.transform.name} in %{ctx.transform.namespace} is a temporary name" }]
        else [],
    },
  },
}"#;
    // The operator started before its policy modules' ConfigMaps existed: their creation
    // loads them.
    let namespace = cluster.namespace().to_string();
    use base64::Engine as _;
    let pull_secret = json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
        "metadata": {"name": "policy-registry"},
        "data": {".dockerconfigjson": base64::engine::general_purpose::STANDARD
            .encode(std::fs::read(&docker_config).expect("docker config"))},
    });
    let documents = [
        pull_secret.to_string(),
        baseline_config(&["ghcr.io"], &namespace),
        config_map("naming-rules", json!({ "main.ncl": naming_rules })),
        config_map("workload", json!({ "main.ncl": workload_module })),
        workload("good", json!({}), json!([])),
        workload("foreign", json!({"image": "nginx:1.27"}), json!([])),
        workload(
            "privileged",
            json!({"container": {"securityContext": {"privileged": true}}}),
            json!([]),
        ),
        workload(
            "exempt",
            json!({"container": {"securityContext": {"privileged": true}}}),
            json!([{"name": "baseline/no-privileged", "enforcement": "Warning"}]),
        ),
        workload("tmp-app", json!({}), json!([])),
        workload(
            "lowered",
            json!({"resources": {"limits": {"memory": "128Mi"}}}),
            json!([{"name": "baseline/container-resources", "enforcement": "Warning"}]),
        ),
    ];
    cluster
        .ok(&["apply", "-f", "-"], Some(&documents.join("\n")))
        .await;
    cluster
        .transform_when(&namespace, "good", "good Ready", |t| is(t, "Ready", "True"))
        .await;
    // An overridable policy lowered where the policy module allows it: a warning, recorded
    // on the graph and in an event.
    let lowered = cluster
        .transform_when(&namespace, "lowered", "lowered Ready", |t| {
            is(t, "Ready", "True")
        })
        .await;
    assert_eq!(message(&lowered, "Validated"), "1 policy warnings");
    let graph = cluster
        .json(&["get", "resourcegraph", "lowered"])
        .await
        .expect("lowered's graph");
    assert_eq!(
        graph["spec"]["violations"],
        json!([{
            "path": "rendered.nodes.deployment.object.spec.template.spec.containers.app.resources",
            "message": "container app needs CPU and memory requests and a memory limit",
            "severity": "Warning",
            "policy": "baseline/container-resources",
        }])
    );
    let events = cluster
        .json(&["get", "events.events.k8s.io"])
        .await
        .expect("events");
    assert!(
        events["items"]
            .as_array()
            .is_some_and(|items| items.iter().any(|e| {
                e["reason"] == "PolicyWarnings"
                    && e["type"] == "Warning"
                    && e["regarding"]["name"] == "lowered"
                    && e["note"]
                        .as_str()
                        .is_some_and(|note| note.contains("(policy baseline/container-resources)"))
            })),
        "a PolicyWarnings event: {events}"
    );

    let foreign = refused(
        &cluster,
        "foreign",
        "image nginx:1.27 is from docker.io, not from an allowed registry (ghcr.io) (policy baseline/allowed-registries)",
    )
    .await;
    assert_eq!(
        condition(&foreign, "Validated").map(|c| c["reason"].clone()),
        Some("PolicyViolation".into())
    );
    assert_eq!(
        foreign["status"]["violations"][0]["path"],
        "rendered.nodes.deployment.object.spec.template.spec.containers.app.image"
    );
    // The workload module has no policy against privileged containers: the cluster's has.
    refused(
        &cluster,
        "privileged",
        "container app must not run privileged (policy baseline/no-privileged)",
    )
    .await;
    refused(
        &cluster,
        "exempt",
        "spec.policies[0]: policy `baseline/no-privileged` cannot be lowered: the policy module baseline does not make it overridable",
    )
    .await;
    refused(
        &cluster,
        "tmp-app",
        &format!("metadata.name: tmp-app in {namespace} is a temporary name (policy naming-rules/no-temporary-names)"),
    )
    .await;
    for name in ["foreign", "privileged", "exempt", "tmp-app"] {
        assert!(
            !cluster.exists(&["get", "resourcegraph", name]).await,
            "{name} has no ResourceGraph"
        );
        assert!(!cluster.exists(&["get", "deployment", name]).await);
    }

    // A tighter version of a policy module under the same tag: the Transform that now
    // breaks it keeps its graph and its objects, and says why.
    let graph_before = cluster.resource_version("resourcegraph", "good").await;
    let deployment_before = cluster.resource_version("deployment", "good").await;
    registry.publish(&house(dir.path(), true), &reference, &login);
    refused(
        &cluster,
        "good",
        "rendered.nodes.deployment.object.metadata.labels: Deployment good has no cost-center label (policy house/cost-center)",
    )
    .await;
    let graph = cluster
        .json(&["get", "resourcegraph", "good"])
        .await
        .expect("good's graph");
    assert_eq!(
        condition(&graph, "Ready").map(|c| c["status"].clone()),
        Some("True".into()),
        "what runs is still Ready"
    );
    assert_eq!(
        cluster.resource_version("resourcegraph", "good").await,
        graph_before
    );
    assert_eq!(
        cluster.resource_version("deployment", "good").await,
        deployment_before
    );

    // A loosened configuration in the baseline's ConfigMap: the Transform it refused runs.
    cluster
        .ok(
            &["apply", "-f", "-"],
            Some(&baseline_config(&["ghcr.io", "docker.io"], &namespace)),
        )
        .await;
    // (The house policy still wants a cost-center label of every object.)
    cluster
        .transform_when(
            &namespace,
            "foreign",
            "foreign re-validated with the loosened configuration",
            |t| {
                let said = message(t, "Validated");
                is(t, "Validated", "False")
                    && said.contains(
                        "Deployment foreign has no cost-center label (policy house/cost-center)",
                    )
                    && !said.contains("allowed-registries")
            },
        )
        .await;
}

/// An operator that watches the Transforms of one namespace (`--namespace`) keeps its
/// policy modules' ConfigMaps in its own: an edit of one is seen at once, not at the next
/// `--module-resync` (ten minutes here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespaced_operator_loads_its_policy_modules_again_when_their_config_map_changes() {
    if skip_on_real_cluster("runs the operator with policy modules of its own") {
        return;
    }
    let cluster = Cluster::start_with_flags(
        Duration::from_millis(300),
        &[
            "--namespace",
            "team-x",
            "--policy-module",
            "configmap:naming-rules",
        ],
    )
    .await;
    let team = cluster.extra_namespace("team-x").await;
    let rules = |pattern: &str| {
        let module = format!(
            r#"{{
  metadata = {{ name = "naming-rules", version = "1.0.0" }},
  Input = {{}},
  policies = {{
    "no-such-names" = {{
      description = "Transforms are not named {pattern}.",
      check = fun ctx =>
        if std.string.is_match "{pattern}" ctx.transform.name then
          [{{ path = "metadata.name", message = "%{{ctx.transform.name}} matches {pattern}" }}]
        else [],
    }},
  }},
}}"#
        );
        config_map("naming-rules", json!({ "main.ncl": module }))
    };
    cluster
        .ok(&["apply", "-f", "-"], Some(&rules("^tmp-")))
        .await;
    let transform = cluster::inline_in(
        &team,
        "tmp-app",
        r#"[{ id = "cm", object = { apiVersion = "v1", kind = "ConfigMap", metadata.name = "tmp-app", data.ok = "yes" } }]"#,
    );
    cluster.ok(&["apply", "-f", "-"], Some(&transform)).await;
    let refused = cluster
        .transform_when(&team, "tmp-app", "refused by the naming rule", |t| {
            is(t, "Validated", "False") && message(t, "Validated").contains("matches")
        })
        .await;
    assert_eq!(
        message(&refused, "Validated"),
        "policy violations: metadata.name: tmp-app matches ^tmp- (policy naming-rules/no-such-names)"
    );
    // The rule changes in the operator's namespace: the Transform is validated again.
    cluster
        .ok(&["apply", "-f", "-"], Some(&rules("^never-")))
        .await;
    cluster
        .transform_when(&team, "tmp-app", "Ready under the new rule", |t| {
            is(t, "Ready", "True")
        })
        .await;
    cluster.stop().await;
}
