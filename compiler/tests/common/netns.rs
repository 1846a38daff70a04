//! A lab of two network namespaces joined by a veth pair, made for one
//! test and removed when it ends (also when it fails): `a` (10.77.0.1) is
//! the peer, `b` (10.77.0.2) the endpoint that policy protects. Names are
//! unique per process and lab, so tests can run side by side.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use runtime_loader::conntrack::Settings;
use runtime_loader::install::{IdentityEntry, Installation, BPFFS};
use runtime_loader::link::{in_netns, Hook, Netns, Target};
use runtime_loader::Artifact;

static NEXT: AtomicU32 = AtomicU32::new(0);

pub const A: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
pub const B: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("`ip` (iproute2) is needed");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The MAC address of `dev` in namespace `ns`.
pub fn mac(ns: &str, dev: &str) -> String {
    let out = Command::new("ip")
        .args(["-n", ns, "-br", "link", "show", dev])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(2)
        .unwrap()
        .to_string()
}

pub struct Lab {
    pub a: String,
    pub b: String,
    /// The interface in `b`.
    pub vb: String,
    pub inst: Installation,
    run: PathBuf,
}

impl Lab {
    pub fn new() -> Lab {
        assert!(
            unsafe { libc::geteuid() } == 0,
            "network tests need root (CI runs as root)"
        );
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let id = format!("{}x{n}", std::process::id());
        let (a, b) = (format!("cilc-{id}-a"), format!("cilc-{id}-b"));
        let (va, vb) = (format!("ca{id}"), format!("cb{id}"));
        assert!(vb.len() <= 15, "interface name {vb} too long");
        let run = std::env::temp_dir().join(format!("cilc-lab-{id}"));
        let lab = Lab {
            a: a.clone(),
            b: b.clone(),
            vb: vb.clone(),
            inst: Installation::new(&format!("lab-{id}"), std::path::Path::new(BPFFS), &run)
                .unwrap(),
            run,
        };
        ip(&["netns", "add", &a]);
        ip(&["netns", "add", &b]);
        ip(&["link", "add", &va, "type", "veth", "peer", "name", &vb]);
        ip(&["link", "set", &va, "netns", &a]);
        ip(&["link", "set", &vb, "netns", &b]);
        for (ns, dev, addr) in [(&a, &va, A), (&b, &vb, B)] {
            // No IPv6: its neighbour discovery would add packets to the counts.
            for key in ["all", "default", "lo"] {
                ip(&[
                    "netns",
                    "exec",
                    ns,
                    "sysctl",
                    "-qw",
                    &format!("net.ipv6.conf.{key}.disable_ipv6=1"),
                ]);
            }
            ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        // Neighbours known up front: no ARP during the counted traffic.
        let (ma, mb) = (mac(&a, &va), mac(&b, &vb));
        ip(&[
            "-n",
            &a,
            "neigh",
            "replace",
            &B.to_string(),
            "lladdr",
            &mb,
            "dev",
            &va,
            "nud",
            "permanent",
        ]);
        ip(&[
            "-n",
            &b,
            "neigh",
            "replace",
            &A.to_string(),
            "lladdr",
            &ma,
            "dev",
            &vb,
            "nud",
            "permanent",
        ]);
        lab
    }

    pub fn in_a<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        in_netns(Some(&Netns::Name(self.a.clone())), || Ok(f())).unwrap()
    }

    pub fn in_b<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        in_netns(Some(&Netns::Name(self.b.clone())), || Ok(f())).unwrap()
    }

    /// Command-line arguments for a node verb on this lab's installation.
    pub fn place(&self, args: &[&str]) -> Vec<String> {
        let run_dir = self.run.to_str().unwrap();
        let tail = ["--name", &self.inst.name, "--run-dir", run_dir];
        args.iter()
            .chain(tail.iter())
            .map(|a| a.to_string())
            .collect()
    }

    /// `b`'s interface at `hook`.
    pub fn target(&self, hook: Hook) -> Target {
        Target {
            iface: self.vb.clone(),
            hook,
            netns: Some(Netns::Name(self.b.clone())),
        }
    }

    /// Compile `src`, install it with `a` as `app=frontend` and `b` as
    /// `app=server`, attach it at `hooks` of `b`'s interface.
    pub fn install(&self, src: &str, settings: Settings, hooks: &[Hook]) {
        self.install_artifact(&artifact(src), settings, hooks)
    }

    /// The same with a compiled artifact.
    pub fn install_artifact(&self, art: &Artifact, settings: Settings, hooks: &[Hook]) {
        let ids = vec![
            IdentityEntry::parse(&format!("{A}=app=frontend")).unwrap(),
            IdentityEntry::parse(&format!("{B}=app=server")).unwrap(),
        ];
        self.inst
            .load(art, settings, ids)
            .unwrap_or_else(|e| panic!("{e}"));
        for h in hooks {
            self.inst
                .attach(self.target(*h))
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.inst.unload();
        let _ = std::fs::remove_dir_all(&self.run);
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// A policy compiled (tree strategy) and checked like a shipped artifact.
pub fn artifact(src: &str) -> Artifact {
    artifact_with(src, cilc::codegen::Strategy::Tree)
}

/// The same with another strategy.
pub fn artifact_with(src: &str, strategy: cilc::codegen::Strategy) -> Artifact {
    let (ir, _) = cilc::compile_ir(src).unwrap_or_else(|d| panic!("{d:?}"));
    let out = cilc::codegen::compile(&ir, src, &cilc::codegen::Options::new(strategy))
        .unwrap_or_else(|d| panic!("{d:?}"));
    Artifact::from_bytes(out.object).unwrap_or_else(|e| panic!("{e}"))
}
