//! Selectors: label terms and namespace clauses, checked against the
//! Kubernetes rules for label keys and values.

use std::collections::{BTreeMap, BTreeSet};

use cilc_grammar::ast::{self, LabelOp, LabelTerm, NsClause, Word};

use super::{LabelMatch, LabelReq, NamedSelector, NamespaceReq, Resolver, Selector};
use crate::diag::{Code, Diagnostic};

/// A label name or value part: up to 63 characters, alphanumeric at both
/// ends, `-`, `_`, `.` inside.
fn valid_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// A DNS subdomain (label key prefixes): lowercase labels joined by dots.
fn valid_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|l| {
            let b = l.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

pub fn label_key_error(key: &str) -> Option<&'static str> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        if !valid_subdomain(p) {
            return Some("a key prefix is a lowercase DNS name, like `app.kubernetes.io/`");
        }
    }
    if !valid_name(name) {
        return Some("a key name has 1-63 letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit");
    }
    None
}

pub fn label_value_error(value: &str) -> Option<&'static str> {
    (!value.is_empty() && !valid_name(value))
        .then_some("a label value has up to 63 letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit")
}

/// Namespace names are DNS labels: 1-63 lowercase letters, digits and `-`.
pub fn namespace_error(name: &str) -> Option<&'static str> {
    let b = name.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-');
    (!ok).then_some("a namespace name has 1-63 lowercase letters, digits or `-`")
}

impl Resolver<'_> {
    pub(super) fn selector(&mut self, sel: &ast::Selector) -> Selector {
        let labels = self.terms(&sel.terms);
        let namespace = sel.namespace.as_ref().map(|ns| match ns {
            NsClause::Names(names, _) => {
                for n in names {
                    self.check_word(n, namespace_error(&n.text), "namespace");
                }
                let mut v: Vec<String> = names.iter().map(|w| w.text.clone()).collect();
                v.sort();
                v.dedup();
                NamespaceReq::Names(v)
            }
            NsClause::Labels(terms, _) => NamespaceReq::Labels(self.terms(terms)),
        });
        Selector { labels, namespace }
    }

    fn check_word(&mut self, w: &Word, error: Option<&'static str>, what: &str) -> bool {
        match error {
            Some(why) => {
                self.report(
                    Diagnostic::error(
                        Code::InvalidLabel,
                        w.span,
                        format!("`{}` is not a valid {what}", w.text),
                    )
                    .label(why)
                    .help("Kubernetes would reject it, so no endpoint could carry it"),
                );
                false
            }
            None => true,
        }
    }

    fn terms(&mut self, terms: &[LabelTerm]) -> Vec<LabelReq> {
        let mut out: Vec<LabelReq> = Vec::new();
        let mut seen: Vec<(&LabelTerm, LabelReq)> = Vec::new();
        for t in terms {
            self.check_word(&t.key, label_key_error(&t.key.text), "label key");
            let values: Vec<&Word> = match &t.op {
                LabelOp::Eq(v) | LabelOp::Ne(v) => vec![v],
                LabelOp::In(vs) | LabelOp::NotIn(vs) => vs.iter().collect(),
                LabelOp::Exists | LabelOp::Absent => vec![],
            };
            for v in &values {
                self.check_word(v, label_value_error(&v.text), "label value");
            }
            let mut vals: Vec<String> = values.iter().map(|w| w.text.clone()).collect();
            vals.sort();
            vals.dedup();
            let op = match &t.op {
                LabelOp::Eq(_) | LabelOp::In(_) => LabelMatch::In(vals),
                LabelOp::Ne(_) | LabelOp::NotIn(_) => LabelMatch::NotIn(vals),
                LabelOp::Exists => LabelMatch::Exists,
                LabelOp::Absent => LabelMatch::Absent,
            };
            let req = LabelReq {
                key: t.key.text.clone(),
                op,
            };
            if let Some((first, _)) = seen.iter().find(|(_, r)| *r == req) {
                self.report(
                    Diagnostic::warning(Code::DuplicateTerm, t.span, "this label term is repeated")
                        .label("same as an earlier term")
                        .related(first.span, "first written here")
                        .help("remove one of them"),
                );
                continue;
            }
            seen.push((t, req.clone()));
            out.push(req);
        }
        if let Some(key) = contradiction(&out) {
            let span = terms
                .iter()
                .filter(|t| t.key.text == key)
                .map(|t| t.span)
                .reduce(|a, b| a.to(b));
            if let Some(span) = span {
                self.report(
                    Diagnostic::warning(Code::EmptySelector, span, format!("no endpoint can satisfy these terms on `{key}`"))
                        .label("these terms contradict each other")
                        .help("a selector's terms must all hold; to select either value use `key in (a, b)`"),
                );
            }
        }
        out.sort();
        out
    }

    pub(super) fn select_definition(&mut self, def: &ast::SelectDef) {
        let selector = self.selector(&def.selector);
        self.program.selectors.push(NamedSelector {
            name: def.name.text.clone(),
            span: def.span,
            selector,
        });
    }
}

/// The first key whose requirements no label value can meet.
fn contradiction(reqs: &[LabelReq]) -> Option<String> {
    #[derive(Default)]
    struct K<'a> {
        allowed: Option<BTreeSet<&'a str>>,
        forbidden: BTreeSet<&'a str>,
        exists: bool,
        absent: bool,
    }
    let mut keys: BTreeMap<&str, K> = BTreeMap::new();
    for r in reqs {
        let k = keys.entry(&r.key).or_default();
        match &r.op {
            LabelMatch::In(vs) => {
                let set: BTreeSet<&str> = vs.iter().map(String::as_str).collect();
                k.allowed = Some(match k.allowed.take() {
                    Some(a) => a.intersection(&set).copied().collect(),
                    None => set,
                });
            }
            LabelMatch::NotIn(vs) => k.forbidden.extend(vs.iter().map(String::as_str)),
            LabelMatch::Exists => k.exists = true,
            LabelMatch::Absent => k.absent = true,
        }
    }
    keys.into_iter()
        .find(|(_, k)| {
            let needs_value = k.exists || k.allowed.is_some();
            (k.absent && needs_value)
                || k.allowed
                    .as_ref()
                    .is_some_and(|a| a.iter().all(|v| k.forbidden.contains(v)))
        })
        .map(|(key, _)| key.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_label_rules() {
        assert!(label_key_error("app.kubernetes.io/name").is_none());
        assert!(label_key_error("App.io/name").is_some());
        assert!(label_key_error("-app").is_some());
        assert!(label_value_error("").is_none());
        assert!(label_value_error("v1.2_x").is_none());
        assert!(label_value_error("a b").is_some());
        assert!(namespace_error("kube-system").is_none());
        assert!(namespace_error("Shop").is_some());
    }

    #[test]
    fn contradictions() {
        let r = |key: &str, op: LabelMatch| LabelReq {
            key: key.into(),
            op,
        };
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            contradiction(&[
                r("app", LabelMatch::In(v(&["a"]))),
                r("app", LabelMatch::In(v(&["b"])))
            ]),
            Some("app".into())
        );
        assert_eq!(
            contradiction(&[
                r("app", LabelMatch::In(v(&["a"]))),
                r("app", LabelMatch::NotIn(v(&["a"])))
            ]),
            Some("app".into())
        );
        assert_eq!(
            contradiction(&[r("app", LabelMatch::Exists), r("app", LabelMatch::Absent)]),
            Some("app".into())
        );
        assert_eq!(
            contradiction(&[
                r("app", LabelMatch::In(v(&["a", "b"]))),
                r("app", LabelMatch::NotIn(v(&["a"])))
            ]),
            None
        );
    }
}
