//! The back end's output as text: the disassembly of the generated
//! classifier (`llvm-objdump-19 -d`) and `cilc inspect`, as snapshots. A
//! change in code generation shows up here, instruction by instruction.
//! (Whether the code is right is for tests/kernel.rs, in the kernel.)

use std::path::{Path, PathBuf};
use std::process::Command;

const CHAIN: &str = "chain edge on host ingress {\n  drop from 192.0.2.0/24 as spoofed\n  accept tcp 22, 443 as admin\n  accept udp 53 sport 1024-65535\n  drop\n}\n";

const SELECTORS: &str = "select web = app=web in namespace shop\nselect api = app=api in namespace shop\n\npolicy api on api {\n  ingress {\n    allow from web tcp 8080 as from-web\n    deny from 2001:db8::/32 as v6-block\n  }\n}\n";

/// A scratch directory under the target's (`CARGO_TARGET_TMPDIR`), not
/// the system's: nextest runs each test in a process of its own, and each
/// would leave one behind in /tmp.
fn dir(tag: &str) -> PathBuf {
    let d = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("cilc-backend-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn cilc(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_cilc"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cilc {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn compile(src: &str, strategy: &str, tag: &str) -> PathBuf {
    let d = dir(tag);
    let input = d.join("p.cpl");
    std::fs::write(&input, src).unwrap();
    let object = d.join(format!("{strategy}.o"));
    cilc(&[
        "compile",
        "--strategy",
        strategy,
        input.to_str().unwrap(),
        "-o",
        object.to_str().unwrap(),
    ]);
    object
}

/// The classifier's instructions (function `cilc_decide` in .text; the
/// rest of .text is stdlib-bpf's and the same for every policy).
fn disassembly(object: &Path) -> String {
    let out = Command::new("llvm-objdump-19")
        .args([
            "-d",
            "--no-show-raw-insn",
            "--section=.text",
            "--disassemble-symbols=cilc_decide",
        ])
        .arg(object)
        .output()
        .expect("llvm-objdump-19 (scripts/setup.sh installs llvm-19)");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines()
        .skip_while(|l| !l.contains("<cilc_decide>:"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn snapshot(name: &str, text: &str) {
    insta::with_settings!({snapshot_path => "../../tests/snapshots", prepend_module_to_snapshot => false}, {
        insta::assert_snapshot!(name, text);
    });
}

#[test]
fn disassembly_of_small_policies() {
    for (name, src) in [("chain", CHAIN), ("selectors", SELECTORS)] {
        for strategy in ["tree", "linear"] {
            let object = compile(src, strategy, &format!("{name}-{strategy}"));
            let text = disassembly(&object);
            assert!(text.contains("exit"), "{text}");
            snapshot(&format!("disassembly_{name}_{strategy}"), &text);
        }
    }
}

#[test]
fn parse_only_classifier_decides_nothing() {
    // The floor of `cilc bench`: no test of any field in the classifier.
    let object = compile(CHAIN, "parse-only", "floor");
    let text = disassembly(&object);
    assert!(!text.contains("0x1bb"), "port 443 is tested:\n{text}");
    let tree = disassembly(&compile(CHAIN, "tree", "floor-tree"));
    assert!(tree.contains("0x1bb"), "port 443 is not tested:\n{tree}");
}

#[test]
fn inspect_lists_manifest_sections_functions_and_rules() {
    let object = compile(SELECTORS, "tree", "inspect");
    let text = cilc(&["inspect", object.to_str().unwrap()]);
    let text = text.replace(object.to_str().unwrap(), "OBJECT");
    // Sizes depend on the compiler's build; the names and order do not.
    let sizes = regex::Regex::new(r"\d+ (bytes|instructions)").unwrap();
    let text = sizes.replace_all(&text, "N $1");
    let hash = regex::Regex::new(r"sha256 [0-9a-f]{64}").unwrap();
    let text = hash.replace_all(&text, "sha256 HASH");
    snapshot("inspect_selectors", &text);
}

/// `auto` (the default) keeps small policies as code and says why; the
/// table strategy's object carries its nodes and a classifier that is the
/// walker alone, the same for every policy.
#[test]
fn auto_picks_tree_for_small_policies_and_inspect_says_why() {
    let src = "select web = app=web\npolicy p on web {\n  ingress {\n    allow from 10.0.0.0/8 tcp 443\n  }\n}\n";
    let d = dir("auto");
    let input = d.join("p.cpl");
    std::fs::write(&input, src).unwrap();
    let object = d.join("auto.o");
    cilc(&[
        "compile",
        input.to_str().unwrap(),
        "-o",
        object.to_str().unwrap(),
    ]);
    let text = cilc(&["inspect", object.to_str().unwrap()]);
    assert!(text.contains("strategy: tree"), "{text}");
    assert!(
        text.contains("auto: ") && text.contains("within the 500000 budget"),
        "{text}"
    );

    let table = compile(src, "table", "auto");
    let text = cilc(&["inspect", table.to_str().unwrap()]);
    assert!(
        text.contains("strategy: table") && text.contains("nodes of 32 bytes"),
        "{text}"
    );
    // What the nodes are, and per hook its parts: the one policy on `web`
    // has an ingress part, entered only by web's bit.
    assert!(
        text.contains(" splits, ") && text.contains(" leaves "),
        "{text}"
    );
    assert!(
        text.contains("ingress IPv4: 1 diagram(s) in 1 part(s), 1 entered only by their subject's bit (1 subject(s))"),
        "{text}"
    );
    assert!(text.contains("egress IPv4: no diagram"), "{text}");
    assert!(!text.contains("auto: "), "forced, not chosen: {text}");
    let other = compile(
        "select db = app=db\npolicy q on db {\n  egress {\n    deny to 192.0.2.0/24 udp 53\n  }\n}\n",
        "table",
        "auto2",
    );
    assert_eq!(
        disassembly(&table),
        disassembly(&other),
        "the walker is the same code"
    );
    // And the manifests say so: the same code hash, which a node compares
    // to replace data only. Trees of two policies are two codes.
    let code = |o: &Path| {
        let text = cilc(&["inspect", o.to_str().unwrap()]);
        let line = text.lines().find(|l| l.starts_with("code:")).unwrap_or("");
        line.to_string()
    };
    assert!(code(&table).len() > 70, "{}", code(&table));
    assert_eq!(code(&table), code(&other));
    let tree_other = compile(
        "select db = app=db\npolicy q on db {\n  egress {\n    deny to 192.0.2.0/24 udp 53\n  }\n}\n",
        "tree",
        "auto3",
    );
    assert_ne!(code(&object), code(&tree_other));
    assert_ne!(code(&object), code(&table));
}
