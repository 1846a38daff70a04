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
    /// Run the lints from the decision diagrams (when the file has no error).
    pub lints: bool,
}

/// The front end's diagnostics, and when there is no error and `lints` is
/// set, the lints from the diagrams.
pub fn diagnose(src: &str, lints: bool) -> Vec<Diagnostic> {
    if !lints {
        return crate::check_source(src).2;
    }
    let (ir, mut diags) = match crate::compile_ir(src) {
        Ok(x) => x,
        Err(d) => return d,
    };
    let forest = crate::tree::build::build(&ir, &Default::default());
    // A rule after a catch-all is already reported as unreachable.
    let unreachable: Vec<_> = diags
        .iter()
        .filter(|d| d.code == crate::diag::Code::UnreachableRule)
        .map(|d| d.span)
        .collect();
    diags.extend(
        crate::lint::lint(&ir, &forest)
            .into_iter()
            .filter(|d| !unreachable.contains(&d.span)),
    );
    diags.sort_by_key(|d| (d.span.start, d.span.end));
    diags
}

/// `cilc check`: parse and resolve every input, render the diagnostics.
pub fn check(inputs: &[Input], opts: &CheckOptions) -> Outcome {
    let results: Vec<Vec<Diagnostic>> = inputs
        .iter()
        .map(|i| diagnose(&i.text, opts.lints))
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
    let failed =
        all().any(Diagnostic::is_error) || (opts.deny_warnings && all().any(|d| !d.is_note()));
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

/// `cilc import classbench FILE`: the filter set as a first-match chain.
pub fn import_classbench(input: &Input, name: &str) -> Outcome {
    let result = crate::classbench::parse_filters(&input.text)
        .and_then(|f| crate::classbench::to_cpl(&f, name, &input.name));
    match result {
        Ok(text) => Outcome {
            stdout: text,
            ..Outcome::default()
        },
        Err(e) => Outcome {
            stderr: format!("error: {}: {e}\n", input.name),
            code: 1,
            ..Outcome::default()
        },
    }
}

/// `cilc trace FILTERS TRACE [--truth FILE]`: run a ClassBench trace through
/// the reference evaluator and compare the deciding rule with the truth.
pub fn trace_classbench(filters: &Input, trace: &Input, truth: Option<&Input>) -> Outcome {
    let fail = |e: String| Outcome {
        stderr: format!("error: {e}\n"),
        code: 1,
        ..Outcome::default()
    };
    let cpl = match crate::classbench::parse_filters(&filters.text)
        .and_then(|f| crate::classbench::to_cpl(&f, "classbench", &filters.name))
    {
        Ok(c) => c,
        Err(e) => return fail(format!("{}: {e}", filters.name)),
    };
    let ir = match crate::compile_ir(&cpl) {
        Ok((ir, _)) => ir,
        Err(d) => {
            return fail(format!(
                "{}: the imported policy does not compile: {:?}",
                filters.name,
                d.first()
            ))
        }
    };
    let lines = match crate::classbench::parse_trace(&trace.text) {
        Ok(l) => l,
        Err(e) => return fail(format!("{}: {e}", trace.name)),
    };
    let truth = match truth
        .map(|t| crate::classbench::parse_truth(&t.text).map_err(|e| format!("{}: {e}", t.name)))
    {
        Some(Err(e)) => return fail(e),
        Some(Ok(t)) => Some(t),
        None => None,
    };
    // Traces of six columns carry the exact first match; seven-column
    // traces only an upper bound (see ../shared/bench/classbench).
    let six = trace
        .text
        .lines()
        .next()
        .is_some_and(|l| l.split_whitespace().count() == 6);
    let started = std::time::Instant::now();
    let report = match crate::classbench::run_trace(&ir, &lines, truth.as_deref(), six) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let elapsed = started.elapsed();
    let mut out = Outcome::default();
    let what = if report.exact {
        "the expected first-match rule"
    } else {
        "a rule within the trace's bound"
    };
    out.stdout.push_str(&format!(
        "{} packets, {} rules: {} ({:.2}%) decided by {what}; {:.0} ns/packet in the reference evaluator\n",
        report.packets,
        ir.rules.len(),
        report.agree,
        100.0 * report.agree as f64 / report.packets.max(1) as f64,
        elapsed.as_nanos() as f64 / report.packets.max(1) as f64,
    ));
    for (i, want, got) in report.disagree.iter().take(10) {
        let got = got
            .map(|g| format!("r{g}"))
            .unwrap_or_else(|| "no rule".into());
        out.stdout.push_str(&format!(
            "  trace line {}: expected r{want}, got {got}\n",
            i + 1
        ));
    }
    out.code = i32::from(!report.disagree.is_empty());
    out
}

/// `cilc explain`: what happens to a packet, and which rules say so.
pub fn explain(input: &Input, packet_line: &str, format: Format, color: bool) -> Outcome {
    let mut out = Outcome::default();
    let (ir, _) = match crate::compile_ir(&input.text) {
        Ok(x) => x,
        Err(diags) => {
            let report = Report {
                name: &input.name,
                source: &input.text,
                diagnostics: &diags,
            };
            out.stderr = render::human(&[report], color);
            out.stderr.push_str(&format!(
                "error: `{}` has errors; nothing to explain\n",
                input.name
            ));
            out.code = 1;
            return out;
        }
    };
    let pkt = match crate::eval::packet::parse_packet(packet_line) {
        Ok(p) => p,
        Err(e) => {
            out.stderr = format!("error: bad packet `{packet_line}`: {e}\n");
            out.code = 2;
            return out;
        }
    };
    let d = crate::eval::evaluate(&ir, &pkt);
    let rule_json = |id: u32| {
        let r = &ir.rules[id as usize];
        let p = render::position(&input.text, r.span.start as usize);
        serde_json::json!({
            "id": id, "name": r.name, "action": r.action.keyword(), "line": p.line, "column": p.column,
            "source": &input.text[r.span.range()],
        })
    };
    if matches!(format, Format::Json) {
        let doc = serde_json::json!({
            "packet": pkt.to_string(),
            "verdict": d.verdict,
            "reason": d.reason.as_str(),
            "rule": d.rule.map(rule_json),
            "also_matched": d.matched.iter().filter(|id| Some(**id) != d.rule).map(|id| rule_json(*id)).collect::<Vec<_>>(),
            "l7_mismatch": d.l7_mismatch.iter().map(|id| rule_json(*id)).collect::<Vec<_>>(),
            "snat": d.snat,
        });
        out.stdout = serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n";
        return out;
    }
    let verdict = match d.verdict {
        crate::eval::Verdict::Allow => "ALLOW",
        crate::eval::Verdict::Drop => "DROP",
    };
    let why = match d.reason {
        crate::eval::Reason::MatchedAllow => "an allow rule matches and no deny does",
        crate::eval::Reason::MatchedDeny => "a deny rule matches (deny beats allow)",
        crate::eval::Reason::DefaultDeny => {
            "policies select this side in this direction and no allow rule matches"
        }
        crate::eval::Reason::NoPolicy => "no policy selects this side in this direction",
        crate::eval::Reason::ChainAccept => {
            "a chain accepts it and no policy selects this side in this direction"
        }
        crate::eval::Reason::ChainDrop => "a chain rule drops it (first match)",
        crate::eval::Reason::Malformed => "the packet cannot be parsed",
        crate::eval::Reason::LaterFragment => {
            "a later fragment follows its first fragment's verdict"
        }
    };
    let snippet = |id: u32| {
        let r = &ir.rules[id as usize];
        let p = render::position(&input.text, r.span.start as usize);
        let text = input.text[r.span.range()]
            .lines()
            .next()
            .unwrap_or("")
            .trim();
        format!(
            "{} ({}:{}:{})\n      {text}\n",
            r.name, input.name, p.line, p.column
        )
    };
    out.stdout.push_str(&format!(
        "packet:  {pkt}\nverdict: {verdict} ({}): {why}\n",
        d.reason.as_str()
    ));
    if let Some(id) = d.rule {
        out.stdout.push_str(&format!("decided by: {}", snippet(id)));
    }
    for id in d.matched.iter().filter(|id| Some(**id) != d.rule) {
        let r = &ir.rules[*id as usize];
        let role = match (r.action, d.verdict) {
            (crate::resolve::Action::Audit, _) => "audit (counted, never decides)",
            (crate::resolve::Action::Allow, crate::eval::Verdict::Drop) => "allow, overridden",
            (crate::resolve::Action::Accept, _) => "chain accept, then policies decided",
            _ => "also matched",
        };
        out.stdout.push_str(&format!("{role}: {}", snippet(*id)));
    }
    for id in &d.l7_mismatch {
        out.stdout.push_str(&format!(
            "L4 matched but the request is not in its L7 block: {}",
            snippet(*id)
        ));
    }
    if let Some(s) = &d.snat {
        let to =
            s.to.map(|a| a.to_string())
                .unwrap_or_else(|| "the host address of the egress interface".into());
        out.stdout.push_str(&format!("source NAT: to {to}\n"));
    }
    out
}

/// `cilc tree`: build the decision diagrams and print them or their stats.
pub fn tree(input: &Input, stats: bool, classbench: bool, leaf_size: usize) -> Outcome {
    let fail = |e: String| Outcome {
        stderr: format!("error: {e}\n"),
        code: 1,
        ..Outcome::default()
    };
    let text = if classbench {
        match crate::classbench::parse_filters(&input.text)
            .and_then(|f| crate::classbench::to_cpl(&f, "classbench", &input.name))
        {
            Ok(t) => t,
            Err(e) => return fail(format!("{}: {e}", input.name)),
        }
    } else {
        input.text.clone()
    };
    let started = std::time::Instant::now();
    let ir = match crate::compile_ir(&text) {
        Ok((ir, _)) => ir,
        Err(d) => {
            return fail(format!(
                "{} has errors: {:?}",
                input.name,
                d.first().map(|d| &d.message)
            ))
        }
    };
    let front = started.elapsed();
    let opts = crate::tree::build::Options {
        leaf_size,
        ..Default::default()
    };
    let started = std::time::Instant::now();
    let forest = crate::tree::build::build(&ir, &opts);
    let built = started.elapsed();
    if !stats {
        return Outcome {
            stdout: crate::tree::dump::forest(&ir, &forest),
            ..Outcome::default()
        };
    }
    let s = crate::tree::dump::forest_stats(&forest);
    Outcome {
        stdout: format!(
            "rules {} terms {} nodes {} leaves {} max-depth {} mean-depth {:.1} worst-comparisons {} worst-part {} replication {:.2} front-end {:.3}s build {:.3}s\n",
            ir.rules.len(),
            s.terms,
            s.nodes,
            s.leaves,
            s.max_depth,
            s.mean_depth,
            s.worst_comparisons,
            s.worst_part,
            s.replication,
            front.as_secs_f64(),
            built.as_secs_f64()
        ),
        ..Outcome::default()
    }
}

/// An input refused: its diagnostics, exit code 1.
fn refused(input: &Input, diags: &[Diagnostic], color: bool) -> Outcome {
    let report = Report {
        name: &input.name,
        source: &input.text,
        diagnostics: diags,
    };
    Outcome {
        stderr: render::human(&[report], color),
        code: 1,
        ..Outcome::default()
    }
}

/// The validated IR of an input, or an outcome that shows its diagnostics.
fn validated(input: &Input, color: bool) -> Result<crate::ir::Validated, Outcome> {
    crate::compile_ir(&input.text)
        .map(|(ir, _)| ir)
        .map_err(|diags| refused(input, &diags, color))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GraphFormat {
    Dot,
    Svg,
    Png,
}

pub struct GraphOptions {
    pub format: GraphFormat,
    pub output: Option<std::path::PathBuf>,
    pub draw: crate::tree::graph::Options,
    pub color: bool,
}

/// `cilc graph`: the diagrams as Graphviz DOT, or rendered by Graphviz's
/// `dot` into SVG or PNG.
pub fn graph(input: &Input, opts: &GraphOptions) -> Outcome {
    let fail = |e: String| Outcome {
        stderr: format!("error: {e}\n"),
        code: 1,
        ..Outcome::default()
    };
    let ir = match validated(input, opts.color) {
        Ok(ir) => ir,
        Err(o) => return o,
    };
    // Without linear leaves, every test shows in the drawing.
    let build = crate::tree::build::Options {
        leaf_size: 1,
        ..Default::default()
    };
    let forest = crate::tree::build::build(&ir, &build);
    let text = match crate::tree::graph::dot(&ir, &input.text, &forest, &opts.draw) {
        Ok(t) => t,
        Err(e) => return fail(e),
    };
    let bytes = match opts.format {
        GraphFormat::Dot => text.into_bytes(),
        GraphFormat::Svg | GraphFormat::Png => {
            if opts.format == GraphFormat::Png && opts.output.is_none() {
                return fail("PNG output needs `-o FILE`".into());
            }
            let kind = if opts.format == GraphFormat::Svg {
                "-Tsvg"
            } else {
                "-Tpng"
            };
            match run_dot(kind, text.as_bytes()) {
                Ok(b) => b,
                Err(e) => return fail(e),
            }
        }
    };
    match &opts.output {
        Some(path) => match std::fs::write(path, &bytes) {
            Ok(()) => Outcome::default(),
            Err(e) => fail(format!("cannot write `{}`: {e}", path.display())),
        },
        None => Outcome {
            stdout: String::from_utf8_lossy(&bytes).into_owned(),
            ..Outcome::default()
        },
    }
}

fn run_dot(kind: &str, input: &[u8]) -> Result<Vec<u8>, String> {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let mut child = Command::new("dot")
        .arg(kind)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            format!("cannot run Graphviz's `dot` ({e}); install graphviz, or use `--format dot`")
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input)
            .map_err(|e| format!("cannot write to `dot`: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("`dot` failed: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`dot` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(out.stdout)
}

/// `cilc diff`: the flow classes whose verdict changes from `old` to `new`.
/// Exit code 0 when no packet changes verdict, 1 when some do, 2 when an
/// input has errors.
pub fn diff(old: &Input, new: &Input, json: bool, color: bool) -> Outcome {
    let (a, b) = match (validated(old, color), validated(new, color)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(x), Err(y)) => {
            return Outcome {
                stderr: x.stderr + &y.stderr,
                code: 2,
                ..Outcome::default()
            }
        }
        (Err(x), _) | (_, Err(x)) => return Outcome { code: 2, ..x },
    };
    let opts = crate::tree::build::Options::default();
    let (fa, fb) = (
        crate::tree::build::build(&a, &opts),
        crate::tree::build::build(&b, &opts),
    );
    let d = crate::diff::diff((&a, &old.text, &fa), (&b, &new.text, &fb));
    let code = i32::from(!d.equivalent());
    if json {
        let doc = serde_json::json!({
            "equivalent": d.equivalent(),
            "classes": d.classes,
            "incomplete": d.incomplete,
        });
        return Outcome {
            stdout: serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n",
            code,
            ..Outcome::default()
        };
    }
    let summary = if d.equivalent() {
        format!(
            "{} and {} are equivalent: no packet changes verdict\n",
            old.name, new.name
        )
    } else {
        let n = d.classes.len();
        format!(
            "{n} flow class{} change{} verdict from {} to {}\n",
            if n == 1 { "" } else { "es" },
            if n == 1 { "s" } else { "" },
            old.name,
            new.name
        )
    };
    Outcome {
        stdout: crate::diff::text(&d),
        stderr: summary,
        code,
    }
}

/// `cilc compile`: the policy as a BPF object at `output`; with `base`
/// (the artifact it will replace), whether the change is data only.
pub fn compile(
    input: &Input,
    output: &std::path::Path,
    strategy: crate::codegen::Strategy,
    base: Option<&std::path::Path>,
    cache: Option<&std::path::Path>,
    color: bool,
) -> Outcome {
    let ir = match validated(input, color) {
        Ok(ir) => ir,
        Err(o) => return o,
    };
    // The base is read first: a bad one fails before any work.
    let base = match base.map(|b| {
        std::fs::read(b)
            .map_err(|e| format!("cannot read `{}`: {e}", b.display()))
            .and_then(|bytes| runtime_loader::read_manifest(&bytes).map_err(|e| e.to_string()))
            .map(|m| (b, m))
    }) {
        Some(Err(e)) => {
            return Outcome {
                stderr: format!("error: the base: {e}\n"),
                code: 2,
                ..Outcome::default()
            }
        }
        Some(Ok(b)) => Some(b),
        None => None,
    };
    let cache = match cache.map(crate::tree::cache::Cache::open) {
        Some(Err(e)) => {
            return Outcome {
                stderr: format!("error: {e}\n"),
                code: 2,
                ..Outcome::default()
            }
        }
        Some(Ok(c)) => Some(std::sync::Arc::new(c)),
        None => None,
    };
    let opts = crate::codegen::Options {
        strategy,
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        cache: cache.clone(),
    };
    match crate::codegen::compile(&ir, &input.text, &opts) {
        Ok(out) => match std::fs::write(output, &out.object) {
            Ok(()) => Outcome {
                stderr: format!(
                    "compiled {} ({} rules, {} strategy) to {} ({} bytes)\n{}{}",
                    input.name,
                    out.manifest.rules.len(),
                    out.manifest.strategy,
                    output.display(),
                    out.object.len(),
                    cache.map(|c| cache_line(&c.stats())).unwrap_or_default(),
                    base.map(|(path, m)| against_base(&out.manifest, path, &m))
                        .unwrap_or_default()
                ),
                ..Outcome::default()
            },
            Err(e) => Outcome {
                stderr: format!("error: cannot write `{}`: {e}\n", output.display()),
                code: 2,
                ..Outcome::default()
            },
        },
        Err(diags) => refused(input, &diags, color),
    }
}

/// What the part cache gave a compile.
fn cache_line(s: &crate::tree::cache::Stats) -> String {
    let mut line = format!(
        "cache: {} of {} diagram parts reused, {} built\n",
        s.reused,
        s.reused + s.built,
        s.built
    );
    if let Some(e) = &s.unwritten {
        line += &format!(
            "warning: the cache could not store every part ({e}): later compiles rebuild them\n"
        );
    }
    line
}

/// What replacing the artifact at `path` by this one will do on a node.
fn against_base(
    new: &runtime_loader::manifest::Manifest,
    path: &std::path::Path,
    old: &runtime_loader::manifest::Manifest,
) -> String {
    match new.data_only_from(old) {
        Ok(()) => format!(
            "data only against {}: the same code; a node's `replace` swaps the table{} under the running programs (if it fits the installed room)\n",
            path.display(),
            new.table_nodes
                .map(|n| format!(" ({n} nodes)"))
                .unwrap_or_default()
        ),
        Err(why) => format!(
            "new programs against {}: {why}; a node's `replace` loads and verifies them\n",
            path.display()
        ),
    }
}

/// What `cilc run` judges, besides `--packet` lines.
#[derive(Default)]
pub struct RunInput<'a> {
    /// A ClassBench trace and, optionally, its truth file (checked).
    pub trace: Option<(&'a str, Option<&'a str>)>,
    /// A capture (pcap or pcapng, Ethernet frames), judged frame by frame.
    pub pcap: Option<&'a [u8]>,
    /// `ADDRESS=IDENTITY` for the capture's addresses (others are world).
    pub identities: &'a [String],
    /// The capture's frames leave the endpoint (TC egress program).
    pub egress: bool,
}

/// The Ethernet frames of a pcap or pcapng capture.
pub fn read_capture(bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    use pcap_file::DataLink;
    let bad = |e: pcap_file::PcapError| format!("cannot read the capture: {e}");
    let mut frames = Vec::new();
    if bytes.starts_with(&[0x0a, 0x0d, 0x0d, 0x0a]) {
        let mut r = pcap_file::pcapng::PcapNgReader::new(bytes).map_err(bad)?;
        while let Some(block) = r.next_block() {
            let block = block.map_err(bad)?.into_owned();
            match block {
                pcap_file::pcapng::Block::EnhancedPacket(p) => {
                    let link = r
                        .interfaces()
                        .get(p.interface_id as usize)
                        .map(|i| i.linktype);
                    if link != Some(DataLink::ETHERNET) {
                        return Err(format!(
                            "frame {} is not Ethernet ({link:?}); capture on an Ethernet or veth interface",
                            frames.len() + 1
                        ));
                    }
                    frames.push(p.data.into_owned());
                }
                pcap_file::pcapng::Block::SimplePacket(p) => frames.push(p.data.into_owned()),
                _ => {}
            }
        }
    } else {
        let mut r = pcap_file::pcap::PcapReader::new(bytes).map_err(bad)?;
        let link = r.header().datalink;
        if link != DataLink::ETHERNET {
            return Err(format!(
                "the capture's link type is {link:?}, not Ethernet; capture on an Ethernet or veth interface (not `any`)"
            ));
        }
        while let Some(p) = r.next_packet() {
            frames.push(p.map_err(bad)?.data.into_owned());
        }
    }
    Ok(frames)
}

/// `cilc run`: load an object and judge packets with it in the kernel
/// (BPF_PROG_TEST_RUN). Packets are lines in the `explain --packet` form,
/// a ClassBench trace (with its truth file, checked), or a capture.
pub fn run(
    object: &std::path::Path,
    packets: &[String],
    input: &RunInput<'_>,
    tc: bool,
) -> Outcome {
    let trace = input.trace;
    use std::fmt::Write as _;
    let fail = |e: String, code: i32| Outcome {
        stderr: format!("error: {e}\n"),
        code,
        ..Outcome::default()
    };
    let art = match runtime_loader::Artifact::read(object) {
        Ok(a) => a,
        Err(e) => return fail(e.to_string(), 2),
    };
    let loaded = match runtime_loader::Loaded::load(&art) {
        Ok(l) => l,
        Err(e) => return fail(e.to_string(), 1),
    };
    let mut runner = crate::kernel::Runner::new(loaded);
    runner.local_wins = trace.is_some();
    let mut list: Vec<(crate::eval::Packet, Option<usize>)> = Vec::new();
    for line in packets {
        match crate::eval::packet::parse_packet(line) {
            Ok(p) => list.push((p, None)),
            Err(e) => return fail(format!("packet `{line}`: {e}"), 2),
        }
    }
    if let Some((trace, truth)) = trace {
        let lines = match crate::classbench::parse_trace(trace) {
            Ok(l) => l,
            Err(e) => return fail(e, 2),
        };
        let truth = match truth.map(crate::classbench::parse_truth).transpose() {
            Ok(t) => t,
            Err(e) => return fail(e, 2),
        };
        for (i, t) in lines.iter().enumerate() {
            let want = truth.as_ref().map_or(t.last, |x| x[i] + 1);
            list.push((crate::classbench::packet(t), Some(want)));
        }
    }
    let mut out = Outcome::default();
    let (mut checked, mut wrong) = (0, 0);
    for (p, want) in &list {
        let j = match runner.judge(p, tc, 1) {
            Ok(j) => j,
            Err(e) => return fail(format!("{p}: {e}"), 1),
        };
        let rule = j.rule.map(|r| &runner.obj.manifest.rules[r as usize]);
        match want {
            None => {
                let _ = writeln!(
                    out.stdout,
                    "{p}\n  {} ({}){}",
                    format!("{:?}", j.verdict).to_uppercase(),
                    j.reason.as_str(),
                    rule.map(|r| format!(" by {} (line {})", r.name, r.line))
                        .unwrap_or_default()
                );
            }
            Some(w) => {
                checked += 1;
                let got = rule.and_then(|r| crate::classbench::filter_line(&r.name));
                if got != Some(*w) {
                    wrong += 1;
                    let _ = writeln!(
                        out.stdout,
                        "line {}: expected rule {w}, the kernel says {got:?}",
                        checked
                    );
                }
            }
        }
    }
    if checked > 0 {
        let _ = writeln!(
            out.stderr,
            "{checked} trace packets judged in the kernel: {} to the expected first-match rule, {wrong} not",
            checked - wrong
        );
        out.code = i32::from(wrong > 0);
    }
    if let Some(bytes) = input.pcap {
        if let Err(e) = run_capture(&mut runner, bytes, input, tc, &mut out.stdout) {
            return fail(e, 2);
        }
    }
    out
}

/// The frames of a capture, judged one by one with the given identities.
fn run_capture(
    runner: &mut crate::kernel::Runner,
    bytes: &[u8],
    input: &RunInput<'_>,
    tc: bool,
    out: &mut String,
) -> Result<(), String> {
    use std::fmt::Write as _;
    let frames = read_capture(bytes)?;
    let selectors = crate::kernel::selectors(&runner.obj.manifest);
    for spec in input.identities {
        let (addr, id) = spec.split_once('=').ok_or_else(|| {
            format!("identity `{spec}`: expected ADDRESS=IDENTITY, e.g. 10.0.0.5=app=web@shop")
        })?;
        let addr: std::net::IpAddr = addr
            .trim()
            .parse()
            .map_err(|e| format!("identity `{spec}`: {e}"))?;
        let id = crate::eval::packet::parse_identity(id.trim())
            .map_err(|e| format!("identity `{spec}`: {e}"))?;
        let bits = crate::kernel::bits(&runner.obj.manifest, &selectors, &id);
        runner
            .obj
            .set_identity(addr, &bits)
            .map_err(|e| e.to_string())?;
    }
    let direction = if input.egress {
        crate::resolve::Direction::Egress
    } else {
        crate::resolve::Direction::Ingress
    };
    let program = crate::kernel::program(direction, tc);
    for (i, frame) in frames.iter().enumerate() {
        let r = runner
            .obj
            .run(program, frame, 1)
            .map_err(|e| e.to_string())?;
        let rule = r.rule.map(|id| &runner.obj.manifest.rules[id as usize]);
        let _ = writeln!(
            out,
            "frame {} ({} bytes, {}): {} ({}){}",
            i + 1,
            frame.len(),
            direction.keyword(),
            if r.reason.passes() { "ALLOW" } else { "DROP" },
            r.reason.as_str(),
            rule.map(|r| format!(" by {} (line {})", r.name, r.line))
                .unwrap_or_default()
        );
    }
    Ok(())
}

pub struct BenchOptions {
    pub strategies: Vec<crate::codegen::Strategy>,
    pub repeat: u32,
    pub sample: usize,
    pub tc: bool,
    pub conntrack: bool,
    pub json: bool,
}

/// `cilc bench`: compile, load and time the policy with each strategy
/// (see `bench`). Exit 1 when any verdict differs from the evaluator's or
/// a strategy does not load (the others are still measured).
pub fn bench(
    input: &Input,
    lines: &[String],
    trace: Option<&str>,
    opts: &BenchOptions,
    color: bool,
) -> Outcome {
    let fail = |e: String, code: i32| Outcome {
        stderr: format!("error: {e}\n"),
        code,
        ..Outcome::default()
    };
    let ir = match validated(input, color) {
        Ok(ir) => ir,
        Err(o) => return o,
    };
    let mut packets = Vec::new();
    for line in lines {
        match crate::eval::packet::parse_packet(line) {
            Ok(p) => packets.push(p),
            Err(e) => return fail(format!("packet `{line}`: {e}"), 2),
        }
    }
    if let Some(trace) = trace {
        match crate::classbench::parse_trace(trace) {
            Ok(t) => packets.extend(t.iter().map(crate::classbench::packet)),
            Err(e) => return fail(e, 2),
        }
    }
    if packets.is_empty() {
        return fail(
            "no packets to time\n  = help: give --packet, --packets FILE or --trace".into(),
            2,
        );
    }
    let packets = crate::bench::sample(&packets, opts.sample);
    let bopts = crate::bench::Options {
        strategies: opts.strategies.clone(),
        repeat: opts.repeat.max(1),
        tc: opts.tc,
        local_wins: trace.is_some(),
        conntrack: opts.conntrack,
    };
    match crate::bench::run(&ir, &input.text, &packets, &bopts) {
        Ok(r) => Outcome {
            stdout: if opts.json {
                serde_json::to_string_pretty(&r).unwrap_or_default() + "\n"
            } else {
                r.table()
            },
            code: i32::from(r.wrong() > 0 || r.failed() > 0),
            ..Outcome::default()
        },
        Err(e) => fail(e, 1),
    }
}

/// `cilc inspect`: what an object holds (manifest, sections, programs with
/// their instruction counts), read without loading it.
pub fn inspect(object: &std::path::Path) -> Outcome {
    use object::{Object as _, ObjectSection as _, ObjectSymbol as _};
    use std::fmt::Write as _;
    let fail = |e: String| Outcome {
        stderr: format!("error: {e}\n"),
        code: 2,
        ..Outcome::default()
    };
    let bytes = match std::fs::read(object) {
        Ok(b) => b,
        Err(e) => return fail(format!("cannot read `{}`: {e}", object.display())),
    };
    let m = match runtime_loader::read_manifest(&bytes) {
        Ok(m) => m,
        Err(e) => return fail(e.to_string()),
    };
    let file = match object::File::parse(&*bytes) {
        Ok(f) => f,
        Err(e) => return fail(e.to_string()),
    };
    let mut o = String::new();
    let _ = writeln!(o, "object:   {} ({} bytes)", object.display(), bytes.len());
    let _ = writeln!(o, "compiler: {} (layout {})", m.compiler, m.layout);
    let _ = writeln!(o, "source:   sha256 {}", m.source_sha256);
    if let Some(code) = &m.code_sha256 {
        let _ = writeln!(o, "code:     sha256 {code}");
    }
    let _ = writeln!(o, "strategy: {}", m.strategy);
    if let Some(why) = &m.choice {
        let _ = writeln!(o, "          {why}");
    }
    if let Some(n) = m.table_nodes {
        let _ = writeln!(o, "table:    {n} nodes of 32 bytes (map cilc_table)");
        let section = file
            .section_by_name(runtime_loader::manifest::TABLE_SECTION)
            .and_then(|s| s.data().ok());
        if let Some(data) = section {
            let n = (n as usize * crate::codegen::table::NODE).min(data.len());
            for line in crate::codegen::table::describe(&data[..n]).lines() {
                let _ = writeln!(o, "          {line}");
            }
        }
    }
    let _ = writeln!(o, "programs:");
    for p in &m.programs {
        let _ = writeln!(
            o,
            "  {:<16} {:<11} judges {}",
            p.name, p.attach, p.direction
        );
    }
    let _ = writeln!(o, "sections:");
    for s in file.sections() {
        let name = s.name().unwrap_or("?");
        if name.is_empty() || name.starts_with(".debug") || name.starts_with(".rel") {
            continue;
        }
        let insns = if s.kind() == object::SectionKind::Text {
            format!("  ({} instructions)", s.size() / 8)
        } else {
            String::new()
        };
        let _ = writeln!(o, "  {:<16} {:>8} bytes{insns}", name, s.size());
    }
    // Each entry calls the classifier (`cilc_decide`, in .text): a program
    // as loaded is its entry plus that function.
    let _ = writeln!(o, "functions:");
    let mut funcs: Vec<(String, String, u64)> = file
        .symbols()
        .filter(|y| y.kind() == object::SymbolKind::Text && y.size() > 0)
        .map(|y| {
            let section = y
                .section_index()
                .and_then(|i| file.section_by_index(i).ok())
                .and_then(|s| s.name().ok().map(str::to_string))
                .unwrap_or_default();
            (y.name().unwrap_or("?").to_string(), section, y.size() / 8)
        })
        .collect();
    funcs.sort();
    for (name, section, insns) in funcs {
        let _ = writeln!(o, "  {name:<16} {section:<11} {insns:>8} instructions");
    }
    let _ = writeln!(o, "maps (kept by a node: state across replacements, artifact while installed, private never):");
    for map in &m.maps {
        let _ = writeln!(
            o,
            "  {:<20} {:<9} {}",
            map.name,
            map.keep.as_str(),
            map.purpose
        );
    }
    let _ = writeln!(o, "predicates (identity bits):");
    for p in &m.predicates {
        let _ = writeln!(o, "  {:>3}  {}", p.bit, p.text);
    }
    if !m.named_ports.is_empty() {
        let _ = writeln!(o, "named ports: {}", m.named_ports.join(", "));
    }
    let _ = writeln!(o, "rules ({}):", m.rules.len());
    for r in &m.rules {
        let _ = writeln!(
            o,
            "  {:>5}  {:<32} line {:<5} {}",
            r.id,
            r.name,
            r.line,
            r.text.lines().next().unwrap_or("")
        );
    }
    Outcome {
        stdout: o,
        ..Outcome::default()
    }
}
