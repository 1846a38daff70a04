//! The part cache: a subject's built parts on disk, so that compiling a
//! policy with one rule changed rebuilds only the subjects whose terms
//! changed (`cilc compile --cache DIR`).
//!
//! Stage: **(a subject's terms, their atoms, the options) → `Parts`**, a
//! lookup before `build::subject_parts` and a store after it. What a
//! subject builds depends on nothing else (build.rs builds each on its own),
//! so the key is a SHA-256 of exactly that input, written with local
//! numbers: terms by their place among the subject's terms, atoms by their
//! rank among the atoms the subject uses (the builder orders a term's atoms
//! by id, so only their relative order matters). The key also holds the
//! tree builder's source (`CILC_TREE_SOURCE`, hashed by build.rs): a
//! compiler whose builder changed never reads another's parts.
//!
//! A file is `MAGIC`, the key, then the parts in local numbers (below,
//! `encode`). A file that does not decode to well-formed parts is a miss
//! (and is written again); a cache that cannot be written costs only the
//! reuse. Files are written whole and renamed into place, so a compile
//! that is stopped, or two that run at once, never leave half a file.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use super::build::{Options, Parts};
use super::{Atom, AtomId, Node, Term, TermId, FIELDS};

const MAGIC: &[u8; 16] = b"cilc-parts-v1\0\0\0";

/// A directory of built parts, shared by the threads of one compile.
#[derive(Debug)]
pub struct Cache {
    dir: PathBuf,
    hits: AtomicUsize,
    misses: AtomicUsize,
    /// The first error writing a part (the compile goes on without it).
    unwritten: Mutex<Option<String>>,
}

/// What a compile found in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Subjects whose parts were read from the cache.
    pub reused: usize,
    /// Subjects built (and stored).
    pub built: usize,
    /// Why a part could not be stored, if one could not.
    pub unwritten: Option<String>,
}

/// One subject's input, in local numbers.
pub(super) struct Subject {
    /// The subject's terms (global ids, ascending): local term i is ids[i].
    pub ids: Vec<TermId>,
    /// The atoms its terms use (global ids, ascending): local atom i is
    /// atoms[i].
    pub atoms: Vec<AtomId>,
    pub key: [u8; 32],
}

impl Cache {
    /// The cache in `dir`, created if missing.
    pub fn open(dir: &Path) -> Result<Cache, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create the cache `{}`: {e}", dir.display()))?;
        Ok(Cache {
            dir: dir.to_path_buf(),
            hits: AtomicUsize::new(0),
            misses: AtomicUsize::new(0),
            unwritten: Mutex::new(None),
        })
    }

    pub fn stats(&self) -> Stats {
        Stats {
            reused: self.hits.load(Ordering::Relaxed),
            built: self.misses.load(Ordering::Relaxed),
            unwritten: self.unwritten.lock().map(|u| u.clone()).unwrap_or(None),
        }
    }

    fn path(&self, key: &[u8; 32]) -> PathBuf {
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("{hex}.part"))
    }

    /// The subject's parts if the cache holds them (global numbers).
    pub(super) fn get(&self, s: &Subject) -> Option<Parts> {
        let found = std::fs::read(self.path(&s.key))
            .ok()
            .and_then(|bytes| decode(&bytes, s));
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Store a subject's parts (global numbers, as built).
    pub(super) fn put(&self, s: &Subject, parts: &Parts) {
        let path = self.path(&s.key);
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let written = std::fs::write(&tmp, encode(parts, s))
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| format!("cannot write `{}`: {e}", path.display()));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            if let Ok(mut u) = self.unwritten.lock() {
                u.get_or_insert(e);
            }
        }
    }
}

impl Subject {
    /// The local numbering and key of one subject's terms (`classes`:
    /// its width classes, as `build::diagram` made them).
    pub fn new(
        terms: &[Term],
        atoms: &[Atom],
        subject: Option<AtomId>,
        classes: &[(usize, Vec<TermId>)],
        v6: bool,
        opts: &Options,
    ) -> Subject {
        let mut ids: Vec<TermId> = classes
            .iter()
            .flat_map(|(_, c)| c.iter().copied())
            .collect();
        ids.sort_unstable();
        let mut used: Vec<AtomId> = ids
            .iter()
            .flat_map(|t| terms[*t as usize].atoms.iter().copied())
            .chain(subject)
            .collect();
        used.sort_unstable();
        used.dedup();
        let mut s = Subject {
            ids,
            atoms: used,
            key: [0; 32],
        };
        let mut h = Sha256::new();
        h.update(MAGIC);
        h.update(env!("CILC_TREE_SOURCE").as_bytes());
        h.update([u8::from(v6)]);
        h.update(format!("{opts:?}").as_bytes());
        put_u32(&mut h, s.atoms.len());
        for a in &s.atoms {
            let text = format!("{:?}", atoms[*a as usize]);
            put_u32(&mut h, text.len());
            h.update(text.as_bytes());
        }
        put_u32(&mut h, subject.map_or(0, |a| s.atom(a) + 1) as usize);
        put_u32(&mut h, classes.len());
        for (width, class) in classes {
            put_u32(&mut h, *width);
            put_u32(&mut h, class.len());
            for t in class {
                put_u32(&mut h, s.term(*t) as usize);
            }
        }
        for t in &s.ids {
            let t = &terms[*t as usize];
            for set in &t.fields {
                match set {
                    None => put_u32(&mut h, 0),
                    Some(set) => {
                        put_u32(&mut h, set.len() + 1);
                        for (lo, hi) in set {
                            h.update(lo.to_le_bytes());
                            h.update(hi.to_le_bytes());
                        }
                    }
                }
            }
            put_u32(&mut h, t.atoms.len());
            for a in &t.atoms {
                put_u32(&mut h, s.atom(*a) as usize);
            }
        }
        s.key = h.finalize().into();
        s
    }

    /// A term's local number (it is one of the subject's).
    fn term(&self, t: TermId) -> u32 {
        self.ids.binary_search(&t).unwrap_or(0) as u32
    }

    /// An atom's local number (it is one the subject uses).
    fn atom(&self, a: AtomId) -> u32 {
        self.atoms.binary_search(&a).unwrap_or(0) as u32
    }
}

fn put_u32(h: &mut Sha256, n: usize) {
    h.update((n as u32).to_le_bytes());
}

const SPLIT: u8 = 0;
const TEST: u8 = 1;
const NO_LEAF: u8 = 2;
const LEAF: u8 = 3;
const LINEAR: u8 = 4;

/// `MAGIC`, the key, the node count, the nodes (a kind byte, then: a
/// split's field, cut (16 bytes) and kids; a test's local atom and kids; a
/// leaf's local term; a linear leaf's count and local terms), the root
/// count and the roots; numbers little-endian u32.
fn encode(parts: &Parts, s: &Subject) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + parts.nodes.len() * 16);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&s.key);
    let u32 = |out: &mut Vec<u8>, n: u32| out.extend_from_slice(&n.to_le_bytes());
    u32(&mut out, parts.nodes.len() as u32);
    for n in &parts.nodes {
        match n {
            Node::Split { field, cut, lo, hi } => {
                out.extend_from_slice(&[SPLIT, field.index() as u8]);
                out.extend_from_slice(&cut.to_le_bytes());
                u32(&mut out, *lo);
                u32(&mut out, *hi);
            }
            Node::Test { atom, yes, no } => {
                out.push(TEST);
                u32(&mut out, s.atom(*atom));
                u32(&mut out, *yes);
                u32(&mut out, *no);
            }
            Node::Leaf(None) => out.push(NO_LEAF),
            Node::Leaf(Some(t)) => {
                out.push(LEAF);
                u32(&mut out, s.term(*t));
            }
            Node::Linear(ts) => {
                out.push(LINEAR);
                u32(&mut out, ts.len() as u32);
                for t in ts {
                    u32(&mut out, s.term(*t));
                }
            }
        }
    }
    u32(&mut out, parts.roots.len() as u32);
    for r in &parts.roots {
        u32(&mut out, *r);
    }
    out
}

/// Reads bytes in order; `None` past the end.
struct Reader<'b>(&'b [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)?.try_into().ok().map(u32::from_le_bytes)
    }
    fn u128(&mut self) -> Option<u128> {
        self.take(16)?.try_into().ok().map(u128::from_le_bytes)
    }
}

/// `encode`'s inverse, in the subject's global numbers; `None` unless the
/// bytes are well-formed parts of this key: every kid is an earlier node
/// (the builder adds a node after its kids), every local number in range,
/// nothing left over.
fn decode(bytes: &[u8], s: &Subject) -> Option<Parts> {
    let mut r = Reader(bytes);
    if r.take(MAGIC.len())? != MAGIC || r.take(32)? != s.key {
        return None;
    }
    let count = r.u32()? as usize;
    // A count the file cannot hold is damage, not a reason to allocate.
    if count > bytes.len() {
        return None;
    }
    let term = |t: u32| s.ids.get(t as usize).copied();
    let mut nodes = Vec::with_capacity(count);
    for i in 0..count as u32 {
        let kid = |k: u32| (k < i).then_some(k);
        let node = match r.u8()? {
            SPLIT => {
                let field = *FIELDS.get(r.u8()? as usize)?;
                let cut = r.u128()?;
                let (lo, hi) = (kid(r.u32()?)?, kid(r.u32()?)?);
                Node::Split { field, cut, lo, hi }
            }
            TEST => {
                let atom = *s.atoms.get(r.u32()? as usize)?;
                let (yes, no) = (kid(r.u32()?)?, kid(r.u32()?)?);
                Node::Test { atom, yes, no }
            }
            NO_LEAF => Node::Leaf(None),
            LEAF => Node::Leaf(Some(term(r.u32()?)?)),
            LINEAR => {
                let n = r.u32()? as usize;
                if n > r.0.len() {
                    return None;
                }
                let mut ts = Vec::with_capacity(n);
                for _ in 0..n {
                    ts.push(term(r.u32()?)?);
                }
                Node::Linear(ts)
            }
            _ => return None,
        };
        nodes.push(node);
    }
    let roots: Option<Vec<u32>> = (0..r.u32()?)
        .map(|_| r.u32().filter(|k| (*k as usize) < count))
        .collect();
    let roots = roots?;
    // No roots and no nodes: a subject whose merged part was over budget.
    (r.0.is_empty() && roots.is_empty() == nodes.is_empty()).then_some(Parts { nodes, roots })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::Field;

    /// A subject of three terms over atoms 3 and 7 (global numbers).
    fn subject() -> (Vec<Term>, Subject, Parts) {
        let term = |atoms: Vec<AtomId>| Term {
            fields: Default::default(),
            atoms,
            outcome: crate::tree::Outcome::DefaultDeny,
        };
        let terms = vec![term(vec![]), term(vec![3]), term(vec![]), term(vec![3, 7])];
        let atoms: Vec<Atom> = (0..8).map(|i| Atom::NamedPort(format!("p{i}"))).collect();
        let classes = vec![(0, vec![1, 3])];
        let s = Subject::new(
            &terms,
            &atoms,
            Some(7),
            &classes,
            false,
            &Options::default(),
        );
        let parts = Parts {
            nodes: vec![
                Node::Leaf(None),
                Node::Leaf(Some(3)),
                Node::Linear(vec![1, 3]),
                Node::Test {
                    atom: 3,
                    yes: 1,
                    no: 0,
                },
                Node::Split {
                    field: Field::DstPort,
                    cut: 443,
                    lo: 2,
                    hi: 3,
                },
                Node::Test {
                    atom: 7,
                    yes: 4,
                    no: 0,
                },
            ],
            roots: vec![5, 2],
        };
        (terms, s, parts)
    }

    #[test]
    fn parts_read_back_as_written_in_the_subjects_numbers() {
        let (terms, s, parts) = subject();
        let bytes = encode(&parts, &s);
        let back = decode(&bytes, &s).expect("decodes");
        assert_eq!(back.nodes, parts.nodes);
        assert_eq!(back.roots, parts.roots);
        // A merge trial over budget is stored as no part at all.
        let none = decode(&encode(&Parts::default(), &s), &s).expect("decodes");
        assert!(none.nodes.is_empty() && none.roots.is_empty());
        // The same terms and atoms under other global numbers: the same
        // key, and the parts come back in those numbers.
        let atoms: Vec<Atom> = (0..8).map(|i| Atom::NamedPort(format!("p{i}"))).collect();
        let mut moved = atoms.clone();
        moved.swap(3, 1);
        moved.swap(7, 5);
        let shifted: Vec<Term> = terms
            .iter()
            .map(|t| Term {
                atoms: t
                    .atoms
                    .iter()
                    .map(|a| [0, 3, 2, 1, 4, 7, 6, 5][*a as usize])
                    .collect(),
                ..t.clone()
            })
            .collect();
        let mut terms2 = vec![terms[0].clone()];
        terms2.extend(shifted);
        let s2 = Subject::new(
            &terms2,
            &moved,
            Some(5),
            &[(0, vec![2, 4])],
            false,
            &Options::default(),
        );
        assert_eq!(s2.key, s.key);
        let back = decode(&bytes, &s2).expect("decodes");
        assert_eq!(back.nodes[1], Node::Leaf(Some(4)));
        assert_eq!(
            back.nodes[5],
            Node::Test {
                atom: 5,
                yes: 4,
                no: 0
            }
        );
        // Another term, another key.
        let mut other = terms.clone();
        other[3].fields[Field::DstPort.index()] = Some(vec![(80, 80)]);
        let s3 = Subject::new(
            &other,
            &atoms,
            Some(7),
            &[(0, vec![1, 3])],
            false,
            &Options::default(),
        );
        assert_ne!(s3.key, s.key);
        assert!(decode(&bytes, &s3).is_none());
    }

    #[test]
    fn damaged_parts_are_a_miss_not_a_panic() {
        let (_, s, parts) = subject();
        let bytes = encode(&parts, &s);
        for n in 0..bytes.len() {
            assert!(decode(&bytes[..n], &s).is_none(), "cut at {n}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer, &s).is_none());
        // Any byte changed: a miss, or parts whose every kid is earlier.
        for i in 0..bytes.len() {
            for x in [1u8, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[i] ^= x;
                if let Some(p) = decode(&b, &s) {
                    for (k, n) in p.nodes.iter().enumerate() {
                        let kids = match n {
                            Node::Split { lo, hi, .. } => vec![*lo, *hi],
                            Node::Test { yes, no, .. } => vec![*yes, *no],
                            _ => vec![],
                        };
                        assert!(kids.iter().all(|c| (*c as usize) < k));
                    }
                }
            }
        }
    }
}
