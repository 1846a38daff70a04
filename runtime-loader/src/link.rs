//! Attachment points and the kernel links that hold programs on them.
//!
//! Input: a program fd and a `Target` (interface, hook, optional network
//! namespace); output: an owned `Link`. Dropping a `Link` that was not
//! pinned detaches it; `pin` makes it outlive the process; `update` swaps
//! its program atomically (the kernel's BPF_LINK_UPDATE). XDP and TC both
//! use links (TC through tcx), so every hook can be replaced in place.

use std::ffi::CString;
use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::Error;

/// Where a program runs on an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Hook {
    /// XDP in the driver when it supports it, else generic (the kernel picks).
    Xdp,
    /// XDP in the driver; fails where the driver has no XDP support.
    XdpNative,
    /// XDP on the generic (skb) path: works on every interface.
    XdpGeneric,
    TcIngress,
    TcEgress,
    /// TC on an interface that source-NATs (`attach --snat`): the
    /// programs that translate, attached where tc-ingress/tc-egress are.
    TcIngressSnat,
    TcEgressSnat,
}

impl Hook {
    pub const ALL: [Hook; 7] = [
        Hook::Xdp,
        Hook::XdpNative,
        Hook::XdpGeneric,
        Hook::TcIngress,
        Hook::TcEgress,
        Hook::TcIngressSnat,
        Hook::TcEgressSnat,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Hook::Xdp => "xdp",
            Hook::XdpNative => "xdp-native",
            Hook::XdpGeneric => "xdp-generic",
            Hook::TcIngress => "tc-ingress",
            Hook::TcEgress => "tc-egress",
            Hook::TcIngressSnat => "tc-ingress-snat",
            Hook::TcEgressSnat => "tc-egress-snat",
        }
    }

    pub fn parse(text: &str) -> Result<Hook, String> {
        Hook::ALL
            .into_iter()
            .find(|h| h.as_str() == text)
            .ok_or_else(|| {
                format!("unknown hook `{text}`; expected xdp, xdp-native, xdp-generic, tc-ingress, tc-egress (tc-ingress-snat, tc-egress-snat: what attach --snat made)")
            })
    }

    /// The object's program for this hook.
    pub fn program(self) -> &'static str {
        match self {
            Hook::Xdp | Hook::XdpNative | Hook::XdpGeneric => "cilc_xdp",
            Hook::TcIngress => "cilc_tc_ingress",
            Hook::TcEgress => "cilc_tc_egress",
            Hook::TcIngressSnat => "cilc_tc_ingress_snat",
            Hook::TcEgressSnat => "cilc_tc_egress_snat",
        }
    }

    /// The TC direction or XDP slot it takes on an interface.
    fn slot(self) -> Hook {
        match self {
            Hook::Xdp | Hook::XdpNative | Hook::XdpGeneric => Hook::Xdp,
            Hook::TcIngress | Hook::TcIngressSnat => Hook::TcIngress,
            Hook::TcEgress | Hook::TcEgressSnat => Hook::TcEgress,
        }
    }

    pub fn is_snat(self) -> bool {
        matches!(self, Hook::TcIngressSnat | Hook::TcEgressSnat)
    }

    pub fn is_xdp(self) -> bool {
        matches!(self, Hook::Xdp | Hook::XdpNative | Hook::XdpGeneric)
    }

    /// Two hooks that cannot both hold a program on one interface.
    pub fn conflicts(self, other: Hook) -> bool {
        self.slot() == other.slot()
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A network namespace: its name (`ip netns`), a path to its file, or a
/// process living in it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Netns {
    Name(String),
    Path(PathBuf),
    Pid(u32),
}

impl Netns {
    /// `NAME`, `/PATH` or `pid:N` (a bare number is a pid too).
    pub fn parse(text: &str) -> Netns {
        if let Some(pid) = text.strip_prefix("pid:").and_then(|p| p.parse().ok()) {
            return Netns::Pid(pid);
        }
        if let Ok(pid) = text.parse() {
            return Netns::Pid(pid);
        }
        if text.starts_with('/') || text.starts_with('.') {
            return Netns::Path(text.into());
        }
        Netns::Name(text.into())
    }

    pub fn path(&self) -> PathBuf {
        match self {
            Netns::Name(n) => Path::new("/run/netns").join(n),
            Netns::Path(p) => p.clone(),
            Netns::Pid(pid) => PathBuf::from(format!("/proc/{pid}/ns/net")),
        }
    }
}

impl fmt::Display for Netns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Netns::Name(n) => f.write_str(n),
            Netns::Path(p) => write!(f, "{}", p.display()),
            Netns::Pid(p) => write!(f, "pid:{p}"),
        }
    }
}

/// One interface hook, possibly in another network namespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Target {
    pub iface: String,
    pub hook: Hook,
    pub netns: Option<Netns>,
}

impl Target {
    /// A file name for this target's pinned link (bpffs refuses dots in
    /// names).
    pub fn pin_name(&self) -> String {
        let ns = match &self.netns {
            None => String::new(),
            Some(n) => format!("{n}@"),
        };
        format!("{ns}{}@{}", self.iface, self.hook.as_str()).replace(
            |c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '@',
            "_",
        )
    }

    /// The same interface and a hook that would collide with this one.
    pub fn collides(&self, other: &Target) -> bool {
        self.iface == other.iface && self.netns == other.netns && self.hook.conflicts(other.hook)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.iface, self.hook)?;
        if let Some(ns) = &self.netns {
            write!(f, " (netns {ns})")?;
        }
        Ok(())
    }
}

/// Run `f` with the calling context in a network namespace (on a thread of
/// its own: a namespace switch applies to one thread).
pub fn in_netns<T: Send>(
    netns: Option<&Netns>,
    f: impl FnOnce() -> Result<T, Error> + Send,
) -> Result<T, Error> {
    let Some(ns) = netns else {
        return f();
    };
    let path = ns.path();
    let file = std::fs::File::open(&path).map_err(|e| {
        Error::Kernel(format!(
            "cannot open network namespace {ns} ({}): {e}",
            path.display()
        ))
    })?;
    std::thread::scope(|s| {
        s.spawn(move || {
            // SAFETY: setns on a valid namespace fd; affects this thread only.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(Error::Kernel(format!(
                    "cannot enter network namespace {ns}: {}",
                    std::io::Error::last_os_error()
                )));
            }
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(Error::Kernel("namespace thread failed".into())))
    })
}

/// The index of an interface in the calling thread's namespace.
pub fn ifindex(iface: &str) -> Result<u32, Error> {
    let name =
        CString::new(iface).map_err(|_| Error::Kernel(format!("bad interface name `{iface}`")))?;
    // SAFETY: a valid C string.
    match unsafe { libc::if_nametoindex(name.as_ptr()) } {
        0 => Err(Error::Kernel(format!(
            "no interface `{iface}` ({}); `ip link` lists them",
            std::io::Error::last_os_error()
        ))),
        i => Ok(i),
    }
}

fn last_error(what: &str) -> Error {
    Error::Kernel(format!("{what}: {}", std::io::Error::last_os_error()))
}

fn c_path(path: &Path) -> Result<CString, Error> {
    CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| Error::Kernel(format!("bad path {}", path.display())))
}

/// A kernel link: one program attached to one hook.
#[derive(Debug)]
pub struct Link {
    fd: OwnedFd,
}

impl Link {
    /// Attach `prog` to `target`.
    pub fn attach(prog: BorrowedFd<'_>, target: &Target) -> Result<Link, Error> {
        let prog = prog.as_raw_fd();
        in_netns(target.netns.as_ref(), || {
            let ifindex = ifindex(&target.iface)?;
            let (attach_type, flags) = match target.hook {
                Hook::Xdp => (libbpf_sys::BPF_XDP, 0),
                Hook::XdpNative => (libbpf_sys::BPF_XDP, libbpf_sys::XDP_FLAGS_DRV_MODE),
                Hook::XdpGeneric => (libbpf_sys::BPF_XDP, libbpf_sys::XDP_FLAGS_SKB_MODE),
                Hook::TcIngress | Hook::TcIngressSnat => (libbpf_sys::BPF_TCX_INGRESS, 0),
                Hook::TcEgress | Hook::TcEgressSnat => (libbpf_sys::BPF_TCX_EGRESS, 0),
            };
            // SAFETY: zeroed C options struct with its size set.
            let mut opts: libbpf_sys::bpf_link_create_opts = unsafe { std::mem::zeroed() };
            opts.sz = std::mem::size_of::<libbpf_sys::bpf_link_create_opts>() as _;
            opts.flags = flags;
            // SAFETY: valid fd and options.
            let fd =
                unsafe { libbpf_sys::bpf_link_create(prog, ifindex as i32, attach_type, &opts) };
            if fd < 0 {
                let e = std::io::Error::from_raw_os_error(-fd);
                let hint = match (-fd, target.hook) {
                    (libc::EBUSY, _) | (libc::EEXIST, _) => {
                        "; another XDP program holds the interface (`ip link show` names it)"
                    }
                    (libc::EOPNOTSUPP, Hook::XdpNative) => {
                        "; the driver has no native XDP: use xdp-generic"
                    }
                    _ => "",
                };
                return Err(Error::Kernel(format!(
                    "cannot attach to {target}: {e}{hint}"
                )));
            }
            // SAFETY: a new fd we own.
            Ok(Link {
                fd: unsafe { OwnedFd::from_raw_fd(fd) },
            })
        })
    }

    /// Open a pinned link.
    pub fn open(path: &Path) -> Result<Link, Error> {
        let c = c_path(path)?;
        // SAFETY: valid C string.
        let fd = unsafe { libbpf_sys::bpf_obj_get(c.as_ptr()) };
        if fd < 0 {
            return Err(last_error(&format!("cannot open link {}", path.display())));
        }
        // SAFETY: a new fd we own.
        Ok(Link {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Keep the link (and the attachment) after this process exits.
    pub fn pin(&self, path: &Path) -> Result<(), Error> {
        pin_fd(self.fd.as_fd(), path)
    }

    /// Swap the program, atomically for the packets; only if `old` is
    /// still the one attached.
    pub fn update(&self, new: BorrowedFd<'_>, old: BorrowedFd<'_>) -> Result<(), Error> {
        let opts = libbpf_sys::bpf_link_update_opts {
            sz: std::mem::size_of::<libbpf_sys::bpf_link_update_opts>() as _,
            flags: libbpf_sys::BPF_F_REPLACE,
            old_prog_fd: old.as_raw_fd() as u32,
            ..Default::default()
        };
        // SAFETY: valid fds and options.
        let r = unsafe { libbpf_sys::bpf_link_update(self.fd.as_raw_fd(), new.as_raw_fd(), &opts) };
        if r < 0 {
            return Err(Error::Kernel(format!(
                "cannot swap the program of a link: {}",
                std::io::Error::from_raw_os_error(-r)
            )));
        }
        Ok(())
    }

    /// Detach now, even while pinned elsewhere.
    pub fn detach(self) -> Result<(), Error> {
        // SAFETY: valid fd.
        let r = unsafe { libbpf_sys::bpf_link_detach(self.fd.as_raw_fd()) };
        if r < 0 {
            return Err(Error::Kernel(format!(
                "cannot detach: {}",
                std::io::Error::from_raw_os_error(-r)
            )));
        }
        Ok(())
    }

    /// The attached program's id and the interface index (0 once the
    /// interface is gone: the link is then defunct).
    pub fn info(&self) -> Result<(u32, u32), Error> {
        // SAFETY: zeroed out-parameter of the size we pass.
        let mut info: libbpf_sys::bpf_link_info = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libbpf_sys::bpf_link_info>() as u32;
        // SAFETY: valid fd and buffer.
        let r = unsafe {
            libbpf_sys::bpf_link_get_info_by_fd(self.fd.as_raw_fd(), &mut info, &mut len)
        };
        if r < 0 {
            return Err(last_error("cannot read link info"));
        }
        // SAFETY: xdp and tcx both start with the interface index.
        let ifindex = unsafe { info.__bindgen_anon_1.xdp.ifindex };
        Ok((info.prog_id, ifindex))
    }

    /// The program attached now.
    pub fn program(&self) -> Result<OwnedFd, Error> {
        let (id, _) = self.info()?;
        prog_by_id(id)
    }
}

/// A program by its kernel id.
pub fn prog_by_id(id: u32) -> Result<OwnedFd, Error> {
    // SAFETY: plain syscall wrapper.
    let fd = unsafe { libbpf_sys::bpf_prog_get_fd_by_id(id) };
    if fd < 0 {
        return Err(last_error(&format!("no program with id {id}")));
    }
    // SAFETY: a new fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Pin any BPF object (program, map, link) at `path` in bpffs.
pub fn pin_fd(fd: BorrowedFd<'_>, path: &Path) -> Result<(), Error> {
    let c = c_path(path)?;
    // SAFETY: valid fd and C string.
    if unsafe { libbpf_sys::bpf_obj_pin(fd.as_raw_fd(), c.as_ptr()) } != 0 {
        return Err(last_error(&format!("cannot pin {}", path.display())));
    }
    Ok(())
}

/// Open any pinned BPF object.
pub fn open_pinned(path: &Path) -> Result<OwnedFd, Error> {
    let c = c_path(path)?;
    // SAFETY: valid C string.
    let fd = unsafe { libbpf_sys::bpf_obj_get(c.as_ptr()) };
    if fd < 0 {
        return Err(last_error(&format!("cannot open {}", path.display())));
    }
    // SAFETY: a new fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
