//! The whole in-process request path: one request through the service the listener builds per
//! client connection (`GatewayService`: request id, route lookup on the live snapshot, the
//! route's tower stack, forwarding on the upstream's pooled client, the response body that
//! records metrics at its end), with the response body read to the end.
//!
//! - `get_64b`: a browser-like GET routed to an upstream that answers with 64 bytes.
//! - `respond_64b`: the same GET to a route with a `respond` action (no upstream), which
//!   isolates the gateway's own overhead.
//! - `post_echo_1k`: a 1 KiB POST that the upstream streams back.
//! - `upstream_only_64b`: the baseline for `get_64b`, the same GET sent straight to the
//!   upstream on a hyper-util pooled client, no gateway: `get_64b` minus this is roughly what
//!   proxying adds (the gateway's work and its client's side of the upstream exchange).
//!
//! The service is called directly with an in-memory `http::Request` (as hyper hands it one after
//! parsing a request head), so nothing of the downstream side is measured: no client, no HTTP/1
//! codec, no socket between client and gateway. The upstream is a hyper HTTP/1.1 server on 127.0.0.1:0 in the same
//! process, reached over loopback TCP on the gateway's pooled keep-alive client (the real one,
//! from `proxy`). Everything, the upstream included, runs on one current-thread tokio runtime,
//! so `get_64b` and `post_echo_1k` are the CPU time of a whole exchange on one core: gateway,
//! one loopback round trip (a write and a read on each side), and the upstream's own hyper
//! server.
//! The route table is built from in-memory TOML by the same code a reload runs.
//!
//! Run with `cargo bench --bench request_path -- --quick`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Either, Empty, Full};
use hyper::body::Incoming;
use hyper::service::Service as _;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use switchyard::config::{load_routes_from_sources, Limits};
use switchyard::internals::AccessLog;
use switchyard::internals::ConnState;
use switchyard::internals::Metrics;
use switchyard::internals::Registry;
use switchyard::internals::Snapshot;
use switchyard::internals::{GatewayService, Shared};

/// Requests made per timed batch: as in `benches/headers.rs`, few enough that the request heads
/// made for a batch are still in cache when they are served (as a just-parsed head is), which
/// `BatchSize::SmallInput`'s batches of a tenth of a sample are not (it measured `respond_64b`
/// about 10 % slower).
const BATCH: BatchSize = BatchSize::NumIterations(64);

/// The upstream's and the `respond` route's answer: 64 bytes.
const BODY_64: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n";
const _: () = assert!(BODY_64.len() == 64);
/// The POST body size.
const POST_BYTES: usize = 1024;

/// A hyper HTTP/1.1 server on 127.0.0.1:0: `/echo` streams the request body back, anything
/// else gets [`BODY_64`]. Returns its address and a count of accepted connections.
async fn upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::clone(&conns);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            accepted.fetch_add(1, Ordering::Relaxed);
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: Request<Incoming>| {
                    let res = if req.uri().path() == "/echo" {
                        Response::new(Either::Right(req.into_body()))
                    } else {
                        let mut res =
                            Response::new(Either::Left(Full::new(Bytes::from_static(BODY_64.as_bytes()))));
                        res.headers_mut()
                            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
                        res
                    };
                    std::future::ready(Ok::<_, Infallible>(res))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, conns)
}

/// The route file: the upstream behind `/api` and `/echo`, and a `respond` route.
fn routes(upstream: SocketAddr) -> String {
    format!(
        r#"[[upstream]]
name = "app"
endpoints = ["{upstream}"]

[[route]]
name = "api"
path_prefix = "/api"
upstream = "app"

[[route]]
name = "echo"
path = "/echo"
methods = ["POST"]
upstream = "app"

[[route]]
name = "direct"
path = "/direct"
respond = {{ status = 200, body = "{body}", headers = {{ "content-type" = "text/plain" }} }}
"#,
        body = BODY_64.escape_default(),
    )
}

/// A gateway service for one client connection, over a snapshot built as a reload builds it,
/// with the access log off (as the integration tests run).
async fn gateway(upstream: SocketAddr) -> GatewayService {
    let set = load_routes_from_sources(vec![(PathBuf::from("bench.toml"), routes(upstream))])
        .unwrap_or_else(|e| panic!("{e}"));
    let metrics = Arc::new(Metrics::new());
    let registry = Registry::new(Arc::clone(&metrics));
    let snapshot = Snapshot::build(set, None, 1, &Limits::default(), &metrics, &registry).unwrap();
    let shared = Arc::new(Shared {
        snapshot: Arc::new(ArcSwap::from_pointee(snapshot)),
        metrics,
        access_log: AccessLog::disabled(),
        empty: Arc::new(String::new()),
        unrouted: Default::default(),
        http: Default::default(),
        body_read_timeout: Limits::default().body_read_timeout,
        max_header_bytes: Limits::default().max_request_header_bytes,
        hard_stop: Default::default(),
    });
    let client: SocketAddr = "203.0.113.7:53124".parse().unwrap();
    GatewayService::new(shared, Arc::new("http".to_owned()), client, false, Arc::new(ConnState::default()))
}

/// A browser-like request head, as hyper would parse it from HTTP/1.1 (the map has the spare
/// room a parsed one has: 8 headers, room for 12).
fn request<B>(method: Method, path: &str, body: B) -> Request<B> {
    let mut req = Request::builder().method(method).uri(path).body(body).unwrap();
    let h = req.headers_mut();
    for (name, value) in [
        ("host", "app.example.com"),
        ("connection", "keep-alive"),
        (
            "user-agent",
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) \
             Chrome/124.0.0.0 Safari/537.36",
        ),
        ("accept", "application/json, text/plain, */*"),
        ("accept-encoding", "gzip, deflate, br, zstd"),
        ("accept-language", "en-GB,en;q=0.9"),
        ("referer", "https://app.example.com/dashboard"),
        ("cookie", "session=8f14e45fceea167a5a36dedd4bea2543; theme=dark"),
    ] {
        h.append(HeaderName::from_static(name), HeaderValue::from_static(value));
    }
    req
}

/// A GET of `path` (origin-form for the gateway, absolute for the baseline's client).
fn get(path: &str) -> Request<Empty<Bytes>> {
    request(Method::GET, path, Empty::new())
}

/// A POST of `payload` to `/echo`, with its `content-length` as a client would send it.
fn post_echo(payload: &Bytes) -> Request<Full<Bytes>> {
    let mut req = request(Method::POST, "/echo", Full::new(payload.clone()));
    req.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    req.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(POST_BYTES));
    req
}

/// One exchange through the service, the body read to the end. Returns the status and body.
async fn exchange<B>(svc: &GatewayService, req: Request<B>) -> (StatusCode, Bytes)
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<switchyard::internals::Error>,
{
    let res = match svc.call(req).await {
        Ok(res) => res,
        Err(never) => match never {},
    };
    let status = res.status();
    let body = res.into_body().collect().await.expect("response body").to_bytes();
    (status, body)
}

fn request_path(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let payload = Bytes::from(vec![b'x'; POST_BYTES]);
    let (svc, upstream, conns) = rt.block_on(setup(&payload));
    let direct = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let direct_url = format!("http://{upstream}/api/v1/items?page=2");

    let mut g = c.benchmark_group("request_path");
    g.warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    g.bench_function("get_64b", |b| {
        b.to_async(&rt).iter_batched(|| get("/api/v1/items?page=2"), |req| exchange(&svc, req), BATCH)
    });
    g.bench_function("respond_64b", |b| {
        b.to_async(&rt).iter_batched(|| get("/direct"), |req| exchange(&svc, req), BATCH)
    });
    g.bench_function("post_echo_1k", |b| {
        b.to_async(&rt).iter_batched(|| post_echo(&payload), |req| exchange(&svc, req), BATCH)
    });
    g.bench_function("upstream_only_64b", |b| {
        b.to_async(&rt).iter_batched(
            || get(&direct_url),
            |req| async {
                let res = direct.request(req).await.expect("upstream");
                let status = res.status();
                (status, res.into_body().collect().await.expect("response body").to_bytes())
            },
            BATCH,
        )
    });
    g.finish();
    // The numbers above assume that each pooled client (the gateway's, the baseline's) reused
    // one keep-alive connection: more would mean some requests paid a TCP connect.
    assert_eq!(conns.load(Ordering::Relaxed), 2, "upstream connections opened");
}

/// Start the upstream and the gateway, and wait until the upstream's endpoints are in place
/// (the static discovery source publishes them from its own task) and every case answers as
/// expected.
async fn setup(payload: &Bytes) -> (GatewayService, SocketAddr, Arc<AtomicUsize>) {
    let (addr, conns) = upstream().await;
    let svc = gateway(addr).await;
    let mut tries = 0;
    loop {
        let (status, body) = exchange(&svc, get("/api/v1/items?page=2")).await;
        if status == StatusCode::OK {
            assert_eq!(body, BODY_64.as_bytes());
            break;
        }
        tries += 1;
        assert!(tries < 200, "the upstream never became routable: {status}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, body) = exchange(&svc, get("/direct")).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, BODY_64.as_bytes()));
    let (status, body) = exchange(&svc, post_echo(payload)).await;
    assert_eq!((status, &body), (StatusCode::OK, payload));
    (svc, addr, conns)
}

criterion_group!(benches, request_path);
criterion_main!(benches);
