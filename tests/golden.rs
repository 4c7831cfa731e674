//! Golden renders: every Transform under `testdata/transforms/` rendered with the real
//! binary, and the `pequod module inspect` of both platforms, compared byte for byte with
//! `golden/`. `UPDATE_GOLDEN=1 cargo test --test golden`
//! rewrites the files; review the diff. Every rendered object is also validated against the
//! strict JSON Schema of its kind from `../shared/data`.

mod common;

use std::path::{Path, PathBuf};

use serde_json::Value;

fn transforms() -> Vec<PathBuf> {
    let dir = common::repo().join("testdata/transforms");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("testdata/transforms")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    files
}

fn relative(path: &Path) -> String {
    path.strip_prefix(common::repo())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Compares `actual` with the golden file, or rewrites it under `UPDATE_GOLDEN=1`.
fn check_golden(name: &str, actual: &str) -> Option<String> {
    let path = common::repo().join("golden").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().expect("golden dir")).expect("golden dir");
        std::fs::write(&path, actual).expect("golden written");
        return None;
    }
    match std::fs::read_to_string(&path) {
        Ok(expected) if expected == actual => None,
        Ok(_) => Some(format!(
            "{name} differs from the render (UPDATE_GOLDEN=1 to accept)"
        )),
        Err(_) => Some(format!("{name} is missing (UPDATE_GOLDEN=1 to create)")),
    }
}

#[test]
fn renders_match_golden_files() {
    let mut problems = Vec::new();
    for transform in transforms() {
        let file = relative(&transform);
        let stem = transform
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("file name");
        for (format, suffix) in [("yaml", "yaml"), ("manifests", "manifests.yaml")] {
            let out = common::pequod_ok(&["render", "-f", &file, "-o", format]);
            problems.extend(check_golden(&format!("{stem}.{suffix}"), &out));
        }
    }
    for (format, suffix) in [("dot", "dot"), ("mermaid", "mmd"), ("json", "json")] {
        let out = common::pequod_ok(&[
            "render",
            "-f",
            "testdata/transforms/webservice.yaml",
            "-o",
            format,
        ]);
        problems.extend(check_golden(&format!("webservice.{suffix}"), &out));
    }
    assert_eq!(problems, Vec::<String>::new());
}

#[test]
fn module_inspections_match_golden_files() {
    let mut problems = Vec::new();
    for module in ["postgres", "webservice"] {
        let dir = format!("platforms/{module}");
        let yaml = common::pequod_ok(&["module", "inspect", &dir]);
        problems.extend(check_golden(&format!("{module}.inspect.yaml"), &yaml));
        let table = common::pequod_ok(&["module", "inspect", &dir, "-o", "markdown"]);
        problems.extend(check_golden(&format!("{module}.inspect.md"), &table));
    }
    assert_eq!(problems, Vec::<String>::new());
}

#[test]
fn every_rendered_object_validates_against_its_strict_schema() {
    let mut problems = Vec::new();
    for transform in transforms() {
        let file = relative(&transform);
        let out = common::pequod_ok(&["render", "-f", &file, "-o", "manifests"]);
        let objects = common::yaml_documents(&out);
        assert!(!objects.is_empty(), "{file} renders objects");
        for object in objects {
            for error in common::schema_errors(&object) {
                problems.push(format!(
                    "{file}: {} {}: {error}",
                    object["kind"], object["metadata"]["name"]
                ));
            }
        }
    }
    assert_eq!(problems, Vec::<String>::new());
}

#[test]
fn shipped_modules_pass_their_own_examples() {
    for module in ["platforms/postgres", "platforms/webservice"] {
        let out = common::pequod_ok(&["module", "check", module]);
        assert!(out.ends_with(" passed, 0 failed\n"), "{module}: {out}");
    }
}

/// The policies of the shipped baseline policy module, each refused by a Transform under
/// `testdata/policies/baseline/refused/` named after it.
const BASELINE_POLICIES: [&str; 9] = [
    "allowed-registries",
    "container-resources",
    "no-external-services",
    "no-host-namespaces",
    "no-host-path",
    "no-privilege-escalation",
    "no-privileged",
    "required-labels",
    "run-as-non-root",
];

/// `pequod render` of a Transform of `testdata/modules/workload` under the baseline policy
/// module, configured by `testdata/policies/baseline/config.yaml`.
fn render_under_baseline(file: &str) -> std::process::Output {
    common::pequod(&[
        "render",
        "-f",
        file,
        "--module-dir",
        "testdata/modules/workload",
        "--policy-module",
        "embedded:baseline",
        "--policy-config",
        "baseline=testdata/policies/baseline/config.yaml",
    ])
}

fn yaml_files(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(common::repo().join(dir))
        .expect("test data")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn baseline_policies_pass_and_refuse_as_their_golden_files_say() {
    let mut problems = Vec::new();
    for transform in yaml_files("testdata/policies/baseline/pass") {
        let (file, stem) = (relative(&transform), stem(&transform));
        let out = render_under_baseline(&file);
        assert!(out.status.success(), "{file}: {out:?}");
        let graph = String::from_utf8(out.stdout).expect("utf-8");
        problems.extend(check_golden(
            &format!("policies/baseline/pass-{stem}.yaml"),
            &graph,
        ));
    }
    let mut refused = Vec::new();
    for transform in yaml_files("testdata/policies/baseline/refused") {
        let (file, stem) = (relative(&transform), stem(&transform));
        let out = render_under_baseline(&file);
        assert_eq!(out.status.code(), Some(1), "{file}: {out:?}");
        assert!(out.stdout.is_empty(), "{file}: nothing rendered");
        let message = String::from_utf8(out.stderr).expect("utf-8");
        problems.extend(check_golden(
            &format!("policies/baseline/refused-{stem}.txt"),
            &message,
        ));
        refused.push(stem);
    }
    for policy in BASELINE_POLICIES {
        assert!(
            refused.contains(&policy.to_string()),
            "no Transform refused by {policy}"
        );
    }
    assert_eq!(problems, Vec::<String>::new());
}

#[test]
fn module_check_shows_the_baseline_findings_of_the_shipped_modules() {
    let out = common::pequod_ok(&[
        "module",
        "check",
        "platforms/postgres",
        "--policy-module",
        "embedded:baseline",
    ]);
    assert!(out.ends_with(" passed, 0 failed\n"), "{out}");
    // The webservice's full example exposes a LoadBalancer: the baseline allows that only
    // in the namespaces its configuration names.
    let out = common::pequod(&[
        "module",
        "check",
        "platforms/webservice",
        "--policy-module",
        "embedded:baseline",
    ]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(
        report.contains("FAIL  examples/full.yaml: policy violations: rendered.nodes.service.object.spec.type: Service checkout is of type LoadBalancer, which no namespace may use (externalServiceNamespaces is empty) (policy baseline/no-external-services)\n"),
        "{report}"
    );
    assert!(report.ends_with("5 passed, 1 failed\n"), "{report}");
    let out = common::pequod(&[
        "module",
        "check",
        "testdata/modules/workload",
        "--policy-module",
        "embedded:baseline",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "ok    examples/compliant.yaml: 2 nodes\n\
         FAIL  examples/privileged.yaml: policy violations: rendered.nodes.deployment.object.spec.template.spec.containers.app.securityContext.privileged: container app must not run privileged (policy baseline/no-privileged)\n\
         1 passed, 1 failed\n"
    );
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .and_then(|s| s.to_str())
        .expect("file name")
        .to_string()
}

#[test]
fn json_and_yaml_outputs_carry_the_same_graph() {
    let yaml = common::pequod_ok(&["render", "-f", "testdata/transforms/webservice.yaml"]);
    let json = common::pequod_ok(&[
        "render",
        "-f",
        "testdata/transforms/webservice.yaml",
        "-o",
        "json",
    ]);
    let from_yaml: Value = serde_yaml::from_str(&yaml).expect("YAML");
    let from_json: Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(from_yaml, from_json);
}

#[test]
fn webservice_deployment_waits_for_its_service_account() {
    let out = common::pequod_ok(&["render", "-f", "testdata/transforms/webservice.yaml"]);
    let graph: Value = serde_yaml::from_str(&out).expect("ResourceGraph YAML");
    assert_eq!(graph["kind"], "ResourceGraph");
    let nodes = graph["spec"]["nodes"].as_array().expect("nodes");
    let summary: Vec<(String, String, Value)> = nodes
        .iter()
        .map(|n| {
            (
                n["id"].as_str().unwrap_or("").to_string(),
                n["object"]["kind"].as_str().unwrap_or("").to_string(),
                n.get("dependsOn").cloned().unwrap_or(Value::Null),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                "serviceaccount".into(),
                "ServiceAccount".into(),
                Value::Null
            ),
            (
                "deployment".into(),
                "Deployment".into(),
                serde_json::json!(["serviceaccount"])
            ),
            ("service".into(), "Service".into(), Value::Null),
            ("pdb".into(), "PodDisruptionBudget".into(), Value::Null),
        ]
    );
}

#[test]
fn platform_docs_describe_every_input_field() {
    for module in ["postgres", "webservice"] {
        let inspected = common::pequod_ok(&[
            "module",
            "inspect",
            &format!("platforms/{module}"),
            "-o",
            "json",
        ]);
        let inspected: Value = serde_json::from_str(&inspected).expect("JSON");
        let doc_path = format!("docs/platforms/{module}.md");
        let doc = std::fs::read_to_string(common::repo().join(&doc_path)).expect("doc");
        let missing: Vec<&str> = inspected["input"]
            .as_array()
            .expect("input fields")
            .iter()
            .filter_map(|field| field["path"].as_str())
            .filter(|path| !doc.contains(&format!("\n| `{path}` |")))
            .collect();
        assert_eq!(
            missing,
            Vec::<&str>::new(),
            "input fields without a row in {doc_path}"
        );
    }
}
