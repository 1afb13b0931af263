//! Router tests: one per matcher and precedence rule, plus a randomized comparison against a
//! naive reference that scans every route.

use std::cmp::Reverse;

use http::{HeaderMap, HeaderName, HeaderValue, Method, Request};
use regex::Regex;

use super::Router;
use crate::config::{
    Action, HeaderEdits, HostMatch, Origin, PathMatch, RetryPolicy, RouteConfig, ValueMatch,
};

// === helpers ===

/// A route named `name` with `hosts` (`*.x` = wildcard) and `path`: `=/p` exact, `~re` regex
/// (anchored here, as config validation does), anything else a prefix.
fn route(hosts: &[&str], path: &str) -> RouteConfig {
    let hosts = hosts
        .iter()
        .map(|h| match h.strip_prefix("*.") {
            Some(suffix) => HostMatch::Wildcard(suffix.to_owned()),
            None => HostMatch::Exact((*h).to_owned()),
        })
        .collect();
    let path = if let Some(exact) = path.strip_prefix('=') {
        PathMatch::Exact(exact.to_owned())
    } else if let Some(re) = path.strip_prefix('~') {
        PathMatch::Regex(Regex::new(&format!("^(?:{re})$")).unwrap())
    } else {
        PathMatch::Prefix(path.to_owned())
    };
    RouteConfig {
        name: String::new(),
        origin: Origin { file: "routes/test.toml".into(), line: 1 },
        hosts,
        path,
        methods: Vec::new(),
        headers: Vec::new(),
        query: Vec::new(),
        action: Action::Upstream("u".into()),
        strip_prefix: false,
        rewrite_prefix: None,
        host_rewrite: None,
        request_headers: HeaderEdits::default(),
        response_headers: HeaderEdits::default(),
        timeout: None,
        max_request_body_bytes: None,
        retry: RetryPolicy::default(),
        rate_limit: None,
    }
}

/// `"*"` = present, else exact.
fn value(v: &str) -> ValueMatch {
    if v == "*" {
        ValueMatch::Present
    } else {
        ValueMatch::Exact(v.to_owned())
    }
}

fn methods(mut r: RouteConfig, ms: &[&str]) -> RouteConfig {
    r.methods = ms.iter().map(|m| m.parse().unwrap()).collect();
    r
}

fn headers(mut r: RouteConfig, hs: &[(&str, &str)]) -> RouteConfig {
    r.headers = hs.iter().map(|(n, v)| (HeaderName::from_bytes(n.as_bytes()).unwrap(), value(v))).collect();
    r
}

fn query(mut r: RouteConfig, qs: &[(&str, &str)]) -> RouteConfig {
    r.query = qs.iter().map(|(k, v)| ((*k).to_owned(), value(v))).collect();
    r
}

fn header_map(hs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (n, v) in hs {
        map.append(HeaderName::from_bytes(n.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
    }
    map
}

/// GET `path` on `host`, no query, no headers.
fn get(router: &Router, host: &str, path: &str) -> Option<usize> {
    router.lookup(&Method::GET, Some(host), path, None, &HeaderMap::new())
}

// === hosts ===

#[test]
fn exact_host_beats_wildcard_beats_any() {
    let routes = [route(&[], "/"), route(&["*.example.com"], "/"), route(&["api.example.com"], "/")];
    let router = Router::new(&routes);
    assert_eq!(get(&router, "api.example.com", "/x"), Some(2));
    assert_eq!(get(&router, "web.example.com", "/x"), Some(1));
    assert_eq!(get(&router, "other.org", "/x"), Some(0));
    assert_eq!(router.lookup(&Method::GET, None, "/x", None, &HeaderMap::new()), Some(0));
}

#[test]
fn wildcard_matches_one_or_more_labels_never_the_apex() {
    let router = Router::new(&[route(&["*.example.com"], "/")]);
    assert_eq!(get(&router, "a.example.com", "/"), Some(0));
    assert_eq!(get(&router, "a.b.example.com", "/"), Some(0));
    assert_eq!(get(&router, "example.com", "/"), None);
    assert_eq!(get(&router, "aexample.com", "/"), None);
    assert_eq!(get(&router, ".example.com", "/"), None);
    assert_eq!(get(&router, "a.example.org", "/"), None);
}

#[test]
fn longer_wildcard_suffix_wins() {
    let routes = [route(&["*.com"], "/"), route(&["*.example.com"], "/"), route(&["*.b.example.com"], "/")];
    let router = Router::new(&routes);
    assert_eq!(get(&router, "a.b.example.com", "/"), Some(2));
    assert_eq!(get(&router, "a.c.example.com", "/"), Some(1));
    assert_eq!(get(&router, "b.example.com", "/"), Some(1));
    assert_eq!(get(&router, "example.com", "/"), Some(0));
}

#[test]
fn host_is_case_insensitive_and_port_is_ignored() {
    let routes = [
        route(&["api.example.com"], "/"),
        route(&["*.example.com"], "/"),
        route(&["[::1]"], "/"),
        route(&["127.0.0.1"], "/"),
    ];
    let router = Router::new(&routes);
    assert_eq!(get(&router, "API.Example.COM", "/"), Some(0));
    assert_eq!(get(&router, "api.example.com:8443", "/"), Some(0));
    assert_eq!(get(&router, "API.EXAMPLE.COM:80", "/"), Some(0));
    assert_eq!(get(&router, "api.example.com.", "/"), Some(0));
    assert_eq!(get(&router, "WWW.Example.Com:8080", "/"), Some(1));
    assert_eq!(get(&router, "[::1]:8080", "/"), Some(2));
    assert_eq!(get(&router, "[::1]", "/"), Some(2));
    assert_eq!(get(&router, "127.0.0.1:9000", "/"), Some(3));
    assert_eq!(get(&router, "[::2]:8080", "/"), None);
}

#[test]
fn config_hosts_are_lower_cased_defensively() {
    let mut r = route(&[], "/");
    r.hosts = vec![HostMatch::Exact("API.example.com".into()), HostMatch::Wildcard("Example.ORG".into())];
    let router = Router::new(&[r]);
    assert_eq!(get(&router, "api.example.com", "/"), Some(0));
    assert_eq!(get(&router, "a.example.org", "/"), Some(0));
}

#[test]
fn falls_through_from_exact_host_to_wildcard_then_any() {
    let routes = [
        route(&[], "/"),
        route(&["*.example.com"], "/b"),
        route(&["api.example.com"], "/a"),
        methods(route(&["api.example.com"], "/c"), &["POST"]),
    ];
    let router = Router::new(&routes);
    assert_eq!(get(&router, "api.example.com", "/a"), Some(2));
    // The exact host has no route for /b: the wildcard's does.
    assert_eq!(get(&router, "api.example.com", "/b/1"), Some(1));
    // Neither the exact host nor the wildcard: the any-host route.
    assert_eq!(get(&router, "api.example.com", "/z"), Some(0));
    // The exact host's /c route fails on method: fall through to any.
    assert_eq!(get(&router, "api.example.com", "/c"), Some(0));
}

#[test]
fn falls_through_from_longer_to_shorter_wildcard() {
    let routes = [route(&["*.com"], "/"), route(&["*.example.com"], "/a")];
    let router = Router::new(&routes);
    assert_eq!(get(&router, "x.example.com", "/a"), Some(1));
    assert_eq!(get(&router, "x.example.com", "/b"), Some(0));
}

#[test]
fn host_decides_before_path() {
    // An exact path on any host loses to a catch-all prefix on the exact host.
    let routes = [route(&[], "=/a"), route(&["api.example.com"], "/")];
    let router = Router::new(&routes);
    assert_eq!(get(&router, "api.example.com", "/a"), Some(1));
    assert_eq!(get(&router, "other", "/a"), Some(0));
}

#[test]
fn route_with_several_hosts_is_in_each_bucket() {
    let routes =
        [route(&["*.example.com"], "/"), route(&["api.example.com", "*.example.org", "api.test"], "/api")];
    let router = Router::new(&routes);
    assert_eq!(get(&router, "api.example.com", "/api"), Some(1));
    assert_eq!(get(&router, "x.example.org", "/api/v"), Some(1));
    assert_eq!(get(&router, "API.TEST:1", "/api"), Some(1));
    assert_eq!(get(&router, "web.example.com", "/api"), Some(0));
    assert_eq!(get(&router, "api.example.com", "/other"), Some(0));
    assert_eq!(get(&router, "api.other", "/api"), None);
}

#[test]
fn duplicate_hosts_in_one_route_do_not_break_order() {
    let routes = [headers(route(&["a.test", "a.test"], "/"), &[("x-a", "*")]), route(&["a.test"], "/")];
    let router = Router::new(&routes);
    assert_eq!(router.lookup(&Method::GET, Some("a.test"), "/", None, &header_map(&[("x-a", "1")])), Some(0));
    assert_eq!(get(&router, "a.test", "/"), Some(1));
}

// === paths ===

#[test]
fn exact_path_beats_prefix_beats_regex() {
    let routes = [route(&[], "~/users/.*"), route(&[], "/users"), route(&[], "=/users/7")];
    let router = Router::new(&routes);
    assert_eq!(get(&router, "h", "/users/7"), Some(2));
    assert_eq!(get(&router, "h", "/users/8"), Some(1));
    let router = Router::new(&routes[..1]);
    assert_eq!(get(&router, "h", "/users/8"), Some(0));
}

#[test]
fn exact_path_is_exact() {
    let router = Router::new(&[route(&[], "=/a")]);
    assert_eq!(get(&router, "h", "/a"), Some(0));
    assert_eq!(get(&router, "h", "/a/"), None);
    assert_eq!(get(&router, "h", "/a/b"), None);
    assert_eq!(get(&router, "h", "/ab"), None);
}

#[test]
fn longest_prefix_wins() {
    let routes = [route(&[], "/"), route(&[], "/api"), route(&[], "/api/v1/users"), route(&[], "/api/v1")];
    let router = Router::new(&routes);
    assert_eq!(get(&router, "h", "/api/v1/users/7"), Some(2));
    assert_eq!(get(&router, "h", "/api/v1/orders"), Some(3));
    assert_eq!(get(&router, "h", "/api/v2"), Some(1));
    assert_eq!(get(&router, "h", "/web"), Some(0));
}

#[test]
fn shorter_prefix_then_regex_when_longer_fails_other_matchers() {
    let routes = [
        route(&[], "~/api/v1/.*"),
        methods(route(&[], "/api"), &["POST"]),
        headers(route(&[], "/api/v1"), &[("x-a", "1")]),
    ];
    let router = Router::new(&routes);
    let h = header_map(&[("x-a", "1")]);
    assert_eq!(router.lookup(&Method::GET, None, "/api/v1/x", None, &h), Some(2));
    assert_eq!(router.lookup(&Method::POST, None, "/api/v1/x", None, &HeaderMap::new()), Some(1));
    assert_eq!(router.lookup(&Method::GET, None, "/api/v1/x", None, &HeaderMap::new()), Some(0));
    assert_eq!(router.lookup(&Method::GET, None, "/api/v2", None, &HeaderMap::new()), None);
}

#[test]
fn prefix_is_segment_aware() {
    let router = Router::new(&[route(&[], "/users")]);
    assert_eq!(get(&router, "h", "/users"), Some(0));
    assert_eq!(get(&router, "h", "/users/"), Some(0));
    assert_eq!(get(&router, "h", "/users/7"), Some(0));
    assert_eq!(get(&router, "h", "/users//7"), Some(0));
    assert_eq!(get(&router, "h", "/usersx"), None);
    assert_eq!(get(&router, "h", "/user"), None);
    assert_eq!(get(&router, "h", "/"), None);
    assert_eq!(get(&router, "h", "/x/users"), None);
}

#[test]
fn root_prefix_matches_everything() {
    let router = Router::new(&[route(&[], "/")]);
    for path in ["/", "/a", "/a/b/c", "//", "*", ""] {
        assert_eq!(get(&router, "h", path), Some(0), "{path}");
    }
}

#[test]
fn regex_must_match_the_whole_path() {
    let router = Router::new(&[route(&[], "~/items/[0-9]+")]);
    assert_eq!(get(&router, "h", "/items/42"), Some(0));
    assert_eq!(get(&router, "h", "/items/42/x"), None);
    assert_eq!(get(&router, "h", "/v1/items/42"), None);
    assert_eq!(get(&router, "h", "/items/"), None);
}

#[test]
fn regexes_by_rank_then_load_order() {
    let routes = [
        route(&[], "~/a/.*"),
        route(&[], "~/.*"),
        methods(route(&[], "~/.*"), &["GET"]),
        methods(route(&[], "~/b"), &["POST"]),
    ];
    let router = Router::new(&routes);
    assert_eq!(get(&router, "h", "/a/1"), Some(2));
    assert_eq!(router.lookup(&Method::PUT, None, "/a/1", None, &HeaderMap::new()), Some(0));
    assert_eq!(router.lookup(&Method::PUT, None, "/b", None, &HeaderMap::new()), Some(1));
    assert_eq!(router.lookup(&Method::POST, None, "/b", None, &HeaderMap::new()), Some(3));
}

#[test]
fn path_decides_before_methods_and_headers() {
    let routes =
        [headers(methods(route(&[], "/"), &["GET"]), &[("x-a", "*"), ("x-b", "*")]), route(&[], "/a")];
    let router = Router::new(&routes);
    let h = header_map(&[("x-a", "1"), ("x-b", "2")]);
    assert_eq!(router.lookup(&Method::GET, None, "/a/b", None, &h), Some(1));
}

// === methods, headers, query ===

#[test]
fn route_listing_methods_beats_one_that_does_not() {
    let routes = [route(&[], "/"), methods(route(&[], "/"), &["GET", "HEAD"])];
    let router = Router::new(&routes);
    assert_eq!(get(&router, "h", "/"), Some(1));
    assert_eq!(router.lookup(&Method::POST, None, "/", None, &HeaderMap::new()), Some(0));
}

#[test]
fn number_of_listed_methods_does_not_rank() {
    let routes = [methods(route(&[], "/"), &["GET", "POST", "PUT"]), methods(route(&[], "/"), &["GET"])];
    let router = Router::new(&routes);
    assert_eq!(get(&router, "h", "/"), Some(0));
}

#[test]
fn methods_rank_before_headers() {
    let routes =
        [headers(route(&[], "/"), &[("x-a", "*"), ("x-b", "*")]), methods(route(&[], "/"), &["GET"])];
    let router = Router::new(&routes);
    let h = header_map(&[("x-a", "1"), ("x-b", "2")]);
    assert_eq!(router.lookup(&Method::GET, None, "/", None, &h), Some(1));
    assert_eq!(router.lookup(&Method::PUT, None, "/", None, &h), Some(0));
}

#[test]
fn more_headers_beat_fewer() {
    let routes = [
        headers(route(&[], "/"), &[("x-a", "*")]),
        headers(route(&[], "/"), &[("x-a", "*"), ("x-b", "1")]),
        route(&[], "/"),
    ];
    let router = Router::new(&routes);
    let both = header_map(&[("x-a", "1"), ("x-b", "1")]);
    assert_eq!(router.lookup(&Method::GET, None, "/", None, &both), Some(1));
    let a = header_map(&[("x-a", "1")]);
    assert_eq!(router.lookup(&Method::GET, None, "/", None, &a), Some(0));
    assert_eq!(router.lookup(&Method::GET, None, "/", None, &HeaderMap::new()), Some(2));
}

#[test]
fn headers_rank_before_query() {
    let routes =
        [query(route(&[], "/"), &[("a", "*"), ("b", "*")]), headers(route(&[], "/"), &[("x-a", "*")])];
    let router = Router::new(&routes);
    let h = header_map(&[("x-a", "1")]);
    assert_eq!(router.lookup(&Method::GET, None, "/", Some("a&b"), &h), Some(1));
}

#[test]
fn more_query_matches_beat_fewer() {
    let routes = [
        route(&[], "/"),
        query(route(&[], "/"), &[("debug", "*")]),
        query(route(&[], "/"), &[("debug", "*"), ("v", "2")]),
    ];
    let router = Router::new(&routes);
    let none = HeaderMap::new();
    assert_eq!(router.lookup(&Method::GET, None, "/", Some("debug&v=2"), &none), Some(2));
    assert_eq!(router.lookup(&Method::GET, None, "/", Some("debug&v=1"), &none), Some(1));
    assert_eq!(router.lookup(&Method::GET, None, "/", Some("v=2"), &none), Some(0));
    assert_eq!(router.lookup(&Method::GET, None, "/", None, &none), Some(0));
}

#[test]
fn ties_go_to_the_route_loaded_first() {
    let routes =
        [route(&[], "/b"), route(&[], "/a"), route(&[], "/a"), route(&["h"], "=/x"), route(&["h"], "=/x")];
    let router = Router::new(&routes);
    assert_eq!(get(&router, "h", "/a"), Some(1));
    assert_eq!(get(&router, "h", "/x"), Some(3));
}

#[test]
fn header_present_and_exact_with_multiple_values() {
    let routes =
        [headers(route(&[], "/"), &[("x-canary", "1")]), headers(route(&[], "/p"), &[("x-debug", "*")])];
    let router = Router::new(&routes);
    let lookup =
        |path: &str, hs: &[(&str, &str)]| router.lookup(&Method::GET, None, path, None, &header_map(hs));
    assert_eq!(lookup("/", &[("x-canary", "1")]), Some(0));
    assert_eq!(lookup("/", &[("x-canary", "0"), ("x-canary", "1")]), Some(0));
    assert_eq!(lookup("/", &[("X-Canary", "1")]), Some(0), "header names are case-insensitive");
    assert_eq!(lookup("/", &[("x-canary", "0")]), None);
    assert_eq!(lookup("/", &[("x-canary", "0, 1")]), None, "one value per header line");
    assert_eq!(lookup("/", &[]), None);
    assert_eq!(lookup("/p", &[("x-debug", "")]), Some(1));
    assert_eq!(lookup("/p", &[("x-debug", "anything")]), Some(1));
    assert_eq!(lookup("/p", &[]), None);
}

#[test]
fn query_present_exact_and_key_without_value() {
    let routes = [
        query(route(&[], "/e"), &[("v", "2")]),
        query(route(&[], "/p"), &[("debug", "*")]),
        query(route(&[], "/n"), &[("flag", "")]),
    ];
    let router = Router::new(&routes);
    let lookup = |path: &str, q: Option<&str>| router.lookup(&Method::GET, None, path, q, &HeaderMap::new());
    assert_eq!(lookup("/e", Some("v=2")), Some(0));
    assert_eq!(lookup("/e", Some("v=1&v=2")), Some(0));
    assert_eq!(lookup("/e", Some("v=1")), None);
    assert_eq!(lookup("/e", Some("v")), None);
    assert_eq!(lookup("/e", Some("xv=2")), None);
    assert_eq!(lookup("/e", None), None);
    assert_eq!(lookup("/p", Some("debug")), Some(1));
    assert_eq!(lookup("/p", Some("a=1&debug=0")), Some(1));
    assert_eq!(lookup("/p", Some("debugx")), None);
    assert_eq!(lookup("/n", Some("flag")), Some(2));
    assert_eq!(lookup("/n", Some("flag=")), Some(2));
    assert_eq!(lookup("/n", Some("flag=1")), None);
}

// === API ===

#[test]
fn empty_router_matches_nothing() {
    let router = Router::new(&[]);
    assert!(router.is_empty());
    assert_eq!(get(&router, "h", "/"), None);
    assert!(router.precedence_order().is_empty());
}

#[test]
fn lookup_request_uses_authority_then_host_header() {
    let router = Router::new(&[route(&[], "/"), query(route(&["api.test"], "/a"), &[("x", "1")])]);
    let req = Request::get("/a/b?x=1").header("host", "API.test:8080").body(()).unwrap();
    assert_eq!(router.lookup_request(&req), Some(1));
    let req = Request::get("http://api.test:8080/a?x=1").header("host", "other").body(()).unwrap();
    assert_eq!(router.lookup_request(&req), Some(1));
    let req = Request::get("/a?x=1").body(()).unwrap();
    assert_eq!(router.lookup_request(&req), Some(0));
}

#[test]
fn precedence_order_lists_every_route_most_specific_first() {
    let routes = [
        route(&[], "/"),                                          // 0
        route(&["*.example.com"], "/"),                           // 1
        route(&["api.example.com"], "/"),                         // 2
        route(&["*.b.example.com"], "/"),                         // 3
        route(&["api.example.com"], "=/x"),                       // 4
        route(&["api.example.com"], "~/r"),                       // 5
        route(&["api.example.com"], "/long/prefix"),              // 6
        methods(route(&["api.example.com"], "/"), &["GET"]),      // 7
        headers(route(&["api.example.com"], "/"), &[("a", "*")]), // 8
        query(route(&["api.example.com"], "/"), &[("q", "*")]),   // 9
        route(&["*.example.com", "exact.test"], "/"),             // 10
        route(&[], "~/r"),                                        // 11
    ];
    let router = Router::new(&routes);
    assert_eq!(router.len(), routes.len());
    assert_eq!(router.precedence_order(), vec![4, 6, 7, 8, 9, 2, 10, 5, 3, 1, 0, 11]);
}

#[test]
fn router_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync + std::fmt::Debug>() {}
    assert_send_sync::<Router>();
}

// === randomized comparison with a naive reference ===

/// The reference: scan every route, keep those that match, pick the smallest precedence key.
/// Written independently of the router's indexes (string operations, allocation freely).
fn reference(
    routes: &[RouteConfig],
    method: &Method,
    host: Option<&str>,
    path: &str,
    q: Option<&str>,
    hs: &HeaderMap,
) -> Option<usize> {
    let host = host.map(|h| {
        let h = h.to_ascii_lowercase();
        if h.starts_with('[') {
            h[..=h.find(']').unwrap()].to_owned()
        } else if h.matches(':').count() == 1 {
            h.split(':').next().unwrap().to_owned()
        } else {
            h
        }
    });
    let pairs: Vec<(&str, &str)> = q
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.find('=') {
            Some(i) => (&p[..i], &p[i + 1..]),
            None => (p, ""),
        })
        .collect();
    routes
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let host_key = if r.hosts.is_empty() {
                (2, Reverse(0))
            } else {
                let host = host.as_deref()?;
                r.hosts
                    .iter()
                    .filter_map(|m| match m {
                        HostMatch::Exact(e) if e == host => Some((0, Reverse(0))),
                        HostMatch::Wildcard(s)
                            if host.len() > s.len() + 1 && host.ends_with(&format!(".{s}")) =>
                        {
                            Some((1, Reverse(s.len())))
                        }
                        _ => None,
                    })
                    .min()?
            };
            let path_key = match &r.path {
                PathMatch::Exact(p) => (p == path).then_some((0, Reverse(0)))?,
                PathMatch::Prefix(p) => {
                    let ok = p == "/"
                        || path == p
                        || path.strip_prefix(p.as_str()).is_some_and(|rest| rest.starts_with('/'));
                    ok.then_some((1, Reverse(p.len())))?
                }
                PathMatch::Regex(re) => re.is_match(path).then_some((2, Reverse(0)))?,
            };
            let ok = (r.methods.is_empty() || r.methods.contains(method))
                && r.headers.iter().all(|(n, v)| match v {
                    ValueMatch::Present => hs.get(n).is_some(),
                    ValueMatch::Exact(v) => hs.get_all(n).iter().any(|h| h == v.as_str()),
                })
                && r.query.iter().all(|(k, v)| match v {
                    ValueMatch::Present => pairs.iter().any(|(pk, _)| pk == k),
                    ValueMatch::Exact(v) => pairs.iter().any(|(pk, pv)| pk == k && pv == v),
                });
            ok.then_some((
                host_key,
                path_key,
                Reverse(!r.methods.is_empty()),
                Reverse(r.headers.len()),
                Reverse(r.query.len()),
                i,
            ))
        })
        .min()
        .map(|key| key.5)
}

const ROUTE_HOSTS: [&str; 8] = [
    "a.example.com",
    "b.example.com",
    "example.com",
    "x.a.example.com",
    "[::1]",
    "*.example.com",
    "*.a.example.com",
    "*.com",
];
const REQUEST_HOSTS: [&str; 9] = [
    "a.example.com",
    "b.example.com",
    "example.com",
    "x.a.example.com",
    "y.x.a.example.com",
    "c.example.com",
    "other.org",
    "[::1]",
    "com",
];
const SEGMENTS: [&str; 5] = ["a", "b", "c", "ab", ""];
const REGEXES: [&str; 5] = ["/a/[^/]+", "/[ab]/.*", "/c", "/a.*", "/.*/b"];
const METHODS: [Method; 4] = [Method::GET, Method::POST, Method::PUT, Method::DELETE];
const HEADER_MATCHERS: [(&str, &str); 4] = [("x-a", "*"), ("x-a", "1"), ("x-b", "2"), ("x-c", "*")];
const QUERY_MATCHERS: [(&str, &str); 4] = [("p", "*"), ("p", "1"), ("q", ""), ("r", "2")];

fn random_path(rng: &mut fastrand::Rng, max_depth: usize, allow_empty: bool) -> String {
    let depth = rng.usize(0..=max_depth);
    let mut path = String::new();
    for _ in 0..depth {
        path.push('/');
        let segments = if allow_empty { &SEGMENTS[..] } else { &SEGMENTS[..4] };
        path.push_str(segments[rng.usize(..segments.len())]);
    }
    if path.is_empty() {
        path.push('/');
    }
    path
}

fn random_route(rng: &mut fastrand::Rng) -> RouteConfig {
    let host_count = [0, 0, 1, 1, 1, 2][rng.usize(..6)];
    let hosts: Vec<&str> = (0..host_count).map(|_| ROUTE_HOSTS[rng.usize(..ROUTE_HOSTS.len())]).collect();
    let path = match rng.u8(..10) {
        0..=1 => format!("={}", random_path(rng, 3, true)),
        2..=7 => random_path(rng, 3, false),
        _ => format!("~{}", REGEXES[rng.usize(..REGEXES.len())]),
    };
    let mut r = route(&hosts, &path);
    if rng.bool() {
        let n = rng.usize(1..=2);
        r.methods = (0..n).map(|_| METHODS[rng.usize(..3)].clone()).collect();
    }
    let mut hs: Vec<(&str, &str)> = (0..rng.usize(0..=2)).map(|_| HEADER_MATCHERS[rng.usize(..4)]).collect();
    hs.dedup_by_key(|(n, _)| *n);
    let mut qs: Vec<(&str, &str)> = (0..rng.usize(0..=2)).map(|_| QUERY_MATCHERS[rng.usize(..4)]).collect();
    qs.dedup_by_key(|(k, _)| *k);
    query(headers(r, &hs), &qs)
}

fn random_case(rng: &mut fastrand::Rng, s: &str) -> String {
    s.chars().map(|c| if rng.u8(..4) == 0 { c.to_ascii_uppercase() } else { c }).collect()
}

#[test]
fn randomized_lookup_agrees_with_reference() {
    let mut rng = fastrand::Rng::with_seed(0x5717_c4a2_d0e1);
    let mut checked = 0;
    let mut matched = 0;
    for &(route_count, request_count) in &[(3, 400), (10, 600), (40, 800), (200, 800), (3000, 1500)] {
        for _round in 0..if route_count < 100 { 20 } else { 2 } {
            let routes: Vec<RouteConfig> = (0..route_count).map(|_| random_route(&mut rng)).collect();
            let router = Router::new(&routes);
            for _ in 0..request_count / if route_count < 100 { 10 } else { 1 } {
                let method = METHODS[rng.usize(..4)].clone();
                let host = match rng.u8(..10) {
                    0 => None,
                    n => {
                        let mut h = {
                            let base = REQUEST_HOSTS[rng.usize(..REQUEST_HOSTS.len())];
                            random_case(&mut rng, base)
                        };
                        if n < 4 {
                            h.push_str(":8080");
                        }
                        Some(h)
                    }
                };
                let mut path = random_path(&mut rng, 4, true);
                if rng.u8(..8) == 0 {
                    path.push('x');
                }
                let q: Vec<String> = (0..rng.usize(0..=3))
                    .map(|_| ["p", "p=1", "p=2", "q", "q=", "q=1", "r=2", "s"][rng.usize(..8)].to_owned())
                    .collect();
                let q = q.join("&");
                let q = (!q.is_empty() || rng.bool()).then_some(q);
                let mut hs = HeaderMap::new();
                for _ in 0..rng.usize(0..=3) {
                    let (n, v) =
                        [("x-a", "1"), ("x-a", "0"), ("x-b", "2"), ("x-b", "3"), ("x-c", "")][rng.usize(..5)];
                    hs.append(n, HeaderValue::from_static(v));
                }
                let want = reference(&routes, &method, host.as_deref(), &path, q.as_deref(), &hs);
                let got = router.lookup(&method, host.as_deref(), &path, q.as_deref(), &hs);
                assert_eq!(
                    got, want,
                    "{method} host={host:?} path={path:?} query={q:?} headers={hs:?}\nrouter picked {:?}\nreference picked {:?}",
                    got.map(|i| &routes[i]),
                    want.map(|i| &routes[i]),
                );
                checked += 1;
                matched += usize::from(want.is_some());
            }
        }
    }
    // The generator must produce both outcomes in earnest for the comparison to mean much.
    assert!(checked > 5000, "{checked}");
    assert!(matched > checked / 4 && matched < checked * 9 / 10, "{matched} of {checked}");
}
