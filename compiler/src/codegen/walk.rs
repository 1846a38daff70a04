//! The table walked in user space, node for node as `cilc_walk`
//! (stdlib-bpf/cilc.c) walks it in the kernel.
//!
//! Stage: **(table nodes, `Input`) → `Walked`**: the classifier's decision
//! code (`(rule + 1) << 4 | reason`) and how many nodes the walk visited.
//! A second oracle for the table strategy (it must decide as the
//! evaluator and the kernel do), and a count of visits that does not
//! depend on the machine's noise: `cilc bench` reports it per packet
//! beside the time.

use runtime_loader::identity::Bits;
use runtime_loader::manifest::{NAMED_PORTS, PRED_WORDS};

use super::table::{
    TNode, ANY, ANY_FLIP_SHIFT, BIT, ENTRY, FLAGS, GUARD, HEAD, JUMP, LAST, LEAF, NONE, POLICY,
    PORT, SPLIT, SPLIT2, SPLIT2_PRIO_SHIFT,
};
use super::{CHAIN_DROP, DEFAULT_DENY, NO_POLICY};
use crate::eval::Packet;
use crate::resolve::Direction;

/// What the classifier reads of a packet (`struct cilc_ctx`).
#[derive(Debug, Clone)]
pub struct Input {
    /// 0 ingress, 1 egress.
    pub direction: u32,
    pub v6: bool,
    /// Source, destination, protocol, ports, ICMP type and code
    /// (`tree::key`).
    pub fields: [u128; 7],
    /// The TCP header's offset-and-flags word (0 for other protocols).
    pub tcp_flags: u16,
    pub src: Bits,
    pub dst: Bits,
}

impl Input {
    /// A packet the parser classifies, with its ends' identities. Fields
    /// as the parser reads them: ports of TCP, UDP and SCTP only, type
    /// and code of ICMP only, else 0.
    pub fn new(pkt: &Packet, src: Bits, dst: Bits) -> Input {
        let mut fields = crate::tree::key(pkt);
        if !matches!(pkt.proto, 6 | 17 | 132) {
            (fields[3], fields[4]) = (0, 0);
        }
        if !matches!(pkt.proto, 1 | 58) {
            (fields[5], fields[6]) = (0, 0);
        }
        Input {
            direction: u32::from(pkt.direction == Direction::Egress),
            v6: pkt.src.is_ipv6(),
            fields,
            tcp_flags: match pkt.proto {
                6 => crate::eval::frame::tcp_word(pkt.tcp_flags),
                _ => 0,
            },
            src,
            dst,
        }
    }
}

impl Input {
    /// The predicate bits of end `field` (0 source, else destination).
    fn end(&self, field: u8) -> &[u64; PRED_WORDS] {
        if field != 0 {
            &self.dst.bits
        } else {
            &self.src.bits
        }
    }
}

/// A walk's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Walked {
    /// The decision code (as the generated classifier returns it).
    pub code: u32,
    /// Nodes visited below the entries (heads and entries not counted).
    pub visits: u32,
}

/// Most nodes one walk may visit (a table with a longer walk is refused).
const MAX_VISITS: u32 = super::WALK_MAX as u32;

struct State<'a> {
    nodes: &'a [TNode],
    inp: &'a Input,
    /// `walk_fields`: the fields as 32-bit values (an address past 32
    /// bits reads as `u32::MAX`), and 0 at index 7.
    v: [u32; 8],
    entry: u32,
    end: u32,
    flags: u32,
    best: u32,
    best_prio: u32,
    accepted: u32,
    result: u32,
}

/// Walk `nodes` (a whole table, heads first) for `inp`. Fails where the
/// kernel's walk would drop the packet as damaged (a node out of range or
/// of the wrong kind), or on a walk longer than the compiler allows
/// (`WALK_MAX`: the kernel's loop would end it later, as default-deny).
pub fn walk(nodes: &[TNode], inp: &Input) -> Result<Walked, String> {
    let narrow = |x: u128| u32::try_from(x).unwrap_or(u32::MAX);
    let f = &inp.fields;
    let head = 1 + (inp.direction & 1) * 2 + u32::from(inp.v6);
    let h = node(nodes, head)?;
    if h.kind != HEAD {
        return Err(format!("node {head} is no head"));
    }
    let mut w = State {
        nodes,
        inp,
        v: [
            narrow(f[0]),
            narrow(f[1]),
            f[2] as u32,
            f[3] as u32,
            f[4] as u32,
            f[5] as u32,
            f[6] as u32,
            0,
        ],
        entry: h.a,
        end: h.a + h.b,
        flags: 0,
        best: 0,
        best_prio: u32::MAX,
        accepted: 0,
        result: DEFAULT_DENY,
    };
    let mut visits = 0;
    let mut at = w.enter()?;
    while at != 0 {
        visits += 1;
        if visits > MAX_VISITS {
            return Err(format!("a walk of more than {MAX_VISITS} nodes"));
        }
        at = w.step(node(nodes, at)?)?;
    }
    Ok(Walked {
        code: w.result,
        visits,
    })
}

fn node(nodes: &[TNode], i: u32) -> Result<&TNode, String> {
    nodes
        .get(i as usize)
        .ok_or_else(|| format!("node {i} is past the table's {}", nodes.len()))
}

impl State<'_> {
    /// The node after `n` (0: the walk is over).
    fn step(&mut self, n: &TNode) -> Result<u32, String> {
        let c = self.inp;
        Ok(match n.kind {
            SPLIT2 => match (u32::from(n.arg) >> 3 << SPLIT2_PRIO_SHIFT) >= self.best_prio {
                true => NONE,
                false => self.split2(n),
            },
            SPLIT if n.c >= self.best_prio => NONE,
            SPLIT | JUMP => self.split(n)?,
            LEAF => {
                if n.a != 0 && n.b < self.best_prio {
                    (self.best, self.best_prio) = (n.a, n.b);
                }
                self.entry += 1;
                if self.flags & LAST != 0 && self.diagram_done() {
                    return Ok(0);
                }
                self.enter()?
            }
            BIT => pick(n, bit(c, n.field, u32::from(n.arg))),
            PORT => {
                let named = c.dst.ports[usize::from(n.arg) & (NAMED_PORTS - 1)];
                pick(n, named != 0 && named == c.fields[4] as u16)
            }
            FLAGS => pick(n, u32::from(c.tcp_flags & n.arg) == n.c),
            ANY => {
                let q = usize::from(n.arg) & (PRED_WORDS - 1);
                let flip = u64::from(n.arg >> ANY_FLIP_SHIFT);
                let bits = c.end(n.field);
                let (lo, hi) = (n.cut as u64, (n.cut >> 64) as u64);
                let m0 = (bits[q] ^ flip) & lo;
                let m1 = bits[(q + 1) & (PRED_WORDS - 1)] & hi;
                if m0.count_ones() == 1 && m1 == 0 {
                    n.c + (lo & (m0 - 1)).count_ones()
                } else if m0 == 0 && m1.count_ones() == 1 {
                    n.c + lo.count_ones() + (hi & (m1 - 1)).count_ones()
                } else {
                    pick(n, m0 | m1 != 0)
                }
            }
            k => return Err(format!("a node of kind {k} in a walk")),
        })
    }

    /// `walk_split`: a split's or a jump's next node.
    fn split(&self, n: &TNode) -> Result<u32, String> {
        let value = match n.field {
            f @ 0..=1 => self.inp.fields[usize::from(f)],
            f @ 2..=6 => u128::from(self.v[usize::from(f)]),
            f => return Err(format!("a split of field {f}")),
        };
        if value < n.cut {
            return Ok(n.a);
        }
        if n.kind == SPLIT {
            return Ok(n.b);
        }
        // The shift's bit 6 is 64 (cilc.c shifts the high half then).
        let (shift, count) = (u32::from(n.arg & 127), u32::from(n.arg >> 7));
        let slot = (value - n.cut) >> shift;
        Ok(match slot < u128::from(count) {
            true => n.c + slot as u32,
            false => n.b,
        })
    }

    /// `walk_split2`.
    fn split2(&self, n: &TNode) -> u32 {
        let v = &self.v;
        let (c0, c1) = ((n.cut >> 64) as u64, n.cut as u64);
        let f = usize::from(n.field);
        if v[f & 7] < (c0 >> 32) as u32 {
            return if v[(f >> 3) & 7] < c0 as u32 {
                n.a
            } else {
                n.b
            };
        }
        if v[usize::from(n.arg) & 7] < c1 as u32 {
            n.c
        } else {
            (c1 >> 32) as u32
        }
    }

    /// `walk_enter`: the next entry's root, or 0 to stop.
    fn enter(&mut self) -> Result<u32, String> {
        if self.entry >= self.end {
            self.result = if self.accepted != 0 {
                self.accepted
            } else {
                NO_POLICY
            };
            return Ok(0);
        }
        let mut en = *node(self.nodes, self.entry)?;
        if en.kind != ENTRY {
            return Err(format!("node {} is no entry", self.entry));
        }
        self.flags = en.b;
        if en.b & GUARD != 0 {
            let skip = en.cut as u64;
            let run = (skip & 0xff_ffff) as u32;
            if run == 0 {
                return Err(format!("entry {} guards no run", self.entry));
            }
            let b = u32::from(en.arg) & (PRED_WORDS as u32 * 64 - 1);
            let word = self.inp.end(en.field)[(b / 64) as usize];
            if (word >> (b % 64)) & 1 == 0 {
                let later = word & (en.cut >> 64) as u64;
                if later != 0 {
                    let at = (skip >> 32) as u32 + later.trailing_zeros();
                    en = *node(self.nodes, at)?;
                    if en.kind != ENTRY {
                        return Err(format!("slot {at} is no entry"));
                    }
                    self.entry = en.cut as u32;
                    self.flags = en.b;
                } else {
                    self.entry += run - 1;
                    self.flags = ((skip >> 24) & 0xff) as u32;
                    return Ok(NONE);
                }
            }
        }
        Ok(if en.c >= self.best_prio { NONE } else { en.a })
    }

    /// `walk_diagram_done`: true when the hook's decision is made.
    fn diagram_done(&mut self) -> bool {
        let best = std::mem::take(&mut self.best);
        self.best_prio = u32::MAX;
        if self.flags & POLICY != 0 {
            self.result = match (best, self.accepted) {
                (0, 0) => NO_POLICY,
                (0, a) => a,
                (b, _) => b,
            };
            return true;
        }
        if best & 0x0f == CHAIN_DROP {
            self.result = best;
            return true;
        }
        if best != 0 && self.accepted == 0 {
            self.accepted = best;
        }
        false
    }
}

fn pick(n: &TNode, yes: bool) -> u32 {
    if yes {
        n.a
    } else {
        n.b
    }
}

/// Predicate bit `arg` of end `field` (0 source, else destination).
fn bit(c: &Input, field: u8, arg: u32) -> bool {
    let b = arg & (PRED_WORDS as u32 * 64 - 1);
    (c.end(field)[(b / 64) as usize] >> (b % 64)) & 1 == 1
}
