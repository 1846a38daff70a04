//! Renderers for diagnostics: human (codespan-reporting), JSON, SARIF 2.1.0
//! and GitHub workflow commands.
//!
//! Input: `Report`s (a source file and its diagnostics). Output: text.

use codespan_reporting::diagnostic as cs;
use codespan_reporting::files::{Files, SimpleFile};
use codespan_reporting::term::{self, termcolor};
use serde_json::{json, Value};

use super::{Code, Diagnostic, Severity};
use cilc_grammar::ast::Span;

/// One checked file and what was found in it.
pub struct Report<'a> {
    pub name: &'a str,
    pub source: &'a str,
    pub diagnostics: &'a [Diagnostic],
}

/// 1-based line and column (in characters) of a byte offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

struct Located {
    start: Position,
    end: Position,
}

fn locate(file: &SimpleFile<&str, &str>, span: Span) -> Located {
    let pos = |offset: usize| {
        let offset = offset.min(file.source().len());
        let line = file.line_index((), offset).unwrap_or(0);
        let column = file.column_number((), line, offset).unwrap_or(1);
        Position {
            line: line + 1,
            column,
        }
    };
    Located {
        start: pos(span.start as usize),
        end: pos(span.end as usize),
    }
}

/// Byte-offset → (line, column), for callers outside the renderers.
pub fn position(source: &str, offset: usize) -> Position {
    Positions::new(source).at(offset)
}

/// Positions of many offsets in one source: its line starts are found
/// once (`position` finds them on every call: quadratic over the rules of
/// a large policy).
pub struct Positions<'a> {
    file: SimpleFile<&'a str, &'a str>,
}

impl<'a> Positions<'a> {
    pub fn new(source: &'a str) -> Positions<'a> {
        Positions {
            file: SimpleFile::new("", source),
        }
    }

    pub fn at(&self, offset: usize) -> Position {
        locate(&self.file, Span::new(offset, offset)).start
    }
}

fn to_codespan(d: &Diagnostic) -> cs::Diagnostic<()> {
    let severity = match d.severity {
        Severity::Error => cs::Severity::Error,
        Severity::Warning => cs::Severity::Warning,
        Severity::Note => cs::Severity::Note,
    };
    let mut labels = vec![cs::Label::primary((), d.span.range()).with_message(d.label.clone())];
    labels.extend(
        d.related
            .iter()
            .map(|n| cs::Label::secondary((), n.span.range()).with_message(n.message.clone())),
    );
    let mut notes = d.notes.clone();
    if let Some(h) = &d.help {
        notes.push(format!("help: {h}"));
    }
    cs::Diagnostic::new(severity)
        .with_code(d.code.slug())
        .with_message(d.message.clone())
        .with_labels(labels)
        .with_notes(notes)
}

/// Human-readable text with source snippets and carets.
pub fn human(reports: &[Report<'_>], color: bool) -> String {
    let mut buffer = if color {
        termcolor::Buffer::ansi()
    } else {
        termcolor::Buffer::no_color()
    };
    let config = term::Config::default();
    for r in reports {
        let file = SimpleFile::new(r.name, r.source);
        for d in r.diagnostics {
            // Spans come from this very source, so emitting cannot fail on
            // them; an I/O error on an in-memory buffer cannot happen either.
            let _ = term::emit(&mut buffer, &config, &file, &to_codespan(d));
        }
    }
    String::from_utf8_lossy(buffer.as_slice()).into_owned()
}

fn severity_str(s: Severity) -> &'static str {
    match s {
        Severity::Error => "error",
        Severity::Warning => "warning",
        Severity::Note => "note",
    }
}

/// A JSON document: `{"diagnostics": [...], "errors": N, "warnings": N,
/// "notes": N}`.
pub fn json(reports: &[Report<'_>]) -> String {
    let mut out = Vec::new();
    for r in reports {
        let file = SimpleFile::new(r.name, r.source);
        for d in r.diagnostics {
            let at = locate(&file, d.span);
            let related: Vec<Value> = d
                .related
                .iter()
                .map(|n| {
                    let p = locate(&file, n.span);
                    json!({"line": p.start.line, "column": p.start.column, "message": n.message})
                })
                .collect();
            out.push(json!({
                "file": r.name,
                "severity": severity_str(d.severity),
                "code": d.code.slug(),
                "message": d.message,
                "line": at.start.line,
                "column": at.start.column,
                "end_line": at.end.line,
                "end_column": at.end.column,
                "label": d.label,
                "help": d.help,
                "notes": d.notes,
                "related": related,
            }));
        }
    }
    let (errors, warnings, notes) = counts(reports);
    let doc = json!({"diagnostics": out, "errors": errors, "warnings": warnings, "notes": notes});
    serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n"
}

fn counts(reports: &[Report<'_>]) -> (usize, usize, usize) {
    let all = reports.iter().flat_map(|r| r.diagnostics.iter());
    let count = |s: Severity| all.clone().filter(|d| d.severity == s).count();
    (
        count(Severity::Error),
        count(Severity::Warning),
        count(Severity::Note),
    )
}

fn full_message(d: &Diagnostic) -> String {
    let mut text = d.message.clone();
    for n in &d.notes {
        text.push_str("\nnote: ");
        text.push_str(n);
    }
    if let Some(h) = &d.help {
        text.push_str("\nhelp: ");
        text.push_str(h);
    }
    text
}

/// SARIF 2.1.0, for code-scanning dashboards. Every code is listed as a rule.
pub fn sarif(reports: &[Report<'_>]) -> String {
    let rules: Vec<Value> = Code::ALL
        .iter()
        .map(|c| json!({"id": c.slug(), "shortDescription": {"text": c.summary()}}))
        .collect();
    let mut results = Vec::new();
    for r in reports {
        let file = SimpleFile::new(r.name, r.source);
        let region = |span: Span| {
            let at = locate(&file, span);
            json!({
                "startLine": at.start.line, "startColumn": at.start.column,
                "endLine": at.end.line, "endColumn": at.end.column,
            })
        };
        for d in r.diagnostics {
            let rule_index = Code::ALL.iter().position(|c| *c == d.code).unwrap_or(0);
            let related: Vec<Value> = d
                .related
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    json!({
                        "id": i,
                        "message": {"text": n.message},
                        "physicalLocation": {"artifactLocation": {"uri": uri(r.name)}, "region": region(n.span)},
                    })
                })
                .collect();
            let mut result = json!({
                "ruleId": d.code.slug(),
                "ruleIndex": rule_index,
                "level": severity_str(d.severity),
                "message": {"text": full_message(d)},
                "locations": [{
                    "physicalLocation": {"artifactLocation": {"uri": uri(r.name)}, "region": region(d.span)},
                }],
            });
            if !related.is_empty() {
                result["relatedLocations"] = Value::Array(related);
            }
            results.push(result);
        }
    }
    let doc = json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "cilc",
                "version": env!("CARGO_PKG_VERSION"),
                "informationUri": "https://github.com/cilc/cilc",
                "rules": rules,
            }},
            "columnKind": "unicodeCodePoints",
            "results": results,
        }],
    });
    serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n"
}

/// A file name as a relative URI reference: every byte outside the
/// unreserved set and `/` is percent-encoded.
fn uri(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// GitHub Actions workflow commands (`::error file=...::message`), which
/// GitHub shows as annotations on the changed lines.
pub fn github(reports: &[Report<'_>]) -> String {
    let mut out = String::new();
    for r in reports {
        let file = SimpleFile::new(r.name, r.source);
        for d in r.diagnostics {
            let at = locate(&file, d.span);
            // GitHub calls a note a notice.
            let level = match d.severity {
                Severity::Note => "notice",
                s => severity_str(s),
            };
            out.push_str(&format!(
                "::{} file={},line={},col={},endLine={},endColumn={},title={}::{}\n",
                level,
                escape_property(r.name),
                at.start.line,
                at.start.column,
                at.end.line,
                at.end.column,
                escape_property(&format!("cilc {}", d.code.slug())),
                escape_data(&full_message(d)),
            ));
        }
    }
    out
}

fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

/// "2 errors, 1 warning" style summary.
pub fn summary(reports: &[Report<'_>]) -> String {
    let (errors, warnings, notes) = counts(reports);
    let plural = |n: usize, w: &str| {
        if n == 1 {
            format!("{n} {w}")
        } else {
            format!("{n} {w}s")
        }
    };
    let mut text = format!(
        "{}, {}",
        plural(errors, "error"),
        plural(warnings, "warning")
    );
    if notes > 0 {
        text.push_str(&format!(", {}", plural(notes, "note")));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_escapes_newlines_and_separators() {
        assert_eq!(escape_data("a%b\nc"), "a%25b%0Ac");
        assert_eq!(escape_property("x:y,z"), "x%3Ay%2Cz");
    }

    #[test]
    fn sarif_uris_are_percent_encoded() {
        assert_eq!(uri("policies/web.cpl"), "policies/web.cpl");
        assert_eq!(uri("a b,c:d.cpl"), "a%20b%2Cc%3Ad.cpl");
    }

    #[test]
    fn positions_are_one_based() {
        assert_eq!(position("ab\ncd", 3), Position { line: 2, column: 1 });
        assert_eq!(position("ab\ncd", 1), Position { line: 1, column: 2 });
    }
}
