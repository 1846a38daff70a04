//! Layer 4: protocols, ports per protocol, ICMP type/code, TCP flags.

use cilc_grammar::ast::{self, Proto, ProtoKw, Word};

use super::{FlagsSpec, IcmpSpec, PortSpec, Resolver};
use crate::diag::{did_you_mean_help, Code, Diagnostic};

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const SCTP: u8 = 132;
pub const ICMP: u8 = 1;
pub const ICMPV6: u8 = 58;

const PROTOCOLS: &[(&str, u8)] = &[
    ("icmp", 1),
    ("igmp", 2),
    ("ipip", 4),
    ("tcp", 6),
    ("egp", 8),
    ("udp", 17),
    ("gre", 47),
    ("esp", 50),
    ("ah", 51),
    ("icmpv6", 58),
    ("ospf", 89),
    ("pim", 103),
    ("vrrp", 112),
    ("sctp", 132),
    ("udplite", 136),
];

const ICMP4_TYPES: &[(&str, u8)] = &[
    ("echo-reply", 0),
    ("dest-unreachable", 3),
    ("source-quench", 4),
    ("redirect", 5),
    ("echo-request", 8),
    ("router-advertisement", 9),
    ("router-solicitation", 10),
    ("time-exceeded", 11),
    ("parameter-problem", 12),
    ("timestamp-request", 13),
    ("timestamp-reply", 14),
    ("info-request", 15),
    ("info-reply", 16),
    ("address-mask-request", 17),
    ("address-mask-reply", 18),
];

const ICMP6_TYPES: &[(&str, u8)] = &[
    ("dest-unreachable", 1),
    ("packet-too-big", 2),
    ("time-exceeded", 3),
    ("parameter-problem", 4),
    ("echo-request", 128),
    ("echo-reply", 129),
    ("mld-listener-query", 130),
    ("mld-listener-report", 131),
    ("mld-listener-done", 132),
    ("router-solicitation", 133),
    ("router-advertisement", 134),
    ("neighbor-solicitation", 135),
    ("neighbor-advertisement", 136),
    ("redirect", 137),
];

const TCP_FLAGS: &[(&str, u16)] = &[
    ("fin", 0x01),
    ("syn", 0x02),
    ("rst", 0x04),
    ("psh", 0x08),
    ("ack", 0x10),
    ("urg", 0x20),
    ("ece", 0x40),
    ("cwr", 0x80),
];

/// The usual name of an IANA protocol number, if it has one here.
pub fn protocol_name(n: u8) -> Option<&'static str> {
    PROTOCOLS.iter().find(|(_, p)| *p == n).map(|(s, _)| *s)
}

/// The name of an ICMP (v6 when `v6`) type, if it has one here.
pub fn icmp_type_name(v6: bool, ty: u8) -> Option<&'static str> {
    let table = if v6 { ICMP6_TYPES } else { ICMP4_TYPES };
    table.iter().find(|(_, t)| *t == ty).map(|(s, _)| *s)
}

/// Protocols that carry ports.
pub fn has_ports(p: u8) -> bool {
    matches!(p, TCP | UDP | SCTP)
}

/// The layer-4 part of a rule, resolved.
#[derive(Default)]
pub struct L4Spec {
    pub protos: Vec<u8>,
    pub ports: Vec<PortSpec>,
    pub sports: Vec<PortSpec>,
    pub icmp: Option<IcmpSpec>,
    pub flags: Option<FlagsSpec>,
    /// A protocol could not be resolved (already reported): checks that
    /// depend on the protocol list are skipped.
    pub failed: bool,
}

fn byte(w: &Word, what: &str) -> Result<u8, Diagnostic> {
    w.text.parse::<u8>().map_err(|_| {
        Diagnostic::error(
            Code::IcmpOutOfRange,
            w.span,
            format!("ICMP {what} {} is out of range", w.text),
        )
        .label(format!("an ICMP {what} is 0-255"))
    })
}

impl Resolver<'_> {
    fn protocol(&mut self, p: &Proto) -> Option<Option<u8>> {
        match p {
            Proto::Kw(kw, _) => Some(match kw {
                ProtoKw::Tcp => Some(TCP),
                ProtoKw::Udp => Some(UDP),
                ProtoKw::Sctp => Some(SCTP),
                ProtoKw::Icmp => Some(ICMP),
                ProtoKw::Icmpv6 => Some(ICMPV6),
                ProtoKw::Any => None,
            }),
            Proto::Other(w) => {
                if let Ok(n) = w.text.parse::<u64>() {
                    if n <= 255 {
                        return Some(Some(n as u8));
                    }
                    self.report(
                        Diagnostic::error(
                            Code::UnknownProtocol,
                            w.span,
                            format!("protocol number {n} is out of range"),
                        )
                        .label("IP protocol numbers are 0-255"),
                    );
                    return None;
                }
                if let Some((_, n)) = PROTOCOLS.iter().find(|(s, _)| *s == w.text) {
                    return Some(Some(*n));
                }
                let help = did_you_mean_help(&w.text, PROTOCOLS.iter().map(|(s, _)| *s))
                    .unwrap_or_else(|| "use the protocol's IANA number, e.g. `proto 47`".into());
                self.report(
                    Diagnostic::error(
                        Code::UnknownProtocol,
                        w.span,
                        format!("unknown protocol `{}`", w.text),
                    )
                    .label("not a protocol name cilc knows")
                    .help(help),
                );
                None
            }
        }
    }

    /// Resolve `tcp/udp 80 sport 1024-65535 type 8 flags syn`.
    pub(super) fn l4(&mut self, l4: &ast::L4, in_chain: bool) -> L4Spec {
        let mut spec = L4Spec::default();
        let mut any = false;
        for p in &l4.protos {
            match self.protocol(p) {
                Some(Some(n)) if spec.protos.contains(&n) => self.report(
                    Diagnostic::warning(Code::DuplicateProtocol, p.span(), "protocol listed twice")
                        .label("already in this rule"),
                ),
                Some(Some(n)) => spec.protos.push(n),
                Some(None) => any = true,
                None => spec.failed = true,
            }
        }
        if any && l4.protos.len() > 1 {
            let span = l4
                .protos
                .iter()
                .find(|p| matches!(p, Proto::Kw(ProtoKw::Any, _)))
                .map(Proto::span);
            if let Some(span) = span {
                self.report(
                    Diagnostic::warning(
                        Code::DuplicateProtocol,
                        span,
                        "`any` already matches every protocol",
                    )
                    .label("makes the other protocols redundant")
                    .help("keep either `any` or the list of protocols"),
                );
            }
            spec.protos.clear();
        }
        spec.protos.sort();
        let portless: Vec<u8> = spec
            .protos
            .iter()
            .copied()
            .filter(|p| !has_ports(*p))
            .collect();
        for (list, is_src) in [(&l4.ports, false), (&l4.sports, true)] {
            if list.is_empty() {
                continue;
            }
            let span = list
                .iter()
                .map(|p| p.span())
                .reduce(|a, b| a.to(b))
                .unwrap_or(l4.span);
            if is_src && !in_chain {
                self.report(
                    Diagnostic::error(
                        Code::SportOutsideChain,
                        span,
                        "source ports are only matched in chains",
                    )
                    .label("`sport` in a policy rule")
                    .help("policies match destination ports; use a `chain` to match source ports"),
                );
            }
            if any || !portless.is_empty() {
                let name = if any {
                    "any".to_string()
                } else {
                    protocol_name(portless[0])
                        .map(str::to_string)
                        .unwrap_or(format!("proto {}", portless[0]))
                };
                self.report(
                    Diagnostic::error(
                        Code::PortsNotAllowed,
                        span,
                        format!("`{name}` has no ports"),
                    )
                    .label("ports need TCP, UDP or SCTP")
                    .help(if any {
                        "name the protocols, e.g. `tcp/udp 53`"
                    } else {
                        "remove the ports, or use tcp, udp or sctp"
                    }),
                );
            }
            let (ports, _) = self.port_items(list);
            if is_src {
                if let Some(named) = list.iter().find(|p| matches!(p, ast::PortItem::Named(_))) {
                    self.report(
                        Diagnostic::error(
                            Code::InvalidPortName,
                            named.span(),
                            "a named port cannot match a source port",
                        )
                        .label("named ports are the ports an endpoint listens on")
                        .help("give source ports as numbers or ranges"),
                    );
                }
                spec.sports = ports;
            } else {
                spec.ports = ports;
            }
        }
        if let Some(icmp) = &l4.icmp {
            spec.icmp = self.icmp(icmp, &spec.protos, any);
        }
        if let Some(flags) = &l4.flags {
            if spec.protos != [TCP] {
                self.report(
                    Diagnostic::error(
                        Code::FlagsNotAllowed,
                        flags.span,
                        "TCP flags on a rule that is not TCP only",
                    )
                    .label("only TCP has flags")
                    .help("write the rule for `tcp` alone"),
                );
            }
            spec.flags = self.flags(flags);
        }
        spec
    }

    fn icmp(&mut self, m: &ast::IcmpMatch, protos: &[u8], any: bool) -> Option<IcmpSpec> {
        let v6 = match protos {
            [ICMP] if !any => false,
            [ICMPV6] if !any => true,
            _ => {
                self.report(
                    Diagnostic::error(
                        Code::IcmpNotAllowed,
                        m.span,
                        "an ICMP type needs `icmp` or `icmpv6` alone",
                    )
                    .label("type on a rule that is not ICMP only")
                    .help(
                        "ICMP and ICMPv6 number their types differently: write one rule for each",
                    ),
                );
                return None;
            }
        };
        let table = if v6 { ICMP6_TYPES } else { ICMP4_TYPES };
        let ty = if m.ty.text.bytes().all(|b| b.is_ascii_digit()) {
            byte(&m.ty, "type").map_err(|d| self.report(d)).ok()
        } else if let Some((_, t)) = table.iter().find(|(s, _)| *s == m.ty.text) {
            Some(*t)
        } else {
            let proto = if v6 { "icmpv6" } else { "icmp" };
            let other = if v6 { ICMP4_TYPES } else { ICMP6_TYPES };
            let help = if other.iter().any(|(s, _)| *s == m.ty.text) {
                Some(format!(
                    "`{}` is a type of {}, not {proto}",
                    m.ty.text,
                    if v6 { "icmp" } else { "icmpv6" }
                ))
            } else {
                did_you_mean_help(&m.ty.text, table.iter().map(|(s, _)| *s))
            };
            self.report(
                Diagnostic::error(
                    Code::UnknownIcmpType,
                    m.ty.span,
                    format!("unknown {proto} type `{}`", m.ty.text),
                )
                .label("not a type name cilc knows")
                .help_opt(help.or(Some("give the type as a number, e.g. `type 8`".into()))),
            );
            None
        };
        let code = match &m.code {
            Some(c) => Some(byte(c, "code").map_err(|d| self.report(d)).ok()?),
            None => None,
        };
        Some(IcmpSpec { ty: ty?, code })
    }

    fn flags(&mut self, f: &ast::TcpFlags) -> Option<FlagsSpec> {
        let value = self.flag_value(&f.value)?;
        let mask = match &f.mask {
            Some(m) => self.flag_value(m)?,
            None => value,
        };
        if value & !mask != 0 {
            self.report(
                Diagnostic::error(Code::InvalidFlags, f.span, format!("flags {value:#x} are not inside mask {mask:#x}"))
                    .label("bits outside the mask are never compared, so this rule cannot mean what it says")
                    .help(format!("add them to the mask: `/{:#x}`", mask | value)),
            );
            return None;
        }
        Some(FlagsSpec { value, mask })
    }

    fn flag_value(&mut self, words: &[Word]) -> Option<u16> {
        let mut v: u16 = 0;
        for w in words {
            let t = w.text.as_str();
            let n = if let Some(hex) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
                u16::from_str_radix(hex, 16).ok()
            } else if t.bytes().all(|b| b.is_ascii_digit()) {
                t.parse::<u16>().ok()
            } else if let Some((_, bit)) =
                TCP_FLAGS.iter().find(|(s, _)| *s == t.to_ascii_lowercase())
            {
                Some(*bit)
            } else {
                self.report(
                    Diagnostic::error(Code::InvalidFlags, w.span, format!("unknown TCP flag `{t}`"))
                        .label("not a TCP flag")
                        .help_opt(did_you_mean_help(&t.to_ascii_lowercase(), TCP_FLAGS.iter().map(|(s, _)| *s)).or(Some(
                            "flags are fin, syn, rst, psh, ack, urg, ece, cwr, or a number up to 0xffff".into(),
                        ))),
                );
                return None;
            };
            match n {
                Some(n) => v |= n,
                None => {
                    self.report(
                        Diagnostic::error(
                            Code::InvalidFlags,
                            w.span,
                            format!("flags value `{t}` is out of range"),
                        )
                        .label("flags are 16 bits: 0 to 0xffff"),
                    );
                    return None;
                }
            }
        }
        Some(v)
    }
}
