//! The modules of `src/` depend one way (CONTRIBUTING.md, "Layering"):
//! api ← graph ← module ← render ← plan ← exec ← controller ← cli, with metrics and
//! backoff and digest beside api. A file may name `crate::X` only for an X to its left.

mod common;

use std::path::Path;

/// Each top-level module and its layer: a module may use only modules of lower layers.
const LAYERS: &[(&str, u8)] = &[
    ("api", 0),
    ("metrics", 1),
    ("backoff", 1),
    ("digest", 1),
    ("graph", 2),
    ("module", 3),
    ("render", 4),
    ("plan", 5),
    ("exec", 6),
    ("controller", 7),
    ("cli", 8),
];

fn layer(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

fn rust_files(dir: &Path, found: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

#[test]
fn modules_depend_one_way() {
    let src = common::repo().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut violations = Vec::new();
    for file in files {
        let relative = file.strip_prefix(&src).expect("under src");
        let first = relative
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .unwrap_or_default();
        let module = first.trim_end_matches(".rs");
        let Some(own) = layer(module) else {
            continue; // lib.rs, main.rs
        };
        let text = std::fs::read_to_string(&file).expect("readable");
        for (number, line) in text.lines().enumerate() {
            for (at, _) in line.match_indices("crate::") {
                let used: String = line[at + "crate::".len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                match layer(&used) {
                    Some(other) if other >= own && used != module => violations.push(format!(
                        "{}:{}: {module} uses crate::{used}",
                        relative.display(),
                        number + 1
                    )),
                    _ => {}
                }
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}
