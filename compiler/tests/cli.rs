//! The `cilc` binary: exit codes, output formats, colour, stdin.

use std::io::Write;
use std::process::{Command, Stdio};

fn cilc(args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cilc"));
    cmd.args(args)
        .env_remove("NO_COLOR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut pipe = child.stdin.take().unwrap();
    pipe.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(pipe);
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const CLEAN: &str = "policy p on host {\n  ingress {\n    allow from world tcp 22\n  }\n}\n";
const WARNING: &str =
    "policy p on host {\n  ingress {\n    allow from 10.1.2.3/24 tcp 22\n  }\n}\n";
const ERROR: &str = "policy p on host {\n  ingress {\n    allow from nowhere tcp 22\n  }\n}\n";

#[test]
fn exit_codes() {
    assert_eq!(cilc(&["check", "-"], Some(CLEAN)).0, 0);
    assert_eq!(cilc(&["check", "-"], Some(WARNING)).0, 0);
    assert_eq!(cilc(&["check", "--deny-warnings", "-"], Some(WARNING)).0, 1);
    assert_eq!(cilc(&["check", "-"], Some(ERROR)).0, 1);
    let (code, _, err) = cilc(&["check", "/nonexistent/policy.cpl"], None);
    assert_eq!(code, 2);
    assert!(
        err.contains("cannot read `/nonexistent/policy.cpl`"),
        "{err}"
    );
    assert_eq!(cilc(&["check", "--format", "xml", "-"], Some(CLEAN)).0, 2);
    assert_eq!(cilc(&["check"], None).0, 2);
}

#[test]
fn human_output_has_location_caret_and_no_colour_when_piped() {
    let (_, _, err) = cilc(&["check", "-"], Some(ERROR));
    assert!(
        err.contains("error[undefined-name]: undefined name `nowhere`"),
        "{err}"
    );
    assert!(err.contains("┌─ -:3:16"), "{err}");
    assert!(err.contains("^^^^^^^"), "{err}");
    assert!(
        !err.contains('\u{1b}'),
        "colour escape codes on a pipe: {err:?}"
    );
    let (_, _, err) = cilc(&["check", "--color", "always", "-"], Some(ERROR));
    assert!(err.contains('\u{1b}'), "no colour with --color always");
}

#[test]
fn machine_formats_go_to_stdout() {
    let (code, out, _) = cilc(&["check", "--format", "json", "-"], Some(ERROR));
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["diagnostics"][0]["code"], "undefined-name");
    let (_, out, _) = cilc(&["check", "--format", "sarif", "-"], Some(ERROR));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["runs"][0]["results"][0]["ruleId"], "undefined-name");
    let (_, out, _) = cilc(&["check", "--format", "github", "-"], Some(ERROR));
    assert!(out.starts_with("::error file=-,line=3,col=16,"), "{out}");
}

#[test]
fn fmt_prints_checks_and_refuses_broken_input() {
    let messy = "policy p on host {ingress {allow from world tcp 22}}";
    let (code, out, _) = cilc(&["fmt", "-"], Some(messy));
    assert_eq!(code, 0);
    assert_eq!(out, CLEAN);
    assert_eq!(cilc(&["fmt", "--check", "-"], Some(messy)).0, 1);
    assert_eq!(cilc(&["fmt", "--check", "-"], Some(CLEAN)).0, 0);
    let (code, out, err) = cilc(&["fmt", "-"], Some("policy p on {"));
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert!(err.contains("has syntax errors"), "{err}");
}

#[test]
fn fmt_write_rewrites_in_place() {
    let dir = temp_dir("fmt");
    let path = dir.join("p.cpl");
    std::fs::write(
        &path,
        "policy p on host {ingress {allow from world tcp 22}}",
    )
    .unwrap();
    assert_eq!(cilc(&["fmt", "--write", path.to_str().unwrap()], None).0, 0);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), CLEAN);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn generated_policies_check_without_errors() {
    let (code, text, _) = cilc(&["gen", "--rules", "2000", "--seed", "7"], None);
    assert_eq!(code, 0);
    let (code, _, err) = cilc(&["check", "-"], Some(&text));
    assert_eq!(code, 0, "{err}");
    assert!(err.contains(" 0 errors"), "{err}");
}

/// A scratch directory under the target's (`CARGO_TARGET_TMPDIR`), not
/// the system's: nextest runs each test in a process of its own, and each
/// would leave one behind in /tmp.
fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("cilc-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const LAYERED: &str = "select web = app=web\npolicy open on web {\n  ingress {\n    allow from world tcp 80\n    audit from world\n  }\n}\npolicy block on web {\n  ingress {\n    deny from 192.0.2.0/24\n  }\n}\n";

#[test]
fn explain_names_the_deciding_rule_and_the_losers() {
    let dir = temp_dir("explain");
    let p = dir.join("p.cpl");
    std::fs::write(&p, LAYERED).unwrap();
    let f = p.to_str().unwrap();
    let args = [
        "explain",
        f,
        "--endpoint",
        "app=web",
        "--from",
        "192.0.2.7",
        "--to",
        "10.0.0.5",
        "--tcp",
        "80",
    ];
    let (code, out, err) = cilc(&args, None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("verdict: DROP (matched-deny)"), "{out}");
    assert!(out.contains("decided by: block/ingress/1 ("), "{out}");
    assert!(out.contains("deny from 192.0.2.0/24"), "{out}");
    assert!(out.contains("allow, overridden: open/ingress/1"), "{out}");
    assert!(
        out.contains("audit (counted, never decides): open/ingress/2"),
        "{out}"
    );
    let (_, out, _) = cilc(&[&args[..], &["--format", "json"]].concat(), None);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["verdict"], "drop");
    assert_eq!(v["rule"]["name"], "block/ingress/1");
    assert_eq!(v["rule"]["line"], 10);
    let line = "ingress local app=web 198.51.100.1 -> 10.0.0.5 tcp 1 80";
    let (_, out, _) = cilc(&["explain", f, "--packet", line], None);
    assert!(out.contains("verdict: ALLOW (matched-allow)"), "{out}");
    let (code, _, err) = cilc(
        &["explain", f, "--packet", "ingress 1.2.3.4 5.6.7.8 tcp 1 2"],
        None,
    );
    assert_eq!(code, 2);
    assert!(err.contains("bad packet"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn import_and_trace_classbench() {
    let dir = temp_dir("classbench");
    let filters = dir.join("f");
    std::fs::write(
        &filters,
        "@10.0.0.0/8\t0.0.0.0/0\t0 : 65535\t80 : 80\t0x06/0xFF\t0x0000/0x0000\n@0.0.0.0/0\t0.0.0.0/0\t0 : 65535\t0 : 65535\t0x00/0x00\t0x0000/0x0000\n",
    )
    .unwrap();
    let (code, out, _) = cilc(
        &[
            "import",
            "classbench",
            filters.to_str().unwrap(),
            "--name",
            "edge",
        ],
        None,
    );
    assert_eq!(code, 0);
    assert!(out.contains("chain edge on host ingress {\n  accept from 10.0.0.0/8 tcp 80 as r1\n  accept as r2\n}"), "{out}");
    // 10.0.0.1 -> tcp 80 is rule 1; 11.0.0.1 is rule 2 (six columns: exact).
    let trace = dir.join("t");
    std::fs::write(&trace, "167772161 1 5 80 6 1\n184549377 1 5 80 6 2\n").unwrap();
    let (code, out, _) = cilc(
        &["trace", filters.to_str().unwrap(), trace.to_str().unwrap()],
        None,
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with("2 packets, 2 rules: 2 (100.00%) decided by the expected first-match rule"),
        "{out}"
    );
    std::fs::write(&trace, "167772161 1 5 80 6 2\n").unwrap();
    let (code, out, _) = cilc(
        &["trace", filters.to_str().unwrap(), trace.to_str().unwrap()],
        None,
    );
    assert_eq!(code, 1);
    assert!(out.contains("trace line 1: expected r2, got r1"), "{out}");
    std::fs::remove_dir_all(&dir).unwrap();
}

const SMALL_CHAIN: &str = "chain edge on host ingress {\n  accept from 10.0.0.0/8 tcp 22 as ssh\n  drop from 10.0.0.0/8 as lan\n}\n";

#[test]
fn graph_draws_ranges_as_written() {
    let dir = temp_dir("graph");
    let p = dir.join("p.cpl");
    std::fs::write(&p, SMALL_CHAIN).unwrap();
    let path = p.to_str().unwrap();
    let (code, dot, err) = cilc(&["graph", path, "--family", "4"], None);
    assert_eq!(code, 0, "{err}");
    assert!(dot.starts_with("digraph cilc {"), "{dot}");
    assert!(dot.contains("label=\"10.0.0.0/8\""), "{dot}");
    assert!(dot.contains("label=\"22\""), "{dot}");
    assert!(dot.contains("accept edge/ssh (line 2)"), "{dot}");
    assert!(dot.contains("drop edge/lan (line 3)"), "{dot}");
    assert!(!dot.contains("ipv6"), "{dot}");
    insta::with_settings!({snapshot_path => "../../tests/snapshots", prepend_module_to_snapshot => false}, {
        insta::assert_snapshot!("graph_small_chain", dot);
    });
    // SVG and PNG through Graphviz (scripts/setup.sh installs it).
    let (code, svg, err) = cilc(&["graph", path, "--format", "svg"], None);
    assert_eq!(
        code, 0,
        "Graphviz's dot is needed (scripts/setup.sh installs it): {err}"
    );
    assert!(svg.contains("<svg"), "{svg}");
    assert!(svg.contains("10.0.0.0/8"), "{svg}");
    let png = dir.join("p.png");
    let (code, _, err) = cilc(
        &[
            "graph",
            path,
            "--format",
            "png",
            "-o",
            png.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG"));
    let (code, _, err) = cilc(&["graph", path, "--format", "png"], None);
    assert_eq!(code, 1);
    assert!(err.contains("-o FILE"), "{err}");
    let (code, _, err) = cilc(&["graph", path, "--max-nodes", "2"], None);
    assert_eq!(code, 1);
    assert!(err.contains("more than 2 nodes"), "{err}");
    // A policy with errors shows its diagnostics.
    let (code, _, err) = cilc(&["graph", "-"], Some(ERROR));
    assert_eq!(code, 1);
    assert!(err.contains("undefined-name"), "{err}");
}

#[test]
fn diff_exit_codes_and_json() {
    let dir = temp_dir("diff");
    let (a, b) = (dir.join("a.cpl"), dir.join("b.cpl"));
    std::fs::write(&a, SMALL_CHAIN).unwrap();
    std::fs::write(&b, SMALL_CHAIN.replace("tcp 22", "tcp 2222")).unwrap();
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    let (code, out, err) = cilc(&["diff", a, a], None);
    assert_eq!((code, out.as_str()), (0, ""), "{err}");
    assert!(err.contains("equivalent"), "{err}");
    let (code, out, err) = cilc(&["diff", a, b], None);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("2 flow classes change verdict"), "{err}");
    assert!(
        out.contains("dport 22") && out.contains("dport 2222"),
        "{out}"
    );
    assert!(
        out.contains("allow by `edge/ssh` (line 2) -> drop by `edge/lan` (line 3)"),
        "{out}"
    );
    let (code, json, _) = cilc(&["diff", a, b, "--format", "json"], None);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["equivalent"], false);
    assert_eq!(v["classes"].as_array().unwrap().len(), 2);
    assert_eq!(v["classes"][0]["family"], "ipv4");
    let (code, _, err) = cilc(&["diff", a, "-"], Some(ERROR));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("undefined-name"), "{err}");
}

#[test]
fn compile_is_byte_identical_across_runs() {
    let dir = temp_dir("repro");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let generated = dir.join("gen.cpl");
    let (code, text, err) = cilc(&["gen", "--rules", "60", "--seed", "7"], None);
    assert_eq!(code, 0, "{err}");
    std::fs::write(&generated, text).unwrap();
    let sources = [root.join("examples/three-tier.cpl"), generated];
    for src in &sources {
        for strategy in ["tree", "linear"] {
            let out: Vec<Vec<u8>> = (0..2)
                .map(|i| {
                    let o = dir.join(format!("{strategy}{i}.o"));
                    let (code, _, err) = cilc(
                        &[
                            "compile",
                            "--strategy",
                            strategy,
                            src.to_str().unwrap(),
                            "-o",
                            o.to_str().unwrap(),
                        ],
                        None,
                    );
                    assert_eq!(code, 0, "{err}");
                    std::fs::read(o).unwrap()
                })
                .collect();
            assert!(out[0].len() > 1000);
            assert!(
                out[0] == out[1],
                "{} ({strategy}) compiled to different bytes",
                src.display()
            );
        }
    }
}

#[test]
fn compile_against_a_base_says_whether_the_change_is_data_only() {
    let d = temp_dir("base");
    let p = |n: &str| d.join(n).to_str().unwrap().to_string();
    let v1 = "select web = app=web\npolicy p on web {\n  ingress {\n    allow from 10.0.0.0/8 tcp 443\n  }\n}\n";
    let v2 = v1.replace("tcp 443", "tcp 8443");
    let v3 = format!("{v2}select db = app=db\npolicy q on db {{\n  ingress {{\n    allow from web tcp 5432\n  }}\n}}\n");
    for (name, src) in [("v1.cpl", v1), ("v2.cpl", &v2), ("v3.cpl", &v3)] {
        std::fs::write(d.join(name), src).unwrap();
    }
    let (code, _, err) = cilc(
        &[
            "compile",
            &p("v1.cpl"),
            "-o",
            &p("v1.o"),
            "--strategy",
            "table",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    // One rule changed, table to table: the same code.
    let (code, _, err) = cilc(
        &[
            "compile",
            &p("v2.cpl"),
            "-o",
            &p("v2.o"),
            "--strategy",
            "table",
            "--base",
            &p("v1.o"),
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("data only against") && err.contains("nodes"),
        "{err}"
    );
    // A new selector: identities change meaning.
    let (code, _, err) = cilc(
        &[
            "compile",
            &p("v3.cpl"),
            "-o",
            &p("v3.o"),
            "--strategy",
            "table",
            "--base",
            &p("v2.o"),
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("new programs against") && err.contains("selectors"),
        "{err}"
    );
    // A tree is its policy's code.
    let (code, _, err) = cilc(
        &[
            "compile",
            &p("v2.cpl"),
            "-o",
            &p("t.o"),
            "--strategy",
            "tree",
            "--base",
            &p("v1.o"),
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("the code differs"), "{err}");
    // A base that is not there fails before compiling.
    let (code, _, err) = cilc(
        &[
            "compile",
            &p("v2.cpl"),
            "-o",
            &p("x.o"),
            "--base",
            &p("missing.o"),
        ],
        None,
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("the base") && !d.join("x.o").exists(), "{err}");
}

#[test]
fn compile_with_a_cache_says_what_it_reused_and_writes_the_same_object() {
    let d = temp_dir("cache");
    let p = |n: &str| d.join(n).to_str().unwrap().to_string();
    let src = cilc::gen::policy(5, 600);
    std::fs::write(d.join("p.cpl"), &src).unwrap();
    let compile = |out: &str, cache: Option<&str>| {
        let mut args = vec![
            "compile".to_string(),
            p("p.cpl"),
            "-o".into(),
            p(out),
            "--strategy".into(),
            "table".into(),
        ];
        if let Some(c) = cache {
            args.extend(["--cache".to_string(), c.to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cilc(&args, None)
    };
    let (code, _, err) = compile("plain.o", None);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("cache:"), "{err}");
    let (code, _, err) = compile("cold.o", Some(&p("parts")));
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("cache: 0 of "), "{err}");
    let (code, _, err) = compile("warm.o", Some(&p("parts")));
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(" built\n") && err.contains(", 0 built"),
        "{err}"
    );
    let plain = std::fs::read(d.join("plain.o")).unwrap();
    assert!(plain == std::fs::read(d.join("cold.o")).unwrap());
    assert!(plain == std::fs::read(d.join("warm.o")).unwrap());
    // A cache that cannot be a directory: a clear error, nothing written.
    std::fs::write(d.join("file"), "").unwrap();
    let (code, _, err) = compile("none.o", Some(&p("file")));
    assert_eq!(code, 2);
    assert!(err.contains("cannot create the cache"), "{err}");
    assert!(!d.join("none.o").exists());
    std::fs::remove_dir_all(&d).unwrap();
}
