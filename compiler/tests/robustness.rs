//! No input panics the front end: random bytes, random token soups and
//! mutated examples all go through parse, resolve and fmt.

use proptest::prelude::*;

fn run(src: &str) {
    let (file, _, diags) = cilc::check_source(src);
    // Rendering must not panic on any span either.
    let report = cilc::diag::render::Report {
        name: "fuzz.cpl",
        source: src,
        diagnostics: &diags,
    };
    let _ = cilc::diag::render::human(std::slice::from_ref(&report), false);
    let _ = cilc::diag::render::sarif(std::slice::from_ref(&report));
    if cilc_grammar::parse(src).1.is_empty() {
        let out = cilc::fmt::format_file(&file, src);
        // What fmt prints must parse again.
        assert!(
            cilc_grammar::parse(&out).1.is_empty(),
            "fmt output does not parse:\n{out}"
        );
    }
}

fn examples() -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    v.sort();
    v
}

const WORDS: &[&str] = &[
    "cidr",
    "ports",
    "select",
    "policy",
    "chain",
    "on",
    "ingress",
    "egress",
    "allow",
    "deny",
    "audit",
    "accept",
    "drop",
    "from",
    "to",
    "host",
    "world",
    "tcp",
    "udp",
    "icmp",
    "icmpv6",
    "any",
    "proto",
    "type",
    "code",
    "sport",
    "flags",
    "named",
    "snat",
    "as",
    "http",
    "dns",
    "kafka",
    "tls",
    "header",
    "regex",
    "in",
    "namespace",
    "namespaces",
    "except",
    "{",
    "}",
    "(",
    ")",
    ",",
    ";",
    "=",
    "!=",
    "!",
    "/",
    "-",
    "|",
    "*",
    "10.0.0.0/8",
    "10.1.2.3/33",
    "fd00::/8",
    "::1",
    "2001:db8::1::",
    "80",
    "65536",
    "0x12",
    "app=web",
    "\"/api/*\"",
    "\"x",
    "GET",
    "a.b/c",
    "#c\n",
    "\n",
    "x",
    "y",
    "web",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, .. ProptestConfig::default() })]

    #[test]
    fn random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        run(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn token_soup(words in proptest::collection::vec(proptest::sample::select(WORDS), 0..80)) {
        run(&words.join(" "));
    }

    #[test]
    fn mutated_examples(pick in any::<prop::sample::Index>(), edits in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..4, proptest::sample::select(WORDS)), 1..6)) {
        let all = examples();
        let mut src = all[pick.index(all.len())].clone();
        for (at, op, word) in edits {
            let mut i = at.index(src.len() + 1);
            while !src.is_char_boundary(i) { i -= 1; }
            match op {
                0 => src.insert_str(i, word),
                1 => { let mut j = (i + word.len()).min(src.len()); while !src.is_char_boundary(j) { j -= 1; } src.replace_range(i..j, ""); }
                2 => { let mut j = (i + 1).min(src.len()); while !src.is_char_boundary(j) { j -= 1; } src.replace_range(i..j, word); }
                _ => src.truncate(i),
            }
        }
        run(&src);
    }
}
