//! Ports: numbers, ranges, named container ports and `ports` sets.

use cilc_grammar::ast::{self, PortItem, Word};

use super::scope::{Found, Kind};
use super::{PortSet, PortSpec, Resolver};
use crate::diag::{Code, Diagnostic};

/// A port number in 0..=65535, or why not.
pub fn port_number(w: &Word) -> Result<u16, Diagnostic> {
    match w.text.parse::<u64>() {
        Ok(n) if n <= 65535 => Ok(n as u16),
        _ => Err(Diagnostic::error(
            Code::PortOutOfRange,
            w.span,
            format!("port {} is out of range", w.text),
        )
        .label("ports are 0-65535")
        .help_opt((w.text.len() > 5).then(|| "is a digit repeated by mistake?".to_string()))),
    }
}

/// Kubernetes container port names (IANA_SVC_NAME): 1-15 characters of
/// `a-z`, `0-9` and `-`, at least one letter, no leading, trailing or
/// doubled `-`.
pub fn valid_port_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 15 {
        return Err("a port name has 1 to 15 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err("a port name uses only lowercase letters, digits and `-`");
    }
    if !name.bytes().any(|b| b.is_ascii_lowercase()) {
        return Err("a port name needs at least one letter (a number is a port, not a name)");
    }
    if name.starts_with('-') || name.ends_with('-') || name.contains("--") {
        return Err("a port name cannot start or end with `-` or contain `--`");
    }
    Ok(())
}

impl Resolver<'_> {
    /// Resolve a list of port items, reporting each bad one. Returns the
    /// specs that could be resolved, sorted and without duplicates.
    pub(super) fn port_items(&mut self, items: &[PortItem]) -> (Vec<PortSpec>, bool) {
        let mut out = Vec::new();
        let mut ok = true;
        for item in items {
            match item {
                PortItem::Num(w) => match port_number(w) {
                    Ok(p) => {
                        if p == 0 {
                            self.report(
                                Diagnostic::warning(Code::PortZero, w.span, "port 0 never matches")
                                    .label("no TCP, UDP or SCTP packet is sent to port 0")
                                    .help("to match every port, leave the ports out: `tcp`"),
                            );
                        }
                        out.push(PortSpec::Range(p, p));
                    }
                    Err(d) => {
                        self.report(d);
                        ok = false;
                    }
                },
                PortItem::Range(a, b) => {
                    let (pa, pb) = (port_number(a), port_number(b));
                    match (pa, pb) {
                        (Ok(x), Ok(y)) if x <= y => out.push(PortSpec::Range(x, y)),
                        (Ok(x), Ok(y)) => {
                            self.report(
                                Diagnostic::error(
                                    Code::InvertedRange,
                                    a.span.to(b.span),
                                    format!("port range {x}-{y} is inverted"),
                                )
                                .label("the start is after the end, so it matches nothing")
                                .help(format!("write `{y}-{x}`")),
                            );
                            ok = false;
                        }
                        (pa, pb) => {
                            for e in [pa.err(), pb.err()].into_iter().flatten() {
                                self.report(e);
                            }
                            ok = false;
                        }
                    }
                }
                PortItem::Named(w) => match valid_port_name(&w.text) {
                    Ok(()) => out.push(PortSpec::Named(w.text.clone())),
                    Err(why) => {
                        self.report(
                            Diagnostic::error(Code::InvalidPortName, w.span, format!("`{}` is not a valid port name", w.text))
                                .label(why)
                                .help("named ports are the `name` of a container port, e.g. `named http-metrics`"),
                        );
                        ok = false;
                    }
                },
                PortItem::Ref(w) => {
                    match self.scope.lookup(w, &[Kind::Ports], false, "a `ports` set") {
                        Ok(Found::Def(ast::Item::Ports(d))) => match self.port_set(d) {
                            Some(ports) => out.extend(ports),
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
        out.sort();
        out.dedup();
        (out, ok)
    }

    fn port_set(&mut self, def: &ast::PortsDef) -> Option<Vec<PortSpec>> {
        self.memoised(
            |r| &mut r.port_memo,
            &def.name,
            |r| {
                let (ports, ok) = r.port_items(&def.items);
                ok.then_some(ports)
            },
        )
    }

    pub(super) fn ports_definition(&mut self, def: &ast::PortsDef) {
        if let Some(ports) = self.port_set(def) {
            self.program.ports.push(PortSet {
                name: def.name.text.clone(),
                span: def.span,
                ports,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_names_follow_kubernetes() {
        assert!(valid_port_name("http-metrics").is_ok());
        assert!(valid_port_name("HTTP").is_err());
        assert!(valid_port_name("8080").is_err());
        assert!(valid_port_name("a--b").is_err());
        assert!(valid_port_name("a-very-long-port-name").is_err());
    }
}
