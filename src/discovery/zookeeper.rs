//! The `zookeeper` source: the children of a path are the members (docs/discovery.md).
//!
//! This is the membership recipe of Finagle's serversets and Curator's x-discovery
//! `ServiceCache`: a children watch on `path`, a data watch on each child (so a serverset
//! member leaving `ALIVE` or a Curator instance turning `enabled: false` is noticed), and an
//! exists watch on `path` while it is missing (an empty set until it appears). ZooKeeper
//! watches are one-shot, so each event is answered by reading again with a new watch.
//!
//! Session semantics follow the ZooKeeper programmer's guide: on *connection loss* the client
//! library reconnects by itself and re-registers our watches (ZOOKEEPER-43), so we keep the
//! set, report the error, and re-list once connected again; on *session expiry* (the server
//! dropped us, or we were disconnected for longer than the session timeout) every watch is
//! gone, so we open a new session and read everything again. Connecting fails eagerly and is
//! retried with the shared jittered backoff.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, StreamExt};
use serde::de::IgnoredAny;
use serde::Deserialize;
use zookeeper_client as zk;

use crate::config::{StaticEndpoint, ZkFormat};

use super::{backoff, endpoint_address, Publisher};
use crate::backoff::Backoff;

/// What to watch.
#[derive(Debug, Clone)]
pub(crate) struct ZkSource {
    /// Connect string (`host:port,host:port[/chroot]`).
    pub servers: String,
    /// Parent node.
    pub path: String,
    /// Member data format.
    pub format: ZkFormat,
    /// Serverset `additionalEndpoints` key.
    pub endpoint_name: Option<String>,
    /// Session timeout to ask for.
    pub session_timeout: Duration,
}

type Watch = BoxFuture<'static, zk::WatchedEvent>;
type DataWatch = BoxFuture<'static, (String, zk::WatchedEvent)>;

/// Why a session ended.
enum Ended {
    /// Expired or closed: open a new one.
    Session(String),
}

/// Run the source until the registry aborts it.
pub(crate) async fn run(src: ZkSource, out: Publisher) {
    let mut backoff = backoff();
    loop {
        let connect = zk::Client::connector()
            .with_session_timeout(src.session_timeout)
            .with_fail_eagerly()
            .connect(&src.servers);
        // The library bounds connecting by the session timeout; this is a second fence.
        let client = match tokio::time::timeout(src.session_timeout + Duration::from_secs(1), connect).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                out.fail(format!("cannot connect to ZooKeeper {}: {e}", src.servers));
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
            Err(_) => {
                out.fail(format!("cannot connect to ZooKeeper {}: timed out", src.servers));
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        tracing::debug!(servers = %src.servers, session = %client.session_id(), "ZooKeeper session opened");
        let Ended::Session(why) = watch_session(&client, &src, &out, &mut backoff).await;
        out.fail(format!("ZooKeeper session {} ended ({why}); opening a new one", client.session_id()));
    }
}

fn is_terminal(e: &zk::Error) -> bool {
    matches!(e, zk::Error::SessionExpired | zk::Error::ClientClosed | zk::Error::AuthFailed)
}

/// What one session knows.
struct Members {
    /// Child name → its endpoint (None: skipped, e.g. not ALIVE or unparsable).
    members: BTreeMap<String, Option<StaticEndpoint>>,
    /// Children whose data must be (re)read.
    to_read: Vec<String>,
    /// One outstanding data watch per child.
    data_watches: FuturesUnordered<DataWatch>,
    watched: HashSet<String>,
    /// The children watch on `path`, or its exists watch while it is missing.
    parent_watch: Watch,
    need_children: bool,
    missing: bool,
}

impl Members {
    /// Read what is stale.
    async fn read(&mut self, client: &zk::Client, src: &ZkSource) -> Result<(), zk::Error> {
        if self.need_children {
            match client.get_and_watch_children(&src.path).await {
                Ok((children, _, w)) => {
                    self.parent_watch = Box::pin(w.changed());
                    self.missing = false;
                    let now: HashSet<&String> = children.iter().collect();
                    self.members.retain(|k, _| now.contains(k));
                    self.to_read.retain(|k| now.contains(k));
                    for c in &children {
                        if !self.members.contains_key(c) && !self.to_read.contains(c) {
                            self.to_read.push(c.clone());
                        }
                    }
                }
                Err(zk::Error::NoNode) => match client.check_and_watch_stat(&src.path).await? {
                    // Created between the two calls: list it on the next round.
                    (Some(_), w) => {
                        self.parent_watch = Box::pin(w.changed());
                        return Ok(());
                    }
                    (None, w) => {
                        self.parent_watch = Box::pin(w.changed());
                        self.missing = true;
                        self.members.clear();
                        self.to_read.clear();
                    }
                },
                Err(e) => return Err(e),
            }
            self.need_children = false;
        }
        let base = src.path.trim_end_matches('/');
        while let Some(child) = self.to_read.last().cloned() {
            let full = format!("{base}/{child}");
            match client.get_and_watch_data(&full).await {
                Ok((data, _, w)) => {
                    let member = match parse_member(src.format, src.endpoint_name.as_deref(), &child, &data) {
                        Ok(m) => m,
                        Err(e) => {
                            tracing::error!(node = %full, error = %e, "skipping a ZooKeeper member");
                            None
                        }
                    };
                    self.members.insert(child.clone(), member);
                    // ZooKeeper fires a data watch once and the event makes us read (and
                    // watch) again, so one outstanding watch per child is enough.
                    if self.watched.insert(child.clone()) {
                        let name = child.clone();
                        self.data_watches.push(Box::pin(async move { (name, w.changed().await) }));
                    }
                }
                Err(zk::Error::NoNode) => {
                    self.members.remove(&child);
                }
                Err(e) => return Err(e),
            }
            self.to_read.pop();
        }
        Ok(())
    }

    fn settled(&self) -> bool {
        !self.need_children && self.to_read.is_empty()
    }

    fn set(&self) -> Vec<StaticEndpoint> {
        if self.missing {
            Vec::new()
        } else {
            self.members.values().flatten().cloned().collect()
        }
    }
}

/// Watch `path` within one session until it ends.
async fn watch_session(client: &zk::Client, src: &ZkSource, out: &Publisher, backoff: &mut Backoff) -> Ended {
    let mut state = client.state_watcher();
    let mut m = Members {
        members: BTreeMap::new(),
        to_read: Vec::new(),
        data_watches: FuturesUnordered::new(),
        watched: HashSet::new(),
        parent_watch: Box::pin(std::future::pending()),
        need_children: true,
        missing: false,
    };
    // While disconnected there is nothing to read: wait for the library to reconnect.
    let mut connected = true;
    loop {
        let read = if connected { m.read(client, src).await } else { Ok(()) };
        match read {
            Ok(()) if !connected => {}
            Ok(()) if m.settled() => {
                out.reset(m.set());
                backoff.reset();
            }
            Ok(()) => continue,
            Err(e) if is_terminal(&e) => return Ended::Session(e.to_string()),
            Err(e) => {
                out.fail(format!("ZooKeeper {} {}: {e}", src.servers, src.path));
                // Wait for the library to reconnect (or give up on the session).
                loop {
                    match state.changed().await {
                        zk::SessionState::SyncConnected | zk::SessionState::ConnectedReadOnly => break,
                        zk::SessionState::Disconnected => continue,
                        s => return Ended::Session(format!("{s}")),
                    }
                }
                m.need_children = true;
                continue;
            }
        }

        tokio::select! {
            ev = &mut m.parent_watch => {
                if ev.event_type == zk::EventType::Session {
                    return Ended::Session(format!("{}", ev.session_state));
                }
                m.parent_watch = Box::pin(std::future::pending());
                m.need_children = true;
            }
            Some((child, ev)) = m.data_watches.next() => {
                m.watched.remove(&child);
                if ev.event_type == zk::EventType::Session {
                    return Ended::Session(format!("{}", ev.session_state));
                }
                if m.members.contains_key(&child) && !m.to_read.contains(&child) {
                    m.to_read.push(child);
                }
            }
            s = state.changed() => match s {
                zk::SessionState::Disconnected => {
                    connected = false;
                    out.fail(format!("lost the connection to ZooKeeper {}; keeping the last set", src.servers));
                }
                zk::SessionState::SyncConnected | zk::SessionState::ConnectedReadOnly => {
                    // The library re-registered our watches; list again to be sure (and to
                    // clear the error).
                    connected = true;
                    m.need_children = true;
                }
                s => return Ended::Session(format!("{s}")),
            },
        }
    }
}

// === member formats ===

/// A field of member JSON as the formats read it: a value of another type counts as missing
/// (`"port": "8080"` is "no numeric `port`", `"status": 1` is ALIVE), yet as present where
/// presence alone is asked for (`"serviceEndpoint": null` is not "no `serviceEndpoint`").
#[derive(Debug, Default, Deserialize)]
#[serde(untagged)]
enum Field<T> {
    #[default]
    #[serde(skip)]
    Missing,
    Is(T),
    Other(IgnoredAny),
}

impl<T> Field<T> {
    fn get(&self) -> Option<&T> {
        match self {
            Field::Is(v) => Some(v),
            Field::Missing | Field::Other(_) => None,
        }
    }
}

// Each member struct flattens the fields it does not name into `_rest`: that makes serde read
// it from a JSON object only, where a plain struct would also take an array, by position.

/// Apache Curator x-discovery `ServiceInstance` (the fields we use).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Curator {
    address: Field<String>,
    port: Field<u64>,
    enabled: Field<bool>,
    #[serde(flatten)]
    _rest: IgnoredAny,
}

/// Finagle/Aurora serverset member (the fields we use).
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct Serverset {
    service_endpoint: Field<Endpoint>,
    additional_endpoints: Field<HashMap<String, Field<Endpoint>>>,
    status: Field<String>,
    #[serde(flatten)]
    _rest: IgnoredAny,
}

/// A serverset endpoint.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Endpoint {
    host: Field<String>,
    port: Field<u64>,
    #[serde(flatten)]
    _rest: IgnoredAny,
}

/// Member JSON as `T`. Through a [`Field`], serde_json parses the whole node before `T` looks
/// at it, so JSON that is invalid anywhere is "not JSON", also in a field `T` ignores or after
/// a top level that is not an object.
fn from_json<'a, T: Deserialize<'a>>(data: &'a [u8]) -> Result<T, String> {
    match serde_json::from_slice(data) {
        Ok(Field::Is(m)) => Ok(m),
        // An object `T` refused: serde refuses a key given twice rather than pick one.
        Ok(_) if data.trim_ascii_start().starts_with(b"{") => Err("a key appears twice".into()),
        Ok(_) => Err("not a JSON object".into()),
        Err(e) => Err(format!("not JSON: {e}")),
    }
}

fn host_port(host: &str, port: u64) -> Result<StaticEndpoint, String> {
    if host.is_empty() {
        return Err("empty host".into());
    }
    let port = u16::try_from(port).ok().filter(|p| *p != 0).ok_or_else(|| format!("invalid port {port}"))?;
    Ok(StaticEndpoint { address: endpoint_address(host, port), weight: 1 })
}

/// Apache Curator x-discovery `ServiceInstance` JSON: `address`, `port`; `enabled: false`
/// instances are skipped (`Ok(None)`).
pub fn parse_curator(data: &[u8]) -> Result<Option<StaticEndpoint>, String> {
    let m: Curator = from_json(data)?;
    let address = m.address.get().ok_or("no string `address`")?;
    let port = *m.port.get().ok_or("no numeric `port`")?;
    if m.enabled.get() == Some(&false) {
        return Ok(None);
    }
    host_port(address, port).map(Some)
}

/// Finagle/Aurora serverset JSON: `serviceEndpoint` (or `additionalEndpoints.<name>`), only
/// `status = "ALIVE"` members (others are `Ok(None)`).
pub fn parse_serverset(data: &[u8], endpoint_name: Option<&str>) -> Result<Option<StaticEndpoint>, String> {
    let m: Serverset = from_json(data)?;
    if let Field::Missing = m.service_endpoint {
        return Err("no `serviceEndpoint`".into());
    }
    let ep = match endpoint_name {
        None => &m.service_endpoint,
        Some(n) => m
            .additional_endpoints
            .get()
            .and_then(|a| a.get(n))
            .ok_or_else(|| format!("no `additionalEndpoints.{n}`"))?,
    };
    let ep = ep.get();
    let host = ep.and_then(|e| e.host.get()).ok_or("no string `host`")?;
    let port = *ep.and_then(|e| e.port.get()).ok_or("no numeric `port`")?;
    let ep = host_port(host, port)?;
    let alive = m.status.get().is_none_or(|s| s == "ALIVE");
    Ok(alive.then_some(ep))
}

/// `host:port` as the node's data, or as the child's name when the data is empty.
pub fn parse_hostport(child: &str, data: &[u8]) -> Result<Option<StaticEndpoint>, String> {
    let text = std::str::from_utf8(data).map_err(|_| "data is not UTF-8".to_string())?.trim();
    let text = if text.is_empty() { child } else { text };
    let (host, port) = text.rsplit_once(':').ok_or_else(|| format!("{text:?} is not host:port"))?;
    let port: u64 = port.parse().map_err(|_| format!("{text:?} is not host:port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains(['/', ' ', '{', '"']) {
        return Err(format!("{text:?} is not host:port"));
    }
    host_port(host, port).map(Some)
}

/// One child in `format`; `auto` tries curator, serverset and hostport in that order.
pub fn parse_member(
    format: ZkFormat,
    endpoint_name: Option<&str>,
    child: &str,
    data: &[u8],
) -> Result<Option<StaticEndpoint>, String> {
    match format {
        ZkFormat::Curator => parse_curator(data),
        ZkFormat::Serverset => parse_serverset(data, endpoint_name),
        ZkFormat::HostPort => parse_hostport(child, data),
        ZkFormat::Auto => parse_curator(data)
            .or_else(|_| parse_serverset(data, endpoint_name))
            .or_else(|_| parse_hostport(child, data))
            .map_err(|_| "parses as none of curator, serverset, hostport".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(r: Result<Option<StaticEndpoint>, String>) -> Option<String> {
        r.unwrap().map(|e| e.address)
    }

    #[test]
    fn curator() {
        let d = br#"{"name":"users","id":"1","address":"10.0.0.1","port":8080,"sslPort":null}"#;
        assert_eq!(addr(parse_curator(d)), Some("10.0.0.1:8080".into()));
        let off = br#"{"address":"10.0.0.1","port":8080,"enabled":false}"#;
        assert_eq!(addr(parse_curator(off)), None);
        assert!(parse_curator(b"10.0.0.1:80").is_err());
    }

    #[test]
    fn serverset() {
        let d = br#"{"serviceEndpoint":{"host":"h1","port":1},"additionalEndpoints":{"http":{"host":"h1","port":2}},"status":"ALIVE"}"#;
        assert_eq!(addr(parse_serverset(d, None)), Some("h1:1".into()));
        assert_eq!(addr(parse_serverset(d, Some("http"))), Some("h1:2".into()));
        assert!(parse_serverset(d, Some("admin")).is_err());
        let dead = br#"{"serviceEndpoint":{"host":"h1","port":1},"status":"STOPPING"}"#;
        assert_eq!(addr(parse_serverset(dead, None)), None);
    }

    #[test]
    fn member_json_edge_cases() {
        let err = |r: Result<Option<StaticEndpoint>, String>| r.unwrap_err();
        // A value of another type is as good as missing; `status` then defaults to ALIVE.
        assert_eq!(err(parse_curator(br#"{"address":"a","port":"80"}"#)), "no numeric `port`");
        assert_eq!(err(parse_curator(br#"{"address":null,"port":80}"#)), "no string `address`");
        assert_eq!(err(parse_curator(br#"{"address":"a","port":80.0}"#)), "no numeric `port`");
        assert_eq!(err(parse_curator(br#"{"address":"a","port":-1}"#)), "no numeric `port`");
        assert_eq!(err(parse_curator(br#"{"address":"a","port":65536}"#)), "invalid port 65536");
        assert_eq!(
            addr(parse_curator(br#"{"address":"a","port":80,"enabled":"false"}"#)),
            Some("a:80".into())
        );
        let ss = br#"{"serviceEndpoint":{"host":"h","port":1},"status":1}"#;
        assert_eq!(addr(parse_serverset(ss, None)), Some("h:1".into()));
        // Present but not an endpoint is not the same as absent.
        assert_eq!(err(parse_serverset(br#"{"serviceEndpoint":null}"#, None)), "no string `host`");
        assert_eq!(err(parse_serverset(br#"{"status":"ALIVE"}"#, None)), "no `serviceEndpoint`");
        let null_http = br#"{"serviceEndpoint":null,"additionalEndpoints":{"http":null}}"#;
        assert_eq!(err(parse_serverset(null_http, Some("http"))), "no string `host`");
        let list = br#"{"serviceEndpoint":null,"additionalEndpoints":[{"host":"h","port":1}]}"#;
        assert_eq!(err(parse_serverset(list, Some("http"))), "no `additionalEndpoints.http`");
        // Arrays are not objects, at the top or inside.
        assert_eq!(err(parse_curator(br#"["a",80]"#)), "not a JSON object");
        assert_eq!(err(parse_serverset(br#"{"serviceEndpoint":["h",1]}"#, None)), "no string `host`");
        // Invalid JSON is refused wherever it is, and named as such.
        assert!(
            err(parse_curator(b"{\"address\":\"a\",\"port\":80,\"x\":\"\xff\"}")).starts_with("not JSON: ")
        );
        assert!(err(parse_curator(br#"{"address":"a","port":80,"x":1e400}"#)).starts_with("not JSON: "));
        assert!(err(parse_curator(b"[1,")).starts_with("not JSON: EOF"));
        assert_eq!(err(parse_curator(br#"{"address":"a","address":"b","port":1}"#)), "a key appears twice");
    }

    #[test]
    fn hostport_and_auto() {
        assert_eq!(addr(parse_hostport("x", b"127.0.0.1:80\n")), Some("127.0.0.1:80".into()));
        assert_eq!(addr(parse_hostport("127.0.0.1:81", b"")), Some("127.0.0.1:81".into()));
        assert_eq!(addr(parse_hostport("x", b"::1:80")), Some("[::1]:80".into()));
        assert!(parse_hostport("member_0000000001", b"").is_err());
        let cur = br#"{"address":"a","port":1}"#;
        assert_eq!(addr(parse_member(ZkFormat::Auto, None, "c", cur)), Some("a:1".into()));
        let ss = br#"{"serviceEndpoint":{"host":"b","port":2},"status":"ALIVE"}"#;
        assert_eq!(addr(parse_member(ZkFormat::Auto, None, "c", ss)), Some("b:2".into()));
        assert_eq!(addr(parse_member(ZkFormat::Auto, None, "c:3", b"")), Some("c:3".into()));
        assert!(parse_member(ZkFormat::Auto, None, "junk", b"{}").is_err());
    }
}
