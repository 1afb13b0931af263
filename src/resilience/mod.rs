//! Resilience policies: the per-upstream outlier breaker, per-route rate limiting, and
//! retries with budgets and bounded body replay. Each is a state machine or a tower layer that
//! knows nothing of balancing or forwarding; `stack` assembles the layers, `balance` drives the
//! breaker.

pub(crate) mod outlier;
pub(crate) mod rate_limit;
pub(crate) mod replay;
pub(crate) mod retry;
