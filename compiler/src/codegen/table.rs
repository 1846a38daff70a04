//! The table strategy: the decision diagrams as data.
//!
//! Stage: **`[HookPlan]` → `Table`** (nodes of `struct cilc_tnode`, see
//! stdlib-bpf/cilc.h), which the object carries in its section
//! `.cilc.table` and a loader copies into the map `cilc_table`; the
//! programs walk it (`cilc_walk`: one `may_goto` loop, a node of any kind
//! a turn). The code is then the same for every policy: compile time
//! is the diagrams' build, the verifier checks one small loop body, and a
//! policy change is a change of data. Linear leaves become chains of node
//! tests (one per interval bound and atom), so the walker knows only
//! splits, atom tests and leaves; then (`with_jumps`) each split and the
//! splits on its field below it become a multi-way jump where that makes
//! walks shorter: one node visited instead of several levels; last
//! (`two_levels`) each split on a 32-bit cut is folded with its children
//! that are such splits too (any field): one node for two levels.

use crate::fx::FxMap;
use runtime_loader::manifest::{PRED_HOST, PRED_WORLD};

use super::region::{self, Region, Regions};
use super::{AtomCode, DiagramPlan, HookPlan};
use crate::tree::{Field, Node, NodeId, Side, TermId};

pub(super) const HEAD: u8 = 1;
pub(super) const ENTRY: u8 = 2;
pub(super) const SPLIT: u8 = 3;
pub(super) const BIT: u8 = 4;
pub(super) const PORT: u8 = 5;
pub(super) const FLAGS: u8 = 6;
pub(super) const LEAF: u8 = 7;
pub(super) const JUMP: u8 = 8;
pub(super) const ANY: u8 = 9;
pub(super) const SPLIT2: u8 = 10;

/// The largest cut of a two-level split (its cuts are 32 bits; the walker
/// compares values past them as this).
const NARROW: u128 = u32::MAX as u128;
/// A two-level split's `arg` holds, above its third field, the best
/// priority below it shifted right by this (13 bits at most): a lower
/// bound, so that a walk prunes there only where the split's own `c`
/// would have (`CILC_T_SPLIT2_PRIO_SHIFT` in cilc.h).
pub(super) const SPLIT2_PRIO_SHIFT: u32 = 5;

/// Slots of one jump node at most (`arg` holds the count in its 9 high
/// bits).
const JUMP_SLOTS: u128 = 256;
/// Same-field splits gathered under one node, at most, to build a jump.
const GATHER: usize = 255;

/// The leaf of no decision (`CILC_T_NONE` in cilc.h).
pub(super) const NONE: u32 = 5;

pub(super) const POLICY: u32 = 1;
pub(super) const LAST: u32 = 2;
/// The entry's part needs a predicate bit (`CILC_T_GUARD`).
pub(super) const GUARD: u32 = 4;

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
    /// The node's bytes (little-endian, like the BPF target).
    pub fn bytes(&self) -> [u8; NODE] {
        let mut out = [0; NODE];
        out[0] = self.kind;
        out[1] = self.field;
        out[2..4].copy_from_slice(&self.arg.to_le_bytes());
        out[4..8].copy_from_slice(&self.a.to_le_bytes());
        out[8..12].copy_from_slice(&self.b.to_le_bytes());
        out[12..16].copy_from_slice(&self.c.to_le_bytes());
        out[16..24].copy_from_slice(&((self.cut >> 64) as u64).to_le_bytes());
        out[24..].copy_from_slice(&(self.cut as u64).to_le_bytes());
        out
    }

    /// A node from its bytes (`bytes`' inverse).
    fn from_bytes(b: &[u8; NODE]) -> TNode {
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        TNode {
            kind: b[0],
            field: b[1],
            arg: u16::from_le_bytes([b[2], b[3]]),
            a: u32_at(4),
            b: u32_at(8),
            c: u32_at(12),
            cut: u128::from(u64_at(16)) << 64 | u128::from(u64_at(24)),
        }
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

/// Bytes of one node.
pub const NODE: usize = 32;

impl Table {
    /// Write the nodes into the object's table section, which LLVM
    /// emitted as zeros of their size.
    pub fn write_into(&self, object: &mut [u8]) -> Result<(), String> {
        use object::{Object as _, ObjectSection as _};
        let name = runtime_loader::manifest::TABLE_SECTION;
        let file = object::File::parse(&*object).map_err(|e| e.to_string())?;
        let (start, size) = file
            .section_by_name(name)
            .and_then(|s| s.file_range())
            .ok_or_else(|| format!("the object has no {name} section with bytes"))?;
        let (start, size) = (start as usize, size as usize);
        if size != self.nodes.len() * NODE || start + size > object.len() {
            return Err(format!(
                "{name} holds {size} bytes, not the {} of the table",
                self.nodes.len() * NODE
            ));
        }
        for (n, slot) in self
            .nodes
            .iter()
            .zip(object[start..].chunks_exact_mut(NODE))
        {
            slot.copy_from_slice(&n.bytes());
        }
        Ok(())
    }
}

/// Where a linear leaf's terms are encoded: what they read, and the
/// region every packet there is in.
#[derive(Clone, Copy)]
struct Leaf<'a, 'p> {
    atoms: &'a [AtomCode],
    d: &'a DiagramPlan<'p>,
    v6: bool,
    region: &'a Region,
}

struct Enc {
    t: Table,
    /// Identical nodes once (diagrams share subtrees, and so do chains):
    /// indices into `t.nodes`, hashed by the node they name (4 bytes an
    /// entry, where a map keyed by the node took ten times that).
    seen: hashbrown::HashTable<u32>,
    /// Jump slot blocks by their nodes.
    blocks: FxMap<Vec<u32>, u32>,
}

fn hash(n: &TNode) -> u64 {
    crate::fx::hash(n)
}

impl Enc {
    /// An empty table: node 0 unused, 1..=4 left for the heads (`encode`
    /// writes all four).
    fn new() -> Enc {
        Enc::with_capacity(0)
    }

    /// An empty table with room for about `n` nodes: node 0 unused,
    /// 1..=4 left for the heads, 5 the leaf of no decision (`NONE`: where
    /// the walker goes instead of a part that cannot beat the best so far).
    fn with_capacity(n: usize) -> Enc {
        let mut nodes = Vec::with_capacity(n + 6);
        nodes.resize(5, TNode::default());
        let mut enc = Enc {
            t: Table {
                nodes,
                max_steps: 0,
            },
            seen: hashbrown::HashTable::with_capacity(n),
            blocks: FxMap::default(),
        };
        let none = enc.leaf(0, u32::MAX);
        debug_assert_eq!(none, NONE);
        enc
    }

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
    /// Only what `region` (every packet here) leaves open is tested: a
    /// bound the path above implies is no node, a set outside it fails at
    /// once.
    fn term(&mut self, at: Leaf<'_, '_>, t: TermId, ok: u32, fail: u32) -> u32 {
        let term = &at.d.diagram.terms[t as usize];
        let mut next = ok;
        for a in term.atoms.iter().rev() {
            if at.region.atoms.binary_search(a).is_err() {
                next = self.atom(at.atoms, *a, next, fail);
            }
        }
        for (i, set) in term.fields.iter().enumerate().rev() {
            let Some(set) = set else { continue };
            let field = crate::tree::FIELDS[i];
            let (rlo, rhi) = at.region.ranges[i];
            let rhi = rhi.min(field.top(at.v6));
            // Intervals from the last, clipped to the region: v < a fails
            // (sorted: no later one holds it either), v <= b passes, else
            // the next interval.
            let mut rest = fail;
            for &(a, b) in set.iter().rev() {
                if b < rlo || a > rhi {
                    continue;
                }
                let inside = if b >= rhi {
                    next
                } else {
                    self.split(field, b + 1, next, rest)
                };
                rest = if a <= rlo {
                    inside
                } else {
                    self.split(field, a, fail, inside)
                };
            }
            if rest == fail {
                // No interval meets the region: the term never holds here.
                return fail;
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
        v6: bool,
        regions: &Regions,
        root: NodeId,
        memo: &mut [u32],
    ) -> u32 {
        // Iterative post-order: diagrams are deep enough to matter. `memo`
        // holds each diagram node's encoding (u32::MAX: not yet).
        let mut stack = vec![(root, false)];
        while let Some((n, expanded)) = stack.pop() {
            if memo[n as usize] != u32::MAX {
                continue;
            }
            let node = &d.diagram.nodes[n as usize];
            let kids = match node {
                Node::Split { lo, hi, .. } => [*lo, *hi],
                Node::Test { yes, no, .. } => [*yes, *no],
                _ => [n, n],
            };
            let open = |k: &NodeId| *k != n && memo[*k as usize] == u32::MAX;
            if !expanded && kids.iter().any(open) {
                stack.push((n, true));
                stack.extend(kids.iter().filter(|k| open(k)).map(|k| (*k, false)));
                continue;
            }
            let id = match node {
                Node::Split { field, cut, lo, hi } => {
                    let (lo, hi) = (memo[*lo as usize], memo[*hi as usize]);
                    self.split(*field, *cut, lo, hi)
                }
                Node::Test { atom, yes, no } => {
                    let (yes, no) = (memo[*yes as usize], memo[*no as usize]);
                    self.atom(atoms, *atom, yes, no)
                }
                Node::Leaf(None) => self.leaf(0, u32::MAX),
                Node::Leaf(Some(t)) => self.leaf(d.codes[*t as usize], *t),
                Node::Linear(ts) => {
                    let all = Region::all();
                    let at = Leaf {
                        atoms,
                        d,
                        v6,
                        region: regions.get(&n).unwrap_or(&all),
                    };
                    let mut next = self.leaf(0, u32::MAX);
                    for t in ts.iter().rev() {
                        let hit = self.leaf(d.codes[*t as usize], *t);
                        next = self.term(at, *t, hit, next);
                    }
                    next
                }
            };
            memo[n as usize] = id;
        }
        memo[root as usize]
    }
}

/// Two levels of splits in one node (`CILC_T_SPLIT2`): field 1 below
/// cut 1, then (field 0 below cut 0: a, else b), else (field 2 below cut
/// 2: c, else d). Cuts are 32 bits (values past them compare as
/// `NARROW`): cuts 0 and 1 the high half's low and high words, cut 2 the
/// low half's low word, d its high word. Fields 1 and 0 in `field`'s
/// bits 0-2 and 3-5, field 2 in `arg`'s bits 0-2.
fn split2(fields: [u8; 3], cuts: [u128; 3], [a, b, c, d]: [u32; 4]) -> TNode {
    debug_assert!(cuts.iter().all(|c| *c <= NARROW) && fields.iter().all(|f| *f < 8));
    TNode {
        kind: SPLIT2,
        field: fields[1] | fields[0] << 3,
        arg: u16::from(fields[2]),
        a,
        b,
        c,
        cut: cuts[1] << 96 | cuts[0] << 64 | u128::from(d) << 32 | cuts[2],
    }
}

/// A two-level split's fields, cuts and fourth kid (`split2`'s inverse).
fn split2_parts(t: &TNode) -> ([u8; 3], [u128; 3], u32) {
    let w = |i: u32| (t.cut >> i) & NARROW;
    let fields = [t.field >> 3 & 7, t.field & 7, (t.arg & 7) as u8];
    (fields, [w(64), w(96), w(0)], w(32) as u32)
}

/// Every split whose cut fits 32 bits and one of whose children is such a
/// split too becomes a two-level split of itself and those children: one
/// node visited where two were (a walk's splits alternate fields, so
/// folding on one field, as jumps do, leaves most of them). In place:
/// children come before parents, so going down from the last node each
/// split is folded with its children as they were; a child still stands
/// on its own (folded in turn) for whatever else leads to it, and one that
/// nothing else leads to is left unused.
fn two_levels(nodes: &mut [TNode]) {
    let narrow = |t: &TNode| t.kind == SPLIT && t.cut <= NARROW;
    for i in (0..nodes.len()).rev() {
        let t = nodes[i];
        let (l, r) = match narrow(&t) {
            true => (nodes[t.a as usize], nodes[t.b as usize]),
            false => continue,
        };
        if !narrow(&l) && !narrow(&r) {
            continue;
        }
        // A side that is no such split: a cut of 0, which no value is
        // below.
        let side = |s: &TNode, k: u32| match narrow(s) {
            true => (s.field, s.cut, s.a, s.b),
            false => (t.field, 0, k, k),
        };
        let (fl, cl, a, b) = side(&l, t.a);
        let (fr, cr, c, d) = side(&r, t.b);
        nodes[i] = split2([fl, t.field, fr], [cl, t.cut, cr], [a, b, c, d]);
    }
}

/// The nodes a node leads to: a jump's fallbacks and slots, an `ANY`'s
/// two ends and slots, a two-level split's four, a test's or split's two
/// children, none for a leaf
/// (`moved` changes the same indices).
fn kids(t: &TNode) -> impl Iterator<Item = u32> {
    let (ab, slots) = ([t.a, t.b, 0, 0], 0..0);
    let (fixed, n, slots) = match t.kind {
        LEAF => (ab, 0, slots),
        JUMP => (ab, 2, t.c..t.c + u32::from(t.arg >> 7)),
        ANY => (ab, 2, t.c..t.c + t.cut.count_ones()),
        SPLIT2 => ([t.a, t.b, t.c, split2_parts(t).2], 4, slots),
        _ => (ab, 2, slots),
    };
    fixed.into_iter().take(n).chain(slots)
}

/// The node with every index it holds (those `kids` reads: children,
/// first slot) passed through `at`.
fn moved(t: &mut TNode, at: impl Fn(u32) -> u32) {
    match t.kind {
        LEAF => {}
        JUMP | ANY => (t.a, t.b, t.c) = (at(t.a), at(t.b), at(t.c)),
        SPLIT2 => {
            let d = u128::from(at(split2_parts(t).2));
            (t.a, t.b, t.c) = (at(t.a), at(t.b), at(t.c));
            t.cut = t.cut & !(NARROW << 32) | d << 32;
        }
        _ => (t.a, t.b) = (at(t.a), at(t.b)),
    }
}

/// What a walk from a node meets: its longest walk in nodes (the depth
/// of the encoded DAG below it), and the best (lowest) priority of a
/// decision there (`u32::MAX`: none).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Reach {
    depth: u32,
    first: u32,
}

/// Every node's reach, in one pass: a node's kids come before it (the
/// encoder pushes bottom-up; a jump's slots, copies, right before it).
/// Nodes 0..=4 (unused, heads) and the entries reach nothing here.
fn reaches(nodes: &[TNode]) -> Vec<Reach> {
    let mut memo = vec![Reach::default(); nodes.len()];
    for (i, t) in nodes.iter().enumerate().skip(NONE as usize) {
        let leaf = if t.kind == LEAF && t.a != 0 {
            t.b
        } else {
            u32::MAX
        };
        memo[i] = kids(t).fold(
            Reach {
                depth: 1,
                first: leaf,
            },
            |r, k| {
                debug_assert!((k as usize) < i, "node {i} leads back to {k}");
                let k = memo[k as usize];
                Reach {
                    depth: r.depth.max(1 + k.depth),
                    first: r.first.min(k.first),
                }
            },
        );
    }
    memo
}

/// How one field's region is encoded: by the kid of an interval, a
/// split, or a jump (`base`, `shift`, one plan per slot; values below
/// `base` go to kid `below`, values past the last slot to kid `beyond`).
#[derive(Debug)]
enum Plan {
    Kid(usize),
    Split(u128, Box<Plan>, Box<Plan>),
    Jump {
        base: u128,
        shift: u32,
        below: usize,
        beyond: usize,
        slots: Vec<Plan>,
    },
}

impl Plan {
    fn has_jump(&self) -> bool {
        match self {
            Plan::Kid(_) => false,
            Plan::Split(_, l, r) => l.has_jump() || r.has_jump(),
            Plan::Jump { .. } => true,
        }
    }
}

/// Plans a region of one field: kid `i` takes the values from `cuts[i - 1]`
/// (inclusive) below `cuts[i]` (sorted, distinct), kid 0 everything below
/// `cuts[0]`, the last kid everything from the last cut. A range of kids
/// `lo..=hi` is encoded as the shallower of a balanced split and a jump
/// (HiCuts-style: equal slots from the range's first cut, at most
/// `JUMP_SLOTS` and as many as the kids, which keeps the table's growth
/// small (fw1_10k: twice, eight and 32 times as many slots cut 1–4 % more
/// visits for 15 %, 100 % and 540 % more nodes); a slot holding cuts is planned again,
/// as a range of its own).
struct Planner<'a> {
    cuts: &'a [u128],
    /// Every cut fits 32 bits: the splits will be folded two levels to a
    /// node (`two_levels`), so a level of them costs half a visit.
    narrow: bool,
    /// (lo, hi) → (depth in half visits: a level of splits is 1 when they
    /// fold two to a node, else 2, a jump 2; the jump's shift when a jump is
    /// shallower).
    memo: FxMap<(usize, usize), (u32, Option<u32>)>,
}

impl Planner<'_> {
    /// The jump's shift over kids `lo..=hi` (two cuts at least).
    fn shift(&self, lo: usize, hi: usize) -> u32 {
        let base = self.cuts[lo];
        let span = self.cuts[hi - 1] - base;
        let budget = JUMP_SLOTS.min((hi - lo + 1) as u128);
        // Every cut on a slot boundary, when that fits; else the fewest
        // slots within the budget.
        let exact = self.cuts[lo + 1..hi]
            .iter()
            .map(|c| (c - base).trailing_zeros())
            .min()
            .unwrap_or(0);
        (exact..128)
            .find(|s| ((span - 1) >> s) < budget)
            .unwrap_or(127)
    }

    /// The kid ranges of the slots: slot j holds the values from
    /// `base + j << shift`, below the next slot's.
    fn slots(&self, lo: usize, hi: usize, shift: u32) -> Vec<(usize, usize)> {
        let base = self.cuts[lo];
        let m = ((self.cuts[hi - 1] - base - 1) >> shift) + 1;
        let mut out = Vec::with_capacity(m as usize);
        let mut k = lo;
        for j in 0..m {
            let start = base + (j << shift);
            let end = start.checked_add(1 << shift);
            while k < hi && self.cuts[k] <= start {
                k += 1;
            }
            let mut q = k;
            while q < hi && end.is_none_or(|e| self.cuts[q] < e) {
                q += 1;
            }
            out.push((k, q));
        }
        out
    }

    fn depth(&mut self, lo: usize, hi: usize) -> u32 {
        let n = hi - lo;
        if n == 0 {
            return 0;
        }
        if let Some(&(d, _)) = self.memo.get(&(lo, hi)) {
            return d;
        }
        let mid = lo + (n - 1) / 2;
        let level = if self.narrow { 1 } else { 2 };
        let binary = level + self.depth(lo, mid).max(self.depth(mid + 1, hi));
        let mut best = (binary, None);
        if n >= 2 {
            let shift = self.shift(lo, hi);
            let mut d = 0;
            for (k, q) in self.slots(lo, hi, shift) {
                d = d.max(self.depth(k, q));
                if 2 + d >= binary {
                    break;
                }
            }
            if 2 + d < binary {
                best = (2 + d, Some(shift));
            }
        }
        self.memo.insert((lo, hi), best);
        best.0
    }

    fn build(&mut self, lo: usize, hi: usize) -> Plan {
        let n = hi - lo;
        if n == 0 {
            return Plan::Kid(lo);
        }
        self.depth(lo, hi);
        match self.memo.get(&(lo, hi)).and_then(|m| m.1) {
            Some(shift) => Plan::Jump {
                base: self.cuts[lo],
                shift,
                below: lo,
                beyond: hi,
                slots: self
                    .slots(lo, hi, shift)
                    .into_iter()
                    .map(|(k, q)| self.build(k, q))
                    .collect(),
            },
            None => {
                let mid = lo + (n - 1) / 2;
                let (l, r) = (self.build(lo, mid), self.build(mid + 1, hi));
                Plan::Split(self.cuts[mid], Box::new(l), Box::new(r))
            }
        }
    }
}

/// The region of one field under the split `root`: the splits on its
/// field below it, gathered breadth first (`GATHER` at most, a shared
/// node once per path). Returns the cuts and the node each interval
/// leads to (one more), adjacent intervals to the same node merged.
fn gather(nodes: &[TNode], root: u32) -> (Vec<u128>, Vec<u32>) {
    let field = nodes[root as usize].field;
    let mut queue = std::collections::VecDeque::from([(root, 0u128, None::<u128>)]);
    let mut out = Vec::new();
    let mut taken = 0;
    while let Some((n, lo, hi)) = queue.pop_front() {
        let t = &nodes[n as usize];
        if t.kind != SPLIT || t.field != field || taken >= GATHER {
            out.push((lo, n));
            continue;
        }
        taken += 1;
        if t.cut <= lo {
            queue.push_back((t.b, lo, hi));
        } else if hi.is_some_and(|h| t.cut >= h) {
            queue.push_back((t.a, lo, hi));
        } else {
            queue.push_back((t.a, lo, Some(t.cut)));
            queue.push_back((t.b, t.cut, hi));
        }
    }
    out.sort_unstable_by_key(|o| o.0);
    let mut cuts = Vec::new();
    let mut kids = vec![out[0].1];
    for &(lo, n) in &out[1..] {
        if kids.last() != Some(&n) {
            cuts.push(lo);
            kids.push(n);
        }
    }
    (cuts, kids)
}

impl Enc {
    /// Consecutive copies of `targets` (the slots of a jump; a slot is its
    /// node, copied), once per distinct list. Returns the first.
    fn block(&mut self, targets: &[u32]) -> u32 {
        if let Some(&s) = self.blocks.get(targets) {
            return s;
        }
        let s = self.t.nodes.len() as u32;
        for &t in targets {
            let n = self.t.nodes[t as usize];
            self.t.nodes.push(n);
        }
        self.blocks.insert(targets.to_vec(), s);
        s
    }

    fn emit(&mut self, field: u8, p: &Plan, kids: &[u32]) -> u32 {
        match p {
            Plan::Kid(i) => kids[*i],
            Plan::Split(cut, l, r) => {
                let (a, b) = (self.emit(field, l, kids), self.emit(field, r, kids));
                self.push(TNode {
                    kind: SPLIT,
                    field,
                    cut: *cut,
                    a,
                    b,
                    ..TNode::default()
                })
            }
            Plan::Jump {
                base,
                shift,
                below,
                beyond,
                slots,
            } => {
                let targets: Vec<u32> = slots.iter().map(|s| self.emit(field, s, kids)).collect();
                let c = self.block(&targets);
                self.push(TNode {
                    kind: JUMP,
                    field,
                    arg: *shift as u16 | ((targets.len() as u16) << 7),
                    a: kids[*below],
                    b: kids[*beyond],
                    c,
                    cut: *base,
                })
            }
        }
    }
}

/// The table again from `roots`, with jump nodes: each split becomes a
/// jump over the splits on its field below it when that makes walks
/// shorter (its plan has a jump), else stays a split; a chain of bit
/// tests (`chain`) gets an `ANY` node in front where other nodes enter it;
/// tests and leaves are copied. Returns the new table (nodes 0..=4 left
/// for the heads, 5 the leaf of no decision) and every old node's new
/// index (`u32::MAX` where unreachable).
fn with_jumps(old: &[TNode], roots: impl Iterator<Item = u32>) -> (Enc, Vec<u32>) {
    // Jumps copy their slots: 10-20 % more nodes (ClassBench 100k sets,
    // generated 100k).
    let mut enc = Enc::with_capacity(old.len() + old.len() / 4);
    let mut memo = vec![u32::MAX; old.len()];
    // A bit test whose chain (`chain`) is long enough is, for every node
    // but the test before it in the chain, an `ANY` in front of it: `plain`
    // holds the test itself.
    let mut plain = vec![u32::MAX; old.len()];
    // Only tests that some other node leads to need the `ANY`, other than
    // by a failed port or flags test: such a test hangs off a chain's
    // "set" side (a term needs a peer and a port), its failure enters the
    // chain at the next term, and an `ANY` at every such entry would copy
    // the rest of the chain's firsts each time (quadratic: the generated
    // 100k policy took 8.7M nodes). The chain's first test has its `ANY`.
    let mut entered = vec![false; old.len()];
    for t in old {
        let next = link(old, t).map(|(next, _)| next);
        for k in kids(t) {
            let fails_in = (k == t.b && matches!(t.kind, PORT | FLAGS)) || next == Some(k);
            if !fails_in {
                entered[k as usize] = true;
            }
        }
    }
    // The splits that become jumps, while their kids are encoded: the
    // region's kids and the plan.
    let mut plans: FxMap<u32, (Vec<u32>, Plan)> = FxMap::default();
    let mut stack = Vec::new();
    for root in roots {
        stack.push((root, false));
        while let Some((n, expanded)) = stack.pop() {
            if memo[n as usize] != u32::MAX {
                continue;
            }
            let t = old[n as usize];
            if !expanded {
                stack.push((n, true));
                let open = |k: &u32| memo[*k as usize] == u32::MAX;
                match t.kind {
                    LEAF => {}
                    SPLIT if let Some((kids, plan)) = jump(old, n) => {
                        stack.extend(kids.iter().filter(|k| open(k)).map(|k| (*k, false)));
                        plans.insert(n, (kids, plan));
                    }
                    _ => stack.extend([t.a, t.b].iter().filter(|k| open(k)).map(|k| (*k, false))),
                }
                continue;
            }
            memo[n as usize] = match t.kind {
                LEAF => enc.push(t),
                SPLIT if let Some((kids, plan)) = plans.remove(&n) => {
                    let new: Vec<u32> = kids.iter().map(|k| memo[*k as usize]).collect();
                    enc.emit(t.field, &plan, &new)
                }
                _ => {
                    // A chain's own link goes to the next test, not its ANY.
                    let next = link(old, &t).map(|(next, _)| next);
                    let to = |k: u32| match next == Some(k) {
                        true => plain[k as usize],
                        false => memo[k as usize],
                    };
                    let id = enc.push(TNode {
                        a: to(t.a),
                        b: to(t.b),
                        ..t
                    });
                    plain[n as usize] = id;
                    match (entered[n as usize]).then(|| chain(old, n)).flatten() {
                        Some((word, firsts, end)) => {
                            let bit = |b: u16| 1u128 << (b - word * 64);
                            let mask = firsts.iter().fold(0, |m, (b, ..)| m | bit(*b));
                            let flip = firsts
                                .iter()
                                .filter(|(.., set)| *set)
                                .fold(0, |m, (b, ..)| m | bit(*b));
                            debug_assert!(flip >> FLIPPABLE == 0);
                            // Each bit's slot is where its first test goes
                            // when the bit is on its other side: the walk
                            // that found it the one bit there need not test
                            // it again.
                            let other = |at: u32, set: bool| {
                                let t = &enc.t.nodes[plain[at as usize] as usize];
                                if set {
                                    t.b
                                } else {
                                    t.a
                                }
                            };
                            let slots: Vec<u32> =
                                firsts.iter().map(|(_, at, set)| other(*at, *set)).collect();
                            let c = enc.block(&slots);
                            enc.push(TNode {
                                kind: ANY,
                                field: t.field,
                                arg: word | (flip as u16) << ANY_FLIP_SHIFT,
                                cut: mask,
                                a: id,
                                b: memo[end as usize],
                                c,
                            })
                        }
                        _ => id,
                    }
                }
            };
        }
    }
    (enc, memo)
}

/// Predicate bits below this (the world and host bits, word 0) may be
/// tested in a chain on their "set" side: a test that holds when the bit
/// is clear (`from cluster`: none of the world bit) goes on to the next
/// term when it is set.
const FLIPPABLE: u16 = 2;
const _: () = assert!(PRED_WORLD < FLIPPABLE as u32);
const _: () = assert!(PRED_HOST < FLIPPABLE as u32);

/// Where an `ANY`'s flipped bits sit in its `arg` (cilc.h
/// `CILC_T_ANY_FLIP_SHIFT`): a mask of the chain's bits below
/// `FLIPPABLE` whose tests go on when the bit is set.
pub(super) const ANY_FLIP_SHIFT: u32 = 14;

/// The link from the bit test `t` to the next test of a chain it is in,
/// if it has one: the next test (of the same end, its bit in a word next
/// to `t`'s) and whether `t` goes on to it when its bit is set. A test
/// goes on where its bit is clear, or (a bit below `FLIPPABLE` whose clear
/// side leads elsewhere) where it is set.
fn link(old: &[TNode], t: &TNode) -> Option<(u32, bool)> {
    let near = |k: u32| {
        let u = &old[k as usize];
        u.kind == BIT && u.field == t.field && (t.arg / 64).abs_diff(u.arg / 64) <= 1
    };
    match t.kind == BIT {
        true if near(t.b) => Some((t.b, false)),
        true if t.arg < FLIPPABLE && near(t.a) => Some((t.a, true)),
        _ => None,
    }
}

/// A chain of bit tests: its lower word, each bit's first test (by bit)
/// and whether the chain goes on when that bit is set, and where it ends.
type Chain = (u16, Vec<(u16, u32, bool)>, u32);

/// Bit tests in a row of at least this many, along their links, get an
/// `ANY` in front.
const ANY_CHAIN: usize = 3;

/// The chain of bit tests from `n` along their links (`link`: mostly the
/// "not set" sides) while they test one end's bits in two words next to
/// each other (a run of terms that each need one peer selector, or none
/// of the world bit, say), each bit on one side throughout: the lower
/// word, each bit's first test in the chain, by bit, and where the chain
/// ends when no bit is on its other side, if it is `ANY_CHAIN` tests or
/// more. A packet with none of its bits on the other side then skips the
/// chain in one node, and one with one of them goes where that bit's first
/// test leads then (the tests before it go on, that one does not).
fn chain(old: &[TNode], n: u32) -> Option<Chain> {
    let first = &old[n as usize];
    let (mut lo, mut hi) = (first.arg / 64, first.arg / 64);
    let (mut firsts, mut len, mut at): (Vec<(u16, u32, bool)>, _, _) = (Vec::new(), 0, n);
    loop {
        let t = &old[at as usize];
        let w = t.arg / 64;
        if t.kind != BIT || t.field != first.field || w.max(hi) - w.min(lo) > 1 {
            break;
        }
        // The last test goes on where its bit is clear (the chain's end).
        let (next, set) = link(old, t).unwrap_or((t.b, false));
        match firsts.iter().find(|(b, ..)| *b == t.arg) {
            Some((.., s)) if *s != set => break,
            Some(_) => {}
            None => firsts.push((t.arg, at, set)),
        }
        (lo, hi) = (lo.min(w), hi.max(w));
        len += 1;
        at = next;
    }
    firsts.sort_unstable();
    (len >= ANY_CHAIN).then_some((lo, firsts, at))
}

/// The jump that replaces the split `n` and the splits on its field below
/// it, when it makes walks shorter: the region's kids and the plan.
fn jump(old: &[TNode], n: u32) -> Option<(Vec<u32>, Plan)> {
    let (cuts, kids) = gather(old, n);
    if cuts.len() < 2 {
        return None;
    }
    let plan = Planner {
        cuts: &cuts,
        narrow: cuts.iter().all(|c| *c <= NARROW),
        memo: FxMap::default(),
    }
    .build(0, cuts.len());
    plan.has_jump().then_some((kids, plan))
}

/// An entry's guard: (end, bit, the root's yes side).
type Guard = Option<(u8, u16, u32)>;

/// The predicate bit an entry's part needs (its root tests the part's
/// subject, and the other way decides nothing): (end, bit, the root's yes
/// side, where the walk goes when the bit is set).
fn guard(nodes: &[TNode], root: u32) -> Guard {
    let r = &nodes[root as usize];
    (r.kind == BIT && r.b == NONE).then_some((r.field, r.arg, r.a))
}

/// How many entries from `i` on the walker skips when `i`'s guard bit is
/// not set: those with the same guard, crossing the end of a diagram only
/// when the run starts one (a skipped diagram then decides nothing, as its
/// walk would not; one that has begun keeps its best so far).
fn run(entries: &[(u32, u32)], guards: &[Guard], i: usize) -> usize {
    let key = |g: &Guard| g.map(|(f, b, _)| (f, b));
    let whole = i == 0 || entries[i - 1].1 & LAST != 0;
    let mut j = i;
    while j + 1 < entries.len()
        && key(&guards[j + 1]) == key(&guards[i])
        && (whole || entries[j].1 & LAST == 0)
    {
        j += 1;
    }
    j - i + 1
}

/// What a table section holds, for `cilc inspect`: nodes by kind, then per
/// hook its parts, how many are guarded by a subject, and by how many
/// subjects.
/// The nodes of a table section (its bytes as `Table::write_into` wrote
/// them).
pub fn decode(section: &[u8]) -> Vec<TNode> {
    section
        .chunks_exact(NODE)
        .map(|c| TNode::from_bytes(c.try_into().unwrap_or(&[0; NODE])))
        .collect()
}

pub fn describe(section: &[u8]) -> String {
    let nodes = decode(section);
    let count = |k: u8| nodes.iter().filter(|t| t.kind == k).count();
    let mut out = format!(
        "{} splits, {} two-level splits, {} jumps, {} bit tests ({} chains of them with an ANY), {} port tests, \
         {} flag tests, {} leaves (slots counted as what they copy)",
        count(SPLIT),
        count(SPLIT2),
        count(JUMP),
        count(BIT),
        count(ANY),
        count(PORT),
        count(FLAGS),
        count(LEAF)
    );
    for (slot, name) in (1..=4).zip(["ingress IPv4", "ingress IPv6", "egress IPv4", "egress IPv6"])
    {
        let Some(h) = nodes.get(slot).filter(|h| h.kind == HEAD) else {
            continue;
        };
        let entries = nodes
            .get(h.a as usize..h.a as usize + h.b as usize)
            .unwrap_or(&[]);
        let guarded: Vec<_> = entries.iter().filter(|e| e.b & GUARD != 0).collect();
        let mut subjects: Vec<_> = guarded.iter().map(|e| (e.field, e.arg)).collect();
        subjects.sort_unstable();
        subjects.dedup();
        let diagrams = entries.iter().filter(|e| e.b & LAST != 0).count();
        out += &match diagrams {
            0 => format!("\n{name}: no diagram"),
            _ => format!(
                "\n{name}: {diagrams} diagram(s) in {} part(s), {} entered only by their \
                 subject's bit ({} subject(s))",
                entries.len(),
                guarded.len(),
                subjects.len()
            ),
        };
    }
    out
}

/// One hook's table on its own: its nodes (0..=5 as in every table:
/// unused, heads, `NONE`) and its entries (root, flags).
type HookTable = (Vec<TNode>, Vec<(u32, u32)>);

fn encode_hook(h: &HookPlan<'_>) -> HookTable {
    let mut enc = Enc::new();
    let mut entries = Vec::new();
    let diagrams = h
        .chains
        .iter()
        .map(|d| (d, 0))
        .chain(h.policy.iter().map(|d| (d, POLICY)));
    for (d, kind) in diagrams {
        let mut memo = vec![u32::MAX; d.diagram.nodes.len()];
        let regions = region::linear_leaves(d.diagram);
        let roots: Vec<u32> = d
            .diagram
            .roots
            .iter()
            .map(|r| enc.part(&h.atoms, d, h.v6, &regions, *r, &mut memo))
            .collect();
        for (i, r) in roots.iter().enumerate() {
            let last = if i + 1 == roots.len() { LAST } else { 0 };
            entries.push((*r, kind | last));
        }
        if roots.is_empty() {
            // A diagram with no part decides nothing, but a policy
            // layer still ends the walk.
            entries.push((NONE, kind | LAST));
        }
    }
    // Jumps, from every root; the entries point at the new roots.
    let mut old = enc.t.nodes;
    skip_known(&mut old, entries.iter().map(|(r, _)| *r));
    drop((enc.seen, enc.blocks));
    let (enc, at) = with_jumps(&old, entries.iter().map(|(r, _)| *r));
    drop(old);
    for (r, _) in &mut entries {
        *r = at[*r as usize];
    }
    let mut nodes = enc.t.nodes;
    two_levels(&mut nodes);
    (nodes, entries)
}

/// What every walk into a node knows of the packet, from the tests above
/// it on every path there: atom tests' answers and fields' ranges.
#[derive(Debug, Clone, Default, PartialEq)]
struct Known {
    /// (test, its answer) by `test_key`.
    tests: Vec<(u64, bool)>,
    /// (field, lowest, highest) by field, where narrower than the field.
    ranges: Vec<(u8, u128, u128)>,
}

/// Atom-test answers one node's knowledge holds at most: more would cost
/// time and memory for tests rarely asked again that far down.
const KNOWN_TESTS: usize = 16;

/// An atom test's identity: the same bit, named-port slot, or flags and
/// value. None for other nodes.
fn test_key(t: &TNode) -> Option<u64> {
    let kind = u64::from(t.kind) << 56;
    match t.kind {
        BIT | PORT => Some(kind | u64::from(t.field) << 48 | u64::from(t.arg) << 32),
        FLAGS => Some(kind | u64::from(t.arg) << 32 | u64::from(t.c)),
        _ => None,
    }
}

impl Known {
    fn range(&self, field: u8) -> (u128, u128) {
        self.ranges
            .iter()
            .find(|r| r.0 == field)
            .map_or((0, u128::MAX), |r| (r.1, r.2))
    }

    /// The side of test `t` (true: `a`) every walk here takes, if known.
    fn answer(&self, t: &TNode) -> Option<bool> {
        if t.kind == SPLIT {
            let (lo, hi) = self.range(t.field);
            return (hi < t.cut || lo >= t.cut).then_some(hi < t.cut);
        }
        let key = test_key(t)?;
        let at = self.tests.binary_search_by_key(&key, |t| t.0).ok()?;
        Some(self.tests[at].1)
    }

    /// This, and test `t` answered `yes`.
    fn with(&self, t: &TNode, yes: bool) -> Known {
        let mut k = self.clone();
        if t.kind == SPLIT {
            let (mut lo, mut hi) = k.range(t.field);
            // `v < 0` never holds: that side is reached by no walk, and
            // whatever it "knows" is true of every walk there.
            if yes {
                hi = hi.min(t.cut.saturating_sub(1));
            } else {
                lo = lo.max(t.cut);
            }
            match k.ranges.binary_search_by_key(&t.field, |r| r.0) {
                Ok(i) => k.ranges[i] = (t.field, lo, hi),
                Err(i) => k.ranges.insert(i, (t.field, lo, hi)),
            }
        } else if let Some(key) = test_key(t) {
            match k.tests.binary_search_by_key(&key, |t| t.0) {
                Ok(i) => k.tests[i].1 = yes,
                Err(i) if k.tests.len() < KNOWN_TESTS => k.tests.insert(i, (key, yes)),
                Err(_) => {}
            }
        }
        k
    }

    /// Keep only what `other` knows too (a node reached from both).
    fn meet(&mut self, other: &Known) {
        self.tests.retain(|(key, yes)| {
            other
                .tests
                .binary_search_by_key(key, |t| t.0)
                .is_ok_and(|i| other.tests[i].1 == *yes)
        });
        self.ranges.retain_mut(|r| {
            let (lo, hi) = other.range(r.0);
            (r.1, r.2) = (r.1.min(lo), r.2.max(hi));
            (r.1, r.2) != (0, u128::MAX)
        });
    }
}

/// A test whose answer is known on the way to it (the same atom tested
/// above on every path there, or a split its field's range there already
/// decides) is passed over: the edge into it goes on to the side the walk
/// would take. Consecutive terms `from cluster` each test the world bit
/// first, so a world packet failed each on that bit; pods' terms test it
/// again and again with other tests between. The diagram is walked from
/// the roots (parents sit above their children: `Enc::push`), each node's
/// knowledge the meet of its incoming edges'. Only edges change: no node
/// is added or removed.
fn skip_known(nodes: &mut [TNode], roots: impl Iterator<Item = u32>) {
    let tests = |t: &TNode| matches!(t.kind, SPLIT | BIT | PORT | FLAGS);
    // A root, or a node with a parent below it, knows nothing: its
    // knowledge would be used before every parent gave its part.
    let mut blind = vec![false; nodes.len()];
    for r in roots {
        blind[r as usize] = true;
    }
    for (i, t) in nodes.iter().enumerate() {
        if tests(t) {
            for k in [t.a, t.b] {
                if k as usize >= i {
                    blind[k as usize] = true;
                }
            }
        }
    }
    let mut into: Vec<Option<Box<Known>>> = vec![None; nodes.len()];
    for i in (0..nodes.len()).rev() {
        let t = nodes[i];
        let known = into[i].take();
        if !tests(&t) {
            continue;
        }
        let known = match known {
            Some(k) if !blind[i] => *k,
            _ => Known::default(),
        };
        for yes in [true, false] {
            let facts = known.with(&t, yes);
            let mut to = if yes { t.a } else { t.b };
            while let Some(side) = facts.answer(&nodes[to as usize]) {
                let u = nodes[to as usize];
                to = if side { u.a } else { u.b };
            }
            if yes {
                nodes[i].a = to;
            } else {
                nodes[i].b = to;
            }
            if !blind[to as usize] {
                match &mut into[to as usize] {
                    Some(k) => k.meet(&facts),
                    slot => *slot = Some(Box::new(facts)),
                }
            }
        }
    }
}

/// Hooks share no nodes worth keeping once (each tests its own family's
/// addresses), so each is encoded on its own, on two threads (the larger
/// first), and the tables are laid end to end in hook order: the same
/// table whatever the threads' timing.
fn encode_hooks(hooks: &[HookPlan<'_>]) -> Vec<HookTable> {
    use std::sync::Mutex;
    let size = |h: &HookPlan<'_>| -> usize {
        h.chains
            .iter()
            .chain(&h.policy)
            .map(|d| d.diagram.nodes.len())
            .sum()
    };
    let mut order: Vec<usize> = (0..hooks.len()).collect();
    order.sort_by_key(|i| std::cmp::Reverse(size(&hooks[*i])));
    let queue = Mutex::new(order.into_iter());
    let done = Mutex::new(Vec::with_capacity(hooks.len()));
    let work = || {
        while let Some(i) = queue.lock().map(|mut q| q.next()).unwrap_or(None) {
            let hook = encode_hook(&hooks[i]);
            if let Ok(mut d) = done.lock() {
                d.push((i, hook));
            }
        }
    };
    std::thread::scope(|s| {
        let other = s.spawn(work);
        work();
        if let Err(p) = other.join() {
            std::panic::resume_unwind(p);
        }
    });
    let mut done = done.into_inner().unwrap_or_default();
    done.sort_by_key(|(i, _)| *i);
    assert_eq!(done.len(), hooks.len(), "every hook is encoded");
    done.into_iter().map(|(_, h)| h).collect()
}

/// Encode every hook's diagrams.
pub fn encode(hooks: &[HookPlan<'_>]) -> Table {
    let parts = crate::timed("table: hooks", || encode_hooks(hooks));
    let mut t = Enc::with_capacity(0).t;
    t.nodes.reserve(parts.iter().map(|(n, _)| n.len()).sum());
    let mut entries_of = Vec::new();
    for (h, (nodes, mut entries)) in hooks.iter().zip(parts) {
        // The hook's own nodes from 6 on follow the table's; `NONE` is
        // the table's.
        let base = t.nodes.len() as u32 - (NONE + 1);
        let at = |n: u32| if n <= NONE { n } else { n + base };
        for mut n in nodes.into_iter().skip(NONE as usize + 1) {
            moved(&mut n, at);
            t.nodes.push(n);
        }
        for (r, _) in &mut entries {
            *r = at(*r);
        }
        entries_of.push((1 + h.direction as usize * 2 + usize::from(h.v6), entries));
    }
    // Entries last, after every node they point to; every head points at
    // its hook's (none for a hook without diagrams: no policy). The walker
    // drops what meets no head, so an unfilled table fails closed.
    // Each split carries the best priority below it: a walk that already
    // holds a better decision (of an earlier part) goes no further there.
    let memo = reaches(&t.nodes);
    for (n, r) in t.nodes.iter_mut().zip(&memo) {
        match n.kind {
            SPLIT => n.c = r.first,
            SPLIT2 => n.arg = n.arg & 7 | ((r.first >> SPLIT2_PRIO_SHIFT).min(0x1fff) << 3) as u16,
            _ => {}
        }
    }
    for slot in 1..=4 {
        let entries = entries_of
            .iter()
            .find(|(s, _)| *s == slot)
            .map_or(&[][..], |(_, e)| e);
        let first = t.nodes.len() as u32;
        let (list, steps) = entry_nodes(&t.nodes, &memo, entries, first);
        t.max_steps = t.max_steps.max(steps + 1);
        t.nodes.extend(list);
        t.nodes[slot] = TNode {
            kind: HEAD,
            a: first,
            b: entries.len() as u32,
            ..TNode::default()
        };
    }
    t
}

/// A diagram's parts in walking order: unguarded ones first, then by
/// guard (end, bit), so that each subject's parts are consecutive and the
/// subjects ascend by bit (the order of a diagram's parts does not change
/// its decision: its best is the lowest priority over all of them). The
/// last one carries `LAST`.
fn in_guard_order(nodes: &[TNode], entries: &[(u32, u32)]) -> (Vec<(u32, u32)>, Vec<Guard>) {
    let mut out = Vec::with_capacity(entries.len());
    let mut start = 0;
    for (i, (_, flags)) in entries.iter().enumerate() {
        if flags & LAST == 0 && i + 1 < entries.len() {
            continue;
        }
        let mut diagram: Vec<(Guard, (u32, u32))> = entries[start..=i]
            .iter()
            .map(|e| (guard(nodes, e.0), (e.0, e.1 & !LAST)))
            .collect();
        diagram.sort_by_key(|(g, _)| g.map(|(f, b, _)| (f, b)));
        if let Some((_, (_, f))) = diagram.last_mut() {
            *f |= flags & LAST;
        }
        out.extend(diagram);
        start = i + 1;
    }
    out.into_iter().map(|(g, e)| (e, g)).unzip()
}

/// A hook's entry nodes, to be placed from `first` on (then the slots of
/// its dispatch blocks), and the most steps its walk takes.
///
/// Dispatch: the guarded parts of one diagram whose bits lie in one word
/// of one end's predicate bits form a block (by `in_guard_order` their
/// bits ascend). An entry of a block whose bit is not set goes straight to
/// the next part whose bit is set, by the packet's word and the mask of
/// the bits of the block's later parts (`cut` high half), through the
/// block's slots: one node per bit from its lowest, each a copy of the
/// first entry of that bit's parts with its place in `cut`. When none is
/// set, it skips the rest of the block. A packet thus walks the parts of
/// its own subjects only, not one entry per subject of the policy
/// (the generated 100k policy has 65 subjects a hook).
fn entry_nodes(
    nodes: &[TNode],
    memo: &[Reach],
    entries: &[(u32, u32)],
    first: u32,
) -> (Vec<TNode>, u64) {
    let (entries, guards) = in_guard_order(nodes, entries);
    let mut list = Vec::with_capacity(entries.len());
    let mut steps = 0;
    for (i, (root, flags)) in entries.iter().enumerate() {
        let mut e = TNode {
            kind: ENTRY,
            a: *root,
            b: *flags,
            ..TNode::default()
        };
        if let Some((field, bit, yes)) = guards[i] {
            e = TNode {
                field,
                arg: bit,
                a: yes,
                b: flags | GUARD,
                ..e
            };
        }
        let r = memo[e.a as usize];
        steps += 1 + u64::from(r.depth);
        list.push(TNode { c: r.first, ..e });
    }
    // Skips: a run of one guard, or the rest of a dispatch block.
    let word = |g: &Guard| g.map(|(f, b, _)| (f, b / 64));
    let mut slots: Vec<TNode> = Vec::new();
    let mut i = 0;
    while i < entries.len() {
        let Some((_, low, _)) = guards[i] else {
            i += 1;
            continue;
        };
        // The block: this diagram's entries from i on with the same word.
        let mut end = i + 1;
        while end < entries.len()
            && entries[end - 1].1 & LAST == 0
            && word(&guards[end]) == word(&guards[i])
        {
            end += 1;
        }
        let bit_of = |j: usize| guards[j].map_or(0, |(_, b, _)| b);
        let high = bit_of(end - 1);
        // One slot per bit from the lowest, found by the bit's place in
        // the word (a count of trailing zeros). An `ANY`'s slots are one
        // per bit present, found by rank (a popcount), since its bits
        // scatter over two words; ranking these too was tried: the same
        // nodes here (subjects' bits are dense) and 385 more instructions
        // in the walker, whose entry code is inlined in every node slot.
        let base = first + entries.len() as u32 + slots.len() as u32;
        if high > low {
            let mut table = vec![TNode::default(); usize::from(high - low) + 1];
            for j in (i..end).rev() {
                table[usize::from(bit_of(j) - low)] = TNode {
                    cut: u128::from(first + j as u32),
                    ..list[j]
                };
            }
            slots.extend(table);
        }
        // Bits of the block's entries after j: those above j's own.
        let mut after = 0u64;
        for j in (i..end).rev() {
            let bit = bit_of(j) % 64;
            let later = if high > low { after & !(1 << bit) } else { 0 };
            let skip = if high > low {
                end - j
            } else {
                run(&entries, &guards, j)
            };
            let last = entries[j + skip - 1].1;
            let slot = base.wrapping_sub(u32::from(low % 64));
            list[j].cut = (u128::from(later) << 64)
                | (u128::from(slot) << 32)
                | (u128::from(last) << 24)
                | skip as u128;
            after |= 1 << bit;
        }
        i = end;
    }
    list.extend(slots);
    (list, steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nodes_are_written_into_the_zeros_llvm_emitted() {
        let table = |n: u32| Table {
            nodes: (0..n)
                .map(|i| TNode {
                    kind: SPLIT,
                    field: 1,
                    arg: 0x0203,
                    a: i,
                    b: 0x0405_0607,
                    c: 0x0809_0a0b,
                    cut: (0x1011_1213_1415_1617u128 << 64) | 0x1819_1a1b_1c1d_1e1f,
                })
                .collect(),
            max_steps: 0,
        };
        let mut object = super::super::llvm::emit(&[], b"{}", super::super::STDLIB, Some(2 * NODE))
            .expect("an object");
        assert!(
            table(3).write_into(&mut object).is_err(),
            "three nodes in room for two"
        );
        table(2).write_into(&mut object).expect("two nodes fit");
        use object::{Object as _, ObjectSection as _};
        let file = object::File::parse(&object[..]).expect("ELF");
        let data = file
            .section_by_name(runtime_loader::manifest::TABLE_SECTION)
            .and_then(|s| s.data().ok())
            .expect("the table section");
        // struct cilc_tnode, little-endian: kind, field, arg, a, b, c,
        // then the cut's high and low halves.
        let want = [
            SPLIT, 1, 3, 2, 0, 0, 0, 0, 7, 6, 5, 4, 0xb, 0xa, 9, 8, //
            0x17, 0x16, 0x15, 0x14, 0x13, 0x12, 0x11, 0x10, //
            0x1f, 0x1e, 0x1d, 0x1c, 0x1b, 0x1a, 0x19, 0x18,
        ];
        assert_eq!(&data[..NODE], &want[..]);
        assert_eq!(data[NODE + 4], 1, "the second node's a");
    }

    /// What the walker does from `n` for the key (fields by index), to the
    /// leaf's decision: splits and jumps as `walk_split` in cilc.c
    /// computes them, atom tests taking `a`.
    fn follow(nodes: &[TNode], mut n: u32, key: &[u128; 7]) -> u32 {
        loop {
            let t = nodes[n as usize];
            let v = key[usize::from(t.field & 7)];
            n = match t.kind {
                LEAF => return t.a,
                SPLIT | JUMP if v < t.cut => t.a,
                SPLIT => t.b,
                SPLIT2 => split2_side(&t, key),
                JUMP => {
                    let idx = (v - t.cut) >> (t.arg & 127);
                    if idx < u128::from(t.arg >> 7) {
                        t.c + idx as u32
                    } else {
                        t.b
                    }
                }
                _ => t.a,
            };
        }
    }

    /// Where a two-level split sends the key, as `walk_split2` in cilc.c:
    /// values past 32 bits compare as `NARROW`.
    fn split2_side(t: &TNode, key: &[u128; 7]) -> u32 {
        let (f, [c0, c1, c2], d) = split2_parts(t);
        let below = |i: usize, c: u128| key[usize::from(f[i])].min(NARROW) < c;
        match (below(1, c1), below(0, c0), below(2, c2)) {
            (true, true, _) => t.a,
            (true, false, _) => t.b,
            (false, _, true) => t.c,
            (false, _, false) => d,
        }
    }

    /// A table of leaves 5.. (decision i + 1) and a balanced split tree
    /// over `cuts` on `field` leading to them; returns it and its root.
    fn tree(field: u8, cuts: &[u128]) -> (Vec<TNode>, u32) {
        let mut nodes = vec![TNode::default(); 5];
        let leaves: Vec<u32> = (0..=cuts.len())
            .map(|i| push_leaf(&mut nodes, i as u32 + 1))
            .collect();
        let root = splits(&mut nodes, field, cuts, &leaves);
        (nodes, root)
    }

    fn push_leaf(nodes: &mut Vec<TNode>, decision: u32) -> u32 {
        nodes.push(TNode {
            kind: LEAF,
            a: decision,
            ..TNode::default()
        });
        nodes.len() as u32 - 1
    }

    /// A balanced split tree over `cuts` on `f` leading to `kids`.
    fn splits(nodes: &mut Vec<TNode>, f: u8, cuts: &[u128], kids: &[u32]) -> u32 {
        if cuts.is_empty() {
            return kids[0];
        }
        let m = cuts.len() / 2;
        let a = splits(nodes, f, &cuts[..m], &kids[..=m]);
        let b = splits(nodes, f, &cuts[m + 1..], &kids[m + 1..]);
        nodes.push(TNode {
            kind: SPLIT,
            field: f,
            cut: cuts[m],
            a,
            b,
            ..TNode::default()
        });
        nodes.len() as u32 - 1
    }

    #[test]
    fn aligned_cuts_become_one_jump_whose_slots_are_the_leaves() {
        // Seven dport cuts 16 apart: three levels of splits.
        let cuts: Vec<u128> = (1..=7).map(|i| i * 16).collect();
        let (old, root) = tree(4, &cuts);
        let (enc, at) = with_jumps(&old, [root].into_iter());
        let nodes = &enc.t.nodes;
        let j = nodes[at[root as usize] as usize];
        assert_eq!(
            (j.kind, j.field, j.cut, j.arg & 127, j.arg >> 7),
            (JUMP, 4, 16, 4, 6),
            "{j:?}"
        );
        // Below the base: the first leaf; from the last cut: the last.
        assert_eq!(nodes[j.a as usize], old[5]);
        assert_eq!(nodes[j.b as usize], old[12]);
        // The slots are copies of the leaves between.
        for s in 0..6 {
            assert_eq!(nodes[(j.c + s) as usize], old[6 + s as usize]);
        }
        // 5 heads, the leaf of no decision, 8 leaves, the jump and its 6
        // slots; no split is left.
        assert_eq!(nodes.len(), 5 + 1 + 8 + 1 + 6);
        for v in 0..200u128 {
            let key = [0, 0, 0, 0, v, 0, 0];
            assert_eq!(
                follow(nodes, at[root as usize], &key),
                follow(&old, root, &key)
            );
        }
    }

    #[test]
    fn one_level_of_splits_stays_a_split() {
        let (old, root) = tree(4, &[80]);
        let (enc, at) = with_jumps(&old, [root].into_iter());
        assert_eq!(enc.t.nodes[at[root as usize] as usize].kind, SPLIT);
    }

    /// Random diagrams over every field (IPv6-wide addresses, prefix-like
    /// and arbitrary cuts, shared subtrees): the table with jumps leads
    /// every key to the same leaf as the splits did.
    #[test]
    fn jumps_decide_as_the_splits_they_replace() {
        let mut rng = crate::gen::Rng::new(7);
        let (mut jumps, mut twos) = (0, 0);
        for round in 0..60 {
            let mut nodes = vec![TNode::default(); 5];
            for i in 0..20 {
                nodes.push(TNode {
                    kind: LEAF,
                    a: i + 1,
                    ..TNode::default()
                });
            }
            let wide = round % 3 == 0;
            let cut = |f: u8, rng: &mut crate::gen::Rng| -> u128 {
                let r = u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64());
                match (f, rng.next_u64() % 3) {
                    (0 | 1, 0) if wide => r & !((1u128 << (rng.next_u64() % 128)) - 1),
                    (0 | 1, _) if wide => r,
                    (0 | 1, 0) => (r & 0xffff_ffff) & !((1 << (rng.next_u64() % 32)) - 1),
                    (0 | 1, _) => r & 0xffff_ffff,
                    (3 | 4, 0) => (r & 0xffff) & !0xff,
                    _ => r % 300,
                }
            };
            // Bottom-up: each split's children among the nodes so far,
            // mostly the latest (deep same-field runs), some shared.
            let mut cuts_seen = Vec::new();
            for _ in 0..400 {
                let f = if rng.next_u64().is_multiple_of(4) {
                    (rng.next_u64() % 7) as u8
                } else {
                    (round % 5) as u8
                };
                let c = cut(f, &mut rng);
                let len = nodes.len() as u64;
                let pick = |rng: &mut crate::gen::Rng| {
                    if rng.next_u64().is_multiple_of(3) {
                        (5 + rng.next_u64() % (len - 5)) as u32
                    } else {
                        (len - 1 - rng.next_u64() % 8.min(len - 5)) as u32
                    }
                };
                let (a, b) = (pick(&mut rng), pick(&mut rng));
                nodes.push(TNode {
                    kind: SPLIT,
                    field: f,
                    cut: c,
                    a,
                    b,
                    ..TNode::default()
                });
                cuts_seen.push((f, c));
            }
            let root = nodes.len() as u32 - 1;
            let (enc, at) = with_jumps(&nodes, [root].into_iter());
            let mut new = enc.t.nodes;
            jumps += new.iter().filter(|n| n.kind == JUMP).count();
            two_levels(&mut new);
            twos += new.iter().filter(|n| n.kind == SPLIT2).count();
            let new = &new;
            let mut keys = Vec::new();
            for _ in 0..300 {
                let mut key = [0u128; 7];
                for (f, k) in key.iter_mut().enumerate() {
                    let near = cuts_seen[(rng.next_u64() % 400) as usize];
                    *k = match rng.next_u64() % 3 {
                        0 if near.0 == f as u8 => near.1,
                        1 if near.0 == f as u8 => near.1.wrapping_sub(1),
                        _ => cut(f as u8, &mut rng),
                    };
                }
                keys.push(key);
            }
            for key in &keys {
                assert_eq!(
                    follow(new, at[root as usize], key),
                    follow(&nodes, root, key),
                    "round {round}, key {key:?}"
                );
            }
        }
        assert!(jumps > 100, "only {jumps} jumps");
        assert!(twos > 100, "only {twos} two-level splits");
    }

    /// Splits on small cuts (no jump fits) become two-level splits that
    /// decide as they did, also for values past 32 bits (an IPv6 address
    /// in a split on small cuts) and at every cut and its neighbours; a
    /// split on a wider cut stays.
    #[test]
    fn narrow_splits_fold_two_levels_into_one_node() {
        let cuts = [7u128, 80, 443, 0xffff_fffe, 0xffff_ffff];
        // Below the first cut, a port split: another field below.
        let mut old = vec![TNode::default(); 5];
        let mut kids: Vec<u32> = (1..=7).map(|d| push_leaf(&mut old, d)).collect();
        kids[0] = splits(&mut old, 4, &[1024], &kids[..2]);
        kids.remove(1);
        let root = splits(&mut old, 0, &cuts, &kids);
        let mut new = old.clone();
        two_levels(&mut new);
        let top = new[root as usize];
        assert_eq!(top.kind, SPLIT2, "{top:?}");
        // Each walk meets half as many nodes (rounded up): the longest
        // went through four splits.
        assert_eq!(reaches(&old)[root as usize].depth, 5);
        assert_eq!(reaches(&new)[root as usize].depth, 3);
        let mut values: Vec<u128> = cuts.iter().flat_map(|c| [c - 1, *c, c + 1]).collect();
        values.extend([0, 1 << 32, (1 << 64) + 80, u128::MAX]);
        for v in values {
            for port in [0, 1023, 1024, 70000] {
                let key = [v, 0, 0, 0, port, 0, 0];
                assert_eq!(
                    follow(&new, root, &key),
                    follow(&old, root, &key),
                    "{key:?}"
                );
            }
        }
        // A cut past 32 bits: that split and its parent stay.
        let (old, root) = tree(0, &[1 << 40]);
        let mut new = old.clone();
        two_levels(&mut new);
        assert_eq!(new, old);
        assert_eq!(new[root as usize].kind, SPLIT);
    }

    /// A two-level split's fields read back as written, and `moved`
    /// renumbers its fourth kid too and keeps its bound.
    #[test]
    fn a_two_level_split_holds_its_fields_cuts_and_kids() {
        let mut t = split2([6, 0, 4], [1, 2, NARROW], [11, 12, 13, 14]);
        t.arg |= 0x1234 << 3;
        assert_eq!(TNode::from_bytes(&t.bytes()), t);
        assert_eq!(split2_parts(&t), ([6, 0, 4], [1, 2, NARROW], 14));
        assert_eq!(kids(&t).collect::<Vec<_>>(), [11, 12, 13, 14]);
        moved(&mut t, |k| k + 100);
        assert_eq!(kids(&t).collect::<Vec<_>>(), [111, 112, 113, 114]);
        assert_eq!(split2_parts(&t).0, [6, 0, 4]);
        assert_eq!(t.arg >> 3, 0x1234);
    }

    /// A split's bound is the best priority of a decision below it, a
    /// leaf of no decision counts for none, and the depth is the longest
    /// walk: what lets the walker skip what cannot beat its best.
    #[test]
    fn reach_is_the_best_decision_below_and_the_longest_walk() {
        let mut enc = Enc::new();
        let none = enc.leaf(0, u32::MAX);
        assert_eq!(none, NONE);
        let late = enc.leaf(9, 70);
        let early = enc.leaf(9, 30);
        let low = enc.split(Field::DstPort, 80, late, none);
        let root = enc.split(Field::SrcPort, 1024, low, early);
        let memo = reaches(&enc.t.nodes);
        assert_eq!(
            memo[root as usize],
            Reach {
                depth: 3,
                first: 30
            }
        );
        assert_eq!(
            memo[low as usize],
            Reach {
                depth: 2,
                first: 70
            }
        );
        assert_eq!(
            memo[none as usize],
            Reach {
                depth: 1,
                first: u32::MAX
            }
        );
    }

    /// Parts guarded by a subject bit are skipped in runs: whole diagrams
    /// only from a diagram's start, never past the end of one that has
    /// begun; a part whose other side decides something is not guarded.
    /// The parts a walk enters (their roots) and the diagrams it
    /// concludes, as `walk_enter` in cilc.c goes through a hook's entries
    /// for a packet whose end-1 predicate bits are `bits`.
    fn enter_all(nodes: &[TNode], first: u32, count: u32, bits: u128) -> (Vec<u32>, usize) {
        let (mut entry, end) = (first, first + count);
        let (mut walked, mut ends) = (Vec::new(), 0);
        while entry < end {
            let mut en = nodes[entry as usize];
            assert_eq!(en.kind, ENTRY);
            let mut flags = en.b;
            let skip = en.cut as u64;
            if flags & GUARD != 0 && bits >> en.arg & 1 == 0 {
                let word = (bits >> (u32::from(en.arg) / 64 * 64)) as u64;
                let later = word & (en.cut >> 64) as u64;
                if later == 0 {
                    entry += (skip & 0xff_ffff) as u32;
                    ends += usize::from((skip >> 24) as u32 & LAST != 0);
                    continue;
                }
                en = nodes[((skip >> 32) as u32).wrapping_add(later.trailing_zeros()) as usize];
                assert_eq!(en.kind, ENTRY, "a slot copies an entry");
                assert!(en.cut as u32 > entry, "a dispatch goes forward");
                entry = en.cut as u32;
                assert_eq!(nodes[entry as usize].a, en.a, "the slot copies its entry");
                flags = en.b;
            }
            walked.push(en.a);
            entry += 1;
            ends += usize::from(flags & LAST != 0);
        }
        (walked, ends)
    }

    /// The leaf a walk from `n` reaches, for split key `v` on every field
    /// and predicate bits `words` (of both ends), as cilc.c walks splits,
    /// bit tests and `ANY` chains.
    fn decide(nodes: &[TNode], mut n: u32, v: u128, words: &[u64; 8]) -> (u32, usize) {
        let mut visits = 0;
        loop {
            let t = nodes[n as usize];
            visits += 1;
            n = match t.kind {
                LEAF => return (t.a, visits),
                SPLIT if v < t.cut => t.a,
                SPLIT => t.b,
                SPLIT2 => split2_side(&t, &[v; 7]),
                BIT if words[usize::from(t.arg / 64)] >> (t.arg % 64) & 1 != 0 => t.a,
                BIT => t.b,
                // Word 7 holds the named-port slots that equal the port.
                PORT if words[7] >> (t.arg % 64) & 1 != 0 => t.a,
                PORT => t.b,
                ANY => {
                    let q = usize::from(t.arg) % 8;
                    let flip = u64::from(t.arg >> ANY_FLIP_SHIFT);
                    let m = u128::from((words[q] ^ flip) & t.cut as u64)
                        | u128::from(words[(q + 1) % 8] & (t.cut >> 64) as u64) << 64;
                    match m.count_ones() {
                        0 => t.b,
                        1 => t.c + (t.cut & (m - 1)).count_ones(),
                        _ => t.a,
                    }
                }
                k => panic!("kind {k}"),
            };
        }
    }

    #[test]
    fn any_nodes_skip_bit_chains_as_the_tests_would() {
        let mut enc = Enc::new();
        let end = enc.leaf(99, 99);
        // A chain of tests of one end's bits over two words, then one of
        // another word: each bit set decides its own leaf.
        let bits = [5u16, 70, 3, 5, 66, 9, 0, 200, 7];
        let mut next = end;
        let mut tests = Vec::new();
        for (i, b) in bits.iter().enumerate().rev() {
            let hit = enc.leaf(10 + i as u32, i as u32);
            next = enc.atom(&[AtomCode::Bit(Side::Dst, u32::from(*b))], 0, hit, next);
            tests.push(next);
        }
        tests.reverse();
        // The chain entered at its start and in its middle.
        let root = enc.split(Field::DstPort, 100, tests[0], tests[3]);
        let old = enc.t.nodes;
        let (new, at) = with_jumps(&old, [root].into_iter());
        let new = new.t.nodes;
        assert!(new.iter().filter(|t| t.kind == ANY).count() >= 2, "{new:?}");
        // A bit's slot is past its test: the walk that found the bit set
        // does not test it again.
        for t in new.iter().filter(|t| t.kind == ANY) {
            let bits = (0..128u16).filter(|b| t.cut >> b & 1 != 0);
            for (i, b) in bits.enumerate() {
                let s = new[(t.c + i as u32) as usize];
                let again = s.kind == BIT && s.field == t.field && s.arg == t.arg * 64 + b;
                assert!(!again, "slot {i} of {t:?} tests its bit again");
            }
        }
        let distinct = [0u16, 3, 5, 7, 9, 66, 70, 200];
        for set in 0..1u32 << distinct.len() {
            let mut words = [0u64; 8];
            for (i, b) in distinct.iter().enumerate() {
                if set >> i & 1 != 0 {
                    words[usize::from(b / 64)] |= 1 << (b % 64);
                }
            }
            for v in [50, 150] {
                let (want, _) = decide(&old, root, v, &words);
                let (got, _) = decide(&new, at[root as usize], v, &words);
                assert_eq!(got, want, "bits {words:x?}, v {v}");
            }
        }
    }

    #[test]
    fn a_test_known_on_its_way_is_skipped() {
        // Terms `from world tcp named pI`, then terms `from cluster tcp
        // named pI` (none of bits 0 and 1); every failure goes on to the
        // next term.
        let mut enc = Enc::new();
        let n = 6u32;
        let codes: Vec<AtomCode> = (0..n)
            .flat_map(|i| [AtomCode::Bit(Side::Src, 0), AtomCode::Port(i)])
            .chain((0..n).flat_map(|i| [AtomCode::NoBit(Side::Src, vec![0, 1]), AtomCode::Port(i)]))
            .collect();
        let end = enc.leaf(999, 999);
        let (mut next, mut cluster) = (end, end);
        for i in (0..2 * n).rev() {
            let hit = enc.leaf(i + 1, i);
            let port = enc.atom(&codes, 2 * i + 1, hit, next);
            next = enc.atom(&codes, 2 * i, port, next);
            if i == n {
                cluster = next;
            }
        }
        let root = next;
        let old = enc.t.nodes;
        let mut new = old.clone();
        skip_known(&mut new, [root].into_iter());
        assert_eq!(new.len(), old.len());
        // Not world: one test of bit 0, then the first cluster term's test
        // of bit 1. World, past the world terms: one test of bit 0, then
        // the end.
        assert_eq!(new[root as usize].b, old[cluster as usize].b, "{new:?}");
        assert_eq!(new[cluster as usize].a, end, "{new:?}");
        let walk = |nodes: &[TNode], words: &[u64; 8]| decide(nodes, root, 0, words).0;
        for bits in 0..4u64 {
            for ports in 0..1u64 << n {
                let words = [bits, 0, 0, 0, 0, 0, 0, ports];
                assert_eq!(
                    walk(&new, &words),
                    walk(&old, &words),
                    "bits {bits}, ports {ports:b}"
                );
            }
        }
    }

    /// A packet of `random_tests` diagrams: three fields, bits 0..4 of
    /// each end (end * 4 + bit), named-port slots 0..4 matched, flags.
    #[derive(Clone, Copy)]
    struct Pkt {
        v: [u128; 3],
        bits: u8,
        ports: u8,
        flags: u16,
    }

    /// The decision from `n`, and the tests on the way.
    fn walk_tests(nodes: &[TNode], mut n: u32, p: &Pkt) -> (u32, usize) {
        let mut tests = 0;
        loop {
            let t = nodes[n as usize];
            let yes = match t.kind {
                LEAF => return (t.a, tests),
                SPLIT => p.v[usize::from(t.field)] < t.cut,
                BIT => p.bits >> (t.field * 4 + t.arg as u8) & 1 != 0,
                PORT => p.ports >> t.arg & 1 != 0,
                FLAGS => p.flags & t.arg == t.c as u16,
                k => panic!("kind {k}"),
            };
            tests += 1;
            n = if yes { t.a } else { t.b };
        }
    }

    /// Random diagrams before the jumps: splits on three fields with small
    /// cuts, and atom tests (16 atoms: every one fits a node's knowledge),
    /// each node's children below it, mostly just below (long paths that
    /// test the same atoms and fields again), some shared.
    fn random_tests(rng: &mut crate::gen::Rng) -> Vec<TNode> {
        let mut nodes = vec![TNode::default(); 5];
        for i in 0..12 {
            nodes.push(TNode {
                kind: LEAF,
                a: i + 1,
                ..TNode::default()
            });
        }
        for _ in 0..300 {
            let len = nodes.len() as u64;
            let mut pick = || {
                if rng.below(4) == 0 {
                    (5 + rng.below(len - 5)) as u32
                } else {
                    (len - 1 - rng.below(6)) as u32
                }
            };
            let (a, b) = (pick(), pick());
            let r = rng.below(1 << 16);
            let t = match r % 4 {
                0 | 1 => TNode {
                    kind: SPLIT,
                    field: (r >> 2) as u8 % 3,
                    cut: u128::from(r >> 4) % 17,
                    ..TNode::default()
                },
                2 => TNode {
                    kind: [BIT, PORT][(r >> 2) as usize % 2],
                    field: (r >> 3) as u8 & 1,
                    arg: (r >> 4) as u16 % 4,
                    ..TNode::default()
                },
                _ => TNode {
                    kind: FLAGS,
                    arg: 3,
                    c: (r >> 2) as u32 % 4,
                    ..TNode::default()
                },
            };
            // A port test's `field` means nothing: keep it 0.
            let field = if t.kind == PORT { 0 } else { t.field };
            nodes.push(TNode { field, a, b, ..t });
        }
        nodes
    }

    #[test]
    fn tests_known_on_every_path_are_passed_over_and_decide_as_before() {
        let mut rng = crate::gen::Rng::new(11);
        let (mut before, mut after) = (0, 0);
        for _ in 0..40 {
            let old = random_tests(&mut rng);
            // Two roots: the last node, and one in the middle that is a
            // child too (it knows nothing, whatever its parents know).
            let roots = [old.len() as u32 - 1, old.len() as u32 / 2];
            let mut new = old.clone();
            skip_known(&mut new, roots.into_iter());
            assert_eq!(new.len(), old.len());
            for _ in 0..3000 {
                let p = Pkt {
                    v: [0; 3].map(|_| u128::from(rng.below(18))),
                    bits: rng.below(256) as u8,
                    ports: rng.below(16) as u8,
                    flags: rng.below(4) as u16,
                };
                for r in roots {
                    let (want, n) = walk_tests(&old, r, &p);
                    let (got, m) = walk_tests(&new, r, &p);
                    assert_eq!(got, want, "root {r}");
                    assert!(m <= n, "root {r}: {m} tests, were {n}");
                    (before, after) = (before + n, after + m);
                }
            }
        }
        // The diagrams test their 16 atoms and 3 fields again and again,
        // mostly through shared nodes, where only what every path knows
        // counts: fewer tests (8 % fewer with this seed).
        assert!(after * 100 < before * 95, "{after} tests, were {before}");
    }

    #[test]
    fn an_atom_and_a_range_known_through_other_tests_are_passed_over() {
        // x = bit 0 of the source, y = bit 48: x yes, y no, then x again
        // (what a world packet met in pods' ingress terms); and a port
        // below 80, then a protocol test, then the port below 80 again or
        // below 443.
        let mut nodes = vec![TNode::default(); 5];
        let leaf = |nodes: &mut Vec<TNode>, d: u32| push_leaf(nodes, d);
        let (l1, l2, l3, l4) = (
            leaf(&mut nodes, 1),
            leaf(&mut nodes, 2),
            leaf(&mut nodes, 3),
            leaf(&mut nodes, 4),
        );
        let mut push = |t: TNode| {
            nodes.push(t);
            nodes.len() as u32 - 1
        };
        let bit = |arg: u16, a: u32, b: u32| TNode {
            kind: BIT,
            arg,
            a,
            b,
            ..TNode::default()
        };
        let split = |field: u8, cut: u128, a: u32, b: u32| TNode {
            kind: SPLIT,
            field,
            cut,
            a,
            b,
            ..TNode::default()
        };
        let again = push(split(4, 80, l3, l4));
        let port443 = push(split(4, 443, l3, l4));
        let proto = push(split(2, 6, again, port443));
        let port80 = push(split(4, 80, proto, l2));
        let x2 = push(bit(0, port80, l1));
        let y = push(bit(48, l1, x2));
        let x1 = push(bit(0, y, l1));
        let old = nodes;
        let mut new = old.clone();
        skip_known(&mut new, [x1].into_iter());
        assert_eq!(new[y as usize].b, port80, "x is known set past y");
        assert_eq!(new[proto as usize].a, l3, "the port is below 80 there");
        assert_eq!(new[proto as usize].b, l3, "so below 443");
        // Nothing else changes: y's own test is not known, nor the
        // protocol's.
        assert_eq!(new[x1 as usize], old[x1 as usize]);
        assert_eq!(new[port80 as usize], old[port80 as usize]);
    }

    #[test]
    fn a_chain_entered_by_failed_port_tests_has_one_any() {
        // Terms that need a peer and a named port: each term's port test
        // hangs off its bit test, and its failure enters the chain at the
        // next term. One `ANY` at the start, not one per term (each would
        // copy the rest of the chain's firsts: quadratic).
        let mut enc = Enc::new();
        let n = 40u32;
        let codes: Vec<AtomCode> = (0..n)
            .flat_map(|i| [AtomCode::Bit(Side::Src, i), AtomCode::Port(i % 16)])
            .collect();
        let mut next = enc.leaf(999, 999);
        for i in (0..n).rev() {
            let hit = enc.leaf(i + 1, i);
            let port = enc.atom(&codes, 2 * i + 1, hit, next);
            next = enc.atom(&codes, 2 * i, port, next);
        }
        let root = enc.split(Field::DstPort, 100, next, NONE);
        let old = enc.t.nodes;
        let (new, _) = with_jumps(&old, [root].into_iter());
        let new = new.t.nodes;
        let anys: Vec<&TNode> = new.iter().filter(|t| t.kind == ANY).collect();
        assert_eq!(anys.len(), 1, "{anys:?}");
        // Its mask: every term's bit.
        assert_eq!(anys[0].cut.count_ones(), n);
        assert!(
            new.len() <= old.len() + n as usize + 1,
            "{} → {}",
            old.len(),
            new.len()
        );
    }

    #[test]
    fn chains_go_on_past_tests_of_none_of_the_world_bit() {
        // A pod's ingress: terms `from sN` (bit N) between terms `from
        // cluster tcp named metrics-K` (none of the world bit, then a
        // named port), then one `from world` (the world bit set: its
        // chain would go on where the bit is clear, so it ends the chain).
        let world = Side::Src;
        let mut codes = vec![
            AtomCode::NoBit(world, vec![PRED_WORLD]),
            AtomCode::Bit(world, PRED_WORLD),
        ];
        codes.extend((0..4).map(AtomCode::Port));
        codes.extend([20, 53, 64, 70, 90].map(|b| AtomCode::Bit(world, b)));
        // (first atom, second atom) by term, in priority order.
        let terms: [(u32, Option<u32>); 10] = [
            (6, None),
            (0, Some(2)),
            (7, None),
            (0, Some(3)),
            (8, None),
            (0, Some(4)),
            (9, None),
            (0, Some(5)),
            (10, None),
            (1, None),
        ];
        let mut enc = Enc::new();
        let mut next = enc.leaf(999, 999);
        for (i, (a, b)) in terms.iter().enumerate().rev() {
            let hit = enc.leaf(i as u32 + 1, i as u32);
            let yes = match b {
                Some(b) => enc.atom(&codes, *b, hit, next),
                None => hit,
            };
            next = enc.atom(&codes, *a, yes, next);
        }
        let root = enc.split(Field::DstPort, 100, next, NONE);
        let old = enc.t.nodes;
        let (new, at) = with_jumps(&old, [root].into_iter());
        let new = new.t.nodes;
        // One ANY over the selector bits and the world bit, flipped.
        let any = new
            .iter()
            .find(|t| t.kind == ANY)
            .unwrap_or_else(|| panic!("no ANY in {new:?}"));
        let bits: Vec<u16> = (0..128u16).filter(|b| any.cut >> b & 1 != 0).collect();
        assert_eq!(bits, [0, 20, 53, 64, 70, 90]);
        assert_eq!(any.arg >> ANY_FLIP_SHIFT, 1);
        // Every combination of the bits and named ports decides as before,
        // and a world peer (the world bit alone) passes the chain in one
        // node: the split, the ANY, the `from world` test, its leaf.
        let distinct = [0u16, 20, 53, 64, 70, 90];
        for set in 0..1u32 << (distinct.len() + 4) {
            let mut words = [0u64; 8];
            for (i, b) in distinct.iter().enumerate() {
                if set >> i & 1 != 0 {
                    words[usize::from(b / 64)] |= 1 << (b % 64);
                }
            }
            words[7] = u64::from(set >> distinct.len());
            let (want, _) = decide(&old, root, 50, &words);
            let (got, visits) = decide(&new, at[root as usize], 50, &words);
            assert_eq!(got, want, "bits {words:x?}");
            if words[..7] == [1, 0, 0, 0, 0, 0, 0] {
                assert_eq!((got, visits), (10, 4), "a world peer");
            }
        }
    }

    #[test]
    fn dispatch_enters_the_parts_of_the_bits_set_and_no_other() {
        let mut enc = Enc::new();
        // Part p: a leaf of its own behind a test of its bit (`guard`).
        let bits = [3u16, 3, 70, 5, 2, 9, 5, 0, 64, 66, 9];
        let mut entries = Vec::new();
        for (p, bit) in bits.iter().enumerate() {
            let leaf = enc.leaf(100 + p as u32, p as u32);
            let root = match bit {
                0 => leaf,
                b => enc.atom(&[AtomCode::Bit(Side::Dst, u32::from(*b))], 0, leaf, NONE),
            };
            // Diagrams: parts 0..3 a chain, 3.. the policy layer.
            let flags = match p {
                2 => LAST,
                p if p + 1 == bits.len() => POLICY | LAST,
                p if p > 2 => POLICY,
                _ => 0,
            };
            entries.push((root, flags));
        }
        let mut nodes = enc.t.nodes;
        let memo = reaches(&nodes);
        let first = nodes.len() as u32;
        let (list, _) = entry_nodes(&nodes, &memo, &entries, first);
        nodes.extend(list);
        let distinct = [2u16, 3, 5, 9, 64, 66, 70];
        for set in 0..1u32 << distinct.len() {
            let mask = distinct
                .iter()
                .enumerate()
                .filter(|(i, _)| set >> i & 1 != 0)
                .fold(0u128, |m, (_, b)| m | 1 << b);
            let (walked, ends) = enter_all(&nodes, first, entries.len() as u32, mask);
            let mut got: Vec<u32> = walked.iter().map(|r| nodes[*r as usize].a - 100).collect();
            got.sort();
            let want: Vec<u32> = (0..bits.len() as u32)
                .filter(|p| bits[*p as usize] == 0 || mask >> bits[*p as usize] & 1 != 0)
                .collect();
            assert_eq!(got, want, "bits {mask:#x}");
            assert_eq!(ends, 2, "both diagrams conclude (bits {mask:#x})");
        }
    }

    #[test]
    fn guarded_entries_skip_in_runs_that_keep_begun_diagrams() {
        let mut enc = Enc::new();
        let hit = enc.leaf(9, 1);
        let mut bit = |arg: u16, no: u32| {
            enc.push(TNode {
                kind: BIT,
                field: 1,
                arg,
                a: hit,
                b: no,
                ..TNode::default()
            })
        };
        let (a, b) = (bit(3, NONE), bit(4, NONE));
        let open = bit(3, hit);
        let nodes = &enc.t.nodes;
        assert_eq!(guard(nodes, a), Some((1, 3, hit)));
        assert_eq!(guard(nodes, open), None);
        assert_eq!(guard(nodes, hit), None);
        // Diagrams [0 1] [2 3] [4 5] [6 7], the last the policy layer.
        let entries = [
            (a, 0),
            (a, LAST),
            (a, 0),
            (a, LAST),
            (b, 0),
            (a, LAST),
            (a, POLICY),
            (a, POLICY | LAST),
        ];
        let guards: Vec<_> = entries.iter().map(|(r, _)| guard(nodes, *r)).collect();
        let runs: Vec<usize> = (0..entries.len())
            .map(|i| run(&entries, &guards, i))
            .collect();
        assert_eq!(runs, [4, 1, 2, 1, 1, 1, 2, 1]);
    }
}
