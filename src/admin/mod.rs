//! The admin API: read-only views of the running state, Prometheus metrics, and
//! `POST /reload`. It keeps answering while the gateway drains (`/ready` then says 503).
//!
//! With `[admin] token_env`, every path but `/healthz` and `/ready` (which load balancers and
//! orchestrators probe without credentials) and `/` (the dashboard's page, which holds no data
//! and asks for the token itself: [`dashboard`]) needs `authorization: Bearer <token>`;
//! anything else gets 401 `unauthorized`. The token is compared in constant time ([`AdminToken::matches`]).
//!
//! The admin server is small on purpose, and bounded so that a misbehaving client cannot tie it
//! up: HTTP/1.1 only (so that one timer, hyper's header-read timer, bounds every wait for a
//! request head: the first one, a slow one, and the idle wait between keep-alive requests), at
//! most `MAX_CONNECTIONS` (64) connections at once (more wait in the kernel's accept backlog, as
//! a listener's do past `max_connections`), each closed when a request head takes longer than
//! `HEADER_READ_TIMEOUT` (10 s).

pub(crate) mod stats;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{header, HeaderMap, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

mod dashboard;

use crate::body::{self, Body};
use crate::config::{Action, AdminToken, ConfigError, HostMatch, PathMatch, ValueMatch};
use crate::discovery;
use crate::error::Reason;
use crate::metrics::Metrics;
use crate::reply::error_response;
use crate::snapshot::{Reloader, Snapshot};

/// How long an admin client has to send a whole request head, counted from the accept, and
/// again from the end of each response while the connection is kept alive (so it is also how
/// long an idle keep-alive connection stays open). 10 s is the listeners' `header_read_timeout`
/// default: admin clients (scrapers, scripts, a dashboard polling every few seconds) send a
/// head in one packet, and with only [`MAX_CONNECTIONS`] slots a client that dawdles, or sends
/// half a head and stops (slowloris), must give its slot back soon.
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Admin connections served at once; more wait in the accept backlog until one closes. Enough
/// for a few Prometheus servers, scripts and dashboards many times over; small enough that a
/// flood of connections to the admin port cannot take the file descriptors and memory that the
/// listeners need.
pub(crate) const MAX_CONNECTIONS: usize = 64;

/// The largest request head an admin client may send (as the listeners' default
/// `max_request_header_bytes`): room for a browser's cookies next to the token, and a bound on
/// each connection's read buffer.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// What the admin API reads.
#[derive(Debug)]
pub(crate) struct AdminState {
    /// Reloads and the live snapshot.
    pub reloader: Arc<Reloader>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Set when draining starts.
    pub draining: AtomicBool,
    /// The TLS listeners' certificate stores (reloaded by `POST /reload` too).
    pub certs: crate::tls::Stores,
    /// `[admin] token_env`: when set, every path but `/healthz` and `/ready` needs it.
    pub token: Option<AdminToken>,
    /// The `GET /stats` buckets.
    pub stats: Arc<stats::Stats>,
    /// Fleet mode: the source, for `GET /config` and `GET /fleet`.
    pub fleet: Option<Arc<crate::fleet::Fleet>>,
}

/// Serve the admin API on `socket` until `stop`: then stop accepting, and close each open
/// connection once its request in flight (if any) is answered.
pub(crate) fn spawn(socket: TcpListener, state: Arc<AdminState>, stop: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let builder = Arc::new(connection_builder());
    tokio::spawn(async move {
        loop {
            // The permit is taken before accepting: at the cap, new connections wait in the
            // kernel's backlog, unanswered, until one of ours closes.
            let permit = tokio::select! {
                p = Arc::clone(&slots).acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
                _ = stop.cancelled() => return,
            };
            let (stream, _) = tokio::select! {
                r = socket.accept() => match r {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::warn!(error = %e, "admin accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = stop.cancelled() => return,
            };
            let state = Arc::clone(&state);
            let builder = Arc::clone(&builder);
            let stop = stop.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let state = Arc::clone(&state);
                    async move { Ok::<_, std::convert::Infallible>(handle(&state, req).await) }
                });
                let conn = builder.serve_connection(TokioIo::new(stream), svc);
                tokio::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => {}
                    _ = stop.cancelled() => {
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.await;
                    }
                }
                drop(permit);
            });
        }
    });
}

/// How every admin connection is served: HTTP/1.1 with hyper's header-read timer set to
/// [`HEADER_READ_TIMEOUT`] (hyper runs it while it waits for each request head, the first
/// included).
fn connection_builder() -> http1::Builder {
    let mut b = http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(true);
    b
}

/// Whether `headers` carry `authorization: Bearer <token>` (the scheme's case does not matter,
/// as RFC 9110 says of every authentication scheme).
fn authorized(token: &AdminToken, headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return false;
    };
    let value = value.as_bytes();
    let Some(space) = value.iter().position(|&b| b == b' ') else {
        return false;
    };
    let (scheme, credentials) = value.split_at(space);
    scheme.eq_ignore_ascii_case(b"bearer") && token.matches(credentials.trim_ascii_start())
}

fn text(status: StatusCode, body: impl Into<Bytes>, ctype: &'static str) -> Response<Body> {
    let mut r = Response::new(body::full(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(ctype));
    r
}

/// The dashboard page, with headers that keep a browser from doing anything the page did not
/// ask for (see [`dashboard`]).
fn dashboard_page(token_required: bool) -> Response<Body> {
    let page = dashboard::page(token_required);
    let mut r = text(StatusCode::OK, page.html.clone(), "text/html; charset=utf-8");
    let h = r.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, page.csp.clone());
    h.insert(header::X_CONTENT_TYPE_OPTIONS, header::HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, header::HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, header::HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    r
}

fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    let mut body = serde_json::to_vec_pretty(v).unwrap_or_default();
    body.push(b'\n');
    text(status, body, "application/json")
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// Whether a request's `Host` names this machine's loopback: an IP address literal (the listen
/// address must then be loopback, see `check`), `localhost`, or no `Host` at all. Anything else
/// is a page of some other site whose name was re-pointed at 127.0.0.1 (DNS rebinding): the
/// browser would let that page read the answers, so without a token they are refused.
fn loopback_host(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return headers.get(header::HOST).is_none();
    };
    let name = match host.strip_prefix('[') {
        Some(v6) => {
            return v6.split_once(']').is_some_and(|(addr, port)| {
                addr.parse::<std::net::Ipv6Addr>().is_ok() && (port.is_empty() || port.starts_with(':'))
            })
        }
        None => host.rsplit_once(':').map_or(host, |(name, _port)| name),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::Ipv4Addr>().is_ok()
}

async fn handle(state: &AdminState, req: Request<Incoming>) -> Response<Body> {
    let probe = matches!(req.uri().path(), "/healthz" | "/ready");
    if state.token.is_none() && !probe && !loopback_host(req.headers()) {
        // `bad_request`, as every request the gateway refuses to take as it is.
        let mut r = error_response(Reason::BadRequest);
        *r.body_mut() = body::full(
            "400 bad_request: without [admin] token_env the admin API answers only requests for \
             127.0.0.1, [::1] or localhost (a guard against DNS rebinding)\n",
        );
        return r;
    }
    if let Some(token) = &state.token {
        // `/` is the dashboard's page, which holds no data: its script asks for the token.
        let open = matches!(req.uri().path(), "/healthz" | "/ready" | "/");
        if !open && !authorized(token, req.headers()) {
            return error_response(Reason::Unauthorized);
        }
    }
    let snap = state.reloader.current().load_full();
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/") => dashboard_page(state.token.is_some()),
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n", "text/plain"),
        (&Method::GET, "/ready") => {
            if state.draining.load(Ordering::Relaxed) {
                text(StatusCode::SERVICE_UNAVAILABLE, "draining\n", "text/plain")
            } else {
                ready(state, &snap)
            }
        }
        (&Method::GET, "/metrics") => text(
            StatusCode::OK,
            state.metrics.encode(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
        (&Method::GET, "/config") => json_response(StatusCode::OK, &config_view(state, &snap)),
        (&Method::GET, "/routes") => json_response(StatusCode::OK, &routes_view(&snap)),
        (&Method::GET, "/upstreams") => json_response(StatusCode::OK, &upstreams_view(&snap)),
        (&Method::GET, "/stats") => json_response(StatusCode::OK, &state.stats.view(&snap)),
        (&Method::GET, "/fleet") => fleet_view(state).await,
        (&Method::POST, "/reload") => {
            if let Some(f) = &state.fleet {
                // Fleet mode: read the source now too.
                f.nudge.notify_one();
            }
            let r = Arc::clone(&state.reloader);
            let certs = state.certs.clone();
            let reload = move || {
                certs.reload();
                r.reload()
            };
            match tokio::task::spawn_blocking(reload).await {
                Ok(Ok(version)) => json_response(StatusCode::OK, &json!({ "version": version })),
                Ok(Err(errs)) => json_response(
                    StatusCode::BAD_REQUEST,
                    &json!({ "errors": errs.0.iter().map(|e| error_view(e, None)).collect::<Vec<_>>() }),
                ),
                Err(e) => {
                    json_response(StatusCode::INTERNAL_SERVER_ERROR, &json!({ "error": e.to_string() }))
                }
            }
        }
        (
            _,
            "/" | "/healthz" | "/ready" | "/metrics" | "/config" | "/routes" | "/upstreams" | "/stats"
            | "/fleet" | "/reload",
        ) => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n", "text/plain"),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try / (the dashboard) /healthz /ready /metrics /config /routes /upstreams /stats /fleet, POST /reload\n",
            "text/plain",
        ),
    }
}

/// `GET /ready` once listening (docs/admin-api.md): wait for every upstream's first discovery result
/// (endpoints, an authoritative empty answer, or an error), but at most
/// [`discovery::READY_BOUND`] after start; then ready, with what is still missing or failing
/// listed in the body.
fn ready(state: &AdminState, snap: &Snapshot) -> Response<Body> {
    let mut pending = Vec::new();
    let mut failing = Vec::new();
    for u in &snap.upstreams {
        let st = u.discovery_status();
        if st.first_result_at.is_none() {
            pending.push(u.name.as_str());
        }
        if let Some(e) = st.last_error {
            failing.push(format!("upstream {}: discovery error: {e}", u.name));
        }
    }
    let bounded = state.reloader.registry().started().elapsed() >= discovery::READY_BOUND;
    let mut body = String::new();
    let status = if pending.is_empty() || bounded {
        body.push_str("ready\n");
        StatusCode::OK
    } else {
        body.push_str("waiting for discovery\n");
        StatusCode::SERVICE_UNAVAILABLE
    };
    for p in &pending {
        body.push_str(&format!("upstream {p}: no discovery result yet\n"));
    }
    for f in &failing {
        body.push_str(f);
        body.push('\n');
    }
    text(status, body, "text/plain")
}

fn error_view(e: &ConfigError, at: Option<SystemTime>) -> Value {
    let mut v = json!({
        "file": e.file.display().to_string(),
        "line": e.line,
        "column": e.column,
        "message": e.message,
    });
    if let Some(at) = at {
        v["at"] = json!(rfc3339(at));
    }
    v
}

fn config_view(state: &AdminState, snap: &Snapshot) -> Value {
    let last = state.reloader.last_error();
    let mut v = json!({
        "version": snap.version,
        "loaded_at": rfc3339(snap.loaded_at),
        "files": snap.files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
        "last_error": last.map(|l| error_view(&l.error, Some(l.at))),
        // TLS problems of the last reload: skipped certificate pairs, a certificate set or a
        // client CA bundle kept because the new one was unusable (they do not fail a reload).
        "tls_errors": state.certs.errors().iter().map(|(e, at)| error_view(e, *at)).collect::<Vec<_>>(),
        "certificates": certificates_view(&state.certs),
    });
    if let Some(f) = &state.fleet {
        v["source"] = source_view(f);
    }
    v
}

/// `GET /config`'s `source` (fleet mode): where the routes come from, the newest published
/// version seen and the one serving, and the source's failure while it lasts.
fn source_view(f: &crate::fleet::Fleet) -> Value {
    let m = f.member();
    json!({
        "type": f.source.kind(),
        "published_version": f.published_version(),
        "applied_version": f.applied_version(),
        "member_id": m.id,
        "last_error": m.last_error,
        "source_error": f.source_error().map(|(e, at)| json!({"message": e, "at": rfc3339(at)})),
    })
}

/// `GET /fleet`: every member's record, read from the source now (404 outside fleet mode, 503
/// when the source cannot be read).
async fn fleet_view(state: &AdminState) -> Response<Body> {
    let Some(f) = &state.fleet else {
        return text(
            StatusCode::NOT_FOUND,
            "not in fleet mode: [gateway] has no routes_source\n",
            "text/plain",
        );
    };
    // Within the dashboard's 5 s per request, so a slow source shows as an error, not a hang.
    let members = tokio::time::timeout(Duration::from_secs(4), f.store.members()).await;
    match members.unwrap_or_else(|_| Err("no answer within 4 s".into())) {
        Ok(members) => json_response(
            StatusCode::OK,
            &json!({"published_version": f.published_version(), "members": members}),
        ),
        Err(e) => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"error": format!("cannot read the members from {}: {e}", f.source.describe())}),
        ),
    }
}

/// Every loaded certificate, for the dashboard: its folder, file stem, DNS names and expiry.
fn certificates_view(certs: &crate::tls::Stores) -> Vec<Value> {
    let mut out = Vec::new();
    for (dir, loaded) in certs.certificates() {
        for c in loaded {
            let not_after =
                SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(c.not_after).unwrap_or_default());
            out.push(json!({
                "dir": dir.display().to_string(),
                "name": c.stem,
                "names": c.names,
                "not_after": humantime::format_rfc3339_seconds(not_after).to_string(),
            }));
        }
    }
    out
}

fn value_match(m: &ValueMatch) -> Value {
    match m {
        ValueMatch::Present => json!("*"),
        ValueMatch::Exact(v) => json!(v),
    }
}

fn routes_view(snap: &Snapshot) -> Value {
    let routes: Vec<Value> = snap
        .router
        .precedence_order()
        .into_iter()
        .map(|i| {
            let r = &snap.routes[i].config;
            let hosts: Vec<String> = r
                .hosts
                .iter()
                .map(|h| match h {
                    HostMatch::Exact(h) => h.clone(),
                    HostMatch::Wildcard(s) => format!("*.{s}"),
                })
                .collect();
            let path = match &r.path {
                PathMatch::Exact(p) => json!({ "path": p }),
                PathMatch::Prefix(p) => json!({ "path_prefix": p }),
                PathMatch::Regex(re) => json!({ "path_regex": re.as_str() }),
            };
            let target = match &r.action {
                Action::Upstream(u) => json!({ "upstream": u }),
                Action::Split(s) => json!({ "split": s.iter().map(|(u, w)| json!({"upstream": u, "weight": w})).collect::<Vec<_>>() }),
                Action::Respond { status, .. } => json!({ "respond": { "status": status.as_u16() } }),
                Action::Redirect { to, status } => json!({ "redirect": { "to": to, "status": status.as_u16() } }),
            };
            json!({
                "name": r.name,
                "file": r.origin.file.display().to_string(),
                "line": r.origin.line,
                "hosts": hosts,
                "match": path,
                "methods": r.methods.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
                "headers": r.headers.iter().map(|(n, m)| (n.as_str().to_owned(), value_match(m))).collect::<serde_json::Map<_, _>>(),
                "query": r.query.iter().map(|(n, m)| (n.clone(), value_match(m))).collect::<serde_json::Map<_, _>>(),
                "target": target,
            })
        })
        .collect();
    json!({ "routes": routes })
}

fn upstreams_view(snap: &Snapshot) -> Value {
    let ups: Vec<Value> = snap
        .upstreams
        .iter()
        .map(|u| {
            let st = u.discovery_status();
            let set = u.endpoints();
            let eps: Vec<Value> = set
                .endpoints
                .iter()
                .map(|e| {
                    json!({
                        "address": e.address.as_str(),
                        "weight": e.weight,
                        // Without active probes an endpoint is taken as healthy (Envoy's rule).
                        "health": e.state.health().as_str(),
                        "ejected_until": e.state.ejected_until().map(rfc3339),
                        "in_flight": e.in_flight.load(Ordering::Relaxed),
                        "ewma_ms": e.state.ewma_ms(),
                    })
                })
                .collect();
            json!({
                "name": u.name.as_str(),
                "balance": u.config.balance.as_str(),
                "discovery": {
                    "type": u.config.discovery.kind(),
                    "last_update": st.last_update.map(rfc3339),
                    "last_error": st.last_error,
                },
                "panic": set.is_panic(),
                "endpoints": eps,
            })
        })
        .collect();
    json!({ "upstreams": ups })
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::time::Instant;

    use super::*;

    /// Serve one admin-configured connection on an in-memory pipe (answering `ok` to every
    /// request); returns the client's end and the connection's task.
    fn pipe() -> (tokio::io::DuplexStream, tokio::task::JoinHandle<Result<(), hyper::Error>>) {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let svc = hyper::service::service_fn(|_req: Request<Incoming>| async {
            Ok::<_, Infallible>(Response::new(body::full("ok")))
        });
        let conn = tokio::spawn(connection_builder().serve_connection(TokioIo::new(server), svc));
        (client, conn)
    }

    /// Read until the server closes its end; what it sent.
    async fn read_to_close(client: &mut tokio::io::DuplexStream) -> String {
        let mut out = Vec::new();
        client.read_to_end(&mut out).await.unwrap();
        String::from_utf8_lossy(&out).into_owned()
    }

    // Paused time: the clock jumps to the next timer whenever every task waits, so these tests
    // check the real 10 s deadline without waiting for it.

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_or_half_a_head_is_closed_at_the_header_timeout() {
        for sent in [&b""[..], b"GET /metrics HTTP/1.1\r\nHost: a\r\nAuthoriz"] {
            let (mut client, conn) = pipe();
            let start = Instant::now();
            client.write_all(sent).await.unwrap();
            assert_eq!(read_to_close(&mut client).await, "", "closed without an answer");
            let waited = start.elapsed();
            assert!(
                waited >= HEADER_READ_TIMEOUT && waited < HEADER_READ_TIMEOUT + Duration::from_secs(1),
                "closed after {waited:?}"
            );
            assert!(conn.await.unwrap().unwrap_err().is_timeout());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_keep_alive_connection_is_closed_at_the_header_timeout() {
        let (mut client, conn) = pipe();
        client.write_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
        let mut head = [0u8; 15];
        client.read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"HTTP/1.1 200 OK");
        let answered = Instant::now();
        let rest = read_to_close(&mut client).await;
        assert!(rest.ends_with("\r\n\r\nok"), "{rest}");
        let idle = answered.elapsed();
        assert!(
            idle >= HEADER_READ_TIMEOUT && idle < HEADER_READ_TIMEOUT + Duration::from_secs(1),
            "closed after {idle:?}"
        );
        let _ = conn.await.unwrap();
    }

    #[test]
    fn bearer_credentials() {
        let token = AdminToken::new(b"tok3n").unwrap();
        let check = |value: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, http::HeaderValue::from_static(value));
            authorized(&token, &h)
        };
        for good in ["Bearer tok3n", "bearer tok3n", "BEARER   tok3n"] {
            assert!(check(good), "{good}");
        }
        for bad in [
            "Bearer tok3m",
            "Bearer tok3",
            "Bearer tok3nn",
            "Bearer ",
            "Bearer",
            "Bearertok3n",
            "Basic tok3n",
            "tok3n",
            "Bearer tok3n tok3n",
        ] {
            assert!(!check(bad), "{bad}");
        }
        assert!(!authorized(&token, &HeaderMap::new()), "no header");
    }
}
