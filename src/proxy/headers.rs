//! Header rules (README, "Security model"): hop-by-hop removal (RFC 9110 §7.6.1), forwarded headers, the
//! request id and the `traceparent` (`trace_context`).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::trace_context::{hex16, TRACEPARENT};

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
    // One pass over the names (standard names compare as interned values) tells which
    // hop-by-hop headers are present; most messages carry none, or only `connection`.
    let present = headers.keys().fold(0u8, |acc, n| acc | hop_bit(n));
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
        if connection_tokens(headers).any(|t| listed(&t)) {
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

/// Which hop-by-hop header `name` is, as a bit (0 for any other header).
fn hop_bit(name: &HeaderName) -> u8 {
    if name == header::CONNECTION {
        CONNECTION
    } else if name == header::TE {
        TE
    } else if name == header::TRAILER {
        TRAILER
    } else if name == header::TRANSFER_ENCODING {
        TRANSFER_ENCODING
    } else if name == header::UPGRADE {
        UPGRADE
    } else if name == KEEP_ALIVE {
        KEEP_ALIVE_BIT
    } else if name == PROXY_CONNECTION {
        PROXY_CONNECTION_BIT
    } else {
        0
    }
}

/// Append the client IP to `x-forwarded-for`, set `x-forwarded-proto` and `x-forwarded-host`.
pub fn set_forwarded(headers: &mut HeaderMap, client: &HeaderValue, https: bool, host: Option<&HeaderValue>) {
    let ip = client.to_str().unwrap_or_default();
    let xff = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        // The common case: no previous proxy; the client's value is reused as it is.
        None => {
            headers.insert(&X_FORWARDED_FOR, client.clone());
            None
        }
        Some(prev) if !prev.trim().is_empty() => {
            let mut all = String::with_capacity(prev.len() + 2 + ip.len());
            // Fold repeated x-forwarded-for headers into one list.
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
            Some(all)
        }
        Some(_) => {
            headers.insert(&X_FORWARDED_FOR, client.clone());
            None
        }
    };
    if let Some(v) = xff.and_then(|x| HeaderValue::from_str(&x).ok()) {
        headers.insert(&X_FORWARDED_FOR, v);
    }
    headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(if https { "https" } else { "http" }));
    match host {
        Some(h) => headers.insert(&X_FORWARDED_HOST, h.clone()),
        None => headers.remove(&X_FORWARDED_HOST),
    };
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
            return v.clone();
        }
    }
    new_request_id()
}

/// A random 128-bit id in hex (the shape of a UUID without dashes).
pub fn new_request_id() -> HeaderValue {
    let mut buf = [0u8; 32];
    buf[..16].copy_from_slice(&hex16(fastrand::u64(..)));
    buf[16..].copy_from_slice(&hex16(fastrand::u64(..)));
    // Hex digits are valid header bytes.
    HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

#[cfg(test)]
mod tests {
    use super::*;

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
