//! The canonical request: the one form of a request that routes match, rewrites apply to, the
//! access log records and the upstream receives (the README's "Security model" has the
//! user-facing rules).
//!
//! A deny route on `/admin` is only as good as the gateway's idea of which requests are
//! `/admin`. Clients (and attackers) can spell the same resource many ways: `/x/../admin`,
//! `//admin`, `/%61dmin`, `/admin/.`. An upstream that normalises paths itself would then serve
//! `/admin` to a request the gateway routed elsewhere. So the listener puts every request in one
//! form before anything looks at it, as Envoy does (`normalize_path`, `merge_slashes`,
//! `path_with_escaped_slashes_action`) and HAProxy's `normalize-uri` does:
//!
//! 1. **Path**: `%XX` escapes of unreserved characters (RFC 3986 section 2.3) are decoded, other
//!    escapes get upper-case hex digits (section 6.2.2.1), dot-segments are removed (section
//!    5.2.4) and runs of `/` become one. A path that climbs above `/`, holds a raw `\` or a
//!    malformed escape is refused; `%2F` and `%5C` are refused, kept or decoded first as
//!    `escaped_slashes` says. The query is never touched.
//! 2. **Target and host**: an absolute-form target supplies the host (RFC 9112 section 3.2.2);
//!    HTTP/1.1 needs exactly one valid `Host` (section 3.2); in HTTP/2 `:authority` is the host
//!    and a `host` header must agree with it. `CONNECT` is refused: this is not a forward proxy.
//! 3. **Hop-by-hop headers** go on arrival, before the gateway adds any header, so a name listed
//!    in `Connection` can never remove one the gateway set (`x-forwarded-*`, `host_rewrite`,
//!    `request_headers.set`, ...). Client-sent `x-forwarded-host` and `x-forwarded-proto` go too:
//!    the gateway always sets its own.
//!
//! Everything here is a pure function of the request, so it is fuzzed (`fuzz/`) and its
//! properties (idempotence, no dot-segments or `//` left, every spelling routing alike) are
//! checked with proptest in the unit tests.

use std::borrow::Cow;

use http::header::{self, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::{Method, Request, Version};

use crate::config::{EscapedSlashes, HttpConfig};
use crate::proxy::headers::{
    strip_present, upgrade_requested, Present, Scan, X_FORWARDED_HOST, X_FORWARDED_PROTO,
};

/// Why a request cannot be put in canonical form. Every one is answered 400 `bad_request`,
/// except [`Rejection::Connect`] (405 `method_not_allowed`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// `CONNECT`: the gateway is not a forward proxy.
    #[error("CONNECT is not supported: this is a reverse proxy")]
    Connect,
    /// A `..` segment would climb above `/`.
    #[error("the path climbs above the root")]
    AboveRoot,
    /// A raw `\` in the path (a separator to some servers).
    #[error("the path holds a backslash")]
    Backslash,
    /// `%2F` or `%5C` with `escaped_slashes = "reject"`.
    #[error("the path holds an encoded slash or backslash")]
    EscapedSlash,
    /// `%` not followed by two hex digits.
    #[error("the path holds a malformed percent-escape")]
    BadEscape,
    /// A target that is neither origin-form, absolute-form (http/https) nor `*` for OPTIONS.
    #[error("unsupported request target")]
    BadTarget,
    /// HTTP/1.1 without a Host header (or HTTP/2 with neither `:authority` nor `host`).
    #[error("the request has no Host")]
    MissingHost,
    /// More than one Host header.
    #[error("the request has more than one Host header")]
    MultipleHosts,
    /// A Host that is not `host[:port]`.
    #[error("the Host is not a valid host[:port]")]
    InvalidHost,
    /// HTTP/2 `:authority` and `host` disagree.
    #[error("the :authority and Host disagree")]
    AuthorityMismatch,
}

/// What canonicalisation learned about a request, for the layers below.
#[derive(Clone, Debug, Default)]
pub struct Canonical {
    /// The routed host (`host[:port]` as sent), `None` for an HTTP/1.0 request without one.
    pub host: Option<HeaderValue>,
    /// The `Upgrade` value, when the client asked for an HTTP/1.1 upgrade (`Connection:
    /// upgrade`): hop-by-hop headers are gone, so the forwarder puts these two back.
    pub upgrade: Option<HeaderValue>,
}

/// [`request_with`], finding the special headers itself.
#[cfg(test)]
pub(crate) fn request<B>(req: &mut Request<B>, cfg: &HttpConfig) -> Result<Canonical, Rejection> {
    let scan = Present::scan(req.headers());
    request_with(req, cfg, &scan)
}

/// Put `req` in canonical form in place (path, target, Host, hop-by-hop headers), or say why
/// it cannot be. `scan` says which special headers `req` holds, and its `host` field
/// ([`Present::scan`] of its headers).
pub(crate) fn request_with<B>(
    req: &mut Request<B>,
    cfg: &HttpConfig,
    scan: &Scan,
) -> Result<Canonical, Rejection> {
    if req.method() == Method::CONNECT {
        return Err(Rejection::Connect);
    }
    let present = scan.present;
    let (host, set_host) = host(req, scan)?;

    // The path, and an origin-form target: the host now lives in the Host header alone.
    let target = {
        let uri = req.uri();
        let raw = uri.path();
        let path = if raw == "*" && uri.authority().is_none() {
            if req.method() != Method::OPTIONS {
                return Err(Rejection::BadTarget);
            }
            Cow::Borrowed(raw)
        } else {
            self::path(raw, cfg)?
        };
        if matches!(path, Cow::Owned(_)) || uri.scheme().is_some() || uri.authority().is_some() {
            let pq = match uri.query() {
                Some(q) => format!("{path}?{q}"),
                None => path.into_owned(),
            };
            Some(PathAndQuery::try_from(pq).map_err(|_| Rejection::BadTarget)?)
        } else {
            None
        }
    };
    if let Some(pq) = target {
        *req.uri_mut() = Uri::from(pq);
    }

    // An upgrade needs an `upgrade` field (and `connection: upgrade`): most requests have none.
    let upgrade = if req_is_http1(req) && present.has(Present::UPGRADE) {
        upgrade_requested(req.headers())
    } else {
        None
    };
    let headers = req.headers_mut();
    let had_connection = strip_present(headers, present, None);
    // Most requests carry neither (`present` is from one pass over the names).
    if present.has(Present::X_FORWARDED_HOST) {
        headers.remove(&X_FORWARDED_HOST);
    }
    if present.has(Present::X_FORWARDED_PROTO) {
        headers.remove(&X_FORWARDED_PROTO);
    }
    // The Host header holds the routed host: put it there when the target or `:authority`
    // supplied it, or when `Connection: host` just removed it.
    if let Some(h) = &host {
        if set_host || (had_connection && !headers.contains_key(header::HOST)) {
            headers.insert(header::HOST, h.clone());
        }
    }
    Ok(Canonical { host, upgrade })
}

fn req_is_http1<B>(req: &Request<B>) -> bool {
    matches!(req.version(), Version::HTTP_11 | Version::HTTP_10 | Version::HTTP_09)
}

/// The request's host by RFC 9112 section 3.2 (HTTP/1) or RFC 9113 section 8.3.1 (HTTP/2, and
/// HTTP/3 alike): validated, as a header value, and whether the Host header must be set to it
/// (the target or `:authority` supplied it).
fn host<B>(req: &Request<B>, scan: &Scan) -> Result<(Option<HeaderValue>, bool), Rejection> {
    let first = scan.host.as_ref();
    if scan.more_hosts {
        return Err(Rejection::MultipleHosts);
    }
    let uri = req.uri();
    if let Some(scheme) = uri.scheme_str() {
        if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
            return Err(Rejection::BadTarget);
        }
    }
    let authority = uri.authority().map(|a| a.as_str());
    let chosen = if req_is_http1(req) {
        // An HTTP/1.1 request needs its one valid Host even when the target is absolute; the
        // target's authority then replaces it.
        match (first, authority) {
            (None, _) if req.version() == Version::HTTP_11 => return Err(Rejection::MissingHost),
            (Some(h), Some(_)) => valid_host(h.as_bytes())?,
            _ => {}
        }
        match authority {
            Some(a) => Some(a.as_bytes()),
            None => first.map(HeaderValue::as_bytes),
        }
    } else {
        match (authority, first) {
            (Some(a), Some(h)) if !a.as_bytes().eq_ignore_ascii_case(h.as_bytes()) => {
                return Err(Rejection::AuthorityMismatch)
            }
            (Some(a), _) => Some(a.as_bytes()),
            (None, Some(h)) => Some(h.as_bytes()),
            (None, None) => return Err(Rejection::MissingHost),
        }
    };
    match chosen {
        None => Ok((None, false)),
        Some(h) => {
            valid_host(h)?;
            // Reuse the client's header value when it is the one chosen (no copy, and the
            // Host header needs no rewriting).
            match first {
                Some(v) if v.as_bytes() == h => Ok((Some(v.clone()), false)),
                _ => HeaderValue::from_bytes(h).map(|v| (Some(v), true)).map_err(|_| Rejection::InvalidHost),
            }
        }
    }
}

/// Whether `h` is `host[:port]`: a DNS name (letters, digits, `-`, `_`, `.`), an IPv4
/// address, or an IPv6 address in brackets, with an optional port of 1 to 5 digits up to 65535.
/// Stricter than RFC 3986's reg-name on purpose: no percent-escapes, commas, spaces or userinfo,
/// which are how two hosts or a hidden one get smuggled into one header.
pub fn valid_host(h: &[u8]) -> Result<(), Rejection> {
    let bad = Err(Rejection::InvalidHost);
    let (name, port) = if h.first() == Some(&b'[') {
        let Some(end) = h.iter().position(|&b| b == b']') else { return bad };
        let inner = &h[1..end];
        if inner.is_empty() || !inner.iter().all(|b| b.is_ascii_hexdigit() || *b == b':' || *b == b'.') {
            return bad;
        }
        if std::str::from_utf8(inner).ok().and_then(|s| s.parse::<std::net::Ipv6Addr>().ok()).is_none() {
            return bad;
        }
        match &h[end + 1..] {
            [] => (&h[..=end], None),
            [b':', port @ ..] => (&h[..=end], Some(port)),
            _ => return bad,
        }
    } else {
        match h.iter().rposition(|&b| b == b':') {
            Some(i) => (&h[..i], Some(&h[i + 1..])),
            None => (h, None),
        }
    };
    if name.is_empty() || name.len() > 255 {
        return bad;
    }
    if name[0] != b'[' && !name.iter().all(|&b| HOST_CHAR[usize::from(b)]) {
        return bad;
    }
    if let Some(p) = port {
        if p.is_empty() || p.len() > 5 {
            return bad;
        }
        let mut n: u32 = 0;
        for &d in p {
            if !d.is_ascii_digit() {
                return bad;
            }
            n = n * 10 + u32::from(d - b'0');
        }
        if n > u32::from(u16::MAX) {
            return bad;
        }
    }
    Ok(())
}

/// The bytes of a host name: letters, digits, `-`, `_`, `.`.
static HOST_CHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.';
        b += 1;
    }
    t
};

/// Whether `b` is an RFC 3986 unreserved character.
fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Whether `path` may need work: an escape, a backslash, or a `/` followed by `/` or `.`.
/// Most paths have none, and are returned as they are without allocating.
fn needs_work(path: &[u8]) -> bool {
    let mut prev = 0u8;
    for &b in path {
        if b == b'%' || b == b'\\' || (prev == b'/' && (b == b'/' || b == b'.')) {
            return true;
        }
        prev = b;
    }
    false
}

/// The canonical form of an origin-form `path` (no query) under `cfg`.
pub fn path<'a>(path: &'a str, cfg: &HttpConfig) -> Result<Cow<'a, str>, Rejection> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(Rejection::BadTarget);
    }
    if !needs_work(bytes) {
        return Ok(Cow::Borrowed(path));
    }
    if bytes.contains(&b'\\') {
        return Err(Rejection::Backslash);
    }

    // Pass 1: escapes. Unreserved ones are decoded (only when normalising), the rest get
    // upper-case hex; `%2F`/`%5C` follow `escaped_slashes`.
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'%' {
            decoded.push(b);
            i += 1;
            continue;
        }
        let (Some(hi), Some(lo)) =
            (bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex))
        else {
            return Err(Rejection::BadEscape);
        };
        let c = hi << 4 | lo;
        i += 3;
        match c {
            b'/' | b'\\' => match cfg.escaped_slashes {
                EscapedSlashes::Reject => return Err(Rejection::EscapedSlash),
                // A decoded `\` is a raw one, and refused like one.
                EscapedSlashes::Decode if c == b'\\' => return Err(Rejection::Backslash),
                EscapedSlashes::Decode => decoded.push(b'/'),
                EscapedSlashes::Keep => push_escape(&mut decoded, c),
            },
            c if cfg.normalize_path && unreserved(c) => decoded.push(c),
            c => push_escape(&mut decoded, c),
        }
    }

    // Pass 2: segments. `.` and `..` (RFC 3986 section 5.2.4) when normalising, empty ones
    // (`//`) when merging.
    let mut out: Vec<u8> = Vec::with_capacity(decoded.len());
    let mut segments = decoded[1..].split(|&b| b == b'/').peekable();
    while let Some(seg) = segments.next() {
        let last = segments.peek().is_none();
        match seg {
            b"." if cfg.normalize_path => {
                if last {
                    out.push(b'/');
                }
            }
            b".." if cfg.normalize_path => {
                // Drop the last segment written (and its `/`); above the root is refused.
                match out.iter().rposition(|&b| b == b'/') {
                    Some(at) => out.truncate(at),
                    None => return Err(Rejection::AboveRoot),
                }
                if last {
                    out.push(b'/');
                }
            }
            b"" if cfg.merge_slashes && !last => {}
            b"" if cfg.merge_slashes => {
                // A trailing slash is kept (once).
                if out.last() != Some(&b'/') {
                    out.push(b'/');
                }
            }
            seg => {
                out.push(b'/');
                out.extend_from_slice(seg);
            }
        }
    }
    if out.is_empty() {
        out.push(b'/');
    }
    // Only ASCII bytes were added or removed, so the result is as valid UTF-8 as the input.
    let s = String::from_utf8(out).map_err(|_| Rejection::BadTarget)?;
    if s == path {
        Ok(Cow::Borrowed(path))
    } else {
        Ok(Cow::Owned(s))
    }
}

fn push_escape(out: &mut Vec<u8>, c: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.extend_from_slice(&[b'%', HEX[usize::from(c >> 4)], HEX[usize::from(c & 0xf)]]);
}

#[cfg(test)]
mod tests;
