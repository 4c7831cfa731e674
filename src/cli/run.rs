//! `pequod run`: the operator.

use std::net::SocketAddr;
use std::sync::Arc;

use clap::Args;
use futures::FutureExt;

use super::{CliError, EvalArgs, exit};
use crate::controller::{
    self, Context, Feeds, LeaderConfig, Leadership, OperatorConfig, PolicyFlags, Shard,
};
use crate::exec::ExecConfig;
use crate::metrics::{Metrics, ReadyState};
use crate::module::ModuleSources;

/// Flags of `pequod run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Address of the Prometheus `/metrics` endpoint.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Address of the `/healthz` and `/readyz` probes.
    #[arg(long, default_value = "0.0.0.0:8081")]
    pub health_addr: SocketAddr,
    /// Reconcile only the Transforms and ResourceGraphs of this namespace.
    #[arg(long)]
    pub namespace: Option<String>,
    /// At most this many object writes at once, over all graphs.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub max_concurrent_applies: u64,
    /// Let graphs write objects outside their Transform's namespace.
    #[arg(long)]
    pub allow_cross_namespace: bool,
    /// Let graphs write cluster-scoped objects.
    #[arg(long)]
    pub allow_cluster_scoped: bool,
    /// Run the controllers only while this replica holds the leader Lease.
    #[arg(long)]
    pub leader_elect: bool,
    /// Namespace of the leader Lease (default: $POD_NAMESPACE, else the kubeconfig's).
    #[arg(long)]
    pub leader_election_namespace: Option<String>,
    /// Name of the leader Lease (a shard's is this name, a dash and its key).
    #[arg(long, default_value = "pequod-leader")]
    pub leader_election_id: String,
    /// Reconcile only the Transforms (and their ResourceGraphs) labelled
    /// `sharding.pequod.io/key=KEY`; without it, only those without that label.
    #[arg(long, value_name = "KEY")]
    pub shard: Option<String>,
    /// How long a leader keeps the Lease without renewing it (e.g. 15s).
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub leader_election_lease_duration: std::time::Duration,
    /// How often modules referenced by a tag are resolved again (a new digest re-renders).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub module_resync: std::time::Duration,
    /// When a tag, branch or ConfigMap moves to a new digest, at most this many of the
    /// Transforms using it (a count, or a percentage of them) are on the new digest and not
    /// Ready at once; a Transform that fails on it halts the rollout.
    #[arg(long, default_value = "25%", value_parser = clap::value_parser!(crate::controller::rollout::MaxUnavailable))]
    pub rollout_max_unavailable: crate::controller::rollout::MaxUnavailable,
    /// Registries (`host:port`) spoken to over plain HTTP (repeatable).
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub insecure_registries: Vec<String>,
    /// A cluster policy module whose policies every graph must pass (repeatable):
    /// `embedded:NAME` (shipped: baseline), `configmap:NAME` (in the operator's namespace),
    /// a directory, `git+URL` or an OCI artifact. Loaded again at every --module-resync and
    /// when its ConfigMap changes.
    #[arg(long = "policy-module", value_name = "REF")]
    pub policy_modules: Vec<String>,
    /// The configuration of the policy module named NAME (its metadata.name): a YAML or
    /// JSON file, or `configmap:CM` (its `config.yaml`, in the operator's namespace)
    /// (repeatable).
    #[arg(long = "policy-config", value_name = "NAME=SOURCE", value_parser = policy_config)]
    pub policy_configs: Vec<(String, String)>,
    /// A Secret in the operator's namespace with the credentials of remote policy modules:
    /// a `kubernetes.io/dockerconfigjson` for OCI, Git auth keys for Git (as a Transform's
    /// pullSecretRef).
    #[arg(long, value_name = "NAME")]
    pub policy_pull_secret: Option<String>,
    /// Where Git mirrors and fetched OCI modules are kept (default: ~/.cache/pequod).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<std::path::PathBuf>,
    /// Most disk the cache of OCI modules may take, in MiB (least recently used out first).
    #[arg(long, default_value_t = 512)]
    pub cache_max_mib: u64,
    /// OCI modules unused this long leave the disk cache (e.g. 168h).
    #[arg(long, default_value = "168h", value_parser = humantime::parse_duration)]
    pub cache_ttl: std::time::Duration,
    /// Let Git module URLs be local paths or file:// (they read the operator's own disk,
    /// other tenants' mirrors included: for tests and single-tenant setups).
    #[arg(long)]
    pub allow_local_git: bool,
    /// The ServiceAccount (in each Transform's namespace) that Transforms without
    /// `spec.serviceAccountName` act as, by impersonation: the multi-tenant lockdown.
    /// Without it such Transforms act as the operator (single tenant).
    #[arg(long, value_name = "NAME")]
    pub default_service_account: Option<String>,
    /// Execute ResourceGraphs that no Transform controls (written by hand); refused
    /// otherwise.
    #[arg(long)]
    pub allow_standalone_graphs: bool,
    /// Allowed module origins (repeatable, or comma-separated): `oci://HOST/PATH*`,
    /// `git::URL*`, `embedded[:NAME]`, `configmap[:NAME]`, `inline`; `*` matches anything.
    /// Default: every origin.
    #[arg(long = "module-sources", value_name = "PATTERN", value_delimiter = ',')]
    pub module_sources: Vec<String>,
    /// Evaluation limits.
    #[command(flatten)]
    pub eval: EvalArgs,
}

/// `NAME=SOURCE` of `--policy-config`.
fn policy_config(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, source)) if !name.is_empty() && !source.is_empty() => {
            Ok((name.to_string(), source.to_string()))
        }
        _ => Err(format!(
            "expected NAME=FILE or NAME=configmap:CM, found `{text}`"
        )),
    }
}

/// Runs the operator until SIGINT or SIGTERM.
pub async fn run(args: RunArgs) -> Result<(), CliError> {
    let unreachable = |e: &dyn std::fmt::Display| {
        CliError::new(
            exit::INTERNAL,
            format!("cannot connect to the Kubernetes API (KUBECONFIG or in-cluster config): {e}"),
        )
    };
    let kube_config = kube::Config::infer().await.map_err(|e| unreachable(&e))?;
    let module_sources = ModuleSources::new(&args.module_sources)
        .map_err(|e| CliError::new(exit::USAGE, format!("--module-sources: {e}")))?;
    let shard = Shard::new(args.shard.as_deref())
        .map_err(|e| CliError::new(exit::USAGE, format!("--shard: {e}")))?;
    let metrics = Arc::new(Metrics::new());
    // The operator's own namespace: its Lease and its policy modules' ConfigMaps.
    let own_namespace = std::env::var("POD_NAMESPACE")
        .ok()
        .unwrap_or_else(|| kube_config.default_namespace.clone());
    let policies = PolicyFlags {
        modules: args.policy_modules.clone(),
        configs: args.policy_configs.clone(),
        namespace: own_namespace.clone(),
        pull_secret: args.policy_pull_secret.clone(),
    };
    let config = OperatorConfig {
        namespace: args.namespace.clone(),
        max_concurrent_applies: usize::try_from(args.max_concurrent_applies).unwrap_or(16),
        exec: ExecConfig {
            allow_cross_namespace: args.allow_cross_namespace,
            allow_cluster_scoped: args.allow_cluster_scoped,
        },
        insecure_registries: args.insecure_registries.clone(),
        module_resync: args.module_resync,
        rollout_max_unavailable: args.rollout_max_unavailable,
        cache_dir: args
            .cache_dir
            .clone()
            .unwrap_or_else(crate::module::git::default_cache_dir),
        allow_local_git: args.allow_local_git,
        cache_max_bytes: args.cache_max_mib.saturating_mul(1 << 20),
        cache_ttl: args.cache_ttl,
        default_service_account: args.default_service_account.clone(),
        allow_standalone_graphs: args.allow_standalone_graphs,
        module_sources,
        limits: args.eval.limits(),
        shard: shard.clone(),
        policies,
    };
    let (context, feeds) =
        Context::new(kube_config, args.eval.renderer()?, metrics.clone(), config)
            .map_err(|e| unreachable(&e))?;
    let context = Arc::new(context);
    let client = context.client.clone();
    let leader = LeaderConfig {
        namespace: args
            .leader_election_namespace
            .clone()
            .unwrap_or(own_namespace),
        name: shard.lease_name(&args.leader_election_id),
        identity: identity(),
        duration_seconds: args.leader_election_lease_duration.as_secs(),
    };
    let shutdown = shutdown_signal().shared();
    let ready = ReadyState::default();
    let server = crate::metrics::bind(
        metrics,
        ready.clone(),
        args.metrics_addr,
        args.health_addr,
        shutdown.clone(),
    )
    .await
    .map_err(|e| {
        CliError::new(
            exit::INTERNAL,
            format!("cannot serve metrics and probes: {e}"),
        )
    })?;
    let server = tokio::spawn(server);
    let outcome = if args.leader_elect {
        ready.standby();
        lead_then_run(client, &leader, context, feeds, ready, shutdown).await
    } else {
        context.metrics.leader.set(1);
        tracing::info!(share = %context.config.shard.selector(), "pequod operator started");
        controller::run(context, feeds, ready, shutdown).await;
        Ok(())
    };
    if outcome.is_err() {
        server.abort();
        return outcome;
    }
    match server.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(CliError::new(
            exit::INTERNAL,
            format!("metrics server: {error}"),
        )),
        Err(error) => Err(CliError::new(
            exit::INTERNAL,
            format!("metrics server: {error}"),
        )),
    }
}

/// Waits for the Lease (or shutdown), runs the controllers while it is held, and stops
/// with an error when it is lost: a restarted replica competes again.
async fn lead_then_run(
    client: kube::Client,
    config: &LeaderConfig,
    context: Arc<Context>,
    feeds: Feeds,
    ready: ReadyState,
    shutdown: futures::future::Shared<impl std::future::Future<Output = ()> + Send + 'static>,
) -> Result<(), CliError> {
    let mut leadership = Leadership::start(client, config)
        .await
        .map_err(|e| CliError::new(exit::INTERNAL, e.to_string()))?;
    tracing::info!(lease = %config.name, namespace = %config.namespace, identity = %config.identity, "waiting for leadership");
    tokio::select! {
        () = leadership.acquired() => {}
        () = shutdown.clone() => return Ok(()),
    }
    context.metrics.leader.set(1);
    tracing::info!(identity = %config.identity, "leading: pequod operator started");
    ready.starting();
    let controllers = controller::run(context.clone(), feeds, ready, shutdown);
    tokio::select! {
        () = controllers => Ok(()),
        () = leadership.lost() => {
            // Stop at once, another replica may lead already: dropping the controllers
            // cancels their reconciles.
            context.metrics.leader.set(0);
            Err(CliError::new(exit::INTERNAL, "lost the leader Lease: stopping"))
        }
    }
}

/// This replica's name for leader election: the Pod name, else host name and process id.
fn identity() -> String {
    std::env::var("POD_NAME").unwrap_or_else(|_| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "pequod".to_string());
        format!("{host}-{}", std::process::id())
    })
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
    tracing::info!("shutting down");
}
