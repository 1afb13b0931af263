//! `[gateway] routes_source` and `routes_cache` (fleet mode).

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::address::check_endpoint_address;
use super::{resolve_path, Ctx};
use crate::config::file::{GatewaySection, RoutesSourceSection};
use crate::config::{ConsulAddress, RoutesSource, ZkAuth};

impl Ctx<'_, '_> {
    /// The source and the cache of `[gateway]`; each is an error where it does not apply.
    pub(super) fn fleet(
        &mut self,
        g: &GatewaySection,
        base: &Path,
    ) -> (Option<RoutesSource>, Option<PathBuf>) {
        let source = g.routes_source.as_ref().and_then(|s| self.routes_source(s, base));
        if let (Some(s), Some(_)) = (&g.routes_source, &g.routes_dir) {
            self.err(
                s.span(),
                "`routes_source` and `routes_dir` are exclusive: the routes come either from a \
                 folder or from the fleet's source; remove one",
            );
        }
        let cache = g.routes_cache.as_ref().and_then(|c| {
            if g.routes_source.is_none() {
                self.err(c.span(), "`routes_cache` applies only with `routes_source` (fleet mode)");
            }
            self.non_empty(c, "routes_cache").map(|c| resolve_path(base, &c))
        });
        (source, cache)
    }

    fn routes_source(&mut self, s: &Spanned<RoutesSourceSection>, base: &Path) -> Option<RoutesSource> {
        let d = s.get_ref();
        let kind = d.kind.get_ref().as_str();
        let present: [(&str, Option<Range<usize>>); 8] = [
            ("servers", d.servers.as_ref().map(Spanned::span)),
            ("path", d.path.as_ref().map(Spanned::span)),
            ("session_timeout", d.session_timeout.as_ref().map(Spanned::span)),
            ("auth_env", d.auth_env.as_ref().map(Spanned::span)),
            ("address", d.address.as_ref().map(Spanned::span)),
            ("prefix", d.prefix.as_ref().map(Spanned::span)),
            ("token_env", d.token_env.as_ref().map(Spanned::span)),
            ("tls_ca", d.tls_ca.as_ref().map(Spanned::span)),
        ];
        let allowed: &[&str] = match kind {
            "zookeeper" => &["servers", "path", "session_timeout", "auth_env"],
            "consul" => &["address", "prefix", "token_env", "tls_ca"],
            other => {
                self.err(
                    d.kind.span(),
                    format!("unknown routes_source type {other:?}; expected zookeeper or consul"),
                );
                return None;
            }
        };
        let before = self.errors.len();
        self.only_keys(&present, allowed, &format!("{kind} routes_source"), kind);
        let type_span = d.kind.span();
        let required = |cx: &mut Self, v: &Option<Spanned<String>>, key: &str| match v {
            Some(v) => cx.non_empty(v, key),
            None => {
                cx.err(type_span.clone(), format!("a {kind} routes_source needs `{key}`"));
                None
            }
        };
        let source = if kind == "zookeeper" {
            let servers = required(self, &d.servers, "servers");
            if let (Some(list), Some(v)) = (&servers, &d.servers) {
                if let Some(m) = list.split(',').find_map(|s| check_endpoint_address(s.trim()).err()) {
                    self.err(
                        v.span(),
                        format!("invalid zookeeper `servers` {list:?}: {m}; expected \"host:port\" entries separated by commas"),
                    );
                }
            }
            let path = required(self, &d.path, "path").and_then(|p| {
                let span = d.path.as_ref().map(Spanned::span).unwrap_or_default();
                let trimmed = p.trim_end_matches('/');
                let bad_segment = trimmed.split('/').skip(1).any(|s| s.is_empty() || s == "." || s == "..");
                if !p.starts_with('/') || trimmed.is_empty() || bad_segment {
                    self.err(
                        span,
                        format!("zookeeper `path` {p:?} must be an absolute node path below the root, e.g. \"/switchyard/edge\""),
                    );
                    return None;
                }
                Some(trimmed.to_owned())
            });
            let session_timeout =
                self.duration_or(d.session_timeout.as_ref(), "session_timeout", Duration::from_secs(10));
            let auth = d.auth_env.as_ref().and_then(|v| {
                let name = self.non_empty(v, "auth_env")?;
                let problem = match std::env::var(&name) {
                    Err(std::env::VarError::NotPresent) => "is not set",
                    Err(std::env::VarError::NotUnicode(_)) => "is not UTF-8",
                    Ok(value) => match ZkAuth::parse(&value) {
                        Ok(a) => return Some(a),
                        Err(p) => p,
                    },
                };
                self.err(
                    v.span(),
                    format!("the environment variable {name:?} named by `auth_env` {problem}; set it to \"user:password\" before starting"),
                );
                None
            });
            Some(RoutesSource::ZooKeeper { servers: servers?, path: path?, session_timeout, auth })
        } else {
            let address = match (required(self, &d.address, "address"), &d.address) {
                (Some(a), Some(v)) => ConsulAddress::parse(&a).map_err(|m| self.err(v.span(), m)).ok(),
                _ => None,
            };
            let prefix = required(self, &d.prefix, "prefix").and_then(|p| {
                let trimmed = p.trim_matches('/');
                if trimmed.is_empty() || trimmed.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
                    let span = d.prefix.as_ref().map(Spanned::span).unwrap_or_default();
                    self.err(
                        span,
                        format!("consul `prefix` {p:?} must name a key prefix without empty, `.` or `..` segments, e.g. \"switchyard/edge\""),
                    );
                    return None;
                }
                Some(trimmed.to_owned())
            });
            let token_env = d.token_env.as_ref().and_then(|t| self.non_empty(t, "token_env"));
            let tls_ca = d.tls_ca.as_ref().and_then(|c| {
                let path = self.non_empty(c, "tls_ca")?;
                if address.as_ref().is_some_and(|a| !a.is_https()) {
                    self.err(
                        c.span(),
                        "`tls_ca` applies to an https:// consul `address`; this one is http://",
                    );
                }
                Some(resolve_path(base, &path))
            });
            Some(RoutesSource::Consul { address: address?, prefix: prefix?, token_env, tls_ca })
        };
        source.filter(|_| self.errors.len() == before)
    }
}
