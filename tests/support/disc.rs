//! Helpers shared by the discovery tests: echo upstreams on a chosen loopback address, which
//! upstreams a burst of requests reached, and waiting until a given set serves.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::TcpListener;

use super::{eventually, get, FakeUpstream, TestGateway};

/// A `switchyard echo` named `name` on `ip:0`.
pub async fn echo_on(ip: &str, name: &str) -> FakeUpstream {
    let ip: IpAddr = ip.parse().unwrap();
    let listener = TcpListener::bind(SocketAddr::new(ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(switchyard::echo::serve(listener, name.to_owned()));
    FakeUpstream { addr, hits: Default::default(), conns: Default::default(), task }
}

/// A `switchyard echo` named `name` on exactly `addr` (None if it is taken).
pub async fn echo_at(addr: SocketAddr, name: &str) -> Option<FakeUpstream> {
    let listener = TcpListener::bind(addr).await.ok()?;
    let task = tokio::spawn(switchyard::echo::serve(listener, name.to_owned()));
    Some(FakeUpstream { addr, hits: Default::default(), conns: Default::default(), task })
}

/// The echo names that `n` requests to `path` reached ("503" for a gateway 503).
pub async fn served(gw: &TestGateway, path: &str, n: usize) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for _ in 0..n {
        let g = get(&gw.url(path)).await;
        if g.status == 200 {
            seen.insert(g.json()["name"].as_str().unwrap_or_default().to_owned());
        } else {
            seen.insert(g.status.as_u16().to_string());
        }
    }
    seen
}

pub fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// Wait until `n` requests to `path` reach exactly the echo names `want`.
pub async fn until_served(gw: &TestGateway, path: &str, want: &[&str], within: Duration) -> Duration {
    let want = set(want);
    let n = want.len() * 4;
    eventually(&format!("{path} served by {want:?}"), within, || {
        let want = want.clone();
        async move { served(gw, path, n).await == want }
    })
    .await
}

/// `GET /upstreams` entry for `name`.
pub async fn upstream_view(gw: &TestGateway, name: &str) -> serde_json::Value {
    let v = get(&gw.admin_url("/upstreams")).await.json();
    v["upstreams"].as_array().unwrap().iter().find(|u| u["name"] == name).cloned().unwrap()
}

/// A metric sample's value from `/metrics` (0 when absent).
pub async fn metric_value(gw: &TestGateway, sample: &str) -> f64 {
    let text = get(&gw.admin_url("/metrics")).await.text();
    text.lines().find_map(|l| l.strip_prefix(sample).and_then(|rest| rest.trim().parse().ok())).unwrap_or(0.0)
}
