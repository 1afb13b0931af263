//! The admin API (SPEC 5): read-only views of the running state, Prometheus metrics, and
//! `POST /reload`. It keeps answering while the gateway drains (`/ready` then says 503).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{Action, ConfigError, HostMatch, PathMatch, ValueMatch};
use crate::discovery;
use crate::metrics::Metrics;
use crate::snapshot::{Reloader, Snapshot};

/// What the admin API reads.
#[derive(Debug)]
pub struct AdminState {
    /// Reloads and the live snapshot.
    pub reloader: Arc<Reloader>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Set once every listener is bound.
    pub listening: AtomicBool,
    /// Set when draining starts.
    pub draining: AtomicBool,
    /// The TLS listeners' certificate stores (reloaded by `POST /reload` too).
    pub certs: crate::tls::Stores,
}

/// Serve the admin API on `socket` until `stop`.
pub fn spawn(socket: TcpListener, state: Arc<AdminState>, stop: CancellationToken) {
    tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                r = socket.accept() => match r {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::warn!(error = %e, "admin accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = stop.cancelled() => return,
            };
            let state = Arc::clone(&state);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let state = Arc::clone(&state);
                    async move { Ok::<_, std::convert::Infallible>(handle(&state, req).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
}

fn text(status: StatusCode, body: impl Into<Bytes>, ctype: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(ctype));
    r
}

fn json_response(status: StatusCode, v: &Value) -> Response<Full<Bytes>> {
    let mut body = serde_json::to_vec_pretty(v).unwrap_or_default();
    body.push(b'\n');
    text(status, body, "application/json")
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

async fn handle(state: &AdminState, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let snap = state.reloader.current().load_full();
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n", "text/plain"),
        (&Method::GET, "/ready") => {
            if state.draining.load(Ordering::Relaxed) {
                text(StatusCode::SERVICE_UNAVAILABLE, "draining\n", "text/plain")
            } else if !state.listening.load(Ordering::Relaxed) {
                text(StatusCode::SERVICE_UNAVAILABLE, "starting\n", "text/plain")
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
        (&Method::POST, "/reload") => {
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
        (_, "/healthz" | "/ready" | "/metrics" | "/config" | "/routes" | "/upstreams" | "/reload") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n", "text/plain")
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /healthz /ready /metrics /config /routes /upstreams, POST /reload\n",
            "text/plain",
        ),
    }
}

/// `GET /ready` once listening (SPEC 5, 3.1): wait for every upstream's first discovery result
/// (endpoints, an authoritative empty answer, or an error), but at most
/// [`discovery::READY_BOUND`] after start; then ready, with what is still missing or failing
/// listed in the body.
fn ready(state: &AdminState, snap: &Snapshot) -> Response<Full<Bytes>> {
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
    json!({
        "version": snap.version,
        "loaded_at": rfc3339(snap.loaded_at),
        "files": snap.files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
        "last_error": last.map(|l| error_view(&l.error, Some(l.at))),
        // Certificate pairs skipped at the last certificate load (they do not fail a reload).
        "tls_errors": state.certs.errors().iter().map(|(e, at)| error_view(e, *at)).collect::<Vec<_>>(),
    })
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
