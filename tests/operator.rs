//! End to end: the real `pequod run` binary against the test API server (`e2e/`), driven
//! with the installed `kubectl` as a user would.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use pequod_e2e::store::EventType;
use pequod_e2e::{Config, TestApiServer};
use serde_json::Value;

/// The upstream CRDs (CloudNativePG and friends) beside the repository.
fn shared_crds() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/crds")
}

/// A test API server with Pequod's CRDs (and CloudNativePG's), and the operator running
/// against it.
struct Cluster {
    server: TestApiServer,
    operator: tokio::process::Child,
    metrics: String,
    _dir: tempfile::TempDir,
    kubectl_cache: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Cluster {
    async fn start() -> Cluster {
        let dir = tempfile::tempdir().expect("temporary directory");
        let crds = dir.path().join("pequod-crds.yaml");
        let printed = std::process::Command::new(env!("CARGO_BIN_EXE_pequod"))
            .arg("crds")
            .output()
            .expect("pequod crds runs");
        std::fs::write(&crds, &printed.stdout).expect("CRDs written");
        let server = TestApiServer::start(Config {
            crds: vec![crds, shared_crds()],
            readiness_delay: Duration::from_millis(300),
            ..Config::default()
        })
        .await
        .expect("test API server starts");
        let port = free_port();
        let metrics = format!("127.0.0.1:{port}");
        let operator = tokio::process::Command::new(env!("CARGO_BIN_EXE_pequod"))
            .args(["run", "--metrics-addr", &metrics, "--health-addr", &metrics])
            .env("KUBECONFIG", server.kubeconfig())
            .env("RUST_LOG", "pequod=debug,warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("pequod run starts");
        let cluster = Cluster {
            server,
            operator,
            metrics,
            _dir: dir,
            kubectl_cache: tempfile::tempdir().expect("temporary directory"),
        };
        eventually(60, "the operator's /readyz", || async {
            http_get(&cluster.metrics, "/readyz")
                .await
                .filter(|body| body == "ok")
        })
        .await;
        cluster
    }

    /// Runs kubectl; returns (success, stdout, stderr).
    async fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
        use tokio::io::AsyncWriteExt;
        let mut child = tokio::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(self.server.kubeconfig())
            .arg("--cache-dir")
            .arg(self.kubectl_cache.path())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("kubectl is installed");
        if let Some(mut input) = child.stdin.take()
            && let Some(text) = stdin
        {
            input
                .write_all(text.as_bytes())
                .await
                .expect("kubectl stdin");
        }
        let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .expect("kubectl finishes within a minute")
            .expect("kubectl ran");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    async fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let (success, stdout, stderr) = self.kubectl(args, stdin).await;
        assert!(success, "kubectl {args:?} failed:\n{stdout}\n{stderr}");
        stdout
    }

    async fn json(&self, args: &[&str]) -> Option<Value> {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let (success, stdout, _) = self.kubectl(&all, None).await;
        if !success {
            return None;
        }
        serde_json::from_str(&stdout).ok()
    }

    async fn stop(mut self) {
        let _ = self.operator.kill().await;
        self.server.stop().await;
    }
}

/// A plain HTTP GET on loopback; the body of a 2xx answer.
async fn http_get(addr: &str, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.ok()?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 2").then(|| body.to_string())
}

/// Polls `check` every 100 ms until it returns Some, for at most `seconds`.
async fn eventually<T, F, Fut>(seconds: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn condition<'a>(object: &'a Value, type_: &str) -> Option<&'a Value> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
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
    let cluster = Cluster::start().await;
    let mut changes = cluster.server.store().events();
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
    assert_eq!(lines[0], ["NAME", "MODULE", "READY", "AGE"], "{table}");
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
    cluster.stop().await;
}
