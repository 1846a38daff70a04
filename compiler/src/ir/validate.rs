//! The IR validator: the contract between lowering and every later stage.
//!
//! Invariants checked (each violation names the rule):
//! 1. Rule ids are `0..n` in order, and rules are in source order.
//! 2. Policy rules have `allow`, `deny` or `audit`; chain rules `accept` or
//!    `drop`, and each chain lists exactly its rules, by increasing id, with
//!    `index` matching the position.
//! 3. A policy rule constrains only the peer side: `src` for ingress, `dst`
//!    for egress.
//! 4. Address alternatives are non-empty, sorted, disjoint prefixes with no
//!    host bits set.
//! 5. Ports (destination or source) appear only when every protocol of the
//!    rule has ports (TCP, UDP, SCTP); numeric ranges have `lo <= hi`;
//!    source ports are numeric and appear only in chains.
//! 6. An ICMP type appears only with exactly `icmp` or `icmpv6`; flags only
//!    with exactly `tcp`, and `value & !mask == 0`.
//! 7. L7 appears only on policy `allow` rules with destination ports, on
//!    TCP (or UDP/TCP for DNS); SNAT only on egress policy `allow` rules.

use super::{Ir, Layer, Peer, Rule};
use crate::resolve::{Action, Direction, L7Spec, PortSpec};

/// An IR that passed `validate`.
#[derive(Debug, Clone)]
pub struct Validated(Ir);

impl Validated {
    pub fn ir(&self) -> &Ir {
        &self.0
    }
}

impl std::ops::Deref for Validated {
    type Target = Ir;
    fn deref(&self) -> &Ir {
        &self.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid IR: rule {rule}: {what}")]
pub struct ValidationError {
    pub rule: String,
    pub what: String,
}

fn fail(r: &Rule, what: impl Into<String>) -> ValidationError {
    ValidationError {
        rule: format!("r{} ({})", r.id, r.name),
        what: what.into(),
    }
}

fn has_ports(p: u8) -> bool {
    matches!(p, 6 | 17 | 132)
}

pub fn validate(ir: Ir) -> Result<Validated, ValidationError> {
    let mut last_start = None;
    for (i, r) in ir.rules.iter().enumerate() {
        if r.id as usize != i {
            return Err(fail(r, format!("id is not its position {i}")));
        }
        if last_start.is_some_and(|s| s > r.span.start) {
            return Err(fail(r, "rules are not in source order"));
        }
        last_start = Some(r.span.start);
        check_rule(&ir, r)?;
    }
    for (ci, c) in ir.chains.iter().enumerate() {
        if c.rules.windows(2).any(|w| w[0] >= w[1]) {
            return Err(ValidationError {
                rule: c.name.clone(),
                what: "chain rule ids are not increasing".into(),
            });
        }
        for (index, id) in c.rules.iter().enumerate() {
            let Some(r) = ir.rules.get(*id as usize) else {
                return Err(ValidationError {
                    rule: c.name.clone(),
                    what: format!("chain lists missing rule r{id}"),
                });
            };
            if r.layer
                != (Layer::Chain {
                    chain: ci as u32,
                    index: index as u32,
                })
            {
                return Err(fail(
                    r,
                    format!(
                        "listed by chain {} at {index} but says {:?}",
                        c.name, r.layer
                    ),
                ));
            }
        }
    }
    let chain_rules: usize = ir.chains.iter().map(|c| c.rules.len()).sum();
    let counted = ir
        .rules
        .iter()
        .filter(|r| matches!(r.layer, Layer::Chain { .. }))
        .count();
    if chain_rules != counted {
        return Err(ValidationError {
            rule: "chains".into(),
            what: "a chain rule is not listed by its chain".into(),
        });
    }
    Ok(Validated(ir))
}

fn check_rule(ir: &Ir, r: &Rule) -> Result<(), ValidationError> {
    let policy = r.layer == Layer::Policy;
    match (policy, r.action) {
        (true, Action::Allow | Action::Deny | Action::Audit)
        | (false, Action::Accept | Action::Drop) => {}
        _ => {
            return Err(fail(
                r,
                format!("action `{}` in the wrong layer", r.action.keyword()),
            ))
        }
    }
    if let Layer::Chain { chain, .. } = r.layer {
        let Some(c) = ir.chains.get(chain as usize) else {
            return Err(fail(r, "refers to a missing chain"));
        };
        if c.direction != r.direction || c.subject != r.subject {
            return Err(fail(r, "direction or subject differs from its chain"));
        }
    }
    if policy {
        let local = match r.direction {
            Direction::Ingress => &r.dst,
            Direction::Egress => &r.src,
        };
        if !local.is_empty() {
            return Err(fail(r, "a policy rule constrains its local side"));
        }
    }
    for p in r.src.iter().chain(&r.dst) {
        if let Peer::Addrs(nets) = p {
            if nets.is_empty() {
                return Err(fail(r, "empty address alternative"));
            }
            if nets.iter().any(|n| n.trunc() != *n) {
                return Err(fail(r, "prefix with host bits set"));
            }
            if nets
                .windows(2)
                .any(|w| w[0] >= w[1] || w[0].contains(&w[1]) || w[1].contains(&w[0]))
            {
                return Err(fail(r, "address prefixes are not sorted and disjoint"));
            }
        }
    }
    let all_have_ports = !r.protos.is_empty() && r.protos.iter().all(|p| has_ports(*p));
    for (list, src) in [(&r.dports, false), (&r.sports, true)] {
        if list.is_empty() {
            continue;
        }
        if !all_have_ports {
            return Err(fail(r, "ports on a protocol without ports"));
        }
        for p in list {
            match p {
                PortSpec::Range(a, b) if a > b => return Err(fail(r, "inverted port range")),
                PortSpec::Named(_) if src => return Err(fail(r, "named source port")),
                _ => {}
            }
        }
        if src && policy {
            return Err(fail(r, "source ports in a policy rule"));
        }
    }
    if r.icmp.is_some() && r.protos != [1] && r.protos != [58] {
        return Err(fail(r, "ICMP type without exactly one ICMP protocol"));
    }
    if let Some(f) = r.flags {
        if r.protos != [6] {
            return Err(fail(r, "TCP flags on a rule that is not TCP only"));
        }
        if f.value & !f.mask != 0 {
            return Err(fail(r, "flags outside their mask"));
        }
    }
    if let Some(l7) = &r.l7 {
        if !(policy && r.action == Action::Allow) || r.dports.is_empty() {
            return Err(fail(
                r,
                "L7 on a rule that is not a policy allow with ports",
            ));
        }
        let proto_ok = match l7 {
            L7Spec::Dns(_) => r.protos.iter().all(|p| *p == 6 || *p == 17),
            _ => r.protos == [6],
        };
        if !proto_ok {
            return Err(fail(r, "L7 on a protocol that cannot carry it"));
        }
    }
    if r.snat.is_some()
        && !(policy && r.action == Action::Allow && r.direction == Direction::Egress)
    {
        return Err(fail(r, "SNAT on a rule that is not an egress policy allow"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::{FlagsSpec, IcmpSpec, SnatSpec};

    fn ir(src: &str) -> Ir {
        let (_, program, diags) = crate::check_source(src);
        assert!(!diags.iter().any(|d| d.is_error()), "{diags:?}");
        super::super::lower(&program)
    }

    const SRC: &str = "policy p on host {\n  ingress {\n    allow from 10.0.0.0/8 tcp 80\n  }\n  egress {\n    allow to world tcp 443 snat\n  }\n}\nchain c on host ingress {\n  drop from 192.0.2.0/24\n  accept\n}\n";

    fn broken(f: impl FnOnce(&mut Ir)) -> String {
        let mut x = ir(SRC);
        f(&mut x);
        validate(x)
            .expect_err("the validator accepted a broken IR")
            .what
    }

    #[test]
    fn lowered_ir_is_valid() {
        let v = validate(ir(SRC)).unwrap();
        assert_eq!(v.rules.len(), 4);
        assert_eq!(v.chains[0].rules, vec![2, 3]);
    }

    #[test]
    fn every_invariant_is_checked() {
        assert!(broken(|x| x.rules[1].id = 7).contains("id"));
        assert!(broken(|x| x.rules.swap(0, 1)).contains("id"));
        assert!(broken(|x| x.rules[0].action = Action::Accept).contains("wrong layer"));
        assert!(broken(|x| x.rules[2].action = Action::Allow).contains("wrong layer"));
        assert!(broken(|x| x.chains[0].rules = vec![3, 2]).contains("increasing"));
        assert!(broken(|x| x.chains[0].rules = vec![2]).contains("not listed"));
        assert!(broken(|x| x.rules[0].dst = x.rules[0].src.clone()).contains("local side"));
        assert!(
            broken(|x| x.rules[0].src = vec![Peer::Addrs(vec!["10.0.0.1/8".parse().unwrap()])])
                .contains("host bits")
        );
        assert!(broken(|x| x.rules[0].src = vec![Peer::Addrs(vec![
            "10.0.0.0/8".parse().unwrap(),
            "10.1.0.0/16".parse().unwrap()
        ])])
        .contains("disjoint"));
        assert!(broken(|x| x.rules[0].protos = vec![1]).contains("without ports"));
        assert!(broken(|x| x.rules[0].dports = vec![PortSpec::Range(9, 1)]).contains("inverted"));
        assert!(broken(|x| x.rules[0].sports = vec![PortSpec::Range(1, 9)]).contains("policy"));
        assert!(
            broken(|x| x.rules[0].icmp = Some(IcmpSpec { ty: 8, code: None })).contains("ICMP")
        );
        assert!(
            broken(|x| x.rules[0].flags = Some(FlagsSpec { value: 3, mask: 1 })).contains("mask")
        );
        assert!(broken(|x| x.rules[0].snat = Some(SnatSpec { to: None })).contains("SNAT"));
        assert!(broken(|x| x.rules[2].l7 = Some(L7Spec::Dns(vec![]))).contains("L7"));
    }
}
