//! `pequod render` with bad input of every kind: the exit code and the exact first line of
//! the error, never a panic.

mod common;

use std::io::Write;

/// Runs pequod and returns (exit code, first stderr line, whole stderr).
fn failing(args: &[&str]) -> (i32, String, String) {
    let out = common::pequod(args);
    assert!(
        !out.status.success(),
        "pequod {args:?} unexpectedly succeeded"
    );
    assert!(out.stdout.is_empty(), "nothing on stdout when failing");
    let stderr = String::from_utf8(out.stderr).expect("utf-8");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let first = stderr.lines().next().unwrap_or("").to_string();
    (out.status.code().unwrap_or(-1), first, stderr)
}

fn module_case(module: &str, extra: &[&str]) -> (i32, String, String) {
    let dir = format!("testdata/modules/{module}");
    let mut args = vec![
        "render",
        "-f",
        "testdata/modules/transform.yaml",
        "--module-dir",
        &dir,
    ];
    args.extend_from_slice(extra);
    failing(&args)
}

/// Every bad Transform of `testdata/transforms/bad/` with the exact first line of its error:
/// contract violations name the input path and the contract, policy violations the policy.
const BAD_TRANSFORMS: &[(&str, &str)] = &[
    (
        "postgres-backup-no-destination",
        "error: render failed: contract violation at input.backup: contract broken by the value of `backup`: backup.destinationPath is required when backup.enabled is true, e.g. \"s3://bucket/path\"; expected `checks.Backup` (main.ncl:406:9) (spec.input.json:2:13)",
    ),
    (
        "postgres-backup-wrong-scheme",
        "error: render failed: contract violation at input.backup: contract broken by the value of `backup`: backup.destinationPath \"s3://acme-pg-backups/orders-db\" does not match provider gcs: expected gs://bucket/path; expected `checks.Backup` (main.ncl:406:9) (spec.input.json:2:13)",
    ),
    (
        "postgres-bad-cron",
        "error: render failed: contract violation at input.backup.schedule: contract broken by the value of `schedule`: backup.schedule must have 6 fields, seconds first (CloudNativePG uses robfig/cron with seconds): \"0 2 * * *\" has 5; write \"0 0 2 * * *\"; expected `checks.Cron` (main.ncl:378:13) (spec.input.json:8:17)",
    ),
    (
        "postgres-bad-retention",
        "error: render failed: contract violation at input.backup.retentionPolicy: contract broken by the value of `retentionPolicy`: backup.retentionPolicy must be a positive number followed by d, w or m (e.g. \"30d\", \"4w\", \"6m\"), got \"30 days\"; expected `checks.Retention` (main.ncl:383:13) (spec.input.json:8:24)",
    ),
    (
        "postgres-bad-version",
        "error: render failed: contract violation at input.version: contract broken by the value of `version`: version must be a supported PostgreSQL major version, one of 14, 15, 16, 17, 18, got 12; expected `tables.Version` (main.ncl:72:9) (spec.input.json:3:14)",
    ),
    (
        "postgres-fixed-guc",
        "error: render failed: contract violation at input.parameters: contract broken by the value of `parameters`: parameters: listen_addresses cannot be set: CloudNativePG manages these parameters itself; expected `tables.Parameters` (main.ncl:185:9) (spec.input.json:3:17)",
    ),
    (
        "postgres-ha-without-pdb",
        "error: render failed: policy violations: input.highAvailability.pdb: highAvailability.pdb is false with 3 instances: set it to true (or lower this policy to a warning for a dev cluster that must drain freely) (policy ha-requires-pdb)",
    ),
    (
        "postgres-image-and-catalog",
        "error: render failed: contract violation: contract broken by a value: imageCatalog: image and imageCatalog are mutually exclusive (CloudNativePG takes one or the other); remove one of them; expected `ImageChoice` (main.ncl:496:49) (main.ncl:496:33)",
    ),
    (
        "postgres-image-version-mismatch",
        "error: render failed: contract violation at input.image: contract broken by the value of `image`: image tag \"17.11-standard-trixie\" is for PostgreSQL 17 but version is 16: set version: 17 or use a 16.x image; expected `checks.PgImage version` (main.ncl:78:9) (spec.input.json:2:12)",
    ),
    (
        "postgres-inline-credentials",
        "error: render failed: contract violation at input.backup.credentials: contract broken by the value of `credentials`: backup.credentials: inline credentials (accessKeyId, secretAccessKey) are not allowed; store them in a Secret and set backup.credentials.secretName, or use backup.credentials.externalSecret or inheritFromIdentity; expected `checks.Credentials` (main.ncl:341:13) (spec.input.json:3:20)",
    ),
    (
        "postgres-latest-image",
        "error: render failed: contract violation at input.image: contract broken by the value of `image`: image must not use the tag `latest`: CloudNativePG reads the PostgreSQL version from the tag and rejects it (got \"ghcr.io/cloudnative-pg/postgresql:latest\"); expected `checks.PgImage version` (main.ncl:78:9) (spec.input.json:2:12)",
    ),
    (
        "postgres-parameter-not-string",
        "error: render failed: contract violation at input.parameters: contract broken by the value of `parameters`: parameters: values must be strings (quote them, e.g. max_connections: \"200\"); not a string: max_connections; expected `tables.Parameters` (main.ncl:185:9) (spec.input.json:3:17)",
    ),
    (
        "postgres-pooler-reserved-parameter",
        "error: render failed: contract violation at input.pooler.parameters: contract broken by the value of `parameters`: pooler.parameters: pool_mode cannot be set here; use pooler.poolMode (session or transaction); expected `checks.PoolerParameters` (main.ncl:461:13) (spec.input.json:5:19)",
    ),
    (
        "postgres-pooler-ro-single-instance",
        "error: render failed: contract violation at input.pooler: contract broken by the value of `pooler`: pooler.type ro needs at least 2 instances: with 1 instance the -ro Service has no endpoints (use type rw or r, or raise instances); expected `checks.Pooler instances` (main.ncl:466:9) (spec.input.json:3:13)",
    ),
    (
        "postgres-production-without-backup",
        "error: render failed: policy violations: input.backup.enabled: preset production-ha needs backups: set backup.enabled with a destinationPath and credentials (WAL archiving and scheduled base backups) (policy production-backups)",
    ),
    (
        "postgres-restore-no-source",
        "error: render failed: contract violation at input.restore: contract broken by the value of `restore`: restore: set restore.backupName (a Backup in this namespace) or restore.sourceCluster (the cluster whose object-store backups to recover); expected `checks.Restore name backup database` (main.ncl:434:9) (spec.input.json:3:14)",
    ),
    (
        "postgres-restore-same-archive",
        "error: render failed: contract violation at input.restore: contract broken by the value of `restore`: restore: this cluster would archive its WAL into the archive it recovers from (ObjectStore orders-db-backup, serverName orders-db); set backup.serverName to a new name, e.g. \"orders-db-2\"; expected `checks.Restore name backup database` (main.ncl:434:9) (spec.input.json:10:14)",
    ),
    (
        "postgres-shared-buffers-too-large",
        "error: render failed: contract violation at input.parameters: contract broken by the value of `parameters`: parameters.shared_buffers \"2GB\" exceeds the memory request resources.memory \"1Gi\": lower shared_buffers (25 % of memory is typical) or raise resources.memory; expected `checks.MemoryFitsSharedBuffers resources.memory` (main.ncl:186:9) (spec.input.json:3:17)",
    ),
    (
        "postgres-sync-replicas-too-many",
        "error: render failed: contract violation at input.highAvailability: contract broken by the value of `highAvailability`: highAvailability.syncReplicas (2) must be less than instances (2): at least one instance is the primary; expected `checks.HighAvailability instances` (main.ncl:298:9) (spec.input.json:2:23)",
    ),
    (
        "webservice-autoscaling-min-above-max",
        "error: render failed: contract violation at input.autoscaling: contract broken by the value of `autoscaling`: autoscaling.minReplicas (5) must not exceed autoscaling.maxReplicas (2); expected `checks.Autoscaling` (main.ncl:200:9) (spec.input.json:2:18)",
    ),
    (
        "webservice-database-bad-via",
        "error: render failed: contract violation at input.database.via: contract broken by the value of `via`: database.via must be one of direct, pooler, got \"replica\"; expected `k8s.Enum \"database.via\" [\"direct\", \"pooler\"]` (main.ncl:308:13) (spec.input.json:4:12)",
    ),
    (
        "webservice-database-env-clash",
        "error: render failed: contract violation at input.database: contract broken by the value of `database`: database: env also sets DATABASE_URL, which database injects from Secret orders-db-app; remove them from env; expected `checks.Database env` (main.ncl:327:9) (spec.input.json:2:15)",
    ),
    (
        "webservice-ingress-tls-no-host",
        "error: render failed: contract violation at input.ingress: contract broken by the value of `ingress`: ingress.host is required when ingress.enabled is true (the TLS certificate is issued for it), e.g. host: shop.example.com; expected `checks.Ingress` (main.ncl:266:9) (spec.input.json:3:14)",
    ),
    (
        "webservice-inline-credentials",
        "error: render failed: policy violations: input.env.STRIPE_API_KEY: env.STRIPE_API_KEY looks like a credential written inline; put it in a Secret and load it with envFromSecrets (or database for DB credentials) (policy no-inline-credentials)",
    ),
    (
        "webservice-latest-image",
        "error: render failed: contract violation at input.image: contract broken by the value of `image`: image must be pinned to a tag or digest, not `latest` (got \"ghcr.io/acme/shop-api:latest\"); expected `k8s.PinnedImage` (main.ncl:36:9) (spec.input.json:2:12)",
    ),
    (
        "webservice-misspelt-policy-override",
        "error: render failed: policy violations: spec.policies[0]: the module has no policy `probe-set` (its policies: no-inline-credentials, pdb-for-replicas, pinned-images, probes-set, resources-set, run-as-non-root) (policy probe-set)",
    ),
    (
        "webservice-replicas-string",
        "error: render failed: contract violation at input.replicas: contract broken by the value of `replicas`: replicas must be an integer between 0 and 1000, got \"three\"; expected `k8s.IntBetween \"replicas\" 0 1000` (main.ncl:50:9) (spec.input.json:4:15)",
    ),
    (
        "webservice-replicas-without-pdb",
        "error: render failed: policy violations: input.pdb.enabled: 3 pods without a PodDisruptionBudget: set pdb.enabled to true (policy pdb-for-replicas)",
    ),
    (
        "webservice-unknown-field",
        "error: render failed: contract violation at input: contract broken by a value: extra field `replicsa`; expected `module.Input`; Have you misspelled a field? (spec.input.json:1:1)",
    ),
];

#[test]
fn bad_transforms_fail_with_a_message_naming_the_field() {
    let mut on_disk: Vec<String> =
        std::fs::read_dir(common::repo().join("testdata/transforms/bad"))
            .expect("bad transforms")
            .filter_map(Result::ok)
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_suffix(".yaml")
                    .map(str::to_string)
            })
            .collect();
    on_disk.sort();
    let listed: Vec<&str> = BAD_TRANSFORMS.iter().map(|(name, _)| *name).collect();
    assert_eq!(
        on_disk, listed,
        "every bad transform has an expected message"
    );
    for (name, expected) in BAD_TRANSFORMS {
        let file = format!("testdata/transforms/bad/{name}.yaml");
        let (code, first, stderr) = failing(&["render", "-f", &file]);
        assert_eq!(code, 1, "{name}");
        assert_eq!(first, *expected, "{name}");
        if first.contains("contract violation") {
            // The full Nickel report follows, with the offending input line.
            assert!(stderr.contains("spec.input.json:"), "{name}: {stderr}");
        }
    }
}

#[test]
fn broken_modules_fail_with_located_errors() {
    let cases = [
        (
            "cyclic",
            "error: render failed: graph integrity: dependency cycle: a -> b -> c -> a (each node depends on the next)",
        ),
        (
            "import-abs",
            "error: render failed: forbidden import: import `/etc/passwd` does not refer to a file of the module or of the pequod library (main.ncl:17:65)",
        ),
        (
            "import-dotdot",
            "error: render failed: forbidden import: import `../x.ncl` does not refer to a file of the module or of the pequod library (main.ncl:17:65)",
        ),
        (
            "syntax-error",
            "error: render failed: syntax error: unexpected token (main.ncl:17:5)",
        ),
        (
            "missing-name",
            "error: render failed: graph integrity: node `config`: object has no metadata.name",
        ),
        (
            "duplicate-id",
            "error: render failed: graph integrity: duplicate node id `config`",
        ),
        (
            "unknown-dep",
            "error: render failed: graph integrity: node `config` depends on unknown node `missing`",
        ),
        (
            "schema-typo",
            "error: render failed: schema validation: node cluster (Cluster ledger-db): spec.storage.sise: unknown field; node service (Service ledger-db): spec.ports[0].port: \"5432\" is not of type \"integer\"",
        ),
    ];
    for (module, expected) in cases {
        let (code, first, _) = module_case(module, &[]);
        assert_eq!((code, first.as_str()), (1, expected), "{module}");
    }
}

#[test]
fn runaway_modules_are_stopped_by_the_sandbox() {
    let (code, first, _) = module_case(
        "runaway",
        &["--eval-timeout", "2s", "--eval-memory", "4096"],
    );
    assert_eq!(
        (code, first.as_str()),
        (
            1,
            "error: render failed: evaluation exceeded 2s and was stopped"
        )
    );
    let (code, first, _) = module_case("hog", &["--eval-memory", "256"]);
    assert_eq!(
        (code, first.as_str()),
        (
            1,
            "error: render failed: evaluation exceeded memory limit of 256 MiB and was stopped"
        )
    );
    let (code, first, _) = module_case("deep", &["--eval-timeout", "60s"]);
    assert_eq!(
        (code, first.as_str()),
        (
            1,
            "error: render failed: evaluation overflowed the stack (a value or a recursion nested too deeply)"
        )
    );
}

fn temp_transform(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new()
        .suffix(".yaml")
        .tempfile()
        .expect("temp file");
    file.write_all(text.as_bytes()).expect("written");
    file
}

#[test]
fn unreadable_or_invalid_transform_files_exit_3() {
    let (code, first, _) = failing(&["render", "-f", "testdata/transforms/absent.yaml"]);
    assert_eq!(code, 3);
    assert_eq!(
        first,
        "error: cannot read testdata/transforms/absent.yaml: No such file or directory (os error 2)"
    );

    let broken = temp_transform("apiVersion: [unclosed\n");
    let path = broken.path().display().to_string();
    let (code, first, _) = failing(&["render", "-f", &path]);
    assert_eq!(code, 3);
    assert!(
        first.starts_with(&format!("error: {path}: invalid YAML: ")),
        "{first}"
    );

    let wrong_kind = temp_transform("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n");
    let path = wrong_kind.path().display().to_string();
    let (code, first, _) = failing(&["render", "-f", &path]);
    assert_eq!(code, 3);
    assert_eq!(
        first,
        format!(
            "error: {path}: expected a Transform (platform.pequod.io/v1alpha1), found kind `ConfigMap` apiVersion `v1`"
        )
    );

    let no_module = temp_transform(
        "apiVersion: platform.pequod.io/v1alpha1\nkind: Transform\nmetadata: {name: x}\nspec:\n  input: {}\n",
    );
    let path = no_module.path().display().to_string();
    let (code, first, _) = failing(&["render", "-f", &path]);
    assert_eq!(code, 3);
    assert!(
        first.starts_with(&format!(
            "error: {path}: invalid Transform: spec: missing field `moduleRef`"
        )),
        "{first}"
    );
}

#[test]
fn unresolvable_modules_exit_4() {
    let unknown = temp_transform(
        "apiVersion: platform.pequod.io/v1alpha1\nkind: Transform\nmetadata: {name: x}\nspec:\n  moduleRef: {type: embedded, ref: mysql}\n",
    );
    let path = unknown.path().display().to_string();
    let (code, first, _) = failing(&["render", "-f", &path]);
    assert_eq!(
        (code, first.as_str()),
        (
            4,
            "error: module: unknown embedded module `mysql` (available: postgres, webservice)"
        )
    );
    let (code, first, _) = failing(&[
        "render",
        "-f",
        "testdata/modules/transform.yaml",
        "--module-dir",
        "testdata/modules/absent",
    ]);
    assert_eq!(code, 4);
    assert_eq!(
        first,
        "error: module: cannot read testdata/modules/absent: No such file or directory (os error 2)"
    );
}

#[test]
fn inline_modules_render_and_input_must_be_a_mapping() {
    let inline = temp_transform(
        r#"apiVersion: platform.pequod.io/v1alpha1
kind: Transform
metadata: {name: notes, namespace: docs}
spec:
  moduleRef:
    type: inline
    ref: |
      let ready = import "pequod/ready.ncl" in
      {
        metadata = { name = "notes", version = "1.0.0" },
        context | { name | String, namespace | String },
        Input = { text | String },
        render = fun input => {
          nodes = [{ id = "cm", object = { apiVersion = "v1", kind = "ConfigMap",
                     metadata.name = context.name, data.text = input.text },
                     readyWhen = [ready.exists] }],
        },
      }
  input: {text: hello}
"#,
    );
    let path = inline.path().display().to_string();
    let out = common::pequod_ok(&["render", "-f", &path, "-o", "manifests"]);
    let objects = common::yaml_documents(&out);
    assert_eq!(objects.len(), 1);
    assert_eq!(objects[0]["metadata"]["namespace"], "docs");
    assert_eq!(objects[0]["data"]["text"], "hello");

    let list_input = temp_transform(
        "apiVersion: platform.pequod.io/v1alpha1\nkind: Transform\nmetadata: {name: x}\nspec:\n  moduleRef: {type: embedded, ref: webservice}\n  input: [a]\n",
    );
    let path = list_input.path().display().to_string();
    let (code, first, _) = failing(&["render", "-f", &path]);
    assert_eq!(
        (code, first.as_str()),
        (
            1,
            "error: render failed: input must be a mapping, found a list"
        )
    );

    // A graph larger than the operator would write is refused offline the same way.
    let path = inline.path().display().to_string();
    let (code, first, _) = failing(&["render", "-f", &path, "--max-graph-bytes", "500"]);
    assert_eq!(code, 1);
    assert!(
        first.starts_with("error: render failed: the rendered ResourceGraph is ")
            && first.ends_with(" bytes, over the limit of 500 bytes (--max-graph-bytes): render fewer or smaller objects"),
        "{first}"
    );
}

#[test]
fn entrypoint_and_digest_pins_are_honoured() {
    let digest_of = |args: &[&str]| {
        let out = common::pequod_ok(args);
        let graph: serde_json::Value = serde_yaml::from_str(&out).expect("YAML");
        graph["spec"]["metadata"]["moduleDigest"]
            .as_str()
            .expect("digest")
            .to_string()
    };
    let digest = digest_of(&["render", "-f", "testdata/transforms/webservice.yaml"]);
    let pinned = temp_transform(&format!(
        "apiVersion: platform.pequod.io/v1alpha1\nkind: Transform\nmetadata: {{name: shop-api, namespace: shop}}\nspec:\n  moduleRef: {{type: embedded, ref: webservice, digest: \"{digest}\"}}\n  input: {{name: shop-api, image: ghcr.io/acme/shop-api:1.4.2}}\n"
    ));
    let path = pinned.path().display().to_string();
    assert_eq!(digest_of(&["render", "-f", &path]), digest);

    let tampered = temp_transform(
        "apiVersion: platform.pequod.io/v1alpha1\nkind: Transform\nmetadata: {name: x}\nspec:\n  moduleRef: {type: embedded, ref: webservice, digest: \"sha256:0000\"}\n  input: {}\n",
    );
    let path = tampered.path().display().to_string();
    let (code, first, _) = failing(&["render", "-f", &path]);
    assert_eq!(code, 4);
    assert_eq!(
        first,
        format!(
            "error: module: module digest {digest} does not match the pinned digest sha256:0000"
        )
    );

    let entry = temp_transform(
        "apiVersion: platform.pequod.io/v1alpha1\nkind: Transform\nmetadata: {name: x}\nspec:\n  moduleRef: {type: embedded, ref: webservice, entrypoint: start.ncl}\n  input: {}\n",
    );
    let path = entry.path().display().to_string();
    let (code, first, _) = failing(&["render", "-f", &path]);
    assert_eq!(
        (code, first.as_str()),
        (4, "error: module: module has no entrypoint `start.ncl`")
    );
}

#[test]
fn a_closed_output_pipe_is_not_an_error() {
    use std::process::{Command, Stdio};
    let mut child = Command::new(common::pequod_bin())
        .args(["render", "-f", "testdata/transforms/webservice.yaml"])
        .current_dir(common::repo())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("pequod starts");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("pequod ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}: {stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn error_policies_block_the_render_and_overrides_lower_them() {
    let (code, first, _) = module_case("policies", &[]);
    assert_eq!(
        (code, first.as_str()),
        (
            1,
            "error: render failed: policy violations: input.replicas: at least 2 replicas are required, got 1 (policy require-replicas)"
        )
    );
    let lowered = temp_transform(
        "apiVersion: platform.pequod.io/v1alpha1\nkind: Transform\nmetadata: {name: test, namespace: testing}\nspec:\n  moduleRef: {type: inline, ref: \"\"}\n  input: {team: payments}\n  policies:\n  - {name: require-replicas, enforcement: Warn}\n  - {name: prefer-labels, enforcement: Sometimes}\n",
    );
    let path = lowered.path().display().to_string();
    let out = common::pequod_ok(&[
        "render",
        "-f",
        &path,
        "--module-dir",
        "testdata/modules/policies",
        "-o",
        "json",
    ]);
    let graph: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(
        graph["spec"]["violations"],
        serde_json::json!([
            {"path": "spec.policies[1]", "message": "enforcement `Sometimes` is not Error or Warning; override ignored",
             "severity": "Warning", "policy": "prefer-labels"},
            {"path": "input.replicas", "message": "at least 2 replicas are required, got 1",
             "severity": "Warning", "policy": "require-replicas"},
        ])
    );
}

#[test]
fn module_check_renders_every_example_and_fails_on_any_finding() {
    let out = common::pequod(&["module", "check", "testdata/modules/policies"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "ok    examples/a-ok.yaml: 1 node\n\
         FAIL  examples/b-lowered.yaml: policy warning: input.replicas: at least 2 replicas are required, got 1 (1 in all)\n\
         FAIL  examples/c-broken.yaml: contract violation at input.replicas: contract broken by the value of `replicas`; expected `Number` (main.ncl:8:16) (spec.input.json:2:15)\n\
         1 passed, 2 failed\n"
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: 2 of 3 examples of testdata/modules/policies failed\n"
    );
    let (code, first, _) = failing(&["module", "check", "testdata/modules/cyclic"]);
    assert_eq!(
        (code, first.as_str()),
        (
            4,
            "error: cannot read testdata/modules/cyclic/examples: No such file or directory (os error 2)"
        )
    );
}

#[test]
fn module_inspect_lists_the_input_fields_with_docs_and_defaults() {
    let table = common::pequod_ok(&[
        "module",
        "inspect",
        "testdata/modules/inspect",
        "-o",
        "markdown",
    ]);
    assert_eq!(
        table,
        "| input | contract | default | meaning |\n\
         |---|---|---|---|\n\
         | `budgets` | `Array Unit` | `[]` | Budgets. |\n\
         | `budgets[].amount` | `Number` | **required** | How much. |\n\
         | `name` | `String` | **required** | Name of everything. |\n\
         | `replicas` | `Number` | `2` | How many. |\n\
         | `port` | `Port` | `8080` | Port to listen on: any TCP port. |\n\
         | `tier` | `[\\| 'small, 'large \\|]` | `if replicas > 3 then 'large else 'small` | Size. |\n\
         | `owner` | `String` | — |  |\n\
         | `kind` | `String` | fixed: `\"Service\"` | Always Service. |\n\
         | `storage` | `{ … }` | `{}` | Data volume. |\n\
         | `storage.size` | `String` | `\"1Gi\"` | Volume size. |\n\
         | `storage.class` | `String` | — | StorageClass. |\n\
         | `limits` | `Limits` | `{}` | Limits of each pod. |\n\
         | `limits.cpu` | `String` | — | CPU limit. |\n\
         | `limits.memory` | `String` | `\"256Mi\"` | Memory limit. |\n\
         | `quotas` | `Array Limits` | `[]` | Limits per namespace. |\n\
         | `quotas[].cpu` | `String` | — | CPU limit. |\n\
         | `quotas[].memory` | `String` | `\"256Mi\"` | Memory limit. |\n\
         | `users` | `Array { … }` | `[]` | Accounts. |\n\
         | `users[].login` | `String` | **required** | Login name. |\n\
         | `users[].admin` | `Bool` | `false` | Administrator. |\n\
         | `retries` | `Number` | `3` | Retries. |\n\
         | `mode` | `String` | fixed: `\"strict\"` | Forced. |\n\
         | `tree` | `Tree` | — | A tree. |\n\
         | `tree.label` | `String` | **required** | Node label. |\n\
         | `tree.child` | `Tree` | — | Subtree. |\n\
         | `tree.child.label` | `String` | **required** | Node label. |\n\
         | `tree.child.child` | `Tree` | — | Subtree. |\n"
    );
    let yaml = common::pequod_ok(&["module", "inspect", "testdata/modules/inspect"]);
    let shown: serde_json::Value = serde_yaml::from_str(&yaml).expect("YAML");
    assert_eq!(
        shown["module"],
        serde_json::json!({"name": "inspect", "version": "1.2.3", "description": "An Input contract to list."})
    );
    assert_eq!(shown["files"], serde_json::json!(["main.ncl"]));
    assert_eq!(
        shown["input"][4],
        serde_json::json!({
            "path": "port",
            "contracts": ["Port"],
            "presence": "default",
            "default": "8080",
            "doc": "Port to listen on:\nany TCP port.",
        })
    );
    assert_eq!(
        shown["input"][6],
        serde_json::json!({"path": "owner", "contracts": ["String"], "presence": "optional"})
    );
    let json = common::pequod_ok(&[
        "module",
        "inspect",
        "testdata/modules/inspect",
        "-o",
        "json",
    ]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&json).expect("JSON"),
        shown
    );
}

#[test]
fn module_inspect_of_a_module_without_input_fields_says_so() {
    let cases = [
        (
            "testdata/modules/no-input",
            1,
            "error: cannot inspect the module: evaluation error: missing field `Input`; Did you mean `Inputs`?",
        ),
        (
            "./testdata/modules/absent",
            4,
            "error: module: ./testdata/modules/absent is not a module directory",
        ),
        (
            "testdata/modules/syntax-error",
            1,
            "error: cannot inspect the module: syntax error: unexpected token (main.ncl:17:5)",
        ),
    ];
    for (module, expected_code, expected) in cases {
        let (code, first, _) = failing(&["module", "inspect", module]);
        assert_eq!(
            (code, first.as_str()),
            (expected_code, expected),
            "{module}"
        );
    }
    // An `Input` that is a contract but not a record is valid (the module renders and can be
    // published): it is shown without fields, and has no table.
    common::pequod_ok(&[
        "render",
        "-f",
        "testdata/modules/transform.yaml",
        "--module-dir",
        "testdata/modules/input-not-record",
    ]);
    let shown = common::pequod_ok(&["module", "inspect", "testdata/modules/input-not-record"]);
    let shown: serde_json::Value = serde_yaml::from_str(&shown).expect("YAML");
    assert_eq!(shown["module"]["name"], "input-not-record");
    assert_eq!(shown.get("input"), None);
    let (code, first, _) = failing(&[
        "module",
        "inspect",
        "testdata/modules/input-not-record",
        "-o",
        "markdown",
    ]);
    assert_eq!(
        (code, first.as_str()),
        (
            1,
            "error: the module's `Input` is not a record contract: it has no fields to list"
        )
    );
}

/// Bad `--policy-module` and `--policy-config` flags: the exit code and the exact message.
#[test]
fn bad_policy_module_flags_are_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let not_yaml = dir.path().join("config.yaml");
    std::fs::write(&not_yaml, "allowedRegistries: [unclosed").expect("written");
    let broken = dir.path().join("broken");
    std::fs::create_dir_all(&broken).expect("directory");
    std::fs::write(broken.join("main.ncl"), "{ metadata = ").expect("written");
    let not_yaml = format!("baseline={}", not_yaml.display());
    let broken = broken.display().to_string();
    let render = |extra: &[&str]| {
        let mut args = vec![
            "render",
            "-f",
            "testdata/policies/baseline/pass/compliant.yaml",
            "--module-dir",
            "testdata/modules/workload",
        ];
        args.extend_from_slice(extra);
        failing(&args)
    };
    let cases: [(&[&str], i32, String); 6] = [
        (
            &["--policy-module", "embedded:nope"],
            4,
            "error: policy module embedded:nope: no shipped policy module `nope` (shipped: baseline)".into(),
        ),
        (
            &["--policy-module", "./no/such/dir"],
            4,
            "error: policy module ./no/such/dir: ./no/such/dir is not a module directory".into(),
        ),
        (
            &["--policy-module", "configmap:rules"],
            4,
            "error: policy module configmap:rules: a ConfigMap is read by the operator; offline, name the module's directory".into(),
        ),
        (
            &["--policy-module", "embedded:baseline", "--policy-config", "other=testdata/policies/baseline/config.yaml"],
            2,
            "error: --policy-config other: no policy module is named other (loaded: baseline)".into(),
        ),
        (
            &["--policy-module", "embedded:baseline", "--policy-config", "baseline"],
            2,
            "error: --policy-config baseline: expected NAME=FILE".into(),
        ),
        (
            &["--policy-module", "embedded:baseline", "--policy-config", &not_yaml],
            3,
            format!("error: {}: invalid YAML: ", &not_yaml["baseline=".len()..]),
        ),
    ];
    for (extra, code, message) in cases {
        let (exit, first, all) = render(extra);
        assert_eq!(exit, code, "{extra:?}: {all}");
        assert!(first.starts_with(&message), "{extra:?}: {first}");
    }
    let (exit, first, _) = render(&["--policy-module", &broken]);
    assert_eq!(exit, 4);
    assert!(
        first.starts_with(&format!("error: policy module {broken}: ")),
        "{first}"
    );
    // Two policy modules of one name: their configurations and reports would mix.
    let twin = dir.path().join("twin");
    std::fs::create_dir_all(&twin).expect("directory");
    std::fs::write(
        twin.join("main.ncl"),
        r#"{ metadata = { name = "baseline", version = "9.9.9" }, Input = {}, policies = {} }"#,
    )
    .expect("written");
    let twin = twin.display().to_string();
    let (exit, first, all) = render(&[
        "--policy-module",
        "embedded:baseline",
        "--policy-module",
        &twin,
    ]);
    assert_eq!(
        (exit, first),
        (
            4,
            format!(
                "error: policy module {twin}: its name `baseline` is also the name of embedded:baseline"
            )
        ),
        "{all}"
    );

    // A tenant's module cannot declare a policy named like a cluster policy, overridable,
    // to lower the cluster's with an override of that name.
    let impostor = dir.path().join("impostor");
    std::fs::create_dir_all(&impostor).expect("directory");
    std::fs::write(
        impostor.join("main.ncl"),
        r#"{
  metadata = { name = "impostor", version = "1.0.0" },
  Input = { .. },
  policies = { "baseline/no-privileged" = { description = "no", overridable = true, check = fun ctx => [] } },
  render = fun input => { nodes = [] },
}"#,
    )
    .expect("written");
    let (exit, first, _) = failing(&[
        "render",
        "-f",
        "testdata/policies/baseline/refused/no-privileged-lowered.yaml",
        "--module-dir",
        &impostor.display().to_string(),
        "--policy-module",
        "embedded:baseline",
    ]);
    assert_eq!(exit, 1);
    assert_eq!(
        first,
        "error: render failed: module output is not a valid graph: policy `baseline/no-privileged`: a module's policy names may not contain `/` (`module/policy` names a cluster policy)"
    );
}
