//! The command line: `pequod run`, `pequod render`, `pequod module`, `pequod crds`,
//! `pequod bench`, and the hidden worker.

mod bench;
mod diff;
mod impact;
mod module;
mod output;
mod policy;
mod render;
mod run;
mod status;
mod yaml;

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::plan::{DEFAULT_MAX_GRAPH_BYTES, Limits};
use crate::render::worker::WorkerLimits;
use crate::render::{
    DEFAULT_CACHE_MIB, DEFAULT_RECYCLE_RESIDENT_MIB, MIN_MEMORY_MIB, PoolConfig, RenderError,
    Renderer,
};

pub use output::OutputFormat;

/// Pequod turns platform modules written in Nickel into running Kubernetes objects.
#[derive(Debug, Parser)]
#[command(name = "pequod", version, about, long_about = None)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the operator: the Transform and ResourceGraph controllers.
    Run(run::RunArgs),
    /// Show a Transform from the cluster: conditions, module, outputs and its graph's nodes.
    Status(status::StatusArgs),
    /// Show a Transform's graph as a tree of nodes with phase, age and message.
    Tree(status::StatusArgs),
    /// Render a Transform offline and print its ResourceGraph (or manifests, or a diagram).
    Render(render::RenderArgs),
    /// Show what applying a Transform would change in the cluster: a server-side dry run of
    /// every object as the Transform's identity, and what would be pruned. Exit 0: no
    /// change, 1: changes, 2 or more: error.
    Diff(diff::DiffArgs),
    /// Print the Transform and ResourceGraph CustomResourceDefinitions as YAML.
    Crds,
    /// Work with modules: check a module directory against its examples.
    #[command(subcommand)]
    Module(module::ModuleCommand),
    /// Measure render latency, throughput and memory, and print the figures.
    Bench(bench::BenchArgs),
    /// Evaluation worker (started by pequod itself; reads requests on stdin).
    #[command(name = "__worker", hide = true)]
    Worker(WorkerArgs),
}

/// Limits of the evaluation sandbox, shared by every command that renders.
#[derive(Debug, Clone, Args)]
pub struct EvalArgs {
    /// Deadline of one module evaluation (e.g. 10s, 500ms).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub eval_timeout: Duration,
    /// Address-space limit of an evaluation worker, in MiB.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u64).range(MIN_MEMORY_MIB..=1 << 20))]
    pub eval_memory: u64,
    /// Number of evaluation worker processes.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub eval_workers: u64,
    /// An evaluation worker is replaced once its private resident memory (not the pages of
    /// the binary it shares with the operator) passes this many MiB.
    #[arg(long, default_value_t = DEFAULT_RECYCLE_RESIDENT_MIB, value_parser = clap::value_parser!(u64).range(16..=1 << 20))]
    pub eval_recycle_mib: u64,
    /// Memory budget of the cache of rendered graphs, in MiB (estimated).
    #[arg(long, default_value_t = DEFAULT_CACHE_MIB)]
    pub render_cache_mib: u64,
    /// The largest ResourceGraph a render may produce, in bytes of JSON (etcd stores at
    /// most 1.5 MiB in one object, status included).
    #[arg(long, default_value_t = DEFAULT_MAX_GRAPH_BYTES)]
    pub max_graph_bytes: usize,
}

impl EvalArgs {
    /// The bounds of a plan these flags describe.
    pub fn limits(&self) -> Limits {
        Limits {
            max_graph_bytes: self.max_graph_bytes,
        }
    }

    /// A renderer with the pool and cache these flags describe.
    pub fn renderer(&self) -> Result<Renderer, CliError> {
        let cache_bytes = self.render_cache_mib.saturating_mul(1 << 20);
        Ok(Renderer::new(self.pool_config()?, cache_bytes))
    }

    /// The worker-pool settings these flags describe, with this binary as the worker.
    pub fn pool_config(&self) -> Result<PoolConfig, CliError> {
        let program = std::env::current_exe().map_err(|e| {
            CliError::new(
                exit::INTERNAL,
                format!("cannot locate the pequod binary: {e}"),
            )
        })?;
        let mut config = PoolConfig::with_program(program);
        config.timeout = self.eval_timeout;
        config.memory_mib = self.eval_memory;
        config.workers = usize::try_from(self.eval_workers).unwrap_or(1);
        config.recycle_resident_mib = self.eval_recycle_mib;
        Ok(config)
    }
}

/// How to reach OCI registries, shared by every command that fetches modules.
#[derive(Debug, Clone, Args)]
pub struct RegistryArgs {
    /// A registry (`host:port`) to speak plain HTTP to (repeatable).
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub insecure_registries: Vec<String>,
    /// Docker config file with registry credentials (default: $DOCKER_CONFIG/config.json,
    /// else ~/.docker/config.json, when it exists).
    #[arg(long, value_name = "FILE")]
    pub docker_config: Option<std::path::PathBuf>,
}

impl RegistryArgs {
    /// A registry client with these flags and the credentials of the docker config.
    pub fn registry(&self) -> Result<crate::module::oci::Registry, CliError> {
        let default = std::env::var_os("DOCKER_CONFIG")
            .map(|dir| std::path::PathBuf::from(dir).join("config.json"))
            .or_else(|| {
                std::env::var_os("HOME")
                    .map(|home| std::path::PathBuf::from(home).join(".docker/config.json"))
            });
        let path = self
            .docker_config
            .clone()
            .or(default.filter(|p| p.exists()));
        let config = match path {
            None => None,
            Some(path) => {
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    CliError::new(
                        exit::MODULE_UNAVAILABLE,
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                Some(serde_json::from_str(&text).map_err(|e| {
                    CliError::new(
                        exit::MODULE_UNAVAILABLE,
                        format!("{}: not a docker config (JSON): {e}", path.display()),
                    )
                })?)
            }
        };
        Ok(crate::module::oci::Registry::new(
            &self.insecure_registries,
            config,
        ))
    }
}

/// Flags of the hidden worker command.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Address-space limit in MiB.
    #[arg(long, default_value_t = 512)]
    pub memory_mib: u64,
    /// Stack of the evaluating thread in MiB.
    #[arg(long, default_value_t = 64)]
    pub stack_mib: u64,
}

/// A failed command: a one-line message, optional detail, and an exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CliError {
    code: u8,
    message: String,
    detail: Option<String>,
}

/// Exit codes, documented in README.md.
pub mod exit {
    /// The module failed to render: contract violation, Nickel error, graph integrity,
    /// evaluation limits.
    pub const RENDER_FAILED: u8 = 1;
    /// Bad command line (clap's own code).
    pub const USAGE: u8 = 2;
    /// The Transform file is unreadable or not a valid Transform.
    pub const BAD_INPUT_FILE: u8 = 3;
    /// The module could not be resolved (unknown embedded module, unreadable directory, ...).
    pub const MODULE_UNAVAILABLE: u8 = 4;
    /// Pequod itself could not do its job: no runtime, no worker binary, output failed,
    /// no connection to the API server.
    pub const INTERNAL: u8 = 5;
    /// `pequod status`/`tree`/`diff`: the Transform does not exist.
    pub const NOT_FOUND: u8 = 6;
    /// `pequod diff`: the change could not be previewed in full: the render failed, or the
    /// API server refused a dry run (the pass would fail on that object).
    pub const NOT_PREVIEWED: u8 = 7;
    /// `pequod diff`: the cluster would change (as `kubectl diff`).
    pub const CHANGES: u8 = 1;
}

impl CliError {
    /// A failed evaluation of a module, `what` saying which: the module's fault, unless no
    /// worker could be started or talked to (Pequod's failure).
    pub fn evaluation(what: &str, error: RenderError) -> CliError {
        let code = match error {
            RenderError::Worker(_) => exit::INTERNAL,
            _ => exit::RENDER_FAILED,
        };
        CliError {
            code,
            message: format!("{what}: {error}"),
            detail: error.detail().map(str::to_string),
        }
    }

    /// An error with an exit code and a one-line message.
    pub fn new(code: u8, message: impl Into<String>) -> CliError {
        CliError {
            code,
            message: message.into(),
            detail: None,
        }
    }

    /// The multi-line detail printed after the message.
    pub fn detail(&self) -> Option<&str> {
        self.detail.as_deref()
    }

    /// The process exit code.
    pub fn exit_code(&self) -> u8 {
        self.code
    }
}

impl From<RenderError> for CliError {
    fn from(error: RenderError) -> CliError {
        CliError::evaluation("render failed", error)
    }
}

/// Sets up `tracing` on stderr; `RUST_LOG` selects levels (default `warn`).
pub fn init_logging(cli: &Cli) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    // A second initialisation (tests) is harmless: the first subscriber stays.
    let _ = match cli.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Runs a parsed command line; `Ok` carries the exit code (0, or [`exit::CHANGES`] when
/// `pequod diff` finds changes).
pub fn run(cli: Cli) -> Result<u8, CliError> {
    let done = match cli.command {
        Command::Worker(args) => crate::render::worker::run(WorkerLimits {
            memory_bytes: args.memory_mib.saturating_mul(1 << 20),
            stack_bytes: usize::try_from(args.stack_mib.saturating_mul(1 << 20))
                .unwrap_or(usize::MAX),
        })
        .map_err(|e| CliError::new(exit::INTERNAL, format!("worker: {e}"))),
        Command::Crds => print_crds(),
        Command::Run(args) => {
            crate::controller::memory::tune_allocator();
            runtime()?.block_on(run::run(args))
        }
        Command::Status(args) => runtime()?.block_on(status::run(args, status::View::Status)),
        Command::Tree(args) => runtime()?.block_on(status::run(args, status::View::Tree)),
        Command::Render(args) => runtime()?.block_on(render::run(args)),
        Command::Diff(args) => return runtime()?.block_on(diff::run(args)),
        Command::Bench(args) => runtime()?.block_on(bench::run(args)),
        Command::Module(command) => runtime()?.block_on(module::run(command)),
    };
    done.map(|()| 0)
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            CliError::new(
                exit::INTERNAL,
                format!("cannot start the async runtime: {e}"),
            )
        })
}

fn print_crds() -> Result<(), CliError> {
    let mut out = String::new();
    for crd in crate::api::crds() {
        let yaml = yaml::to_string(&crd)
            .map_err(|e| CliError::new(exit::INTERNAL, format!("cannot serialize CRD: {e}")))?;
        out.push_str("---\n");
        out.push_str(&yaml);
    }
    write_stdout(&out)
}

/// Writes command output to stdout. A closed pipe (`pequod render | head`) is not an error.
fn write_stdout(text: &str) -> Result<(), CliError> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(CliError::new(
            exit::INTERNAL,
            format!("cannot write output: {e}"),
        )),
        _ => Ok(()),
    }
}
