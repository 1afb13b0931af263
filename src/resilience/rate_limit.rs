//! `rate_limit`: a token bucket per key (client IP, a header's value, or one global bucket),
//! refilled continuously at `requests_per_second` up to `burst`.
//!
//! Memory is bounded: buckets live in a fixed number of shards, each capped. A bucket idle long
//! enough to have refilled completely is indistinguishable from a missing one, so such buckets
//! are dropped first; if a flood of distinct keys still fills a shard, the least recently used
//! bucket goes (its key starts again with a full bucket — the cost of bounding memory, as in
//! Envoy's local rate limiter with descriptors). Locks are per shard and held only for a few
//! arithmetic operations, never across an await.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::future::Either;
use http::{Request, Response};
use tower::{Layer, Service};

use crate::body::Body;
use crate::config::{RateLimit, RateLimitKey};
use crate::context::RequestInfo;
use crate::error::{Error, RateLimited};
use crate::metrics::{Metrics, Name, RouteLabel};

/// Shards: enough that two cores rarely meet on one lock.
const SHARDS: usize = 16;
/// Buckets per shard: 16 × 4 096 = 65 536 keys, about 5 MiB at most.
const PER_SHARD: usize = 4_096;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// The buckets of one route.
#[derive(Debug)]
pub struct RateLimiter {
    /// The config the buckets were made for (a reload keeps them only while it is the same).
    config: RateLimit,
    rate: f64,
    burst: f64,
    key: RateLimitKey,
    shards: Vec<Mutex<HashMap<u64, Bucket>>>,
    hasher: std::collections::hash_map::RandomState,
}

/// The result of asking for a token.
#[derive(Debug, PartialEq)]
pub enum Decision {
    /// Go ahead.
    Allow,
    /// Over the limit; a token is expected after this long.
    Deny(Duration),
}

impl RateLimiter {
    /// Buckets for `cfg`.
    pub fn new(cfg: &RateLimit) -> Self {
        RateLimiter {
            config: cfg.clone(),
            rate: cfg.requests_per_second,
            burst: f64::from(cfg.burst.max(1)),
            key: cfg.key.clone(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: Default::default(),
        }
    }

    /// The bucket key of `req`. Requests that lack the key (no such header) share one bucket
    /// of their own: leaving them unlimited would let any client escape the limit by not
    /// sending the header.
    fn key_of<B>(&self, req: &Request<B>) -> u64 {
        let mut h = self.hasher.build_hasher();
        // A tag byte keeps the shared "missing" bucket apart from every present value.
        match &self.key {
            RateLimitKey::Global => 0u8.hash(&mut h),
            RateLimitKey::ClientIp => match req.extensions().get::<Arc<RequestInfo>>() {
                Some(info) => (1u8, info.client.ip()).hash(&mut h),
                None => 2u8.hash(&mut h),
            },
            RateLimitKey::Header(name) => match req.headers().get(name) {
                Some(v) => (1u8, v.as_bytes()).hash(&mut h),
                None => 2u8.hash(&mut h),
            },
        }
        h.finish()
    }

    /// Take a token for `key` at `now`.
    pub fn check_key(&self, key: u64, now: Instant) -> Decision {
        let shard = &self.shards[(key as usize) % SHARDS];
        let mut map = shard.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= PER_SHARD && !map.contains_key(&key) {
            self.evict(&mut map, now);
        }
        let b = map.entry(key).or_insert(Bucket { tokens: self.burst, last: now });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Decision::Allow
        } else {
            Decision::Deny(Duration::from_secs_f64((1.0 - b.tokens) / self.rate))
        }
    }

    /// Make room in a full shard: drop every bucket that has refilled completely; if that frees
    /// less than an eighth, drop the least recently used eighth too. Freeing in batches keeps
    /// the cost per new key constant (amortised) under a flood of distinct keys.
    fn evict(&self, map: &mut HashMap<u64, Bucket>, now: Instant) {
        let full_after = Duration::from_secs_f64(self.burst / self.rate);
        map.retain(|_, b| now.saturating_duration_since(b.last) < full_after);
        let batch = PER_SHARD / 8;
        if map.len() + batch > PER_SHARD {
            let mut lasts: Vec<Instant> = map.values().map(|b| b.last).collect();
            let (_, cutoff, _) = lasts.select_nth_unstable(batch);
            let cutoff = *cutoff;
            map.retain(|_, b| b.last > cutoff);
        }
    }

    /// Buckets held now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len()).sum()
    }

    /// The config these buckets were made for.
    pub fn config(&self) -> &RateLimit {
        &self.config
    }
}

// === impl RateLimitLayer ===

/// Rejects requests over the route's `rate_limit` with 429 `rate_limited`. A route without
/// one holds nothing here: the clone of its stack each request makes counts no reference.
#[derive(Clone, Debug)]
pub(crate) struct RateLimitLayer(Option<Arc<Limited>>);

#[derive(Debug)]
struct Limited {
    limiter: Arc<RateLimiter>,
    route: Name,
    metrics: Arc<Metrics>,
}

impl RateLimitLayer {
    /// A layer over the route's buckets (`None` = pass-through). The buckets are made by the
    /// snapshot, which hands a reloaded route its previous buckets when its `rate_limit` did
    /// not change, so a reload resets no client's limit.
    pub(crate) fn new(limiter: Option<Arc<RateLimiter>>, route: Name, metrics: Arc<Metrics>) -> Self {
        RateLimitLayer(limiter.map(|limiter| Arc::new(Limited { limiter, route, metrics })))
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimitService<S>;
    fn layer(&self, inner: S) -> RateLimitService<S> {
        RateLimitService { inner, layer: self.clone() }
    }
}

/// See [`RateLimitLayer`].
#[derive(Clone, Debug)]
pub(crate) struct RateLimitService<S> {
    inner: S,
    layer: RateLimitLayer,
}

impl<S> RateLimitService<S> {
    /// The wrapped service.
    #[allow(dead_code, reason = "every middleware has tower\'s shape: new, get_ref, into_inner")]
    pub(crate) fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwrap.
    #[allow(dead_code, reason = "every middleware has tower\'s shape: new, get_ref, into_inner")]
    pub(crate) fn into_inner(self) -> S {
        self.inner
    }
}

impl<S> Service<Request<Body>> for RateLimitService<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Error>,
{
    type Response = Response<Body>;
    type Error = Error;
    type Future = Either<S::Future, std::future::Ready<Result<Response<Body>, Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        if let Some(on) = &self.layer.0 {
            let l = &on.limiter;
            if let Decision::Deny(wait) = l.check_key(l.key_of(&req), Instant::now()) {
                on.metrics.rate_limited.get_or_create(&RouteLabel { route: Arc::clone(&on.route) }).inc();
                return Either::Right(std::future::ready(Err(RateLimited { retry_after: wait }.into())));
            }
        }
        Either::Left(self.inner.call(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(rps: f64, burst: u32) -> RateLimiter {
        RateLimiter::new(&RateLimit { requests_per_second: rps, burst, key: RateLimitKey::Global })
    }

    #[test]
    fn burst_then_refill() {
        let l = limiter(10.0, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.check_key(1, t0), Decision::Allow);
        }
        assert!(matches!(l.check_key(1, t0), Decision::Deny(d) if d <= Duration::from_millis(100)));
        // 100 ms later one token is back.
        assert_eq!(l.check_key(1, t0 + Duration::from_millis(100)), Decision::Allow);
        assert!(matches!(l.check_key(1, t0 + Duration::from_millis(100)), Decision::Deny(_)));
    }

    #[test]
    fn keys_are_independent() {
        let l = limiter(1.0, 1);
        let t0 = Instant::now();
        assert_eq!(l.check_key(1, t0), Decision::Allow);
        assert_eq!(l.check_key(2, t0), Decision::Allow);
        assert!(matches!(l.check_key(1, t0), Decision::Deny(_)));
    }

    #[test]
    fn memory_is_bounded_under_a_flood_of_keys() {
        let l = limiter(1.0, 5);
        let t0 = Instant::now();
        for k in 0..100_000u64 {
            // Keys spread over all shards, as hashed keys do.
            let _ = l.check_key(k.wrapping_mul(0x9E37_79B9_7F4A_7C15), t0 + Duration::from_micros(k));
        }
        assert!(l.len() <= SHARDS * PER_SHARD, "{} buckets", l.len());
    }
}

#[cfg(test)]
mod key_tests {
    use super::*;

    #[test]
    fn requests_without_the_key_header_share_one_bucket() {
        let l = RateLimiter::new(&RateLimit {
            requests_per_second: 1.0,
            burst: 1,
            key: RateLimitKey::Header(http::HeaderName::from_static("x-user")),
        });
        let bare = || Request::get("/").body(()).unwrap();
        let with = |v: &'static str| Request::get("/").header("x-user", v).body(()).unwrap();
        assert_eq!(l.key_of(&bare()), l.key_of(&bare()));
        assert_ne!(l.key_of(&bare()), l.key_of(&with("")));
        assert_ne!(l.key_of(&with("a")), l.key_of(&with("b")));
        let now = Instant::now();
        assert_eq!(l.check_key(l.key_of(&bare()), now), Decision::Allow);
        assert!(matches!(l.check_key(l.key_of(&bare()), now), Decision::Deny(_)), "no key is no escape");
        assert_eq!(l.check_key(l.key_of(&with("a")), now), Decision::Allow);
    }
}
