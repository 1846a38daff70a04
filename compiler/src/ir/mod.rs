//! Policy IR: every rule of a file, normalised, in one list.
//!
//! Pipeline stage: **`resolve::Program` → `Ir`** (`lower`), then
//! **`Ir` → `Validated`** (`validate`). Later stages (the reference
//! evaluator, the decision diagram, code generation) accept only
//! `Validated`.
//!
//! Each rule carries everything needed to decide whether it matches a
//! packet, without looking anything up:
//! - `layer`: a policy rule (`allow`/`deny`/`audit`, unordered: deny beats
//!   allow) or the `index`-th rule of a first-match chain;
//! - `direction` and `subject` (which local endpoints, or the host, it
//!   protects);
//! - `src` and `dst`: who is at each end. For a policy rule the local side
//!   is the subject, so ingress rules constrain `src` and egress rules
//!   `dst`; chain rules may constrain both. Address sets are disjoint,
//!   sorted prefixes with `except` already subtracted;
//! - `protos`, `dports`, `sports` (named ports kept symbolic), `icmp`,
//!   `flags`, `l7`, `snat`;
//! - `id` (= position in source order, which is also the priority among
//!   rules of one kind), `name` and `span`.
//!
//! `Display` prints the IR in a stable text form (tested with snapshots).

mod validate;

use std::fmt::{self, Display, Formatter};

use cilc_grammar::ast::Span;
use ipnet::IpNet;
use serde::Serialize;

use crate::resolve::{self, Entity, FlagsSpec, IcmpSpec, L7Spec, PortSpec, Program, SnatSpec};

pub use resolve::{Action, Direction};
pub use runtime_loader::identity::Selector;
pub use validate::{validate, Validated, ValidationError};

/// Index of a rule in `Ir::rules` (its position in source order).
pub type RuleId = u32;

#[derive(Debug, Clone, Serialize)]
pub struct Ir {
    pub rules: Vec<Rule>,
    /// Which subjects have a policy section per direction: an endpoint is
    /// default-deny in a direction once one of these selects it.
    pub sections: Vec<Section>,
    pub chains: Vec<ChainInfo>,
}

/// "The policy `policy` has a `direction` section for `subject`."
#[derive(Debug, Clone, Serialize)]
pub struct Section {
    pub policy: String,
    pub direction: Direction,
    pub subject: Subject,
    /// The section's direction keyword.
    pub span: Span,
    /// Its rules, in order.
    pub rules: Vec<RuleId>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChainInfo {
    pub name: String,
    pub direction: Direction,
    pub subject: Subject,
    /// The ids of its rules, in order.
    pub rules: Vec<RuleId>,
    pub span: Span,
}

/// Which local side a rule protects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Subject {
    /// The node itself.
    Host,
    /// Every endpoint (not the host).
    AllEndpoints,
    /// Every endpoint and the host.
    EndpointsAndHost,
    /// Endpoints whose labels satisfy the selector.
    Selector(Selector),
}

/// One alternative for who is at one end of a packet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Peer {
    Entity(Entity),
    /// The address is in one of these disjoint prefixes.
    Addrs(Vec<IpNet>),
    Selector(Selector),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Layer {
    /// A policy rule: allows are a union, denies beat them.
    Policy,
    /// Rule `index` of chain `chain` (an index into `Ir::chains`).
    Chain { chain: u32, index: u32 },
}

#[derive(Debug, Clone, Serialize)]
pub struct Rule {
    pub id: RuleId,
    pub name: String,
    pub span: Span,
    pub layer: Layer,
    pub action: Action,
    pub direction: Direction,
    pub subject: Subject,
    /// Alternatives for the source end (empty: anything).
    pub src: Vec<Peer>,
    /// Alternatives for the destination end (empty: anything).
    pub dst: Vec<Peer>,
    /// IANA protocol numbers (empty: any protocol).
    pub protos: Vec<u8>,
    pub dports: Vec<PortSpec>,
    pub sports: Vec<PortSpec>,
    pub icmp: Option<IcmpSpec>,
    pub flags: Option<FlagsSpec>,
    pub l7: Option<L7Spec>,
    pub snat: Option<SnatSpec>,
}

fn selector(s: &resolve::Selector) -> Selector {
    Selector {
        labels: s.labels.clone(),
        namespace: s.namespace.clone(),
    }
}

fn subject(s: &resolve::Subject) -> Subject {
    match s {
        resolve::Subject::Entity(Entity::Host) => Subject::Host,
        resolve::Subject::Entity(Entity::Cluster) => Subject::EndpointsAndHost,
        // `world` is rejected by the resolver; `all` is every endpoint.
        resolve::Subject::Entity(_) => Subject::AllEndpoints,
        resolve::Subject::Selector { selector: s, .. } => Subject::Selector(selector(s)),
    }
}

fn peer(p: &resolve::Peer) -> Peer {
    match p {
        resolve::Peer::Entity(e) => Peer::Entity(*e),
        resolve::Peer::Cidr { set, .. } => Peer::Addrs(resolve::expand(set)),
        resolve::Peer::Selector { selector: s, .. } => Peer::Selector(selector(s)),
    }
}

/// Lower a resolved program (without errors) to the IR.
pub fn lower(p: &Program) -> Ir {
    struct Pending<'a> {
        rule: &'a resolve::Rule,
        subject: Subject,
        layer: Layer,
        section: Option<usize>,
    }
    let mut pending = Vec::new();
    let mut sections = Vec::new();
    for pol in &p.policies {
        let subj = subject(&pol.subject);
        for (dir, rules) in [
            (Direction::Ingress, &pol.ingress),
            (Direction::Egress, &pol.egress),
        ] {
            let Some(rules) = rules else { continue };
            let span = pol
                .section_spans
                .iter()
                .find(|(d, _)| *d == dir)
                .map_or(pol.span, |(_, s)| *s);
            sections.push(Section {
                policy: pol.name.clone(),
                direction: dir,
                subject: subj.clone(),
                span,
                rules: Vec::new(),
            });
            for r in rules {
                pending.push(Pending {
                    rule: r,
                    subject: subj.clone(),
                    layer: Layer::Policy,
                    section: Some(sections.len() - 1),
                });
            }
        }
    }
    let mut chains = Vec::new();
    for (ci, ch) in p.chains.iter().enumerate() {
        let subj = subject(&ch.subject);
        chains.push(ChainInfo {
            name: ch.name.clone(),
            direction: ch.direction,
            subject: subj.clone(),
            rules: Vec::new(),
            span: ch.span,
        });
        for (i, r) in ch.rules.iter().enumerate() {
            pending.push(Pending {
                rule: r,
                subject: subj.clone(),
                layer: Layer::Chain {
                    chain: ci as u32,
                    index: i as u32,
                },
                section: None,
            });
        }
    }
    // Ids follow source order.
    pending.sort_by_key(|p| (p.rule.span.start, p.rule.span.end));
    let mut rules = Vec::with_capacity(pending.len());
    for (id, p) in pending.into_iter().enumerate() {
        let r = p.rule;
        if let Layer::Chain { chain, .. } = p.layer {
            chains[chain as usize].rules.push(id as RuleId);
        }
        if let Some(s) = p.section {
            sections[s].rules.push(id as RuleId);
        }
        rules.push(Rule {
            id: id as RuleId,
            name: r.name.clone(),
            span: r.span,
            layer: p.layer,
            action: r.action,
            direction: r.direction,
            subject: p.subject,
            src: r.src.iter().map(peer).collect(),
            dst: r.dst.iter().map(peer).collect(),
            protos: r.protos.clone(),
            dports: r.ports.clone(),
            sports: r.sports.clone(),
            icmp: r.icmp,
            flags: r.flags,
            l7: r.l7.clone(),
            snat: r.snat.clone(),
        });
    }
    Ir {
        rules,
        sections,
        chains,
    }
}

// ---- text form -------------------------------------------------------------

impl Display for Subject {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Host => f.write_str("host"),
            Subject::AllEndpoints => f.write_str("endpoints"),
            Subject::EndpointsAndHost => f.write_str("endpoints+host"),
            Subject::Selector(s) => write!(f, "{s}"),
        }
    }
}

impl Display for Peer {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Entity(e) => f.write_str(e.name()),
            Peer::Addrs(nets) => {
                write!(
                    f,
                    "[{}]",
                    nets.iter()
                        .map(|n| n.to_string())
                        .collect::<Vec<_>>()
                        .join(" ")
                )
            }
            Peer::Selector(s) => write!(f, "{s}"),
        }
    }
}

fn peers(p: &[Peer]) -> String {
    if p.is_empty() {
        "*".into()
    } else {
        p.iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(" | ")
    }
}

fn ports(p: &[PortSpec]) -> String {
    p.iter()
        .map(|x| match x {
            PortSpec::Range(a, b) if a == b => a.to_string(),
            PortSpec::Range(a, b) => format!("{a}-{b}"),
            PortSpec::Named(n) => format!("named:{n}"),
        })
        .collect::<Vec<_>>()
        .join(",")
}

impl Display for Rule {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let layer = match self.layer {
            Layer::Policy => "policy".to_string(),
            Layer::Chain { chain, index } => format!("chain{chain}#{index}"),
        };
        write!(
            f,
            "r{} {} {} {} on {} src={} dst={}",
            self.id,
            layer,
            self.direction.keyword(),
            self.action.keyword(),
            self.subject,
            peers(&self.src),
            peers(&self.dst)
        )?;
        if !self.protos.is_empty() {
            let p: Vec<String> = self
                .protos
                .iter()
                .map(|p| {
                    resolve::protocol_name(*p)
                        .map(str::to_string)
                        .unwrap_or_else(|| p.to_string())
                })
                .collect();
            write!(f, " proto={}", p.join(","))?;
        }
        if !self.dports.is_empty() {
            write!(f, " dport={}", ports(&self.dports))?;
        }
        if !self.sports.is_empty() {
            write!(f, " sport={}", ports(&self.sports))?;
        }
        if let Some(i) = self.icmp {
            write!(f, " icmp={}", i.ty)?;
            if let Some(c) = i.code {
                write!(f, "/{c}")?;
            }
        }
        if let Some(fl) = self.flags {
            write!(f, " flags={:#06x}/{:#06x}", fl.value, fl.mask)?;
        }
        if let Some(l7) = &self.l7 {
            write!(f, " l7={}", serde_json::to_string(l7).unwrap_or_default())?;
        }
        if let Some(s) = &self.snat {
            match s.to {
                Some(a) => write!(f, " snat={a}")?,
                None => write!(f, " snat=masquerade")?,
            }
        }
        write!(f, "  # {}", self.name)
    }
}

impl Display for Ir {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        for s in &self.sections {
            writeln!(
                f,
                "section {} {} on {}",
                s.policy,
                s.direction.keyword(),
                s.subject
            )?;
        }
        for (i, c) in self.chains.iter().enumerate() {
            let ids: Vec<String> = c.rules.iter().map(|r| format!("r{r}")).collect();
            writeln!(
                f,
                "chain{i} {} {} on {}: {}",
                c.name,
                c.direction.keyword(),
                c.subject,
                ids.join(" ")
            )?;
        }
        for r in &self.rules {
            writeln!(f, "{r}")?;
        }
        Ok(())
    }
}
