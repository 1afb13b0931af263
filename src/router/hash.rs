//! A small, fast, unkeyed hasher for the router's string-keyed maps.
//!
//! Every key in the router's maps comes from the route files, and a request can only *probe* the
//! maps, never insert, so a client cannot lengthen a probe sequence: the flooding attack that
//! SipHash's random keys defend against does not apply. What matters on the request path is the
//! cost of hashing short strings (host names, path segments), which a multiply-rotate hash over
//! 8-byte words does in a few nanoseconds.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A `HashMap` using [`KeyHasher`].
pub(super) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<KeyHasher>>;

/// Word-at-a-time multiply-rotate hash with a final avalanche (the mix step follows the
/// well-known "Fx" construction; the finaliser is MurmurHash3's `fmix64`, so that the low bits
/// hashbrown uses for the bucket index and the high bits it uses as a tag are both well mixed).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct KeyHasher(u64);

/// Odd constant with well-spread bits (from the golden ratio), for the multiply step.
const SEED: u64 = 0x9e37_79b9_7f4a_7c15;

impl KeyHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for KeyHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0; 8];
            word[..rest.len()].copy_from_slice(rest);
            // Fold the length in so that "a" and "a\0" differ.
            self.add(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 56));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}
