//! Semantic diff of two policies: the packets whose verdict changes.
//!
//! Stage: **two `ir::Validated` (with their `tree::Forest`s) → `Vec<Class>`**.
//!
//! Only packets that a changed rule matches can change verdict: elsewhere
//! both sides decide with the same rules in the same order. So rules are
//! paired first (by content, ignoring names and positions: in order within
//! a chain, as a multiset among policy rules; default deny per section),
//! and for each rule left unpaired on either side, its region is refined —
//! split along the boundaries of whichever rule is first there on either
//! side — until both sides decide the whole piece one way. Pieces where the
//! verdicts differ are the flow classes, merged when they touch.
//!
//! Conditions on identities (subject, peer selectors, entities, named
//! ports, TCP flags, L7 blocks) are taken as the changed rule states them,
//! alone and together with those of each rule it overlaps (up to a bound),
//! skipping combinations that cannot hold (`lint::atoms`).

use std::collections::HashMap;

use serde::Serialize;

use crate::diag::render::position;
use crate::eval::Verdict;
use crate::ir::{Layer, RuleId, Validated};
use crate::lint::atoms;
use crate::lint::space::{bounds, covers, meets, pieces, uncovered, Region};
use crate::resolve::{Action, Direction};
use crate::tree::{dump, Atom, AtomId, Diagram, Forest, Hook, Outcome, TermId, FIELDS};

/// Overlapping rules whose conditions are combined with a changed rule's.
const MAX_PARTNERS: usize = 64;
/// Refinement steps per changed rule and set of conditions.
const BUDGET: usize = 200_000;

/// How one side decides a flow class.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Decided {
    pub verdict: &'static str,
    pub reason: &'static str,
    /// The deciding rule's name and line, if a rule decides.
    pub rule: Option<String>,
    pub line: Option<usize>,
}

/// A set of packets whose verdict changes, all decided alike on each side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Class {
    pub direction: &'static str,
    pub family: &'static str,
    /// Field → range as written (`any` left out).
    pub fields: Vec<(&'static str, String)>,
    /// Conditions on identities, as text.
    pub conditions: Vec<String>,
    pub old: Decided,
    pub new: Decided,
    #[serde(skip)]
    region: Region,
    #[serde(skip)]
    keys: Vec<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct Diff {
    pub classes: Vec<Class>,
    /// Changed rules whose search ran out of budget: the diff may miss
    /// packets there, so it is not proof of equivalence.
    pub incomplete: Vec<String>,
}

impl Diff {
    pub fn equivalent(&self) -> bool {
        self.classes.is_empty() && self.incomplete.is_empty()
    }
}

/// A rule's content, without its name, id or position.
fn rule_key(ir: &Validated, r: RuleId) -> String {
    let r = &ir.rules[r as usize];
    let layer = match r.layer {
        Layer::Policy => "policy".to_string(),
        Layer::Chain { chain, .. } => format!("chain {}", ir.chains[chain as usize].name),
    };
    format!(
        "{layer} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?}",
        r.action,
        r.direction,
        r.subject,
        r.src,
        r.dst,
        r.protos,
        r.dports,
        r.sports,
        r.icmp,
        r.flags,
        r.l7
    )
}

/// An atom by content (an L7 atom names its rule's block, not its id).
fn atom_key(ir: &Validated, a: &Atom) -> String {
    match a {
        Atom::L7(r) => format!("l7 {:?}", ir.rules[*r as usize].l7),
        a => format!("{a:?}"),
    }
}

/// Rules of each side with no counterpart on the other.
fn unpaired(old: &Validated, new: &Validated) -> (Vec<bool>, Vec<bool>) {
    let mut a = vec![true; old.rules.len()];
    let mut b = vec![true; new.rules.len()];
    // Chains: the longest common subsequence of each chain (by name).
    for oc in &old.chains {
        let Some(nc) = new
            .chains
            .iter()
            .find(|c| c.name == oc.name && c.direction == oc.direction)
        else {
            continue;
        };
        let x: Vec<String> = oc.rules.iter().map(|r| rule_key(old, *r)).collect();
        let y: Vec<String> = nc.rules.iter().map(|r| rule_key(new, *r)).collect();
        let mut t = vec![vec![0u32; y.len() + 1]; x.len() + 1];
        for i in (0..x.len()).rev() {
            for j in (0..y.len()).rev() {
                t[i][j] = if x[i] == y[j] {
                    t[i + 1][j + 1] + 1
                } else {
                    t[i + 1][j].max(t[i][j + 1])
                };
            }
        }
        let (mut i, mut j) = (0, 0);
        while i < x.len() && j < y.len() {
            if x[i] == y[j] {
                a[oc.rules[i] as usize] = false;
                b[nc.rules[j] as usize] = false;
                i += 1;
                j += 1;
            } else if t[i + 1][j] >= t[i][j + 1] {
                i += 1;
            } else {
                j += 1;
            }
        }
    }
    // Policy rules: as a multiset.
    let mut left: HashMap<String, Vec<RuleId>> = HashMap::new();
    for r in old.rules.iter().filter(|r| r.layer == Layer::Policy) {
        left.entry(rule_key(old, r.id)).or_default().push(r.id);
    }
    for r in new.rules.iter().filter(|r| r.layer == Layer::Policy) {
        if let Some(id) = left.get_mut(&rule_key(new, r.id)).and_then(|v| v.pop()) {
            a[id as usize] = false;
            b[r.id as usize] = false;
        }
    }
    (a, b)
}

/// One side of one hook.
struct Side<'a> {
    ir: &'a Validated,
    src: &'a str,
    hook: &'a Hook,
    keys: Vec<String>,
}

enum First {
    /// The first term that meets the region covers it (or none meets it).
    Uniform(Option<TermId>),
    /// Split along this field's set.
    Split(usize, Vec<(u128, u128)>),
}

impl<'a> Side<'a> {
    fn new(ir: &'a Validated, src: &'a str, hook: &'a Hook) -> Side<'a> {
        let keys = hook.atoms.iter().map(|a| atom_key(ir, a)).collect();
        Side {
            ir,
            src,
            hook,
            keys,
        }
    }

    fn lists(&self) -> impl Iterator<Item = &'a Diagram> + 'a {
        let h = self.hook;
        h.chains.iter().map(|(_, d)| d).chain([&h.policy])
    }

    fn first(&self, d: &Diagram, cands: &[TermId], r: &Region, alpha: &[String]) -> First {
        for t in cands {
            let term = &d.terms[*t as usize];
            if !meets(term, r)
                || !term
                    .atoms
                    .iter()
                    .all(|a| alpha.contains(&self.keys[*a as usize]))
            {
                continue;
            }
            return match uncovered(term, r) {
                None if covers(term, r) => First::Uniform(Some(*t)),
                Some((i, set)) => First::Split(i, set),
                None => First::Uniform(Some(*t)),
            };
        }
        First::Uniform(None)
    }

    fn decided(&self, rule: Option<RuleId>, verdict: Verdict, reason: &'static str) -> Decided {
        Decided {
            verdict: match verdict {
                Verdict::Allow => "allow",
                Verdict::Drop => "drop",
            },
            reason,
            rule: rule.map(|r| self.ir.rules[r as usize].name.clone()),
            line: rule
                .map(|r| position(self.src, self.ir.rules[r as usize].span.start as usize).line),
        }
    }

    /// The decision over the whole region, or where to split it. `cands`
    /// holds, per list, the terms that may meet the region.
    fn decide(
        &self,
        cands: &[Vec<TermId>],
        r: &Region,
        alpha: &[String],
    ) -> Result<Decided, (usize, Vec<(u128, u128)>)> {
        let mut accepted = None;
        let lists: Vec<&Diagram> = self.lists().collect();
        let n = lists.len();
        for (k, d) in lists.iter().enumerate() {
            let t = match self.first(d, &cands[k], r, alpha) {
                First::Split(i, set) => return Err((i, set)),
                First::Uniform(t) => t,
            };
            let Some(t) = t else { continue };
            let outcome = d.terms[t as usize].outcome;
            if k + 1 == n {
                return Ok(match outcome {
                    Outcome::Rule(x) if self.ir.rules[x as usize].action == Action::Deny => {
                        self.decided(Some(x), Verdict::Drop, "matched-deny")
                    }
                    Outcome::Rule(x) => self.decided(Some(x), Verdict::Allow, "matched-allow"),
                    Outcome::DefaultDeny => self.decided(None, Verdict::Drop, "default-deny"),
                });
            }
            if let Outcome::Rule(x) = outcome {
                if self.ir.rules[x as usize].action == Action::Drop {
                    return Ok(self.decided(Some(x), Verdict::Drop, "chain-drop"));
                }
                accepted.get_or_insert(x);
            }
        }
        Ok(match accepted {
            Some(x) => self.decided(Some(x), Verdict::Allow, "chain-accept"),
            None => self.decided(None, Verdict::Allow, "no-policy"),
        })
    }

    /// Per list, the terms that meet `r`.
    fn candidates(&self, r: &Region) -> Vec<Vec<TermId>> {
        self.lists()
            .map(|d| {
                (0..d.terms.len() as TermId)
                    .filter(|t| meets(&d.terms[*t as usize], r))
                    .collect()
            })
            .collect()
    }
}

/// A condition on identities: the atom, its key, and how to say it.
#[derive(Clone, PartialEq)]
struct Cond {
    atom: Atom,
    key: String,
    text: String,
}

fn cond(side: &Side<'_>, a: AtomId) -> Cond {
    let atom = side.hook.atoms[a as usize].clone();
    let text = match &atom {
        Atom::L7(r) => format!(
            "the L7 request passes the block of `{}`",
            side.ir.rules[*r as usize].name
        ),
        a => dump::atom(a),
    };
    Cond {
        key: side.keys[a as usize].clone(),
        atom,
        text,
    }
}

fn consistent(conds: &[Cond]) -> bool {
    atoms::consistent(conds.iter().map(|c| &c.atom))
}

/// Refine `start` under conditions `alpha` until both sides are uniform.
fn refine(
    old: &Side<'_>,
    new: &Side<'_>,
    start: Region,
    alpha: &[String],
    out: &mut Vec<(Region, Decided, Decided)>,
) -> bool {
    let (co, cn) = (old.candidates(&start), new.candidates(&start));
    let mut stack = vec![start];
    let mut budget = BUDGET;
    while let Some(r) = stack.pop() {
        if budget == 0 {
            return false;
        }
        budget -= 1;
        let split = match (old.decide(&co, &r, alpha), new.decide(&cn, &r, alpha)) {
            (Ok(a), Ok(b)) => {
                if a.verdict != b.verdict {
                    out.push((r, a, b));
                }
                continue;
            }
            (Err(s), _) | (_, Err(s)) => s,
        };
        let (i, set) = split;
        let (outside, inside) = pieces(&set, r[i]);
        for p in outside.into_iter().chain(inside) {
            let mut x = r;
            x[i] = p;
            stack.push(x);
        }
    }
    true
}

/// Merge classes that differ in one field by adjacent ranges.
fn merge(mut classes: Vec<Class>) -> Vec<Class> {
    loop {
        let mut merged = false;
        'outer: for i in 0..classes.len() {
            for j in i + 1..classes.len() {
                let (a, b) = (&classes[i], &classes[j]);
                if (a.direction, a.family, &a.conditions, &a.old, &a.new)
                    != (b.direction, b.family, &b.conditions, &b.old, &b.new)
                {
                    continue;
                }
                let differ: Vec<usize> = (0..7).filter(|k| a.region[*k] != b.region[*k]).collect();
                if let [k] = differ[..] {
                    let ((x0, x1), (y0, y1)) = (a.region[k], b.region[k]);
                    if x1.checked_add(1) == Some(y0) || y1.checked_add(1) == Some(x0) {
                        let mut c = classes.swap_remove(j);
                        c.region[k] = (x0.min(y0), x1.max(y1));
                        classes[i].region = c.region;
                        merged = true;
                        break 'outer;
                    }
                }
            }
        }
        if !merged {
            return classes;
        }
    }
}

/// The flow classes whose verdict differs between `old` and `new`.
pub fn diff(old: (&Validated, &str, &Forest), new: (&Validated, &str, &Forest)) -> Diff {
    let (changed_old, changed_new) = unpaired(old.0, new.0);
    let mut result = Diff::default();
    for (ho, hn) in old.2.hooks.iter().zip(&new.2.hooks) {
        let so = Side::new(old.0, old.1, ho);
        let sn = Side::new(new.0, new.1, hn);
        let v6 = ho.v6;
        // Changed terms: of unpaired rules, and default-deny markers whose
        // subject has no counterpart.
        let markers = |s: &Side<'_>| -> Vec<String> {
            s.hook
                .policy
                .terms
                .iter()
                .filter(|t| t.outcome == Outcome::DefaultDeny)
                .map(|t| s.keys[t.atoms[0] as usize].clone())
                .collect()
        };
        let (mo, mn) = (markers(&so), markers(&sn));
        let mut seeds: Vec<(&Side<'_>, &crate::tree::Term)> = Vec::new();
        for (side, changed, other) in [(&so, &changed_old, &mn), (&sn, &changed_new, &mo)] {
            for d in side.lists() {
                for t in &d.terms {
                    let keep = match t.outcome {
                        Outcome::Rule(r) => changed[r as usize],
                        Outcome::DefaultDeny => !other.contains(&side.keys[t.atoms[0] as usize]),
                    };
                    if keep {
                        seeds.push((side, t));
                    }
                }
            }
        }
        let mut found: Vec<(Region, Vec<Cond>, Decided, Decided)> = Vec::new();
        for (side, t) in seeds {
            let region = bounds(t, v6);
            let base: Vec<Cond> = t.atoms.iter().map(|a| cond(side, *a)).collect();
            // The changed rule's own conditions, then with each overlapping
            // rule's.
            let mut alphas: Vec<Vec<Cond>> = vec![base.clone()];
            'partners: for s in [&so, &sn] {
                for d in s.lists() {
                    for u in &d.terms {
                        if alphas.len() > MAX_PARTNERS {
                            break 'partners;
                        }
                        if !meets(u, &region) {
                            continue;
                        }
                        let mut a = base.clone();
                        for x in &u.atoms {
                            let c = cond(s, *x);
                            if !a.iter().any(|y| y.key == c.key) {
                                a.push(c);
                            }
                        }
                        if consistent(&a) && !alphas.contains(&a) {
                            alphas.push(a);
                        }
                    }
                }
            }
            for alpha in alphas {
                if !consistent(&alpha) {
                    continue;
                }
                let keys: Vec<String> = alpha.iter().map(|c| c.key.clone()).collect();
                let mut pieces = Vec::new();
                if !refine(&so, &sn, region, &keys, &mut pieces) {
                    let name = match t.outcome {
                        Outcome::Rule(r) => side.ir.rules[r as usize].name.clone(),
                        Outcome::DefaultDeny => "default deny".into(),
                    };
                    if !result.incomplete.contains(&name) {
                        result.incomplete.push(name);
                    }
                }
                for (r, a, b) in pieces {
                    // Keep the fewest conditions that show a change.
                    let known = found.iter().any(|(fr, fa, x, y)| {
                        *fr == r && fa.iter().all(|c| keys.contains(&c.key)) && (x, y) == (&a, &b)
                    });
                    if !known {
                        found.push((r, alpha.clone(), a, b));
                    }
                }
            }
        }
        let classes: Vec<Class> = found
            .into_iter()
            .map(|(region, alpha, old, new)| Class {
                direction: match ho.direction {
                    Direction::Ingress => "ingress",
                    Direction::Egress => "egress",
                },
                family: if v6 { "ipv6" } else { "ipv4" },
                fields: Vec::new(),
                keys: alpha.iter().map(|c| c.key.clone()).collect(),
                conditions: alpha.into_iter().map(|c| c.text).collect(),
                old,
                new,
                region,
            })
            .collect();
        let merged = merge(classes);
        // A class that another one with fewer conditions contains says
        // nothing new.
        let kept: Vec<Class> = merged
            .iter()
            .enumerate()
            .filter(|(i, c)| {
                !merged.iter().enumerate().any(|(j, d)| {
                    j != *i
                        && (d.old.verdict, d.new.verdict) == (c.old.verdict, c.new.verdict)
                        && d.keys.iter().all(|k| c.keys.contains(k))
                        && (0..7).all(|f| {
                            d.region[f].0 <= c.region[f].0 && c.region[f].1 <= d.region[f].1
                        })
                        && (d.keys.len() < c.keys.len() || d.region != c.region || j < *i)
                })
            })
            .map(|(_, c)| c.clone())
            .collect();
        for mut c in kept {
            c.fields = FIELDS
                .iter()
                .filter(|f| c.region[f.index()] != (0, f.top(v6)))
                .map(|f| {
                    (
                        f.name(),
                        dump::range(*f, c.region[f.index()].0, c.region[f.index()].1, v6),
                    )
                })
                .collect();
            result.classes.push(c);
        }
    }
    result
}

fn decided_text(d: &Decided) -> String {
    let mut s = d.verdict.to_string();
    match (&d.rule, d.line) {
        (Some(r), Some(l)) => s.push_str(&format!(" by `{r}` (line {l})")),
        _ => s.push_str(&format!(" ({})", d.reason.replace('-', " "))),
    }
    s
}

/// The classes for people, one per paragraph.
pub fn text(d: &Diff) -> String {
    let mut out = String::new();
    for c in &d.classes {
        let fields: Vec<String> = c.fields.iter().map(|(f, r)| format!("{f} {r}")).collect();
        let what = if fields.is_empty() {
            "every packet".to_string()
        } else {
            fields.join(", ")
        };
        out.push_str(&format!("{} {}: {what}\n", c.direction, c.family));
        if !c.conditions.is_empty() {
            out.push_str(&format!("  where {}\n", c.conditions.join(" and ")));
        }
        out.push_str(&format!(
            "  {} -> {}\n",
            decided_text(&c.old),
            decided_text(&c.new)
        ));
    }
    for r in &d.incomplete {
        out.push_str(&format!(
            "incomplete: the search around `{r}` ran out of budget; packets there may change too\n"
        ));
    }
    out
}
