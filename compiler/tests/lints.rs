//! Lints from the decision diagrams: one snapshot per kind on a small
//! policy, and checks against the reference evaluator that what they claim
//! holds (a shadowed rule never decides; removing a redundant rule changes
//! no verdict).

use cilc::diag::{render, Code};
use cilc::eval::{evaluate, packet::parse_packet};
use proptest::prelude::*;

mod common;
use common::random_line;

fn lints(src: &str) -> Vec<cilc::diag::Diagnostic> {
    cilc::driver::diagnose(src, true)
}

fn rendered(src: &str) -> String {
    let diags = lints(src);
    let report = render::Report {
        name: "policy.cpl",
        source: src,
        diagnostics: &diags,
    };
    render::human(&[report], false)
}

fn codes(src: &str) -> Vec<Code> {
    lints(src).iter().map(|d| d.code).collect()
}

const SHADOWED: &str = "\
chain edge on host ingress {
  accept from 10.0.0.0/8 tcp as lan-tcp
  drop from 10.0.0.0/8 udp as lan-udp
  accept from 10.1.0.0/16 tcp 22 as ssh
  drop from 10.0.0.0/8 as lan-rest
}
";

const REDUNDANT: &str = "\
chain edge on host ingress {
  accept from 192.0.2.0/24 tcp 443 as narrow
  accept from 192.0.2.0/23 tcp 443 as wide
  drop tcp 443 as rest
}
";

const OVERRIDE: &str = "\
select web = app=web
policy web on web {
  ingress {
    allow from world tcp 80, 443 as public
    deny from 203.0.113.0/24 as abusers
  }
}
";

const NOTHING: &str = "\
select db = app=db
policy db on db {
  ingress {
    allow tcp 5432 as pg
    deny tcp as no-tcp
  }
}
";

const EVERYTHING: &str = "\
select web = app=web
policy web on web {
  egress {
    allow to 0.0.0.0/0 as v4
    allow to ::/0 as v6
  }
}
";

#[test]
fn each_kind_of_lint() {
    for (name, src, code) in [
        ("lint_shadowed", SHADOWED, Code::ShadowedRule),
        ("lint_redundant", REDUNDANT, Code::RedundantRule),
        (
            "lint_deny_overrides_allow",
            OVERRIDE,
            Code::DenyOverridesAllow,
        ),
        ("lint_allows_nothing", NOTHING, Code::AllowsNothing),
        ("lint_allows_everything", EVERYTHING, Code::AllowsEverything),
    ] {
        assert!(codes(src).contains(&code), "{name}: {:?}", codes(src));
        insta::with_settings!({snapshot_path => "../../tests/snapshots", prepend_module_to_snapshot => false}, {
            insta::assert_snapshot!(name, rendered(src));
        });
    }
}

#[test]
fn shadowing_names_only_the_rules_needed() {
    let d = lints(SHADOWED);
    let ssh = d
        .iter()
        .find(|d| d.code == Code::ShadowedRule && d.message.contains("`edge/ssh`"))
        .expect("ssh is shadowed");
    assert_eq!(ssh.related.len(), 1, "{ssh:?}");
    assert!(ssh.notes[0].contains("`edge/lan-tcp`"), "{ssh:?}");
    // lan-rest still drops other protocols: not shadowed, not redundant.
    assert!(!d.iter().any(|d| d.message.contains("lan-rest")), "{d:?}");
}

#[test]
fn no_false_findings_without_cause() {
    // Disjoint rules: nothing to report.
    let src = "\
chain edge on host ingress {
  accept from 10.0.0.0/8 tcp 22
  accept from 10.0.0.0/8 tcp 80
  drop from 10.0.0.0/8
}
";
    assert_eq!(codes(src), vec![]);
    // `app=a` and `app=b` never select one endpoint: the deny overrides
    // nothing (it is only a guard; `pb` allows nothing, which is reported).
    let src = "\
select a = app=a
select b = app=b
policy pa on a { ingress { allow from world tcp 80 } }
policy pb on b { ingress { deny from world } }
";
    let d = lints(src);
    let found: Vec<Code> = d.iter().map(|d| d.code).collect();
    assert_eq!(
        found,
        vec![Code::AllowsNothing, Code::RedundantRule],
        "{d:?}"
    );
    assert!(d[1].is_note());
}

#[test]
fn lints_can_be_turned_off() {
    assert!(cilc::driver::diagnose(SHADOWED, false).is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    #[test]
    fn findings_hold_for_the_evaluator(
        seed in any::<u64>(),
        rules in 1usize..50,
        pkts in proptest::collection::vec((any::<bool>(), 0usize..6, any::<u32>(), any::<u32>(), 0usize..4, any::<u16>(), any::<u16>(), 0usize..6), 96),
    ) {
        let src = cilc::gen::policy(seed, rules);
        let (ir, _) = cilc::compile_ir(&src).unwrap();
        let found = lints(&src);
        let packets: Vec<_> = pkts.into_iter().map(|p| parse_packet(&random_line(p)).unwrap()).collect();
        for d in &found {
            let Some(rule) = ir.rules.iter().find(|r| r.span == d.span) else { continue };
            match d.code {
                Code::ShadowedRule => {
                    for p in &packets {
                        prop_assert_ne!(evaluate(&ir, p).rule, Some(rule.id), "{} decides {}", rule.name, p);
                    }
                }
                Code::RedundantRule => {
                    // Without it (its text cut out), every verdict stays.
                    let cut = format!("{}{}", &src[..rule.span.start as usize], &src[rule.span.end as usize..]);
                    let Ok((without, _)) = cilc::compile_ir(&cut) else { continue };
                    for p in &packets {
                        prop_assert_eq!(evaluate(&ir, p).verdict, evaluate(&without, p).verdict, "{} matters for {}", rule.name, p);
                    }
                }
                _ => {}
            }
        }
    }
}
