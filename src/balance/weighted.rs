//! Weighted random sampling in constant time: Walker's alias method, as Vose laid it out
//! ("A linear algorithm for generating random numbers with a given distribution", 1991).
//!
//! Built once per endpoint-set change in O(n); a draw is one uniform index and one comparison,
//! whatever the number of endpoints. `random` draws once; `least_request` and `p2c_ewma` draw
//! their two candidates from it, which is how they honour weights.

/// An alias table over endpoint indices.
#[derive(Clone, Debug, Default)]
pub(crate) struct AliasTable {
    /// Probability (scaled to `u32::MAX`) of keeping column `i` rather than its alias.
    keep: Vec<u32>,
    alias: Vec<u32>,
}

impl AliasTable {
    pub(crate) fn new(weights: &[u32]) -> Self {
        let n = weights.len();
        if n == 0 {
            return AliasTable::default();
        }
        let total: f64 = weights.iter().map(|&w| f64::from(w.max(1))).sum();
        let mut scaled: Vec<f64> = weights.iter().map(|&w| f64::from(w.max(1)) * n as f64 / total).collect();
        let mut keep = vec![u32::MAX; n];
        let mut alias: Vec<u32> = (0..n as u32).collect();
        let (mut small, mut large): (Vec<usize>, Vec<usize>) = (0..n).partition(|&i| scaled[i] < 1.0);
        while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
            keep[s] = (scaled[s] * f64::from(u32::MAX)) as u32;
            alias[s] = l as u32;
            scaled[l] -= 1.0 - scaled[s];
            if scaled[l] < 1.0 {
                large.pop();
                small.push(l);
            }
        }
        // Whatever is left is 1.0 up to rounding: always kept.
        AliasTable { keep, alias }
    }

    pub(crate) fn len(&self) -> usize {
        self.keep.len()
    }

    /// A weighted draw; the table must not be empty.
    pub(crate) fn sample(&self, rng: &mut fastrand::Rng) -> usize {
        let i = rng.usize(..self.keep.len());
        if rng.u32(..) <= self.keep[i] {
            i
        } else {
            self.alias[i] as usize
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_follow_weights() {
        let t = AliasTable::new(&[1, 2, 7]);
        let mut rng = fastrand::Rng::with_seed(7);
        let mut c = [0usize; 3];
        for _ in 0..100_000 {
            c[t.sample(&mut rng)] += 1;
        }
        for (i, w) in [1.0, 2.0, 7.0].iter().enumerate() {
            let share = c[i] as f64 / 100_000.0;
            assert!((share - w / 10.0).abs() < 0.01, "{c:?}");
        }
    }
}
