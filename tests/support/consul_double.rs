//! A Consul HTTP API double, written from Consul's API documentation (no Consul binary can be
//! installed on these machines). It serves what switchyard's consul source and the tests use:
//!
//! - `GET /v1/health/service/<name>` with `passing`, `tag`, `dc`, and blocking queries: with an
//!   `index` at or above the current one the request is held until the catalog changes or
//!   `wait` (default 5 m, max 10 m) passes; every answer carries `X-Consul-Index`. The entries
//!   are `{Node: {Node, Address, Datacenter}, Service: {ID, Service, Tags, Address, Port,
//!   Weights}, Checks: [...]}`.
//! - The agent endpoints the tests drive it with, as on a real agent:
//!   `PUT /v1/agent/service/register` (`ID`, `Name`, `Tags`, `Address`, `Port`, `Weights`,
//!   `Check: {TTL}` — a TTL check starts critical, like Consul's), `PUT
//!   /v1/agent/service/deregister/<id>`, `PUT /v1/agent/check/pass|fail/service:<id>`.
//! - An ACL token: when set, requests without a matching `X-Consul-Token` get 403.
//! - HTTPS on a second port ([`ConsulDouble::serve_tls`]), as an agent with both `ports.http`
//!   and `ports.https` set serves the same API on both; the tests keep registering over HTTP.
//!
//! - The KV store (`/v1/kv`), transactions (`/v1/txn`) and sessions (`/v1/session`), with
//!   blocking KV and session reads: see consul_kv.rs.
//!
//! One raft-style index serves the whole double, as on a server: every write (catalog, KV,
//! session) takes the next one. Like Consul, each read answers with the index of what it read,
//! not the raft index: the health endpoint with the index of the last catalog write, so a KV
//! write does not wake a health query.
//!
//! Controls a real agent does not have: count requests and the blocking queries held right
//! now, stop and restart (an outage), move the index backwards (a restarted server), answer
//! blocking queries at once (a misbehaving proxy), swap the HTTPS certificate (an agent
//! restarted with a certificate from another CA); for KV and sessions see consul_kv.rs.
//!
//! Both ports are held ([`PortHold`]) for the double's whole life: an outage closes the
//! listener and its connections (new connections are refused), never the port, and a restart
//! listens on it again.
//!
//! `SWITCHYARD_CONSUL_ADDR=http://127.0.0.1:8500` makes [`Consul::start`] use a real
//! `consul agent -dev` instead; tests that need the double-only controls then say so and skip
//! those steps.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio_rustls::TlsAcceptor;

use super::PortHold;

#[derive(Debug, Clone)]
struct Instance {
    id: String,
    name: String,
    address: String,
    port: u16,
    tags: Vec<String>,
    weight: Option<u64>,
    passing: bool,
}

#[derive(Debug, Default)]
pub(super) struct Inner {
    services: BTreeMap<String, Instance>,
    token: Option<String>,
    answer_at_once: bool,
    /// The index of the last catalog write: what health queries answer with and block on.
    catalog_index: u64,
    /// KV entries, tombstones, sessions and lock delays (consul_kv.rs).
    pub(super) kv: super::consul_kv::Store,
}

/// What the listeners, the session reaper and the controls share. Every write holds `inner`
/// while it takes its index from `index` ([`DoubleState::next_index`]) and changes the state,
/// so a blocking query woken by the new index sees the change.
#[derive(Debug)]
pub(super) struct DoubleState {
    pub(super) inner: Mutex<Inner>,
    /// (raft index, restarts): a restart releases every held query even if the index went down.
    pub(super) index: watch::Sender<(u64, u64)>,
    health_requests: AtomicUsize,
    pub(super) kv_requests: AtomicUsize,
    pub(super) txn_requests: AtomicUsize,
    pub(super) session_requests: AtomicUsize,
    /// Health blocking queries being held right now.
    held: AtomicUsize,
    /// KV and session blocking queries being held right now.
    pub(super) kv_held: AtomicUsize,
    /// Wakes the session reaper when a session with a TTL is created.
    pub(super) sessions_changed: Notify,
}

impl DoubleState {
    /// The next raft index, for a write. The caller holds `inner` (hence the argument) until its
    /// change is made.
    pub(super) fn next_index(&self, _locked: &mut Inner) -> u64 {
        let mut next = 0;
        self.index.send_modify(|(i, _)| {
            *i += 1;
            next = *i;
        });
        next
    }
}

/// Counts one held blocking query for as long as it lives (also when the client goes away).
struct Holding<'a>(&'a AtomicUsize);

impl<'a> Holding<'a> {
    fn new(held: &'a AtomicUsize) -> Self {
        held.fetch_add(1, Ordering::SeqCst);
        Holding(held)
    }
}

impl Drop for Holding<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The double.
#[derive(Debug)]
pub struct ConsulDouble {
    pub addr: SocketAddr,
    /// The HTTP port, held while the listener comes and goes.
    port: PortHold,
    pub(super) state: Arc<DoubleState>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The HTTPS port and listener once [`serve_tls`](Self::serve_tls) was called.
    tls: Mutex<Option<(PortHold, tokio::task::JoinHandle<()>)>>,
    /// Invalidates sessions whose TTL ran out; runs through outages, as a server's clock would.
    reaper: tokio::task::JoinHandle<()>,
}

impl ConsulDouble {
    pub async fn start() -> ConsulDouble {
        let port = PortHold::new();
        let state = Arc::new(DoubleState {
            inner: Mutex::new(Inner { catalog_index: 10, ..Inner::default() }),
            index: watch::channel((10, 0)).0,
            health_requests: AtomicUsize::new(0),
            kv_requests: AtomicUsize::new(0),
            txn_requests: AtomicUsize::new(0),
            session_requests: AtomicUsize::new(0),
            held: AtomicUsize::new(0),
            kv_held: AtomicUsize::new(0),
            sessions_changed: Notify::new(),
        });
        let task = serve(port.listen(), Arc::clone(&state), None);
        let reaper = tokio::spawn(super::consul_kv::reap_sessions(Arc::clone(&state)));
        ConsulDouble {
            addr: port.addr(),
            port,
            state,
            task: Mutex::new(Some(task)),
            tls: Mutex::new(None),
            reaper,
        }
    }

    /// Serve the same API over HTTPS with `cfg` on a second loopback port, and return it.
    /// Called again, it restarts that listener on the same port with the new `cfg` (an agent
    /// restarted with another certificate): every open HTTPS connection is closed.
    pub async fn serve_tls(&self, cfg: Arc<rustls::ServerConfig>) -> SocketAddr {
        let old = self.tls.lock().unwrap().take();
        let port = match old {
            Some((port, task)) => {
                end(task).await;
                port
            }
            None => PortHold::new(),
        };
        let addr = port.addr();
        let task = serve(port.listen(), Arc::clone(&self.state), Some(TlsAcceptor::from(cfg)));
        *self.tls.lock().unwrap() = Some((port, task));
        addr
    }

    /// `GET /v1/health/service` requests received so far.
    pub fn health_requests(&self) -> usize {
        self.state.health_requests.load(Ordering::SeqCst)
    }

    /// Health blocking queries being held right now (waiting for a change or for their `wait`);
    /// KV and session ones are counted by [`kv_held`](Self::kv_held).
    pub fn held(&self) -> usize {
        self.state.held.load(Ordering::SeqCst)
    }

    /// Require this ACL token.
    pub fn require_token(&self, token: &str) {
        self.state.inner.lock().unwrap().token = Some(token.to_owned());
    }

    /// Answer blocking queries at once (ignore `index`), as a broken proxy would.
    pub fn answer_at_once(&self, yes: bool) {
        self.state.inner.lock().unwrap().answer_at_once = yes;
        self.state.index.send_modify(|_| {});
    }

    /// Move the index back to `to` (a restarted server that lost its raft log), waking every
    /// blocked query: health queries answer with `to`. KV entries and sessions keep the
    /// indexes they have; the next writes take `to + 1` on.
    pub fn reset_index(&self, to: u64) {
        let mut inner = self.state.inner.lock().unwrap();
        inner.catalog_index = to;
        self.state.index.send_modify(|(i, r)| {
            *i = to;
            *r += 1;
        });
    }

    /// An outage: close the listener and every connection (returns once they are closed).
    /// The port stays held, so connecting is refused until [`restart`](Self::restart).
    pub async fn stop(&self) {
        let task = self.task.lock().unwrap().take();
        if let Some(t) = task {
            end(t).await;
        }
    }

    /// Serve again on the same port.
    pub async fn restart(&self) {
        self.stop().await;
        *self.task.lock().unwrap() = Some(serve(self.port.listen(), Arc::clone(&self.state), None));
    }
}

impl Drop for ConsulDouble {
    fn drop(&mut self) {
        self.reaper.abort();
        if let Some(t) = self.task.lock().unwrap().take() {
            t.abort();
        }
        if let Some((_, t)) = self.tls.lock().unwrap().take() {
            t.abort();
        }
    }
}

/// Abort a serving task and wait until it is gone: its listener is closed then.
async fn end(task: tokio::task::JoinHandle<()>) {
    task.abort();
    let _ = task.await;
}

/// Accept on `listener`, over TLS with `tls`, until the returned task is aborted.
fn serve(
    listener: TcpListener,
    state: Arc<DoubleState>,
    tls: Option<TlsAcceptor>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // Connections live in the set, so aborting this task closes them all (an outage).
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let state = Arc::clone(&state);
            let tls = tls.clone();
            conns.spawn(async move {
                match tls {
                    None => serve_connection(TokioIo::new(stream), state).await,
                    // A client that does not trust the certificate ends the handshake itself.
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(stream).await {
                            serve_connection(TokioIo::new(stream), state).await
                        }
                    }
                }
            });
            while conns.try_join_next().is_some() {}
        }
    })
}

async fn serve_connection<I>(io: I, state: Arc<DoubleState>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| {
        let state = Arc::clone(&state);
        async move { Ok::<_, Infallible>(handle(&state, req).await) }
    });
    let _ =
        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()).serve_connection(io, svc).await;
}

pub(super) fn reply(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r
}

/// Percent-decoded, as Go's `net/url` does (`+` is a space in a query).
pub(super) fn decode(s: &str, plus_is_space: bool) -> String {
    let s = if plus_is_space { s.replace('+', " ") } else { s.to_owned() };
    percent_encoding::percent_decode_str(&s).decode_utf8_lossy().into_owned()
}

/// The query parameters, decoded; a parameter given without `=` maps to "" (Consul takes a
/// flag such as `?recurse` as set whatever its value).
pub(super) fn query(req: &Request<Incoming>) -> BTreeMap<String, String> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k, true), decode(v, true))
        })
        .collect()
}

/// A duration in Go's syntax (`time.ParseDuration`: "300ms", "1.5s", "1m30s", "2h", "0"), as
/// Consul parses `wait`, `TTL` and `LockDelay`. Negative durations are refused.
pub(super) fn go_duration(s: &str) -> Option<Duration> {
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = s;
    let mut nanos = 0f64;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (num, after) = rest.split_at(num_len);
        let value: f64 = num.parse().ok()?;
        let unit_len = after.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let scale = match unit {
            "ns" => 1.0,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        nanos += value * scale;
        rest = after;
    }
    (!s.is_empty()).then(|| Duration::from_nanos(nanos.round() as u64))
}

/// `wait` as Consul takes it: 5 minutes when absent, at most 10 minutes.
pub(super) fn max_wait(wait: Option<Duration>) -> Duration {
    wait.unwrap_or(Duration::from_secs(300)).min(Duration::from_secs(600))
}

/// Hold a blocking query until `ready` says the result of its read may have changed, its
/// `wait` passes, the index is reset (a restart), or [`ConsulDouble::answer_at_once`] is on.
/// It is counted in `held` while held. As Consul does, the caller answers at once (without
/// calling this) when the index of its read is already above the one asked for.
pub(super) async fn hold(
    state: &DoubleState,
    wait: Duration,
    held: &AtomicUsize,
    ready: impl Fn(&Inner) -> bool,
) {
    let mut rx = state.index.subscribe();
    let restarts = rx.borrow_and_update().1;
    let deadline = tokio::time::Instant::now() + wait;
    let mut holding = None;
    loop {
        // Seen before the state is looked at: a write after this look wakes `changed` below.
        let r = rx.borrow_and_update().1;
        {
            let inner = state.inner.lock().unwrap();
            if inner.answer_at_once || r != restarts || ready(&inner) {
                break;
            }
        }
        holding.get_or_insert_with(|| Holding::new(held));
        if tokio::time::timeout_at(deadline, rx.changed()).await.is_err() {
            break;
        }
    }
}

async fn handle(state: &DoubleState, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let token = state.inner.lock().unwrap().token.clone();
    if let Some(t) = token {
        if req.headers().get("x-consul-token").and_then(|v| v.to_str().ok()) != Some(t.as_str()) {
            return reply(StatusCode::FORBIDDEN, "Permission denied: token not found");
        }
    }
    if let Some(key) = path.strip_prefix("/v1/kv/") {
        return super::consul_kv::kv(state, req, decode(key, false)).await;
    }
    if path == "/v1/txn" {
        return super::consul_kv::txn(state, req).await;
    }
    if let Some(rest) = path.strip_prefix("/v1/session/") {
        return super::consul_kv::session(state, req, decode(rest, false)).await;
    }
    if let (&Method::GET, Some(name)) = (req.method(), path.strip_prefix("/v1/health/service/")) {
        state.health_requests.fetch_add(1, Ordering::SeqCst);
        let q = query(&req);
        let name = decode(name, false);
        if let Some(index) = q.get("index").and_then(|i| i.parse::<u64>().ok()) {
            // As Consul does: held while the catalog's index is at or below the requested
            // one, until `wait` passes; a "restart" (reset_index) releases held queries with
            // the lower index.
            let wait = max_wait(q.get("wait").and_then(|w| go_duration(w)));
            hold(state, wait, &state.held, |inner| inner.catalog_index > index).await;
        }
        let inner = state.inner.lock().unwrap();
        let index = inner.catalog_index;
        let passing_only = q.get("passing").is_some_and(|v| v != "false" && v != "0");
        let entries: Vec<Value> = inner
            .services
            .values()
            .filter(|i| i.name == name)
            .filter(|i| !passing_only || i.passing)
            .filter(|i| q.get("tag").is_none_or(|t| i.tags.contains(t)))
            .filter(|_| q.get("dc").is_none_or(|d| d == "dc1"))
            .map(|i| {
                let status = if i.passing { "passing" } else { "critical" };
                json!({
                    "Node": { "Node": "double", "Address": "127.0.0.1", "Datacenter": "dc1" },
                    "Service": {
                        "ID": i.id, "Service": i.name, "Tags": i.tags, "Address": i.address, "Port": i.port,
                        "Weights": { "Passing": i.weight.unwrap_or(1), "Warning": 1 },
                    },
                    "Checks": [
                        { "CheckID": "serfHealth", "Status": "passing" },
                        { "CheckID": format!("service:{}", i.id), "Status": status },
                    ],
                })
            })
            .collect();
        let mut r = reply(StatusCode::OK, serde_json::to_vec(&entries).unwrap());
        r.headers_mut().insert("x-consul-index", index.to_string().parse().unwrap());
        r.headers_mut().insert("content-type", "application/json".parse().unwrap());
        return r;
    }
    if req.method() != Method::PUT {
        return reply(StatusCode::NOT_FOUND, "not found");
    }
    if path == "/v1/agent/service/register" {
        let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let Ok(v) = serde_json::from_slice::<Value>(&body) else {
            return reply(StatusCode::BAD_REQUEST, "bad JSON");
        };
        let name = v["Name"].as_str().unwrap_or_default().to_owned();
        let inst = Instance {
            id: v["ID"].as_str().map_or_else(|| name.clone(), str::to_owned),
            name,
            address: v["Address"].as_str().unwrap_or_default().to_owned(),
            port: v["Port"].as_u64().unwrap_or(0) as u16,
            tags: v["Tags"]
                .as_array()
                .map_or_else(Vec::new, |a| a.iter().filter_map(|t| t.as_str().map(str::to_owned)).collect()),
            weight: v["Weights"]["Passing"].as_u64(),
            // No check: passing. A TTL check starts critical until it is passed.
            passing: v["Check"]["TTL"].is_null(),
        };
        catalog_write(state, |inner| {
            inner.services.insert(inst.id.clone(), inst);
        });
        return reply(StatusCode::OK, "");
    }
    if let Some(id) = path.strip_prefix("/v1/agent/service/deregister/") {
        catalog_write(state, |inner| {
            inner.services.remove(id);
        });
        return reply(StatusCode::OK, "");
    }
    for (prefix, passing) in
        [("/v1/agent/check/pass/service:", true), ("/v1/agent/check/fail/service:", false)]
    {
        if let Some(id) = path.strip_prefix(prefix) {
            catalog_write(state, |inner| {
                if let Some(i) = inner.services.get_mut(id) {
                    i.passing = passing;
                }
            });
            return reply(StatusCode::OK, "");
        }
    }
    reply(StatusCode::NOT_FOUND, "not found")
}

/// A catalog change at the next index.
fn catalog_write(state: &DoubleState, change: impl FnOnce(&mut Inner)) {
    let mut inner = state.inner.lock().unwrap();
    change(&mut inner);
    inner.catalog_index = state.next_index(&mut inner);
}

// === the backend the tests drive: the double, or a real agent ===

/// A Consul the tests register services with.
#[derive(Debug)]
pub struct Consul {
    /// `http://host:port`.
    pub url: String,
    /// The double, unless `SWITCHYARD_CONSUL_ADDR` points at a real agent.
    pub double: Option<ConsulDouble>,
}

/// One service instance to register.
#[derive(Debug, Clone, Default)]
pub struct Reg<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub address: &'a str,
    pub port: u16,
    pub tags: &'a [&'a str],
    pub weight: Option<u32>,
    /// Register with a TTL check (starts critical).
    pub ttl_check: bool,
}

impl Consul {
    pub async fn start() -> Consul {
        match std::env::var("SWITCHYARD_CONSUL_ADDR") {
            Ok(url) if !url.is_empty() => {
                eprintln!("consul tests: using the real Consul agent at {url} (SWITCHYARD_CONSUL_ADDR)");
                Consul { url: url.trim_end_matches('/').to_owned(), double: None }
            }
            _ => {
                let d = ConsulDouble::start().await;
                Consul { url: format!("http://{}", d.addr), double: Some(d) }
            }
        }
    }

    /// The double, or `None` (with a note on stderr) against a real agent.
    pub fn double(&self, what: &str) -> Option<&ConsulDouble> {
        if self.double.is_none() {
            eprintln!("consul tests: skipping the double-only step \"{what}\" against a real agent");
        }
        self.double.as_ref()
    }

    async fn put(&self, path: &str, body: Value) {
        let req = Request::put(format!("{}{path}", self.url)).body(super::full(body.to_string())).unwrap();
        let got = super::send(req).await;
        assert!(got.status.is_success(), "PUT {path}: {} {}", got.status, got.text());
    }

    pub async fn register(&self, r: Reg<'_>) {
        let mut v =
            json!({ "ID": r.id, "Name": r.name, "Address": r.address, "Port": r.port, "Tags": r.tags });
        if let Some(w) = r.weight {
            v["Weights"] = json!({ "Passing": w, "Warning": 1 });
        }
        if r.ttl_check {
            v["Check"] = json!({ "TTL": "10m", "Status": "critical" });
        }
        self.put("/v1/agent/service/register", v).await;
    }

    pub async fn deregister(&self, id: &str) {
        self.put(&format!("/v1/agent/service/deregister/{id}"), Value::Null).await;
    }

    pub async fn set_passing(&self, id: &str, passing: bool) {
        let verb = if passing { "pass" } else { "fail" };
        self.put(&format!("/v1/agent/check/{verb}/service:{id}"), Value::Null).await;
    }
}
