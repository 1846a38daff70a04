//! The text-driven semantic cases of `tests/semantics/` through the
//! reference evaluator, and the rule that every rule of `docs/semantics.md`
//! has a case file.

use std::path::{Path, PathBuf};

use cilc::eval::{cases, evaluate};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn case_files() -> Vec<(PathBuf, cases::CaseFile)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("tests/semantics"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cpltest"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let f =
                cases::parse_case_file(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, f)
        })
        .collect()
}

#[test]
fn every_case_gets_its_expected_verdict_and_rule() {
    let mut failures = Vec::new();
    let mut n = 0;
    for (path, file) in case_files() {
        let ir = match cilc::compile_ir(&file.policy) {
            Ok((ir, _)) => ir,
            Err(d) => panic!("{}: the policy does not compile: {d:?}", path.display()),
        };
        assert!(!file.cases.is_empty(), "{} has no cases", path.display());
        n += file.cases.len();
        for f in cases::run(&file, &ir, |p| evaluate(&ir, p)) {
            failures.push(format!("{}: {f}", path.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {n} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Rules that the reference evaluator cannot express (they concern bytes
/// before a packet is parsed); the BPF parser's tests cover them.
const PARSER_ONLY: &[&str] = &["S3"];

#[test]
fn every_rule_of_the_semantics_has_cases() {
    let doc = std::fs::read_to_string(root().join("docs/semantics.md")).unwrap();
    let rules: Vec<String> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("**S"))
        .filter_map(|l| l.split('.').next())
        .map(|n| format!("S{n}"))
        .collect();
    assert!(
        rules.len() >= 20,
        "found only {} rules in docs/semantics.md",
        rules.len()
    );
    let tested: Vec<String> = case_files()
        .into_iter()
        .flat_map(|(_, f)| f.rules_tested)
        .collect();
    for r in &rules {
        if PARSER_ONLY.contains(&r.as_str()) {
            continue;
        }
        assert!(
            tested.contains(r),
            "{r} of docs/semantics.md has no case file naming it"
        );
    }
}
