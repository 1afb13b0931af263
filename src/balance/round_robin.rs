//! Smooth weighted round robin (NGINX's algorithm, `ngx_http_upstream_get_peer`), precomputed.
//!
//! NGINX keeps a `current_weight` per peer, adds each peer's weight every pick, chooses the
//! largest and subtracts the total from it. The resulting sequence is periodic with period equal
//! to the sum of the weights, so we run the algorithm once when the endpoint set changes and
//! store the sequence; a pick is then one relaxed atomic increment and an index, with no lock
//! and no allocation, and its cost does not depend on the number of endpoints.

/// The longest schedule we store. Weights whose sum exceeds it are scaled down proportionally
/// (ratios are kept to within one part in this many), which keeps memory bounded at 256 KiB.
const MAX_PERIOD: u64 = 65_536;

/// A precomputed smooth-WRR sequence of endpoint indices.
#[derive(Clone, Debug, Default)]
pub struct SmoothSchedule {
    order: Vec<u32>,
}

impl SmoothSchedule {
    /// The schedule for endpoints with these weights (index = position).
    pub fn new(weights: &[u32]) -> Self {
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
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether there is nothing to pick.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The endpoint index for pick number `i`.
    pub fn at(&self, i: usize) -> usize {
        self.order[i % self.order.len()] as usize
    }
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
    fn huge_weights_stay_bounded_and_proportional() {
        let s = SmoothSchedule::new(&[1_000_000, 3_000_000, 7]);
        assert!(s.len() as u64 <= MAX_PERIOD + 3);
        let count = |k| (0..s.len()).filter(|&i| s.at(i) == k).count();
        let ratio = count(1) as f64 / count(0) as f64;
        assert!((ratio - 3.0).abs() < 0.01, "{ratio}");
        assert!(count(2) >= 1);
    }
}
