//! End to end through the real gateway: matchers and precedence, every action, rewrites,
//! header rules, streaming, h2c, WebSocket, error reasons, connection reuse.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use support::*;

fn name(g: &Got) -> String {
    g.json()["name"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn matchers_and_precedence_pick_the_right_upstream() {
    let ups = [
        echo("exact-host").await,
        echo("wild").await,
        echo("any").await,
        echo("exact-path").await,
        echo("long-prefix").await,
        echo("regex").await,
        echo("methods").await,
        echo("headers").await,
        echo("query").await,
    ];
    let routes = format!(
        r#"
[[upstream]]
name = "exact-host"
endpoints = ["{}"]
[[upstream]]
name = "wild"
endpoints = ["{}"]
[[upstream]]
name = "any"
endpoints = ["{}"]
[[upstream]]
name = "exact-path"
endpoints = ["{}"]
[[upstream]]
name = "long-prefix"
endpoints = ["{}"]
[[upstream]]
name = "regex"
endpoints = ["{}"]
[[upstream]]
name = "methods"
endpoints = ["{}"]
[[upstream]]
name = "headers"
endpoints = ["{}"]
[[upstream]]
name = "query"
endpoints = ["{}"]

[[route]]
name = "any"
upstream = "any"
[[route]]
name = "wild"
hosts = ["*.example.com"]
upstream = "wild"
[[route]]
name = "exact-host"
hosts = ["api.example.com"]
path_prefix = "/api"
upstream = "exact-host"
[[route]]
name = "exact-path"
path = "/p/exact"
upstream = "exact-path"
[[route]]
name = "long-prefix"
path_prefix = "/p/long/er"
upstream = "long-prefix"
[[route]]
name = "short-prefix"
path_prefix = "/p"
upstream = "any"
[[route]]
name = "regex"
hosts = ["re.test"]
path_regex = "/r/[0-9]+"
upstream = "regex"
[[route]]
name = "re-prefix"
hosts = ["re.test"]
path_prefix = "/r/9"
upstream = "long-prefix"
[[route]]
name = "methods"
path_prefix = "/m"
methods = ["DELETE"]
upstream = "methods"
[[route]]
name = "no-methods"
path_prefix = "/m"
upstream = "any"
[[route]]
name = "one-header"
path_prefix = "/h"
headers = {{ "x-a" = "*" }}
upstream = "any"
[[route]]
name = "two-headers"
path_prefix = "/h"
headers = {{ "x-a" = "*", "x-b" = "yes" }}
upstream = "headers"
[[route]]
name = "query"
path_prefix = "/q"
query = {{ "debug" = "1" }}
upstream = "query"
"#,
        ups[0].addr,
        ups[1].addr,
        ups[2].addr,
        ups[3].addr,
        ups[4].addr,
        ups[5].addr,
        ups[6].addr,
        ups[7].addr,
        ups[8].addr
    );
    let g = gateway(&routes).await;
    // Host: exact beats wildcard beats any; wildcard covers several labels, never the apex.
    assert_eq!(name(&get_host(&g.url("/api/x"), "API.example.com:8080").await), "exact-host");
    assert_eq!(
        name(&get_host(&g.url("/other"), "api.example.com").await),
        "wild",
        "falls through to the wildcard"
    );
    assert_eq!(name(&get_host(&g.url("/"), "a.b.example.com").await), "wild");
    assert_eq!(name(&get_host(&g.url("/"), "example.com").await), "any");
    // Path: exact, then the longest prefix, then regex; prefixes are segment-aware.
    assert_eq!(name(&get(&g.url("/p/exact")).await), "exact-path");
    assert_eq!(name(&get(&g.url("/p/exact/more")).await), "any");
    assert_eq!(name(&get(&g.url("/p/long/er/x")).await), "long-prefix");
    assert_eq!(name(&get(&g.url("/p/long/erx")).await), "any");
    assert_eq!(name(&get_host(&g.url("/r/123"), "re.test").await), "regex");
    assert_eq!(name(&get_host(&g.url("/r/9"), "re.test").await), "long-prefix", "a prefix beats a regex");
    assert_eq!(name(&get_host(&g.url("/r/123x"), "re.test").await), "any", "regex is anchored");
    // A catch-all prefix beats any regex (Gateway API: prefix before regex).
    assert_eq!(name(&get(&g.url("/r/123")).await), "any");
    // Methods, then header count, then query.
    let del = send(Request::delete(g.url("/m")).body(full("")).unwrap()).await;
    assert_eq!(name(&del), "methods");
    assert_eq!(name(&get(&g.url("/m")).await), "any");
    let two =
        send(Request::get(g.url("/h")).header("x-a", "1").header("x-b", "yes").body(full("")).unwrap()).await;
    assert_eq!(name(&two), "headers");
    let one =
        send(Request::get(g.url("/h")).header("x-a", "1").header("x-b", "no").body(full("")).unwrap()).await;
    assert_eq!(name(&one), "any");
    assert_eq!(name(&get(&g.url("/q?debug=1")).await), "query");
    assert_eq!(name(&get(&g.url("/q?debug=2")).await), "any");
}

#[tokio::test]
async fn no_route_is_404_with_reason() {
    let g = gateway(
        r#"
[[route]]
name = "only"
hosts = ["a.test"]
respond = { status = 200 }
"#,
    )
    .await;
    let r = get_host(&g.url("/"), "b.test").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.error(), Some("no_route"));
    assert!(r.header("x-request-id").is_some());
}

#[tokio::test]
async fn respond_redirect_and_split_actions() {
    let a = echo("a").await;
    let b = echo("b").await;
    let g = gateway(&format!(
        r#"
[[upstream]]
name = "a"
endpoints = ["{}"]
[[upstream]]
name = "b"
endpoints = ["{}"]

[[route]]
name = "respond"
path = "/respond"
respond = {{ status = 418, body = "teapot", headers = {{ "content-type" = "text/plain", "x-r" = "1" }} }}
[[route]]
name = "redirect"
path_prefix = "/old"
redirect = {{ to = "https://{{host}}/new{{path}}{{query}}", status = 308 }}
[[route]]
name = "redirect-default"
path = "/r302"
redirect = {{ to = "/elsewhere" }}
[[route]]
name = "split"
path_prefix = "/split"
split = [{{ upstream = "a", weight = 3 }}, {{ upstream = "b", weight = 1 }}]
"#,
        a.addr, b.addr
    ))
    .await;
    let r = get(&g.url("/respond")).await;
    assert_eq!(r.status, 418);
    assert_eq!(r.text(), "teapot");
    assert_eq!(r.header("x-r"), Some("1"));

    let r = get_host(&g.url("/old/x?y=1"), "site.test:8080").await;
    assert_eq!(r.status, 308);
    assert_eq!(r.header("location"), Some("https://site.test/new/old/x?y=1"));
    let r = get(&g.url("/r302")).await;
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some("/elsewhere"));

    let mut counts = [0usize; 2];
    for _ in 0..400 {
        match name(&get(&g.url("/split")).await).as_str() {
            "a" => counts[0] += 1,
            "b" => counts[1] += 1,
            other => panic!("unexpected {other}"),
        }
    }
    // 3:1 of 400 = 300:100; allow a wide statistical margin.
    assert!((240..=360).contains(&counts[0]), "{counts:?}");
}

#[tokio::test]
async fn rewrites_and_header_edits() {
    let e = echo("e").await;
    let g = gateway(&format!(
        r#"
[[upstream]]
name = "e"
endpoints = ["{}"]

[[route]]
name = "strip"
path_prefix = "/api"
strip_prefix = true
upstream = "e"
[[route]]
name = "rewrite"
path_prefix = "/old"
rewrite_prefix = "/v1"
host_rewrite = "internal.test"
request_headers = {{ set = {{ "x-env" = "prod" }}, remove = ["x-debug"] }}
response_headers = {{ set = {{ "x-served-by" = "switchyard" }}, remove = ["content-type"] }}
upstream = "e"
"#,
        e.addr
    ))
    .await;
    let r = get(&g.url("/api/users/7?x=1")).await;
    assert_eq!(r.json()["path"], "/users/7");
    assert_eq!(r.json()["query"], "x=1");
    assert_eq!(get(&g.url("/api")).await.json()["path"], "/");

    let r = send(
        Request::get(g.url("/old/x"))
            .header("host", "client.test")
            .header("x-debug", "1")
            .body(full(""))
            .unwrap(),
    )
    .await;
    let j = r.json();
    assert_eq!(j["path"], "/v1/x");
    assert_eq!(j["headers"]["host"], "internal.test");
    assert_eq!(j["headers"]["x-forwarded-host"], "client.test");
    assert_eq!(j["headers"]["x-env"], "prod");
    assert!(j["headers"].get("x-debug").is_none());
    assert_eq!(r.header("x-served-by"), Some("switchyard"));
    assert!(r.header("content-type").is_none());
    assert_eq!(get(&g.url("/old")).await.json()["path"], "/v1");
}

#[tokio::test]
async fn forwarded_headers_request_id_and_hop_by_hop() {
    let e = echo("e").await;
    let g = gateway(&format!(
        "[[upstream]]\nname = \"e\"\nendpoints = [\"{}\"]\n[[route]]\nname = \"r\"\nupstream = \"e\"\n",
        e.addr
    ))
    .await;
    let r = send(
        Request::get(g.url("/x"))
            .header("host", "front.test")
            .header("x-forwarded-for", "10.0.0.1")
            .header("x-request-id", "client-id-1")
            .header("connection", "x-drop-me")
            .header("x-drop-me", "1")
            .header("te", "trailers")
            .header("proxy-connection", "keep-alive")
            .header("x-forwarded-client-cert", "forged")
            .body(full(""))
            .unwrap(),
    )
    .await;
    let h = &r.json()["headers"];
    assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "front.test");
    assert_eq!(h["x-request-id"], "client-id-1");
    assert_eq!(h["te"], "trailers");
    assert!(h.get("x-drop-me").is_none());
    assert!(h.get("proxy-connection").is_none());
    assert!(h.get("x-forwarded-client-cert").is_none());
    assert_eq!(r.header("x-request-id"), Some("client-id-1"));

    // An unacceptable id is replaced, and the new one is returned.
    let r = send(Request::get(g.url("/x")).header("x-request-id", "bad id").body(full("")).unwrap()).await;
    let sent = r.json()["headers"]["x-request-id"].as_str().unwrap().to_owned();
    assert_ne!(sent, "bad id");
    assert_eq!(r.header("x-request-id"), Some(sent.as_str()));
}

/// An upstream answering with the `traceparent` and `tracestate` field lines it received, each
/// as a JSON array of the bytes as sent (the echo upstream joins repeated fields).
async fn trace_upstream() -> FakeUpstream {
    upstream(|req| {
        let lines = |name: &str| {
            req.headers()
                .get_all(name)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect::<Vec<_>>()
        };
        let body =
            serde_json::json!({ "traceparent": lines("traceparent"), "tracestate": lines("tracestate") });
        std::future::ready(Response::new(full(body.to_string())))
    })
    .await
}

/// What `trace_upstream` received for a request with `headers`.
async fn traced(g: &TestGateway, headers: &[(&str, &[u8])]) -> (Vec<String>, Vec<String>) {
    let mut req = Request::get(g.url("/t"));
    for (k, v) in headers {
        req = req.header(*k, http::HeaderValue::from_bytes(v).unwrap());
    }
    let j = send(req.body(full("")).unwrap()).await.json();
    let strings = |k: &str| j[k].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect();
    (strings("traceparent"), strings("tracestate"))
}

/// One `traceparent` that the gateway made: `00-<32 hex>-<16 hex>-01`, neither id all zeros.
fn assert_new_traceparent(tp: &[String]) -> String {
    assert_eq!(tp.len(), 1, "{tp:?}");
    let t = &tp[0];
    let hex = |s: &str| s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let parts: Vec<&str> = t.split('-').collect();
    assert_eq!(parts.len(), 4, "{t}");
    assert_eq!((parts[0], parts[3]), ("00", "01"), "{t}");
    assert!(parts[1].len() == 32 && hex(parts[1]) && parts[1].bytes().any(|b| b != b'0'), "{t}");
    assert!(parts[2].len() == 16 && hex(parts[2]) && parts[2].bytes().any(|b| b != b'0'), "{t}");
    parts[1].to_owned()
}

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[tokio::test]
async fn a_valid_traceparent_and_its_tracestate_reach_the_upstream_unchanged() {
    let up = trace_upstream().await;
    let g = gateway(&one_upstream("u", up.addr)).await;
    let (tp, ts) = traced(
        &g,
        &[
            ("traceparent", TRACEPARENT.as_bytes()),
            ("tracestate", b"rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"),
            ("tracestate", b"x@y=1 , z=2"),
        ],
    )
    .await;
    assert_eq!(tp, [TRACEPARENT]);
    assert_eq!(ts, ["rojo=00f067aa0ba902b7,congo=t61rcWkgMzE", "x@y=1 , z=2"]);

    // Flags other than 01, and a later version with more fields after its first 55
    // characters, pass as they are too.
    let unsampled = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
    assert_eq!(
        traced(&g, &[("traceparent", unsampled.as_bytes())]).await,
        (vec![unsampled.to_owned()], vec![])
    );
    let future = "cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-03-what-the-future-will-be-like";
    let (tp, ts) = traced(&g, &[("traceparent", future.as_bytes()), ("tracestate", b"a=b")]).await;
    assert_eq!((tp, ts), (vec![future.to_owned()], vec!["a=b".to_owned()]));

    // The same over HTTP/2.
    let res = send_with(
        &h2c_client(),
        Request::get(g.url("/t"))
            .header("traceparent", TRACEPARENT)
            .header("tracestate", "congo=t61rcWkgMzE")
            .body(full(""))
            .unwrap(),
    )
    .await
    .json();
    assert_eq!(res["traceparent"], serde_json::json!([TRACEPARENT]));
    assert_eq!(res["tracestate"], serde_json::json!(["congo=t61rcWkgMzE"]));
}

#[tokio::test]
async fn a_missing_traceparent_is_replaced_by_a_new_one_and_tracestate_dropped() {
    let up = trace_upstream().await;
    let g = gateway(&one_upstream("u", up.addr)).await;
    let (tp, ts) = traced(&g, &[]).await;
    let first = assert_new_traceparent(&tp);
    assert!(ts.is_empty());
    let (tp, ts) = traced(&g, &[("tracestate", b"congo=t61rcWkgMzE")]).await;
    let second = assert_new_traceparent(&tp);
    assert!(ts.is_empty(), "a tracestate without its traceparent is not passed on: {ts:?}");
    assert_ne!(first, second, "each request starts its own trace");
}

#[tokio::test]
async fn an_invalid_traceparent_is_replaced_and_its_tracestate_dropped() {
    let up = trace_upstream().await;
    let g = gateway(&one_upstream("u", up.addr)).await;
    let invalid: [&[u8]; 8] = [
        b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
        b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        b"cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01.extra",
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        b"00-4bf92f3577b34da6a3ce929d0e0e47\xe9\xe9-00f067aa0ba902b7-01",
    ];
    for v in invalid {
        let (tp, ts) = traced(&g, &[("traceparent", v), ("tracestate", b"congo=t61rcWkgMzE")]).await;
        let id = assert_new_traceparent(&tp);
        assert_ne!(id, "4bf92f3577b34da6a3ce929d0e0e4736", "{}", String::from_utf8_lossy(v));
        assert!(ts.is_empty(), "{}: {ts:?}", String::from_utf8_lossy(v));
    }
    // Two traceparent fields, even valid ones, are no valid traceparent.
    let other = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let (tp, ts) = traced(
        &g,
        &[
            ("traceparent", TRACEPARENT.as_bytes()),
            ("traceparent", other),
            ("tracestate", b"congo=t61rcWkgMzE"),
        ],
    )
    .await;
    let id = assert_new_traceparent(&tp);
    assert!(id != "4bf92f3577b34da6a3ce929d0e0e4736" && id != "0af7651916cd43dd8448eb211c80319c");
    assert!(ts.is_empty(), "{ts:?}");
}

#[tokio::test]
async fn connection_cannot_remove_the_traceparent() {
    let up = trace_upstream().await;
    let g = gateway(&one_upstream("u", up.addr)).await;
    // The client's valid one, named as hop-by-hop: the upstream still gets it.
    let (tp, _) =
        traced(&g, &[("connection", b"traceparent"), ("traceparent", TRACEPARENT.as_bytes())]).await;
    assert_eq!(tp, [TRACEPARENT]);
    // No traceparent at all, and `Connection` naming it: the gateway's own still goes out.
    let (tp, _) = traced(&g, &[("connection", b"traceparent, tracestate")]).await;
    assert_new_traceparent(&tp);
    // Nor can a route's header edits: the upstream gets the traceparent the access log names.
    let routes =
        format!("{}request_headers = {{ remove = [\"traceparent\"] }}\n", one_upstream("u", up.addr));
    let g = gateway(&routes).await;
    assert_eq!(traced(&g, &[("traceparent", TRACEPARENT.as_bytes())]).await.0, [TRACEPARENT]);
    assert_new_traceparent(&traced(&g, &[]).await.0);
}

#[tokio::test]
async fn the_access_log_has_the_trace_id_that_was_forwarded() {
    let up = trace_upstream().await;
    let routes = format!(
        "{}\n[[route]]\nname = \"fixed\"\npath = \"/fixed\"\nrespond = {{ status = 204 }}\n",
        one_upstream("u", up.addr)
    )
    .replace("[[route]]\nname = \"u\"\n", "[[route]]\nname = \"u\"\npath_prefix = \"/t\"\n");
    let g =
        gateway_with("[access_log]\nenabled = true\npath = \"access.log\"\n", &[("r.toml", &routes)]).await;
    let (kept, _) = traced(&g, &[("traceparent", TRACEPARENT.as_bytes()), ("x-request-id", b"kept")]).await;
    assert_eq!(kept, [TRACEPARENT]);
    let (made, _) = traced(&g, &[("x-request-id", b"made")]).await;
    let made = assert_new_traceparent(&made);
    // Answered by the gateway itself: a route of its own, and no route at all.
    let fixed =
        send(Request::get(g.url("/fixed")).header("x-request-id", "fixed").body(full("")).unwrap()).await;
    assert_eq!(fixed.status, 204);
    let missing = send(
        Request::get(g.url("/missing"))
            .header("x-request-id", "missing")
            .header("traceparent", TRACEPARENT)
            .body(full(""))
            .unwrap(),
    )
    .await;
    assert_eq!(missing.status, 404);

    let log = g.dir.path().join("access.log");
    let lines = access_log_lines(&log, "four access log lines", |n| n == 4).await;
    let trace_id = |id: &str| {
        let l = lines.iter().find(|l| l["request_id"] == id).unwrap_or_else(|| panic!("{id}: {lines:?}"));
        l["trace_id"].as_str().unwrap_or_else(|| panic!("no trace_id: {l}")).to_owned()
    };
    assert_eq!(trace_id("kept"), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(trace_id("made"), made);
    assert_eq!(trace_id("missing"), "4bf92f3577b34da6a3ce929d0e0e4736");
    let own = trace_id("fixed");
    assert_new_traceparent(&[format!("00-{own}-00f067aa0ba902b7-01")]);
    // Next to `request_id`, as the docs list the fields.
    let raw = std::fs::read_to_string(&log).unwrap();
    assert!(raw
        .lines()
        .all(|l| l.contains("\",\"trace_id\":\"") && l.find("\"request_id\"") < l.find("\"trace_id\"")));
}

#[tokio::test]
async fn response_hop_by_hop_headers_are_removed() {
    let up = upstream(|_| async {
        let mut r = Response::new(full("hi"));
        r.headers_mut().insert("connection", "x-secret".parse().unwrap());
        r.headers_mut().insert("x-secret", "1".parse().unwrap());
        r.headers_mut().insert("keep-alive", "timeout=5".parse().unwrap());
        r.headers_mut().insert("x-kept", "1".parse().unwrap());
        r
    })
    .await;
    let g = gateway(&format!(
        "[[upstream]]\nname = \"u\"\nendpoints = [\"{}\"]\n[[route]]\nname = \"r\"\nupstream = \"u\"\n",
        up.addr
    ))
    .await;
    let r = get(&g.url("/")).await;
    assert_eq!(r.text(), "hi");
    assert!(r.header("x-secret").is_none());
    assert!(r.header("keep-alive").is_none());
    assert_eq!(r.header("x-kept"), Some("1"));
}

#[tokio::test]
async fn keep_alive_connections_to_the_upstream_are_reused() {
    let up = upstream(status(200)).await;
    let g = gateway(&format!(
        "[[upstream]]\nname = \"u\"\nendpoints = [\"{}\"]\n[[route]]\nname = \"r\"\nupstream = \"u\"\n",
        up.addr
    ))
    .await;
    for _ in 0..20 {
        assert_eq!(get(&g.url("/")).await.status, 200);
    }
    assert_eq!(up.hits(), 20);
    assert_eq!(up.conns(), 1, "sequential requests must share one pooled connection");
}

#[tokio::test]
async fn streams_a_50_mib_body_both_ways() {
    const SIZE: usize = 50 * 1024 * 1024;
    // The upstream streams the request body straight back.
    let up = upstream(|req: Request<hyper::body::Incoming>| async move {
        Response::new(req.into_body().map_err(|e| e.into()).boxed())
    })
    .await;
    let g = gateway(&format!(
        "[[upstream]]\nname = \"u\"\nendpoints = [\"{}\"]\n[[route]]\nname = \"r\"\nupstream = \"u\"\n",
        up.addr
    ))
    .await;
    let chunk = Bytes::from(vec![7u8; 1024 * 1024]);
    let stream = futures_util::stream::iter(
        (0..50).map(move |_| Ok::<_, std::io::Error>(http_body::Frame::data(chunk.clone()))),
    );
    let body = http_body_util::StreamBody::new(stream).map_err(|e| e.into()).boxed();
    let res = client().request(Request::post(g.url("/")).body(body).unwrap()).await.unwrap();
    assert_eq!(res.status(), 200);
    let mut body = res.into_body();
    let mut n = 0;
    while let Some(f) = body.frame().await {
        n += f.unwrap().data_ref().map_or(0, |d| d.len());
    }
    assert_eq!(n, SIZE);
}

#[tokio::test]
async fn h2c_clients_and_h2c_upstreams() {
    let e = echo("e").await;
    let g = gateway(&format!(
        "[[upstream]]\nname = \"e\"\nendpoints = [\"{}\"]\nprotocol = \"h2c\"\n[[route]]\nname = \"r\"\nupstream = \"e\"\n",
        e.addr
    ))
    .await;
    let r = send_with(&h2c_client(), Request::get(g.url("/h2")).body(full("")).unwrap()).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["path"], "/h2");
    // HTTP/1.1 in, h2c out.
    assert_eq!(get(&g.url("/h1")).await.json()["path"], "/h1");
}

/// A prior-knowledge h2c client whose preface arrives in two pieces: the listener cannot tell
/// the protocol from the first piece and must wait for the rest (the pause makes the split
/// likely; the connection must speak HTTP/2 either way).
#[tokio::test]
async fn h2c_preface_in_two_pieces() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let e = echo("e").await;
    let g = gateway(&one_upstream("e", e.addr)).await;
    let mut s = tokio::net::TcpStream::connect(g.addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The rest of the preface, then an empty SETTINGS frame (length 0, type 4, stream 0).
    s.write_all(b"\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0").await.unwrap();
    let mut head = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut head)).await.unwrap().unwrap();
    assert_eq!(head[3], 4, "the server's first frame is its SETTINGS: {head:?}");
}

/// hyper (patch 16) looks for an HTTP/2 message's connection-specific fields in one pass and
/// strips them only when one is there: a response with all of them (and a field its
/// `connection` names) still arrives without any, one with none keeps its fields. (An unstripped
/// field would not arrive either way: h2 refuses to send it and resets the stream.)
#[tokio::test]
async fn http2_responses_lose_connection_specific_fields_and_keep_the_rest() {
    let up = upstream(|req| async move {
        let mut res = Response::new(full("ok"));
        let h = res.headers_mut();
        if req.uri().path() == "/with" {
            for (n, v) in [
                ("keep-alive", "timeout=5"),
                ("proxy-connection", "keep-alive"),
                ("transfer-encoding", "chunked"),
                ("upgrade", "h2c"),
                ("te", "trailers"),
                ("connection", "x-hop"),
                ("x-hop", "1"),
            ] {
                h.insert(http::HeaderName::from_static(n), http::HeaderValue::from_static(v));
            }
        }
        h.insert("x-kept", http::HeaderValue::from_static("yes"));
        res
    })
    .await;
    for path in ["/with", "/without"] {
        let url = format!("http://{}{path}", up.addr);
        let r = send_with(&h2c_client(), Request::get(url).body(full("")).unwrap()).await;
        assert_eq!(r.status, 200, "{path}");
        for n in
            ["keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "connection", "x-hop"]
        {
            assert!(!r.headers.contains_key(n), "{path}: {n} arrived");
        }
        assert_eq!(r.headers["x-kept"], "yes", "{path}");
        assert_eq!(r.body, "ok");
    }
}

/// The gateway's per-request values (`x-request-id` here) go to an HTTP/2 client as HPACK
/// never-indexed literals: each is new, so indexing it would only push an older entry out of
/// the connection's table (and cost the encoder a comparison with every one of that name still
/// in it). Read off the wire: over twenty responses on one connection, each has one
/// never-indexed field and the table takes no entry per response.
#[tokio::test]
async fn per_request_values_are_never_indexed_on_http2() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const N: u32 = 20;
    let e = echo("e").await;
    let g = gateway(&one_upstream("e", e.addr)).await;
    let mut s = tokio::net::TcpStream::connect(g.addr).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0").await.unwrap();
    for i in 0..N {
        // GET http://localhost/ : :method GET, :scheme http, :path / from the static table,
        // :authority as a literal without indexing (name index 1).
        let block = b"\x82\x86\x84\x01\x09localhost";
        let mut f = vec![0, 0, block.len() as u8, 1, 0x5]; // HEADERS, END_STREAM | END_HEADERS
        f.extend_from_slice(&(2 * i + 1).to_be_bytes());
        f.extend_from_slice(block);
        s.write_all(&f).await.unwrap();
    }
    let (mut ended, mut never, mut inserted, mut responses) = (0, 0, 0, 0);
    let read = async {
        while ended < N {
            let mut head = [0u8; 9];
            s.read_exact(&mut head).await.unwrap();
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let mut payload = vec![0u8; len];
            s.read_exact(&mut payload).await.unwrap();
            let (kind, flags) = (head[3], head[4]);
            assert_ne!(kind, 7, "GOAWAY: {payload:?}");
            if kind == 4 && flags & 1 == 0 {
                s.write_all(b"\0\0\0\x04\x01\0\0\0\0").await.unwrap(); // SETTINGS ACK
            }
            if kind == 1 {
                assert_ne!(flags & 0x4, 0, "one HEADERS frame per response (no CONTINUATION)");
                responses += 1;
                let (n, i) = hpack_representations(&payload);
                never += n;
                inserted += i;
            }
            if (kind == 0 || kind == 1) && flags & 1 != 0 {
                ended += 1;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read).await.expect("twenty responses");
    assert_eq!(responses, N);
    assert_eq!(never, N, "one never-indexed field (x-request-id) per response");
    // The first response's fields (content-type, date, ...) are indexed once; a second date
    // if the clock ticks over a second. Indexed per-request values would add N.
    assert!(inserted < 8, "{inserted} fields indexed over {N} responses");
}

/// (never-indexed literals, literals with incremental indexing) in an HPACK header block.
fn hpack_representations(b: &[u8]) -> (u32, u32) {
    fn int(b: &[u8], i: &mut usize, prefix: u32) -> usize {
        let mask = (1usize << prefix) - 1;
        let mut v = b[*i] as usize & mask;
        *i += 1;
        if v == mask {
            let mut shift = 0;
            loop {
                let byte = b[*i];
                *i += 1;
                v += ((byte & 0x7f) as usize) << shift;
                shift += 7;
                if byte & 0x80 == 0 {
                    break;
                }
            }
        }
        v
    }
    fn literal(b: &[u8], i: &mut usize, prefix: u32) {
        if int(b, i, prefix) == 0 {
            let n = int(b, i, 7); // a new name
            *i += n;
        }
        let n = int(b, i, 7);
        *i += n;
    }
    let (mut never, mut inserted, mut i) = (0, 0, 0);
    while i < b.len() {
        match b[i] {
            x if x & 0x80 != 0 => drop(int(b, &mut i, 7)),
            x if x & 0xc0 == 0x40 => {
                inserted += 1;
                literal(b, &mut i, 6)
            }
            x if x & 0xe0 == 0x20 => drop(int(b, &mut i, 5)),
            x if x & 0xf0 == 0x10 => {
                never += 1;
                literal(b, &mut i, 4)
            }
            _ => literal(b, &mut i, 4),
        }
    }
    (never, inserted)
}

#[tokio::test]
async fn trailers_pass_through() {
    let up = upstream(|_| async {
        let frames = vec![
            Ok::<_, std::io::Error>(http_body::Frame::data(Bytes::from_static(b"data"))),
            Ok(http_body::Frame::trailers({
                let mut t = http::HeaderMap::new();
                t.insert("grpc-status", "0".parse().unwrap());
                t
            })),
        ];
        Response::new(
            http_body_util::StreamBody::new(futures_util::stream::iter(frames)).map_err(|e| e.into()).boxed(),
        )
    })
    .await;
    let g = gateway(&format!(
        "[[upstream]]\nname = \"u\"\nendpoints = [\"{}\"]\nprotocol = \"h2c\"\n[[route]]\nname = \"r\"\nupstream = \"u\"\n",
        up.addr
    ))
    .await;
    let res = h2c_client()
        .request(Request::get(g.url("/")).header("te", "trailers").body(full("")).unwrap())
        .await
        .unwrap();
    let collected = res.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().expect("trailers arrive");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(collected.to_bytes(), "data");
}

#[tokio::test]
async fn websocket_echo_through_the_gateway() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    // A real WebSocket server upstream.
    let ws_addr = ws_echo().await;
    let g = gateway(&format!("[[upstream]]\nname = \"ws\"\nendpoints = [\"{ws_addr}\"]\n[[route]]\nname = \"r\"\nupstream = \"ws\"\n")).await;
    let (mut ws, resp) = tokio_tungstenite::connect_async(format!("ws://{}/chat", g.addr)).await.unwrap();
    assert_eq!(resp.status(), 101);
    for i in 0..5 {
        ws.send(Message::text(format!("hello {i}"))).await.unwrap();
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(m.into_text().unwrap().as_str(), format!("hello {i}"));
    }
}

/// A WebSocket upgrade that finds an endpoint refusing connections goes to the next one
/// (the default retry on `connect-failure`), and the tunnel works: the client's side of the
/// upgrade goes with the request that is sent again.
#[tokio::test]
async fn a_websocket_upgrade_past_a_dead_endpoint_tunnels() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let ws_addr = ws_echo().await;
    let hold = dead_addr();
    let routes = format!(
        "[[upstream]]\nname = \"ws\"\nendpoints = [\"{}\", \"{ws_addr}\"]\n[[route]]\nname = \"r\"\nupstream = \"ws\"\n",
        hold.addr()
    );
    let g = gateway(&routes).await;
    // Round robin over two endpoints: at least one of the first two upgrades meets the dead one.
    for i in 0..4 {
        let (mut ws, resp) = tokio_tungstenite::connect_async(format!("ws://{}/chat", g.addr)).await.unwrap();
        assert_eq!(resp.status(), 101);
        ws.send(Message::text(format!("hello {i}"))).await.unwrap();
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(m.into_text().unwrap().as_str(), format!("hello {i}"));
    }
    let m = get(&g.admin_url("/metrics")).await.text();
    assert!(m.contains(r#"switchyard_retries_total{route="r",reason="connect-failure"}"#), "{m}");
}

#[tokio::test]
async fn upstream_failures_map_to_reasons() {
    let hold = dead_addr();
    let dead = hold.addr();
    // Closes the connection before answering.
    let closer = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closer_addr = closer.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        while let Ok((mut s, _)) = closer.accept().await {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            drop(s);
        }
    });
    // Answers garbage.
    let garbage = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let garbage_addr = garbage.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, _)) = garbage.accept().await {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(b"NOT HTTP AT ALL\r\n\r\n").await;
        }
    });
    let slow = upstream(|_| async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        Response::new(full("late"))
    })
    .await;
    let g = gateway(&format!(
        r#"
[[upstream]]
name = "dead"
endpoints = ["{dead}"]
[[upstream]]
name = "closer"
endpoints = ["{closer_addr}"]
[[upstream]]
name = "garbage"
endpoints = ["{garbage_addr}"]
[[upstream]]
name = "slow"
endpoints = ["{}"]
[[route]]
name = "dead"
path_prefix = "/dead"
upstream = "dead"
[[route]]
name = "closer"
path_prefix = "/closer"
upstream = "closer"
[[route]]
name = "garbage"
path_prefix = "/garbage"
upstream = "garbage"
[[route]]
name = "slow"
path_prefix = "/slow"
timeout = "200ms"
upstream = "slow"
[[route]]
name = "small"
path_prefix = "/small"
max_request_body_bytes = 10
upstream = "slow"
"#,
        slow.addr
    ))
    .await;
    let r = get(&g.url("/dead")).await;
    assert_eq!((r.status.as_u16(), r.error()), (502, Some("connect_failed")));
    let r = get(&g.url("/closer")).await;
    assert_eq!((r.status.as_u16(), r.error()), (502, Some("upstream_reset")));
    let r = get(&g.url("/garbage")).await;
    assert_eq!((r.status.as_u16(), r.error()), (502, Some("bad_upstream_response")));
    let r = get(&g.url("/slow")).await;
    assert_eq!((r.status.as_u16(), r.error()), (504, Some("timeout")));
    let r = send(Request::post(g.url("/small")).body(full("more than ten bytes")).unwrap()).await;
    assert_eq!((r.status.as_u16(), r.error()), (413, Some("body_too_large")));
    assert_eq!(slow.hits(), 1, "the 413 never reached the upstream");
}

#[tokio::test]
async fn default_policy_retries_connect_failure_on_another_endpoint() {
    let hold = dead_addr();
    let dead = hold.addr();
    let e = echo("alive").await;
    let g = gateway(&format!(
        "[[upstream]]\nname = \"u\"\nendpoints = [\"{dead}\", \"{}\"]\n[[route]]\nname = \"r\"\nupstream = \"u\"\n",
        e.addr
    ))
    .await;
    for _ in 0..10 {
        let r = get(&g.url("/")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(name(&r), "alive");
    }
}
