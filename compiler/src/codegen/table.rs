//! The table strategy: the decision diagrams as data.
//!
//! Stage: **`[HookPlan]` → `Table`** (nodes of `struct cilc_tnode`, see
//! stdlib-bpf/cilc.h), which the object carries in its section
//! `.cilc.table` and a loader copies into the map `cilc_table`; the
//! programs walk it (`cilc_walk`: a `bpf_loop` step follows up to 8 splits, or one test or leaf). The code
//! is then the same for every policy: compile time is the diagrams' build,
//! the verifier checks one small loop body, and a policy change is a change
//! of data. Linear leaves become chains of node tests (one per interval
//! bound and atom), so the walker knows only splits, atom tests and leaves.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A multiply-xor hasher for the node dedup table (millions of 32-byte
/// keys at 100k rules; std's SipHash took most of the encoding time).
#[derive(Default)]
struct Fx(u64);

impl Hasher for Fx {
    fn write(&mut self, bytes: &[u8]) {
        for c in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            self.write_u64(u64::from_le_bytes(w));
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }
    fn write_u16(&mut self, v: u16) {
        self.write_u64(u64::from(v));
    }
    fn write_u8(&mut self, v: u8) {
        self.write_u64(u64::from(v));
    }
    fn write_u128(&mut self, v: u128) {
        self.write_u64(v as u64);
        self.write_u64((v >> 64) as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<Fx>>;

use super::{AtomCode, DiagramPlan, HookPlan};
use crate::tree::{Field, Node, NodeId, Side, TermId};

const HEAD: u8 = 1;
const ENTRY: u8 = 2;
const SPLIT: u8 = 3;
const BIT: u8 = 4;
const PORT: u8 = 5;
const FLAGS: u8 = 6;
const LEAF: u8 = 7;

const POLICY: u32 = 1;
const LAST: u32 = 2;

/// One `struct cilc_tnode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct TNode {
    pub kind: u8,
    pub field: u8,
    pub arg: u16,
    pub a: u32,
    pub b: u32,
    pub c: u32,
    pub cut: u128,
}

impl TNode {
    fn bytes(&self, out: &mut Vec<u8>) {
        out.push(self.kind);
        out.push(self.field);
        out.extend_from_slice(&self.arg.to_le_bytes());
        out.extend_from_slice(&self.a.to_le_bytes());
        out.extend_from_slice(&self.b.to_le_bytes());
        out.extend_from_slice(&self.c.to_le_bytes());
        out.extend_from_slice(&((self.cut >> 64) as u64).to_le_bytes());
        out.extend_from_slice(&(self.cut as u64).to_le_bytes());
    }
}

/// The encoded diagrams of every hook.
#[derive(Debug, Default)]
pub struct Table {
    pub nodes: Vec<TNode>,
    /// The most steps one walk takes (every root's depth, summed, per hook;
    /// the largest hook).
    pub max_steps: u64,
}

impl Table {
    /// The bytes of the section (little-endian, like the BPF target).
    pub fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.nodes.len() * 32);
        for n in &self.nodes {
            n.bytes(&mut out);
        }
        out
    }
}

struct Enc {
    t: Table,
    /// Identical nodes once (diagrams share subtrees, and so do chains):
    /// indices into `t.nodes`, hashed by the node they name (4 bytes an
    /// entry, where a map keyed by the node took ten times that).
    seen: hashbrown::HashTable<u32>,
}

fn hash(n: &TNode) -> u64 {
    use std::hash::Hash;
    let mut h = Fx::default();
    n.hash(&mut h);
    h.finish()
}

impl Enc {
    fn push(&mut self, n: TNode) -> u32 {
        let h = hash(&n);
        let nodes = &self.t.nodes;
        if let Some(&i) = self.seen.find(h, |&i| nodes[i as usize] == n) {
            return i;
        }
        let i = nodes.len() as u32;
        self.t.nodes.push(n);
        let nodes = &self.t.nodes;
        self.seen.insert_unique(h, i, |&j| hash(&nodes[j as usize]));
        i
    }

    fn leaf(&mut self, code: u32, prio: u32) -> u32 {
        self.push(TNode {
            kind: LEAF,
            a: code,
            b: prio,
            ..TNode::default()
        })
    }

    /// `atom` holds: `yes`, else `no`.
    fn atom(&mut self, atoms: &[AtomCode], atom: u32, yes: u32, no: u32) -> u32 {
        match &atoms[atom as usize] {
            AtomCode::Bit(side, bit) => self.push(TNode {
                kind: BIT,
                field: u8::from(*side == Side::Dst),
                arg: *bit as u16,
                a: yes,
                b: no,
                ..TNode::default()
            }),
            // None of the bits: each one set goes to `no`.
            AtomCode::NoBit(side, bits) => bits.iter().rev().fold(yes, |next, bit| {
                self.push(TNode {
                    kind: BIT,
                    field: u8::from(*side == Side::Dst),
                    arg: *bit as u16,
                    a: no,
                    b: next,
                    ..TNode::default()
                })
            }),
            AtomCode::Port(slot) => self.push(TNode {
                kind: PORT,
                arg: *slot as u16,
                a: yes,
                b: no,
                ..TNode::default()
            }),
            AtomCode::Flags(v, m) => self.push(TNode {
                kind: FLAGS,
                arg: *m,
                c: u32::from(*v),
                a: yes,
                b: no,
                ..TNode::default()
            }),
            AtomCode::True => yes,
        }
    }

    fn split(&mut self, field: Field, cut: u128, lo: u32, hi: u32) -> u32 {
        self.push(TNode {
            kind: SPLIT,
            field: field.index() as u8,
            cut,
            a: lo,
            b: hi,
            ..TNode::default()
        })
    }

    /// A term's conditions, in front of `ok`; `fail` when one does not hold.
    fn term(
        &mut self,
        atoms: &[AtomCode],
        d: &DiagramPlan<'_>,
        t: TermId,
        ok: u32,
        fail: u32,
    ) -> u32 {
        let term = &d.diagram.terms[t as usize];
        let mut next = ok;
        for a in term.atoms.iter().rev() {
            next = self.atom(atoms, *a, next, fail);
        }
        for (i, set) in term.fields.iter().enumerate().rev() {
            let Some(set) = set else { continue };
            let field = crate::tree::FIELDS[i];
            // Intervals from the last: v < a fails (sorted: no later one
            // holds it either), v <= b passes, else the next interval.
            let mut rest = fail;
            for &(a, b) in set.iter().rev() {
                let inside = match b.checked_add(1) {
                    Some(b1) => self.split(field, b1, next, rest),
                    None => next,
                };
                rest = if a == 0 {
                    inside
                } else {
                    self.split(field, a, fail, inside)
                };
            }
            next = rest;
        }
        next
    }

    /// One diagram part from `root`: its nodes, bottom-up (a node's
    /// children are encoded first). Returns the encoded root.
    fn part(
        &mut self,
        atoms: &[AtomCode],
        d: &DiagramPlan<'_>,
        root: NodeId,
        memo: &mut FxMap<NodeId, u32>,
    ) -> u32 {
        // Iterative post-order: diagrams are deep enough to matter.
        let mut stack = vec![(root, false)];
        while let Some((n, expanded)) = stack.pop() {
            if memo.contains_key(&n) {
                continue;
            }
            let node = &d.diagram.nodes[n as usize];
            let kids: Vec<NodeId> = match node {
                Node::Split { lo, hi, .. } => vec![*lo, *hi],
                Node::Test { yes, no, .. } => vec![*yes, *no],
                _ => vec![],
            };
            if !expanded && kids.iter().any(|k| !memo.contains_key(k)) {
                stack.push((n, true));
                stack.extend(kids.into_iter().map(|k| (k, false)));
                continue;
            }
            let id = match node {
                Node::Split { field, cut, lo, hi } => {
                    let (lo, hi) = (memo[lo], memo[hi]);
                    self.split(*field, *cut, lo, hi)
                }
                Node::Test { atom, yes, no } => {
                    let (yes, no) = (memo[yes], memo[no]);
                    self.atom(atoms, *atom, yes, no)
                }
                Node::Leaf(None) => self.leaf(0, u32::MAX),
                Node::Leaf(Some(t)) => self.leaf(d.codes[*t as usize], *t),
                Node::Linear(ts) => {
                    let mut next = self.leaf(0, u32::MAX);
                    for t in ts.iter().rev() {
                        let hit = self.leaf(d.codes[*t as usize], *t);
                        next = self.term(atoms, d, *t, hit, next);
                    }
                    next
                }
            };
            memo.insert(n, id);
        }
        memo[&root]
    }
}

/// The longest walk through a part: the depth of its encoded DAG. `memo`
/// holds each node's depth once known (0: not yet; every depth is ≥ 1).
fn depth(nodes: &[TNode], root: u32, memo: &mut [u64]) -> u64 {
    let mut stack = vec![(root, false)];
    while let Some((n, expanded)) = stack.pop() {
        if memo[n as usize] != 0 {
            continue;
        }
        let t = nodes[n as usize];
        let kids = if t.kind == LEAF {
            vec![]
        } else {
            vec![t.a, t.b]
        };
        if !expanded && kids.iter().any(|k| memo[*k as usize] == 0) {
            stack.push((n, true));
            stack.extend(kids.into_iter().map(|k| (k, false)));
            continue;
        }
        let d = 1 + kids.iter().map(|k| memo[*k as usize]).max().unwrap_or(0);
        memo[n as usize] = d;
    }
    memo[root as usize]
}

/// Encode every hook's diagrams.
pub fn encode(hooks: &[HookPlan<'_>]) -> Table {
    let mut enc = Enc {
        // Node 0 unused, 1..=4 the heads (all four written below).
        t: Table {
            nodes: vec![TNode::default(); 5],
            max_steps: 0,
        },
        seen: hashbrown::HashTable::new(),
    };
    let mut entries_of = Vec::new();
    for h in hooks {
        let mut entries = Vec::new();
        let diagrams = h
            .chains
            .iter()
            .map(|d| (d, 0))
            .chain(h.policy.iter().map(|d| (d, POLICY)));
        for (d, kind) in diagrams {
            let mut memo = FxMap::default();
            let roots: Vec<u32> = d
                .diagram
                .roots
                .iter()
                .map(|r| enc.part(&h.atoms, d, *r, &mut memo))
                .collect();
            for (i, r) in roots.iter().enumerate() {
                let last = if i + 1 == roots.len() { LAST } else { 0 };
                entries.push((*r, kind | last));
            }
            if roots.is_empty() {
                // A diagram with no part decides nothing, but a policy
                // layer still ends the walk.
                let none = enc.leaf(0, u32::MAX);
                entries.push((none, kind | LAST));
            }
        }
        entries_of.push((1 + h.direction as usize * 2 + usize::from(h.v6), entries));
    }
    // Entries last, after every node they point to; every head points at
    // its hook's (none for a hook without diagrams: no policy). The walker
    // drops what meets no head, so an unfilled table fails closed.
    let mut t = enc.t;
    drop(enc.seen);
    let mut dmemo = vec![0u64; t.nodes.len()];
    for slot in 1..=4 {
        let entries = entries_of
            .iter()
            .find(|(s, _)| *s == slot)
            .map_or(&[][..], |(_, e)| e);
        let first = t.nodes.len() as u32;
        let mut steps = 0;
        for (root, flags) in entries {
            steps += 1 + depth(&t.nodes, *root, &mut dmemo);
            t.nodes.push(TNode {
                kind: ENTRY,
                a: *root,
                b: *flags,
                ..TNode::default()
            });
        }
        t.max_steps = t.max_steps.max(steps + 1);
        t.nodes[slot] = TNode {
            kind: HEAD,
            a: first,
            b: entries.len() as u32,
            ..TNode::default()
        };
    }
    t
}
