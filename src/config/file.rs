//! Serde structs mirroring the TOML files, key for key (docs/configuration.md).
//!
//! Nothing here interprets a value: `validate` does that. Every value a later check may complain
//! about is wrapped in [`Spanned`], so that its error can name a line and column. `Spanned` does
//! not survive `#[serde(untagged)]` or `#[serde(flatten)]` (both buffer the input and drop the
//! spans), so the few "either this or that" values — a size, a duration, an endpoint — have
//! small hand-written `Deserialize` impls instead, and `discovery` is one struct with every key
//! of every type (validate checks which keys belong to the chosen `type`).
//!
//! Every struct denies unknown keys: the toml crate's message then lists the expected ones.

use std::fmt;

use serde::de::value::MapAccessDeserializer;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

// === gateway.toml ===

/// The whole of `gateway.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GatewayFile {
    /// `[gateway]`.
    pub(super) gateway: Option<GatewaySection>,
    /// `[admin]`.
    pub(super) admin: Option<AdminSection>,
    /// `[[listener]]`.
    #[serde(default)]
    pub(super) listener: Vec<ListenerSection>,
    /// `[http]`.
    pub(super) http: Option<HttpSection>,
    /// `[limits]`.
    pub(super) limits: Option<LimitsSection>,
    /// `[access_log]`.
    pub(super) access_log: Option<AccessLogSection>,
}

/// `[gateway]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GatewaySection {
    /// Folder of route files.
    pub(super) routes_dir: Option<Spanned<String>>,
    /// Fleet mode: routes from ZooKeeper or Consul KV instead of `routes_dir`.
    pub(super) routes_source: Option<Spanned<RoutesSourceSection>>,
    /// Fleet mode: where the last applied set is kept for starts while the source is down.
    pub(super) routes_cache: Option<Spanned<String>>,
    /// How long to keep accepting after SIGTERM, with `/ready` at 503.
    pub(super) drain_delay: Option<Spanned<Scalar>>,
    /// Graceful drain limit.
    pub(super) drain_timeout: Option<Spanned<Scalar>>,
}

/// `[gateway] routes_source`: one struct with the keys of both types (validate checks which
/// belong to the chosen `type`, as for `discovery`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RoutesSourceSection {
    /// zookeeper | consul.
    #[serde(rename = "type")]
    pub(super) kind: Spanned<String>,
    /// zookeeper: connect string.
    pub(super) servers: Option<Spanned<String>>,
    /// zookeeper: the fleet's node.
    pub(super) path: Option<Spanned<String>>,
    /// zookeeper: duration.
    pub(super) session_timeout: Option<Spanned<Scalar>>,
    /// zookeeper: variable holding `user:password` for digest auth.
    pub(super) auth_env: Option<Spanned<String>>,
    /// consul: agent URL.
    pub(super) address: Option<Spanned<String>>,
    /// consul: the fleet's key prefix.
    pub(super) prefix: Option<Spanned<String>>,
    /// consul: variable holding the ACL token.
    pub(super) token_env: Option<Spanned<String>>,
    /// consul: CA bundle for an https:// agent.
    pub(super) tls_ca: Option<Spanned<String>>,
}

/// `[admin]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AdminSection {
    /// Socket address of the admin API.
    pub(super) listen: Spanned<String>,
    /// Name of the environment variable holding the bearer token.
    pub(super) token_env: Option<Spanned<String>>,
}

/// One `[[listener]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListenerSection {
    /// Unique name.
    pub(super) name: Spanned<String>,
    /// Socket address to bind.
    pub(super) listen: Spanned<String>,
    /// `[listener.tls]`.
    pub(super) tls: Option<ListenerTlsSection>,
}

/// `[listener.tls]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListenerTlsSection {
    /// Certificate folder.
    pub(super) certs_dir: Spanned<String>,
    /// File stem served when SNI matches nothing.
    pub(super) default_cert: Option<Spanned<String>>,
    /// CA bundle for client certificates.
    pub(super) client_ca: Option<Spanned<String>>,
    /// Also serve HTTP/3 over QUIC on the same port number over UDP.
    #[serde(default)]
    pub(super) http3: bool,
}

/// `[http]`: request canonicalisation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HttpSection {
    /// Decode unreserved escapes, remove dot-segments.
    pub(super) normalize_path: Option<bool>,
    /// `//` -> `/`.
    pub(super) merge_slashes: Option<bool>,
    /// reject | keep | decode.
    pub(super) escaped_slashes: Option<Spanned<String>>,
}

/// `[limits]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LimitsSection {
    /// Duration.
    pub(super) header_read_timeout: Option<Spanned<Scalar>>,
    /// Duration.
    pub(super) idle_timeout: Option<Spanned<Scalar>>,
    /// Duration.
    pub(super) body_read_timeout: Option<Spanned<Scalar>>,
    /// Duration.
    pub(super) send_timeout: Option<Spanned<Scalar>>,
    /// Duration.
    pub(super) tunnel_idle_timeout: Option<Spanned<Scalar>>,
    /// Size.
    pub(super) max_request_header_bytes: Option<Spanned<Scalar>>,
    /// Size.
    pub(super) max_request_body_bytes: Option<Spanned<Scalar>>,
    /// Count.
    pub(super) max_connections: Option<Spanned<i64>>,
    /// Count.
    pub(super) http2_max_concurrent_streams: Option<Spanned<i64>>,
}

/// `[access_log]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AccessLogSection {
    /// Default true.
    pub(super) enabled: Option<bool>,
    /// `"-"` = stdout.
    pub(super) path: Option<Spanned<String>>,
}

// === routes/*.toml ===

/// One file under `routes_dir`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RoutesFile {
    /// `[[upstream]]`.
    #[serde(default)]
    pub(super) upstream: Vec<UpstreamSection>,
    /// `[[route]]`.
    #[serde(default)]
    pub(super) route: Vec<RouteSection>,
}

/// One `[[upstream]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UpstreamSection {
    /// Unique name.
    pub(super) name: Spanned<String>,
    /// Static endpoints.
    pub(super) endpoints: Option<Spanned<Vec<Spanned<EndpointEntry>>>>,
    /// Dynamic discovery.
    pub(super) discovery: Option<Spanned<DiscoverySection>>,
    /// Picker.
    pub(super) balance: Option<Spanned<String>>,
    /// Hash key for ring_hash / maglev.
    pub(super) hash_on: Option<Spanned<String>>,
    /// http1 | h2 | h2c.
    pub(super) protocol: Option<Spanned<String>>,
    /// Duration.
    pub(super) connect_timeout: Option<Spanned<Scalar>>,
    /// Duration.
    pub(super) read_timeout: Option<Spanned<Scalar>>,
    /// Percent.
    pub(super) panic_threshold: Option<Spanned<i64>>,
    /// `[upstream.tls]`.
    pub(super) tls: Option<UpstreamTlsSection>,
    /// `[upstream.health]`.
    pub(super) health: Option<HealthSection>,
    /// `[upstream.outlier]`.
    pub(super) outlier: Option<OutlierSection>,
    /// `[upstream.limits]`.
    pub(super) limits: Option<UpstreamLimitsSection>,
}

/// One entry of `endpoints`: `"host:port"` or `{ address = "host:port", weight = 3 }`.
#[derive(Debug)]
pub(super) enum EndpointEntry {
    /// The string form (weight 1).
    Address(String),
    /// The table form.
    Table(EndpointTable),
}

/// The table form of an endpoint.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EndpointTable {
    /// `host:port`.
    pub(super) address: Spanned<String>,
    /// At least 1; default 1.
    pub(super) weight: Option<Spanned<i64>>,
}

impl<'de> Deserialize<'de> for EndpointEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = EndpointEntry;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an endpoint: \"host:port\" or { address = \"host:port\", weight = N }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<EndpointEntry, E> {
                Ok(EndpointEntry::Address(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<EndpointEntry, E> {
                Ok(EndpointEntry::Address(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<EndpointEntry, A::Error> {
                EndpointTable::deserialize(MapAccessDeserializer::new(map)).map(EndpointEntry::Table)
            }
        }
        d.deserialize_any(V)
    }
}

/// `discovery = { type = ..., ... }`: every key of every type; validate checks which belong.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DiscoverySection {
    /// dns | zookeeper | consul.
    #[serde(rename = "type")]
    pub(super) kind: Spanned<String>,
    /// dns: name to resolve.
    pub(super) name: Option<Spanned<String>>,
    /// dns: port for A records.
    pub(super) port: Option<Spanned<i64>>,
    /// dns: a | srv.
    pub(super) record: Option<Spanned<String>>,
    /// dns: duration.
    pub(super) refresh: Option<Spanned<Scalar>>,
    /// dns: resolver socket address.
    pub(super) resolver: Option<Spanned<String>>,
    /// zookeeper: connect string.
    pub(super) servers: Option<Spanned<String>>,
    /// zookeeper: parent node.
    pub(super) path: Option<Spanned<String>>,
    /// zookeeper: member format.
    pub(super) format: Option<Spanned<String>>,
    /// zookeeper: serverset additional endpoint.
    pub(super) endpoint_name: Option<Spanned<String>>,
    /// zookeeper: duration.
    pub(super) session_timeout: Option<Spanned<Scalar>>,
    /// consul: agent URL.
    pub(super) address: Option<Spanned<String>>,
    /// consul: service.
    pub(super) service: Option<Spanned<String>>,
    /// consul: tag filter.
    pub(super) tag: Option<Spanned<String>>,
    /// consul: datacenter.
    pub(super) datacenter: Option<Spanned<String>>,
    /// consul: passing instances only.
    pub(super) passing_only: Option<Spanned<bool>>,
    /// consul: env var with the token.
    pub(super) token_env: Option<Spanned<String>>,
    /// consul: blocking-query wait (duration).
    pub(super) wait: Option<Spanned<Scalar>>,
    /// consul: CA bundle path for an https:// agent.
    pub(super) tls_ca: Option<Spanned<String>>,
    /// consul: accept any certificate from an https:// agent.
    pub(super) tls_insecure_skip_verify: Option<Spanned<bool>>,
}

/// `[upstream.tls]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UpstreamTlsSection {
    /// SNI.
    pub(super) sni: Option<Spanned<String>>,
    /// CA bundle path.
    pub(super) ca: Option<Spanned<String>>,
    /// Default false.
    pub(super) insecure_skip_verify: Option<bool>,
}

/// `[upstream.health]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HealthSection {
    /// http | tcp.
    #[serde(rename = "type")]
    pub(super) kind: Option<Spanned<String>>,
    /// Probe path.
    pub(super) path: Option<Spanned<String>>,
    /// Host header.
    pub(super) host: Option<Spanned<String>>,
    /// `"200-399"`, `"200"` or `200`.
    pub(super) expected_status: Option<Spanned<Scalar>>,
    /// Duration.
    pub(super) interval: Option<Spanned<Scalar>>,
    /// Duration.
    pub(super) timeout: Option<Spanned<Scalar>>,
    /// Count.
    pub(super) healthy_threshold: Option<Spanned<i64>>,
    /// Count.
    pub(super) unhealthy_threshold: Option<Spanned<i64>>,
}

/// `[upstream.outlier]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct OutlierSection {
    /// Count.
    pub(super) consecutive_failures: Option<Spanned<i64>>,
    /// Duration.
    pub(super) ejection_time: Option<Spanned<Scalar>>,
    /// Percent.
    pub(super) max_ejection_percent: Option<Spanned<i64>>,
}

/// `[upstream.limits]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UpstreamLimitsSection {
    /// Count.
    pub(super) max_connections: Option<Spanned<i64>>,
    /// Count.
    pub(super) max_pending_requests: Option<Spanned<i64>>,
    /// Count.
    pub(super) max_requests: Option<Spanned<i64>>,
    /// Count.
    pub(super) max_retries: Option<Spanned<i64>>,
}

/// One `[[route]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RouteSection {
    /// Unique name.
    pub(super) name: Spanned<String>,
    /// Host matchers.
    pub(super) hosts: Option<Vec<Spanned<String>>>,
    /// Exact path.
    pub(super) path: Option<Spanned<String>>,
    /// Segment-aware prefix.
    pub(super) path_prefix: Option<Spanned<String>>,
    /// Whole-path regex.
    pub(super) path_regex: Option<Spanned<String>>,
    /// Methods.
    pub(super) methods: Option<Vec<Spanned<String>>>,
    /// Header matchers.
    pub(super) headers: Option<Pairs<Spanned<String>>>,
    /// Query matchers.
    pub(super) query: Option<Pairs<Spanned<String>>>,
    /// Action: one upstream.
    pub(super) upstream: Option<Spanned<String>>,
    /// Action: weighted upstreams.
    pub(super) split: Option<Spanned<Vec<SplitEntry>>>,
    /// Action: direct answer.
    pub(super) respond: Option<Spanned<RespondSection>>,
    /// Action: redirect.
    pub(super) redirect: Option<Spanned<RedirectSection>>,
    /// Remove the matched prefix.
    pub(super) strip_prefix: Option<Spanned<bool>>,
    /// Replacement prefix.
    pub(super) rewrite_prefix: Option<Spanned<String>>,
    /// Host header to send upstream.
    pub(super) host_rewrite: Option<Spanned<String>>,
    /// Request header edits.
    pub(super) request_headers: Option<HeaderEditsSection>,
    /// Response header edits.
    pub(super) response_headers: Option<HeaderEditsSection>,
    /// Duration.
    pub(super) timeout: Option<Spanned<Scalar>>,
    /// Size.
    pub(super) max_request_body_bytes: Option<Spanned<Scalar>>,
    /// Token bucket.
    pub(super) rate_limit: Option<Spanned<RateLimitSection>>,
    /// `[route.retry]`.
    pub(super) retry: Option<RetrySection>,
}

/// One `split` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SplitEntry {
    /// Upstream name.
    pub(super) upstream: Spanned<String>,
    /// Relative weight; default 1.
    pub(super) weight: Option<Spanned<i64>>,
}

/// `respond = { ... }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RespondSection {
    /// Status code.
    pub(super) status: Spanned<i64>,
    /// Body; default empty.
    pub(super) body: Option<String>,
    /// Response headers.
    pub(super) headers: Option<Pairs<Spanned<String>>>,
}

/// `redirect = { ... }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RedirectSection {
    /// Target template.
    pub(super) to: Spanned<String>,
    /// 301/302/303/307/308; default 302.
    pub(super) status: Option<Spanned<i64>>,
}

/// `request_headers` / `response_headers`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HeaderEditsSection {
    /// Headers to set.
    pub(super) set: Option<Pairs<Spanned<String>>>,
    /// Headers to remove.
    pub(super) remove: Option<Vec<Spanned<String>>>,
}

/// `rate_limit = { ... }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RateLimitSection {
    /// Refill rate, > 0.
    pub(super) requests_per_second: Spanned<f64>,
    /// Bucket size; default ceil(rps).
    pub(super) burst: Option<Spanned<i64>>,
    /// client_ip | header:NAME | global.
    pub(super) key: Option<Spanned<String>>,
}

/// `[route.retry]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RetrySection {
    /// Retries after the first try.
    pub(super) attempts: Option<Spanned<i64>>,
    /// Conditions.
    pub(super) on: Option<Vec<Spanned<String>>>,
    /// Duration.
    pub(super) per_try_timeout: Option<Spanned<Scalar>>,
    /// Duration.
    pub(super) backoff: Option<Spanned<Scalar>>,
    /// Ratio in [0, 1].
    pub(super) budget: Option<Spanned<f64>>,
    /// Size.
    pub(super) max_replay_body_bytes: Option<Spanned<Scalar>>,
}

// === helpers ===

/// A value that may be written as an integer, a float or a string (sizes, durations, status
/// ranges); validate decides which forms it accepts, with a message that says what to write.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Scalar {
    /// A TOML integer.
    Int(i64),
    /// A TOML float.
    Float(f64),
    /// A TOML string.
    Str(String),
}

impl fmt::Display for Scalar {
    /// As the user would see it in a message: strings quoted, numbers bare.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Int(i) => write!(f, "{i}"),
            Scalar::Float(x) => write!(f, "{x}"),
            Scalar::Str(s) => write!(f, "{s:?}"),
        }
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a number")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                i64::try_from(v).map(Scalar::Int).map_err(|_| E::custom("number too large"))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar::Float(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar::Str(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Scalar, E> {
                Ok(Scalar::Str(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// A TOML table read as a list of `(key, value)` pairs in file order, each key with its span
/// (a `BTreeMap` would lose both).
#[derive(Debug)]
pub(super) struct Pairs<V>(pub(super) Vec<(Spanned<String>, V)>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Pairs<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Vis<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for Vis<V> {
            type Value = Pairs<V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Pairs<V>, A::Error> {
                let mut out = Vec::new();
                while let Some(k) = map.next_key::<Spanned<String>>()? {
                    let v = map.next_value::<V>()?;
                    out.push((k, v));
                }
                Ok(Pairs(out))
            }
        }
        d.deserialize_map(Vis(std::marker::PhantomData))
    }
}
