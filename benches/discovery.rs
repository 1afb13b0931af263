//! The cost of applying a large discovery update: a source publishes 10 000 endpoints and the
//! diff adapter installs them with `Upstream::set_endpoints` (which keeps the state of
//! endpoints that stay and swaps a new immutable set). Three shapes: a full replacement, one
//! endpoint changed out of 10 000 (the common case), and a republished equal set (dropped by
//! the publisher before any upstream work).

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use switchyard::config::{DiscoveryConfig, DnsRecord, StaticEndpoint, UpstreamConfig};
use switchyard::internals::Metrics;
use switchyard::internals::Upstream;
use switchyard::internals::{Adapter, Publisher, Target};

const N: usize = 10_000;

fn upstream() -> Arc<Upstream> {
    Upstream::new(UpstreamConfig::new(
        "bench",
        DiscoveryConfig::Dns {
            name: "bench.test".into(),
            port: 80,
            record: DnsRecord::A,
            refresh: Duration::from_secs(30),
            resolver: None,
        },
    ))
    .unwrap()
}

fn set(offset: usize) -> Vec<StaticEndpoint> {
    (0..N)
        .map(|i| {
            let i = i + offset;
            StaticEndpoint {
                address: format!("10.{}.{}.{}:8080", i >> 16 & 255, i >> 8 & 255, i & 255),
                weight: 1,
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let _guard = rt.enter();
    let metrics = Arc::new(Metrics::new());
    let mut g = c.benchmark_group("discovery_apply_10k");
    g.sample_size(30);

    // Publish + diff + set_endpoints, alternating between two disjoint sets.
    g.bench_function("replace_all", |b| {
        let up = upstream();
        let (p, rx) = Publisher::new("bench");
        let mut a = Adapter::new(&up.name, "dns", Arc::clone(&metrics));
        let (s0, s1) = (set(0), set(N));
        let mut flip = false;
        b.iter_batched(
            || {
                flip = !flip;
                if flip {
                    s1.clone()
                } else {
                    s0.clone()
                }
            },
            |s| {
                p.reset(s);
                a.apply(&*up as &dyn Target, &rx.borrow());
            },
            BatchSize::LargeInput,
        )
    });

    // One endpoint replaced out of 10 000: the other 9 999 keep their Endpoint objects.
    g.bench_function("change_one", |b| {
        let up = upstream();
        let (p, rx) = Publisher::new("bench");
        let mut a = Adapter::new(&up.name, "dns", Arc::clone(&metrics));
        p.reset(set(0));
        a.apply(&*up as &dyn Target, &rx.borrow());
        let mut k = 0usize;
        b.iter_batched(
            || {
                k += 1;
                let mut s = set(0);
                s[k % N].address = format!("192.168.{}.{}:8080", (k >> 8) & 255, k & 255);
                s
            },
            |s| {
                p.reset(s);
                a.apply(&*up as &dyn Target, &rx.borrow());
            },
            BatchSize::LargeInput,
        )
    });

    // The same set again (a DNS refresh or a Consul wake-up without change).
    g.bench_function("unchanged", |b| {
        let up = upstream();
        let (p, rx) = Publisher::new("bench");
        let mut a = Adapter::new(&up.name, "dns", Arc::clone(&metrics));
        p.reset(set(0));
        a.apply(&*up as &dyn Target, &rx.borrow());
        b.iter_batched(
            || set(0),
            |s| {
                p.reset(s);
                a.apply(&*up as &dyn Target, &rx.borrow());
            },
            BatchSize::LargeInput,
        )
    });

    // Discovery's own share: publish (sort, dedup, compare) + diff, into a target that does
    // nothing, so the upstream's schedule building is left out.
    g.bench_function("publish_and_diff_only", |b| {
        let (p, rx) = Publisher::new("bench");
        let mut a = Adapter::new(&Arc::new("bench".to_owned()), "dns", Arc::clone(&metrics));
        let (s0, s1) = (set(0), set(N));
        let mut flip = false;
        b.iter_batched(
            || {
                flip = !flip;
                if flip {
                    s1.clone()
                } else {
                    s0.clone()
                }
            },
            |s| {
                p.reset(s);
                a.apply(&Null, &rx.borrow());
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

/// A target that accepts everything and keeps nothing.
struct Null;

impl Target for Null {
    fn apply_endpoints(&self, _set: &[StaticEndpoint]) -> Result<(), String> {
        Ok(())
    }
    fn apply_error(&self, _error: String) {}
}

criterion_group!(benches, bench);
criterion_main!(benches);
