//! Decision diagrams against the reference evaluator: the semantic cases,
//! generated policies with random packets, and ClassBench traces must get
//! the same verdict, reason and deciding rule. Passes keep diagrams
//! well-formed and their decisions unchanged.

use std::path::{Path, PathBuf};

use cilc::eval::{cases, evaluate, packet::parse_packet, Decision};
use cilc::tree::{self, build::Options, passes, verify};
use proptest::prelude::*;

mod common;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn same(a: &Decision, b: &Decision) -> bool {
    (a.verdict, a.reason, a.rule, &a.snat) == (b.verdict, b.reason, b.rule, &b.snat)
}

#[test]
fn semantic_cases_through_the_diagrams() {
    let mut n = 0;
    for e in std::fs::read_dir(root().join("tests/semantics")).unwrap() {
        let p = e.unwrap().path();
        let file = cases::parse_case_file(&std::fs::read_to_string(&p).unwrap()).unwrap();
        let (ir, _) = cilc::compile_ir(&file.policy).unwrap();
        for opts in [
            Options::default(),
            Options {
                leaf_size: 1,
                ..Options::default()
            },
        ] {
            let forest = tree::build::build(&ir, &opts);
            let failures = cases::run(&file, &ir, |pkt| forest.decide(&ir, pkt));
            assert!(
                failures.is_empty(),
                "{}:\n{}",
                p.display(),
                failures.join("\n")
            );
        }
        n += file.cases.len();
    }
    assert!(n > 100);
}

fn random_line(pick: (bool, usize, u32, u32, usize, u16, u16, usize)) -> String {
    let (ingress, local, a, b, proto, sport, dport, peer) = pick;
    let local = [
        "host",
        "app=app0,tier=frontend@ns-1",
        "app=app1,tier=backend@x[env=prod,team=t1]+web-1=80",
        "app=app2,tier=web@ns-2",
    ][local];
    let peer = [
        "world",
        "host",
        "app=app3,tier=backend@ns-3+metrics-1=9090",
        "app=app0,tier=frontend@ns-0[env=prod,team=t0]",
    ][peer];
    let proto = ["tcp", "udp", "sctp", "icmp", "proto 47", "icmpv6", "tcp6"][proto];
    // Addresses in the generator's ranges half of the time, anywhere else.
    let v4 = |x: u32| {
        if x & 1 == 0 {
            std::net::Ipv4Addr::from(0x0a00_0000 | (x >> 9))
        } else {
            std::net::Ipv4Addr::from(x)
        }
    };
    let v6 = |x: u32| format!("fd00:{:x}::{:x}", (x >> 16) & 0x3f, x & 0xffff);
    let (src, dst, l4) = match proto {
        "icmpv6" => (v6(a), v6(b), format!("icmpv6 {} 0", sport % 256)),
        "tcp6" => (v6(a), v6(b), format!("tcp {sport} {}", dport % 2048)),
        "icmp" => (
            v4(a).to_string(),
            v4(b).to_string(),
            format!("icmp {} 0", if sport & 1 == 0 { 8 } else { sport % 256 }),
        ),
        p => (
            v4(a).to_string(),
            v4(b).to_string(),
            format!(
                "{p} {sport} {}",
                if dport & 1 == 0 { dport % 2048 } else { dport }
            ),
        ),
    };
    let dir = if ingress { "ingress" } else { "egress" };
    let flags = if sport % 3 == 0 { " flags syn" } else { "" };
    format!("{dir} local {local} peer {peer} {src} -> {dst} {l4}{flags}")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    #[test]
    fn generated_policies_decide_like_the_evaluator(
        seed in any::<u64>(),
        rules in 1usize..120,
        leaf in 1usize..6,
        pkts in proptest::collection::vec((any::<bool>(), 0usize..4, any::<u32>(), any::<u32>(), 0usize..7, any::<u16>(), any::<u16>(), 0usize..4), 64),
    ) {
        let src = cilc::gen::policy(seed, rules);
        let (ir, _) = cilc::compile_ir(&src).unwrap();
        let forest = tree::build::build(&ir, &Options { leaf_size: leaf, ..Options::default() });
        for pick in pkts {
            let line = random_line(pick);
            let pkt = parse_packet(&line).unwrap();
            let (want, got) = (evaluate(&ir, &pkt), forest.decide(&ir, &pkt));
            prop_assert!(same(&want, &got), "{}\nevaluator: {:?}\ndiagram:   {:?}", line, want, got);
        }
    }

    /// Passes keep every diagram well-formed and deciding as its terms do.
    #[test]
    fn passes_keep_meaning(seed in any::<u64>(), rules in 1usize..60, valuation in any::<u64>()) {
        let src = cilc::gen::policy(seed, rules);
        let (ir, _) = cilc::compile_ir(&src).unwrap();
        let forest = tree::build::build(&ir, &Options::default());
        for h in &forest.hooks {
            let atoms: Vec<bool> = (0..h.atoms.len()).map(|i| valuation >> (i % 64) & 1 == 1).collect();
            for d in h.chains.iter().map(|(_, d)| d).chain([&h.policy]) {
                let keys = verify::boundary_keys(d, 400);
                prop_assert!(verify::structure(d, h.v6).is_ok());
                prop_assert_eq!(verify::agrees(d, &keys, &atoms), Ok(()));
                for after in [passes::merge::run(d), passes::dead::run(d, h.v6)] {
                    prop_assert_eq!(verify::structure(&after, h.v6), Ok(()));
                    prop_assert_eq!(verify::agrees(&after, &keys, &atoms), Ok(()));
                    prop_assert!(tree::dump::stats(&after).nodes <= tree::dump::stats(d).nodes);
                }
            }
        }
    }
}

#[test]
fn the_verifier_catches_a_wrong_diagram() {
    let src = "chain c on host ingress {\n  drop from 10.0.0.0/8 tcp 22\n  accept from 10.1.0.0/16\n  drop\n}\n";
    let (ir, _) = cilc::compile_ir(src).unwrap();
    let forest = tree::build::build(
        &ir,
        &Options {
            leaf_size: 1,
            ..Options::default()
        },
    );
    let d = &forest
        .hook(cilc::resolve::Direction::Ingress, false)
        .unwrap()
        .chains[0]
        .1;
    let keys = verify::boundary_keys(d, 1000);
    let atoms = vec![true; 8];
    assert_eq!(verify::agrees(d, &keys, &atoms), Ok(()));
    // Swap the children of every cut in turn: each swap sends the packets
    // on one side of a term boundary down the other side.
    let splits: Vec<usize> = (0..d.nodes.len())
        .filter(|i| matches!(d.nodes[*i], tree::Node::Split { .. }))
        .collect();
    assert!(!splits.is_empty());
    for &i in &splits {
        let mut broken = d.clone();
        if let tree::Node::Split { lo, hi, .. } = &mut broken.nodes[i] {
            std::mem::swap(lo, hi);
        }
        assert!(
            verify::agrees(&broken, &keys, &atoms).is_err(),
            "swapping the children of n{i} went unnoticed"
        );
    }
    let i = splits[0];
    // A child pointing forward is a structural error.
    let mut cyclic = d.clone();
    let last = cyclic.nodes.len() as u32 - 1;
    if let tree::Node::Split { lo, .. } = &mut cyclic.nodes[i] {
        *lo = last;
    }
    assert!(verify::structure(&cyclic, false).is_err());
}

/// The diagrams of `src` as text, every leaf one term (each cut shown).
fn dump_with_leaves_of_one(src: &str) -> String {
    let (ir, _) = cilc::compile_ir(src).unwrap();
    let opts = Options {
        leaf_size: 1,
        ..Options::default()
    };
    tree::dump::forest(&ir, &tree::build::build(&ir, &opts))
}

#[test]
fn dump_of_a_small_policy() {
    let src = "select web = app=web\n\npolicy web on web {\n  ingress {\n    allow from 10.0.0.0/8 tcp 80, 443\n    deny from 10.1.0.0/16\n    allow from { app=lb } tcp 8080\n  }\n}\n\nchain edge on host ingress {\n  drop from 192.0.2.0/24\n  accept tcp 22 flags syn/syn|ack\n  drop\n}\n";
    let text = dump_with_leaves_of_one(src);
    insta::with_settings!({snapshot_path => "../../tests/snapshots", prepend_module_to_snapshot => false}, {
        insta::assert_snapshot!("tree_small_policy", text);
    });
}

/// 32 rules in two clustered blocks, 10.0.0.0/12 and 172.16.0.0/20.
fn clustered_policy() -> String {
    let mut src = String::from("chain edge on host ingress {\n");
    for i in 0..16 {
        src += &format!("  drop from 10.{i}.0.0/16 tcp {}\n", 1000 + i);
        src += &format!("  accept from 172.16.{i}.0/24 udp 53\n");
    }
    src + "  drop\n}\n"
}

/// Address sets that cluster (here two blocks, 10.0.0.0/12 and
/// 172.16.0.0/20) are cut at the top by halving the address space, which
/// leaves each prefix whole, not at the median boundary.
#[test]
fn clustered_prefixes_are_cut_at_aligned_halves_first() {
    let src = clustered_policy();
    let text = dump_with_leaves_of_one(&src);
    let cuts: Vec<&str> = text
        .lines()
        .filter_map(|l| {
            l.split_once("src < ")
                .map(|(_, r)| r.split(' ').next().unwrap_or(""))
        })
        .collect();
    assert_eq!(cuts.first(), Some(&"128.0.0.0"), "{text}");
    for half in [
        "64.0.0.0",
        "16.0.0.0",
        "8.0.0.0",
        "192.0.0.0",
        "160.0.0.0",
        "176.0.0.0",
    ] {
        assert!(cuts.contains(&half), "no cut at {half}: {text}");
    }
}

/// A linear leaf keeps no term an earlier one shadows in its region:
/// copies of a rule (which no cut separates) leave it, a rule that is
/// only partly covered stays, and the leaf still decides as the rules do.
#[test]
fn linear_leaves_drop_the_terms_an_earlier_one_shadows() {
    let src = "chain edge on host egress {
  accept to 10.28.0.0/16 tcp 443
  accept to 10.0.0.0/8 tcp 443
  accept to 10.28.0.0/16 tcp 443
  accept to 10.28.0.0/16 tcp 80
  accept to 10.28.0.0/16 tcp 443
  accept to 10.28.0.0/16 tcp 443
  drop
}
";
    let (ir, _) = cilc::compile_ir(src).unwrap();
    let forest = tree::build::build(&ir, &Options::default());
    let text = tree::dump::forest(&ir, &forest);
    assert!(
        text.contains("first of [r0 (edge/1), r1 (edge/2), r6 (edge/7)]"),
        "{text}"
    );
    for copy in ["r2 ", "r4 ", "r5 "] {
        assert!(!text.contains(copy), "{copy}is a copy of r0: {text}");
    }
    for dst in ["10.28.1.1", "10.1.1.1", "192.0.2.1"] {
        for dport in [80, 443, 8080] {
            let line = format!("egress local host peer world 10.200.0.5 -> {dst} tcp 1000 {dport}");
            let pkt = parse_packet(&line).unwrap();
            let (want, got) = (evaluate(&ir, &pkt), forest.decide(&ir, &pkt));
            assert!(same(&want, &got), "{line}: {want:?} vs {got:?}");
        }
    }
}

/// Without aligned cuts (the tree strategy's diagrams), the same policy's
/// first cut is a median boundary, not the half of the address space.
#[test]
fn without_aligned_cuts_the_first_cut_is_a_median() {
    let src = clustered_policy();
    let (ir, _) = cilc::compile_ir(&src).unwrap();
    let opts = Options {
        leaf_size: 1,
        aligned: false,
        ..Options::default()
    };
    let text = tree::dump::forest(&ir, &tree::build::build(&ir, &opts));
    let first = text.lines().find_map(|l| {
        l.split_once(" < ")
            .map(|(_, r)| r.split(' ').next().unwrap_or(""))
    });
    assert!(first.is_some_and(|c| c != "128.0.0.0"), "{text}");
    assert!(!text.contains("src < 128.0.0.0"), "{text}");
}

fn classbench_trace(filters: &str, trace: &str, truth: Option<&str>) {
    let Some(dir) = common::shared() else { return };
    let read = |p: &str| std::fs::read_to_string(dir.join(p)).unwrap();
    let f = cilc::classbench::parse_filters(&read(filters)).unwrap();
    let (ir, _) = cilc::compile_ir(&cilc::classbench::to_cpl(&f, "cb", filters).unwrap()).unwrap();
    let forest = tree::build::build(&ir, &Options::default());
    let lines = cilc::classbench::parse_trace(&read(trace)).unwrap();
    let truth = truth.map(|t| cilc::classbench::parse_truth(&read(t)).unwrap());
    let mut wrong = Vec::new();
    for (i, t) in lines.iter().enumerate() {
        let want = truth.as_ref().map(|t| t[i] + 1).unwrap_or(t.last);
        let d = forest.decide(&ir, &cilc::classbench::packet(t));
        let got = d
            .rule
            .and_then(|r| cilc::classbench::filter_line(&ir.rules[r as usize].name));
        if got != Some(want) {
            wrong.push((i, want, got));
        }
    }
    assert!(
        wrong.is_empty(),
        "{trace}: {} of {} wrong, first {:?}",
        wrong.len(),
        lines.len(),
        &wrong[..wrong.len().min(5)]
    );
}

#[test]
fn classbench_wustl_through_the_diagram() {
    for set in ["acl1", "fw1", "ipc1"] {
        classbench_trace(
            &format!("wustl_hs1/{set}_1K"),
            &format!("wustl_hs1/{set}_1K_trace"),
            None,
        );
    }
}

#[test]
fn classbench_lyxocs_1k_through_the_diagram() {
    for set in ["acl1_1k", "fw1_1k", "ipc1_1k"] {
        classbench_trace(
            &format!("lyxocs_ruleSet/{set}"),
            &format!("lyxocs_ruleSet/{set}_trace"),
            Some(&format!("lyxocs_ruleSet/derived/{set}_trace.first_match0")),
        );
    }
}

#[test]
fn classbench_lyxocs_fw1_10k_through_the_diagram() {
    classbench_trace(
        "lyxocs_ruleSet/fw1_10k",
        "lyxocs_ruleSet/fw1_10k_trace",
        Some("lyxocs_ruleSet/derived/fw1_10k_trace.first_match0"),
    );
}

#[test]
fn classbench_lyxocs_ipc1_10k_through_the_diagram() {
    classbench_trace(
        "lyxocs_ruleSet/ipc1_10k",
        "lyxocs_ruleSet/ipc1_10k_trace",
        Some("lyxocs_ruleSet/derived/ipc1_10k_trace.first_match0"),
    );
}

/// The part cache gives the diagrams a build without it gives: cold, warm,
/// with damaged files, and after one rule changed (only its subject is
/// built again).
#[test]
fn cached_parts_build_the_same_diagrams() {
    use cilc::tree::cache::Cache;
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("cilc-part-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let text = |ir: &cilc::ir::Validated, f: &tree::Forest| tree::dump::forest(ir, f);
    let src = cilc::gen::policy(11, 1500);
    let (ir, _) = cilc::compile_ir(&src).unwrap();
    let opts = Options::default();
    let plain = text(&ir, &tree::build::build(&ir, &opts));
    let run = |ir: &cilc::ir::Validated| {
        let cache = Cache::open(&dir).unwrap();
        let f = tree::build::build_with(ir, &opts, Some(&cache));
        (text(ir, &f), cache.stats())
    };
    let (cold, stats) = run(&ir);
    assert_eq!(cold, plain);
    assert_eq!(stats.reused, 0);
    let subjects = stats.built;
    assert!(subjects > 20, "{stats:?}");
    let (warm, stats) = run(&ir);
    assert_eq!(warm, plain);
    assert_eq!((stats.reused, stats.built), (subjects, 0));

    // One rule changed: a port number (one subject's terms, in one or
    // both families).
    let at = src.find(" tcp 8080").expect("a tcp 8080 rule");
    let changed = format!("{} tcp 8081{}", &src[..at], &src[at + 9..]);
    let (ir2, _) = cilc::compile_ir(&changed).unwrap();
    let plain2 = text(&ir2, &tree::build::build(&ir2, &opts));
    assert_ne!(plain2, plain);
    let (warm2, stats) = run(&ir2);
    assert_eq!(warm2, plain2);
    // Per family: the merged part, or the trial and one class.
    assert!((1..=4).contains(&stats.built), "{stats:?}");
    assert_eq!(stats.reused + stats.built, subjects);

    // Damaged files: each is built again, nothing else changes.
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    for (i, f) in files.iter().enumerate() {
        let mut b = std::fs::read(f).unwrap();
        match i % 3 {
            0 => b.truncate(b.len() / 2),
            1 => *b.last_mut().unwrap() ^= 0x55,
            _ => b[20] ^= 1,
        }
        std::fs::write(f, b).unwrap();
    }
    let (again, stats) = run(&ir);
    assert_eq!(again, plain);
    assert_eq!(stats.reused, 0, "{stats:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A term's identity tests come before its named port and flags tests,
/// whatever order the atoms were first met in: a packet from another peer
/// then fails on a chain of bit tests (which the table skips in one node).
#[test]
fn peer_tests_come_before_port_and_flags_tests() {
    let src = "select web = app=web\npolicy p on web {\n  ingress {\n    allow tcp named metrics flags syn/syn\n    allow from { app=lb } tcp named metrics flags syn/syn\n    allow from { app=db } tcp named metrics\n  }\n}\n";
    let (ir, _) = cilc::compile_ir(src).unwrap();
    let opts = Options {
        leaf_size: 1,
        ..Options::default()
    };
    let text = tree::dump::forest(&ir, &tree::build::build(&ir, &opts));
    let first = |what: &str| {
        text.lines()
            .position(|l| l.contains(what))
            .unwrap_or_else(|| panic!("no `{what}` in\n{text}"))
    };
    // Every path to r1 and r2 tests the peer, then the port.
    for peer in ["src is {app in (lb)}", "src is {app in (db)}"] {
        let line = &text.lines().nth(first(peer)).unwrap().to_string();
        let yes = line
            .split(" ? ")
            .nth(1)
            .unwrap()
            .split(" : ")
            .next()
            .unwrap();
        let next = text
            .lines()
            .find(|l| l.starts_with(&format!("{yes}: ")))
            .unwrap();
        assert!(next.contains("named metrics"), "{line} → {next}\n{text}");
    }
}
