//! The diagram verifier.
//!
//! `structure` checks what every stage may assume: node ids in range and
//! children before parents (so the DAG has no cycle), cuts inside the
//! field's domain, linear leaves naming existing terms in priority order,
//! and leaf outcomes that name terms' outcomes. `agrees` checks meaning: on
//! the given keys and atom valuations, the diagram decides exactly as a
//! linear first-match over its own terms.

use super::{AtomId, Diagram, Node, Outcome};

pub fn structure(d: &Diagram, v6: bool) -> Result<(), String> {
    if d.root as usize >= d.nodes.len() {
        return Err(format!("root n{} out of range", d.root));
    }
    let outcomes: Vec<Outcome> = d.terms.iter().map(|t| t.outcome).collect();
    for (i, n) in d.nodes.iter().enumerate() {
        let child = |c: u32| -> Result<(), String> {
            if c as usize >= i {
                Err(format!("n{i} points to n{c}, which is not an earlier node"))
            } else {
                Ok(())
            }
        };
        match n {
            Node::Split { field, cut, lo, hi } => {
                if *cut == 0 || *cut > field.top(v6) {
                    return Err(format!(
                        "n{i}: cut {cut} outside the domain of {}",
                        field.name()
                    ));
                }
                child(*lo)?;
                child(*hi)?;
            }
            Node::Test { yes, no, .. } => {
                child(*yes)?;
                child(*no)?;
            }
            Node::Leaf(Some(o)) if !outcomes.contains(o) => {
                return Err(format!("n{i}: leaf outcome {o:?} of no term"))
            }
            Node::Leaf(_) => {}
            Node::Linear(ts) => {
                if ts.iter().any(|t| *t as usize >= d.terms.len())
                    || ts.windows(2).any(|w| w[0] >= w[1])
                {
                    return Err(format!(
                        "n{i}: linear leaf terms out of range or out of order"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Linear first match over the terms.
pub fn reference(
    d: &Diagram,
    key: &[u128; 7],
    mut atom: impl FnMut(AtomId) -> bool,
) -> Option<Outcome> {
    d.terms
        .iter()
        .find(|t| t.matches(key, &mut atom))
        .map(|t| t.outcome)
}

/// Keys where the diagram and its terms disagree (with the atom valuation
/// `atoms[i]` for atom i).
pub fn agrees(d: &Diagram, keys: &[[u128; 7]], atoms: &[bool]) -> Result<(), String> {
    for k in keys {
        let want = reference(d, k, |a| atoms[a as usize]);
        let (got, _) = d.classify(k, |a| atoms[a as usize]);
        if got != want {
            return Err(format!(
                "key {k:?}: diagram says {got:?}, first match says {want:?}"
            ));
        }
    }
    Ok(())
}

/// Every boundary of every term (and one below it): the keys at which a
/// wrong cut would show.
pub fn boundary_keys(d: &Diagram, limit: usize) -> Vec<[u128; 7]> {
    let mut keys = Vec::new();
    for t in &d.terms {
        let mut k = [0u128; 7];
        for (i, set) in t.fields.iter().enumerate() {
            if let Some(s) = set {
                k[i] = s[0].0;
            }
        }
        keys.push(k);
        for (i, set) in t.fields.iter().enumerate() {
            for (a, b) in set.iter().flatten() {
                for v in [a.wrapping_sub(1), *a, *b, b.wrapping_add(1)] {
                    let mut k2 = k;
                    k2[i] = v;
                    keys.push(k2);
                }
            }
        }
        if keys.len() > limit {
            break;
        }
    }
    keys
}
