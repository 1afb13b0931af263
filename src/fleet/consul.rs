//! The fleet's Consul KV store: the keys `<prefix>/routes/*`, `<prefix>/version` and
//! `<prefix>/members/<id>`, through Consul's HTTP API (KV store, transactions, sessions).
//!
//! - **Reading**: one `GET /v1/kv/<prefix>/?recurse`, a consistent read of every key of the
//!   fleet at one index, so `version` and the files always belong together.
//! - **Watching**: a blocking query on `<prefix>/version` (`index` = the last `X-Consul-Index`,
//!   `wait` 5 minutes), with Consul's index rules (an index going backwards resets to a plain
//!   read, 0 counts as 1) and a floor between queries, so a server that answers at once
//!   cannot make the loop spin.
//! - **Publishing**: one `PUT /v1/txn`: `cas` on `version` with its `ModifyIndex` (0: only if
//!   absent), `delete-tree` of `routes/`, then a `set` per file, all or nothing. A lost race
//!   fails the `cas`; it is retried, or with `--if-version` reported.
//! - **Members**: a session (`TTL` 15 s, `Behavior` delete, `LockDelay` 0) renewed every 5 s;
//!   the member key is written with `?acquire=<session>`, so Consul deletes it when the session
//!   ends: destroyed at a clean stop, or expired when a gateway dies. A renewal answered 404
//!   (the session is gone) makes the next registration open a new session.
//!
//! The ACL token is read from `token_env` at every request.

use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::Mutex;

use super::{route_files, PublishError, Published};
use crate::config::{ConsulAddress, RoutesSource, UpstreamProtocol, UpstreamTls};
use crate::discovery::consul::chain;
use crate::proxy::connect::UpstreamConnector;

/// The session TTL of the contract; renewed every [`RENEW_EVERY`].
const SESSION_TTL: &str = "15s";
/// How often the session is renewed: three chances within one TTL.
pub(crate) const RENEW_EVERY: Duration = Duration::from_secs(5);
/// A blocking query's `wait`; the request itself gets a little more.
const WAIT: Duration = Duration::from_secs(300);
/// The least time between two blocking queries that returned the same index.
const QUERY_FLOOR: Duration = Duration::from_millis(500);
/// Operations Consul accepts in one transaction (its documented limit).
const MAX_TXN_OPS: usize = 128;
/// Consul's default `kv_max_value_size` and `txn_max_req_len` (512 KiB).
const MAX_TXN_BYTES: usize = 512 * 1024;

/// Everything but RFC 3986's unreserved characters and `/` is escaped in a key's URL path.
const KEY: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~').remove(b'/');

#[derive(Debug)]
pub(crate) struct ConsulStore {
    address: ConsulAddress,
    prefix: String,
    token_env: Option<String>,
    client: Client<UpstreamConnector, Full<Bytes>>,
    /// The blocking query's index, and when the last query returned with that same index
    /// (no change: the next one waits out [`QUERY_FLOOR`] from then).
    watch: Mutex<(u64, Option<Instant>)>,
    /// This gateway's session, and whether the member key was acquired in it.
    session: Mutex<Option<(String, bool)>>,
}

/// One entry of a KV read.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Kv {
    key: String,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    modify_index: u64,
}

impl Kv {
    fn text(&self) -> Result<String, String> {
        let raw = match &self.value {
            None => Vec::new(),
            Some(v) => base64::engine::general_purpose::STANDARD
                .decode(v)
                .map_err(|_| format!("Consul key {}: its value is not base64", self.key))?,
        };
        String::from_utf8(raw).map_err(|_| format!("Consul key {}: its value is not UTF-8", self.key))
    }
}

/// An answer: status, `X-Consul-Index`, body.
type Answer = (StatusCode, u64, Bytes);

impl ConsulStore {
    pub(crate) fn new(src: &RoutesSource) -> Result<ConsulStore, String> {
        let RoutesSource::Consul { address, prefix, token_env, tls_ca } = src else {
            unreachable!("a consul source")
        };
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(super::OP_TIMEOUT));
        http.enforce_http(false);
        let tls = if address.is_https() {
            let settings = UpstreamTls { sni: None, ca: tls_ca.clone(), insecure_skip_verify: false };
            let cfg = crate::tls::client::config(&settings, UpstreamProtocol::Http1)
                .map_err(|e| format!("consul {address}: tls_ca: {}", e.message))?;
            Some((cfg, None))
        } else {
            None
        };
        let connector = UpstreamConnector::new(http, tls, super::OP_TIMEOUT)
            .map_err(|e| format!("consul {address}: {e}"))?;
        Ok(ConsulStore {
            address: address.clone(),
            prefix: prefix.clone(),
            token_env: token_env.clone(),
            client: Client::builder(TokioExecutor::new()).build(connector),
            watch: Mutex::new((0, None)),
            session: Mutex::new(None),
        })
    }

    fn key_url(&self, rel: &str, query: &str) -> String {
        let key = format!("{}/{rel}", self.prefix);
        format!("{}/v1/kv/{}{query}", self.address, utf8_percent_encode(&key, KEY))
    }

    async fn call(
        &self,
        method: Method,
        url: String,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Answer, String> {
        let mut req = Request::builder().method(method).uri(&url);
        if let Some(token) =
            self.token_env.as_deref().and_then(|v| std::env::var(v).ok()).filter(|t| !t.is_empty())
        {
            req = req.header("x-consul-token", token);
        }
        let req = req.body(Full::new(body)).map_err(|e| format!("consul {url}: {e}"))?;
        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| format!("consul {}: {}", self.address, chain(&e)))?;
            let index = resp
                .headers()
                .get("x-consul-index")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let status = resp.status();
            let body =
                resp.into_body().collect().await.map_err(|e| format!("consul {}: {e}", self.address))?;
            Ok((status, index, body.to_bytes()))
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or_else(|_| Err(format!("consul {}: no answer within {timeout:?}", self.address)))
    }

    /// A request that must answer 200.
    async fn ok(&self, method: Method, url: String, body: Bytes) -> Result<Answer, String> {
        let a = self.call(method, url.clone(), body, super::OP_TIMEOUT).await?;
        if a.0 != StatusCode::OK {
            return Err(refused(&url, &a));
        }
        Ok(a)
    }

    pub(crate) async fn read(&self) -> Result<Option<Published>, String> {
        let url = self.key_url("", "?recurse");
        let (status, _, body) = self.call(Method::GET, url.clone(), Bytes::new(), super::OP_TIMEOUT).await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if status != StatusCode::OK {
            return Err(refused(&url, &(status, 0, body)));
        }
        let entries: Vec<Kv> =
            serde_json::from_slice(&body).map_err(|e| format!("consul {url}: bad JSON: {e}"))?;
        let version_key = format!("{}/version", self.prefix);
        let routes = format!("{}/routes/", self.prefix);
        let Some(v) = entries.iter().find(|e| e.key == version_key) else { return Ok(None) };
        let version =
            v.text()?.trim().parse().map_err(|_| format!("Consul key {version_key}: not a number"))?;
        let mut files = Vec::new();
        for e in &entries {
            if let Some(name) = e.key.strip_prefix(&routes) {
                files.push((name.to_owned(), e.text()?));
            }
        }
        Ok(Some(Published { version, files: route_files(files) }))
    }

    pub(crate) async fn wait(&self) -> Result<(), String> {
        let mut w = self.watch.lock().await;
        if let Some(at) = w.1 {
            tokio::time::sleep(QUERY_FLOOR.saturating_sub(at.elapsed())).await;
        }
        let query = match w.0 {
            0 => String::new(),
            i => format!("?index={i}&wait={}s", WAIT.as_secs()),
        };
        let url = self.key_url("version", &query);
        let r = self.call(Method::GET, url.clone(), Bytes::new(), WAIT + WAIT / 16 + super::OP_TIMEOUT).await;
        let (status, index, body) = match r {
            Ok(a) => a,
            Err(e) => {
                (w.0, w.1) = (0, None);
                return Err(e);
            }
        };
        if status != StatusCode::OK && status != StatusCode::NOT_FOUND {
            (w.0, w.1) = (0, None);
            return Err(refused(&url, &(status, index, body)));
        }
        // Consul's rules: 0 counts as 1, an index going backwards means a plain read next.
        let next = match index {
            0 => 1,
            i if i < w.0 => 0,
            i => i,
        };
        // A query answered without a change (its `wait` ran out, or a server or proxy that
        // does not block) is followed by the next one no sooner than the floor; a change is
        // followed at once (the caller reads the new set first).
        w.1 = (next == w.0).then(Instant::now);
        w.0 = next;
        Ok(())
    }

    pub(crate) async fn publish(
        &self,
        files: &[(String, String)],
        if_version: Option<u64>,
    ) -> Result<u64, PublishError> {
        if files.len() + 2 > MAX_TXN_OPS {
            return Err(PublishError::Failed(format!(
                "{} route files: Consul takes at most {MAX_TXN_OPS} operations in one transaction, {} of them files",
                files.len(),
                MAX_TXN_OPS - 2
            )));
        }
        let size: usize = files.iter().map(|(n, t)| n.len() + t.len() * 4 / 3 + 96).sum();
        if size > MAX_TXN_BYTES {
            return Err(PublishError::Failed(format!(
                "the set takes about {size} bytes as a Consul transaction; Consul takes at most {MAX_TXN_BYTES}"
            )));
        }
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let version_key = format!("{}/version", self.prefix);
        for _ in 0..5 {
            let url = self.key_url("version", "");
            let (status, _, body) = self
                .call(Method::GET, url.clone(), Bytes::new(), super::OP_TIMEOUT)
                .await
                .map_err(PublishError::Failed)?;
            let (current, index) = match status {
                StatusCode::NOT_FOUND => (None, 0),
                StatusCode::OK => {
                    let kv: Vec<Kv> = serde_json::from_slice(&body)
                        .map_err(|e| PublishError::Failed(format!("consul {url}: bad JSON: {e}")))?;
                    let kv = kv
                        .first()
                        .ok_or_else(|| PublishError::Failed(format!("consul {url}: empty answer")))?;
                    let v = kv.text().map_err(PublishError::Failed)?.trim().parse::<u64>();
                    (
                        Some(v.map_err(|_| {
                            PublishError::Failed(format!("Consul key {version_key}: not a number"))
                        })?),
                        kv.modify_index,
                    )
                }
                _ => return Err(PublishError::Failed(refused(&url, &(status, 0, body)))),
            };
            if let Some(want) = if_version {
                if current.unwrap_or(0) != want {
                    return Err(PublishError::Mismatch(current));
                }
            }
            let next = current.unwrap_or(0) + 1;
            let mut ops = vec![
                json!({"KV": {"Verb": "cas", "Key": version_key, "Value": b64(&next.to_string()), "Index": index}}),
                json!({"KV": {"Verb": "delete-tree", "Key": format!("{}/routes/", self.prefix)}}),
            ];
            for (name, text) in files {
                ops.push(json!({"KV": {"Verb": "set", "Key": format!("{}/routes/{name}", self.prefix), "Value": b64(text)}}));
            }
            let url = format!("{}/v1/txn", self.address);
            let body = Bytes::from(serde_json::to_vec(&ops).unwrap_or_default());
            let (status, _, answer) = self
                .call(Method::PUT, url.clone(), body, super::OP_TIMEOUT)
                .await
                .map_err(PublishError::Failed)?;
            match status {
                StatusCode::OK => return Ok(next),
                // A failed operation: the cas lost a race (nothing was applied).
                StatusCode::CONFLICT if if_version.is_some() => {
                    let now = self.read().await.ok().flatten().map(|p| p.version);
                    return Err(PublishError::Mismatch(now));
                }
                StatusCode::CONFLICT => continue,
                _ => return Err(PublishError::Failed(refused(&url, &(status, 0, answer)))),
            }
        }
        Err(PublishError::Failed(format!("Consul {}: other publishers kept winning; try again", self.prefix)))
    }

    pub(crate) async fn members(&self) -> Result<Vec<super::Member>, String> {
        let url = self.key_url("members/", "?recurse");
        let (status, _, body) = self.call(Method::GET, url.clone(), Bytes::new(), super::OP_TIMEOUT).await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        if status != StatusCode::OK {
            return Err(refused(&url, &(status, 0, body)));
        }
        let entries: Vec<Kv> =
            serde_json::from_slice(&body).map_err(|e| format!("consul {url}: bad JSON: {e}"))?;
        Ok(entries.iter().filter_map(|e| serde_json::from_str(&e.text().ok()?).ok()).collect())
    }

    /// This gateway's session, created if there is none.
    async fn session(&self, id: &str) -> Result<(String, bool), String> {
        let mut s = self.session.lock().await;
        if let Some(s) = s.as_ref() {
            return Ok(s.clone());
        }
        let body = json!({"Name": format!("switchyard {id}"), "TTL": SESSION_TTL, "Behavior": "delete", "LockDelay": "0s"});
        let url = format!("{}/v1/session/create", self.address);
        let (_, _, answer) = self.ok(Method::PUT, url.clone(), Bytes::from(body.to_string())).await?;
        #[derive(Deserialize)]
        struct Created {
            #[serde(rename = "ID")]
            id: String,
        }
        let created: Created =
            serde_json::from_slice(&answer).map_err(|e| format!("consul {url}: bad JSON: {e}"))?;
        *s = Some((created.id.clone(), false));
        Ok((created.id, false))
    }

    pub(crate) async fn register(&self, id: &str, data: &[u8]) -> Result<(), String> {
        let (session, _) = self.session(id).await?;
        let url = self.key_url(&format!("members/{id}"), &format!("?acquire={session}"));
        let (_, _, answer) = self.ok(Method::PUT, url.clone(), Bytes::copy_from_slice(data)).await?;
        if answer.as_ref().trim_ascii() != b"true" {
            // Another session holds the key, or ours is gone: start again with a new one.
            *self.session.lock().await = None;
            return Err(format!("consul {url}: the member key could not be acquired"));
        }
        if let Some(s) = self.session.lock().await.as_mut().filter(|s| s.0 == session) {
            s.1 = true;
        }
        Ok(())
    }

    /// Renew the session; forget it when Consul no longer knows it.
    pub(crate) async fn renew(&self) -> Result<(), String> {
        let Some((session, _)) = self.session.lock().await.clone() else { return Ok(()) };
        let url = format!("{}/v1/session/renew/{session}", self.address);
        let (status, _, body) = self.call(Method::PUT, url.clone(), Bytes::new(), super::OP_TIMEOUT).await?;
        match status {
            StatusCode::OK => Ok(()),
            StatusCode::NOT_FOUND => {
                let mut s = self.session.lock().await;
                if s.as_ref().is_some_and(|s| s.0 == session) {
                    *s = None;
                }
                Err(format!("consul session {session} expired; registering again"))
            }
            _ => Err(refused(&url, &(status, 0, body))),
        }
    }

    /// Whether the member key must be written again (a new session).
    pub(crate) async fn needs_register(&self) -> bool {
        !self.session.lock().await.as_ref().is_some_and(|s| s.1)
    }

    pub(crate) async fn close(&self) {
        if let Some((session, _)) = self.session.lock().await.take() {
            let url = format!("{}/v1/session/destroy/{session}", self.address);
            let _ = self.call(Method::PUT, url, Bytes::new(), Duration::from_secs(2)).await;
        }
    }
}

fn refused(url: &str, (status, _, body): &Answer) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]).trim().to_owned();
    format!("consul {url}: {status} {text}")
}
