//! Compiles stdlib-bpf/cilc.c to LLVM bitcode with clang-19; the code
//! generator links it into every object (see docs/backend.md).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("..");
    let src = root.join("stdlib-bpf/cilc.c");
    let header = root.join("stdlib-bpf/cilc.h");
    println!("cargo:rerun-if-changed={}", src.display());
    println!("cargo:rerun-if-changed={}", header.display());
    println!("cargo:rerun-if-env-changed=CILC_CLANG");
    tree_source(&root);
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("cilc.bc");
    let clang = std::env::var("CILC_CLANG").unwrap_or_else(|_| "clang-19".into());
    // Debian keeps <asm/types.h> under the multiarch directory.
    let multiarch = Command::new("gcc")
        .arg("-print-multiarch")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "x86_64-linux-gnu".into());
    let status = Command::new(&clang)
        .args([
            "-target",
            "bpf",
            "-mcpu=v4",
            "-O2",
            "-g",
            "-emit-llvm",
            "-c",
        ])
        .arg(format!("-I/usr/include/{multiarch}"))
        // Paths in the debug info (and so the BTF) do not depend on where
        // the repository is checked out.
        .arg(format!("-fdebug-prefix-map={}=/cilc", root.display()))
        .arg(format!(
            "-fdebug-prefix-map={}=/cilc",
            root.canonicalize().unwrap_or(root.clone()).display()
        ))
        .arg(&src)
        .arg("-o")
        .arg(&out)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("{clang} failed on {} ({s})", src.display()),
        Err(e) => panic!(
            "cannot run {clang} ({e}): install clang-19 (scripts/setup.sh does) or set CILC_CLANG"
        ),
    }
}

/// `CILC_TREE_SOURCE`: a hash of the diagram builder's source, part of
/// every key of the part cache (compiler/src/tree/cache.rs), so that a
/// compiler whose builder changed never reuses another's parts.
fn tree_source(root: &std::path::Path) {
    use std::hash::{Hash, Hasher};
    // DefaultHasher::new() has fixed keys: the same source, the same hash.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for f in ["mod.rs", "build.rs", "cache.rs"] {
        let path = root.join("compiler/src/tree").join(f);
        println!("cargo:rerun-if-changed={}", path.display());
        std::fs::read(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
            .hash(&mut h);
    }
    println!("cargo:rustc-env=CILC_TREE_SOURCE={:016x}", h.finish());
}
