//! Source NAT, the loader's half: the interfaces that translate and the
//! addresses they masquerade to, each rule's `snat` as the programs read
//! it, the mappings as values, and their garbage collection together with
//! conntrack.
//!
//! The programs allocate ports and rewrite packets (stdlib-bpf/cilc.c,
//! "source NAT"). Input: an interface (and its namespace), the manifest,
//! the maps; output: `NatIface` records, `Mapping`s and a count of what GC
//! removed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use libbpf_rs::{MapCore, MapFlags, MapHandle};
use serde::{Deserialize, Serialize};

use crate::conntrack::{self, FlowKey};
use crate::link::{self, Netns};
use crate::manifest::Snat;
use crate::Error;

/// A mapping younger than this is never collected: the programs claim the
/// reverse entry, then the forward one, then create the conntrack entry,
/// and GC must not see a half-made mapping as an orphan.
const GRACE: Duration = Duration::from_secs(2);

/// An interface that translates (`attach --snat`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatIface {
    pub iface: String,
    pub netns: Option<Netns>,
    /// The programs find the interface by index (`cilc_nat_ifaces`).
    pub ifindex: u32,
    /// What `snat` (masquerade) translates to, per family.
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
    /// Given with `--snat-address` (else the interface's own, read when
    /// attached).
    pub given: bool,
}

impl NatIface {
    /// Resolve `iface` in its namespace: its index and (unless `given`)
    /// its first global address per family.
    pub fn resolve(
        iface: &str,
        netns: Option<&Netns>,
        given: &[IpAddr],
    ) -> Result<NatIface, Error> {
        let (ifindex, own) = own_addresses(iface, netns)?;
        let (v4, v6) = if given.is_empty() {
            pick(own)
        } else {
            pick(given.to_vec())
        };
        if v4.is_none() && v6.is_none() {
            return Err(Error::Kernel(format!(
                "`{iface}` has no address to masquerade to; give one with --snat-address"
            )));
        }
        Ok(NatIface {
            iface: iface.into(),
            netns: netns.cloned(),
            ifindex,
            v4,
            v6,
            given: !given.is_empty(),
        })
    }

    /// Its key in `cilc_nat_ifaces`.
    pub fn key(&self) -> Vec<u8> {
        self.ifindex.to_ne_bytes().to_vec()
    }

    /// `struct cilc_nat_iface`.
    pub fn value(&self) -> Vec<u8> {
        let mut v = (self.v4.is_some() as u32).to_ne_bytes().to_vec();
        v.extend_from_slice(&(self.v6.is_some() as u32).to_ne_bytes());
        v.extend_from_slice(&(self.v4.map_or(0, u32::from) as u64).to_ne_bytes());
        v.extend_from_slice(&addr_words(
            self.v6
                .map_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED), IpAddr::V6),
        ));
        v
    }

    /// The addresses it would masquerade to now (its own, read again; the
    /// given ones), or None when it is gone or has another index.
    pub fn current(&self) -> Option<(Option<Ipv4Addr>, Option<Ipv6Addr>)> {
        if self.given {
            return Some((self.v4, self.v6));
        }
        // An interface of the loader's own namespace is looked up there,
        // whichever namespace the calling thread is in.
        let ns = self.netns.clone().unwrap_or(Netns::Pid(std::process::id()));
        match own_addresses(&self.iface, Some(&ns)) {
            Ok((ifindex, own)) if ifindex == self.ifindex => Some(pick(own)),
            _ => None,
        }
    }

    /// Whether `netns`/`iface` names this interface.
    pub fn is(&self, iface: &str, netns: Option<&Netns>) -> bool {
        self.iface == iface && self.netns.as_ref() == netns
    }
}

/// An interface's index and addresses, in its namespace.
fn own_addresses(iface: &str, netns: Option<&Netns>) -> Result<(u32, Vec<IpAddr>), Error> {
    link::in_netns(netns, || {
        let ifindex = link::ifindex(iface)?;
        let own = crate::host::addresses_on(Some(ifindex))?;
        Ok((ifindex, own.iter().map(|n| n.addr()).collect()))
    })
}

/// The first address of each family (IPv6 link-local ones do not leave
/// the link).
fn pick(addrs: Vec<IpAddr>) -> (Option<Ipv4Addr>, Option<Ipv6Addr>) {
    let v4 = addrs.iter().find_map(|a| match a {
        IpAddr::V4(a) => Some(*a),
        _ => None,
    });
    let v6 = addrs.iter().find_map(|a| match a {
        IpAddr::V6(a) if !a.is_unicast_link_local() => Some(*a),
        _ => None,
    });
    (v4, v6)
}

/// An address as the programs hold it: two host-order 64-bit words, high
/// half first (IPv4 in the low word).
fn addr_words(a: IpAddr) -> [u8; 16] {
    let n = match a {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    };
    let mut out = [0; 16];
    out[..8].copy_from_slice(&((n >> 64) as u64).to_ne_bytes());
    out[8..].copy_from_slice(&(n as u64).to_ne_bytes());
    out
}

fn addr_from_words(b: &[u8], v6: bool) -> IpAddr {
    let word = |i: usize| {
        let mut w = [0; 8];
        w.copy_from_slice(&b[i..i + 8]);
        u64::from_ne_bytes(w)
    };
    let n = (word(0) as u128) << 64 | word(8) as u128;
    if v6 {
        IpAddr::V6(Ipv6Addr::from(n))
    } else {
        IpAddr::V4(Ipv4Addr::from(n as u32))
    }
}

/// `struct cilc_rule_snat` for one rule.
pub fn rule_value(s: Option<Snat>) -> Vec<u8> {
    let (kind, v6, addr) = match s {
        None => (0u32, false, IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        Some(Snat::Masquerade) => (1, false, IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        Some(Snat::To(a)) => (2, a.is_ipv6(), a),
    };
    let mut v = kind.to_ne_bytes().to_vec();
    v.extend_from_slice(&(v6 as u32).to_ne_bytes());
    v.extend_from_slice(&addr_words(addr));
    v
}

/// `struct cilc_nat_key`.
fn key_bytes(f: &FlowKey) -> Vec<u8> {
    let mut k = addr_words(f.src).to_vec();
    k.extend_from_slice(&addr_words(f.dst));
    k.extend_from_slice(&f.sport.to_ne_bytes());
    k.extend_from_slice(&f.dport.to_ne_bytes());
    k.extend_from_slice(&[f.proto, f.src.is_ipv6() as u8, 0, 0]);
    k
}

fn parse_key(k: &[u8]) -> Option<FlowKey> {
    if k.len() < 40 {
        return None;
    }
    let v6 = k[37] != 0;
    Some(FlowKey {
        src: addr_from_words(&k[0..16], v6),
        dst: addr_from_words(&k[16..32], v6),
        sport: u16::from_ne_bytes([k[32], k[33]]),
        dport: u16::from_ne_bytes([k[34], k[35]]),
        proto: k[36],
    })
}

/// `struct cilc_nat_entry`: address, port, creation time.
fn parse_entry(v: &[u8], v6: bool) -> Option<(IpAddr, u16, u64)> {
    if v.len() < 32 {
        return None;
    }
    let mut c = [0; 8];
    c.copy_from_slice(&v[16..24]);
    Some((
        addr_from_words(&v[0..16], v6),
        u16::from_ne_bytes([v[24], v[25]]),
        u64::from_ne_bytes(c),
    ))
}

/// One flow's translation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mapping {
    /// The flow as the pod sent it.
    pub flow: FlowKey,
    /// The source it leaves with.
    pub addr: IpAddr,
    pub port: u16,
    /// Since a packet last used it.
    pub idle: Duration,
}

/// What one NAT GC pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Gc {
    /// Mappings whose flow's conntrack entry is gone or expired.
    pub mappings: usize,
    /// Reverse entries without a forward one (left by a failed insert).
    pub orphans: usize,
    pub kept: usize,
}

/// The two mapping tables of an installation or a loaded object.
pub struct Tables {
    pub forward: MapHandle,
    pub reverse: MapHandle,
}

impl Tables {
    /// Every mapping, sorted by flow.
    pub fn mappings(&self) -> Result<Vec<Mapping>, Error> {
        let now = conntrack::now_ns();
        let mut out = Vec::new();
        for key in self.forward.keys() {
            let Some(flow) = parse_key(&key) else {
                continue;
            };
            let value = self
                .forward
                .lookup(&key, MapFlags::ANY)
                .map_err(|e| Error::Kernel(format!("cannot read the NAT table: {e}")))?;
            if let Some((addr, port, seen)) =
                value.and_then(|v| parse_entry(&v, flow.src.is_ipv6()))
            {
                out.push(Mapping {
                    flow,
                    addr,
                    port,
                    idle: Duration::from_nanos(now.saturating_sub(seen)),
                });
            }
        }
        out.sort_by_key(|m| m.flow);
        Ok(out)
    }

    /// Entries (forward, reverse).
    pub fn len(&self) -> (usize, usize) {
        (self.forward.keys().count(), self.reverse.keys().count())
    }

    /// Remove the mappings of flows conntrack no longer has (gone or
    /// expired: `gc` of conntrack runs first), and reverse entries that
    /// lost their forward one.
    pub fn gc(&self, ct: &conntrack::Tables) -> Result<Gc, Error> {
        let mut report = Gc::default();
        let grace = GRACE.as_nanos() as u64;
        let now = conntrack::now_ns();
        for m in self.mappings()? {
            // SNAT is on egress: conntrack holds the flow under direction 1.
            if m.idle < GRACE || ct.live(&m.flow, 1)? {
                report.kept += 1;
                continue;
            }
            // Read it again just before deleting: a packet may have used
            // it meanwhile (and made a new conntrack entry).
            let again = self
                .forward
                .lookup(&key_bytes(&m.flow), MapFlags::ANY)
                .ok()
                .flatten()
                .and_then(|v| parse_entry(&v, m.flow.src.is_ipv6()));
            let idle = again.map(|(_, _, seen)| now.saturating_sub(seen));
            if idle.is_none_or(|i| i < grace) || ct.live(&m.flow, 1)? {
                report.kept += 1;
                continue;
            }
            let _ = self.forward.delete(&key_bytes(&m.flow));
            let reverse = FlowKey {
                src: m.flow.dst,
                dst: m.addr,
                sport: m.flow.dport,
                dport: m.port,
                proto: m.flow.proto,
            };
            let _ = self.reverse.delete(&key_bytes(&reverse));
            report.mappings += 1;
        }
        for key in self.reverse.keys() {
            let Some(r) = parse_key(&key) else { continue };
            let v6 = r.src.is_ipv6();
            let Some((addr, port, created)) = self
                .reverse
                .lookup(&key, MapFlags::ANY)
                .ok()
                .flatten()
                .and_then(|v| parse_entry(&v, v6))
            else {
                continue;
            };
            let forward = FlowKey {
                src: addr,
                dst: r.src,
                sport: port,
                dport: r.sport,
                proto: r.proto,
            };
            let paired = self
                .forward
                .lookup(&key_bytes(&forward), MapFlags::ANY)
                .ok()
                .flatten()
                .and_then(|v| parse_entry(&v, v6))
                .is_some_and(|(a, p, _)| a == r.dst && p == r.dport);
            if paired || now.saturating_sub(created) < grace {
                continue;
            }
            if self.reverse.delete(&key).is_ok() {
                report.orphans += 1;
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_for_both_families() {
        for (src, dst) in [("10.0.0.2", "198.51.100.7"), ("fd00::2", "2001:db8::7")] {
            let f = FlowKey {
                src: src.parse().unwrap(),
                dst: dst.parse().unwrap(),
                sport: 40000,
                dport: 443,
                proto: 6,
            };
            let k = key_bytes(&f);
            assert_eq!(k.len(), 40);
            assert_eq!(parse_key(&k), Some(f));
        }
    }

    #[test]
    fn rule_values_say_what_snat_does() {
        assert_eq!(rule_value(None)[..4], 0u32.to_ne_bytes());
        assert_eq!(rule_value(Some(Snat::Masquerade))[..4], 1u32.to_ne_bytes());
        let to = rule_value(Some(Snat::To("2001:db8::10".parse().unwrap())));
        assert_eq!(to.len(), 24);
        assert_eq!(
            to[..8],
            [2u32.to_ne_bytes(), 1u32.to_ne_bytes()].concat()[..]
        );
        assert_eq!(
            addr_from_words(&to[8..], true),
            "2001:db8::10".parse::<IpAddr>().unwrap()
        );
        let v4 = rule_value(Some(Snat::To("203.0.113.10".parse().unwrap())));
        assert_eq!(
            addr_from_words(&v4[8..], false),
            "203.0.113.10".parse::<IpAddr>().unwrap()
        );
    }
}
