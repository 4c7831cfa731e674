//! The operator: the Transform controller (resolve → render → validate → write the
//! ResourceGraph) and the ResourceGraph controller (execute the graph), sharing a
//! [`Context`] with the client, the renderer, the applier, events and metrics.

mod cached;
mod config_maps;
mod credentials;
mod events;
mod graph;
mod leader;
pub mod memory;
mod policies;
pub mod rollout;
mod shard;
mod transform;
mod watches;

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use futures::{FutureExt, StreamExt, TryStreamExt};
use kube::api::Api;
use kube::runtime::events::EventType;
use kube::runtime::{Controller, controller::Action, watcher};
use kube::{Resource, ResourceExt};
use tokio::sync::Semaphore;

use futures::channel::mpsc::UnboundedReceiver;
use futures::stream::BoxStream;
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{PredicateConfig, WatchStreamExt};

use crate::api::condition::{self, types};
use crate::api::{GraphMetadata, ModuleType, Transform};
use crate::backoff::retry_delay;
use crate::exec::{Appliers, ExecConfig, panic_message};
use crate::metrics::{Metrics, ReadyState};
use crate::module::disk::DiskCache;
use crate::module::oci::Registry;
use crate::module::{ModuleCache, ModuleSources, RecentResolutions};
use crate::render::Renderer;
use cached::{CachedGraph, GraphRef, Shared};
pub use leader::{LeaderConfig, LeaderError, Leadership};
pub use policies::{ClusterPolicies, PoliciesUnavailable, PolicyFlags};
pub use shard::{InvalidShard, Shard};
pub use watches::{WatchCount, Watches};

/// Memory for fetched modules: a few hundred typical modules.
const MODULE_CACHE_BYTES: u64 = 64 << 20;

/// Graphs whose last write the Transform controller remembers, and for how long: long
/// enough to outlast any watch's lag, few enough to stay small (a few hundred bytes each).
const WRITTEN_GRAPHS: u64 = 100_000;
const WRITTEN_GRAPHS_TTL: Duration = Duration::from_secs(600);

/// What the operator was started with.
#[derive(Clone, Debug)]
pub struct OperatorConfig {
    /// Watch only this namespace (None: all).
    pub namespace: Option<String>,
    /// At most this many object writes at once, over all graphs.
    pub max_concurrent_applies: usize,
    /// Namespace and scope guards.
    pub exec: ExecConfig,
    /// Registries (`host:port`) spoken to over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// How often a module referenced by a tag (or a Git branch) is resolved again.
    pub module_resync: Duration,
    /// How many Transforms of a staged rollout may be on a new digest and not Ready at once.
    pub rollout_max_unavailable: rollout::MaxUnavailable,
    /// Where Git mirrors are kept.
    pub cache_dir: std::path::PathBuf,
    /// Git URLs may be local paths (they read the operator's own disk: for tests).
    pub allow_local_git: bool,
    /// Disk budget of the OCI module cache in `cache_dir`.
    pub cache_max_bytes: u64,
    /// How long an unused OCI module stays in the disk cache.
    pub cache_ttl: Duration,
    /// The ServiceAccount (of each graph's namespace) that graphs naming none act as;
    /// `None`: such graphs act as the operator (single tenant).
    pub default_service_account: Option<String>,
    /// Execute ResourceGraphs that no Transform controls (written by hand).
    pub allow_standalone_graphs: bool,
    /// Where modules may come from.
    pub module_sources: ModuleSources,
    /// Bounds on what a render may produce.
    pub limits: crate::plan::Limits,
    /// The Transforms and ResourceGraphs this replica reconciles.
    pub shard: Shard,
    /// The cluster's policy modules.
    pub policies: PolicyFlags,
}

/// Objects in a page of a watch's list. A list (at start, and at every relist) holds a page
/// of text and the objects parsed from it at once: kube's default of 500 is megabytes for
/// ResourceGraphs, and every watch relists at the same moment after a lost connection.
const LIST_PAGE: u32 = 100;

/// How every watch of the operator lists.
fn watch_config() -> watcher::Config {
    watcher::Config::default().page_size(LIST_PAGE)
}

/// Shared by every reconcile of both controllers.
pub struct Context {
    /// The API client (the operator's identity).
    pub client: kube::Client,
    /// Hands freed memory back when a burst of reconciles is over.
    pub reclaim: memory::AfterBursts,
    /// Staged rollouts: the moves admitted that the cache does not show yet.
    pub moves: rollout::Moves,
    /// The versions of ConfigMaps, as the ConfigMap watch shows them, and of those read
    /// as modules: a ConfigMap module is read again only when it changed.
    pub config_maps: config_maps::ConfigMapVersions,
    /// Read and write graph objects, as the operator or as a graph's service account.
    pub appliers: Appliers,
    /// Every Transform, as the Transform controller's watch sees them.
    pub transforms: Store<Shared<Transform>>,
    /// Every ResourceGraph, as the ResourceGraph controller's watch sees them: the
    /// Transform controller reads its graphs here, not from the API server.
    pub graphs: Store<CachedGraph>,
    /// The render engine (worker pool and render cache).
    pub renderer: Renderer,
    /// The cluster's policy modules, as last loaded.
    pub policies: ClusterPolicies,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Publishes Kubernetes events.
    pub events: events::Publisher,
    /// Bounds concurrent object writes.
    pub applies: Arc<Semaphore>,
    /// Watches of applied and observed objects, waking their graphs.
    pub watches: Watches,
    /// The operator's flags.
    pub config: OperatorConfig,
    /// Failed reconciles in a row, by controller and object: `error_policy` backs off.
    pub reconcile_failures: Backoffs,
    /// Transient render failures in a row, by Transform: the retry backoff grows.
    pub render_failures: Backoffs,
    /// The registry client for modules without a pull secret.
    pub registry: Registry,
    /// Fetched OCI modules by digest, shared by every Transform.
    pub modules: ModuleCache,
    /// Remote modules resolved in the last `--module-resync`, reused without asking their
    /// source again.
    pub resolutions: RecentResolutions,
    /// What the Transform controller last wrote of each graph (`namespace/name`): for the
    /// moment before its watch brings the graph, and to skip planning an unchanged one.
    pub written_graphs: moka::future::Cache<String, WrittenGraph>,
    /// Graphs whose status this replica wrote, with the resourceVersion each write
    /// superseded: a cached copy still at that version predates the write (the watch
    /// lags), and a pass from it would redo the writes the new status records.
    pub superseded: DashMap<GraphRef, String>,
}

/// A graph the Transform controller wrote (or found as planned).
#[derive(Clone, Debug)]
pub struct WrittenGraph {
    /// Its module, version, digest, render hash and render time.
    pub metadata: GraphMetadata,
    /// The key of the Transform spec and module it was planned from.
    pub planned_from: String,
    /// When it was written (or found as planned).
    pub written_at: std::time::Instant,
}

/// Why a reconcile failed; the controller retries with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request to the API server failed.
    #[error("API request failed: {0}")]
    Kube(#[from] kube::Error),
    /// An object could not be serialized.
    #[error("serialization failed: {0}")]
    Json(#[from] serde_json::Error),
    /// The reconcile panicked (a bug): reported and retried, the operator carries on.
    #[error("internal error: {0}")]
    Panic(String),
    /// No client could be made for a graph's identity.
    #[error("{0}")]
    Identity(String),
    /// The API server refused to store a ResourceGraph.
    #[error("the API server refused the ResourceGraph: {0}")]
    GraphRejected(crate::exec::ApiError),
    /// A cached ResourceGraph's spec does not parse (written by hand, against the schema).
    #[error("the ResourceGraph's spec cannot be read: {0}")]
    UnreadableGraph(serde_json::Error),
}

impl Error {
    /// Whether the API server refused a write made against an older resourceVersion than
    /// its own (409 Conflict): the cache was behind, not wrong.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Kube(kube::Error::Api(status)) if status.code == 409 && status.reason == "Conflict")
    }

    /// The `result` label of `pequod_reconcile_total` for a reconcile that ended so:
    /// `conflict` (retried, nothing failed) or `error`.
    pub fn outcome(&self) -> &'static str {
        if self.is_conflict() {
            "conflict"
        } else {
            "error"
        }
    }
}

/// What feeds the controllers of a [`Context`], handed to [`run`]: the writers of the
/// Transform and ResourceGraph caches, and the graphs woken by watched objects.
pub struct Feeds {
    transforms: Writer<Shared<Transform>>,
    graph_cache: Writer<CachedGraph>,
    graphs: UnboundedReceiver<GraphRef>,
}

impl Context {
    /// A context for the API server of `kube_config` with the given renderer and metrics,
    /// and the feeds of its controllers.
    pub fn new(
        kube_config: kube::Config,
        renderer: Renderer,
        metrics: Arc<Metrics>,
        config: OperatorConfig,
    ) -> Result<(Context, Feeds), kube::Error> {
        let (graphs, woken) = futures::channel::mpsc::unbounded();
        let client = kube::Client::try_from(kube_config.clone())?;
        let appliers = Appliers::new(kube_config)?;
        let registry = Registry::new(&config.insecure_registries, None);
        let modules = ModuleCache::new(MODULE_CACHE_BYTES).with_disk(DiskCache::new(
            &config.cache_dir,
            config.cache_max_bytes,
            config.cache_ttl,
        ));
        // The components count their own events; the operator exports their counters.
        metrics.register(modules.stats().collectors());
        metrics.register(renderer.collectors());
        let writer = Writer::default();
        let graph_cache = Writer::default();
        let context = Context {
            appliers,
            transforms: writer.as_reader(),
            graphs: graph_cache.as_reader(),
            events: events::Publisher::new(
                client.clone(),
                "pequod",
                std::env::var("POD_NAME").ok(),
            ),
            watches: Watches::new(client.clone(), config.namespace.clone(), graphs),
            applies: Arc::new(Semaphore::new(config.max_concurrent_applies.max(1))),
            client,
            renderer,
            metrics,
            reconcile_failures: Backoffs::default(),
            render_failures: Backoffs::default(),
            registry,
            modules,
            resolutions: RecentResolutions::new(config.module_resync),
            written_graphs: moka::future::Cache::builder()
                .max_capacity(WRITTEN_GRAPHS)
                .time_to_live(WRITTEN_GRAPHS_TTL)
                .build(),
            superseded: DashMap::new(),
            reclaim: memory::AfterBursts::default(),
            moves: rollout::Moves::default(),
            config_maps: config_maps::ConfigMapVersions::default(),
            policies: ClusterPolicies::new(config.policies.clone()),
            config,
        };
        let feeds = Feeds {
            transforms: writer,
            graph_cache,
            graphs: woken,
        };
        Ok((context, feeds))
    }

    /// Publishes an event about `object`; a failure is logged, never fatal.
    pub async fn event<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        let event = events::Note {
            type_,
            reason,
            note: &note,
        };
        if let Err(error) = self.events.publish(&object.object_ref(&()), &event).await {
            tracing::warn!(%error, name = %object.name_any(), reason, "cannot publish event");
        }
    }
}

fn api<K>(client: &kube::Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>,
{
    match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

/// Concurrent reconciles of each controller: enough to keep the API server busy, bounded so
/// that a flood of Transforms queues instead of piling up requests and memory.
const CONCURRENCY: u16 = 16;

/// Runs both controllers until `shutdown` resolves; `ready` says so once their caches
/// have synced.
///
/// One watch of ResourceGraphs fills the cache both controllers read. A graph's own status
/// writes do not wake the graph controller (only a new generation, its deletion or its
/// finalizers do: the objects it applied wake it through their watches); a change of a
/// graph's readiness, or its deletion, wakes the Transform that owns it, which mirrors it.
pub async fn run(
    context: Arc<Context>,
    feeds: Feeds,
    ready: ReadyState,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + Clone + 'static,
) {
    let Feeds {
        transforms,
        graph_cache,
        graphs,
    } = feeds;
    // No graph is planned without the policy modules: a Transform reconciled before they
    // load would be refused (and retried).
    context.policies.reload(&context).await;
    let namespace = context.config.namespace.as_deref();
    let transform_api: Api<Shared<Transform>> = api(&context.client, namespace);
    let graph_api: Api<CachedGraph> = api(&context.client, namespace);
    let config = kube::runtime::controller::Config::default().concurrency(CONCURRENCY);
    // This replica's share: the API server sends it nothing else.
    let share = watch_config().labels(&context.config.shard.selector());

    let (owners, owners_woken) = futures::channel::mpsc::unbounded();
    let mirrored = Mirrored::default();
    let graph_events = cached::cache(graph_cache, (), watcher(graph_api, share.clone()))
        .default_backoff()
        .inspect_ok(move |event| mirrored.wake_owner(event, &owners))
        .applied_objects()
        .predicate_filter(graph_trigger, PredicateConfig::default());
    let graph_controller = Controller::for_stream(graph_events, context.graphs.clone())
        .with_config(config.clone())
        .reconcile_on(graphs)
        .graceful_shutdown_on(shutdown.clone())
        .run(graph::reconcile, graph::error_policy, context.clone())
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "resource graph controller");
            }
        });

    let transform_events = cached::cache(transforms, (), watcher(transform_api, share))
        .default_backoff()
        .applied_objects();
    let controller = Controller::for_stream(transform_events, context.transforms.clone());
    // Editing a ConfigMap that holds a module re-renders every Transform that uses it: the
    // Transforms are looked up in the controller's own cache. The watch asks for the
    // ConfigMaps' metadata only; a ConfigMap's new version is recorded before its Transforms
    // are woken: they read it again, and only then.
    let store = controller.store();
    let config_maps: Api<config_maps::ConfigMapMeta> = api(&context.client, namespace);
    let versions = context.clone();
    let config_map_changes = watcher(config_maps, watch_config())
        .default_backoff()
        .inspect_ok(move |event| versions.config_maps.observe(event))
        .touched_objects();
    let (everyone, policies_changed) = futures::channel::mpsc::unbounded();
    let woken = futures::stream::select(owners_woken, policies_changed);
    let transform_controller = controller
        .with_config(config)
        .reconcile_on(woken)
        .watches_stream(config_map_changes, move |config_map| {
            let namespace = config_map.namespace();
            let name = config_map.name_any();
            store
                .state()
                .into_iter()
                .filter(|t| {
                    t.spec.module_ref.type_ == ModuleType::Configmap
                        && t.spec.module_ref.ref_ == name
                        && t.namespace() == namespace
                })
                .map(|t| ObjectRef::from_obj(&*t))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(shutdown)
        .run(
            transform::reconcile,
            transform::error_policy,
            context.clone(),
        )
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "transform controller");
            }
        });

    let reloads = policy_config_map_changes(&context);
    let policies = keep_policies_loaded(context.clone(), reloads, everyone);
    let transform_cache = context.transforms.clone();
    let graph_cache = context.graphs.clone();
    let synced = async move {
        // A replica is ready once both caches hold what the API server has.
        if transform_cache.wait_until_ready().await.is_ok()
            && graph_cache.wait_until_ready().await.is_ok()
        {
            ready.leading();
        }
    };
    futures::future::select(
        Box::pin(async {
            futures::join!(transform_controller, graph_controller, synced);
        }),
        Box::pin(policies),
    )
    .await;
}

/// Each change (and each listing) of a ConfigMap that holds a policy module or its
/// configuration. They live in the operator's own namespace, which a watch of its own
/// follows, wherever the Transforms are (`--namespace` may name another).
fn policy_config_map_changes(context: &Context) -> BoxStream<'static, ()> {
    let flags = context.config.policies.clone();
    if !flags.reads_config_maps() {
        return futures::stream::pending().boxed();
    }
    let config_maps: Api<config_maps::ConfigMapMeta> =
        Api::namespaced(context.client.clone(), &flags.namespace);
    watcher(config_maps, watch_config())
        .default_backoff()
        .touched_objects()
        .filter_map(move |config_map| {
            let policy = config_map.ok().is_some_and(|config_map| {
                flags.reads_config_map(&flags.namespace, &config_map.name_any())
            });
            futures::future::ready(policy.then_some(()))
        })
        .boxed()
}

/// Loads the cluster's policy modules again at every `--module-resync` and when `reloads`
/// says a ConfigMap of theirs changed; when what they are changed, every Transform is sent
/// to `everyone` to be planned again. Runs until the controllers stop.
async fn keep_policies_loaded(
    context: Arc<Context>,
    mut reloads: BoxStream<'static, ()>,
    everyone: futures::channel::mpsc::UnboundedSender<ObjectRef<Shared<Transform>>>,
) {
    if context.config.policies.modules.is_empty() {
        return std::future::pending().await;
    }
    let mut failures = 0;
    loop {
        // Not loaded (a registry down at startup): try again soon, not at the resync.
        let wait = if context.policies.current().is_ok() {
            failures = 0;
            context.config.module_resync
        } else {
            failures += 1;
            crate::backoff::retry_delay(failures).min(context.config.module_resync)
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            next = reloads.next() => {
                if next.is_none() {
                    return std::future::pending().await;
                }
                // One reload for a burst of changes.
                while let Some(Some(())) = reloads.next().now_or_never() {}
            }
        }
        if context.policies.reload(&context).await {
            for transform in context.transforms.state() {
                let _ = everyone.unbounded_send(ObjectRef::from_obj(&*transform));
            }
        }
    }
}

/// What wakes the graph controller for a graph: a new generation (its spec), its deletion,
/// its finalizers; not its status, which it writes itself.
fn graph_trigger(graph: &CachedGraph) -> Option<u64> {
    let mut hasher = std::hash::DefaultHasher::new();
    std::hash::Hash::hash(&graph.metadata.generation, &mut hasher);
    std::hash::Hash::hash(&graph.metadata.deletion_timestamp.is_some(), &mut hasher);
    std::hash::Hash::hash(&graph.metadata.finalizers, &mut hasher);
    Some(std::hash::Hasher::finish(&hasher))
}

/// The readiness each graph last showed its Transform: a change (or the graph's deletion)
/// wakes the Transform, which mirrors it.
#[derive(Default)]
struct Mirrored(DashMap<GraphRef, u64>);

impl Mirrored {
    fn wake_owner(
        &self,
        event: &watcher::Event<CachedGraph>,
        owners: &futures::channel::mpsc::UnboundedSender<ObjectRef<Shared<Transform>>>,
    ) {
        let (graph, deleted) = match event {
            watcher::Event::Apply(graph) | watcher::Event::InitApply(graph) => (graph, false),
            watcher::Event::Delete(graph) => (graph, true),
            watcher::Event::Init | watcher::Event::InitDone => return,
        };
        let key = ObjectRef::from_obj(graph);
        let changed = if deleted {
            self.0.remove(&key);
            true
        } else {
            let seen = readiness_hash(graph);
            self.0.insert(key, seen) != Some(seen)
        };
        let owner = graph
            .owner_references()
            .iter()
            .find(|o| o.controller == Some(true) && o.kind == "Transform");
        if changed && let Some(owner) = owner {
            let transform =
                ObjectRef::new(&owner.name).within(&graph.namespace().unwrap_or_default());
            let _ = owners.unbounded_send(transform);
        }
    }
}

/// What of a graph its Transform mirrors: the generation the graph controller last saw and
/// its Ready condition.
fn readiness_hash(graph: &CachedGraph) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    std::hash::Hash::hash(&graph.metadata.generation, &mut hasher);
    if let Some(status) = graph.status() {
        std::hash::Hash::hash(&status.observed_generation, &mut hasher);
        if let Some(ready) = condition::find(&status.conditions, types::READY) {
            std::hash::Hash::hash(&(&ready.status, &ready.reason, &ready.message), &mut hasher);
        }
    }
    std::hash::Hasher::finish(&hasher)
}

/// Failures in a row, by what failed: each retry waits longer (exponential, with jitter),
/// a success forgets them.
#[derive(Default)]
pub struct Backoffs(DashMap<String, u32>);

impl Backoffs {
    /// One more failure of `key`: how many in a row, and how long to wait before the next
    /// try.
    pub fn failed(&self, key: &str) -> (u32, Duration) {
        let mut failures = self.0.entry(key.to_string()).or_insert(0);
        *failures = failures.saturating_add(1);
        (*failures, retry_delay(*failures))
    }

    /// `key` succeeded, or is gone: its failures are forgotten.
    pub fn forget(&self, key: &str) {
        self.0.remove(key);
    }
}

/// The key of `object` in [`Backoffs`] for `controller`.
fn backoff_key<K: Resource<DynamicType = ()>>(controller: &str, object: &K) -> String {
    format!(
        "{controller}/{}/{}",
        object.namespace().unwrap_or_default(),
        object.name_any()
    )
}

/// What `error_policy` does for both controllers: log, and retry the object after a backoff
/// that grows with its failures in a row.
fn retry_later<K: Resource<DynamicType = ()>>(
    controller: &str,
    object: &K,
    error: &Error,
    context: &Context,
) -> Action {
    if error.is_conflict() {
        // A write made against an older copy than the API server's: the newer one's watch
        // event (or this retry) reconciles it again. Nothing failed: no backoff grows.
        tracing::debug!(kind = K::kind(&()).as_ref(), namespace = object.namespace().unwrap_or_default(), name = %object.name_any(), %error, retry_in = ?CONFLICT_RETRY, "written against an older copy");
        return Action::requeue(CONFLICT_RETRY);
    }
    let (failures, delay) = context
        .reconcile_failures
        .failed(&backoff_key(controller, object));
    tracing::warn!(kind = K::kind(&()).as_ref(), namespace = object.namespace().unwrap_or_default(), name = %object.name_any(), %error, failures, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// When a reconcile whose write met a newer copy (409 Conflict) runs again, unless that
/// copy's watch event comes first.
const CONFLICT_RETRY: Duration = Duration::from_secs(1);

/// Runs one reconcile of `controller` on `object`: a panic becomes an error (the controller
/// retries it, the operator carries on), a success forgets the object's failures, and the
/// reconcile is counted and timed.
async fn measured<K: Resource<DynamicType = ()>>(
    context: &Context,
    controller: &str,
    object: &K,
    reconcile: impl std::future::Future<Output = Result<Action, Error>>,
) -> Result<Action, Error> {
    let _running = context.reclaim.start();
    let started = std::time::Instant::now();
    let result = match std::panic::AssertUnwindSafe(reconcile).catch_unwind().await {
        Ok(result) => result,
        Err(panic) => Err(Error::Panic(panic_message(panic.as_ref()))),
    };
    if result.is_ok() {
        context
            .reconcile_failures
            .forget(&backoff_key(controller, object));
    }
    let outcome = match &result {
        Ok(_) => "success",
        Err(error) => error.outcome(),
    };
    context
        .metrics
        .reconcile_total
        .with_label_values(&[controller, outcome])
        .inc();
    context
        .metrics
        .reconcile_duration_seconds
        .with_label_values(&[controller])
        .observe(started.elapsed().as_secs_f64());
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conflict_is_told_from_other_refusals() {
        let refused = |code: u16, reason: &str| {
            Error::Kube(kube::Error::Api(Box::new(
                kube::core::Status::failure("refused", reason).with_code(code),
            )))
        };
        assert!(refused(409, "Conflict").is_conflict());
        assert_eq!(refused(409, "Conflict").outcome(), "conflict");
        assert_eq!(refused(422, "Invalid").outcome(), "error");
        assert!(!refused(409, "AlreadyExists").is_conflict());
        assert!(!refused(422, "Invalid").is_conflict());
        assert!(!Error::Identity("no token".into()).is_conflict());
    }
}
