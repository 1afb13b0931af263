//! Fleet mode through ZooKeeper, end to end: gateway processes (the built binary) sharing
//! their routes through a real ZooKeeper ensemble of three servers (Debian's package,
//! `QuorumPeerMain`, started by tests/support/zk.rs), published with `switchyard routes
//! publish`, listed with `switchyard fleet` and `GET /fleet`.

mod support;

use std::sync::OnceLock;
use std::time::Duration;

use support::fleet::*;
use support::zk::{self, ZkEnsemble};
use support::*;

fn source(servers: &str, path: &str, extra: &str) -> String {
    format!("{{ type = \"zookeeper\", servers = \"{servers}\", path = \"{path}\", session_timeout = \"2s\"{extra} }}")
}

/// The ensemble of the tests that stop no server; each uses a path of its own.
fn shared() -> &'static ZkEnsemble {
    static ENSEMBLE: OnceLock<ZkEnsemble> = OnceLock::new();
    ENSEMBLE.get_or_init(ZkEnsemble::start)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_set_is_served_by_every_gateway_and_an_invalid_one_is_refused() {
    const PATH: &str = "/fleet/a_published_set_is_serve";
    let zk = shared();
    let cfg = config_dir(&source(&zk.connect_string(), PATH, ""));
    let routes = cfg.path().join("routes-v1");
    write_set(&routes, 1);

    // Nothing published yet: check says so; a gateway starts with no routes.
    let out = command(cfg.path(), &["check"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("nothing is published"), "{}", stderr(&out));

    let v1 = published(&publish(cfg.path(), &routes, None, &[]));
    assert_eq!(v1, 1);
    let out = command(cfg.path(), &["check"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let (_dirs, gws) = gateways(&source(&zk.connect_string(), PATH, ""), 3).await;
    let all: Vec<&FleetGw> = gws.iter().collect();
    converged(&all, 1).await;
    for g in &gws {
        assert_eq!(g.body("/a").await, "1");
        assert_eq!(g.body("/b").await, "1");
    }

    // Every gateway is a member, with its addresses and the version it serves.
    eventually("three members at version 1", CONVERGE, || async {
        let f = gws[0].fleet().await;
        let m = f["members"].as_array().cloned().unwrap_or_default();
        m.len() == 3 && m.iter().all(|m| m["routes_version"] == 1)
    })
    .await;
    let f = gws[0].fleet().await;
    let ids: Vec<String> =
        f["members"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_owned()).collect();
    for g in &gws {
        assert!(ids.contains(&g.member_id().await));
        let m = f["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["admin"] == g.admin.to_string())
            .unwrap()
            .clone();
        assert_eq!(m["listeners"][0]["address"], g.addr.to_string());
        assert_eq!(m["last_error"], serde_json::Value::Null);
    }
    let out = command(cfg.path(), &["fleet", "--json"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed["published_version"], 1);
    assert_eq!(listed["members"].as_array().unwrap().len(), 3);
    let out = command(cfg.path(), &["fleet"], &[]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.starts_with("published version: 1; 3 members"), "{table}");

    // An invalid set is refused by publish, with path:line:column; nothing changes.
    let bad = cfg.path().join("bad");
    write_set(&bad, 2);
    std::fs::write(bad.join("set-2-b.toml"), "[[route]]\nname = \"x\"\nrespnd = 1\n").unwrap();
    let out = publish(cfg.path(), &bad, None, &[]);
    assert_eq!(out.status.code(), Some(1));
    let want = format!("{}:3:1: ", bad.join("set-2-b.toml").display());
    assert!(stderr(&out).starts_with(&want), "want {want}…, got {}", stderr(&out));
    assert_eq!(gws[0].config().await["source"]["published_version"], 1);

    // --if-version: a stale expectation is refused with exit 3, a current one publishes.
    let v2dir = cfg.path().join("routes-v2");
    write_set(&v2dir, 2);
    let out = publish(cfg.path(), &v2dir, Some(0), &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("the published version is 1"), "{}", stderr(&out));
    assert_eq!(published(&publish(cfg.path(), &v2dir, Some(1), &[])), 2);
    converged(&all, 2).await;
    for g in &gws {
        assert_eq!(served_tags(&g.config().await), vec![2, 2], "exactly the new set's files");
        assert_eq!(g.body("/a").await, "2");
    }

    // pull writes the published set into a folder (and removes what is not in it).
    let pulled = cfg.path().join("pulled");
    write_set(&pulled, 9);
    let out = command(cfg.path(), &["routes", "pull", pulled.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2");
    let mut names: Vec<String> = std::fs::read_dir(&pulled)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["set-2-a.toml", "set-2-b.toml"]);
    assert_eq!(
        std::fs::read_to_string(pulled.join("set-2-a.toml")).unwrap(),
        std::fs::read_to_string(v2dir.join("set-2-a.toml")).unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_gateway_leaves_the_fleet_within_the_session_timeout_and_a_stopped_one_at_once() {
    const PATH: &str = "/fleet/a_killed_gateway_leaves_";
    let zk = shared();
    let (cfg, _) = published_fleet(&source(&zk.connect_string(), PATH, ""));
    let (d1, d2) = (
        config_dir(&source(&zk.connect_string(), PATH, "")),
        config_dir(&source(&zk.connect_string(), PATH, "")),
    );
    let mut g1 = FleetGw::start(d1.path(), &[]).await;
    let mut g2 = FleetGw::start(d2.path(), &[]).await;
    let members = || async {
        let out = command(cfg.path(), &["fleet", "--json"], &[]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let (id1, id2) = (g1.member_id().await, g2.member_id().await);
    eventually("both gateways are members", CONVERGE, || async { members().await.len() == 2 }).await;

    // SIGKILL: no goodbye; ZooKeeper ends the session after its timeout (2 s here).
    g1.proc.signal("KILL");
    g1.proc.exit(Duration::from_secs(5)).await;
    let gone = eventually("the killed gateway's member node goes", Duration::from_secs(10), || async {
        !members().await.contains(&id1)
    })
    .await;
    eprintln!("killed gateway's member node gone after {gone:?} (session timeout 2 s)");
    assert!(members().await.contains(&id2));

    // SIGTERM: the drain ends by removing the node.
    g2.proc.signal("TERM");
    assert!(g2.proc.exit(Duration::from_secs(10)).await.success());
    assert!(!members().await.contains(&id2), "a stopped gateway removes its node before it exits");
}

/// A member node that goes while the gateway runs (another tool deleted it), or that an
/// earlier session still holds (after an outage the servers expire that session later, and
/// its node with it), is made again as the running session's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_node_that_goes_or_that_an_earlier_session_holds_is_made_again() {
    const PATH: &str = "/fleet/member_node_made_again";
    let zk = shared();
    let (_cfg, _) = published_fleet(&source(&zk.connect_string(), PATH, ""));
    let d = config_dir(&source(&zk.connect_string(), PATH, ""));
    let g = FleetGw::start(d.path(), &[]).await;
    let id = g.member_id().await;
    let node = format!("{PATH}/members/{id}");
    let c = zk::client(&zk.connect_string()).await;
    let owner = || async { c.check_stat(&node).await.unwrap().map(|s| s.ephemeral_owner) };
    eventually("the gateway's member node", CONVERGE, || async { owner().await.is_some() }).await;
    let ours = c.session_id().0;

    // Deleted by someone else: the gateway notices and creates it again.
    zk::delete(&c, &node).await;
    eventually("the deleted member node is back", CONVERGE, || async {
        owner().await.is_some_and(|o| o != ours)
    })
    .await;

    // Held by another session (as an earlier session of this gateway would hold it): the
    // gateway replaces it with its own, so that session's end does not take it away.
    zk::delete(&c, &node).await;
    zk::ephemeral(&c, &format!("{PATH}/members"), &id, b"{}").await;
    assert_eq!(owner().await, Some(ours));
    eventually("the gateway owns its member node again", CONVERGE, || async {
        owner().await.is_some_and(|o| o != ours)
    })
    .await;
    let (data, _) = c.get_data(&node).await.unwrap();
    let record: serde_json::Value = serde_json::from_slice(&data).unwrap();
    assert_eq!(record["id"], id.as_str(), "the node holds the gateway's record");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_zookeeper_gateways_keep_serving_and_a_new_one_starts_from_its_cache() {
    const PATH: &str = "/fleet/without_zookeeper_gatewa";
    let mut zk = ZkEnsemble::start();
    let (cfg, _) = published_fleet(&source(&zk.connect_string(), PATH, ""));
    let d1 = config_dir(&source(&zk.connect_string(), PATH, ""));
    let g1 = FleetGw::start(d1.path(), &[]).await;
    converged(&[&g1], 1).await;
    // g1 wrote its cache; a gateway started from d1's folder later uses it.
    cached(d1.path(), 1).await;

    zk.kill_all();
    eventually("the source's failure shows in GET /config", CONVERGE, || async {
        g1.config().await["source"]["source_error"].is_object()
    })
    .await;
    assert_eq!(g1.body("/a").await, "1", "the running routes keep serving");
    let errors = admin_metric(g1.admin, "switchyard_routes_source_errors_total{type=\"zookeeper\"}").await;
    assert!(errors >= 1.0, "source failures are counted: {errors}");

    // A second gateway with g1's cache starts and serves it; one without a cache cannot start.
    let d2 = tempfile::tempdir().unwrap();
    write_config(d2.path(), &source(&zk.connect_string(), PATH, ""), true);
    copy_dir(&d1.path().join("state"), &d2.path().join("state"));
    let g2 = FleetGw::start(d2.path(), &[]).await;
    assert_eq!(g2.body("/a").await, "1");
    assert_eq!(g2.applied().await, Some(1));
    let d3 = config_dir(&source(&zk.connect_string(), PATH, ""));
    let out = command(d3.path(), &[], &[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("cannot read the routes from zookeeper") && err.contains("no routes_cache"),
        "{err}"
    );
    let out = command(d3.path(), &["check"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cannot read the routes from zookeeper"), "{}", stderr(&out));

    // ZooKeeper back: both follow the next publish.
    zk.restart_all();
    let v2 = cfg.path().join("v2");
    write_set(&v2, 2);
    let v = published(&publish(cfg.path(), &v2, None, &[]));
    converged(&[&g1, &g2], v).await;
    assert_eq!(g2.body("/b").await, "2");
    eventually("the source error clears", CONVERGE, || async {
        g1.config().await["source"]["source_error"].is_null()
    })
    .await;
    // Both gateways are members once ZooKeeper is back: g1 (whose session may have expired in
    // the outage, taking its node) and g2, which started while ZooKeeper was down.
    let ids = [g1.member_id().await, g2.member_id().await];
    eventually("both gateways are members again", CONVERGE, || async {
        let out = command(cfg.path(), &["fleet", "--json"], &[]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let listed: Vec<&str> = v["members"]
            .as_array()
            .map(|m| m.iter().filter_map(|m| m["id"].as_str()).collect())
            .unwrap_or_default();
        ids.iter().all(|id| listed.contains(&id.as_str()))
    })
    .await;
    // With nothing published at a path, pull says so (exit 2).
    let empty = config_dir(&source(&zk.connect_string(), "/fleet/nothing-here", ""));
    let out = command(empty.path(), &["routes", "pull", empty.path().join("r").to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("nothing is published yet"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auth_env_only_the_publishers_identity_can_write_the_routes() {
    const PATH: &str = "/fleet/acl";
    let zk = shared();
    let with_auth = config_dir(&source(&zk.connect_string(), PATH, ", auth_env = \"TEST_ZK_AUTH\""));
    let env = [("TEST_ZK_AUTH", "publisher:s3cret")];
    let routes = with_auth.path().join("routes");
    write_set(&routes, 1);

    // The variable must be set: check names the key.
    let out = command(with_auth.path(), &["check"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("\"TEST_ZK_AUTH\" named by `auth_env` is not set"), "{}", stderr(&out));

    // A gateway (no password) that starts before anything is published makes the fleet's
    // nodes, open to anyone; the first publish with the identity closes them.
    let d = config_dir(&source(&zk.connect_string(), PATH, ""));
    let g = FleetGw::start(d.path(), &[]).await;
    eventually("the gateway is a member", CONVERGE, || async {
        g.fleet().await["members"].as_array().is_some_and(|m| m.len() == 1)
    })
    .await;
    // A first set published without the identity: its nodes are open to anyone.
    assert_eq!(published(&publish(d.path(), &routes, None, &[])), 1);
    converged(&[&g], 1).await;
    // The same files published with it: every node of the fleet is closed.
    assert_eq!(published(&publish(with_auth.path(), &routes, None, &env)), 2);
    converged(&[&g], 2).await;

    // Anyone else cannot write: not the routes, not the version, not a new route file;
    // publishing without the identity fails (exit 2) and changes nothing.
    let anon = zk::client(&zk.connect_string()).await;
    let denied = anon.set_data(&format!("{PATH}/routes/set-1-a.toml"), b"x", None).await;
    assert!(matches!(denied, Err(zookeeper_client::Error::NoAuth)), "{denied:?}");
    let denied = anon.set_data(&format!("{PATH}/version"), b"99", None).await;
    assert!(matches!(denied, Err(zookeeper_client::Error::NoAuth)), "{denied:?}");
    let opts = zookeeper_client::CreateMode::Persistent.with_acls(zookeeper_client::Acls::anyone_all());
    let denied = anon.create(&format!("{PATH}/routes/evil.toml"), b"x", &opts).await;
    assert!(matches!(denied, Err(zookeeper_client::Error::NoAuth)), "{denied:?}");
    // (`<path>` was made open by the gateway; without the publish closing it, anyone could
    // delete `version` and the publishers would be locked out.)
    let denied = anon.delete(&format!("{PATH}/version"), None).await;
    assert!(matches!(denied, Err(zookeeper_client::Error::NoAuth)), "{denied:?}");
    let v2 = d.path().join("v2");
    write_set(&v2, 2);
    let out = publish(d.path(), &v2, None, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(g.body("/a").await, "1", "still the set of version 2, whose files say 1");
    // The gateway still registers (a restart makes a new member node) and the publisher can
    // publish.
    let d2 = config_dir(&source(&zk.connect_string(), PATH, ""));
    let g2 = FleetGw::start(d2.path(), &[]).await;
    eventually("the second gateway is a member", CONVERGE, || async {
        g.fleet().await["members"].as_array().is_some_and(|m| m.len() == 2)
    })
    .await;
    assert_eq!(published(&publish(with_auth.path(), &v2, None, &env)), 3);
    converged(&[&g, &g2], 3).await;
    assert_eq!(g2.body("/a").await, "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_under_load_fail_no_request() {
    const PATH: &str = "/fleet/publishes_under_load_fai";
    let zk = shared();
    let (latencies, load) = publish_under_load(&source(&zk.connect_string(), PATH, ""), 5).await;
    assert_eq!(latencies.len(), 5);
    assert!(load.ok > 0);
    assert_eq!(
        load.failed,
        0,
        "failed requests during publishes: {:?}",
        &load.failures[..load.failures.len().min(5)]
    );
}

/// The issue's measurement (bench/fleet.sh runs it): 20 publishes to three gateways under
/// load; prints the median and maximum publish → every gateway serving, and the failures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: bench/fleet.sh runs it"]
async fn measure_publish_to_serving() {
    const PATH: &str = "/fleet/measure_publish_to_servi";
    let zk = ZkEnsemble::start();
    let (mut latencies, load) = publish_under_load(&source(&zk.connect_string(), PATH, ""), 20).await;
    report("fleet zookeeper", &mut latencies, &load);
    assert_eq!(load.failed, 0, "{:?}", &load.failures[..load.failures.len().min(5)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_set_written_by_another_tool_keeps_the_last_good_one_and_says_why() {
    const PATH: &str = "/fleet/an_invalid_set_written_b";
    let zk = shared();
    let (cfg, routes) = published_fleet(&source(&zk.connect_string(), PATH, ""));
    let d = config_dir(&source(&zk.connect_string(), PATH, ""));
    let g = FleetGw::start(d.path(), &[]).await;
    converged(&[&g], 1).await;

    // Another publisher writes a broken file and version 2 in one transaction.
    let c = zk::client(&zk.connect_string()).await;
    let mut w = c.new_multi_writer();
    w.add_set_data(&format!("{PATH}/routes/set-1-b.toml"), b"[[route]]\nname = 1\n", None).unwrap();
    w.add_set_data(&format!("{PATH}/version"), b"2", None).unwrap();
    w.commit().await.unwrap();

    eventually("the gateway sees version 2 and refuses it", CONVERGE, || async {
        let s = g.config().await["source"].clone();
        s["published_version"] == 2 && s["last_error"].is_string()
    })
    .await;
    let c2 = g.config().await;
    assert_eq!(c2["source"]["applied_version"], 1, "the last good set keeps serving");
    let err = c2["source"]["last_error"].as_str().unwrap();
    assert!(err.starts_with(&format!("zookeeper:{PATH}/routes/set-1-b.toml:2:8: ")), "{err}");
    assert_eq!(c2["last_error"]["file"], format!("zookeeper:{PATH}/routes/set-1-b.toml"));
    assert_eq!(g.body("/b").await, "1");
    eventually("the member record says why", CONVERGE, || async {
        g.fleet().await["members"][0]["last_error"].as_str().is_some_and(|e| e.contains("set-1-b.toml:2:8"))
    })
    .await;
    assert_eq!(g.fleet().await["members"][0]["routes_version"], 1);

    // A valid publish clears it.
    write_set(&routes, 3);
    let v = published(&publish(cfg.path(), &routes, None, &[]));
    assert_eq!(v, 3);
    converged(&[&g], 3).await;
    let c3 = g.config().await;
    assert!(c3["source"]["last_error"].is_null() && c3["last_error"].is_null(), "{c3}");
    assert_eq!(g.body("/b").await, "3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_stopped_while_publishing_leaves_no_gateway_with_half_a_set() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    const PATH: &str = "/fleet/leader";
    let mut zk = ZkEnsemble::start();
    let (cfg, routes) = published_fleet(&source(&zk.connect_string(), PATH, ""));
    let (_dirs, gws) = gateways(&source(&zk.connect_string(), PATH, ""), 3).await;
    let all: Vec<&FleetGw> = gws.iter().collect();
    converged(&all, 1).await;

    // Every gateway's served files, sampled back to back the whole time: always one whole set.
    let stop = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(AtomicUsize::new(0));
    let halves = Arc::new(Mutex::new(Vec::new()));
    let sampler = {
        let (stop, samples, halves) = (stop.clone(), samples.clone(), halves.clone());
        let admins: Vec<_> = gws.iter().map(|g| g.admin).collect();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                for a in &admins {
                    let tags = served_tags(&get(&format!("http://{a}/config")).await.json());
                    if tags.len() != 2 || tags[0] != tags[1] {
                        halves.lock().unwrap().push(tags);
                    }
                    samples.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };

    let mut killed = None;
    let mut last = 1;
    for tag in 2..=8 {
        write_set(&routes, tag);
        // At the fourth publish, the leader is killed while `publish` runs; a publish that
        // fails then (exit 2) is run again once a new leader is elected.
        let (dir, r) = (cfg.path().to_path_buf(), routes.clone());
        let run = std::thread::spawn(move || publish(&dir, &r, None, &[]));
        if tag == 5 {
            let leader = zk.leader().expect("a leader");
            zk.kill(leader);
            killed = Some(leader);
        }
        let mut out = run.join().unwrap();
        let deadline = std::time::Instant::now() + CONVERGE;
        while out.status.code() == Some(2) && std::time::Instant::now() < deadline {
            eprintln!("publish during the election: {}", stderr(&out).trim());
            tokio::time::sleep(Duration::from_millis(200)).await;
            out = publish(cfg.path(), &routes, None, &[]);
        }
        last = published(&out);
    }
    let killed = killed.unwrap();
    assert_ne!(zk.leader(), Some(killed), "another server leads");
    converged(&all, last).await;
    zk.restart(killed);
    write_set(&routes, 9);
    let v = published(&publish(cfg.path(), &routes, None, &[]));
    converged(&all, v).await;
    stop.store(true, Ordering::Relaxed);
    sampler.await.unwrap();
    for g in &gws {
        assert_eq!(served_tags(&g.config().await), [9, 9]);
        assert_eq!(g.body("/b").await, "9");
    }
    let halves = halves.lock().unwrap();
    assert!(halves.is_empty(), "gateways served mixed sets: {halves:?}");
    assert!(samples.load(Ordering::Relaxed) > 30, "the sampler ran");
}
