//! Text dump and statistics of diagrams.

use std::collections::HashMap;
use std::fmt::Write;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde::Serialize;

use super::{Atom, Diagram, EndIs, Field, Forest, Node, NodeId, Outcome, Side};
use crate::ir::Validated;

fn value(field: Field, v: u128, v6: bool) -> String {
    match field {
        Field::SrcAddr | Field::DstAddr if v6 => Ipv6Addr::from(v).to_string(),
        Field::SrcAddr | Field::DstAddr => Ipv4Addr::from(v as u32).to_string(),
        _ => v.to_string(),
    }
}

/// The fewest prefixes that cover exactly `lo..=hi` of a `bits`-wide space.
fn prefixes(mut lo: u128, hi: u128, bits: u32) -> Vec<(u128, u32)> {
    // The largest value in a block of 2^k.
    let span = |k: u32| {
        if k >= 128 {
            u128::MAX
        } else {
            (1u128 << k) - 1
        }
    };
    let mut out = Vec::new();
    loop {
        // The largest aligned block at `lo` that stays within `hi`.
        let mut k = if lo == 0 {
            bits
        } else {
            lo.trailing_zeros().min(bits)
        };
        while k > 0 && span(k) > hi - lo {
            k -= 1;
        }
        out.push((lo, bits - k));
        let last = lo + span(k);
        if last >= hi {
            return out;
        }
        lo = last + 1;
    }
}

/// A range of a field as a person writes it: `any`, CIDRs (or `a - b` when
/// that takes more than four), `80` or `80-90`, protocol names.
pub fn range(field: Field, lo: u128, hi: u128, v6: bool) -> String {
    if lo == 0 && hi == field.top(v6) {
        return "any".into();
    }
    match field {
        Field::SrcAddr | Field::DstAddr => {
            let bits = if v6 { 128 } else { 32 };
            let list = prefixes(lo, hi, bits);
            if list.len() > 4 {
                return format!("{} - {}", value(field, lo, v6), value(field, hi, v6));
            }
            list.iter()
                .map(|(a, len)| format!("{}/{len}", value(field, *a, v6)))
                .collect::<Vec<_>>()
                .join(", ")
        }
        Field::Proto => {
            let name = |v: u128| {
                crate::resolve::l4::protocol_name(v as u8)
                    .map_or_else(|| v.to_string(), str::to_string)
            };
            if lo == hi {
                name(lo)
            } else {
                format!("{lo}-{hi}")
            }
        }
        _ if lo == hi => lo.to_string(),
        _ => format!("{lo}-{hi}"),
    }
}

pub fn atom(a: &Atom) -> String {
    match a {
        Atom::Subject(s) => format!("local is {s}"),
        Atom::End(side, what) => {
            let side = if *side == Side::Src { "src" } else { "dst" };
            let what = match what {
                EndIs::World => "world".to_string(),
                EndIs::Host => "host".to_string(),
                EndIs::Cluster => "cluster".to_string(),
                EndIs::Selector(s) => s.to_string(),
            };
            format!("{side} is {what}")
        }
        Atom::NamedPort(n) => format!("dport is named {n}"),
        Atom::Flags(v, m) => format!("flags & {m:#x} == {v:#x}"),
        Atom::L7(r) => format!("l7 request matches r{r}"),
    }
}

fn outcome(ir: &Validated, o: Option<Outcome>) -> String {
    match o {
        None => "none".into(),
        Some(Outcome::DefaultDeny) => "default-deny".into(),
        Some(Outcome::Rule(r)) => format!("r{r} ({})", ir.rules[r as usize].name),
    }
}

/// The diagram, nodes numbered in depth-first order from the root.
pub fn diagram(ir: &Validated, d: &Diagram, atoms: &[Atom], v6: bool) -> String {
    let mut order: Vec<NodeId> = Vec::new();
    let mut seen: HashMap<NodeId, usize> = HashMap::new();
    let mut stack: Vec<NodeId> = d.roots.iter().rev().copied().collect();
    while let Some(n) = stack.pop() {
        if seen.contains_key(&n) {
            continue;
        }
        seen.insert(n, order.len());
        order.push(n);
        match &d.nodes[n as usize] {
            Node::Split { lo, hi, .. } => stack.extend([*hi, *lo]),
            Node::Test { yes, no, .. } => stack.extend([*no, *yes]),
            _ => {}
        }
    }
    let name = |n: &NodeId| format!("n{}", seen[n]);
    let mut out = String::new();
    if d.roots.len() > 1 {
        let r: Vec<String> = d.roots.iter().map(name).collect();
        let _ = writeln!(out, "parts: {}", r.join(" "));
    }
    for n in &order {
        let _ = match &d.nodes[*n as usize] {
            Node::Split { field, cut, lo, hi } => writeln!(
                out,
                "{}: {} < {} ? {} : {}",
                name(n),
                field.name(),
                value(*field, *cut, v6),
                name(lo),
                name(hi)
            ),
            Node::Test { atom: a, yes, no } => {
                writeln!(
                    out,
                    "{}: {} ? {} : {}",
                    name(n),
                    atom(&atoms[*a as usize]),
                    name(yes),
                    name(no)
                )
            }
            Node::Leaf(t) => writeln!(
                out,
                "{}: {}",
                name(n),
                outcome(ir, t.map(|t| d.terms[t as usize].outcome))
            ),
            Node::Linear(ts) => {
                let list: Vec<String> = ts
                    .iter()
                    .map(|t| outcome(ir, Some(d.terms[*t as usize].outcome)))
                    .collect();
                writeln!(out, "{}: first of [{}]", name(n), list.join(", "))
            }
        };
    }
    out
}

pub fn forest(ir: &Validated, f: &Forest) -> String {
    let mut out = String::new();
    for h in &f.hooks {
        let fam = if h.v6 { "ipv6" } else { "ipv4" };
        for (ci, d) in &h.chains {
            let _ = writeln!(
                out,
                "== {} {fam} chain {}",
                h.direction.keyword(),
                ir.chains[*ci as usize].name
            );
            out.push_str(&diagram(ir, d, &h.atoms, h.v6));
        }
        if !h.policy.terms.is_empty() {
            let _ = writeln!(out, "== {} {fam} policy", h.direction.keyword());
            out.push_str(&diagram(ir, &h.policy, &h.atoms, h.v6));
        }
    }
    out
}

/// Size and shape of a diagram.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_read_as_written() {
        let a = |s: &str| u32::from(s.parse::<Ipv4Addr>().unwrap()) as u128;
        assert_eq!(
            range(Field::SrcAddr, a("10.0.0.0"), a("10.255.255.255"), false),
            "10.0.0.0/8"
        );
        assert_eq!(
            range(Field::SrcAddr, a("10.0.0.0"), a("10.2.255.255"), false),
            "10.0.0.0/15, 10.2.0.0/16"
        );
        assert_eq!(range(Field::DstAddr, 0, u128::MAX, true), "any");
        assert_eq!(range(Field::DstAddr, 0, u128::MAX >> 1, true), "::/1");
        assert_eq!(range(Field::SrcAddr, 1, 1000, false), "0.0.0.1 - 0.0.3.232");
        assert_eq!(range(Field::DstPort, 80, 90, false), "80-90");
        assert_eq!(range(Field::Proto, 6, 6, false), "tcp");
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Stats {
    /// Reachable nodes (shared nodes count once).
    pub nodes: usize,
    pub leaves: usize,
    pub terms: usize,
    pub max_depth: usize,
    /// Mean depth of the leaves over all root-to-leaf paths, per part.
    pub mean_depth: f64,
    /// Comparisons on the longest path through every part, linear leaves
    /// counted in full (a packet whose local side every subject selects).
    pub worst_comparisons: usize,
    /// Comparisons on the longest path of one part (a packet of an
    /// endpoint that one policy selects walks one part per width class
    /// and one subject test for each other part).
    pub worst_part: usize,
    /// Term references in leaves per term.
    pub replication: f64,
}

pub fn stats(d: &Diagram) -> Stats {
    // Per node: (mean depth below over its paths, log2 of its path count,
    // max depth, worst comparisons). Path counts overflow even f64 in deep
    // DAGs, hence logarithms.
    type Memo = HashMap<NodeId, (f64, f64, usize, usize)>;
    let mut memo: Memo = HashMap::new();
    fn go(d: &Diagram, n: NodeId, memo: &mut Memo) -> (f64, f64, usize, usize) {
        if let Some(v) = memo.get(&n) {
            return *v;
        }
        let v = match &d.nodes[n as usize] {
            Node::Leaf(_) => (0.0, 0.0, 0, 1),
            Node::Linear(ts) => (0.0, 0.0, 0, 1 + ts.len()),
            Node::Split { lo: a, hi: b, .. } | Node::Test { yes: a, no: b, .. } => {
                let (x, y) = (go(d, *a, memo), go(d, *b, memo));
                // Share of the paths that go through `a`.
                let w = 1.0 / (1.0 + (y.1 - x.1).exp2());
                let log = x.1.max(y.1) + (1.0 + (-(x.1 - y.1).abs()).exp2()).log2();
                (
                    1.0 + w * x.0 + (1.0 - w) * y.0,
                    log,
                    1 + x.2.max(y.2),
                    1 + x.3.max(y.3),
                )
            }
        };
        memo.insert(n, v);
        v
    }
    // Every part is walked: depths are per part, comparisons add up.
    let (mut max_depth, mut worst, mut worst_part) = (0, 0, 0);
    let mut means: Vec<(f64, f64)> = Vec::new();
    for r in &d.roots {
        let (e, log, m, w) = go(d, *r, &mut memo);
        means.push((e, log));
        max_depth = max_depth.max(m);
        worst += w;
        worst_part = worst_part.max(w);
    }
    // Parts weighted by their path counts.
    let top = means.iter().map(|m| m.1).fold(f64::MIN, f64::max);
    let total: f64 = means.iter().map(|m| (m.1 - top).exp2()).sum();
    let mean_depth = if means.is_empty() {
        0.0
    } else {
        means.iter().map(|(e, l)| e * (l - top).exp2()).sum::<f64>() / total
    };
    let mut leaves = 0;
    let mut refs = 0;
    for n in memo.keys() {
        match &d.nodes[*n as usize] {
            Node::Leaf(o) => {
                leaves += 1;
                refs += usize::from(o.is_some());
            }
            Node::Linear(ts) => {
                leaves += 1;
                refs += ts.len();
            }
            _ => {}
        }
    }
    Stats {
        nodes: memo.len(),
        leaves,
        terms: d.terms.len(),
        max_depth,
        mean_depth,
        worst_comparisons: worst,
        worst_part,
        replication: refs as f64 / d.terms.len().max(1) as f64,
    }
}

/// Statistics summed over every diagram of a forest (max for depths).
pub fn forest_stats(f: &Forest) -> Stats {
    let all: Vec<Stats> = f
        .hooks
        .iter()
        .flat_map(|h| h.chains.iter().map(|(_, d)| d).chain([&h.policy]))
        .map(stats)
        .collect();
    let mut s = Stats::default();
    let mut paths_weight = 0.0;
    for x in &all {
        s.nodes += x.nodes;
        s.leaves += x.leaves;
        s.terms += x.terms;
        s.max_depth = s.max_depth.max(x.max_depth);
        s.worst_comparisons = s.worst_comparisons.max(x.worst_comparisons);
        s.worst_part = s.worst_part.max(x.worst_part);
        s.mean_depth += x.mean_depth * x.terms as f64;
        s.replication += x.replication * x.terms as f64;
        paths_weight += x.terms as f64;
    }
    if paths_weight > 0.0 {
        s.mean_depth /= paths_weight;
        s.replication /= paths_weight;
    }
    s
}
