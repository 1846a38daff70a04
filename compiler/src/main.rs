//! The `cilc` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use cilc::driver::{self, CheckOptions, Format, Outcome};

#[derive(Parser)]
#[command(
    name = "cilc",
    version,
    about = "Compile container network policy into eBPF programs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// When to colour diagnostics.
    #[arg(long, global = true, value_enum, default_value_t = Color::Auto)]
    color: Color,
}

#[derive(Subcommand)]
enum Import {
    /// A ClassBench filter file → a first-match chain (`rN` = line N).
    Classbench {
        file: PathBuf,
        /// Name of the chain.
        #[arg(long, default_value = "classbench")]
        name: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Dir {
    Ingress,
    Egress,
}

#[derive(Clone, Copy, ValueEnum)]
enum ExplainFormat {
    Human,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum Color {
    /// Colour when stderr is a terminal and NO_COLOR is not set.
    Auto,
    Always,
    Never,
}

// Parsed once per run: the size of the explain variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Check policies: syntax, names, values and rule combinations.
    Check {
        /// Policy files (`-` for standard input).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Output format of the diagnostics.
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
        /// Fail (exit 1) on warnings too (notes never fail).
        #[arg(long)]
        deny_warnings: bool,
        /// Skip the lints from the decision diagrams (shadowed and
        /// redundant rules, overlapping denies, policies that allow nothing
        /// or everything).
        #[arg(long)]
        no_lints: bool,
    },
    /// Print policies in canonical form (comments kept).
    Fmt {
        /// Policy files (`-` for standard input).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Print the names of files that are not formatted, and fail if any.
        #[arg(long, conflicts_with = "write")]
        check: bool,
        /// Rewrite the files in place.
        #[arg(long, short)]
        write: bool,
    },
    /// Explain what happens to a packet, and which rules decide.
    ///
    /// Give the packet with flags, or as one line with --packet (the form
    /// of tests/semantics, e.g. "ingress local app=web peer world
    /// 192.0.2.1 -> 10.0.0.5 tcp 40000 443").
    Explain {
        /// The policy file.
        file: PathBuf,
        /// The whole packet as one line (overrides the other packet flags).
        #[arg(long)]
        packet: Option<String>,
        /// Source address.
        #[arg(long, required_unless_present = "packet")]
        from: Option<String>,
        /// Destination address.
        #[arg(long, required_unless_present = "packet")]
        to: Option<String>,
        /// Ingress (the packet arrives at the local side) or egress.
        #[arg(long, value_enum, default_value_t = Dir::Ingress)]
        direction: Dir,
        /// The local side: `host` or an endpoint `LABELS[@NAMESPACE][+PORTNAME=PORT]`,
        /// e.g. `app=web,tier=front@shop+http=8080`.
        #[arg(long, default_value = "host")]
        endpoint: String,
        /// The peer: `world`, `host`, or an endpoint as for --endpoint.
        #[arg(long, default_value = "world")]
        peer: String,
        /// TCP destination port.
        #[arg(long, group = "l4")]
        tcp: Option<u16>,
        /// UDP destination port.
        #[arg(long, group = "l4")]
        udp: Option<u16>,
        /// SCTP destination port.
        #[arg(long, group = "l4")]
        sctp: Option<u16>,
        /// ICMP TYPE[/CODE].
        #[arg(long, group = "l4")]
        icmp: Option<String>,
        /// ICMPv6 TYPE[/CODE].
        #[arg(long, group = "l4")]
        icmpv6: Option<String>,
        /// Another IP protocol, by number.
        #[arg(long, group = "l4")]
        proto: Option<u8>,
        /// Source port (TCP, UDP, SCTP).
        #[arg(long, default_value_t = 40000)]
        sport: u16,
        /// TCP flags, e.g. `syn` or `syn|ack`.
        #[arg(long)]
        flags: Option<String>,
        /// An HTTP request: "METHOD PATH", e.g. "GET /api/v1/items".
        #[arg(long)]
        http: Option<String>,
        /// The HTTP Host header.
        #[arg(long, requires = "http")]
        host: Option<String>,
        /// An HTTP header NAME=VALUE (repeatable).
        #[arg(long, requires = "http")]
        header: Vec<String>,
        /// A DNS query name.
        #[arg(long)]
        dns: Option<String>,
        /// A TLS server name (SNI).
        #[arg(long)]
        sni: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ExplainFormat::Human)]
        format: ExplainFormat,
    },
    /// Convert a rule set of another tool to `.cpl`.
    Import {
        #[command(subcommand)]
        what: Import,
    },
    /// Run a ClassBench trace through the reference evaluator and compare
    /// each packet's deciding rule with the expected first match.
    Trace {
        /// The ClassBench filter file.
        filters: PathBuf,
        /// The trace file.
        trace: PathBuf,
        /// A file of 0-based first-match indices, one per trace line (without
        /// it, a six-column trace's last column is the exact 1-based match and
        /// a seven-column trace's an upper bound).
        #[arg(long)]
        truth: Option<PathBuf>,
    },
    /// Build the decision diagrams of a policy: print them, or their
    /// statistics and build time with --stats.
    Tree {
        /// A policy file, or a ClassBench filter file with --classbench.
        file: PathBuf,
        /// Print statistics instead of the diagrams.
        #[arg(long)]
        stats: bool,
        /// Read FILE as a ClassBench filter set.
        #[arg(long)]
        classbench: bool,
        /// Terms at or below this count become a linear leaf.
        #[arg(long, default_value_t = 4)]
        leaf_size: usize,
    },
    /// Draw the decision diagrams (Graphviz DOT, or SVG/PNG through `dot`).
    Graph {
        /// A policy file (`-` for standard input).
        file: PathBuf,
        /// Output format; svg and png need Graphviz's `dot`.
        #[arg(long, value_enum, default_value_t = driver::GraphFormat::Dot)]
        format: driver::GraphFormat,
        /// Write here instead of standard output (needed for png).
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Only this direction.
        #[arg(long, value_enum)]
        direction: Option<DirectionArg>,
        /// Only this IP family (4 or 6).
        #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(["4", "6"]))]
        family: Option<String>,
        /// Refuse to draw more nodes than this.
        #[arg(long, default_value_t = 400)]
        max_nodes: usize,
    },
    /// The packets whose verdict changes between two policies, as flow
    /// classes (exit 0 when equivalent, 1 when not, 2 on errors).
    Diff {
        /// The policy before the change.
        old: PathBuf,
        /// The policy after it.
        new: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = DiffFormat::Human)]
        format: DiffFormat,
    },
    /// Compile a policy to a BPF object (XDP and TC programs).
    Compile {
        /// A policy file (`-` for standard input).
        file: PathBuf,
        /// Where to write the object.
        #[arg(long, short, default_value = "policy.bpf.o")]
        output: PathBuf,
        /// `auto` (tree or table by the cost model), `tree` (the decision
        /// diagrams as code), `table` (as data walked by a loop), `linear`
        /// (every rule in turn), `parse-only`.
        #[arg(long, value_enum, default_value_t = cilc::codegen::Strategy::Auto)]
        strategy: cilc::codegen::Strategy,
        /// The artifact this one will replace on nodes: say whether the
        /// change is data only (a node's `replace` keeps the programs).
        #[arg(long)]
        base: Option<PathBuf>,
        /// A directory of built diagram parts: each subject (the policies
        /// of one selector, or the whole of a chain) whose terms are
        /// unchanged is read from it, not rebuilt; new ones are stored.
        /// The same object as without it; safe to delete at any time.
        #[arg(long, value_name = "DIR")]
        cache: Option<PathBuf>,
    },
    /// Load a compiled object and judge packets with it in the kernel.
    Run {
        /// The object (from `cilc compile`).
        object: PathBuf,
        /// A packet, as `explain --packet` takes it (repeatable).
        #[arg(long)]
        packet: Vec<String>,
        /// A ClassBench trace to run (the object compiled from its filters).
        #[arg(long)]
        trace: Option<PathBuf>,
        /// The trace's first-match truth file, to check against.
        #[arg(long, requires = "trace")]
        truth: Option<PathBuf>,
        /// A capture (pcap or pcapng of Ethernet frames) to judge frame by
        /// frame.
        #[arg(long)]
        pcap: Option<PathBuf>,
        /// The identity of an address in the capture, as
        /// `ADDRESS=IDENTITY` (e.g. `10.0.0.5=app=web@shop`; repeatable);
        /// other addresses are world.
        #[arg(long, requires = "pcap")]
        identity: Vec<String>,
        /// The capture's frames leave the endpoint (judged by the TC egress
        /// program); without it they arrive.
        #[arg(long, requires = "pcap")]
        egress: bool,
        /// Judge ingress with the TC program instead of XDP.
        #[arg(long)]
        tc: bool,
    },
    /// Compile a policy with several strategies, load each, and time
    /// packets through it in the kernel (ns/packet, compile, load,
    /// instructions), checking every verdict against the evaluator.
    Bench {
        /// A policy file (`-` for standard input).
        file: PathBuf,
        /// A packet, as `explain --packet` takes it (repeatable).
        #[arg(long)]
        packet: Vec<String>,
        /// A file of packets, one per line in the `explain --packet` form
        /// (`#` comments and blank lines skipped).
        #[arg(long)]
        packets: Option<PathBuf>,
        /// A ClassBench trace (the policy imported from its filters).
        #[arg(long)]
        trace: Option<PathBuf>,
        /// At most this many packets, spread evenly over the input.
        #[arg(long, default_value_t = 100)]
        sample: usize,
        /// Runs per packet (BPF_PROG_TEST_RUN's repeat).
        #[arg(long, default_value_t = 100_000)]
        repeat: u32,
        /// Strategies to compare.
        #[arg(long, value_enum, value_delimiter = ',', default_values_t = [
            cilc::codegen::Strategy::ParseOnly,
            cilc::codegen::Strategy::Linear,
            cilc::codegen::Strategy::Tree,
            cilc::codegen::Strategy::Table,
        ])]
        strategy: Vec<cilc::codegen::Strategy>,
        /// Judge ingress with the TC program instead of XDP.
        #[arg(long)]
        tc: bool,
        /// Also time connection tracking (tree strategy, TC programs): a
        /// new flow's packet, a tracked flow's next packet, its reply (the
        /// fast path), against the same packet with tracking off.
        #[arg(long)]
        conntrack: bool,
        /// `human` (a table) or `json`.
        #[arg(long, value_enum, default_value_t = DiffFormat::Human)]
        format: DiffFormat,
    },
    /// Show what a compiled object holds: manifest, sections, programs.
    Inspect {
        /// The object.
        object: PathBuf,
    },
    /// Write a synthetic policy (for tests and benchmarks) to stdout.
    Gen {
        /// Number of rules.
        #[arg(long, default_value_t = 1000)]
        rules: usize,
        /// Seed of the generator (same seed, same policy).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Write this many packet lines for the policy of `--rules`
        /// instead (endpoints its selectors pick, peers in its address
        /// sets; for `cilc bench --packets`).
        #[arg(long)]
        packets: Option<usize>,
    },
    /// The node-side verbs (load, attach, detach, replace, status, stats,
    /// conntrack, gc, unload): the same as `cilc-node`'s.
    #[command(flatten)]
    Node(runtime_loader::cli::NodeCommand),
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DiffFormat {
    Human,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum DirectionArg {
    Ingress,
    Egress,
}

fn use_color(c: Color) -> bool {
    use std::io::IsTerminal;
    match c {
        Color::Always => true,
        Color::Never => false,
        Color::Auto => {
            std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                && std::io::stderr().is_terminal()
        }
    }
}

fn main() -> ExitCode {
    // A closed pipe (`cilc inspect x.o | head`) ends the process quietly,
    // as for other command-line tools, instead of a failed write.
    // SAFETY: restoring a signal's default action at start-up, before any
    // thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprint!("{}", driver::internal_error(&format!("{msg}{place}")));
    }));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let color = use_color(cli.color);
    let mut out = Outcome::default();
    let result = match cli.command {
        Command::Node(cmd) => return runtime_loader::cli::run(cmd),
        Command::Check {
            files,
            format,
            deny_warnings,
            no_lints,
        } => {
            let inputs = driver::read_inputs(&files, &mut out);
            let r = driver::check(
                &inputs,
                &CheckOptions {
                    format,
                    deny_warnings,
                    color,
                    lints: !no_lints,
                },
            );
            merge(out, r)
        }
        Command::Fmt {
            files,
            check,
            write,
        } => {
            let inputs = driver::read_inputs(&files, &mut out);
            let r = driver::fmt(&inputs, check, write, color);
            merge(out, r)
        }
        Command::Explain {
            file,
            packet,
            from,
            to,
            direction,
            endpoint,
            peer,
            tcp,
            udp,
            sctp,
            icmp,
            icmpv6,
            proto,
            sport,
            flags,
            http,
            host,
            header,
            dns,
            sni,
            format,
        } => {
            let line = packet.unwrap_or_else(|| {
                let dir = match direction {
                    Dir::Ingress => "ingress",
                    Dir::Egress => "egress",
                };
                let icmp_of =
                    |t: &str| t.replace('/', " ") + if t.contains('/') { "" } else { " 0" };
                let l4 = match (tcp, udp, sctp, &icmp, &icmpv6, proto) {
                    (Some(p), ..) => format!("tcp {sport} {p}"),
                    (_, Some(p), ..) => format!("udp {sport} {p}"),
                    (_, _, Some(p), ..) => format!("sctp {sport} {p}"),
                    (_, _, _, Some(t), ..) => format!("icmp {}", icmp_of(t)),
                    (_, _, _, _, Some(t), _) => format!("icmpv6 {}", icmp_of(t)),
                    (.., Some(p)) => format!("proto {p}"),
                    _ => "proto 0".to_string(),
                };
                let mut line = format!(
                    "{dir} local {endpoint} peer {peer} {} -> {} {l4}",
                    from.unwrap_or_default(),
                    to.unwrap_or_default()
                );
                if let Some(f) = flags {
                    line += &format!(" flags {f}");
                }
                if let Some(h) = http {
                    line += &format!(" http {h}");
                    if let Some(host) = host {
                        line += &format!(" host {host}");
                    }
                    for h in header {
                        line += &format!(" header {h}");
                    }
                }
                if let Some(n) = dns {
                    line += &format!(" dns {n}");
                }
                if let Some(n) = sni {
                    line += &format!(" tls {n}");
                }
                line
            });
            let inputs = driver::read_inputs(&[file], &mut out);
            let format = match format {
                ExplainFormat::Human => Format::Human,
                ExplainFormat::Json => Format::Json,
            };
            let r = match inputs.first() {
                Some(input) => driver::explain(input, &line, format, color),
                None => Outcome::default(),
            };
            merge(out, r)
        }
        Command::Import {
            what: Import::Classbench { file, name },
        } => {
            let inputs = driver::read_inputs(&[file], &mut out);
            let r = inputs
                .first()
                .map(|i| driver::import_classbench(i, &name))
                .unwrap_or_default();
            merge(out, r)
        }
        Command::Trace {
            filters,
            trace,
            truth,
        } => {
            let mut paths = vec![filters, trace];
            paths.extend(truth);
            let inputs = driver::read_inputs(&paths, &mut out);
            let r = if inputs.len() == paths.len() {
                driver::trace_classbench(&inputs[0], &inputs[1], inputs.get(2))
            } else {
                Outcome::default()
            };
            merge(out, r)
        }
        Command::Compile {
            file,
            output,
            strategy,
            base,
            cache,
        } => {
            let inputs = driver::read_inputs(&[file], &mut out);
            let r = inputs
                .first()
                .map(|i| {
                    driver::compile(
                        i,
                        &output,
                        strategy,
                        base.as_deref(),
                        cache.as_deref(),
                        color,
                    )
                })
                .unwrap_or_default();
            merge(out, r)
        }
        Command::Run {
            object,
            packet,
            trace,
            truth,
            pcap,
            identity,
            egress,
            tc,
        } => {
            let read = |p: &PathBuf| {
                std::fs::read_to_string(p)
                    .map_err(|e| format!("cannot read `{}`: {e}", p.display()))
            };
            let capture = pcap
                .as_ref()
                .map(|p| {
                    std::fs::read(p).map_err(|e| format!("cannot read `{}`: {e}", p.display()))
                })
                .transpose();
            let texts = (
                trace.as_ref().map(read).transpose(),
                truth.as_ref().map(read).transpose(),
                capture,
            );
            match texts {
                (Ok(t), Ok(u), Ok(c)) => {
                    let input = driver::RunInput {
                        trace: t.as_deref().map(|t| (t, u.as_deref())),
                        pcap: c.as_deref(),
                        identities: &identity,
                        egress,
                    };
                    let r = driver::run(&object, &packet, &input, tc);
                    merge(out, r)
                }
                (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                    out.stderr.push_str(&format!("error: {e}\n"));
                    out.code = 2;
                    out
                }
            }
        }
        Command::Inspect { object } => merge(out, driver::inspect(&object)),
        Command::Bench {
            file,
            packet,
            packets,
            trace,
            sample,
            repeat,
            strategy,
            tc,
            conntrack,
            format,
        } => {
            let inputs = driver::read_inputs(&[file], &mut out);
            let read = |p: &PathBuf| {
                std::fs::read_to_string(p)
                    .map_err(|e| format!("cannot read `{}`: {e}", p.display()))
            };
            let texts = (
                packets.as_ref().map(read).transpose(),
                trace.as_ref().map(read).transpose(),
            );
            match (inputs.first(), texts) {
                (Some(input), (Ok(list), Ok(trace))) => {
                    let mut lines = packet;
                    lines.extend(
                        list.iter()
                            .flat_map(|t| t.lines())
                            .map(str::trim)
                            .filter(|l| !l.is_empty() && !l.starts_with('#'))
                            .map(str::to_string),
                    );
                    let opts = driver::BenchOptions {
                        strategies: strategy,
                        repeat,
                        sample,
                        tc,
                        conntrack,
                        json: format == DiffFormat::Json,
                    };
                    merge(
                        out,
                        driver::bench(input, &lines, trace.as_deref(), &opts, color),
                    )
                }
                (_, (Err(e), _) | (_, Err(e))) => {
                    out.stderr.push_str(&format!("error: {e}\n"));
                    out.code = 2;
                    out
                }
                (None, _) => {
                    out.code = 2;
                    out
                }
            }
        }
        Command::Diff { old, new, format } => {
            let inputs = driver::read_inputs(&[old, new], &mut out);
            if let [a, b] = &inputs[..] {
                let r = driver::diff(a, b, format == DiffFormat::Json, color);
                merge(out, r)
            } else {
                out.code = 2;
                out
            }
        }
        Command::Graph {
            file,
            format,
            output,
            direction,
            family,
            max_nodes,
        } => {
            let inputs = driver::read_inputs(&[file], &mut out);
            let opts = driver::GraphOptions {
                format,
                output,
                draw: cilc::tree::graph::Options {
                    direction: direction.map(|d| match d {
                        DirectionArg::Ingress => cilc::ir::Direction::Ingress,
                        DirectionArg::Egress => cilc::ir::Direction::Egress,
                    }),
                    v6: family.map(|f| f == "6"),
                    max_nodes,
                },
                color,
            };
            let r = inputs
                .first()
                .map(|i| driver::graph(i, &opts))
                .unwrap_or_default();
            merge(out, r)
        }
        Command::Tree {
            file,
            stats,
            classbench,
            leaf_size,
        } => {
            let inputs = driver::read_inputs(&[file], &mut out);
            let r = inputs
                .first()
                .map(|i| driver::tree(i, stats, classbench, leaf_size))
                .unwrap_or_default();
            merge(out, r)
        }
        Command::Gen {
            rules,
            seed,
            packets,
        } => Outcome {
            stdout: match packets {
                Some(count) => cilc::gen::packets(seed, rules, count),
                None => cilc::gen::policy(seed, rules),
            },
            ..Outcome::default()
        },
    };
    print!("{}", result.stdout);
    eprint!("{}", result.stderr);
    ExitCode::from(result.code as u8)
}

/// Reading errors (exit 2) win over what the verb found.
fn merge(read: Outcome, verb: Outcome) -> Outcome {
    Outcome {
        stdout: verb.stdout,
        stderr: read.stderr + &verb.stderr,
        code: if read.code != 0 { read.code } else { verb.code },
    }
}
