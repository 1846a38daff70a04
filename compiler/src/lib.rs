//! cilc: compiles container network policy into specialised eBPF programs.
//!
//! The pipeline, one module per stage:
//!
//! ```text
//! .cpl ──cilc_grammar::parse──▶ ast::File (spans)      [grammar/ crate]
//!      ──resolve──────────────▶ resolve::Program + diagnostics
//!      ──ir::lower/validate───▶ ir::Validated (normalised rules)
//!      ──eval::evaluate───────▶ the reference verdict of a packet
//! ```
//!
//! Around it: `diag` (diagnostics as values and their renderers), `fmt`
//! (the canonical printer of the AST, comments kept), `gen` (synthetic
//! policies for tests and benchmarks) and `driver` (what the CLI verbs do,
//! as plain functions that return text and exit codes).

// Diagnostics are the error type of the checks; they are built once per
// mistake, so their size does not matter.
#![allow(clippy::result_large_err)]

pub mod bench;
pub mod classbench;
pub mod codegen;
pub mod diag;
pub mod diff;
pub mod driver;
pub mod eval;
pub mod fmt;
pub mod fx;
pub mod gen;
pub mod ir;
pub mod kernel;
pub mod lint;
pub mod resolve;
pub mod tree;

use cilc_grammar::ast;
use diag::Diagnostic;

/// Parse and resolve one source text: the whole front end.
pub fn check_source(src: &str) -> (ast::File, resolve::Program, Vec<Diagnostic>) {
    let (file, syntax) = cilc_grammar::parse(src);
    let mut diags: Vec<Diagnostic> = syntax.iter().map(diag::from_syntax).collect();
    let (program, mut more) = resolve::resolve(&file);
    if !diags.is_empty() {
        // After a syntax error, names defined in the skipped text look
        // undefined and definitions look unused: keep only what is sure.
        more.retain(|d| {
            !matches!(
                d.code,
                diag::Code::UndefinedName | diag::Code::UnusedDefinition
            )
        });
    }
    diags.append(&mut more);
    diags.sort_by_key(|d| (d.span.start, d.span.end));
    (file, program, diags)
}

/// Run one phase of a compile; with `CILC_TIME` set, say how long it took
/// on stderr (for finding where a large policy's time goes).
pub(crate) fn timed<T>(phase: &str, f: impl FnOnce() -> T) -> T {
    let t0 = std::time::Instant::now();
    let out = f();
    if std::env::var_os("CILC_TIME").is_some() {
        // With the process's peak memory so far (Linux).
        let peak = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmHWM:"))
                    .map(|l| l["VmHWM:".len()..].trim().to_string())
            })
            .unwrap_or_default();
        eprintln!("time: {phase} {:?} (peak {peak})", t0.elapsed());
    }
    out
}

/// The whole front end and the IR: source text → validated IR, or the
/// diagnostics (errors and warnings) when there is an error.
pub fn compile_ir(src: &str) -> Result<(ir::Validated, Vec<Diagnostic>), Vec<Diagnostic>> {
    let (_, program, diags) = timed("check", || check_source(src));
    if diags.iter().any(Diagnostic::is_error) {
        return Err(diags);
    }
    let lowered = timed("lower", || ir::lower(&program));
    let validated = timed("validate", || ir::validate(lowered)).map_err(|e| {
        vec![Diagnostic::error(
            diag::Code::Internal,
            Default::default(),
            e.to_string(),
        )]
    })?;
    Ok((validated, diags))
}
