//! Configuration: the files users write, and the validated runtime model built from them.
//!
//! `file` holds serde structs that mirror the TOML (with spans, so that every error can point
//! at a line and column); `validate` turns them into the plain types of `model`, which carry
//! parsed durations, addresses and compiled regexes. Nothing outside this module sees the file
//! format. `watch` turns file-system events under `routes_dir` into reload requests.
//!
//! Every type is re-exported here, so users name `config::RouteConfig`, never the file it lives
//! in: `error` (what a failed load returns), `model::gateway` (`gateway.toml`),
//! `model::upstream` and `model::discovery` (`[[upstream]]`), `model::route` (`[[route]]`).

mod error;
mod file;
mod model;
mod validate;
pub mod watch;

pub use error::{ConfigError, ConfigErrors};
pub use model::discovery::{ConsulAddress, DiscoveryConfig, DnsRecord, StaticEndpoint, ZkFormat};
pub use model::fleet::{RoutesSource, ZkAuth};
pub use model::gateway::{
    AccessLogConfig, AdminToken, EscapedSlashes, GatewayConfig, HttpConfig, Limits, ListenerConfig,
    ListenerTls,
};
pub use model::route::{
    Action, HeaderEdits, HostMatch, Origin, PathMatch, RateLimit, RateLimitKey, RetryOn, RetryPolicy,
    RouteConfig, RouteSet, ValueMatch,
};
pub use model::upstream::{
    Balance, HashOn, HealthCheck, HealthKind, Outlier, UpstreamConfig, UpstreamLimits, UpstreamProtocol,
    UpstreamTls,
};
pub use validate::{
    load_gateway, load_routes, load_routes_from_sources, read_route_dir, validate_route_files, RouteDir,
};
