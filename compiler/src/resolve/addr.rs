//! Addresses: prefix literals, `cidr` sets with references and `except`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use cilc_grammar::ast::{self, AddrItem, Word};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::scope::{Found, Kind};
use super::{AddrSet, CidrSet, Resolver};
use crate::diag::{Code, Diagnostic};

/// Memoised resolution of named sets, with cycle detection.
pub enum Memo<T> {
    InProgress,
    Done(Option<T>),
}

pub type Memos<T> = HashMap<String, Memo<T>>;

impl Resolver<'_> {
    /// Resolve the named set `name` once: later uses get the stored result,
    /// and meeting it again while it is being resolved closes a cycle.
    pub(super) fn memoised<T: Clone>(
        &mut self,
        memo: fn(&mut Self) -> &mut Memos<T>,
        name: &Word,
        compute: impl FnOnce(&mut Self) -> Option<T>,
    ) -> Option<T> {
        match memo(self).get(&name.text) {
            Some(Memo::Done(v)) => return v.clone(),
            Some(Memo::InProgress) => {
                self.report(
                    Diagnostic::error(
                        Code::CyclicDefinition,
                        name.span,
                        format!("`{}` includes itself", name.text),
                    )
                    .label("this set refers back to itself through its references")
                    .help(
                        "a set cannot contain itself; remove the reference that closes the cycle",
                    ),
                );
                return None;
            }
            None => {}
        }
        memo(self).insert(name.text.clone(), Memo::InProgress);
        let value = compute(self);
        memo(self).insert(name.text.clone(), Memo::Done(value.clone()));
        value
    }
}

/// Parse `10.0.0.0/8`, `2001:db8::1`, ... Host bits are cleared with a
/// warning (pushed to `warnings`), since the intent is nearly always the
/// network.
pub fn parse_prefix(word: &Word, warnings: &mut Vec<Diagnostic>) -> Result<IpNet, Diagnostic> {
    let text = word.text.as_str();
    let (addr_text, len_text) = match text.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (text, None),
    };
    let addr: IpAddr = if addr_text.contains(':') {
        addr_text.parse::<Ipv6Addr>().map(IpAddr::V6).map_err(|_| {
            Diagnostic::error(Code::InvalidAddress, word.span, format!("`{addr_text}` is not a valid IPv6 address"))
                .label("invalid IPv6 address")
                .help("IPv6 addresses are up to eight groups of hex digits, `::` once for a run of zeros: `2001:db8::1`")
        })?
    } else {
        addr_text.parse::<Ipv4Addr>().map(IpAddr::V4).map_err(|_| {
            let help = if addr_text
                .split('.')
                .any(|o| o.len() > 1 && o.starts_with('0'))
            {
                "leading zeros are not allowed (they read as octal in some tools)"
            } else {
                "an IPv4 address is four numbers from 0 to 255: `192.0.2.1`"
            };
            Diagnostic::error(
                Code::InvalidAddress,
                word.span,
                format!("`{addr_text}` is not a valid IPv4 address"),
            )
            .label("invalid IPv4 address")
            .help(help)
        })?
    };
    let bits: u8 = if addr.is_ipv4() { 32 } else { 128 };
    let len = match len_text {
        None => bits,
        Some(l) => {
            match l.parse::<u8>() {
                Ok(n) if n <= bits => n,
                _ => {
                    let family = if addr.is_ipv4() { "IPv4" } else { "IPv6" };
                    return Err(Diagnostic::error(
                    Code::InvalidAddress,
                    word.span,
                    format!("prefix length /{l} is longer than the {bits} bits of an {family} address"),
                )
                .label("invalid prefix length")
                .help(format!("use a length from 0 to {bits}")));
                }
            }
        }
    };
    let net = match addr {
        IpAddr::V4(a) => IpNet::V4(Ipv4Net::new(a, len).expect("length checked")),
        IpAddr::V6(a) => IpNet::V6(Ipv6Net::new(a, len).expect("length checked")),
    };
    let trunc = net.trunc();
    if trunc != net {
        warnings.push(
            Diagnostic::warning(
                Code::HostBitsSet,
                word.span,
                format!("`{text}` has host bits set"),
            )
            .label(format!("read as `{trunc}`"))
            .help(format!("write the network address: `{trunc}`")),
        );
    }
    Ok(trunc)
}

/// The prefixes of `sorted` (a sorted list) whose network address lies
/// inside `net`. They are contiguous, so two binary searches find them; a
/// prefix among them that contains `net` comes first.
fn within(net: IpNet, sorted: &[IpNet]) -> &[IpNet] {
    let (Ok(lo), Ok(hi)) = (
        IpNet::new(net.network(), 0),
        IpNet::new(net.broadcast(), net.max_prefix_len()),
    ) else {
        return &[];
    };
    let a = sorted.partition_point(|p| *p < lo);
    let b = sorted.partition_point(|p| *p <= hi);
    &sorted[a..b.max(a)]
}

/// Is `net` entirely covered by the union of `cover` (sorted)?
pub fn covered(net: IpNet, cover: &[IpNet]) -> bool {
    fn go(net: IpNet, inner: &[IpNet]) -> bool {
        match inner.first() {
            None => false,
            Some(c) if c.contains(&net) => true,
            // Only prefixes strictly inside `net` are left: split.
            _ => net
                .subnets(net.prefix_len() + 1)
                .is_ok_and(|mut halves| halves.all(|h| go(h, within(h, inner)))),
        }
    }
    cover.iter().any(|c| c.contains(&net)) || go(net, within(net, cover))
}

fn normalise(nets: &mut Vec<IpNet>) {
    nets.sort();
    nets.dedup();
}

impl Resolver<'_> {
    /// An address literal used directly in a rule or `snat to`.
    pub(super) fn prefix(&mut self, word: &Word) -> Option<IpNet> {
        let mut warnings = Vec::new();
        let net = parse_prefix(word, &mut warnings);
        self.diags.append(&mut warnings);
        net.map_err(|d| self.report(d)).ok()
    }

    /// The flattened set of a `cidr` definition (memoised).
    pub(super) fn cidr_set(&mut self, def: &ast::CidrDef) -> Option<AddrSet> {
        self.memoised(|r| &mut r.cidr_memo, &def.name, |r| r.compute_cidr_set(def))
    }

    /// Resolve and check a `cidr` definition, without memoising (a second
    /// definition of a name is checked this way, then dropped).
    pub(super) fn compute_cidr_set(&mut self, def: &ast::CidrDef) -> Option<AddrSet> {
        let include = self.addr_items(&def.include);
        let except = self.addr_items(&def.except);
        match (include, except) {
            (Some(include), Some(except)) => self.check_set(def, include, except),
            _ => None,
        }
    }

    /// The prefixes of each item (a referenced set is expanded exactly).
    fn addr_items(&mut self, items: &[AddrItem]) -> Option<Vec<Vec<IpNet>>> {
        let mut nets = Vec::new();
        let mut ok = true;
        for item in items {
            match item {
                AddrItem::Addr(w) => match self.prefix(w) {
                    Some(n) => nets.push(vec![n]),
                    None => ok = false,
                },
                AddrItem::Ref(w) => {
                    match self.scope.lookup(w, &[Kind::Cidr], false, "a `cidr` set") {
                        Ok(Found::Def(ast::Item::Cidr(d))) => match self.cidr_set(d) {
                            Some(set) => nets.push(expand(&set)),
                            None => ok = false,
                        },
                        Ok(_) => ok = false,
                        Err(d) => {
                            self.report(d);
                            ok = false;
                        }
                    }
                }
            }
        }
        ok.then_some(nets)
    }

    fn check_set(
        &mut self,
        def: &ast::CidrDef,
        include: Vec<Vec<IpNet>>,
        except: Vec<Vec<IpNet>>,
    ) -> Option<AddrSet> {
        let mut inc: Vec<IpNet> = include.into_iter().flatten().collect();
        normalise(&mut inc);
        // An except must lie inside what the set includes, counting a
        // referenced set by its own includes: excepting over a hole that the
        // referenced set already has is harmless.
        let mut hull = inc.clone();
        for item in &def.include {
            if let AddrItem::Ref(w) = item {
                if let Some(Memo::Done(Some(set))) = self.cidr_memo.get(&w.text) {
                    hull.extend(set.include.iter().copied());
                }
            }
        }
        normalise(&mut hull);
        let mut ok = true;
        for (item, nets) in def.except.iter().zip(except.iter()) {
            let Some(net) = nets.iter().find(|n| !covered(**n, &hull)) else {
                continue;
            };
            let w = item.word();
            let hint = match hull.iter().find(|i| net.contains(*i)) {
                Some(i) => format!("`{net}` is wider than `{i}`; an except only removes addresses from inside the set"),
                None => "an except must lie inside one of the set's prefixes (and be of the same IP family)".to_string(),
            };
            self.report(
                Diagnostic::error(
                    Code::ExceptOutside,
                    w.span,
                    format!("`{net}` is not inside any prefix of `{}`", def.name.text),
                )
                .label("outside the set")
                .help(hint),
            );
            ok = false;
        }
        let mut exc: Vec<IpNet> = except.into_iter().flatten().collect();
        normalise(&mut exc);
        if !ok {
            return None;
        }
        if inc.iter().all(|n| covered(*n, &exc)) {
            self.report(
                Diagnostic::error(
                    Code::EmptySet,
                    def.name.span,
                    format!("`{}` is empty", def.name.text),
                )
                .label("its `except` list removes every address it includes")
                .help("remove the except entries that cover the whole set"),
            );
            return None;
        }
        Some(AddrSet {
            include: inc,
            except: exc,
        })
    }

    pub(super) fn cidr_definitions(&mut self, def: &ast::CidrDef) {
        if let Some(set) = self.cidr_set(def) {
            self.program.cidrs.push(CidrSet {
                name: def.name.text.clone(),
                span: def.span,
                set,
            });
        }
    }
}

/// A set as a list of disjoint prefixes (include minus except), exactly.
pub fn expand(set: &AddrSet) -> Vec<IpNet> {
    // `inner`: the excepts whose address lies inside `net` (see `within`).
    fn go(net: IpNet, inner: &[IpNet], out: &mut Vec<IpNet>) {
        match inner.first() {
            None => out.push(net),
            Some(e) if e.contains(&net) => {}
            _ => {
                if let Ok(halves) = net.subnets(net.prefix_len() + 1) {
                    for h in halves {
                        go(h, within(h, inner), out);
                    }
                }
            }
        }
    }
    let mut out = Vec::new();
    for n in &set.include {
        if !set.except.iter().any(|e| e.contains(n)) {
            go(*n, within(*n, &set.except), &mut out);
        }
    }
    let mut merged = IpNet::aggregate(&out);
    merged.sort();
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn coverage_needs_every_half() {
        assert!(covered(
            net("10.0.0.0/8"),
            &[net("10.0.0.0/9"), net("10.128.0.0/9")]
        ));
        assert!(!covered(net("10.0.0.0/8"), &[net("10.0.0.0/9")]));
        assert!(covered(net("10.1.0.0/16"), &[net("10.0.0.0/8")]));
    }

    proptest::proptest! {
        /// `expand` and `covered` agree with address-by-address membership
        /// on random prefixes inside one /24.
        #[test]
        fn expand_and_covered_match_brute_force(
            inc in proptest::collection::vec((0u32..256, 24u8..=32), 1..4),
            exc in proptest::collection::vec((0u32..256, 24u8..=32), 0..12),
        ) {
            let mk = |(a, l): (u32, u8)| IpNet::V4(Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + a), l).unwrap().trunc());
            let mut include: Vec<IpNet> = inc.into_iter().map(mk).collect();
            let mut except: Vec<IpNet> = exc.into_iter().map(mk).collect();
            normalise(&mut include);
            normalise(&mut except);
            let set = AddrSet { include: include.clone(), except: except.clone() };
            let pieces = expand(&set);
            for a in 0..256u32 {
                let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + a));
                proptest::prop_assert_eq!(pieces.iter().any(|p| p.contains(&ip)), set.contains(ip));
            }
            for n in &include {
                let all = n.hosts().chain([n.network(), n.broadcast()]).all(|ip| except.iter().any(|e| e.contains(&ip)));
                proptest::prop_assert_eq!(covered(*n, &except), all, "{}", n);
            }
        }
    }

    #[test]
    fn many_excepts_stay_fast_and_exact() {
        // 4096 single addresses out of a /20: linear-ish, not quadratic.
        let except: Vec<IpNet> = (0..4096u32)
            .map(|i| IpNet::V4(Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + 2 * i), 32).unwrap()))
            .collect();
        let set = AddrSet {
            include: vec![net("10.0.0.0/8")],
            except,
        };
        let pieces = expand(&set);
        assert!(pieces.contains(&net("10.0.0.1/32")));
        assert!(!pieces
            .iter()
            .any(|p| p.contains(&"10.0.0.2".parse::<IpAddr>().unwrap())));
        assert!(pieces
            .iter()
            .any(|p| p.contains(&"10.0.32.0".parse::<IpAddr>().unwrap())));
        assert!(!covered(net("10.0.0.0/8"), &set.except));
        assert!(covered(
            net("10.0.0.0/31"),
            &[net("10.0.0.0/32"), net("10.0.0.1/32")]
        ));
    }

    #[test]
    fn expand_subtracts_exactly() {
        let set = AddrSet {
            include: vec![net("10.0.0.0/8")],
            except: vec![net("10.0.0.0/9")],
        };
        assert_eq!(expand(&set), vec![net("10.128.0.0/9")]);
    }

    #[test]
    fn host_bits_are_cleared_with_a_warning() {
        let mut w = Vec::new();
        let word = Word::new("10.1.2.3/24", 0, 11);
        assert_eq!(parse_prefix(&word, &mut w).unwrap(), net("10.1.2.0/24"));
        assert_eq!(w.len(), 1);
    }
}
