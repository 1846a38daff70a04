//! Diagrams as Graphviz DOT, for people.
//!
//! Stage: **`Forest` → DOT text**. Each diagram is drawn as the tree a
//! packet walks, carrying the region of each node, so that edges read as
//! rules are written: CIDRs, port ranges, protocol names. Consecutive cuts
//! on one field become one node with an edge per range; a node reached
//! again with the same region (in the fields its subtree looks at) is drawn
//! once, and edges from one node to one child are merged.

use std::collections::HashMap;
use std::fmt::Write;

use super::dump::{atom, range};
use super::{Diagram, Field, Forest, Hook, Node, NodeId, Outcome, FIELDS};
use crate::diag::render::position;
use crate::ir::Validated;
use crate::resolve::{Action, Direction};

pub struct Options {
    /// Only this direction (both when `None`).
    pub direction: Option<Direction>,
    /// Only this family: `Some(true)` for IPv6.
    pub v6: Option<bool>,
    /// Refuse to draw more nodes than this.
    pub max_nodes: usize,
}

type Region = [(u128, u128); 7];

fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

struct Drawer<'a> {
    ir: &'a Validated,
    src: &'a str,
    hook: &'a Hook,
    d: &'a Diagram,
    prefix: String,
    policy: bool,
    out: String,
    drawn: HashMap<(NodeId, Region), String>,
    /// Fields each node's subtree cuts on (bit per field).
    fields: HashMap<NodeId, u8>,
    count: usize,
    max: usize,
}

impl Drawer<'_> {
    fn fields_below(&mut self, n: NodeId) -> u8 {
        if let Some(f) = self.fields.get(&n) {
            return *f;
        }
        let f = match &self.d.nodes[n as usize] {
            Node::Split { field, lo, hi, .. } => {
                1 << field.index() | self.fields_below(*lo) | self.fields_below(*hi)
            }
            Node::Test { yes, no, .. } => self.fields_below(*yes) | self.fields_below(*no),
            _ => 0,
        };
        self.fields.insert(n, f);
        f
    }

    fn rule_text(&self, o: Outcome) -> String {
        match o {
            Outcome::Rule(r) => {
                let rule = &self.ir.rules[r as usize];
                let line = position(self.src, rule.span.start as usize).line;
                format!("{} {} (line {line})", rule.action.keyword(), rule.name)
            }
            Outcome::DefaultDeny => "default deny".into(),
        }
    }

    fn colour(&self, o: Outcome) -> &'static str {
        match o {
            Outcome::Rule(r) => match self.ir.rules[r as usize].action {
                Action::Allow | Action::Accept | Action::Audit => "palegreen",
                Action::Deny | Action::Drop => "lightpink",
            },
            Outcome::DefaultDeny => "lightpink",
        }
    }

    fn node(&mut self, attrs: String) -> Result<String, String> {
        self.count += 1;
        if self.count > self.max {
            return Err(format!(
                "more than {} nodes to draw; pick one hook with --direction and --family, raise --max-nodes, or use `cilc tree`",
                self.max
            ));
        }
        let id = format!("{}n{}", self.prefix, self.count);
        let _ = writeln!(self.out, "    {id} [{attrs}];");
        Ok(id)
    }

    /// Split the region along consecutive cuts on `field` below `n`.
    fn gather(
        &self,
        n: NodeId,
        field: Field,
        lo: u128,
        hi: u128,
        out: &mut Vec<(u128, u128, NodeId)>,
    ) {
        match &self.d.nodes[n as usize] {
            Node::Split {
                field: f,
                cut,
                lo: l,
                hi: h,
            } if *f == field => {
                if *cut > lo {
                    self.gather(*l, field, lo, (*cut - 1).min(hi), out);
                }
                if *cut <= hi {
                    self.gather(*h, field, (*cut).max(lo), hi, out);
                }
            }
            _ => out.push((lo, hi, n)),
        }
    }

    fn draw(&mut self, n: NodeId, region: Region) -> Result<String, String> {
        let below = self.fields_below(n);
        let mut key = region;
        for f in FIELDS {
            if below & (1 << f.index()) == 0 {
                key[f.index()] = (0, f.top(self.hook.v6));
            }
        }
        if let Some(id) = self.drawn.get(&(n, key)) {
            return Ok(id.clone());
        }
        let id = match self.d.nodes[n as usize].clone() {
            Node::Split { field, .. } => {
                let id = self.node(format!("label={}, shape=box", quote(field.name())))?;
                let (lo, hi) = region[field.index()];
                let mut pieces = Vec::new();
                self.gather(n, field, lo, hi, &mut pieces);
                // One edge per child, its ranges listed.
                let mut edges: Vec<(String, Vec<String>)> = Vec::new();
                for (a, b, child) in pieces {
                    let mut r = region;
                    r[field.index()] = (a, b);
                    let c = self.draw(child, r)?;
                    let text = range(field, a, b, self.hook.v6);
                    match edges.iter_mut().find(|(to, _)| *to == c) {
                        Some((_, labels)) => labels.push(text),
                        None => edges.push((c, vec![text])),
                    }
                }
                for (to, labels) in edges {
                    let _ = writeln!(
                        self.out,
                        "    {id} -> {to} [label={}];",
                        quote(&labels.join("\n"))
                    );
                }
                id
            }
            Node::Test { atom: a, yes, no } => {
                let text = atom(&self.hook.atoms[a as usize]);
                let id = self.node(format!(
                    "label={}, shape=box, style=rounded",
                    quote(&format!("{text}?"))
                ))?;
                let y = self.draw(yes, region)?;
                let n = self.draw(no, region)?;
                let _ = writeln!(self.out, "    {id} -> {y} [label=\"yes\"];");
                let _ = writeln!(self.out, "    {id} -> {n} [label=\"no\", style=dashed];");
                id
            }
            Node::Leaf(Some(t)) => {
                let o = self.d.terms[t as usize].outcome;
                let attrs = format!(
                    "label={}, shape=box, style=filled, fillcolor={}",
                    quote(&self.rule_text(o)),
                    self.colour(o)
                );
                self.node(attrs)?
            }
            Node::Leaf(None) => {
                let text = if self.policy {
                    "no policy applies"
                } else {
                    "no match: next"
                };
                self.node(format!(
                    "label={}, shape=box, style=filled, fillcolor=gray90",
                    quote(text)
                ))?
            }
            Node::Linear(ts) => {
                let mut text = String::from("first that matches:");
                for t in ts {
                    text.push('\n');
                    text.push_str(&self.rule_text(self.d.terms[t as usize].outcome));
                }
                self.node(format!("label={}, shape=note", quote(&text)))?
            }
        };
        self.drawn.insert((n, key), id.clone());
        Ok(id)
    }
}

/// The selected diagrams of a forest as one DOT graph.
pub fn dot(ir: &Validated, src: &str, forest: &Forest, opts: &Options) -> Result<String, String> {
    let mut out = String::from(
        "digraph cilc {\n  rankdir=TB;\n  node [fontname=\"Helvetica\", fontsize=10];\n  edge [fontname=\"Helvetica\", fontsize=9];\n",
    );
    let mut count = 0;
    for (hi, hook) in forest.hooks.iter().enumerate() {
        if opts.direction.is_some_and(|d| d != hook.direction)
            || opts.v6.is_some_and(|v| v != hook.v6)
        {
            continue;
        }
        let fam = if hook.v6 { "ipv6" } else { "ipv4" };
        let mut diagrams: Vec<(String, &Diagram, bool)> = hook
            .chains
            .iter()
            .map(|(c, d)| (format!("chain {}", ir.chains[*c as usize].name), d, false))
            .collect();
        if !hook.policy.terms.is_empty() {
            diagrams.push(("policies".into(), &hook.policy, true));
        }
        for (di, (title, d, policy)) in diagrams.into_iter().enumerate() {
            let prefix = format!("h{hi}d{di}");
            let mut w = Drawer {
                ir,
                src,
                hook,
                d,
                prefix: prefix.clone(),
                policy,
                out: String::new(),
                drawn: HashMap::new(),
                fields: HashMap::new(),
                count,
                max: opts.max_nodes,
            };
            let full: Region = FIELDS.map(|f| (0, f.top(hook.v6)));
            let label = format!("{} {fam} · {title}", hook.direction.keyword());
            let many = d.roots.len() > 1;
            let head = if many {
                format!("{label}\n(every part is walked; the earliest rule wins)")
            } else {
                label.clone()
            };
            let start = w.node(format!("label={}, shape=plaintext", quote(&head)))?;
            for (pi, root) in d.roots.iter().enumerate() {
                let r = w.draw(*root, full)?;
                let edge = if many {
                    format!(" [label={}]", quote(&format!("part {}", pi + 1)))
                } else {
                    String::new()
                };
                let _ = writeln!(w.out, "    {start} -> {r}{edge};");
            }
            count = w.count;
            let _ = writeln!(
                out,
                "  subgraph cluster_{prefix} {{\n    label={};",
                quote(&label)
            );
            out.push_str(&w.out);
            out.push_str("  }\n");
        }
    }
    out.push_str("}\n");
    Ok(out)
}
