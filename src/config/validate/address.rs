//! Host names, endpoint addresses and Consul agent URLs: the syntax checks shared by routes,
//! static endpoints and discovery.

use std::net::{IpAddr, Ipv6Addr};

use crate::config::{ConsulAddress, HostMatch};

/// A DNS name or IP literal: labels of letters, digits, `-` and `_`.
fn is_host_name(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
}

/// A `hosts` entry, already lower-cased.
pub(super) fn check_host(lower: &str, raw: &str) -> Result<HostMatch, String> {
    if lower.is_empty() {
        return Err("empty host; remove it (an absent `hosts` matches any host)".to_owned());
    }
    if lower == "*" {
        return Err("host \"*\" is not allowed; remove `hosts` to match any host".to_owned());
    }
    let (wildcard, rest) = match lower.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, lower),
    };
    if rest.contains('*') {
        return Err(format!(
            "invalid host {raw:?}: a wildcard must be the whole leftmost label, e.g. \"*.example.com\""
        ));
    }
    // Bracketed IPv6, with or without a port.
    if let Some(inner) = rest.strip_prefix('[') {
        let (ip, after) =
            inner.split_once(']').ok_or_else(|| format!("invalid host {raw:?}: missing \"]\""))?;
        if ip.parse::<Ipv6Addr>().is_err() || wildcard {
            return Err(format!("invalid host {raw:?}: expected an IPv6 address in brackets"));
        }
        if !after.is_empty() {
            return Err(format!(
                "host {raw:?} has a port; hosts match without the port, so write \"[{ip}]\""
            ));
        }
        return Ok(HostMatch::Exact(format!("[{ip}]")));
    }
    if let Some((h, port)) = rest.rsplit_once(':') {
        if !h.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) {
            let shown = if wildcard { format!("*.{h}") } else { h.to_owned() };
            return Err(format!("host {raw:?} has a port; hosts match without the port, so write {shown:?}"));
        }
        return Err(format!("invalid host {raw:?}: write an IPv6 address in brackets, e.g. \"[::1]\""));
    }
    if !is_host_name(rest) {
        return Err(format!(
            "invalid host {raw:?}: expected a name like \"api.example.com\" or \"*.example.com\""
        ));
    }
    let rest = rest.strip_suffix('.').unwrap_or(rest).to_owned();
    Ok(if wildcard { HostMatch::Wildcard(rest) } else { HostMatch::Exact(rest) })
}

/// `host:port`, IPv6 in brackets.
pub(super) fn check_endpoint_address(a: &str) -> Result<(), String> {
    let bad_port = |p: &str| format!("invalid port {p:?} in endpoint {a:?}: expected 1 to 65535");
    let port = if let Some(inner) = a.strip_prefix('[') {
        let (ip, after) =
            inner.split_once(']').ok_or_else(|| format!("invalid endpoint {a:?}: missing \"]\""))?;
        if ip.parse::<Ipv6Addr>().is_err() {
            return Err(format!("invalid endpoint {a:?}: {ip:?} is not an IPv6 address"));
        }
        after
            .strip_prefix(':')
            .ok_or_else(|| format!("endpoint {a:?} has no port; write it as \"[{ip}]:80\""))?
    } else {
        let Some((host, port)) = a.rsplit_once(':') else {
            return Err(format!("endpoint {a:?} has no port; write it as \"{a}:80\""));
        };
        if host.contains(':') {
            return Err(format!(
                "invalid endpoint {a:?}: write IPv6 addresses in brackets, e.g. \"[::1]:80\""
            ));
        }
        if host.parse::<IpAddr>().is_err() && !is_host_name(host) {
            return Err(format!("invalid endpoint {a:?}: {host:?} is not a host name or IP address"));
        }
        port
    };
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(bad_port(port)),
    }
}

/// Consul's default HTTP port (`ports.http` in its agent configuration), suggested when an
/// `http://` address lacks a port.
const CONSUL_HTTP_PORT: u16 = 8500;
/// Consul's usual HTTPS port (`ports.https`, off unless configured), suggested likewise.
const CONSUL_HTTPS_PORT: u16 = 8501;

impl ConsulAddress {
    /// The one check of a consul discovery `address`: `http://` or `https://`, a host (a name,
    /// an IPv4 address, or an IPv6 address in brackets) and a port, optionally followed by one
    /// `/`. The scheme is matched without regard to case.
    pub fn parse(a: &str) -> Result<ConsulAddress, String> {
        let example = "e.g. \"http://127.0.0.1:8500\" or \"https://consul.internal:8501\"";
        let not_a_url = || format!("consul `address` {a:?} must be an http:// or https:// URL, {example}");
        let (scheme, rest) = a.split_once("://").ok_or_else(not_a_url)?;
        let (https, scheme, default_port) = match scheme.to_ascii_lowercase().as_str() {
            "http" => (false, "http", CONSUL_HTTP_PORT),
            "https" => (true, "https", CONSUL_HTTPS_PORT),
            _ => return Err(not_a_url()),
        };
        let hostport = rest.strip_suffix('/').unwrap_or(rest);
        if hostport.contains(['/', '?', '#', '@']) {
            return Err(format!(
                "consul `address` {a:?} must be only a scheme, a host and a port (no path, query \
                 or user info; the ACL token goes in `token_env`), {example}"
            ));
        }
        let (host, port) = if let Some(inner) = hostport.strip_prefix('[') {
            let (ip, after) = inner
                .split_once(']')
                .ok_or_else(|| format!("invalid consul `address` {a:?}: missing \"]\""))?;
            if ip.parse::<Ipv6Addr>().is_err() {
                return Err(format!("invalid consul `address` {a:?}: {ip:?} is not an IPv6 address"));
            }
            let port = match after {
                "" => None,
                _ => Some(after.strip_prefix(':').ok_or_else(|| {
                    format!("invalid consul `address` {a:?}: expected \":port\" after \"]\"")
                })?),
            };
            (&hostport[..ip.len() + 2], port)
        } else {
            let (host, port) = match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            };
            if host.contains(':') {
                return Err(format!(
                    "invalid consul `address` {a:?}: write IPv6 addresses in brackets, e.g. \
                     \"{scheme}://[::1]:{default_port}\""
                ));
            }
            if host.is_empty() {
                return Err(format!("consul `address` {a:?} has no host, {example}"));
            }
            if host.parse::<IpAddr>().is_err() && !is_host_name(host) {
                return Err(format!(
                    "invalid consul `address` {a:?}: {host:?} is not a host name or IP address"
                ));
            }
            (host, port)
        };
        let Some(port) = port else {
            return Err(format!(
                "consul `address` {a:?} has no port; write it as \"{scheme}://{host}:{default_port}\""
            ));
        };
        match port.parse::<u16>() {
            Ok(p) if p > 0 => Ok(ConsulAddress { https, host: host.to_owned(), port: p }),
            _ => Err(format!("invalid port {port:?} in consul `address` {a:?}: expected 1 to 65535")),
        }
    }
}
