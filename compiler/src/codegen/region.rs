//! What every packet reaching a diagram's linear leaf is known to satisfy,
//! so that both back ends leave out the checks the path above already made.
//!
//! Stage: **`Diagram` → `Regions`** (one `Region` per `Node::Linear`).
//! A region is a box: per field, the values the cuts on the way allow, as
//! a hull over every path to the node (nodes are shared); and the atoms
//! tested true on every path.

use crate::fx::FxMap;
use crate::tree::{AtomId, Diagram, Node, NodeId};

#[derive(Clone, PartialEq, Debug)]
pub struct Region {
    /// Per field (`tree::Field` index), lo..=hi.
    pub ranges: [(u128, u128); 7],
    /// Sorted.
    pub atoms: Vec<AtomId>,
}

impl Region {
    pub fn all() -> Region {
        Region {
            ranges: [(0, u128::MAX); 7],
            atoms: Vec::new(),
        }
    }

    /// Grow to hold `other` too: the hull of the ranges, the atoms both know.
    fn join(&mut self, other: &Region) {
        for (o, x) in self.ranges.iter_mut().zip(other.ranges) {
            *o = (o.0.min(x.0), o.1.max(x.1));
        }
        self.atoms.retain(|a| other.atoms.contains(a));
    }
}

/// The region of every linear leaf reached from the roots.
pub type Regions = FxMap<NodeId, Region>;

/// Computed parents before children; a node's region is dropped once
/// passed on (only the leaves' are kept: at 100k rules a region per node
/// would take hundreds of megabytes).
pub fn linear_leaves(d: &Diagram) -> Regions {
    // Reverse post-order: parents before children.
    let mut order = Vec::new();
    let mut seen = vec![false; d.nodes.len()];
    for &root in &d.roots {
        let mut stack = vec![(root, false)];
        while let Some((n, done)) = stack.pop() {
            if done {
                order.push(n);
                continue;
            }
            if std::mem::replace(&mut seen[n as usize], true) {
                continue;
            }
            stack.push((n, true));
            stack.extend(kids(&d.nodes[n as usize]).map(|(c, _)| (c, false)));
        }
    }
    order.reverse();
    let mut open: FxMap<NodeId, Region> = FxMap::default();
    for &root in &d.roots {
        open.insert(root, Region::all());
    }
    let mut leaves = Regions::default();
    for n in order {
        let Some(here) = open.remove(&n) else {
            continue;
        };
        let node = &d.nodes[n as usize];
        if let Node::Linear(_) = node {
            leaves.insert(n, here);
            continue;
        }
        for (c, step) in kids(node) {
            let mut r = here.clone();
            match step {
                Step::Low(f, cut) => {
                    let hi = &mut r.ranges[f].1;
                    *hi = (*hi).min(cut.saturating_sub(1));
                }
                Step::High(f, cut) => {
                    let lo = &mut r.ranges[f].0;
                    *lo = (*lo).max(cut);
                }
                Step::Holds(atom) => {
                    if let Err(i) = r.atoms.binary_search(&atom) {
                        r.atoms.insert(i, atom);
                    }
                }
                Step::Fails => {}
            }
            match open.get_mut(&c) {
                Some(old) => old.join(&r),
                None => {
                    open.insert(c, r);
                }
            }
        }
    }
    leaves
}

/// The way from a node to a child.
enum Step {
    Low(usize, u128),
    High(usize, u128),
    Holds(AtomId),
    Fails,
}

fn kids(n: &Node) -> impl Iterator<Item = (NodeId, Step)> {
    let two = match n {
        Node::Split { field, cut, lo, hi } => Some([
            (*lo, Step::Low(field.index(), *cut)),
            (*hi, Step::High(field.index(), *cut)),
        ]),
        Node::Test { atom, yes, no } => Some([(*yes, Step::Holds(*atom)), (*no, Step::Fails)]),
        Node::Leaf(_) | Node::Linear(_) => None,
    };
    two.into_iter().flatten()
}
