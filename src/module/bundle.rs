//! The in-memory form of a module: file name → source, plus a digest over both.

use std::collections::BTreeMap;
use std::path::Path;

/// Upper bound on the total size of a module's files; a larger module is refused.
pub const MAX_BUNDLE_BYTES: usize = 4 << 20;

/// The files of one module, keyed by their path relative to the module root (`/`-separated).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleBundle {
    files: BTreeMap<String, String>,
    entrypoint: String,
    digest: String,
}

/// Why a set of files is not a usable module.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The entrypoint file is missing.
    #[error("module has no entrypoint `{0}`")]
    MissingEntrypoint(String),
    /// A file name is absolute, escapes the module, or is otherwise unusable.
    #[error(
        "invalid file name `{0}` in module: names are relative paths of letters, digits, `.`, `_` and `-`"
    )]
    InvalidPath(String),
    /// A directory of the module would shadow the `pequod/` library.
    #[error(
        "invalid file name `{0}` in module: a `pequod` directory would shadow the pequod library"
    )]
    ShadowsLibrary(String),
    /// The files are larger than [`MAX_BUNDLE_BYTES`].
    #[error("module is {size} bytes, over the {max} byte limit")]
    TooLarge {
        /// Total size of the files.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A symbolic link in a module directory points outside it.
    #[error("{0} is a link to a file outside the module")]
    LinkOutside(String),
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

impl ModuleBundle {
    /// Builds a bundle, checking names, size and the entrypoint. The digest covers every
    /// file name and content, and the entrypoint.
    pub fn new(
        files: BTreeMap<String, String>,
        entrypoint: Option<&str>,
    ) -> Result<ModuleBundle, BundleError> {
        let entrypoint = entrypoint.unwrap_or("main.ncl").to_string();
        for name in files.keys().chain(std::iter::once(&entrypoint)) {
            check_name(name)?;
        }
        let size: usize = files.iter().map(|(k, v)| k.len() + v.len()).sum();
        if size > MAX_BUNDLE_BYTES {
            return Err(BundleError::TooLarge {
                size,
                max: MAX_BUNDLE_BYTES,
            });
        }
        if !files.contains_key(&entrypoint) {
            return Err(BundleError::MissingEntrypoint(entrypoint));
        }
        let digest = content_digest(&files, &entrypoint);
        Ok(ModuleBundle {
            files,
            entrypoint,
            digest,
        })
    }

    /// Reads every file below `dir`. Hidden files and directories (`.git`, `.env`, ...) are
    /// skipped; symbolic links are followed only to files inside `dir`.
    pub fn from_dir(dir: &Path, entrypoint: Option<&str>) -> Result<ModuleBundle, BundleError> {
        let mut files = BTreeMap::new();
        let mut size = 0;
        read_dir_into(dir, dir, &mut files, &mut size)?;
        ModuleBundle::new(files, entrypoint)
    }

    /// The files, by relative path.
    pub fn files(&self) -> &BTreeMap<String, String> {
        &self.files
    }

    /// The entrypoint file name.
    pub fn entrypoint(&self) -> &str {
        &self.entrypoint
    }

    /// `sha256:<hex>` over names, contents and entrypoint.
    pub fn digest(&self) -> &str {
        &self.digest
    }
}

/// File names are `/`-separated relative paths whose segments use only letters, digits,
/// `.`, `_` and `-` (no `..`): they end up inside Nickel import strings. No directory may be
/// named `pequod`, which Nickel would resolve before the library.
fn check_name(name: &str) -> Result<(), BundleError> {
    let segments: Vec<&str> = name.split('/').collect();
    let clean = segments.iter().all(|segment| {
        !segment.is_empty()
            && *segment != "."
            && *segment != ".."
            && segment
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    });
    if !clean {
        return Err(BundleError::InvalidPath(name.to_string()));
    }
    if segments[..segments.len() - 1].contains(&super::LIBRARY_PREFIX) {
        return Err(BundleError::ShadowsLibrary(name.to_string()));
    }
    Ok(())
}

fn read_dir_into(
    root: &Path,
    dir: &Path,
    files: &mut BTreeMap<String, String>,
    size: &mut usize,
) -> Result<(), BundleError> {
    let io_err = |path: &Path, source| BundleError::Io {
        path: path.display().to_string(),
        source,
    };
    let entries = std::fs::read_dir(dir).map_err(|e| io_err(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_err(dir, e))?;
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let link = entry
            .file_type()
            .map_err(|e| io_err(&path, e))?
            .is_symlink();
        if link {
            // A link may point at another file of the module, never outside it: a module
            // must not carry ~/.aws/credentials into a render.
            let target = std::fs::canonicalize(&path).map_err(|e| io_err(&path, e))?;
            let canonical_root = std::fs::canonicalize(root).map_err(|e| io_err(root, e))?;
            if !target.starts_with(&canonical_root) {
                return Err(BundleError::LinkOutside(path.display().to_string()));
            }
        }
        // Symbolic links to files are followed; linked directories are not (no loops).
        let metadata = std::fs::metadata(&path).map_err(|e| io_err(&path, e))?;
        if metadata.is_dir() && !link {
            read_dir_into(root, &path, files, size)?;
        } else if metadata.is_file() {
            *size += usize::try_from(metadata.len()).unwrap_or(usize::MAX);
            if *size > MAX_BUNDLE_BYTES {
                return Err(BundleError::TooLarge {
                    size: *size,
                    max: MAX_BUNDLE_BYTES,
                });
            }
            let content = std::fs::read_to_string(&path).map_err(|e| io_err(&path, e))?;
            let relative = path
                .strip_prefix(root)
                .map_err(|_| BundleError::InvalidPath(path.display().to_string()))?;
            let name = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            files.insert(name, content);
        }
    }
    Ok(())
}

/// The entrypoint, then each file's name and content, framed ([`crate::digest`]) so that no
/// two different bundles hash the same.
fn content_digest(files: &BTreeMap<String, String>, entrypoint: &str) -> String {
    let parts = files
        .iter()
        .flat_map(|(name, content)| [name.as_str(), content.as_str()]);
    format!(
        "sha256:{}",
        crate::digest::framed(std::iter::once(entrypoint).chain(parts))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn digest_depends_on_names_and_contents() {
        let a = ModuleBundle::new(files(&[("main.ncl", "1"), ("x.ncl", "2")]), None)
            .expect("valid bundle");
        let b = ModuleBundle::new(files(&[("main.ncl", "1"), ("y.ncl", "2")]), None)
            .expect("valid bundle");
        let c = ModuleBundle::new(files(&[("main.ncl", "12")]), None).expect("valid bundle");
        let d = ModuleBundle::new(files(&[("main.ncl", "1"), ("x.ncl", "2")]), None)
            .expect("valid bundle");
        assert_ne!(a.digest(), b.digest());
        assert_ne!(a.digest(), c.digest());
        assert_eq!(a.digest(), d.digest());
        assert!(a.digest().starts_with("sha256:"));
    }

    #[test]
    fn refuses_escaping_names_and_missing_entrypoint() {
        for bad in [
            "../x.ncl",
            "/etc/passwd",
            "a/../../b",
            "",
            "a\".ncl",
            "x/%{y}.ncl",
            "a//b",
        ] {
            let err = ModuleBundle::new(files(&[("main.ncl", "1"), (bad, "2")]), None)
                .expect_err("bad name refused");
            assert!(matches!(err, BundleError::InvalidPath(_)), "{bad}: {err}");
        }
        let err = ModuleBundle::new(files(&[("lib.ncl", "1")]), None).expect_err("no main");
        assert_eq!(err.to_string(), "module has no entrypoint `main.ncl`");
        let err = ModuleBundle::new(files(&[("main.ncl", "1")]), Some("main.ncl\") & x"))
            .expect_err("bad entrypoint");
        assert!(matches!(err, BundleError::InvalidPath(_)), "{err}");
        let err = ModuleBundle::new(
            files(&[("main.ncl", "1"), ("lib/pequod/graph.ncl", "2")]),
            None,
        )
        .expect_err("shadowing");
        assert_eq!(
            err.to_string(),
            "invalid file name `lib/pequod/graph.ncl` in module: a `pequod` directory would shadow the pequod library"
        );
    }

    #[test]
    fn directories_skip_hidden_files_and_refuse_links_outside() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        std::fs::write(root.join("main.ncl"), "{}").expect("written");
        std::fs::write(root.join(".env"), "SECRET=1").expect("written");
        std::fs::create_dir(root.join("lib")).expect("dir");
        std::fs::write(root.join("lib/a.ncl"), "1").expect("written");
        std::os::unix::fs::symlink(root.join("lib/a.ncl"), root.join("b.ncl")).expect("link");
        let bundle = ModuleBundle::from_dir(root, None).expect("module");
        let names: Vec<&str> = bundle.files().keys().map(String::as_str).collect();
        assert_eq!(names, ["b.ncl", "lib/a.ncl", "main.ncl"]);

        let outside = tempfile::NamedTempFile::new().expect("temp file");
        std::os::unix::fs::symlink(outside.path(), root.join("leak.ncl")).expect("link");
        let err = ModuleBundle::from_dir(root, None).expect_err("link outside");
        assert!(matches!(err, BundleError::LinkOutside(_)), "{err}");
    }

    #[test]
    fn refuses_oversized_modules() {
        let big = "x".repeat(MAX_BUNDLE_BYTES + 1);
        let err = ModuleBundle::new(files(&[("main.ncl", &big)]), None).expect_err("too large");
        assert!(matches!(err, BundleError::TooLarge { .. }));
    }
}
