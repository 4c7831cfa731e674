//! Modules and the Nickel library compiled into the binary from `platforms/` and
//! `schemas/pequod/`.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use include_dir::{Dir, include_dir};

use super::ModuleBundle;

static PLATFORMS: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/platforms");
static LIBRARY: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/schemas/pequod");

/// The directory of `platforms/` that holds cluster policy modules, not platform modules.
const POLICIES_DIR: &str = "policies";

static EMBEDDED: LazyLock<BTreeMap<String, ModuleBundle>> =
    LazyLock::new(|| bundles(PLATFORMS.dirs().filter(|dir| dir.path() != POLICIES_DIR)));

static EMBEDDED_POLICIES: LazyLock<BTreeMap<String, ModuleBundle>> = LazyLock::new(|| {
    bundles(
        PLATFORMS
            .get_dir(POLICIES_DIR)
            .into_iter()
            .flat_map(Dir::dirs),
    )
});

/// A module bundle of each directory, by the directory's name.
fn bundles<'a>(dirs: impl Iterator<Item = &'a Dir<'static>>) -> BTreeMap<String, ModuleBundle> {
    dirs.filter_map(|dir| {
        let name = dir.path().file_name()?.to_str()?.to_string();
        let mut files = BTreeMap::new();
        collect(dir, dir.path(), &mut files);
        let files = files.into_iter().map(|(k, v)| (k, v.to_string())).collect();
        // A shipped module with unusable file names is a bug caught by the tests below;
        // it is left out rather than taking the process down.
        ModuleBundle::new(files, None).ok().map(|b| (name, b))
    })
    .collect()
}

/// Every UTF-8 file below `dir`, keyed by its `/`-separated path relative to `root`.
fn collect(dir: &Dir<'static>, root: &std::path::Path, out: &mut BTreeMap<String, &'static str>) {
    for file in dir.files() {
        if let (Ok(relative), Some(text)) = (file.path().strip_prefix(root), file.contents_utf8()) {
            out.insert(relative.to_string_lossy().replace('\\', "/"), text);
        }
    }
    for sub in dir.dirs() {
        collect(sub, root, out);
    }
}

/// The module shipped in the binary under `name` (e.g. `postgres`, `webservice`).
pub fn embedded_module(name: &str) -> Option<&'static ModuleBundle> {
    EMBEDDED.get(name)
}

/// Names of the shipped modules.
pub fn embedded_module_names() -> Vec<&'static str> {
    EMBEDDED.keys().map(String::as_str).collect()
}

/// The cluster policy module shipped in the binary under `name` (e.g. `baseline`).
fn embedded_policy_module(name: &str) -> Option<&'static ModuleBundle> {
    EMBEDDED_POLICIES.get(name)
}

/// No cluster policy module is shipped under this name.
#[derive(Debug, thiserror::Error)]
#[error("no shipped policy module `{0}` (shipped: {shipped})", shipped = embedded_policy_module_names().join(", "))]
pub struct UnknownPolicyModule(pub String);

/// The files of the cluster policy module shipped under `name`, or the error naming the
/// shipped ones.
pub fn shipped_policy_module(name: &str) -> Result<ModuleBundle, UnknownPolicyModule> {
    embedded_policy_module(name)
        .cloned()
        .ok_or_else(|| UnknownPolicyModule(name.to_string()))
}

/// Names of the shipped cluster policy modules.
pub fn embedded_policy_module_names() -> Vec<&'static str> {
    EMBEDDED_POLICIES.keys().map(String::as_str).collect()
}

/// The directory under which modules import the library: `import "pequod/graph.ncl"`.
pub const LIBRARY_PREFIX: &str = "pequod";

/// The Nickel library modules import as `"pequod/<file>"`: file name → source.
pub fn library_files() -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    collect(&LIBRARY, LIBRARY.path(), &mut files);
    files
        .into_iter()
        .map(|(name, source)| (name, source.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_modules_and_library_are_embedded() {
        assert_eq!(embedded_module_names(), ["postgres", "webservice"]);
        assert_eq!(embedded_policy_module_names(), ["baseline"]);
        assert!(shipped_policy_module("baseline").is_ok());
        assert_eq!(
            shipped_policy_module("nope")
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Err("no shipped policy module `nope` (shipped: baseline)".to_string())
        );
        let library: Vec<String> = library_files().into_keys().collect();
        assert_eq!(library, ["graph.ncl", "k8s.ncl", "policy.ncl", "ready.ncl"]);
    }
}
