//! One bad input per kind of mistake: the rendered diagnostic is a snapshot
//! in `tests/snapshots/`, and each case must report the expected code.
//! Re-bless with `INSTA_UPDATE=always cargo test --test diagnostics` (or
//! `cargo insta review`).

use cilc::diag::render::{self, Report};

const CASES: &[(&str, &str, &str)] = &[
    ("syntax_unexpected_token", "syntax-error", "policy p on host {\n  ingress {\n    allow from world tcp 443 443\n  }\n}\n"),
    ("syntax_unexpected_eof", "unexpected-eof", "policy p on host {\n  ingress {\n    allow from world tcp 443\n"),
    ("invalid_character", "invalid-character", "policy p on host {\n  ingress {\n    allow from $corp tcp 80\n  }\n}\n"),
    ("reserved_word_as_name", "syntax-error", "select kafka = app=kafka\n"),
    (
        "stray_comma_before_next_item",
        "port-out-of-range",
        "select web = app=web,\npolicy p on web {\n  ingress {\n    allow from world tcp 99999\n  }\n}\n",
    ),
    ("digit_word_label_value_is_fine_but_not_a_port", "syntax-error", "ports p = 8080ab\n"),
    ("chain_family_mismatch", "family-mismatch", "chain c on host ingress {\n  accept from 10.0.0.0/8 to 2001:db8::/32 tcp 80\n}\n"),
    ("named_source_port", "invalid-port-name", "chain c on host ingress {\n  accept udp sport named dns\n}\n"),
    ("unreachable_after_any", "unreachable-rule", "chain c on host ingress {\n  drop any\n  accept tcp 22\n}\n"),
    ("invalid_kafka_topic", "invalid-kafka-topic", "policy p on host {\n  egress {\n    allow to cluster tcp 9092 kafka { fetch topic \"a/b\" }\n  }\n}\n"),
    ("colon_port_range", "syntax-error", "ports web = 8000:8099\n"),
    ("unterminated_string", "unterminated-string", "policy p on host {\n  ingress {\n    allow tcp 80 http { GET \"/index.html }\n  }\n}\n"),
    (
        "syntax_several_errors",
        "syntax-error",
        "cidr = 10.0.0.0/8\nports web = 80\npolicy p on host {\n  ingress {\n    allow from from world\n    allow tcp web\n    deny to\n  }\n}\n",
    ),
    ("undefined_name", "undefined-name", "select frontend = app=web\npolicy p on frontend {\n  ingress {\n    allow from fronted tcp 80\n  }\n}\n"),
    ("duplicate_definition", "duplicate-definition", "cidr corp = 10.0.0.0/8\ncidr corp = 172.16.0.0/12\npolicy p on host {\n  ingress {\n    allow from corp\n  }\n}\n"),
    ("wrong_kind", "wrong-kind", "ports web = 80, 443\npolicy p on host {\n  ingress {\n    allow from web tcp web\n  }\n}\n"),
    ("reserved_name", "reserved-name", "cidr world = 0.0.0.0/0\n"),
    ("cyclic_definition", "cyclic-definition", "cidr a = 10.0.0.0/8, b\ncidr b = a\npolicy p on host {\n  ingress {\n    allow from b\n  }\n}\n"),
    ("unused_definition", "unused-definition", "cidr corp = 10.0.0.0/8\npolicy p on host {\n  ingress {\n    allow from world tcp 22\n  }\n}\n"),
    ("duplicate_rule_name", "duplicate-rule-name", "policy p on host {\n  ingress {\n    allow tcp 22 as ssh\n    allow tcp 2222 as ssh\n  }\n}\n"),
    ("invalid_ipv4", "invalid-address", "policy p on host {\n  ingress {\n    allow from 10.0.0.256 tcp 22\n  }\n}\n"),
    ("invalid_ipv6", "invalid-address", "policy p on host {\n  ingress {\n    allow from 2001:db8::1::2 tcp 22\n  }\n}\n"),
    ("prefix_too_long", "invalid-address", "cidr corp = 10.0.0.0/33\n"),
    ("host_bits_set", "host-bits-set", "policy p on host {\n  ingress {\n    allow from 10.1.2.3/24 tcp 22\n  }\n}\n"),
    ("except_outside", "except-outside", "cidr corp = 10.0.0.0/8 except 192.168.0.0/16\npolicy p on host {\n  ingress {\n    allow from corp\n  }\n}\n"),
    ("empty_set", "empty-set", "cidr corp = 10.0.0.0/8 except 10.0.0.0/9, 10.128.0.0/9\npolicy p on host {\n  ingress {\n    allow from corp\n  }\n}\n"),
    ("port_out_of_range", "port-out-of-range", "policy p on host {\n  ingress {\n    allow tcp 65536\n  }\n}\n"),
    ("inverted_range", "inverted-range", "ports high = 9000-8000\npolicy p on host {\n  ingress {\n    allow tcp high\n  }\n}\n"),
    ("port_zero", "port-zero", "policy p on host {\n  ingress {\n    allow udp 0\n  }\n}\n"),
    ("invalid_port_name", "invalid-port-name", "policy p on host {\n  ingress {\n    allow tcp named HTTP_Metrics\n  }\n}\n"),
    ("ports_not_allowed", "ports-not-allowed", "policy p on host {\n  ingress {\n    allow icmp 80\n  }\n}\n"),
    ("sport_outside_chain", "sport-outside-chain", "policy p on host {\n  ingress {\n    allow tcp 80 sport 1024-65535\n  }\n}\n"),
    ("unknown_protocol", "unknown-protocol", "chain c on host ingress {\n  accept proto grre\n}\n"),
    ("icmp_not_allowed", "icmp-not-allowed", "policy p on host {\n  ingress {\n    allow tcp type 8\n  }\n}\n"),
    ("icmp_out_of_range", "icmp-out-of-range", "policy p on host {\n  ingress {\n    allow icmp type 3 code 300\n  }\n}\n"),
    ("unknown_icmp_type", "unknown-icmp-type", "policy p on host {\n  ingress {\n    allow icmp type packet-too-big\n  }\n}\n"),
    ("flags_not_allowed", "flags-not-allowed", "chain c on host ingress {\n  drop udp flags syn\n}\n"),
    ("invalid_flags", "invalid-flags", "chain c on host ingress {\n  drop tcp flags syn/synn|ack\n}\n"),
    ("invalid_label", "invalid-label", "select web = app=\"my app\"\npolicy p on web {\n  ingress {\n    allow from world tcp 80\n  }\n}\n"),
    ("empty_selector", "empty-selector", "select web = app=web, app=api\npolicy p on web {\n  ingress {\n    allow from world tcp 80\n  }\n}\n"),
    ("duplicate_term", "duplicate-term", "select web = app=web, tier=front, app=web\npolicy p on web {\n  ingress {\n    allow from world tcp 80\n  }\n}\n"),
    ("direction_mismatch", "direction-mismatch", "policy p on host {\n  egress {\n    allow from world tcp 80\n  }\n}\n"),
    ("action_not_allowed", "action-not-allowed", "policy p on host {\n  ingress {\n    accept from world tcp 80\n  }\n}\n"),
    ("duplicate_section", "duplicate-section", "policy p on host {\n  ingress {\n    allow tcp 22\n  }\n  ingress {\n    allow tcp 80\n  }\n}\n"),
    ("empty_policy", "empty-policy", "policy p on host {\n}\n"),
    ("unreachable_rule", "unreachable-rule", "chain c on host ingress {\n  drop from 192.0.2.0/24\n  drop\n  accept tcp 22\n  accept tcp 80\n}\n"),
    ("l7_protocol", "l7-protocol", "policy p on host {\n  ingress {\n    allow udp 80 http { GET \"/\" }\n  }\n}\n"),
    ("l7_without_port", "l7-without-port", "policy p on host {\n  ingress {\n    allow tcp http { GET \"/\" }\n  }\n}\n"),
    ("l7_not_allow", "l7-not-allow", "policy p on host {\n  ingress {\n    deny tcp 80 http { POST \"/admin\" }\n  }\n}\n"),
    ("l7_dns_port", "l7-port", "policy p on host {\n  egress {\n    allow to cluster udp 5353 dns { \"*.example.com\" }\n  }\n}\n"),
    ("l7_http_on_443", "l7-port", "policy p on host {\n  ingress {\n    allow tcp 443 http { GET \"/\" }\n  }\n}\n"),
    ("empty_l7", "empty-l7", "policy p on host {\n  ingress {\n    allow tcp 80 http { }\n  }\n}\n"),
    ("http_method_unknown", "http-method", "policy p on host {\n  ingress {\n    allow tcp 80 http { GTE \"/\" }\n  }\n}\n"),
    ("http_method_case", "http-method", "policy p on host {\n  ingress {\n    allow tcp 80 http { get \"/\" }\n  }\n}\n"),
    ("invalid_regex", "invalid-regex", "policy p on host {\n  ingress {\n    allow tcp 80 http { GET regex \"^/api/(v1|v2\" }\n  }\n}\n"),
    ("http_path", "http-path", "policy p on host {\n  ingress {\n    allow tcp 80 http { GET \"api/v1\" }\n  }\n}\n"),
    ("http_path_star", "http-path", "policy p on host {\n  ingress {\n    allow tcp 80 http { GET \"/api/*/users\" }\n  }\n}\n"),
    ("invalid_header", "invalid-header", "policy p on host {\n  ingress {\n    allow tcp 80 http { header \"X Token\" }\n  }\n}\n"),
    ("invalid_dns_name", "invalid-dns-name", "policy p on host {\n  egress {\n    allow to cluster udp 53 dns { \"example..com\" }\n  }\n}\n"),
    ("unknown_kafka_api", "unknown-kafka-api", "policy p on host {\n  egress {\n    allow to cluster tcp 9092 kafka { fetchh topic \"orders\" }\n  }\n}\n"),
    ("snat_not_allowed", "snat-not-allowed", "policy p on host {\n  ingress {\n    allow from world tcp 80 snat\n  }\n}\n"),
    ("snat_inside_cluster", "snat-inside-cluster", "select db = app=db\npolicy p on host {\n  egress {\n    allow to db tcp 5432 snat\n  }\n}\n"),
    ("snat_to_prefix", "invalid-address", "policy p on host {\n  egress {\n    allow to world tcp 443 snat to 203.0.113.0/24\n  }\n}\n"),
    ("family_mismatch", "family-mismatch", "policy p on host {\n  ingress {\n    allow from 2001:db8::/32 icmp type echo-request\n  }\n}\n"),
    ("world_as_subject", "wrong-kind", "policy p on world {\n  ingress {\n    allow tcp 80\n  }\n}\n"),
    (
        "duplicate_section_rules_still_checked",
        "undefined-name",
        "policy p on host {\n  ingress {\n    allow tcp 80\n  }\n  ingress {\n    allow from nosuch tcp 22\n  }\n}\n",
    ),
    ("audit_in_chain", "action-not-allowed", "chain c on host ingress {\n  audit from world tcp 22\n}\n"),
    ("l7_bad_port_only_one_error", "port-out-of-range", "policy p on host {\n  ingress {\n    allow tcp 99999 http { GET \"/\" }\n  }\n}\n"),
    ("duplicate_protocol", "duplicate-protocol", "policy p on host {\n  ingress {\n    allow tcp/tcp 80\n  }\n}\n"),
    ("except_wider", "except-outside", "cidr corp = 10.1.0.0/16 except 10.0.0.0/8\npolicy p on host {\n  ingress {\n    allow from corp\n  }\n}\n"),
];

fn diagnostics(src: &str) -> Vec<cilc::diag::Diagnostic> {
    cilc::check_source(src).2
}

fn human(name: &str, src: &str) -> String {
    let d = diagnostics(src);
    render::human(
        &[Report {
            name: &format!("{name}.cpl"),
            source: src,
            diagnostics: &d,
        }],
        false,
    )
}

fn settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path("../../tests/snapshots");
    s.set_prepend_module_to_snapshot(false);
    s
}

#[test]
fn every_kind_of_mistake_has_its_diagnostic() {
    assert!(CASES.len() >= 30);
    for (name, code, src) in CASES {
        let d = diagnostics(src);
        assert!(
            d.iter().any(|d| d.code.slug() == *code),
            "{name}: expected a `{code}` diagnostic, got {:?}",
            d.iter().map(|d| d.code.slug()).collect::<Vec<_>>()
        );
        settings().bind(|| insta::assert_snapshot!(format!("diag_{name}"), human(name, src)));
    }
}

/// One mistake, one diagnostic: what follows from an error already
/// reported is not reported again.
#[test]
fn no_consequential_diagnostics() {
    let cases: &[(&str, &[&str])] = &[
        ("policy p on host {\n  ingress {\n    allow tcp 99999 http { GET \"/\" }\n  }\n}\n", &["port-out-of-range"]),
        ("policy p on host {\n  ingress {\n    allow proto gree 80 http { GET \"/\" }\n  }\n}\n", &["unknown-protocol"]),
        (
            "cidr bad = 10.0.0.0/33\npolicy p on host {\n  ingress {\n    allow from bad, 2001:db8::/32 icmp\n  }\n}\n",
            &["invalid-address"],
        ),
        (
            "cidr a = 10.0.0.0/8\ncidr a = 10.1.2.3/8, nosuch\nports p = 80\nports p = 99999\npolicy x on host {\n  ingress {\n    allow from a tcp p\n  }\n}\n",
            &["duplicate-definition", "host-bits-set", "undefined-name", "duplicate-definition", "port-out-of-range"],
        ),
    ];
    for (src, expected) in cases {
        let codes: Vec<_> = diagnostics(src).iter().map(|d| d.code.slug()).collect();
        assert_eq!(&codes, expected, "{src}");
    }
}

#[test]
fn several_syntax_errors_in_one_run() {
    let src = CASES
        .iter()
        .find(|c| c.0 == "syntax_several_errors")
        .unwrap()
        .2;
    let errors = diagnostics(src).iter().filter(|d| d.is_error()).count();
    assert!(errors >= 3, "only {errors} errors reported");
}

const MIXED: &str = "cidr corp = 10.1.2.3/8\npolicy web on { app=web } {\n  ingress {\n    allow from corp tcp 80\n    allow from crop udp 53\n  }\n}\n";

fn mixed_report(d: &[cilc::diag::Diagnostic]) -> Report<'_> {
    Report {
        name: "policies/web.cpl",
        source: MIXED,
        diagnostics: d,
    }
}

#[test]
fn json_form() {
    let d = diagnostics(MIXED);
    let text = render::json(&[mixed_report(&d)]);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["errors"], 1);
    assert_eq!(v["warnings"], 1);
    assert_eq!(v["diagnostics"][1]["line"], 5);
    settings().bind(|| insta::assert_snapshot!("format_json", text));
}

#[test]
fn sarif_form() {
    let d = diagnostics(MIXED);
    let text = render::sarif(&[mixed_report(&d)]);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["version"], "2.1.0");
    let results = v["runs"][0]["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    let rules = v["runs"][0]["tool"]["driver"]["rules"].as_array().unwrap();
    for r in results {
        let i = r["ruleIndex"].as_u64().unwrap() as usize;
        assert_eq!(rules[i]["id"], r["ruleId"]);
    }
    // The rule table is long and stable; snapshot the results only.
    let results = serde_json::to_string_pretty(&v["runs"][0]["results"]).unwrap();
    settings().bind(|| insta::assert_snapshot!("format_sarif_results", results));
}

#[test]
fn github_form() {
    let d = diagnostics(MIXED);
    let text = render::github(&[mixed_report(&d)]);
    assert!(text
        .lines()
        .all(|l| l.starts_with("::error ") || l.starts_with("::warning ")));
    settings().bind(|| insta::assert_snapshot!("format_github", text));
}

#[test]
fn except_over_a_referenced_sets_hole_is_fine() {
    let src = "cidr a = 10.0.0.0/8 except 10.1.0.0/16\ncidr b = a except 10.0.0.0/9\npolicy p on host {\n  ingress {\n    allow from b\n  }\n}\n";
    assert_eq!(diagnostics(src), vec![]);
    let (_, program, _) = cilc::check_source(src);
    let b = program.cidrs.iter().find(|c| c.name == "b").unwrap();
    assert!(b.set.contains("10.200.0.1".parse().unwrap()));
    assert!(!b.set.contains("10.1.0.1".parse().unwrap()));
    assert!(!b.set.contains("10.100.0.1".parse().unwrap()));
}

#[test]
fn names_with_a_final_dot_and_hosts_with_a_port_are_fine() {
    let src = "policy p on host {\n  egress {\n    allow to world tcp 443 tls { \"api.github.com.\" }\n    allow to cluster tcp 80 http { host \"api.example.com:8080\" }\n  }\n}\n";
    assert_eq!(diagnostics(src), vec![]);
}
