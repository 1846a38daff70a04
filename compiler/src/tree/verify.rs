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
    if let Some(r) = d.roots.iter().find(|r| **r as usize >= d.nodes.len()) {
        return Err(format!("root n{r} out of range"));
    }
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
            Node::Leaf(Some(t)) if *t as usize >= d.terms.len() => {
                return Err(format!("n{i}: leaf names no term t{t}"))
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

/// Keys at which a wrong cut would show: for every term and every pair of
/// terms, the lowest corner of their common region, and that corner with
/// each field moved to each boundary of either term (and one past it).
pub fn boundary_keys(d: &Diagram, limit: usize) -> Vec<[u128; 7]> {
    type Set = Option<Vec<(u128, u128)>>;
    fn corner(a: &[Set; 7], b: &[Set; 7]) -> Option<[u128; 7]> {
        let mut k = [0u128; 7];
        for i in 0..7 {
            let lo = |s: &Set| s.as_ref().map_or(0, |v| v[0].0);
            let hi = |s: &Set| s.as_ref().map_or(u128::MAX, |v| v[v.len() - 1].1);
            let v = lo(&a[i]).max(lo(&b[i]));
            if v > hi(&a[i]).min(hi(&b[i])) {
                return None;
            }
            k[i] = v;
        }
        Some(k)
    }
    let mut keys = Vec::new();
    let n = d.terms.len();
    'outer: for i in 0..n {
        for j in i..n {
            let (a, b) = (&d.terms[i].fields, &d.terms[j].fields);
            let Some(k) = corner(a, b) else { continue };
            keys.push(k);
            for (f, set) in a.iter().chain(b.iter()).enumerate() {
                for (lo, hi) in set.iter().flatten() {
                    for v in [lo.wrapping_sub(1), *lo, *hi, hi.wrapping_add(1)] {
                        let mut k2 = k;
                        k2[f % 7] = v;
                        keys.push(k2);
                    }
                }
            }
            if keys.len() > limit {
                break 'outer;
            }
        }
    }
    keys
}
