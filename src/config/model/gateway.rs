//! The validated `gateway.toml`: listeners, limits, the admin API and the access log.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The validated `gateway.toml`: read once at start.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// The file this came from.
    pub path: PathBuf,
    /// `[gateway] routes_dir`, resolved against the config file's folder (unused in fleet
    /// mode).
    pub routes_dir: PathBuf,
    /// `[gateway] routes_source`: fleet mode, routes from ZooKeeper or Consul KV.
    pub routes_source: Option<super::fleet::RoutesSource>,
    /// `[gateway] routes_cache`: fleet mode, the folder the last applied set is written to.
    pub routes_cache: Option<PathBuf>,
    /// `[gateway] drain_delay`: after SIGTERM, `/ready` says 503 at once and the listeners keep
    /// accepting and serving for this long (so that load balancers see it and stop sending),
    /// before the drain proper. Zero (the default) = drain at once.
    pub drain_delay: Duration,
    /// `[gateway] drain_timeout`: once the listeners stop accepting, in-flight requests get
    /// this long.
    pub drain_timeout: Duration,
    /// `[admin] listen`; `None` = no admin API.
    pub admin: Option<SocketAddr>,
    /// `[admin] token_env`: the token read from that variable at load; `None` = the admin API
    /// asks for no token (allowed only on a loopback `listen`).
    pub admin_token: Option<AdminToken>,
    /// `[[listener]]`, in file order; names are unique.
    pub listeners: Vec<ListenerConfig>,
    /// `[http]`.
    pub http: HttpConfig,
    /// `[limits]`.
    pub limits: Limits,
    /// `[access_log]`.
    pub access_log: AccessLogConfig,
}

impl GatewayConfig {
    /// The folder relative paths resolve against: the one holding `gateway.toml`.
    pub fn base_dir(&self) -> &Path {
        self.path.parent().unwrap_or_else(|| Path::new(""))
    }
}

/// `[http]`: how requests are put in canonical form before routing (`server::canonical`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpConfig {
    /// Decode `%`-escaped unreserved characters, upper-case other escapes, remove dot-segments.
    pub normalize_path: bool,
    /// Runs of `/` become one.
    pub merge_slashes: bool,
    /// What `%2F` and `%5C` in a path do.
    pub escaped_slashes: EscapedSlashes,
}

impl Default for HttpConfig {
    /// Envoy's and HAProxy's safe choices: normalise, merge, and refuse encoded slashes (an
    /// upstream that decodes them would see a different path than the one routed).
    fn default() -> Self {
        HttpConfig { normalize_path: true, merge_slashes: true, escaped_slashes: EscapedSlashes::Reject }
    }
}

/// `[http] escaped_slashes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EscapedSlashes {
    /// 400 `bad_request`.
    Reject,
    /// Left encoded: routes see `%2F`, and so does the upstream.
    Keep,
    /// Decoded before the other steps (`%5C` then counts as a raw `\`, which is refused).
    Decode,
}

/// The admin API's bearer token.
///
/// The value itself is not kept: only an HMAC-SHA256 tag of it under a key drawn at load, so
/// it cannot leak through `Debug`, a log line or a core dump, and [`AdminToken::matches`]
/// compares two fixed-size tags in constant time. A token presented with another length costs
/// the same comparison, so neither the token's bytes nor its length show in response times.
#[derive(Clone)]
pub struct AdminToken {
    key: ring::hmac::Key,
    tag: ring::hmac::Tag,
}

impl AdminToken {
    /// A token whose value is `value`; fails only if the system's random source does.
    pub(crate) fn new(value: &[u8]) -> Result<Self, String> {
        let rng = ring::rand::SystemRandom::new();
        let key = ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng)
            .map_err(|_| "cannot draw a random key to protect the admin token".to_owned())?;
        let tag = ring::hmac::sign(&key, value);
        Ok(AdminToken { key, tag })
    }

    /// Whether `presented` is the token (constant time in the token's bytes and length).
    pub fn matches(&self, presented: &[u8]) -> bool {
        ring::hmac::verify(&self.key, presented, self.tag.as_ref()).is_ok()
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// One `[[listener]]`.
#[derive(Clone, Debug, PartialEq)]
pub struct ListenerConfig {
    /// Unique name, used in metrics and the access log.
    pub name: String,
    /// Address to bind.
    pub listen: SocketAddr,
    /// `[listener.tls]`; `None` = plain HTTP/1.1 + h2c.
    pub tls: Option<ListenerTls>,
}

/// `[listener.tls]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerTls {
    /// Folder of `NAME.crt`/`NAME.key` or `NAME.pem`, resolved against the config's folder.
    pub certs_dir: PathBuf,
    /// A file stem in `certs_dir`, served when SNI matches nothing.
    pub default_cert: Option<String>,
    /// CA bundle for client certificates (mTLS), resolved against the config's folder.
    pub client_ca: Option<PathBuf>,
    /// Also serve HTTP/3 over QUIC on the same port number over UDP.
    pub http3: bool,
}

/// `[limits]`, applied per listener connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Full request headers must arrive within this (also for each keep-alive request).
    pub header_read_timeout: Duration,
    /// A keep-alive connection with no request in flight is closed after this.
    pub idle_timeout: Duration,
    /// Longest wait between two reads of a request body: then 408, or a reset once the
    /// response started.
    pub body_read_timeout: Duration,
    /// Longest wait for a client that stopped reading to accept more response bytes: then the
    /// connection is closed.
    pub send_timeout: Duration,
    /// An upgraded (WebSocket) connection with no bytes either way is closed after this.
    pub tunnel_idle_timeout: Duration,
    /// Request header bytes beyond this get 431.
    pub max_request_header_bytes: u64,
    /// 0 = unlimited; beyond: 413. A route can set its own.
    pub max_request_body_bytes: u64,
    /// Open connections per listener; more wait in the accept backlog.
    pub max_connections: usize,
    /// HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS`.
    pub http2_max_concurrent_streams: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            // NGINX's client_body_timeout and send_timeout.
            body_read_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            // Long enough for a quiet WebSocket with the usual 30-60 s pings, short enough
            // that abandoned tunnels do not pile up (Envoy's stream idle default is 5 min).
            tunnel_idle_timeout: Duration::from_secs(15 * 60),
            max_request_header_bytes: 64 * 1024,
            max_request_body_bytes: 0,
            max_connections: 10_000,
            http2_max_concurrent_streams: 256,
        }
    }
}

/// `[access_log]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessLogConfig {
    /// Whether to write one.
    pub enabled: bool,
    /// `None` = stdout; else the file (appended; reopened on SIGUSR1).
    pub path: Option<PathBuf>,
}

impl Default for AccessLogConfig {
    fn default() -> Self {
        AccessLogConfig { enabled: true, path: None }
    }
}
