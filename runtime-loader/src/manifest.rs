//! The manifest cilc embeds in every object (section `.cilc.manifest`,
//! JSON): what the object enforces and what a loader must give it.

use serde::{Deserialize, Serialize};

/// The ELF section that holds the manifest.
pub const SECTION: &str = ".cilc.manifest";

/// Version of the layout of the maps and of `struct cilc_ctx`; a loader
/// refuses objects of another version.
pub const LAYOUT: u32 = 4;

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
    /// SHA-256 of the whole object with this field's 64 digits written as
    /// zeros (`seal`): a loader refuses an object that does not match.
    pub object_sha256: String,
    /// SHA-256 of the object's code (`code_digest`: not the manifest, the
    /// table's nodes or BTF; `seal` writes it). Two artifacts with the same
    /// code differ only in data the loader puts in maps, so `replace` can
    /// swap the data and keep the programs running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_sha256: Option<String>,
    pub rules: Vec<Rule>,
    pub programs: Vec<Program>,
    pub maps: Vec<MapInfo>,
    /// Predicate bit → what it means (`world`, `host`, a selector).
    pub predicates: Vec<Predicate>,
    /// Named port slot → the port's name.
    pub named_ports: Vec<String>,
    /// The table strategy: nodes in the section `.cilc.table`, which a
    /// loader copies into the map `cilc_table`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_nodes: Option<u32>,
    /// Why `auto` picked the strategy (absent when it was forced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub choice: Option<String>,
}

impl Manifest {
    /// Whether an artifact of this manifest can replace one of `old` by
    /// data alone (the programs kept): the same code, and the same meaning
    /// for what the loader installed besides the table (identities as
    /// predicate bits and named-port slots, each rule's `snat`). Err says
    /// why not. Whether the new data fits the installed maps is the
    /// node's to check.
    pub fn data_only_from(&self, old: &Manifest) -> Result<(), String> {
        match (&old.code_sha256, &self.code_sha256) {
            (Some(a), Some(b)) if a == b => {}
            _ => {
                return Err(format!(
                    "the code differs ({} → {} strategy{})",
                    old.strategy,
                    self.strategy,
                    if self.strategy == "table" {
                        ""
                    } else {
                        ": the policy is the code"
                    }
                ))
            }
        }
        if old.predicates != self.predicates || old.named_ports != self.named_ports {
            return Err("the selectors or named ports differ (identities change)".into());
        }
        let snat = |m: &Manifest| -> Vec<(u32, Option<Snat>)> {
            m.rules
                .iter()
                .filter(|r| r.snat.is_some())
                .map(|r| (r.id, r.snat))
                .collect()
        };
        if snat(old) != snat(self) {
            return Err("the rules' `snat` differ".into());
        }
        Ok(())
    }
}

/// The ELF section of the table strategy's nodes (32 bytes each).
pub const TABLE_SECTION: &str = ".cilc.table";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub id: u32,
    pub name: String,
    pub line: usize,
    pub column: usize,
    pub text: String,
    /// The rule's `snat`, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snat: Option<Snat>,
}

/// What a rule's `snat` translates the source to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Snat {
    /// The address of the interface the packet leaves by.
    Masquerade,
    /// This address (packets of its family only).
    To(std::net::IpAddr),
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
    /// How long it lives on a node.
    pub keep: Keep,
}

/// How long a map lives on a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Keep {
    /// Pinned, and reused by every artifact installed after this one
    /// (conntrack, counters by reason, configuration).
    State,
    /// Pinned while this artifact is installed; a replacement brings its
    /// own (identities and per-rule counters depend on the policy).
    Artifact,
    /// The programs' own working memory; never pinned.
    Private,
}

impl Keep {
    pub fn as_str(self) -> &'static str {
        match self {
            Keep::State => "state",
            Keep::Artifact => "artifact",
            Keep::Private => "private",
        }
    }
}

/// The maps of every object of this layout (stdlib-bpf/cilc.c).
pub fn maps() -> Vec<MapInfo> {
    let map = |name: &str, keep: Keep, purpose: &str| MapInfo {
        name: name.into(),
        purpose: purpose.into(),
        keep,
    };
    vec![
        map(
            "cilc_idents",
            Keep::Artifact,
            "address (LPM) → identity: predicate bits and named ports; filled by the loader",
        ),
        map(
            "cilc_rule_counts",
            Keep::Artifact,
            "per-CPU packets and bytes per deciding rule id",
        ),
        map(
            "cilc_reason_counts",
            Keep::State,
            "per-CPU packets and bytes per direction and reason",
        ),
        map(
            "cilc_ct4",
            Keep::State,
            "IPv4 connection tracking (LRU hash): flow → state, expiry, counters",
        ),
        map(
            "cilc_ct6",
            Keep::State,
            "IPv6 connection tracking (LRU hash): flow → state, expiry, counters",
        ),
        map(
            "cilc_ct_events",
            Keep::State,
            "per-CPU conntrack and NAT events: created, insert failed, deleted by policy, picked up, NAT mapping created, NAT port collision",
        ),
        map(
            "cilc_config",
            Keep::State,
            "tracking on/off, audit mode, conntrack timeouts, NAT port range; written by the loader",
        ),
        map(
            "cilc_nat_ifaces",
            Keep::State,
            "interfaces that source-NAT (network namespace, index) → their addresses; written by the loader",
        ),
        map(
            "cilc_snat",
            Keep::State,
            "source NAT, forward: original flow → address and port it leaves with",
        ),
        map(
            "cilc_snat_rev",
            Keep::State,
            "source NAT, reverse: translated reply → original address and port",
        ),
        map(
            "cilc_table",
            Keep::Artifact,
            "map-of-maps: slot 0 holds the table strategy's decision diagrams (an array of nodes walked per packet), created and filled by the loader from the object, swapped whole by a data-only replace",
        ),
        map(
            "cilc_rule_snat",
            Keep::Artifact,
            "rule id → its `snat` (none, masquerade, to an address); filled by the loader from the manifest",
        ),
        map(
            "cilc_nat_work",
            Keep::Private,
            "per-CPU working memory of source NAT (keys it builds)",
        ),
        map(
            "cilc_scratch",
            Keep::Private,
            "per-CPU working copy of the packet being judged",
        ),
        map(
            "cilc_last",
            Keep::Private,
            "the last decision (rule id + 1 << 4 | reason), for `cilc run`",
        ),
    ]
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
    /// A reply of a tracked flow: passed without a policy lookup.
    CtReply,
    /// An ICMP error about a tracked flow.
    CtRelated,
    /// TCP flags no connection sends (no SYN/ACK/RST; SYN with FIN or RST).
    CtInvalid,
    /// Policy would drop it; the installation is in audit mode.
    Audit,
    /// Source NAT found no free port for a new flow.
    NatExhausted,
    /// Source NAT cannot translate it (no ports or identifier, or no
    /// address of its family on the interface).
    NatUnsupported,
    Unknown(u32),
}

impl Reason {
    /// Every reason the programs count (codes 0..REASONS).
    pub const ALL: [Reason; 15] = [
        Reason::MatchedAllow,
        Reason::MatchedDeny,
        Reason::DefaultDeny,
        Reason::NoPolicy,
        Reason::ChainAccept,
        Reason::ChainDrop,
        Reason::Malformed,
        Reason::LaterFragment,
        Reason::NotJudged,
        Reason::CtReply,
        Reason::CtRelated,
        Reason::CtInvalid,
        Reason::Audit,
        Reason::NatExhausted,
        Reason::NatUnsupported,
    ];

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
            9 => Reason::CtReply,
            10 => Reason::CtRelated,
            11 => Reason::CtInvalid,
            12 => Reason::Audit,
            13 => Reason::NatExhausted,
            14 => Reason::NatUnsupported,
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
            Reason::CtReply => 9,
            Reason::CtRelated => 10,
            Reason::CtInvalid => 11,
            Reason::Audit => 12,
            Reason::NatExhausted => 13,
            Reason::NatUnsupported => 14,
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
            Reason::CtReply => "ct-reply",
            Reason::CtRelated => "ct-related",
            Reason::CtInvalid => "ct-invalid",
            Reason::Audit => "audit-would-drop",
            Reason::NatExhausted => "nat-exhausted",
            Reason::NatUnsupported => "nat-unsupported",
            Reason::Unknown(_) => "unknown",
        }
    }

    pub fn passes(self) -> bool {
        matches!(
            self,
            Reason::MatchedAllow
                | Reason::NoPolicy
                | Reason::ChainAccept
                | Reason::NotJudged
                | Reason::CtReply
                | Reason::CtRelated
                | Reason::Audit
        )
    }
}

/// What `object_sha256` holds until the object is sealed.
pub const UNSEALED: &str = "0000000000000000000000000000000000000000000000000000000000000000";

const SEAL_KEY: &[u8] = b"\"object_sha256\":\"";

/// Where the 64 hex digits of `object_sha256` sit in the object's bytes.
fn seal_range(bytes: &[u8]) -> Option<std::ops::Range<usize>> {
    field_range(bytes, SEAL_KEY)
}

/// Where the 64 hex digits after `key` sit in the manifest's bytes.
fn field_range(bytes: &[u8], key: &[u8]) -> Option<std::ops::Range<usize>> {
    use object::{Object as _, ObjectSection as _};
    let file = object::File::parse(bytes).ok()?;
    let (start, size) = file.section_by_name(SECTION)?.file_range()?;
    let section = bytes.get(start as usize..(start + size) as usize)?;
    let at = section.windows(key.len()).position(|w| w == key)?;
    let from = start as usize + at + key.len();
    (from + 64 <= bytes.len()).then_some(from..from + 64)
}

fn digest(bytes: &[u8], range: std::ops::Range<usize>) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(&bytes[..range.start]);
    h.update(UNSEALED.as_bytes());
    h.update(&bytes[range.end..]);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

const CODE_KEY: &[u8] = b"\"code_sha256\":\"";

/// SHA-256 of what the programs run: every section's name and bytes with
/// its relocations (by symbol name) and its symbols, except the manifest,
/// the table's nodes (data for a map) and the type information (.BTF,
/// .BTF.ext: LLVM may order types differently from one compile to the
/// next; the programs keep the types they were verified with).
pub fn code_digest(bytes: &[u8]) -> Result<String, String> {
    use object::{Object as _, ObjectSection as _, ObjectSymbol as _};
    use sha2::{Digest, Sha256};
    let file = object::File::parse(bytes).map_err(|e| e.to_string())?;
    let skip = [SECTION, TABLE_SECTION, ".BTF", ".BTF.ext"];
    let mut h = Sha256::new();
    let mut put = |b: &[u8]| {
        h.update((b.len() as u64).to_le_bytes());
        h.update(b);
    };
    let symbol_name = |i| {
        file.symbol_by_index(i)
            .ok()
            .and_then(|s| s.name().ok())
            .unwrap_or("")
    };
    for s in file.sections() {
        let name = s.name().map_err(|e| e.to_string())?;
        // Relocation sections and the symbol table are hashed resolved,
        // through the sections they apply to (indices may be renumbered).
        if skip.contains(&name)
            || name.starts_with(".rel")
            || [".symtab", ".strtab", ".llvm_addrsig"].contains(&name)
        {
            continue;
        }
        put(name.as_bytes());
        put(s.data().map_err(|e| e.to_string())?);
        for (at, r) in s.relocations() {
            put(&at.to_le_bytes());
            match r.target() {
                object::RelocationTarget::Symbol(i) => put(symbol_name(i).as_bytes()),
                other => put(format!("{other:?}").as_bytes()),
            }
        }
        for sym in file
            .symbols()
            .filter(|y| y.section_index() == Some(s.index()))
        {
            put(sym.name().unwrap_or("").as_bytes());
            put(&sym.address().to_le_bytes());
            put(&sym.size().to_le_bytes());
        }
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Write the object's code hash and then its hash into its manifest (the
/// compiler's last step; the manifest holds both fields as zeros).
/// Returns the code hash.
pub fn seal(bytes: &mut [u8]) -> Result<String, String> {
    let code = code_digest(bytes)?;
    let range = field_range(bytes, CODE_KEY).ok_or("no code_sha256 field in the manifest")?;
    bytes[range].copy_from_slice(code.as_bytes());
    seal_object(bytes)?;
    Ok(code)
}

/// Write only the object's hash (tests forge artifacts with it).
pub fn seal_object(bytes: &mut [u8]) -> Result<(), String> {
    let range = seal_range(bytes).ok_or("no object_sha256 field in the manifest")?;
    let hash = digest(bytes, range.clone());
    bytes[range].copy_from_slice(hash.as_bytes());
    Ok(())
}

/// The object's hash if it matches the one sealed in it.
pub fn check_seal(bytes: &[u8]) -> Result<String, String> {
    let range = seal_range(bytes).ok_or("no object_sha256 field in the manifest")?;
    let want = std::str::from_utf8(&bytes[range.clone()]).unwrap_or("");
    let got = digest(bytes, range);
    if want != got {
        return Err(format!(
            "its content does not match the hash sealed in it (sealed {}…, content {}…): it was changed or damaged after compiling",
            &want.get(..12).unwrap_or(want),
            &got[..12]
        ));
    }
    Ok(got)
}
