//! ZooKeeper discovery end to end: the real gateway watching a real ZooKeeper server
//! (Debian's package, started by tests/support/zk.rs; `apt-get install -y zookeeper`).
//! Tests that kill or restart the server get their own; the others share one per binary.

mod support;

use std::sync::OnceLock;
use std::time::Duration;

use support::disc::*;
use support::zk::{self, ZkServer};
use support::*;

fn shared() -> &'static ZkServer {
    static SERVER: OnceLock<ZkServer> = OnceLock::new();
    SERVER.get_or_init(ZkServer::start)
}

fn curator(u: &FakeUpstream, enabled: bool) -> Vec<u8> {
    format!(
        r#"{{"name":"svc","id":"{}","address":"127.0.0.1","port":{},"sslPort":null,"enabled":{enabled},"serviceType":"DYNAMIC"}}"#,
        u.addr.port(),
        u.addr.port()
    )
    .into_bytes()
}

fn serverset(u: &FakeUpstream, http: &FakeUpstream, status: &str) -> Vec<u8> {
    format!(
        r#"{{"serviceEndpoint":{{"host":"127.0.0.1","port":{}}},"additionalEndpoints":{{"http":{{"host":"127.0.0.1","port":{}}}}},"status":"{status}","shard":0}}"#,
        u.addr.port(),
        http.addr.port()
    )
    .into_bytes()
}

fn upstream(name: &str, servers: &str, path: &str, extra: &str) -> String {
    format!(
        "[[upstream]]\nname = \"{name}\"\ndiscovery = {{ type = \"zookeeper\", servers = \"{servers}\", path = \"{path}\"{extra} }}\n\
         [[route]]\nname = \"{name}\"\npath_prefix = \"/{name}\"\nupstream = \"{name}\"\n"
    )
}

#[tokio::test]
async fn each_member_format_is_read_and_data_changes_are_followed() {
    let server = shared().connect_string();
    let c = zk::client(&server).await;
    let ups: Vec<FakeUpstream> = futures_util::future::join_all(
        [
            "cur-a", "cur-off", "ss-a", "ss-http", "ss-dead", "hp-data", "hp-name", "auto-cur", "auto-ss",
            "auto-hp",
        ]
        .map(echo),
    )
    .await;
    let u = |n: &str| {
        let names = [
            "cur-a", "cur-off", "ss-a", "ss-http", "ss-dead", "hp-data", "hp-name", "auto-cur", "auto-ss",
            "auto-hp",
        ];
        &ups[names.iter().position(|x| *x == n).unwrap()]
    };
    let base = format!("/formats-{}", std::process::id());
    for f in ["curator", "serverset", "hostport", "auto"] {
        zk::mkdirs(&c, &format!("{base}/{f}")).await;
    }
    zk::ephemeral(&c, &format!("{base}/curator"), "a", &curator(u("cur-a"), true)).await;
    zk::ephemeral(&c, &format!("{base}/curator"), "off", &curator(u("cur-off"), false)).await;
    zk::ephemeral(
        &c,
        &format!("{base}/serverset"),
        "member_0000000001",
        &serverset(u("ss-a"), u("ss-http"), "ALIVE"),
    )
    .await;
    zk::ephemeral(
        &c,
        &format!("{base}/serverset"),
        "member_0000000002",
        &serverset(u("ss-dead"), u("ss-dead"), "STOPPING"),
    )
    .await;
    zk::ephemeral(&c, &format!("{base}/hostport"), "m1", u("hp-data").authority().as_bytes()).await;
    zk::ephemeral(&c, &format!("{base}/hostport"), &u("hp-name").authority(), b"").await;
    zk::ephemeral(&c, &format!("{base}/auto"), "c", &curator(u("auto-cur"), true)).await;
    zk::ephemeral(&c, &format!("{base}/auto"), "s", &serverset(u("auto-ss"), u("auto-ss"), "ALIVE")).await;
    zk::ephemeral(&c, &format!("{base}/auto"), &u("auto-hp").authority(), b"").await;
    zk::ephemeral(&c, &format!("{base}/auto"), "junk", b"{\"neither\": 1}").await;

    let routes = [
        upstream("curator", &server, &format!("{base}/curator"), ", format = \"curator\""),
        upstream("serverset", &server, &format!("{base}/serverset"), ", format = \"serverset\""),
        upstream(
            "ss-http",
            &server,
            &format!("{base}/serverset"),
            ", format = \"serverset\", endpoint_name = \"http\"",
        ),
        upstream("hostport", &server, &format!("{base}/hostport"), ", format = \"hostport\""),
        upstream("auto", &server, &format!("{base}/auto"), ""),
    ]
    .concat();
    let gw = gateway(&routes).await;
    let t = Duration::from_secs(10);
    until_served(&gw, "/curator", &["cur-a"], t).await;
    until_served(&gw, "/serverset", &["ss-a"], t).await;
    until_served(&gw, "/ss-http", &["ss-http"], t).await;
    until_served(&gw, "/hostport", &["hp-data", "hp-name"], t).await;
    until_served(&gw, "/auto", &["auto-cur", "auto-hp", "auto-ss"], t).await;

    // Data watches: a serverset member leaving ALIVE, a Curator instance turning enabled.
    zk::set_data(
        &c,
        &format!("{base}/serverset/member_0000000001"),
        &serverset(u("ss-a"), u("ss-http"), "DEAD"),
    )
    .await;
    zk::set_data(
        &c,
        &format!("{base}/serverset/member_0000000002"),
        &serverset(u("ss-dead"), u("ss-dead"), "ALIVE"),
    )
    .await;
    until_served(&gw, "/serverset", &["ss-dead"], Duration::from_secs(1)).await;
    zk::set_data(&c, &format!("{base}/curator/off"), &curator(u("cur-off"), true)).await;
    until_served(&gw, "/curator", &["cur-a", "cur-off"], Duration::from_secs(1)).await;
}

#[tokio::test]
async fn ephemeral_members_appearing_and_vanishing_are_followed_within_a_second() {
    let server = shared().connect_string();
    let path = format!("/ephemeral-{}", std::process::id());
    let (a, b) = (echo("a").await, echo("b").await);
    let owner_a = zk::client(&server).await;
    zk::mkdirs(&owner_a, &path).await;
    zk::ephemeral(&owner_a, &path, "a", a.authority().as_bytes()).await;
    let gw = gateway(&upstream("svc", &server, &path, "")).await;
    until_served(&gw, "/svc", &["a"], Duration::from_secs(10)).await;

    let owner_b = zk::client(&server).await;
    zk::ephemeral(&owner_b, &path, "b", b.authority().as_bytes()).await;
    until_served(&gw, "/svc", &["a", "b"], Duration::from_secs(1)).await;
    // The instance's session closes (a process exiting): its ephemeral node goes.
    drop(owner_a);
    until_served(&gw, "/svc", &["b"], Duration::from_secs(1)).await;
    zk::delete(&owner_b, &format!("{path}/b")).await;
    until_served(&gw, "/svc", &["503"], Duration::from_secs(1)).await;
    let v = upstream_view(&gw, "svc").await;
    assert!(v["discovery"]["last_error"].is_null(), "no children is an answer: {v}");
    let updates =
        metric_value(&gw, "switchyard_discovery_updates_total{upstream=\"svc\",type=\"zookeeper\"}").await;
    assert!(updates >= 4.0, "{updates}");
}

#[tokio::test]
async fn a_missing_path_is_an_empty_set_until_it_appears() {
    let server = shared().connect_string();
    let path = format!("/not-yet-{}/svc", std::process::id());
    let a = echo("a").await;
    let gw = gateway(&upstream("svc", &server, &path, "")).await;
    eventually("ready with an empty set", Duration::from_secs(10), || async {
        get(&gw.admin_url("/ready")).await.status == 200
    })
    .await;
    assert_eq!(served(&gw, "/svc", 2).await, set(&["503"]));
    let c = zk::client(&server).await;
    zk::mkdirs(&c, &path).await;
    zk::ephemeral(&c, &path, "a", a.authority().as_bytes()).await;
    until_served(&gw, "/svc", &["a"], Duration::from_secs(1)).await;
}

#[tokio::test]
async fn killing_zookeeper_keeps_the_set_and_a_restart_resumes_the_watches() {
    let mut server = tokio::task::spawn_blocking(ZkServer::start).await.unwrap();
    let cs = server.connect_string();
    let (a, b) = (echo("a").await, echo("b").await);
    let path = "/svc";
    {
        let c = zk::client(&cs).await;
        zk::mkdirs(&c, path).await;
        // Persistent members: they survive the test client's session across the outage.
        zk::mkdirs(&c, &format!("{path}/{}", a.authority())).await;
    }
    let gw = gateway(&upstream("svc", &cs, path, ", session_timeout = \"30s\"")).await;
    until_served(&gw, "/svc", &["a"], Duration::from_secs(10)).await;

    let mut server = tokio::task::spawn_blocking(move || {
        server.kill();
        server
    })
    .await
    .unwrap();
    eventually("the outage shown as last_error", Duration::from_secs(10), || async {
        upstream_view(&gw, "svc").await["discovery"]["last_error"].as_str().is_some()
    })
    .await;
    for _ in 0..3 {
        assert_eq!(served(&gw, "/svc", 6).await, set(&["a"]), "traffic continues to the last set");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let errors =
        metric_value(&gw, "switchyard_discovery_errors_total{upstream=\"svc\",type=\"zookeeper\"}").await;
    assert!(errors >= 1.0);

    server = tokio::task::spawn_blocking(move || {
        server.restart();
        server
    })
    .await
    .unwrap();
    eventually("reconnected: last_error cleared", Duration::from_secs(15), || async {
        upstream_view(&gw, "svc").await["discovery"]["last_error"].is_null()
    })
    .await;
    let c = zk::client(&cs).await;
    zk::mkdirs(&c, &format!("{path}/{}", b.authority())).await;
    until_served(&gw, "/svc", &["a", "b"], Duration::from_secs(1)).await;
    drop(c);
    tokio::task::spawn_blocking(move || drop(server)).await.unwrap();
}

#[tokio::test]
async fn an_expired_session_is_replaced_by_a_new_one_that_reads_again() {
    let mut server = tokio::task::spawn_blocking(ZkServer::start).await.unwrap();
    let cs = server.connect_string();
    let (a, b) = (echo("a").await, echo("b").await);
    let path = "/svc";
    {
        let c = zk::client(&cs).await;
        zk::mkdirs(&c, &format!("{path}/{}", a.authority())).await;
    }
    let gw = gateway(&upstream("svc", &cs, path, ", session_timeout = \"1s\"")).await;
    until_served(&gw, "/svc", &["a"], Duration::from_secs(10)).await;

    // Down until the gateway's session has expired: its ZooKeeper client gives a session up
    // by itself after about 1.4 × session_timeout without the server. The gateway then says
    // the session ended and tries to open a new one, and (the server being down) reports that
    // it cannot connect: either error only ever follows the end of a session.
    server = tokio::task::spawn_blocking(move || {
        server.kill();
        server
    })
    .await
    .unwrap();
    eventually("the gateway's session expired", Duration::from_secs(10), || async {
        let v = upstream_view(&gw, "svc").await;
        v["discovery"]["last_error"].as_str().is_some_and(|e| {
            e.starts_with("cannot connect to ZooKeeper")
                || (e.contains("ZooKeeper session") && e.contains("ended"))
        })
    })
    .await;
    server = tokio::task::spawn_blocking(move || {
        server.restart();
        server
    })
    .await
    .unwrap();
    assert_eq!(served(&gw, "/svc", 4).await, set(&["a"]), "the set survives the expiry");
    // The old session is gone for good, so only a new session can see this change.
    let c = zk::client(&cs).await;
    zk::mkdirs(&c, &format!("{path}/{}", b.authority())).await;
    until_served(&gw, "/svc", &["a", "b"], Duration::from_secs(10)).await;
    eventually("last_error cleared", Duration::from_secs(5), || async {
        upstream_view(&gw, "svc").await["discovery"]["last_error"].is_null()
    })
    .await;
    drop(c);
    tokio::task::spawn_blocking(move || drop(server)).await.unwrap();
}

/// Benchmark (ignored; run with `cargo test --release --test discovery_zookeeper -- --ignored
/// --nocapture`): time from a ZooKeeper member appearing (the `create` call returning) to the
/// first request through the gateway that reaches it, median over 20 changes.
#[tokio::test]
#[ignore = "benchmark"]
async fn bench_node_change_to_first_request() {
    let server = shared().connect_string();
    let path = format!("/bench-{}", std::process::id());
    let c = zk::client(&server).await;
    zk::mkdirs(&c, &path).await;
    let first = support::upstream(status(200)).await;
    zk::ephemeral(&c, &path, "m0", first.authority().as_bytes()).await;
    let gw = gateway(&upstream_routes(&server, &path)).await;
    until_served_status(&gw).await;
    let mut times = Vec::new();
    let mut prev = ("m0".to_owned(), first);
    for i in 1..=20 {
        let next = support::upstream(status(200)).await;
        let name = format!("m{i}");
        let t0 = std::time::Instant::now();
        zk::ephemeral(&c, &path, &name, next.authority().as_bytes()).await;
        while next.hits() == 0 {
            let _ = get(&gw.url("/svc")).await;
        }
        times.push(t0.elapsed());
        zk::delete(&c, &format!("{path}/{}", prev.0)).await;
        prev = (name, next);
    }
    times.sort();
    println!(
        "zookeeper change -> first request: median {:?}, min {:?}, max {:?} (20 changes)",
        times[10], times[0], times[19]
    );
}

fn upstream_routes(server: &str, path: &str) -> String {
    upstream("svc", server, path, "")
}

async fn until_served_status(gw: &TestGateway) {
    eventually("served", Duration::from_secs(10), || async { get(&gw.url("/svc")).await.status == 200 })
        .await;
}
