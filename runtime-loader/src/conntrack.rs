//! Connection tracking, the loader's half: settings the programs read,
//! the entries as values, and garbage collection.
//!
//! The programs create, update and delete entries (stdlib-bpf/cilc.c);
//! the loader writes `cilc_config` (tracking on, audit mode, timeouts),
//! lists entries, and removes expired ones (`gc`), non-TCP entries first
//! when the table fills up. Input: the maps; output: `Flow`s and `Gc`
//! reports.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use libbpf_rs::{MapCore, MapFlags, MapHandle};
use serde::{Deserialize, Serialize};

use crate::Error;

/// Timeouts after the last packet of a flow, by state (Cilium's defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeouts {
    /// TCP before the handshake completes.
    pub syn: Duration,
    /// TCP established (and half-closed).
    pub established: Duration,
    /// TCP after FIN from both sides, or RST.
    pub close: Duration,
    /// Everything that is not TCP.
    pub other: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            syn: Duration::from_secs(60),
            established: Duration::from_secs(6 * 3600),
            close: Duration::from_secs(10),
            other: Duration::from_secs(60),
        }
    }
}

/// How an installation tracks connections.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// Track connections (replies pass without a policy lookup).
    pub conntrack: bool,
    /// Pass what policy would drop, counted as `audit-would-drop`.
    pub audit: bool,
    pub timeouts: Timeouts,
    /// Entries of the IPv4 and IPv6 tables.
    pub ct4_max: u32,
    pub ct6_max: u32,
    /// Fill (0–1) above which `gc` also removes idle non-TCP entries.
    pub gc_pressure: f64,
    /// Addresses and prefixes the identity map holds (endpoints and
    /// `--identity`); a change that needs more is refused.
    #[serde(default = "default_idents_max")]
    pub idents_max: u32,
    /// Source NAT mappings (each table: forward and reverse).
    #[serde(default = "default_nat_max")]
    pub nat_max: u32,
    /// Source ports (and ICMP echo identifiers) source NAT allocates.
    #[serde(default = "default_nat_ports")]
    pub nat_ports: (u16, u16),
}

fn default_nat_max() -> u32 {
    65_536
}

/// Above Linux's default ephemeral range (32768–60999), so that mappings
/// do not take the ports the node's own connections use.
fn default_nat_ports() -> (u16, u16) {
    (61_000, 65_535)
}

fn default_idents_max() -> u32 {
    65_536
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            conntrack: true,
            audit: false,
            timeouts: Timeouts::default(),
            ct4_max: 262_144,
            ct6_max: 65_536,
            gc_pressure: 0.75,
            idents_max: default_idents_max(),
            nat_max: default_nat_max(),
            nat_ports: default_nat_ports(),
        }
    }
}

const CFG_CT: u32 = 1;
const CFG_AUDIT: u32 = 2;

impl Settings {
    /// `struct cilc_config`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let flags =
            if self.conntrack { CFG_CT } else { 0 } | if self.audit { CFG_AUDIT } else { 0 };
        let mut v = flags.to_ne_bytes().to_vec();
        v.extend_from_slice(&self.nat_ports.0.to_ne_bytes());
        v.extend_from_slice(&self.nat_ports.1.to_ne_bytes());
        let t = &self.timeouts;
        for d in [t.syn, t.established, t.close, t.other] {
            v.extend_from_slice(&(d.as_nanos() as u64).to_ne_bytes());
        }
        v
    }
}

/// `enum cilc_ct_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    SynSent,
    SynRecv,
    Established,
    FinWait,
    Closing,
    Closed,
    Other,
    Unknown,
}

impl State {
    fn from_code(c: u8) -> State {
        match c {
            1 => State::SynSent,
            2 => State::SynRecv,
            3 => State::Established,
            4 => State::FinWait,
            5 => State::Closing,
            6 => State::Closed,
            7 => State::Other,
            _ => State::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::SynSent => "syn-sent",
            State::SynRecv => "syn-recv",
            State::Established => "established",
            State::FinWait => "fin-wait",
            State::Closing => "closing",
            State::Closed => "closed",
            State::Other => "other",
            State::Unknown => "unknown",
        }
    }
}

/// One tracked flow, as its first packet had it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Flow {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    /// The direction that judged the first packet: `ingress` or `egress`.
    pub direction: &'static str,
    pub state: State,
    /// Time left before it expires (zero: expired, waiting for `gc`).
    pub expires_in: Duration,
    pub idle: Duration,
    /// Packets and bytes: [original direction, replies].
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
    /// The rule that allowed the first packet.
    pub rule: Option<u32>,
    #[serde(skip)]
    key: Vec<u8>,
    #[serde(skip)]
    v6: bool,
}

/// A flow's tuple (conntrack's convention: an ICMP echo's identifier is
/// the request's source port and the reply's destination port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct FlowKey {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
}

/// CLOCK_MONOTONIC now, as the programs' bpf_ktime_get_ns sees it.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-parameter.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_ne_bytes([b[i], b[i + 1]])
}

fn u64_at(b: &[u8], i: usize) -> u64 {
    let mut w = [0; 8];
    w.copy_from_slice(&b[i..i + 8]);
    u64::from_ne_bytes(w)
}

fn parse_flow(key: &[u8], value: &[u8], v6: bool, now: u64) -> Option<Flow> {
    if value.len() < 64 {
        return None;
    }
    let (src, dst, rest) = if v6 {
        if key.len() < 40 {
            return None;
        }
        let addr = |i: usize| {
            let hi = u64_at(key, i) as u128;
            let lo = u64_at(key, i + 8) as u128;
            IpAddr::V6(Ipv6Addr::from(hi << 64 | lo))
        };
        (addr(0), addr(16), 32)
    } else {
        if key.len() < 16 {
            return None;
        }
        let addr = |i: usize| {
            IpAddr::V4(Ipv4Addr::from(u32::from_ne_bytes([
                key[i],
                key[i + 1],
                key[i + 2],
                key[i + 3],
            ])))
        };
        (addr(0), addr(4), 8)
    };
    let expires = u64_at(value, 0);
    let last = u64_at(value, 16);
    let rule = u32::from_ne_bytes([value[56], value[57], value[58], value[59]]);
    Some(Flow {
        src,
        dst,
        sport: u16_at(key, rest),
        dport: u16_at(key, rest + 2),
        proto: key[rest + 4],
        direction: if key[rest + 5] == 0 {
            "ingress"
        } else {
            "egress"
        },
        state: State::from_code(value[60]),
        expires_in: Duration::from_nanos(expires.saturating_sub(now)),
        idle: Duration::from_nanos(now.saturating_sub(last)),
        packets: [u64_at(value, 24), u64_at(value, 32)],
        bytes: [u64_at(value, 40), u64_at(value, 48)],
        rule: rule.checked_sub(1),
        key: key.to_vec(),
        v6,
    })
}

/// The two conntrack tables of an installation or a loaded object.
pub struct Tables {
    pub v4: MapHandle,
    pub v6: MapHandle,
}

impl Tables {
    /// Every entry (expired ones too, until `gc` removes them).
    pub fn flows(&self) -> Result<Vec<Flow>, Error> {
        let now = now_ns();
        let mut out = Vec::new();
        for (map, v6) in [(&self.v4, false), (&self.v6, true)] {
            for key in map.keys() {
                let value = map
                    .lookup(&key, MapFlags::ANY)
                    .map_err(|e| Error::Kernel(format!("cannot read conntrack: {e}")))?;
                if let Some(f) = value.and_then(|v| parse_flow(&key, &v, v6, now)) {
                    out.push(f);
                }
            }
        }
        out.sort_by(|a, b| {
            (a.src, a.dst, a.sport, a.dport, a.proto)
                .cmp(&(b.src, b.dst, b.sport, b.dport, b.proto))
        });
        Ok(out)
    }

    /// Whether a flow (as its first packet had it, judged in `direction`:
    /// 0 ingress, 1 egress) has a live entry.
    pub fn live(&self, f: &FlowKey, direction: u8) -> Result<bool, Error> {
        let (map, key) = match (f.src, f.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let mut k = Vec::with_capacity(16);
                k.extend_from_slice(&u32::from(s).to_ne_bytes());
                k.extend_from_slice(&u32::from(d).to_ne_bytes());
                (&self.v4, k)
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let mut k = Vec::with_capacity(40);
                for a in [u128::from(s), u128::from(d)] {
                    k.extend_from_slice(&((a >> 64) as u64).to_ne_bytes());
                    k.extend_from_slice(&(a as u64).to_ne_bytes());
                }
                (&self.v6, k)
            }
            _ => return Ok(false),
        };
        let mut key = key;
        key.extend_from_slice(&f.sport.to_ne_bytes());
        key.extend_from_slice(&f.dport.to_ne_bytes());
        key.extend_from_slice(&[f.proto, direction, 0, 0]);
        let value = map
            .lookup(&key, MapFlags::ANY)
            .map_err(|e| Error::Kernel(format!("cannot read conntrack: {e}")))?;
        Ok(value
            .and_then(|v| parse_flow(&key, &v, f.src.is_ipv6(), now_ns()))
            .is_some_and(|flow| !flow.expires_in.is_zero()))
    }

    /// Entries per family.
    pub fn len(&self) -> (usize, usize) {
        (self.v4.keys().count(), self.v6.keys().count())
    }

    /// Remove one entry.
    pub fn remove(&self, flow: &Flow) -> Result<(), Error> {
        let map = if flow.v6 { &self.v6 } else { &self.v4 };
        map.delete(&flow.key)
            .map_err(|e| Error::Kernel(format!("cannot delete a conntrack entry: {e}")))
    }

    /// Remove expired entries; above `settings.gc_pressure` fill, also
    /// non-TCP entries idle for more than a tenth of their timeout (they
    /// cannot close, so idleness is the only sign they are done).
    pub fn gc(&self, settings: &Settings) -> Result<Gc, Error> {
        let flows = self.flows()?;
        let mut report = Gc::default();
        for (map, v6, max) in [
            (&self.v4, false, self.v4.max_entries()),
            (&self.v6, true, self.v6.max_entries()),
        ] {
            let mine: Vec<&Flow> = flows.iter().filter(|f| f.v6 == v6).collect();
            let pressed = max > 0 && mine.len() as f64 >= settings.gc_pressure * max as f64;
            let idle_limit = settings.timeouts.other / 10;
            let judge = |f: &Flow| {
                let expired = f.expires_in.is_zero();
                (
                    expired,
                    expired || (pressed && f.proto != 6 && f.idle >= idle_limit),
                )
            };
            for f in mine {
                if !judge(f).1 {
                    report.kept += 1;
                    continue;
                }
                // Read it again just before deleting: a packet may have
                // refreshed it (or a new flow taken its key) meanwhile.
                let fresh = map
                    .lookup(&f.key, MapFlags::ANY)
                    .ok()
                    .flatten()
                    .and_then(|v| parse_flow(&f.key, &v, v6, now_ns()));
                let Some(fresh) = fresh else { continue };
                let (expired, go) = judge(&fresh);
                if !go {
                    report.kept += 1;
                    continue;
                }
                // An entry can vanish under us (LRU eviction, the programs).
                if map.delete(&f.key).is_ok() {
                    match (f.proto == 6, expired) {
                        (true, _) => report.tcp += 1,
                        (false, true) => report.other += 1,
                        (false, false) => report.pressure += 1,
                    }
                }
            }
        }
        Ok(report)
    }
}

/// What one `gc` pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Gc {
    /// Expired TCP entries.
    pub tcp: usize,
    /// Expired non-TCP entries.
    pub other: usize,
    /// Non-TCP entries removed early because the table was filling up.
    pub pressure: usize,
    pub kept: usize,
}

/// `enum cilc_ct_event`, in order.
pub const EVENTS: [&str; 6] = [
    "created",
    "insert-failed",
    "deleted-by-policy",
    "picked-up",
    "nat-created",
    "nat-collision",
];
