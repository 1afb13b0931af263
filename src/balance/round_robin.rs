//! Smooth weighted round robin (NGINX's algorithm, `ngx_http_upstream_get_peer`), precomputed.
//!
//! NGINX keeps a `current_weight` per peer, adds each peer's weight every pick, chooses the
//! largest and subtracts the total from it. The resulting sequence is periodic with period equal
//! to the sum of the weights, so we run the algorithm once when the endpoint set changes and
//! store the sequence; a pick is then one relaxed atomic increment and an index, with no lock
//! and no allocation, and its cost does not depend on the number of endpoints.
//!
//! NGINX's loop costs O(period × endpoints) to precompute, which for thousands of endpoints is
//! too slow to redo on every health change. Past `EXACT_BUDGET` steps the schedule is built as
//! an earliest-deadline-first sequence instead (endpoint `i`'s `c`-th turn is due at
//! `(c + ½) / wᵢ`, ties by position), in O(period × log endpoints): just as smooth and exactly
//! proportional, though not step for step NGINX's order.

/// The longest schedule we store. Weights whose sum exceeds it are scaled down proportionally
/// (ratios are kept to within one part in this many), which keeps memory bounded at 256 KiB.
const MAX_PERIOD: u64 = 65_536;

/// Up to this many inner steps (period × endpoints) the exact NGINX loop runs: a few
/// milliseconds at most. Beyond it, the EDF construction.
const EXACT_BUDGET: u64 = 1 << 22;

/// A precomputed smooth-WRR sequence of endpoint indices.
#[derive(Clone, Debug, Default)]
pub(crate) struct SmoothSchedule {
    order: Vec<u32>,
}

impl SmoothSchedule {
    /// The schedule for endpoints with these weights (index = position).
    pub(crate) fn new(weights: &[u32]) -> Self {
        if weights.is_empty() {
            return SmoothSchedule::default();
        }
        let mut w: Vec<u64> = weights.iter().map(|&w| u64::from(w.max(1))).collect();
        let g = w.iter().copied().fold(0, gcd);
        w.iter_mut().for_each(|x| *x /= g);
        let total: u64 = w.iter().sum();
        if total > MAX_PERIOD {
            // Keep every endpoint at least once; scale the rest.
            w.iter_mut().for_each(|x| *x = (*x * MAX_PERIOD / total).max(1));
        }
        let total: i64 = w.iter().sum::<u64>() as i64;
        if total as u64 * w.len() as u64 > EXACT_BUDGET {
            return SmoothSchedule { order: edf(&w, total as usize) };
        }
        let mut current = vec![0i64; w.len()];
        let mut order = Vec::with_capacity(total as usize);
        for _ in 0..total {
            let mut best = 0;
            for i in 0..w.len() {
                current[i] += w[i] as i64;
                if current[i] > current[best] {
                    best = i;
                }
            }
            current[best] -= total;
            order.push(best as u32);
        }
        SmoothSchedule { order }
    }

    /// The period.
    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }

    /// The endpoint index for pick number `i`.
    pub(crate) fn at(&self, i: usize) -> usize {
        self.order[i % self.order.len()] as usize
    }
}

/// An earliest-deadline-first sequence of `period` picks for weights `w`.
fn edf(w: &[u64], period: usize) -> Vec<u32> {
    use std::cmp::{Ordering, Reverse};
    use std::collections::BinaryHeap;

    /// Turn `(2c + 1) / (2w)` of endpoint `idx`, ordered by deadline then position.
    #[derive(PartialEq, Eq)]
    struct Due {
        num: u64,
        den: u64,
        idx: u32,
    }
    impl Ord for Due {
        fn cmp(&self, o: &Self) -> Ordering {
            (u128::from(self.num) * u128::from(o.den))
                .cmp(&(u128::from(o.num) * u128::from(self.den)))
                .then(self.idx.cmp(&o.idx))
        }
    }
    impl PartialOrd for Due {
        fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
            Some(self.cmp(o))
        }
    }

    let mut heap: BinaryHeap<Reverse<Due>> =
        w.iter().enumerate().map(|(i, &w)| Reverse(Due { num: 1, den: 2 * w, idx: i as u32 })).collect();
    let mut order = Vec::with_capacity(period);
    while order.len() < period {
        let Some(Reverse(mut d)) = heap.pop() else { break };
        order.push(d.idx);
        d.num += 2;
        heap.push(Reverse(d));
    }
    order
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_reduced_by_gcd() {
        assert_eq!(SmoothSchedule::new(&[10, 20]).len(), 3);
    }

    #[test]
    fn large_sets_use_an_exactly_proportional_edf_schedule() {
        let weights: Vec<u32> = (0..10_000).map(|i| 1 + i % 3).collect();
        let s = SmoothSchedule::new(&weights);
        assert_eq!(s.len() as u32, weights.iter().sum::<u32>());
        let mut count = vec![0u32; weights.len()];
        (0..s.len()).for_each(|i| count[s.at(i)] += 1);
        assert_eq!(count, weights);
    }

    #[test]
    fn huge_weights_stay_bounded_and_proportional() {
        let s = SmoothSchedule::new(&[1_000_000, 3_000_000, 7]);
        assert!(s.len() as u64 <= MAX_PERIOD + 3);
        let count = |k| (0..s.len()).filter(|&i| s.at(i) == k).count();
        let ratio = count(1) as f64 / count(0) as f64;
        assert!((ratio - 3.0).abs() < 0.01, "{ratio}");
        assert!(count(2) >= 1);
    }
}
