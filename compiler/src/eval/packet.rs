//! A one-line text form of packets, used by text-driven tests, traces and
//! `cilc explain --packet`:
//!
//! ```text
//! ingress local app=web@shop+http=8080 peer world 198.51.100.7 -> 10.0.0.5 tcp 40000 8080 http GET /api/v1/x host shop.example.com
//! egress local app=api@shop peer app=db@shop[env=prod] 10.0.0.5 -> 10.0.0.9 tcp 40000 5432 flags syn
//! ingress 192.0.2.1 -> 10.0.0.1 icmp 8 0
//! ingress 192.0.2.1 -> 10.0.0.1 proto 47 frag later
//! ```
//!
//! `local` and `peer` default to `host` and `world`. An identity is `world`,
//! `host`, or an endpoint: `LABELS@NAMESPACE[NAMESPACE-LABELS]+PORT-NAMES`,
//! every part optional (`app=web`, `@kube-system`, `tier=db@shop+pg=5432`).
//! After the protocol: ports (`tcp`/`udp`/`sctp SPORT DPORT`, and for
//! `proto N` optionally), ICMP type and code (`icmp`/`icmpv6 TYPE CODE`),
//! then options: `flags syn|ack` or `flags 0x12`, `frag first|later`,
//! `malformed`, and one L7 request: `http METHOD PATH [host H] [header K=V]...`,
//! `dns NAME`, `tls NAME`, `kafka API-KEY [topic T] [client C]`.

use std::fmt::{self, Display, Formatter};
use std::net::IpAddr;

use super::{Fragment, Identity, L7Request, Packet};
use crate::resolve::Direction;

pub use runtime_loader::identity::parse_identity;

const FLAGS: &[(&str, u16)] = &[
    ("fin", 0x01),
    ("syn", 0x02),
    ("rst", 0x04),
    ("psh", 0x08),
    ("ack", 0x10),
    ("urg", 0x20),
    ("ece", 0x40),
    ("cwr", 0x80),
];

pub fn parse_flags(text: &str) -> Result<u16, String> {
    if let Some(hex) = text.strip_prefix("0x") {
        return u16::from_str_radix(hex, 16).map_err(|_| format!("bad flags `{text}`"));
    }
    text.split(['|', ',']).try_fold(0u16, |acc, name| {
        FLAGS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, b)| acc | b)
            .ok_or_else(|| format!("unknown TCP flag `{name}`"))
    })
}

fn num<T: std::str::FromStr>(tok: Option<&str>, what: &str) -> Result<T, String> {
    let t = tok.ok_or_else(|| format!("missing {what}"))?;
    t.parse().map_err(|_| format!("bad {what} `{t}`"))
}

/// Parse one packet line.
pub fn parse_packet(line: &str) -> Result<Packet, String> {
    let mut toks = line.split_whitespace().peekable();
    let direction = match toks.next() {
        Some("ingress") => Direction::Ingress,
        Some("egress") => Direction::Egress,
        other => return Err(format!("expected `ingress` or `egress`, got {other:?}")),
    };
    let mut local = Identity::Host;
    let mut peer = Identity::World;
    while let Some(kw @ ("local" | "peer")) = toks.peek().copied() {
        toks.next();
        let id = parse_identity(toks.next().ok_or("missing identity")?)?;
        if kw == "local" {
            local = id;
        } else {
            peer = id;
        }
    }
    let src: IpAddr = num(toks.next(), "source address")?;
    if toks.next() != Some("->") {
        return Err("expected `->` between the addresses".into());
    }
    let dst: IpAddr = num(toks.next(), "destination address")?;
    let mut pkt = Packet {
        direction,
        local,
        peer,
        src,
        dst,
        proto: 0,
        sport: 0,
        dport: 0,
        icmp_type: 0,
        icmp_code: 0,
        tcp_flags: 0,
        fragment: Fragment::None,
        malformed: false,
        l7: None,
    };
    match toks.next() {
        Some(p @ ("tcp" | "udp" | "sctp")) => {
            pkt.proto = match p {
                "tcp" => 6,
                "udp" => 17,
                _ => 132,
            };
            pkt.sport = num(toks.next(), "source port")?;
            pkt.dport = num(toks.next(), "destination port")?;
        }
        Some(p @ ("icmp" | "icmpv6")) => {
            pkt.proto = if p == "icmp" { 1 } else { 58 };
            pkt.icmp_type = num(toks.next(), "ICMP type")?;
            pkt.icmp_code = num(toks.next(), "ICMP code")?;
        }
        Some("proto") => {
            pkt.proto = num(toks.next(), "protocol number")?;
            if toks.peek().is_some_and(|t| t.parse::<u16>().is_ok()) {
                pkt.sport = num(toks.next(), "source port")?;
                pkt.dport = num(toks.next(), "destination port")?;
            }
        }
        other => {
            return Err(format!(
                "expected a protocol (tcp, udp, sctp, icmp, icmpv6, proto N), got {other:?}"
            ))
        }
    }
    while let Some(tok) = toks.next() {
        match tok {
            "flags" => pkt.tcp_flags = parse_flags(toks.next().ok_or("missing flags")?)?,
            "frag" => {
                pkt.fragment = match toks.next() {
                    Some("first") => Fragment::First,
                    Some("later") => Fragment::Later,
                    other => {
                        return Err(format!(
                            "expected `first` or `later` after `frag`, got {other:?}"
                        ))
                    }
                }
            }
            "malformed" => pkt.malformed = true,
            "http" => {
                let method = toks.next().ok_or("missing HTTP method")?.to_string();
                let path = toks.next().ok_or("missing HTTP path")?.to_string();
                let (mut host, mut headers) = (None, Vec::new());
                while let Some(kw @ ("host" | "header")) = toks.peek().copied() {
                    toks.next();
                    let v = toks.next().ok_or("missing value")?;
                    if kw == "host" {
                        host = Some(v.to_string());
                    } else {
                        let (k, v) = v.split_once('=').unwrap_or((v, ""));
                        headers.push((k.to_string(), v.to_string()));
                    }
                }
                pkt.l7 = Some(L7Request::Http {
                    method,
                    path,
                    host,
                    headers,
                });
            }
            "dns" => {
                pkt.l7 = Some(L7Request::Dns {
                    name: toks.next().ok_or("missing DNS name")?.to_string(),
                })
            }
            "tls" => {
                pkt.l7 = Some(L7Request::Tls {
                    server_name: toks.next().ok_or("missing server name")?.to_string(),
                })
            }
            "kafka" => {
                let api_key = num(toks.next(), "Kafka API key")?;
                let (mut topic, mut client_id) = (None, None);
                while let Some(kw @ ("topic" | "client")) = toks.peek().copied() {
                    toks.next();
                    let v = Some(toks.next().ok_or("missing value")?.to_string());
                    if kw == "topic" {
                        topic = v;
                    } else {
                        client_id = v;
                    }
                }
                pkt.l7 = Some(L7Request::Kafka {
                    api_key,
                    topic,
                    client_id,
                });
            }
            other => return Err(format!("unexpected `{other}`")),
        }
    }
    Ok(pkt)
}

impl Display for Packet {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} local {} peer {} {} -> {} ",
            self.direction.keyword(),
            self.local,
            self.peer,
            self.src,
            self.dst
        )?;
        match self.proto {
            6 => write!(f, "tcp {} {}", self.sport, self.dport)?,
            17 => write!(f, "udp {} {}", self.sport, self.dport)?,
            132 => write!(f, "sctp {} {}", self.sport, self.dport)?,
            1 => write!(f, "icmp {} {}", self.icmp_type, self.icmp_code)?,
            58 => write!(f, "icmpv6 {} {}", self.icmp_type, self.icmp_code)?,
            p => write!(f, "proto {p} {} {}", self.sport, self.dport)?,
        }
        if self.tcp_flags != 0 {
            write!(f, " flags {:#x}", self.tcp_flags)?;
        }
        match self.fragment {
            Fragment::None => {}
            Fragment::First => f.write_str(" frag first")?,
            Fragment::Later => f.write_str(" frag later")?,
        }
        if self.malformed {
            f.write_str(" malformed")?;
        }
        match &self.l7 {
            None => Ok(()),
            Some(L7Request::Http {
                method,
                path,
                host,
                headers,
            }) => {
                write!(f, " http {method} {path}")?;
                if let Some(h) = host {
                    write!(f, " host {h}")?;
                }
                for (k, v) in headers {
                    write!(f, " header {k}={v}")?;
                }
                Ok(())
            }
            Some(L7Request::Dns { name }) => write!(f, " dns {name}"),
            Some(L7Request::Tls { server_name }) => write!(f, " tls {server_name}"),
            Some(L7Request::Kafka {
                api_key,
                topic,
                client_id,
            }) => {
                write!(f, " kafka {api_key}")?;
                if let Some(t) = topic {
                    write!(f, " topic {t}")?;
                }
                if let Some(c) = client_id {
                    write!(f, " client {c}")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_lines_round_trip() {
        for line in [
            "ingress local app=web@shop+http=8080 peer world 198.51.100.7 -> 10.0.0.5 tcp 40000 8080 http GET /api/v1/x host shop.example.com header x-token=abc",
            "egress local app=api@shop peer app=db,tier=data@shop[env=prod] 10.0.0.5 -> 10.0.0.9 tcp 40000 5432 flags 0x2",
            "ingress local host peer world 192.0.2.1 -> 10.0.0.1 icmp 8 0",
            "ingress local host peer world 2001:db8::1 -> 2001:db8::2 proto 47 0 0 frag later",
            "egress local @kube-system peer world 10.0.0.1 -> 192.0.2.53 udp 5353 53 dns api.example.com",
        ] {
            let p = parse_packet(line).unwrap();
            assert_eq!(parse_packet(&p.to_string()).unwrap(), p, "{line}");
        }
    }

    #[test]
    fn bad_lines_are_errors() {
        assert!(parse_packet("inbound 1.2.3.4 -> 5.6.7.8 tcp 1 2").is_err());
        assert!(parse_packet("ingress 1.2.3.4 5.6.7.8 tcp 1 2").is_err());
        assert!(parse_packet("ingress 1.2.3.4 -> 5.6.7.8 tcp 1").is_err());
        assert!(parse_packet("ingress 1.2.3.4 -> 5.6.7.8 tcp 1 2 flags sny").is_err());
    }
}
