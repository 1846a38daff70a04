//! Loads compiled cilc artifacts into the kernel, fills their identity map
//! and runs packets through them. Thin and typed over libbpf-rs; no LLVM.
//!
//! Shape: `Artifact` (bytes + manifest, checked) → `Loaded` (programs in
//! the kernel, maps sized from the manifest) → `Loaded::run` (one frame
//! through `BPF_PROG_TEST_RUN`, with the decision the program recorded).

pub mod identity;
pub mod manifest;

use std::net::IpAddr;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use identity::Bits;
use libbpf_rs::{MapCore, MapFlags, ObjectBuilder, PrintLevel};
use manifest::{Manifest, Reason};
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
    #[error("the kernel refused the object: {message}\n{log}")]
    Load { message: String, log: String },
    #[error("{0}")]
    Kernel(String),
    #[error("no program `{0}` in the object")]
    NoProgram(String),
}

/// A compiled object and its manifest, checked but not loaded.
pub struct Artifact {
    pub bytes: Vec<u8>,
    pub manifest: Manifest,
}

impl Artifact {
    pub fn read(path: &Path) -> Result<Artifact, Error> {
        let bytes = std::fs::read(path).map_err(|source| Error::Read {
            path: path.display().to_string(),
            source,
        })?;
        Artifact::from_bytes(bytes)
    }

    pub fn from_bytes(bytes: Vec<u8>) -> Result<Artifact, Error> {
        let manifest = read_manifest(&bytes)?;
        if manifest.layout != manifest::LAYOUT {
            return Err(Error::Layout {
                found: manifest.layout,
                expected: manifest::LAYOUT,
            });
        }
        Ok(Artifact { bytes, manifest })
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

/// Programs of an artifact, loaded (not attached).
pub struct Loaded {
    object: libbpf_rs::Object,
    pub manifest: Manifest,
}

impl Loaded {
    pub fn load(artifact: &Artifact) -> Result<Loaded, Error> {
        // libbpf's messages (the verifier log among them) are collected
        // and shown only when loading fails.
        if let Ok(mut log) = LOG.lock() {
            log.clear();
        }
        let previous = libbpf_rs::set_print(Some((PrintLevel::Debug, collect)));
        let result = Loaded::open_and_load(artifact);
        libbpf_rs::set_print(previous);
        result
    }

    fn open_and_load(artifact: &Artifact) -> Result<Loaded, Error> {
        let log = || LOG.lock().map(|l| l.clone()).unwrap_or_default();
        let mut open = ObjectBuilder::default()
            .open_memory(&artifact.bytes)
            .map_err(|e| Error::Load {
                message: e.to_string(),
                log: log(),
            })?;
        let rules = artifact.manifest.rules.len().max(1) as u32;
        for mut m in open.maps_mut() {
            if m.name() == "cilc_rule_counts" {
                m.set_max_entries(rules)
                    .map_err(|e| Error::Kernel(e.to_string()))?;
            }
        }
        let object = open.load().map_err(|e| Error::Load {
            message: e.to_string(),
            log: log(),
        })?;
        Ok(Loaded {
            object,
            manifest: artifact.manifest.clone(),
        })
    }

    fn map(&self, name: &str) -> Result<libbpf_rs::Map<'_>, Error> {
        self.object
            .maps()
            .find(|m| m.name() == name)
            .ok_or_else(|| Error::Kernel(format!("no map `{name}`")))
    }

    /// Give an address (all of it, /32 or /128) an identity.
    pub fn set_identity(&self, addr: IpAddr, id: &Bits) -> Result<(), Error> {
        let key = ident_key(addr, 128);
        self.map("cilc_idents")?
            .update(&key, &id.to_bytes(), MapFlags::ANY)
            .map_err(|e| Error::Kernel(format!("cannot set the identity of {addr}: {e}")))
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

    /// Packets and bytes per rule id, summed over CPUs.
    pub fn rule_counts(&self) -> Result<Vec<(u64, u64)>, Error> {
        let map = self.map("cilc_rule_counts")?;
        let mut out = Vec::new();
        for id in 0..self.manifest.rules.len() as u32 {
            let per_cpu = map
                .lookup_percpu(&id.to_ne_bytes(), MapFlags::ANY)
                .map_err(|e| Error::Kernel(e.to_string()))?
                .unwrap_or_default();
            let mut sum = (0, 0);
            for v in per_cpu {
                let word =
                    |i: usize| u64::from_ne_bytes(v[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
                sum.0 += word(0);
                sum.1 += word(1);
            }
            out.push(sum);
        }
        Ok(out)
    }

    /// Instructions of each program, as loaded.
    pub fn instructions(&self) -> Vec<(String, usize)> {
        self.object
            .progs()
            .map(|p| (p.name().to_string_lossy().into_owned(), p.insn_cnt()))
            .collect()
    }
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
