//! Test support: fake upstreams on 127.0.0.1:0 whose behaviour the test controls (with hit and
//! connection counters), a gateway launcher that writes a config into a temp dir and starts the
//! real gateway in-process, and a small HTTP client.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use switchyard::Gateway;

pub type TestBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

pub fn full(b: impl Into<Bytes>) -> TestBody {
    Full::new(b.into()).map_err(|e| match e {}).boxed()
}

/// A fake upstream.
#[derive(Debug)]
pub struct FakeUpstream {
    pub addr: SocketAddr,
    /// Requests received.
    pub hits: Arc<AtomicUsize>,
    /// TCP connections accepted.
    pub conns: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeUpstream {
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
    pub fn conns(&self) -> usize {
        self.conns.load(Ordering::SeqCst)
    }
    pub fn authority(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Start an upstream answering with `handler`.
pub async fn upstream<F, Fut>(handler: F) -> FakeUpstream
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<TestBody>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let conns = Arc::new(AtomicUsize::new(0));
    let handler = Arc::new(handler);
    let (h, c) = (Arc::clone(&hits), Arc::clone(&conns));
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            c.fetch_add(1, Ordering::SeqCst);
            let handler = Arc::clone(&handler);
            let h = Arc::clone(&h);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    h.fetch_add(1, Ordering::SeqCst);
                    let fut = handler(req);
                    async move { Ok::<_, Infallible>(fut.await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    FakeUpstream { addr, hits, conns, task }
}

/// A real WebSocket server on 127.0.0.1:0 that sends each text or binary message back, and
/// says nothing unless spoken to.
pub async fn ws_echo() -> SocketAddr {
    use futures_util::{SinkExt, StreamExt};
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(s).await else { return };
                while let Some(Ok(m)) = ws.next().await {
                    if (m.is_text() || m.is_binary()) && ws.send(m).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// An upstream running switchyard's own `echo` (JSON description of each request).
pub async fn echo(name: &str) -> FakeUpstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(switchyard::echo::serve(listener, name.to_owned()));
    FakeUpstream { addr, hits: Default::default(), conns: Default::default(), task }
}

/// A loopback TCP port this test holds for as long as the value lives: a socket bound to it
/// that never listens. While nothing listens on the port, a connection to it is refused (RST,
/// `ECONNREFUSED`), and as the port is never released the kernel hands it to nobody else in
/// the meantime (not to a port-0 bind, not to a client as its source port). The hold has
/// `SO_REUSEADDR`, so the test's own listener (tokio's, or a server process's, which set it
/// too) can come up on the same port later, beside the hold, and go away again: the port
/// stays held throughout. (Only another `SO_REUSEADDR` socket naming this very port could
/// bind it too. The tests name ports they were not given only for ZooKeeper, below the
/// kernel's ephemeral range, where no port-0 hold ever is: see zk.rs.)
#[derive(Debug)]
pub struct PortHold {
    socket: socket2::Socket,
    addr: SocketAddr,
}

impl PortHold {
    /// A fresh port on 127.0.0.1.
    pub fn new() -> PortHold {
        PortHold::on(SocketAddr::from(([127, 0, 0, 1], 0))).expect("cannot bind 127.0.0.1:0")
    }

    /// Exactly `addr` (an error when something else has it).
    pub fn on(addr: SocketAddr) -> std::io::Result<PortHold> {
        use socket2::{Domain, Protocol, Socket, Type};
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.bind(&addr.into())?;
        let addr = socket.local_addr()?.as_socket().expect("an IP socket");
        Ok(PortHold { socket, addr })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// A listener on the held port, beside the hold (which keeps the port once it is dropped).
    pub fn listen(&self) -> TcpListener {
        let socket = match self.addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
        }
        .unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket
            .bind(self.addr)
            .unwrap_or_else(|e| panic!("cannot listen on the held port {}: {e}", self.addr));
        socket.listen(1024).unwrap()
    }
}

impl Default for PortHold {
    fn default() -> Self {
        PortHold::new()
    }
}

/// An address that refuses connections for as long as the returned hold lives (see
/// [`PortHold`]): keep it in a variable for the whole test and use `.addr()`.
pub fn dead_addr() -> PortHold {
    PortHold::new()
}

/// A gateway running in-process from files in a temp dir.
#[derive(Debug)]
pub struct TestGateway {
    pub gw: Option<Gateway>,
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
}

impl TestGateway {
    pub fn routes_dir(&self) -> PathBuf {
        self.dir.path().join("routes")
    }
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }
    pub fn gateway(&self) -> &Gateway {
        self.gw.as_ref().unwrap()
    }
    /// Write (or replace) a route file atomically (write a temp file, then rename).
    pub fn write_routes(&self, name: &str, text: &str) {
        write_atomic(&self.routes_dir().join(name), text);
    }
}

pub fn write_atomic(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Default `[limits]` etc. are used unless `extra` (appended to gateway.toml) says otherwise.
/// An `extra` holding its own `[gateway]` or `[admin]` table replaces the default one (which is
/// `routes_dir = "routes"`, `drain_timeout = "5s"`, and an admin API on `127.0.0.1:0`).
pub async fn gateway_with(extra: &str, files: &[(&str, &str)]) -> TestGateway {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("routes")).unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join("routes").join(name), text).unwrap();
    }
    let gateway = if extra.contains("[gateway]") {
        ""
    } else {
        "[gateway]\nroutes_dir = \"routes\"\ndrain_timeout = \"5s\"\n\n"
    };
    let admin = if extra.contains("[admin]") { "" } else { "[admin]\nlisten = \"127.0.0.1:0\"\n\n" };
    let toml =
        format!("{gateway}{admin}[[listener]]\nname = \"http\"\nlisten = \"127.0.0.1:0\"\n\n{extra}\n");
    let toml = if extra.contains("[access_log]") {
        toml
    } else {
        format!("{toml}\n[access_log]\nenabled = false\n")
    };
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, toml).unwrap();
    let cfg = switchyard::config::load_gateway(&path).unwrap_or_else(|e| panic!("{e}"));
    let gw = Gateway::start(cfg).await.unwrap_or_else(|e| panic!("{e}"));
    let addr = gw.listener_addr("http").unwrap();
    let admin = gw.admin_addr().unwrap();
    TestGateway { gw: Some(gw), dir, addr, admin }
}

pub async fn gateway(routes: &str) -> TestGateway {
    gateway_with("", &[("routes.toml", routes)]).await
}

/// A plain HTTP/1.1 client with its own pool.
pub fn client() -> Client<HttpConnector, TestBody> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// An h2c (prior knowledge) client.
pub fn h2c_client() -> Client<HttpConnector, TestBody> {
    Client::builder(TokioExecutor::new()).http2_only(true).build(HttpConnector::new())
}

/// A response, read whole.
#[derive(Debug)]
pub struct Got {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Got {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn error(&self) -> Option<&str> {
        self.header("x-switchyard-error")
    }
}

pub async fn send(req: Request<TestBody>) -> Got {
    send_with(&client(), req).await
}

pub async fn send_with(c: &Client<HttpConnector, TestBody>, req: Request<TestBody>) -> Got {
    let res = tokio::time::timeout(Duration::from_secs(20), c.request(req))
        .await
        .expect("request timed out")
        .expect("request failed");
    let (parts, body) = res.into_parts();
    let body = body.collect().await.expect("body failed").to_bytes();
    Got { status: parts.status, headers: parts.headers, body }
}

pub async fn get(url: &str) -> Got {
    send(Request::get(url).body(full("")).unwrap()).await
}

pub async fn get_host(url: &str, host: &str) -> Got {
    send(Request::get(url).header("host", host).body(full("")).unwrap()).await
}

/// A status-only upstream handler.
pub fn status(
    code: u16,
) -> impl Fn(Request<Incoming>) -> std::future::Ready<Response<TestBody>> + Send + Sync + 'static {
    move |_| {
        let mut r = Response::new(full(""));
        *r.status_mut() = StatusCode::from_u16(code).unwrap();
        std::future::ready(r)
    }
}

/// Write raw bytes to `addr` and read until the server closes or `wait` passes.
pub async fn raw(addr: SocketAddr, bytes: &[u8], wait: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The path of the built `switchyard` binary (cargo builds it for integration tests).
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_switchyard"))
}

/// Poll `check` every 20 ms until it returns true, panicking with `what` if `within` passes
/// first; returns how long that took. Used instead of sleeps wherever there is an observable
/// condition to wait for. The only polling helper of the tests.
pub async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = tokio::time::Instant::now();
    let deadline = start + within;
    loop {
        if check().await {
            return start.elapsed();
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("not within {within:?}: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The JSON lines of the access log at `path`, once `enough` says there are enough of them
/// (within 10 s; the writer batches, so a line can lag its request a little).
pub async fn access_log_lines(
    path: &std::path::Path,
    what: &str,
    enough: impl Fn(usize) -> bool,
) -> Vec<serde_json::Value> {
    let mut lines: Vec<serde_json::Value> = Vec::new();
    eventually(what, Duration::from_secs(10), || {
        lines = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let done = enough(lines.len());
        async move { done }
    })
    .await;
    lines
}

/// A route file with one upstream `name` at `addr` and one route `name` (any host, `/`).
pub fn one_upstream(name: &str, addr: SocketAddr) -> String {
    format!(
        "[[upstream]]\nname = \"{name}\"\nendpoints = [\"{addr}\"]\n\n[[route]]\nname = \"{name}\"\nupstream = \"{name}\"\n"
    )
}

/// The value of the sample `series` (name with labels exactly as exposed, e.g.
/// `switchyard_config_reloads_total{result="success"}`) in a Prometheus text exposition.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(series)?;
        rest.strip_prefix(' ')?.split_whitespace().next()?.parse().ok()
    })
}

/// `GET /metrics` on the admin API, and one series' value (0 when absent).
pub async fn admin_metric(admin: SocketAddr, series: &str) -> f64 {
    let m = get(&format!("http://{admin}/metrics")).await;
    metric(&m.text(), series).unwrap_or(0.0)
}

/// An upstream whose requests wait until the test opens `gate` (with `gate.add_permits`), so
/// a test can hold a request in flight for exactly as long as it needs to.
pub async fn gated(gate: Arc<tokio::sync::Semaphore>) -> FakeUpstream {
    upstream(move |_| {
        let gate = Arc::clone(&gate);
        async move {
            let _ = gate.acquire().await.map(|p| p.forget());
            Response::new(full("released"))
        }
    })
    .await
}

/// One HTTP/1.1 exchange on a raw keep-alive connection: write `req`, read one response
/// (head plus a `content-length` body). `None` if the server closed the connection first.
pub async fn raw_exchange(s: &mut tokio::net::TcpStream, req: &[u8]) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(req).await.ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length").then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return Some(text);
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk)).await.ok()?.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Wait until the server closes `s` (EOF or reset); returns how long that took from `since`.
pub async fn closed_after(
    s: &mut tokio::net::TcpStream,
    since: std::time::Instant,
    within: Duration,
) -> Duration {
    use tokio::io::AsyncReadExt;
    let mut chunk = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Err(_) => panic!("the connection was still open after {within:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return since.elapsed(),
            Ok(Ok(_)) => continue,
        }
    }
}

pub mod browser;
pub mod certs;
pub mod consul_double;
pub mod consul_kv;
pub mod disc;
pub mod dns;
pub mod zk;

pub mod fleet;
pub mod proc;

/// The `/upstreams` entry of endpoint `addr` of upstream `up`.
pub async fn endpoint_view(gw: &TestGateway, up: &str, addr: &str) -> serde_json::Value {
    let v = get(&gw.admin_url("/upstreams")).await.json();
    let u = v["upstreams"].as_array().unwrap().iter().find(|u| u["name"] == up).unwrap().clone();
    u["endpoints"].as_array().unwrap().iter().find(|e| e["address"] == addr).unwrap().clone()
}

/// A raw HTTP/1 upstream on 127.0.0.1, scripted by request path: for each request head read on
/// a connection, `answer(path)` gives the bytes written back (head and body exactly as given,
/// however malformed) and whether the connection then stays open for the next request.
/// Counts the connections it accepted; stops when dropped.
pub struct RawUpstream {
    pub addr: SocketAddr,
    conns: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl RawUpstream {
    pub fn conns(&self) -> usize {
        self.conns.load(Ordering::SeqCst)
    }
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn raw_upstream(answer: fn(&str) -> (Vec<u8>, bool)) -> RawUpstream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let n = Arc::clone(&conns);
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            n.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                loop {
                    // One request head (the gateway sends these tests no body).
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(k) => head.extend_from_slice(&buf[..k]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head).into_owned();
                    let path = head.split(' ').nth(1).unwrap_or_default();
                    let (bytes, keep) = answer(path);
                    if s.write_all(&bytes).await.is_err() || !keep {
                        return;
                    }
                }
            });
        }
    });
    RawUpstream { addr, conns, task }
}
