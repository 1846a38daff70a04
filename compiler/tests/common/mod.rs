//! Helpers shared by test binaries (each uses some of them).
#![allow(dead_code)]

/// A packet line (see `eval::packet`) from random picks: identities with
/// the labels and named ports the generator uses, addresses in its
/// 10.0.0.0/8 half of the time, TCP/UDP/ICMP and TCP with SYN.
pub fn random_line(pick: (bool, usize, u32, u32, usize, u16, u16, usize)) -> String {
    let (ingress, local, a, b, proto, sport, dport, peer) = pick;
    let ident = [
        "host",
        "world",
        "app=app0,tier=frontend@ns-0[env=prod,team=t0]",
        "app=app1,tier=backend@ns-1+web-1=80",
        "app=app2,tier=web@ns-2+metrics-1=9090",
        "app=app3,tier=backend@ns-3",
    ];
    let v4 = |x: u32| {
        std::net::Ipv4Addr::from(if x & 1 == 0 {
            0x0a00_0000 | (x >> 9)
        } else {
            x
        })
    };
    let l4 = match proto {
        0 => format!("tcp {sport} {}", dport % 2048),
        1 => format!("udp {sport} {dport}"),
        2 => format!("icmp {} 0", sport % 16),
        _ => format!("tcp {sport} {dport} flags syn"),
    };
    format!(
        "{} local {} peer {} {} -> {} {l4}",
        if ingress { "ingress" } else { "egress" },
        ident[if local % 6 == 1 { 0 } else { local % 6 }],
        ident[peer % 6],
        v4(a),
        v4(b)
    )
}

/// The shared ClassBench sets (`../shared/bench/classbench` beside the
/// project), or None after saying plainly that the tests needing them do
/// not run.
pub fn shared() -> Option<std::path::PathBuf> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/bench/classbench");
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!(
            "NOT RUN: {} is absent, so the ClassBench traces cannot be checked here",
            p.display()
        );
        None
    }
}

pub mod cluster;
pub mod netns;

/// The ones' complement sum of 16-bit words, folded (a right checksum
/// makes the sum over the bytes it covers 0xffff).
pub fn ones_sum(b: &[u8]) -> u16 {
    let mut s: u32 = b
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32)
        .sum();
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// An ICMP echo request with identifier `id` from network namespace `ns`
/// to `to`; true when its reply came back within a second.
pub fn ping(ns: &str, to: std::net::Ipv4Addr, id: u16) -> bool {
    let ns = runtime_loader::link::Netns::Name(ns.to_string());
    runtime_loader::link::in_netns(Some(&ns), || Ok(ping_here(to, id))).unwrap()
}

fn ping_here(to: std::net::Ipv4Addr, id: u16) -> bool {
    // SAFETY: plain socket calls on a socket we own.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP);
        assert!(fd >= 0, "raw socket");
        let tv = libc::timeval {
            tv_sec: 1,
            tv_usec: 0,
        };
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const _ as *const _,
            std::mem::size_of_val(&tv) as u32,
        );
        let mut pkt = [
            8u8,
            0,
            0,
            0,
            (id >> 8) as u8,
            id as u8,
            0,
            1,
            1,
            2,
            3,
            4,
            5,
            6,
            7,
            8,
        ];
        let ck = !ones_sum(&pkt);
        pkt[2..4].copy_from_slice(&ck.to_be_bytes());
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(to).to_be(),
            },
            sin_zero: [0; 8],
        };
        libc::sendto(
            fd,
            pkt.as_ptr() as *const _,
            pkt.len(),
            0,
            &addr as *const _ as *const _,
            std::mem::size_of_val(&addr) as u32,
        );
        let mut buf = [0u8; 256];
        let mut got = false;
        for _ in 0..4 {
            let n = libc::recv(fd, buf.as_mut_ptr() as *mut _, buf.len(), 0);
            if n < 28 {
                break;
            }
            let ihl = ((buf[0] & 0x0f) * 4) as usize;
            if buf[ihl] == 0 && u16::from_be_bytes([buf[ihl + 4], buf[ihl + 5]]) == id {
                got = true;
                break;
            }
        }
        libc::close(fd);
        got
    }
}
