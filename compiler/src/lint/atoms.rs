//! Which atoms cannot hold together.
//!
//! Only exclusions that follow from how the runtime answers atoms
//! (`tree::atom_holds`) are listed: world, the host and an endpoint are
//! different identities; an endpoint has one value per label and one
//! namespace. Anything not listed is taken as possible together.

use crate::ir::{Selector, Subject};
use crate::resolve::{LabelMatch, LabelReq, NamespaceReq};
use crate::tree::{Atom, EndIs};

/// Can every atom of the list hold at once?
pub fn consistent<'a>(atoms: impl Iterator<Item = &'a Atom> + Clone) -> bool {
    let list: Vec<&Atom> = atoms.collect();
    list.iter()
        .enumerate()
        .all(|(i, a)| list[i + 1..].iter().all(|b| compatible(a, b)))
}

fn compatible(a: &Atom, b: &Atom) -> bool {
    match (a, b) {
        (Atom::Subject(x), Atom::Subject(y)) => subjects(x, y),
        (Atom::End(s, x), Atom::End(t, y)) if s == t => ends(x, y) && ends(y, x),
        _ => true,
    }
}

fn subjects(x: &Subject, y: &Subject) -> bool {
    use Subject::*;
    match (x, y) {
        (Host, Host) | (EndpointsAndHost, _) | (_, EndpointsAndHost) => true,
        (Host, _) | (_, Host) => false,
        (Selector(a), Selector(b)) => selectors(a, b),
        _ => true,
    }
}

/// One side of the symmetric relation.
fn ends(x: &EndIs, y: &EndIs) -> bool {
    match (x, y) {
        (EndIs::World, EndIs::World) => true,
        (EndIs::World, _) => false,
        (EndIs::Host, EndIs::Selector(_)) => false,
        (EndIs::Selector(a), EndIs::Selector(b)) => selectors(a, b),
        _ => true,
    }
}

fn selectors(a: &Selector, b: &Selector) -> bool {
    let ns = match (&a.namespace, &b.namespace) {
        (Some(NamespaceReq::Names(x)), Some(NamespaceReq::Names(y))) => {
            x.iter().any(|n| y.contains(n))
        }
        (Some(NamespaceReq::Labels(x)), Some(NamespaceReq::Labels(y))) => labels(x, y),
        _ => true,
    };
    ns && labels(&a.labels, &b.labels)
}

fn labels(x: &[LabelReq], y: &[LabelReq]) -> bool {
    x.iter().all(|p| {
        y.iter()
            .filter(|q| q.key == p.key)
            .all(|q| label(&p.op, &q.op) && label(&q.op, &p.op))
    })
}

/// One side of the symmetric relation, for one key.
fn label(p: &LabelMatch, q: &LabelMatch) -> bool {
    use LabelMatch::*;
    match (p, q) {
        (In(a), In(b)) => a.iter().any(|v| b.contains(v)),
        (In(a), NotIn(b)) => a.iter().any(|v| !b.contains(v)),
        (In(_), Absent) | (Exists, Absent) => false,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::Side;

    fn sel(key: &str, op: LabelMatch) -> Selector {
        Selector {
            labels: vec![LabelReq {
                key: key.into(),
                op,
            }],
            namespace: None,
        }
    }

    #[test]
    fn exclusions() {
        let web = sel("app", LabelMatch::In(vec!["web".into()]));
        let db = sel("app", LabelMatch::In(vec!["db".into()]));
        let not_web = sel("app", LabelMatch::NotIn(vec!["web".into()]));
        let end = |e: EndIs| Atom::End(Side::Src, e);
        let pair = |a: &Atom, b: &Atom| consistent([a, b].into_iter());
        assert!(!pair(
            &end(EndIs::World),
            &end(EndIs::Selector(web.clone()))
        ));
        assert!(!pair(&end(EndIs::Cluster), &end(EndIs::World)));
        assert!(pair(&end(EndIs::Cluster), &end(EndIs::Host)));
        assert!(!pair(
            &end(EndIs::Selector(web.clone())),
            &end(EndIs::Selector(db.clone()))
        ));
        assert!(!pair(
            &end(EndIs::Selector(web.clone())),
            &end(EndIs::Selector(not_web))
        ));
        assert!(pair(
            &end(EndIs::World),
            &Atom::End(Side::Dst, EndIs::Selector(web.clone()))
        ));
        assert!(!pair(
            &Atom::Subject(Subject::Host),
            &Atom::Subject(Subject::Selector(db))
        ));
        assert!(pair(
            &Atom::Subject(Subject::EndpointsAndHost),
            &Atom::Subject(Subject::Host)
        ));
    }
}
