//! `pequod run`: the operator.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Args;
use futures::FutureExt;

use super::{CliError, EvalArgs, exit};
use crate::controller::{self, Context, OperatorConfig};
use crate::exec::ExecConfig;
use crate::metrics::Metrics;

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
    /// Evaluation limits.
    #[command(flatten)]
    pub eval: EvalArgs,
}

/// Runs the operator until SIGINT or SIGTERM.
pub async fn run(args: RunArgs) -> Result<(), CliError> {
    let client = kube::Client::try_default().await.map_err(|e| {
        CliError::new(
            exit::INTERNAL,
            format!("cannot connect to the Kubernetes API (KUBECONFIG or in-cluster config): {e}"),
        )
    })?;
    let metrics = Arc::new(Metrics::new());
    metrics.leader.set(1);
    let config = OperatorConfig {
        namespace: args.namespace.clone(),
        max_concurrent_applies: usize::try_from(args.max_concurrent_applies).unwrap_or(16),
        exec: ExecConfig {
            allow_cross_namespace: args.allow_cross_namespace,
            allow_cluster_scoped: args.allow_cluster_scoped,
        },
    };
    let (sender, receiver) = futures::channel::mpsc::unbounded();
    let context = Arc::new(Context::new(
        client,
        args.eval.renderer()?,
        metrics.clone(),
        config,
        sender,
    ));
    let shutdown = shutdown_signal().shared();
    let ready = Arc::new(AtomicBool::new(false));
    let server = crate::metrics::serve(
        metrics,
        ready.clone(),
        args.metrics_addr,
        args.health_addr,
        shutdown.clone(),
    );
    let server = tokio::spawn(server);
    ready.store(true, Ordering::Relaxed);
    tracing::info!("pequod operator started");
    controller::run(context, receiver, shutdown).await;
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
