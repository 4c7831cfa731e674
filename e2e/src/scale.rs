//! The scale harness: the real `pequod run` over many Transforms against this server, with
//! what it costs. It creates N webservice Transforms (4 objects each: ServiceAccount,
//! Deployment, Service, PodDisruptionBudget) in a number of namespaces, either while the
//! operator runs or before it starts, and measures the time until every Transform is
//! Ready, the peak memory of the operator and of its evaluation workers (sampled from
//! `/proc`), the CPU seconds of each and of this process (the server), the API requests by
//! verb, and then a quiet resync: every watch dropped, so every object is reconciled again
//! with nothing to do, which must write nothing.
//!
//! `cargo run --release -p pequod-e2e --bin scale -- --pequod target/release/pequod -n 1000`
//! prints the report; `tests/scale.rs` runs it small in CI and asserts the request counts.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use crate::requests::Requests;
use crate::store::{EventType, FieldValidation, Store, WriteOptions};
use crate::{Config, TestApiServer};

/// When the operator starts, relative to the Transforms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// The operator runs (and is ready) before the Transforms are created.
    OperatorFirst,
    /// The Transforms exist before the operator starts.
    TransformsFirst,
}

/// One run of the harness.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// The `pequod` binary.
    pub pequod: PathBuf,
    /// Extra flags of `pequod run`.
    pub operator_args: Vec<String>,
    /// How many Transforms.
    pub transforms: usize,
    /// Over how many namespaces.
    pub namespaces: usize,
    /// How long simulated Deployments take to become available.
    pub readiness_delay: Duration,
    /// Which comes first.
    pub start: Start,
    /// How long to wait for everything to be Ready before giving up.
    pub deadline: Duration,
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum ScaleError {
    /// The server, the operator or a file could not be set up.
    #[error("{0}")]
    Setup(String),
    /// Not every Transform was Ready in time.
    #[error("{ready} of {total} Transforms Ready after {waited:?}; {example}")]
    NotReady {
        /// How many were.
        ready: usize,
        /// How many there are.
        total: usize,
        /// How long the harness waited.
        waited: Duration,
        /// One that was not, with its conditions.
        example: String,
    },
}

/// Memory and CPU of the processes involved.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Usage {
    /// Peak resident memory of the operator process, MiB.
    pub operator_peak_mib: f64,
    /// Peak resident memory of its workers together, MiB.
    pub workers_peak_mib: f64,
    /// Peak resident memory of the operator and its workers together, MiB.
    pub total_peak_mib: f64,
    /// Resident memory of the operator at the end, MiB.
    pub operator_end_mib: f64,
    /// CPU seconds of the operator process.
    pub operator_cpu: f64,
    /// CPU seconds of its workers (reaped and running).
    pub workers_cpu: f64,
    /// CPU seconds of this process: the test API server (and the harness, a small part).
    pub server_cpu: f64,
}

/// What a run measured.
#[derive(Clone, Debug)]
pub struct Report {
    /// The scenario.
    pub transforms: usize,
    /// Which came first.
    pub start: Start,
    /// From the start (the operator's, or the creation of the Transforms) to every
    /// Transform Ready.
    pub all_ready: Duration,
    /// How long creating the Transforms took (their writes to the store).
    pub creating: Duration,
    /// Memory and CPU up to every Transform Ready.
    pub first_pass: Usage,
    /// API requests up to every Transform Ready.
    pub requests: Requests,
    /// Objects the graphs wrote (created).
    pub objects: usize,
    /// Writes of graph objects (applies, creates, updates, patches), per object.
    pub writes_per_object: f64,
    /// API requests of the quiet resync (every watch dropped, nothing changed).
    pub resync_requests: Requests,
    /// Reconciles the quiet resync made.
    pub resync_reconciles: u64,
    /// Memory and CPU at the end, after the resync.
    pub after_resync: Usage,
}

/// Resources whose objects the graphs write.
const GRAPH_RESOURCES: [&str; 4] = [
    "serviceaccounts",
    "deployments",
    "services",
    "poddisruptionbudgets",
];

/// Verbs that write.
const WRITES: [&str; 5] = ["create", "update", "patch", "apply", "delete"];

/// Writes of graph objects in `requests`.
pub fn graph_writes(requests: &Requests) -> u64 {
    GRAPH_RESOURCES
        .iter()
        .flat_map(|resource| {
            WRITES
                .iter()
                .map(move |verb| requests.count(verb, resource))
        })
        .sum()
}

/// Every write in `requests` (events excluded: they are reports, not state).
pub fn writes(requests: &Requests) -> u64 {
    requests
        .counts
        .iter()
        .filter(|(key, _)| {
            WRITES.contains(&key.verb.as_str()) && !key.resource.starts_with("events")
        })
        .map(|(_, n)| n)
        .sum()
}

/// Runs `scenario`.
pub async fn run(scenario: &Scenario) -> Result<Report, ScaleError> {
    let setup = |what: &str| {
        let what = what.to_string();
        move |e: &dyn std::fmt::Display| ScaleError::Setup(format!("{what}: {e}"))
    };
    let dir = tempfile::tempdir().map_err(|e| setup("temporary directory")(&e))?;
    let crds = dir.path().join("pequod-crds.yaml");
    let printed = std::process::Command::new(&scenario.pequod)
        .arg("crds")
        .output()
        .map_err(|e| setup("pequod crds")(&e))?;
    std::fs::write(&crds, &printed.stdout).map_err(|e| setup("CRDs")(&e))?;
    let server = TestApiServer::start(Config {
        crds: vec![crds],
        readiness_delay: scenario.readiness_delay,
        event_log: 200_000,
        ..Config::default()
    })
    .await
    .map_err(|e| setup("test API server")(&e))?;
    let store = server.store().clone();
    for n in 0..scenario.namespaces {
        create(&store, "", "namespaces", "", namespace(n))?;
    }
    let names: Vec<(String, String)> = (0..scenario.transforms)
        .map(|i| {
            (
                format!("team-{}", i % scenario.namespaces),
                format!("app-{i}"),
            )
        })
        .collect();
    let ready = Readiness::track(&store, &names);
    let metrics = format!("127.0.0.1:{}", free_port().map_err(|e| setup("port")(&e))?);
    let create_all = || -> Result<Duration, ScaleError> {
        let started = Instant::now();
        for (namespace, name) in &names {
            create(
                &store,
                "platform.pequod.io",
                "transforms",
                namespace,
                transform(namespace, name),
            )?;
        }
        Ok(started.elapsed())
    };
    let (mut operator, started, creating) = match scenario.start {
        Start::OperatorFirst => {
            let operator = spawn(scenario, &server, &metrics, dir.path())?;
            wait_ready(&metrics).await?;
            let started = Instant::now();
            let creating = create_all()?;
            (operator, started, creating)
        }
        Start::TransformsFirst => {
            let creating = create_all()?;
            let started = Instant::now();
            let operator = spawn(scenario, &server, &metrics, dir.path())?;
            (operator, started, creating)
        }
    };
    let pid = operator
        .id()
        .ok_or_else(|| ScaleError::Setup("the operator exited".into()))?;
    let sampler = Sampler::start(pid);
    let outcome = ready.all(scenario.deadline).await;
    let all_ready = started.elapsed();
    let first_pass = sampler.usage();
    let requests = server.requests();
    if let Err(waited) = outcome {
        let _ = operator.kill().await;
        return Err(ScaleError::NotReady {
            ready: ready.count(),
            total: scenario.transforms,
            waited,
            example: not_ready_example(&store, &ready, &names),
        });
    }
    let objects = created_objects(&store);
    let writes = graph_writes(&requests);

    // A quiet resync: every watch ends, the operator lists again and reconciles every
    // Transform (graphs whose spec did not change are not reconciled for it).
    let before = server.requests();
    let reconciles_before = reconciles(&metrics).await;
    // Compacted history: every watch resumes into 410 Gone and lists again.
    store.compact();
    server.drop_watches();
    let wanted = reconciles_before + scenario.transforms as u64;
    let reconciles_after = wait_for_reconciles(&metrics, wanted, scenario.deadline).await;
    let resync_requests = server.requests().since(&before);
    let after_resync = sampler.usage();
    sampler.stop();
    let _ = operator.kill().await;
    server.stop().await;
    Ok(Report {
        transforms: scenario.transforms,
        start: scenario.start,
        all_ready,
        creating,
        first_pass,
        requests,
        objects,
        writes_per_object: if objects == 0 {
            0.0
        } else {
            writes as f64 / objects as f64
        },
        resync_requests,
        resync_reconciles: reconciles_after.saturating_sub(reconciles_before),
        after_resync,
    })
}

fn namespace(n: usize) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": format!("team-{n}")}})
}

/// A webservice Transform: ServiceAccount, Deployment, Service, PodDisruptionBudget.
fn transform(namespace: &str, name: &str) -> Value {
    json!({
        "apiVersion": "platform.pequod.io/v1alpha1", "kind": "Transform",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"moduleRef": {"type": "embedded", "ref": "webservice"},
                 "input": {"name": name, "image": "ghcr.io/acme/app:1.0.0", "replicas": 2}},
    })
}

fn create(
    store: &Store,
    group: &str,
    resource: &str,
    namespace: &str,
    body: Value,
) -> Result<(), ScaleError> {
    let registry = store.registry();
    let ty = registry
        .all()
        .find(|ty| ty.gr.group == group && ty.gr.resource == resource)
        .cloned()
        .ok_or_else(|| ScaleError::Setup(format!("{resource} is not served")))?;
    let version = ty.storage_version().to_string();
    let options = WriteOptions {
        manager: "scale".to_string(),
        validation: FieldValidation::Strict,
        dry_run: false,
    };
    store
        .create(&ty, &version, namespace, body, &options)
        .map(|_| ())
        .map_err(|e| ScaleError::Setup(format!("creating {resource}: {}", e.message)))
}

/// The first Transform that is not Ready, and its conditions as the store holds them.
fn not_ready_example(store: &Store, ready: &Readiness, names: &[(String, String)]) -> String {
    let Some((namespace, name)) = names.iter().find(|key| !ready.contains(key)) else {
        return "all Ready by now".to_string();
    };
    let conditions = store
        .registry()
        .all()
        .find(|ty| ty.gr.resource == "transforms")
        .cloned()
        .and_then(|ty| {
            let version = ty.storage_version().to_string();
            store.get(&ty, &version, namespace, name).ok()
        })
        .map(|object| object["status"]["conditions"].to_string())
        .unwrap_or_else(|| "not found".to_string());
    format!("{namespace}/{name}: {conditions}")
}

/// How many objects of the graphs' kinds the graphs wrote (they carry Pequod's label).
fn created_objects(store: &Store) -> usize {
    let registry = store.registry();
    let selection = crate::store::Selection {
        namespace: None,
        labels: None,
        fields: None,
    };
    GRAPH_RESOURCES
        .iter()
        .filter_map(|resource| registry.all().find(|t| t.gr.resource == *resource).cloned())
        .filter_map(|ty| {
            let version = ty.storage_version().to_string();
            store.list(&ty, &version, &selection, None, None).ok()
        })
        .map(|page| {
            page.items
                .iter()
                .filter(|o| !o["metadata"]["labels"]["platform.pequod.io/resource-graph"].is_null())
                .count()
        })
        .sum()
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn spawn(
    scenario: &Scenario,
    server: &TestApiServer,
    metrics: &str,
    dir: &Path,
) -> Result<tokio::process::Child, ScaleError> {
    tokio::process::Command::new(&scenario.pequod)
        .args(["run", "--metrics-addr", metrics, "--health-addr", metrics])
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .args(&scenario.operator_args)
        .env("KUBECONFIG", server.kubeconfig())
        .env(
            "RUST_LOG",
            std::env::var("PEQUOD_SCALE_LOG").unwrap_or_else(|_| "error".to_string()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| ScaleError::Setup(format!("pequod run: {e}")))
}

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

async fn wait_ready(metrics: &str) -> Result<(), ScaleError> {
    for _ in 0..600 {
        if http_get(metrics, "/readyz").await.is_some() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(ScaleError::Setup("the operator never became ready".into()))
}

/// The operator's Transform reconciles so far (any result).
async fn reconciles(metrics: &str) -> u64 {
    let Some(text) = http_get(metrics, "/metrics").await else {
        return 0;
    };
    text.lines()
        .filter(|line| line.starts_with("pequod_reconcile_total{controller=\"transform\""))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

async fn wait_for_reconciles(metrics: &str, wanted: u64, deadline: Duration) -> u64 {
    let started = Instant::now();
    loop {
        let seen = reconciles(metrics).await;
        if seen >= wanted || started.elapsed() > deadline {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Which Transforms are Ready, from the store's change events.
#[derive(Clone)]
struct Readiness {
    ready: Arc<std::sync::Mutex<HashSet<(String, String)>>>,
    total: usize,
    changed: Arc<tokio::sync::Notify>,
}

impl Readiness {
    fn track(store: &Arc<Store>, names: &[(String, String)]) -> Readiness {
        let readiness = Readiness {
            ready: Arc::default(),
            total: names.len(),
            changed: Arc::default(),
        };
        let mut events = store.events();
        let sink = readiness.clone();
        tokio::spawn(async move {
            loop {
                let event = match events.recv().await {
                    Ok(event) => event,
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return,
                };
                if event.gr.resource != "transforms" || event.kind == EventType::Deleted {
                    continue;
                }
                let ready = event.object["status"]["conditions"]
                    .as_array()
                    .is_some_and(|c| {
                        c.iter()
                            .any(|c| c["type"] == "Ready" && c["status"] == "True")
                    });
                let key = (
                    event.namespace.clone(),
                    event.object["metadata"]["name"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                );
                let mut set = sink.ready.lock().unwrap_or_else(|p| p.into_inner());
                if ready {
                    set.insert(key);
                } else {
                    set.remove(&key);
                }
                drop(set);
                sink.changed.notify_waiters();
            }
        });
        readiness
    }

    fn count(&self) -> usize {
        self.ready.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn contains(&self, key: &(String, String)) -> bool {
        self.ready
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(key)
    }

    /// Waits until every Transform is Ready; how long it waited, if not within `deadline`.
    async fn all(&self, deadline: Duration) -> Result<(), Duration> {
        let started = Instant::now();
        while self.count() < self.total {
            let left = deadline.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Err(started.elapsed());
            }
            let _ = tokio::time::timeout(
                left.min(Duration::from_millis(100)),
                self.changed.notified(),
            )
            .await;
        }
        Ok(())
    }
}

/// Samples the memory of the operator and its workers every 100 ms.
struct Sampler {
    pid: u32,
    peaks: Arc<std::sync::Mutex<(f64, f64, f64)>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    fn start(pid: u32) -> Sampler {
        let peaks = Arc::new(std::sync::Mutex::new((0.0_f64, 0.0_f64, 0.0_f64)));
        let sink = peaks.clone();
        let task = tokio::spawn(async move {
            loop {
                let operator = rss_mib(pid);
                let workers: f64 = children(pid).iter().map(|child| rss_mib(*child)).sum();
                if let Ok(mut peak) = sink.lock() {
                    peak.0 = peak.0.max(operator);
                    peak.1 = peak.1.max(workers);
                    peak.2 = peak.2.max(operator + workers);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Sampler { pid, peaks, task }
    }

    fn usage(&self) -> Usage {
        let (operator_peak_mib, workers_peak_mib, total_peak_mib) =
            self.peaks.lock().map(|p| *p).unwrap_or_default();
        let (own, reaped) = cpu_seconds(self.pid);
        let running: f64 = children(self.pid).iter().map(|c| cpu_seconds(*c).0).sum();
        Usage {
            operator_peak_mib,
            workers_peak_mib,
            total_peak_mib,
            operator_end_mib: rss_mib(self.pid),
            operator_cpu: own,
            workers_cpu: reaped + running,
            server_cpu: cpu_seconds(std::process::id()).0,
        }
    }

    fn stop(self) {
        self.task.abort();
    }
}

/// Resident memory of `pid`, MiB (0 when it is gone).
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

/// The child processes of `pid`.
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// CPU seconds of `pid` itself, and of its reaped children.
fn cpu_seconds(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may hold spaces), from field 3 on.
    let fields: Vec<f64> = stat
        .rsplit_once(')')
        .map(|(_, rest)| {
            rest.split_whitespace()
                .filter_map(|f| f.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    // utime, stime, cutime, cstime are fields 14-17: 11-14 of what follows the command.
    let tick = 100.0;
    let at = |i: usize| fields.get(i).copied().unwrap_or(0.0) / tick;
    (at(10) + at(11), at(12) + at(13))
}

/// The report as lines a reader can compare with docs/performance.md.
pub fn describe(report: &Report) -> String {
    let verbs: BTreeMap<&str, u64> =
        report
            .requests
            .counts
            .iter()
            .fold(BTreeMap::new(), |mut by, (key, n)| {
                *by.entry(key.verb.as_str()).or_default() += n;
                by
            });
    let usage = |u: &Usage| {
        format!(
            "peak RSS operator {:.0} MiB, workers {:.0} MiB, together {:.0} MiB; CPU s operator {:.1}, workers {:.1}, server {:.1}",
            u.operator_peak_mib,
            u.workers_peak_mib,
            u.total_peak_mib,
            u.operator_cpu,
            u.workers_cpu,
            u.server_cpu
        )
    };
    format!(
        "{} Transforms ({:?}): all Ready in {:.1} s (creating them took {:.1} s)\n  {}\n  requests {} ({})\n  {} objects, {:.2} writes per object\n  quiet resync: {} reconciles, {} requests, {} writes\n  after resync: operator RSS {:.0} MiB (after the first pass {:.0} MiB); {}\n",
        report.transforms,
        report.start,
        report.all_ready.as_secs_f64(),
        report.creating.as_secs_f64(),
        usage(&report.first_pass),
        report.requests.total(),
        verbs
            .iter()
            .map(|(v, n)| format!("{v} {n}"))
            .collect::<Vec<_>>()
            .join(", "),
        report.objects,
        report.writes_per_object,
        report.resync_reconciles,
        report.resync_requests.total(),
        writes(&report.resync_requests),
        report.after_resync.operator_end_mib,
        report.first_pass.operator_end_mib,
        usage(&report.after_resync),
    )
}
