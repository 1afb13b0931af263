//! A consistent-hash ring (Karger et al. 1997, as in Envoy's `ring_hash` and NGINX's
//! `hash ... consistent`, ketama-style virtual nodes).
//!
//! Each endpoint is placed at `weight × VNODES_PER_WEIGHT` points, hashed from its address and
//! the replica number, so that its position does not depend on the other endpoints: removing one
//! endpoint moves only the keys that hashed to its points (about 1/N of them). A key goes to the
//! first point at or after its hash, found by binary search over a sorted array, which keeps the
//! pick within a few dozen nanoseconds even at the size cap. Built when the set changes.

use super::hash::Fnv;

/// Virtual nodes per unit of weight. With 160 points an endpoint's share of the ring has a
/// relative standard deviation near 1/sqrt(160) ≈ 8 %, which is what ketama settled on.
const VNODES_PER_WEIGHT: u64 = 160;

/// The most points a ring may have (4 MiB of hashes and owners). Larger sets are scaled down
/// proportionally, keeping at least one point per endpoint: a rebuild stays in milliseconds
/// and memory stays bounded even for 10 000 endpoints.
const MAX_POINTS: u64 = 1 << 18;

/// A sorted ring of (hash, endpoint index) points.
#[derive(Clone, Debug, Default)]
pub(crate) struct Ring {
    hashes: Vec<u64>,
    owners: Vec<u32>,
}

impl Ring {
    /// The ring for endpoints with these addresses and weights (index = position).
    pub(crate) fn new<'a>(endpoints: impl ExactSizeIterator<Item = (&'a str, u32)> + Clone) -> Self {
        let total: u64 = endpoints.clone().map(|(_, w)| u64::from(w.max(1)) * VNODES_PER_WEIGHT).sum();
        let scale = if total > MAX_POINTS { MAX_POINTS as f64 / total as f64 } else { 1.0 };
        let mut points: Vec<(u64, u32)> = Vec::with_capacity(total.min(MAX_POINTS) as usize + 1024);
        for (i, (addr, w)) in endpoints.enumerate() {
            let n = ((u64::from(w.max(1)) * VNODES_PER_WEIGHT) as f64 * scale).round().max(1.0) as u64;
            let mut base = Fnv::new(0);
            base.write(addr.as_bytes());
            for r in 0..n {
                let mut h = base;
                h.write(&r.to_le_bytes());
                points.push((h.finish(), i as u32));
            }
        }
        points.sort_unstable();
        let (hashes, owners) = points.into_iter().unzip();
        Ring { hashes, owners }
    }

    /// The endpoint index owning `key`; the ring must not be empty.
    pub(crate) fn lookup(&self, key: u64) -> usize {
        let i = self.hashes.partition_point(|&h| h < key);
        let i = if i == self.hashes.len() { 0 } else { i };
        self.owners[i] as usize
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }
}
