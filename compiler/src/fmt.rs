//! The canonical printer of the AST (`cilc fmt`), comments kept.
//!
//! Input: a parsed `ast::File` without syntax errors and its source text.
//! Output: canonical text. The layout is fixed (two-space indent, one rule
//! per line, single spaces, strings re-quoted, label words quoted only when
//! they must be); blank lines between items and between rules are kept (at
//! most one). Comments stay before the item, rule or L7 entry they preceded,
//! or at the end of the line they ended. Printing is idempotent, and parsing
//! the output gives back the same AST (checked by tests).

use cilc_grammar::ast::*;
use cilc_grammar::lexer::{Lexer, Tok};

/// L7 blocks longer than this go one entry per line.
const WIDTH: usize = 100;

pub fn format_file(file: &File, src: &str) -> String {
    let mut p = Printer {
        src,
        comments: &file.comments,
        next: 0,
        out: String::new(),
        indent: 0,
    };
    let mut prev_end: Option<u32> = None;
    for item in &file.items {
        p.node_start(item.span().start, prev_end);
        p.item(item);
        prev_end = Some(item.span().end);
    }
    p.comments_before(u32::MAX, prev_end);
    let mut out = p.out;
    while out.ends_with("\n\n") {
        out.pop();
    }
    if out.starts_with('\n') {
        out = out.trim_start_matches('\n').to_string();
    }
    out
}

struct Printer<'a> {
    src: &'a str,
    comments: &'a [Comment],
    next: usize,
    out: String,
    indent: usize,
}

/// A word is printed bare when it reads back as one word token.
pub fn word(text: &str) -> String {
    let mut lx = Lexer::new(text);
    let first = lx.next();
    let bare = match (first, lx.next()) {
        (Some(Ok((0, tok, end))), None) if end == text.len() => match tok {
            Tok::Ident(_)
            | Tok::LabelWord(_)
            | Tok::DigitWord(_)
            | Tok::Number(_)
            | Tok::Hex(_)
            | Tok::Ipv4(_) => true,
            Tok::In | Tok::NotIn => false,
            t => t
                .keyword()
                .is_some_and(|k| k.starts_with(|c: char| c.is_ascii_alphabetic())),
        },
        _ => false,
    };
    if bare {
        text.to_string()
    } else {
        quote(text)
    }
}

fn join<T>(items: &[T], sep: &str, f: impl Fn(&T) -> String) -> String {
    items.iter().map(f).collect::<Vec<_>>().join(sep)
}

fn port_item(p: &PortItem) -> String {
    match p {
        PortItem::Num(w) | PortItem::Ref(w) => w.text.clone(),
        PortItem::Range(a, b) => format!("{}-{}", a.text, b.text),
        PortItem::Named(w) => format!("named {}", word(&w.text)),
    }
}

/// A label key: as `word`, but the words that start an item are quoted.
fn key(text: &str) -> String {
    if cilc_grammar::lexer::is_item_keyword(text) {
        quote(text)
    } else {
        word(text)
    }
}

fn term(t: &LabelTerm) -> String {
    let k = key(&t.key.text);
    match &t.op {
        LabelOp::Eq(v) => format!("{k}={}", word(&v.text)),
        LabelOp::Ne(v) => format!("{k}!={}", word(&v.text)),
        LabelOp::In(vs) => format!("{k} in ({})", join(vs, ", ", |w| word(&w.text))),
        LabelOp::NotIn(vs) => format!("{k} notin ({})", join(vs, ", ", |w| word(&w.text))),
        LabelOp::Exists => format!("{k}=*"),
        LabelOp::Absent => format!("!{k}"),
    }
}

pub fn selector(s: &Selector) -> String {
    let mut out = join(&s.terms, ", ", term);
    if let Some(ns) = &s.namespace {
        if !out.is_empty() {
            out.push(' ');
        }
        match ns {
            NsClause::Names(names, _) if names.len() == 1 => {
                out.push_str(&format!("in namespace {}", word(&names[0].text)));
            }
            NsClause::Names(names, _) => {
                out.push_str(&format!(
                    "in namespace ({})",
                    join(names, ", ", |w| word(&w.text))
                ));
            }
            NsClause::Labels(terms, _) => {
                out.push_str(&format!("in namespaces {}", join(terms, ", ", term)))
            }
        }
    }
    out
}

fn subject(s: &Subject) -> String {
    match s {
        Subject::Name(w) => w.text.clone(),
        Subject::Inline(sel) => format!("{{ {} }}", selector(sel)),
    }
}

fn peer(p: &Peer) -> String {
    match p {
        Peer::Name(w) | Peer::Addr(w) => w.text.clone(),
        Peer::Inline(sel) => format!("{{ {} }}", selector(sel)),
    }
}

fn proto(p: &Proto) -> String {
    match p {
        Proto::Kw(k, _) => k.keyword().to_string(),
        Proto::Other(w) => format!("proto {}", w.text),
    }
}

fn flag_val(ws: &[Word]) -> String {
    join(ws, "|", |w| w.text.clone())
}

fn l4(l: &L4) -> String {
    let mut out = join(&l.protos, "/", proto);
    if !l.ports.is_empty() {
        out.push(' ');
        out.push_str(&join(&l.ports, ", ", port_item));
    }
    if !l.sports.is_empty() {
        out.push_str(" sport ");
        out.push_str(&join(&l.sports, ", ", port_item));
    }
    if let Some(i) = &l.icmp {
        out.push_str(&format!(" type {}", i.ty.text));
        if let Some(c) = &i.code {
            out.push_str(&format!(" code {}", c.text));
        }
    }
    if let Some(f) = &l.flags {
        out.push_str(&format!(" flags {}", flag_val(&f.value)));
        if let Some(m) = &f.mask {
            out.push_str(&format!("/{}", flag_val(m)));
        }
    }
    out
}

fn http_rule(r: &HttpRule) -> String {
    let mut parts = Vec::new();
    if let Some(m) = &r.method {
        parts.push(m.text.clone());
    }
    match &r.path {
        Some(PathPat::Glob(s)) => parts.push(quote(&s.value)),
        Some(PathPat::Regex(s)) => parts.push(format!("regex {}", quote(&s.value))),
        None => {}
    }
    if let Some(h) = &r.host {
        parts.push(format!("host {}", quote(&h.value)));
    }
    for h in &r.headers {
        match &h.value {
            Some(v) => parts.push(format!(
                "header {} = {}",
                quote(&h.name.value),
                quote(&v.value)
            )),
            None => parts.push(format!("header {}", quote(&h.name.value))),
        }
    }
    parts.join(" ")
}

fn kafka_rule(r: &KafkaRule) -> String {
    let mut out = r.api.text.clone();
    if let Some(t) = &r.topic {
        out.push_str(&format!(" topic {}", quote(&t.value)));
    }
    if let Some(c) = &r.client {
        out.push_str(&format!(" client {}", quote(&c.value)));
    }
    out
}

/// The entries of an L7 block, their spans, and their separator.
fn l7_entries(l: &L7) -> (Vec<(String, Span)>, &'static str) {
    match l {
        L7::Http(rs, _) => (rs.iter().map(|r| (http_rule(r), r.span)).collect(), ";"),
        L7::Kafka(rs, _) => (rs.iter().map(|r| (kafka_rule(r), r.span)).collect(), ";"),
        L7::Dns(ns, _) | L7::Tls(ns, _) => {
            (ns.iter().map(|s| (quote(&s.value), s.span)).collect(), ",")
        }
    }
}

impl Printer<'_> {
    fn pad(&mut self) {
        for _ in 0..self.indent {
            self.out.push_str("  ");
        }
    }

    fn has_blank_line(&self, from: u32, to: u32) -> bool {
        let (from, to) = (from as usize, (to as usize).min(self.src.len()));
        from < to
            && self.src[from..to]
                .lines()
                .skip(1)
                .any(|l| l.trim().is_empty())
            && self.src[from..to].matches('\n').count() >= 2
    }

    fn same_line(&self, a: u32, b: u32) -> bool {
        let (a, b) = (a as usize, (b as usize).min(self.src.len()));
        a <= b && !self.src[a..b].contains('\n')
    }

    /// Own-line comments before `start`, then a blank line if the source
    /// had one before the node.
    fn node_start(&mut self, start: u32, prev_end: Option<u32>) {
        self.comments_before(start, prev_end);
        let from = self
            .next
            .checked_sub(1)
            .map(|i| self.comments[i].span.end)
            .into_iter()
            .chain(prev_end)
            .max();
        if let Some(from) = from {
            if self.has_blank_line(from, start) && !self.out.ends_with("{\n") {
                self.out.push('\n');
            }
        }
    }

    fn comments_before(&mut self, pos: u32, prev_end: Option<u32>) {
        let mut last = prev_end;
        while let Some(c) = self.comments.get(self.next) {
            if c.span.start >= pos {
                break;
            }
            if let Some(l) = last {
                if self.has_blank_line(l, c.span.start)
                    && !self.out.ends_with("{\n")
                    && !self.out.is_empty()
                {
                    self.out.push('\n');
                }
            }
            self.pad();
            self.out.push_str(c.text.trim_end());
            self.out.push('\n');
            last = Some(c.span.end);
            self.next += 1;
        }
    }

    /// End a line: a comment that followed `src_pos` on its source line
    /// goes at the end of this one.
    fn end_line(&mut self, src_pos: u32) {
        if let Some(c) = self.comments.get(self.next) {
            if c.span.start >= src_pos && self.same_line(src_pos, c.span.start) {
                self.out.push_str("  ");
                self.out.push_str(c.text.trim_end());
                self.next += 1;
            }
        }
        self.out.push('\n');
    }

    fn line(&mut self, text: &str, src_end: u32) {
        self.pad();
        self.out.push_str(text);
        self.end_line(src_end);
    }

    fn item(&mut self, item: &Item) {
        match item {
            Item::Cidr(d) => {
                let mut t = format!(
                    "cidr {} = {}",
                    d.name.text,
                    join(&d.include, ", ", |a| a.word().text.clone())
                );
                if !d.except.is_empty() {
                    t.push_str(&format!(
                        " except {}",
                        join(&d.except, ", ", |a| a.word().text.clone())
                    ));
                }
                self.line(&t, d.span.end);
            }
            Item::Ports(d) => self.line(
                &format!(
                    "ports {} = {}",
                    d.name.text,
                    join(&d.items, ", ", port_item)
                ),
                d.span.end,
            ),
            Item::Select(d) => self.line(
                &format!("select {} = {}", d.name.text, selector(&d.selector)),
                d.span.end,
            ),
            Item::Policy(p) => {
                self.line(
                    &format!("policy {} on {} {{", p.name.text, subject(&p.subject)),
                    p.subject.span().end,
                );
                self.indent += 1;
                let mut prev = None;
                for s in &p.sections {
                    self.node_start(s.span.start, prev);
                    self.line(
                        &format!("{} {{", s.direction.keyword()),
                        s.direction_span.end,
                    );
                    self.rules(&s.rules, s.span.end);
                    self.line("}", s.span.end);
                    prev = Some(s.span.end);
                }
                self.comments_before(p.span.end, prev);
                self.indent -= 1;
                self.line("}", p.span.end);
            }
            Item::Chain(c) => {
                let head = format!(
                    "chain {} on {} {} {{",
                    c.name.text,
                    subject(&c.subject),
                    c.direction.keyword()
                );
                self.line(&head, c.direction_span.end);
                self.rules(&c.rules, c.span.end);
                self.line("}", c.span.end);
            }
            Item::Error(_) => {}
        }
    }

    fn rules(&mut self, rules: &[Rule], block_end: u32) {
        self.indent += 1;
        let mut prev = None;
        for r in rules {
            if let Rule::Rule(b) = r {
                self.node_start(b.span.start, prev);
                self.rule(b);
                prev = Some(b.span.end);
            }
        }
        self.comments_before(block_end, prev);
        self.indent -= 1;
    }

    fn rule(&mut self, b: &RuleBody) {
        let mut head = b.action.keyword().to_string();
        if let Some(f) = &b.from {
            head.push_str(&format!(" from {}", join(&f.peers, ", ", peer)));
        }
        if let Some(t) = &b.to {
            head.push_str(&format!(" to {}", join(&t.peers, ", ", peer)));
        }
        if let Some(l) = &b.l4 {
            head.push(' ');
            head.push_str(&l4(l));
        }
        let mut tail = String::new();
        if let Some(s) = &b.snat {
            tail.push_str(" snat");
            if let Some(to) = &s.to {
                tail.push_str(&format!(" to {}", to.text));
            }
        }
        if let Some(n) = &b.name {
            tail.push_str(&format!(" as {}", n.text));
        }
        let Some(l7) = &b.l7 else {
            self.line(&(head + &tail), b.span.end);
            return;
        };
        let (entries, sep) = l7_entries(l7);
        let span = l7.span();
        let body = join(&entries, &format!("{sep} "), |e| e.0.clone());
        let inline = if body.is_empty() {
            format!("{head} {} {{ }}{tail}", l7.keyword())
        } else {
            format!("{head} {} {{ {body} }}{tail}", l7.keyword())
        };
        let has_comment = self
            .comments
            .get(self.next)
            .is_some_and(|c| c.span.start < span.end);
        if !has_comment && inline.len() + 2 * self.indent <= WIDTH {
            self.line(&inline, b.span.end);
            return;
        }
        self.pad();
        self.out.push_str(&format!("{head} {} {{", l7.keyword()));
        self.end_line(span.start);
        self.indent += 1;
        let mut prev = None;
        for (text, espan) in &entries {
            self.node_start(espan.start, prev);
            self.line(&format!("{text}{sep}"), espan.end);
            prev = Some(espan.end);
        }
        self.comments_before(span.end, prev);
        self.indent -= 1;
        self.line(&format!("}}{tail}"), b.span.end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_quoted_only_when_needed() {
        assert_eq!(word("web"), "web");
        assert_eq!(word("app.kubernetes.io/name"), "app.kubernetes.io/name");
        assert_eq!(word("http"), "http");
        assert_eq!(word("in"), "\"in\"");
        assert_eq!(word("a b"), "\"a b\"");
        assert_eq!(word(""), "\"\"");
        assert_eq!(word("{"), "\"{\"");
    }
}
