//! `pequod module`: commands on module directories and artifacts. `check DIR` renders every
//! example Transform of a module (`DIR/examples/*.yaml`) and fails on any error or policy
//! violation, so a module's examples are its test suite; `publish DIR REF`, `pull REF DIR`
//! and `inspect REF` move modules through OCI registries (docs/distribution.md).

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use super::render::read_transform;
use super::{CliError, EvalArgs, RegistryArgs, exit, write_stdout};
use crate::module::{ModuleBundle, Resolved, oci};
use crate::plan::{Limits, plan};
use crate::render::{InputField, ModuleMetadata, PolicyModule, Presence, Renderer};

/// Subcommands of `pequod module`.
#[derive(Debug, Subcommand)]
pub enum ModuleCommand {
    /// Typecheck a module and render its examples (`examples/*.yaml`); fail on any error or
    /// policy violation.
    Check(CheckArgs),
    /// Push a module directory to an OCI registry as a Pequod module artifact; print its
    /// digest (the same directory always gives the same digest).
    Publish(PublishArgs),
    /// Fetch a module artifact into a directory.
    Pull(PullArgs),
    /// Show a module's metadata and the fields of its Input contract (docs, defaults); for an
    /// artifact also its digest, config and annotations.
    Inspect(InspectArgs),
    /// Render every Transform in the cluster that uses the same module (by name) with this
    /// version of it, and compare with its current graph: unchanged, changed or fails.
    /// Nothing is written.
    Impact(super::impact::ImpactArgs),
}

/// Flags of `pequod module publish`.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The module directory.
    pub dir: PathBuf,
    /// Where to push it: `registry/repository:tag`.
    pub reference: String,
    /// Entrypoint file of the module.
    #[arg(long, default_value = "main.ncl")]
    pub entrypoint: String,
    /// `org.opencontainers.image.source`: the repository URL of the module.
    #[arg(long)]
    pub source: Option<String>,
    /// `org.opencontainers.image.revision`: the commit of the module.
    #[arg(long)]
    pub revision: Option<String>,
    /// Registry access.
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Evaluation limits (the module's metadata is evaluated).
    #[command(flatten)]
    pub eval: EvalArgs,
}

/// Flags of `pequod module pull`.
#[derive(Debug, Args)]
pub struct PullArgs {
    /// The artifact: `registry/repository:tag` or `registry/repository@sha256:…`.
    pub reference: String,
    /// An empty (or new) directory to write the module's files to.
    pub dir: PathBuf,
    /// Registry access.
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// Flags of `pequod module inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A module directory (a path that exists), or an artifact:
    /// `registry/repository:tag` or `registry/repository@sha256:…`.
    pub reference: String,
    /// Entrypoint file of a module directory.
    #[arg(long, default_value = "main.ncl")]
    pub entrypoint: String,
    /// Output format: YAML, JSON, or the Input fields as a Markdown table.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = InspectFormat::Yaml)]
    pub output: InspectFormat,
    /// Registry access.
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Evaluation limits (the module's metadata and Input contract are evaluated).
    #[command(flatten)]
    pub eval: EvalArgs,
}

/// Output formats of `pequod module inspect`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum InspectFormat {
    /// Everything, as YAML.
    Yaml,
    /// Everything, as JSON.
    Json,
    /// The Input fields as a Markdown table, for a module's documentation.
    Markdown,
}

/// Flags of `pequod module check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The module directory.
    pub dir: PathBuf,
    /// Entrypoint file of the module.
    #[arg(long, default_value = "main.ncl")]
    pub entrypoint: String,
    /// Evaluation limits, and the cluster's policy modules (checked over every example).
    #[command(flatten)]
    pub offline: super::render::OfflineArgs,
}

/// Runs a `pequod module` command.
pub async fn run(command: ModuleCommand) -> Result<(), CliError> {
    match command {
        ModuleCommand::Check(args) => check(args).await,
        ModuleCommand::Publish(args) => publish(args).await,
        ModuleCommand::Pull(args) => pull(args).await,
        ModuleCommand::Inspect(args) => inspect(args).await,
        ModuleCommand::Impact(args) => super::impact::run(args).await,
    }
}

fn unavailable(error: impl std::fmt::Display) -> CliError {
    CliError::new(exit::MODULE_UNAVAILABLE, format!("module: {error}"))
}

/// `org.opencontainers.image.created`: `SOURCE_DATE_EPOCH` when set (reproducible builds),
/// else the Unix epoch, so that publishing the same directory gives the same digest.
fn created() -> Result<String, CliError> {
    let seconds = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(text) => text.trim().parse::<i64>().map_err(|_| {
            CliError::new(
                exit::USAGE,
                format!("SOURCE_DATE_EPOCH must be seconds, got `{text}`"),
            )
        })?,
        Err(_) => 0,
    };
    let at = jiff::Timestamp::from_second(seconds)
        .map_err(|e| CliError::new(exit::USAGE, format!("SOURCE_DATE_EPOCH out of range: {e}")))?;
    Ok(at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
}

async fn publish(args: PublishArgs) -> Result<(), CliError> {
    let bundle = ModuleBundle::from_dir(&args.dir, Some(&args.entrypoint)).map_err(unavailable)?;
    let metadata = args
        .eval
        .renderer()?
        .describe(&bundle)
        .await
        .map_err(|e| CliError::evaluation("cannot describe the module", e))?
        .metadata;
    let config = oci::module_config(
        &bundle,
        &metadata.name,
        &metadata.version,
        &metadata.description,
    );
    let provenance = oci::Provenance {
        source: args.source,
        revision: args.revision,
        created: created()?,
    };
    let digest = args
        .registry
        .registry()?
        .publish(&args.reference, &bundle, &config, &provenance)
        .await
        .map_err(unavailable)?;
    write_stdout(&format!("{digest}\n"))
}

/// Pulls `reference` with the command's registry flags.
async fn fetch(registry: &RegistryArgs, reference: &str) -> Result<oci::Pulled, CliError> {
    registry
        .registry()?
        .pull(reference)
        .await
        .map_err(unavailable)
}

async fn pull(args: PullArgs) -> Result<(), CliError> {
    let pulled = fetch(&args.registry, &args.reference).await?;
    let bundle =
        ModuleBundle::new(pulled.files, Some(&pulled.config.entrypoint)).map_err(unavailable)?;
    let internal = |e: std::io::Error| {
        CliError::new(
            exit::INTERNAL,
            format!("cannot write {}: {e}", args.dir.display()),
        )
    };
    if args.dir.exists()
        && std::fs::read_dir(&args.dir)
            .map_err(internal)?
            .next()
            .is_some()
    {
        return Err(CliError::new(
            exit::USAGE,
            format!(
                "{} is not empty: pull into a new or empty directory",
                args.dir.display()
            ),
        ));
    }
    for (name, content) in bundle.files() {
        let path = args.dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(internal)?;
        }
        std::fs::write(&path, content).map_err(internal)?;
    }
    write_stdout(&format!(
        "pulled {} {}@{} ({}) into {}: {} files\n",
        args.reference,
        pulled.config.name,
        pulled.config.version,
        pulled.digest,
        args.dir.display(),
        bundle.files().len()
    ))
}

/// What `pequod module inspect` prints.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Inspection<'a> {
    /// The artifact, when the module came from a registry.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    artifact: Option<Artifact<'a>>,
    module: &'a ModuleMetadata,
    content_digest: &'a str,
    files: Vec<&'a String>,
    /// Absent when the module's `Input` is not a record contract.
    #[serde(skip_serializing_if = "Option::is_none")]
    input: Option<&'a [InputField]>,
}

/// The registry side of an inspected module.
#[derive(Debug, serde::Serialize)]
struct Artifact<'a> {
    reference: &'a str,
    digest: &'a str,
    config: &'a oci::ModuleConfig,
    annotations: &'a std::collections::BTreeMap<String, String>,
}

async fn inspect(args: InspectArgs) -> Result<(), CliError> {
    let local = Path::new(&args.reference);
    let looks_like_path = [".", "/"].iter().any(|p| args.reference.starts_with(p));
    if looks_like_path && !local.is_dir() {
        return Err(unavailable(format!(
            "{} is not a module directory",
            local.display()
        )));
    }
    let (bundle, pulled) = if local.is_dir() {
        let bundle = ModuleBundle::from_dir(local, Some(&args.entrypoint)).map_err(unavailable)?;
        (bundle, None)
    } else {
        let pulled = fetch(&args.registry, &args.reference).await?;
        let bundle = ModuleBundle::new(pulled.files.clone(), Some(&pulled.config.entrypoint))
            .map_err(unavailable)?;
        (bundle, Some(pulled))
    };
    let description = args
        .eval
        .renderer()?
        .describe(&bundle)
        .await
        .map_err(|e| CliError::evaluation("cannot inspect the module", e))?;
    if args.output == InspectFormat::Markdown {
        let fields = description.input_fields.as_deref().ok_or_else(|| {
            CliError::new(
                exit::RENDER_FAILED,
                "the module's `Input` is not a record contract: it has no fields to list",
            )
        })?;
        return write_stdout(&input_table(fields));
    }
    let shown = Inspection {
        artifact: pulled.as_ref().map(|pulled| Artifact {
            reference: &args.reference,
            digest: &pulled.digest,
            config: &pulled.config,
            annotations: &pulled.annotations,
        }),
        module: &description.metadata,
        content_digest: bundle.digest(),
        files: bundle.files().keys().collect(),
        input: description.input_fields.as_deref(),
    };
    let printing =
        |e: &dyn std::fmt::Display| CliError::new(exit::INTERNAL, format!("cannot print: {e}"));
    let text = match args.output {
        InspectFormat::Json => serde_json::to_string_pretty(&shown)
            .map(|text| text + "\n")
            .map_err(|e| printing(&e))?,
        _ => super::yaml::to_string(&shown).map_err(|e| printing(&e))?,
    };
    write_stdout(&text)
}

/// The Input fields as a Markdown table: path, contracts, default, documentation.
fn input_table(fields: &[InputField]) -> String {
    let cell = |text: &str| {
        text.split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .replace('|', "\\|")
    };
    let code = |text: &str| format!("`{}`", cell(text).replace('`', "'"));
    let mut table = String::from("| input | contract | default | meaning |\n|---|---|---|---|\n");
    for field in fields {
        let default = match (field.presence, &field.default) {
            (Presence::Required, _) => "**required**".to_string(),
            (Presence::Optional, _) => "—".to_string(),
            (Presence::Fixed, Some(value)) => format!("fixed: {}", code(value)),
            (_, Some(value)) => code(value),
            (_, None) => "—".to_string(),
        };
        let contracts: Vec<String> = field.contracts.iter().map(|c| code(c)).collect();
        table.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            code(&field.path),
            contracts.join(", "),
            default,
            cell(field.doc.as_deref().unwrap_or("")),
        ));
    }
    table
}

async fn check(args: CheckArgs) -> Result<(), CliError> {
    let bundle = ModuleBundle::from_dir(&args.dir, Some(&args.entrypoint))
        .map_err(|e| CliError::new(exit::MODULE_UNAVAILABLE, format!("module: {e}")))?;
    let module = Resolved {
        digest: bundle.digest().to_string(),
        bundle,
        stale: None,
    };
    let examples = examples(&args.dir)?;
    let renderer = args.offline.eval.renderer()?;
    let policy_modules = args.offline.policy_modules(&renderer).await?;
    let mut report = String::new();
    let mut failed = 0;
    for example in &examples {
        let shown = example
            .strip_prefix(&args.dir)
            .unwrap_or(example)
            .display()
            .to_string();
        let checks = (&policy_modules[..], &args.offline.eval.limits());
        match check_example(&renderer, &module, checks, example).await {
            Ok(1) => report.push_str(&format!("ok    {shown}: 1 node\n")),
            Ok(nodes) => report.push_str(&format!("ok    {shown}: {nodes} nodes\n")),
            Err(problem) => {
                failed += 1;
                report.push_str(&format!("FAIL  {shown}: {problem}\n"));
            }
        }
    }
    let passed = examples.len() - failed;
    report.push_str(&format!("{passed} passed, {failed} failed\n"));
    write_stdout(&report)?;
    if failed == 0 {
        Ok(())
    } else {
        Err(CliError::new(
            exit::RENDER_FAILED,
            format!(
                "{failed} of {} examples of {} failed",
                examples.len(),
                args.dir.display()
            ),
        ))
    }
}

/// The example Transforms of a module, sorted.
fn examples(dir: &Path) -> Result<Vec<PathBuf>, CliError> {
    let folder = dir.join("examples");
    let unreadable = |e: std::io::Error| {
        CliError::new(
            exit::MODULE_UNAVAILABLE,
            format!("cannot read {}: {e}", folder.display()),
        )
    };
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&folder).map_err(unreadable)? {
        let path = entry.map_err(unreadable)?.path();
        if path
            .extension()
            .is_some_and(|ext| ext == "yaml" || ext == "yml")
        {
            found.push(path);
        }
    }
    found.sort();
    if found.is_empty() {
        return Err(CliError::new(
            exit::MODULE_UNAVAILABLE,
            format!("{} has no example (*.yaml)", folder.display()),
        ));
    }
    Ok(found)
}

/// Plans one example, as the operator would; the number of nodes, or what went wrong in one
/// line.
async fn check_example(
    renderer: &Renderer,
    module: &Resolved,
    (policy_modules, limits): (&[PolicyModule], &Limits),
    example: &Path,
) -> Result<usize, String> {
    let transform = read_transform(example).map_err(|e| e.to_string())?;
    let planned = plan(&transform, module, renderer, policy_modules, limits)
        .await
        .map_err(|e| e.to_string())?;
    let warnings = &planned.graph.spec.violations;
    if let Some(first) = warnings.first() {
        return Err(format!(
            "policy warning: {}: {} ({} in all)",
            first.path,
            first.message,
            warnings.len()
        ));
    }
    Ok(planned.graph.spec.nodes.len())
}
