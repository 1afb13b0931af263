//! The validated route files: every `[[route]]` with its matchers, action and policies.

use std::path::PathBuf;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, StatusCode};
use regex::Regex;

use super::upstream::UpstreamConfig;

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
