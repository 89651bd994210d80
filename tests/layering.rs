//! The dependency rule between the library's folders, checked on the source: imports
//! only go down.
//!
//! ```text
//! integrations/  →  sessions.rs  →  store/ | redis/ | postgres/
//! store/  →  journal/  →  backend/  →  model/
//! store/  →  index/                 →  model/
//! redis/  →  model/
//! postgres/  →  model/
//! everything  →  options, clock, error, util/
//! ```
//!
//! A layer may use any layer below it (an arrow's target and what that reaches), never
//! one above or beside it: `index/` knows no `backend/`, `journal/` or `store/`;
//! `backend/` knows no `index/`, `journal/` or `store/`; `journal/` knows no `store/`;
//! `store/`, `redis/` and `postgres/` know nothing of each other. Nothing reaches an item through the
//! crate root (`crate::Store`): a module names the module that defines what it uses.
//! The `sessiondb` binary is a crate of its own and uses only the public API.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Every layer, and the layers it may use (besides itself).
const RULE: &[(&str, &[&str])] = &[
    ("base", &["base"]),
    ("model", &["base"]),
    ("index", &["model", "base"]),
    ("backend", &["model", "base"]),
    ("journal", &["backend", "model", "base"]),
    ("store", &["journal", "backend", "index", "model", "base"]),
    ("redis", &["model", "base"]),
    ("postgres", &["model", "base"]),
    (
        "sessions",
        &[
            "store", "redis", "postgres", "journal", "backend", "index", "model", "base",
        ],
    ),
    (
        "integrations",
        &[
            "sessions", "store", "redis", "postgres", "journal", "backend", "index", "model",
            "base",
        ],
    ),
];

/// The layer of a top-level module or folder of `src/` (`None`: not a layer of its own).
fn layer_of_module(module: &str) -> Option<&'static str> {
    Some(match module {
        "error" | "clock" | "options" | "util" => "base",
        "model" => "model",
        "index" => "index",
        "backend" => "backend",
        "journal" => "journal",
        "store" => "store",
        "redis" => "redis",
        "postgres" => "postgres",
        "sessions" => "sessions",
        "integrations" => "integrations",
        _ => return None,
    })
}

/// The layer a source file belongs to, from its path under `src/` (`None`: the crate
/// root, or the binary, which are not checked).
fn layer_of_file(rel: &Path) -> Option<&'static str> {
    let first = rel.components().next()?.as_os_str().to_str()?;
    if first == "lib.rs" || first == "bin" {
        return None;
    }
    let module = first.strip_suffix(".rs").unwrap_or(first);
    Some(layer_of_module(module).unwrap_or_else(|| {
        panic!(
            "{}: a module in no layer; give it one in tests/layering.rs",
            rel.display()
        )
    }))
}

/// The source with comments dropped (doc links may name any path).
fn code_of(source: &str) -> String {
    source
        .lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::<first segment>` the code names.
fn crate_paths(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let before = rest[..i].chars().last();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // e.g. `$crate::` or an identifier ending in "crate"
        }
        let seg: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if !seg.is_empty() {
            out.insert(seg);
        }
    }
    // `use crate::{a, b}` groups.
    let mut rest = code;
    while let Some(i) = rest.find("crate::{") {
        rest = &rest[i + "crate::{".len()..];
        let group = &rest[..rest.find('}').unwrap_or(rest.len())];
        for item in group.split(',') {
            let seg: String = item
                .trim()
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !seg.is_empty() {
                out.insert(seg);
            }
        }
    }
    out
}

/// What the rule forbids in the file at `rel` (relative to `src/`) with `source`.
fn violations(rel: &Path, source: &str) -> Vec<String> {
    let Some(layer) = layer_of_file(rel) else {
        return Vec::new();
    };
    let allowed = RULE
        .iter()
        .find(|(l, _)| *l == layer)
        .map(|(_, a)| *a)
        .expect("every layer has a rule");
    let code = code_of(source);
    let mut out = Vec::new();
    if code.contains("super::super") {
        out.push(format!(
            "{}: super::super reaches out of its folder; name the path from crate::",
            rel.display()
        ));
    }
    for seg in crate_paths(&code) {
        match layer_of_module(&seg) {
            Some(target) if target == layer || allowed.contains(&target) => {}
            Some(target) => out.push(format!(
                "{}: {layer}/ uses crate::{seg} ({target}/), which the rule forbids",
                rel.display()
            )),
            None => out.push(format!(
                "{}: crate::{seg} reaches an item through the crate root; name the module \
                 that defines it",
                rel.display()
            )),
        }
    }
    out
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn imports_only_go_down_the_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files.sort();
    assert!(files.len() > 30, "found {} source files", files.len());
    let all: Vec<String> = files
        .iter()
        .flat_map(|f| {
            let rel = f.strip_prefix(&src).unwrap();
            violations(rel, &std::fs::read_to_string(f).unwrap())
        })
        .collect();
    assert!(
        all.is_empty(),
        "{} imports break the layering:\n{}",
        all.len(),
        all.join("\n")
    );
}

#[test]
fn the_check_catches_an_upward_import_a_sideways_one_and_one_through_the_root() {
    let index = Path::new("index/shard.rs");
    assert!(violations(index, "use crate::model::token::SessionId;\n").is_empty());
    assert!(violations(index, "// see crate::store::Inner\n").is_empty());
    let up = violations(index, "use crate::store::Inner;\n");
    assert_eq!(up.len(), 1, "{up:?}");
    let up = violations(index, "use crate::{backend, model::token};\n");
    assert_eq!(up.len(), 1, "{up:?}");
    let sideways = violations(Path::new("store/mod.rs"), "fn f() -> crate::redis::X {}\n");
    assert_eq!(sideways.len(), 1, "{sideways:?}");
    let root = violations(Path::new("model/data.rs"), "use crate::Error;\n");
    assert_eq!(root.len(), 1, "{root:?}");
    let escape = violations(
        Path::new("redis/events.rs"),
        "use super::super::store::X;\n",
    );
    assert_eq!(escape.len(), 1, "{escape:?}");
    assert!(violations(Path::new("lib.rs"), "use crate::Store;\n").is_empty());
}
