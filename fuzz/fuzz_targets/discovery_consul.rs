//! `discovery::consul::parse`: a `/v1/health/service` answer body, arbitrary bytes.
//!
//! Properties: never panics; every endpoint is `host:port` with a port in
//! 1..=65535 and a weight >= 1; there are never more endpoints than JSON objects could hold
//! (at most one per `{` in the body).
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::internals::parse_consul as parse;

fuzz_target!(|body: &[u8]| {
    let Ok(endpoints) = parse(body) else { return };
    let objects = body.iter().filter(|&&b| b == b'{').count();
    assert!(endpoints.len() <= objects, "{} endpoints from {objects} objects", endpoints.len());
    for ep in &endpoints {
        assert!(ep.weight >= 1, "weight 0 in {ep:?}");
        let (host, port) = ep.address.rsplit_once(':').unwrap_or_else(|| panic!("no ':' in {ep:?}"));
        let port: u16 = port.parse().unwrap_or_else(|_| panic!("bad port in {ep:?}"));
        assert!(port != 0, "port 0 in {ep:?}");
        assert!(!host.is_empty(), "empty host in {ep:?}");
    }
});
