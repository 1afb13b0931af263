//! Resilience layers: rate limiting (per route), and — per upstream — retries with budgets,
//! bounded body replay, and the `[upstream.limits]` circuit-breaker thresholds.

pub mod rate_limit;
pub mod replay;
pub mod retry;
