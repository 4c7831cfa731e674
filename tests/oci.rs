//! Modules through a real OCI registry (the Debian `docker-registry` on loopback):
//! `pequod module publish | pull | inspect`, `pequod render` of `moduleRef.type: oci` by tag
//! and by digest, digest pins, credentials, and artifacts pushed by another OCI client
//! (skopeo).

mod common;
#[path = "common/net.rs"]
mod net;
#[path = "common/registry.rs"]
mod registry;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use pequod::api::{ModuleRef, ModuleType};
use pequod::module::git::GitAuth;
use pequod::module::oci::{CONFIG_MEDIA_TYPE, CONTENT_MEDIA_TYPE, Registry, pack};
use pequod::module::{self, ModuleBundle, ModuleCache, Resolved, SourceError, Sources};
use registry::{
    ENDLESS, FOREIGN_PAGE_SECRET, HOSTILE_DIGEST, HostileRegistry, Hostility, TestRegistry,
};
use serde_json::{Value, json};

/// `pequod ARGS`: (exit code, stdout, stderr).
fn pequod(args: &[&str]) -> (i32, String, String) {
    let out = common::pequod(args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A copy of a Transform file with its moduleRef replaced.
fn transform_with(file: &str, module_ref: Value, dir: &Path) -> String {
    let text = std::fs::read_to_string(common::repo().join(file)).expect("Transform file");
    let mut transform: Value = serde_yaml::from_str(&text).expect("YAML");
    transform["spec"]["moduleRef"] = module_ref;
    let path = dir.join("transform.json");
    std::fs::write(&path, transform.to_string()).expect("written");
    path.display().to_string()
}

#[test]
fn publish_is_reproducible_and_renders_by_tag_and_by_digest() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().expect("temporary directory");
    let insecure = ["--insecure-registry", registry.host.as_str()];
    let reference = format!("{}/platforms/postgres:0.2.0", registry.host);
    let again = format!("{}/platforms/postgres:latest", registry.host);
    let (code, first, stderr) = pequod(
        &[
            &["module", "publish", "platforms/postgres", &reference][..],
            &insecure,
        ]
        .concat(),
    );
    assert_eq!(code, 0, "{stderr}");
    let (_, second, _) = pequod(
        &[
            &["module", "publish", "platforms/postgres", &again][..],
            &insecure,
        ]
        .concat(),
    );
    assert!(first.starts_with("sha256:") && first.len() == 72, "{first}");
    assert_eq!(first, second, "the same directory, the same digest");
    let digest = first.trim();

    // By tag and by digest: the same graph as the embedded module.
    let (_, embedded, _) = pequod(&["render", "-f", "testdata/transforms/postgres-minimal.yaml"]);
    let by_tag = transform_with(
        "testdata/transforms/postgres-minimal.yaml",
        json!({"type": "oci", "ref": reference}),
        dir.path(),
    );
    let (code, rendered, stderr) = pequod(&[&["render", "-f", &by_tag][..], &insecure].concat());
    assert_eq!(code, 0, "{stderr}");
    // The graph records the manifest digest, the one a pin names.
    assert_eq!(rendered, common::with_module_digest(&embedded, digest));
    let pinned = format!("{}/platforms/postgres@{digest}", registry.host);
    let by_digest = transform_with(
        "testdata/transforms/postgres-minimal.yaml",
        json!({"type": "oci", "ref": pinned, "digest": digest}),
        dir.path(),
    );
    let (code, rendered, stderr) = pequod(&[&["render", "-f", &by_digest][..], &insecure].concat());
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(rendered, common::with_module_digest(&embedded, digest));

    // A pin the content does not have: exit 4, naming both digests.
    let wrong = format!("sha256:{}", "0".repeat(64));
    let tampered = transform_with(
        "testdata/transforms/postgres-minimal.yaml",
        json!({"type": "oci", "ref": reference, "digest": wrong}),
        dir.path(),
    );
    let (code, _, stderr) = pequod(&[&["render", "-f", &tampered][..], &insecure].concat());
    assert_eq!(code, 4);
    assert_eq!(
        stderr,
        format!("error: module: module digest {digest} does not match the pinned digest {wrong}\n")
    );
    // An unknown tag: exit 4, clearly.
    let missing = transform_with(
        "testdata/transforms/postgres-minimal.yaml",
        json!({"type": "oci", "ref": format!("{}/platforms/postgres:9.9.9", registry.host)}),
        dir.path(),
    );
    let (code, _, stderr) = pequod(&[&["render", "-f", &missing][..], &insecure].concat());
    assert_eq!(code, 4);
    assert_eq!(
        stderr,
        format!(
            "error: module: {}/platforms/postgres:9.9.9 not found in the registry\n",
            registry.host
        )
    );

    // Pull round-trips the files; inspect shows the config.
    let pulled = dir.path().join("pulled");
    let (code, out, stderr) = pequod(
        &[
            &[
                "module",
                "pull",
                &reference,
                pulled.to_str().expect("utf-8"),
            ][..],
            &insecure,
        ]
        .concat(),
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        out,
        format!(
            "pulled {reference} postgres@0.2.0 ({digest}) into {}: 14 files\n",
            pulled.display()
        )
    );
    let original =
        ModuleBundle::from_dir(&common::repo().join("platforms/postgres"), None).expect("module");
    let copy = ModuleBundle::from_dir(&pulled, None).expect("pulled module");
    assert_eq!(copy.digest(), original.digest());
    let (code, out, _) = pequod(&[&["module", "inspect", &reference][..], &insecure].concat());
    assert_eq!(code, 0);
    let inspected: Value = serde_yaml::from_str(&out).expect("YAML");
    assert_eq!(inspected["digest"], digest);
    assert_eq!(inspected["config"]["name"], "postgres");
    assert_eq!(inspected["config"]["entrypoint"], "main.ncl");
    assert_eq!(
        inspected["annotations"]["org.opencontainers.image.version"],
        "0.2.0"
    );
    // ... and what the local directory shows: the module and its Input fields.
    let local: Value = serde_yaml::from_str(&common::pequod_ok(&[
        "module",
        "inspect",
        "platforms/postgres",
    ]))
    .expect("YAML");
    for key in ["module", "contentDigest", "files", "input"] {
        assert_eq!(inspected[key], local[key], "{key}");
    }
    assert_eq!(inspected["contentDigest"], original.digest());
    assert_eq!(
        inspected["input"][0],
        serde_json::json!({
            "path": "name",
            "contracts": ["k8s.Dns1035LabelMax 50"],
            "presence": "required",
            "doc": "Name of the database cluster: the CloudNativePG Cluster and everything\nderived from it (Services <name>-rw / <name>-ro, Secret <name>-app,\nConfigMap <name>-connection, ObjectStore <name>-backup, Pooler\n<name>-pooler-<type>). A DNS-1035 label of at most 50 characters.",
        })
    );
}

#[test]
fn skopeo_sees_a_standard_artifact_with_our_media_types() {
    let registry = TestRegistry::start();
    let reference = format!("{}/platforms/webservice:1", registry.host);
    let (code, digest, stderr) = pequod(&[
        "module",
        "publish",
        "platforms/webservice",
        &reference,
        "--insecure-registry",
        &registry.host,
        "--source",
        "https://git.example.com/platforms",
        "--revision",
        "0123abc",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let raw = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .output()
        .expect("skopeo (Debian package skopeo) is installed");
    assert!(
        raw.status.success(),
        "{}",
        String::from_utf8_lossy(&raw.stderr)
    );
    let manifest: Value = serde_json::from_slice(&raw.stdout).expect("a JSON manifest");
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(manifest["artifactType"], CONFIG_MEDIA_TYPE);
    assert_eq!(manifest["config"]["mediaType"], CONFIG_MEDIA_TYPE);
    assert_eq!(manifest["layers"][0]["mediaType"], CONTENT_MEDIA_TYPE);
    let annotations = &manifest["annotations"];
    assert_eq!(annotations["org.opencontainers.image.title"], "webservice");
    assert_eq!(
        annotations["org.opencontainers.image.source"],
        "https://git.example.com/platforms"
    );
    assert_eq!(annotations["org.opencontainers.image.revision"], "0123abc");
    assert_eq!(
        annotations["org.opencontainers.image.created"],
        "1970-01-01T00:00:00Z"
    );
    let digest_of_raw = format!("sha256:{}", hex_sha256(&raw.stdout));
    assert_eq!(
        digest_of_raw,
        digest.trim(),
        "the digest printed is the manifest's"
    );
}

fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Writes `bytes` as a blob of an OCI layout; returns its descriptor.
fn blob(layout: &Path, media_type: &str, bytes: &[u8]) -> Value {
    let hex = hex_sha256(bytes);
    std::fs::write(layout.join("blobs/sha256").join(&hex), bytes).expect("blob");
    json!({"mediaType": media_type, "digest": format!("sha256:{hex}"), "size": bytes.len()})
}

#[test]
fn a_module_pushed_by_another_oci_client_is_pulled_and_rendered() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().expect("temporary directory");
    let layout = dir.path().join("layout");
    std::fs::create_dir_all(layout.join("blobs/sha256")).expect("layout");
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("layout");
    let module =
        ModuleBundle::from_dir(&common::repo().join("platforms/webservice"), None).expect("module");
    let files: BTreeMap<String, String> = module.files().clone();
    let config = json!({"name": "webservice", "version": "0.2.0", "entrypoint": "main.ncl"});
    let config = blob(&layout, CONFIG_MEDIA_TYPE, config.to_string().as_bytes());
    let layer = blob(&layout, CONTENT_MEDIA_TYPE, &pack(&files).expect("packs"));
    let manifest = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                          "config": config, "layers": [layer]});
    let manifest = blob(
        &layout,
        "application/vnd.oci.image.manifest.v1+json",
        manifest.to_string().as_bytes(),
    );
    let mut entry = manifest.clone();
    entry["annotations"] = json!({"org.opencontainers.image.ref.name": "1"});
    std::fs::write(
        layout.join("index.json"),
        json!({"schemaVersion": 2, "manifests": [entry]}).to_string(),
    )
    .expect("index");
    let reference = format!("{}/elsewhere/webservice:1", registry.host);
    let copied = Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:1", layout.display()))
        .arg(format!("docker://{reference}"))
        .output()
        .expect("skopeo runs");
    assert!(
        copied.status.success(),
        "{}",
        String::from_utf8_lossy(&copied.stderr)
    );
    let transform = transform_with(
        "testdata/transforms/webservice.yaml",
        json!({"type": "oci", "ref": reference}),
        dir.path(),
    );
    let (code, rendered, stderr) = pequod(&[
        "render",
        "-f",
        &transform,
        "--insecure-registry",
        &registry.host,
    ]);
    assert_eq!(code, 0, "{stderr}");
    let (_, embedded, _) = pequod(&["render", "-f", "testdata/transforms/webservice.yaml"]);
    let pushed = manifest["digest"].as_str().expect("manifest digest");
    assert_eq!(rendered, common::with_module_digest(&embedded, pushed));
}

#[test]
fn a_registry_with_credentials_needs_them() {
    let registry = TestRegistry::with_auth();
    let dir = tempfile::tempdir().expect("temporary directory");
    let reference = format!("{}/private/webservice:1", registry.host);
    let insecure = ["--insecure-registry", registry.host.as_str()];
    let nowhere = dir.path().join("no-credentials.json");
    std::fs::write(&nowhere, "{}").expect("empty docker config");
    let nowhere = nowhere.display().to_string();
    let (code, _, stderr) = pequod(
        &[
            &[
                "module",
                "publish",
                "platforms/webservice",
                &reference,
                "--docker-config",
                &nowhere,
            ][..],
            &insecure,
        ]
        .concat(),
    );
    assert_eq!(code, 4);
    assert!(
        stderr.starts_with(&format!(
            "error: module: registry {} refused access (401/403)",
            registry.host
        )),
        "{stderr}"
    );
    let credentials = dir.path().join("config.json");
    registry.docker_config(&credentials);
    let credentials = credentials.display().to_string();
    let (code, digest, stderr) = pequod(
        &[
            &[
                "module",
                "publish",
                "platforms/webservice",
                &reference,
                "--docker-config",
                &credentials,
            ][..],
            &insecure,
        ]
        .concat(),
    );
    assert_eq!(code, 0, "{stderr}");
    let transform = transform_with(
        "testdata/transforms/webservice.yaml",
        json!({"type": "oci", "ref": reference}),
        dir.path(),
    );
    let (code, _, stderr) = pequod(
        &[
            &["render", "-f", &transform, "--docker-config", &credentials][..],
            &insecure,
        ]
        .concat(),
    );
    assert_eq!(code, 0, "{stderr}");
    let (code, _, stderr) = pequod(
        &[
            &["render", "-f", &transform, "--docker-config", &nowhere][..],
            &insecure,
        ]
        .concat(),
    );
    assert_eq!(code, 4);
    assert!(stderr.contains("refused access (401/403)"), "{stderr}");

    // A digest in the cache is served only to those the registry lets see it: a registry that
    // answers 401 is not one that is down.
    let pinned = transform_with(
        "testdata/transforms/webservice.yaml",
        json!({"type": "oci", "ref": format!("{}/private/webservice@{}", registry.host, digest.trim())}),
        dir.path(),
    );
    let cache = dir.path().join("cache").display().to_string();
    let render = |docker_config: &str| {
        pequod(
            &[
                &["render", "-f", &pinned, "--cache-dir", &cache],
                &["--docker-config", docker_config][..],
                &insecure,
            ]
            .concat(),
        )
    };
    let (code, _, stderr) = render(&credentials);
    assert_eq!(code, 0, "{stderr}");
    let (code, _, stderr) = render(&nowhere);
    assert_eq!(
        (code, stderr),
        (
            4,
            format!(
                "error: module: registry {host} refused access (401/403): Not authorized: url http://{host}/v2/private/webservice/manifests/{}\n",
                digest.trim(),
                host = registry.host
            )
        )
    );
}

#[test]
fn a_second_render_takes_the_module_from_the_disk_cache() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().expect("temporary directory");
    let cache = dir.path().join("cache").display().to_string();
    let reference = format!("{}/platforms/webservice:1", registry.host);
    let insecure = ["--insecure-registry", registry.host.as_str()];
    let (code, _, stderr) = pequod(
        &[
            &["module", "publish", "platforms/webservice", &reference][..],
            &insecure,
        ]
        .concat(),
    );
    assert_eq!(code, 0, "{stderr}");
    let transform = transform_with(
        "testdata/transforms/webservice.yaml",
        json!({"type": "oci", "ref": reference}),
        dir.path(),
    );
    let blob_pulls = || registry.blob_pulls("platforms/webservice");
    let before = blob_pulls();
    for _ in 0..2 {
        let (code, _, stderr) = pequod(
            &[
                &["render", "-f", &transform, "--cache-dir", &cache][..],
                &insecure,
            ]
            .concat(),
        );
        assert_eq!(code, 0, "{stderr}");
    }
    assert_eq!(
        blob_pulls() - before,
        2,
        "config and layer pulled once, by the first render"
    );
    let stored = std::fs::read_dir(Path::new(&cache).join("oci"))
        .expect("disk cache")
        .count();
    assert_eq!(stored, 1);
}

/// Resolves `module_ref` as the operator does, with `cache` and no credentials.
fn resolve(
    module_ref: Value,
    registry: &Registry,
    cache: &ModuleCache,
) -> Result<Resolved, SourceError> {
    let module_ref: ModuleRef = serde_json::from_value(module_ref).expect("a moduleRef");
    let cache_dir = tempfile::tempdir().expect("temporary directory");
    let sources = Sources {
        registry,
        cache,
        cache_dir: cache_dir.path(),
        git_auth: GitAuth::Anonymous,
        allow_local_git: false,
    };
    tokio::runtime::Runtime::new()
        .expect("a runtime")
        .block_on(module::resolve(&module_ref, None, &sources))
}

#[test]
fn a_pinned_digest_in_the_cache_is_served_when_the_registry_is_down() {
    let mut registry = TestRegistry::start();
    let dir = tempfile::tempdir().expect("temporary directory");
    let disk = dir.path().join("cache").display().to_string();
    let host = registry.host.clone();
    let insecure = ["--insecure-registry", host.as_str()];
    let tagged = format!("{host}/platforms/webservice:1");
    let (code, digest, stderr) = pequod(
        &[
            &["module", "publish", "platforms/webservice", &tagged][..],
            &insecure,
        ]
        .concat(),
    );
    assert_eq!(code, 0, "{stderr}");
    let digest = digest.trim().to_string();
    let pinned = format!("{host}/platforms/webservice@{digest}");
    let by_digest = json!({"type": "oci", "ref": pinned});
    let by_tag = json!({"type": "oci", "ref": tagged});
    let tag_and_pin = json!({"type": "oci", "ref": tagged, "digest": digest});

    // The registry answers: the module is pulled into memory (the library) and onto disk (the
    // CLI), and nothing is stale.
    let client = Registry::new(std::slice::from_ref(&host), None);
    let memory = ModuleCache::new(64 << 20);
    let fresh = resolve(by_digest.clone(), &client, &memory).expect("resolved");
    assert_eq!(
        (fresh.digest.as_str(), fresh.stale),
        (digest.as_str(), None)
    );
    let transform = |module_ref: &Value| {
        transform_with(
            "testdata/transforms/webservice.yaml",
            module_ref.clone(),
            dir.path(),
        )
    };
    let render = |module_ref: &Value, cache: &str| {
        pequod(
            &[
                &["render", "-f", &transform(module_ref), "--cache-dir", cache][..],
                &insecure,
            ]
            .concat(),
        )
    };
    let (code, rendered, stderr) = render(&by_digest, &disk);
    assert_eq!(code, 0, "{stderr}");

    // The registry is down. A digest, by reference or pin, comes from the cache, saying so.
    registry.stop();
    // The first request of a resolution is for the manifest (a registry is not pinged).
    let down = |reference: &str| {
        let target = match reference.rsplit_once('@') {
            Some((_, digest)) => digest,
            None => reference.rsplit_once(':').map_or("latest", |(_, tag)| tag),
        };
        format!(
            "registry error for {reference}: error sending request for url (http://{host}/v2/platforms/webservice/manifests/{target}): client error (Connect): tcp connect error: Connection refused (os error 111)"
        )
    };
    for (module_ref, reference) in [(&by_digest, &pinned), (&tag_and_pin, &tagged)] {
        let served = resolve(module_ref.clone(), &client, &memory).expect("served");
        let note = format!("served from the module cache: {}", down(reference));
        assert_eq!(served.digest, digest);
        assert_eq!(served.bundle, fresh.bundle);
        assert_eq!(served.stale.as_deref(), Some(note.as_str()));
        assert_eq!(
            served.summary(ModuleType::Oci),
            format!("oci {digest} ({note})")
        );
    }
    // A tag names what the registry says now: not served.
    let refused = resolve(by_tag.clone(), &client, &memory).expect_err("the registry is down");
    assert_eq!(
        (refused.reason(), refused.to_string()),
        ("RegistryUnavailable", down(&tagged))
    );
    // The CLI: from the disk cache, the same graph, with the note on stderr; a tag, or a
    // digest the cache does not have, fails.
    let (code, again, stderr) = render(&by_digest, &disk);
    assert_eq!((code, again), (0, rendered));
    let note = format!(
        " WARN pequod::module::source: served from the module cache: {} digest={digest}\n",
        down(&pinned)
    );
    assert!(stderr.ends_with(&note), "{stderr}");
    let empty = dir.path().join("empty").display().to_string();
    for (module_ref, reference, cache) in [(&by_tag, &tagged, &disk), (&by_digest, &pinned, &empty)]
    {
        let (code, _, stderr) = render(module_ref, cache);
        assert_eq!(
            (code, stderr),
            (4, format!("error: module: {}\n", down(reference)))
        );
    }
}

#[test]
fn a_manifest_over_the_limit_is_refused_before_it_is_read_whole() {
    let dir = tempfile::tempdir().expect("temporary directory");
    // Without a digest in the HEAD answer the resolution reads the manifest; with one, the
    // pull does: both stop at the limit.
    for says_digest in [false, true] {
        let hostile = HostileRegistry::start(Hostility::EndlessManifest { says_digest });
        let tagged = format!("{}/hostile/module:1", hostile.host);
        let transform = transform_with(
            "testdata/transforms/webservice.yaml",
            json!({"type": "oci", "ref": tagged}),
            dir.path(),
        );
        let cache = dir.path().join(format!("cache-{says_digest}"));
        let (code, _, stderr) = pequod(&[
            "render",
            "-f",
            &transform,
            "--cache-dir",
            &cache.display().to_string(),
            "--insecure-registry",
            &hostile.host,
        ]);
        let read = if says_digest {
            format!("{}/hostile/module@{HOSTILE_DIGEST}", hostile.host)
        } else {
            tagged
        };
        assert_eq!(
            (code, stderr),
            (
                4,
                format!(
                    "error: module: {read} is not a valid Pequod module artifact: the manifest is over the 1048576 byte limit\n"
                )
            )
        );
        let sent = hostile.endless_bytes_sent();
        assert!(sent < ENDLESS, "the whole manifest was sent: {sent} bytes");
    }
}

#[test]
fn a_token_service_is_read_with_a_bound_and_another_page_is_never_shown() {
    let dir = tempfile::tempdir().expect("temporary directory");
    for (hostility, answered) in [
        (
            Hostility::EndlessToken,
            "answered more than 65536 bytes".to_string(),
        ),
        (
            Hostility::ForeignRealm,
            "answered 403 Forbidden".to_string(),
        ),
    ] {
        let hostile = HostileRegistry::start(hostility);
        let transform = transform_with(
            "testdata/transforms/webservice.yaml",
            json!({"type": "oci", "ref": format!("{}/hostile/module:1", hostile.host)}),
            dir.path(),
        );
        let (code, _, stderr) = pequod(&[
            "render",
            "-f",
            &transform,
            "--cache-dir",
            &dir.path().join("cache").display().to_string(),
            "--insecure-registry",
            &hostile.host,
        ]);
        let host = &hostile.host;
        assert_eq!(
            (code, stderr),
            (
                4,
                format!(
                    "error: module: registry {host} refused access (401/403): the registry's token service http://{host}/token {answered}\n"
                )
            ),
            "{hostility:?}: the page's text ({FOREIGN_PAGE_SECRET}) is never shown"
        );
        if let Hostility::EndlessToken = hostility {
            let sent = hostile.endless_bytes_sent();
            assert!(sent < ENDLESS, "the whole answer was sent: {sent} bytes");
        }
    }
}
