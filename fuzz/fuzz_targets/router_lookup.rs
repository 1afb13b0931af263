//! `router::Router::lookup` on a fixed, rich route table (`fuzz/data/router_lookup.toml`).
//!
//! Input (read with `arbitrary::Unstructured`): a method, a host (often one of the table's,
//! with case, port and trailing-dot variations), a path (often one of the table's), a query and
//! up to 4 headers.
//!
//! Properties: never panics; an answer is an index below `router.len()`; the same lookup
//! answers the same; the host is case-insensitive (for hosts of at most 255 bytes, the size
//! below which the router lower-cases them); `lookup_request` agrees with `lookup` for the
//! same request when the host goes in a `Host` header that `HeaderValue::to_str` reads back
//! (visible ASCII).
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Uri};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use switchyard::config::load_routes_from_sources;
use switchyard::internals::Router;

const ROUTES: &str = include_str!("../data/router_lookup.toml");

fn router() -> &'static Router {
    static ROUTER: OnceLock<Router> = OnceLock::new();
    ROUTER.get_or_init(|| {
        let set = load_routes_from_sources(vec![(PathBuf::from("router_lookup.toml"), ROUTES.to_owned())])
            .unwrap_or_else(|e| panic!("fuzz/data/router_lookup.toml is invalid:\n{e}"));
        let router = Router::new(&set.routes);
        assert_eq!(router.len(), set.routes.len());
        router
    })
}

const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "post", "get"];
const HOSTS: &[&str] = &[
    "api.example.com",
    "API2.example.com",
    "x.example.com",
    "b.a.example.com",
    "a.example.com",
    "example.com",
    "example.org",
    "db.ns.svc.cluster.local",
    "svc.cluster.local",
    "127.0.0.1",
    "[::1]",
    "::1",
    "localhost",
    "",
];
const PATHS: &[&str] = &[
    "/",
    "/v1/status",
    "/users",
    "/users/",
    "/users/42",
    "/usersx",
    "/items/12",
    "/items/12/abc",
    "/healthz",
    "/admin",
    "/admin/x",
    "/static/",
    "/static/css/a.css",
    "/static/cs",
    "/exact",
    "/ab/x.json",
    "/éé/x",
];
const HEADER_NAMES: &[&str] = &["x-canary", "authorization", "x-admin", "accept", "x-other"];

struct Case {
    method: Method,
    host: Option<String>,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
}

fn text(u: &mut Unstructured<'_>, known: &[&str]) -> Result<String> {
    let mut s = if u.ratio(3, 4)? { (*u.choose(known)?).to_owned() } else { u.arbitrary::<String>()? };
    if u.ratio(1, 4)? {
        s.push_str(u.arbitrary::<&str>()?);
    }
    Ok(s)
}

fn case(u: &mut Unstructured<'_>) -> Result<Option<Case>> {
    let method = if u.ratio(1, 8)? {
        match Method::from_bytes(u.arbitrary::<&[u8]>()?) {
            Ok(m) => m,
            Err(_) => return Ok(None),
        }
    } else {
        Method::from_bytes(u.choose(METHODS)?.as_bytes()).unwrap()
    };
    let host = if u.ratio(1, 8)? {
        None
    } else {
        let mut h = text(u, HOSTS)?;
        match u.int_in_range(0..=5u8)? {
            0 => h.make_ascii_uppercase(),
            1 => h.push_str(":8080"),
            2 => h.push('.'),
            _ => {}
        }
        Some(h)
    };
    let path = text(u, PATHS)?;
    let query = if u.arbitrary()? {
        Some(if u.ratio(1, 2)? {
            (*u.choose(&["debug=1", "v=2&debug", "format=json", "v=2&debug=&x=1", "debug", "=&&="][..])?)
                .to_owned()
        } else {
            u.arbitrary::<String>()?
        })
    } else {
        None
    };
    let mut headers = HeaderMap::new();
    for _ in 0..u.int_in_range(0..=4u8)? {
        let name = if u.ratio(1, 8)? {
            match HeaderName::from_bytes(u.arbitrary::<&[u8]>()?) {
                Ok(n) => n,
                Err(_) => continue,
            }
        } else {
            HeaderName::from_static(u.choose(HEADER_NAMES)?)
        };
        let value = if u.ratio(1, 2)? {
            HeaderValue::from_static(u.choose(&["1", "yes", "text/html", "Bearer x", ""][..])?)
        } else {
            match HeaderValue::from_bytes(u.arbitrary::<&[u8]>()?) {
                Ok(v) => v,
                Err(_) => continue,
            }
        };
        headers.append(name, value);
    }
    Ok(Some(Case { method, host, path, query, headers }))
}

fuzz_target!(|data: &[u8]| {
    let router = router();
    let mut u = Unstructured::new(data);
    let Ok(Some(c)) = case(&mut u) else { return };
    let found = router.lookup(&c.method, c.host.as_deref(), &c.path, c.query.as_deref(), &c.headers);
    let ctx = || {
        format!(
            "method {:?} host {:?} path {:?} query {:?} headers {:?} -> {found:?}",
            c.method, c.host, c.path, c.query, c.headers
        )
    };
    if let Some(i) = found {
        assert!(i < router.len(), "index out of range ({} routes): {}", router.len(), ctx());
    }
    let again = router.lookup(&c.method, c.host.as_deref(), &c.path, c.query.as_deref(), &c.headers);
    assert_eq!(again, found, "same lookup, different answer: {}", ctx());

    if let Some(h) = c.host.as_deref().filter(|h| h.len() <= 255) {
        for variant in [h.to_ascii_uppercase(), h.to_ascii_lowercase()] {
            let other = router.lookup(&c.method, Some(&variant), &c.path, c.query.as_deref(), &c.headers);
            assert_eq!(other, found, "host case changed the answer ({variant:?}): {}", ctx());
        }
    }

    // The same request through `lookup_request`, when it can be written as one: origin-form
    // target and the host in a `Host` header.
    let target = match &c.query {
        Some(q) => format!("{}?{q}", c.path),
        None => c.path.clone(),
    };
    let Ok(uri) = Uri::try_from(target.as_str()) else { return };
    if uri.authority().is_some() || uri.path() != c.path || uri.query() != c.query.as_deref() {
        return;
    }
    let mut req = Request::new(());
    *req.method_mut() = c.method.clone();
    *req.uri_mut() = uri;
    *req.headers_mut() = c.headers.clone();
    req.headers_mut().remove(http::header::HOST);
    if let Some(h) = &c.host {
        // `lookup_request` reads the header with `to_str`, which refuses obs-text (bytes >= 0x80)
        // that `HeaderValue::from_str` accepts: such a Host is "no host" there, while `lookup`
        // matches its ASCII part (the first run found `B.A.EXAMPLE.COM:騨`). The server never
        // routes such a host (`canonical::valid_host` refuses it first), so compare only hosts
        // that survive the header round trip.
        let Ok(v) = HeaderValue::from_str(h) else { return };
        if v.to_str().is_err() {
            return;
        }
        req.headers_mut().insert(http::header::HOST, v);
    }
    assert_eq!(router.lookup_request(&req), found, "lookup_request disagrees with lookup: {}", ctx());
});
