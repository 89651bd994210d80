//! README snippets that cannot be doctests under default features (feature-gated Rust,
//! shell) stay true another way: each is marked `<!-- snippet: PATH -->` right above its
//! code block, and the block must be the exact text of a region of PATH, a file that CI
//! compiles or runs. Edit the file, then paste the region into the README.

use std::path::Path;

const MARKER: &str = "<!-- snippet: ";

/// `(path, body)` of every marked block in `readme`.
fn marked_snippets(readme: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = readme;
    while let Some(at) = rest.find(MARKER) {
        let after = &rest[at + MARKER.len()..];
        let close = after
            .find(" -->")
            .expect("a snippet marker ends with ` -->`");
        let path = after[..close].trim().to_owned();
        let after = &after[close + " -->".len()..];
        let fence = after.find("```").expect("a code block follows the marker");
        assert!(
            after[..fence].trim().is_empty(),
            "the code block must follow the marker for {path} directly"
        );
        let body_start = fence + after[fence..].find('\n').expect("fence line ends") + 1;
        let body_len = after[body_start..]
            .find("\n```")
            .expect("the code block is closed")
            + 1;
        out.push((path, after[body_start..body_start + body_len].to_owned()));
        rest = &after[body_start + body_len..];
    }
    out
}

#[test]
fn every_marked_readme_snippet_is_verbatim_in_its_source_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let snippets = marked_snippets(&readme);
    assert!(!snippets.is_empty(), "the README marks its snippets");
    for (path, body) in snippets {
        let source = std::fs::read_to_string(root.join(&path))
            .unwrap_or_else(|e| panic!("README snippet source {path}: {e}"));
        assert!(
            source.contains(&body),
            "the README's snippet for {path} is not verbatim in {path}:\n{body}"
        );
    }
}

#[test]
fn a_snippet_that_drifted_from_its_file_is_caught() {
    let readme = "x\n<!-- snippet: a.rs -->\n```rust,ignore\nfn a() {}\n```\n";
    let found = marked_snippets(readme);
    assert_eq!(found, vec![("a.rs".to_owned(), "fn a() {}\n".to_owned())]);
    assert!(!"fn a() { }\n".contains(&found[0].1));
}
