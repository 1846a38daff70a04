// TEMPORARY: delete before finishing.
use cilc_grammar::parse;

fn line_col(src: &str, off: usize) -> (usize, usize) {
    let before = &src[..off.min(src.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    (line, col)
}

fn check(name: &str, src: &str) -> usize {
    let (_f, errs) = parse(src);
    for e in &errs {
        let (l, c) = line_col(src, e.span.start as usize);
        println!("{name}:{l}:{c}: {:?} `{}`", e.kind, &src[e.span.range()]);
    }
    errs.len()
}

#[test]
fn probe() {
    if let Ok(p) = std::env::var("PROBE") {
        let src = std::fs::read_to_string(&p).unwrap();
        let (f, errs) = parse(&src);
        println!("{:#?}", f.items);
        for e in &errs {
            let (l, c) = line_col(&src, e.span.start as usize);
            println!("{p}:{l}:{c}: {:?} `{}`", e.kind, &src[e.span.range()]);
        }
    }
}

#[test]
fn examples_and_docs_parse() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let mut bad = 0;
    let mut n = 0;
    for ent in std::fs::read_dir(format!("{root}/examples")).unwrap() {
        let p = ent.unwrap().path();
        if p.extension().map(|e| e == "cpl").unwrap_or(false) {
            n += 1;
            bad += check(
                &p.display().to_string(),
                &std::fs::read_to_string(&p).unwrap(),
            );
        }
    }
    if let Ok(md) = std::fs::read_to_string(format!("{root}/docs/language.md")) {
        let mut in_block = false;
        let mut block = String::new();
        let mut start = 0;
        for (i, line) in md.lines().enumerate() {
            if !in_block && line.trim_end() == "```cpl" {
                in_block = true;
                block.clear();
                start = i + 2;
            } else if in_block && line.trim_end() == "```" {
                in_block = false;
                n += 1;
                bad += check(&format!("language.md(block@{start})"), &block);
            } else if in_block {
                block.push_str(line);
                block.push('\n');
            }
        }
    }
    println!("{n} sources checked");
    assert_eq!(bad, 0);
}
