//! Diagnostics: errors and warnings as values, with spans.
//!
//! Every stage reports through `Diagnostic`; nothing is printed until the
//! CLI picks a renderer (`render::human`, `json`, `sarif` or `github`).
//! Each diagnostic has a stable `Code` so that CI systems and users can
//! refer to a kind of mistake (`cilc check --format sarif` lists them as
//! rules).

pub mod render;

use cilc_grammar::ast::Span;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
    /// Worth knowing, not a mistake: never fails a check.
    Note,
}

macro_rules! codes {
    ($($variant:ident = $slug:literal : $summary:literal,)*) => {
        /// The kind of a diagnostic. The slug is stable: tools match on it.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Code { $($variant,)* }

        impl Code {
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];
            pub fn slug(self) -> &'static str {
                match self { $(Code::$variant => $slug,)* }
            }
            pub fn summary(self) -> &'static str {
                match self { $(Code::$variant => $summary,)* }
            }
        }
    };
}

codes! {
    // Syntax.
    SyntaxError = "syntax-error": "The text does not follow the grammar of the language.",
    UnexpectedEof = "unexpected-eof": "The file ends in the middle of a definition or block.",
    InvalidChar = "invalid-character": "A character the language does not use.",
    UnterminatedString = "unterminated-string": "A string literal without its closing quote.",
    // Names.
    UndefinedName = "undefined-name": "A name that is not defined in the file.",
    DuplicateDefinition = "duplicate-definition": "A name defined twice.",
    WrongKind = "wrong-kind": "A name used where a different kind of definition is expected.",
    ReservedName = "reserved-name": "A definition that would hide a built-in entity.",
    CyclicDefinition = "cyclic-definition": "A set that includes itself through references.",
    UnusedDefinition = "unused-definition": "A definition that no policy or chain uses.",
    DuplicateRuleName = "duplicate-rule-name": "Two rules with the same `as` name.",
    // Addresses.
    InvalidAddress = "invalid-address": "An IPv4 or IPv6 address or prefix that cannot be read.",
    HostBitsSet = "host-bits-set": "A prefix with bits set after its length.",
    ExceptOutside = "except-outside": "An `except` prefix that is not inside any included prefix.",
    EmptySet = "empty-set": "A set or list that contains nothing.",
    // Ports and protocols.
    PortOutOfRange = "port-out-of-range": "A port outside 0-65535.",
    InvertedRange = "inverted-range": "A range whose start is after its end.",
    PortZero = "port-zero": "Port 0, which no TCP, UDP or SCTP packet carries.",
    InvalidPortName = "invalid-port-name": "A named port that is not a valid container port name.",
    PortsNotAllowed = "ports-not-allowed": "Ports on a protocol that has none.",
    SportOutsideChain = "sport-outside-chain": "Source ports are only matched in chains.",
    UnknownProtocol = "unknown-protocol": "A protocol name or number that cannot be used.",
    DuplicateProtocol = "duplicate-protocol": "A protocol listed twice in one rule.",
    IcmpNotAllowed = "icmp-not-allowed": "An ICMP type on a protocol that is not ICMP.",
    IcmpOutOfRange = "icmp-out-of-range": "An ICMP type or code outside 0-255.",
    UnknownIcmpType = "unknown-icmp-type": "An ICMP type name that does not exist for the protocol.",
    FlagsNotAllowed = "flags-not-allowed": "TCP flags on a rule that does not match TCP only.",
    InvalidFlags = "invalid-flags": "TCP flags that cannot be read, or a value outside its mask.",
    FamilyMismatch = "family-mismatch": "IPv4 and IPv6 mixed where they cannot meet.",
    // Selectors.
    InvalidLabel = "invalid-label": "A label key or value that Kubernetes would not accept.",
    EmptySelector = "empty-selector": "A selector whose terms contradict each other.",
    DuplicateTerm = "duplicate-term": "A label term repeated in one selector.",
    // Rules.
    DirectionMismatch = "direction-mismatch": "`from` in an egress section or `to` in an ingress section.",
    ActionNotAllowed = "action-not-allowed": "allow/deny/audit in a chain, or accept/drop in a policy.",
    DuplicateSection = "duplicate-section": "Two ingress or two egress sections in one policy.",
    EmptyPolicy = "empty-policy": "A policy without ingress or egress section.",
    UnreachableRule = "unreachable-rule": "A chain rule after a rule that matches every packet.",
    // Lints from the decision diagrams.
    ShadowedRule = "shadowed-rule": "A rule that never decides a packet: earlier rules match all it matches.",
    RedundantRule = "redundant-rule": "A rule whose removal changes no verdict.",
    DenyOverridesAllow = "deny-overrides-allow": "A deny that overrides part of an allow (a note, with an example packet).",
    AllowsNothing = "allows-nothing": "A policy section that allows no traffic in its direction.",
    AllowsEverything = "allows-everything": "A policy section that allows all traffic in its direction.",
    // L7.
    L7Protocol = "l7-protocol": "An L7 block on a protocol that cannot carry it.",
    L7WithoutPort = "l7-without-port": "An L7 block on a rule without destination ports.",
    L7NotAllow = "l7-not-allow": "An L7 block on a rule that is not `allow`.",
    L7Port = "l7-port": "An L7 block on a port its protocol does not usually use.",
    EmptyL7 = "empty-l7": "An L7 block that lists nothing, and so allows every request.",
    HttpMethod = "http-method": "An HTTP method that is not a standard one.",
    HttpPath = "http-path": "An HTTP path pattern that can never match.",
    InvalidRegex = "invalid-regex": "A regular expression that cannot be compiled.",
    InvalidHeader = "invalid-header": "An HTTP header name that is not a valid token.",
    InvalidDnsName = "invalid-dns-name": "A DNS name or pattern that can never match a query.",
    UnknownKafkaApi = "unknown-kafka-api": "A Kafka API key name or number that does not exist.",
    InvalidKafkaTopic = "invalid-kafka-topic": "A Kafka topic name that Kafka would not accept.",
    // NAT.
    SnatNotAllowed = "snat-not-allowed": "SNAT on a rule that is not an egress allow.",
    SnatInsideCluster = "snat-inside-cluster": "SNAT to a peer inside the cluster.",
    // Robustness.
    Internal = "internal-error": "The compiler failed; this is a bug in cilc.",
}

/// A secondary location with its own message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub span: Span,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub code: Code,
    pub message: String,
    /// Where the mistake is; the caret goes here.
    pub span: Span,
    /// Text beside the caret.
    pub label: String,
    pub related: Vec<Note>,
    /// Free-standing notes (no location).
    pub notes: Vec<String>,
    /// What to do about it.
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn error(code: Code, span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(Severity::Error, code, span, message)
    }

    pub fn warning(code: Code, span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(Severity::Warning, code, span, message)
    }

    pub fn notice(code: Code, span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(Severity::Note, code, span, message)
    }

    fn new(severity: Severity, code: Code, span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity,
            code,
            message: message.into(),
            span,
            label: String::new(),
            related: Vec::new(),
            notes: Vec::new(),
            help: None,
        }
    }

    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    pub fn related(mut self, span: Span, message: impl Into<String>) -> Self {
        self.related.push(Note {
            span,
            message: message.into(),
        });
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(note.into());
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn help_opt(mut self, help: Option<String>) -> Self {
        if help.is_some() {
            self.help = help;
        }
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    pub fn is_note(&self) -> bool {
        self.severity == Severity::Note
    }
}

/// A closest match for `name` among `candidates`, for "did you mean" hints.
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let mut best: Option<(f64, &str)> = None;
    for c in candidates {
        if c == name {
            continue;
        }
        let score = strsim::jaro_winkler(&name.to_ascii_lowercase(), &c.to_ascii_lowercase());
        let close =
            score >= 0.8 || strsim::damerau_levenshtein(name, c) <= name.len().min(c.len()) / 3;
        if close && best.is_none_or(|(s, _)| score > s) {
            best = Some((score, c));
        }
    }
    best.map(|(_, c)| c.to_string())
}

/// "did you mean `x`?" or nothing.
pub fn did_you_mean_help<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    did_you_mean(name, candidates).map(|c| format!("did you mean `{c}`?"))
}

/// Turn syntax errors from the grammar crate into diagnostics.
pub fn from_syntax(e: &cilc_grammar::SyntaxError) -> Diagnostic {
    use cilc_grammar::SyntaxErrorKind as K;
    match &e.kind {
        K::UnexpectedToken { found, expected } => {
            // `80:90` reads as an IPv6 address; it is nearly always a range.
            let range = found
                .strip_prefix("address `")
                .and_then(|s| s.strip_suffix('`'))
                .and_then(|s| s.split_once(':'))
                .filter(|(a, b)| {
                    !a.is_empty() && a.bytes().chain(b.bytes()).all(|c| c.is_ascii_digit())
                })
                .map(|(a, b)| format!("port ranges are written `{a}-{b}`"));
            // A reserved word where a name was expected; a word that starts
            // an item usually means the previous one ended too early.
            let word = found.strip_prefix('`').and_then(|s| s.strip_suffix('`'));
            let reserved = word.filter(|w| cilc_grammar::lexer::is_keyword(w)).and_then(|w| {
                if cilc_grammar::lexer::is_item_keyword(w) && expected.iter().any(|e| e == "a label") {
                    Some(format!("`{w}` starts a new definition; does the one before it end with a stray `,` or miss a value?"))
                } else if expected.iter().any(|e| e == "a name") {
                    Some(format!("`{w}` is a reserved word and cannot be a name; choose another, e.g. `{w}-1`"))
                } else {
                    None
                }
            });
            Diagnostic::error(Code::SyntaxError, e.span, format!("unexpected {found}"))
                .label("not expected here")
                .help_opt(range.or(reserved).or_else(|| expected_help(expected)))
        }
        K::UnexpectedEof { expected } => {
            Diagnostic::error(Code::UnexpectedEof, e.span, "unexpected end of file")
                .label("the file ends here")
                .help(match expected_help(expected) {
                    Some(e) => format!("is a closing `}}` missing? ({e})"),
                    None => "is a closing `}` missing?".to_string(),
                })
        }
        K::InvalidChar(c) => Diagnostic::error(
            Code::InvalidChar,
            e.span,
            format!("unexpected character `{}`", c.escape_debug()),
        )
        .label("not part of the language")
        .help_opt(match c {
            ':' => Some("ranges are written `8000-8099`".into()),
            '\'' => Some("strings use double quotes: \"...\"".into()),
            '&' => Some("terms of a selector are joined with `,` (all must hold)".into()),
            _ => None,
        }),
        K::UnterminatedString => {
            Diagnostic::error(Code::UnterminatedString, e.span, "unterminated string")
                .label("this string has no closing quote on its line")
                .help("add a `\"` at the end of the string")
        }
    }
}

fn expected_help(expected: &[String]) -> Option<String> {
    match expected.len() {
        0 => None,
        1 => Some(format!("expected {}", expected[0])),
        n if n <= 8 => Some(format!("expected one of {}", expected.join(", "))),
        _ => Some(format!("expected one of {}, …", expected[..8].join(", "))),
    }
}
