//! Faults without outages: only upstream-caused failures count against an endpoint, and a
//! response the upstream cuts short is logged and counted as `upstream_reset`.

mod support;

use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The sum of `switchyard_upstream_requests_total` samples with `outcome`.
fn outcome(metrics: &str, outcome: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("switchyard_upstream_requests_total{"))
        .filter(|l| l.contains(&format!("outcome=\"{outcome}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn aborted_and_oversized_uploads_never_count_against_the_endpoint() {
    let e = echo("e").await;
    let routes = format!(
        r#"
[[upstream]]
name = "u"
endpoints = ["{}"]
[upstream.outlier]
consecutive_failures = 2
[[route]]
name = "small"
path = "/small"
upstream = "u"
max_request_body_bytes = "1KiB"
[route.retry]
attempts = 0
[[route]]
name = "r"
upstream = "u"
[route.retry]
attempts = 0
"#,
        e.addr
    );
    let g = gateway(&routes).await;
    for _ in 0..5 {
        // A chunked upload that the client abandons half-way.
        let mut s = TcpStream::connect(g.addr).await.unwrap();
        s.write_all(b"POST /up HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n400\r\n")
            .await
            .unwrap();
        s.write_all(&[b'x'; 512]).await.unwrap();
        drop(s);
        // An undeclared (chunked) body over the route's limit.
        let mut s = TcpStream::connect(g.addr).await.unwrap();
        s.write_all(b"POST /small HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n").await.unwrap();
        for _ in 0..4 {
            let _ = s.write_all(b"400\r\n").await;
            let _ = s.write_all(&[b'x'; 1024]).await;
            let _ = s.write_all(b"\r\n").await;
        }
        let _ = s.write_all(b"0\r\n\r\n").await;
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        assert!(
            String::from_utf8_lossy(&out).starts_with("HTTP/1.1 413"),
            "{}",
            String::from_utf8_lossy(&out)
        );
    }
    // Let the aborted uploads finish failing inside the gateway.
    eventually("the aborted uploads are done", Duration::from_secs(5), || async {
        endpoint_view(&g, "u", &e.addr.to_string()).await["in_flight"] == 0
    })
    .await;
    let view = endpoint_view(&g, "u", &e.addr.to_string()).await;
    assert!(
        view["ejected_until"].is_null(),
        "a healthy endpoint was ejected for the clients' faults: {view}"
    );
    let m = get(&g.admin_url("/metrics")).await.text();
    for bad in ["reset", "connect_failed", "timeout", "5xx"] {
        assert_eq!(outcome(&m, bad), 0.0, "outcome {bad}: {m}");
    }
    assert_eq!(get(&g.url("/after")).await.status, 200);
}

#[tokio::test]
async fn a_response_cut_short_is_logged_and_counted_as_upstream_reset() {
    // A raw upstream: 3 of 100 promised body bytes, then it closes.
    let up = raw_upstream(|_| (b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nabc".to_vec(), false)).await;
    let addr = up.addr;
    let routes = format!(
        "[[upstream]]\nname = \"u\"\nendpoints = [\"{addr}\"]\n[[route]]\nname = \"r\"\nupstream = \"u\"\n"
    );
    let g =
        gateway_with("[access_log]\nenabled = true\npath = \"access.log\"\n", &[("r.toml", &routes)]).await;
    let res = client().request(http::Request::get(g.url("/cut")).body(full("")).unwrap()).await.unwrap();
    assert_eq!(res.status(), 200);
    let body =
        tokio::time::timeout(Duration::from_secs(10), http_body_util::BodyExt::collect(res.into_body()))
            .await;
    assert!(body.unwrap().is_err(), "the client sees the body cut short");

    let log = g.dir.path().join("access.log");
    let mut line = serde_json::Value::Null;
    eventually("the access log line", Duration::from_secs(10), || {
        line = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok().filter(|j| j["path"] == "/cut"))
            .unwrap_or_default();
        let found = !line.is_null();
        async move { found }
    })
    .await;
    assert_eq!(line["status"], 200, "{line}");
    assert_eq!(line["error"], "upstream_reset", "{line}");
    let m = get(&g.admin_url("/metrics")).await.text();
    assert_eq!(outcome(&m, "reset"), 1.0, "{m}");
}

#[tokio::test]
async fn rate_limit_buckets_hold_for_requests_without_the_key_and_survive_a_reload() {
    let route = |burst: u32, extra: &str| {
        format!(
            "[[route]]\nname = \"r\"\nrespond = {{ status = 200 }}\n\
             rate_limit = {{ requests_per_second = 0.001, burst = {burst}, key = \"header:x-user\" }}\n{extra}"
        )
    };
    let g = gateway(&route(1, "")).await;
    let code = |user: Option<&'static str>| {
        let url = g.url("/");
        async move {
            let mut b = http::Request::get(url);
            if let Some(u) = user {
                b = b.header("x-user", u);
            }
            send(b.body(full("")).unwrap()).await.status.as_u16()
        }
    };
    // Without the header: one shared bucket, not unlimited.
    assert_eq!(code(None).await, 200);
    assert_eq!(code(None).await, 429);
    assert_eq!(code(Some("alice")).await, 200);
    assert_eq!(code(Some("alice")).await, 429);

    // A reload that leaves the route's rate_limit as it was keeps every bucket.
    g.write_routes(
        "routes.toml",
        &route(1, "[[route]]\nname = \"other\"\npath = \"/other\"\nrespond = { status = 204 }\n"),
    );
    g.gateway().reload().await.unwrap();
    assert_eq!(get(&g.url("/other")).await.status, 204, "the reload took effect");
    assert_eq!(code(None).await, 429, "buckets survive a reload that did not touch the limit");
    assert_eq!(code(Some("alice")).await, 429);

    // Changing the limit starts afresh.
    g.write_routes("routes.toml", &route(2, ""));
    g.gateway().reload().await.unwrap();
    assert_eq!(code(None).await, 200);
}
