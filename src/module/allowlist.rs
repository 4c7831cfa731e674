//! Where modules may come from: the operator's `--module-sources` allowlist. A platform
//! team running Pequod for many tenants names its registries and Git hosts; a Transform
//! whose module comes from anywhere else is refused before anything is fetched.
//!
//! Patterns: `oci://HOST/PATH` (matched against `oci://` + the reference, tag or digest
//! included), `git::URL` (against `git::` + the clone URL, without `?ref=&path=`),
//! `embedded`, `embedded:NAME`, `configmap`, `configmap:NAME`, `inline`. `*` matches any
//! run of characters, `/` included; a pattern matches the whole origin.

use crate::api::{ModuleRef, ModuleType};

use super::git::GitRef;

/// The allowed module origins; all of them when no pattern is given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModuleSources {
    patterns: Vec<String>,
}

/// A pattern that names no kind of origin.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "module source pattern `{0}` must start with oci://, git:: or be embedded[:NAME], configmap[:NAME] or inline"
)]
pub struct BadPattern(pub String);

impl ModuleSources {
    /// The allowlist of `patterns` (empty: everything is allowed).
    pub fn new(patterns: &[String]) -> Result<ModuleSources, BadPattern> {
        for pattern in patterns {
            let known = pattern.starts_with("oci://")
                || pattern.starts_with("git::")
                || ["embedded", "configmap", "inline"]
                    .iter()
                    .any(|kind| pattern == kind || pattern.starts_with(&format!("{kind}:")));
            if !known {
                return Err(BadPattern(pattern.clone()));
            }
        }
        Ok(ModuleSources {
            patterns: patterns.to_vec(),
        })
    }

    /// Whether every origin is allowed (no `--module-sources`).
    pub fn allows_all(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The origin of `module_ref` if the allowlist refuses it.
    pub fn refused(&self, module_ref: &ModuleRef) -> Option<String> {
        if self.allows_all() {
            return None;
        }
        let candidates = origins(module_ref);
        let allowed = self.patterns.iter().any(|pattern| {
            candidates
                .iter()
                .any(|origin| glob_matches(pattern, origin))
        });
        (!allowed).then(|| candidates.into_iter().next().unwrap_or_default())
    }

    /// The patterns, as given.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }
}

/// How a reference is named for matching: its full origin first (shown in refusals), and
/// for the local kinds their bare kind too.
fn origins(module_ref: &ModuleRef) -> Vec<String> {
    match module_ref.type_ {
        ModuleType::Oci => vec![format!("oci://{}", module_ref.ref_)],
        ModuleType::Git => vec![format!(
            "git::{}",
            GitRef::parse(&module_ref.ref_, module_ref.path.as_deref()).url
        )],
        ModuleType::Embedded => vec![
            format!("embedded:{}", module_ref.ref_),
            "embedded".to_string(),
        ],
        ModuleType::Configmap => vec![
            format!("configmap:{}", module_ref.ref_),
            "configmap".to_string(),
        ],
        ModuleType::Inline => vec!["inline".to_string()],
    }
}

/// Whether `text` matches `pattern` as a whole, `*` standing for any run of characters.
fn glob_matches(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, rest) = match parts.split_first() {
        Some(split) => split,
        None => return text.is_empty(),
    };
    let Some(mut remaining) = text.strip_prefix(first) else {
        return false;
    };
    let Some((last, middle)) = rest.split_last() else {
        return remaining.is_empty();
    };
    for part in middle {
        match remaining.find(part) {
            Some(at) => remaining = &remaining[at + part.len()..],
            None => return false,
        }
    }
    remaining.len() >= last.len() && remaining.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(type_: ModuleType, reference: &str) -> ModuleRef {
        ModuleRef {
            type_,
            ref_: reference.to_string(),
            path: None,
            entrypoint: None,
            pull_secret_ref: None,
            digest: None,
        }
    }

    fn sources(patterns: &[&str]) -> ModuleSources {
        let patterns: Vec<String> = patterns.iter().map(|p| p.to_string()).collect();
        ModuleSources::new(&patterns).expect("valid patterns")
    }

    #[test]
    fn globs_match_whole_origins() {
        assert!(glob_matches(
            "oci://r.corp/platforms/*",
            "oci://r.corp/platforms/web:1.0"
        ));
        assert!(glob_matches(
            "oci://r.corp/*/web*",
            "oci://r.corp/a/b/web@sha256:1"
        ));
        assert!(!glob_matches("oci://r.corp/*", "oci://r.corp.evil.io/x"));
        assert!(glob_matches("inline", "inline"));
        assert!(!glob_matches("inline", "inlined"));
        assert!(glob_matches("a*b*c", "abc"));
        assert!(!glob_matches("a*bc", "ab"));
    }

    #[test]
    fn only_listed_origins_are_allowed() {
        let allowlist = sources(&[
            "oci://registry.corp/platforms/*",
            "git::https://git.corp/*",
            "embedded:webservice",
            "configmap",
        ]);
        let allowed = [
            module(ModuleType::Oci, "registry.corp/platforms/postgres:1.2.0"),
            module(
                ModuleType::Git,
                "https://git.corp/team/mods.git?ref=v1&path=web",
            ),
            module(ModuleType::Embedded, "webservice"),
            module(ModuleType::Configmap, "my-module"),
        ];
        for module_ref in &allowed {
            assert_eq!(allowlist.refused(module_ref), None, "{module_ref:?}");
        }
        let refused = [
            (
                module(ModuleType::Oci, "docker.io/evil/web:1"),
                "oci://docker.io/evil/web:1",
            ),
            (
                module(ModuleType::Git, "git://scanner.local:22/x"),
                "git::git://scanner.local:22/x",
            ),
            (
                module(ModuleType::Embedded, "postgres"),
                "embedded:postgres",
            ),
            (module(ModuleType::Inline, "{}"), "inline"),
        ];
        for (module_ref, origin) in &refused {
            assert_eq!(allowlist.refused(module_ref).as_deref(), Some(*origin));
        }
        assert_eq!(
            sources(&[]).refused(&refused[3].0),
            None,
            "no list: all allowed"
        );
    }

    #[test]
    fn patterns_must_name_a_kind_of_origin() {
        assert_eq!(
            ModuleSources::new(&["registry.corp/*".to_string()]),
            Err(BadPattern("registry.corp/*".to_string()))
        );
    }
}
