//! The rendering engine through its library API: worker pool, imports, contracts, limits,
//! and the rendered-graph cache.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use pequod::module::ModuleBundle;
use pequod::render::{
    FailureKind, PoolConfig, RenderContext, RenderError, Renderer, SandboxLevel, SandboxProbe,
};
use serde_json::{Value, json};

fn renderer_with(adjust: impl FnOnce(&mut PoolConfig)) -> Renderer {
    let mut config = PoolConfig::with_program(common::pequod_bin());
    config.workers = 1;
    adjust(&mut config);
    Renderer::new(config, pequod::render::DEFAULT_CACHE_MIB << 20)
}

fn renderer() -> Renderer {
    renderer_with(|_| {})
}

fn context() -> RenderContext {
    RenderContext {
        name: "demo".into(),
        namespace: "team-a".into(),
    }
}

fn bundle(files: &[(&str, &str)]) -> ModuleBundle {
    let files: BTreeMap<String, String> = files
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    ModuleBundle::new(files, None).expect("valid bundle")
}

/// A module with one ConfigMap per entry of `input.keys`, importing a helper file and the
/// library.
const MAIN: &str = r#"
let helpers = import "lib/helpers.ncl" in
let ready = import "pequod/ready.ncl" in
{
  metadata = { name = "demo", version = "1.0.0", description = "test module" },
  context | { name | String, namespace | String },
  Input = {
    name | String,
    replicas | Number | default = 1,
    keys | Array String | default = ["a"],
    nested | { level | { value | String | default = "x" } } | default = { level = {} },
  },
  render = fun input => {
    nodes = std.array.map (fun key => {
      id = key,
      object = helpers.config_map "%{input.name}-%{key}" { replicas = std.to_string input.replicas },
      readyWhen = [ready.exists],
    }) input.keys,
    outputs = { where = "%{context.name}.%{context.namespace}", value = input.nested.level.value },
  },
}
"#;

const HELPERS: &str = r#"
{
  config_map = fun cm_name entries => {
    apiVersion = "v1",
    kind = "ConfigMap",
    metadata = { name = cm_name },
    data = entries,
  },
}
"#;

fn demo() -> ModuleBundle {
    bundle(&[("main.ncl", MAIN), ("lib/helpers.ncl", HELPERS)])
}

async fn render_err(renderer: &Renderer, bundle: &ModuleBundle, input: Value) -> RenderError {
    renderer
        .render(bundle, &input, &context())
        .await
        .expect_err("render fails")
}

fn failure(error: RenderError) -> pequod::render::EvalFailure {
    match error {
        RenderError::Evaluation(failure) => failure,
        other => panic!("expected a Nickel failure, got: {other}"),
    }
}

#[tokio::test]
async fn renders_with_defaults_context_namespace_and_labels() {
    let renderer = renderer();
    let graph = renderer
        .render(
            &demo(),
            &json!({"name": "web", "keys": ["a", "b"]}),
            &context(),
        )
        .await
        .expect("render succeeds");
    assert_eq!(graph.module.name, "demo");
    assert_eq!(
        graph.input,
        json!({"name": "web", "replicas": 1, "keys": ["a", "b"], "nested": {"level": {"value": "x"}}})
    );
    assert_eq!(graph.outputs, json!({"where": "demo.team-a", "value": "x"}));
    let ids: Vec<&str> = graph.nodes.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(ids, ["a", "b"]);
    assert_eq!(
        graph.nodes[1].object,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"replicas": "1"},
               "metadata": {"name": "web-b", "namespace": "team-a", "labels": {
                   "app.kubernetes.io/managed-by": "pequod",
                   "platform.pequod.io/transform": "demo",
                   "platform.pequod.io/resource-graph": "demo",
                   "platform.pequod.io/resource-graph-namespace": "team-a",
                   "platform.pequod.io/node-id": "b"}}})
    );
    assert!(graph.render_hash.starts_with("sha256:"));
}

#[tokio::test]
async fn deterministic_failures_are_cached_and_concurrent_renders_coalesce() {
    let renderer = renderer();
    let bad = json!({"name": "web", "replicas": "three"});
    let first = render_err(&renderer, &demo(), bad.clone()).await;
    let second = render_err(&renderer, &demo(), bad).await;
    assert_eq!(first.to_string(), second.to_string());
    assert_eq!(renderer.pool().stats().evaluations.get(), 1);
    assert_eq!(renderer.stats().cache_hits.get(), 1);

    let (input, module, ctx) = (json!({"name": "together"}), demo(), context());
    let (a, b, c) = tokio::join!(
        renderer.render(&module, &input, &ctx),
        renderer.render(&module, &input, &ctx),
        renderer.render(&module, &input, &ctx),
    );
    for graph in [a, b, c] {
        assert_eq!(
            graph.expect("renders").nodes[0].object["metadata"]["name"],
            "together-a"
        );
    }
    assert_eq!(renderer.pool().stats().evaluations.get(), 2);
}

/// A caller that gives up mid-evaluation must not leave its reply for the next request.
#[tokio::test]
async fn abandoned_renders_do_not_leak_replies_into_later_ones() {
    let renderer = renderer();
    for i in 0..5 {
        let abandoned = json!({"name": format!("abandoned-{i}")});
        let _ = tokio::time::timeout(
            Duration::from_millis(5),
            renderer.render(&demo(), &abandoned, &context()),
        )
        .await;
        let wanted = format!("wanted-{i}");
        let graph = renderer
            .render(&demo(), &json!({"name": wanted}), &context())
            .await
            .expect("renders");
        assert_eq!(
            graph.nodes[0].object["metadata"]["name"],
            format!("{wanted}-a")
        );
    }
}

/// Renders three times with the pool's limits `adjust`ed so that every evaluation passes
/// one: each worker is replaced after its evaluation.
async fn each_evaluation_recycles_its_worker(adjust: impl FnOnce(&mut PoolConfig)) {
    let renderer = renderer_with(adjust);
    for i in 0..3 {
        renderer
            .render(&demo(), &json!({"name": format!("web-{i}")}), &context())
            .await
            .expect("renders");
    }
    let stats = renderer.pool().stats();
    assert_eq!(stats.recycled.get(), 3);
    assert_eq!(stats.spawned.get(), 3);
}

#[tokio::test]
async fn workers_are_recycled_when_their_address_space_grows() {
    each_evaluation_recycles_its_worker(|c| c.recycle_at_percent = 1).await;
}

#[tokio::test]
async fn workers_are_recycled_when_their_private_memory_grows() {
    // Any evaluating worker holds more than 1 MiB of its own.
    each_evaluation_recycles_its_worker(|c| c.recycle_resident_mib = 1).await;
}

#[tokio::test]
async fn repeat_render_is_a_cache_hit_that_never_reaches_a_worker() {
    let renderer = renderer();
    let input = json!({"name": "web"});
    let first = renderer
        .render(&demo(), &input, &context())
        .await
        .expect("renders");
    let evaluations = renderer.pool().stats().evaluations.get();
    let second = renderer
        .render(&demo(), &input, &context())
        .await
        .expect("renders");
    assert!(std::sync::Arc::ptr_eq(&first, &second));
    assert_eq!(renderer.stats().cache_hits.get(), 1);
    assert_eq!(renderer.pool().stats().evaluations.get(), evaluations);
    // A different input or context is a different render.
    renderer
        .render(&demo(), &json!({"name": "other"}), &context())
        .await
        .expect("renders");
    let elsewhere = RenderContext {
        namespace: "team-b".into(),
        ..context()
    };
    let moved = renderer
        .render(&demo(), &input, &elsewhere)
        .await
        .expect("renders");
    assert_eq!(moved.outputs["where"], "demo.team-b");
    assert_eq!(renderer.stats().cache_misses.get(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exported_cache_counters_are_exact_under_concurrent_renders() {
    let renderer = renderer();
    let metrics = pequod::metrics::Metrics::new();
    metrics.register(renderer.collectors());
    // Twenty renders of two inputs at once: one evaluation each, every other render a hit
    // (those that waited for an identical render under way included).
    let renders = (0..20).map(|i| {
        let renderer = &renderer;
        async move {
            let input = json!({"name": if i % 2 == 0 { "even" } else { "odd" }});
            renderer.render(&demo(), &input, &context()).await
        }
    });
    for rendered in futures::future::join_all(renders).await {
        rendered.expect("renders");
    }
    let text = metrics.encode();
    let value = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} exported: {text}"))
            .to_string()
    };
    assert_eq!(value("pequod_render_cache_hits_total"), "18");
    assert_eq!(value("pequod_render_cache_misses_total"), "2");
    assert_eq!(value("pequod_worker_evaluations_total"), "2");
    assert_eq!(value("pequod_render_duration_seconds_count"), "20");
}

#[tokio::test]
async fn contract_violation_names_the_full_input_path() {
    let renderer = renderer();
    let f = failure(
        render_err(
            &renderer,
            &demo(),
            json!({"name": "web", "nested": {"level": {"value": 3}}}),
        )
        .await,
    );
    assert_eq!(f.kind, FailureKind::Contract);
    assert_eq!(f.path.as_deref(), Some("input.nested.level.value"));
    assert!(
        f.message
            .starts_with("contract broken by the value of `value`"),
        "{}",
        f.message
    );
    assert!(f.message.contains("expected `String`"), "{}", f.message);
    assert!(
        f.location
            .as_deref()
            .is_some_and(|l| l.starts_with("spec.input.json:")),
        "{:?}",
        f.location
    );
    assert!(f.detail.contains("spec.input.json"), "{}", f.detail);

    let typo = failure(render_err(&renderer, &demo(), json!({"name": "web", "replicsa": 2})).await);
    assert_eq!(typo.kind, FailureKind::Contract);
    assert!(
        typo.message.contains("extra field `replicsa`"),
        "{}",
        typo.message
    );

    let missing = failure(render_err(&renderer, &demo(), json!({})).await);
    assert!(
        missing.message.contains("missing definition for `name`"),
        "{}",
        missing.message
    );
}

#[tokio::test]
async fn forbidden_imports_are_refused_before_evaluation() {
    let renderer = renderer();
    let cases = [
        (
            r#"{ x = import "/etc/passwd" as 'Text }"#,
            "import `/etc/passwd` does not refer to a file of the module or of the pequod library",
        ),
        (
            r#"{ x = import "../x.ncl" }"#,
            "import `../x.ncl` does not refer to a file of the module or of the pequod library",
        ),
        (
            r#"{ x = import "lib/../../../etc/hostname" as 'Text }"#,
            "import `lib/../../../etc/hostname` does not refer to a file of the module or of the pequod library",
        ),
        (
            r#"{ x = import "nowhere.ncl" }"#,
            "import `nowhere.ncl` does not refer to a file of the module or of the pequod library",
        ),
        (
            r#"{ x | Dyn | default = "%{import "/etc/hostname" as 'Text}" }"#,
            "import `/etc/hostname` does not refer to a file of the module or of the pequod library",
        ),
        (
            r#"{ x = fun { a ? import "/etc/hostname" } => a }"#,
            "import `/etc/hostname` does not refer to a file of the module or of the pequod library",
        ),
        (
            r#"{ x = import "/nickel-vfs/module/main.ncl" }"#,
            "import `/nickel-vfs/module/main.ncl` does not refer to a file of the module or of the pequod library",
        ),
        (
            r#"{ x = import somepkg }"#,
            "package import `somepkg` is not allowed",
        ),
        (
            r#"{ x = import "data.yaml" as 'Text }"#,
            "import `data.yaml` does not refer to a file of the module or of the pequod library",
        ),
        (
            r#"{ x = import "lib" }"#,
            "import `lib` does not refer to a file of the module or of the pequod library",
        ),
    ];
    for (source, expected) in cases {
        let module = bundle(&[("main.ncl", source), ("data.yaml", "a: 1\n")]);
        let f = failure(render_err(&renderer, &module, json!({})).await);
        assert_eq!(f.kind, FailureKind::ForbiddenImport, "{source}");
        assert_eq!(f.message, expected, "{source}");
        assert!(
            f.location
                .as_deref()
                .is_some_and(|l| l.starts_with("main.ncl:1:")),
            "{source}: {:?}",
            f.location
        );
    }
}

/// Syntax Nickel's own traversal skips (let-binding patterns, record includes) is walked
/// too: its imports are refused where they are written, before Nickel resolves anything.
#[tokio::test]
async fn imports_in_let_patterns_and_includes_are_refused_where_written() {
    let renderer = renderer();
    let hidden = [
        (
            r#"let { t ? import "/etc/hostname" as 'Text } = {} in { x = t }"#,
            "main.ncl:1:11",
        ),
        (
            r#"let y = 1 in { include y | std.contract.from_predicate (fun v => (import "/etc/hostname" as 'Text) == "") }"#,
            "main.ncl:1:66",
        ),
    ];
    for (source, at) in hidden {
        let f = failure(render_err(&renderer, &bundle(&[("main.ncl", source)]), json!({})).await);
        assert_eq!(f.kind, FailureKind::ForbiddenImport, "{source}: {f}");
        assert_eq!(
            f.message,
            "import `/etc/hostname` does not refer to a file of the module or of the pequod library",
            "{source}"
        );
        assert_eq!(f.location.as_deref(), Some(at), "{source}");
    }
}

/// A module probing the operator's disk learns nothing: an import of a file that exists
/// (the service account token, the worker's environment, ...), of one that does not, and of
/// a `..` escape all fail with the same error, naming the import where it is written, and
/// none is opened. A FIFO nobody writes to proves it: opening one for reading blocks, so a
/// worker that tried would miss its deadline instead of answering.
#[tokio::test]
async fn imports_probing_the_operator_disk_fail_alike_and_open_nothing() {
    let renderer = renderer_with(|c| c.timeout = Duration::from_secs(60));
    let dir = tempfile::tempdir().expect("temp dir");
    let fifo = dir.path().join("fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    let fifo = fifo.display().to_string();
    let probes = [
        "/etc/hostname",
        "/etc/no-such-file",
        "/var/run/secrets/kubernetes.io/serviceaccount/token",
        "/proc/self/environ",
        "../../etc/passwd",
        "missing.ncl",
        fifo.as_str(),
    ];
    for path in probes {
        let sources = [
            (
                format!(r#"{{ x = import "{path}" as 'Text }}"#),
                "main.ncl:1:7",
            ),
            (
                format!(
                    r#"let {{ probe ? import "{path}" as 'Text, .. }} = {{}} in {{ x = probe }}"#
                ),
                "main.ncl:1:15",
            ),
        ];
        for (source, at) in sources {
            let f =
                failure(render_err(&renderer, &bundle(&[("main.ncl", &source)]), json!({})).await);
            assert_eq!(
                f,
                pequod::render::EvalFailure {
                    location: Some(at.to_string()),
                    ..pequod::render::EvalFailure::new(
                        FailureKind::ForbiddenImport,
                        format!(
                            "import `{path}` does not refer to a file of the module or of the pequod library"
                        ),
                    )
                },
                "{source}"
            );
        }
    }
    assert_eq!(renderer.pool().stats().failed.get(), 0);
}

/// The seal, seen from inside a worker: what this test process can do, the worker cannot.
#[tokio::test]
async fn workers_are_sealed_with_no_files_no_network_and_no_environment() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let listening = listener.local_addr().expect("address");
    let readable: Vec<std::path::PathBuf> = vec![
        "/etc/hostname".into(),
        "/proc/self/environ".into(),
        common::pequod_bin(),
    ];
    // What the worker is denied, this process may do.
    for path in &readable {
        std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    std::net::TcpStream::connect(listening).expect("connects");
    assert!(std::env::vars_os().next().is_some());

    let renderer = renderer();
    let report = renderer
        .pool()
        .probe(&SandboxProbe {
            open: readable,
            connect: vec![listening],
            bind: vec!["127.0.0.1:0".parse().expect("address")],
        })
        .await
        .expect("the worker answers");
    let denied = || Err("Permission denied (os error 13)".to_string());
    assert_eq!(report.open, [denied(), denied(), denied()]);
    assert_eq!(report.connect, [denied()]);
    assert_eq!(report.bind, [denied()]);
    assert_eq!(report.environment, Vec::<String>::new());
    assert!(report.no_new_privs);
    let sandbox = renderer.pool().sandbox().expect("the worker said hello");
    assert_eq!(sandbox.level(), SandboxLevel::Sealed, "{sandbox}");

    // Sealed, it still evaluates.
    renderer
        .render(&demo(), &json!({"name": "sealed"}), &context())
        .await
        .expect("renders");
}

/// A worker that exits before it says how far it is sealed serves nothing.
#[tokio::test]
async fn a_worker_that_dies_before_its_hello_fails_the_render() {
    let renderer = renderer_with(|c| c.program = "/bin/false".into());
    let error = render_err(&renderer, &demo(), json!({"name": "web"})).await;
    assert_eq!(
        error.to_string(),
        "evaluation worker crashed (exit status: 1)"
    );
    assert_eq!(renderer.pool().sandbox(), None);
    assert_eq!(renderer.pool().stats().spawned.get(), 0);
}

#[tokio::test]
async fn syntax_and_type_errors_are_located() {
    let renderer = renderer();
    let syntax = failure(
        render_err(
            &renderer,
            &bundle(&[("main.ncl", "{ a = 1,, }")]),
            json!({}),
        )
        .await,
    );
    assert_eq!(syntax.kind, FailureKind::Syntax);
    assert_eq!(syntax.location.as_deref(), Some("main.ncl:1:9"));

    let typed = failure(
        render_err(
            &renderer,
            &bundle(&[("main.ncl", "{ a : Number = \"text\" }")]),
            json!({}),
        )
        .await,
    );
    assert_eq!(typed.kind, FailureKind::Type);
    assert!(
        typed
            .location
            .as_deref()
            .is_some_and(|l| l.starts_with("main.ncl:1:"))
    );
}

#[tokio::test]
async fn runaway_module_times_out_and_the_pool_recovers() {
    // Nickel loops allocate as they go: the memory limit is raised so the deadline is hit first.
    let renderer = renderer_with(|c| {
        c.timeout = Duration::from_secs(2);
        c.memory_mib = 4096;
    });
    let runaway = bundle(&[(
        "main.ncl",
        r#"{ metadata = { name = "x", version = "1" }, Input = {}, render = fun i => let rec f = fun n => f (n + 1) in { nodes = f 0 } }"#,
    )]);
    let error = render_err(&renderer, &runaway, json!({})).await;
    assert_eq!(error.to_string(), "evaluation exceeded 2s and was stopped");
    assert_eq!(renderer.pool().stats().failed.get(), 1);
    renderer
        .render(&demo(), &json!({"name": "after"}), &context())
        .await
        .expect("a new worker serves the next render");
}

#[tokio::test]
async fn memory_hog_hits_the_memory_limit() {
    let renderer = renderer_with(|c| {
        c.memory_mib = 256;
        c.timeout = Duration::from_secs(30);
    });
    let hog = bundle(&[(
        "main.ncl",
        r#"{ metadata = { name = "x", version = "1" }, Input = {}, render = fun i => let rec grow = fun s => grow (s ++ s) in { nodes = grow "0123456789abcdef" } }"#,
    )]);
    let error = render_err(&renderer, &hog, json!({})).await;
    assert_eq!(
        error.to_string(),
        "evaluation exceeded memory limit of 256 MiB and was stopped"
    );
}

#[tokio::test]
async fn deep_nesting_overflows_a_worker_not_the_operator() {
    // The nesting takes seconds of CPU to overflow: a generous deadline keeps a busy
    // machine from turning it into a timeout.
    let renderer = renderer_with(|c| c.timeout = Duration::from_secs(120));
    let deep = ModuleBundle::from_dir(&common::repo().join("testdata/modules/deep"), None)
        .expect("test module");
    let error = render_err(&renderer, &deep, json!({})).await;
    assert!(
        matches!(error, RenderError::StackOverflow),
        "unexpected: {error}"
    );
    renderer
        .render(&demo(), &json!({"name": "after"}), &context())
        .await
        .expect("a new worker serves the next render");
}

#[tokio::test]
async fn non_mapping_input_and_long_names_are_refused_without_evaluation() {
    let renderer = renderer();
    let error = render_err(&renderer, &demo(), json!(["a"])).await;
    assert_eq!(error.to_string(), "input must be a mapping, found a list");
    let long = RenderContext {
        name: "n".repeat(64),
        ..context()
    };
    let error = renderer
        .render(&demo(), &json!({"name": "web"}), &long)
        .await
        .expect_err("too long");
    assert_eq!(
        error.to_string(),
        format!(
            "Transform name `{}` is longer than 63 characters, the limit of the label values Pequod sets",
            "n".repeat(64)
        )
    );
    assert_eq!(renderer.pool().stats().evaluations.get(), 0);
}

#[tokio::test]
async fn workers_are_recycled_and_operator_memory_stays_flat() {
    let renderer = renderer_with(|c| {
        c.max_evaluations = 50;
        // Only the count of evaluations may replace a worker here: never a deadline on a
        // busy machine, nor the memory of a debug build's worker.
        c.timeout = Duration::from_secs(120);
        c.recycle_resident_mib = 1 << 20;
    });
    let before = pequod::render::worker::resident_bytes();
    for i in 0..300 {
        renderer
            .render(&demo(), &json!({"name": format!("web-{i}")}), &context())
            .await
            .expect("renders");
    }
    let after = pequod::render::worker::resident_bytes();
    let stats = renderer.pool().stats();
    assert_eq!(stats.recycled.get(), 6);
    assert_eq!(stats.spawned.get(), 6);
    assert!(
        after < before + (20 << 20),
        "operator RSS grew from {before} to {after} bytes"
    );
}
