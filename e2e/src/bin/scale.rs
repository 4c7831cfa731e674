//! The scale harness (`pequod_e2e::scale`): `cargo run --release -p pequod-e2e --bin scale
//! -- --pequod target/release/pequod -n 1000` prints what the operator costs over N
//! Transforms, in both orders (the operator first, the Transforms first).

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use pequod_e2e::scale::{Scenario, Start, describe, run};

/// Runs the real `pequod run` over many Transforms against the test API server.
#[derive(Debug, Parser)]
#[command(name = "scale")]
struct Args {
    /// The `pequod` binary (a release build measures what users run).
    #[arg(long, default_value = "target/release/pequod")]
    pequod: PathBuf,
    /// How many Transforms.
    #[arg(short = 'n', long, default_value_t = 1000)]
    transforms: usize,
    /// Over how many namespaces.
    #[arg(long, default_value_t = 10)]
    namespaces: usize,
    /// How long simulated Deployments take to become available.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    readiness_delay: Duration,
    /// Only this order (operator-first or transforms-first); both by default.
    #[arg(long)]
    only: Option<String>,
    /// How long to wait for every Transform to be Ready (and for the resync).
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    deadline: Duration,
    /// Shard replicas besides the unsharded one (the Transforms are spread evenly).
    #[arg(long, default_value_t = 0)]
    shards: usize,
    /// Quiet resyncs after the first, each reported by the operator's memory after it.
    #[arg(long, default_value_t = 0)]
    extra_resyncs: usize,
    /// Run `pequod module impact DIR` over the Transforms once they are Ready, and time it.
    #[arg(long, value_name = "DIR")]
    impact: Option<PathBuf>,
    /// The Transforms' module from a ConfigMap in each namespace, holding the files at the
    /// top of this module directory (e.g. platforms/webservice); the embedded webservice
    /// module by default.
    #[arg(long, value_name = "DIR")]
    config_map_module: Option<PathBuf>,
    /// Extra flags for `pequod run` (repeatable).
    #[arg(long = "operator-arg", allow_hyphen_values = true)]
    operator_args: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let starts = match args.only.as_deref() {
        Some("operator-first") => vec![Start::OperatorFirst],
        Some("transforms-first") => vec![Start::TransformsFirst],
        Some(other) => {
            anyhow::bail!("--only takes operator-first or transforms-first, not {other}")
        }
        None => vec![Start::OperatorFirst, Start::TransformsFirst],
    };
    for start in starts {
        let scenario = Scenario {
            operator_args: args.operator_args.clone(),
            namespaces: args.namespaces,
            readiness_delay: args.readiness_delay,
            start,
            deadline: args.deadline,
            shards: args.shards,
            extra_resyncs: args.extra_resyncs,
            impact: args.impact.clone(),
            ..Scenario::webservice(args.pequod.clone(), args.transforms)
        };
        let scenario = match &args.config_map_module {
            Some(dir) => scenario.with_config_map_module("webservice", dir)?,
            None => scenario,
        };
        let report = run(&scenario).await?;
        print!("{}", describe(&report));
    }
    Ok(())
}
