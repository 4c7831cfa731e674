//! `pequod render` reads a Transform's YAML as kubectl does: a table of scalars that YAML 1.1
//! (kubectl) and YAML 1.2 read differently, as keys and as values, compared with what the
//! installed kubectl decodes from the same file (`kubectl create --dry-run=client -o json`),
//! and the warning each one gets.

use std::time::Duration;

#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/net.rs"]
mod net;

use cluster::Cluster;
use serde_json::Value;

/// A module that renders one object whose spec is its input, unchanged.
const ECHO: &str = r#"{ metadata = { name = "echo", version = "1.0.0" }, Input = { .. }, render = fun input => { nodes = [ { id = "echo", object = { apiVersion = "example.com/v1", kind = "Echo", metadata.name = "echo", spec = input } } ] } }"#;

/// Plain scalars, each with the warning it gets (none: both YAML versions agree).
const VALUES: &[(&str, Option<&str>)] = &[
    ("y", Some("the boolean true")),
    ("Y", Some("the boolean true")),
    ("yes", Some("the boolean true")),
    ("No", Some("the boolean false")),
    ("n", Some("the boolean false")),
    ("on", Some("the boolean true")),
    ("OFF", Some("the boolean false")),
    ("true", None),
    ("False", None),
    ("0777", Some("the number 511")),
    ("-0777", Some("the number -511")),
    ("08", None),
    ("1_000", Some("the number 1000")),
    ("1_000.5", Some("the number 1000.5")),
    ("0b101", Some("the number 5")),
    ("0x1F", None),
    ("0o17", None),
    ("+12", None),
    ("1e3", None),
    ("1.0", None),
    ("3.", None),
    (".5", None),
    ("12:30", None),
    ("1:20:30.5", None),
    ("2024-01-02", None),
    ("2001-12-14 21:59:43.10", None),
    ("~", None),
    ("null", None),
    ("plain text", None),
];

/// Plain keys kubectl turns into other strings.
const KEYS: &[(&str, &str)] = &[
    ("n", "false"),
    ("yes", "true"),
    ("0777", "511"),
    ("1_000", "1000"),
    ("1.5", "1.5"),
    ("12:30", "12:30"),
    ("3.14159265358979", "3.1415927"),
    ("1e6", "1e+06"),
];

fn transform() -> String {
    let mut yaml = format!(
        "apiVersion: platform.pequod.io/v1alpha1\nkind: Transform\nmetadata:\n  name: echo\nspec:\n  moduleRef:\n    type: inline\n    ref: '{ECHO}'\n  input:\n"
    );
    for (i, (value, _)) in VALUES.iter().enumerate() {
        yaml.push_str(&format!("    v{i}: {value}\n"));
    }
    for (i, (key, _)) in KEYS.iter().enumerate() {
        yaml.push_str(&format!("    {key}: k{i}\n"));
    }
    yaml.push_str("    quoted: 'yes'\n    list: [on, '0777', 0777]\n");
    yaml
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn render_reads_yaml_as_kubectl_does_and_warns_where_yaml_1_2_differs() {
    let cluster = Cluster::start_with(Duration::from_millis(300)).await;
    let dir = tempfile::tempdir().expect("temporary directory");
    let file = dir.path().join("transform.yaml");
    std::fs::write(&file, transform()).expect("written");
    let file = file.display().to_string();

    let decoded: Value = serde_json::from_str(
        &cluster
            .ok(
                &["create", "--dry-run=client", "-o", "json", "-f", &file],
                None,
            )
            .await,
    )
    .expect("kubectl's JSON");
    let rendered = cluster
        .pequod_output(&["render", "-f", &file, "-o", "json"])
        .await;
    assert!(rendered.status.success(), "{rendered:?}");
    let graph: Value = serde_json::from_slice(&rendered.stdout).expect("the graph");
    let input = &graph["spec"]["nodes"][0]["object"]["spec"];
    assert_eq!(
        input, &decoded["spec"]["input"],
        "pequod and kubectl read the same input"
    );
    for (i, (_, key)) in KEYS.iter().enumerate() {
        assert_eq!(input[key], format!("k{i}"), "the key {key}");
    }

    let stderr = String::from_utf8_lossy(&rendered.stderr);
    let mut expected: Vec<String> = VALUES
        .iter()
        .enumerate()
        .filter_map(|(i, (value, read))| {
            read.map(|read| format!("warning: {file}: spec.input.v{i}: read as {read}, as kubectl will; quote it (\"{value}\") if you meant a string"))
        })
        .collect();
    expected.extend(KEYS.iter().filter(|(key, read)| key != read).map(|(key, read)| {
        format!("warning: {file}: spec.input: the key {key} is read as \"{read}\", as kubectl will; quote it (\"{key}\") if you meant the key \"{key}\"")
    }));
    expected.extend([
        format!("warning: {file}: spec.input.list[0]: read as the boolean true, as kubectl will; quote it (\"on\") if you meant a string"),
        format!("warning: {file}: spec.input.list[2]: read as the number 511, as kubectl will; quote it (\"0777\") if you meant a string"),
    ]);
    let warnings: Vec<&str> = stderr.lines().collect();
    assert_eq!(warnings, expected);
}
