//! `[[upstream]]`: the documented discovery examples, defaults, endpoint addresses, and which
//! keys each discovery type takes.

use std::path::Path;
use std::time::Duration;

use super::{assert_prefix, error, errors, upstream};
use crate::config::{
    Balance, ConsulAddress, DiscoveryConfig, DnsRecord, HashOn, HealthKind, Outlier, StaticEndpoint,
    UpstreamConfig, UpstreamLimits, UpstreamProtocol, ZkFormat,
};

#[test]
fn spec_discovery_examples() {
    let dns = upstream(
        r#"discovery = { type = "dns", name = "users.service.internal", port = 8080, record = "a", refresh = "30s", resolver = "127.0.0.1:53" }"#,
    );
    assert_eq!(
        dns.discovery,
        DiscoveryConfig::Dns {
            name: "users.service.internal".into(),
            port: 8080,
            record: DnsRecord::A,
            refresh: Duration::from_secs(30),
            resolver: Some("127.0.0.1:53".parse().unwrap()),
        }
    );
    let zk = upstream(
        r#"discovery = { type = "zookeeper", servers = "127.0.0.1:2181", path = "/services/users", format = "auto", endpoint_name = "http", session_timeout = "10s" }"#,
    );
    assert_eq!(
        zk.discovery,
        DiscoveryConfig::ZooKeeper {
            servers: "127.0.0.1:2181".into(),
            path: "/services/users".into(),
            format: ZkFormat::Auto,
            endpoint_name: Some("http".into()),
            session_timeout: Duration::from_secs(10),
        }
    );
    let consul = upstream(
        r#"discovery = { type = "consul", address = "http://127.0.0.1:8500", service = "users", tag = "v2", datacenter = "dc1", passing_only = true, token_env = "CONSUL_HTTP_TOKEN", wait = "5m" }"#,
    );
    assert_eq!(
        consul.discovery,
        DiscoveryConfig::Consul {
            address: ConsulAddress::parse("http://127.0.0.1:8500").unwrap(),
            service: "users".into(),
            tag: Some("v2".into()),
            datacenter: Some("dc1".into()),
            passing_only: true,
            token_env: Some("CONSUL_HTTP_TOKEN".into()),
            wait: Duration::from_secs(300),
            tls_ca: None,
            tls_insecure_skip_verify: false,
        }
    );
    // Defaults, and the table form of `discovery`.
    let srv = upstream("[upstream.discovery]\ntype = \"dns\"\nname = \"_http._tcp.users\"\nrecord = \"srv\"");
    assert!(matches!(
        srv.discovery,
        DiscoveryConfig::Dns { record: DnsRecord::Srv, refresh, resolver: None, .. } if refresh == Duration::from_secs(30)
    ));
    let consul = upstream(r#"discovery = { type = "consul", address = "https://c:8501", service = "s" }"#);
    assert!(matches!(
        consul.discovery,
        DiscoveryConfig::Consul { passing_only: true, wait, tag: None, .. } if wait == Duration::from_secs(300)
    ));
    let zk = upstream(r#"discovery = { type = "zookeeper", servers = "zk:2181", path = "/s" }"#);
    assert!(matches!(
        zk.discovery,
        DiscoveryConfig::ZooKeeper { format: ZkFormat::Auto, session_timeout, .. } if session_timeout == Duration::from_secs(10)
    ));
}

#[test]
fn upstream_defaults() {
    let u = upstream("endpoints = [\"backend.internal:80\", \"[::1]:8080\"]");
    assert_eq!(u.balance, Balance::RoundRobin);
    assert_eq!(u.hash_on, None);
    assert_eq!(u.protocol, UpstreamProtocol::Http1);
    assert_eq!(u.connect_timeout, Duration::from_secs(1));
    assert_eq!(u.panic_threshold, 0);
    assert_eq!((u.tls, u.health, u.outlier), (None, None, None));
    assert_eq!(u.limits, UpstreamLimits::default());
    assert_eq!(u.read_timeout, Duration::from_secs(60));
    // `UpstreamConfig::new` is what a file naming only the endpoints gives.
    let eps = |a: &[&str]| -> Vec<StaticEndpoint> {
        a.iter().map(|a| StaticEndpoint { address: a.to_string(), weight: 1 }).collect()
    };
    assert_eq!(
        upstream("endpoints = [\"backend.internal:80\", \"[::1]:8080\"]"),
        UpstreamConfig::new("u", DiscoveryConfig::Static(eps(&["backend.internal:80", "[::1]:8080"])))
    );

    let u = upstream(
        "endpoints = [\"a:1\"]\nbalance = \"maglev\"\n[upstream.health]\ntype = \"tcp\"\n[upstream.outlier]",
    );
    assert_eq!(u.hash_on, Some(HashOn::ClientIp));
    let h = u.health.unwrap();
    assert_eq!((h.kind, h.path.as_str(), h.expected_status), (HealthKind::Tcp, "/healthz", (200, 399)));
    assert_eq!((h.interval, h.timeout), (Duration::from_secs(5), Duration::from_secs(1)));
    assert_eq!((h.healthy_threshold, h.unhealthy_threshold), (2, 3));
    assert_eq!(
        u.outlier,
        Some(Outlier {
            consecutive_failures: 5,
            ejection_time: Duration::from_secs(30),
            max_ejection_percent: 10
        })
    );

    let u =
        upstream("endpoints = [\"a:1\"]\nhash_on = \"cookie:sid\"\n[upstream.health]\nexpected_status = 204");
    assert_eq!(u.hash_on, Some(HashOn::Cookie("sid".into())));
    assert_eq!(u.health.unwrap().expected_status, (204, 204));
}

#[test]
fn endpoints_and_discovery() {
    assert_prefix(
        &error("[[upstream]]\nname = \"u\"\nendpoints = [\"a:1\"]\ndiscovery = { type = \"dns\", name = \"x\", port = 80 }\n"),
        "routes/a.toml:2:8: upstream \"u\" sets both `endpoints` and `discovery`; set exactly one",
    );
    assert_prefix(
        &error("[[upstream]]\nname = \"u\"\nbalance = \"random\"\n"),
        "routes/a.toml:2:8: upstream \"u\" sets neither `endpoints` nor `discovery`; set exactly one",
    );
}

#[test]
fn endpoint_addresses() {
    let bad = |e: &str| error(&format!("[[upstream]]\nname = \"u\"\nendpoints = [\"{e}\"]\n"));
    assert_prefix(
        &bad("10.0.0.1"),
        "routes/a.toml:3:14: endpoint \"10.0.0.1\" has no port; write it as \"10.0.0.1:80\"",
    );
    assert_prefix(
        &bad("::1:80"),
        "routes/a.toml:3:14: invalid endpoint \"::1:80\": write IPv6 addresses in brackets",
    );
    assert_prefix(&bad("a:99999"), "routes/a.toml:3:14: invalid port \"99999\" in endpoint \"a:99999\"");
    assert_prefix(&bad("a:0"), "routes/a.toml:3:14: invalid port \"0\"");
    assert_prefix(
        &error("[[upstream]]\nname = \"u\"\nendpoints = [{ address = \"a:1\", weight = 0 }]\n"),
        "routes/a.toml:3:42: `weight` must be at least 1, got 0",
    );
    assert_prefix(
        &error("[[upstream]]\nname = \"u\"\nendpoints = []\n"),
        "routes/a.toml:3:13: `endpoints` is empty",
    );
}

#[test]
fn discovery_keys_per_type() {
    assert_prefix(
        &error("[[upstream]]\nname = \"u\"\ndiscovery = { type = \"dns\", name = \"x\", port = 80, service = \"s\" }\n"),
        "routes/a.toml:3:62: `service` is not a dns discovery key; dns takes: name, port, record, refresh, resolver",
    );
    assert_prefix(
        &error("[[upstream]]\nname = \"u\"\ndiscovery = { type = \"dns\", name = \"x\" }\n"),
        "routes/a.toml:3:22: dns discovery with record = \"a\" needs `port`",
    );
    assert_prefix(
        &error("[[upstream]]\nname = \"u\"\ndiscovery = { type = \"consul\", address = \"127.0.0.1:8500\", service = \"s\" }\n"),
        "routes/a.toml:3:42: consul `address` \"127.0.0.1:8500\" must be an http:// or https:// URL",
    );
    assert_prefix(
        &error("[[upstream]]\nname = \"u\"\ndiscovery = { type = \"zookeeper\", servers = \"zk:2181\" }\n"),
        "routes/a.toml:3:22: zookeeper discovery needs `path`",
    );
    assert_prefix(
        &error("[[upstream]]\nname = \"u\"\ndiscovery = { type = \"zookeeper\", servers = \"zk:2181\", path = \"s\" }\n"),
        "routes/a.toml:3:63: zookeeper `path` \"s\" must start with \"/\"",
    );
    assert_prefix(
        &error("[[upstream]]\nname = \"u\"\ndiscovery = { type = \"zookeeper\", servers = \"zk1:2181,zk2\", path = \"/s\" }\n"),
        "routes/a.toml:3:45: invalid zookeeper `servers` \"zk1:2181,zk2\": endpoint \"zk2\" has no port",
    );
    assert_prefix(
        &error("[[upstream]]\nname = \"u\"\ndiscovery = { type = \"static\" }\n"),
        "routes/a.toml:3:22: unknown discovery type \"static\"; expected one of: dns, zookeeper, consul; a static list",
    );
}

#[test]
fn consul_addresses() {
    let ok = |a: &str| ConsulAddress::parse(a).map(|c| (c.is_https(), c.to_string()));
    assert_eq!(ok("http://127.0.0.1:8500"), Ok((false, "http://127.0.0.1:8500".into())));
    assert_eq!(ok("https://consul.internal:8501/"), Ok((true, "https://consul.internal:8501".into())));
    assert_eq!(ok("HTTPS://[::1]:8501"), Ok((true, "https://[::1]:8501".into())));
    let bad = |a: &str| {
        error(&format!(
            "[[upstream]]\nname = \"u\"\ndiscovery = {{ type = \"consul\", address = \"{a}\", service = \"s\" }}\n"
        ))
    };
    assert_prefix(
        &bad("ftp://127.0.0.1:8500"),
        "routes/a.toml:3:42: consul `address` \"ftp://127.0.0.1:8500\" must be an http:// or https:// URL",
    );
    assert_prefix(
        &bad("https://c"),
        "routes/a.toml:3:42: consul `address` \"https://c\" has no port; write it as \"https://c:8501\"",
    );
    assert_prefix(&bad("http://:8500"), "routes/a.toml:3:42: consul `address` \"http://:8500\" has no host");
    assert_prefix(
        &bad("http://c:8500/consul"),
        "routes/a.toml:3:42: consul `address` \"http://c:8500/consul\" must be only a scheme, a host and a port",
    );
    assert_prefix(
        &bad("http://user:pw@c:8500"),
        "routes/a.toml:3:42: consul `address` \"http://user:pw@c:8500\" must be only a scheme",
    );
    assert_prefix(&bad("http://c:0"), "routes/a.toml:3:42: invalid port \"0\" in consul `address`");
    assert_prefix(
        &bad("http://::1:8500"),
        "routes/a.toml:3:42: invalid consul `address` \"http://::1:8500\": write IPv6",
    );
    assert_prefix(
        &bad("http://a b:8500"),
        "routes/a.toml:3:42: invalid consul `address` \"http://a b:8500\": \"a b\"",
    );
}

#[test]
fn consul_tls_keys() {
    let consul = upstream(
        "discovery = { type = \"consul\", address = \"https://c:8501\", service = \"s\", tls_ca = \"ca.pem\", tls_insecure_skip_verify = true }\n\
         [upstream.tls]\nca = \"ca.pem\"",
    );
    let DiscoveryConfig::Consul { tls_ca, tls_insecure_skip_verify, .. } = &consul.discovery else {
        panic!("{:?}", consul.discovery)
    };
    // A relative tls_ca resolves exactly as [upstream.tls] ca does.
    assert_eq!(tls_ca.as_ref(), consul.tls.as_ref().and_then(|t| t.ca.as_ref()));
    assert_eq!(tls_ca.as_deref(), Some(Path::new("routes/ca.pem")));
    assert!(*tls_insecure_skip_verify);
    // TLS keys on an http:// address are refused; tls_insecure_skip_verify = false is harmless.
    let errs = errors(&[(
        "a.toml",
        "[[upstream]]\nname = \"u\"\ndiscovery = { type = \"consul\", address = \"http://c:8500\", service = \"s\", tls_ca = \"ca.pem\", tls_insecure_skip_verify = true }\n",
    )]);
    assert_eq!(
        errs,
        [
            "routes/a.toml:3:83: `tls_ca` applies to an https:// consul `address`; this one is http://",
            "routes/a.toml:3:120: `tls_insecure_skip_verify` applies to an https:// consul `address`; this one is http://",
        ]
    );
    let plain = upstream(
        "discovery = { type = \"consul\", address = \"http://c:8500\", service = \"s\", tls_insecure_skip_verify = false }",
    );
    assert!(matches!(
        plain.discovery,
        DiscoveryConfig::Consul { tls_ca: None, tls_insecure_skip_verify: false, .. }
    ));
    // The keys belong to consul only.
    assert_prefix(
        &error("[[upstream]]\nname = \"u\"\ndiscovery = { type = \"dns\", name = \"x\", port = 80, tls_ca = \"ca.pem\" }\n"),
        "routes/a.toml:3:61: `tls_ca` is not a dns discovery key; dns takes: name, port, record, refresh, resolver",
    );
}
