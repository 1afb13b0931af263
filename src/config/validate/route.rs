//! `[[route]]`: matchers, the action, rewrites, header edits, `rate_limit` and `[route.retry]`.

use std::ops::Range;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, StatusCode};
use regex::Regex;
use toml::Spanned;

use super::address::check_host;
use super::diagnostics::regex_message;
use super::Ctx;
use crate::config::file::{HeaderEditsSection, Pairs, RateLimitSection, RetrySection, RouteSection};
use crate::config::{
    Action, HeaderEdits, HostMatch, Origin, PathMatch, RateLimit, RateLimitKey, RetryOn, RetryPolicy,
    RouteConfig, ValueMatch,
};

/// A route's `timeout` when it sets none: NGINX's `proxy_read_timeout`, so that an upstream
/// that accepts and never answers cannot hold a request (and its slots) for ever.
const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(60);

impl Ctx<'_, '_> {
    pub(super) fn route(
        &mut self,
        r: &RouteSection,
        refs: &mut Vec<(String, String, Range<usize>)>,
    ) -> Option<RouteConfig> {
        let name = self.non_empty(&r.name, "name");
        let origin =
            Origin { file: self.src.path.to_path_buf(), line: self.src.locate(r.name.span().start).0 };

        let hosts: Vec<HostMatch> = r.hosts.iter().flatten().filter_map(|h| self.host(h)).collect();

        let path = self.path_match(r);
        let methods: Vec<Method> = r
            .methods
            .iter()
            .flatten()
            .filter_map(|m| {
                let upper = m.get_ref().to_ascii_uppercase();
                match Method::from_bytes(upper.as_bytes()) {
                    Ok(m) if !upper.is_empty() => Some(m),
                    _ => {
                        self.err(m.span(), format!("invalid method {:?}", m.get_ref()));
                        None
                    }
                }
            })
            .collect();
        let headers: Vec<(HeaderName, ValueMatch)> = r
            .headers
            .iter()
            .flat_map(|p| &p.0)
            .filter_map(|(k, v)| Some((self.header_name(k)?, value_match(v))))
            .collect();
        let query: Vec<(String, ValueMatch)> = r
            .query
            .iter()
            .flat_map(|p| &p.0)
            .filter_map(|(k, v)| Some((self.non_empty(k, "query")?, value_match(v))))
            .collect();

        let action = self.action(r, refs);

        let has_prefix = r.path_prefix.is_some();
        let mut strip_prefix = false;
        if let Some(s) = &r.strip_prefix {
            strip_prefix = *s.get_ref();
            if strip_prefix && !has_prefix {
                self.err(
                    s.span(),
                    "`strip_prefix` needs `path_prefix`; set path_prefix, or remove strip_prefix",
                );
            }
        }
        let mut rewrite_prefix = None;
        if let Some(p) = &r.rewrite_prefix {
            if !has_prefix {
                self.err(
                    p.span(),
                    "`rewrite_prefix` needs `path_prefix`; set path_prefix, or remove rewrite_prefix",
                );
            } else if !p.get_ref().starts_with('/') {
                self.err(p.span(), format!("`rewrite_prefix` {:?} must start with \"/\"", p.get_ref()));
            } else {
                rewrite_prefix = Some(p.get_ref().clone());
            }
        }
        let host_rewrite = r.host_rewrite.as_ref().and_then(|h| {
            if h.get_ref().is_empty() || h.get_ref().contains(char::is_whitespace) {
                self.err(h.span(), format!("invalid `host_rewrite` {:?}: expected a host name", h.get_ref()));
                return None;
            }
            self.header_value(h, "host")
        });
        let request_headers = r.request_headers.as_ref().map(|e| self.header_edits(e)).unwrap_or_default();
        let response_headers = r.response_headers.as_ref().map(|e| self.header_edits(e)).unwrap_or_default();
        // Every route has a deadline (NGINX's proxy_read_timeout default): an upstream that
        // accepts and never answers must not hold the request for ever.
        let timeout = Some(self.duration_or(r.timeout.as_ref(), "timeout", DEFAULT_ROUTE_TIMEOUT));
        let max_request_body_bytes = r.max_request_body_bytes.as_ref().and_then(|s| self.size(s));
        let rate_limit = r.rate_limit.as_ref().and_then(|l| self.rate_limit(l));
        let retry = r.retry.as_ref().map_or_else(RetryPolicy::default, |t| self.retry(t));

        Some(RouteConfig {
            name: name?,
            origin,
            hosts,
            path: path?,
            methods,
            headers,
            query,
            action: action?,
            strip_prefix,
            rewrite_prefix,
            host_rewrite,
            request_headers,
            response_headers,
            timeout,
            max_request_body_bytes,
            retry,
            rate_limit,
        })
    }

    fn host(&mut self, h: &Spanned<String>) -> Option<HostMatch> {
        let raw = h.get_ref();
        let lower = raw.trim().to_ascii_lowercase();
        let r = check_host(&lower, raw);
        r.map_err(|m| self.err(h.span(), m)).ok()
    }

    fn path_match(&mut self, r: &RouteSection) -> Option<PathMatch> {
        let set: Vec<&str> = [
            ("path", r.path.is_some()),
            ("path_prefix", r.path_prefix.is_some()),
            ("path_regex", r.path_regex.is_some()),
        ]
        .iter()
        .filter(|(_, on)| *on)
        .map(|(k, _)| *k)
        .collect();
        if set.len() > 1 {
            self.err(
                r.name.span(),
                format!(
                    "route {:?} sets {}; a route takes at most one of path, path_prefix, path_regex",
                    r.name.get_ref(),
                    set.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(" and ")
                ),
            );
            return None;
        }
        if let Some(p) = &r.path {
            if !p.get_ref().starts_with('/') {
                self.err(p.span(), format!("`path` {:?} must start with \"/\"", p.get_ref()));
                return None;
            }
            return Some(PathMatch::Exact(p.get_ref().clone()));
        }
        if let Some(p) = &r.path_prefix {
            if !p.get_ref().starts_with('/') {
                self.err(p.span(), format!("`path_prefix` {:?} must start with \"/\"", p.get_ref()));
                return None;
            }
            let trimmed = p.get_ref().trim_end_matches('/');
            let prefix = if trimmed.is_empty() { "/" } else { trimmed };
            return Some(PathMatch::Prefix(prefix.to_owned()));
        }
        if let Some(p) = &r.path_regex {
            // Compiled alone first: its error then talks about what the user wrote, and a pattern
            // like `a)|(?:b` cannot close our wrapper group and slip through.
            let compiled =
                Regex::new(p.get_ref()).and_then(|_| Regex::new(&format!("^(?:{})$", p.get_ref())));
            return match compiled {
                Ok(re) => Some(PathMatch::Regex(re)),
                Err(e) => {
                    self.err(
                        p.span(),
                        format!("invalid `path_regex` {:?}: {}", p.get_ref(), regex_message(&e)),
                    );
                    None
                }
            };
        }
        Some(PathMatch::Prefix("/".to_owned()))
    }

    fn action(&mut self, r: &RouteSection, refs: &mut Vec<(String, String, Range<usize>)>) -> Option<Action> {
        let set: Vec<&str> = [
            ("upstream", r.upstream.is_some()),
            ("split", r.split.is_some()),
            ("respond", r.respond.is_some()),
            ("redirect", r.redirect.is_some()),
        ]
        .iter()
        .filter(|(_, on)| *on)
        .map(|(k, _)| *k)
        .collect();
        let route = r.name.get_ref();
        match set.len() {
            0 => {
                self.err(
                    r.name.span(),
                    format!(
                        "route {route:?} has no action; set one of `upstream`, `split`, \
                         `respond` or `redirect`"
                    ),
                );
                return None;
            }
            1 => {}
            _ => {
                self.err(
                    r.name.span(),
                    format!(
                        "route {route:?} sets {}; a route takes exactly one of `upstream`, \
                         `split`, `respond` or `redirect`",
                        set.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(" and ")
                    ),
                );
                return None;
            }
        }
        if let Some(u) = &r.upstream {
            let name = self.non_empty(u, "upstream")?;
            refs.push((route.clone(), name.clone(), u.span()));
            return Some(Action::Upstream(name));
        }
        if let Some(split) = &r.split {
            if split.get_ref().is_empty() {
                self.err(split.span(), "`split` is empty; list at least one { upstream, weight }");
                return None;
            }
            let before = self.errors.len();
            let mut out = Vec::with_capacity(split.get_ref().len());
            let mut total: u64 = 0;
            for e in split.get_ref() {
                let name = self.non_empty(&e.upstream, "upstream");
                let weight = match &e.weight {
                    None => Some(1),
                    Some(w) => self.int(w, "weight", 0, i64::from(u32::MAX)),
                };
                if let (Some(name), Some(w)) = (name, weight) {
                    refs.push((route.clone(), name.clone(), e.upstream.span()));
                    total += w as u64;
                    out.push((name, w as u32));
                }
            }
            if self.errors.len() != before {
                return None;
            }
            if total == 0 {
                self.err(
                    split.span(),
                    "`split` weights add up to 0; give at least one a weight of 1 or more",
                );
                return None;
            }
            return Some(Action::Split(out));
        }
        if let Some(resp) = &r.respond {
            let resp = resp.get_ref();
            let status = self.status(&resp.status);
            let headers = self.header_pairs(resp.headers.as_ref());
            return Some(Action::Respond {
                status: status?,
                body: resp.body.clone().unwrap_or_default(),
                headers: headers?,
            });
        }
        let redirect = r.redirect.as_ref()?.get_ref();
        let to = self.non_empty(&redirect.to, "to");
        let status = match &redirect.status {
            None => Some(StatusCode::FOUND),
            Some(s) if matches!(s.get_ref(), 301 | 302 | 303 | 307 | 308) => self.status(s),
            Some(s) => {
                self.err(
                    s.span(),
                    format!("invalid redirect status {}: expected 301, 302, 303, 307 or 308", s.get_ref()),
                );
                None
            }
        };
        Some(Action::Redirect { to: to?, status: status? })
    }

    /// Header name/value pairs; `None` if any is invalid.
    fn header_pairs(&mut self, p: Option<&Pairs<Spanned<String>>>) -> Option<Vec<(HeaderName, HeaderValue)>> {
        let before = self.errors.len();
        let mut out = Vec::new();
        for (k, v) in p.iter().flat_map(|p| &p.0) {
            let name = self.header_name(k);
            let value = self.header_value(v, k.get_ref());
            if let (Some(n), Some(v)) = (name, value) {
                out.push((n, v));
            }
        }
        (self.errors.len() == before).then_some(out)
    }

    fn header_edits(&mut self, e: &HeaderEditsSection) -> HeaderEdits {
        let set = self.header_pairs(e.set.as_ref()).unwrap_or_default();
        let remove = e.remove.iter().flatten().filter_map(|n| self.header_name(n)).collect();
        HeaderEdits { set, remove }
    }

    fn rate_limit(&mut self, l: &Spanned<RateLimitSection>) -> Option<RateLimit> {
        let l = l.get_ref();
        let rps = *l.requests_per_second.get_ref();
        if !(rps.is_finite() && rps > 0.0) {
            self.err(
                l.requests_per_second.span(),
                format!("`requests_per_second` must be greater than zero, got {rps}"),
            );
            return None;
        }
        let burst = match &l.burst {
            None => Some((rps.ceil() as u32).max(1)),
            Some(b) => self.int(b, "burst", 1, i64::from(u32::MAX)).map(|b| b as u32),
        };
        let key = match &l.key {
            None => Some(RateLimitKey::ClientIp),
            Some(k) => {
                let s = k.get_ref().as_str();
                match s {
                    "client_ip" => Some(RateLimitKey::ClientIp),
                    "global" => Some(RateLimitKey::Global),
                    _ => match s.strip_prefix("header:") {
                        Some(name) => HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
                            .map(RateLimitKey::Header)
                            .map_err(|_| {
                                self.err(
                                    k.span(),
                                    format!("invalid header name {name:?} in rate_limit `key`"),
                                )
                            })
                            .ok(),
                        None => {
                            self.err(
                                k.span(),
                                format!(
                                    "unknown rate_limit `key` {s:?}; expected one of: client_ip, \
                                     header:NAME, global"
                                ),
                            );
                            None
                        }
                    },
                }
            }
        };
        Some(RateLimit { requests_per_second: rps, burst: burst?, key: key? })
    }

    fn retry(&mut self, t: &RetrySection) -> RetryPolicy {
        let d = RetryPolicy::default();
        let attempts = self.u32_or(t.attempts.as_ref(), "attempts", 0, 2);
        let on = match &t.on {
            None => vec![RetryOn::ConnectFailure],
            Some(list) => list.iter().filter_map(|c| self.retry_on(c)).collect(),
        };
        let per_try_timeout =
            t.per_try_timeout.as_ref().map(|p| self.duration_or(Some(p), "per_try_timeout", Duration::ZERO));
        let backoff = self.duration_or(t.backoff.as_ref(), "backoff", d.backoff);
        let budget = match &t.budget {
            None => d.budget,
            Some(b) if (0.0..=1.0).contains(b.get_ref()) => *b.get_ref(),
            Some(b) => {
                self.err(b.span(), format!("`budget` must be between 0 and 1, got {}", b.get_ref()));
                d.budget
            }
        };
        let max_replay_body_bytes =
            t.max_replay_body_bytes.as_ref().and_then(|s| self.size(s)).unwrap_or(d.max_replay_body_bytes);
        RetryPolicy { attempts, on, per_try_timeout, backoff, budget, max_replay_body_bytes }
    }

    fn retry_on(&mut self, c: &Spanned<String>) -> Option<RetryOn> {
        let s = c.get_ref().as_str();
        let r = match s {
            "connect-failure" => Ok(RetryOn::ConnectFailure),
            "reset" => Ok(RetryOn::Reset),
            "5xx" => Ok(RetryOn::Status5xx),
            "gateway-error" => Ok(RetryOn::GatewayError),
            "timeout" => Ok(RetryOn::Timeout),
            _ => match s.strip_prefix("status:") {
                Some(n) => {
                    n.parse::<u16>().ok().filter(|n| (100..=599).contains(n)).map(RetryOn::Status).ok_or_else(
                        || format!("invalid retry condition {s:?}: the status must be 100 to 599"),
                    )
                }
                None => Err(format!(
                    "unknown retry condition {s:?}; expected one of: connect-failure, reset, 5xx, \
                     gateway-error, status:NNN, timeout"
                )),
            },
        };
        r.map_err(|m| self.err(c.span(), m)).ok()
    }
}

fn value_match(v: &Spanned<String>) -> ValueMatch {
    if v.get_ref() == "*" {
        ValueMatch::Present
    } else {
        ValueMatch::Exact(v.get_ref().clone())
    }
}
