//! Back end: decision diagrams → a BPF ELF object.
//!
//! Stage: **`ir::Validated` + source → `Output`** (object bytes and the
//! manifest embedded in them). This module decides everything that is
//! policy-specific (which predicate bit each selector gets, which slot each
//! named port, the decision word each term produces, what the manifest
//! says); `llvm` only turns that plan into LLVM IR, links it with the
//! bitcode of `stdlib-bpf/cilc.c` and emits the object. See docs/backend.md.

mod llvm;
pub mod region;
pub mod table;
pub mod walk;

use cilc_grammar::ast::Span;
use runtime_loader::manifest::{self, Manifest};
use sha2::{Digest, Sha256};

use crate::diag::{render::Positions, Code, Diagnostic};
use crate::ir::{Selector, Subject, Validated};
use crate::resolve::{Action, Direction};
use crate::tree::{build, Atom, Diagram, EndIs, Forest, Node, Outcome, Side};

/// The bitcode of stdlib-bpf/cilc.c (compiler/build.rs).
const STDLIB: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/cilc.bc"));

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Strategy {
    /// Tree where the diagrams fit the verifier's budget as code, else
    /// table: decided by `choose` (docs/backend.md, "Choosing").
    Auto,
    /// The decision diagrams as code.
    Tree,
    /// Every rule tried in order: the naive baseline and a second oracle.
    Linear,
    /// The decision diagrams as data in a map, walked by one loop that is
    /// the same for every policy (table.rs): for policies too large for
    /// code.
    Table,
    /// Parse and look up identities, decide nothing (every IP packet gets
    /// "no policy"): the floor that benchmarks compare with.
    ParseOnly,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Auto => "auto",
            Strategy::Tree => "tree",
            Strategy::Linear => "linear",
            Strategy::Table => "table",
            Strategy::ParseOnly => "parse-only",
        }
    }
}

pub struct Options {
    pub strategy: Strategy,
    /// Say on stderr which phase a long compile is in (`cilc compile` on
    /// a terminal, for policies of more than 5,000 rules).
    pub progress: bool,
    /// Read and store each subject's diagram parts here (`--cache`).
    pub cache: Option<std::sync::Arc<crate::tree::cache::Cache>>,
}

impl Options {
    pub fn new(strategy: Strategy) -> Options {
        Options {
            strategy,
            progress: false,
            cache: None,
        }
    }
}

pub struct Output {
    pub object: Vec<u8>,
    pub manifest: Manifest,
}

/// How the generated code answers an atom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AtomCode {
    /// A predicate bit of one end's identity is set.
    Bit(Side, u32),
    /// None of these predicate bits is set.
    NoBit(Side, Vec<u32>),
    /// The destination names its port `dport` in this slot.
    Port(u32),
    /// `tcp_flags & mask == value`.
    Flags(u16, u16),
    /// Always true: L7 is judged by the proxy, not in BPF (the program
    /// allows the connection the L7 rule's L3/L4 part allows).
    True,
}

/// A diagram and the decision word each of its terms produces.
pub struct DiagramPlan<'a> {
    pub diagram: &'a Diagram,
    pub codes: Vec<u32>,
}

pub struct HookPlan<'a> {
    /// 0 ingress, 1 egress (`enum cilc_direction`).
    pub direction: u32,
    pub v6: bool,
    pub chains: Vec<DiagramPlan<'a>>,
    pub policy: Option<DiagramPlan<'a>>,
    pub atoms: Vec<AtomCode>,
}

// Reasons (`enum cilc_reason`).
const MATCHED_ALLOW: u32 = 0;
const MATCHED_DENY: u32 = 1;
pub(crate) const DEFAULT_DENY: u32 = 2;
pub(crate) const NO_POLICY: u32 = 3;
const CHAIN_ACCEPT: u32 = 4;
pub(crate) const CHAIN_DROP: u32 = 5;

fn decision(rule: Option<u32>, reason: u32) -> u32 {
    rule.map_or(0, |r| (r + 1) << 4) | reason
}

/// Selectors and named ports of a program, numbered.
#[derive(Default)]
struct Tables {
    selectors: Vec<Selector>,
    ports: Vec<String>,
}

impl Tables {
    fn selector(&mut self, s: &Selector) -> u32 {
        let i = match self.selectors.iter().position(|x| x == s) {
            Some(i) => i,
            None => {
                self.selectors.push(s.clone());
                self.selectors.len() - 1
            }
        };
        manifest::PRED_HOST + 1 + i as u32
    }

    fn port(&mut self, n: &str) -> u32 {
        match self.ports.iter().position(|x| x == n) {
            Some(i) => i as u32,
            None => {
                self.ports.push(n.to_string());
                (self.ports.len() - 1) as u32
            }
        }
    }

    fn code(&mut self, a: &Atom, direction: Direction) -> AtomCode {
        let local = match direction {
            Direction::Ingress => Side::Dst,
            Direction::Egress => Side::Src,
        };
        match a {
            Atom::Subject(Subject::Host) => AtomCode::Bit(local, manifest::PRED_HOST),
            Atom::Subject(Subject::AllEndpoints) => {
                AtomCode::NoBit(local, vec![manifest::PRED_WORLD, manifest::PRED_HOST])
            }
            Atom::Subject(Subject::EndpointsAndHost) => {
                AtomCode::NoBit(local, vec![manifest::PRED_WORLD])
            }
            Atom::Subject(Subject::Selector(s)) => AtomCode::Bit(local, self.selector(s)),
            Atom::End(side, EndIs::World) => AtomCode::Bit(*side, manifest::PRED_WORLD),
            Atom::End(side, EndIs::Host) => AtomCode::Bit(*side, manifest::PRED_HOST),
            Atom::End(side, EndIs::Cluster) => AtomCode::NoBit(*side, vec![manifest::PRED_WORLD]),
            Atom::End(side, EndIs::Selector(s)) => AtomCode::Bit(*side, self.selector(s)),
            Atom::NamedPort(n) => AtomCode::Port(self.port(n)),
            Atom::Flags(v, m) => AtomCode::Flags(*v, *m),
            Atom::L7(_) => AtomCode::True,
        }
    }
}

/// The forest with each diagram replaced by one linear leaf of its terms.
fn linear(mut f: Forest) -> Forest {
    let flat = |d: &mut Diagram| {
        d.nodes = vec![Node::Linear((0..d.terms.len() as u32).collect())];
        d.roots = vec![0];
    };
    for h in &mut f.hooks {
        for (_, d) in &mut h.chains {
            flat(d);
        }
        flat(&mut h.policy);
    }
    f
}

/// Verifier instructions per diagram node, as code: a little above what
/// was measured (classifier instructions per node: fw1_10k 25.3, ipc1_1k
/// 20.2, fw1_1k 18.2, acl1_1k 17.0; docs/backend.md, "Choosing").
pub const INSNS_PER_NODE: u64 = 26;

/// Classifier instructions up to which `auto` emits code. The entry costs
/// the verifier ~145,000 of its 1,000,000; the rest is headroom (the
/// estimate is a mean, and parts differ).
pub const TREE_BUDGET: u64 = 500_000;

/// The cost model of `auto`: code (tree) while the diagrams' estimated
/// size fits the verifier's budget, where each packet costs a few
/// comparisons in registers; data (table) beyond, where the program is
/// the same for every policy and each node costs a step of a loop.
/// Returns the strategy and why, for the manifest and `cilc inspect`.
pub fn choose(forest: &Forest) -> (Strategy, String) {
    let nodes: usize = forest
        .hooks
        .iter()
        .map(|h| h.policy.nodes.len() + h.chains.iter().map(|(_, d)| d.nodes.len()).sum::<usize>())
        .sum();
    let estimate = nodes as u64 * INSNS_PER_NODE;
    if estimate <= TREE_BUDGET {
        (
            Strategy::Tree,
            format!(
                "auto: {nodes} diagram nodes ≈ {estimate} instructions as code, within the \
                 {TREE_BUDGET} budget: tree"
            ),
        )
    } else {
        (
            Strategy::Table,
            format!(
                "auto: {nodes} diagram nodes ≈ {estimate} instructions as code, beyond the \
                 {TREE_BUDGET} budget: table"
            ),
        )
    }
}

/// Most nodes a walk of the table may visit: the kernel ends the walk's
/// `may_goto` loop (stdlib-bpf/cilc.c `can_loop`) once its budget is spent
/// (millions of turns, or on newer kernels a time), so a table whose
/// longest walk (every root's depth, summed) is longer than this is
/// refused, well within that budget.
pub(super) const WALK_MAX: u64 = 1 << 20;

fn error(message: String) -> Vec<Diagnostic> {
    vec![Diagnostic::error(Code::Internal, Span::default(), message)]
}

/// Compile a validated program to a BPF object.
pub fn compile(ir: &Validated, src: &str, opts: &Options) -> Result<Output, Vec<Diagnostic>> {
    let show = opts.progress && ir.rules.len() > 5_000;
    let progress = |what: &str| {
        if show {
            eprint!("\r\x1b[Kcilc: {what}…");
        }
    };
    progress(&format!(
        "building the decision diagrams of {} rules",
        ir.rules.len()
    ));
    // A tree is built without aligned cuts (they deepen the diagram,
    // which code pays per level); a table, and `auto`'s choice, with them.
    let diagrams = |aligned: bool| {
        let b = build::Options {
            aligned,
            ..build::Options::default()
        };
        crate::timed("diagrams", || {
            build::build_with(ir, &b, opts.cache.as_deref())
        })
    };
    let forest = diagrams(opts.strategy != Strategy::Tree);
    let (strategy, choice) = match opts.strategy {
        Strategy::Auto => {
            let (s, why) = choose(&forest);
            (s, Some(why))
        }
        s => (s, None),
    };
    let forest = match (opts.strategy, strategy) {
        (Strategy::Auto, Strategy::Tree) => {
            progress("building the decision diagrams again for code");
            diagrams(false)
        }
        _ => forest,
    };
    let forest = match strategy {
        // (`choose` never answers auto.)
        Strategy::Auto | Strategy::Tree | Strategy::Table => forest,
        Strategy::Linear => linear(forest),
        Strategy::ParseOnly => {
            let mut f = forest;
            for h in &mut f.hooks {
                h.chains.clear();
                h.policy.terms.clear();
                h.policy.nodes.clear();
                h.policy.roots.clear();
            }
            f
        }
    };
    let mut tables = Tables::default();
    let mut hooks = Vec::new();
    for h in &forest.hooks {
        let atoms: Vec<AtomCode> = h
            .atoms
            .iter()
            .map(|a| tables.code(a, h.direction))
            .collect();
        let chains = h
            .chains
            .iter()
            .map(|(_, d)| DiagramPlan {
                diagram: d,
                codes: d
                    .terms
                    .iter()
                    .map(|t| match t.outcome {
                        Outcome::Rule(r) if ir.rules[r as usize].action == Action::Drop => {
                            decision(Some(r), CHAIN_DROP)
                        }
                        Outcome::Rule(r) => decision(Some(r), CHAIN_ACCEPT),
                        Outcome::DefaultDeny => decision(None, DEFAULT_DENY),
                    })
                    .collect(),
            })
            .collect();
        let policy = (!h.policy.terms.is_empty()).then(|| DiagramPlan {
            diagram: &h.policy,
            codes: h
                .policy
                .terms
                .iter()
                .map(|t| match t.outcome {
                    Outcome::Rule(r) if ir.rules[r as usize].action == Action::Deny => {
                        decision(Some(r), MATCHED_DENY)
                    }
                    Outcome::Rule(r) => decision(Some(r), MATCHED_ALLOW),
                    Outcome::DefaultDeny => decision(None, DEFAULT_DENY),
                })
                .collect(),
        });
        hooks.push(HookPlan {
            direction: u32::from(h.direction == Direction::Egress),
            v6: h.v6,
            chains,
            policy,
            atoms,
        });
    }
    let preds = 2 + tables.selectors.len();
    if preds > manifest::PRED_WORDS * 64 {
        return Err(error(format!(
            "the policy has {} distinct selectors; a compiled program holds at most {}",
            tables.selectors.len(),
            manifest::PRED_WORDS * 64 - 2
        )));
    }
    if tables.ports.len() > manifest::NAMED_PORTS {
        return Err(error(format!(
            "the policy names {} distinct ports; a compiled program holds at most {}",
            tables.ports.len(),
            manifest::NAMED_PORTS
        )));
    }
    progress(match strategy {
        Strategy::Table => "encoding the diagrams as a table",
        _ => "generating code",
    });
    let table =
        (strategy == Strategy::Table).then(|| crate::timed("table", || table::encode(&hooks)));
    if let Some(t) = &table {
        if t.max_steps > WALK_MAX {
            return Err(error(format!(
                "a walk of the table could visit {} nodes; the most allowed is {WALK_MAX}",
                t.max_steps
            )));
        }
    }
    let mut manifest = make_manifest(ir, src, strategy, &tables);
    manifest.table_nodes = table.as_ref().map(|t| t.nodes.len() as u32);
    manifest.choice = choice;
    let json = serde_json::to_vec(&manifest).map_err(|e| error(e.to_string()))?;
    // A table object's code needs no diagram: free them (and the nodes,
    // once in bytes) before LLVM copies the table (peak memory at 100k).
    let hooks = match table {
        Some(_) => {
            drop(hooks);
            drop(forest);
            Vec::new()
        }
        None => hooks,
    };
    progress("LLVM: optimising and emitting the object");
    let size = table.as_ref().map(|t| t.nodes.len() * table::NODE);
    let object = llvm::emit(&hooks, &json, STDLIB, size);
    if show {
        eprint!("\r\x1b[K");
    }
    let mut object = object.map_err(error)?;
    if let Some(t) = &table {
        t.write_into(&mut object).map_err(error)?;
    }
    manifest.code_sha256 = Some(manifest::seal(&mut object).map_err(error)?);
    Ok(Output { object, manifest })
}

fn make_manifest(ir: &Validated, src: &str, strategy: Strategy, t: &Tables) -> Manifest {
    let positions = Positions::new(src);
    let rules = ir
        .rules
        .iter()
        .map(|r| {
            let at = positions.at(r.span.start as usize);
            manifest::Rule {
                id: r.id,
                name: r.name.clone(),
                line: at.line,
                column: at.column,
                text: src
                    .get(r.span.start as usize..r.span.end as usize)
                    .unwrap_or("")
                    .to_string(),
                snat: r.snat.as_ref().map(|s| match s.to {
                    Some(a) => manifest::Snat::To(a),
                    None => manifest::Snat::Masquerade,
                }),
            }
        })
        .collect();
    let program = |name: &str, attach: &str, direction: &str| manifest::Program {
        name: name.into(),
        attach: attach.into(),
        direction: direction.into(),
    };
    let mut predicates = vec![
        manifest::Predicate {
            bit: manifest::PRED_WORLD,
            text: "world".into(),
            selector: None,
        },
        manifest::Predicate {
            bit: manifest::PRED_HOST,
            text: "host".into(),
            selector: None,
        },
    ];
    for (i, s) in t.selectors.iter().enumerate() {
        predicates.push(manifest::Predicate {
            bit: manifest::PRED_HOST + 1 + i as u32,
            text: s.to_string(),
            selector: serde_json::to_value(s).ok(),
        });
    }
    Manifest {
        layout: manifest::LAYOUT,
        compiler: format!("cilc {}", env!("CARGO_PKG_VERSION")),
        source_sha256: Sha256::digest(src.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        strategy: strategy.as_str().into(),
        object_sha256: manifest::UNSEALED.into(),
        code_sha256: Some(manifest::UNSEALED.into()),
        rules,
        programs: vec![
            program("cilc_xdp", "xdp", "ingress"),
            program("cilc_tc_ingress", "tc-ingress", "ingress"),
            program("cilc_tc_egress", "tc-egress", "egress"),
            program("cilc_tc_ingress_snat", "tc-ingress-snat", "ingress"),
            program("cilc_tc_egress_snat", "tc-egress-snat", "egress"),
        ],
        maps: manifest::maps(),
        predicates,
        named_ports: t.ports.clone(),
        table_nodes: None,
        choice: None,
    }
}
