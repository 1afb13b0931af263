//! The `dns` source: A/AAAA or SRV records, re-resolved at their TTL (docs/discovery.md).
//!
//! The loop is linkerd's `dns-resolve` (`linkerd/proxy/dns-resolve/src/lib.rs`): resolve,
//! publish the whole set, sleep until the answer's TTL expires — bounded below by 1 s so a
//! TTL of 0 cannot make it spin and above by `refresh` so a long TTL still notices changes —
//! and resolve again. The resolver's own cache is off: the TTL already paces us, and a cached
//! answer would hide a change for one more TTL.
//!
//! What an answer means (RFC 2308 negative answers are authoritative, transport failures are
//! not): NXDOMAIN and NODATA publish an empty set; SERVFAIL, REFUSED, timeouts and an
//! unreachable resolver keep the last set and retry with backoff. For SRV only the lowest
//! priority present is used (RFC 2782: clients must try lower priorities first; we do not fail
//! over across priorities); each target is resolved to its addresses through the same resolver,
//! and a weight of 0 counts as 1 (our weights are at least 1).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_resolver::config::{LookupIpStrategy, NameServerConfigGroup, ResolveHosts, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::ProtoErrorKind;
use hickory_resolver::{ResolveError, Resolver, TokioResolver};

use crate::config::{DnsRecord, StaticEndpoint};

use super::{backoff, Publisher};

/// The shortest re-resolution interval (the TTL is bounded below by 1 s).
pub(crate) const MIN_REFRESH: Duration = Duration::from_secs(1);

/// Per-query timeout, with 2 attempts: the resolv.conf defaults (`timeout:5`, `attempts:2`).
/// A resolver that is slow but working (a recursive lookup behind a busy forwarder can take
/// seconds) must still give the upstream its endpoints; a dead one is noticed in 10 s, and the
/// last known set is kept meanwhile.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// What to resolve.
#[derive(Debug, Clone)]
pub(crate) struct DnsSource {
    /// The name.
    pub name: String,
    /// The port for A/AAAA answers.
    pub port: u16,
    /// A/AAAA or SRV.
    pub record: DnsRecord,
    /// Upper bound of the re-resolution interval.
    pub refresh: Duration,
    /// Resolver override; `None` = the system's.
    pub resolver: Option<SocketAddr>,
}

/// The outcome of one resolution.
#[derive(Debug)]
pub(crate) enum Answer {
    /// Records (possibly none: NXDOMAIN/NODATA), valid until the instant given.
    Set(Vec<StaticEndpoint>, Instant),
    /// A failure that must not change the set.
    Failed(String),
}

/// Run the source until the registry aborts it.
pub(crate) async fn run(src: DnsSource, out: Publisher) {
    let resolver = match build_resolver(src.resolver) {
        Ok(r) => r,
        Err(e) => {
            out.fail(format!("cannot configure the DNS resolver: {e}"));
            return std::future::pending().await;
        }
    };
    let mut backoff = backoff();
    loop {
        let wait = match resolve(&resolver, &src).await {
            Answer::Set(set, valid_until) => {
                out.reset(set);
                backoff.reset();
                valid_until
                    .saturating_duration_since(Instant::now())
                    .clamp(MIN_REFRESH, src.refresh.max(MIN_REFRESH))
            }
            Answer::Failed(e) => {
                out.fail(e);
                backoff.next_delay().min(src.refresh.max(MIN_REFRESH))
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// A resolver for `server` (or the system's), without a cache, with short timeouts.
pub(crate) fn build_resolver(server: Option<SocketAddr>) -> Result<TokioResolver, ResolveError> {
    let mut builder = match server {
        Some(addr) => Resolver::builder_with_config(
            ResolverConfig::from_parts(
                None,
                vec![],
                NameServerConfigGroup::from_ips_clear(&[addr.ip()], addr.port(), true),
            ),
            TokioConnectionProvider::default(),
        ),
        None => TokioResolver::builder_tokio()?,
    };
    let opts = builder.options_mut();
    opts.cache_size = 0;
    opts.timeout = QUERY_TIMEOUT;
    opts.attempts = 2;
    opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    if server.is_some() {
        // With an explicit resolver, the answer must come from it.
        opts.use_hosts_file = ResolveHosts::Never;
    }
    Ok(builder.build())
}

/// The name as an absolute name, so search domains are not appended.
fn fqdn(name: &str) -> String {
    if name.ends_with('.') {
        name.to_owned()
    } else {
        format!("{name}.")
    }
}

fn endpoint(ip: IpAddr, port: u16, weight: u32) -> StaticEndpoint {
    StaticEndpoint { address: SocketAddr::new(ip, port).to_string(), weight: weight.max(1) }
}

/// Resolve once.
pub(crate) async fn resolve(resolver: &TokioResolver, src: &DnsSource) -> Answer {
    let name = fqdn(&src.name);
    let now = Instant::now();
    match src.record {
        DnsRecord::A => match resolver.lookup_ip(name.as_str()).await {
            Ok(l) => Answer::Set(l.iter().map(|ip| endpoint(ip, src.port, 1)).collect(), l.valid_until()),
            Err(e) => classify(&name, "A/AAAA", e, now),
        },
        DnsRecord::Srv => {
            let srv = match resolver.srv_lookup(name.as_str()).await {
                Ok(s) => s,
                Err(e) => return classify(&name, "SRV", e, now),
            };
            let mut valid_until = srv.as_lookup().valid_until();
            let Some(lowest) = srv.iter().map(|r| r.priority()).min() else {
                return Answer::Set(Vec::new(), valid_until);
            };
            let mut set = Vec::new();
            for r in srv.iter().filter(|r| r.priority() == lowest) {
                let target = r.target().to_ascii();
                match resolver.lookup_ip(target.as_str()).await {
                    Ok(ips) => {
                        valid_until = valid_until.min(ips.valid_until());
                        set.extend(ips.iter().map(|ip| endpoint(ip, r.port(), u32::from(r.weight()))));
                    }
                    Err(e) => match classify(&target, "A/AAAA", e, now) {
                        // A target without addresses contributes nothing.
                        Answer::Set(_, until) => valid_until = valid_until.min(until),
                        failed => return failed,
                    },
                }
            }
            Answer::Set(set, valid_until)
        }
    }
}

/// NXDOMAIN and NODATA are authoritative empty answers; everything else is a failure.
fn classify(name: &str, kind: &str, e: ResolveError, now: Instant) -> Answer {
    if let Some(ProtoErrorKind::NoRecordsFound { response_code, negative_ttl, .. }) =
        e.proto().map(|p| p.kind())
    {
        if matches!(response_code, ResponseCode::NXDomain | ResponseCode::NoError) {
            let ttl = negative_ttl.map_or(Duration::ZERO, |t| Duration::from_secs(u64::from(t)));
            return Answer::Set(Vec::new(), now + ttl);
        }
        return Answer::Failed(format!("DNS {kind} lookup of {name} failed: {response_code}"));
    }
    Answer::Failed(format!("DNS {kind} lookup of {name} failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_made_absolute() {
        assert_eq!(fqdn("a.b"), "a.b.");
        assert_eq!(fqdn("a.b."), "a.b.");
    }

    #[test]
    fn ipv6_endpoints_are_bracketed() {
        assert_eq!(endpoint("::1".parse().unwrap(), 80, 0).address, "[::1]:80");
        assert_eq!(endpoint("::1".parse().unwrap(), 80, 0).weight, 1);
    }
}
