//! The publisher, the adapter and the registry, fed into a recording [`Target`]: the real one
//! (`Upstream`) lives in `balance`, which discovery must not import. That an upstream keeps the
//! state of endpoints that stay is `balance`'s own test.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;
use crate::config::{DiscoveryConfig, StaticEndpoint};
use crate::metrics::{Metrics, Name};

fn ep(a: &str, w: u32) -> StaticEndpoint {
    StaticEndpoint { address: a.into(), weight: w }
}

fn name(n: &str) -> Name {
    Arc::new(n.to_owned())
}

/// One call the adapter made on its target.
#[derive(Clone, Debug, PartialEq)]
enum Call {
    Set(Vec<StaticEndpoint>),
    Error(String),
}

/// A target that records every call. Like `Upstream`, it refuses a set with an address that is
/// not `host:port`, so the adapter's handling of a refused set can be seen.
#[derive(Debug, Default)]
struct Recorder {
    calls: Mutex<Vec<Call>>,
}

impl Recorder {
    /// The calls since the last look.
    fn take(&self) -> Vec<Call> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
}

impl Target for Recorder {
    fn apply_endpoints(&self, set: &[StaticEndpoint]) -> Result<(), String> {
        if let Some(bad) = set.iter().find(|e| !e.address.contains(':')) {
            return Err(format!("endpoint {:?} is not host:port", bad.address));
        }
        self.calls.lock().unwrap().push(Call::Set(set.to_vec()));
        Ok(())
    }

    fn apply_error(&self, error: String) {
        self.calls.lock().unwrap().push(Call::Error(error));
    }
}

#[test]
fn publisher_dedups_and_failures_keep_the_set() {
    let (p, rx) = Publisher::new("t");
    p.reset(vec![ep("b:1", 1), ep("a:1", 2), ep("a:1", 1)]);
    let r = rx.borrow().clone();
    assert_eq!(*r.endpoints.unwrap(), vec![ep("b:1", 1), ep("a:1", 2)]);
    assert_eq!(r.updates, 1);
    p.reset(vec![ep("a:1", 2), ep("b:1", 1)]);
    assert_eq!(rx.borrow().updates, 1, "an equal set in another order is not an update");
    p.fail("down");
    p.fail("down");
    let r = rx.borrow().clone();
    assert_eq!(r.endpoints.unwrap().len(), 2);
    assert_eq!((r.errors, r.error.as_deref()), (2, Some("down")));
    p.reset(vec![]);
    let r = rx.borrow().clone();
    assert!(r.error.is_none() && r.endpoints.unwrap().is_empty(), "an authoritative empty set empties");
}

#[test]
fn adapter_applies_sets_errors_and_recovery() {
    let metrics = Arc::new(Metrics::new());
    let u = Recorder::default();
    let mut a = Adapter::new(&name("u"), "dns", Arc::clone(&metrics));
    let (p, rx) = Publisher::new("t");
    a.apply(&u, &rx.borrow());
    assert!(u.take().is_empty(), "no result yet: nothing to apply");
    p.reset(vec![ep("a:1", 1)]);
    a.apply(&u, &rx.borrow());
    assert_eq!(u.take(), [Call::Set(vec![ep("a:1", 1)])]);
    a.apply(&u, &rx.borrow());
    assert!(u.take().is_empty(), "an applied resolution is not applied again");
    p.fail("boom");
    a.apply(&u, &rx.borrow());
    assert_eq!(u.take(), [Call::Error("boom".into())], "a failure keeps the set");
    p.reset(vec![ep("a:1", 1)]);
    assert_eq!(rx.borrow().updates, 1, "the recovery publishes no new set");
    a.apply(&u, &rx.borrow());
    assert_eq!(u.take(), [Call::Set(vec![ep("a:1", 1)])], "a recovery re-applies the set to clear the error");
    let text = metrics.encode();
    assert!(text.contains("switchyard_discovery_updates_total{upstream=\"u\",type=\"dns\"} 1"), "{text}");
    assert!(text.contains("switchyard_discovery_errors_total{upstream=\"u\",type=\"dns\"} 1"), "{text}");
}

#[test]
fn a_refused_set_is_an_error_and_the_last_set_stays() {
    let metrics = Arc::new(Metrics::new());
    let u = Recorder::default();
    let mut a = Adapter::new(&name("u"), "dns", Arc::clone(&metrics));
    let (p, rx) = Publisher::new("t");
    p.reset(vec![ep("a:1", 1)]);
    a.apply(&u, &rx.borrow());
    p.reset(vec![ep("junk", 1)]);
    a.apply(&u, &rx.borrow());
    assert_eq!(
        u.take(),
        [Call::Set(vec![ep("a:1", 1)]), Call::Error("endpoint \"junk\" is not host:port".into())]
    );
    let text = metrics.encode();
    assert!(text.contains("switchyard_discovery_updates_total{upstream=\"u\",type=\"dns\"} 1"), "{text}");
    assert!(text.contains("switchyard_discovery_errors_total{upstream=\"u\",type=\"dns\"} 1"), "{text}");
}

#[tokio::test]
async fn sources_are_shared_and_stop_with_their_last_user() {
    let reg = Registry::new(Arc::new(Metrics::new()));
    let u = name("u");
    let cfg = DiscoveryConfig::Static(vec![ep("127.0.0.1:1", 1)]);
    let (u1, u2) = (Arc::new(Recorder::default()), Arc::new(Recorder::default()));
    let a1 = reg.attach(&u1, &u, &cfg).unwrap();
    let a2 = reg.attach(&u2, &u, &cfg).unwrap();
    assert_eq!(reg.running(), 1, "equal configs share one source");
    let cfg2 = DiscoveryConfig::Static(vec![ep("127.0.0.1:2", 1)]);
    let other = reg.attach(&Arc::new(Recorder::default()), &u, &cfg2).unwrap();
    assert_eq!(reg.running(), 2);
    drop(a1);
    assert_eq!(reg.running(), 2);
    drop(a2);
    drop(other);
    assert_eq!(reg.running(), 0, "a source stops when no upstream uses it");
}

fn consul(tls_ca: Option<&str>, insecure: bool) -> DiscoveryConfig {
    DiscoveryConfig::Consul {
        // Nothing listens there: the sources only have to start, not to succeed.
        address: crate::config::ConsulAddress::parse("https://127.0.0.1:1").unwrap(),
        service: "s".into(),
        tag: None,
        datacenter: None,
        passing_only: true,
        token_env: None,
        wait: Duration::from_secs(300),
        tls_ca: tls_ca.map(Into::into),
        tls_insecure_skip_verify: insecure,
    }
}

#[tokio::test]
async fn consul_tls_settings_are_part_of_the_source_identity() {
    let reg = Registry::new(Arc::new(Metrics::new()));
    let (plain, insecure) = (consul(None, false), consul(None, true));
    let (u, n) = (Arc::new(Recorder::default()), name("u"));
    let a1 = reg.attach(&u, &n, &plain).unwrap();
    let a2 = reg.attach(&u, &n, &plain).unwrap();
    assert_eq!(reg.running(), 1, "equal TLS settings share one watch");
    let a3 = reg.attach(&u, &n, &insecure).unwrap();
    assert_eq!(reg.running(), 2, "other TLS settings are another watch");
    drop((a1, a2, a3));
    assert_eq!(reg.running(), 0);
}

#[tokio::test]
async fn an_unreadable_consul_tls_ca_refuses_the_attachment_and_starts_nothing() {
    let reg = Registry::new(Arc::new(Metrics::new()));
    let u = Arc::new(Recorder::default());
    let missing = "/nonexistent/switchyard-consul-ca.pem";
    let e = reg.attach(&u, &name("u"), &consul(Some(missing), false)).unwrap_err();
    assert!(
        e.starts_with("upstream \"u\": consul https://127.0.0.1:1: tls_ca: ") && e.contains(missing),
        "{e}"
    );
    assert_eq!(reg.running(), 0);
    assert!(u.take().is_empty(), "nothing was applied");
}
