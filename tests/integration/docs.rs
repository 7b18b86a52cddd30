//! The project's own documents stand alone: every relative link in them
//! names a file or folder of the repository.

use std::path::Path;

/// Relative link targets of a markdown text (`[text](target)`), without
/// their `#anchor`.
fn relative_links(text: &str) -> Vec<String> {
    let mut links = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("](") {
        rest = &rest[at + 2..];
        let Some(end) = rest.find(')') else { break };
        let target = &rest[..end];
        let path = target.split('#').next().unwrap_or_default();
        if !path.is_empty() && !target.contains("://") && !target.starts_with("mailto:") {
            links.push(path.to_string());
        }
    }
    links
}

#[test]
fn every_relative_link_in_the_documents_names_a_file_of_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut documents = vec![
        root.join("README.md"),
        root.join("ARCHITECTURE.md"),
        root.join("SECURITY.md"),
    ];
    for entry in std::fs::read_dir(root.join("docs")).expect("docs/") {
        documents.push(entry.expect("entry").path());
    }
    let mut checked = 0;
    for doc in &documents {
        let text = std::fs::read_to_string(doc).expect("a document");
        assert!(
            !text.contains("SPEC.md"),
            "{} points to SPEC.md, which is not in the repository",
            doc.display()
        );
        let dir = doc.parent().expect("a folder");
        for link in relative_links(&text) {
            assert!(
                dir.join(&link).exists(),
                "{} links to {link}, which is not in the repository",
                doc.display()
            );
            checked += 1;
        }
    }
    assert!(checked >= 5, "only {checked} links found");
}
