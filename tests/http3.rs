//! HTTP/3 on a TLS listener with `http3 = true`, with an in-process quinn + h3 client: the same
//! routes as TCP, bodies streamed both ways, many streams on one connection, SNI and a
//! certificate rotated on disk, `alt-svc` on the TCP side, the access log and metrics, and the
//! drain.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use http::{Request, Response, StatusCode};
use support::certs::TestCa;
use support::*;

/// An HTTP/3 client connection to the gateway.
struct H3 {
    endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    send: h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    driver: tokio::task::JoinHandle<()>,
}

/// What one request got.
#[derive(Debug)]
struct Answer {
    head: Response<()>,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

impl H3 {
    async fn connect(
        addr: SocketAddr,
        sni: &str,
        ca: &TestCa,
    ) -> Result<H3, Box<dyn std::error::Error + Send + Sync>> {
        let mut tls =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(&[&rustls::version::TLS13])?
                .with_root_certificates(ca.roots())
                .with_no_client_auth();
        tls.alpn_protocols = vec![b"h3".to_vec()];
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(tls))?;
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
        endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
        let conn = tokio::time::timeout(Duration::from_secs(10), endpoint.connect(addr, sni)?).await??;
        let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(conn.clone())).await?;
        let driver = tokio::spawn(async move {
            let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
        });
        Ok(H3 { endpoint, conn, send, driver })
    }

    /// The certificate the server presented.
    fn leaf(&self) -> Vec<u8> {
        let certs = self.conn.peer_identity().unwrap();
        let certs = certs.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>().unwrap();
        certs[0].to_vec()
    }

    /// Send `req` with `body` (in `chunk`-sized DATA frames), read the whole answer.
    async fn request(&mut self, req: Request<()>, body: &[u8], chunk: usize) -> Answer {
        let fut = async {
            let mut s = self.send.send_request(req).await.unwrap();
            for c in body.chunks(chunk.max(1)) {
                s.send_data(Bytes::copy_from_slice(c)).await.unwrap();
            }
            s.finish().await.unwrap();
            let head = s.recv_response().await.unwrap();
            let mut got = Vec::new();
            while let Some(mut b) = s.recv_data().await.unwrap() {
                got.extend_from_slice(&b.copy_to_bytes(b.remaining()));
            }
            Answer { head, body: Bytes::from(got) }
        };
        tokio::time::timeout(Duration::from_secs(30), fut).await.expect("HTTP/3 request timed out")
    }

    async fn get(&mut self, url: &str) -> Answer {
        self.request(Request::get(url).body(()).unwrap(), b"", 1).await
    }

    async fn close(self) {
        drop(self.send);
        self.conn.close(0u32.into(), b"");
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
        self.driver.abort();
    }
}

/// A gateway with an `https` listener serving HTTP/3 from `certs` (and `routes`).
async fn h3_gateway(certs: &Path, extra: &str, routes: &str) -> (TestGateway, SocketAddr) {
    let cfg = format!(
        "[[listener]]\nname = \"https\"\nlisten = \"127.0.0.1:0\"\n[listener.tls]\ncerts_dir = \"{}\"\nhttp3 = true\n\n{extra}\n",
        certs.display()
    );
    let g = gateway_with(&cfg, &[("routes.toml", routes)]).await;
    let addr = g.gateway().listener_addr("https").unwrap();
    (g, addr)
}

/// A certs folder with one pair for `app.test` signed by a new CA.
fn certs() -> (tempfile::TempDir, TestCa) {
    let d = tempfile::tempdir().unwrap();
    let ca = TestCa::new("h3 test ca");
    ca.write_pair(d.path(), "app", &["app.test"]);
    (d, ca)
}

/// An upstream answering `GET /big` with `n` bytes (a repeating pattern) and echoing every
/// other request's body length and a checksum of it.
async fn big_and_sum(n: usize) -> FakeUpstream {
    upstream(move |req: Request<hyper::body::Incoming>| async move {
        use http_body_util::BodyExt;
        if req.uri().path() == "/big" {
            let body: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
            return Response::new(full(body));
        }
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let sum: u64 = body.iter().map(|&b| u64::from(b)).sum();
        Response::new(full(format!("{{\"len\":{},\"sum\":{sum}}}", body.len())))
    })
    .await
}

fn routes_to(up: &FakeUpstream) -> String {
    one_upstream("app", up.addr)
}

#[tokio::test]
async fn get_post_and_large_bodies_over_http3_with_alt_svc_on_tcp() {
    let up = big_and_sum(3 << 20).await;
    let (d, ca) = certs();
    let (g, addr) = h3_gateway(d.path(), "", &routes_to(&up)).await;
    let mut c = H3::connect(addr, "app.test", &ca).await.unwrap();

    let r = c.get("https://app.test/hello").await;
    assert_eq!(r.head.status(), StatusCode::OK);
    assert!(r.head.headers().contains_key("x-request-id"));
    assert!(r.head.headers().get("alt-svc").is_none(), "alt-svc is for the TCP side");

    // A 4 MiB request body streamed in 16 KiB frames reaches the upstream whole.
    let body: Vec<u8> = (0..4 << 20).map(|i| (i % 253) as u8).collect();
    let req = Request::post("https://app.test/upload").header("content-length", body.len()).body(()).unwrap();
    let r = c.request(req, &body, 16 * 1024).await;
    assert_eq!(r.head.status(), StatusCode::OK);
    let want_sum: u64 = body.iter().map(|&b| u64::from(b)).sum();
    assert_eq!(r.json(), serde_json::json!({ "len": body.len(), "sum": want_sum }));

    // A body longer than its content-length never reaches the upstream as it is.
    let req = Request::post("https://app.test/upload").header("content-length", "10").body(()).unwrap();
    let r = c.request(req, &[7u8; 20], 20).await;
    eprintln!("content-length mismatch: {} {:?}", r.head.status(), r.body);
    assert_ne!(r.head.status(), StatusCode::OK, "{:?}", r.body);

    // A 3 MiB response comes back whole.
    let r = c.get("https://app.test/big").await;
    assert_eq!(r.head.status(), StatusCode::OK);
    assert_eq!(r.body.len(), 3 << 20);
    assert!(r.body.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));

    // An unrouted path gets the gateway's own answer, as over TCP.
    g.write_routes(
        "routes.toml",
        "[[route]]\nname = \"only\"\npath = \"/only\"\nrespond = { status = 200 }\n",
    );
    eventually("reload applied", Duration::from_secs(10), || async {
        get(&g.admin_url("/config")).await.json()["version"] == 2
    })
    .await;
    let r = c.get("https://app.test/elsewhere").await;
    assert_eq!(r.head.status(), StatusCode::NOT_FOUND);
    assert_eq!(r.head.headers()["x-switchyard-error"], "no_route");
    c.close().await;

    // The TCP side of the listener advertises HTTP/3 on the same port.
    let tcp = https_get(addr, "app.test", &ca).await;
    assert_eq!(tcp.headers()["alt-svc"], format!("h3=\":{}\"; ma=86400", addr.port()).as_str());
}

/// One HTTPS request over TCP (HTTP/1.1).
async fn https_get(addr: SocketAddr, sni: &str, ca: &TestCa) -> Response<hyper::body::Incoming> {
    let mut tls =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(ca.roots())
            .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from(sni.to_owned()).unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls)).connect(name, tcp).await.unwrap();
    let (mut s, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    s.send_request(Request::get("/").header("host", sni).body(full("")).unwrap()).await.unwrap()
}

#[tokio::test]
async fn a_hundred_concurrent_streams_on_one_connection() {
    let up = echo("up").await;
    let (d, ca) = certs();
    let (_g, addr) = h3_gateway(d.path(), "", &routes_to(&up)).await;
    let c = H3::connect(addr, "app.test", &ca).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..100 {
        let mut send = c.send.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = send
                .send_request(Request::get(format!("https://app.test/n/{i}")).body(()).unwrap())
                .await
                .unwrap();
            s.finish().await.unwrap();
            let head = s.recv_response().await.unwrap();
            let mut body = Vec::new();
            while let Some(mut b) = s.recv_data().await.unwrap() {
                body.extend_from_slice(&b.copy_to_bytes(b.remaining()));
            }
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            (head.status(), v["path"].as_str().unwrap().to_owned(), i)
        }));
    }
    for t in tasks {
        let (status, path, i) = tokio::time::timeout(Duration::from_secs(30), t).await.unwrap().unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(path, format!("/n/{i}"));
    }
    c.close().await;
}

#[tokio::test]
async fn sni_picks_the_certificate_and_a_rotated_one_serves_the_next_connection() {
    let up = echo("up").await;
    let d = tempfile::tempdir().unwrap();
    let ca = TestCa::new("h3 sni ca");
    let a = ca.write_pair(d.path(), "a", &["a.test"]);
    let b = ca.write_pair(d.path(), "b", &["b.test"]);
    let (_g, addr) = h3_gateway(d.path(), "", &routes_to(&up)).await;
    let mut ca_conn = H3::connect(addr, "a.test", &ca).await.unwrap();
    assert_eq!(ca_conn.leaf(), a);
    assert_eq!(ca_conn.get("https://a.test/").await.head.status(), StatusCode::OK);
    let cb = H3::connect(addr, "b.test", &ca).await.unwrap();
    assert_eq!(cb.leaf(), b);
    cb.close().await;
    // An unknown name gets no certificate: the handshake fails.
    assert!(H3::connect(addr, "c.test", &ca).await.is_err());

    // Rotate a.test on disk: the next connection gets the new certificate.
    let a2 = ca.write_pair(d.path(), "a", &["a.test"]);
    assert_ne!(a, a2);
    eventually("the rotated certificate is served over QUIC", Duration::from_secs(10), || async {
        match H3::connect(addr, "a.test", &ca).await {
            Ok(c) => {
                let new = c.leaf() == a2;
                c.close().await;
                new
            }
            Err(_) => false,
        }
    })
    .await;
    // The connection made before keeps working.
    assert_eq!(ca_conn.get("https://a.test/").await.head.status(), StatusCode::OK);
    ca_conn.close().await;
}

#[tokio::test]
async fn http3_is_logged_and_counted_like_the_other_protocols() {
    let up = echo("up").await;
    let (d, ca) = certs();
    let log = d.path().join("access.log");
    let extra = format!("[access_log]\nenabled = true\npath = \"{}\"\n", log.display());
    let (g, addr) = h3_gateway(d.path(), &extra, &routes_to(&up)).await;
    let mut c = H3::connect(addr, "app.test", &ca).await.unwrap();
    assert_eq!(c.get("https://app.test/logged").await.head.status(), StatusCode::OK);
    assert_eq!(admin_metric(g.admin, "switchyard_connections_active{listener=\"https\"}").await, 1.0);
    let handshakes =
        admin_metric(g.admin, "switchyard_tls_handshakes_total{listener=\"https\",result=\"success\"}").await;
    assert!(handshakes >= 1.0);
    eventually("the access log line is written", Duration::from_secs(10), || async {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("\"/logged\""))
    })
    .await;
    let line = std::fs::read_to_string(&log).unwrap();
    let line: serde_json::Value =
        serde_json::from_str(line.lines().find(|l| l.contains("\"/logged\"")).unwrap()).unwrap();
    assert_eq!(line["protocol"], "HTTP/3");
    assert_eq!(line["listener"], "https");
    assert_eq!(line["status"], 200);
    let requests = admin_metric(
        g.admin,
        "switchyard_requests_total{listener=\"https\",route=\"app\",upstream=\"app\",code=\"200\"}",
    )
    .await;
    assert_eq!(requests, 1.0);
    c.close().await;
    eventually("the QUIC connection is no longer counted", Duration::from_secs(10), || async {
        admin_metric(g.admin, "switchyard_connections_active{listener=\"https\"}").await == 0.0
    })
    .await;
}

#[tokio::test]
async fn max_connections_counts_quic_connections_too() {
    let up = echo("up").await;
    let (d, ca) = certs();
    let (_g, addr) = h3_gateway(d.path(), "[limits]\nmax_connections = 1\n", &routes_to(&up)).await;
    let mut first = H3::connect(addr, "app.test", &ca).await.unwrap();
    assert_eq!(first.get("https://app.test/").await.head.status(), StatusCode::OK);
    // The one permit is held: a second QUIC connection is refused (the client would fall back
    // to TCP, where it waits).
    assert!(H3::connect(addr, "app.test", &ca).await.is_err());
    first.close().await;
    eventually("a connection is accepted once the first closed", Duration::from_secs(10), || async {
        match H3::connect(addr, "app.test", &ca).await {
            Ok(c) => {
                c.close().await;
                true
            }
            Err(_) => false,
        }
    })
    .await;
}

#[tokio::test]
async fn drain_lets_the_request_in_flight_finish_then_closes() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let slow = gated(Arc::clone(&gate)).await;
    let (d, ca) = certs();
    let (mut g, addr) = h3_gateway(d.path(), "", &routes_to(&slow)).await;
    let mut c = H3::connect(addr, "app.test", &ca).await.unwrap();
    let mut send = c.send.clone();
    let pending = tokio::spawn(async move {
        let mut s = send.send_request(Request::get("https://app.test/slow").body(()).unwrap()).await.unwrap();
        s.finish().await.unwrap();
        let head = s.recv_response().await.unwrap();
        while s.recv_data().await.unwrap().is_some() {}
        head.status()
    });
    eventually("the request is in flight", Duration::from_secs(10), || async { slow.hits() == 1 }).await;
    let gw = g.gw.take().unwrap();
    let drain = tokio::spawn(gw.drain());
    // GOAWAY went out: a new request on this connection is not served.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let late = tokio::time::timeout(Duration::from_secs(5), c.get_status("https://app.test/late")).await;
    eprintln!("late request after GOAWAY: {late:?}");
    assert!(!matches!(late, Ok(Some(StatusCode::OK))), "a request after GOAWAY was served: {late:?}");
    gate.add_permits(1);
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(10), pending).await.unwrap().unwrap(),
        StatusCode::OK
    );
    assert!(tokio::time::timeout(Duration::from_secs(10), drain).await.unwrap().unwrap(), "drained in time");
    assert_eq!(slow.hits(), 1, "the late request never reached the upstream");
    // The endpoint is closed: a new connection fails.
    assert!(H3::connect(addr, "app.test", &ca).await.is_err());
    c.close().await;
}

impl H3 {
    /// A GET's status, or None when the request was refused or reset.
    async fn get_status(&mut self, url: &str) -> Option<StatusCode> {
        let mut s = self.send.send_request(Request::get(url).body(()).unwrap()).await.ok()?;
        s.finish().await.ok()?;
        Some(s.recv_response().await.ok()?.status())
    }
}

#[tokio::test]
async fn a_connection_with_no_request_closes_at_header_read_timeout_and_an_idle_one_at_idle_timeout() {
    let up = echo("up").await;
    let (d, ca) = certs();
    let limits = "[limits]\nheader_read_timeout = \"1s\"\nidle_timeout = \"2s\"\n";
    let (g, addr) = h3_gateway(d.path(), limits, &routes_to(&up)).await;
    let gauge = "switchyard_connections_active{listener=\"https\"}";

    // Handshake done, no request: closed by the gateway, not by QUIC's 30 s idle timer.
    let silent = H3::connect(addr, "app.test", &ca).await.unwrap();
    let started = std::time::Instant::now();
    let why = tokio::time::timeout(Duration::from_secs(10), silent.conn.closed()).await.expect("closed");
    eprintln!("silent connection closed after {:?}: {why}", started.elapsed());
    assert!(matches!(why, quinn::ConnectionError::ApplicationClosed(_)), "{why}");
    silent.close().await;

    // One request, then nothing: GOAWAY and close after idle_timeout.
    let mut idle = H3::connect(addr, "app.test", &ca).await.unwrap();
    assert_eq!(idle.get("https://app.test/").await.head.status(), StatusCode::OK);
    let started = std::time::Instant::now();
    let why = tokio::time::timeout(Duration::from_secs(10), idle.conn.closed()).await.expect("closed");
    eprintln!("idle connection closed after {:?}: {why}", started.elapsed());
    assert!(matches!(why, quinn::ConnectionError::ApplicationClosed(_)), "{why}");
    idle.close().await;
    eventually("no QUIC connection is counted", Duration::from_secs(10), || async {
        admin_metric(g.admin, gauge).await == 0.0
    })
    .await;
}

#[tokio::test]
async fn trailers_pass_both_ways_over_http3() {
    use http_body_util::BodyExt;
    // An h2c upstream that answers with the request's trailer `x-sum` as its own `x-got`.
    let up = upstream(|req: Request<hyper::body::Incoming>| async move {
        let got = req.into_body().collect().await.unwrap();
        let sum = got.trailers().and_then(|t| t.get("x-sum").cloned());
        let body = got.to_bytes();
        let frames = vec![
            Ok::<_, std::io::Error>(http_body::Frame::data(body)),
            Ok(http_body::Frame::trailers({
                let mut t = http::HeaderMap::new();
                t.insert("x-got", sum.unwrap_or_else(|| "none".parse().unwrap()));
                t
            })),
        ];
        Response::new(
            http_body_util::StreamBody::new(futures_util::stream::iter(frames)).map_err(|e| e.into()).boxed(),
        )
    })
    .await;
    let (d, ca) = certs();
    let routes = format!(
        "[[upstream]]\nname = \"u\"\nendpoints = [\"{}\"]\nprotocol = \"h2c\"\n[[route]]\nname = \"r\"\nupstream = \"u\"\n",
        up.addr
    );
    let (_g, addr) = h3_gateway(d.path(), "", &routes).await;
    let c = H3::connect(addr, "app.test", &ca).await.unwrap();
    let mut send = c.send.clone();
    let mut s = send
        .send_request(Request::post("https://app.test/t").header("te", "trailers").body(()).unwrap())
        .await
        .unwrap();
    s.send_data(Bytes::from_static(b"payload")).await.unwrap();
    let mut t = http::HeaderMap::new();
    t.insert("x-sum", "abc123".parse().unwrap());
    s.send_trailers(t).await.unwrap();
    s.finish().await.unwrap();
    let head = s.recv_response().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    let mut body = Vec::new();
    while let Some(mut b) = s.recv_data().await.unwrap() {
        body.extend_from_slice(&b.copy_to_bytes(b.remaining()));
    }
    assert_eq!(body, b"payload");
    let trailers = s.recv_trailers().await.unwrap().expect("response trailers");
    assert_eq!(trailers["x-got"], "abc123");
    c.close().await;
}

#[tokio::test]
async fn connection_specific_header_fields_make_a_request_malformed() {
    let up = echo("up").await;
    let (d, ca) = certs();
    let (_g, addr) = h3_gateway(d.path(), "", &routes_to(&up)).await;
    let mut c = H3::connect(addr, "app.test", &ca).await.unwrap();
    for (name, value) in [
        ("transfer-encoding", "chunked"),
        ("connection", "keep-alive"),
        ("keep-alive", "timeout=5"),
        ("upgrade", "websocket"),
        ("te", "gzip"),
    ] {
        let mut s = c
            .send
            .send_request(Request::get("https://app.test/").header(name, value).body(()).unwrap())
            .await
            .unwrap();
        s.finish().await.unwrap();
        assert!(s.recv_response().await.is_err(), "{name}: {value} was answered");
    }
    // `te: trailers` is allowed, and the connection still serves.
    let r =
        c.request(Request::get("https://app.test/").header("te", "trailers").body(()).unwrap(), b"", 1).await;
    assert_eq!(r.head.status(), StatusCode::OK);
    c.close().await;
}

#[tokio::test]
async fn at_drain_timeout_an_http3_request_still_running_is_cut() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let stuck = gated(Arc::clone(&gate)).await;
    let (d, ca) = certs();
    let extra = "[gateway]\nroutes_dir = \"routes\"\ndrain_timeout = \"1s\"\n";
    let (mut g, addr) = h3_gateway(d.path(), extra, &routes_to(&stuck)).await;
    let c = H3::connect(addr, "app.test", &ca).await.unwrap();
    let mut send = c.send.clone();
    let pending = tokio::spawn(async move {
        let mut s = send.send_request(Request::get("https://app.test/stuck").body(()).unwrap()).await.ok()?;
        s.finish().await.ok()?;
        Some(s.recv_response().await.ok()?.status())
    });
    eventually("the request is in flight", Duration::from_secs(10), || async { stuck.hits() == 1 }).await;
    let clean = tokio::time::timeout(Duration::from_secs(10), g.gw.take().unwrap().drain()).await.unwrap();
    assert!(!clean, "the drain cannot be clean with a request that never ends");
    // The client learns at once that its request is gone: it does not wait for its own timeout.
    let got =
        tokio::time::timeout(Duration::from_secs(5), pending).await.expect("the request ended").unwrap();
    assert_eq!(got, None, "a request cut by the drain timeout got an answer");
    gate.add_permits(1);
    c.close().await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_after_send_timeout() {
    // 8 MiB answers: more than the client's flow-control windows and quinn's send buffer, so
    // the gateway's send waits on the client.
    let up = big_and_sum(8 << 20).await;
    let (d, ca) = certs();
    let (g, addr) = h3_gateway(d.path(), "[limits]\nsend_timeout = \"1s\"\n", &routes_to(&up)).await;
    let c = H3::connect(addr, "app.test", &ca).await.unwrap();
    let mut send = c.send.clone();
    let mut s = send.send_request(Request::get("https://app.test/big").body(()).unwrap()).await.unwrap();
    s.finish().await.unwrap();
    assert_eq!(s.recv_response().await.unwrap().status(), StatusCode::OK);
    // Never read the body. The gateway closes the connection (not QUIC's 30 s idle timer: the
    // client's stack keeps acknowledging packets).
    let started = std::time::Instant::now();
    let why = tokio::time::timeout(Duration::from_secs(15), c.conn.closed()).await.expect("closed");
    eprintln!("non-reading client closed after {:?}: {why}", started.elapsed());
    assert!(matches!(why, quinn::ConnectionError::ApplicationClosed(_)), "{why}");
    eventually("the connection is no longer counted", Duration::from_secs(10), || async {
        admin_metric(g.admin, "switchyard_connections_active{listener=\"https\"}").await == 0.0
    })
    .await;
    drop(s);
    c.close().await;
}
