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
