//! The operator end to end, shared by the suites that run it: a test API server with
//! Pequod's CRDs, the real `pequod run` against it, kubectl as a user, and helpers to wait
//! for and read what the operator writes.

#![allow(dead_code)] // each suite uses part of this module

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use pequod_e2e::store::{Event, EventType};
use pequod_e2e::testing::{Kubectl, eventually};
use pequod_e2e::{Config, TestApiServer, User};
use serde_json::Value;

use crate::net;

/// The upstream CRDs (CloudNativePG and friends) beside the repository.
pub fn shared_crds() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/crds")
}

/// A test API server with Pequod's CRDs (and CloudNativePG's), and the operator running
/// against it.
pub struct Cluster {
    pub server: TestApiServer,
    pub operator: tokio::process::Child,
    /// The operator's credentials.
    pub operator_kubeconfig: PathBuf,
    /// The operator's flags (kept for restarts).
    pub flags: Vec<String>,
    pub metrics: String,
    pub _dir: tempfile::TempDir,
    pub kubectl: Kubectl,
}

impl Cluster {
    pub async fn start() -> Cluster {
        Cluster::start_with(Duration::from_millis(300)).await
    }

    /// A cluster whose simulated workloads become ready after `readiness_delay`.
    pub async fn start_with(readiness_delay: Duration) -> Cluster {
        Cluster::start_with_flags(readiness_delay, &[]).await
    }

    /// A cluster whose operator runs with extra flags.
    pub async fn start_with_flags(readiness_delay: Duration, flags: &[&str]) -> Cluster {
        Cluster::launch(readiness_delay, flags, false).await
    }

    /// The multi-tenant setup of `deploy/overlays/multi-tenant`: the server enforces RBAC,
    /// the overlay's roles are installed, and the operator runs as its service account
    /// `pequod-system/pequod` (nothing but reading, its own API and impersonation) with
    /// `--default-service-account default` and `flags`.
    pub async fn start_locked_down(flags: &[&str]) -> Cluster {
        Cluster::launch(Duration::from_millis(300), flags, true).await
    }

    async fn launch(readiness_delay: Duration, flags: &[&str], locked_down: bool) -> Cluster {
        let dir = tempfile::tempdir().expect("temporary directory");
        let crds = dir.path().join("pequod-crds.yaml");
        let printed = std::process::Command::new(env!("CARGO_BIN_EXE_pequod"))
            .arg("crds")
            .output()
            .expect("pequod crds runs");
        std::fs::write(&crds, &printed.stdout).expect("CRDs written");
        let server = TestApiServer::start(Config {
            crds: vec![crds, shared_crds()],
            readiness_delay,
            authorize: locked_down,
            ..Config::default()
        })
        .await
        .expect("test API server starts");
        let kubectl = Kubectl::new(&server);
        let metrics = format!("127.0.0.1:{}", net::free_port());
        // Module caches on disk live with the test, not in $HOME.
        let mut flags: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
        if !flags.iter().any(|f| f == "--cache-dir") {
            flags.push("--cache-dir".into());
            flags.push(dir.path().join("cache").display().to_string());
        }
        let operator_kubeconfig = if locked_down {
            kubectl
                .ok(&["apply", "-f", "-"], Some(&overlay_rbac()))
                .await;
            flags.extend([
                "--default-service-account".to_string(),
                "default".to_string(),
            ]);
            server
                .kubeconfig_for(&User::service_account("pequod-system", "pequod"))
                .expect("the operator's kubeconfig")
        } else {
            server.kubeconfig().to_path_buf()
        };
        let operator = spawn_operator(&operator_kubeconfig, &metrics, &flags);
        let cluster = Cluster {
            server,
            operator,
            operator_kubeconfig,
            flags,
            metrics,
            _dir: dir,
            kubectl,
        };
        cluster.wait_ready().await;
        cluster
    }

    pub async fn wait_ready(&self) {
        eventually(60, "the operator's /readyz", || async {
            http_get(&self.metrics, "/readyz")
                .await
                .filter(|body| body.starts_with("ok"))
        })
        .await;
    }

    /// Stops the operator and starts a new one (same flags).
    pub async fn restart_operator(&mut self) {
        let _ = self.operator.kill().await;
        let _ = self.operator.wait().await;
        self.operator = spawn_operator(&self.operator_kubeconfig, &self.metrics, &self.flags);
        self.wait_ready().await;
    }

    /// The named Transform, once `check` accepts it.
    pub async fn transform_when(
        &self,
        namespace: &str,
        name: &str,
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        self.object_when("transform", namespace, name, what, check)
            .await
    }

    /// The named ResourceGraph, once `check` accepts it.
    pub async fn graph_when(
        &self,
        namespace: &str,
        name: &str,
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        self.object_when("resourcegraph", namespace, name, what, check)
            .await
    }

    /// The named object of `kind`, once `check` accepts it (within a minute).
    pub async fn object_when(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        eventually(60, what, || async {
            let object = self.json(&["-n", namespace, "get", kind, name]).await?;
            check(&object).then_some(object)
        })
        .await
    }

    /// Runs kubectl and insists that it succeeds; returns stdout.
    pub async fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        self.kubectl.ok(args, stdin).await
    }

    /// Whether kubectl finds the object `args` name (`get KIND NAME`).
    pub async fn exists(&self, args: &[&str]) -> bool {
        self.kubectl.run(args, None).await.success
    }

    /// Runs a `pequod` command against this cluster; returns stdout.
    pub async fn pequod(&self, args: &[&str]) -> String {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_pequod"))
            .args(args)
            .env("KUBECONFIG", self.server.kubeconfig())
            .output()
            .await
            .expect("pequod runs");
        assert!(
            output.status.success(),
            "pequod {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `metadata.resourceVersion` of an object in `default`.
    pub async fn resource_version(&self, kind: &str, name: &str) -> String {
        self.ok(
            &[
                "get",
                kind,
                name,
                "-o",
                "jsonpath={.metadata.resourceVersion}",
            ],
            None,
        )
        .await
    }

    pub async fn json(&self, args: &[&str]) -> Option<Value> {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let run = self.kubectl.run(&all, None).await;
        if !run.success {
            return None;
        }
        serde_json::from_str(&run.stdout).ok()
    }

    pub async fn stop(mut self) {
        let _ = self.operator.kill().await;
        self.server.stop().await;
    }

    /// Stops the operator with SIGTERM, as Kubernetes does, and insists on a clean exit.
    pub async fn terminate(mut self) {
        let pid = self.operator.id().expect("the operator runs").to_string();
        let sent = tokio::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .expect("kill runs");
        assert!(sent.success());
        let status = tokio::time::timeout(Duration::from_secs(30), self.operator.wait())
            .await
            .expect("the operator stops within 30 s of SIGTERM")
            .expect("waited");
        assert!(status.success(), "a clean exit: {status}");
        self.server.stop().await;
    }
}

/// The namespace, service account and roles of `deploy/overlays/multi-tenant`, as built
/// by `kubectl kustomize` (its Deployment and CRDs left out: the test runs the operator).
fn overlay_rbac() -> String {
    let overlay = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/overlays/multi-tenant");
    let built = std::process::Command::new("kubectl")
        .args(["kustomize", &overlay.display().to_string()])
        .output()
        .expect("kubectl kustomize runs");
    assert!(built.status.success(), "kubectl kustomize the overlay");
    String::from_utf8_lossy(&built.stdout)
        .split("\n---\n")
        .filter(|document| {
            [
                "Namespace",
                "ServiceAccount",
                "ClusterRole",
                "ClusterRoleBinding",
            ]
            .iter()
            .any(|kind| document.contains(&format!("\nkind: {kind}\n")))
        })
        .collect::<Vec<_>>()
        .join("\n---\n")
}

/// Starts `pequod run` with the credentials of `kubeconfig`.
pub fn spawn_operator(
    kubeconfig: &Path,
    metrics: &str,
    extra: &[impl AsRef<std::ffi::OsStr>],
) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_pequod"))
        .args(["run", "--metrics-addr", metrics, "--health-addr", metrics])
        .args(extra)
        .env("KUBECONFIG", kubeconfig)
        // PEQUOD_E2E_LOG=pequod=debug shows what the operator does.
        .env(
            "RUST_LOG",
            std::env::var("PEQUOD_E2E_LOG").unwrap_or_else(|_| "warn".to_string()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("pequod run starts")
}

/// A Transform of the `shapes` test module (inline) with these nodes.
pub fn shapes(name: &str, nodes: Value) -> String {
    let source = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/modules/shapes/main.ncl"),
    )
    .expect("shapes module");
    serde_json::json!({
        "apiVersion": "platform.pequod.io/v1alpha1",
        "kind": "Transform",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"moduleRef": {"type": "inline", "ref": source}, "input": {"nodes": nodes}},
    })
    .to_string()
}

/// Every change the test API server makes from a moment on, in the order it made them:
/// evidence of what happened before what, without clocks.
#[derive(Clone, Default)]
pub struct Timeline(std::sync::Arc<std::sync::Mutex<Vec<std::sync::Arc<Event>>>>);

impl Timeline {
    /// Records every change of `server` from now on.
    pub fn record(server: &TestApiServer) -> Timeline {
        let timeline = Timeline::default();
        let mut changes = server.store().events();
        let sink = timeline.clone();
        tokio::spawn(async move {
            while let Ok(change) = changes.recv().await {
                if let Ok(mut log) = sink.0.lock() {
                    log.push(change);
                }
            }
        });
        timeline
    }

    /// The changes so far, in order.
    pub fn changes(&self) -> Vec<std::sync::Arc<Event>> {
        self.0.lock().map(|log| log.clone()).unwrap_or_default()
    }

    /// Where in the order `resource` `name` first had a change of type `kind`.
    pub fn first(&self, kind: EventType, resource: &str, name: &str) -> Option<usize> {
        self.changes()
            .iter()
            .position(|c| c.kind == kind && is_change_of(c, resource, name))
    }
}

/// Whether `change` is of `resource` `name`.
pub fn is_change_of(change: &Event, resource: &str, name: &str) -> bool {
    change.gr.resource == resource && change.object["metadata"]["name"] == name
}

pub fn node<'a>(graph: &'a Value, id: &str) -> &'a Value {
    &graph["status"]["nodes"][id]
}

/// A plain HTTP GET on loopback; the body of a 2xx answer.
pub async fn http_get(addr: &str, path: &str) -> Option<String> {
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

pub fn condition<'a>(object: &'a Value, type_: &str) -> Option<&'a Value> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// A Transform in `default` of an inline module rendering `nodes` (Nickel source).
pub fn inline(name: &str, nodes: &str) -> String {
    inline_in("default", name, nodes)
}

/// A Transform `namespace/name` of an inline module rendering `nodes` (Nickel source).
pub fn inline_in(namespace: &str, name: &str, nodes: &str) -> String {
    let source = format!(
        r#"let ready = import "pequod/ready.ncl" in
{{
  metadata = {{ name = "inline-test", version = "0.1.0" }},
  Input = {{ .. }},
  render = fun input => {{ nodes = {nodes} }},
}}"#
    );
    serde_json::json!({
        "apiVersion": "platform.pequod.io/v1alpha1",
        "kind": "Transform",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"moduleRef": {"type": "inline", "ref": source}, "input": {}},
    })
    .to_string()
}
