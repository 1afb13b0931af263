//! `[[upstream]]` and its `endpoints`, `[upstream.tls]`, `[upstream.health]`,
//! `[upstream.outlier]` and `[upstream.limits]` (`discovery` has its own module).

use std::path::Path;
use std::time::Duration;

use http::HeaderName;
use toml::Spanned;

use super::address::check_endpoint_address;
use super::units::is_token;
use super::{resolve_path, Ctx};
use crate::config::file::{
    EndpointEntry, HealthSection, OutlierSection, Scalar, UpstreamLimitsSection, UpstreamSection,
    UpstreamTlsSection,
};
use crate::config::{
    Balance, DiscoveryConfig, HashOn, HealthCheck, HealthKind, Outlier, StaticEndpoint, UpstreamConfig,
    UpstreamLimits, UpstreamProtocol, UpstreamTls,
};

impl Ctx<'_, '_> {
    pub(super) fn upstream(&mut self, u: &UpstreamSection, base: &Path) -> Option<UpstreamConfig> {
        let name = self.non_empty(&u.name, "name");
        let discovery = match (&u.endpoints, &u.discovery) {
            (Some(_), Some(_)) | (None, None) => {
                let what = if u.endpoints.is_some() {
                    "sets both `endpoints` and `discovery`"
                } else {
                    "sets neither `endpoints` nor `discovery`"
                };
                self.err(
                    u.name.span(),
                    format!(
                        "upstream {:?} {what}; set exactly one \
                         (a static list, or discovery = {{ type = \"dns\" | \"zookeeper\" | \
                         \"consul\", ... }})",
                        u.name.get_ref()
                    ),
                );
                None
            }
            (Some(eps), None) => self.endpoints(eps),
            (None, Some(d)) => self.discovery(d, base),
        };

        let balance = match &u.balance {
            None => Some(Balance::RoundRobin),
            Some(b) => self.choice(
                b,
                "balance",
                &[
                    ("round_robin", Balance::RoundRobin),
                    ("least_request", Balance::LeastRequest),
                    ("p2c_ewma", Balance::P2cEwma),
                    ("random", Balance::Random),
                    ("ring_hash", Balance::RingHash),
                    ("maglev", Balance::Maglev),
                ],
            ),
        };
        // `hash_on` with another picker is accepted and ignored; absent with a hashing picker
        // means the client IP (Envoy and NGINX default to a connection property too).
        let hash_on = match &u.hash_on {
            Some(h) => self.hash_on(h),
            None if matches!(balance, Some(Balance::RingHash | Balance::Maglev)) => Some(HashOn::ClientIp),
            None => None,
        };
        let protocol = match &u.protocol {
            None => Some(UpstreamProtocol::Http1),
            Some(p) => self.choice(
                p,
                "protocol",
                &[
                    ("http1", UpstreamProtocol::Http1),
                    ("h2", UpstreamProtocol::H2),
                    ("h2c", UpstreamProtocol::H2c),
                ],
            ),
        };
        let connect_timeout = self.duration_or(
            u.connect_timeout.as_ref(),
            "connect_timeout",
            UpstreamConfig::DEFAULT_CONNECT_TIMEOUT,
        );
        let read_timeout =
            self.duration_or(u.read_timeout.as_ref(), "read_timeout", UpstreamConfig::DEFAULT_READ_TIMEOUT);
        let panic_threshold = self.percent_or(u.panic_threshold.as_ref(), "panic_threshold", 0);
        let tls = u.tls.as_ref().map(|t| self.upstream_tls(t, base, &u.name));
        let health = u.health.as_ref().and_then(|h| self.health(h));
        let outlier = u.outlier.as_ref().map(|o| self.outlier(o));
        let limits = u.limits.as_ref().map_or_else(UpstreamLimits::default, |l| self.upstream_limits(l));

        Some(UpstreamConfig {
            name: name?,
            discovery: discovery?,
            balance: balance?,
            hash_on,
            protocol: protocol?,
            connect_timeout,
            read_timeout,
            panic_threshold,
            tls,
            health,
            outlier,
            limits,
        })
    }

    fn endpoints(&mut self, eps: &Spanned<Vec<Spanned<EndpointEntry>>>) -> Option<DiscoveryConfig> {
        if eps.get_ref().is_empty() {
            self.err(eps.span(), "`endpoints` is empty; list at least one \"host:port\", or use `discovery`");
            return None;
        }
        let mut out = Vec::with_capacity(eps.get_ref().len());
        let mut ok = true;
        for e in eps.get_ref() {
            let (address, span, weight) = match e.get_ref() {
                EndpointEntry::Address(a) => (a, e.span(), 1),
                EndpointEntry::Table(t) => {
                    let w = match &t.weight {
                        None => Some(1),
                        Some(w) => self.int(w, "weight", 1, i64::from(u32::MAX)),
                    };
                    (t.address.get_ref(), t.address.span(), w.map_or(0, |w| w as u32))
                }
            };
            if let Err(m) = check_endpoint_address(address) {
                self.err(span, m);
                ok = false;
            }
            ok &= weight >= 1;
            out.push(StaticEndpoint { address: address.clone(), weight });
        }
        ok.then_some(DiscoveryConfig::Static(out))
    }

    fn hash_on(&mut self, h: &Spanned<String>) -> Option<HashOn> {
        let s = h.get_ref().as_str();
        let r = match s {
            "client_ip" => Ok(HashOn::ClientIp),
            "path" => Ok(HashOn::Path),
            _ => {
                if let Some(name) = s.strip_prefix("header:") {
                    HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
                        .map(HashOn::Header)
                        .map_err(|_| format!("invalid header name {name:?} in `hash_on`"))
                } else if let Some(name) = s.strip_prefix("cookie:") {
                    if is_token(name) {
                        Ok(HashOn::Cookie(name.to_owned()))
                    } else {
                        Err(format!("invalid cookie name {name:?} in `hash_on`"))
                    }
                } else {
                    Err(format!(
                        "unknown `hash_on` {s:?}; expected one of: client_ip, header:NAME, \
                         cookie:NAME, path"
                    ))
                }
            }
        };
        r.map_err(|m| self.err(h.span(), m)).ok()
    }

    /// `upstream` is the upstream's `name`, for the insecure-mode warning.
    fn upstream_tls(
        &mut self,
        t: &UpstreamTlsSection,
        base: &Path,
        upstream: &Spanned<String>,
    ) -> UpstreamTls {
        let sni = t.sni.as_ref().and_then(|s| self.non_empty(s, "sni"));
        let ca = t.ca.as_ref().and_then(|c| self.non_empty(c, "ca")).map(|c| resolve_path(base, &c));
        let insecure_skip_verify = t.insecure_skip_verify.unwrap_or(false);
        if insecure_skip_verify {
            let (line, column) = self.src.locate(upstream.span().start);
            tracing::warn!(
                "{}:{line}:{column}: upstream {:?} sets insecure_skip_verify = true: its \
                 certificates are not verified",
                self.src.path.display(),
                upstream.get_ref(),
            );
        }
        UpstreamTls { sni, ca, insecure_skip_verify }
    }

    fn health(&mut self, h: &HealthSection) -> Option<HealthCheck> {
        let kind = match &h.kind {
            None => Some(HealthKind::Http),
            Some(k) => self.choice(k, "type", &[("http", HealthKind::Http), ("tcp", HealthKind::Tcp)]),
        };
        if kind == Some(HealthKind::Tcp) {
            for (key, v) in [("path", &h.path), ("host", &h.host)] {
                if let Some(v) = v {
                    self.err(
                        v.span(),
                        format!(
                            "`{key}` applies to http health checks only; remove it or set type = \"http\""
                        ),
                    );
                }
            }
        }
        let mut path = "/healthz".to_owned();
        if let Some(p) = &h.path {
            if p.get_ref().starts_with('/') {
                path.clone_from(p.get_ref());
            } else {
                self.err(p.span(), format!("health `path` {:?} must start with \"/\"", p.get_ref()));
            }
        }
        let host = h.host.as_ref().and_then(|v| self.non_empty(v, "host"));
        let expected_status = match &h.expected_status {
            None => (200, 399),
            Some(v) => self.status_range(v).unwrap_or((200, 399)),
        };
        Some(HealthCheck {
            kind: kind?,
            path,
            host,
            expected_status,
            interval: self.duration_or(h.interval.as_ref(), "interval", Duration::from_secs(5)),
            timeout: self.duration_or(h.timeout.as_ref(), "timeout", Duration::from_secs(1)),
            healthy_threshold: self.u32_or(h.healthy_threshold.as_ref(), "healthy_threshold", 1, 2),
            unhealthy_threshold: self.u32_or(h.unhealthy_threshold.as_ref(), "unhealthy_threshold", 1, 3),
        })
    }

    /// `"200-399"`, `"200"` or `200`.
    fn status_range(&mut self, v: &Spanned<Scalar>) -> Option<(u16, u16)> {
        let parse = |s: &str| s.trim().parse::<u16>().ok().filter(|n| (100..=599).contains(n));
        let r = match v.get_ref() {
            Scalar::Int(i) => u16::try_from(*i).ok().filter(|n| (100..=599).contains(n)).map(|n| (n, n)),
            Scalar::Str(s) => match s.split_once('-') {
                Some((a, b)) => parse(a).zip(parse(b)).filter(|(a, b)| a <= b),
                None => parse(s).map(|n| (n, n)),
            },
            Scalar::Float(_) => None,
        };
        if r.is_none() {
            self.err(
                v.span(),
                format!(
                    "invalid `expected_status` {}: expected a status or an inclusive range of \
                     statuses between 100 and 599, e.g. \"200-399\" or \"200\"",
                    v.get_ref()
                ),
            );
        }
        r
    }

    fn outlier(&mut self, o: &OutlierSection) -> Outlier {
        Outlier {
            consecutive_failures: self.u32_or(o.consecutive_failures.as_ref(), "consecutive_failures", 1, 5),
            ejection_time: self.duration_or(
                o.ejection_time.as_ref(),
                "ejection_time",
                Duration::from_secs(30),
            ),
            max_ejection_percent: self.percent_or(
                o.max_ejection_percent.as_ref(),
                "max_ejection_percent",
                10,
            ),
        }
    }

    fn upstream_limits(&mut self, l: &UpstreamLimitsSection) -> UpstreamLimits {
        let d = UpstreamLimits::default();
        UpstreamLimits {
            // Zero connections or requests would refuse everything: at least 1. Zero pending
            // (fail at once when no connection is free) and zero retries are meaningful.
            max_connections: self.u32_or(l.max_connections.as_ref(), "max_connections", 1, d.max_connections),
            max_pending_requests: self.u32_or(
                l.max_pending_requests.as_ref(),
                "max_pending_requests",
                0,
                d.max_pending_requests,
            ),
            max_requests: self.u32_or(l.max_requests.as_ref(), "max_requests", 1, d.max_requests),
            max_retries: self.u32_or(l.max_retries.as_ref(), "max_retries", 0, d.max_retries),
        }
    }
}
