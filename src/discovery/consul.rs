//! The `consul` source: blocking queries on `GET /v1/health/service/<service>`.
//!
//! The loop follows Consul's "Blocking Queries" documentation and its implementation
//! details section: send `index` = the last `X-Consul-Index` and `wait`; the server holds the
//! request until the result may have changed or `wait` (plus up to `wait/16` of jitter) passes.
//! A returned index is not a promise of change, so equal sets are dropped by the publisher.
//! Per the docs, an index that goes backwards resets to 0 (a plain read), a returned index of
//! 0 is treated as 1, and the loop is rate-limited — here a token bucket of [`RATE`] queries
//! per second with a burst of [`BURST`] — so a server (or proxy) that answers at once cannot
//! make us spin. Errors (unreachable agent, failed TLS handshake, non-200, bad JSON) keep the
//! set, back off with jitter from 1 s to 30 s, and the next query after an error is a plain
//! read.
//!
//! Address = `Service.Address`, else `Node.Address`; weight = `Service.Weights.Passing`
//! (default 1). The client ([`Agent`]) is hyper-util's pooled client on the upstream
//! connector, so an `https://` agent is verified exactly as an `[upstream.tls]` upstream is:
//! the webpki roots, or the `tls_ca` bundle, or nothing with `tls_insecure_skip_verify`. The
//! ACL token is read from the environment variable named by `token_env` at every query, so a
//! rotated token is picked up without a reload.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use percent_encoding::{utf8_percent_encode, AsciiSet, PercentEncode, NON_ALPHANUMERIC};
use serde::Deserialize;

use crate::config::{ConsulAddress, StaticEndpoint, UpstreamProtocol, UpstreamTls};
use crate::proxy::connect::UpstreamConnector;

use super::{backoff, endpoint_address, Publisher};

/// Sustained queries per second at most: a blocking query that returns because of a change is
/// re-issued at once, but a server that never blocks costs at most this.
pub(crate) const RATE: f64 = 2.0;
/// Queries that may go out back to back before the rate applies (a change right after a
/// change is followed without delay).
pub(crate) const BURST: f64 = 2.0;
/// Consul caps `wait` at 10 minutes.
const MAX_WAIT: Duration = Duration::from_secs(600);
/// A plain read, and the TCP connect plus TLS handshake of any query, get this long: an agent
/// that accepts and never answers must not hold the watch, and an answer to a plain read is
/// immediate on a healthy agent.
const PLAIN_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// What to watch.
#[derive(Debug, Clone)]
pub(crate) struct ConsulSource {
    /// The agent: `http://` or `https://`, host and port.
    pub address: ConsulAddress,
    /// Service name.
    pub service: String,
    /// `tag` filter.
    pub tag: Option<String>,
    /// `dc`.
    pub datacenter: Option<String>,
    /// `passing`.
    pub passing_only: bool,
    /// Env var holding the ACL token.
    pub token_env: Option<String>,
    /// Blocking-query `wait`.
    pub wait: Duration,
    /// CA bundle for an `https://` agent (default: the webpki roots).
    pub tls_ca: Option<std::path::PathBuf>,
    /// Accept any certificate from an `https://` agent.
    pub tls_insecure_skip_verify: bool,
}

// === impl Agent ===

/// The HTTP client for one agent: cleartext for `http://`, rustls for `https://`.
#[derive(Debug, Clone)]
pub(crate) struct Agent {
    client: Client<UpstreamConnector, Empty<Bytes>>,
}

impl Agent {
    /// A client for `src`'s agent. Fails when its TLS settings cannot be used (an unreadable
    /// or empty `tls_ca` bundle), which the registry reports before the source starts, as an
    /// unreadable `[upstream.tls] ca` is.
    pub(crate) fn new(src: &ConsulSource) -> Result<Agent, String> {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(PLAIN_READ_TIMEOUT));
        // https:// URLs pass through to our connector, which does the TLS itself.
        http.enforce_http(false);
        let tls = if src.address.is_https() {
            let settings = UpstreamTls {
                // The name of the URL: a DNS name is sent as SNI, an IP address is matched
                // against the certificate's IP SANs.
                sni: None,
                ca: src.tls_ca.clone(),
                insecure_skip_verify: src.tls_insecure_skip_verify,
            };
            let cfg = crate::tls::client::config(&settings, UpstreamProtocol::Http1)
                .map_err(|e| format!("consul {}: tls_ca: {e}", src.address))?;
            Some((cfg, None))
        } else {
            None
        };
        let connector = UpstreamConnector::new(http, tls, PLAIN_READ_TIMEOUT)
            .map_err(|e| format!("consul {}: {e}", src.address))?;
        Ok(Agent { client: Client::builder(TokioExecutor::new()).build(connector) })
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Entry {
    node: Node,
    service: Service,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Node {
    #[serde(default)]
    address: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Service {
    #[serde(default)]
    address: String,
    port: u16,
    #[serde(default)]
    weights: Option<Weights>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Weights {
    #[serde(default)]
    passing: Option<u32>,
}

/// Parse a `/v1/health/service` answer into endpoints.
pub fn parse(body: &[u8]) -> Result<Vec<StaticEndpoint>, String> {
    let entries: Vec<Entry> =
        serde_json::from_slice(body).map_err(|e| format!("bad JSON from Consul: {e}"))?;
    Ok(entries
        .into_iter()
        .filter_map(|e| {
            let host = if e.service.address.is_empty() { e.node.address } else { e.service.address };
            if host.is_empty() || e.service.port == 0 {
                return None;
            }
            let address = endpoint_address(&host, e.service.port);
            let weight = e.service.weights.and_then(|w| w.passing).unwrap_or(1).max(1);
            Some(StaticEndpoint { address, weight })
        })
        .collect())
}

/// What [`url`] escapes in the service name (a path segment) and in query values: everything
/// but RFC 3986's unreserved characters, so a `/`, `?`, `#`, `&` or `%` in a name cannot
/// change which path or parameters the agent sees.
const ESCAPED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

fn enc(s: &str) -> PercentEncode<'_> {
    utf8_percent_encode(s, ESCAPED)
}

/// The query URL for `index` (0 = a plain read).
pub(crate) fn url(src: &ConsulSource, index: u64) -> String {
    let mut u = format!("{}/v1/health/service/{}?", src.address, enc(&src.service));
    let mut q = Vec::new();
    if index > 0 {
        q.push(format!("index={index}"));
        q.push(format!("wait={}ms", src.wait.min(MAX_WAIT).as_millis()));
    }
    if src.passing_only {
        q.push("passing=true".into());
    }
    if let Some(t) = &src.tag {
        q.push(format!("tag={}", enc(t)));
    }
    if let Some(dc) = &src.datacenter {
        q.push(format!("dc={}", enc(dc)));
    }
    u.push_str(&q.join("&"));
    u
}

/// The next index from the last one and the server's `X-Consul-Index` (Consul's rules).
pub(crate) fn next_index(last: u64, returned: u64) -> u64 {
    if returned == 0 {
        1
    } else if returned < last {
        0
    } else {
        returned
    }
}

/// A token bucket: `rate` per second, `burst` at once.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    async fn take(&mut self) {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * RATE).min(BURST);
        self.at = now;
        if self.tokens < 1.0 {
            let wait = Duration::from_secs_f64((1.0 - self.tokens) / RATE);
            tokio::time::sleep(wait).await;
            self.tokens = 1.0;
            self.at = Instant::now();
        }
        self.tokens -= 1.0;
    }
}

/// Run the source until the registry aborts it, querying through `agent`.
pub(crate) async fn run(src: ConsulSource, agent: Agent, out: Publisher) {
    let mut bucket = Bucket { tokens: BURST, at: Instant::now() };
    let mut backoff = backoff();
    let mut index = 0u64;
    loop {
        bucket.take().await;
        match query(&agent.client, &src, index).await {
            Ok((returned, set)) => {
                index = next_index(index, returned);
                out.reset(set);
                backoff.reset();
            }
            Err(e) => {
                out.fail(e);
                index = 0;
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

/// `e` and its causes, joined: hyper-util's "client error (Connect)" alone does not say that
/// the agent refused the connection or that its certificate is not trusted.
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = c.source();
    }
    out
}

async fn query(
    client: &Client<UpstreamConnector, Empty<Bytes>>,
    src: &ConsulSource,
    index: u64,
) -> Result<(u64, Vec<StaticEndpoint>), String> {
    let uri = url(src, index);
    let mut req = Request::get(&uri);
    if let Some(var) = &src.token_env {
        if let Ok(token) = std::env::var(var) {
            req = req.header("x-consul-token", token);
        }
    }
    let req = req.body(Empty::new()).map_err(|e| format!("bad Consul request {uri}: {e}"))?;
    // Consul holds a blocking query up to `wait` plus wait/16 of jitter; allow for that.
    let limit = if index > 0 {
        let w = src.wait.min(MAX_WAIT);
        w + w / 16 + Duration::from_secs(10)
    } else {
        PLAIN_READ_TIMEOUT
    };
    let res = tokio::time::timeout(limit, client.request(req))
        .await
        .map_err(|_| format!("Consul query {uri} timed out"))?
        .map_err(|e| format!("Consul query {uri} failed: {}", chain(&e)))?;
    let status = res.status();
    let returned = res
        .headers()
        .get("x-consul-index")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let body = tokio::time::timeout(Duration::from_secs(30), res.into_body().collect())
        .await
        .map_err(|_| format!("Consul answer from {uri} timed out"))?
        .map_err(|e| format!("Consul answer from {uri} failed: {}", chain(&e)))?
        .to_bytes();
    if status != StatusCode::OK {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]).trim().to_owned();
        return Err(format!("Consul answered {status} to {uri}: {text}"));
    }
    Ok((returned, parse(&body)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_rules() {
        assert_eq!(next_index(0, 5), 5);
        assert_eq!(next_index(5, 5), 5);
        assert_eq!(next_index(5, 3), 0, "backwards resets");
        assert_eq!(next_index(5, 0), 1, "zero is treated as one");
    }

    #[test]
    fn addresses_and_weights() {
        let body = br#"[
          {"Node":{"Address":"10.0.0.1"},"Service":{"Address":"","Port":80}},
          {"Node":{"Address":"10.0.0.1"},"Service":{"Address":"10.0.0.2","Port":81,"Weights":{"Passing":3,"Warning":1}}},
          {"Node":{"Address":"::1"},"Service":{"Address":"","Port":82}}
        ]"#;
        let eps = parse(body).unwrap();
        let got: Vec<(&str, u32)> = eps.iter().map(|e| (e.address.as_str(), e.weight)).collect();
        assert_eq!(got, [("10.0.0.1:80", 1), ("10.0.0.2:81", 3), ("[::1]:82", 1)]);
    }

    /// A source for the service `web api`, tag `v2`, datacenter `dc1`, passing only.
    fn source() -> ConsulSource {
        ConsulSource {
            address: ConsulAddress::parse("http://127.0.0.1:8500/").unwrap(),
            service: "web api".into(),
            tag: Some("v2".into()),
            datacenter: Some("dc1".into()),
            passing_only: true,
            token_env: None,
            wait: Duration::from_secs(300),
            tls_ca: None,
            tls_insecure_skip_verify: false,
        }
    }

    #[test]
    fn query_url() {
        let src = source();
        assert_eq!(
            url(&src, 0),
            "http://127.0.0.1:8500/v1/health/service/web%20api?passing=true&tag=v2&dc=dc1"
        );
        assert_eq!(
            url(&src, 7),
            "http://127.0.0.1:8500/v1/health/service/web%20api?index=7&wait=300000ms&passing=true&tag=v2&dc=dc1"
        );
        let https = ConsulSource { address: ConsulAddress::parse("HTTPS://[::1]:8501").unwrap(), ..src };
        assert_eq!(
            url(&https, 0),
            "https://[::1]:8501/v1/health/service/web%20api?passing=true&tag=v2&dc=dc1"
        );
    }

    #[test]
    fn names_and_query_values_are_escaped() {
        let src = ConsulSource {
            service: "a b/c?d#e%f-g.h_i~jé".into(),
            tag: Some("v=2&x+y".into()),
            datacenter: Some("dc/1".into()),
            passing_only: false,
            ..source()
        };
        assert_eq!(
            url(&src, 0),
            "http://127.0.0.1:8500/v1/health/service/a%20b%2Fc%3Fd%23e%25f-g.h_i~j%C3%A9?tag=v%3D2%26x%2By&dc=dc%2F1"
        );
        let uri: http::Uri = url(&src, 0).parse().unwrap();
        assert_eq!(uri.path(), "/v1/health/service/a%20b%2Fc%3Fd%23e%25f-g.h_i~j%C3%A9", "one path segment");
    }

    #[test]
    fn an_unreadable_tls_ca_is_an_error_before_the_watch_starts() {
        let src = |address: &str, tls_ca: Option<&str>| ConsulSource {
            address: ConsulAddress::parse(address).unwrap(),
            service: "s".into(),
            tag: None,
            datacenter: None,
            passing_only: true,
            token_env: None,
            wait: Duration::from_secs(300),
            tls_ca: tls_ca.map(Into::into),
            tls_insecure_skip_verify: false,
        };
        let missing = "/nonexistent/switchyard-consul-ca.pem";
        let e = Agent::new(&src("https://127.0.0.1:8501", Some(missing))).unwrap_err();
        assert!(e.starts_with("consul https://127.0.0.1:8501: tls_ca: ") && e.contains(missing), "{e}");
        assert!(Agent::new(&src("https://127.0.0.1:8501", None)).is_ok(), "the webpki roots");
        assert!(Agent::new(&src("http://127.0.0.1:8500", None)).is_ok());
    }
}
