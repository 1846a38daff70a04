//! Lexer: source text → tokens with byte spans (and comments kept aside).
//!
//! Input: `&str`. Output: an iterator of `(start, Tok, end)` triples for the
//! LALRPOP parser, plus the `Comment`s it skipped, which `fmt` re-attaches.
//! Invalid input never stops the lexer: it yields `Tok::Error` or
//! `Tok::Unterminated` and the parser's error recovery carries on.

use logos::Logos;

use crate::ast::{Comment, Span};

#[derive(Logos, Debug, Clone, Copy, PartialEq, Eq)]
#[logos(skip r"[ \t\r\n\f\u{FEFF}]+")]
pub enum Tok<'a> {
    // Definitions and blocks.
    #[token("cidr")]
    Cidr,
    #[token("ports")]
    Ports,
    #[token("select")]
    Select,
    #[token("policy")]
    Policy,
    #[token("chain")]
    Chain,
    #[token("on")]
    On,
    #[token("ingress")]
    Ingress,
    #[token("egress")]
    Egress,
    #[token("except")]
    Except,
    #[token("in")]
    In,
    #[token("notin")]
    NotIn,
    #[token("namespace")]
    Namespace,
    #[token("namespaces")]
    Namespaces,
    // Actions.
    #[token("allow")]
    Allow,
    #[token("deny")]
    Deny,
    #[token("audit")]
    Audit,
    #[token("accept")]
    Accept,
    #[token("drop")]
    Drop,
    // Rule clauses.
    #[token("from")]
    From,
    #[token("to")]
    To,
    #[token("host")]
    Host,
    #[token("tcp")]
    Tcp,
    #[token("udp")]
    Udp,
    #[token("sctp")]
    Sctp,
    #[token("icmp")]
    Icmp,
    #[token("icmpv6")]
    Icmpv6,
    #[token("any")]
    Any,
    #[token("proto")]
    Proto,
    #[token("type")]
    Type,
    #[token("code")]
    Code,
    #[token("sport")]
    Sport,
    #[token("flags")]
    Flags,
    #[token("named")]
    Named,
    #[token("snat")]
    Snat,
    #[token("as")]
    As,
    // L7.
    #[token("http")]
    Http,
    #[token("dns")]
    Dns,
    #[token("kafka")]
    Kafka,
    #[token("tls")]
    Tls,
    #[token("header")]
    Header,
    #[token("topic")]
    Topic,
    #[token("client")]
    Client,
    #[token("regex")]
    Regex,

    // Punctuation.
    #[token("{")]
    LBrace,
    #[token("}")]
    RBrace,
    #[token("(")]
    LParen,
    #[token(")")]
    RParen,
    #[token(",")]
    Comma,
    #[token(";")]
    Semi,
    #[token("=")]
    Eq,
    #[token("!=")]
    Ne,
    #[token("!")]
    Bang,
    #[token("/")]
    Slash,
    #[token("-")]
    Dash,
    #[token("|")]
    Pipe,
    #[token("*")]
    Star,

    // Words. Addresses are validated by the resolver, so that a bad one is
    // reported with its span and parsing goes on.
    #[regex(r"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+(/[0-9]+)?", priority = 10)]
    Ipv4(&'a str),
    #[regex(r"[0-9A-Fa-f]*:[0-9A-Fa-f:.]*(/[0-9]+)?")]
    Ipv6(&'a str),
    #[regex(r"[0-9]+", priority = 8)]
    Number(&'a str),
    #[regex(r"0[xX][0-9A-Fa-f]+", priority = 9)]
    Hex(&'a str),
    #[regex(r"[A-Za-z_][A-Za-z0-9_\-]*")]
    Ident(&'a str),
    /// A label key or value with dots, and a `/` after a dotted prefix
    /// (`app.kubernetes.io/name`, `1.2.3`). One that starts with a digit is
    /// digits and dots only, so that `8000-8099` stays a port range (logos
    /// does not backtrack); a `/` needs a dot before it so that
    /// `syn/syn|ack` and `tcp/udp` stay separate words.
    #[regex(r"[A-Za-z_][A-Za-z0-9_\-]*(\.[A-Za-z0-9_\-]+)+(/[A-Za-z0-9_\-.]+)?")]
    #[regex(r"[0-9]+(\.[0-9]+)+", priority = 3)]
    LabelWord(&'a str),
    /// Digits then letters (`2fa`, a pod-template-hash `5d8f7c9b4d`): a
    /// label value, never a number. Without it logos would try to read the
    /// word as an IPv6 address and fail on the first digit.
    #[regex(r"[0-9]+[A-Za-z_][A-Za-z0-9_]*", priority = 2)]
    DigitWord(&'a str),
    /// A string literal, quotes included; `ast::unescape` decodes it.
    #[regex(r#""([^"\\\n]|\\[^\n])*""#)]
    Str(&'a str),
    /// A string that reaches the end of its line without its closing quote.
    #[regex(r#""([^"\\\n]|\\[^\n])*"#, priority = 1)]
    Unterminated(&'a str),
    #[regex(r"#[^\n]*")]
    Comment(&'a str),

    /// Any character the language does not use.
    Error(char),
}

impl Tok<'_> {
    /// How the token is named in "expected ..." messages.
    pub fn describe(&self) -> String {
        match self {
            Tok::Ipv4(s) | Tok::Ipv6(s) => format!("address `{s}`"),
            Tok::Number(s) | Tok::Hex(s) => format!("number `{s}`"),
            Tok::Ident(s) | Tok::LabelWord(s) | Tok::DigitWord(s) => format!("`{s}`"),
            Tok::Str(s) | Tok::Unterminated(s) => format!("string {s}"),
            Tok::Comment(_) => "comment".into(),
            Tok::Error(c) => format!("`{c}`"),
            other => format!("`{}`", other.keyword().unwrap_or("?")),
        }
    }

    /// The source text of a keyword or punctuation token.
    pub fn keyword(&self) -> Option<&'static str> {
        KEYWORDS.iter().find(|(_, t)| t == self).map(|(s, _)| *s)
    }
}

/// Every fixed token with its spelling (keywords first, then punctuation).
pub const KEYWORDS: &[(&str, Tok<'static>)] = &[
    ("cidr", Tok::Cidr),
    ("ports", Tok::Ports),
    ("select", Tok::Select),
    ("policy", Tok::Policy),
    ("chain", Tok::Chain),
    ("on", Tok::On),
    ("ingress", Tok::Ingress),
    ("egress", Tok::Egress),
    ("except", Tok::Except),
    ("in", Tok::In),
    ("notin", Tok::NotIn),
    ("namespace", Tok::Namespace),
    ("namespaces", Tok::Namespaces),
    ("allow", Tok::Allow),
    ("deny", Tok::Deny),
    ("audit", Tok::Audit),
    ("accept", Tok::Accept),
    ("drop", Tok::Drop),
    ("from", Tok::From),
    ("to", Tok::To),
    ("host", Tok::Host),
    ("tcp", Tok::Tcp),
    ("udp", Tok::Udp),
    ("sctp", Tok::Sctp),
    ("icmp", Tok::Icmp),
    ("icmpv6", Tok::Icmpv6),
    ("any", Tok::Any),
    ("proto", Tok::Proto),
    ("type", Tok::Type),
    ("code", Tok::Code),
    ("sport", Tok::Sport),
    ("flags", Tok::Flags),
    ("named", Tok::Named),
    ("snat", Tok::Snat),
    ("as", Tok::As),
    ("http", Tok::Http),
    ("dns", Tok::Dns),
    ("kafka", Tok::Kafka),
    ("tls", Tok::Tls),
    ("header", Tok::Header),
    ("topic", Tok::Topic),
    ("client", Tok::Client),
    ("regex", Tok::Regex),
    ("{", Tok::LBrace),
    ("}", Tok::RBrace),
    ("(", Tok::LParen),
    (")", Tok::RParen),
    (",", Tok::Comma),
    (";", Tok::Semi),
    ("=", Tok::Eq),
    ("!=", Tok::Ne),
    ("!", Tok::Bang),
    ("/", Tok::Slash),
    ("-", Tok::Dash),
    ("|", Tok::Pipe),
    ("*", Tok::Star),
];

/// Does `word` start a top-level item (and so cannot be a bare label key)?
pub fn is_item_keyword(word: &str) -> bool {
    matches!(word, "cidr" | "ports" | "select" | "policy" | "chain")
}

/// Is `word` a reserved word of the language?
pub fn is_keyword(word: &str) -> bool {
    KEYWORDS
        .iter()
        .any(|(s, _)| s.starts_with(|c: char| c.is_ascii_alphabetic()) && *s == word)
}

pub type Spanned<'a> = (usize, Tok<'a>, usize);

/// Token stream for the parser; comments are moved to `comments`.
pub struct Lexer<'a> {
    inner: logos::SpannedIter<'a, Tok<'a>>,
    src: &'a str,
    pub comments: Vec<Comment>,
}

impl<'a> Lexer<'a> {
    pub fn new(src: &'a str) -> Self {
        Lexer {
            inner: Tok::lexer(src).spanned(),
            src,
            comments: Vec::new(),
        }
    }
}

impl<'a> Iterator for Lexer<'a> {
    type Item = Result<Spanned<'a>, std::convert::Infallible>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (tok, range) = self.inner.next()?;
            let tok = match tok {
                Ok(Tok::Comment(text)) => {
                    let span = Span::new(range.start, range.end);
                    self.comments.push(Comment {
                        text: text.to_string(),
                        span,
                    });
                    continue;
                }
                Ok(t) => t,
                Err(()) => Tok::Error(self.src[range.start..].chars().next().unwrap_or('?')),
            };
            return Some(Ok((range.start, tok, range.end)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(src: &str) -> Vec<Tok<'_>> {
        Lexer::new(src).map(|t| t.unwrap().1).collect()
    }

    #[test]
    fn words_and_addresses() {
        assert_eq!(
            kinds("10.0.0.0/8 fd00::/8 ::1 8000-8099 kube-dns app.kubernetes.io/name 0x12"),
            vec![
                Tok::Ipv4("10.0.0.0/8"),
                Tok::Ipv6("fd00::/8"),
                Tok::Ipv6("::1"),
                Tok::Number("8000"),
                Tok::Dash,
                Tok::Number("8099"),
                Tok::Ident("kube-dns"),
                Tok::LabelWord("app.kubernetes.io/name"),
                Tok::Hex("0x12"),
            ]
        );
        assert_eq!(
            kinds("5d8f7c9b4d 2fa 2a00:1450::/32 0x1f"),
            vec![
                Tok::DigitWord("5d8f7c9b4d"),
                Tok::DigitWord("2fa"),
                Tok::Ipv6("2a00:1450::/32"),
                Tok::Hex("0x1f")
            ]
        );
        assert_eq!(
            kinds("syn/syn|ack tcp/udp"),
            vec![
                Tok::Ident("syn"),
                Tok::Slash,
                Tok::Ident("syn"),
                Tok::Pipe,
                Tok::Ident("ack"),
                Tok::Tcp,
                Tok::Slash,
                Tok::Udp
            ]
        );
    }

    #[test]
    fn comments_are_kept_aside() {
        let mut lx = Lexer::new("allow # why\n# next\ndeny");
        let toks: Vec<_> = lx.by_ref().map(|t| t.unwrap().1).collect();
        assert_eq!(toks, vec![Tok::Allow, Tok::Deny]);
        assert_eq!(lx.comments.len(), 2);
        assert_eq!(lx.comments[0].text, "# why");
    }

    #[test]
    fn bad_input_is_a_token_not_a_stop() {
        assert_eq!(
            kinds("allow $ \"abc"),
            vec![Tok::Allow, Tok::Error('$'), Tok::Unterminated("\"abc")]
        );
    }

    #[test]
    fn keyword_table_matches_lexer() {
        for (text, tok) in KEYWORDS {
            assert_eq!(kinds(text), vec![*tok], "{text}");
        }
    }
}
