//! Documentation code that cannot be a doctest (it needs another crate or a cargo
//! feature) is kept as a ```` ```rust,ignore ```` block after a marker line
//! `<!-- snippet: PATH -->`, and must be the exact text of a region of the compiled
//! file PATH (relative to the repository root, whichever page the marker is on). Shell
//! walkthroughs (```` ```sh ````) are held the same way to a script a test runs. This
//! test holds them together: change one without the other and it fails. The pages
//! checked are the README, every page under `docs/`, and the example app's README;
//! each of them is also included in `src/lib.rs` as doctests, so every other Rust
//! block in them is compiled and run.

use std::path::{Path, PathBuf};

/// Each snippet marker a page must keep, as (page, snippet source): removing a
/// section's snippet, or moving it to another page, is a decision, not an accident.
const REQUIRED: &[(&str, &str)] = &[
    (
        "examples/axum-app/README.md",
        "examples/axum-app/src/session.rs",
    ),
    (
        "examples/axum-app/README.md",
        "examples/axum-app/src/routes.rs",
    ),
    ("docs/integrations.md", "examples/actix_session.rs"),
    ("docs/integrations.md", "examples/tower_sessions.rs"),
    ("docs/integrations.md", "tests/conformance.rs"),
    ("docs/cli.md", "examples/cli.sh"),
    ("docs/redis.md", "examples/redis.rs"),
];

/// The pages whose snippets are checked, relative to the repository root: the README,
/// every `docs/*.md`, and the example app's README.
fn pages(root: &Path) -> Vec<PathBuf> {
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .map(|p| p.strip_prefix(root).unwrap().to_path_buf())
        .collect();
    docs.sort();
    let mut out = vec![PathBuf::from("README.md")];
    out.extend(docs);
    out.push(PathBuf::from("examples/axum-app/README.md"));
    out
}

/// `(path, code)` for every marked snippet in `readme`.
fn snippets(readme: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut lines = readme.lines();
    while let Some(line) = lines.next() {
        let Some(path) = line
            .trim()
            .strip_prefix("<!-- snippet:")
            .and_then(|rest| rest.strip_suffix("-->"))
        else {
            continue;
        };
        let fence = lines
            .next()
            .unwrap_or_else(|| panic!("snippet {path}: nothing after the marker"));
        let fence = fence.trim_start();
        assert!(
            fence.starts_with("```rust,ignore") || fence == "```sh",
            "snippet {path}: the marker must be followed by a ```rust,ignore (or ```sh) \
             block, got {fence:?}"
        );
        let mut code = String::new();
        for line in lines.by_ref() {
            if line.trim_start().starts_with("```") {
                break;
            }
            code.push_str(line);
            code.push('\n');
        }
        assert!(!code.trim().is_empty(), "snippet {path} is empty");
        out.push((path.trim().to_owned(), code));
    }
    out
}

#[test]
fn every_readme_snippet_is_verbatim_text_of_its_compiled_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut found = Vec::new();
    for page in pages(root) {
        let text = std::fs::read_to_string(root.join(&page))
            .unwrap_or_else(|e| panic!("{}: {e}", page.display()));
        for (path, code) in snippets(&text) {
            found.push((page.to_string_lossy().into_owned(), path, code));
        }
    }
    for (page, required) in REQUIRED {
        assert!(
            found.iter().any(|(p, s, _)| p == page && s == required),
            "{page} lost its snippet of {required}"
        );
    }
    for (page, path, code) in &found {
        let source = std::fs::read_to_string(root.join(path))
            .unwrap_or_else(|e| panic!("{page}: snippet source {path}: {e}"));
        assert!(
            source.contains(code.as_str()),
            "{page}'s snippet of {path} is not in that file verbatim; copy the region \
             again:\n{code}"
        );
    }
}

/// A page whose Rust blocks are not doctests could hold code that no longer compiles:
/// each page checked above must be included in `src/lib.rs` under `#[cfg(doctest)]`.
#[test]
fn every_documentation_page_is_included_as_doctests() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = std::fs::read_to_string(root.join("src/lib.rs")).unwrap();
    for page in pages(root) {
        let include = format!("include_str!(\"../{}\")", page.display());
        assert!(
            lib.contains(&include),
            "{} is not compiled: add `#[cfg(doctest)] #[doc = {include}] struct …;` at the \
             end of src/lib.rs",
            page.display()
        );
    }
}

#[test]
fn the_snippet_reader_finds_markers_and_stops_at_the_fence() {
    let md = "text\n<!-- snippet: a/b.rs -->\n```rust,ignore\nfn x() {}\n```\nafter\n";
    assert_eq!(
        snippets(md),
        vec![("a/b.rs".to_owned(), "fn x() {}\n".to_owned())]
    );
    assert!(snippets("no markers here\n```rust\nfn y() {}\n```\n").is_empty());
    let sh = "<!-- snippet: run.sh -->\n```sh\nsessiondb stats\n```\n";
    assert_eq!(
        snippets(sh),
        vec![("run.sh".to_owned(), "sessiondb stats\n".to_owned())]
    );
}

/// Every test a page names as the proof of a promise — a link `` [`name`](tests/…) `` —
/// is a `fn` of that name in that file: renaming or removing the test without the page
/// leaves a promise with nothing behind it.
#[test]
fn every_test_a_page_links_to_exists_by_that_name() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut pages = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            pages.push(path);
        }
    }
    let mut links = 0;
    let mut missing = Vec::new();
    for page in &pages {
        let text = std::fs::read_to_string(page).unwrap();
        let base = page.parent().unwrap();
        let mut rest = text.as_str();
        while let Some(at) = rest.find("[`") {
            rest = &rest[at + 2..];
            let Some(end) = rest.find("`](") else { break };
            let name = &rest[..end];
            let target = &rest[end + 3..];
            let Some(close) = target.find(')') else { break };
            let target = target[..close].split('#').next().unwrap();
            let is_test_file = target.contains("tests/") && target.ends_with(".rs");
            if !is_test_file
                || !name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                continue;
            }
            links += 1;
            let file = base.join(target);
            let source = std::fs::read_to_string(&file).unwrap_or_default();
            if !source.contains(&format!("fn {name}(")) {
                missing.push(format!("{}: {name} in {target}", page.display()));
            }
        }
    }
    assert!(
        links >= 10,
        "only {links} links to tests found: the parser is broken"
    );
    assert!(
        missing.is_empty(),
        "links to tests that do not exist:\n{}",
        missing.join("\n")
    );
}
