//! Request host normalisation: lower-case, port stripped, without allocating.
//!
//! The raw value is a `Host` header or an HTTP/2 `:authority`. It may carry a port
//! (`example.com:8080`), be written in any case, or be a bracketed IPv6 literal (`[::1]:8080`).
//! Config hosts are stored lower-cased without port (see `config::HostMatch`), so the request host
//! is brought to the same form. When it already is (the common case) the input is returned as a
//! sub-slice; otherwise it is lower-cased into a caller-provided stack buffer.

/// Size of the stack buffer used to lower-case a host. A DNS name is at most 253 octets and an
/// IPv6 literal with brackets and a zone id far less, so any host a route could name fits; a
/// longer (necessarily bogus) host that also needs lower-casing is treated as "no host", which
/// still lets any-host routes match.
pub(super) const MAX_HOST_LEN: usize = 255;

/// The host part of `raw`, lower-cased, without port and without one trailing dot.
///
/// Returns `None` for an empty host, or for one longer than [`MAX_HOST_LEN`] that is not
/// already lower-case.
pub(super) fn normalise<'a>(raw: &'a str, buf: &'a mut [u8; MAX_HOST_LEN]) -> Option<&'a str> {
    let host = strip_port(raw);
    // `example.com.` (a fully qualified name) is the same host as `example.com`.
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() {
        return None;
    }
    if !host.bytes().any(|b| b.is_ascii_uppercase()) {
        return Some(host);
    }
    let len = host.len();
    if len > MAX_HOST_LEN {
        return None;
    }
    let out = &mut buf[..len];
    out.copy_from_slice(host.as_bytes());
    out.make_ascii_lowercase();
    // ASCII lower-casing keeps UTF-8 valid, so this cannot fail; `ok()` keeps us free of panics
    // and of `unsafe`.
    std::str::from_utf8(out).ok()
}

/// `raw` without its `:port`. A bracketed IPv6 literal keeps its brackets (config hosts name it
/// as `[::1]`); an unbracketed value with several colons is not a `host:port` and is kept whole.
fn strip_port(raw: &str) -> &str {
    if raw.starts_with('[') {
        return match raw.find(']') {
            Some(end) => &raw[..=end],
            None => raw,
        };
    }
    match raw.find(':') {
        Some(colon) if !raw[colon + 1..].contains(':') => &raw[..colon],
        _ => raw,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(raw: &str) -> Option<String> {
        let mut buf = [0; MAX_HOST_LEN];
        normalise(raw, &mut buf).map(str::to_owned)
    }

    #[test]
    fn lower_cases_and_strips_port() {
        assert_eq!(norm("api.example.com").as_deref(), Some("api.example.com"));
        assert_eq!(norm("API.Example.COM").as_deref(), Some("api.example.com"));
        assert_eq!(norm("api.example.com:8443").as_deref(), Some("api.example.com"));
        assert_eq!(norm("API.example.com:80").as_deref(), Some("api.example.com"));
        assert_eq!(norm("example.com.").as_deref(), Some("example.com"));
        assert_eq!(norm("example.com.:80").as_deref(), Some("example.com"));
    }

    #[test]
    fn ipv6_literals() {
        assert_eq!(norm("[::1]:8080").as_deref(), Some("[::1]"));
        assert_eq!(norm("[::1]").as_deref(), Some("[::1]"));
        assert_eq!(norm("[FE80::1]:80").as_deref(), Some("[fe80::1]"));
        assert_eq!(norm("::1").as_deref(), Some("::1"));
    }

    #[test]
    fn empty_and_oversized() {
        assert_eq!(norm(""), None);
        assert_eq!(norm(":80"), None);
        let long_lower = "a".repeat(300);
        assert_eq!(norm(&long_lower), Some(long_lower.clone()));
        assert_eq!(norm(&"A".repeat(300)), None);
    }

    #[test]
    fn already_lower_case_is_borrowed() {
        let raw = "api.example.com:80";
        let mut buf = [0; MAX_HOST_LEN];
        let out = normalise(raw, &mut buf).unwrap();
        assert_eq!(out.as_ptr(), raw.as_ptr(), "no copy for an already normal host");
    }
}
