//! Modules from Git (`moduleRef.type: git`): a real repository made with `git`, served by
//! `git daemon` on loopback (and read by local path); tags, branches, commit SHAs and
//! `path=`, a new commit picked up through the mirror, and clear errors for bad refs.

mod common;
#[path = "common/git.rs"]
mod repo;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use repo::{copy, git};
use serde_json::{Value, json};

/// `git daemon` serving every repository under `base` on a loopback port.
struct Daemon {
    port: u16,
    child: Child,
}

impl Daemon {
    fn start(base: &Path) -> Daemon {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let child = Command::new("git")
            .arg("daemon")
            .arg("--export-all")
            .arg("--reuseaddr")
            .arg("--listen=127.0.0.1")
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", base.display()))
            .arg(base)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("git daemon starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "git daemon did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Daemon { port, child }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The bare mirror Pequod keeps of `url` under `cache`.
fn mirror_of(cache: &Path, url: &str) -> std::path::PathBuf {
    use sha2::Digest;
    let name = hex::encode(sha2::Sha256::digest(url.as_bytes()));
    cache.join("git").join(&name[..32])
}

fn render(
    transform_file: &str,
    module_ref: Value,
    dir: &Path,
    cache: &Path,
) -> (i32, String, String) {
    let text = std::fs::read_to_string(common::repo().join(transform_file)).expect("Transform");
    let mut transform: Value = serde_yaml::from_str(&text).expect("YAML");
    transform["spec"]["moduleRef"] = module_ref;
    let path = dir.join("transform.json");
    std::fs::write(&path, transform.to_string()).expect("written");
    let out = common::pequod(&[
        "render",
        "-f",
        path.to_str().expect("utf-8"),
        "--cache-dir",
        cache.to_str().expect("utf-8"),
    ]);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn modules_come_from_tags_branches_commits_and_paths() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let base = dir.path().join("served");
    let repo = base.join("platforms.git");
    std::fs::create_dir_all(&repo).expect("repository directory");
    git(&repo, &["init", "-q"]);
    std::fs::write(repo.join("README"), "platforms\n").expect("written");
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "history before the module"]);
    copy(
        &common::repo().join("platforms/postgres"),
        &repo.join("postgres"),
    );
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "postgres"]);
    git(&repo, &["tag", "v1"]);
    let first = git(&repo, &["rev-parse", "HEAD"]);
    let daemon = Daemon::start(&base);
    let cache = dir.path().join("cache");
    let url = format!("git://127.0.0.1:{}/platforms.git", daemon.port);
    let transform = "testdata/transforms/postgres-minimal.yaml";
    let (_, embedded, _) = {
        let out = common::pequod(&["render", "-f", transform]);
        (0, String::from_utf8_lossy(&out.stdout).into_owned(), ())
    };

    for reference in [
        format!("{url}?ref=v1&path=postgres"),
        format!("{url}?ref=main&path=postgres"),
        format!("{url}?ref={first}&path=postgres"),
        format!("{}?ref=v1&path=postgres", repo.display()),
    ] {
        let (code, out, stderr) = render(
            transform,
            json!({"type": "git", "ref": reference}),
            dir.path(),
            &cache,
        );
        assert_eq!(code, 0, "{reference}: {stderr}");
        assert_eq!(out, embedded, "{reference}");
    }
    // moduleRef.path instead of the query, and a digest pin: the commit and the path.
    let pin = format!("{first}:postgres");
    let (code, _, stderr) = render(
        transform,
        json!({"type": "git", "ref": format!("{url}?ref=v1"), "path": "postgres", "digest": pin}),
        dir.path(),
        &cache,
    );
    assert_eq!(code, 0, "{stderr}");

    // A new commit on the branch: the mirror fetches it, the tag stays where it was.
    let main = repo.join("postgres/main.ncl");
    let source = std::fs::read_to_string(&main).expect("main.ncl");
    std::fs::write(
        &main,
        source.replacen("version = \"0.2.0\"", "version = \"0.3.0\"", 1),
    )
    .expect("edited");
    git(&repo, &["commit", "-q", "-am", "0.3.0"]);
    let (code, out, stderr) = render(
        transform,
        json!({"type": "git", "ref": format!("{url}?ref=main&path=postgres")}),
        dir.path(),
        &cache,
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(out.contains("version: 0.3.0"), "{out}");
    let (_, out, _) = render(
        transform,
        json!({"type": "git", "ref": format!("{url}?ref=v1&path=postgres")}),
        dir.path(),
        &cache,
    );
    assert!(out.contains("version: 0.2.0"), "{out}");
    // The mirror of the served repository is shallow: the wanted commits, not the history.
    let mirror = mirror_of(&cache, &url);
    assert!(mirror.join("shallow").is_file(), "a shallow mirror");
    let second = git(&repo, &["rev-parse", "HEAD"]);
    std::fs::write(
        &main,
        source.replacen("version = \"0.2.0\"", "version = \"0.4.0\"", 1),
    )
    .expect("edited");
    git(&repo, &["commit", "-q", "-am", "0.4.0"]);
    // A commit that no branch or tag points at: git daemon will not send it by itself, so
    // the mirror fetches every branch and tag with their history.
    let (code, out, stderr) = render(
        transform,
        json!({"type": "git", "ref": format!("{url}?ref={second}&path=postgres")}),
        dir.path(),
        &cache,
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(out.contains("version: 0.3.0"), "{out}");
    assert!(!mirror.join("shallow").exists(), "a complete mirror");
    assert_eq!(git(&mirror, &["rev-list", "--count", "main"]), "4");
    // An abbreviated SHA resolves in the complete mirror.
    let (code, out, stderr) = render(
        transform,
        json!({"type": "git", "ref": format!("{url}?ref={}&path=postgres", &second[..10])}),
        dir.path(),
        &cache,
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(out.contains("version: 0.3.0"), "{out}");

    // Bad refs and paths are clear errors, exit 4.
    let (code, _, stderr) = render(
        transform,
        json!({"type": "git", "ref": format!("{url}?ref=nope&path=postgres")}),
        dir.path(),
        &cache,
    );
    assert_eq!(code, 4);
    assert_eq!(
        stderr,
        format!("error: module: {url}: no branch, tag or commit `nope`\n")
    );
    let (code, _, stderr) = render(
        transform,
        json!({"type": "git", "ref": format!("{url}?ref=v1&path=nothere")}),
        dir.path(),
        &cache,
    );
    assert_eq!(code, 4);
    assert_eq!(
        stderr,
        format!("error: module: {url}@{first}: no directory `nothere`\n")
    );
    let (code, _, stderr) = render(
        transform,
        json!({"type": "git", "ref": format!("git://127.0.0.1:{}/missing.git", daemon.port)}),
        dir.path(),
        &cache,
    );
    assert_eq!(code, 4);
    assert!(
        stderr.starts_with(&format!(
            "error: module: git fetch of git://127.0.0.1:{}/missing.git failed:",
            daemon.port
        )),
        "{stderr}"
    );
    let wrong = format!("{}:postgres", "0".repeat(40));
    let (code, _, stderr) = render(
        transform,
        json!({"type": "git", "ref": format!("{url}?ref=v1&path=postgres"), "digest": wrong}),
        dir.path(),
        &cache,
    );
    assert_eq!(code, 4);
    assert_eq!(
        stderr,
        format!(
            "error: module: module digest {first}:postgres does not match the pinned digest {wrong}\n"
        )
    );
}
