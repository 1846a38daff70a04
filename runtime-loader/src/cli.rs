//! The node-side verbs, shared by `cilc-node` (no LLVM) and `cilc`.
//!
//! Input: parsed arguments; output: text or JSON on stdout, errors on
//! stderr (`error: …` with what to do), exit status 0 or 1.

use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};

use crate::conntrack::{Settings, Timeouts};
use crate::install::{IdentityEntry, Installation, BPFFS, RUN_DIR};
use crate::link::{Hook, Netns, Target};
use crate::{Artifact, Error};

/// Which installation.
#[derive(Args, Debug, Clone)]
pub struct Place {
    /// Installation name (one per set of hooks a node enforces together).
    #[arg(long, default_value = "default")]
    pub name: String,
    /// bpffs mount point (mounted if it is not one).
    #[arg(long, default_value = BPFFS)]
    pub bpffs: PathBuf,
    /// Where installation records live.
    #[arg(long, default_value = RUN_DIR)]
    pub run_dir: PathBuf,
}

impl Place {
    fn installation(&self) -> Result<Installation, Error> {
        Installation::new(&self.name, &self.bpffs, &self.run_dir)
    }
}

/// One hook of one interface.
#[derive(Args, Debug, Clone)]
pub struct TargetArgs {
    /// Interface name.
    pub iface: String,
    /// xdp, xdp-native, xdp-generic, tc-ingress or tc-egress.
    #[arg(long, value_parser = Hook::parse)]
    pub hook: Hook,
    /// Network namespace of the interface: a name (ip netns), a path, or pid:N.
    #[arg(long)]
    pub netns: Option<String>,
}

impl TargetArgs {
    fn target(&self) -> Target {
        Target {
            iface: self.iface.clone(),
            hook: self.hook,
            netns: self.netns.as_deref().map(Netns::parse),
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Format {
    Table,
    Json,
    Prometheus,
}

#[derive(Subcommand, Debug)]
pub enum NodeCommand {
    /// Load an artifact into the kernel and pin it (attach with `attach`).
    Load {
        artifact: PathBuf,
        #[command(flatten)]
        place: Place,
        /// Give an address or prefix an identity: `10.0.1.5=app=web@shop`.
        #[arg(long = "identity", value_parser = IdentityEntry::parse)]
        identities: Vec<IdentityEntry>,
        /// Judge every packet by policy, replies included.
        #[arg(long)]
        no_conntrack: bool,
        /// Pass what policy would drop, counting it as audit-would-drop.
        #[arg(long)]
        audit: bool,
        /// IPv4 conntrack entries.
        #[arg(long, default_value_t = Settings::default().ct4_max)]
        ct4_max: u32,
        /// IPv6 conntrack entries.
        #[arg(long, default_value_t = Settings::default().ct6_max)]
        ct6_max: u32,
        /// Seconds a TCP flow may take to complete its handshake.
        #[arg(long, default_value_t = Timeouts::default().syn.as_secs())]
        timeout_syn: u64,
        /// Seconds an idle established TCP flow is kept.
        #[arg(long, default_value_t = Timeouts::default().established.as_secs())]
        timeout_established: u64,
        /// Seconds a closed TCP flow is kept.
        #[arg(long, default_value_t = Timeouts::default().close.as_secs())]
        timeout_close: u64,
        /// Seconds an idle non-TCP flow is kept.
        #[arg(long, default_value_t = Timeouts::default().other.as_secs())]
        timeout_other: u64,
    },
    /// Attach the installed artifact to an interface hook.
    Attach {
        #[command(flatten)]
        target: TargetArgs,
        #[command(flatten)]
        place: Place,
    },
    /// Detach one hook (or `--all`).
    Detach {
        iface: Option<String>,
        #[arg(long, value_parser = Hook::parse)]
        hook: Option<Hook>,
        #[arg(long)]
        netns: Option<String>,
        #[arg(long, conflicts_with_all = ["iface", "hook", "netns"])]
        all: bool,
        #[command(flatten)]
        place: Place,
    },
    /// Swap in a new artifact on every hook at once, keeping conntrack.
    Replace {
        artifact: PathBuf,
        #[command(flatten)]
        place: Place,
    },
    /// What is installed and attached where.
    Status {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        #[command(flatten)]
        place: Place,
    },
    /// Counters by direction and reason, by rule, and conntrack's.
    Stats {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Shorthand for --format prometheus.
        #[arg(long)]
        prometheus: bool,
        /// Serve /metrics (Prometheus) on this address instead of printing.
        #[arg(long)]
        listen: Option<String>,
        #[command(flatten)]
        place: Place,
    },
    /// List tracked connections.
    Conntrack {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        #[command(flatten)]
        place: Place,
    },
    /// Remove expired conntrack entries (non-TCP first when the table fills).
    Gc {
        /// Keep running, one pass every this many seconds.
        #[arg(long)]
        every: Option<u64>,
        #[command(flatten)]
        place: Place,
    },
    /// Detach everything and remove the installation's pins and record.
    Unload {
        #[command(flatten)]
        place: Place,
    },
}

/// Run a node command; prints errors itself.
pub fn run(cmd: NodeCommand) -> ExitCode {
    match execute(cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn ago(since: u64) -> String {
    let s = crate::install::unix_now().saturating_sub(since);
    match s {
        0..=119 => format!("{s}s ago"),
        120..=7199 => format!("{}m ago", s / 60),
        _ => format!("{}h ago", s / 3600),
    }
}

fn execute(cmd: NodeCommand) -> Result<(), Error> {
    match cmd {
        NodeCommand::Load {
            artifact,
            place,
            identities,
            no_conntrack,
            audit,
            ct4_max,
            ct6_max,
            timeout_syn,
            timeout_established,
            timeout_close,
            timeout_other,
        } => {
            let art = Artifact::read(&artifact)?;
            let settings = Settings {
                conntrack: !no_conntrack,
                audit,
                ct4_max,
                ct6_max,
                timeouts: Timeouts {
                    syn: Duration::from_secs(timeout_syn),
                    established: Duration::from_secs(timeout_established),
                    close: Duration::from_secs(timeout_close),
                    other: Duration::from_secs(timeout_other),
                },
                ..Settings::default()
            };
            let inst = place.installation()?;
            let r = inst.load(&art, settings, identities)?;
            println!(
                "loaded {} ({} rules, {}) as installation `{}`",
                &r.artifact_sha256[..12],
                r.rules,
                r.strategy,
                r.name
            );
        }
        NodeCommand::Attach { target, place } => {
            let t = target.target();
            place.installation()?.attach(t.clone())?;
            println!("attached {t}");
        }
        NodeCommand::Detach {
            iface,
            hook,
            netns,
            all,
            place,
        } => {
            let inst = place.installation()?;
            let which = match (all, iface, hook) {
                (true, _, _) => None,
                (false, Some(iface), Some(hook)) => Some(Target {
                    iface,
                    hook,
                    netns: netns.as_deref().map(Netns::parse),
                }),
                _ => return Err(Error::Kernel(
                    "say which hook: `detach IFACE --hook HOOK [--netns NS]`, or `detach --all`"
                        .into(),
                )),
            };
            for t in inst.detach(which.as_ref())? {
                println!("detached {t}");
            }
        }
        NodeCommand::Replace { artifact, place } => {
            // Checked (layout, sealed hash) before anything is touched.
            let art = Artifact::read(&artifact)?;
            let r = place.installation()?.replace(&art)?;
            println!(
                "replaced {} with {} on {} hook(s)",
                &r.from[..12.min(r.from.len())],
                &r.to[..12],
                r.swapped
            );
        }
        NodeCommand::Status { format, place } => {
            let s = place.installation()?.status()?;
            if let Format::Json = format {
                println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
                return Ok(());
            }
            let r = &s.record;
            println!("installation: {}  (pins {})", r.name, s.pins.display());
            println!(
                "artifact:     sha256 {}  {} rules, {}, {}",
                r.artifact_sha256, r.rules, r.strategy, r.compiler
            );
            println!("source:       sha256 {}", r.source_sha256);
            println!(
                "loaded:       {}  generation {}{}",
                ago(r.loaded_at),
                r.generation,
                r.replaced_at
                    .map(|t| format!(", replaced {}", ago(t)))
                    .unwrap_or_default()
            );
            println!(
                "conntrack:    {}{}",
                if r.settings.conntrack { "on" } else { "off" },
                if r.settings.audit { ", audit mode" } else { "" }
            );
            if s.attachments.is_empty() {
                println!("attached:     nothing (`attach IFACE --hook HOOK`)");
            }
            for a in &s.attachments {
                let state = match (a.attached, a.current) {
                    (true, true) => "enforcing".to_string(),
                    (true, false) => {
                        format!("runs program {} (not the installed one)", a.program_id)
                    }
                    (false, _) => "gone (interface removed?)".to_string(),
                };
                println!(
                    "attached:     {}  since {}  {state}",
                    a.target,
                    ago(a.since)
                );
            }
        }
        NodeCommand::Stats {
            format,
            prometheus,
            listen,
            place,
        } => {
            let inst = place.installation()?;
            if let Some(addr) = listen {
                return serve_metrics(&inst, &addr);
            }
            let s = inst.stats()?;
            match (prometheus, format) {
                (true, _) | (_, Format::Prometheus) => print!("{}", s.prometheus(&inst.name)),
                (_, Format::Json) => println!("{}", s.json()),
                (_, Format::Table) => print!("{}", s.table()),
            }
        }
        NodeCommand::Conntrack { format, place } => {
            let flows = place.installation()?.conntrack()?.flows()?;
            if let Format::Json = format {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&flows).unwrap_or_default()
                );
                return Ok(());
            }
            println!(
                "{:<7} {:<5} {:<40} {:<40} {:<12} {:>9} {:>9} {:>9}",
                "DIR", "PROTO", "SOURCE", "DESTINATION", "STATE", "EXPIRES", "PKTS", "REPLIES"
            );
            for f in flows {
                println!(
                    "{:<7} {:<5} {:<40} {:<40} {:<12} {:>8}s {:>9} {:>9}",
                    f.direction,
                    f.proto,
                    format!("{}:{}", f.src, f.sport),
                    format!("{}:{}", f.dst, f.dport),
                    f.state.as_str(),
                    f.expires_in.as_secs(),
                    f.packets[0],
                    f.packets[1]
                );
            }
        }
        NodeCommand::Gc { every, place } => {
            let inst = place.installation()?;
            loop {
                let g = inst.gc()?;
                println!(
                    "gc: removed {} tcp, {} other expired, {} other under pressure; {} kept",
                    g.tcp, g.other, g.pressure, g.kept
                );
                match every {
                    Some(s) => std::thread::sleep(Duration::from_secs(s.max(1))),
                    None => break,
                }
            }
        }
        NodeCommand::Unload { place } => {
            let inst = place.installation()?;
            inst.unload()?;
            println!("unloaded `{}`", inst.name);
        }
    }
    Ok(())
}

/// A minimal HTTP/1.1 server: GET /metrics → the Prometheus text.
fn serve_metrics(inst: &Installation, addr: &str) -> Result<(), Error> {
    let listener = std::net::TcpListener::bind(addr)
        .map_err(|e| Error::Kernel(format!("cannot listen on {addr}: {e}")))?;
    eprintln!("serving http://{addr}/metrics");
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let mut buf = [0u8; 2048];
        let n = stream.read(&mut buf).unwrap_or(0);
        let request = String::from_utf8_lossy(&buf[..n]);
        let path = request.split_whitespace().nth(1).unwrap_or("");
        let (status, body) = if path == "/metrics" {
            match inst.stats() {
                Ok(s) => ("200 OK", s.prometheus(&inst.name)),
                Err(e) => ("500 Internal Server Error", format!("{e}\n")),
            }
        } else {
            ("404 Not Found", "try /metrics\n".to_string())
        };
        let _ = write!(
            stream,
            "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }
    Ok(())
}
