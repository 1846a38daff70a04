//! Counters: packets and bytes by direction and reason, by deciding rule,
//! and the conntrack tables' fill and events.
//!
//! Input: the counter maps (of a loaded object or a pinned installation)
//! and the artifact's manifest; output: `Stats`, printed as a table, JSON
//! or the Prometheus text exposition format.

use std::fmt::Write as _;

use libbpf_rs::{MapCore, MapFlags, MapHandle};
use serde::Serialize;

use crate::conntrack::{self, Tables};
use crate::manifest::{Manifest, Reason};
use crate::Error;

/// `CILC_REASON_SLOTS`: reason counters per direction.
pub const REASON_SLOTS: u32 = 16;

pub struct Maps {
    pub reasons: MapHandle,
    pub rules: MapHandle,
    pub events: MapHandle,
    pub ct: Tables,
    pub nat: crate::nat::Tables,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Count {
    pub packets: u64,
    pub bytes: u64,
}

/// A per-CPU counter (one u64, or packets and bytes), summed over CPUs.
fn sum(map: &MapHandle, key: u32) -> Result<Count, Error> {
    let per_cpu = map
        .lookup_percpu(&key.to_ne_bytes(), MapFlags::ANY)
        .map_err(|e| Error::Kernel(format!("cannot read counters: {e}")))?
        .unwrap_or_default();
    let mut c = Count::default();
    for v in per_cpu {
        let word = |i: usize| {
            v.get(i * 8..i * 8 + 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_ne_bytes)
                .unwrap_or(0)
        };
        c.packets += word(0);
        c.bytes += word(1);
    }
    Ok(c)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReasonCount {
    pub direction: &'static str,
    pub reason: &'static str,
    pub forwarded: bool,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleCount {
    pub id: u32,
    pub name: String,
    pub line: usize,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CtCount {
    pub ipv4_entries: usize,
    pub ipv4_max: u32,
    pub ipv6_entries: usize,
    pub ipv6_max: u32,
    /// Source NAT mappings (forward entries) and the table's size.
    pub nat_entries: usize,
    pub nat_max: u32,
    /// `conntrack::EVENTS`, in order.
    pub events: Vec<(&'static str, u64)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Every direction × reason, zeros included.
    pub reasons: Vec<ReasonCount>,
    pub rules: Vec<RuleCount>,
    pub conntrack: CtCount,
}

impl Stats {
    pub fn gather(maps: &Maps, manifest: &Manifest) -> Result<Stats, Error> {
        let mut reasons = Vec::new();
        for (d, direction) in ["ingress", "egress"].into_iter().enumerate() {
            for r in Reason::ALL {
                let c = sum(&maps.reasons, d as u32 * REASON_SLOTS + r.code())?;
                reasons.push(ReasonCount {
                    direction,
                    reason: r.as_str(),
                    forwarded: r.passes(),
                    packets: c.packets,
                    bytes: c.bytes,
                });
            }
        }
        let mut rules = Vec::new();
        for r in &manifest.rules {
            let c = sum(&maps.rules, r.id)?;
            rules.push(RuleCount {
                id: r.id,
                name: r.name.clone(),
                line: r.line,
                packets: c.packets,
                bytes: c.bytes,
            });
        }
        let mut events = Vec::new();
        for (i, name) in conntrack::EVENTS.into_iter().enumerate() {
            events.push((name, sum(&maps.events, i as u32)?.packets));
        }
        let (n4, n6) = maps.ct.len();
        Ok(Stats {
            reasons,
            rules,
            conntrack: CtCount {
                ipv4_entries: n4,
                ipv4_max: maps.ct.v4.max_entries(),
                ipv6_entries: n6,
                ipv6_max: maps.ct.v6.max_entries(),
                nat_entries: maps.nat.len().0,
                nat_max: maps.nat.forward.max_entries(),
                events,
            },
        })
    }

    /// Packets counted for a direction and reason (`Reason::as_str`).
    pub fn reason(&self, direction: &str, reason: Reason) -> u64 {
        self.reasons
            .iter()
            .filter(|r| r.direction == direction && r.reason == reason.as_str())
            .map(|r| r.packets)
            .sum()
    }

    /// A conntrack event's count (`conntrack::EVENTS`).
    pub fn event(&self, name: &str) -> u64 {
        self.conntrack
            .events
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, c)| *c)
            .sum()
    }

    /// For people: non-zero reasons, every rule, conntrack.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<8} {:<18} {:>7} {:>12} {:>14}",
            "DIR", "REASON", "VERDICT", "PACKETS", "BYTES"
        );
        for r in self.reasons.iter().filter(|r| r.packets > 0) {
            let verdict = if r.forwarded { "pass" } else { "drop" };
            let _ = writeln!(
                s,
                "{:<8} {:<18} {:>7} {:>12} {:>14}",
                r.direction, r.reason, verdict, r.packets, r.bytes
            );
        }
        let _ = writeln!(s);
        let width = self
            .rules
            .iter()
            .map(|r| r.name.len())
            .max()
            .unwrap_or(4)
            .max(4);
        let _ = writeln!(
            s,
            "{:<width$} {:>6} {:>12} {:>14}",
            "RULE", "LINE", "PACKETS", "BYTES"
        );
        for r in &self.rules {
            let _ = writeln!(
                s,
                "{:<width$} {:>6} {:>12} {:>14}",
                r.name, r.line, r.packets, r.bytes
            );
        }
        let c = &self.conntrack;
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "conntrack: ipv4 {}/{} entries, ipv6 {}/{} entries; nat {}/{} mappings",
            c.ipv4_entries, c.ipv4_max, c.ipv6_entries, c.ipv6_max, c.nat_entries, c.nat_max
        );
        let events: Vec<String> = c.events.iter().map(|(n, v)| format!("{n} {v}")).collect();
        let _ = writeln!(s, "conntrack events: {}", events.join(", "));
        s
    }

    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The Prometheus text exposition format (version 0.0.4).
    pub fn prometheus(&self, installation: &str) -> String {
        let mut s = String::new();
        let inst = escape(installation);
        // One metric: its header, then one line per (labels, value).
        let mut metric = |name: &str, kind: &str, help: &str, lines: Vec<(String, u64)>| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in lines {
                let _ = writeln!(s, "{name}{{installation=\"{inst}\",{labels}}} {v}");
            }
        };
        let reasons = |value: fn(&ReasonCount) -> u64| {
            self.reasons
                .iter()
                .map(|r| {
                    let verdict = if r.forwarded { "forwarded" } else { "dropped" };
                    let labels = format!(
                        "direction=\"{}\",reason=\"{}\",verdict=\"{verdict}\"",
                        r.direction, r.reason
                    );
                    (labels, value(r))
                })
                .collect()
        };
        let rules = |value: fn(&RuleCount) -> u64| {
            self.rules
                .iter()
                .map(|r| {
                    (
                        format!("rule=\"{}\",line=\"{}\"", escape(&r.name), r.line),
                        value(r),
                    )
                })
                .collect()
        };
        let c = &self.conntrack;
        let families = |v4: u64, v6: u64| {
            vec![
                ("family=\"ipv4\"".to_string(), v4),
                ("family=\"ipv6\"".to_string(), v6),
            ]
        };
        metric(
            "cilc_packets_total",
            "counter",
            "Packets by direction, reason and verdict.",
            reasons(|r| r.packets),
        );
        metric(
            "cilc_bytes_total",
            "counter",
            "Bytes by direction, reason and verdict.",
            reasons(|r| r.bytes),
        );
        metric(
            "cilc_rule_packets_total",
            "counter",
            "Packets decided by each rule.",
            rules(|r| r.packets),
        );
        metric(
            "cilc_rule_bytes_total",
            "counter",
            "Bytes decided by each rule.",
            rules(|r| r.bytes),
        );
        metric(
            "cilc_conntrack_entries",
            "gauge",
            "Conntrack entries, expired ones included until GC.",
            families(c.ipv4_entries as u64, c.ipv6_entries as u64),
        );
        metric(
            "cilc_conntrack_max_entries",
            "gauge",
            "Conntrack table sizes.",
            families(c.ipv4_max.into(), c.ipv6_max.into()),
        );
        metric(
            "cilc_nat_mappings",
            "gauge",
            "Source NAT mappings.",
            vec![("table=\"snat\"".to_string(), c.nat_entries as u64)],
        );
        metric(
            "cilc_nat_max_mappings",
            "gauge",
            "Source NAT table size.",
            vec![("table=\"snat\"".to_string(), c.nat_max.into())],
        );
        metric(
            "cilc_conntrack_events_total",
            "counter",
            "Conntrack events.",
            c.events
                .iter()
                .map(|(n, v)| (format!("event=\"{n}\""), *v))
                .collect(),
        );
        s
    }
}

/// A Prometheus label value.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
