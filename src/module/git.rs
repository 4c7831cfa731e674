//! Modules from Git repositories (git2): `ref` is a clone URL (`https://`, `ssh://`,
//! `git://`, `file://` or a local path), optionally `?ref=<branch|tag|sha>&path=<dir>`.
//! Each URL has a bare mirror in the cache directory, so a new commit is an incremental
//! fetch; the module's digest is the commit SHA (plus the path).
//!
//! Everything here blocks (libgit2): callers run it on a blocking thread.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use git2::{FetchOptions, ObjectType, RemoteCallbacks, Repository, TreeWalkMode, TreeWalkResult};
use sha2::{Digest, Sha256};

use super::MAX_BUNDLE_BYTES;

/// A parsed `moduleRef.ref` of type git.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GitRef {
    /// The clone URL.
    pub url: String,
    /// Branch, tag or commit SHA (default: the remote's HEAD).
    pub revision: Option<String>,
    /// Directory of the module in the repository.
    pub path: Option<String>,
}

/// Credentials for a repository. Its `Debug` shows no secret.
#[derive(Clone, Default)]
pub enum GitAuth {
    /// None.
    #[default]
    Anonymous,
    /// What `git` itself would use, for the CLI: an SSH agent (`SSH_AUTH_SOCK`) or the keys
    /// in `~/.ssh`, the git credential helpers for HTTP; host keys from `~/.ssh/known_hosts`.
    Ambient,
    /// HTTP basic: user and password, or any user and a token.
    Basic {
        /// The user.
        username: String,
        /// The password or token.
        password: String,
    },
    /// An SSH private key (PEM or OpenSSH), for `ssh://` and `git@host:` URLs.
    SshKey {
        /// The user (usually `git`).
        username: String,
        /// The private key.
        private_key: String,
        /// `known_hosts` lines the server's host key must match; without them libgit2 looks
        /// in `~/.ssh/known_hosts`.
        known_hosts: Option<String>,
    },
}

impl GitAuth {
    /// Credentials from a Secret's `data`: `ssh-privatekey` (with `known_hosts`, and
    /// `username` defaulting to `git`), `username` + `password`, or `token` (any user).
    /// `Err` says what the Secret lacks.
    pub fn from_secret_data(text: impl Fn(&str) -> Option<String>) -> Result<GitAuth, String> {
        let username = text("username");
        if let Some(private_key) = text("ssh-privatekey") {
            return Ok(GitAuth::SshKey {
                username: username.unwrap_or_else(|| "git".to_string()),
                private_key,
                known_hosts: text("known_hosts"),
            });
        }
        match (username, text("password"), text("token")) {
            (Some(username), Some(password), _) => Ok(GitAuth::Basic { username, password }),
            (username, _, Some(token)) => Ok(GitAuth::Basic {
                username: username.unwrap_or_else(|| "git".to_string()),
                password: token,
            }),
            _ => Err("has none of ssh-privatekey, username+password, token".to_string()),
        }
    }
}

/// Why a module could not come from Git.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// The fetch failed: unreachable, refused credentials, not a repository.
    #[error("git fetch of {url} failed: {message}")]
    Fetch {
        /// The URL.
        url: String,
        /// libgit2's message.
        message: String,
        /// Whether the server could not be reached or failed (refused connection, unknown
        /// host, timeout, a closed connection, a 5xx answer) rather than answered: only then
        /// may a mirrored commit stand in for it.
        unavailable: bool,
    },
    /// The revision names no branch, tag or commit.
    #[error("{url}: no branch, tag or commit `{revision}`")]
    UnknownRevision {
        /// The URL.
        url: String,
        /// The revision.
        revision: String,
    },
    /// The path is not a directory of the commit.
    #[error("{url}@{commit}: no directory `{path}`")]
    MissingPath {
        /// The URL.
        url: String,
        /// The commit.
        commit: String,
        /// The path.
        path: String,
    },
    /// The files are not a module (too large, not text).
    #[error("{url}@{commit}: {message}")]
    Content {
        /// The URL.
        url: String,
        /// The commit.
        commit: String,
        /// What is wrong.
        message: String,
    },
    /// The mirror could not be created or opened.
    #[error("git cache {path}: {message}")]
    Cache {
        /// The mirror's directory.
        path: String,
        /// What went wrong.
        message: String,
    },
}

impl std::fmt::Debug for GitAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GitAuth::Anonymous => f.write_str("Anonymous"),
            GitAuth::Ambient => f.write_str("Ambient"),
            GitAuth::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            GitAuth::SshKey {
                username,
                known_hosts,
                ..
            } => {
                let hosts = known_hosts.as_ref().map_or(0, |text| text.lines().count());
                write!(f, "SshKey({username}, ***, {hosts} known_hosts lines)")
            }
        }
    }
}

/// Most a fetch may download: more is refused (a module repository is small).
const MAX_FETCH_BYTES: usize = 256 << 20;

/// The URL schemes of servers (libgit2's, SSH's aliases included).
const REMOTE_SCHEMES: [&str; 6] = [
    "https://",
    "http://",
    "ssh://",
    "git+ssh://",
    "ssh+git://",
    "git://",
];

/// What a `?ref=` names.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Revision {
    /// The remote's HEAD (no `ref`, or `HEAD`).
    Head,
    /// A branch or tag: the full ref names to look for, in order (`v1` is
    /// `refs/tags/v1`, then `refs/heads/v1`; `heads/main` and `refs/heads/main` are one).
    /// `prefix` holds the name when it could also be an abbreviated commit SHA.
    Named {
        refs: Vec<String>,
        prefix: Option<String>,
    },
    /// A whole commit SHA, lowercase.
    Commit(String),
}

impl Revision {
    fn of(revision: Option<&str>) -> Revision {
        let Some(revision) = revision.filter(|r| *r != "HEAD") else {
            return Revision::Head;
        };
        let hex = revision.bytes().all(|b| b.is_ascii_hexdigit());
        if hex && matches!(revision.len(), 40 | 64) {
            return Revision::Commit(revision.to_ascii_lowercase());
        }
        let refs = if revision.starts_with("refs/") {
            vec![revision.to_string()]
        } else if revision.starts_with("heads/") || revision.starts_with("tags/") {
            vec![format!("refs/{revision}")]
        } else {
            vec![
                format!("refs/tags/{revision}"),
                format!("refs/heads/{revision}"),
            ]
        };
        Revision::Named {
            refs,
            prefix: (hex && revision.len() >= 4).then(|| revision.to_ascii_lowercase()),
        }
    }
}

/// Per-mirror locks: concurrent resolutions of one URL (two Transforms) take turns, since
/// libgit2 would otherwise race on the mirror's refs and shallow file. Other processes are
/// kept out by the mirror's lock file ([`lock_mirror`]); this lock keeps out the process's own
/// threads even where a file lock is the process's (POSIX locks, as over NFS).
static MIRROR_LOCKS: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashMap<PathBuf, std::sync::Arc<std::sync::Mutex<()>>>>,
> = std::sync::LazyLock::new(Default::default);

impl GitRef {
    /// Whether the URL is a path on this machine (or `file://`), not a server's. As git
    /// tells them apart: a URL scheme, or scp-like `[user@]host:path` (a `:` before any `/`).
    pub fn is_local(&self) -> bool {
        let url = self.url.as_str();
        if url.starts_with("file://") {
            return true;
        }
        let remote_scheme = REMOTE_SCHEMES.iter().any(|scheme| url.starts_with(scheme));
        let scp_like = url
            .split_once(':')
            .is_some_and(|(host, _)| !host.is_empty() && !host.contains('/'));
        !remote_scheme && !scp_like
    }

    /// Parses `URL[?ref=R][&path=P]`; `path` (from `moduleRef.path`) wins over the query's.
    pub fn parse(reference: &str, path: Option<&str>) -> GitRef {
        let (url, query) = reference.split_once('?').unwrap_or((reference, ""));
        let mut revision = None;
        let mut query_path = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("ref", value)) if !value.is_empty() => revision = Some(value.to_string()),
                Some(("path", value)) if !value.is_empty() => query_path = Some(value.to_string()),
                _ => {}
            }
        }
        let path = path
            .map(str::to_string)
            .or(query_path)
            .map(|p| p.trim_matches('/').to_string())
            .filter(|p| !p.is_empty());
        GitRef {
            url: url.to_string(),
            revision,
            path,
        }
    }
}

/// A module checked out of a commit.
#[derive(Clone, Debug)]
pub struct Checkout {
    /// The commit SHA.
    pub commit: String,
    /// The module's files (relative to `path`).
    pub files: BTreeMap<String, String>,
    /// Set when the server could not be asked and the mirror's copy of a pinned commit was
    /// served: `served from the mirror: <the fetch error>`.
    pub stale: Option<String>,
}

/// Where the bare mirror of `url` lives in `cache`.
fn mirror_path(cache: &Path, url: &str) -> PathBuf {
    let name = hex::encode(Sha256::digest(url.as_bytes()));
    cache.join("git").join(&name[..32])
}

/// Takes the lock file beside the mirror at `path` (`<mirror>.lock`), waiting for any other
/// process that holds it: processes sharing a cache directory (the CLI and an operator, two
/// operators) fetch into one mirror in turn. Held until the returned file is dropped.
fn lock_mirror(path: &Path) -> Result<std::fs::File, GitError> {
    let lock = path.with_extension("lock");
    let failed = |error: std::io::Error| GitError::Cache {
        path: lock.display().to_string(),
        message: error.to_string(),
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(failed)?;
    }
    let file = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock)
        .map_err(failed)?;
    file.lock().map_err(failed)?;
    Ok(file)
}

/// The bare mirror at `path`, created when missing.
fn mirror(path: &Path) -> Result<Repository, GitError> {
    let failed = |message: String| GitError::Cache {
        path: path.display().to_string(),
        message,
    };
    match Repository::open_bare(path) {
        Ok(repository) => Ok(repository),
        Err(_) => {
            std::fs::create_dir_all(path).map_err(|e| failed(e.to_string()))?;
            Repository::init_bare(path).map_err(|e| failed(e.message().to_string()))
        }
    }
}

/// The callbacks of one connection: credentials from `auth`, host keys checked against its
/// `known_hosts` (a refusal's reason is kept in `refusal`: libgit2 reports its own generic
/// message), and the download bound.
fn callbacks<'a>(
    auth: &'a GitAuth,
    url: &'a str,
    refusal: &'a RefCell<Option<String>>,
) -> RemoteCallbacks<'a> {
    let mut callbacks = RemoteCallbacks::new();
    // libgit2 asks again after refused credentials; each kind is offered once.
    let mut offered = Vec::new();
    callbacks.credentials(move |url, username, allowed| {
        credential(auth, url, username, allowed, &mut offered)
    });
    if let GitAuth::SshKey {
        known_hosts: Some(known_hosts),
        ..
    } = auth
    {
        callbacks.certificate_check(move |cert, host| {
            check_host_key(known_hosts, url, cert, host).inspect_err(|error| {
                refusal.replace(Some(error.message().to_string()));
            })
        });
    }
    callbacks.transfer_progress(move |progress| {
        let within = progress.received_bytes() <= MAX_FETCH_BYTES;
        if !within {
            refusal.replace(Some(format!(
                "the fetch is over {} MiB: too large for a module repository",
                MAX_FETCH_BYTES >> 20
            )));
        }
        within
    });
    callbacks
}

/// The credential to offer next, each at most once; an error when none is left.
fn credential(
    auth: &GitAuth,
    url: &str,
    username: Option<&str>,
    allowed: git2::CredentialType,
    offered: &mut Vec<&'static str>,
) -> Result<git2::Cred, git2::Error> {
    let mut offer_once = |kind: &'static str| {
        if offered.contains(&kind) {
            false
        } else {
            offered.push(kind);
            true
        }
    };
    let refused = |offered: &[&str]| {
        if offered.is_empty() {
            "no credentials of the kind the server wants"
        } else {
            "the credentials were refused"
        }
    };
    match auth {
        GitAuth::Anonymous => Err(git2::Error::from_str("the repository wants credentials")),
        GitAuth::Basic { username, password }
            if allowed.is_user_pass_plaintext() && offer_once("basic") =>
        {
            git2::Cred::userpass_plaintext(username, password)
        }
        // A URL without a user: libgit2 asks for one first.
        GitAuth::SshKey { username: user, .. }
            if allowed.is_username() && offer_once("username") =>
        {
            git2::Cred::username(user)
        }
        GitAuth::SshKey {
            username: user,
            private_key,
            ..
        } if allowed.is_ssh_key() && offer_once("key") => {
            git2::Cred::ssh_key_from_memory(username.unwrap_or(user), None, private_key, None)
        }
        GitAuth::Ambient => ambient_credential(url, username, allowed, &mut offer_once)
            .unwrap_or_else(|| Err(git2::Error::from_str(refused(offered)))),
        _ => Err(git2::Error::from_str(refused(offered))),
    }
}

/// What `git` would offer: for SSH the agent, then the default keys of `~/.ssh`; for HTTP the
/// configured credential helpers. `None` when nothing is left to offer.
fn ambient_credential(
    url: &str,
    username: Option<&str>,
    allowed: git2::CredentialType,
    offer_once: &mut impl FnMut(&'static str) -> bool,
) -> Option<Result<git2::Cred, git2::Error>> {
    if allowed.is_username() && offer_once("username") {
        return Some(git2::Cred::username(username.unwrap_or("git")));
    }
    if allowed.is_ssh_key() {
        let user = username.unwrap_or("git");
        if std::env::var_os("SSH_AUTH_SOCK").is_some() && offer_once("agent") {
            return Some(git2::Cred::ssh_key_from_agent(user));
        }
        let ssh_dir = std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".ssh"))?;
        for file in ["id_ed25519", "id_ecdsa", "id_rsa"] {
            let key = ssh_dir.join(file);
            if key.is_file() && offer_once(file) {
                return Some(git2::Cred::ssh_key(user, None, &key, None));
            }
        }
    }
    if allowed.is_user_pass_plaintext() && offer_once("helper") {
        let config = git2::Config::open_default().ok()?;
        return Some(git2::Cred::credential_helper(&config, url, username));
    }
    None
}

/// Accepts an SSH host key only when `known_hosts` lists it for the URL's host (and port);
/// TLS certificates are left to libgit2's own verification.
fn check_host_key(
    known_hosts: &str,
    url: &str,
    cert: &git2::cert::Cert<'_>,
    host: &str,
) -> Result<git2::CertificateCheckStatus, git2::Error> {
    let Some(hostkey) = cert.as_hostkey() else {
        return Ok(git2::CertificateCheckStatus::CertificatePassthrough);
    };
    let Some(key) = hostkey.hostkey() else {
        return Err(git2::Error::from_str("the server sent no raw host key"));
    };
    let names = host_names(url, host);
    let (mut entries, mut hashed, mut listed_with_other_key) = (0, 0, false);
    for line in known_hosts.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (Some(hosts), Some(_kind), Some(blob)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        entries += 1;
        if hosts.starts_with('|') {
            hashed += 1;
        }
        if !hosts.split(',').any(|name| names.iter().any(|n| n == name)) {
            continue;
        }
        if BASE64.decode(blob).is_ok_and(|listed| listed == key) {
            return Ok(git2::CertificateCheckStatus::CertificateOk);
        }
        listed_with_other_key = true;
    }
    let message = if listed_with_other_key {
        format!(
            "the host key of {} is not the one the Secret's known_hosts lists for it (a changed key, or someone in between)",
            names[0]
        )
    } else if entries > 0 && hashed == entries {
        format!(
            "the host key of {} is not in the Secret's known_hosts (hashed entries are not read: use `ssh-keyscan` without -H)",
            names[0]
        )
    } else {
        format!(
            "the host key of {} is not in the Secret's known_hosts",
            names[0]
        )
    };
    Err(git2::Error::from_str(&message))
}

/// How `known_hosts` names the server of `url`: `host`, or `[host]:port` off port 22.
fn host_names(url: &str, host: &str) -> Vec<String> {
    let port = ["ssh://", "git+ssh://", "ssh+git://"]
        .iter()
        .find_map(|scheme| url.strip_prefix(scheme))
        .and_then(|rest| rest.split('/').next())
        .and_then(|authority| {
            authority
                .rsplit_once('@')
                .map_or(Some(authority), |(_, h)| Some(h))
        })
        .and_then(|authority| authority.rsplit_once(':'))
        .and_then(|(_, port)| port.parse::<u16>().ok())
        .filter(|port| *port != 22);
    match port {
        Some(port) => vec![format!("[{host}]:{port}")],
        None => vec![host.to_string(), format!("[{host}]:22")],
    }
}

/// Bounds the time libgit2 waits for a server (process-wide settings, set once).
fn set_timeouts() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: plain integer options of libgit2, set once before any fetch.
        unsafe {
            let _ = git2::opts::set_server_connect_timeout_in_milliseconds(10_000);
            let _ = git2::opts::set_server_timeout_in_milliseconds(30_000);
        }
    });
}

/// Fetches `reference` into its mirror in `cache` and reads the module at its revision.
///
/// Only the wanted ref is fetched — the remote's HEAD, the branch or tag, or for a commit SHA
/// the refs pointing at it (else the SHA itself, which servers allowing it in a `want` send) —
/// into a new or shallow mirror with depth 1: a module in a repository with a long history
/// costs one commit's objects, and a new commit costs what changed. An abbreviated SHA, or a
/// SHA the server will not send alone, takes a fetch of every branch and tag with their
/// history (the mirror is complete from then on). Every resolution asks the server, with
/// the caller's credentials, even for a commit the mirror already has; only when the server
/// cannot be reached or fails (not when it refuses) is a whole commit SHA — the revision, or
/// the commit `pin` (a `moduleRef.digest`, `<sha>[:<path>]`) names — served from the
/// mirror, saying so in [`Checkout::stale`]. Branches and tags move: they are never served
/// without the server. The mirror is locked for the fetch and the read ([`lock_mirror`]).
pub fn fetch(
    reference: &GitRef,
    pin: Option<&str>,
    auth: &GitAuth,
    cache: &Path,
) -> Result<Checkout, GitError> {
    set_timeouts();
    let path = mirror_path(cache, &reference.url);
    let lock = MIRROR_LOCKS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .entry(path.clone())
        .or_default()
        .clone();
    let _turn = lock
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let _other_processes_wait = lock_mirror(&path)?;
    let repository = mirror(&path)?;
    let session = Session {
        repository: &repository,
        reference,
        auth,
    };
    let revision = Revision::of(reference.revision.as_deref());
    let (commit, stale) = match session.resolve(&revision) {
        Ok(commit) => (commit, None),
        // A local path has no server to be down: its errors are the disk's.
        Err(
            error @ GitError::Fetch {
                unavailable: true, ..
            },
        ) if !reference.is_local() => {
            let pinned = pin
                .and_then(|digest| digest.split(':').next())
                .map(|sha| Revision::of(Some(sha)));
            let mirrored = [Some(&revision), pinned.as_ref()]
                .into_iter()
                .flatten()
                .find_map(|revision| match revision {
                    Revision::Commit(sha) => session.commit_by_prefix(sha),
                    _ => None,
                });
            match mirrored {
                Some(commit) => (
                    Some(commit),
                    Some(format!("served from the mirror: {error}")),
                ),
                None => return Err(error),
            }
        }
        Err(error) => return Err(error),
    };
    let commit = commit.ok_or_else(|| GitError::UnknownRevision {
        url: reference.url.clone(),
        revision: reference
            .revision
            .clone()
            .unwrap_or_else(|| "HEAD".to_string()),
    })?;
    Ok(Checkout {
        commit: commit.id().to_string(),
        files: read_tree(&repository, &commit, reference)?,
        stale,
    })
}

/// One resolution of a reference through its mirror.
struct Session<'a> {
    repository: &'a Repository,
    reference: &'a GitRef,
    auth: &'a GitAuth,
}

impl<'a> Session<'a> {
    /// Fetches what `revision` needs and finds its commit in the mirror (`None`: no such
    /// branch, tag or commit).
    fn resolve(&self, revision: &Revision) -> Result<Option<git2::Commit<'a>>, GitError> {
        Ok(match revision {
            Revision::Head => {
                self.fetch(&["+HEAD:refs/remotes/origin/HEAD".to_string()])?;
                self.commit_at(&["refs/remotes/origin/HEAD".to_string()])
            }
            Revision::Named { refs, prefix } => {
                self.fetch_refs(refs)?;
                match (self.commit_at(refs), prefix) {
                    (Some(commit), _) => Some(commit),
                    (None, Some(prefix)) => {
                        self.fetch_everything()?;
                        self.commit_by_prefix(prefix)
                    }
                    (None, None) => None,
                }
            }
            Revision::Commit(sha) => {
                let refs = self.refs_pointing_at(sha)?;
                if refs.is_empty() {
                    // libgit2 writes no ref for an object id: the commit is found by its SHA.
                    if let Err(error) = self.fetch(std::slice::from_ref(sha)) {
                        tracing::debug!(%error, "the server did not send the commit alone");
                        self.fetch_everything()?;
                    }
                } else {
                    self.fetch_refs(&refs)?;
                }
                self.commit_by_prefix(sha)
            }
        })
    }

    /// Runs `connect` on the remote with this session's callbacks, turning libgit2's errors
    /// into [`GitError::Fetch`] with the callbacks' own reasons.
    fn with_remote<T>(
        &self,
        connect: impl FnOnce(&mut git2::Remote<'a>, RemoteCallbacks<'_>) -> Result<T, git2::Error>,
    ) -> Result<T, GitError> {
        let url = &self.reference.url;
        let refusal = RefCell::new(None);
        let mut remote = self
            .repository
            .remote_anonymous(url)
            .map_err(|e| fetch_error(url, &e, &refusal))?;
        connect(&mut remote, callbacks(self.auth, url, &refusal))
            .inspect_err(|error| tracing::debug!(%url, %error, "git fetch failed"))
            .map_err(|e| fetch_error(url, &e, &refusal))
    }

    /// The remote's branches and tags that point at commit `sha` (an annotated tag through
    /// its peeled entry).
    fn refs_pointing_at(&self, sha: &str) -> Result<Vec<String>, GitError> {
        let mut refs = self.with_remote(|remote, callbacks| {
            let connection = remote.connect_auth(git2::Direction::Fetch, Some(callbacks), None)?;
            let names = connection
                .list()?
                .iter()
                .filter(|head| head.oid().to_string() == sha)
                .map(|head| head.name().trim_end_matches("^{}").to_string())
                .filter(|name| name.starts_with("refs/heads/") || name.starts_with("refs/tags/"))
                .collect::<Vec<_>>();
            Ok(names)
        })?;
        refs.sort();
        refs.dedup();
        Ok(refs)
    }

    /// One fetch of `refspecs`: shallow (depth 1) from a server into a new or shallow
    /// mirror, ordinary (incremental) into a complete one.
    fn fetch(&self, refspecs: &[String]) -> Result<(), GitError> {
        let fresh = self
            .repository
            .references()
            .map(|mut refs| refs.next().is_none())
            .unwrap_or(true);
        // libgit2's local transport cannot fetch shallowly (nor needs to: it reads a disk).
        let shallow = !self.reference.is_local() && (fresh || self.repository.is_shallow());
        self.fetch_with_depth(refspecs, shallow.then_some(1))
    }

    /// Fetches the remote's `refs` (full names) into the same names in the mirror.
    fn fetch_refs(&self, refs: &[String]) -> Result<(), GitError> {
        let specs: Vec<String> = refs.iter().map(|name| format!("+{name}:{name}")).collect();
        self.fetch(&specs)
    }

    /// Every branch and tag with their history: the mirror is complete afterwards.
    fn fetch_everything(&self) -> Result<(), GitError> {
        let everything = [
            "+refs/heads/*:refs/heads/*".to_string(),
            "+refs/tags/*:refs/tags/*".to_string(),
        ];
        // libgit2's GIT_FETCH_DEPTH_UNSHALLOW.
        let depth = self.repository.is_shallow().then_some(i32::MAX);
        self.fetch_with_depth(&everything, depth)
    }

    fn fetch_with_depth(&self, refspecs: &[String], depth: Option<i32>) -> Result<(), GitError> {
        self.with_remote(|remote, callbacks| {
            let mut options = FetchOptions::new();
            options.remote_callbacks(callbacks);
            // Only the refs asked for: all tags would each bring their commit.
            options.download_tags(git2::AutotagOption::None);
            // A branch deleted upstream is gone from the mirror too.
            options.prune(git2::FetchPrune::On);
            if let Some(depth) = depth {
                options.depth(depth);
            }
            remote.fetch(refspecs, Some(&mut options), None)
        })
    }

    /// The commit the first of `refs` that exists points at.
    fn commit_at(&self, refs: &[String]) -> Option<git2::Commit<'a>> {
        refs.iter().find_map(|name| {
            self.repository
                .find_reference(name)
                .and_then(|reference| reference.peel_to_commit())
                .ok()
        })
    }

    /// The commit whose SHA starts with `prefix`, when the mirror has exactly one.
    fn commit_by_prefix(&self, prefix: &str) -> Option<git2::Commit<'a>> {
        self.repository
            .revparse_single(prefix)
            .and_then(|object| object.peel_to_commit())
            .ok()
            .filter(|commit| commit.id().to_string().starts_with(prefix))
    }
}

/// A failed fetch of `url`: the callbacks' reason when they refused (libgit2 reports its own
/// generic message), else libgit2's message, with a hint for unknown hosts and untrusted
/// certificates.
fn fetch_error(url: &str, error: &git2::Error, refusal: &RefCell<Option<String>>) -> GitError {
    let message = refusal.borrow().clone().unwrap_or_else(|| {
        let mut message = error.message().to_string();
        match (error.code(), error.class()) {
            (git2::ErrorCode::Certificate, git2::ErrorClass::Ssl) => message.push_str(
                " (not trusted here: add its CA to the system's certificates, or name a bundle in SSL_CERT_FILE)",
            ),
            (git2::ErrorCode::Certificate, git2::ErrorClass::Ssh) => message.push_str(
                " (the server is not in known_hosts: give the Secret a known_hosts key, from `ssh-keyscan`; the CLI reads ~/.ssh/known_hosts)",
            ),
            _ => {}
        }
        message
    });
    GitError::Fetch {
        url: url.to_string(),
        message,
        unavailable: refusal.borrow().is_none() && server_unavailable(error),
    }
}

/// Whether libgit2's error says the server could not be reached or failed, as opposed to an
/// answer (refused credentials, an unknown repository, a host key or certificate not trusted):
/// a socket error, an unknown host, a timeout, a connection closed mid-conversation, an SSH
/// handshake that never started, an HTTP 5xx.
fn server_unavailable(error: &git2::Error) -> bool {
    let message = error.message();
    match (error.code(), error.class()) {
        (git2::ErrorCode::Timeout | git2::ErrorCode::Eof, _) | (_, git2::ErrorClass::Os) => true,
        (_, git2::ErrorClass::Net) => {
            message.starts_with("failed to resolve address")
                || message.starts_with("failed to connect")
        }
        (_, git2::ErrorClass::Ssh) => message.starts_with("failed to start SSH session"),
        (_, git2::ErrorClass::Http) => message
            .strip_prefix("unexpected http status code: ")
            .and_then(|code| code.parse::<u16>().ok())
            .is_some_and(|code| (500..600).contains(&code)),
        _ => false,
    }
}

fn read_tree(
    repository: &Repository,
    commit: &git2::Commit,
    reference: &GitRef,
) -> Result<BTreeMap<String, String>, GitError> {
    let sha = commit.id().to_string();
    let content = |message: String| GitError::Content {
        url: reference.url.clone(),
        commit: sha.clone(),
        message,
    };
    let root = commit
        .tree()
        .map_err(|e| content(e.message().to_string()))?;
    let tree = match &reference.path {
        None => root,
        Some(path) => {
            let entry = root
                .get_path(Path::new(path))
                .map_err(|_| GitError::MissingPath {
                    url: reference.url.clone(),
                    commit: sha.clone(),
                    path: path.clone(),
                })?;
            repository
                .find_tree(entry.id())
                .map_err(|_| GitError::MissingPath {
                    url: reference.url.clone(),
                    commit: sha.clone(),
                    path: path.clone(),
                })?
        }
    };
    let mut files = BTreeMap::new();
    let mut total = 0usize;
    let mut problem = None;
    let walked = tree.walk(TreeWalkMode::PreOrder, |dir, entry| {
        if entry.kind() != Some(ObjectType::Blob) {
            return TreeWalkResult::Ok;
        }
        let name = format!("{dir}{}", entry.name().unwrap_or_default());
        // The size from the object header, before the blob is inflated.
        let size = repository
            .odb()
            .and_then(|odb| odb.read_header(entry.id()))
            .map_or(usize::MAX, |(size, _)| size);
        if total.saturating_add(size) > MAX_BUNDLE_BYTES {
            problem = Some(format!(
                "the module is over the {MAX_BUNDLE_BYTES} byte limit"
            ));
            return TreeWalkResult::Abort;
        }
        let Ok(blob) = repository.find_blob(entry.id()) else {
            problem = Some(format!("{name}: cannot be read"));
            return TreeWalkResult::Abort;
        };
        total += blob.size();
        if total > MAX_BUNDLE_BYTES {
            problem = Some(format!(
                "the module is over the {MAX_BUNDLE_BYTES} byte limit"
            ));
            return TreeWalkResult::Abort;
        }
        // Only text files can be module files; others (images, archives) are left out.
        if let Ok(text) = std::str::from_utf8(blob.content()) {
            files.insert(name, text.to_string());
        }
        TreeWalkResult::Ok
    });
    if let Some(problem) = problem {
        return Err(content(problem));
    }
    walked.map_err(|e| content(e.message().to_string()))?;
    Ok(files)
}

/// The default cache directory: `$XDG_CACHE_HOME/pequod`, `~/.cache/pequod`, or the temp dir.
pub fn default_cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("pequod")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_like_the_seed_format() {
        assert_eq!(
            GitRef::parse(
                "https://github.com/acme/platforms.git?ref=v2.1.0&path=postgres",
                None
            ),
            GitRef {
                url: "https://github.com/acme/platforms.git".into(),
                revision: Some("v2.1.0".into()),
                path: Some("postgres".into()),
            }
        );
        let plain = GitRef::parse("/srv/platforms", Some("/web/"));
        assert_eq!(plain.revision, None);
        assert_eq!(plain.path.as_deref(), Some("web"));
    }

    #[test]
    fn local_urls_are_told_apart_from_servers() {
        for local in [
            "/srv/platforms",
            "file:///srv/platforms",
            "../platforms",
            "./odd:name",
            "/srv/odd:name",
        ] {
            assert!(GitRef::parse(local, None).is_local(), "{local}");
        }
        for remote in [
            "https://github.com/acme/p.git",
            "ssh://git@github.com/acme/p.git",
            "git+ssh://git@github.com/acme/p.git",
            "ssh+git://github.com/acme/p.git",
            "git@github.com:acme/p.git",
            "github.com:acme/p.git",
            "git://127.0.0.1:9418/p.git",
        ] {
            assert!(!GitRef::parse(remote, None).is_local(), "{remote}");
        }
    }

    #[test]
    fn secrets_give_keys_passwords_or_tokens() {
        let secret = |pairs: &[(&str, &str)]| {
            let data: BTreeMap<String, String> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            GitAuth::from_secret_data(|key| data.get(key).cloned())
        };
        let shown = |auth: Result<GitAuth, String>| auth.map(|a| format!("{a:?}"));
        assert_eq!(
            shown(secret(&[
                ("ssh-privatekey", "KEY"),
                ("known_hosts", "h1 k\nh2 k\n")
            ])),
            Ok("SshKey(git, ***, 2 known_hosts lines)".to_string())
        );
        assert_eq!(
            shown(secret(&[
                ("username", "bot"),
                ("password", "pw"),
                ("token", "t")
            ])),
            Ok("Basic(bot, ***)".to_string())
        );
        assert_eq!(
            shown(secret(&[("token", "t")])),
            Ok("Basic(git, ***)".to_string())
        );
        assert_eq!(
            shown(secret(&[("username", "bot")])),
            Err("has none of ssh-privatekey, username+password, token".to_string())
        );
    }

    #[test]
    fn known_hosts_names_servers_off_port_22_with_their_port() {
        for url in [
            "ssh://git@example.com:2222/org/repo.git",
            "git+ssh://example.com:2222/org/repo.git",
        ] {
            assert_eq!(host_names(url, "example.com"), vec!["[example.com]:2222"]);
        }
        for url in [
            "ssh://git@example.com/org/repo.git",
            "ssh://example.com:22/org/repo.git",
            "git@example.com:org/repo.git",
        ] {
            assert_eq!(
                host_names(url, "example.com"),
                vec!["example.com", "[example.com]:22"],
                "{url}"
            );
        }
    }

    #[test]
    fn revisions_name_the_head_refs_or_commits() {
        let named = |refs: &[&str], prefix: Option<&str>| Revision::Named {
            refs: refs.iter().map(|r| r.to_string()).collect(),
            prefix: prefix.map(str::to_string),
        };
        let sha = "0123456789ABCDEF0123456789abcdef01234567";
        let cases = [
            (None, Revision::Head),
            (Some("HEAD"), Revision::Head),
            (Some("v1"), named(&["refs/tags/v1", "refs/heads/v1"], None)),
            (Some("heads/main"), named(&["refs/heads/main"], None)),
            (Some("refs/heads/main"), named(&["refs/heads/main"], None)),
            (Some("tags/v1"), named(&["refs/tags/v1"], None)),
            (
                Some("deadBEEF"),
                named(
                    &["refs/tags/deadBEEF", "refs/heads/deadBEEF"],
                    Some("deadbeef"),
                ),
            ),
            (
                Some("abc"),
                named(&["refs/tags/abc", "refs/heads/abc"], None),
            ),
            (Some(sha), Revision::Commit(sha.to_ascii_lowercase())),
        ];
        for (revision, expected) in cases {
            assert_eq!(Revision::of(revision), expected, "{revision:?}");
        }
    }

    /// libgit2's errors as the tests' servers give them: only a server that could not be
    /// reached or failed lets a mirrored commit stand in.
    #[test]
    fn only_an_unavailable_server_lets_the_mirror_stand_in() {
        use git2::{Error, ErrorClass as Class, ErrorCode as Code};
        let generic = |class, message| Error::new(Code::GenericError, class, message);
        let unavailable = [
            generic(
                Class::Os,
                "failed to connect to 127.0.0.1: Connection refused",
            ),
            generic(
                Class::Net,
                "failed to resolve address for nonexistent.invalid: Name or service not known",
            ),
            Error::new(
                Code::Eof,
                Class::Net,
                "could not read refs from remote repository",
            ),
            Error::new(Code::Timeout, Class::Net, "timed out"),
            generic(
                Class::Ssh,
                "failed to start SSH session: Failed getting banner",
            ),
            generic(Class::Http, "unexpected http status code: 500"),
            generic(Class::Http, "unexpected http status code: 503"),
        ];
        let answered = [
            generic(
                Class::Net,
                "remote error: access denied or repository not exported: /missing.git",
            ),
            generic(Class::Net, "unsupported URL protocol"),
            generic(Class::None, "the credentials were refused"),
            generic(Class::Http, "unexpected http status code: 401"),
            generic(Class::Http, "unexpected http status code: 403"),
            generic(Class::Http, "unexpected http status code: 404"),
            Error::new(
                Code::Certificate,
                Class::Ssh,
                "invalid or unknown remote ssh hostkey",
            ),
            Error::new(
                Code::Certificate,
                Class::Ssl,
                "the SSL certificate is invalid",
            ),
        ];
        for error in unavailable {
            assert!(server_unavailable(&error), "{error}");
        }
        for error in answered {
            assert!(!server_unavailable(&error), "{error}");
        }
    }

    #[test]
    fn credentials_never_show_in_debug_output() {
        let auth = GitAuth::Basic {
            username: "bot".into(),
            password: "hunter2".into(),
        };
        assert_eq!(format!("{auth:?}"), "Basic(bot, ***)");
    }
}
