//! Picker benchmarks: the cost of one pick for every algorithm with 3, 100 and 10 000
//! endpoints (it should be tens of nanoseconds and flat: every picker is a precomputed table
//! lookup or two weighted draws), and the time to rebuild the `ring_hash` ring and the `maglev`
//! table for 10 000 endpoints (paid off the request path, on each discovery or health change).
//!
//! Run with `cargo bench --bench pick`; measurement times are short so the whole run takes
//! well under a minute.

use std::hint::black_box;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

use switchyard::config::Balance;
use switchyard::internals::Health;
use switchyard::internals::{Endpoint, EndpointSet};

const SIZES: [usize; 3] = [3, 100, 10_000];

const ALL: [Balance; 6] = [
    Balance::RoundRobin,
    Balance::LeastRequest,
    Balance::P2cEwma,
    Balance::Random,
    Balance::RingHash,
    Balance::Maglev,
];

fn endpoints(n: usize) -> Vec<Arc<Endpoint>> {
    (0..n)
        .map(|i| {
            let addr = format!("10.{}.{}.{}:8080", i / 65_536, (i / 256) % 256, i % 256);
            // Mixed weights, as real fleets have.
            Endpoint::new(&addr, 1 + (i % 3) as u32, Health::Healthy).unwrap()
        })
        .collect()
}

fn pick(c: &mut Criterion) {
    let mut g = c.benchmark_group("pick");
    g.warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_millis(700));
    for n in SIZES {
        let eps = endpoints(n);
        for balance in ALL {
            let set = EndpointSet::new(balance, eps.clone(), 0);
            let cursor = AtomicUsize::new(0);
            let mut rng = fastrand::Rng::with_seed(7);
            let mut key: u64 = 0;
            g.bench_with_input(BenchmarkId::new(balance.as_str(), n), &n, |b, _| {
                b.iter(|| {
                    key = key.wrapping_add(0x9e37_79b9_7f4a_7c15);
                    black_box(set.pick(Some(key), &[], &cursor, &mut rng).map(|e| e.weight))
                })
            });
        }
    }
    g.finish();
}

fn rebuild(c: &mut Criterion) {
    let mut g = c.benchmark_group("rebuild_10000");
    g.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
    let eps = endpoints(10_000);
    for balance in [Balance::RingHash, Balance::Maglev, Balance::RoundRobin, Balance::Random] {
        g.bench_function(balance.as_str(), |b| {
            b.iter(|| black_box(EndpointSet::new(balance, eps.clone(), 0)))
        });
    }
    g.finish();
}

criterion_group!(benches, pick, rebuild);
criterion_main!(benches);
