//! An installation: one artifact's programs, maps and links pinned under
//! one bpffs directory, and a record of it, so that the loader can exit
//! and another run can attach, replace, inspect or remove it.
//!
//! Input: an `Artifact`, `Settings`, identities and `Target`s; output: the
//! pinned objects and a `Record`:
//!
//! ```text
//! <bpffs>/cilc/<name>/maps/<map>      state maps (kept by replace) and the artifact's maps
//! <bpffs>/cilc/<name>/progs/<prog>    the current artifact's programs
//! <bpffs>/cilc/<name>/links/<target>  one link per attached hook
//! <run-dir>/<name>/record.json        what is installed, attached where, since when
//! <run-dir>/<name>/artifact.o         the current artifact (its manifest names the rules)
//! ```
//!
//! `replace` loads the new artifact against the same state maps, swaps the
//! program of every link (BPF_LINK_UPDATE: each hook switches atomically,
//! no packet sees no program) and only then re-pins; any failure before
//! the swap leaves everything as it was, a failure during it swaps back.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use ipnet::IpNet;
use libbpf_rs::{MapCore, MapFlags, MapHandle};
use serde::{Deserialize, Serialize};

use crate::conntrack::{Settings, Tables};
use crate::endpoint::EndpointSpec;
use crate::identity::{self, Identity};
use crate::link::{open_pinned, pin_fd, Hook, Link, Netns, Target};
use crate::manifest::Keep;
use crate::nat::{self, NatIface};
use crate::stats::{self, Stats};
use crate::{table, Artifact, Error, LoadOptions, Loaded, Programs};

/// What one `gc` pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Collected {
    pub conntrack: crate::conntrack::Gc,
    pub nat: nat::Gc,
}

/// Where installations live unless told otherwise.
pub const BPFFS: &str = "/sys/fs/bpf";
pub const RUN_DIR: &str = "/run/cilc";

/// An address or prefix and the identity its endpoints have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityEntry {
    pub prefix: IpNet,
    /// Text form (`identity::parse_identity`).
    pub identity: String,
}

impl IdentityEntry {
    /// `ADDR[/LEN]=IDENTITY`.
    pub fn parse(text: &str) -> Result<IdentityEntry, String> {
        let (addr, id) = text.split_once('=').ok_or_else(|| {
            format!("expected ADDR=IDENTITY (e.g. 10.0.1.5=app=web), got `{text}`")
        })?;
        let prefix = crate::endpoint::parse_net(addr)?;
        identity::parse_identity(id)?;
        Ok(IdentityEntry {
            prefix,
            identity: id.to_string(),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub target: Target,
    /// Seconds since the Unix epoch.
    pub since: u64,
}

/// What an installation holds (record.json).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub name: String,
    pub layout: u32,
    pub artifact_sha256: String,
    pub source_sha256: String,
    pub compiler: String,
    pub strategy: String,
    pub rules: usize,
    pub loaded_at: u64,
    pub replaced_at: Option<u64>,
    /// 1 for the first artifact, +1 per replacement.
    pub generation: u32,
    pub settings: Settings,
    /// Identities given at load (`--identity`).
    pub identities: Vec<IdentityEntry>,
    /// Endpoints registered since (`endpoint add`), by name.
    #[serde(default)]
    pub endpoints: Vec<EndpointSpec>,
    /// The node's own addresses (`host`), as the kernel last listed them.
    #[serde(default)]
    pub host_addresses: Vec<IpNet>,
    pub attachments: Vec<Attachment>,
    /// Interfaces that source-NAT (`attach --snat`).
    #[serde(default)]
    pub nat: Vec<NatIface>,
}

impl Record {
    /// Every address or prefix with its identity.
    pub fn identity_entries(&self) -> Result<Vec<(IpNet, Identity)>, Error> {
        let mut v = identity_entries(&self.identities, &self.endpoints)?;
        v.extend(self.host_addresses.iter().map(|a| (*a, Identity::Host)));
        Ok(v)
    }
}

/// Load-time identities, then endpoints' addresses, with their identities.
fn identity_entries(
    identities: &[IdentityEntry],
    endpoints: &[EndpointSpec],
) -> Result<Vec<(IpNet, Identity)>, Error> {
    let mut out = Vec::new();
    for e in identities {
        out.push((
            e.prefix,
            identity::parse_identity(&e.identity).map_err(Error::Kernel)?,
        ));
    }
    for ep in endpoints {
        for a in &ep.addresses {
            out.push((*a, ep.identity()));
        }
    }
    Ok(out)
}

/// What `endpoint set` changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EndpointChange {
    pub added: Vec<String>,
    pub updated: Vec<String>,
    pub unchanged: Vec<String>,
}

/// One attachment as the kernel has it now.
#[derive(Debug, Clone, Serialize)]
pub struct Live {
    pub target: Target,
    pub since: u64,
    /// The pinned link exists and its interface is still there.
    pub attached: bool,
    /// It runs the installed artifact's program.
    pub current: bool,
    pub program_id: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub record: Record,
    pub attachments: Vec<Live>,
    pub pins: PathBuf,
}

/// What `replace` did.
#[derive(Debug, Clone, Serialize)]
pub struct Replaced {
    pub from: String,
    pub to: String,
    /// Hooks whose program was swapped (0 when only data changed).
    pub swapped: usize,
    /// How it was replaced: the programs kept and only the table swapped,
    /// or new programs (and why the data alone could not do).
    pub how: How,
    /// Attachments whose interface is gone (left as they are).
    pub defunct: Vec<Target>,
}

/// How `replace` changed what runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum How {
    /// Same code: the programs stay; the table (and per-rule counters) were
    /// swapped under them.
    Data { nodes: u32 },
    /// New programs on every hook; why the data alone would not do.
    Programs { because: String },
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn io(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let msg = format!("{what} {}", path.display());
    move |e| Error::Kernel(format!("{msg}: {e}"))
}

/// Mount bpffs at `root` unless it is one already.
pub fn ensure_bpffs(root: &Path) -> Result<(), Error> {
    const BPF_FS_MAGIC: i64 = 0xcafe4a11;
    std::fs::create_dir_all(root).map_err(io("cannot create", root))?;
    let c = std::ffi::CString::new(root.as_os_str().as_encoded_bytes())
        .map_err(|_| Error::Kernel("bad bpffs path".into()))?;
    // SAFETY: zeroed out-parameter and a valid C string.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0 && st.f_type as i64 == BPF_FS_MAGIC {
        return Ok(());
    }
    let fstype = c"bpf";
    // SAFETY: valid C strings; no data.
    let r = unsafe {
        libc::mount(
            fstype.as_ptr(),
            c.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if r != 0 {
        return Err(Error::Kernel(format!(
            "{} is not a bpffs and mounting one failed: {} (try `mount -t bpf bpf {}` as root)",
            root.display(),
            std::io::Error::last_os_error(),
            root.display()
        )));
    }
    Ok(())
}

/// Where a replacement is pinned before it takes a pin's place (bpffs
/// refuses dots in names).
fn staging(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push("_new");
    PathBuf::from(s)
}

/// Pin `fd` at `path`, replacing what is there in one step (pin beside,
/// then rename over).
fn pin_over(fd: std::os::fd::BorrowedFd<'_>, path: &Path) -> Result<(), Error> {
    let tmp = staging(path);
    let _ = std::fs::remove_file(&tmp);
    pin_fd(fd, &tmp)?;
    std::fs::rename(&tmp, path).map_err(io("cannot rename onto", path))
}

fn prog_id(fd: std::os::fd::BorrowedFd<'_>) -> Result<u32, Error> {
    // SAFETY: zeroed out-parameter of the size we pass.
    let mut info: libbpf_sys::bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libbpf_sys::bpf_prog_info>() as u32;
    // SAFETY: valid fd and buffer.
    if unsafe { libbpf_sys::bpf_prog_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len) } != 0 {
        return Err(Error::Kernel(format!(
            "cannot read program info: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(info.id)
}

pub struct Installation {
    pub name: String,
    /// `<bpffs>/cilc/<name>`.
    pub pins: PathBuf,
    /// `<run-dir>/<name>` (run-dir `/run/cilc` by default).
    pub run: PathBuf,
    bpffs: PathBuf,
}

impl Installation {
    pub fn new(name: &str, bpffs: &Path, run_dir: &Path) -> Result<Installation, Error> {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(Error::Kernel(format!(
                "installation name `{name}`: use letters, digits, `-` and `_`"
            )));
        }
        Ok(Installation {
            name: name.into(),
            pins: bpffs.join("cilc").join(name),
            run: run_dir.join(name),
            bpffs: bpffs.into(),
        })
    }

    /// Hold the installation's lock (released when the file is dropped):
    /// every change reads the record, changes maps and writes it back, and
    /// two at once (parallel `endpoint add`s) would lose one.
    fn lock(&self) -> Result<std::fs::File, Error> {
        if !self.run.exists() {
            // Nothing to lock: say there is no such installation.
            self.record()?;
        }
        let path = self.run.join("lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io("cannot open", &path))?;
        // SAFETY: flock on a file we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(Error::Kernel(format!(
                "cannot lock {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            )));
        }
        Ok(f)
    }

    fn record_path(&self) -> PathBuf {
        self.run.join("record.json")
    }

    fn artifact_path(&self) -> PathBuf {
        self.run.join("artifact.o")
    }

    fn link_path(&self, t: &Target) -> PathBuf {
        self.pins.join("links").join(t.pin_name())
    }

    pub fn exists(&self) -> bool {
        self.record_path().exists()
    }

    pub fn record(&self) -> Result<Record, Error> {
        let path = self.record_path();
        let text = std::fs::read_to_string(&path).map_err(|e| {
            Error::Kernel(format!(
                "no installation `{}` ({}: {e}); `load` one first",
                self.name,
                path.display()
            ))
        })?;
        serde_json::from_str(&text)
            .map_err(|e| Error::Kernel(format!("the record {} is damaged: {e}", path.display())))
    }

    fn write_record(&self, r: &Record) -> Result<(), Error> {
        let path = self.record_path();
        let tmp = path.with_extension("tmp");
        let text = serde_json::to_string_pretty(r).map_err(|e| Error::Kernel(e.to_string()))?;
        std::fs::write(&tmp, text).map_err(io("cannot write", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(io("cannot write", &path))
    }

    fn write_artifact(&self, a: &Artifact) -> Result<(), Error> {
        let path = self.artifact_path();
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, &a.bytes).map_err(io("cannot write", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(io("cannot write", &path))
    }

    /// The installed artifact.
    pub fn artifact(&self) -> Result<Artifact, Error> {
        Artifact::read(&self.artifact_path())
    }

    /// Load an artifact with the installation's state maps and fill its
    /// identity map (not attached, not pinned).
    fn load_artifact(
        &self,
        artifact: &Artifact,
        settings: &Settings,
        identities: &[(IpNet, Identity)],
    ) -> Result<Loaded, Error> {
        // The translating programs only where some interface uses them
        // (each program is a verification of the whole classifier).
        let programs = if self.snat_pinned() {
            Programs::All
        } else {
            Programs::Plain
        };
        let loaded = Loaded::load_with(
            artifact,
            &LoadOptions {
                state_maps: Some(self.pins.join("maps")),
                settings: Some(*settings),
                programs,
                artifact_maps: false,
            },
        )?;
        let selectors = identity::selectors(&artifact.manifest);
        for (net, id) in identities {
            let bits = identity::bits(&artifact.manifest, &selectors, id);
            loaded.set_identity_prefix(*net, &bits)?;
        }
        Ok(loaded)
    }

    /// The artifact's own maps and programs, pinned at `suffix`ed paths.
    fn pin_artifact_objects(&self, loaded: &Loaded, over: bool) -> Result<(), Error> {
        let pin = |fd: std::os::fd::BorrowedFd<'_>, path: &Path| {
            if over {
                pin_over(fd, path)
            } else {
                pin_fd(fd, path)
            }
        };
        for m in loaded
            .manifest
            .maps
            .iter()
            .filter(|m| m.keep == Keep::Artifact)
        {
            let h = loaded.map_handle(&m.name)?;
            pin(h.as_fd(), &self.pins.join("maps").join(&m.name))?;
        }
        for p in loaded.loaded_programs() {
            pin(loaded.program_fd(&p)?, &self.pins.join("progs").join(&p))?;
        }
        Ok(())
    }

    /// Whether the translating programs are pinned (loaded by a first
    /// `--snat`, reloaded by every `replace` after).
    fn snat_pinned(&self) -> bool {
        let progs = self.pins.join("progs");
        [Hook::TcEgressSnat, Hook::TcIngressSnat]
            .iter()
            .all(|h| progs.join(h.program()).exists())
    }

    /// Load and pin the translating programs of the installed artifact
    /// (with its maps), unless they are pinned already.
    fn load_snat_programs(&self, record: &Record) -> Result<(), Error> {
        if self.snat_pinned() {
            return Ok(());
        }
        let progs = self.pins.join("progs");
        let loaded = Loaded::load_with(
            &self.artifact()?,
            &LoadOptions {
                state_maps: Some(self.pins.join("maps")),
                settings: Some(record.settings),
                programs: Programs::Snat,
                artifact_maps: true,
            },
        )?;
        for p in loaded.loaded_programs() {
            pin_over(loaded.program_fd(&p)?, &progs.join(&p))?;
        }
        Ok(())
    }

    /// Load an artifact and pin it (nothing attached yet).
    pub fn load(
        &self,
        artifact: &Artifact,
        settings: Settings,
        identities: Vec<IdentityEntry>,
    ) -> Result<Record, Error> {
        std::fs::create_dir_all(&self.run).map_err(io("cannot create", &self.run))?;
        let _lock = self.lock()?;
        if self.exists() {
            return Err(Error::Kernel(format!(
                "installation `{}` exists; `replace` swaps its artifact, `unload` removes it",
                self.name
            )));
        }
        ensure_bpffs(&self.bpffs)?;
        if self.pins.exists() {
            return Err(Error::Kernel(format!(
                "{} holds pins of installation `{}` but it has no record (a lost {}?); \
                 `unload` removes them (and detaches their links)",
                self.pins.display(),
                self.name,
                self.run.display()
            )));
        }
        for d in ["maps", "progs", "links"] {
            let p = self.pins.join(d);
            std::fs::create_dir_all(&p).map_err(io("cannot create", &p))?;
        }
        std::fs::create_dir_all(&self.run).map_err(io("cannot create", &self.run))?;
        let done = (|| {
            let entries = identity_entries(&identities, &[])?;
            let loaded = self.load_artifact(artifact, &settings, &entries)?;
            self.pin_artifact_objects(&loaded, false)?;
            self.write_artifact(artifact)?;
            let m = &artifact.manifest;
            let record = Record {
                name: self.name.clone(),
                layout: m.layout,
                artifact_sha256: artifact.sha256.clone(),
                source_sha256: m.source_sha256.clone(),
                compiler: m.compiler.clone(),
                strategy: m.strategy.clone(),
                rules: m.rules.len(),
                loaded_at: unix_now(),
                replaced_at: None,
                generation: 1,
                settings,
                identities,
                endpoints: Vec::new(),
                host_addresses: Vec::new(),
                attachments: Vec::new(),
                nat: Vec::new(),
            };
            self.write_record(&record)?;
            Ok(record)
        })();
        if done.is_err() {
            // Nothing half-made stays behind.
            let _ = std::fs::remove_dir_all(&self.pins);
            let _ = std::fs::remove_dir_all(&self.run);
        }
        done
    }

    /// Attach the installed artifact to one more hook.
    pub fn attach(&self, target: Target) -> Result<(), Error> {
        let _lock = self.lock()?;
        let mut record = self.record()?;
        if target.hook.is_xdp()
            && record
                .nat
                .iter()
                .any(|n| n.is(&target.iface, target.netns.as_ref()))
        {
            return Err(Error::Kernel(format!(
                "{target}: the interface source-NATs, and XDP would judge replies before TC \
                 translates them back; attach tc-ingress there instead"
            )));
        }
        let (link, pin) = self.link(&record, &target)?;
        record.attachments.push(Attachment {
            target,
            since: unix_now(),
        });
        if let Err(e) = self.write_record(&record) {
            // Not recorded: not attached either.
            let _ = std::fs::remove_file(&pin);
            let _ = link.detach();
            return Err(e);
        }
        Ok(())
    }

    /// Attach and pin one hook (not recorded).
    fn link(&self, record: &Record, target: &Target) -> Result<(Link, PathBuf), Error> {
        if let Some(a) = record
            .attachments
            .iter()
            .find(|a| a.target.collides(target))
        {
            return Err(Error::Kernel(format!(
                "{} is already attached as {}; detach it first",
                target, a.target
            )));
        }
        let prog = open_pinned(&self.pins.join("progs").join(target.hook.program()))?;
        let link = Link::attach(prog.as_fd(), target)?;
        let pin = self.link_path(target);
        if let Err(e) = link.pin(&pin) {
            let _ = link.detach();
            return Err(e);
        }
        Ok((link, pin))
    }

    /// Make an interface source-NAT: packets leaving by it that a rule
    /// with `snat` allows get its address (or `addresses`) and an
    /// allocated port; replies arriving by it are translated back. Attaches
    /// the translating TC programs there, both directions (`tc-egress-snat`,
    /// `tc-ingress-snat`; plain TC hooks on it must be detached first).
    /// Returns the interface as registered and the hooks attached.
    pub fn attach_snat(
        &self,
        iface: &str,
        netns: Option<&Netns>,
        addresses: &[std::net::IpAddr],
    ) -> Result<(NatIface, Vec<Target>), Error> {
        let _lock = self.lock()?;
        let mut record = self.record()?;
        if !record.settings.conntrack {
            return Err(Error::Kernel(
                "source NAT needs connection tracking (replies are found through it); \
                 this installation was loaded with --no-conntrack"
                    .into(),
            ));
        }
        if record.nat.iter().any(|n| n.is(iface, netns)) {
            return Err(Error::Kernel(format!(
                "`{iface}` already source-NATs; detach it first"
            )));
        }
        let on_iface = |a: &Attachment| a.target.iface == iface && a.target.netns.as_ref() == netns;
        if let Some(a) = record
            .attachments
            .iter()
            .find(|a| on_iface(a) && a.target.hook.is_xdp())
        {
            return Err(Error::Kernel(format!(
                "{} is attached: XDP would judge replies before TC translates them back; \
                 detach it first",
                a.target
            )));
        }
        let nif = NatIface::resolve(iface, netns, addresses)?;
        if let Some(other) = record.nat.iter().find(|n| n.ifindex == nif.ifindex) {
            return Err(Error::Kernel(format!(
                "`{}` has interface index {} like `{}`, which source-NATs already; the programs \
                 tell translating interfaces apart by index",
                iface, nif.ifindex, other.iface
            )));
        }
        self.load_snat_programs(&record)?;
        // Registered before the hooks: no packet leaves untranslated.
        let ifaces = self.pinned_map("cilc_nat_ifaces")?;
        ifaces
            .update(&nif.key(), &nif.value(), libbpf_rs::MapFlags::ANY)
            .map_err(|e| Error::Kernel(format!("cannot register `{iface}` for NAT: {e}")))?;
        let mut made: Vec<(Link, PathBuf)> = Vec::new();
        let done = (|| {
            let mut attached = Vec::new();
            for hook in [Hook::TcEgressSnat, Hook::TcIngressSnat] {
                let target = Target {
                    iface: iface.into(),
                    hook,
                    netns: netns.cloned(),
                };
                made.push(self.link(&record, &target)?);
                attached.push(target);
            }
            for t in &attached {
                record.attachments.push(Attachment {
                    target: t.clone(),
                    since: unix_now(),
                });
            }
            record.nat.push(nif.clone());
            self.write_record(&record)?;
            Ok(attached)
        })();
        match done {
            Ok(attached) => Ok((nif, attached)),
            Err(e) => {
                for (link, pin) in made {
                    let _ = std::fs::remove_file(&pin);
                    let _ = link.detach();
                }
                let _ = ifaces.delete(&nif.key());
                Err(e)
            }
        }
    }

    /// Detach one hook, or every hook (`None`). Returns what was detached.
    pub fn detach(&self, which: Option<&Target>) -> Result<Vec<Target>, Error> {
        let _lock = self.lock()?;
        self.detach_locked(which)
    }

    fn detach_locked(&self, which: Option<&Target>) -> Result<Vec<Target>, Error> {
        let mut record = self.record()?;
        let named = |a: &Attachment| which.is_none_or(|t| a.target == *t);
        if let (Some(t), false) = (which, record.attachments.iter().any(named)) {
            return Err(Error::Kernel(format!(
                "{t} is not attached by installation `{}`; `status` lists what is",
                self.name
            )));
        }
        // A translating interface loses both its hooks at once (a lone
        // hook would translate one way only).
        let (unnat, nat): (Vec<NatIface>, Vec<NatIface>) = record.nat.into_iter().partition(|n| {
            record.attachments.iter().any(|a| {
                named(a)
                    && a.target.hook.is_snat()
                    && n.is(&a.target.iface, a.target.netns.as_ref())
            })
        });
        let (mut gone, kept): (Vec<Attachment>, Vec<Attachment>) =
            record.attachments.into_iter().partition(|a| {
                named(a)
                    || (a.target.hook.is_snat()
                        && unnat
                            .iter()
                            .any(|n| n.is(&a.target.iface, a.target.netns.as_ref())))
            });
        // Egress first, and the interface unregistered last: the
        // translating egress program never runs without its registration
        // (it would drop `snat` traffic, never send it untranslated).
        gone.sort_by_key(|a| a.target.hook != Hook::TcEgressSnat);
        for a in &gone {
            let path = self.link_path(&a.target);
            if let Ok(link) = Link::open(&path) {
                // Already defunct when its interface went away.
                let _ = link.detach();
            }
            let _ = std::fs::remove_file(&path);
        }
        if !unnat.is_empty() {
            let ifaces = self.pinned_map("cilc_nat_ifaces")?;
            for n in &unnat {
                let _ = ifaces.delete(&n.key());
            }
        }
        record.nat = nat;
        record.attachments = kept;
        self.write_record(&record)?;
        Ok(gone.into_iter().map(|a| a.target).collect())
    }

    /// Swap in a new artifact on every hook, keeping conntrack, counters by
    /// reason and configuration. A load or verification failure leaves the
    /// old programs running.
    pub fn replace(&self, artifact: &Artifact) -> Result<Replaced, Error> {
        let _lock = self.lock()?;
        let mut record = self.record()?;
        if artifact.manifest.layout != record.layout {
            return Err(Error::Layout {
                found: artifact.manifest.layout,
                expected: record.layout,
            });
        }
        let because = match self.data_only(artifact)? {
            Ok(room) => return self.replace_data(artifact, record, room),
            Err(because) => because,
        };
        let new = self.load_artifact(artifact, &record.settings, &record.identity_entries()?)?;
        // Pin the new objects beside the old ones first: harmless if the
        // swap fails.
        let staged: Vec<(OwnedFd, PathBuf)> = {
            let mut v = Vec::new();
            for m in new
                .manifest
                .maps
                .iter()
                .filter(|m| m.keep == Keep::Artifact)
            {
                let h = new.map_handle(&m.name)?;
                v.push((
                    h.as_fd()
                        .try_clone_to_owned()
                        .map_err(|e| Error::Kernel(e.to_string()))?,
                    self.pins.join("maps").join(&m.name),
                ));
            }
            for p in new.loaded_programs() {
                v.push((
                    new.program_fd(&p)?
                        .try_clone_to_owned()
                        .map_err(|e| Error::Kernel(e.to_string()))?,
                    self.pins.join("progs").join(&p),
                ));
            }
            v
        };
        let unstage = || {
            for (_, p) in &staged {
                let _ = std::fs::remove_file(staging(p));
            }
        };
        for (fd, p) in &staged {
            let _ = std::fs::remove_file(staging(p));
            if let Err(e) = pin_fd(fd.as_fd(), &staging(p)) {
                unstage();
                return Err(e);
            }
        }
        // Swap every link; on failure, swap the done ones back.
        let mut swapped: Vec<(Link, OwnedFd, &'static str)> = Vec::new();
        let mut defunct = Vec::new();
        for a in &record.attachments {
            // A link whose interface is gone runs nothing: leave it.
            if let Ok((_, 0)) = Link::open(&self.link_path(&a.target)).and_then(|l| l.info()) {
                defunct.push(a.target.clone());
                continue;
            }
            let step = (|| {
                let link = Link::open(&self.link_path(&a.target))?;
                let old = link.program()?;
                let prog = a.target.hook.program();
                link.update(new.program_fd(prog)?, old.as_fd())?;
                Ok::<_, Error>((link, old, prog))
            })();
            match step {
                Ok(s) => swapped.push(s),
                Err(e) => {
                    let mut stuck = Vec::new();
                    for (link, old, prog) in &swapped {
                        let back = new
                            .program_fd(prog)
                            .and_then(|fd| link.update(old.as_fd(), fd));
                        if let Err(b) = back {
                            stuck.push(b.to_string());
                        }
                    }
                    unstage();
                    let state = if stuck.is_empty() {
                        "the old programs stay".to_string()
                    } else {
                        format!(
                            "and swapping back failed on {} hook(s) ({}): `status` shows what runs",
                            stuck.len(),
                            stuck.join("; ")
                        )
                    };
                    return Err(Error::Kernel(format!(
                        "replacing the program on {} failed, {state}: {e}",
                        a.target
                    )));
                }
            }
        }
        // Committed: the hooks run the new programs. Finish every step
        // even if one fails, so the record says what runs.
        let mut late = Vec::new();
        for (_, p) in &staged {
            if let Err(e) = std::fs::rename(staging(p), p) {
                late.push(format!("cannot rename onto {}: {e}", p.display()));
            }
        }
        let from = self.record_replacement(artifact, &mut record)?;
        if !late.is_empty() {
            return Err(Error::Kernel(format!(
                "the new programs run, but: {}",
                late.join("; ")
            )));
        }
        Ok(Replaced {
            from,
            to: artifact.sha256.clone(),
            swapped: swapped.len(),
            how: How::Programs { because },
            defunct,
        })
    }

    /// The new artifact and its record, after a replacement. Returns the
    /// hash of the artifact it replaced.
    fn record_replacement(
        &self,
        artifact: &Artifact,
        record: &mut Record,
    ) -> Result<String, Error> {
        self.write_artifact(artifact)?;
        let from = std::mem::replace(&mut record.artifact_sha256, artifact.sha256.clone());
        let m = &artifact.manifest;
        record.source_sha256 = m.source_sha256.clone();
        record.compiler = m.compiler.clone();
        record.strategy = m.strategy.clone();
        record.rules = m.rules.len();
        record.replaced_at = Some(unix_now());
        record.generation += 1;
        self.write_record(record)?;
        Ok(from)
    }

    /// Whether `artifact` differs from the installed one only in data the
    /// running programs read from maps: Ok(the installed table's room), or
    /// why not.
    fn data_only(&self, artifact: &Artifact) -> Result<Result<u32, String>, Error> {
        let new = &artifact.manifest;
        if let Err(why) = new.data_only_from(&self.artifact()?.manifest) {
            return Ok(Err(why));
        }
        // The claim is checked, not trusted: the running programs must be
        // what this artifact's code is.
        let code = crate::manifest::code_digest(&artifact.bytes).map_err(Error::NotCilc)?;
        if new.code_sha256.as_deref() != Some(code.as_str()) {
            return Ok(Err(
                "its code does not hash to the code_sha256 it claims".into()
            ));
        }
        let rules = self.pinned_map("cilc_rule_counts")?.max_entries() as usize;
        if new.rules.len() > rules {
            return Ok(Err(format!(
                "its {} rules exceed the installed room for {rules}",
                new.rules.len()
            )));
        }
        let nodes = new.table_nodes.unwrap_or(0);
        let room = table::installed_capacity(&self.pinned_map("cilc_table")?)?.unwrap_or(0);
        if nodes > room {
            return Ok(Err(format!(
                "its table of {nodes} nodes exceeds the installed room for {room}"
            )));
        }
        Ok(Ok(room))
    }

    /// Replace by data: fill a new inner table map and swap it into the
    /// pinned `cilc_table` (one update: each packet walks the old table or
    /// the new one); the programs and their links stay. Per-rule counters
    /// start again, as with new programs (only the old rules' ids were
    /// ever counted).
    fn replace_data(
        &self,
        artifact: &Artifact,
        mut record: Record,
        room: u32,
    ) -> Result<Replaced, Error> {
        let inner = table::create(room, table::nodes(&artifact.bytes, &artifact.manifest)?)?;
        table::install(&self.pinned_map("cilc_table")?, &inner)?;
        let counts = self.pinned_map("cilc_rule_counts")?;
        let zero = vec![vec![0u8; 16]; libbpf_rs::num_possible_cpus().unwrap_or(1)];
        for id in 0..record.rules as u32 {
            counts
                .update_percpu(&id.to_ne_bytes(), &zero, MapFlags::ANY)
                .map_err(|e| Error::Kernel(format!("the new table runs, but its counters: {e}")))?;
        }
        let from = self.record_replacement(artifact, &mut record)?;
        Ok(Replaced {
            from,
            to: artifact.sha256.clone(),
            swapped: 0,
            how: How::Data {
                nodes: artifact.manifest.table_nodes.unwrap_or(0),
            },
            defunct: Vec::new(),
        })
    }

    /// What is installed, and what the kernel has attached now.
    pub fn status(&self) -> Result<Status, Error> {
        let record = self.record()?;
        let mut attachments = Vec::new();
        for a in &record.attachments {
            let current = open_pinned(&self.pins.join("progs").join(a.target.hook.program()))
                .and_then(|fd| prog_id(fd.as_fd()))
                .ok();
            let info = Link::open(&self.link_path(&a.target)).and_then(|l| l.info());
            let (attached, program_id) = match info {
                Ok((prog, ifindex)) => (ifindex != 0, prog),
                Err(_) => (false, 0),
            };
            attachments.push(Live {
                target: a.target.clone(),
                since: a.since,
                attached,
                current: attached && current == Some(program_id),
                program_id,
            });
        }
        Ok(Status {
            record,
            attachments,
            pins: self.pins.clone(),
        })
    }

    fn pinned_map(&self, name: &str) -> Result<MapHandle, Error> {
        let path = self.pins.join("maps").join(name);
        MapHandle::from_pinned_path(&path)
            .map_err(|e| Error::Kernel(format!("cannot open {}: {e}", path.display())))
    }

    pub fn conntrack(&self) -> Result<Tables, Error> {
        self.record()?;
        Ok(Tables {
            v4: self.pinned_map("cilc_ct4")?,
            v6: self.pinned_map("cilc_ct6")?,
        })
    }

    pub fn stats(&self) -> Result<Stats, Error> {
        let artifact = self.artifact()?;
        Stats::gather(
            &stats::Maps {
                reasons: self.pinned_map("cilc_reason_counts")?,
                rules: self.pinned_map("cilc_rule_counts")?,
                events: self.pinned_map("cilc_ct_events")?,
                ct: self.conntrack()?,
                nat: self.nat()?,
            },
            &artifact.manifest,
        )
    }

    /// Remove expired conntrack entries, then the NAT mappings of flows
    /// conntrack no longer has.
    pub fn gc(&self) -> Result<Collected, Error> {
        let record = self.record()?;
        let ct = self.conntrack()?;
        let conntrack = ct.gc(&record.settings)?;
        let nat = self.nat()?.gc(&ct)?;
        Ok(Collected { conntrack, nat })
    }

    /// Masquerade to the addresses translating interfaces have now (an
    /// address changed, or went: a family without one is not translated,
    /// its packets are dropped as `nat-unsupported`). Returns the
    /// interfaces that changed.
    pub fn nat_refresh(&self) -> Result<Vec<NatIface>, Error> {
        let _lock = self.lock()?;
        let mut record = self.record()?;
        let mut changed = Vec::new();
        for n in record.nat.iter_mut() {
            let Some((v4, v6)) = n.current() else {
                continue;
            };
            if (v4, v6) == (n.v4, n.v6) {
                continue;
            }
            n.v4 = v4;
            n.v6 = v6;
            self.pinned_map("cilc_nat_ifaces")?
                .update(&n.key(), &n.value(), libbpf_rs::MapFlags::ANY)
                .map_err(|e| Error::Kernel(format!("cannot update `{}` for NAT: {e}", n.iface)))?;
            changed.push(n.clone());
        }
        if !changed.is_empty() {
            self.write_record(&record)?;
        }
        Ok(changed)
    }

    /// The source NAT mappings.
    pub fn nat(&self) -> Result<nat::Tables, Error> {
        self.record()?;
        Ok(nat::Tables {
            forward: self.pinned_map("cilc_snat")?,
            reverse: self.pinned_map("cilc_snat_rev")?,
        })
    }

    /// Add endpoints, or update them (by name): their addresses get the
    /// identity bits of the installed artifact at once, in the pinned
    /// identity map the running programs read. All or nothing: a conflict
    /// or a map without room for every new address changes nothing.
    pub fn endpoint_set(&self, specs: &[EndpointSpec]) -> Result<EndpointChange, Error> {
        let _lock = self.lock()?;
        let old = self.record()?;
        let mut record = old.clone();
        let mut change = EndpointChange::default();
        // Who owns each prefix once this change is made.
        let mut owner: std::collections::BTreeMap<IpNet, String> = record
            .identities
            .iter()
            .map(|e| (e.prefix, format!("--identity {}", e.prefix)))
            .collect();
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        for ep in record
            .endpoints
            .iter()
            .filter(|e| !names.contains(&e.name.as_str()))
        {
            for a in &ep.addresses {
                owner.insert(*a, format!("endpoint `{}`", ep.name));
            }
        }
        for s in specs {
            s.check().map_err(Error::Kernel)?;
            let me = format!("endpoint `{}`", s.name);
            for a in &s.addresses {
                if let Some(o) = owner.insert(*a, me.clone()) {
                    if o != me {
                        return Err(Error::Kernel(format!(
                            "{me}: {a} already belongs to {o}; remove or change that first"
                        )));
                    }
                }
            }
        }
        for s in specs {
            match record.endpoints.iter().position(|e| e.name == s.name) {
                Some(i) if record.endpoints[i] == *s => change.unchanged.push(s.name.clone()),
                Some(i) => {
                    change.updated.push(s.name.clone());
                    record.endpoints[i] = s.clone();
                }
                None => {
                    change.added.push(s.name.clone());
                    record.endpoints.push(s.clone());
                }
            }
        }
        // A host address an endpoint now claims is the endpoint's.
        record.host_addresses.retain(|a| !owner.contains_key(a));
        self.sync_identities(&old, &record)?;
        Ok(change)
    }

    /// Forget an endpoint: its addresses become world at once.
    pub fn endpoint_remove(&self, name: &str) -> Result<EndpointSpec, Error> {
        let _lock = self.lock()?;
        let old = self.record()?;
        let mut record = old.clone();
        let i = record
            .endpoints
            .iter()
            .position(|e| e.name == name)
            .ok_or_else(|| {
                Error::Kernel(format!(
                    "no endpoint `{name}` in installation `{}`; `endpoint list` shows them",
                    self.name
                ))
            })?;
        let ep = record.endpoints.remove(i);
        self.sync_identities(&old, &record)?;
        Ok(ep)
    }

    /// The node's addresses are now `addresses` (from `host::addresses`):
    /// they get the `host` identity, addresses it no longer has lose it.
    /// Addresses an endpoint or `--identity` claims keep theirs. Returns
    /// (added, removed).
    pub fn host_set(&self, addresses: &[IpNet]) -> Result<(Vec<IpNet>, Vec<IpNet>), Error> {
        let _lock = self.lock()?;
        let old = self.record()?;
        let mut record = old.clone();
        let claimed: std::collections::BTreeSet<IpNet> =
            identity_entries(&old.identities, &old.endpoints)?
                .into_iter()
                .map(|(n, _)| n)
                .collect();
        let mut now: Vec<IpNet> = addresses
            .iter()
            .filter(|a| !claimed.contains(a))
            .copied()
            .collect();
        now.sort();
        now.dedup();
        let added = now
            .iter()
            .filter(|a| !old.host_addresses.contains(a))
            .copied()
            .collect();
        let removed = old
            .host_addresses
            .iter()
            .filter(|a| !now.contains(a))
            .copied()
            .collect();
        record.host_addresses = now;
        if record != old {
            self.sync_identities(&old, &record)?;
        }
        Ok((added, removed))
    }

    /// Make the pinned identity map say what `new` says, where `old` is
    /// what it says now, then write `new` down. All or nothing: a map
    /// without room for every prefix refuses before any change.
    fn sync_identities(&self, old: &Record, new: &Record) -> Result<(), Error> {
        let map = self.pinned_map("cilc_idents")?;
        let before: std::collections::BTreeMap<IpNet, Identity> =
            old.identity_entries()?.into_iter().collect();
        let after: std::collections::BTreeMap<IpNet, Identity> =
            new.identity_entries()?.into_iter().collect();
        let max = libbpf_rs::MapCore::max_entries(&map) as usize;
        if after.len() > max {
            return Err(Error::Kernel(format!(
                "the identity map holds {max} addresses and this change needs {}: nothing changed \
                 (fail closed); remove endpoints or give fewer addresses (`load --idents-max`)",
                after.len()
            )));
        }
        let artifact = self.artifact()?;
        let selectors = identity::selectors(&artifact.manifest);
        // Removals first, so that the map never holds more than the larger
        // of before and after.
        for net in before.keys().filter(|n| !after.contains_key(n)) {
            // Already gone is fine: world either way.
            let _ = libbpf_rs::MapCore::delete(&map, &crate::ident_key_net(*net));
        }
        for (net, id) in after.iter().filter(|(n, id)| before.get(n) != Some(id)) {
            let bits = identity::bits(&artifact.manifest, &selectors, id);
            libbpf_rs::MapCore::update(
                &map,
                &crate::ident_key_net(*net),
                &bits.to_bytes(),
                libbpf_rs::MapFlags::ANY,
            )
            .map_err(|e| Error::Kernel(format!("cannot set the identity of {net}: {e}")))?;
        }
        self.write_record(new)
    }

    /// Detach everything and remove every pin and the record.
    pub fn unload(&self) -> Result<(), Error> {
        let lock = if self.run.exists() {
            Some(self.lock()?)
        } else {
            None
        };
        if self.exists() {
            self.detach_locked(None)?;
        }
        if self.pins.exists() {
            std::fs::remove_dir_all(&self.pins).map_err(io("cannot remove", &self.pins))?;
        }
        if self.run.exists() {
            std::fs::remove_dir_all(&self.run).map_err(io("cannot remove", &self.run))?;
        }
        drop(lock);
        Ok(())
    }
}
