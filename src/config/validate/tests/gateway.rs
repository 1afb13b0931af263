//! `gateway.toml`: the documented example, defaults, relative paths, and the admin token.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{assert_prefix, scratch};
use crate::config::validate::load_gateway;
use crate::config::{AccessLogConfig, GatewayConfig, Limits, ListenerConfig, ListenerTls};

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
                    http3: false,
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
            format!("[gateway]\ndrain_delay = {v}\n[[listener]]\nname = \"a\"\nlisten = \"0.0.0.0:80\"\n"),
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

    std::fs::write(&path, "[[listener]]\nname = \"a\"\nlisten = \"0.0.0.0:80\"\n[limits]\nmax_conns = 1\n")
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
