//! Packets as Ethernet frames, for running them through compiled programs.
//!
//! `frame(pkt)` lays out what `eval::Packet` describes: Ethernet, IPv4 or
//! IPv6 (a fragment header for IPv6 fragments), then the L4 header (TCP
//! with `tcp_flags` as its data-offset-and-flags word, data offset 5 when
//! the word leaves it 0; UDP, SCTP,
//! ICMP/ICMPv6, or 8 bytes of payload for other protocols). A later
//! fragment carries 8 bytes of payload and no L4 header. A malformed packet
//! is cut in the middle of its IP header.

use std::net::IpAddr;

use super::{Fragment, Packet};

const ETH: usize = 14;

/// TCP's data-offset-and-flags word as a frame carries `tcp_flags`: data
/// offset 5 where the word leaves it 0.
pub fn tcp_word(flags: u16) -> u16 {
    match flags >> 12 {
        0 => 0x5000 | flags,
        _ => flags,
    }
}

fn l4(pkt: &Packet) -> Vec<u8> {
    if pkt.fragment == Fragment::Later {
        return vec![0; 8];
    }
    let mut h = Vec::new();
    match pkt.proto {
        6 => {
            h.extend_from_slice(&pkt.sport.to_be_bytes());
            h.extend_from_slice(&pkt.dport.to_be_bytes());
            h.extend_from_slice(&[0; 8]); // sequence, acknowledgement
            let word = tcp_word(pkt.tcp_flags);
            h.extend_from_slice(&word.to_be_bytes());
            h.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]); // window, checksum, urgent
        }
        17 => {
            h.extend_from_slice(&pkt.sport.to_be_bytes());
            h.extend_from_slice(&pkt.dport.to_be_bytes());
            h.extend_from_slice(&8u16.to_be_bytes());
            h.extend_from_slice(&[0, 0]);
        }
        132 => {
            h.extend_from_slice(&pkt.sport.to_be_bytes());
            h.extend_from_slice(&pkt.dport.to_be_bytes());
            h.extend_from_slice(&[0; 8]); // verification tag, checksum
        }
        1 | 58 => {
            h.extend_from_slice(&[pkt.icmp_type, pkt.icmp_code]);
            h.extend_from_slice(&[0; 6]);
        }
        _ => h.extend_from_slice(&[0; 8]),
    }
    h
}

fn checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The frame of a packet.
pub fn frame(pkt: &Packet) -> Vec<u8> {
    let payload = l4(pkt);
    let mut f = vec![0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01];
    let ip_len;
    match (pkt.src, pkt.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            f.extend_from_slice(&[0x08, 0x00]);
            let total = (20 + payload.len()) as u16;
            let frag: u16 = match pkt.fragment {
                Fragment::None => 0,
                Fragment::First => 0x2000,
                Fragment::Later => 1,
            };
            let mut ip = vec![0x45, 0];
            ip.extend_from_slice(&total.to_be_bytes());
            ip.extend_from_slice(&[0x12, 0x34]);
            ip.extend_from_slice(&frag.to_be_bytes());
            ip.extend_from_slice(&[64, pkt.proto, 0, 0]);
            ip.extend_from_slice(&s.octets());
            ip.extend_from_slice(&d.octets());
            let c = checksum(&ip);
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            ip_len = ip.len();
            f.extend_from_slice(&ip);
        }
        (s, d) => {
            let v6 = |a: IpAddr| match a {
                IpAddr::V6(a) => a,
                IpAddr::V4(a) => a.to_ipv6_mapped(),
            };
            f.extend_from_slice(&[0x86, 0xdd]);
            let mut ext = Vec::new();
            let mut next = pkt.proto;
            if pkt.fragment != Fragment::None {
                let off: u16 = if pkt.fragment == Fragment::Later {
                    8
                } else {
                    1
                };
                ext.extend_from_slice(&[pkt.proto, 0]);
                ext.extend_from_slice(&off.to_be_bytes());
                ext.extend_from_slice(&[0, 0, 0x12, 0x34]);
                next = 44;
            }
            let plen = (ext.len() + payload.len()) as u16;
            let mut ip = vec![0x60, 0, 0, 0];
            ip.extend_from_slice(&plen.to_be_bytes());
            ip.extend_from_slice(&[next, 64]);
            ip.extend_from_slice(&v6(s).octets());
            ip.extend_from_slice(&v6(d).octets());
            ip.extend_from_slice(&ext);
            ip_len = 40;
            f.extend_from_slice(&ip);
        }
    }
    f.extend_from_slice(&payload);
    if pkt.malformed {
        f.truncate(ETH + ip_len / 2);
    }
    f
}
