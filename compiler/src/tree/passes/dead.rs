//! Remove branches that no packet can take: a cut at or below the lowest
//! value the path allows always goes high, one above the highest always low;
//! an atom tested again on a path takes the branch of its first test.

use std::collections::HashMap;

use super::Arena;
use crate::tree::{AtomId, Diagram, Node, NodeId, FIELDS};

type Ctx = ([(u128, u128); 7], Vec<(AtomId, bool)>);

pub fn run(d: &Diagram, v6: bool) -> Diagram {
    fn go(
        d: &Diagram,
        n: NodeId,
        ctx: &mut Ctx,
        arena: &mut Arena,
        memo: &mut HashMap<(NodeId, Ctx), NodeId>,
    ) -> NodeId {
        let key = (n, ctx.clone());
        if let Some(m) = memo.get(&key) {
            return *m;
        }
        let new = match &d.nodes[n as usize] {
            Node::Split { field, cut, lo, hi } => {
                let i = field.index();
                let (a, b) = ctx.0[i];
                if *cut <= a {
                    go(d, *hi, ctx, arena, memo)
                } else if *cut > b {
                    go(d, *lo, ctx, arena, memo)
                } else {
                    ctx.0[i] = (a, cut - 1);
                    let l = go(d, *lo, ctx, arena, memo);
                    ctx.0[i] = (*cut, b);
                    let h = go(d, *hi, ctx, arena, memo);
                    ctx.0[i] = (a, b);
                    arena.add(Node::Split {
                        field: *field,
                        cut: *cut,
                        lo: l,
                        hi: h,
                    })
                }
            }
            Node::Test { atom, yes, no } => match ctx.1.iter().find(|(a, _)| a == atom) {
                Some((_, true)) => go(d, *yes, ctx, arena, memo),
                Some((_, false)) => go(d, *no, ctx, arena, memo),
                None => {
                    ctx.1.push((*atom, true));
                    let y = go(d, *yes, ctx, arena, memo);
                    ctx.1.last_mut().expect("pushed").1 = false;
                    let o = go(d, *no, ctx, arena, memo);
                    ctx.1.pop();
                    arena.add(Node::Test {
                        atom: *atom,
                        yes: y,
                        no: o,
                    })
                }
            },
            leaf => arena.add(leaf.clone()),
        };
        memo.insert(key, new);
        new
    }
    let mut ctx: Ctx = (FIELDS.map(|f| (0, f.top(v6))), Vec::new());
    let mut arena = Arena::new();
    let mut memo = HashMap::new();
    let roots = d
        .roots
        .iter()
        .map(|r| go(d, *r, &mut ctx, &mut arena, &mut memo))
        .collect();
    arena.finish(d, roots)
}
