//! ClassBench rule sets and traces from `../shared/bench/classbench/`
//! through `cilc import classbench` and the reference evaluator: every
//! packet of every trace with exact first-match truth must be decided by
//! exactly the expected rule.
//!
//! These tests need the shared data beside the repository. Without it they
//! say so on stderr and check nothing else (the self-contained import
//! tests are in `src/classbench.rs`); CI always has the data.

use std::path::Path;

use cilc::classbench;

mod common;

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn check_trace(filters: &str, trace: &str, truth: Option<&str>) {
    let Some(dir) = common::shared() else { return };
    let f = classbench::parse_filters(&read(&dir.join(filters))).unwrap();
    let cpl = classbench::to_cpl(&f, "classbench", filters).unwrap();
    let (ir, _) = cilc::compile_ir(&cpl).unwrap_or_else(|d| panic!("{filters}: {:?}", d.first()));
    assert_eq!(ir.rules.len(), f.len());
    let lines = classbench::parse_trace(&read(&dir.join(trace))).unwrap();
    let truth = truth.map(|t| classbench::parse_truth(&read(&dir.join(t))).unwrap());
    let report = classbench::run_trace(&ir, &lines, truth.as_deref(), truth.is_none()).unwrap();
    assert!(
        report.packets > 1000,
        "{trace}: only {} packets",
        report.packets
    );
    assert!(
        report.disagree.is_empty(),
        "{trace}: {} of {} packets decided by another rule, first: {:?}",
        report.disagree.len(),
        report.packets,
        &report.disagree[..report.disagree.len().min(5)]
    );
}

#[test]
fn wustl_acl1_1k() {
    check_trace("wustl_hs1/acl1_1K", "wustl_hs1/acl1_1K_trace", None);
}

#[test]
fn wustl_fw1_1k() {
    check_trace("wustl_hs1/fw1_1K", "wustl_hs1/fw1_1K_trace", None);
}

#[test]
fn wustl_ipc1_1k() {
    check_trace("wustl_hs1/ipc1_1K", "wustl_hs1/ipc1_1K_trace", None);
}

#[test]
fn lyxocs_acl1_1k() {
    check_trace(
        "lyxocs_ruleSet/acl1_1k",
        "lyxocs_ruleSet/acl1_1k_trace",
        Some("lyxocs_ruleSet/derived/acl1_1k_trace.first_match0"),
    );
}

#[test]
fn lyxocs_fw1_1k() {
    check_trace(
        "lyxocs_ruleSet/fw1_1k",
        "lyxocs_ruleSet/fw1_1k_trace",
        Some("lyxocs_ruleSet/derived/fw1_1k_trace.first_match0"),
    );
}

#[test]
fn lyxocs_ipc1_1k() {
    check_trace(
        "lyxocs_ruleSet/ipc1_1k",
        "lyxocs_ruleSet/ipc1_1k_trace",
        Some("lyxocs_ruleSet/derived/ipc1_1k_trace.first_match0"),
    );
}

#[test]
fn lyxocs_fw1_10k() {
    check_trace(
        "lyxocs_ruleSet/fw1_10k",
        "lyxocs_ruleSet/fw1_10k_trace",
        Some("lyxocs_ruleSet/derived/fw1_10k_trace.first_match0"),
    );
}

#[test]
fn lyxocs_ipc1_10k() {
    check_trace(
        "lyxocs_ruleSet/ipc1_10k",
        "lyxocs_ruleSet/ipc1_10k_trace",
        Some("lyxocs_ruleSet/derived/ipc1_10k_trace.first_match0"),
    );
}

/// Every filter set in the shared data imports and checks, including the
/// 100k ones (which have no traces).
#[test]
fn every_filter_set_imports_and_checks() {
    let Some(dir) = common::shared() else { return };
    let mut n = 0;
    for sub in [
        "fighternan_100k",
        "lyxocs_ruleSet",
        "neurocuts",
        "wustl_hs1",
    ] {
        for e in std::fs::read_dir(dir.join(sub)).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if p.is_dir() || name.contains("trace") {
                continue;
            }
            let f = classbench::parse_filters(&read(&p)).unwrap_or_else(|e| panic!("{name}: {e}"));
            let cpl = classbench::to_cpl(&f, "classbench", &name).unwrap();
            let (ir, _) =
                cilc::compile_ir(&cpl).unwrap_or_else(|d| panic!("{name}: {:?}", d.first()));
            assert_eq!(ir.rules.len(), f.len(), "{name}");
            n += 1;
        }
    }
    assert!(n >= 12, "only {n} filter sets found");
}
