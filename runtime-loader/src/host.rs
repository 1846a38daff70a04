//! The host's own addresses, read from the kernel over rtnetlink, and a
//! subscription to their changes: host policy (`policy ... on host`)
//! follows the addresses the node has, with no command when one is added.
//!
//! Input: the calling thread's network namespace; output: its addresses
//! (each a full-length prefix), and `Watch::wait` returning when they
//! change.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use ipnet::IpNet;

use crate::Error;

const RTMGRP_IPV4_IFADDR: u32 = 0x10;
const RTMGRP_IPV6_IFADDR: u32 = 0x100;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const RT_SCOPE_HOST: u8 = 254;

fn os(what: &str) -> Error {
    Error::Kernel(format!("{what}: {}", std::io::Error::last_os_error()))
}

fn socket(groups: u32) -> Result<OwnedFd, Error> {
    // SAFETY: plain socket calls; the fd is owned at once.
    unsafe {
        let fd = libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        );
        if fd < 0 {
            return Err(os("cannot open a netlink socket"));
        }
        let fd = OwnedFd::from_raw_fd(fd);
        let mut addr: libc::sockaddr_nl = std::mem::zeroed();
        addr.nl_family = libc::AF_NETLINK as u16;
        addr.nl_groups = groups;
        if libc::bind(
            fd.as_raw_fd(),
            &addr as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        ) != 0
        {
            return Err(os("cannot bind a netlink socket"));
        }
        Ok(fd)
    }
}

fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_ne_bytes([b[i], b[i + 1]])
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// The address of one RTM_NEWADDR payload (ifaddrmsg, then attributes).
fn address_of(msg: &[u8]) -> Option<IpAddr> {
    if msg.len() < 8 || msg[3] == RT_SCOPE_HOST {
        return None;
    }
    let family = msg[0] as i32;
    let (mut local, mut address) = (None, None);
    let mut at = 8;
    while at + 4 <= msg.len() {
        let len = u16_at(msg, at) as usize;
        let kind = u16_at(msg, at + 2);
        if len < 4 || at + len > msg.len() {
            break;
        }
        let data = &msg[at + 4..at + len];
        let ip = match (family, data.len()) {
            (libc::AF_INET, 4) => Some(IpAddr::V4(Ipv4Addr::new(
                data[0], data[1], data[2], data[3],
            ))),
            (libc::AF_INET6, 16) => {
                let mut o = [0u8; 16];
                o.copy_from_slice(data);
                Some(IpAddr::V6(Ipv6Addr::from(o)))
            }
            _ => None,
        };
        match kind {
            IFA_LOCAL => local = ip,
            IFA_ADDRESS => address = ip,
            _ => {}
        }
        at += (len + 3) & !3;
    }
    local.or(address)
}

/// Every address of the calling thread's namespace but loopback ones, each
/// as a full-length prefix, sorted.
pub fn addresses() -> Result<Vec<IpNet>, Error> {
    addresses_on(None)
}

/// The addresses of one interface (by index), or of all (`None`).
pub fn addresses_on(ifindex: Option<u32>) -> Result<Vec<IpNet>, Error> {
    let fd = socket(0)?;
    // nlmsghdr (16) + ifaddrmsg (8): a dump of every address.
    let mut req = [0u8; 24];
    req[0..4].copy_from_slice(&24u32.to_ne_bytes());
    req[4..6].copy_from_slice(&libc::RTM_GETADDR.to_ne_bytes());
    req[6..8].copy_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16).to_ne_bytes());
    req[8..12].copy_from_slice(&1u32.to_ne_bytes());
    // SAFETY: sending a buffer we own.
    if unsafe { libc::send(fd.as_raw_fd(), req.as_ptr() as *const _, req.len(), 0) } < 0 {
        return Err(os("cannot ask the kernel for addresses"));
    }
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        // SAFETY: receiving into a buffer we own.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr() as *mut _, buf.len(), 0) };
        if n < 0 {
            return Err(os("cannot read addresses"));
        }
        let mut at = 0;
        let n = n as usize;
        while at + 16 <= n {
            let len = u32_at(&buf, at) as usize;
            let kind = u16_at(&buf, at + 4);
            if len < 16 || at + len > n {
                break;
            }
            match kind as i32 {
                libc::NLMSG_DONE => {
                    out.sort();
                    out.dedup();
                    return Ok(out);
                }
                libc::NLMSG_ERROR => {
                    return Err(Error::Kernel("the kernel refused the address dump".into()))
                }
                _ if kind == libc::RTM_NEWADDR => {
                    let msg = &buf[at + 16..at + len];
                    // ifaddrmsg: family, prefix length, flags, scope, index.
                    let on = msg.len() >= 8 && ifindex.is_none_or(|i| u32_at(msg, 4) == i);
                    if let Some(ip) = address_of(msg).filter(|_| on) {
                        out.push(IpNet::from(ip));
                    }
                }
                _ => {}
            }
            at += (len + 3) & !3;
        }
    }
}

/// A subscription to address changes in the calling thread's namespace.
pub struct Watch {
    fd: OwnedFd,
}

impl Watch {
    pub fn new() -> Result<Watch, Error> {
        Ok(Watch {
            fd: socket(RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR)?,
        })
    }

    /// Wait up to `timeout` for an address to be added or removed; true if
    /// one was (the pending notifications are drained).
    pub fn wait(&self, timeout: Duration) -> Result<bool, Error> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd we own.
        let r = unsafe {
            libc::poll(
                &mut pfd,
                1,
                timeout.as_millis().min(i32::MAX as u128) as i32,
            )
        };
        if r < 0 {
            return Err(os("cannot wait for address changes"));
        }
        if r == 0 {
            return Ok(false);
        }
        let mut buf = vec![0u8; 1 << 16];
        // SAFETY: receiving into a buffer we own, without blocking.
        while unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr() as *mut _,
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        } > 0
        {}
        Ok(true)
    }
}

/// Keep an installation's host addresses equal to the calling thread's
/// namespace's until `stop` is set: one pass now, then one after every
/// change the kernel announces (and every 30 s, in case a notification was
/// lost). `report` hears (added, removed) when something changed. Each
/// pass also moves source NAT to the addresses its interfaces have now
/// (`Installation::nat_refresh`).
pub fn follow(
    inst: &crate::install::Installation,
    stop: &std::sync::atomic::AtomicBool,
    mut report: impl FnMut(&[IpNet], &[IpNet]),
) -> Result<(), Error> {
    // Subscribe before the first listing: nothing falls between them.
    let watch = Watch::new()?;
    let mut quiet = Duration::ZERO;
    let mut first = true;
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        let changed = watch.wait(Duration::from_millis(200))?;
        quiet = if changed {
            Duration::ZERO
        } else {
            quiet + Duration::from_millis(200)
        };
        if first || changed || quiet >= Duration::from_secs(30) {
            let (added, removed) = inst.host_set(&addresses()?)?;
            if !added.is_empty() || !removed.is_empty() {
                report(&added, &removed);
            }
            inst.nat_refresh()?;
            first = false;
            quiet = Duration::ZERO;
        }
    }
    Ok(())
}
