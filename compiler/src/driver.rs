//! What the CLI verbs do, as functions from inputs to an `Outcome` (text
//! for stdout and stderr, and an exit code), so tests can call them.
//!
//! Exit codes: 0 clean, 1 policy errors (or warnings with
//! `--deny-warnings`, or unformatted files with `fmt --check`), 2 usage or
//! I/O errors.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::diag::render::{self, Report};
use crate::diag::{Code, Diagnostic};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Source snippets with carets (stderr).
    Human,
    /// One JSON document (stdout).
    Json,
    /// SARIF 2.1.0 for code-scanning dashboards (stdout).
    Sarif,
    /// GitHub Actions annotations (stdout).
    Github,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub stdout: String,
    pub stderr: String,
    pub code: i32,
}

/// A file read for checking; `-` is standard input.
pub struct Input {
    pub name: String,
    pub text: String,
}

pub fn read_inputs(paths: &[PathBuf], out: &mut Outcome) -> Vec<Input> {
    let mut inputs = Vec::new();
    for p in paths {
        let name = p.display().to_string();
        let text = if p == Path::new("-") {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s).map(|_| s)
        } else {
            std::fs::read_to_string(p)
        };
        match text {
            Ok(text) => inputs.push(Input { name, text }),
            Err(e) => {
                out.stderr
                    .push_str(&format!("error: cannot read `{name}`: {e}\n"));
                out.code = 2;
            }
        }
    }
    inputs
}

pub struct CheckOptions {
    pub format: Format,
    pub deny_warnings: bool,
    pub color: bool,
}

/// `cilc check`: parse and resolve every input, render the diagnostics.
pub fn check(inputs: &[Input], opts: &CheckOptions) -> Outcome {
    let results: Vec<Vec<Diagnostic>> = inputs
        .iter()
        .map(|i| crate::check_source(&i.text).2)
        .collect();
    let reports: Vec<Report<'_>> = inputs
        .iter()
        .zip(&results)
        .map(|(i, d)| Report {
            name: &i.name,
            source: &i.text,
            diagnostics: d,
        })
        .collect();
    let mut out = Outcome::default();
    match opts.format {
        Format::Human => {
            out.stderr = render::human(&reports, opts.color);
            let files = if inputs.len() == 1 {
                "1 file".to_string()
            } else {
                format!("{} files", inputs.len())
            };
            out.stderr
                .push_str(&format!("checked {files}: {}\n", render::summary(&reports)));
        }
        Format::Json => out.stdout = render::json(&reports),
        Format::Sarif => out.stdout = render::sarif(&reports),
        Format::Github => out.stdout = render::github(&reports),
    }
    let all = || results.iter().flatten();
    let failed = all().any(Diagnostic::is_error) || (opts.deny_warnings && all().next().is_some());
    out.code = i32::from(failed);
    out
}

/// `cilc fmt`: the canonical form of each input. With `check`, print the
/// names of files that are not canonical instead and fail; with `write`,
/// rewrite them in place.
pub fn fmt(inputs: &[Input], check: bool, write: bool, color: bool) -> Outcome {
    let mut out = Outcome::default();
    for input in inputs {
        let (file, errors) = cilc_grammar::parse(&input.text);
        if !errors.is_empty() {
            let diags: Vec<Diagnostic> = errors.iter().map(crate::diag::from_syntax).collect();
            let report = Report {
                name: &input.name,
                source: &input.text,
                diagnostics: &diags,
            };
            out.stderr.push_str(&render::human(&[report], color));
            out.stderr.push_str(&format!(
                "error: `{}` has syntax errors; it was not formatted\n",
                input.name
            ));
            out.code = 1;
            continue;
        }
        let formatted = crate::fmt::format_file(&file, &input.text);
        if check {
            if formatted != input.text {
                out.stdout.push_str(&format!("{}\n", input.name));
                out.code = out.code.max(1);
            }
        } else if write && input.name != "-" {
            if formatted != input.text {
                if let Err(e) = std::fs::write(&input.name, &formatted) {
                    out.stderr
                        .push_str(&format!("error: cannot write `{}`: {e}\n", input.name));
                    out.code = 2;
                }
            }
        } else {
            out.stdout.push_str(&formatted);
        }
    }
    if check && out.code == 1 && !out.stdout.is_empty() {
        out.stderr
            .push_str("these files are not formatted; run `cilc fmt --write` on them\n");
    }
    out
}

/// The diagnostic printed when the compiler itself fails.
pub fn internal_error(message: &str) -> String {
    format!(
        "error[{}]: cilc crashed: {message}\n  = note: this is a bug in cilc, not in your policy\n  = help: please report it with the input that caused it\n",
        Code::Internal.slug()
    )
}
