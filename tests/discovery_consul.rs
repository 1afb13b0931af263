//! Consul discovery end to end: the real gateway against the Consul API double
//! (tests/support/consul_double.rs), or a real `consul agent -dev` when
//! `SWITCHYARD_CONSUL_ADDR` is set (steps that need the double's controls are then skipped,
//! with a note on stderr). The HTTPS tests always need the double: it serves the API over TLS
//! with a certificate from a test CA made at run time.

mod support;

use std::time::Duration;

use support::certs::TestCa;
use support::consul_double::{Consul, Reg};
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
