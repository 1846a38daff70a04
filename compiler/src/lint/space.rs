//! Regions of a hook's numeric packet space, and the search for a point
//! that some terms match and others do not.
//!
//! The search splits the region along the boundaries of the first term in
//! the way: the pieces outside it drop that term, the pieces inside keep it
//! (it now covers them in that field, so the next split is along another
//! field or another term). It is exact, and bounded by a step budget.

use crate::tree::{normalise, Term, FIELDS};

/// One inclusive range per field (`tree::FIELDS` order).
pub type Region = [(u128, u128); 7];

/// The whole space of a hook.
pub fn full(v6: bool) -> Region {
    FIELDS.map(|f| (0, f.top(v6)))
}

/// The smallest region holding every point a term matches.
pub fn bounds(t: &Term, v6: bool) -> Region {
    let mut r = full(v6);
    for (i, set) in t.fields.iter().enumerate() {
        if let Some(s) = set {
            let lo = s.iter().map(|x| x.0).min().unwrap_or(0);
            let hi = s.iter().map(|x| x.1).max().unwrap_or(0);
            r[i] = (lo, hi);
        }
    }
    r
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Search {
    /// A point in the region that every positive term matches and no
    /// negative term does.
    Found([u128; 7]),
    /// There is none.
    Empty,
    /// The budget ran out first.
    GaveUp,
}

pub(crate) fn meets(t: &Term, r: &Region) -> bool {
    t.fields.iter().zip(r).all(|(set, (lo, hi))| {
        set.as_ref()
            .is_none_or(|s| s.iter().any(|(a, b)| a <= hi && lo <= b))
    })
}

pub(crate) fn covers(t: &Term, r: &Region) -> bool {
    uncovered(t, r).is_none()
}

/// A field of `r` that `t` does not cover, with `t`'s merged set there
/// (merged, so that adjacent intervals count as covering together).
pub(crate) fn uncovered(t: &Term, r: &Region) -> Option<(usize, Vec<(u128, u128)>)> {
    t.fields.iter().enumerate().find_map(|(i, set)| {
        let set = set.as_ref()?;
        let (lo, hi) = r[i];
        let set = normalise(set);
        if set.iter().any(|(a, b)| *a <= lo && hi <= *b) {
            None
        } else {
            Some((i, set))
        }
    })
}

/// A point that reads well: a host address rather than `.0`, TCP or UDP
/// when the protocol is free, a non-zero port.
fn pick(r: &Region) -> [u128; 7] {
    let mut p = r.map(|(lo, _)| lo);
    for i in [0, 1] {
        let (lo, hi) = r[i];
        // A free address: 10.0.0.1 or fd00::1.
        if lo == 0 && hi == u32::MAX as u128 {
            p[i] = 0x0a00_0001;
        } else if lo == 0 && hi == u128::MAX {
            p[i] = 0xfd00 << 112 | 1;
        } else if lo < hi && lo & 0xff == 0 {
            p[i] = lo + 1;
        }
    }
    let (lo, hi) = r[2];
    if let Some(proto) = [6u128, 17].into_iter().find(|x| lo <= *x && *x <= hi) {
        p[2] = proto;
    }
    for i in [3, 4] {
        let (lo, hi) = r[i];
        if lo == 0 && hi > 0 {
            p[i] = if hi >= 40000 { 40000 } else { hi };
        }
    }
    p
}

type Intervals = Vec<(u128, u128)>;

/// Cut `lo..=hi` by a merged set: the pieces outside it and inside it.
pub fn pieces(set: &[(u128, u128)], (lo, hi): (u128, u128)) -> (Intervals, Intervals) {
    let mut outside = Vec::new();
    let mut inside = Vec::new();
    let mut at = lo;
    for &(a, b) in set {
        if b < lo || a > hi {
            continue;
        }
        let (a, b) = (a.max(lo), b.min(hi));
        if a > at {
            outside.push((at, a - 1));
        }
        inside.push((a, b));
        if b == hi {
            return (outside, inside);
        }
        at = b + 1;
    }
    outside.push((at, hi));
    (outside, inside)
}

/// Search `region` for a point that every term of `pos` and none of `neg`
/// matches, numerically (atoms are the caller's business). Depth first,
/// with an explicit stack: the pieces can nest thousands deep.
pub fn find(region: &Region, pos: &[&Term], neg: &[&Term], mut budget: usize) -> Search {
    let neg: Vec<&Term> = neg.iter().copied().filter(|t| meets(t, region)).collect();
    let mut stack: Vec<(Region, Vec<&Term>)> = vec![(*region, neg)];
    while let Some((r, neg)) = stack.pop() {
        if budget == 0 {
            return Search::GaveUp;
        }
        budget -= 1;
        // Narrow the region into the positive terms first.
        if let Some((i, set)) = pos.iter().find_map(|p| uncovered(p, &r)) {
            let (lo, hi) = r[i];
            for (a, b) in set.into_iter().rev() {
                if b >= lo && a <= hi {
                    let mut piece = r;
                    piece[i] = (a.max(lo), b.min(hi));
                    stack.push((piece, neg.clone()));
                }
            }
            continue;
        }
        let mut live: Vec<&Term> = Vec::with_capacity(neg.len());
        let mut covered = false;
        for t in neg {
            if meets(t, &r) {
                // One term covering the whole region settles it (a
                // catch-all near the end would otherwise come last).
                if covers(t, &r) {
                    covered = true;
                    break;
                }
                live.push(t);
            }
        }
        if covered {
            continue;
        }
        let Some(first) = live.first() else {
            return Search::Found(pick(&r));
        };
        let Some((i, set)) = uncovered(first, &r) else {
            continue;
        };
        // Pieces outside the first term (it is out of the way there) are
        // tried first, then pieces inside it.
        let (outside, inside) = pieces(&set, r[i]);
        let piece = |x: (u128, u128)| {
            let mut p = r;
            p[i] = x;
            p
        };
        for x in inside.into_iter().rev() {
            stack.push((piece(x), live.clone()));
        }
        for x in outside.into_iter().rev() {
            stack.push((piece(x), live[1..].to_vec()));
        }
    }
    Search::Empty
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{Field, Outcome};

    fn term(fields: &[(Field, &[(u128, u128)])]) -> Term {
        let mut t = Term {
            fields: Default::default(),
            atoms: Vec::new(),
            outcome: Outcome::DefaultDeny,
        };
        for (f, set) in fields {
            t.fields[f.index()] = Some(set.to_vec());
        }
        t
    }

    #[test]
    fn finds_the_gap_between_two_negatives() {
        let p = term(&[(Field::DstPort, &[(1, 100)])]);
        let a = term(&[(Field::DstPort, &[(1, 49)])]);
        let b = term(&[(Field::DstPort, &[(51, 100)])]);
        let Search::Found(pt) = find(&full(false), &[&p], &[&a, &b], 1000) else {
            panic!("expected a point");
        };
        assert_eq!(pt[Field::DstPort.index()], 50);
        let c = term(&[(Field::DstPort, &[(50, 50)])]);
        assert_eq!(
            find(&full(false), &[&p], &[&a, &b, &c], 1000),
            Search::Empty
        );
    }

    #[test]
    fn covering_needs_every_field() {
        let p = term(&[(Field::Proto, &[(6, 6)]), (Field::DstPort, &[(80, 80)])]);
        let n = term(&[(Field::DstPort, &[(0, 1000)]), (Field::Proto, &[(17, 17)])]);
        assert!(matches!(
            find(&full(true), &[&p], &[&n], 1000),
            Search::Found(_)
        ));
        let n2 = term(&[
            (Field::DstPort, &[(0, 1000)]),
            (Field::Proto, &[(6, 6), (17, 17)]),
        ]);
        assert_eq!(find(&full(true), &[&p], &[&n2], 1000), Search::Empty);
        assert_eq!(find(&full(true), &[&p], &[&n2], 1), Search::GaveUp);
    }
}
