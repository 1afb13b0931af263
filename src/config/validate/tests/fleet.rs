//! `[gateway] routes_source` and `routes_cache`.

use std::time::Duration;

use super::{assert_prefix, scratch};
use crate::config::validate::load_gateway;
use crate::config::{ConsulAddress, RoutesSource};

/// A `gateway.toml` holding `gateway` as its `[gateway]` table (and one listener), in a
/// scratch folder of its own.
fn write(name: &str, gateway: &str) -> std::path::PathBuf {
    let path = scratch(name).join("gateway.toml");
    std::fs::write(
        &path,
        format!("[gateway]\n{gateway}\n[[listener]]\nname = \"a\"\nlisten = \"0.0.0.0:80\"\n"),
    )
    .unwrap();
    path
}

fn load(name: &str, gateway: &str) -> Result<crate::config::GatewayConfig, String> {
    load_gateway(&write(name, gateway)).map_err(|e| e.to_string())
}

/// The errors of a load as `LINE:COLUMN: message`.
fn errors(name: &str, gateway: &str) -> Vec<String> {
    let path = write(name, gateway);
    let p = format!("{}:", path.display());
    load_gateway(&path).unwrap_err().0.iter().map(|e| e.to_string().replacen(&p, "", 1)).collect()
}

#[test]
fn zookeeper_and_consul_sources_with_their_defaults() {
    let g = load(
        "fleet-zk",
        "routes_source = { type = \"zookeeper\", servers = \"zk1:2181,zk2:2181\", path = \"/switchyard/edge/\" }\n\
         routes_cache = \"state/routes\"",
    )
    .unwrap();
    assert_eq!(
        g.routes_source,
        Some(RoutesSource::ZooKeeper {
            servers: "zk1:2181,zk2:2181".into(),
            path: "/switchyard/edge".into(),
            session_timeout: Duration::from_secs(10),
            auth: None,
        })
    );
    let cache = g.routes_cache.unwrap();
    assert!(
        cache.to_string_lossy().ends_with("-fleet-zk/state/routes"),
        "relative to gateway.toml: {}",
        cache.display()
    );
    let g = load(
        "fleet-consul",
        "routes_source = { type = \"consul\", address = \"http://127.0.0.1:8500\", prefix = \"/switchyard/edge/\", token_env = \"T\" }",
    )
    .unwrap();
    assert_eq!(
        g.routes_source,
        Some(RoutesSource::Consul {
            address: ConsulAddress::parse("http://127.0.0.1:8500").unwrap(),
            prefix: "switchyard/edge".into(),
            token_env: Some("T".into()),
            tls_ca: None,
        })
    );
    assert_eq!(g.routes_cache, None);
}

#[test]
fn a_source_is_exclusive_with_routes_dir_and_takes_only_its_own_keys() {
    let e = errors(
        "fleet-bad",
        "routes_dir = \"routes\"\nroutes_source = { type = \"consul\", address = \"http://c:8500\", prefix = \"p\", servers = \"zk:2181\" }",
    );
    assert_eq!(e.len(), 2, "{e:#?}");
    assert_prefix(&e[0], "3:17: `routes_source` and `routes_dir` are exclusive");
    assert_prefix(
        &e[1],
        "3:87: `servers` is not a consul routes_source key; consul takes: address, prefix, token_env",
    );

    let e = errors("fleet-type", "routes_source = { type = \"etcd\" }");
    assert_eq!(e, ["2:26: unknown routes_source type \"etcd\"; expected zookeeper or consul"]);

    let e = errors("fleet-missing", "routes_source = { type = \"zookeeper\", servers = \"zk:2181\" }");
    assert_eq!(e, ["2:26: a zookeeper routes_source needs `path`"]);

    let e = errors(
        "fleet-path",
        "routes_source = { type = \"zookeeper\", servers = \"zk:2181\", path = \"a/../b\" }",
    );
    assert_prefix(&e[0], "2:67: zookeeper `path` \"a/../b\" must be an absolute node path");

    let e = errors("fleet-cache", "routes_cache = \"state\"");
    assert_eq!(e, ["2:16: `routes_cache` applies only with `routes_source` (fleet mode)"]);
}

#[test]
fn auth_env_must_hold_user_and_password_at_load() {
    let src = |var: &str| {
        format!("routes_source = {{ type = \"zookeeper\", servers = \"zk:2181\", path = \"/f\", auth_env = \"{var}\" }}")
    };
    let e = errors("fleet-auth-unset", &src("SWITCHYARD_TEST_ZK_AUTH_UNSET"));
    assert_prefix(
        &e[0],
        "2:84: the environment variable \"SWITCHYARD_TEST_ZK_AUTH_UNSET\" named by `auth_env` is not set",
    );
    // A variable only this test sets.
    std::env::set_var("SWITCHYARD_TEST_ZK_AUTH_BAD", "nopassword");
    let e = errors("fleet-auth-bad", &src("SWITCHYARD_TEST_ZK_AUTH_BAD"));
    assert_prefix(&e[0], "2:84: the environment variable \"SWITCHYARD_TEST_ZK_AUTH_BAD\" named by `auth_env` does not hold \"user:password\"");
    std::env::set_var("SWITCHYARD_TEST_ZK_AUTH_OK", "pub:pw");
    let g = load("fleet-auth-ok", &src("SWITCHYARD_TEST_ZK_AUTH_OK")).unwrap();
    let Some(RoutesSource::ZooKeeper { auth: Some(a), .. }) = g.routes_source else { panic!("no auth") };
    assert_eq!(a.user, "pub");
    assert!(!format!("{a:?}").contains("pw"), "the password never shows: {a:?}");
    // ZooKeeper's DigestAuthenticationProvider: user:base64(sha1("user:password")).
    assert_eq!(a.digest_id(), "pub:PtIQkOBO4Ko+41FXx1KV74eGp60=");
}
