//! Layer 7 blocks: HTTP, DNS, Kafka, TLS SNI. An L7 block narrows an
//! `allow` rule; it is always tied to the rule's protocol and ports.

use cilc_grammar::ast::{self, PathPat, Str};

use super::l4::{TCP, UDP};
use super::{HttpReq, KafkaReq, L7Spec, NamePattern, PathMatch, PortSpec, Resolver};
use crate::diag::{did_you_mean_help, Code, Diagnostic};

const HTTP_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// Kafka API keys by name (the protocol's names, lowercased).
const KAFKA_APIS: &[(&str, u16)] = &[
    ("produce", 0),
    ("fetch", 1),
    ("listoffsets", 2),
    ("metadata", 3),
    ("leaderandisr", 4),
    ("stopreplica", 5),
    ("updatemetadata", 6),
    ("controlledshutdown", 7),
    ("offsetcommit", 8),
    ("offsetfetch", 9),
    ("findcoordinator", 10),
    ("joingroup", 11),
    ("heartbeat", 12),
    ("leavegroup", 13),
    ("syncgroup", 14),
    ("describegroups", 15),
    ("listgroups", 16),
    ("saslhandshake", 17),
    ("apiversions", 18),
    ("createtopics", 19),
    ("deletetopics", 20),
    ("deleterecords", 21),
    ("initproducerid", 22),
    ("offsetforleaderepoch", 23),
    ("addpartitionstotxn", 24),
    ("addoffsetstotxn", 25),
    ("endtxn", 26),
    ("writetxnmarkers", 27),
    ("txnoffsetcommit", 28),
    ("describeacls", 29),
    ("createacls", 30),
    ("deleteacls", 31),
    ("describeconfigs", 32),
    ("alterconfigs", 33),
    ("alterreplicalogdirs", 34),
    ("describelogdirs", 35),
    ("saslauthenticate", 36),
    ("createpartitions", 37),
    ("createdelegationtoken", 38),
    ("renewdelegationtoken", 39),
    ("expiredelegationtoken", 40),
    ("describedelegationtoken", 41),
    ("deletegroups", 42),
    ("electleaders", 43),
    ("incrementalalterconfigs", 44),
    ("alterpartitionreassignments", 45),
    ("listpartitionreassignments", 46),
    ("offsetdelete", 47),
    ("describeclientquotas", 48),
    ("alterclientquotas", 49),
    ("describeuserscramcredentials", 50),
    ("alteruserscramcredentials", 51),
];

/// Roles, as in Cilium: the API keys a producer or a consumer needs.
const KAFKA_ROLES: &[(&str, &[u16])] = &[
    ("produce", &[0, 3, 18]),
    ("consume", &[1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 18]),
];

/// What the rule around an L7 block looks like.
pub struct RuleCtx<'r> {
    pub allow: bool,
    pub protos: &'r [u8],
    pub ports: &'r [PortSpec],
    pub rule_span: ast::Span,
    /// Whether the rule wrote destination ports (even ones that failed).
    pub wrote_ports: bool,
    /// A protocol of the rule failed to resolve (already reported).
    pub protos_failed: bool,
}

fn numeric_ports(ports: &[PortSpec]) -> impl Iterator<Item = (u16, u16)> + '_ {
    ports.iter().filter_map(|p| match p {
        PortSpec::Range(a, b) => Some((*a, *b)),
        PortSpec::Named(_) => None,
    })
}

/// Does the port list contain only numbers, none of which is `port`?
fn misses_port(ports: &[PortSpec], port: u16) -> bool {
    ports.iter().all(|p| matches!(p, PortSpec::Range(..)))
        && !numeric_ports(ports).any(|(a, b)| a <= port && port <= b)
}

/// Check a DNS name or pattern (also TLS server names). `*` matches any run
/// of name characters within one label.
pub fn name_pattern_error(name: &str) -> Option<&'static str> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return Some("a name cannot be empty");
    }
    if name.len() > 253 {
        return Some("a DNS name has at most 253 characters");
    }
    if name == "*" {
        return None;
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Some("a name cannot have an empty label (`..`, or a leading dot)");
        }
        if label.len() > 63 {
            return Some("a label of a DNS name has at most 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'*'))
        {
            return Some("names use letters, digits, `-`, `_`, and `*` as a wildcard");
        }
    }
    None
}

fn name_pattern(s: &str) -> NamePattern {
    let lower = s.to_ascii_lowercase();
    if lower.contains('*') {
        NamePattern::Wildcard(lower)
    } else {
        NamePattern::Exact(lower)
    }
}

fn header_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl Resolver<'_> {
    pub(super) fn l7(&mut self, l7: &ast::L7, cx: &RuleCtx<'_>) -> Option<L7Spec> {
        let kw = l7.keyword();
        let mut ok = true;
        if !cx.allow {
            self.report(
                Diagnostic::error(Code::L7NotAllow, l7.span(), format!("`{kw}` rules only narrow an `allow`"))
                    .label("L7 block on a rule that is not `allow`")
                    .help("deny the whole port, or allow the requests you want and let the rest fall to default deny"),
            );
            ok = false;
        }
        let proto_ok = match l7 {
            ast::L7::Dns(..) => {
                !cx.protos.is_empty() && cx.protos.iter().all(|p| *p == UDP || *p == TCP)
            }
            _ => cx.protos == [TCP],
        };
        if cx.protos_failed {
            ok = false;
        } else if !proto_ok {
            let (needs, example) = match l7 {
                ast::L7::Dns(..) => ("UDP or TCP", "udp/tcp 53"),
                ast::L7::Http(..) => ("TCP", "tcp 80"),
                ast::L7::Kafka(..) => ("TCP", "tcp 9092"),
                ast::L7::Tls(..) => ("TCP", "tcp 443"),
            };
            let what = match cx.protos {
                [] => "any protocol".to_string(),
                ps => ps
                    .iter()
                    .map(|p| super::protocol_name(*p).unwrap_or("another protocol"))
                    .collect::<Vec<_>>()
                    .join("/"),
            };
            self.report(
                Diagnostic::error(
                    Code::L7Protocol,
                    l7.span(),
                    format!("`{kw}` cannot be carried by {what}"),
                )
                .label(format!("{kw} runs over {needs}"))
                .related(cx.rule_span, "in this rule")
                .help(format!("write the rule for `{example}`")),
            );
            ok = false;
        } else if !cx.wrote_ports {
            self.report(
                Diagnostic::error(
                    Code::L7WithoutPort,
                    l7.span(),
                    format!("`{kw}` rules need a destination port"),
                )
                .label("no port on this rule")
                .help("an L7 block is tied to the ports it inspects, e.g. `tcp 8080 http { ... }`"),
            );
            ok = false;
        }
        let spec = match l7 {
            ast::L7::Http(reqs, span) => {
                self.empty_l7(reqs.is_empty(), *span, kw);
                if proto_ok
                    && !cx.ports.is_empty()
                    && cx.ports.iter().all(|p| *p == PortSpec::Range(443, 443))
                {
                    self.report(
                        Diagnostic::warning(Code::L7Port, *span, "HTTP rules on port 443 cannot see encrypted requests")
                            .label("port 443 carries HTTPS")
                            .help("match the server name with `tls { \"name\" }`, or enforce HTTP on the plain-text port"),
                    );
                }
                let reqs: Vec<_> = reqs.iter().filter_map(|r| self.http(r)).collect();
                L7Spec::Http(reqs)
            }
            ast::L7::Dns(names, span) => {
                self.empty_l7(names.is_empty(), *span, kw);
                if proto_ok && misses_port(cx.ports, 53) {
                    self.report(
                        Diagnostic::warning(
                            Code::L7Port,
                            *span,
                            "DNS rules on a port other than 53",
                        )
                        .label("DNS is served on port 53")
                        .help("did you mean `udp/tcp 53`?"),
                    );
                }
                L7Spec::Dns(
                    names
                        .iter()
                        .filter_map(|n| self.name(n, "DNS name", false))
                        .collect(),
                )
            }
            ast::L7::Tls(names, span) => {
                self.empty_l7(names.is_empty(), *span, kw);
                if proto_ok
                    && !cx.ports.is_empty()
                    && cx.ports.iter().all(|p| *p == PortSpec::Range(80, 80))
                {
                    self.report(
                        Diagnostic::warning(
                            Code::L7Port,
                            *span,
                            "TLS rules on port 80, which carries plain HTTP",
                        )
                        .label("port 80 is not TLS")
                        .help("use `http { ... }` on port 80, or `tls` on 443"),
                    );
                }
                L7Spec::Tls(
                    names
                        .iter()
                        .filter_map(|n| self.name(n, "TLS server name", false))
                        .collect(),
                )
            }
            ast::L7::Kafka(reqs, span) => {
                self.empty_l7(reqs.is_empty(), *span, kw);
                L7Spec::Kafka(reqs.iter().filter_map(|r| self.kafka(r)).collect())
            }
        };
        ok.then_some(spec)
    }

    fn empty_l7(&mut self, empty: bool, span: ast::Span, kw: &str) {
        if empty {
            self.report(
                Diagnostic::warning(Code::EmptyL7, span, format!("empty `{kw}` block allows every request"))
                    .label("nothing listed")
                    .help("list the requests to allow, or remove the block to allow the port without L7 checks"),
            );
        }
    }

    fn http(&mut self, r: &ast::HttpRule) -> Option<HttpReq> {
        let mut ok = true;
        if let Some(m) = &r.method {
            if !HTTP_METHODS.contains(&m.text.as_str()) {
                let upper = m.text.to_ascii_uppercase();
                if HTTP_METHODS.contains(&upper.as_str()) {
                    self.report(
                        Diagnostic::error(
                            Code::HttpMethod,
                            m.span,
                            format!("HTTP methods are case-sensitive: `{}`", m.text),
                        )
                        .label("no client sends this")
                        .help(format!("write `{upper}`")),
                    );
                    ok = false;
                } else {
                    self.report(
                        Diagnostic::warning(Code::HttpMethod, m.span, format!("`{}` is not a standard HTTP method", m.text))
                            .label("unknown method")
                            .help_opt(did_you_mean_help(&upper, HTTP_METHODS.iter().copied()).or(Some(
                                "extension methods (e.g. WebDAV's PROPFIND) are allowed; check the spelling".into(),
                            ))),
                    );
                }
            }
        }
        let path = match &r.path {
            None => None,
            Some(PathPat::Regex(s)) => match regex_syntax::Parser::new().parse(&s.value) {
                Ok(_) => Some(PathMatch::Regex(s.value.clone())),
                Err(e) => {
                    let why = match &e {
                        regex_syntax::Error::Parse(p) => p.kind().to_string(),
                        regex_syntax::Error::Translate(t) => t.kind().to_string(),
                        _ => e.to_string(),
                    };
                    self.report(
                        Diagnostic::error(Code::InvalidRegex, s.span, "invalid regular expression")
                            .label(why)
                            .help("the syntax is Rust's `regex` (RE2-like): no look-around or back-references"),
                    );
                    ok = false;
                    None
                }
            },
            Some(PathPat::Glob(s)) => self.http_path(s).or_else(|| {
                ok = false;
                None
            }),
        };
        let host = match &r.host {
            Some(h) => self.name(h, "host name", true).or_else(|| {
                ok = false;
                None
            }),
            None => None,
        };
        let mut headers = Vec::new();
        for h in &r.headers {
            if !header_name_ok(&h.name.value) {
                self.report(
                    Diagnostic::error(
                        Code::InvalidHeader,
                        h.name.span,
                        format!("`{}` is not a valid header name", h.name.value),
                    )
                    .label(
                        "header names are letters, digits and !#$%&'*+-.^_`|~ (no spaces or `:`)",
                    ),
                );
                ok = false;
            }
            headers.push((
                h.name.value.to_ascii_lowercase(),
                h.value.as_ref().map(|v| v.value.clone()),
            ));
        }
        ok.then(|| HttpReq {
            method: r.method.as_ref().map(|m| m.text.clone()),
            path,
            host,
            headers,
        })
    }

    fn http_path(&mut self, s: &Str) -> Option<PathMatch> {
        let v = &s.value;
        let (body, prefix) = match v.strip_suffix('*') {
            Some(b) => (b, true),
            None => (v.as_str(), false),
        };
        if body.contains('*') {
            self.report(
                Diagnostic::error(
                    Code::HttpPath,
                    s.span,
                    "`*` is only allowed at the end of a path",
                )
                .label("a `*` inside the path")
                .help("a trailing `*` matches a prefix; for anything else use `regex \"...\"`"),
            );
            return None;
        }
        if !(body.starts_with('/') || prefix && body.is_empty()) {
            self.report(
                Diagnostic::warning(Code::HttpPath, s.span, "HTTP paths start with `/`")
                    .label("no request path can match this")
                    .help(format!(
                        "did you mean `\"/{}\"`?",
                        v.trim_start_matches('/')
                    )),
            );
        }
        if v.contains('?') && !prefix {
            self.report(
                Diagnostic::warning(Code::HttpPath, s.span, "the path includes a query string")
                    .label("the query must then match exactly, in this order")
                    .help("match the path alone, or a prefix: `\"/search*\"`"),
            );
        }
        Some(if prefix {
            PathMatch::Prefix(body.to_string())
        } else {
            PathMatch::Exact(body.to_string())
        })
    }

    /// A DNS name, TLS server name or HTTP host (which may carry a
    /// `:port`); a final dot is allowed and dropped.
    fn name(&mut self, s: &Str, what: &str, port_allowed: bool) -> Option<NamePattern> {
        let (name, port) = match s.value.rsplit_once(':') {
            Some((n, p)) if port_allowed && p.parse::<u16>().is_ok() => (n, Some(p)),
            _ => (s.value.as_str(), None),
        };
        match name_pattern_error(name) {
            None => {
                let name = name.strip_suffix('.').unwrap_or(name);
                Some(name_pattern(&match port {
                    Some(p) => format!("{name}:{p}"),
                    None => name.to_string(),
                }))
            }
            Some(why) => {
                self.report(
                    Diagnostic::error(
                        Code::InvalidDnsName,
                        s.span,
                        format!("`{}` is not a valid {what}", s.value),
                    )
                    .label(why)
                    .help_opt(
                        s.value
                            .contains("://")
                            .then(|| "write the name alone, without scheme or path".to_string()),
                    ),
                );
                None
            }
        }
    }

    fn kafka(&mut self, r: &ast::KafkaRule) -> Option<KafkaReq> {
        let api = r.api.text.to_ascii_lowercase();
        let keys: Vec<u16> = if let Some((_, keys)) = KAFKA_ROLES.iter().find(|(n, _)| *n == api) {
            keys.to_vec()
        } else if let Some((_, k)) = KAFKA_APIS.iter().find(|(n, _)| *n == api) {
            vec![*k]
        } else if let Some(k) = api
            .parse::<u16>()
            .ok()
            .filter(|k| KAFKA_APIS.iter().any(|(_, x)| x == k))
        {
            vec![k]
        } else {
            let names = KAFKA_ROLES
                .iter()
                .map(|(n, _)| *n)
                .chain(KAFKA_APIS.iter().map(|(n, _)| *n));
            self.report(
                Diagnostic::error(Code::UnknownKafkaApi, r.api.span, format!("unknown Kafka API `{}`", r.api.text))
                    .label("not a Kafka role or API key")
                    .help_opt(did_you_mean_help(&api, names).or(Some(
                        "use a role (`produce`, `consume`) or an API key name or number (`fetch`, `3`)".into(),
                    ))),
            );
            return None;
        };
        if let Some(t) = &r.topic {
            let ok = !t.value.is_empty()
                && t.value.len() <= 249
                && t.value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
            if !ok {
                self.report(
                    Diagnostic::error(
                        Code::InvalidKafkaTopic,
                        t.span,
                        format!("`{}` is not a valid Kafka topic", t.value),
                    )
                    .label("topics are 1-249 letters, digits, `.`, `_` or `-`"),
                );
                return None;
            }
        }
        Some(KafkaReq {
            api_keys: keys,
            topic: r.topic.as_ref().map(|t| t.value.clone()),
            client_id: r.client.as_ref().map(|c| c.value.clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_patterns() {
        assert!(name_pattern_error("*.example.com").is_none());
        assert!(name_pattern_error("example.com.").is_none());
        assert!(name_pattern_error("example..com").is_some());
        assert!(name_pattern_error("exa mple.com").is_some());
        assert!(name_pattern_error("").is_some());
    }
}
