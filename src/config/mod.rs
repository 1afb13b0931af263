//! Configuration: the files users write, and the validated runtime model built from them.
//!
//! `file` holds serde structs that mirror the TOML (with spans, so that every error can point
//! at a line and column); `validate` turns them into the plain types below, which carry parsed
//! durations, addresses and compiled regexes. Nothing outside this module sees the file format.
//! `watch` turns file-system events under `routes_dir` into reload requests.

mod file;
mod validate;
pub mod watch;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, StatusCode};
use regex::Regex;

pub use validate::{load_gateway, load_routes, load_routes_from_sources, parse_duration, parse_size};

// === errors ===

/// One problem in one file, located by line and column (both 1-based).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, as the user named it (relative paths resolved against `gateway.toml`'s folder).
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
    /// What is wrong, and where possible what to do about it.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file.display(), self.line, self.column, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in a config load; never empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

// === gateway.toml ===

/// The validated `gateway.toml`: read once at start.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// The file this came from.
    pub path: PathBuf,
    /// `[gateway] routes_dir`, resolved against the config file's folder.
    pub routes_dir: PathBuf,
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

impl GatewayConfig {
    /// The folder relative paths resolve against: the one holding `gateway.toml`.
    pub fn base_dir(&self) -> &Path {
        self.path.parent().unwrap_or_else(|| Path::new(""))
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

// === routes/*.toml ===

/// The validated union of every file in `routes_dir`.
#[derive(Clone, Debug)]
pub struct RouteSet {
    /// The files read, in load (file-name) order.
    pub files: Vec<PathBuf>,
    /// Every `[[upstream]]`, in load order; names unique.
    pub upstreams: Vec<UpstreamConfig>,
    /// Every `[[route]]`, in load order (the tie-breaker of route precedence); names unique, and
    /// every upstream a route names exists in `upstreams`.
    pub routes: Vec<RouteConfig>,
}

/// One `[[upstream]]`. Equality decides whether a reload keeps the running upstream's state.
#[derive(Clone, Debug, PartialEq)]
pub struct UpstreamConfig {
    /// Unique name.
    pub name: String,
    /// Where the endpoints come from.
    pub discovery: DiscoveryConfig,
    /// `balance`.
    pub balance: Balance,
    /// `hash_on`, for `ring_hash` and `maglev`.
    pub hash_on: Option<HashOn>,
    /// `protocol` to the upstream.
    pub protocol: UpstreamProtocol,
    /// `connect_timeout` (default 1 s): TCP connect and the TLS handshake.
    pub connect_timeout: Duration,
    /// `read_timeout` (default 60 s, NGINX's `proxy_read_timeout`): the longest wait between
    /// two reads of the upstream's response, or for its head once the request was sent.
    pub read_timeout: Duration,
    /// `panic_threshold` in percent; 0 = off.
    pub panic_threshold: u8,
    /// `[upstream.tls]`.
    pub tls: Option<UpstreamTls>,
    /// `[upstream.health]`.
    pub health: Option<HealthCheck>,
    /// `[upstream.outlier]`.
    pub outlier: Option<Outlier>,
    /// `[upstream.limits]` (always present: Envoy's defaults).
    pub limits: UpstreamLimits,
}

/// A static endpoint: `host:port` plus weight.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StaticEndpoint {
    /// `host:port` (an IP literal or a name resolved when connecting).
    pub address: String,
    /// Relative weight, at least 1.
    pub weight: u32,
}

/// `endpoints = [...]` or `discovery = {...}`.
#[derive(Clone, Debug, PartialEq)]
pub enum DiscoveryConfig {
    /// `endpoints = [...]`.
    Static(Vec<StaticEndpoint>),
    /// `discovery = { type = "dns", ... }`.
    Dns {
        /// Name to resolve.
        name: String,
        /// Port for `record = "a"`.
        port: u16,
        /// A/AAAA or SRV.
        record: DnsRecord,
        /// Upper bound on the re-resolution interval (default 30 s).
        refresh: Duration,
        /// Resolver override.
        resolver: Option<SocketAddr>,
    },
    /// `discovery = { type = "zookeeper", ... }`.
    ZooKeeper {
        /// Connect string.
        servers: String,
        /// Parent node whose children are the members.
        path: String,
        /// Member data format.
        format: ZkFormat,
        /// Serverset `additionalEndpoints` key.
        endpoint_name: Option<String>,
        /// Session timeout (default 10 s).
        session_timeout: Duration,
    },
    /// `discovery = { type = "consul", ... }`.
    Consul {
        /// Agent address, e.g. `http://127.0.0.1:8500` or `https://consul.internal:8501`.
        address: ConsulAddress,
        /// Service name.
        service: String,
        /// `tag` filter.
        tag: Option<String>,
        /// `dc`.
        datacenter: Option<String>,
        /// `passing` (default true).
        passing_only: bool,
        /// Name of the env var holding the ACL token.
        token_env: Option<String>,
        /// Blocking-query `wait` (default 5 m).
        wait: Duration,
        /// `tls_ca`: the PEM bundle that verifies an `https://` agent; default the webpki
        /// roots. Only with an `https://` address.
        tls_ca: Option<PathBuf>,
        /// `tls_insecure_skip_verify` (warned at load). Only with an `https://` address.
        tls_insecure_skip_verify: bool,
    },
}

impl DiscoveryConfig {
    /// The `type` shown in `/upstreams` and metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            DiscoveryConfig::Static(_) => "static",
            DiscoveryConfig::Dns { .. } => "dns",
            DiscoveryConfig::ZooKeeper { .. } => "zookeeper",
            DiscoveryConfig::Consul { .. } => "consul",
        }
    }
}

/// A Consul agent's address: `http://` or `https://`, a host and a port, and nothing else
/// (no path, query or user info). Only [`ConsulAddress::parse`] makes one, and validation calls
/// it, so `switchyard check` and the running gateway accept exactly the same addresses.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConsulAddress {
    https: bool,
    /// As written: a name, an IPv4 address, or an IPv6 address in brackets.
    host: String,
    port: u16,
}

impl ConsulAddress {
    /// Whether the agent is spoken to over TLS.
    pub fn is_https(&self) -> bool {
        self.https
    }
}

impl fmt::Display for ConsulAddress {
    /// `scheme://host:port`, the prefix of every request URL.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        write!(f, "{scheme}://{}:{}", self.host, self.port)
    }
}

/// DNS record kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DnsRecord {
    /// A + AAAA.
    A,
    /// SRV.
    Srv,
}

/// ZooKeeper member format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZkFormat {
    /// Try curator, serverset, hostport per node.
    Auto,
    /// Curator x-discovery JSON.
    Curator,
    /// Finagle serverset JSON.
    Serverset,
    /// `host:port` in data or child name.
    HostPort,
}

/// `balance`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Balance {
    /// Smooth weighted round robin (NGINX).
    RoundRobin,
    /// P2C on in-flight requests.
    LeastRequest,
    /// P2C on peak EWMA latency.
    P2cEwma,
    /// Weighted random.
    Random,
    /// Consistent-hash ring.
    RingHash,
    /// Maglev table.
    Maglev,
}

impl Balance {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Balance::RoundRobin => "round_robin",
            Balance::LeastRequest => "least_request",
            Balance::P2cEwma => "p2c_ewma",
            Balance::Random => "random",
            Balance::RingHash => "ring_hash",
            Balance::Maglev => "maglev",
        }
    }
}

/// `hash_on`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HashOn {
    /// The client IP.
    ClientIp,
    /// A request header.
    Header(HeaderName),
    /// A cookie.
    Cookie(String),
    /// The request path.
    Path,
}

/// `protocol` to the upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2 over TLS (ALPN h2).
    H2,
    /// HTTP/2 with prior knowledge, cleartext.
    H2c,
}

/// `[upstream.tls]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamTls {
    /// SNI to send; default the endpoint's host.
    pub sni: Option<String>,
    /// CA bundle; default webpki roots.
    pub ca: Option<PathBuf>,
    /// Skip verification (warned at load).
    pub insecure_skip_verify: bool,
}

/// `[upstream.health]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    /// http or tcp.
    pub kind: HealthKind,
    /// Probe path (http).
    pub path: String,
    /// Host header (http).
    pub host: Option<String>,
    /// Inclusive status range counted as success.
    pub expected_status: (u16, u16),
    /// Interval between probes.
    pub interval: Duration,
    /// Probe timeout.
    pub timeout: Duration,
    /// Successes to become healthy.
    pub healthy_threshold: u32,
    /// Failures to become unhealthy.
    pub unhealthy_threshold: u32,
}

/// Probe kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthKind {
    /// HTTP GET.
    Http,
    /// TCP connect.
    Tcp,
}

/// `[upstream.outlier]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outlier {
    /// Failures in a row that eject.
    pub consecutive_failures: u32,
    /// Base ejection time.
    pub ejection_time: Duration,
    /// Max share of endpoints ejected, percent.
    pub max_ejection_percent: u8,
}

/// `[upstream.limits]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamLimits {
    /// Open connections across the upstream.
    pub max_connections: u32,
    /// Requests waiting for a connection.
    pub max_pending_requests: u32,
    /// Requests in flight.
    pub max_requests: u32,
    /// Retries in flight.
    pub max_retries: u32,
}

impl Default for UpstreamLimits {
    fn default() -> Self {
        // Envoy's circuit-breaker defaults.
        UpstreamLimits {
            max_connections: 1024,
            max_pending_requests: 1024,
            max_requests: 1024,
            max_retries: 3,
        }
    }
}

/// Where in the files a route was defined, for messages and `/routes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// File.
    pub file: PathBuf,
    /// 1-based line of the route's `name`.
    pub line: usize,
}

/// One `[[route]]`.
#[derive(Clone, Debug)]
pub struct RouteConfig {
    /// Unique name.
    pub name: String,
    /// Where it was written.
    pub origin: Origin,
    /// `hosts`; empty = any host.
    pub hosts: Vec<HostMatch>,
    /// Path matcher; `Prefix("/")` when absent.
    pub path: PathMatch,
    /// `methods`; empty = any.
    pub methods: Vec<Method>,
    /// `headers`, each must match.
    pub headers: Vec<(HeaderName, ValueMatch)>,
    /// `query`, each must match.
    pub query: Vec<(String, ValueMatch)>,
    /// What to do with a match.
    pub action: Action,
    /// Remove the matched prefix before forwarding.
    pub strip_prefix: bool,
    /// Replace the stripped prefix with this (implies stripping).
    pub rewrite_prefix: Option<String>,
    /// Host header to send upstream instead of the client's.
    pub host_rewrite: Option<HeaderValue>,
    /// Request header edits.
    pub request_headers: HeaderEdits,
    /// Response header edits.
    pub response_headers: HeaderEdits,
    /// Whole-request timeout (retries included).
    pub timeout: Option<Duration>,
    /// Overrides `[limits] max_request_body_bytes`; `Some(0)` = unlimited.
    pub max_request_body_bytes: Option<u64>,
    /// `[route.retry]`, or the default policy (one retry on connect-failure).
    pub retry: RetryPolicy,
    /// `rate_limit`.
    pub rate_limit: Option<RateLimit>,
}

/// A `hosts` entry, lower-cased, without port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostMatch {
    /// `api.example.com`.
    Exact(String),
    /// `*.example.com` stored as the suffix `example.com` (matches one or more labels in front).
    Wildcard(String),
}

/// The path matcher.
#[derive(Clone, Debug)]
pub enum PathMatch {
    /// `path`: the whole path, exactly.
    Exact(String),
    /// `path_prefix`: segment-aware; stored without a trailing slash except for `/`.
    Prefix(String),
    /// `path_regex`, anchored at both ends when compiled.
    Regex(Regex),
}

/// A header or query matcher value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ValueMatch {
    /// `"*"`: present with any value.
    Present,
    /// Exact value.
    Exact(String),
}

/// A route's action.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Forward to one upstream.
    Upstream(String),
    /// Forward to one of several upstreams, by weight.
    Split(Vec<(String, u32)>),
    /// Answer directly.
    Respond {
        /// Status.
        status: StatusCode,
        /// Body.
        body: String,
        /// Headers.
        headers: Vec<(HeaderName, HeaderValue)>,
    },
    /// Redirect; `to` may contain `{host}`, `{path}`, `{query}`.
    Redirect {
        /// Template.
        to: String,
        /// Status (default 302).
        status: StatusCode,
    },
}

/// `request_headers` / `response_headers`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HeaderEdits {
    /// Set (replace) these.
    pub set: Vec<(HeaderName, HeaderValue)>,
    /// Remove these.
    pub remove: Vec<HeaderName>,
}

impl HeaderEdits {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty()
    }
}

/// `[route.retry]`.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first try.
    pub attempts: u32,
    /// Conditions that allow a retry.
    pub on: Vec<RetryOn>,
    /// Per-attempt timeout.
    pub per_try_timeout: Option<Duration>,
    /// Base of full-jitter exponential backoff.
    pub backoff: Duration,
    /// Retry budget ratio.
    pub budget: f64,
    /// Largest request body kept for replay.
    pub max_replay_body_bytes: u64,
}

impl Default for RetryPolicy {
    /// Without a `[route.retry]` table, one retry on connect-failure only.
    fn default() -> Self {
        RetryPolicy {
            attempts: 1,
            on: vec![RetryOn::ConnectFailure],
            per_try_timeout: None,
            backoff: Duration::from_millis(25),
            budget: 0.2,
            max_replay_body_bytes: 64 * 1024,
        }
    }
}

/// A retry condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryOn {
    /// The request never reached an upstream.
    ConnectFailure,
    /// The upstream closed/reset before a full response head.
    Reset,
    /// Any 5xx.
    Status5xx,
    /// 502, 503, 504.
    GatewayError,
    /// One status.
    Status(u16),
    /// A per-try timeout fired.
    Timeout,
}

impl RetryOn {
    /// The config / metric-label spelling.
    pub fn label(&self) -> String {
        match self {
            RetryOn::ConnectFailure => "connect-failure".into(),
            RetryOn::Reset => "reset".into(),
            RetryOn::Status5xx => "5xx".into(),
            RetryOn::GatewayError => "gateway-error".into(),
            RetryOn::Status(s) => format!("status:{s}"),
            RetryOn::Timeout => "timeout".into(),
        }
    }
}

/// `rate_limit`.
#[derive(Clone, Debug, PartialEq)]
pub struct RateLimit {
    /// Refill rate.
    pub requests_per_second: f64,
    /// Bucket size.
    pub burst: u32,
    /// What a bucket is per.
    pub key: RateLimitKey,
}

/// `rate_limit.key`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RateLimitKey {
    /// One bucket per client IP.
    ClientIp,
    /// One bucket per value of a header.
    Header(HeaderName),
    /// One bucket for the route.
    Global,
}

/// Resolve `p` against `base` (the folder of `gateway.toml`) unless it is absolute.
pub fn resolve_path(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}
