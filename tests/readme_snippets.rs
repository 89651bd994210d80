//! README code that cannot be a doctest (it needs another crate or a cargo feature) is
//! kept as a ```` ```rust,ignore ```` block after a marker line
//! `<!-- snippet: PATH -->`, and must be the exact text of a region of the compiled
//! file PATH (relative to the repository root). Shell walkthroughs (```` ```sh ````) are
//! held the same way to a script a test runs. This test holds them together: change
//! one without the other and it fails.

use std::path::Path;

/// Each snippet marker the README must keep: removing a section's snippet is a
/// decision, not an accident.
const REQUIRED: &[&str] = &[
    "examples/axum-app/src/session.rs",
    "examples/axum-app/src/routes.rs",
    "examples/actix_session.rs",
    "examples/cli.sh",
    "examples/tower_sessions.rs",
    "examples/redis.rs",
    "tests/conformance.rs",
];

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
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let found = snippets(&readme);
    for required in REQUIRED {
        assert!(
            found.iter().any(|(p, _)| p == required),
            "README lost its snippet of {required}"
        );
    }
    for (path, code) in &found {
        let source = std::fs::read_to_string(root.join(path))
            .unwrap_or_else(|e| panic!("snippet source {path}: {e}"));
        assert!(
            source.contains(code.as_str()),
            "the README's snippet of {path} is not in that file verbatim; copy the region \
             again:\n{code}"
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
