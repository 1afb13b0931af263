//! Consul discovery end to end: the real gateway against the Consul API double
//! (tests/support/consul_double.rs), or a real `consul agent -dev` when
//! `SWITCHYARD_CONSUL_ADDR` is set (steps that need the double's controls are then skipped,
//! with a note on stderr). The HTTPS tests always need the double: it serves the API over TLS
//! with a certificate from a test CA made at run time.

mod support;

use std::time::Duration;

use base64::Engine as _;
use http::{Method, Request};
use serde_json::{json, Value};
use support::certs::TestCa;
use support::consul_double::{Consul, Reg};
use support::consul_kv::TXN_MAX_OPS;
use support::disc::*;
use support::*;

static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A service name unique to this run (a real agent is shared between tests and runs).
fn svc(test: &str) -> String {
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    format!("sy-{test}-{}-{n}", std::process::id())
}

fn routes(consul: &Consul, service: &str, extra: &str) -> String {
    routes_at(&consul.url, service, extra)
}

/// One upstream `svc` discovering `service` from the agent at `address`, and a catch-all route.
fn routes_at(address: &str, service: &str, extra: &str) -> String {
    format!(
        r#"
[[upstream]]
name = "svc"
discovery = {{ type = "consul", address = "{address}", service = "{service}", wait = "30s"{extra} }}

[[route]]
name = "svc"
upstream = "svc"
"#
    )
}

/// `tls_ca = "<path>"` for a discovery table, the CA's PEM written into `dir`.
fn tls_ca(dir: &tempfile::TempDir, ca: &TestCa) -> String {
    let path = dir.path().join("consul-ca.pem");
    std::fs::write(&path, &ca.pem).unwrap();
    format!(r#", tls_ca = "{}""#, path.display())
}

fn port(u: &FakeUpstream) -> u16 {
    u.addr.port()
}

#[tokio::test]
async fn registration_and_deregistration_are_followed_within_a_second() {
    let consul = Consul::start().await;
    let name = svc("follow");
    let (a, b) = (echo("a").await, echo("b").await);
    consul
        .register(Reg { id: &format!("{name}-a"), name: &name, port: port(&a), ..Default::default() })
        .await;
    let gw = gateway(&routes(&consul, &name, "")).await;
    until_served(&gw, "/", &["a"], Duration::from_secs(5)).await;

    consul
        .register(Reg { id: &format!("{name}-b"), name: &name, port: port(&b), ..Default::default() })
        .await;
    until_served(&gw, "/", &["a", "b"], Duration::from_secs(1)).await;
    consul.deregister(&format!("{name}-a")).await;
    until_served(&gw, "/", &["b"], Duration::from_secs(1)).await;
    consul.deregister(&format!("{name}-b")).await;
    until_served(&gw, "/", &["503"], Duration::from_secs(1)).await;
    let v = upstream_view(&gw, "svc").await;
    assert_eq!(v["discovery"]["type"], "consul");
    assert!(v["discovery"]["last_error"].is_null(), "{v}");
    assert!(v["discovery"]["last_update"].is_string(), "{v}");
    let updates =
        metric_value(&gw, "switchyard_discovery_updates_total{upstream=\"svc\",type=\"consul\"}").await;
    assert!(updates >= 4.0, "updates counted: {updates}");
}

#[tokio::test]
async fn no_busy_polling_while_nothing_changes_and_a_server_that_never_blocks_cannot_make_it_spin() {
    let consul = Consul::start().await;
    let Some(double) = consul.double("count requests") else { return };
    let name = svc("quiet");
    let a = echo("a").await;
    consul
        .register(Reg { id: &format!("{name}-a"), name: &name, port: port(&a), ..Default::default() })
        .await;
    let gw = gateway(&routes(&consul, &name, "")).await;
    until_served(&gw, "/", &["a"], Duration::from_secs(5)).await;
    // After its first answer the gateway asks again with the index it was given, and the
    // double, like Consul, holds that query while nothing changes.
    eventually("the gateway's blocking query is held", Duration::from_secs(5), || async {
        double.held() == 1
    })
    .await;
    let before = double.health_requests();
    // Nothing changes for 3 s. With the one query held nothing is in flight, so instead of
    // waiting 3 s the runtime's clock (which every timer of the gateway and of the double
    // runs on) is paused and moved 3 s on: each timer due within them fires, as it would in
    // real time, and anything it sends is counted.
    tokio::time::pause();
    tokio::time::sleep(Duration::from_secs(3)).await;
    tokio::time::resume();
    let quiet = double.health_requests() - before;
    assert_eq!(quiet, 0, "a blocking query is held while nothing changes; {quiet} requests in 3 s");
    assert_eq!(double.held(), 1, "the same query is still held after 3 s");

    // A server that never blocks: the gateway's queries are paced by a token bucket of 2
    // queries per second with a burst of 2 (docs/discovery.md), however fast the answers
    // come. So `n` queries take at least (n - 2) / 2 seconds, and they keep coming.
    const RATE: f64 = 2.0;
    const BURST: f64 = 2.0;
    let n = 5;
    let before = double.health_requests();
    let t0 = tokio::time::Instant::now();
    double.answer_at_once(true);
    eventually("it keeps polling", Duration::from_secs(5), || async {
        double.health_requests() >= before + n
    })
    .await;
    let took = t0.elapsed();
    let floor = Duration::from_secs_f64((n as f64 - BURST) / RATE);
    assert!(took >= floor, "at most {RATE} queries/s after a burst of {BURST}: {n} queries in {took:?}");
    double.answer_at_once(false);
    until_served(&gw, "/", &["a"], Duration::from_secs(1)).await;
}

#[tokio::test]
async fn an_outage_keeps_the_set_and_recovery_resumes_the_watch() {
    let consul = Consul::start().await;
    let Some(double) = consul.double("outage") else { return };
    let name = svc("outage");
    let (a, b) = (echo("a").await, echo("b").await);
    consul
        .register(Reg { id: &format!("{name}-a"), name: &name, port: port(&a), ..Default::default() })
        .await;
    let gw = gateway(&routes(&consul, &name, "")).await;
    until_served(&gw, "/", &["a"], Duration::from_secs(5)).await;

    double.stop().await;
    eventually("last_error shown in /upstreams", Duration::from_secs(5), || async {
        !upstream_view(&gw, "svc").await["discovery"]["last_error"].is_null()
    })
    .await;
    assert_eq!(served(&gw, "/", 10).await, set(&["a"]), "traffic continues to the last set");
    let series = "switchyard_discovery_errors_total{upstream=\"svc\",type=\"consul\"}";
    let errors = metric_value(&gw, series).await;
    assert!(errors >= 1.0, "errors counted: {errors}");
    // The source retries with backoff (1 s, 2 s, ... with jitter); once a retry has failed too,
    // the last set is still served.
    eventually("a retry fails too", Duration::from_secs(5), || async {
        metric_value(&gw, series).await > errors
    })
    .await;
    assert_eq!(served(&gw, "/", 10).await, set(&["a"]), "still the last set after retries");

    double.restart().await;
    consul
        .register(Reg { id: &format!("{name}-b"), name: &name, port: port(&b), ..Default::default() })
        .await;
    // The next retry is at most ~4.8 s away (backoff 1 s, 2 s, 4 s with jitter).
    until_served(&gw, "/", &["a", "b"], Duration::from_secs(8)).await;
    let v = upstream_view(&gw, "svc").await;
    assert!(v["discovery"]["last_error"].is_null(), "recovery clears the error: {v}");
}

#[tokio::test]
async fn an_index_that_goes_backwards_resets_the_watch() {
    let consul = Consul::start().await;
    let Some(double) = consul.double("index reset") else { return };
    let name = svc("reset");
    let (a, b) = (echo("a").await, echo("b").await);
    consul
        .register(Reg { id: &format!("{name}-a"), name: &name, port: port(&a), ..Default::default() })
        .await;
    let gw = gateway(&routes(&consul, &name, "")).await;
    until_served(&gw, "/", &["a"], Duration::from_secs(5)).await;
    // A restored server: the index is far below what the gateway last saw. A client that kept
    // its old index would now block for the whole `wait` (30 s) and miss the change below.
    let before = double.health_requests();
    double.reset_index(2);
    // The held query is answered (with index 2), and the gateway's next blocking query is held.
    eventually("a new blocking query after the reset", Duration::from_secs(5), || async {
        double.health_requests() > before && double.held() == 1
    })
    .await;
    consul
        .register(Reg { id: &format!("{name}-b"), name: &name, port: port(&b), ..Default::default() })
        .await;
    until_served(&gw, "/", &["a", "b"], Duration::from_secs(2)).await;
}

#[tokio::test]
async fn tag_and_passing_filters() {
    let consul = Consul::start().await;
    let name = svc("filters");
    let (a, b, c) = (echo("a").await, echo("b").await, echo("c").await);
    consul
        .register(Reg {
            id: &format!("{name}-a"),
            name: &name,
            port: port(&a),
            tags: &["v1"],
            ..Default::default()
        })
        .await;
    consul
        .register(Reg {
            id: &format!("{name}-b"),
            name: &name,
            port: port(&b),
            tags: &["v2"],
            ..Default::default()
        })
        .await;
    let c_id = format!("{name}-c");
    consul
        .register(Reg {
            id: &c_id,
            name: &name,
            port: port(&c),
            tags: &["v2"],
            ttl_check: true,
            ..Default::default()
        })
        .await;
    let text = format!(
        r#"
[[upstream]]
name = "v2"
discovery = {{ type = "consul", address = "{url}", service = "{name}", tag = "v2", wait = "30s" }}
[[upstream]]
name = "v2-all"
discovery = {{ type = "consul", address = "{url}", service = "{name}", tag = "v2", passing_only = false, wait = "30s" }}
[[upstream]]
name = "any"
discovery = {{ type = "consul", address = "{url}", service = "{name}", datacenter = "dc1", wait = "30s" }}
[[route]]
name = "v2"
path_prefix = "/v2"
upstream = "v2"
[[route]]
name = "v2-all"
path_prefix = "/all"
upstream = "v2-all"
[[route]]
name = "any"
upstream = "any"
"#,
        url = consul.url
    );
    let gw = gateway(&text).await;
    until_served(&gw, "/v2", &["b"], Duration::from_secs(5)).await;
    until_served(&gw, "/all", &["b", "c"], Duration::from_secs(5)).await;
    until_served(&gw, "/", &["a", "b"], Duration::from_secs(5)).await;
    consul.set_passing(&c_id, true).await;
    until_served(&gw, "/v2", &["b", "c"], Duration::from_secs(1)).await;
    until_served(&gw, "/", &["a", "b", "c"], Duration::from_secs(1)).await;
    consul.set_passing(&c_id, false).await;
    until_served(&gw, "/v2", &["b"], Duration::from_secs(1)).await;
}

#[tokio::test]
async fn service_address_beats_node_address_and_weights_come_from_the_service() {
    let consul = Consul::start().await;
    let name = svc("address");
    let on2 = echo_on("127.0.0.2", "service-address").await;
    let on1 = echo("node-address").await;
    consul
        .register(Reg {
            id: &format!("{name}-s"),
            name: &name,
            address: "127.0.0.2",
            port: port(&on2),
            weight: Some(3),
            ..Default::default()
        })
        .await;
    consul
        .register(Reg {
            id: &format!("{name}-n"),
            name: &name,
            address: "",
            port: port(&on1),
            ..Default::default()
        })
        .await;
    let gw = gateway(&routes(&consul, &name, "")).await;
    until_served(&gw, "/", &["node-address", "service-address"], Duration::from_secs(5)).await;
    let v = upstream_view(&gw, "svc").await;
    let mut eps: Vec<(String, u64)> = v["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["address"].as_str().unwrap().to_owned(), e["weight"].as_u64().unwrap()))
        .collect();
    eps.sort();
    assert_eq!(eps, [(format!("127.0.0.1:{}", port(&on1)), 1), (format!("127.0.0.2:{}", port(&on2)), 3)]);
}

#[tokio::test]
async fn the_acl_token_comes_from_token_env() {
    let consul = Consul::start().await;
    let Some(double) = consul.double("ACL token") else { return };
    let var = format!("SWITCHYARD_TEST_CONSUL_TOKEN_{}", std::process::id());
    std::env::set_var(&var, "s3cret");
    let name = svc("token");
    let a = echo("a").await;
    consul
        .register(Reg { id: &format!("{name}-a"), name: &name, port: port(&a), ..Default::default() })
        .await;
    double.require_token("s3cret");
    let text = format!(
        r#"
[[upstream]]
name = "svc"
discovery = {{ type = "consul", address = "{url}", service = "{name}", token_env = "{var}", wait = "30s" }}
[[upstream]]
name = "no-token"
discovery = {{ type = "consul", address = "{url}", service = "{name}", wait = "30s" }}
[[route]]
name = "svc"
upstream = "svc"
[[route]]
name = "no-token"
path_prefix = "/nt"
upstream = "no-token"
"#,
        url = consul.url
    );
    let gw = gateway(&text).await;
    until_served(&gw, "/", &["a"], Duration::from_secs(5)).await;
    let v = upstream_view(&gw, "no-token").await;
    assert!(v["discovery"]["last_error"].as_str().unwrap_or_default().contains("403"), "{v}");
    assert_eq!(served(&gw, "/nt", 2).await, set(&["503"]));
}

#[tokio::test]
async fn equal_sources_share_one_watch_that_stops_when_no_upstream_uses_it() {
    let consul = Consul::start().await;
    let Some(double) = consul.double("count requests") else { return };
    let name = svc("shared");
    let a = echo("a").await;
    consul
        .register(Reg { id: &format!("{name}-a"), name: &name, port: port(&a), ..Default::default() })
        .await;
    let disc =
        format!(r#"{{ type = "consul", address = "{}", service = "{name}", wait = "30s" }}"#, consul.url);
    let text = format!(
        "[[upstream]]\nname = \"one\"\ndiscovery = {disc}\n[[upstream]]\nname = \"two\"\ndiscovery = {disc}\n\
         [[route]]\nname = \"one\"\npath_prefix = \"/one\"\nupstream = \"one\"\n\
         [[route]]\nname = \"two\"\nupstream = \"two\"\n"
    );
    let gw = gateway(&text).await;
    until_served(&gw, "/one", &["a"], Duration::from_secs(5)).await;
    until_served(&gw, "/", &["a"], Duration::from_secs(5)).await;
    eventually("a blocking query is held", Duration::from_secs(5), || async { double.held() == 1 }).await;
    assert_eq!(double.health_requests(), 2, "one watch: a plain read, then one held blocking query");

    // A reload that keeps both upstreams keeps the watch: no new query.
    gw.write_routes("extra.toml", "[[route]]\nname = \"x\"\npath = \"/x\"\nrespond = { status = 204 }\n");
    gw.gateway().reload().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(double.health_requests(), 2, "unchanged upstreams keep their source across a reload");

    // A reload without them stops it: changes no longer cause queries.
    gw.write_routes("routes.toml", "");
    gw.gateway().reload().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = double.health_requests();
    consul.deregister(&format!("{name}-a")).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(double.health_requests(), before, "the source stopped with its last upstream");
}

#[tokio::test]
async fn an_https_agent_is_verified_with_tls_ca_and_followed() {
    let consul = Consul::start().await;
    let Some(double) = consul.double("serve over TLS") else { return };
    let ca = TestCa::new("consul test ca");
    // The gateway dials 127.0.0.1: the certificate must name that IP address.
    let https = double.serve_tls(ca.server_config(&["127.0.0.1", "localhost"])).await;
    let dir = tempfile::tempdir().unwrap();
    let name = svc("https");
    let (a, b) = (echo("a").await, echo("b").await);
    consul
        .register(Reg { id: &format!("{name}-a"), name: &name, port: port(&a), ..Default::default() })
        .await;
    let before = double.health_requests();
    let gw = gateway(&routes_at(&format!("https://{https}"), &name, &tls_ca(&dir, &ca))).await;
    until_served(&gw, "/", &["a"], Duration::from_secs(5)).await;
    assert!(double.health_requests() > before, "the queries reached the double over HTTPS");

    consul
        .register(Reg { id: &format!("{name}-b"), name: &name, port: port(&b), ..Default::default() })
        .await;
    until_served(&gw, "/", &["a", "b"], Duration::from_secs(1)).await;
    consul.deregister(&format!("{name}-a")).await;
    until_served(&gw, "/", &["b"], Duration::from_secs(1)).await;
    let v = upstream_view(&gw, "svc").await;
    assert_eq!(v["discovery"]["type"], "consul");
    assert!(v["discovery"]["last_error"].is_null(), "{v}");

    // A reload naming a CA bundle that cannot be read is refused as a whole, as one with an
    // unreadable [upstream.tls] ca is; the running watch carries on.
    gw.write_routes(
        "routes.toml",
        &routes_at(&format!("https://{https}"), &name, r#", tls_ca = "/nonexistent/consul-ca.pem""#),
    );
    let err = gw.gateway().reload().await.unwrap_err().to_string();
    assert!(err.contains("/nonexistent/consul-ca.pem") && err.contains("tls_ca"), "{err}");
    consul
        .register(Reg { id: &format!("{name}-a"), name: &name, port: port(&a), ..Default::default() })
        .await;
    until_served(&gw, "/", &["a", "b"], Duration::from_secs(1)).await;
}

#[tokio::test]
async fn an_untrusted_agent_certificate_keeps_the_last_set_and_is_reported() {
    let consul = Consul::start().await;
    let Some(double) = consul.double("serve over TLS") else { return };
    let (ca, other) = (TestCa::new("consul test ca"), TestCa::new("another ca"));
    let https = double.serve_tls(ca.server_config(&["127.0.0.1"])).await;
    let dir = tempfile::tempdir().unwrap();
    let name = svc("untrusted");
    let (a, b) = (echo("a").await, echo("b").await);
    consul
        .register(Reg { id: &format!("{name}-a"), name: &name, port: port(&a), ..Default::default() })
        .await;
    let address = format!("https://{https}");
    // "trusted" verifies with tls_ca; "untrusted" has the webpki roots only, which do not
    // include the test CA.
    let text = format!(
        r#"
[[upstream]]
name = "trusted"
discovery = {{ type = "consul", address = "{address}", service = "{name}", wait = "30s"{ca} }}
[[upstream]]
name = "untrusted"
discovery = {{ type = "consul", address = "{address}", service = "{name}", wait = "30s" }}
[[route]]
name = "untrusted"
path_prefix = "/u"
upstream = "untrusted"
[[route]]
name = "trusted"
upstream = "trusted"
"#,
        ca = tls_ca(&dir, &ca)
    );
    let gw = gateway(&text).await;
    until_served(&gw, "/", &["a"], Duration::from_secs(5)).await;
    let errors = |up: &'static str| {
        let gw = &gw;
        async move {
            metric_value(
                gw,
                &format!("switchyard_discovery_errors_total{{upstream=\"{up}\",type=\"consul\"}}"),
            )
            .await
        }
    };
    let last_error = |up: &'static str| {
        let gw = &gw;
        async move { upstream_view(gw, up).await["discovery"]["last_error"].as_str().map(str::to_owned) }
    };

    // Never trusted: no endpoints, the handshake failure shown and counted.
    eventually("the untrusted upstream reports a certificate error", Duration::from_secs(5), || async {
        last_error("untrusted").await.is_some_and(|e| e.contains("invalid peer certificate"))
    })
    .await;
    assert_eq!(served(&gw, "/u", 2).await, set(&["503"]));
    assert!(errors("untrusted").await >= 1.0);
    assert!(last_error("trusted").await.is_none(), "the same agent is trusted with tls_ca");

    // The agent comes back with a certificate from a CA nobody trusts: the held query's
    // connection is closed, and every new handshake fails. A change made meanwhile is not
    // seen, and the last set keeps serving.
    double.serve_tls(other.server_config(&["127.0.0.1"])).await;
    consul
        .register(Reg { id: &format!("{name}-b"), name: &name, port: port(&b), ..Default::default() })
        .await;
    eventually("the trusted upstream reports a certificate error", Duration::from_secs(5), || async {
        last_error("trusted").await.is_some_and(|e| e.contains("invalid peer certificate"))
    })
    .await;
    assert_eq!(served(&gw, "/", 10).await, set(&["a"]), "the last set is kept");
    let first = errors("trusted").await;
    assert!(first >= 1.0, "errors counted: {first}");
    // The source lives on and retries (with backoff): more failures are counted.
    eventually("retries counted", Duration::from_secs(6), || async { errors("trusted").await > first }).await;
    assert_eq!(served(&gw, "/", 10).await, set(&["a"]), "still the last set after retries");

    // The trusted certificate again: the watch recovers and sees the change it missed.
    double.serve_tls(ca.server_config(&["127.0.0.1"])).await;
    // The next retry is at most ~9.6 s away (backoff 1 s, 2 s, 4 s, 8 s with jitter).
    until_served(&gw, "/", &["a", "b"], Duration::from_secs(12)).await;
    assert!(last_error("trusted").await.is_none(), "recovery clears the error");
    assert!(last_error("untrusted").await.is_some(), "the untrusted watch still fails");
}

/// Benchmark (ignored; run with `cargo test --release --test discovery_consul -- --ignored
/// --nocapture`): time from a registration in the Consul double (the PUT returning) to the
/// first request through the gateway that reaches the new instance, median over 20 changes.
#[tokio::test]
#[ignore = "benchmark"]
async fn bench_registration_to_first_request() {
    let consul = Consul::start().await;
    let name = svc("bench");
    let first = upstream(status(200)).await;
    consul
        .register(Reg { id: &format!("{name}-0"), name: &name, port: port(&first), ..Default::default() })
        .await;
    let gw = gateway(&routes(&consul, &name, "")).await;
    eventually("served", Duration::from_secs(10), || async { get(&gw.url("/")).await.status == 200 }).await;
    let mut times = Vec::new();
    let mut prev = (format!("{name}-0"), first);
    for i in 1..=20 {
        let next = upstream(status(200)).await;
        let id = format!("{name}-{i}");
        let t0 = std::time::Instant::now();
        consul.register(Reg { id: &id, name: &name, port: port(&next), ..Default::default() }).await;
        while next.hits() == 0 {
            let _ = get(&gw.url("/")).await;
        }
        times.push(t0.elapsed());
        consul.deregister(&prev.0).await;
        prev = (id, next);
        // Two changes per round (register + deregister): pace the rounds to stay within the
        // 2 queries/s budget, so each change meets a held blocking query. Faster churn than
        // that is followed at the rate limit instead (up to ~0.5 s per change).
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    times.sort();
    println!(
        "consul change -> first request: median {:?}, min {:?}, max {:?} (20 changes)",
        times[10], times[0], times[19]
    );
}

// === The double's KV store, transactions and sessions (tests/support/consul_kv.rs) ===
//
// These pin what Consul documents for /v1/kv, /v1/txn and /v1/session (fleet mode's client is
// written from the documentation, not from the double). Against a real agent
// (SWITCHYARD_CONSUL_ADDR) the steps that need the double's controls are skipped.

/// One request: `method` on `url` with `body`, and `token` as `X-Consul-Token`.
async fn call(method: Method, url: &str, token: Option<&str>, body: impl Into<bytes::Bytes>) -> Got {
    let mut req = Request::builder().method(method).uri(url);
    if let Some(t) = token {
        req = req.header("x-consul-token", t);
    }
    send(req.body(full(body)).unwrap()).await
}

async fn put(url: &str, body: &str) -> Got {
    call(Method::PUT, url, None, body.to_owned()).await
}

async fn delete(url: &str) -> Got {
    call(Method::DELETE, url, None, "").await
}

/// `X-Consul-Index`.
fn index_of(got: &Got) -> u64 {
    got.header("x-consul-index").expect("X-Consul-Index").parse().unwrap()
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// `/v1/kv/<path>` on `consul` (`path` may carry a query).
fn kv_url(consul: &Consul, path: &str) -> String {
    format!("{}/v1/kv/{path}", consul.url)
}

/// A new session with `body`; its ID.
async fn new_session(consul: &Consul, body: Value) -> String {
    let got = put(&format!("{}/v1/session/create", consul.url), &body.to_string()).await;
    assert_eq!(got.status, 200, "session create: {}", got.text());
    got.json()["ID"].as_str().unwrap().to_owned()
}

async fn txn(consul: &Consul, ops: &Value) -> Got {
    put(&format!("{}/v1/txn", consul.url), &ops.to_string()).await
}

/// A `{"KV": ...}` op.
fn op(verb: &str, key: &str, more: Value) -> Value {
    let mut kv = json!({ "Verb": verb, "Key": key });
    for (k, v) in more.as_object().into_iter().flatten() {
        kv[k] = v.clone();
    }
    json!({ "KV": kv })
}

#[tokio::test]
async fn kv_put_get_cas_flags_raw_and_delete_as_documented() {
    let consul = Consul::start().await;
    let key = format!("{}/conf", svc("kv"));
    let url = |q: &str| kv_url(&consul, &format!("{key}{q}"));

    let got = get(&url("")).await;
    assert_eq!(got.status, 404, "a missing key");
    assert!(index_of(&got) >= 1, "a 404 carries an index a client can block on");

    let got = put(&url("?flags=42"), "v1").await;
    assert_eq!((got.status.as_u16(), got.text().as_str()), (200, "true"));
    let got = get(&url("")).await;
    let e = &got.json()[0];
    assert_eq!(
        (e["Key"].as_str(), e["Value"].as_str(), e["Flags"].as_u64()),
        (Some(&*key), Some(&*b64("v1")), Some(42))
    );
    assert_eq!(e["LockIndex"], 0);
    assert!(e.get("Session").is_none(), "no Session on an unlocked key: {e}");
    let created = e["CreateIndex"].as_u64().unwrap();
    assert_eq!(e["ModifyIndex"], created);
    assert_eq!(index_of(&got), created, "the X-Consul-Index of one key is its ModifyIndex");
    let raw = get(&url("?raw")).await;
    assert_eq!((raw.text().as_str(), raw.header("content-type")), ("v1", Some("text/plain")));

    // Check-and-set: 0 only creates; another index than the key's is refused.
    assert_eq!(put(&url("?cas=0"), "v2").await.text(), "false");
    assert_eq!(put(&url(&format!("?cas={}", created + 1000)), "v2").await.text(), "false");
    assert_eq!(put(&url(&format!("?cas={created}")), "v2").await.text(), "true");
    let e = get(&url("")).await.json()[0].clone();
    let modified = e["ModifyIndex"].as_u64().unwrap();
    assert!(modified > created, "{e}");
    assert_eq!((e["CreateIndex"].as_u64(), e["Value"].as_str()), (Some(created), Some(&*b64("v2"))));
    assert_eq!(e["Flags"], 0, "a write without ?flags sets 0");
    // A write that changes nothing keeps the ModifyIndex.
    put(&url(""), "v2").await;
    assert_eq!(get(&url("")).await.json()[0]["ModifyIndex"], modified);
    assert_eq!(put(&url("?cas=0&acquire=x"), "").await.status, 400, "cas and acquire conflict");
    if let Some(double) = consul.double("read a key") {
        let e = double.kv(&key).unwrap();
        assert_eq!((e.value.as_slice(), e.modify_index, e.create_index), (&b"v2"[..], modified, created));
    }

    // Delete with cas: only at the key's index; then 404 with an index past the delete.
    assert_eq!(delete(&url(&format!("?cas={created}"))).await.text(), "false");
    assert_eq!(delete(&url(&format!("?cas={modified}"))).await.text(), "true");
    let got = get(&url("")).await;
    assert_eq!(got.status, 404);
    assert!(index_of(&got) > modified, "the delete moved the index: {}", index_of(&got));
    assert_eq!(delete(&url("")).await.text(), "true", "deleting a missing key is true");
}

#[tokio::test]
async fn kv_recurse_keys_and_separator_as_documented() {
    let consul = Consul::start().await;
    let p = svc("tree");
    for (k, v) in [("a", "1"), ("b/c", "2"), ("b/d", "3")] {
        put(&kv_url(&consul, &format!("{p}/{k}")), v).await;
    }
    put(&kv_url(&consul, &format!("{p}x")), "outside").await;

    let got = get(&kv_url(&consul, &format!("{p}/?recurse"))).await;
    let entries = got.json();
    let keys: Vec<&str> = entries.as_array().unwrap().iter().map(|e| e["Key"].as_str().unwrap()).collect();
    assert_eq!(keys, [format!("{p}/a"), format!("{p}/b/c"), format!("{p}/b/d")], "in key order");
    assert_eq!(entries[1]["Value"], b64("2"));
    let newest =
        entries.as_array().unwrap().iter().map(|e| e["ModifyIndex"].as_u64().unwrap()).max().unwrap();
    assert_eq!(index_of(&got), newest, "a prefix's index is its newest ModifyIndex");

    let got = get(&kv_url(&consul, &format!("{p}/?keys"))).await;
    assert_eq!(got.json(), json!([format!("{p}/a"), format!("{p}/b/c"), format!("{p}/b/d")]));
    let got = get(&kv_url(&consul, &format!("{p}/?keys&separator=/"))).await;
    assert_eq!(got.json(), json!([format!("{p}/a"), format!("{p}/b/")]));
    assert_eq!(get(&kv_url(&consul, &format!("{p}/none/?keys"))).await.status, 404);
    assert_eq!(get(&kv_url(&consul, &format!("{p}/none/?recurse"))).await.status, 404);

    assert_eq!(delete(&kv_url(&consul, &format!("{p}/b/?recurse"))).await.text(), "true");
    let got = get(&kv_url(&consul, &format!("{p}/?recurse"))).await;
    assert_eq!(got.json().as_array().unwrap().len(), 1);
    assert!(index_of(&got) > newest, "the deleted keys still count in the prefix's index");
    if let Some(double) = consul.double("list keys") {
        assert_eq!(double.kv_keys(&p), [format!("{p}/a"), format!("{p}x")]);
    }
}

#[tokio::test]
async fn kv_acquire_and_release_follow_the_lock_semantics_and_lock_delay() {
    let consul = Consul::start().await;
    let p = svc("lock");
    let one = new_session(&consul, json!({ "Name": "one", "LockDelay": "0s" })).await;
    let two = new_session(&consul, json!({ "Name": "two" })).await;
    let key = format!("{p}/leader");
    let url = |q: String| kv_url(&consul, &format!("{key}{q}"));
    let entry = || async { get(&url(String::new())).await.json()[0].clone() };

    assert_eq!(put(&url(format!("?acquire={one}")), "gw1").await.text(), "true");
    let e = entry().await;
    assert_eq!((e["LockIndex"].as_u64(), e["Session"].as_str()), (Some(1), Some(&*one)));
    assert_eq!(put(&url(format!("?acquire={two}")), "gw2").await.text(), "false", "held by another session");
    // The holder may update the value: the LockIndex stays.
    assert_eq!(put(&url(format!("?acquire={one}")), "gw1b").await.text(), "true");
    let e = entry().await;
    assert_eq!((e["LockIndex"].as_u64(), e["Value"].as_str()), (Some(1), Some(&*b64("gw1b"))));

    assert_eq!(put(&url(format!("?release={two}")), "").await.text(), "false", "not the holder");
    assert_eq!(put(&url(format!("?release={one}")), "released").await.text(), "true");
    let e = entry().await;
    assert!(e.get("Session").is_none(), "{e}");
    assert_eq!((e["LockIndex"].as_u64(), e["Value"].as_str()), (Some(1), Some(&*b64("released"))));
    assert_eq!(put(&url(format!("?acquire={two}")), "gw2").await.text(), "true");
    assert_eq!(entry().await["LockIndex"], 2, "each acquisition counts");
    // A write without ?acquire proceeds, and the lock stays with its session.
    assert_eq!(put(&url(String::new()), "plain").await.text(), "true");
    assert_eq!(entry().await["Session"], two);

    let unknown = "11111111-2222-3333-4444-555555555555";
    let got = put(&kv_url(&consul, &format!("{p}/other?acquire={unknown}")), "").await;
    assert_eq!(got.status, 500, "an unknown session is an error: {}", got.text());

    // Destroying a session releases its locks and starts their lock-delay (15 s by default):
    // nobody acquires the key meanwhile.
    assert_eq!(put(&format!("{}/v1/session/destroy/{two}", consul.url), "").await.text(), "true");
    let e = entry().await;
    assert!(e.get("Session").is_none(), "released when its session ended: {e}");
    assert_eq!(put(&url(format!("?acquire={one}")), "gw1").await.text(), "false", "within the lock-delay");
    // A session with LockDelay 0 leaves no delay behind.
    let free = format!("{p}/free");
    assert_eq!(put(&kv_url(&consul, &format!("{free}?acquire={one}")), "").await.text(), "true");
    put(&format!("{}/v1/session/destroy/{one}", consul.url), "").await;
    let three = new_session(&consul, json!({ "Name": "three" })).await;
    assert_eq!(put(&kv_url(&consul, &format!("{free}?acquire={three}")), "").await.text(), "true");
}

#[tokio::test]
async fn a_kv_blocking_query_is_answered_by_a_write_to_its_key_not_by_one_elsewhere() {
    let consul = Consul::start().await;
    let p = svc("block");
    let watched = format!("{p}/watched");
    put(&kv_url(&consul, &watched), "a").await;
    let i = index_of(&get(&kv_url(&consul, &watched)).await);
    let held = |expected: usize| {
        let consul = &consul;
        async move {
            match consul.double("count held queries") {
                Some(double) => {
                    eventually("the query is held", Duration::from_secs(5), || async {
                        double.kv_held() == expected
                    })
                    .await;
                }
                None => tokio::time::sleep(Duration::from_millis(300)).await,
            }
        }
    };

    let url = kv_url(&consul, &format!("{watched}?index={i}&wait=5s"));
    let mut query = tokio::spawn(async move { get(&url).await });
    held(1).await;
    // Writes elsewhere, to a sibling and to a key the watched one is a prefix of, do not
    // answer it.
    put(&kv_url(&consul, &format!("{p}/other")), "x").await;
    put(&kv_url(&consul, &format!("{watched}2")), "y").await;
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut query).await.is_err(),
        "a write to another key answered the query"
    );
    put(&kv_url(&consul, &watched), "b").await;
    let got =
        tokio::time::timeout(Duration::from_secs(2), query).await.expect("answered by the write").unwrap();
    let e = &got.json()[0];
    assert_eq!(e["Value"], b64("b"));
    assert_eq!(index_of(&got), e["ModifyIndex"].as_u64().unwrap());
    assert!(index_of(&got) > i);

    // `wait` bounds a query nothing answers: the same index comes back.
    let i = index_of(&got);
    let t0 = std::time::Instant::now();
    let got = get(&kv_url(&consul, &format!("{watched}?index={i}&wait=1s"))).await;
    assert!(t0.elapsed() >= Duration::from_millis(950), "answered after {:?}", t0.elapsed());
    assert_eq!((got.status.as_u16(), index_of(&got)), (200, i));

    // A prefix query is answered by a write within the prefix, not by one beside it.
    let got = get(&kv_url(&consul, &format!("{p}/?recurse"))).await;
    let url = kv_url(&consul, &format!("{p}/?recurse&index={}&wait=5s", index_of(&got)));
    let mut query = tokio::spawn(async move { get(&url).await });
    held(1).await;
    put(&kv_url(&consul, &format!("{p}-beside")), "x").await;
    assert!(tokio::time::timeout(Duration::from_millis(500), &mut query).await.is_err(), "answered early");
    put(&kv_url(&consul, &format!("{p}/new")), "n").await;
    let got =
        tokio::time::timeout(Duration::from_secs(2), query).await.expect("answered by the write").unwrap();
    assert_eq!(got.json().as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn a_kv_blocking_query_on_a_missing_key_is_answered_when_the_key_is_created() {
    let consul = Consul::start().await;
    let p = svc("missing");
    let key = format!("{p}/later");
    let got = get(&kv_url(&consul, &key)).await;
    assert_eq!(got.status, 404);
    let url = kv_url(&consul, &format!("{key}?index={}&wait=5s", index_of(&got)));
    let mut query = tokio::spawn(async move { get(&url).await });
    if let Some(double) = consul.double("count held queries") {
        eventually("the query is held", Duration::from_secs(5), || async { double.kv_held() == 1 }).await;
        // Consul may answer such a query early ("no guarantee of a change"); the double
        // answers as late as it may.
        put(&kv_url(&consul, &format!("{p}/other")), "x").await;
        assert!(
            tokio::time::timeout(Duration::from_millis(300), &mut query).await.is_err(),
            "answered early"
        );
    }
    put(&kv_url(&consul, &key), "here").await;
    let got =
        tokio::time::timeout(Duration::from_secs(2), query).await.expect("answered by the write").unwrap();
    assert_eq!((got.status.as_u16(), got.json()[0]["Value"].as_str()), (200, Some(&*b64("here"))));
}

#[tokio::test]
async fn a_txn_is_all_or_nothing_and_a_failed_one_is_a_409_naming_each_failed_op() {
    let consul = Consul::start().await;
    let p = svc("txn");
    let (a, b, c) = (format!("{p}/a"), format!("{p}/b"), format!("{p}/c"));
    put(&kv_url(&consul, &c), "old").await;
    let c_index = get(&kv_url(&consul, &c)).await.json()[0]["ModifyIndex"].as_u64().unwrap();

    let ops = json!([
        op("set", &a, json!({ "Value": b64("1") })),
        op("set", &b, json!({ "Value": b64("2") })),
        op("cas", &c, json!({ "Value": b64("new"), "Index": c_index + 1000 })),
        op("check-not-exists", &c, json!({})),
    ]);
    let got = txn(&consul, &ops).await;
    assert_eq!(got.status, 409, "{}", got.text());
    let v = got.json();
    assert!(v["Results"].is_null(), "{v}");
    let errors = v["Errors"].as_array().unwrap();
    assert_eq!(errors.iter().map(|e| e["OpIndex"].as_u64().unwrap()).collect::<Vec<_>>(), [2, 3]);
    assert!(errors[0]["What"].as_str().unwrap().contains("index is stale"), "{v}");
    assert!(errors[1]["What"].as_str().unwrap().contains("exists"), "{v}");
    assert_eq!(get(&kv_url(&consul, &a)).await.status, 404, "nothing of a failed transaction is applied");
    assert_eq!(get(&kv_url(&consul, &b)).await.status, 404);
    assert_eq!(get(&kv_url(&consul, &c)).await.json()[0]["ModifyIndex"], c_index);

    let ops = json!([
        op("set", &a, json!({ "Value": b64("1"), "Flags": 7 })),
        op("cas", &c, json!({ "Value": b64("new"), "Index": c_index })),
        op("get", &c, json!({})),
        op("delete", &b, json!({})),
        op("check-not-exists", &b, json!({})),
    ]);
    let got = txn(&consul, &ops).await;
    assert_eq!(got.status, 200, "{}", got.text());
    let v = got.json();
    assert!(v["Errors"].is_null(), "{v}");
    let results = v["Results"].as_array().unwrap();
    assert_eq!(results.len(), 3, "no results for delete and check-not-exists: {v}");
    let (set, cas, read) = (&results[0]["KV"], &results[1]["KV"], &results[2]["KV"]);
    assert_eq!((set["Key"].as_str(), set["Flags"].as_u64()), (Some(&*a), Some(7)));
    assert!(set["Value"].is_null() && cas["Value"].is_null(), "Value only for get: {v}");
    assert_eq!(read["Value"], b64("new"), "get returns the value as changed by the ops before it");
    assert_eq!(set["ModifyIndex"], cas["ModifyIndex"], "one transaction, one index: {v}");
    assert_eq!(cas["CreateIndex"], c_index);
    assert_eq!(get(&kv_url(&consul, &a)).await.json()[0]["Value"], b64("1"));

    let got = txn(&consul, &json!([op("frobnicate", &a, json!({}))])).await;
    assert_eq!(got.status, 409);
    assert!(got.json()["Errors"][0]["What"].as_str().unwrap().contains("unknown KV verb"));
    if let Some(double) = consul.double("count txn requests") {
        assert_eq!(double.txn_requests(), 3);
    }
}

#[tokio::test]
async fn a_txn_takes_at_most_128_operations() {
    let consul = Consul::start().await;
    let p = svc("limit");
    assert_eq!(TXN_MAX_OPS, 128, "the number the Transaction documentation states");
    let ops = |n: usize| {
        Value::Array((0..n).map(|i| op("check-not-exists", &format!("{p}/{i}"), json!({}))).collect())
    };
    let got = txn(&consul, &ops(TXN_MAX_OPS + 1)).await;
    assert_eq!(got.status, 413, "{}", got.text());
    assert!(got.text().contains("Transaction contains too many operations (129 > 128)"), "{}", got.text());
    let got = txn(&consul, &ops(TXN_MAX_OPS)).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json(), json!({ "Results": [], "Errors": null }));
}

#[tokio::test]
async fn a_txn_get_tree_returns_the_values_and_locks_work_in_a_txn() {
    let consul = Consul::start().await;
    let p = svc("tree-txn");
    for k in ["t/1", "t/2", "t/3/x", "u"] {
        put(&kv_url(&consul, &format!("{p}/{k}")), k).await;
    }
    let before = consul.double("read the index").map(|d| d.index());
    let got = txn(&consul, &json!([op("get-tree", &format!("{p}/t/"), json!({}))])).await;
    assert_eq!(got.status, 200, "{}", got.text());
    let results = got.json()["Results"].as_array().unwrap().clone();
    let pairs: Vec<(String, String)> = results
        .iter()
        .map(|r| (r["KV"]["Key"].as_str().unwrap().to_owned(), r["KV"]["Value"].as_str().unwrap().to_owned()))
        .collect();
    let want: Vec<(String, String)> =
        ["t/1", "t/2", "t/3/x"].iter().map(|k| (format!("{p}/{k}"), b64(k))).collect();
    assert_eq!(pairs, want, "every key under the prefix, in order, with its value");
    if let Some(double) = consul.double("read the index") {
        assert_eq!(Some(double.index()), before, "a read-only transaction takes no index");
    }

    let s = new_session(&consul, json!({ "LockDelay": "0s" })).await;
    let key = format!("{p}/t/1");
    let ops = json!([
        op("lock", &key, json!({ "Value": b64("mine"), "Session": s })),
        op("check-session", &key, json!({ "Session": s })),
    ]);
    let got = txn(&consul, &ops).await;
    assert_eq!(got.status, 200, "{}", got.text());
    let lock = &got.json()["Results"][0]["KV"];
    assert_eq!((lock["Session"].as_str(), lock["LockIndex"].as_u64()), (Some(&*s), Some(1)));
    let other = new_session(&consul, json!({})).await;
    let got = txn(&consul, &json!([op("unlock", &key, json!({ "Session": other }))])).await;
    assert_eq!(got.status, 409);
    assert!(got.json()["Errors"][0]["What"].as_str().unwrap().contains("lock isn't held"), "{}", got.text());
}

#[tokio::test]
async fn an_expired_session_deletes_or_releases_what_it_held_after_twice_its_ttl() {
    let consul = Consul::start().await;
    let Some(double) = consul.double("short TTLs on a paused clock") else { return };
    double.allow_short_ttl();
    let p = svc("ttl");
    let (del_key, rel_key) = (format!("{p}/del"), format!("{p}/rel"));
    let del = new_session(&consul, json!({ "Name": "del", "TTL": "5s", "Behavior": "delete" })).await;
    let rel = new_session(&consul, json!({ "Name": "rel", "TTL": "5s", "Behavior": "release" })).await;
    assert_eq!(put(&kv_url(&consul, &format!("{del_key}?acquire={del}")), "d").await.text(), "true");
    assert_eq!(put(&kv_url(&consul, &format!("{rel_key}?acquire={rel}")), "r").await.text(), "true");
    let rel_index = double.kv(&rel_key).unwrap().modify_index;

    // The sessions' TTL clocks run on tokio's clock: paused, and moved on, with no request in
    // flight meanwhile (a paused clock jumps ahead while a task waits for I/O).
    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(6)).await;
    assert_eq!(double.sessions().len(), 2, "past the TTL, but Consul gives twice the TTL");
    tokio::time::advance(Duration::from_secs(5)).await;
    eventually("both sessions invalidated", Duration::from_secs(1), || async {
        double.sessions().is_empty()
    })
    .await;
    tokio::time::resume();

    assert_eq!(get(&kv_url(&consul, &del_key)).await.status, 404, "Behavior delete deletes the key");
    let got = get(&kv_url(&consul, &rel_key)).await;
    let e = &got.json()[0];
    assert!(e.get("Session").is_none(), "Behavior release releases the lock: {e}");
    assert_eq!((e["LockIndex"].as_u64(), e["Value"].as_str()), (Some(1), Some(&*b64("r"))));
    assert!(e["ModifyIndex"].as_u64().unwrap() > rel_index, "the invalidation took an index: {e}");
    let got = put(&format!("{}/v1/session/renew/{del}", consul.url), "").await;
    assert_eq!(got.status, 404, "renewing an expired session: {}", got.text());
    assert_eq!(got.text(), format!("Session id '{del}' not found"));
    assert_eq!(get(&format!("{}/v1/session/info/{rel}", consul.url)).await.json(), json!([]));
}

#[tokio::test]
async fn renewal_keeps_a_session_and_expiring_one_wakes_the_queries_on_its_keys() {
    let consul = Consul::start().await;
    let Some(double) = consul.double("short TTLs, expire a session") else { return };
    double.allow_short_ttl();
    let p = svc("renew");
    let s = new_session(&consul, json!({ "TTL": "1s", "LockDelay": "0s" })).await;
    let renew = format!("{}/v1/session/renew/{s}", consul.url);
    // Renewed every 200 ms for 3 s, longer than twice the TTL: alive throughout.
    let t0 = std::time::Instant::now();
    while t0.elapsed() < Duration::from_secs(3) {
        let got = put(&renew, "").await;
        assert_eq!(got.status, 200, "renewed after {:?}: {}", t0.elapsed(), got.text());
        let v = got.json();
        assert_eq!((v[0]["ID"].as_str(), v[0]["TTL"].as_str()), (Some(&*s), Some("1s")));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let key = format!("{p}/held");
    assert_eq!(put(&kv_url(&consul, &format!("{key}?acquire={s}")), "v").await.text(), "true");
    let i = index_of(&get(&kv_url(&consul, &key)).await);
    let url = kv_url(&consul, &format!("{key}?index={i}&wait=10s"));
    let query = tokio::spawn(async move { get(&url).await });
    eventually("the query is held", Duration::from_secs(5), || async { double.kv_held() == 1 }).await;
    // A gateway killed with SIGKILL never destroys its session: it expires.
    assert!(double.expire_session(&s));
    let got =
        tokio::time::timeout(Duration::from_secs(2), query).await.expect("woken by the expiry").unwrap();
    assert!(got.json()[0].get("Session").is_none(), "{}", got.text());
    assert!(index_of(&got) > i);
    assert_eq!(put(&renew, "").await.status, 404);
    assert!(!double.expire_session(&s), "gone already");

    // Not renewed, a session ends on its own within twice its TTL.
    let s2 = new_session(&consul, json!({ "TTL": "300ms" })).await;
    assert!(double.sessions().iter().any(|x| x.id == s2));
    eventually("the unrenewed session expires", Duration::from_secs(3), || async {
        double.sessions().is_empty()
    })
    .await;
}

#[tokio::test]
async fn session_create_validates_as_consul_does_and_info_list_and_destroy_answer_as_documented() {
    let consul = Consul::start().await;
    let create = format!("{}/v1/session/create", consul.url);
    for (body, why) in [
        (json!({ "TTL": "5s" }), "Invalid Session TTL"),
        (json!({ "TTL": "86401s" }), "Invalid Session TTL"),
        (json!({ "Behavior": "keep" }), "Invalid Behavior setting 'keep'"),
    ] {
        let got = put(&create, &body.to_string()).await;
        assert_eq!(got.status, 500, "{body}: {}", got.text());
        assert!(got.text().contains(why), "{body}: {}", got.text());
    }
    let name = svc("session");
    let id =
        new_session(&consul, json!({ "Name": name, "TTL": "10s", "Behavior": "delete", "LockDelay": "5s" }))
            .await;
    assert_eq!(id.len(), 36, "a UUID: {id}");
    let info = get(&format!("{}/v1/session/info/{id}", consul.url)).await;
    assert!(index_of(&info) >= 1);
    let s = &info.json()[0];
    assert_eq!((s["ID"].as_str(), s["Name"].as_str()), (Some(&*id), Some(&*name)));
    assert_eq!(
        (s["Behavior"].as_str(), s["TTL"].as_str(), s["LockDelay"].as_u64()),
        (Some("delete"), Some("10s"), Some(5_000_000_000))
    );
    let list = get(&format!("{}/v1/session/list", consul.url)).await.json();
    assert!(list.as_array().unwrap().iter().any(|s| s["ID"] == id), "{list}");

    // Defaults: release, a 15 s lock-delay, no TTL.
    let plain = new_session(&consul, json!({})).await;
    let s = get(&format!("{}/v1/session/info/{plain}", consul.url)).await.json()[0].clone();
    assert_eq!(
        (s["Behavior"].as_str(), s["LockDelay"].as_u64(), s["TTL"].as_str()),
        (Some("release"), Some(15_000_000_000), Some(""))
    );

    let destroy = format!("{}/v1/session/destroy/{id}", consul.url);
    assert_eq!(put(&destroy, "").await.text(), "true");
    assert_eq!(get(&format!("{}/v1/session/info/{id}", consul.url)).await.json(), json!([]));
    assert_eq!(put(&destroy, "").await.text(), "true", "destroying an unknown session is still true");
    assert_eq!(put(&format!("{}/v1/session/renew/{id}", consul.url), "").await.status, 404);
    assert_eq!(get(&create).await.status, 405, "create is a PUT");
    put(&format!("{}/v1/session/destroy/{plain}", consul.url), "").await;
}

#[tokio::test]
async fn kv_txn_and_session_endpoints_require_the_acl_token() {
    let consul = Consul::start().await;
    let Some(double) = consul.double("ACL token") else { return };
    double.require_token("s3cret");
    let name = format!("{}/k", svc("acl"));
    let key = kv_url(&consul, &name);
    let txn_url = format!("{}/v1/txn", consul.url);
    let session_url = format!("{}/v1/session/create", consul.url);
    for token in [None, Some("wrong")] {
        assert_eq!(call(Method::GET, &key, token, "").await.status, 403);
        assert_eq!(call(Method::PUT, &key, token, "v").await.status, 403);
        assert_eq!(call(Method::DELETE, &key, token, "").await.status, 403);
        assert_eq!(call(Method::PUT, &txn_url, token, "[]").await.status, 403);
        assert_eq!(call(Method::PUT, &session_url, token, "").await.status, 403);
    }
    assert_eq!(double.kv(&name), None, "nothing written without the token");
    let ok = Some("s3cret");
    assert_eq!(call(Method::PUT, &key, ok, "v").await.text(), "true");
    assert_eq!(call(Method::GET, &key, ok, "").await.status, 200);
    assert_eq!(call(Method::PUT, &txn_url, ok, "[]").await.status, 200);
    assert_eq!(call(Method::PUT, &session_url, ok, "").await.status, 200);
    assert_eq!(
        (double.kv_requests(), double.txn_requests(), double.session_requests()),
        (2, 1, 1),
        "requests past the token check"
    );
}

#[tokio::test]
async fn kv_and_sessions_survive_an_outage_and_ttl_clocks_keep_running() {
    let consul = Consul::start().await;
    let Some(double) = consul.double("outage") else { return };
    double.allow_short_ttl();
    let p = svc("outage-kv");
    put(&kv_url(&consul, &format!("{p}/kept")), "v").await;
    let s = new_session(&consul, json!({ "TTL": "500ms", "LockDelay": "0s" })).await;
    assert_eq!(put(&kv_url(&consul, &format!("{p}/lock?acquire={s}")), "l").await.text(), "true");
    let kept = new_session(&consul, json!({ "Name": "no ttl" })).await;

    double.stop().await;
    // The outage outlasts the TTL (twice 500 ms): the session expires meanwhile.
    eventually("the session expires during the outage", Duration::from_secs(5), || async {
        double.sessions().len() == 1
    })
    .await;
    double.restart().await;

    assert_eq!(get(&kv_url(&consul, &format!("{p}/kept?raw"))).await.text(), "v");
    let got = get(&kv_url(&consul, &format!("{p}/lock"))).await;
    assert!(got.json()[0].get("Session").is_none(), "released during the outage: {}", got.text());
    let info = get(&format!("{}/v1/session/info/{kept}", consul.url)).await.json();
    assert_eq!(info[0]["Name"], "no ttl");
}
