//! Runs the test API server by hand: `cargo run --release -p pequod-e2e --bin
//! test-apiserver -- --addr 127.0.0.1:6443 --kubeconfig ./test.kubeconfig --simulate`.

use anyhow::Context;
use clap::Parser;
use pequod_e2e::{Config, TestApiServer};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A test Kubernetes API server on loopback, with an optional readiness simulator.
#[derive(Debug, Parser)]
#[command(name = "test-apiserver", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:6443")]
    addr: SocketAddr,
    /// Where to write a kubeconfig for this server.
    #[arg(long, default_value = "./test.kubeconfig")]
    kubeconfig: PathBuf,
    /// Run the readiness simulator (Deployments Available, CNPG Clusters Ready, ...).
    #[arg(long)]
    simulate: bool,
    /// How long simulated workloads take to become ready (e.g. `2s`, `500ms`).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    readiness_delay: Duration,
    /// Load the CustomResourceDefinitions in this directory or file first (repeatable).
    #[arg(long = "crds", value_name = "DIR")]
    crds: Vec<PathBuf>,
    /// Enforce RBAC for every user outside `system:masters` (the kubeconfig written is the
    /// admin's; act as others with `kubectl --as`).
    #[arg(long)]
    authorize: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let server = TestApiServer::start(Config {
        addr: args.addr,
        kubeconfig: Some(args.kubeconfig.clone()),
        simulate: args.simulate,
        readiness_delay: args.readiness_delay,
        crds: args.crds,
        authorize: args.authorize,
        ..Config::default()
    })
    .await
    .context("starting the test API server")?;
    eprintln!(
        "serving {} (kubeconfig {}); Ctrl-C stops",
        server.url(),
        server.kubeconfig().display()
    );
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    server.stop().await;
    Ok(())
}
