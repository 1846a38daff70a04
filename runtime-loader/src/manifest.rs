//! The manifest cilc embeds in every object (section `.cilc.manifest`,
//! JSON): what the object enforces and what a loader must give it.

use serde::{Deserialize, Serialize};

/// The ELF section that holds the manifest.
pub const SECTION: &str = ".cilc.manifest";

/// Version of the layout of the maps and of `struct cilc_ctx`; a loader
/// refuses objects of another version.
pub const LAYOUT: u32 = 1;

/// Predicate bits reserved before the selectors: world, host.
pub const PRED_WORLD: u32 = 0;
pub const PRED_HOST: u32 = 1;
/// Words of predicate bits per identity, and named ports per identity
/// (`CILC_PRED_WORDS`, `CILC_NAMED_PORTS` in stdlib-bpf/cilc.h).
pub const PRED_WORDS: usize = 8;
pub const NAMED_PORTS: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub layout: u32,
    /// `cilc X.Y.Z`.
    pub compiler: String,
    /// SHA-256 of the policy source, hex.
    pub source_sha256: String,
    /// `tree` or `linear`.
    pub strategy: String,
    pub rules: Vec<Rule>,
    pub programs: Vec<Program>,
    pub maps: Vec<MapInfo>,
    /// Predicate bit → what it means (`world`, `host`, a selector).
    pub predicates: Vec<Predicate>,
    /// Named port slot → the port's name.
    pub named_ports: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub id: u32,
    pub name: String,
    pub line: usize,
    pub column: usize,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Program {
    /// The function name in the object.
    pub name: String,
    /// `xdp`, `tc-ingress` or `tc-egress`.
    pub attach: String,
    /// The direction it judges: `ingress` or `egress`.
    pub direction: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapInfo {
    pub name: String,
    pub purpose: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Predicate {
    pub bit: u32,
    /// As written in the policy language (`world`, `host`, `{app=web}`).
    pub text: String,
    /// The selector, structured, when the predicate is one.
    pub selector: Option<serde_json::Value>,
}

/// The decision word the programs record: deciding rule id + 1 above the
/// low 4 bits, reason in them.
pub fn split_decision(d: u32) -> (Option<u32>, Reason) {
    let rule = (d >> 4).checked_sub(1);
    (rule, Reason::from_code(d & 0x0f))
}

/// Why a packet got its verdict (`enum cilc_reason` in stdlib-bpf/cilc.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reason {
    MatchedAllow,
    MatchedDeny,
    DefaultDeny,
    NoPolicy,
    ChainAccept,
    ChainDrop,
    Malformed,
    LaterFragment,
    NotJudged,
    Unknown(u32),
}

impl Reason {
    pub fn from_code(c: u32) -> Reason {
        match c {
            0 => Reason::MatchedAllow,
            1 => Reason::MatchedDeny,
            2 => Reason::DefaultDeny,
            3 => Reason::NoPolicy,
            4 => Reason::ChainAccept,
            5 => Reason::ChainDrop,
            6 => Reason::Malformed,
            7 => Reason::LaterFragment,
            8 => Reason::NotJudged,
            n => Reason::Unknown(n),
        }
    }

    pub fn code(self) -> u32 {
        match self {
            Reason::MatchedAllow => 0,
            Reason::MatchedDeny => 1,
            Reason::DefaultDeny => 2,
            Reason::NoPolicy => 3,
            Reason::ChainAccept => 4,
            Reason::ChainDrop => 5,
            Reason::Malformed => 6,
            Reason::LaterFragment => 7,
            Reason::NotJudged => 8,
            Reason::Unknown(n) => n,
        }
    }

    /// The same words as `eval::Reason::as_str`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::MatchedAllow => "matched-allow",
            Reason::MatchedDeny => "matched-deny",
            Reason::DefaultDeny => "default-deny",
            Reason::NoPolicy => "no-policy",
            Reason::ChainAccept => "chain-accept",
            Reason::ChainDrop => "chain-drop",
            Reason::Malformed => "malformed",
            Reason::LaterFragment => "later-fragment",
            Reason::NotJudged => "not-judged",
            Reason::Unknown(_) => "unknown",
        }
    }

    pub fn passes(self) -> bool {
        matches!(
            self,
            Reason::MatchedAllow | Reason::NoPolicy | Reason::ChainAccept | Reason::NotJudged
        )
    }
}
