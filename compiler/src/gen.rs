//! Synthetic policies for tests and benchmarks (`cilc gen`).
//!
//! `policy(seed, rules)` writes a `.cpl` text of about `rules` rules that
//! uses every construct of the language: IPv4/IPv6 sets with `except`, port
//! sets, selectors with namespaces, policies on selectors and on the host
//! with allow/deny/audit, L7 (HTTP, DNS, Kafka, TLS), SNAT, and ordered
//! first-match chains in the style of ClassBench. The same seed gives the
//! same text; the output checks without errors.

use std::fmt::Write;

/// splitmix64: small, fast, and good enough for test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

const RULES_PER_SECTION: usize = 40;
const RULES_PER_CHAIN: usize = 200;

fn v4_prefix(r: &mut Rng) -> String {
    let len = 8 + r.below(25) as u32;
    let addr = (r.next_u64() as u32) & (u32::MAX << (32 - len));
    format!("{}/{len}", std::net::Ipv4Addr::from(addr))
}

fn v6_prefix(r: &mut Rng) -> String {
    let len = 32 + r.below(97) as u32;
    let addr = ((0xfd00u128 << 112) | (r.next_u64() as u128) << 48) & (u128::MAX << (128 - len));
    format!("{}/{len}", std::net::Ipv6Addr::from(addr))
}

fn port(r: &mut Rng) -> String {
    match r.below(3) {
        0 => format!("{}", 1 + r.below(1023)),
        1 => {
            let a = 1024 + r.below(60000);
            format!("{a}-{}", a + r.below(100))
        }
        _ => format!("{}", 1024 + r.below(64000)),
    }
}

struct Defs {
    n: usize,
}

impl Defs {
    fn cidr(&self, r: &mut Rng) -> String {
        format!("c{}", r.below(self.n as u64))
    }
    fn v4_cidr(&self, r: &mut Rng) -> String {
        format!("c{}", 2 * r.below(self.n.div_ceil(2) as u64))
    }
    fn sel(&self, r: &mut Rng) -> String {
        format!("s{}", r.below(self.n as u64))
    }
    fn ports(&self, r: &mut Rng) -> String {
        format!("p{}", r.below(self.n as u64))
    }
}

pub fn policy(seed: u64, rules: usize) -> String {
    let mut r = Rng::new(seed);
    let mut out = String::with_capacity(rules * 64);
    let n = (rules / 40).clamp(1, 64);
    let d = Defs { n };
    let _ = writeln!(out, "# synthetic policy: seed {seed}, {rules} rules\n");
    for i in 0..n {
        if i % 2 == 0 {
            let inc = format!("10.{i}.0.0/16");
            let _ = writeln!(
                out,
                "cidr c{i} = {inc}, {} except 10.{i}.{}.0/24",
                v4_prefix(&mut r),
                r.below(256)
            );
        } else {
            let _ = writeln!(out, "cidr c{i} = fd00:{i:x}::/32, {}", v6_prefix(&mut r));
        }
        let _ = writeln!(
            out,
            "ports p{i} = {}, {}, named web-{}",
            port(&mut r),
            port(&mut r),
            // A program holds 16 named ports: 6 of these and 10 metrics-N.
            i % 6
        );
        let ns = if i % 3 == 0 {
            format!("in namespaces env=prod, team=t{i}")
        } else {
            format!("in namespace ns-{}", i % 5)
        };
        let _ = writeln!(
            out,
            "select s{i} = app=app{i}, tier in (frontend, backend), !canary {ns}"
        );
    }
    out.push('\n');
    let mut left = rules;
    let mut p = 0;
    while left > 0 {
        if p % 4 == 3 {
            let k = left.min(RULES_PER_CHAIN);
            chain(&mut out, &mut r, p, k);
            left -= k;
        } else {
            let k = left.min(2 * RULES_PER_SECTION);
            policy_block(&mut out, &mut r, &d, p, k);
            left -= k;
        }
        p += 1;
    }
    out
}

fn policy_block(out: &mut String, r: &mut Rng, d: &Defs, p: usize, k: usize) {
    let subject = if p % 5 == 4 {
        "host".to_string()
    } else {
        d.sel(r)
    };
    let _ = writeln!(out, "policy pol{p} on {subject} {{");
    let ingress = k.div_ceil(2);
    for (dir, count) in [("ingress", ingress), ("egress", k - ingress)] {
        if count == 0 {
            continue;
        }
        let _ = writeln!(out, "  {dir} {{");
        for i in 0..count {
            let rule = if dir == "ingress" {
                ingress_rule(r, d, i)
            } else {
                egress_rule(r, d, i)
            };
            let _ = writeln!(out, "    {rule}");
        }
        out.push_str("  }\n");
    }
    out.push_str("}\n\n");
}

fn ingress_rule(r: &mut Rng, d: &Defs, i: usize) -> String {
    match r.below(10) {
        0 => format!("allow from {} tcp {}", d.sel(r), d.ports(r)),
        1 => format!("allow from {} tcp {}, {}", d.cidr(r), port(r), port(r)),
        2 => format!("deny from {}", v4_prefix(r)),
        3 => format!(
            "allow from {{ app=app{}, tier in (web, api) }} tcp 8080 http {{ GET \"/api/v{}/*\"; POST \"/orders\" host \"shop.example.com\" header \"X-Token\" }}",
            r.below(100),
            r.below(3) + 1
        ),
        4 => "audit from world tcp 22".to_string(),
        5 => format!("allow from {} icmp type echo-request", d.v4_cidr(r)),
        6 => format!("allow from {} icmpv6 type echo-request", v6_prefix(r)),
        7 => format!("allow from {} sctp {}", d.sel(r), port(r)),
        8 => format!("allow from cluster tcp named metrics-{}", r.below(10)),
        _ => format!("allow from {}, {} tcp/udp {} as in{i}", d.cidr(r), d.sel(r), port(r)),
    }
}

fn egress_rule(r: &mut Rng, d: &Defs, i: usize) -> String {
    match r.below(8) {
        0 => format!("allow to {} udp/tcp 53 dns {{ \"*.example.com\", \"svc{}.example.org\" }}", d.sel(r), r.below(100)),
        1 => format!("allow to world tcp 443 tls {{ \"api{}.example.com\" }} snat", r.below(100)),
        2 => format!("allow to {} tcp 9092 kafka {{ produce topic \"t{}\"; fetch topic \"t{}\" client \"c\" }}", d.sel(r), r.below(9), r.below(9)),
        3 => format!("deny to {}", v4_prefix(r)),
        4 => format!("allow to {} tcp 443 snat to 203.0.113.{}", d.v4_cidr(r), r.below(255)),
        5 => format!("allow to {} tcp {}", d.sel(r), d.ports(r)),
        6 => format!("allow to {} udp {} as out{i}", d.cidr(r), port(r)),
        _ => format!("allow to {} any", d.sel(r)),
    }
}

/// A ClassBench-like 5-tuple chain, with a catch-all `drop` at the end.
fn chain(out: &mut String, r: &mut Rng, p: usize, k: usize) {
    let _ = writeln!(out, "chain ch{p} on host ingress {{");
    for _ in 0..k.saturating_sub(1) {
        let action = if r.below(3) == 0 { "drop" } else { "accept" };
        let (src, dst) = if r.below(4) == 0 {
            (v6_prefix(r), v6_prefix(r))
        } else {
            (v4_prefix(r), v4_prefix(r))
        };
        let l4 = match r.below(6) {
            0 => format!(" tcp {} sport {} flags syn/syn|ack", port(r), port(r)),
            1 => format!(" udp {} sport 0-65535", port(r)),
            2 => " proto 47".to_string(),
            3 if !src.contains(':') => " icmp type 8".to_string(),
            3 => " icmpv6 type 128".to_string(),
            4 => format!(" tcp {}", port(r)),
            _ => String::new(),
        };
        let _ = writeln!(out, "  {action} from {src} to {dst}{l4}");
    }
    if k > 0 {
        out.push_str("  drop\n");
    }
    out.push_str("}\n\n");
}

/// Packet lines (`cilc explain --packet` form, one per line) for the
/// policy `policy(seed, rules)` writes: the host or pods labelled as the
/// selectors of its policies pick (a third of them with a tier none picks), peers in the
/// world inside its address sets or anywhere, and the ports its rules
/// name often, so that a benchmark walks the parts of selected endpoints,
/// not only of endpoints no policy selects.
pub fn packets(seed: u64, rules: usize, count: usize) -> String {
    let mut r = Rng::new(seed ^ 0x5eed_9ac4);
    let n = (rules / 40).clamp(1, 64) as u64;
    // The selectors the policy's policies are on.
    let subjects: Vec<u64> = policy(seed, rules)
        .lines()
        .filter_map(|l| l.strip_prefix("policy ")?.split(" on s").nth(1))
        .filter_map(|k| k.trim_end_matches(" {").parse().ok())
        .collect();
    let mut out = String::with_capacity(count * 96);
    let _ = writeln!(
        out,
        "# packets for `cilc gen --rules {rules} --seed {seed}`: cilc gen --packets {count} --rules {rules} --seed {seed}"
    );
    for _ in 0..count {
        // The local endpoint: the host, or a pod that is `app=appK` for a
        // K some policy is on, in its namespace (selector sK: env=prod,
        // team=tK for K % 3 == 0, else ns-(K % 5)).
        let local = if r.below(5) == 0 || subjects.is_empty() {
            "host".to_string()
        } else {
            let k = *r.pick(&subjects);
            let ns = if k.is_multiple_of(3) {
                format!("ns-x[env=prod,team=t{k}]")
            } else {
                format!("ns-{}", k % 5)
            };
            let tier = ["frontend", "backend", "web"][r.below(3) as usize];
            format!("app=app{k},tier={tier}@{ns}+web-{}=80", k % 6)
        };
        let k = r.below(n);
        let v6 = k % 2 == 1 && r.below(2) == 0;
        let addr = |r: &mut Rng, inside: bool| -> String {
            match (v6, inside) {
                (false, true) => format!("10.{k}.{}.{}", r.below(256), 1 + r.below(254)),
                (false, false) => std::net::Ipv4Addr::from(r.next_u64() as u32).to_string(),
                (true, true) => format!("fd00:{k:x}::{:x}", r.below(65536)),
                (true, false) => {
                    std::net::Ipv6Addr::from((0xfd00u128 << 112) | u128::from(r.next_u64()) << 32)
                        .to_string()
                }
            }
        };
        let inside = r.below(3) != 0;
        let peer = addr(&mut r, inside);
        let me = if v6 {
            "fd00::5".to_string()
        } else {
            "10.200.0.5".to_string()
        };
        let l4 = match r.below(6) {
            0 => format!("tcp {} 80", 1024 + r.below(60000)),
            1 => format!("tcp {} 443", 1024 + r.below(60000)),
            2 => format!("udp {} 53", 1024 + r.below(60000)),
            3 => format!("tcp {} {}", 1024 + r.below(60000), 1 + r.below(65535)),
            4 => format!("udp {} {}", 1024 + r.below(60000), 1 + r.below(65535)),
            _ if v6 => "icmpv6 128 0".to_string(),
            _ => "icmp 8 0".to_string(),
        };
        let (dir, from, to) = if r.below(2) == 0 {
            ("ingress", peer, me)
        } else {
            ("egress", me, peer)
        };
        let _ = writeln!(out, "{dir} local {local} peer world {from} -> {to} {l4}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::{evaluate, packet::parse_packet};

    #[test]
    fn packets_parse_and_most_pods_are_selected() {
        let src = policy(7, 4000);
        let (ir, _) = crate::compile_ir(&src).expect("the policy checks");
        let text = packets(7, 4000, 400);
        let mut reasons = std::collections::BTreeMap::new();
        let (mut pods, mut selected) = (0, 0);
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let p = parse_packet(line).unwrap_or_else(|e| panic!("{line}: {e:?}"));
            let d = evaluate(&ir, &p);
            *reasons.entry(d.reason.as_str()).or_insert(0) += 1;
            if !line.contains("local host") {
                pods += 1;
                selected += usize::from(d.reason.as_str() != "no-policy");
            }
        }
        assert_eq!(text.lines().count(), 401);
        // tier=web pods are no selector's: a third.
        assert!(
            selected * 2 > pods,
            "{selected} of {pods} pods selected: {reasons:?}"
        );
        assert!(reasons.len() >= 3, "{reasons:?}");
    }
}
