//! `gateway.toml`: `[gateway]`, `[admin]`, `[[listener]]`, `[limits]`, `[http]`, `[access_log]`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use super::{resolve_path, Ctx};
use crate::config::file::{AdminSection, GatewayFile};
use crate::config::{
    AccessLogConfig, AdminToken, EscapedSlashes, GatewayConfig, HttpConfig, Limits, ListenerConfig,
    ListenerTls,
};

impl Ctx<'_, '_> {
    pub(super) fn gateway(&mut self, f: GatewayFile, base: &Path, path: &Path) -> Option<GatewayConfig> {
        let mut routes_dir = base.join("routes");
        let mut drain_delay = Duration::ZERO;
        let mut drain_timeout = Duration::from_secs(30);
        let (mut routes_source, mut routes_cache) = (None, None);
        if let Some(g) = &f.gateway {
            (routes_source, routes_cache) = self.fleet(g, base);
            if let Some(d) = &g.drain_delay {
                drain_delay = self.duration(d).unwrap_or(drain_delay);
            }
            if let Some(d) = &g.routes_dir {
                if let Some(d) = self.non_empty(d, "routes_dir") {
                    routes_dir = resolve_path(base, &d);
                }
            }
            if let Some(d) = &g.drain_timeout {
                drain_timeout = self.duration(d).unwrap_or(drain_timeout);
            }
        }

        let (admin, admin_token) = match &f.admin {
            Some(a) => self.admin(a),
            None => (None, None),
        };

        if f.listener.is_empty() {
            self.err(
                0..0,
                "no [[listener]] defined; add one, e.g. [[listener]] name = \"http\" listen = \
                 \"0.0.0.0:8080\"",
            );
        }
        let mut listeners = Vec::with_capacity(f.listener.len());
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for l in &f.listener {
            let name = self.non_empty(&l.name, "name");
            if let Some(first) = seen.get(l.name.get_ref().as_str()) {
                let first_line = self.src.locate(*first).0;
                self.err(
                    l.name.span(),
                    format!(
                        "duplicate listener name {:?} (first defined at line {first_line}); \
                         listener names must be unique",
                        l.name.get_ref()
                    ),
                );
            } else {
                seen.insert(l.name.get_ref(), l.name.span().start);
            }
            let listen = self.socket_addr(&l.listen, "listen");
            let tls = l.tls.as_ref().map(|t| ListenerTls {
                certs_dir: resolve_path(base, t.certs_dir.get_ref()),
                default_cert: t.default_cert.as_ref().map(|d| d.get_ref().clone()),
                client_ca: t.client_ca.as_ref().map(|c| resolve_path(base, c.get_ref())),
                http3: t.http3,
            });
            if let Some(t) = &l.tls {
                self.non_empty(&t.certs_dir, "certs_dir");
                if let Some(d) = &t.default_cert {
                    self.non_empty(d, "default_cert");
                }
                if let Some(c) = &t.client_ca {
                    self.non_empty(c, "client_ca");
                }
            }
            if let (Some(name), Some(listen)) = (name, listen) {
                listeners.push(ListenerConfig { name, listen, tls });
            }
        }

        let mut limits = Limits::default();
        if let Some(l) = &f.limits {
            let d = Limits::default();
            limits.header_read_timeout = self.duration_or(
                l.header_read_timeout.as_ref(),
                "header_read_timeout",
                d.header_read_timeout,
            );
            limits.idle_timeout = self.duration_or(l.idle_timeout.as_ref(), "idle_timeout", d.idle_timeout);
            limits.body_read_timeout =
                self.duration_or(l.body_read_timeout.as_ref(), "body_read_timeout", d.body_read_timeout);
            limits.send_timeout = self.duration_or(l.send_timeout.as_ref(), "send_timeout", d.send_timeout);
            limits.tunnel_idle_timeout = self.duration_or(
                l.tunnel_idle_timeout.as_ref(),
                "tunnel_idle_timeout",
                d.tunnel_idle_timeout,
            );
            if let Some(v) = &l.max_request_header_bytes {
                match self.size(v) {
                    Some(0) => self.err(v.span(), "`max_request_header_bytes` must be greater than zero"),
                    Some(n) => limits.max_request_header_bytes = n,
                    None => {}
                }
            }
            if let Some(v) = &l.max_request_body_bytes {
                limits.max_request_body_bytes = self.size(v).unwrap_or(0);
            }
            if let Some(v) = &l.max_connections {
                if let Some(n) = self.int(v, "max_connections", 1, i64::MAX) {
                    limits.max_connections = usize::try_from(n).unwrap_or(usize::MAX);
                }
            }
            limits.http2_max_concurrent_streams = self.u32_or(
                l.http2_max_concurrent_streams.as_ref(),
                "http2_max_concurrent_streams",
                1,
                d.http2_max_concurrent_streams,
            );
        }

        let mut http = HttpConfig::default();
        if let Some(h) = &f.http {
            http.normalize_path = h.normalize_path.unwrap_or(http.normalize_path);
            http.merge_slashes = h.merge_slashes.unwrap_or(http.merge_slashes);
            if let Some(e) = &h.escaped_slashes {
                let choices = [
                    ("reject", EscapedSlashes::Reject),
                    ("keep", EscapedSlashes::Keep),
                    ("decode", EscapedSlashes::Decode),
                ];
                http.escaped_slashes =
                    self.choice(e, "escaped_slashes", &choices).unwrap_or(http.escaped_slashes);
            }
        }

        let mut access_log = AccessLogConfig::default();
        if let Some(a) = &f.access_log {
            access_log.enabled = a.enabled.unwrap_or(true);
            if let Some(p) = &a.path {
                if let Some(p) = self.non_empty(p, "path") {
                    access_log.path = (p != "-").then(|| resolve_path(base, &p));
                }
            }
        }

        Some(GatewayConfig {
            path: path.to_path_buf(),
            routes_dir,
            routes_source,
            routes_cache,
            drain_delay,
            drain_timeout,
            admin,
            admin_token,
            listeners,
            http,
            limits,
            access_log,
        })
    }

    /// `[admin]`: the address, and the token read from `token_env` now (at start, so that a
    /// missing variable stops the start instead of leaving the admin API locked or open).
    fn admin(&mut self, a: &AdminSection) -> (Option<SocketAddr>, Option<AdminToken>) {
        let listen = self.socket_addr(&a.listen, "listen");
        let token = match &a.token_env {
            Some(var) => {
                let name = self.non_empty(var, "token_env");
                name.and_then(|name| self.admin_token(var, &name))
            }
            None => {
                if let Some(addr) = listen.filter(|a| !a.ip().to_canonical().is_loopback()) {
                    self.err(
                        a.listen.span(),
                        format!(
                            "admin `listen` {addr} is not a loopback address: the admin API would \
                             be open to the network: set [admin] token_env or listen on 127.0.0.1"
                        ),
                    );
                }
                None
            }
        };
        (listen, token)
    }

    /// The admin token held by the environment variable `name` (`var` is its span).
    fn admin_token(&mut self, var: &Spanned<String>, name: &str) -> Option<AdminToken> {
        let problem = match std::env::var_os(name) {
            None => "is not set",
            Some(v) if v.is_empty() => "is empty",
            // A bearer token travels in a header: visible ASCII, and no spaces (a header value
            // loses its leading and trailing ones, so such a token could never match).
            Some(v) => match v.to_str().filter(|s| s.bytes().all(|b| b.is_ascii_graphic())) {
                Some(value) => match AdminToken::new(value.as_bytes()) {
                    Ok(t) => return Some(t),
                    Err(e) => {
                        self.err(var.span(), e);
                        return None;
                    }
                },
                None => "holds characters other than visible ASCII (spaces included)",
            },
        };
        self.err(
            var.span(),
            format!(
                "the environment variable {name:?} named by `token_env` {problem}; set it to the \
                 admin API token before starting"
            ),
        );
        None
    }
}
