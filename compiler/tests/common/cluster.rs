//! A small cluster made for one test and removed when it ends (also when
//! it fails): three pods (`a`, `b`, `c`), each a network namespace with an
//! `eth0` towards a router namespace, and a `world` namespace behind the
//! router's uplink. Dual stack:
//!
//! ```text
//! pod a 10.80.1.2 fd80:1::2 ─┐
//! pod b 10.80.2.2 fd80:2::2 ─┼─ router ── uplink 198.51.100.1 2001:db8:100::1 ── world 198.51.100.2 2001:db8:100::2
//! pod c 10.80.3.2 fd80:3::2 ─┘
//! ```
//!
//! The world has no route to the pods: only what is source-NATed to the
//! router's uplink address gets a reply. Checksum offload is off on every
//! interface, so packets carry full checksums and a wrong NAT checksum
//! update is dropped by the receiver. Neighbours are static (no ARP or
//! neighbour discovery for policy to judge).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::os::fd::FromRawFd;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use runtime_loader::conntrack::Settings;
use runtime_loader::endpoint::EndpointSpec;
use runtime_loader::install::{Installation, BPFFS};
use runtime_loader::link::{in_netns, Hook, Netns, Target};

use super::netns::{artifact, mac};

static NEXT: AtomicU32 = AtomicU32::new(0);

pub const ROUTER4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
pub const WORLD4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
pub const ROUTER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1);
pub const WORLD6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 2);

pub struct Pod {
    pub name: &'static str,
    pub ns: String,
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
}

pub struct Cluster {
    pub pods: Vec<Pod>,
    pub router: String,
    pub world: String,
    pub inst: Installation,
    run: PathBuf,
}

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("`{cmd}` is needed (scripts/apt-packages.txt): {e}"));
    assert!(
        out.status.success(),
        "{cmd} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ip(args: &[&str]) {
    run("ip", args);
}

/// Both ends of a veth pair made inside two namespaces: addresses, up,
/// checksum offload off, static neighbours both ways.
fn wire(
    (ns1, dev1, a4, a6): (&str, &str, Ipv4Addr, Ipv6Addr),
    (ns2, dev2, b4, b6): (&str, &str, Ipv4Addr, Ipv6Addr),
) {
    ip(&[
        "-n", ns1, "link", "add", dev1, "type", "veth", "peer", "name", dev2, "netns", ns2,
    ]);
    for (ns, dev, v4, v6) in [(ns1, dev1, a4, a6), (ns2, dev2, b4, b6)] {
        ip(&["-n", ns, "addr", "add", &format!("{v4}/24"), "dev", dev]);
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{v6}/64"),
            "dev",
            dev,
            "nodad",
        ]);
        ip(&["-n", ns, "link", "set", dev, "up"]);
        run(
            "ip",
            &[
                "netns", "exec", ns, "ethtool", "-K", dev, "tx", "off", "rx", "off",
            ],
        );
    }
    let (m1, m2) = (mac(ns1, dev1), mac(ns2, dev2));
    for (ns, dev, peer4, peer6, m) in [(ns1, dev1, b4, b6, &m2), (ns2, dev2, a4, a6, &m1)] {
        for peer in [peer4.to_string(), peer6.to_string()] {
            ip(&[
                "-n",
                ns,
                "neigh",
                "replace",
                &peer,
                "lladdr",
                m,
                "dev",
                dev,
                "nud",
                "permanent",
            ]);
        }
    }
}

fn sysctl(ns: &str, key: &str) {
    run("ip", &["netns", "exec", ns, "sysctl", "-qw", key]);
}

impl Cluster {
    pub fn new() -> Cluster {
        assert!(
            unsafe { libc::geteuid() } == 0,
            "network tests need root (CI runs as root)"
        );
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let id = format!("{}k{n}", std::process::id());
        let ns = |what: &str| format!("cilc-{id}-{what}");
        let run_dir = std::env::temp_dir().join(format!("cilc-cluster-{id}"));
        let pods: Vec<Pod> = ["a", "b", "c"]
            .iter()
            .enumerate()
            .map(|(i, name)| Pod {
                name,
                ns: ns(name),
                v4: Ipv4Addr::new(10, 80, i as u8 + 1, 2),
                v6: Ipv6Addr::new(0xfd80, i as u16 + 1, 0, 0, 0, 0, 0, 2),
            })
            .collect();
        let c = Cluster {
            pods,
            router: ns("router"),
            world: ns("world"),
            inst: Installation::new(
                &format!("cluster-{id}"),
                std::path::Path::new(BPFFS),
                &run_dir,
            )
            .unwrap(),
            run: run_dir,
        };
        let all: Vec<&str> = c
            .pods
            .iter()
            .map(|p| p.ns.as_str())
            .chain([c.router.as_str(), c.world.as_str()])
            .collect();
        for n in &all {
            ip(&["netns", "add", n]);
            ip(&["-n", n, "link", "set", "lo", "up"]);
            // No router solicitations, MLD or autoconfiguration chatter.
            sysctl(n, "net.ipv6.conf.default.accept_ra=0");
            sysctl(n, "net.ipv6.conf.all.accept_ra=0");
        }
        sysctl(&c.router, "net.ipv4.ip_forward=1");
        sysctl(&c.router, "net.ipv6.conf.all.forwarding=1");
        for (i, p) in c.pods.iter().enumerate() {
            let gw4 = Ipv4Addr::new(10, 80, i as u8 + 1, 1);
            let gw6 = Ipv6Addr::new(0xfd80, i as u16 + 1, 0, 0, 0, 0, 0, 1);
            wire(
                (&c.router, &format!("r{}", p.name), gw4, gw6),
                (&p.ns, "eth0", p.v4, p.v6),
            );
            ip(&[
                "-n",
                &p.ns,
                "route",
                "add",
                "default",
                "via",
                &gw4.to_string(),
            ]);
            ip(&[
                "-n",
                &p.ns,
                "-6",
                "route",
                "add",
                "default",
                "via",
                &gw6.to_string(),
            ]);
        }
        wire(
            (&c.router, "uplink", ROUTER4, ROUTER6),
            (&c.world, "eth0", WORLD4, WORLD6),
        );
        c
    }

    /// `cilc ARGS` on this cluster's installation: (status, stdout, stderr).
    pub fn cilc(&self, args: &[&str]) -> (i32, String, String) {
        let run_dir = self.run.to_str().unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_cilc"))
            .args(args)
            .args(["--name", &self.inst.name, "--run-dir", run_dir])
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn pod(&self, name: &str) -> &Pod {
        self.pods.iter().find(|p| p.name == name).unwrap()
    }

    pub fn in_ns<T: Send>(&self, ns: &str, f: impl FnOnce() -> T + Send) -> T {
        in_netns(Some(&Netns::Name(ns.to_string())), || Ok(f())).unwrap()
    }

    /// An endpoint for pod `name`: both its addresses, `labels` (`k=v,...`),
    /// named ports.
    pub fn endpoint(&self, name: &str, labels: &str, ports: &[(&str, u16)]) -> EndpointSpec {
        let p = self.pod(name);
        EndpointSpec {
            name: name.into(),
            addresses: vec![IpAddr::V4(p.v4).into(), IpAddr::V6(p.v6).into()],
            labels: labels
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            namespace: "default".into(),
            namespace_labels: Default::default(),
            named_ports: ports.iter().map(|(n, p)| (n.to_string(), *p)).collect(),
            interface: Some("eth0".into()),
        }
    }

    /// Compile and load `src`, register the pods as endpoints and attach
    /// the programs to every pod's eth0 (tc-ingress: the pod's ingress,
    /// tc-egress: its egress).
    pub fn install(&self, src: &str, settings: Settings, endpoints: &[EndpointSpec]) {
        self.inst
            .load(&artifact(src), settings, Vec::new())
            .unwrap_or_else(|e| panic!("{e}"));
        self.inst
            .endpoint_set(endpoints)
            .unwrap_or_else(|e| panic!("{e}"));
        for p in &self.pods {
            for hook in [Hook::TcIngress, Hook::TcEgress] {
                self.inst
                    .attach(Target {
                        iface: "eth0".into(),
                        hook,
                        netns: Some(Netns::Name(p.ns.clone())),
                    })
                    .unwrap_or_else(|e| panic!("{e}"));
            }
        }
    }

    /// A TCP connection from pod `from`, bound to source port `sport` (0:
    /// any), to `to`; an error when it is not answered within `wait`.
    pub fn connect(
        &self,
        from: &str,
        sport: u16,
        to: SocketAddr,
        wait: Duration,
    ) -> std::io::Result<TcpStream> {
        let p = self.pod(from);
        let local: IpAddr = if to.is_ipv6() {
            p.v6.into()
        } else {
            p.v4.into()
        };
        self.in_ns(&p.ns, || {
            connect_from(SocketAddr::new(local, sport), to, wait)
        })
    }
}

/// bind() then a connect() that gives up after `wait`.
fn connect_from(local: SocketAddr, to: SocketAddr, wait: Duration) -> std::io::Result<TcpStream> {
    let family = if to.is_ipv6() {
        libc::AF_INET6
    } else {
        libc::AF_INET
    };
    // SAFETY: a socket we own, wrapped in a TcpStream at once; sockaddr
    // values built in full.
    unsafe {
        let fd = libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            &one as *const _ as *const _,
            4,
        );
        // A blocking connect gives up after the send timeout.
        stream.set_write_timeout(Some(wait))?;
        let (l, ll) = sockaddr(local);
        if libc::bind(fd, &l as *const _ as *const _, ll) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let (r, rl) = sockaddr(to);
        if libc::connect(fd, &r as *const _ as *const _, rl) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        stream.set_read_timeout(Some(wait))?;
        Ok(stream)
    }
}

fn sockaddr(a: SocketAddr) -> (libc::sockaddr_storage, u32) {
    // SAFETY: zeroed storage is a valid sockaddr_storage; we write the
    // family's struct into it.
    unsafe {
        let mut s: libc::sockaddr_storage = std::mem::zeroed();
        let len = match a {
            SocketAddr::V4(v) => {
                let p = &mut s as *mut _ as *mut libc::sockaddr_in;
                (*p).sin_family = libc::AF_INET as u16;
                (*p).sin_port = v.port().to_be();
                (*p).sin_addr.s_addr = u32::from(*v.ip()).to_be();
                std::mem::size_of::<libc::sockaddr_in>()
            }
            SocketAddr::V6(v) => {
                let p = &mut s as *mut _ as *mut libc::sockaddr_in6;
                (*p).sin6_family = libc::AF_INET6 as u16;
                (*p).sin6_port = v.port().to_be();
                (*p).sin6_addr.s6_addr = v.ip().octets();
                std::mem::size_of::<libc::sockaddr_in6>()
            }
        };
        (s, len as u32)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.inst.unload();
        let _ = std::fs::remove_dir_all(&self.run);
        for ns in self
            .pods
            .iter()
            .map(|p| &p.ns)
            .chain([&self.router, &self.world])
        {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// Frames seen on an interface (AF_PACKET, both directions), from when it
/// is made until `take`.
pub struct Capture {
    fd: std::os::fd::OwnedFd,
}

impl Capture {
    /// Capture on `dev` in the calling thread's namespace.
    pub fn on(dev: &str) -> Capture {
        let name = std::ffi::CString::new(dev).unwrap();
        // SAFETY: plain socket calls on a socket we own.
        unsafe {
            let proto = (libc::ETH_P_ALL as u16).to_be() as i32;
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_NONBLOCK, proto);
            assert!(
                fd >= 0,
                "packet socket: {}",
                std::io::Error::last_os_error()
            );
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = proto as u16;
            sll.sll_ifindex = libc::if_nametoindex(name.as_ptr()) as i32;
            assert!(
                libc::bind(
                    fd,
                    &sll as *const _ as *const _,
                    std::mem::size_of_val(&sll) as u32
                ) == 0
            );
            Capture {
                fd: std::os::fd::OwnedFd::from_raw_fd(fd),
            }
        }
    }

    /// Every frame captured so far.
    pub fn take(&self) -> Vec<Vec<u8>> {
        use std::os::fd::AsRawFd;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65536];
        loop {
            // SAFETY: receiving into a buffer we own.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr() as *mut _,
                    buf.len(),
                    0,
                )
            };
            if n <= 0 {
                return out;
            }
            out.push(buf[..n as usize].to_vec());
        }
    }
}

/// A frame's IP source and destination, protocol and L4 ports (or ICMP
/// echo identifier), and whether its IPv4 header checksum and L4
/// checksum are right. None for what is not IPv4/IPv6 TCP, UDP or ICMP.
pub fn inspect(frame: &[u8]) -> Option<Seen> {
    let eth = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    let ip = frame.get(14..)?;
    let (src, dst, proto, l4, pseudo): (IpAddr, IpAddr, u8, &[u8], Vec<u8>) = match eth {
        0x0800 => {
            let ihl = ((ip.first()? & 0x0f) * 4) as usize;
            let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
            let ip = ip.get(..total)?;
            let s = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
            let d = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
            if super::ones_sum(ip.get(..ihl)?) != 0xffff {
                return Some(Seen {
                    src: s.into(),
                    dst: d.into(),
                    proto: ip[9],
                    sport: 0,
                    dport: 0,
                    checksums_ok: false,
                });
            }
            let l4 = ip.get(ihl..)?;
            let mut ps = ip[12..20].to_vec();
            ps.extend_from_slice(&[0, ip[9]]);
            ps.extend_from_slice(&(l4.len() as u16).to_be_bytes());
            (s.into(), d.into(), ip[9], l4, ps)
        }
        0x86dd => {
            let len = u16::from_be_bytes([*ip.get(4)?, *ip.get(5)?]) as usize;
            let mut o = [0u8; 16];
            o.copy_from_slice(ip.get(8..24)?);
            let s = Ipv6Addr::from(o);
            o.copy_from_slice(ip.get(24..40)?);
            let d = Ipv6Addr::from(o);
            let l4 = ip.get(40..40 + len)?;
            let mut ps = ip[8..40].to_vec();
            ps.extend_from_slice(&(l4.len() as u32).to_be_bytes());
            ps.extend_from_slice(&[0, 0, 0, ip[6]]);
            (s.into(), d.into(), ip[6], l4, ps)
        }
        _ => return None,
    };
    let port = |i: usize| u16::from_be_bytes([l4[i], l4[i + 1]]);
    let (sport, dport, covered) = match proto {
        6 | 17 if l4.len() >= 8 => (port(0), port(2), [pseudo, l4.to_vec()].concat()),
        1 if l4.len() >= 8 => (port(4), 0, l4.to_vec()),
        58 if l4.len() >= 8 => (port(4), 0, [pseudo, l4.to_vec()].concat()),
        _ => return None,
    };
    // IPv4 UDP may carry no checksum (0).
    let no_sum = proto == 17 && src.is_ipv4() && port(6) == 0;
    Some(Seen {
        src,
        dst,
        proto,
        sport,
        dport,
        checksums_ok: no_sum || super::ones_sum(&covered) == 0xffff,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    /// TCP/UDP ports; for ICMP echo, the identifier in `sport`.
    pub sport: u16,
    pub dport: u16,
    pub checksums_ok: bool,
}

/// The source address and port a world-side TCP server saw, as it wrote
/// them back (`world_server`).
pub fn seen_as(stream: &mut TcpStream) -> std::io::Result<SocketAddr> {
    use std::io::{BufRead, Write};
    stream.write_all(b"who\n")?;
    let mut line = String::new();
    std::io::BufReader::new(stream.try_clone()?).read_line(&mut line)?;
    line.trim()
        .parse()
        .map_err(|_| std::io::Error::other(format!("bad answer `{line}`")))
}

/// A TCP server in the calling thread's namespace that answers every line
/// with the peer address it sees; it runs until the process ends.
pub fn world_server(addr: SocketAddr) {
    use std::io::{BufRead, Write};
    let l = std::net::TcpListener::bind(addr).unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let Ok(peer) = s.peer_addr() else { return };
                let Ok(r) = s.try_clone() else { return };
                let mut w = s;
                for line in std::io::BufReader::new(r).lines() {
                    if line.is_err() || writeln!(w, "{peer}").is_err() {
                        return;
                    }
                }
            });
        }
    });
}
