//! Header rules (README, "Security model"): hop-by-hop removal (RFC 9110 §7.6.1), forwarded headers, the
//! request id and the `traceparent` (`trace_context`).

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::ext::HeaderLines;

use crate::trace_context::{hex16, never_indexed, TRACEPARENT};

/// `x-request-id`.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `x-forwarded-for`.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `x-forwarded-proto`.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `x-forwarded-host`.
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `x-forwarded-client-cert`.
pub static X_FORWARDED_CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Whether `req` asks for an HTTP/1.1 upgrade (`Connection: upgrade` plus `Upgrade`).
pub fn upgrade_requested(headers: &HeaderMap) -> Option<HeaderValue> {
    let up = headers.get(header::UPGRADE)?;
    connection_tokens(headers).any(|t| t.eq_ignore_ascii_case("upgrade")).then(|| up.clone())
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Remove hop-by-hop headers: `connection` and every header it names, `keep-alive`,
/// `proxy-connection`, `te` (except `te: trailers`, which gRPC needs), `trailer`,
/// `transfer-encoding` and `upgrade`. With `upgrade`, the headers an upgrade needs are put back.
/// Returns whether a `connection` header was there (so other headers may have gone with it).
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: Option<HeaderValue>) -> bool {
    strip_present(headers, Present::of(headers), upgrade)
}

/// [`strip_hop_by_hop`] with the names `headers` holds already known.
pub(crate) fn strip_present(headers: &mut HeaderMap, present: Present, upgrade: Option<HeaderValue>) -> bool {
    // Most messages carry no hop-by-hop header, or only `connection`.
    let present = (present.0 & Present::HOP_BY_HOP.0) as u8;
    if present == 0 && upgrade.is_none() {
        return false;
    }
    if present & CONNECTION != 0 {
        // Names the `connection` header lists, beyond the ones removed below anyway. Most
        // messages list only those (`keep-alive`, `close`): then nothing is collected.
        let listed = |t: &&str| {
            !["close", "keep-alive", "upgrade", "te", "trailer", "transfer-encoding", "proxy-connection"]
                .iter()
                .any(|k| t.eq_ignore_ascii_case(k))
        };
        // The usual value is one token: `keep-alive` or `close`; then there is nothing to parse.
        let plain = headers.get_all(header::CONNECTION).iter().all(|v| {
            let v = v.as_bytes();
            v.eq_ignore_ascii_case(b"keep-alive") || v.eq_ignore_ascii_case(b"close")
        });
        if !plain && connection_tokens(headers).any(|t| listed(&t)) {
            let named: Vec<HeaderName> = connection_tokens(headers)
                .filter(listed)
                .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
                .collect();
            for n in named {
                headers.remove(&n);
            }
        }
        headers.remove(header::CONNECTION);
    }
    if present & KEEP_ALIVE_BIT != 0 {
        headers.remove(&KEEP_ALIVE);
    }
    if present & PROXY_CONNECTION_BIT != 0 {
        headers.remove(&PROXY_CONNECTION);
    }
    if present & TRAILER != 0 {
        headers.remove(header::TRAILER);
    }
    if present & TRANSFER_ENCODING != 0 {
        headers.remove(header::TRANSFER_ENCODING);
    }
    if present & UPGRADE != 0 {
        headers.remove(header::UPGRADE);
    }
    if present & TE != 0 {
        let trailers = headers
            .get_all(header::TE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("trailers"));
        headers.remove(header::TE);
        if trailers {
            headers.insert(header::TE, HeaderValue::from_static("trailers"));
        }
    }
    if let Some(up) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, up);
    }
    present & CONNECTION != 0
}

const CONNECTION: u8 = 1;
const TE: u8 = 2;
const TRAILER: u8 = 4;
const TRANSFER_ENCODING: u8 = 8;
const UPGRADE: u8 = 16;
const KEEP_ALIVE_BIT: u8 = 32;
const PROXY_CONNECTION_BIT: u8 = 64;

/// Which of the headers the gateway treats specially a map holds: found in one pass over its
/// names, so that a header it lacks costs no lookup (each hashes the name byte by byte).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Present(u16);

impl Present {
    /// A hop-by-hop header (`connection`, `te`, `trailer`, `transfer-encoding`, `upgrade`,
    /// `keep-alive` or `proxy-connection`).
    pub(crate) const HOP_BY_HOP: Present = Present(0x7f);
    /// `upgrade`.
    pub(crate) const UPGRADE: Present = Present(UPGRADE as u16);
    /// `x-forwarded-host`.
    pub(crate) const X_FORWARDED_HOST: Present = Present(1 << 7);
    /// `x-forwarded-proto`.
    pub(crate) const X_FORWARDED_PROTO: Present = Present(1 << 8);
    /// `x-forwarded-client-cert`.
    pub(crate) const X_FORWARDED_CLIENT_CERT: Present = Present(1 << 9);
    /// `x-request-id`.
    pub(crate) const X_REQUEST_ID: Present = Present(1 << 10);
    /// `traceparent`.
    pub(crate) const TRACEPARENT: Present = Present(1 << 11);
    /// `tracestate`.
    pub(crate) const TRACESTATE: Present = Present(1 << 12);
    /// `x-forwarded-for`.
    pub(crate) const X_FORWARDED_FOR: Present = Present(1 << 13);
    /// `host`.
    pub(crate) const HOST: Present = Present(1 << 14);

    /// The special headers `headers` holds.
    pub(crate) fn of(headers: &HeaderMap) -> Present {
        Present(headers.keys().fold(0, |acc, n| acc | bit(n)))
    }

    /// [`Present::of`] a request's headers, with its `host` field, found in the same pass
    /// (a lookup of it hashes its name).
    pub(crate) fn scan(headers: &HeaderMap) -> Scan {
        let mut scan = Scan::default();
        for (name, value) in headers {
            let b = bit(name);
            scan.present.0 |= b;
            if b == Present::HOST.0 {
                match scan.host {
                    None => scan.host = Some(value.clone()),
                    Some(_) => scan.more_hosts = true,
                }
            }
        }
        scan
    }

    /// Whether any of `which` is there.
    pub(crate) fn has(self, which: Present) -> bool {
        self.0 & which.0 != 0
    }
}

/// What one pass over a request's headers found ([`Present::scan`]).
#[derive(Clone, Debug, Default)]
pub(crate) struct Scan {
    /// The special headers there.
    pub(crate) present: Present,
    /// The first `host` field.
    pub(crate) host: Option<HeaderValue>,
    /// Whether there is more than one `host` field.
    pub(crate) more_hosts: bool,
}

/// The [`Present`] bit of `name` (0 for any other header). Names are lower case; a match on
/// the string compares its length first, so most names cost one comparison.
fn bit(name: &HeaderName) -> u16 {
    match name.as_str() {
        "connection" => CONNECTION.into(),
        "te" => TE.into(),
        "trailer" => TRAILER.into(),
        "transfer-encoding" => TRANSFER_ENCODING.into(),
        "upgrade" => UPGRADE.into(),
        "keep-alive" => KEEP_ALIVE_BIT.into(),
        "proxy-connection" => PROXY_CONNECTION_BIT.into(),
        "x-forwarded-host" => Present::X_FORWARDED_HOST.0,
        "x-forwarded-proto" => Present::X_FORWARDED_PROTO.0,
        "x-forwarded-client-cert" => Present::X_FORWARDED_CLIENT_CERT.0,
        "x-request-id" => Present::X_REQUEST_ID.0,
        "traceparent" => Present::TRACEPARENT.0,
        "tracestate" => Present::TRACESTATE.0,
        "x-forwarded-for" => Present::X_FORWARDED_FOR.0,
        "host" => Present::HOST.0,
        _ => 0,
    }
}

/// Append the client IP to `x-forwarded-for`, set `x-forwarded-proto` and `x-forwarded-host`.
pub fn set_forwarded(headers: &mut HeaderMap, client: &HeaderValue, https: bool, host: Option<&HeaderValue>) {
    let xff = forwarded_for(headers, client);
    headers.insert(&X_FORWARDED_FOR, xff);
    headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(proto(https)));
    match host {
        Some(h) => headers.insert(&X_FORWARDED_HOST, h.clone()),
        None => headers.remove(&X_FORWARDED_HOST),
    };
}

fn proto(https: bool) -> &'static str {
    if https {
        "https"
    } else {
        "http"
    }
}

/// The `x-forwarded-for` value for the upstream: the list `headers` carries (repeated fields
/// folded into one), then `client`. With no list (none, or an empty first field), `client`.
fn forwarded_for(headers: &HeaderMap, client: &HeaderValue) -> HeaderValue {
    let prev = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) if !prev.trim().is_empty() => prev,
        // The common case: no previous proxy; the client's value is reused as it is.
        _ => return client.clone(),
    };
    let ip = client.to_str().unwrap_or_default();
    let mut all = String::with_capacity(prev.len() + 2 + ip.len());
    let mut first = true;
    for v in headers.get_all(&X_FORWARDED_FOR).iter().filter_map(|v| v.to_str().ok()) {
        if !first {
            all.push_str(", ");
        }
        all.push_str(v);
        first = false;
    }
    all.push_str(", ");
    all.push_str(ip);
    // Made of header values and an address: still a valid value.
    HeaderValue::from_str(&all).unwrap_or_else(|_| client.clone())
}

/// Request headers for the upstream, as the forwarder prepares each attempt.
///
/// With the listener's `info` the request is canonical (`server::canonical` removed its
/// hop-by-hop headers on arrival, before any layer set a header, so nothing is stripped here:
/// a name the client listed in `Connection` cannot remove what the gateway set). It gets a
/// `Host` when it has none, the forwarded headers, the request id and the request's
/// `traceparent` (the client's when valid, else the gateway's; set here, after the route's
/// `request_headers` edits, so the upstream always gets the one the access log names).
/// Without `info` (a request that did not come through a listener) hop-by-hop headers are
/// removed here. Either way an `upgrade` the client asked for is put back.
pub fn prepare_request(
    headers: &mut HeaderMap,
    info: Option<&crate::context::RequestInfo>,
    upgrade: Option<HeaderValue>,
) {
    let Some(info) = info else {
        let _ = strip_hop_by_hop(headers, upgrade);
        return;
    };
    if let Some(up) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, up);
    }
    if let Some(host) = &info.host {
        if !headers.contains_key(header::HOST) {
            headers.insert(header::HOST, host.clone());
        }
    }
    set_forwarded(headers, &info.client_ip, info.https, info.host.as_ref());
    headers.insert(&X_REQUEST_ID, info.request_id.clone());
    headers.insert(&TRACEPARENT, info.trace.traceparent.clone());
}

/// Whether the forwarder sets `name` on requests it sends upstream (`host` only when there is
/// none; the others always, replacing what the request had).
pub(crate) fn is_set_by_gateway(name: &HeaderName) -> bool {
    [&header::HOST, &X_FORWARDED_FOR, &X_FORWARDED_PROTO, &X_FORWARDED_HOST, &X_REQUEST_ID, &TRACEPARENT]
        .contains(&name)
}

/// [`prepare_request`] for a request from a listener sent on an HTTP/1 connection: the headers
/// the gateway sets are written as [`HeaderLines`], after the map's fields, instead of being
/// inserted into the map (each insert hashes its name; this costs one pass over the names).
/// Any field of the same name in the map (the client's, or a route's `request_headers` edit)
/// is removed, so the gateway's is the only one, as with [`prepare_request`].
pub(crate) fn prepare_request_lines(
    headers: &mut HeaderMap,
    info: &crate::context::RequestInfo,
    upgrade: Option<HeaderValue>,
) -> HeaderLines {
    if let Some(up) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, up);
    }
    let present = Present::of(headers);
    let host = if present.has(Present::HOST) { None } else { info.host.as_ref() };
    let xff = if present.has(Present::X_FORWARDED_FOR) {
        let v = forwarded_for(headers, &info.client_ip);
        headers.remove(&X_FORWARDED_FOR);
        Some(v)
    } else {
        None
    };
    for (bit, name) in [
        (Present::X_FORWARDED_PROTO, &X_FORWARDED_PROTO),
        (Present::X_FORWARDED_HOST, &X_FORWARDED_HOST),
        (Present::X_REQUEST_ID, &X_REQUEST_ID),
        (Present::TRACEPARENT, &TRACEPARENT),
    ] {
        if present.has(bit) {
            headers.remove(name);
        }
    }
    let proto = HeaderValue::from_static(proto(info.https));
    let xff = xff.as_ref().unwrap_or(&info.client_ip);
    let fields = [
        (&header::HOST, host),
        (&X_FORWARDED_FOR, Some(xff)),
        (&X_FORWARDED_PROTO, Some(&proto)),
        (&X_FORWARDED_HOST, info.host.as_ref()),
        (&X_REQUEST_ID, Some(&info.request_id)),
        (&TRACEPARENT, Some(&info.trace.traceparent)),
    ];
    let len = fields.iter().map(|(n, v)| v.map_or(0, |v| n.as_str().len() + v.len() + 4)).sum();
    let mut lines = HeaderLines::with_capacity(len);
    for (name, value) in fields {
        if let Some(v) = value {
            lines.push(name, v);
        }
    }
    lines
}

/// The request's host as the client sent it: the `Host` header, else the URI's authority
/// (HTTP/2 `:authority`).
pub fn request_host<B>(req: &http::Request<B>) -> Option<&str> {
    match req.headers().get(header::HOST) {
        Some(h) => h.to_str().ok(),
        None => req.uri().authority().map(|a| a.as_str()),
    }
}

/// Keep a client's request id when it is 1–128 visible ASCII characters, else make one.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(&X_REQUEST_ID) {
        let b = v.as_bytes();
        if (1..=128).contains(&b.len()) && b.iter().all(|c| (0x21..=0x7e).contains(c)) {
            return never_indexed(v.clone());
        }
    }
    new_request_id()
}

/// A random 128-bit id in hex (the shape of a UUID without dashes).
pub fn new_request_id() -> HeaderValue {
    let mut buf = [0u8; 32];
    buf[..16].copy_from_slice(&hex16(fastrand::u64(..)));
    buf[16..].copy_from_slice(&hex16(fastrand::u64(..)));
    // Hex digits are valid header bytes. The buffer becomes the value's storage as it is: one
    // allocation, which every clone shares (copied into a `Vec`, the first clone allocated
    // again to make it shareable).
    never_indexed(
        HeaderValue::from_maybe_shared(Bytes::from_owner(buf))
            .unwrap_or_else(|_| HeaderValue::from_static("0")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn present_names_each_special_header_and_nothing_else() {
        let cases = [
            ("x-forwarded-host", Present::X_FORWARDED_HOST),
            ("x-forwarded-proto", Present::X_FORWARDED_PROTO),
            ("x-forwarded-client-cert", Present::X_FORWARDED_CLIENT_CERT),
            ("x-request-id", Present::X_REQUEST_ID),
            ("traceparent", Present::TRACEPARENT),
            ("tracestate", Present::TRACESTATE),
            ("x-forwarded-for", Present::X_FORWARDED_FOR),
            ("host", Present::HOST),
        ];
        let hop =
            ["connection", "te", "trailer", "transfer-encoding", "upgrade", "keep-alive", "proxy-connection"];
        let mut all = HeaderMap::new();
        for (name, bit) in cases {
            let mut h = HeaderMap::new();
            h.insert("x-other", HeaderValue::from_static("1"));
            // Sent in capitals, stored in lower case, as every header name is.
            h.insert(
                HeaderName::from_bytes(name.to_uppercase().as_bytes()).unwrap(),
                HeaderValue::from_static("1"),
            );
            assert_eq!(Present::of(&h), bit, "{name}");
            all.insert(name, HeaderValue::from_static("1"));
        }
        for name in hop {
            let mut h = HeaderMap::new();
            h.insert(name, HeaderValue::from_static("1"));
            let p = Present::of(&h);
            assert!(p.has(Present::HOP_BY_HOP) && cases.iter().all(|(_, b)| !p.has(*b)), "{name}");
            assert_eq!(p.has(Present::UPGRADE), name == "upgrade", "{name}");
        }
        let p = Present::of(&all);
        assert!(cases.iter().all(|(_, b)| p.has(*b)) && !p.has(Present::HOP_BY_HOP));
        let mut plain = HeaderMap::new();
        plain.insert(header::ACCEPT, HeaderValue::from_static("a"));
        plain.insert("x-forwarded-port", HeaderValue::from_static("80"));
        assert_eq!(Present::of(&plain), Present::default());
    }

    #[test]
    fn a_lone_keep_alive_or_close_removes_only_the_connection_header_and_a_list_still_names() {
        for v in ["keep-alive", "Keep-Alive", "close", "CLOSE"] {
            let mut h = HeaderMap::new();
            h.insert(header::CONNECTION, HeaderValue::from_static(v));
            h.insert("x-keep", HeaderValue::from_static("1"));
            assert!(strip_hop_by_hop(&mut h, None));
            assert!(h.get(header::CONNECTION).is_none(), "{v}");
            assert_eq!(h.get("x-keep").unwrap(), "1", "{v}");
        }
        // A second `connection` field with a name in it is read, whatever the first says.
        let mut h = HeaderMap::new();
        h.append(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        h.append(header::CONNECTION, HeaderValue::from_static("x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, None);
        assert!(h.get("x-secret").is_none() && h.get(header::CONNECTION).is_none());
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("close, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("gzip, trailers"));
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, None);
        assert!(h.get("x-secret").is_none());
        assert!(h.get(header::CONNECTION).is_none());
        assert!(h.get("keep-alive").is_none());
        assert!(h.get(header::TRANSFER_ENCODING).is_none());
        assert_eq!(h.get(header::TE).unwrap(), "trailers");
        assert_eq!(h.get("x-keep").unwrap(), "1");
    }

    #[test]
    fn request_id_rules() {
        let mut h = HeaderMap::new();
        h.insert(&X_REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h), "abc-123");
        h.insert(&X_REQUEST_ID, HeaderValue::from_static("has space"));
        assert_eq!(request_id(&h).len(), 32);
        h.insert(&X_REQUEST_ID, HeaderValue::from_str(&"a".repeat(129)).unwrap());
        assert_eq!(request_id(&h).len(), 32);
    }

    fn info(host: Option<&'static str>, https: bool) -> crate::context::RequestInfo {
        crate::context::RequestInfo {
            client: "10.0.0.7:5000".parse().unwrap(),
            listener: std::sync::Arc::new("l".to_owned()),
            https,
            host: host.map(HeaderValue::from_static),
            request_id: HeaderValue::from_static("rid-1"),
            trace: crate::trace_context::TraceContext::new_root(),
            bytes_in: Default::default(),
            client_ip: HeaderValue::from_static("10.0.0.7"),
            exchange: Default::default(),
            tried: Default::default(),
            upgrade: None,
        }
    }

    /// The fields an HTTP/1 upstream reads: the map's, then the lines', as `(name, value)`.
    fn sent(map: &HeaderMap, lines: Option<&HeaderLines>) -> Vec<(String, String)> {
        let mut all: Vec<(String, String)> =
            map.iter().map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned())).collect();
        if let Some(lines) = lines {
            let text = std::str::from_utf8(lines.as_bytes()).unwrap();
            assert!(text.is_empty() || text.ends_with("\r\n"), "{text:?}");
            for line in text.split_terminator("\r\n") {
                let (n, v) = line.split_once(": ").unwrap();
                all.push((n.to_owned(), v.to_owned()));
            }
        }
        all.sort();
        all
    }

    #[test]
    fn header_lines_send_what_the_map_would() {
        let requests: [&[(&str, &str)]; 5] = [
            &[("host", "a.example"), ("accept", "*/*")],
            &[("accept", "*/*")],
            // What a client (or a route's request_headers) set is replaced, not doubled.
            &[
                ("host", "a.example"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "evil"),
                ("x-request-id", "forged"),
                ("traceparent", "00-forged"),
            ],
            // An earlier proxy's list is kept, the client added, repeated fields folded.
            &[("x-forwarded-for", "1.1.1.1"), ("x-forwarded-for", "2.2.2.2"), ("host", "h")],
            &[("x-forwarded-for", " "), ("x-keep", "1")],
        ];
        for fields in requests {
            for (host, https) in [(Some("a.example"), false), (None, true)] {
                let info = info(host, https);
                let mut map = HeaderMap::new();
                for (n, v) in fields {
                    map.append(HeaderName::from_static(n), HeaderValue::from_static(v));
                }
                let mut by_map = map.clone();
                prepare_request(&mut by_map, Some(&info), None);
                let lines = prepare_request_lines(&mut map, &info, None);
                assert_eq!(sent(&map, Some(&lines)), sent(&by_map, None), "{fields:?} {host:?}");
                assert!(map.keys().all(|n| n == header::HOST || !is_set_by_gateway(n)), "{fields:?}");
            }
        }
    }

    #[test]
    fn xff_appends() {
        let mut h = HeaderMap::new();
        h.append(&X_FORWARDED_FOR, HeaderValue::from_static("1.1.1.1"));
        h.append(&X_FORWARDED_FOR, HeaderValue::from_static("2.2.2.2"));
        set_forwarded(&mut h, &HeaderValue::from_static("127.0.0.1"), false, None);
        assert_eq!(h.get(&X_FORWARDED_FOR).unwrap(), "1.1.1.1, 2.2.2.2, 127.0.0.1");
        assert_eq!(h.get_all(&X_FORWARDED_FOR).iter().count(), 1);
        assert_eq!(h.get(&X_FORWARDED_PROTO).unwrap(), "http");
    }
}
