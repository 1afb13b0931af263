//! Load balancing end to end and through the public picker API: exact round-robin order,
//! weighted spread of every picker (fixed seeds), steering away from a slow endpoint,
//! consistent hashing (stability and ~1/N remapping), and passive outlier ejection (growing
//! ejections, `max_ejection_percent`, the single half-open trial).

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::{Request, Response, StatusCode};
use support::*;
use switchyard::config::{Balance, DiscoveryConfig, Outlier, StaticEndpoint, UpstreamConfig};
use switchyard::internals::Health;
use switchyard::internals::{Endpoint, EndpointSet, Phase, Upstream};

// === helpers ===

/// What a controlled upstream does; the test flips it.
#[derive(Debug, Default)]
struct Ctl {
    name: String,
    /// Answer traffic with 500.
    fail: AtomicBool,
    /// Delay before answering traffic.
    delay_ms: AtomicU64,
    /// Requests other than health probes.
    traffic: AtomicUsize,
}

async fn controlled(name: &str) -> (FakeUpstream, Arc<Ctl>) {
    let ctl = Arc::new(Ctl { name: name.to_owned(), ..Default::default() });
    let c = Arc::clone(&ctl);
    let up = upstream(move |_req: Request<hyper::body::Incoming>| {
        let c = Arc::clone(&c);
        async move {
            c.traffic.fetch_add(1, Ordering::SeqCst);
            let d = c.delay_ms.load(Ordering::SeqCst);
            if d > 0 {
                tokio::time::sleep(Duration::from_millis(d)).await;
            }
            let mut r = Response::new(full(c.name.clone()));
            if c.fail.load(Ordering::SeqCst) {
                *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            }
            r
        }
    })
    .await;
    (up, ctl)
}

fn ejected_for(v: &serde_json::Value) -> Option<Duration> {
    let t = humantime::parse_rfc3339(v["ejected_until"].as_str()?).unwrap();
    Some(t.duration_since(SystemTime::now()).unwrap_or_default())
}

fn set_of(balance: Balance, weights: &[u32]) -> EndpointSet {
    let eps = weights
        .iter()
        .enumerate()
        .map(|(i, w)| {
            Endpoint::new(&format!("10.0.{}.{}:80", i / 250, i % 250), *w, Health::Healthy).unwrap()
        })
        .collect();
    EndpointSet::new(balance, eps, 0)
}

fn spread(balance: Balance, weights: &[u32], picks: usize, seed: u64) -> Vec<f64> {
    let set = set_of(balance, weights);
    let index: HashMap<usize, usize> =
        set.endpoints.iter().enumerate().map(|(i, e)| (Arc::as_ptr(e) as usize, i)).collect();
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut keys = fastrand::Rng::with_seed(seed ^ 0xdead_beef);
    let cursor = AtomicUsize::new(0);
    let mut counts = vec![0usize; weights.len()];
    for _ in 0..picks {
        let ep = set.pick(Some(keys.u64(..)), &[], &cursor, &mut rng).unwrap();
        counts[index[&(Arc::as_ptr(ep) as usize)]] += 1;
    }
    counts.iter().map(|&c| c as f64 / picks as f64).collect()
}

// === round robin, end to end ===

async fn names_in_order(weights: &[u32], n: usize) -> Vec<String> {
    let ups = [echo("a").await, echo("b").await, echo("c").await];
    let eps: Vec<String> = ups
        .iter()
        .zip(weights)
        .map(|(u, w)| format!("{{ address = \"{}\", weight = {w} }}", u.addr))
        .collect();
    let gw = gateway(&format!(
        "[[upstream]]\nname = \"u\"\nendpoints = [{}]\n[[route]]\nname = \"r\"\nupstream = \"u\"\n",
        eps.join(", ")
    ))
    .await;
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(get(&gw.url("/")).await.json()["name"].as_str().unwrap().to_owned());
    }
    out
}

#[tokio::test]
async fn round_robin_equal_weights_exact_order_end_to_end() {
    assert_eq!(names_in_order(&[1, 1, 1], 6).await, ["a", "b", "c", "a", "b", "c"]);
}

#[tokio::test]
async fn round_robin_smooth_5_1_1_sequence_end_to_end() {
    // NGINX's documented smooth sequence for 5:1:1.
    assert_eq!(
        names_in_order(&[5, 1, 1], 14).await,
        ["a", "a", "b", "a", "c", "a", "a", "a", "a", "b", "a", "c", "a", "a"]
    );
}

// === weighted spread (public picker API, fixed seeds) ===

fn assert_spread(balance: Balance, tolerance: f64) {
    let weights = [1, 2, 3, 4];
    let shares = spread(balance, &weights, 100_000, 42);
    for (i, w) in weights.iter().enumerate() {
        let want = f64::from(*w) / 10.0;
        assert!(
            (shares[i] - want).abs() <= want * tolerance,
            "{balance:?}: endpoint {i} got {:.3}, want {want:.3} ± {:.0}%",
            shares[i],
            tolerance * 100.0
        );
    }
}

#[test]
fn random_spread_follows_weights() {
    assert_spread(Balance::Random, 0.03);
}

#[test]
fn least_request_spread_follows_weights_when_idle() {
    assert_spread(Balance::LeastRequest, 0.03);
}

#[test]
fn p2c_ewma_spread_follows_weights_when_idle() {
    assert_spread(Balance::P2cEwma, 0.03);
}

#[test]
fn ring_hash_spread_follows_weights() {
    // 160 virtual nodes per weight unit: shares within a quarter of the ideal.
    assert_spread(Balance::RingHash, 0.25);
}

#[test]
fn maglev_spread_follows_weights() {
    assert_spread(Balance::Maglev, 0.05);
}

#[test]
fn least_request_prefers_fewer_in_flight() {
    let set = set_of(Balance::LeastRequest, &[1, 1, 1]);
    set.endpoints[0].in_flight.store(10, Ordering::Relaxed);
    set.endpoints[1].in_flight.store(10, Ordering::Relaxed);
    let (cursor, mut rng) = (AtomicUsize::new(0), fastrand::Rng::with_seed(1));
    let hits = (0..1000)
        .filter(|_| Arc::ptr_eq(set.pick(None, &[], &cursor, &mut rng).unwrap(), &set.endpoints[2]))
        .count();
    // The idle endpoint wins every pair it is in: 2 of 3 pairs.
    assert!(hits > 600, "{hits}");
}

#[test]
fn p2c_ewma_prefers_the_faster_endpoint() {
    let set = set_of(Balance::P2cEwma, &[1, 1, 1]);
    set.endpoints[0].state.observe_rtt(Duration::from_millis(200));
    set.endpoints[1].state.observe_rtt(Duration::from_millis(1));
    set.endpoints[2].state.observe_rtt(Duration::from_millis(1));
    let (cursor, mut rng) = (AtomicUsize::new(0), fastrand::Rng::with_seed(1));
    let slow = (0..1000)
        .filter(|_| Arc::ptr_eq(set.pick(None, &[], &cursor, &mut rng).unwrap(), &set.endpoints[0]))
        .count();
    assert_eq!(slow, 0);
}

// === consistent hashing ===

fn owners(set: &EndpointSet, keys: &[u64]) -> Vec<String> {
    let (cursor, mut rng) = (AtomicUsize::new(0), fastrand::Rng::with_seed(3));
    keys.iter().map(|&k| set.pick(Some(k), &[], &cursor, &mut rng).unwrap().address.to_string()).collect()
}

fn assert_consistent(balance: Balance) {
    let n = 10;
    let keys: Vec<u64> = {
        let mut rng = fastrand::Rng::with_seed(99);
        (0..10_000).map(|_| rng.u64(..)).collect()
    };
    let all = set_of(balance, &vec![1; n]);
    let before = owners(&all, &keys);
    // Same key, same endpoint (also from a set rebuilt from scratch).
    assert_eq!(before, owners(&set_of(balance, &vec![1; n]), &keys));
    // Remove the fourth endpoint.
    let fewer: Vec<Arc<Endpoint>> =
        all.endpoints.iter().enumerate().filter(|(i, _)| *i != 3).map(|(_, e)| Arc::clone(e)).collect();
    let removed = all.endpoints[3].address.to_string();
    let after = owners(&EndpointSet::new(balance, fewer, 0), &keys);
    let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
    let bound = (1.0 / n as f64 + 0.05) * keys.len() as f64;
    assert!((moved as f64) <= bound, "{balance:?}: {moved} of 10000 keys moved (bound {bound})");
    // Every key of the removed endpoint moved, of course.
    assert!(before.iter().zip(&after).all(|(b, a)| b != &removed || a != &removed));
}

#[test]
fn ring_hash_same_key_same_endpoint_and_little_remapping() {
    assert_consistent(Balance::RingHash);
}

#[test]
fn maglev_same_key_same_endpoint_and_little_remapping() {
    assert_consistent(Balance::Maglev);
}

#[tokio::test]
async fn hash_on_header_sticks_and_missing_key_spreads() {
    let ups = [echo("a").await, echo("b").await, echo("c").await];
    for balance in ["ring_hash", "maglev"] {
        let gw = gateway(&format!(
            "[[upstream]]\nname = \"u\"\nendpoints = [\"{}\", \"{}\", \"{}\"]\nbalance = \"{balance}\"\n\
             hash_on = \"header:x-user\"\n[[route]]\nname = \"r\"\nupstream = \"u\"\n",
            ups[0].addr, ups[1].addr, ups[2].addr
        ))
        .await;
        let who = |user: Option<String>| {
            let url = gw.url("/");
            async move {
                let mut b = Request::get(url);
                if let Some(u) = user {
                    b = b.header("x-user", u);
                }
                send(b.body(full("")).unwrap()).await.json()["name"].as_str().unwrap().to_owned()
            }
        };
        for user in 0..20 {
            let first = who(Some(format!("user-{user}"))).await;
            for _ in 0..3 {
                assert_eq!(who(Some(format!("user-{user}"))).await, first, "{balance}");
            }
        }
        // Without the header: weighted random, so more than one endpoint answers.
        let mut seen = std::collections::HashSet::new();
        for _ in 0..60 {
            seen.insert(who(None).await);
        }
        assert!(seen.len() > 1, "{balance}: {seen:?}");
    }
}

// === steering away from a slow endpoint ===

async fn slow_share(balance: &str) -> f64 {
    let (fast1, c1) = controlled("fast1").await;
    let (fast2, c2) = controlled("fast2").await;
    let (slow, cs) = controlled("slow").await;
    cs.delay_ms.store(100, Ordering::SeqCst);
    let gw = gateway(&format!(
        "[[upstream]]\nname = \"u\"\nendpoints = [\"{}\", \"{}\", \"{}\"]\nbalance = \"{balance}\"\n\
         [[route]]\nname = \"r\"\nupstream = \"u\"\n",
        fast1.addr, slow.addr, fast2.addr
    ))
    .await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let url = gw.url("/");
        tasks.push(tokio::spawn(async move {
            let c = client();
            for _ in 0..40 {
                let g = send_with(&c, Request::get(&url).body(full("")).unwrap()).await;
                assert_eq!(g.status, StatusCode::OK);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (a, b, s) = (
        c1.traffic.load(Ordering::SeqCst),
        c2.traffic.load(Ordering::SeqCst),
        cs.traffic.load(Ordering::SeqCst),
    );
    assert_eq!(a + b + s, 320);
    s as f64 / 320.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn least_request_steers_away_from_a_slow_endpoint() {
    let share = slow_share("least_request").await;
    // Round robin would send it a third.
    assert!(share < 0.15, "slow endpoint got {:.1}%", share * 100.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn p2c_ewma_steers_away_from_a_slow_endpoint() {
    let share = slow_share("p2c_ewma").await;
    assert!(share < 0.15, "slow endpoint got {:.1}%", share * 100.0);
}

// === outlier ejection ===

#[tokio::test]
async fn consecutive_5xx_eject_for_growing_durations_and_a_good_trial_closes() {
    let (bad, cb) = controlled("bad").await;
    let (good, _cg) = controlled("good").await;
    cb.fail.store(true, Ordering::SeqCst);
    let gw = gateway(&format!(
        "[[upstream]]\nname = \"u\"\nendpoints = [\"{}\", \"{}\"]\n[upstream.outlier]\n\
         consecutive_failures = 3\nejection_time = \"400ms\"\nmax_ejection_percent = 50\n\
         [[route]]\nname = \"r\"\nupstream = \"u\"\n",
        bad.addr, good.addr
    ))
    .await;
    let bad_addr = bad.addr.to_string();
    // Round robin alternates: 6 requests give `bad` its 3 failures.
    for _ in 0..6 {
        get(&gw.url("/")).await;
    }
    let v = endpoint_view(&gw, "u", &bad_addr).await;
    let first = ejected_for(&v).expect("ejected after 3 consecutive 5xx");
    assert!(first <= Duration::from_millis(400), "{first:?}");
    let m = get(&gw.admin_url("/metrics")).await.text();
    assert!(m.contains("switchyard_upstream_endpoints{upstream=\"u\",state=\"ejected\"} 1"), "{m}");
    // While ejected, nothing goes there.
    let before = cb.traffic.load(Ordering::SeqCst);
    for _ in 0..6 {
        assert_eq!(get(&gw.url("/")).await.text(), "good");
    }
    assert_eq!(cb.traffic.load(Ordering::SeqCst), before);

    // Half-open after the time; the trial fails: ejected again, for twice as long.
    eventually("half-open", Duration::from_secs(10), || async {
        endpoint_view(&gw, "u", &bad_addr).await["ejected_until"].is_null()
    })
    .await;
    let before = cb.traffic.load(Ordering::SeqCst);
    while cb.traffic.load(Ordering::SeqCst) == before {
        get(&gw.url("/")).await;
    }
    let second = ejected_for(&endpoint_view(&gw, "u", &bad_addr).await).expect("a failed trial re-ejects");
    assert!(second > Duration::from_millis(400) && second <= Duration::from_millis(800), "{second:?}");

    // Healthy again: the next trial succeeds and closes; traffic alternates again.
    cb.fail.store(false, Ordering::SeqCst);
    eventually("half-open again", Duration::from_secs(10), || async {
        endpoint_view(&gw, "u", &bad_addr).await["ejected_until"].is_null()
    })
    .await;
    let before = cb.traffic.load(Ordering::SeqCst);
    for _ in 0..10 {
        assert_eq!(get(&gw.url("/")).await.status, StatusCode::OK);
    }
    assert!(cb.traffic.load(Ordering::SeqCst) - before >= 4);
    assert!(endpoint_view(&gw, "u", &bad_addr).await["ejected_until"].is_null());
}

#[tokio::test]
async fn max_ejection_percent_bounds_ejections_but_one_may_always_go() {
    let ups = [controlled("a").await, controlled("b").await, controlled("c").await, controlled("d").await];
    for (_, c) in &ups {
        c.fail.store(true, Ordering::SeqCst);
    }
    let addrs: Vec<String> = ups.iter().map(|(u, _)| format!("\"{}\"", u.addr)).collect();
    // 10 % of 4 is less than one endpoint: still one may be ejected. 50 %: two.
    for (pct, want) in [(10, 1), (50, 2)] {
        let gw = gateway(&format!(
            "[[upstream]]\nname = \"u\"\nendpoints = [{}]\n[upstream.outlier]\nconsecutive_failures = 2\n\
             ejection_time = \"60s\"\nmax_ejection_percent = {pct}\n[[route]]\nname = \"r\"\nupstream = \"u\"\n",
            addrs.join(", ")
        ))
        .await;
        for _ in 0..40 {
            assert_eq!(get(&gw.url("/")).await.status, StatusCode::INTERNAL_SERVER_ERROR);
        }
        let v = get(&gw.admin_url("/upstreams")).await.json();
        let ejected = v["upstreams"][0]["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| !e["ejected_until"].is_null())
            .count();
        assert_eq!(ejected, want, "max_ejection_percent = {pct}");
    }
}

fn outlier_upstream(ejection: Duration) -> Arc<Upstream> {
    let list = ["10.9.0.1:80", "10.9.0.2:80"]
        .iter()
        .map(|a| StaticEndpoint { address: a.to_string(), weight: 1 })
        .collect();
    Upstream::new(UpstreamConfig {
        outlier: Some(Outlier { consecutive_failures: 1, ejection_time: ejection, max_ejection_percent: 50 }),
        ..UpstreamConfig::new("u", DiscoveryConfig::Static(list))
    })
    .unwrap()
}

#[tokio::test]
async fn half_open_lets_exactly_one_trial_through() {
    let up = outlier_upstream(Duration::from_millis(50));
    let a = Arc::clone(&up.endpoints().endpoints[0]);
    up.report(&a, false);
    assert_eq!(a.state.phase(), Phase::Ejected);
    assert_eq!(up.endpoints().active().len(), 1);
    eventually("half-open", Duration::from_secs(10), || async { a.state.phase() == Phase::HalfOpen }).await;
    let set = up.endpoints();
    let to_a = (0..20).filter(|_| Arc::ptr_eq(&up.pick(&set, &[]).unwrap(), &a)).count();
    assert_eq!(to_a, 1, "exactly one trial");
    assert_eq!(a.state.phase(), Phase::Trial);
    // The trial succeeds: closed, traffic flows again.
    up.report(&a, true);
    assert_eq!(a.state.phase(), Phase::Closed);
    let to_a = (0..20).filter(|_| Arc::ptr_eq(&up.pick(&set, &[]).unwrap(), &a)).count();
    assert_eq!(to_a, 10);
}

#[tokio::test]
async fn abandoned_trial_is_offered_again_and_failed_trial_ejects_longer() {
    let up = outlier_upstream(Duration::from_millis(40));
    let a = Arc::clone(&up.endpoints().endpoints[0]);
    up.report(&a, false);
    eventually("half-open", Duration::from_secs(10), || async { a.state.phase() == Phase::HalfOpen }).await;
    let set = up.endpoints();
    while !Arc::ptr_eq(&up.pick(&set, &[]).unwrap(), &a) {}
    up.abandon(&a);
    assert_eq!(a.state.phase(), Phase::HalfOpen);
    while !Arc::ptr_eq(&up.pick(&set, &[]).unwrap(), &a) {}
    let t0 = Instant::now();
    up.report(&a, false);
    assert_eq!(a.state.phase(), Phase::Ejected);
    eventually("half-open again", Duration::from_secs(10), || async { a.state.phase() == Phase::HalfOpen })
        .await;
    // Second ejection: 2 × 40 ms.
    assert!(t0.elapsed() >= Duration::from_millis(80), "{:?}", t0.elapsed());
}

#[tokio::test]
async fn retries_go_to_another_endpoint_with_every_picker() {
    for balance in [
        Balance::RoundRobin,
        Balance::Random,
        Balance::LeastRequest,
        Balance::P2cEwma,
        Balance::RingHash,
        Balance::Maglev,
    ] {
        let set = set_of(balance, &[1, 1, 1]);
        let (cursor, mut rng) = (AtomicUsize::new(0), fastrand::Rng::with_seed(5));
        for k in 0..100u64 {
            let first = set.pick(Some(k), &[], &cursor, &mut rng).unwrap();
            let tried = [Arc::as_ptr(first) as usize];
            let second = set.pick(Some(k), &tried, &cursor, &mut rng).unwrap();
            assert!(!Arc::ptr_eq(first, second), "{balance:?}");
        }
    }
}
