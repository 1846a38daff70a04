//! `cilc diff`: equivalent inputs give no class; one changed rule gives
//! exactly its change; and against the reference evaluator, a packet whose
//! verdict changes is never missed.

use cilc::diff::{diff, Diff};
use cilc::eval::{evaluate, packet::parse_packet};
use cilc::tree::build::{build, Options};
use proptest::prelude::*;

mod common;
use common::random_line;

fn run(old: &str, new: &str) -> Diff {
    let (a, _) = cilc::compile_ir(old).unwrap();
    let (b, _) = cilc::compile_ir(new).unwrap();
    let (fa, fb) = (
        build(&a, &Options::default()),
        build(&b, &Options::default()),
    );
    diff((&a, old, &fa), (&b, new, &fb))
}

fn examples() -> Vec<(String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "cpl"))
        .map(|p| {
            (
                p.display().to_string(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    v.sort();
    assert!(v.len() >= 5);
    v
}

#[test]
fn a_policy_equals_itself_and_its_canonical_form() {
    let mut all = examples();
    all.push(("generated".into(), cilc::gen::policy(3, 300)));
    for (name, src) in all {
        let d = run(&src, &src);
        assert!(d.equivalent(), "{name}: {}", cilc::diff::text(&d));
        let (file, errors) = cilc_grammar::parse(&src);
        assert!(errors.is_empty());
        let canonical = cilc::fmt::format_file(&file, &src);
        let d = run(&src, &canonical);
        assert!(d.equivalent(), "{name} vs fmt: {}", cilc::diff::text(&d));
    }
}

const OLD: &str = "\
select web = app=web
policy web on web {
  ingress {
    allow from world tcp 80 as public
    allow from 10.0.0.0/8 tcp 22 as ssh
  }
}
";

#[test]
fn one_changed_port_is_reported_exactly() {
    let new = OLD.replace("tcp 80 as public", "tcp 8080 as public");
    let d = run(OLD, &new);
    let text = cilc::diff::text(&d);
    // Two classes per family: port 80 closes, port 8080 opens.
    assert_eq!(d.classes.len(), 4, "{text}");
    for c in &d.classes {
        assert_eq!(c.direction, "ingress");
        assert!(c.conditions.iter().any(|x| x == "src is world"), "{text}");
        let dport = c
            .fields
            .iter()
            .find(|(f, _)| *f == "dport")
            .map(|(_, r)| r.as_str());
        match dport {
            Some("80") => {
                assert_eq!((c.old.verdict, c.new.verdict), ("allow", "drop"), "{text}");
                assert_eq!(c.old.rule.as_deref(), Some("web/public"));
                assert_eq!(c.old.line, Some(4));
                assert_eq!(c.new.reason, "default-deny");
            }
            Some("8080") => {
                assert_eq!((c.old.verdict, c.new.verdict), ("drop", "allow"), "{text}");
                assert_eq!(c.new.rule.as_deref(), Some("web/public"));
            }
            other => panic!("unexpected class {other:?}: {text}"),
        }
        assert!(
            c.fields.iter().any(|(f, r)| *f == "proto" && r == "tcp"),
            "{text}"
        );
        assert!(!c.fields.iter().any(|(f, _)| *f == "src"), "{text}");
    }
    // Renaming a rule changes no verdict.
    let renamed = OLD.replace("as ssh", "as admin-ssh");
    assert!(run(OLD, &renamed).equivalent());
}

#[test]
fn reordering_a_chain_is_a_change_when_it_matters() {
    let a =
        "chain c on host ingress {\n  accept from 10.0.0.0/8 tcp 22\n  drop from 10.1.0.0/16\n}\n";
    let b =
        "chain c on host ingress {\n  drop from 10.1.0.0/16\n  accept from 10.0.0.0/8 tcp 22\n}\n";
    let d = run(a, b);
    assert_eq!(d.classes.len(), 1, "{}", cilc::diff::text(&d));
    let c = &d.classes[0];
    assert_eq!((c.old.verdict, c.new.verdict), ("allow", "drop"));
    assert!(
        c.fields.contains(&("src", "10.1.0.0/16".to_string())),
        "{c:?}"
    );
    assert!(c.fields.contains(&("dport", "22".to_string())), "{c:?}");
    // Disjoint rules commute.
    let a = "chain c on host ingress {\n  accept tcp 22\n  drop udp\n}\n";
    let b = "chain c on host ingress {\n  drop udp\n  accept tcp 22\n}\n";
    assert!(run(a, b).equivalent());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    /// Cut one rule out of a generated policy: if some packet changes
    /// verdict, the diff is not empty.
    #[test]
    fn no_change_goes_unseen(
        seed in any::<u64>(),
        rules in 1usize..40,
        which in any::<usize>(),
        pkts in proptest::collection::vec((any::<bool>(), 0usize..6, any::<u32>(), any::<u32>(), 0usize..4, any::<u16>(), any::<u16>(), 0usize..6), 128),
    ) {
        let src = cilc::gen::policy(seed, rules);
        let (ir, _) = cilc::compile_ir(&src).unwrap();
        let r = &ir.rules[which % ir.rules.len()];
        let cut = format!("{}{}", &src[..r.span.start as usize], &src[r.span.end as usize..]);
        let Ok((after, _)) = cilc::compile_ir(&cut) else { return Ok(()) };
        let d = run(&src, &cut);
        for p in pkts {
            let p = parse_packet(&random_line(p)).unwrap();
            if evaluate(&ir, &p).verdict != evaluate(&after, &p).verdict {
                prop_assert!(!d.equivalent(), "{} changes verdict without removing {}", p, r.name);
            }
        }
        if d.classes.is_empty() {
            prop_assert!(d.equivalent() || !d.incomplete.is_empty());
        }
    }
}
