//! Shared helpers of the integration tests: running the `pequod` binary, the test data
//! under `../shared/data`, and validation of rendered objects against strict JSON Schemas.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::LazyLock;

use serde_json::Value;

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `../shared/data`, beside the repository.
pub fn shared_data() -> PathBuf {
    repo().join("..").join("shared").join("data")
}

/// The `pequod` binary built for these tests.
pub fn pequod_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pequod"))
}

/// Runs `pequod ARGS` in the repository root.
pub fn pequod(args: &[&str]) -> Output {
    Command::new(pequod_bin())
        .args(args)
        .current_dir(repo())
        .output()
        .expect("pequod runs")
}

/// Stdout of a successful run; panics with stderr otherwise.
pub fn pequod_ok(args: &[&str]) -> String {
    let out = pequod(args);
    assert!(
        out.status.success(),
        "pequod {args:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Parses every document of a multi-document YAML stream into JSON values.
pub fn yaml_documents(text: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).expect("valid YAML document"))
        .filter(|v| !v.is_null())
        .collect()
}

const K8S_DEFS_URI: &str = "https://kubernetes.io/api/_definitions.json";

static K8S_REGISTRY: LazyLock<jsonschema::Registry<'static>> = LazyLock::new(|| {
    let defs = read_json(
        &shared_data()
            .join("k8s-json-schema/v1.34.0-local-strict")
            .join("_definitions.json"),
    );
    jsonschema::Registry::new()
        .add(K8S_DEFS_URI, defs)
        .expect("definitions register")
        .prepare()
        .expect("registry prepares")
});

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).expect("valid JSON schema file")
}

/// The strict schema file for an object: a built-in kind from `k8s-json-schema`, or a CRD
/// from `crd-json-schema`, named `<kind>-<first group segment>-<version>.json`.
pub fn schema_file(object: &Value) -> PathBuf {
    let kind = object["kind"].as_str().expect("kind").to_lowercase();
    let api_version = object["apiVersion"].as_str().expect("apiVersion");
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let stem = match group.split('.').next() {
        Some(g) if !g.is_empty() => format!("{kind}-{g}-{version}.json"),
        _ => format!("{kind}-{version}.json"),
    };
    let builtin = shared_data()
        .join("k8s-json-schema/v1.34.0-local-strict")
        .join(&stem);
    if builtin.exists() {
        builtin
    } else {
        shared_data().join("crd-json-schema").join(&stem)
    }
}

/// Validates `object` against the strict schema of its kind; returns the errors as
/// `path: message` lines.
pub fn schema_errors(object: &Value) -> Vec<String> {
    let file = schema_file(object);
    let schema = read_json(&file);
    let validator = jsonschema::options()
        .offline()
        .with_registry(&K8S_REGISTRY)
        .with_base_uri("https://kubernetes.io/api/object.json")
        .build(&schema)
        .unwrap_or_else(|e| panic!("schema {} compiles: {e}", file.display()));
    validator
        .iter_errors(object)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

/// A rendered ResourceGraph (YAML) with its `spec.metadata.moduleDigest` replaced: what the
/// same module renders when it was resolved from a registry or a repository, whose digest is
/// the manifest's or the commit's.
pub fn with_module_digest(yaml: &str, digest: &str) -> String {
    let mut replaced = 0;
    let lines: Vec<String> = yaml
        .lines()
        .map(|line| match line.split_once("moduleDigest: ") {
            Some((indent, _)) => {
                replaced += 1;
                format!("{indent}moduleDigest: {}", quoted_if_needed(digest))
            }
            None => line.to_string(),
        })
        .collect();
    assert_eq!(replaced, 1, "one moduleDigest in {yaml}");
    lines.join("\n") + "\n"
}

/// `text` as YAML prints a string scalar: quoted when it would read as something else.
fn quoted_if_needed(text: &str) -> String {
    let printed = serde_yaml::to_string(text).expect("YAML");
    printed.trim_end().to_string()
}
