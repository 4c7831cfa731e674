//! `pequod module`: commands on module directories and artifacts. `check DIR` renders every
//! example Transform of a module (`DIR/examples/*.yaml`) and fails on any error or policy
//! violation, so a module's examples are its test suite.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use super::render::read_transform;
use super::{CliError, EvalArgs, exit, write_stdout};
use crate::module::ModuleBundle;
use crate::policy;
use crate::render::RenderContext;

/// Subcommands of `pequod module`.
#[derive(Debug, Subcommand)]
pub enum ModuleCommand {
    /// Typecheck a module and render its examples (`examples/*.yaml`); fail on any error or
    /// policy violation.
    Check(CheckArgs),
}

/// Flags of `pequod module check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The module directory.
    pub dir: PathBuf,
    /// Entrypoint file of the module.
    #[arg(long, default_value = "main.ncl")]
    pub entrypoint: String,
    /// Evaluation limits.
    #[command(flatten)]
    pub eval: EvalArgs,
}

/// Runs a `pequod module` command.
pub async fn run(command: ModuleCommand) -> Result<(), CliError> {
    match command {
        ModuleCommand::Check(args) => check(args).await,
    }
}

async fn check(args: CheckArgs) -> Result<(), CliError> {
    let bundle = ModuleBundle::from_dir(&args.dir, Some(&args.entrypoint))
        .map_err(|e| CliError::new(exit::MODULE_UNAVAILABLE, format!("module: {e}")))?;
    let examples = examples(&args.dir)?;
    let renderer = args.eval.renderer()?;
    let mut report = String::new();
    let mut failed = 0;
    for example in &examples {
        let shown = example
            .strip_prefix(&args.dir)
            .unwrap_or(example)
            .display()
            .to_string();
        match check_example(&renderer, &bundle, example).await {
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

/// Renders one example; the number of objects, or what went wrong in one line.
async fn check_example(
    renderer: &crate::render::Renderer,
    bundle: &ModuleBundle,
    example: &Path,
) -> Result<usize, String> {
    let transform = read_transform(example).map_err(|e| e.to_string())?;
    let context = RenderContext::of(&transform);
    let graph = renderer
        .render(bundle, &transform.spec.input, &context)
        .await
        .map_err(|e| e.to_string())?;
    let warnings = policy::enforce(&graph.findings, &transform.spec.policies)
        .into_result()
        .map_err(|e| e.to_string())?;
    if let Some(first) = warnings.first() {
        return Err(format!(
            "policy warning: {}: {} ({} in all)",
            first.path,
            first.message,
            warnings.len()
        ));
    }
    Ok(graph.nodes.len())
}
