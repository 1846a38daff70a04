//! Issue 7 on a small cluster (common/cluster.rs): three pods and a world
//! behind a router, real traffic through std sockets. Label-selector
//! policy between pods, relabelling and named ports live, and source NAT
//! at the router's uplink: what the world sees, replies, distinct
//! mappings, checksums, exhaustion, collection with conntrack.
//!
//! These tests attach programs: they need root (CI runs as root) and fail,
//! not skip, without it.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use runtime_loader::conntrack::{Settings, Timeouts};
use runtime_loader::link::{Hook, Netns, Target};
use runtime_loader::stats::Stats;

mod common;
use common::cluster::{
    inspect, seen_as, world_server, Capture, Cluster, ROUTER4, ROUTER6, WORLD4, WORLD6,
};

/// Pods talk to pods as their ingress policies say; to the world only
/// through `snat` rules.
const POLICY: &str = "
select pod = tier=pod
select a = app=a
select b = app=b
select c = app=c

policy b-in on b {
  ingress {
    allow from a tcp named http as a-to-b
  }
}

policy c-in on c {
  ingress {
    allow from a tcp named http as a-to-c
  }
}

policy out on pod {
  egress {
    allow to pod tcp as east-west
    allow to world tcp 9443 snat as web-out
    allow to world udp 9053 snat as dns-out
    allow to world icmp type echo-request snat as ping-out
  }
}
";

const SHORT: Duration = Duration::from_millis(1000);
const LONG: Duration = Duration::from_secs(5);

fn endpoints(c: &Cluster) -> Vec<runtime_loader::endpoint::EndpointSpec> {
    vec![
        c.endpoint("a", "app=a,tier=pod", &[]),
        c.endpoint("b", "app=b,tier=pod", &[("http", 8080)]),
        c.endpoint("c", "app=c,tier=pod", &[("http", 9090)]),
    ]
}

fn listen(c: &Cluster, pod: &str, port: u16) -> std::net::TcpListener {
    let p = c.pod(pod);
    let addr = SocketAddr::new(IpAddr::V4(p.v4), port);
    c.in_ns(&p.ns, || std::net::TcpListener::bind(addr).unwrap())
}

fn to(c: &Cluster, pod: &str, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(c.pod(pod).v4), port)
}

fn count(s: &Stats, direction: &str, reason: &str) -> u64 {
    s.reasons
        .iter()
        .filter(|r| r.direction == direction && r.reason == reason)
        .map(|r| r.packets)
        .sum()
}

fn event(s: &Stats, name: &str) -> u64 {
    s.conntrack
        .events
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(0, |(_, v)| *v)
}

#[test]
fn label_policy_named_ports_and_relabelling_across_pods() {
    let c = Cluster::new();
    c.install(POLICY, Settings::default(), &endpoints(&c));
    let _b = listen(&c, "b", 8080);
    let _c80 = listen(&c, "c", 8080);
    let _c90 = listen(&c, "c", 9090);

    // a → b on b's `http` (8080): allowed; c → b: denied at b's ingress.
    assert!(c.connect("a", 0, to(&c, "b", 8080), LONG).is_ok());
    assert!(c.connect("c", 0, to(&c, "b", 8080), SHORT).is_err());
    assert!(count(&c.inst.stats().unwrap(), "ingress", "default-deny") > 0);

    // `http` is 9090 on c: the same rule text allows another port there.
    assert!(c.connect("a", 0, to(&c, "c", 9090), LONG).is_ok());
    assert!(c.connect("a", 0, to(&c, "c", 8080), SHORT).is_err());

    // Relabel c as an `a`: its next connection to b passes, with no
    // reload (same programs, same generation).
    let before = c.inst.status().unwrap();
    c.inst
        .endpoint_set(&[c.endpoint("c", "app=a,tier=pod", &[("http", 9090)])])
        .unwrap();
    assert!(c.connect("c", 0, to(&c, "b", 8080), LONG).is_ok());
    let after = c.inst.status().unwrap();
    assert_eq!(before.record.generation, after.record.generation);
    let ids = |s: &runtime_loader::install::Status| {
        s.attachments
            .iter()
            .map(|a| a.program_id)
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&before), ids(&after));
    // And back: denied again.
    c.inst.endpoint_set(&endpoints(&c)[2..]).unwrap();
    assert!(c.connect("c", 0, to(&c, "b", 8080), SHORT).is_err());
}

/// A UDP request from pod `from` (source port `sport`) to the world's
/// echo server; its answer (the source the world saw), if one came.
fn udp_ask(c: &Cluster, from: &str, sport: u16) -> Option<String> {
    let p = c.pod(from);
    c.in_ns(&p.ns, || {
        let s = UdpSocket::bind((p.v4, sport)).unwrap();
        s.set_read_timeout(Some(SHORT)).unwrap();
        s.send_to(b"who", (WORLD4, 9053)).unwrap();
        let mut buf = [0u8; 128];
        s.recv(&mut buf)
            .ok()
            .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
    })
}

/// An ICMP echo request from pod `from` to the world with identifier
/// `id`; true when its reply came back.
fn ping_world(c: &Cluster, from: &str, id: u16) -> bool {
    common::ping(&c.pod(from).ns, WORLD4, id)
}

/// The world's servers: TCP 9443 (both families) answering with the peer
/// it sees, UDP 9053 the same (or sending where it is told).
fn world_servers(c: &Cluster) {
    c.in_ns(&c.world, || {
        world_server(SocketAddr::new(IpAddr::V4(WORLD4), 9443));
        world_server(SocketAddr::new(IpAddr::V6(WORLD6), 9443));
        let u = UdpSocket::bind((WORLD4, 9053)).unwrap();
        std::thread::spawn(move || {
            // `to ADDR:PORT` makes it send there (a packet nobody asked
            // for); anything else is answered with the sender's address.
            let mut buf = [0u8; 128];
            while let Ok((n, peer)) = u.recv_from(&mut buf) {
                let to = std::str::from_utf8(&buf[..n])
                    .ok()
                    .and_then(|m| m.strip_prefix("to "))
                    .and_then(|a| a.parse::<SocketAddr>().ok());
                let _ = match to {
                    Some(to) => u.send_to(b"x", to),
                    None => u.send_to(peer.to_string().as_bytes(), peer),
                };
            }
        });
    });
}

fn nat_settings(ports: (u16, u16)) -> Settings {
    Settings {
        nat_ports: ports,
        timeouts: Timeouts {
            close: Duration::from_secs(1),
            other: Duration::from_secs(1),
            ..Timeouts::default()
        },
        ..Settings::default()
    }
}

#[test]
fn snat_masquerades_pods_to_the_world_and_translates_replies() {
    let c = Cluster::new();
    c.install(POLICY, nat_settings((40000, 40100)), &endpoints(&c));
    world_servers(&c);
    let (nif, hooks) = c
        .inst
        .attach_snat("uplink", Some(&Netns::Name(c.router.clone())), &[])
        .unwrap();
    assert_eq!((nif.v4, nif.v6), (Some(ROUTER4), Some(ROUTER6)));
    assert_eq!(hooks.len(), 2, "tc-egress and tc-ingress on the uplink");
    let capture = c.in_ns(&c.world, || Capture::on("eth0"));

    // Two pods, the same source port, the same destination: the world
    // sees the router's address with two different ports. The first keeps
    // its own port (in the range); the second collides and gets another.
    let world = SocketAddr::new(IpAddr::V4(WORLD4), 9443);
    let mut sa = c.connect("a", 40000, world, LONG).unwrap();
    let mut sc = c.connect("c", 40000, world, LONG).unwrap();
    let seen_a = seen_as(&mut sa).unwrap();
    let seen_c = seen_as(&mut sc).unwrap();
    assert_eq!(seen_a, SocketAddr::new(IpAddr::V4(ROUTER4), 40000));
    assert_eq!(seen_c.ip(), IpAddr::V4(ROUTER4));
    assert!(
        seen_c.port() != 40000 && (40000..=40100).contains(&seen_c.port()),
        "{seen_c}"
    );
    // Replies keep reaching the pods on their mappings.
    assert_eq!(seen_as(&mut sa).unwrap(), seen_a);
    assert_eq!(seen_as(&mut sc).unwrap(), seen_c);

    // IPv6 masquerades to the uplink's IPv6 address.
    let world6 = SocketAddr::new(IpAddr::V6(WORLD6), 9443);
    let mut s6 = c.connect("a", 40000, world6, LONG).unwrap();
    assert_eq!(
        seen_as(&mut s6).unwrap(),
        SocketAddr::new(IpAddr::V6(ROUTER6), 40000)
    );

    // UDP and ICMP echo are translated both ways too.
    assert_eq!(
        udp_ask(&c, "a", 40001).as_deref(),
        Some("198.51.100.1:40001")
    );
    assert!(ping_world(&c, "a", 40002), "echo reply translated back");

    // A pod's traffic the policy allows without `snat` leaves as it is:
    // and the world, with no route back, never answers it (so nothing
    // untranslated shows up as a conversation below).
    let frames = capture.take();
    let seen: Vec<_> = frames.iter().filter_map(|f| inspect(f)).collect();
    assert!(seen.len() >= 12, "{} packets captured", seen.len());
    for s in &seen {
        assert!(s.checksums_ok, "bad checksum after NAT: {s:?}");
        let outside = [
            IpAddr::V4(ROUTER4),
            IpAddr::V6(ROUTER6),
            IpAddr::V4(WORLD4),
            IpAddr::V6(WORLD6),
        ];
        assert!(
            outside.contains(&s.src) && outside.contains(&s.dst),
            "a pod address reached the world: {s:?}"
        );
    }
    assert!(seen
        .iter()
        .any(|s| s.proto == 1 && s.src == IpAddr::V4(ROUTER4) && s.sport == 40002));
    assert!(seen
        .iter()
        .any(|s| s.proto == 17 && s.src == IpAddr::V4(ROUTER4)));
    assert!(seen
        .iter()
        .any(|s| s.proto == 6 && s.src == IpAddr::V6(ROUTER6)));

    // The mappings, as `nat` lists them, and the counters.
    let m = c.inst.nat().unwrap().mappings().unwrap();
    assert_eq!(m.len(), 5, "{m:#?}");
    assert!(m.iter().any(|m| m.flow.src == IpAddr::V4(c.pod("c").v4)
        && m.flow.sport == 40000
        && m.port == seen_c.port()));
    // The same through the CLI.
    let (code, out, err) = c.cilc(&["nat", "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["interfaces"][0]["iface"], "uplink");
    let listed = v["mappings"].as_array().unwrap();
    assert_eq!(listed.len(), 5);
    assert!(listed
        .iter()
        .any(|m| m["port"] == seen_c.port() && m["flow"]["src"] == c.pod("c").v4.to_string()));
    let (_, text, _) = c.cilc(&["nat"]);
    assert!(
        text.contains(&format!("198.51.100.1:{}", seen_c.port())),
        "{text}"
    );
    let (_, prom, _) = c.cilc(&["stats", "--prometheus"]);
    assert!(
        prom.contains("cilc_nat_mappings{") && prom.contains("table=\"snat\"} 5"),
        "{prom}"
    );
    assert!(prom.contains("reason=\"nat-exhausted\""), "{prom}");
    let stats = c.inst.stats().unwrap();
    assert_eq!(event(&stats, "nat-created"), 5);
    assert!(event(&stats, "nat-collision") >= 1);
    assert_eq!(count(&stats, "egress", "nat-exhausted"), 0);

    // Flows end; conntrack expires them; one GC pass takes their mappings.
    drop((sa, sc, s6));
    std::thread::sleep(Duration::from_millis(3500));
    let g = c.inst.gc().unwrap();
    assert!(g.conntrack.tcp + g.conntrack.other >= 5, "{g:?}");
    assert_eq!(g.nat.mappings, 5, "{g:?}");
    assert_eq!(c.inst.nat().unwrap().len(), (0, 0));

    // The uplink's address changes: masquerade follows it (the host
    // watcher runs this on every change).
    let ip = |args: &[&str]| {
        let ok = std::process::Command::new("ip")
            .args(args)
            .status()
            .unwrap()
            .success();
        assert!(ok, "ip {args:?}");
    };
    // (Deleting a primary address deletes the secondaries of its subnet:
    // the old one goes first.)
    for (verb, addr) in [("del", "198.51.100.1/24"), ("add", "198.51.100.9/24")] {
        ip(&["-n", &c.router, "addr", verb, addr, "dev", "uplink"]);
    }
    let changed = c.inst.nat_refresh().unwrap();
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].v4, Some("198.51.100.9".parse().unwrap()));
    assert!(c.inst.nat_refresh().unwrap().is_empty(), "nothing new");
    let mut s = c.connect("a", 0, world, LONG).unwrap();
    assert_eq!(
        seen_as(&mut s).unwrap().ip(),
        "198.51.100.9".parse::<IpAddr>().unwrap()
    );
}

#[test]
fn snat_exhaustion_is_counted_and_leaves_existing_flows_alone() {
    let c = Cluster::new();
    // Two ports to allocate from.
    c.install(POLICY, nat_settings((40000, 40001)), &endpoints(&c));
    world_servers(&c);
    let router = Netns::Name(c.router.clone());
    c.inst.attach_snat("uplink", Some(&router), &[]).unwrap();

    let world = SocketAddr::new(IpAddr::V4(WORLD4), 9443);
    let mut sa = c.connect("a", 40000, world, LONG).unwrap();
    let mut sc = c.connect("c", 40000, world, LONG).unwrap();
    let (seen_a, seen_c) = (seen_as(&mut sa).unwrap(), seen_as(&mut sc).unwrap());
    assert_eq!((seen_a.port(), seen_c.port()), (40000, 40001));

    // A third flow to the same destination finds no port: dropped and
    // counted, never sent with the pod's own address.
    assert!(c.connect("a", 40005, world, SHORT).is_err());
    let stats = c.inst.stats().unwrap();
    assert!(count(&stats, "egress", "nat-exhausted") >= 1);
    assert!(event(&stats, "nat-collision") >= 32);

    // The flows that had mappings keep them.
    assert_eq!(seen_as(&mut sa).unwrap(), seen_a);
    assert_eq!(seen_as(&mut sc).unwrap(), seen_c);
    // Another destination port is another tuple: ports are free there.
    assert_eq!(
        udp_ask(&c, "a", 40000).as_deref(),
        Some("198.51.100.1:40000")
    );

    // A replacement swaps the translating programs too (they were loaded
    // when the interface began to translate) and keeps the mappings.
    let v2 = POLICY.replace("as dns-out", "as dns-out\n    allow to world tcp 9444 snat");
    let r = c.inst.replace(&common::netns::artifact(&v2)).unwrap();
    assert_eq!(r.swapped, 8, "six pod hooks and two on the uplink");
    let status = c.inst.status().unwrap();
    assert!(status.attachments.iter().all(|a| a.current), "{status:?}");
    assert_eq!(seen_as(&mut sa).unwrap(), seen_a);
    assert_eq!(seen_as(&mut sc).unwrap(), seen_c);

    // XDP on the translating interface would judge replies before TC
    // translates them back: refused. So is a second registration.
    let xdp = Target {
        iface: "uplink".into(),
        hook: Hook::XdpGeneric,
        netns: Some(router.clone()),
    };
    let e = c.inst.attach(xdp).unwrap_err().to_string();
    assert!(e.contains("source-NATs"), "{e}");
    assert!(c.inst.attach_snat("uplink", Some(&router), &[]).is_err());

    // Detaching a hook of the interface detaches both and stops its
    // translation (a lone egress hook would translate one way only).
    let gone = c
        .inst
        .detach(Some(&Target {
            iface: "uplink".into(),
            hook: Hook::TcIngressSnat,
            netns: Some(router.clone()),
        }))
        .unwrap();
    assert_eq!(gone.len(), 2, "{gone:?}");
    assert_eq!(gone[0].hook, Hook::TcEgressSnat, "egress goes first");
    let record = c.inst.record().unwrap();
    assert!(record.nat.is_empty());
    assert!(record.attachments.iter().all(|a| a.target.iface == "eth0"));
    let mut buf = [0u8; 1];
    sa.write_all(b"who\n").unwrap();
    sa.set_read_timeout(Some(SHORT)).unwrap();
    assert!(sa.read(&mut buf).is_err(), "no translation back any more");
}

#[test]
fn snat_fails_closed_under_audit_for_forgotten_flows_and_pod_icmp_errors() {
    let c = Cluster::new();
    // Audit mode, and one port to allocate from.
    let settings = Settings {
        audit: true,
        ..nat_settings((40000, 40000))
    };
    c.install(POLICY, settings, &endpoints(&c));
    world_servers(&c);
    c.inst
        .attach_snat("uplink", Some(&Netns::Name(c.router.clone())), &[])
        .unwrap();
    let capture = c.in_ns(&c.world, || Capture::on("eth0"));
    let world = SocketAddr::new(IpAddr::V4(WORLD4), 9443);
    let _sa = c.connect("a", 40000, world, LONG).unwrap();

    // Audit passes what policy would drop, never what NAT cannot
    // translate: the second flow finds no port and is dropped.
    assert!(c.connect("c", 40000, world, SHORT).is_err());
    let stats = c.inst.stats().unwrap();
    assert!(count(&stats, "egress", "nat-exhausted") >= 1);

    // A UDP flow of a's, mapped; then conntrack forgets it. A packet the
    // world sends to the mapping is not handed to a as a new flow.
    let a = c.pod("a");
    let sock = c.in_ns(&a.ns, || UdpSocket::bind((a.v4, 40001)).unwrap());
    sock.set_read_timeout(Some(SHORT)).unwrap();
    sock.send_to(b"who", (WORLD4, 9053)).unwrap();
    let mut buf = [0u8; 64];
    let n = sock.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"198.51.100.1:40000");
    let ct = c.inst.conntrack().unwrap();
    for f in ct.flows().unwrap().iter().filter(|f| f.proto == 17) {
        ct.remove(f).unwrap();
    }
    // The world's echo server sends from 9053 to the mapping, unasked.
    let unsolicited = || {
        c.in_ns(&c.world, || {
            let s = UdpSocket::bind((WORLD4, 0)).unwrap();
            s.send_to(b"to 198.51.100.1:40000", (WORLD4, 9053)).unwrap();
        })
    };
    let before = count(&c.inst.stats().unwrap(), "ingress", "nat-unsupported");
    unsolicited();
    assert!(
        sock.recv(&mut buf).is_err(),
        "a got a packet of a forgotten flow"
    );
    let after = count(&c.inst.stats().unwrap(), "ingress", "nat-unsupported");
    assert!(after > before, "{before} → {after}");

    // a's flow again (conntrack has it), then a closes its socket: the
    // world's next packet reaches a, whose kernel answers with an ICMP
    // port unreachable quoting the translated flow. It must not leave
    // with a's address (inside or outside).
    sock.send_to(b"who", (WORLD4, 9053)).unwrap();
    assert!(sock.recv(&mut buf).is_ok());
    drop(sock);
    let before = count(&c.inst.stats().unwrap(), "egress", "nat-unsupported");
    unsolicited();
    std::thread::sleep(Duration::from_millis(300));
    let after = count(&c.inst.stats().unwrap(), "egress", "nat-unsupported");
    assert!(
        after > before,
        "the pod's ICMP error was not dropped: {before} → {after}"
    );

    for f in capture.take() {
        if let Some(s) = inspect(&f) {
            let pods =
                ["10.80.1.2", "10.80.2.2", "10.80.3.2"].map(|p| p.parse::<IpAddr>().unwrap());
            assert!(
                !pods.contains(&s.src) && !pods.contains(&s.dst),
                "a pod address reached the world: {s:?}"
            );
        }
    }
}

#[test]
fn snat_needs_connection_tracking() {
    let c = Cluster::new();
    c.install(
        POLICY,
        Settings {
            conntrack: false,
            ..Settings::default()
        },
        &endpoints(&c),
    );
    let e = c
        .inst
        .attach_snat("uplink", Some(&Netns::Name(c.router.clone())), &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("connection tracking"), "{e}");
    assert!(c.inst.record().unwrap().nat.is_empty());
    // The CLI says the same, and what --snat goes with.
    let attach = |hook: &str, snat: bool| {
        let mut args = vec!["attach", "uplink", "--hook", hook, "--netns", &c.router];
        if snat {
            args.push("--snat");
        }
        c.cilc(&args)
    };
    let (code, _, err) = attach("tc-egress", true);
    assert!(code == 1 && err.contains("connection tracking"), "{err}");
    let (code, _, err) = attach("tc-ingress", true);
    assert!(code == 1 && err.contains("--hook tc-egress"), "{err}");
    let (code, _, err) = attach("tc-egress-snat", false);
    assert!(code == 1 && err.contains("--snat"), "{err}");
    assert!(c
        .inst
        .record()
        .unwrap()
        .attachments
        .iter()
        .all(|a| a.target.iface == "eth0"));
}
