//! `discovery::zookeeper`: the member parsers (curator, serverset, hostport, auto) on arbitrary
//! node data and child names.
//!
//! Input: byte 0 says whether an `endpoint_name` is given (bit 0); the rest is split at the
//! first two 0 bytes into `child` (lossy UTF-8), `endpoint_name` (lossy UTF-8) and the node
//! data (raw bytes); with fewer 0 bytes, everything is data.
//!
//! Properties: never panics; `parse_member` with a fixed format gives what the format's own
//! parser gives; `auto` succeeds exactly when one of the three does, with the first success;
//! every endpoint is `host:port` with a port in 1..=65535 and weight 1.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::config::{StaticEndpoint, ZkFormat};
use switchyard::internals::{parse_curator, parse_hostport, parse_member, parse_serverset};

fn check_endpoint(r: &Result<Option<StaticEndpoint>, String>, what: &str) {
    let Ok(Some(ep)) = r else { return };
    assert_eq!(ep.weight, 1, "{what}: weight {} in {ep:?}", ep.weight);
    let (host, port) = ep.address.rsplit_once(':').unwrap_or_else(|| panic!("{what}: no ':' in {ep:?}"));
    let port: u16 = port.parse().unwrap_or_else(|_| panic!("{what}: bad port in {ep:?}"));
    assert!(port != 0, "{what}: port 0 in {ep:?}");
    assert!(!host.is_empty(), "{what}: empty host in {ep:?}");
}

fuzz_target!(|input: &[u8]| {
    let Some((&flags, rest)) = input.split_first() else { return };
    let mut parts = rest.splitn(3, |&b| b == 0);
    let (child, name, data) = match (parts.next(), parts.next(), parts.next()) {
        (Some(c), Some(n), Some(d)) => {
            (String::from_utf8_lossy(c).into_owned(), String::from_utf8_lossy(n).into_owned(), d)
        }
        _ => (String::from("10.0.0.1:8080"), String::from("http"), rest),
    };
    let endpoint_name = (flags & 1 != 0).then_some(name.as_str());

    let curator = parse_curator(data);
    let serverset = parse_serverset(data, endpoint_name);
    let hostport = parse_hostport(&child, data);
    check_endpoint(&curator, "curator");
    check_endpoint(&serverset, "serverset");
    check_endpoint(&hostport, "hostport");

    assert_eq!(parse_member(ZkFormat::Curator, endpoint_name, &child, data), curator);
    assert_eq!(parse_member(ZkFormat::Serverset, endpoint_name, &child, data), serverset);
    assert_eq!(parse_member(ZkFormat::HostPort, endpoint_name, &child, data), hostport);

    let auto = parse_member(ZkFormat::Auto, endpoint_name, &child, data);
    let first_ok = [&curator, &serverset, &hostport].into_iter().find(|r| r.is_ok());
    match first_ok {
        Some(r) => assert_eq!(auto.as_ref().ok(), r.as_ref().ok(), "auto differs from the first success"),
        None => assert!(auto.is_err(), "auto succeeded where every format failed: {auto:?}"),
    }
});
