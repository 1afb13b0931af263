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
        // Fixed forever: changing them would move every session's endpoint. The literals were
        // computed from the definition in the module comment (FNV-1a 64 over the seed's 8
        // little-endian bytes and then the input, finished with fmix64), independently of
        // this code, so a change of hash function, seed handling or byte order fails here.
        let pinned: [(u64, &[u8], u64); 10] = [
            (0, b"", 0x7bd3_144f_29c0_cc9e),
            (0, b"a", 0x6df9_901e_e878_b6be),
            (1, b"a", 0xdea1_3a43_1626_96b9),
            (u64::MAX, b"a", 0xce0a_a426_6de9_1bb3),
            (0, b"b", 0xd9bd_fd5a_b824_be60),
            (0, b"/users/42", 0x7b8b_944b_248a_dee9),
            (0, "gr\u{fc}\u{df}e/\u{65e5}\u{672c}".as_bytes(), 0x8496_cc53_e15b_b041),
            (0, &[10, 0, 0, 1], 0xde53_52d6_56e3_4c0d),
            (0, &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], 0x47b9_6aa9_f20d_602c),
            (42, b"session-abc", 0xa19f_af1d_5e89_8c94),
        ];
        for (seed, input, want) in pinned {
            assert_eq!(hash_bytes(seed, input), want, "hash_bytes({seed}, {input:?})");
        }
        // Writing in pieces is the same as writing at once (ring positions are built that way).
        let mut h = Fnv::new(0);
        h.write(b"/users");
        h.write(b"/42");
        assert_eq!(h.finish(), 0x7b8b_944b_248a_dee9);
    }

    #[test]
    fn request_keys_are_pinned_too() {
        // What each `hash_on` feeds the hash: the IP's octets (not its text), a header's or
        // cookie's raw value, the path without the query.
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let uri: Uri = "/users/42?x=1".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-user", "a".parse().unwrap());
        h.insert(header::COOKIE, "sid=b".parse().unwrap());
        let none = HeaderMap::new();
        assert_eq!(request_key(&HashOn::ClientIp, &none, &uri, ip("10.0.0.1")), Some(0xde53_52d6_56e3_4c0d));
        assert_eq!(request_key(&HashOn::ClientIp, &none, &uri, ip("::1")), Some(0x47b9_6aa9_f20d_602c));
        assert_eq!(request_key(&HashOn::ClientIp, &none, &uri, None), None);
        let header_on = HashOn::Header("x-user".parse().unwrap());
        assert_eq!(request_key(&header_on, &h, &uri, None), Some(0x6df9_901e_e878_b6be));
        assert_eq!(request_key(&header_on, &none, &uri, None), None);
        let cookie_on = HashOn::Cookie("sid".into());
        assert_eq!(request_key(&cookie_on, &h, &uri, None), Some(0xd9bd_fd5a_b824_be60));
        assert_eq!(request_key(&HashOn::Path, &none, &uri, None), Some(0x7b8b_944b_248a_dee9));
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, "sidx=1; sid=abc".parse().unwrap());
        assert_eq!(cookie(&h, "sid"), Some(&b"abc"[..]));
        assert_eq!(cookie(&h, "si"), None);
    }
}
