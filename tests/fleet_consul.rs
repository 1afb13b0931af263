//! Fleet mode through Consul KV, end to end: gateway processes (the built binary) sharing their
//! routes through the Consul HTTP API double (tests/support/consul_double.rs and consul_kv.rs,
//! written from Consul's API documentation: KV with blocking queries and CAS, `/v1/txn`,
//! sessions with TTLs).

mod support;

use std::time::Duration;

use support::consul_double::ConsulDouble;
use support::fleet::*;
use support::*;

fn source(consul: &ConsulDouble, extra: &str) -> String {
    format!(
        "{{ type = \"consul\", address = \"http://{}\", prefix = \"switchyard/edge\"{extra} }}",
        consul.addr
    )
}

fn member_key(id: &str) -> String {
    format!("switchyard/edge/members/{id}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_published_in_one_transaction_is_served_by_every_gateway() {
    let consul = ConsulDouble::start().await;
    let cfg = config_dir(&source(&consul, ""));
    let routes = cfg.path().join("routes");
    write_set(&routes, 1);
    assert_eq!(published(&publish(cfg.path(), &routes, Some(0), &[])), 1);
    assert_eq!(consul.txn_requests(), 1, "one transaction per publish");
    assert_eq!(consul.kv("switchyard/edge/version").unwrap().value, b"1");
    assert_eq!(
        consul.kv_keys("switchyard/edge/routes/"),
        ["switchyard/edge/routes/set-1-a.toml", "switchyard/edge/routes/set-1-b.toml"]
    );

    let (d1, d2) = (config_dir(&source(&consul, "")), config_dir(&source(&consul, "")));
    let g1 = FleetGw::start(d1.path(), &[]).await;
    let g2 = FleetGw::start(d2.path(), &[]).await;
    converged(&[&g1, &g2], 1).await;
    assert_eq!(g1.body("/a").await, "1");

    // Members: keys held by a session each, with the contract's TTL and behaviour.
    for g in [&g1, &g2] {
        let id = g.member_id().await;
        let key = member_key(&id);
        eventually("the member key is written", CONVERGE, || async { consul.kv(&key).is_some() }).await;
        let entry = consul.kv(&key).unwrap();
        let session = entry.session.expect("held by a session");
        let s = consul.sessions().into_iter().find(|s| s.id == session).unwrap();
        assert_eq!((s.ttl.as_str(), s.behavior.as_str()), ("15s", "delete"));
        let m: serde_json::Value = serde_json::from_slice(&entry.value).unwrap();
        assert_eq!(m["id"], id.as_str());
        assert_eq!(m["admin"], g.admin.to_string());
    }
    let out = command(cfg.path(), &["fleet", "--json"], &[]);
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed["members"].as_array().unwrap().len(), 2, "{listed}");

    // The next publish replaces the whole set: files of the old one are gone.
    write_set(&routes, 2);
    assert_eq!(published(&publish(cfg.path(), &routes, Some(1), &[])), 2);
    assert_eq!(
        consul.kv_keys("switchyard/edge/routes/"),
        ["switchyard/edge/routes/set-2-a.toml", "switchyard/edge/routes/set-2-b.toml"]
    );
    converged(&[&g1, &g2], 2).await;
    assert_eq!(served_tags(&g2.config().await), [2, 2]);
    let out = publish(cfg.path(), &routes, Some(1), &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));

    // Consul takes at most 128 operations in a transaction: publish says so before sending.
    let many = cfg.path().join("many");
    std::fs::create_dir(&many).unwrap();
    for i in 0..127 {
        std::fs::write(
            many.join(format!("r{i:03}.toml")),
            format!("[[route]]\nname = \"r{i}\"\npath = \"/r{i}\"\nrespond = {{ status = 200 }}\n"),
        )
        .unwrap();
    }
    let txns = consul.txn_requests();
    let out = publish(cfg.path(), &many, None, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("at most 128 operations"), "{}", stderr(&out));
    assert_eq!(consul.txn_requests(), txns);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_key_goes_with_its_session_and_a_live_gateway_registers_again() {
    let consul = ConsulDouble::start().await;
    let (_cfg, _) = published_fleet(&source(&consul, ""));
    let (d1, d2) = (config_dir(&source(&consul, "")), config_dir(&source(&consul, "")));
    let mut g1 = FleetGw::start(d1.path(), &[]).await;
    let mut g2 = FleetGw::start(d2.path(), &[]).await;
    let (k1, k2) = (member_key(&g1.member_id().await), member_key(&g2.member_id().await));
    eventually("both members registered", CONVERGE, || async {
        consul.kv(&k1).is_some() && consul.kv(&k2).is_some()
    })
    .await;

    // A session lost while the gateway runs (a partition longer than the TTL): the key goes,
    // and the gateway registers again under a new session once its renewal is refused.
    let old = consul.kv(&k1).unwrap().session.unwrap();
    assert!(consul.expire_session(&old));
    assert!(consul.kv(&k1).is_none(), "Behavior delete: the key goes with the session");
    eventually("the gateway registers again", CONVERGE, || async {
        consul.kv(&k1).and_then(|e| e.session).is_some_and(|s| s != old)
    })
    .await;

    // SIGKILL: nothing renews the session; when Consul invalidates it, the key goes.
    g1.proc.signal("KILL");
    g1.proc.exit(Duration::from_secs(5)).await;
    let session = consul.kv(&k1).unwrap().session.unwrap();
    assert!(consul.expire_session(&session));
    assert!(consul.kv(&k1).is_none());

    // SIGTERM: the drain destroys the session, and with it the key.
    g2.proc.signal("TERM");
    assert!(g2.proc.exit(Duration::from_secs(10)).await.success());
    assert!(consul.kv(&k2).is_none(), "a stopped gateway's key is gone when it exits");
    assert!(consul.sessions().is_empty(), "{:?}", consul.sessions());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consul_outage_keeps_the_routes_and_a_gateway_starts_from_its_cache() {
    let consul = ConsulDouble::start().await;
    let (cfg, routes) = published_fleet(&source(&consul, ""));
    let d1 = config_dir(&source(&consul, ""));
    let g1 = FleetGw::start(d1.path(), &[]).await;
    converged(&[&g1], 1).await;
    cached(d1.path(), 1).await;

    consul.stop().await;
    // The blocking query in flight fails once the agent is gone.
    eventually("the failure shows", CONVERGE, || async {
        g1.config().await["source"]["source_error"].is_object()
    })
    .await;
    assert_eq!(g1.body("/a").await, "1");
    let d2 = config_dir(&source(&consul, ""));
    copy_dir(&d1.path().join("state"), &d2.path().join("state"));
    let g2 = FleetGw::start(d2.path(), &[]).await;
    assert_eq!(g2.body("/b").await, "1", "started from routes_cache");
    let out = command(config_dir(&source(&consul, "")).path(), &[], &[]);
    assert!(!out.status.success() && stderr(&out).contains("no routes_cache"), "{}", stderr(&out));

    consul.restart().await;
    write_set(&routes, 2);
    let v = published(&publish(cfg.path(), &routes, None, &[]));
    converged(&[&g1, &g2], v).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_acl_token_comes_from_token_env() {
    let consul = ConsulDouble::start().await;
    consul.require_token("fleet-token");
    let cfg = config_dir(&source(&consul, ", token_env = \"TEST_CONSUL_TOKEN\""));
    let routes = cfg.path().join("routes");
    write_set(&routes, 1);
    let out = publish(cfg.path(), &routes, None, &[]);
    assert_eq!(out.status.code(), Some(2), "without the token: {}", stderr(&out));
    assert!(stderr(&out).contains("403"), "{}", stderr(&out));
    let env = [("TEST_CONSUL_TOKEN", "fleet-token")];
    assert_eq!(published(&publish(cfg.path(), &routes, None, &env)), 1);
    let g = FleetGw::start(cfg.path(), &env).await;
    converged(&[&g], 1).await;
    let key = member_key(&g.member_id().await);
    eventually("registered with the token", CONVERGE, || async { consul.kv(&key).is_some() }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_under_load_fail_no_request() {
    let consul = ConsulDouble::start().await;
    let (mut latencies, load) = publish_under_load(&source(&consul, ""), 5).await;
    assert_eq!(load.failed, 0, "{:?}", &load.failures[..load.failures.len().min(5)]);
    let (median, max) = median_max(&mut latencies);
    eprintln!("consul: publish -> all serving median {median:?} max {max:?}");
}

/// The measurement for Consul (bench/fleet.sh runs it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: bench/fleet.sh runs it"]
async fn measure_publish_to_serving() {
    let consul = ConsulDouble::start().await;
    let (mut latencies, load) = publish_under_load(&source(&consul, ""), 20).await;
    report("fleet consul (API double)", &mut latencies, &load);
    assert_eq!(load.failed, 0, "{:?}", &load.failures[..load.failures.len().min(5)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_does_not_block_cannot_make_the_watch_spin() {
    let consul = ConsulDouble::start().await;
    let (cfg, routes) = published_fleet(&source(&consul, ""));
    let d = config_dir(&source(&consul, ""));
    let g = FleetGw::start(d.path(), &[]).await;
    converged(&[&g], 1).await;
    // A proxy in front of Consul that answers blocking queries at once.
    consul.answer_at_once(true);
    let before = consul.kv_requests();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let queries = consul.kv_requests() - before;
    // The floor is 500 ms between two queries that saw no change (each followed by a read):
    // about 12 in 3 s; a spinning loop would send thousands.
    assert!(queries <= 30, "{queries} KV requests in 3 s");
    // A change is still followed at once.
    write_set(&routes, 2);
    let v = published(&publish(cfg.path(), &routes, None, &[]));
    converged(&[&g], v).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_agent_is_verified_against_tls_ca() {
    use support::certs::TestCa;
    let consul = ConsulDouble::start().await;
    let ca = TestCa::new("consul fleet ca");
    let https = consul.serve_tls(ca.server_config(&["127.0.0.1"])).await;
    let src = |extra: &str| {
        format!("{{ type = \"consul\", address = \"https://{https}\", prefix = \"tls\"{extra} }}")
    };
    let cfg = config_dir(&src(", tls_ca = \"consul-ca.pem\""));
    // Relative to the folder of gateway.toml.
    std::fs::write(cfg.path().join("consul-ca.pem"), &ca.pem).unwrap();
    let routes = cfg.path().join("routes");
    write_set(&routes, 1);
    assert_eq!(published(&publish(cfg.path(), &routes, None, &[])), 1);
    let g = FleetGw::start(cfg.path(), &[]).await;
    converged(&[&g], 1).await;

    // Without it, the webpki roots do not know the test CA: the agent is not trusted.
    let untrusting = config_dir(&src(""));
    let out = command(untrusting.path(), &["check"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("certificate"), "{}", stderr(&out));
    // And on an http:// address it is a mistake.
    let plain = format!(
        "{{ type = \"consul\", address = \"http://{}\", prefix = \"tls\", tls_ca = \"x.pem\" }}",
        consul.addr
    );
    let out = command(config_dir(&plain).path(), &["check"], &[]);
    assert!(stderr(&out).contains("`tls_ca` applies to an https:// consul `address`"), "{}", stderr(&out));
}
