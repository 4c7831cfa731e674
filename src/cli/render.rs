//! `pequod render`: resolve a Transform's module, evaluate it, print the result.

use std::path::PathBuf;

use clap::Args;

use super::output::{OutputFormat, print_graph};
use super::policy::PolicyArgs;
use super::{CliError, EvalArgs, RegistryArgs, exit, write_stdout};
use crate::api::{API_VERSION, ModuleRef, Transform};
use crate::module::disk::DiskCache;
use crate::module::git::GitAuth;
use crate::module::{ModuleCache, Resolved, Sources, resolve};
use crate::plan::{Plan, PlanError, plan};
use crate::render::{PolicyModule, Renderer};

/// Flags of `pequod render`.
#[derive(Debug, Args)]
pub struct RenderArgs {
    /// The Transform to render (YAML or JSON; `-` for stdin).
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// Output: the ResourceGraph as yaml or json, the objects as multi-document YAML
    /// (manifests), or the dependency graph (dot, mermaid).
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Yaml)]
    pub output: OutputFormat,
    /// Use the module in this directory instead of the Transform's moduleRef.
    #[arg(long)]
    pub module_dir: Option<PathBuf>,
    /// Registries, cache, evaluation limits and policy modules.
    #[command(flatten)]
    pub offline: OfflineArgs,
}

/// How the commands that plan offline (`render`, `diff`, `module check`, `module impact`)
/// reach and evaluate modules, as the operator would: registries, the cache, evaluation
/// limits and the cluster's policy modules.
#[derive(Debug, Args)]
pub struct OfflineArgs {
    /// Registries for OCI modules.
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Where Git mirrors and fetched OCI modules are kept (default: ~/.cache/pequod).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Evaluation limits.
    #[command(flatten)]
    pub eval: EvalArgs,
    /// The cluster's policy modules.
    #[command(flatten)]
    pub policies: PolicyArgs,
}

impl OfflineArgs {
    /// Resolves `module_ref` (or loads `module_dir`) with these registries and cache.
    pub async fn resolve(
        &self,
        module_ref: &ModuleRef,
        module_dir: Option<&std::path::Path>,
    ) -> Result<Resolved, CliError> {
        resolve_offline(
            module_ref,
            module_dir,
            &self.registry,
            self.cache_dir.as_deref(),
        )
        .await
    }

    /// The policy modules of `--policy-module`, evaluated by `renderer`.
    pub async fn policy_modules(&self, renderer: &Renderer) -> Result<Vec<PolicyModule>, CliError> {
        self.policies
            .load(&self.registry, self.cache_dir.as_deref(), renderer)
            .await
    }
}

/// Runs `pequod render`.
pub async fn run(args: RenderArgs) -> Result<(), CliError> {
    let transform = read_transform(&args.file)?;
    let planned = plan_offline(&transform, args.module_dir.as_deref(), &args.offline)
        .await
        .map_err(|error| match error {
            Unplanned::Module(error) | Unplanned::Eval(error) => error,
            Unplanned::Render(error) => CliError::from(error),
            Unplanned::Plan(other) => {
                CliError::new(exit::RENDER_FAILED, format!("render failed: {other}"))
            }
        })?;
    let text = print_graph(&planned.graph, args.output)
        .map_err(|e| CliError::new(exit::INTERNAL, format!("cannot print the graph: {e}")))?;
    write_stdout(&text)
}

/// Why a Transform could not be planned offline.
pub enum Unplanned {
    /// The module could not be resolved, or the registry flags are wrong.
    Module(CliError),
    /// No renderer could be set up from the evaluation flags.
    Eval(CliError),
    /// The module did not render.
    Render(crate::render::RenderError),
    /// The render was refused (policies, size).
    Plan(PlanError),
}

/// Resolves the module of `transform` (or the one in `module_dir`) and plans its graph as
/// the operator would, with the user's registry credentials and cache, checked by the
/// policy modules `offline` names.
pub async fn plan_offline(
    transform: &Transform,
    module_dir: Option<&std::path::Path>,
    offline: &OfflineArgs,
) -> Result<Plan, Unplanned> {
    let resolved = offline
        .resolve(&transform.spec.module_ref, module_dir)
        .await
        .map_err(Unplanned::Module)?;
    let renderer = offline.eval.renderer().map_err(Unplanned::Eval)?;
    let policy_modules = offline
        .policy_modules(&renderer)
        .await
        .map_err(Unplanned::Module)?;
    plan(
        transform,
        &resolved,
        &renderer,
        &policy_modules,
        &offline.eval.limits(),
    )
    .await
    .map_err(|error| match error {
        PlanError::Render(error) => Unplanned::Render(error),
        other => Unplanned::Plan(other),
    })
}

/// Resolves `module_ref` (or loads `module_dir`) with the user's registry credentials, Git
/// access and cache (`cache_dir`, default ~/.cache/pequod).
pub async fn resolve_offline(
    module_ref: &ModuleRef,
    module_dir: Option<&std::path::Path>,
    registry: &RegistryArgs,
    cache_dir: Option<&std::path::Path>,
) -> Result<Resolved, CliError> {
    let registry = registry.registry()?;
    let cache_dir = cache_dir
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(crate::module::git::default_cache_dir);
    let cache = ModuleCache::new(64 << 20).with_disk(DiskCache::new(
        &cache_dir,
        512 << 20,
        std::time::Duration::from_secs(7 * 24 * 3600),
    ));
    let sources = Sources {
        registry: &registry,
        cache: &cache,
        cache_dir: &cache_dir,
        git_auth: GitAuth::Ambient,
        allow_local_git: true,
    };
    resolve(module_ref, module_dir, &sources)
        .await
        .map_err(|e| CliError::new(exit::MODULE_UNAVAILABLE, format!("module: {e}")))
}

/// Reads and checks a Transform document, decoding its YAML as kubectl does (YAML 1.1
/// scalars: docs/modules.md, "YAML as kubectl reads it"); each key or value that a YAML 1.2
/// reader would read differently is reported on stderr.
pub fn read_transform(path: &std::path::Path) -> Result<Transform, CliError> {
    let bad = |message: String| CliError::new(exit::BAD_INPUT_FILE, message);
    let shown = path.display();
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).map_err(|e| bad(format!("stdin: {e}")))?
    } else {
        std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read {shown}: {e}")))?
    };
    let decoded = crate::api::yaml::from_str(&text)
        .map_err(|e| bad(format!("{shown}: invalid YAML: {e}")))?;
    for warning in &decoded.warnings {
        eprintln!("warning: {shown}: {warning}");
    }
    let document = decoded.value;
    let field = |name: &str| document[name].as_str().unwrap_or("").to_string();
    let (api_version, kind) = (field("apiVersion"), field("kind"));
    if kind != "Transform" || api_version != API_VERSION {
        return Err(bad(format!(
            "{shown}: expected a Transform ({API_VERSION}), found kind `{kind}` apiVersion `{api_version}`"
        )));
    }
    // JSON is YAML: serde_yaml's deserializer names the path of a field that does not fit
    // (`spec: missing field `moduleRef``), and every string of the JSON text is quoted, so
    // it reads the values exactly as decoded.
    let transform: Transform = serde_yaml::from_str(&document.to_string())
        .map_err(|e| bad(format!("{shown}: invalid Transform: {e}")))?;
    if transform.metadata.name.as_deref().unwrap_or("").is_empty() {
        return Err(bad(format!("{shown}: metadata.name is required")));
    }
    Ok(transform)
}
