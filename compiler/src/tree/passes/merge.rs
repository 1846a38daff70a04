//! Merge equal children and share identical subtrees.

use std::collections::HashMap;

use super::Arena;
use crate::tree::{Diagram, Node, NodeId};

pub fn run(d: &Diagram) -> Diagram {
    fn go(d: &Diagram, n: NodeId, arena: &mut Arena, memo: &mut HashMap<NodeId, NodeId>) -> NodeId {
        if let Some(m) = memo.get(&n) {
            return *m;
        }
        let new = match &d.nodes[n as usize] {
            Node::Split { field, cut, lo, hi } => {
                let (lo, hi) = (go(d, *lo, arena, memo), go(d, *hi, arena, memo));
                arena.add(Node::Split {
                    field: *field,
                    cut: *cut,
                    lo,
                    hi,
                })
            }
            Node::Test { atom, yes, no } => {
                let (yes, no) = (go(d, *yes, arena, memo), go(d, *no, arena, memo));
                arena.add(Node::Test {
                    atom: *atom,
                    yes,
                    no,
                })
            }
            leaf => arena.add(leaf.clone()),
        };
        memo.insert(n, new);
        new
    }
    let mut arena = Arena::new();
    let mut memo = HashMap::new();
    let roots = d
        .roots
        .iter()
        .map(|r| go(d, *r, &mut arena, &mut memo))
        .collect();
    arena.finish(d, roots)
}
