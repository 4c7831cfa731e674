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
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use crate::requests::Requests;
use crate::resources::ResourceType;
use crate::store::{EventType, FieldValidation, Store, WriteOptions};
use crate::testing::http_get;
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
    /// Shard replicas besides the unsharded one: Transform `i` is labelled for shard
    /// `shard-{i % (shards + 1)}`, except the last share, which stays unlabelled.
    pub shards: usize,
    /// The Transforms' `moduleRef`.
    pub module_ref: Value,
    /// The access log of the registry serving `module_ref`, to count its requests.
    pub registry_log: Option<PathBuf>,
    /// Quiet resyncs after the first, each measured only by the operator's memory after it:
    /// whether memory keeps growing with every relist or settles.
    pub extra_resyncs: usize,
    /// A module directory to run `pequod module impact` with over the Transforms, once
    /// they are all Ready.
    pub impact: Option<PathBuf>,
    /// ConfigMaps created in every namespace before the Transforms (the module of a
    /// `configmap` moduleRef: [`config_map_module`]).
    pub config_maps: Vec<Value>,
}

impl Scenario {
    /// `transforms` Transforms of the embedded webservice module over 10 namespaces, 1 s
    /// readiness delay, one replica, the operator first.
    pub fn webservice(pequod: PathBuf, transforms: usize) -> Scenario {
        Scenario {
            pequod,
            operator_args: Vec::new(),
            transforms,
            namespaces: 10,
            readiness_delay: Duration::from_secs(1),
            start: Start::OperatorFirst,
            deadline: Duration::from_secs(15 * 60),
            shards: 0,
            module_ref: json!({"type": "embedded", "ref": "webservice"}),
            registry_log: None,
            extra_resyncs: 0,
            impact: None,
            config_maps: Vec::new(),
        }
    }

    /// This scenario with its Transforms' module in the ConfigMap `name` of every namespace,
    /// holding the files at the top of the module directory `dir`.
    pub fn with_config_map_module(self, name: &str, dir: &Path) -> std::io::Result<Scenario> {
        let mut data = serde_json::Map::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if let (true, Some(file)) = (path.is_file(), path.file_name()) {
                let file = file.to_string_lossy().into_owned();
                data.insert(file, Value::String(std::fs::read_to_string(&path)?));
            }
        }
        Ok(Scenario {
            module_ref: json!({"type": "configmap", "ref": name}),
            config_maps: vec![json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name}, "data": data,
            })],
            ..self
        })
    }

    /// The shard of Transform `i` (None: the unsharded replica's).
    fn shard_of(&self, i: usize) -> Option<String> {
        let slot = i % (self.shards + 1);
        (slot < self.shards).then(|| format!("shard-{slot}"))
    }
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
    /// Peak proportional memory (PSS) of the operator and its workers together, MiB: the
    /// pages of the one binary they share counted once, as the pod's memory counts them.
    pub total_peak_pss_mib: f64,
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
    /// Renders (cache hits and evaluations) up to the resync.
    pub first_pass_renders: u64,
    /// Renders in the quiet resync (an unchanged Transform is not planned again).
    pub resync_renders: u64,
    /// Memory and CPU at the end, after the resync.
    pub after_resync: Usage,
    /// The operator's resident memory once it went quiet after the first pass, MiB.
    pub settled_first_pass_mib: f64,
    /// The same once it went quiet after the resync, MiB: what it keeps, without what the
    /// last reconciles and relists still hold.
    pub settled_after_resync_mib: f64,
    /// The operator's resident memory once quiet after each further resync, MiB.
    pub after_extra_resyncs: Vec<f64>,
    /// What each replica did, the unsharded one first.
    pub replicas: Vec<ReplicaShare>,
    /// Transforms rendered by a replica other than their shard's, or by more than one
    /// (from the `Rendered` events and the replica each names): none, when sharding works.
    pub rendered_elsewhere: Vec<String>,
    /// `pequod module impact` over the Transforms, when the scenario asked for it.
    pub impact: Option<ImpactRun>,
    /// Requests the registry answered up to every Transform Ready, and in the resync.
    pub registry_requests: Option<(u64, u64)>,
}

/// A run of `pequod module impact` over every Transform.
#[derive(Clone, Debug)]
pub struct ImpactRun {
    /// How long the command took.
    pub took: Duration,
    /// Its summary: how many unchanged, changed, fails.
    pub summary: Value,
    /// The API requests it made.
    pub requests: u64,
}

/// One replica's share of the work.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaShare {
    /// `unsharded` or the shard's key (also its user and its Pod name).
    pub name: String,
    /// Transforms labelled for it.
    pub transforms: usize,
    /// Writes of graph objects it sent up to every Transform Ready.
    pub graph_writes: u64,
    /// ResourceGraph writes it sent up to every Transform Ready.
    pub graph_applies: u64,
}

/// One running replica of the operator.
struct Replica {
    name: String,
    shard: Option<String>,
    metrics: String,
    child: Option<tokio::process::Child>,
}

/// The user replica `name` authenticates as.
fn replica_user(name: &str) -> String {
    format!("pequod-{name}")
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
        for config_map in &scenario.config_maps {
            create(
                &store,
                "",
                "configmaps",
                &format!("team-{n}"),
                config_map.clone(),
            )?;
        }
    }
    let transforms: Vec<Planned> = (0..scenario.transforms)
        .map(|i| Planned {
            namespace: format!("team-{}", i % scenario.namespaces),
            name: format!("app-{i}"),
            shard: scenario.shard_of(i),
        })
        .collect();
    let names: Vec<(String, String)> = transforms
        .iter()
        .map(|t| (t.namespace.clone(), t.name.clone()))
        .collect();
    let ready = Readiness::track(&store, &names);
    let mut replicas = Vec::new();
    for shard in
        std::iter::once(None).chain((0..scenario.shards).map(|k| Some(format!("shard-{k}"))))
    {
        replicas.push(Replica {
            name: shard.clone().unwrap_or_else(|| "unsharded".to_string()),
            shard,
            metrics: format!("127.0.0.1:{}", free_port().map_err(|e| setup("port")(&e))?),
            child: None,
        });
    }
    let create_all = || -> Result<Duration, ScaleError> {
        let started = Instant::now();
        for planned in &transforms {
            create(
                &store,
                "platform.pequod.io",
                "transforms",
                &planned.namespace,
                transform(planned, &scenario.module_ref),
            )?;
        }
        Ok(started.elapsed())
    };
    let registry_before = registry_requests(scenario);
    let (started, creating) = match scenario.start {
        Start::OperatorFirst => {
            for replica in &mut replicas {
                replica.child = Some(spawn(scenario, &server, replica, dir.path())?);
            }
            for replica in &replicas {
                wait_ready(&replica.metrics).await?;
            }
            let started = Instant::now();
            (started, create_all()?)
        }
        Start::TransformsFirst => {
            let creating = create_all()?;
            let started = Instant::now();
            for replica in &mut replicas {
                replica.child = Some(spawn(scenario, &server, replica, dir.path())?);
            }
            (started, creating)
        }
    };
    let pids = replicas
        .iter()
        .map(|r| r.child.as_ref().and_then(tokio::process::Child::id))
        .collect::<Option<Vec<u32>>>()
        .ok_or_else(|| ScaleError::Setup("an operator exited".into()))?;
    let sampler = Sampler::start(pids);
    let outcome = ready.all(scenario.deadline).await;
    let all_ready = started.elapsed();
    let first_pass = sampler.usage();
    let requests = server.requests();
    let registry_first = registry_requests(scenario);
    if let Err(waited) = outcome {
        for replica in &mut replicas {
            if let Some(child) = replica.child.as_mut() {
                let _ = child.kill().await;
            }
        }
        return Err(ScaleError::NotReady {
            ready: ready.count(),
            total: scenario.transforms,
            waited,
            example: not_ready_example(&store, &ready, &names),
        });
    }
    let settled_first_pass_mib = sampler.settled_operator_mib().await;
    let objects = created_objects(&store);
    let writes = graph_writes(&requests);
    let shares = replicas
        .iter()
        .map(|replica| {
            let sent = requests.of_user(&replica_user(&replica.name));
            ReplicaShare {
                name: replica.name.clone(),
                transforms: transforms
                    .iter()
                    .filter(|t| t.shard == replica.shard)
                    .count(),
                graph_writes: graph_writes(&sent),
                graph_applies: sent.count("apply", "resourcegraphs"),
            }
        })
        .collect();
    let rendered_elsewhere = rendered_elsewhere(&store, &transforms);
    let impact = match &scenario.impact {
        Some(module) => Some(impact(scenario, &server, module).await?),
        None => None,
    };

    // A quiet resync: every watch ends, the operator lists again and reconciles every
    // Transform (graphs whose spec did not change are not reconciled for it).
    let before = server.requests();
    let reconciles_before = reconciles(&replicas).await;
    let renders_before = renders(&replicas).await;
    // History compacted past every watcher: each resumes into 410 Gone and lists again
    // (with a plain compaction, a watch that was sent the last revision would resume).
    store.expire_history();
    server.drop_watches();
    let wanted = reconciles_before + scenario.transforms as u64;
    let reconciles_after = wait_for_reconciles(&replicas, wanted, scenario.deadline).await;
    let resync_requests = server.requests().since(&before);
    let resync_renders = renders(&replicas).await.saturating_sub(renders_before);
    let registry_resync = registry_requests(scenario);
    let after_resync = sampler.usage();
    let settled_after_resync_mib = sampler.settled_operator_mib().await;
    let mut after_extra_resyncs = Vec::new();
    for round in 2..=scenario.extra_resyncs + 1 {
        store.expire_history();
        server.drop_watches();
        let wanted = reconciles_before + (round * scenario.transforms) as u64;
        wait_for_reconciles(&replicas, wanted, scenario.deadline).await;
        after_extra_resyncs.push(sampler.settled_operator_mib().await);
    }
    sampler.stop();
    for replica in &mut replicas {
        if let Some(child) = replica.child.as_mut() {
            let _ = child.kill().await;
        }
    }
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
        first_pass_renders: renders_before,
        resync_renders,
        after_resync,
        settled_first_pass_mib,
        settled_after_resync_mib,
        after_extra_resyncs,
        impact,
        replicas: shares,
        rendered_elsewhere,
        registry_requests: match (registry_before, registry_first, registry_resync) {
            (Some(before), Some(first), Some(resync)) => {
                Some((first.saturating_sub(before), resync.saturating_sub(first)))
            }
            _ => None,
        },
    })
}

/// A Transform the harness creates.
struct Planned {
    namespace: String,
    name: String,
    shard: Option<String>,
}

/// Requests in the registry's access log so far (a request line per answer).
fn registry_requests(scenario: &Scenario) -> Option<u64> {
    let log = std::fs::read_to_string(scenario.registry_log.as_ref()?).ok()?;
    let count = log
        .lines()
        .filter(|line| line.contains("\"GET /v2/") || line.contains("\"HEAD /v2/"))
        .count();
    Some(count as u64)
}

/// Transforms whose `Rendered` events name a replica other than their shard's, or more
/// than one.
fn rendered_elsewhere(store: &Store, transforms: &[Planned]) -> Vec<String> {
    let registry = store.registry();
    let Some(ty) = registry
        .all()
        .find(|ty| ty.gr.group == "events.k8s.io" && ty.gr.resource == "events")
        .cloned()
    else {
        return vec!["events.k8s.io is not served".to_string()];
    };
    let events = every_object(store, &ty);
    let mut renderers: BTreeMap<(String, String), HashSet<String>> = BTreeMap::new();
    for event in &events {
        if event["reason"] != "Rendered" || event["regarding"]["kind"] != "Transform" {
            continue;
        }
        let key = (
            event["regarding"]["namespace"]
                .as_str()
                .unwrap_or("")
                .to_string(),
            event["regarding"]["name"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        );
        let instance = event["reportingInstance"]
            .as_str()
            .unwrap_or("")
            .to_string();
        renderers.entry(key).or_default().insert(instance);
    }
    transforms
        .iter()
        .filter_map(|t| {
            let expected = t.shard.clone().unwrap_or_else(|| "unsharded".to_string());
            let by = renderers
                .get(&(t.namespace.clone(), t.name.clone()))
                .cloned()
                .unwrap_or_default();
            (by.len() != 1 || !by.contains(&expected)).then(|| {
                let mut by: Vec<String> = by.into_iter().collect();
                by.sort();
                format!(
                    "{}/{} (shard {expected}) rendered by {by:?}",
                    t.namespace, t.name
                )
            })
        })
        .collect()
}

fn namespace(n: usize) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": format!("team-{n}")}})
}

/// A webservice Transform: ServiceAccount, Deployment, Service, PodDisruptionBudget.
fn transform(planned: &Planned, module_ref: &Value) -> Value {
    let mut transform = json!({
        "apiVersion": "platform.pequod.io/v1alpha1", "kind": "Transform",
        "metadata": {"name": planned.name, "namespace": planned.namespace},
        "spec": {"moduleRef": module_ref,
                 "input": {"name": planned.name, "image": "ghcr.io/acme/app:1.0.0", "replicas": 2}},
    });
    if let Some(shard) = &planned.shard {
        transform["metadata"]["labels"] = json!({"sharding.pequod.io/key": shard});
    }
    transform
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
    let conditions = transform_type(store)
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
    GRAPH_RESOURCES
        .iter()
        .filter_map(|resource| registry.all().find(|t| t.gr.resource == *resource).cloned())
        .map(|ty| {
            every_object(store, &ty)
                .iter()
                .filter(|o| !o["metadata"]["labels"]["platform.pequod.io/resource-graph"].is_null())
                .count()
        })
        .sum()
}

/// The Transform type, as the store serves it.
fn transform_type(store: &Store) -> Option<Arc<ResourceType>> {
    store
        .registry()
        .all()
        .find(|ty| ty.gr.resource == "transforms")
        .cloned()
}

/// A namespaced object's namespace and name.
fn key_of(object: &Value) -> (String, String) {
    let field = |name: &str| object["metadata"][name].as_str().unwrap_or("").to_string();
    (field("namespace"), field("name"))
}

/// Whether a Transform's status says Ready.
fn is_ready(transform: &Value) -> bool {
    transform["status"]["conditions"]
        .as_array()
        .is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// Every stored object of `ty`, in its storage version.
fn every_object(store: &Store, ty: &ResourceType) -> Vec<Value> {
    let selection = crate::store::Selection {
        namespace: None,
        labels: None,
        fields: None,
    };
    store
        .list(ty, ty.storage_version(), &selection, None, None)
        .map(|page| page.items)
        .unwrap_or_default()
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Runs `pequod module impact MODULE -o json` over every Transform, as its own user.
async fn impact(
    scenario: &Scenario,
    server: &TestApiServer,
    module: &Path,
) -> Result<ImpactRun, ScaleError> {
    const USER: &str = "impact";
    let user = crate::auth::User::new(USER.to_string(), ["system:masters"]);
    let kubeconfig = server
        .kubeconfig_for(&user)
        .map_err(|e| ScaleError::Setup(format!("kubeconfig: {e}")))?;
    let before = server.requests().of_user(USER).total();
    let started = Instant::now();
    let output = tokio::process::Command::new(&scenario.pequod)
        .args(["module", "impact"])
        .arg(module)
        .args(["-o", "json"])
        .env("KUBECONFIG", kubeconfig)
        .output()
        .await
        .map_err(|e| ScaleError::Setup(format!("pequod module impact: {e}")))?;
    let took = started.elapsed();
    let report: Value = serde_json::from_slice(&output.stdout).map_err(|e| {
        ScaleError::Setup(format!(
            "pequod module impact: {e}: {}",
            String::from_utf8_lossy(&output.stderr)
        ))
    })?;
    Ok(ImpactRun {
        took,
        summary: report["summary"].clone(),
        requests: server.requests().of_user(USER).total() - before,
    })
}

/// Starts `replica`, as its own user (the server counts its requests apart) and Pod name
/// (its events name it).
fn spawn(
    scenario: &Scenario,
    server: &TestApiServer,
    replica: &Replica,
    dir: &Path,
) -> Result<tokio::process::Child, ScaleError> {
    let user = crate::auth::User::new(replica_user(&replica.name), ["system:masters"]);
    let kubeconfig = server
        .kubeconfig_for(&user)
        .map_err(|e| ScaleError::Setup(format!("kubeconfig: {e}")))?;
    let metrics = replica.metrics.as_str();
    let mut command = tokio::process::Command::new(&scenario.pequod);
    command
        .args(["run", "--metrics-addr", metrics, "--health-addr", metrics])
        .arg("--cache-dir")
        .arg(dir.join(format!("cache-{}", replica.name)))
        .args(&scenario.operator_args);
    if let Some(shard) = &replica.shard {
        command.args(["--shard", shard]);
    }
    command
        .env("KUBECONFIG", kubeconfig)
        .env("POD_NAME", &replica.name)
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

async fn wait_ready(metrics: &str) -> Result<(), ScaleError> {
    for _ in 0..600 {
        if http_get(metrics, "/readyz").await.is_some() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(ScaleError::Setup("the operator never became ready".into()))
}

/// The replicas' Transform reconciles so far (any result).
async fn reconciles(replicas: &[Replica]) -> u64 {
    metric_sum(replicas, "pequod_reconcile_total{controller=\"transform\"").await
}

/// Renders so far: from the render cache or evaluated.
async fn renders(replicas: &[Replica]) -> u64 {
    metric_sum(replicas, "pequod_render_cache_hits_total").await
        + metric_sum(replicas, "pequod_render_cache_misses_total").await
}

/// The sum over the replicas of the samples whose line starts with `prefix`.
async fn metric_sum(replicas: &[Replica], prefix: &str) -> u64 {
    let mut total = 0;
    for replica in replicas {
        let Some(text) = http_get(&replica.metrics, "/metrics").await else {
            continue;
        };
        total += text
            .lines()
            .filter(|line| line.starts_with(prefix))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64;
    }
    total
}

async fn wait_for_reconciles(replicas: &[Replica], wanted: u64, deadline: Duration) -> u64 {
    let started = Instant::now();
    loop {
        let seen = reconciles(replicas).await;
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
        let store = store.clone();
        tokio::spawn(async move {
            loop {
                let event = match events.recv().await {
                    Ok(event) => event,
                    Err(RecvError::Lagged(_)) => {
                        // Events were dropped: the ones still queued are older than the
                        // store's state; skip them, then count again from the store. What
                        // comes after is newer than the count.
                        while let Ok(_) | Err(TryRecvError::Lagged(_)) = events.try_recv() {}
                        sink.recount(&store);
                        continue;
                    }
                    Err(RecvError::Closed) => return,
                };
                if event.gr.resource != "transforms" || event.kind == EventType::Deleted {
                    continue;
                }
                sink.set(&event.object);
            }
        });
        readiness
    }

    /// Records whether the Transform `object` is Ready.
    fn set(&self, object: &Value) {
        let key = key_of(object);
        let mut set = self.ready.lock().unwrap_or_else(|p| p.into_inner());
        if is_ready(object) {
            set.insert(key);
        } else {
            set.remove(&key);
        }
        drop(set);
        self.changed.notify_waiters();
    }

    /// Counts the Ready Transforms again from the store.
    fn recount(&self, store: &Store) {
        let Some(ty) = transform_type(store) else {
            return;
        };
        let ready: HashSet<(String, String)> = every_object(store, &ty)
            .iter()
            .filter(|object| is_ready(object))
            .map(key_of)
            .collect();
        *self.ready.lock().unwrap_or_else(|p| p.into_inner()) = ready;
        self.changed.notify_waiters();
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

/// Samples the memory of the operator replicas and their workers every 100 ms (each
/// figure is the sum over the replicas).
struct Sampler {
    pids: Vec<u32>,
    /// CPU seconds of this process before the run (earlier runs in the same process).
    server_before: f64,
    /// Operator, workers, both (RSS) and both (PSS).
    peaks: Arc<std::sync::Mutex<(f64, f64, f64, f64)>>,
    task: tokio::task::JoinHandle<()>,
}

/// The sampler reads PSS at every this many samples of RSS.
const PSS_EVERY: u64 = 10;

impl Sampler {
    fn start(pids: Vec<u32>) -> Sampler {
        let peaks = Arc::new(std::sync::Mutex::new((0.0_f64, 0.0_f64, 0.0_f64, 0.0_f64)));
        let sink = peaks.clone();
        let sampled = pids.clone();
        let task = tokio::spawn(async move {
            for tick in 0_u64.. {
                let workers: Vec<u32> = sampled
                    .iter()
                    .flat_map(|pid| children(*pid))
                    .filter(|pid| is_worker(*pid))
                    .collect();
                let operator: f64 = sampled.iter().map(|pid| rss_mib(*pid)).sum();
                let resident: f64 = workers.iter().copied().map(rss_mib).sum();
                // PSS walks every page of the process (at 5,000 Transforms a tenth of the
                // harness's CPU when read every 100 ms, taken from the server's cores):
                // once a second.
                let proportional: Option<f64> = (tick % PSS_EVERY == 0)
                    .then(|| sampled.iter().chain(&workers).copied().map(pss_mib).sum());
                if let Ok(mut peak) = sink.lock() {
                    peak.0 = peak.0.max(operator);
                    peak.1 = peak.1.max(resident);
                    peak.2 = peak.2.max(operator + resident);
                    peak.3 = peak.3.max(proportional.unwrap_or_default());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Sampler {
            pids,
            server_before: cpu_seconds(std::process::id()).0,
            peaks,
            task,
        }
    }

    fn usage(&self) -> Usage {
        let (operator_peak_mib, workers_peak_mib, total_peak_mib, total_peak_pss_mib) =
            self.peaks.lock().map(|p| *p).unwrap_or_default();
        let (mut own, mut reaped, mut running) = (0.0, 0.0, 0.0);
        for pid in &self.pids {
            let (operator, workers) = cpu_seconds(*pid);
            own += operator;
            reaped += workers;
            running += children(*pid)
                .iter()
                .map(|c| cpu_seconds(*c).0)
                .sum::<f64>();
        }
        Usage {
            operator_peak_mib,
            workers_peak_mib,
            total_peak_mib,
            total_peak_pss_mib,
            operator_end_mib: self.pids.iter().map(|pid| rss_mib(*pid)).sum(),
            operator_cpu: own,
            workers_cpu: reaped + running,
            server_cpu: cpu_seconds(std::process::id()).0 - self.server_before,
        }
    }

    /// The operator's resident memory once it has gone quiet: its CPU time grew by at most
    /// one clock tick (10 ms) in half a second (the end of its last burst of work, after
    /// which it hands freed memory back); after 30 s it is taken anyway, and the harness
    /// says so.
    async fn settled_operator_mib(&self) -> f64 {
        // In clock ticks: whole numbers, compared exactly.
        let ticks = || -> i64 {
            self.pids
                .iter()
                .map(|pid| (cpu_seconds(*pid).0 * 100.0).round() as i64)
                .sum()
        };
        let started = Instant::now();
        let mut last = ticks();
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = ticks();
            if now - last <= 1 {
                break;
            }
            if started.elapsed() > Duration::from_secs(30) {
                eprintln!("the operator did not go quiet within 30 s: its memory taken busy");
                break;
            }
            last = now;
        }
        self.pids.iter().map(|pid| rss_mib(*pid)).sum()
    }

    fn stop(self) {
        self.task.abort();
    }
}

/// Resident memory of `pid`, MiB (0 when it is gone).
fn rss_mib(pid: u32) -> f64 {
    kib_field(&format!("/proc/{pid}/status"), "VmRSS:") / 1024.0
}

/// Proportional memory of `pid` (its resident pages, each shared page divided among the
/// processes sharing it), MiB (0 when it is gone).
fn pss_mib(pid: u32) -> f64 {
    kib_field(&format!("/proc/{pid}/smaps_rollup"), "Pss:") / 1024.0
}

/// The `kB` figure of the line starting with `field` in a /proc file (0 when absent).
fn kib_field(path: &str, field: &str) -> f64 {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|value| value.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0)
}

/// Whether `pid` runs an evaluation worker (`pequod __worker`). A child being started is
/// not one yet: between its clone and its exec it shares the operator's address space
/// (posix_spawn's CLONE_VM), and its VmRSS is the operator's, counted twice if summed.
fn is_worker(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|cmdline| cmdline.split(|b| *b == 0).any(|arg| arg == b"__worker"))
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
            "peak RSS operator {:.0} MiB, workers {:.0} MiB, together {:.0} MiB (PSS {:.0} MiB); CPU s operator {:.1}, workers {:.1}, server {:.1}",
            u.operator_peak_mib,
            u.workers_peak_mib,
            u.total_peak_mib,
            u.total_peak_pss_mib,
            u.operator_cpu,
            u.workers_cpu,
            u.server_cpu
        )
    };
    format!(
        "{} Transforms ({:?}): all Ready in {:.1} s (creating them took {:.1} s)\n  {}\n  requests {} ({})\n  {} objects, {:.2} writes per object\n  {} renders; quiet resync: {} reconciles, {} renders, {} requests, {} writes\n  after resync: operator RSS {:.0} MiB at the last reconcile, {:.0} MiB once quiet (after the first pass {:.0}, once quiet {:.0} MiB); {}\n",
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
        report.first_pass_renders,
        report.resync_reconciles,
        report.resync_renders,
        report.resync_requests.total(),
        writes(&report.resync_requests),
        report.after_resync.operator_end_mib,
        report.settled_after_resync_mib,
        report.first_pass.operator_end_mib,
        report.settled_first_pass_mib,
        usage(&report.after_resync),
    ) + &shares(report)
}

/// The registry's requests and, with shards, each replica's share.
fn shares(report: &Report) -> String {
    let mut text = String::new();
    if let Some((first, resync)) = report.registry_requests {
        text += &format!("  registry requests: {first} until all Ready, {resync} in the resync\n");
    }
    if let Some(impact) = &report.impact {
        text += &format!(
            "  module impact: {:.1} s, {} API requests; {}\n",
            impact.took.as_secs_f64(),
            impact.requests,
            impact.summary
        );
    }
    if !report.after_extra_resyncs.is_empty() {
        let rss: Vec<String> = report
            .after_extra_resyncs
            .iter()
            .map(|mib| format!("{mib:.0}"))
            .collect();
        text += &format!(
            "  operator RSS once quiet after each further resync: {} MiB\n",
            rss.join(", ")
        );
    }
    if report.replicas.len() > 1 {
        for replica in &report.replicas {
            text += &format!(
                "  replica {}: {} Transforms, {} graph writes, {} ResourceGraph writes\n",
                replica.name, replica.transforms, replica.graph_writes, replica.graph_applies
            );
        }
        text += &format!(
            "  Transforms rendered outside their shard: {}\n",
            report.rendered_elsewhere.len()
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::PatchType;

    /// The Transform type, with Pequod's CRDs as deployed.
    fn store_with_transforms() -> (Arc<Store>, Arc<ResourceType>) {
        let store = Arc::new(Store::new(100));
        let crds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/base/crds.yaml");
        crate::load_crds(&store, &crds).expect("Pequod's CRDs");
        let ty = transform_type(&store).expect("the Transform type");
        (store, ty)
    }

    fn make_ready(store: &Store, ty: &ResourceType, name: &str) {
        let options = WriteOptions {
            manager: "test".to_string(),
            validation: FieldValidation::Strict,
            dry_run: false,
        };
        let status = json!({"status": {"conditions": [{"type": "Ready", "status": "True",
            "reason": "Succeeded", "message": "ready", "lastTransitionTime": "2026-12-05T00:00:00Z"}]}});
        store
            .patch(
                ty,
                ty.storage_version(),
                "default",
                name,
                PatchType::Merge,
                status,
                true,
                &options,
            )
            .expect("status written");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn readiness_counts_again_from_the_store_when_it_missed_events() {
        let (store, ty) = store_with_transforms();
        let planned = |name: &str| Planned {
            namespace: "default".to_string(),
            name: name.to_string(),
            shard: None,
        };
        let names = [
            ("default".to_string(), "a".to_string()),
            ("default".to_string(), "b".to_string()),
        ];
        let ready = Readiness::track(&store, &names);
        let module = json!({"type": "inline", "ref": "{}"});
        for name in ["a", "b"] {
            create(
                &store,
                "platform.pequod.io",
                "transforms",
                "default",
                transform(&planned(name), &module),
            )
            .expect("created");
        }
        make_ready(&store, &ty, "a");
        // The tracker's task has not run yet (one thread, no await so far): these changes
        // overflow its channel, and `a` going Ready is among the events it never gets.
        for n in 0..5_000 {
            let config_map = json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": format!("filler-{n}")}});
            create(&store, "", "configmaps", "default", config_map).expect("created");
        }
        // A change after the gap is counted too.
        make_ready(&store, &ty, "b");
        ready
            .all(Duration::from_secs(30))
            .await
            .expect("both Transforms counted Ready");
        assert_eq!(ready.count(), 2);
    }
}
