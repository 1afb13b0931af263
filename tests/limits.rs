//! The `[limits]` table and bad input, end to end: header and body size limits, malformed
//! requests that must never reach an upstream, the header-read and idle timeouts kept apart,
//! `max_connections`, and the advertised HTTP/2 stream limit.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n";

#[tokio::test]
async fn headers_over_the_limit_get_431() {
    let up = upstream(status(200)).await;
    let g = gateway_with(
        "[limits]\nmax_request_header_bytes = \"16KiB\"\n",
        &[("r.toml", &one_upstream("u", up.addr))],
    )
    .await;
    let fits = "a".repeat(12 * 1024);
    let r = send(Request::get(g.url("/")).header("x-big", fits).body(full("")).unwrap()).await;
    assert_eq!(r.status, 200, "12 KiB of headers fit in a 16 KiB limit");

    let big = "a".repeat(20 * 1024);
    let out = raw(
        g.addr,
        format!("GET / HTTP/1.1\r\nHost: t\r\nx-big: {big}\r\n\r\n").as_bytes(),
        Duration::from_secs(5),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 431"), "{out}");
    assert_eq!(up.hits(), 1, "the oversized request never reached the upstream");
}

/// The default limit (64 KiB) holds too, on HTTP/1.1 and h2, with the head in one piece or
/// dribbled in small writes.
#[tokio::test]
async fn the_default_header_limit_of_64_kib_is_enforced() {
    let up = upstream(status(200)).await;
    let g = gateway(&one_upstream("u", up.addr)).await;
    let fits = "a".repeat(60 * 1024);
    let r = send(Request::get(g.url("/")).header("x-big", fits).body(full("")).unwrap()).await;
    assert_eq!(r.status, 200, "60 KiB of headers fit in the default 64 KiB");

    let big = "a".repeat(100 * 1024);
    let head = format!("GET / HTTP/1.1\r\nHost: t\r\nx-big: {big}\r\n\r\n");
    let out = raw(g.addr, head.as_bytes(), Duration::from_secs(5)).await;
    assert!(out.starts_with("HTTP/1.1 431"), "{}", &out[..out.len().min(200)]);
    // The same head in 1 KiB writes.
    let mut s = TcpStream::connect(g.addr).await.unwrap();
    for chunk in head.as_bytes().chunks(1024) {
        if s.write_all(chunk).await.is_err() {
            break;
        }
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    assert!(out.starts_with(b"HTTP/1.1 431"), "{}", String::from_utf8_lossy(&out[..out.len().min(200)]));
    // h2: the header list is bounded by the same limit.
    let h2 = h2c_client()
        .request(Request::get(g.url("/")).header("x-big", "a".repeat(100 * 1024)).body(full("")).unwrap())
        .await;
    assert!(h2.map(|r| r.status() != 200).unwrap_or(true), "a 100 KiB h2 header list was accepted");
    assert_eq!(up.hits(), 1, "no oversized request reached the upstream");
}

/// A connection reads with no buffer at first, and again after each request (a kept-alive
/// connection gives its buffer back while it waits); such a read looks with 4 KiB on the stack
/// first. A head larger than that, with its body and a pipelined request behind it in the same
/// write, arrives whole: as a connection's first bytes, and after a request on it.
#[tokio::test]
async fn a_head_larger_than_the_first_look_arrives_whole() {
    let e = echo("e").await;
    let g = gateway(&one_upstream("e", e.addr)).await;
    // The first read of a new connection always starts with no buffer.
    let fresh = tokio::net::TcpStream::connect(g.addr).await.unwrap();
    big_head_then_pipelined(fresh).await;
    let mut kept = tokio::net::TcpStream::connect(g.addr).await.unwrap();
    let small = raw_exchange(&mut kept, b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    assert!(small.starts_with("HTTP/1.1 200"), "{small}");
    big_head_then_pipelined(kept).await;
}

/// A head and body that come in pieces, each smaller than the first look and read as it
/// comes, are put together whole: the buffer that the first piece was read into grows for the
/// rest. Then a second request on the same connection, whole.
#[tokio::test]
async fn a_head_and_body_in_small_pieces_arrive_whole() {
    let e = echo("e").await;
    let g = gateway(&one_upstream("e", e.addr)).await;
    let mut s = tokio::net::TcpStream::connect(g.addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    let big = "w".repeat(5000);
    let pieces = [
        "POST /pieces HTT".to_string(),
        "P/1.1\r\nhost: x\r\ncontent-le".to_string(),
        format!("ngth: 5\r\nx-big: {big}\r\n\r\nhe"),
        "llo".to_string(),
    ];
    for p in &pieces {
        s.write_all(p.as_bytes()).await.unwrap();
        // Not a timing assertion: only so that the gateway most likely reads each piece alone.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first = raw_exchange(&mut s, b"").await.expect("an answer to the request sent in pieces");
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    let json: serde_json::Value =
        serde_json::from_str(&first[first.find("\r\n\r\n").unwrap() + 4..]).unwrap();
    assert_eq!(json["path"], "/pieces");
    assert_eq!(json["headers"]["x-big"].as_str().map(str::len), Some(5000));
    assert_eq!(json["body_bytes"], 5);
    let second = raw_exchange(&mut s, b"GET /again HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    assert!(second.starts_with("HTTP/1.1 200") && second.contains("\"/again\""), "{second}");
}

/// Send a 9 KB head with a 5-byte body and a pipelined `GET /c` in one write; both answered.
async fn big_head_then_pipelined(mut s: TcpStream) {
    let big = "v".repeat(9000);
    let mut req =
        format!("POST /b HTTP/1.1\r\nhost: x\r\nx-big: {big}\r\ncontent-length: 5\r\n\r\nhello").into_bytes();
    req.extend_from_slice(b"GET /c HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    s.write_all(&req).await.unwrap();
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut all)).await.unwrap().unwrap();
    let all = String::from_utf8(all).unwrap();
    let answers: Vec<&str> = all.split("HTTP/1.1 ").skip(1).collect();
    assert_eq!(answers.len(), 2, "{all}");
    assert!(answers.iter().all(|a| a.starts_with("200")), "{all}");
    let body = &answers[0][answers[0].find("\r\n\r\n").unwrap() + 4..];
    let json: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(json["path"], "/b");
    assert_eq!(json["headers"]["x-big"].as_str().map(str::len), Some(9000));
    assert_eq!(json["body_bytes"], 5);
    // The pipelined request was read with the rest, and answered next.
    assert!(answers[1].contains("\"/c\""), "{all}");
}

#[tokio::test]
async fn declared_body_over_the_global_or_route_limit_gets_413() {
    let up = upstream(status(200)).await;
    let routes = format!(
        r#"
[[upstream]]
name = "u"
endpoints = ["{}"]
[[route]]
name = "global"
path_prefix = "/global"
upstream = "u"
[[route]]
name = "roomy"
path_prefix = "/roomy"
max_request_body_bytes = "1KiB"
upstream = "u"
"#,
        up.addr
    );
    let g = gateway_with("[limits]\nmax_request_body_bytes = 100\n", &[("r.toml", &routes)]).await;
    let post = |path: &str, n: usize| Request::post(g.url(path)).body(full(vec![b'x'; n])).unwrap();

    assert_eq!(send(post("/global", 100)).await.status, 200, "exactly the limit is allowed");
    let r = send(post("/global", 101)).await;
    assert_eq!((r.status.as_u16(), r.error()), (413, Some("body_too_large")));

    // The route's own limit replaces the global one, in both directions.
    assert_eq!(send(post("/roomy", 500)).await.status, 200);
    let r = send(post("/roomy", 1025)).await;
    assert_eq!((r.status.as_u16(), r.error()), (413, Some("body_too_large")));
    assert_eq!(up.hits(), 2, "refused bodies never reached the upstream");
}

#[tokio::test]
async fn chunked_body_crossing_the_limit_gets_413_and_aborts_the_upstream_request() {
    // The upstream reads the whole body before answering, so no response has started when the
    // limit is crossed; it counts bodies it read whole and bodies that were cut off.
    let whole = Arc::new(AtomicUsize::new(0));
    let cut = Arc::new(AtomicUsize::new(0));
    let (w, c) = (Arc::clone(&whole), Arc::clone(&cut));
    let up = upstream(move |req: Request<hyper::body::Incoming>| {
        let (w, c) = (Arc::clone(&w), Arc::clone(&c));
        async move {
            match req.into_body().collect().await {
                Ok(_) => w.fetch_add(1, Ordering::SeqCst),
                Err(_) => c.fetch_add(1, Ordering::SeqCst),
            };
            Response::new(full("read it all"))
        }
    })
    .await;
    let g =
        gateway_with("[limits]\nmax_request_body_bytes = 1000\n", &[("r.toml", &one_upstream("u", up.addr))])
            .await;

    // No content-length: the body streams in chunks, and the limit is crossed mid-stream. The
    // last chunk is held back until the upstream has the request, so forwarding has begun.
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, std::io::Error>(http_body::Frame::data(b)), rx))
    });
    let body = http_body_util::StreamBody::new(stream).map_err(|e| e.into()).boxed();
    let req = Request::post(g.url("/")).body(body).unwrap();
    let pending = tokio::spawn(async move { send(req).await });
    tx.send(Bytes::from(vec![b'x'; 600])).await.unwrap();
    eventually("the upstream received the request", Duration::from_secs(5), || async { up.hits() == 1 })
        .await;
    tx.send(Bytes::from(vec![b'x'; 600])).await.unwrap();

    let r = pending.await.unwrap();
    assert_eq!((r.status.as_u16(), r.error()), (413, Some("body_too_large")));
    eventually("the upstream saw its request body cut off", Duration::from_secs(5), || async {
        cut.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(whole.load(Ordering::SeqCst), 0, "the upstream never got a complete body");
    drop(tx);

    // A chunked body within the limit goes through.
    let chunks = futures_util::stream::iter(
        (0..4).map(|_| Ok::<_, std::io::Error>(http_body::Frame::data(Bytes::from(vec![b'y'; 250])))),
    );
    let body = http_body_util::StreamBody::new(chunks).map_err(|e| e.into()).boxed();
    let r = send(Request::post(g.url("/")).body(body).unwrap()).await;
    assert_eq!(r.status, 200);
    assert_eq!(whole.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn malformed_requests_get_400_and_never_reach_the_upstream() {
    let up = upstream(status(200)).await;
    let g = gateway(&one_upstream("u", up.addr)).await;
    let cases: [(&str, &[u8]); 6] = [
        (
            "content-length and transfer-encoding after empty lines (which are skipped)",
            b"\r\n\r\nPOST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "content-length and transfer-encoding, bare line feeds",
            b"POST / HTTP/1.1\nHost: t\nContent-Length: 5\nTransfer-Encoding: chunked\n\n5\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "transfer-encoding, then content-length",
            b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\ncontent-length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "content-length and transfer-encoding",
            b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "two differing content-length headers",
            b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        ),
        ("an obs-fold header line", b"GET / HTTP/1.1\r\nHost: t\r\nX-Folded: a\r\n  b\r\n\r\n"),
    ];
    for (what, bytes) in cases {
        let out = raw(g.addr, bytes, Duration::from_secs(5)).await;
        // The last response on the connection is the 400 (after the good one's 200, if any).
        let last = out.rfind("HTTP/1.1 ").map(|i| &out[i..]).unwrap_or_default();
        assert!(last.starts_with("HTTP/1.1 400"), "{what}: {out}");
    }
    assert_eq!(up.hits(), 0, "no malformed request reached the upstream");

    // The same on a keep-alive connection, after a good request.
    let mut s = TcpStream::connect(g.addr).await.unwrap();
    assert!(raw_exchange(&mut s, GET).await.unwrap().starts_with("HTTP/1.1 200"));
    let bad = b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    let out = raw_exchange(&mut s, bad).await.unwrap_or_default();
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(out.contains("x-switchyard-error: bad_request"), "refused by the gateway, logged: {out}");
    assert_eq!(up.hits(), 1, "only the good request reached the upstream");
    // The same connection setup with a well-formed request does reach it (the count can move).
    let out =
        raw(g.addr, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", Duration::from_secs(5)).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert_eq!(up.hits(), 2);
}

const TIMEOUTS: &str = "[limits]\nheader_read_timeout = \"300ms\"\nidle_timeout = \"1500ms\"\n";

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_header_read_timeout() {
    let g =
        gateway_with(TIMEOUTS, &[("r.toml", "[[route]]\nname = \"ok\"\nrespond = { status = 200 }\n")]).await;
    let t0 = Instant::now();
    let mut s = TcpStream::connect(g.addr).await.unwrap();
    let took = closed_after(&mut s, t0, Duration::from_secs(5)).await;
    assert!(took >= Duration::from_millis(250), "closed too early: {took:?}");
    assert!(took < Duration::from_millis(1400), "closed by header_read_timeout, not idle_timeout: {took:?}");
}

#[tokio::test]
async fn a_slowloris_is_closed_after_header_read_timeout() {
    let g =
        gateway_with(TIMEOUTS, &[("r.toml", "[[route]]\nname = \"ok\"\nrespond = { status = 200 }\n")]).await;
    // Half a request head on a new connection.
    let t0 = Instant::now();
    let mut s = TcpStream::connect(g.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n").await.unwrap();
    let took = closed_after(&mut s, t0, Duration::from_secs(5)).await;
    assert!((Duration::from_millis(250)..Duration::from_millis(1400)).contains(&took), "{took:?}");

    // Half of a second request head on a keep-alive connection: the clock starts at its first
    // byte, and it is header_read_timeout, not idle_timeout, that closes it.
    let mut s = TcpStream::connect(g.addr).await.unwrap();
    let first = raw_exchange(&mut s, GET).await.expect("first request answered");
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    let t0 = Instant::now();
    s.write_all(b"GET / HTTP/1.1\r\nHo").await.unwrap();
    let took = closed_after(&mut s, t0, Duration::from_secs(5)).await;
    assert!((Duration::from_millis(250)..Duration::from_millis(1400)).contains(&took), "{took:?}");
}

#[tokio::test]
async fn idle_timeout_closes_an_idle_keep_alive_connection_but_not_before() {
    let g =
        gateway_with(TIMEOUTS, &[("r.toml", "[[route]]\nname = \"ok\"\nrespond = { status = 200 }\n")]).await;

    // Idle for longer than header_read_timeout but less than idle_timeout: still served.
    let mut s = TcpStream::connect(g.addr).await.unwrap();
    assert!(raw_exchange(&mut s, GET).await.unwrap().starts_with("HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_millis(800)).await; // the idleness under test
    let again = raw_exchange(&mut s, GET).await.expect("a connection idle for 800ms is still open");
    assert!(again.starts_with("HTTP/1.1 200"), "{again}");

    // Idle past idle_timeout: closed, and not much earlier.
    let t0 = Instant::now();
    let took = closed_after(&mut s, t0, Duration::from_secs(5)).await;
    assert!((Duration::from_millis(1000)..Duration::from_millis(3500)).contains(&took), "{took:?}");
}

/// An idle_timeout shorter than header_read_timeout: the connection task must wake for it
/// (it was asleep until the first request's header deadline, 10 s, and closed only then).
#[tokio::test]
async fn idle_timeout_shorter_than_header_read_timeout_is_honoured() {
    let g = gateway_with(
        "[limits]
idle_timeout = \"1s\"
",
        &[("r.toml", "[[route]]\nname = \"ok\"\nrespond = { status = 200 }\n")],
    )
    .await;
    let mut s = TcpStream::connect(g.addr).await.unwrap();
    assert!(raw_exchange(&mut s, GET).await.unwrap().starts_with("HTTP/1.1 200"));
    // Closed by idle_timeout (1 s), well before header_read_timeout (10 s).
    closed_after(&mut s, Instant::now(), Duration::from_secs(5)).await;
}

/// A slowloris on a kept-alive connection: once the next head starts, header_read_timeout
/// applies, not the much longer idle_timeout the connection task was sleeping towards.
#[tokio::test]
async fn a_slow_second_head_is_closed_at_header_read_timeout_not_idle_timeout() {
    let g = gateway_with(
        "[limits]
header_read_timeout = \"1s\"
idle_timeout = \"60s\"
",
        &[("r.toml", "[[route]]\nname = \"ok\"\nrespond = { status = 200 }\n")],
    )
    .await;
    let mut s = TcpStream::connect(g.addr).await.unwrap();
    assert!(raw_exchange(&mut s, GET).await.unwrap().starts_with("HTTP/1.1 200"));
    // Idle past the first head's deadline, so the task now sleeps towards the idle deadline.
    tokio::time::sleep(Duration::from_millis(1500)).await; // the idleness under test
    s.write_all(b"GET / HTTP/1.1\r\nhost: a\r\n").await.unwrap();
    closed_after(&mut s, Instant::now(), Duration::from_secs(5)).await;
}

/// hyper's own HTTP/1 header-read timer defaults to 30 s and also runs while a keep-alive
/// connection waits for its next request; our `idle_timeout` must be the one that decides.
///
/// The gateway serves on this test's runtime, and both its timers and hyper's (`TokioTimer`)
/// run on that runtime's clock. While the connection idles nothing is in flight, so instead
/// of sleeping 31 s the clock is paused and moved 31 s on: every timer due within them
/// (hyper's 30 s one, if it ran) fires, and the connection task handles it, before the clock
/// runs again and the second request is sent.
#[tokio::test]
async fn idle_timeout_longer_than_hypers_default_header_timer_is_honoured() {
    let g = gateway_with(
        "[limits]\nheader_read_timeout = \"2s\"\nidle_timeout = \"60s\"\n",
        &[("r.toml", "[[route]]\nname = \"ok\"\nrespond = { status = 200 }\n")],
    )
    .await;
    let mut s = TcpStream::connect(g.addr).await.unwrap();
    assert!(raw_exchange(&mut s, GET).await.unwrap().starts_with("HTTP/1.1 200"));
    // Let the connection task finish the exchange and start waiting for the next head.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(31)).await; // the idleness under test
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    tokio::time::resume();
    let again = raw_exchange(&mut s, GET).await.expect("idle 31s of a 60s idle_timeout: still open");
    assert!(again.starts_with("HTTP/1.1 200"), "{again}");
}

#[tokio::test]
async fn max_connections_holds_a_third_connection_until_one_closes() {
    let g = gateway_with(
        "[limits]\nmax_connections = 2\n",
        &[("r.toml", "[[route]]\nname = \"ok\"\nrespond = { status = 200 }\n")],
    )
    .await;
    let mut a = TcpStream::connect(g.addr).await.unwrap();
    let mut b = TcpStream::connect(g.addr).await.unwrap();
    assert!(raw_exchange(&mut a, GET).await.unwrap().starts_with("HTTP/1.1 200"));
    assert!(raw_exchange(&mut b, GET).await.unwrap().starts_with("HTTP/1.1 200"));

    // The third connects (the kernel's backlog) but is not served while two are open.
    let mut c = TcpStream::connect(g.addr).await.unwrap();
    c.write_all(GET).await.unwrap();
    let mut buf = [0u8; 1024];
    let early = tokio::time::timeout(Duration::from_millis(500), c.read(&mut buf)).await;
    assert!(early.is_err(), "the third connection was served while two were open");

    drop(a);
    let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
        .await
        .expect("served once a slot frees")
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    assert!(raw_exchange(&mut b, GET).await.unwrap().starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn http2_max_concurrent_streams_is_advertised() {
    let g = gateway_with(
        "[limits]\nhttp2_max_concurrent_streams = 7\n",
        &[("r.toml", "[[route]]\nname = \"ok\"\nrespond = { status = 200 }\n")],
    )
    .await;
    let mut s = TcpStream::connect(g.addr).await.unwrap();
    // The h2c prior-knowledge preface and an empty SETTINGS frame.
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00").await.unwrap();
    // The server's first frame is its SETTINGS: a 9-byte header, then 6-byte (id, value) pairs.
    let mut head = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut head)).await.unwrap().unwrap();
    assert_eq!(head[3], 0x4, "first frame is SETTINGS");
    let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).await.unwrap();
    let max_streams = payload
        .chunks(6)
        .find(|p| u16::from_be_bytes([p[0], p[1]]) == 0x3)
        .map(|p| u32::from_be_bytes([p[2], p[3], p[4], p[5]]));
    assert_eq!(max_streams, Some(7));
}

/// Every accepted connection counts in `switchyard_connections_active`, from accept to close,
/// including one that has not sent a byte (and so is not being served yet).
#[tokio::test]
async fn silent_connections_count_as_active_from_accept_to_close() {
    let g = gateway_with("", &[("r.toml", "[[route]]\nname = \"ok\"\nrespond = { status = 200 }\n")]).await;
    let series = "switchyard_connections_active{listener=\"http\"}";
    let mut silent = Vec::new();
    for _ in 0..50 {
        silent.push(TcpStream::connect(g.addr).await.unwrap());
    }
    eventually("50 silent connections count", Duration::from_secs(10), || async {
        admin_metric(g.admin, series).await == 50.0
    })
    .await;
    drop(silent);
    eventually("closed connections no longer count", Duration::from_secs(10), || async {
        admin_metric(g.admin, series).await == 0.0
    })
    .await;
}
