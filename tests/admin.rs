//! The admin API (its paths, bearer token, connection cap), drain, and the metric names.

mod support;

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const RESPOND: &str = "[[route]]\nname = \"r\"\nrespond = { status = 200 }\n";

/// The admin paths that need the token when there is one, with the status each answers.
const GUARDED: [(Method, &str, u16); 7] = [
    (Method::GET, "/metrics", 200),
    (Method::GET, "/config", 200),
    (Method::GET, "/routes", 200),
    (Method::GET, "/upstreams", 200),
    (Method::POST, "/reload", 200),
    (Method::GET, "/nope", 404),
    (Method::POST, "/routes", 405),
];

/// `method path` on the admin API, with `authorization: auth` when given.
async fn admin(g: &TestGateway, method: &Method, path: &str, auth: Option<&str>) -> Got {
    let mut req = Request::builder().method(method.clone()).uri(g.admin_url(path));
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    send(req.body(full("")).unwrap()).await
}

/// A gateway whose admin API wants the token held by `var` (unique per test: tests run on
/// parallel threads and share the process environment).
async fn gateway_with_token(var: &str, token: &str) -> TestGateway {
    std::env::set_var(var, token);
    let admin = format!("[admin]\nlisten = \"127.0.0.1:0\"\ntoken_env = \"{var}\"\n");
    gateway_with(&admin, &[("r.toml", RESPOND)]).await
}

#[tokio::test]
async fn the_dashboard_page_is_open_holds_no_data_and_locks_the_browser_down() {
    let token = "page-token_1";
    let g = gateway_with_token("SWITCHYARD_TEST_ADMIN_TOKEN_PAGE", token).await;
    let r = admin(&g, &Method::GET, "/", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    let page = r.text();
    assert!(page.contains("<meta name=\"switchyard-token\" content=\"required\">"));
    // The page is the program, not the data: no route name, no token.
    assert!(!page.contains("name = \"r\"") && !page.contains("\"r\"") && !page.contains(token));
    let csp = r.header("content-security-policy").unwrap();
    for part in ["default-src 'none'", "connect-src 'self'", "frame-ancestors 'none'", "script-src 'sha256-"]
    {
        assert!(csp.contains(part), "{csp}");
    }
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    // Only GET: the page is never a way to write.
    assert_eq!(admin(&g, &Method::POST, "/", Some(&format!("Bearer {token}"))).await.status, 405);
    // Its data still needs the token, and the certificates list is there (empty: no TLS).
    assert_eq!(admin(&g, &Method::GET, "/config", None).await.status, 401);
    let cfg = admin(&g, &Method::GET, "/config", Some(&format!("Bearer {token}"))).await.json();
    assert_eq!(cfg["certificates"], serde_json::json!([]));
    // Without a token the page does not ask for one.
    let open = gateway(RESPOND).await;
    assert!(get(&open.admin_url("/")).await.text().contains("content=\"none\""));
}

#[tokio::test]
async fn without_a_token_only_loopback_host_names_are_answered() {
    // A page of another site, its name re-pointed at 127.0.0.1 (DNS rebinding), must not be
    // able to read the admin API through the visitor's browser.
    let g = gateway(RESPOND).await;
    let port = g.admin.port();
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "LOCALHOST".to_owned(),
        "[::1]:9901".to_owned(),
    ] {
        let r =
            send(Request::get(g.admin_url("/config")).header("host", &host).body(full("")).unwrap()).await;
        assert_eq!(r.status, 200, "Host: {host}");
    }
    for host in [
        format!("evil.example:{port}"),
        "127.0.0.1.nip.io".to_owned(),
        "[::1".to_owned(),
        "localhost.evil".to_owned(),
    ] {
        for path in ["/", "/config", "/routes", "/stats", "/metrics"] {
            let r = send(Request::get(g.admin_url(path)).header("host", &host).body(full("")).unwrap()).await;
            assert_eq!((r.status.as_u16(), r.error()), (400, Some("bad_request")), "Host: {host} {path}");
        }
        let r =
            send(Request::post(g.admin_url("/reload")).header("host", &host).body(full("")).unwrap()).await;
        assert_eq!((r.status.as_u16(), r.error()), (400, Some("bad_request")), "Host: {host} POST /reload");
        // Probes carry no data and stay open.
        let r =
            send(Request::get(g.admin_url("/healthz")).header("host", &host).body(full("")).unwrap()).await;
        assert_eq!(r.status, 200);
    }
    // With a token, the token is the guard, whatever the name.
    let t = gateway_with_token("SWITCHYARD_TEST_ADMIN_TOKEN_HOST", "host-token").await;
    let r = send(
        Request::get(t.admin_url("/config"))
            .header("host", "admin.example.com")
            .header("authorization", "Bearer host-token")
            .body(full(""))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200);
}

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
async fn drain_closes_an_idle_keep_alive_connection_at_once_not_at_drain_timeout() {
    let extra = "[gateway]\nroutes_dir = \"routes\"\ndrain_timeout = \"60s\"\n";
    let mut g =
        gateway_with(extra, &[("r.toml", "[[route]]\nname = \"r\"\nrespond = { status = 204 }\n")]).await;
    let mut s = TcpStream::connect(g.addr).await.unwrap();
    let res = raw_exchange(&mut s, b"GET / HTTP/1.1\r\nhost: t\r\n\r\n").await.expect("an answer");
    assert!(res.starts_with("HTTP/1.1 204"), "{res}");

    let drain = tokio::spawn(g.gw.take().unwrap().drain());
    // The kept-alive connection, with nothing in flight, is closed as the drain begins.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the idle connection stayed open during the drain");
    let clean = tokio::time::timeout(Duration::from_secs(20), drain).await.unwrap().unwrap();
    assert!(clean, "nothing was left for drain_timeout to cut");
}

#[tokio::test]
async fn at_drain_timeout_a_request_still_waiting_for_its_upstream_is_cut() {
    // An upstream that accepts and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = silent.local_addr().unwrap();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let n = Arc::clone(&accepted);
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = silent.accept().await {
            conns.push(c);
            n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let extra = "[gateway]\nroutes_dir = \"routes\"\ndrain_timeout = \"1s\"\n";
    let mut g = gateway_with(extra, &[("r.toml", &one_upstream("silent", up))]).await;
    let mut s = TcpStream::connect(g.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n").await.unwrap();
    eventually("the request reaches the upstream", Duration::from_secs(5), || async {
        accepted.load(std::sync::atomic::Ordering::SeqCst) == 1
    })
    .await;
    let drain = tokio::spawn(g.gw.take().unwrap().drain());
    let clean = tokio::time::timeout(Duration::from_secs(20), drain).await.unwrap().unwrap();
    assert!(!clean, "the request could not finish within drain_timeout");
    // Its connection was closed with it: the client reads the end, with no response.
    let mut got = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut got)).await;
    assert!(closed.is_ok(), "the connection stayed open past drain_timeout");
    assert_eq!(String::from_utf8_lossy(&got), "");
    held.abort();
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
    let mut s = TcpStream::connect(g.addr).await.unwrap();
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

#[tokio::test]
async fn without_a_token_every_path_is_open() {
    let g = gateway(RESPOND).await;
    for auth in [None, Some("Bearer anything")] {
        for path in ["/healthz", "/ready"] {
            assert_eq!(admin(&g, &Method::GET, path, auth).await.status, 200, "{path}");
        }
        for (method, path, status) in &GUARDED {
            let r = admin(&g, method, path, auth).await;
            assert_eq!(r.status, *status, "{method} {path} with {auth:?}");
            assert_eq!(r.error(), None);
        }
    }
}

#[tokio::test]
async fn with_a_token_only_healthz_and_ready_are_open() {
    let token = "s3cret.Admin-token_42";
    let g = gateway_with_token("SWITCHYARD_TEST_ADMIN_TOKEN_PATHS", token).await;
    let last_byte_differs = format!("Bearer {}3", &token[..token.len() - 1]);
    let prefix = format!("Bearer {}", &token[..token.len() - 1]);
    let longer = format!("Bearer {token}x");
    let not_bearer = format!("Basic {token}");
    let wrong: [Option<&str>; 7] = [
        None,
        Some("Bearer wrong"),
        Some(&last_byte_differs),
        Some(&prefix),
        Some(&longer),
        Some(&not_bearer),
        Some(token),
    ];
    let right = format!("Bearer {token}");

    for path in ["/healthz", "/ready"] {
        for auth in wrong.iter().copied().chain([Some(right.as_str())]) {
            assert_eq!(admin(&g, &Method::GET, path, auth).await.status, 200, "{path} with {auth:?}");
        }
    }
    for (method, path, status) in &GUARDED {
        for auth in wrong {
            let r = admin(&g, method, path, auth).await;
            assert_eq!(r.status, 401, "{method} {path} with {auth:?}");
            assert_eq!(r.error(), Some("unauthorized"));
            assert_eq!(r.header("www-authenticate"), Some("Bearer"));
            assert!(r.header("content-type").unwrap().starts_with("text/plain"));
            assert_eq!(r.text(), "401 unauthorized\n");
        }
        let r = admin(&g, method, path, Some(&right)).await;
        assert_eq!(r.status, *status, "{method} {path} with the token: {}", r.text());
        assert_eq!(r.error(), None);
    }
    // The refused reloads did not run; the accepted one did. The scheme's case does not matter.
    let reloads = "switchyard_config_reloads_total{result=\"success\"}";
    let m = admin(&g, &Method::GET, "/metrics", Some(&format!("bearer {token}"))).await;
    assert_eq!(metric(&m.text(), reloads), Some(1.0), "{}", m.text());
}

#[tokio::test]
async fn the_65th_admin_connection_waits_until_one_of_64_closes() {
    let g = gateway(RESPOND).await;
    let healthz = b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n";
    // 64 connections, each answered once (so each is accepted and held), then kept open. They
    // stay well within the admin header timeout (10 s), which would close them when idle.
    let mut held = Vec::new();
    for i in 0..64 {
        let mut s = TcpStream::connect(g.admin).await.unwrap();
        let r = raw_exchange(&mut s, healthz).await.unwrap_or_else(|| panic!("connection {i} answered"));
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        held.push(s);
    }
    // The kernel completes the 65th handshake, but nobody serves it.
    let mut extra = TcpStream::connect(g.admin).await.unwrap();
    extra.write_all(healthz).await.unwrap();
    let mut buf = [0u8; 256];
    let early = tokio::time::timeout(Duration::from_millis(500), extra.read(&mut buf)).await;
    assert!(early.is_err(), "the 65th connection got an answer while 64 were open: {early:?}");

    drop(held.pop());
    let n = tokio::time::timeout(Duration::from_secs(5), extra.read(&mut buf))
        .await
        .expect("the 65th connection is served once one of the 64 closes")
        .unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
}

/// Whether a fresh connection to `addr` gets a 200 for `GET /` (false when the connection is
/// refused, closed, or left unanswered for a second).
async fn served_on_a_new_connection(addr: std::net::SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect(addr).await else { return false };
    let answer = tokio::time::timeout(
        Duration::from_secs(1),
        raw_exchange(&mut s, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"),
    )
    .await;
    matches!(answer, Ok(Some(r)) if r.starts_with("HTTP/1.1 200"))
}

#[tokio::test]
async fn drain_delay_keeps_serving_new_connections_with_ready_503_then_stops_accepting() {
    let gateway = "[gateway]\nroutes_dir = \"routes\"\ndrain_delay = \"2s\"\ndrain_timeout = \"5s\"\n";
    let mut g = gateway_with(gateway, &[("r.toml", RESPOND)]).await;
    assert!(served_on_a_new_connection(g.addr).await);

    let drain = tokio::spawn(g.gw.take().unwrap().drain());
    eventually("/ready turns 503", Duration::from_secs(5), || async {
        get(&g.admin_url("/ready")).await.status == 503
    })
    .await;
    // Within the delay: /ready says 503, and the listener still accepts and serves.
    assert!(served_on_a_new_connection(g.addr).await, "a new connection is served during the delay");
    assert_eq!(get(&g.admin_url("/ready")).await.status, 503);
    assert!(!drain.is_finished());

    // After it: new connections are no longer served, and the drain ends cleanly.
    eventually("the listener stops serving new connections", Duration::from_secs(10), || async {
        !served_on_a_new_connection(g.addr).await
    })
    .await;
    let clean = tokio::time::timeout(Duration::from_secs(10), drain).await.unwrap().unwrap();
    assert!(clean, "nothing was in flight");
}
