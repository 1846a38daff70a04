//! The stable text form of a `Program`: every definition inlined and
//! normalised, one rule per line. Tests compare programs in this form.

use std::fmt::{self, Display, Formatter, Write};

use super::*;

fn list<T>(items: &[T], f: impl Fn(&T) -> String) -> String {
    items.iter().map(f).collect::<Vec<_>>().join(", ")
}

fn addr_set(s: &AddrSet) -> String {
    let mut out = list(&s.include, |n| n.to_string());
    if !s.except.is_empty() {
        out.push_str(&format!(" except {}", list(&s.except, |n| n.to_string())));
    }
    out
}

fn port(p: &PortSpec) -> String {
    match p {
        PortSpec::Range(a, b) if a == b => a.to_string(),
        PortSpec::Range(a, b) => format!("{a}-{b}"),
        PortSpec::Named(n) => format!("named {n}"),
    }
}

fn label(r: &LabelReq) -> String {
    match &r.op {
        LabelMatch::In(vs) => format!("{} in ({})", r.key, vs.join(", ")),
        LabelMatch::NotIn(vs) => format!("{} notin ({})", r.key, vs.join(", ")),
        LabelMatch::Exists => format!("{} exists", r.key),
        LabelMatch::Absent => format!("{} absent", r.key),
    }
}

fn selector(s: &Selector) -> String {
    let mut out = format!("{{{}}}", list(&s.labels, label));
    match &s.namespace {
        None => {}
        Some(NamespaceReq::Names(n)) => out.push_str(&format!(" namespace in ({})", n.join(", "))),
        Some(NamespaceReq::Labels(l)) => {
            out.push_str(&format!(" namespace {{{}}}", list(l, label)))
        }
    }
    out
}

fn named(name: &Option<String>, body: String) -> String {
    match name {
        Some(n) => format!("{n}={body}"),
        None => body,
    }
}

fn peer(p: &Peer) -> String {
    match p {
        Peer::Entity(e) => e.name().to_string(),
        Peer::Cidr { name, set } => named(name, format!("cidr[{}]", addr_set(set))),
        Peer::Selector { name, selector: s } => named(name, format!("select{}", selector(s))),
    }
}

fn subject(s: &Subject) -> String {
    match s {
        Subject::Entity(e) => e.name().to_string(),
        Subject::Selector { name, selector: s } => named(name, format!("select{}", selector(s))),
    }
}

fn proto(p: u8) -> String {
    protocol_name(p)
        .map(str::to_string)
        .unwrap_or_else(|| p.to_string())
}

fn l7(l: &L7Spec) -> String {
    let pat = |p: &NamePattern| match p {
        NamePattern::Exact(s) => format!("{s:?}"),
        NamePattern::Wildcard(s) => format!("wildcard {s:?}"),
    };
    match l {
        L7Spec::Http(reqs) => format!(
            "http[{}]",
            reqs.iter()
                .map(|r| {
                    let mut parts = Vec::new();
                    parts.push(r.method.clone().unwrap_or_else(|| "*".into()));
                    parts.push(match &r.path {
                        None => "*".into(),
                        Some(PathMatch::Exact(p)) => format!("{p:?}"),
                        Some(PathMatch::Prefix(p)) => format!("prefix {p:?}"),
                        Some(PathMatch::Regex(p)) => format!("regex {p:?}"),
                    });
                    if let Some(h) = &r.host {
                        parts.push(format!("host {}", pat(h)));
                    }
                    for (k, v) in &r.headers {
                        parts.push(match v {
                            Some(v) => format!("header {k:?}={v:?}"),
                            None => format!("header {k:?}"),
                        });
                    }
                    parts.join(" ")
                })
                .collect::<Vec<_>>()
                .join("; ")
        ),
        L7Spec::Dns(ns) => format!("dns[{}]", list(ns, pat)),
        L7Spec::Tls(ns) => format!("tls[{}]", list(ns, pat)),
        L7Spec::Kafka(reqs) => format!(
            "kafka[{}]",
            reqs.iter()
                .map(|r| {
                    let mut s = format!("keys({})", list(&r.api_keys, |k| k.to_string()));
                    if let Some(t) = &r.topic {
                        s.push_str(&format!(" topic {t:?}"));
                    }
                    if let Some(c) = &r.client_id {
                        s.push_str(&format!(" client {c:?}"));
                    }
                    s
                })
                .collect::<Vec<_>>()
                .join("; ")
        ),
    }
}

impl Display for Rule {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let mut s = format!("{}: {}", self.name, self.action.keyword());
        if !self.src.is_empty() {
            let _ = write!(s, " src [{}]", list(&self.src, peer));
        }
        if !self.dst.is_empty() {
            let _ = write!(s, " dst [{}]", list(&self.dst, peer));
        }
        if !self.protos.is_empty() {
            let _ = write!(s, " proto [{}]", list(&self.protos, |p| proto(*p)));
        }
        if !self.ports.is_empty() {
            let _ = write!(s, " dport [{}]", list(&self.ports, port));
        }
        if !self.sports.is_empty() {
            let _ = write!(s, " sport [{}]", list(&self.sports, port));
        }
        if let Some(i) = &self.icmp {
            let _ = write!(s, " icmp-type {}", i.ty);
            if let Some(c) = i.code {
                let _ = write!(s, " code {c}");
            }
        }
        if let Some(fl) = &self.flags {
            let _ = write!(s, " flags {:#06x}/{:#06x}", fl.value, fl.mask);
        }
        if let Some(l) = &self.l7 {
            let _ = write!(s, " {}", l7(l));
        }
        if let Some(n) = &self.snat {
            match n.to {
                Some(a) => {
                    let _ = write!(s, " snat-to {a}");
                }
                None => s.push_str(" masquerade"),
            }
        }
        f.write_str(&s)
    }
}

impl Display for Program {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        for c in &self.cidrs {
            writeln!(f, "cidr {} = {}", c.name, addr_set(&c.set))?;
        }
        for p in &self.ports {
            writeln!(f, "ports {} = {}", p.name, list(&p.ports, port))?;
        }
        for s in &self.selectors {
            writeln!(f, "select {} = {}", s.name, selector(&s.selector))?;
        }
        for p in &self.policies {
            writeln!(f, "policy {} on {}", p.name, subject(&p.subject))?;
            for (dir, rules) in [("ingress", &p.ingress), ("egress", &p.egress)] {
                if let Some(rules) = rules {
                    writeln!(f, "  {dir} ({} rules)", rules.len())?;
                    for r in rules {
                        writeln!(f, "    {r}")?;
                    }
                }
            }
        }
        for c in &self.chains {
            writeln!(
                f,
                "chain {} on {} {} (first match)",
                c.name,
                subject(&c.subject),
                c.direction.keyword()
            )?;
            for r in &c.rules {
                writeln!(f, "  {r}")?;
            }
        }
        Ok(())
    }
}
