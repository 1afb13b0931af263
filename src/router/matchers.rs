//! The per-route matchers that are checked after host and path: methods, headers, query.
//!
//! Host and path select *candidates* through the indexes in `mod.rs`; these matchers are then
//! evaluated on each candidate in precedence order, so they are kept in a compact form
//! (boxed slices, no per-request allocation).

use std::cmp::Reverse;

use http::{HeaderMap, HeaderName, Method};

use crate::config::{RouteConfig, ValueMatch};

/// Methods, headers and query matchers of one route.
#[derive(Debug)]
pub(super) struct Matchers {
    /// Empty = any method.
    methods: Box<[Method]>,
    /// Each must match.
    headers: Box<[(HeaderName, ValueMatch)]>,
    /// Each must match.
    query: Box<[(Box<str>, ValueMatch)]>,
}

/// The part of the precedence key decided by these matchers (README, "Route selection"): a route that lists
/// methods beats one that does not (the *number* of listed methods does not count), then more
/// header matchers, then more query matchers. Smaller sorts first.
pub(super) type Rank = (Reverse<bool>, Reverse<usize>, Reverse<usize>);

/// The request facts these matchers look at.
#[derive(Clone, Copy, Debug)]
pub(super) struct RequestParts<'a> {
    /// The method.
    pub(super) method: &'a Method,
    /// The raw query string without `?`; empty when absent.
    pub(super) query: &'a str,
    /// The request headers.
    pub(super) headers: &'a HeaderMap,
}

impl Matchers {
    /// The matchers of `route`.
    pub(super) fn new(route: &RouteConfig) -> Matchers {
        Matchers {
            methods: route.methods.clone().into_boxed_slice(),
            headers: route.headers.clone().into_boxed_slice(),
            query: route.query.iter().map(|(k, v)| (Box::from(k.as_str()), v.clone())).collect(),
        }
    }

    /// This route's precedence rank among routes of the same host and path class.
    pub(super) fn rank(&self) -> Rank {
        (Reverse(!self.methods.is_empty()), Reverse(self.headers.len()), Reverse(self.query.len()))
    }

    /// Whether the request passes every method, header and query matcher. Cheapest first.
    pub(super) fn matches(&self, req: &RequestParts<'_>) -> bool {
        (self.methods.is_empty() || self.methods.contains(req.method))
            && self.headers.iter().all(|(name, want)| header_matches(req.headers, name, want))
            && self.query.iter().all(|(key, want)| query_matches(req.query, key, want))
    }
}

/// `Present`: the header occurs at least once. `Exact(v)`: one of its values (each header line
/// on its own; a comma-joined line is not split) equals `v`, byte for byte, case-sensitively.
pub(super) fn header_matches(headers: &HeaderMap, name: &HeaderName, want: &ValueMatch) -> bool {
    match want {
        ValueMatch::Present => headers.contains_key(name),
        ValueMatch::Exact(v) => headers.get_all(name).iter().any(|have| have.as_bytes() == v.as_bytes()),
    }
}

/// `Present`: `key` occurs in the query. `Exact(v)`: some occurrence has the value `v`.
///
/// The query is split on `&`, each piece at its first `=`; a piece without `=` is a key with an
/// empty value, an empty piece is ignored. Keys and values are compared as written, without
/// percent-decoding or `+`-to-space: route authors write the form their clients send.
pub(super) fn query_matches(query: &str, key: &str, want: &ValueMatch) -> bool {
    let mut pairs = query_pairs(query).filter(|(k, _)| *k == key);
    match want {
        ValueMatch::Present => pairs.next().is_some(),
        ValueMatch::Exact(v) => pairs.any(|(_, have)| have == v),
    }
}

/// `a=1&b&c=` → `("a", "1")`, `("b", "")`, `("c", "")`.
fn query_pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query
        .split('&')
        .filter(|piece| !piece.is_empty())
        .map(|piece| piece.split_once('=').unwrap_or((piece, "")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn query_pairs_split_on_first_equals() {
        let pairs: Vec<_> = query_pairs("a=1&b&c=&d=x=y&&").collect();
        assert_eq!(pairs, vec![("a", "1"), ("b", ""), ("c", ""), ("d", "x=y")]);
    }

    #[test]
    fn query_present_and_exact() {
        let exact = |v: &str| ValueMatch::Exact(v.to_owned());
        assert!(query_matches("debug", "debug", &ValueMatch::Present));
        assert!(query_matches("a=1&debug=", "debug", &ValueMatch::Present));
        assert!(!query_matches("debugx=1", "debug", &ValueMatch::Present));
        assert!(!query_matches("", "debug", &ValueMatch::Present));
        assert!(query_matches("debug", "debug", &exact("")));
        assert!(query_matches("v=1&v=2", "v", &exact("2")));
        assert!(!query_matches("v=1&v=2", "v", &exact("3")));
        // No percent-decoding.
        assert!(!query_matches("v=a%20b", "v", &exact("a b")));
        assert!(query_matches("v=a%20b", "v", &exact("a%20b")));
    }

    #[test]
    fn header_present_exact_and_multiple_values() {
        let name = HeaderName::from_static("x-canary");
        let mut headers = HeaderMap::new();
        assert!(!header_matches(&headers, &name, &ValueMatch::Present));
        headers.append(&name, HeaderValue::from_static("0"));
        headers.append(&name, HeaderValue::from_static("1"));
        assert!(header_matches(&headers, &name, &ValueMatch::Present));
        assert!(header_matches(&headers, &name, &ValueMatch::Exact("1".into())));
        assert!(header_matches(&headers, &name, &ValueMatch::Exact("0".into())));
        assert!(!header_matches(&headers, &name, &ValueMatch::Exact("2".into())));
        // Case-sensitive values.
        headers.insert(&name, HeaderValue::from_static("Yes"));
        assert!(!header_matches(&headers, &name, &ValueMatch::Exact("yes".into())));
    }
}
