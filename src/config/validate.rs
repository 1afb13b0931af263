//! Turns the file structs (`file.rs`) into the runtime model (`mod.rs`), collecting every error
//! with its file, line and column.
//!
//! Validation never stops at the first problem: each file is checked on its own (a file with a
//! TOML syntax error, or a value of the wrong type, contributes that one error — serde stops
//! there), then the cross-file rules run (unique upstream and route names, every upstream a
//! route names exists). Errors come back sorted by file (load order), line and column, the way
//! rustc lists them. Positions come from the TOML parser's spans (`toml::de::Error::span`, or
//! the [`Spanned`] wrapper around each value), turned into 1-based line and column (counted in
//! characters) by a per-file table of line starts.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, StatusCode};
use regex::Regex;
use toml::Spanned;

use super::file::{
    AdminSection, DiscoverySection, EndpointEntry, GatewayFile, HeaderEditsSection, HealthSection,
    OutlierSection, Pairs, RouteSection, RoutesFile, Scalar, UpstreamLimitsSection, UpstreamSection,
    UpstreamTlsSection,
};
use super::{
    resolve_path, AccessLogConfig, Action, AdminToken, Balance, ConfigError, ConfigErrors, ConsulAddress,
    DiscoveryConfig, DnsRecord, EscapedSlashes, GatewayConfig, HashOn, HeaderEdits, HealthCheck, HealthKind,
    HostMatch, HttpConfig, Limits, ListenerConfig, ListenerTls, Origin, Outlier, PathMatch, RateLimit,
    RateLimitKey, RetryOn, RetryPolicy, RouteConfig, RouteSet, StaticEndpoint, UpstreamConfig,
    UpstreamLimits, UpstreamProtocol, UpstreamTls, ValueMatch, ZkFormat,
};

/// How many defined upstream names a "not defined" message lists before it only suggests the
/// closest one: a short list helps, a long one buries the error.
const MAX_LISTED_NAMES: usize = 8;

/// A route's `timeout` when it sets none: NGINX's `proxy_read_timeout`, so that an upstream
/// that accepts and never answers cannot hold a request (and its slots) for ever.
const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(60);

// === public API ===

/// Load and validate `gateway.toml` at `path`.
///
/// Relative paths in it (`routes_dir`, `certs_dir`, `client_ca`, the access log) resolve against
/// the folder holding `path`.
pub fn load_gateway(path: &Path) -> Result<GatewayConfig, ConfigErrors> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors(vec![io_error(path, "cannot read the config file", &e)]))?;
    let src = Source::new(path, &text);
    let mut cx = Ctx::new(&src);
    let file: GatewayFile = match toml::from_str(&text) {
        Ok(f) => f,
        Err(e) => {
            cx.toml_error(&e);
            return Err(ConfigErrors(cx.errors));
        }
    };
    let base = path.parent().unwrap_or_else(|| Path::new(""));
    match cx.gateway(file, base, path) {
        Some(g) if cx.errors.is_empty() => Ok(g),
        _ => {
            cx.errors.sort_by_key(|e| (e.line, e.column));
            Err(ConfigErrors(cx.errors))
        }
    }
}

/// Load and validate every `*.toml` in `dir` (not recursive), in file-name order.
///
/// `dir` is used as given (the caller resolves it against `gateway.toml`'s folder), so error
/// paths read `dir/FILE.toml`. A file that cannot be read is an error at its line 1, column 1;
/// the others are still checked.
///
/// `base` is the folder relative paths in route files (an `[upstream.tls] ca`) resolve
/// against: the folder of `gateway.toml`, as for every other relative path.
pub fn load_routes(dir: &Path, base: &Path) -> Result<RouteSet, ConfigErrors> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| ConfigErrors(vec![io_error(dir, "cannot read the routes directory", &e)]))?;
    let mut paths = Vec::new();
    for entry in entries {
        let entry =
            entry.map_err(|e| ConfigErrors(vec![io_error(dir, "cannot read the routes directory", &e)]))?;
        let path = entry.path();
        let is_toml = path.extension().is_some_and(|x| x == "toml");
        // `metadata` follows symlinks, so a linked file counts and a linked folder does not.
        if is_toml && std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            paths.push(path);
        }
    }
    paths.sort_by(|a, b| a.file_name().cmp(&b.file_name()));

    let mut sources = Vec::with_capacity(paths.len());
    let mut read_errors = Vec::new();
    for path in paths {
        match std::fs::read_to_string(&path) {
            Ok(text) => sources.push((path, text)),
            Err(e) => read_errors.push(io_error(&path, "cannot read the route file", &e)),
        }
    }
    validate_routes(sources, read_errors, Some(base))
}

/// Validate route files already in memory, as `(path, contents)` in load order.
///
/// This is [`load_routes`] without the file system (benches, tests and fuzzing use it). With
/// no `gateway.toml` to go by, a relative `ca` in `[upstream.tls]` resolves against the folder
/// of the route file that names it.
pub fn load_routes_from_sources(files: Vec<(PathBuf, String)>) -> Result<RouteSet, ConfigErrors> {
    validate_routes(files, Vec::new(), None)
}

/// Parse a duration: a whole number and a unit, optionally repeated (`"250ms"`, `"5s"`, `"1m"`,
/// `"1h"`, `"1m30s"`). Units: `ns`, `us`, `ms`, `s`, `m`, `h`, `d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err(format!("invalid duration {s:?}: write a number with a unit, e.g. \"5s\""));
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("invalid duration {s:?}: add a unit, e.g. \"{t}s\""));
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!("invalid duration {s:?}: expected a number followed by a unit, e.g. \"5s\""));
        }
        let (num, tail) = rest.split_at(digits);
        if tail.starts_with('.') {
            return Err(format!(
                "invalid duration {s:?}: use a whole number with a smaller unit, e.g. \"1500ms\" \
                 instead of \"1.5s\""
            ));
        }
        let unit_len = tail.find(|c: char| c.is_ascii_digit()).unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        let n: u64 = num.parse().map_err(|_| format!("invalid duration {s:?}: number too large"))?;
        let part = match unit.trim() {
            "ns" => Some(Duration::from_nanos(n)),
            "us" | "µs" => Some(Duration::from_micros(n)),
            "ms" => Some(Duration::from_millis(n)),
            "s" => Some(Duration::from_secs(n)),
            "m" => n.checked_mul(60).map(Duration::from_secs),
            "h" => n.checked_mul(3600).map(Duration::from_secs),
            "d" => n.checked_mul(86_400).map(Duration::from_secs),
            "" => return Err(format!("invalid duration {s:?}: every number needs a unit, e.g. \"1m30s\"")),
            other => {
                return Err(format!("invalid duration {s:?}: unknown unit {other:?}; use ms, s, m or h"))
            }
        };
        total = part
            .and_then(|p| total.checked_add(p))
            .ok_or_else(|| format!("invalid duration {s:?}: too large"))?;
        rest = next;
    }
    Ok(total)
}

/// Parse a size: a number of bytes, optionally with a unit: `B`, binary `KiB` `MiB` `GiB`
/// `TiB`, or decimal `KB` `MB` `GB` `TB` (`"64KiB"`, `"10MiB"`, `"512B"`, `"1KB"` = 1000).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(format!(
            "invalid size {s:?}: expected a number of bytes, optionally with a unit, e.g. \"64KiB\""
        ));
    }
    let (num, unit) = t.split_at(digits);
    if unit.starts_with('.') {
        return Err(format!(
            "invalid size {s:?}: use a whole number with a smaller unit, e.g. \"1536KiB\" \
             instead of \"1.5MiB\""
        ));
    }
    let mult: u64 = match unit.trim_start() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        other => {
            return Err(format!(
                "invalid size {s:?}: unknown unit {other:?}; use B, KiB, MiB, GiB (or KB, MB, GB \
                 for powers of 1000)"
            ))
        }
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("invalid size {s:?}: too large"))
}

// === locating errors ===

/// One file's text with a table of line starts, to turn byte offsets into line and column.
#[derive(Debug)]
struct Source<'a> {
    path: &'a Path,
    text: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> Source<'a> {
    fn new(path: &'a Path, text: &'a str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Source { path, text, line_starts }
    }

    /// 1-based (line, column); the column counts characters, not bytes.
    fn locate(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = match self.line_starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i - 1,
        };
        let column = self.text[self.line_starts[line]..offset].chars().count() + 1;
        (line + 1, column)
    }

    fn error(&self, span: Range<usize>, message: String) -> ConfigError {
        let (line, column) = self.locate(span.start);
        ConfigError { file: self.path.to_path_buf(), line, column, message }
    }
}

/// An error that has no position inside a file (it could not be read).
fn io_error(path: &Path, what: &str, e: &std::io::Error) -> ConfigError {
    ConfigError { file: path.to_path_buf(), line: 1, column: 1, message: format!("{what}: {e}") }
}

/// The checks of one file, and the errors they found.
#[derive(Debug)]
struct Ctx<'s, 'a> {
    src: &'s Source<'a>,
    errors: Vec<ConfigError>,
}

impl<'s, 'a> Ctx<'s, 'a> {
    fn new(src: &'s Source<'a>) -> Self {
        Ctx { src, errors: Vec::new() }
    }

    fn err(&mut self, span: Range<usize>, message: impl Into<String>) {
        let e = self.src.error(span, message.into());
        self.errors.push(e);
    }

    /// A parse or type error from the toml crate, as one line.
    fn toml_error(&mut self, e: &toml::de::Error) {
        let message =
            e.message().lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ");
        self.err(e.span().unwrap_or(0..0), message);
    }

    // --- scalars ---

    fn duration(&mut self, v: &Spanned<Scalar>) -> Option<Duration> {
        let r = match v.get_ref() {
            Scalar::Str(s) => parse_duration(s),
            Scalar::Int(i) => Err(format!("invalid duration \"{i}\": add a unit, e.g. \"{i}s\"")),
            Scalar::Float(x) => Err(format!(
                "invalid duration {x}: write a string with a unit, e.g. \"{}ms\"",
                (x * 1000.0).round()
            )),
        };
        r.map_err(|m| self.err(v.span(), m)).ok()
    }

    /// An optional duration with a default; `key` must not be zero.
    fn duration_or(&mut self, v: Option<&Spanned<Scalar>>, key: &str, default: Duration) -> Duration {
        match v {
            None => default,
            Some(v) => match self.duration(v) {
                Some(d) if d.is_zero() => {
                    self.err(v.span(), format!("`{key}` must be greater than zero"));
                    default
                }
                Some(d) => d,
                None => default,
            },
        }
    }

    fn size(&mut self, v: &Spanned<Scalar>) -> Option<u64> {
        let r = match v.get_ref() {
            Scalar::Str(s) => parse_size(s),
            Scalar::Int(i) => {
                u64::try_from(*i).map_err(|_| format!("invalid size {i}: a size cannot be negative"))
            }
            Scalar::Float(x) => {
                Err(format!("invalid size {x}: write whole bytes, or a string with a unit, e.g. \"64KiB\""))
            }
        };
        r.map_err(|m| self.err(v.span(), m)).ok()
    }

    /// An integer in `lo..=hi`.
    fn int(&mut self, v: &Spanned<i64>, key: &str, lo: i64, hi: i64) -> Option<i64> {
        let n = *v.get_ref();
        if (lo..=hi).contains(&n) {
            return Some(n);
        }
        let msg = if hi == i64::from(u32::MAX) || hi == i64::MAX {
            format!("`{key}` must be at least {lo}, got {n}")
        } else {
            format!("`{key}` must be between {lo} and {hi}, got {n}")
        };
        self.err(v.span(), msg);
        None
    }

    fn u32_or(&mut self, v: Option<&Spanned<i64>>, key: &str, lo: u32, default: u32) -> u32 {
        v.and_then(|v| self.int(v, key, i64::from(lo), i64::from(u32::MAX))).map_or(default, |n| n as u32)
    }

    fn percent_or(&mut self, v: Option<&Spanned<i64>>, key: &str, default: u8) -> u8 {
        v.and_then(|v| self.int(v, key, 0, 100)).map_or(default, |n| n as u8)
    }

    /// A socket address `IP:port` (names are not resolved at load).
    fn socket_addr(&mut self, v: &Spanned<String>, key: &str) -> Option<SocketAddr> {
        match v.get_ref().parse() {
            Ok(a) => Some(a),
            Err(_) => {
                self.err(
                    v.span(),
                    format!(
                        "invalid `{key}` address {:?}: expected IP:port, e.g. \"127.0.0.1:8080\" \
                         or \"[::1]:8080\"",
                        v.get_ref()
                    ),
                );
                None
            }
        }
    }

    /// One of `choices` (config spelling → value).
    fn choice<T: Copy>(&mut self, v: &Spanned<String>, key: &str, choices: &[(&str, T)]) -> Option<T> {
        if let Some((_, t)) = choices.iter().find(|(s, _)| *s == v.get_ref()) {
            return Some(*t);
        }
        let names: Vec<&str> = choices.iter().map(|(s, _)| *s).collect();
        self.err(
            v.span(),
            format!("unknown `{key}` {:?}; expected one of: {}", v.get_ref(), names.join(", ")),
        );
        None
    }

    fn non_empty(&mut self, v: &Spanned<String>, key: &str) -> Option<String> {
        if v.get_ref().trim().is_empty() {
            self.err(v.span(), format!("`{key}` must not be empty"));
            None
        } else {
            Some(v.get_ref().clone())
        }
    }

    fn header_name(&mut self, v: &Spanned<String>) -> Option<HeaderName> {
        let lower = v.get_ref().to_ascii_lowercase();
        match HeaderName::from_bytes(lower.as_bytes()) {
            Ok(h) => Some(h),
            Err(_) => {
                self.err(
                    v.span(),
                    format!(
                        "invalid header name {:?}: use letters, digits and `-`, e.g. \"x-request-id\"",
                        v.get_ref()
                    ),
                );
                None
            }
        }
    }

    fn header_value(&mut self, v: &Spanned<String>, name: &str) -> Option<HeaderValue> {
        match HeaderValue::from_str(v.get_ref()) {
            Ok(h) => Some(h),
            Err(_) => {
                self.err(
                    v.span(),
                    format!(
                        "invalid value {:?} for header {name:?}: only visible ASCII, spaces and \
                         tabs are allowed",
                        v.get_ref()
                    ),
                );
                None
            }
        }
    }

    fn status(&mut self, v: &Spanned<i64>) -> Option<StatusCode> {
        let n = *v.get_ref();
        match u16::try_from(n).ok().and_then(|n| StatusCode::from_u16(n).ok()) {
            Some(s) if (100..=599).contains(&n) => Some(s),
            _ => {
                self.err(v.span(), format!("invalid status {n}: expected 100 to 599"));
                None
            }
        }
    }

    // === impl gateway.toml ===

    fn gateway(&mut self, f: GatewayFile, base: &Path, path: &Path) -> Option<GatewayConfig> {
        let mut routes_dir = base.join("routes");
        let mut drain_delay = Duration::ZERO;
        let mut drain_timeout = Duration::from_secs(30);
        if let Some(g) = &f.gateway {
            if let Some(d) = &g.drain_delay {
                drain_delay = self.duration(d).unwrap_or(drain_delay);
            }
            if let Some(d) = &g.routes_dir {
                if let Some(d) = self.non_empty(d, "routes_dir") {
                    routes_dir = resolve_path(base, &d);
                }
            }
            if let Some(d) = &g.drain_timeout {
                drain_timeout = self.duration(d).unwrap_or(drain_timeout);
            }
        }

        let (admin, admin_token) = match &f.admin {
            Some(a) => self.admin(a),
            None => (None, None),
        };

        if f.listener.is_empty() {
            self.err(
                0..0,
                "no [[listener]] defined; add one, e.g. [[listener]] name = \"http\" listen = \
                 \"0.0.0.0:8080\"",
            );
        }
        let mut listeners = Vec::with_capacity(f.listener.len());
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for l in &f.listener {
            let name = self.non_empty(&l.name, "name");
            if let Some(first) = seen.get(l.name.get_ref().as_str()) {
                let first_line = self.src.locate(*first).0;
                self.err(
                    l.name.span(),
                    format!(
                        "duplicate listener name {:?} (first defined at line {first_line}); \
                         listener names must be unique",
                        l.name.get_ref()
                    ),
                );
            } else {
                seen.insert(l.name.get_ref(), l.name.span().start);
            }
            let listen = self.socket_addr(&l.listen, "listen");
            let tls = l.tls.as_ref().map(|t| ListenerTls {
                certs_dir: resolve_path(base, t.certs_dir.get_ref()),
                default_cert: t.default_cert.as_ref().map(|d| d.get_ref().clone()),
                client_ca: t.client_ca.as_ref().map(|c| resolve_path(base, c.get_ref())),
            });
            if let Some(t) = &l.tls {
                self.non_empty(&t.certs_dir, "certs_dir");
                if let Some(d) = &t.default_cert {
                    self.non_empty(d, "default_cert");
                }
                if let Some(c) = &t.client_ca {
                    self.non_empty(c, "client_ca");
                }
            }
            if let (Some(name), Some(listen)) = (name, listen) {
                listeners.push(ListenerConfig { name, listen, tls });
            }
        }

        let mut limits = Limits::default();
        if let Some(l) = &f.limits {
            let d = Limits::default();
            limits.header_read_timeout = self.duration_or(
                l.header_read_timeout.as_ref(),
                "header_read_timeout",
                d.header_read_timeout,
            );
            limits.idle_timeout = self.duration_or(l.idle_timeout.as_ref(), "idle_timeout", d.idle_timeout);
            limits.body_read_timeout =
                self.duration_or(l.body_read_timeout.as_ref(), "body_read_timeout", d.body_read_timeout);
            limits.send_timeout = self.duration_or(l.send_timeout.as_ref(), "send_timeout", d.send_timeout);
            limits.tunnel_idle_timeout = self.duration_or(
                l.tunnel_idle_timeout.as_ref(),
                "tunnel_idle_timeout",
                d.tunnel_idle_timeout,
            );
            if let Some(v) = &l.max_request_header_bytes {
                match self.size(v) {
                    Some(0) => self.err(v.span(), "`max_request_header_bytes` must be greater than zero"),
                    Some(n) => limits.max_request_header_bytes = n,
                    None => {}
                }
            }
            if let Some(v) = &l.max_request_body_bytes {
                limits.max_request_body_bytes = self.size(v).unwrap_or(0);
            }
            if let Some(v) = &l.max_connections {
                if let Some(n) = self.int(v, "max_connections", 1, i64::MAX) {
                    limits.max_connections = usize::try_from(n).unwrap_or(usize::MAX);
                }
            }
            limits.http2_max_concurrent_streams = self.u32_or(
                l.http2_max_concurrent_streams.as_ref(),
                "http2_max_concurrent_streams",
                1,
                d.http2_max_concurrent_streams,
            );
        }

        let mut http = HttpConfig::default();
        if let Some(h) = &f.http {
            http.normalize_path = h.normalize_path.unwrap_or(http.normalize_path);
            http.merge_slashes = h.merge_slashes.unwrap_or(http.merge_slashes);
            if let Some(e) = &h.escaped_slashes {
                let choices = [
                    ("reject", EscapedSlashes::Reject),
                    ("keep", EscapedSlashes::Keep),
                    ("decode", EscapedSlashes::Decode),
                ];
                http.escaped_slashes =
                    self.choice(e, "escaped_slashes", &choices).unwrap_or(http.escaped_slashes);
            }
        }

        let mut access_log = AccessLogConfig::default();
        if let Some(a) = &f.access_log {
            access_log.enabled = a.enabled.unwrap_or(true);
            if let Some(p) = &a.path {
                if let Some(p) = self.non_empty(p, "path") {
                    access_log.path = (p != "-").then(|| resolve_path(base, &p));
                }
            }
        }

        Some(GatewayConfig {
            path: path.to_path_buf(),
            routes_dir,
            drain_delay,
            drain_timeout,
            admin,
            admin_token,
            listeners,
            http,
            limits,
            access_log,
        })
    }

    /// `[admin]`: the address, and the token read from `token_env` now (at start, so that a
    /// missing variable stops the start instead of leaving the admin API locked or open).
    fn admin(&mut self, a: &AdminSection) -> (Option<SocketAddr>, Option<AdminToken>) {
        let listen = self.socket_addr(&a.listen, "listen");
        let token = match &a.token_env {
            Some(var) => {
                let name = self.non_empty(var, "token_env");
                name.and_then(|name| self.admin_token(var, &name))
            }
            None => {
                if let Some(addr) = listen.filter(|a| !a.ip().to_canonical().is_loopback()) {
                    self.err(
                        a.listen.span(),
                        format!(
                            "admin `listen` {addr} is not a loopback address: the admin API would \
                             be open to the network: set [admin] token_env or listen on 127.0.0.1"
                        ),
                    );
                }
                None
            }
        };
        (listen, token)
    }

    /// The admin token held by the environment variable `name` (`var` is its span).
    fn admin_token(&mut self, var: &Spanned<String>, name: &str) -> Option<AdminToken> {
        let problem = match std::env::var_os(name) {
            None => "is not set",
            Some(v) if v.is_empty() => "is empty",
            // A bearer token travels in a header: visible ASCII, and no spaces (a header value
            // loses its leading and trailing ones, so such a token could never match).
            Some(v) => match v.to_str().filter(|s| s.bytes().all(|b| b.is_ascii_graphic())) {
                Some(value) => match AdminToken::new(value.as_bytes()) {
                    Ok(t) => return Some(t),
                    Err(e) => {
                        self.err(var.span(), e);
                        return None;
                    }
                },
                None => "holds characters other than visible ASCII (spaces included)",
            },
        };
        self.err(
            var.span(),
            format!(
                "the environment variable {name:?} named by `token_env` {problem}; set it to the \
                 admin API token before starting"
            ),
        );
        None
    }
}

// === impl routes ===

/// What one route file contributes to the cross-file checks.
#[derive(Debug, Default)]
struct FileOutput {
    /// Every upstream name with its span, valid or not (so a broken upstream is not also
    /// reported as missing).
    upstream_names: Vec<(String, Range<usize>)>,
    /// Every route name with its span.
    route_names: Vec<(String, Range<usize>)>,
    /// Upstream names used by routes: (route, upstream, span of the reference).
    references: Vec<(String, String, Range<usize>)>,
    upstreams: Vec<UpstreamConfig>,
    routes: Vec<RouteConfig>,
}

/// Validate every file, then the cross-file rules. `early` holds problems found before (files
/// that could not be read); with any, the "upstream not defined" check is skipped, since the
/// missing file may define it.
fn validate_routes(
    files: Vec<(PathBuf, String)>,
    mut early: Vec<ConfigError>,
    base: Option<&Path>,
) -> Result<RouteSet, ConfigErrors> {
    let sources: Vec<Source<'_>> = files.iter().map(|(p, t)| Source::new(p, t)).collect();
    // (file index, error) so the final list can be sorted in load order.
    let mut errors: Vec<(usize, ConfigError)> = Vec::new();
    let mut outputs: Vec<FileOutput> = Vec::with_capacity(sources.len());
    let mut complete = early.is_empty();

    for (i, src) in sources.iter().enumerate() {
        let mut cx = Ctx::new(src);
        let out = match toml::from_str::<RoutesFile>(src.text) {
            Ok(f) => cx.routes_file(f, base),
            Err(e) => {
                cx.toml_error(&e);
                complete = false;
                FileOutput::default()
            }
        };
        errors.extend(cx.errors.into_iter().map(|e| (i, e)));
        outputs.push(out);
    }

    // Unique upstream names.
    let mut upstream_at: HashMap<&str, (usize, usize)> = HashMap::new();
    for (i, out) in outputs.iter().enumerate() {
        for (name, span) in &out.upstream_names {
            let line = sources[i].locate(span.start).0;
            if let Some(&(fi, fl)) = upstream_at.get(name.as_str()) {
                let msg = format!(
                    "duplicate upstream name {name:?} (first defined at {}:{fl}); upstream names \
                     must be unique across all route files",
                    sources[fi].path.display()
                );
                errors.push((i, sources[i].error(span.clone(), msg)));
            } else {
                upstream_at.insert(name, (i, line));
            }
        }
    }
    // Unique route names.
    let mut route_at: HashMap<&str, (usize, usize)> = HashMap::new();
    for (i, out) in outputs.iter().enumerate() {
        for (name, span) in &out.route_names {
            let line = sources[i].locate(span.start).0;
            if let Some(&(fi, fl)) = route_at.get(name.as_str()) {
                let msg = format!(
                    "duplicate route name {name:?} (first defined at {}:{fl}); route names must \
                     be unique across all route files",
                    sources[fi].path.display()
                );
                errors.push((i, sources[i].error(span.clone(), msg)));
            } else {
                route_at.insert(name, (i, line));
            }
        }
    }
    // Every upstream a route names exists.
    if complete {
        let dir = routes_dir_label(&files);
        let mut defined: Vec<&str> = upstream_at.keys().copied().collect();
        defined.sort_unstable();
        for (i, out) in outputs.iter().enumerate() {
            for (route, upstream, span) in &out.references {
                if upstream_at.contains_key(upstream.as_str()) {
                    continue;
                }
                let mut msg = format!(
                    "route {route:?} names upstream {upstream:?}, which is not defined in any \
                     file under {dir}"
                );
                msg.push_str(&name_hint(upstream, &defined));
                errors.push((i, sources[i].error(span.clone(), msg)));
            }
        }
    }

    if !errors.is_empty() || !early.is_empty() {
        errors.sort_by(|(fa, a), (fb, b)| (fa, a.line, a.column).cmp(&(fb, b.line, b.column)));
        early.extend(errors.into_iter().map(|(_, e)| e));
        return Err(ConfigErrors(early));
    }

    let mut set =
        RouteSet { files: Vec::with_capacity(files.len()), upstreams: Vec::new(), routes: Vec::new() };
    for out in outputs {
        set.upstreams.extend(out.upstreams);
        set.routes.extend(out.routes);
    }
    drop(sources);
    set.files = files.into_iter().map(|(p, _)| p).collect();
    Ok(set)
}

/// `"routes/"`, or whatever the folder holding the route files is called.
fn routes_dir_label(files: &[(PathBuf, String)]) -> String {
    files
        .first()
        .and_then(|(p, _)| p.parent())
        .and_then(Path::file_name)
        .map_or_else(|| "routes/".to_owned(), |n| format!("{}/", n.to_string_lossy()))
}

/// "; defined upstreams: ..." when there are few, else "; did you mean ...?" when one is close.
fn name_hint(wanted: &str, defined: &[&str]) -> String {
    if defined.is_empty() {
        return "; no upstream is defined: add an [[upstream]] table".to_owned();
    }
    if defined.len() <= MAX_LISTED_NAMES {
        let list: Vec<String> = defined.iter().map(|n| format!("{n:?}")).collect();
        return format!("; defined upstreams: {}", list.join(", "));
    }
    let best = defined
        .iter()
        .map(|d| (edit_distance(wanted, d), *d))
        .min()
        .filter(|(dist, _)| *dist <= wanted.len() / 3 + 1);
    match best {
        Some((_, name)) => format!("; did you mean {name:?}?"),
        None => String::new(),
    }
}

/// Levenshtein distance, for "did you mean".
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

impl Ctx<'_, '_> {
    fn routes_file(&mut self, f: RoutesFile, base: Option<&Path>) -> FileOutput {
        let mut out = FileOutput::default();
        // A relative `ca` resolves against gateway.toml's folder (or, without one, the file's).
        let base = base
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.src.path.parent().unwrap_or_else(|| Path::new("")).to_path_buf());
        for u in &f.upstream {
            out.upstream_names.push((u.name.get_ref().clone(), u.name.span()));
            let before = self.errors.len();
            let cfg = self.upstream(u, &base);
            if let (Some(cfg), true) = (cfg, self.errors.len() == before) {
                out.upstreams.push(cfg);
            }
        }
        for r in &f.route {
            out.route_names.push((r.name.get_ref().clone(), r.name.span()));
            let before = self.errors.len();
            let cfg = self.route(r, &mut out.references);
            if let (Some(cfg), true) = (cfg, self.errors.len() == before) {
                out.routes.push(cfg);
            }
        }
        out
    }

    // --- [[upstream]] ---

    fn upstream(&mut self, u: &UpstreamSection, base: &Path) -> Option<UpstreamConfig> {
        let name = self.non_empty(&u.name, "name");
        let discovery = match (&u.endpoints, &u.discovery) {
            (Some(_), Some(_)) | (None, None) => {
                let what = if u.endpoints.is_some() {
                    "sets both `endpoints` and `discovery`"
                } else {
                    "sets neither `endpoints` nor `discovery`"
                };
                self.err(
                    u.name.span(),
                    format!(
                        "upstream {:?} {what}; set exactly one \
                         (a static list, or discovery = {{ type = \"dns\" | \"zookeeper\" | \
                         \"consul\", ... }})",
                        u.name.get_ref()
                    ),
                );
                None
            }
            (Some(eps), None) => self.endpoints(eps),
            (None, Some(d)) => self.discovery(d, base),
        };

        let balance = match &u.balance {
            None => Some(Balance::RoundRobin),
            Some(b) => self.choice(
                b,
                "balance",
                &[
                    ("round_robin", Balance::RoundRobin),
                    ("least_request", Balance::LeastRequest),
                    ("p2c_ewma", Balance::P2cEwma),
                    ("random", Balance::Random),
                    ("ring_hash", Balance::RingHash),
                    ("maglev", Balance::Maglev),
                ],
            ),
        };
        // `hash_on` with another picker is accepted and ignored; absent with a hashing picker
        // means the client IP (Envoy and NGINX default to a connection property too).
        let hash_on = match &u.hash_on {
            Some(h) => self.hash_on(h),
            None if matches!(balance, Some(Balance::RingHash | Balance::Maglev)) => Some(HashOn::ClientIp),
            None => None,
        };
        let protocol = match &u.protocol {
            None => Some(UpstreamProtocol::Http1),
            Some(p) => self.choice(
                p,
                "protocol",
                &[
                    ("http1", UpstreamProtocol::Http1),
                    ("h2", UpstreamProtocol::H2),
                    ("h2c", UpstreamProtocol::H2c),
                ],
            ),
        };
        let connect_timeout =
            self.duration_or(u.connect_timeout.as_ref(), "connect_timeout", Duration::from_secs(1));
        let read_timeout = self.duration_or(u.read_timeout.as_ref(), "read_timeout", Duration::from_secs(60));
        let panic_threshold = self.percent_or(u.panic_threshold.as_ref(), "panic_threshold", 0);
        let tls = u.tls.as_ref().map(|t| self.upstream_tls(t, base, &u.name));
        let health = u.health.as_ref().and_then(|h| self.health(h));
        let outlier = u.outlier.as_ref().map(|o| self.outlier(o));
        let limits = u.limits.as_ref().map_or_else(UpstreamLimits::default, |l| self.upstream_limits(l));

        Some(UpstreamConfig {
            name: name?,
            discovery: discovery?,
            balance: balance?,
            hash_on,
            protocol: protocol?,
            connect_timeout,
            read_timeout,
            panic_threshold,
            tls,
            health,
            outlier,
            limits,
        })
    }

    fn endpoints(&mut self, eps: &Spanned<Vec<Spanned<EndpointEntry>>>) -> Option<DiscoveryConfig> {
        if eps.get_ref().is_empty() {
            self.err(eps.span(), "`endpoints` is empty; list at least one \"host:port\", or use `discovery`");
            return None;
        }
        let mut out = Vec::with_capacity(eps.get_ref().len());
        let mut ok = true;
        for e in eps.get_ref() {
            let (address, span, weight) = match e.get_ref() {
                EndpointEntry::Address(a) => (a, e.span(), 1),
                EndpointEntry::Table(t) => {
                    let w = match &t.weight {
                        None => Some(1),
                        Some(w) => self.int(w, "weight", 1, i64::from(u32::MAX)),
                    };
                    (t.address.get_ref(), t.address.span(), w.map_or(0, |w| w as u32))
                }
            };
            if let Err(m) = check_endpoint_address(address) {
                self.err(span, m);
                ok = false;
            }
            ok &= weight >= 1;
            out.push(StaticEndpoint { address: address.clone(), weight });
        }
        ok.then_some(DiscoveryConfig::Static(out))
    }

    /// `base` is the folder a relative `tls_ca` resolves against (as `[upstream.tls] ca`).
    fn discovery(&mut self, d: &Spanned<DiscoverySection>, base: &Path) -> Option<DiscoveryConfig> {
        let d = d.get_ref();
        let kind = d.kind.get_ref().as_str();
        let present: [(&str, Option<Range<usize>>); 19] = [
            ("name", d.name.as_ref().map(Spanned::span)),
            ("port", d.port.as_ref().map(Spanned::span)),
            ("record", d.record.as_ref().map(Spanned::span)),
            ("refresh", d.refresh.as_ref().map(Spanned::span)),
            ("resolver", d.resolver.as_ref().map(Spanned::span)),
            ("servers", d.servers.as_ref().map(Spanned::span)),
            ("path", d.path.as_ref().map(Spanned::span)),
            ("format", d.format.as_ref().map(Spanned::span)),
            ("endpoint_name", d.endpoint_name.as_ref().map(Spanned::span)),
            ("session_timeout", d.session_timeout.as_ref().map(Spanned::span)),
            ("address", d.address.as_ref().map(Spanned::span)),
            ("service", d.service.as_ref().map(Spanned::span)),
            ("tag", d.tag.as_ref().map(Spanned::span)),
            ("datacenter", d.datacenter.as_ref().map(Spanned::span)),
            ("passing_only", d.passing_only.as_ref().map(Spanned::span)),
            ("token_env", d.token_env.as_ref().map(Spanned::span)),
            ("wait", d.wait.as_ref().map(Spanned::span)),
            ("tls_ca", d.tls_ca.as_ref().map(Spanned::span)),
            ("tls_insecure_skip_verify", d.tls_insecure_skip_verify.as_ref().map(Spanned::span)),
        ];
        let allowed: &[&str] = match kind {
            "dns" => &["name", "port", "record", "refresh", "resolver"],
            "zookeeper" => &["servers", "path", "format", "endpoint_name", "session_timeout"],
            "consul" => &[
                "address",
                "service",
                "tag",
                "datacenter",
                "passing_only",
                "token_env",
                "wait",
                "tls_ca",
                "tls_insecure_skip_verify",
            ],
            other => {
                let hint = if other == "static" {
                    "; a static list is written `endpoints = [\"host:port\", ...]`"
                } else {
                    ""
                };
                self.err(
                    d.kind.span(),
                    format!(
                        "unknown discovery type {other:?}; expected one of: dns, zookeeper, \
                         consul{hint}"
                    ),
                );
                return None;
            }
        };
        let before = self.errors.len();
        for (key, span) in &present {
            if let Some(span) = span {
                if !allowed.contains(key) {
                    self.err(
                        span.clone(),
                        format!(
                            "`{key}` is not a {kind} discovery key; {kind} takes: {}",
                            allowed.join(", ")
                        ),
                    );
                }
            }
        }
        let type_span = d.kind.span();
        let required = |cx: &mut Self, v: &Option<Spanned<String>>, key: &str| match v {
            Some(v) => cx.non_empty(v, key),
            None => {
                cx.err(type_span.clone(), format!("{kind} discovery needs `{key}`"));
                None
            }
        };
        let cfg = match kind {
            "dns" => {
                let name = required(self, &d.name, "name");
                let record = match &d.record {
                    None => Some(DnsRecord::A),
                    Some(r) => self.choice(r, "record", &[("a", DnsRecord::A), ("srv", DnsRecord::Srv)]),
                };
                let port = match (&d.port, record) {
                    (Some(p), _) => self.int(p, "port", 1, 65_535).map(|p| p as u16),
                    (None, Some(DnsRecord::Srv)) => Some(0),
                    (None, _) => {
                        self.err(
                            d.kind.span(),
                            "dns discovery with record = \"a\" needs `port` (SRV records carry \
                             their own)",
                        );
                        None
                    }
                };
                let refresh = self.duration_or(d.refresh.as_ref(), "refresh", Duration::from_secs(30));
                let resolver = d.resolver.as_ref().and_then(|r| self.socket_addr(r, "resolver"));
                Some(DiscoveryConfig::Dns { name: name?, port: port?, record: record?, refresh, resolver })
            }
            "zookeeper" => {
                let servers = required(self, &d.servers, "servers");
                if let (Some(list), Some(span)) = (&servers, d.servers.as_ref().map(Spanned::span)) {
                    if let Some(m) = list.split(',').find_map(|s| check_endpoint_address(s.trim()).err()) {
                        self.err(
                            span,
                            format!(
                                "invalid zookeeper `servers` {list:?}: {m}; expected \"host:port\" \
                                 entries separated by commas"
                            ),
                        );
                    }
                }
                let path = required(self, &d.path, "path");
                if let (Some(p), Some(span)) = (&path, d.path.as_ref().map(Spanned::span)) {
                    if !p.starts_with('/') {
                        self.err(span, format!("zookeeper `path` {p:?} must start with \"/\""));
                    }
                }
                let format = match &d.format {
                    None => Some(ZkFormat::Auto),
                    Some(f) => self.choice(
                        f,
                        "format",
                        &[
                            ("auto", ZkFormat::Auto),
                            ("curator", ZkFormat::Curator),
                            ("serverset", ZkFormat::Serverset),
                            ("hostport", ZkFormat::HostPort),
                        ],
                    ),
                };
                let endpoint_name = d.endpoint_name.as_ref().and_then(|e| self.non_empty(e, "endpoint_name"));
                let session_timeout =
                    self.duration_or(d.session_timeout.as_ref(), "session_timeout", Duration::from_secs(10));
                Some(DiscoveryConfig::ZooKeeper {
                    servers: servers?,
                    path: path?,
                    format: format?,
                    endpoint_name,
                    session_timeout,
                })
            }
            _ => {
                let address = match (required(self, &d.address, "address"), &d.address) {
                    (Some(a), Some(v)) => ConsulAddress::parse(&a).map_err(|m| self.err(v.span(), m)).ok(),
                    _ => None,
                };
                let tls_ca = d
                    .tls_ca
                    .as_ref()
                    .and_then(|c| self.non_empty(c, "tls_ca"))
                    .map(|c| resolve_path(base, &c));
                let tls_insecure_skip_verify =
                    d.tls_insecure_skip_verify.as_ref().is_some_and(|v| *v.get_ref());
                let https = address.as_ref().map(ConsulAddress::is_https);
                // TLS settings on a cleartext address are a mistake that would otherwise pass
                // unnoticed: the agent would be spoken to without the protection asked for.
                if https == Some(false) {
                    let tls_keys = [
                        ("tls_ca", d.tls_ca.as_ref().map(Spanned::span)),
                        (
                            "tls_insecure_skip_verify",
                            d.tls_insecure_skip_verify.as_ref().filter(|v| *v.get_ref()).map(Spanned::span),
                        ),
                    ];
                    for (key, span) in tls_keys {
                        if let Some(span) = span {
                            self.err(
                                span,
                                format!(
                                    "`{key}` applies to an https:// consul `address`; this one is http://"
                                ),
                            );
                        }
                    }
                }
                if let (Some(v), Some(true), true) =
                    (&d.tls_insecure_skip_verify, https, tls_insecure_skip_verify)
                {
                    let (line, column) = self.src.locate(v.span().start);
                    tracing::warn!(
                        "{}:{line}:{column}: consul discovery sets tls_insecure_skip_verify = true: \
                         the agent's certificate is not verified",
                        self.src.path.display(),
                    );
                }
                let service = required(self, &d.service, "service");
                let tag = d.tag.as_ref().and_then(|t| self.non_empty(t, "tag"));
                let datacenter = d.datacenter.as_ref().and_then(|t| self.non_empty(t, "datacenter"));
                let token_env = d.token_env.as_ref().and_then(|t| self.non_empty(t, "token_env"));
                let wait = self.duration_or(d.wait.as_ref(), "wait", Duration::from_secs(300));
                Some(DiscoveryConfig::Consul {
                    address: address?,
                    service: service?,
                    tag,
                    datacenter,
                    passing_only: d.passing_only.as_ref().is_none_or(|p| *p.get_ref()),
                    token_env,
                    wait,
                    tls_ca,
                    tls_insecure_skip_verify,
                })
            }
        };
        cfg.filter(|_| self.errors.len() == before)
    }

    fn hash_on(&mut self, h: &Spanned<String>) -> Option<HashOn> {
        let s = h.get_ref().as_str();
        let r = match s {
            "client_ip" => Ok(HashOn::ClientIp),
            "path" => Ok(HashOn::Path),
            _ => {
                if let Some(name) = s.strip_prefix("header:") {
                    HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
                        .map(HashOn::Header)
                        .map_err(|_| format!("invalid header name {name:?} in `hash_on`"))
                } else if let Some(name) = s.strip_prefix("cookie:") {
                    if is_token(name) {
                        Ok(HashOn::Cookie(name.to_owned()))
                    } else {
                        Err(format!("invalid cookie name {name:?} in `hash_on`"))
                    }
                } else {
                    Err(format!(
                        "unknown `hash_on` {s:?}; expected one of: client_ip, header:NAME, \
                         cookie:NAME, path"
                    ))
                }
            }
        };
        r.map_err(|m| self.err(h.span(), m)).ok()
    }

    /// `upstream` is the upstream's `name`, for the insecure-mode warning.
    fn upstream_tls(
        &mut self,
        t: &UpstreamTlsSection,
        base: &Path,
        upstream: &Spanned<String>,
    ) -> UpstreamTls {
        let sni = t.sni.as_ref().and_then(|s| self.non_empty(s, "sni"));
        let ca = t.ca.as_ref().and_then(|c| self.non_empty(c, "ca")).map(|c| resolve_path(base, &c));
        let insecure_skip_verify = t.insecure_skip_verify.unwrap_or(false);
        if insecure_skip_verify {
            let (line, column) = self.src.locate(upstream.span().start);
            tracing::warn!(
                "{}:{line}:{column}: upstream {:?} sets insecure_skip_verify = true: its \
                 certificates are not verified",
                self.src.path.display(),
                upstream.get_ref(),
            );
        }
        UpstreamTls { sni, ca, insecure_skip_verify }
    }

    fn health(&mut self, h: &HealthSection) -> Option<HealthCheck> {
        let kind = match &h.kind {
            None => Some(HealthKind::Http),
            Some(k) => self.choice(k, "type", &[("http", HealthKind::Http), ("tcp", HealthKind::Tcp)]),
        };
        if kind == Some(HealthKind::Tcp) {
            for (key, v) in [("path", &h.path), ("host", &h.host)] {
                if let Some(v) = v {
                    self.err(
                        v.span(),
                        format!(
                            "`{key}` applies to http health checks only; remove it or set type = \"http\""
                        ),
                    );
                }
            }
        }
        let mut path = "/healthz".to_owned();
        if let Some(p) = &h.path {
            if p.get_ref().starts_with('/') {
                path.clone_from(p.get_ref());
            } else {
                self.err(p.span(), format!("health `path` {:?} must start with \"/\"", p.get_ref()));
            }
        }
        let host = h.host.as_ref().and_then(|v| self.non_empty(v, "host"));
        let expected_status = match &h.expected_status {
            None => (200, 399),
            Some(v) => self.status_range(v).unwrap_or((200, 399)),
        };
        Some(HealthCheck {
            kind: kind?,
            path,
            host,
            expected_status,
            interval: self.duration_or(h.interval.as_ref(), "interval", Duration::from_secs(5)),
            timeout: self.duration_or(h.timeout.as_ref(), "timeout", Duration::from_secs(1)),
            healthy_threshold: self.u32_or(h.healthy_threshold.as_ref(), "healthy_threshold", 1, 2),
            unhealthy_threshold: self.u32_or(h.unhealthy_threshold.as_ref(), "unhealthy_threshold", 1, 3),
        })
    }

    /// `"200-399"`, `"200"` or `200`.
    fn status_range(&mut self, v: &Spanned<Scalar>) -> Option<(u16, u16)> {
        let parse = |s: &str| s.trim().parse::<u16>().ok().filter(|n| (100..=599).contains(n));
        let r = match v.get_ref() {
            Scalar::Int(i) => u16::try_from(*i).ok().filter(|n| (100..=599).contains(n)).map(|n| (n, n)),
            Scalar::Str(s) => match s.split_once('-') {
                Some((a, b)) => parse(a).zip(parse(b)).filter(|(a, b)| a <= b),
                None => parse(s).map(|n| (n, n)),
            },
            Scalar::Float(_) => None,
        };
        if r.is_none() {
            self.err(
                v.span(),
                format!(
                    "invalid `expected_status` {}: expected a status or an inclusive range of \
                     statuses between 100 and 599, e.g. \"200-399\" or \"200\"",
                    v.get_ref()
                ),
            );
        }
        r
    }

    fn outlier(&mut self, o: &OutlierSection) -> Outlier {
        Outlier {
            consecutive_failures: self.u32_or(o.consecutive_failures.as_ref(), "consecutive_failures", 1, 5),
            ejection_time: self.duration_or(
                o.ejection_time.as_ref(),
                "ejection_time",
                Duration::from_secs(30),
            ),
            max_ejection_percent: self.percent_or(
                o.max_ejection_percent.as_ref(),
                "max_ejection_percent",
                10,
            ),
        }
    }

    fn upstream_limits(&mut self, l: &UpstreamLimitsSection) -> UpstreamLimits {
        let d = UpstreamLimits::default();
        UpstreamLimits {
            // Zero connections or requests would refuse everything: at least 1. Zero pending
            // (fail at once when no connection is free) and zero retries are meaningful.
            max_connections: self.u32_or(l.max_connections.as_ref(), "max_connections", 1, d.max_connections),
            max_pending_requests: self.u32_or(
                l.max_pending_requests.as_ref(),
                "max_pending_requests",
                0,
                d.max_pending_requests,
            ),
            max_requests: self.u32_or(l.max_requests.as_ref(), "max_requests", 1, d.max_requests),
            max_retries: self.u32_or(l.max_retries.as_ref(), "max_retries", 0, d.max_retries),
        }
    }

    // --- [[route]] ---

    fn route(
        &mut self,
        r: &RouteSection,
        refs: &mut Vec<(String, String, Range<usize>)>,
    ) -> Option<RouteConfig> {
        let name = self.non_empty(&r.name, "name");
        let origin =
            Origin { file: self.src.path.to_path_buf(), line: self.src.locate(r.name.span().start).0 };

        let hosts: Vec<HostMatch> = r.hosts.iter().flatten().filter_map(|h| self.host(h)).collect();

        let path = self.path_match(r);
        let methods: Vec<Method> = r
            .methods
            .iter()
            .flatten()
            .filter_map(|m| {
                let upper = m.get_ref().to_ascii_uppercase();
                match Method::from_bytes(upper.as_bytes()) {
                    Ok(m) if !upper.is_empty() => Some(m),
                    _ => {
                        self.err(m.span(), format!("invalid method {:?}", m.get_ref()));
                        None
                    }
                }
            })
            .collect();
        let headers: Vec<(HeaderName, ValueMatch)> = r
            .headers
            .iter()
            .flat_map(|p| &p.0)
            .filter_map(|(k, v)| Some((self.header_name(k)?, value_match(v))))
            .collect();
        let query: Vec<(String, ValueMatch)> = r
            .query
            .iter()
            .flat_map(|p| &p.0)
            .filter_map(|(k, v)| Some((self.non_empty(k, "query")?, value_match(v))))
            .collect();

        let action = self.action(r, refs);

        let has_prefix = r.path_prefix.is_some();
        let mut strip_prefix = false;
        if let Some(s) = &r.strip_prefix {
            strip_prefix = *s.get_ref();
            if strip_prefix && !has_prefix {
                self.err(
                    s.span(),
                    "`strip_prefix` needs `path_prefix`; set path_prefix, or remove strip_prefix",
                );
            }
        }
        let mut rewrite_prefix = None;
        if let Some(p) = &r.rewrite_prefix {
            if !has_prefix {
                self.err(
                    p.span(),
                    "`rewrite_prefix` needs `path_prefix`; set path_prefix, or remove rewrite_prefix",
                );
            } else if !p.get_ref().starts_with('/') {
                self.err(p.span(), format!("`rewrite_prefix` {:?} must start with \"/\"", p.get_ref()));
            } else {
                rewrite_prefix = Some(p.get_ref().clone());
            }
        }
        let host_rewrite = r.host_rewrite.as_ref().and_then(|h| {
            if h.get_ref().is_empty() || h.get_ref().contains(char::is_whitespace) {
                self.err(h.span(), format!("invalid `host_rewrite` {:?}: expected a host name", h.get_ref()));
                return None;
            }
            self.header_value(h, "host")
        });
        let request_headers = r.request_headers.as_ref().map(|e| self.header_edits(e)).unwrap_or_default();
        let response_headers = r.response_headers.as_ref().map(|e| self.header_edits(e)).unwrap_or_default();
        // Every route has a deadline (NGINX's proxy_read_timeout default): an upstream that
        // accepts and never answers must not hold the request for ever.
        let timeout = Some(self.duration_or(r.timeout.as_ref(), "timeout", DEFAULT_ROUTE_TIMEOUT));
        let max_request_body_bytes = r.max_request_body_bytes.as_ref().and_then(|s| self.size(s));
        let rate_limit = r.rate_limit.as_ref().and_then(|l| self.rate_limit(l));
        let retry = r.retry.as_ref().map_or_else(RetryPolicy::default, |t| self.retry(t));

        Some(RouteConfig {
            name: name?,
            origin,
            hosts,
            path: path?,
            methods,
            headers,
            query,
            action: action?,
            strip_prefix,
            rewrite_prefix,
            host_rewrite,
            request_headers,
            response_headers,
            timeout,
            max_request_body_bytes,
            retry,
            rate_limit,
        })
    }

    fn host(&mut self, h: &Spanned<String>) -> Option<HostMatch> {
        let raw = h.get_ref();
        let lower = raw.trim().to_ascii_lowercase();
        let r = check_host(&lower, raw);
        r.map_err(|m| self.err(h.span(), m)).ok()
    }

    fn path_match(&mut self, r: &RouteSection) -> Option<PathMatch> {
        let set: Vec<&str> = [
            ("path", r.path.is_some()),
            ("path_prefix", r.path_prefix.is_some()),
            ("path_regex", r.path_regex.is_some()),
        ]
        .iter()
        .filter(|(_, on)| *on)
        .map(|(k, _)| *k)
        .collect();
        if set.len() > 1 {
            self.err(
                r.name.span(),
                format!(
                    "route {:?} sets {}; a route takes at most one of path, path_prefix, path_regex",
                    r.name.get_ref(),
                    set.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(" and ")
                ),
            );
            return None;
        }
        if let Some(p) = &r.path {
            if !p.get_ref().starts_with('/') {
                self.err(p.span(), format!("`path` {:?} must start with \"/\"", p.get_ref()));
                return None;
            }
            return Some(PathMatch::Exact(p.get_ref().clone()));
        }
        if let Some(p) = &r.path_prefix {
            if !p.get_ref().starts_with('/') {
                self.err(p.span(), format!("`path_prefix` {:?} must start with \"/\"", p.get_ref()));
                return None;
            }
            let trimmed = p.get_ref().trim_end_matches('/');
            let prefix = if trimmed.is_empty() { "/" } else { trimmed };
            return Some(PathMatch::Prefix(prefix.to_owned()));
        }
        if let Some(p) = &r.path_regex {
            // Compiled alone first: its error then talks about what the user wrote, and a pattern
            // like `a)|(?:b` cannot close our wrapper group and slip through.
            let compiled =
                Regex::new(p.get_ref()).and_then(|_| Regex::new(&format!("^(?:{})$", p.get_ref())));
            return match compiled {
                Ok(re) => Some(PathMatch::Regex(re)),
                Err(e) => {
                    self.err(
                        p.span(),
                        format!("invalid `path_regex` {:?}: {}", p.get_ref(), regex_message(&e)),
                    );
                    None
                }
            };
        }
        Some(PathMatch::Prefix("/".to_owned()))
    }

    fn action(&mut self, r: &RouteSection, refs: &mut Vec<(String, String, Range<usize>)>) -> Option<Action> {
        let set: Vec<&str> = [
            ("upstream", r.upstream.is_some()),
            ("split", r.split.is_some()),
            ("respond", r.respond.is_some()),
            ("redirect", r.redirect.is_some()),
        ]
        .iter()
        .filter(|(_, on)| *on)
        .map(|(k, _)| *k)
        .collect();
        let route = r.name.get_ref();
        match set.len() {
            0 => {
                self.err(
                    r.name.span(),
                    format!(
                        "route {route:?} has no action; set one of `upstream`, `split`, \
                         `respond` or `redirect`"
                    ),
                );
                return None;
            }
            1 => {}
            _ => {
                self.err(
                    r.name.span(),
                    format!(
                        "route {route:?} sets {}; a route takes exactly one of `upstream`, \
                         `split`, `respond` or `redirect`",
                        set.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(" and ")
                    ),
                );
                return None;
            }
        }
        if let Some(u) = &r.upstream {
            let name = self.non_empty(u, "upstream")?;
            refs.push((route.clone(), name.clone(), u.span()));
            return Some(Action::Upstream(name));
        }
        if let Some(split) = &r.split {
            if split.get_ref().is_empty() {
                self.err(split.span(), "`split` is empty; list at least one { upstream, weight }");
                return None;
            }
            let before = self.errors.len();
            let mut out = Vec::with_capacity(split.get_ref().len());
            let mut total: u64 = 0;
            for e in split.get_ref() {
                let name = self.non_empty(&e.upstream, "upstream");
                let weight = match &e.weight {
                    None => Some(1),
                    Some(w) => self.int(w, "weight", 0, i64::from(u32::MAX)),
                };
                if let (Some(name), Some(w)) = (name, weight) {
                    refs.push((route.clone(), name.clone(), e.upstream.span()));
                    total += w as u64;
                    out.push((name, w as u32));
                }
            }
            if self.errors.len() != before {
                return None;
            }
            if total == 0 {
                self.err(
                    split.span(),
                    "`split` weights add up to 0; give at least one a weight of 1 or more",
                );
                return None;
            }
            return Some(Action::Split(out));
        }
        if let Some(resp) = &r.respond {
            let resp = resp.get_ref();
            let status = self.status(&resp.status);
            let headers = self.header_pairs(resp.headers.as_ref());
            return Some(Action::Respond {
                status: status?,
                body: resp.body.clone().unwrap_or_default(),
                headers: headers?,
            });
        }
        let redirect = r.redirect.as_ref()?.get_ref();
        let to = self.non_empty(&redirect.to, "to");
        let status = match &redirect.status {
            None => Some(StatusCode::FOUND),
            Some(s) if matches!(s.get_ref(), 301 | 302 | 303 | 307 | 308) => self.status(s),
            Some(s) => {
                self.err(
                    s.span(),
                    format!("invalid redirect status {}: expected 301, 302, 303, 307 or 308", s.get_ref()),
                );
                None
            }
        };
        Some(Action::Redirect { to: to?, status: status? })
    }

    /// Header name/value pairs; `None` if any is invalid.
    fn header_pairs(&mut self, p: Option<&Pairs<Spanned<String>>>) -> Option<Vec<(HeaderName, HeaderValue)>> {
        let before = self.errors.len();
        let mut out = Vec::new();
        for (k, v) in p.iter().flat_map(|p| &p.0) {
            let name = self.header_name(k);
            let value = self.header_value(v, k.get_ref());
            if let (Some(n), Some(v)) = (name, value) {
                out.push((n, v));
            }
        }
        (self.errors.len() == before).then_some(out)
    }

    fn header_edits(&mut self, e: &HeaderEditsSection) -> HeaderEdits {
        let set = self.header_pairs(e.set.as_ref()).unwrap_or_default();
        let remove = e.remove.iter().flatten().filter_map(|n| self.header_name(n)).collect();
        HeaderEdits { set, remove }
    }

    fn rate_limit(&mut self, l: &Spanned<super::file::RateLimitSection>) -> Option<RateLimit> {
        let l = l.get_ref();
        let rps = *l.requests_per_second.get_ref();
        if !(rps.is_finite() && rps > 0.0) {
            self.err(
                l.requests_per_second.span(),
                format!("`requests_per_second` must be greater than zero, got {rps}"),
            );
            return None;
        }
        let burst = match &l.burst {
            None => Some((rps.ceil() as u32).max(1)),
            Some(b) => self.int(b, "burst", 1, i64::from(u32::MAX)).map(|b| b as u32),
        };
        let key = match &l.key {
            None => Some(RateLimitKey::ClientIp),
            Some(k) => {
                let s = k.get_ref().as_str();
                match s {
                    "client_ip" => Some(RateLimitKey::ClientIp),
                    "global" => Some(RateLimitKey::Global),
                    _ => match s.strip_prefix("header:") {
                        Some(name) => HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
                            .map(RateLimitKey::Header)
                            .map_err(|_| {
                                self.err(
                                    k.span(),
                                    format!("invalid header name {name:?} in rate_limit `key`"),
                                )
                            })
                            .ok(),
                        None => {
                            self.err(
                                k.span(),
                                format!(
                                    "unknown rate_limit `key` {s:?}; expected one of: client_ip, \
                                     header:NAME, global"
                                ),
                            );
                            None
                        }
                    },
                }
            }
        };
        Some(RateLimit { requests_per_second: rps, burst: burst?, key: key? })
    }

    fn retry(&mut self, t: &super::file::RetrySection) -> RetryPolicy {
        let d = RetryPolicy::default();
        let attempts = self.u32_or(t.attempts.as_ref(), "attempts", 0, 2);
        let on = match &t.on {
            None => vec![RetryOn::ConnectFailure],
            Some(list) => list.iter().filter_map(|c| self.retry_on(c)).collect(),
        };
        let per_try_timeout =
            t.per_try_timeout.as_ref().map(|p| self.duration_or(Some(p), "per_try_timeout", Duration::ZERO));
        let backoff = self.duration_or(t.backoff.as_ref(), "backoff", d.backoff);
        let budget = match &t.budget {
            None => d.budget,
            Some(b) if (0.0..=1.0).contains(b.get_ref()) => *b.get_ref(),
            Some(b) => {
                self.err(b.span(), format!("`budget` must be between 0 and 1, got {}", b.get_ref()));
                d.budget
            }
        };
        let max_replay_body_bytes =
            t.max_replay_body_bytes.as_ref().and_then(|s| self.size(s)).unwrap_or(d.max_replay_body_bytes);
        RetryPolicy { attempts, on, per_try_timeout, backoff, budget, max_replay_body_bytes }
    }

    fn retry_on(&mut self, c: &Spanned<String>) -> Option<RetryOn> {
        let s = c.get_ref().as_str();
        let r = match s {
            "connect-failure" => Ok(RetryOn::ConnectFailure),
            "reset" => Ok(RetryOn::Reset),
            "5xx" => Ok(RetryOn::Status5xx),
            "gateway-error" => Ok(RetryOn::GatewayError),
            "timeout" => Ok(RetryOn::Timeout),
            _ => match s.strip_prefix("status:") {
                Some(n) => {
                    n.parse::<u16>().ok().filter(|n| (100..=599).contains(n)).map(RetryOn::Status).ok_or_else(
                        || format!("invalid retry condition {s:?}: the status must be 100 to 599"),
                    )
                }
                None => Err(format!(
                    "unknown retry condition {s:?}; expected one of: connect-failure, reset, 5xx, \
                     gateway-error, status:NNN, timeout"
                )),
            },
        };
        r.map_err(|m| self.err(c.span(), m)).ok()
    }
}

// === value checks ===

fn value_match(v: &Spanned<String>) -> ValueMatch {
    if v.get_ref() == "*" {
        ValueMatch::Present
    } else {
        ValueMatch::Exact(v.get_ref().clone())
    }
}

/// An RFC 7230 token (cookie names, header names).
fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A DNS name or IP literal: labels of letters, digits, `-` and `_`.
fn is_host_name(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
}

/// A `hosts` entry, already lower-cased.
fn check_host(lower: &str, raw: &str) -> Result<HostMatch, String> {
    if lower.is_empty() {
        return Err("empty host; remove it (an absent `hosts` matches any host)".to_owned());
    }
    if lower == "*" {
        return Err("host \"*\" is not allowed; remove `hosts` to match any host".to_owned());
    }
    let (wildcard, rest) = match lower.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, lower),
    };
    if rest.contains('*') {
        return Err(format!(
            "invalid host {raw:?}: a wildcard must be the whole leftmost label, e.g. \"*.example.com\""
        ));
    }
    // Bracketed IPv6, with or without a port.
    if let Some(inner) = rest.strip_prefix('[') {
        let (ip, after) =
            inner.split_once(']').ok_or_else(|| format!("invalid host {raw:?}: missing \"]\""))?;
        if ip.parse::<Ipv6Addr>().is_err() || wildcard {
            return Err(format!("invalid host {raw:?}: expected an IPv6 address in brackets"));
        }
        if !after.is_empty() {
            return Err(format!(
                "host {raw:?} has a port; hosts match without the port, so write \"[{ip}]\""
            ));
        }
        return Ok(HostMatch::Exact(format!("[{ip}]")));
    }
    if let Some((h, port)) = rest.rsplit_once(':') {
        if !h.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) {
            let shown = if wildcard { format!("*.{h}") } else { h.to_owned() };
            return Err(format!("host {raw:?} has a port; hosts match without the port, so write {shown:?}"));
        }
        return Err(format!("invalid host {raw:?}: write an IPv6 address in brackets, e.g. \"[::1]\""));
    }
    if !is_host_name(rest) {
        return Err(format!(
            "invalid host {raw:?}: expected a name like \"api.example.com\" or \"*.example.com\""
        ));
    }
    let rest = rest.strip_suffix('.').unwrap_or(rest).to_owned();
    Ok(if wildcard { HostMatch::Wildcard(rest) } else { HostMatch::Exact(rest) })
}

/// `host:port`, IPv6 in brackets.
fn check_endpoint_address(a: &str) -> Result<(), String> {
    let bad_port = |p: &str| format!("invalid port {p:?} in endpoint {a:?}: expected 1 to 65535");
    let port = if let Some(inner) = a.strip_prefix('[') {
        let (ip, after) =
            inner.split_once(']').ok_or_else(|| format!("invalid endpoint {a:?}: missing \"]\""))?;
        if ip.parse::<Ipv6Addr>().is_err() {
            return Err(format!("invalid endpoint {a:?}: {ip:?} is not an IPv6 address"));
        }
        after
            .strip_prefix(':')
            .ok_or_else(|| format!("endpoint {a:?} has no port; write it as \"[{ip}]:80\""))?
    } else {
        let Some((host, port)) = a.rsplit_once(':') else {
            return Err(format!("endpoint {a:?} has no port; write it as \"{a}:80\""));
        };
        if host.contains(':') {
            return Err(format!(
                "invalid endpoint {a:?}: write IPv6 addresses in brackets, e.g. \"[::1]:80\""
            ));
        }
        if host.parse::<IpAddr>().is_err() && !is_host_name(host) {
            return Err(format!("invalid endpoint {a:?}: {host:?} is not a host name or IP address"));
        }
        port
    };
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(bad_port(port)),
    }
}

/// Consul's default HTTP port (`ports.http` in its agent configuration), suggested when an
/// `http://` address lacks a port.
const CONSUL_HTTP_PORT: u16 = 8500;
/// Consul's usual HTTPS port (`ports.https`, off unless configured), suggested likewise.
const CONSUL_HTTPS_PORT: u16 = 8501;

impl ConsulAddress {
    /// The one check of a consul discovery `address`: `http://` or `https://`, a host (a name,
    /// an IPv4 address, or an IPv6 address in brackets) and a port, optionally followed by one
    /// `/`. The scheme is matched without regard to case.
    pub fn parse(a: &str) -> Result<ConsulAddress, String> {
        let example = "e.g. \"http://127.0.0.1:8500\" or \"https://consul.internal:8501\"";
        let not_a_url = || format!("consul `address` {a:?} must be an http:// or https:// URL, {example}");
        let (scheme, rest) = a.split_once("://").ok_or_else(not_a_url)?;
        let (https, scheme, default_port) = match scheme.to_ascii_lowercase().as_str() {
            "http" => (false, "http", CONSUL_HTTP_PORT),
            "https" => (true, "https", CONSUL_HTTPS_PORT),
            _ => return Err(not_a_url()),
        };
        let hostport = rest.strip_suffix('/').unwrap_or(rest);
        if hostport.contains(['/', '?', '#', '@']) {
            return Err(format!(
                "consul `address` {a:?} must be only a scheme, a host and a port (no path, query \
                 or user info; the ACL token goes in `token_env`), {example}"
            ));
        }
        let (host, port) = if let Some(inner) = hostport.strip_prefix('[') {
            let (ip, after) = inner
                .split_once(']')
                .ok_or_else(|| format!("invalid consul `address` {a:?}: missing \"]\""))?;
            if ip.parse::<Ipv6Addr>().is_err() {
                return Err(format!("invalid consul `address` {a:?}: {ip:?} is not an IPv6 address"));
            }
            let port = match after {
                "" => None,
                _ => Some(after.strip_prefix(':').ok_or_else(|| {
                    format!("invalid consul `address` {a:?}: expected \":port\" after \"]\"")
                })?),
            };
            (&hostport[..ip.len() + 2], port)
        } else {
            let (host, port) = match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            };
            if host.contains(':') {
                return Err(format!(
                    "invalid consul `address` {a:?}: write IPv6 addresses in brackets, e.g. \
                     \"{scheme}://[::1]:{default_port}\""
                ));
            }
            if host.is_empty() {
                return Err(format!("consul `address` {a:?} has no host, {example}"));
            }
            if host.parse::<IpAddr>().is_err() && !is_host_name(host) {
                return Err(format!(
                    "invalid consul `address` {a:?}: {host:?} is not a host name or IP address"
                ));
            }
            (host, port)
        };
        let Some(port) = port else {
            return Err(format!(
                "consul `address` {a:?} has no port; write it as \"{scheme}://{host}:{default_port}\""
            ));
        };
        match port.parse::<u16>() {
            Ok(p) if p > 0 => Ok(ConsulAddress { https, host: host.to_owned(), port: p }),
            _ => Err(format!("invalid port {port:?} in consul `address` {a:?}: expected 1 to 65535")),
        }
    }
}

/// The regex crate's error as one line: its `error:` line when it has one.
fn regex_message(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .map_or_else(|| text.split_whitespace().collect::<Vec<_>>().join(" "), str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The full `gateway.toml` example (docs/configuration.md), verbatim.
    const GATEWAY: &str = r#"
[gateway]
routes_dir = "routes"        # every *.toml in it (not recursive), loaded in file-name order
drain_delay = "0s"           # after SIGTERM: /ready says 503 at once, listeners keep accepting this long
drain_timeout = "30s"        # then: stop accepting, in-flight requests get this long

[admin]
listen = "127.0.0.1:9901"    # admin API; absent = no admin API

[[listener]]
name = "http"
listen = "0.0.0.0:8080"      # HTTP/1.1, and HTTP/2 with prior knowledge (h2c), on one port

[[listener]]
name = "https"
listen = "0.0.0.0:8443"
[listener.tls]
certs_dir = "certs"          # watched; see 2.3
default_cert = "example.com" # optional: a file stem in certs_dir, served when SNI matches nothing
client_ca = "ca.pem"         # optional: mTLS; with it, client certificates are required and verified

[limits]                      # per listener connection; defaults shown
header_read_timeout = "10s"   # a client that has not sent full headers by then is closed (slowloris)
idle_timeout = "60s"          # keep-alive connection with no request
max_request_header_bytes = "64KiB"   # beyond: 431
max_request_body_bytes = 0           # 0 = unlimited (streamed); a route can set its own; beyond: 413
max_connections = 10000              # per listener; beyond: new connections wait in the accept backlog
http2_max_concurrent_streams = 256

[access_log]
enabled = true
path = "-"                    # "-" = stdout; else a file path, appended, reopened on SIGUSR1 (log rotation)
"#;

    /// A route file with every key set (docs/configuration.md; comments trimmed).
    const ROUTES: &str = r#"[[upstream]]
name = "users"
endpoints = ["127.0.0.1:9001", { address = "127.0.0.1:9002", weight = 3 }]
balance = "ring_hash"
hash_on = "header:X-User-Id"
protocol = "h2c"
connect_timeout = "2s"
panic_threshold = 50

[upstream.tls]
sni = "users.internal"
ca = "internal-ca.pem"
insecure_skip_verify = false

[upstream.health]
type = "http"
path = "/healthz"
host = "users.internal"
expected_status = "200-399"
interval = "5s"
timeout = "1s"
healthy_threshold = 2
unhealthy_threshold = 3

[upstream.outlier]
consecutive_failures = 5
ejection_time = "30s"
max_ejection_percent = 10

[upstream.limits]
max_connections = 1024
max_pending_requests = 1024
max_requests = 1024
max_retries = 3

[[route]]
name = "users-api"
hosts = ["API.example.com", "*.example.com"]
path_prefix = "/users/"
methods = ["GET", "post"]
headers = { "X-Canary" = "1" }
query = { "debug" = "*" }
upstream = "users"
strip_prefix = true
rewrite_prefix = "/v1"
host_rewrite = "users.internal"
request_headers = { set = { "x-env" = "prod" }, remove = ["x-debug"] }
response_headers = { set = { "x-served-by" = "switchyard" }, remove = ["server"] }
timeout = "15s"
max_request_body_bytes = "1MiB"
rate_limit = { requests_per_second = 100, burst = 200, key = "client_ip" }

[route.retry]
attempts = 2
on = ["connect-failure", "reset", "5xx", "gateway-error", "status:429", "timeout"]
per_try_timeout = "2s"
backoff = "25ms"
budget = 0.2
max_replay_body_bytes = "64KiB"
"#;

    const USERS: &str = "[[upstream]]\nname = \"users\"\nendpoints = [\"127.0.0.1:9001\"]\n";

    fn load(files: &[(&str, &str)]) -> Result<RouteSet, ConfigErrors> {
        load_routes_from_sources(
            files.iter().map(|(p, t)| (PathBuf::from(format!("routes/{p}")), (*t).to_owned())).collect(),
        )
    }

    /// Every error of a load, as `check` prints them.
    fn errors(files: &[(&str, &str)]) -> Vec<String> {
        match load(files) {
            Ok(_) => panic!("expected errors"),
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }

    /// The single error of a one-file load (with `users` defined in a second file).
    fn error(text: &str) -> String {
        let errs = errors(&[("a.toml", text), ("z.toml", USERS)]);
        assert_eq!(errs.len(), 1, "{errs:#?}");
        errs.into_iter().next().unwrap()
    }

    fn assert_prefix(got: &str, want: &str) {
        assert!(got.starts_with(want), "\n got: {got}\nwant: {want}…");
    }

    fn route(body: &str) -> RouteConfig {
        let text = format!("[[route]]\nname = \"r\"\n{body}\n");
        let set = load(&[("a.toml", &text), ("z.toml", USERS)]).unwrap_or_else(|e| panic!("{e}"));
        set.routes.into_iter().next().unwrap()
    }

    fn upstream(body: &str) -> UpstreamConfig {
        let text = format!("[[upstream]]\nname = \"u\"\n{body}\n");
        let set = load(&[("a.toml", &text)]).unwrap_or_else(|e| panic!("{e}"));
        set.upstreams.into_iter().next().unwrap()
    }

    /// A scratch folder under the system temp dir, unique per test.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("switchyard-config-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    // === gateway.toml ===

    #[test]
    fn spec_gateway_example() {
        let dir = scratch("gateway");
        let path = dir.join("gateway.toml");
        std::fs::write(&path, GATEWAY).unwrap();
        let g = load_gateway(&path).unwrap();
        assert_eq!(g.path, path);
        assert_eq!(g.routes_dir, dir.join("routes"));
        assert_eq!(g.drain_delay, Duration::ZERO);
        assert_eq!(g.drain_timeout, Duration::from_secs(30));
        assert_eq!(g.admin, Some("127.0.0.1:9901".parse().unwrap()));
        assert_eq!(
            g.listeners,
            vec![
                ListenerConfig { name: "http".into(), listen: "0.0.0.0:8080".parse().unwrap(), tls: None },
                ListenerConfig {
                    name: "https".into(),
                    listen: "0.0.0.0:8443".parse().unwrap(),
                    tls: Some(ListenerTls {
                        certs_dir: dir.join("certs"),
                        default_cert: Some("example.com".into()),
                        client_ca: Some(dir.join("ca.pem")),
                    }),
                },
            ]
        );
        assert_eq!(g.limits, Limits::default());
        assert_eq!(g.access_log, AccessLogConfig { enabled: true, path: None });
    }

    #[test]
    fn gateway_defaults_and_paths() {
        let dir = scratch("gateway-min");
        let path = dir.join("gateway.toml");
        std::fs::write(
            &path,
            "[[listener]]\nname = \"http\"\nlisten = \"[::1]:8080\"\n[limits]\nidle_timeout = \"2m\"\n\
             max_request_body_bytes = \"10MiB\"\n[access_log]\nenabled = false\npath = \"logs/access.log\"\n\
             [gateway]\nroutes_dir = \"/etc/switchyard/routes\"\n",
        )
        .unwrap();
        let g = load_gateway(&path).unwrap();
        assert_eq!(g.routes_dir, PathBuf::from("/etc/switchyard/routes"));
        assert_eq!(g.drain_delay, Duration::ZERO, "the default: drain at once");
        assert_eq!(g.drain_timeout, Duration::from_secs(30));
        assert_eq!(g.admin, None);
        assert_eq!(g.listeners[0].listen, "[::1]:8080".parse().unwrap());
        assert_eq!(g.limits.idle_timeout, Duration::from_secs(120));
        assert_eq!(g.limits.max_request_body_bytes, 10 << 20);
        assert_eq!(g.limits.header_read_timeout, Duration::from_secs(10));
        assert_eq!(g.access_log, AccessLogConfig { enabled: false, path: Some(dir.join("logs/access.log")) });
    }

    #[test]
    fn gateway_errors_are_all_reported() {
        let dir = scratch("gateway-bad");
        let path = dir.join("gateway.toml");
        std::fs::write(
            &path,
            "[admin]\nlisten = \"localhost:9901\"\n\n[[listener]]\nname = \"a\"\nlisten = \"0.0.0.0:80\"\n\
             [[listener]]\nname = \"a\"\nlisten = \"0.0.0.0:81\"\n[limits]\nidle_timeout = \"60\"\n",
        )
        .unwrap();
        let errs: Vec<String> = load_gateway(&path).unwrap_err().0.iter().map(ToString::to_string).collect();
        let p = path.display();
        assert_eq!(errs.len(), 3, "{errs:#?}");
        assert_prefix(&errs[0], &format!("{p}:2:10: invalid `listen` address \"localhost:9901\""));
        assert_prefix(&errs[1], &format!("{p}:8:8: duplicate listener name \"a\" (first defined at line 5)"));
        assert_prefix(&errs[2], &format!("{p}:11:16: invalid duration \"60\": add a unit, e.g. \"60s\""));
    }

    #[test]
    fn drain_delay() {
        let dir = scratch("drain-delay");
        let path = dir.join("gateway.toml");
        let write = |v: &str| {
            std::fs::write(
                &path,
                format!(
                    "[gateway]\ndrain_delay = {v}\n[[listener]]\nname = \"a\"\nlisten = \"0.0.0.0:80\"\n"
                ),
            )
            .unwrap()
        };
        write("\"5s\"");
        assert_eq!(load_gateway(&path).unwrap().drain_delay, Duration::from_secs(5));
        write("\"0s\"");
        assert_eq!(load_gateway(&path).unwrap().drain_delay, Duration::ZERO);
        write("5");
        let e = load_gateway(&path).unwrap_err().to_string();
        assert_eq!(e, format!("{}:2:15: invalid duration \"5\": add a unit, e.g. \"5s\"", path.display()));
    }

    #[test]
    fn gateway_needs_a_listener_and_known_keys() {
        let dir = scratch("gateway-empty");
        let path = dir.join("gateway.toml");
        std::fs::write(&path, "[gateway]\ndrain_timeout = \"5s\"\n").unwrap();
        let e = load_gateway(&path).unwrap_err().to_string();
        assert_prefix(&e, &format!("{}:1:1: no [[listener]] defined", path.display()));

        std::fs::write(
            &path,
            "[[listener]]\nname = \"a\"\nlisten = \"0.0.0.0:80\"\n[limits]\nmax_conns = 1\n",
        )
        .unwrap();
        let e = load_gateway(&path).unwrap_err().to_string();
        assert_prefix(&e, &format!("{}:5:1: unknown field `max_conns`, expected one of", path.display()));

        let missing = dir.join("nope.toml");
        let e = load_gateway(&missing).unwrap_err().to_string();
        assert_prefix(&e, &format!("{}:1:1: cannot read the config file", missing.display()));
    }

    /// `gateway.toml` with `admin` as its `[admin]` table; the load's errors as `check` prints
    /// them, or the config.
    fn load_admin(name: &str, admin: &str) -> (PathBuf, Result<GatewayConfig, Vec<String>>) {
        let dir = scratch(name);
        let path = dir.join("gateway.toml");
        std::fs::write(
            &path,
            format!("[admin]\n{admin}\n\n[[listener]]\nname = \"a\"\nlisten = \"0.0.0.0:80\"\n"),
        )
        .unwrap();
        let r = load_gateway(&path).map_err(|e| e.0.iter().map(ToString::to_string).collect());
        (path, r)
    }

    #[test]
    fn admin_token_is_read_at_load_and_kept_out_of_debug() {
        // Unit tests run on parallel threads: each test uses its own variable.
        std::env::set_var("SWITCHYARD_TEST_ADMIN_TOKEN_LOAD", "s3cret-Token_value");
        let (_, g) = load_admin(
            "admin-token",
            "listen = \"0.0.0.0:9901\"\ntoken_env = \"SWITCHYARD_TEST_ADMIN_TOKEN_LOAD\"",
        );
        let g = g.unwrap();
        assert_eq!(g.admin, Some("0.0.0.0:9901".parse().unwrap()));
        let token = g.admin_token.as_ref().expect("a token");
        assert!(token.matches(b"s3cret-Token_value"));
        assert!(!token.matches(b"s3cret-Token_valuf"), "last byte differs");
        assert!(!token.matches(b"s3cret-Token_valu"), "a prefix");
        assert!(!token.matches(b"s3cret-Token_value-and-more"), "an extension");
        assert!(!token.matches(b""));
        let debug = format!("{g:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
        assert!(debug.contains("AdminToken(<redacted>)"), "{debug}");

        let (_, g) = load_admin("admin-no-token", "listen = \"127.0.0.1:9901\"");
        assert!(g.unwrap().admin_token.is_none());
    }

    #[test]
    fn admin_token_env_must_name_a_set_variable() {
        std::env::remove_var("SWITCHYARD_TEST_ADMIN_TOKEN_UNSET");
        let (p, r) = load_admin(
            "admin-unset",
            "listen = \"127.0.0.1:9901\"\ntoken_env = \"SWITCHYARD_TEST_ADMIN_TOKEN_UNSET\"",
        );
        let errs = r.unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:#?}");
        assert_eq!(
            errs[0],
            format!(
                "{}:3:13: the environment variable \"SWITCHYARD_TEST_ADMIN_TOKEN_UNSET\" named by \
                 `token_env` is not set; set it to the admin API token before starting",
                p.display()
            )
        );

        std::env::set_var("SWITCHYARD_TEST_ADMIN_TOKEN_EMPTY", "");
        let (p, r) = load_admin(
            "admin-empty",
            "listen = \"0.0.0.0:9901\"\ntoken_env = \"SWITCHYARD_TEST_ADMIN_TOKEN_EMPTY\"",
        );
        let errs = r.unwrap_err();
        assert_eq!(errs.len(), 1, "an empty token is the only error, not also the address: {errs:#?}");
        assert_prefix(
            &errs[0],
            &format!("{}:3:13: the environment variable \"SWITCHYARD_TEST_ADMIN_TOKEN_EMPTY\" named by `token_env` is empty", p.display()),
        );

        std::env::set_var("SWITCHYARD_TEST_ADMIN_TOKEN_SPACE", "two words");
        let (p, r) = load_admin(
            "admin-space",
            "listen = \"127.0.0.1:9901\"\ntoken_env = \"SWITCHYARD_TEST_ADMIN_TOKEN_SPACE\"",
        );
        assert_prefix(
            &r.unwrap_err()[0],
            &format!("{}:3:13: the environment variable \"SWITCHYARD_TEST_ADMIN_TOKEN_SPACE\" named by `token_env` holds characters other than visible ASCII", p.display()),
        );

        let (p, r) = load_admin("admin-blank", "listen = \"127.0.0.1:9901\"\ntoken_env = \"\"");
        assert_eq!(r.unwrap_err(), [format!("{}:3:13: `token_env` must not be empty", p.display())]);
    }

    #[test]
    fn admin_off_loopback_needs_a_token() {
        for listen in ["0.0.0.0:9901", "10.1.2.3:9901", "[::]:9901", "[2001:db8::1]:9901"] {
            let (p, r) = load_admin("admin-open", &format!("listen = \"{listen}\""));
            let errs = r.unwrap_err();
            assert_eq!(errs.len(), 1, "{errs:#?}");
            assert_eq!(
                errs[0],
                format!(
                    "{}:2:10: admin `listen` {} is not a loopback address: the admin API would be \
                     open to the network: set [admin] token_env or listen on 127.0.0.1",
                    p.display(),
                    listen.parse::<SocketAddr>().unwrap()
                )
            );
        }
        for listen in ["127.0.0.1:9901", "127.3.2.1:0", "[::1]:9901", "[::ffff:127.0.0.1]:9901"] {
            let (_, r) = load_admin("admin-loopback", &format!("listen = \"{listen}\""));
            assert_eq!(r.unwrap().admin, Some(listen.parse().unwrap()));
        }
    }

    // === routes: valid input ===

    #[test]
    fn spec_routes_example() {
        let set = load(&[("users.toml", ROUTES)]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(set.files, vec![PathBuf::from("routes/users.toml")]);

        let u = &set.upstreams[0];
        assert_eq!(
            *u,
            UpstreamConfig {
                name: "users".into(),
                discovery: DiscoveryConfig::Static(vec![
                    StaticEndpoint { address: "127.0.0.1:9001".into(), weight: 1 },
                    StaticEndpoint { address: "127.0.0.1:9002".into(), weight: 3 },
                ]),
                balance: Balance::RingHash,
                hash_on: Some(HashOn::Header(HeaderName::from_static("x-user-id"))),
                protocol: UpstreamProtocol::H2c,
                connect_timeout: Duration::from_secs(2),
                read_timeout: Duration::from_secs(60),
                panic_threshold: 50,
                tls: Some(UpstreamTls {
                    sni: Some("users.internal".into()),
                    ca: Some(PathBuf::from("routes/internal-ca.pem")),
                    insecure_skip_verify: false,
                }),
                health: Some(HealthCheck {
                    kind: HealthKind::Http,
                    path: "/healthz".into(),
                    host: Some("users.internal".into()),
                    expected_status: (200, 399),
                    interval: Duration::from_secs(5),
                    timeout: Duration::from_secs(1),
                    healthy_threshold: 2,
                    unhealthy_threshold: 3,
                }),
                outlier: Some(Outlier {
                    consecutive_failures: 5,
                    ejection_time: Duration::from_secs(30),
                    max_ejection_percent: 10,
                }),
                limits: UpstreamLimits::default(),
            }
        );

        let r = &set.routes[0];
        assert_eq!(r.name, "users-api");
        assert_eq!(r.origin, Origin { file: "routes/users.toml".into(), line: 37 });
        assert_eq!(
            r.hosts,
            vec![HostMatch::Exact("api.example.com".into()), HostMatch::Wildcard("example.com".into())]
        );
        assert!(matches!(&r.path, PathMatch::Prefix(p) if p == "/users"));
        assert_eq!(r.methods, vec![Method::GET, Method::POST]);
        assert_eq!(r.headers, vec![(HeaderName::from_static("x-canary"), ValueMatch::Exact("1".into()))]);
        assert_eq!(r.query, vec![("debug".to_owned(), ValueMatch::Present)]);
        assert_eq!(r.action, Action::Upstream("users".into()));
        assert!(r.strip_prefix);
        assert_eq!(r.rewrite_prefix.as_deref(), Some("/v1"));
        assert_eq!(r.host_rewrite, Some(HeaderValue::from_static("users.internal")));
        assert_eq!(
            r.request_headers,
            HeaderEdits {
                set: vec![(HeaderName::from_static("x-env"), HeaderValue::from_static("prod"))],
                remove: vec![HeaderName::from_static("x-debug")],
            }
        );
        assert_eq!(
            r.response_headers,
            HeaderEdits {
                set: vec![(HeaderName::from_static("x-served-by"), HeaderValue::from_static("switchyard"))],
                remove: vec![http::header::SERVER],
            }
        );
        assert_eq!(r.timeout, Some(Duration::from_secs(15)));
        assert_eq!(r.max_request_body_bytes, Some(1 << 20));
        assert_eq!(
            r.rate_limit,
            Some(RateLimit { requests_per_second: 100.0, burst: 200, key: RateLimitKey::ClientIp })
        );
        assert_eq!(
            r.retry,
            RetryPolicy {
                attempts: 2,
                on: vec![
                    RetryOn::ConnectFailure,
                    RetryOn::Reset,
                    RetryOn::Status5xx,
                    RetryOn::GatewayError,
                    RetryOn::Status(429),
                    RetryOn::Timeout,
                ],
                per_try_timeout: Some(Duration::from_secs(2)),
                backoff: Duration::from_millis(25),
                budget: 0.2,
                max_replay_body_bytes: 64 * 1024,
            }
        );
    }

    #[test]
    fn spec_discovery_examples() {
        let dns = upstream(
            r#"discovery = { type = "dns", name = "users.service.internal", port = 8080, record = "a", refresh = "30s", resolver = "127.0.0.1:53" }"#,
        );
        assert_eq!(
            dns.discovery,
            DiscoveryConfig::Dns {
                name: "users.service.internal".into(),
                port: 8080,
                record: DnsRecord::A,
                refresh: Duration::from_secs(30),
                resolver: Some("127.0.0.1:53".parse().unwrap()),
            }
        );
        let zk = upstream(
            r#"discovery = { type = "zookeeper", servers = "127.0.0.1:2181", path = "/services/users", format = "auto", endpoint_name = "http", session_timeout = "10s" }"#,
        );
        assert_eq!(
            zk.discovery,
            DiscoveryConfig::ZooKeeper {
                servers: "127.0.0.1:2181".into(),
                path: "/services/users".into(),
                format: ZkFormat::Auto,
                endpoint_name: Some("http".into()),
                session_timeout: Duration::from_secs(10),
            }
        );
        let consul = upstream(
            r#"discovery = { type = "consul", address = "http://127.0.0.1:8500", service = "users", tag = "v2", datacenter = "dc1", passing_only = true, token_env = "CONSUL_HTTP_TOKEN", wait = "5m" }"#,
        );
        assert_eq!(
            consul.discovery,
            DiscoveryConfig::Consul {
                address: ConsulAddress::parse("http://127.0.0.1:8500").unwrap(),
                service: "users".into(),
                tag: Some("v2".into()),
                datacenter: Some("dc1".into()),
                passing_only: true,
                token_env: Some("CONSUL_HTTP_TOKEN".into()),
                wait: Duration::from_secs(300),
                tls_ca: None,
                tls_insecure_skip_verify: false,
            }
        );
        // Defaults, and the table form of `discovery`.
        let srv =
            upstream("[upstream.discovery]\ntype = \"dns\"\nname = \"_http._tcp.users\"\nrecord = \"srv\"");
        assert!(matches!(
            srv.discovery,
            DiscoveryConfig::Dns { record: DnsRecord::Srv, refresh, resolver: None, .. } if refresh == Duration::from_secs(30)
        ));
        let consul =
            upstream(r#"discovery = { type = "consul", address = "https://c:8501", service = "s" }"#);
        assert!(matches!(
            consul.discovery,
            DiscoveryConfig::Consul { passing_only: true, wait, tag: None, .. } if wait == Duration::from_secs(300)
        ));
        let zk = upstream(r#"discovery = { type = "zookeeper", servers = "zk:2181", path = "/s" }"#);
        assert!(matches!(
            zk.discovery,
            DiscoveryConfig::ZooKeeper { format: ZkFormat::Auto, session_timeout, .. } if session_timeout == Duration::from_secs(10)
        ));
    }

    #[test]
    fn upstream_defaults() {
        let u = upstream("endpoints = [\"backend.internal:80\", \"[::1]:8080\"]");
        assert_eq!(u.balance, Balance::RoundRobin);
        assert_eq!(u.hash_on, None);
        assert_eq!(u.protocol, UpstreamProtocol::Http1);
        assert_eq!(u.connect_timeout, Duration::from_secs(1));
        assert_eq!(u.panic_threshold, 0);
        assert_eq!((u.tls, u.health, u.outlier), (None, None, None));
        assert_eq!(u.limits, UpstreamLimits::default());

        let u = upstream("endpoints = [\"a:1\"]\nbalance = \"maglev\"\n[upstream.health]\ntype = \"tcp\"\n[upstream.outlier]");
        assert_eq!(u.hash_on, Some(HashOn::ClientIp));
        let h = u.health.unwrap();
        assert_eq!((h.kind, h.path.as_str(), h.expected_status), (HealthKind::Tcp, "/healthz", (200, 399)));
        assert_eq!((h.interval, h.timeout), (Duration::from_secs(5), Duration::from_secs(1)));
        assert_eq!((h.healthy_threshold, h.unhealthy_threshold), (2, 3));
        assert_eq!(
            u.outlier,
            Some(Outlier {
                consecutive_failures: 5,
                ejection_time: Duration::from_secs(30),
                max_ejection_percent: 10
            })
        );

        let u = upstream(
            "endpoints = [\"a:1\"]\nhash_on = \"cookie:sid\"\n[upstream.health]\nexpected_status = 204",
        );
        assert_eq!(u.hash_on, Some(HashOn::Cookie("sid".into())));
        assert_eq!(u.health.unwrap().expected_status, (204, 204));
    }

    #[test]
    fn route_defaults() {
        let r = route("upstream = \"users\"");
        assert!(r.hosts.is_empty() && r.methods.is_empty() && r.headers.is_empty());
        assert!(matches!(&r.path, PathMatch::Prefix(p) if p == "/"));
        assert!(!r.strip_prefix && r.rewrite_prefix.is_none() && r.host_rewrite.is_none());
        assert!(r.request_headers.is_empty() && r.response_headers.is_empty());
        assert_eq!(
            (r.timeout, r.max_request_body_bytes, r.rate_limit),
            (Some(Duration::from_secs(60)), None, None)
        );
        assert_eq!(r.retry, RetryPolicy::default());
        assert_eq!(r.origin, Origin { file: "routes/a.toml".into(), line: 2 });

        let r = route("upstream = \"users\"\n[route.retry]\nper_try_timeout = \"500ms\"");
        assert_eq!(r.retry.attempts, 2);
        assert_eq!(r.retry.on, vec![RetryOn::ConnectFailure]);
        assert_eq!(r.retry.per_try_timeout, Some(Duration::from_millis(500)));

        let r = route(
            "upstream = \"users\"\nrate_limit = { requests_per_second = 2.5, key = \"header:X-Api-Key\" }",
        );
        assert_eq!(
            r.rate_limit,
            Some(RateLimit {
                requests_per_second: 2.5,
                burst: 3,
                key: RateLimitKey::Header(HeaderName::from_static("x-api-key")),
            })
        );
    }

    #[test]
    fn route_paths_and_actions() {
        let r = route("path = \"/exact\"\nupstream = \"users\"");
        assert!(matches!(&r.path, PathMatch::Exact(p) if p == "/exact"));
        let r = route("path_prefix = \"/\"\nupstream = \"users\"");
        assert!(matches!(&r.path, PathMatch::Prefix(p) if p == "/"));

        let r = route("path_regex = '/users/\\d+'\nupstream = \"users\"");
        let PathMatch::Regex(re) = &r.path else { panic!("not a regex") };
        assert!(re.is_match("/users/42"));
        assert!(!re.is_match("/users/42/x"), "anchored at the end");
        assert!(!re.is_match("/x/users/42"), "anchored at the start");

        let r =
            route("split = [{ upstream = \"users\", weight = 90 }, { upstream = \"users\", weight = 0 }]");
        assert_eq!(r.action, Action::Split(vec![("users".into(), 90), ("users".into(), 0)]));

        let r = route(
            "respond = { status = 200, body = \"ok\", headers = { \"Content-Type\" = \"text/plain\" } }",
        );
        assert_eq!(
            r.action,
            Action::Respond {
                status: StatusCode::OK,
                body: "ok".into(),
                headers: vec![(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain"))],
            }
        );
        let r = route("respond = { status = 404 }");
        assert_eq!(
            r.action,
            Action::Respond { status: StatusCode::NOT_FOUND, body: String::new(), headers: vec![] }
        );

        let r = route("redirect = { to = \"https://{host}{path}\", status = 308 }");
        assert_eq!(
            r.action,
            Action::Redirect { to: "https://{host}{path}".into(), status: StatusCode::PERMANENT_REDIRECT }
        );
        let r = route("redirect = { to = \"https://example.com\" }");
        assert_eq!(
            r.action,
            Action::Redirect { to: "https://example.com".into(), status: StatusCode::FOUND }
        );
    }

    #[test]
    fn split_weight_defaults_to_one() {
        let r = route("split = [{ upstream = \"users\" }, { upstream = \"users\", weight = 3 }]");
        assert_eq!(r.action, Action::Split(vec![("users".into(), 1), ("users".into(), 3)]));
    }

    #[test]
    fn routes_may_name_upstreams_of_later_files_and_keep_load_order() {
        let set = load(&[
            ("a.toml", "[[route]]\nname = \"one\"\nupstream = \"users\"\n[[route]]\nname = \"two\"\nupstream = \"users\"\n"),
            ("b.toml", USERS),
        ])
        .unwrap();
        let names: Vec<&str> = set.routes.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["one", "two"]);
        assert_eq!(set.routes[1].origin.line, 5);
        assert_eq!(set.upstreams.len(), 1);
    }

    #[test]
    fn load_routes_reads_toml_files_in_name_order() {
        let dir = scratch("routes-dir");
        std::fs::write(dir.join("20-users.toml"), USERS).unwrap();
        std::fs::write(dir.join("10-api.toml"), "[[route]]\nname = \"api\"\nupstream = \"users\"\n").unwrap();
        std::fs::write(dir.join("README.md"), "not toml").unwrap();
        std::fs::create_dir(dir.join("nested.toml")).unwrap();
        let set = load_routes(&dir, &dir).unwrap();
        assert_eq!(set.files, vec![dir.join("10-api.toml"), dir.join("20-users.toml")]);
        assert_eq!(set.routes[0].origin.file, dir.join("10-api.toml"));

        let e = load_routes(&dir.join("missing"), &dir).unwrap_err().to_string();
        assert_prefix(
            &e,
            &format!("{}:1:1: cannot read the routes directory", dir.join("missing").display()),
        );
    }

    #[test]
    fn empty_route_set_is_valid() {
        let set = load(&[("a.toml", "# nothing yet\n")]).unwrap();
        assert!(set.routes.is_empty() && set.upstreams.is_empty());
    }

    // === routes: each kind of error ===

    #[test]
    fn syntax_error() {
        assert_prefix(&error("[[route]\nname = \"a\"\n"), "routes/a.toml:1:9: ");
        assert_prefix(&error("[[route]]\nname = \"a\nupstream = \"users\"\n"), "routes/a.toml:2:");
    }

    #[test]
    fn unknown_key_in_route() {
        assert_prefix(
            &error("[[route]]\nname = \"a\"\nupstream = \"users\"\npath_prefx = \"/a\"\n"),
            "routes/a.toml:4:1: unknown field `path_prefx`, expected one of `name`, `hosts`, `path`",
        );
    }

    #[test]
    fn unknown_key_in_upstream_health() {
        assert_prefix(
            &error("[[upstream]]\nname = \"u\"\nendpoints = [\"a:1\"]\n\n[upstream.health]\ninterval = \"5s\"\n  intervall = \"5s\"\n"),
            "routes/a.toml:7:3: unknown field `intervall`, expected one of `type`, `path`",
        );
    }

    #[test]
    fn unknown_key_in_inline_tables() {
        assert_prefix(
            &error("[[upstream]]\nname = \"u\"\nendpoints = [{ address = \"a:1\", wieght = 2 }]\n"),
            "routes/a.toml:3:33: unknown field `wieght`, expected `address` or `weight`",
        );
        assert_prefix(
            &error("[[upstream]]\nname = \"u\"\ndiscovery = { type = \"dns\", name = \"x\", prot = 80 }\n"),
            "routes/a.toml:3:41: unknown field `prot`",
        );
    }

    #[test]
    fn duplicate_route_name_across_files() {
        let errs = errors(&[
            ("a.toml", "[[route]]\nname = \"api\"\nupstream = \"users\"\n"),
            ("b.toml", "# second\n[[route]]\n  name = \"api\"\nupstream = \"users\"\n"),
            ("c.toml", USERS),
        ]);
        assert_eq!(
            errs,
            ["routes/b.toml:3:10: duplicate route name \"api\" (first defined at routes/a.toml:2); route \
              names must be unique across all route files"]
        );
    }

    #[test]
    fn duplicate_upstream_name_across_files() {
        let errs = errors(&[("a.toml", USERS), ("b.toml", USERS)]);
        assert_eq!(errs.len(), 1);
        assert_prefix(
            &errs[0],
            "routes/b.toml:2:8: duplicate upstream name \"users\" (first defined at routes/a.toml:2)",
        );
    }

    #[test]
    fn dangling_upstream() {
        assert_eq!(
            error("[[route]]\nname = \"x\"\nupstream = \"y\"\n"),
            "routes/a.toml:3:12: route \"x\" names upstream \"y\", which is not defined in any file \
             under routes/; defined upstreams: \"users\""
        );
        assert_prefix(
            &error("[[route]]\nname = \"x\"\nsplit = [{ upstream = \"users\", weight = 1 }, { upstream = \"userz\", weight = 1 }]\n"),
            "routes/a.toml:3:59: route \"x\" names upstream \"userz\", which is not defined in any file under routes/",
        );
        // With many upstreams, only the closest name is suggested.
        let many: String =
            (0..20).map(|i| format!("[[upstream]]\nname = \"svc-{i}\"\nendpoints = [\"a:1\"]\n")).collect();
        let errs =
            errors(&[("a.toml", "[[route]]\nname = \"x\"\nupstream = \"svc-13x\"\n"), ("b.toml", &many)]);
        assert!(errs[0].ends_with("; did you mean \"svc-13\"?"), "{}", errs[0]);
    }

    #[test]
    fn dangling_check_skipped_when_a_file_is_broken() {
        // The broken file may be the one defining the upstream: report only its syntax error.
        let errs =
            errors(&[("a.toml", "[[route]]\nname = \"x\"\nupstream = \"y\"\n"), ("b.toml", "[[upstream]\n")]);
        assert_eq!(errs.len(), 1, "{errs:#?}");
        assert_prefix(&errs[0], "routes/b.toml:1:");
    }

    #[test]
    fn bad_regex() {
        assert_eq!(
            error("[[route]]\nname = \"a\"\nupstream = \"users\"\npath_regex = \"/users/(\\\\d+\"\n"),
            "routes/a.toml:4:14: invalid `path_regex` \"/users/(\\\\d+\": unclosed group"
        );
        // Valid only inside our anchoring group: still an error.
        assert_prefix(
            &error("[[route]]\nname = \"a\"\nupstream = \"users\"\npath_regex = '/a)|(?:/b'\n"),
            "routes/a.toml:4:14: invalid `path_regex` \"/a)|(?:/b\": unopened group",
        );
    }

    #[test]
    fn bad_duration() {
        assert_eq!(
            error("[[route]]\nname = \"a\"\nupstream = \"users\"\ntimeout = \"5\"\n"),
            "routes/a.toml:4:11: invalid duration \"5\": add a unit, e.g. \"5s\""
        );
        assert_eq!(
            error("[[route]]\nname = \"a\"\nupstream = \"users\"\ntimeout = 5\n"),
            "routes/a.toml:4:11: invalid duration \"5\": add a unit, e.g. \"5s\""
        );
        assert_prefix(
            &error("[[upstream]]\nname = \"u\"\nendpoints = [\"a:1\"]\n[upstream.health]\ninterval = \"5 sec\"\n"),
            "routes/a.toml:5:12: invalid duration \"5 sec\": unknown unit",
        );
    }

    #[test]
    fn bad_size() {
        assert_prefix(
            &error("[[route]]\nname = \"a\"\nupstream = \"users\"\nmax_request_body_bytes = \"1XB\"\n"),
            "routes/a.toml:4:26: invalid size \"1XB\": unknown unit \"XB\"",
        );
        assert_prefix(
            &error("[[route]]\nname = \"a\"\nupstream = \"users\"\nmax_request_body_bytes = -1\n"),
            "routes/a.toml:4:26: invalid size -1",
        );
    }

    #[test]
    fn endpoints_and_discovery() {
        assert_prefix(
            &error("[[upstream]]\nname = \"u\"\nendpoints = [\"a:1\"]\ndiscovery = { type = \"dns\", name = \"x\", port = 80 }\n"),
            "routes/a.toml:2:8: upstream \"u\" sets both `endpoints` and `discovery`; set exactly one",
        );
        assert_prefix(
            &error("[[upstream]]\nname = \"u\"\nbalance = \"random\"\n"),
            "routes/a.toml:2:8: upstream \"u\" sets neither `endpoints` nor `discovery`; set exactly one",
        );
    }

    #[test]
    fn missing_action() {
        assert_eq!(
            error("[[route]]\nname = \"a\"\npath = \"/a\"\n"),
            "routes/a.toml:2:8: route \"a\" has no action; set one of `upstream`, `split`, `respond` or `redirect`"
        );
    }

    #[test]
    fn two_actions() {
        assert_eq!(
            error("[[route]]\nname = \"a\"\nupstream = \"users\"\nredirect = { to = \"/b\" }\n"),
            "routes/a.toml:2:8: route \"a\" sets `upstream` and `redirect`; a route takes exactly one of \
             `upstream`, `split`, `respond` or `redirect`"
        );
    }

    #[test]
    fn rewrite_prefix_without_path_prefix() {
        assert_eq!(
            error("[[route]]\nname = \"a\"\nupstream = \"users\"\npath = \"/a\"\nrewrite_prefix = \"/v1\"\n"),
            "routes/a.toml:5:18: `rewrite_prefix` needs `path_prefix`; set path_prefix, or remove rewrite_prefix"
        );
        assert_prefix(
            &error("[[route]]\nname = \"a\"\nupstream = \"users\"\nstrip_prefix = true\n"),
            "routes/a.toml:4:16: `strip_prefix` needs `path_prefix`",
        );
    }

    #[test]
    fn hosts() {
        let r = route(
            "hosts = [\"Example.COM\", \"*.a.example.com\", \"10.0.0.1\", \"[::1]\"]\nupstream = \"users\"",
        );
        assert_eq!(
            r.hosts,
            vec![
                HostMatch::Exact("example.com".into()),
                HostMatch::Wildcard("a.example.com".into()),
                HostMatch::Exact("10.0.0.1".into()),
                HostMatch::Exact("[::1]".into()),
            ]
        );
        let bad =
            |h: &str| error(&format!("[[route]]\nname = \"a\"\nupstream = \"users\"\nhosts = [\"{h}\"]\n"));
        assert_prefix(
            &bad("api.example.com:8080"),
            "routes/a.toml:4:10: host \"api.example.com:8080\" has a port; hosts match without the port, so write \"api.example.com\"",
        );
        assert_prefix(&bad("*"), "routes/a.toml:4:10: host \"*\" is not allowed; remove `hosts`");
        assert_prefix(
            &bad("api.*.com"),
            "routes/a.toml:4:10: invalid host \"api.*.com\": a wildcard must be the whole leftmost label",
        );
        assert_prefix(&bad("*api.com"), "routes/a.toml:4:10: invalid host \"*api.com\": a wildcard");
        assert_prefix(&bad("a b"), "routes/a.toml:4:10: invalid host \"a b\"");
    }

    #[test]
    fn endpoint_addresses() {
        let bad = |e: &str| error(&format!("[[upstream]]\nname = \"u\"\nendpoints = [\"{e}\"]\n"));
        assert_prefix(
            &bad("10.0.0.1"),
            "routes/a.toml:3:14: endpoint \"10.0.0.1\" has no port; write it as \"10.0.0.1:80\"",
        );
        assert_prefix(
            &bad("::1:80"),
            "routes/a.toml:3:14: invalid endpoint \"::1:80\": write IPv6 addresses in brackets",
        );
        assert_prefix(&bad("a:99999"), "routes/a.toml:3:14: invalid port \"99999\" in endpoint \"a:99999\"");
        assert_prefix(&bad("a:0"), "routes/a.toml:3:14: invalid port \"0\"");
        assert_prefix(
            &error("[[upstream]]\nname = \"u\"\nendpoints = [{ address = \"a:1\", weight = 0 }]\n"),
            "routes/a.toml:3:42: `weight` must be at least 1, got 0",
        );
        assert_prefix(
            &error("[[upstream]]\nname = \"u\"\nendpoints = []\n"),
            "routes/a.toml:3:13: `endpoints` is empty",
        );
    }

    #[test]
    fn discovery_keys_per_type() {
        assert_prefix(
            &error("[[upstream]]\nname = \"u\"\ndiscovery = { type = \"dns\", name = \"x\", port = 80, service = \"s\" }\n"),
            "routes/a.toml:3:62: `service` is not a dns discovery key; dns takes: name, port, record, refresh, resolver",
        );
        assert_prefix(
            &error("[[upstream]]\nname = \"u\"\ndiscovery = { type = \"dns\", name = \"x\" }\n"),
            "routes/a.toml:3:22: dns discovery with record = \"a\" needs `port`",
        );
        assert_prefix(
            &error("[[upstream]]\nname = \"u\"\ndiscovery = { type = \"consul\", address = \"127.0.0.1:8500\", service = \"s\" }\n"),
            "routes/a.toml:3:42: consul `address` \"127.0.0.1:8500\" must be an http:// or https:// URL",
        );
        assert_prefix(
            &error(
                "[[upstream]]\nname = \"u\"\ndiscovery = { type = \"zookeeper\", servers = \"zk:2181\" }\n",
            ),
            "routes/a.toml:3:22: zookeeper discovery needs `path`",
        );
        assert_prefix(
            &error("[[upstream]]\nname = \"u\"\ndiscovery = { type = \"zookeeper\", servers = \"zk:2181\", path = \"s\" }\n"),
            "routes/a.toml:3:63: zookeeper `path` \"s\" must start with \"/\"",
        );
        assert_prefix(
            &error("[[upstream]]\nname = \"u\"\ndiscovery = { type = \"zookeeper\", servers = \"zk1:2181,zk2\", path = \"/s\" }\n"),
            "routes/a.toml:3:45: invalid zookeeper `servers` \"zk1:2181,zk2\": endpoint \"zk2\" has no port",
        );
        assert_prefix(
            &error("[[upstream]]\nname = \"u\"\ndiscovery = { type = \"static\" }\n"),
            "routes/a.toml:3:22: unknown discovery type \"static\"; expected one of: dns, zookeeper, consul; a static list",
        );
    }

    #[test]
    fn consul_addresses() {
        let ok = |a: &str| ConsulAddress::parse(a).map(|c| (c.is_https(), c.to_string()));
        assert_eq!(ok("http://127.0.0.1:8500"), Ok((false, "http://127.0.0.1:8500".into())));
        assert_eq!(ok("https://consul.internal:8501/"), Ok((true, "https://consul.internal:8501".into())));
        assert_eq!(ok("HTTPS://[::1]:8501"), Ok((true, "https://[::1]:8501".into())));
        let bad = |a: &str| {
            error(&format!(
                "[[upstream]]\nname = \"u\"\ndiscovery = {{ type = \"consul\", address = \"{a}\", service = \"s\" }}\n"
            ))
        };
        assert_prefix(
            &bad("ftp://127.0.0.1:8500"),
            "routes/a.toml:3:42: consul `address` \"ftp://127.0.0.1:8500\" must be an http:// or https:// URL",
        );
        assert_prefix(
            &bad("https://c"),
            "routes/a.toml:3:42: consul `address` \"https://c\" has no port; write it as \"https://c:8501\"",
        );
        assert_prefix(
            &bad("http://:8500"),
            "routes/a.toml:3:42: consul `address` \"http://:8500\" has no host",
        );
        assert_prefix(
            &bad("http://c:8500/consul"),
            "routes/a.toml:3:42: consul `address` \"http://c:8500/consul\" must be only a scheme, a host and a port",
        );
        assert_prefix(
            &bad("http://user:pw@c:8500"),
            "routes/a.toml:3:42: consul `address` \"http://user:pw@c:8500\" must be only a scheme",
        );
        assert_prefix(&bad("http://c:0"), "routes/a.toml:3:42: invalid port \"0\" in consul `address`");
        assert_prefix(
            &bad("http://::1:8500"),
            "routes/a.toml:3:42: invalid consul `address` \"http://::1:8500\": write IPv6",
        );
        assert_prefix(
            &bad("http://a b:8500"),
            "routes/a.toml:3:42: invalid consul `address` \"http://a b:8500\": \"a b\"",
        );
    }

    #[test]
    fn consul_tls_keys() {
        let consul = upstream(
            "discovery = { type = \"consul\", address = \"https://c:8501\", service = \"s\", tls_ca = \"ca.pem\", tls_insecure_skip_verify = true }\n\
             [upstream.tls]\nca = \"ca.pem\"",
        );
        let DiscoveryConfig::Consul { tls_ca, tls_insecure_skip_verify, .. } = &consul.discovery else {
            panic!("{:?}", consul.discovery)
        };
        // A relative tls_ca resolves exactly as [upstream.tls] ca does.
        assert_eq!(tls_ca.as_ref(), consul.tls.as_ref().and_then(|t| t.ca.as_ref()));
        assert_eq!(tls_ca.as_deref(), Some(Path::new("routes/ca.pem")));
        assert!(*tls_insecure_skip_verify);
        // TLS keys on an http:// address are refused; tls_insecure_skip_verify = false is harmless.
        let errs = errors(&[(
            "a.toml",
            "[[upstream]]\nname = \"u\"\ndiscovery = { type = \"consul\", address = \"http://c:8500\", service = \"s\", tls_ca = \"ca.pem\", tls_insecure_skip_verify = true }\n",
        )]);
        assert_eq!(
            errs,
            [
                "routes/a.toml:3:83: `tls_ca` applies to an https:// consul `address`; this one is http://",
                "routes/a.toml:3:120: `tls_insecure_skip_verify` applies to an https:// consul `address`; this one is http://",
            ]
        );
        let plain = upstream(
            "discovery = { type = \"consul\", address = \"http://c:8500\", service = \"s\", tls_insecure_skip_verify = false }",
        );
        assert!(matches!(
            plain.discovery,
            DiscoveryConfig::Consul { tls_ca: None, tls_insecure_skip_verify: false, .. }
        ));
        // The keys belong to consul only.
        assert_prefix(
            &error("[[upstream]]\nname = \"u\"\ndiscovery = { type = \"dns\", name = \"x\", port = 80, tls_ca = \"ca.pem\" }\n"),
            "routes/a.toml:3:61: `tls_ca` is not a dns discovery key; dns takes: name, port, record, refresh, resolver",
        );
    }

    #[test]
    fn value_errors() {
        let bad = |body: &str| error(&format!("[[route]]\nname = \"a\"\nupstream = \"users\"\n{body}\n"));
        assert_prefix(&bad("methods = [\"G ET\"]"), "routes/a.toml:4:12: invalid method \"G ET\"");
        assert_prefix(
            &bad("headers = { \"x y\" = \"1\" }"),
            "routes/a.toml:4:13: invalid header name \"x y\"",
        );
        assert_prefix(&bad("path = \"a\""), "routes/a.toml:4:8: `path` \"a\" must start with \"/\"");
        assert_prefix(
            &bad("path = \"/a\"\npath_prefix = \"/b\""),
            "routes/a.toml:2:8: route \"a\" sets `path` and `path_prefix`",
        );
        assert_prefix(
            &bad("rate_limit = { requests_per_second = 0 }"),
            "routes/a.toml:4:38: `requests_per_second` must be greater than zero",
        );
        assert_prefix(
            &bad("rate_limit = { requests_per_second = 1, key = \"ip\" }"),
            "routes/a.toml:4:47: unknown rate_limit `key` \"ip\"",
        );
        assert_prefix(
            &bad("[route.retry]\non = [\"status:600\"]"),
            "routes/a.toml:5:7: invalid retry condition \"status:600\"",
        );
        assert_prefix(
            &bad("[route.retry]\non = [\"5xx\", \"502\"]"),
            "routes/a.toml:5:14: unknown retry condition \"502\"",
        );
        assert_prefix(
            &bad("[route.retry]\nbudget = 1.5"),
            "routes/a.toml:5:10: `budget` must be between 0 and 1, got 1.5",
        );
        let bad_action = |body: &str| error(&format!("[[route]]\nname = \"a\"\n{body}\n"));
        assert_prefix(
            &bad_action("redirect = { to = \"/\", status = 300 }"),
            "routes/a.toml:3:33: invalid redirect status 300",
        );
        assert_prefix(&bad_action("respond = { status = 1000 }"), "routes/a.toml:3:22: invalid status 1000");
        assert_prefix(
            &bad_action("split = [{ upstream = \"users\", weight = 0 }]"),
            "routes/a.toml:3:9: `split` weights add up to 0",
        );
        let bad_up =
            |body: &str| error(&format!("[[upstream]]\nname = \"u\"\nendpoints = [\"a:1\"]\n{body}\n"));
        assert_prefix(
            &bad_up("balance = \"fastest\""),
            "routes/a.toml:4:11: unknown `balance` \"fastest\"; expected one of: round_robin,",
        );
        assert_prefix(&bad_up("hash_on = \"ip\""), "routes/a.toml:4:11: unknown `hash_on` \"ip\"");
        assert_prefix(
            &bad_up("panic_threshold = 101"),
            "routes/a.toml:4:19: `panic_threshold` must be between 0 and 100, got 101",
        );
        assert_prefix(
            &bad_up("[upstream.health]\nexpected_status = \"399-200\""),
            "routes/a.toml:5:19: invalid `expected_status` \"399-200\"",
        );
        assert_prefix(
            &bad_up("[upstream.health]\nhealthy_threshold = 0"),
            "routes/a.toml:5:21: `healthy_threshold` must be at least 1, got 0",
        );
        assert_prefix(
            &bad_up("[upstream.health]\ntype = \"tcp\"\npath = \"/x\""),
            "routes/a.toml:6:8: `path` applies to http health checks only",
        );
    }

    #[test]
    fn columns_count_characters() {
        // "é" is two bytes; the column of the value after it counts it once.
        assert_prefix(
            &error("[[route]]\nname = \"a\"\nupstream = \"users\"\nheaders = { \"é\" = \"1\" }\n"),
            "routes/a.toml:4:13: invalid header name \"é\"",
        );
        assert_prefix(
            &error(
                "[[route]]\nname = \"a\"\nupstream = \"users\"\nquery = { \"é\" = \"1\" }\ntimeout = \"1\"\n",
            ),
            "routes/a.toml:5:11: invalid duration",
        );
    }

    #[test]
    fn all_errors_are_collected() {
        let a = "[[route]]\nname = \"one\"\nupstream = \"nope\"\ntimeout = \"5\"\n\n\
                 [[route]]\nname = \"two\"\npath_regex = \"(\"\nupstream = \"users\"\n";
        let b = "[[route]]\nname = \"one\"\nrespond = { status = 200 }\nredirect = { to = \"/\" }\n";
        let c = "[[upstream]]\nname = \"users\"\nendpoints = [\"a:1\"]\nconnect_timeout = \"1x\"\n";
        let d = "[[route]\n";
        let errs = errors(&[("a.toml", a), ("b.toml", b), ("c.toml", c), ("d.toml", d)]);
        let heads: Vec<&str> = errs.iter().map(|e| e.split(": ").next().unwrap()).collect();
        assert_eq!(
            heads,
            [
                "routes/a.toml:4:11",
                "routes/a.toml:8:14",
                "routes/b.toml:2:8",
                "routes/b.toml:2:8",
                "routes/c.toml:4:19",
                "routes/d.toml:1:9",
            ],
            "{errs:#?}"
        );
        assert_prefix(&errs[2], "routes/b.toml:2:8: route \"one\" sets `respond` and `redirect`");
        assert_prefix(&errs[3], "routes/b.toml:2:8: duplicate route name \"one\"");
        // The dangling "nope" is not reported: d.toml is broken and might define it. Without
        // d.toml it is.
        let errs = errors(&[("a.toml", a), ("b.toml", b), ("c.toml", c)]);
        assert_eq!(errs.len(), 6, "{errs:#?}");
        assert_prefix(&errs[0], "routes/a.toml:3:12: route \"one\" names upstream \"nope\"");
    }

    // === scalars ===

    #[test]
    fn durations() {
        let ok = |s: &str| parse_duration(s).unwrap();
        assert_eq!(ok("250ms"), Duration::from_millis(250));
        assert_eq!(ok("5s"), Duration::from_secs(5));
        assert_eq!(ok("1m"), Duration::from_secs(60));
        assert_eq!(ok("1h"), Duration::from_secs(3600));
        assert_eq!(ok("1m30s"), Duration::from_secs(90));
        assert_eq!(ok("0s"), Duration::ZERO);
        assert_eq!(parse_duration("5").unwrap_err(), "invalid duration \"5\": add a unit, e.g. \"5s\"");
        assert!(parse_duration("").unwrap_err().contains("write a number with a unit"));
        assert!(parse_duration("1.5s").unwrap_err().contains("\"1500ms\""));
        assert!(parse_duration("5 sec").unwrap_err().contains("unknown unit \"sec\""));
        assert!(parse_duration("s").unwrap_err().contains("expected a number"));
        assert!(parse_duration("99999999999999999999s").unwrap_err().contains("too large"));
    }

    #[test]
    fn sizes() {
        let ok = |s: &str| parse_size(s).unwrap();
        assert_eq!(ok("512B"), 512);
        assert_eq!(ok("1024"), 1024);
        assert_eq!(ok("64KiB"), 64 * 1024);
        assert_eq!(ok("10MiB"), 10 << 20);
        assert_eq!(ok("1GiB"), 1 << 30);
        assert_eq!(ok("1KB"), 1000);
        assert_eq!(ok("2MB"), 2_000_000);
        assert_eq!(ok("1GB"), 1_000_000_000);
        assert_eq!(ok("64 KiB"), 64 * 1024);
        assert!(parse_size("1.5MiB").unwrap_err().contains("\"1536KiB\""));
        assert!(parse_size("1kb").unwrap_err().contains("unknown unit \"kb\""));
        assert!(parse_size("KiB").unwrap_err().contains("expected a number of bytes"));
        assert!(parse_size("99999999999GiB").unwrap_err().contains("too large"));
    }
}
