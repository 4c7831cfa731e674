//! Modules from Git (`moduleRef.type: git`): a real repository made with `git`, served by
//! `git daemon` on loopback (and read by local path); tags, branches, commit SHAs and
//! `path=`, a new commit picked up through the mirror, and clear errors for bad refs.

mod common;
#[path = "common/net.rs"]
mod net;
#[path = "common/git.rs"]
mod repo;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use pequod::module::ModuleBundle;
use pequod::module::git::{self as module_git, GitAuth, GitRef};
use repo::{HttpServer, SshServer, copy, git};
use serde_json::{Value, json};

/// `git daemon` serving every repository under `base` on a loopback port; stopped when
/// dropped.
struct Daemon {
    port: u16,
    child: Child,
}

impl Daemon {
    fn start(base: &Path) -> Daemon {
        let port = net::free_port();
        // `git-daemon` itself: `git daemon` would run it as a child that outlives a kill.
        let child = Command::new(Path::new(&git(base, &["--exec-path"])).join("git-daemon"))
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
        net::wait_for_port(port, Duration::from_secs(20), "git daemon", String::new);
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

/// `base/platforms.git`: a commit without the module, then the postgres module under
/// `postgres/`, tagged `v1`. Returns the repository and that commit.
fn platforms_repository(base: &Path) -> (PathBuf, String) {
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
    let commit = git(&repo, &["rev-parse", "HEAD"]);
    (repo, commit)
}

/// [`platforms_repository`] in `dir/served`, served by `git daemon`: the repository, its
/// commit, the daemon and the repository's URL.
fn served_platforms(dir: &Path) -> (PathBuf, String, Daemon, String) {
    let base = dir.join("served");
    let (repo, commit) = platforms_repository(&base);
    let daemon = Daemon::start(&base);
    let url = format!("git://127.0.0.1:{}/platforms.git", daemon.port);
    (repo, commit, daemon, url)
}

const TRANSFORM: &str = "testdata/transforms/postgres-minimal.yaml";

/// The command `pequod render` of [`TRANSFORM`] with `module_ref` (written into `dir`).
fn render_command(module_ref: Value, dir: &Path, cache: &Path) -> Command {
    let text = std::fs::read_to_string(common::repo().join(TRANSFORM)).expect("Transform");
    let mut transform: Value = serde_yaml::from_str(&text).expect("YAML");
    transform["spec"]["moduleRef"] = module_ref;
    let path = dir.join("transform.json");
    std::fs::write(&path, transform.to_string()).expect("written");
    let mut command = Command::new(common::pequod_bin());
    command
        .current_dir(common::repo())
        .args(["render", "-f"])
        .arg(&path)
        .arg("--cache-dir")
        .arg(cache)
        .env_remove("SSH_AUTH_SOCK")
        .env("GIT_CONFIG_NOSYSTEM", "1");
    command
}

/// `pequod render` of [`TRANSFORM`] with `module_ref`, with these environment variables.
fn render_with_env(
    module_ref: Value,
    dir: &Path,
    cache: &Path,
    env: &[(&str, &Path)],
) -> (i32, String, String) {
    let mut command = render_command(module_ref, dir, cache);
    for (name, value) in env {
        command.env(name, value);
    }
    let out = command.output().expect("pequod runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn render(module_ref: Value, dir: &Path, cache: &Path) -> (i32, String, String) {
    render_with_env(module_ref, dir, cache, &[])
}

/// The module version `pequod render` of the Git module at `reference` gives; panics when
/// the render fails.
fn rendered_version(reference: &str, dir: &Path, cache: &Path) -> String {
    let (code, out, stderr) = render(json!({"type": "git", "ref": reference}), dir, cache);
    assert_eq!(code, 0, "{reference}: {stderr}");
    version_of(&out)
}

/// The module version a rendered graph (YAML) records.
fn version_of(graph: &str) -> String {
    let graph: Value = serde_yaml::from_str(graph).expect("YAML");
    graph["spec"]["metadata"]["version"]
        .as_str()
        .expect("a version")
        .to_string()
}

/// Commits the postgres module of `repo` at `version` (it is `0.2.0`) on its branch.
fn commit_version(repo: &Path, version: &str) {
    let main = repo.join("postgres/main.ncl");
    let source = std::fs::read_to_string(common::repo().join("platforms/postgres/main.ncl"))
        .expect("main.ncl");
    let edited = source.replacen(
        "version = \"0.2.0\"",
        &format!("version = \"{version}\""),
        1,
    );
    std::fs::write(&main, edited).expect("edited");
    git(repo, &["commit", "-q", "-am", version]);
}

/// What the embedded postgres module renders for [`TRANSFORM`].
fn embedded_render() -> String {
    common::pequod_ok(&["render", "-f", TRANSFORM])
}

#[test]
fn modules_come_from_tags_branches_commits_and_paths() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let (repo, first, daemon, url) = served_platforms(dir.path());
    let cache = dir.path().join("cache");
    let embedded = embedded_render();

    for reference in [
        format!("{url}?ref=v1&path=postgres"),
        format!("{url}?ref=main&path=postgres"),
        format!("{url}?ref={first}&path=postgres"),
        format!("{}?ref=v1&path=postgres", repo.display()),
    ] {
        let (code, out, stderr) =
            render(json!({"type": "git", "ref": reference}), dir.path(), &cache);
        assert_eq!(code, 0, "{reference}: {stderr}");
        // The graph records the commit and path, the digest a pin names.
        let pinned = common::with_module_digest(&embedded, &format!("{first}:postgres"));
        assert_eq!(out, pinned, "{reference}");
    }
    // moduleRef.path instead of the query, and a digest pin: the commit and the path.
    let pin = format!("{first}:postgres");
    let (code, _, stderr) = render(
        json!({"type": "git", "ref": format!("{url}?ref=v1"), "path": "postgres", "digest": pin}),
        dir.path(),
        &cache,
    );
    assert_eq!(code, 0, "{stderr}");

    // A new commit on the branch: the mirror fetches it, the tag stays where it was.
    commit_version(&repo, "0.3.0");
    assert_eq!(
        rendered_version(
            &format!("{url}?ref=refs/heads/main&path=postgres"),
            dir.path(),
            &cache
        ),
        "0.3.0"
    );
    assert_eq!(
        rendered_version(&format!("{url}?ref=v1&path=postgres"), dir.path(), &cache),
        "0.2.0"
    );
    // Full ref names and the remote's HEAD follow the branch too.
    for reference in [
        format!("{url}?ref=main&path=postgres"),
        format!("{url}?ref=heads/main&path=postgres"),
        format!("{url}?path=postgres"),
    ] {
        assert_eq!(rendered_version(&reference, dir.path(), &cache), "0.3.0");
    }
    // The mirror of the served repository is shallow: the wanted commits, not the history.
    let mirror = mirror_of(&cache, &url);
    assert!(mirror.join("shallow").is_file(), "a shallow mirror");
    let second = git(&repo, &["rev-parse", "HEAD"]);
    commit_version(&repo, "0.4.0");
    // A commit that no branch or tag points at, from a server that sends such commits when
    // asked by SHA: one shallow fetch of it.
    git(
        &repo,
        &["config", "uploadpack.allowReachableSHA1InWant", "true"],
    );
    let wanting_cache = dir.path().join("sha-want-cache");
    assert_eq!(
        rendered_version(
            &format!("{url}?ref={second}&path=postgres"),
            dir.path(),
            &wanting_cache
        ),
        "0.3.0"
    );
    let wanting_mirror = mirror_of(&wanting_cache, &url);
    assert!(wanting_mirror.join("shallow").is_file(), "a shallow mirror");
    assert_eq!(git(&wanting_mirror, &["rev-list", "--count", &second]), "1");
    git(
        &repo,
        &["config", "--unset", "uploadpack.allowReachableSHA1InWant"],
    );
    // The same from a server that will not (git daemon's default): the mirror fetches every
    // branch and tag with their history.
    assert_eq!(
        rendered_version(
            &format!("{url}?ref={second}&path=postgres"),
            dir.path(),
            &cache
        ),
        "0.3.0"
    );
    assert!(!mirror.join("shallow").exists(), "a complete mirror");
    assert_eq!(git(&mirror, &["rev-list", "--count", "main"]), "4");
    // An abbreviated SHA resolves in the complete mirror.
    assert_eq!(
        rendered_version(
            &format!("{url}?ref={}&path=postgres", &second[..10]),
            dir.path(),
            &cache
        ),
        "0.3.0"
    );

    // Bad refs and paths are clear errors, exit 4.
    let (code, _, stderr) = render(
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
    // A branch deleted upstream is gone from the mirror too.
    git(&repo, &["branch", "feature"]);
    let feature = json!({"type": "git", "ref": format!("{url}?ref=feature&path=postgres")});
    let (code, _, stderr) = render(feature.clone(), dir.path(), &cache);
    assert_eq!(code, 0, "{stderr}");
    git(&repo, &["branch", "-D", "feature"]);
    let (code, _, stderr) = render(feature, dir.path(), &cache);
    assert_eq!(code, 4);
    assert_eq!(
        stderr,
        format!("error: module: {url}: no branch, tag or commit `feature`\n")
    );
    let wrong = format!("{}:postgres", "0".repeat(40));
    let (code, _, stderr) = render(
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

/// The files of the postgres module, as a fetch must give them.
fn postgres_files() -> std::collections::BTreeMap<String, String> {
    ModuleBundle::from_dir(&common::repo().join("platforms/postgres"), None)
        .expect("module")
        .files()
        .clone()
}

#[test]
fn ssh_repositories_take_a_key_and_check_the_host_key() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let base = dir.path().join("served");
    let (repo, commit) = platforms_repository(&base);
    let sshd = SshServer::start(&dir.path().join("sshd"));
    let url = sshd.url(&repo);
    let reference = GitRef::parse(&format!("{url}?ref=v1&path=postgres"), None);
    let cache = dir.path().join("cache");
    let key = |private_key: &str, known_hosts: &str| GitAuth::SshKey {
        username: sshd.user.clone(),
        private_key: private_key.to_string(),
        known_hosts: Some(known_hosts.to_string()),
    };

    // The operator's way: the key and known_hosts of a Secret.
    let checkout = module_git::fetch(
        &reference,
        None,
        &key(&sshd.client_key, &sshd.known_hosts),
        &cache,
    )
    .expect("fetched over SSH");
    assert_eq!(checkout.commit, commit);
    assert_eq!(checkout.files, postgres_files());
    // A URL without a user: the Secret's username is the one to log in as.
    let userless = format!(
        "ssh://127.0.0.1:{}{}?ref=v1&path=postgres",
        sshd.port,
        repo.display()
    );
    let checkout = module_git::fetch(
        &GitRef::parse(&userless, None),
        None,
        &key(&sshd.client_key, &sshd.known_hosts),
        &cache,
    )
    .expect("fetched over SSH without a user in the URL");
    assert_eq!(checkout.commit, commit);

    // A server whose host key is not the one listed, a key the server does not know, none.
    let stranger = dir.path().join("stranger");
    repo::key_pair(&stranger);
    let stranger_public = std::fs::read_to_string(stranger.with_extension("pub")).expect("key");
    let stranger_private = std::fs::read_to_string(&stranger).expect("key");
    let wrong_host = format!("[127.0.0.1]:{} {}", sshd.port, stranger_public);
    let failures = [
        (
            key(&sshd.client_key, &wrong_host),
            format!(
                "the host key of [127.0.0.1]:{} is not the one the Secret's known_hosts lists for it (a changed key, or someone in between)",
                sshd.port
            ),
        ),
        (
            key(
                &sshd.client_key,
                &format!("other.example.com {stranger_public}"),
            ),
            format!(
                "the host key of [127.0.0.1]:{} is not in the Secret's known_hosts",
                sshd.port
            ),
        ),
        (
            key(&stranger_private, &sshd.known_hosts),
            "the credentials were refused".to_string(),
        ),
        (
            GitAuth::Anonymous,
            format!("invalid or unknown remote ssh hostkey{UNKNOWN_HOST}"),
        ),
    ];
    for (auth, message) in failures {
        let error = module_git::fetch(&reference, None, &auth, &cache).expect_err("refused");
        assert_eq!(
            error.to_string(),
            format!("git fetch of {url} failed: {message}"),
            "{auth:?}"
        );
    }

    // The CLI's way: what `git` would use, here the key and known_hosts in ~/.ssh.
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join(".ssh")).expect("~/.ssh");
    let identity = home.join(".ssh/id_ed25519");
    std::fs::write(&identity, &sshd.client_key).expect("key");
    std::fs::write(home.join(".ssh/known_hosts"), &sshd.known_hosts).expect("known_hosts");
    let module_ref = json!({"type": "git", "ref": format!("{url}?ref=v1&path=postgres")});
    let cli_cache = dir.path().join("cli-cache");
    let (code, out, stderr) = render_with_env(
        module_ref.clone(),
        dir.path(),
        &cli_cache,
        &[("HOME", &home)],
    );
    assert_eq!(code, 0, "{stderr}");
    let pinned = format!("{commit}:postgres");
    assert_eq!(out, common::with_module_digest(&embedded_render(), &pinned));
    std::fs::remove_file(home.join(".ssh/known_hosts")).expect("removed");
    let (code, _, stderr) = render_with_env(module_ref, dir.path(), &cli_cache, &[("HOME", &home)]);
    assert_eq!(code, 4);
    assert_eq!(
        stderr,
        format!(
            "error: module: git fetch of {url} failed: invalid or unknown remote ssh hostkey{UNKNOWN_HOST}\n"
        )
    );
}

/// The hint after libgit2's message when an SSH server is not in known_hosts.
const UNKNOWN_HOST: &str = " (the server is not in known_hosts: give the Secret a known_hosts key, from `ssh-keyscan`; the CLI reads ~/.ssh/known_hosts)";

#[test]
fn http_repositories_take_basic_credentials() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let base = dir.path().join("served");
    let (_, commit) = platforms_repository(&base);
    let server = HttpServer::start(&dir.path().join("http"), &base, "bot", "s3cret");
    let cache = dir.path().join("cache");

    // The operator's way, over plain HTTP: username and password (or a token) from a Secret.
    let url = format!("http://127.0.0.1:{}/git/platforms.git", server.http_port);
    let reference = GitRef::parse(&format!("{url}?ref=main&path=postgres"), None);
    let basic = |password: &str| GitAuth::Basic {
        username: "bot".to_string(),
        password: password.to_string(),
    };
    let checkout = module_git::fetch(&reference, None, &basic("s3cret"), &cache).expect("fetched");
    assert_eq!(checkout.commit, commit);
    assert_eq!(checkout.files, postgres_files());
    // Refused credentials are refused, also for a commit the mirror has: the server answered.
    let at_commit = GitRef::parse(&format!("{url}?ref={commit}&path=postgres"), None);
    for (reference, auth, message) in [
        (&reference, basic("wrong"), "the credentials were refused"),
        (
            &reference,
            GitAuth::Anonymous,
            "the repository wants credentials",
        ),
        (&at_commit, basic("wrong"), "the credentials were refused"),
    ] {
        let error = module_git::fetch(reference, None, &auth, &cache).expect_err("refused");
        assert_eq!(
            error.to_string(),
            format!("git fetch of {url} failed: {message}"),
            "{auth:?}"
        );
    }

    // The CLI's way, over HTTPS: git's credential store, and a certificate the machine trusts
    // (here through SSL_CERT_FILE).
    let url = format!("https://127.0.0.1:{}/git/platforms.git", server.https_port);
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    std::fs::write(home.join(".gitconfig"), "[credential]\n\thelper = store\n").expect("config");
    std::fs::write(
        home.join(".git-credentials"),
        format!("https://bot:s3cret@127.0.0.1:{}\n", server.https_port),
    )
    .expect("credentials");
    let module_ref = json!({"type": "git", "ref": format!("{url}?ref=v1&path=postgres")});
    let cli_cache = dir.path().join("cli-cache");
    let trusted: &[(&str, &Path)] = &[("HOME", &home), ("SSL_CERT_FILE", &server.certificate)];
    let (code, out, stderr) = render_with_env(module_ref.clone(), dir.path(), &cli_cache, trusted);
    assert_eq!(code, 0, "{stderr}");
    let pinned = format!("{commit}:postgres");
    assert_eq!(out, common::with_module_digest(&embedded_render(), &pinned));
    let (code, _, stderr) = render_with_env(module_ref, dir.path(), &cli_cache, &[("HOME", &home)]);
    assert_eq!(code, 4);
    assert_eq!(
        stderr,
        format!(
            "error: module: git fetch of {url} failed: the SSL certificate is invalid (not trusted here: add its CA to the system's certificates, or name a bundle in SSL_CERT_FILE)\n"
        )
    );

    // The server stopped: the pinned commit comes from the mirror, saying so.
    let url = format!("http://127.0.0.1:{}/git/platforms.git", server.http_port);
    drop(server);
    let served = module_git::fetch(&at_commit, None, &basic("s3cret"), &cache).expect("served");
    assert_eq!((served.commit, served.files), (commit, postgres_files()));
    assert_eq!(
        served.stale,
        Some(format!(
            "served from the mirror: git fetch of {url} failed: failed to connect to 127.0.0.1: Connection refused"
        ))
    );
}

#[test]
fn a_pinned_commit_in_the_mirror_is_served_when_the_server_is_down() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let (repo, commit, daemon, url) = served_platforms(dir.path());
    // The commit before: never fetched, the mirror being shallow.
    let before = git(&repo, &["rev-parse", "HEAD~1"]);
    let cache = dir.path().join("cache");
    let fetch = |revision: &str, pin: Option<&str>| {
        let reference = GitRef::parse(&format!("{url}?ref={revision}&path=postgres"), None);
        module_git::fetch(&reference, pin, &GitAuth::Anonymous, &cache)
    };
    let fetched = fetch(&commit, None).expect("fetched");
    assert_eq!((&fetched.commit, &fetched.stale), (&commit, &None));

    drop(daemon);
    let down =
        format!("git fetch of {url} failed: failed to connect to 127.0.0.1: Connection refused");
    let note = format!("served from the mirror: {down}");
    // The commit by its SHA, or a tag with a digest pin naming it: from the mirror.
    let pin = format!("{commit}:postgres");
    for (revision, pin) in [(commit.as_str(), None), ("v1", Some(pin.as_str()))] {
        let served = fetch(revision, pin).expect("served from the mirror");
        assert_eq!(
            (served.commit, served.files, served.stale),
            (commit.clone(), postgres_files(), Some(note.clone())),
            "{revision}"
        );
    }
    // Tags and branches move: what they name now is the server's to say. A commit the
    // mirror does not have cannot be served either.
    for revision in ["v1", "main", &before] {
        let error = fetch(revision, None).expect_err("the server is down");
        assert_eq!(error.to_string(), down, "{revision}");
    }
    // The CLI renders the pinned commit, and warns; a branch fails.
    let (code, out, stderr) = render(
        json!({"type": "git", "ref": format!("{url}?ref={commit}&path=postgres")}),
        dir.path(),
        &cache,
    );
    assert_eq!(
        (code, out),
        (0, common::with_module_digest(&embedded_render(), &pin))
    );
    let warning = format!(" WARN pequod::module::source: {note} digest={pin}\n");
    assert!(stderr.ends_with(&warning), "{stderr}");
    let (code, _, stderr) = render(
        json!({"type": "git", "ref": format!("{url}?ref=main&path=postgres")}),
        dir.path(),
        &cache,
    );
    assert_eq!((code, stderr), (4, format!("error: module: {down}\n")));
}

#[test]
fn processes_sharing_a_cache_take_turns_on_a_mirror() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let (repo, _, _daemon, url) = served_platforms(dir.path());
    let cache = dir.path().join("cache");
    // The test holds the mirror's lock, as another process fetching into it would.
    let lock_path = mirror_of(&cache, &url).with_extension("lock");
    std::fs::create_dir_all(lock_path.parent().expect("a directory")).expect("cache directory");
    let lock = std::fs::File::create(&lock_path).expect("lock file");
    lock.lock().expect("locked");
    let module_ref = json!({"type": "git", "ref": format!("{url}?ref=main&path=postgres")});
    let renders: Vec<Child> = (0..2)
        .map(|_| {
            render_command(module_ref.clone(), dir.path(), &cache)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("pequod starts")
        })
        .collect();
    let pids: Vec<u32> = renders.iter().map(Child::id).collect();
    wait_until_waiting_for_lock(&lock_path, &pids);
    // A commit made while both wait: a render sees it only if it fetched after the lock was
    // released.
    commit_version(&repo, "0.3.0");
    drop(lock);
    for render in renders {
        let out = render.wait_with_output().expect("pequod ends");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert_eq!(version_of(&String::from_utf8_lossy(&out.stdout)), "0.3.0");
    }
}

/// Waits until the kernel lists each of `pids` as waiting for the lock on the file at `path`
/// (`/proc/locks`: `N: -> FLOCK ADVISORY WRITE PID MAJOR:MINOR:INODE 0 EOF`).
fn wait_until_waiting_for_lock(path: &Path, pids: &[u32]) {
    use std::os::unix::fs::MetadataExt;
    let inode = std::fs::metadata(path)
        .expect("the lock file")
        .ino()
        .to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let locks = std::fs::read_to_string("/proc/locks").expect("/proc/locks");
        let waiting: Vec<u32> = locks
            .lines()
            .filter_map(
                |line| match line.split_whitespace().collect::<Vec<_>>()[..] {
                    [_, "->", "FLOCK", _, _, pid, file, ..]
                        if file.ends_with(&format!(":{inode}")) =>
                    {
                        pid.parse().ok()
                    }
                    _ => None,
                },
            )
            .collect();
        if pids.iter().all(|pid| waiting.contains(pid)) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{pids:?} never waited for the lock on {}:\n{locks}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
