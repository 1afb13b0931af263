//! The admin API (SPEC 5) and the metric names of SPEC 6.

mod support;

use std::sync::Arc;
use std::time::Duration;

use http::Request;
use support::*;

#[tokio::test]
async fn healthz_ready_and_unknown_paths() {
    let g = gateway("[[route]]\nname = \"r\"\nrespond = { status = 200 }\n").await;
    let r = get(&g.admin_url("/healthz")).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "ok\n"));
    assert_eq!(get(&g.admin_url("/ready")).await.status, 200);
    assert_eq!(get(&g.admin_url("/nope")).await.status, 404);
    assert_eq!(send(Request::post(g.admin_url("/routes")).body(full("")).unwrap()).await.status, 405);
}

#[tokio::test]
async fn ready_says_503_while_draining_and_the_in_flight_request_finishes() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let slow = gated(Arc::clone(&gate)).await;
    let mut g = gateway(&one_upstream("slow", slow.addr)).await;
    let url = g.url("/");
    let pending = tokio::spawn(async move { get(&url).await });
    eventually("the request is in flight", Duration::from_secs(5), || async { slow.hits() == 1 }).await;

    let gw = g.gw.take().unwrap();
    let drain = tokio::spawn(gw.drain());
    eventually("/ready turns 503", Duration::from_secs(5), || async {
        get(&g.admin_url("/ready")).await.status == 503
    })
    .await;
    assert_eq!(get(&g.admin_url("/healthz")).await.status, 200, "the admin API keeps answering");
    assert!(!drain.is_finished(), "drain waits for the in-flight request");

    gate.add_permits(1);
    let r = pending.await.unwrap();
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "released"));
    let clean = tokio::time::timeout(Duration::from_secs(5), drain).await.unwrap().unwrap();
    assert!(clean, "everything finished within drain_timeout");
}

#[tokio::test]
async fn config_routes_and_upstreams_views() {
    let e = echo("e").await;
    let routes = format!(
        r#"
[[upstream]]
name = "e"
endpoints = ["{}", {{ address = "127.0.0.1:1", weight = 3 }}]
[[route]]
name = "catch-all"
upstream = "e"
[[route]]
name = "prefix"
path_prefix = "/api"
upstream = "e"
[[route]]
name = "exact-host"
hosts = ["a.test"]
path = "/x"
methods = ["GET"]
headers = {{ "x-a" = "*" }}
query = {{ "q" = "1" }}
respond = {{ status = 204 }}
"#,
        e.addr
    );
    let g = gateway_with("", &[("r.toml", &routes)]).await;

    let c = get(&g.admin_url("/config")).await;
    assert_eq!(c.header("content-type"), Some("application/json"));
    let c = c.json();
    assert_eq!(c["version"], 1);
    assert!(c["loaded_at"].as_str().unwrap().ends_with('Z'), "{c}");
    assert_eq!(c["files"].as_array().unwrap().len(), 1);
    assert!(c["files"][0].as_str().unwrap().ends_with("r.toml"));
    assert!(c["last_error"].is_null());

    // Precedence order: exact host first, then the longest prefix, then the catch-all.
    let r = get(&g.admin_url("/routes")).await.json();
    let names: Vec<&str> =
        r["routes"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["exact-host", "prefix", "catch-all"]);
    let first = &r["routes"][0];
    assert_eq!(first["hosts"], serde_json::json!(["a.test"]));
    assert_eq!(first["match"], serde_json::json!({ "path": "/x" }));
    assert_eq!(first["methods"], serde_json::json!(["GET"]));
    assert_eq!(first["headers"]["x-a"], "*");
    assert_eq!(first["query"]["q"], "1");
    assert_eq!(first["target"]["respond"]["status"], 204);
    assert_eq!(r["routes"][1]["target"]["upstream"], "e");

    let u = get(&g.admin_url("/upstreams")).await.json();
    let ups = u["upstreams"].as_array().unwrap();
    assert_eq!(ups.len(), 1);
    assert_eq!(ups[0]["name"], "e");
    assert_eq!(ups[0]["discovery"]["type"], "static");
    assert!(ups[0]["discovery"].as_object().unwrap().contains_key("last_update"));
    assert!(ups[0]["discovery"]["last_error"].is_null());
    let eps = ups[0]["endpoints"].as_array().unwrap();
    assert_eq!(eps.len(), 2);
    assert_eq!(eps[0]["address"], e.addr.to_string());
    assert_eq!(eps[0]["weight"], 1);
    assert_eq!(eps[1]["address"], "127.0.0.1:1");
    assert_eq!(eps[1]["weight"], 3);
    for ep in eps {
        let o = ep.as_object().unwrap();
        for key in ["address", "weight", "health", "ejected_until", "in_flight", "ewma_ms"] {
            assert!(o.contains_key(key), "{key} missing in {ep}");
        }
        assert!(["healthy", "unhealthy", "unknown"].contains(&ep["health"].as_str().unwrap()));
        assert_eq!(ep["in_flight"], 0);
    }
}

#[tokio::test]
async fn in_flight_counts_show_in_upstreams() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let slow = gated(Arc::clone(&gate)).await;
    let g = gateway(&one_upstream("slow", slow.addr)).await;
    let url = g.url("/");
    let pending = tokio::spawn(async move { get(&url).await });
    eventually("in_flight shows 1", Duration::from_secs(5), || async {
        get(&g.admin_url("/upstreams")).await.json()["upstreams"][0]["endpoints"][0]["in_flight"] == 1
    })
    .await;
    gate.add_permits(1);
    assert_eq!(pending.await.unwrap().status, 200);
    eventually("in_flight back to 0", Duration::from_secs(5), || async {
        get(&g.admin_url("/upstreams")).await.json()["upstreams"][0]["endpoints"][0]["in_flight"] == 0
    })
    .await;
}

#[tokio::test]
async fn metrics_use_the_spec_names_and_labels() {
    let up = upstream(status(200)).await;
    let g = gateway(&format!(
        "{}\n[[route]]\nname = \"fixed\"\npath = \"/fixed\"\nrespond = {{ status = 201 }}\n",
        one_upstream("u", up.addr)
    ))
    .await;
    for _ in 0..3 {
        assert_eq!(get(&g.url("/")).await.status, 200);
    }
    assert_eq!(get(&g.url("/fixed")).await.status, 201);
    assert_eq!(send(Request::post(g.admin_url("/reload")).body(full("")).unwrap()).await.status, 200);

    let ep = up.addr;
    let wanted = [
        "switchyard_requests_total{listener=\"http\",route=\"u\",upstream=\"u\",code=\"200\"} 3".to_owned(),
        "switchyard_requests_total{listener=\"http\",route=\"fixed\",upstream=\"\",code=\"201\"} 1"
            .to_owned(),
        "switchyard_request_duration_seconds_count{route=\"u\"} 3".to_owned(),
        "switchyard_config_reloads_total{result=\"success\"} 1".to_owned(),
        format!("switchyard_upstream_requests_total{{upstream=\"u\",endpoint=\"{ep}\",outcome=\"ok\"}} 3"),
    ];
    // The metrics are written when each response body ends, just after the client has it.
    eventually("every request is counted", Duration::from_secs(5), || async {
        let text = get(&g.admin_url("/metrics")).await.text();
        wanted.iter().all(|w| text.lines().any(|l| l == w))
    })
    .await;
    let text = get(&g.admin_url("/metrics")).await.text();
    assert!(text.lines().any(|l| l.starts_with("switchyard_request_duration_seconds_bucket{")), "{text}");
    let active = metric(&text, "switchyard_connections_active{listener=\"http\"}");
    assert!(active.is_some(), "{text}");
    for family in [
        "switchyard_requests counter",
        "switchyard_request_duration_seconds histogram",
        "switchyard_connections_active gauge",
        "switchyard_config_reloads counter",
        "switchyard_upstream_requests counter",
    ] {
        assert!(text.contains(&format!("# TYPE {family}")), "{family}:\n{text}");
    }
}

#[tokio::test]
async fn connections_active_follows_open_connections() {
    let g = gateway("[[route]]\nname = \"r\"\nrespond = { status = 200 }\n").await;
    let series = "switchyard_connections_active{listener=\"http\"}";
    let mut s = tokio::net::TcpStream::connect(g.addr).await.unwrap();
    assert!(raw_exchange(&mut s, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap()
        .starts_with("HTTP/1.1 200"));
    eventually("one connection open", Duration::from_secs(5), || async {
        admin_metric(g.admin, series).await == 1.0
    })
    .await;
    drop(s);
    eventually("none open", Duration::from_secs(5), || async { admin_metric(g.admin, series).await == 0.0 })
        .await;
}
