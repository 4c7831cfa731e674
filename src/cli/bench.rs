//! `pequod bench`: render latency (cache hit, warm worker, cold module), throughput of the
//! worker pool, the `nickel export` CLI as a baseline, and the operator's memory over many
//! renders. Figures are printed; `docs/performance.md` records them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{Value, json};

use super::{CliError, EvalArgs, exit};
use crate::module::{ModuleBundle, embedded_module, library_files};
use crate::render::nickel::entry_source;
use crate::render::worker::resident_bytes;
use crate::render::{RenderContext, Renderer};

/// Flags of `pequod bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Samples per latency figure.
    #[arg(long, default_value_t = 200)]
    pub samples: usize,
    /// Renders with distinct inputs for the memory figure (0 skips it).
    #[arg(long, default_value_t = 10_000)]
    pub memory_renders: usize,
    /// A `nickel` CLI binary to time as the baseline (skipped when absent).
    #[arg(long, env = "PEQUOD_BENCH_NICKEL")]
    pub nickel: Option<PathBuf>,
    /// The webservice module published at this OCI reference: time resolve + fetch +
    /// render, cold (empty module cache) and cached.
    #[arg(long, value_name = "REF")]
    pub oci: Option<String>,
    /// Registry access for `--oci`.
    #[command(flatten)]
    pub registry: super::RegistryArgs,
    /// Evaluation limits.
    #[command(flatten)]
    pub eval: EvalArgs,
}

const MODULE: &str = "webservice";

fn input(i: usize) -> Value {
    json!({"name": format!("bench-{i}"), "image": "ghcr.io/acme/shop-api:1.4.2", "replicas": 1 + i % 5})
}

fn context() -> RenderContext {
    RenderContext {
        name: "bench".into(),
        namespace: "bench".into(),
    }
}

/// Runs the benchmark and prints its figures.
pub async fn run(args: BenchArgs) -> Result<(), CliError> {
    let bundle = embedded_module(MODULE)
        .ok_or_else(|| CliError::new(exit::MODULE_UNAVAILABLE, "no embedded webservice"))?;
    let renderer = Arc::new(args.eval.renderer()?);
    let samples = args.samples.max(1);
    println!(
        "pequod bench: module {MODULE}, {samples} samples, {} workers, {} cores",
        args.eval.eval_workers,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    // First render starts the worker and prepares the module.
    let started = Instant::now();
    render(&renderer, bundle, &input(0)).await?;
    println!(
        "first render (worker start + prepare + eval): {}",
        ms(started.elapsed())
    );

    let mut hits = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t = Instant::now();
        render(&renderer, bundle, &input(0)).await?;
        hits.push(t.elapsed());
    }
    report("cache-hit render", &mut hits);

    let mut warm = Vec::with_capacity(samples);
    for i in 0..samples {
        let t = Instant::now();
        render(&renderer, bundle, &input(1_000_000 + i)).await?;
        warm.push(t.elapsed());
    }
    report("new input, warm worker", &mut warm);

    let mut cold = Vec::with_capacity(samples);
    for i in 0..samples {
        let variant = module_variant(bundle, i)?;
        let t = Instant::now();
        render(&renderer, &variant, &input(0)).await?;
        cold.push(t.elapsed());
    }
    report("cold module (prepare + eval)", &mut cold);

    let started = Instant::now();
    let total = samples * 2;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        let renderer = Arc::clone(&renderer);
        let bundle = bundle.clone();
        tasks.spawn(async move { render(&renderer, &bundle, &input(2_000_000 + i)).await });
    }
    while let Some(result) = tasks.join_next().await {
        result.map_err(|e| CliError::new(exit::INTERNAL, e.to_string()))??;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "throughput, {} workers: {:.0} renders/s ({total} distinct inputs in {secs:.2}s)",
        args.eval.eval_workers,
        total as f64 / secs
    );

    if let Some(nickel) = &args.nickel {
        nickel_baseline(nickel, bundle, samples.min(50))?;
    }
    if let Some(reference) = &args.oci {
        oci(&renderer, reference, &args.registry, samples.min(100)).await?;
    }
    if args.memory_renders > 0 {
        memory(&renderer, bundle, args.memory_renders).await?;
    }
    Ok(())
}

/// Sources with no credentials but the registry's own.
fn anonymous<'a>(
    registry: &'a crate::module::oci::Registry,
    cache: &'a crate::module::ModuleCache,
    dir: &'a std::path::Path,
) -> crate::module::Sources<'a> {
    crate::module::Sources {
        registry,
        cache,
        cache_dir: dir,
        git_auth: crate::module::git::GitAuth::Anonymous,
        allow_local_git: false,
    }
}

/// Resolve + fetch + render of a module in an OCI registry: cold (a new module cache and a
/// new input every time: the digest lookup, the pull and an evaluation) and cached (the
/// digest lookup and a render-cache hit), as the operator does per reconcile.
async fn oci(
    renderer: &Renderer,
    reference: &str,
    registry: &super::RegistryArgs,
    samples: usize,
) -> Result<(), CliError> {
    use crate::api::{ModuleRef, ModuleType};
    use crate::module::{ModuleCache, resolve};
    let registry = registry.registry()?;
    let module_ref = ModuleRef {
        type_: ModuleType::Oci,
        ref_: reference.to_string(),
        path: None,
        entrypoint: None,
        pull_secret_ref: None,
        digest: None,
    };
    let dir = std::env::temp_dir();
    let fail = |e: crate::module::SourceError| {
        CliError::new(exit::MODULE_UNAVAILABLE, format!("module: {e}"))
    };
    let mut cold = Vec::with_capacity(samples);
    for i in 0..samples {
        let cache = ModuleCache::new(64 << 20);
        let sources = anonymous(&registry, &cache, &dir);
        let t = Instant::now();
        let resolved = resolve(&module_ref, None, &sources).await.map_err(fail)?;
        render(renderer, &resolved.bundle, &input(4_000_000 + i)).await?;
        cold.push(t.elapsed());
    }
    report("oci resolve+fetch+render, cold", &mut cold);
    let cache = ModuleCache::new(64 << 20);
    let sources = anonymous(&registry, &cache, &dir);
    let warmed = resolve(&module_ref, None, &sources).await.map_err(fail)?;
    render(renderer, &warmed.bundle, &input(0)).await?;
    let mut cached = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t = Instant::now();
        let resolved = resolve(&module_ref, None, &sources).await.map_err(fail)?;
        render(renderer, &resolved.bundle, &input(0)).await?;
        cached.push(t.elapsed());
    }
    report(
        "oci resolve+render, cached (digest lookup + render-cache hit)",
        &mut cached,
    );
    Ok(())
}

async fn render(renderer: &Renderer, bundle: &ModuleBundle, input: &Value) -> Result<(), CliError> {
    renderer.render(bundle, input, &context()).await?;
    Ok(())
}

/// The same module with a different digest (a trailing comment), to measure preparation.
fn module_variant(bundle: &ModuleBundle, i: usize) -> Result<ModuleBundle, CliError> {
    let mut files = bundle.files().clone();
    if let Some(main) = files.get_mut(bundle.entrypoint()) {
        main.push_str(&format!("\n# variant {i}\n"));
    }
    ModuleBundle::new(files, Some(bundle.entrypoint()))
        .map_err(|e| CliError::new(exit::INTERNAL, e.to_string()))
}

fn nickel_baseline(
    nickel: &PathBuf,
    bundle: &ModuleBundle,
    samples: usize,
) -> Result<(), CliError> {
    let fail = |e: std::io::Error| CliError::new(exit::INTERNAL, format!("nickel baseline: {e}"));
    let dir = std::env::temp_dir().join(format!("pequod-bench-{}", std::process::id()));
    let module_dir = dir.join("module");
    write_tree(&module_dir, bundle.files()).map_err(fail)?;
    write_tree(&dir.join("lib").join("pequod"), &library_files()).map_err(fail)?;
    let mut times = Vec::with_capacity(samples);
    for i in 0..samples {
        std::fs::write(
            dir.join("spec.input.json"),
            input(3_000_000 + i).to_string(),
        )
        .map_err(fail)?;
        std::fs::write(
            dir.join("context.json"),
            serde_json::to_string(&context()).unwrap_or_default(),
        )
        .map_err(fail)?;
        std::fs::write(
            dir.join("entry.ncl"),
            entry_source(
                "pequod/graph.ncl",
                "module/main.ncl",
                "context.json",
                "spec.input.json",
            ),
        )
        .map_err(fail)?;
        let t = Instant::now();
        let status = std::process::Command::new(nickel)
            .args(["export", "--format", "json", "-I"])
            .arg(dir.join("lib"))
            .arg(dir.join("entry.ncl"))
            .stdout(std::process::Stdio::null())
            .status()
            .map_err(fail)?;
        times.push(t.elapsed());
        if !status.success() {
            return Err(CliError::new(
                exit::INTERNAL,
                format!("nickel export failed: {status}"),
            ));
        }
    }
    report("`nickel export` CLI per render (baseline)", &mut times);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn write_tree(root: &std::path::Path, files: &BTreeMap<String, String>) -> std::io::Result<()> {
    for (name, content) in files {
        let path = root.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, content)?;
    }
    Ok(())
}

async fn memory(
    renderer: &Renderer,
    bundle: &ModuleBundle,
    renders: usize,
) -> Result<(), CliError> {
    let before = resident_bytes();
    let started = Instant::now();
    for i in 0..renders {
        render(renderer, bundle, &input(10_000_000 + i)).await?;
    }
    let after = resident_bytes();
    let stats = renderer.pool().stats();
    println!(
        "memory: {renders} renders with distinct inputs in {:.1}s: operator RSS {} MiB -> {} MiB ({:+.1} MiB); workers started {}, recycled {}",
        started.elapsed().as_secs_f64(),
        before >> 20,
        after >> 20,
        (after as f64 - before as f64) / (1u64 << 20) as f64,
        stats.spawned.get(),
        stats.recycled.get(),
    );
    Ok(())
}

fn report(label: &str, times: &mut [Duration]) {
    times.sort();
    let pick = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    println!(
        "{label}: median {}, p90 {}, min {} ({} samples)",
        ms(pick(0.5)),
        ms(pick(0.9)),
        ms(times[0]),
        times.len()
    );
}

fn ms(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{:.1} µs", d.as_secs_f64() * 1e6)
    } else {
        format!("{:.2} ms", d.as_secs_f64() * 1e3)
    }
}
