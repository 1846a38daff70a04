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
use crate::endpoint::EndpointSpec;
use crate::install::{How, IdentityEntry, Installation, BPFFS, RUN_DIR};
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
    #[arg(long, conflicts_with = "container")]
    pub netns: Option<String>,
    /// The interface is in this container's namespace (its id).
    #[arg(long)]
    pub container: Option<String>,
    /// auto, docker, containerd or cri-o.
    #[arg(long, default_value = "auto")]
    pub container_runtime: String,
}

impl TargetArgs {
    fn target(&self) -> Result<Target, Error> {
        let netns = match &self.container {
            Some(id) => {
                let rt = crate::container::Runtime::parse(&self.container_runtime)
                    .map_err(Error::Kernel)?;
                Some(crate::container::netns(id, rt)?)
            }
            None => self.netns.as_deref().map(Netns::parse),
        };
        Ok(Target {
            iface: self.iface.clone(),
            hook: self.hook,
            netns,
        })
    }
}

/// `MIN-MAX` (or one port).
fn parse_port_range(text: &str) -> Result<(u16, u16), String> {
    let (a, b) = text.split_once('-').unwrap_or((text, text));
    let port = |p: &str| {
        p.trim()
            .parse::<u16>()
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| format!("`{p}` is not a port (1-65535)"))
    };
    let (min, max) = (port(a)?, port(b)?);
    if min > max {
        return Err(format!("{min}-{max}: the range is empty (MIN-MAX)"));
    }
    Ok((min, max))
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Format {
    Table,
    Json,
    Prometheus,
}

/// An endpoint given on the command line.
#[derive(Args, Debug, Clone)]
pub struct EndpointArgs {
    /// The endpoint's name.
    #[arg(id = "endpoint", value_name = "ENDPOINT")]
    pub name: String,
    /// An address or prefix (repeatable).
    #[arg(long = "address", required = true, value_parser = crate::endpoint::parse_net)]
    pub addresses: Vec<ipnet::IpNet>,
    /// `key=value,key=value`.
    #[arg(long, default_value = "")]
    pub labels: String,
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// The namespace's labels, `key=value,...`.
    #[arg(long, default_value = "")]
    pub namespace_labels: String,
    /// A named container port, `NAME=NUMBER` (repeatable).
    #[arg(long = "port")]
    pub ports: Vec<String>,
    /// The interface it sits behind.
    #[arg(long)]
    pub iface: Option<String>,
}

impl EndpointArgs {
    fn spec(&self) -> Result<EndpointSpec, Error> {
        let bad = |e: String| Error::Kernel(format!("endpoint `{}`: {e}", self.name));
        let mut named_ports = std::collections::BTreeMap::new();
        for p in &self.ports {
            let (n, v) = p
                .split_once('=')
                .ok_or_else(|| bad(format!("expected --port NAME=NUMBER, got `{p}`")))?;
            let v: u16 = v
                .parse()
                .map_err(|_| bad(format!("port `{n}` needs a number, got `{v}`")))?;
            named_ports.insert(n.to_string(), v);
        }
        let spec = EndpointSpec {
            name: self.name.clone(),
            addresses: self.addresses.clone(),
            labels: crate::identity::pairs(&self.labels, "labels").map_err(bad)?,
            namespace: self.namespace.clone(),
            namespace_labels: crate::identity::pairs(&self.namespace_labels, "namespace labels")
                .map_err(bad)?,
            named_ports,
            interface: self.iface.clone(),
        };
        spec.check().map_err(Error::Kernel)?;
        Ok(spec)
    }
}

#[derive(Subcommand, Debug)]
pub enum EndpointCommand {
    /// Register a new endpoint; its addresses get its identity at once.
    Add {
        #[command(flatten)]
        endpoint: EndpointArgs,
        #[command(flatten)]
        place: Place,
    },
    /// Change an endpoint (labels, addresses, ports): the next packet sees it.
    Update {
        #[command(flatten)]
        endpoint: EndpointArgs,
        #[command(flatten)]
        place: Place,
    },
    /// Forget an endpoint: its addresses are world again.
    Remove {
        #[arg(id = "endpoint", value_name = "ENDPOINT")]
        name: String,
        #[command(flatten)]
        place: Place,
    },
    /// The registered endpoints.
    List {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        #[command(flatten)]
        place: Place,
    },
    /// Add or update every endpoint of a JSON file (one or a list), all or nothing.
    Apply {
        file: PathBuf,
        #[command(flatten)]
        place: Place,
    },
}

#[derive(Subcommand, Debug)]
pub enum NodeCommand {
    /// Endpoints: addresses with labels and named ports, updated live.
    #[command(subcommand)]
    Endpoint(EndpointCommand),
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
        /// Addresses and prefixes with an identity (endpoints, --identity).
        #[arg(long, default_value_t = Settings::default().idents_max)]
        idents_max: u32,
        /// Source NAT mappings (flows translated at once).
        #[arg(long, default_value_t = Settings::default().nat_max)]
        nat_max: u32,
        /// Source ports source NAT allocates: MIN-MAX.
        #[arg(long, default_value = "61000-65535", value_parser = parse_port_range)]
        nat_ports: (u16, u16),
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
        /// Source-NAT on this interface (the node's way out): rules with
        /// `snat` translate there, replies are translated back. Needs
        /// --hook tc-egress; tc-ingress is attached with it.
        #[arg(long)]
        snat: bool,
        /// Masquerade to this address (once per family) instead of the
        /// interface's own.
        #[arg(long = "snat-address", requires = "snat")]
        snat_addresses: Vec<std::net::IpAddr>,
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
    /// List source NAT interfaces and mappings.
    Nat {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
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
    /// Give the node's own addresses the `host` identity (host policy), and
    /// with --watch keep following them as they are added and removed.
    Host {
        #[arg(long)]
        watch: bool,
        /// The namespace whose addresses are the host's (default: ours).
        #[arg(long)]
        netns: Option<String>,
        #[command(flatten)]
        place: Place,
    },
    /// Remove expired conntrack entries (non-TCP first when the table fills)
    /// and the source NAT mappings of flows gone.
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

/// `endpoint add` (it must be new) or `endpoint update` (it must exist).
fn set_one(
    endpoint: EndpointArgs,
    place: Place,
    adding: bool,
    report: impl Fn(crate::install::EndpointChange),
) -> Result<(), Error> {
    let inst = place.installation()?;
    let exists = inst
        .record()?
        .endpoints
        .iter()
        .any(|e| e.name == endpoint.name);
    if adding && exists {
        return Err(Error::Kernel(format!(
            "endpoint `{}` exists; `endpoint update` changes it",
            endpoint.name
        )));
    }
    if !adding && !exists {
        return Err(Error::Kernel(format!(
            "no endpoint `{}`; `endpoint add` registers it",
            endpoint.name
        )));
    }
    report(inst.endpoint_set(&[endpoint.spec()?])?);
    Ok(())
}

fn endpoint(cmd: EndpointCommand) -> Result<(), Error> {
    let report = |c: crate::install::EndpointChange| {
        for (what, names) in [
            ("added", c.added),
            ("updated", c.updated),
            ("unchanged", c.unchanged),
        ] {
            for n in names {
                println!("{what} endpoint {n}");
            }
        }
    };
    match cmd {
        EndpointCommand::Add { endpoint, place } => set_one(endpoint, place, true, report)?,
        EndpointCommand::Update { endpoint, place } => set_one(endpoint, place, false, report)?,
        EndpointCommand::Remove { name, place } => {
            let ep = place.installation()?.endpoint_remove(&name)?;
            println!(
                "removed endpoint {} ({} addresses)",
                ep.name,
                ep.addresses.len()
            );
        }
        EndpointCommand::Apply { file, place } => {
            let specs = EndpointSpec::read_file(&file).map_err(Error::Kernel)?;
            report(place.installation()?.endpoint_set(&specs)?);
        }
        EndpointCommand::List { format, place } => {
            let eps = place.installation()?.record()?.endpoints;
            if let Format::Json = format {
                println!("{}", serde_json::to_string_pretty(&eps).unwrap_or_default());
                return Ok(());
            }
            println!(
                "{:<24} {:<16} {:<32} {:<32} PORTS",
                "NAME", "NAMESPACE", "ADDRESSES", "LABELS"
            );
            for e in eps {
                let join = |it: Vec<String>| it.join(",");
                println!(
                    "{:<24} {:<16} {:<32} {:<32} {}",
                    e.name,
                    e.namespace,
                    join(e.addresses.iter().map(|a| a.to_string()).collect()),
                    join(e.labels.iter().map(|(k, v)| format!("{k}={v}")).collect()),
                    join(
                        e.named_ports
                            .iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect()
                    ),
                );
            }
        }
    }
    Ok(())
}

fn execute(cmd: NodeCommand) -> Result<(), Error> {
    match cmd {
        NodeCommand::Endpoint(cmd) => return endpoint(cmd),
        NodeCommand::Load {
            artifact,
            place,
            identities,
            no_conntrack,
            audit,
            ct4_max,
            ct6_max,
            idents_max,
            nat_max,
            nat_ports,
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
                idents_max,
                nat_max,
                nat_ports,
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
        NodeCommand::Attach {
            target,
            snat,
            snat_addresses,
            place,
        } => {
            let t = target.target()?;
            if t.hook.is_snat() {
                return Err(Error::Kernel(format!(
                    "{} is what `attach IFACE --hook tc-egress --snat` attaches (both directions)",
                    t.hook
                )));
            }
            if !snat {
                place.installation()?.attach(t.clone())?;
                println!("attached {t}");
                return Ok(());
            }
            if t.hook != Hook::TcEgress {
                return Err(Error::Kernel(
                    "--snat translates where packets leave: use it with --hook tc-egress".into(),
                ));
            }
            let (nif, attached) =
                place
                    .installation()?
                    .attach_snat(&t.iface, t.netns.as_ref(), &snat_addresses)?;
            for a in attached {
                println!("attached {a}");
            }
            let addrs: Vec<String> = [nif.v4.map(|a| a.to_string()), nif.v6.map(|a| a.to_string())]
                .into_iter()
                .flatten()
                .collect();
            println!("{} source-NATs to {}", nif.iface, addrs.join(", "));
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
            let (from, to) = (&r.from[..12.min(r.from.len())], &r.to[..12]);
            match &r.how {
                How::Data { nodes } => println!(
                    "replaced {from} with {to}: same code, table of {nodes} nodes swapped under the running programs"
                ),
                How::Programs { because } => println!(
                    "replaced {from} with {to}: new programs on {} hook(s) ({because})",
                    r.swapped
                ),
            }
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
        NodeCommand::Nat { format, place } => {
            let inst = place.installation()?;
            let record = inst.record()?;
            let mappings = inst.nat()?.mappings()?;
            if let Format::Json = format {
                let v = serde_json::json!({ "interfaces": record.nat, "mappings": mappings });
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                return Ok(());
            }
            for n in &record.nat {
                let ns = n
                    .netns
                    .as_ref()
                    .map(|n| format!(" (netns {n})"))
                    .unwrap_or_default();
                let addrs: Vec<String> = [n.v4.map(|a| a.to_string()), n.v6.map(|a| a.to_string())]
                    .into_iter()
                    .flatten()
                    .collect();
                println!(
                    "interface {}{ns}: masquerade to {}",
                    n.iface,
                    addrs.join(", ")
                );
            }
            println!(
                "{:<5} {:<40} {:<40} {:<40} {:>8}",
                "PROTO", "SOURCE", "DESTINATION", "TRANSLATED SOURCE", "IDLE"
            );
            for m in mappings {
                println!(
                    "{:<5} {:<40} {:<40} {:<40} {:>7}s",
                    m.flow.proto,
                    format!("{}:{}", m.flow.src, m.flow.sport),
                    format!("{}:{}", m.flow.dst, m.flow.dport),
                    format!("{}:{}", m.addr, m.port),
                    m.idle.as_secs()
                );
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
        NodeCommand::Host {
            watch,
            netns,
            place,
        } => {
            let inst = place.installation()?;
            let ns = netns.as_deref().map(Netns::parse);
            let print = |added: &[ipnet::IpNet], removed: &[ipnet::IpNet]| {
                for a in added {
                    println!("host address {a}: host policy applies");
                }
                for a in removed {
                    println!("host address {a} gone");
                }
            };
            crate::link::in_netns(ns.as_ref(), || {
                if watch {
                    let never = std::sync::atomic::AtomicBool::new(false);
                    crate::host::follow(&inst, &never, print)
                } else {
                    let (added, removed) = inst.host_set(&crate::host::addresses()?)?;
                    print(&added, &removed);
                    Ok(())
                }
            })?;
        }
        NodeCommand::Gc { every, place } => {
            let inst = place.installation()?;
            loop {
                let g = inst.gc()?;
                let (c, n) = (g.conntrack, g.nat);
                println!(
                    "gc: removed {} tcp, {} other expired, {} other under pressure; {} kept; \
                     nat: removed {} mappings, {} orphans; {} kept",
                    c.tcp, c.other, c.pressure, c.kept, n.mappings, n.orphans, n.kept
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
