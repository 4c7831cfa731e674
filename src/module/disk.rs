//! The disk cache of fetched OCI modules (`--cache-dir`): one JSON file per repository and
//! digest, bounded in size (least recently used first out) and in age (an entry unused for
//! the TTL is dropped), so a restarted operator or a second CLI run does not pull again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::ModuleBundle;

/// Where and how much.
#[derive(Clone, Debug)]
pub struct DiskCache {
    dir: PathBuf,
    max_bytes: u64,
    ttl: Duration,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    entrypoint: String,
    files: BTreeMap<String, String>,
    /// The bundle's content digest: a damaged or torn file does not match it.
    digest: String,
}

impl DiskCache {
    /// A cache in `dir/oci` of at most `max_bytes`, entries unused for `ttl` dropped.
    pub fn new(dir: &Path, max_bytes: u64, ttl: Duration) -> DiskCache {
        DiskCache {
            dir: dir.join("oci"),
            max_bytes,
            ttl,
        }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!(
            "{}.json",
            hex::encode(Sha256::digest(key.as_bytes()))
        ))
    }

    /// The module stored under `key` (`repository@digest`), if present, fresh and intact.
    /// A hit counts as a use.
    pub fn load(&self, key: &str) -> Option<ModuleBundle> {
        let path = self.path(key);
        let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok()?;
        let age = SystemTime::now()
            .duration_since(modified)
            .unwrap_or_default();
        if age > self.ttl {
            let _ = std::fs::remove_file(&path);
            return None;
        }
        let text = std::fs::read_to_string(&path).ok()?;
        let entry: Entry = serde_json::from_str(&text).ok()?;
        let bundle = ModuleBundle::new(entry.files, Some(&entry.entrypoint)).ok()?;
        if bundle.digest() != entry.digest {
            let _ = std::fs::remove_file(&path);
            return None;
        }
        if let Ok(file) = std::fs::File::options().append(true).open(&path) {
            let _ = file.set_modified(SystemTime::now());
        }
        Some(bundle)
    }

    /// Stores `bundle` under `key` (written whole, then renamed), then trims the cache to
    /// its size, least recently used first. Failures only cost a later pull.
    pub fn store(&self, key: &str, bundle: &ModuleBundle) {
        let entry = Entry {
            entrypoint: bundle.entrypoint().to_string(),
            files: bundle.files().clone(),
            digest: bundle.digest().to_string(),
        };
        let Ok(text) = serde_json::to_string(&entry) else {
            return;
        };
        let path = self.path(key);
        let partial = path.with_extension("partial");
        let written = std::fs::create_dir_all(&self.dir)
            .and_then(|()| std::fs::write(&partial, text))
            .and_then(|()| std::fs::rename(&partial, &path));
        if let Err(error) = written {
            tracing::warn!(%error, dir = %self.dir.display(), "cannot write the module disk cache");
            return;
        }
        self.trim();
    }

    fn trim(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut files: Vec<(SystemTime, u64, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let metadata = entry.metadata().ok()?;
                Some((metadata.modified().ok()?, metadata.len(), entry.path()))
            })
            .collect();
        let mut total: u64 = files.iter().map(|(_, size, _)| size).sum();
        files.sort();
        for (_, size, path) in files {
            if total <= self.max_bytes {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                total = total.saturating_sub(size);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(text: &str) -> ModuleBundle {
        ModuleBundle::new(
            BTreeMap::from([("main.ncl".to_string(), text.to_string())]),
            None,
        )
        .expect("a bundle")
    }

    #[test]
    fn entries_round_trip_expire_and_stay_within_size() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let cache = DiskCache::new(dir.path(), 10_000, Duration::from_secs(3600));
        let module = bundle("{ a = 1 }");
        cache.store("r/m@sha256:1", &module);
        assert_eq!(cache.load("r/m@sha256:1"), Some(module.clone()));
        assert_eq!(cache.load("r/m@sha256:2"), None);

        // A damaged entry is dropped.
        std::fs::write(cache.path("r/m@sha256:1"), "{").expect("damaged");
        assert_eq!(cache.load("r/m@sha256:1"), None);

        // Past the TTL, gone.
        let expired = DiskCache::new(dir.path(), 10_000, Duration::ZERO);
        expired.store("r/m@sha256:3", &module);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(expired.load("r/m@sha256:3"), None);

        // Over the size, the least recently used go first.
        let small = DiskCache::new(dir.path(), 250, Duration::from_secs(3600));
        small.store("a", &bundle(&"x".repeat(100)));
        std::thread::sleep(Duration::from_millis(20));
        small.store("b", &bundle(&"y".repeat(100)));
        assert_eq!(small.load("a"), None, "the older entry made room");
        assert!(small.load("b").is_some());
    }
}
