//! `cilc bench`: one policy compiled by several strategies, each loaded and
//! timed per packet in the kernel.
//!
//! Stage: **(`ir::Validated`, packets) → `Report`**. For each strategy the
//! object is compiled (timed) and loaded (timed: the verifier's work); then
//! every sampled packet is run through `BPF_PROG_TEST_RUN` `repeat` times
//! under each strategy in turn; the kernel reports the mean time of one
//! run, and a strategy's figure is the mean over the packets. Every judged packet is also checked against
//! the reference evaluator (rule and reason): a fast wrong answer is no
//! answer. Parse-only decides nothing and is not checked. The table
//! strategy's packets are also walked in user space (`codegen::walk`):
//! its decision is checked the same way, and its count of nodes visited
//! is a figure the machine's noise does not move.

use std::time::{Duration, Instant};

use crate::codegen::table::TNode;
use crate::codegen::{self, walk, Strategy};
use crate::eval::{self, Packet};
use crate::ir::Validated;
use crate::kernel::Runner;
use runtime_loader::manifest::Reason;

pub struct Options {
    pub strategies: Vec<Strategy>,
    /// Runs per packet (the kernel's `repeat`).
    pub repeat: u32,
    /// Judge ingress with the TC program instead of XDP.
    pub tc: bool,
    /// See `Runner::local_wins` (ClassBench traces).
    pub local_wins: bool,
    /// Also time connection tracking (`conntrack`).
    pub conntrack: bool,
}

/// One strategy's figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    pub strategy: &'static str,
    pub compile_s: f64,
    pub load_s: f64,
    /// Instructions of the ingress program as loaded (entry and classifier).
    pub instructions: usize,
    pub ns_per_packet: f64,
    /// Nodes a packet visits in the table strategy's walk (counted by the
    /// user-space walk, `codegen::walk`, which must decide as the kernel).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nodes_per_packet: Option<f64>,
    /// Packets whose kernel rule and reason differ from the evaluator's
    /// (or, in the table strategy, whose user-space walk's do).
    pub wrong: usize,
    /// Why the strategy has no figures (it did not compile or load).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub rules: usize,
    pub packets: usize,
    pub repeat: u32,
    pub program: &'static str,
    pub rows: Vec<Row>,
    /// The first few wrong answers, for the reader.
    pub examples: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conntrack: Option<CtReport>,
}

/// Every `len / n`-th packet, at most `n` of them.
pub fn sample<T: Clone>(items: &[T], n: usize) -> Vec<T> {
    if items.len() <= n || n == 0 {
        return items.to_vec();
    }
    (0..n).map(|i| items[i * items.len() / n].clone()).collect()
}

/// One strategy's program, loaded and ready to time.
struct Timed {
    strategy: Strategy,
    compile: Duration,
    load: Duration,
    instructions: usize,
    runner: Runner,
    total: Duration,
    wrong: usize,
    /// The table strategy's nodes, walked in user space too, and the
    /// nodes those walks visited.
    table: Option<Vec<TNode>>,
    visits: u64,
}

/// Compile and load `strategy`'s object: its program, or the row that says
/// why there is none (it does not load). An object that does not compile
/// is an error.
fn prepare(
    ir: &Validated,
    src: &str,
    strategy: Strategy,
    opts: &Options,
) -> Result<Result<Timed, Row>, String> {
    let t = Instant::now();
    let out = codegen::compile(ir, src, &codegen::Options::new(strategy)).map_err(|d| {
        d.first()
            .map_or("cannot compile".into(), |d| d.message.clone())
    })?;
    let compile = t.elapsed();
    let table = match strategy {
        Strategy::Table => Some(codegen::table::decode(
            runtime_loader::table::nodes(&out.object, &out.manifest).map_err(|e| e.to_string())?,
        )),
        _ => None,
    };
    let art = runtime_loader::Artifact::from_bytes(out.object).map_err(|e| e.to_string())?;
    let t = Instant::now();
    let loaded = match runtime_loader::Loaded::load(&art) {
        Ok(l) => l,
        Err(e) => {
            // The verifier's verdict, without its log.
            let why = e.to_string();
            let why = why
                .lines()
                .find(|l| l.contains("too large") || l.contains("too complex"))
                .unwrap_or_else(|| why.lines().next().unwrap_or(""))
                .to_string();
            return Ok(Err(Row {
                strategy: strategy.as_str(),
                compile_s: compile.as_secs_f64(),
                load_s: t.elapsed().as_secs_f64(),
                instructions: 0,
                ns_per_packet: 0.0,
                nodes_per_packet: None,
                wrong: 0,
                failed: Some(format!("does not load: {why}")),
            }));
        }
    };
    let load = t.elapsed();
    let program = crate::kernel::program(crate::resolve::Direction::Ingress, opts.tc);
    let instructions = loaded
        .instructions()
        .into_iter()
        .find(|(name, _)| name == program)
        .map_or(0, |(_, n)| n);
    let mut runner = Runner::new(loaded);
    runner.local_wins = opts.local_wins;
    Ok(Ok(Timed {
        strategy,
        compile,
        load,
        instructions,
        runner,
        total: Duration::ZERO,
        wrong: 0,
        table,
        visits: 0,
    }))
}

/// Does the classifier see this packet (the parser drops malformed
/// packets and later fragments before it)?
fn walked(p: &Packet) -> bool {
    !p.malformed && p.fragment != eval::Fragment::Later
}

pub fn run(
    ir: &Validated,
    src: &str,
    packets: &[Packet],
    opts: &Options,
) -> Result<Report, String> {
    let expected: Vec<eval::Decision> = packets.iter().map(|p| eval::evaluate(ir, p)).collect();
    // Every strategy is compiled and loaded first; then each packet is
    // timed under every strategy in turn (the first one rotating), so that
    // the machine's speed drifting over the run (a shared VM's does, by
    // tens of percent) moves every strategy's figure alike and their
    // ratios stay fair.
    let mut slots: Vec<Result<Timed, Row>> = Vec::new();
    for &strategy in &opts.strategies {
        slots.push(prepare(ir, src, strategy, opts)?);
    }
    let mut examples = Vec::new();
    let mut live: Vec<&mut Timed> = slots.iter_mut().filter_map(|s| s.as_mut().ok()).collect();
    let n = live.len();
    for (k, (p, want)) in packets.iter().zip(&expected).enumerate() {
        for turn in 0..n {
            let t = &mut *live[(k + turn) % n];
            let j = t.runner.judge(p, opts.tc, opts.repeat)?;
            t.total += j.duration;
            let mut answers = vec![("kernel", j.rule, j.reason)];
            if let Some(nodes) = t.table.as_ref().filter(|_| walked(p)) {
                let (src, dst) = t.runner.ends(p)?;
                let w = walk::walk(nodes, &walk::Input::new(p, src, dst))
                    .map_err(|e| format!("{p}: the user-space walk: {e}"))?;
                t.visits += u64::from(w.visits);
                let rule = (w.code >> 4).checked_sub(1);
                answers.push(("user-space walk", rule, Reason::from_code(w.code & 0xf)));
            }
            for (who, rule, reason) in answers {
                if t.strategy != Strategy::ParseOnly
                    && (rule != want.rule || reason.as_str() != want.reason.as_str())
                {
                    t.wrong += 1;
                    if examples.len() < 5 {
                        examples.push(format!(
                            "{}: {p}: {who} rule {:?} ({}), evaluator rule {:?} ({})",
                            t.strategy.as_str(),
                            rule,
                            reason.as_str(),
                            want.rule,
                            want.reason.as_str()
                        ));
                    }
                }
            }
        }
    }
    let rows = slots
        .into_iter()
        .map(|slot| match slot {
            Ok(t) => Row {
                strategy: t.strategy.as_str(),
                compile_s: t.compile.as_secs_f64(),
                load_s: t.load.as_secs_f64(),
                instructions: t.instructions,
                ns_per_packet: t.total.as_nanos() as f64 / packets.len().max(1) as f64,
                nodes_per_packet: t.table.as_ref().map(|_| {
                    t.visits as f64 / packets.iter().filter(|p| walked(p)).count().max(1) as f64
                }),
                wrong: t.wrong,
                failed: None,
            },
            Err(row) => row,
        })
        .collect();
    let conntrack = if opts.conntrack {
        Some(conntrack(ir, src, packets, opts)?)
    } else {
        None
    };
    Ok(Report {
        rules: ir.rules.len(),
        packets: packets.len(),
        repeat: opts.repeat,
        program: crate::kernel::program(crate::resolve::Direction::Ingress, opts.tc),
        rows,
        examples,
        conntrack,
    })
}

impl Report {
    /// The table, with each strategy's time as a multiple of parse-only's
    /// and linear's time as a multiple of each strategy's.
    pub fn table(&self) -> String {
        use std::fmt::Write as _;
        let figure = |name: &str| {
            self.rows
                .iter()
                .find(|r| r.strategy == name && r.failed.is_none())
                .map(|r| r.ns_per_packet)
        };
        let (floor, linear) = (figure("parse-only"), figure("linear"));
        let mut o = String::new();
        let _ = writeln!(
            o,
            "{} rules; {} packets × {} runs each through {}",
            self.rules, self.packets, self.repeat, self.program
        );
        let _ = writeln!(
            o,
            "{:<11} {:>9} {:>8} {:>13} {:>10} {:>12} {:>10} {:>6} {:>6}",
            "strategy",
            "compile",
            "load",
            "instructions",
            "ns/packet",
            "/parse-only",
            "linear/",
            "wrong",
            "nodes"
        );
        for r in &self.rows {
            if let Some(why) = &r.failed {
                let _ = writeln!(
                    o,
                    "{:<11} {:>8.2}s {:>7.2}s  {why}",
                    r.strategy, r.compile_s, r.load_s
                );
                continue;
            }
            let ratio = |x: Option<f64>, num: bool| match x {
                Some(x) if x > 0.0 && r.ns_per_packet > 0.0 => {
                    format!(
                        "{:.2}",
                        if num {
                            r.ns_per_packet / x
                        } else {
                            x / r.ns_per_packet
                        }
                    )
                }
                _ => "-".into(),
            };
            let _ = writeln!(
                o,
                "{:<11} {:>8.2}s {:>7.2}s {:>13} {:>10.1} {:>12} {:>10} {:>6} {:>6}",
                r.strategy,
                r.compile_s,
                r.load_s,
                r.instructions,
                r.ns_per_packet,
                ratio(floor, true),
                ratio(linear, false),
                r.wrong,
                r.nodes_per_packet.map_or("-".into(), |n| format!("{n:.2}"))
            );
        }
        for x in &self.examples {
            let _ = writeln!(o, "wrong: {x}");
        }
        if let Some(c) = &self.conntrack {
            o.push_str(&c.table());
        }
        o
    }

    pub fn wrong(&self) -> usize {
        self.rows.iter().map(|r| r.wrong).sum::<usize>()
            + self.conntrack.as_ref().map_or(0, |c| c.wrong)
    }

    /// Strategies that did not load.
    pub fn failed(&self) -> usize {
        self.rows.iter().filter(|r| r.failed.is_some()).count()
    }
}

/// Connection tracking's cost, per packet (TC programs, tree strategy).
#[derive(Debug, Clone, serde::Serialize)]
pub struct CtReport {
    /// Allowed TCP/UDP packets timed (others cannot start a tracked flow).
    pub packets: usize,
    pub repeat: u32,
    /// Policy lookup alone: tracking off.
    pub policy_ns: f64,
    /// The first packet of a flow: policy, then an entry created.
    pub new_flow_ns: f64,
    /// A tracked flow's next packet in its own direction: policy (every
    /// such packet is judged again) and the entry updated.
    pub tracked_ns: f64,
    /// A reply of a tracked flow: the entry found, no policy lookup.
    pub reply_ns: f64,
    /// Replies that were not passed by conntrack, or forward packets whose
    /// verdict differs from the evaluator's.
    pub wrong: usize,
}

/// The reply of a packet: the other direction, ends and ports swapped, a
/// bare ACK for TCP.
fn reply(p: &Packet) -> Packet {
    let mut q = p.clone();
    q.direction = match p.direction {
        crate::resolve::Direction::Ingress => crate::resolve::Direction::Egress,
        crate::resolve::Direction::Egress => crate::resolve::Direction::Ingress,
    };
    std::mem::swap(&mut q.src, &mut q.dst);
    std::mem::swap(&mut q.sport, &mut q.dport);
    q.tcp_flags = 0x5010;
    q
}

pub fn conntrack(
    ir: &Validated,
    src: &str,
    packets: &[Packet],
    opts: &Options,
) -> Result<CtReport, String> {
    use runtime_loader::conntrack::Settings;
    use runtime_loader::manifest::Reason;
    // Packets that open a flow: allowed, TCP (as a SYN) or UDP, ends apart.
    let flows: Vec<Packet> = packets
        .iter()
        .filter(|p| (p.proto == 6 || p.proto == 17) && p.src != p.dst)
        .map(|p| {
            let mut q = p.clone();
            if q.proto == 6 {
                q.tcp_flags = 0x5002;
            }
            q
        })
        .filter(|p| eval::evaluate(ir, p).verdict == eval::Verdict::Allow)
        .collect();
    if flows.is_empty() {
        return Err("no allowed TCP/UDP packet to open a flow with".into());
    }
    let out = codegen::compile(ir, src, &codegen::Options::new(Strategy::Tree)).map_err(|d| {
        d.first()
            .map_or("cannot compile".into(), |d| d.message.clone())
    })?;
    let art = runtime_loader::Artifact::from_bytes(out.object).map_err(|e| e.to_string())?;
    let mut runner = Runner::new(runtime_loader::Loaded::load(&art).map_err(|e| e.to_string())?);
    runner.local_wins = opts.local_wins;
    let (mut policy, mut new, mut tracked, mut back) = (0.0, 0.0, 0.0, 0.0);
    let mut wrong = 0;
    let ns = |d: Duration| d.as_nanos() as f64;
    let on = Settings::default();
    let off = Settings {
        conntrack: false,
        ..on
    };
    for p in &flows {
        let ct = runner.obj.conntrack().map_err(|e| e.to_string())?;
        runner.obj.configure(&off).map_err(|e| e.to_string())?;
        policy += ns(runner.judge(p, true, opts.repeat)?.duration);
        runner.obj.configure(&on).map_err(|e| e.to_string())?;
        // Emptied before each run of one packet: every run creates.
        let mut first = Duration::ZERO;
        for _ in 0..opts.repeat.min(200) {
            for f in ct.flows().map_err(|e| e.to_string())? {
                let _ = ct.remove(&f);
            }
            first += runner.judge(p, true, 1)?.duration;
        }
        new += ns(first) / opts.repeat.min(200) as f64;
        let j = runner.judge(p, true, opts.repeat)?;
        tracked += ns(j.duration);
        if !j.reason.passes() {
            wrong += 1;
        }
        let r = runner.judge(&reply(p), true, opts.repeat)?;
        back += ns(r.duration);
        if r.reason != Reason::CtReply {
            wrong += 1;
        }
    }
    let n = flows.len() as f64;
    Ok(CtReport {
        packets: flows.len(),
        repeat: opts.repeat,
        policy_ns: policy / n,
        new_flow_ns: new / n,
        tracked_ns: tracked / n,
        reply_ns: back / n,
        wrong,
    })
}

impl CtReport {
    pub fn table(&self) -> String {
        let row =
            |name: &str, v: f64| format!("{name:<38} {v:>10.1} {:>10.2}\n", v / self.policy_ns);
        format!(
            "conntrack: {} allowed TCP/UDP flows × {} runs each through the TC programs (tree)\n{:<38} {:>10} {:>10}\n{}{}{}{}{}",
            self.packets,
            self.repeat,
            "packet",
            "ns/packet",
            "/policy",
            row("policy lookup, tracking off", self.policy_ns),
            row("first packet (policy + new entry)", self.new_flow_ns),
            row("tracked flow, own direction (policy)", self.tracked_ns),
            row("reply (conntrack fast path)", self.reply_ns),
            if self.wrong > 0 { format!("wrong: {}\n", self.wrong) } else { String::new() },
        )
    }
}
