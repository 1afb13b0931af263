//! ZooKeeper discovery end to end: the real gateway watching a real ZooKeeper server
//! (Debian's package, started by tests/support/zk.rs; `apt-get install -y zookeeper`).
//! Tests that kill or restart the server get their own; the others share one per binary. The
//! last ones run a three-server ensemble (`ZkEnsemble`) and kill servers of it.

mod support;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use support::disc::*;
use support::zk::{self, ZkEnsemble, ZkServer};
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

/// `path/HOST:PORT` of `u` as a persistent node (and `path`, if missing): a member that
/// outlasts every session, written through a client of its own.
async fn persistent_member(servers: &str, path: &str, u: &FakeUpstream) {
    let c = zk::client(servers).await;
    zk::mkdirs(&c, &format!("{path}/{}", u.authority())).await;
}

/// Wait until upstream `svc` shows a ZooKeeper outage as its `last_error`.
async fn until_outage_shown(gw: &TestGateway) {
    eventually("the outage shown as last_error", Duration::from_secs(10), || async {
        upstream_view(gw, "svc").await["discovery"]["last_error"].as_str().is_some()
    })
    .await;
}

/// Wait until upstream `svc`'s `last_error` is cleared (connected and read again).
async fn until_reconnected(gw: &TestGateway) {
    eventually("reconnected: last_error cleared", Duration::from_secs(15), || async {
        upstream_view(gw, "svc").await["discovery"]["last_error"].is_null()
    })
    .await;
}

/// Run `f` on `server` (a `ZkServer` or `ZkEnsemble`) off the runtime, as it blocks (kills,
/// starts, waits for a quorum); gives `server` back, and how long `f` took.
async fn blocking<T: Send + 'static>(
    mut server: T,
    f: impl FnOnce(&mut T) + Send + 'static,
) -> (T, Duration) {
    tokio::task::spawn_blocking(move || {
        let t = Instant::now();
        f(&mut server);
        (server, t.elapsed())
    })
    .await
    .unwrap()
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

/// All of ZooKeeper going away (`down`) and coming back (`up`, on the same ports with the same
/// data): the gateway keeps its set and shows the outage meanwhile, then resumes its watches.
/// Its session (30 s) outlives the outage, as the servers keep sessions on disk.
async fn outage_and_recovery<T: Send + 'static>(server: T, cs: &str, down: fn(&mut T), up: fn(&mut T)) -> T {
    let (a, b) = (echo("a").await, echo("b").await);
    let path = "/svc";
    // Persistent members: they survive the test client's session across the outage.
    persistent_member(cs, path, &a).await;
    let gw = gateway(&upstream("svc", cs, path, ", session_timeout = \"30s\"")).await;
    until_served(&gw, "/svc", &["a"], Duration::from_secs(10)).await;

    let (server, _) = blocking(server, down).await;
    until_outage_shown(&gw).await;
    for _ in 0..3 {
        assert_eq!(served(&gw, "/svc", 6).await, set(&["a"]), "traffic continues to the last set");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let errors =
        metric_value(&gw, "switchyard_discovery_errors_total{upstream=\"svc\",type=\"zookeeper\"}").await;
    assert!(errors >= 1.0);

    let (server, took) = blocking(server, up).await;
    let what = std::any::type_name::<T>().rsplit("::").next().unwrap_or_default();
    eprintln!("zk: {what} serving again {took:?} after the restart began");
    until_reconnected(&gw).await;
    persistent_member(cs, path, &b).await;
    until_served(&gw, "/svc", &["a", "b"], Duration::from_secs(1)).await;
    server
}

#[tokio::test]
async fn killing_zookeeper_keeps_the_set_and_a_restart_resumes_the_watches() {
    let server = tokio::task::spawn_blocking(ZkServer::start).await.unwrap();
    let cs = server.connect_string();
    let server = outage_and_recovery(server, &cs, ZkServer::kill, ZkServer::restart).await;
    tokio::task::spawn_blocking(move || drop(server)).await.unwrap();
}

#[tokio::test]
async fn an_expired_session_is_replaced_by_a_new_one_that_reads_again() {
    let server = tokio::task::spawn_blocking(ZkServer::start).await.unwrap();
    let cs = server.connect_string();
    let (a, b) = (echo("a").await, echo("b").await);
    let path = "/svc";
    persistent_member(&cs, path, &a).await;
    let gw = gateway(&upstream("svc", &cs, path, ", session_timeout = \"1s\"")).await;
    until_served(&gw, "/svc", &["a"], Duration::from_secs(10)).await;

    // Down until the gateway's session has expired: its ZooKeeper client gives a session up
    // by itself after about 1.4 × session_timeout without the server. The gateway then says
    // the session ended and tries to open a new one, and (the server being down) reports that
    // it cannot connect: either error only ever follows the end of a session.
    let (server, _) = blocking(server, ZkServer::kill).await;
    eventually("the gateway's session expired", Duration::from_secs(10), || async {
        let v = upstream_view(&gw, "svc").await;
        v["discovery"]["last_error"].as_str().is_some_and(|e| {
            e.starts_with("cannot connect to ZooKeeper")
                || (e.contains("ZooKeeper session") && e.contains("ended"))
        })
    })
    .await;
    let (server, _) = blocking(server, ZkServer::restart).await;
    assert_eq!(served(&gw, "/svc", 4).await, set(&["a"]), "the set survives the expiry");
    // The old session is gone for good, so only a new session can see this change.
    persistent_member(&cs, path, &b).await;
    until_served(&gw, "/svc", &["a", "b"], Duration::from_secs(10)).await;
    until_reconnected(&gw).await;
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

/// Start an ensemble (its quorum formed), saying how long that took.
async fn ensemble() -> ZkEnsemble {
    let t = Instant::now();
    let ens = tokio::task::spawn_blocking(ZkEnsemble::start).await.unwrap();
    eprintln!("zk ensemble: one leader and two followers {:?} after start", t.elapsed());
    ens
}

/// A long session for the members' owners: the leader's death must not end it.
const OWNER_SESSION: Duration = Duration::from_secs(30);

#[tokio::test]
async fn an_ensemble_losing_its_leader_keeps_the_set_and_follows_changes_after_the_election() {
    let ens = ensemble().await;
    let cs = ens.connect_string();
    let (a, b, c) = (echo("a").await, echo("b").await, echo("c").await);
    let path = "/svc";
    let owner_a = zk::client_with_timeout(&cs, OWNER_SESSION).await;
    zk::mkdirs(&owner_a, path).await;
    zk::ephemeral(&owner_a, path, "a", a.authority().as_bytes()).await;
    let gw = gateway(&upstream("svc", &cs, path, "")).await;
    until_served(&gw, "/svc", &["a"], Duration::from_secs(10)).await;

    // Every server drops its clients when the leader goes (they elect again): the gateway's
    // session moves to a server of the new quorum, keeping the set meanwhile.
    let old = ens.leader().expect("a leader");
    let (ens, elected) = blocking(ens, move |e| {
        e.kill(old);
        e.wait_quorum();
    })
    .await;
    let new = ens.leader().expect("a leader after the election");
    eprintln!("zk ensemble: leader {old} killed; server {new} leads {elected:?} later");
    assert_ne!(new, old);
    assert_eq!(served(&gw, "/svc", 8).await, set(&["a"]), "the set is kept through the election");
    let owner_b = zk::client_with_timeout(&cs, OWNER_SESSION).await;
    zk::ephemeral(&owner_b, path, "b", b.authority().as_bytes()).await;
    until_served(&gw, "/svc", &["a", "b"], Duration::from_secs(15)).await;
    until_reconnected(&gw).await;

    // The old leader, restarted, follows the new one, and a member written through it alone
    // (so committed by the quorum it rejoined) reaches the gateway.
    let (ens, rejoined) = blocking(ens, move |e| e.restart(old)).await;
    eprintln!("zk ensemble: server {old} restarted and following {rejoined:?} later");
    assert_eq!(ens.mode(old).as_deref(), Some("follower"));
    assert_eq!(ens.leader(), Some(new));
    let owner_c = zk::client_with_timeout(&ens.address(old), OWNER_SESSION).await;
    zk::ephemeral(&owner_c, path, "c", c.authority().as_bytes()).await;
    until_served(&gw, "/svc", &["a", "b", "c"], Duration::from_secs(10)).await;
    drop((owner_a, owner_b, owner_c));
    tokio::task::spawn_blocking(move || drop(ens)).await.unwrap();
}

#[tokio::test]
async fn a_whole_ensemble_down_keeps_the_set_and_its_restart_resumes_the_watches() {
    let ens = ensemble().await;
    let cs = ens.connect_string();
    let ens = outage_and_recovery(ens, &cs, ZkEnsemble::kill_all, ZkEnsemble::restart_all).await;
    tokio::task::spawn_blocking(move || drop(ens)).await.unwrap();
}
