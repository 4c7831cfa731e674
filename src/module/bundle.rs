//! The in-memory form of a module: file name → source, plus a digest over both.

use std::collections::BTreeMap;
use std::path::{Component, Path};

use sha2::{Digest, Sha256};

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
    #[error("invalid file name `{0}` in module: names must be relative paths inside the module")]
    InvalidPath(String),
    /// The files are larger than [`MAX_BUNDLE_BYTES`].
    #[error("module is {size} bytes, over the {max} byte limit")]
    TooLarge {
        /// Total size of the files.
        size: usize,
        /// The limit.
        max: usize,
    },
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
        for name in files.keys() {
            if !is_clean_relative(name) {
                return Err(BundleError::InvalidPath(name.clone()));
            }
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

    /// A bundle made of one `main.ncl` (the `inline` source type).
    pub fn inline(source: &str) -> Result<ModuleBundle, BundleError> {
        ModuleBundle::new(
            BTreeMap::from([("main.ncl".to_string(), source.to_string())]),
            None,
        )
    }

    /// Reads every file below `dir` (hidden files and directories skipped).
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

fn is_clean_relative(name: &str) -> bool {
    let path = Path::new(name);
    !name.is_empty()
        && !name.contains('\\')
        && path.components().all(|c| matches!(c, Component::Normal(_)))
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
        let file_type = entry.file_type().map_err(|e| io_err(&path, e))?;
        if file_type.is_dir() {
            read_dir_into(root, &path, files, size)?;
        } else if file_type.is_file() {
            let content = std::fs::read_to_string(&path).map_err(|e| io_err(&path, e))?;
            *size += content.len();
            if *size > MAX_BUNDLE_BYTES {
                return Err(BundleError::TooLarge {
                    size: *size,
                    max: MAX_BUNDLE_BYTES,
                });
            }
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

/// Length-prefixed framing so that no two different bundles hash the same.
fn content_digest(files: &BTreeMap<String, String>, entrypoint: &str) -> String {
    let mut hasher = Sha256::new();
    let mut field = |bytes: &[u8]| {
        hasher.update((bytes.len() as u64).to_be_bytes());
        hasher.update(bytes);
    };
    field(entrypoint.as_bytes());
    for (name, content) in files {
        field(name.as_bytes());
        field(content.as_bytes());
    }
    format!("sha256:{}", hex::encode(hasher.finalize()))
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
        for bad in ["../x.ncl", "/etc/passwd", "a/../../b", ""] {
            let err = ModuleBundle::new(files(&[("main.ncl", "1"), (bad, "2")]), None)
                .expect_err("bad name refused");
            assert!(matches!(err, BundleError::InvalidPath(_)), "{bad}: {err}");
        }
        let err = ModuleBundle::new(files(&[("lib.ncl", "1")]), None).expect_err("no main");
        assert_eq!(err.to_string(), "module has no entrypoint `main.ncl`");
    }

    #[test]
    fn refuses_oversized_modules() {
        let big = "x".repeat(MAX_BUNDLE_BYTES + 1);
        let err = ModuleBundle::inline(&big).expect_err("too large");
        assert!(matches!(err, BundleError::TooLarge { .. }));
    }
}
