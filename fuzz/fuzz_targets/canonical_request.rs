//! `server::canonical::request`: a whole request put in canonical form in place.
//!
//! Input (read with `arbitrary::Unstructured`): the `[http]` config, a method, a request
//! target (skipped unless `http::Uri` accepts it), a version, 0-3 `Host` headers and up to 6
//! other headers drawn mostly from the hop-by-hop and forwarded ones.
//!
//! Properties on `Ok`: the URI is origin-form (no scheme, no authority) and its path is its
//! own canonical form (or `*` for OPTIONS); the query is untouched; when the result has a
//! host there is exactly one `Host` header, equal to it and valid; without one there is none;
//! `connection`, `keep-alive`, `proxy-connection`, `trailer`, `transfer-encoding`, `upgrade`,
//! `x-forwarded-host`, `x-forwarded-proto` and every header the `Connection` header named
//! (other than `host`) are gone, and `te` is at most `trailers`; an upgrade is only reported
//! for HTTP/1.x. `CONNECT` is always refused.
#![no_main]

use http::header::{HeaderName, HeaderValue};
use http::{Method, Request, Uri, Version};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use switchyard::config::{EscapedSlashes, HttpConfig};
use switchyard::internals::canonical::{self, Rejection};

const METHODS: &[&str] = &["GET", "POST", "HEAD", "OPTIONS", "CONNECT", "PUT", "DELETE", "PATCH", "TRACE"];
const VERSIONS: &[Version] =
    &[Version::HTTP_11, Version::HTTP_10, Version::HTTP_2, Version::HTTP_09, Version::HTTP_3];
const NAMES: &[&str] = &[
    "connection",
    "upgrade",
    "x-forwarded-host",
    "x-forwarded-proto",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "x-forwarded-for",
    "x-custom",
    "content-length",
];

struct Case {
    cfg: HttpConfig,
    req: Request<()>,
    /// Header names listed in `Connection` (lower-cased tokens), before canonicalisation.
    connection_named: Vec<String>,
}

fn case(u: &mut Unstructured<'_>) -> Result<Option<Case>> {
    let flags: u8 = u.arbitrary()?;
    let cfg = HttpConfig {
        normalize_path: flags & 1 != 0,
        merge_slashes: flags & 2 != 0,
        escaped_slashes: match (flags >> 2) % 3 {
            0 => EscapedSlashes::Reject,
            1 => EscapedSlashes::Keep,
            _ => EscapedSlashes::Decode,
        },
    };
    let method = if u.ratio(1, 8)? {
        let raw: &[u8] = u.arbitrary()?;
        match Method::from_bytes(raw) {
            Ok(m) => m,
            Err(_) => return Ok(None),
        }
    } else {
        Method::from_bytes(u.choose(METHODS)?.as_bytes()).unwrap()
    };
    let target: &[u8] = u.arbitrary()?;
    let Ok(uri) = Uri::try_from(target) else { return Ok(None) };
    let version = *u.choose(VERSIONS)?;

    let mut req = Request::new(());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = version;
    let headers = req.headers_mut();
    for _ in 0..u.int_in_range(0..=3u8)? {
        let raw: &[u8] = u.arbitrary()?;
        if let Ok(v) = HeaderValue::from_bytes(raw) {
            headers.append(http::header::HOST, v);
        }
    }
    for _ in 0..u.int_in_range(0..=6u8)? {
        let name = if u.ratio(1, 8)? {
            let raw: &[u8] = u.arbitrary()?;
            match HeaderName::from_bytes(raw) {
                Ok(n) => n,
                Err(_) => continue,
            }
        } else {
            HeaderName::from_static(u.choose(NAMES)?)
        };
        let raw: &[u8] = u.arbitrary()?;
        if let Ok(v) = HeaderValue::from_bytes(raw) {
            headers.append(name, v);
        }
    }
    let connection_named = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    Ok(Some(Case { cfg, req, connection_named }))
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(Some(Case { cfg, mut req, connection_named })) = case(&mut u) else { return };
    let before = format!("{req:?}");
    let query_before = req.uri().query().map(str::to_owned);
    let was_connect = req.method() == Method::CONNECT;

    let result = canonical::request(&mut req, &cfg);
    if was_connect {
        assert_eq!(result.as_ref().err(), Some(&Rejection::Connect), "CONNECT not refused: {before}");
    }
    let Ok(canon) = result else { return };
    let ctx = || format!("\nbefore: {before}\nafter:  {req:?}\nresult: {canon:?}\n{cfg:?}");

    // Origin-form target, canonical path, query untouched.
    let uri = req.uri();
    assert!(uri.scheme().is_none(), "scheme left in the URI: {}", ctx());
    assert!(uri.authority().is_none(), "authority left in the URI: {}", ctx());
    let path = uri.path();
    if path == "*" {
        assert_eq!(req.method(), Method::OPTIONS, "'*' target for a method other than OPTIONS: {}", ctx());
    } else {
        match canonical::path(path, &cfg) {
            Ok(again) => assert_eq!(&*again, path, "path not canonical: {}", ctx()),
            Err(e) => panic!("canonical path rejected on a second pass ({e:?}): {}", ctx()),
        }
    }
    assert_eq!(uri.query().map(str::to_owned), query_before, "query changed: {}", ctx());

    // Host.
    let headers = req.headers();
    let hosts: Vec<&HeaderValue> = headers.get_all(http::header::HOST).iter().collect();
    match &canon.host {
        Some(h) => {
            assert_eq!(hosts.len(), 1, "not exactly one Host header: {}", ctx());
            assert_eq!(hosts[0], h, "Host header differs from the canonical host: {}", ctx());
            assert!(canonical::valid_host(h.as_bytes()).is_ok(), "invalid canonical host: {}", ctx());
        }
        None => assert!(hosts.is_empty(), "Host header left without a canonical host: {}", ctx()),
    }

    // Hop-by-hop and client-sent forwarded headers.
    for gone in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "x-forwarded-host",
        "x-forwarded-proto",
    ] {
        assert!(!headers.contains_key(gone), "{gone} header left: {}", ctx());
    }
    for named in &connection_named {
        if named == "host" {
            continue;
        }
        if let Ok(n) = HeaderName::from_bytes(named.as_bytes()) {
            if n == http::header::TE {
                continue;
            }
            assert!(!headers.contains_key(&n), "header {named} named by Connection left: {}", ctx());
        }
    }
    let te: Vec<&HeaderValue> = headers.get_all(http::header::TE).iter().collect();
    assert!(te.is_empty() || te == ["trailers"], "te other than 'trailers' left: {}", ctx());

    if canon.upgrade.is_some() {
        assert!(
            matches!(req.version(), Version::HTTP_09 | Version::HTTP_10 | Version::HTTP_11),
            "upgrade reported for a non-HTTP/1 request: {}",
            ctx()
        );
    }
});
