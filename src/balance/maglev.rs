//! Maglev hashing (Eisenbud et al., "Maglev: A Fast and Reliable Software Network Load
//! Balancer", NSDI 2016, section 3.4), with weights as in Envoy's `maglev` load balancer.
//!
//! Every endpoint has a permutation of the table's slots derived from two hashes of its address
//! (`offset`, `skip`); endpoints take turns claiming their next unclaimed preferred slot until the
//! table is full. The table size is prime (65 537) so that every `skip` generates a full
//! permutation. Weights: in turn `t` an endpoint claims `floor(t·w/w_max) − floor((t−1)·w/w_max)`
//! slots, so the heaviest claims one per turn and the others proportionally fewer. Because
//! preferences do not depend on the other endpoints, removing one of N moves little more than
//! its own 1/N of the slots. A lookup is one index: `table[key % M]`.

use super::hash::hash_bytes;

/// The table size: the paper's smaller prime, large next to the endpoint counts we expect
/// (the paper asks for M ≫ N; at 10 000 endpoints each still gets ~6 slots).
pub(crate) const TABLE_SIZE: usize = 65_537;

/// A filled Maglev lookup table of endpoint indices.
#[derive(Clone, Debug, Default)]
pub(crate) struct Table {
    slots: Vec<u32>,
}

impl Table {
    /// The table for endpoints with these addresses and weights (index = position).
    pub(crate) fn new<'a>(endpoints: impl ExactSizeIterator<Item = (&'a str, u32)>) -> Self {
        let m = TABLE_SIZE as u64;
        let prefs: Vec<(u64, u64, u32)> = endpoints
            .map(|(addr, w)| {
                let offset = hash_bytes(0xa1, addr.as_bytes()) % m;
                let skip = hash_bytes(0xb2, addr.as_bytes()) % (m - 1) + 1;
                (offset, skip, w.max(1))
            })
            .collect();
        if prefs.is_empty() {
            return Table::default();
        }
        let max_w = u64::from(prefs.iter().map(|p| p.2).max().unwrap_or(1));
        const EMPTY: u32 = u32::MAX;
        let mut slots = vec![EMPTY; TABLE_SIZE];
        let mut next = vec![0u64; prefs.len()];
        let mut filled = 0usize;
        let mut turn: u64 = 0;
        'fill: loop {
            turn += 1;
            for (i, &(offset, skip, w)) in prefs.iter().enumerate() {
                let w = u64::from(w);
                let claims = turn * w / max_w - (turn - 1) * w / max_w;
                for _ in 0..claims {
                    loop {
                        let c = ((offset + next[i] * skip) % m) as usize;
                        next[i] += 1;
                        if slots[c] == EMPTY {
                            slots[c] = i as u32;
                            filled += 1;
                            break;
                        }
                    }
                    if filled == TABLE_SIZE {
                        break 'fill;
                    }
                }
            }
        }
        Table { slots }
    }

    /// The endpoint index for `key`; the table must not be empty.
    pub(crate) fn lookup(&self, key: u64) -> usize {
        self.slots[(key % TABLE_SIZE as u64) as usize] as usize
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}
