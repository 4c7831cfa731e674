//! End to end: `pequod diff` against the test API server (or the cluster `KUBECONFIG` names
//! with `PEQUOD_E2E_CLUSTER=1`), over state made with kubectl and the operator.

#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/net.rs"]
mod net;

use cluster::{Cluster, condition, inline_in, role_for, skip_on_real_cluster};
use serde_json::{Value, json};

/// A ConfigMap and a Secret from the input, and a second ConfigMap while `input.extra`.
const NODES: &str = r#"[
  { id = "settings", object = { apiVersion = "v1", kind = "ConfigMap",
      metadata.name = input.prefix ++ "settings", data.color = input.color } },
  { id = "creds", object = { apiVersion = "v1", kind = "Secret",
      metadata.name = input.prefix ++ "creds", data.password = input.password } },
] @ (if input.extra then [
  { id = "extra", object = { apiVersion = "v1", kind = "ConfigMap",
      metadata.name = input.prefix ++ "extra", data.a = "b" } },
] else [])"#;

fn transform(namespace: &str, name: &str, input: Value) -> Value {
    let mut transform: Value =
        serde_json::from_str(&inline_in(namespace, name, NODES)).expect("JSON");
    transform["spec"]["input"] = input;
    transform
}

/// The file `name` in `dir` holding `object`.
fn file(dir: &tempfile::TempDir, name: &str, object: &Value) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, object.to_string()).expect("written");
    path.display().to_string()
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

async fn diff(cluster: &Cluster, args: &[&str]) -> Run {
    let mut all = vec!["diff"];
    all.extend(args);
    let output = cluster.pequod_output(&all).await;
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

async fn resource_versions(cluster: &Cluster, namespace: &str) -> Vec<String> {
    let mut versions = Vec::new();
    for (kind, name) in [
        ("configmap", "settings"),
        ("secret", "creds"),
        ("configmap", "extra"),
    ] {
        let object = cluster
            .json(&["-n", namespace, "get", kind, name])
            .await
            .expect("exists");
        versions.push(object["metadata"]["resourceVersion"].to_string());
    }
    versions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_shows_what_a_change_would_do_and_does_nothing() {
    let cluster = Cluster::start().await;
    let ns = cluster.namespace().to_string();
    let ns = ns.as_str();
    // "s3cr3t" and "new-secret", base64.
    let v1 = json!({"prefix": "", "color": "blue", "password": "czNjcjN0", "extra": true});
    cluster
        .ok(
            &["apply", "-f", "-"],
            Some(&transform(ns, "shop", v1.clone()).to_string()),
        )
        .await;
    cluster
        .transform_when(ns, "shop", "the Transform Ready", |t| {
            condition(t, "Ready").is_some_and(|c| c["status"] == "True")
        })
        .await;
    let dir = tempfile::tempdir().expect("temporary directory");

    // The same Transform: nothing to do.
    let same = file(&dir, "same.json", &transform(ns, "shop", v1.clone()));
    let run = diff(&cluster, &["-f", &same]).await;
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    assert_eq!(
        run.stdout,
        format!(
            "Transform {ns}/shop, module inline-test 0.1.0 ({digest}), dry run as you (the kubeconfig's user)\n\
             unchanged  ConfigMap {ns}/settings (node settings)\n\
             unchanged  Secret {ns}/creds (node creds)\n\
             unchanged  ConfigMap {ns}/extra (node extra)\n\
             0 to create, 0 to update, 3 unchanged, 0 observed, 0 to prune, 0 to orphan, 0 refused\n",
            digest = module_digest(&run.stdout),
        )
    );

    // A new input: a changed value, a changed secret, a node removed.
    let before = resource_versions(&cluster, ns).await;
    let v2 =
        json!({"prefix": "", "color": "green", "password": "bmV3LXNlY3JldA==", "extra": false});
    let changed = file(&dir, "changed.json", &transform(ns, "shop", v2));
    let run = diff(&cluster, &["-f", &changed]).await;
    assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
    let expected_settings = format!(
        "update     ConfigMap {ns}/settings (node settings)\n    --- live\n    +++ after apply\n"
    );
    assert!(run.stdout.contains(&expected_settings), "{}", run.stdout);
    assert!(
        run.stdout
            .contains("\n    -  color: blue\n    +  color: green\n"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains(&format!("update     Secret {ns}/creds (node creds)\n")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("\n    -  password: '*** (before)'\n    +  password: '*** (after)'\n"),
        "{}",
        run.stdout
    );
    assert!(
        !run.stdout.contains("czNjcjN0") && !run.stdout.contains("bmV3LXNlY3JldA"),
        "secret values are never shown: {}",
        run.stdout
    );
    assert!(
        run.stdout.ends_with(&format!(
            "prune      ConfigMap {ns}/extra (node extra, left the graph)\n\
             0 to create, 2 to update, 0 unchanged, 0 observed, 1 to prune, 0 to orphan, 0 refused\n"
        )),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains('\u{1b}'), "no colour in a pipe");
    // JSON for pipelines.
    let run = diff(&cluster, &["-f", &changed, "-o", "json"]).await;
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let report: Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(report["changed"], true);
    let actions: Vec<(&str, &str)> = report["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| {
            (
                n["id"].as_str().unwrap_or(""),
                n["action"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(actions, [("settings", "update"), ("creds", "update")]);
    assert_eq!(report["leaving"][0]["action"], "prune");
    assert_eq!(report["leaving"][0]["object"]["name"], "extra");
    assert_eq!(report["summary"], json!({"update": 2, "prune": 1}));
    // Nothing was written.
    assert_eq!(resource_versions(&cluster, ns).await, before);

    // The Transform in the cluster, with an input edited on the command line.
    let run = diff(&cluster, &["shop", "-n", ns, "--set", "color=red"]).await;
    assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("\n    -  color: blue\n    +  color: red\n"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains(&format!("unchanged  ConfigMap {ns}/extra (node extra)\n"))
    );

    // A new Transform: everything is created.
    let fresh =
        json!({"prefix": "fresh-", "color": "blue", "password": "czNjcjN0", "extra": false});
    let fresh = file(&dir, "fresh.json", &transform(ns, "fresh", fresh));
    let run = diff(&cluster, &["-f", &fresh]).await;
    assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains(&format!(
            "create     ConfigMap {ns}/fresh-settings (node settings)\n    --- live\n    +++ after apply\n"
        )),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("\n    +  color: blue\n"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("\n    +  password: '***'\n"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("2 to create, 0 to update, 0 unchanged"));

    // Another Transform rendering the same objects: the pass would refuse them.
    let taken = json!({"prefix": "", "color": "blue", "password": "czNjcjN0", "extra": false});
    let taken = file(&dir, "taken.json", &transform(ns, "intruder", taken));
    let run = diff(&cluster, &["-f", &taken]).await;
    assert_eq!(run.code, Some(7), "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains(&format!(
            "refused    ConfigMap {ns}/settings (node settings): OwnedByAnotherGraph: ConfigMap {ns}/settings is owned by ResourceGraph {ns}/shop"
        )),
        "{}",
        run.stdout
    );
    assert_eq!(
        run.stderr,
        "error: some objects could not be previewed: the pass would fail on them (see above)\n"
    );
    assert!(
        !cluster
            .exists(&["get", "configmap", "fresh-settings"])
            .await
    );

    // Bad input: no render, exit 7; no such Transform: exit 6.
    let run = diff(&cluster, &["shop", "--set", "color=5"]).await;
    assert_eq!(run.code, Some(7), "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.starts_with("error: render failed: "),
        "{}",
        run.stderr
    );
    assert_eq!(run.stdout, "");
    let run = diff(&cluster, &["nosuch"]).await;
    assert_eq!(run.code, Some(6));
    assert_eq!(
        run.stderr,
        format!("error: Transform {ns}/nosuch not found\n")
    );
    let run = diff(&cluster, &["shop", "--set", "color"]).await;
    assert_eq!(run.code, Some(3));
    assert_eq!(run.stderr, "error: --set color: expected PATH=VALUE\n");
    assert_eq!(resource_versions(&cluster, ns).await, before);
    cluster.stop().await;
}

/// The module digest the first line of a text report names.
fn module_digest(stdout: &str) -> String {
    stdout
        .split_once("0.1.0 (")
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(digest, _)| digest.to_string())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_reports_an_object_the_transforms_identity_may_not_write() {
    if skip_on_real_cluster("needs the test API server's RBAC lockdown (cluster-wide roles)") {
        return;
    }
    let cluster = Cluster::start_locked_down(&[]).await;
    cluster.extra_namespace("team-a").await;
    let rules = json!([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["*"]}]);
    cluster
        .ok(
            &["apply", "-f", "-"],
            Some(&role_for("team-a", "app", rules)),
        )
        .await;
    let mut tenant = transform(
        "team-a",
        "shop",
        json!({"prefix": "", "color": "blue", "password": "czNjcjN0", "extra": false}),
    );
    tenant["spec"]["serviceAccountName"] = "app".into();
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = file(&dir, "tenant.json", &tenant);
    let run = diff(&cluster, &["-f", &path]).await;
    assert_eq!(run.code, Some(7), "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .starts_with("Transform team-a/shop, module inline-test 0.1.0 (")
            && run
                .stdout
                .contains("), dry run as service account team-a/app\n"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("create     ConfigMap team-a/settings (node settings)\n"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(
            "refused    Secret team-a/creds (node creds): Forbidden: service account team-a/app may not get secrets in namespace team-a: secrets \"creds\" is forbidden: User \"system:serviceaccount:team-a:app\" cannot get resource \"secrets\" in API group \"\" in the namespace \"team-a\"\n"
        ),
        "{}",
        run.stdout
    );
    assert!(run.stdout.ends_with(
        "1 to create, 0 to update, 0 unchanged, 0 observed, 0 to prune, 0 to orphan, 1 refused\n"
    ));
    // The dry run stored nothing.
    assert!(
        !cluster
            .exists(&["-n", "team-a", "get", "configmap", "settings"])
            .await
    );
    cluster.stop().await;
}

/// Version 0.2.0 of the module of [`NODES`]: `color` must be blue or green; with `extra`,
/// the extra ConfigMap changes, an audit ConfigMap is added and the Secret goes.
const MODULE_V2: &str = r#"{
  metadata = { name = "inline-test", version = "0.2.0" },
  Input = {
    color | String | std.contract.from_predicate (fun c => c == "blue" || c == "green"),
    ..
  },
  render = fun input => {
    nodes = [
      { id = "settings", object = { apiVersion = "v1", kind = "ConfigMap",
          metadata.name = input.prefix ++ "settings", data.color = input.color } },
    ] @ (if input.extra then [
      { id = "extra", object = { apiVersion = "v1", kind = "ConfigMap",
          metadata.name = input.prefix ++ "extra", data.a = "c" } },
      { id = "audit", object = { apiVersion = "v1", kind = "ConfigMap",
          metadata.name = input.prefix ++ "audit", data.on = "yes" } },
    ] else [
      { id = "creds", object = { apiVersion = "v1", kind = "Secret",
          metadata.name = input.prefix ++ "creds", data.password = input.password } },
    ]),
  },
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_impact_sorts_transforms_into_unchanged_changed_and_failing() {
    let cluster = Cluster::start().await;
    let ns = cluster.namespace().to_string();
    let ns = ns.as_str();
    let other = cluster.extra_namespace("other").await;
    let input = |prefix: &str, color: &str, extra: bool| json!({"prefix": prefix, "color": color, "password": "czNjcjN0", "extra": extra});
    let transforms = [
        transform(ns, "a", input("a-", "blue", false)),
        transform(ns, "b", input("b-", "green", true)),
        transform(ns, "c", input("c-", "purple", false)),
        transform(&other, "d", input("d-", "blue", false)),
    ]
    .map(|t| t.to_string())
    .join("\n---\n");
    cluster.ok(&["apply", "-f", "-"], Some(&transforms)).await;
    for (namespace, name) in [(ns, "a"), (ns, "b"), (ns, "c"), (other.as_str(), "d")] {
        cluster
            .transform_when(namespace, name, "the Transform Ready", |t| {
                condition(t, "Ready").is_some_and(|c| c["status"] == "True")
            })
            .await;
    }
    let graphs_before = cluster.json(&["get", "resourcegraphs", "-A"]).await;
    let dir = tempfile::tempdir().expect("temporary directory");
    std::fs::write(dir.path().join("main.ncl"), MODULE_V2).expect("written");
    let module = dir.path().display().to_string();

    let output = cluster
        .pequod_output(&["module", "impact", &module, "-n", ns, "--details"])
        .await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    assert_eq!(
        stderr,
        "error: 1 of 3 Transforms would fail with inline-test 0.2.0\n"
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with("module inline-test 0.2.0 (sha256:")
            && lines[0].ends_with(") against 3 Transforms using it"),
        "{stdout}"
    );
    assert_eq!(lines[1], format!("unchanged  {ns}/a"));
    assert_eq!(
        lines[2],
        format!("changed    {ns}/b: nodes added: audit; removed: creds; modified: extra")
    );
    assert_eq!(lines[3], "  node extra:");
    assert!(
        stdout.contains("\n    -    a: b\n    +    a: c\n"),
        "{stdout}"
    );
    let fails = lines
        .iter()
        .find(|line| line.starts_with("fails"))
        .expect("a failing Transform");
    assert!(
        fails.starts_with(&format!(
            "fails      {ns}/c: contract violation at input.color"
        )),
        "{fails}"
    );
    assert_eq!(lines.last(), Some(&"1 unchanged, 1 changed, 1 fails"));

    // Every namespace, as JSON.
    let output = cluster
        .pequod_output(&["module", "impact", &module, "-o", "json"])
        .await;
    assert_eq!(output.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(report["module"]["version"], "0.2.0");
    assert_eq!(
        report["summary"],
        json!({"unchanged": 2, "changed": 1, "fails": 1})
    );
    let results: Vec<(String, String)> = report["transforms"]
        .as_array()
        .expect("transforms")
        .iter()
        .map(|t| {
            (
                format!(
                    "{}/{}",
                    t["namespace"].as_str().unwrap_or(""),
                    t["name"].as_str().unwrap_or("")
                ),
                t["result"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let mut expected = vec![
        (format!("{ns}/a"), "unchanged".to_string()),
        (format!("{ns}/b"), "changed".to_string()),
        (format!("{ns}/c"), "fails".to_string()),
        (format!("{other}/d"), "unchanged".to_string()),
    ];
    expected.sort();
    assert_eq!(results, expected);
    assert_eq!(report["transforms"][1]["added"], json!(["audit"]));

    // Nothing was written.
    assert_eq!(
        cluster.json(&["get", "resourcegraphs", "-A"]).await,
        graphs_before
    );
    cluster.stop().await;
}
