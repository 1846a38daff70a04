//! Construction: IR rules → terms → HyperSplit-style first-match diagrams.
//!
//! Terms: a rule becomes one term per combination of its peer kinds (an
//! address set, a selector or an entity on each side) and of its port kinds
//! (numeric ranges, or a named port), so each term is a plain conjunction of
//! numeric interval sets and atoms.
//!
//! Diagram: a node sees a region (one range per field, and the atoms known
//! true on its path) and the terms that can still match there, in priority
//! order. If the first one covers the region it decides (after testing the
//! atoms it still needs); if few terms are left they become a linear leaf;
//! otherwise the region is cut in two along the field and point that best
//! balance the terms (the median of the term boundaries inside the region,
//! per field, scored by the larger side). Equal children collapse and
//! identical nodes are shared.

use std::collections::{HashMap, HashSet};

use crate::fx::FxMap;

use ipnet::IpNet;

use super::cache::{self, Cache};
use super::{
    Atom, AtomId, Diagram, EndIs, Field, Forest, Hook, Node, NodeId, Outcome, Side, Term, TermId,
    FIELDS,
};
use crate::ir::{Layer, Peer, Rule, Validated};
use crate::resolve::{Action, Direction, Entity, PortSpec};

#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Terms at or below this count become a linear leaf (1: never).
    pub leaf_size: usize,
    /// Deeper nodes become linear leaves.
    pub max_depth: usize,
    /// Build a search index instead of a classifier: no atom tests but the
    /// subject guards, and each leaf lists every term that may match in
    /// its region, not only the first (for `Diagram::query`).
    pub index: bool,
    /// Try each subject's terms as one part before the width classes
    /// (see `diagram`).
    pub merge: bool,
    /// Halve clustered address blocks at the top of each part
    /// (`aligned_cut`): a table's walk visits fewer nodes, but the
    /// diagram is deeper, and a tree's code pays every level as a compare
    /// (ipc1_10k: mean depth 13.1 → 16.2, 1.35× → 1.57× parse-only).
    pub aligned: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            leaf_size: 4,
            max_depth: 64,
            index: false,
            merge: true,
            aligned: true,
        }
    }
}

/// Interns atoms of one hook.
#[derive(Default)]
struct Atoms {
    list: Vec<Atom>,
    index: HashMap<String, AtomId>,
}

impl Atoms {
    fn id(&mut self, a: Atom) -> AtomId {
        let key = format!("{a:?}");
        *self.index.entry(key).or_insert_with(|| {
            self.list.push(a);
            (self.list.len() - 1) as AtomId
        })
    }
}

type Set = Vec<(u128, u128)>;

/// One alternative for a side: a numeric address set or an atom.
enum Alt {
    Any,
    Addrs(Set),
    Atom(AtomId),
}

fn nets(list: &[IpNet], v6: bool) -> Set {
    let mut out: Set = list
        .iter()
        .filter_map(|n| match (n, v6) {
            (IpNet::V4(n), false) => Some((
                u32::from(n.network()) as u128,
                u32::from(n.broadcast()) as u128,
            )),
            (IpNet::V6(n), true) => Some((u128::from(n.network()), u128::from(n.broadcast()))),
            _ => None,
        })
        .collect();
    out.sort();
    out
}

fn side_alts(peers: &[Peer], side: Side, v6: bool, atoms: &mut Atoms) -> Vec<Alt> {
    if peers.is_empty() {
        return vec![Alt::Any];
    }
    let mut alts = Vec::new();
    let mut addrs: Set = Vec::new();
    for p in peers {
        match p {
            Peer::Entity(Entity::All) => return vec![Alt::Any],
            Peer::Entity(Entity::World) => {
                alts.push(Alt::Atom(atoms.id(Atom::End(side, EndIs::World))))
            }
            Peer::Entity(Entity::Host) => {
                alts.push(Alt::Atom(atoms.id(Atom::End(side, EndIs::Host))))
            }
            Peer::Entity(Entity::Cluster) => {
                alts.push(Alt::Atom(atoms.id(Atom::End(side, EndIs::Cluster))))
            }
            Peer::Selector(s) => alts.push(Alt::Atom(
                atoms.id(Atom::End(side, EndIs::Selector(s.clone()))),
            )),
            Peer::Addrs(list) => addrs.extend(nets(list, v6)),
        }
    }
    if !addrs.is_empty() {
        addrs.sort();
        alts.push(Alt::Addrs(addrs));
    }
    alts
}

fn ranges(specs: &[PortSpec]) -> Set {
    specs
        .iter()
        .filter_map(|s| match s {
            PortSpec::Range(a, b) => Some((*a as u128, *b as u128)),
            PortSpec::Named(_) => None,
        })
        .collect()
}

/// The terms of one rule in one hook (none when it cannot match there).
fn terms_of(r: &Rule, v6: bool, outcome: Outcome, atoms: &mut Atoms) -> Vec<Term> {
    let mut base_atoms = vec![atoms.id(Atom::Subject(r.subject.clone()))];
    let mut fields: [Option<Set>; 7] = Default::default();
    if !r.protos.is_empty() {
        let mut p: Set = r.protos.iter().map(|p| (*p as u128, *p as u128)).collect();
        p.sort();
        fields[Field::Proto.index()] = Some(p);
    }
    if !r.sports.is_empty() {
        fields[Field::SrcPort.index()] = Some(ranges(&r.sports));
    }
    if let Some(i) = r.icmp {
        fields[Field::IcmpType.index()] = Some(vec![(i.ty as u128, i.ty as u128)]);
        if let Some(c) = i.code {
            fields[Field::IcmpCode.index()] = Some(vec![(c as u128, c as u128)]);
        }
    }
    if let Some(f) = r.flags {
        base_atoms.push(atoms.id(Atom::Flags(f.value, f.mask)));
    }
    if r.l7.is_some() {
        base_atoms.push(atoms.id(Atom::L7(r.id)));
    }
    // Destination ports: numeric ranges as one alternative, each named port
    // as another.
    let mut dport_alts: Vec<(Option<Set>, Option<AtomId>)> = Vec::new();
    if r.dports.is_empty() {
        dport_alts.push((None, None));
    } else {
        let numeric = ranges(&r.dports);
        if !numeric.is_empty() {
            dport_alts.push((Some(numeric), None));
        }
        for p in &r.dports {
            if let PortSpec::Named(n) = p {
                dport_alts.push((None, Some(atoms.id(Atom::NamedPort(n.clone())))));
            }
        }
    }
    let src = side_alts(&r.src, Side::Src, v6, atoms);
    let dst = side_alts(&r.dst, Side::Dst, v6, atoms);
    let mut out = Vec::new();
    for s in &src {
        for d in &dst {
            for (dp, named) in &dport_alts {
                let mut t = Term {
                    fields: fields.clone(),
                    atoms: base_atoms.clone(),
                    outcome,
                };
                for (alt, field) in [(s, Field::SrcAddr), (d, Field::DstAddr)] {
                    match alt {
                        Alt::Any => {}
                        Alt::Addrs(set) => t.fields[field.index()] = Some(set.clone()),
                        Alt::Atom(a) => t.atoms.push(*a),
                    }
                }
                if let Some(dp) = dp {
                    t.fields[Field::DstPort.index()] = Some(dp.clone());
                }
                t.atoms.extend(named);
                // A term's atoms are tested in this order: the ends'
                // identities first, then named ports, flags, L7. Terms
                // that fail on their peer then fail on a chain of bit
                // tests, which the table skips in one node (`ANY`); a
                // named port first made chains of port tests no node
                // skips (the generated 100k policy: 7.9 a packet).
                t.atoms
                    .sort_unstable_by_key(|a| (test_rank(&atoms.list[*a as usize]), *a));
                t.atoms.dedup();
                for set in t.fields.iter_mut().flatten() {
                    *set = super::normalise(set);
                }
                out.push(t);
            }
        }
    }
    out
}

/// Where an atom's test goes among a term's (see `terms_of`).
fn test_rank(a: &Atom) -> u8 {
    match a {
        Atom::Subject(_) | Atom::End(..) => 0,
        Atom::NamedPort(_) => 1,
        Atom::Flags(..) => 2,
        Atom::L7(_) => 3,
    }
}

/// Build every hook's diagrams.
pub fn build(ir: &Validated, opts: &Options) -> Forest {
    build_with(ir, opts, None)
}

/// Build every hook's diagrams, reading and storing each subject's parts in
/// `cache` (the same diagrams as without it).
pub fn build_with(ir: &Validated, opts: &Options, cache: Option<&Cache>) -> Forest {
    // The four hooks share nothing. Two threads (this machine's cores;
    // more would only hold more builders in memory at once): IPv4 on one,
    // IPv6 on the other (the directions differ most in size).
    let family = |v6: bool| {
        [Direction::Ingress, Direction::Egress].map(|direction| {
            let name = format!("diagrams of {direction:?} IPv{}", if v6 { 6 } else { 4 });
            crate::timed(&name, || hook(ir, direction, v6, opts, cache))
        })
    };
    let ([iv4, ev4], [iv6, ev6]) = std::thread::scope(|s| {
        let v6 = s.spawn(|| family(true));
        let v4 = family(false);
        let v6 = v6.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        (v4, v6)
    });
    Forest {
        hooks: vec![iv4, iv6, ev4, ev6],
    }
}

/// One hook's diagrams: its chains' in file order, then its policy layer.
fn hook(
    ir: &Validated,
    direction: Direction,
    v6: bool,
    opts: &Options,
    cache: Option<&Cache>,
) -> Hook {
    let mut atoms = Atoms::default();
    let mut chains = Vec::new();
    for (ci, c) in ir
        .chains
        .iter()
        .enumerate()
        .filter(|(_, c)| c.direction == direction)
    {
        let terms: Vec<Term> = c
            .rules
            .iter()
            .flat_map(|id| terms_of(&ir.rules[*id as usize], v6, Outcome::Rule(*id), &mut atoms))
            .collect();
        if !terms.is_empty() {
            chains.push((ci as u32, diagram(terms, &atoms.list, v6, opts, cache)));
        }
    }
    let policy_rules = |action: Action| {
        ir.rules.iter().filter(move |r| {
            r.layer == Layer::Policy && r.direction == direction && r.action == action
        })
    };
    let mut terms: Vec<Term> = Vec::new();
    for r in policy_rules(Action::Deny).chain(policy_rules(Action::Allow)) {
        terms.extend(terms_of(r, v6, Outcome::Rule(r.id), &mut atoms));
    }
    for s in ir.sections.iter().filter(|s| s.direction == direction) {
        let a = atoms.id(Atom::Subject(s.subject.clone()));
        terms.push(Term {
            fields: Default::default(),
            atoms: vec![a],
            outcome: Outcome::DefaultDeny,
        });
    }
    let policy = diagram(terms, &atoms.list, v6, opts, cache);
    Hook {
        direction,
        v6,
        chains,
        policy,
        atoms: atoms.list,
    }
}

type State = ([(u128, u128); 7], Vec<TermId>);

struct Builder<'a> {
    terms: &'a [Term],
    opts: Options,
    nodes: Vec<Node>,
    interned: FxMap<Node, NodeId>,
    /// Sub-problems already built: the same region and live terms give the
    /// same node (parts have disjoint terms, so this holds across parts).
    done: FxMap<State, NodeId>,
    /// Atoms known true in the part being built (its subject).
    known: Vec<AtomId>,
    /// A trial's limits on `nodes` and on `work` (terms visited by cuts,
    /// so far); `over` once one was reached (what is built then is
    /// dropped: `rewind`).
    budget: usize,
    work: usize,
    work_budget: usize,
    over: bool,
}

fn intersects(set: &Option<Set>, (lo, hi): (u128, u128)) -> bool {
    set.as_ref()
        .is_none_or(|s| s.iter().any(|(a, b)| *a <= hi && lo <= *b))
}

fn covers(set: &Option<Set>, (lo, hi): (u128, u128)) -> bool {
    set.as_ref()
        .is_none_or(|s| s.iter().any(|(a, b)| *a <= lo && hi <= *b))
}

/// Does `outer` hold every value of `inner` within `(lo, hi)`? (Sets are
/// sorted; touching intervals count as one.)
fn holds(outer: &Option<Set>, inner: &Option<Set>, (lo, hi): (u128, u128)) -> bool {
    let Some(outer) = outer else {
        return true;
    };
    let whole = [(lo, hi)];
    let inner = inner.as_deref().unwrap_or(&whole);
    inner.iter().all(|&(a, b)| {
        let (mut a, b) = (a.max(lo), b.min(hi));
        if a > b {
            return true;
        }
        // Walk the outer intervals from the one that holds `a` on.
        for &(c, d) in outer {
            if c <= a && a <= d {
                if d >= b {
                    return true;
                }
                a = d + 1;
            }
        }
        false
    })
}

/// Is the field's set wide: unconstrained, or with one interval covering at
/// least half of the field's domain?
fn wide(set: &Option<Set>, top: u128) -> bool {
    set.as_ref()
        .is_none_or(|s| s.iter().any(|(a, b)| b - a >= top / 2))
}

/// Build a first-match diagram over `terms` (their atoms index `atoms`).
///
/// Terms are partitioned, and each part is its own tree in one shared arena
/// (the lowest matching term over all parts decides):
/// - by subject: a part's root tests its subject once, and below it the
///   subject is known. Without this every subject of the layer is tested
///   in priority order and the yes/no paths multiply (selector-heavy
///   policies took seconds per thousand rules). The runtime answers the
///   subject from the local endpoint, so an endpoint walks only the trees
///   of the policies that select it.
/// - within a subject, EffiCuts-style by address width: terms with a wide
///   source, a wide destination, both or neither are cut separately, so
///   that wide terms are not copied into every region of the narrow ones.
pub fn diagram(
    terms: Vec<Term>,
    atoms: &[Atom],
    v6: bool,
    opts: &Options,
    cache: Option<&Cache>,
) -> Diagram {
    let top = Field::SrcAddr.top(v6);
    let subject_of = |t: &Term| {
        t.atoms
            .iter()
            .copied()
            .find(|a| matches!(atoms[*a as usize], Atom::Subject(_)))
    };
    // Subject → its width classes → terms (in order of first appearance).
    type Classes = Vec<(usize, Vec<TermId>)>;
    let mut subjects: Vec<(Option<AtomId>, Classes)> = Vec::new();
    for (i, t) in terms.iter().enumerate() {
        let width = usize::from(wide(&t.fields[Field::SrcAddr.index()], top)) * 2
            + usize::from(wide(&t.fields[Field::DstAddr.index()], top));
        let subject = subject_of(t);
        let classes = match subjects.iter().position(|(s, _)| *s == subject) {
            Some(k) => &mut subjects[k].1,
            None => {
                subjects.push((subject, Vec::new()));
                &mut subjects.last_mut().expect("just pushed").1
            }
        };
        match classes.iter_mut().find(|(w, _)| *w == width) {
            Some((_, c)) => c.push(i as TermId),
            None => classes.push((width, vec![i as TermId])),
        }
    }
    // Each subject is built on its own (its parts share nothing with
    // another subject's terms), and so is each width class it is cut in:
    // what a part holds depends on its terms alone, which is what the part
    // cache (`cache`) keys on.
    let mut out = Parts::default();
    let build = Build {
        terms: &terms,
        atoms,
        v6,
        opts,
        cache,
    };
    for (subject, classes) in subjects {
        build.subject(subject, classes, &mut out);
    }
    Diagram {
        nodes: out.nodes,
        roots: out.roots,
        terms,
    }
}

/// Parts: nodes numbered from 0, and the roots.
#[derive(Debug, Default)]
pub(super) struct Parts {
    pub nodes: Vec<Node>,
    pub roots: Vec<NodeId>,
}

impl Parts {
    /// Add `more` after these nodes (its numbers moved past them).
    fn append(&mut self, more: Parts) {
        let base = self.nodes.len() as NodeId;
        self.roots.extend(more.roots.iter().map(|r| r + base));
        self.nodes.extend(more.nodes.into_iter().map(|n| match n {
            Node::Split { field, cut, lo, hi } => Node::Split {
                field,
                cut,
                lo: lo + base,
                hi: hi + base,
            },
            Node::Test { atom, yes, no } => Node::Test {
                atom,
                yes: yes + base,
                no: no + base,
            },
            leaf => leaf,
        }));
    }
}

/// What building one diagram's parts needs.
struct Build<'a> {
    terms: &'a [Term],
    atoms: &'a [Atom],
    v6: bool,
    opts: &'a Options,
    cache: Option<&'a Cache>,
}

impl Build<'_> {
    /// One subject's parts, added to `out`. Each part is one more walk
    /// for every packet: a subject's width classes are first cut as one
    /// part, kept when that stays within `MERGED_NODES` nodes and
    /// `MERGED_WORK` terms visited per term (ClassBench acl1_100k: 72,034
    /// nodes merged, 81,947 in four parts); else (wide terms copied
    /// everywhere: fw1_10k merged would take 6.5M nodes and 90 s) the
    /// trial stops there, what it built is dropped, and each class is
    /// built as a part of its own. The cache holds the merged part, or no
    /// part for a trial over budget (not tried again), and each class's
    /// part: one rule changed in a subject of four unmerged classes builds
    /// one class again (after the trial).
    fn subject(
        &self,
        subject: Option<AtomId>,
        classes: Vec<(usize, Vec<TermId>)>,
        out: &mut Parts,
    ) {
        if self.opts.merge && classes.len() > 1 {
            let merged = self.cached_or(subject, &classes, || {
                let mut all: Vec<TermId> = classes
                    .iter()
                    .flat_map(|(_, c)| c.iter().copied())
                    .collect();
                all.sort_unstable();
                let mut b = Builder::new(self.terms, self.opts);
                b.budget = all.len() * MERGED_NODES + 64;
                b.work_budget = all.len() * MERGED_WORK + 4096;
                let root = b.part(subject, self.v6, all);
                match b.over {
                    true => Parts::default(),
                    false => Parts {
                        nodes: b.nodes,
                        roots: vec![root],
                    },
                }
            });
            if !merged.roots.is_empty() {
                return out.append(merged);
            }
        }
        for class in classes {
            let one = [class];
            let part = self.cached_or(subject, &one, || {
                let mut b = Builder::new(self.terms, self.opts);
                let root = b.part(subject, self.v6, one[0].1.clone());
                Parts {
                    nodes: b.nodes,
                    roots: vec![root],
                }
            });
            out.append(part);
        }
    }

    /// The parts of `classes` of `subject`: from the cache when it holds
    /// them, else `build`'s (stored when there is a cache).
    fn cached_or(
        &self,
        subject: Option<AtomId>,
        classes: &[(usize, Vec<TermId>)],
        build: impl FnOnce() -> Parts,
    ) -> Parts {
        let Some(cache) = self.cache else {
            return build();
        };
        let key = cache::Subject::new(self.terms, self.atoms, subject, classes, self.v6, self.opts);
        cache.get(&key).unwrap_or_else(|| {
            let parts = build();
            cache.put(&key, &parts);
            parts
        })
    }
}

/// Levels at the top of a part cut by `aligned_cut`, where they hold this
/// many live terms at least (a small policy's few terms are better cut at
/// their own boundaries: halving would only add levels above them). Over
/// the first 4, 8, 12 and 16 levels (measured with no floor; with this
/// one, the same at 8), fw1_100k's walks visited 22.4, 21.1, 21.8 and 22.6
/// nodes a packet (32.1 with median cuts only).
const ALIGNED_LEVELS: usize = 8;
const ALIGNED_TERMS: usize = 16;

/// Regions of at most this many live terms drop the shadowed ones
/// (`unshadowed`: quadratic in them; a region this small is near a leaf).
const SHADOW_TERMS: usize = 64;

/// Nodes per term a subject's merged part may take (see `diagram`;
/// acl1_100k merged takes 1.6).
const MERGED_NODES: usize = 2;
/// Terms the cuts of a merged part may visit per term (its time: acl1_100k
/// merged visits 107; a generated chain that blows up visited 8,700 in
/// 7 s before its nodes reached their budget).
const MERGED_WORK: usize = 160;

impl<'a> Builder<'a> {
    fn new(terms: &'a [Term], opts: &Options) -> Builder<'a> {
        Builder {
            terms,
            opts: *opts,
            nodes: Vec::new(),
            interned: FxMap::default(),
            done: FxMap::default(),
            known: Vec::new(),
            budget: usize::MAX,
            work: 0,
            work_budget: usize::MAX,
            over: false,
        }
    }
}

impl Builder<'_> {
    /// One part: the diagram of `live` (terms of one subject), behind a
    /// test of the subject.
    fn part(&mut self, subject: Option<AtomId>, v6: bool, live: Vec<TermId>) -> NodeId {
        let mut region = FIELDS.map(|f| (0u128, f.top(v6)));
        self.known = subject.into_iter().collect();
        let mut root = self.node(&mut region, live, 0);
        if let Some(atom) = subject {
            let no = self.add(Node::Leaf(None));
            if root != no {
                root = self.add(Node::Test {
                    atom,
                    yes: root,
                    no,
                });
            }
        }
        root
    }

    fn add(&mut self, n: Node) -> NodeId {
        if self.over || self.nodes.len() >= self.budget {
            // Over budget: the trial is dropped; stop adding and unwind.
            self.over = true;
            return 0;
        }
        if let Some(id) = self.interned.get(&n) {
            return *id;
        }
        let id = self.nodes.len() as NodeId;
        self.nodes.push(n.clone());
        self.interned.insert(n, id);
        id
    }

    /// The node for `live` terms in `region`.
    fn node(&mut self, region: &mut [(u128, u128); 7], live: Vec<TermId>, depth: usize) -> NodeId {
        if self.over {
            return 0;
        }
        let state = (*region, live);
        if let Some(n) = self.done.get(&state) {
            return *n;
        }
        let (_, live) = state;
        if self.opts.index {
            // Regions of an index do not repeat: nothing to remember.
            return match live.is_empty() {
                true => self.add(Node::Leaf(None)),
                false => self.cut(region, live, depth),
            };
        }
        // Leading terms that cover the region decide by their atoms alone:
        // each becomes a chain of atom tests whose failures all go on to
        // the rest. (With one atom, every term that needs it is out when it
        // fails. With several, only the term itself: keeping which atom
        // failed would fork the rest of the problem once per atom,
        // exponentially in multi-atom rules.) Built as a loop, since such
        // runs can be thousands of terms long.
        // Atoms that failed alone on the way: terms needing one are out
        // (dropped lazily, as the run goes, so that a long run stays linear).
        let mut failed: HashSet<AtomId> = HashSet::new();
        let out = |terms: &[Term], failed: &HashSet<AtomId>, t: TermId| {
            terms[t as usize].atoms.iter().any(|a| failed.contains(a))
        };
        let mut at = 0;
        let mut run: Vec<(TermId, Vec<AtomId>)> = Vec::new();
        let mut n = loop {
            while at < live.len() && out(self.terms, &failed, live[at]) {
                at += 1;
            }
            let Some(&first) = live.get(at) else {
                break self.add(Node::Leaf(None));
            };
            let t0 = &self.terms[first as usize];
            if !t0
                .fields
                .iter()
                .zip(region.iter())
                .all(|(s, r)| covers(s, *r))
            {
                let rest: Vec<TermId> = live[at..]
                    .iter()
                    .copied()
                    .filter(|t| !out(self.terms, &failed, *t))
                    .collect();
                break self.cut(region, rest, depth);
            }
            let unknown: Vec<AtomId> = t0
                .atoms
                .iter()
                .copied()
                .filter(|a| !self.known.contains(a))
                .collect();
            if unknown.is_empty() {
                break self.add(Node::Leaf(Some(first)));
            }
            if let [atom] = unknown[..] {
                failed.insert(atom);
            }
            at += 1;
            run.push((first, unknown));
        };
        for (first, unknown) in run.into_iter().rev() {
            let no = n;
            n = unknown
                .iter()
                .rev()
                .fold(self.add(Node::Leaf(Some(first))), |yes, &atom| {
                    if yes == no {
                        yes
                    } else {
                        self.add(Node::Test { atom, yes, no })
                    }
                });
        }
        // (A trial over its budget has built nothing true: not remembered.)
        if !self.over {
            self.done.insert((*region, live), n);
        }
        n
    }

    /// Cut the region in two (or give up to a linear leaf).
    fn cut(&mut self, region: &mut [(u128, u128); 7], live: Vec<TermId>, depth: usize) -> NodeId {
        self.work += live.len();
        if self.work >= self.work_budget {
            self.over = true;
            return 0;
        }
        if live.len() <= self.opts.leaf_size || depth >= self.opts.max_depth {
            return self.linear(region, live);
        }
        let aligned =
            match self.opts.aligned && depth < ALIGNED_LEVELS && live.len() >= ALIGNED_TERMS {
                true => self.aligned_cut(region, &live),
                false => None,
            };
        let Some((field, cut)) = aligned.or_else(|| self.choose_cut(region, &live)) else {
            // Only in an index: every live term covers the region.
            return self.add(Node::Linear(live));
        };
        let i = field.index();
        let (lo, hi) = region[i];
        let side = |b: &Self, r: (u128, u128)| -> Vec<TermId> {
            live.iter()
                .copied()
                .filter(|t| intersects(&b.terms[*t as usize].fields[i], r))
                .collect()
        };
        let (left, right) = (side(self, (lo, cut - 1)), side(self, (cut, hi)));
        // A cut that leaves nearly every term on both sides only replicates
        // them (wildcard-heavy sets): a short list is cheaper to scan.
        let larger = left.len().max(right.len());
        if self.opts.leaf_size > 1
            && live.len() <= self.opts.leaf_size * 8
            && larger * 20 >= live.len() * 19
        {
            return self.linear(region, live);
        }
        region[i] = (lo, cut - 1);
        let lo_node = self.node(region, left, depth + 1);
        region[i] = (cut, hi);
        let hi_node = self.node(region, right, depth + 1);
        region[i] = (lo, hi);
        if lo_node == hi_node {
            lo_node
        } else {
            self.add(Node::Split {
                field,
                cut,
                lo: lo_node,
                hi: hi_node,
            })
        }
    }

    /// A linear leaf of `live`, less the terms shadowed in the region.
    fn linear(&mut self, region: &[(u128, u128); 7], live: Vec<TermId>) -> NodeId {
        let live = match !self.opts.index && live.len() <= SHADOW_TERMS {
            true => self.unshadowed(region, live),
            false => live,
        };
        self.add(Node::Linear(live))
    }

    /// `live` without the terms an earlier live term shadows here: one
    /// that matches every packet of the region the later one matches (its
    /// sets hold the later one's, within the region, and it needs no atom
    /// the later one does not) is always the first match, so the later
    /// one never decides in this region. Policies repeat rules across
    /// policies (the generated policy's host egress holds ~30 copies of
    /// `allow to c28 tcp 443 snat to …`, which no cut separates), and a
    /// wide term cut into a region an earlier narrow one fills is dead
    /// there.
    fn unshadowed(&self, region: &[(u128, u128); 7], live: Vec<TermId>) -> Vec<TermId> {
        let mut kept: Vec<TermId> = Vec::with_capacity(live.len());
        for t in live {
            let later = &self.terms[t as usize];
            let shadowed = kept.iter().any(|k| {
                let earlier = &self.terms[*k as usize];
                earlier.atoms.iter().all(|a| later.atoms.contains(a))
                    && (0..FIELDS.len())
                        .all(|i| holds(&earlier.fields[i], &later.fields[i], region[i]))
            });
            if !shadowed {
                kept.push(t);
            }
        }
        kept
    }

    /// Halve an address field's region (it is aligned: a power-of-two
    /// block) where most live terms lie within one half of it: on the
    /// field most of them do. Address sets cluster (ClassBench's prefixes
    /// sit in a few blocks): median cuts at the top split the clusters
    /// and copy what spans them, and a packet outside every cluster walks
    /// as deep as one inside; halving leaves prefixes whole and sends such
    /// a packet to an empty block within a few levels.
    fn aligned_cut(&self, region: &[(u128, u128); 7], live: &[TermId]) -> Option<(Field, u128)> {
        let mut best: Option<(usize, Field, u128)> = None;
        for f in [Field::SrcAddr, Field::DstAddr] {
            let (lo, hi) = region[f.index()];
            let span = hi - lo;
            if span == 0 || span & span.wrapping_add(1) != 0 {
                continue;
            }
            let mid = lo + span / 2 + 1;
            // A live term meets the region: it lies within one half when
            // it meets only one.
            let narrow = live
                .iter()
                .map(|t| &self.terms[*t as usize].fields[f.index()])
                .filter(|set| intersects(set, (lo, mid - 1)) != intersects(set, (mid, hi)))
                .count();
            if narrow * 2 > live.len() && best.is_none_or(|(n, ..)| narrow > n) {
                best = Some((narrow, f, mid));
            }
        }
        best.map(|(_, f, cut)| (f, cut))
    }

    /// The field and cut point (`< cut` / `>= cut`) that best balance the
    /// live terms, if some term has a boundary strictly inside the region
    /// (in a classifier one has: the first term does not cover it).
    fn choose_cut(&self, region: &[(u128, u128); 7], live: &[TermId]) -> Option<(Field, u128)> {
        let mut best: Option<(usize, usize, Field, u128)> = None;
        for f in FIELDS {
            let (lo, hi) = region[f.index()];
            let mut cuts: Vec<u128> = Vec::new();
            for t in live {
                if let Some(set) = &self.terms[*t as usize].fields[f.index()] {
                    for (a, b) in set {
                        if *a > lo && *a <= hi {
                            cuts.push(*a);
                        }
                        if *b >= lo && *b < hi {
                            cuts.push(b + 1);
                        }
                    }
                }
            }
            if cuts.is_empty() {
                continue;
            }
            cuts.sort_unstable();
            cuts.dedup();
            let cut = cuts[cuts.len() / 2];
            let count = |r: (u128, u128)| {
                live.iter()
                    .filter(|t| intersects(&self.terms[**t as usize].fields[f.index()], r))
                    .count()
            };
            let (l, r) = (count((lo, cut - 1)), count((cut, hi)));
            let score = (l.max(r), l + r);
            if best.is_none_or(|(m, s, ..)| score < (m, s)) {
                best = Some((score.0, score.1, f, cut));
            }
        }
        best.map(|(_, _, f, cut)| (f, cut))
    }
}
