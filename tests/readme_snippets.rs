//! The README's feature-gated snippets are `rust,ignore` blocks (README blocks are
//! doctests under default features), so each one must be the verbatim text of a file
//! that is compiled under its feature: a line `<!-- snippet: path/to/file.rs -->`
//! precedes the block, and this test checks the file contains the block. Edit the file,
//! then paste the region into the README.

use std::path::Path;

/// `(file, block)` for every marked snippet in the README.
fn snippets(readme: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut lines = readme.lines();
    while let Some(line) = lines.next() {
        let Some(file) = line
            .trim()
            .strip_prefix("<!-- snippet: ")
            .and_then(|rest| rest.strip_suffix(" -->"))
        else {
            continue;
        };
        let fence = lines.next().unwrap_or_default();
        assert!(
            fence.starts_with("```rust,ignore"),
            "the line after the marker for {file} must open a ```rust,ignore block, found {fence:?}"
        );
        let mut block = String::new();
        for l in lines.by_ref() {
            if l.starts_with("```") {
                break;
            }
            block.push_str(l);
            block.push('\n');
        }
        out.push((file.to_owned(), block));
    }
    out
}

#[test]
fn readme_snippets_are_verbatim_regions_of_compiled_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let found = snippets(&readme);
    for expected in ["examples/tower_sessions.rs", "tests/conformance.rs"] {
        assert!(
            found.iter().any(|(f, _)| f == expected),
            "the README has no snippet marked {expected}"
        );
    }
    for (file, block) in &found {
        assert!(
            block.lines().count() >= 3,
            "the snippet for {file} is empty"
        );
        let text = std::fs::read_to_string(root.join(file))
            .unwrap_or_else(|e| panic!("README snippet names {file}: {e}"));
        assert!(
            text.contains(block.as_str()),
            "the README snippet marked {file} is not in that file verbatim; copy the region again"
        );
    }
}

#[test]
fn a_changed_snippet_is_caught() {
    let readme = "text\n<!-- snippet: x.rs -->\n```rust,ignore\nfn a() {}\nfn b() {}\n```\n";
    let found = snippets(readme);
    assert_eq!(
        found,
        vec![("x.rs".to_owned(), "fn a() {}\nfn b() {}\n".to_owned())]
    );
    let file = "fn a() {}\nfn c() {}\n";
    assert!(!file.contains(found[0].1.as_str()));
}
