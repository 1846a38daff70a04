//! What the documentation and the bundled examples show must be true:
//! every example and every ```cpl block of docs/language.md checks clean
//! (no errors, no warnings).

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// No error or warning, lints included (notes are fine: they point out
/// overlaps that the text means).
fn assert_clean(name: &str, src: &str) {
    let diags: Vec<_> = cilc::driver::diagnose(src, true)
        .into_iter()
        .filter(|d| !d.is_note())
        .collect();
    if !diags.is_empty() {
        let report = cilc::diag::render::Report {
            name,
            source: src,
            diagnostics: &diags,
        };
        panic!(
            "{name} does not check clean:\n{}",
            cilc::diag::render::human(&[report], false)
        );
    }
}

#[test]
fn examples_check_clean() {
    let mut n = 0;
    for entry in std::fs::read_dir(root().join("examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "cpl") {
            assert_clean(
                &path.display().to_string(),
                &std::fs::read_to_string(&path).unwrap(),
            );
            n += 1;
        }
    }
    assert!(n >= 5, "only {n} examples");
}

/// The ```cpl blocks of a markdown text, with their first line number.
fn cpl_blocks(md: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, line) in md.lines().enumerate() {
        match &mut current {
            None if line.trim_start() == "```cpl" => current = Some((i + 2, String::new())),
            Some(_) if line.trim_start() == "```" => blocks.push(current.take().unwrap()),
            Some((_, text)) => {
                text.push_str(line);
                text.push('\n');
            }
            None => {}
        }
    }
    assert!(current.is_none(), "unclosed ```cpl block");
    blocks
}

#[test]
fn language_reference_blocks_check_clean() {
    let md = std::fs::read_to_string(root().join("docs/language.md")).unwrap();
    let blocks = cpl_blocks(&md);
    assert!(
        blocks.len() >= 10,
        "only {} ```cpl blocks in docs/language.md",
        blocks.len()
    );
    for (line, src) in blocks {
        assert_clean(&format!("docs/language.md (block at line {line})"), &src);
    }
}

#[test]
fn every_diagnostic_code_is_documented() {
    let md = std::fs::read_to_string(root().join("docs/language.md")).unwrap();
    for code in cilc::diag::Code::ALL {
        assert!(
            md.contains(&format!("`{}`", code.slug())),
            "docs/language.md does not list `{}`",
            code.slug()
        );
    }
}
