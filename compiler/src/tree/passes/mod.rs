//! Passes over a diagram, each in its own module; `verify` checks that a
//! pass keeps the diagram well-formed and its decisions unchanged.
//!
//! - `merge`: collapse tests whose two children are the same node, and
//!   share identical nodes (hash-consing).
//! - `dead`: remove branches that no packet can reach (a cut outside the
//!   range known on the path, an atom already decided on the path).

pub mod dead;
pub mod merge;

use std::collections::HashMap;

use super::{Diagram, Node, NodeId};

/// Rebuilds a node arena bottom-up with sharing; passes emit through it so
/// that children always come before their parents.
pub(crate) struct Arena {
    pub nodes: Vec<Node>,
    interned: HashMap<Node, NodeId>,
}

impl Arena {
    pub fn new() -> Arena {
        Arena {
            nodes: Vec::new(),
            interned: HashMap::new(),
        }
    }

    /// Add a node, collapsing a test with equal children to the child.
    pub fn add(&mut self, n: Node) -> NodeId {
        match n {
            Node::Split { lo, hi, .. } if lo == hi => return lo,
            Node::Test { yes, no, .. } if yes == no => return yes,
            _ => {}
        }
        if let Some(id) = self.interned.get(&n) {
            return *id;
        }
        let id = self.nodes.len() as NodeId;
        self.nodes.push(n.clone());
        self.interned.insert(n, id);
        id
    }

    pub fn finish(self, old: &Diagram, roots: Vec<NodeId>) -> Diagram {
        Diagram {
            nodes: self.nodes,
            roots,
            terms: old.terms.clone(),
        }
    }
}
