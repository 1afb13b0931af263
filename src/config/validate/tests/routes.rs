//! Route files that load (the documented example, defaults, each matcher and action, load
//! order), and the errors particular to a route's matchers and action.

use std::path::PathBuf;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, StatusCode};

use super::{assert_prefix, error, load, route, scratch, USERS};
use crate::config::validate::load_routes;
use crate::config::{
    Action, Balance, DiscoveryConfig, HashOn, HeaderEdits, HealthCheck, HealthKind, HostMatch, Origin,
    Outlier, PathMatch, RateLimit, RateLimitKey, RetryOn, RetryPolicy, StaticEndpoint, UpstreamConfig,
    UpstreamLimits, UpstreamProtocol, UpstreamTls, ValueMatch,
};

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

    let r =
        route("upstream = \"users\"\nrate_limit = { requests_per_second = 2.5, key = \"header:X-Api-Key\" }");
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

    let r = route("split = [{ upstream = \"users\", weight = 90 }, { upstream = \"users\", weight = 0 }]");
    assert_eq!(r.action, Action::Split(vec![("users".into(), 90), ("users".into(), 0)]));

    let r =
        route("respond = { status = 200, body = \"ok\", headers = { \"Content-Type\" = \"text/plain\" } }");
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
    assert_eq!(r.action, Action::Redirect { to: "https://example.com".into(), status: StatusCode::FOUND });
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
    assert_prefix(&e, &format!("{}:1:1: cannot read the routes directory", dir.join("missing").display()));
}

#[test]
fn empty_route_set_is_valid() {
    let set = load(&[("a.toml", "# nothing yet\n")]).unwrap();
    assert!(set.routes.is_empty() && set.upstreams.is_empty());
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
    let bad = |h: &str| error(&format!("[[route]]\nname = \"a\"\nupstream = \"users\"\nhosts = [\"{h}\"]\n"));
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
