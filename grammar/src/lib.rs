//! Front end of cilc: the `.cpl` policy language as text.
//!
//! Pipeline stage: **source text → `ast::File` + syntax errors**.
//!
//! - `lexer`: logos tokens with byte spans; comments are kept aside for `fmt`.
//! - `parser.lalrpop`: the LR(1) grammar, with error recovery at the rule,
//!   section and item level so that one run reports several mistakes.
//! - `ast`: the surface AST. Values (numbers, addresses, names) stay as
//!   written; the compiler's resolver checks them and reports with spans.
//!
//! `parse` never fails and never panics: it returns whatever it could read
//! together with every syntax error it met.

pub mod ast;
pub mod lexer;

lalrpop_util::lalrpop_mod!(
    #[allow(clippy::all, unused_parens, clippy::pedantic)]
    parser
);

use ast::{File, Span};
use lalrpop_util::ParseError;
use lexer::{Lexer, Tok};

/// A syntax error, with the span it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub span: Span,
    pub kind: SyntaxErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyntaxErrorKind {
    /// A token the grammar does not allow here; `expected` is readable text.
    UnexpectedToken {
        found: String,
        expected: Vec<String>,
    },
    UnexpectedEof {
        expected: Vec<String>,
    },
    /// A character the language does not use.
    InvalidChar(char),
    UnterminatedString,
}

/// Parse a whole file. Always returns a `File` (possibly partial) and the
/// syntax errors met, in source order.
pub fn parse(src: &str) -> (File, Vec<SyntaxError>) {
    let mut errors = Vec::new();
    // Tokens that cannot start anything are reported once, by the lexer.
    for (l, tok, r) in Lexer::new(src).map(|t| match t {
        Ok(t) => t,
        Err(never) => match never {},
    }) {
        let kind = match tok {
            Tok::Error(c) => SyntaxErrorKind::InvalidChar(c),
            Tok::Unterminated(_) => SyntaxErrorKind::UnterminatedString,
            _ => continue,
        };
        errors.push(SyntaxError {
            span: Span::new(l, r),
            kind,
        });
    }
    let mut lexer = Lexer::new(src);
    let mut recovered = Vec::new();
    let result = parser::FileParser::new().parse(&mut recovered, &mut lexer);
    let comments = std::mem::take(&mut lexer.comments);
    let items = match result {
        Ok(items) => items,
        Err(e) => {
            recovered.push(lalrpop_util::ErrorRecovery {
                error: e,
                dropped_tokens: Vec::new(),
            });
            Vec::new()
        }
    };
    for r in recovered {
        if let Some(e) = convert(r.error, src.len()) {
            // The lexer already explained bad characters and strings.
            if !errors.iter().any(|old| old.span.start == e.span.start) {
                errors.push(e);
            }
        }
    }
    errors.sort_by_key(|e| (e.span.start, e.span.end));
    (File { items, comments }, errors)
}

fn convert(
    e: ParseError<usize, Tok<'_>, std::convert::Infallible>,
    len: usize,
) -> Option<SyntaxError> {
    Some(match e {
        ParseError::UnrecognizedToken {
            token: (l, tok, r),
            expected,
        } => SyntaxError {
            span: Span::new(l, r),
            kind: SyntaxErrorKind::UnexpectedToken {
                found: tok.describe(),
                expected: readable(&expected),
            },
        },
        ParseError::UnrecognizedEof { expected, .. } => SyntaxError {
            span: Span::new(len, len),
            kind: SyntaxErrorKind::UnexpectedEof {
                expected: readable(&expected),
            },
        },
        ParseError::ExtraToken { token: (l, tok, r) } => SyntaxError {
            span: Span::new(l, r),
            kind: SyntaxErrorKind::UnexpectedToken {
                found: tok.describe(),
                expected: Vec::new(),
            },
        },
        ParseError::InvalidToken { location } => SyntaxError {
            span: Span::new(location, location + 1),
            kind: SyntaxErrorKind::UnexpectedToken {
                found: "invalid token".into(),
                expected: Vec::new(),
            },
        },
        ParseError::User { error } => match error {},
    })
}

/// Turn LALRPOP's terminal names into what a user would call them, and keep
/// the list short: where any word is allowed, say so instead of listing every
/// keyword.
fn readable(expected: &[String]) -> Vec<String> {
    let any_word = expected.iter().any(|e| e == "LabelWord");
    let mut out: Vec<String> = Vec::new();
    for e in expected {
        let text = match e.as_str() {
            "Ident" => "a name".to_string(),
            "LabelWord" => "a label".to_string(),
            "Number" => "a number".to_string(),
            "Hex" => "a hex number".to_string(),
            "Ipv4" => "an IPv4 address".to_string(),
            "Ipv6" => "an IPv6 address".to_string(),
            "Str" => "a string".to_string(),
            "Unterminated" | "BadChar" | "Comment" | "DigitWord" => continue,
            quoted => {
                let kw = quoted.trim_matches('"');
                if any_word && lexer::is_keyword(kw) {
                    continue;
                }
                format!("`{kw}`")
            }
        };
        if !out.contains(&text) {
            out.push(text);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_sketch_of_the_brief() {
        let src = r#"
cidr  corp     = 10.0.0.0/8, fd00::/8 except 10.96.0.0/12
ports web      = 80, 443, 8000-8099
select frontend = app=web, tier=frontend
select db       = app=postgres in namespace shop

policy frontend on frontend {
  ingress {
    allow from world tcp 443
    allow from corp tcp web http { GET "/healthz"; GET "/api/v1/*"; POST "/orders" host "shop.example.com" }
    deny  from 192.0.2.0/24
  }
  egress {
    allow to db tcp 5432
    allow to kube-dns udp 53 dns { "*.example.com", "example.org" }
    allow to world tcp 443 snat
  }
}

chain edge on host ingress {   # ordered: first match wins
  drop   from 198.51.100.0/24
  accept from corp tcp 22
  drop
}
"#;
        let (file, errors) = parse(src);
        assert_eq!(errors, vec![]);
        assert_eq!(file.items.len(), 6);
        assert_eq!(file.comments.len(), 1);
    }

    #[test]
    fn recovers_and_reports_several_errors() {
        let src = "policy p on x {\n ingress {\n allow from\n allow from world tcp 80 80\n }\n}\ncidr = 1.2.3.4\nports p = 1\n";
        let (file, errors) = parse(src);
        assert!(errors.len() >= 2, "{errors:?}");
        assert!(
            matches!(file.items.last(), Some(ast::Item::Ports(_))),
            "{:?}",
            file.items
        );
    }
}
