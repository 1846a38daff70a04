//! `cilc-node`, the node binary: it carries no LLVM, lists the verbs, and
//! its errors say what is wrong and what to do (these need no root).

use std::process::Command;

const VERBS: [&str; 11] = [
    "load",
    "attach",
    "detach",
    "replace",
    "status",
    "stats",
    "conntrack",
    "gc",
    "unload",
    "endpoint",
    "host",
];

fn node(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cilc-node"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_node_binary_does_not_link_llvm() {
    let out = Command::new("ldd")
        .arg(env!("CARGO_BIN_EXE_cilc-node"))
        .output()
        .expect("ldd");
    let libs = String::from_utf8_lossy(&out.stdout);
    assert!(libs.contains("libc.so"), "ldd lists the libraries: {libs}");
    assert!(!libs.to_lowercase().contains("llvm"), "{libs}");
}

#[test]
fn verbs_are_listed() {
    let (code, out, _) = node(&["--help"]);
    assert_eq!(code, 0);
    for verb in VERBS {
        assert!(
            out.contains(&format!("  {verb} ")),
            "{verb} missing from:\n{out}"
        );
    }
}

#[test]
fn every_verb_has_help() {
    // clap checks a command's arguments when it is first parsed: this
    // reaches every (sub)command.
    for verb in VERBS {
        let (code, out, err) = node(&[verb, "--help"]);
        assert_eq!(code, 0, "{verb}: {err}");
        assert!(out.contains("Usage:"), "{verb}: {out}");
    }
    for verb in ["add", "update", "remove", "list", "apply"] {
        let (code, out, err) = node(&["endpoint", verb, "--help"]);
        assert_eq!(code, 0, "endpoint {verb}: {err}");
        assert!(out.contains("Usage:"), "endpoint {verb}: {out}");
    }
}

#[test]
fn errors_say_what_to_do() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("cilc-node-cli-{}", std::process::id()));
    let run = dir.to_str().unwrap();
    let (code, _, err) = node(&["status", "--name", "nope", "--run-dir", run]);
    assert_eq!(code, 1);
    assert!(err.starts_with("error: no installation `nope`"), "{err}");
    assert!(err.contains("`load` one first"), "{err}");

    let junk = dir.with_extension("o");
    std::fs::write(&junk, b"not an object").unwrap();
    let (code, _, err) = node(&["replace", junk.to_str().unwrap(), "--run-dir", run]);
    assert_eq!(code, 1);
    assert!(err.contains("not a cilc object"), "{err}");

    let (code, _, err) = node(&["attach", "eth0", "--hook", "xdp-fast"]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown hook `xdp-fast`"), "{err}");

    let (code, _, err) = node(&["load", "x.o", "--identity", "10.0.0.1"]);
    assert_eq!(code, 2);
    assert!(err.contains("expected ADDR=IDENTITY"), "{err}");

    let (code, _, err) = node(&["status", "--name", "../etc", "--run-dir", run]);
    assert_eq!(code, 1);
    assert!(err.contains("use letters, digits"), "{err}");
    let _ = std::fs::remove_file(junk);
}
