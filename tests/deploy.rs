//! The manifests in `deploy/`: the kustomize base and the multi-tenant overlay build with
//! `kubectl kustomize`, the CRDs are exactly what `pequod crds` prints, the workload
//! objects pass the strict schemas of their kinds, and the RBAC grants what the operator,
//! the tenants and the shipped platforms need, and no more.

mod common;

use std::collections::BTreeSet;

use k8s_openapi::api::rbac::v1::ClusterRole;
use serde_json::Value;

fn documents(file: &str) -> Vec<Value> {
    let path = common::repo().join("deploy").join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    common::yaml_documents(&text)
}

fn cluster_role(file: &str) -> ClusterRole {
    let role = documents(file)
        .into_iter()
        .find(|d| d["kind"] == "ClusterRole")
        .unwrap_or_else(|| panic!("{file} has a ClusterRole"));
    serde_json::from_value(role).expect("a valid ClusterRole")
}

/// Whether `role` allows `verb` on `group`/`resource`.
fn allows(role: &ClusterRole, group: &str, resource: &str, verb: &str) -> bool {
    let has = |list: &Option<Vec<String>>, wanted: &str| {
        list.as_ref()
            .is_some_and(|l| l.iter().any(|v| v == wanted || v == "*"))
    };
    role.rules.iter().flatten().any(|rule| {
        has(&rule.api_groups, group)
            && has(&rule.resources, resource)
            && rule.verbs.iter().any(|v| v == verb || v == "*")
    })
}

/// What the operator itself does, whatever the modules render.
const OPERATOR_NEEDS: &[(&str, &str, &[&str])] = &[
    (
        "platform.pequod.io",
        "transforms",
        &["get", "list", "watch"],
    ),
    ("platform.pequod.io", "transforms/status", &["patch"]),
    (
        "platform.pequod.io",
        "resourcegraphs",
        &["get", "list", "watch", "patch"],
    ),
    ("platform.pequod.io", "resourcegraphs/status", &["patch"]),
    ("events.k8s.io", "events", &["create", "patch"]),
    ("coordination.k8s.io", "leases", &["get", "create", "patch"]),
];

const OBJECT_VERBS: &[&str] = &["get", "list", "watch", "create", "patch", "delete"];

#[test]
fn crds_are_what_pequod_prints() {
    let printed = common::pequod_ok(&["crds"]);
    let shipped = std::fs::read_to_string(common::repo().join("deploy/base/crds.yaml"))
        .expect("deploy/base/crds.yaml");
    assert!(
        printed == shipped,
        "deploy/base/crds.yaml is stale: run `cargo run -- crds > deploy/base/crds.yaml`"
    );
}

#[test]
fn workload_manifests_pass_their_strict_schemas() {
    let mut problems = Vec::new();
    for file in [
        "base/namespace.yaml",
        "base/operator/deployment.yaml",
        "base/rbac.yaml",
    ] {
        for object in documents(file) {
            let kind = object["kind"].as_str().unwrap_or_default().to_string();
            if kind.starts_with("ClusterRole") {
                continue; // no strict schema in ../shared/data; parsed by the RBAC tests
            }
            for error in common::schema_errors(&object) {
                problems.push(format!("{file}: {kind}: {error}"));
            }
        }
    }
    assert_eq!(problems, Vec::<String>::new());
    let deployment = documents("base/operator/deployment.yaml")
        .into_iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("a Deployment");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"],
        true
    );
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(
        container["args"]
            .as_array()
            .is_some_and(|a| a.contains(&Value::from("--leader-elect")))
    );
}

#[test]
fn both_cluster_roles_grant_what_the_operator_does() {
    for file in ["base/rbac.yaml", "rbac-narrow.yaml"] {
        let role = cluster_role(file);
        for (group, resource, verbs) in OPERATOR_NEEDS {
            for verb in *verbs {
                assert!(
                    allows(&role, group, resource, verb),
                    "{file}: {verb} {group}/{resource}"
                );
            }
        }
    }
}

/// `Deployment` → `deployments`, `NetworkPolicy` → `networkpolicies`, `Ingress` → `ingresses`.
fn plural(kind: &str) -> String {
    let lower = kind.to_lowercase();
    if let Some(stem) = lower.strip_suffix('y') {
        format!("{stem}ies")
    } else if lower.ends_with('s') {
        format!("{lower}es")
    } else {
        format!("{lower}s")
    }
}

#[test]
fn the_narrow_role_covers_every_kind_the_shipped_platforms_render() {
    let role = cluster_role("rbac-narrow.yaml");
    let mut kinds = BTreeSet::new();
    for entry in std::fs::read_dir(common::repo().join("testdata/transforms")).expect("transforms")
    {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let file = path
            .strip_prefix(common::repo())
            .expect("inside the repo")
            .display()
            .to_string();
        let graph: Value =
            serde_json::from_str(&common::pequod_ok(&["render", "-f", &file, "-o", "json"]))
                .expect("JSON");
        for node in graph["spec"]["nodes"].as_array().expect("nodes") {
            let api_version = node["object"]["apiVersion"].as_str().unwrap_or_default();
            let group = api_version
                .rsplit_once('/')
                .map_or("", |(g, _)| g)
                .to_string();
            kinds.insert((
                group,
                plural(node["object"]["kind"].as_str().unwrap_or_default()),
            ));
        }
    }
    assert!(kinds.len() >= 10, "{kinds:?}");
    for (group, resource) in &kinds {
        for verb in OBJECT_VERBS {
            assert!(
                allows(&role, group, resource, verb),
                "rbac-narrow.yaml: {verb} {group}/{resource}"
            );
        }
    }
}

/// The objects `kubectl kustomize DIR` builds.
fn kustomized(dir: &str) -> Vec<Value> {
    let output = std::process::Command::new("kubectl")
        .args(["kustomize", &common::repo().join(dir).display().to_string()])
        .output()
        .expect("kubectl runs");
    assert!(
        output.status.success(),
        "kubectl kustomize {dir}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    common::yaml_documents(&String::from_utf8_lossy(&output.stdout))
}

fn named<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{kind} {name}"))
}

fn role_of(objects: &[Value], name: &str) -> ClusterRole {
    serde_json::from_value(named(objects, "ClusterRole", name).clone()).expect("a ClusterRole")
}

fn args(objects: &[Value]) -> Vec<String> {
    args_of(objects, "pequod")
}

/// The operator's flags in Deployment `name`.
fn args_of(objects: &[Value], name: &str) -> Vec<String> {
    named(objects, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect()
}

#[test]
fn the_base_builds_with_kustomize_and_gives_tenants_aggregated_roles() {
    let base = kustomized("deploy");
    let kinds: BTreeSet<String> = base
        .iter()
        .map(|o| {
            format!(
                "{} {}",
                o["kind"].as_str().unwrap_or(""),
                o["metadata"]["name"].as_str().unwrap_or("")
            )
        })
        .collect();
    for expected in [
        "Namespace pequod-system",
        "CustomResourceDefinition transforms.platform.pequod.io",
        "CustomResourceDefinition resourcegraphs.platform.pequod.io",
        "ServiceAccount pequod",
        "ClusterRole pequod",
        "ClusterRoleBinding pequod",
        "ClusterRole pequod-edit",
        "ClusterRole pequod-view",
        "Deployment pequod",
    ] {
        assert!(kinds.contains(expected), "{expected} in {kinds:?}");
    }
    let edit = named(&base, "ClusterRole", "pequod-edit");
    assert_eq!(
        edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"],
        "true"
    );
    assert_eq!(
        edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-admin"],
        "true"
    );
    let edit = role_of(&base, "pequod-edit");
    for verb in [
        "get", "list", "watch", "create", "update", "patch", "delete",
    ] {
        assert!(
            allows(&edit, "platform.pequod.io", "transforms", verb),
            "edit: {verb} transforms"
        );
    }
    assert!(allows(&edit, "platform.pequod.io", "resourcegraphs", "get"));
    for verb in ["create", "update", "patch", "delete"] {
        assert!(
            !allows(&edit, "platform.pequod.io", "resourcegraphs", verb),
            "edit may not {verb} resourcegraphs: a hand-written graph bypasses rendering"
        );
    }
    let view = role_of(&base, "pequod-view");
    assert_eq!(
        named(&base, "ClusterRole", "pequod-view")["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"],
        "true"
    );
    assert!(allows(&view, "platform.pequod.io", "transforms", "list"));
    assert!(!allows(&view, "platform.pequod.io", "transforms", "create"));
    assert!(
        !allows(&view, "platform.pequod.io", "resourcegraphs", "get"),
        "view excludes graphs: they may hold rendered Secret data"
    );
    assert!(
        args(&base)
            .iter()
            .all(|a| !a.starts_with("--default-service-account"))
    );
}

#[test]
fn the_multi_tenant_overlay_locks_the_operator_down() {
    let overlay = kustomized("deploy/overlays/multi-tenant");
    let args = args(&overlay);
    assert!(
        args.contains(&"--default-service-account=default".to_string()),
        "{args:?}"
    );
    assert!(
        args.iter().any(|a| a.starts_with("--module-sources=")),
        "{args:?}"
    );
    let role = role_of(&overlay, "pequod");
    for (group, resource, verbs) in OPERATOR_NEEDS {
        for verb in *verbs {
            assert!(
                allows(&role, group, resource, verb),
                "{verb} {group}/{resource}"
            );
        }
    }
    assert!(allows(&role, "", "serviceaccounts", "impersonate"));
    assert!(allows(
        &role,
        "platform.pequod.io",
        "transforms/finalizers",
        "update"
    ));
    for (group, resource) in [("apps", "deployments"), ("", "secrets"), ("", "configmaps")] {
        assert!(
            allows(&role, group, resource, "watch"),
            "reads {group}/{resource}"
        );
        for verb in ["create", "patch", "update", "delete"] {
            assert!(
                !allows(&role, group, resource, verb),
                "the operator itself may not {verb} {group}/{resource}"
            );
        }
    }
}

#[test]
fn the_sharded_overlay_runs_a_replica_per_shard_beside_the_unsharded_one() {
    let overlay = kustomized("deploy/overlays/sharded");
    let deployments: Vec<&Value> = overlay
        .iter()
        .filter(|o| o["kind"] == "Deployment")
        .collect();
    let names: Vec<&str> = deployments
        .iter()
        .filter_map(|d| d["metadata"]["name"].as_str())
        .collect();
    assert_eq!(names, ["pequod", "pequod-shard-0", "pequod-shard-1"]);
    assert!(
        !args(&overlay).iter().any(|a| a.starts_with("--shard")),
        "the base's operator takes the unlabelled Transforms"
    );
    let mut selectors = BTreeSet::new();
    for deployment in &deployments {
        let name = deployment["metadata"]["name"].as_str().unwrap_or_default();
        let flags = args_of(&overlay, name);
        assert!(
            flags.contains(&"--leader-elect".to_string()),
            "{name}: {flags:?}"
        );
        if let Some(shard) = name.strip_prefix("pequod-") {
            assert!(
                flags.contains(&format!("--shard={shard}")),
                "{name}: {flags:?}"
            );
        }
        let spec = &deployment["spec"];
        assert_eq!(spec["template"]["spec"]["serviceAccountName"], "pequod");
        // Selectors that do not overlap: each Deployment owns its own Pods.
        let selector = spec["selector"]["matchLabels"].to_string();
        assert_eq!(
            spec["template"]["metadata"]["labels"]["app.kubernetes.io/name"],
            spec["selector"]["matchLabels"]["app.kubernetes.io/name"]
        );
        assert!(selectors.insert(selector), "{name} shares a selector");
        assert_eq!(
            common::schema_errors(deployment),
            Vec::<String>::new(),
            "{name}"
        );
    }
    let services: BTreeSet<String> = overlay
        .iter()
        .filter(|o| o["kind"] == "Service")
        .map(|s| s["spec"]["selector"].to_string())
        .collect();
    assert_eq!(services, selectors, "a metrics Service per replica");
}
