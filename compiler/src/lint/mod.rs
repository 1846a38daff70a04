//! Lints from the decision diagrams.
//!
//! Pipeline stage: **`ir::Validated` + `tree::Forest` → `Vec<Diagnostic>`**.
//!
//! Each first-match list of a hook (a chain, or the policy layer: denies,
//! allows, then default-deny markers) is indexed with a diagram built in
//! index mode, and each term is asked, exactly, over the numeric fields:
//! - does it decide some packet (no earlier term matches it there)? A rule
//!   none of whose terms does is **shadowed**; the earlier rules that cover
//!   it are named (trimmed to the ones needed).
//! - where it decides, would the next match give the same verdict? A rule
//!   for which that holds everywhere is **redundant**.
//! - for a policy deny: which allows does it override? (a note, with an
//!   example packet)
//!
//! and each policy section whether it allows nothing or everything.
//!
//! Atoms (subjects, selectors, entities, named ports, flags, L7) are taken
//! as free booleans, except for pairs that cannot hold together (`atoms`:
//! world and an endpoint selector at one end, `app=a` and `app=b`, ...).
//! That over-approximates what the runtime can see and keeps the claims
//! sound: a rule reported shadowed or redundant is so for every possible
//! packet; a correlation the model misses (one selector implying another)
//! can only hide a finding. A search that runs out of budget never produces
//! a finding either.

pub(crate) mod atoms;
pub mod space;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::diag::{Code, Diagnostic};
use crate::eval::Verdict;
use crate::ir::{Layer, RuleId, Validated};
use crate::resolve::{Action, Direction};
use crate::tree::build::{self, Options};
use crate::tree::{dump, Atom, AtomId, Field, Forest, Hook, Outcome, Term, TermId};
use space::{bounds, find, full, Search};

/// Steps allowed to one search.
const BUDGET: usize = 4096;
/// Later terms with another verdict tried per term before giving up.
const MAX_ALTERNATIVES: usize = 64;
/// Shadowing rules named in a report.
const MAX_NAMED: usize = 5;

/// What the searches found about one rule, over every hook.
#[derive(Default)]
struct Facts {
    terms: usize,
    deciding: usize,
    /// Deciding terms whose removal changes no verdict.
    redundant: usize,
    shadowers: BTreeSet<RuleId>,
    /// Later rules that take over where it decides (same verdict).
    takeover: BTreeSet<RuleId>,
    /// For a policy deny: the allows it overrides, and an example.
    overrides: BTreeSet<RuleId>,
    example: Option<String>,
}

fn verdict(ir: &Validated, o: Outcome) -> Verdict {
    match o {
        Outcome::Rule(r) => match ir.rules[r as usize].action {
            Action::Allow | Action::Accept | Action::Audit => Verdict::Allow,
            Action::Deny | Action::Drop => Verdict::Drop,
        },
        Outcome::DefaultDeny => Verdict::Drop,
    }
}

fn subset(a: &[AtomId], of: &[AtomId]) -> bool {
    a.iter().all(|x| of.contains(x))
}

/// An example packet in the `cilc explain --packet` form, with the atoms
/// it needs.
fn example(h: &Hook, p: &[u128; 7], atoms: &[AtomId]) -> String {
    let addr = |v: u128| {
        if h.v6 {
            Ipv6Addr::from(v).to_string()
        } else {
            Ipv4Addr::from(v as u32).to_string()
        }
    };
    let get = |f: Field| p[f.index()];
    let l4 = match get(Field::Proto) {
        6 => format!("tcp {} {}", get(Field::SrcPort), get(Field::DstPort)),
        17 => format!("udp {} {}", get(Field::SrcPort), get(Field::DstPort)),
        132 => format!("sctp {} {}", get(Field::SrcPort), get(Field::DstPort)),
        n @ (1 | 58) => format!(
            "{} {} {}",
            if n == 1 { "icmp" } else { "icmpv6" },
            get(Field::IcmpType),
            get(Field::IcmpCode)
        ),
        n => format!("proto {n}"),
    };
    let mut text = format!(
        "`{} {} -> {} {l4}`",
        h.direction.keyword(),
        addr(get(Field::SrcAddr)),
        addr(get(Field::DstAddr))
    );
    let needs: Vec<String> = atoms
        .iter()
        .map(|a| dump::atom(&h.atoms[*a as usize]))
        .collect();
    if !needs.is_empty() {
        text.push_str(&format!(" where {}", needs.join(" and ")));
    }
    text
}

/// One first-match list of a hook and its index.
struct List<'a> {
    ir: &'a Validated,
    hook: &'a Hook,
    terms: &'a [Term],
    index: crate::tree::Diagram,
    policy: bool,
}

impl List<'_> {
    fn candidates(&self, t: TermId) -> Vec<TermId> {
        let mut out = Vec::new();
        let r = bounds(&self.terms[t as usize], self.hook.v6);
        self.index.query(&r, |_| true, &mut out);
        out.sort_unstable();
        out.dedup();
        out.retain(|c| *c != t);
        out
    }

    fn consistent(&self, ids: &[AtomId]) -> bool {
        atoms::consistent(ids.iter().map(|a| &self.hook.atoms[*a as usize]))
    }

    /// Does some allow term decide a packet (under denies) while the
    /// local side is `subject`? Allows of other policies count: an
    /// endpoint that two policies select gets the union of their allows.
    fn allows_some(&self, subject: &Atom) -> bool {
        let Some(s) = self.hook.atoms.iter().position(|a| a == subject) else {
            return false;
        };
        let mut tried = 0;
        for i in 0..self.terms.len() as TermId {
            let t = self.term(i);
            if verdict(self.ir, t.outcome) != Verdict::Allow {
                continue;
            }
            let mut alpha = t.atoms.clone();
            alpha.push(s as AtomId);
            if !self.consistent(&alpha) {
                continue;
            }
            tried += 1;
            if tried > MAX_ALTERNATIVES {
                return true;
            }
            let cands = self.candidates(i);
            let deny = |c: TermId| {
                verdict(self.ir, self.term(c).outcome) == Verdict::Drop
                    && c < i
                    && subset(&self.term(c).atoms, &alpha)
            };
            if self.search(&[i], &cands, deny) != Search::Empty {
                return true;
            }
        }
        false
    }

    fn term(&self, i: TermId) -> &Term {
        &self.terms[i as usize]
    }

    fn rule_of(&self, i: TermId) -> Option<RuleId> {
        match self.term(i).outcome {
            Outcome::Rule(r) => Some(r),
            Outcome::DefaultDeny => None,
        }
    }

    /// Search for a point that `pos` all match and none of `neg` (taken
    /// from `cands`, restricted by `keep`) does.
    fn search(&self, pos: &[TermId], cands: &[TermId], keep: impl Fn(TermId) -> bool) -> Search {
        let pos: Vec<&Term> = pos.iter().map(|i| self.term(*i)).collect();
        let neg: Vec<&Term> = cands
            .iter()
            .copied()
            .filter(|c| keep(*c))
            .map(|c| self.term(c))
            .collect();
        find(&full(self.hook.v6), &pos, &neg, BUDGET)
    }

    fn run(&self, facts: &mut [Facts]) {
        for i in 0..self.terms.len() as TermId {
            let Some(r) = self.rule_of(i) else { continue };
            let t = self.term(i);
            let f = &mut facts[r as usize];
            f.terms += 1;
            let cands = self.candidates(i);
            let earlier = |c: TermId| c < i && subset(&self.term(c).atoms, &t.atoms);
            if !self.consistent(&t.atoms) {
                continue;
            }
            if self.search(&[i], &cands, earlier) == Search::Empty {
                // Name the earlier rules needed to cover it.
                let mut needed: Vec<TermId> =
                    cands.iter().copied().filter(|c| earlier(*c)).collect();
                if needed.len() <= 64 {
                    let mut k = needed.len();
                    while k > 0 {
                        k -= 1;
                        let without: Vec<TermId> = needed
                            .iter()
                            .copied()
                            .enumerate()
                            .filter(|(j, _)| *j != k)
                            .map(|(_, c)| c)
                            .collect();
                        if self.search(&[i], &without, |_| true) == Search::Empty {
                            needed = without;
                        }
                    }
                }
                f.shadowers
                    .extend(needed.iter().filter_map(|c| self.rule_of(*c)));
                continue;
            }
            f.deciding += 1;
            let mine = verdict(self.ir, t.outcome);
            // Nothing else matches somewhere: the verdict there would come
            // from another layer (chains) — a change, as far as we know.
            let others = |c: TermId| subset(&self.term(c).atoms, &t.atoms);
            let mut changed = self.search(&[i], &cands, others) != Search::Empty;
            let is_deny = self.policy && self.ir.rules[r as usize].action == Action::Deny;
            let mut tried = 0;
            for &u in cands.iter().filter(|u| **u > i) {
                if changed && !is_deny {
                    break;
                }
                if verdict(self.ir, self.term(u).outcome) == mine {
                    continue;
                }
                tried += 1;
                if tried > MAX_ALTERNATIVES {
                    changed = true;
                    break;
                }
                let mut alpha = t.atoms.clone();
                alpha.extend(&self.term(u).atoms);
                if !self.consistent(&alpha) {
                    continue;
                }
                let block = |c: TermId| c < u && subset(&self.term(c).atoms, &alpha);
                match self.search(&[i, u], &cands, block) {
                    Search::Empty => {}
                    Search::GaveUp => changed = true,
                    Search::Found(p) => {
                        changed = true;
                        if is_deny {
                            if let Some(a) = self.rule_of(u) {
                                let f = &mut facts[r as usize];
                                f.overrides.insert(a);
                                if f.example.is_none() {
                                    let mut needs: Vec<AtomId> = alpha
                                        .iter()
                                        .copied()
                                        .filter(|a| {
                                            !matches!(
                                                self.hook.atoms[*a as usize],
                                                Atom::Subject(_) | Atom::L7(_)
                                            )
                                        })
                                        .collect();
                                    needs.sort_unstable();
                                    needs.dedup();
                                    f.example = Some(example(self.hook, &p, &needs));
                                }
                            }
                        }
                    }
                }
            }
            let f = &mut facts[r as usize];
            if !changed {
                f.redundant += 1;
                f.takeover.extend(
                    cands
                        .iter()
                        .filter(|u| {
                            **u > i
                                && others(**u)
                                && verdict(self.ir, self.term(**u).outcome) == mine
                        })
                        .filter_map(|u| self.rule_of(*u)),
                );
            }
        }
    }

    /// Do the section's allows (that need nothing but its subject) cover
    /// the whole space?
    fn covers_all(&self, allows: &BTreeSet<RuleId>) -> bool {
        let all: Vec<TermId> = (0..self.terms.len() as TermId)
            .filter(|i| {
                self.rule_of(*i).is_some_and(|r| allows.contains(&r))
                    && self.term(*i).atoms.len() == 1
            })
            .collect();
        !all.is_empty() && self.search(&[], &all, |_| true) == Search::Empty
    }
}

fn names(ir: &Validated, rules: &BTreeSet<RuleId>) -> String {
    let mut v: Vec<String> = rules
        .iter()
        .take(MAX_NAMED)
        .map(|r| format!("`{}`", ir.rules[*r as usize].name))
        .collect();
    if rules.len() > MAX_NAMED {
        v.push(format!("{} more", rules.len() - MAX_NAMED));
    }
    match v.len() {
        1 => v.remove(0),
        _ => {
            let last = v.pop().unwrap_or_default();
            format!("{} and {last}", v.join(", "))
        }
    }
}

/// Every lint of a validated program, given its diagrams.
pub fn lint(ir: &Validated, forest: &Forest) -> Vec<Diagnostic> {
    let mut facts: Vec<Facts> = ir.rules.iter().map(|_| Facts::default()).collect();
    let opts = Options {
        leaf_size: 8,
        max_depth: 48,
        index: true,
        // An index lists every term in its leaves: merged parts would
        // copy the wide ones everywhere.
        merge: false,
        aligned: true,
    };
    // Per section and hook: do its allows cover everything? Does any allow
    // reach its subject?
    let mut covers: Vec<Vec<bool>> = vec![Vec::new(); ir.sections.len()];
    let mut reached: Vec<bool> = vec![false; ir.sections.len()];
    for hook in &forest.hooks {
        let lists = hook
            .chains
            .iter()
            .map(|(_, d)| (d, false))
            .chain([(&hook.policy, true)]);
        for (d, policy) in lists {
            let list = List {
                ir,
                hook,
                terms: &d.terms,
                index: build::diagram(d.terms.clone(), &hook.atoms, hook.v6, &opts, None),
                policy,
            };
            list.run(&mut facts);
            if policy {
                for (si, s) in ir.sections.iter().enumerate() {
                    if s.direction == hook.direction {
                        let allows: BTreeSet<RuleId> = s
                            .rules
                            .iter()
                            .copied()
                            .filter(|r| ir.rules[*r as usize].action == Action::Allow)
                            .collect();
                        covers[si].push(list.covers_all(&allows));
                        if !reached[si] {
                            reached[si] = list.allows_some(&Atom::Subject(s.subject.clone()));
                        }
                    }
                }
            }
        }
    }
    let mut out = Vec::new();
    for (r, f) in ir.rules.iter().zip(&facts) {
        if f.terms == 0 {
            continue;
        }
        let kind = match r.layer {
            Layer::Policy => r.action.keyword(),
            Layer::Chain { .. } => "rule",
        };
        if f.deciding == 0 {
            let mut d = Diagnostic::warning(
                Code::ShadowedRule,
                r.span,
                format!("{kind} `{}` never decides a packet", r.name),
            )
            .label("shadowed");
            if f.shadowers.is_empty() {
                d = d.note("no packet can match it");
            } else {
                let verb = if f.shadowers.len() == 1 {
                    "matches"
                } else {
                    "match"
                };
                let order = match r.layer {
                    Layer::Chain { .. } => " before it",
                    // Policy rules are not ordered by text: denies win,
                    // and the earliest allow is named as deciding.
                    Layer::Policy => "",
                };
                d = d.note(format!(
                    "{}{order} {verb} every packet it matches",
                    names(ir, &f.shadowers)
                ));
                for s in f.shadowers.iter().take(MAX_NAMED) {
                    d = d.related(ir.rules[*s as usize].span, "shadows it");
                }
            }
            out.push(d.help(match r.layer {
                Layer::Chain { .. } => "remove it, or move it above the rules that shadow it",
                Layer::Policy => "remove it, or narrow the rules that shadow it",
            }));
        } else if f.redundant == f.deciding {
            // A policy deny that only repeats the default deny is often
            // written on purpose, against allows to come: a note.
            let guard = r.layer == Layer::Policy && r.action == Action::Deny;
            let make = if guard {
                Diagnostic::notice
            } else {
                Diagnostic::warning
            };
            let mut d = make(
                Code::RedundantRule,
                r.span,
                format!("removing {kind} `{}` changes no verdict", r.name),
            )
            .label("redundant");
            d = if guard {
                d.note("no rule allows anything it denies: without it, default deny drops the same packets")
            } else if f.takeover.is_empty() {
                d.note("every packet it decides gets the same verdict without it")
            } else {
                for s in f.takeover.iter().take(MAX_NAMED) {
                    d = d.related(ir.rules[*s as usize].span, "decides the same way");
                }
                d.note(format!(
                    "where it decides, {} {} the same verdict",
                    names(ir, &f.takeover),
                    if f.takeover.len() == 1 {
                        "gives"
                    } else {
                        "give"
                    }
                ))
            };
            out.push(d.help(if guard {
                "keep it if it guards against future allows"
            } else {
                "remove it, or narrow it if it was meant to do something else"
            }));
        }
        if !f.overrides.is_empty() {
            let mut d = Diagnostic::notice(
                Code::DenyOverridesAllow,
                r.span,
                format!("deny `{}` overrides {}", r.name, names(ir, &f.overrides)),
            )
            .label("overrides an allow");
            for a in f.overrides.iter().take(MAX_NAMED) {
                d = d.related(ir.rules[*a as usize].span, "overridden");
            }
            if let Some(e) = &f.example {
                d = d.note(format!("for example {e} is denied"));
            }
            out.push(d);
        }
    }
    for (si, s) in ir.sections.iter().enumerate() {
        let dir = match s.direction {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        };
        let rules: Vec<&crate::ir::Rule> = s.rules.iter().map(|r| &ir.rules[*r as usize]).collect();
        let allows = rules.iter().filter(|r| r.action == Action::Allow).count();
        let denies = rules.iter().any(|r| r.action == Action::Deny);
        if !rules.is_empty() && !reached[si] {
            let why = if allows == 0 {
                "it has no allow rule, no other policy allows anything to its subject, and selecting it makes every packet default-deny"
            } else {
                "denies override every allow that could reach its subject"
            };
            out.push(
                Diagnostic::warning(
                    Code::AllowsNothing,
                    s.span,
                    format!("policy `{}` allows no {dir} traffic", s.policy),
                )
                .label("drops everything")
                .note(why)
                .help(format!("write `{dir} {{ }}` if isolation is the intent")),
            );
        } else if !denies && !covers[si].is_empty() && covers[si].iter().all(|c| *c) {
            out.push(
                Diagnostic::warning(
                    Code::AllowsEverything,
                    s.span,
                    format!("policy `{}` allows all {dir} traffic", s.policy),
                )
                .label("allows every packet")
                .note("its allow rules match every address, protocol and port, in both families")
                .help("narrow the peers or ports, or remove the section if no policy is intended"),
            );
        }
    }
    out.sort_by_key(|d| (d.span.start, d.span.end));
    out
}
