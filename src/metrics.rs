//! The operator's Prometheus metrics (listed in docs/operator.md), all prefixed `pequod_`,
//! and the HTTP endpoints that serve them with the health probes. Counters of events that
//! a component sees (render cache, module cache, worker pool) are owned by that component
//! and registered here, never derived from differences of totals.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use dashmap::DashMap;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::api::{NodePhase, ResourceGraphStatus};

/// Every metric the operator exports.
pub struct Metrics {
    registry: Registry,
    /// Reconciles by controller and result (`success`, `error`).
    pub reconcile_total: IntCounterVec,
    /// Reconcile latency by controller.
    pub reconcile_duration_seconds: HistogramVec,
    /// Module resolutions by source type and result.
    pub module_fetch_total: IntCounterVec,
    /// Module resolution latency by source type.
    pub module_fetch_duration_seconds: HistogramVec,
    /// Object writes by result.
    pub apply_total: IntCounterVec,
    /// Object write latency.
    pub apply_duration_seconds: Histogram,
    /// Objects in the inventories of all graphs.
    pub resources_managed: IntGauge,
    /// Nodes of all graphs by phase.
    pub graph_nodes: IntGaugeVec,
    /// From render to every node Ready.
    pub graph_execution_duration_seconds: Histogram,
    /// 1 while this replica holds the leader Lease (or runs without leader election).
    pub leader: IntGauge,
    /// Transforms a staged rollout holds back from a new digest, by module reference and
    /// state (`waiting`, `halted`).
    pub module_rollouts: IntGaugeVec,
    per_graph: DashMap<String, GraphRecord>,
}

/// What was recorded for one graph: nodes by phase, and inventory size.
type GraphRecord = (HashMap<&'static str, i64>, i64);

/// The node phases as metric labels.
const PHASES: [(NodePhase, &str); 8] = [
    (NodePhase::Pending, "Pending"),
    (NodePhase::Applying, "Applying"),
    (NodePhase::WaitingReady, "WaitingReady"),
    (NodePhase::Ready, "Ready"),
    (NodePhase::Failed, "Failed"),
    (NodePhase::Blocked, "Blocked"),
    (NodePhase::Adopted, "Adopted"),
    (NodePhase::Orphaned, "Orphaned"),
];

fn register<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: M) -> M {
    // Names are fixed and distinct: registration fails only on a programming error.
    if let Err(error) = registry.register(Box::new(metric.clone())) {
        tracing::error!(%error, "metric registration failed");
    }
    metric
}

/// A counter `pequod_<name>`, not registered anywhere yet. Components that see an event
/// (the render cache, the module cache, the worker pool) own its counter and increment it
/// where it happens; the operator registers their counters with [`Metrics::register`].
pub fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::with_opts(Opts::new(name, help).namespace("pequod"))
        .expect("static metric definition")
}

/// A histogram `pequod_<name>` with `buckets`, not registered anywhere yet (see [`counter`]).
pub fn histogram(name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    Histogram::with_opts(
        HistogramOpts::new(name, help)
            .namespace("pequod")
            .buckets(buckets),
    )
    .expect("static metric definition")
}

/// Buckets for latencies from a millisecond to about 16 s.
pub fn fast_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.001, 2.0, 15).expect("static buckets")
}

/// Metrics a component owns, for [`Metrics::register`].
pub type Collectors = Vec<Box<dyn prometheus::core::Collector>>;

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let metric = IntCounterVec::new(Opts::new(name, help).namespace("pequod"), labels)
        .expect("static metric definition");
    register(registry, metric)
}

fn histogram_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> HistogramVec {
    let metric = HistogramVec::new(
        HistogramOpts::new(name, help)
            .namespace("pequod")
            .buckets(buckets),
        labels,
    )
    .expect("static metric definition");
    register(registry, metric)
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let metric = IntGauge::with_opts(Opts::new(name, help).namespace("pequod"))
        .expect("static metric definition");
    register(registry, metric)
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// All metrics, registered in a registry of their own.
    pub fn new() -> Metrics {
        let r = Registry::new();
        let fast = fast_buckets();
        let slow = prometheus::exponential_buckets(0.1, 2.0, 14).expect("static buckets");
        let graph_nodes = IntGaugeVec::new(
            Opts::new("graph_nodes", "Nodes of all ResourceGraphs by phase").namespace("pequod"),
            &["phase"],
        )
        .expect("static metric definition");
        let graph_nodes = register(&r, graph_nodes);
        let module_rollouts = register(
            &r,
            IntGaugeVec::new(
                Opts::new(
                    "module_rollouts",
                    "Transforms a staged rollout holds back from a new digest, by module reference and state (waiting, halted)",
                )
                .namespace("pequod"),
                &["module", "state"],
            )
            .expect("static metric definition"),
        );
        for (_, phase) in PHASES {
            graph_nodes.with_label_values(&[phase]).set(0);
        }
        Metrics {
            reconcile_total: counter_vec(
                &r,
                "reconcile_total",
                "Reconciles by controller and result",
                &["controller", "result"],
            ),
            reconcile_duration_seconds: histogram_vec(
                &r,
                "reconcile_duration_seconds",
                "Reconcile latency by controller",
                &["controller"],
                fast.clone(),
            ),
            module_fetch_total: counter_vec(
                &r,
                "module_fetch_total",
                "Module resolutions by source type and result",
                &["type", "result"],
            ),
            module_fetch_duration_seconds: histogram_vec(
                &r,
                "module_fetch_duration_seconds",
                "Module resolution latency by source type",
                &["type"],
                fast.clone(),
            ),
            apply_total: counter_vec(&r, "apply_total", "Object writes by result", &["result"]),
            apply_duration_seconds: register(
                &r,
                histogram("apply_duration_seconds", "Object write latency", fast),
            ),
            resources_managed: gauge(
                &r,
                "resources_managed",
                "Objects in the inventories of all ResourceGraphs",
            ),
            graph_nodes,
            graph_execution_duration_seconds: register(
                &r,
                histogram(
                    "graph_execution_duration_seconds",
                    "Time from render to every node Ready",
                    slow,
                ),
            ),
            leader: gauge(&r, "leader", "1 while this replica is the leader"),
            module_rollouts,
            registry: r,
            per_graph: DashMap::new(),
        }
    }

    /// Registers metrics a component owns (the render cache, the module cache, the worker
    /// pool), so that they are exported with these.
    pub fn register(&self, collectors: Collectors) {
        for collector in collectors {
            if let Err(error) = self.registry.register(collector) {
                tracing::error!(%error, "metric registration failed");
            }
        }
    }

    /// Records a graph's node phases and inventory size (`None`: the graph is gone). The
    /// gauges move by the difference from what was recorded for the graph before, so a
    /// record costs the same however many graphs there are.
    pub fn record_graph(&self, key: &str, status: Option<&ResourceGraphStatus>) {
        let recorded = status.map(|status| {
            let mut counts: HashMap<&'static str, i64> = HashMap::new();
            for node in status.nodes.values() {
                if let Some((_, label)) = PHASES.iter().find(|(p, _)| *p == node.phase) {
                    *counts.entry(label).or_default() += 1;
                }
            }
            let managed = i64::try_from(status.inventory.len()).unwrap_or(i64::MAX);
            (counts, managed)
        });
        let before = match &recorded {
            Some(recorded) => self.per_graph.insert(key.to_string(), recorded.clone()),
            None => self.per_graph.remove(key).map(|(_, before)| before),
        };
        let count = |record: &Option<GraphRecord>, label: &str| {
            record
                .as_ref()
                .and_then(|(counts, _)| counts.get(label).copied())
                .unwrap_or(0)
        };
        for (_, label) in PHASES {
            let delta = count(&recorded, label) - count(&before, label);
            if delta != 0 {
                self.graph_nodes.with_label_values(&[label]).add(delta);
            }
        }
        let managed = |record: &Option<GraphRecord>| record.as_ref().map_or(0, |(_, m)| *m);
        self.resources_managed
            .add(managed(&recorded) - managed(&before));
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut buffer = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::error!(%error, "cannot encode metrics");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

/// What `/readyz` answers: ready once this replica's controllers have synced their caches
/// (`ok: leader`), or while it waits for the leader Lease as a standby (`ok: standby`); not
/// ready while it starts or syncs.
#[derive(Clone, Debug, Default)]
pub struct ReadyState(Arc<std::sync::atomic::AtomicU8>);

const STARTING: u8 = 0;
const STANDBY: u8 = 1;
const LEADING: u8 = 2;

impl ReadyState {
    /// Starting, or syncing the caches after becoming the leader: not ready.
    pub fn starting(&self) {
        self.0.store(STARTING, Ordering::Relaxed);
    }

    /// Waiting for the leader Lease.
    pub fn standby(&self) {
        self.0.store(STANDBY, Ordering::Relaxed);
    }

    /// Leading, the controllers' caches synced.
    pub fn leading(&self) {
        self.0.store(LEADING, Ordering::Relaxed);
    }

    /// The answer of `/readyz`.
    fn answer(&self) -> (StatusCode, &'static str) {
        match self.0.load(Ordering::Relaxed) {
            LEADING => (StatusCode::OK, "ok: leader"),
            STANDBY => (StatusCode::OK, "ok: standby"),
            _ => (StatusCode::SERVICE_UNAVAILABLE, "not ready: syncing caches"),
        }
    }
}

/// Binds `/metrics` on `metrics_addr` and `/healthz`, `/readyz` on `health_addr` (one
/// listener when the addresses are equal); the returned future serves them until
/// `shutdown` resolves. Binding first makes a taken port an error at startup.
pub async fn bind(
    metrics: Arc<Metrics>,
    ready: ReadyState,
    metrics_addr: SocketAddr,
    health_addr: SocketAddr,
    shutdown: impl std::future::Future<Output = ()> + Send + Clone + 'static,
) -> std::io::Result<impl std::future::Future<Output = std::io::Result<()>>> {
    let metrics_routes = axum::Router::new().route(
        "/metrics",
        get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    metrics.encode(),
                )
            }
        }),
    );
    let health_routes = axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let (status, body) = ready.answer();
                async move { (status, body).into_response() }
            }),
        );
    let routes = if metrics_addr == health_addr {
        vec![(metrics_addr, metrics_routes.merge(health_routes))]
    } else {
        vec![(metrics_addr, metrics_routes), (health_addr, health_routes)]
    };
    let mut servers = Vec::new();
    for (addr, router) in routes {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        tracing::info!(%addr, "serving metrics and probes");
        servers.push(axum::serve(listener, router).with_graceful_shutdown(shutdown.clone()));
    }
    Ok(async move {
        for result in
            futures::future::join_all(servers.into_iter().map(|s| async move { s.await })).await
        {
            result?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::NodeStatus;

    #[test]
    fn graph_gauges_sum_over_graphs() {
        let metrics = Metrics::new();
        let mut status = ResourceGraphStatus::default();
        status
            .nodes
            .insert("a".into(), NodeStatus::new(NodePhase::Ready));
        status
            .nodes
            .insert("b".into(), NodeStatus::new(NodePhase::Pending));
        metrics.record_graph("ns/one", Some(&status));
        metrics.record_graph("ns/two", Some(&status));
        assert_eq!(metrics.graph_nodes.with_label_values(&["Ready"]).get(), 2);
        metrics.record_graph("ns/two", None);
        assert_eq!(metrics.graph_nodes.with_label_values(&["Ready"]).get(), 1);
        let text = metrics.encode();
        assert!(
            text.contains("pequod_graph_nodes{phase=\"Pending\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE pequod_apply_duration_seconds histogram"),
            "{text}"
        );
    }
}
