//! What the compiled-in roots cost (`shared::tls`): the rustls configuration each reqwest
//! client builds at start-up (every root parsed into a trust anchor), and the AWS SDK's HTTP
//! client (the roots as one PEM bundle; the SDK parses it on its first request).
//!
//! Run: `cargo bench -p shared --bench tls -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use shared::tls::TrustRoots;

fn roots(c: &mut Criterion) {
    let roots = TrustRoots::bundled();
    let mut group = c.benchmark_group("tls_roots");
    group.bench_function("rustls_config", |b| {
        b.iter(|| black_box(roots.rustls_config()))
    });
    group.bench_function("aws_http_client", |b| {
        b.iter(|| black_box(roots.aws_http_client()))
    });
    group.finish();
}

criterion_group!(benches, roots);
criterion_main!(benches);
