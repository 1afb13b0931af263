//! The compiled route table: which route, if any, a request goes to.
//!
//! Precedence follows the Kubernetes Gateway API (README, "Route selection"): the host class decides first
//! (exact host, then wildcard hosts from the longest suffix to the shortest, then routes without
//! `hosts`); within a host, the path decides (exact `path`, then `path_prefix` from the longest to
//! the shortest, then `path_regex`); among routes equal so far, one that lists `methods` beats one
//! that does not, then more header matchers win, then more query matchers, then the route loaded
//! first. When no route of the best host or path class passes its remaining matchers, the next
//! class is tried, so a request is never refused while some route matches it.
//!
//! The table is a tree of indexes so that lookup cost does not grow with the number of routes:
//!
//! ```text
//! host ──► exact host map ─┐
//!      ──► wildcard suffix map, probed at each dot of the host, longest suffix first ─┤
//!      ──► the any-host bucket ─────────────────────────────────────────────────────┘
//!            bucket: exact path map ─► prefix segment trie (deepest node first) ─► regex list
//! ```
//!
//! Every candidate list is sorted when the table is built by (lists methods, header count, query
//! count, load order), so lookup returns the first candidate whose method, header and query
//! matchers pass. Lookup allocates nothing: the host is lower-cased into a stack buffer only when
//! needed, and the trie walk iterates the path's segments in place.

mod hash;
mod host;
mod matchers;
mod trie;

use std::cmp::Reverse;

use http::{HeaderMap, Method};
use regex::{Regex, RegexSet};

use crate::config::{HostMatch, PathMatch, RouteConfig};

use self::hash::FastMap;
use self::host::MAX_HOST_LEN;
use self::matchers::{Matchers, Rank, RequestParts};
use self::trie::PrefixTrie;

/// Routes compiled for lookup. Immutable once built: a reload builds a new one and swaps it in.
#[derive(Debug)]
pub struct Router {
    /// Per route (by load-order index): the matchers checked after host and path.
    routes: Box<[CompiledRoute]>,
    /// Exact host → its bucket.
    exact_hosts: FastMap<Box<str>, Bucket>,
    /// Wildcard suffix (`example.com` for `*.example.com`) → its bucket.
    wildcard_hosts: FastMap<Box<str>, Bucket>,
    /// The longest wildcard suffix, so that probes for longer suffixes can be skipped.
    longest_wildcard: usize,
    /// Routes without `hosts`.
    any_host: Bucket,
    /// Every route index in precedence order, for `GET /routes`.
    order: Box<[usize]>,
}

/// One route as lookup needs it.
#[derive(Debug)]
struct CompiledRoute {
    matchers: Matchers,
    /// The path regex, for `path_regex` routes.
    regex: Option<Regex>,
}

/// The routes of one host (or of one wildcard suffix, or of any host), indexed by path.
#[derive(Debug, Default)]
struct Bucket {
    /// `path` → candidates.
    exact_paths: FastMap<Box<str>, Vec<u32>>,
    /// `path_prefix` → candidates.
    prefixes: PrefixTrie,
    /// `path_regex` candidates, in precedence order.
    regexes: Vec<u32>,
    /// All of `regexes` at once: one pass tells whether any of them can match, so a request
    /// that matches none costs one automaton run however many regex routes there are. `None` if
    /// the set would exceed the regex crate's size limit; then each regex is tried in turn.
    regex_set: Option<RegexSet>,
}

// === impl Router ===

impl Router {
    /// Compile `routes`. A route's index is its position in the slice, which is its load order
    /// (the last tie-breaker of precedence).
    pub fn new(routes: &[RouteConfig]) -> Router {
        let compiled: Box<[CompiledRoute]> = routes
            .iter()
            .map(|r| CompiledRoute {
                matchers: Matchers::new(r),
                regex: match &r.path {
                    PathMatch::Regex(re) => Some(re.clone()),
                    _ => None,
                },
            })
            .collect();

        let mut exact_hosts: FastMap<Box<str>, Bucket> = FastMap::default();
        let mut wildcard_hosts: FastMap<Box<str>, Bucket> = FastMap::default();
        let mut any_host = Bucket::default();
        for (index, route) in routes.iter().enumerate() {
            let index = u32::try_from(index).expect("fewer than 2^32 routes");
            if route.hosts.is_empty() {
                any_host.insert(&route.path, index);
            }
            for host in &route.hosts {
                // Config hosts are documented as lower-case; lower-casing again is cheap
                // insurance against a mismatch that would make a route unreachable.
                let bucket = match host {
                    HostMatch::Exact(h) => exact_hosts.entry(h.to_ascii_lowercase().into()),
                    HostMatch::Wildcard(s) => wildcard_hosts.entry(s.to_ascii_lowercase().into()),
                };
                bucket.or_default().insert(&route.path, index);
            }
        }
        let longest_wildcard = wildcard_hosts.keys().map(|s| s.len()).max().unwrap_or(0);

        let ranks: Vec<Rank> = compiled.iter().map(|r| r.matchers.rank()).collect();
        let sort = |list: &mut Vec<u32>| {
            list.sort_unstable_by_key(|&i| (ranks[i as usize], i));
            list.dedup();
        };
        for bucket in exact_hosts.values_mut().chain(wildcard_hosts.values_mut()) {
            bucket.finish(&compiled, sort);
        }
        any_host.finish(&compiled, sort);
        exact_hosts.shrink_to_fit();
        wildcard_hosts.shrink_to_fit();

        let mut order: Vec<usize> = (0..routes.len()).collect();
        order.sort_by_cached_key(|&i| (precedence_key(&routes[i]), ranks[i], i));

        Router {
            routes: compiled,
            exact_hosts,
            wildcard_hosts,
            longest_wildcard,
            any_host,
            order: order.into(),
        }
    }

    /// The index of the route this request goes to, or `None` (404 `no_route`).
    ///
    /// `host` is the raw `Host` header or `:authority` (any case, maybe with a port, maybe a
    /// bracketed IPv6 literal); `None` matches only routes without `hosts`. `query` is the raw
    /// query string without `?`. Path and query are compared as sent: no percent-decoding and
    /// no dot-segment removal (a proxy that normalised here would route on a different path than
    /// the upstream sees).
    pub fn lookup(
        &self,
        method: &Method,
        host: Option<&str>,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Option<usize> {
        let req = RequestParts { method, query: query.unwrap_or(""), headers };
        // With no route naming a host (a gateway in front of one site), the host is not read.
        if !self.exact_hosts.is_empty() || !self.wildcard_hosts.is_empty() {
            let mut buf = [0u8; MAX_HOST_LEN];
            if let Some(host) = host.and_then(|h| host::normalise(h, &mut buf)) {
                if let Some(found) = self.lookup_host(host, path, &req) {
                    return Some(found);
                }
            }
        }
        self.any_host.lookup(&self.routes, path, &req)
    }

    /// [`lookup`](Self::lookup) for a request as hyper hands it over: the host comes from the
    /// URI's authority (HTTP/2 `:authority`, or an HTTP/1.1 absolute-form target), else from the
    /// `Host` header. (The gateway itself looks up canonical requests with [`lookup`]; this
    /// is for tests and the router's fuzz target.)
    #[cfg(any(test, fuzzing))]
    pub fn lookup_request<B>(&self, req: &http::Request<B>) -> Option<usize> {
        let uri = req.uri();
        let host = match uri.authority() {
            Some(authority) => Some(authority.host()),
            None => req.headers().get(http::header::HOST).and_then(|h| h.to_str().ok()),
        };
        self.lookup(req.method(), host, uri.path(), uri.query(), req.headers())
    }

    /// Every route index, in precedence order (most specific first), for `GET /routes`.
    ///
    /// The order is the one lookup applies when several routes match a request: host class
    /// (exact, then wildcard by suffix length, then any; a route with several hosts is placed by
    /// its most specific one), path class (exact, then prefix by length, then regex), methods,
    /// header count, query count, load order.
    pub fn precedence_order(&self) -> Vec<usize> {
        self.order.to_vec()
    }

    /// The number of routes compiled in.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether there are no routes (every lookup returns `None`).
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The exact-host bucket, then wildcard buckets from the longest suffix to the shortest.
    fn lookup_host(&self, host: &str, path: &str, req: &RequestParts<'_>) -> Option<usize> {
        if let Some(bucket) = self.exact_hosts.get(host) {
            if let Some(found) = bucket.lookup(&self.routes, path, req) {
                return Some(found);
            }
        }
        if self.wildcard_hosts.is_empty() {
            return None;
        }
        // `*.example.com` needs at least one non-empty label in front, so the suffix after a dot
        // at position 0 (".example.com") is not a candidate.
        // Probing only starts at the first dot whose suffix could be a key, so a long host costs
        // no more probes than the longest wildcard has labels.
        let min_dot = host.len().saturating_sub(self.longest_wildcard + 1).max(1);
        for (dot, _) in host.bytes().enumerate().skip(min_dot).filter(|&(_, b)| b == b'.') {
            if let Some(bucket) = self.wildcard_hosts.get(&host[dot + 1..]) {
                if let Some(found) = bucket.lookup(&self.routes, path, req) {
                    return Some(found);
                }
            }
        }
        None
    }
}

/// Host class and path class of a route, as `precedence_order` sorts them (smaller first).
fn precedence_key(route: &RouteConfig) -> ((u8, Reverse<usize>), (u8, Reverse<usize>)) {
    let host = route
        .hosts
        .iter()
        .map(|h| match h {
            HostMatch::Exact(_) => (0, Reverse(0)),
            HostMatch::Wildcard(suffix) => (1, Reverse(suffix.len())),
        })
        .min()
        .unwrap_or((2, Reverse(0)));
    let path = match &route.path {
        PathMatch::Exact(_) => (0, Reverse(0)),
        PathMatch::Prefix(prefix) => (1, Reverse(prefix.len())),
        PathMatch::Regex(_) => (2, Reverse(0)),
    };
    (host, path)
}

// === impl Bucket ===

impl Bucket {
    fn insert(&mut self, path: &PathMatch, route: u32) {
        match path {
            PathMatch::Exact(p) => self.exact_paths.entry(p.as_str().into()).or_default().push(route),
            PathMatch::Prefix(p) => self.prefixes.insert(p, route),
            PathMatch::Regex(_) => self.regexes.push(route),
        }
    }

    fn finish(&mut self, routes: &[CompiledRoute], mut sort: impl FnMut(&mut Vec<u32>)) {
        for list in self.exact_paths.values_mut() {
            sort(list);
            list.shrink_to_fit();
        }
        self.exact_paths.shrink_to_fit();
        self.prefixes.finish(&mut sort);
        sort(&mut self.regexes);
        self.regexes.shrink_to_fit();
        if !self.regexes.is_empty() {
            let patterns =
                self.regexes.iter().filter_map(|&i| routes[i as usize].regex.as_ref().map(Regex::as_str));
            self.regex_set = RegexSet::new(patterns).ok();
        }
    }

    /// Exact path, then prefixes from the longest, then regexes.
    fn lookup(&self, routes: &[CompiledRoute], path: &str, req: &RequestParts<'_>) -> Option<usize> {
        let first =
            |list: &[u32]| list.iter().map(|&i| i as usize).find(|&i| routes[i].matchers.matches(req));
        if !self.exact_paths.is_empty() {
            if let Some(found) = self.exact_paths.get(path).and_then(|list| first(list)) {
                return Some(found);
            }
        }
        if !self.prefixes.is_empty() {
            if let Some(found) = self.prefixes.find(path, first) {
                return Some(found);
            }
        }
        if self.regexes.is_empty() || self.regex_set.as_ref().is_some_and(|set| !set.is_match(path)) {
            return None;
        }
        self.regexes.iter().map(|&i| i as usize).find(|&i| {
            let route = &routes[i];
            route.matchers.matches(req) && route.regex.as_ref().is_some_and(|re| re.is_match(path))
        })
    }
}

#[cfg(test)]
mod tests;
