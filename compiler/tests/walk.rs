//! The table strategy walked in user space (`codegen::walk`, node for node
//! as `cilc_walk` in the kernel) against the reference evaluator: the
//! semantic cases and generated policies, with their own packets and
//! random ones, must get the same deciding rule and reason. No kernel is
//! needed: this is the table's second oracle (tests/kernel.rs walks the
//! same tables in the kernel; `cilc bench` checks the two agree).

use std::path::Path;

use cilc::codegen::{self, table, walk, Strategy};
use cilc::eval::{cases, evaluate, frame::tcp_word, packet::parse_packet, Fragment, Packet};
use cilc::kernel::ends;
use runtime_loader::identity::selectors;
use runtime_loader::manifest::Reason;

/// Walk each packet through `src`'s table; the packets whose rule or
/// reason differs from the evaluator's, how many were walked, and the
/// nodes those walks visited.
fn disagreements(src: &str, packets: &[Packet]) -> (Vec<String>, usize, u64) {
    let (ir, _) = cilc::compile_ir(src).unwrap();
    let out = codegen::compile(&ir, src, &codegen::Options::new(Strategy::Table))
        .unwrap_or_else(|d| panic!("{:?}", d.first().map(|d| &d.message)));
    let nodes = table::decode(runtime_loader::table::nodes(&out.object, &out.manifest).unwrap());
    let sel = selectors(&out.manifest);
    let mut wrong = Vec::new();
    let (mut walked, mut visits) = (0, 0);
    for p in packets {
        // What the kernel's walk sees: no L7 request (the proxy judges
        // it), a TCP word with its data offset (as the frame carries it).
        if p.malformed || p.fragment == Fragment::Later || p.l7.is_some() {
            continue;
        }
        let mut p = p.clone();
        if p.proto == 6 {
            p.tcp_flags = tcp_word(p.tcp_flags);
        }
        let p = &p;
        // One address, two identities: no map says both.
        let Ok((sb, db)) = ends(&out.manifest, &sel, p, false) else {
            continue;
        };
        let w = walk::walk(&nodes, &walk::Input::new(p, sb, db)).unwrap();
        visits += u64::from(w.visits);
        let (rule, reason) = (
            (w.code >> 4).checked_sub(1),
            Reason::from_code(w.code & 0xf),
        );
        let want = evaluate(&ir, p);
        if rule != want.rule || reason.as_str() != want.reason.as_str() {
            wrong.push(format!(
                "{p}: walk rule {rule:?} ({}), evaluator rule {:?} ({})",
                reason.as_str(),
                want.rule,
                want.reason.as_str()
            ));
        }
        walked += 1;
    }
    (wrong, walked, visits)
}

#[test]
fn semantic_cases_walked_in_user_space() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/semantics");
    let mut walked = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        let file = cases::parse_case_file(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let packets: Vec<Packet> = file.cases.iter().map(|c| c.packet.clone()).collect();
        let (wrong, n, _) = disagreements(&file.policy, &packets);
        assert!(
            wrong.is_empty(),
            "{}:\n{}",
            path.display(),
            wrong.join("\n")
        );
        walked += n;
    }
    assert!(walked > 100, "only {walked} packets walked");
}

#[test]
fn generated_policies_walked_in_user_space() {
    let mut walked = 0;
    for (seed, rules) in [(1, 20), (2, 60), (3, 150), (4, 400), (5, 1000), (6, 2500)] {
        let src = cilc::gen::policy(seed, rules);
        // Its own packets (its pods, host and peers), and packets from
        // anywhere to anywhere.
        let mut lines: Vec<String> = cilc::gen::packets(seed, rules, 300)
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(str::to_string)
            .collect();
        let mut r = cilc::gen::Rng::new(seed);
        for _ in 0..300 {
            let v4 = |x: u64| std::net::Ipv4Addr::from(x as u32).to_string();
            let (a, b) = (r.next_u64(), r.next_u64());
            let (src, dst) = match r.below(2) {
                0 => (v4(0x0a00_0000 | (a & 0xff_ffff)), v4(b)),
                _ => (v4(a), v4(0x0a00_0000 | (b & 0xff_ffff))),
            };
            let dir = *r.pick(&["ingress", "egress"]);
            let local = *r.pick(&[
                "host",
                "app=app0,tier=frontend@ns-1",
                "app=app2,tier=web@ns-2",
            ]);
            let l4 = match r.below(3) {
                0 => format!("tcp {} {}", r.below(65536), r.below(65536)),
                1 => format!("udp {} {}", r.below(65536), r.below(2048)),
                _ => "icmp 8 0".to_string(),
            };
            lines.push(format!(
                "{dir} local {local} peer world {src} -> {dst} {l4}"
            ));
        }
        let packets: Vec<Packet> = lines.iter().map(|l| parse_packet(l).unwrap()).collect();
        let (wrong, n, v) = disagreements(&src, &packets);
        // Its own packets walk its parts: every walk visits some node.
        assert!(v >= n as u64, "seed {seed}: {v} nodes over {n} walks");
        assert!(
            wrong.is_empty(),
            "seed {seed}, {rules} rules: {} of {n} wrong:\n{}",
            wrong.len(),
            wrong[..wrong.len().min(10)].join("\n")
        );
        walked += n;
    }
    assert!(walked > 3000, "only {walked} packets walked");
}
