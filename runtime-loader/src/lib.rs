//! Installs compiled cilc artifacts on a node. Thin and typed over
//! libbpf-rs; no LLVM (a node receives artifacts, it does not compile).
//!
//! Shape: `Artifact` (bytes + manifest, checked: layout, sealed hash) →
//! `Loaded` (programs in the kernel, maps sized from the manifest) →
//! either `Loaded::run` (one frame through `BPF_PROG_TEST_RUN`) or
//! `Loaded::attach` (an owned `link::Link` on an interface hook). An
//! `install::Installation` keeps all of it pinned under one bpffs
//! directory so that another process can replace, inspect and detach it.

pub mod cli;
pub mod conntrack;
pub mod container;
pub mod endpoint;
pub mod host;
pub mod identity;
pub mod install;
pub mod link;
pub mod manifest;
pub mod nat;
pub mod stats;
pub mod table;

use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use identity::Bits;
use libbpf_rs::{MapCore, MapFlags, MapHandle, ObjectBuilder, PrintLevel};
use manifest::{Keep, Manifest, Reason};
use object::{Object as _, ObjectSection as _};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read `{path}`: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("not a cilc object: {0}")]
    NotCilc(String),
    #[error("object layout {found} is not the {expected} this loader knows; recompile the policy with a matching cilc")]
    Layout { found: u32, expected: u32 },
    #[error("the kernel refused the object: {message}\n  = hint: {}\n{log}", load_hint(.message, .log))]
    Load { message: String, log: String },
    #[error("{0}")]
    Kernel(String),
    #[error("no program `{0}` in the object")]
    NoProgram(String),
}

/// What to do about a load failure, from the error and the verifier log.
fn load_hint(message: &str, log: &str) -> &'static str {
    if message.contains("Argument list too long") || log.contains("too large") {
        "the program is beyond the verifier's 1M-instruction budget; `cilc inspect` shows the \
         classifier's size (docs/backend.md, Limits)"
    } else if message.contains("Operation not permitted") {
        "loading BPF needs root (CAP_BPF, CAP_NET_ADMIN) and a memlock limit that allows the maps"
    } else if log.contains("reuse") || log.contains("pinned map") && message.contains("Invalid") {
        "the installation's pinned state maps do not fit this object (another size or layout): \
         `unload` and `load` it afresh"
    } else {
        "the verifier's log below ends with its reason; a correct policy that does not load is a \
         cilc bug: report it with the artifact"
    }
}

/// A compiled object and its manifest, checked but not loaded.
pub struct Artifact {
    pub bytes: Vec<u8>,
    pub manifest: Manifest,
    /// SHA-256 of the object, as sealed in its manifest.
    pub sha256: String,
}

impl Artifact {
    pub fn read(path: &Path) -> Result<Artifact, Error> {
        let bytes = std::fs::read(path).map_err(|source| Error::Read {
            path: path.display().to_string(),
            source,
        })?;
        Artifact::from_bytes(bytes)
    }

    /// Check an object before anything is loaded: a cilc manifest, this
    /// loader's layout, and content that matches the hash sealed in it.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Artifact, Error> {
        let manifest = read_manifest(&bytes)?;
        if manifest.layout != manifest::LAYOUT {
            return Err(Error::Layout {
                found: manifest.layout,
                expected: manifest::LAYOUT,
            });
        }
        let sha256 = manifest::check_seal(&bytes).map_err(Error::NotCilc)?;
        Ok(Artifact {
            bytes,
            manifest,
            sha256,
        })
    }
}

/// The manifest of an object, from its `.cilc.manifest` section.
pub fn read_manifest(bytes: &[u8]) -> Result<Manifest, Error> {
    let file = object::File::parse(bytes)
        .map_err(|e| Error::NotCilc(format!("not an ELF object ({e})")))?;
    let section = file
        .section_by_name(manifest::SECTION)
        .ok_or_else(|| Error::NotCilc(format!("no {} section", manifest::SECTION)))?;
    let data = section
        .data()
        .map_err(|e| Error::NotCilc(format!("unreadable manifest ({e})")))?;
    serde_json::from_slice(data).map_err(|e| Error::NotCilc(format!("invalid manifest ({e})")))
}

/// What libbpf printed while loading (the verifier log among it).
static LOG: Mutex<String> = Mutex::new(String::new());

fn collect(_: PrintLevel, msg: String) {
    if let Ok(mut log) = LOG.lock() {
        log.push_str(&msg);
    }
}

/// One frame's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// The program's return value (XDP or TC action).
    pub retval: u32,
    pub rule: Option<u32>,
    pub reason: Reason,
    /// Average time per repetition, as the kernel measured it.
    pub duration: Duration,
}

/// Entries of the per-rule maps (counters, `snat`) for `rules`: room to
/// grow, so that a `replace` adding a few rules can change data only.
pub fn rule_capacity(rules: usize) -> u32 {
    let n = rules.max(1) as u32;
    n.saturating_add(n / 8).saturating_add(64)
}

/// How to load an artifact.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Reuse (or create and pin) the state maps in this bpffs directory.
    pub state_maps: Option<PathBuf>,
    /// Write this configuration (None: tracking off, as `cilc run` judges
    /// packets one at a time) and size the conntrack tables from it.
    pub settings: Option<conntrack::Settings>,
    /// Which programs to load (each costs a verification of the whole
    /// classifier).
    pub programs: Programs,
    /// Reuse the artifact's maps pinned in `state_maps` too (to load more
    /// programs of an installed artifact).
    pub artifact_maps: bool,
}

/// Which of an object's programs to load.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Programs {
    /// XDP, TC ingress and egress.
    #[default]
    Plain,
    /// Those and the two that source-NAT (`tc-*-snat`).
    All,
    /// Only the two that source-NAT.
    Snat,
}

impl Programs {
    fn loads(self, name: &str) -> bool {
        let snat = name.ends_with("_snat");
        match self {
            Programs::Plain => !snat,
            Programs::All => true,
            Programs::Snat => snat,
        }
    }
}

/// Programs of an artifact, loaded (not attached).
pub struct Loaded {
    object: libbpf_rs::Object,
    pub manifest: Manifest,
}

impl Loaded {
    pub fn load(artifact: &Artifact) -> Result<Loaded, Error> {
        Loaded::load_with(artifact, &LoadOptions::default())
    }

    pub fn load_with(artifact: &Artifact, opts: &LoadOptions) -> Result<Loaded, Error> {
        // libbpf's messages (the verifier log among them) are collected
        // and shown only when loading fails.
        if let Ok(mut log) = LOG.lock() {
            log.clear();
        }
        let previous = libbpf_rs::set_print(Some((PrintLevel::Debug, collect)));
        let result = Loaded::open_and_load(artifact, opts);
        libbpf_rs::set_print(previous);
        let loaded = result?;
        if let Some(s) = &opts.settings {
            loaded.configure(s)?;
        }
        Ok(loaded)
    }

    fn open_and_load(artifact: &Artifact, opts: &LoadOptions) -> Result<Loaded, Error> {
        let log = || LOG.lock().map(|l| l.clone()).unwrap_or_default();
        let mut open = ObjectBuilder::default()
            .open_memory(&artifact.bytes)
            .map_err(|e| Error::Load {
                message: e.to_string(),
                log: log(),
            })?;
        let rules = rule_capacity(artifact.manifest.rules.len());
        // The table's inner map (its template for the map-of-maps too).
        // Reused artifact maps hold the installed table: the template then
        // only needs its size, not the nodes.
        let nodes = if opts.artifact_maps {
            &[][..]
        } else {
            table::nodes(&artifact.bytes, &artifact.manifest)?
        };
        let inner = table::create(
            table::capacity(artifact.manifest.table_nodes.unwrap_or(0)),
            nodes,
        )?;
        let kept: Vec<(String, Keep)> = artifact
            .manifest
            .maps
            .iter()
            .map(|m| (m.name.clone(), m.keep))
            .collect();
        for mut p in open.progs_mut() {
            let name = p.name().to_string_lossy().into_owned();
            p.set_autoload(opts.programs.loads(&name));
        }
        for mut m in open.maps_mut() {
            let name = m.name().to_string_lossy().into_owned();
            let size = match (name.as_str(), &opts.settings) {
                ("cilc_rule_counts", _) => Some(rules),
                ("cilc_ct4", Some(s)) => Some(s.ct4_max),
                ("cilc_ct6", Some(s)) => Some(s.ct6_max),
                ("cilc_idents", Some(s)) => Some(s.idents_max),
                ("cilc_rule_snat", _) => Some(rules),
                ("cilc_snat" | "cilc_snat_rev", Some(s)) => Some(s.nat_max),
                _ => None,
            };
            if let Some(n) = size {
                m.set_max_entries(n)
                    .map_err(|e| Error::Kernel(e.to_string()))?;
            }
            if name == "cilc_table" {
                m.set_inner_map_fd(inner.as_fd())
                    .map_err(|e| Error::Kernel(e.to_string()))?;
            }
            let pinned = match kept.iter().find(|(n, _)| *n == name) {
                Some((_, Keep::State)) => true,
                Some((_, Keep::Artifact)) => opts.artifact_maps,
                _ => false,
            };
            if let (Some(dir), true) = (&opts.state_maps, pinned) {
                m.set_pin_path(dir.join(&name))
                    .map_err(|e| Error::Kernel(e.to_string()))?;
            }
        }
        let object = open.load().map_err(|e| Error::Load {
            message: e.to_string(),
            log: log(),
        })?;
        let loaded = Loaded {
            object,
            manifest: artifact.manifest.clone(),
        };
        loaded.fill_rule_snat()?;
        if !opts.artifact_maps {
            table::install(&loaded.map("cilc_table")?, &inner)?;
        }
        Ok(loaded)
    }

    /// Each rule's `snat`, from the manifest, where the programs read it.
    fn fill_rule_snat(&self) -> Result<(), Error> {
        let map = self.map("cilc_rule_snat")?;
        for r in self.manifest.rules.iter().filter(|r| r.snat.is_some()) {
            map.update(&r.id.to_ne_bytes(), &nat::rule_value(r.snat), MapFlags::ANY)
                .map_err(|e| Error::Kernel(format!("cannot write rule {}'s snat: {e}", r.id)))?;
        }
        Ok(())
    }

    /// The source NAT mappings.
    pub fn nat(&self) -> Result<nat::Tables, Error> {
        Ok(nat::Tables {
            forward: self.map_handle("cilc_snat")?,
            reverse: self.map_handle("cilc_snat_rev")?,
        })
    }

    fn map(&self, name: &str) -> Result<libbpf_rs::Map<'_>, Error> {
        self.object
            .maps()
            .find(|m| m.name() == name)
            .ok_or_else(|| Error::Kernel(format!("no map `{name}`")))
    }

    /// A handle on one of the object's maps (it keeps the map alive).
    pub fn map_handle(&self, name: &str) -> Result<MapHandle, Error> {
        MapHandle::try_from(&self.map(name)?).map_err(|e| Error::Kernel(e.to_string()))
    }

    /// A program's file descriptor.
    pub fn program_fd(&self, name: &str) -> Result<BorrowedFd<'_>, Error> {
        self.object
            .progs()
            .find(|p| p.name() == name)
            // A program left out of the load has no descriptor.
            .and_then(|p| {
                let fd = p.as_fd().as_raw_fd();
                // SAFETY: the program lives as long as `self.object`.
                (fd >= 0).then(|| unsafe { BorrowedFd::borrow_raw(fd) })
            })
            .ok_or_else(|| Error::NoProgram(name.into()))
    }

    /// The programs loaded, by name.
    pub fn loaded_programs(&self) -> Vec<String> {
        self.manifest
            .programs
            .iter()
            .filter(|p| self.program_fd(&p.name).is_ok())
            .map(|p| p.name.clone())
            .collect()
    }

    /// Attach the hook's program; the link detaches when dropped.
    pub fn attach(&self, target: &link::Target) -> Result<link::Link, Error> {
        link::Link::attach(self.program_fd(target.hook.program())?, target)
    }

    /// Write the configuration the programs read (tracking, audit, timeouts).
    pub fn configure(&self, s: &conntrack::Settings) -> Result<(), Error> {
        self.map("cilc_config")?
            .update(&0u32.to_ne_bytes(), &s.to_bytes(), MapFlags::ANY)
            .map_err(|e| Error::Kernel(format!("cannot write the configuration: {e}")))
    }

    /// The conntrack tables.
    pub fn conntrack(&self) -> Result<conntrack::Tables, Error> {
        Ok(conntrack::Tables {
            v4: self.map_handle("cilc_ct4")?,
            v6: self.map_handle("cilc_ct6")?,
        })
    }

    /// Give an address (all of it, /32 or /128) an identity.
    pub fn set_identity(&self, addr: IpAddr, id: &Bits) -> Result<(), Error> {
        let key = ident_key(addr, 128);
        self.map("cilc_idents")?
            .update(&key, &id.to_bytes(), MapFlags::ANY)
            .map_err(|e| Error::Kernel(format!("cannot set the identity of {addr}: {e}")))
    }

    /// Give every address of a prefix an identity.
    pub fn set_identity_prefix(&self, net: ipnet::IpNet, id: &Bits) -> Result<(), Error> {
        let key = ident_key_net(net);
        self.map("cilc_idents")?
            .update(&key, &id.to_bytes(), MapFlags::ANY)
            .map_err(|e| Error::Kernel(format!("cannot set the identity of {net}: {e}")))
    }

    /// Forget an address's identity (it becomes world again).
    pub fn remove_identity(&self, addr: IpAddr) -> Result<(), Error> {
        let key = ident_key(addr, 128);
        self.map("cilc_idents")?
            .delete(&key)
            .map_err(|e| Error::Kernel(format!("cannot remove the identity of {addr}: {e}")))
    }

    /// Forget every identity (addresses become world again).
    pub fn clear_identities(&self) -> Result<(), Error> {
        let map = self.map("cilc_idents")?;
        let keys: Vec<Vec<u8>> = map.keys().collect();
        for k in keys {
            map.delete(&k).map_err(|e| Error::Kernel(e.to_string()))?;
        }
        Ok(())
    }

    /// Run one Ethernet frame through a program `repeat` times.
    pub fn run(&mut self, program: &str, frame: &[u8], repeat: u32) -> Result<Run, Error> {
        let prog = self
            .object
            .progs_mut()
            .find(|p| p.name() == program)
            .ok_or_else(|| Error::NoProgram(program.into()))?;
        let input = libbpf_rs::ProgramInput {
            data_in: Some(frame),
            repeat,
            ..Default::default()
        };
        let out = prog
            .test_run(input)
            .map_err(|e| Error::Kernel(format!("test run of `{program}` failed: {e}")))?;
        let last = self
            .map("cilc_last")?
            .lookup(&0u32.to_ne_bytes(), MapFlags::ANY)
            .map_err(|e| Error::Kernel(e.to_string()))?
            .unwrap_or_default();
        let d = u32::from_ne_bytes(
            last.get(..4)
                .and_then(|b| b.try_into().ok())
                .unwrap_or([0; 4]),
        );
        let (rule, reason) = manifest::split_decision(d);
        Ok(Run {
            retval: out.return_value,
            rule,
            reason,
            duration: out.duration,
        })
    }

    /// The counters: by direction and reason, by rule, conntrack.
    pub fn stats(&self) -> Result<stats::Stats, Error> {
        stats::Stats::gather(
            &stats::Maps {
                reasons: self.map_handle("cilc_reason_counts")?,
                rules: self.map_handle("cilc_rule_counts")?,
                events: self.map_handle("cilc_ct_events")?,
                ct: self.conntrack()?,
                nat: self.nat()?,
            },
            &self.manifest,
        )
    }

    /// Instructions of each program, as loaded.
    pub fn instructions(&self) -> Vec<(String, usize)> {
        self.object
            .progs()
            .map(|p| (p.name().to_string_lossy().into_owned(), p.insn_cnt()))
            .collect()
    }
}

/// LPM key of a prefix (IPv4 is stored mapped into IPv6, ::ffff:0:0/96).
pub(crate) fn ident_key_net(net: ipnet::IpNet) -> Vec<u8> {
    let len = match net {
        ipnet::IpNet::V4(n) => 96 + n.prefix_len() as u32,
        ipnet::IpNet::V6(n) => n.prefix_len() as u32,
    };
    ident_key(net.network(), len)
}

/// LPM key: prefix length, then the address as IPv6 (IPv4 mapped).
fn ident_key(addr: IpAddr, prefix: u32) -> Vec<u8> {
    let v6 = match addr {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    };
    let mut k = prefix.to_ne_bytes().to_vec();
    k.extend_from_slice(&v6.octets());
    k
}
