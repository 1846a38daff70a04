//! ClassBench filter sets and traces.
//!
//! - `parse_filters`: a filter file (`@src/len dst/len sp_lo : sp_hi dp_lo :
//!   dp_hi proto/mask flags/mask`, one rule per line, first line highest
//!   priority) → `Filter`s.
//! - `to_cpl`: the filters as one first-match chain, `accept ... as rN` for
//!   line N, so that the deciding rule of a packet names its line.
//! - `parse_trace`: a trace file (`src dst sport dport proto [x] rule`, decimal)
//!   → packets, with the last column kept as `last` (exact 1-based first
//!   match for the wustl traces, only an upper bound for the lyxocs ones).
//!
//! Flags: ClassBench's 16-bit flag field is synthetic and its traces carry
//! no flags, so the import ignores it (the published first-match truth
//! ignores it too); `to_cpl` counts the rules whose flags were not a
//! wildcard in the header comment.

use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::Ipv4Net;

use crate::eval::{Fragment, Identity, Packet};
use crate::resolve::Direction;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// 1-based line number.
    pub line: usize,
    pub src: Ipv4Net,
    pub dst: Ipv4Net,
    pub sport: (u16, u16),
    pub dport: (u16, u16),
    /// `None` for a wildcard protocol (mask 0).
    pub proto: Option<u8>,
    pub flags: (u16, u16),
}

fn prefix(t: &str) -> Result<Ipv4Net, String> {
    let net: Ipv4Net = t.parse().map_err(|_| format!("bad prefix `{t}`"))?;
    Ok(net.trunc())
}

fn hex_pair(t: &str) -> Result<(u32, u32), String> {
    let (v, m) = t
        .split_once('/')
        .ok_or_else(|| format!("expected VALUE/MASK, got `{t}`"))?;
    let h = |x: &str| u32::from_str_radix(x.trim_start_matches("0x").trim_start_matches("0X"), 16);
    Ok((
        h(v).map_err(|_| format!("bad hex `{v}`"))?,
        h(m).map_err(|_| format!("bad hex `{m}`"))?,
    ))
}

pub fn parse_filters(text: &str) -> Result<Vec<Filter>, String> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let l = raw.trim();
        if l.is_empty() {
            continue;
        }
        let err = |e: String| format!("line {line}: {e}");
        let l = l
            .strip_prefix('@')
            .ok_or_else(|| err("a filter starts with `@`".into()))?;
        let t: Vec<&str> = l.split_whitespace().collect();
        // src dst sp_lo : sp_hi dp_lo : dp_hi proto/mask [flags/mask]
        if t.len() < 9 || t[3] != ":" || t[6] != ":" {
            return Err(err(format!(
                "expected `src dst lo : hi lo : hi proto/mask [flags/mask]`, got `{raw}`"
            )));
        }
        let port = |s: &str| s.parse::<u16>().map_err(|_| err(format!("bad port `{s}`")));
        let (p, pm) = hex_pair(t[8]).map_err(err)?;
        let proto = match pm {
            0 => None,
            0xff if p <= 255 => Some(p as u8),
            _ => return Err(err(format!("protocol mask {pm:#x} is neither 0 nor 0xff"))),
        };
        let flags = match t.get(9) {
            Some(f) => {
                let (v, m) = hex_pair(f).map_err(err)?;
                (v as u16, m as u16)
            }
            None => (0, 0),
        };
        let f = Filter {
            line,
            src: prefix(t[0]).map_err(err)?,
            dst: prefix(t[1]).map_err(err)?,
            sport: (port(t[2])?, port(t[4])?),
            dport: (port(t[5])?, port(t[7])?),
            proto,
            flags,
        };
        if f.sport.0 > f.sport.1 || f.dport.0 > f.dport.1 {
            return Err(err("inverted port range".into()));
        }
        out.push(f);
    }
    Ok(out)
}

fn ports((lo, hi): (u16, u16)) -> Option<String> {
    match (lo, hi) {
        (0, 65535) => None,
        (a, b) if a == b => Some(a.to_string()),
        (a, b) => Some(format!("{a}-{b}")),
    }
}

/// The filters as a `.cpl` chain named `name` on host ingress.
pub fn to_cpl(filters: &[Filter], name: &str, source: &str) -> Result<String, String> {
    let flagged = filters.iter().filter(|f| f.flags.1 != 0).count();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Imported from the ClassBench filter set `{source}`: {} rules.",
        filters.len()
    );
    let _ = writeln!(
        out,
        "# Line order is priority: the first matching rule decides; rule `rN` is line N."
    );
    let _ = writeln!(
        out,
        "# The flags column is not imported ({flagged} rules had non-wildcard flags)."
    );
    let _ = writeln!(out, "\nchain {name} on host ingress {{");
    for f in filters {
        let mut r = String::from("  accept");
        if f.src.prefix_len() > 0 {
            let _ = write!(r, " from {}", f.src);
        }
        if f.dst.prefix_len() > 0 {
            let _ = write!(r, " to {}", f.dst);
        }
        let (sp, dp) = (ports(f.sport), ports(f.dport));
        match f.proto {
            None if sp.is_none() && dp.is_none() => {}
            Some(p @ (6 | 17 | 132)) => {
                let _ = write!(r, " {}", crate::resolve::protocol_name(p).unwrap_or("tcp"));
                if let Some(dp) = dp {
                    let _ = write!(r, " {dp}");
                }
                if let Some(sp) = sp {
                    let _ = write!(r, " sport {sp}");
                }
            }
            Some(p) if sp.is_none() && dp.is_none() => {
                let _ = match p {
                    1 => write!(r, " icmp"),
                    58 => write!(r, " icmpv6"),
                    p => write!(r, " proto {p}"),
                };
            }
            _ => {
                return Err(format!(
                    "line {}: port ranges on a protocol without ports ({:?}) cannot be expressed",
                    f.line, f.proto
                ))
            }
        }
        let _ = writeln!(r, " as r{}", f.line);
        out.push_str(&r);
    }
    out.push_str("}\n");
    Ok(out)
}

/// One trace line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceLine {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    /// The last column: the 1-based matching rule (wustl) or an upper bound
    /// of it (lyxocs).
    pub last: usize,
}

pub fn parse_trace(text: &str) -> Result<Vec<TraceLine>, String> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let t: Vec<&str> = raw.split_whitespace().collect();
        if t.is_empty() {
            continue;
        }
        let err = |what: &str| format!("trace line {}: bad {what} in `{raw}`", i + 1);
        if t.len() < 6 {
            return Err(err("number of columns"));
        }
        out.push(TraceLine {
            src: Ipv4Addr::from(t[0].parse::<u32>().map_err(|_| err("source"))?),
            dst: Ipv4Addr::from(t[1].parse::<u32>().map_err(|_| err("destination"))?),
            sport: t[2].parse().map_err(|_| err("source port"))?,
            dport: t[3].parse().map_err(|_| err("destination port"))?,
            proto: t[4].parse().map_err(|_| err("protocol"))?,
            last: t[t.len() - 1].parse().map_err(|_| err("rule column"))?,
        });
    }
    Ok(out)
}

/// A trace line as a packet arriving at the host from the world. Its port
/// fields are kept whatever the protocol, as ClassBench's 5-tuple has them.
pub fn packet(t: &TraceLine) -> Packet {
    Packet {
        direction: Direction::Ingress,
        local: Identity::Host,
        peer: Identity::World,
        src: IpAddr::V4(t.src),
        dst: IpAddr::V4(t.dst),
        proto: t.proto,
        sport: t.sport,
        dport: t.dport,
        icmp_type: 0,
        icmp_code: 0,
        tcp_flags: 0,
        fragment: Fragment::None,
        malformed: false,
        l7: None,
    }
}

/// A 0-based first-match truth file (one index per line).
pub fn parse_truth(text: &str) -> Result<Vec<usize>, String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            l.trim()
                .parse()
                .map_err(|_| format!("truth line {}: bad index `{l}`", i + 1))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_become_a_first_match_chain() {
        let text =
            "@91.89.244.16/29\t245.66.202.32/28\t88 : 88\t69 : 69\t0x11/0xFF\t0x0000/0x0000\t\n\
                    @0.0.0.0/0\t10.0.0.0/8\t0 : 65535\t1024 : 2047\t0x06/0xFF\t0x1000/0x1000\n\
                    @1.2.3.4/32\t0.0.0.0/0\t0 : 65535\t0 : 65535\t0x2f/0xFF\n\
                    @0.0.0.0/0\t0.0.0.0/0\t0 : 65535\t0 : 65535\t0x00/0x00\t0x0000/0x0000\n";
        let f = parse_filters(text).unwrap();
        assert_eq!(f.len(), 4);
        let cpl = to_cpl(&f, "cb", "test").unwrap();
        assert!(
            cpl.contains("accept from 91.89.244.16/29 to 245.66.202.32/28 udp 69 sport 88 as r1\n"),
            "{cpl}"
        );
        assert!(
            cpl.contains("accept to 10.0.0.0/8 tcp 1024-2047 as r2\n"),
            "{cpl}"
        );
        assert!(
            cpl.contains("accept from 1.2.3.4/32 proto 47 as r3\n"),
            "{cpl}"
        );
        assert!(cpl.contains("accept as r4\n"), "{cpl}");
        assert!(cpl.contains("(1 rules had non-wildcard flags)"), "{cpl}");
    }

    #[test]
    fn bad_filters_name_their_line() {
        let e = parse_filters("@1.2.3.4/32 5.6.7.8/32 0 : 1 2 : 3 0x06/0x0F\n").unwrap_err();
        assert!(e.starts_with("line 1:"), "{e}");
        assert!(parse_filters("1.2.3.4/32 5.6.7.8/32 0 : 1 2 : 3 0x06/0xFF").is_err());
        assert!(parse_filters("@1.2.3.4/32 5.6.7.8/32 9 : 1 2 : 3 0x06/0xFF").is_err());
    }
}

/// What a trace run found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceReport {
    pub packets: usize,
    /// Packets whose deciding rule is the expected one (exact truth) or at
    /// most the bound (upper-bound truth).
    pub agree: usize,
    /// (0-based trace line, expected 1-based rule, decided 1-based rule).
    pub disagree: Vec<(usize, usize, Option<usize>)>,
    pub exact: bool,
}

/// The 1-based filter line of an imported rule, from its `rN` name.
pub fn filter_line(rule_name: &str) -> Option<usize> {
    rule_name
        .rsplit_once("/r")
        .and_then(|(_, n)| n.parse().ok())
}

/// The 1-based filter line that decided.
pub fn decided_line(ir: &crate::ir::Validated, pkt: &Packet) -> Option<usize> {
    let d = crate::eval::evaluate(ir, pkt);
    filter_line(&ir.rules[d.rule? as usize].name)
}

/// Run `trace` through the evaluator. With `truth` (0-based indices per
/// line), the decided rule must equal it; without, the trace's last column
/// is taken as exact when `last_is_exact`, else as an upper bound.
pub fn run_trace(
    ir: &crate::ir::Validated,
    trace: &[TraceLine],
    truth: Option<&[usize]>,
    last_is_exact: bool,
) -> Result<TraceReport, String> {
    if let Some(t) = truth {
        if t.len() != trace.len() {
            return Err(format!(
                "the truth file has {} lines, the trace {}",
                t.len(),
                trace.len()
            ));
        }
    }
    let exact = truth.is_some() || last_is_exact;
    let mut r = TraceReport {
        packets: trace.len(),
        exact,
        ..TraceReport::default()
    };
    for (i, t) in trace.iter().enumerate() {
        let got = decided_line(ir, &packet(t));
        let want = truth.map(|t| t[i] + 1).unwrap_or(t.last);
        let ok = if exact {
            got == Some(want)
        } else {
            got.is_some_and(|g| g <= want)
        };
        if ok {
            r.agree += 1;
        } else {
            r.disagree.push((i, want, got));
        }
    }
    Ok(r)
}
