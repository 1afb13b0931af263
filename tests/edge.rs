//! Edge safety: one canonical request before routing (every trick that walked around a deny
//! route, each asserting the upstream was not reached or got the canonical request), and a
//! timeout on every wait (each firing and freeing its connection and `max_requests` slot).

mod support;

use std::time::{Duration, Instant};

use http::{Request, Response};
use http_body_util::BodyExt;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A deny route on `/admin` (403 from the gateway itself) in front of a catch-all to `up`.
fn deny_admin(up: std::net::SocketAddr) -> String {
    format!(
        r#"
[[upstream]]
name = "app"
endpoints = ["{up}"]

[[route]]
name = "deny-admin"
path_prefix = "/admin"
respond = {{ status = 403, body = "denied" }}

[[route]]
name = "catch-all"
upstream = "app"
"#
    )
}

/// One request on a fresh raw connection; the whole answer (until close or 5 s).
async fn raw_request(addr: std::net::SocketAddr, req: &str) -> String {
    raw(addr, req.as_bytes(), Duration::from_secs(5)).await
}

fn status_of(answer: &str) -> u16 {
    answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

#[tokio::test]
async fn every_spelling_of_a_denied_path_is_denied_and_never_reaches_the_upstream() {
    let app = upstream(status(200)).await;
    let g = gateway(&deny_admin(app.addr)).await;
    for path in [
        "/admin",
        "/x/../admin",
        "//admin",
        "/%61dmin",
        "/%61%64%6d%69%6e/",
        "/./admin",
        "/admin/.",
        "/x/%2e%2e/admin",
        "///x//..//admin/secret",
        "/admin/x/../../admin",
    ] {
        let a = raw_request(g.addr, &format!("GET {path} HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n"))
            .await;
        assert_eq!(status_of(&a), 403, "{path}: {a}");
        assert!(a.ends_with("denied"), "{path}: {a}");
    }
    // Spellings that cannot be routed safely are refused outright.
    for path in
        ["/../admin", "/%2e%2e/admin", "/x/..%2Fadmin", "/%2Fadmin", "/a%5cadmin", "/a\\..\\admin", "/%zz"]
    {
        let a = raw_request(g.addr, &format!("GET {path} HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n"))
            .await;
        assert_eq!(status_of(&a), 400, "{path}: {a}");
        assert!(a.contains("x-switchyard-error: bad_request"), "{path}: {a}");
    }
    assert_eq!(app.hits(), 0, "no spelling of /admin reached the catch-all's upstream");
    // And the catch-all still works.
    assert_eq!(get(&g.url("/public")).await.status, 200);
    assert_eq!(app.hits(), 1);
}

#[tokio::test]
async fn the_upstream_receives_the_canonical_path_and_rewrites_apply_to_it() {
    let e = echo("e").await;
    let routes = format!(
        r#"
[[upstream]]
name = "e"
endpoints = ["{}"]

[[route]]
name = "deny-admin"
path_prefix = "/admin"
respond = {{ status = 403 }}

[[route]]
name = "api"
path_prefix = "/api"
rewrite_prefix = "/v1"
upstream = "e"

[[route]]
name = "rest"
upstream = "e"
"#,
        e.addr
    );
    let g = gateway(&routes).await;
    let seen = |r: &Got| r.json()["path"].as_str().unwrap().to_owned();
    let r = get(&g.url("/api/x/../y/%7euser?a=%2F..")).await;
    assert_eq!(r.status, 200);
    assert_eq!(seen(&r), "/v1/y/~user");
    assert_eq!(r.json()["query"], "a=%2F..", "the query string is never changed");
    // The trick of the issue: `/api/../admin/secret` is `/admin/secret`, denied, never `/v1/../admin/secret`.
    assert_eq!(get(&g.url("/api/../admin/secret")).await.status, 403);
    let r = get(&g.url("/a//b/./c/%3a")).await;
    assert_eq!(seen(&r), "/a/b/c/%3A");
}

#[tokio::test]
async fn connection_listed_names_cannot_touch_what_the_gateway_sets() {
    let e = echo("e").await;
    let routes = format!(
        r#"
[[upstream]]
name = "e"
endpoints = ["{}"]

[[route]]
name = "r"
upstream = "e"
host_rewrite = "users.internal"
request_headers = {{ set = {{ "x-env" = "prod" }} }}
"#,
        e.addr
    );
    let g = gateway(&routes).await;
    let r = send(
        Request::get(g.url("/"))
            .header("host", "client.example")
            .header("connection", "host, x-env, x-forwarded-for, x-forwarded-host, x-request-id, x-secret")
            .header("x-env", "client")
            .header("x-secret", "1")
            .header("x-request-id", "abc-123")
            .header("x-forwarded-host", "evil.example")
            .header("x-forwarded-proto", "https")
            .body(full(""))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200);
    let h = &r.json()["headers"];
    assert_eq!(h["host"], "users.internal");
    assert_eq!(h["x-env"], "prod");
    assert_eq!(h["x-forwarded-host"], "client.example", "the routed host, not the client's claim");
    assert_eq!(h["x-forwarded-proto"], "http", "the listener's scheme, not the client's claim");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert!(h["x-request-id"].is_string());
    assert!(h.get("x-secret").is_none(), "a connection-listed client header is still hop-by-hop");
    assert!(h.get("connection").is_none());
}

/// Every field the gateway sets reaches an HTTP/1 upstream once, with the gateway's value:
/// whatever the client sent, and whatever the route's `request_headers` set, under that name.
#[tokio::test]
async fn each_header_the_gateway_sets_reaches_the_upstream_once() {
    const SET: [&str; 5] =
        ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-request-id", "traceparent"];
    let app = upstream(|req: Request<hyper::body::Incoming>| {
        let seen: Vec<String> = SET
            .iter()
            .map(|n| {
                let all: Vec<&str> = req.headers().get_all(*n).iter().map(|v| v.to_str().unwrap()).collect();
                format!("{n}={}", all.join("|"))
            })
            .collect();
        std::future::ready(Response::new(full(seen.join("\n"))))
    })
    .await;
    let routes = format!(
        r#"
[[upstream]]
name = "app"
endpoints = ["{}"]

[[route]]
name = "r"
upstream = "app"
request_headers = {{ set = {{ "x-request-id" = "from-route", "x-forwarded-proto" = "from-route" }} }}
"#,
        app.addr
    );
    let g = gateway(&routes).await;
    let r = send(
        Request::get(g.url("/"))
            .header("host", "client.example")
            .header("x-forwarded-for", "192.0.2.1")
            .header("x-forwarded-for", "192.0.2.2")
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "evil.example")
            .header("x-request-id", "abc-123")
            .header("traceparent", "00-forged")
            .body(full(""))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200);
    let seen = r.text();
    let lines: Vec<&str> = seen.lines().collect();
    assert_eq!(lines[0], "x-forwarded-for=192.0.2.1, 192.0.2.2, 127.0.0.1", "{seen}");
    assert_eq!(lines[1], "x-forwarded-proto=http", "{seen}");
    assert_eq!(lines[2], "x-forwarded-host=client.example", "{seen}");
    assert_eq!(lines[3], "x-request-id=abc-123", "the client's id, as the access log names it: {seen}");
    let tp = lines[4].strip_prefix("traceparent=").unwrap();
    assert!(tp.len() == 55 && !tp.contains('|') && tp != "00-forged", "a new traceparent, once: {seen}");
}

#[tokio::test]
async fn hosts_must_be_one_and_valid_and_connect_is_refused() {
    let app = upstream(status(200)).await;
    let g = gateway(&one_upstream("app", app.addr)).await;
    let cases = [
        (
            "GET / HTTP/1.1\r\nhost: a.example\r\nhost: b.example\r\nconnection: close\r\n\r\n",
            400,
            "bad_request",
        ),
        ("GET / HTTP/1.1\r\nconnection: close\r\n\r\n", 400, "bad_request"),
        ("GET / HTTP/1.1\r\nhost: a.example, b.example\r\nconnection: close\r\n\r\n", 400, "bad_request"),
        ("GET / HTTP/1.1\r\nhost: user@a.example\r\nconnection: close\r\n\r\n", 400, "bad_request"),
        ("GET / HTTP/1.1\r\nhost: a.example:99999\r\nconnection: close\r\n\r\n", 400, "bad_request"),
        (
            "CONNECT a.example:443 HTTP/1.1\r\nhost: a.example:443\r\nconnection: close\r\n\r\n",
            405,
            "method_not_allowed",
        ),
        ("GET ftp://a.example/ HTTP/1.1\r\nhost: a.example\r\nconnection: close\r\n\r\n", 400, "bad_request"),
    ];
    for (req, code, reason) in cases {
        let a = raw(g.addr, req.as_bytes(), Duration::from_secs(2)).await;
        assert_eq!(status_of(&a), code, "{req:?}: {a}");
        assert!(a.contains(&format!("x-switchyard-error: {reason}")), "{req:?}: {a}");
        let id = a.lines().find_map(|l| l.strip_prefix("x-request-id: ")).unwrap_or_default();
        assert_eq!(id.trim().len(), 32, "a refused request still gets a request id: {a}");
    }
    assert_eq!(app.hits(), 0, "no refused request reached the upstream");
    // HTTP/1.0 may omit Host.
    let a = raw(g.addr, b"GET / HTTP/1.0\r\n\r\n", Duration::from_secs(2)).await;
    assert_eq!(status_of(&a), 200, "{a}");
}

#[tokio::test]
async fn an_absolute_form_target_supplies_the_host() {
    let a = echo("a").await;
    let b = echo("b").await;
    let routes = format!(
        r#"
[[upstream]]
name = "a"
endpoints = ["{}"]
[[upstream]]
name = "b"
endpoints = ["{}"]
[[route]]
name = "a"
hosts = ["a.example"]
upstream = "a"
[[route]]
name = "b"
hosts = ["b.example"]
upstream = "b"
"#,
        a.addr, b.addr
    );
    let g = gateway(&routes).await;
    let ans = raw(
        g.addr,
        b"GET http://b.example/x/../p?q=1 HTTP/1.1\r\nhost: a.example\r\nconnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(status_of(&ans), 200, "{ans}");
    let body: serde_json::Value = serde_json::from_str(&ans[ans.find("\r\n\r\n").unwrap() + 4..]).unwrap();
    assert_eq!(body["name"], "b");
    assert_eq!(body["path"], "/p");
    assert_eq!(body["query"], "q=1");
    assert_eq!(body["headers"]["host"], "b.example");
}

#[tokio::test]
async fn http2_authority_and_host_must_agree() {
    let app = upstream(status(200)).await;
    let g = gateway(&one_upstream("app", app.addr)).await;
    let c = h2c_client();
    let ok = send_with(&c, Request::get(g.url("/")).body(full("")).unwrap()).await;
    assert_eq!(ok.status, 200);
    let bad =
        send_with(&c, Request::get(g.url("/")).header("host", "other.example").body(full("")).unwrap()).await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.error(), Some("bad_request"));
    let dotted = send_with(&c, Request::get(g.url("/x/../admin/%2e")).body(full("")).unwrap()).await;
    assert_eq!(dotted.status, 200);
    assert_eq!(app.hits(), 2, "the mismatched request never reached the upstream");
}

// === timeouts ===

/// An upstream route with `[upstream.limits] max_requests = 1`, and the gateway's `[limits]`
/// and the upstream's own keys from the arguments.
async fn one_slot(up: std::net::SocketAddr, limits: &str, upstream_keys: &str) -> TestGateway {
    let routes = format!(
        "[[upstream]]\nname = \"u\"\nendpoints = [\"{up}\"]\n{upstream_keys}\n[upstream.limits]\nmax_requests = 1\n\
         [[route]]\nname = \"r\"\nupstream = \"u\"\n[route.retry]\nattempts = 0\n"
    );
    gateway_with(&format!("[limits]\n{limits}\n"), &[("r.toml", &routes)]).await
}

/// The slot is free again: a request that the upstream answers at once gets 200 (not 503
/// `overloaded`).
async fn slot_is_free(g: &TestGateway) {
    eventually("the max_requests slot is free", Duration::from_secs(5), || async {
        get(&g.url("/quick")).await.status == 200
    })
    .await;
}

/// An upstream that answers `/quick` at once and holds every other request (reading its
/// whole body first) until the test ends.
async fn holding() -> FakeUpstream {
    upstream(|req: Request<hyper::body::Incoming>| async move {
        if req.uri().path() == "/quick" {
            return Response::new(full("quick"));
        }
        let _ = req.into_body().collect().await;
        std::future::pending::<()>().await;
        Response::new(full(""))
    })
    .await
}

#[tokio::test]
async fn a_client_that_stops_sending_its_body_gets_408_and_frees_its_slot() {
    let up = upstream(|req: Request<hyper::body::Incoming>| async move {
        let n = req.into_body().collect().await.map(|b| b.to_bytes().len()).unwrap_or(0);
        Response::new(full(format!("{n}")))
    })
    .await;
    let g = one_slot(up.addr, "body_read_timeout = \"1s\"", "").await;
    let mut s = TcpStream::connect(g.addr).await.unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nhost: a\r\ncontent-length: 100\r\n\r\n0123456789").await.unwrap();
    let since = Instant::now();
    let mut out = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    assert_eq!(status_of(&text), 408, "{text}");
    assert!(text.contains("x-switchyard-error: request_timeout"), "{text}");
    assert!(closed.is_ok(), "the connection was closed after the 408 (in {:?})", since.elapsed());
    slot_is_free(&g).await;
    // The stalled client was its own fault: the endpoint took no failure.
    let m = get(&g.admin_url("/metrics")).await.text();
    let failures: f64 = m
        .lines()
        .filter(|l| l.starts_with("switchyard_upstream_requests_total{") && !l.contains("outcome=\"ok\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(failures, 0.0, "{m}");
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_at_send_timeout_and_frees_its_slot() {
    // 64 MiB, far more than the socket buffers hold.
    let big = upstream(|req: Request<hyper::body::Incoming>| async move {
        if req.uri().path() == "/quick" {
            return Response::new(full("quick"));
        }
        Response::new(full(vec![b'x'; 64 << 20]))
    })
    .await;
    let g = one_slot(big.addr, "send_timeout = \"1s\"", "").await;
    let mut s = TcpStream::connect(g.addr).await.unwrap();
    s.write_all(b"GET /big HTTP/1.1\r\nhost: a\r\n\r\n").await.unwrap();
    let series = "switchyard_connections_active{listener=\"http\"}";
    eventually("the stalled connection is closed", Duration::from_secs(15), || async {
        admin_metric(g.admin, series).await == 0.0
    })
    .await;
    slot_is_free(&g).await;
    drop(s);
}

#[tokio::test]
async fn an_upstream_that_never_answers_gets_504_at_read_timeout() {
    let up = holding().await;
    let g = one_slot(up.addr, "", "read_timeout = \"1s\"").await;
    let r = get(&g.url("/hang")).await;
    assert_eq!((r.status.as_u16(), r.error()), (504, Some("timeout")));
    slot_is_free(&g).await;
}

#[tokio::test]
async fn a_slow_upload_is_not_an_upstream_read_timeout() {
    let up = upstream(|req: Request<hyper::body::Incoming>| async move {
        let n = req.into_body().collect().await.map(|b| b.to_bytes().len()).unwrap_or(0);
        Response::new(full(format!("{n}")))
    })
    .await;
    let g = one_slot(up.addr, "", "read_timeout = \"1s\"").await;
    // 5 chunks 400 ms apart: 2 s of upload, each gap shorter than read_timeout.
    let (tx, rx) =
        tokio::sync::mpsc::channel::<Result<http_body::Frame<bytes::Bytes>, std::convert::Infallible>>(1);
    let body = http_body_util::StreamBody::new(tokio_stream_from(rx));
    let req = Request::post(g.url("/up")).body(body.map_err(|e| match e {}).boxed()).unwrap();
    let feeder = tokio::spawn(async move {
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(400)).await;
            tx.send(Ok(http_body::Frame::data(bytes::Bytes::from_static(b"0123456789")))).await.unwrap();
        }
    });
    let r = send(req).await;
    feeder.await.unwrap();
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "50"));
}

fn tokio_stream_from<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|t| (t, rx)) })
}

/// An upstream's `content-length` is read as RFC 9110 section 8.6 says: a list of one value
/// repeated (on one line or several, with spaces and tabs around the values) is that value;
/// anything else (two values, a sign, an empty item, a byte that is not a digit) makes the
/// response invalid: 502, never a body framed by a guess. And the request line goes out with
/// the path and query as the client wrote them.
#[tokio::test]
async fn an_upstream_content_length_is_one_number_or_the_response_is_refused() {
    let up = raw_upstream(|path| {
        let framing: &[u8] = match path {
            "/list" => b"content-length: 5, 5",
            "/ows" => b"content-length:  5 ,\t 5",
            "/lines" => b"content-length: 5\r\ncontent-length: 5",
            "/differ" => b"content-length: 5, 6",
            "/lines-differ" => b"content-length: 5\r\ncontent-length: 6",
            "/sign" => b"content-length: +5",
            "/empty-item" => b"content-length: 5,,5",
            "/obs-text" => b"content-length: 5\xa0",
            "/ctl" => b"content-length: 5,\x0c5",
            // Anything else: the request target as the upstream read it.
            _ => {
                let line = format!("GET {path} HTTP/1.1");
                let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", line.len());
                return ([head.into_bytes(), line.into_bytes()].concat(), true);
            }
        };
        // One request per connection: the gateway does not keep it for the next.
        ([&b"HTTP/1.1 200 OK\r\nconnection: close\r\n"[..], framing, b"\r\n\r\nhello"].concat(), false)
    })
    .await;
    let g = gateway(&format!("{}[route.retry]\nattempts = 0\n", one_upstream("u", up.addr))).await;
    for path in ["/list", "/ows", "/lines"] {
        let r = get(&g.url(path)).await;
        assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "hello"), "{path}");
    }
    for path in ["/differ", "/lines-differ", "/sign", "/empty-item", "/obs-text", "/ctl"] {
        let r = get(&g.url(path)).await;
        assert_eq!((r.status.as_u16(), r.error()), (502, Some("bad_upstream_response")), "{path}");
    }
    let r = get(&g.url("/a/b%20c?x=1&y=%2F&z")).await;
    assert_eq!(r.text(), "GET /a/b%20c?x=1&y=%2F&z HTTP/1.1");
    let r = get(&g.url("/?")).await;
    assert_eq!(r.text(), "GET /? HTTP/1.1", "an empty query is kept");
}

/// An upstream's `connection` field is its own connection's business: `keep-alive` or `close`
/// (in any case, with spaces around) never reaches the client, `close` retires that upstream
/// connection, and a field that `connection` names goes too, on any of its lines.
#[tokio::test]
async fn an_upstream_connection_field_stays_between_the_gateway_and_the_upstream() {
    let up = raw_upstream(|path| {
        let fields: &[u8] = match path {
            "/keep" => b"Connection:  Keep-Alive \r\n",
            "/named" => b"connection: keep-alive\r\nconnection: x-secret\r\nx-secret: 1\r\n",
            "/close" => b"Connection: CLOSE\r\n",
            _ => b"",
        };
        let out = [&b"HTTP/1.1 200 OK\r\n"[..], fields, b"x-kept: 1\r\ncontent-length: 2\r\n\r\nok"].concat();
        (out, path != "/close")
    })
    .await;
    let g = gateway(&one_upstream("u", up.addr)).await;
    for path in ["/keep", "/named", "/keep"] {
        let r = get(&g.url(path)).await;
        assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "ok"), "{path}");
        assert_eq!(r.header("connection"), None, "{path}");
        assert_eq!(r.header("x-secret"), None, "{path}");
        assert_eq!(r.header("x-kept"), Some("1"), "{path}");
    }
    assert_eq!(up.conns(), 1, "kept alive");
    let r = get(&g.url("/close")).await;
    assert_eq!((r.status.as_u16(), r.header("connection")), (200, None));
    let r = get(&g.url("/keep")).await;
    assert_eq!(r.status.as_u16(), 200);
    assert_eq!(up.conns(), 2, "the one the upstream closed is not reused");
}

/// A response body of many small chunks, all read at once, is relayed whole and in order:
/// the gateway writes it in batches of many parts (three slices per chunk in the chunked
/// coding), more than one `writev` can take in some flushes.
#[tokio::test]
async fn a_response_of_many_chunks_read_at_once_reaches_the_client_whole() {
    fn chunks() -> Vec<String> {
        (0..300).map(|i| format!("{i:03}-").repeat(i % 7 + 1)).collect()
    }
    let up = raw_upstream(|_| {
        let mut out = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
        for c in &chunks() {
            out.extend_from_slice(format!("{:x}\r\n{c}\r\n", c.len()).as_bytes());
        }
        out.extend_from_slice(b"0\r\n\r\n");
        (out, true)
    })
    .await;
    let g = gateway(&one_upstream("u", up.addr)).await;
    for _ in 0..3 {
        let r = get(&g.url("/many")).await;
        assert_eq!(r.status.as_u16(), 200);
        assert_eq!(r.text(), chunks().concat());
    }
}

#[tokio::test]
async fn an_upstream_that_stalls_mid_body_resets_the_client_and_frees_the_slot() {
    // A raw upstream: the head and 3 of 100 body bytes, then silence (the socket kept open).
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut s, _)) = l.accept().await {
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).await.unwrap_or(0);
            if String::from_utf8_lossy(&buf[..n]).starts_with("GET /quick") {
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nquick").await;
            } else {
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nabc").await;
            }
            held.push(s);
        }
    });
    let g = one_slot(addr, "", "read_timeout = \"1s\"").await;
    let res = client().request(Request::get(g.url("/stall")).body(full("")).unwrap()).await.unwrap();
    assert_eq!(res.status(), 200);
    let body = tokio::time::timeout(Duration::from_secs(10), res.into_body().collect()).await.unwrap();
    assert!(body.is_err(), "the client sees the response cut short, not a clean end");
    slot_is_free(&g).await;
    server.abort();
}

#[tokio::test]
async fn an_upstream_tls_handshake_that_never_finishes_is_bounded_by_connect_timeout() {
    // Accepts TCP and never says a TLS word.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    let routes = format!(
        "[[upstream]]\nname = \"u\"\nendpoints = [\"{addr}\"]\nconnect_timeout = \"500ms\"\n[upstream.tls]\nsni = \"x.internal\"\n\
         [[route]]\nname = \"r\"\nupstream = \"u\"\n[route.retry]\nattempts = 0\n"
    );
    let g = gateway(&routes).await;
    let started = Instant::now();
    let r = get(&g.url("/")).await;
    assert_eq!((r.status.as_u16(), r.error()), (502, Some("connect_failed")));
    assert!(started.elapsed() < Duration::from_secs(10));
    server.abort();
}

#[tokio::test]
async fn an_idle_websocket_counts_as_a_connection_and_closes_at_tunnel_idle_timeout() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let ws_addr = ws_echo().await;
    let g =
        gateway_with("[limits]\ntunnel_idle_timeout = \"1s\"\n", &[("r.toml", &one_upstream("ws", ws_addr))])
            .await;
    let series = "switchyard_connections_active{listener=\"http\"}";
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/chat", g.addr)).await.unwrap();
    ws.send(Message::text("hi")).await.unwrap();
    let m = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(m.into_text().unwrap().as_str(), "hi");
    assert_eq!(admin_metric(g.admin, series).await, 1.0, "the tunnel counts as an open connection");
    // Silence: the tunnel closes by itself.
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) => return,
                Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(end.is_ok(), "the idle tunnel was closed");
    eventually("the tunnel no longer counts", Duration::from_secs(5), || async {
        admin_metric(g.admin, series).await == 0.0
    })
    .await;
}

#[tokio::test]
async fn tunnels_hold_their_max_connections_slot_and_drain_closes_them_at_drain_timeout() {
    use futures_util::StreamExt;
    let ws_addr = ws_echo().await;
    let mut g = gateway_with(
        "[gateway]\nroutes_dir = \"routes\"\ndrain_timeout = \"1s\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [limits]\nmax_connections = 1\n",
        &[("r.toml", &one_upstream("ws", ws_addr))],
    )
    .await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/chat", g.addr)).await.unwrap();
    // The tunnel holds the listener's only slot: a second connection is accepted by the kernel
    // but not served while it is open.
    let waiting =
        raw(g.addr, b"GET / HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n", Duration::from_millis(700))
            .await;
    assert!(waiting.is_empty(), "served while the tunnel held the only slot: {waiting}");

    let gw = g.gw.take().unwrap();
    let started = Instant::now();
    let clean = tokio::time::timeout(Duration::from_secs(10), gw.drain()).await.expect("drain ends");
    assert!(!clean, "the tunnel outlived drain_timeout");
    assert!(started.elapsed() < Duration::from_secs(10));
    let end = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("the tunnel was closed");
    assert!(!matches!(end, Some(Ok(tokio_tungstenite::tungstenite::Message::Text(_)))));
}

#[tokio::test]
async fn an_http2_client_that_grants_no_window_is_closed_at_send_timeout_and_frees_its_slot() {
    let big = upstream(|req: Request<hyper::body::Incoming>| async move {
        if req.uri().path() == "/quick" {
            return Response::new(full("quick"));
        }
        Response::new(full(vec![b'x'; 8 << 20]))
    })
    .await;
    let g = one_slot(big.addr, "send_timeout = \"1s\"", "").await;
    // An h2c client with a 64 KiB stream window that never reads the body, so never grants
    // more: the socket never blocks, but the stream cannot move.
    let stream = TcpStream::connect(g.addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .adaptive_window(false)
        .handshake::<_, TestBody>(hyper_util::rt::TokioIo::new(stream))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let res = send.send_request(Request::get(g.url("/big")).body(full("")).unwrap()).await.unwrap();
    assert_eq!(res.status(), 200);
    let series = "switchyard_connections_active{listener=\"http\"}";
    eventually("the stalled h2 connection is closed", Duration::from_secs(15), || async {
        admin_metric(g.admin, series).await == 0.0
    })
    .await;
    slot_is_free(&g).await;
    drop(res);
    conn.abort();
}
