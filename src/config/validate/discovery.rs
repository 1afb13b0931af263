//! An upstream's `discovery` table: which keys each `type` takes, and their values.

use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use super::address::check_endpoint_address;
use super::{resolve_path, Ctx};
use crate::config::file::DiscoverySection;
use crate::config::{ConsulAddress, DiscoveryConfig, DnsRecord, ZkFormat};

impl Ctx<'_, '_> {
    /// `base` is the folder a relative `tls_ca` resolves against (as `[upstream.tls] ca`).
    pub(super) fn discovery(
        &mut self,
        d: &Spanned<DiscoverySection>,
        base: &Path,
    ) -> Option<DiscoveryConfig> {
        let d = d.get_ref();
        let kind = d.kind.get_ref().as_str();
        let present: [(&str, Option<Range<usize>>); 19] = [
            ("name", d.name.as_ref().map(Spanned::span)),
            ("port", d.port.as_ref().map(Spanned::span)),
            ("record", d.record.as_ref().map(Spanned::span)),
            ("refresh", d.refresh.as_ref().map(Spanned::span)),
            ("resolver", d.resolver.as_ref().map(Spanned::span)),
            ("servers", d.servers.as_ref().map(Spanned::span)),
            ("path", d.path.as_ref().map(Spanned::span)),
            ("format", d.format.as_ref().map(Spanned::span)),
            ("endpoint_name", d.endpoint_name.as_ref().map(Spanned::span)),
            ("session_timeout", d.session_timeout.as_ref().map(Spanned::span)),
            ("address", d.address.as_ref().map(Spanned::span)),
            ("service", d.service.as_ref().map(Spanned::span)),
            ("tag", d.tag.as_ref().map(Spanned::span)),
            ("datacenter", d.datacenter.as_ref().map(Spanned::span)),
            ("passing_only", d.passing_only.as_ref().map(Spanned::span)),
            ("token_env", d.token_env.as_ref().map(Spanned::span)),
            ("wait", d.wait.as_ref().map(Spanned::span)),
            ("tls_ca", d.tls_ca.as_ref().map(Spanned::span)),
            ("tls_insecure_skip_verify", d.tls_insecure_skip_verify.as_ref().map(Spanned::span)),
        ];
        let allowed: &[&str] = match kind {
            "dns" => &["name", "port", "record", "refresh", "resolver"],
            "zookeeper" => &["servers", "path", "format", "endpoint_name", "session_timeout"],
            "consul" => &[
                "address",
                "service",
                "tag",
                "datacenter",
                "passing_only",
                "token_env",
                "wait",
                "tls_ca",
                "tls_insecure_skip_verify",
            ],
            other => {
                let hint = if other == "static" {
                    "; a static list is written `endpoints = [\"host:port\", ...]`"
                } else {
                    ""
                };
                self.err(
                    d.kind.span(),
                    format!(
                        "unknown discovery type {other:?}; expected one of: dns, zookeeper, \
                         consul{hint}"
                    ),
                );
                return None;
            }
        };
        let before = self.errors.len();
        self.only_keys(&present, allowed, &format!("{kind} discovery"), kind);
        let type_span = d.kind.span();
        let required = |cx: &mut Self, v: &Option<Spanned<String>>, key: &str| match v {
            Some(v) => cx.non_empty(v, key),
            None => {
                cx.err(type_span.clone(), format!("{kind} discovery needs `{key}`"));
                None
            }
        };
        let cfg = match kind {
            "dns" => {
                let name = required(self, &d.name, "name");
                let record = match &d.record {
                    None => Some(DnsRecord::A),
                    Some(r) => self.choice(r, "record", &[("a", DnsRecord::A), ("srv", DnsRecord::Srv)]),
                };
                let port = match (&d.port, record) {
                    (Some(p), _) => self.int(p, "port", 1, 65_535).map(|p| p as u16),
                    (None, Some(DnsRecord::Srv)) => Some(0),
                    (None, _) => {
                        self.err(
                            d.kind.span(),
                            "dns discovery with record = \"a\" needs `port` (SRV records carry \
                             their own)",
                        );
                        None
                    }
                };
                let refresh = self.duration_or(d.refresh.as_ref(), "refresh", Duration::from_secs(30));
                let resolver = d.resolver.as_ref().and_then(|r| self.socket_addr(r, "resolver"));
                Some(DiscoveryConfig::Dns { name: name?, port: port?, record: record?, refresh, resolver })
            }
            "zookeeper" => {
                let servers = required(self, &d.servers, "servers");
                if let (Some(list), Some(span)) = (&servers, d.servers.as_ref().map(Spanned::span)) {
                    if let Some(m) = list.split(',').find_map(|s| check_endpoint_address(s.trim()).err()) {
                        self.err(
                            span,
                            format!(
                                "invalid zookeeper `servers` {list:?}: {m}; expected \"host:port\" \
                                 entries separated by commas"
                            ),
                        );
                    }
                }
                let path = required(self, &d.path, "path");
                if let (Some(p), Some(span)) = (&path, d.path.as_ref().map(Spanned::span)) {
                    if !p.starts_with('/') {
                        self.err(span, format!("zookeeper `path` {p:?} must start with \"/\""));
                    }
                }
                let format = match &d.format {
                    None => Some(ZkFormat::Auto),
                    Some(f) => self.choice(
                        f,
                        "format",
                        &[
                            ("auto", ZkFormat::Auto),
                            ("curator", ZkFormat::Curator),
                            ("serverset", ZkFormat::Serverset),
                            ("hostport", ZkFormat::HostPort),
                        ],
                    ),
                };
                let endpoint_name = d.endpoint_name.as_ref().and_then(|e| self.non_empty(e, "endpoint_name"));
                let session_timeout =
                    self.duration_or(d.session_timeout.as_ref(), "session_timeout", Duration::from_secs(10));
                Some(DiscoveryConfig::ZooKeeper {
                    servers: servers?,
                    path: path?,
                    format: format?,
                    endpoint_name,
                    session_timeout,
                })
            }
            _ => {
                let address = match (required(self, &d.address, "address"), &d.address) {
                    (Some(a), Some(v)) => ConsulAddress::parse(&a).map_err(|m| self.err(v.span(), m)).ok(),
                    _ => None,
                };
                let tls_ca = d
                    .tls_ca
                    .as_ref()
                    .and_then(|c| self.non_empty(c, "tls_ca"))
                    .map(|c| resolve_path(base, &c));
                let tls_insecure_skip_verify =
                    d.tls_insecure_skip_verify.as_ref().is_some_and(|v| *v.get_ref());
                let https = address.as_ref().map(ConsulAddress::is_https);
                // TLS settings on a cleartext address are a mistake that would otherwise pass
                // unnoticed: the agent would be spoken to without the protection asked for.
                if https == Some(false) {
                    let tls_keys = [
                        ("tls_ca", d.tls_ca.as_ref().map(Spanned::span)),
                        (
                            "tls_insecure_skip_verify",
                            d.tls_insecure_skip_verify.as_ref().filter(|v| *v.get_ref()).map(Spanned::span),
                        ),
                    ];
                    for (key, span) in tls_keys {
                        if let Some(span) = span {
                            self.err(
                                span,
                                format!(
                                    "`{key}` applies to an https:// consul `address`; this one is http://"
                                ),
                            );
                        }
                    }
                }
                if let (Some(v), Some(true), true) =
                    (&d.tls_insecure_skip_verify, https, tls_insecure_skip_verify)
                {
                    let (line, column) = self.src.locate(v.span().start);
                    tracing::warn!(
                        "{}:{line}:{column}: consul discovery sets tls_insecure_skip_verify = true: \
                         the agent's certificate is not verified",
                        self.src.path.display(),
                    );
                }
                let service = required(self, &d.service, "service");
                let tag = d.tag.as_ref().and_then(|t| self.non_empty(t, "tag"));
                let datacenter = d.datacenter.as_ref().and_then(|t| self.non_empty(t, "datacenter"));
                let token_env = d.token_env.as_ref().and_then(|t| self.non_empty(t, "token_env"));
                let wait = self.duration_or(d.wait.as_ref(), "wait", Duration::from_secs(300));
                Some(DiscoveryConfig::Consul {
                    address: address?,
                    service: service?,
                    tag,
                    datacenter,
                    passing_only: d.passing_only.as_ref().is_none_or(|p| *p.get_ref()),
                    token_env,
                    wait,
                    tls_ca,
                    tls_insecure_skip_verify,
                })
            }
        };
        cfg.filter(|_| self.errors.len() == before)
    }
}
