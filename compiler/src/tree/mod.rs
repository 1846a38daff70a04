//! Decision diagrams: the middle end.
//!
//! Pipeline stage: **`ir::Validated` → `Forest`** (`build`), then passes
//! (`passes::*`), checked by `verify`. A `Forest` has one `Hook` per
//! direction and IP family; a hook holds one first-match diagram per chain
//! that applies to it and one for the policy layer. The policy layer is a
//! first-match list too: every deny (by id), then every allow (by id), then
//! one "default deny" marker per section; a packet that reaches none of them
//! is not under policy (S14–S16). Combining the chain diagrams and the
//! policy diagram as the evaluator does (S21) gives the same decision.
//!
//! A diagram is a DAG of nodes: `Split` tests one numeric field (address,
//! protocol, port, ICMP type/code) against a cut point (`< cut` goes low),
//! `Test` one boolean atom (which the runtime evaluates from maps: does the
//! local side match a subject, is the source a selected endpoint, does the
//! destination endpoint name this port, do the TCP flags match, does the L7
//! request match this rule's block), and leaves hold the outcome, or a short
//! list of terms tried in order. Identical subtrees are shared.
//!
//! The construction is HyperSplit-style (binary cuts chosen to balance the
//! rules on each side), with atoms split only when the highest-priority term
//! left needs them; see `docs/decision-diagrams.md`.

pub mod build;
pub mod cache;
pub mod dump;
pub mod graph;
pub mod passes;
pub mod verify;

use std::net::IpAddr;

use serde::Serialize;

use crate::eval::{self, Decision, Identity, Packet, Reason, Verdict};
use crate::ir::{RuleId, Selector, Subject, Validated};
use crate::resolve::{Action, Direction};

/// Numeric fields of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Field {
    SrcAddr,
    DstAddr,
    Proto,
    SrcPort,
    DstPort,
    IcmpType,
    IcmpCode,
}

pub const FIELDS: [Field; 7] = [
    Field::SrcAddr,
    Field::DstAddr,
    Field::Proto,
    Field::SrcPort,
    Field::DstPort,
    Field::IcmpType,
    Field::IcmpCode,
];

impl Field {
    pub fn index(self) -> usize {
        self as usize
    }
    /// The largest value of the field in a hook of the family.
    pub fn top(self, v6: bool) -> u128 {
        match self {
            Field::SrcAddr | Field::DstAddr if v6 => u128::MAX,
            Field::SrcAddr | Field::DstAddr => u32::MAX as u128,
            Field::SrcPort | Field::DstPort => 65535,
            _ => 255,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Field::SrcAddr => "src",
            Field::DstAddr => "dst",
            Field::Proto => "proto",
            Field::SrcPort => "sport",
            Field::DstPort => "dport",
            Field::IcmpType => "icmp-type",
            Field::IcmpCode => "icmp-code",
        }
    }
}

/// Which end of the packet an atom looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Side {
    Src,
    Dst,
}

/// What an end must be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum EndIs {
    World,
    Host,
    /// Not world.
    Cluster,
    Selector(Selector),
}

/// A boolean test that the runtime answers from maps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Atom {
    /// The local side matches the subject.
    Subject(Subject),
    End(Side, EndIs),
    /// The destination endpoint names its port `dport` like this.
    NamedPort(String),
    /// `tcp_flags & mask == value`.
    Flags(u16, u16),
    /// The packet is no L7 request, or its request matches the rule's block.
    L7(RuleId),
}

pub type AtomId = u32;
pub type NodeId = u32;
pub type TermId = u32;

/// What a first-match diagram decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Outcome {
    Rule(RuleId),
    /// A policy section selects the local side: default deny.
    DefaultDeny,
}

/// One conjunction: numeric sets (sorted disjoint inclusive intervals; a
/// missing field is unconstrained) and atoms that must hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Term {
    pub fields: [Option<Vec<(u128, u128)>>; 7],
    /// Tested in this order (ends first: see `build::terms_of`).
    pub atoms: Vec<AtomId>,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub enum Node {
    /// Values `< cut` go to `lo`.
    Split {
        field: Field,
        cut: u128,
        lo: NodeId,
        hi: NodeId,
    },
    Test {
        atom: AtomId,
        yes: NodeId,
        no: NodeId,
    },
    /// The first matching term of this part, if any.
    Leaf(Option<TermId>),
    /// Terms tried in order; the first that matches decides.
    Linear(Vec<TermId>),
}

/// A first-match classifier.
#[derive(Debug, Clone, Serialize)]
pub struct Diagram {
    pub nodes: Vec<Node>,
    /// One root per part: terms are partitioned by how wide their address
    /// sets are, each part is its own tree (in one shared arena), and the
    /// first match over all parts (the lowest term id) decides.
    pub roots: Vec<NodeId>,
    /// Terms in priority order (earlier wins).
    pub terms: Vec<Term>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Hook {
    pub direction: Direction,
    pub v6: bool,
    /// Chains that apply to this hook, in file order: (chain index, diagram).
    pub chains: Vec<(u32, Diagram)>,
    pub policy: Diagram,
    pub atoms: Vec<Atom>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Forest {
    pub hooks: Vec<Hook>,
}

/// A set of intervals sorted, with overlapping and adjacent ones merged.
pub fn normalise(set: &[(u128, u128)]) -> Vec<(u128, u128)> {
    let mut v = set.to_vec();
    v.sort_unstable();
    let mut out: Vec<(u128, u128)> = Vec::with_capacity(v.len());
    for (a, b) in v {
        match out.last_mut() {
            Some((_, e)) if a <= e.saturating_add(1) => *e = (*e).max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// The numeric key of a packet, by field index.
pub fn key(pkt: &Packet) -> [u128; 7] {
    let addr = |a: IpAddr| match a {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    };
    [
        addr(pkt.src),
        addr(pkt.dst),
        pkt.proto as u128,
        pkt.sport as u128,
        pkt.dport as u128,
        pkt.icmp_type as u128,
        pkt.icmp_code as u128,
    ]
}

/// Answer an atom for a packet, as the runtime does from its maps.
pub fn atom_holds(ir: &Validated, atom: &Atom, pkt: &Packet) -> bool {
    let (src, dst) = match pkt.direction {
        Direction::Ingress => (&pkt.peer, &pkt.local),
        Direction::Egress => (&pkt.local, &pkt.peer),
    };
    match atom {
        Atom::Subject(s) => eval::subject_matches(s, &pkt.local),
        Atom::End(side, what) => {
            let who = if *side == Side::Src { src } else { dst };
            match what {
                EndIs::World => *who == Identity::World,
                EndIs::Host => *who == Identity::Host,
                EndIs::Cluster => *who != Identity::World,
                EndIs::Selector(s) => {
                    matches!(who, Identity::Endpoint(e) if eval::selector_matches(s, e))
                }
            }
        }
        Atom::NamedPort(n) => {
            matches!(dst, Identity::Endpoint(e) if e.named_ports.get(n) == Some(&pkt.dport))
        }
        Atom::Flags(v, m) => pkt.tcp_flags & m == *v,
        Atom::L7(r) => eval::l7_matches(&ir.rules[*r as usize], pkt),
    }
}

impl Term {
    pub fn matches(&self, key: &[u128; 7], atom: &mut impl FnMut(AtomId) -> bool) -> bool {
        self.fields.iter().zip(key).all(|(set, v)| {
            set.as_ref()
                .is_none_or(|s| s.iter().any(|(a, b)| a <= v && v <= b))
        }) && self.atoms.iter().all(|a| atom(*a))
    }
}

impl Diagram {
    /// Walk every part; the lowest matching term decides. Also returns the
    /// number of comparisons made.
    pub fn classify(
        &self,
        key: &[u128; 7],
        mut atom: impl FnMut(AtomId) -> bool,
    ) -> (Option<Outcome>, usize) {
        let mut best: Option<TermId> = None;
        let mut steps = 0;
        for root in &self.roots {
            let mut n = *root;
            let hit = loop {
                steps += 1;
                match &self.nodes[n as usize] {
                    Node::Split { field, cut, lo, hi } => {
                        n = if key[field.index()] < *cut { *lo } else { *hi }
                    }
                    Node::Test { atom: a, yes, no } => n = if atom(*a) { *yes } else { *no },
                    Node::Leaf(t) => break *t,
                    Node::Linear(terms) => {
                        break terms.iter().copied().find(|t| {
                            steps += 1;
                            self.terms[*t as usize].matches(key, &mut atom)
                        })
                    }
                }
            };
            if let Some(t) = hit {
                best = Some(best.map_or(t, |b| b.min(t)));
            }
        }
        (best.map(|t| self.terms[t as usize].outcome), steps)
    }
}

impl Diagram {
    /// The terms listed in the leaves whose region meets `region`, taking
    /// the `no` side of every atom test and the `yes` side where `follow`
    /// holds. Complete only for an index (`build::Options::index`), whose
    /// leaves list every term that may match there. May repeat terms.
    pub fn query(
        &self,
        region: &[(u128, u128); 7],
        follow: impl Fn(AtomId) -> bool,
        out: &mut Vec<TermId>,
    ) {
        let mut stack: Vec<NodeId> = self.roots.clone();
        while let Some(n) = stack.pop() {
            match &self.nodes[n as usize] {
                Node::Split { field, cut, lo, hi } => {
                    let (a, b) = region[field.index()];
                    if a < *cut {
                        stack.push(*lo);
                    }
                    if b >= *cut {
                        stack.push(*hi);
                    }
                }
                Node::Test { atom, yes, no } => {
                    stack.push(*no);
                    if follow(*atom) {
                        stack.push(*yes);
                    }
                }
                Node::Leaf(t) => out.extend(t),
                Node::Linear(ts) => out.extend(ts),
            }
        }
    }
}

impl Forest {
    pub fn hook(&self, direction: Direction, v6: bool) -> Option<&Hook> {
        self.hooks
            .iter()
            .find(|h| h.direction == direction && h.v6 == v6)
    }

    /// Decide a packet with the diagrams. Gives the evaluator's verdict,
    /// reason, deciding rule and SNAT (not its lists of other matches).
    pub fn decide(&self, ir: &Validated, pkt: &Packet) -> Decision {
        let early = |verdict, reason| Decision {
            verdict,
            reason,
            rule: None,
            matched: Vec::new(),
            l7_mismatch: Vec::new(),
            snat: None,
        };
        if pkt.malformed {
            return early(Verdict::Drop, Reason::Malformed);
        }
        if pkt.fragment == eval::Fragment::Later {
            return early(Verdict::Drop, Reason::LaterFragment);
        }
        let Some(hook) = self.hook(pkt.direction, pkt.src.is_ipv6()) else {
            return early(Verdict::Allow, Reason::NoPolicy);
        };
        let k = key(pkt);
        let mut cache: Vec<Option<bool>> = vec![None; hook.atoms.len()];
        let mut atom = |a: AtomId| {
            *cache[a as usize].get_or_insert_with(|| atom_holds(ir, &hook.atoms[a as usize], pkt))
        };
        let mut accepted = None;
        for (_, d) in &hook.chains {
            if let (Some(Outcome::Rule(r)), _) = d.classify(&k, &mut atom) {
                if ir.rules[r as usize].action == Action::Drop {
                    let mut d = early(Verdict::Drop, Reason::ChainDrop);
                    d.rule = Some(r);
                    return d;
                }
                accepted.get_or_insert(r);
            }
        }
        let (outcome, _) = hook.policy.classify(&k, &mut atom);
        let mut d = match outcome {
            Some(Outcome::Rule(r)) if ir.rules[r as usize].action == Action::Deny => {
                early(Verdict::Drop, Reason::MatchedDeny)
            }
            Some(Outcome::Rule(_)) => early(Verdict::Allow, Reason::MatchedAllow),
            Some(Outcome::DefaultDeny) => early(Verdict::Drop, Reason::DefaultDeny),
            None if accepted.is_some() => early(Verdict::Allow, Reason::ChainAccept),
            None => early(Verdict::Allow, Reason::NoPolicy),
        };
        d.rule = match outcome {
            Some(Outcome::Rule(r)) => Some(r),
            None => accepted,
            _ => None,
        };
        if d.reason == Reason::MatchedAllow {
            d.snat = d.rule.and_then(|r| ir.rules[r as usize].snat.clone());
        }
        d
    }
}
