//! The runtime loader on real interfaces with real traffic: two network
//! namespaces joined by a veth pair per test (common/netns.rs), policy on
//! `b`'s interface, std sockets on both sides.
//!
//! These tests attach programs: they need root (CI runs as root) and fail,
//! not skip, without it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use runtime_loader::conntrack::{Settings, State, Timeouts};
use runtime_loader::install::{How, Replaced};
use runtime_loader::link::Hook;
use runtime_loader::manifest::Reason;

mod common;
use common::netns::{artifact, Lab, A, B};

/// `b` (app=server) takes TCP 8080, UDP 5353 and pings from `a`
/// (app=frontend), and may open TCP to `a`'s port 9000.
const POLICY: &str = "
select server = app=server
select frontend = app=frontend

policy srv on server {
  ingress {
    allow from frontend tcp 8080 as web
    allow from frontend udp 5353 as lookup
    allow from frontend icmp type echo-request as ping
  }
  egress {
    allow to frontend tcp 9000 as out
    allow to frontend udp 7777 as probe
  }
}
";

const SHORT: Duration = Duration::from_millis(1200);

fn tcp_listen(lab: &Lab, port: u16) -> TcpListener {
    lab.in_b(|| TcpListener::bind((B, port)).unwrap())
}

/// Connect from `a`; `Err` when nothing answers in time.
fn tcp_connect(lab: &Lab, to: SocketAddr) -> std::io::Result<TcpStream> {
    lab.in_a(|| TcpStream::connect_timeout(&to, SHORT))
}

/// One request and its echo over an established connection.
fn echo_once(
    client: &mut TcpStream,
    server: &mut TcpStream,
    msg: &[u8],
) -> std::io::Result<Vec<u8>> {
    client.set_read_timeout(Some(SHORT))?;
    server.set_read_timeout(Some(SHORT))?;
    client.write_all(msg)?;
    let mut buf = vec![0; msg.len()];
    server.read_exact(&mut buf)?;
    server.write_all(&buf)?;
    let mut back = vec![0; msg.len()];
    client.read_exact(&mut back)?;
    Ok(back)
}

fn settings() -> Settings {
    Settings::default()
}

#[test]
fn tcp_through_conntrack_both_ways_at_xdp_and_tc_egress() {
    let lab = Lab::new();
    lab.install(POLICY, settings(), &[Hook::Xdp, Hook::TcEgress]);

    // a → b:8080: policy allows it at ingress; b's answers leave through an
    // egress section that allows only TCP to port 9000: conntrack lets
    // them out.
    let listener = tcp_listen(&lab, 8080);
    let mut client = tcp_connect(&lab, (B, 8080).into()).expect("allowed connect");
    let (mut server, _) = listener.accept().unwrap();
    for i in 0..5u8 {
        let msg = [i; 100];
        assert_eq!(echo_once(&mut client, &mut server, &msg).unwrap(), msg);
    }

    // b → a:9000: egress policy allows it; a's answers enter through an
    // ingress section that does not allow them: conntrack does.
    let a_listener = lab.in_a(|| TcpListener::bind((A, 9000)).unwrap());
    let mut out = lab
        .in_b(|| TcpStream::connect_timeout(&(A, 9000).into(), SHORT))
        .expect("egress connect");
    let (mut peer, _) = a_listener.accept().unwrap();
    assert_eq!(echo_once(&mut out, &mut peer, b"hello").unwrap(), b"hello");

    // Unsolicited: a → b:9001 while b listens there. Policy drops the SYN.
    let _l = tcp_listen(&lab, 9001);
    let e = tcp_connect(&lab, (B, 9001).into()).expect_err("unsolicited connect must fail");
    assert!(
        matches!(
            e.kind(),
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
        ),
        "a dropped SYN times out (no reset is sent): {e}"
    );

    let flows = lab.inst.conntrack().unwrap().flows().unwrap();
    let web = flows
        .iter()
        .find(|f| f.dport == 8080 && f.direction == "ingress")
        .expect("the 8080 flow is tracked");
    assert_eq!(web.state, State::Established);
    assert!(web.packets[1] >= 6, "replies counted: {:?}", web.packets);
    assert!(flows
        .iter()
        .any(|f| f.dport == 9000 && f.direction == "egress"));
    assert!(
        !flows.iter().any(|f| f.dport == 9001),
        "a dropped flow is not tracked"
    );

    let s = lab.inst.stats().unwrap();
    assert!(s.reason("egress", Reason::CtReply) >= 6);
    assert!(s.reason("ingress", Reason::CtReply) >= 2);
    assert!(
        s.reason("ingress", Reason::DefaultDeny) >= 1,
        "{}",
        s.table()
    );
    assert_eq!(s.reason("egress", Reason::DefaultDeny), 0, "{}", s.table());
}

#[test]
fn denied_connect_times_out_at_tc_ingress_and_detach_lets_it_through() {
    let lab = Lab::new();
    lab.install(POLICY, settings(), &[Hook::TcIngress]);
    let _l = tcp_listen(&lab, 8081);
    let e = tcp_connect(&lab, (B, 8081).into()).expect_err("8081 is not allowed");
    assert!(
        matches!(
            e.kind(),
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
        ),
        "{e}"
    );
    let status = lab.inst.status().unwrap();
    assert_eq!(status.attachments.len(), 1);
    assert!(status.attachments[0].attached && status.attachments[0].current);

    let gone = lab.inst.detach(Some(&lab.target(Hook::TcIngress))).unwrap();
    assert_eq!(gone.len(), 1);
    assert!(
        tcp_connect(&lab, (B, 8081).into()).is_ok(),
        "nothing enforces after detach"
    );
    assert!(lab.inst.status().unwrap().attachments.is_empty());
}

#[test]
fn udp_request_response_and_exact_counters() {
    let lab = Lab::new();
    lab.install(POLICY, settings(), &[Hook::XdpGeneric, Hook::TcEgress]);
    let server = lab.in_b(|| UdpSocket::bind((B, 5353)).unwrap());
    let denied = lab.in_b(|| UdpSocket::bind((B, 5354)).unwrap());
    let client = lab.in_a(|| UdpSocket::bind((A, 0)).unwrap());
    for s in [&server, &denied, &client] {
        s.set_read_timeout(Some(SHORT)).unwrap();
    }
    const N: usize = 20;
    const M: usize = 7;
    const LEN: usize = 64;
    for i in 0..N {
        client.send_to(&[i as u8; LEN], (B, 5353)).unwrap();
        let mut buf = [0; 128];
        let (n, from) = server.recv_from(&mut buf).unwrap();
        assert_eq!(n, LEN);
        // The answer leaves b through an egress section that allows only
        // TCP 9000: conntrack passes it.
        server.send_to(&buf[..n], from).unwrap();
        let (m, _) = client.recv_from(&mut buf).unwrap();
        assert_eq!(m, LEN);
    }
    for _ in 0..M {
        client.send_to(&[0xee; LEN], (B, 5354)).unwrap();
    }
    let mut buf = [0; 128];
    assert!(denied.recv_from(&mut buf).is_err(), "5354 is not allowed");

    let frame = (14 + 20 + 8 + LEN) as u64;
    let s = lab.inst.stats().unwrap();
    let dns = s.rules.iter().find(|r| r.name == "srv/lookup").unwrap();
    assert_eq!(
        (dns.packets, dns.bytes),
        (N as u64, N as u64 * frame),
        "{}",
        s.table()
    );
    assert_eq!(
        s.reason("ingress", Reason::MatchedAllow),
        N as u64,
        "{}",
        s.table()
    );
    assert_eq!(
        s.reason("egress", Reason::CtReply),
        N as u64,
        "{}",
        s.table()
    );
    assert_eq!(
        s.reason("ingress", Reason::DefaultDeny),
        M as u64,
        "{}",
        s.table()
    );
    let denied_bytes: u64 = s
        .reasons
        .iter()
        .filter(|r| r.direction == "ingress" && r.reason == "default-deny")
        .map(|r| r.bytes)
        .sum();
    assert_eq!(denied_bytes, M as u64 * frame);
    assert_eq!(s.event("created"), 1, "one UDP flow: {}", s.table());
    // The same counters in the other formats.
    let prom = s.prometheus("lab");
    assert!(
        prom.contains(&format!(
            "cilc_rule_packets_total{{installation=\"lab\",rule=\"srv/lookup\",line=\"8\"}} {N}"
        )),
        "{prom}"
    );
    let json: serde_json::Value = serde_json::from_str(&s.json()).unwrap();
    assert!(json["rules"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["name"] == "srv/lookup" && r["packets"] == N));
}

/// An ICMP echo request from `a` to `b`; true when the reply came back.
fn ping(lab: &Lab, id: u16) -> bool {
    common::ping(&lab.a, B, id)
}

#[test]
fn icmp_echo_follows_policy() {
    let lab = Lab::new();
    lab.install(POLICY, settings(), &[Hook::Xdp, Hook::TcEgress]);
    // The reply leaves through an egress section without ICMP: conntrack.
    assert!(ping(&lab, 0x1234), "an allowed echo gets its reply");
    let s = lab.inst.stats().unwrap();
    assert_eq!(
        s.rules
            .iter()
            .find(|r| r.name == "srv/ping")
            .unwrap()
            .packets,
        1
    );
    assert_eq!(s.reason("egress", Reason::CtReply), 1, "{}", s.table());

    // Without the ping rule, echo requests are dropped.
    let art = artifact(&POLICY.replace("allow from frontend icmp type echo-request as ping", ""));
    lab.inst.replace(&art).unwrap();
    assert!(!ping(&lab, 0x1235), "echo is no longer allowed");
    let s = lab.inst.stats().unwrap();
    assert!(s.reason("ingress", Reason::DefaultDeny) >= 1);
}

#[test]
fn replace_between_tree_and_table_artifacts_changes_the_next_connection() {
    use cilc::codegen::Strategy;
    let lab = Lab::new();
    lab.install(POLICY, settings(), &[Hook::TcIngress]);
    let listener = tcp_listen(&lab, 8080);
    assert!(tcp_connect(&lab, (B, 8080).into()).is_ok(), "tree allows");
    // A table artifact (its nodes copied into the installation's own
    // `cilc_table`) that no longer allows 8080, then one that does.
    let deny = common::netns::artifact_with(
        &POLICY.replace("allow from frontend tcp 8080 as web", ""),
        Strategy::Table,
    );
    assert_eq!(deny.manifest.strategy, "table");
    let r = lab.inst.replace(&deny).unwrap();
    assert!(
        matches!(&r.how, How::Programs { because } if because.contains("code differs")),
        "{r:?}"
    );
    assert!(tcp_connect(&lab, (B, 8080).into()).is_err(), "table denies");
    // Table to table: the same code, so only the data is swapped.
    let r = lab
        .inst
        .replace(&common::netns::artifact_with(POLICY, Strategy::Table))
        .unwrap();
    assert!(matches!(r.how, How::Data { .. }), "{r:?}");
    assert!(tcp_connect(&lab, (B, 8080).into()).is_ok(), "table allows");
    let s = lab.inst.stats().unwrap();
    let web = s.rules.iter().find(|r| r.name == "srv/web").unwrap();
    assert!(web.packets >= 1, "{}", s.table());
    assert_eq!(lab.inst.status().unwrap().record.strategy, "table");
    drop(listener);
}

#[test]
fn replace_keeps_the_programs_only_when_the_data_alone_can_carry_the_change() {
    use cilc::codegen::Strategy;
    let table = |src: &str| common::netns::artifact_with(src, Strategy::Table);
    let lab = Lab::new();
    lab.install_artifact(&table(POLICY), settings(), &[Hook::TcIngress]);
    let listener = tcp_listen(&lab, 8080);
    let ids = |lab: &Lab| -> Vec<u32> {
        let st = lab.inst.status().unwrap();
        assert!(
            st.attachments.iter().all(|a| a.current),
            "{:?}",
            st.attachments
        );
        st.attachments.iter().map(|a| a.program_id).collect()
    };
    let first = ids(&lab);
    assert!(tcp_connect(&lab, (B, 8080).into()).is_ok());
    let web = |lab: &Lab| {
        let s = lab.inst.stats().unwrap();
        s.rules
            .iter()
            .find(|r| r.name == "srv/web")
            .map(|r| r.packets)
    };
    assert!(web(&lab).unwrap() >= 1);

    // A new selector: identities would change meaning → new programs.
    let selector = POLICY.replace(
        "select frontend = app=frontend",
        "select frontend = app=frontend\nselect other = app=other",
    ) + "policy o on other { ingress { allow from frontend tcp 1 } }";
    let r = lab.inst.replace(&table(&selector)).unwrap();
    assert!(
        matches!(&r.how, How::Programs { because } if because.contains("selectors")),
        "{r:?}"
    );
    let second = ids(&lab);
    assert_ne!(first, second);
    assert!(tcp_connect(&lab, (B, 8080).into()).is_ok());

    // Many more rules than the installed maps have room for → new programs.
    let mut big = selector.clone();
    for i in 0..400 {
        big += &format!(
            "policy big{i} on server {{ ingress {{ allow from 10.{}.{}.0/24 tcp {} }} }}\n",
            i / 256,
            i % 256,
            1000 + i
        );
    }
    let r = lab.inst.replace(&table(&big)).unwrap();
    assert!(
        matches!(&r.how, How::Programs { because } if because.contains("room")),
        "{r:?}"
    );
    let third = ids(&lab);
    assert_ne!(second, third);

    // One rule changed (8080 → 8081): data only; the programs stay, the
    // verdict follows the new table, per-rule counters start again.
    let changed = table(&big.replace("tcp 8080 as web", "tcp 8081 as web"));
    let r = lab.inst.replace(&changed).unwrap();
    assert!(matches!(r.how, How::Data { .. }), "{r:?}");
    assert_eq!(ids(&lab), third);
    assert_eq!(web(&lab), Some(0), "counters start again");
    assert!(
        tcp_connect(&lab, (B, 8080).into()).is_err(),
        "8080 no longer allowed"
    );
    let listener2 = tcp_listen(&lab, 8081);
    assert!(tcp_connect(&lab, (B, 8081).into()).is_ok(), "8081 allowed");
    assert!(web(&lab).unwrap() >= 1);
    let st = lab.inst.status().unwrap();
    assert_eq!(st.record.generation, 4);
    assert_eq!(st.record.rules, changed.manifest.rules.len());
    assert_eq!(st.record.artifact_sha256, changed.sha256);

    // An artifact whose code changed but still claims the installed code
    // hash (its license section edited, the object resealed): the claim is
    // checked, so its programs are loaded, not just its data.
    let mut forged = table(&big).bytes;
    let at = forged
        .windows(4)
        .position(|w| w == b"GPL\0")
        .expect("a license string");
    forged[at..at + 4].copy_from_slice(b"MIT\0");
    runtime_loader::manifest::seal_object(&mut forged).unwrap();
    let forged = runtime_loader::Artifact::from_bytes(forged).unwrap();
    assert_eq!(forged.manifest.code_sha256, changed.manifest.code_sha256);
    let r = lab.inst.replace(&forged).unwrap();
    assert!(
        matches!(&r.how, How::Programs { because } if because.contains("does not hash")),
        "{r:?}"
    );
    assert_ne!(ids(&lab), third);
    drop((listener, listener2));
}

#[test]
fn replace_that_denies_an_established_flow_cuts_it_and_deletes_its_entry() {
    let lab = Lab::new();
    lab.install(POLICY, settings(), &[Hook::Xdp, Hook::TcEgress]);
    let listener = tcp_listen(&lab, 8080);
    let mut client = tcp_connect(&lab, (B, 8080).into()).unwrap();
    let (mut server, _) = listener.accept().unwrap();
    assert_eq!(
        echo_once(&mut client, &mut server, b"before").unwrap(),
        b"before"
    );
    let tracked = |lab: &Lab| {
        lab.inst
            .conntrack()
            .unwrap()
            .flows()
            .unwrap()
            .iter()
            .any(|f| f.dport == 8080)
    };
    assert!(tracked(&lab));

    let art = artifact(&POLICY.replace("allow from frontend tcp 8080 as web", ""));
    let r = lab.inst.replace(&art).unwrap();
    assert_eq!(r.swapped, 2);
    assert_eq!(lab.inst.status().unwrap().record.generation, 2);

    // The next segment from a is judged by the new policy: dropped, and
    // the flow's entry goes with it.
    client.write_all(b"after").unwrap();
    server.set_read_timeout(Some(SHORT)).unwrap();
    let mut buf = [0; 5];
    assert!(
        server.read_exact(&mut buf).is_err(),
        "the denied flow is cut"
    );
    assert!(!tracked(&lab), "its conntrack entry is gone");
    let s = lab.inst.stats().unwrap();
    assert!(s.event("deleted-by-policy") >= 1, "{}", s.table());
    // Counters by reason were kept across the replacement.
    assert!(
        s.reason("ingress", Reason::MatchedAllow) >= 3,
        "{}",
        s.table()
    );
}

#[test]
fn replace_under_continuous_traffic_is_atomic() {
    let r = replace_under_traffic(cilc::codegen::Strategy::Tree);
    assert_eq!(r.swapped, 1);
    assert!(matches!(r.how, How::Programs { .. }), "{:?}", r.how);
}

#[test]
fn replace_of_table_data_under_continuous_traffic_is_atomic_and_keeps_the_programs() {
    let r = replace_under_traffic(cilc::codegen::Strategy::Table);
    assert_eq!(r.swapped, 0);
    assert!(matches!(r.how, How::Data { .. }), "{:?}", r.how);
}

/// Replace a policy by another while a client streams to four ports, and
/// check there is one cut-over point and every packet is accounted for.
fn replace_under_traffic(strategy: cilc::codegen::Strategy) -> Replaced {
    // Ports: 7001 both policies allow, 7002 only the old, 7003 only the
    // new, 7004 neither.
    let old = "select server = app=server\nselect frontend = app=frontend\n\
        policy p on server { ingress { allow from frontend udp 7001 allow from frontend udp 7002 } }";
    let new = "select server = app=server\nselect frontend = app=frontend\n\
        policy p on server { ingress { allow from frontend udp 7001 allow from frontend udp 7003 } }";
    let lab = Lab::new();
    lab.install_artifact(
        &common::netns::artifact_with(old, strategy),
        settings(),
        &[Hook::Xdp],
    );
    let before = lab.inst.status().unwrap();
    let new_art = common::netns::artifact_with(new, strategy);
    let mut replaced = None;
    let socks: Vec<UdpSocket> = (7001..=7004)
        .map(|p| {
            let s = lab.in_b(|| UdpSocket::bind((B, p)).unwrap());
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            // Room for the whole stream: a busy machine may leave the
            // readers unscheduled for a while, and a full socket buffer
            // would drop what the policy passed.
            let size: libc::c_int = 8 << 20;
            use std::os::fd::AsRawFd;
            // SAFETY: setsockopt on a socket we own, with an int option.
            let r = unsafe {
                libc::setsockopt(
                    s.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUFFORCE,
                    &size as *const _ as *const libc::c_void,
                    std::mem::size_of_val(&size) as u32,
                )
            };
            assert_eq!(r, 0, "SO_RCVBUFFORCE");
            s
        })
        .collect();
    let client = lab.in_a(|| UdpSocket::bind((A, 0)).unwrap());
    let stop = std::sync::atomic::AtomicBool::new(false);
    let drained = std::sync::atomic::AtomicBool::new(false);
    let (sent, received) = std::thread::scope(|sc| {
        let readers: Vec<_> = socks
            .iter()
            .map(|s| {
                let drained = &drained;
                sc.spawn(move || {
                    let mut seqs = Vec::new();
                    let mut buf = [0; 16];
                    loop {
                        match s.recv(&mut buf) {
                            Ok(8) => seqs.push(u64::from_be_bytes(buf[..8].try_into().unwrap())),
                            Ok(_) => {}
                            Err(_) if drained.load(std::sync::atomic::Ordering::SeqCst) => break,
                            Err(_) => {}
                        }
                    }
                    seqs
                })
            })
            .collect();
        let sender = sc.spawn(|| {
            let mut sent = [0u64; 4];
            let mut seq = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) || seq < 400 {
                let i = (seq % 4) as usize;
                client
                    .send_to(&seq.to_be_bytes(), (B, 7001 + i as u16))
                    .unwrap();
                sent[i] += 1;
                seq += 1;
                std::thread::sleep(Duration::from_micros(200));
            }
            sent
        });
        std::thread::sleep(Duration::from_millis(150));
        replaced = Some(lab.inst.replace(&new_art).unwrap());
        std::thread::sleep(Duration::from_millis(150));
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let sent = sender.join().unwrap();
        drained.store(true, std::sync::atomic::Ordering::SeqCst);
        let received: Vec<Vec<u64>> = readers.into_iter().map(|r| r.join().unwrap()).collect();
        (sent, received)
    });
    assert_eq!(received[3].len(), 0, "both policies deny 7004");
    assert_eq!(
        received[0].len() as u64,
        sent[0],
        "both allow 7001: none dropped"
    );
    let last_old = received[1].iter().max().copied().unwrap_or(0);
    let first_new = received[2].iter().min().copied().unwrap_or(u64::MAX);
    assert!(
        !received[1].is_empty() && !received[2].is_empty(),
        "the swap happened mid-stream"
    );
    assert!(
        last_old < first_new,
        "one cut-over point: 7002 (old only) last at {last_old}, 7003 (new only) first at {first_new}"
    );
    assert!((received[1].len() as u64) < sent[1] && (received[2].len() as u64) < sent[2]);
    // Every packet sent on both sides of the cut over is accounted for.
    let s = lab.inst.stats().unwrap();
    let total: u64 = sent.iter().sum();
    assert_eq!(
        s.reason("ingress", Reason::MatchedAllow) + s.reason("ingress", Reason::DefaultDeny),
        total,
        "{}",
        s.table()
    );
    // What runs is the new artifact, a generation later; the programs
    // were kept only when the data alone changed.
    let after = lab.inst.status().unwrap();
    assert_eq!(after.record.artifact_sha256, new_art.sha256);
    assert_eq!(after.record.generation, before.record.generation + 1);
    let replaced = replaced.unwrap();
    let ids = |st: &runtime_loader::install::Status| {
        st.attachments
            .iter()
            .map(|a| a.program_id)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids(&after) == ids(&before),
        matches!(replaced.how, How::Data { .. }),
        "program ids {:?} → {:?} ({:?})",
        ids(&before),
        ids(&after),
        replaced.how
    );
    replaced
}

#[test]
fn corrupted_or_wrong_layout_artifacts_are_refused_and_the_old_program_keeps_enforcing() {
    let lab = Lab::new();
    lab.install(POLICY, settings(), &[Hook::Xdp]);
    let before = lab.inst.status().unwrap().record.artifact_sha256;
    let good = artifact(&POLICY.replace("tcp 8080", "tcp 8081")).bytes;

    // A byte of code flipped.
    let mut damaged = good.clone();
    let at = damaged.len() / 3;
    damaged[at] ^= 0x40;
    let e = runtime_loader::Artifact::from_bytes(damaged)
        .err()
        .expect("damaged artifact refused");
    assert!(
        e.to_string()
            .contains("does not match the hash sealed in it"),
        "{e}"
    );

    // Another layout version.
    let text = String::from_utf8_lossy(&good).into_owned();
    let layout = format!("\"layout\":{}", runtime_loader::manifest::LAYOUT);
    assert!(text.contains(&layout));
    let mut other = good.clone();
    let at = other
        .windows(layout.len())
        .position(|w| w == layout.as_bytes())
        .unwrap();
    other[at + 9] = b'9';
    let e = runtime_loader::Artifact::from_bytes(other)
        .err()
        .expect("other layout refused");
    assert!(e.to_string().contains("layout 9"), "{e}");

    // A policy that does not load (an artifact with a program the kernel
    // refuses is hard to make; a missing state map is the same path):
    // here the CLI refuses the damaged file before anything changes.
    let status = lab.inst.status().unwrap();
    assert_eq!(status.record.artifact_sha256, before);
    assert!(status.attachments.iter().all(|a| a.attached && a.current));
    let listener = tcp_listen(&lab, 8080);
    let mut client = tcp_connect(&lab, (B, 8080).into()).expect("old policy still allows 8080");
    let (mut server, _) = listener.accept().unwrap();
    assert_eq!(echo_once(&mut client, &mut server, b"x").unwrap(), b"x");
    let _l = tcp_listen(&lab, 8081);
    assert!(
        tcp_connect(&lab, (B, 8081).into()).is_err(),
        "old policy still denies 8081"
    );
}

#[test]
fn a_replacement_the_kernel_refuses_leaves_the_old_programs() {
    let lab = Lab::new();
    // Tables sized differently from what the installation pinned: libbpf
    // cannot reuse the pinned maps, so the load fails before any swap.
    lab.install(
        POLICY,
        Settings {
            ct4_max: 1024,
            ..settings()
        },
        &[Hook::Xdp],
    );
    let before = lab.inst.status().unwrap();
    let mut record_path = lab.inst.run.clone();
    record_path.push("record.json");
    let mut rec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&record_path).unwrap()).unwrap();
    rec["settings"]["ct4_max"] = 2048.into();
    std::fs::write(&record_path, rec.to_string()).unwrap();
    // Another tree (other code: new programs must be loaded).
    let e = lab
        .inst
        .replace(&artifact(&POLICY.replace("tcp 8080", "tcp 8081")))
        .expect_err("a load failure is reported");
    assert!(
        e.to_string().contains("refused") || e.to_string().contains("reuse"),
        "{e}"
    );
    let after = lab.inst.status().unwrap();
    assert_eq!(after.record.artifact_sha256, before.record.artifact_sha256);
    assert_eq!(
        after.attachments[0].program_id,
        before.attachments[0].program_id
    );
    assert!(after.attachments[0].current);
}

#[test]
fn gc_expires_non_tcp_entries_first() {
    let lab = Lab::new();
    let s = Settings {
        timeouts: Timeouts {
            other: Duration::from_secs(2),
            ..Timeouts::default()
        },
        ct4_max: 1024,
        gc_pressure: 0.05,
        ..settings()
    };
    lab.install(POLICY, s, &[Hook::Xdp, Hook::TcEgress]);
    let listener = tcp_listen(&lab, 8080);
    let mut client = tcp_connect(&lab, (B, 8080).into()).unwrap();
    let (mut server, _) = listener.accept().unwrap();
    assert_eq!(
        echo_once(&mut client, &mut server, b"keep").unwrap(),
        b"keep"
    );
    let server_udp = lab.in_b(|| UdpSocket::bind((B, 5353)).unwrap());
    for _ in 0..3 {
        let c = lab.in_a(|| UdpSocket::bind((A, 0)).unwrap());
        c.send_to(b"q", (B, 5353)).unwrap();
    }
    server_udp.set_read_timeout(Some(SHORT)).unwrap();
    let mut buf = [0; 4];
    for _ in 0..3 {
        server_udp.recv(&mut buf).unwrap();
    }
    let ct = lab.inst.conntrack().unwrap();
    assert_eq!(
        ct.flows().unwrap().iter().filter(|f| f.proto == 17).count(),
        3
    );
    std::thread::sleep(Duration::from_millis(2300));
    let g = lab.inst.gc().unwrap().conntrack;
    assert_eq!((g.other, g.tcp), (3, 0), "{g:?}");
    let left = ct.flows().unwrap();
    assert!(
        left.iter().all(|f| f.proto == 6) && left.iter().any(|f| f.dport == 8080),
        "{left:?}"
    );

    // Under pressure (≥ 5% of 1024 entries here), idle non-TCP entries go
    // before they expire; TCP entries stay.
    for _ in 0..80 {
        let c = lab.in_a(|| UdpSocket::bind((A, 0)).unwrap());
        c.send_to(b"q", (B, 5353)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    let udp = ct.flows().unwrap().iter().filter(|f| f.proto == 17).count();
    assert!(udp >= 52, "the table is under pressure: {udp} UDP entries");
    let g = lab.inst.gc().unwrap().conntrack;
    // Idle for 300 ms of a 2 s timeout: removed for the pressure, not
    // expiry (a machine stalled for seconds may expire some first).
    assert_eq!(g.pressure + g.other, udp, "{g:?}");
    assert!(g.pressure > 0 && g.tcp == 0, "{g:?}");
    let left = ct.flows().unwrap();
    assert!(
        left.iter().all(|f| f.proto == 6) && !left.is_empty(),
        "{left:?}"
    );
}

#[test]
fn installation_outlives_its_loader_and_unload_removes_everything() {
    let lab = Lab::new();
    lab.install(POLICY, settings(), &[Hook::Xdp]);
    // Another process would open the same paths: a fresh handle sees it.
    let again = runtime_loader::install::Installation::new(
        &lab.inst.name,
        std::path::Path::new(runtime_loader::install::BPFFS),
        lab.inst.run.parent().unwrap(),
    )
    .unwrap();
    let st = again.status().unwrap();
    assert_eq!(st.attachments.len(), 1);
    assert!(st.attachments[0].attached && st.attachments[0].current);
    // Attaching a second XDP program to the same interface is refused.
    let e = again
        .attach(lab.target(Hook::XdpGeneric))
        .expect_err("one XDP per interface");
    assert!(e.to_string().contains("already attached"), "{e}");
    // A namespace given by path works like one given by name.
    let by_path = runtime_loader::link::Target {
        iface: lab.vb.clone(),
        hook: Hook::TcEgress,
        netns: Some(runtime_loader::link::Netns::parse(&format!(
            "/run/netns/{}",
            lab.b
        ))),
    };
    again.attach(by_path.clone()).unwrap();
    assert!(again
        .status()
        .unwrap()
        .attachments
        .iter()
        .any(|a| a.target == by_path && a.current));
    // A missing interface is named.
    let mut t = lab.target(Hook::TcIngress);
    t.iface = "nosuchif0".into();
    let e = again.attach(t).expect_err("no such interface");
    assert!(e.to_string().contains("no interface `nosuchif0`"), "{e}");
    again.unload().unwrap();
    assert!(!again.pins.exists() && !again.run.exists());
    let _l = tcp_listen(&lab, 8081);
    assert!(
        tcp_connect(&lab, (B, 8081).into()).is_ok(),
        "nothing enforces after unload"
    );
}

/// `cilc ARGS`; with `path`, its tools are looked for there first.
fn cilc_in<A: AsRef<std::ffi::OsStr>>(
    args: &[A],
    path: Option<&std::path::Path>,
) -> (i32, String, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_cilc"));
    cmd.args(args);
    if let Some(dir) = path {
        let rest = std::env::var("PATH").unwrap_or_default();
        cmd.env("PATH", format!("{}:{rest}", dir.display()));
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn cilc(args: &[&str]) -> (i32, String, String) {
    cilc_in(args, None)
}

#[test]
fn the_cli_verbs_on_a_namespace_interface() {
    let lab = Lab::new();
    let dir = lab.inst.run.parent().unwrap().to_path_buf();
    std::fs::create_dir_all(&dir).unwrap();
    let (src, obj, obj2) = (dir.join("p.cpl"), dir.join("p.o"), dir.join("q.o"));
    std::fs::write(&src, POLICY).unwrap();
    let s = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let (code, _, err) = cilc(&["compile", &s(&src), "-o", &s(&obj)]);
    assert_eq!(code, 0, "{err}");
    let name = lab.inst.name.clone();
    let with = |args: &[&str]| lab.place(args);
    let run = |args: Vec<String>| cilc_in(&args, None);
    let (code, out, err) = run(with(&[
        "load",
        &s(&obj),
        "--identity",
        &format!("{A}=app=frontend"),
        "--identity",
        &format!("{B}=app=server"),
    ]));
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("loaded "), "{out}");
    let (code, out, err) = run(with(&[
        "attach", &lab.vb, "--hook", "xdp", "--netns", &lab.b,
    ]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("attached"), "{out}");

    let _l = tcp_listen(&lab, 8080);
    assert!(tcp_connect(&lab, (B, 8080).into()).is_ok());
    let _m = tcp_listen(&lab, 8081);
    assert!(tcp_connect(&lab, (B, 8081).into()).is_err());

    let (code, out, _) = run(with(&["status"]));
    assert_eq!(code, 0);
    assert!(out.contains("enforcing") && out.contains(&lab.vb), "{out}");
    let (_, out, _) = run(with(&["stats", "--prometheus"]));
    assert!(out.contains("# TYPE cilc_packets_total counter"), "{out}");
    assert!(
        out.contains(&format!(
            "cilc_packets_total{{installation=\"{name}\",direction=\"ingress\",reason=\"default-deny\",verdict=\"dropped\"}}"
        )),
        "{out}"
    );
    let (_, out, _) = run(with(&["stats", "--format", "json"]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["rules"][0]["packets"].as_u64().unwrap() >= 1, "{out}");
    let (_, out, _) = run(with(&["stats"]));
    assert!(out.contains("srv/web") && out.contains("RULE"), "{out}");
    let (_, out, _) = run(with(&["conntrack"]));
    assert!(out.contains(&format!("{B}:8080")), "{out}");
    // The same counters over HTTP.
    let port = 20000 + std::process::id() % 20000;
    let addr = format!("127.0.0.1:{port}");
    let mut args = with(&["stats", "--listen", &addr]);
    let args: Vec<&str> = args.iter_mut().map(|a| a.as_str()).collect();
    let mut server = std::process::Command::new(env!("CARGO_BIN_EXE_cilc"))
        .args(&args)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut body = String::new();
    for _ in 0..50 {
        if let Ok(mut c) = TcpStream::connect(&addr) {
            c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            c.read_to_string(&mut body).unwrap();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = server.kill();
    let _ = server.wait();
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
    assert!(body.contains("cilc_rule_packets_total{"), "{body}");

    // Endpoints from the command line.
    let ep = |verb: &str, name: &str| {
        with(&[
            "endpoint",
            verb,
            name,
            "--address",
            "10.77.0.9",
            "--labels",
            "app=extra,tier=x",
            "--port",
            "http=80",
        ])
    };
    let (code, out, err) = run(ep("add", "extra"));
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "added endpoint extra");
    let (code, _, err) = run(ep("add", "extra"));
    assert_eq!(code, 1);
    assert!(
        err.contains("exists; `endpoint update` changes it"),
        "{err}"
    );
    let (code, _, err) = run(ep("update", "nobody"));
    assert_eq!(code, 1);
    assert!(err.contains("`endpoint add` registers it"), "{err}");
    let (_, out, _) = run(with(&["endpoint", "list"]));
    assert!(
        out.contains("extra") && out.contains("app=extra,tier=x") && out.contains("http=80"),
        "{out}"
    );
    let (code, out, _) = run(with(&["endpoint", "remove", "extra"]));
    assert_eq!(code, 0);
    assert!(out.contains("removed endpoint extra"), "{out}");

    // A damaged artifact is refused with the reason; the old one stays.
    let mut bytes = std::fs::read(&obj).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 1;
    std::fs::write(&obj2, bytes).unwrap();
    let (code, _, err) = run(with(&["replace", &s(&obj2)]));
    assert_eq!(code, 1);
    assert!(err.contains("changed or damaged"), "{err}");
    assert!(
        tcp_connect(&lab, (B, 8081).into()).is_err(),
        "still enforcing"
    );

    let (code, out, _) = run(with(&[
        "detach", &lab.vb, "--hook", "xdp", "--netns", &lab.b,
    ]));
    assert_eq!(code, 0);
    assert!(out.contains("detached"), "{out}");
    assert!(tcp_connect(&lab, (B, 8081).into()).is_ok());
    let (code, _, _) = run(with(&["unload"]));
    assert_eq!(code, 0);
    let (code, _, err) = run(with(&["status"]));
    assert_eq!(code, 1, "{err}");
}

#[test]
fn icmp_errors_about_a_tracked_flow_pass_as_related() {
    let lab = Lab::new();
    lab.install(POLICY, settings(), &[Hook::Xdp, Hook::TcEgress]);
    // b → a:7777 (egress allows it); nothing listens on a, whose kernel
    // answers "port unreachable" quoting b's datagram. b's ingress section
    // allows no such ICMP: only conntrack lets it in.
    let sock = lab.in_b(|| {
        let s = UdpSocket::bind((B, 0)).unwrap();
        s.connect((A, 7777)).unwrap();
        s
    });
    sock.set_read_timeout(Some(SHORT)).unwrap();
    sock.send(b"anyone?").unwrap();
    let mut buf = [0; 16];
    let e = sock.recv(&mut buf).expect_err("nothing answers with data");
    assert_eq!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused,
        "the ICMP error reached b: {e}"
    );
    let s = lab.inst.stats().unwrap();
    assert_eq!(s.reason("ingress", Reason::CtRelated), 1, "{}", s.table());
    assert_eq!(s.reason("ingress", Reason::DefaultDeny), 0, "{}", s.table());
}

#[test]
fn audit_mode_passes_what_policy_would_drop_and_counts_it() {
    let lab = Lab::new();
    lab.install(
        POLICY,
        Settings {
            audit: true,
            ..settings()
        },
        &[Hook::Xdp],
    );
    let listener = tcp_listen(&lab, 8081);
    let mut client = tcp_connect(&lab, (B, 8081).into()).expect("audit mode lets it through");
    let (mut server, _) = listener.accept().unwrap();
    assert_eq!(
        echo_once(&mut client, &mut server, b"audited").unwrap(),
        b"audited"
    );
    let s = lab.inst.stats().unwrap();
    assert!(s.reason("ingress", Reason::Audit) >= 3, "{}", s.table());
    assert_eq!(s.reason("ingress", Reason::DefaultDeny), 0, "{}", s.table());
}

mod endpoints {
    //! Endpoints registered on a running installation: labels, addresses
    //! and named ports change the next packet's verdict, with no reload.

    use super::*;
    use runtime_loader::endpoint::EndpointSpec;
    use runtime_loader::install::IdentityEntry;

    fn endpoint(
        name: &str,
        addr: std::net::Ipv4Addr,
        labels: &str,
        ports: &[(&str, u16)],
    ) -> EndpointSpec {
        EndpointSpec {
            name: name.into(),
            addresses: vec![std::net::IpAddr::V4(addr).into()],
            labels: labels
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            namespace: "default".into(),
            namespace_labels: Default::default(),
            named_ports: ports.iter().map(|(n, p)| (n.to_string(), *p)).collect(),
            interface: None,
        }
    }

    /// Install `src` with only `b` known (as app=server), attached at XDP.
    fn install(lab: &Lab, src: &str, settings: Settings) {
        let ids = vec![IdentityEntry::parse(&format!("{B}=app=server")).unwrap()];
        lab.inst
            .load(&artifact(src), settings, ids)
            .unwrap_or_else(|e| panic!("{e}"));
        lab.inst.attach(lab.target(Hook::Xdp)).unwrap();
    }

    #[test]
    fn relabelling_a_peer_flips_the_next_connection_without_a_reload() {
        let lab = Lab::new();
        install(&lab, POLICY, Settings::default());
        let program = lab.inst.status().unwrap().attachments[0].program_id;
        let _l = tcp_listen(&lab, 8080);
        assert!(
            tcp_connect(&lab, (B, 8080).into()).is_err(),
            "a is world: denied"
        );

        let c = lab
            .inst
            .endpoint_set(&[endpoint("a", A, "app=frontend", &[])])
            .unwrap();
        assert_eq!(c.added, vec!["a".to_string()]);
        assert!(
            tcp_connect(&lab, (B, 8080).into()).is_ok(),
            "a is a frontend now"
        );

        let c = lab
            .inst
            .endpoint_set(&[endpoint("a", A, "app=intruder", &[])])
            .unwrap();
        assert_eq!(c.updated, vec!["a".to_string()]);
        assert!(
            tcp_connect(&lab, (B, 8080).into()).is_err(),
            "relabelled: denied"
        );

        lab.inst
            .endpoint_set(&[endpoint("a", A, "app=frontend", &[])])
            .unwrap();
        assert!(tcp_connect(&lab, (B, 8080).into()).is_ok());
        lab.inst.endpoint_remove("a").unwrap();
        assert!(
            tcp_connect(&lab, (B, 8080).into()).is_err(),
            "removed: world again"
        );

        let st = lab.inst.status().unwrap();
        assert_eq!(st.record.generation, 1, "no replace happened");
        assert_eq!(st.attachments[0].program_id, program, "no reload happened");
    }

    #[test]
    fn named_ports_resolve_per_endpoint_and_follow_updates() {
        let policy = "select server = app=server\nselect frontend = app=frontend\n\
            policy srv on server { ingress { allow from frontend tcp named http } }";
        let lab = Lab::new();
        let ids = vec![IdentityEntry::parse(&format!("{A}=app=frontend")).unwrap()];
        lab.inst
            .load(&artifact(policy), Settings::default(), ids)
            .unwrap();
        lab.inst.attach(lab.target(Hook::Xdp)).unwrap();
        // Bulk form: a JSON file.
        let file = lab.inst.run.join("endpoints.json");
        std::fs::write(
            &file,
            format!(r#"[{{"name": "b", "addresses": ["{B}/32"], "labels": {{"app": "server"}}, "named_ports": {{"http": 8080}}}}]"#),
        )
        .unwrap();
        let specs = EndpointSpec::read_file(&file).unwrap();
        lab.inst.endpoint_set(&specs).unwrap();
        let (_l1, _l2) = (tcp_listen(&lab, 8080), tcp_listen(&lab, 8081));
        assert!(
            tcp_connect(&lab, (B, 8080).into()).is_ok(),
            "http is 8080 on b"
        );
        assert!(tcp_connect(&lab, (B, 8081).into()).is_err());

        lab.inst
            .endpoint_set(&[endpoint("b", B, "app=server", &[("http", 8081)])])
            .unwrap();
        assert!(
            tcp_connect(&lab, (B, 8081).into()).is_ok(),
            "http moved to 8081"
        );
        assert!(tcp_connect(&lab, (B, 8080).into()).is_err());
    }

    #[test]
    fn a_full_identity_map_refuses_the_change_and_changes_nothing() {
        let lab = Lab::new();
        install(
            &lab,
            POLICY,
            Settings {
                idents_max: 3,
                ..Settings::default()
            },
        );
        let mut big = endpoint("a", A, "app=frontend", &[]);
        big.addresses.extend(
            ["10.77.1.1/32", "10.77.1.2/32", "10.77.1.3/32"]
                .map(|a| a.parse::<ipnet::IpNet>().unwrap()),
        );
        let e = lab
            .inst
            .endpoint_set(&[big])
            .expect_err("4 + 1 addresses do not fit 3");
        assert!(
            e.to_string().contains("holds 3 addresses")
                && e.to_string().contains("nothing changed"),
            "{e}"
        );
        assert!(lab.inst.record().unwrap().endpoints.is_empty());
        let _l = tcp_listen(&lab, 8080);
        assert!(
            tcp_connect(&lab, (B, 8080).into()).is_err(),
            "a stays world"
        );
        // Two addresses still fit (b + a's two).
        let mut two = endpoint("a", A, "app=frontend", &[]);
        two.addresses.push("10.77.1.1/32".parse().unwrap());
        lab.inst.endpoint_set(&[two]).unwrap();
        assert!(tcp_connect(&lab, (B, 8080).into()).is_ok());
        // An address owned by someone else is refused by name.
        let e = lab
            .inst
            .endpoint_set(&[endpoint("c", A, "app=frontend", &[])])
            .expect_err("a's address");
        assert!(
            e.to_string().contains("already belongs to endpoint `a`"),
            "{e}"
        );
    }
}

#[test]
fn a_host_address_added_at_run_time_gets_host_policy_with_no_command() {
    let policy = "select frontend = app=frontend\n\
        policy node on host { ingress { allow from frontend tcp 8080 } }";
    let lab = Lab::new();
    let ids =
        vec![runtime_loader::install::IdentityEntry::parse(&format!("{A}=app=frontend")).unwrap()];
    lab.inst
        .load(&artifact(policy), Settings::default(), ids)
        .unwrap();
    lab.inst.attach(lab.target(Hook::Xdp)).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let extra = std::net::Ipv4Addr::new(10, 77, 0, 3);
    std::thread::scope(|sc| {
        // The loader follows b's addresses from b's namespace.
        let follower = sc.spawn(|| {
            runtime_loader::link::in_netns(
                Some(&runtime_loader::link::Netns::Name(lab.b.clone())),
                || runtime_loader::host::follow(&lab.inst, &stop, |_, _| {}),
            )
        });
        let ip_addr = |verb: &str| {
            let dev = format!("{extra}/24");
            let args = ["-n", &lab.b, "addr", verb, &dev, "dev", &lab.vb];
            let out = std::process::Command::new("ip")
                .args(args)
                .output()
                .unwrap();
            assert!(out.status.success(), "ip {}", args.join(" "));
        };
        let wait_for = |want: bool| {
            for _ in 0..50 {
                let has = lab
                    .inst
                    .record()
                    .unwrap()
                    .host_addresses
                    .contains(&std::net::IpAddr::V4(extra).into());
                if has == want {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            panic!("the host addresses did not follow (want {extra}: {want})");
        };
        // b's own address is the host's from the first pass.
        for _ in 0..50 {
            if lab
                .inst
                .record()
                .unwrap()
                .host_addresses
                .contains(&std::net::IpAddr::V4(B).into())
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _l = tcp_listen(&lab, 8081);
        assert!(
            tcp_connect(&lab, (B, 8081).into()).is_err(),
            "host ingress allows only 8080"
        );

        // An address added now, by nobody but `ip`.
        ip_addr("add");
        wait_for(true);
        let _m = lab.in_b(|| TcpListener::bind((extra, 8081)).unwrap());
        let _n = lab.in_b(|| TcpListener::bind((extra, 8080)).unwrap());
        assert!(
            lab.in_a(|| TcpStream::connect_timeout(&(extra, 8081).into(), SHORT))
                .is_err(),
            "the new address is the host's: 8081 denied"
        );
        assert!(lab
            .in_a(|| TcpStream::connect_timeout(&(extra, 8080).into(), SHORT))
            .is_ok());

        // Removed: the identity goes with it.
        ip_addr("del");
        wait_for(false);
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        follower.join().unwrap().unwrap();
    });
}

#[test]
fn attach_to_a_container_found_by_id_through_its_runtime() {
    // A fake `docker` on PATH answers `inspect` with the pid of a process
    // living in b's namespace: the runtime lookup is faked, the attach and
    // the traffic are real.
    let lab = Lab::new();
    let mut sleeper = std::process::Command::new("ip")
        .args(["netns", "exec", &lab.b, "sleep", "60"])
        .spawn()
        .unwrap();
    let bin = lab.inst.run.parent().unwrap().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let docker = bin.join("docker");
    std::fs::write(
        &docker,
        format!(
            "#!/bin/sh\n[ \"$1 $4\" = \"inspect c0ffee\" ] && echo {} && exit 0\necho \"Error: No such object: $4\" >&2\nexit 1\n",
            sleeper.id()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&docker, std::fs::Permissions::from_mode(0o755)).unwrap();
    // `ip netns exec` forks the sleeper: wait until it is in b's namespace.
    std::thread::sleep(Duration::from_millis(300));

    let src = lab.inst.run.parent().unwrap().join("p.cpl");
    let obj = lab.inst.run.parent().unwrap().join("p.o");
    std::fs::write(&src, POLICY).unwrap();
    let (code, _, err) = cilc(&[
        "compile",
        src.to_str().unwrap(),
        "-o",
        obj.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let place = |args: &[&str]| cilc_in(&lab.place(args), Some(&bin));
    let (code, _, err) = place(&[
        "load",
        obj.to_str().unwrap(),
        "--identity",
        &format!("{A}=app=frontend"),
        "--identity",
        &format!("{B}=app=server"),
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = place(&[
        "attach",
        &lab.vb,
        "--hook",
        "tc-ingress",
        "--container",
        "nope",
        "--container-runtime",
        "docker",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("No such object: nope"), "{err}");
    let (code, out, err) = place(&[
        "attach",
        &lab.vb,
        "--hook",
        "tc-ingress",
        "--container",
        "c0ffee",
        "--container-runtime",
        "docker",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("(netns pid:{})", sleeper.id())),
        "{out}"
    );
    let _l = tcp_listen(&lab, 8081);
    assert!(
        tcp_connect(&lab, (B, 8081).into()).is_err(),
        "the container's interface enforces"
    );
    let _ = sleeper.kill();
    let _ = sleeper.wait();
}
