//! The surface AST: what the user wrote, with a byte span on every node.
//!
//! Produced by `parse` (the LALRPOP grammar in `parser.lalrpop`), consumed by
//! the compiler's resolver and by its formatter. Nothing here is checked yet:
//! numbers, addresses and names are kept as written (with their spans) so that
//! the resolver can report each mistake precisely and parsing never stops on
//! a bad value.

use serde::Serialize;

/// A half-open byte range `start..end` into the source file.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, PartialOrd, Ord)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Span {
        Span {
            start: start as u32,
            end: end as u32,
        }
    }
    /// The smallest span covering both.
    pub fn to(self, other: Span) -> Span {
        Span {
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }
    pub fn range(self) -> std::ops::Range<usize> {
        self.start as usize..self.end as usize
    }
}

impl std::fmt::Debug for Span {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}..{}", self.start, self.end)
    }
}

/// A `#` comment; `fmt` puts it back next to the code it sat beside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Comment {
    pub text: String,
    pub span: Span,
}

/// A word as written: a name, number, address or label, without quotes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Word {
    pub text: String,
    pub span: Span,
}

impl Word {
    pub fn new(text: &str, l: usize, r: usize) -> Word {
        Word {
            text: text.to_string(),
            span: Span::new(l, r),
        }
    }
}

/// A string literal: `value` is decoded, `quoted` keeps the source form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Str {
    pub value: String,
    #[serde(skip)]
    pub quoted: String,
    pub span: Span,
}

impl Str {
    pub fn new(quoted: &str, l: usize, r: usize) -> Str {
        Str {
            value: unescape(quoted),
            quoted: quoted.to_string(),
            span: Span::new(l, r),
        }
    }
}

/// Decode a string literal (with its quotes): `\"`, `\\`, `\n`, `\t` are
/// escapes; a backslash before any other character stays, so that regular
/// expressions read as written (`"^/v\d+\.json$"`).
pub fn unescape(quoted: &str) -> String {
    let inner = quoted.strip_prefix('"').unwrap_or(quoted);
    let inner = inner.strip_suffix('"').unwrap_or(inner);
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some(c @ ('"' | '\\')) => out.push(c),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// Encode `value` as a string literal (the inverse of `unescape`). A
/// backslash is doubled only where it would otherwise start an escape.
pub fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => match chars.peek() {
                None | Some('n' | 't' | '"' | '\\') => out.push_str("\\\\"),
                Some(_) => out.push('\\'),
            },
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_round_trip_and_keep_regex_escapes() {
        assert_eq!(unescape(r#""^/v\d+\.json$""#), r"^/v\d+\.json$");
        assert_eq!(quote(r"^/v\d+\.json$"), r#""^/v\d+\.json$""#);
        for v in [
            "a\"b",
            r"\",
            r"\\",
            r"\n",
            "\n",
            r"x\",
            r"\d",
            "tab\there",
            "",
        ] {
            assert_eq!(unescape(&quote(v)), v, "{v:?}");
        }
    }
}

/// A parsed file: its items in order, and its comments.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct File {
    pub items: Vec<Item>,
    #[serde(skip)]
    pub comments: Vec<Comment>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Item {
    Cidr(CidrDef),
    Ports(PortsDef),
    Select(SelectDef),
    Policy(Policy),
    Chain(Chain),
    /// Text the parser skipped after a syntax error (already reported).
    Error(Span),
}

impl Item {
    pub fn span(&self) -> Span {
        match self {
            Item::Cidr(d) => d.span,
            Item::Ports(d) => d.span,
            Item::Select(d) => d.span,
            Item::Policy(p) => p.span,
            Item::Chain(c) => c.span,
            Item::Error(s) => *s,
        }
    }
}

/// `cidr NAME = ITEMS [except ITEMS]`
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CidrDef {
    pub name: Word,
    pub include: Vec<AddrItem>,
    pub except: Vec<AddrItem>,
    pub span: Span,
}

/// An address or prefix literal, or the name of another `cidr` set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum AddrItem {
    Addr(Word),
    Ref(Word),
}

impl AddrItem {
    pub fn word(&self) -> &Word {
        match self {
            AddrItem::Addr(w) | AddrItem::Ref(w) => w,
        }
    }
}

/// `ports NAME = ITEMS`
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PortsDef {
    pub name: Word,
    pub items: Vec<PortItem>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum PortItem {
    /// `443`
    Num(Word),
    /// `8000-8099`
    Range(Word, Word),
    /// `named http`: a container port name, resolved per endpoint at run time.
    Named(Word),
    /// The name of a `ports` set.
    Ref(Word),
}

impl PortItem {
    pub fn span(&self) -> Span {
        match self {
            PortItem::Num(w) | PortItem::Named(w) | PortItem::Ref(w) => w.span,
            PortItem::Range(a, b) => a.span.to(b.span),
        }
    }
}

/// `select NAME = SELECTOR`
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SelectDef {
    pub name: Word,
    pub selector: Selector,
    pub span: Span,
}

/// Label terms (all must hold) and an optional namespace clause.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Selector {
    pub terms: Vec<LabelTerm>,
    pub namespace: Option<NsClause>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelTerm {
    pub key: Word,
    pub op: LabelOp,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum LabelOp {
    /// `key=value`
    Eq(Word),
    /// `key!=value`
    Ne(Word),
    /// `key in (a, b)`
    In(Vec<Word>),
    /// `key notin (a, b)`
    NotIn(Vec<Word>),
    /// `key=*`
    Exists,
    /// `!key`
    Absent,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum NsClause {
    /// `in namespace shop` or `in namespace (shop, billing)`
    Names(Vec<Word>, Span),
    /// `in namespaces env=prod, team=pay`: namespaces selected by their labels.
    Labels(Vec<LabelTerm>, Span),
}

impl NsClause {
    pub fn span(&self) -> Span {
        match self {
            NsClause::Names(_, s) | NsClause::Labels(_, s) => *s,
        }
    }
}

/// `policy NAME on SUBJECT { ingress {...} egress {...} }`
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Policy {
    pub name: Word,
    pub subject: Subject,
    pub sections: Vec<Section>,
    pub span: Span,
}

/// What a policy or chain protects.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Subject {
    /// A selector name, or an entity such as `host`.
    Name(Word),
    /// `{ app=web }`
    Inline(Selector),
}

impl Subject {
    pub fn span(&self) -> Span {
        match self {
            Subject::Name(w) => w.span,
            Subject::Inline(s) => s.span,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    pub fn keyword(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Section {
    pub direction: Direction,
    pub direction_span: Span,
    pub rules: Vec<Rule>,
    pub span: Span,
}

/// `chain NAME on SUBJECT DIRECTION { rules }`: ordered, first match wins.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Chain {
    pub name: Word,
    pub subject: Subject,
    pub direction: Direction,
    pub direction_span: Span,
    pub rules: Vec<Rule>,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Action {
    Allow,
    Deny,
    Audit,
    Accept,
    Drop,
}

impl Action {
    pub fn keyword(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
            Action::Audit => "audit",
            Action::Accept => "accept",
            Action::Drop => "drop",
        }
    }
}

/// One rule of a policy section or a chain. Every clause is optional; which
/// combinations make sense is the resolver's business.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[allow(clippy::large_enum_variant)] // error rules are rare; boxing every rule is not worth it
pub enum Rule {
    Rule(RuleBody),
    /// A rule the parser could not read (already reported).
    Error(Span),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleBody {
    pub action: Action,
    pub action_span: Span,
    pub from: Option<PeerClause>,
    pub to: Option<PeerClause>,
    pub l4: Option<L4>,
    pub l7: Option<L7>,
    pub snat: Option<Snat>,
    /// `as NAME`
    pub name: Option<Word>,
    pub span: Span,
}

/// `from PEERS` or `to PEERS`
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeerClause {
    pub keyword_span: Span,
    pub peers: Vec<Peer>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Peer {
    /// A `cidr` set, a selector or an entity.
    Name(Word),
    /// `10.0.0.0/8`, `2001:db8::1`
    Addr(Word),
    /// `{ app=web in namespace shop }`
    Inline(Selector),
}

impl Peer {
    pub fn span(&self) -> Span {
        match self {
            Peer::Name(w) | Peer::Addr(w) => w.span,
            Peer::Inline(s) => s.span,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum ProtoKw {
    Tcp,
    Udp,
    Sctp,
    Icmp,
    Icmpv6,
    Any,
}

impl ProtoKw {
    pub fn keyword(self) -> &'static str {
        match self {
            ProtoKw::Tcp => "tcp",
            ProtoKw::Udp => "udp",
            ProtoKw::Sctp => "sctp",
            ProtoKw::Icmp => "icmp",
            ProtoKw::Icmpv6 => "icmpv6",
            ProtoKw::Any => "any",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Proto {
    Kw(ProtoKw, Span),
    /// `proto 47` or `proto gre`
    Other(Word),
}

impl Proto {
    pub fn span(&self) -> Span {
        match self {
            Proto::Kw(_, s) => *s,
            Proto::Other(w) => w.span,
        }
    }
}

/// Protocol and what follows it: `tcp 80, 443 sport 1024-65535 flags syn/syn|ack`
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct L4 {
    /// `tcp/udp` lists several.
    pub protos: Vec<Proto>,
    pub ports: Vec<PortItem>,
    pub sports: Vec<PortItem>,
    pub icmp: Option<IcmpMatch>,
    pub flags: Option<TcpFlags>,
    pub span: Span,
}

/// `type T [code C]`
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IcmpMatch {
    pub ty: Word,
    pub code: Option<Word>,
    pub span: Span,
}

/// `flags VALUE[/MASK]`, each a hex number or flag names joined by `|`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TcpFlags {
    pub value: Vec<Word>,
    pub mask: Option<Vec<Word>>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum L7 {
    Http(Vec<HttpRule>, Span),
    /// Query names: exact, or with `*` wildcards.
    Dns(Vec<Str>, Span),
    Kafka(Vec<KafkaRule>, Span),
    /// TLS server names (SNI): exact, or with `*` wildcards.
    Tls(Vec<Str>, Span),
}

impl L7 {
    pub fn span(&self) -> Span {
        match self {
            L7::Http(_, s) | L7::Dns(_, s) | L7::Kafka(_, s) | L7::Tls(_, s) => *s,
        }
    }
    pub fn keyword(&self) -> &'static str {
        match self {
            L7::Http(..) => "http",
            L7::Dns(..) => "dns",
            L7::Kafka(..) => "kafka",
            L7::Tls(..) => "tls",
        }
    }
}

/// `GET "/api/*" host "shop.example.com" header "X-Token"`
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HttpRule {
    pub method: Option<Word>,
    pub path: Option<PathPat>,
    pub host: Option<Str>,
    pub headers: Vec<HeaderMatch>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum PathPat {
    /// Exact, or a prefix when it ends in `*`.
    Glob(Str),
    /// `regex "^/v[0-9]+/"`
    Regex(Str),
}

impl PathPat {
    pub fn str(&self) -> &Str {
        match self {
            PathPat::Glob(s) | PathPat::Regex(s) => s,
        }
    }
}

/// `header "Name"` (present) or `header "Name" = "value"` (equal).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HeaderMatch {
    pub name: Str,
    pub value: Option<Str>,
    pub span: Span,
}

/// `produce topic "orders"`, `fetch topic "events" client "billing"`, `18`
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KafkaRule {
    pub api: Word,
    pub topic: Option<Str>,
    pub client: Option<Str>,
    pub span: Span,
}

/// `snat` (masquerade to the host's address) or `snat to ADDRESS`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snat {
    pub to: Option<Word>,
    pub span: Span,
}
