//! Fleet mode through ZooKeeper, end to end: gateway processes (the built binary) sharing
//! their routes through a real ZooKeeper ensemble of three servers (Debian's package,
//! `QuorumPeerMain`, started by tests/support/zk.rs), published with `switchyard routes
//! publish`, listed with `switchyard fleet` and `GET /fleet`.

mod support;

use std::path::Path;
use std::time::Duration;

use support::fleet::*;
use support::zk::ZkServer;
use support::*;

/// Publishing and applying are quick on loopback; this bounds a wait that would otherwise hang.
const CONVERGE: Duration = Duration::from_secs(20);

fn source(servers: &str, extra: &str) -> String {
    format!("{{ type = \"zookeeper\", servers = \"{servers}\", path = \"/switchyard/edge\", session_timeout = \"2s\"{extra} }}")
}

async fn converged(gws: &[&FleetGw], version: u64) {
    for g in gws {
        eventually(&format!("gateway {} applies version {version}", g.addr), CONVERGE, || async {
            g.applied().await == Some(version)
        })
        .await;
    }
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_set_is_served_by_every_gateway_and_an_invalid_one_is_refused() {
    let zk = ZkServer::start();
    let cfg = config_dir(&source(&zk.connect_string(), ""));
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

    let dirs: Vec<_> = (0..3).map(|_| config_dir(&source(&zk.connect_string(), ""))).collect();
    let mut gws = Vec::new();
    for d in &dirs {
        gws.push(FleetGw::start(d.path(), &[]).await);
    }
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
    let ids: Vec<String> = f["members"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_owned()).collect();
    for g in &gws {
        assert!(ids.contains(&g.member_id().await));
        let m = f["members"].as_array().unwrap().iter().find(|m| m["admin"] == g.admin.to_string()).unwrap().clone();
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
    let mut names: Vec<String> = std::fs::read_dir(&pulled).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["set-2-a.toml", "set-2-b.toml"]);
    assert_eq!(
        std::fs::read_to_string(pulled.join("set-2-a.toml")).unwrap(),
        std::fs::read_to_string(v2dir.join("set-2-a.toml")).unwrap()
    );
    let _ = Path::new("");
}
