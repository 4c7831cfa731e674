//! `pequod diff`: what applying a Transform would change in the cluster, found with the
//! operator's engine and a server-side dry run, nothing written.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use kube::api::Api;
use serde_json::{Value, json};

use super::render::{Unplanned, plan_offline, read_transform};
use super::{CliError, exit, write_stdout, yaml};
use crate::api::{ObjectRef, ResourceGraph, Transform};
use crate::exec::preview::{Change, Fate, Leaving, NodePreview, Preview, preview};
use crate::exec::{Appliers, ExecConfig, Executor, Identity};

/// Flags of `pequod diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// A Transform in the cluster to diff (its input edited with `--set`); or use `-f`.
    pub name: Option<String>,
    /// The Transform to diff, from a file (YAML or JSON; `-` for stdin).
    #[arg(short = 'f', long = "file", conflicts_with = "name")]
    pub file: Option<PathBuf>,
    /// The namespace (default: the Transform file's, else the kubeconfig context's).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Set a field of the Transform's input: `path=value`, the path dotted
    /// (`resources.cpu=500m`), the value read as YAML, as kubectl reads it (repeatable).
    #[arg(long = "set", value_name = "PATH=VALUE")]
    pub set: Vec<String>,
    /// Output: text (a unified diff per object) or json.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = DiffFormat::Text)]
    pub output: DiffFormat,
    /// Use the module in this directory instead of the Transform's moduleRef.
    #[arg(long)]
    pub module_dir: Option<PathBuf>,
    /// The service account graphs that name none act as (the operator's
    /// `--default-service-account`); without either, the dry run acts as you.
    #[arg(long, value_name = "NAME")]
    pub default_service_account: Option<String>,
    /// The operator allows objects in other namespaces than the Transform's.
    #[arg(long)]
    pub allow_cross_namespace: bool,
    /// The operator allows cluster-scoped objects.
    #[arg(long)]
    pub allow_cluster_scoped: bool,
    /// Registries, cache, evaluation limits and policy modules.
    #[command(flatten)]
    pub offline: super::render::OfflineArgs,
}

/// The headers of a diff of the live object and the dry run's.
const APPLY: (&str, &str) = ("live", "after apply");

/// How `pequod diff` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DiffFormat {
    /// Per object its change, with a unified diff of the fields Pequod applies.
    Text,
    /// One JSON document for pipelines.
    Json,
}

/// Runs `pequod diff`: exit 0 when nothing would change, 1 when something would.
pub async fn run(args: DiffArgs) -> Result<u8, CliError> {
    let client = kube::Client::try_default().await.map_err(|e| {
        CliError::new(
            exit::INTERNAL,
            format!("cannot connect to the Kubernetes API: {e}"),
        )
    })?;
    let mut transform = transform_of(&args, &client).await?;
    for assignment in &args.set {
        set_input(&mut transform, assignment)?;
    }
    let namespace = transform.metadata.namespace.clone().unwrap_or_default();
    let planned = plan_offline(&transform, args.module_dir.as_deref(), &args.offline)
        .await
        .map_err(|error| match error {
            Unplanned::Module(error) | Unplanned::Eval(error) => error,
            Unplanned::Render(error) => not_previewed(format!("render failed: {error}")),
            Unplanned::Plan(error) => not_previewed(format!("render failed: {error}")),
        })?;
    let graph = planned.graph;
    let graph_name = graph.metadata.name.clone().unwrap_or_default();
    let failed = |e: kube::Error| CliError::new(exit::INTERNAL, format!("API request failed: {e}"));
    let current = Api::<ResourceGraph>::namespaced(client.clone(), &namespace)
        .get_opt(&graph_name)
        .await
        .map_err(failed)?;
    let inventory = current
        .and_then(|graph| graph.status)
        .map(|status| status.inventory)
        .unwrap_or_default();

    let identity = Identity::of_graph(
        &namespace,
        graph.spec.service_account_name.as_deref(),
        args.default_service_account.as_deref(),
    );
    let config = kube::Config::infer()
        .await
        .map_err(|e| CliError::new(exit::INTERNAL, format!("cannot read the kubeconfig: {e}")))?;
    let appliers = Appliers::new(config)
        .map_err(|e| CliError::new(exit::INTERNAL, format!("cannot make a client: {e}")))?;
    let applier = appliers
        .of(&identity)
        .map_err(|e| CliError::new(exit::INTERNAL, e.to_string()))?;
    let exec_config = ExecConfig {
        allow_cross_namespace: args.allow_cross_namespace,
        allow_cluster_scoped: args.allow_cluster_scoped,
    };
    let applies = Arc::new(tokio::sync::Semaphore::new(8));
    let executor = Executor {
        applier,
        identity: &identity,
        config: &exec_config,
        applies: &applies,
        live: None,
    };
    let preview = preview(&executor, &graph, &inventory).await;

    let who = match &identity {
        Identity::Operator => "you (the kubeconfig's user)".to_string(),
        other => other.to_string(),
    };
    let about = About {
        transform: format!(
            "{namespace}/{}",
            transform.metadata.name.clone().unwrap_or_default()
        ),
        module: format!(
            "{} {} ({})",
            graph.spec.metadata.module,
            graph.spec.metadata.version,
            graph.spec.metadata.module_digest
        ),
        identity: who,
    };
    let text = match args.output {
        DiffFormat::Text => text(
            &about,
            &preview,
            std::io::stdout().is_terminal() && colour_wanted(),
        ),
        DiffFormat::Json => json_report(&about, &preview),
    };
    write_stdout(&text)?;
    let refused = preview
        .nodes
        .iter()
        .any(|node| matches!(node.change, Change::Refused { .. }))
        || preview
            .leaving
            .iter()
            .any(|leaving| matches!(leaving.fate, Fate::Unknown(_)));
    if refused {
        return Err(not_previewed(
            "some objects could not be previewed: the pass would fail on them (see above)".into(),
        ));
    }
    Ok(if changes(&preview) { exit::CHANGES } else { 0 })
}

fn not_previewed(message: String) -> CliError {
    CliError::new(exit::NOT_PREVIEWED, message)
}

/// Colour unless `NO_COLOR` says otherwise (https://no-color.org).
pub(super) fn colour_wanted() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty())
}

/// The Transform to diff: from the file, or from the cluster.
async fn transform_of(args: &DiffArgs, client: &kube::Client) -> Result<Transform, CliError> {
    let mut transform = match (&args.file, &args.name) {
        (Some(file), _) => read_transform(file)?,
        (None, Some(name)) => {
            let namespace = args
                .namespace
                .clone()
                .unwrap_or_else(|| client.default_namespace().to_string());
            Api::<Transform>::namespaced(client.clone(), &namespace)
                .get_opt(name)
                .await
                .map_err(|e| CliError::new(exit::INTERNAL, format!("API request failed: {e}")))?
                .ok_or_else(|| {
                    CliError::new(
                        exit::NOT_FOUND,
                        format!("Transform {namespace}/{name} not found"),
                    )
                })?
        }
        (None, None) => {
            return Err(CliError::new(
                exit::USAGE,
                "name a Transform in the cluster, or give one with -f FILE",
            ));
        }
    };
    let namespace = args
        .namespace
        .clone()
        .or_else(|| transform.metadata.namespace.clone())
        .unwrap_or_else(|| client.default_namespace().to_string());
    if let Some(own) = transform.metadata.namespace.as_deref()
        && own != namespace
    {
        return Err(CliError::new(
            exit::BAD_INPUT_FILE,
            format!("the Transform's namespace is {own}, not {namespace} (-n)"),
        ));
    }
    transform.metadata.namespace = Some(namespace);
    Ok(transform)
}

/// Applies one `--set path=value` to the Transform's input.
fn set_input(transform: &mut Transform, assignment: &str) -> Result<(), CliError> {
    let bad = |message: String| {
        CliError::new(
            exit::BAD_INPUT_FILE,
            format!("--set {assignment}: {message}"),
        )
    };
    let (path, value) = assignment
        .split_once('=')
        .ok_or_else(|| bad("expected PATH=VALUE".into()))?;
    let keys: Vec<&str> = path.split('.').collect();
    if keys.iter().any(|key| key.is_empty()) {
        return Err(bad("the path has an empty key".into()));
    }
    // As kubectl would read it in the Transform's YAML.
    let decoded = crate::api::yaml::from_str_at(value, &format!("spec.input.{path}"))
        .map_err(|e| bad(format!("invalid value: {e}")))?;
    for warning in &decoded.warnings {
        eprintln!("warning: --set {assignment}: {warning}");
    }
    let value = decoded.value;
    let input = &mut transform.spec.input;
    if input.is_null() {
        *input = Value::Object(Default::default());
    }
    let mut here = input;
    for key in &keys[..keys.len() - 1] {
        let map = here
            .as_object_mut()
            .ok_or_else(|| bad(format!("{key}: the input there is not a record")))?;
        here = map
            .entry(key.to_string())
            .or_insert_with(|| Value::Object(Default::default()));
    }
    let last = keys[keys.len() - 1];
    here.as_object_mut()
        .ok_or_else(|| bad(format!("{last}: the input there is not a record")))?
        .insert(last.to_string(), value);
    Ok(())
}

/// Whether the preview changes the cluster.
fn changes(preview: &Preview) -> bool {
    preview.nodes.iter().any(|node| node.change.changes())
        || preview
            .leaving
            .iter()
            .any(|leaving| matches!(leaving.fate, Fate::Pruned | Fate::Orphaned(_)))
}

/// What the report is about.
struct About {
    transform: String,
    module: String,
    identity: String,
}

/// `Kind namespace/name`.
fn describe(object: &ObjectRef) -> String {
    match &object.namespace {
        Some(namespace) => format!("{} {namespace}/{}", object.kind, object.name),
        None => format!("{} {}", object.kind, object.name),
    }
}

/// A Secret's values, masked: `***`, or `*** (before)` and `*** (after)` where they differ.
/// The Secret is the value itself, or its `object` (a graph's node).
fn masked(
    object: &ObjectRef,
    before: Option<&Value>,
    after: Option<&Value>,
) -> (Option<Value>, Option<Value>) {
    let mut before = before.cloned();
    let mut after = after.cloned();
    if object.kind != "Secret" || object.api_version != "v1" {
        return (before, after);
    }
    let body = |side: &Option<Value>| {
        side.as_ref()
            .map(|value| value.get("object").unwrap_or(value).clone())
    };
    let (old, new) = (body(&before), body(&after));
    for field in ["data", "stringData"] {
        let value_of = |side: &Option<Value>, key: &str| {
            side.as_ref()
                .and_then(|s| s.get(field))
                .and_then(|values| values.get(key))
                .cloned()
        };
        let differs = |key: &str| {
            let (was, will) = (value_of(&old, key), value_of(&new, key));
            was.is_some() && will.is_some() && was != will
        };
        for (side, label) in [(&mut before, "before"), (&mut after, "after")] {
            let Some(side) = side.as_mut() else { continue };
            let secret = if side.get("object").is_some() {
                &mut side["object"]
            } else {
                side
            };
            if let Some(values) = secret.get_mut(field).and_then(Value::as_object_mut) {
                for (key, value) in values.iter_mut() {
                    *value = Value::String(if differs(key) {
                        format!("*** ({label})")
                    } else {
                        "***".into()
                    });
                }
            }
        }
    }
    (before, after)
}

fn yaml_of(value: Option<&Value>) -> String {
    value
        .map(|value| yaml::to_string(value).unwrap_or_else(|e| format!("# cannot print: {e}\n")))
        .unwrap_or_default()
}

/// The unified diff of one object, `before` → `after` (Secret values masked), headed by
/// `labels`.
pub(super) fn unified(
    object: &ObjectRef,
    before: Option<&Value>,
    after: Option<&Value>,
    labels: (&str, &str),
) -> String {
    let (before, after) = masked(object, before, after);
    let (old, new) = (yaml_of(before.as_ref()), yaml_of(after.as_ref()));
    similar::TextDiff::from_lines(&old, &new)
        .unified_diff()
        .context_radius(3)
        .header(labels.0, labels.1)
        .to_string()
}

pub(super) fn coloured(diff: &str, colour: bool) -> String {
    let mut out = String::new();
    for line in diff.lines() {
        let paint = match line.chars().next() {
            _ if !colour => None,
            Some('+') if !line.starts_with("+++") => Some("32"),
            Some('-') if !line.starts_with("---") => Some("31"),
            Some('@') => Some("36"),
            _ => None,
        };
        match paint {
            Some(code) => {
                let _ = writeln!(out, "    \x1b[{code}m{line}\x1b[0m");
            }
            None => {
                let _ = writeln!(out, "    {line}");
            }
        }
    }
    out
}

/// The word a change is printed with.
fn action(change: &Change) -> &'static str {
    match change {
        Change::Create { .. } => "create",
        Change::Update { .. } => "update",
        Change::Unchanged => "unchanged",
        Change::Observed => "observed",
        Change::Refused { .. } => "refused",
    }
}

fn fate_word(fate: &Fate) -> &'static str {
    match fate {
        Fate::Pruned => "prune",
        Fate::Orphaned(_) => "orphan",
        Fate::Nothing => "gone",
        Fate::Unknown(_) => "unknown",
    }
}

/// The text report.
fn text(about: &About, preview: &Preview, colour: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Transform {}, module {}, dry run as {}",
        about.transform, about.module, about.identity
    );
    for NodePreview { id, object, change } in &preview.nodes {
        let _ = write!(
            out,
            "{:<10} {} (node {id})",
            action(change),
            describe(object)
        );
        match change {
            Change::Refused { reason, message } => {
                let _ = writeln!(out, ": {reason}: {message}");
            }
            Change::Create { after } => {
                let _ = writeln!(out);
                out.push_str(&coloured(
                    &unified(object, None, Some(after), APPLY),
                    colour,
                ));
            }
            Change::Update { before, after } => {
                let _ = writeln!(out);
                out.push_str(&coloured(
                    &unified(object, Some(before), Some(after), APPLY),
                    colour,
                ));
            }
            Change::Unchanged | Change::Observed => {
                let _ = writeln!(out);
            }
        }
    }
    for Leaving {
        object,
        node_id,
        fate,
    } in &preview.leaving
    {
        let _ = write!(
            out,
            "{:<10} {} (node {node_id}, left the graph)",
            fate_word(fate),
            describe(object)
        );
        match fate {
            Fate::Orphaned(why) => {
                let _ = writeln!(out, ": stays, {why}");
            }
            Fate::Unknown(error) => {
                let _ = writeln!(out, ": cannot be read: {error}");
            }
            Fate::Pruned | Fate::Nothing => {
                let _ = writeln!(out);
            }
        }
    }
    let _ = writeln!(out, "{}", summary_line(preview));
    out
}

fn counts(preview: &Preview) -> BTreeMap<&'static str, usize> {
    let mut counts = BTreeMap::new();
    for node in &preview.nodes {
        *counts.entry(action(&node.change)).or_default() += 1;
    }
    for leaving in &preview.leaving {
        *counts.entry(fate_word(&leaving.fate)).or_default() += 1;
    }
    counts
}

fn summary_line(preview: &Preview) -> String {
    let counts = counts(preview);
    let count = |word: &str| counts.get(word).copied().unwrap_or(0);
    format!(
        "{} to create, {} to update, {} unchanged, {} observed, {} to prune, {} to orphan, {} refused",
        count("create"),
        count("update"),
        count("unchanged"),
        count("observed"),
        count("prune"),
        count("orphan"),
        count("refused") + count("unknown"),
    )
}

/// The JSON report: the same, with each change's diff as text (never coloured).
fn json_report(about: &About, preview: &Preview) -> String {
    let nodes: Vec<Value> = preview
        .nodes
        .iter()
        .map(|NodePreview { id, object, change }| {
            let mut node = json!({
                "id": id,
                "action": action(change),
                "object": object,
            });
            match change {
                Change::Create { after } => {
                    node["diff"] = unified(object, None, Some(after), APPLY).into()
                }
                Change::Update { before, after } => {
                    node["diff"] = unified(object, Some(before), Some(after), APPLY).into();
                }
                Change::Refused { reason, message } => {
                    node["reason"] = reason.clone().into();
                    node["message"] = message.clone().into();
                }
                Change::Unchanged | Change::Observed => {}
            }
            node
        })
        .collect();
    let leaving: Vec<Value> = preview
        .leaving
        .iter()
        .map(
            |Leaving {
                 object,
                 node_id,
                 fate,
             }| {
                let mut entry =
                    json!({"nodeId": node_id, "action": fate_word(fate), "object": object});
                match fate {
                    Fate::Orphaned(why) => entry["reason"] = why.to_string().into(),
                    Fate::Unknown(error) => entry["message"] = error.clone().into(),
                    Fate::Pruned | Fate::Nothing => {}
                }
                entry
            },
        )
        .collect();
    let report = json!({
        "transform": about.transform,
        "module": about.module,
        "identity": about.identity,
        "changed": changes(preview),
        "nodes": nodes,
        "leaving": leaving,
        "summary": counts(preview),
    });
    format!(
        "{}\n",
        serde_json::to_string_pretty(&report).unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> ObjectRef {
        ObjectRef {
            api_version: "v1".into(),
            kind: "Secret".into(),
            namespace: Some("shop".into()),
            name: "creds".into(),
            uid: None,
        }
    }

    #[test]
    fn secret_values_are_masked_and_marked_where_they_change() {
        let before = json!({"data": {"user": "YQ==", "password": "b2xk"}});
        let after = json!({"data": {"user": "YQ==", "password": "bmV3", "token": "dA=="}});
        let (before, after) = masked(&secret(), Some(&before), Some(&after));
        assert_eq!(
            before,
            Some(json!({"data": {"user": "***", "password": "*** (before)"}}))
        );
        assert_eq!(
            after,
            Some(json!({"data": {"user": "***", "password": "*** (after)", "token": "***"}}))
        );
        // A graph's node holds the Secret in `object`.
        let node = json!({"id": "creds", "object": {"stringData": {"password": "plain"}}});
        let (_, shown) = masked(&secret(), None, Some(&node));
        assert_eq!(
            shown,
            Some(json!({"id": "creds", "object": {"stringData": {"password": "***"}}}))
        );
        let config = ObjectRef {
            kind: "ConfigMap".into(),
            ..secret()
        };
        let data = json!({"data": {"a": "b"}});
        assert_eq!(masked(&config, Some(&data), None).0, Some(data.clone()));
    }

    #[test]
    fn set_edits_the_input_along_a_dotted_path() {
        let mut transform: Transform = serde_json::from_value(json!({
            "apiVersion": "platform.pequod.io/v1alpha1", "kind": "Transform",
            "metadata": {"name": "shop"},
            "spec": {"moduleRef": {"type": "embedded", "ref": "webservice"}, "input": {"image": "web:1", "resources": {"cpu": "1"}}},
        }))
        .expect("a Transform");
        set_input(&mut transform, "replicas=3").expect("set");
        set_input(&mut transform, "resources.memory=256Mi").expect("set");
        set_input(&mut transform, "labels.team=shop").expect("set");
        // Values read as kubectl would read them in the file: YAML 1.1.
        set_input(&mut transform, "debug=on").expect("set");
        set_input(&mut transform, "mode=0644").expect("set");
        assert_eq!(
            transform.spec.input,
            json!({"image": "web:1", "replicas": 3, "resources": {"cpu": "1", "memory": "256Mi"}, "labels": {"team": "shop"}, "debug": true, "mode": 420})
        );
        let error = set_input(&mut transform, "image.tag=2").expect_err("not a record");
        assert_eq!(
            error.to_string(),
            "--set image.tag=2: tag: the input there is not a record"
        );
        let error = set_input(&mut transform, "a..b=1").expect_err("empty key");
        assert_eq!(error.to_string(), "--set a..b=1: the path has an empty key");
    }
}
