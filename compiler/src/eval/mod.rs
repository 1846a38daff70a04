//! The reference evaluator: `docs/semantics.md` as code.
//!
//! Input: a `Validated` IR and a `Packet` (a parsed packet plus what the
//! runtime knows about both ends). Output: a `Decision` (verdict, reason,
//! deciding rule, and the other rules that matched). It is deliberately
//! plain — every rule is tried, in order — because it is the oracle that the
//! decision diagram and the kernel programs are tested against.

pub mod cases;
pub mod frame;
pub mod packet;

use std::net::IpAddr;

use serde::Serialize;

use crate::ir::{Layer, Peer, Rule, RuleId, Subject, Validated};
use crate::resolve::{
    Action, Direction, Entity, HttpReq, KafkaReq, L7Spec, NamePattern, PathMatch, PortSpec,
    SnatSpec,
};

pub use runtime_loader::identity::{selector_matches, Endpoint, Identity};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub enum Fragment {
    /// Not a fragment.
    #[default]
    None,
    /// The first fragment: it carries the L4 header.
    First,
    /// A later fragment: no L4 header.
    Later,
}

/// An L7 request, as a proxy or the L7 parser sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum L7Request {
    Http {
        method: String,
        path: String,
        host: Option<String>,
        headers: Vec<(String, String)>,
    },
    Dns {
        name: String,
    },
    Kafka {
        api_key: u16,
        topic: Option<String>,
        client_id: Option<String>,
    },
    Tls {
        server_name: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Packet {
    /// Relative to the local endpoint (or host): ingress arrives at it.
    pub direction: Direction,
    pub local: Identity,
    pub peer: Identity,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    /// 0 when the protocol has no ports.
    pub sport: u16,
    pub dport: u16,
    pub icmp_type: u8,
    pub icmp_code: u8,
    /// The 16-bit word of TCP data offset and flags, as ClassBench has it;
    /// the TCP flags proper are the low byte.
    pub tcp_flags: u16,
    pub fragment: Fragment,
    /// Too short or inconsistent to parse (headers cut, bad lengths, too
    /// many IPv6 extension headers).
    pub malformed: bool,
    pub l7: Option<L7Request>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Allow,
    Drop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// A policy `allow` rule matched and no `deny` did.
    MatchedAllow,
    /// A policy `deny` rule matched.
    MatchedDeny,
    /// Policies enforce this direction for the local side and no `allow`
    /// matched.
    DefaultDeny,
    /// No policy enforces this direction and no chain dropped.
    NoPolicy,
    /// No policy enforces this direction; a chain rule accepted.
    ChainAccept,
    /// A chain rule dropped.
    ChainDrop,
    /// The packet could not be parsed.
    Malformed,
    /// A later fragment; the datapath gives it the verdict of its first
    /// fragment, which a stateless evaluation does not know.
    LaterFragment,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::MatchedAllow => "matched-allow",
            Reason::MatchedDeny => "matched-deny",
            Reason::DefaultDeny => "default-deny",
            Reason::NoPolicy => "no-policy",
            Reason::ChainAccept => "chain-accept",
            Reason::ChainDrop => "chain-drop",
            Reason::Malformed => "malformed",
            Reason::LaterFragment => "later-fragment",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub verdict: Verdict,
    pub reason: Reason,
    /// The rule that decided, if one did.
    pub rule: Option<RuleId>,
    /// Every rule that matched the packet, in id order (for chains: the
    /// first match of each chain only). Includes audit rules, allows that a
    /// deny overrode, and chain accepts that a policy decision followed.
    pub matched: Vec<RuleId>,
    /// Allow rules whose L3/L4 part matched but whose L7 block did not.
    pub l7_mismatch: Vec<RuleId>,
    /// SNAT of the deciding allow rule.
    pub snat: Option<SnatSpec>,
}

impl Decision {
    fn early(verdict: Verdict, reason: Reason) -> Decision {
        Decision {
            verdict,
            reason,
            rule: None,
            matched: Vec::new(),
            l7_mismatch: Vec::new(),
            snat: None,
        }
    }
}

/// Decide what happens to `pkt`.
pub fn evaluate(ir: &Validated, pkt: &Packet) -> Decision {
    if pkt.malformed {
        return Decision::early(Verdict::Drop, Reason::Malformed);
    }
    if pkt.fragment == Fragment::Later {
        return Decision::early(Verdict::Drop, Reason::LaterFragment);
    }
    let mut matched = Vec::new();
    let mut l7_mismatch = Vec::new();

    // Chains: each chain that applies is tried in order; its first matching
    // rule is its verdict. A drop is final; an accept lets the policies
    // decide.
    let mut accepted = None;
    for chain in ir
        .chains
        .iter()
        .filter(|c| c.direction == pkt.direction && subject_matches(&c.subject, &pkt.local))
    {
        let hit = chain
            .rules
            .iter()
            .map(|id| &ir.rules[*id as usize])
            .find(|r| l3l4_matches(r, pkt));
        if let Some(r) = hit {
            matched.push(r.id);
            if r.action == Action::Drop {
                return Decision {
                    verdict: Verdict::Drop,
                    reason: Reason::ChainDrop,
                    rule: Some(r.id),
                    matched,
                    l7_mismatch,
                    snat: None,
                };
            }
            accepted.get_or_insert(r.id);
        }
    }

    // Policies.
    let enforced = ir
        .sections
        .iter()
        .any(|s| s.direction == pkt.direction && subject_matches(&s.subject, &pkt.local));
    let mut deny = None;
    let mut allow: Option<&Rule> = None;
    for r in ir.rules.iter().filter(|r| {
        r.layer == Layer::Policy
            && r.direction == pkt.direction
            && subject_matches(&r.subject, &pkt.local)
    }) {
        if !l3l4_matches(r, pkt) {
            continue;
        }
        if !l7_matches(r, pkt) {
            l7_mismatch.push(r.id);
            continue;
        }
        matched.push(r.id);
        match r.action {
            Action::Deny => {
                deny.get_or_insert(r.id);
            }
            Action::Allow => {
                allow.get_or_insert(r);
            }
            _ => {}
        }
    }
    matched.sort_unstable();
    let (verdict, reason, rule, snat) = if let Some(d) = deny {
        (Verdict::Drop, Reason::MatchedDeny, Some(d), None)
    } else if !enforced {
        match accepted {
            Some(a) => (Verdict::Allow, Reason::ChainAccept, Some(a), None),
            None => (Verdict::Allow, Reason::NoPolicy, None, None),
        }
    } else if let Some(a) = allow {
        (
            Verdict::Allow,
            Reason::MatchedAllow,
            Some(a.id),
            a.snat.clone(),
        )
    } else {
        (Verdict::Drop, Reason::DefaultDeny, None, None)
    };
    Decision {
        verdict,
        reason,
        rule,
        matched,
        l7_mismatch,
        snat,
    }
}

/// Does the subject protect the local side?
pub fn subject_matches(s: &Subject, local: &Identity) -> bool {
    match (s, local) {
        (Subject::Host, Identity::Host) => true,
        (Subject::AllEndpoints, Identity::Endpoint(_)) => true,
        (Subject::EndpointsAndHost, Identity::Endpoint(_) | Identity::Host) => true,
        (Subject::Selector(sel), Identity::Endpoint(e)) => selector_matches(sel, e),
        _ => false,
    }
}

fn peer_matches(p: &Peer, who: &Identity, addr: IpAddr) -> bool {
    match p {
        Peer::Entity(Entity::All) => true,
        Peer::Entity(Entity::World) => *who == Identity::World,
        Peer::Entity(Entity::Host) => *who == Identity::Host,
        Peer::Entity(Entity::Cluster) => *who != Identity::World,
        Peer::Addrs(nets) => nets.iter().any(|n| n.contains(&addr)),
        Peer::Selector(s) => matches!(who, Identity::Endpoint(e) if selector_matches(s, e)),
    }
}

fn side_matches(alts: &[Peer], who: &Identity, addr: IpAddr) -> bool {
    alts.is_empty() || alts.iter().any(|p| peer_matches(p, who, addr))
}

fn port_matches(specs: &[PortSpec], port: u16, owner: &Identity) -> bool {
    specs.is_empty()
        || specs.iter().any(|s| match s {
            PortSpec::Range(a, b) => *a <= port && port <= *b,
            PortSpec::Named(n) => {
                matches!(owner, Identity::Endpoint(e) if e.named_ports.get(n) == Some(&port))
            }
        })
}

/// Everything but the L7 block.
pub fn l3l4_matches(r: &Rule, pkt: &Packet) -> bool {
    let (src_id, dst_id) = match pkt.direction {
        Direction::Ingress => (&pkt.peer, &pkt.local),
        Direction::Egress => (&pkt.local, &pkt.peer),
    };
    side_matches(&r.src, src_id, pkt.src)
        && side_matches(&r.dst, dst_id, pkt.dst)
        && (r.protos.is_empty() || r.protos.contains(&pkt.proto))
        // Ports only exist on protocols that have them; the validator
        // guarantees that a rule with ports names only such protocols.
        && port_matches(&r.dports, pkt.dport, dst_id)
        && port_matches(&r.sports, pkt.sport, src_id)
        && r.icmp.is_none_or(|i| i.ty == pkt.icmp_type && i.code.is_none_or(|c| c == pkt.icmp_code))
        && r.flags.is_none_or(|f| pkt.tcp_flags & f.mask == f.value)
}

/// A rule without L7 block, or a packet that is not an L7 request (e.g. the
/// TCP handshake), matches; otherwise the request must match an entry.
pub fn l7_matches(r: &Rule, pkt: &Packet) -> bool {
    let (Some(spec), Some(req)) = (&r.l7, &pkt.l7) else {
        return true;
    };
    match (spec, req) {
        (
            L7Spec::Http(reqs),
            L7Request::Http {
                method,
                path,
                host,
                headers,
            },
        ) => reqs
            .iter()
            .any(|h| http_matches(h, method, path, host.as_deref(), headers)),
        (L7Spec::Dns(pats), L7Request::Dns { name }) => pats.iter().any(|p| name_matches(p, name)),
        (L7Spec::Tls(pats), L7Request::Tls { server_name }) => {
            pats.iter().any(|p| name_matches(p, server_name))
        }
        (
            L7Spec::Kafka(reqs),
            L7Request::Kafka {
                api_key,
                topic,
                client_id,
            },
        ) => reqs
            .iter()
            .any(|k| kafka_matches(k, *api_key, topic.as_deref(), client_id.as_deref())),
        _ => false,
    }
}

fn http_matches(
    h: &HttpReq,
    method: &str,
    path: &str,
    host: Option<&str>,
    headers: &[(String, String)],
) -> bool {
    h.method.as_ref().is_none_or(|m| m == method)
        && h.path.as_ref().is_none_or(|p| match p {
            PathMatch::Exact(x) => x == path,
            PathMatch::Prefix(x) => path.starts_with(x.as_str()),
            // Validated by the resolver; a pattern that fails to build
            // matches nothing.
            PathMatch::Regex(x) => regex::Regex::new(x).is_ok_and(|re| re.is_match(path)),
        })
        && h.host
            .as_ref()
            .is_none_or(|p| host.is_some_and(|hv| name_matches(p, hv)))
        && h.headers.iter().all(|(name, value)| {
            headers.iter().any(|(k, v)| {
                k.eq_ignore_ascii_case(name) && value.as_ref().is_none_or(|want| want == v)
            })
        })
}

fn kafka_matches(k: &KafkaReq, api_key: u16, topic: Option<&str>, client: Option<&str>) -> bool {
    k.api_keys.contains(&api_key)
        && k.topic.as_ref().is_none_or(|t| topic == Some(t.as_str()))
        && k.client_id
            .as_ref()
            .is_none_or(|c| client == Some(c.as_str()))
}

/// DNS and TLS names: case-insensitive, a final dot ignored; `*` matches
/// any run (possibly empty) of letters, digits, `-` and `_`, never a dot.
pub fn name_matches(p: &NamePattern, name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    match p {
        NamePattern::Exact(x) => *x == name,
        NamePattern::Wildcard(x) => wildcard(x.as_bytes(), name.as_bytes()),
    }
}

fn wildcard(p: &[u8], s: &[u8]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => {
            // Try every length of the run the star stands for.
            let run = s
                .iter()
                .take_while(|c| c.is_ascii_alphanumeric() || **c == b'-' || **c == b'_')
                .count();
            (0..=run).any(|n| wildcard(rest, &s[n..]))
        }
        Some((c, rest)) => s.first() == Some(c) && wildcard(rest, &s[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_stay_within_a_label() {
        let w = |p: &str| NamePattern::Wildcard(p.into());
        assert!(name_matches(&w("*.example.com"), "api.example.com"));
        assert!(name_matches(&w("*.example.com"), "API.Example.com."));
        assert!(!name_matches(&w("*.example.com"), "a.b.example.com"));
        assert!(!name_matches(&w("*.example.com"), "example.com"));
        assert!(name_matches(&w("api-*.example.com"), "api-eu1.example.com"));
        assert!(name_matches(&w("*"), "localhost"));
        assert!(!name_matches(&w("*"), "a.b"));
    }
}
