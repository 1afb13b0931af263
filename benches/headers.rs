//! Header rewriting on the hot path (`proxy::headers`): what every proxied request and
//! response pays before it is forwarded, on a browser-like request of 14 headers and a typical
//! upstream response of 13.
//!
//! - `request/strip_hop_by_hop`: the common shape (`connection: keep-alive` only), one with
//!   headers listed in `Connection` plus `keep-alive`, `proxy-connection` and `te: trailers`,
//!   a WebSocket upgrade (the upgrade headers are put back), and an HTTP/2-style request with
//!   no hop-by-hop header at all (the one-pass early return).
//! - `request/set_forwarded`: first hop, and appending to a client's `x-forwarded-for`.
//! - `request/prepare`: the whole sequence the forwarder runs per attempt
//!   (`proxy::headers::prepare_request`: strip, `Host`, forwarded headers, request id,
//!   `traceparent`).
//! - `request/{request_id,upgrade_requested,request_host}`: the read-only lookups.
//! - `request/trace_context`: the W3C trace context taken from a client's valid `traceparent`,
//!   and a new one made for a request without.
//! - `response/strip_hop_by_hop`, and the `ResponseHeaders` layer (route `response_headers`)
//!   with and without edits.
//!
//! Functions that change the map get a fresh copy per iteration (`iter_batched`; making it is
//! not timed), laid out as hyper's HTTP/1 parser leaves a map (see [`as_parsed`]), in batches
//! small enough to stay in cache (see [`BATCH`]). Read-only ones reuse one map.
//!
//! Run with `cargo bench --bench headers -- --quick` (or without `--quick`; measurement times
//! are short so the whole run takes well under a minute).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkGroup, Criterion};
use futures_util::FutureExt as _;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response};
use tower::Service as _;

use switchyard::config::HeaderEdits;
use switchyard::internals::headers::{
    new_request_id, prepare_request, request_host, request_id, set_forwarded, strip_hop_by_hop,
    upgrade_requested, X_FORWARDED_FOR, X_REQUEST_ID,
};
use switchyard::internals::RequestInfo;
use switchyard::internals::ResponseHeaders;
use switchyard::internals::TraceContext;
use switchyard::internals::{self as body, Body};

/// Inputs made per timed batch. The gateway rewrites a map hyper has just written, so it is in
/// cache; `BatchSize::SmallInput` makes a tenth of a sample's iterations at once (up to 10⁵
/// maps of ~2.6 KiB here), so every iteration would start with cache misses, which measured
/// 2–10× the in-cache time (125 ns against 13 ns for `strip_hop_by_hop/none_h2`). 64 maps
/// (~170 KiB) stay in a 1 MiB L2 (this machine's), and two clock reads per 64 iterations add
/// under a nanosecond each.
const BATCH: BatchSize = BatchSize::NumIterations(64);

/// A desktop Chrome navigation over HTTP/1.1, as the gateway receives it: 14 headers.
fn browser_request() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (name, value) in [
        ("host", "app.example.com"),
        ("connection", "keep-alive"),
        ("sec-ch-ua", r#""Chromium";v="124", "Google Chrome";v="124", "Not-A.Brand";v="99""#),
        ("sec-ch-ua-mobile", "?0"),
        ("sec-ch-ua-platform", r#""macOS""#),
        (
            "user-agent",
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) \
             Chrome/124.0.0.0 Safari/537.36",
        ),
        (
            "accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,\
             image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7",
        ),
        ("sec-fetch-site", "same-origin"),
        ("sec-fetch-mode", "navigate"),
        ("sec-fetch-dest", "document"),
        ("referer", "https://app.example.com/dashboard"),
        ("accept-encoding", "gzip, deflate, br, zstd"),
        ("accept-language", "en-GB,en;q=0.9,de;q=0.8"),
        (
            "cookie",
            "session=8f14e45fceea167a5a36dedd4bea2543; _ga=GA1.1.1234567890.1712345678; theme=dark; \
             csrftoken=Xb2k9PqR7sT1uV3wY5zA",
        ),
    ] {
        h.append(HeaderName::from_static(name), HeaderValue::from_static(value));
    }
    h
}

/// The browser request with hop-by-hop headers a proxy must drop: two custom headers named in
/// `Connection`, `keep-alive`, `proxy-connection`, and `te: trailers` (kept, for gRPC).
fn hop_by_hop_request() -> HeaderMap {
    let mut h = browser_request();
    h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-hop-trace, X-Hop-Debug"));
    h.insert("keep-alive", HeaderValue::from_static("timeout=5, max=100"));
    h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
    h.insert(header::TE, HeaderValue::from_static("trailers"));
    h.insert("x-hop-trace", HeaderValue::from_static("4bf92f3577b34da6"));
    h.insert("x-hop-debug", HeaderValue::from_static("1"));
    h
}

/// A WebSocket handshake from the browser.
fn upgrade_request() -> HeaderMap {
    let mut h = browser_request();
    h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
    h.insert(header::SEC_WEBSOCKET_KEY, HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="));
    h
}

/// The browser request as an HTTP/2 client sends it: no `connection` (nor `host`; HTTP/2 has
/// `:authority`).
fn h2_request() -> HeaderMap {
    let mut h = browser_request();
    h.remove(header::CONNECTION);
    h.remove(header::HOST);
    h
}

/// A typical application response behind NGINX, as the upstream client returns it: 13 headers,
/// `connection` and `keep-alive` among them.
fn upstream_response() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (name, value) in [
        ("server", "nginx/1.25.4"),
        ("date", "Tue, 14 May 2024 09:21:07 GMT"),
        ("content-type", "text/html; charset=utf-8"),
        ("content-length", "5120"),
        ("connection", "keep-alive"),
        ("keep-alive", "timeout=5"),
        ("vary", "Accept-Encoding"),
        ("cache-control", "private, no-cache, no-store, must-revalidate"),
        ("etag", r#"W/"1400-9a3f5c2e""#),
        ("set-cookie", "session=8f14e45fceea167a5a36dedd4bea2543; Path=/; HttpOnly; Secure; SameSite=Lax"),
        ("set-cookie", "theme=dark; Path=/; Max-Age=31536000"),
        ("strict-transport-security", "max-age=63072000; includeSubDomains"),
        ("x-content-type-options", "nosniff"),
    ] {
        h.append(HeaderName::from_static(name), HeaderValue::from_static(value));
    }
    h
}

/// A copy of `input` with the capacity hyper's HTTP/1 parser gives a map it parses (it calls
/// `reserve(count)` on an empty map: 14 headers get room for 24). `HeaderMap::clone` keeps
/// exactly `len` entries instead, so the first header added would pay a reallocation of the
/// entries (measured +45 ns on `set_forwarded/first_hop`) that a parsed request does not.
fn as_parsed(input: &HeaderMap) -> HeaderMap {
    let mut h = HeaderMap::with_capacity(input.len());
    for (name, value) in input {
        h.append(name.clone(), value.clone());
    }
    h
}

/// Time `f` on a fresh [`as_parsed`] copy of `input` per iteration (making it and dropping it
/// are not timed).
fn bench_mut<M>(g: &mut BenchmarkGroup<'_, M>, name: &str, input: &HeaderMap, f: impl Fn(&mut HeaderMap))
where
    M: criterion::measurement::Measurement,
{
    g.bench_function(name, |b| {
        b.iter_batched(
            || as_parsed(input),
            |mut h| {
                f(&mut h);
                h
            },
            BATCH,
        )
    });
}

fn request(c: &mut Criterion) {
    let browser = browser_request();
    let hop = hop_by_hop_request();
    let upgrade = upgrade_request();
    let h2 = h2_request();
    let client_ip = HeaderValue::from_static("203.0.113.7");
    let host = HeaderValue::from_static("app.example.com");
    let mut behind_proxy = browser.clone();
    behind_proxy.insert(&X_FORWARDED_FOR, HeaderValue::from_static("198.51.100.23, 10.1.2.3"));
    let mut with_id = browser.clone();
    with_id.insert(&X_REQUEST_ID, HeaderValue::from_static("0f8fad5b-d9cb-469f-a165-70867728950e"));

    // The results are what the gateway relies on; check them once before timing.
    let mut check = hop.clone();
    strip_hop_by_hop(&mut check, None);
    assert_eq!(check.len(), browser.len(), "hop-by-hop: {check:?}");
    assert_eq!(check.get(header::TE).unwrap(), "trailers");
    assert!(check.get("x-hop-trace").is_none() && check.get(header::CONNECTION).is_none());
    let up = upgrade_requested(&upgrade);
    assert_eq!(up.as_ref().unwrap(), "websocket");
    assert!(upgrade_requested(&browser).is_none());

    let mut g = c.benchmark_group("request");
    g.warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_millis(700));

    bench_mut(&mut g, "strip_hop_by_hop/keep_alive", &browser, |h| {
        strip_hop_by_hop(h, None);
    });
    bench_mut(&mut g, "strip_hop_by_hop/connection_listed", &hop, |h| {
        strip_hop_by_hop(h, None);
    });
    bench_mut(&mut g, "strip_hop_by_hop/upgrade", &upgrade, |h| {
        strip_hop_by_hop(h, up.clone());
    });
    bench_mut(&mut g, "strip_hop_by_hop/none_h2", &h2, |h| {
        strip_hop_by_hop(h, None);
    });

    bench_mut(&mut g, "set_forwarded/first_hop", &browser, |h| {
        set_forwarded(h, &client_ip, true, Some(&host))
    });
    bench_mut(&mut g, "set_forwarded/append", &behind_proxy, |h| {
        set_forwarded(h, &client_ip, true, Some(&host))
    });

    // What the forwarder does to each attempt's request, with what the listener put in the
    // request's extensions (the request id was taken or made once, before the route).
    let info = RequestInfo {
        client: "203.0.113.7:52344".parse().unwrap(),
        listener: std::sync::Arc::new("bench".to_owned()),
        https: true,
        host: Some(host.clone()),
        request_id: new_request_id(),
        trace: TraceContext::new_root(),
        bytes_in: Default::default(),
        client_ip: client_ip.clone(),
        exchange: Default::default(),
        tried: Default::default(),
        upgrade: None,
    };
    let prepare = |h: &mut HeaderMap| {
        let upgrade = upgrade_requested(h);
        prepare_request(h, Some(&info), upgrade);
    };
    bench_mut(&mut g, "prepare/keep_alive", &browser, prepare);
    bench_mut(&mut g, "prepare/connection_listed", &hop, prepare);
    bench_mut(&mut g, "prepare/none_h2", &h2, prepare);

    // Read-only: the same map serves every iteration.
    g.bench_function("request_id/client_sent", |b| b.iter(|| request_id(black_box(&with_id))));
    g.bench_function("request_id/generated", |b| b.iter(|| request_id(black_box(&browser))));
    let mut traced = browser.clone();
    traced.insert(
        "traceparent",
        HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    );
    assert!(TraceContext::from_headers(&traced).incoming && !TraceContext::from_headers(&browser).incoming);
    g.bench_function("trace_context/client_sent", |b| {
        b.iter(|| TraceContext::from_headers(black_box(&traced)))
    });
    g.bench_function("trace_context/generated", |b| {
        b.iter(|| TraceContext::from_headers(black_box(&browser)))
    });
    g.bench_function("upgrade_requested/no", |b| b.iter(|| upgrade_requested(black_box(&browser))));
    g.bench_function("upgrade_requested/websocket", |b| b.iter(|| upgrade_requested(black_box(&upgrade))));
    let mut req = Request::new(());
    *req.headers_mut() = browser.clone();
    g.bench_function("request_host", |b| b.iter(|| request_host(black_box(&req)).map(str::len)));
    g.finish();
}

fn response(c: &mut Criterion) {
    let upstream = upstream_response();
    let mut check = upstream.clone();
    strip_hop_by_hop(&mut check, None);
    assert_eq!(check.len(), upstream.len() - 2, "response: {check:?}");

    let mut g = c.benchmark_group("response");
    g.warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_millis(700));
    bench_mut(&mut g, "strip_hop_by_hop", &upstream, |h| {
        strip_hop_by_hop(h, None);
    });

    // The route's `response_headers` layer around a terminal that answers at once with the
    // upstream's headers (carried in the request's extensions, moved out, not cloned). The
    // `none` case is the layer's pass-through path and the baseline for `edits`.
    let edits = HeaderEdits {
        set: vec![
            (HeaderName::from_static("x-served-by"), HeaderValue::from_static("switchyard")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        remove: vec![header::SERVER],
    };
    let terminal = tower::service_fn(|mut req: Request<Body>| {
        let mut res = Response::new(body::empty());
        if let Some(h) = req.extensions_mut().remove::<HeaderMap>() {
            *res.headers_mut() = h;
        }
        std::future::ready(Ok::<_, switchyard::internals::Error>(res))
    });
    for (name, edits) in [("headers_layer/none", HeaderEdits::default()), ("headers_layer/edits", edits)] {
        let mut svc = ResponseHeaders::new(terminal, edits);
        g.bench_function(name, |b| {
            b.iter_batched(
                || {
                    let mut req = Request::new(body::empty());
                    req.extensions_mut().insert(as_parsed(&upstream));
                    req
                },
                // `service_fn` is always ready, so `poll_ready` is skipped; the future is
                // ready at once too. The response is returned so that its drop is not timed.
                |req| svc.call(req).now_or_never(),
                BATCH,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, request, response);
criterion_main!(benches);
