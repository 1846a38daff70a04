//! Compiled objects in this kernel: every semantic case, the ClassBench
//! traces and generated policies with random packets get the verdict,
//! reason and deciding rule of the reference evaluator, from the loaded
//! program (BPF_PROG_TEST_RUN), for every strategy; a damaged table drops.
//!
//! These tests load BPF programs: they need root (CI runs as root) and fail,
//! not skip, without it.

use std::path::{Path, PathBuf};

use cilc::codegen::{compile, Options, Strategy};
use cilc::eval::{cases, evaluate, packet::parse_packet, Packet};
use cilc::kernel::{Judged, Runner};
use proptest::prelude::*;
use runtime_loader::{Artifact, Loaded};

mod common;
use common::random_line;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn load(src: &str, strategy: Strategy) -> (cilc::ir::Validated, Runner) {
    let (ir, _) = cilc::compile_ir(src).unwrap();
    let out = compile(&ir, src, &Options::new(strategy)).unwrap_or_else(|d| panic!("{d:?}"));
    let art = Artifact::from_bytes(out.object).unwrap();
    let loaded = Loaded::load(&art).unwrap_or_else(|e| panic!("{e}"));
    (ir, Runner::new(loaded))
}

/// The kernel's answer in the evaluator's words: (verdict, rule, reason).
fn words(r: &Runner, j: &Judged) -> (String, Option<String>, String) {
    (
        format!("{:?}", j.verdict).to_lowercase(),
        j.rule
            .map(|id| r.obj.manifest.rules[id as usize].name.clone()),
        j.reason.as_str().to_string(),
    )
}

fn expected(ir: &cilc::ir::Validated, p: &Packet) -> (String, Option<String>, String) {
    let d = evaluate(ir, p);
    (
        format!("{:?}", d.verdict).to_lowercase(),
        d.rule.map(|id| ir.rules[id as usize].name.clone()),
        d.reason.as_str().to_string(),
    )
}

/// The packet as a frame carries it: a TCP word of data offset and flags
/// always has a data offset (5 when the packet line leaves it 0).
fn on_wire(p: &Packet) -> Packet {
    let mut q = p.clone();
    if q.proto == 6 && q.tcp_flags >> 12 == 0 {
        q.tcp_flags |= 0x5000;
    }
    q
}

/// L7 requests are judged by the proxy, not in BPF: the kernel sees the
/// L3/L4 packet only.
fn kernel_can_judge(p: &Packet) -> bool {
    p.l7.is_none()
}

#[test]
fn semantic_cases_on_the_kernel() {
    let mut n = 0;
    for e in std::fs::read_dir(root().join("tests/semantics")).unwrap() {
        let path = e.unwrap().path();
        let file = cases::parse_case_file(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for strategy in [Strategy::Tree, Strategy::Linear, Strategy::Table] {
            let (ir, mut r) = load(&file.policy, strategy);
            let mut failures = Vec::new();
            for c in file.cases.iter().filter(|c| kernel_can_judge(&c.packet)) {
                let wire = on_wire(&c.packet);
                let j = r
                    .judge(&wire, false, 1)
                    .unwrap_or_else(|e| panic!("{}: {e}", c.packet));
                let got = words(&r, &j);
                // The case's expectation, or the evaluator's for the packet
                // as the wire carries it when that differs.
                let want = if wire == c.packet {
                    (c.verdict.clone(), c.rule.clone(), c.reason.clone())
                } else {
                    expected(&ir, &wire)
                };
                if got != want {
                    failures.push(format!(
                        "line {}: {}\n  expected {want:?}\n  got      {got:?}",
                        c.line, c.packet
                    ));
                }
                n += 1;
            }
            assert!(
                failures.is_empty(),
                "{} ({strategy:?}):\n{}",
                path.display(),
                failures.join("\n")
            );
        }
    }
    assert!(n > 200, "only {n} packets judged");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, .. ProptestConfig::default() })]

    /// Generated policies (both models, IPv4 and IPv6, selectors, named
    /// ports, flags) × random packets: the loaded program decides as the
    /// evaluator does, in both strategies.
    #[test]
    fn generated_policies_on_the_kernel(
        seed in any::<u64>(),
        rules in 1usize..40,
        pkts in proptest::collection::vec((any::<bool>(), 0usize..6, any::<u32>(), any::<u32>(), 0usize..4, any::<u16>(), any::<u16>(), 0usize..6), 200),
    ) {
        let src = cilc::gen::policy(seed, rules);
        for strategy in [Strategy::Tree, Strategy::Linear, Strategy::Table] {
            let (ir, mut r) = load(&src, strategy);
            for p in &pkts {
                let p = on_wire(&parse_packet(&random_line(*p)).unwrap());
                let Ok(j) = r.judge(&p, false, 1) else { continue };
                prop_assert_eq!(words(&r, &j), expected(&ir, &p), "{} ({:?})", p, strategy);
            }
        }
    }
}

/// A ClassBench set compiled and loaded: every trace packet's deciding
/// rule is the expected first match (from the truth file, 0-based, or the
/// trace's own exact last column).
fn classbench(filters: &str, trace: &str, truth: Option<&str>, strategy: Strategy) {
    let Some(dir) = common::shared() else { return };
    let read = |p: &str| std::fs::read_to_string(dir.join(p)).unwrap();
    let set = cilc::classbench::parse_filters(&read(filters)).unwrap();
    let src = cilc::classbench::to_cpl(&set, "cb", filters).unwrap();
    let (_, mut r) = load(&src, strategy);
    r.local_wins = true;
    let lines = cilc::classbench::parse_trace(&read(trace)).unwrap();
    let truth = truth.map(|t| cilc::classbench::parse_truth(&read(t)).unwrap());
    let mut wrong = Vec::new();
    for (i, t) in lines.iter().enumerate() {
        let want = truth.as_ref().map_or(t.last, |x| x[i] + 1);
        let j = r.judge(&cilc::classbench::packet(t), false, 1).unwrap();
        let got = j
            .rule
            .and_then(|id| cilc::classbench::filter_line(&r.obj.manifest.rules[id as usize].name));
        if got != Some(want) {
            wrong.push((i, want, got));
        }
    }
    assert!(
        wrong.is_empty(),
        "{filters} ({strategy:?}): {} of {} wrong, first {:?}",
        wrong.len(),
        lines.len(),
        &wrong[..wrong.len().min(5)]
    );
}

/// A lyxocs set with its derived truth, both strategies.
fn lyxocs(set: &str) {
    for strategy in [Strategy::Tree, Strategy::Linear, Strategy::Table] {
        classbench(
            &format!("lyxocs_ruleSet/{set}"),
            &format!("lyxocs_ruleSet/{set}_trace"),
            Some(&format!("lyxocs_ruleSet/derived/{set}_trace.first_match0")),
            strategy,
        );
    }
}

/// A wustl set, whose trace carries the exact first match, both strategies.
fn wustl(set: &str) {
    for strategy in [Strategy::Tree, Strategy::Linear, Strategy::Table] {
        classbench(
            &format!("wustl_hs1/{set}"),
            &format!("wustl_hs1/{set}_trace"),
            None,
            strategy,
        );
    }
}

#[test]
fn classbench_acl1_1k_on_the_kernel() {
    lyxocs("acl1_1k");
}

#[test]
fn classbench_fw1_1k_on_the_kernel() {
    lyxocs("fw1_1k");
}

#[test]
fn classbench_ipc1_1k_on_the_kernel() {
    lyxocs("ipc1_1k");
}

#[test]
fn classbench_wustl_1k_on_the_kernel() {
    for set in ["acl1_1K", "fw1_1K", "ipc1_1K"] {
        wustl(set);
    }
}

#[test]
fn classbench_fw1_10k_on_the_kernel() {
    lyxocs("fw1_10k");
}

#[test]
fn classbench_ipc1_10k_on_the_kernel() {
    lyxocs("ipc1_10k");
}

#[test]
fn objects_are_reproducible_and_carry_their_manifest() {
    let src = std::fs::read_to_string(root().join("examples/three-tier.cpl")).unwrap();
    let (ir, _) = cilc::compile_ir(&src).unwrap();
    let a = compile(&ir, &src, &Options::new(Strategy::Tree)).unwrap();
    let b = compile(&ir, &src, &Options::new(Strategy::Tree)).unwrap();
    // The programs and the manifest are byte-identical within one process
    // too. (The order of types in .BTF can differ between two compiles in
    // one process: LLVM 19 orders BTF by heap addresses. Two runs of the
    // binary give identical files: tests/cli.rs.)
    let section = |o: &[u8], name: &str| -> Vec<u8> {
        use object::{Object as _, ObjectSection as _};
        let f = object::File::parse(o).unwrap();
        f.section_by_name(name).unwrap().data().unwrap().to_vec()
    };
    for name in [".text", "xdp", "tc", ".maps", "license"] {
        assert!(
            section(&a.object, name) == section(&b.object, name),
            "section {name} differs"
        );
    }
    // The manifest too, but for the sealed hash of the whole object (which
    // covers .BTF).
    let (ma, mb) = (
        runtime_loader::read_manifest(&a.object).unwrap(),
        runtime_loader::read_manifest(&b.object).unwrap(),
    );
    assert_eq!(
        runtime_loader::manifest::Manifest {
            object_sha256: String::new(),
            ..ma.clone()
        },
        runtime_loader::manifest::Manifest {
            object_sha256: String::new(),
            ..mb
        }
    );
    // The seal holds, and is the hash the loader computes.
    let sealed = runtime_loader::manifest::check_seal(&a.object).unwrap();
    assert_eq!(ma.object_sha256, sealed);
    let m = ma;
    assert_eq!(
        m,
        runtime_loader::manifest::Manifest {
            object_sha256: sealed,
            ..a.manifest.clone()
        }
    );
    assert_eq!(m.rules.len(), ir.rules.len());
    assert_eq!(m.rules[0].line, 25, "{:?}", m.rules[0]);
    assert!(
        m.rules[0].text.starts_with("allow from world"),
        "{:?}",
        m.rules[0]
    );
    let names: Vec<&str> = m.programs.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "cilc_xdp",
            "cilc_tc_ingress",
            "cilc_tc_egress",
            "cilc_tc_ingress_snat",
            "cilc_tc_egress_snat"
        ]
    );
    // `Loaded::load` leaves the translating programs out (a node loads
    // them when an interface source-NATs).
    let loaded = Loaded::load(&Artifact::from_bytes(a.object.clone()).unwrap()).unwrap();
    assert_eq!(
        loaded.loaded_programs(),
        ["cilc_xdp", "cilc_tc_ingress", "cilc_tc_egress"]
    );
    // A corrupted manifest is refused before anything is loaded.
    let mut bad = a.object.clone();
    let at = bad.windows(8).position(|w| w == b"\"layout\"").unwrap();
    bad[at + 9] = b'x';
    assert!(Artifact::from_bytes(bad).is_err());
}

#[test]
fn malformed_fragments_and_non_ip_frames() {
    let src = "chain c on host ingress {\n  accept tcp 80\n  drop\n}\n";
    let (ir, mut r) = load(src, Strategy::Tree);
    let base = "ingress 192.0.2.1 -> 10.0.0.1 tcp 9 80";
    for line in [
        base.to_string(),
        format!("{base} malformed"),
        format!("{base} frag first"),
        format!("{base} frag later"),
        "ingress 2001:db8::1 -> 2001:db8::2 tcp 9 80 frag later".to_string(),
        "ingress 2001:db8::1 -> 2001:db8::2 tcp 9 80 malformed".to_string(),
    ] {
        let p = on_wire(&parse_packet(&line).unwrap());
        let j = r.judge(&p, false, 1).unwrap();
        assert_eq!(words(&r, &j), expected(&ir, &p), "{line}");
    }
    // Every cut of a TCP frame inside its IP or TCP header is malformed and
    // dropped; none passes as a TCP packet.
    let frame = cilc::eval::frame::frame(&parse_packet(base).unwrap());
    // (BPF_PROG_TEST_RUN wants at least an Ethernet header.)
    for cut in 14..frame.len() {
        let run = r.obj.run("cilc_xdp", &frame[..cut], 1).unwrap();
        assert_eq!(run.reason.as_str(), "malformed", "cut at {cut}");
        assert_eq!(run.retval, 1, "cut at {cut}: XDP_DROP");
    }
}

#[test]
fn bench_times_every_strategy_and_checks_its_verdicts() {
    let src = std::fs::read_to_string(root().join("examples/three-tier.cpl")).unwrap();
    let lines = std::fs::read_to_string(root().join("examples/three-tier.packets")).unwrap();
    let packets: Vec<Packet> = lines
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| parse_packet(l).unwrap())
        .collect();
    assert!(packets.len() >= 10);
    let (ir, _) = cilc::compile_ir(&src).unwrap();
    let opts = cilc::bench::Options {
        strategies: vec![
            Strategy::ParseOnly,
            Strategy::Linear,
            Strategy::Tree,
            Strategy::Table,
        ],
        repeat: 50,
        tc: false,
        local_wins: false,
        conntrack: true,
    };
    let r = cilc::bench::run(&ir, &src, &packets, &opts).unwrap();
    // Conntrack's rows: every reply of an allowed flow passed as ct-reply.
    let ct = r.conntrack.as_ref().expect("conntrack timed");
    assert!(
        ct.packets > 0 && ct.reply_ns > 0.0 && ct.policy_ns > 0.0,
        "{ct:?}"
    );
    assert!(
        r.table().contains("reply (conntrack fast path)"),
        "{}",
        r.table()
    );
    let names: Vec<&str> = r.rows.iter().map(|x| x.strategy).collect();
    assert_eq!(names, ["parse-only", "linear", "tree", "table"]);
    // (The table's packets are walked in user space too: its wrong
    // counts that walk's disagreements with the evaluator as well.)
    assert_eq!(r.wrong(), 0, "{}", r.table());
    for row in &r.rows {
        assert!(row.ns_per_packet > 0.0, "{row:?}");
        assert!(row.instructions > 0, "{row:?}");
        // Nodes walked: the table's figure, no one else's.
        match row.strategy {
            "table" => assert!(row.nodes_per_packet.is_some_and(|n| n >= 1.0), "{row:?}"),
            _ => assert_eq!(row.nodes_per_packet, None, "{row:?}"),
        }
    }
    // Parse-only decides nothing, so it is the smallest program.
    assert!(
        r.rows[0].instructions < r.rows[2].instructions,
        "{}",
        r.table()
    );
    assert!(r.table().contains("/parse-only"), "{}", r.table());
    // And it answers "no policy" for every IP packet.
    let (_, mut floor) = load(&src, Strategy::ParseOnly);
    for p in &packets {
        let j = floor.judge(p, false, 1).unwrap();
        assert_eq!(j.reason.as_str(), "no-policy", "{p}");
        assert_eq!(j.rule, None, "{p}");
    }
}

#[test]
fn bench_sample_spreads_over_the_input() {
    let items: Vec<u32> = (0..1000).collect();
    assert_eq!(cilc::bench::sample(&items, 4), [0, 250, 500, 750]);
    assert_eq!(cilc::bench::sample(&items[..3], 4), [0, 1, 2]);
}

#[test]
fn run_judges_a_capture_frame_by_frame() {
    use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
    let root = root();
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("cilc-pcap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = std::fs::read_to_string(root.join("examples/three-tier.cpl")).unwrap();
    let (ir, _) = cilc::compile_ir(&src).unwrap();
    let lines = std::fs::read_to_string(root.join("examples/three-tier.packets")).unwrap();
    // Ingress packets of the example whose addresses have one identity
    // each (a capture cannot say more).
    let mut packets: Vec<Packet> = Vec::new();
    let mut ids: std::collections::HashMap<std::net::IpAddr, String> = Default::default();
    for l in lines.lines().filter(|l| l.starts_with("ingress")) {
        let p = parse_packet(l).unwrap();
        let mine = [(p.dst, p.local.to_string()), (p.src, p.peer.to_string())];
        if mine
            .iter()
            .all(|(a, i)| ids.get(a).is_none_or(|known| known == i))
        {
            for (a, i) in mine {
                ids.insert(a, i);
            }
            packets.push(p);
        }
    }
    assert!(packets.len() >= 5, "{packets:?}");
    let pcap = dir.join("t.pcap");
    let mut w =
        PcapWriter::with_header(std::fs::File::create(&pcap).unwrap(), PcapHeader::default())
            .unwrap();
    for p in &packets {
        let f = cilc::eval::frame::frame(p);
        w.write_packet(&PcapPacket::new(
            std::time::Duration::ZERO,
            f.len() as u32,
            &f,
        ))
        .unwrap();
    }
    drop(w);
    let out = compile(&ir, &src, &Options::new(Strategy::Tree)).unwrap();
    let object = dir.join("t.o");
    std::fs::write(&object, &out.object).unwrap();
    let mut args = vec![
        "run".to_string(),
        object.display().to_string(),
        "--pcap".into(),
        pcap.display().to_string(),
    ];
    for (a, i) in &ids {
        if i != "world" {
            args.push("--identity".into());
            args.push(format!("{a}={i}"));
        }
    }
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_cilc"))
        .args(&args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let got: Vec<&str> = text.lines().collect();
    assert_eq!(got.len(), packets.len(), "{text}");
    for (p, line) in packets.iter().zip(got) {
        let d = evaluate(&ir, p);
        let verdict = if d.reason.as_str().contains("allow")
            || matches!(d.reason.as_str(), "no-policy" | "chain-accept")
        {
            "ALLOW"
        } else {
            "DROP"
        };
        let rule = d
            .rule
            .map(|r| format!(" by {} ", ir.rules[r as usize].name))
            .unwrap_or_default();
        assert!(
            line.contains(&format!(": {verdict} ({})", d.reason.as_str())) && line.contains(&rule),
            "{p}: evaluator {verdict} {} {rule}, kernel: {line}",
            d.reason.as_str()
        );
    }
    // A capture that is not Ethernet is refused with a hint.
    let raw = dir.join("raw.pcap");
    let header = PcapHeader {
        datalink: pcap_file::DataLink::RAW,
        ..PcapHeader::default()
    };
    drop(PcapWriter::with_header(std::fs::File::create(&raw).unwrap(), header).unwrap());
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_cilc"))
        .args([
            "run",
            object.to_str().unwrap(),
            "--pcap",
            raw.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not Ethernet"));
}

#[test]
fn conntrack_lets_no_icmp_pass_as_a_reply_but_echo_replies() {
    // Egress may send any ICMP to the world; ingress takes only TCP 80.
    let src = "select server = app=server\n\
        policy p on server { ingress { allow from world tcp 80 } egress { allow to world icmp } }";
    let (_, mut r) = load(src, Strategy::Tree);
    r.obj
        .configure(&runtime_loader::conntrack::Settings::default())
        .unwrap();
    let mut judge = |line: &str| {
        let p = parse_packet(line).unwrap();
        r.judge(&p, false, 1).unwrap().reason.as_str().to_string()
    };
    let out = "egress local app=server peer world 10.0.0.2 -> 192.0.2.1";
    let back = "ingress local app=server peer world 192.0.2.1 -> 10.0.0.2";
    // An unreachable sent out opens no flow: a redirect coming back is
    // judged by policy.
    assert_eq!(judge(&format!("{out} icmp 3 3")), "matched-allow");
    assert_eq!(judge(&format!("{back} icmp 5 0")), "default-deny");
    // An echo request opens one: its reply passes, a request does not.
    assert_eq!(judge(&format!("{out} icmp 8 0")), "matched-allow");
    assert_eq!(judge(&format!("{back} icmp 0 0")), "ct-reply");
    assert_eq!(judge(&format!("{back} icmp 8 0")), "default-deny");
    // A TCP reset opens nothing; a SYN's flow answers.
    assert_eq!(
        judge(&format!("{back} tcp 40000 81 flags rst")),
        "default-deny"
    );
    assert_eq!(
        judge(&format!("{back} tcp 40000 80 flags syn")),
        "matched-allow"
    );
    assert_eq!(
        judge(&format!("{out} tcp 80 40000 flags syn|ack")),
        "ct-reply"
    );
}

/// Issue 8's scale check, self-contained: a generated policy of 100,000
/// rules (both models, IPv4 and IPv6, selectors, CIDRs, named ports,
/// chains) is too large for code, so `auto` picks the table strategy; it
/// compiles, loads, and 2,000 random packets get the evaluator's verdict,
/// rule and reason from the kernel.
#[test]
fn a_100k_rule_policy_in_the_table_strategy_matches_the_evaluator() {
    let src = cilc::gen::policy(11, 100_000);
    let (ir, _) = cilc::compile_ir(&src).unwrap();
    let out = compile(&ir, &src, &Options::new(Strategy::Auto)).unwrap_or_else(|d| panic!("{d:?}"));
    assert_eq!(out.manifest.strategy, "table", "{:?}", out.manifest.choice);
    assert!(out
        .manifest
        .choice
        .as_deref()
        .is_some_and(|c| c.contains("beyond")));
    let art = Artifact::from_bytes(out.object).unwrap();
    let mut r = Runner::new(Loaded::load(&art).unwrap_or_else(|e| panic!("{e}")));
    let mut rng = cilc::gen::Rng::new(5);
    let mut judged = 0;
    let mut decided = 0;
    for _ in 0..2000 {
        let mut n = || rng.next_u64();
        let pick = (
            n() % 2 == 0,
            (n() % 6) as usize,
            n() as u32,
            n() as u32,
            (n() % 4) as usize,
            n() as u16,
            n() as u16,
            (n() % 6) as usize,
        );
        let p = on_wire(&parse_packet(&random_line(pick)).unwrap());
        let Ok(j) = r.judge(&p, false, 1) else {
            continue;
        };
        let got = words(&r, &j);
        assert_eq!(got, expected(&ir, &p), "{p}");
        judged += 1;
        decided += usize::from(got.1.is_some());
    }
    assert!(judged > 1900, "only {judged} packets judged");
    assert!(decided > 100, "only {decided} packets decided by a rule");
}

/// The table strategy's jump nodes (docs/backend.md): a chain of many
/// prefixes and port ranges on a few fields (IPv4, and IPv6 cuts in the
/// high half) becomes a table with jumps on those fields, and packets
/// around every prefix and port get the evaluator's decision from the
/// kernel.
#[test]
fn table_jumps_and_two_level_splits_decide_as_the_evaluator() {
    let mut src = String::from("chain edge on host ingress {\n");
    for i in 0..250u32 {
        let act = if i % 3 == 0 { "drop" } else { "accept" };
        let p = 1000 + i * 8;
        src += &format!(
            "  {act} from 10.{}.{}.0/22 tcp {p}-{}\n",
            i / 64,
            (i % 64) * 4,
            p + 3
        );
    }
    for i in 0..100u32 {
        let act = if i % 2 == 1 { "drop" } else { "accept" };
        src += &format!("  {act} from fd00:{:x}::/32 udp {}\n", i * 3, 2000 + i);
    }
    for i in 0..64u32 {
        src += &format!("  drop to 192.168.{}.0/22\n", i * 4);
    }
    src += "  accept tcp 8000-8099\n  drop\n}\n";
    let (ir, _) = cilc::compile_ir(&src).unwrap();
    let out = compile(&ir, &src, &Options::new(Strategy::Table)).unwrap();
    // The table holds jumps on the source and destination addresses, and
    // two-level splits (cilc.h `CILC_T_SPLIT2`: fields in the kind's next
    // byte, three bits each) that test the destination port.
    let file = object::File::parse(&*out.object).unwrap();
    let section =
        object::Object::section_by_name(&file, runtime_loader::manifest::TABLE_SECTION).unwrap();
    let data = object::ObjectSection::data(&section).unwrap();
    let count = |kind: u8, on: &dyn Fn(u8) -> bool| {
        data.chunks(32).filter(|n| n[0] == kind && on(n[1])).count()
    };
    for field in [0, 1] {
        assert!(count(8, &|f| f == field) > 0, "no jump on field {field}");
    }
    assert!(
        count(10, &|f| f & 7 == 4 || f >> 3 == 4) > 0,
        "no two-level split on the port"
    );
    let art = Artifact::from_bytes(out.object).unwrap();
    let mut r = Runner::new(Loaded::load(&art).unwrap_or_else(|e| panic!("{e}")));
    let mut rng = cilc::gen::Rng::new(3);
    let mut n = 0;
    for _ in 0..3000 {
        let x = rng.next_u64();
        let b = (x >> 8) as u32;
        let sport = (x >> 40) as u16;
        let dport = 990 + (x >> 48) as u32 % 2100;
        let dst = if x & 4 == 0 {
            format!("192.168.{}.{}", b % 256, b >> 24)
        } else {
            "198.51.100.7".into()
        };
        let line = match x % 4 {
            0 | 1 => format!(
                "ingress local host peer world 10.{}.{}.{} -> {dst} tcp {sport} {dport}",
                b % 5,
                (b >> 8) % 256,
                b >> 24
            ),
            2 => format!(
                "ingress local host peer world fd00:{:x}:{:x}::1 -> fd01::2 udp {sport} {}",
                b % 320,
                b >> 16,
                1990 + dport % 120
            ),
            _ => format!(
                "ingress local host peer world 203.0.113.{} -> {dst} tcp {sport} {}",
                b % 256,
                7990 + dport % 120
            ),
        };
        let p = on_wire(&parse_packet(&line).unwrap());
        let j = r
            .judge(&p, false, 1)
            .unwrap_or_else(|e| panic!("{line}: {e}"));
        assert_eq!(words(&r, &j), expected(&ir, &p), "{line}");
        n += 1;
    }
    assert_eq!(n, 3000);
}

/// Guard dispatch and `ANY` chains (docs/backend.md): 80 subjects (their
/// bits span two words), each with parts of different widths and runs of
/// rules from peer selectors (chains of bit tests over both words), and
/// endpoints and peers that are several of them at once; in the table
/// strategy 3,000 random packets get the evaluator's verdict, rule and
/// reason from the kernel.
#[test]
fn table_dispatch_over_many_subjects_decides_as_the_evaluator() {
    let mut src = String::new();
    for k in 0..80 {
        src += &format!("select s{k} = k{k}=on\n");
    }
    for k in 0..80u32 {
        let peers: String = (0..8)
            .map(|j| format!("    deny from s{}\n", (k * 7 + j * 11) % 80))
            .collect();
        src += &format!(
            "policy p{k} on s{k} {{\n  ingress {{\n    allow from world tcp {}\n    \
             deny from 10.{k}.0.0/16 tcp 1000-1100\n    allow from 10.0.0.0/8 udp {}\n{peers}  }}\n  \
             egress {{\n    allow to 10.{k}.{k}.0/24\n    allow to world tcp {}\n  }}\n}}\n",
            1000 + k,
            2000 + k % 7,
            443 + k % 3,
        );
    }
    src += "policy node on host {\n  ingress {\n    allow from world tcp 22\n  }\n}\n";
    let (ir, mut r) = load(&src, Strategy::Table);
    let mut rng = cilc::gen::Rng::new(17);
    let (mut judged, mut allowed) = (0, 0);
    for _ in 0..3000 {
        let mut n = || rng.next_u64();
        let labels: Vec<String> = (0..n() % 5).map(|_| format!("k{}=on", n() % 80)).collect();
        let local = if labels.is_empty() {
            ["host", "app=none@x"][(n() % 2) as usize].to_string()
        } else {
            format!("{}@ns", labels.join(","))
        };
        // The peer is the world, at an address of some subject's CIDRs
        // half of the time.
        let k = n() % 80;
        let peer = match n() % 3 {
            0 => "203.0.113.9".to_string(),
            1 => format!("10.{k}.{}.9", n() % 80),
            _ => format!("10.{k}.{k}.9"),
        };
        let (proto, port) = match n() % 4 {
            0 => ("tcp", 995 + n() % 90),
            1 => ("udp", 2000 + n() % 8),
            2 => ("tcp", 3000 + n() % 4),
            _ => ("tcp", [22, 443, 444, 445][(n() % 4) as usize]),
        };
        // The peer's identity: the world, or a pod of none, one or
        // several subjects.
        let who = match n() % 3 {
            0 => "world".to_string(),
            _ => {
                let l: Vec<String> = (0..n() % 4).map(|_| format!("k{}=on", n() % 80)).collect();
                format!(
                    "{}@ns",
                    if l.is_empty() {
                        "app=x".into()
                    } else {
                        l.join(",")
                    }
                )
            }
        };
        let line = if n() % 2 == 0 {
            format!("ingress local {local} peer {who} {peer} -> 10.0.0.5 {proto} 40000 {port}")
        } else {
            format!("egress local {local} peer {who} 10.0.0.5 -> {peer} {proto} 40000 {port}")
        };
        let p = on_wire(&parse_packet(&line).unwrap_or_else(|e| panic!("{line}: {e:?}")));
        let Ok(j) = r.judge(&p, false, 1) else {
            continue;
        };
        let got = words(&r, &j);
        assert_eq!(got, expected(&ir, &p), "{line}");
        judged += 1;
        allowed += usize::from(got.0 == "allow");
    }
    assert!(judged > 2900, "only {judged} packets judged");
    assert!(
        allowed > 200 && allowed < judged - 200,
        "{allowed} of {judged} allowed"
    );
}

/// A damaged table fails closed, in the kernel and in the user-space walk:
/// a root that loops on itself (the walk ends when the kernel's budget for
/// its `may_goto` loop is spent), a node of no known kind, a child past the
/// map. Each is swapped in as `replace` swaps a table; the packet is then
/// dropped as `default-deny`, and the good table back decides as before.
#[test]
fn a_damaged_table_drops_the_packet() {
    use cilc::codegen::{table, walk};
    let src = "chain edge on host ingress {\n  accept from 10.0.0.0/8 tcp 80\n  drop\n}\n";
    let (ir, _) = cilc::compile_ir(src).unwrap();
    let out = compile(&ir, src, &Options::new(Strategy::Table)).unwrap();
    let art = Artifact::from_bytes(out.object.clone()).unwrap();
    let good = runtime_loader::table::nodes(&out.object, &art.manifest)
        .unwrap()
        .to_vec();
    let mut r = Runner::new(Loaded::load(&art).unwrap_or_else(|e| panic!("{e}")));
    let p = on_wire(
        &parse_packet("ingress local host peer world 10.1.2.3 -> 192.0.2.1 tcp 1234 80").unwrap(),
    );
    let (sb, db) = r.ends(&p).unwrap();
    let input = walk::Input::new(&p, sb, db);
    let install = |r: &Runner, nodes: &[u8]| {
        let outer = r.obj.map_handle("cilc_table").unwrap();
        let capacity = runtime_loader::table::capacity((nodes.len() / table::NODE) as u32);
        let inner = runtime_loader::table::create(capacity, nodes).unwrap();
        runtime_loader::table::install(&outer, &inner).unwrap();
    };
    let accepted = expected(&ir, &p);
    assert_eq!(accepted.0, "allow", "{accepted:?}");
    let j = r.judge(&p, false, 1).unwrap();
    assert_eq!(words(&r, &j), accepted);

    // The ingress IPv4 head (node 1) leads to its first entry (kind 2),
    // whose `a` is the part's root.
    let nodes = table::decode(&good);
    let entry = nodes[1].a as usize;
    assert_eq!(nodes[entry].kind, 2, "node {entry} is no entry");
    let root = nodes[entry].a;
    // Splits (kind 3) on the protocol with a cut of 0: no value is below
    // it, so the walk goes to `b`.
    let split = |to: u32| table::TNode {
        kind: 3,
        field: 2,
        a: to,
        b: to,
        ..Default::default()
    };
    let unknown = table::TNode {
        kind: 99,
        ..Default::default()
    };
    for (what, damage) in [
        ("loops", split(root)),
        ("unknown kind", unknown),
        ("child past the map", split(u32::MAX)),
    ] {
        let mut bad = good.clone();
        let at = root as usize * table::NODE;
        bad[at..at + table::NODE].copy_from_slice(&damage.bytes());
        install(&r, &bad);
        let j = r.judge(&p, false, 1).unwrap();
        assert_eq!(
            words(&r, &j),
            ("drop".to_string(), None, "default-deny".to_string()),
            "a root that {what}"
        );
        let walked = walk::walk(&table::decode(&bad), &input);
        assert!(
            walked.is_err(),
            "the user-space walk of a root that {what}: {walked:?}"
        );
    }
    install(&r, &good);
    let j = r.judge(&p, false, 1).unwrap();
    assert_eq!(words(&r, &j), accepted);
}
