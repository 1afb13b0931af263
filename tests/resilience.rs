//! Retries, timeouts, upstream limits and rate limits, against real upstream servers that fail
//! in each way: refusing connections, resetting, answering 5xx, hanging, closing early.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use support::*;

fn upstream_block(name: &str, addrs: &[String], extra: &str) -> String {
    let eps: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
    format!("[[upstream]]\nname = \"{name}\"\nendpoints = [{}]\n{extra}\n", eps.join(", "))
}

/// An upstream that closes every connection right after reading the request.
async fn closer() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    use tokio::io::AsyncReadExt;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = Arc::clone(&hits);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let h = Arc::clone(&h);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                if s.read(&mut buf).await.unwrap_or(0) > 0 {
                    h.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    (addr, hits)
}

#[tokio::test]
async fn default_policy_hides_a_dead_endpoint_from_gets() {
    let dead = dead_addr();
    let a = upstream(status(200)).await;
    let b = upstream(status(200)).await;
    let routes = upstream_block("u", &[a.authority(), dead.addr().to_string(), b.authority()], "")
        + "[[route]]\nname = \"r\"\nupstream = \"u\"\n";
    let g = gateway(&routes).await;
    for _ in 0..60 {
        let r = get(&g.url("/")).await;
        assert_eq!(r.status, 200, "{:?} {}", r.error(), r.text());
    }
    assert_eq!(a.hits() + b.hits(), 60);
}

/// The default policy's retry sends a request that never left the gateway to another
/// endpoint: with its body whole (HTTP/1 upstreams hand the unsent request back), and over
/// HTTP/2 too (where the request is copied before the first try).
#[tokio::test]
async fn default_policy_resends_bodies_whole_over_http1_and_h2c() {
    for protocol in ["http1", "h2c"] {
        let dead = dead_addr();
        let e = echo("alive").await;
        let routes = upstream_block(
            "u",
            &[dead.addr().to_string(), e.authority()],
            &format!("protocol = \"{protocol}\""),
        ) + "[[route]]\nname = \"r\"\nupstream = \"u\"\n";
        let g = gateway(&routes).await;
        for _ in 0..6 {
            let r =
                send(Request::post(g.url("/")).header("x-mark", "m").body(full("payload")).unwrap()).await;
            assert_eq!(r.status, 200, "{protocol}: {:?} {}", r.error(), r.text());
            assert_eq!(r.json()["body_bytes"], 7, "{protocol}: the body arrives whole");
            assert_eq!(r.json()["headers"]["x-mark"], "m", "{protocol}");
        }
        let m = get(&g.admin_url("/metrics")).await.text();
        assert!(
            m.contains(r#"switchyard_retries_total{route="r",reason="connect-failure"}"#),
            "{protocol}: {m}"
        );
    }
}

#[tokio::test]
async fn gets_retry_on_5xx_up_to_attempts_never_on_the_same_endpoint() {
    let ups = [upstream(status(503)).await, upstream(status(503)).await, upstream(status(503)).await];
    let addrs: Vec<String> = ups.iter().map(|u| u.authority()).collect();
    let routes = upstream_block("u", &addrs, "")
        + "[[route]]\nname = \"r\"\nupstream = \"u\"\n[route.retry]\nattempts = 2\non = [\"5xx\"]\nbackoff = \"1ms\"\n";
    let g = gateway(&routes).await;
    let r = get(&g.url("/")).await;
    assert_eq!(r.status, 503, "the upstream's last answer is returned as it is");
    assert_eq!(r.error(), None);
    // One try and two retries, each on a different endpoint.
    assert_eq!(ups.iter().map(|u| u.hits()).collect::<Vec<_>>(), [1, 1, 1]);
    let m = get(&g.admin_url("/metrics")).await.text();
    assert!(m.contains(r#"switchyard_retries_total{route="r",reason="5xx"} 2"#), "{m}");
}

#[tokio::test]
async fn post_is_not_retried_on_5xx_but_is_on_connect_failure() {
    let bad = upstream(status(500)).await;
    let routes = upstream_block("u", &[bad.authority()], "")
        + "[[route]]\nname = \"r\"\nupstream = \"u\"\n[route.retry]\nattempts = 3\non = [\"5xx\", \"connect-failure\"]\nbackoff = \"1ms\"\n";
    let g = gateway(&routes).await;
    let r = send(Request::post(g.url("/")).body(full("payload")).unwrap()).await;
    assert_eq!(r.status, 500);
    assert_eq!(bad.hits(), 1);

    let dead = dead_addr();
    let e = echo("alive").await;
    let routes = upstream_block("u", &[dead.addr().to_string(), e.authority()], "")
        + "[[route]]\nname = \"r\"\nupstream = \"u\"\n[route.retry]\nattempts = 3\non = [\"5xx\", \"connect-failure\"]\nbackoff = \"1ms\"\n";
    let g = gateway(&routes).await;
    for _ in 0..4 {
        let r = send(Request::post(g.url("/")).body(full("payload")).unwrap()).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["body_bytes"], 7, "the replayed body arrives whole");
    }
}

#[tokio::test]
async fn a_body_over_max_replay_is_not_retried_once_sent() {
    let a = upstream(status(503)).await;
    let b = upstream(status(503)).await;
    let routes = upstream_block("u", &[a.authority(), b.authority()], "")
        + "[[route]]\nname = \"r\"\nupstream = \"u\"\n[route.retry]\nattempts = 1\non = [\"5xx\"]\nbackoff = \"1ms\"\nmax_replay_body_bytes = 8\n";
    let g = gateway(&routes).await;
    let r = send(Request::put(g.url("/")).body(full("0123456789abcdef")).unwrap()).await;
    assert_eq!(r.status, 503);
    assert_eq!(a.hits() + b.hits(), 1, "not replayed");
    let r = send(Request::put(g.url("/")).body(full("small")).unwrap()).await;
    assert_eq!(r.status, 503);
    assert_eq!(a.hits() + b.hits(), 3, "a small body is replayed");
}

/// An upstream that answers only after 10 s (every request, or those for `path`; others at
/// once), so that the timeout under test always fires first.
async fn late_upstream(path: Option<&'static str>) -> FakeUpstream {
    upstream(move |req| async move {
        if path.is_none_or(|p| req.uri().path() == p) {
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
        Response::new(full("late"))
    })
    .await
}

#[tokio::test]
async fn per_try_timeout_then_success_on_the_next_endpoint() {
    let slow = late_upstream(None).await;
    let fast = upstream(status(200)).await;
    let routes = upstream_block("u", &[slow.authority(), fast.authority()], "")
        + "[[route]]\nname = \"r\"\nupstream = \"u\"\n[route.retry]\nattempts = 1\non = [\"timeout\"]\nper_try_timeout = \"100ms\"\nbackoff = \"1ms\"\n";
    let g = gateway(&routes).await;
    for _ in 0..4 {
        assert_eq!(get(&g.url("/")).await.status, 200);
    }
    assert_eq!(fast.hits(), 4);
}

/// An HTTP/1 connection keeps one route timer between its requests and lets it go once it has
/// fired (idle past the last deadline, or a request that timed out); the next request on that
/// connection makes a new one, which still fires. On one client connection: a fast request, an
/// idle wait past the 300 ms timeout, two slow requests (504 `timeout` each: the second after
/// the first's timer fired and went), a fast one again.
#[tokio::test]
async fn a_connection_idle_past_its_last_deadline_still_times_out_its_next_request() {
    use http_body_util::BodyExt;
    let up = late_upstream(Some("/slow")).await;
    let routes = upstream_block("u", &[up.authority()], "")
        + "[[route]]\nname = \"r\"\nupstream = \"u\"\ntimeout = \"300ms\"\n";
    let g = gateway(&routes).await;
    let stream = tokio::net::TcpStream::connect(g.addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let mut on_the_connection = async |path: &str| {
        send.ready().await.expect("the connection is still open");
        let req = Request::get(path).header("host", "localhost").body(full("")).unwrap();
        let res = tokio::time::timeout(Duration::from_secs(5), send.send_request(req))
            .await
            .expect("answered within 5 s")
            .unwrap();
        let error = res.headers().get("x-switchyard-error").map(|v| v.to_str().unwrap().to_owned());
        let status = res.status();
        res.into_body().collect().await.unwrap();
        (status, error)
    };
    assert_eq!(on_the_connection("/a").await, (StatusCode::OK, None));
    // Past the first request's deadline: its timer fires with the connection idle, and goes.
    tokio::time::sleep(Duration::from_millis(600)).await;
    for _ in 0..2 {
        assert_eq!(
            on_the_connection("/slow").await,
            (StatusCode::GATEWAY_TIMEOUT, Some("timeout".to_owned()))
        );
    }
    assert_eq!(on_the_connection("/b").await, (StatusCode::OK, None));
}

#[tokio::test]
async fn route_timeout_covers_retries_and_gives_504() {
    let slow = late_upstream(None).await;
    let routes = upstream_block("u", &[slow.authority()], "")
        + "[[route]]\nname = \"r\"\nupstream = \"u\"\ntimeout = \"300ms\"\n[route.retry]\nattempts = 5\non = [\"timeout\"]\nper_try_timeout = \"200ms\"\nbackoff = \"1ms\"\n";
    let g = gateway(&routes).await;
    let started = std::time::Instant::now();
    let r = get(&g.url("/")).await;
    assert_eq!((r.status.as_u16(), r.error()), (504, Some("timeout")));
    assert!(slow.hits() <= 2, "the route timeout stopped the retries ({} tries)", slow.hits());
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn resets_and_early_closes_are_retried_for_gets() {
    let (c, closer_hits) = closer().await;
    let e = echo("ok").await;
    let routes = upstream_block("u", &[c.to_string(), e.authority()], "")
        + "[[route]]\nname = \"r\"\nupstream = \"u\"\n[route.retry]\nattempts = 1\non = [\"reset\"]\nbackoff = \"1ms\"\n";
    let g = gateway(&routes).await;
    for _ in 0..6 {
        let r = get(&g.url("/")).await;
        assert_eq!(r.status, 200, "{:?}", r.error());
    }
    assert!(closer_hits.load(Ordering::SeqCst) >= 1);
    // Without a retry the reset is a 502 upstream_reset.
    let routes = upstream_block("c", &[c.to_string()], "") + "[[route]]\nname = \"r\"\nupstream = \"c\"\n";
    let g = gateway(&routes).await;
    let r = get(&g.url("/")).await;
    assert_eq!((r.status.as_u16(), r.error()), (502, Some("upstream_reset")));
}

#[tokio::test]
async fn the_budget_holds_retries_near_its_ratio() {
    let bad = upstream(status(503)).await;
    let routes = upstream_block("u", &[bad.authority()], "")
        + "[[route]]\nname = \"r\"\nupstream = \"u\"\n[route.retry]\nattempts = 3\non = [\"5xx\"]\nbackoff = \"1ms\"\nbudget = 0.1\n";
    let g = gateway(&routes).await;
    let c = client();
    let n = 600;
    for _ in 0..n {
        let r = send_with(&c, Request::get(g.url("/")).body(full("")).unwrap()).await;
        assert_eq!(r.status, 503);
    }
    let retries = bad.hits() - n;
    // 10% of the requests, plus the floor's reserve of 10/s over the 10 s window.
    assert!(retries <= n / 10 + 100, "{retries} retries");
    assert!(retries >= n / 10, "{retries} retries");
}

#[tokio::test]
async fn max_requests_sheds_load_with_retry_after_while_slow_requests_complete() {
    let slow = upstream(|_| async {
        tokio::time::sleep(Duration::from_millis(600)).await;
        Response::new(full("done"))
    })
    .await;
    let routes = upstream_block("u", &[slow.authority()], "[upstream.limits]\nmax_requests = 2\n")
        + "[[route]]\nname = \"r\"\nupstream = \"u\"\n";
    let g = gateway(&routes).await;
    let url = g.url("/");
    let inflight: Vec<_> = (0..2)
        .map(|_| {
            tokio::spawn({
                let u = url.clone();
                async move { get(&u).await }
            })
        })
        .collect();
    eventually("two requests in flight", Duration::from_secs(5), || async { slow.hits() == 2 }).await;
    let r = get(&url).await;
    assert_eq!((r.status.as_u16(), r.error()), (503, Some("overloaded")));
    assert!(r.header("retry-after").is_some());
    for t in inflight {
        assert_eq!(t.await.unwrap().status, 200);
    }
    let m = get(&g.admin_url("/metrics")).await.text();
    assert!(
        m.contains(r#"switchyard_upstream_overloaded_total{upstream="u",limit="max_requests"} 1"#),
        "{m}"
    );
}

#[tokio::test]
async fn max_pending_requests_overflows_when_connections_are_all_busy() {
    let slow = upstream(|_| async {
        tokio::time::sleep(Duration::from_millis(800)).await;
        Response::new(full("done"))
    })
    .await;
    let routes = upstream_block(
        "u",
        &[slow.authority()],
        "connect_timeout = \"5s\"\n[upstream.limits]\nmax_connections = 1\nmax_pending_requests = 1\n",
    ) + "[[route]]\nname = \"r\"\nupstream = \"u\"\n";
    let g = gateway(&routes).await;
    let url = g.url("/");
    let first = tokio::spawn({
        let u = url.clone();
        async move { get(&u).await }
    });
    eventually("one request in flight", Duration::from_secs(5), || async { slow.hits() == 1 }).await;
    // The second waits for the only connection (pending) …
    let second = tokio::spawn({
        let u = url.clone();
        async move { get(&u).await }
    });
    let m = g.admin_url("/metrics");
    // … and the third finds the pending queue full.
    let mut third = None;
    for _ in 0..50 {
        let r = get(&url).await;
        if r.status == StatusCode::SERVICE_UNAVAILABLE {
            third = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let third = third.expect("a request over max_pending_requests is refused");
    assert_eq!(third.error(), Some("overloaded"));
    assert!(third.header("retry-after").is_some());
    assert_eq!(first.await.unwrap().status, 200);
    assert_eq!(second.await.unwrap().status, 200);
    assert!(get(&m).await.text().contains(r#"limit="max_pending_requests""#));
}

#[tokio::test]
async fn max_retries_caps_concurrent_retries() {
    let slow_fail = upstream(|_| async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut r = Response::new(full(""));
        *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        r
    })
    .await;
    let routes = upstream_block("u", &[slow_fail.authority()], "[upstream.limits]\nmax_retries = 1\n")
        + "[[route]]\nname = \"r\"\nupstream = \"u\"\n[route.retry]\nattempts = 1\non = [\"5xx\"]\nbackoff = \"1ms\"\nbudget = 1.0\n";
    let g = gateway(&routes).await;
    let url = g.url("/");
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn({
                let u = url.clone();
                async move { get(&u).await }
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().status, 503);
    }
    // 4 first tries; only one retry could be in flight at once, and they all overlapped.
    assert!(slow_fail.hits() < 8, "{} upstream hits", slow_fail.hits());
    let m = get(&g.admin_url("/metrics")).await.text();
    assert!(m.contains(r#"limit="max_retries""#), "{m}");
}

#[tokio::test]
async fn rate_limit_by_client_ip_and_by_header() {
    let routes = r#"
[[route]]
name = "by-ip"
path = "/ip"
respond = { status = 200 }
rate_limit = { requests_per_second = 1, burst = 3, key = "client_ip" }
[[route]]
name = "by-header"
path = "/hdr"
respond = { status = 200 }
rate_limit = { requests_per_second = 1, burst = 2, key = "header:x-api-key" }
"#;
    let g = gateway(routes).await;
    let codes: Vec<u16> = {
        let mut v = Vec::new();
        for _ in 0..5 {
            v.push(get(&g.url("/ip")).await.status.as_u16());
        }
        v
    };
    assert_eq!(codes, [200, 200, 200, 429, 429]);
    let r = get(&g.url("/ip")).await;
    assert_eq!(r.error(), Some("rate_limited"));
    assert_eq!(r.header("retry-after"), Some("1"));

    let with = |k: &'static str| Request::get(g.url("/hdr")).header("x-api-key", k).body(full("")).unwrap();
    assert_eq!(send(with("a")).await.status, 200);
    assert_eq!(send(with("a")).await.status, 200);
    assert_eq!(send(with("a")).await.status, 429);
    assert_eq!(send(with("b")).await.status, 200, "another key has its own bucket");
    let m = get(&g.admin_url("/metrics")).await.text();
    assert!(m.contains(r#"switchyard_rate_limited_total{route="by-ip"} 3"#), "{m}");
    assert!(m.contains(r#"switchyard_rate_limited_total{route="by-header"} 1"#), "{m}");
}

#[tokio::test]
async fn a_timed_out_attempt_releases_its_connection_and_request_slot() {
    // One connection and one request slot: if a timed-out attempt leaked either, the next
    // request would be refused with 503 overloaded instead of timing out again.
    let hang = upstream(|_| async {
        tokio::time::sleep(Duration::from_secs(30)).await;
        Response::new(full("late"))
    })
    .await;
    let routes = upstream_block(
        "u",
        &[hang.authority()],
        "connect_timeout = \"2s\"\n[upstream.limits]\nmax_connections = 1\nmax_requests = 1\nmax_pending_requests = 0\n",
    ) + "[[route]]\nname = \"r\"\nupstream = \"u\"\n[route.retry]\nattempts = 0\nper_try_timeout = \"100ms\"\n";
    let g = gateway(&routes).await;
    for i in 0..5 {
        let r = get(&g.url("/")).await;
        assert_eq!((r.status.as_u16(), r.error()), (504, Some("timeout")), "request {i}");
    }
    // Each timed-out attempt's connection was closed, so each request opened a new one.
    assert_eq!(hang.conns(), 5);
    let m = get(&g.admin_url("/metrics")).await.text();
    assert!(!m.contains("switchyard_upstream_overloaded_total{"), "{m}");
}
