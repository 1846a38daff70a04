//! Resolution and checks: `ast::File` → `Program` + diagnostics.
//!
//! Pipeline stage: **surface AST → resolved program**. Names are looked up
//! (sets and selectors are inlined where they are used, keeping their
//! names), values are parsed and range-checked (addresses, ports, ICMP,
//! flags, L7 patterns), and every rule is checked for the combinations that
//! make no sense (HTTP on UDP, `snat` on ingress, `from` in egress, ...).
//! Each mistake becomes a `Diagnostic` with a span; resolution goes on past
//! errors so that one run reports all of them. The `Program` is complete
//! only when no error was reported: later stages must not run otherwise.
//!
//! Submodules, one per kind of value: `scope` (names), `addr` (IP sets),
//! `ports`, `labels` (selectors), `l4` (protocols, ICMP, TCP flags), `l7`
//! (HTTP, DNS, Kafka, TLS), `rules` (policies and chains).

mod addr;
pub mod l4;
mod l7;
mod labels;
mod ports;
mod print;
mod rules;
mod scope;

use std::net::IpAddr;

use cilc_grammar::ast::{self, Span};
use ipnet::IpNet;
use serde::Serialize;

use crate::diag::Diagnostic;

pub use addr::expand;
pub use ast::{Action, Direction};
pub use l4::{icmp_type_name, protocol_name};
pub use runtime_loader::identity::{LabelMatch, LabelReq, NamespaceReq};

/// A checked file: every definition, policy and chain with names resolved.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Program {
    pub cidrs: Vec<CidrSet>,
    pub ports: Vec<PortSet>,
    pub selectors: Vec<NamedSelector>,
    pub policies: Vec<Policy>,
    pub chains: Vec<Chain>,
}

/// `cidr NAME = ...` with references flattened.
#[derive(Debug, Clone, Serialize)]
pub struct CidrSet {
    pub name: String,
    pub span: Span,
    pub set: AddrSet,
}

/// A set of addresses: the union of `include` minus the union of `except`.
/// Both lists are sorted, without duplicates, with host bits cleared.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AddrSet {
    pub include: Vec<IpNet>,
    pub except: Vec<IpNet>,
}

impl AddrSet {
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.include.iter().any(|n| n.contains(&ip)) && !self.except.iter().any(|n| n.contains(&ip))
    }
    pub fn has_v4(&self) -> bool {
        self.include.iter().any(|n| matches!(n, IpNet::V4(_)))
    }
    pub fn has_v6(&self) -> bool {
        self.include.iter().any(|n| matches!(n, IpNet::V6(_)))
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PortSet {
    pub name: String,
    pub span: Span,
    pub ports: Vec<PortSpec>,
}

/// A destination or source port match.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum PortSpec {
    /// Inclusive range; a single port is `Range(p, p)`.
    Range(u16, u16),
    /// A container port name, resolved per endpoint at run time.
    Named(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct NamedSelector {
    pub name: String,
    pub span: Span,
    pub selector: Selector,
}

/// Endpoints whose labels satisfy every requirement, in the namespaces the
/// namespace requirement allows (any namespace when it is `None`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Selector {
    pub labels: Vec<LabelReq>,
    pub namespace: Option<NamespaceReq>,
}

/// Built-in peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Entity {
    /// Everything outside the cluster.
    World,
    /// The node itself.
    Host,
    /// Every endpoint of the cluster (the host included).
    Cluster,
    /// Everything.
    All,
}

impl Entity {
    pub const ALL: [(&'static str, Entity); 4] = [
        ("world", Entity::World),
        ("host", Entity::Host),
        ("cluster", Entity::Cluster),
        ("all", Entity::All),
    ];

    pub fn from_name(name: &str) -> Option<Entity> {
        Entity::ALL
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, e)| *e)
    }
    pub fn name(self) -> &'static str {
        Entity::ALL
            .iter()
            .find(|(_, e)| *e == self)
            .map(|(n, _)| *n)
            .unwrap_or("?")
    }
}

/// What a policy or chain protects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Subject {
    Entity(Entity),
    Selector {
        name: Option<String>,
        selector: Selector,
    },
}

/// A peer of a rule. `name` is the definition it came from, if any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Peer {
    Entity(Entity),
    Cidr {
        name: Option<String>,
        set: AddrSet,
    },
    Selector {
        name: Option<String>,
        selector: Selector,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct Policy {
    pub name: String,
    pub span: Span,
    pub subject: Subject,
    /// `None` when the policy has no ingress section (it then says nothing
    /// about ingress); `Some(vec![])` is an empty section (deny all).
    pub ingress: Option<Vec<Rule>>,
    pub egress: Option<Vec<Rule>>,
    /// Where each section's direction keyword is.
    pub section_spans: Vec<(Direction, Span)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Chain {
    pub name: String,
    pub span: Span,
    pub subject: Subject,
    pub direction: Direction,
    pub rules: Vec<Rule>,
}

/// One rule. Empty lists mean "any": no `src` peers matches every source.
#[derive(Debug, Clone, Serialize)]
pub struct Rule {
    /// `policy/ingress/3`, `chain/2`, or `policy/NAME` for `as NAME`.
    pub name: String,
    pub span: Span,
    pub action: Action,
    pub direction: Direction,
    pub src: Vec<Peer>,
    pub dst: Vec<Peer>,
    /// IANA protocol numbers.
    pub protos: Vec<u8>,
    pub ports: Vec<PortSpec>,
    pub sports: Vec<PortSpec>,
    pub icmp: Option<IcmpSpec>,
    pub flags: Option<FlagsSpec>,
    pub l7: Option<L7Spec>,
    pub snat: Option<SnatSpec>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct IcmpSpec {
    pub ty: u8,
    pub code: Option<u8>,
}

/// TCP flags: match when `flags & mask == value`. 16 bits wide, like
/// ClassBench: the low byte is the TCP flags byte (FIN = 0x01 ... CWR = 0x80).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FlagsSpec {
    pub value: u16,
    pub mask: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum L7Spec {
    Http(Vec<HttpReq>),
    Dns(Vec<NamePattern>),
    Kafka(Vec<KafkaReq>),
    Tls(Vec<NamePattern>),
}

/// An HTTP request pattern: every part present must match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HttpReq {
    pub method: Option<String>,
    pub path: Option<PathMatch>,
    pub host: Option<NamePattern>,
    pub headers: Vec<(String, Option<String>)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum PathMatch {
    Exact(String),
    Prefix(String),
    Regex(String),
}

/// A DNS or TLS server name: exact, or a pattern where `*` stands for any
/// run of name characters within one label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum NamePattern {
    Exact(String),
    Wildcard(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KafkaReq {
    /// The API keys allowed (a role expands to several).
    pub api_keys: Vec<u16>,
    pub topic: Option<String>,
    pub client_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnatSpec {
    /// `None`: masquerade to the host address of the egress interface.
    pub to: Option<IpAddr>,
}

/// Resolve and check a parsed file.
pub fn resolve(file: &ast::File) -> (Program, Vec<Diagnostic>) {
    let mut r = Resolver {
        scope: scope::Scope::collect(file),
        diags: Vec::new(),
        program: Program::default(),
        cidr_memo: addr::Memos::new(),
        port_memo: addr::Memos::new(),
    };
    r.diags.append(&mut r.scope.diags);
    r.definitions(file);
    r.policies_and_chains(file);
    r.unused();
    let Resolver {
        program, mut diags, ..
    } = r;
    diags.sort_by_key(|d| (d.span.start, d.span.end, d.code));
    (program, diags)
}

pub(crate) struct Resolver<'a> {
    scope: scope::Scope<'a>,
    diags: Vec<Diagnostic>,
    program: Program,
    cidr_memo: addr::Memos<AddrSet>,
    port_memo: addr::Memos<Vec<PortSpec>>,
}

impl Resolver<'_> {
    fn report(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    fn unused(&mut self) {
        let unused = self.scope.unused();
        self.diags.extend(unused);
    }
}
