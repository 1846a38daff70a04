//! Packets through a loaded object, judged by the kernel.
//!
//! Stage: **(`runtime_loader::Loaded`, `eval::Packet`) → `Judged`**. The
//! identities of both ends are written into the object's identity map
//! (predicate bits from the manifest's selectors, as `eval` reads them),
//! the packet becomes a frame (`eval::frame`), and `BPF_PROG_TEST_RUN`
//! runs it through the program of its direction: XDP for ingress (TC
//! ingress on request), TC egress for egress.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use runtime_loader::identity::Bits;
use runtime_loader::manifest::Reason;
use runtime_loader::Loaded;

use crate::eval::{frame::frame, Identity, Packet, Verdict};
use crate::ir::Selector;
use crate::resolve::Direction;

/// What the kernel decided for a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Judged {
    pub verdict: Verdict,
    pub reason: Reason,
    pub rule: Option<u32>,
    pub duration: Duration,
}

pub use runtime_loader::identity::{bits, selectors};

/// The identity bits of `pkt`'s source and destination under `m`'s
/// selectors. Both ends at one address with different identities: the
/// local side's for both with `local_wins` (see `Runner`), else an error.
pub fn ends(
    m: &runtime_loader::manifest::Manifest,
    sel: &[(u32, Selector)],
    pkt: &Packet,
    local_wins: bool,
) -> Result<(Bits, Bits), String> {
    let (src, dst) = match pkt.direction {
        Direction::Ingress => (&pkt.peer, &pkt.local),
        Direction::Egress => (&pkt.local, &pkt.peer),
    };
    let (sb, db) = (bits(m, sel, src), bits(m, sel, dst));
    if pkt.src == pkt.dst && sb != db {
        if !local_wins {
            return Err(format!(
                "{} is both ends with different identities",
                pkt.src
            ));
        }
        let local = bits(m, sel, &pkt.local);
        return Ok((local.clone(), local));
    }
    Ok((sb, db))
}

/// Which program judges a packet.
pub fn program(direction: Direction, tc: bool) -> &'static str {
    match (direction, tc) {
        (Direction::Ingress, false) => "cilc_xdp",
        (Direction::Ingress, true) => "cilc_tc_ingress",
        (Direction::Egress, _) => "cilc_tc_egress",
    }
}

/// A loaded object and the identities it currently holds.
pub struct Runner {
    pub obj: Loaded,
    selectors: Vec<(u32, Selector)>,
    held: HashMap<IpAddr, Bits>,
    /// When both ends share an address but not an identity, give the
    /// address the local side's identity (ClassBench traces have such
    /// packets, and their rules never look at identities) instead of
    /// failing.
    pub local_wins: bool,
}

impl Runner {
    pub fn new(obj: Loaded) -> Runner {
        Runner {
            selectors: selectors(&obj.manifest),
            obj,
            held: HashMap::new(),
            local_wins: false,
        }
    }

    /// The identity bits of the packet's source and destination, as the
    /// identity map will give them. Fails when both ends share an address
    /// but not an identity (the map cannot say both).
    pub fn ends(&self, pkt: &Packet) -> Result<(Bits, Bits), String> {
        ends(&self.obj.manifest, &self.selectors, pkt, self.local_wins)
    }

    /// Run one packet. Fails as `ends` does, or when the kernel refuses.
    pub fn judge(&mut self, pkt: &Packet, tc: bool, repeat: u32) -> Result<Judged, String> {
        let (sb, db) = self.ends(pkt)?;
        let world = bits(&self.obj.manifest, &self.selectors, &Identity::World);
        // World is what an unknown address is: it needs no entry.
        let mut want: HashMap<IpAddr, Bits> = HashMap::new();
        for (addr, b) in [(pkt.src, sb), (pkt.dst, db)] {
            if b != world {
                want.insert(addr, b);
            }
        }
        let stale: Vec<IpAddr> = self
            .held
            .iter()
            .filter(|(a, b)| want.get(a) != Some(b))
            .map(|(a, _)| *a)
            .collect();
        for a in stale {
            self.obj.remove_identity(a).map_err(|e| e.to_string())?;
            self.held.remove(&a);
        }
        for (a, b) in want {
            if !self.held.contains_key(&a) {
                self.obj.set_identity(a, &b).map_err(|e| e.to_string())?;
                self.held.insert(a, b);
            }
        }
        let run = self
            .obj
            .run(program(pkt.direction, tc), &frame(pkt), repeat)
            .map_err(|e| e.to_string())?;
        Ok(Judged {
            verdict: if run.reason.passes() {
                Verdict::Allow
            } else {
                Verdict::Drop
            },
            reason: run.reason,
            rule: run.rule,
            duration: run.duration,
        })
    }
}
