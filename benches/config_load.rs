//! How long a reload of a large route set takes to parse and validate: 10 000 routes and 100
//! upstreams across 10 in-memory files (no disk I/O), through `load_routes_from_sources`.
//!
//! A reload runs this whole pipeline before the atomic swap, so it bounds how quickly a file
//! change takes effect. The mix of matchers (prefixes, exact paths, a regex every 50th route,
//! hosts, methods, headers, retries) is meant to resemble a big real deployment.

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use switchyard::config::load_routes_from_sources;

/// Files in the set; routes and upstreams are spread evenly over them.
const FILES: usize = 10;
/// Routes in total.
const ROUTES: usize = 10_000;
/// Upstreams in total.
const UPSTREAMS: usize = 100;

/// The in-memory route files: `(path, contents)`, in load order.
fn sources() -> Vec<(PathBuf, String)> {
    let mut files: Vec<String> = vec![String::new(); FILES];
    for u in 0..UPSTREAMS {
        let f = &mut files[u % FILES];
        writeln!(
            f,
            "[[upstream]]\nname = \"svc-{u}\"\nendpoints = [\"10.0.{}.{}:8080\", {{ address = \
             \"10.1.{}.{}:8080\", weight = 2 }}]\nbalance = \"p2c_ewma\"\nconnect_timeout = \"500ms\"\n\
             [upstream.health]\npath = \"/healthz\"\ninterval = \"5s\"\n[upstream.outlier]\n\
             consecutive_failures = 5\n",
            u / 256,
            u % 256,
            u / 256,
            u % 256
        )
        .unwrap();
    }
    for r in 0..ROUTES {
        let f = &mut files[r % FILES];
        let upstream = r % UPSTREAMS;
        writeln!(
            f,
            "[[route]]\nname = \"route-{r}\"\nhosts = [\"api{}.example.com\", \"*.tenant{}.example.com\"]",
            r % 37,
            r % 11
        )
        .unwrap();
        match r % 50 {
            0 => writeln!(f, "path_regex = '/v{r}/items/[0-9]+/(detail|summary)'").unwrap(),
            1..=9 => writeln!(f, "path = \"/exact/{r}\"").unwrap(),
            _ => writeln!(f, "path_prefix = \"/api/{r}/\"\nstrip_prefix = true").unwrap(),
        }
        if r % 3 == 0 {
            writeln!(f, "methods = [\"GET\", \"POST\"]\nheaders = {{ \"x-tenant\" = \"t{}\" }}", r % 7)
                .unwrap();
        }
        if r % 10 == 0 {
            writeln!(
                f,
                "split = [{{ upstream = \"svc-{upstream}\", weight = 90 }}, {{ upstream = \"svc-{}\", weight = 10 }}]",
                (upstream + 1) % UPSTREAMS
            )
            .unwrap();
        } else {
            writeln!(f, "upstream = \"svc-{upstream}\"").unwrap();
        }
        writeln!(
            f,
            "timeout = \"15s\"\nrequest_headers = {{ set = {{ \"x-route\" = \"{r}\" }} }}\n\
             [route.retry]\nattempts = 2\non = [\"connect-failure\", \"5xx\"]\n"
        )
        .unwrap();
    }
    files
        .into_iter()
        .enumerate()
        .map(|(i, text)| (PathBuf::from(format!("routes/{i:02}.toml")), text))
        .collect()
}

fn config_load(c: &mut Criterion) {
    let files = sources();
    // Fail loudly if the generated set is not valid: timing errors would measure nothing useful.
    let set = load_routes_from_sources(files.clone()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((set.routes.len(), set.upstreams.len()), (ROUTES, UPSTREAMS));

    let mut group = c.benchmark_group("config_load");
    // Small and short: the point is the order of magnitude (well under a second), in seconds.
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    group.bench_function("10k_routes_100_upstreams_10_files", |b| {
        b.iter_batched(
            || files.clone(),
            |files| black_box(load_routes_from_sources(files)),
            criterion::BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, config_load);
criterion_main!(benches);
