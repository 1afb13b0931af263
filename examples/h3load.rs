//! `h3load`: a bounded HTTP/3 load client (quinn + h3), the HTTP/3 side of `bench/h3.sh`.
//!
//! ```text
//! cargo run --release --example h3load -- --url https://localhost:8443/ --connect 127.0.0.1 \
//!     --ca ca.crt -c 2 -m 32 -d 10 [--max-requests K] [--post-bytes B] [--sni NAME]
//! ```
//!
//! `-c` connections (all handshaken before the clock starts) × `-m` request streams each,
//! closed loop, for `-d` seconds or `--max-requests` requests, whichever comes first; a request
//! unanswered 5 s after the end is a timeout. Loopback only (`--connect`, else the URL host).
//! Prints requests (2xx/3xx answers), errors by kind, req/s and their latency
//! (p50/p90/p99/max), then one CSV line: `csv: ` + the columns of the `csv_header: ` line.

use std::future::poll_fn;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use clap::Parser;
use h3::error::StreamError;
use http::{Method, Request, Uri};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

type Error = Box<dyn std::error::Error + Send + Sync>;
type Sender = h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>;

/// How long a request may still take after the run's end before it counts as a timeout.
const GRACE: Duration = Duration::from_secs(5);
/// How long a QUIC handshake may take.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// A bounded HTTP/3 load client (loopback only).
#[derive(Debug, Parser)]
struct Args {
    /// https://HOST:PORT/path: HOST is the TLS server name and :authority unless --sni says otherwise
    #[arg(long)]
    url: Uri,
    /// Address to dial (a loopback IP); default: the URL host, resolved
    #[arg(long)]
    connect: Option<IpAddr>,
    /// CA certificate(s) to trust (PEM)
    #[arg(long)]
    ca: PathBuf,
    /// TLS server name (SNI) to ask for and verify; default: the URL host
    #[arg(long)]
    sni: Option<String>,
    /// Connections
    #[arg(short = 'c', long, default_value_t = 1)]
    connections: usize,
    /// Concurrent request streams per connection
    #[arg(short = 'm', long, default_value_t = 1)]
    streams: usize,
    /// Seconds of load (at most 3600)
    #[arg(short = 'd', long, default_value_t = 10.0)]
    duration: f64,
    /// Stop after this many requests
    #[arg(short = 'n', long)]
    max_requests: Option<u64>,
    /// POST a body of this many bytes instead of GET
    #[arg(long)]
    post_bytes: Option<usize>,
    /// Client threads (each a current-thread runtime with its own UDP socket); default min(2, -c)
    #[arg(short = 't', long)]
    threads: Option<usize>,
}

/// What the workers share.
#[derive(Debug)]
struct Plan {
    uri: Uri,
    addr: SocketAddr,
    sni: String,
    client: quinn::ClientConfig,
    streams: usize,
    duration: Duration,
    max_requests: Option<u64>,
    issued: AtomicU64,
    body: Option<Bytes>,
}

/// Kinds of error, counted apart: non-2xx/3xx answers, failed streams, lost connections,
/// requests unanswered [`GRACE`] after the end.
const ERRORS: [&str; 4] = ["status", "stream", "connection", "timeout"];

/// Counts of one worker, thread or run.
#[derive(Debug, Default)]
struct Stats {
    lat_us: Vec<u32>,
    ok: u64,
    errors: [u64; 4],
    body_bytes: u64,
}

impl Stats {
    fn add(&mut self, o: Stats) {
        self.lat_us.extend(o.lat_us);
        self.ok += o.ok;
        self.body_bytes += o.body_bytes;
        self.errors.iter_mut().zip(o.errors).for_each(|(a, b)| *a += b);
    }
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("h3load: {e}");
        std::process::exit(1);
    }
}

fn run(a: Args) -> Result<(), Error> {
    if a.connections == 0 || a.streams == 0 || !(a.duration > 0.0 && a.duration <= 3600.0) {
        return Err("-c and -m must be > 0, -d in (0, 3600]".into());
    }
    if a.url.scheme_str() != Some("https") {
        return Err(format!("want an https:// URL, got {}", a.url).into());
    }
    let host = a.url.host().ok_or("the URL has no host")?.trim_matches(['[', ']']).to_owned();
    let port = a.url.port_u16().unwrap_or(443);
    let addr = match a.connect {
        Some(ip) => SocketAddr::new(ip, port),
        None => (host.as_str(), port).to_socket_addrs()?.next().ok_or("the URL host resolves to nothing")?,
    };
    if !addr.ip().is_loopback() {
        return Err(format!("{} is not a loopback address: h3load dials loopback only", addr.ip()).into());
    }
    let plan = Arc::new(Plan {
        uri: a.url.clone(),
        addr,
        sni: a.sni.clone().unwrap_or(host),
        client: client_config(&a.ca)?,
        streams: a.streams,
        duration: Duration::from_secs_f64(a.duration),
        max_requests: a.max_requests,
        issued: AtomicU64::new(0),
        body: a.post_bytes.map(|n| Bytes::from(vec![b'p'; n])),
    });
    let threads = a.threads.unwrap_or(2).clamp(1, a.connections);
    // Every thread and this one meet here once all handshakes are done: the clock starts then.
    let barrier = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let conns = a.connections / threads + usize::from(t < a.connections % threads);
            let (plan, barrier) = (Arc::clone(&plan), Arc::clone(&barrier));
            std::thread::spawn(move || -> Result<Stats, String> {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
                let rt = rt
                    .inspect_err(|_| {
                        barrier.wait();
                    })
                    .map_err(|e| e.to_string())?;
                rt.block_on(thread_main(plan, conns, barrier)).map_err(|e| e.to_string())
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    let mut total = Stats::default();
    for h in handles {
        total.add(h.join().map_err(|_| "a client thread panicked")?.map_err(|e| format!("connecting: {e}"))?);
    }
    let secs = start.elapsed().as_secs_f64();
    report(&a, addr, &total, secs, threads);
    if total.ok == 0 {
        return Err("no request succeeded".into());
    }
    Ok(())
}

/// TLS 1.3 with ALPN `h3`, trusting the certificates in `ca`.
fn client_config(ca: &std::path::Path) -> Result<quinn::ClientConfig, Error> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| format!("{}: {e}", ca.display()))? {
        roots.add(cert.map_err(|e| format!("{}: {e}", ca.display()))?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(tls))?;
    Ok(quinn::ClientConfig::new(Arc::new(quic)))
}

/// One thread: `conns` connections on one endpoint, then `streams` workers on each.
async fn thread_main(plan: Arc<Plan>, conns: usize, barrier: Arc<Barrier>) -> Result<Stats, Error> {
    let mut senders = Vec::new();
    let ready = async {
        let bind = if plan.addr.is_ipv4() { "127.0.0.1:0" } else { "[::1]:0" };
        let endpoint = quinn::Endpoint::client(bind.parse()?)?;
        for _ in 0..conns {
            let connecting = endpoint.connect_with(plan.client.clone(), plan.addr, &plan.sni)?;
            let conn =
                tokio::time::timeout(HANDSHAKE, connecting).await.map_err(|_| "handshake timed out")??;
            let (mut driver, sender) = h3::client::new(h3_quinn::Connection::new(conn)).await?;
            tokio::spawn(async move { poll_fn(|cx| driver.poll_close(cx)).await });
            senders.push(sender);
        }
        Ok::<_, Error>(endpoint)
    }
    .await;
    // Blocking, but nothing else runs on this thread's runtime yet but connection drivers,
    // which have nothing to do until the first request.
    barrier.wait();
    let endpoint = ready?;
    let deadline = tokio::time::Instant::now() + plan.duration;
    let mut tasks = tokio::task::JoinSet::new();
    for sender in &senders {
        for _ in 0..plan.streams {
            tasks.spawn(worker(sender.clone(), Arc::clone(&plan), deadline));
        }
    }
    drop(senders);
    let mut stats = Stats::default();
    while let Some(s) = tasks.join_next().await {
        stats.add(s?);
    }
    endpoint.close(0x100u32.into(), b""); // H3_NO_ERROR
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
    Ok(stats)
}

/// Requests one after another on `sender` until the deadline or the request budget.
async fn worker(mut sender: Sender, plan: Arc<Plan>, deadline: tokio::time::Instant) -> Stats {
    let mut st = Stats::default();
    while tokio::time::Instant::now() < deadline {
        if plan.max_requests.is_some_and(|k| plan.issued.fetch_add(1, Ordering::Relaxed) >= k) {
            break;
        }
        let t0 = Instant::now();
        match tokio::time::timeout_at(deadline + GRACE, request(&mut sender, &plan)).await {
            Ok(Ok((status, bytes))) => {
                st.body_bytes += bytes;
                if status.is_success() || status.is_redirection() {
                    st.ok += 1;
                    st.lat_us.push(u32::try_from(t0.elapsed().as_micros()).unwrap_or(u32::MAX));
                } else {
                    st.errors[0] += 1;
                }
            }
            Ok(Err(StreamError::ConnectionError { .. } | StreamError::RemoteClosing { .. })) => {
                st.errors[2] += 1;
                break;
            }
            Ok(Err(_)) => st.errors[1] += 1,
            Err(_) => {
                st.errors[3] += 1;
                break;
            }
        }
    }
    st
}

/// One request; its status and response body length.
async fn request(sender: &mut Sender, plan: &Plan) -> Result<(http::StatusCode, u64), StreamError> {
    let mut req = Request::builder().uri(plan.uri.clone());
    if let Some(b) = &plan.body {
        req = req.method(Method::POST).header(http::header::CONTENT_LENGTH, b.len());
    }
    let mut stream = sender.send_request(req.body(()).expect("a valid request")).await?;
    if let Some(b) = &plan.body {
        stream.send_data(b.clone()).await?;
    }
    stream.finish().await?;
    let res = stream.recv_response().await?;
    let mut n = 0u64;
    while let Some(mut chunk) = stream.recv_data().await? {
        n += chunk.remaining() as u64;
        chunk.advance(chunk.remaining());
    }
    Ok((res.status(), n))
}

fn report(a: &Args, addr: SocketAddr, s: &Stats, secs: f64, threads: usize) {
    let mut lat = s.lat_us.clone();
    lat.sort_unstable();
    let pct =
        |p: f64| lat.get(((lat.len().max(1) - 1) as f64 * p) as usize).map_or(0.0, |&v| f64::from(v) / 1e3);
    let (p50, p90, p99, max) = (pct(0.5), pct(0.9), pct(0.99), pct(1.0));
    let (rps, bps, errors) = (s.ok as f64 / secs, s.body_bytes as f64 / secs, s.errors.iter().sum::<u64>());
    let kinds: Vec<String> = ERRORS.iter().zip(s.errors).map(|(k, n)| format!("{k} {n}")).collect();
    let (c, m) = (a.connections, a.streams);
    println!("h3load {} via {addr}: {c} conns x {m} streams, {threads} thread(s), {secs:.3} s", a.url);
    println!("requests: {} ok, {errors} errors ({})", s.ok, kinds.join(", "));
    println!("req/s: {rps:.1}  body bytes/s: {bps:.0}");
    println!("latency ms (2xx/3xx): p50 {p50:.3}  p90 {p90:.3}  p99 {p99:.3}  max {max:.3}");
    println!("csv_header: tool,connections,streams,seconds,requests,errors,req_per_s,p50_ms,p90_ms,p99_ms,max_ms,body_bytes_per_s");
    println!(
        "csv: h3load,{c},{m},{secs:.3},{},{errors},{rps:.1},{p50:.3},{p90:.3},{p99:.3},{max:.3},{bps:.0}",
        s.ok
    );
}
