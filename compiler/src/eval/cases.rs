//! Text-driven semantic cases (`tests/semantics/*.cpltest`): a policy and
//! packet lines with the expected outcome, so that the reference evaluator,
//! the decision diagram and the kernel programs all run the same cases.
//!
//! ```text
//! # S16: deny beats allow.
//! policy p on { app=web } {
//!   ingress {
//!     allow from world tcp 80
//!     deny from 192.0.2.0/24
//!   }
//! }
//! ---
//! ingress local app=web 192.0.2.7 -> 10.0.0.5 tcp 1234 80 => drop p/ingress/2 matched-deny
//! ```
//!
//! Before `---`: the policy (lines starting with `# S<n>` name the rules of
//! `docs/semantics.md` that the file tests). After it: one case per line,
//! `PACKET => VERDICT RULE REASON` where RULE is a rule name or `-`; blank
//! lines and `#` comments are skipped.

use super::packet::parse_packet;
use super::{Decision, Packet};
use crate::ir::Validated;

#[derive(Debug, Clone)]
pub struct Case {
    /// 1-based line in the file.
    pub line: usize,
    pub packet: Packet,
    pub verdict: String,
    pub rule: Option<String>,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct CaseFile {
    pub policy: String,
    /// `S<n>` identifiers named in the policy part's comments.
    pub rules_tested: Vec<String>,
    pub cases: Vec<Case>,
}

pub fn parse_case_file(text: &str) -> Result<CaseFile, String> {
    let Some((policy, rest)) = text.split_once("\n---\n") else {
        return Err("missing the `---` line between the policy and the cases".into());
    };
    let rules_tested = policy
        .lines()
        .filter(|l| l.trim_start().starts_with('#'))
        .flat_map(|l| l.split(|c: char| !c.is_ascii_alphanumeric()))
        .filter(|w| w.len() > 1 && w.starts_with('S') && w[1..].bytes().all(|b| b.is_ascii_digit()))
        .map(str::to_string)
        .collect();
    let first = policy.lines().count() + 2;
    let mut cases = Vec::new();
    for (i, l) in rest.lines().enumerate() {
        let l = l.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let line = first + i;
        let (pkt, want) = l
            .split_once("=>")
            .ok_or_else(|| format!("line {line}: missing `=>`"))?;
        let packet = parse_packet(pkt).map_err(|e| format!("line {line}: {e}"))?;
        let w: Vec<&str> = want.split_whitespace().collect();
        let [verdict, rule, reason] = w[..] else {
            return Err(format!("line {line}: expected `=> VERDICT RULE REASON`"));
        };
        cases.push(Case {
            line,
            packet,
            verdict: verdict.to_string(),
            rule: (rule != "-").then(|| rule.to_string()),
            reason: reason.to_string(),
        });
    }
    Ok(CaseFile {
        policy: policy.to_string(),
        rules_tested,
        cases,
    })
}

/// The outcome of a decision in the words of a case line.
pub fn describe(ir: &Validated, d: &Decision) -> (String, Option<String>, String) {
    let verdict = match d.verdict {
        super::Verdict::Allow => "allow",
        super::Verdict::Drop => "drop",
    };
    let rule = d.rule.map(|id| ir.rules[id as usize].name.clone());
    (verdict.to_string(), rule, d.reason.as_str().to_string())
}

/// Check every case of a file with `decide`; returns the failures.
pub fn run(file: &CaseFile, ir: &Validated, decide: impl Fn(&Packet) -> Decision) -> Vec<String> {
    let mut failures = Vec::new();
    for c in &file.cases {
        let got = describe(ir, &decide(&c.packet));
        let want = (c.verdict.clone(), c.rule.clone(), c.reason.clone());
        if got != want {
            failures.push(format!(
                "line {}: {}\n  expected {} {} {}\n  got      {} {} {}",
                c.line,
                c.packet,
                want.0,
                want.1.as_deref().unwrap_or("-"),
                want.2,
                got.0,
                got.1.as_deref().unwrap_or("-"),
                got.2
            ));
        }
    }
    failures
}
