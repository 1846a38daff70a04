//! Front-end throughput: parse + resolve + check of generated policies of
//! 10,000 and 100,000 rules, beside a parse-only baseline.
//!
//!     cargo bench -p cilc --bench check
//!
//! Criterion prints the time per check and the throughput in rules/s
//! ("elem/s"). Target: 100,000 rules checked in under 1 s.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("check");
    group.sample_size(10);
    for rules in [10_000usize, 100_000] {
        let src = cilc::gen::policy(1, rules);
        group.throughput(Throughput::Elements(rules as u64));
        group.bench_with_input(BenchmarkId::new("parse-only", rules), &src, |b, src| {
            b.iter(|| cilc_grammar::parse(src));
        });
        group.bench_with_input(BenchmarkId::new("check", rules), &src, |b, src| {
            b.iter(|| {
                let (_, _, diags) = cilc::check_source(src);
                assert!(diags.iter().all(|d| !d.is_error()));
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
