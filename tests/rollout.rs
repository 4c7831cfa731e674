//! End to end: staged rollouts of a module version moved under a tag in a real registry
//! (Debian's docker-registry), with the operator and the test API server.

use std::collections::HashMap;
use std::time::Duration;

#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/net.rs"]
mod net;
#[path = "common/registry.rs"]
mod registry;

use cluster::{Cluster, Timeline, condition, http_get, skip_on_real_cluster};
use pequod_e2e::testing::eventually;
use serde_json::Value;

const TRANSFORMS: usize = 40;
/// 25% of 40, the default `--rollout-max-unavailable`.
const WAVE: usize = 10;

/// The source of a module rendering one Deployment whose pod template carries `release`;
/// with `strict`, its Input wants a `size` no Transform gives (every render fails).
fn source(release: &str, strict: bool) -> String {
    let size = if strict { "size | Number," } else { "" };
    format!(
        r#"{{
  metadata = {{ name = "staged", version = "1.0.{release}" }},
  Input = {{ name | String, {size} .. }},
  render = fun input => {{
    nodes = [
      {{ id = "app", object = {{ apiVersion = "apps/v1", kind = "Deployment", metadata.name = input.name,
          spec = {{ selector.matchLabels.app = input.name,
                   template = {{ metadata = {{ labels.app = input.name, annotations.release = "{release}" }},
                                spec.containers = [{{ name = "app", image = "nginx:1.27" }}] }} }} }} }},
    ],
  }},
}}
"#
    )
}

/// [`source`] as a module directory in `dir`.
fn module(dir: &std::path::Path, release: &str, strict: bool) -> String {
    let path = dir.join(format!("release-{release}"));
    std::fs::create_dir_all(&path).expect("module directory");
    std::fs::write(path.join("main.ncl"), source(release, strict)).expect("main.ncl");
    path.display().to_string()
}

fn ready(transform: &Value) -> bool {
    transform["status"]["observedGeneration"] == transform["metadata"]["generation"]
        && condition(transform, "Ready").is_some_and(|c| c["status"] == "True")
}

fn digest(transform: &Value) -> &str {
    transform["status"]["resolvedModule"]["digest"]
        .as_str()
        .unwrap_or("")
}

async fn transforms(cluster: &Cluster) -> Vec<Value> {
    cluster
        .json(&["get", "transforms"])
        .await
        .and_then(|list| list["items"].as_array().cloned())
        .unwrap_or_default()
}

/// The most Transforms that were on `new` and not Ready at one time, from every change
/// the API server made to them.
fn most_unavailable(timeline: &Timeline, new: &str) -> usize {
    let mut on: HashMap<String, bool> = HashMap::new();
    let mut most = 0;
    for change in timeline.changes() {
        if change.gr.resource != "transforms" {
            continue;
        }
        let name = change.object["metadata"]["name"].to_string();
        let unavailable = digest(&change.object) == new && !ready(&change.object);
        on.insert(name, unavailable);
        most = most.max(on.values().filter(|u| **u).count());
    }
    most
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_digest_rolls_out_in_waves_and_a_bad_one_halts() {
    if skip_on_real_cluster("needs the readiness simulator and the server's change log") {
        return;
    }
    let registry = tokio::task::spawn_blocking(registry::TestRegistry::start)
        .await
        .expect("registry starts");
    let dir = tempfile::tempdir().expect("temporary directory");
    let reference = format!("{}/platform/staged:stable", registry.host);
    let publish = |release: &str, strict: bool| {
        registry.publish(&module(dir.path(), release, strict), &reference, &[])
    };
    let first = publish("1", false);
    let mut cluster = Cluster::start_with_flags(
        Duration::from_millis(500),
        &[
            "--insecure-registry",
            &registry.host,
            "--module-resync",
            "1s",
        ],
    )
    .await;
    let all: Vec<String> = (0..TRANSFORMS)
        .map(|i| {
            serde_json::json!({
                "apiVersion": "platform.pequod.io/v1alpha1", "kind": "Transform",
                "metadata": {"name": format!("app-{i}")},
                "spec": {"moduleRef": {"type": "oci", "ref": reference},
                         "input": {"name": format!("app-{i}")}}
            })
            .to_string()
        })
        .collect();
    cluster
        .ok(&["apply", "-f", "-"], Some(&all.join("\n")))
        .await;
    eventually(120, "every Transform Ready on the first digest", || async {
        let all = transforms(&cluster).await;
        (all.len() == TRANSFORMS && all.iter().all(|t| ready(t) && digest(t) == first))
            .then_some(())
    })
    .await;

    // A good digest: every Transform moves, a wave at a time, through a restart.
    let timeline = Timeline::record(cluster.server());
    let second = publish("2", false);
    assert_ne!(second, first);
    eventually(60, "the first wave on the new digest", || async {
        let all = transforms(&cluster).await;
        (all.iter().filter(|t| digest(t) == second).count() >= WAVE / 2).then_some(())
    })
    .await;
    cluster.restart_operator().await;
    eventually(180, "every Transform Ready on the new digest", || async {
        let all = transforms(&cluster).await;
        all.iter()
            .all(|t| ready(t) && digest(t) == second && t["status"]["pendingModule"].is_null())
            .then_some(())
    })
    .await;
    let most = most_unavailable(&timeline, &second);
    assert!(
        (1..=WAVE).contains(&most),
        "at most {WAVE} Transforms unavailable on the new digest at once, saw {most}"
    );
    let waited = timeline.changes().iter().any(|change| {
        change.gr.resource == "transforms"
            && change.object["status"]["pendingModule"]["reason"] == "RolloutWaiting"
    });
    assert!(waited, "some Transforms waited for the wave before");

    // A bad digest: the first wave fails, the rollout halts, the rest stay on the good one.
    let bad = publish("3", true);
    let halted = eventually(120, "the rollout halted", || async {
        let all = transforms(&cluster).await;
        let failed = all
            .iter()
            .filter(|t| {
                digest(t) == bad && condition(t, "Rendered").is_some_and(|c| c["status"] == "False")
            })
            .count();
        let held = all
            .iter()
            .filter(|t| {
                digest(t) == second
                    && ready(t)
                    && t["status"]["pendingModule"]["reason"] == "RolloutHalted"
                    && t["status"]["pendingModule"]["digest"] == bad.as_str()
            })
            .count();
        (failed >= 1 && failed + held == TRANSFORMS).then_some((failed, all))
    })
    .await;
    let (failed, all) = halted;
    assert!(failed <= WAVE, "only the first wave moved: {failed}");
    let held = all
        .iter()
        .find(|t| t["status"]["pendingModule"]["reason"] == "RolloutHalted")
        .expect("a held Transform");
    let message = held["status"]["pendingModule"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.starts_with(&format!("the rollout of {bad} is halted: ")),
        "{message}"
    );
    assert!(
        message.contains("missing definition for `size`"),
        "{message}"
    );
    // A held Transform whose input changes renders it with the digest it is on.
    let name = held["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    cluster
        .ok(
            &[
                "patch",
                "transform",
                &name,
                "--type",
                "merge",
                "-p",
                r#"{"spec":{"input":{"note":"edited while held"}}}"#,
            ],
            None,
        )
        .await;
    cluster
        .transform_when(
            cluster.namespace(),
            &name,
            "the edit rendered on the digest it is on",
            |t| {
                t["status"]["observedGeneration"] == 2
                    && ready(t)
                    && digest(t) == second
                    && t["status"]["pendingModule"]["reason"] == "RolloutHalted"
            },
        )
        .await;
    let graph = cluster
        .json(&["get", "resourcegraph", &name])
        .await
        .expect("its graph");
    assert_eq!(graph["spec"]["metadata"]["moduleDigest"], second.as_str());
    assert_eq!(graph["spec"]["metadata"]["version"], "1.0.2");

    let metrics = http_get(&cluster.metrics, "/metrics")
        .await
        .expect("metrics");
    let halted_line = format!("pequod_module_rollouts{{module=\"{reference}\",state=\"halted\"}} ");
    let halted_count: usize = metrics
        .lines()
        .find_map(|line| line.strip_prefix(&halted_line))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(halted_count > 0, "{metrics}");
    let events = cluster
        .json(&["get", "events.events.k8s.io"])
        .await
        .unwrap_or(Value::Null);
    assert!(
        events["items"].as_array().is_some_and(|items| items
            .iter()
            .any(|e| e["reason"] == "RolloutHalted" && e["type"] == "Warning")),
        "a RolloutHalted Warning"
    );

    // A fix moved under the tag starts a new rollout: everyone gets there.
    let fixed = publish("4", false);
    eventually(180, "every Transform Ready on the fix", || async {
        let all = transforms(&cluster).await;
        all.iter()
            .all(|t| ready(t) && digest(t) == fixed && t["status"]["pendingModule"].is_null())
            .then_some(())
    })
    .await;
    cluster.stop().await;
}

/// [`source`] in the ConfigMap `staged-module`.
fn config_map(release: &str, strict: bool) -> String {
    serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "staged-module"},
        "data": {"main.ncl": source(release, strict)},
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_config_map_rolls_out_and_a_held_transform_keeps_its_version() {
    if skip_on_real_cluster("needs the readiness simulator") {
        return;
    }
    let cluster = Cluster::start_with_flags(
        Duration::from_millis(300),
        &["--rollout-max-unavailable", "1"],
    )
    .await;
    let ns = cluster.namespace().to_string();
    cluster
        .ok(&["apply", "-f", "-"], Some(&config_map("1", false)))
        .await;
    let all: Vec<String> = (0..4)
        .map(|i| {
            serde_json::json!({
                "apiVersion": "platform.pequod.io/v1alpha1", "kind": "Transform",
                "metadata": {"name": format!("cm-{i}")},
                "spec": {"moduleRef": {"type": "configmap", "ref": "staged-module"},
                         "input": {"name": format!("cm-{i}")}}
            })
            .to_string()
        })
        .collect();
    cluster
        .ok(&["apply", "-f", "-"], Some(&all.join("\n")))
        .await;
    let first = eventually(60, "every Transform Ready", || async {
        let all = transforms(&cluster).await;
        (all.len() == 4 && all.iter().all(ready)).then(|| digest(&all[0]).to_string())
    })
    .await;

    // A bad edit: one Transform moves and fails, the three others are held on the first.
    cluster
        .ok(&["apply", "-f", "-"], Some(&config_map("2", true)))
        .await;
    let held = eventually(60, "the rollout halted", || async {
        let all = transforms(&cluster).await;
        let failed = all
            .iter()
            .filter(|t| condition(t, "Rendered").is_some_and(|c| c["status"] == "False"))
            .count();
        let held: Vec<String> = all
            .iter()
            .filter(|t| {
                digest(t) == first
                    && ready(t)
                    && t["status"]["pendingModule"]["reason"] == "RolloutHalted"
            })
            .map(|t| t["metadata"]["name"].as_str().unwrap_or("").to_string())
            .collect();
        (failed == 1 && held.len() == 3).then_some(held)
    })
    .await;
    // A held Transform's new input renders with the version it is on, kept by the cache.
    cluster
        .ok(
            &[
                "patch",
                "transform",
                &held[0],
                "--type",
                "merge",
                "-p",
                r#"{"spec":{"input":{"note":"edited while held"}}}"#,
            ],
            None,
        )
        .await;
    cluster
        .transform_when(
            &ns,
            &held[0],
            "the edit rendered on the first version",
            |t| t["status"]["observedGeneration"] == 2 && ready(t) && digest(t) == first,
        )
        .await;
    let graph = cluster
        .json(&["get", "resourcegraph", &held[0]])
        .await
        .expect("its graph");
    assert_eq!(graph["spec"]["metadata"]["version"], "1.0.1");

    // A fix: everyone moves.
    cluster
        .ok(&["apply", "-f", "-"], Some(&config_map("3", false)))
        .await;
    eventually(60, "every Transform Ready on the fix", || async {
        let all = transforms(&cluster).await;
        all.iter()
            .all(|t| {
                ready(t)
                    && t["status"]["pendingModule"].is_null()
                    && t["status"]["resolvedModule"]["digest"] != first.as_str()
            })
            .then_some(())
    })
    .await;
    let graph = cluster
        .json(&["get", "resourcegraph", &held[0]])
        .await
        .expect("its graph");
    assert_eq!(graph["spec"]["metadata"]["version"], "1.0.3");
    cluster.stop().await;
}
