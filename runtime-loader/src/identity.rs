//! Who is at one end of a packet, and which predicate bits of an artifact
//! that identity satisfies.
//!
//! Shared by the compiler (its reference evaluator reads the same
//! identities) and the loader (which turns an endpoint's labels into the
//! bits the compiled code tests, without the compiler). Input: an
//! `Identity` (text form `world`, `host`, `LABELS@NS[NSLABELS]+NAMED`) and
//! a `Manifest`; output: `Bits` for the identity map.

use std::collections::BTreeMap;
use std::fmt::{self, Display, Formatter};

use serde::{Deserialize, Serialize};

use crate::manifest::{self, Manifest};

/// Endpoints whose labels satisfy every requirement, in the namespaces the
/// namespace requirement allows (any namespace when it is `None`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selector {
    pub labels: Vec<LabelReq>,
    pub namespace: Option<NamespaceReq>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LabelReq {
    pub key: String,
    pub op: LabelMatch,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum LabelMatch {
    /// The label is present with one of these values (`k=v` is `In([v])`).
    In(Vec<String>),
    /// The label is absent or has none of these values.
    NotIn(Vec<String>),
    Exists,
    Absent,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NamespaceReq {
    /// The endpoint's namespace is one of these.
    Names(Vec<String>),
    /// The endpoint's namespace carries labels satisfying all of these.
    Labels(Vec<LabelReq>),
}

/// Who is at one end of a packet, as the runtime knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Identity {
    /// Outside the cluster.
    World,
    /// The node itself.
    Host,
    Endpoint(Endpoint),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub labels: BTreeMap<String, String>,
    pub namespace: String,
    pub namespace_labels: BTreeMap<String, String>,
    /// Container port names → numbers.
    pub named_ports: BTreeMap<String, u16>,
}

pub fn selector_matches(s: &Selector, e: &Endpoint) -> bool {
    labels_match(&s.labels, &e.labels)
        && match &s.namespace {
            None => true,
            Some(NamespaceReq::Names(names)) => names.contains(&e.namespace),
            Some(NamespaceReq::Labels(reqs)) => labels_match(reqs, &e.namespace_labels),
        }
}

fn labels_match(reqs: &[LabelReq], labels: &BTreeMap<String, String>) -> bool {
    reqs.iter().all(|r| {
        let v = labels.get(&r.key);
        match &r.op {
            LabelMatch::In(vs) => v.is_some_and(|v| vs.contains(v)),
            LabelMatch::NotIn(vs) => v.is_none_or(|v| !vs.contains(v)),
            LabelMatch::Exists => v.is_some(),
            LabelMatch::Absent => v.is_none(),
        }
    })
}

pub(crate) fn pairs(text: &str, what: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for kv in text.split(',').filter(|s| !s.is_empty()) {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| format!("expected KEY=VALUE in {what}, got `{kv}`"))?;
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

/// Parse an identity: `world`, `host`, or `LABELS@NS[NSLABELS]+NAMED`.
pub fn parse_identity(text: &str) -> Result<Identity, String> {
    match text {
        "world" => return Ok(Identity::World),
        "host" => return Ok(Identity::Host),
        _ => {}
    }
    let (rest, named) = match text.split_once('+') {
        Some((r, n)) => (r, n),
        None => (text, ""),
    };
    let (labels, ns) = match rest.split_once('@') {
        Some((l, n)) => (l, n),
        None => (rest, "default"),
    };
    let (namespace, ns_labels) = match ns.split_once('[') {
        Some((n, l)) => (
            n,
            l.strip_suffix(']')
                .ok_or_else(|| format!("missing `]` in `{text}`"))?,
        ),
        None => (ns, ""),
    };
    let mut named_ports = BTreeMap::new();
    for (k, v) in pairs(named, "named ports")? {
        let port = v
            .parse()
            .map_err(|_| format!("named port `{k}` needs a number, got `{v}`"))?;
        named_ports.insert(k, port);
    }
    Ok(Identity::Endpoint(Endpoint {
        labels: pairs(labels, "labels")?,
        namespace: namespace.to_string(),
        namespace_labels: pairs(ns_labels, "namespace labels")?,
        named_ports,
    }))
}

fn join(m: &BTreeMap<String, String>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

impl Display for Identity {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Identity::World => f.write_str("world"),
            Identity::Host => f.write_str("host"),
            Identity::Endpoint(e) => {
                write!(f, "{}@{}", join(&e.labels), e.namespace)?;
                if !e.namespace_labels.is_empty() {
                    write!(f, "[{}]", join(&e.namespace_labels))?;
                }
                if !e.named_ports.is_empty() {
                    let n: Vec<String> = e
                        .named_ports
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                    write!(f, "+{}", n.join(","))?;
                }
                Ok(())
            }
        }
    }
}

fn labels(l: &[LabelReq]) -> String {
    l.iter()
        .map(|r| match &r.op {
            LabelMatch::In(v) => format!("{} in ({})", r.key, v.join(", ")),
            LabelMatch::NotIn(v) => format!("{} notin ({})", r.key, v.join(", ")),
            LabelMatch::Exists => format!("{} exists", r.key),
            LabelMatch::Absent => format!("{} absent", r.key),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

impl Display for Selector {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{{{}}}", labels(&self.labels))?;
        match &self.namespace {
            None => Ok(()),
            Some(NamespaceReq::Names(n)) => write!(f, "@({})", n.join(", ")),
            Some(NamespaceReq::Labels(l)) => write!(f, "@{{{}}}", labels(l)),
        }
    }
}

/// What the identity map holds for an address: predicate bits and named
/// ports (`struct cilc_ident` in stdlib-bpf/cilc.h).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bits {
    pub bits: [u64; manifest::PRED_WORDS],
    pub ports: [u16; manifest::NAMED_PORTS],
}

impl Bits {
    pub fn set(&mut self, bit: u32) {
        self.bits[(bit / 64) as usize] |= 1 << (bit % 64);
    }

    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(96);
        for b in self.bits {
            v.extend_from_slice(&b.to_ne_bytes());
        }
        for p in self.ports {
            v.extend_from_slice(&p.to_ne_bytes());
        }
        v
    }
}

/// The manifest's selector predicates, read once: (bit, selector).
pub fn selectors(manifest: &Manifest) -> Vec<(u32, Selector)> {
    manifest
        .predicates
        .iter()
        .filter_map(|p| {
            let s = serde_json::from_value::<Selector>(p.selector.clone()?).ok()?;
            Some((p.bit, s))
        })
        .collect()
}

/// The predicate bits and named ports of an identity, for this manifest
/// (`selectors` from `selectors(manifest)`).
pub fn bits(manifest: &Manifest, selectors: &[(u32, Selector)], id: &Identity) -> Bits {
    let mut b = Bits::default();
    match id {
        Identity::World => b.set(manifest::PRED_WORLD),
        Identity::Host => b.set(manifest::PRED_HOST),
        Identity::Endpoint(e) => {
            for (bit, s) in selectors {
                if selector_matches(s, e) {
                    b.set(*bit);
                }
            }
            for (slot, name) in manifest.named_ports.iter().enumerate() {
                b.ports[slot] = e.named_ports.get(name).copied().unwrap_or(0);
            }
        }
    }
    b
}
