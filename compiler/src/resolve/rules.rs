//! Policies, chains and their rules.

use std::collections::HashMap;

use cilc_grammar::ast::{self, Item, Span};

use super::l4::{L4Spec, ICMP, ICMPV6};
use super::l7::RuleCtx;
use super::scope::{Found, Kind};
use super::{Action, Chain, Direction, Entity, Peer, Policy, Resolver, Rule, SnatSpec, Subject};
use crate::diag::{Code, Diagnostic};

/// Where a rule sits.
struct Owner<'a> {
    name: &'a str,
    chain: bool,
    direction: Direction,
}

impl Resolver<'_> {
    pub(super) fn definitions(&mut self, file: &ast::File) {
        for item in &file.items {
            // Only the first of duplicate definitions is in scope (the
            // others were reported); their contents are checked all the same.
            match item {
                Item::Cidr(d) if self.in_scope(&d.name.text, item) => self.cidr_definitions(d),
                Item::Cidr(d) => {
                    self.compute_cidr_set(d);
                }
                Item::Ports(d) if self.in_scope(&d.name.text, item) => self.ports_definition(d),
                Item::Ports(d) => {
                    self.port_items(&d.items);
                }
                Item::Select(d) => {
                    let before = self.program.selectors.len();
                    self.select_definition(d);
                    if !self.in_scope(&d.name.text, item) {
                        self.program.selectors.truncate(before);
                    }
                }
                _ => {}
            }
        }
    }

    fn in_scope(&self, name: &str, item: &Item) -> bool {
        self.scope
            .get(name)
            .is_some_and(|d| std::ptr::eq(d.item, item))
    }

    pub(super) fn policies_and_chains(&mut self, file: &ast::File) {
        for item in &file.items {
            match item {
                Item::Policy(p) => {
                    let policy = self.policy(p);
                    self.program.policies.push(policy);
                }
                Item::Chain(c) => {
                    let chain = self.chain(c);
                    self.program.chains.push(chain);
                }
                _ => {}
            }
        }
    }

    fn subject(&mut self, s: &ast::Subject) -> Subject {
        match s {
            ast::Subject::Inline(sel) => Subject::Selector {
                name: None,
                selector: self.selector(sel),
            },
            ast::Subject::Name(w) => {
                match self.scope.lookup(w, &[Kind::Selector], true, "a selector") {
                    Ok(Found::Entity(Entity::World)) => {
                        self.report(
                        Diagnostic::error(Code::WrongKind, w.span, "`world` cannot be protected by a policy")
                            .label("`world` is everything outside the cluster")
                            .help("a policy protects local endpoints (a selector), `host`, `cluster` or `all`"),
                    );
                        Subject::Entity(Entity::World)
                    }
                    Ok(Found::Entity(e)) => Subject::Entity(e),
                    Ok(Found::Def(_)) => {
                        let selector = self.named_selector(&w.text);
                        Subject::Selector {
                            name: Some(w.text.clone()),
                            selector,
                        }
                    }
                    Err(d) => {
                        self.report(d);
                        Subject::Entity(Entity::All)
                    }
                }
            }
        }
    }

    fn named_selector(&self, name: &str) -> super::Selector {
        self.program
            .selectors
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.selector.clone())
            .unwrap_or(super::Selector {
                labels: Vec::new(),
                namespace: None,
            })
    }

    fn policy(&mut self, p: &ast::Policy) -> Policy {
        let subject = self.subject(&p.subject);
        let mut policy = Policy {
            name: p.name.text.clone(),
            span: p.span,
            subject,
            ingress: None,
            egress: None,
            section_spans: Vec::new(),
        };
        let mut seen: HashMap<Direction, Span> = HashMap::new();
        let mut names = HashMap::new();
        for s in &p.sections {
            if let Some(first) = seen.get(&s.direction) {
                self.report(
                    Diagnostic::error(
                        Code::DuplicateSection,
                        s.direction_span,
                        format!(
                            "policy `{}` has two `{}` sections",
                            p.name.text,
                            s.direction.keyword()
                        ),
                    )
                    .label("second section")
                    .related(*first, "first section here")
                    .help("merge the rules into one section"),
                );
                // Still check its rules, so that their mistakes are reported.
                let owner = Owner {
                    name: &p.name.text,
                    chain: false,
                    direction: s.direction,
                };
                self.rules(&s.rules, &owner, &mut names);
                continue;
            }
            seen.insert(s.direction, s.direction_span);
            policy.section_spans.push((s.direction, s.direction_span));
            let owner = Owner {
                name: &p.name.text,
                chain: false,
                direction: s.direction,
            };
            let rules = self.rules(&s.rules, &owner, &mut names);
            match s.direction {
                Direction::Ingress => policy.ingress = Some(rules),
                Direction::Egress => policy.egress = Some(rules),
            }
        }
        if p.sections.is_empty() {
            self.report(
                Diagnostic::warning(Code::EmptyPolicy, p.name.span, format!("policy `{}` has no effect", p.name.text))
                    .label("no `ingress` or `egress` section")
                    .help("add `ingress { ... }` or `egress { ... }`; an empty section denies that direction"),
            );
        }
        policy
    }

    fn chain(&mut self, c: &ast::Chain) -> Chain {
        let subject = self.subject(&c.subject);
        let owner = Owner {
            name: &c.name.text,
            chain: true,
            direction: c.direction,
        };
        let rules = self.rules(&c.rules, &owner, &mut HashMap::new());
        // A rule that matches everything ends the chain.
        let bodies: Vec<&ast::RuleBody> = c
            .rules
            .iter()
            .filter_map(|r| match r {
                ast::Rule::Rule(b) => Some(b),
                ast::Rule::Error(_) => None,
            })
            .collect();
        if let Some(i) = bodies.iter().position(|b| catch_all(b)) {
            if let Some(next) = bodies.get(i + 1) {
                let rest = bodies.len() - i - 1;
                let d = Diagnostic::warning(
                    Code::UnreachableRule,
                    next.span,
                    "this rule can never match",
                )
                .label(match rest {
                    1 => "unreachable".to_string(),
                    2 => "unreachable, and so is the rule after it".to_string(),
                    n => format!("unreachable, and so are the {} rules after it", n - 1),
                })
                .related(bodies[i].span, "this rule matches every packet first")
                .help("move the catch-all rule to the end of the chain");
                self.report(d);
            }
        }
        Chain {
            name: c.name.text.clone(),
            span: c.span,
            subject,
            direction: c.direction,
            rules,
        }
    }

    fn rules(
        &mut self,
        rules: &[ast::Rule],
        owner: &Owner<'_>,
        names: &mut HashMap<String, Span>,
    ) -> Vec<Rule> {
        let mut out = Vec::new();
        for (i, r) in rules.iter().enumerate() {
            let ast::Rule::Rule(body) = r else { continue };
            let name = match &body.name {
                Some(n) => {
                    if let Some(first) = names.get(&n.text) {
                        self.report(
                            Diagnostic::error(Code::DuplicateRuleName, n.span, format!("rule name `{}` is used twice in `{}`", n.text, owner.name))
                                .label("second use")
                                .related(*first, "first used here")
                                .help("rule names identify rules in counters and `explain`; make them unique"),
                        );
                    } else {
                        names.insert(n.text.clone(), n.span);
                    }
                    format!("{}/{}", owner.name, n.text)
                }
                None if owner.chain => format!("{}/{}", owner.name, i + 1),
                None => format!("{}/{}/{}", owner.name, owner.direction.keyword(), i + 1),
            };
            out.push(self.rule(body, owner, name));
        }
        out
    }

    fn rule(&mut self, b: &ast::RuleBody, owner: &Owner<'_>, name: String) -> Rule {
        self.check_action(b, owner);
        let src = self.peer_clause(b.from.as_ref(), owner, Direction::Ingress);
        let dst = self.peer_clause(b.to.as_ref(), owner, Direction::Egress);
        let l4 = match &b.l4 {
            Some(l4) => self.l4(l4, owner.chain),
            None => L4Spec::default(),
        };
        let allow = b.action == Action::Allow && !owner.chain;
        let l7 = b.l7.as_ref().and_then(|l7| {
            if owner.chain {
                self.report(
                    Diagnostic::error(
                        Code::L7NotAllow,
                        l7.span(),
                        "L7 blocks are not matched in chains",
                    )
                    .label("chains match addresses, protocols and ports")
                    .help("put L7 rules in a policy's `allow` rule"),
                );
                return None;
            }
            let cx = RuleCtx {
                wrote_ports: b.l4.as_ref().is_some_and(|l| !l.ports.is_empty()),
                protos_failed: l4.failed,
                allow,
                protos: &l4.protos,
                ports: &l4.ports,
                rule_span: b.span,
            };
            self.l7(l7, &cx)
        });
        let peers: Vec<&Peer> = src.iter().chain(dst.iter()).collect();
        // Family checks need every peer: one that failed (already reported)
        // could have been of the other family.
        let written = |c: &Option<ast::PeerClause>| c.as_ref().map_or(0, |c| c.peers.len());
        let all_peers = peers.len() == written(&b.from) + written(&b.to);
        let family_peers: &[&Peer] = if all_peers { &peers } else { &[] };
        self.check_icmp_family(b, &l4, family_peers);
        if all_peers {
            self.check_endpoint_families(b, &src, &dst);
        }
        let snat = b
            .snat
            .as_ref()
            .and_then(|s| self.snat(s, b, owner, &peers, family_peers));
        Rule {
            name,
            span: b.span,
            action: b.action,
            direction: owner.direction,
            src,
            dst,
            protos: l4.protos,
            ports: l4.ports,
            sports: l4.sports,
            icmp: l4.icmp,
            flags: l4.flags,
            l7,
            snat,
        }
    }

    fn check_action(&mut self, b: &ast::RuleBody, owner: &Owner<'_>) {
        let chain_action = matches!(b.action, Action::Accept | Action::Drop);
        if chain_action == owner.chain {
            return;
        }
        let (msg, help) = if owner.chain && b.action == Action::Audit {
            (
                "`audit` is not a chain action".to_string(),
                "chains only `accept` or `drop`; to count without dropping, use an `audit` rule in a policy".to_string(),
            )
        } else if owner.chain {
            let instead = if b.action == Action::Allow {
                "accept"
            } else {
                "drop"
            };
            (
                format!("`{}` is not a chain action", b.action.keyword()),
                format!("chains decide in order with `accept` and `drop`: write `{instead}`"),
            )
        } else {
            let instead = if b.action == Action::Accept {
                "allow"
            } else {
                "deny"
            };
            (
                format!("`{}` is not a policy action", b.action.keyword()),
                format!("policies use `allow`, `deny` and `audit`: write `{instead}` (or use a `chain` for ordered rules)"),
            )
        };
        self.report(
            Diagnostic::error(Code::ActionNotAllowed, b.action_span, msg)
                .label("wrong kind of action")
                .help(help),
        );
    }

    /// Resolve `from`/`to` peers; in a policy only the section's own
    /// direction is allowed (`from` in ingress, `to` in egress).
    fn peer_clause(
        &mut self,
        clause: Option<&ast::PeerClause>,
        owner: &Owner<'_>,
        dir: Direction,
    ) -> Vec<Peer> {
        let Some(clause) = clause else {
            return Vec::new();
        };
        if !owner.chain && owner.direction != dir {
            let (kw, right) = match dir {
                Direction::Ingress => ("from", "to"),
                Direction::Egress => ("to", "from"),
            };
            self.report(
                Diagnostic::error(
                    Code::DirectionMismatch,
                    clause.keyword_span,
                    format!("`{kw}` in an {} section", owner.direction.keyword()),
                )
                .label(format!(
                    "{} rules name their peers with `{right}`",
                    owner.direction.keyword()
                ))
                .help(format!(
                    "write `{right}`, or move the rule to the `{}` section",
                    if dir == Direction::Ingress {
                        "ingress"
                    } else {
                        "egress"
                    }
                )),
            );
        }
        clause.peers.iter().filter_map(|p| self.peer(p)).collect()
    }

    fn peer(&mut self, p: &ast::Peer) -> Option<Peer> {
        match p {
            ast::Peer::Addr(w) => {
                let net = self.prefix(w)?;
                Some(Peer::Cidr {
                    name: None,
                    set: super::AddrSet {
                        include: vec![net],
                        except: vec![],
                    },
                })
            }
            ast::Peer::Inline(sel) => Some(Peer::Selector {
                name: None,
                selector: self.selector(sel),
            }),
            ast::Peer::Name(w) => {
                match self.scope.lookup(
                    w,
                    &[Kind::Cidr, Kind::Selector],
                    true,
                    "a peer (cidr set, selector or entity)",
                ) {
                    Ok(Found::Entity(e)) => Some(Peer::Entity(e)),
                    Ok(Found::Def(Item::Cidr(_))) => {
                        let set = self
                            .program
                            .cidrs
                            .iter()
                            .find(|c| c.name == w.text)?
                            .set
                            .clone();
                        Some(Peer::Cidr {
                            name: Some(w.text.clone()),
                            set,
                        })
                    }
                    Ok(Found::Def(_)) => Some(Peer::Selector {
                        name: Some(w.text.clone()),
                        selector: self.named_selector(&w.text),
                    }),
                    Err(d) => {
                        self.report(d);
                        None
                    }
                }
            }
        }
    }

    /// A source of one IP family and a destination of the other never meet.
    fn check_endpoint_families(&mut self, b: &ast::RuleBody, src: &[Peer], dst: &[Peer]) {
        let (src, dst): (Vec<&Peer>, Vec<&Peer>) = (src.iter().collect(), dst.iter().collect());
        let v4_to_v6 = only_other_family(&src, true) && only_other_family(&dst, false);
        let v6_to_v4 = only_other_family(&src, false) && only_other_family(&dst, true);
        if v4_to_v6 || v6_to_v4 {
            let (a, z) = if v4_to_v6 {
                ("IPv4", "IPv6")
            } else {
                ("IPv6", "IPv4")
            };
            self.report(
                Diagnostic::warning(
                    Code::FamilyMismatch,
                    b.span,
                    format!("{a} sources and {z} destinations never meet"),
                )
                .label("no packet has addresses of both families")
                .help("split the rule by family, or fix the addresses"),
            );
        }
    }

    /// ICMP for one family towards peers that are all of the other family
    /// can never match.
    fn check_icmp_family(&mut self, b: &ast::RuleBody, l4: &L4Spec, peers: &[&Peer]) {
        let v6 = match l4.protos.as_slice() {
            [ICMP] => false,
            [ICMPV6] => true,
            _ => return,
        };
        if only_other_family(peers, v6) {
            let (proto, fam) = if v6 {
                ("icmpv6", "IPv4")
            } else {
                ("icmp", "IPv6")
            };
            self.report(
                Diagnostic::warning(
                    Code::FamilyMismatch,
                    b.span,
                    format!("`{proto}` towards {fam} peers only never matches"),
                )
                .label(format!("every peer of this rule is {fam}"))
                .help(if v6 {
                    "use `icmp` for IPv4 peers"
                } else {
                    "use `icmpv6` for IPv6 peers"
                }),
            );
        }
    }

    fn snat(
        &mut self,
        s: &ast::Snat,
        b: &ast::RuleBody,
        owner: &Owner<'_>,
        peers: &[&Peer],
        family_peers: &[&Peer],
    ) -> Option<SnatSpec> {
        if owner.chain || owner.direction != Direction::Egress || b.action != Action::Allow {
            self.report(
                Diagnostic::error(Code::SnatNotAllowed, s.span, "`snat` only applies to egress `allow` rules of a policy")
                    .label("not an egress allow")
                    .help("source NAT rewrites traffic that leaves an endpoint: put it on an `allow to ...` rule in `egress`"),
            );
            return None;
        }
        let inside: Vec<String> = peers
            .iter()
            .filter_map(|p| match p {
                Peer::Selector { name, .. } => Some(
                    name.clone()
                        .map(|n| format!("`{n}`"))
                        .unwrap_or("a selector".into()),
                ),
                Peer::Entity(e @ (Entity::Host | Entity::Cluster)) => {
                    Some(format!("`{}`", e.name()))
                }
                _ => None,
            })
            .collect();
        if !inside.is_empty() {
            self.report(
                Diagnostic::warning(Code::SnatInsideCluster, s.span, "SNAT towards peers inside the cluster")
                    .label(format!("{} is inside the cluster", inside.join(", ")))
                    .help("SNAT is applied only to traffic leaving the cluster; name `world` or external CIDRs"),
            );
        }
        let to = match &s.to {
            None => None,
            Some(w) => {
                let net = self.prefix(w)?;
                if net.prefix_len() != net.max_prefix_len() {
                    self.report(
                        Diagnostic::error(
                            Code::InvalidAddress,
                            w.span,
                            "`snat to` needs a single address, not a prefix",
                        )
                        .label("a prefix")
                        .help(format!("write the address alone, e.g. `{}`", net.addr())),
                    );
                    return None;
                }
                let v4 = net.addr().is_ipv4();
                if only_other_family(family_peers, !v4) {
                    self.report(
                        Diagnostic::warning(Code::FamilyMismatch, w.span, "SNAT address of the other IP family")
                            .label(format!("an {} address", if v4 { "IPv4" } else { "IPv6" }))
                            .help("every peer of this rule is of the other family; NAT does not translate between families"),
                    );
                }
                Some(net.addr())
            }
        };
        Some(SnatSpec { to })
    }
}

/// Are the peers all address sets, none of them of the `v6` family (so that
/// traffic of that family can never reach them)?
fn only_other_family(peers: &[&Peer], v6: bool) -> bool {
    !peers.is_empty()
        && peers.iter().all(|p| match p {
            Peer::Cidr { set, .. } => {
                if v6 {
                    !set.has_v6()
                } else {
                    !set.has_v4()
                }
            }
            _ => false,
        })
}

/// Does a chain rule match every packet (no peers, no protocol or `any`
/// alone, nothing else)?
fn catch_all(b: &ast::RuleBody) -> bool {
    b.from.is_none()
        && b.to.is_none()
        && b.l4.as_ref().is_none_or(|l| {
            l.protos
                .iter()
                .all(|p| matches!(p, ast::Proto::Kw(ast::ProtoKw::Any, _)))
                && l.ports.is_empty()
                && l.sports.is_empty()
                && l.icmp.is_none()
                && l.flags.is_none()
        })
}
