//! Modules from Git repositories (git2): `ref` is a clone URL (`https://`, `ssh://`,
//! `git://`, `file://` or a local path), optionally `?ref=<branch|tag|sha>&path=<dir>`.
//! Each URL has a bare mirror in the cache directory, so a new commit is an incremental
//! fetch; the module's digest is the commit SHA (plus the path).
//!
//! Everything here blocks (libgit2): callers run it on a blocking thread.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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

/// Credentials for a repository (from a Secret in the cluster). Its `Debug` shows no secret.
#[derive(Clone, Default)]
pub enum GitAuth {
    /// None.
    #[default]
    Anonymous,
    /// HTTP basic: user and password, or any user and a token.
    Basic {
        /// The user.
        username: String,
        /// The password or token.
        password: String,
    },
    /// An SSH private key (PEM), for `ssh://` and `git@host:` URLs.
    SshKey {
        /// The user (usually `git`).
        username: String,
        /// The private key.
        private_key: String,
    },
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
            GitAuth::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            GitAuth::SshKey { username, .. } => write!(f, "SshKey({username}, ***)"),
        }
    }
}

/// Most a fetch may download: more is refused (a module repository is small).
const MAX_FETCH_BYTES: usize = 256 << 20;

impl GitRef {
    /// Whether the URL is a path on this machine (or `file://`), not a server's.
    pub fn is_local(&self) -> bool {
        let url = self.url.as_str();
        let remote_scheme = ["https://", "http://", "ssh://", "git://"]
            .iter()
            .any(|scheme| url.starts_with(scheme));
        // scp-like `git@host:org/repo.git`
        let scp_like = !url.starts_with('/')
            && url
                .split_once(':')
                .is_some_and(|(host, _)| host.contains('@'));
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
}

/// The bare mirror of `url` in `cache`.
fn mirror(cache: &Path, url: &str) -> Result<Repository, GitError> {
    let name = hex::encode(Sha256::digest(url.as_bytes()));
    let path = cache.join("git").join(&name[..32]);
    let failed = |e: git2::Error| GitError::Cache {
        path: path.display().to_string(),
        message: e.message().to_string(),
    };
    match Repository::open_bare(&path) {
        Ok(repository) => Ok(repository),
        Err(_) => {
            std::fs::create_dir_all(&path).map_err(|e| GitError::Cache {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
            Repository::init_bare(&path).map_err(failed)
        }
    }
}

fn callbacks(auth: &GitAuth) -> RemoteCallbacks<'_> {
    let mut callbacks = RemoteCallbacks::new();
    // libgit2 asks again after refused credentials: once is enough.
    let mut asked = false;
    callbacks.credentials(move |_url, username, allowed| {
        if std::mem::replace(&mut asked, true) {
            return Err(git2::Error::from_str("the credentials were refused"));
        }
        credential(auth, username, allowed)
    });
    callbacks.transfer_progress(|progress| progress.received_bytes() <= MAX_FETCH_BYTES);
    callbacks
}

fn credential(
    auth: &GitAuth,
    username: Option<&str>,
    allowed: git2::CredentialType,
) -> Result<git2::Cred, git2::Error> {
    match auth {
        GitAuth::Anonymous => Err(git2::Error::from_str("the repository wants credentials")),
        GitAuth::Basic { username, password } if allowed.is_user_pass_plaintext() => {
            git2::Cred::userpass_plaintext(username, password)
        }
        GitAuth::SshKey {
            username: user,
            private_key,
        } if allowed.is_ssh_key() => {
            git2::Cred::ssh_key_from_memory(username.unwrap_or(user), None, private_key, None)
        }
        _ => Err(git2::Error::from_str(
            "no credentials of the kind the server wants",
        )),
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

/// Fetches `reference` into its mirror in `cache` (incrementally) and reads the module at
/// its revision.
pub fn fetch(reference: &GitRef, auth: &GitAuth, cache: &Path) -> Result<Checkout, GitError> {
    set_timeouts();
    let url = &reference.url;
    let repository = mirror(cache, url)?;
    let fetch_failed = |e: git2::Error| GitError::Fetch {
        url: url.clone(),
        message: e.message().to_string(),
    };
    let mut remote = repository.remote_anonymous(url).map_err(fetch_failed)?;
    let mut options = FetchOptions::new();
    options.remote_callbacks(callbacks(auth));
    options.download_tags(git2::AutotagOption::All);
    // A branch deleted upstream is gone from the mirror too.
    options.prune(git2::FetchPrune::On);
    remote
        .fetch(
            &[
                "+refs/heads/*:refs/heads/*",
                "+refs/tags/*:refs/tags/*",
                "+HEAD:refs/remotes/origin/HEAD",
            ],
            Some(&mut options),
            None,
        )
        .map_err(fetch_failed)?;
    let commit = resolve(&repository, reference)?;
    let files = read_tree(&repository, &commit, reference)?;
    Ok(Checkout {
        commit: commit.id().to_string(),
        files,
    })
}

fn resolve<'r>(
    repository: &'r Repository,
    reference: &GitRef,
) -> Result<git2::Commit<'r>, GitError> {
    let unknown = || GitError::UnknownRevision {
        url: reference.url.clone(),
        revision: reference
            .revision
            .clone()
            .unwrap_or_else(|| "HEAD".to_string()),
    };
    let candidates: Vec<String> = match &reference.revision {
        None => vec!["refs/remotes/origin/HEAD".to_string()],
        Some(revision) => vec![
            format!("refs/tags/{revision}"),
            format!("refs/heads/{revision}"),
            revision.clone(),
        ],
    };
    for candidate in candidates {
        if let Ok(object) = repository.revparse_single(&candidate)
            && let Ok(commit) = object.peel_to_commit()
        {
            return Ok(commit);
        }
    }
    Err(unknown())
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
        for local in ["/srv/platforms", "file:///srv/platforms", "../platforms"] {
            assert!(GitRef::parse(local, None).is_local(), "{local}");
        }
        for remote in [
            "https://github.com/acme/p.git",
            "ssh://git@github.com/acme/p.git",
            "git@github.com:acme/p.git",
            "git://127.0.0.1:9418/p.git",
        ] {
            assert!(!GitRef::parse(remote, None).is_local(), "{remote}");
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
