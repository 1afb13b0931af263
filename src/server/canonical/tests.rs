use super::*;
use proptest::prelude::*;

fn cfg() -> HttpConfig {
    HttpConfig::default()
}

fn with(escaped: EscapedSlashes) -> HttpConfig {
    HttpConfig { escaped_slashes: escaped, ..HttpConfig::default() }
}

fn norm(p: &str) -> Result<String, Rejection> {
    path(p, &cfg()).map(Cow::into_owned)
}

#[test]
fn paths_that_need_nothing_are_not_copied() {
    for p in ["/", "/a", "/a/b/c", "/a.b/c.d", "/a/b/", "/users/7..8"] {
        assert!(matches!(path(p, &cfg()), Ok(Cow::Borrowed(_))), "{p}");
    }
}

#[test]
fn the_known_tricks_all_become_admin() {
    assert_eq!(norm("/x/../admin").unwrap(), "/admin");
    assert_eq!(norm("//admin").unwrap(), "/admin");
    assert_eq!(norm("/%61dmin").unwrap(), "/admin");
    assert_eq!(norm("/%61%64%6D%69%6e").unwrap(), "/admin");
    assert_eq!(norm("/./admin").unwrap(), "/admin");
    assert_eq!(norm("/x/%2e%2e/admin").unwrap(), "/admin");
    assert_eq!(norm("/x/.%2E/admin").unwrap(), "/admin");
    assert_eq!(norm("///x//..//admin").unwrap(), "/admin");
    assert_eq!(norm("/api/../admin/secret").unwrap(), "/admin/secret");
}

#[test]
fn dot_segments_follow_rfc3986() {
    // RFC 3986 section 5.2.4's own examples, and the trailing-slash rules.
    assert_eq!(norm("/a/b/c/./../../g").unwrap(), "/a/g");
    assert_eq!(norm("/a/b/..").unwrap(), "/a/");
    assert_eq!(norm("/a/b/.").unwrap(), "/a/b/");
    assert_eq!(norm("/a/.").unwrap(), "/a/");
    assert_eq!(norm("/.").unwrap(), "/");
    assert_eq!(norm("/a/..").unwrap(), "/");
    assert_eq!(norm("/a/b/").unwrap(), "/a/b/");
    assert_eq!(norm("/a//").unwrap(), "/a/");
    assert_eq!(norm("/a/...").unwrap(), "/a/...");
    assert_eq!(norm("/a/.b/..c").unwrap(), "/a/.b/..c");
}

#[test]
fn climbing_above_the_root_is_refused() {
    for p in ["/..", "/../admin", "/a/../../admin", "/%2e%2e/admin", "/.%2e", "//../x"] {
        assert_eq!(norm(p), Err(Rejection::AboveRoot), "{p}");
    }
}

#[test]
fn escapes_are_decoded_or_upper_cased() {
    assert_eq!(norm("/a%7eb").unwrap(), "/a~b");
    assert_eq!(norm("/a%3ab").unwrap(), "/a%3Ab");
    assert_eq!(norm("/%e2%82%ac").unwrap(), "/%E2%82%AC");
    assert_eq!(norm("/a%20b").unwrap(), "/a%20b");
    // %25 is '%': it stays encoded, so "%2561" never becomes "a".
    assert_eq!(norm("/%2561dmin").unwrap(), "/%2561dmin");
    assert_eq!(norm("/a%00b").unwrap(), "/a%00b");
}

#[test]
fn malformed_escapes_and_backslashes_are_refused() {
    for p in ["/a%", "/a%2", "/a%zz", "/a%2g/b", "/%%41"] {
        assert_eq!(norm(p), Err(Rejection::BadEscape), "{p}");
    }
    for p in ["/a\\b", "/\\admin", "/..\\admin"] {
        assert_eq!(norm(p), Err(Rejection::Backslash), "{p}");
    }
}

#[test]
fn escaped_slashes_reject_keep_or_decode() {
    for p in ["/a%2Fb", "/a%2fb", "/a%5Cb", "/a%5cb"] {
        assert_eq!(path(p, &cfg()), Err(Rejection::EscapedSlash), "{p}");
    }
    let keep = with(EscapedSlashes::Keep);
    assert_eq!(path("/a%2fb", &keep).unwrap(), "/a%2Fb");
    assert_eq!(path("/a%5cb", &keep).unwrap(), "/a%5Cb");
    assert_eq!(path("/x/..%2F..%2Fadmin", &keep).unwrap(), "/x/..%2F..%2Fadmin");
    let decode = with(EscapedSlashes::Decode);
    assert_eq!(path("/a%2fb", &decode).unwrap(), "/a/b");
    assert_eq!(path("/x/..%2Fadmin", &decode).unwrap(), "/admin");
    assert_eq!(path("/..%2Fadmin", &decode), Err(Rejection::AboveRoot));
    assert_eq!(path("/a%5cb", &decode), Err(Rejection::Backslash));
}

#[test]
fn switches_turn_steps_off() {
    let off =
        HttpConfig { normalize_path: false, merge_slashes: false, escaped_slashes: EscapedSlashes::Keep };
    assert_eq!(path("//x/../%61", &off).unwrap(), "//x/../%61");
    let merge_only = HttpConfig { normalize_path: false, ..HttpConfig::default() };
    assert_eq!(path("//x/../%61", &merge_only).unwrap(), "/x/../%61");
    let no_merge = HttpConfig { merge_slashes: false, ..HttpConfig::default() };
    assert_eq!(path("//x/./%61", &no_merge).unwrap(), "//x/a");
    // Still refused whatever the switches: a raw backslash, a broken escape.
    assert_eq!(path("/a\\b", &off), Err(Rejection::Backslash));
    assert_eq!(path("/a%g0", &off), Err(Rejection::BadEscape));
}

fn req(method: &str, target: &str, version: Version, hosts: &[&str]) -> Request<()> {
    let mut b = Request::builder().method(method).uri(target).version(version);
    for h in hosts {
        b = b.header(header::HOST, *h);
    }
    b.body(()).unwrap()
}

#[test]
fn http11_needs_exactly_one_valid_host() {
    let c = cfg();
    let mut r = req("GET", "/", Version::HTTP_11, &["a.example"]);
    assert_eq!(request(&mut r, &c).unwrap().host.unwrap(), "a.example");
    let mut r = req("GET", "/", Version::HTTP_11, &[]);
    assert_eq!(request(&mut r, &c).unwrap_err(), Rejection::MissingHost);
    let mut r = req("GET", "/", Version::HTTP_11, &["a.example", "b.example"]);
    assert_eq!(request(&mut r, &c).unwrap_err(), Rejection::MultipleHosts);
    for bad in
        ["a.example, b.example", "", "a b", "user@a.example", "a.example:", "a:99999", "a:x", "[::1", "[zz]"]
    {
        let mut r = req("GET", "/", Version::HTTP_11, &[bad]);
        assert_eq!(request(&mut r, &c).unwrap_err(), Rejection::InvalidHost, "{bad:?}");
    }
    for good in ["a.example:8080", "127.0.0.1", "[::1]:443", "A-B.example.", "x_y.internal"] {
        let mut r = req("GET", "/", Version::HTTP_11, &[good]);
        assert_eq!(request(&mut r, &c).unwrap().host.unwrap(), good);
    }
    // HTTP/1.0 may omit it.
    let mut r = req("GET", "/", Version::HTTP_10, &[]);
    assert!(request(&mut r, &c).unwrap().host.is_none());
}

#[test]
fn an_absolute_target_supplies_the_host() {
    let mut r = req("GET", "http://b.example/x/../p?q=1", Version::HTTP_11, &["a.example"]);
    let got = request(&mut r, &cfg()).unwrap();
    assert_eq!(got.host.unwrap(), "b.example");
    assert_eq!(r.headers()[header::HOST], "b.example");
    assert_eq!(r.uri().to_string(), "/p?q=1");
    assert!(r.uri().authority().is_none());
    let mut r = req("GET", "ftp://b.example/p", Version::HTTP_11, &["b.example"]);
    assert_eq!(request(&mut r, &cfg()).unwrap_err(), Rejection::BadTarget);
}

#[test]
fn http2_authority_is_the_host_and_host_must_agree() {
    let mut r = req("GET", "https://a.example/p", Version::HTTP_2, &[]);
    assert_eq!(request(&mut r, &cfg()).unwrap().host.unwrap(), "a.example");
    assert_eq!(r.headers()[header::HOST], "a.example");
    let mut r = req("GET", "https://a.example/p", Version::HTTP_2, &["A.EXAMPLE"]);
    assert!(request(&mut r, &cfg()).is_ok());
    let mut r = req("GET", "https://a.example/p", Version::HTTP_2, &["b.example"]);
    assert_eq!(request(&mut r, &cfg()).unwrap_err(), Rejection::AuthorityMismatch);
    let mut r = req("GET", "/p", Version::HTTP_2, &["b.example"]);
    assert_eq!(request(&mut r, &cfg()).unwrap().host.unwrap(), "b.example");
    let mut r = req("GET", "/p", Version::HTTP_2, &[]);
    assert_eq!(request(&mut r, &cfg()).unwrap_err(), Rejection::MissingHost);
}

#[test]
fn connect_and_stray_asterisks_are_refused() {
    let mut r = req("CONNECT", "a.example:443", Version::HTTP_11, &["a.example:443"]);
    assert_eq!(request(&mut r, &cfg()).unwrap_err(), Rejection::Connect);
    let mut r = req("OPTIONS", "*", Version::HTTP_11, &["a"]);
    assert!(request(&mut r, &cfg()).is_ok());
    let mut r = req("GET", "*", Version::HTTP_11, &["a"]);
    assert_eq!(request(&mut r, &cfg()).unwrap_err(), Rejection::BadTarget);
}

#[test]
fn hop_by_hop_headers_and_forwarded_host_go_on_arrival() {
    let mut r = req("GET", "/", Version::HTTP_11, &["a"]);
    let h = r.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade, host, x-env, x-forwarded-for"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert("x-env", HeaderValue::from_static("client"));
    h.insert("x-forwarded-host", HeaderValue::from_static("evil"));
    h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
    h.insert("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
    let got = request(&mut r, &cfg()).unwrap();
    assert_eq!(got.upgrade.unwrap(), "websocket");
    let h = r.headers();
    for gone in ["connection", "upgrade", "x-env", "x-forwarded-host", "x-forwarded-proto", "x-forwarded-for"]
    {
        assert!(h.get(gone).is_none(), "{gone}");
    }
    // `Connection: host` cannot remove the Host: the gateway puts the canonical one back.
    assert_eq!(h[header::HOST], "a");
}

// === properties ===

fn segment() -> impl Strategy<Value = String> {
    prop::string::string_regex("[a-zA-Z0-9._~-]{1,6}")
        .unwrap()
        .prop_filter("not a dot-segment", |s| s != "." && s != "..")
}

fn canonical_path() -> impl Strategy<Value = String> {
    (prop::collection::vec(segment(), 0..5), any::<bool>()).prop_map(|(segs, slash)| {
        let mut p = format!("/{}", segs.join("/"));
        if slash && !segs.is_empty() {
            p.push('/');
        }
        p
    })
}

/// Another spelling of `canonical`: unreserved characters escaped (in either case), `./` and
/// `x/../` inserted, slashes doubled. Every choice is driven by `noise`.
fn respell(canonical: &str, noise: &[u8]) -> String {
    let mut n = noise.iter().copied().cycle();
    let mut out = String::new();
    for (i, seg) in canonical.split('/').enumerate() {
        if i > 0 {
            out.push('/');
            match n.next().unwrap_or(0) % 6 {
                0 => out.push_str("./"),
                1 => out.push_str("zz/../"),
                2 => out.push('/'),
                3 => out.push_str("%2e/"),
                _ => {}
            }
        }
        for c in seg.chars() {
            match n.next().unwrap_or(0) % 4 {
                0 => out.push_str(&format!("%{:02x}", c as u32)),
                1 => out.push_str(&format!("%{:02X}", c as u32)),
                _ => out.push(c),
            }
        }
    }
    out
}

fn any_path() -> impl Strategy<Value = String> {
    prop::string::string_regex("/[a-zA-Z0-9%./_~\\-:@!$&'()*+,;=]{0,40}").unwrap()
}

fn any_cfg() -> impl Strategy<Value = HttpConfig> {
    (any::<bool>(), any::<bool>(), 0..3u8).prop_map(|(normalize_path, merge_slashes, e)| HttpConfig {
        normalize_path,
        merge_slashes,
        escaped_slashes: [EscapedSlashes::Reject, EscapedSlashes::Keep, EscapedSlashes::Decode]
            [usize::from(e)],
    })
}

proptest! {
    #[test]
    fn canonicalisation_is_idempotent(p in any_path(), c in any_cfg()) {
        if let Ok(once) = path(&p, &c) {
            let twice = path(&once, &c).expect("a canonical path is accepted");
            prop_assert_eq!(once.as_ref(), twice.as_ref());
        }
    }

    #[test]
    fn canonical_paths_have_no_dot_segments_double_slashes_or_escaped_slashes(p in any_path()) {
        if let Ok(out) = path(&p, &cfg()) {
            prop_assert!(out.starts_with('/'));
            prop_assert!(!out.contains("//"), "{}", out);
            for seg in out.split('/') {
                prop_assert!(seg != "." && seg != "..", "{}", out);
            }
            let upper = out.to_ascii_uppercase();
            prop_assert!(!upper.contains("%2F") && !upper.contains("%5C"), "{}", out);
            prop_assert!(!out.contains('\\'));
        }
    }

    #[test]
    fn every_spelling_of_a_canonical_path_is_that_path(
        p in canonical_path(),
        noise in prop::collection::vec(any::<u8>(), 1..32),
    ) {
        let spelled = respell(&p, &noise);
        let got = path(&spelled, &cfg());
        prop_assert_eq!(got.as_deref(), Ok(p.as_str()), "spelled {}", spelled);
    }

    #[test]
    fn host_validation_never_panics(h in prop::collection::vec(any::<u8>(), 0..40)) {
        let _ = valid_host(&h);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// What the router relies on: a route that matches the canonical form of a path
    /// matches every spelling of it, once the listener has canonicalised it.
    #[test]
    fn a_route_for_the_canonical_path_matches_every_spelling(
        p in canonical_path().prop_filter("not the root", |p| p != "/"),
        noise in prop::collection::vec(any::<u8>(), 1..32),
    ) {
        let prefix = p.trim_end_matches('/');
        let text = format!(
            "[[route]]\nname = \"deny\"\npath_prefix = \"{prefix}\"\nrespond = {{ status = 403 }}\n\
             [[route]]\nname = \"rest\"\nrespond = {{ status = 200 }}\n"
        );
        let set = crate::config::load_routes_from_sources(vec![("t.toml".into(), text)]).unwrap();
        let router = crate::router::Router::new(&set.routes);
        let headers = http::HeaderMap::new();
        let spelled = respell(&p, &noise);
        let canonical = path(&spelled, &cfg()).unwrap();
        let hit = router.lookup(&Method::GET, Some("a.example"), &canonical, None, &headers);
        prop_assert_eq!(hit, Some(0), "{} (from {}) missed the route for {}", canonical, spelled, prefix);
    }
}
