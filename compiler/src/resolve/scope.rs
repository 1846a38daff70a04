//! Names: the table of definitions, duplicate and reserved-name checks,
//! lookups with did-you-mean, and usage tracking for unused-definition
//! warnings.

use std::cell::Cell;
use std::collections::HashMap;

use cilc_grammar::ast::{self, Item, Span, Word};

use super::Entity;
use crate::diag::{did_you_mean_help, Code, Diagnostic};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Cidr,
    Ports,
    Selector,
}

impl Kind {
    pub fn describe(self) -> &'static str {
        match self {
            Kind::Cidr => "a `cidr` set",
            Kind::Ports => "a `ports` set",
            Kind::Selector => "a selector",
        }
    }
}

pub struct Def<'a> {
    pub kind: Kind,
    pub name: &'a Word,
    pub item: &'a Item,
    used: Cell<bool>,
}

pub struct Scope<'a> {
    defs: HashMap<&'a str, Def<'a>>,
    /// Definition names in source order (for deterministic output).
    order: Vec<&'a str>,
    pub diags: Vec<Diagnostic>,
}

/// What a looked-up name turned out to be.
pub enum Found<'a> {
    Def(&'a Item),
    Entity(Entity),
}

impl<'a> Scope<'a> {
    pub fn collect(file: &'a ast::File) -> Scope<'a> {
        let mut scope = Scope {
            defs: HashMap::new(),
            order: Vec::new(),
            diags: Vec::new(),
        };
        // Policies and chains have names of their own kind.
        let mut rule_sets: HashMap<&str, Span> = HashMap::new();
        for item in &file.items {
            let (kind, name) = match item {
                Item::Cidr(d) => (Kind::Cidr, &d.name),
                Item::Ports(d) => (Kind::Ports, &d.name),
                Item::Select(d) => (Kind::Selector, &d.name),
                Item::Policy(ast::Policy { name, .. }) | Item::Chain(ast::Chain { name, .. }) => {
                    if let Some(first) = rule_sets.get(name.text.as_str()) {
                        scope.diags.push(duplicate(name, *first, "policy or chain"));
                    } else {
                        rule_sets.insert(&name.text, name.span);
                    }
                    continue;
                }
                Item::Error(_) => continue,
            };
            if Entity::from_name(&name.text).is_some() {
                scope.diags.push(
                    Diagnostic::error(
                        Code::ReservedName,
                        name.span,
                        format!("`{}` is a built-in entity", name.text),
                    )
                    .label("cannot be redefined")
                    .help(format!("choose another name, e.g. `my-{}`", name.text)),
                );
                continue;
            }
            if let Some(first) = scope.defs.get(name.text.as_str()) {
                scope.diags.push(duplicate(name, first.name.span, "name"));
                continue;
            }
            scope.order.push(&name.text);
            scope.defs.insert(
                &name.text,
                Def {
                    kind,
                    name,
                    item,
                    used: Cell::new(false),
                },
            );
        }
        scope
    }

    /// Look `word` up as one of `kinds` (or an entity when `entities`);
    /// report what is wrong when it is not one.
    pub fn lookup(
        &self,
        word: &Word,
        kinds: &[Kind],
        entities: bool,
        what: &str,
    ) -> Result<Found<'a>, Diagnostic> {
        if let Some(e) = Entity::from_name(&word.text) {
            if entities {
                return Ok(Found::Entity(e));
            }
            return Err(Diagnostic::error(
                Code::WrongKind,
                word.span,
                format!("`{}` is an entity, not {what}", word.text),
            )
            .label("entity used here"));
        }
        match self.defs.get(word.text.as_str()) {
            Some(def) if kinds.contains(&def.kind) => {
                def.used.set(true);
                Ok(Found::Def(def.item))
            }
            Some(def) => {
                def.used.set(true);
                Err(Diagnostic::error(
                    Code::WrongKind,
                    word.span,
                    format!("`{}` is {}, not {what}", word.text, def.kind.describe()),
                )
                .label(format!("{} used here", def.kind.describe()))
                .related(def.name.span, "defined here"))
            }
            None => {
                let mut candidates: Vec<&str> = self
                    .order
                    .iter()
                    .copied()
                    .filter(|n| kinds.contains(&self.defs[n].kind))
                    .collect();
                if entities {
                    candidates.extend(Entity::ALL.iter().map(|(n, _)| *n));
                }
                let help =
                    did_you_mean_help(&word.text, candidates.iter().copied()).or_else(|| {
                        let kind = kinds.first().map(|k| match k {
                            Kind::Cidr => "cidr",
                            Kind::Ports => "ports",
                            Kind::Selector => "select",
                        })?;
                        Some(format!("define it, e.g. `{kind} {} = ...`", word.text))
                    });
                Err(Diagnostic::error(
                    Code::UndefinedName,
                    word.span,
                    format!("undefined name `{}`", word.text),
                )
                .label(format!("expected {what}"))
                .help_opt(help))
            }
        }
    }

    pub fn get(&self, name: &str) -> Option<&Def<'a>> {
        self.defs.get(name)
    }

    pub fn unused(&self) -> Vec<Diagnostic> {
        self.order
            .iter()
            .map(|n| &self.defs[n])
            .filter(|d| !d.used.get())
            .map(|d| {
                Diagnostic::warning(
                    Code::UnusedDefinition,
                    d.name.span,
                    format!("{} `{}` is never used", d.kind.describe(), d.name.text),
                )
                .label("defined here")
                .help("remove it, or use it in a rule")
            })
            .collect()
    }
}

fn duplicate(name: &Word, first: Span, what: &str) -> Diagnostic {
    Diagnostic::error(
        Code::DuplicateDefinition,
        name.span,
        format!("the {what} `{}` is defined twice", name.text),
    )
    .label("second definition")
    .related(first, "first defined here")
    .help("rename one of them")
}
