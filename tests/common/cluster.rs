//! The operator end to end, shared by the suites that run it: a cluster with Pequod's CRDs,
//! the real `pequod run` against it, kubectl as a user, and helpers to wait for and read
//! what the operator writes.
//!
//! The cluster has two backends, chosen here and nowhere else:
//! - the in-process test API server (`pequod_e2e::TestApiServer`, with its readiness
//!   simulator), by default;
//! - with `PEQUOD_E2E_CLUSTER=1`, the cluster `KUBECONFIG` names. Pequod's CRDs are
//!   installed (server-side apply, once per suite), each test gets a namespace of its own,
//!   `pequod-e2e-<test hash>-<random>`, which its operator is restricted to
//!   (`--namespace`), and everything the test made there is deleted when it ends, passed or
//!   failed.
//!
//! Either way kubectl, `pequod` and the operator default to the test's namespace
//! ([`Cluster::namespace`]: `default`, or what [`Cluster::start_in`] names, on the test
//! server). What only the test server has (faults, the simulator, its change log, request
//! accounting, tokens) is [`Cluster::server`]; a test that needs it starts with
//! [`skip_on_real_cluster`].

#![allow(dead_code)] // each suite uses part of this module

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use pequod_e2e::store::{Event, EventType};
pub use pequod_e2e::testing::http_get;
use pequod_e2e::testing::{Kubectl, eventually};
use pequod_e2e::{Config, TestApiServer, User};
use serde_json::Value;

use crate::net;

/// The upstream CRDs (CloudNativePG and friends) beside the repository. The test server
/// loads them all; on a real cluster none is installed: the only tests that use them need
/// the readiness simulator (a CloudNativePG Cluster is ready only where its operator runs)
/// and are skipped there.
pub fn shared_crds() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/crds")
}

/// Whether the suites run against the cluster `KUBECONFIG` names (`PEQUOD_E2E_CLUSTER=1`)
/// rather than the test API server.
pub fn on_real_cluster() -> bool {
    std::env::var("PEQUOD_E2E_CLUSTER").is_ok_and(|value| value == "1")
}

/// The first line of a test that needs the test API server (faults, the simulator, its
/// change log, request accounting, tokens): on a real cluster it prints
/// `skipped: <test>: <reason>` and returns true, and the test returns (passing).
pub fn skip_on_real_cluster(reason: &str) -> bool {
    let real = on_real_cluster();
    if real {
        report(&format!("skipped: {}: {reason}", test_name()));
    }
    real
}

/// A line on the test process's stderr, past the test harness's capture: a passing test's
/// skip shows without `--nocapture`.
fn report(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// The running test's name (the test harness names each test's thread after it).
fn test_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("unnamed-test")
        .to_string()
}

/// Where a [`Cluster`] runs.
enum Backend {
    /// The in-process test API server.
    TestServer(TestApiServer),
    /// The cluster `KUBECONFIG` names; what the test made there, deleted when it ends.
    Real(Cleanup),
}

impl Backend {
    /// A name unique to the test for a namespace or another cluster-scoped object: `base`
    /// itself on the test server (one per test), prefixed with the test's namespace on a
    /// real cluster (shared by every test, and by whoever else uses it).
    fn unique(&self, namespace: &str, base: &str) -> String {
        match self {
            Backend::TestServer(_) => base.to_string(),
            Backend::Real(_) => format!("{namespace}-{base}"),
        }
    }

    /// Creates namespace `name`: with kubectl's own generator, unless it exists, on the test
    /// server; on a real cluster labelled `app.kubernetes.io/created-by=pequod-e2e` (what
    /// to delete after an interrupted run) and annotated with the test's name, and deleted
    /// when the test ends.
    async fn create_namespace(&self, kubectl: &Kubectl, name: &str) {
        match self {
            Backend::TestServer(_) => {
                if !kubectl.run(&["get", "namespace", name], None).await.success {
                    kubectl.ok(&["create", "namespace", name], None).await;
                }
            }
            Backend::Real(cleanup) => {
                cleanup.delete(&format!("namespace/{name}"));
                let namespace = serde_json::json!({
                    "apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": name, "labels": {"app.kubernetes.io/created-by": "pequod-e2e"},
                                 "annotations": {"pequod.io/e2e-test": test_name()}},
                });
                kubectl
                    .ok(&["create", "-f", "-"], Some(&namespace.to_string()))
                    .await;
            }
        }
    }
}

/// What a test made on a real cluster (its namespaces, cluster-scoped objects), deleted
/// when the [`Cluster`] is dropped, after its operator: when the test ends, passed or
/// failed.
struct Cleanup {
    kubeconfig: PathBuf,
    cache: PathBuf,
    /// `kind/name` of each object to delete.
    objects: Mutex<Vec<String>>,
}

impl Cleanup {
    fn delete(&self, object: &str) {
        if let Ok(mut objects) = self.objects.lock() {
            objects.push(object.to_string());
        }
    }

    /// kubectl in the cleanup: its stdout; what went wrong is reported, not raised (a panic
    /// in a Drop during a failed test's unwinding would abort).
    fn kubectl(&self, args: &[&str]) -> String {
        let cache = self.cache.display().to_string();
        kubectl_sync(
            Some(&self.kubeconfig),
            &[&["--cache-dir", &cache], args].concat(),
        )
        .unwrap_or_else(|error| {
            report(&format!("cleanup: {error}"));
            String::new()
        })
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let objects = self
            .objects
            .lock()
            .map(|objects| objects.clone())
            .unwrap_or_default();
        if objects.is_empty() {
            return;
        }
        // The operator is gone: the finalizers it would have removed from its graphs go
        // first, or their namespaces would never finish terminating.
        for namespace in objects.iter().filter_map(|o| o.strip_prefix("namespace/")) {
            let listed = self.kubectl(&["-n", namespace, "get", "resourcegraphs", "-o", "name"]);
            let graphs: Vec<&str> = listed.lines().collect();
            if !graphs.is_empty() {
                let mut patch = vec!["-n", namespace, "patch", "--type", "merge"];
                patch.extend(["-p", r#"{"metadata":{"finalizers":null}}"#]);
                patch.extend(graphs);
                self.kubectl(&patch);
            }
        }
        let mut delete = vec!["delete", "--wait=false", "--ignore-not-found"];
        delete.extend(objects.iter().map(String::as_str));
        self.kubectl(&delete);
    }
}

/// Pequod's CRDs, installed once per suite on a real cluster (idempotently, taking over
/// fields another manager set: the cluster gets this build's CRDs), then waited for.
async fn install_crds(kubectl: &Kubectl, crds: &str) {
    static INSTALLED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    INSTALLED
        .get_or_init(|| async {
            let applied = kubectl
                .ok(
                    &[
                        "apply",
                        "--server-side",
                        "--force-conflicts",
                        "--field-manager",
                        "pequod-e2e",
                        "-o",
                        "name",
                        "-f",
                        "-",
                    ],
                    Some(crds),
                )
                .await;
            let mut wait = vec!["wait", "--for=condition=Established", "--timeout=60s"];
            wait.extend(applied.lines());
            kubectl.ok(&wait, None).await;
        })
        .await;
}

/// A namespace for the running test on a real cluster: `pequod-e2e-<hash of the test's
/// name>-<random>`.
fn unique_namespace() -> String {
    use std::hash::{BuildHasher, Hash, Hasher};
    let mut test = std::hash::DefaultHasher::new();
    test_name().hash(&mut test);
    let random = std::collections::hash_map::RandomState::new().hash_one(std::process::id());
    format!(
        "pequod-e2e-{:08x}-{:06x}",
        test.finish() & 0xffff_ffff,
        random & 0xff_ffff
    )
}

/// Writes `to`: the current context of `from` (of `KUBECONFIG` when None), self-contained,
/// with `namespace` as its default namespace.
fn write_kubeconfig(from: Option<&Path>, to: &Path, namespace: &str) {
    let view = kubectl_sync(from, &["config", "view", "--minify", "--flatten", "--raw"])
        .unwrap_or_else(|error| panic!("{error}"));
    std::fs::write(to, view).expect("kubeconfig written");
    let namespace = format!("--namespace={namespace}");
    kubectl_sync(
        Some(to),
        &["config", "set-context", "--current", &namespace],
    )
    .unwrap_or_else(|error| panic!("{error}"));
}

/// Runs kubectl (with `kubeconfig`, else as `KUBECONFIG` says) to the end, synchronously:
/// for the kubeconfig before any runtime work, and for the cleanup in `Drop`, which cannot
/// wait for a future. Its stdout, or what went wrong.
fn kubectl_sync(kubeconfig: Option<&Path>, args: &[&str]) -> Result<String, String> {
    let mut command = std::process::Command::new("kubectl");
    if let Some(kubeconfig) = kubeconfig {
        command.arg("--kubeconfig").arg(kubeconfig);
    }
    let output = command
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|error| format!("kubectl {args:?}: {error}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// A cluster with Pequod's CRDs, and the operator running against it: the test API server
/// (with CloudNativePG's CRDs too), or with `PEQUOD_E2E_CLUSTER=1` the cluster
/// `KUBECONFIG` names.
pub struct Cluster {
    /// The operator (the first field: dropped, so killed, before the cleanup runs).
    pub operator: tokio::process::Child,
    backend: Backend,
    /// The test's namespace.
    namespace: String,
    /// The user's kubeconfig: the admin's, defaulting to the test's namespace.
    pub kubeconfig: PathBuf,
    /// The operator's credentials.
    pub operator_kubeconfig: PathBuf,
    /// The operator's flags (kept for restarts).
    pub flags: Vec<String>,
    /// `--namespace <the test's>` on a real cluster: each test's operator sees its own.
    scope: Vec<String>,
    pub metrics: String,
    pub kubectl: Kubectl,
    /// The last field: the kubeconfigs live here until the cleanup is done.
    _dir: tempfile::TempDir,
}

impl Cluster {
    pub async fn start() -> Cluster {
        Cluster::start_with(Duration::from_millis(300)).await
    }

    /// A cluster whose test namespace is `namespace` on the test server (created unless it
    /// exists); on a real cluster the test's own, as always.
    pub async fn start_in(namespace: &str) -> Cluster {
        Cluster::launch(namespace, Duration::from_millis(300), &[], false).await
    }

    /// A cluster whose simulated workloads become ready after `readiness_delay` (on the
    /// test server).
    pub async fn start_with(readiness_delay: Duration) -> Cluster {
        Cluster::start_with_flags(readiness_delay, &[]).await
    }

    /// A cluster whose operator runs with extra flags.
    pub async fn start_with_flags(readiness_delay: Duration, flags: &[&str]) -> Cluster {
        Cluster::launch("default", readiness_delay, flags, false).await
    }

    /// The multi-tenant setup of `deploy/overlays/multi-tenant`: the server enforces RBAC,
    /// the overlay's roles are installed, and the operator runs as its service account
    /// `pequod-system/pequod` (nothing but reading, its own API and impersonation) with
    /// `--default-service-account default` and `flags`. Test server only (it mints the
    /// operator's token, and the roles are cluster-wide): guard with [`skip_on_real_cluster`].
    pub async fn start_locked_down(flags: &[&str]) -> Cluster {
        Cluster::launch("default", Duration::from_millis(300), flags, true).await
    }

    async fn launch(
        namespace: &str,
        readiness_delay: Duration,
        flags: &[&str],
        locked_down: bool,
    ) -> Cluster {
        let dir = tempfile::tempdir().expect("temporary directory");
        let printed = std::process::Command::new(env!("CARGO_BIN_EXE_pequod"))
            .arg("crds")
            .output()
            .expect("pequod crds runs");
        let crds = String::from_utf8_lossy(&printed.stdout).into_owned();
        let kubeconfig = dir.path().join("kubeconfig");
        let (backend, namespace) = if on_real_cluster() {
            assert!(
                !locked_down,
                "the multi-tenant lockdown needs the test API server: guard the test with skip_on_real_cluster"
            );
            let namespace = unique_namespace();
            write_kubeconfig(None, &kubeconfig, &namespace);
            let cleanup = Cleanup {
                kubeconfig: kubeconfig.clone(),
                cache: dir.path().join("cleanup-cache"),
                objects: Mutex::new(Vec::new()),
            };
            (Backend::Real(cleanup), namespace)
        } else {
            let file = dir.path().join("pequod-crds.yaml");
            std::fs::write(&file, &crds).expect("CRDs written");
            let server = TestApiServer::start(Config {
                crds: vec![file, shared_crds()],
                readiness_delay,
                authorize: locked_down,
                ..Config::default()
            })
            .await
            .expect("test API server starts");
            write_kubeconfig(Some(server.kubeconfig()), &kubeconfig, namespace);
            (Backend::TestServer(server), namespace.to_string())
        };
        let kubectl = Kubectl::with_kubeconfig(&kubeconfig);
        let scope = match &backend {
            Backend::TestServer(_) => Vec::new(),
            Backend::Real(_) => {
                install_crds(&kubectl, &crds).await;
                vec!["--namespace".to_string(), namespace.clone()]
            }
        };
        backend.create_namespace(&kubectl, &namespace).await;
        let metrics = format!("127.0.0.1:{}", net::free_port());
        // Module caches on disk live with the test, not in $HOME.
        let mut flags: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
        if !flags.iter().any(|f| f == "--cache-dir") {
            flags.push("--cache-dir".into());
            flags.push(dir.path().join("cache").display().to_string());
        }
        let operator_kubeconfig = match &backend {
            Backend::TestServer(server) if locked_down => {
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
            }
            _ => kubeconfig.clone(),
        };
        let operator = spawn(
            &operator_kubeconfig,
            &metrics,
            &[&scope[..], &flags[..]].concat(),
        );
        let cluster = Cluster {
            operator,
            backend,
            namespace,
            kubeconfig,
            operator_kubeconfig,
            flags,
            scope,
            metrics,
            kubectl,
            _dir: dir,
        };
        cluster.wait_ready().await;
        cluster
    }

    /// The test's namespace: where its Transforms live, and what kubectl, `pequod` and the
    /// operator's client default to.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Another namespace for the test, created: `base` on the test server (created unless
    /// it exists: `kube-system` does), `<the test's namespace>-<base>` on a real cluster,
    /// deleted when the test ends. On a real cluster the test's operator does not see it.
    pub async fn extra_namespace(&self, base: &str) -> String {
        let name = self.cluster_scoped_name(base);
        self.backend.create_namespace(&self.kubectl, &name).await;
        name
    }

    /// A name for a cluster-scoped object of the test (a namespace, a CRD's group): `base`
    /// on the test server, `<the test's namespace>-<base>` on a real cluster, where other
    /// tests and other users share the cluster.
    pub fn cluster_scoped_name(&self, base: &str) -> String {
        self.backend.unique(&self.namespace, base)
    }

    /// On a real cluster, deletes the cluster-scoped `kind/name` when the test ends, if the
    /// test has not.
    pub fn delete_when_done(&self, object: &str) {
        if let Backend::Real(cleanup) = &self.backend {
            cleanup.delete(object);
        }
    }

    /// The test API server: faults, the simulator, its change log, request accounting.
    /// Only in tests that start with [`skip_on_real_cluster`].
    pub fn server(&self) -> &TestApiServer {
        let Backend::TestServer(server) = &self.backend else {
            panic!("the test API server: guard the test with skip_on_real_cluster");
        };
        server
    }

    /// The test API server, for a part of a test that needs it (`what`); on a real cluster
    /// None, and `skipped in part: <test>: <what>` printed.
    pub fn test_server_or_skip(&self, what: &str) -> Option<&TestApiServer> {
        match &self.backend {
            Backend::TestServer(server) => Some(server),
            Backend::Real(_) => {
                report(&format!("skipped in part: {}: {what}", test_name()));
                None
            }
        }
    }

    pub async fn wait_ready(&self) {
        eventually(60, "the operator's /readyz", || async {
            http_get(&self.metrics, "/readyz")
                .await
                .filter(|body| body.starts_with("ok"))
        })
        .await;
    }

    /// Starts another operator with the cluster's credentials and scope, `extra` flags and
    /// its metrics and probes on `metrics`.
    pub fn spawn_operator(&self, metrics: &str, extra: &[&str]) -> tokio::process::Child {
        let extra: Vec<String> = extra.iter().map(|f| f.to_string()).collect();
        spawn(
            &self.operator_kubeconfig,
            metrics,
            &[&self.scope[..], &extra[..]].concat(),
        )
    }

    /// Stops the operator and starts a new one (same flags).
    pub async fn restart_operator(&mut self) {
        let _ = self.operator.kill().await;
        let _ = self.operator.wait().await;
        self.operator = spawn(
            &self.operator_kubeconfig,
            &self.metrics,
            &[&self.scope[..], &self.flags[..]].concat(),
        );
        self.wait_ready().await;
    }

    /// Watches `resource` in the test's namespace from now on; returns once the watch has
    /// listed the `existing` objects (so it sees every later change).
    pub async fn watch(&self, resource: &str, existing: &[&str]) -> Watch {
        use tokio::io::AsyncBufReadExt;
        let template = r#"jsonpath={.type} {.object.metadata.name}{"\n"}"#;
        let mut kubectl = self
            .kubectl
            .command(&[
                "get",
                resource,
                "--watch",
                "--output-watch-events",
                "-o",
                template,
            ])
            .spawn()
            .expect("kubectl runs");
        let stdout = kubectl.stdout.take().expect("kubectl's stdout");
        let watch = Watch {
            events: Default::default(),
            _kubectl: kubectl,
        };
        let events = watch.events.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let (Some((kind, name)), Ok(mut events)) = (line.split_once(' '), events.lock())
                {
                    events.push((kind.to_string(), name.to_string()));
                }
            }
        });
        eventually(
            60,
            &format!("the watch of {resource} listing {existing:?}"),
            || async {
                existing
                    .iter()
                    .all(|name| watch.first("ADDED", name).is_some())
                    .then_some(())
            },
        )
        .await;
        watch
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
        let output = self.pequod_output(args).await;
        assert!(
            output.status.success(),
            "pequod {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Runs a `pequod` command against this cluster, whatever its exit code.
    pub async fn pequod_output(&self, args: &[&str]) -> std::process::Output {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_pequod"))
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env_remove("NO_COLOR")
            .output()
            .await
            .expect("pequod runs")
    }

    /// `metadata.resourceVersion` of an object in the test's namespace.
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
        self.finish().await;
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
        self.finish().await;
    }

    /// Once the operator is gone: stops the test server, or cleans the real cluster up.
    async fn finish(self) {
        match self.backend {
            Backend::TestServer(server) => server.stop().await,
            Backend::Real(cleanup) => drop(cleanup),
        }
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
fn spawn(
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

/// A Transform of the `shapes` test module (inline) with these nodes, in kubectl's
/// namespace: the test's.
pub fn shapes(name: &str, nodes: Value) -> String {
    let source = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/modules/shapes/main.ncl"),
    )
    .expect("shapes module");
    serde_json::json!({
        "apiVersion": "platform.pequod.io/v1alpha1",
        "kind": "Transform",
        "metadata": {"name": name},
        "spec": {"moduleRef": {"type": "inline", "ref": source}, "input": {"nodes": nodes}},
    })
    .to_string()
}

/// The changes of one resource as a watch saw them (`kubectl get --watch
/// --output-watch-events`), in the order the API server made them: evidence of what
/// happened before what, without clocks, on either backend.
pub struct Watch {
    /// (ADDED | MODIFIED | DELETED, name) of each event.
    events: std::sync::Arc<Mutex<Vec<(String, String)>>>,
    _kubectl: tokio::process::Child,
}

impl Watch {
    /// Where in the order `name` first had an event of type `kind`.
    pub fn first(&self, kind: &str, name: &str) -> Option<usize> {
        let events = self.events.lock().ok()?;
        events.iter().position(|(k, n)| k == kind && n == name)
    }
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
pub fn condition<'a>(object: &'a Value, type_: &str) -> Option<&'a Value> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// A Transform of an inline module rendering `nodes` (Nickel source), in kubectl's
/// namespace: the test's.
pub fn inline(name: &str, nodes: &str) -> String {
    inline_transform(None, name, nodes)
}

/// A Transform `namespace/name` of an inline module rendering `nodes` (Nickel source).
pub fn inline_in(namespace: &str, name: &str, nodes: &str) -> String {
    inline_transform(Some(namespace), name, nodes)
}

/// A Transform of an inline module rendering `nodes`, in `namespace` or kubectl's.
fn inline_transform(namespace: Option<&str>, name: &str, nodes: &str) -> String {
    let source = format!(
        r#"let ready = import "pequod/ready.ncl" in
{{
  metadata = {{ name = "inline-test", version = "0.1.0" }},
  Input = {{ .. }},
  render = fun input => {{ nodes = {nodes} }},
}}"#
    );
    let mut transform = serde_json::json!({
        "apiVersion": "platform.pequod.io/v1alpha1",
        "kind": "Transform",
        "metadata": {"name": name},
        "spec": {"moduleRef": {"type": "inline", "ref": source}, "input": {}},
    });
    if let Some(namespace) = namespace {
        transform["metadata"]["namespace"] = namespace.into();
    }
    transform.to_string()
}

/// A Role and RoleBinding giving service account `namespace/account` `rules`.
pub fn role_for(namespace: &str, account: &str, rules: serde_json::Value) -> String {
    [
        serde_json::json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": account, "namespace": namespace}}),
        serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": account, "namespace": namespace}, "rules": rules}),
        serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": account, "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": account},
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}]}),
    ]
    .map(|object| object.to_string())
    .join("\n---\n")
}
