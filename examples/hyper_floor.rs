//! The floor of the chosen HTTP/1 stack: the least a reverse proxy built on hyper's HTTP/1
//! server and client codecs does per request, for `bench/profile.sh floor`.
//!
//! One thread; each client connection gets one upstream connection of its own, opened at its
//! first request and driven in the client connection's task (as `proxy::h1` does). A request
//! goes upstream as it came (its URI in origin form), and the response comes back as it is:
//! no routing, no header rules, no timeouts, no metrics, no log. It is not a proxy to run:
//! it exists to measure what hyper itself costs, so that the rest of a request's cost in
//! switchyard is known to be switchyard's.
//!
//! `cargo run --release --example hyper_floor -- LISTEN UPSTREAM` (both `ip:port`).

use std::cell::RefCell;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame};
use hyper::body::Incoming;
use hyper::client::conn::http1 as client;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

/// The allocator switchyard uses, so that the two are compared on the same one.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Io = TokioIo<TcpStream>;

/// The client connection's own upstream connection.
struct Upstream {
    send: client::SendRequest<Incoming>,
    conn: Pin<Box<client::Connection<Io, Incoming>>>,
}

impl Upstream {
    /// Let the connection write and read; its end is seen by the exchange waiting on it.
    fn drive(&mut self, cx: &mut Context<'_>) {
        let _ = self.conn.as_mut().poll(cx);
    }
}

type Shared = Rc<RefCell<Option<Upstream>>>;

/// The response body, driving the upstream connection until it ends.
struct Driving {
    inner: Incoming,
    up: Shared,
}

impl Body for Driving {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if let Some(up) = self.up.borrow_mut().as_mut() {
            up.drive(cx);
        }
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
}

async fn forward(
    up: Shared,
    upstream: SocketAddr,
    mut req: Request<Incoming>,
) -> Result<Response<Driving>, hyper::Error> {
    if up.borrow().is_none() {
        let io = TokioIo::new(TcpStream::connect(upstream).await.expect("connect to the upstream"));
        let _ = io.inner().set_nodelay(true);
        let (send, conn) = client::handshake(io).await?;
        *up.borrow_mut() = Some(Upstream { send, conn: Box::pin(conn) });
    }
    if let Some(pq) = req.uri().path_and_query().cloned() {
        *req.uri_mut() = hyper::Uri::from(pq);
    }
    let mut sent = Box::pin(up.borrow_mut().as_mut().expect("connected").send.send_request(req));
    let res = std::future::poll_fn(|cx| {
        if let Some(u) = up.borrow_mut().as_mut() {
            u.drive(cx);
        }
        sent.as_mut().poll(cx)
    })
    .await?;
    Ok(res.map(|inner| Driving { inner, up }))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        eprintln!("usage: hyper_floor LISTEN UPSTREAM");
        std::process::exit(2);
    };
    let listen: SocketAddr = listen.parse().expect("LISTEN is ip:port");
    let upstream: SocketAddr = upstream.parse().expect("UPSTREAM is ip:port");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let listener = TcpListener::bind(listen).await.expect("bind LISTEN");
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            tokio::task::spawn_local(async move {
                let up: Shared = Rc::new(RefCell::new(None));
                let svc = hyper::service::service_fn(move |req| forward(Rc::clone(&up), upstream, req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
}
