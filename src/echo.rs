//! `switchyard echo`: a tiny upstream for demos and tests. Every request gets 200 and a JSON
//! body `{"name","method","path","query","headers","body_bytes"}` (README); `GET
//! /healthz` answers 200 `ok`. It speaks HTTP/1.1 and h2c, and supports WebSocket-style
//! upgrades by echoing bytes back, so it can stand in for most upstreams in a demo.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// Serve the echo upstream on `listener` forever.
pub async fn serve(listener: TcpListener, name: String) {
    let name = Arc::new(name);
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        let name = Arc::clone(&name);
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let name = Arc::clone(&name);
                async move { Ok::<_, std::convert::Infallible>(answer(&name, req).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// Bind `addr` and serve.
pub async fn run(addr: SocketAddr, name: String) -> std::io::Result<()> {
    let l = TcpListener::bind(addr).await?;
    tracing::info!(addr = %l.local_addr()?, %name, "echo upstream listening");
    serve(l, name).await;
    Ok(())
}

async fn answer(name: &str, mut req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.uri().path() == "/healthz" && req.method() == http::Method::GET {
        return Response::new(Full::new(Bytes::from_static(b"ok\n")));
    }
    if req.headers().contains_key(header::UPGRADE) {
        let proto = req.headers()[header::UPGRADE].clone();
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = on.await {
                let (mut r, mut w) = tokio::io::split(TokioIo::new(up));
                let _ = tokio::io::copy(&mut r, &mut w).await;
            }
        });
        let mut res = Response::new(Full::new(Bytes::new()));
        *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        res.headers_mut().insert(header::UPGRADE, proto);
        res.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("upgrade"));
        return res;
    }
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in req.headers() {
        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
        headers
            .entry(k.as_str().to_owned())
            .and_modify(|prev| {
                prev.push_str(", ");
                prev.push_str(&v);
            })
            .or_insert(v);
    }
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    // Count the body by streaming it; nothing is kept.
    let mut body_bytes = 0u64;
    let mut body = req.into_body();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => body_bytes += f.data_ref().map_or(0, |d| d.len() as u64),
            Err(_) => break,
        }
    }
    let json = serde_json::json!({
        "name": name,
        "method": method,
        "path": path,
        "query": query,
        "headers": headers,
        "body_bytes": body_bytes,
    });
    let mut res = Response::new(Full::new(Bytes::from(json.to_string())));
    res.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    res
}
