//! An immutable endpoint set and its precomputed pick structure: the smooth-WRR schedule
//! (`round_robin`), an alias table (`random`, and the candidate draw of `least_request` and
//! `p2c_ewma`), a hash ring (`ring_hash`) or a Maglev table (`maglev`). Built off the request
//! path whenever the endpoints, their health or their ejection change; a pick reads it without
//! a lock, does not allocate, and costs the same for 3 or 10 000 endpoints.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::endpoint::{self, Endpoint};
use super::round_robin::SmoothSchedule;
use super::{maglev, ring_hash, weighted};
use crate::config::Balance;

/// How a set chooses among its active endpoints.
#[derive(Debug)]
enum Picker {
    RoundRobin(SmoothSchedule),
    Random(weighted::AliasTable),
    LeastRequest(weighted::AliasTable),
    P2cEwma(weighted::AliasTable),
    RingHash(ring_hash::Ring, weighted::AliasTable),
    Maglev(maglev::Table, weighted::AliasTable),
}

/// An immutable endpoint set with its precomputed pick structure.
#[derive(Debug)]
pub struct EndpointSet {
    /// Every endpoint, eligible or not, in discovery order.
    pub endpoints: Vec<Arc<Endpoint>>,
    /// What picks choose among: the eligible endpoints, or all of them in panic mode.
    active: Vec<Arc<Endpoint>>,
    picker: Picker,
    panic: bool,
}

fn ptr(ep: &Arc<Endpoint>) -> usize {
    Arc::as_ptr(ep) as usize
}

impl EndpointSet {
    /// A set over `endpoints` for `balance`: the eligible ones (healthy, not ejected) are
    /// active, or all when fewer than `panic_threshold` percent are eligible (0 = never).
    /// Builds the picker's table here, never per request.
    pub fn new(balance: Balance, endpoints: Vec<Arc<Endpoint>>, panic_threshold: u8) -> Self {
        let eligible: Vec<Arc<Endpoint>> = endpoints.iter().filter(|e| e.is_eligible()).cloned().collect();
        let panic =
            !endpoints.is_empty() && eligible.len() * 100 < usize::from(panic_threshold) * endpoints.len();
        let active = if panic { endpoints.clone() } else { eligible };
        let weights: Vec<u32> = active.iter().map(|e| e.weight).collect();
        let alias = || weighted::AliasTable::new(&weights);
        let addrs = || active.iter().map(|e| (e.address.as_str(), e.weight));
        let picker = match balance {
            Balance::RoundRobin => Picker::RoundRobin(SmoothSchedule::new(&weights)),
            Balance::Random => Picker::Random(alias()),
            Balance::LeastRequest => Picker::LeastRequest(alias()),
            Balance::P2cEwma => Picker::P2cEwma(alias()),
            Balance::RingHash => Picker::RingHash(ring_hash::Ring::new(addrs()), alias()),
            Balance::Maglev => Picker::Maglev(maglev::Table::new(addrs()), alias()),
        };
        EndpointSet { endpoints, active, picker, panic }
    }

    /// The endpoints picks choose among.
    pub fn active(&self) -> &[Arc<Endpoint>] {
        &self.active
    }

    /// Whether panic mode is on (too few eligible endpoints: all are used).
    pub fn is_panic(&self) -> bool {
        self.panic
    }

    /// Pick an endpoint. `key` is the request's hash (for `ring_hash`/`maglev`; `None` falls
    /// back to weighted random); `tried` holds the [`Endpoint`] addresses (`Arc::as_ptr`)
    /// already tried for this request, avoided whenever another endpoint is available;
    /// `cursor` is the round-robin position; `rng` drives the random choices (seed it for
    /// reproducible picks). `None` when nothing may be picked.
    pub fn pick(
        &self,
        key: Option<u64>,
        tried: &[usize],
        cursor: &AtomicUsize,
        rng: &mut fastrand::Rng,
    ) -> Option<&Arc<Endpoint>> {
        let n = self.active.len();
        if n == 0 {
            return None;
        }
        // In panic mode every endpoint takes traffic, trial or not.
        let admit = |ep: &Arc<Endpoint>| self.panic || ep.state.breaker.admit();
        let fresh = |ep: &Arc<Endpoint>| !tried.contains(&ptr(ep)) && admit(ep);
        let first = match &self.picker {
            Picker::RoundRobin(s) => {
                // At most one full cycle: after it every endpoint has been offered once.
                for _ in 0..s.len() {
                    let ep = &self.active[s.at(cursor.fetch_add(1, Ordering::Relaxed))];
                    if fresh(ep) {
                        return Some(ep);
                    }
                }
                None
            }
            Picker::Random(t) => Some(t.sample(rng)),
            Picker::LeastRequest(t) => Some(self.p2c(t, rng, |e| {
                // in_flight / weight, compared without division; ties keep the first draw.
                (u64::from(e.in_flight.load(Ordering::Relaxed)), u64::from(e.weight))
            })),
            Picker::P2cEwma(t) => {
                let now = endpoint::now_ns();
                Some(self.p2c_f64(t, rng, |e| {
                    e.state.ewma_at(now) * f64::from(e.in_flight.load(Ordering::Relaxed) + 1)
                }))
            }
            Picker::RingHash(r, t) => Some(match key {
                Some(k) if !r.is_empty() => r.lookup(k),
                _ => t.sample(rng),
            }),
            Picker::Maglev(m, t) => Some(match key {
                Some(k) if !m.is_empty() => m.lookup(k),
                _ => t.sample(rng),
            }),
        };
        if let Some(i) = first {
            if fresh(&self.active[i]) {
                return Some(&self.active[i]);
            }
        }
        // The choice was tried already (a retry) or is a half-open endpoint whose trial is
        // taken: the first acceptable endpoint from a random start, else any admissible one.
        let start = rng.usize(..n);
        let ring = || (0..n).map(|k| &self.active[(start + k) % n]);
        ring().find(|ep| fresh(ep)).or_else(|| ring().find(|ep| admit(ep)))
    }

    /// Power of two choices on a rational cost `num/den` (lower wins).
    fn p2c(
        &self,
        t: &weighted::AliasTable,
        rng: &mut fastrand::Rng,
        cost: impl Fn(&Endpoint) -> (u64, u64),
    ) -> usize {
        let (a, b) = two(t, rng);
        let ((an, ad), (bn, bd)) = (cost(&self.active[a]), cost(&self.active[b]));
        if bn * ad < an * bd {
            b
        } else {
            a
        }
    }

    /// Power of two choices on a float cost (lower wins).
    fn p2c_f64(
        &self,
        t: &weighted::AliasTable,
        rng: &mut fastrand::Rng,
        cost: impl Fn(&Endpoint) -> f64,
    ) -> usize {
        let (a, b) = two(t, rng);
        if cost(&self.active[b]) < cost(&self.active[a]) {
            b
        } else {
            a
        }
    }
}

/// Two weighted draws, distinct whenever there are two endpoints: a few weighted redraws, then
/// (rarely, with one dominant weight) a uniform pick among the others, so the cost is bounded.
fn two(t: &weighted::AliasTable, rng: &mut fastrand::Rng) -> (usize, usize) {
    let n = t.len();
    let a = t.sample(rng);
    if n < 2 {
        return (a, a);
    }
    for _ in 0..3 {
        let b = t.sample(rng);
        if b != a {
            return (a, b);
        }
    }
    (a, (a + 1 + rng.usize(..n - 1)) % n)
}
