//! Router benchmarks: lookup cost at 10, 1 000 and 10 000 routes (it should stay nearly flat,
//! since every step is a hash probe or a trie step, never a scan of the table), and the cost of
//! compiling a 10 000-route table (paid on every reload).
//!
//! Run with `cargo bench --bench router`; sample sizes are small so the whole run takes seconds.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http::{HeaderMap, Method};
use regex::Regex;

use switchyard::config::{Action, HeaderEdits, HostMatch, Origin, PathMatch, RetryPolicy, RouteConfig};
use switchyard::internals::Router;

/// Table sizes for the lookup benches.
const SIZES: [usize; 3] = [10, 1_000, 10_000];

fn route(i: usize, hosts: Vec<HostMatch>, path: PathMatch) -> RouteConfig {
    RouteConfig {
        name: format!("r{i}"),
        origin: Origin { file: "routes/bench.toml".into(), line: i + 1 },
        hosts,
        path,
        methods: if i % 3 == 0 { vec![Method::GET, Method::POST] } else { Vec::new() },
        headers: Vec::new(),
        query: Vec::new(),
        action: Action::Upstream("u".into()),
        strip_prefix: false,
        rewrite_prefix: None,
        host_rewrite: None,
        request_headers: HeaderEdits::default(),
        response_headers: HeaderEdits::default(),
        timeout: None,
        max_request_body_bytes: None,
        retry: RetryPolicy::default(),
        rate_limit: None,
    }
}

fn exact_hosts(n: usize) -> usize {
    (n / 20).max(1)
}

fn wildcard_zones(n: usize) -> usize {
    (n / 100).max(1)
}

/// `n` routes: 60 % exact host + deep prefix, 20 % wildcard host + prefix, 10 % any host +
/// prefix, 10 % exact host + exact path; then a few any-host regex routes (1 per 500, 1..=20).
fn routes(n: usize) -> Vec<RouteConfig> {
    let (hosts, zones) = (exact_hosts(n), wildcard_zones(n));
    let mut out: Vec<RouteConfig> = (0..n)
        .map(|i| {
            let exact = || vec![HostMatch::Exact(format!("svc{}.example.com", i % hosts))];
            match i % 10 {
                0..=5 => route(i, exact(), PathMatch::Prefix(format!("/api/v{}/team{i}/users", i % 5))),
                6 | 7 => route(
                    i,
                    vec![HostMatch::Wildcard(format!("zone{}.example.com", i % zones))],
                    PathMatch::Prefix(format!("/app/{i}")),
                ),
                8 => route(i, Vec::new(), PathMatch::Prefix(format!("/static/{i}"))),
                _ => route(i, exact(), PathMatch::Exact(format!("/health/{i}"))),
            }
        })
        .collect();
    let regexes = (n / 500).clamp(1, 20);
    for j in 0..regexes {
        let re = Regex::new(&format!("^(?:/files/[0-9]+/r{j})$")).unwrap();
        out.push(route(n + j, Vec::new(), PathMatch::Regex(re)));
    }
    out
}

/// The route index near the middle of the table with `i % 10 == rem`.
fn middle(n: usize, rem: usize) -> usize {
    let i = n / 2 / 10 * 10 + rem;
    if i < n {
        i
    } else {
        rem
    }
}

struct Case {
    name: &'static str,
    host: String,
    path: String,
    want: Option<usize>,
}

fn cases(n: usize) -> Vec<Case> {
    let deep = middle(n, 3);
    let wild = middle(n, 6);
    vec![
        Case {
            name: "deep_prefix",
            host: format!("svc{}.example.com:443", deep % exact_hosts(n)),
            path: format!("/api/v{}/team{deep}/users/42/orders/7", deep % 5),
            want: Some(deep),
        },
        Case {
            name: "wildcard",
            host: format!("a.b.zone{}.example.com", wild % wildcard_zones(n)),
            path: format!("/app/{wild}/x"),
            want: Some(wild),
        },
        Case { name: "regex", host: "svc0.example.com".into(), path: "/files/123/r0".into(), want: Some(n) },
        Case { name: "miss", host: "svc0.example.com".into(), path: "/nothing/here".into(), want: None },
    ]
}

fn lookup(c: &mut Criterion) {
    let headers = HeaderMap::new();
    let mut group = c.benchmark_group("lookup");
    group
        .sample_size(30)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(800));
    for n in SIZES {
        let router = Router::new(&routes(n));
        for case in cases(n) {
            let run = || {
                router.lookup(
                    black_box(&Method::GET),
                    black_box(Some(case.host.as_str())),
                    black_box(case.path.as_str()),
                    black_box(None),
                    black_box(&headers),
                )
            };
            assert_eq!(run(), case.want, "{} at {n} routes", case.name);
            group.bench_with_input(BenchmarkId::new(case.name, n), &n, |b, _| b.iter(run));
        }
    }
    group.finish();
}

fn compile(c: &mut Criterion) {
    let table = routes(10_000);
    let mut group = c.benchmark_group("compile");
    group.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
    group.bench_function("10000", |b| b.iter(|| Router::new(black_box(&table))));
    group.finish();
}

criterion_group!(benches, lookup, compile);
criterion_main!(benches);
