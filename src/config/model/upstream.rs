//! One validated `[[upstream]]`: how endpoints are picked, spoken to, probed and limited.

use std::path::PathBuf;
use std::time::Duration;

use http::HeaderName;

use super::discovery::DiscoveryConfig;

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

impl UpstreamConfig {
    /// `connect_timeout` when the file does not set it.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
    /// `read_timeout` when the file does not set it.
    pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(60);

    /// An upstream as a route file that names only it and its endpoints gives it: every other
    /// key at its default (`round_robin`, HTTP/1, the timeouts above, no TLS, no health checks
    /// or outlier detection, the default limits).
    pub fn new(name: impl Into<String>, discovery: DiscoveryConfig) -> Self {
        UpstreamConfig {
            name: name.into(),
            discovery,
            balance: Balance::RoundRobin,
            hash_on: None,
            protocol: UpstreamProtocol::Http1,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            read_timeout: Self::DEFAULT_READ_TIMEOUT,
            panic_threshold: 0,
            tls: None,
            health: None,
            outlier: None,
            limits: UpstreamLimits::default(),
        }
    }
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
