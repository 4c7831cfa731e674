//! Module references as written on a command line (`pequod module impact REF`,
//! `--policy-module REF`): a directory, a shipped module, a ConfigMap, a Git URL or an OCI
//! artifact.

use std::path::{Path, PathBuf};

use crate::api::{ModuleRef, ModuleType};

/// Where a module named on the command line comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum CommandLineRef {
    /// A directory on the local disk (a path that starts with `.` or `/`, or exists).
    Directory(PathBuf),
    /// `embedded:NAME`: a module shipped in the binary.
    Embedded(String),
    /// `configmap:NAME`: a ConfigMap (in the operator's namespace, for the operator).
    ConfigMap(String),
    /// `git+URL` or an OCI reference, as a moduleRef would name it.
    Remote(ModuleRef),
}

/// Why a command-line reference cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CommandLineRefError {
    /// It looks like a path, but is no directory.
    #[error("{0} is not a module directory")]
    NotADirectory(String),
    /// `embedded:` or `configmap:` without a name.
    #[error("`{0}` names nothing after the colon")]
    Empty(String),
}

impl CommandLineRef {
    /// Reads `reference`: `embedded:NAME`, `configmap:NAME`, a directory (a path that starts
    /// with `.` or `/`, or an existing directory), `git+URL` (a clone URL with optional
    /// `?ref=&path=`, as a Transform's moduleRef), else an OCI artifact
    /// (`registry/repository:tag` or `@sha256:…`).
    pub fn parse(
        reference: &str,
        entrypoint: Option<&str>,
    ) -> Result<CommandLineRef, CommandLineRefError> {
        let named = |prefix: &str| {
            reference.strip_prefix(prefix).map(|name| {
                if name.is_empty() {
                    Err(CommandLineRefError::Empty(reference.to_string()))
                } else {
                    Ok(name.to_string())
                }
            })
        };
        if let Some(name) = named("embedded:") {
            return Ok(CommandLineRef::Embedded(name?));
        }
        if let Some(name) = named("configmap:") {
            return Ok(CommandLineRef::ConfigMap(name?));
        }
        let local = Path::new(reference);
        if local.is_dir() {
            return Ok(CommandLineRef::Directory(local.to_path_buf()));
        }
        if [".", "/"].iter().any(|p| reference.starts_with(p)) {
            return Err(CommandLineRefError::NotADirectory(reference.to_string()));
        }
        let (type_, ref_) = match reference.strip_prefix("git+") {
            Some(url) => (ModuleType::Git, url.to_string()),
            None => (ModuleType::Oci, reference.to_string()),
        };
        Ok(CommandLineRef::Remote(ModuleRef {
            type_,
            ref_,
            path: None,
            entrypoint: entrypoint.map(str::to_string),
            pull_secret_ref: None,
            digest: None,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_form_is_recognised() {
        let parse = |text: &str| CommandLineRef::parse(text, None);
        assert_eq!(
            parse("embedded:baseline").expect("embedded"),
            CommandLineRef::Embedded("baseline".into())
        );
        assert_eq!(
            parse("configmap:pequod-policies").expect("configmap"),
            CommandLineRef::ConfigMap("pequod-policies".into())
        );
        let dir = std::env::temp_dir();
        assert_eq!(
            parse(&dir.display().to_string()).expect("dir"),
            CommandLineRef::Directory(dir)
        );
        assert_eq!(
            parse("./no/such/dir").expect_err("missing").to_string(),
            "./no/such/dir is not a module directory"
        );
        assert_eq!(
            parse("embedded:").expect_err("empty").to_string(),
            "`embedded:` names nothing after the colon"
        );
        let CommandLineRef::Remote(git) = parse("git+https://git.corp/p.git?ref=v1").expect("git")
        else {
            panic!("not remote");
        };
        assert_eq!(
            (git.type_, git.ref_.as_str()),
            (ModuleType::Git, "https://git.corp/p.git?ref=v1")
        );
        let CommandLineRef::Remote(oci) = parse("registry.corp/policies:1.0").expect("oci") else {
            panic!("not remote");
        };
        assert_eq!(
            (oci.type_, oci.ref_.as_str()),
            (ModuleType::Oci, "registry.corp/policies:1.0")
        );
    }
}
