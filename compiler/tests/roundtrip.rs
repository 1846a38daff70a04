//! `fmt` keeps meaning and is stable: parse → format → parse gives the same
//! AST (spans aside), formatting twice changes nothing, and the bundled
//! examples are already in canonical form.

use std::path::PathBuf;

use proptest::prelude::*;
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The AST as JSON with every span removed.
fn shape(src: &str) -> Value {
    fn is_span(v: &Value) -> bool {
        v.as_object()
            .is_some_and(|o| o.len() == 2 && o.contains_key("start") && o.contains_key("end"))
    }
    fn strip(v: &mut Value) {
        match v {
            Value::Object(o) => {
                o.retain(|_, x| !is_span(x));
                o.values_mut().for_each(strip);
            }
            Value::Array(a) => {
                a.retain(|x| !is_span(x));
                a.iter_mut().for_each(strip);
            }
            _ => {}
        }
    }
    let (file, errors) = cilc_grammar::parse(src);
    assert!(errors.is_empty(), "syntax errors: {errors:?}\n{src}");
    let mut v = serde_json::to_value(&file).unwrap();
    strip(&mut v);
    v
}

fn format(src: &str) -> String {
    let (file, errors) = cilc_grammar::parse(src);
    assert!(errors.is_empty(), "{errors:?}");
    cilc::fmt::format_file(&file, src)
}

fn assert_roundtrip(src: &str) {
    let once = format(src);
    assert_eq!(
        shape(src),
        shape(&once),
        "formatting changed the AST:\n{once}"
    );
    let twice = format(&once);
    assert_eq!(once, twice, "fmt is not idempotent");
    // Comments survive.
    let count = |s: &str| cilc_grammar::parse(s).0.comments.len();
    assert_eq!(count(src), count(&once), "comments lost:\n{once}");
}

fn examples() -> Vec<(PathBuf, String)> {
    let mut v: Vec<_> = std::fs::read_dir(root().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cpl"))
        .map(|p| {
            let s = std::fs::read_to_string(&p).unwrap();
            (p, s)
        })
        .collect();
    v.sort();
    assert!(v.len() >= 5, "expected at least five examples");
    v
}

#[test]
fn examples_round_trip_and_are_canonical() {
    for (path, src) in examples() {
        assert_roundtrip(&src);
        assert_eq!(
            format(&src),
            src,
            "{} is not in canonical form (run `cilc fmt --write`)",
            path.display()
        );
    }
}

#[test]
fn messy_layout_is_normalised_with_comments_kept() {
    let src = "# header\n\ncidr  corp =10.0.0.0/8,fd00::/8   except 10.96.0.0/12 # trailing\nselect db = app=postgres in namespace shop\n\n\n\npolicy p on {app=web} {  # on web\n ingress {\n   # before rule\n   allow from corp tcp 80,443 http {GET \"/a\";POST \"/b\" host \"x.example.com\"}\n\n   deny from db\n   # end of section\n }\n}\n";
    let out = format(src);
    insta::with_settings!({snapshot_path => "../../tests/snapshots", prepend_module_to_snapshot => false}, {
        insta::assert_snapshot!("fmt_messy", out);
    });
    assert_roundtrip(src);
}

#[test]
fn long_l7_blocks_go_one_entry_per_line() {
    let src = "policy p on host {\n  ingress {\n    allow tcp 80 http { GET \"/api/v1/users\"; GET \"/api/v1/orders\"; POST \"/api/v1/orders\" host \"shop.example.com\"; DELETE \"/api/v1/orders\" }\n  }\n}\n";
    let out = format(src);
    assert!(
        out.contains("\n      POST \"/api/v1/orders\" host \"shop.example.com\";\n"),
        "{out}"
    );
    assert_roundtrip(src);
}

#[test]
fn keywords_as_label_words_are_kept_and_quoted_only_when_needed() {
    let src = "select s = role=http, \"in\"=x, team in (drop, \"a b\") in namespace policy\npolicy p on s {\n  ingress {\n    allow tcp named dns\n  }\n}\n";
    let out = format(src);
    assert!(
        out.contains("role=http, \"in\"=x, team in (drop, \"a b\") in namespace policy"),
        "{out}"
    );
    assert_roundtrip(src);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    /// Lowering always yields a valid IR, formatting the source does not
    /// change it, and the evaluator decides any packet against it.
    #[test]
    fn generated_policies_lower_to_valid_ir(seed in any::<u64>(), rules in 1usize..300, pkts in proptest::collection::vec((any::<bool>(), 0usize..4, any::<u32>(), any::<u32>(), 0usize..6, any::<u16>(), any::<u16>()), 20)) {
        let src = cilc::gen::policy(seed, rules);
        let (ir, _) = cilc::compile_ir(&src).unwrap();
        let (again, _) = cilc::compile_ir(&format(&src)).unwrap();
        prop_assert_eq!(ir.to_string(), again.to_string());
        for (ingress, local, a, b, proto, sport, dport) in pkts {
            let local = ["host", "app=app0,tier=frontend@ns-1", "app=app1,tier=backend@x[env=prod,team=t1]", "app=app0,canary=1@ns-0"][local];
            let proto = ["tcp", "udp", "sctp", "icmp", "proto 47", "icmpv6"][proto];
            let (src_ip, dst_ip) = if proto == "icmpv6" {
                (format!("fd00::{:x}", a & 0xffff), format!("fd00:1::{:x}", b & 0xffff))
            } else {
                (std::net::Ipv4Addr::from(a).to_string(), std::net::Ipv4Addr::from(b).to_string())
            };
            let l4 = match proto {
                "icmp" | "icmpv6" => format!("{proto} {} 0", sport % 256),
                p => format!("{p} {sport} {dport}"),
            };
            let dir = if ingress { "ingress" } else { "egress" };
            let line = format!("{dir} local {local} peer world {src_ip} -> {dst_ip} {l4}");
            let pkt = cilc::eval::packet::parse_packet(&line).unwrap();
            let d = cilc::eval::evaluate(&ir, &pkt);
            // A decision names a rule exactly when a rule decided.
            let by_rule = !matches!(d.reason, cilc::eval::Reason::DefaultDeny | cilc::eval::Reason::NoPolicy);
            prop_assert_eq!(d.rule.is_some(), by_rule, "{}", line);
            if let Some(id) = d.rule {
                prop_assert!(d.matched.contains(&id));
            }
        }
    }

    #[test]
    fn generated_policies_round_trip(seed in any::<u64>(), rules in 1usize..400) {
        let src = cilc::gen::policy(seed, rules);
        assert_roundtrip(&src);
    }
}

/// The resolved program of every example, in its stable text form.
#[test]
fn resolved_examples_print_stably() {
    for (path, src) in examples() {
        let (_, program, diags) = cilc::check_source(&src);
        assert!(diags.is_empty());
        let text = program.to_string();
        // Formatting the source does not change what it means.
        let (_, again, _) = cilc::check_source(&format(&src));
        assert_eq!(text, again.to_string());
        let name = format!(
            "program_{}",
            path.file_stem()
                .unwrap()
                .to_string_lossy()
                .replace('-', "_")
        );
        insta::with_settings!({snapshot_path => "../../tests/snapshots", prepend_module_to_snapshot => false}, {
            insta::assert_snapshot!(name, text);
        });
    }
}

#[test]
fn regex_escapes_and_digit_words_survive() {
    let src = "select s = pod-template-hash=5d8f7c9b4d, \"policy\"=x\npolicy p on s {\n  ingress {\n    allow tcp 80 http { GET regex \"^/orders/\\d+\\.json$\" }\n  }\n}\n";
    assert_eq!(format(src), src);
    assert_roundtrip(src);
    let (_, program, diags) = cilc::check_source(src);
    assert!(diags.is_empty(), "{diags:?}");
    let text = program.to_string();
    assert!(text.contains(r#"regex "^/orders/\\d+\\.json$""#), "{text}");
    assert!(text.contains("pod-template-hash in (5d8f7c9b4d)"), "{text}");
}

#[test]
fn strings_keep_their_value_and_a_byte_order_mark_is_skipped() {
    let src = "\u{feff}policy p on all {\n  ingress {\n    allow from world tcp 80 http { header \"X-J\" = \"{  }\" }\n    allow tcp 81 http { }\n  }\n}\n";
    let out = format(src);
    assert!(out.contains("\"{  }\""), "{out}");
    assert!(out.contains("allow tcp 81 http { }"), "{out}");
    assert_roundtrip(&out);
}

/// The policy IR of every example, in its stable text form; it validates.
#[test]
fn ir_of_examples_prints_stably() {
    for (path, src) in examples() {
        let (ir, _) =
            cilc::compile_ir(&src).unwrap_or_else(|d| panic!("{}: {d:?}", path.display()));
        let text = ir.to_string();
        assert_eq!(
            text.lines().filter(|l| l.starts_with('r')).count(),
            ir.rules.len()
        );
        let name = format!(
            "ir_{}",
            path.file_stem()
                .unwrap()
                .to_string_lossy()
                .replace('-', "_")
        );
        insta::with_settings!({snapshot_path => "../../tests/snapshots", prepend_module_to_snapshot => false}, {
            insta::assert_snapshot!(name, text);
        });
    }
}
