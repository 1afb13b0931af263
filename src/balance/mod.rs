//! Upstreams at run time: the live endpoint set, the six endpoint pickers, and the wiring of
//! active health (`crate::health`) and passive outlier ejection into what may be picked.
//!
//! An [`Upstream`] owns an immutable [`EndpointSet`] snapshot behind an `ArcSwap`; whatever
//! discovers endpoints (a static list today; DNS, ZooKeeper, Consul later) calls
//! [`Upstream::set_endpoints`], which builds a new set off the request path, keeps the
//! [`Endpoint`] objects (and so their counters, health, ejection and latency state) of addresses
//! that stay, and swaps it in. A change of health or ejection rebuilds the set the same way, so
//! the set holds only the eligible endpoints (healthy and not ejected) and each picker's
//! precomputed structure over them: the smooth-WRR schedule (`round_robin`), an alias table
//! (`random`, and the candidate draw of `least_request` and `p2c_ewma`), a hash ring
//! (`ring_hash`) or a Maglev table (`maglev`). Picking reads the snapshot without a lock, does
//! not allocate, and costs the same for 3 or 10 000 endpoints.
//!
//! With no eligible endpoint a pick fails (503 `no_healthy_upstream`), unless fewer than
//! `panic_threshold` percent are eligible, in which case every endpoint is used (Envoy's panic
//! mode). Outlier ejection is Envoy's consecutive-failure detector with an explicit half-open
//! trial: `resilience::outlier`.

mod endpoint;
pub(crate) mod hash;
mod maglev;
mod ring_hash;
mod round_robin;
mod weighted;

mod set;
mod upstream;

pub use endpoint::Endpoint;
pub(crate) use endpoint::OUTCOMES;
pub use set::EndpointSet;
pub use upstream::Upstream;

pub use crate::resilience::outlier::Phase;
